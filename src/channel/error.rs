//! [`CallError`]: what can go wrong in a channel operation.

use std::time::Duration;

use crate::error::holder;

/// What went wrong in a channel operation.
///
/// **Did the request run?** Each variant says, for an error of a call
/// ([`Client::call`](crate::Client::call) and its forms), whether the server's handler ran
/// for the request:
/// - *not executed*: the handler never saw it; calling again cannot run it twice
///   ([`NoServer`](Self::NoServer), [`ServerBusy`](Self::ServerBusy),
///   [`TooLarge`](Self::TooLarge), [`ShuttingDown`](Self::ShuttingDown),
///   [`Disconnected`](Self::Disconnected), [`LockHeld`](Self::LockHeld),
///   [`Setup`](Self::Setup));
/// - *maybe executed*: it may have run, once, or be running still
///   ([`Timeout`](Self::Timeout), [`ServerGone`](Self::ServerGone),
///   [`HandlerPanicked`](Self::HandlerPanicked), [`Protocol`](Self::Protocol)).
///
/// A request is never run twice by the channel itself. See the crate's
/// [delivery guarantees](crate#delivery).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No live server serves this name. Not executed.
    #[error("no server is running for {name:?}")]
    NoServer {
        /// The service name.
        name: String,
    },
    /// Every slot of the server is owned by a connected client. Not executed.
    #[error("server {name:?} is busy: all {slots} slots are taken")]
    ServerBusy {
        /// The service name.
        name: String,
        /// The server's slot count.
        slots: u32,
    },
    /// The request is larger than the server's `max_message`. Not executed.
    #[error("request of {len} bytes exceeds the server's max_message of {max} bytes")]
    TooLarge {
        /// The request length.
        len: usize,
        /// The server's limit.
        max: usize,
    },
    /// No answer arrived in time. Maybe executed: the server may have served the request or
    /// still be working on it; its late answer is discarded and never returned by a later
    /// call.
    #[error("no answer within the timeout")]
    Timeout,
    /// The server died or stopped while the call was in flight (or before a request could be
    /// submitted to a new one). Maybe executed: it may have died while running the handler.
    /// The next call tries to reconnect.
    #[error("the server went away during the call")]
    ServerGone,
    /// The server disconnected this client ([`ServerHandle::disconnect`](crate::ServerHandle::disconnect),
    /// or an idle client reaped for a newcomer, see
    /// [`ServerBuilder::idle_timeout`](crate::ServerBuilder::idle_timeout)) and no slot was
    /// free to reconnect. Not executed. The next call tries to reconnect again.
    #[error("the server disconnected this client and has no free slot to reconnect it")]
    Disconnected,
    /// Another process held the channel's slot lock for as long as this call waits for it
    /// while connecting (or reconnecting): until the deadline of
    /// [`connect_timeout`](crate::Client::connect_timeout) or of a `_timeout` call, 2 s
    /// without one. Clients hold that lock for microseconds to claim or release a slot, and a
    /// dead holder's is taken over at once, so the holder is alive and stalled: stopped
    /// (SIGSTOP, a debugger) or stuck. Not executed; connecting again can succeed once it
    /// lets go.
    #[error("the slot lock of {name:?} stayed held{} for {waited:?}", holder(.pid))]
    LockHeld {
        /// The service name.
        name: String,
        /// The holder's process id, as it recorded it beside the lock (`None` if it has not;
        /// a misbehaving peer can write anything there: for messages only).
        pid: Option<u32>,
        /// How long this connect waited for the lock.
        waited: Duration,
    },
    /// The server is shutting down and accepts no new calls. Not executed: the request was
    /// refused or withdrawn before any handler saw it.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A live server already serves this name (from creating a server; no request
    /// involved).
    #[error("a server for {name:?} is already running (pid {pid})")]
    AlreadyRunning {
        /// The service name.
        name: String,
        /// The running server's process id.
        pid: u32,
    },
    /// The server's handler panicked while serving this call (the server keeps running).
    /// Maybe executed: the handler ran, and whatever it did before panicking is done.
    #[error("the server's handler panicked")]
    HandlerPanicked,
    /// The server's handler answered the call with an application error: `code` and the
    /// `detail` bytes it wrote (the request was executed as far as the handler decided).
    #[error("the server's handler failed the call with application error {code}")]
    Application {
        /// The handler's error code.
        code: u32,
        /// The detail bytes the handler wrote (may be empty).
        detail: Vec<u8>,
    },
    /// The server's handler returned a response length beyond its response buffer; the call
    /// failed (the request was executed), the server keeps serving.
    #[error(
        "the server's handler returned a {len}-byte response, more than the {max}-byte buffer"
    )]
    BadResponse {
        /// The length the handler returned.
        len: usize,
        /// The response buffer's size (`max_message`).
        max: usize,
    },
    /// The server refused the request as malformed, or this client's slot holds values no
    /// correct peer writes (another process scribbled on it). Maybe executed: a scribbled
    /// slot cannot tell.
    #[error("protocol violation: {reason}")]
    Protocol {
        /// What was wrong.
        reason: &'static str,
    },
    /// The [`ServerBuilder`](crate::ServerBuilder) values are out of range (the message
    /// names the first one). No request involved.
    #[error("invalid channel configuration: {0}")]
    InvalidConfig(String),
    /// Setting up the channel failed (names, segments, mutexes, events). From a call (while
    /// connecting): not executed.
    #[error(transparent)]
    Setup(crate::Error),
}

impl From<crate::Error> for CallError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::AlreadyRunning { name, pid } => CallError::AlreadyRunning { name, pid },
            crate::Error::NotFound { name } => CallError::NoServer { name },
            e => CallError::Setup(e),
        }
    }
}

/// Why the server could not queue a notification for a client
/// ([`ClientTable::notify`](crate::ClientTable::notify)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// No such connection: it ended (the client left, died, or was disconnected), or the
    /// id is not one of this server's.
    #[error("client {id} is not connected")]
    NotConnected {
        /// The connection asked for.
        id: crate::ClientId,
    },
    /// The client has not read the last `depth` notifications sent to it: it does not keep
    /// up. Nothing was queued; the server never waits for a client.
    #[error("client {id} has {depth} notifications unread")]
    QueueFull {
        /// The connection.
        id: crate::ClientId,
        /// The queue's depth ([`ServerBuilder::notifications`](crate::ServerBuilder::notifications)).
        depth: u32,
    },
    /// The notification is larger than the server's notification size.
    #[error("notification of {len} bytes exceeds the server's limit of {max} bytes")]
    TooLarge {
        /// The notification's length.
        len: usize,
        /// The server's limit.
        max: usize,
    },
    /// The server has stopped.
    #[error("the server has stopped")]
    ServerStopped,
}
