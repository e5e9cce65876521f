//! Streaming a file (or any `Read`) through a pool in chunks, with a checksum.
//!
//! Each message starts with a 32-byte [`ChunkHeader`]: a START message carries the total
//! size, DATA messages the bytes in order, and an END message the checksum of all the
//! bytes. The receiver writes the bytes out as they come and compares size and checksum at
//! the end. One stream at a time per pool: a message of another stream is an error.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::Duration;

use super::{PoolError, Reader, WriteBuf, Writer};

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

    fn read(m: &[u8]) -> Result<ChunkHeader, PoolError> {
        if m.len() < HEADER {
            return Err(PoolError::Stream(format!(
                "a {}-byte message is not a stream chunk",
                m.len()
            )));
        }
        let u32_at = |o: usize| u32::from_le_bytes(m[o..o + 4].try_into().unwrap_or_default());
        let u64_at = |o: usize| u64::from_le_bytes(m[o..o + 8].try_into().unwrap_or_default());
        if u32_at(0) != MAGIC {
            return Err(PoolError::Stream(
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

impl Writer {
    /// Streams the file at `path` to the Reader in chunks; see [`Writer::send_stream`].
    ///
    /// # Errors
    /// [`PoolError::Io`] reading the file; otherwise as [`Writer::send_stream`].
    pub fn send_file(&self, path: impl AsRef<Path>) -> Result<FileSummary, PoolError> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        self.send_stream(file, size)
    }

    /// Streams `size` bytes from `source` to the Reader: a START message, chunks read
    /// straight into pool buffers (no intermediate copy), and an END message with the
    /// [`Checksum`]. The receiving side calls [`Reader::recv_stream`] or
    /// [`Reader::recv_file`].
    ///
    /// # Examples
    /// ```
    /// # use std::time::Duration;
    /// # use shmlink::{PoolConfig, Reader, Writer};
    /// # let name = format!("doc-stream-{}", std::process::id());
    /// # let reader = Reader::create(&name, PoolConfig::default())?;
    /// let writer = Writer::connect(&name)?;
    /// let data = vec![7u8; 100_000];
    /// let sender = std::thread::spawn(move || writer.send_stream(&data[..], 100_000));
    /// let mut out = Vec::new();
    /// let got = reader.recv_stream(&mut out, Duration::from_secs(5))?;
    /// assert_eq!(got, sender.join().unwrap()?);
    /// assert_eq!(out.len(), 100_000);
    /// # Ok::<(), shmlink::PoolError>(())
    /// ```
    ///
    /// # Errors
    /// [`PoolError::Io`] reading; [`PoolError::Stream`] if `source` ends before `size`
    /// bytes; as [`Writer::acquire`] and [`Writer::send`].
    pub fn send_stream(&self, mut source: impl Read, size: u64) -> Result<FileSummary, PoolError> {
        let stream = super::index::now_ns() ^ (u64::from(std::process::id()) << 32);
        let chunk = MIN_CHUNK.min(self.max_buffer_size()).max(HEADER + 1);
        let mut sum = Checksum::new();
        let mut seq = 0u64;
        self.send_control(stream, START, seq, size)?;
        let mut left = size;
        let mut chunks = 0;
        while left > 0 {
            seq += 1;
            let mut buf = self.acquire_patiently()?;
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
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    PoolError::Stream(format!("the source ended {left} bytes short"))
                } else {
                    PoolError::Io(e)
                }
            })?;
            sum.update(&buf[HEADER..]);
            self.send(buf)?;
            left -= n as u64;
            chunks += 1;
        }
        let checksum = sum.finish();
        self.send_control(stream, END, seq + 1, checksum)?;
        Ok(FileSummary {
            bytes: size,
            chunks,
            checksum,
        })
    }

    fn acquire_patiently(&self) -> Result<WriteBuf, PoolError> {
        self.acquire_timeout(Duration::from_secs(30))
    }

    fn send_control(&self, stream: u64, kind: u32, seq: u64, value: u64) -> Result<(), PoolError> {
        let mut buf = self.acquire_patiently()?;
        buf.set_len(HEADER)?;
        ChunkHeader {
            kind,
            stream,
            seq,
            value,
        }
        .write(&mut buf);
        Ok(self.send(buf)?)
    }
}

impl Reader {
    /// Receives a stream sent by [`Writer::send_file`] into the file at `path` (created or
    /// truncated), waiting at most `idle` for each message.
    ///
    /// # Errors
    /// As [`Reader::recv_stream`]; [`PoolError::Io`] creating or writing the file.
    pub fn recv_file(
        &self,
        path: impl AsRef<Path>,
        idle: Duration,
    ) -> Result<FileSummary, PoolError> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        let summary = self.recv_stream(&mut out, idle)?;
        out.flush()?;
        Ok(summary)
    }

    /// Receives one stream sent by [`Writer::send_stream`] / [`Writer::send_file`] into
    /// `sink`, checking order, size and checksum.
    ///
    /// # Errors
    /// [`PoolError::Timeout`] if no message arrives within `idle`; [`PoolError::Stream`] for
    /// a message out of order or of another stream, a size or checksum mismatch;
    /// [`PoolError::Io`] writing.
    pub fn recv_stream(
        &self,
        mut sink: impl Write,
        idle: Duration,
    ) -> Result<FileSummary, PoolError> {
        let first = self.recv_timeout(idle)?;
        let h = ChunkHeader::read(&first)?;
        if h.kind != START || h.seq != 0 {
            return Err(PoolError::Stream(format!(
                "expected a stream start, got kind {} seq {}",
                h.kind, h.seq
            )));
        }
        let (stream, size) = (h.stream, h.value);
        drop(first);
        let mut sum = Checksum::new();
        let (mut got, mut chunks, mut seq) = (0u64, 0u64, 0u64);
        loop {
            let m = self.recv_timeout(idle)?;
            let h = ChunkHeader::read(&m)?;
            if h.stream != stream {
                return Err(PoolError::Stream(
                    "a message of another stream arrived".into(),
                ));
            }
            seq += 1;
            if h.seq != seq {
                return Err(PoolError::Stream(format!(
                    "chunk {} arrived, expected {seq}",
                    h.seq
                )));
            }
            match h.kind {
                DATA => {
                    let data = &m[HEADER..];
                    if data.len() as u64 != h.value {
                        return Err(PoolError::Stream(format!(
                            "chunk {seq} holds {} bytes, its header says {}",
                            data.len(),
                            h.value
                        )));
                    }
                    sum.update(data);
                    sink.write_all(data)?;
                    got += data.len() as u64;
                    chunks += 1;
                }
                END => {
                    let checksum = sum.finish();
                    if got != size {
                        return Err(PoolError::Stream(format!(
                            "received {got} bytes, the sender announced {size}"
                        )));
                    }
                    if checksum != h.value {
                        return Err(PoolError::Stream(format!(
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
                k => return Err(PoolError::Stream(format!("unexpected chunk kind {k}"))),
            }
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
