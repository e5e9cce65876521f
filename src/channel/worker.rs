//! The serving side's engine: what the workers share, the worker loop, serving one slot,
//! and the last steps of a graceful shutdown.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use super::clients::{Clients, OnConnection};
use super::handler::{CallInfo, ClientId, Outcome};
use super::layout::Mapped;
use super::layout::KIND_VERSION;
use super::outbox::Outbox;
use super::ring::Ring;
use super::slot::{
    IN_SERVICE, REQUEST_READY, STATUS_APP_ERROR, STATUS_BAD_LENGTH, STATUS_BAD_RESPONSE, STATUS_OK,
    STATUS_PANICKED, STATUS_REFUSED,
};
use super::stats::{ServerStats, Tallies, Tally};

/// The handler as the workers call it (both closure shapes, wrapped).
pub(super) type Serve<'a> = dyn FnMut(&CallInfo, &[u8], &mut [u8]) -> Outcome + 'a;
use crate::name::ServiceName;
use crate::segment::{Segment, SegmentKind};
use crate::sync::atomic::{fence, prefetch_read, prefetch_write, AtomicBool, AtomicU32, Ordering};
use crate::sync::{Event, Mutex, WaitOutcome, WaitStrategy};
use crate::trace::event;

/// How often an idle worker wakes up to look for requests whose ring entry was lost and to
/// repair a ring that stopped moving.
const TICK: Duration = Duration::from_millis(50);

/// How many polls of a spinning worker between looks at whether the ring's head entry is
/// claimed but unpublished (that look reads the clients' enqueue position, whose cache line
/// would otherwise stay with them).
const STUCK_CHECK: u32 = 64;
/// Under load a worker scans the slots after this many rounds that served something: a
/// request whose ring entry was lost (a broken client) waits at most that long.
const LOAD_SCAN: u32 = 4096;
/// Passes over the ring and the slots that a stopping worker makes, each ending when it
/// serves nothing: requests submitted before the stop are answered in the first, and
/// clients that keep submitting after it cannot hold the shutdown up.
const DRAIN_PASSES: u32 = 4;

/// How the server's workers run, as the builder set it.
pub(super) struct Pool {
    pub(super) strategy: WaitStrategy,
    pub(super) workers: usize,
    /// The [`Free`](super::Free) model: the count may change.
    pub(super) resizable: bool,
    pub(super) on_connection: Option<OnConnection>,
    pub(super) idle_timeout: Option<Duration>,
}

/// What the workers share.
pub(super) struct Core {
    pub(super) map: Mapped,
    ring: Ring,
    /// The doorbell, for setting (each worker waits on a handle of its own).
    bell: Event,
    /// Slot `i`'s done event.
    done: Vec<Event>,
    /// The notification queues' sending side.
    pub(super) outbox: Outbox,
    /// The slot mutex (the housekeeping scan reaps under it).
    mutex: Mutex,
    /// Local stop request (the shared `shutting_down` flag is only advice to clients).
    stop: AtomicBool,
    /// Set by the first [`finish`](Core::finish): the channel is closed and its name removed.
    finished: AtomicBool,
    strategy: WaitStrategy,
    /// Workers started with the server.
    pub(super) workers: usize,
    /// Whether the pool may change size ([`Free`](super::Free) model): then no worker pops as
    /// the ring's sole consumer.
    resizable: bool,
    /// How many workers should run (a hint: whether to wake a second worker for the ring's
    /// next entry).
    target: AtomicU32,
    /// How many running workers should still leave (see [`retire`](Core::retire)).
    retire: AtomicU32,
    /// The client table and connection events (see `clients.rs`).
    pub(super) clients: Clients,
    /// Where the next slot scan starts (round robin, so no slot is always last).
    scan_from: AtomicU32,
    /// The running workers' call counters (see `stats.rs`).
    tallies: Tallies,
    /// The call counters of serving done off the workers (`poll`, the refusals of `finish`).
    shared_tally: Tally,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("name", &self.map.seg.name())
            .finish_non_exhaustive()
    }
}

impl Core {
    /// The shared state of a server whose segment `map` holds the initialised `mutex`, the
    /// doorbell `bell`, the `ring` and the slots' `done` and `notes` events, run as `pool`
    /// says.
    pub(super) fn new(
        map: Mapped,
        ring: Ring,
        bell: Event,
        done: Vec<Event>,
        notes: Vec<Event>,
        mutex: Mutex,
        pool: Pool,
    ) -> Core {
        let slots = map.layout.slots;
        Core {
            map,
            ring,
            bell,
            done,
            outbox: Outbox::new(notes),
            mutex,
            stop: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            strategy: pool.strategy,
            workers: pool.workers,
            resizable: pool.resizable,
            target: AtomicU32::new(pool.workers as u32),
            retire: AtomicU32::new(0),
            clients: Clients::new(slots, pool.on_connection, pool.idle_timeout),
            scan_from: AtomicU32::new(0),
            tallies: Tallies::default(),
            shared_tally: Tally::new(true),
        }
    }

    /// The call counters summed, the calls in flight and the clients connected.
    pub(super) fn stats(&self) -> ServerStats {
        let mut s = self.tallies.sum(&self.shared_tally);
        s.in_flight = (0..self.map.layout.slots)
            .filter(|&i| matches!(self.map.slot(i).state(), REQUEST_READY | IN_SERVICE))
            .count() as u32;
        s.connected = self.clients.connected();
        s
    }

    /// Asks the connections `which` picks to leave (see `Clients::evict`).
    pub(super) fn evict(&self, which: impl FnMut(ClientId) -> bool) -> usize {
        self.clients.evict(&self.map, which)
    }

    /// One housekeeping scan (see `clients.rs`), and the flags published again.
    pub(super) fn housekeep(&self) {
        self.clients.scan(&self.map, &self.mutex);
        self.republish_flags();
    }

    /// Clients can write the flags too (they share the segment): ours are published again
    /// every housekeeping tick, so that a `closed` or `shutting_down` written by a broken
    /// client turns newcomers away for one tick at most.
    fn republish_flags(&self) {
        let flags = self.map.flags();
        // `request_stop` stores `stop` before the flag, and `finish` `finished` before
        // `closed`: a flag seen set (first) whose cause is not (then) was written by someone
        // else. (Should a stop begin in between, the next tick sets the flag again.)
        let seen = flags.shutting_down.load(Ordering::SeqCst);
        let stopping = self.stopping();
        if seen != u32::from(stopping) {
            let want = u32::from(stopping);
            let _ = flags.shutting_down.compare_exchange(
                seen,
                want,
                Ordering::SeqCst,
                Ordering::Relaxed,
            );
        }
        let seen = flags.closed.load(Ordering::SeqCst);
        if seen != 0 && !self.finished.load(Ordering::SeqCst) {
            let _ = flags
                .closed
                .compare_exchange(seen, 0, Ordering::SeqCst, Ordering::Relaxed);
        }
    }

    /// Records that `n` workers should run (the caller starts the missing ones, or asks
    /// the extra ones to [`retire`](Core::retire)).
    pub(super) fn set_target(&self, n: u32) {
        self.target.store(n, Ordering::Relaxed);
    }

    /// Asks `k` more running workers to leave: whichever are next free (idle, or done with
    /// the call they hold) each take one retirement and return [`Exit::Retired`]. None takes
    /// a call after taking its retirement, so none is held back, and the calls waiting in
    /// the ring are for the others.
    ///
    /// Any worker may take a retirement, so one wake-up reaches a taker: an idle worker
    /// woken by the doorbell takes one (and rings the bell again for the next as it leaves),
    /// and a busy one takes one before its next call. (Telling particular workers to leave
    /// would need every sleeper woken, which the doorbell, an auto-reset event, cannot do.)
    pub(super) fn retire(&self, k: u32) {
        self.retire.fetch_add(k, Ordering::SeqCst);
        self.bell.set();
    }

    /// Takes one of the retirements asked for, if any is left.
    #[inline]
    fn take_retirement(&self) -> bool {
        let mut left = self.retire.load(Ordering::Relaxed);
        while left > 0 {
            match self.retire.compare_exchange_weak(
                left,
                left - 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => left = now,
            }
        }
        false
    }

    /// Whether a stop was requested.
    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(super) fn request_stop(&self) {
        event!(debug, service = self.map.seg.name(), "shutdown requested");
        self.stop.store(true, Ordering::SeqCst);
        self.map.flags().shutting_down.store(1, Ordering::SeqCst);
        self.bell.set();
    }

    /// A worker: drain the ring, wait on the doorbell, repeat; after a stop request, serve
    /// what is left and return [`Exit::Stopped`]; once it took a
    /// [retirement](Core::retire), return [`Exit::Retired`] (it takes none while it holds a
    /// call).
    pub(super) fn run_worker(&self, handler: &mut Serve<'_>) -> Exit {
        // SAFETY: the doorbell was initialised at this offset before publishing.
        let bell = match unsafe { Event::open_at(&self.map.seg, self.map.layout.doorbell) } {
            Ok(bell) => bell.wait_strategy(self.strategy),
            Err(_) => return Exit::Stopped, // cannot wait: serves nothing
        };
        let tally = self.tallies.join();
        let exit = self.serve_loop(handler, &bell, &tally);
        self.tallies.leave(&tally);
        exit
    }

    /// [`run_worker`](Core::run_worker)'s loop, counting on `tally`.
    fn serve_loop(&self, handler: &mut Serve<'_>, bell: &Event, tally: &Tally) -> Exit {
        let mut leave = if self.resizable {
            Leave::May
        } else {
            Leave::Never
        };
        let mut scan = true;
        let sole = !self.resizable && self.workers == 1;
        let mut last_deq = self.ring.dequeue_pos();
        // The tick's deadline is refreshed only when it passes: no clock read per request.
        let mut tick_at = Instant::now() + TICK;
        let mut busy_rounds = 0u32;
        loop {
            let n = self.serve_available(handler, tally, scan, sole, &mut leave);
            if leave == Leave::Took {
                // What it took is answered; the ring's rest is for the others. Pass the
                // wake-up on: to the next worker to retire, or for a call it was meant for.
                self.bell.set();
                return Exit::Retired;
            }
            if self.stop.load(Ordering::Acquire) {
                // Drain: whatever was submitted before the flag is answered.
                for _ in 0..DRAIN_PASSES {
                    if self.serve_available(handler, tally, true, sole, &mut Leave::Never) == 0 {
                        break;
                    }
                }
                self.bell.set(); // pass the wake-up on to the next worker
                return Exit::Stopped;
            }
            scan = false;
            if n > 0 {
                busy_rounds = busy_rounds.wrapping_add(1);
                scan = busy_rounds % LOAD_SCAN == 0;
                continue;
            }
            // Spin on the ring's next cell (or sleep until a client notifies the bell). No
            // liveness check: `request_stop` rings the bell, and each stopping worker rings
            // it again for the next, so an idle worker wakes only once per TICK.
            let (mut work, mut stuck, mut polls) = (false, false, 0u32);
            let outcome = bell.wait_for(
                |thorough| {
                    work = self.work_waiting();
                    polls = polls.wrapping_add(1);
                    // Always on the rare looks before a sleep: a client that pushed behind the
                    // stuck head while we were not yet registered as asleep did not wake us.
                    if !work
                        && (thorough || polls % STUCK_CHECK == 0)
                        && self.ring.head_unpublished()
                    {
                        // A client was preempted (or died) between claiming its ring cell
                        // and publishing it: whoever pushed after it waits behind it.
                        stuck = true;
                    }
                    work || stuck || leave.asked(self)
                },
                Some(tick_at),
                None,
            );
            match outcome {
                WaitOutcome::Set if stuck => scan = true,
                WaitOutcome::Set if work => {}
                // Rung, yet the ring looked empty (an entry lost to a dead or broken client,
                // or stuck behind one): look at the slots themselves.
                WaitOutcome::Set => scan = true,
                WaitOutcome::Aborted => {}
                WaitOutcome::TimedOut => {
                    scan = true;
                    tick_at = Instant::now() + TICK;
                    if self.ring.dequeue_pos() == last_deq {
                        // No entry came out for a whole tick: if one was claimed and never
                        // published (its producer died mid-push), skip it; the scan finds
                        // what waited behind it.
                        self.ring.skip_stuck();
                    }
                    last_deq = self.ring.dequeue_pos();
                }
            }
        }
    }

    /// One step for callers with their own loop (see `Server::poll`).
    pub(super) fn poll(&self, handler: &mut Serve<'_>, timeout: Duration) -> usize {
        let tally = &self.shared_tally;
        let n = self.serve_available(handler, tally, false, false, &mut Leave::Never);
        if n > 0 {
            return n;
        }
        let mut work = false;
        self.bell.wait_for(
            |_| {
                work = self.work_waiting();
                work
            },
            Some(Instant::now() + timeout),
            None,
        );
        // Scan the slots unless the ring showed work: after a signal with an empty ring (an
        // entry lost), and after a quiet timeout.
        self.serve_available(handler, tally, !work, false, &mut Leave::Never)
    }

    /// What a waiting worker spins on: the ring's next entry is published, or a stop or a
    /// slot scan is asked for. Reads no line a client writes unless there is work.
    fn work_waiting(&self) -> bool {
        if let Some(i) = self.ring.peek() {
            // Its lines then travel while the worker returns from its wait and pops.
            self.prefetch_slot(i);
            return true;
        }
        self.stop.load(Ordering::Relaxed) || self.map.flags().need_scan.load(Ordering::Relaxed) != 0
    }

    /// Starts fetching the lines serving slot `i` touches (its client wrote them last), all at
    /// once rather than one after another. `i` is untrusted: out of range, nothing happens.
    #[inline]
    fn prefetch_slot(&self, i: u32) {
        if i < self.map.layout.slots {
            prefetch_write(self.map.slot(i));
            prefetch_read(self.map.request(i).as_ptr());
            prefetch_write(self.map.response(i).as_ptr());
        }
    }

    /// Serves what the ring holds (at most as many entries as it can hold: a broken client
    /// pushing as fast as we pop cannot keep us here); then, if a scan is asked for (by the
    /// caller, or by a client whose push failed), scans the slots. Returns how many requests
    /// were answered. Stops early, holding no call, once `leave` takes a retirement.
    ///
    /// `sole_consumer`: see [`Ring::pop`] (true only for the one worker of a one-worker
    /// server; `poll` may be called from several threads).
    fn serve_available(
        &self,
        handler: &mut Serve<'_>,
        tally: &Tally,
        force_scan: bool,
        sole_consumer: bool,
        leave: &mut Leave,
    ) -> usize {
        let mut n = 0;
        // Looks before each pop: under load the ring never runs dry, and a worker that
        // looked only once it did would never retire.
        for _ in 0..self.map.layout.ring_cap {
            if leave.take(self) {
                break;
            }
            let Some(i) = self.ring.pop(sole_consumer) else {
                break;
            };
            if self.target.load(Ordering::Relaxed) > 1 && self.ring.has_more() {
                self.bell.notify(); // let another worker take the next one meanwhile
            }
            n += usize::from(self.serve_slot(i, handler, tally, false));
        }
        if *leave != Leave::Took {
            // Honoured under load too: a client whose push failed must not starve.
            let flags = self.map.flags();
            let asked = flags.need_scan.load(Ordering::Relaxed) != 0
                && flags.need_scan.swap(0, Ordering::AcqRel) != 0;
            // (Not `ring.looks_nonempty()`: reading the clients' enqueue position here would
            // pull its cache line away from them on every round trip.)
            if force_scan || asked {
                n += self.scan(handler, tally, false, leave);
            }
        }
        n
    }

    /// Serves every slot found in `REQUEST_READY` (ground truth when ring entries were lost).
    /// If `leave` takes a retirement on the way, stops there and asks the others for a scan.
    fn scan(
        &self,
        handler: &mut Serve<'_>,
        tally: &Tally,
        refuse: bool,
        leave: &mut Leave,
    ) -> usize {
        let slots = self.map.layout.slots;
        let start = self.scan_from.fetch_add(1, Ordering::Relaxed) % slots;
        let mut n = 0;
        for k in 0..slots {
            if leave.take(self) {
                // The leaving worker rings the bell: the next one sees the flag.
                self.map.flags().need_scan.store(1, Ordering::Release);
                break;
            }
            let i = (start + k) % slots;
            if self.map.slot(i).has_request() {
                n += usize::from(self.serve_slot(i, handler, tally, refuse));
            }
        }
        n
    }

    /// Serves slot `i` if it really holds a request (the number is untrusted). With `refuse`,
    /// answers [`STATUS_REFUSED`] without running the handler. Counts the outcome on
    /// `tally`.
    fn serve_slot(&self, i: u32, handler: &mut Serve<'_>, tally: &Tally, refuse: bool) -> bool {
        let layout = &self.map.layout;
        if i >= layout.slots {
            return false; // bogus ring entry
        }
        let slot = self.map.slot(i);
        self.prefetch_slot(i);
        let Some(taken) = slot.take() else {
            return false; // stale, duplicated or forged entry
        };
        let len = taken.len();
        let max = layout.max_message;
        let (status, out) = if len > max {
            (STATUS_BAD_LENGTH, 0)
        } else if refuse {
            (STATUS_REFUSED, 0)
        } else {
            // SAFETY: in IN_SERVICE the slot's bytes are this worker's by protocol (a
            // misbehaving client writing them anyway can only garble its own call); the
            // request and response areas do not overlap, and len <= max_message is checked
            // above and by the region.
            let (req, resp) = unsafe {
                (
                    self.map
                        .request(i)
                        .bytes(0, len)
                        .expect("len <= max_message"),
                    self.map
                        .response(i)
                        .bytes_mut(0, max)
                        .expect("max_message bytes"),
                )
            };
            let call = CallInfo {
                client: ClientId::new(i, slot.epoch()),
                pid: slot.owner().pid,
                slot: i,
                seq: taken.seq(),
            };
            match catch_unwind(AssertUnwindSafe(|| handler(&call, req, resp))) {
                Ok(Ok(n)) if n <= max => (STATUS_OK, n),
                Ok(Err(e)) if e.detail_len() <= max => {
                    tally.count(STATUS_APP_ERROR);
                    event!(
                        debug,
                        service = self.map.seg.name(),
                        slot = i,
                        code = e.code(),
                        "call answered with an application error"
                    );
                    taken.answer_app_error(e.code(), e.detail_len() as u32);
                    self.done[i as usize].notify();
                    return true;
                }
                Ok(Ok(n)) => (STATUS_BAD_RESPONSE, n.min(u32::MAX as usize)),
                Ok(Err(e)) => (STATUS_BAD_RESPONSE, e.detail_len().min(u32::MAX as usize)),
                Err(_) => (STATUS_PANICKED, 0),
            }
        };
        tally.count(status);
        #[cfg(feature = "tracing")]
        if status != STATUS_OK {
            self.trace_failure(i, status, out, max);
        }
        taken.answer(status, out as u32);
        // Wakes the client only if it sleeps; a spinning one sees the state word change.
        // (The fence in `notify` publishes the answer.)
        self.done[i as usize].notify();
        true
    }

    /// Emits an event for a call that failed on the server's side (feature `tracing`).
    #[cfg(feature = "tracing")]
    #[cold]
    fn trace_failure(&self, slot: u32, status: u32, len: usize, max: usize) {
        let service = self.map.seg.name();
        match status {
            STATUS_PANICKED => tracing::warn!(service, slot, "handler panicked"),
            STATUS_BAD_RESPONSE => tracing::warn!(
                service,
                slot,
                len,
                max,
                "handler answered beyond max_message"
            ),
            STATUS_BAD_LENGTH => tracing::warn!(
                service,
                slot,
                max,
                "request longer than max_message refused"
            ),
            STATUS_REFUSED => tracing::debug!(service, slot, "request refused: shutting down"),
            _ => {}
        }
    }

    /// After the workers stopped (or with none running): mark the channel closed (waiting
    /// clients learn it within their liveness check), refuse what slipped in after the drain,
    /// and remove the channel's name. Once; later calls return at once.
    ///
    /// The name goes here, on the thread that ends the server, rather than with the last
    /// handle on the segment: a [`ShutdownHandle`](super::ShutdownHandle) may hold the
    /// server for an instant on another thread, and the process may exit before that
    /// thread lets go.
    pub(super) fn finish(&self) {
        if self.finished.swap(true, Ordering::SeqCst) {
            return;
        }
        self.clients.stop();
        self.map.flags().closed.store(1, Ordering::SeqCst);
        // Pairs with the fence in the clients' `notify` after their REQUEST_READY store.
        fence(Ordering::SeqCst);
        self.scan(
            &mut |_, _, _| Ok(0),
            &self.shared_tally,
            true,
            &mut Leave::Never,
        );
        self.remove_name();
        event!(
            info,
            service = self.map.seg.name(),
            "server shut down: channel closed and its name removed"
        );
    }

    /// Removes the channel segment's name if it still names this server's segment. Clients
    /// keep their mappings; the memory goes with the last of them.
    fn remove_name(&self) {
        let seg = &self.map.seg;
        let Ok(name) = ServiceName::new(seg.name()) else {
            return;
        };
        let found = Segment::open_kind_timeout(
            &name,
            "chan",
            SegmentKind::Channel,
            KIND_VERSION,
            Duration::ZERO,
        );
        if found.is_ok_and(|s| s.token() == seg.token()) {
            let _ = Segment::remove_tagged(&name, "chan", true);
        }
    }
}

/// Why [`Core::run_worker`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exit {
    /// A stop was requested and what was in flight is answered (or the worker could not
    /// start).
    Stopped,
    /// It took a [retirement](Core::retire).
    Retired,
}

/// Whether a serving loop may take a [retirement](Core::retire), and whether it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leave {
    /// Never ([`Core::poll`], the drain after a stop, a pool of fixed size).
    Never,
    /// When one is asked for.
    May,
    /// It took one: it serves nothing more.
    Took,
}

impl Leave {
    /// Whether a retirement is there to take (for a waiting worker's condition).
    #[inline]
    fn asked(self, core: &Core) -> bool {
        self == Leave::May && core.retire.load(Ordering::Relaxed) > 0
    }

    /// Takes a retirement if one is asked for and none was taken yet; whether one is taken.
    #[inline]
    fn take(&mut self, core: &Core) -> bool {
        if *self == Leave::May && core.take_retirement() {
            *self = Leave::Took;
        }
        *self == Leave::Took
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // A server dropped without serving: tell clients nobody will answer.
        self.map.flags().closed.store(1, Ordering::SeqCst);
    }
}
