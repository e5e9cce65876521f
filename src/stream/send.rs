//! The sending side: one stream from a `Read` through a Writer, aborted if it fails.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

use super::wire::{ChunkHeader, ABORT, DATA, END, HEADER, MAX_REASON, START};
use super::{io_error, Checksum, FileSummary, StreamError, StreamId};
use crate::{PoolError, Writer};

#[cfg(doc)]
use super::{recv_file, recv_stream, StreamReceiver};

/// Chunks are at least this big (the buffer grows to it if the pool allows).
const MIN_CHUNK: usize = 256 * 1024;
/// How long a failing sender waits at most for a buffer to send its abort in.
const ABORT_WAIT: Duration = Duration::from_secs(1);

/// Streams the file at `path` to the Reader in chunks; see [`send_stream`].
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmlink::{recv_file, send_file, PoolConfig, Reader, Writer};
/// # let name = format!("doc-file-{}", std::process::id());
/// # let dir = std::env::temp_dir();
/// # let (src, dst) = (dir.join(format!("{name}.src")), dir.join(format!("{name}.dst")));
/// std::fs::write(&src, b"the file's bytes")?;
/// let reader = Reader::create(&name, PoolConfig::default())?;
/// let writer = Writer::connect(&name)?;              // usually in another process
/// let idle = Duration::from_secs(5);
///
/// let from = src.clone();
/// let sender = std::thread::spawn(move || send_file(&writer, &from, idle));
/// let got = recv_file(&reader, &dst, idle)?;
/// assert_eq!(got, sender.join().unwrap()?);
/// assert_eq!(std::fs::read(&dst)?, b"the file's bytes");
/// # std::fs::remove_file(&src)?;
/// # std::fs::remove_file(&dst)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`StreamError::Io`] opening or reading the file; otherwise as [`send_stream`].
pub fn send_file(
    writer: &Writer,
    path: impl AsRef<Path>,
    idle: Duration,
) -> Result<FileSummary, StreamError> {
    let file = File::open(path).map_err(io_error("opening the source file"))?;
    let size = file
        .metadata()
        .map_err(io_error("reading the source file's size"))?
        .len();
    send_stream(writer, file, size, idle)
}

/// Streams `size` bytes from `source` through `writer` as one stream with a new random
/// [`StreamId`]: a START chunk, DATA chunks read straight into pool buffers (no
/// intermediate copy), and an END chunk with the [`Checksum`]. Waits at most `idle` for
/// each free buffer. Other Writers may use the pool meanwhile, for streams or ordinary
/// messages; the receiving side uses a [`StreamReceiver`] (or [`recv_stream`] /
/// [`recv_file`] on a pool that carries only this stream).
///
/// If anything fails after the START, an ABORT chunk with the error's text is sent (waiting
/// at most `min(idle, 1 s)` for a buffer), so that the receiver learns at once
/// ([`StreamError::Aborted`]) instead of waiting its idle time.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmlink::{recv_stream, send_stream, PoolConfig, Reader, Writer};
/// # let name = format!("doc-stream-{}", std::process::id());
/// let reader = Reader::create(&name, PoolConfig::default())?;
/// let writer = Writer::connect(&name)?;              // usually in another process
/// let idle = Duration::from_secs(5);
///
/// let data = vec![7u8; 300_000];
/// let sender = std::thread::spawn(move || send_stream(&writer, &data[..], 300_000, idle));
/// let mut out = Vec::new();
/// let got = recv_stream(&reader, &mut out, idle)?;
/// assert_eq!(got, sender.join().unwrap()?);
/// assert_eq!(out, vec![7u8; 300_000]);
/// # Ok::<(), shmlink::StreamError>(())
/// ```
///
/// # Errors
/// [`StreamError::Io`] reading; [`StreamError::Invalid`] if `source` ends before `size`
/// bytes; [`StreamError::Pool`] as [`Writer::acquire_timeout`] and
/// [`Writer::send_timeout`] (a Reader slower than `idle` gives `PoolFull`).
pub fn send_stream(
    writer: &Writer,
    source: impl Read,
    size: u64,
    idle: Duration,
) -> Result<FileSummary, StreamError> {
    let stream = StreamId::random();
    send_control(writer, idle, ChunkHeader::new(START, stream, 0, size), b"")?;
    let mut sent = 0; // the last sequence number sent
    send_body(writer, source, size, idle, stream, &mut sent).inspect_err(|e| {
        // Best effort: the receiver learns now rather than after its idle time.
        let reason = error_text(e);
        let reason = cut(
            &reason,
            MAX_REASON.min(writer.max_buffer_size().saturating_sub(HEADER)),
        );
        let abort = ChunkHeader::new(ABORT, stream, sent + 1, reason.len() as u64);
        let _ = send_control(writer, idle.min(ABORT_WAIT), abort, reason.as_bytes());
    })
}

/// The DATA and END chunks of [`send_stream`]; `sent` follows the last sequence number sent.
fn send_body(
    writer: &Writer,
    mut source: impl Read,
    size: u64,
    idle: Duration,
    stream: StreamId,
    sent: &mut u64,
) -> Result<FileSummary, StreamError> {
    let chunk = MIN_CHUNK.min(writer.max_buffer_size()).max(HEADER + 1);
    let mut sum = Checksum::new();
    let mut left = size;
    let mut chunks = 0;
    while left > 0 {
        let seq = *sent + 1;
        let mut buf = writer.acquire_timeout(idle)?;
        let cap = buf.capacity().max(chunk);
        buf.reserve(cap)?;
        let n = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(cap - HEADER);
        buf.set_len(HEADER + n)?;
        ChunkHeader::new(DATA, stream, seq, n as u64).write(&mut buf[..HEADER]);
        source.read_exact(&mut buf[HEADER..]).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                StreamError::Invalid(format!("the source ended {left} bytes short"))
            } else {
                io_error("reading the source")(e)
            }
        })?;
        sum.update(&buf[HEADER..]);
        writer.send_timeout(buf, idle).map_err(PoolError::from)?;
        *sent = seq;
        left -= n as u64;
        chunks += 1;
    }
    let checksum = sum.finish();
    send_control(
        writer,
        idle,
        ChunkHeader::new(END, stream, *sent + 1, checksum),
        b"",
    )?;
    Ok(FileSummary {
        stream,
        bytes: size,
        chunks,
        checksum,
    })
}

/// Sends one chunk holding `header` and `body`.
fn send_control(
    writer: &Writer,
    idle: Duration,
    header: ChunkHeader,
    body: &[u8],
) -> Result<(), StreamError> {
    let mut buf = writer.acquire_timeout(idle)?;
    buf.set_len(HEADER + body.len())?;
    header.write(&mut buf[..HEADER]);
    buf[HEADER..].copy_from_slice(body);
    writer.send_timeout(buf, idle).map_err(PoolError::from)?;
    Ok(())
}

/// `e` and its sources, each after a colon.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
