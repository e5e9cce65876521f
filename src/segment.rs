//! Named shared segments and the common header every segment starts with.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::name::{ServiceName, MAX_NAME_LEN};
use crate::process::{Member, ProcessId};
use crate::region::{Region, ShmAtomic};
use crate::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use crate::sys;

mod access;
mod stale;
mod survey;

pub use access::Access;
use stale::{check_name, classify, open_shm, remove_if_stale, unlink, Found};
pub(crate) use survey::{survey, Survey, Verdict};
pub(crate) use sys::Perm;

/// `b"shmlink\x01"`: marks objects this crate made. Objects without it are never removed.
const MAGIC: u64 = u64::from_le_bytes(*b"shmlink\x01");
/// Version of the common header layout below, and of what every kind keeps in shared memory
/// beside it (2: lock words holding participants' tags, tokens instead of start times).
pub(crate) const HEADER_VERSION: u32 = 2;
/// Bytes before the data region of every segment (header, padded to a cache-line multiple).
pub(crate) const HEADER_SIZE: usize = 512;
// The hostile-peer tests write behind the header by hand (tests/common/mod.rs).
const _: () = assert!(HEADER_SIZE == 512);
/// How long openers wait for a segment's creator to publish it.
pub(crate) const READY_WAIT: Duration = Duration::from_secs(2);
/// How long removing a name tries the object's cleanup lock (held for microseconds by a
/// healthy remover) before giving up: stale cleanup then fails, `Drop` leaves the name.
const CLEANUP_LOCK_WAIT: Duration = Duration::from_millis(150);
/// Default permission bits: owner read/write only.
pub const DEFAULT_MODE: u32 = 0o600;

/// `Header::state`: set once, in this order.
///
/// | value | meaning |
/// |---|---|
/// | `STATE_EMPTY` (0) | just created (zero-filled), nothing written |
/// | `STATE_INIT` (1) | identity fields written, data being initialised |
/// | `STATE_READY` (2) | published (Release): everything before it is visible (Acquire) |
const STATE_EMPTY: u32 = 0;
const STATE_INIT: u32 = 1;
const STATE_READY: u32 = 2;

/// What a segment holds, recorded in its header so that openers refuse the wrong kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum SegmentKind {
    /// Raw bytes for the caller ([`Segment::builder`]).
    Raw,
    /// A standalone [`Mutex`](crate::Mutex).
    Mutex,
    /// A standalone [`Event`](crate::Event) or [`EventPair`](crate::EventPair).
    Event,
    /// A request channel ([`Server`](crate::Server)).
    Channel,
    /// A buffer pool's index ([`Reader`](crate::Reader)).
    PoolIndex,
    /// One buffer (or extent) of a buffer pool.
    PoolBuffer,
}

impl SegmentKind {
    fn code(self) -> u32 {
        match self {
            SegmentKind::Raw => 1,
            SegmentKind::Mutex => 2,
            SegmentKind::Event => 3,
            SegmentKind::Channel => 4,
            SegmentKind::PoolIndex => 5,
            SegmentKind::PoolBuffer => 6,
        }
    }

    fn describe(code: u32) -> String {
        match code {
            1 => "raw segment".into(),
            2 => "mutex".into(),
            3 => "event".into(),
            4 => "channel".into(),
            5 => "pool index".into(),
            6 => "pool buffer".into(),
            n => format!("segment of unknown kind {n}"),
        }
    }

    /// The tag of the segment that a segment of this kind belongs to, if it belongs to one:
    /// its liveness is then that segment's (of the instance recorded in its header), so it
    /// needs no liveness token, nor an open file, of its own.
    fn parent_tag(code: u32) -> Option<&'static str> {
        (code == SegmentKind::PoolBuffer.code()).then_some(POOL_INDEX_TAG)
    }
}

/// The tag of a buffer pool's index segment.
pub(crate) const POOL_INDEX_TAG: &str = "pool";

/// The common header, at offset 0 of every segment.
///
/// Every field is an atomic: a peer (or a creator still initialising) may write any of them
/// while this process reads. The creator writes everything, then `state` = READY with
/// Release; openers load `state` with Acquire before trusting the other fields, and read
/// each field once.
#[repr(C)]
pub(crate) struct Header {
    /// [`MAGIC`], little-endian.
    magic: AtomicU64,
    header_version: AtomicU32,
    kind: AtomicU32,
    /// The layout version of the kind's own data (e.g. the channel's slot layout).
    kind_version: AtomicU32,
    /// See [`STATE_EMPTY`] and the table there.
    state: AtomicU32,
    /// Total size of the object in bytes, header included.
    size: AtomicU64,
    owner_pid: AtomicU32,
    name_len: AtomicU32,
    owner_start: AtomicU64,
    token: [AtomicU64; 2],
    name: [AtomicU8; MAX_NAME_LEN],
    /// The instance token of the segment this one belongs to (see
    /// [`SegmentKind::parent_tag`]), or zero: such a segment lives as long as that one.
    parent: [AtomicU64; 2],
}

// SAFETY: atomics only; any bit pattern is a valid Header; alignment 8.
unsafe impl ShmAtomic for Header {}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);

/// Options for creating a segment; see [`Segment::builder`].
#[derive(Debug)]
pub struct SegmentBuilder {
    name: std::result::Result<ServiceName, Error>,
    tag: String,
    kind: SegmentKind,
    kind_version: u32,
    size: usize,
    mode: u32,
    group: Option<u32>,
    shared: Option<Perm>,
    parent: [u8; 16],
}

impl SegmentBuilder {
    /// Size of the data region in bytes (the header comes on top).
    pub fn size(mut self, bytes: usize) -> Self {
        self.size = bytes;
        self
    }

    /// Permission bits on POSIX (default `0o600`: owner only). Ignored on Windows, where
    /// objects get the default DACL of the creating process.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// The group the object is given (POSIX; the creator must belong to it), instead of the
    /// creator's effective group.
    pub(crate) fn group(mut self, gid: Option<u32>) -> Self {
        self.group = gid;
        self
    }

    /// The object belongs to a service shared between users with permission `shared`: a
    /// stale object that another participant left under the name is removed too (see
    /// [`Access::shared_service`]).
    pub(crate) fn shared(mut self, shared: Option<Perm>) -> Self {
        self.shared = shared;
        self
    }

    pub(crate) fn kind(mut self, kind: SegmentKind, kind_version: u32) -> Self {
        self.kind = kind;
        self.kind_version = kind_version;
        self
    }

    pub(crate) fn tag(mut self, tag: &str) -> Self {
        self.tag = tag.to_owned();
        self
    }

    /// Records the instance token of the segment this one belongs to (for kinds with a
    /// [`SegmentKind::parent_tag`]): it is judged live exactly while that one is.
    pub(crate) fn parent(mut self, token: [u8; 16]) -> Self {
        self.parent = token;
        self
    }

    /// Creates the segment and publishes it at once (its data region is zero-filled).
    ///
    /// An object left under the name by a dead owner is removed first; one whose creator is
    /// still alive (however slowly it initialises) is not.
    ///
    /// # Errors
    /// [`Error::AlreadyRunning`] if a live process owns the name, [`Error::Foreign`] if an
    /// object of that name was not made by shmlink, [`Error::Squatted`] if the name is taken
    /// by something this user must not touch (another user's object, a symbolic link, a
    /// FIFO, an object writable by others when `mode` does not ask for that, another
    /// service's segment), [`Error::NoSpace`] if the memory cannot be reserved,
    /// [`Error::InvalidName`] for a bad name.
    pub fn create(self) -> Result<Segment> {
        let seg = self.create_unpublished()?;
        seg.publish();
        Ok(seg)
    }

    /// Creates the segment without publishing it: openers wait until [`Segment::publish`].
    /// A segment dropped unpublished is removed.
    pub(crate) fn create_unpublished(self) -> Result<Segment> {
        let name = self.name?;
        let os_name = name.os_name(&self.tag);
        let total = HEADER_SIZE
            .checked_add(self.size)
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or_else(|| Error::NoSpace {
                name: name.to_string(),
                size: self.size,
                source: io::Error::new(io::ErrorKind::InvalidInput, "size overflows"),
            })?;
        // What may stand under our name and be judged (and removed if stale): an object of
        // ours, writable by others only if we are about to make one so.
        let expect = sys::Expect {
            owner: None,
            shared_write: self.mode & 0o022 != 0,
            shared: self.shared,
        };
        // A few rounds: each round either creates, or finds and removes a stale object.
        for _ in 0..8 {
            match sys::Shm::create(&os_name, total, self.mode, self.group) {
                Ok(shm) => {
                    let seg = Segment {
                        data: shm.as_ptr().wrapping_add(HEADER_SIZE),
                        shm,
                        name: name.clone(),
                        os_name: os_name.clone(),
                        owner: true,
                        data_offset: HEADER_SIZE,
                        size: total,
                    };
                    seg.write_header(self.kind, self.kind_version, total, self.parent);
                    return Ok(seg);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    remove_if_stale(&name, &os_name, &expect)?;
                }
                Err(e) if is_no_space(&e) => {
                    return Err(Error::NoSpace {
                        name: name.to_string(),
                        size: total,
                        source: e,
                    })
                }
                Err(e) => return Err(Error::os("shm_open(O_CREAT|O_EXCL)", name.as_str(), e)),
            }
        }
        // Windows cannot remove a name (`unlink_stale` is always false there): an object
        // judged stale every round is a dead owner's, held open by a peer.
        if cfg!(windows) {
            return Err(Error::StillMapped {
                name: name.to_string(),
            });
        }
        Err(Error::Corrupt {
            name: name.to_string(),
            reason: "the object keeps being re-created by another process".into(),
        })
    }
}

fn is_no_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || e.raw_os_error() == Some(28)
}

/// A named shared-memory segment: a common header followed by a data region.
///
/// The process that creates a segment owns it and removes its name when the `Segment` is
/// dropped; openers only unmap. A segment left behind by a crashed owner is detected and
/// replaced by the next `create` of the same name. Dropping never waits for long: if another
/// process keeps the object's cleanup lock, the drop leaves the name, marked as ownerless,
/// for the next `create` to replace.
///
/// # Examples
/// ```
/// use shmlink::Segment;
/// # let name = format!("doc-seg-{}", std::process::id());
/// let seg = Segment::builder(&name).size(4096).create()?;
/// let peer = Segment::open(&name)?;           // usually in another process
/// assert_eq!(peer.len(), 4096);
/// assert_eq!(peer.token(), seg.token());
/// # Ok::<(), shmlink::Error>(())
/// ```
pub struct Segment {
    shm: sys::Shm,
    name: ServiceName,
    os_name: String,
    owner: bool,
    data_offset: usize,
    /// Start of the data region: the mapping's base plus `data_offset`, kept so that
    /// [`as_ptr`](Segment::as_ptr), which hot paths call, is one load.
    data: *mut u8,
    /// Bytes of the object in use, header included: the size it was created with. The
    /// mapping can be larger (by less than `sys::SIZE_ROUNDING`) where the OS reports sizes
    /// in whole pages (macOS, Windows).
    size: usize,
}

// SAFETY: the mapping is plain shared memory; access to its contents goes through raw
// pointers whose users synchronise (atomics, the shared mutex).
unsafe impl Send for Segment {}
// SAFETY: as above; `Segment`'s own fields are immutable after construction.
unsafe impl Sync for Segment {}

impl Segment {
    /// Starts building a raw segment named `name`.
    pub fn builder(name: &str) -> SegmentBuilder {
        SegmentBuilder {
            name: ServiceName::new(name),
            tag: "seg".into(),
            kind: SegmentKind::Raw,
            kind_version: 1,
            size: 0,
            mode: DEFAULT_MODE,
            group: None,
            shared: None,
            parent: [0; 16],
        }
    }

    /// Opens the raw segment `name` created by another process.
    ///
    /// The object must be a regular file owned by this process's effective uid and not
    /// writable by group or others (no symbolic link is followed, and opening a FIFO put under
    /// the name does not block), and its header must name the service `name`.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::PermissionDenied`], [`Error::Foreign`],
    /// [`Error::Squatted`] (see above), [`Error::VersionMismatch`], [`Error::WrongKind`],
    /// [`Error::Corrupt`] (truncated), [`Error::NotReady`] if its creator does not publish it
    /// within 2 s.
    pub fn open(name: &str) -> Result<Segment> {
        Self::open_kind(&ServiceName::new(name)?, "seg", SegmentKind::Raw, 1)
    }

    /// Removes the segment `name` if it exists and its owner is dead (or `force`).
    /// Objects not made by shmlink are never removed. Returns whether something was removed.
    ///
    /// # Errors
    /// [`Error::AlreadyRunning`] if its owner is alive and `force` is false;
    /// [`Error::Foreign`] or [`Error::Squatted`] if it is not ours; [`Error::Os`] if another
    /// process keeps its cleanup lock for longer than a short bound.
    pub fn remove(name: &str, force: bool) -> Result<bool> {
        let name = ServiceName::new(name)?;
        Self::remove_tagged(&name, "seg", force)
    }

    pub(crate) fn remove_tagged(name: &ServiceName, tag: &str, force: bool) -> Result<bool> {
        Self::remove_tagged_with(name, tag, force, None)
    }

    /// As [`remove_tagged`](Self::remove_tagged), also removing an object of another
    /// participant of the service shared between users with permission `shared` (see
    /// [`Access::shared_service`]). Where the OS lets only an object's owner remove its name
    /// (a sticky /dev/shm), a process that is neither that owner nor privileged fails.
    pub(crate) fn remove_tagged_with(
        name: &ServiceName,
        tag: &str,
        force: bool,
        shared: Option<Perm>,
    ) -> Result<bool> {
        let os_name = name.os_name(tag);
        // Removing never uses the object, so one of ours that others may write is still ours
        // to remove; another owner's object (unless a shared service's), a link or a FIFO is
        // not.
        let expect = sys::Expect {
            owner: None,
            shared_write: true,
            shared,
        };
        let shm = match open_shm(name, &os_name, &expect) {
            Ok(shm) => shm,
            Err(Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let shm = match classify(name, &os_name, &expect, shm)? {
            Found::Live(pid) if !force => {
                return Err(Error::AlreadyRunning {
                    name: name.to_string(),
                    pid,
                })
            }
            Found::Live(_) => open_shm(name, &os_name, &expect)?,
            Found::Stale(shm) => shm,
        };
        unlink(name, &os_name, &shm)
    }

    pub(crate) fn open_kind(
        name: &ServiceName,
        tag: &str,
        kind: SegmentKind,
        kind_version: u32,
    ) -> Result<Segment> {
        Self::open_kind_timeout(name, tag, kind, kind_version, READY_WAIT)
    }

    pub(crate) fn open_kind_timeout(
        name: &ServiceName,
        tag: &str,
        kind: SegmentKind,
        kind_version: u32,
        ready_wait: Duration,
    ) -> Result<Segment> {
        let expect = sys::Expect::default();
        Self::open_kind_expect(name, tag, kind, kind_version, ready_wait, &expect)
    }

    /// As [`open_kind_timeout`](Self::open_kind_timeout), for objects `access` accepts.
    pub(crate) fn open_kind_access(
        name: &ServiceName,
        tag: &str,
        kind: SegmentKind,
        kind_version: u32,
        ready_wait: Duration,
        access: Access,
    ) -> Result<Segment> {
        Self::open_kind_expect(name, tag, kind, kind_version, ready_wait, &access.expect)
    }

    /// Opens a segment whose object `expect` allows (another owner, write access for others:
    /// a service shared between users).
    pub(crate) fn open_kind_expect(
        name: &ServiceName,
        tag: &str,
        kind: SegmentKind,
        kind_version: u32,
        ready_wait: Duration,
        expect: &sys::Expect,
    ) -> Result<Segment> {
        let os_name = name.os_name(tag);
        let start = Instant::now();
        loop {
            let shm = open_shm(name, &os_name, expect)?;
            let size = shm.len();
            let mut seg = Segment {
                data: shm.as_ptr().wrapping_add(HEADER_SIZE),
                shm,
                name: name.clone(),
                os_name: os_name.clone(),
                owner: false,
                data_offset: HEADER_SIZE,
                size,
            };
            match seg.check_header(kind, kind_version) {
                Err(Error::NotReady { .. }) if start.elapsed() < ready_wait => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => return Err(e),
                Ok(size) => {
                    seg.size = size;
                    return Ok(seg);
                }
            }
        }
    }

    /// The object's permission bits and group (`None` on Windows, where a DACL decides).
    pub(crate) fn perm(&self) -> Option<Perm> {
        self.shm.perm()
    }

    /// The whole mapping (header and data region) as a region.
    fn region(&self) -> Region<'_> {
        shm_region(&self.shm)
    }

    fn header(&self) -> &Header {
        // Every Segment maps at least HEADER_SIZE bytes: checked before one is handed out,
        // or created so.
        self.region().at::<Header>(0)
    }

    /// The data region (after the header): the only way the crate's other modules reach a
    /// segment's memory.
    pub(crate) fn data(&self) -> Region<'_> {
        self.region()
            .sub(self.data_offset, self.len())
            .expect("the data region lies inside the mapping")
    }

    fn write_header(&self, kind: SegmentKind, kind_version: u32, total: usize, parent: [u8; 16]) {
        let me = ProcessId::current();
        let token = uuid::Uuid::new_v4().into_bytes();
        let h = self.header();
        let name = self.name.as_str().as_bytes();
        // Nobody trusts these fields before `state` says READY (published with Release).
        h.owner_pid.store(me.pid(), Ordering::Relaxed);
        h.owner_start.store(me.start_time(), Ordering::Relaxed);
        h.header_version.store(HEADER_VERSION, Ordering::Relaxed);
        h.kind.store(kind.code(), Ordering::Relaxed);
        h.kind_version.store(kind_version, Ordering::Relaxed);
        h.size.store(total as u64, Ordering::Relaxed);
        store_token(&h.token, token);
        store_token(&h.parent, parent);
        h.name_len.store(name.len() as u32, Ordering::Relaxed);
        for (cell, &b) in h.name.iter().zip(name) {
            cell.store(b, Ordering::Relaxed);
        }
        h.state.store(STATE_INIT, Ordering::Release);
        h.magic.store(MAGIC, Ordering::Release);
    }

    /// Makes a segment from `create_unpublished` visible to openers. Everything written
    /// before is visible to them (Release / Acquire on the state word).
    pub(crate) fn publish(&self) {
        self.header().state.store(STATE_READY, Ordering::Release);
    }

    /// Validates the header; returns the object's size it records (checked against the
    /// mapping: equal, or at most `sys::SIZE_ROUNDING - 1` bytes less).
    fn check_header(&self, kind: SegmentKind, kind_version: u32) -> Result<usize> {
        let name = || self.name.to_string();
        if self.shm.len() < HEADER_SIZE {
            if self.shm.len() == 0 {
                return Err(Error::NotReady { name: name() });
            }
            return Err(Error::Corrupt {
                name: name(),
                reason: format!(
                    "{} bytes, smaller than the {HEADER_SIZE}-byte header",
                    self.shm.len()
                ),
            });
        }
        let h = self.header();
        let magic = h.magic.load(Ordering::Acquire);
        if magic != MAGIC {
            if magic == 0 && h.state.load(Ordering::Acquire) == STATE_EMPTY {
                return Err(Error::NotReady { name: name() });
            }
            return Err(Error::Foreign { name: name() });
        }
        // Nothing else is trusted before READY is seen (Acquire pairs with `publish`).
        if h.state.load(Ordering::Acquire) != STATE_READY {
            return Err(Error::NotReady { name: name() });
        }
        let version = h.header_version.load(Ordering::Relaxed);
        if version != HEADER_VERSION {
            return Err(Error::VersionMismatch {
                name: name(),
                found: version,
                expected: HEADER_VERSION,
            });
        }
        check_name(h, &self.name, &self.shm)?;
        let found_kind = h.kind.load(Ordering::Relaxed);
        if found_kind != kind.code() {
            return Err(Error::WrongKind {
                name: name(),
                found: SegmentKind::describe(found_kind),
                expected: SegmentKind::describe(kind.code()),
            });
        }
        let found_version = h.kind_version.load(Ordering::Relaxed);
        if found_version != kind_version {
            return Err(Error::VersionMismatch {
                name: name(),
                found: found_version,
                expected: kind_version,
            });
        }
        // Read once: the header is shared memory that a peer could change under us.
        let size = h.size.load(Ordering::Relaxed);
        let mapped = self.shm.len() as u64;
        if size > mapped || mapped - size >= sys::SIZE_ROUNDING as u64 || size < HEADER_SIZE as u64
        {
            return Err(Error::Corrupt {
                name: name(),
                reason: format!("header says {size} bytes, object has {mapped}"),
            });
        }
        Ok(size as usize)
    }

    /// The service name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The OS object name (e.g. `/shmlink.demo.seg`).
    pub fn os_name(&self) -> &str {
        &self.os_name
    }

    /// Start of the data region (after the header), aligned to 64 bytes.
    ///
    /// The region is shared with other processes: reading or writing it needs the same care
    /// as any memory shared between threads (atomics, or a [`Mutex`](crate::Mutex)).
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.data
    }

    /// Length of the data region in bytes.
    pub fn len(&self) -> usize {
        self.size - self.data_offset
    }

    /// Whether the data region is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The random token written at creation: differs between two incarnations of a name.
    pub fn token(&self) -> [u8; 16] {
        load_token(&self.header().token)
    }

    /// The instance token of the segment this one belongs to (zeros if none).
    pub(crate) fn parent(&self) -> [u8; 16] {
        load_token(&self.header().parent)
    }

    /// The process that owns the segment (its creator, or a process that took it over).
    pub fn owner(&self) -> ProcessId {
        let h = self.header();
        ProcessId::from_raw(
            h.owner_pid.load(Ordering::Acquire),
            h.owner_start.load(Ordering::Acquire),
        )
    }

    /// Whether this handle created the segment (and removes it on drop).
    pub fn is_owner(&self) -> bool {
        self.owner
    }

    /// Whether the segment's owner (its creator, or the process that took it over) is
    /// alive: judged by its liveness token where the OS has one (Linux: in any PID
    /// namespace), else by its recorded identity; "cannot tell" counts as alive.
    pub(crate) fn owner_alive(&self) -> bool {
        if self.owner {
            return true;
        }
        match self.shm.token() {
            sys::Token::Held => true,
            sys::Token::Free => false,
            sys::Token::Unknown => self.owner().is_alive(),
        }
    }

    /// This process's record as a participant in the segment (a slot owner, a Writer),
    /// which others check with [`is_alive`](Segment::is_alive). Claims this handle's proof
    /// of life on first use (see `sys::Presence`).
    pub(crate) fn member(&self) -> Result<Member> {
        self.presence()
            .me()
            .map_err(|e| Error::os("liveness tag", self.name(), e))
    }

    /// Whether the participant recorded as `m` (by [`member`](Segment::member), in any
    /// process's handle on this object) is alive; "cannot tell" counts as alive.
    pub(crate) fn is_alive(&self, m: Member) -> bool {
        self.shm
            .presence()
            .is_none_or(|p| p.alive(m) != sys::Liveness::Dead)
    }

    /// The proof of life of this handle, for the locks placed in the segment.
    pub(crate) fn presence(&self) -> &Arc<sys::Presence> {
        self.shm
            .presence()
            .expect("only segments of kinds without locks or members are detached")
    }

    /// Makes this process the owner (the pool adopts a dead Reader's index this way): it will
    /// remove the name on drop and liveness checks now follow this process.
    pub(crate) fn take_over(&mut self) {
        self.record_owner();
        self.owner = true;
    }

    /// Records this process as the owner, for liveness checks and messages, without making
    /// this handle remove the name on drop. Callers hold whatever election makes them the
    /// owner (the pool's alive lock) before calling it.
    pub(crate) fn record_owner(&self) {
        let me = ProcessId::current();
        let h = self.header();
        h.owner_start.store(me.start_time(), Ordering::Release);
        h.owner_pid.store(me.pid(), Ordering::Release);
        // The dead owner's token went with it; the caller's election made us its heir.
        let _ = self.shm.take_token();
    }

    /// Closes this handle's file descriptor, keeping the mapping: a process may map any
    /// number of such segments without holding a descriptor for each. Only for kinds with a
    /// [`SegmentKind::parent_tag`] (whose liveness is their parent's), as the handle loses
    /// what needs the descriptor: its liveness token and participants' records. Removing
    /// the name on drop reopens it for the moment it takes.
    pub(crate) fn detach(&mut self) {
        debug_assert!(
            SegmentKind::parent_tag(self.header().kind.load(Ordering::Relaxed)).is_some()
        );
        self.shm.detach();
    }

    /// Stops this handle from removing the name on drop.
    pub(crate) fn disown(&mut self) {
        self.owner = false;
    }
}

fn store_token(words: &[AtomicU64; 2], token: [u8; 16]) {
    for (word, bytes) in words.iter().zip(token.chunks_exact(8)) {
        word.store(
            u64::from_le_bytes(bytes.try_into().expect("8 bytes")),
            Ordering::Relaxed,
        );
    }
}

fn load_token(words: &[AtomicU64; 2]) -> [u8; 16] {
    let mut token = [0u8; 16];
    for (bytes, word) in token.chunks_exact_mut(8).zip(words) {
        bytes.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
    }
    token
}

/// The whole mapping of `shm` as a region.
fn shm_region(shm: &sys::Shm) -> Region<'_> {
    // SAFETY: `Shm` maps `len()` bytes read-write, page-aligned, for as long as it lives, and
    // the region borrows it; this crate never creates a `&mut` over mapped memory.
    unsafe { Region::new(shm.as_ptr(), shm.len()) }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.owner && unlink(&self.name, &self.os_name, &self.shm).is_err() {
            // Gave up rather than wait (another process keeps the cleanup lock): the name
            // stays. Record that its owner is gone, so the next `create` finds it stale even
            // while this process lives on (our liveness token goes with our mapping).
            let h = self.header();
            h.owner_pid.store(0, Ordering::Release);
            h.owner_start.store(0, Ordering::Release);
        }
    }
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("os_name", &self.os_name)
            .field("len", &self.len())
            .field("owner", &self.owner)
            .finish()
    }
}
