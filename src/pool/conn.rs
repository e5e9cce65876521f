//! One process's attachment to a pool: the index segment, its mutex, alive lock and events,
//! and the cache of buffer segments mapped in this process. The Reader and every Writer
//! hold one.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::PoolError;
use super::index::{self, bump, Index, IndexHeader, List, Slot, DISPOSED};
use crate::error::Error;
use crate::name::ServiceName;
use crate::process::Member;
use crate::segment::{Access, Perm, Segment, SegmentKind, DEFAULT_MODE, READY_WAIT};
use crate::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use crate::sync::{Event, Locked, Mutex, MutexGuard, WaitStrategy};
use crate::trace::event;

/// Segment kind version of the index and buffer segments.
pub(super) const KIND_VERSION: u32 = index::LAYOUT_VERSION;
/// Tag of the index segment (buffer segments are tagged by [`buffer_tag`]).
pub(super) const INDEX_TAG: &str = crate::segment::POOL_INDEX_TAG;

/// How long a positive check that a Reader holds the alive lock is trusted on the send
/// path (a check is a system call on Linux). Waits re-check every ~20 ms regardless, so a
/// Reader's death is still noticed within 100 ms.
const READER_CHECK_TTL: Duration = Duration::from_millis(5);

/// How long a pool operation that is not meant to wait ([`LockWait::Bounded`]) waits for the
/// pool mutex before it gives up with [`PoolError::LockHeld`]. A healthy holder keeps the
/// mutex for microseconds and a dead one's is taken over, so only a live holder that stalls
/// (stopped by a signal or a debugger, or stuck) makes a call wait this long.
pub(super) const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one call waits for the pool mutex, and what it returns when the wait ends.
#[derive(Debug, Clone, Copy)]
pub(super) enum LockWait {
    /// Until the caller's deadline (a `_timeout` call), then the call's own timeout error.
    Until(Instant, fn() -> PoolError),
    /// At most [`LOCK_TIMEOUT`], then [`PoolError::LockHeld`]: calls that do not wait
    /// otherwise (a send, `try_recv`, `stats`), releases, the service thread.
    Bounded,
    /// As long as a live process holds it: blocking calls without a timeout (`recv`,
    /// `acquire`), which wait as long as it takes anyway.
    Forever,
}

impl LockWait {
    /// A call's wait: until `deadline`, after which the call fails with `timeout()`; without
    /// a deadline, `otherwise`.
    pub(super) fn deadline(
        deadline: Option<Instant>,
        timeout: fn() -> PoolError,
        otherwise: LockWait,
    ) -> LockWait {
        deadline.map_or(otherwise, |d| LockWait::Until(d, timeout))
    }
}

/// The tag of buffer `index`'s segment of `generation`.
pub(super) fn buffer_tag(index: u32, generation: u32) -> String {
    format!("pool.b{index}.g{generation}")
}

/// The generation a directory entry's next buffer segment gets (0 is never used).
pub(super) fn next_generation(generation: u32) -> u32 {
    generation.wrapping_add(1).max(1)
}

/// Removes the index segment `name` if it is still `ours` (the same instance token).
///
/// A Reader's handles on its index never remove it when dropped: the index outlives a
/// Reader that parks it, so the Reader removes it deliberately, here, when it stops with
/// nothing pending or replaces an index it cannot adopt.
pub(super) fn remove_index(name: &ServiceName, ours: &Segment) {
    // Ours, whatever mode it was created with.
    let found = Segment::open_kind_access(
        name,
        INDEX_TAG,
        SegmentKind::PoolIndex,
        KIND_VERSION,
        Duration::ZERO,
        Access::own(true),
    );
    if found.is_ok_and(|seg| seg.token() == ours.token()) {
        let _ = Segment::remove_tagged(name, INDEX_TAG, true);
    }
}

/// Makes `ev`'s waits use `strategy`: the pool's one call into [`Event`]'s strategy setter.
pub(super) fn set_wait_strategy(ev: &mut Event, strategy: WaitStrategy) {
    ev.set_wait_strategy(strategy);
}

/// A snapshot of a pool's lists and counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Buffers that exist (free + allocated + queued + received).
    pub buffers: u32,
    /// Buffers on the free list.
    pub free: u32,
    /// Buffers held by Writers.
    pub allocated: u32,
    /// Messages waiting for the Reader.
    pub queued: u32,
    /// Messages the Reader holds.
    pub received: u32,
    /// Directory entries without a buffer.
    pub disposed: u32,
    /// The pool's `max_buffers`.
    pub max_buffers: u32,
    /// Messages sent.
    pub sent: u64,
    /// Messages delivered (redeliveries included).
    pub delivered: u64,
    /// Messages delivered again after a Reader restart.
    pub redelivered: u64,
    /// Buffers added by growth.
    pub grown: u64,
    /// Buffers disposed of by the sweeper.
    pub swept: u64,
    /// Buffers taken back from dead Writers.
    pub reclaimed: u64,
    /// Times the index was found inconsistent and repaired.
    pub repairs: u64,
    /// Times a Reader adopted this pool from a dead one.
    pub adoptions: u32,
}

/// A buffer segment mapped in this process.
#[derive(Debug)]
pub(super) struct Mapped {
    pub(super) generation: u32,
    pub(super) seg: Arc<Segment>,
}

/// One process's view of an index segment: its synchronisation objects and the buffer
/// mappings cache. Shared by the Reader and by Writers.
pub(super) struct Conn {
    pub(super) seg: Arc<Segment>,
    /// The index header and directory inside `seg` (which keeps them mapped), found once.
    hdr: &'static IndexHeader,
    dir: &'static [index::Entry],
    pub(super) mutex: Mutex,
    pub(super) alive: Mutex,
    pub(super) queue_ev: Event,
    pub(super) freed_ev: Event,
    pub(super) service_ev: Event,
    pub(super) name: ServiceName,
    pub(super) token: [u8; 16],
    /// The index object's permission bits and group, read once when attaching (only its
    /// owner can change them): buffers are created with them, and other users' buffer
    /// objects accepted by them (`None` on Windows).
    pub(super) perm: Option<Perm>,
    pub(super) max_buffers: u32,
    pub(super) max_buffer_size: usize,
    pub(super) cache: parking_lot::Mutex<Vec<Option<Mapped>>>,
    /// Acquires through this connection, to prune the cache now and then.
    pub(super) acquires: AtomicU32,
    /// This attachment's record as a Writer holding buffers: its pid, and the proof of life
    /// the Reader checks before taking a buffer back.
    pub(super) me: Member,
    /// Until when (ns after `epoch`) a Reader is known to hold the alive lock.
    reader_seen_until: AtomicU64,
    epoch: Instant,
    /// Hand-backs that found the pool mutex held too long, done when this connection next
    /// gets it; `has_deferred` keeps that check to one load.
    deferred: parking_lot::Mutex<Vec<Deferred>>,
    has_deferred: AtomicBool,
    /// The Reader's attachment only: per entry, 1 while it holds the entry (a `ReadBuf`
    /// exists). Changed under the pool mutex. A RECEIVED entry the Reader does not hold was
    /// put there by someone else: the service thread frees it again.
    held: Vec<AtomicU32>,
}

/// A buffer handed back while a live process kept the pool mutex past [`LOCK_TIMEOUT`]
/// (stopped by a signal or a debugger). Rather than leave the buffer with a process that no
/// longer uses it, the hand-back is done by this connection's next operation that gets the
/// mutex (for the Reader: its service thread, every tick).
#[derive(Debug, Clone, Copy)]
pub(super) enum Deferred {
    /// A Writer's unsent buffer (`Index::give_back`).
    GiveBack {
        index: u32,
        generation: u32,
        owner: Member,
    },
    /// A received message the Reader is done with (`Index::release`).
    Release { index: u32, generation: u32 },
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("name", &self.name)
            .field("max_buffers", &self.max_buffers)
            .finish_non_exhaustive()
    }
}

/// Why an existing index cannot be used.
pub(super) fn check_header(seg: &Segment) -> Result<(u32, usize), String> {
    if seg.len() < index::DIR_OFFSET {
        return Err(format!("index segment of {} bytes is too small", seg.len()));
    }
    let Some(h) = seg.data().get::<IndexHeader>(0) else {
        return Err(format!("index segment of {} bytes is too small", seg.len()));
    };
    let r = Ordering::Acquire;
    if h.signature.load(r) != index::SIGNATURE {
        return Err("bad pool signature".into());
    }
    if h.layout_version.load(r) != index::LAYOUT_VERSION {
        return Err(format!("pool layout version {}", h.layout_version.load(r)));
    }
    if h.entry_size.load(r) != index::ENTRY_SIZE as u32 {
        return Err(format!("entry size {}", h.entry_size.load(r)));
    }
    let config = h.config.load();
    config.validate().map_err(|e| e.to_string())?;
    if seg.len() < index::index_size(config.max_buffers) {
        return Err(format!(
            "index segment of {} bytes cannot hold {} entries",
            seg.len(),
            config.max_buffers
        ));
    }
    Ok((config.max_buffers, config.max_buffer_size))
}

impl Conn {
    /// Attaches to an initialised index segment; waits for a message or a free buffer use
    /// `strategy`.
    pub(super) fn attach(
        seg: Arc<Segment>,
        name: ServiceName,
        strategy: WaitStrategy,
    ) -> Result<Conn, PoolError> {
        let (max_buffers, max_buffer_size) = check_header(&seg).map_err(PoolError::Corrupt)?;
        // SAFETY: the creator initialised a mutex, the alive lock and three events at these
        // fixed offsets before publishing; check_header verified the segment is big enough.
        let (mutex, alive, queue_ev, freed_ev, service_ev) = unsafe {
            (
                Mutex::open_at(&seg, index::MUTEX_OFFSET)?,
                Mutex::open_at(&seg, index::ALIVE_OFFSET)?,
                Event::open_at(&seg, index::QUEUE_EVENT_OFFSET)?,
                Event::open_at(&seg, index::FREED_EVENT_OFFSET)?,
                Event::open_at(&seg, index::SERVICE_EVENT_OFFSET)?,
            )
        };
        // SAFETY: `seg` is stored in the Conn beside these views, so the mapping outlives
        // them (they are only handed out borrowed from the Conn).
        let data = unsafe { seg.data().detach() };
        let corrupt = || PoolError::Corrupt("the index does not hold its directory".into());
        let hdr = data.get::<IndexHeader>(0).ok_or_else(corrupt)?;
        let dir = data
            .slice::<index::Entry>(index::DIR_OFFSET, max_buffers as usize)
            .ok_or_else(corrupt)?;
        let token = seg.token();
        let perm = seg.perm();
        let me = seg.member()?;
        let cache = parking_lot::Mutex::new((0..max_buffers).map(|_| None).collect());
        let mut conn = Conn {
            seg,
            hdr,
            dir,
            mutex,
            alive,
            queue_ev,
            freed_ev,
            service_ev,
            name,
            token,
            perm,
            max_buffers,
            max_buffer_size,
            cache,
            acquires: AtomicU32::new(0),
            me,
            reader_seen_until: AtomicU64::new(0),
            epoch: Instant::now(),
            deferred: parking_lot::Mutex::new(Vec::new()),
            has_deferred: AtomicBool::new(false),
            held: (0..max_buffers).map(|_| AtomicU32::new(0)).collect(),
        };
        conn.set_wait_strategy(strategy);
        Ok(conn)
    }

    /// Makes the waits for a message (`queue_ev`) and for a free buffer (`freed_ev`) use
    /// `strategy`. The service thread's timed ticks (`service_ev`) keep the default: a
    /// spinning strategy there would burn a CPU between ticks.
    pub(super) fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        set_wait_strategy(&mut self.queue_ev, strategy);
        set_wait_strategy(&mut self.freed_ev, strategy);
    }

    /// Another handle on the queue event (the Reader's own, for its waits), using `strategy`.
    pub(super) fn queue_waiter(&self, strategy: WaitStrategy) -> Result<Event, PoolError> {
        // SAFETY: as in `attach`: the creator initialised an event at this fixed offset, and
        // the segment is big enough (checked when attached).
        let mut ev = unsafe { Event::open_at(&self.seg, index::QUEUE_EVENT_OFFSET)? };
        set_wait_strategy(&mut ev, strategy);
        Ok(ev)
    }

    pub(super) fn hdr(&self) -> &IndexHeader {
        self.hdr
    }

    pub(super) fn index(&self) -> Index<'_> {
        Index {
            hdr: self.hdr,
            dir: self.dir,
            max_size: self.max_buffer_size as u64,
        }
    }

    /// Takes the pool mutex, waiting at most [`LOCK_TIMEOUT`] ([`LockWait::Bounded`]).
    #[inline]
    pub(super) fn locked(&self) -> Result<MutexGuard<'_>, PoolError> {
        self.locked_for(LockWait::Bounded)
    }

    /// Takes the pool mutex (one uncontended CAS on the fast path), waiting as `wait` says.
    /// If its previous holder died, the lists are rebuilt before the guard is handed out.
    #[inline]
    pub(super) fn locked_for(&self, wait: LockWait) -> Result<MutexGuard<'_>, PoolError> {
        let g = match self.lock_for(wait)? {
            Locked::Acquired(g) => g,
            Locked::OwnerDied(g) => {
                self.index().repair(false);
                bump(&self.hdr().repairs);
                event!(
                    warn,
                    pool = self.name.as_str(),
                    "a process died holding the pool's lock; the index was repaired"
                );
                g
            }
        };
        if self.has_deferred.load(Ordering::Relaxed) {
            self.apply_deferred();
        }
        Ok(g)
    }

    /// Hands `d` back now if the pool mutex can be had within [`LOCK_TIMEOUT`], else when
    /// this connection next gets it. Errors other than a held lock (the index is corrupt,
    /// the pool retired) leave the buffer to the repairs that follow them.
    pub(super) fn hand_back(&self, d: Deferred) {
        match self.locked() {
            Ok(g) => {
                let done = self.apply(d);
                drop(g);
                if done {
                    self.freed_ev.set();
                }
            }
            Err(PoolError::LockHeld { .. }) => {
                self.deferred.lock().push(d);
                self.has_deferred.store(true, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }

    /// Does the deferred hand-backs; the caller holds the pool mutex.
    #[cold]
    fn apply_deferred(&self) {
        let pending = std::mem::take(&mut *self.deferred.lock());
        self.has_deferred.store(false, Ordering::Relaxed);
        let mut freed = false;
        for d in pending {
            freed |= self.apply(d);
        }
        if freed {
            self.freed_ev.set();
        }
    }

    /// One hand-back under the pool mutex; whether it freed a buffer. Refused if the entry
    /// was repaired or reclaimed meanwhile: then it is not ours any more.
    fn apply(&self, d: Deferred) -> bool {
        let ix = self.index();
        match d {
            Deferred::GiveBack {
                index,
                generation,
                owner,
            } => ix.give_back(index, owner, generation).is_ok(),
            Deferred::Release { index, generation } => {
                self.set_held(index, false);
                ix.release(index, generation).is_ok()
            }
        }
    }

    /// Records that the Reader holds entry `i` (a `ReadBuf` exists) or no longer does; the
    /// caller holds the pool mutex.
    pub(super) fn set_held(&self, i: u32, held: bool) {
        if let Some(h) = self.held.get(i as usize) {
            h.store(u32::from(held), Ordering::Relaxed);
        }
    }

    /// Whether the Reader holds entry `i`.
    pub(super) fn holds(&self, i: u32) -> bool {
        self.held
            .get(i as usize)
            .is_some_and(|h| h.load(Ordering::Relaxed) != 0)
    }

    #[inline]
    fn lock_for(&self, wait: LockWait) -> Result<Locked<'_>, PoolError> {
        let r = match wait {
            LockWait::Until(d, _) => self
                .mutex
                .lock_timeout(d.saturating_duration_since(Instant::now())),
            LockWait::Bounded => self.mutex.lock_timeout(LOCK_TIMEOUT),
            LockWait::Forever => self.mutex.lock(),
        };
        match (r, wait) {
            (Ok(l), _) => Ok(l),
            (Err(Error::Timeout), LockWait::Until(_, timeout)) => Err(timeout()),
            (Err(Error::Timeout), _) => Err(PoolError::LockHeld {
                pid: self.mutex.holder_pid(),
                waited: LOCK_TIMEOUT,
            }),
            (Err(e), _) => Err(e.into()),
        }
    }

    /// Whether a Reader holds the alive lock, asking the kernel now (no cached answer).
    pub(super) fn reader_alive_now(&self) -> bool {
        self.alive.is_held()
    }

    /// Whether a live Reader holds the alive lock (a kernel-held proof of life, seen across
    /// PID namespaces). A positive answer is reused for [`READER_CHECK_TTL`].
    pub(super) fn reader_alive(&self) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if now < self.reader_seen_until.load(Ordering::Relaxed) {
            return true;
        }
        let alive = self.alive.is_held();
        if alive {
            let ttl = READER_CHECK_TTL.as_nanos() as u64;
            self.reader_seen_until
                .store(now.saturating_add(ttl), Ordering::Relaxed);
        }
        alive
    }

    pub(super) fn retired(&self) -> bool {
        self.hdr().is_retired()
    }

    /// The index's permission if it lets other users write (a pool shared between users).
    pub(super) fn shared(&self) -> Option<Perm> {
        self.perm.filter(|p| p.is_shared())
    }

    /// Creates buffer `index`'s segment of `generation`, `size` bytes, owned by this process,
    /// with the permission of the pool's index (its bits and, where only the group may
    /// write, its group: see `Access::shared_service` for what participants accept).
    ///
    /// The segment belongs to this index (live while it is) and keeps no file descriptor
    /// open. Every error is [`PoolError::Setup`]: a live process owning a buffer segment's
    /// name is not a Reader running.
    pub(super) fn create_buffer(
        &self,
        index: u32,
        generation: u32,
        size: usize,
    ) -> Result<Segment, PoolError> {
        let perm = self.perm;
        let mut seg = Segment::builder(self.name.as_str())
            .tag(&buffer_tag(index, generation))
            .kind(SegmentKind::PoolBuffer, KIND_VERSION)
            .size(size)
            .mode(perm.map_or(DEFAULT_MODE, |p| p.mode & 0o777))
            .group(perm.filter(|p| p.group_decides()).map(|p| p.gid))
            .shared(perm.filter(|p| p.is_shared()))
            .parent(self.seg.token())
            .create()
            .map_err(PoolError::Setup)?;
        seg.detach();
        Ok(seg)
    }

    /// Removes buffer `index`'s segment of `generation` by name, if it is this user's or,
    /// in a pool shared between users, one a participant made (see `Access::shared_service`).
    pub(super) fn remove_buffer(&self, index: u32, generation: u32, force: bool) {
        let tag = buffer_tag(index, generation);
        let _ = Segment::remove_tagged_with(&self.name, &tag, force, self.shared());
    }

    /// The mapping of buffer `slot`, from the cache or opened now. With `adopt`, the opener
    /// becomes the segment's owner (the Reader: it removes buffers when it exits).
    pub(super) fn map(&self, slot: &Slot, adopt: bool) -> Result<Arc<Segment>, PoolError> {
        let mut cache = self.cache.lock();
        let cell = cache
            .get_mut(slot.index as usize)
            .ok_or_else(|| PoolError::Corrupt(format!("entry {} out of range", slot.index)))?;
        if let Some(m) = cell {
            if m.generation == slot.generation && m.seg.len() >= slot.capacity {
                return Ok(Arc::clone(&m.seg));
            }
        }
        // A buffer may be made by any participant: the Reader, or a Writer that grew it.
        let mut seg = Segment::open_kind_access(
            &self.name,
            &buffer_tag(slot.index, slot.generation),
            SegmentKind::PoolBuffer,
            KIND_VERSION,
            READY_WAIT,
            Access::shared_service(self.perm),
        )?;
        // What the name opened is this index's buffer only if the index was not retired
        // before the open: a Reader retires its index before it removes the buffers, and a
        // newer pool of the same name may then reuse their names.
        fence(Ordering::SeqCst);
        if self.retired() {
            return Err(PoolError::NoReader);
        }
        if seg.parent() != self.seg.token() {
            return Err(PoolError::Corrupt(format!(
                "buffer {} belongs to another instance of the pool",
                slot.index
            )));
        }
        if seg.len() < slot.capacity {
            return Err(PoolError::Corrupt(format!(
                "buffer {} holds {} bytes, its entry says {}",
                slot.index,
                seg.len(),
                slot.capacity
            )));
        }
        if adopt {
            seg.take_over();
        }
        seg.detach();
        let seg = Arc::new(seg);
        let replaced = cell.replace(Mapped {
            generation: slot.generation,
            seg: Arc::clone(&seg),
        });
        let previous = slot.generation.wrapping_sub(1);
        let stale_previous = adopt
            && self.shared().is_some()
            && previous != 0
            && replaced.as_ref().is_none_or(|m| m.generation != previous);
        drop(cache);
        // Dropped (and removed if ours) outside the cache lock.
        drop(replaced);
        if stale_previous {
            // A Writer that grew the buffer removes the generation it replaced, but in a
            // pool shared between users that one may be another user's (a buffer another
            // Writer grew and gave back unsent), which only its owner or a privileged
            // Reader can remove: the Reader tries when it first maps the new generation.
            self.remove_buffer(slot.index, previous, true);
        }
        Ok(seg)
    }

    /// Drops this process's mappings of buffers the Reader has disposed of or replaced, so
    /// that a swept buffer's memory is given back to the system. Writers only: the Reader's
    /// cached segments are owned, and it drops them itself when it disposes of them.
    pub(super) fn prune(&self) {
        let ix = self.index();
        let mut cache = self.cache.lock();
        for (cell, e) in cache.iter_mut().zip(ix.dir) {
            let stale = cell.as_ref().is_some_and(|m| {
                e.status() == DISPOSED || e.generation.load(Ordering::Relaxed) != m.generation
            });
            if stale {
                *cell = None;
            }
        }
    }

    /// Removes buffer `index`'s segment of `generation` (dropping our mapping of it).
    pub(super) fn drop_buffer(&self, index: u32, generation: u32) {
        let cached = self
            .cache
            .lock()
            .get_mut(index as usize)
            .and_then(|c| c.take_if(|m| m.generation == generation));
        match cached {
            Some(m) if m.seg.is_owner() => drop(m),
            _ => self.remove_buffer(index, generation, true),
        }
    }

    pub(super) fn stats(&self) -> Result<PoolStats, PoolError> {
        let _g = self.locked()?;
        let ix = self.index();
        let h = ix.hdr;
        let r = Ordering::Relaxed;
        let (free, queued, disposed) = (
            ix.count(List::Free),
            ix.count(List::Queued),
            ix.count(List::Disposed),
        );
        let (allocated, received) = (h.allocated.load(r), h.received.load(r));
        Ok(PoolStats {
            buffers: self.max_buffers - disposed,
            free,
            allocated,
            queued,
            received,
            disposed,
            max_buffers: self.max_buffers,
            sent: h.sent.load(r),
            delivered: h.delivered.load(r),
            redelivered: h.redelivered.load(r),
            grown: h.grown.load(r),
            swept: h.swept.load(r),
            reclaimed: h.reclaimed.load(r),
            repairs: h.repairs.load(r),
            adoptions: h.adoptions.load(r),
        })
    }
}
