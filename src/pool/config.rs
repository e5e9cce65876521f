//! The sizes and limits of a pool, checked before anything is created.

use std::time::Duration;

use super::error::PoolError;

/// Largest buffer a pool may have (1 TiB): keeps every size arithmetic far from overflow.
const MAX_BUFFER_SIZE_LIMIT: usize = 1 << 40;
/// Largest `max_buffers` a pool may have.
pub(super) const MAX_BUFFERS_LIMIT: u32 = 1 << 20;

/// The sizes and limits of a pool. Every field has a default ([`PoolConfig::default`]).
///
/// The optional fields follow `start_buffers` unless set: the pool never shrinks below the
/// size it started with (`min_buffers` = `start_buffers`), and grows by half its start size
/// at a time (`resize_increment` = `start_buffers / 2`, at least 1).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmlink::PoolConfig;
/// let config = PoolConfig { start_buffers: 2, max_buffers: 8, ..PoolConfig::default() };
/// assert!(config.validate().is_ok());
/// assert_eq!((config.min_buffers(), config.resize_increment()), (2, 1));
/// let swept = PoolConfig { min_buffers: Some(0), sweep_timeout: Duration::from_secs(5), ..config };
/// assert_eq!(swept.min_buffers(), 0);
/// assert!(PoolConfig { min_buffers: Some(100), ..config }.validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Capacity of a new buffer in bytes (default 64 KiB).
    pub initial_buffer_size: usize,
    /// Largest capacity a Writer may grow a buffer to (default 16 MiB).
    pub max_buffer_size: usize,
    /// Buffers created with the pool (default 16).
    pub start_buffers: u32,
    /// The pool never holds more buffers (default 256).
    pub max_buffers: u32,
    /// The sweeper never shrinks the pool below this (default: `start_buffers`).
    pub min_buffers: Option<u32>,
    /// Buffers added per growth step (default: `start_buffers / 2`, at least 1).
    pub resize_increment: Option<u32>,
    /// A Writer asks the Reader to grow when fewer buffers than this are free (default 4);
    /// with 0, only when none is free.
    pub resize_threshold: u32,
    /// Free buffers idle for longer are disposed of by the sweeper (default 30 s).
    pub sweep_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            initial_buffer_size: 64 * 1024,
            max_buffer_size: 16 * 1024 * 1024,
            start_buffers: 16,
            max_buffers: 256,
            min_buffers: None,
            resize_increment: None,
            resize_threshold: 4,
            sweep_timeout: Duration::from_secs(30),
        }
    }
}

impl PoolConfig {
    /// The sweeper's floor: `min_buffers`, or `start_buffers` when unset.
    pub fn min_buffers(&self) -> u32 {
        self.min_buffers.unwrap_or(self.start_buffers)
    }

    /// Buffers per growth step: `resize_increment`, or `start_buffers / 2` (at least 1) when
    /// unset.
    pub fn resize_increment(&self) -> u32 {
        self.resize_increment
            .unwrap_or((self.start_buffers / 2).max(1))
    }

    /// Checks that the values fit together.
    ///
    /// # Errors
    /// [`PoolError::InvalidConfig`] naming the first rule broken:
    /// `1 <= initial_buffer_size <= max_buffer_size <= 1 TiB`,
    /// `min_buffers <= start_buffers <= max_buffers <= 1048576`, `1 <= max_buffers`,
    /// `1 <= resize_increment`, `resize_threshold <= max_buffers`, `sweep_timeout > 0`.
    pub fn validate(&self) -> Result<(), PoolError> {
        let bad = |why: String| Err(PoolError::InvalidConfig(why));
        if self.initial_buffer_size == 0 {
            return bad("initial_buffer_size must be at least 1".into());
        }
        if self.initial_buffer_size > self.max_buffer_size {
            return bad(format!(
                "initial_buffer_size {} exceeds max_buffer_size {}",
                self.initial_buffer_size, self.max_buffer_size
            ));
        }
        if self.max_buffer_size > MAX_BUFFER_SIZE_LIMIT {
            return bad(format!(
                "max_buffer_size {} exceeds the limit of {MAX_BUFFER_SIZE_LIMIT}",
                self.max_buffer_size
            ));
        }
        if self.max_buffers == 0 || self.max_buffers > MAX_BUFFERS_LIMIT {
            return bad(format!(
                "max_buffers {} is outside 1..={}",
                self.max_buffers, MAX_BUFFERS_LIMIT
            ));
        }
        if self.start_buffers > self.max_buffers {
            return bad(format!(
                "start_buffers {} exceeds max_buffers {}",
                self.start_buffers, self.max_buffers
            ));
        }
        if self.min_buffers() > self.start_buffers {
            return bad(format!(
                "min_buffers {} exceeds start_buffers {}",
                self.min_buffers(),
                self.start_buffers
            ));
        }
        if self.resize_increment() == 0 {
            return bad("resize_increment must be at least 1".into());
        }
        if self.resize_threshold > self.max_buffers {
            return bad(format!(
                "resize_threshold {} exceeds max_buffers {}",
                self.resize_threshold, self.max_buffers
            ));
        }
        if self.sweep_timeout.is_zero() {
            return bad("sweep_timeout must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_values_follow_start_buffers() {
        let small = PoolConfig {
            start_buffers: 2,
            max_buffers: 8,
            ..PoolConfig::default()
        };
        assert!(
            small.validate().is_ok(),
            "a small pool needs no other field"
        );
        assert_eq!((small.min_buffers(), small.resize_increment()), (2, 1));
        let d = PoolConfig::default();
        assert_eq!((d.min_buffers(), d.resize_increment()), (16, 8));
        let empty = PoolConfig {
            start_buffers: 0,
            ..d.clone()
        };
        assert_eq!((empty.min_buffers(), empty.resize_increment()), (0, 1));
        let set = PoolConfig {
            min_buffers: Some(3),
            resize_increment: Some(5),
            ..d
        };
        assert_eq!((set.min_buffers(), set.resize_increment()), (3, 5));
    }

    #[test]
    fn config_rules() {
        assert!(PoolConfig::default().validate().is_ok());
        let d = PoolConfig::default;
        for bad in [
            PoolConfig {
                initial_buffer_size: 0,
                ..d()
            },
            PoolConfig {
                max_buffer_size: 1,
                ..d()
            },
            PoolConfig {
                max_buffers: 0,
                start_buffers: 0,
                min_buffers: Some(0),
                resize_threshold: 0,
                ..d()
            },
            PoolConfig {
                start_buffers: 300,
                ..d()
            },
            PoolConfig {
                min_buffers: Some(17),
                ..d()
            },
            PoolConfig {
                resize_increment: Some(0),
                ..d()
            },
            PoolConfig {
                resize_threshold: 257,
                ..d()
            },
            PoolConfig {
                sweep_timeout: Duration::ZERO,
                ..d()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(PoolError::InvalidConfig(_))),
                "{bad:?}"
            );
        }
    }
}
