//! # shmlink
//!
//! Fast, crash-safe inter-process communication through shared memory on one machine: a
//! request **channel** (one server, many clients, worker threads) and a zero-copy buffer
//! **pool** (one Reader owns the buffers, many Writers fill them), built on named segments,
//! a mutex that survives its owner's death, and timed events. A process that crashes never
//! wedges the others, and a restarted server or Reader carries on where the last one
//! stopped.
//!
//! ## A request channel
//! ```
//! use shmlink::{Client, Server};
//! # let name = format!("doc-crate-echo-{}", std::process::id());
//! // The server process: a worker thread answers each request in place.
//! let handle = Server::builder(&name).create()?.spawn(|req: &[u8], resp: &mut [u8]| {
//!     resp[..req.len()].copy_from_slice(req);
//!     resp[..req.len()].make_ascii_uppercase();
//!     req.len() // the response's length
//! })?;
//!
//! // Any number of client processes (here the same one, for brevity):
//! let mut client = Client::connect(&name)?;
//! assert_eq!(client.call(b"hello")?, b"HELLO");
//!
//! handle.shutdown(); // answers what is in flight, refuses new calls, removes the channel
//! # Ok::<(), shmlink::CallError>(())
//! ```
//!
//! ## A buffer pool
//! ```
//! use std::time::Duration;
//! use shmlink::{PoolConfig, Reader, Writer};
//! # let name = format!("doc-crate-pool-{}", std::process::id());
//! // The Reader process owns the buffers.
//! let reader = Reader::create(&name, PoolConfig::default())?;
//!
//! // A Writer process fills a free buffer in place and sends it: nothing is copied.
//! let writer = Writer::connect(&name)?;
//! let mut buf = writer.acquire()?;
//! buf.extend_from_slice(b"frame 1")?;
//! writer.send(buf)?;
//!
//! let frame = reader.recv_timeout(Duration::from_secs(1))?;
//! assert_eq!(&*frame, b"frame 1");
//! drop(frame); // the buffer goes back to the free list
//! # Ok::<(), shmlink::PoolError>(())
//! ```
//!
//! Both examples clean up after themselves: a server removes its channel when it stops, a
//! Reader its pool when it stops with nothing queued.
//!
//! # Map
//!
//! Everything below is exported at the crate root (`shmlink::Client`, ...). The
//! [`guide`] explains what the API promises and how to run it: [delivery
//! guarantees](guide::delivery), [footprint](guide::footprint), [permissions and
//! multi-user services](guide::permissions), [containers](guide::containers),
//! [cleanup](guide::cleanup), [platform notes](guide::platforms).
//!
//! **Request channel.**
//! - Serving: [`Server`] (built by [`ServerBuilder`]: slots, message size, workers, mode),
//!   run with `serve`, `spawn` or `poll`; a spawned server's [`ServerHandle`], and the
//!   [`ShutdownHandle`] and [`ClientTable`] that other threads can hold.
//! - Calling: [`Client`] (`connect`, `call`, `call_with`, notifications).
//! - Handlers: [`Handler`] for one worker ([`Single`] model, `FnMut`), [`SharedHandler`] for
//!   several ([`Free`] model, `Fn + Sync`); the argument forms [`Bytes`] and [`WithInfo`]
//!   (with the caller's [`CallInfo`]); [`AppError`] fails one call.
//! - Connections: [`ClientId`], [`ClientInfo`], [`ConnectionEvent`], [`DisconnectReason`],
//!   [`Broadcast`], [`ServerStats`].
//! - First instance serves, later ones call: [`server_or_client`], [`Role`].
//! - Errors: [`CallError`], [`NotifyError`].
//!
//! **Buffer pool.**
//! - Receiving: [`Reader`] (configured by [`PoolConfig`]), handing out [`ReadBuf`]s.
//! - Sending: [`Writer`], handing out [`WriteBuf`]s; [`WriterId`] names a message's sender.
//! - [`PoolStats`]; errors: [`PoolError`], and [`SendError`], which hands the buffer back.
//!
//! **Streams: files of any size over a pool, beside other messages.**
//! - Sending: [`send_file`], [`send_stream`].
//! - Receiving: [`StreamReceiver`] (yielding [`Received`] and [`StreamStart`]), or
//!   [`recv_file`], [`recv_stream`] on a pool that carries nothing else.
//! - [`FileSummary`], [`StreamId`], [`Checksum`], [`checksum`], [`STREAM_VERSION`];
//!   errors: [`StreamError`].
//!
//! **Building blocks** (what the channel and the pool are made of, usable on their own).
//! - [`Segment`] (built by [`SegmentBuilder`]): named shared memory with a common header.
//! - [`Mutex`], locked as [`Locked`] (`Ok` or `OwnerDied`) holding a [`MutexGuard`].
//! - [`Event`] (auto-reset, timed), [`EventPair`] (exec / done); [`WaitStrategy`] says how
//!   waits spin or sleep, for these and for clients, servers, Readers and Writers.
//!
//! **Names, permissions, processes, errors.**
//! - [`ServiceName`], [`MAX_NAME_LEN`]; [`Access`], [`DEFAULT_MODE`]; [`ProcessId`];
//!   [`Error`], [`Result`]; [`Schema`] names a message format for `typed` and `pod`.
//!
//! **Modules.**
//! - [`admin`]: list and clean up objects (what the `shmlink` tool shows).
//! - [`guide`]: the pages above.
#![cfg_attr(
    feature = "serde",
    doc = "- [`typed`]: serde types over a channel or a pool, with a schema check (feature `serde`)."
)]
#![cfg_attr(
    not(feature = "serde"),
    doc = "- `typed`: serde types over a channel or a pool, with a schema check (feature `serde`)."
)]
#![cfg_attr(
    feature = "pod",
    doc = "- [`pod`]: plain-old-data values in place in pool buffers and channel slots (feature `pod`)."
)]
#![cfg_attr(
    not(feature = "pod"),
    doc = "- `pod`: plain-old-data values in place in pool buffers and channel slots (feature `pod`)."
)]
//!
#![cfg_attr(
    feature = "async",
    doc = "Feature `async`: [`AsyncClient`], [`block_on_handler`], [`AsyncReader`] and [`AsyncWriter`] are the async forms of the client, the server's handler, the Reader and the Writer, for any executor (no runtime dependency)."
)]
#![cfg_attr(
    not(feature = "async"),
    doc = "Feature `async`: `AsyncClient`, `block_on_handler`, `AsyncReader` and `AsyncWriter` are the async forms of the client, the server's handler, the Reader and the Writer, for any executor (no runtime dependency)."
)]
//!
//! Feature `cli` builds the `shmlink` tool (`list`, `inspect`, `clean`); feature `tracing`
//! makes servers and pools emit `tracing` events (connections, shutdown, failed calls,
//! adoption, repairs).
//!
//! # The building blocks
//!
//! ```text
//!  channel (Server / Client)      pool (Reader / Writer)       <- what most users want
//!  ------------------------------------------------------
//!  sync: Mutex (owner-death safe), Event, EventPair           <- building blocks
//!  segment: named Segment + common header, stale cleanup
//!  ------------------------------------------------------
//!  sys: shm objects, lock words, futex / __ulock / named events, kernel-held liveness
//! ```
//!
//! ```
//! use std::time::Duration;
//! use shmlink::{EventPair, Mutex, Locked};
//! # let pid = std::process::id();
//! # let (lock_name, pair_name) = (format!("doc-hello-m-{pid}"), format!("doc-hello-p-{pid}"));
//! // process A
//! let lock = Mutex::create(&lock_name)?;
//! let pair = EventPair::create(&pair_name)?;
//! // process B (here the same process, for brevity)
//! let peer_lock = Mutex::open(&lock_name)?;
//! let peer_pair = EventPair::open(&pair_name)?;
//!
//! peer_pair.exec().set();                                   // B: "request ready"
//! assert!(pair.exec().wait_timeout(Duration::from_secs(1))); // A sees it
//! if let Locked::OwnerDied(_guard) = peer_lock.lock()? {
//!     // a process died holding the lock: repair the shared state here
//! }
//! pair.done().set();                                        // A: "answer ready"
//! assert!(peer_pair.done().wait_timeout(Duration::from_secs(1)));
//! # Ok::<(), shmlink::Error>(())
//! ```
//!
//! # Delivery
//!
//! In short (the whole story, error by error: [`guide::delivery`]):
//! - `Ok` from [`Client::call`] is the answer of one run of the handler; each
//!   [`CallError`] says whether the request was not executed, executed or maybe executed.
//!   The channel never runs a request twice.
//! - `Ok` from [`Writer::send`] means queued: delivered exactly once while nobody crashes
//!   (graceful Reader restarts included), at least once across a Reader's crash (marked
//!   [`ReadBuf::redelivered`]). Every send error hands the buffer back: not sent.
//! - Each Writer's messages arrive in the order its sends returned; a client's calls run
//!   in order; a connection's notifications arrive in order, and die with the connection.

#![cfg_attr(docsrs, feature(doc_cfg))]

/// README.md's examples, compiled and run as doctests so they cannot rot (with the
/// features they show: `cargo test --all-features --doc ReadmeDoctests`).
#[cfg(all(doctest, feature = "serde", feature = "async"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod admin;
#[cfg(feature = "async")]
mod asynch;
mod channel;
mod error;
pub mod guide;
mod name;
#[cfg(feature = "pod")]
#[cfg_attr(docsrs, doc(cfg(feature = "pod")))]
pub mod pod;
mod pool;
mod process;
mod region;
mod schema;
mod segment;
mod stream;
mod sync;
mod sys;
mod trace;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub mod typed;

#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub use asynch::{block_on, block_on_handler, AsyncClient, AsyncReader, AsyncWriter};
pub use channel::{
    server_or_client, AppError, Broadcast, Bytes, CallError, CallInfo, Client, ClientId,
    ClientInfo, ClientTable, ConnectionEvent, DisconnectReason, Free, Handler, NotifyError, Role,
    Server, ServerBuilder, ServerHandle, ServerStats, SharedHandler, ShutdownHandle, Single,
    WithInfo,
};
pub use error::{Error, Result};
pub use name::{ServiceName, MAX_NAME_LEN};
pub use pool::{
    PoolConfig, PoolError, PoolStats, ReadBuf, Reader, SendError, WriteBuf, Writer, WriterId,
};
pub use process::ProcessId;
pub use schema::Schema;
pub use segment::{Access, Segment, SegmentBuilder, DEFAULT_MODE};
pub use stream::{
    checksum, recv_file, recv_stream, send_file, send_stream, Checksum, FileSummary, Received,
    StreamError, StreamId, StreamReceiver, StreamStart, STREAM_VERSION,
};
pub use sync::{Event, EventPair, Locked, Mutex, MutexGuard, WaitStrategy};
