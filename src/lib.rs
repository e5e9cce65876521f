//! # shmlink
//!
//! Fast, crash-safe inter-process communication through shared memory on one machine.
//!
//! Start with [`Server`] / [`Client`] for request-response calls between processes, and
//! [`Reader`] / [`Writer`] for a zero-copy stream of buffers; both are built on the
//! building blocks below ([`Segment`], [`Mutex`], [`Event`], [`EventPair`]). Files of any
//! size go over a pool with [`send_file`] and a [`StreamReceiver`], beside other messages.
//! With the feature `async`, `AsyncClient`, `block_on_handler`, `AsyncReader` and
//! `AsyncWriter` are their async forms, for any executor.
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
//! ## Hello, shared memory
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
//! Per message, what success promises and what each error tells (the full page, with the
//! reasons: `docs/ARCHITECTURE.md`, "Delivery guarantees"):
//!
//! - **A call.** `Ok` from [`Client::call`] (and its other forms) is the answer of one run of
//!   the server's handler for this request. Each [`CallError`] says whether the request was
//!   *not executed* (the handler never saw it: [`ShuttingDown`](CallError::ShuttingDown),
//!   [`NoServer`](CallError::NoServer), [`ServerBusy`](CallError::ServerBusy),
//!   [`LockHeld`](CallError::LockHeld), [`TooLarge`](CallError::TooLarge),
//!   [`Setup`](CallError::Setup)) or *maybe executed*
//!   ([`Timeout`](CallError::Timeout), [`ServerGone`](CallError::ServerGone),
//!   [`HandlerPanicked`](CallError::HandlerPanicked), [`Protocol`](CallError::Protocol)).
//!   The channel never runs a request twice; retrying after "maybe executed" is the
//!   caller's choice.
//! - **A message.** `Ok` from [`Writer::send`] means the message is queued: it is delivered
//!   to the Reader serving the pool or, if that Reader stops or dies first, to the next
//!   [`Reader`] of the name. Every send error hands the buffer back and means *not sent*.
//! - **Exactly once** without crashes, across graceful Reader restarts too: a stopping
//!   Reader leaves what is queued to the next one (see [`Reader`], "Stopping").
//! - **At least once** across crashes: what a dead Reader had received and not released is
//!   delivered again, marked [`ReadBuf::redelivered`]; nothing queued is lost. (Unless the
//!   dead Reader's index is corrupt and cannot be adopted:
//!   [`Reader::adoption_refused`] says why.)
//! - **A notification.** `Ok` from [`ServerHandle::notify`] means it is queued for that
//!   connection: its client reads it, in the order sent, unless the connection ends first
//!   (then it is dropped with the connection). The server never waits for a slow client:
//!   a full queue is [`NotifyError::QueueFull`], nothing queued.
//! - **Order.** Each Writer's messages arrive in the order its sends returned, across
//!   restarts (after a crash, the redelivered ones come first). A client makes one call at
//!   a time, so its calls run in order.
//! - **Nothing left behind.** After a server's [`serve`](Server::serve) or
//!   [`ServerHandle::shutdown`] returns, or its handle is dropped, its channel is gone. A
//!   pool goes when its Reader stops with nothing queued; with messages queued it stays for
//!   the next Reader.

#![cfg_attr(docsrs, feature(doc_cfg))]

/// README.md's examples, compiled and run as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod admin;
#[cfg(feature = "async")]
mod asynch;
mod channel;
mod error;
mod name;
mod pool;
mod process;
mod region;
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
pub use segment::{Access, Segment, SegmentBuilder, DEFAULT_MODE};
pub use stream::{
    checksum, recv_file, recv_stream, send_file, send_stream, Checksum, FileSummary, Received,
    StreamError, StreamId, StreamReceiver, StreamStart, STREAM_VERSION,
};
pub use sync::{Event, EventPair, Locked, Mutex, MutexGuard, WaitStrategy};
