//! Typed messages (feature `serde`): serde types over the request channel and the buffer
//! pool, encoded with [postcard](https://docs.rs/postcard), each side checking that its
//! peer speaks the same [`Schema`].
//!
//! Every frame starts with the schema's 64-bit fingerprint, so a peer built against another
//! schema gets [`TypedError::SchemaMismatch`] (at connect for a client, on the first message
//! for a pool Reader) instead of misread data. Decoding reads a private copy of the bytes:
//! what a peer writes into shared memory meanwhile cannot change what was checked.
//!
//! # Examples
//! ```
//! use serde::{Deserialize, Serialize};
//! use shmlink::typed::{self, Schema, TypedClient};
//! use shmlink::Server;
//!
//! #[derive(Serialize, Deserialize)]
//! enum Req { Get(String), Put(String, u64) }
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct NotFound;
//!
//! const KV: Schema = Schema::new("example.kv", 1);
//! # let name = format!("doc-typed-{}", std::process::id());
//! let handle = Server::builder(&name).create()?.spawn(typed::handler(KV, |req: Req| {
//!     match req {
//!         Req::Get(key) if key == "answer" => Ok(42u64),
//!         Req::Get(_) => Err(NotFound),
//!         Req::Put(_, value) => Ok(value),
//!     }
//! }))?;
//!
//! let mut client = TypedClient::<Req, u64, NotFound>::connect(&name, KV)?;
//! assert_eq!(client.call(&Req::Get("answer".into()))?, Ok(42));
//! assert_eq!(client.call(&Req::Get("question".into()))?, Err(NotFound));
//! handle.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::channel::{AppError, CallError, CallInfo, Client, Handler, SharedHandler};
use crate::pool::{PoolError, Reader, Writer};

pub use crate::schema::Schema;

/// What went wrong in a typed call or message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TypedError {
    /// The channel call failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The pool operation failed.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The peer speaks another schema.
    #[error("schema mismatch: we speak {ours}, the peer {theirs}")]
    SchemaMismatch {
        /// Our schema.
        ours: String,
        /// The peer's schema (its name and version where it said, else its fingerprint).
        theirs: String,
    },
    /// A value could not be encoded (e.g. it does not fit the channel's `max_message`).
    #[error("cannot encode the message: {0}")]
    Encode(String),
    /// The bytes received are not a valid message of the schema.
    #[error("cannot decode the message: {0}")]
    Decode(String),
}

/// Frame kinds, after the fingerprint.
const HELLO: u8 = 0;
const CALL: u8 = 1;
const HEADER: usize = 9;

/// Application error codes the typed server answers with (above any a user would pick).
const CODE_MISMATCH: u32 = 0xffff_ff01;
const CODE_BAD_FRAME: u32 = 0xffff_ff02;
const CODE_ENCODE: u32 = 0xffff_ff03;

fn frame(schema: Schema, kind: u8, body: &impl Serialize) -> Result<Vec<u8>, TypedError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&schema.fingerprint().to_le_bytes());
    out.push(kind);
    postcard::to_extend(body, out).map_err(|e| TypedError::Encode(e.to_string()))
}

/// Splits a frame into (fingerprint, kind, body).
fn parse(bytes: &[u8]) -> Option<(u64, u8, &[u8])> {
    let fp = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    Some((fp, *bytes.get(8)?, &bytes[HEADER..]))
}

/// A typed handler for a [`Server`](crate::Server): decodes each request, runs `f`, and
/// encodes its `Result<Resp, E>` for the caller. Clients of another schema are refused with
/// [`TypedError::SchemaMismatch`].
///
/// Serve it like any handler: `server.spawn(typed::handler(SCHEMA, f))`. With several
/// workers ([`Server::workers`](crate::ServerBuilder::workers)) `f` must be `Fn + Sync`.
pub fn handler<Req, Resp, E, F>(schema: Schema, f: F) -> TypedHandler<Req, Resp, E, F> {
    TypedHandler {
        schema,
        f,
        _types: PhantomData,
    }
}

/// See [`handler`].
pub struct TypedHandler<Req, Resp, E, F> {
    schema: Schema,
    f: F,
    _types: PhantomData<fn(Req) -> (Resp, E)>,
}

impl<Req, Resp, E, F> fmt::Debug for TypedHandler<Req, Resp, E, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedHandler")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// Marks the typed handler shape for [`Handler`] / [`SharedHandler`].
#[derive(Debug)]
pub enum Typed {}

impl<Req, Resp, E, F> TypedHandler<Req, Resp, E, F>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    E: Serialize,
{
    fn serve(
        schema: Schema,
        req: &[u8],
        resp: &mut [u8],
        f: impl FnOnce(Req) -> Result<Resp, E>,
    ) -> Result<usize, AppError> {
        let detail = |resp: &mut [u8], text: &str, code: u32| {
            let n = text.len().min(resp.len());
            resp[..n].copy_from_slice(&text.as_bytes()[..n]);
            AppError::with_detail(code, n)
        };
        // A private copy: a client writing its request meanwhile cannot change what we
        // decode after checking it.
        let req = req.to_vec();
        let Some((fp, kind, body)) = parse(&req) else {
            return Err(detail(resp, "frame too short", CODE_BAD_FRAME));
        };
        if fp != schema.fingerprint() {
            return Err(detail(resp, &schema.to_string(), CODE_MISMATCH));
        }
        match kind {
            HELLO => Ok(0),
            CALL => {
                let value: Req = postcard::from_bytes(body)
                    .map_err(|e| detail(resp, &e.to_string(), CODE_BAD_FRAME))?;
                let answer = f(value);
                match postcard::to_slice(&answer, resp) {
                    Ok(used) => Ok(used.len()),
                    Err(e) => Err(detail(resp, &e.to_string(), CODE_ENCODE)),
                }
            }
            _ => Err(detail(resp, "unknown frame kind", CODE_BAD_FRAME)),
        }
    }
}

impl<Req, Resp, E, F> Handler<Typed> for TypedHandler<Req, Resp, E, F>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    E: Serialize,
    F: FnMut(Req) -> Result<Resp, E>,
{
    fn handle(&mut self, _: &CallInfo, req: &[u8], resp: &mut [u8]) -> Result<usize, AppError> {
        let f = &mut self.f;
        Self::serve(self.schema, req, resp, f)
    }
}

impl<Req, Resp, E, F> SharedHandler<Typed> for TypedHandler<Req, Resp, E, F>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    E: Serialize,
    F: Fn(Req) -> Result<Resp, E> + Sync,
{
    fn handle(&self, _: &CallInfo, req: &[u8], resp: &mut [u8]) -> Result<usize, AppError> {
        Self::serve(self.schema, req, resp, &self.f)
    }
}

/// A client that sends `Req` and receives `Result<Resp, E>` from a [`handler`] of the same
/// [`Schema`].
pub struct TypedClient<Req, Resp, E> {
    client: Client,
    schema: Schema,
    _types: PhantomData<fn(Req) -> (Resp, E)>,
}

impl<Req, Resp, E> fmt::Debug for TypedClient<Req, Resp, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedClient")
            .field("client", &self.client)
            .field("schema", &self.schema)
            .finish()
    }
}

impl<Req, Resp, E> TypedClient<Req, Resp, E>
where
    Req: Serialize,
    Resp: DeserializeOwned,
    E: DeserializeOwned,
{
    /// Connects to the server `name` and checks that it speaks `schema`.
    ///
    /// # Errors
    /// [`TypedError::SchemaMismatch`] if it does not; otherwise as
    /// [`Client::connect`](crate::Client::connect).
    pub fn connect(name: &str, schema: Schema) -> Result<Self, TypedError> {
        Self::with_client(Client::connect(name)?, schema)
    }

    /// Wraps a connected client and checks that its server speaks `schema`.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub fn with_client(mut client: Client, schema: Schema) -> Result<Self, TypedError> {
        let hello = frame(schema, HELLO, &())?;
        client.call(&hello).map_err(|e| lift(e, schema))?;
        Ok(TypedClient {
            client,
            schema,
            _types: PhantomData,
        })
    }

    /// Sends `req` and waits for the handler's answer: `Ok(Ok(resp))`, or `Ok(Err(e))` with
    /// the handler's own error.
    ///
    /// # Errors
    /// [`TypedError::Call`] if the call failed; [`TypedError::Encode`] /
    /// [`TypedError::Decode`] if a value does not fit or the answer is malformed.
    pub fn call(&mut self, req: &Req) -> Result<Result<Resp, E>, TypedError> {
        self.call_inner(req, None)
    }

    /// As [`call`](Self::call), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`call`](Self::call); [`CallError::Timeout`] inside [`TypedError::Call`].
    pub fn call_timeout(
        &mut self,
        req: &Req,
        timeout: Duration,
    ) -> Result<Result<Resp, E>, TypedError> {
        self.call_inner(req, Some(timeout))
    }

    fn call_inner(
        &mut self,
        req: &Req,
        timeout: Option<Duration>,
    ) -> Result<Result<Resp, E>, TypedError> {
        let request = frame(self.schema, CALL, req)?;
        let answer = match timeout {
            Some(t) => self.client.call_timeout(&request, t),
            None => self.client.call(&request),
        }
        .map_err(|e| lift(e, self.schema))?;
        postcard::from_bytes(&answer).map_err(|e| TypedError::Decode(e.to_string()))
    }

    /// The underlying byte client.
    pub fn into_inner(self) -> Client {
        self.client
    }
}

/// Turns the typed server's own application errors back into typed errors.
fn lift(e: CallError, ours: Schema) -> TypedError {
    match e {
        CallError::Application { code, detail } => {
            let text = String::from_utf8_lossy(&detail).into_owned();
            match code {
                CODE_MISMATCH => TypedError::SchemaMismatch {
                    ours: ours.to_string(),
                    theirs: text,
                },
                CODE_BAD_FRAME => TypedError::Decode(format!("the server refused: {text}")),
                CODE_ENCODE => TypedError::Encode(format!("the server could not: {text}")),
                code => TypedError::Call(CallError::Application { code, detail }),
            }
        }
        e => TypedError::Call(e),
    }
}

/// A pool [`Writer`] that sends `T`s.
pub struct TypedWriter<T> {
    writer: Writer,
    schema: Schema,
    _type: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for TypedWriter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedWriter")
            .field("writer", &self.writer)
            .field("schema", &self.schema)
            .finish()
    }
}

impl<T: Serialize> TypedWriter<T> {
    /// Sends `T`s of `schema` through `writer`.
    pub fn new(writer: Writer, schema: Schema) -> Self {
        TypedWriter {
            writer,
            schema,
            _type: PhantomData,
        }
    }

    /// Encodes `value` into a pool buffer and sends it.
    ///
    /// # Errors
    /// [`TypedError::Encode`]; [`TypedError::Pool`] as [`Writer::send`].
    pub fn send(&self, value: &T) -> Result<(), TypedError> {
        let bytes = frame(self.schema, CALL, value)?;
        let mut buf = self.writer.acquire()?;
        buf.extend_from_slice(&bytes)?;
        self.writer.send(buf).map_err(PoolError::from)?;
        Ok(())
    }

    /// The underlying byte Writer.
    pub fn into_inner(self) -> Writer {
        self.writer
    }
}

/// A pool [`Reader`] that receives `T`s.
pub struct TypedReader<T> {
    reader: Reader,
    schema: Schema,
    _type: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for TypedReader<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedReader")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> TypedReader<T> {
    /// Receives `T`s of `schema` through `reader`.
    pub fn new(reader: Reader, schema: Schema) -> Self {
        TypedReader {
            reader,
            schema,
            _type: PhantomData,
        }
    }

    /// Waits for the next message and decodes it (from a private copy).
    ///
    /// # Errors
    /// [`TypedError::SchemaMismatch`] for a message of another schema (it is consumed);
    /// [`TypedError::Decode`]; [`TypedError::Pool`] as [`Reader::recv`].
    pub fn recv(&self) -> Result<T, TypedError> {
        self.decode(self.reader.recv()?.copy_to_vec())
    }

    /// As [`recv`](Self::recv), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`recv`](Self::recv); [`PoolError::Timeout`] inside [`TypedError::Pool`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, TypedError> {
        self.decode(self.reader.recv_timeout(timeout)?.copy_to_vec())
    }

    fn decode(&self, bytes: Vec<u8>) -> Result<T, TypedError> {
        let Some((fp, CALL, body)) = parse(&bytes) else {
            return Err(TypedError::Decode("not a typed message".into()));
        };
        if fp != self.schema.fingerprint() {
            return Err(TypedError::SchemaMismatch {
                ours: self.schema.to_string(),
                theirs: format!("fingerprint {fp:#018x}"),
            });
        }
        postcard::from_bytes(body).map_err(|e| TypedError::Decode(e.to_string()))
    }

    /// The underlying byte Reader.
    pub fn into_inner(self) -> Reader {
        self.reader
    }
}
