//! Process identity that survives pid reuse (for messages and as the fallback where the OS
//! has no kernel-held liveness token), and the record of a participant in a segment.

use crate::sys;

/// A participant's record in a segment, as others keep it in shared memory: its pid (for
/// messages) and the token its liveness is checked by (see `Segment::member` and
/// `Segment::is_alive`). Any values are safe to check.
pub(crate) use crate::sys::Member;

/// One process, identified by its pid and its start time, so that a recycled pid is never
/// mistaken for the process that used it before.
///
/// Pids say little across PID namespaces (containers): the same process has another pid
/// there, and a pid seen here may name another process. shmlink itself judges whether a
/// peer is alive by a lock the kernel holds for it where the OS has one (Linux), and keeps
/// `ProcessId`s for messages.
///
/// # Examples
/// ```
/// use shmlink::ProcessId;
/// let me = ProcessId::current();
/// assert!(me.is_alive());
/// assert_eq!(me.pid(), std::process::id());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessId {
    pid: u32,
    start_time: u64,
}

impl ProcessId {
    /// The calling process.
    pub fn current() -> Self {
        let pid = sys::current_pid();
        // Our own entry always exists; 0 only if /proc is unreadable, which then also makes
        // everyone's liveness unknowable and is caught by `is_alive` comparing equal values.
        let start_time = match sys::start_time(pid) {
            sys::Process::Running(start) => start,
            _ => 0,
        };
        ProcessId { pid, start_time }
    }

    /// An identity from its parts, e.g. as stored in shared memory by [`ProcessId::pid`] and
    /// [`ProcessId::start_time`]. Any values are safe: a bogus identity is simply not alive.
    pub fn new(pid: u32, start_time: u64) -> Self {
        ProcessId { pid, start_time }
    }

    pub(crate) fn from_raw(pid: u32, start_time: u64) -> Self {
        ProcessId { pid, start_time }
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The process start time in OS-specific units (clock ticks since boot on Linux).
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// Whether this process is still running (zombies count as dead). A process that exists
    /// but cannot be inspected (another user's, a hidden /proc entry) counts as running:
    /// "cannot tell" is never "dead". Safe to call on identities read from untrusted shared
    /// memory.
    pub fn is_alive(&self) -> bool {
        self.pid != 0
            && match sys::start_time(self.pid) {
                sys::Process::Running(start) => start == self.start_time,
                sys::Process::Gone => false,
                sys::Process::Hidden => true,
            }
    }
}
