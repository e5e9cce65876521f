//! macOS backend: POSIX shm (see `unix.rs`), `__ulock` waits, a lock word with owner
//! liveness checks (macOS has no robust pthread mutexes, nor open-file-description locks),
//! `proc_pidinfo` for start times.

use std::ffi::c_void;
use std::fs::File;
use std::hint;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Liveness, LockFail, LockStatus, Member, Process, MUTEX_STORAGE};

pub(crate) use super::unix::{Presence, Shm};

/// POSIX shm names start with a slash.
pub(crate) const OS_NAME_PREFIX: &str = "/";
/// PSHMNAMLEN: longer names fail with ENAMETOOLONG (name.rs hashes their tail).
pub(crate) const MAX_OS_NAME: usize = 31;
/// macOS rounds a shm object's size up to whole pages (of the creating process: 4 or 16 KiB)
/// and `fstat` reports the rounded size, so an opened object may look up to a page larger
/// than its creator asked for. 64 KiB covers every page size.
pub(crate) const SIZE_ROUNDING: usize = 64 * 1024;

// ---------------------------------------------------------------------------- shm objects
//
// macOS shm names are not filesystem paths: nothing but shm objects can be created under
// them (no symbolic links, FIFOs or devices), and `shm_open` takes no O_NOFOLLOW or
// O_NONBLOCK (nor needs them: it never blocks). The owner and permission checks of
// `unix.rs` apply through `fstat`. Shm objects take no `flock` or `fcntl` locks, so there is
// no liveness token (`Token::Unknown`) and no cleanup lock: stale objects are judged by the
// header alone, and removal relies on the identity re-check.

/// Creates `os_name` exclusively, sized and mapped. Nothing to reserve beyond `ftruncate`:
/// macOS backs shm objects with anonymous VM memory, allocated (and refused with ENOMEM) when
/// the object is sized.
pub(super) fn create_object(
    os_name: &str,
    size: usize,
    mode: u32,
    group: Option<u32>,
) -> io::Result<(File, memmap2::MmapRaw)> {
    use rustix::shm;
    // macOS applies no umask to shm objects (and refuses fchmod on them).
    let fd = shm::open(
        os_name,
        shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
        rustix::fs::Mode::from_raw_mode(mode as _),
    )?;
    let file = File::from(fd);
    let init = (|| {
        if let Some(gid) = group {
            rustix::fs::fchown(&file, None, Some(rustix::fs::Gid::from_raw(gid)))?;
        }
        rustix::fs::ftruncate(&file, size as u64)?;
        super::unix::map(&file, size)
    })();
    match init {
        Ok(map) => Ok((file, map)),
        Err(e) => {
            let _ = shm::unlink(os_name);
            Err(e)
        }
    }
}

/// Opens the object `os_name` read-write.
pub(super) fn open_object(os_name: &str) -> Result<File, super::OpenError> {
    use rustix::shm;
    let fd = shm::open(os_name, shm::OFlags::RDWR, rustix::fs::Mode::empty())
        .map_err(io::Error::from)?;
    Ok(File::from(fd))
}

/// What the name `os_name` is now (`None`: nothing). Opening cannot block here (see above).
pub(super) fn stat_name(os_name: &str) -> io::Result<Option<rustix::fs::Stat>> {
    use rustix::shm;
    match shm::open(os_name, shm::OFlags::RDONLY, rustix::fs::Mode::empty()) {
        Ok(fd) => Ok(Some(rustix::fs::fstat(&fd)?)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// No liveness token on macOS (see above).
pub(super) fn probe_token(_file: &File) -> super::Token {
    super::Token::Unknown
}

/// No liveness token on macOS (see above).
pub(super) fn take_token(_file: &File) -> bool {
    false
}

/// No cleanup lock on macOS (see above): removal relies on the identity re-check.
pub(super) fn cleanup_lock(_file: &File, _wait: Duration) -> io::Result<()> {
    Ok(())
}

// ------------------------------------------------------------------------------ presence
//
// No open-file-description locks on macOS shm objects: a participant is recorded as its pid
// and start time, and checked against them (a process that cannot be inspected is alive).

/// This process's record: its pid and start time.
pub(super) fn member(_p: &Presence) -> io::Result<Member> {
    let pid = current_pid();
    match start_time(pid) {
        Process::Running(start) => Ok(Member { pid, token: start }),
        _ => Err(io::Error::other("cannot read this process's start time")),
    }
}

/// Whether the process recorded as `m` is alive.
pub(super) fn alive(_p: &Presence, m: Member) -> Liveness {
    match start_time(m.pid) {
        Process::Running(start) if start == m.token => Liveness::Alive,
        Process::Running(_) | Process::Gone => Liveness::Dead,
        Process::Hidden => Liveness::Unknown,
    }
}

// ---------------------------------------------------------------------------------- ulock

/// `__ulock_wait`/`__ulock_wake` operation: compare-and-wait on a 32-bit word that may be
/// mapped by several processes (the kernel keys waiters on the memory object, not the address).
const UL_COMPARE_AND_WAIT_SHARED: u32 = 3;
/// Flag: return `-errno` instead of setting `errno`.
const ULF_NO_ERRNO: u32 = 0x0100_0000;

extern "C" {
    /// Sleeps while `*addr == value`, at most `timeout_us` microseconds (0: no timeout).
    /// Returns at once if the word differs; otherwise only a `__ulock_wake` on the same
    /// word, the timeout, or a signal end the sleep. Private but stable libSystem API
    /// (bsd/sys/ulock.h in XNU), used by libc++, Rust's std and Chromium.
    ///
    /// # Safety
    /// `addr` points to a live, 4-aligned 32-bit word for the whole call.
    fn __ulock_wait(operation: u32, addr: *mut c_void, value: u64, timeout_us: u32) -> i32;

    /// Wakes one sleeper on `addr` (all with `ULF_WAKE_ALL`). Returns `-ENOENT` if none.
    ///
    /// # Safety
    /// `addr` points to a live, 4-aligned 32-bit word.
    fn __ulock_wake(operation: u32, addr: *mut c_void, wake_value: u64) -> i32;
}

/// Sleeps while `*word == expected`, at most `timeout` (`None`: forever). Every return
/// (woken, timed out, interrupted, value changed) means "recheck".
fn ulock_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    // 0 means "forever" to ulock: clamp a zero or sub-microsecond timeout to 1 us, and
    // cap long ones (about 71 minutes; the caller loops).
    let us = match timeout {
        None => 0,
        Some(t) => u32::try_from(t.as_micros()).unwrap_or(u32::MAX).max(1),
    };
    // SAFETY: `word` is a live AtomicU32 (4-aligned) for the duration of the call.
    unsafe {
        __ulock_wait(
            UL_COMPARE_AND_WAIT_SHARED | ULF_NO_ERRNO,
            word.as_ptr().cast(),
            u64::from(expected),
            us,
        )
    };
}

/// Wakes one sleeper on `word`.
fn ulock_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live AtomicU32. -ENOENT (nobody asleep) is fine.
    unsafe {
        __ulock_wake(
            UL_COMPARE_AND_WAIT_SHARED | ULF_NO_ERRNO,
            word.as_ptr().cast(),
            0,
        )
    };
}

// ---------------------------------------------------------------------------------- mutex

/// `LockWord::state`: who holds the lock, and whether anyone may be asleep waiting.
///
/// | value | meaning |
/// |---|---|
/// | `UNLOCKED` (0) | free |
/// | `pid << 1` | held by a thread of process `pid`, nobody asleep |
/// | `pid << 1 \| WAITERS` | held by process `pid`; waiters may be asleep: unlock must wake one |
///
/// The holder's pid is in the state word itself, so acquiring the lock and naming its owner
/// are one atomic step: a process dying right after acquiring still leaves its pid behind
/// for the liveness check. (pids are positive `i32`s, so `pid << 1` fits in 32 bits.)
const UNLOCKED: u32 = 0;
const WAITERS: u32 = 1;
const PID_SHIFT: u32 = 1;

/// How long a waiter sleeps before checking again whether the holder is alive.
const LIVENESS_INTERVAL: Duration = Duration::from_millis(20);
/// Spins before the first sleep (a short critical section often ends within them).
const SPINS: u32 = 100;

/// The mutex as laid out in its `MUTEX_STORAGE` bytes of shared memory.
#[repr(C)]
struct LockWord {
    /// See [`UNLOCKED`] and the table there.
    state: AtomicU32,
    _pad: u32,
    /// The holder's pid (high 32 bits) and a digest of its start time (low 32 bits,
    /// [`start_digest`]), written in one store right after acquiring and cleared before
    /// releasing. It vouches for the holder named in `state` only when its pid is that
    /// holder's: a new holder that has not recorded itself yet (the record still names the
    /// previous, possibly dead, holder) is judged by its pid alone, so no waiter takes the
    /// lock from it. The digest tells a dead holder from a new process that reused its pid.
    owner_rec: AtomicU64,
    /// System-wide thread id (`pthread_threadid_np`, never reused) of the holder, same
    /// lifetime as `owner_rec`; 0 while not known. Used to refuse a relock (`WouldDeadlock`).
    owner_tid: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<LockWord>() <= MUTEX_STORAGE);
const _: () = assert!(std::mem::align_of::<LockWord>() <= 8);

/// A process-shared mutex that survives its owner's death, built on a lock word.
///
/// macOS has no robust pthread mutexes, so: the lock word records the holder (pid in the
/// state word, start time and thread id beside it); waiters spin briefly, then sleep with
/// `__ulock_wait` for at most [`LIVENESS_INTERVAL`] at a time and check in between whether
/// the holder process is still alive. If it died, a waiter takes the lock over with a CAS
/// and reports [`LockStatus::OwnerDied`].
#[derive(Debug)]
pub(crate) struct RawMutex {
    word: *const LockWord,
    /// This process's pid (`state` value when we hold it, without `WAITERS`) and start time.
    me: u32,
    my_start: u64,
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
    /// that outlives the returned value, and no other process uses them yet.
    pub(crate) unsafe fn init(
        storage: *mut u8,
        key: &str,
        presence: &std::sync::Arc<Presence>,
    ) -> io::Result<Self> {
        let word = storage.cast::<LockWord>();
        // SAFETY: the caller guarantees the bytes are ours to write, aligned and large enough.
        unsafe {
            word.write(LockWord {
                state: AtomicU32::new(UNLOCKED),
                _pad: 0,
                owner_rec: AtomicU64::new(0),
                owner_tid: AtomicU64::new(0),
            });
        }
        // SAFETY: just initialised; the caller's contract covers the rest.
        unsafe { Self::open(storage, key, presence) }
    }

    /// Attaches to a lock word another process initialised.
    ///
    /// # Safety
    /// `storage` points to a mutex made by [`RawMutex::init`] in a shared mapping that
    /// outlives the returned value.
    pub(crate) unsafe fn open(
        storage: *mut u8,
        _key: &str,
        _presence: &std::sync::Arc<Presence>,
    ) -> io::Result<Self> {
        let pid = current_pid();
        if pid == 0 || pid > i32::MAX as u32 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "pid out of range for the lock word",
            ));
        }
        let Process::Running(my_start) = start_time(pid) else {
            return Err(io::Error::other("cannot read this process's start time"));
        };
        Ok(RawMutex {
            word: storage.cast::<LockWord>(),
            me: pid << PID_SHIFT,
            my_start,
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
        if self
            .word()
            .state
            .compare_exchange(UNLOCKED, self.me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.record_owner();
            return Ok(LockStatus::Acquired);
        }
        // A timeout too large for an Instant never runs out: `None` below.
        self.lock_slow(super::deadline_after(timeout))
    }

    /// Locks if free, or if its holder is dead; `TimedOut` if a live process holds it.
    pub(crate) fn try_lock(&self) -> Result<LockStatus, LockFail> {
        let w = self.word();
        match w
            .state
            .compare_exchange(UNLOCKED, self.me, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => {
                self.record_owner();
                Ok(LockStatus::Acquired)
            }
            Err(s) => {
                self.check_relock(s)?;
                if let Some(status) = self.take_over_if_dead(s) {
                    return Ok(status);
                }
                Ok(LockStatus::TimedOut)
            }
        }
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
        let mut last_check = Instant::now();
        loop {
            if s == UNLOCKED {
                // We have been waiting, so others may be too: keep WAITERS set so that our
                // unlock wakes the next one.
                match w.state.compare_exchange(
                    UNLOCKED,
                    self.me | WAITERS,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        self.record_owner();
                        return Ok(LockStatus::Acquired);
                    }
                    Err(now) => {
                        s = now;
                        continue;
                    }
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
            let now = Instant::now();
            if now.duration_since(last_check) >= LIVENESS_INTERVAL {
                last_check = now;
                if let Some(status) = self.take_over_if_dead(s) {
                    return Ok(status);
                }
            }
            let mut sleep = LIVENESS_INTERVAL
                .saturating_sub(now.duration_since(last_check))
                .max(Duration::from_millis(1));
            match deadline {
                Some(d) if now >= d => return Ok(LockStatus::TimedOut),
                Some(d) => sleep = sleep.min(d - now),
                None => {}
            }
            ulock_wait(&w.state, s, Some(sleep));
            s = w.state.load(Ordering::Relaxed);
        }
    }

    /// `WouldDeadlock` if this thread holds the lock (state `s`).
    fn check_relock(&self, s: u32) -> Result<(), LockFail> {
        if s & !WAITERS == self.me && self.word().owner_tid.load(Ordering::Relaxed) == thread_id() {
            return Err(LockFail::WouldDeadlock);
        }
        Ok(())
    }

    /// If the holder recorded in state `s` is dead, takes the lock over (one CAS, so only one
    /// waiter wins) and returns `OwnerDied`.
    fn take_over_if_dead(&self, s: u32) -> Option<LockStatus> {
        if s == UNLOCKED || self.holder_alive(s) {
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

    /// Whether the process holding the lock in state `s` is alive (or cannot be inspected).
    fn holder_alive(&self, s: u32) -> bool {
        let pid = s >> PID_SHIFT;
        let now = match start_time(pid) {
            Process::Gone => return false,
            Process::Hidden => return true,
            Process::Running(now) => now,
        };
        // Read after the state. A record naming another pid is a previous holder's: this
        // holder has not recorded itself yet, and its pid alone has to do. (If the lock
        // changed hands meanwhile, the caller's CAS on `s` fails.)
        let rec = self.word().owner_rec.load(Ordering::Acquire);
        (rec >> 32) as u32 != pid || rec as u32 == start_digest(now)
    }

    /// The holder's pid, from the state word: for messages only (any value a peer wrote);
    /// `None` while the lock is free.
    pub(crate) fn holder_pid(&self) -> Option<u32> {
        let s = self.word().state.load(Ordering::Acquire);
        Some((s & !WAITERS) >> PID_SHIFT).filter(|&p| p != 0)
    }

    /// Whether a live process holds the lock, without taking it.
    pub(crate) fn held(&self) -> bool {
        let s = self.word().state.load(Ordering::Acquire);
        s != UNLOCKED && (s & !WAITERS == self.me || self.holder_alive(s))
    }

    /// Writes this thread's identity beside the state word just acquired.
    #[inline]
    fn record_owner(&self) {
        let w = self.word();
        let pid = u64::from(self.me >> PID_SHIFT);
        w.owner_rec.store(
            pid << 32 | u64::from(start_digest(self.my_start)),
            Ordering::Release,
        );
        w.owner_tid.store(thread_id(), Ordering::Relaxed);
    }

    /// Unlocks, waking one waiter if any may be asleep. Releases only a lock this process
    /// holds: if another took it over meanwhile (a peer that judged us dead, or scribbled on
    /// the word), it is theirs now and left alone.
    ///
    /// # Safety
    /// The calling thread holds the lock.
    #[inline]
    pub(crate) unsafe fn unlock(&self) {
        let w = self.word();
        let mut s = w.state.load(Ordering::Relaxed);
        if s & !WAITERS != self.me {
            return;
        }
        // Clear the identity first: a holder dying between these stores and the release still
        // leaves its pid in `state` for the liveness check.
        w.owner_tid.store(0, Ordering::Relaxed);
        w.owner_rec.store(0, Ordering::Relaxed);
        loop {
            match w
                .state
                .compare_exchange_weak(s, UNLOCKED, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) if now & !WAITERS == self.me => s = now,
                Err(_) => return,
            }
        }
        if s & WAITERS != 0 {
            ulock_wake(&w.state);
        }
    }
}

/// 32 bits of a start time, for the owner record (collisions need a reused pid too).
fn start_digest(start: u64) -> u32 {
    (start ^ (start >> 32)) as u32
}

/// This thread's system-wide id (unique for the life of the system, unlike pthread_t).
fn thread_id() -> u64 {
    let mut id = 0u64;
    // SAFETY: pthread_self() is always valid for the calling thread and `id` is writable.
    unsafe { libc::pthread_threadid_np(libc::pthread_self(), &mut id) };
    id
}

// ---------------------------------------------------------------------------------- waits

/// `__ulock` waits need no per-process state.
#[derive(Debug)]
pub(crate) struct Waiter;

impl Waiter {
    pub(crate) fn new(_key: &str) -> io::Result<Self> {
        Ok(Waiter)
    }

    /// Sleeps while `*word == expected`, at most `timeout`. Spurious returns are allowed.
    #[doc(alias = "__ulock_wait")]
    pub(crate) fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        ulock_wait(word, expected, timeout);
    }

    /// Wakes one sleeper on `word`.
    #[doc(alias = "__ulock_wake")]
    pub(crate) fn wake(&self, word: &AtomicU32) {
        ulock_wake(word);
    }
}

// ------------------------------------------------------------------------------ processes

pub(crate) fn current_pid() -> u32 {
    std::process::id()
}

/// Start time of `pid` in microseconds since the epoch; `Gone` if no such process is alive
/// (zombies count as dead); `Hidden` if it exists but cannot be inspected (`proc_pidinfo`
/// with `PROC_PIDTBSDINFO` needs the same user, or root).
#[doc(alias = "proc_pidinfo")]
pub(crate) fn start_time(pid: u32) -> Process {
    // A pid read from shared memory is untrusted: 0 is the kernel, and pid_t is an i32.
    let Some(p) = i32::try_from(pid).ok().filter(|&p| p > 0) else {
        return Process::Gone;
    };
    // SAFETY: proc_bsdinfo is plain data, valid when zeroed.
    let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::proc_bsdinfo>() as i32;
    // SAFETY: `info` is writable for `size` bytes, the size passed.
    let n =
        unsafe { libc::proc_pidinfo(p, libc::PROC_PIDTBSDINFO, 0, (&raw mut info).cast(), size) };
    if n != size {
        // SAFETY: kill with signal 0 only checks for existence and permission.
        let gone = unsafe { libc::kill(p, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        return if gone { Process::Gone } else { Process::Hidden };
    }
    if info.pbi_status == libc::SZOMB {
        return Process::Gone;
    }
    Process::Running(
        info.pbi_start_tvsec
            .saturating_mul(1_000_000)
            .saturating_add(info.pbi_start_tvusec),
    )
}

/// macOS has no cheap way to learn the current CPU (no `sched_getcpu`): always "unknown"
/// (`u32::MAX`). The adaptive wait then never sees the setter on its own CPU and always
/// spins first (bounded by its learnt budget) before yielding and sleeping.
pub(crate) fn current_cpu() -> u32 {
    u32::MAX
}
