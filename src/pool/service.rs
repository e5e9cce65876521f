//! The Reader's side of a pool: the state its handles share, the service thread that holds
//! the alive lock and grows, sweeps and reclaims buffers, and the graceful stop.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::config::PoolConfig;
use super::conn::{next_generation, remove_index, Conn, Mapped};
use super::error::PoolError;
use super::index::{self, bump, List, ALLOCATED, DISPOSED, FREE, QUEUED, RECEIVED};
use crate::error::Error;
use crate::process::{Member, ProcessId};
use crate::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use crate::trace::event;

/// How often the service thread checks the index and whether Writers holding buffers are
/// still alive.
const RECLAIM_INTERVAL: Duration = Duration::from_millis(100);

/// `ReaderShared::left`: what the stop did with the index.
///
/// | value | meaning |
/// |---|---|
/// | `SERVING` (0) | not stopped (or the service thread ended before deciding: keep everything) |
/// | `LEFT_PARKED` (1) | messages were pending: index and buffers stay for the next Reader |
/// | `LEFT_RETIRED` (2) | nothing was pending: index and buffers are removed |
const SERVING: u32 = 0;
/// See [`SERVING`].
const LEFT_PARKED: u32 = 1;
/// See [`SERVING`].
const LEFT_RETIRED: u32 = 2;

/// State shared by the Reader, its service thread and the buffers it hands out.
#[derive(Debug)]
pub(super) struct ReaderShared {
    pub(super) conn: Conn,
    pub(super) config: PoolConfig,
    pub(super) stop: AtomicU32,
    /// `ReadBuf`s handed out and not dropped yet.
    bufs: AtomicU64,
    /// Set when the `Reader` is dropped: the stop finishes then, or when the last `ReadBuf`
    /// goes (see [`ReaderShared::begin_stop`]).
    stopping: AtomicBool,
    /// The service thread, until the stop joins it.
    service: parking_lot::Mutex<Option<JoinHandle<()>>>,
    /// See [`SERVING`] and the table there. Written by the service thread as it ends.
    left: AtomicU32,
}

impl ReaderShared {
    pub(super) fn new(conn: Conn, config: PoolConfig) -> ReaderShared {
        ReaderShared {
            conn,
            config,
            stop: AtomicU32::new(0),
            bufs: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            service: parking_lot::Mutex::new(None),
            left: AtomicU32::new(SERVING),
        }
    }

    /// Keeps the running service thread, for the stop to join.
    pub(super) fn keep_service(&self, service: JoinHandle<()>) {
        *self.service.lock() = Some(service);
    }

    /// A `ReadBuf` is handed out.
    pub(super) fn buf_out(&self) {
        self.bufs.fetch_add(1, Ordering::SeqCst);
    }

    /// A `ReadBuf` was dropped (its message released, or left RECEIVED if that failed).
    pub(super) fn buf_back(&self) {
        // SeqCst with `begin_stop`: of the last `buf_back` and `begin_stop`, the later one
        // sees the other's write, so at least one of them finishes the stop.
        if self.bufs.fetch_sub(1, Ordering::SeqCst) == 1 && self.stopping.load(Ordering::SeqCst) {
            self.finish_stop();
        }
    }

    /// The Reader is dropped: the graceful stop. It finishes now, or, while `ReadBuf`s are
    /// still alive, when the last of them is dropped: until then the pool stays served (the
    /// alive lock held), so messages the application still holds are released normally and
    /// never redelivered.
    pub(super) fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if self.bufs.load(Ordering::SeqCst) == 0 {
            self.finish_stop();
        }
    }

    /// Ends the service thread, which parks or retires the index as its last act (see
    /// [`ReaderShared::leave`]), then keeps or removes the shared objects accordingly. Runs
    /// once, on the thread that drops the Reader or its last `ReadBuf`, and is over before
    /// that drop returns (so a process may exit right after).
    fn finish_stop(&self) {
        // Held to the end: should the Reader's drop and its last ReadBuf's both get here, the
        // second waits for the first, so that neither drop returns before the stop is over.
        let mut kept = self.service.lock();
        let Some(service) = kept.take() else {
            return;
        };
        self.stop.store(1, Ordering::Release);
        self.conn.service_ev.set();
        let _ = service.join();
        match self.left.load(Ordering::Acquire) {
            LEFT_RETIRED => self.remove_objects(),
            // Parked, or the thread ended without deciding (it panicked): keep everything.
            // The index stays OPEN then, and is adopted as after a crash.
            _ => self.keep_buffers(),
        }
        // Writers waiting for a buffer learn that no Reader serves the pool now.
        self.conn.freed_ev.set();
    }

    /// Starts the service thread and waits until it holds the alive lock (waiting at most
    /// `wait` for it), so that Writers see a live Reader from then on. The thread starts
    /// its work when the returned sender sends; dropping the sender ends it.
    pub(super) fn start_service(
        shared: &Arc<ReaderShared>,
        wait: Duration,
    ) -> Result<(JoinHandle<()>, Sender<()>), PoolError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel();
        let sh = Arc::clone(shared);
        let handle = std::thread::Builder::new()
            .name("shmlink-pool-service".into())
            .spawn(move || sh.service(wait, ready_tx, go_rx))
            .map_err(|e| {
                PoolError::Setup(Error::os(
                    "spawning the service thread",
                    shared.conn.name.as_str(),
                    e,
                ))
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok((handle, go_tx)),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => Err(PoolError::Corrupt(
                "the pool service thread ended at start".into(),
            )),
        }
    }

    pub(super) fn set_identity(&self) {
        let token = uuid::Uuid::new_v4().as_u64_pair();
        self.conn.hdr().open(ProcessId::current(), token);
    }

    /// The service thread: holds the alive lock; grows, sweeps and reclaims.
    fn service(
        self: Arc<Self>,
        wait: Duration,
        ready: Sender<Result<(), PoolError>>,
        go: Receiver<()>,
    ) {
        let conn = &self.conn;
        let _alive = match conn.alive.lock_timeout(wait) {
            Ok(l) => l.into_guard(),
            Err(e) => {
                let _ = ready.send(Err(e.into()));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        if go.recv().is_err() {
            return;
        }
        let tick = (self.config.sweep_timeout / 4)
            .clamp(Duration::from_millis(5), Duration::from_millis(100));
        let mut last_reclaim = Instant::now();
        while self.stop.load(Ordering::Acquire) == 0 {
            conn.service_ev.wait_timeout(tick);
            if self.stop.load(Ordering::Acquire) != 0 {
                break;
            }
            if conn.hdr().take_grow_request() {
                let no_space = matches!(self.grow(), Err(PoolError::Setup(Error::NoSpace { .. })));
                let h = conn.hdr();
                if h.grow_failed.swap(u32::from(no_space), Ordering::AcqRel) != u32::from(no_space)
                {
                    // Writers waiting for a buffer learn why none comes.
                    conn.freed_ev.set();
                }
            }
            if last_reclaim.elapsed() >= RECLAIM_INTERVAL {
                last_reclaim = Instant::now();
                let _ = self.reclaim();
            }
            let _ = self.sweep();
        }
        self.leave();
    }

    /// The service thread's last act, while it still holds the alive lock (so no Reader can
    /// adopt the index halfway): with a message pending (queued, or received and not
    /// released), parks the index for the next Reader; with none, retires it, under the pool
    /// mutex so that no send slips in after the Writer's check (see `Writer::queue`).
    fn leave(&self) {
        let conn = &self.conn;
        let h = conn.hdr();
        let parked = match conn.locked() {
            Ok(_g) => {
                let pending = conn
                    .index()
                    .dir
                    .iter()
                    .any(|e| matches!(e.status(), QUEUED | RECEIVED));
                let parked = pending && h.park();
                if !parked {
                    h.retire();
                }
                parked
            }
            // A wedged mutex (a frozen or hostile peer): keep everything; a leak, never a loss.
            Err(_) => h.park() || !h.is_retired(),
        };
        let left = if parked { LEFT_PARKED } else { LEFT_RETIRED };
        self.left.store(left, Ordering::Release);
    }

    /// Adds up to `resize_increment` buffers (never above `max_buffers`).
    fn grow(&self) -> Result<(), PoolError> {
        let conn = &self.conn;
        let picked: Vec<(u32, u32)> = {
            let _g = conn.locked()?;
            let ix = conn.index();
            let room = self.config.max_buffers.saturating_sub(ix.buffers());
            let n = room.min(self.config.resize_increment());
            let mut picked = Vec::new();
            let mut cur = ix
                .front(List::Disposed)
                .ok()
                .flatten()
                .unwrap_or(index::NIL);
            while picked.len() < n as usize {
                let Some(e) = ix.entry(cur) else { break };
                if picked.iter().any(|&(i, _)| i == cur) {
                    break; // a cycle: repair will sort it out
                }
                picked.push((cur, e.generation.load(Ordering::Relaxed)));
                cur = e.next.load(Ordering::Relaxed);
            }
            picked
        };
        let mut made = Vec::new();
        for (i, g) in picked {
            let generation = next_generation(g);
            made.push((
                i,
                g,
                generation,
                conn.create_buffer(i, generation, self.config.initial_buffer_size)?,
            ));
        }
        let mut added = 0;
        {
            let _g = conn.locked()?;
            let ix = conn.index();
            let mut cache = conn.cache.lock();
            for (i, old_gen, generation, seg) in made {
                let capacity = self.config.initial_buffer_size as u64;
                if ix.revive(i, old_gen, generation, capacity).is_err() {
                    continue; // changed meanwhile (repair): dropping `seg` removes it
                }
                cache[i as usize] = Some(Mapped {
                    generation,
                    seg: Arc::new(seg),
                });
                added += 1;
            }
            ix.hdr.grown.fetch_add(added, Ordering::Relaxed);
        }
        if added > 0 {
            conn.freed_ev.set();
        }
        Ok(())
    }

    /// Disposes of free buffers idle longer than `sweep_timeout`, down to `min_buffers`.
    fn sweep(&self) -> Result<(), PoolError> {
        let conn = &self.conn;
        let timeout = u64::try_from(self.config.sweep_timeout.as_nanos()).unwrap_or(u64::MAX);
        let gone: Vec<(u32, u32)> = {
            let _g = conn.locked()?;
            let ix = conn.index();
            let now = index::now_ns();
            let mut gone = Vec::new();
            while ix.buffers() > self.config.min_buffers() {
                let Some(i) = ix.back(List::Free) else { break };
                let e = &ix.dir[i as usize];
                if now.saturating_sub(e.released_at.load(Ordering::Relaxed)) <= timeout {
                    break;
                }
                let generation = e.generation.load(Ordering::Relaxed);
                if ix.dispose(i, FREE).is_err() {
                    ix.repair(false);
                    break;
                }
                gone.push((i, generation));
                bump(&ix.hdr.swept);
            }
            gone
        };
        for (i, g) in gone {
            conn.drop_buffer(i, g);
        }
        Ok(())
    }

    /// Takes back buffers held by Writers that died, and RECEIVED entries this Reader does
    /// not hold (left by a crashed or hostile process).
    fn reclaim(&self) -> Result<(), PoolError> {
        let conn = &self.conn;
        let mut strays = 0;
        let held: Vec<(u32, Member, u32)> = {
            let _g = conn.locked()?;
            let ix = conn.index();
            // Lists and counts a peer wrote on are rebuilt from the entries' statuses, so
            // that queued messages are found again and free buffers handed out.
            if ix.validate().is_err() {
                ix.repair(false);
                bump(&ix.hdr.repairs);
                event!(
                    warn,
                    pool = conn.name.as_str(),
                    "the pool's index was inconsistent (a peer wrote on it); it was repaired"
                );
                conn.queue_ev.set();
                conn.freed_ev.set();
            }
            for (i, e) in ix.dir.iter().enumerate() {
                if e.status() == RECEIVED
                    && !conn.holds(i as u32)
                    && ix.slot(i as u32).is_ok()
                    && ix
                        .release(i as u32, e.generation.load(Ordering::Relaxed))
                        .is_ok()
                {
                    bump(&ix.hdr.repairs);
                    strays += 1;
                }
            }
            ix.dir
                .iter()
                .enumerate()
                .filter(|(_, e)| e.status() == ALLOCATED)
                .map(|(i, e)| (i as u32, e.owner(), e.generation.load(Ordering::Relaxed)))
                .collect()
        };
        if strays > 0 {
            event!(
                warn,
                pool = conn.name.as_str(),
                strays,
                "messages marked received that this Reader did not hold were released"
            );
            conn.freed_ev.set();
        }
        if held.is_empty() {
            return Ok(());
        }
        let mut verdict: Vec<(Member, bool)> = Vec::new();
        let mut dead = Vec::new();
        for (i, owner, g) in held {
            let alive = match verdict.iter().find(|(p, _)| *p == owner) {
                Some(&(_, a)) => a,
                None => {
                    let a = conn.seg.is_alive(owner);
                    verdict.push((owner, a));
                    a
                }
            };
            if !alive {
                dead.push((i, owner, g));
            }
        }
        if dead.is_empty() {
            return Ok(());
        }
        let mut taken = Vec::new();
        {
            let _g = conn.locked()?;
            let ix = conn.index();
            for (i, owner, g) in dead {
                if !ix.holds(i, ALLOCATED, g, Some(owner)) {
                    continue;
                }
                if ix.slot(i).is_err() {
                    let _ = ix.dispose(i, ALLOCATED);
                    continue;
                }
                if ix.give_back(i, owner, g).is_ok() {
                    bump(&ix.hdr.reclaimed);
                    taken.push((i, g));
                }
            }
        }
        if !taken.is_empty() {
            event!(
                info,
                pool = conn.name.as_str(),
                buffers = taken.len(),
                "buffers of dead Writers taken back"
            );
        }
        conn.freed_ev.set();
        // A Writer that died while growing its buffer may have left the neighbouring
        // generations' segments behind.
        for (i, g) in taken {
            for other in [g.wrapping_sub(1), g.wrapping_add(1)] {
                conn.remove_buffer(i, other, true);
            }
        }
        Ok(())
    }
}

impl ReaderShared {
    /// After parking: the buffers stay for the next Reader, so this process's handles must not
    /// remove them when dropped. (No handle of the Reader's removes the index: see
    /// `Reader::create_fresh`.)
    fn keep_buffers(&self) {
        for m in self.conn.cache.lock().iter_mut().flatten() {
            match Arc::get_mut(&mut m.seg) {
                Some(seg) => seg.disown(),
                // Not reached: `ReadBuf`s, the only other holders, are gone. Should it happen,
                // keep the buffer at the cost of this one mapping.
                None => std::mem::forget(Arc::clone(&m.seg)),
            }
        }
    }

    /// After retiring (nothing pending): removes every buffer segment, then the index.
    fn remove_objects(&self) {
        // Every buffer segment goes: those we own and have mapped with the cache, the others
        // (adopted and never mapped, grown by Writers) by name.
        let conn = &self.conn;
        let cache = std::mem::take(&mut *conn.cache.lock());
        let ix = conn.index();
        for (i, e) in ix.dir.iter().enumerate() {
            let g = e.generation.load(Ordering::Relaxed);
            // A process killed between creating a buffer segment and recording it in the
            // directory (a Reader's `grow`, a Writer's `WriteBuf::grow`) left it under the
            // entry's next generation, named by no entry: remove it too (a failed open when
            // there is none).
            conn.remove_buffer(i as u32, next_generation(g), true);
            if e.status() == DISPOSED {
                // A sweep killed between marking the entry and unlinking its segment.
                conn.remove_buffer(i as u32, g, true);
                continue;
            }
            let mapped_owned = cache
                .get(i)
                .and_then(Option::as_ref)
                .is_some_and(|m| m.generation == g && m.seg.is_owner());
            if !mapped_owned {
                conn.remove_buffer(i as u32, g, true);
            }
        }
        drop(cache);
        remove_index(&conn.name, &conn.seg);
    }
}
