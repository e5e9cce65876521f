//! Streaming a file (or any `Read`) through a buffer pool in chunks, with a checksum.
//!
//! Built on the pool's public API alone: [`send_stream`] / [`send_file`] fill buffers of a
//! [`Writer`], [`recv_stream`] / [`recv_file`] take them from the [`Reader`].
//!
//! Each message starts with a 32-byte header (magic, kind, stream id, sequence number, a
//! value): a START message carries the total size, DATA messages the bytes in order, and an
//! END message the [`Checksum`] of all the bytes. The receiver copies each message out of
//! shared memory once, then checks and writes that copy (so a peer that scribbles on the
//! buffer cannot make it write bytes other than those it checked), and compares size and
//! checksum at the end. One stream at a time per pool: a message of another stream is an
//! error.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{PoolError, Reader, Writer};

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
    /// The stream was malformed, interleaved with other messages, short, or failed its
    /// size or checksum check; the text says what.
    #[error("bad stream: {0}")]
    Invalid(String),
}

fn io_error(op: &'static str) -> impl FnOnce(io::Error) -> StreamError {
    move |source| StreamError::Io { op, source }
}

const MAGIC: u32 = u32::from_le_bytes(*b"SLFS");
const START: u32 = 1;
const DATA: u32 = 2;
const END: u32 = 3;
const HEADER: usize = 32;
/// Chunks are at least this big (the buffer grows to it if the pool allows).
const MIN_CHUNK: usize = 256 * 1024;

/// What a file transfer moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSummary {
    /// Bytes of file content.
    pub bytes: u64,
    /// DATA messages used.
    pub chunks: u64,
    /// [`Checksum`] of the content.
    pub checksum: u64,
}

/// The header at the start of every stream message (little-endian on the wire).
#[derive(Debug, Clone, Copy)]
struct ChunkHeader {
    kind: u32,
    stream: u64,
    seq: u64,
    value: u64,
}

impl ChunkHeader {
    fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&self.kind.to_le_bytes());
        out[8..16].copy_from_slice(&self.stream.to_le_bytes());
        out[16..24].copy_from_slice(&self.seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.value.to_le_bytes());
    }

    fn read(m: &[u8]) -> Result<ChunkHeader, StreamError> {
        if m.len() < HEADER {
            return Err(StreamError::Invalid(format!(
                "a {}-byte message is not a stream chunk",
                m.len()
            )));
        }
        let u32_at = |o: usize| u32::from_le_bytes(m[o..o + 4].try_into().unwrap_or_default());
        let u64_at = |o: usize| u64::from_le_bytes(m[o..o + 8].try_into().unwrap_or_default());
        if u32_at(0) != MAGIC {
            return Err(StreamError::Invalid(
                "a message that is not a stream chunk arrived".into(),
            ));
        }
        Ok(ChunkHeader {
            kind: u32_at(4),
            stream: u64_at(8),
            seq: u64_at(16),
            value: u64_at(24),
        })
    }
}

/// A fast 64-bit checksum (four multiply-xor lanes over 32-byte blocks, then mixed with the
/// length). Detects corruption, reordering of blocks and truncation; it is not
/// cryptographic. The result does not depend on how the input is split into `update`s.
///
/// # Examples
/// ```
/// use shmlink::{checksum, Checksum};
/// let mut c = Checksum::new();
/// c.update(b"hello, ");
/// c.update(b"world");
/// assert_eq!(c.finish(), checksum(b"hello, world"));
/// assert_ne!(checksum(b"hello, world"), checksum(b"hello, World"));
/// ```
#[derive(Debug, Clone)]
pub struct Checksum {
    lanes: [u64; 4],
    pending: [u8; 32],
    pending_len: usize,
    total: u64,
}

const PRIME: u64 = 0x9E37_79B1_85EB_CA87;
const SEEDS: [u64; 4] = [
    0x243F_6A88_85A3_08D3,
    0x1319_8A2E_0370_7344,
    0xA409_3822_299F_31D0,
    0x082E_FA98_EC4E_6C89,
];

impl Default for Checksum {
    fn default() -> Self {
        Checksum::new()
    }
}

impl Checksum {
    /// A checksum of nothing yet.
    pub fn new() -> Checksum {
        Checksum {
            lanes: SEEDS,
            pending: [0; 32],
            pending_len: 0,
            total: 0,
        }
    }

    #[inline(always)]
    fn block(lanes: &mut [u64; 4], b: &[u8]) {
        for (k, lane) in lanes.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[8 * k..8 * k + 8]);
            *lane = (*lane ^ u64::from_le_bytes(w)).wrapping_mul(PRIME);
        }
    }

    /// Adds `data`.
    pub fn update(&mut self, mut data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        if self.pending_len > 0 {
            let take = (32 - self.pending_len).min(data.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            if self.pending_len < 32 {
                return;
            }
            let p = self.pending;
            Self::block(&mut self.lanes, &p);
            self.pending_len = 0;
        }
        let mut lanes = self.lanes;
        let mut blocks = data.chunks_exact(32);
        for b in &mut blocks {
            Self::block(&mut lanes, b);
        }
        self.lanes = lanes;
        let rest = blocks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    /// The checksum of everything added.
    pub fn finish(&self) -> u64 {
        let mut lanes = self.lanes;
        if self.pending_len > 0 {
            let mut last = [0u8; 32];
            last[..self.pending_len].copy_from_slice(&self.pending[..self.pending_len]);
            Self::block(&mut lanes, &last);
        }
        let mut h = self.total.wrapping_mul(PRIME);
        for l in lanes {
            h = (h ^ l).wrapping_mul(PRIME).rotate_left(31);
        }
        h ^ (h >> 29)
    }
}

/// The [`Checksum`] of `data`.
pub fn checksum(data: &[u8]) -> u64 {
    let mut c = Checksum::new();
    c.update(data);
    c.finish()
}

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

/// Streams `size` bytes from `source` through `writer`: a START message, chunks read
/// straight into pool buffers (no intermediate copy), and an END message with the
/// [`Checksum`]. Waits at most `idle` for each free buffer. The receiving side calls
/// [`recv_stream`] or [`recv_file`].
///
/// Each message starts with a 32-byte header (magic, kind, stream id, sequence number, a
/// value): START carries the size, DATA the bytes in order, END the checksum. One stream at
/// a time per pool: a message of another stream makes the receiver fail.
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
    mut source: impl Read,
    size: u64,
    idle: Duration,
) -> Result<FileSummary, StreamError> {
    let stream = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32);
    let chunk = MIN_CHUNK.min(writer.max_buffer_size()).max(HEADER + 1);
    let mut sum = Checksum::new();
    let mut seq = 0u64;
    send_control(writer, idle, stream, START, seq, size)?;
    let mut left = size;
    let mut chunks = 0;
    while left > 0 {
        seq += 1;
        let mut buf = writer.acquire_timeout(idle)?;
        let cap = buf.capacity().max(chunk);
        buf.reserve(cap)?;
        let n = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(cap - HEADER);
        buf.set_len(HEADER + n)?;
        ChunkHeader {
            kind: DATA,
            stream,
            seq,
            value: n as u64,
        }
        .write(&mut buf[..HEADER]);
        source.read_exact(&mut buf[HEADER..]).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                StreamError::Invalid(format!("the source ended {left} bytes short"))
            } else {
                io_error("reading the source")(e)
            }
        })?;
        sum.update(&buf[HEADER..]);
        writer.send_timeout(buf, idle).map_err(PoolError::from)?;
        left -= n as u64;
        chunks += 1;
    }
    let checksum = sum.finish();
    send_control(writer, idle, stream, END, seq + 1, checksum)?;
    Ok(FileSummary {
        bytes: size,
        chunks,
        checksum,
    })
}

fn send_control(
    writer: &Writer,
    idle: Duration,
    stream: u64,
    kind: u32,
    seq: u64,
    value: u64,
) -> Result<(), StreamError> {
    let mut buf = writer.acquire_timeout(idle)?;
    buf.set_len(HEADER)?;
    ChunkHeader {
        kind,
        stream,
        seq,
        value,
    }
    .write(&mut buf);
    writer.send_timeout(buf, idle).map_err(PoolError::from)?;
    Ok(())
}

/// Receives a stream sent by [`send_file`] / [`send_stream`] into the file at `path`
/// (created or truncated), waiting at most `idle` for each message. See [`send_file`] for an
/// example.
///
/// # Errors
/// As [`recv_stream`]; [`StreamError::Io`] creating or writing the file.
pub fn recv_file(
    reader: &Reader,
    path: impl AsRef<Path>,
    idle: Duration,
) -> Result<FileSummary, StreamError> {
    let file = File::create(path).map_err(io_error("creating the destination file"))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let summary = recv_stream(reader, &mut out, idle)?;
    out.flush()
        .map_err(io_error("writing the destination file"))?;
    Ok(summary)
}

/// Receives one stream sent by [`send_stream`] / [`send_file`] from `reader` into `sink`,
/// checking order, size and checksum; waits at most `idle` for each message. Each message
/// is copied out of shared memory once and released at once; the copy is what is checked
/// and written. See [`send_stream`] for an example.
///
/// # Errors
/// [`StreamError::Pool`] with [`PoolError::Timeout`] if no message arrives within `idle`;
/// [`StreamError::Invalid`] for a message out of order or of another stream, a size or
/// checksum mismatch; [`StreamError::Io`] writing.
pub fn recv_stream(
    reader: &Reader,
    mut sink: impl Write,
    idle: Duration,
) -> Result<FileSummary, StreamError> {
    // The message in private memory: copied once, then parsed, checked and written.
    let mut copy = Vec::new();
    let next = |copy: &mut Vec<u8>| -> Result<ChunkHeader, StreamError> {
        let m = reader.recv_timeout(idle)?;
        copy.resize(m.len(), 0);
        m.copy_to(copy);
        drop(m); // back to the free list before the (slower) write
        ChunkHeader::read(copy)
    };
    let h = next(&mut copy)?;
    if h.kind != START || h.seq != 0 {
        return Err(StreamError::Invalid(format!(
            "expected a stream start, got kind {} seq {}",
            h.kind, h.seq
        )));
    }
    let (stream, size) = (h.stream, h.value);
    let mut sum = Checksum::new();
    let (mut got, mut chunks, mut seq) = (0u64, 0u64, 0u64);
    loop {
        let h = next(&mut copy)?;
        if h.stream != stream {
            return Err(StreamError::Invalid(
                "a message of another stream arrived".into(),
            ));
        }
        seq += 1;
        if h.seq != seq {
            return Err(StreamError::Invalid(format!(
                "chunk {} arrived, expected {seq}",
                h.seq
            )));
        }
        match h.kind {
            DATA => {
                let data = &copy[HEADER..];
                if data.len() as u64 != h.value {
                    return Err(StreamError::Invalid(format!(
                        "chunk {seq} holds {} bytes, its header says {}",
                        data.len(),
                        h.value
                    )));
                }
                sum.update(data);
                sink.write_all(data).map_err(io_error("writing the sink"))?;
                got += data.len() as u64;
                chunks += 1;
            }
            END => {
                let checksum = sum.finish();
                if got != size {
                    return Err(StreamError::Invalid(format!(
                        "received {got} bytes, the sender announced {size}"
                    )));
                }
                if checksum != h.value {
                    return Err(StreamError::Invalid(format!(
                        "checksum mismatch: computed {checksum:#018x}, sender says {:#018x}",
                        h.value
                    )));
                }
                return Ok(FileSummary {
                    bytes: got,
                    chunks,
                    checksum,
                });
            }
            k => return Err(StreamError::Invalid(format!("unexpected chunk kind {k}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_split_independent() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let whole = checksum(&data);
        for split in [0, 1, 7, 31, 32, 33, 500, 999, 1000] {
            let mut c = Checksum::new();
            c.update(&data[..split]);
            for b in data[split..].chunks(17) {
                c.update(b);
            }
            assert_eq!(c.finish(), whole, "split at {split}");
        }
        let mut flipped = data.clone();
        flipped[500] ^= 1;
        assert_ne!(checksum(&flipped), whole);
        assert_ne!(checksum(&data[..999]), whole);
        assert_ne!(checksum(&[]), checksum(&[0]));
    }
}
