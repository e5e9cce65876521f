//! One slot's header and its state machine.
//!
//! Each connected client owns one slot: this header, a `done` event and the request and
//! response bytes (`layout.rs` says where they lie). The header's state word says who may
//! touch the slot's bytes, and this file holds every change of it: each transition below is
//! one function that refuses to start from a state it does not belong to (returns `false` /
//! `None`) and applies the crash order once: it writes the fields the new state vouches for,
//! then stores (or CASes) the state with Release, so a process that dies between two steps
//! leaves a state whose fields are valid. No other code stores the state word.
//!
//! The header lives in memory other processes write; nothing here trusts what it reads:
//! an unknown state is refused by every transition except [`SlotHeader::reap`], and lengths
//! are checked by the callers against `max_message`.

use crate::process::Member;
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// No client owns the slot.
pub(crate) const FREE: u32 = 0;
/// Owned by a client, no call in flight.
pub(crate) const IDLE: u32 = 1;
/// Request written, slot number pushed to the ring.
pub(crate) const REQUEST_READY: u32 = 2;
/// A worker runs the handler; the slot's bytes are the worker's.
pub(crate) const IN_SERVICE: u32 = 3;
/// Response (or refusal) written, `done` notified.
pub(crate) const RESPONSE_READY: u32 = 4;
/// The owner writes a request (its call has begun): the server cannot take the slot back.
pub(crate) const WRITING: u32 = 5;

/// The state word's low bits hold the state; the bits above, the connection's generation.
const STATE_MASK: u32 = 0xFF;
const GEN_SHIFT: u32 = 8;

/// The generation a connection's state words carry: its connection count, cut to the bits
/// above the state.
#[inline]
pub(crate) fn generation(epoch: u32) -> u32 {
    epoch & (u32::MAX >> GEN_SHIFT)
}

/// The state word of `state` in generation `gen`.
#[inline]
const fn word(state: u32, gen: u32) -> u32 {
    state | gen << GEN_SHIFT
}

/// Response status (valid in `RESPONSE_READY`): the handler answered.
pub(crate) const STATUS_OK: u32 = 0;
/// The server is shutting down and refused the request.
pub(crate) const STATUS_REFUSED: u32 = 1;
/// The request length was larger than `max_message`.
pub(crate) const STATUS_BAD_LENGTH: u32 = 2;
/// The handler panicked.
pub(crate) const STATUS_PANICKED: u32 = 3;
/// The handler answered with an application error: its code is in `app_code`, `resp_len`
/// bytes of detail in the response bytes.
pub(crate) const STATUS_APP_ERROR: u32 = 4;
/// The handler returned a length (in `resp_len`) beyond the response buffer.
pub(crate) const STATUS_BAD_RESPONSE: u32 = 5;

/// The hot words of one slot, on a cache line of their own.
#[repr(C, align(64))]
pub(crate) struct SlotHeader {
    /// The slot's state word: the state in the low 8 bits, the generation of the connection
    /// that owns the slot above them (see [`generation`]). Only the transition functions of
    /// this type change it:
    ///
    /// | state | meaning | transitions (by whom) |
    /// |---|---|---|
    /// | [`FREE`] | no client owns the slot | [`claim`](Self::claim) -> `IDLE` of the next generation (a client, under the slot mutex) |
    /// | [`IDLE`] | owned, no call in flight | [`begin`](Self::begin) -> `WRITING` (owner, CAS); [`release`](Self::release) -> `FREE` (owner leaving, under the mutex); [`revoke`](Self::revoke) -> `FREE` (the server, under the mutex, CAS) |
    /// | [`WRITING`] | the owner writes a request | [`submit`](Self::submit) -> `REQUEST_READY`; [`abandon`](Self::abandon) -> `IDLE` (owner) |
    /// | [`REQUEST_READY`] | request written, slot number in the ring | [`take`](Self::take) -> `IN_SERVICE` (a worker, CAS); [`retract`](Self::retract) -> `IDLE` (owner, CAS) |
    /// | [`IN_SERVICE`] | a worker runs the handler; the bytes are the worker's | [`Taken::answer`] -> `RESPONSE_READY` (the worker that took it) |
    /// | [`RESPONSE_READY`] | response written, `done` notified | [`collect`](Self::collect) -> `IDLE` (owner); [`release`](Self::release) -> `FREE` (owner leaving) |
    /// | any state but `FREE` / `IN_SERVICE`, owner dead | | [`reap`](Self::reap) -> `FREE` (a claimer or the server's housekeeping, under the mutex; CAS) |
    ///
    /// The CAS out of `REQUEST_READY` (`take` against `retract` and `reap`) is what makes
    /// every request served at most once, however many (stale, duplicated or forged) ring
    /// entries name the slot. The generation is what lets the server take an idle slot back
    /// from a live owner: the owner's `begin` and the server's `revoke` are CASes on the same
    /// `IDLE` word, so exactly one wins, and once the slot is another connection's, the old
    /// owner's words (of the old generation) match nothing. Every other owner transition
    /// starts from a state the server never revokes. Any other value is garbage written by a
    /// broken peer: workers skip the slot, its owner's call fails, and a claimer reaps it
    /// once the owner is gone.
    state: AtomicU32,
    /// Sequence number of the current request (valid from `REQUEST_READY` on).
    seq: AtomicU32,
    /// Request length in bytes (untrusted: the server checks it against `max_message`).
    req_len: AtomicU32,
    /// Sequence number of the request the response answers (valid in `RESPONSE_READY`).
    resp_seq: AtomicU32,
    /// Response length in bytes (valid in `RESPONSE_READY`).
    resp_len: AtomicU32,
    /// See [`STATUS_OK`] (valid in `RESPONSE_READY`).
    status: AtomicU32,
    /// Owner pid, for messages (0: none; valid in every state but `FREE`).
    owner_pid: AtomicU32,
    /// Connections made to this slot so far: bumped by every claim, so that the slot number
    /// and this count name one connection.
    epoch: AtomicU32,
    /// Owner's liveness token (see `Segment::member`): claimers check it before reaping.
    owner_token: AtomicU64,
    /// The application error code (valid in `RESPONSE_READY` with [`STATUS_APP_ERROR`]).
    app_code: AtomicU32,
    /// Calls answered on this connection (reset by [`claim`](Self::claim), counted by
    /// [`Taken::answer`]): statistics for the server's client table, never trusted.
    served: AtomicU32,
    /// The connection the server asked to leave (see [`mark_evicted`](Self::mark_evicted)).
    evict: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<SlotHeader>() == 64);

/// A request a worker took with [`SlotHeader::take`]: the slot is `IN_SERVICE` and its
/// bytes are the worker's until [`answer`](Taken::answer).
#[must_use = "a taken slot stays IN_SERVICE until it is answered"]
pub(crate) struct Taken<'a> {
    slot: &'a SlotHeader,
    /// The generation of the connection whose request it is.
    gen: u32,
    seq: u32,
    len: u32,
}

// SAFETY: `#[repr(C, align(64))]`, atomics only (the padding word too); any bit pattern is
// valid.
unsafe impl crate::region::ShmAtomic for SlotHeader {}

impl SlotHeader {
    /// The state (Acquire: what the state vouches for is visible after it), without the
    /// generation.
    #[inline]
    pub(crate) fn state(&self) -> u32 {
        self.state.load(Ordering::Acquire) & STATE_MASK
    }

    /// The whole state word: state and generation (Acquire, as [`state`](Self::state)).
    #[inline]
    pub(crate) fn word(&self) -> u32 {
        self.state.load(Ordering::Acquire)
    }

    /// Whether the state word holds a state of connection `epoch` (of any known state).
    #[inline]
    pub(crate) fn is_of(&self, epoch: u32) -> bool {
        self.word() >> GEN_SHIFT == generation(epoch)
    }

    /// Whether the slot looks like it holds a request: a hint for a scan, which then
    /// [`take`](Self::take)s it (no ordering: `take` is the check).
    #[inline]
    pub(crate) fn has_request(&self) -> bool {
        self.state.load(Ordering::Relaxed) & STATE_MASK == REQUEST_READY
    }

    /// The connection the server asked to leave (0: none; see
    /// [`mark_evicted`](Self::mark_evicted)).
    #[inline]
    pub(crate) fn evicted(&self) -> u32 {
        self.evict.load(Ordering::Relaxed)
    }

    /// The server asks connection `epoch` to leave: its owner gives the slot up at the start
    /// of its next call (and reconnects), and the server [`revoke`](Self::revoke)s it if it
    /// finds it idle first. Not a state: only advice to the owner.
    pub(crate) fn mark_evicted(&self, epoch: u32) {
        self.evict.store(epoch, Ordering::Relaxed);
    }

    /// Sequence number of the last request submitted from this slot.
    pub(crate) fn seq(&self) -> u32 {
        self.seq.load(Ordering::Relaxed)
    }

    /// Sequence number of the request the response answers. Read after [`state`](Self::state)
    /// returned `RESPONSE_READY`.
    #[inline]
    pub(crate) fn resp_seq(&self) -> u32 {
        self.resp_seq.load(Ordering::Relaxed)
    }

    /// Response status ([`STATUS_OK`], ...). Read as [`resp_seq`](Self::resp_seq).
    #[inline]
    pub(crate) fn status(&self) -> u32 {
        self.status.load(Ordering::Relaxed)
    }

    /// Response length, untrusted. Read as [`resp_seq`](Self::resp_seq).
    #[inline]
    pub(crate) fn resp_len(&self) -> u32 {
        self.resp_len.load(Ordering::Relaxed)
    }

    /// The owner's identity (a dead or bogus one if the slot has none).
    pub(crate) fn owner(&self) -> Member {
        Member {
            pid: self.owner_pid.load(Ordering::Acquire),
            token: self.owner_token.load(Ordering::Acquire),
        }
    }

    fn set_owner(&self, id: Option<Member>) {
        let m = id.unwrap_or_default();
        self.owner_token.store(m.token, Ordering::Relaxed);
        self.owner_pid.store(m.pid, Ordering::Release);
    }

    /// The slot's connection count (see [`claim`](Self::claim)).
    #[inline]
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// The application error code of a [`STATUS_APP_ERROR`] answer. Read as
    /// [`resp_seq`](Self::resp_seq).
    pub(crate) fn app_code(&self) -> u32 {
        self.app_code.load(Ordering::Relaxed)
    }

    /// Calls answered on the current connection (wrapping; untrusted statistics).
    pub(crate) fn served(&self) -> u32 {
        self.served.load(Ordering::Relaxed)
    }

    /// `FREE -> IDLE`: `me` owns the slot, as its next connection. The caller holds the slot
    /// mutex (the only writer of a `FREE` slot), so a check and plain stores suffice: owner,
    /// connection count and call count first, then the state.
    pub(crate) fn claim(&self, me: Member) -> bool {
        if self.state() != FREE {
            return false;
        }
        self.set_owner(Some(me));
        self.served.store(0, Ordering::Relaxed);
        // Never 0, the "no connection" of `evict`.
        let epoch = match self.epoch.load(Ordering::Relaxed).wrapping_add(1) {
            0 => 1,
            e => e,
        };
        self.epoch.store(epoch, Ordering::Relaxed);
        self.state
            .store(word(IDLE, generation(epoch)), Ordering::Release);
        true
    }

    /// `IDLE -> WRITING`, by the owner of connection `epoch` starting a call: from here until
    /// it submits (or abandons) the request, the slot cannot be revoked. A CAS against the
    /// server's [`revoke`](Self::revoke); `false` if the slot is not this connection's
    /// `IDLE` (revoked, or not settled).
    #[inline]
    pub(crate) fn begin(&self, epoch: u32) -> bool {
        let g = generation(epoch);
        self.state
            .compare_exchange(
                word(IDLE, g),
                word(WRITING, g),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// `WRITING -> IDLE`, by the owner: the call ended before a request was submitted.
    pub(crate) fn abandon(&self, epoch: u32) -> bool {
        let g = generation(epoch);
        if self.state.load(Ordering::Relaxed) != word(WRITING, g) {
            return false;
        }
        self.state.store(word(IDLE, g), Ordering::Release);
        true
    }

    /// `WRITING -> REQUEST_READY`, by the owner of connection `epoch`: publishes request
    /// `seq` of `len` bytes (written into the request bytes before). The caller then pushes
    /// the slot number to the ring.
    ///
    /// A check and a store, not a CAS: in `WRITING` only the owner moves the slot (a reaper
    /// only once the owner is dead), so no correct peer races with it.
    #[inline]
    pub(crate) fn submit(&self, epoch: u32, seq: u32, len: u32) -> bool {
        let g = generation(epoch);
        if self.state.load(Ordering::Relaxed) != word(WRITING, g) {
            return false;
        }
        self.seq.store(seq, Ordering::Relaxed);
        self.req_len.store(len, Ordering::Relaxed);
        self.state.store(word(REQUEST_READY, g), Ordering::Release);
        true
    }

    /// `REQUEST_READY -> IN_SERVICE`, by a worker (CAS: one of any number of workers, ring
    /// entries and scans wins, and never against a `retract` or `reap`). `None` if the slot
    /// holds no request.
    #[inline]
    pub(crate) fn take(&self) -> Option<Taken<'_>> {
        let w = self.state.load(Ordering::Relaxed);
        if w & STATE_MASK != REQUEST_READY {
            return None;
        }
        let gen = w >> GEN_SHIFT;
        self.state
            .compare_exchange(
                w,
                word(IN_SERVICE, gen),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()?;
        Some(Taken {
            slot: self,
            gen,
            seq: self.seq.load(Ordering::Relaxed),
            len: self.req_len.load(Ordering::Relaxed),
        })
    }

    /// `RESPONSE_READY -> IDLE`, by the owner of connection `epoch` once it has read (or
    /// discarded) the answer. A check and a store, as in [`submit`](Self::submit): only the
    /// owner leaves `RESPONSE_READY`.
    #[inline]
    pub(crate) fn collect(&self, epoch: u32) -> bool {
        let g = generation(epoch);
        if self.state.load(Ordering::Relaxed) != word(RESPONSE_READY, g) {
            return false;
        }
        self.state.store(word(IDLE, g), Ordering::Release);
        true
    }

    /// `REQUEST_READY -> IDLE`, by the owner of connection `epoch`: withdraws a request no
    /// worker has taken yet (after a timeout, a dead server, or when leaving). CAS: it loses
    /// to `take`.
    pub(crate) fn retract(&self, epoch: u32) -> bool {
        let g = generation(epoch);
        self.state
            .compare_exchange(
                word(REQUEST_READY, g),
                word(IDLE, g),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// `IDLE | RESPONSE_READY -> FREE`, by the owner of connection `epoch` leaving, under the
    /// slot mutex. Refused while a call is in flight (retract it first), in another
    /// connection's word, or in a state no correct peer writes; the owner then
    /// [`disown`](Self::disown)s the slot instead (if it is still its own).
    ///
    /// The owner is cleared before the state: should the mutex wait have failed, a claimer
    /// that takes the slot the moment it is `FREE` must not have its identity cleared after.
    /// A release that dies in between leaves an ownerless slot, which the next claimer reaps.
    pub(crate) fn release(&self, epoch: u32) -> bool {
        let g = generation(epoch);
        let w = self.state.load(Ordering::Acquire);
        if w != word(IDLE, g) && w != word(RESPONSE_READY, g) {
            return false;
        }
        self.set_owner(None);
        self.state.store(word(FREE, g), Ordering::Release);
        true
    }

    /// `IDLE -> FREE`, by the server under the slot mutex: takes the slot back from
    /// connection `epoch` while it has no call in flight (evicted, or reaped for idleness),
    /// so a newcomer can claim it. A CAS against the owner's [`begin`](Self::begin): a call
    /// that has begun is never cut off. The owner learns it at its next call (the word is
    /// no longer its own) and reconnects.
    pub(crate) fn revoke(&self, epoch: u32) -> bool {
        let g = generation(epoch);
        if self.epoch.load(Ordering::Relaxed) != epoch
            || self
                .state
                .compare_exchange(
                    word(IDLE, g),
                    word(FREE, g),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return false;
        }
        // Under the mutex no claimer runs, and the old owner checks the owner before
        // releasing: it finds it is not the owner any more.
        self.set_owner(None);
        true
    }

    /// The owner leaves a slot it cannot [`release`](Self::release) (a worker may still be
    /// serving it): the state stays, the owner is cleared, and a claimer reaps the slot once
    /// no worker holds it.
    pub(crate) fn disown(&self) {
        self.set_owner(None);
    }

    /// `any state but FREE / IN_SERVICE -> FREE`, by a claimer (or the server's housekeeping
    /// scan) under the slot mutex, after it found the owner dead. Refused in `IN_SERVICE` (a worker still owns the bytes; the
    /// slot is reaped once answered) and in `FREE` (nothing to reap). A CAS from the state
    /// seen, so a request is never both reaped and taken.
    pub(crate) fn reap(&self) -> bool {
        let w = self.state.load(Ordering::Acquire);
        if matches!(w & STATE_MASK, FREE | IN_SERVICE) {
            return false;
        }
        // The owner is dead: clearing it first changes nothing for anyone, and leaves no
        // FREE slot with a stale identity.
        self.set_owner(None);
        self.state
            .compare_exchange(
                w,
                word(FREE, w >> GEN_SHIFT),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }
}

impl Taken<'_> {
    /// Request length in bytes, untrusted (check it against `max_message`).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// The request's sequence number.
    #[inline]
    pub(crate) fn seq(&self) -> u32 {
        self.seq
    }

    /// As [`answer`](Self::answer) with [`STATUS_APP_ERROR`]: `code` first, then the rest.
    pub(crate) fn answer_app_error(self, code: u32, len: u32) {
        self.slot.app_code.store(code, Ordering::Relaxed);
        self.answer(STATUS_APP_ERROR, len);
    }

    /// `IN_SERVICE -> RESPONSE_READY`: publishes the response (`status`, `len` bytes written
    /// into the response bytes before) as the answer to the request taken. The caller then
    /// notifies the slot's `done` event.
    ///
    /// A store, not a CAS (one locked instruction less): nobody else moves a slot out of
    /// `IN_SERVICE`, and should a broken client have scribbled on the word meanwhile, this
    /// only repairs it.
    #[inline]
    pub(crate) fn answer(self, status: u32, len: u32) {
        let slot = self.slot;
        // A load and a store, not an atomic add: one call per slot is in flight, and the
        // slot's state transitions order one answer before the next.
        let served = slot.served.load(Ordering::Relaxed);
        slot.served.store(served.wrapping_add(1), Ordering::Relaxed);
        slot.resp_len.store(len, Ordering::Relaxed);
        slot.status.store(status, Ordering::Relaxed);
        slot.resp_seq.store(self.seq, Ordering::Relaxed);
        slot.state
            .store(word(RESPONSE_READY, self.gen), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;

    const N: u32 = if cfg!(miri) { 100 } else { 100_000 };
    /// Every state, and one no correct peer writes.
    const ALL: [u32; 7] = [
        FREE,
        IDLE,
        WRITING,
        REQUEST_READY,
        IN_SERVICE,
        RESPONSE_READY,
        0xDEAD_BEEF,
    ];

    /// Fake identities: transitions never ask the OS about them.
    fn me() -> Member {
        Member {
            pid: 4242,
            token: 17,
        }
    }

    /// A header on the heap in `state`, owned by [`me`] unless FREE.
    fn header(state: u32) -> Box<SlotHeader> {
        let h = Box::new(SlotHeader {
            state: AtomicU32::new(state),
            seq: AtomicU32::new(0),
            req_len: AtomicU32::new(0),
            resp_seq: AtomicU32::new(0),
            resp_len: AtomicU32::new(0),
            status: AtomicU32::new(0),
            owner_pid: AtomicU32::new(0),
            epoch: AtomicU32::new(0),
            owner_token: AtomicU64::new(0),
            app_code: AtomicU32::new(0),
            served: AtomicU32::new(0),
            evict: AtomicU32::new(0),
        });
        if state != FREE {
            h.set_owner(Some(me()));
        }
        h
    }

    fn no_owner() -> Member {
        Member::default()
    }

    /// Runs `f` on a header in every state of `ALL` but `legal`; each must be refused,
    /// leaving the state and the owner as they were.
    fn refused_elsewhere(legal: &[u32], f: impl Fn(&SlotHeader) -> bool) {
        for s in ALL.into_iter().filter(|s| !legal.contains(s)) {
            let h = header(s);
            let owner = h.owner();
            assert!(!f(&h), "allowed from state {s:#x}");
            assert_eq!(h.word(), s, "state changed from {s:#x}");
            assert_eq!(h.owner(), owner, "owner changed in state {s:#x}");
        }
    }

    /// tests/channel.rs (the hostile client) writes these offsets by hand.
    #[test]
    fn offsets_the_hostile_client_test_relies_on() {
        assert_eq!(std::mem::offset_of!(SlotHeader, state), 0);
        assert_eq!(std::mem::offset_of!(SlotHeader, req_len), 8);
        assert_eq!(std::mem::offset_of!(SlotHeader, status), 20);
        assert_eq!(std::mem::offset_of!(SlotHeader, owner_pid), 24);
    }

    #[test]
    fn claim_takes_a_free_slot_only() {
        let h = header(FREE);
        assert!(h.claim(me()));
        assert_eq!((h.state(), h.owner()), (IDLE, me()));
        refused_elsewhere(&[FREE], |h| h.claim(Member { pid: 1, token: 1 }));
    }

    #[test]
    fn begin_starts_a_call_from_idle_only() {
        let h = header(IDLE);
        assert!(h.begin(0));
        assert_eq!(h.state(), WRITING);
        refused_elsewhere(&[IDLE], |h| h.begin(0));
        let h = header(IDLE);
        assert!(!h.begin(1), "another connection's word");
    }

    #[test]
    fn submit_publishes_the_request_from_writing_only() {
        let h = header(WRITING);
        assert!(h.submit(0, 7, 100));
        assert_eq!(
            (h.state(), h.seq(), h.req_len.load(Ordering::Relaxed)),
            (REQUEST_READY, 7, 100)
        );
        refused_elsewhere(&[WRITING], |h| h.submit(0, 1, 1));
        assert!(
            !header(WRITING).submit(1, 1, 1),
            "another connection's word"
        );
    }

    #[test]
    fn abandon_returns_a_writing_slot_to_idle_only() {
        let h = header(WRITING);
        assert!(h.abandon(0));
        assert_eq!(h.state(), IDLE);
        refused_elsewhere(&[WRITING], |h| h.abandon(0));
    }

    #[test]
    fn revoke_takes_back_an_idle_slot_of_that_connection_only() {
        let h = header(FREE);
        assert!(h.claim(me()));
        let epoch = h.epoch();
        assert!(!h.revoke(epoch + 1), "another connection");
        assert!(h.revoke(epoch));
        assert_eq!((h.state(), h.owner()), (FREE, no_owner()));
        assert!(!h.begin(epoch), "the old owner's call cannot begin");
        assert!(!h.release(epoch), "nor can it release the slot");
        assert!(h.claim(me()));
        assert!(!h.begin(epoch), "nor begin in the next connection's slot");
        assert!(h.begin(h.epoch()));
        assert!(!h.revoke(h.epoch()), "a call that has begun is not cut off");
        refused_elsewhere(&[IDLE], |h| h.revoke(0));
    }

    #[test]
    fn take_hands_the_request_to_one_worker() {
        let h = header(WRITING);
        assert!(h.submit(0, 9, 64));
        let t = h.take().expect("a request");
        assert_eq!(t.len(), 64);
        assert_eq!(h.state(), IN_SERVICE);
        assert!(h.take().is_none(), "taken twice");
        t.answer(STATUS_OK, 0);
        assert_eq!(h.resp_seq(), 9, "answered as request 9");
        refused_elsewhere(&[REQUEST_READY], |h| h.take().is_some());
    }

    #[test]
    fn answer_publishes_the_response_for_the_request_taken() {
        let h = header(WRITING);
        assert!(h.submit(0, 11, 3));
        h.take().unwrap().answer(STATUS_PANICKED, 5);
        assert_eq!(h.state(), RESPONSE_READY);
        assert_eq!(
            (h.resp_seq(), h.status(), h.resp_len()),
            (11, STATUS_PANICKED, 5)
        );
        // Answering needs a `Taken`, which only `take` hands out: there is no way to answer a
        // slot from any other state.
    }

    #[test]
    fn collect_returns_an_answered_slot_to_idle_only() {
        let h = header(RESPONSE_READY);
        assert!(h.collect(0));
        assert_eq!((h.state(), h.owner()), (IDLE, me()));
        refused_elsewhere(&[RESPONSE_READY], |h| h.collect(0));
    }

    #[test]
    fn retract_withdraws_an_untaken_request_only() {
        let h = header(REQUEST_READY);
        assert!(h.retract(0));
        assert_eq!((h.state(), h.owner()), (IDLE, me()));
        refused_elsewhere(&[REQUEST_READY], |h| h.retract(0));
    }

    #[test]
    fn release_frees_a_slot_with_no_call_in_flight_only() {
        for s in [IDLE, RESPONSE_READY] {
            let h = header(s);
            assert!(h.release(0));
            assert_eq!((h.state(), h.owner()), (FREE, no_owner()));
        }
        refused_elsewhere(&[IDLE, RESPONSE_READY], |h| h.release(0));
    }

    #[test]
    fn disown_clears_the_owner_and_keeps_the_state() {
        for s in ALL {
            let h = header(s);
            h.disown();
            assert_eq!((h.word(), h.owner()), (s, no_owner()));
        }
    }

    #[test]
    fn reap_frees_any_slot_no_worker_holds() {
        for s in [IDLE, WRITING, REQUEST_READY, RESPONSE_READY, 0xDEAD_BEEF] {
            let h = header(s);
            assert!(h.reap(), "state {s:#x}");
            assert_eq!((h.state(), h.owner()), (FREE, no_owner()));
            assert!(h.claim(me()), "a reaped slot is claimable");
        }
        refused_elsewhere(
            &[IDLE, WRITING, REQUEST_READY, RESPONSE_READY, 0xDEAD_BEEF],
            SlotHeader::reap,
        );
    }

    #[test]
    fn a_reaped_request_is_never_taken() {
        let h = header(WRITING);
        assert!(h.submit(0, 1, 1));
        assert!(h.reap());
        assert!(h.take().is_none());
    }

    #[test]
    fn full_cycles_answer_each_request_with_its_own_sequence_number() {
        let h = header(FREE);
        assert!(h.claim(me()));
        let e = h.epoch();
        for seq in 0..N {
            assert!(h.begin(e));
            assert!(h.submit(e, seq, seq % 512));
            let t = h.take().unwrap();
            assert_eq!(t.len(), (seq % 512) as usize);
            let len = t.len() as u32;
            t.answer(STATUS_OK, len);
            assert_eq!(h.state(), RESPONSE_READY);
            assert_eq!((h.resp_seq(), h.resp_len()), (seq, seq % 512));
            assert!(h.collect(e));
        }
        assert!(h.release(e));
        assert_eq!(h.state(), FREE);
    }

    /// A client retracting after a timeout races with a worker taking the request: every
    /// request is either retracted or served, never both, never neither.
    #[test]
    fn retract_and_take_race_exactly_one_wins() {
        let h: Arc<SlotHeader> = Arc::from(header(IDLE));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (h, stop) = (Arc::clone(&h), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut served = 0u32;
                while !stop.load(Ordering::Acquire) {
                    if let Some(t) = h.take() {
                        t.answer(STATUS_OK, 0);
                        served += 1;
                    } else {
                        std::hint::spin_loop();
                    }
                }
                served
            })
        };
        let mut retracted = 0u32;
        for seq in 0..N {
            assert!(h.begin(0));
            assert!(h.submit(0, seq, 0));
            for _ in 0..seq % 8 {
                std::hint::spin_loop();
            }
            if h.retract(0) {
                retracted += 1;
                continue;
            }
            // Taken: the answer comes, for this request.
            while h.state() != RESPONSE_READY {
                std::hint::spin_loop();
            }
            assert_eq!(h.resp_seq(), seq);
            assert!(h.collect(0));
        }
        stop.store(true, Ordering::Release);
        let served = worker.join().unwrap();
        assert_eq!(served + retracted, N);
        assert_eq!(h.state(), IDLE);
    }
}
