//! The receiving end of a pool: creating a pool or adopting a dead Reader's, and receiving.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::buf::{ReadBuf, WriterId};
use super::config::{PoolConfig, MAX_BUFFERS_LIMIT};
use super::conn::PoolStats;
use super::conn::{
    buffer_tag, check_header, remove_index, set_wait_strategy, Conn, LockWait, Mapped, INDEX_TAG,
    KIND_VERSION, LOCK_TIMEOUT,
};
use super::error::PoolError;
use super::index::{
    self, bump, Index, IndexHeader, List, Refused, DISPOSED, FLAG_REDELIVERED, QUEUED, RECEIVED,
    STATE_OPEN, STATE_PARKED,
};
use super::service::ReaderShared;
use crate::error::Error;
use crate::name::ServiceName;
use crate::segment::{Access, Segment, SegmentKind, DEFAULT_MODE};
use crate::sync::atomic::Ordering;
use crate::sync::{Event, Mutex, WaitOutcome, WaitStrategy};
use crate::trace::event;

/// How long an adopting Reader waits for a dead Reader's alive lock (a Writer may hold it
/// for an instant while checking; a live competing adopter holds it for good).
const ALIVE_TAKEOVER_WAIT: Duration = Duration::from_millis(200);

/// Why [`Reader::adopt`] did not adopt.
enum Adopt {
    /// The index cannot be adopted; a fresh one replaces it.
    Refused(String),
    /// Adoption must not go on (another process adopted first).
    Failed(PoolError),
}

/// The receiving end of a buffer pool: owns every buffer; Writers fill them and send them
/// here.
///
/// A service thread grows the pool when Writers ask, sweeps buffers that stay idle, and
/// takes back buffers from Writers that died. If a Reader dies, the next `Reader::create`
/// of the same name adopts its pool: nothing queued is lost, messages it had received but
/// not released are delivered again ([`ReadBuf::redelivered`]), and Writers carry on.
///
/// # Stopping
/// Dropping a Reader stops it gracefully, and loses nothing whose send returned `Ok`:
/// - The stop waits for the Reader's [`ReadBuf`]s: if some are still alive, the pool stays
///   served until the last of them is dropped, and that drop finishes the stop. Messages
///   the application received are so released normally, never delivered again.
/// - With messages still queued, the pool is left to the next Reader of the name (in this
///   process or another), which [adopts](Reader::adopted) it and delivers them, in order
///   and unmarked; meanwhile Writers fill its free buffers and queue them, as after a
///   crash.
/// - With nothing queued, the pool is removed: nothing is left in the system. Writers then
///   get [`PoolError::NoReader`] (a held buffer is handed back by `send`) until a new Reader
///   of the name starts, and follow it by themselves.
///
/// Either way the stop is over when the drop that finishes it returns, so the process may
/// exit at once. To leave nothing behind for good, drain the queue (e.g. with
/// [`try_iter`](Reader::try_iter)) after the Writers stopped, then drop the Reader.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmlink::{PoolConfig, Reader, Writer};
/// # let name = format!("doc-pool-{}", std::process::id());
/// let reader = Reader::create(&name, PoolConfig::default())?;
///
/// let writer = Writer::connect(&name)?;            // usually in another process
/// let mut buf = writer.acquire()?;
/// buf.extend_from_slice(b"hello")?;
/// writer.send(buf)?;
///
/// let msg = reader.recv_timeout(Duration::from_secs(1))?;
/// assert_eq!(&*msg, b"hello");
/// drop(msg);                                        // back to the free list
/// # Ok::<(), shmlink::PoolError>(())
/// ```
pub struct Reader {
    shared: Arc<ReaderShared>,
    adopted: bool,
    refused: Option<String>,
    /// What this Reader asked for that the adopted pool kept (see [`Reader::kept_config`]).
    kept: Vec<&'static str>,
    /// This Reader's handle on the queue event, for its waits (see `wait_strategy`).
    recv_ev: Event,
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("name", &self.name())
            .field("adopted", &self.adopted)
            .finish_non_exhaustive()
    }
}

/// The configuration an adopting Reader that asked for `asked` runs the pool `stored` with,
/// and the fields it could not change (see [`Reader::kept_config`]).
fn adopted_config(stored: &PoolConfig, asked: &PoolConfig) -> (PoolConfig, Vec<&'static str>) {
    let mut kept = Vec::new();
    let mut cfg = asked.clone();
    if asked.max_buffer_size != stored.max_buffer_size {
        cfg.max_buffer_size = stored.max_buffer_size;
        kept.push("max_buffer_size");
    }
    if asked.max_buffers > stored.max_buffers {
        cfg.max_buffers = stored.max_buffers;
        kept.push("max_buffers");
    }
    // A buffer is never created larger than the largest one allowed.
    cfg.initial_buffer_size = cfg.initial_buffer_size.min(cfg.max_buffer_size);
    // What follows the limits kept is cut to them.
    cfg.start_buffers = cfg.start_buffers.min(cfg.max_buffers);
    if cfg.min_buffers() > cfg.max_buffers {
        cfg.min_buffers = Some(cfg.max_buffers);
    }
    if cfg.resize_increment() > cfg.max_buffers {
        cfg.resize_increment = Some(cfg.max_buffers);
    }
    cfg.resize_threshold = cfg.resize_threshold.min(cfg.max_buffers);
    if cfg.validate().is_err() {
        return (stored.clone(), vec!["all"]);
    }
    (cfg, kept)
}

impl Reader {
    /// Creates the pool `name`, or adopts the pool of a Reader of that name that died, or
    /// that stopped with messages queued (see "Stopping" above).
    ///
    /// When adopting, `config` applies except where it would have to resize what exists
    /// ([`kept_config`](Reader::kept_config) says what the pool kept). An index that cannot
    /// be adopted (corrupt header, incompatible
    /// version) is retired and replaced by a fresh one; Writers then copy what they hold
    /// into the new pool when they send it.
    ///
    /// The pool's objects are created owner-only (`0o600`); for a pool that Writers of other
    /// users send to, see [`create_with_mode`](Reader::create_with_mode).
    ///
    /// # Errors
    /// [`PoolError::InvalidConfig`]; [`PoolError::AlreadyRunning`] if a live Reader serves
    /// the name (also one that was dropped while its `ReadBuf`s live on);
    /// [`PoolError::LockHeld`] if the pool to adopt stays locked by a live process for 5 s
    /// (a stopped Writer): the pool is left as it is, for a later attempt;
    /// [`PoolError::Setup`] for another setup error (bad name, no memory, an object under
    /// the name that this user must not use: [`Error::Squatted`], e.g. a pool created with
    /// a mode that lets others write).
    pub fn create(name: &str, config: PoolConfig) -> Result<Reader, PoolError> {
        Reader::create_with_mode(name, config, DEFAULT_MODE)
    }

    /// As [`create`](Reader::create), with permission bits `mode` on POSIX for the pool's
    /// index and every buffer segment (ignored on Windows, where objects get the creating
    /// process's default DACL).
    ///
    /// A mode that lets the group or others write (e.g. `0o660` with a group the Writers
    /// belong to, or `0o666`) makes a pool **shared between users**: Writers of other users
    /// connect with [`Writer::connect_with`](crate::Writer::connect_with) and
    /// [`Access::shared_by`] this Reader's uid. Such Writers create buffer segments
    /// themselves when they grow a buffer ([`WriteBuf::reserve`](crate::WriteBuf::reserve)),
    /// with the pool's mode and, when only the group may write, the index's group (which
    /// they must belong to). So in a shared pool the Reader and the Writers accept a buffer
    /// object of another user if its mode is no wider than the index's and, when only the
    /// group may write, its group is the index's; anything else (another user's object in a
    /// pool others may not write, a wider mode, another group, a symbolic link, a FIFO) is
    /// [`Error::Squatted`], never used or removed, and treated as a missing buffer: the
    /// Reader drops a message in it, a Writer gives the buffer up. Writers of a shared pool
    /// have the powers over it and over each other that same-user peers have (see "Trust
    /// model" in docs/ARCHITECTURE.md). Where /dev/shm is sticky (Linux), only root or the
    /// owner can remove a name: a Reader that is not root leaves behind the buffer segments
    /// Writers of other users grew.
    ///
    /// An adopted pool keeps the mode it was created with
    /// ([`kept_config`](Reader::kept_config) lists `"mode"` when that differs from
    /// `mode`); a pool that others may write is adopted only by a Reader whose `mode` lets
    /// them too (otherwise the name is [`Error::Squatted`], as for any opener).
    ///
    /// # Examples
    /// ```no_run
    /// use shmlink::{Access, PoolConfig, Reader, Writer};
    /// // A service's Reader, run by uid 990 with a group its Writers belong to:
    /// let reader = Reader::create_with_mode("ingest", PoolConfig::default(), 0o660)?;
    ///
    /// // A Writer of another user in that group (another process):
    /// let writer = Writer::connect_with("ingest", Access::shared_by(990))?;
    /// let mut buf = writer.acquire()?;
    /// buf.extend_from_slice(&[7; 100_000])?;  // grows its buffer: a segment of its own
    /// writer.send(buf)?;
    /// # Ok::<(), shmlink::PoolError>(())
    /// ```
    ///
    /// # Errors
    /// As [`create`](Reader::create).
    pub fn create_with_mode(
        name: &str,
        config: PoolConfig,
        mode: u32,
    ) -> Result<Reader, PoolError> {
        config.validate()?;
        #[cfg(windows)]
        super::writer::parked::prune();
        let sname = ServiceName::new(name)?;
        let mut refused = None;
        // Our own index, writable by others only if we are about to make ours so.
        match Segment::open_kind_access(
            &sname,
            INDEX_TAG,
            SegmentKind::PoolIndex,
            KIND_VERSION,
            Duration::from_millis(200),
            Access::own(mode & 0o022 != 0),
        ) {
            Ok(seg) => {
                // Windows: a closed pool's index lives on while a Writer still maps it, and
                // its name cannot be reused until the last one lets go.
                #[cfg(windows)]
                if seg
                    .data()
                    .get::<IndexHeader>(0)
                    .is_some_and(|h| h.is_retired())
                {
                    return Err(Error::StillMapped { name: name.into() }.into());
                }
                let owner = seg.owner();
                // A parked index is left to whoever comes next, even by a process still alive.
                if seg.owner_alive() && !Self::parked(&seg) {
                    return Err(Error::AlreadyRunning {
                        name: name.into(),
                        pid: owner.pid(),
                    }
                    .into());
                }
                match Self::adopt(seg, &sname, &config, mode) {
                    Ok(reader) => return Ok(reader),
                    Err(Adopt::Refused(why)) => refused = Some(why),
                    Err(Adopt::Failed(e)) => return Err(e),
                }
            }
            Err(Error::NotFound { .. }) => {}
            Err(
                e @ (Error::PermissionDenied { .. }
                | Error::Foreign { .. }
                | Error::InvalidName { .. }),
            ) => return Err(e.into()),
            // Unpublished, another version or kind: not adoptable; `create` below replaces it
            // if its owner is dead and refuses if it is alive.
            Err(e) => refused = Some(e.to_string()),
        }
        let mut reader = Self::create_fresh(&sname, config, mode)?;
        if refused.is_some() {
            event!(
                warn,
                pool = sname.as_str(),
                why = refused.as_deref(),
                "the pool's index could not be adopted; a fresh one replaced it"
            );
        }
        reader.refused = refused;
        Ok(reader)
    }

    fn create_fresh(
        name: &ServiceName,
        config: PoolConfig,
        mode: u32,
    ) -> Result<Reader, PoolError> {
        let seg = Segment::builder(name.as_str())
            .mode(mode)
            .tag(INDEX_TAG)
            .kind(SegmentKind::PoolIndex, KIND_VERSION)
            .size(index::index_size(config.max_buffers))
            .create_unpublished()?;
        let mut seg = Arc::new(seg);
        let data = seg.data();
        let hdr = data.at::<IndexHeader>(0);
        // SAFETY: the fixed offsets are disjoint, 64-aligned and inside the region; nobody
        // else uses them before `publish`.
        unsafe {
            Mutex::init_at(&seg, index::MUTEX_OFFSET)?;
            Mutex::init_at(&seg, index::ALIVE_OFFSET)?;
            Event::init_at(&seg, index::QUEUE_EVENT_OFFSET)?;
            Event::init_at(&seg, index::FREED_EVENT_OFFSET)?;
            Event::init_at(&seg, index::SERVICE_EVENT_OFFSET)?;
        }
        let dir = data
            .slice::<index::Entry>(index::DIR_OFFSET, config.max_buffers as usize)
            .expect("created with index_size(max_buffers) bytes");
        Index {
            hdr,
            dir,
            max_size: config.max_buffer_size as u64,
        }
        .init(&config);
        // The index may outlive this Reader (a graceful stop parks it for the next one), so
        // no handle of ours removes it when dropped: it is removed deliberately, by
        // `remove_index` when the Reader stops with nothing pending, and by `unpublished`
        // below if creating fails before it is published.
        Arc::get_mut(&mut seg)
            .expect("the initialising handles are dropped")
            .disown();
        let unpublished = RemoveUnpublished(Some(name));
        let conn = Conn::attach(Arc::clone(&seg), name.clone(), WaitStrategy::default())?;
        let recv_ev = conn.queue_waiter(WaitStrategy::default())?;
        let shared = Arc::new(ReaderShared::new(conn, config.clone()));
        // The start buffers, generation 1, owned by this process, with the index's mode.
        for i in 0..config.start_buffers {
            let buf = shared
                .conn
                .create_buffer(i, 1, config.initial_buffer_size)?;
            shared.conn.cache.lock()[i as usize] = Some(Mapped {
                generation: 1,
                seg: Arc::new(buf),
            });
        }
        shared.set_identity();
        let (service, go) = ReaderShared::start_service(&shared, LOCK_TIMEOUT)?;
        shared.keep_service(service);
        let _ = go.send(());
        seg.publish();
        unpublished.disarm();
        Ok(Reader {
            shared,
            adopted: false,
            refused: None,
            kept: Vec::new(),
            recv_ev,
        })
    }

    /// Adopts the index of a Reader that died or parked it, or says why not (`Refused`,
    /// after retiring it).
    ///
    /// Two processes may try to adopt the same index at once: the alive lock decides. Only
    /// the one whose service thread holds it repairs the index and serves it; the other
    /// gets `AlreadyRunning` and leaves the index alone.
    fn adopt(
        mut seg: Segment,
        name: &ServiceName,
        asked: &PoolConfig,
        mode: u32,
    ) -> Result<Reader, Adopt> {
        if let Err(why) = check_header(&seg) {
            Self::retire_foreign(&seg, name, false);
            remove_index(name, &seg);
            return Err(Adopt::Refused(why));
        }
        // As in `create_fresh`: the index is removed deliberately, never by a drop. The
        // segment records us as its owner only once the alive lock made us the adopter.
        seg.disown();
        let seg = Arc::new(seg);
        let conn = Conn::attach(Arc::clone(&seg), name.clone(), WaitStrategy::default())
            .map_err(|e| Adopt::Refused(e.to_string()))?;
        let recv_ev = conn
            .queue_waiter(WaitStrategy::default())
            .map_err(|e| Adopt::Refused(e.to_string()))?;
        // Read once, and checked as `attach` checked it.
        let stored = conn.hdr().config.load();
        stored
            .validate()
            .map_err(|e| Adopt::Refused(format!("stored configuration: {e}")))?;
        if (stored.max_buffers, stored.max_buffer_size) != (conn.max_buffers, conn.max_buffer_size)
        {
            return Err(Adopt::Refused(
                "the stored configuration changed while adopting".into(),
            ));
        }
        let (config, mut kept) = adopted_config(&stored, asked);
        if conn.perm.is_some_and(|p| p.mode != mode & 0o7777) {
            kept.push("mode");
        }
        let shared = Arc::new(ReaderShared::new(conn, config));
        let (service, go) = match ReaderShared::start_service(&shared, ALIVE_TAKEOVER_WAIT) {
            Ok(s) => s,
            Err(_) => {
                // Another process adopted it first: it is that process's index now.
                let pid = shared.conn.alive.holder_pid().unwrap_or(0);
                return Err(Adopt::Failed(
                    Error::AlreadyRunning {
                        name: name.to_string(),
                        pid,
                    }
                    .into(),
                ));
            }
        };
        let conn = &shared.conn;
        let h = conn.hdr();
        let checked = if !matches!(h.state(), STATE_OPEN | STATE_PARKED) {
            Err("the index was retired".to_owned())
        } else {
            // Only the dead Reader waited on these; a sleeper count it left would only cost
            // syscalls. Writers sleep on `freed_ev`, which is left alone.
            conn.queue_ev.reset();
            conn.service_ev.reset();
            match conn.mutex.lock_timeout(LOCK_TIMEOUT) {
                Ok(lock) => {
                    let ix = conn.index();
                    // Rebuild the lists (the Reader may have died mid-update), queueing what
                    // it had received but not released again, then check every invariant.
                    let report = ix.repair(true);
                    if report.redelivered > 0 {
                        event!(
                            info,
                            pool = name.as_str(),
                            redelivered = report.redelivered,
                            "adopting: messages the dead Reader had received are delivered again"
                        );
                    }
                    if !report.disposed.is_empty() {
                        event!(
                            warn,
                            pool = name.as_str(),
                            entries = report.disposed.len(),
                            "adopting: entries with impossible values were disposed of"
                        );
                    }
                    let r = ix.validate().map_err(|c| c.0);
                    drop(lock);
                    r
                }
                Err(Error::Timeout) => {
                    // A live process holds the pool's lock (stopped, or stuck): the index is
                    // sound as far as we know, and what it queues must not be lost. Leave it
                    // for a later attempt (stopping our service thread lets go of the alive
                    // lock, and dropping our handles of our ownership record).
                    drop(go);
                    let _ = service.join();
                    return Err(Adopt::Failed(PoolError::LockHeld {
                        pid: conn.mutex.holder_pid(),
                        waited: LOCK_TIMEOUT,
                    }));
                }
                Err(e) => Err(format!("cannot lock the dead Reader's index: {e}")),
            }
        };
        if let Err(why) = checked {
            // We hold the alive lock: no other Reader uses these buffers.
            Self::retire_foreign(&conn.seg, name, true);
            // Stop the service thread (it has not started its loop), then remove the index,
            // so that a fresh one can be created.
            drop(go);
            let _ = service.join();
            remove_index(name, &conn.seg);
            return Err(Adopt::Refused(why));
        }
        conn.seg.record_owner();
        // Writers read the threshold (and later adopters the rest) from the index.
        h.config.store(&PoolConfig {
            max_buffers: stored.max_buffers,
            ..shared.config.clone()
        });
        h.adoptions.fetch_add(1, Ordering::Relaxed);
        event!(
            info,
            pool = name.as_str(),
            queued = conn.index().count(List::Queued),
            kept = ?kept,
            "pool adopted from a Reader that died or stopped"
        );
        shared.set_identity();
        shared.keep_service(service);
        let _ = go.send(());
        if conn.index().count(List::Queued) > 0 {
            conn.queue_ev.set();
        }
        // Writers waiting for a buffer re-check (the Reader is back).
        conn.freed_ev.set();
        Ok(Reader {
            shared,
            adopted: true,
            refused: None,
            kept,
            recv_ev,
        })
    }

    /// Whether `seg` is an index whose Reader stopped gracefully and left it to the next.
    fn parked(seg: &Segment) -> bool {
        check_header(seg).is_ok()
            && seg
                .data()
                .get::<IndexHeader>(0)
                .is_some_and(IndexHeader::is_parked)
    }

    /// Marks an index we cannot adopt as retired (so Writers copy on send) and removes the
    /// buffer segments it names, as far as it can be read: those whose owner is dead, or
    /// all of them with `force` (when no other Reader can be using them).
    fn retire_foreign(seg: &Segment, name: &ServiceName, force: bool) {
        let data = seg.data();
        let Some(h) = data.get::<IndexHeader>(0) else {
            return;
        };
        h.retire();
        let fits = seg.len().saturating_sub(index::DIR_OFFSET) / index::ENTRY_SIZE;
        let n = (h.config.max_buffers.load(Ordering::Relaxed) as usize)
            .min(fits)
            .min(MAX_BUFFERS_LIMIT as usize);
        let dir = data
            .slice::<index::Entry>(index::DIR_OFFSET, n)
            .unwrap_or_default();
        // Buffers of a shared pool may be other users' (grown by Writers).
        let shared = seg.perm().filter(|p| p.is_shared());
        for (i, e) in dir.iter().enumerate() {
            if e.status() != DISPOSED {
                let _ = Segment::remove_tagged_with(
                    name,
                    &buffer_tag(i as u32, e.generation.load(Ordering::Relaxed)),
                    force,
                    shared,
                );
            }
        }
    }

    /// Makes this Reader's waits for a message ([`recv`](Reader::recv),
    /// [`recv_timeout`](Reader::recv_timeout) and the iterators) use `strategy`, as
    /// [`ServerBuilder::wait_strategy`](crate::ServerBuilder::wait_strategy) does for a
    /// server. The default is [`WaitStrategy::Adaptive`]. The service thread's timed work is
    /// not affected.
    ///
    /// # Examples
    /// ```
    /// use shmlink::{PoolConfig, Reader, WaitStrategy};
    /// # let name = format!("doc-reader-ws-{}", std::process::id());
    /// let reader = Reader::create(&name, PoolConfig::default())?
    ///     .wait_strategy(WaitStrategy::Block);
    /// # Ok::<(), shmlink::PoolError>(())
    /// ```
    pub fn wait_strategy(mut self, strategy: WaitStrategy) -> Self {
        set_wait_strategy(&mut self.recv_ev, strategy);
        self
    }

    /// Whether this Reader adopted the pool of a Reader that died or stopped with messages
    /// queued.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Why an existing pool of this name was not adopted (a fresh one was created instead).
    pub fn adoption_refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// The pool's configuration: the one asked for, except, when adopted, for the values
    /// listed by [`kept_config`](Reader::kept_config).
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// The [`PoolConfig`] fields this Reader asked for that the pool it adopted kept, because
    /// they size what already exists: `max_buffer_size` (Writers may hold buffers grown to
    /// the old limit) and a `max_buffers` above the old one (the index has room for no
    /// more); and `"mode"` when the pool's permission bits differ from the mode asked for
    /// ([`create_with_mode`](Reader::create_with_mode)). Empty for a fresh pool. A smaller
    /// `max_buffers`, and every other value (initial size, minimum, increment, threshold,
    /// sweep timeout), takes effect on adoption.
    ///
    /// # Examples
    /// ```
    /// use shmlink::{PoolConfig, Reader};
    /// # let name = format!("doc-kept-config-{}", std::process::id());
    /// let reader = Reader::create(&name, PoolConfig::default())?;
    /// assert!(reader.kept_config().is_empty()); // a fresh pool takes all of it
    /// # Ok::<(), shmlink::PoolError>(())
    /// ```
    pub fn kept_config(&self) -> &[&'static str] {
        &self.kept
    }

    /// The service name.
    pub fn name(&self) -> &str {
        self.shared.conn.name.as_str()
    }

    /// Receives the next message, waiting as long as it takes, for the pool's lock too (a
    /// peer stopped while holding it stops this call until it resumes or dies).
    ///
    /// # Errors
    /// [`PoolError::Corrupt`] if the index stays inconsistent after repair.
    pub fn recv(&self) -> Result<ReadBuf, PoolError> {
        self.recv_deadline(None)
    }

    /// Receives the next message, waiting at most `timeout`, for the pool's lock included.
    ///
    /// # Errors
    /// [`PoolError::Timeout`] when the time is up: no message arrived, or another process
    /// held the pool's lock until then (a stalled peer); otherwise as [`Reader::recv`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<ReadBuf, PoolError> {
        self.recv_deadline(Instant::now().checked_add(timeout))
    }

    fn recv_deadline(&self, deadline: Option<Instant>) -> Result<ReadBuf, PoolError> {
        let wait = LockWait::deadline(deadline, || PoolError::Timeout, LockWait::Forever);
        loop {
            if let Some(b) = self.take(wait)? {
                return Ok(b);
            }
            if self.recv_ev.wait_until(deadline, None) == WaitOutcome::TimedOut {
                return self.take(wait)?.ok_or(PoolError::Timeout);
            }
        }
    }

    /// Waits until the queue's event is signalled (a message was queued, or
    /// [`signal_queue`](Reader::signal_queue)) or `deadline` passes, taking no message: for
    /// a receiver that takes messages with `try_recv` elsewhere (`AsyncReader`). Returns
    /// whether it was signalled.
    #[cfg(feature = "async")]
    pub(crate) fn wait_queue_signal(&self, deadline: Option<Instant>) -> bool {
        self.recv_ev.wait_until(deadline, None) == WaitOutcome::Set
    }

    /// Signals the queue's event: a waiter re-checks the queue (finding nothing, it waits
    /// again).
    #[cfg(feature = "async")]
    pub(crate) fn signal_queue(&self) {
        self.shared.conn.queue_ev.set();
    }

    /// Receives a message if one is queued; never waits, except for the pool's lock, which a
    /// healthy peer holds for microseconds (at most 5 s, see [`PoolError::LockHeld`]).
    ///
    /// Entries found inconsistent are repaired or dropped (see [`PoolStats::repairs`]).
    ///
    /// # Errors
    /// [`PoolError::Corrupt`] if the index stays inconsistent after repair;
    /// [`PoolError::LockHeld`] if another process holds the pool's lock for 5 s.
    pub fn try_recv(&self) -> Result<Option<ReadBuf>, PoolError> {
        self.take(LockWait::Bounded)
    }

    /// Takes the next queued message, if any, waiting for the pool's lock as `wait` says.
    fn take(&self, wait: LockWait) -> Result<Option<ReadBuf>, PoolError> {
        let sh = &self.shared;
        let conn = &sh.conn;
        for _ in 0..conn.max_buffers + 2 {
            let (slot, more) = {
                let _g = conn.locked_for(wait)?;
                let ix = conn.index();
                let h = ix.hdr;
                let i = match ix.front(List::Queued) {
                    Ok(None) => return Ok(None),
                    Ok(Some(i)) => i,
                    Err(_) => {
                        ix.repair(false);
                        bump(&h.repairs);
                        continue;
                    }
                };
                match ix.receive(i) {
                    Ok(slot) => {
                        sh.conn.set_held(i, true);
                        bump(&h.delivered);
                        if slot.flags & FLAG_REDELIVERED != 0 {
                            bump(&h.redelivered);
                        }
                        (slot, ix.count(List::Queued) > 0)
                    }
                    Err(Refused::Invalid(_)) => {
                        // Impossible length or capacity: the message cannot be trusted.
                        if ix.dispose(i, QUEUED).is_err() {
                            ix.repair(false);
                        }
                        bump(&h.repairs);
                        continue;
                    }
                    Err(_) => {
                        ix.repair(false);
                        bump(&h.repairs);
                        continue;
                    }
                }
            };
            if more {
                // Another receiving thread may be waiting.
                conn.queue_ev.set();
            }
            match conn.map(&slot, true) {
                Ok(seg) => {
                    sh.buf_out();
                    return Ok(Some(ReadBuf {
                        shared: Arc::clone(sh),
                        seg,
                        slot,
                        redelivered: slot.flags & FLAG_REDELIVERED != 0,
                    }));
                }
                Err(_) => {
                    // Its segment is missing or too small: drop the message (bounded whatever
                    // the caller's deadline: the entry must not stay received).
                    let _g = conn.locked()?;
                    let ix = conn.index();
                    conn.set_held(slot.index, false);
                    if ix.holds(slot.index, RECEIVED, slot.generation, None) {
                        let _ = ix.dispose(slot.index, RECEIVED);
                    }
                    bump(&ix.hdr.repairs);
                }
            }
        }
        Err(PoolError::Corrupt(
            "the queue stays inconsistent after repair".into(),
        ))
    }

    /// An iterator that waits for each message; it ends at the first error.
    pub fn iter(&self) -> impl Iterator<Item = ReadBuf> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }

    /// An iterator over the messages queued now; never waits.
    pub fn try_iter(&self) -> impl Iterator<Item = ReadBuf> + '_ {
        std::iter::from_fn(move || self.try_recv().ok().flatten())
    }

    /// Calls `f` for each message until it returns `false` or no message arrives within
    /// `idle`. Returns the number of messages handled.
    ///
    /// # Errors
    /// As [`Reader::recv`] (a timeout ends the loop normally).
    pub fn for_each_until_idle(
        &self,
        idle: Duration,
        mut f: impl FnMut(ReadBuf) -> bool,
    ) -> Result<u64, PoolError> {
        let mut n = 0;
        loop {
            match self.recv_timeout(idle) {
                Ok(b) => {
                    n += 1;
                    if !f(b) {
                        return Ok(n);
                    }
                }
                Err(PoolError::Timeout) => return Ok(n),
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the Writer that sent a message ([`ReadBuf::writer`]) is still there. Asks
    /// the OS now, without taking the pool's mutex, by the Writer's proof of life (see
    /// "Liveness" in docs/ARCHITECTURE.md), so a killed Writer reads as gone at once:
    ///
    /// - Linux: the kernel-held lock on the Writer's tag, in any PID namespace; it goes
    ///   when the Writer is dropped or its process ends;
    /// - macOS and Windows: the Writer's process, by pid and start time; a dropped Writer
    ///   reads as there until its process ends.
    ///
    /// "Cannot tell" (e.g. another user's process) counts as alive.
    ///
    /// Everything a Writer sent is queued before it reads as gone: a receiver that finds
    /// it gone and then empties the queue has all of its messages.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use shmlink::{PoolConfig, Reader, Writer};
    /// # let name = format!("doc-writer-alive-{}", std::process::id());
    /// let reader = Reader::create(&name, PoolConfig::default())?;
    /// let writer = Writer::connect(&name)?;              // usually in another process
    /// let mut buf = writer.acquire()?;
    /// buf.extend_from_slice(b"first of many")?;
    /// writer.send(buf)?;
    ///
    /// let sender = reader.recv_timeout(Duration::from_secs(1))?.writer();
    /// assert!(reader.writer_alive(sender));             // until its process dies
    /// # Ok::<(), shmlink::PoolError>(())
    /// ```
    pub fn writer_alive(&self, writer: WriterId) -> bool {
        self.shared.conn.seg.is_alive(writer.0)
    }

    /// A snapshot of the pool's lists and counters.
    ///
    /// # Errors
    /// [`PoolError::LockHeld`] if another process holds the pool's lock for 5 s.
    pub fn stats(&self) -> Result<PoolStats, PoolError> {
        self.shared.conn.stats()
    }

    /// Checks every invariant of the index (lists, links, counts, statuses, sizes).
    ///
    /// # Errors
    /// [`PoolError::Corrupt`] saying what is inconsistent; [`PoolError::LockHeld`] if another
    /// process holds the pool's lock for 5 s.
    pub fn validate(&self) -> Result<(), PoolError> {
        let _g = self.shared.conn.locked()?;
        self.shared
            .conn
            .index()
            .validate()
            .map_err(|c| PoolError::Corrupt(c.0))
    }
}

impl Drop for Reader {
    /// The graceful stop: see [`Reader`]'s docs ("Stopping").
    fn drop(&mut self) {
        self.shared.begin_stop();
    }
}

/// Removes an index that `create_fresh` made, unless it was published.
struct RemoveUnpublished<'a>(Option<&'a ServiceName>);

impl RemoveUnpublished<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveUnpublished<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.0 {
            // Ours: a live creator's name is never taken over by another process.
            let _ = Segment::remove_tagged(name, INDEX_TAG, true);
        }
    }
}
