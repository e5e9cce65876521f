//! What a server runs for each call: the handler traits, the call's context, and the
//! application error a handler may answer with.
//!
//! A handler is a closure (or any type implementing [`Handler`]) in one of two shapes:
//! `|req: &[u8], resp: &mut [u8]| -> usize` for simple servers, or
//! `|call: &CallInfo, req: &[u8], resp: &mut [u8]| -> Result<usize, AppError>` when the
//! handler needs to know who calls or wants to fail a call with an error of its own.

use std::fmt;

/// Identifies one client connection: stable from connect to disconnect, never reused by a
/// later connection to the same slot of the same server (until its 32-bit counter wraps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(u64);

impl ClientId {
    pub(crate) fn new(slot: u32, epoch: u32) -> ClientId {
        ClientId(u64::from(slot) << 32 | u64::from(epoch))
    }

    /// The slot the connection owns.
    pub(crate) fn slot(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The connection's number on its slot.
    pub(crate) fn epoch(self) -> u32 {
        self.0 as u32
    }

    /// The number as one integer (for logs and maps).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0 >> 32, self.0 as u32)
    }
}

/// Who made the call a handler serves.
///
/// The values come from the calling client's slot in shared memory: a client that breaks
/// the protocol can make its own calls carry wrong values (never another client's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallInfo {
    pub(crate) client: ClientId,
    pub(crate) pid: u32,
    pub(crate) slot: u32,
    pub(crate) seq: u32,
}

impl CallInfo {
    /// The client connection the call came from.
    pub fn client(&self) -> ClientId {
        self.client
    }

    /// The calling process's id as the client recorded it (for messages; across PID
    /// namespaces it is the client's own view).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The slot the client owns (0-based, below the server's slot count).
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The call's sequence number on its connection.
    pub fn seq(&self) -> u32 {
        self.seq
    }
}

/// An application error a handler answers a call with; the caller receives it as
/// [`CallError::Application`](crate::CallError::Application).
///
/// # Examples
/// ```
/// use shmlink::{AppError, CallError, CallInfo, Client, Server};
/// # let name = format!("doc-apperr-{}", std::process::id());
/// let handle = Server::builder(&name).create()?.spawn(
///     |_: &CallInfo, req: &[u8], resp: &mut [u8]| -> Result<usize, AppError> {
///         if req.is_empty() {
///             let why = b"empty request";
///             resp[..why.len()].copy_from_slice(why);
///             return Err(AppError::with_detail(400, why.len()));
///         }
///         resp[..req.len()].copy_from_slice(req);
///         Ok(req.len())
///     },
/// )?;
/// let mut client = Client::connect(&name)?;
/// match client.call(b"") {
///     Err(CallError::Application { code: 400, detail }) => assert_eq!(detail, b"empty request"),
///     other => panic!("{other:?}"),
/// }
/// handle.shutdown();
/// # Ok::<(), shmlink::CallError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppError {
    code: u32,
    detail_len: usize,
}

impl AppError {
    /// An error with `code` and no detail.
    pub fn new(code: u32) -> AppError {
        AppError {
            code,
            detail_len: 0,
        }
    }

    /// An error with `code` whose detail is the first `len` bytes the handler wrote into the
    /// response buffer.
    pub fn with_detail(code: u32, len: usize) -> AppError {
        AppError {
            code,
            detail_len: len,
        }
    }

    /// The error code.
    pub fn code(&self) -> u32 {
        self.code
    }

    /// Bytes of detail at the start of the response buffer.
    pub fn detail_len(&self) -> usize {
        self.detail_len
    }
}

/// What a handler produced for one call.
pub(crate) type Outcome = Result<usize, AppError>;

/// The handler of a single-threaded server ([`Single`](crate::Single)): called for one call
/// at a time. Implemented for closures of both shapes (see the module docs); `Args` tells
/// the shapes apart ([`Bytes`] or [`WithInfo`]) and is inferred.
pub trait Handler<Args> {
    /// Serves one call: reads `req`, writes the answer into `resp` and returns its length.
    fn handle(&mut self, call: &CallInfo, req: &[u8], resp: &mut [u8]) -> Result<usize, AppError>;
}

/// The handler of a multi-threaded server ([`Free`](crate::Free)): called from several
/// workers at once. Implemented for `Fn + Sync` closures of both shapes.
pub trait SharedHandler<Args>: Sync {
    /// As [`Handler::handle`].
    fn handle(&self, call: &CallInfo, req: &[u8], resp: &mut [u8]) -> Result<usize, AppError>;
}

/// Marks the handler shape `|req, resp| -> usize`.
#[derive(Debug)]
pub enum Bytes {}

/// Marks the handler shape `|call, req, resp| -> Result<usize, AppError>`.
#[derive(Debug)]
pub enum WithInfo {}

impl<F: FnMut(&[u8], &mut [u8]) -> usize> Handler<Bytes> for F {
    #[inline]
    fn handle(&mut self, _: &CallInfo, req: &[u8], resp: &mut [u8]) -> Outcome {
        Ok(self(req, resp))
    }
}

impl<F: FnMut(&CallInfo, &[u8], &mut [u8]) -> Outcome> Handler<WithInfo> for F {
    #[inline]
    fn handle(&mut self, call: &CallInfo, req: &[u8], resp: &mut [u8]) -> Outcome {
        self(call, req, resp)
    }
}

impl<F: Fn(&[u8], &mut [u8]) -> usize + Sync> SharedHandler<Bytes> for F {
    #[inline]
    fn handle(&self, _: &CallInfo, req: &[u8], resp: &mut [u8]) -> Outcome {
        Ok(self(req, resp))
    }
}

impl<F: Fn(&CallInfo, &[u8], &mut [u8]) -> Outcome + Sync> SharedHandler<WithInfo> for F {
    #[inline]
    fn handle(&self, call: &CallInfo, req: &[u8], resp: &mut [u8]) -> Outcome {
        self(call, req, resp)
    }
}
