//! Plain-old-data messages (feature `pod`): [`bytemuck::Pod`] values written and read in
//! place, in pool buffers and in channel slots, with no encoding and no copy.
//!
//! A value starts its buffer or slot area, which is aligned to 64 bytes, so any type of
//! alignment up to 64 sits at its natural alignment (larger alignments do not compile). A
//! 16-byte trailer after the value carries the [`Schema`] fingerprint and the value's size,
//! so a peer built with another schema or another layout gets
//! [`PodError::SchemaMismatch`] instead of misread memory: at connect for a channel
//! client, on each message for a pool Reader.
//!
//! `Pod` (from bytemuck: `#[repr(C)]` or transparent, no padding, no pointers, valid for
//! every bit pattern) is what makes reading a peer's bytes in place sound: whatever a buggy
//! peer wrote, the value read is *a* valid value, never undefined behaviour. Readers see
//! shared memory as the crate's other zero-copy views do (see ARCHITECTURE "Zero-copy
//! views"): a peer that breaks the protocol can change the value while it is read, so check
//! what must be consistent after copying it out (`*msg` is a `Copy`).
//!
//! # Examples
//! ```
//! use bytemuck::{Pod, Zeroable};
//! use shmlink::pod::{PodReader, PodWriter};
//! use shmlink::{PoolConfig, Reader, Schema, Writer};
//!
//! #[derive(Clone, Copy, Pod, Zeroable)]
//! #[repr(C)]
//! struct Tick { seq: u64, price: f64, qty: u32, side: u32 }
//!
//! const TICKS: Schema = Schema::new("example.tick", 1);
//! # let name = format!("doc-pod-{}", std::process::id());
//! let reader = PodReader::<Tick>::new(Reader::create(&name, PoolConfig::default())?, TICKS);
//! let writer = PodWriter::<Tick>::new(Writer::connect(&name)?, TICKS);
//!
//! let mut tick = writer.acquire()?; // zeroed, in shared memory
//! tick.seq = 1;
//! tick.price = 101.5;
//! writer.send(tick)?;
//!
//! let got = reader.recv()?; // read in place
//! assert_eq!((got.seq, got.price), (1, 101.5));
//! # Ok::<(), shmlink::pod::PodError>(())
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

pub use bytemuck::{Pod, Zeroable};

use crate::channel::{AppError, CallError, CallInfo, Client, Handler, SharedHandler};
use crate::pool::{PoolError, ReadBuf, Reader, WriteBuf, Writer, WriterId};
use crate::schema::Schema;

/// What went wrong with a plain-old-data call or message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PodError {
    /// The channel call failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The pool operation failed.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The peer uses another schema, or another size for the schema's type.
    #[error("schema mismatch: we speak {ours}, the peer {theirs}")]
    SchemaMismatch {
        /// Our schema and type size.
        ours: String,
        /// The peer's, as far as its message says.
        theirs: String,
    },
    /// The bytes received are not a message of this layer (too short, or misaligned).
    #[error("not a plain-old-data message: {0}")]
    Malformed(String),
    /// The type does not fit the channel's `max_message` or the pool's `max_buffer_size`.
    #[error("a {size}-byte value does not fit in {room} bytes")]
    TooLarge {
        /// Bytes the value and its trailer need.
        size: usize,
        /// Bytes available.
        room: usize,
    },
}

/// Trailer kinds.
const VALUE: u32 = 0;
const HELLO: u32 = 1;
const TRAILER: usize = 16;

/// Application error codes the handler answers with (above any a user would pick).
const CODE_MISMATCH: u32 = 0xffff_fe01;
const CODE_BAD_FRAME: u32 = 0xffff_fe02;

/// Where a `T` and its trailer lie in a buffer: the value at 0, the trailer 8-aligned after
/// it.
struct Frame<T>(PhantomData<T>);

impl<T: Pod> Frame<T> {
    const SIZE: usize = std::mem::size_of::<T>();
    const TRAILER_AT: usize = Self::SIZE.next_multiple_of(8);
    const LEN: usize = Self::TRAILER_AT + TRAILER;
    /// Buffers and slot areas are 64-aligned: a value of larger alignment would not be.
    const ALIGN_OK: () = assert!(std::mem::align_of::<T>() <= 64, "alignment above 64");

    /// Writes the trailer of `kind` after the value.
    fn seal(buf: &mut [u8], schema: Schema, kind: u32) {
        let t = &mut buf[Self::TRAILER_AT..Self::LEN];
        t[..8].copy_from_slice(&schema.fingerprint().to_le_bytes());
        t[8..12].copy_from_slice(&(Self::SIZE as u32).to_le_bytes());
        t[12..].copy_from_slice(&kind.to_le_bytes());
    }

    /// Checks that `buf` is one value of `schema` (and of kind `kind`), returning the kind.
    fn check(buf: &[u8], schema: Schema) -> Result<u32, PodError> {
        let () = Self::ALIGN_OK;
        if buf.len() < TRAILER {
            return Err(PodError::Malformed(format!("{} bytes", buf.len())));
        }
        let t = &buf[buf.len() - TRAILER..];
        let word = |at: usize| u32::from_le_bytes(t[at..at + 4].try_into().expect("4 bytes"));
        let fingerprint = u64::from_le_bytes(t[..8].try_into().expect("8 bytes"));
        let (size, kind) = (word(8) as usize, word(12));
        if fingerprint != schema.fingerprint() || size != Self::SIZE || buf.len() != Self::LEN {
            return Err(PodError::SchemaMismatch {
                ours: format!("{schema} ({} bytes)", Self::SIZE),
                theirs: format!("fingerprint {fingerprint:#018x} ({size} bytes)"),
            });
        }
        Ok(kind)
    }

    fn value(buf: &[u8]) -> Result<&T, PodError> {
        let () = Self::ALIGN_OK;
        bytemuck::try_from_bytes(&buf[..Self::SIZE])
            .map_err(|e| PodError::Malformed(format!("{e:?}")))
    }

    fn value_mut(buf: &mut [u8]) -> Result<&mut T, PodError> {
        let () = Self::ALIGN_OK;
        bytemuck::try_from_bytes_mut(&mut buf[..Self::SIZE])
            .map_err(|e| PodError::Malformed(format!("{e:?}")))
    }
}

// ---------------------------------------------------------------------------------- pool

/// Sends `T` values through a pool, each written in place in its buffer.
pub struct PodWriter<T> {
    writer: Writer,
    schema: Schema,
    _type: PhantomData<fn(T)>,
}

impl<T: Pod> PodWriter<T> {
    /// Sends `T` values of `schema` through `writer`.
    pub fn new(writer: Writer, schema: Schema) -> Self {
        PodWriter {
            writer,
            schema,
            _type: PhantomData,
        }
    }

    /// A buffer holding a zeroed `T` to fill in place, then [`send`](Self::send).
    ///
    /// # Errors
    /// As [`Writer::acquire`]; [`PodError::TooLarge`] if `T` exceeds the pool's
    /// `max_buffer_size`.
    pub fn acquire(&self) -> Result<PodBuf<T>, PodError> {
        self.fill(self.writer.acquire()?)
    }

    /// As [`acquire`](Self::acquire), waiting at most `timeout` for a free buffer.
    ///
    /// # Errors
    /// As [`Writer::acquire_timeout`], or as [`acquire`](Self::acquire).
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<PodBuf<T>, PodError> {
        self.fill(self.writer.acquire_timeout(timeout)?)
    }

    fn fill(&self, mut buf: WriteBuf) -> Result<PodBuf<T>, PodError> {
        let () = Frame::<T>::ALIGN_OK;
        if Frame::<T>::LEN > buf.max_capacity() {
            return Err(PodError::TooLarge {
                size: Frame::<T>::LEN,
                room: buf.max_capacity(),
            });
        }
        buf.set_len(Frame::<T>::LEN)?;
        buf.fill(0);
        Frame::<T>::seal(&mut buf, self.schema, VALUE);
        // Checked once here: the buffer keeps its address until it is sent.
        Frame::<T>::value_mut(&mut buf)?;
        Ok(PodBuf {
            buf,
            _type: PhantomData,
        })
    }

    /// Sends the value written in `buf`.
    ///
    /// # Errors
    /// As [`Writer::send`] (the buffer goes back to the pool).
    pub fn send(&self, buf: PodBuf<T>) -> Result<(), PodError> {
        self.writer
            .send(buf.buf)
            .map_err(|e| PodError::Pool(e.into_parts().1))
    }

    /// Copies `value` into a buffer and sends it.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire) and [`send`](Self::send).
    pub fn send_value(&self, value: &T) -> Result<(), PodError> {
        let mut buf = self.acquire()?;
        *buf = *value;
        self.send(buf)
    }

    /// The untyped Writer.
    pub fn into_inner(self) -> Writer {
        self.writer
    }
}

impl<T> fmt::Debug for PodWriter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodWriter")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// A pool buffer holding one `T`, in place in shared memory: derefs (mutably) to it.
pub struct PodBuf<T> {
    buf: WriteBuf,
    _type: PhantomData<fn(T) -> T>,
}

impl<T: Pod> Deref for PodBuf<T> {
    type Target = T;
    fn deref(&self) -> &T {
        Frame::<T>::value(&self.buf).expect("checked when acquired")
    }
}

impl<T: Pod> DerefMut for PodBuf<T> {
    fn deref_mut(&mut self) -> &mut T {
        Frame::<T>::value_mut(&mut self.buf).expect("checked when acquired")
    }
}

impl<T> fmt::Debug for PodBuf<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodBuf").field("buf", &self.buf).finish()
    }
}

/// Receives `T` values from a pool, read in place.
pub struct PodReader<T> {
    reader: Reader,
    schema: Schema,
    _type: PhantomData<fn() -> T>,
}

impl<T: Pod> PodReader<T> {
    /// Receives `T` values of `schema` from `reader`.
    pub fn new(reader: Reader, schema: Schema) -> Self {
        PodReader {
            reader,
            schema,
            _type: PhantomData,
        }
    }

    /// The next value, waiting as long as it takes.
    ///
    /// # Errors
    /// As [`Reader::recv`]; [`PodError::SchemaMismatch`] or [`PodError::Malformed`] for a
    /// message that is not a `T` of this schema (it is consumed: the next call goes on).
    pub fn recv(&self) -> Result<PodMsg<T>, PodError> {
        self.check(self.reader.recv()?)
    }

    /// As [`recv`](Self::recv), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Reader::recv_timeout`], or as [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<PodMsg<T>, PodError> {
        self.check(self.reader.recv_timeout(timeout)?)
    }

    fn check(&self, buf: ReadBuf) -> Result<PodMsg<T>, PodError> {
        Frame::<T>::check(&buf, self.schema)?;
        Frame::<T>::value(&buf)?;
        Ok(PodMsg {
            buf,
            _type: PhantomData,
        })
    }

    /// The untyped Reader.
    pub fn into_inner(self) -> Reader {
        self.reader
    }
}

impl<T> fmt::Debug for PodReader<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodReader")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// A received `T`, in place in its pool buffer: derefs to it. Dropping it gives the buffer
/// back.
pub struct PodMsg<T> {
    buf: ReadBuf,
    _type: PhantomData<fn() -> T>,
}

impl<T> PodMsg<T> {
    /// Whether the message was delivered before, to a Reader that died holding it.
    pub fn redelivered(&self) -> bool {
        self.buf.redelivered()
    }

    /// The Writer that sent it.
    pub fn writer(&self) -> WriterId {
        self.buf.writer()
    }
}

impl<T: Pod> Deref for PodMsg<T> {
    type Target = T;
    fn deref(&self) -> &T {
        Frame::<T>::value(&self.buf).expect("checked when received")
    }
}

impl<T> fmt::Debug for PodMsg<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodMsg").field("buf", &self.buf).finish()
    }
}

// ------------------------------------------------------------------------------- channel

/// A handler for a [`Server`](crate::Server) that answers each `Req` with a `Resp`, both in
/// place in the client's slot: `f(&req, &mut resp)` gets a zeroed `resp` to fill. Clients
/// of another schema are refused at connect with [`PodError::SchemaMismatch`].
///
/// # Examples
/// ```
/// use shmlink::pod::{self, PodClient};
/// use shmlink::{Schema, Server};
///
/// const SUM: Schema = Schema::new("example.sum", 1);
/// # let name = format!("doc-pod-call-{}", std::process::id());
/// let handle = Server::builder(&name)
///     .create()?
///     .spawn(pod::handler(SUM, |req: &[u32; 4], resp: &mut u64| {
///         *resp = req.iter().map(|&x| u64::from(x)).sum();
///     }))?;
/// let mut client = PodClient::<[u32; 4], u64>::connect(&name, SUM)?;
/// assert_eq!(client.call(&[1, 2, 3, 4])?, 10);
/// // Or fill the request in place, in the slot:
/// let sum = client.call_in_place(|req| *req = [5; 4], |resp| *resp)?;
/// assert_eq!(sum, 20);
/// handle.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn handler<Req, Resp, F>(schema: Schema, f: F) -> PodHandler<Req, Resp, F> {
    PodHandler {
        schema,
        f,
        _types: PhantomData,
    }
}

/// See [`handler`].
pub struct PodHandler<Req, Resp, F> {
    schema: Schema,
    f: F,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp, F> fmt::Debug for PodHandler<Req, Resp, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodHandler")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// Marks the plain-old-data handler shape for [`Handler`] / [`SharedHandler`].
#[derive(Debug)]
pub enum PodShape {}

impl<Req: Pod, Resp: Pod, F> PodHandler<Req, Resp, F> {
    fn serve(
        schema: Schema,
        req: &[u8],
        resp: &mut [u8],
        f: impl FnOnce(&Req, &mut Resp),
    ) -> Result<usize, AppError> {
        let detail = |resp: &mut [u8], text: &str, code: u32| {
            let n = text.len().min(resp.len());
            resp[..n].copy_from_slice(&text.as_bytes()[..n]);
            AppError::with_detail(code, n)
        };
        let kind = match Frame::<Req>::check(req, schema) {
            Ok(kind) => kind,
            Err(PodError::SchemaMismatch { ours, .. }) => {
                return Err(detail(resp, &ours, CODE_MISMATCH))
            }
            Err(e) => return Err(detail(resp, &e.to_string(), CODE_BAD_FRAME)),
        };
        if resp.len() < Frame::<Resp>::LEN {
            return Err(detail(resp, "the response does not fit", CODE_BAD_FRAME));
        }
        if kind == HELLO {
            // A zeroed answer, so the client checks our `Resp` too.
            resp[..Frame::<Resp>::LEN].fill(0);
            Frame::<Resp>::seal(resp, schema, HELLO);
            return Ok(Frame::<Resp>::LEN);
        }
        let value =
            Frame::<Req>::value(req).map_err(|e| detail(resp, &e.to_string(), CODE_BAD_FRAME))?;
        resp[..Frame::<Resp>::LEN].fill(0);
        match Frame::<Resp>::value_mut(resp) {
            Ok(out) => f(value, out),
            Err(e) => return Err(detail(resp, &e.to_string(), CODE_BAD_FRAME)),
        }
        Frame::<Resp>::seal(resp, schema, VALUE);
        Ok(Frame::<Resp>::LEN)
    }
}

impl<Req: Pod, Resp: Pod, F: FnMut(&Req, &mut Resp)> Handler<PodShape>
    for PodHandler<Req, Resp, F>
{
    fn handle(&mut self, _: &CallInfo, req: &[u8], resp: &mut [u8]) -> Result<usize, AppError> {
        Self::serve(self.schema, req, resp, &mut self.f)
    }
}

impl<Req: Pod, Resp: Pod, F: Fn(&Req, &mut Resp) + Sync> SharedHandler<PodShape>
    for PodHandler<Req, Resp, F>
{
    fn handle(&self, _: &CallInfo, req: &[u8], resp: &mut [u8]) -> Result<usize, AppError> {
        Self::serve(self.schema, req, resp, &self.f)
    }
}

/// A client that sends `Req` values and receives `Resp` values from a [`handler`] of the
/// same [`Schema`], both in place in its slot.
pub struct PodClient<Req, Resp> {
    client: Client,
    schema: Schema,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req: Pod, Resp: Pod> PodClient<Req, Resp> {
    /// Connects to the server `name` and checks that it serves `schema` with these types'
    /// sizes.
    ///
    /// # Errors
    /// As [`Client::connect`]; [`PodError::SchemaMismatch`] if the server serves another
    /// schema; [`PodError::TooLarge`] if `Req` or `Resp` do not fit its `max_message`.
    pub fn connect(name: &str, schema: Schema) -> Result<Self, PodError> {
        Self::with_client(Client::connect(name)?, schema)
    }

    /// As [`connect`](Self::connect), over a connected `client`.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub fn with_client(mut client: Client, schema: Schema) -> Result<Self, PodError> {
        let need = Frame::<Req>::LEN.max(Frame::<Resp>::LEN);
        if let Some(room) = client.max_message().filter(|&room| room < need) {
            return Err(PodError::TooLarge { size: need, room });
        }
        let hello = client.call_with(
            |buf| {
                if let Some(frame) = buf.get_mut(..Frame::<Req>::LEN) {
                    frame.fill(0);
                    Frame::<Req>::seal(frame, schema, HELLO);
                }
                Frame::<Req>::LEN
            },
            |buf| Frame::<Resp>::check(buf, schema).map(drop),
        );
        hello.map_err(|e| lift(e, schema))??;
        Ok(PodClient {
            client,
            schema,
            _types: PhantomData,
        })
    }

    /// Sends `req` (copied into the slot) and returns the answer.
    ///
    /// # Errors
    /// As [`Client::call`]; [`PodError::Malformed`] or [`PodError::SchemaMismatch`] for an
    /// answer that is not a `Resp` of this schema.
    pub fn call(&mut self, req: &Req) -> Result<Resp, PodError> {
        self.call_in_place(|r| *r = *req, |resp| *resp)
    }

    /// The zero-copy call: `fill` writes the request in place in the slot (it gets a zeroed
    /// `Req`), `read` looks at the answer in place and returns what the caller keeps.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub fn call_in_place<R>(
        &mut self,
        fill: impl FnOnce(&mut Req),
        read: impl FnOnce(&Resp) -> R,
    ) -> Result<R, PodError> {
        self.exchange(fill, read, None)
    }

    /// As [`call`](Self::call), waiting at most `timeout` in all.
    ///
    /// # Errors
    /// [`CallError::Timeout`] (as [`PodError::Call`]), or as [`call`](Self::call).
    pub fn call_timeout(&mut self, req: &Req, timeout: Duration) -> Result<Resp, PodError> {
        self.exchange(|r| *r = *req, |resp| *resp, Some(timeout))
    }

    fn exchange<R>(
        &mut self,
        fill: impl FnOnce(&mut Req),
        read: impl FnOnce(&Resp) -> R,
        timeout: Option<Duration>,
    ) -> Result<R, PodError> {
        let schema = self.schema;
        let write = |buf: &mut [u8]| {
            // Slot areas are 64-aligned and hold the frame (checked at connect); a shorter
            // one makes the call fail with `TooLarge`.
            if let Some(frame) = buf.get_mut(..Frame::<Req>::LEN) {
                frame.fill(0);
                fill(Frame::<Req>::value_mut(frame).expect("an aligned slot area"));
                Frame::<Req>::seal(frame, schema, VALUE);
            }
            Frame::<Req>::LEN
        };
        let answer = |buf: &[u8]| {
            Frame::<Resp>::check(buf, schema)?;
            Frame::<Resp>::value(buf).map(read)
        };
        let r = match timeout {
            None => self.client.call_with(write, answer),
            Some(t) => self.client.call_with_timeout(write, answer, t),
        };
        r.map_err(|e| lift(e, schema))?
    }

    /// The untyped client.
    pub fn into_inner(self) -> Client {
        self.client
    }
}

impl<Req, Resp> fmt::Debug for PodClient<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodClient")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// A call error, with the handler's refusals turned back into what they say.
fn lift(e: CallError, ours: Schema) -> PodError {
    match e {
        CallError::Application { code, detail } if code == CODE_MISMATCH => {
            PodError::SchemaMismatch {
                ours: ours.to_string(),
                theirs: String::from_utf8_lossy(&detail).into_owned(),
            }
        }
        CallError::Application { code, detail } if code == CODE_BAD_FRAME => {
            PodError::Malformed(String::from_utf8_lossy(&detail).into_owned())
        }
        e => PodError::Call(e),
    }
}
