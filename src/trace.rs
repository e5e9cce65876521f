//! Diagnostic events for the `tracing` feature.
//!
//! [`event!`] forwards to the `tracing` macro of that level where the feature is on, and
//! expands to nothing where it is off: its arguments are then not even evaluated, so the
//! call sites cost nothing. Levels: `warn` for what went wrong on the other side (a client
//! or a pool lock holder died, a handler panicked, a peer broke the pool's lists), `info`
//! for what changes a channel or pool (connections, shutdown, adoption), `debug` for
//! expected errors of single calls.

/// `event!(level, fields..., "message")`, as `tracing::level!` takes them.
macro_rules! event {
    ($level:ident, $($arg:tt)+) => {
        #[cfg(feature = "tracing")]
        {
            ::tracing::$level!($($arg)+);
        }
    };
}

pub(crate) use event;
