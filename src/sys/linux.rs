//! Linux backend: POSIX shm objects as files in /dev/shm (see `unix.rs`), futex waits,
//! robust process-shared pthread mutexes, `/proc` for process start times.

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use memmap2::MmapRaw;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;
use rustix::thread::futex;

use super::{LockFail, LockStatus, OpenError, Token, CLEANUP_BYTE, MUTEX_STORAGE, TOKEN_BYTE};

pub(crate) use super::unix::Shm;

/// POSIX shm names start with a slash.
pub(crate) const OS_NAME_PREFIX: &str = "/";
/// NAME_MAX of the tmpfs behind /dev/shm.
pub(crate) const MAX_OS_NAME: usize = 255;
/// `fstat` reports the exact size given to `ftruncate`.
pub(crate) const SIZE_ROUNDING: usize = 1;

/// Reserves the pages of a new object so that a full /dev/shm fails here, not with SIGBUS
/// on first touch.
#[doc(alias = "fallocate")]
fn reserve(file: &File, size: usize) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size as u64) {
        Ok(()) => Ok(()),
        // Filesystems without fallocate: nothing to reserve with, go on unreserved.
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => Ok(()),
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------- shm objects
//
// POSIX shm objects are files in /dev/shm (where glibc's and musl's `shm_open` put them), so
// we reach them with `openat`-family calls and the flags `shm_open` cannot take: O_NOFOLLOW
// (a symbolic link under our name is refused, ELOOP), O_NONBLOCK (opening a FIFO or a file
// with a lease returns at once), O_TMPFILE (the object appears under its name complete).

/// Where POSIX shm objects live.
const SHM_DIR: &str = "/dev/shm";

/// `/dev/shm/<name>` for an OS name (which starts with a slash, see `OS_NAME_PREFIX`).
fn shm_path(os_name: &str) -> String {
    format!("{SHM_DIR}{os_name}")
}

/// Creates the object `os_name`: sized, reserved, mapped, owner-checked, holding its
/// liveness token, and only then linked under its name (`linkat`, which fails with EEXIST if
/// the name is taken), so no other process ever sees it half made. Where /dev/shm has no
/// O_TMPFILE (or /proc is not mounted) it is created under its name, taking the token first.
pub(super) fn create_object(os_name: &str, size: usize, mode: u32) -> io::Result<(File, MmapRaw)> {
    let path = shm_path(os_name);
    let mode_bits = Mode::from_raw_mode(mode as _);
    match rustix::fs::openat(
        CWD,
        SHM_DIR,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        mode_bits,
    ) {
        Ok(fd) => {
            let file = File::from(fd);
            let map = prepare(&file, size, mode)?;
            let fd_path = format!("/proc/self/fd/{}", file.as_raw_fd());
            match rustix::fs::linkat(CWD, &fd_path, CWD, &path, AtFlags::SYMLINK_FOLLOW) {
                Ok(()) => return Ok((file, map)),
                // No /proc to name the file by: create under the name below.
                Err(Errno::NOENT) if !std::path::Path::new("/proc/self/fd").exists() => {}
                Err(e) => return Err(e.into()),
            }
        }
        // No O_TMPFILE on this filesystem or kernel.
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = rustix::fs::openat(
        CWD,
        &path,
        OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::RDWR | OFlags::CLOEXEC,
        mode_bits,
    )?;
    let file = File::from(fd);
    match prepare(&file, size, mode) {
        Ok(map) => Ok((file, map)),
        Err(e) => {
            if let (Ok(Some(there)), Ok(ours)) = (stat_name(os_name), rustix::fs::fstat(&file)) {
                if (there.st_dev, there.st_ino) == (ours.st_dev, ours.st_ino) {
                    let _ = rustix::fs::unlink(&path);
                }
            }
            Err(e)
        }
    }
}

/// Everything a new object needs before others may see it: exact permission bits, the
/// liveness token (before sizing), its size and reserved memory, the mapping.
fn prepare(file: &File, size: usize, mode: u32) -> io::Result<MmapRaw> {
    // The umask applies at creation; set exactly what the caller asked for.
    rustix::fs::fchmod(file, Mode::from_raw_mode(mode as _))?;
    if !take_token(file) {
        return Err(io::Error::other(
            "cannot take the liveness token of a new object",
        ));
    }
    rustix::fs::ftruncate(file, size as u64)?;
    reserve(file, size)?;
    super::unix::map(file, size)
}

/// Opens the object `os_name` read-write without following a symbolic link and without
/// blocking; what is not a regular file is refused here or by the caller's `fstat` checks.
pub(super) fn open_object(os_name: &str) -> Result<File, OpenError> {
    let path = shm_path(os_name);
    let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    match rustix::fs::openat(CWD, &path, flags, Mode::empty()) {
        Ok(fd) => Ok(File::from(fd)),
        // ELOOP: a symbolic link (O_NOFOLLOW); ENXIO: a socket; EISDIR: a directory.
        Err(e @ (Errno::LOOP | Errno::NXIO | Errno::ISDIR)) => {
            match rustix::fs::statat(CWD, &path, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Err(squatted_by(&path, &st)),
                Err(_) => Err(OpenError::Os(e.into())),
            }
        }
        Err(e) => Err(OpenError::Os(e.into())),
    }
}

/// The refusal for the non-regular file at `path` described by `st`.
fn squatted_by(path: &str, st: &Stat) -> OpenError {
    let kind = FileType::from_raw_mode(st.st_mode);
    let mut reason = format!("it is {}, not a regular file", super::unix::describe(kind));
    if kind == FileType::Symlink {
        if let Ok(target) = rustix::fs::readlinkat(CWD, path, Vec::new()) {
            reason = format!(
                "it is a symbolic link (to {}), not a regular file",
                target.to_string_lossy()
            );
        }
    }
    OpenError::Squatted {
        reason,
        owner_uid: st.st_uid,
    }
}

/// What the name `os_name` is now, without following a link or opening it (`None`: nothing).
pub(super) fn stat_name(os_name: &str) -> io::Result<Option<Stat>> {
    match rustix::fs::statat(CWD, shm_path(os_name), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// An open-file-description lock on `byte` of `file` (`F_OFD_SETLK`, never waits), or a
/// query for a conflicting one (`F_OFD_GETLK`). OFD locks belong to the open file
/// description, not to the process: they survive other opens and closes of the same object
/// in this process, are released with the description's last reference (the mapping
/// included) or the process's death, and are seen across PID namespaces.
fn ofd_lock(file: &File, byte: u64, cmd: libc::c_int) -> io::Result<libc::flock> {
    // SAFETY: flock is plain data, valid when zeroed.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as _;
    lock.l_whence = libc::SEEK_SET as _;
    lock.l_start = byte as _;
    lock.l_len = 1;
    // l_pid stays 0, as OFD locks require.
    // SAFETY: the fd is open for the call; `lock` is a valid flock the kernel reads and
    // (for F_OFD_GETLK) writes.
    if unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut lock) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(lock)
}

/// Takes the liveness token of `file` if nobody holds it.
pub(super) fn take_token(file: &File) -> bool {
    ofd_lock(file, TOKEN_BYTE, libc::F_OFD_SETLK).is_ok()
}

/// Whether another open file description holds the liveness token of `file`'s object.
pub(super) fn probe_token(file: &File) -> Token {
    match ofd_lock(file, TOKEN_BYTE, libc::F_OFD_GETLK) {
        Ok(l) if l.l_type == libc::F_UNLCK as _ => Token::Free,
        Ok(_) => Token::Held,
        Err(_) => Token::Unknown,
    }
}

/// Takes the cleanup lock of `file`'s object, retrying without blocking for at most `wait`;
/// `WouldBlock` if another process kept it that long. Where OFD locks are unsupported (EINVAL:
/// kernels before 3.15), goes on without it.
pub(super) fn cleanup_lock(file: &File, wait: Duration) -> io::Result<()> {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(1);
    loop {
        match ofd_lock(file, CLEANUP_BYTE, libc::F_OFD_SETLK) {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(()),
            Err(e)
                if e.kind() != io::ErrorKind::WouldBlock
                    && e.raw_os_error() != Some(libc::EACCES) =>
            {
                return Err(e)
            }
            Err(_) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "another process keeps the object's cleanup lock",
            ));
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------- mutex

const _: () = assert!(std::mem::size_of::<libc::pthread_mutex_t>() <= MUTEX_STORAGE);
const _: () = assert!(std::mem::align_of::<libc::pthread_mutex_t>() <= 8);

/// A robust, process-shared, error-checking pthread mutex placed in shared memory.
///
/// Robust: when the owner dies, the kernel (through the robust futex list glibc registers
/// for every thread) hands the lock to the next locker with `EOWNERDEAD`; we make it
/// consistent at once and report [`LockStatus::OwnerDied`]. Error-checking: relocking from the
/// owning thread gives `EDEADLK` instead of a hang.
#[derive(Debug)]
pub(crate) struct RawMutex {
    m: *mut libc::pthread_mutex_t,
}

// SAFETY: a process-shared pthread mutex is designed to be used from any thread of any
// process; the pointer targets a shared mapping the owner of `RawMutex` keeps alive.
unsafe impl Send for RawMutex {}
// SAFETY: as above; all operations go through the pthread API, which synchronises.
unsafe impl Sync for RawMutex {}

impl RawMutex {
    /// Initialises the mutex in `storage`.
    ///
    /// # Safety
    /// `storage` points to `MUTEX_STORAGE` writable bytes, 8-aligned, in a shared mapping
    /// that outlives the returned value, and no other process uses them yet.
    pub(crate) unsafe fn init(storage: *mut u8, _key: &str) -> io::Result<Self> {
        let m = storage.cast::<libc::pthread_mutex_t>();
        let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: attr is a valid place for the attribute object; each call's result is checked
        // and the attribute is destroyed on every path after init succeeded. `m` is valid for
        // writes by the caller's contract.
        unsafe {
            check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
            let a = attr.as_mut_ptr();
            let r = (|| {
                check(libc::pthread_mutexattr_setpshared(
                    a,
                    libc::PTHREAD_PROCESS_SHARED,
                ))?;
                check(libc::pthread_mutexattr_setrobust(
                    a,
                    libc::PTHREAD_MUTEX_ROBUST,
                ))?;
                check(libc::pthread_mutexattr_settype(
                    a,
                    libc::PTHREAD_MUTEX_ERRORCHECK,
                ))?;
                check(libc::pthread_mutex_init(m, a))
            })();
            libc::pthread_mutexattr_destroy(a);
            r?;
        }
        Ok(RawMutex { m })
    }

    /// Attaches to a mutex another process initialised.
    ///
    /// # Safety
    /// `storage` points to a mutex made by [`RawMutex::init`] in a shared mapping that
    /// outlives the returned value.
    pub(crate) unsafe fn open(storage: *mut u8, _key: &str) -> io::Result<Self> {
        Ok(RawMutex { m: storage.cast() })
    }

    /// Locks, waiting at most `timeout` (`None`: forever).
    pub(crate) fn lock(&self, timeout: Option<Duration>) -> Result<LockStatus, LockFail> {
        let r = match timeout {
            // SAFETY: self.m points to an initialised process-shared mutex (constructor contract).
            None => unsafe { libc::pthread_mutex_lock(self.m) },
            Some(t) => {
                let deadline = realtime_deadline(t);
                // SAFETY: as above; `deadline` is a normalised timespec.
                unsafe { libc::pthread_mutex_timedlock(self.m, &deadline) }
            }
        };
        self.status(r)
    }

    /// Locks if free, without waiting.
    pub(crate) fn try_lock(&self) -> Result<LockStatus, LockFail> {
        // SAFETY: self.m points to an initialised process-shared mutex.
        let r = unsafe { libc::pthread_mutex_trylock(self.m) };
        if r == libc::EBUSY {
            return Ok(LockStatus::TimedOut);
        }
        self.status(r)
    }

    fn status(&self, r: i32) -> Result<LockStatus, LockFail> {
        match r {
            0 => Ok(LockStatus::Acquired),
            libc::ETIMEDOUT => Ok(LockStatus::TimedOut),
            libc::EOWNERDEAD => {
                // SAFETY: we hold the lock (EOWNERDEAD hands it over); marking it consistent
                // is what makes it usable again after we unlock.
                match unsafe { libc::pthread_mutex_consistent(self.m) } {
                    0 => Ok(LockStatus::OwnerDied),
                    e => Err(LockFail::Os(io::Error::from_raw_os_error(e))),
                }
            }
            libc::EDEADLK => Err(LockFail::WouldDeadlock),
            libc::ENOTRECOVERABLE => Err(LockFail::Unrecoverable),
            e => Err(LockFail::Os(io::Error::from_raw_os_error(e))),
        }
    }

    /// Unlocks.
    ///
    /// # Safety
    /// The calling thread holds the lock.
    pub(crate) unsafe fn unlock(&self) {
        // SAFETY: the caller holds the lock on an initialised mutex.
        let r = unsafe { libc::pthread_mutex_unlock(self.m) };
        debug_assert_eq!(
            r,
            0,
            "pthread_mutex_unlock: {}",
            io::Error::from_raw_os_error(r)
        );
    }
}

fn check(r: i32) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// `CLOCK_REALTIME` now + `t`, normalised (tv_nsec < 1e9) and saturated.
fn realtime_deadline(t: Duration) -> libc::timespec {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    let mut sec = now
        .tv_sec
        .saturating_add(i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
    let mut nsec = now.tv_nsec as i64 + i64::from(t.subsec_nanos());
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        sec = sec.saturating_add(1);
    }
    libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as _,
    }
}

// ---------------------------------------------------------------------------------- waits

/// Futex waits need no per-process state on Linux.
#[derive(Debug)]
pub(crate) struct Waiter;

impl Waiter {
    pub(crate) fn new(_key: &str) -> io::Result<Self> {
        Ok(Waiter)
    }

    /// Sleeps while `*word == expected`, at most `timeout`. Spurious returns are allowed.
    #[doc(alias = "futex")]
    pub(crate) fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        let ts = timeout.map(|t| rustix::time::Timespec {
            tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(t.subsec_nanos()) as _,
        });
        // Shared (not PRIVATE) futex: the word lives in memory mapped by several processes.
        // EAGAIN (word changed), EINTR and ETIMEDOUT all mean "recheck", which the caller does.
        let _ = futex::wait(word, futex::Flags::empty(), expected, ts.as_ref());
    }

    /// Wakes one sleeper on `word`.
    pub(crate) fn wake(&self, word: &AtomicU32) {
        let _ = futex::wake(word, futex::Flags::empty(), 1);
    }
}

// ------------------------------------------------------------------------------ processes

pub(crate) fn current_pid() -> u32 {
    std::process::id()
}

/// Start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`), or `None`
/// if no such process is alive. Zombies (killed but not yet reaped) count as dead.
#[doc(alias = "proc_pid_stat")]
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    // A pid read from shared memory is untrusted: 0 or a negative pid_t would make kill()
    // address a process group.
    let p = i32::try_from(pid).ok().filter(|&p| p > 0)?;
    // SAFETY: kill with signal 0 only checks for existence and permission.
    if unsafe { libc::kill(p, 0) } != 0
        && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything: split after
    // the last ')'. Then field 3 is the state and field 22 the start time.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The CPU this thread runs on now (cheap: glibc reads it from the rseq area).
pub(crate) fn current_cpu() -> u32 {
    // SAFETY: sched_getcpu has no preconditions.
    let c = unsafe { libc::sched_getcpu() };
    u32::try_from(c).unwrap_or(u32::MAX)
}
