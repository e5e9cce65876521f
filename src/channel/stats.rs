//! Call statistics: each worker counts the outcomes it decides on a cache line of its own,
//! and [`ServerStats`] is their sum, taken when asked.
//!
//! A worker's [`Tally`] has one writer (the worker), so a count is a relaxed load and store,
//! never a read-modify-write, and no line is shared between workers on the call path. Serving
//! done off the workers ([`Server::poll`](crate::Server::poll), which any thread may call,
//! and the refusals after a shutdown) counts on one shared tally with `fetch_add`. A worker
//! that leaves adds its counts to the server's totals first, so nothing is lost when the pool
//! shrinks.

use std::sync::{Arc, Mutex as StdMutex, PoisonError};

use super::slot::{
    STATUS_APP_ERROR, STATUS_BAD_LENGTH, STATUS_BAD_RESPONSE, STATUS_OK, STATUS_PANICKED,
    STATUS_REFUSED,
};
use crate::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a server's call counters and of its clients and workers (see
/// [`ServerHandle::stats`](crate::ServerHandle::stats)).
///
/// Every call a worker takes ends in exactly one of the first six counts. Calls a client
/// never submitted (refused by the client itself: too large, or the server already shutting
/// down) are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Calls the handler answered with a response.
    pub answered: u64,
    /// Calls the handler answered with an [`AppError`](crate::AppError).
    pub app_errors: u64,
    /// Calls whose handler panicked ([`CallError::HandlerPanicked`](crate::CallError::HandlerPanicked)).
    pub panics: u64,
    /// Requests whose length was beyond `max_message` (the handler was not called).
    pub bad_requests: u64,
    /// Calls whose handler returned a response or error detail longer than `max_message`
    /// ([`CallError::BadResponse`](crate::CallError::BadResponse)).
    pub bad_responses: u64,
    /// Requests refused unserved because the server was shutting down
    /// ([`CallError::ShuttingDown`](crate::CallError::ShuttingDown)).
    pub refused: u64,
    /// Calls submitted and not yet answered, now: waiting for a worker or in a handler.
    pub in_flight: u32,
    /// Clients connected at the server's last scan of its slots (at most about 20 ms ago).
    pub connected: usize,
    /// Worker threads serving now (threads inside [`Server::poll`](crate::Server::poll) not
    /// included).
    pub workers: usize,
}

/// Outcome counters, on a cache line of their own.
#[repr(align(64))]
#[derive(Debug)]
pub(super) struct Tally {
    /// Counts with `fetch_add` (any thread may count) rather than load and store (one
    /// writer).
    shared: bool,
    answered: AtomicU64,
    app_errors: AtomicU64,
    panics: AtomicU64,
    bad_requests: AtomicU64,
    bad_responses: AtomicU64,
    refused: AtomicU64,
}

impl Tally {
    /// A tally for one worker (`shared`: for any thread).
    pub(super) fn new(shared: bool) -> Tally {
        Tally {
            shared,
            answered: AtomicU64::new(0),
            app_errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
            bad_responses: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Counts one answer with `status` (a `STATUS_*` of `slot.rs`).
    #[inline]
    pub(super) fn count(&self, status: u32) {
        let c = match status {
            STATUS_OK => &self.answered,
            STATUS_APP_ERROR => &self.app_errors,
            STATUS_PANICKED => &self.panics,
            STATUS_BAD_LENGTH => &self.bad_requests,
            STATUS_BAD_RESPONSE => &self.bad_responses,
            STATUS_REFUSED => &self.refused,
            _ => return,
        };
        if self.shared {
            c.fetch_add(1, Ordering::Relaxed);
        } else {
            // One writer: no read-modify-write needed.
            c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        }
    }

    /// Adds this tally's counts to `s`.
    fn add_to(&self, s: &mut ServerStats) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        s.answered = s.answered.wrapping_add(get(&self.answered));
        s.app_errors = s.app_errors.wrapping_add(get(&self.app_errors));
        s.panics = s.panics.wrapping_add(get(&self.panics));
        s.bad_requests = s.bad_requests.wrapping_add(get(&self.bad_requests));
        s.bad_responses = s.bad_responses.wrapping_add(get(&self.bad_responses));
        s.refused = s.refused.wrapping_add(get(&self.refused));
    }
}

/// The running workers' tallies, and the counts of those that left.
#[derive(Debug, Default)]
pub(super) struct Tallies {
    inner: StdMutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    running: Vec<Arc<Tally>>,
    /// The counts of workers that left.
    left: ServerStats,
}

impl Tallies {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new worker's tally; it counts as running until [`leave`](Tallies::leave).
    pub(super) fn join(&self) -> Arc<Tally> {
        let t = Arc::new(Tally::new(false));
        self.inner().running.push(Arc::clone(&t));
        t
    }

    /// A worker leaves: its counts go to the totals.
    pub(super) fn leave(&self, t: &Arc<Tally>) {
        let mut inner = self.inner();
        let Inner { running, left } = &mut *inner;
        if let Some(k) = running.iter().position(|r| Arc::ptr_eq(r, t)) {
            running.swap_remove(k);
            t.add_to(left);
        }
    }

    /// The sum of every tally (`shared` included) and the running workers' count; the other
    /// fields are the caller's.
    pub(super) fn sum(&self, shared: &Tally) -> ServerStats {
        let inner = self.inner();
        let mut s = inner.left;
        for t in &inner.running {
            t.add_to(&mut s);
        }
        shared.add_to(&mut s);
        s.workers = inner.running.len();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaving_workers_counts_are_kept() {
        let tallies = Tallies::default();
        let shared = Tally::new(true);
        let (a, b) = (tallies.join(), tallies.join());
        a.count(STATUS_OK);
        a.count(STATUS_OK);
        b.count(STATUS_PANICKED);
        shared.count(STATUS_REFUSED);
        b.count(u32::MAX); // garbage: not counted
        tallies.leave(&b);
        let s = tallies.sum(&shared);
        assert_eq!(
            (s.answered, s.panics, s.refused, s.workers),
            (2, 1, 1, 1),
            "{s:?}"
        );
        tallies.leave(&a);
        tallies.leave(&a); // twice: counted once
        let s = tallies.sum(&shared);
        assert_eq!((s.answered, s.workers), (2, 0), "{s:?}");
    }
}
