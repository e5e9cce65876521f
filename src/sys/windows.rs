//! Windows backend: pagefile-backed named sections, named kernel mutexes (an abandoned mutex
//! means its owner died), named auto-reset events, and process handles for liveness.
//!
//! Every object lives in the session-local namespace (`Local\`) and is created with a null
//! `SECURITY_ATTRIBUTES`, i.e. the default DACL of the creating process's token (the user,
//! SYSTEM and Administrators), which is Windows' equivalent of our POSIX `0600`. Named kernel
//! objects vanish with their last handle, so nothing a crashed process made outlives it.
//!
//! `WaitOnAddress` only works between threads of one process, so waits use one named event
//! per word instead (see [`Waiter`]).
//!
//! What vanishing with the last handle means above this module: a name cannot be removed
//! while anyone has the object open, so re-creating a dead owner's name fails while a peer
//! still maps it (`Error::StillMapped`; the pool adopts the index instead); a buffer only a
//! dead process held is gone with the messages in it; and a buffer a Writer created (grew)
//! must be mapped by the Reader before that Writer may exit (`Writer::send` waits for it).
//! These run under Wine in CI (`../shared/tools/wine-test.sh`).

use std::ffi::OsStr;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, ERROR_ALREADY_EXISTS, ERROR_COMMITMENT_LIMIT,
    ERROR_INVALID_PARAMETER, ERROR_NOT_ENOUGH_MEMORY, ERROR_OUTOFMEMORY, FILETIME, HANDLE,
    INVALID_HANDLE_VALUE, STILL_ACTIVE, WAIT_ABANDONED, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFile, OpenFileMappingW, UnmapViewOfFile, VirtualQuery,
    FILE_MAP_READ, FILE_MAP_WRITE, MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS,
    PAGE_READWRITE, SEC_COMMIT,
};
use windows_sys::Win32::System::Threading::{
    CreateEventExW, CreateMutexExW, GetCurrentProcessorNumber, GetCurrentThreadId,
    GetExitCodeProcess, GetProcessTimes, OpenProcess, ReleaseMutex, SetEvent, WaitForSingleObject,
    EVENT_MODIFY_STATE, INFINITE, MUTEX_MODIFY_STATE, PROCESS_QUERY_LIMITED_INFORMATION,
    SYNCHRONIZATION_SYNCHRONIZE,
};

use super::{Liveness, LockFail, LockStatus, Member, Process, MUTEX_STORAGE};

/// Session-local kernel object namespace.
pub(crate) const OS_NAME_PREFIX: &str = "Local\\";
/// Kernel object names are limited to MAX_PATH (260) characters; mutex and event names add
/// a `.m<offset>` / `.e<offset>` suffix to their segment's name, so leave room for it.
pub(crate) const MAX_OS_NAME: usize = 240;
/// Sections are made of whole pages, and Windows cannot tell an opener a pagefile-backed
/// section's exact size (`VirtualQuery` and `NtQuerySection` both report it in pages), so an
/// opened section may look up to a page larger than its creator asked for. 64 KiB covers any
/// page size (and the allocation granularity).
pub(crate) const SIZE_ROUNDING: usize = 64 * 1024;

/// `name` as a NUL-terminated UTF-16 string for the `...W` functions.
fn wide(name: &str) -> io::Result<Vec<u16>> {
    if name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "object name contains NUL",
        ));
    }
    Ok(OsStr::new(name)
        .encode_wide()
        .chain(std::iter::once(0))
        .collect())
}

/// A handle we own, closed on drop. Null means "none".
#[derive(Debug)]
struct OwnedHandle(HANDLE);

impl OwnedHandle {
    /// Takes ownership of the result of a `Create*`/`Open*` call that returns null on failure.
    fn from_result(h: HANDLE) -> io::Result<OwnedHandle> {
        if h.is_null() {
            Err(io::Error::last_os_error())
        } else {
            Ok(OwnedHandle(h))
        }
    }
}

impl Drop for OwnedHandle {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: we own the handle (it came from a successful Create*/Open* call) and
            // nothing uses it after drop.
            unsafe { CloseHandle(self.0) };
        }
    }
}

// SAFETY: kernel object handles are process-wide values usable from any thread.
unsafe impl Send for OwnedHandle {}
// SAFETY: as above; the functions we call on them are thread-safe.
unsafe impl Sync for OwnedHandle {}

/// Milliseconds for `WaitForSingleObject`: `INFINITE` for `None`, sub-millisecond timeouts
/// rounded up (so a short timeout does not become a busy poll), capped below `INFINITE`.
fn wait_ms(timeout: Option<Duration>) -> u32 {
    match timeout {
        None => INFINITE,
        Some(t) => {
            let ms = t.as_nanos().div_ceil(1_000_000);
            u32::try_from(ms).unwrap_or(INFINITE - 1).min(INFINITE - 1)
        }
    }
}

// ------------------------------------------------------------------------- shared memory

/// A mapped view of a named, pagefile-backed section.
#[derive(Debug)]
pub(crate) struct Shm {
    base: *mut u8,
    len: usize,
    /// Keeps the section alive (closed on drop, after the view is unmapped).
    _section: OwnedHandle,
    presence: Arc<Presence>,
}

/// This process's proof of life in a section: its pid and creation time, checked through a
/// process handle (see the contract in `sys/mod.rs`).
#[derive(Debug, Default)]
pub(crate) struct Presence;

impl Presence {
    /// This process's record: its pid and creation time.
    pub(crate) fn me(&self) -> io::Result<Member> {
        let pid = current_pid();
        match start_time(pid) {
            Process::Running(start) => Ok(Member { pid, token: start }),
            _ => Err(io::Error::other("cannot read this process's creation time")),
        }
    }

    /// Whether the process recorded as `m` is alive (or cannot be inspected).
    pub(crate) fn alive(&self, m: Member) -> Liveness {
        match start_time(m.pid) {
            Process::Running(start) if start == m.token => Liveness::Alive,
            Process::Running(_) | Process::Gone => Liveness::Dead,
            Process::Hidden => Liveness::Unknown,
        }
    }
}

// SAFETY: the view is plain shared memory valid until drop; users synchronise their accesses.
unsafe impl Send for Shm {}
// SAFETY: as above; `Shm`'s own fields are immutable after construction.
unsafe impl Sync for Shm {}

impl Shm {
    /// Creates the section `os_name` exclusively, `size` bytes, committed and zero-filled.
    ///
    /// `SEC_COMMIT` charges the whole size against the system commit limit now, so a full
    /// pagefile fails here (as `StorageFull`) instead of faulting later. `_mode` and `_group`
    /// are ignored: the section gets the default DACL of the calling process (owner-only in
    /// practice).
    #[doc(alias = "CreateFileMappingW")]
    pub(crate) fn create(
        os_name: &str,
        size: usize,
        _mode: u32,
        _group: Option<u32>,
    ) -> io::Result<Shm> {
        let name = wide(os_name)?;
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a section cannot be empty",
            ));
        }
        let size64 = size as u64;
        // SAFETY: `name` is NUL-terminated and outlives the call; a null SECURITY_ATTRIBUTES
        // means the default security descriptor; INVALID_HANDLE_VALUE asks for a section
        // backed by the pagefile.
        let h = unsafe {
            CreateFileMappingW(
                INVALID_HANDLE_VALUE,
                ptr::null(),
                PAGE_READWRITE | SEC_COMMIT,
                (size64 >> 32) as u32,
                size64 as u32,
                name.as_ptr(),
            )
        };
        if h.is_null() {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error().map(|c| c as u32) {
                Some(ERROR_COMMITMENT_LIMIT | ERROR_NOT_ENOUGH_MEMORY | ERROR_OUTOFMEMORY) => {
                    io::Error::new(io::ErrorKind::StorageFull, e)
                }
                _ => e,
            });
        }
        // SAFETY: GetLastError has no preconditions; CreateFileMappingW sets it to
        // ERROR_ALREADY_EXISTS when it returned a handle to an existing section (and 0
        // otherwise).
        let existed = unsafe { GetLastError() } == ERROR_ALREADY_EXISTS;
        let section = OwnedHandle(h);
        if existed {
            return Err(io::Error::from_raw_os_error(ERROR_ALREADY_EXISTS as i32));
        }
        let (base, _) = map(&section)?;
        Ok(Shm {
            base,
            len: size,
            _section: section,
            presence: Arc::default(),
        })
    }

    /// Opens and maps an existing section. Its length is what `VirtualQuery` reports: the
    /// creator's size rounded up to whole pages (see [`SIZE_ROUNDING`]).
    ///
    /// `_expect` has nothing to check here: named sections live in the object manager's
    /// session namespace, which holds no symbolic links, FIFOs or files under our names, and
    /// who may open a section is decided by its DACL (the creator's default: owner-only).
    #[doc(alias = "OpenFileMappingW")]
    pub(crate) fn open(os_name: &str, _expect: &super::Expect) -> Result<Shm, super::OpenError> {
        Ok(Self::open_section(os_name)?)
    }

    fn open_section(os_name: &str) -> io::Result<Shm> {
        let name = wide(os_name)?;
        // SAFETY: `name` is NUL-terminated and outlives the call. Read + write access is all
        // we need, so a DACL granting only that suffices.
        let h = unsafe { OpenFileMappingW(FILE_MAP_READ | FILE_MAP_WRITE, 0, name.as_ptr()) };
        let section = OwnedHandle::from_result(h)?;
        let (base, len) = map(&section)?;
        Ok(Shm {
            base,
            len,
            _section: section,
            presence: Arc::default(),
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.base
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Windows removes a section when its last handle closes, so there is never a stale
    /// object to remove (and no way to remove a name others still hold open): returns
    /// `Ok(false)`.
    pub(crate) fn unlink_stale(_os_name: &str, _stale: &Shm, _wait: Duration) -> io::Result<bool> {
        Ok(false)
    }

    /// This process's proof of life in the section.
    pub(crate) fn presence(&self) -> Option<&Arc<Presence>> {
        Some(&self.presence)
    }

    /// Keeps the section handle: a process's handles are not a scarce resource (millions
    /// are allowed), and liveness here never rests on them.
    pub(crate) fn detach(&mut self) {}

    /// Sections carry no owner uid.
    pub(crate) fn owner_uid(&self) -> Option<u32> {
        None
    }

    /// Sections carry no permission bits or group (their DACL decides).
    pub(crate) fn perm(&self) -> Option<super::Perm> {
        None
    }

    /// No liveness token: a section vanishes with its last handle, so a section that exists
    /// is in use; the header decides the rest.
    pub(crate) fn token(&self) -> super::Token {
        super::Token::Unknown
    }

    /// No liveness token (see [`Shm::token`]).
    pub(crate) fn take_token(&self) -> bool {
        false
    }
}

/// Maps all of `section` read-write; returns the view and its size in whole pages.
#[doc(alias = "MapViewOfFile")]
fn map(section: &OwnedHandle) -> io::Result<(*mut u8, usize)> {
    // SAFETY: `section` is a valid section handle opened with read/write access; offset 0
    // and size 0 map the whole section.
    let view = unsafe { MapViewOfFile(section.0, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, 0) };
    if view.Value.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: MEMORY_BASIC_INFORMATION is plain data, valid when zeroed.
    let mut info: MEMORY_BASIC_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: `view.Value` is the base of the view just mapped and `info` is writable for
    // its full size.
    let n = unsafe {
        VirtualQuery(
            view.Value,
            &mut info,
            std::mem::size_of::<MEMORY_BASIC_INFORMATION>(),
        )
    };
    if n == 0 {
        let e = io::Error::last_os_error();
        // SAFETY: the view was mapped above and nothing else refers to it.
        unsafe { UnmapViewOfFile(view) };
        return Err(e);
    }
    // A committed SEC_COMMIT view has uniform attributes, so the region starting at the
    // base is the whole view.
    Ok((view.Value.cast::<u8>(), info.RegionSize))
}

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: `base` is the base address of a view mapped in `map` and not yet unmapped;
        // nobody uses it after the `Shm` is gone (users borrow from it). The section handle
        // closes after this, through `OwnedHandle`'s drop.
        unsafe {
            UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS {
                Value: self.base.cast(),
            })
        };
    }
}

// ---------------------------------------------------------------------------------- mutex

/// What the mutex keeps in its `MUTEX_STORAGE` bytes of shared memory: the holder's thread
/// id and process id. Windows mutexes are recursive; the thread id lets us refuse a relock
/// from the holding thread (`WouldDeadlock`) as the other backends do, and notice an owner
/// death the kernel could not report (see [`RawMutex::lock`]). The process id is only read
/// for messages (`holder_pid`).
///
/// | `holder_tid` | meaning |
/// |---|---|
/// | `NO_HOLDER` (0) | free, or held by a thread that has not recorded itself yet |
/// | other | the thread (system-wide id) that holds the lock |
#[repr(C)]
struct LockInfo {
    holder_tid: AtomicU32,
    /// The holder's pid, same lifetime as `holder_tid`; 0 while not known.
    holder_pid: AtomicU32,
}

/// Thread ids are never 0 on Windows.
const NO_HOLDER: u32 = 0;

const _: () = assert!(std::mem::size_of::<LockInfo>() <= MUTEX_STORAGE);

/// A named kernel mutex (`<key>`, e.g. `Local\shmlink.x.mutex.m0`).
///
/// The kernel reports a mutex whose owning thread ended without releasing it as abandoned
/// (`WAIT_ABANDONED`) and hands it to the next waiter: that is [`LockStatus::OwnerDied`].
#[derive(Debug)]
pub(crate) struct RawMutex {
    handle: OwnedHandle,
    info: *const LockInfo,
}

// SAFETY: the mutex handle can be waited on and released from any thread (the kernel tracks
// the owning thread); `info` points into a shared mapping the owner of `RawMutex` keeps alive
// and is only accessed through atomics.
unsafe impl Send for RawMutex {}
// SAFETY: as above.
unsafe impl Sync for RawMutex {}

impl RawMutex {
    /// Creates (or opens) the kernel mutex named `key` and clears the holder record.
    ///
    /// # Safety
    /// `storage` points to `MUTEX_STORAGE` writable bytes, 8-aligned, in a shared mapping
    /// that outlives the returned value, and no other process uses them yet.
    #[doc(alias = "CreateMutexExW")]
    pub(crate) unsafe fn init(
        storage: *mut u8,
        key: &str,
        _presence: &Arc<Presence>,
    ) -> io::Result<Self> {
        let info = storage.cast::<LockInfo>();
        // SAFETY: the caller guarantees the bytes are ours to write, aligned and large enough.
        unsafe {
            info.write(LockInfo {
                holder_tid: AtomicU32::new(NO_HOLDER),
                holder_pid: AtomicU32::new(0),
            })
        };
        Ok(RawMutex {
            handle: named_mutex(key)?,
            info,
        })
    }

    /// Attaches to the mutex another process initialised.
    ///
    /// Creating rather than only opening the kernel object matters: if every handle to it
    /// was closed (its last holder died), the name is gone and a fresh mutex is made; a
    /// holder record left behind then reports the death on the next lock.
    ///
    /// # Safety
    /// `storage` points to a mutex made by [`RawMutex::init`] in a shared mapping that
    /// outlives the returned value.
    pub(crate) unsafe fn open(
        storage: *mut u8,
        key: &str,
        _presence: &Arc<Presence>,
    ) -> io::Result<Self> {
        Ok(RawMutex {
            handle: named_mutex(key)?,
            info: storage.cast::<LockInfo>(),
        })
    }

    fn info(&self) -> &LockInfo {
        // SAFETY: `info` points into a live shared mapping (constructor contract); the
        // field is atomic, so concurrent access from other processes is fine.
        unsafe { &*self.info }
    }

    /// Locks, waiting at most `timeout` (`None`: forever).
    pub(crate) fn lock(&self, timeout: Option<Duration>) -> Result<LockStatus, LockFail> {
        if let Some(status) = self.check_relock()? {
            return Ok(status);
        }
        let deadline = super::deadline_after(timeout);
        loop {
            let ms = match deadline {
                None if timeout.is_some() => INFINITE - 1, // deadline overflowed: "very long"
                None => INFINITE,
                Some(d) => wait_ms(Some(d.saturating_duration_since(Instant::now()))),
            };
            // SAFETY: the handle is a valid mutex handle with SYNCHRONIZE access.
            let r = unsafe { WaitForSingleObject(self.handle.0, ms) };
            match r {
                WAIT_TIMEOUT if deadline.is_none_or(|d| Instant::now() < d) => continue, // capped wait
                _ => return self.status(r),
            }
        }
    }

    /// Locks if free, without waiting.
    pub(crate) fn try_lock(&self) -> Result<LockStatus, LockFail> {
        if let Some(status) = self.check_relock()? {
            return Ok(status);
        }
        // SAFETY: as in `lock`.
        let r = unsafe { WaitForSingleObject(self.handle.0, 0) };
        self.status(r)
    }

    /// The pid the holder recorded: for messages only (any value a peer wrote); `None` while
    /// the lock is free or its holder has not recorded itself yet.
    pub(crate) fn holder_pid(&self) -> Option<u32> {
        let info = self.info();
        if info.holder_tid.load(Ordering::Acquire) == NO_HOLDER {
            return None;
        }
        Some(info.holder_pid.load(Ordering::Relaxed)).filter(|&p| p != 0)
    }

    /// Whether a live thread holds the lock: a zero-timeout wait that, if it gets the lock
    /// (free, or abandoned by a dead holder), gives it back at once.
    pub(crate) fn held(&self) -> bool {
        match self.try_lock() {
            Ok(LockStatus::TimedOut) | Err(LockFail::WouldDeadlock) => true,
            Ok(_) => {
                // SAFETY: the try_lock above made this thread the holder.
                unsafe { self.unlock() };
                false
            }
            Err(LockFail::Os(_)) => false,
        }
    }

    /// A Windows mutex would let its holder lock again (recursively). If the record says
    /// this thread holds it, probe: a zero-timeout wait succeeds at once if we really own it
    /// (undo that extra level and refuse), or finds it abandoned by a dead thread whose id
    /// this thread inherited (then we now hold it). `None`: go on and wait normally.
    fn check_relock(&self) -> Result<Option<LockStatus>, LockFail> {
        // SAFETY: GetCurrentThreadId has no preconditions.
        let me = unsafe { GetCurrentThreadId() };
        if self.info().holder_tid.load(Ordering::Relaxed) != me {
            return Ok(None);
        }
        // SAFETY: as in `lock`.
        match unsafe { WaitForSingleObject(self.handle.0, 0) } {
            WAIT_OBJECT_0 => {
                // SAFETY: the wait just succeeded, so this thread owns the mutex (once more).
                unsafe { ReleaseMutex(self.handle.0) };
                Err(LockFail::WouldDeadlock)
            }
            WAIT_TIMEOUT => Ok(None),
            r => self.status(r).map(Some),
        }
    }

    /// Turns a wait result into a lock outcome, recording this thread as the holder.
    fn status(&self, r: u32) -> Result<LockStatus, LockFail> {
        let status = match r {
            WAIT_OBJECT_0 => LockStatus::Acquired,
            WAIT_ABANDONED => LockStatus::OwnerDied,
            WAIT_TIMEOUT => return Ok(LockStatus::TimedOut),
            _ => return Err(LockFail::Os(io::Error::last_os_error())),
        };
        // SAFETY: GetCurrentThreadId has no preconditions.
        let me = unsafe { GetCurrentThreadId() };
        // A normal unlock clears the record before releasing, so a record still set means
        // its holder ended without unlocking while the kernel object was re-created (every
        // handle to the old one had closed): the owner died all the same.
        let previous = self.info().holder_tid.swap(me, Ordering::AcqRel);
        self.info()
            .holder_pid
            .store(current_pid(), Ordering::Relaxed);
        if previous != NO_HOLDER && status == LockStatus::Acquired {
            return Ok(LockStatus::OwnerDied);
        }
        Ok(status)
    }

    /// Unlocks.
    ///
    /// # Safety
    /// The calling thread holds the lock.
    #[doc(alias = "ReleaseMutex")]
    pub(crate) unsafe fn unlock(&self) {
        self.info().holder_pid.store(0, Ordering::Relaxed);
        self.info().holder_tid.store(NO_HOLDER, Ordering::Release);
        // SAFETY: the caller's thread owns the mutex, which is what ReleaseMutex requires.
        let ok = unsafe { ReleaseMutex(self.handle.0) };
        debug_assert!(ok != 0, "ReleaseMutex: {}", io::Error::last_os_error());
    }
}

/// Creates or opens the named mutex `key`, not owned, with only the rights we use.
fn named_mutex(key: &str) -> io::Result<OwnedHandle> {
    let name = wide(key)?;
    // SAFETY: `name` is NUL-terminated and outlives the call; null attributes give the
    // default security descriptor; flags 0 = not initially owned.
    let h = unsafe {
        CreateMutexExW(
            ptr::null(),
            name.as_ptr(),
            0,
            SYNCHRONIZATION_SYNCHRONIZE | MUTEX_MODIFY_STATE,
        )
    };
    OwnedHandle::from_result(h)
}

// ---------------------------------------------------------------------------------- waits

/// Waits on a word through a named auto-reset event (`<key>`, one per word): `WaitOnAddress`
/// does not work across processes.
///
/// Nothing is lost between the check and the sleep: a `wake` in between leaves the event
/// signalled and the wait returns at once. A `wake` with nobody asleep leaves it signalled
/// too, which makes the next `wait` return early: a spurious return the caller tolerates.
#[derive(Debug)]
pub(crate) struct Waiter {
    event: OwnedHandle,
}

impl Waiter {
    /// Creates or opens the event named `key`.
    #[doc(alias = "CreateEventExW")]
    pub(crate) fn new(key: &str) -> io::Result<Self> {
        let name = wide(key)?;
        // SAFETY: `name` is NUL-terminated and outlives the call; flags 0 = auto-reset and
        // initially not signalled.
        let h = unsafe {
            CreateEventExW(
                ptr::null(),
                name.as_ptr(),
                0,
                SYNCHRONIZATION_SYNCHRONIZE | EVENT_MODIFY_STATE,
            )
        };
        Ok(Waiter {
            event: OwnedHandle::from_result(h)?,
        })
    }

    /// Sleeps while `*word == expected`, at most `timeout`. Spurious returns are allowed.
    pub(crate) fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        if word.load(Ordering::SeqCst) != expected {
            return;
        }
        // SAFETY: the handle is a valid event handle with SYNCHRONIZE access. Every outcome
        // (signalled, timeout, failure) means "recheck", which the caller does.
        unsafe { WaitForSingleObject(self.event.0, wait_ms(timeout)) };
    }

    /// Wakes one sleeper on `word` (or the next one to wait).
    #[doc(alias = "SetEvent")]
    pub(crate) fn wake(&self, _word: &AtomicU32) {
        // SAFETY: the handle is a valid event handle with EVENT_MODIFY_STATE access.
        unsafe { SetEvent(self.event.0) };
    }
}

// ------------------------------------------------------------------------------ processes

pub(crate) fn current_pid() -> u32 {
    std::process::id()
}

/// Creation time of `pid` (a FILETIME: 100 ns units since 1601); `Gone` if no such process
/// is running (one that has exited but is still referenced by a handle counts as gone);
/// `Hidden` if it exists but this process may not query it.
/// Caveat: a process that exited with code 259 (`STILL_ACTIVE`) looks alive.
#[doc(alias = "GetProcessTimes")]
pub(crate) fn start_time(pid: u32) -> Process {
    // Untrusted input: pid 0 is the System Idle Process.
    if pid == 0 {
        return Process::Gone;
    }
    // SAFETY: OpenProcess has no memory-safety preconditions; null means failure.
    let h = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    let process = match OwnedHandle::from_result(h) {
        Ok(p) => p,
        // No process has this id; anything else (access denied) says nothing about life.
        Err(e) if e.raw_os_error() == Some(ERROR_INVALID_PARAMETER as i32) => return Process::Gone,
        Err(_) => return Process::Hidden,
    };
    let mut code = 0u32;
    // SAFETY: `process` has PROCESS_QUERY_LIMITED_INFORMATION access; `code` is writable.
    if unsafe { GetExitCodeProcess(process.0, &mut code) } == 0 {
        return Process::Hidden;
    }
    if code != STILL_ACTIVE as u32 {
        return Process::Gone;
    }
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: as above; all four FILETIMEs are writable.
    if unsafe { GetProcessTimes(process.0, &mut created, &mut exited, &mut kernel, &mut user) } == 0
    {
        return Process::Hidden;
    }
    Process::Running(u64::from(created.dwHighDateTime) << 32 | u64::from(created.dwLowDateTime))
}

/// The processor this thread runs on now (within its processor group).
pub(crate) fn current_cpu() -> u32 {
    // SAFETY: GetCurrentProcessorNumber has no preconditions.
    unsafe { GetCurrentProcessorNumber() }
}
