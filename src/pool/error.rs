//! The pool's errors: what went wrong, and the buffer handed back when a send fails.

use std::fmt;
use std::time::Duration;

use super::buf::WriteBuf;
use crate::error::{holder, Error};

/// What went wrong in a pool operation.
///
/// **Was the message sent?** Every error of [`Writer::send`](crate::Writer::send) and
/// [`send_timeout`](crate::Writer::send_timeout) hands the buffer back in a [`SendError`]
/// and means *not sent*: the message was not queued, so nobody will receive it and sending
/// it again cannot duplicate it. No pool error means "maybe sent". The other calls (create,
/// connect, acquire, receive) have no message in flight. See the crate's
/// [delivery guarantees](crate#delivery).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Setting up or opening the pool's shared objects failed (names, segments, mutexes,
    /// events, the service thread). From a send (copy-on-send into a new pool): not sent.
    #[error(transparent)]
    Setup(Error),
    /// A live Reader already serves this name (from [`Reader::create`](crate::Reader::create);
    /// no message involved).
    #[error("a Reader for {name:?} is already running (pid {pid})")]
    AlreadyRunning {
        /// The service name.
        name: String,
        /// The running Reader's process id.
        pid: u32,
    },
    /// The [`PoolConfig`](crate::PoolConfig) values do not fit together (no message
    /// involved).
    #[error("invalid pool configuration: {0}")]
    InvalidConfig(String),
    /// No Reader serves the pool (none was started, it stopped and removed the pool, or it
    /// died and no new one has adopted the pool yet). From a send: not sent.
    #[error("no Reader serves this pool")]
    NoReader,
    /// No buffer became free within the timeout. From a send (copy-on-send): not sent.
    #[error(
        "no free buffer within the timeout (the pool is at its maximum or the Reader is slow)"
    )]
    PoolFull,
    /// No buffer became free within the timeout, and the Reader could not add one because
    /// shared memory is full (Linux: the tmpfs behind /dev/shm). From a send (copy-on-send):
    /// not sent.
    #[error("no free buffer within the timeout, and no room in shared memory to add one")]
    NoSpace,
    /// No message arrived within the timeout (a receive: nothing was taken from the queue).
    #[error("no message within the timeout")]
    Timeout,
    /// A buffer cannot grow this large. From a send (a copy that does not fit the new pool):
    /// not sent.
    #[error("{requested} bytes exceed the pool's max_buffer_size of {max}")]
    TooLarge {
        /// Bytes asked for.
        requested: usize,
        /// The pool's `max_buffer_size`.
        max: usize,
    },
    /// The buffer is no longer held by this Writer (the index was repaired or reset). From a
    /// send: not sent.
    #[error("this buffer is no longer held by this Writer")]
    NotOwner,
    /// Another process held the pool's lock for as long as this call waits for it: 5 s, for
    /// the calls that do not wait otherwise ([`Writer::send`](crate::Writer::send),
    /// [`Reader::try_recv`](crate::Reader::try_recv), `stats`, `validate`, growing a
    /// buffer). A healthy peer holds the lock for microseconds, and a dead one's is taken
    /// over at once, so the holder is alive and stalled: stopped (SIGSTOP, a debugger) or
    /// stuck. Nothing is wrong with the pool; the call can be retried. Calls with a timeout
    /// wait for the lock until their deadline and then return their own timeout error;
    /// blocking calls without one ([`Reader::recv`](crate::Reader::recv),
    /// [`Writer::acquire`](crate::Writer::acquire)) wait for as long as the holder lives.
    /// From a send: not sent.
    #[error("the pool lock stayed held{} for {waited:?}", holder(.pid))]
    LockHeld {
        /// The holder's process id, as it recorded it beside the lock (`None` if it has not;
        /// a misbehaving peer can write anything there: for messages only).
        pid: Option<u32>,
        /// How long this call waited for the lock.
        waited: Duration,
    },
    /// The pool's shared state is inconsistent (a crashed or hostile process); the text says
    /// what. The Reader repairs what it can and counts it in
    /// [`PoolStats::repairs`](crate::PoolStats::repairs). From a send: not sent.
    #[error("pool index is corrupt: {0}")]
    Corrupt(String),
}

impl From<Error> for PoolError {
    /// Lifts [`Error::AlreadyRunning`] into [`PoolError::AlreadyRunning`]; wraps the rest in
    /// [`PoolError::Setup`].
    fn from(e: Error) -> Self {
        match e {
            Error::AlreadyRunning { name, pid } => PoolError::AlreadyRunning { name, pid },
            e => PoolError::Setup(e),
        }
    }
}

/// A buffer that could not be sent, handed back with the reason (crossbeam style).
///
/// # Examples
/// ```
/// # use shmlink::{PoolConfig, Reader, Writer};
/// # let name = format!("doc-senderr-{}", std::process::id());
/// # let reader = Reader::create(&name, PoolConfig::default())?;
/// # let writer = Writer::connect(&name)?;
/// let buf = writer.acquire()?;
/// if let Err(e) = writer.send(buf) {
///     eprintln!("not sent: {}", e.error());
///     let _buf = e.into_inner(); // retry later, or drop it to release it
/// }
/// # drop(reader.try_recv()?); // leave nothing queued: the pool goes with the Reader
/// # Ok::<(), shmlink::PoolError>(())
/// ```
pub struct SendError(Box<(WriteBuf, PoolError)>);

impl SendError {
    pub(super) fn new(buf: WriteBuf, error: PoolError) -> SendError {
        SendError(Box::new((buf, error)))
    }

    /// Why the buffer was not sent.
    pub fn error(&self) -> &PoolError {
        &self.0 .1
    }

    /// The buffer, to retry or drop.
    pub fn into_inner(self) -> WriteBuf {
        self.0 .0
    }

    /// Splits into the buffer and the reason.
    pub fn into_parts(self) -> (WriteBuf, PoolError) {
        *self.0
    }
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("error", self.error())
            .field("len", &self.0 .0.len())
            .finish()
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sending a pool buffer failed: {}", self.error())
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error())
    }
}

impl From<SendError> for PoolError {
    fn from(e: SendError) -> Self {
        e.into_parts().1
    }
}
