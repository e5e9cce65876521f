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
    /// The slot's state. Only the transition functions of this type change it:
    ///
    /// | state | meaning | transitions (by whom) |
    /// |---|---|---|
    /// | [`FREE`] | no client owns the slot | [`claim`](Self::claim) -> `IDLE` (a client, under the slot mutex) |
    /// | [`IDLE`] | owned, no call in flight | [`submit`](Self::submit) -> `REQUEST_READY` (owner); [`release`](Self::release) -> `FREE` (owner leaving, under the mutex) |
    /// | [`REQUEST_READY`] | request written, slot number in the ring | [`take`](Self::take) -> `IN_SERVICE` (a worker, CAS); [`retract`](Self::retract) -> `IDLE` (owner, CAS) |
    /// | [`IN_SERVICE`] | a worker runs the handler; the bytes are the worker's | [`Taken::answer`] -> `RESPONSE_READY` (the worker that took it) |
    /// | [`RESPONSE_READY`] | response written, `done` notified | [`collect`](Self::collect) -> `IDLE` (owner); [`release`](Self::release) -> `FREE` (owner leaving) |
    /// | any state but `FREE` / `IN_SERVICE`, owner dead | | [`reap`](Self::reap) -> `FREE` (a claimer or the server's housekeeping, under the mutex; CAS) |
    ///
    /// The CAS out of `REQUEST_READY` (`take` against `retract` and `reap`) is what makes
    /// every request served at most once, however many (stale, duplicated or forged) ring
    /// entries name the slot. Any other value is garbage written by a broken peer: workers
    /// skip the slot, its owner's call fails, and a claimer reaps it once the owner is gone.
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
}

const _: () = assert!(std::mem::size_of::<SlotHeader>() == 64);

/// A request a worker took with [`SlotHeader::take`]: the slot is `IN_SERVICE` and its
/// bytes are the worker's until [`answer`](Taken::answer).
#[must_use = "a taken slot stays IN_SERVICE until it is answered"]
pub(crate) struct Taken<'a> {
    slot: &'a SlotHeader,
    seq: u32,
    len: u32,
}

// SAFETY: `#[repr(C, align(64))]`, atomics only (the padding word too); any bit pattern is
// valid.
unsafe impl crate::region::ShmAtomic for SlotHeader {}

impl SlotHeader {
    /// The state word (Acquire: what the state vouches for is visible after it).
    #[inline]
    pub(crate) fn state(&self) -> u32 {
        self.state.load(Ordering::Acquire)
    }

    /// Whether the slot looks like it holds a request: a hint for a scan, which then
    /// [`take`](Self::take)s it (no ordering: `take` is the check).
    #[inline]
    pub(crate) fn has_request(&self) -> bool {
        self.state.load(Ordering::Relaxed) == REQUEST_READY
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
        if self.state.load(Ordering::Acquire) != FREE {
            return false;
        }
        self.set_owner(Some(me));
        self.served.store(0, Ordering::Relaxed);
        self.epoch.store(
            self.epoch.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        self.state.store(IDLE, Ordering::Release);
        true
    }

    /// `IDLE -> REQUEST_READY`, by the owner: publishes request `seq` of `len` bytes (written
    /// into the request bytes before). The caller then pushes the slot number to the ring.
    ///
    /// A check and a store, not a CAS: in `IDLE` only the owner moves the slot (a reaper
    /// only once the owner is dead), so no correct peer races with it.
    #[inline]
    pub(crate) fn submit(&self, seq: u32, len: u32) -> bool {
        if self.state.load(Ordering::Relaxed) != IDLE {
            return false;
        }
        self.seq.store(seq, Ordering::Relaxed);
        self.req_len.store(len, Ordering::Relaxed);
        self.state.store(REQUEST_READY, Ordering::Release);
        true
    }

    /// `REQUEST_READY -> IN_SERVICE`, by a worker (CAS: one of any number of workers, ring
    /// entries and scans wins, and never against a `retract` or `reap`). `None` if the slot
    /// holds no request.
    #[inline]
    pub(crate) fn take(&self) -> Option<Taken<'_>> {
        self.state
            .compare_exchange(
                REQUEST_READY,
                IN_SERVICE,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()?;
        Some(Taken {
            slot: self,
            seq: self.seq.load(Ordering::Relaxed),
            len: self.req_len.load(Ordering::Relaxed),
        })
    }

    /// `RESPONSE_READY -> IDLE`, by the owner once it has read (or discarded) the answer.
    /// A check and a store, as in [`submit`](Self::submit): only the owner leaves
    /// `RESPONSE_READY`.
    #[inline]
    pub(crate) fn collect(&self) -> bool {
        if self.state.load(Ordering::Relaxed) != RESPONSE_READY {
            return false;
        }
        self.state.store(IDLE, Ordering::Release);
        true
    }

    /// `REQUEST_READY -> IDLE`, by the owner: withdraws a request no worker has taken yet
    /// (after a timeout, a dead server, or when leaving). CAS: it loses to `take`.
    pub(crate) fn retract(&self) -> bool {
        self.state
            .compare_exchange(REQUEST_READY, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// `IDLE | RESPONSE_READY -> FREE`, by the owner leaving, under the slot mutex. Refused
    /// while a call is in flight (retract it first) or in a state no correct peer writes;
    /// the owner then [`disown`](Self::disown)s the slot instead.
    ///
    /// The owner is cleared before the state: should the mutex wait have failed, a claimer
    /// that takes the slot the moment it is `FREE` must not have its identity cleared after.
    /// A release that dies in between leaves an ownerless slot, which the next claimer reaps.
    pub(crate) fn release(&self) -> bool {
        if !matches!(self.state.load(Ordering::Acquire), IDLE | RESPONSE_READY) {
            return false;
        }
        self.set_owner(None);
        self.state.store(FREE, Ordering::Release);
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
        let state = self.state.load(Ordering::Acquire);
        if matches!(state, FREE | IN_SERVICE) {
            return false;
        }
        // The owner is dead: clearing it first changes nothing for anyone, and leaves no
        // FREE slot with a stale identity.
        self.set_owner(None);
        self.state
            .compare_exchange(state, FREE, Ordering::AcqRel, Ordering::Relaxed)
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
        slot.state.store(RESPONSE_READY, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;

    const N: u32 = if cfg!(miri) { 100 } else { 100_000 };
    /// Every state, and one no correct peer writes.
    const ALL: [u32; 6] = [
        FREE,
        IDLE,
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
            assert_eq!(h.state(), s, "state changed from {s:#x}");
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
    fn submit_publishes_the_request_from_idle_only() {
        let h = header(IDLE);
        assert!(h.submit(7, 100));
        assert_eq!(
            (h.state(), h.seq(), h.req_len.load(Ordering::Relaxed)),
            (REQUEST_READY, 7, 100)
        );
        refused_elsewhere(&[IDLE], |h| h.submit(1, 1));
    }

    #[test]
    fn take_hands_the_request_to_one_worker() {
        let h = header(IDLE);
        assert!(h.submit(9, 64));
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
        let h = header(IDLE);
        assert!(h.submit(11, 3));
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
        assert!(h.collect());
        assert_eq!((h.state(), h.owner()), (IDLE, me()));
        refused_elsewhere(&[RESPONSE_READY], SlotHeader::collect);
    }

    #[test]
    fn retract_withdraws_an_untaken_request_only() {
        let h = header(REQUEST_READY);
        assert!(h.retract());
        assert_eq!((h.state(), h.owner()), (IDLE, me()));
        refused_elsewhere(&[REQUEST_READY], SlotHeader::retract);
    }

    #[test]
    fn release_frees_a_slot_with_no_call_in_flight_only() {
        for s in [IDLE, RESPONSE_READY] {
            let h = header(s);
            assert!(h.release());
            assert_eq!((h.state(), h.owner()), (FREE, no_owner()));
        }
        refused_elsewhere(&[IDLE, RESPONSE_READY], SlotHeader::release);
    }

    #[test]
    fn disown_clears_the_owner_and_keeps_the_state() {
        for s in ALL {
            let h = header(s);
            h.disown();
            assert_eq!((h.state(), h.owner()), (s, no_owner()));
        }
    }

    #[test]
    fn reap_frees_any_slot_no_worker_holds() {
        for s in [IDLE, REQUEST_READY, RESPONSE_READY, 0xDEAD_BEEF] {
            let h = header(s);
            assert!(h.reap(), "state {s:#x}");
            assert_eq!((h.state(), h.owner()), (FREE, no_owner()));
            assert!(h.claim(me()), "a reaped slot is claimable");
        }
        refused_elsewhere(
            &[IDLE, REQUEST_READY, RESPONSE_READY, 0xDEAD_BEEF],
            SlotHeader::reap,
        );
    }

    #[test]
    fn a_reaped_request_is_never_taken() {
        let h = header(IDLE);
        assert!(h.submit(1, 1));
        assert!(h.reap());
        assert!(h.take().is_none());
    }

    #[test]
    fn full_cycles_answer_each_request_with_its_own_sequence_number() {
        let h = header(FREE);
        assert!(h.claim(me()));
        for seq in 0..N {
            assert!(h.submit(seq, seq % 512));
            let t = h.take().unwrap();
            assert_eq!(t.len(), (seq % 512) as usize);
            let len = t.len() as u32;
            t.answer(STATUS_OK, len);
            assert_eq!(h.state(), RESPONSE_READY);
            assert_eq!((h.resp_seq(), h.resp_len()), (seq, seq % 512));
            assert!(h.collect());
        }
        assert!(h.release());
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
            assert!(h.submit(seq, 0));
            for _ in 0..seq % 8 {
                std::hint::spin_loop();
            }
            if h.retract() {
                retracted += 1;
                continue;
            }
            // Taken: the answer comes, for this request.
            while h.state() != RESPONSE_READY {
                std::hint::spin_loop();
            }
            assert_eq!(h.resp_seq(), seq);
            assert!(h.collect());
        }
        stop.store(true, Ordering::Release);
        let served = worker.join().unwrap();
        assert_eq!(served + retracted, N);
        assert_eq!(h.state(), IDLE);
    }
}
