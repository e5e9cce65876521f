//! Message-format names shared by the typed (`serde`) and plain-old-data (`pod`) layers.

use std::fmt;

/// Names a message format: both sides of a channel or pool must use the same one.
///
/// Change `version` whenever the types change in a way the other side cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    name: &'static str,
    version: u32,
}

impl Schema {
    /// The schema `name` at `version`.
    pub const fn new(name: &'static str, version: u32) -> Schema {
        Schema { name, version }
    }

    /// The 64-bit fingerprint that every frame carries (FNV-1a of the name and version).
    pub const fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let name = self.name.as_bytes();
        let mut i = 0;
        while i < name.len() {
            h = (h ^ name[i] as u64).wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        let v = self.version.to_le_bytes();
        let mut k = 0;
        while k < 4 {
            h = (h ^ v[k] as u64).wrapping_mul(0x0100_0000_01b3);
            k += 1;
        }
        h
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}", self.name, self.version)
    }
}
