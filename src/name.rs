//! Validated service names and the OS object names derived from them.

use std::fmt;

use crate::error::{Error, Result};
use crate::sys;

/// Longest service name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// A validated service name: 1 to 200 characters of `[A-Za-z0-9._-]`.
///
/// Every shared object of a service derives its OS name from this name deterministically
/// (`/shmlink.<name>.<kind>` on Linux; on macOS, whose limit is 31 bytes, a stable hash
/// replaces the tail), so two processes that agree on the service name find the same
/// objects.
///
/// # Examples
/// ```
/// use shmlink::ServiceName;
/// let name = ServiceName::new("sensor-hub.v2")?;
/// assert_eq!(name.as_str(), "sensor-hub.v2");
/// assert!(ServiceName::new("no/slashes").is_err());
/// # Ok::<(), shmlink::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ServiceName(String);

impl ServiceName {
    /// Validates `name`.
    ///
    /// # Errors
    /// [`Error::InvalidName`] if it is empty, longer than [`MAX_NAME_LEN`] or has a character
    /// outside `[A-Za-z0-9._-]`.
    pub fn new(name: &str) -> Result<Self> {
        let bad = |reason| {
            Err(Error::InvalidName {
                name: name.to_owned(),
                reason,
            })
        };
        if name.is_empty() {
            return bad("it is empty");
        }
        if name.len() > MAX_NAME_LEN {
            return bad("it is longer than 200 characters");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
        }
        Ok(ServiceName(name.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The OS object name for the object `tag` of this service (e.g. `"seg"`, `"pool.3"`).
    ///
    /// Linux: `/shmlink.<name>.<tag>`; Windows: `Local\shmlink.<name>.<tag>`; macOS, whose
    /// limit is 31 bytes: the same when it fits, else a prefix of the name and a stable
    /// 64-bit FNV-1a hash of the full name and tag.
    pub(crate) fn os_name(&self, tag: &str) -> String {
        os_name_with_limit(&self.0, tag, sys::MAX_OS_NAME)
    }
}

pub(crate) fn os_name_with_limit(name: &str, tag: &str, limit: usize) -> String {
    let full = format!("{}shmlink.{name}.{tag}", sys::OS_NAME_PREFIX);
    if full.len() <= limit {
        return full;
    }
    let hash = fnv1a64(format!("{name}\0{tag}").as_bytes());
    // "<prefix>sl.<head>~<16 hex>": keep as much of the name as fits so that `ls` still hints
    // at the owner.
    let fixed = sys::OS_NAME_PREFIX.len() + "sl.".len() + 1 + 16;
    let head_len = limit.saturating_sub(fixed).min(name.len());
    format!(
        "{}sl.{}~{hash:016x}",
        sys::OS_NAME_PREFIX,
        &name[..head_len]
    )
}

/// FNV-1a, 64 bit: tiny, and stable across Rust versions (unlike `DefaultHasher`).
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet_and_length() {
        assert!(ServiceName::new("a").is_ok());
        assert!(ServiceName::new("A-z_0.9").is_ok());
        assert!(ServiceName::new(&"x".repeat(200)).is_ok());
    }

    #[test]
    fn refuses_bad_names_with_a_reason() {
        for bad in ["", "a/b", "a b", "é", "a\0b", &"x".repeat(201)] {
            match ServiceName::new(bad) {
                Err(Error::InvalidName { reason, .. }) => assert!(!reason.is_empty()),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn short_os_names_are_hashed_deterministically_and_distinctly() {
        let long = "a-very-long-service-name-that-will-not-fit";
        let a = os_name_with_limit(long, "seg", 31);
        let b = os_name_with_limit(long, "seg", 31);
        let c = os_name_with_limit(long, "pool", 31);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.len() <= 31, "{a} is {} bytes", a.len());
        assert_eq!(
            os_name_with_limit("ab", "seg", 31),
            format!("{}shmlink.ab.seg", sys::OS_NAME_PREFIX)
        );
    }
}
