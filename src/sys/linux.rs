//! Linux backend: POSIX shm objects as files in /dev/shm (see `unix.rs`), participants'
//! proof of life as open-file-description locks, futex lock words and waits, `/proc` for
//! process start times.

use std::cell::Cell;
use std::fs::File;
use std::hint;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memmap2::MmapRaw;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;
use rustix::thread::futex;

use super::{
    Liveness, LockFail, LockStatus, Member, OpenError, Process, Token, CLEANUP_BYTE, MUTEX_STORAGE,
    TAG_BASE, TOKEN_BYTE,
};

pub(crate) use super::unix::{Presence, Shm};

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
pub(super) fn create_object(
    os_name: &str,
    size: usize,
    mode: u32,
    group: Option<u32>,
) -> io::Result<(File, MmapRaw)> {
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
            let map = prepare(&file, size, mode, group)?;
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
    match prepare(&file, size, mode, group) {
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

/// Everything a new object needs before others may see it: its group (if asked), exact
/// permission bits, the liveness token (before sizing), its size and reserved memory, the
/// mapping.
fn prepare(file: &File, size: usize, mode: u32, group: Option<u32>) -> io::Result<MmapRaw> {
    if let Some(gid) = group {
        // Allowed to the owner for a group it belongs to (EPERM otherwise). Before the mode:
        // a change of group may clear set-id bits.
        let gid = rustix::fs::Gid::from_raw(gid);
        rustix::fs::fchown(file, None, Some(gid))?;
    }
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

// ------------------------------------------------------------------------------ presence

/// Claims a tag for `p`'s open file description (once; later calls return the same tag):
/// a random nonzero 31-bit number whose byte `TAG_BASE + tag` nobody else holds, locked
/// with `F_OFD_SETLK` until the description's last reference goes.
fn claim_tag(p: &Presence) -> io::Result<u32> {
    if let Some(&tag) = p.tag.get() {
        return Ok(tag);
    }
    for _ in 0..64 {
        let tag = (uuid::Uuid::new_v4().as_u64_pair().0 as u32) & TAG_MASK;
        if tag == 0 {
            continue;
        }
        match ofd_lock(&p.file, TAG_BASE + u64::from(tag), libc::F_OFD_SETLK) {
            // Two threads racing here both claim a byte; the first `set` names ours, the
            // other byte stays locked by this description, unused (harmless).
            Ok(_) => return Ok(*p.tag.get_or_init(|| tag)),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.raw_os_error() == Some(libc::EACCES) => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("cannot claim a free participant tag"))
}

/// Whether the participant with `tag` is alive, judged through `p`'s open file description.
fn tag_alive(p: &Presence, tag: u32) -> Liveness {
    if p.tag.get() == Some(&tag) {
        return Liveness::Alive; // our own description: this process
    }
    if tag == 0 || tag > TAG_MASK {
        return Liveness::Dead; // never claimed
    }
    match ofd_lock(&p.file, TAG_BASE + u64::from(tag), libc::F_OFD_GETLK) {
        // Another description holds it. Its l_pid is -1 (OFD locks have no owning process),
        // in any PID namespace: held is held.
        Ok(l) if l.l_type != libc::F_UNLCK as _ => Liveness::Alive,
        Ok(_) => Liveness::Dead,
        Err(_) => Liveness::Unknown,
    }
}

/// This process's record in `p`'s object: its pid and its tag.
pub(super) fn member(p: &Presence) -> io::Result<Member> {
    Ok(Member {
        pid: current_pid(),
        token: u64::from(claim_tag(p)?),
    })
}

/// Whether the participant recorded as `m` is alive (its tag's byte is held).
pub(super) fn alive(p: &Presence, m: Member) -> Liveness {
    match u32::try_from(m.token) {
        Ok(tag) => tag_alive(p, tag),
        Err(_) => Liveness::Dead,
    }
}

// ---------------------------------------------------------------------------------- mutex

/// `LockWord::state`: who holds the lock, and whether anyone may be asleep waiting.
///
/// | value | meaning |
/// |---|---|
/// | `UNLOCKED` (0) | free |
/// | `tag` | held by the participant `tag` (see `Presence`), nobody asleep |
/// | `tag \| WAITERS` | held by `tag`; waiters may be asleep: unlock must wake one |
///
/// The holder's tag is in the state word itself, so acquiring the lock and naming its owner
/// are one atomic step, and the tag's byte was locked (kernel-held) before: a waiter that
/// finds that byte free knows the holder is gone, in any PID namespace. Any other value a
/// peer writes names a tag nobody holds (or a live one: then it waits, as for any holder)
/// and is taken over.
const UNLOCKED: u32 = 0;
const WAITERS: u32 = 1 << 31;
/// Tags are the low 31 bits.
const TAG_MASK: u32 = WAITERS - 1;

/// How long a waiter sleeps before checking again whether the holder is alive.
const LIVENESS_INTERVAL: Duration = Duration::from_millis(10);
/// Spins before the first liveness check and sleep.
const SPINS: u32 = 100;

/// The mutex as laid out in its `MUTEX_STORAGE` bytes of shared memory.
#[repr(C)]
struct LockWord {
    /// See [`UNLOCKED`] and the table there.
    state: AtomicU32,
    /// The holding thread's number within its process (see [`thread_no`]), written right
    /// after acquiring and cleared before releasing; 0 while not known. Only read to refuse
    /// a relock from the holding thread (`WouldDeadlock`), together with our tag in `state`.
    owner_thread: AtomicU32,
    /// The holding process's pid, same lifetime as `owner_thread`; 0 while not known. Only
    /// read for messages (see `holder_pid`): liveness comes from the tag.
    owner_pid: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<LockWord>() <= MUTEX_STORAGE);
// The tests that stop a process holding a lock read the pid there (tests/common).
const _: () = assert!(std::mem::offset_of!(LockWord, owner_pid) == 8);

/// A process-shared mutex that survives its owner's death: a futex lock word holding the
/// holder's tag.
///
/// The uncontended lock and unlock are one CAS each, no system call. A waiter spins briefly,
/// then checks whether the holder's tag byte is still locked (`F_OFD_GETLK`), and sleeps on
/// the word (futex) for at most [`LIVENESS_INTERVAL`] at a time, checking again in between.
/// If the holder is gone, a waiter takes the lock over with a CAS (one wins) and reports
/// [`LockStatus::OwnerDied`]. Everything this process writes goes to the words of
/// [`LockWord`]: there are no links or pointers in shared memory to follow.
///
/// Limits: a relock from the holding thread is refused when it goes through the same
/// segment mapping (the usual case); through a second, separately opened mapping of the same
/// object it waits like any other locker. A process that forks without exec shares its
/// parent's tags until it exits.
#[derive(Debug)]
pub(crate) struct RawMutex {
    word: *const LockWord,
    presence: Arc<Presence>,
    /// This process's tag in the object (`state` value when we hold it, without `WAITERS`).
    me: u32,
    /// This process's pid, recorded beside a lock it takes.
    pid: u32,
}

// SAFETY: the lock word lives in a shared mapping the owner of `RawMutex` keeps alive and is
// only accessed through atomics; the lock itself is designed for use from any thread.
unsafe impl Send for RawMutex {}
// SAFETY: as above.
unsafe impl Sync for RawMutex {}

impl RawMutex {
    /// Initialises the lock word in `storage` (free).
    ///
    /// # Safety
    /// `storage` points to `MUTEX_STORAGE` writable bytes, 8-aligned, in a shared mapping
    /// of the object `presence` belongs to, that outlives the returned value, and no other
    /// process uses them yet.
    pub(crate) unsafe fn init(
        storage: *mut u8,
        key: &str,
        presence: &Arc<Presence>,
    ) -> io::Result<Self> {
        // SAFETY: the caller guarantees the bytes are ours to write, aligned and large enough.
        unsafe {
            storage.cast::<LockWord>().write(LockWord {
                state: AtomicU32::new(UNLOCKED),
                owner_thread: AtomicU32::new(0),
                owner_pid: AtomicU32::new(0),
            });
        }
        // SAFETY: just initialised; the caller's contract covers the rest.
        unsafe { Self::open(storage, key, presence) }
    }

    /// Attaches to a lock word another process initialised.
    ///
    /// # Safety
    /// `storage` points to `MUTEX_STORAGE` bytes, 8-aligned, in a shared mapping of the
    /// object `presence` belongs to, that outlives the returned value. Whatever they hold,
    /// the lock stays memory-safe.
    pub(crate) unsafe fn open(
        storage: *mut u8,
        _key: &str,
        presence: &Arc<Presence>,
    ) -> io::Result<Self> {
        Ok(RawMutex {
            word: storage.cast::<LockWord>(),
            me: claim_tag(presence)?,
            presence: Arc::clone(presence),
            pid: current_pid(),
        })
    }

    #[inline]
    fn word(&self) -> &LockWord {
        // SAFETY: `word` points into a live shared mapping (constructor contract); every field
        // is atomic, so concurrent access from other processes is fine.
        unsafe { &*self.word }
    }

    /// Locks, waiting at most `timeout` (`None`: forever).
    #[inline]
    pub(crate) fn lock(&self, timeout: Option<Duration>) -> Result<LockStatus, LockFail> {
        if self.try_acquire(self.me) {
            return Ok(LockStatus::Acquired);
        }
        // A timeout too large for an Instant never runs out: `None` below.
        self.lock_slow(super::deadline_after(timeout))
    }

    /// Locks if free, or if its holder is dead; `TimedOut` if a live process holds it.
    pub(crate) fn try_lock(&self) -> Result<LockStatus, LockFail> {
        if self.try_acquire(self.me) {
            return Ok(LockStatus::Acquired);
        }
        let s = self.word().state.load(Ordering::Relaxed);
        if s == UNLOCKED {
            return Ok(LockStatus::TimedOut); // released meanwhile: held a moment ago
        }
        self.check_relock(s)?;
        Ok(self.take_over_if_dead(s).unwrap_or(LockStatus::TimedOut))
    }

    /// Whether a live process holds the lock (one `F_OFD_GETLK` when it is held by another
    /// process), without taking it.
    pub(crate) fn held(&self) -> bool {
        let s = self.word().state.load(Ordering::Acquire);
        s != UNLOCKED && tag_alive(&self.presence, s & TAG_MASK) != Liveness::Dead
    }

    /// The pid the holder recorded beside the lock word: for messages only (any value a
    /// peer wrote); `None` while the lock is free or its holder has not recorded itself yet.
    pub(crate) fn holder_pid(&self) -> Option<u32> {
        let w = self.word();
        if w.state.load(Ordering::Acquire) == UNLOCKED {
            return None;
        }
        Some(w.owner_pid.load(Ordering::Relaxed)).filter(|&p| p != 0)
    }

    /// One CAS from free to `value`, recording this thread on success.
    #[inline]
    fn try_acquire(&self, value: u32) -> bool {
        let w = self.word();
        if w.state
            .compare_exchange(UNLOCKED, value, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.record_owner();
            return true;
        }
        false
    }

    /// Writes this thread and process beside the state word just acquired.
    #[inline]
    fn record_owner(&self) {
        let w = self.word();
        w.owner_thread.store(thread_no(), Ordering::Relaxed);
        w.owner_pid.store(self.pid, Ordering::Relaxed);
    }

    #[cold]
    fn lock_slow(&self, deadline: Option<Instant>) -> Result<LockStatus, LockFail> {
        let w = self.word();
        let mut s = w.state.load(Ordering::Relaxed);
        if s != UNLOCKED {
            self.check_relock(s)?;
        }
        // Spin a little: a short critical section in another process often ends meanwhile.
        for _ in 0..SPINS {
            if s == UNLOCKED {
                break;
            }
            hint::spin_loop();
            s = w.state.load(Ordering::Relaxed);
        }
        // The first liveness check comes before the first sleep: a fresh locker of a dead
        // holder's lock need not wait an interval.
        let mut next_check = Instant::now();
        loop {
            if s == UNLOCKED {
                // We have been waiting, so others may be too: keep WAITERS set so that our
                // unlock wakes the next one.
                if self.try_acquire(self.me | WAITERS) {
                    return Ok(LockStatus::Acquired);
                }
                s = w.state.load(Ordering::Relaxed);
                continue;
            }
            let now = Instant::now();
            if now >= next_check {
                next_check = now + LIVENESS_INTERVAL;
                if let Some(status) = self.take_over_if_dead(s) {
                    return Ok(status);
                }
            }
            if s & WAITERS == 0 {
                if let Err(now) =
                    w.state
                        .compare_exchange(s, s | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                {
                    s = now;
                    continue;
                }
                s |= WAITERS;
            }
            let mut sleep = next_check.saturating_duration_since(now);
            match deadline {
                Some(d) if now >= d => return Ok(LockStatus::TimedOut),
                Some(d) => sleep = sleep.min(d - now),
                None => {}
            }
            futex_wait(&w.state, s, sleep);
            s = w.state.load(Ordering::Relaxed);
        }
    }

    /// `WouldDeadlock` if this thread holds the lock (state `s`).
    fn check_relock(&self, s: u32) -> Result<(), LockFail> {
        if s & TAG_MASK == self.me
            && self.word().owner_thread.load(Ordering::Relaxed) == thread_no()
        {
            return Err(LockFail::WouldDeadlock);
        }
        Ok(())
    }

    /// If the holder recorded in state `s` is gone, takes the lock over (one CAS, so only
    /// one waiter wins) and returns `OwnerDied`.
    fn take_over_if_dead(&self, s: u32) -> Option<LockStatus> {
        if s == UNLOCKED || tag_alive(&self.presence, s & TAG_MASK) != Liveness::Dead {
            return None;
        }
        let w = self.word();
        // Keep WAITERS: other waiters may be asleep and our unlock must wake them.
        if w.state
            .compare_exchange(
                s,
                self.me | (s & WAITERS),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            self.record_owner();
            return Some(LockStatus::OwnerDied);
        }
        None
    }

    /// Unlocks, waking one waiter if any may be asleep. Releases only a lock this process
    /// holds: if another took it over meanwhile (a peer that wrongly judged us dead, or
    /// scribbled on the word), it is theirs now and left alone.
    ///
    /// # Safety
    /// The calling thread holds the lock.
    #[inline]
    pub(crate) unsafe fn unlock(&self) {
        let w = self.word();
        let mut s = w.state.load(Ordering::Relaxed);
        if s & TAG_MASK != self.me {
            return;
        }
        w.owner_thread.store(0, Ordering::Relaxed);
        w.owner_pid.store(0, Ordering::Relaxed);
        loop {
            match w
                .state
                .compare_exchange_weak(s, UNLOCKED, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) if now & TAG_MASK == self.me => s = now,
                Err(_) => return,
            }
        }
        if s & WAITERS != 0 {
            let _ = futex::wake(&w.state, futex::Flags::empty(), 1);
        }
    }
}

/// This thread's number within the process: 1, 2, ... in order of first use, never reused
/// (unlike kernel thread ids, and no system call). Written beside a held lock word; says
/// nothing about the process's memory.
#[inline]
fn thread_no() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    thread_local!(static NO: Cell<u32> = const { Cell::new(0) });
    NO.with(|no| match no.get() {
        0 => {
            let n = NEXT.fetch_add(1, Ordering::Relaxed).max(1);
            no.set(n);
            n
        }
        n => n,
    })
}

/// Sleeps while `*word == expected`, at most `timeout` (a shared futex: the word lives in
/// memory mapped by several processes). Every return means "recheck".
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = rustix::time::Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()) as _,
    };
    let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&ts));
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

/// Start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`); `Gone`
/// if no such process is alive (zombies count as dead); `Hidden` if it exists but its /proc
/// entry cannot be read (hidepid, another PID namespace's /proc).
#[doc(alias = "proc_pid_stat")]
pub(crate) fn start_time(pid: u32) -> Process {
    // A pid read from shared memory is untrusted: 0 or a negative pid_t would make kill()
    // address a process group.
    let Some(p) = i32::try_from(pid).ok().filter(|&p| p > 0) else {
        return Process::Gone;
    };
    let exists = || {
        // SAFETY: kill with signal 0 only checks for existence and permission.
        let r = unsafe { libc::kill(p, 0) };
        r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    };
    if !exists() {
        return Process::Gone;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
        // EPERM from kill() above, or an unreadable /proc: it may well be alive.
        return if exists() {
            Process::Hidden
        } else {
            Process::Gone
        };
    };
    // The command name (field 2) is in parentheses and may contain anything: split after
    // the last ')'. Then field 3 is the state and field 22 the start time.
    let parsed = (|| {
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_ascii_whitespace();
        let state = fields.next()?;
        if state == "Z" || state == "X" {
            return Some(Process::Gone);
        }
        Some(Process::Running(fields.nth(18)?.parse().ok()?))
    })();
    parsed.unwrap_or(Process::Hidden)
}

/// The CPU this thread runs on now (cheap: glibc reads it from the rseq area).
pub(crate) fn current_cpu() -> u32 {
    // SAFETY: sched_getcpu has no preconditions.
    let c = unsafe { libc::sched_getcpu() };
    u32::try_from(c).unwrap_or(u32::MAX)
}
