//! The chunk header every stream message starts with (the module docs' wire format).

use super::StreamId;

/// The stream format version this crate speaks (see the module docs' wire format).
pub const STREAM_VERSION: u16 = 1;

/// The first bytes of every chunk.
const MAGIC: [u8; 8] = *b"shmlstrm";
/// Chunk kinds (see the module docs' wire format).
pub(super) const START: u16 = 1;
pub(super) const DATA: u16 = 2;
pub(super) const END: u16 = 3;
pub(super) const ABORT: u16 = 4;
/// Bytes of the header before a chunk's body.
pub(super) const HEADER: usize = 40;
/// An abort's reason is cut to this many bytes.
pub(super) const MAX_REASON: usize = 1024;

/// The header at the start of every chunk (see the module docs' wire format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ChunkHeader {
    pub(super) version: u16,
    pub(super) kind: u16,
    pub(super) stream: u64,
    pub(super) seq: u64,
    pub(super) value: u64,
}

impl ChunkHeader {
    pub(super) fn new(kind: u16, stream: StreamId, seq: u64, value: u64) -> ChunkHeader {
        ChunkHeader {
            version: STREAM_VERSION,
            kind,
            stream: stream.0,
            seq,
            value,
        }
    }

    pub(super) fn write(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&self.version.to_le_bytes());
        out[10..12].copy_from_slice(&self.kind.to_le_bytes());
        out[12..16].fill(0);
        out[16..24].copy_from_slice(&self.stream.to_le_bytes());
        out[24..32].copy_from_slice(&self.seq.to_le_bytes());
        out[32..40].copy_from_slice(&self.value.to_le_bytes());
    }

    /// Whether `m` starts like a chunk (of any version): else it is an ordinary message.
    pub(super) fn is_chunk(m: &[u8]) -> bool {
        m.len() >= HEADER && m[..8] == MAGIC
    }

    /// The header of `m`, or `None` if `m` is not a chunk. Any version: the caller checks.
    pub(super) fn read(m: &[u8]) -> Option<ChunkHeader> {
        if !Self::is_chunk(m) {
            return None;
        }
        let u16_at = |o: usize| u16::from_le_bytes([m[o], m[o + 1]]);
        let u64_at = |o: usize| u64::from_le_bytes(m[o..o + 8].try_into().unwrap_or_default());
        Some(ChunkHeader {
            version: u16_at(8),
            kind: u16_at(10),
            stream: u64_at(16),
            seq: u64_at(24),
            value: u64_at(32),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_header_round_trips_and_ordinary_messages_are_no_chunks() {
        let h = ChunkHeader::new(DATA, StreamId(0x0123_4567_89ab_cdef), 7, 1000);
        let mut m = [0u8; HEADER + 3];
        h.write(&mut m[..HEADER]);
        assert_eq!(ChunkHeader::read(&m), Some(h));
        assert_eq!(ChunkHeader::read(&m[..HEADER]), Some(h));
        // Too short, or not the whole magic: ordinary messages.
        assert_eq!(ChunkHeader::read(&m[..HEADER - 1]), None);
        assert_eq!(ChunkHeader::read(b"hello!"), None);
        let mut almost = [b'x'; HEADER];
        almost[..7].copy_from_slice(b"shmlstr");
        assert_eq!(ChunkHeader::read(&almost), None);
        assert_eq!(StreamId(0xab).to_string(), "00000000000000ab");
    }
}
