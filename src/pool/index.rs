//! The pool's index: a header and a directory of buffer entries, laid out in the index
//! segment; the lists through them; and every change of an entry's status.
//!
//! Everything here works on plain memory (`&IndexHeader`, `&[Entry]`), so that the list
//! algorithms and the transitions are unit-tested on the heap; the pool places the same
//! structs in its index segment. Every field is an atomic: a hostile process may write the
//! memory at any time, and atomics make that a wrong value rather than undefined behaviour.
//! Fields are accessed with `Relaxed` ordering while the pool's named mutex is held (the
//! mutex orders them).
//!
//! **Crash order.** A process may die (SIGKILL) between any two stores while it holds the
//! mutex; the next locker, or an adopting Reader, then rebuilds the lists from the entries
//! alone ([`Index::repair`]), trusting each entry's fields as its *status* describes them:
//! `len`, `seq` and `flags` of a QUEUED or RECEIVED entry (the message, redelivered on
//! adoption), `owner` of an ALLOCATED one (taken back if it died) and of a QUEUED or
//! RECEIVED one (the Writer that sent it: set before ALLOCATED, left alone by
//! [`Index::queue`] and [`Index::receive`]), `released_at` of a FREE one. So every status
//! change writes the fields the new status is trusted for first, then
//! stores the status (with `Release`, so that the compiler keeps that order), and clears
//! the fields the old status is trusted for only after that store. Fields a status is not
//! trusted for may hold stale values; they are set again before any status that trusts
//! them.
//!
//! **One owner.** Only this module stores an entry's status, each change through one named
//! transition that applies the crash order and refuses ([`Refused`]) to leave a status it
//! does not start from:
//!
//! | transition | from | to | asked by |
//! |---|---|---|---|
//! | [`Index::allocate`] | FREE | ALLOCATED | a Writer acquiring |
//! | [`Index::give_back`] | ALLOCATED | FREE | a Writer dropping an unsent buffer; the Reader taking back a dead Writer's |
//! | [`Index::queue`] | ALLOCATED | QUEUED | a Writer sending |
//! | [`Index::receive`] | QUEUED | RECEIVED | the Reader receiving |
//! | [`Index::release`] | RECEIVED | FREE | the Reader dropping a message |
//! | [`Index::dispose`] | FREE, ALLOCATED, QUEUED, RECEIVED | DISPOSED | the sweeper; anyone finding a buffer unusable |
//! | [`Index::revive`] | DISPOSED | FREE | the Reader growing the pool |
//! | `Index::redeliver` | RECEIVED | QUEUED | [`Index::repair`] when a Reader adopts the index |
//!
//! The header's [`state`](IndexHeader::state) word changes only through
//! [`IndexHeader::open`], [`IndexHeader::park`] and [`IndexHeader::retire`].
//!
//! Lists are doubly linked through entry indices (`prev`/`next`, [`NIL`] = none), in the
//! style of an intrusive free list (the classic "directory + links" of the Win32 buffer pool):
//!
//! | list | status of members | discipline |
//! |---|---|---|
//! | free | [`FREE`] | LIFO at the head (warm buffers first); the tail is the longest idle, which the sweeper disposes of |
//! | queued | [`QUEUED`] | FIFO: push at the tail, pop at the head; `seq` records the send order |
//! | disposed | [`DISPOSED`] | entries without a buffer segment, waiting to be grown into |
//!
//! [`ALLOCATED`] (held by a Writer) and [`RECEIVED`] (held by the Reader) entries are on no
//! list: their links are [`NIL`].
//!
//! `index/layout.rs` holds the structs and constants of the segment, `index/list.rs` the
//! list operations (private to this module: only transitions link and unlink), this file the
//! transitions, [`Index::validate`] and [`Index::repair`].

mod layout;
mod list;
#[cfg(test)]
mod tests;

use std::fmt;

use super::config::PoolConfig;
use crate::process::{Member, ProcessId};
use crate::sync::atomic::{
    AtomicU32, AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};

pub(crate) use layout::*;
pub(crate) use list::List;

/// An inconsistency found in the index: the text says what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Corruption(pub(crate) String);

/// The index: header plus directory. All methods except the constructor expect the caller to
/// hold the pool mutex (or to be the only user, as in tests and before publishing).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Index<'a> {
    pub(crate) hdr: &'a IndexHeader,
    pub(crate) dir: &'a [Entry],
    /// `max_buffer_size`, as validated when the index was opened (the header's copy is not
    /// trusted afterwards).
    pub(crate) max_size: u64,
}

/// Values of a received or acquired entry, copied out under the lock and validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) index: u32,
    pub(crate) generation: u32,
    pub(crate) len: usize,
    pub(crate) capacity: usize,
    pub(crate) flags: u32,
    /// The Writer that holds (ALLOCATED) or sent (QUEUED, RECEIVED) it.
    pub(crate) owner: Member,
}

/// What [`Index::repair`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RepairReport {
    /// Entries whose values were impossible and were disposed of (their data is lost).
    pub(crate) disposed: Vec<u32>,
    /// Received-but-unreleased entries queued again (adoption).
    pub(crate) redelivered: u32,
}

impl<'a> Index<'a> {
    /// Writes a fresh index: `start` FREE entries of `capacity` bytes (generation 1), the rest
    /// DISPOSED.
    pub(crate) fn init(&self, cfg: &PoolConfig) {
        let h = self.hdr;
        h.signature.store(SIGNATURE, Relaxed);
        h.layout_version.store(LAYOUT_VERSION, Relaxed);
        h.entry_size.store(ENTRY_SIZE as u32, Relaxed);
        h.config.store(cfg);
        h.state.store(STATE_OPEN, Relaxed);
        h.grow_requested.store(0, Relaxed);
        for l in [&h.free, &h.queued, &h.disposed] {
            l.head.store(NIL, Relaxed);
            l.tail.store(NIL, Relaxed);
            l.count.store(0, Relaxed);
        }
        h.allocated.store(0, Relaxed);
        h.received.store(0, Relaxed);
        h.next_seq.store(1, Relaxed);
        let now = now_ns();
        for (i, e) in self.dir.iter().enumerate() {
            e.prev.store(NIL, Relaxed);
            e.next.store(NIL, Relaxed);
            e.len.store(0, Relaxed);
            e.seq.store(0, Relaxed);
            e.flags.store(0, Relaxed);
            e.set_owner(None);
            e.released_at.store(now, Relaxed);
            if i < cfg.start_buffers as usize {
                e.generation.store(1, Relaxed);
                e.capacity.store(cfg.initial_buffer_size as u64, Relaxed);
                commit(e, FREE);
                self.push_back(List::Free, i as u32);
            } else {
                e.generation.store(0, Relaxed);
                e.capacity.store(0, Relaxed);
                commit(e, DISPOSED);
                self.push_back(List::Disposed, i as u32);
            }
        }
    }

    /// Copies `i`'s values out and checks them against the pool's limits.
    pub(crate) fn slot(&self, i: u32) -> Result<Slot, Corruption> {
        let e = self
            .entry(i)
            .ok_or_else(|| Corruption(format!("entry {i} out of range")))?;
        let max = self.max_size;
        let (len, cap) = (e.len.load(Relaxed), e.capacity.load(Relaxed));
        if cap == 0 || cap > max {
            return Err(Corruption(format!(
                "entry {i}: capacity {cap} outside 1..={max}"
            )));
        }
        if len > cap {
            return Err(Corruption(format!(
                "entry {i}: length {len} exceeds capacity {cap}"
            )));
        }
        Ok(Slot {
            index: i,
            generation: e.generation.load(Relaxed),
            len: len as usize,
            capacity: cap as usize,
            flags: e.flags.load(Relaxed),
            owner: e.owner(),
        })
    }

    /// Checks every invariant: header fields, list links (no cycles, back links, counts),
    /// that every entry is on the list its status names (or on none for ALLOCATED/RECEIVED),
    /// and the entries' lengths and capacities.
    pub(crate) fn validate(&self) -> Result<(), Corruption> {
        let h = self.hdr;
        let n = self.n();
        if h.signature.load(Relaxed) != SIGNATURE {
            return Err(Corruption("bad signature".into()));
        }
        if h.layout_version.load(Relaxed) != LAYOUT_VERSION {
            return Err(Corruption(format!(
                "layout version {}",
                h.layout_version.load(Relaxed)
            )));
        }
        if h.entry_size.load(Relaxed) != ENTRY_SIZE as u32 {
            return Err(Corruption(format!(
                "entry size {}",
                h.entry_size.load(Relaxed)
            )));
        }
        if h.config.max_buffers.load(Relaxed) != n {
            return Err(Corruption(format!(
                "header says {} buffers, directory holds {n}",
                h.config.max_buffers.load(Relaxed)
            )));
        }
        let state = h.state.load(Relaxed);
        if !matches!(state, STATE_OPEN | STATE_RETIRED | STATE_PARKED) {
            return Err(Corruption(format!("index state {state}")));
        }
        let mut seen = vec![false; n as usize];
        for list in [List::Free, List::Queued, List::Disposed] {
            let l = self.head(list);
            let mut prev = NIL;
            let mut cur = l.head.load(Relaxed);
            let mut count = 0u32;
            while cur != NIL {
                let e = self.entry(cur).ok_or_else(|| {
                    Corruption(format!("{list:?} list: link to {cur}, out of range"))
                })?;
                if std::mem::replace(&mut seen[cur as usize], true) {
                    return Err(Corruption(format!(
                        "{list:?} list: entry {cur} linked twice (cycle or shared)"
                    )));
                }
                let s = e.status.load(Relaxed);
                if s != list.status() {
                    return Err(Corruption(format!(
                        "{list:?} list: entry {cur} has status {s}"
                    )));
                }
                if e.prev.load(Relaxed) != prev {
                    return Err(Corruption(format!(
                        "{list:?} list: entry {cur}.prev is {}, expected {prev}",
                        e.prev.load(Relaxed)
                    )));
                }
                count += 1;
                prev = cur;
                cur = e.next.load(Relaxed);
            }
            if l.tail.load(Relaxed) != prev {
                return Err(Corruption(format!(
                    "{list:?} list: tail is {}, last entry is {prev}",
                    l.tail.load(Relaxed)
                )));
            }
            if l.count.load(Relaxed) != count {
                return Err(Corruption(format!(
                    "{list:?} list: count says {}, holds {count}",
                    l.count.load(Relaxed)
                )));
            }
        }
        let (mut allocated, mut received) = (0u32, 0u32);
        for (i, e) in self.dir.iter().enumerate() {
            let s = e.status.load(Relaxed);
            match s {
                FREE | QUEUED | DISPOSED if !seen[i] => {
                    return Err(Corruption(format!(
                        "entry {i} has status {s} but is on no list"
                    )))
                }
                ALLOCATED | RECEIVED if seen[i] => {
                    return Err(Corruption(format!(
                        "entry {i} has status {s} but is on a list"
                    )))
                }
                ALLOCATED => allocated += 1,
                RECEIVED => received += 1,
                FREE | QUEUED | DISPOSED => {}
                _ => return Err(Corruption(format!("entry {i} has invalid status {s}"))),
            }
            if s != DISPOSED {
                self.slot(i as u32)?;
            }
        }
        if h.allocated.load(Relaxed) != allocated || h.received.load(Relaxed) != received {
            return Err(Corruption(format!(
                "counts say {} allocated / {} received, directory has {allocated} / {received}",
                h.allocated.load(Relaxed),
                h.received.load(Relaxed)
            )));
        }
        Ok(())
    }

    /// Rebuilds every list and count from the entries' statuses, disposing of entries whose
    /// values are impossible. The queue is rebuilt in send order (`seq`). With `redeliver`
    /// (adopting a dead Reader's index), RECEIVED entries are queued again, ahead of the
    /// others, and flagged [`FLAG_REDELIVERED`]. Needs only the header's `max_buffer_size`
    /// (checked by the caller) to be sane.
    pub(crate) fn repair(&self, redeliver: bool) -> RepairReport {
        let mut report = RepairReport::default();
        let h = self.hdr;
        for l in [&h.free, &h.queued, &h.disposed] {
            l.head.store(NIL, Relaxed);
            l.tail.store(NIL, Relaxed);
            l.count.store(0, Relaxed);
        }
        let (mut allocated, mut received) = (0, 0);
        let mut queue: Vec<(bool, u64, u32)> = Vec::new();
        let mut free: Vec<(u64, u32)> = Vec::new();
        for (i, e) in self.dir.iter().enumerate() {
            let i = i as u32;
            e.prev.store(NIL, Relaxed);
            e.next.store(NIL, Relaxed);
            let mut s = e.status.load(Relaxed);
            if s != DISPOSED
                && (!matches!(s, FREE | ALLOCATED | QUEUED | RECEIVED) || self.slot(i).is_err())
            {
                // Impossible values: the buffer cannot be trusted; drop it.
                report.disposed.push(i);
                s = DISPOSED;
            }
            match s {
                FREE => free.push((e.released_at.load(Relaxed), i)),
                ALLOCATED => allocated += 1,
                QUEUED => queue.push((false, e.seq.load(Relaxed), i)),
                RECEIVED if redeliver && self.redeliver(i).is_ok() => {
                    report.redelivered += 1;
                    queue.push((true, e.seq.load(Relaxed), i));
                }
                RECEIVED => received += 1,
                _ => {
                    strip(e);
                    self.push_back(List::Disposed, i);
                }
            }
        }
        // Redelivered first (they were received before anything still queued), then by seq.
        queue.sort_by_key(|&(redelivered, seq, _)| (!redelivered, seq));
        for (_, _, i) in queue {
            self.push_back(List::Queued, i);
        }
        // Most recently released first, so the tail stays the longest idle.
        free.sort_by_key(|&(at, _)| std::cmp::Reverse(at));
        for (_, i) in free {
            self.push_back(List::Free, i);
        }
        h.allocated.store(allocated, Relaxed);
        h.received.store(received, Relaxed);
        report
    }
}

impl IndexHeader {
    /// The state word (see [`STATE_OPEN`]).
    pub(crate) fn state(&self) -> u32 {
        self.state.load(Acquire)
    }

    /// Whether no Reader will read this index again.
    pub(crate) fn is_retired(&self) -> bool {
        self.state() == STATE_RETIRED
    }

    /// -> OPEN: `reader` (with its instance `token`) serves the index. The identity first,
    /// the state last.
    pub(crate) fn open(&self, reader: ProcessId, token: (u64, u64)) {
        self.reader_start.store(reader.start_time(), Relaxed);
        self.reader_pid.store(reader.pid(), Relaxed);
        self.reader_token[0].store(token.0, Relaxed);
        self.reader_token[1].store(token.1, Relaxed);
        self.state.store(STATE_OPEN, Release);
    }

    /// -> RETIRED (from any state): no Reader will read this index again.
    pub(crate) fn retire(&self) {
        self.state.store(STATE_RETIRED, Release);
    }

    /// Whether a Reader stopped gracefully and left this index to the next one.
    pub(crate) fn is_parked(&self) -> bool {
        self.state() == STATE_PARKED
    }

    /// OPEN -> PARKED: the Reader stops gracefully and leaves what is pending to the next
    /// Reader. Refused (`false`, nothing changed) from any other state.
    pub(crate) fn park(&self) -> bool {
        self.state
            .compare_exchange(STATE_OPEN, STATE_PARKED, AcqRel, Acquire)
            .is_ok()
    }

    /// Asks the service thread for more buffers; `false` if a request is pending already.
    /// Under the pool mutex (the service thread only clears the flag).
    pub(crate) fn request_grow(&self) -> bool {
        if self.grow_requested.load(Relaxed) != 0 {
            return false;
        }
        self.grow_requested.store(1, Relaxed);
        true
    }

    /// Takes a pending growth request (the service thread).
    pub(crate) fn take_grow_request(&self) -> bool {
        self.grow_requested.swap(0, AcqRel) != 0
    }
}

/// Why a transition was refused. A refused transition changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The entry does not exist, or its status is not one the transition leaves from.
    Status {
        /// The entry asked for.
        entry: u32,
        /// Its status (0 if it does not exist).
        found: u32,
    },
    /// The entry has the right status but another generation, capacity or owner: the caller
    /// no longer holds what it took (a repair or a reclaim intervened).
    NotHeld {
        /// The entry asked for.
        entry: u32,
    },
    /// The entry's values are impossible (capacity outside the pool's limits, length beyond
    /// the capacity): it cannot be trusted, and the caller should [`Index::dispose`] of it.
    Invalid(Corruption),
    /// The links of the list it is on are inconsistent: the lists need [`Index::repair`].
    Corrupt(Corruption),
}

impl From<Corruption> for Refused {
    fn from(c: Corruption) -> Self {
        Refused::Corrupt(c)
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Status { entry, found } => {
                write!(
                    f,
                    "entry {entry} has status {found}, not one this step leaves from"
                )
            }
            Refused::NotHeld { entry } => {
                write!(f, "entry {entry} is no longer held by the caller")
            }
            Refused::Invalid(c) | Refused::Corrupt(c) => f.write_str(&c.0),
        }
    }
}

/// Stores `status`: the commit point of every transition. The fields the new status is
/// trusted for were written before, and `Release` keeps them before (see "Crash order").
#[inline]
fn commit(e: &Entry, status: u32) {
    e.status.store(status, Release);
}

/// Makes `e` DISPOSED (its buffer is gone or cannot be trusted). DISPOSED trusts no field, so
/// the status goes first and the fields the old status was trusted for are cleared after it.
fn strip(e: &Entry) {
    commit(e, DISPOSED);
    e.capacity.store(0, Relaxed);
    e.len.store(0, Relaxed);
    e.set_owner(None);
}

/// The transitions of [`Entry::status`], each applying the crash order once. They expect the
/// pool mutex to be held, check the entry's status (and, where the caller held the entry,
/// that it still does) and refuse anything else without changing a thing.
impl Index<'_> {
    /// Entry `i` if it exists and its status is one of `from`.
    fn expect(&self, i: u32, from: &[u32]) -> Result<&Entry, Refused> {
        let e = self
            .entry(i)
            .ok_or(Refused::Status { entry: i, found: 0 })?;
        let found = e.status.load(Relaxed);
        if from.contains(&found) {
            Ok(e)
        } else {
            Err(Refused::Status { entry: i, found })
        }
    }

    /// Whether entry `i` has `status`, `generation` and (if given) `owner`: whether a caller
    /// that took it still holds it.
    pub(crate) fn holds(
        &self,
        i: u32,
        status: u32,
        generation: u32,
        owner: Option<Member>,
    ) -> bool {
        self.entry(i).is_some_and(|e| {
            e.status.load(Relaxed) == status
                && e.generation.load(Relaxed) == generation
                && owner.is_none_or(|o| e.owner() == o)
        })
    }

    fn check_held(
        &self,
        i: u32,
        status: u32,
        generation: u32,
        owner: Option<Member>,
    ) -> Result<(), Refused> {
        if self.holds(i, status, generation, owner) {
            Ok(())
        } else {
            Err(Refused::NotHeld { entry: i })
        }
    }

    /// `capacity` for entry `i`, if it is within the pool's limits.
    fn in_limits(&self, i: u32, capacity: u64) -> Result<u64, Refused> {
        let max = self.max_size;
        if capacity == 0 || capacity > max {
            return Err(Refused::Invalid(Corruption(format!(
                "entry {i}: capacity {capacity} outside 1..={max}"
            ))));
        }
        Ok(capacity)
    }

    /// FREE -> ALLOCATED: hands entry `i`, on the free list, to the Writer `owner`, empty.
    /// Returns its values.
    ///
    /// Refused with `Invalid` (nothing changed) if its capacity is impossible.
    pub(crate) fn allocate(&self, i: u32, owner: Member) -> Result<Slot, Refused> {
        let e = self.expect(i, &[FREE])?;
        let capacity = self.in_limits(i, e.capacity.load(Relaxed))?;
        self.unlink(List::Free, i)?;
        e.len.store(0, Relaxed);
        e.flags.store(0, Relaxed);
        // The owner before the status: a Writer that dies before the store leaves the entry
        // FREE (repair relinks it), after it ALLOCATED to itself (reclaimed when it is dead),
        // never ALLOCATED to the entry's previous Writer.
        e.set_owner(Some(owner));
        commit(e, ALLOCATED);
        inc(&self.hdr.allocated);
        Ok(Slot {
            index: i,
            generation: e.generation.load(Relaxed),
            len: 0,
            capacity: capacity as usize,
            flags: 0,
            owner,
        })
    }

    /// ALLOCATED -> FREE: entry `i` of `generation`, held by `owner`, goes back to the free
    /// list's head unsent (the Writer dropped it, or `owner` died and the Reader takes it
    /// back).
    pub(crate) fn give_back(&self, i: u32, owner: Member, generation: u32) -> Result<(), Refused> {
        let e = self.expect(i, &[ALLOCATED])?;
        self.check_held(i, ALLOCATED, generation, Some(owner))?;
        e.len.store(0, Relaxed);
        e.released_at.store(now_ns(), Relaxed);
        commit(e, FREE);
        e.set_owner(None);
        dec(&self.hdr.allocated);
        self.push_front(List::Free, i);
        Ok(())
    }

    /// ALLOCATED -> QUEUED: the Writer `owner` sends entry `i` (of `generation`, `capacity`
    /// bytes as the Writer knows it) holding `len` bytes. It goes to the queue's tail with
    /// the next sequence number, which is returned.
    pub(crate) fn queue(
        &self,
        i: u32,
        owner: Member,
        generation: u32,
        capacity: u64,
        len: u64,
    ) -> Result<u64, Refused> {
        let e = self.expect(i, &[ALLOCATED])?;
        self.check_held(i, ALLOCATED, generation, Some(owner))?;
        if e.capacity.load(Relaxed) != capacity {
            return Err(Refused::NotHeld { entry: i });
        }
        if len > capacity {
            return Err(Refused::Invalid(Corruption(format!(
                "entry {i}: length {len} exceeds capacity {capacity}"
            ))));
        }
        let h = self.hdr;
        let seq = h.next_seq.load(Relaxed);
        h.next_seq.store(seq.wrapping_add(1), Relaxed);
        e.len.store(len, Relaxed);
        e.seq.store(seq, Relaxed);
        commit(e, QUEUED);
        dec(&h.allocated);
        self.push_back(List::Queued, i);
        Ok(seq)
    }

    /// QUEUED -> RECEIVED: the Reader takes entry `i`, on the queue, and gets its values,
    /// checked against the pool's limits.
    ///
    /// Refused with `Invalid` (nothing changed) if they are impossible: the message cannot
    /// be trusted.
    pub(crate) fn receive(&self, i: u32) -> Result<Slot, Refused> {
        let e = self.expect(i, &[QUEUED])?;
        let slot = self.slot(i).map_err(Refused::Invalid)?;
        self.unlink(List::Queued, i)?;
        // The message (len, seq, flags) is what RECEIVED is trusted for: already in place.
        commit(e, RECEIVED);
        inc(&self.hdr.received);
        Ok(slot)
    }

    /// RECEIVED -> FREE: the Reader is done with message `i` of `generation`; the buffer
    /// goes to the free list's head.
    pub(crate) fn release(&self, i: u32, generation: u32) -> Result<(), Refused> {
        let e = self.expect(i, &[RECEIVED])?;
        self.check_held(i, RECEIVED, generation, None)?;
        e.released_at.store(now_ns(), Relaxed);
        // Until the status says FREE the message must stay whole for an adopter to deliver
        // again, so `len` and `flags` are left alone (the next `allocate` resets them).
        commit(e, FREE);
        dec(&self.hdr.received);
        self.push_front(List::Free, i);
        Ok(())
    }

    /// FREE, ALLOCATED, QUEUED or RECEIVED -> DISPOSED: entry `i`, whose status the caller
    /// found to be `from`, loses its buffer (swept, or found unusable). An entry on a list is
    /// unlinked first. Its `generation` is kept: it names the segment to remove.
    pub(crate) fn dispose(&self, i: u32, from: u32) -> Result<(), Refused> {
        if from == DISPOSED {
            return Err(Refused::Status {
                entry: i,
                found: DISPOSED,
            });
        }
        let e = self.expect(i, &[from])?;
        match from {
            FREE => self.unlink(List::Free, i)?,
            QUEUED => self.unlink(List::Queued, i)?,
            ALLOCATED => dec(&self.hdr.allocated),
            _ => dec(&self.hdr.received),
        }
        strip(e);
        self.push_back(List::Disposed, i);
        Ok(())
    }

    /// DISPOSED -> FREE: entry `i`, on the disposed list and still of `old_generation`, gets
    /// the new buffer segment of `generation` and `capacity` bytes; it goes to the free list's
    /// head.
    pub(crate) fn revive(
        &self,
        i: u32,
        old_generation: u32,
        generation: u32,
        capacity: u64,
    ) -> Result<(), Refused> {
        let e = self.expect(i, &[DISPOSED])?;
        if e.generation.load(Relaxed) != old_generation {
            return Err(Refused::NotHeld { entry: i });
        }
        self.in_limits(i, capacity)?;
        self.unlink(List::Disposed, i)?;
        e.generation.store(generation, Relaxed);
        e.capacity.store(capacity, Relaxed);
        e.len.store(0, Relaxed);
        e.flags.store(0, Relaxed);
        e.released_at.store(now_ns(), Relaxed);
        commit(e, FREE);
        self.push_front(List::Free, i);
        Ok(())
    }

    /// RECEIVED -> QUEUED, for a Reader adopting a dead one's index: marks message `i`
    /// redelivered. Links nothing and counts nothing: only [`Index::repair`], which rebuilds
    /// the lists and counts afterwards, calls it.
    fn redeliver(&self, i: u32) -> Result<(), Refused> {
        let e = self.expect(i, &[RECEIVED])?;
        // The flag before the status: an adopter dying in between must not leave the
        // message QUEUED without its mark.
        e.flags.fetch_or(FLAG_REDELIVERED, Relaxed);
        commit(e, QUEUED);
        Ok(())
    }

    /// Not a status change: the Writer `owner` replaced the buffer segment of its ALLOCATED
    /// entry `i` (of `old_generation`) with a bigger one, of `generation` and `capacity`.
    pub(crate) fn replace_buffer(
        &self,
        i: u32,
        owner: Member,
        old_generation: u32,
        generation: u32,
        capacity: u64,
    ) -> Result<(), Refused> {
        let e = self.expect(i, &[ALLOCATED])?;
        self.check_held(i, ALLOCATED, old_generation, Some(owner))?;
        self.in_limits(i, capacity)?;
        e.generation.store(generation, Relaxed);
        e.capacity.store(capacity, Relaxed);
        Ok(())
    }
}

/// Adds one to a statistics counter (only ever written under the pool mutex).
pub(crate) fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
}

/// Subtracts one from a count, stopping at 0.
pub(crate) fn dec(c: &AtomicU32) {
    c.store(c.load(Relaxed).saturating_sub(1), Relaxed);
}

/// Adds one to a count, stopping at `u32::MAX`.
pub(crate) fn inc(c: &AtomicU32) {
    c.store(c.load(Relaxed).saturating_add(1), Relaxed);
}

/// Wall-clock ns since the Unix epoch: comparable between processes (the sweeper's clock).
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
