//! Process identity that survives pid reuse.

use crate::sys;

/// One process, identified by its pid and its start time, so that a recycled pid is never
/// mistaken for the process that used it before.
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
        ProcessId {
            pid,
            start_time: sys::start_time(pid).unwrap_or(0),
        }
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

    /// Whether this process is still running (zombies count as dead). Safe to call on
    /// identities read from untrusted shared memory.
    pub fn is_alive(&self) -> bool {
        self.pid != 0 && sys::start_time(self.pid) == Some(self.start_time)
    }
}
