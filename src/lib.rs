//! # shmlink
//!
//! Fast, crash-safe inter-process communication through shared memory on one machine.
//!
//! Start with [`Server`] / [`Client`] for request-response calls between processes, and
//! [`Reader`] / [`Writer`] for a zero-copy stream of buffers; both are built on the
//! building blocks below ([`Segment`], [`Mutex`], [`Event`], [`EventPair`]).
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

#![cfg_attr(docsrs, feature(doc_cfg))]

/// README.md's examples, compiled and run as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

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

pub use channel::{
    server_or_client, AppError, Bytes, CallError, CallInfo, Client, ClientId, Free, Handler, Role,
    Server, ServerBuilder, ServerHandle, SharedHandler, ShutdownHandle, Single, WithInfo,
};
pub use error::{Error, Result};
pub use name::{ServiceName, MAX_NAME_LEN};
pub use pool::{PoolConfig, PoolError, PoolStats, ReadBuf, Reader, SendError, WriteBuf, Writer};
pub use process::ProcessId;
pub use segment::{Segment, SegmentBuilder, DEFAULT_MODE};
pub use stream::{
    checksum, recv_file, recv_stream, send_file, send_stream, Checksum, FileSummary, StreamError,
};
pub use sync::{Event, EventPair, Locked, Mutex, MutexGuard, WaitStrategy};
