//! Errors of the building blocks: names, segments, mutexes and events.
//!
//! The request channel and the buffer pool have their own error enums
//! ([`CallError`](crate::CallError), [`PoolError`](crate::PoolError)) that wrap this one for
//! failures while setting up.

use std::io;

/// What went wrong in a segment, mutex or event operation.
///
/// OS errors are kept as [`source()`](std::error::Error::source), never flattened to text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The service name is empty, too long, or has a character outside `[A-Za-z0-9._-]`.
    #[error("invalid service name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A live process already owns an object of this name.
    #[error("{name:?} is already owned by {}", running(*pid))]
    AlreadyRunning {
        /// The service name.
        name: String,
        /// The process that owns it (0: a creator that has not recorded itself yet).
        pid: u32,
    },
    /// Windows: the name belongs to a dead owner's object that another process still has
    /// open. A section lives while any handle to it exists and its name cannot be removed,
    /// so it cannot be created again until the peers holding it close it (or exit).
    #[error(
        "{name:?}: its dead owner's object is still open in another process \
         (Windows keeps a section while any handle exists); close those peers and retry"
    )]
    StillMapped {
        /// The service name.
        name: String,
    },
    /// No object of this name exists.
    #[error("no shared object named {name:?} exists")]
    NotFound {
        /// The service name.
        name: String,
    },
    /// The OS refused access (objects are owner-only unless created otherwise).
    #[error("permission denied opening {name:?}")]
    PermissionDenied {
        /// The service name.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An object of this name exists but was not made by shmlink (bad magic). It is never
    /// removed by shmlink.
    #[error("{name:?} exists but is not a shmlink segment (left untouched)")]
    Foreign {
        /// The service name.
        name: String,
    },
    /// The name is taken by an object this process must not use or remove: owned by another
    /// user, a symbolic link, a FIFO or other non-regular file, writable by group or others
    /// without that being asked for, or a segment whose header names another service. It is
    /// never connected to, and never removed by shmlink (stale cleanup included).
    #[error("{name:?} is squatted: {reason} (owner uid {owner_uid}); left untouched")]
    Squatted {
        /// The service name.
        name: String,
        /// What is wrong with the object.
        reason: String,
        /// The uid that owns the object (the link itself, for a symbolic link).
        owner_uid: u32,
    },
    /// The segment was written by an incompatible layout version.
    #[error("{name:?} has layout version {found}, this build understands {expected}")]
    VersionMismatch {
        /// The service name.
        name: String,
        /// Version found in the header.
        found: u32,
        /// Version this build writes.
        expected: u32,
    },
    /// The segment holds another kind of object than was asked for.
    #[error("{name:?} holds a {found}, not a {expected}")]
    WrongKind {
        /// The service name.
        name: String,
        /// Kind found in the header.
        found: String,
        /// Kind that was asked for.
        expected: String,
    },
    /// The segment's header or size is inconsistent.
    #[error("{name:?} is corrupt: {reason}")]
    Corrupt {
        /// The service name.
        name: String,
        /// What is inconsistent.
        reason: String,
    },
    /// The segment exists but its creator did not finish initialising it in time.
    #[error("{name:?} was not initialised in time by its creator")]
    NotReady {
        /// The service name.
        name: String,
    },
    /// Shared memory could not be reserved (e.g. /dev/shm is full).
    #[error("cannot reserve {size} bytes of shared memory for {name:?}")]
    NoSpace {
        /// The service name.
        name: String,
        /// Bytes asked for.
        size: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A blocking call ran out of time.
    #[error("timed out")]
    Timeout,
    /// The calling thread already holds this mutex.
    #[error("this thread already holds the mutex")]
    WouldDeadlock,
    /// The mutex can no longer be used (its state was left inconsistent). No backend
    /// returns it any more: every lock recovers from its owner's death.
    #[error("mutex is not recoverable")]
    Unrecoverable,
    /// Any other OS error, with the operation that failed.
    #[error("{op} failed for {name:?}")]
    Os {
        /// The operation, e.g. `shm_open`.
        op: &'static str,
        /// The service or OS object name.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn os(op: &'static str, name: &str, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::PermissionDenied => Error::PermissionDenied {
                name: name.to_owned(),
                source,
            },
            io::ErrorKind::NotFound => Error::NotFound {
                name: name.to_owned(),
            },
            _ => Error::Os {
                op,
                name: name.to_owned(),
                source,
            },
        }
    }
}

/// "running process 42", or a creator whose pid is not known yet.
fn running(pid: u32) -> String {
    match pid {
        0 => "a running process that is still creating it".to_owned(),
        pid => format!("running process {pid}"),
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `" by process <pid>"`, or nothing: who held a lock, for error messages.
pub(crate) fn holder(pid: &Option<u32>) -> String {
    pid.map(|p| format!(" by process {p}")).unwrap_or_default()
}
