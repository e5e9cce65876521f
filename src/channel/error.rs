//! [`CallError`]: what can go wrong in a channel operation.

/// What went wrong in a channel operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No live server serves this name.
    #[error("no server is running for {name:?}")]
    NoServer {
        /// The service name.
        name: String,
    },
    /// Every slot of the server is owned by a connected client.
    #[error("server {name:?} is busy: all {slots} slots are taken")]
    ServerBusy {
        /// The service name.
        name: String,
        /// The server's slot count.
        slots: u32,
    },
    /// The request is larger than the server's `max_message`.
    #[error("request of {len} bytes exceeds the server's max_message of {max} bytes")]
    TooLarge {
        /// The request length.
        len: usize,
        /// The server's limit.
        max: usize,
    },
    /// No answer arrived in time. The server may still be working on the request; its late
    /// answer is discarded and never returned by a later call.
    #[error("no answer within the timeout")]
    Timeout,
    /// The server died or stopped while the call was in flight (or before a request could be
    /// submitted to a new one). The next call tries to reconnect.
    #[error("the server went away during the call")]
    ServerGone,
    /// The server is shutting down and accepts no new calls.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A live server already serves this name.
    #[error("a server for {name:?} is already running (pid {pid})")]
    AlreadyRunning {
        /// The service name.
        name: String,
        /// The running server's process id.
        pid: u32,
    },
    /// The server's handler panicked while serving this call (the server keeps running).
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
    /// correct peer writes (another process scribbled on it).
    #[error("protocol violation: {reason}")]
    Protocol {
        /// What was wrong.
        reason: &'static str,
    },
    /// The [`ServerBuilder`](crate::ServerBuilder) values are out of range (the message
    /// names the first one).
    #[error("invalid channel configuration: {0}")]
    InvalidConfig(String),
    /// Setting up the channel failed (names, segments, mutexes, events).
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
