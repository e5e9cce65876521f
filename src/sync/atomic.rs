//! The one place atomics are imported from, so that a model checker (loom) can replace them.

pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
