//! A client's connection: the mapped segment and the slot it claimed; one call's steps
//! (settle, submit, poll, wait) and releasing the slot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::CallError;
use super::layout::{Config, Layout, Mapped, Notes, SlotRef, KIND_VERSION};
use super::notify::Popped;
use super::ring::Ring;
use super::slot::{
    SlotHeader, FREE, IDLE, IN_SERVICE, REQUEST_READY, RESPONSE_READY, STATUS_APP_ERROR,
    STATUS_BAD_LENGTH, STATUS_BAD_RESPONSE, STATUS_OK, STATUS_PANICKED, STATUS_REFUSED, WRITING,
};
use crate::error::Error;
use crate::name::ServiceName;
use crate::process::Member;
use crate::segment::{Access, Segment, SegmentKind, READY_WAIT};
use crate::sync::atomic::{prefetch_write, Ordering};
use crate::sync::{Event, Mutex, WaitOutcome, WaitStrategy};

/// How long claiming or releasing a slot waits for the slot mutex when the caller gave no
/// deadline (a healthy holder keeps it for microseconds; a dead one's is taken over), before
/// a claim gives up with [`CallError::LockHeld`].
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(2);
/// How many times a call polls for its answer inline before the general wait (a CPU pause
/// each: a few microseconds in all).
const FAST_POLLS: u32 = 64;
/// Calls made without the inline poll after one that ran out while the server's worker runs
/// on our CPU (it cannot answer while we poll, so polling would only delay the general wait).
const POLL_BACKOFF: u32 = 64;

/// How waiting for an answer ended, before the client turns it into a result.
pub(super) enum Waited {
    Answer(usize),
    Timeout,
    Gone {
        retracted: bool,
        graceful: bool,
    },
    /// The server took the slot back or asked this connection to leave.
    Revoked,
    Failed(CallError),
}

/// The error for a slot whose state word holds what no step of ours left there.
pub(super) fn overwritten() -> CallError {
    CallError::Protocol {
        reason: "this client's slot state was overwritten",
    }
}

/// One connection: the mapped segment and the claimed slot.
pub(super) struct Conn {
    /// The claimed slot's addresses (declared before `map`, which they point into).
    me_slot: SlotRef,
    pub(super) map: Mapped,
    ring: Ring,
    mutex: Mutex,
    bell: Event,
    pub(super) done: Event,
    /// Set by the server when it queues a notification while we sleep.
    note: Event,
    /// Notifications consumed (our count; see `notify.rs`).
    note_tail: u32,
    pub(super) slot: u32,
    /// Sequence number of the last request sent from this slot.
    seq: u32,
    /// This connection's number on the slot (its generation is in the slot's state words).
    epoch: u32,
    /// Calls left before the inline poll is tried again (see [`Conn::poll_answer`]).
    poll_backoff: u32,
    /// This connection's record as the slot's owner (its pid, and the proof of life that
    /// claimers check before reaping the slot).
    me: Member,
}

/// What is left of `deadline`, or `default` without one.
fn wait_until(deadline: Option<Instant>, default: Duration) -> Duration {
    deadline.map_or(default, |d| d.saturating_duration_since(Instant::now()))
}

impl Conn {
    /// Opens the channel `name` and claims a slot. Its waits (for a segment being published,
    /// for the slot mutex) end at `deadline`, or without one after the segment's own ready
    /// wait and [`LOCK_WAIT`].
    pub(super) fn open(
        name: &str,
        strategy: WaitStrategy,
        deadline: Option<Instant>,
        access: Access,
    ) -> Result<Conn, CallError> {
        let sname = ServiceName::new(name)?;
        let ready_wait = match deadline {
            None => READY_WAIT,
            Some(d) => d.saturating_duration_since(Instant::now()),
        };
        let seg = Arc::new(Segment::open_kind_access(
            &sname,
            "chan",
            SegmentKind::Channel,
            KIND_VERSION,
            ready_wait,
            access,
        )?);
        if !seg.owner_alive() {
            // A crashed server's segment: nobody will answer.
            return Err(CallError::NoServer {
                name: name.to_owned(),
            });
        }
        let corrupt = |reason: &str| {
            CallError::Setup(Error::Corrupt {
                name: name.to_owned(),
                reason: reason.to_owned(),
            })
        };
        let Some(config) = seg.data().get::<Config>(0) else {
            return Err(corrupt("channel segment smaller than its configuration"));
        };
        // Read once; the server wrote them before publishing.
        let slots = config.slots.load(Ordering::Relaxed);
        let max = config.max_message.load(Ordering::Relaxed);
        let notes = Notes {
            depth: config.note_depth.load(Ordering::Relaxed),
            max: config.note_max.load(Ordering::Relaxed) as usize,
        };
        let map = Layout::new(slots, max as usize, notes)
            .and_then(|layout| Mapped::new(Arc::clone(&seg), layout))
            .ok_or_else(|| corrupt("configuration does not fit the segment"))?;
        let layout = map.layout;
        if map.flags().closed.load(Ordering::Acquire) != 0 {
            return Err(CallError::NoServer {
                name: name.to_owned(),
            });
        }
        if map.flags().shutting_down.load(Ordering::Acquire) != 0 {
            return Err(CallError::ShuttingDown);
        }
        // SAFETY: the server initialised the mutex, the doorbell and the ring at these layout
        // offsets (inside the data region) before publishing.
        let (mutex, bell, ring) = unsafe {
            (
                Mutex::open_at(&seg, layout.mutex)?,
                Event::open_at(&seg, layout.doorbell)?,
                Ring::attach(map.ring(), layout.ring_cap).expect("the layout holds the ring"),
            )
        };
        let me = seg.member()?;
        let Claimed {
            slot,
            epoch,
            done,
            note,
            note_tail,
        } = claim(&map, &mutex, me, name, wait_until(deadline, LOCK_WAIT))?;
        let seq = map.slot(slot).seq();
        // SAFETY: stored beside `map` in the Conn and dropped before it.
        let me_slot = unsafe { map.slot_ref(slot) };
        Ok(Conn {
            me_slot,
            map,
            ring,
            mutex,
            bell,
            done: done.wait_strategy(strategy),
            note,
            note_tail,
            slot,
            seq,
            epoch,
            poll_backoff: 0,
            me,
        })
    }

    #[inline]
    fn slot(&self) -> &SlotHeader {
        self.me_slot.header()
    }

    #[inline]
    pub(super) fn closed(&self) -> bool {
        self.map.flags().closed.load(Ordering::Relaxed) != 0
    }

    #[inline]
    pub(super) fn shutting_down(&self) -> bool {
        self.map.flags().shutting_down.load(Ordering::Relaxed) != 0
    }

    /// Whether the server can still answer (run every ~20 ms while waiting): its liveness
    /// token, held by the server for as long as it runs (in any PID namespace).
    fn server_alive(&self) -> bool {
        !self.closed() && self.map.seg.owner_alive()
    }

    #[inline]
    pub(super) fn request_buf(&mut self) -> &mut [u8] {
        let max = self.me_slot.max_message();
        // SAFETY: the slot is ours and WRITING (begun), so no protocol-following process
        // touches its request bytes; &mut self keeps this the only view in this process.
        unsafe { self.me_slot.request.bytes_mut(0, max) }.expect("max_message bytes")
    }

    #[inline]
    pub(super) fn response(&self, n: usize) -> &[u8] {
        // SAFETY: in RESPONSE_READY the response bytes are no longer written by the server
        // (n <= max_message was checked by `answer`, and again by the region).
        unsafe { self.me_slot.response.bytes(0, n) }.expect("n <= max_message")
    }

    /// Whether [`begin`](Self::begin) would succeed at once: the slot is ours, IDLE (the last
    /// call was answered and collected), and the server did not ask us to leave.
    #[cfg(feature = "async")]
    pub(super) fn idle(&self) -> bool {
        let slot = self.slot();
        slot.state() == IDLE && slot.is_of(self.epoch) && slot.evicted() != self.epoch
    }

    /// Begins a call: makes the slot this connection's `WRITING` (from then on the server
    /// cannot take it back), first discarding the late answer of a call that timed out
    /// (waiting for it if the server is still working on it). [`Waited::Revoked`] if the
    /// server took the slot back (evicted or reaped for idleness) or asked this connection
    /// to leave: the caller reconnects.
    #[inline]
    pub(super) fn begin(&self, deadline: Option<Instant>) -> Result<(), Waited> {
        let slot = self.slot();
        // The last call was answered (or this is the first), and the server did not ask us to
        // leave: one CAS and one load on the slot's line.
        if slot.begin(self.epoch) && slot.evicted() != self.epoch {
            return Ok(());
        }
        self.begin_slow(deadline)
    }

    #[cold]
    fn begin_slow(&self, deadline: Option<Instant>) -> Result<(), Waited> {
        let slot = self.slot();
        loop {
            let state = slot.state();
            let known = matches!(
                state,
                FREE | IDLE | WRITING | REQUEST_READY | IN_SERVICE | RESPONSE_READY
            );
            if state == FREE || (known && !slot.is_of(self.epoch)) {
                return Err(Waited::Revoked); // taken back, maybe another client's by now
            }
            match state {
                WRITING => {
                    if slot.evicted() == self.epoch {
                        let _ = slot.abandon(self.epoch);
                        return Err(Waited::Revoked);
                    }
                    return Ok(());
                }
                IDLE => {
                    let _ = slot.begin(self.epoch); // or revoked meanwhile: looked at again
                }
                RESPONSE_READY => {
                    let _ = slot.collect(self.epoch);
                }
                REQUEST_READY => {
                    let _ = slot.retract(self.epoch);
                }
                IN_SERVICE => match self.done.wait_for(
                    |_| slot.state() != IN_SERVICE,
                    deadline,
                    Some(&mut || self.server_alive()),
                ) {
                    WaitOutcome::Set => {}
                    WaitOutcome::TimedOut => return Err(Waited::Timeout),
                    WaitOutcome::Aborted => {
                        return Err(Waited::Gone {
                            retracted: false,
                            graceful: false,
                        })
                    }
                },
                _ => return Err(Waited::Failed(overwritten())),
            }
        }
    }

    /// Ends a call that submitted nothing (its request could not be written): the slot is
    /// IDLE again.
    pub(super) fn abandon(&self) {
        let _ = self.slot().abandon(self.epoch);
    }

    /// Starts fetching the lines a call writes, which a worker touched last: the request's
    /// first line, the slot header and the ring cell (`push` asks for the cell again: a
    /// spinning worker may have read it back meanwhile). Their transfers then overlap
    /// instead of adding up.
    #[inline]
    pub(super) fn prefetch(&self) {
        prefetch_write(self.me_slot.request.as_ptr());
        prefetch_write(self.slot());
        self.ring.prefetch_push();
    }

    /// Submits the `len` request bytes written into [`request_buf`](Conn::request_buf);
    /// `false` (nothing submitted) if the slot is not WRITING, which only another process
    /// scribbling on it can cause after [`begin`](Conn::begin).
    #[inline]
    pub(super) fn submit(&mut self, len: usize) -> bool {
        let seq = self.seq.wrapping_add(1);
        // The fence in `bell.notify()` below also pairs the state store with the server's
        // `closed` store and fence: either its final scan sees REQUEST_READY, or our liveness
        // check sees `closed`.
        if !self.slot().submit(self.epoch, seq, len as u32) {
            return false;
        }
        self.seq = seq;
        if self.ring.push(self.slot).is_err() {
            self.map.flags().need_scan.store(1, Ordering::Release);
        }
        // Wakes a worker only if all of them sleep; a spinning one sees the ring entry.
        self.bell.notify();
        true
    }

    /// The length of a successful answer to the current request if it comes within
    /// [`FAST_POLLS`] inline polls of the state word; `None` leaves everything (a slow
    /// answer, a failure status, garbage) to [`wait`](Conn::wait), which reads the same words.
    ///
    /// Most answers come while the client spins, and whatever runs between an answer's
    /// arrival and the next request is on the round trip's critical path: this plain loop is
    /// the shortest such path. It is skipped for the `Block` strategy, and for
    /// [`POLL_BACKOFF`] calls after it ran out with the worker on our CPU (it cannot answer
    /// while we poll). A poll that ran out with the worker elsewhere (a long handler, a
    /// preempted CPU) does not back off: the next answer is likely fast again. It looks at no
    /// deadline: at most [`FAST_POLLS`] pauses, a few microseconds.
    #[inline]
    pub(super) fn poll_answer(&mut self) -> Option<usize> {
        if self.poll_backoff > 0 {
            self.poll_backoff -= 1;
            return None;
        }
        if matches!(
            self.done.current_wait_strategy(),
            WaitStrategy::Block | WaitStrategy::SpinThenBlock { spins: 0 }
        ) {
            return None;
        }
        let slot = self.slot();
        let mut polls = FAST_POLLS;
        let mut state = slot.state();
        while matches!(state, REQUEST_READY | IN_SERVICE) {
            polls -= 1;
            if polls == 0 {
                self.poll_backoff = if self.done.setter_shares_cpu() {
                    POLL_BACKOFF
                } else {
                    0 // only a slow answer this time (a long handler, a preempted worker)
                };
                return None;
            }
            std::hint::spin_loop();
            state = slot.state();
        }
        self.ok_answer(state)
    }

    /// The length of a successful answer to the current request, the slot being in `state`.
    #[inline]
    fn ok_answer(&self, state: u32) -> Option<usize> {
        let slot = self.slot();
        let ok = state == RESPONSE_READY
            && slot.is_of(self.epoch)
            && slot.resp_seq() == self.seq
            && slot.status() == STATUS_OK;
        let len = slot.resp_len() as usize;
        (ok && len <= self.me_slot.max_message()).then_some(len)
    }

    /// As [`poll_answer`](Self::poll_answer), polling for up to `budget` (the async client's
    /// fast path: a thread hand-off costs about that much). Does not poll while the worker
    /// runs on this CPU (it could not answer meanwhile).
    #[cfg(feature = "async")]
    pub(super) fn poll_answer_for(&mut self, budget: std::time::Duration) -> Option<usize> {
        if self.done.setter_shares_cpu() {
            return None;
        }
        let slot = self.slot();
        let start = Instant::now();
        let mut state = slot.state();
        while matches!(state, REQUEST_READY | IN_SERVICE) {
            if start.elapsed() > budget {
                return None;
            }
            for _ in 0..16 {
                std::hint::spin_loop();
            }
            state = slot.state();
        }
        self.ok_answer(state)
    }

    /// After the answer was read: the slot is IDLE again. (The next call's `prefetch` asks
    /// for the request line; asking here as well only adds a transfer.)
    #[inline]
    pub(super) fn end_call(&self) {
        // Refused only if another process scribbled on the word since the answer came; the
        // next call's `begin` reports that.
        let _ = self.slot().collect(self.epoch);
    }

    /// The answer to the current request if it is there.
    fn answer(&self) -> Option<Waited> {
        let slot = self.slot();
        // Another connection's answer (the slot was taken from us) is not ours.
        if slot.state() != RESPONSE_READY || !slot.is_of(self.epoch) || slot.resp_seq() != self.seq
        {
            return None;
        }
        let len = slot.resp_len() as usize;
        let status = slot.status();
        let failed = |e| {
            // A refusal is read once: the slot is IDLE again (as in `end_call`).
            let _ = slot.collect(self.epoch);
            Some(Waited::Failed(e))
        };
        match status {
            STATUS_OK if len <= self.me_slot.max_message() => Some(Waited::Answer(len)),
            STATUS_OK => failed(CallError::Protocol {
                reason: "response length exceeds max_message",
            }),
            STATUS_REFUSED => failed(CallError::ShuttingDown),
            STATUS_BAD_LENGTH => failed(CallError::Protocol {
                reason: "the server refused the request length",
            }),
            STATUS_PANICKED => failed(CallError::HandlerPanicked),
            STATUS_APP_ERROR if len <= self.me_slot.max_message() => {
                let code = slot.app_code();
                let detail = self.response(len).to_vec();
                failed(CallError::Application { code, detail })
            }
            STATUS_BAD_RESPONSE => failed(CallError::BadResponse {
                len,
                max: self.me_slot.max_message(),
            }),
            _ => failed(CallError::Protocol {
                reason: "unknown response status",
            }),
        }
    }

    pub(super) fn wait(&self, deadline: Option<Instant>) -> Waited {
        let slot = self.slot();
        loop {
            // Spins on (or sleeps until) the slot's state word leaving the two "in flight"
            // states: the worker changes it, then notifies `done`.
            let outcome = self.done.wait_for(
                |_| !matches!(slot.state(), REQUEST_READY | IN_SERVICE),
                deadline,
                Some(&mut || self.server_alive()),
            );
            if let Some(w) = self.answer() {
                return w;
            }
            match outcome {
                WaitOutcome::Set => {
                    let now = slot.state();
                    if matches!(now, REQUEST_READY | IN_SERVICE) {
                        continue; // a stale signal
                    }
                    // The state left the in-flight pair: the answer is there (it may have
                    // come since `answer` looked), or a broken peer wrote the slot.
                    if let Some(w) = self.answer() {
                        return w;
                    }
                    return Waited::Failed(if now == RESPONSE_READY {
                        CallError::Protocol {
                            reason: "the response answers another request",
                        }
                    } else {
                        overwritten()
                    });
                }
                WaitOutcome::TimedOut | WaitOutcome::Aborted => {
                    let retracted = slot.retract(self.epoch);
                    if !retracted {
                        if let Some(w) = self.answer() {
                            return w;
                        }
                    }
                    return if outcome == WaitOutcome::TimedOut {
                        Waited::Timeout
                    } else {
                        Waited::Gone {
                            retracted,
                            graceful: self.closed(),
                        }
                    };
                }
            }
        }
    }
}

impl Conn {
    /// Whether the slot is still this connection's and the server did not ask it to leave.
    fn owns_slot(&self) -> bool {
        let slot = self.slot();
        slot.state() != FREE && slot.is_of(self.epoch) && slot.evicted() != self.epoch
    }

    /// Hands the next notification for this connection to `read`. With `wait`, waits for one
    /// until `deadline` (none: as long as the connection lasts); without, returns `None` if
    /// none is queued. Notifications queued before the server stopped are still handed out.
    pub(super) fn notification<R>(
        &mut self,
        wait: bool,
        deadline: Option<Instant>,
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, Waited> {
        let mut read = Some(read);
        loop {
            if !self.owns_slot() {
                return Err(Waited::Revoked);
            }
            let queue = self.map.notes(self.slot);
            let popped = queue.pop(&mut self.note_tail, self.epoch, |bytes| {
                read.take().expect("called once")(bytes)
            });
            match popped {
                Popped::Item(r) => return Ok(Some(r)),
                Popped::Skipped => continue,
                Popped::Empty if !wait => return Ok(None),
                Popped::Empty => {}
            }
            if !self.server_alive() {
                return Err(Waited::Gone {
                    retracted: false,
                    graceful: false,
                });
            }
            let tail = self.note_tail;
            let outcome = self.note.wait_for(
                |_| queue.published() != tail,
                deadline,
                Some(&mut || {
                    queue.republish(tail);
                    self.server_alive() && self.owns_slot()
                }),
            );
            if outcome == WaitOutcome::Set || queue.published() != tail {
                continue;
            }
            return Err(match outcome {
                WaitOutcome::TimedOut => Waited::Timeout,
                _ if self.server_alive() => Waited::Revoked,
                _ => Waited::Gone {
                    retracted: false,
                    graceful: false,
                },
            });
        }
    }
}

/// A slot just claimed.
struct Claimed {
    slot: u32,
    /// The connection's number on the slot.
    epoch: u32,
    done: Event,
    note: Event,
    /// Where the connection's notifications start.
    note_tail: u32,
}

/// Claims a free slot (or one whose owner died) under the slot mutex, waiting at most
/// `lock_wait` for it ([`CallError::LockHeld`] after that), and resets the slot's events
/// and notification queue. When every slot
/// is taken, tells the server a newcomer wants one (it may reap an idle client, see
/// `ServerBuilder::idle_timeout`).
fn claim(
    map: &Mapped,
    mutex: &Mutex,
    me: Member,
    name: &str,
    lock_wait: Duration,
) -> Result<Claimed, CallError> {
    // Either outcome is fine: the slot words are atomics, every claim step below is
    // re-checked, so a holder that died mid-claim left nothing to repair.
    let _guard = match mutex.lock_timeout(lock_wait) {
        Err(Error::Timeout) => {
            return Err(CallError::LockHeld {
                name: name.to_owned(),
                pid: mutex.holder_pid(),
                waited: lock_wait,
            })
        }
        r => r?,
    };
    for i in 0..map.layout.slots {
        let slot = map.slot(i);
        let usable = match slot.state() {
            FREE => true,
            IN_SERVICE => false, // a worker still owns the bytes; reap it later
            _ => !map.seg.is_alive(slot.owner()) && slot.reap(),
        };
        if usable {
            // SAFETY: the layout places slot i's events here; the server initialised them.
            let (done, note) = unsafe {
                (
                    Event::open_at(&map.seg, map.layout.done_event(i))?,
                    Event::open_at(&map.seg, map.layout.note_event(i))?,
                )
            };
            done.reset();
            note.reset();
            // Before the claim publishes the connection: whatever the server queues for it
            // comes after this point.
            let note_tail = map.notes(i).start();
            if slot.claim(me) {
                return Ok(Claimed {
                    slot: i,
                    epoch: slot.epoch(),
                    done,
                    note,
                    note_tail,
                });
            }
        }
    }
    map.flags().slot_wanted.store(1, Ordering::Relaxed);
    Err(CallError::ServerBusy {
        name: name.to_owned(),
        slots: map.layout.slots,
    })
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Should the wait fail, release anyway: the transitions below are safe without the
        // mutex (see `SlotHeader::release`), and a drop must not hang.
        let _guard = self.mutex.lock_timeout(LOCK_WAIT);
        let slot = self.slot();
        if slot.owner() != self.me || !slot.is_of(self.epoch) {
            return; // reaped, revoked or scribbled over: not ours to release
        }
        // A request no worker took is withdrawn (one being written, dropped in a panic, too);
        // one being served is left ownerless, to be reaped once answered.
        let _ = slot.retract(self.epoch);
        let _ = slot.abandon(self.epoch);
        if !slot.release(self.epoch) {
            slot.disown();
        }
    }
}
