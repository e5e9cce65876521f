//! The Reader-owned, resizable buffer pool.
//!
//! One [`Reader`] owns a pool of buffers; any number of [`Writer`]s (in any process) acquire
//! a free buffer, write in place and send it to the Reader's FIFO queue; the Reader reads
//! it in place and its drop puts the buffer back on the free list. Nothing is copied.
//!
//! ```text
//!  index segment "pool"                              buffer segments "pool.b<i>.g<gen>"
//!  +--------------------------------------------+    +-------------------+
//!  | header: signature, version, config, lists, |    | bytes of buffer 0 |
//!  |   counters, Reader identity, grow request  |    +-------------------+
//!  | mutex | alive lock | 3 events              |    | bytes of buffer 1 |
//!  | directory: entry 0 | entry 1 | ...         |    +-------------------+
//!  +--------------------------------------------+     (mapped lazily, cached per process)
//! ```
//!
//! Each buffer lives in a segment of its own so that the pool grows and shrinks one buffer
//! at a time without remapping anything, and a Writer can grow the buffer it holds (a new,
//! bigger segment under the next generation's name) without disturbing the others. Every
//! list operation takes the pool's robust mutex once; a process that dies holding it leaves
//! lists that the next locker rebuilds from the entries' statuses.
//!
//! The Reader's service thread holds the *alive lock* for the Reader's whole life, so any
//! process learns whether a Reader is alive with one `trylock` (no syscall, no `/proc`): a
//! free or owner-died lock means the Reader is gone.

mod index;
mod stream;

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::name::ServiceName;
use crate::process::ProcessId;
use crate::segment::{Segment, SegmentKind};
use crate::sync::atomic::{AtomicU32, Ordering};
use crate::sync::{Event, Locked, Mutex, MutexGuard, WaitOutcome};

use index::{
    Index, IndexHeader, List, Slot, ALLOCATED, DISPOSED, FLAG_REDELIVERED, FREE, QUEUED, RECEIVED,
    STATE_OPEN, STATE_RETIRED,
};

pub use stream::{checksum, Checksum, FileSummary};

const KIND_VERSION: u32 = index::LAYOUT_VERSION;
const INDEX_TAG: &str = "pool";
/// How long a pool operation waits for the pool mutex before calling the index wedged.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest buffer a pool may have (1 TiB): keeps every size arithmetic far from overflow.
const MAX_BUFFER_SIZE_LIMIT: usize = 1 << 40;
/// How long a Writer's copy-on-send waits for a buffer of the new Reader.
const COPY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an adopting Reader waits for a dead Reader's alive lock (a Writer may hold it
/// for an instant while checking; a live competing adopter holds it for good).
const ALIVE_TAKEOVER_WAIT: Duration = Duration::from_millis(200);
/// A Writer drops its mappings of disposed buffers every this many acquires.
const PRUNE_EVERY: u32 = 256;
/// How often the service thread checks whether Writers holding buffers are still alive.
const RECLAIM_INTERVAL: Duration = Duration::from_millis(100);

fn buffer_tag(index: u32, generation: u32) -> String {
    format!("pool.b{index}.g{generation}")
}

/// The generation a directory entry's next buffer segment gets (0 is never used).
fn next_generation(generation: u32) -> u32 {
    generation.wrapping_add(1).max(1)
}

/// The sizes and limits of a pool. Every field has a default ([`PoolConfig::default`]).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmlink::PoolConfig;
/// let config = PoolConfig { start_buffers: 4, max_buffers: 64, sweep_timeout: Duration::from_secs(5), ..PoolConfig::default() };
/// assert!(config.validate().is_ok());
/// assert!(PoolConfig { min_buffers: 100, ..config }.validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Capacity of a new buffer in bytes (default 64 KiB).
    pub initial_buffer_size: usize,
    /// Largest capacity a Writer may grow a buffer to (default 16 MiB).
    pub max_buffer_size: usize,
    /// Buffers created with the pool (default 16).
    pub start_buffers: u32,
    /// The pool never holds more buffers (default 256).
    pub max_buffers: u32,
    /// The sweeper never shrinks the pool below this (default 4).
    pub min_buffers: u32,
    /// Buffers added per growth step (default 8).
    pub resize_increment: u32,
    /// A Writer asks the Reader to grow when fewer buffers than this are free (default 4);
    /// with 0, only when none is free.
    pub resize_threshold: u32,
    /// Free buffers idle for longer are disposed of by the sweeper (default 30 s).
    pub sweep_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            initial_buffer_size: 64 * 1024,
            max_buffer_size: 16 * 1024 * 1024,
            start_buffers: 16,
            max_buffers: 256,
            min_buffers: 4,
            resize_increment: 8,
            resize_threshold: 4,
            sweep_timeout: Duration::from_secs(30),
        }
    }
}

impl PoolConfig {
    /// Checks that the values fit together.
    ///
    /// # Errors
    /// [`PoolError::InvalidConfig`] naming the first rule broken:
    /// `1 <= initial_buffer_size <= max_buffer_size <= 1 TiB`,
    /// `min_buffers <= start_buffers <= max_buffers <= 1048576`, `1 <= max_buffers`,
    /// `1 <= resize_increment`, `resize_threshold <= max_buffers`, `sweep_timeout > 0`.
    pub fn validate(&self) -> Result<(), PoolError> {
        let bad = |why: String| Err(PoolError::InvalidConfig(why));
        if self.initial_buffer_size == 0 {
            return bad("initial_buffer_size must be at least 1".into());
        }
        if self.initial_buffer_size > self.max_buffer_size {
            return bad(format!(
                "initial_buffer_size {} exceeds max_buffer_size {}",
                self.initial_buffer_size, self.max_buffer_size
            ));
        }
        if self.max_buffer_size > MAX_BUFFER_SIZE_LIMIT {
            return bad(format!(
                "max_buffer_size {} exceeds the limit of {MAX_BUFFER_SIZE_LIMIT}",
                self.max_buffer_size
            ));
        }
        if self.max_buffers == 0 || self.max_buffers > index::MAX_BUFFERS_LIMIT {
            return bad(format!(
                "max_buffers {} is outside 1..={}",
                self.max_buffers,
                index::MAX_BUFFERS_LIMIT
            ));
        }
        if self.start_buffers > self.max_buffers {
            return bad(format!(
                "start_buffers {} exceeds max_buffers {}",
                self.start_buffers, self.max_buffers
            ));
        }
        if self.min_buffers > self.start_buffers {
            return bad(format!(
                "min_buffers {} exceeds start_buffers {}",
                self.min_buffers, self.start_buffers
            ));
        }
        if self.resize_increment == 0 {
            return bad("resize_increment must be at least 1".into());
        }
        if self.resize_threshold > self.max_buffers {
            return bad(format!(
                "resize_threshold {} exceeds max_buffers {}",
                self.resize_threshold, self.max_buffers
            ));
        }
        if self.sweep_timeout.is_zero() {
            return bad("sweep_timeout must be positive".into());
        }
        Ok(())
    }

    fn from_header(h: &IndexHeader) -> PoolConfig {
        let c = &h.config;
        let r = Ordering::Relaxed;
        PoolConfig {
            initial_buffer_size: usize::try_from(c.initial_buffer_size.load(r))
                .unwrap_or(usize::MAX),
            max_buffer_size: usize::try_from(c.max_buffer_size.load(r)).unwrap_or(usize::MAX),
            start_buffers: c.start_buffers.load(r),
            max_buffers: c.max_buffers.load(r),
            min_buffers: c.min_buffers.load(r),
            resize_increment: c.resize_increment.load(r),
            resize_threshold: c.resize_threshold.load(r),
            sweep_timeout: Duration::from_nanos(c.sweep_timeout_ns.load(r)),
        }
    }
}

/// What went wrong in a pool operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Setting up or opening a shared object failed.
    #[error(transparent)]
    Shm(#[from] Error),
    /// The [`PoolConfig`] values do not fit together.
    #[error("invalid pool configuration: {0}")]
    InvalidConfig(String),
    /// No Reader serves the pool (none was started, it exited, or it died and no new one
    /// has adopted the pool yet).
    #[error("no Reader serves this pool")]
    NoReader,
    /// No buffer became free within the timeout.
    #[error(
        "no free buffer within the timeout (the pool is at its maximum or the Reader is slow)"
    )]
    PoolFull,
    /// No message arrived within the timeout.
    #[error("no message within the timeout")]
    Timeout,
    /// A buffer cannot grow this large.
    #[error("{requested} bytes exceed the pool's max_buffer_size of {max}")]
    TooLarge {
        /// Bytes asked for.
        requested: usize,
        /// The pool's `max_buffer_size`.
        max: usize,
    },
    /// The buffer is no longer held by this Writer (the index was repaired or reset).
    #[error("this buffer is no longer held by this Writer")]
    NotOwner,
    /// The pool's shared state is inconsistent (a crashed or hostile process); the text says
    /// what. The Reader repairs what it can and counts it in [`PoolStats::repairs`].
    #[error("pool index is corrupt: {0}")]
    Corrupt(String),
    /// A file stream was malformed, interleaved with other messages, or failed its checksum.
    #[error("file stream: {0}")]
    Stream(String),
    /// Reading or writing a streamed file failed.
    #[error("file I/O failed")]
    Io(#[from] std::io::Error),
}

/// A buffer that could not be sent, handed back with the reason (crossbeam style).
///
/// # Examples
/// ```
/// # use shmlink::{PoolConfig, Reader, Writer};
/// # let name = format!("doc-senderr-{}", std::process::id());
/// # let reader = Reader::create(&name, PoolConfig::default())?;
/// # let writer = Writer::connect(&name)?;
/// let buf = writer.acquire()?;
/// if let Err(e) = writer.send(buf) {
///     eprintln!("not sent: {}", e.error());
///     let _buf = e.into_inner(); // retry later, or drop it to release it
/// }
/// # Ok::<(), shmlink::PoolError>(())
/// ```
pub struct SendError(Box<(WriteBuf, PoolError)>);

impl SendError {
    fn new(buf: WriteBuf, error: PoolError) -> SendError {
        SendError(Box::new((buf, error)))
    }

    /// Why the buffer was not sent.
    pub fn error(&self) -> &PoolError {
        &self.0 .1
    }

    /// The buffer, to retry or drop.
    pub fn into_inner(self) -> WriteBuf {
        self.0 .0
    }

    /// Splits into the buffer and the reason.
    pub fn into_parts(self) -> (WriteBuf, PoolError) {
        *self.0
    }
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("error", self.error())
            .field("len", &self.0 .0.len)
            .finish()
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sending a pool buffer failed: {}", self.error())
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error())
    }
}

impl From<SendError> for PoolError {
    fn from(e: SendError) -> Self {
        e.into_parts().1
    }
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

// ------------------------------------------------------------------------------ connection

/// A buffer segment mapped in this process.
#[derive(Debug)]
struct Mapped {
    generation: u32,
    seg: Arc<Segment>,
}

/// One process's view of an index segment: its synchronisation objects and the buffer
/// mappings cache. Shared by the Reader and by Writers.
struct Conn {
    seg: Arc<Segment>,
    mutex: Mutex,
    alive: Mutex,
    queue_ev: Event,
    freed_ev: Event,
    service_ev: Event,
    name: ServiceName,
    token: [u8; 16],
    max_buffers: u32,
    max_buffer_size: usize,
    cache: parking_lot::Mutex<Vec<Option<Mapped>>>,
    /// Acquires through this connection, to prune the cache now and then.
    acquires: AtomicU32,
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
fn check_header(seg: &Segment) -> Result<(u32, usize), String> {
    if seg.len() < index::DIR_OFFSET {
        return Err(format!("index segment of {} bytes is too small", seg.len()));
    }
    // SAFETY: the data region holds at least DIR_OFFSET bytes, 64-aligned; IndexHeader is
    // all atomics, valid for any bit pattern.
    let h = unsafe { &*seg.as_ptr().cast::<IndexHeader>() };
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
    let config = PoolConfig::from_header(h);
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
    /// Attaches to an initialised index segment.
    fn attach(seg: Arc<Segment>, name: ServiceName) -> Result<Conn, PoolError> {
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
        let token = seg.token();
        let cache = parking_lot::Mutex::new((0..max_buffers).map(|_| None).collect());
        Ok(Conn {
            seg,
            mutex,
            alive,
            queue_ev,
            freed_ev,
            service_ev,
            name,
            token,
            max_buffers,
            max_buffer_size,
            cache,
            acquires: AtomicU32::new(0),
        })
    }

    fn hdr(&self) -> &IndexHeader {
        // SAFETY: checked in `attach`/`create`: the data region starts with an IndexHeader
        // (all atomics, any bits valid), 64-aligned, mapped while self.seg lives.
        unsafe { &*self.seg.as_ptr().cast::<IndexHeader>() }
    }

    fn index(&self) -> Index<'_> {
        // SAFETY: the segment holds index_size(max_buffers) bytes (checked when attached or
        // created), the directory starts at the 64-aligned DIR_OFFSET, and Entry is all
        // atomics, valid for any bits.
        let dir = unsafe {
            std::slice::from_raw_parts(
                self.seg
                    .as_ptr()
                    .add(index::DIR_OFFSET)
                    .cast::<index::Entry>(),
                self.max_buffers as usize,
            )
        };
        Index {
            hdr: self.hdr(),
            dir,
            max_size: self.max_buffer_size as u64,
        }
    }

    /// Takes the pool mutex (one uncontended `trylock` on the fast path). If its previous
    /// holder died, the lists are rebuilt before the guard is handed out.
    #[inline]
    fn locked(&self) -> Result<MutexGuard<'_>, PoolError> {
        let l = match self.mutex.try_lock()? {
            Some(l) => l,
            None => self.lock_slow()?,
        };
        match l {
            Locked::Acquired(g) => Ok(g),
            Locked::OwnerDied(g) => {
                self.index().repair(false);
                bump(&self.hdr().repairs);
                Ok(g)
            }
        }
    }

    #[cold]
    fn lock_slow(&self) -> Result<Locked<'_>, PoolError> {
        match self.mutex.lock_timeout(LOCK_TIMEOUT) {
            Ok(l) => Ok(l),
            Err(Error::Timeout) => Err(PoolError::Corrupt(format!(
                "the pool mutex was held for more than {LOCK_TIMEOUT:?}"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a Reader holds the alive lock. One `trylock`: no syscall.
    fn reader_alive(&self) -> bool {
        match self.alive.try_lock() {
            Ok(None) => true,
            // Free, or its holder died: no Reader. Our guard unlocks at once.
            Ok(Some(_)) => false,
            Err(Error::WouldDeadlock) => true,
            Err(_) => false,
        }
    }

    fn retired(&self) -> bool {
        self.hdr().state.load(Ordering::Acquire) == STATE_RETIRED
    }

    /// The mapping of buffer `slot`, from the cache or opened now. With `adopt`, the opener
    /// becomes the segment's owner (the Reader: it removes buffers when it exits).
    fn map(&self, slot: &Slot, adopt: bool) -> Result<Arc<Segment>, PoolError> {
        let mut cache = self.cache.lock();
        let cell = cache
            .get_mut(slot.index as usize)
            .ok_or_else(|| PoolError::Corrupt(format!("entry {} out of range", slot.index)))?;
        if let Some(m) = cell {
            if m.generation == slot.generation && m.seg.len() >= slot.capacity {
                return Ok(Arc::clone(&m.seg));
            }
        }
        let mut seg = Segment::open_kind(
            &self.name,
            &buffer_tag(slot.index, slot.generation),
            SegmentKind::PoolBuffer,
            KIND_VERSION,
        )?;
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
        let seg = Arc::new(seg);
        *cell = Some(Mapped {
            generation: slot.generation,
            seg: Arc::clone(&seg),
        });
        Ok(seg)
    }

    /// Drops this process's mappings of buffers the Reader has disposed of or replaced, so
    /// that a swept buffer's memory is given back to the system. Writers only: the Reader's
    /// cached segments are owned, and it drops them itself when it disposes of them.
    fn prune(&self) {
        let ix = self.index();
        let mut cache = self.cache.lock();
        for (cell, e) in cache.iter_mut().zip(ix.dir) {
            let stale = cell.as_ref().is_some_and(|m| {
                e.status.load(Ordering::Relaxed) == DISPOSED
                    || e.generation.load(Ordering::Relaxed) != m.generation
            });
            if stale {
                *cell = None;
            }
        }
    }

    /// Removes buffer `index`'s segment of `generation` (dropping our mapping of it).
    fn drop_buffer(&self, index: u32, generation: u32) {
        let cached = self
            .cache
            .lock()
            .get_mut(index as usize)
            .and_then(|c| c.take_if(|m| m.generation == generation));
        match cached {
            Some(m) if m.seg.is_owner() => drop(m),
            _ => {
                let _ = Segment::remove_tagged(&self.name, &buffer_tag(index, generation), true);
            }
        }
    }

    fn stats(&self) -> Result<PoolStats, PoolError> {
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

fn bump(c: &crate::sync::atomic::AtomicU64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

fn dec(c: &AtomicU32) {
    c.store(
        c.load(Ordering::Relaxed).saturating_sub(1),
        Ordering::Relaxed,
    );
}

fn inc(c: &AtomicU32) {
    c.store(
        c.load(Ordering::Relaxed).saturating_add(1),
        Ordering::Relaxed,
    );
}

// ---------------------------------------------------------------------------------- Reader

/// Why [`Reader::adopt`] did not adopt.
enum Adopt {
    /// The index cannot be adopted; a fresh one replaces it.
    Refused(String),
    /// Adoption must not go on (another process adopted first).
    Failed(PoolError),
}

/// State shared by the Reader, its service thread and the buffers it hands out.
#[derive(Debug)]
struct ReaderShared {
    conn: Conn,
    config: PoolConfig,
    stop: AtomicU32,
    /// Per entry: 1 while this Reader holds it (a `ReadBuf` exists). Changed under the pool
    /// mutex. A RECEIVED entry we do not hold was put there by someone else: freed again.
    held: Vec<AtomicU32>,
}

impl ReaderShared {
    fn new(conn: Conn, config: PoolConfig) -> ReaderShared {
        let held = (0..conn.max_buffers).map(|_| AtomicU32::new(0)).collect();
        ReaderShared {
            conn,
            config,
            stop: AtomicU32::new(0),
            held,
        }
    }
}

/// The receiving end of a buffer pool: owns every buffer; Writers fill them and send them
/// here.
///
/// A service thread grows the pool when Writers ask, sweeps buffers that stay idle, and
/// takes back buffers from Writers that died. If a Reader dies, the next `Reader::create`
/// of the same name adopts its pool: nothing queued is lost, messages it had received but
/// not released are delivered again ([`ReadBuf::redelivered`]), and Writers carry on.
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
#[derive(Debug)]
pub struct Reader {
    shared: Arc<ReaderShared>,
    service: Option<JoinHandle<()>>,
    adopted: bool,
    refused: Option<String>,
}

impl Reader {
    /// Creates the pool `name`, or adopts the pool of a Reader of that name that died.
    ///
    /// When adopting, the pool keeps the configuration it was created with (`config` is
    /// still validated). An index that cannot be adopted (corrupt header, incompatible
    /// version) is retired and replaced by a fresh one; Writers then copy what they hold
    /// into the new pool when they send it.
    ///
    /// # Errors
    /// [`PoolError::InvalidConfig`]; [`PoolError::Shm`] with
    /// [`Error::AlreadyRunning`](crate::Error::AlreadyRunning) if a live Reader serves the
    /// name, or another setup error (bad name, no memory).
    pub fn create(name: &str, config: PoolConfig) -> Result<Reader, PoolError> {
        config.validate()?;
        let sname = ServiceName::new(name)?;
        let mut refused = None;
        match Segment::open_kind_timeout(
            &sname,
            INDEX_TAG,
            SegmentKind::PoolIndex,
            KIND_VERSION,
            Duration::from_millis(200),
        ) {
            Ok(seg) => {
                let owner = seg.owner();
                if owner.is_alive() {
                    return Err(Error::AlreadyRunning {
                        name: name.into(),
                        pid: owner.pid(),
                    }
                    .into());
                }
                match Self::adopt(seg, &sname) {
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
        let mut reader = Self::create_fresh(&sname, config)?;
        reader.refused = refused;
        Ok(reader)
    }

    fn create_fresh(name: &ServiceName, config: PoolConfig) -> Result<Reader, PoolError> {
        let seg = Segment::builder(name.as_str())
            .tag(INDEX_TAG)
            .kind(SegmentKind::PoolIndex, KIND_VERSION)
            .size(index::index_size(config.max_buffers))
            .create_unpublished()?;
        let seg = Arc::new(seg);
        // SAFETY: the data region is index_size(max_buffers) bytes, unpublished; the header
        // is at 0 and all-atomic.
        let hdr = unsafe { &*seg.as_ptr().cast::<IndexHeader>() };
        // SAFETY: the fixed offsets are disjoint, 64-aligned and inside the region; nobody
        // else uses them before `publish`.
        unsafe {
            Mutex::init_at(&seg, index::MUTEX_OFFSET)?;
            Mutex::init_at(&seg, index::ALIVE_OFFSET)?;
            Event::init_at(&seg, index::QUEUE_EVENT_OFFSET)?;
            Event::init_at(&seg, index::FREED_EVENT_OFFSET)?;
            Event::init_at(&seg, index::SERVICE_EVENT_OFFSET)?;
        }
        // SAFETY: as in Conn::index: the directory lies in the region we just created.
        let dir = unsafe {
            std::slice::from_raw_parts(
                seg.as_ptr().add(index::DIR_OFFSET).cast::<index::Entry>(),
                config.max_buffers as usize,
            )
        };
        Index {
            hdr,
            dir,
            max_size: config.max_buffer_size as u64,
        }
        .init(&config);
        let conn = Conn::attach(Arc::clone(&seg), name.clone())?;
        let shared = Arc::new(ReaderShared::new(conn, config.clone()));
        // The start buffers, generation 1, owned by this process.
        for i in 0..config.start_buffers {
            let buf = Self::new_buffer(name, i, 1, config.initial_buffer_size)?;
            shared.conn.cache.lock()[i as usize] = Some(Mapped {
                generation: 1,
                seg: Arc::new(buf),
            });
        }
        shared.set_identity();
        let (service, go) = Self::start_service(&shared, LOCK_TIMEOUT)?;
        let _ = go.send(());
        seg.publish();
        Ok(Reader {
            shared,
            service: Some(service),
            adopted: false,
            refused: None,
        })
    }

    fn new_buffer(
        name: &ServiceName,
        index: u32,
        generation: u32,
        size: usize,
    ) -> Result<Segment, PoolError> {
        Ok(Segment::builder(name.as_str())
            .tag(&buffer_tag(index, generation))
            .kind(SegmentKind::PoolBuffer, KIND_VERSION)
            .size(size)
            .create()?)
    }

    /// Adopts a dead Reader's index, or says why not (`Refused`, after retiring it).
    ///
    /// Two processes may try to adopt the same index at once: the alive lock decides. Only
    /// the one whose service thread holds it repairs the index and serves it; the other
    /// gets `AlreadyRunning` and leaves the index alone.
    fn adopt(mut seg: Segment, name: &ServiceName) -> Result<Reader, Adopt> {
        if let Err(why) = check_header(&seg) {
            Self::retire_foreign(&seg, name);
            return Err(Adopt::Refused(why));
        }
        let owner = seg.owner();
        seg.take_over();
        let seg = Arc::new(seg);
        let conn = Conn::attach(Arc::clone(&seg), name.clone())
            .map_err(|e| Adopt::Refused(e.to_string()))?;
        let config = PoolConfig::from_header(conn.hdr());
        let shared = Arc::new(ReaderShared::new(conn, config));
        let (service, go) = match Self::start_service(&shared, ALIVE_TAKEOVER_WAIT) {
            Ok(s) => s,
            Err(_) => {
                // Another process adopted it first: it is that process's index now.
                drop(shared);
                if let Ok(mut seg) = Arc::try_unwrap(seg) {
                    seg.disown();
                }
                return Err(Adopt::Failed(
                    Error::AlreadyRunning {
                        name: name.to_string(),
                        pid: owner.pid(),
                    }
                    .into(),
                ));
            }
        };
        let conn = &shared.conn;
        let h = conn.hdr();
        let checked = if h.state.load(Ordering::Acquire) != STATE_OPEN {
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
                    ix.repair(true);
                    let r = ix.validate().map_err(|c| c.0);
                    drop(lock);
                    r
                }
                Err(e) => Err(format!("cannot lock the dead Reader's index: {e}")),
            }
        };
        if let Err(why) = checked {
            Self::retire_foreign(&conn.seg, name);
            // Stop the service thread (it has not started its loop); dropping `shared`
            // then removes the index (we own it now), so that a fresh one can be created.
            drop(go);
            let _ = service.join();
            return Err(Adopt::Refused(why));
        }
        h.adoptions.fetch_add(1, Ordering::Relaxed);
        shared.set_identity();
        let _ = go.send(());
        if conn.index().count(List::Queued) > 0 {
            conn.queue_ev.set();
        }
        // Writers waiting for a buffer re-check (the Reader is back).
        conn.freed_ev.set();
        Ok(Reader {
            shared,
            service: Some(service),
            adopted: true,
            refused: None,
        })
    }

    /// Marks an index we cannot adopt as retired (so Writers copy on send) and removes the
    /// buffer segments it names, as far as it can be read.
    fn retire_foreign(seg: &Segment, name: &ServiceName) {
        if seg.len() < index::DIR_OFFSET {
            return;
        }
        // SAFETY: as in check_header.
        let h = unsafe { &*seg.as_ptr().cast::<IndexHeader>() };
        h.state.store(STATE_RETIRED, Ordering::Release);
        let fits = (seg.len() - index::DIR_OFFSET) / index::ENTRY_SIZE;
        let n = (h.config.max_buffers.load(Ordering::Relaxed) as usize)
            .min(fits)
            .min(index::MAX_BUFFERS_LIMIT as usize);
        // SAFETY: n entries fit in the region (computed from its length).
        let dir = unsafe {
            std::slice::from_raw_parts(
                seg.as_ptr().add(index::DIR_OFFSET).cast::<index::Entry>(),
                n,
            )
        };
        for (i, e) in dir.iter().enumerate() {
            if e.status.load(Ordering::Relaxed) != DISPOSED {
                // Only segments whose owner is dead are removed.
                let _ = Segment::remove_tagged(
                    name,
                    &buffer_tag(i as u32, e.generation.load(Ordering::Relaxed)),
                    false,
                );
            }
        }
    }

    /// Starts the service thread and waits until it holds the alive lock (waiting at most
    /// `wait` for it), so that Writers see a live Reader from then on. The thread starts
    /// its work when the returned sender sends; dropping the sender ends it.
    fn start_service(
        shared: &Arc<ReaderShared>,
        wait: Duration,
    ) -> Result<(JoinHandle<()>, Sender<()>), PoolError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel();
        let sh = Arc::clone(shared);
        let handle = std::thread::Builder::new()
            .name("shmlink-pool-service".into())
            .spawn(move || sh.service(wait, ready_tx, go_rx))?;
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

    /// Whether this Reader adopted the pool of a Reader that died.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Why an existing pool of this name was not adopted (a fresh one was created instead).
    pub fn adoption_refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// The pool's configuration (when adopted: the one it was created with).
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// The service name.
    pub fn name(&self) -> &str {
        self.shared.conn.name.as_str()
    }

    /// Receives the next message, waiting as long as it takes.
    ///
    /// # Errors
    /// [`PoolError::Corrupt`] if the index stays inconsistent after repair.
    pub fn recv(&self) -> Result<ReadBuf, PoolError> {
        self.recv_deadline(None)
    }

    /// Receives the next message, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`PoolError::Timeout`]; otherwise as [`Reader::recv`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<ReadBuf, PoolError> {
        self.recv_deadline(Instant::now().checked_add(timeout))
    }

    fn recv_deadline(&self, deadline: Option<Instant>) -> Result<ReadBuf, PoolError> {
        loop {
            if let Some(b) = self.try_recv()? {
                return Ok(b);
            }
            if self.shared.conn.queue_ev.wait_until(deadline, None) == WaitOutcome::TimedOut {
                return self.try_recv()?.ok_or(PoolError::Timeout);
            }
        }
    }

    /// Receives a message if one is queued; never waits (except briefly for the mutex).
    ///
    /// Entries found inconsistent are repaired or dropped (see [`PoolStats::repairs`]).
    ///
    /// # Errors
    /// [`PoolError::Corrupt`] if the index stays inconsistent after repair.
    pub fn try_recv(&self) -> Result<Option<ReadBuf>, PoolError> {
        let sh = &self.shared;
        let conn = &sh.conn;
        for _ in 0..conn.max_buffers + 2 {
            let (slot, more) = {
                let _g = conn.locked()?;
                let ix = conn.index();
                let h = ix.hdr;
                let i = match ix.pop_front(List::Queued) {
                    Ok(None) => return Ok(None),
                    Ok(Some(i)) => i,
                    Err(_) => {
                        ix.repair(false);
                        bump(&h.repairs);
                        continue;
                    }
                };
                let e = &ix.dir[i as usize];
                match ix.slot(i) {
                    Ok(slot) => {
                        e.status.store(RECEIVED, Ordering::Relaxed);
                        sh.held[i as usize].store(1, Ordering::Relaxed);
                        inc(&h.received);
                        bump(&h.delivered);
                        if slot.flags & FLAG_REDELIVERED != 0 {
                            bump(&h.redelivered);
                        }
                        (slot, ix.count(List::Queued) > 0)
                    }
                    Err(_) => {
                        // Impossible length or capacity: the message cannot be trusted.
                        inc(&h.received);
                        ix.dispose(i, RECEIVED);
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
                    return Ok(Some(ReadBuf {
                        shared: Arc::clone(sh),
                        seg,
                        slot,
                        redelivered: slot.flags & FLAG_REDELIVERED != 0,
                    }));
                }
                Err(_) => {
                    // Its segment is missing or too small: drop the message.
                    let _g = conn.locked()?;
                    let ix = conn.index();
                    let e = &ix.dir[slot.index as usize];
                    sh.held[slot.index as usize].store(0, Ordering::Relaxed);
                    if e.status.load(Ordering::Relaxed) == RECEIVED
                        && e.generation.load(Ordering::Relaxed) == slot.generation
                    {
                        ix.dispose(slot.index, RECEIVED);
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

    /// A snapshot of the pool's lists and counters.
    ///
    /// # Errors
    /// [`PoolError::Corrupt`] if the mutex stays held (a wedged peer).
    pub fn stats(&self) -> Result<PoolStats, PoolError> {
        self.shared.conn.stats()
    }

    /// Checks every invariant of the index (lists, links, counts, statuses, sizes).
    ///
    /// # Errors
    /// [`PoolError::Corrupt`] saying what is inconsistent.
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
    fn drop(&mut self) {
        let conn = &self.shared.conn;
        // No Reader will read this index again: Writers copy into a new one or get NoReader.
        // Under the mutex, so that no send slips in after the Writer's check (see `queue`).
        {
            let _g = conn.locked();
            conn.hdr().state.store(STATE_RETIRED, Ordering::Release);
        }
        self.shared.stop.store(1, Ordering::Release);
        conn.service_ev.set();
        if let Some(h) = self.service.take() {
            let _ = h.join();
        }
        conn.freed_ev.set();
    }
}

impl ReaderShared {
    fn set_identity(&self) {
        let h = self.conn.hdr();
        let me = ProcessId::current();
        let token = uuid::Uuid::new_v4().as_u64_pair();
        h.reader_start.store(me.start_time(), Ordering::Relaxed);
        h.reader_pid.store(me.pid(), Ordering::Relaxed);
        h.reader_token[0].store(token.0, Ordering::Relaxed);
        h.reader_token[1].store(token.1, Ordering::Release);
        h.state.store(STATE_OPEN, Ordering::Release);
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
            if conn.hdr().grow_requested.swap(0, Ordering::AcqRel) != 0 {
                let _ = self.grow();
            }
            if last_reclaim.elapsed() >= RECLAIM_INTERVAL {
                last_reclaim = Instant::now();
                let _ = self.reclaim();
            }
            let _ = self.sweep();
        }
    }

    /// Adds up to `resize_increment` buffers (never above `max_buffers`).
    fn grow(&self) -> Result<(), PoolError> {
        let conn = &self.conn;
        let picked: Vec<(u32, u32)> = {
            let _g = conn.locked()?;
            let ix = conn.index();
            let room = self.config.max_buffers.saturating_sub(ix.buffers());
            let n = room.min(self.config.resize_increment);
            let mut picked = Vec::new();
            let mut cur = ix.front(List::Disposed).unwrap_or(index::NIL);
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
                Reader::new_buffer(&conn.name, i, generation, self.config.initial_buffer_size)?,
            ));
        }
        let mut added = 0;
        {
            let _g = conn.locked()?;
            let ix = conn.index();
            let now = index::now_ns();
            let mut cache = conn.cache.lock();
            for (i, old_gen, generation, seg) in made {
                let e = &ix.dir[i as usize];
                if e.status.load(Ordering::Relaxed) != DISPOSED
                    || e.generation.load(Ordering::Relaxed) != old_gen
                    || ix.unlink(List::Disposed, i).is_err()
                {
                    continue; // changed meanwhile (repair): dropping `seg` removes it
                }
                e.generation.store(generation, Ordering::Relaxed);
                e.capacity
                    .store(self.config.initial_buffer_size as u64, Ordering::Relaxed);
                e.len.store(0, Ordering::Relaxed);
                e.flags.store(0, Ordering::Relaxed);
                e.released_at.store(now, Ordering::Relaxed);
                e.status.store(FREE, Ordering::Release);
                ix.push_front(List::Free, i);
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
            while ix.buffers() > self.config.min_buffers {
                let Some(i) = ix.back(List::Free) else { break };
                let e = &ix.dir[i as usize];
                if now.saturating_sub(e.released_at.load(Ordering::Relaxed)) <= timeout {
                    break;
                }
                if ix.unlink(List::Free, i).is_err() {
                    ix.repair(false);
                    break;
                }
                gone.push((i, e.generation.load(Ordering::Relaxed)));
                e.status.store(DISPOSED, Ordering::Relaxed);
                e.capacity.store(0, Ordering::Relaxed);
                ix.push_back(List::Disposed, i);
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
        let held: Vec<(u32, ProcessId, u32)> = {
            let _g = conn.locked()?;
            let ix = conn.index();
            let now = index::now_ns();
            for (i, e) in ix.dir.iter().enumerate() {
                if e.status.load(Ordering::Relaxed) == RECEIVED
                    && self.held[i].load(Ordering::Relaxed) == 0
                    && ix.slot(i as u32).is_ok()
                {
                    dec(&ix.hdr.received);
                    e.released_at.store(now, Ordering::Relaxed);
                    // Status last, message left whole: as in `ReadBuf::drop`.
                    e.status.store(FREE, Ordering::Release);
                    ix.push_front(List::Free, i as u32);
                    bump(&ix.hdr.repairs);
                    strays += 1;
                }
            }
            ix.dir
                .iter()
                .enumerate()
                .filter(|(_, e)| e.status.load(Ordering::Relaxed) == ALLOCATED)
                .map(|(i, e)| (i as u32, e.owner(), e.generation.load(Ordering::Relaxed)))
                .collect()
        };
        if strays > 0 {
            conn.freed_ev.set();
        }
        if held.is_empty() {
            return Ok(());
        }
        let mut verdict: Vec<(ProcessId, bool)> = Vec::new();
        let mut dead = Vec::new();
        for (i, owner, g) in held {
            let alive = match verdict.iter().find(|(p, _)| *p == owner) {
                Some(&(_, a)) => a,
                None => {
                    let a = owner.is_alive();
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
            let now = index::now_ns();
            for (i, owner, g) in dead {
                let e = &ix.dir[i as usize];
                if e.status.load(Ordering::Relaxed) != ALLOCATED
                    || e.owner() != owner
                    || e.generation.load(Ordering::Relaxed) != g
                {
                    continue;
                }
                dec(&ix.hdr.allocated);
                if ix.slot(i).is_err() {
                    inc(&ix.hdr.allocated);
                    ix.dispose(i, ALLOCATED);
                    continue;
                }
                e.set_owner(None);
                e.len.store(0, Ordering::Relaxed);
                e.released_at.store(now, Ordering::Relaxed);
                e.status.store(FREE, Ordering::Release);
                ix.push_front(List::Free, i);
                bump(&ix.hdr.reclaimed);
                taken.push((i, g));
            }
        }
        conn.freed_ev.set();
        // A Writer that died while growing its buffer may have left the neighbouring
        // generations' segments behind.
        for (i, g) in taken {
            for other in [g.wrapping_sub(1), g.wrapping_add(1)] {
                let _ = Segment::remove_tagged(&conn.name, &buffer_tag(i, other), true);
            }
        }
        Ok(())
    }
}

impl Drop for ReaderShared {
    fn drop(&mut self) {
        // The Reader is gone and no ReadBuf is left: remove every buffer segment. Those we
        // own and have mapped go with the cache; the others (adopted, never mapped) by name.
        let conn = &self.conn;
        let cache = std::mem::take(&mut *conn.cache.lock());
        let ix = conn.index();
        for (i, e) in ix.dir.iter().enumerate() {
            let g = e.generation.load(Ordering::Relaxed);
            // A process killed between creating a buffer segment and recording it in the
            // directory (a Reader's `grow`, a Writer's `WriteBuf::grow`) left it under the
            // entry's next generation, named by no entry: remove it too (a failed open when
            // there is none).
            let _ =
                Segment::remove_tagged(&conn.name, &buffer_tag(i as u32, next_generation(g)), true);
            if e.status.load(Ordering::Relaxed) == DISPOSED {
                // A sweep killed between marking the entry and unlinking its segment.
                let _ = Segment::remove_tagged(&conn.name, &buffer_tag(i as u32, g), true);
                continue;
            }
            let mapped_owned = cache
                .get(i)
                .and_then(Option::as_ref)
                .is_some_and(|m| m.generation == g && m.seg.is_owner());
            if !mapped_owned {
                let _ = Segment::remove_tagged(&conn.name, &buffer_tag(i as u32, g), true);
            }
        }
        drop(cache);
    }
}

/// A message the [`Reader`] received: derefs to its bytes, in place in shared memory.
/// Dropping it puts the buffer back on the free list.
pub struct ReadBuf {
    shared: Arc<ReaderShared>,
    seg: Arc<Segment>,
    slot: Slot,
    redelivered: bool,
}

impl ReadBuf {
    /// Whether this message was received before by a Reader that died before releasing it
    /// (it may have been processed already).
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// The buffer's capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.slot.capacity
    }
}

impl Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: slot.len <= slot.capacity <= seg.len() (checked in `Index::slot` and
        // `Conn::map`), and `seg` keeps the mapping alive. The entry is RECEIVED: Writers
        // that follow the protocol do not write it until we release it (a hostile process
        // can change bytes, not the bounds).
        unsafe { std::slice::from_raw_parts(self.seg.as_ptr(), self.slot.len) }
    }
}

impl AsRef<[u8]> for ReadBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        let conn = &self.shared.conn;
        let Ok(g) = conn.locked() else { return };
        let ix = conn.index();
        let i = self.slot.index;
        let e = &ix.dir[i as usize];
        self.shared.held[i as usize].store(0, Ordering::Relaxed);
        if e.status.load(Ordering::Relaxed) != RECEIVED
            || e.generation.load(Ordering::Relaxed) != self.slot.generation
        {
            return;
        }
        dec(&ix.hdr.received);
        e.released_at.store(index::now_ns(), Ordering::Relaxed);
        // The status is the commit point (see "Crash order" in the index module): until it
        // says FREE, the message must stay whole for an adopter to redeliver, so its `len`
        // and `flags` are not touched here (the next acquire resets them).
        e.status.store(FREE, Ordering::Release);
        ix.push_front(List::Free, i);
        drop(g);
        conn.freed_ev.set();
    }
}

impl fmt::Debug for ReadBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadBuf")
            .field("index", &self.slot.index)
            .field("len", &self.slot.len)
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

// ---------------------------------------------------------------------------------- Writer

/// The sending end of a buffer pool: acquires free buffers, fills them in place and sends
/// them to the [`Reader`].
///
/// A Writer follows its pool across Reader restarts: when a new Reader adopts the pool,
/// nothing changes for the Writer; when a new Reader had to start a fresh pool, buffers
/// acquired from the old one are copied into the new one when sent.
///
/// # Examples
/// ```
/// use std::io::Write;
/// use shmlink::{PoolConfig, Reader, Writer};
/// # let name = format!("doc-writer-{}", std::process::id());
/// # let reader = Reader::create(&name, PoolConfig::default())?;
/// let writer = Writer::connect(&name)?;
/// let mut buf = writer.acquire()?;
/// buf.set_len(4)?;                       // zero-copy: fill the bytes in place
/// buf.copy_from_slice(&[1, 2, 3, 4]);
/// write!(buf, " and more")?;             // or append
/// writer.send(buf)?;
/// # assert_eq!(&reader.recv()?[..4], &[1, 2, 3, 4]);
/// # Ok::<(), shmlink::PoolError>(())
/// ```
pub struct Writer {
    name: ServiceName,
    conn: parking_lot::Mutex<Arc<Conn>>,
    me: ProcessId,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Connects to the pool `name`.
    ///
    /// # Errors
    /// [`PoolError::NoReader`] if no pool of that name exists; [`PoolError::Corrupt`] if its
    /// index is inconsistent; [`PoolError::Shm`] for other setup errors.
    pub fn connect(name: &str) -> Result<Writer, PoolError> {
        let name = ServiceName::new(name)?;
        let conn = Self::open(&name, Duration::from_secs(2))?;
        Ok(Writer {
            name,
            conn: parking_lot::Mutex::new(Arc::new(conn)),
            me: ProcessId::current(),
        })
    }

    /// Connects to the pool `name`, waiting up to `timeout` for a Reader to create it.
    ///
    /// # Errors
    /// As [`Writer::connect`], after the timeout.
    pub fn connect_timeout(name: &str, timeout: Duration) -> Result<Writer, PoolError> {
        let start = Instant::now();
        loop {
            match Self::connect(name) {
                Err(PoolError::NoReader) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                r => return r,
            }
        }
    }

    fn open(name: &ServiceName, ready_wait: Duration) -> Result<Conn, PoolError> {
        match Segment::open_kind_timeout(
            name,
            INDEX_TAG,
            SegmentKind::PoolIndex,
            KIND_VERSION,
            ready_wait,
        ) {
            Ok(seg) => Conn::attach(Arc::new(seg), name.clone()),
            Err(Error::NotFound { .. } | Error::NotReady { .. }) => Err(PoolError::NoReader),
            Err(e) => Err(e.into()),
        }
    }

    fn current(&self) -> Arc<Conn> {
        Arc::clone(&self.conn.lock())
    }

    /// Looks for a new pool replacing `old`: `Some(new)` if the name now names another
    /// index, `None` if it still names `old`.
    #[cold]
    fn refresh(&self, old: &Arc<Conn>) -> Result<Option<Arc<Conn>>, PoolError> {
        let mut cur = self.conn.lock();
        if !Arc::ptr_eq(&cur, old) {
            return Ok(Some(Arc::clone(&cur)));
        }
        let conn = Self::open(&self.name, Duration::from_millis(500))?;
        if conn.token == old.token {
            return Ok(None);
        }
        let conn = Arc::new(conn);
        *cur = Arc::clone(&conn);
        Ok(Some(conn))
    }

    /// Whether a Reader serves the pool now.
    pub fn reader_alive(&self) -> bool {
        let c = self.current();
        !c.retired() && c.reader_alive()
    }

    /// The largest buffer the pool allows.
    pub fn max_buffer_size(&self) -> usize {
        self.current().max_buffer_size
    }

    /// A snapshot of the pool's lists and counters.
    ///
    /// # Errors
    /// [`PoolError::Corrupt`] if the mutex stays held.
    pub fn stats(&self) -> Result<PoolStats, PoolError> {
        self.current().stats()
    }

    /// Acquires a free buffer (length 0), waiting up to 5 s.
    ///
    /// # Errors
    /// As [`Writer::acquire_timeout`].
    pub fn acquire(&self) -> Result<WriteBuf, PoolError> {
        self.acquire_timeout(Duration::from_secs(5))
    }

    /// Acquires a free buffer (length 0), waiting at most `timeout` for one. Asks the
    /// Reader to grow the pool when few buffers are free.
    ///
    /// # Errors
    /// [`PoolError::PoolFull`] after the timeout; [`PoolError::NoReader`] as soon as it is
    /// clear that no Reader serves the pool (within 100 ms while waiting);
    /// [`PoolError::Corrupt`].
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<WriteBuf, PoolError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut conn = self.current();
        let mut waited = false;
        loop {
            if conn.retired() {
                conn = self.refresh(&conn)?.ok_or(PoolError::NoReader)?;
                continue;
            }
            if let Some(buf) = self.try_acquire(&conn, waited)? {
                return Ok(buf);
            }
            if !conn.reader_alive() {
                match self.refresh(&conn)? {
                    Some(new) => {
                        conn = new;
                        continue;
                    }
                    None => return Err(PoolError::NoReader),
                }
            }
            let mut check = || conn.reader_alive() && !conn.retired();
            match conn.freed_ev.wait_until(deadline, Some(&mut check)) {
                WaitOutcome::Set => waited = true,
                WaitOutcome::TimedOut => return Err(PoolError::PoolFull),
                WaitOutcome::Aborted => {}
            }
        }
    }

    /// One attempt: pops a free buffer if there is one.
    #[inline]
    fn try_acquire(&self, conn: &Arc<Conn>, pass_on: bool) -> Result<Option<WriteBuf>, PoolError> {
        for _ in 0..conn.max_buffers + 2 {
            let (slot, grow, more) = {
                let g = conn.locked()?;
                let ix = conn.index();
                let h = ix.hdr;
                let popped = match ix.pop_front(List::Free) {
                    Ok(p) => p,
                    Err(_) => {
                        ix.repair(false);
                        bump(&h.repairs);
                        continue;
                    }
                };
                let free = ix.count(List::Free);
                let r = Ordering::Relaxed;
                // Few free (or none at all: then even with a threshold of 0): ask for more.
                let grow = (free < h.config.resize_threshold.load(r) || popped.is_none())
                    && ix.buffers() < conn.max_buffers
                    && h.grow_requested.load(r) == 0;
                if grow {
                    h.grow_requested.store(1, r);
                }
                let Some(i) = popped else {
                    drop(g);
                    if grow {
                        conn.service_ev.set();
                    }
                    return Ok(None);
                };
                let e = &ix.dir[i as usize];
                // The owner before the status (the commit point): a Writer that dies before
                // it leaves the entry FREE (repair relinks it), after it ALLOCATED to itself
                // (`reclaim` takes it back), never ALLOCATED to the entry's previous Writer.
                e.len.store(0, r);
                e.flags.store(0, r);
                e.set_owner(Some(self.me));
                e.status.store(ALLOCATED, Ordering::Release);
                inc(&h.allocated);
                match ix.slot(i) {
                    Ok(slot) => {
                        drop(g);
                        (slot, grow, free > 0)
                    }
                    Err(_) => {
                        ix.dispose(i, ALLOCATED);
                        bump(&h.repairs);
                        continue;
                    }
                }
            };
            if grow {
                conn.service_ev.set();
            }
            let n = conn.acquires.load(Ordering::Relaxed).wrapping_add(1);
            conn.acquires.store(n, Ordering::Relaxed);
            if n % PRUNE_EVERY == 0 {
                conn.prune();
            }
            if pass_on && more {
                // We were woken for a freed buffer and more are free: wake the next Writer.
                conn.freed_ev.set();
            }
            match conn.map(&slot, false) {
                Ok(seg) => {
                    return Ok(Some(WriteBuf {
                        conn: Arc::clone(conn),
                        seg,
                        slot,
                        len: 0,
                        me: self.me,
                        done: false,
                    }))
                }
                Err(e) => {
                    // A broken entry (its segment is missing or wrong) is given up and the
                    // next free buffer tried; any other failure puts the buffer back.
                    let broken = matches!(
                        e,
                        PoolError::Corrupt(_)
                            | PoolError::Shm(
                                Error::NotFound { .. }
                                    | Error::Corrupt { .. }
                                    | Error::Foreign { .. }
                                    | Error::WrongKind { .. }
                                    | Error::VersionMismatch { .. }
                                    | Error::NotReady { .. }
                            )
                    );
                    let g = conn.locked()?;
                    let ix = conn.index();
                    let en = &ix.dir[slot.index as usize];
                    if en.status.load(Ordering::Relaxed) == ALLOCATED
                        && en.owner() == self.me
                        && en.generation.load(Ordering::Relaxed) == slot.generation
                    {
                        if broken {
                            ix.dispose(slot.index, ALLOCATED);
                            bump(&ix.hdr.repairs);
                        } else {
                            dec(&ix.hdr.allocated);
                            en.set_owner(None);
                            en.status.store(FREE, Ordering::Release);
                            ix.push_front(List::Free, slot.index);
                        }
                    }
                    drop(g);
                    if !broken {
                        return Err(e);
                    }
                }
            }
        }
        Err(PoolError::Corrupt(
            "the free list stays inconsistent after repair".into(),
        ))
    }

    /// Sends `buf` to the Reader's queue (FIFO) and wakes the Reader.
    ///
    /// If the Reader died and nobody replaced the pool yet, the message is queued for the
    /// Reader that will adopt it. If a new Reader started a fresh pool, the bytes are copied
    /// into one of its buffers (copy-on-send).
    ///
    /// # Errors
    /// Gives the buffer back with [`PoolError::NoReader`] (the pool was closed, or removed,
    /// and no Reader replaced it), [`PoolError::NotOwner`], [`PoolError::TooLarge`] (a copy
    /// that does not fit the new pool), [`PoolError::PoolFull`] (no buffer for the copy),
    /// [`PoolError::Corrupt`].
    pub fn send(&self, buf: WriteBuf) -> Result<(), SendError> {
        let conn = Arc::clone(&buf.conn);
        if conn.retired() || !conn.reader_alive() {
            match self.refresh(&conn) {
                Ok(Some(new)) => return self.copy_send(buf, &new),
                Ok(None) if conn.retired() => return Err(SendError::new(buf, PoolError::NoReader)),
                // The Reader died; its index still has the name: queue for its adopter.
                Ok(None) => {}
                // Nothing has the name any more: nobody would ever read what we queue.
                Err(error) => return Err(SendError::new(buf, error)),
            }
        }
        self.queue(buf)
    }

    #[inline]
    fn queue(&self, mut buf: WriteBuf) -> Result<(), SendError> {
        let r = (|| {
            let conn = &buf.conn;
            let _g = conn.locked()?;
            let ix = conn.index();
            let h = ix.hdr;
            let i = buf.slot.index;
            let e = &ix.dir[i as usize];
            let r = Ordering::Relaxed;
            if h.state.load(r) == STATE_RETIRED {
                return Err(PoolError::NoReader);
            }
            if e.status.load(r) != ALLOCATED
                || e.owner() != buf.me
                || e.generation.load(r) != buf.slot.generation
                || e.capacity.load(r) != buf.slot.capacity as u64
            {
                return Err(PoolError::NotOwner);
            }
            e.len.store(buf.len as u64, r);
            let seq = h.next_seq.load(r);
            h.next_seq.store(seq.wrapping_add(1), r);
            e.seq.store(seq, r);
            // Length and seq first, the status last (see "Crash order" in the index module).
            e.status.store(QUEUED, Ordering::Release);
            dec(&h.allocated);
            ix.push_back(List::Queued, i);
            bump(&h.sent);
            Ok(())
        })();
        match r {
            Ok(()) => {
                buf.done = true;
                buf.conn.queue_ev.set();
                Ok(())
            }
            Err(error) => Err(SendError::new(buf, error)),
        }
    }

    /// Copy-on-send: `buf` belongs to a pool that no Reader will read; copy it into `new`.
    #[cold]
    fn copy_send(&self, mut buf: WriteBuf, new: &Arc<Conn>) -> Result<(), SendError> {
        let copy = (|| {
            if buf.len > new.max_buffer_size {
                return Err(PoolError::TooLarge {
                    requested: buf.len,
                    max: new.max_buffer_size,
                });
            }
            let deadline = Instant::now() + COPY_TIMEOUT;
            let mut nb = loop {
                if let Some(b) = self.try_acquire(new, false)? {
                    break b;
                }
                let mut check = || new.reader_alive() && !new.retired();
                match new.freed_ev.wait_until(Some(deadline), Some(&mut check)) {
                    WaitOutcome::Set => {}
                    WaitOutcome::TimedOut => return Err(PoolError::PoolFull),
                    WaitOutcome::Aborted => return Err(PoolError::NoReader),
                }
            };
            nb.set_len(buf.len)?;
            nb.copy_from_slice(&buf);
            Ok(nb)
        })();
        match copy {
            Ok(nb) => match self.queue(nb) {
                Ok(()) => {
                    // The old pool is abandoned: do not release into it.
                    buf.done = true;
                    Ok(())
                }
                Err(e) => Err(SendError::new(buf, e.into_parts().1)),
            },
            Err(error) => Err(SendError::new(buf, error)),
        }
    }
}

/// A buffer a [`Writer`] holds: derefs (mutably) to its first [`len`](WriteBuf::len)
/// bytes, in place in shared memory. Send it with [`Writer::send`]; dropping it unsent
/// puts it back on the free list.
///
/// The bytes beyond the length, exposed by [`set_len`](WriteBuf::set_len), hold whatever an
/// earlier message left there.
pub struct WriteBuf {
    conn: Arc<Conn>,
    seg: Arc<Segment>,
    slot: Slot,
    len: usize,
    me: ProcessId,
    done: bool,
}

impl WriteBuf {
    /// Bytes in the message.
    #[allow(clippy::len_without_is_empty)] // derefs to a slice, which has is_empty
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes the buffer holds without growing.
    pub fn capacity(&self) -> usize {
        self.slot.capacity
    }

    /// The largest capacity this buffer may grow to (the pool's `max_buffer_size`).
    pub fn max_capacity(&self) -> usize {
        self.conn.max_buffer_size
    }

    /// Sets the message length, growing the buffer if `len` exceeds its capacity.
    ///
    /// # Errors
    /// As [`WriteBuf::reserve`].
    pub fn set_len(&mut self, len: usize) -> Result<(), PoolError> {
        self.reserve(len)?;
        self.len = len;
        Ok(())
    }

    /// Sets the length to 0.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `bytes`, growing the buffer if needed.
    ///
    /// # Errors
    /// As [`WriteBuf::reserve`].
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> Result<(), PoolError> {
        let start = self.len;
        let end = start.checked_add(bytes.len()).ok_or(PoolError::TooLarge {
            requested: usize::MAX,
            max: self.conn.max_buffer_size,
        })?;
        self.set_len(end)?;
        self[start..end].copy_from_slice(bytes);
        Ok(())
    }

    /// Makes the capacity at least `capacity` bytes: a bigger buffer segment replaces this
    /// one (under the next generation's name), keeping the message's bytes. Grows at least
    /// twofold, up to the pool's `max_buffer_size`.
    ///
    /// # Errors
    /// [`PoolError::TooLarge`] beyond `max_buffer_size`; [`PoolError::NotOwner`] if the
    /// buffer is no longer ours; [`PoolError::Shm`] if the memory cannot be reserved.
    pub fn reserve(&mut self, capacity: usize) -> Result<(), PoolError> {
        if capacity <= self.slot.capacity {
            return Ok(());
        }
        let max = self.conn.max_buffer_size;
        if capacity > max {
            return Err(PoolError::TooLarge {
                requested: capacity,
                max,
            });
        }
        self.grow(capacity.max(self.slot.capacity.saturating_mul(2)).min(max))
    }

    #[cold]
    fn grow(&mut self, capacity: usize) -> Result<(), PoolError> {
        let (i, old_gen) = (self.slot.index, self.slot.generation);
        let new_gen = next_generation(old_gen);
        let new_tag = buffer_tag(i, new_gen);
        let name = &self.conn.name;
        let mut seg = Reader::new_buffer(name, i, new_gen, capacity)?;
        // The Reader owns the pool's buffers: it removes this one when it disposes of it.
        seg.disown();
        // SAFETY: both mappings hold at least `self.len` bytes (len <= old capacity <=
        // old mapping; the new one is bigger); they are distinct objects.
        unsafe { std::ptr::copy_nonoverlapping(self.seg.as_ptr(), seg.as_ptr(), self.len) };
        let updated = (|| {
            let conn = &self.conn;
            let _g = conn.locked()?;
            let e = &conn.index().dir[i as usize];
            let r = Ordering::Relaxed;
            if e.status.load(r) != ALLOCATED
                || e.owner() != self.me
                || e.generation.load(r) != old_gen
            {
                return Err(PoolError::NotOwner);
            }
            e.generation.store(new_gen, r);
            e.capacity.store(capacity as u64, r);
            Ok(())
        })();
        if let Err(e) = updated {
            let _ = Segment::remove_tagged(name, &new_tag, true);
            return Err(e);
        }
        let _ = Segment::remove_tagged(name, &buffer_tag(i, old_gen), true);
        let seg = Arc::new(seg);
        if let Some(cell) = self.conn.cache.lock().get_mut(i as usize) {
            *cell = Some(Mapped {
                generation: new_gen,
                seg: Arc::clone(&seg),
            });
        }
        self.seg = seg;
        self.slot.generation = new_gen;
        self.slot.capacity = capacity;
        Ok(())
    }

    /// The whole buffer, up to its capacity (for writing before [`set_len`](Self::set_len)).
    pub fn spare_capacity(&mut self) -> &mut [u8] {
        // SAFETY: capacity <= mapping length (checked when mapped or created); we hold the
        // buffer (ALLOCATED to us), so no protocol-following process touches it.
        unsafe { std::slice::from_raw_parts_mut(self.seg.as_ptr(), self.slot.capacity) }
    }
}

impl Deref for WriteBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: len <= capacity <= mapping length; see spare_capacity.
        unsafe { std::slice::from_raw_parts(self.seg.as_ptr(), self.len) }
    }
}

impl DerefMut for WriteBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref; &mut self makes this the only reference in this process.
        unsafe { std::slice::from_raw_parts_mut(self.seg.as_ptr(), self.len) }
    }
}

impl std::io::Write for WriteBuf {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = self.conn.max_buffer_size - self.len;
        let n = bytes.len().min(room);
        if n == 0 && !bytes.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "the pool buffer is at max_buffer_size",
            ));
        }
        self.extend_from_slice(&bytes[..n])
            .map_err(std::io::Error::other)?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for WriteBuf {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let conn = &self.conn;
        let Ok(g) = conn.locked() else { return };
        let ix = conn.index();
        let i = self.slot.index;
        let e = &ix.dir[i as usize];
        let r = Ordering::Relaxed;
        if e.status.load(r) != ALLOCATED
            || e.owner() != self.me
            || e.generation.load(r) != self.slot.generation
        {
            return;
        }
        dec(&ix.hdr.allocated);
        e.set_owner(None);
        e.len.store(0, r);
        e.released_at.store(index::now_ns(), r);
        e.status.store(FREE, Ordering::Release);
        ix.push_front(List::Free, i);
        drop(g);
        conn.freed_ev.set();
    }
}

impl fmt::Debug for WriteBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBuf")
            .field("index", &self.slot.index)
            .field("len", &self.len)
            .field("capacity", &self.slot.capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Reader>();
        send_sync::<Writer>();
        send::<ReadBuf>();
        send::<WriteBuf>();
        send::<SendError>();
    }

    #[test]
    fn config_rules() {
        assert!(PoolConfig::default().validate().is_ok());
        let d = PoolConfig::default;
        for bad in [
            PoolConfig {
                initial_buffer_size: 0,
                ..d()
            },
            PoolConfig {
                max_buffer_size: 1,
                ..d()
            },
            PoolConfig {
                max_buffers: 0,
                start_buffers: 0,
                min_buffers: 0,
                resize_threshold: 0,
                ..d()
            },
            PoolConfig {
                start_buffers: 300,
                ..d()
            },
            PoolConfig {
                min_buffers: 17,
                ..d()
            },
            PoolConfig {
                resize_increment: 0,
                ..d()
            },
            PoolConfig {
                resize_threshold: 257,
                ..d()
            },
            PoolConfig {
                sweep_timeout: Duration::ZERO,
                ..d()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(PoolError::InvalidConfig(_))),
                "{bad:?}"
            );
        }
    }
}
