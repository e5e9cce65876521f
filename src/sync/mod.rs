//! Process-shared synchronisation placed inside segments: [`Mutex`] (safe on owner death),
//! [`Event`] (auto-reset, timed) and [`EventPair`] (exec/done).

pub(crate) mod atomic;
mod event;
mod mutex;

#[allow(unused_imports)] // used by channel and pool
pub(crate) use crate::sys::MUTEX_STORAGE;
#[allow(unused_imports)]
pub(crate) use event::CHECK_INTERVAL;
pub use event::{Event, EventPair, WaitStrategy};
#[allow(unused_imports)] // used by channel and pool
pub(crate) use event::{EventCell, WaitOutcome, EVENT_STORAGE};
pub use mutex::{Locked, Mutex, MutexGuard};
