//! Process-shared synchronisation placed inside segments: [`Mutex`] (safe on owner death),
//! [`Event`] (auto-reset, timed) and [`EventPair`] (exec/done).

pub(crate) mod atomic;
mod event;
mod mutex;
mod pair;

pub(crate) use crate::sys::MUTEX_STORAGE;
pub use event::{Event, WaitStrategy};
pub(crate) use event::{WaitOutcome, EVENT_STORAGE};
pub use mutex::{Locked, Mutex, MutexGuard};
pub use pair::EventPair;
