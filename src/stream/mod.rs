//! Streaming files (or any `Read`) through a buffer pool in chunks, with a checksum, on a
//! pool that other streams and ordinary messages share.
//!
//! Built on the pool's public API alone. [`send_stream`] / [`send_file`] fill buffers of a
//! [`Writer`] with chunks of one stream. A [`StreamReceiver`] takes everything its
//! [`Reader`] receives and sorts it: it tells you when a stream starts, writes the chunks
//! of each stream you accepted to the sink you gave it, tells you when the stream ended and
//! how (handing the sink back), and hands you every ordinary message, in order, as the
//! [`ReadBuf`] it came in.
//! [`recv_stream`] / [`recv_file`] receive one stream from a pool that carries nothing else
//! meanwhile.
//!
//! ```text
//!  Writer A: START(a) DATA(a,1) DATA(a,2) ............ END(a)
//!  Writer B:             START(b) DATA(b,1) ABORT(b, "read failed")
//!  Writer C:    "hello"                      "bye"
//!                 |       one pool queue (FIFO), one StreamReceiver
//!                 v
//!  Started(a) Message("hello") Started(b) Finished(b, Err(Aborted)) Message("bye")
//!  Finished(a, Ok(summary))       (a's and b's DATA go to their sinks in passing)
//! ```
//!
//! # Wire format
//! Every chunk starts with a 40-byte header, little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic, `b"shmlstrm"` |
//! | 8..10 | format version ([`STREAM_VERSION`]) |
//! | 10..12 | kind: START, DATA, END or ABORT |
//! | 12..16 | zero |
//! | 16..24 | stream id: random, one per transfer ([`StreamId`]) |
//! | 24..32 | sequence number in the stream: START 0, each DATA the next, END / ABORT last |
//! | 32..40 | START: the size; DATA: its byte count; END: the [`Checksum`]; ABORT: the reason's length |
//!
//! DATA carries the bytes after the header, ABORT the sender's reason (UTF-8). A message
//! that does not start with the magic is an ordinary message; so is, to a receiver, a
//! chunk of a version it does not speak (magic and version keep their places in every
//! version): it is handed over, never misread.
//!
//! # Trust
//! The receiver copies each chunk out of shared memory once, then checks and writes that
//! copy (a peer that scribbles on the buffer cannot make it write bytes other than those it
//! checked); it checks each stream's order (sequence numbers), its Writer, its size and its
//! checksum. A chunk that breaks them ends that stream with [`StreamError::Invalid`], never
//! the others.
//!
//! # Ending
//! A stream ends with its END (checked), its sender's ABORT ([`StreamError::Aborted`]: the
//! sender's source failed, or it could not go on), its Writer gone
//! ([`StreamError::WriterGone`]: its process died or, on Linux, it dropped the Writer; the
//! receiver checks every 100 ms, by [`Reader::writer_alive`], and reports it once
//! everything the Writer sent is received), or `idle` without a chunk while nothing is
//! queued ([`StreamError::Pool`] with [`PoolError::Timeout`]).

mod checksum;
mod receiver;
mod send;
mod wire;

use std::fmt;
use std::io;

use crate::PoolError;

pub use checksum::{checksum, Checksum};
pub use receiver::{recv_file, recv_stream, Received, StreamReceiver, StreamStart};
pub use send::{send_file, send_stream};
pub use wire::STREAM_VERSION;

#[cfg(doc)]
use crate::{ReadBuf, Reader, Writer};

/// What went wrong while streaming.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A pool operation failed: no Reader, no buffer or message within the idle time, ...
    #[error("the pool failed while streaming")]
    Pool(#[from] PoolError),
    /// Reading the source or writing the sink failed.
    #[error("{op} failed")]
    Io {
        /// What was being done, e.g. `"reading the source"`.
        op: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The stream was malformed, out of order, short, or failed its size or checksum check;
    /// the text says what.
    #[error("bad stream: {0}")]
    Invalid(String),
    /// The sender gave up mid-stream (its source failed, or it could not send) and said
    /// why.
    #[error("the sender aborted the stream: {reason}")]
    Aborted {
        /// The sender's reason, e.g. `"reading the source failed: Input/output error"`.
        reason: String,
    },
    /// The Writer sending the stream went away before its end: its process died or exited,
    /// or (Linux) it dropped the Writer. Everything it sent was received.
    #[error("the Writer sending the stream (pid {pid}) is gone")]
    WriterGone {
        /// The Writer's process id.
        pid: u32,
    },
    /// [`recv_stream`] / [`recv_file`] received something other than their stream: an
    /// ordinary message or another stream. They expect a pool that carries only their
    /// stream; use a [`StreamReceiver`] on a shared one.
    #[error("{0} arrived while receiving one stream; use a StreamReceiver on a shared pool")]
    Unexpected(String),
}

fn io_error(op: &'static str) -> impl FnOnce(io::Error) -> StreamError {
    move |source| StreamError::Io { op, source }
}

/// One transfer's id: random, drawn by the sender for each stream.
///
/// Its [`Display`](fmt::Display) is 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub(super) u64);

impl StreamId {
    pub(super) fn random() -> StreamId {
        StreamId(uuid::Uuid::new_v4().as_u64_pair().0)
    }

    /// The id as a number, as it travels in each chunk.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What a transfer moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSummary {
    /// The stream it travelled as.
    pub stream: StreamId,
    /// Bytes of content.
    pub bytes: u64,
    /// DATA chunks used.
    pub chunks: u64,
    /// [`Checksum`] of the content.
    pub checksum: u64,
}
