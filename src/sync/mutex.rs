//! A named, process-shared mutex that survives its owner's death.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::name::ServiceName;
use crate::segment::{Access, Segment, SegmentKind, DEFAULT_MODE, READY_WAIT};
use crate::sys::{self, LockFail, LockStatus, MUTEX_STORAGE};

const KIND_VERSION: u32 = 1;

/// A process-shared mutex that survives its owner's death.
///
/// When a process dies while holding the lock, the next locker gets it anyway and is told so
/// ([`Locked::OwnerDied`]), so that it can repair whatever the lock protects. Backends: a
/// futex lock word naming its holder, whose death the kernel reports by dropping a lock the
/// holder keeps on the object (Linux: an open-file-description lock, seen across PID
/// namespaces); a lock word with owner liveness checks (macOS); a named kernel mutex
/// (Windows, `WAIT_ABANDONED`). The state in shared memory is a lock word and the holder's
/// thread number, nothing that points anywhere: whatever a peer writes there, this process
/// writes nowhere but those words (a scribbled lock is taken over or waited for, never
/// followed).
///
/// The lock is held by a thread, not a process: a [`MutexGuard`] cannot be sent to another
/// thread. Locking again from the holding thread is an error ([`Error::WouldDeadlock`]),
/// never a hang.
///
/// # Examples
/// ```
/// use shmlink::{Locked, Mutex};
/// # let name = format!("doc-mutex-{}", std::process::id());
/// let mutex = Mutex::create(&name)?;
/// match mutex.lock()? {
///     Locked::Acquired(_guard) => { /* use the shared state */ }
///     Locked::OwnerDied(_guard) => { /* repair the shared state, then use it */ }
/// }
/// # Ok::<(), shmlink::Error>(())
/// ```
pub struct Mutex {
    raw: sys::RawMutex,
    _segment: Arc<Segment>,
}

/// The address of the `MUTEX_STORAGE` bytes at `offset` of `seg`'s data region, checked to
/// lie inside it.
fn mutex_storage(seg: &Segment, offset: usize) -> Result<*mut u8> {
    seg.data()
        .ptr(offset, sys::MUTEX_STORAGE)
        .ok_or_else(|| Error::Corrupt {
            name: seg.name().into(),
            reason: format!("no mutex fits at offset {offset}"),
        })
}

impl Mutex {
    /// Creates the mutex `name` in a segment of its own.
    ///
    /// # Errors
    /// As [`SegmentBuilder::create`](crate::SegmentBuilder::create).
    pub fn create(name: &str) -> Result<Mutex> {
        Mutex::create_with_mode(name, DEFAULT_MODE)
    }

    /// As [`create`](Self::create), with permission bits `mode` on POSIX (e.g. `0o660` for a
    /// group of users; others open it with [`open_with`](Self::open_with)). Ignored on
    /// Windows.
    ///
    /// # Errors
    /// As [`SegmentBuilder::create`](crate::SegmentBuilder::create).
    pub fn create_with_mode(name: &str, mode: u32) -> Result<Mutex> {
        let seg = Arc::new(
            Segment::builder(name)
                .mode(mode)
                .tag("mutex")
                .kind(SegmentKind::Mutex, KIND_VERSION)
                .size(MUTEX_STORAGE)
                .create_unpublished()?,
        );
        // SAFETY: the data region is MUTEX_STORAGE bytes, 64-aligned, and unpublished.
        let m = unsafe { Mutex::init_at(&seg, 0) }?;
        seg.publish();
        Ok(m)
    }

    /// Opens the mutex `name` created by another process.
    ///
    /// # Errors
    /// As [`Segment::open`].
    pub fn open(name: &str) -> Result<Mutex> {
        Mutex::open_with(name, Access::owner_only())
    }

    /// As [`open`](Self::open), accepting what `access` allows (another user's object, or
    /// one others may write: see [`Access`]).
    ///
    /// # Errors
    /// As [`Segment::open`].
    pub fn open_with(name: &str, access: Access) -> Result<Mutex> {
        let seg = Arc::new(Segment::open_kind_access(
            &ServiceName::new(name)?,
            "mutex",
            SegmentKind::Mutex,
            KIND_VERSION,
            READY_WAIT,
            access,
        )?);
        if seg.len() < MUTEX_STORAGE {
            return Err(Error::Corrupt {
                name: name.into(),
                reason: "mutex segment too small".into(),
            });
        }
        // SAFETY: the creator initialised a mutex at offset 0 before publishing.
        unsafe { Mutex::open_at(&seg, 0) }
    }

    /// Initialises a mutex at `offset` of `seg`'s data region.
    ///
    /// # Safety
    /// `offset..offset + MUTEX_STORAGE` lies in the data region, is 8-aligned, is used for
    /// nothing else, and the segment is not published yet (nobody else uses those bytes).
    pub(crate) unsafe fn init_at(seg: &Arc<Segment>, offset: usize) -> Result<Mutex> {
        let key = format!("{}.m{offset}", seg.os_name());
        let at = mutex_storage(seg, offset)?;
        // SAFETY: `at` is MUTEX_STORAGE bytes inside the mapping (checked); the rest is
        // forwarded from the caller's contract.
        let raw = unsafe { sys::RawMutex::init(at, &key, seg.presence()) }
            .map_err(|e| Error::os("mutex init", seg.name(), e))?;
        Ok(Mutex {
            raw,
            _segment: Arc::clone(seg),
        })
    }

    /// Attaches to a mutex initialised by [`Mutex::init_at`] in another process.
    ///
    /// # Safety
    /// A mutex was initialised at `offset` of the published segment `seg`.
    pub(crate) unsafe fn open_at(seg: &Arc<Segment>, offset: usize) -> Result<Mutex> {
        let key = format!("{}.m{offset}", seg.os_name());
        let at = mutex_storage(seg, offset)?;
        // SAFETY: `at` is MUTEX_STORAGE bytes inside the mapping (checked); the rest is
        // forwarded from the caller's contract.
        let raw = unsafe { sys::RawMutex::open(at, &key, seg.presence()) }
            .map_err(|e| Error::os("mutex open", seg.name(), e))?;
        Ok(Mutex {
            raw,
            _segment: Arc::clone(seg),
        })
    }

    /// Locks, waiting as long as it takes.
    ///
    /// # Errors
    /// [`Error::WouldDeadlock`] if this thread holds it already.
    pub fn lock(&self) -> Result<Locked<'_>> {
        self.finish(self.raw.lock(None))?.ok_or(Error::Timeout)
    }

    /// Locks, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the time runs out; otherwise as [`Mutex::lock`].
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Locked<'_>> {
        self.finish(self.raw.lock(Some(timeout)))?
            .ok_or(Error::Timeout)
    }

    /// Whether a live thread or process holds the lock, without taking it (where the OS
    /// cannot say without taking it, Windows, it is taken and given back at once).
    pub(crate) fn is_held(&self) -> bool {
        self.raw.held()
    }

    /// The pid the holder of the lock recorded, for messages (a peer may have written any
    /// value there); `None` while it is free or its holder has not recorded itself yet.
    pub(crate) fn holder_pid(&self) -> Option<u32> {
        self.raw.holder_pid()
    }

    /// Locks if the mutex is free, or if its holder died (then `Locked::OwnerDied`);
    /// `Ok(None)` if a live thread or process holds it.
    ///
    /// # Errors
    /// As [`Mutex::lock`].
    pub fn try_lock(&self) -> Result<Option<Locked<'_>>> {
        self.finish(self.raw.try_lock())
    }

    fn finish(&self, r: std::result::Result<LockStatus, LockFail>) -> Result<Option<Locked<'_>>> {
        let guard = || MutexGuard {
            mutex: self,
            _not_send: PhantomData,
        };
        match r {
            Ok(LockStatus::Acquired) => Ok(Some(Locked::Acquired(guard()))),
            Ok(LockStatus::OwnerDied) => Ok(Some(Locked::OwnerDied(guard()))),
            Ok(LockStatus::TimedOut) => Ok(None),
            Err(LockFail::WouldDeadlock) => Err(Error::WouldDeadlock),
            Err(LockFail::Os(e)) => Err(Error::os("mutex lock", self._segment.name(), e)),
        }
    }
}

impl fmt::Debug for Mutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex")
            .field("segment", &self._segment.name())
            .finish_non_exhaustive()
    }
}

/// The outcome of a successful lock: how the previous owner left it.
#[must_use = "dropping the guard unlocks at once"]
#[derive(Debug)]
pub enum Locked<'a> {
    /// The previous owner unlocked normally.
    Acquired(MutexGuard<'a>),
    /// The previous owner died holding the lock: the protected state may be half-updated.
    OwnerDied(MutexGuard<'a>),
}

impl<'a> Locked<'a> {
    /// The guard, whichever way it was acquired.
    pub fn into_guard(self) -> MutexGuard<'a> {
        match self {
            Locked::Acquired(g) | Locked::OwnerDied(g) => g,
        }
    }

    /// Whether the previous owner died holding the lock.
    pub fn owner_died(&self) -> bool {
        matches!(self, Locked::OwnerDied(_))
    }
}

/// Holds the lock; unlocks on drop. Not `Send`: the thread that locked must unlock.
pub struct MutexGuard<'a> {
    mutex: &'a Mutex,
    _not_send: PhantomData<*const ()>,
}

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: a guard exists only while this thread holds the lock.
        unsafe { self.mutex.raw.unlock() }
    }
}

impl fmt::Debug for MutexGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexGuard")
            .field("mutex", self.mutex)
            .finish()
    }
}
