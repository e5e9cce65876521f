//! The checksum a stream's END carries.

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
