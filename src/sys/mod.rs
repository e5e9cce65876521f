//! The only code that calls the OS.
//!
//! Everything above this module (`segment`, `sync`, and through them `channel` and `pool`)
//! is platform-independent. Each backend (`linux.rs`, `macos.rs`, `windows.rs`, picked by the
//! one `cfg_attr` switch below) provides the same items with the same meaning:
//!
//! * `OS_NAME_PREFIX`, `MAX_OS_NAME`: how OS object names are spelled and how long they may
//!   be (macOS: 31 bytes).
//! * `Shm`: a named shared-memory object mapped read-write into this process.
//!   `Shm::create(os_name, size, mode, group)` creates exclusively (an existing object gives
//!   `io::ErrorKind::AlreadyExists`), takes the object's *liveness token* before sizing it,
//!   sizes it and reserves its memory up front so that a full /dev/shm is an error now, never
//!   a SIGBUS later. `Shm::open(os_name, &Expect)` maps an existing object at its current size
//!   (which may be 0 if its creator has not sized it yet), without following a symbolic link
//!   and without blocking (a FIFO or a leased file under the name cannot hang it), and refuses
//!   what `Expect` does not allow (`OpenError::Squatted`: another owner unless
//!   `Expect::shared` admits it, see `Perm::admits`; not a regular file; writable by group or
//!   others). `create` gives the object its permission bits `mode` and, if asked, its `group`
//!   before anyone can see it (POSIX; ignored on Windows); `Shm::perm()` reads them back
//!   (`None` on Windows). `Shm::unlink_stale(os_name, &shm, wait)` removes the name if it
//!   still names that object, trying the cleanup lock for at most `wait`
//!   (`io::ErrorKind::WouldBlock` when it gives up); mappings stay valid; Windows has nothing
//!   to remove. `as_ptr()`/`len()`: the mapping, page-aligned, zero-filled at creation, valid
//!   while the `Shm` lives.
//! * Liveness token: a lock the kernel drops when the holder's last reference to the object
//!   goes (process death included, in any PID namespace). The creator holds it from before
//!   the object is sized until its `Shm` is dropped; `Shm::take_token` takes a free one over;
//!   `Shm::token()` tells another holder's token apart (`Token::Unknown` where the OS has no
//!   such lock: macOS and Windows). Linux: an open-file-description lock on byte
//!   [`TOKEN_BYTE`] of the object; the cleanup lock is one on byte [`CLEANUP_BYTE`].
//! * `SIZE_ROUNDING`: an opened object's `len()` may exceed the size its creator asked for by
//!   less than this, because macOS and Windows only report sizes in whole pages (1 on Linux:
//!   exact). The segment header records the exact size.
//! * `Presence` (`Shm::presence()`): this process's proof of life in one object, shared by
//!   every handle made from the same `Shm`. `me()` is the `Member` record others keep of us
//!   (in a lock word, a slot, a directory entry): the pid, for messages, and a `token` that
//!   the backend can check; `alive(member)` checks such a record: `Liveness::Dead` only when
//!   the OS says so, `Unknown` when it cannot tell (no permission, hidden /proc). Linux: the
//!   token is a random 31-bit *tag*; `me()` claims byte `TAG_BASE + tag` of the object with
//!   an open-file-description lock that the kernel drops with the description's last
//!   reference (process death included), and `alive` asks `F_OFD_GETLK` whether another
//!   description holds it, which works across PID namespaces. macOS and Windows: the token is
//!   the process start time, checked against the pid.
//! * `RawMutex`: a process-shared mutex that survives its owner's death. It lives in
//!   `MUTEX_STORAGE` bytes (8-aligned) of a segment and/or in a named kernel object derived
//!   from the key; `init` once by the creator before the segment is published, `open` by
//!   everyone else, both given the `Presence` of the object it lives in. `lock(timeout)`
//!   returns `LockStatus::OwnerDied` (and holds the lock) when the previous owner died
//!   holding it; the protected data may then need repair. Nothing a peer writes into the
//!   storage makes the lock write anywhere but that storage. `held()` says whether a live
//!   process holds it, without taking it; `holder_pid()` which pid the holder recorded (for
//!   messages only: any value a peer wrote), `None` while free or not recorded yet.
//! * `Waiter`: sleep until a 32-bit word in shared memory changes. `wait(word, expected,
//!   timeout)` returns at once if `*word != expected`, else sleeps until woken, the timeout,
//!   or spuriously; `wake(word)` wakes at least one sleeper. Callers recheck the word, so
//!   spurious returns are harmless. Linux: futex; macOS: `__ulock`; Windows: a named
//!   auto-reset event per word (WaitOnAddress does not cross processes).
//! * Processes: `current_pid()`, `start_time(pid)` (`Process::Running(start)`, `Gone` when
//!   no such process is alive, zombies included, `Hidden` when it exists but cannot be
//!   inspected), so that a (pid, start time) pair identifies one process even after its pid
//!   is reused. Pids are only a fallback where the OS has no kernel-held token (see
//!   `Presence`), and "cannot inspect" is never "dead".
//! * Scheduling: `current_cpu()`, `yield_now()`.
//!
//! Under `cfg(loom)` (model checking, see `sync::atomic`), `Waiter` and `yield_now()` are
//! loom models (`model` below) and the rest is compiled but not run; under loom and Miri,
//! `current_cpu()` is unknown (`u32::MAX`).

use std::time::Duration;

#[cfg_attr(target_os = "linux", path = "linux.rs")]
#[cfg_attr(target_os = "macos", path = "macos.rs")]
#[cfg_attr(windows, path = "windows.rs")]
#[cfg_attr(any(loom, miri), allow(dead_code))] // see `Waiter` and `current_cpu` below
mod os;

#[cfg(unix)]
mod unix;

#[cfg(loom)]
pub(crate) use model::Waiter;
#[cfg(not(any(loom, miri)))]
pub(crate) use os::current_cpu;
#[cfg(not(loom))]
pub(crate) use os::Waiter;
pub(crate) use os::{
    current_pid, start_time, Presence, RawMutex, Shm, MAX_OS_NAME, OS_NAME_PREFIX, SIZE_ROUNDING,
};

/// Byte of an object whose lock is the creator's liveness token (Linux; see the contract
/// above). Locks on bytes beyond the object's end are allowed, so it is taken before sizing.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) const TOKEN_BYTE: u64 = 0;
/// Byte of an object whose lock serialises the processes removing its name (Linux).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) const CLEANUP_BYTE: u64 = 1;
/// Byte `TAG_BASE + tag` of an object is locked by the participant whose tag is `tag`
/// (Linux; see `Presence`). Locks may lie beyond an object's end: no memory is reserved.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) const TAG_BASE: u64 = 1 << 32;

/// A participant's record, as others keep it in shared memory: its pid (for messages) and a
/// token its liveness is checked by (see `Presence`). Any values are safe to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct Member {
    pub(crate) pid: u32,
    pub(crate) token: u64,
}

/// What a liveness check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// The process (or its proof of life) is there.
    Alive,
    /// The OS says it is gone.
    Dead,
    /// The OS cannot tell (no permission, another namespace): to be treated as alive.
    Unknown,
}

/// What `start_time(pid)` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Process {
    /// Running, with this start time.
    Running(u64),
    /// No such process, or a zombie.
    Gone,
    /// It exists but cannot be inspected (another user, hidden /proc): not "dead".
    Hidden,
}

/// What an opener accepts besides an object that is a regular file owned by this process's
/// effective uid and writable by nobody else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Expect {
    /// The uid that must own the object (`None`: this process's effective uid).
    #[cfg_attr(windows, allow(dead_code))]
    pub(crate) owner: Option<u32>,
    /// Whether group or other write permission is acceptable.
    #[cfg_attr(windows, allow(dead_code))]
    pub(crate) shared_write: bool,
    /// The permission of a service shared between users (a pool whose index others may
    /// write), whose participants of other uids create objects under its names too: an
    /// object of another owner is then also accepted if [`Perm::admits`] it.
    #[cfg_attr(windows, allow(dead_code))]
    pub(crate) shared: Option<Perm>,
}

/// Permission bits and group of an object (POSIX; Windows has neither).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Perm {
    /// Permission bits (`st_mode & 0o7777`).
    pub(crate) mode: u32,
    /// Owning group.
    #[cfg_attr(windows, allow(dead_code))]
    pub(crate) gid: u32,
}

impl Perm {
    /// Whether group or others may write: a service shared between users.
    pub(crate) fn is_shared(self) -> bool {
        self.mode & 0o022 != 0
    }

    /// Whether only the group (not others) may write, so that the group decides who takes
    /// part: objects made for the service then carry its group.
    pub(crate) fn group_decides(self) -> bool {
        self.is_shared() && self.mode & 0o002 == 0
    }

    /// Why an object of another owner, with permission bits `mode` and group `gid`, is not
    /// one this service's participants may have made (`None`: it may be). The rule: the
    /// service is shared, the object's bits are within the service's, and its group is the
    /// service's where [`group_decides`](Self::group_decides).
    #[cfg_attr(windows, allow(dead_code))]
    pub(crate) fn admits(self, mode: u32, gid: u32) -> Option<String> {
        if !self.is_shared() {
            return Some(format!(
                "the service's mode {:o} lets no other user write",
                self.mode
            ));
        }
        if mode & !self.mode != 0 {
            return Some(format!(
                "its mode {mode:o} is wider than the service's {:o}",
                self.mode
            ));
        }
        if self.group_decides() && gid != self.gid {
            return Some(format!(
                "its group {gid} is not the service's group {}",
                self.gid
            ));
        }
        None
    }
}

/// Why `Shm::open` refused.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The OS call failed (no such object, permission denied, ...).
    Os(std::io::Error),
    /// The name is taken by something this process must not use or remove: a symbolic link,
    /// a FIFO or other non-regular file, an object of another owner, or one writable by
    /// others. `reason` says which, `owner_uid` who owns it.
    #[cfg_attr(windows, allow(dead_code))]
    Squatted { reason: String, owner_uid: u32 },
}

impl From<std::io::Error> for OpenError {
    fn from(e: std::io::Error) -> Self {
        OpenError::Os(e)
    }
}

/// What a probe of an object's liveness token found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    /// Another open of the object holds it: its creator (or adopter) is alive.
    Held,
    /// Nobody holds it: whoever created the object has closed it or died.
    Free,
    /// The OS cannot tell (no such lock here, or the probe failed).
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    Unknown,
}

/// Bytes reserved in shared memory for one mutex (the largest backend need, rounded to a
/// cache line).
pub(crate) const MUTEX_STORAGE: usize = 64;

/// How a lock attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockStatus {
    /// The lock is held; the previous owner released it normally.
    Acquired,
    /// The lock is held; the previous owner died holding it.
    OwnerDied,
    /// Not acquired: the timeout ran out (or, for `try_lock`, it was held).
    TimedOut,
}

/// Why a lock attempt failed.
#[derive(Debug)]
pub(crate) enum LockFail {
    /// The calling thread already holds the lock.
    WouldDeadlock,
    /// Any other OS error (the lock words make no OS call that can fail: Windows only).
    #[cfg_attr(not(windows), allow(dead_code))]
    Os(std::io::Error),
}

/// Gives up the CPU to another runnable thread, if any.
#[inline]
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// The kernel sleep as loom sees it: `wait` re-checks the word under one lock shared by all
/// words and sleeps on one condition variable (a timed wait may end at any time: it yields);
/// `wake` wakes every sleeper, which the contract allows.
#[cfg(loom)]
mod model {
    use crate::sync::atomic::{AtomicU32, Ordering};
    use loom::sync::{Condvar, Mutex};

    loom::lazy_static! {
        static ref FUTEX: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    }

    #[derive(Debug)]
    pub(crate) struct Waiter;

    impl Waiter {
        pub(crate) fn new(_key: &str) -> std::io::Result<Self> {
            Ok(Waiter)
        }

        pub(crate) fn wait(
            &self,
            word: &AtomicU32,
            expected: u32,
            timeout: Option<super::Duration>,
        ) {
            let guard = FUTEX.0.lock().unwrap();
            if word.load(Ordering::Relaxed) != expected {
                return;
            }
            if timeout.is_some() {
                drop(guard);
                return loom::thread::yield_now();
            }
            drop(FUTEX.1.wait(guard).unwrap());
        }

        pub(crate) fn wake(&self, _word: &AtomicU32) {
            drop(FUTEX.0.lock().unwrap());
            FUTEX.1.notify_all();
        }
    }
}

/// Unknown (`u32::MAX`) where the CPU number would make a run unrepeatable (loom replays
/// runs) or cannot be asked for (Miri).
#[cfg(any(loom, miri))]
pub(crate) fn current_cpu() -> u32 {
    u32::MAX
}

/// Splits an optional timeout into an absolute deadline, saturating far in the future.
pub(crate) fn deadline_after(timeout: Option<Duration>) -> Option<std::time::Instant> {
    timeout.and_then(|t| std::time::Instant::now().checked_add(t))
}
