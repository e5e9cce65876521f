//! The pool's index: a header and a directory of buffer entries, laid out in the index
//! segment, and the list operations on them.
//!
//! Everything here works on plain memory (`&IndexHeader`, `&[Entry]`), so that the list
//! algorithms are unit-tested on the heap; the pool places the same structs in its index
//! segment. Every field is an atomic: a hostile process may write the memory at any time,
//! and atomics make that a wrong value rather than undefined behaviour. Fields are accessed
//! with `Relaxed` ordering while the pool's named mutex is held (the mutex orders them).
//!
//! **Crash order.** A process may die (SIGKILL) between any two stores while it holds the
//! mutex; the next locker, or an adopting Reader, then rebuilds the lists from the entries
//! alone ([`Index::repair`]), trusting each entry's fields as its *status* describes them:
//! `len`, `seq` and `flags` of a QUEUED or RECEIVED entry (the message, redelivered on
//! adoption), `owner` of an ALLOCATED one (taken back if it died), `released_at` of a FREE
//! one. So every status change writes the fields the new status is trusted for first, then
//! stores the status (with `Release`, so that the compiler keeps that order), and does not
//! clear the fields the old status is trusted for before that store (clearing `owner` early
//! is harmless: an ALLOCATED entry naming no process is taken back like a dead Writer's).
//! Fields a status is not trusted for may hold stale values; they are set again before any
//! status that trusts them.
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

use std::time::Duration;

use super::config::PoolConfig;
use crate::process::ProcessId;
use crate::sync::atomic::{
    AtomicU32, AtomicU64,
    Ordering::{Relaxed, Release},
};

/// `b"shmlpool"`: the first bytes of a pool index.
pub(crate) const SIGNATURE: u64 = u64::from_le_bytes(*b"shmlpool");
/// Version of the layout below (header, directory, entry). Also the segment kind version.
pub(crate) const LAYOUT_VERSION: u32 = 1;
/// "No entry" in links and list heads.
pub(crate) const NIL: u32 = u32::MAX;

/// `Entry::status` values. Zero is never valid (an uninitialised entry).
///
/// | value | meaning | on list |
/// |---|---|---|
/// | `FREE` (1) | has a buffer segment, nobody holds it | free |
/// | `ALLOCATED` (2) | held by the Writer `owner` | none |
/// | `QUEUED` (3) | sent, waiting for the Reader | queued |
/// | `RECEIVED` (4) | being read by the Reader | none |
/// | `DISPOSED` (5) | no buffer segment (never grown, or swept) | disposed |
pub(crate) const FREE: u32 = 1;
/// See [`FREE`].
pub(crate) const ALLOCATED: u32 = 2;
/// See [`FREE`].
pub(crate) const QUEUED: u32 = 3;
/// See [`FREE`].
pub(crate) const RECEIVED: u32 = 4;
/// See [`FREE`].
pub(crate) const DISPOSED: u32 = 5;

/// `Entry::flags` bit: the message was received by a Reader that died before releasing it,
/// and is delivered again.
pub(crate) const FLAG_REDELIVERED: u32 = 1;

/// `IndexHeader::state` values.
///
/// | value | meaning |
/// |---|---|
/// | `STATE_OPEN` (1) | a Reader serves this index, or a future Reader may adopt it |
/// | `STATE_RETIRED` (2) | no Reader will ever read it again (closed cleanly, or replaced by a fresh index): Writers copy on send or report `NoReader` |
pub(crate) const STATE_OPEN: u32 = 1;
/// See [`STATE_OPEN`].
pub(crate) const STATE_RETIRED: u32 = 2;

/// Offsets in the index segment's data region.
pub(crate) const MUTEX_OFFSET: usize = 512;
/// The "a Reader is alive" lock: held by the Reader's service thread for its whole life.
pub(crate) const ALIVE_OFFSET: usize = 576;
/// Event: queue not empty (the Reader waits on it).
pub(crate) const QUEUE_EVENT_OFFSET: usize = 640;
/// Event: a buffer was freed or the pool grew (Writers wait on it in `acquire`).
pub(crate) const FREED_EVENT_OFFSET: usize = 704;
/// Event: wake the service thread (growth requested, shutdown).
pub(crate) const SERVICE_EVENT_OFFSET: usize = 768;
/// The directory: `max_buffers` entries of [`ENTRY_SIZE`] bytes.
pub(crate) const DIR_OFFSET: usize = 832;
/// Bytes per directory entry.
pub(crate) const ENTRY_SIZE: usize = 64;

/// Bytes of index data for `max_buffers` entries.
pub(crate) fn index_size(max_buffers: u32) -> usize {
    DIR_OFFSET + max_buffers as usize * ENTRY_SIZE
}

/// The pool configuration as stored in the index (fixed-width fields).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct RawConfig {
    pub(crate) initial_buffer_size: AtomicU64,
    pub(crate) max_buffer_size: AtomicU64,
    pub(crate) start_buffers: AtomicU32,
    pub(crate) max_buffers: AtomicU32,
    pub(crate) min_buffers: AtomicU32,
    pub(crate) resize_increment: AtomicU32,
    pub(crate) resize_threshold: AtomicU32,
    _pad: AtomicU32,
    pub(crate) sweep_timeout_ns: AtomicU64,
}

impl RawConfig {
    /// The configuration as stored (to be validated by the caller).
    pub(crate) fn load(&self) -> PoolConfig {
        let r = Relaxed;
        PoolConfig {
            initial_buffer_size: usize::try_from(self.initial_buffer_size.load(r))
                .unwrap_or(usize::MAX),
            max_buffer_size: usize::try_from(self.max_buffer_size.load(r)).unwrap_or(usize::MAX),
            start_buffers: self.start_buffers.load(r),
            max_buffers: self.max_buffers.load(r),
            min_buffers: self.min_buffers.load(r),
            resize_increment: self.resize_increment.load(r),
            resize_threshold: self.resize_threshold.load(r),
            sweep_timeout: Duration::from_nanos(self.sweep_timeout_ns.load(r)),
        }
    }
}

/// Head, tail and length of one list.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ListHead {
    head: AtomicU32,
    tail: AtomicU32,
    count: AtomicU32,
    _pad: AtomicU32,
}

/// The index header, at offset 0 of the index segment's data region.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct IndexHeader {
    /// [`SIGNATURE`].
    pub(crate) signature: AtomicU64,
    /// [`LAYOUT_VERSION`].
    pub(crate) layout_version: AtomicU32,
    /// [`ENTRY_SIZE`].
    pub(crate) entry_size: AtomicU32,
    pub(crate) config: RawConfig,
    /// See [`STATE_OPEN`] and the table there.
    pub(crate) state: AtomicU32,
    /// Set by a Writer that wants more buffers; cleared by the service thread.
    pub(crate) grow_requested: AtomicU32,
    pub(crate) free: ListHead,
    pub(crate) queued: ListHead,
    pub(crate) disposed: ListHead,
    /// Entries in the ALLOCATED / RECEIVED states.
    pub(crate) allocated: AtomicU32,
    pub(crate) received: AtomicU32,
    /// The Reader serving the index (pid, start time) and its instance token.
    pub(crate) reader_pid: AtomicU32,
    pub(crate) adoptions: AtomicU32,
    pub(crate) reader_start: AtomicU64,
    pub(crate) reader_token: [AtomicU64; 2],
    /// Next `Entry::seq` to hand out (send order).
    pub(crate) next_seq: AtomicU64,
    /// Counters, for `stats()`.
    pub(crate) sent: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) grown: AtomicU64,
    pub(crate) swept: AtomicU64,
    pub(crate) reclaimed: AtomicU64,
    pub(crate) repairs: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<IndexHeader>() <= MUTEX_OFFSET);

/// One directory entry: the state of one buffer.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct Entry {
    /// See [`FREE`] and the table there.
    pub(crate) status: AtomicU32,
    pub(crate) prev: AtomicU32,
    pub(crate) next: AtomicU32,
    /// Buffer segment generation: the segment's tag is `pool.b<index>.g<generation>`.
    pub(crate) generation: AtomicU32,
    /// Bytes of message in the buffer (QUEUED / RECEIVED; stale in the other states).
    pub(crate) len: AtomicU64,
    /// Bytes of the buffer segment's data region in use (0 when DISPOSED).
    pub(crate) capacity: AtomicU64,
    /// When it went back to the free list, ns since the Unix epoch (the sweeper's clock).
    pub(crate) released_at: AtomicU64,
    /// Send order (QUEUED / RECEIVED), to rebuild the FIFO after a crash.
    pub(crate) seq: AtomicU64,
    /// The Writer holding it (ALLOCATED).
    pub(crate) owner_start: AtomicU64,
    pub(crate) owner_pid: AtomicU32,
    /// [`FLAG_REDELIVERED`].
    pub(crate) flags: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Entry>() == ENTRY_SIZE);

impl Entry {
    pub(crate) fn owner(&self) -> ProcessId {
        ProcessId::from_raw(self.owner_pid.load(Relaxed), self.owner_start.load(Relaxed))
    }

    pub(crate) fn set_owner(&self, p: Option<ProcessId>) {
        let (pid, start) = p.map_or((0, 0), |p| (p.pid(), p.start_time()));
        self.owner_pid.store(pid, Relaxed);
        self.owner_start.store(start, Relaxed);
    }
}

/// Which list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum List {
    Free,
    Queued,
    Disposed,
}

impl List {
    fn status(self) -> u32 {
        match self {
            List::Free => FREE,
            List::Queued => QUEUED,
            List::Disposed => DISPOSED,
        }
    }
}

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
        let c = &h.config;
        c.initial_buffer_size
            .store(cfg.initial_buffer_size as u64, Relaxed);
        c.max_buffer_size.store(cfg.max_buffer_size as u64, Relaxed);
        c.start_buffers.store(cfg.start_buffers, Relaxed);
        c.max_buffers.store(cfg.max_buffers, Relaxed);
        c.min_buffers.store(cfg.min_buffers, Relaxed);
        c.resize_increment.store(cfg.resize_increment, Relaxed);
        c.resize_threshold.store(cfg.resize_threshold, Relaxed);
        c.sweep_timeout_ns.store(
            u64::try_from(cfg.sweep_timeout.as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
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
                e.status.store(FREE, Relaxed);
                self.push_back(List::Free, i as u32);
            } else {
                e.generation.store(0, Relaxed);
                e.capacity.store(0, Relaxed);
                e.status.store(DISPOSED, Relaxed);
                self.push_back(List::Disposed, i as u32);
            }
        }
    }

    fn n(&self) -> u32 {
        self.dir.len() as u32
    }

    fn head(&self, list: List) -> &'a ListHead {
        match list {
            List::Free => &self.hdr.free,
            List::Queued => &self.hdr.queued,
            List::Disposed => &self.hdr.disposed,
        }
    }

    /// The entry `i`, if in range.
    pub(crate) fn entry(&self, i: u32) -> Option<&'a Entry> {
        self.dir.get(i as usize)
    }

    /// Number of entries on `list` (as recorded; clamped to the directory size).
    pub(crate) fn count(&self, list: List) -> u32 {
        self.head(list).count.load(Relaxed).min(self.n())
    }

    /// Buffers that exist (not disposed).
    pub(crate) fn buffers(&self) -> u32 {
        self.n() - self.count(List::Disposed)
    }

    /// Links `i` (already given its status) at the tail of `list`.
    pub(crate) fn push_back(&self, list: List, i: u32) {
        let l = self.head(list);
        let e = &self.dir[i as usize];
        let tail = l.tail.load(Relaxed);
        e.prev.store(tail, Relaxed);
        e.next.store(NIL, Relaxed);
        match self.entry(tail) {
            Some(t) => t.next.store(i, Relaxed),
            None => l.head.store(i, Relaxed),
        }
        l.tail.store(i, Relaxed);
        l.count.fetch_add(1, Relaxed);
    }

    /// Links `i` (already given its status) at the head of `list`.
    pub(crate) fn push_front(&self, list: List, i: u32) {
        let l = self.head(list);
        let e = &self.dir[i as usize];
        let head = l.head.load(Relaxed);
        e.prev.store(NIL, Relaxed);
        e.next.store(head, Relaxed);
        match self.entry(head) {
            Some(h) => h.prev.store(i, Relaxed),
            None => l.tail.store(i, Relaxed),
        }
        l.head.store(i, Relaxed);
        l.count.fetch_add(1, Relaxed);
    }

    /// Unlinks `i` from `list`, checking the links it touches.
    pub(crate) fn unlink(&self, list: List, i: u32) -> Result<(), Corruption> {
        let l = self.head(list);
        let e = self
            .entry(i)
            .ok_or_else(|| Corruption(format!("{list:?} list names entry {i}, out of range")))?;
        let status = e.status.load(Relaxed);
        if status != list.status() {
            return Err(Corruption(format!(
                "entry {i} on the {list:?} list has status {status}"
            )));
        }
        let (prev, next) = (e.prev.load(Relaxed), e.next.load(Relaxed));
        let p = if prev == NIL {
            None
        } else {
            Some(
                self.entry(prev)
                    .ok_or_else(|| Corruption(format!("entry {i}: prev {prev} out of range")))?,
            )
        };
        let nx = if next == NIL {
            None
        } else {
            Some(
                self.entry(next)
                    .ok_or_else(|| Corruption(format!("entry {i}: next {next} out of range")))?,
            )
        };
        match p {
            Some(p) if p.next.load(Relaxed) != i => {
                return Err(Corruption(format!(
                    "entry {prev}.next does not point back to {i}"
                )))
            }
            None if l.head.load(Relaxed) != i => {
                return Err(Corruption(format!(
                    "entry {i} has no prev but is not the {list:?} head"
                )))
            }
            _ => {}
        }
        match nx {
            Some(n) if n.prev.load(Relaxed) != i => {
                return Err(Corruption(format!(
                    "entry {next}.prev does not point back to {i}"
                )))
            }
            None if l.tail.load(Relaxed) != i => {
                return Err(Corruption(format!(
                    "entry {i} has no next but is not the {list:?} tail"
                )))
            }
            _ => {}
        }
        let count = l.count.load(Relaxed);
        if count == 0 {
            return Err(Corruption(format!(
                "{list:?} list count is 0 but holds entry {i}"
            )));
        }
        match p {
            Some(p) => p.next.store(next, Relaxed),
            None => l.head.store(next, Relaxed),
        }
        match nx {
            Some(n) => n.prev.store(prev, Relaxed),
            None => l.tail.store(prev, Relaxed),
        }
        l.count.store(count - 1, Relaxed);
        e.prev.store(NIL, Relaxed);
        e.next.store(NIL, Relaxed);
        Ok(())
    }

    /// Unlinks and returns the head of `list` (`None` if empty).
    pub(crate) fn pop_front(&self, list: List) -> Result<Option<u32>, Corruption> {
        let head = self.head(list).head.load(Relaxed);
        if head == NIL {
            return Ok(None);
        }
        self.unlink(list, head)?;
        Ok(Some(head))
    }

    /// The head of `list`, if it names an entry.
    pub(crate) fn front(&self, list: List) -> Option<u32> {
        let h = self.head(list).head.load(Relaxed);
        (h < self.n()).then_some(h)
    }

    /// The tail of `list` (its longest-waiting member on the free list).
    pub(crate) fn back(&self, list: List) -> Option<u32> {
        let t = self.head(list).tail.load(Relaxed);
        (t < self.n()).then_some(t)
    }

    /// Gives the off-list entry `i` (ALLOCATED or RECEIVED, found unusable) up: DISPOSED,
    /// no buffer. `was` is its status, whose count is decremented.
    pub(crate) fn dispose(&self, i: u32, was: u32) {
        let Some(e) = self.entry(i) else { return };
        let counter = match was {
            ALLOCATED => &self.hdr.allocated,
            RECEIVED => &self.hdr.received,
            _ => return,
        };
        counter.store(counter.load(Relaxed).saturating_sub(1), Relaxed);
        e.status.store(DISPOSED, Relaxed);
        e.capacity.store(0, Relaxed);
        e.len.store(0, Relaxed);
        e.set_owner(None);
        self.push_back(List::Disposed, i);
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
        if state != STATE_OPEN && state != STATE_RETIRED {
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
                RECEIVED if redeliver => {
                    // The flag before the status: an adopter dying in between must not leave
                    // the message QUEUED without its mark.
                    e.flags.fetch_or(FLAG_REDELIVERED, Relaxed);
                    e.status.store(QUEUED, Release);
                    report.redelivered += 1;
                    queue.push((true, e.seq.load(Relaxed), i));
                }
                RECEIVED => received += 1,
                _ => {
                    e.status.store(DISPOSED, Relaxed);
                    e.capacity.store(0, Relaxed);
                    e.len.store(0, Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Heap storage laid out like the segment (the header, then the directory).
    struct Heap {
        hdr: Box<IndexHeader>,
        dir: Vec<Entry>,
    }

    fn zeroed<T>() -> T {
        // SAFETY: only used for the all-atomic structs of this module, for which all-zero
        // bytes are a valid value.
        unsafe { std::mem::zeroed() }
    }

    fn heap(start: u32, max: u32) -> Heap {
        let h = Heap {
            hdr: Box::new(zeroed()),
            dir: (0..max).map(|_| zeroed()).collect(),
        };
        let cfg = PoolConfig {
            start_buffers: start,
            max_buffers: max,
            min_buffers: 0,
            resize_threshold: 0,
            ..PoolConfig::default()
        };
        h.index().init(&cfg);
        h
    }

    impl Heap {
        fn index(&self) -> Index<'_> {
            Index {
                hdr: &self.hdr,
                dir: &self.dir,
                max_size: PoolConfig::default().max_buffer_size as u64,
            }
        }
    }

    fn take(ix: &Index<'_>, list: List, status: u32) -> u32 {
        let i = ix.pop_front(list).unwrap().unwrap();
        ix.dir[i as usize].status.store(status, Relaxed);
        i
    }

    #[test]
    fn layout_is_pinned() {
        // tests/pool.rs corrupts entries by offset: keep these in step with it.
        assert_eq!(std::mem::offset_of!(Entry, status), 0);
        assert_eq!(std::mem::offset_of!(Entry, prev), 4);
        assert_eq!(std::mem::offset_of!(Entry, next), 8);
        assert_eq!(std::mem::offset_of!(Entry, generation), 12);
        assert_eq!(std::mem::offset_of!(Entry, len), 16);
        assert_eq!(std::mem::offset_of!(Entry, capacity), 24);
        assert_eq!(std::mem::offset_of!(IndexHeader, signature), 0);
        assert_eq!(DIR_OFFSET % 64, 0);
        assert_eq!(SERVICE_EVENT_OFFSET + 64, DIR_OFFSET);
    }

    #[test]
    fn init_is_valid() {
        let h = heap(3, 8);
        let ix = h.index();
        ix.validate().unwrap();
        assert_eq!(ix.count(List::Free), 3);
        assert_eq!(ix.count(List::Disposed), 5);
        assert_eq!(ix.buffers(), 3);
    }

    #[test]
    fn queue_is_fifo_and_free_is_lifo() {
        let h = heap(8, 8);
        let ix = h.index();
        let n = if cfg!(miri) { 100 } else { 100_000 };
        let mut expect = std::collections::VecDeque::new();
        for round in 0..n {
            if round % 3 != 2 && ix.count(List::Free) > 0 {
                let i = take(&ix, List::Free, QUEUED);
                ix.push_back(List::Queued, i);
                expect.push_back(i);
            } else if let Some(i) = ix.pop_front(List::Queued).unwrap() {
                assert_eq!(Some(i), expect.pop_front());
                ix.dir[i as usize].status.store(FREE, Relaxed);
                ix.push_front(List::Free, i);
                // LIFO: the one just freed is the next one handed out.
                assert_eq!(ix.hdr.free.head.load(Relaxed), i);
            }
            if round % 1000 == 0 {
                ix.validate().unwrap();
            }
        }
        ix.validate().unwrap();
    }

    #[test]
    fn unlink_from_the_middle_and_ends() {
        let h = heap(5, 5);
        let ix = h.index();
        for i in [2, 0, 4, 1, 3] {
            ix.unlink(List::Free, i).unwrap();
            ix.dir[i as usize].status.store(DISPOSED, Relaxed);
            ix.push_back(List::Disposed, i);
            ix.validate().unwrap();
        }
        assert_eq!(ix.count(List::Free), 0);
        assert_eq!(ix.pop_front(List::Free).unwrap(), None);
    }

    #[test]
    fn allocated_and_received_are_counted() {
        let h = heap(4, 4);
        let ix = h.index();
        take(&ix, List::Free, ALLOCATED);
        assert!(ix.validate().is_err(), "count not updated yet");
        ix.hdr.allocated.store(1, Relaxed);
        ix.validate().unwrap();
    }

    fn corrupted(f: impl Fn(&Index<'_>)) -> Heap {
        let h = heap(6, 8);
        let ix = h.index();
        for _ in 0..3 {
            let i = take(&ix, List::Free, QUEUED);
            ix.dir[i as usize].seq.store(u64::from(10 - i), Relaxed);
            ix.dir[i as usize].len.store(10, Relaxed);
            ix.push_back(List::Queued, i);
        }
        ix.validate().unwrap();
        f(&ix);
        h
    }

    #[test]
    fn validate_finds_corruption_and_repair_fixes_it() {
        type Corrupter = Box<dyn Fn(&Index<'_>)>;
        let cases: Vec<(&str, Corrupter)> = vec![
            (
                "link out of range",
                Box::new(|ix| ix.dir[0].next.store(1000, Relaxed)),
            ),
            ("cycle", Box::new(|ix| ix.dir[1].next.store(0, Relaxed))),
            (
                "bad back link",
                Box::new(|ix| ix.dir[4].prev.store(5, Relaxed)),
            ),
            (
                "bad status",
                Box::new(|ix| ix.dir[3].status.store(77, Relaxed)),
            ),
            (
                "status of another list",
                Box::new(|ix| ix.dir[3].status.store(QUEUED, Relaxed)),
            ),
            (
                "len > capacity",
                Box::new(|ix| ix.dir[1].len.store(u64::MAX, Relaxed)),
            ),
            (
                "capacity > max",
                Box::new(|ix| ix.dir[4].capacity.store(u64::MAX, Relaxed)),
            ),
            (
                "head out of range",
                Box::new(|ix| ix.hdr.queued.head.store(99, Relaxed)),
            ),
            ("count", Box::new(|ix| ix.hdr.free.count.store(1, Relaxed))),
            (
                "allocated count",
                Box::new(|ix| ix.hdr.allocated.store(5, Relaxed)),
            ),
            (
                "entry on no list",
                Box::new(|ix| ix.hdr.disposed.head.store(NIL, Relaxed)),
            ),
        ];
        for (what, f) in cases {
            let h = corrupted(f);
            let ix = h.index();
            assert!(ix.validate().is_err(), "{what}: not detected");
            // Popping never goes out of bounds, whatever it finds.
            for list in [List::Free, List::Queued, List::Disposed] {
                for _ in 0..10 {
                    match ix.pop_front(list) {
                        Ok(Some(i)) => assert!(i < 8),
                        _ => break,
                    }
                }
            }
        }
        // Repair restores the invariants and keeps the queue's send order.
        let h = corrupted(|ix| {
            ix.dir[1].next.store(1000, Relaxed);
            ix.dir[4].status.store(77, Relaxed);
            ix.hdr.queued.count.store(0, Relaxed);
        });
        let ix = h.index();
        assert!(ix.validate().is_err());
        let report = ix.repair(false);
        ix.validate().unwrap();
        assert_eq!(report.disposed, vec![4]);
        let order: Vec<u32> = std::iter::from_fn(|| ix.pop_front(List::Queued).unwrap()).collect();
        assert_eq!(order, vec![2, 1, 0], "by seq");
    }

    #[test]
    fn repair_for_adoption_redelivers_received_first() {
        let h = heap(4, 4);
        let ix = h.index();
        let a = take(&ix, List::Free, QUEUED);
        ix.dir[a as usize].seq.store(5, Relaxed);
        ix.push_back(List::Queued, a);
        let b = take(&ix, List::Free, RECEIVED);
        ix.dir[b as usize].seq.store(3, Relaxed);
        ix.hdr.received.store(1, Relaxed);
        ix.validate().unwrap();
        let report = ix.repair(true);
        ix.validate().unwrap();
        assert_eq!(report.redelivered, 1);
        assert_eq!(ix.pop_front(List::Queued).unwrap(), Some(b));
        assert_ne!(ix.dir[b as usize].flags.load(Relaxed) & FLAG_REDELIVERED, 0);
        assert_eq!(ix.pop_front(List::Queued).unwrap(), Some(a));
    }
}
