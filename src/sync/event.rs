//! Auto-reset events in shared memory: a state word, spin-then-sleep waits.

use std::fmt;
use std::hint;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::atomic::{fence, AtomicU32, Ordering};
use crate::error::{Error, Result};
use crate::name::ServiceName;
use crate::region::{Region, ShmAtomic};
use crate::segment::{Access, Segment, SegmentKind, DEFAULT_MODE, READY_WAIT};
use crate::sys;

pub(super) const KIND_VERSION: u32 = 1;

/// Bytes one event takes in shared memory (a cache line, so two events never share one).
pub(crate) const EVENT_STORAGE: usize = 64;

/// `EventCell::word`:
///
/// | bits | meaning |
/// |---|---|
/// | bit 0 (`SET`) | signalled; the next waiter consumes it (auto-reset) |
/// | bits 1..32 (`SLEEPER` units) | number of waiters asleep in the kernel (or about to be) |
///
/// One word, so `set` learns atomically whether anyone sleeps and skips the wake syscall
/// when nobody does; a sleeper sleeps only while the word is exactly the value it saw,
/// so a `set` between its check and its sleep is never lost.
const SET: u32 = 1;
const SLEEPER: u32 = 2;
/// More sleepers than any machine runs: a count above it was written by a broken peer.
const MAX_SLEEPERS: u32 = 1 << 20;
/// Longest kernel sleep without a look at the word: a sleeper whose registration a broken
/// peer wrote away (so that no `set` would wake it) registers again within this time.
#[cfg(not(loom))]
const HEAL_INTERVAL: Option<Duration> = Some(Duration::from_millis(100));
/// Loom models no time: a timed sleep there is a yield.
#[cfg(loom)]
const HEAL_INTERVAL: Option<Duration> = None;

/// An event as laid out in shared memory.
#[repr(C, align(64))]
pub(crate) struct EventCell {
    /// See [`SET`] and the table there.
    word: AtomicU32,
    /// CPU the last `set` ran on (`u32::MAX`: unknown). The adaptive wait does not spin for a
    /// setter that shares its CPU: spinning would only keep it from running.
    setter_cpu: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<EventCell>() == EVENT_STORAGE);

// SAFETY: `#[repr(C, align(64))]`, atomics only and padding never read; any bit pattern is
// valid.
unsafe impl ShmAtomic for EventCell {}

/// The event cell at `offset` of `seg`'s data region (an error if it does not fit).
fn cell_at(seg: &Segment, offset: usize) -> Result<CellRef<'_>> {
    seg.data()
        .sub(offset, EVENT_STORAGE)
        .map(CellRef)
        .ok_or_else(|| Error::Corrupt {
            name: seg.name().into(),
            reason: format!("no event fits at offset {offset}"),
        })
}

/// An event cell's memory, borrowed from its segment.
struct CellRef<'a>(Region<'a>);

impl<'a> std::ops::Deref for CellRef<'a> {
    type Target = EventCell;
    fn deref(&self) -> &EventCell {
        self.0.at(0)
    }
}

impl CellRef<'_> {
    /// # Safety
    /// The caller keeps the mapping alive as long as it uses the result.
    unsafe fn detach(self) -> &'static EventCell {
        // SAFETY: forwarded.
        unsafe { self.0.detach() }.at(0)
    }
}

/// How a waiter waits before the event is set.
///
/// Sleeping at once makes every hand-off pay for a kernel wake-up, which is slow when the
/// peer runs on another CPU (slowest on virtual machines); spinning keeps a peer that needs
/// this CPU from running. [`WaitStrategy::Adaptive`], the default, avoids both; the others
/// trade CPU time for latency on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WaitStrategy {
    /// Sleep in the kernel at once. Uses no CPU while waiting; pick it when waits are long
    /// (slow handlers, rare events) or CPU time matters more than latency.
    Block,
    /// Spin `spins` times (a CPU pause each), then sleep. Pick it when you know how long
    /// waits take and want a fixed spin instead of a learnt one.
    SpinThenBlock {
        /// Number of spin iterations.
        spins: u32,
    },
    /// Busy-spin until set or timed out (yielding now and then). Lowest latency when each
    /// side has a CPU to itself; burns a CPU while waiting.
    Spin,
    /// The default. Spin while the last setter runs on another CPU, for a budget learnt from
    /// recent waits (about twice the recent wait, at most 50 us); yield a few times (that
    /// lets a setter on our CPU run); then sleep. A yield that handed the CPU to another
    /// task for a time slice (a quarter of a millisecond or more), or a spin preempted as
    /// long, shows that the CPU is busy: the next waits then sleep at once (spinning would spend the CPU share that
    /// lets a wake-up run promptly, and yielding gives away time slices), and the spin is
    /// tried again after a number of waits that doubles while the CPU stays busy. Waits that
    /// outlast the spin at a steady pace (a peer working a fixed time per message) are
    /// learnt too: the next ones spin for them when a sleep and wake-up would cost as much
    /// (up to 300 us), or sleep on a timer until shortly before the signal is due and then
    /// spin (up to 5 ms), so neither side pays for a wake-up; an irregular pace, or a
    /// setter on our CPU, sleeps as before. Right for most uses, whatever the placement of
    /// the two sides and the load of the machine.
    #[default]
    Adaptive,
}

/// Longest adaptive spin: about the cost of waking a sleeping vCPU.
const MAX_SPIN: Duration = Duration::from_micros(50);
/// Adaptive spin budget bounds, in iterations (a CPU pause each: ~10-40 ns).
const MAX_SPIN_ITERS: u32 = 1 << 13;
const MIN_SPIN_ITERS: u32 = 64;
const YIELDS: u32 = 4;
/// A yield (or a gap in a spin) longer than this ran another task for a time slice (the
/// scheduler's slices are ~1 ms and more), not a peer for a short turn: it costs several
/// times what sleeping and being woken would have.
const BUSY_CPU: Duration = Duration::from_micros(250);
/// The same for a yield after which the setter had set: its turn came, but only after
/// other tasks' slices (a round of peers' short turns takes less).
const BUSY_CPU_READY: Duration = Duration::from_millis(2);
/// Waits that sleep at once after the CPU was found busy: the first time, and at most.
const MIN_BUSY_WAITS: u32 = 16;
const MAX_BUSY_WAITS: u32 = 4096;
/// A nap ends this long before the predicted signal: the timer's slack (50 us by default on
/// Linux) and the wake-up's latency.
const NAP_LEAD: Duration = Duration::from_micros(80);
/// Regular waits up to this long are spun for (about what a sleep and a wake-up cost here).
const NAP_SHORT: Duration = Duration::from_micros(300);
/// Longest spin after a nap.
const NAP_SPIN: Duration = Duration::from_micros(250);
/// Waits predicted longer than this sleep as usual (the nap's spin would then cost more
/// CPU than the wake-up it saves is worth).
const NAP_MAX: Duration = Duration::from_millis(5);
/// How often a waiter with a liveness check wakes up to run it.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_millis(20);

/// How the adaptive spin ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spun {
    /// `ready()` held.
    Ready,
    /// Spun and yielded in vain: sleep.
    Missed,
    /// Did not spin (the setter shares our CPU), yielded in vain: sleep.
    MissedOnOurCpu,
    /// Another task has our CPU: sleep at once.
    BusyCpu,
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitOutcome {
    /// The event was set (and is now reset again).
    Set,
    /// The deadline passed.
    TimedOut,
    /// The liveness check asked to stop.
    Aborted,
}

/// An auto-reset event shared between processes, with timed waits.
///
/// [`set`](Event::set) signals the event; one waiter consumes the signal and the event is
/// reset. Setting an already-set event does nothing (signals do not count). `set` makes no
/// syscall unless a waiter sleeps in the kernel.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmlink::Event;
/// # let name = format!("doc-event-{}", std::process::id());
/// let ev = Event::create(&name)?;
/// let peer = Event::open(&name)?;       // usually in another process
/// assert!(!peer.wait_timeout(Duration::from_millis(1)));
/// ev.set();
/// assert!(peer.wait_timeout(Duration::from_secs(1)));
/// assert!(!peer.try_wait());           // auto-reset
/// # Ok::<(), shmlink::Error>(())
/// ```
pub struct Event {
    cell: &'static EventCell,
    waiter: sys::Waiter,
    strategy: WaitStrategy,
    /// Adaptive spin budget in iterations, learnt from this handle's recent waits.
    spin_iters: AtomicU32,
    /// Adaptive waits left that sleep at once: the CPU was busy with other tasks.
    busy_left: AtomicU32,
    /// What `busy_left` is set to when the CPU is next found busy (doubles while it stays
    /// busy, halves after each look that finds it free).
    busy_waits: AtomicU32,
    /// Recent waits that went past the spin, from the end of the spin to the signal: their
    /// running mean and mean deviation, in microseconds (see [`Event::nap`]).
    slept_us: AtomicU32,
    slept_dev_us: AtomicU32,
    /// What holds the cell: the segment, or (in tests) the heap cell itself.
    _mem: Arc<dyn Send + Sync>,
}

impl Event {
    /// Creates the event `name` in a segment of its own, not set.
    ///
    /// # Errors
    /// As [`SegmentBuilder::create`](crate::SegmentBuilder::create).
    pub fn create(name: &str) -> Result<Event> {
        Event::create_with_mode(name, DEFAULT_MODE)
    }

    /// As [`create`](Self::create), with permission bits `mode` on POSIX (e.g. `0o660` for a
    /// group of users; others open it with [`open_with`](Self::open_with)). Ignored on
    /// Windows.
    ///
    /// # Errors
    /// As [`SegmentBuilder::create`](crate::SegmentBuilder::create).
    pub fn create_with_mode(name: &str, mode: u32) -> Result<Event> {
        let seg = Arc::new(
            Segment::builder(name)
                .mode(mode)
                .tag("event")
                .kind(SegmentKind::Event, KIND_VERSION)
                .size(EVENT_STORAGE)
                .create_unpublished()?,
        );
        // SAFETY: the data region holds EVENT_STORAGE bytes at offset 0, 64-aligned, unpublished.
        let ev = unsafe { Event::init_at(&seg, 0) }?;
        seg.publish();
        Ok(ev)
    }

    /// Opens the event `name` created by another process.
    ///
    /// # Errors
    /// As [`Segment::open`].
    pub fn open(name: &str) -> Result<Event> {
        Event::open_with(name, Access::owner_only())
    }

    /// As [`open`](Self::open), accepting what `access` allows (another user's object, or
    /// one others may write: see [`Access`]).
    ///
    /// # Errors
    /// As [`Segment::open`].
    pub fn open_with(name: &str, access: Access) -> Result<Event> {
        let seg = Arc::new(Segment::open_kind_access(
            &ServiceName::new(name)?,
            "event",
            SegmentKind::Event,
            KIND_VERSION,
            READY_WAIT,
            access,
        )?);
        if seg.len() < EVENT_STORAGE {
            return Err(Error::Corrupt {
                name: name.into(),
                reason: "event segment too small".into(),
            });
        }
        // SAFETY: the creator initialised an event at offset 0 before publishing.
        unsafe { Event::open_at(&seg, 0) }
    }

    /// Initialises an event (not set) at `offset` of `seg`'s data region.
    ///
    /// # Safety
    /// `offset..offset + EVENT_STORAGE` lies in the data region, is 64-aligned and is used
    /// for nothing else.
    pub(crate) unsafe fn init_at(seg: &Arc<Segment>, offset: usize) -> Result<Event> {
        let cell = cell_at(seg, offset)?;
        cell.word.store(0, Ordering::Release);
        cell.setter_cpu.store(u32::MAX, Ordering::Relaxed);
        // SAFETY: the cell was just initialised; forwarded from the caller's contract.
        unsafe { Event::open_at(seg, offset) }
    }

    /// Attaches to an event initialised at `offset` of `seg`.
    ///
    /// # Safety
    /// `offset..offset + EVENT_STORAGE` lies in the data region and is 64-aligned.
    pub(crate) unsafe fn open_at(seg: &Arc<Segment>, offset: usize) -> Result<Event> {
        debug_assert!(offset + EVENT_STORAGE <= seg.len() && offset % EVENT_STORAGE == 0);
        let key = format!("{}.e{offset}", seg.os_name());
        let waiter = sys::Waiter::new(&key).map_err(|e| Error::os("event open", seg.name(), e))?;
        // SAFETY: `_mem` below keeps the segment, and so the mapping, alive as long as self.
        let cell = unsafe { cell_at(seg, offset)?.detach() };
        Ok(Event {
            cell,
            waiter,
            strategy: WaitStrategy::default(),
            spin_iters: AtomicU32::new(1024),
            busy_left: AtomicU32::new(0),
            busy_waits: AtomicU32::new(MIN_BUSY_WAITS),
            slept_us: AtomicU32::new(0),
            slept_dev_us: AtomicU32::new(u32::MAX),
            _mem: Arc::clone(seg) as _,
        })
    }

    /// An event in a heap cell instead of a segment (unit tests, Miri and loom models): the
    /// same algorithm, without the OS objects around it.
    #[cfg(test)]
    pub(crate) fn on_heap(strategy: WaitStrategy) -> Event {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = format!(
            "{}shmlink.heap.{}.{n}",
            sys::OS_NAME_PREFIX,
            std::process::id()
        );
        let cell = Arc::new(EventCell {
            word: AtomicU32::new(0),
            setter_cpu: AtomicU32::new(u32::MAX),
        });
        // SAFETY: `_mem` below keeps the heap cell alive as long as self.
        let cell_ref: &'static EventCell = unsafe { &*Arc::as_ptr(&cell) };
        Event {
            cell: cell_ref,
            waiter: sys::Waiter::new(&key).unwrap(),
            strategy,
            spin_iters: AtomicU32::new(1024),
            busy_left: AtomicU32::new(0),
            busy_waits: AtomicU32::new(MIN_BUSY_WAITS),
            slept_us: AtomicU32::new(0),
            slept_dev_us: AtomicU32::new(u32::MAX),
            _mem: cell,
        }
    }

    /// Uses `strategy` for this handle's waits.
    pub fn wait_strategy(mut self, strategy: WaitStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Changes the strategy of this handle's waits.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// The strategy this handle waits with.
    pub fn current_wait_strategy(&self) -> WaitStrategy {
        self.strategy
    }

    #[inline]
    fn cell(&self) -> &EventCell {
        self.cell
    }

    /// Resets the event to "not set, no sleepers" (for reusing a slot whose waiter died).
    pub(crate) fn reset(&self) {
        self.cell().word.store(0, Ordering::Release);
    }

    /// Number of waiters registered as asleep in the kernel (a waiter that was killed while
    /// asleep stays counted until the event is reset; it only costs `set` a wake syscall).
    #[doc(hidden)]
    pub fn sleepers(&self) -> u32 {
        self.cell().word.load(Ordering::Relaxed) / SLEEPER
    }

    /// Whether the last process to signal this event ran on the caller's CPU (as far as the
    /// platform can tell: where it cannot, the answer is yes). A waiter that spins while its
    /// signaller shares its CPU only delays the signal.
    pub(crate) fn setter_shares_cpu(&self) -> bool {
        self.cell().setter_cpu.load(Ordering::Relaxed) == sys::current_cpu()
    }

    /// Signals the event: wakes one waiter, or leaves it set for the next one.
    #[inline]
    pub fn set(&self) {
        let cell = self.cell();
        let old = cell.word.fetch_or(SET, Ordering::AcqRel);
        cell.setter_cpu.store(sys::current_cpu(), Ordering::Relaxed);
        if old & SET == 0 && old >= SLEEPER {
            self.waiter.wake(&cell.word);
        }
    }

    /// Consumes the signal if the event is set; never waits.
    #[inline]
    pub fn try_wait(&self) -> bool {
        let word = &self.cell().word;
        let mut v = word.load(Ordering::Relaxed);
        while v & SET != 0 {
            match word.compare_exchange_weak(v, v & !SET, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    /// Waits until the event is set.
    pub fn wait(&self) {
        while self.wait_until(None, None) != WaitOutcome::Set {}
    }

    /// Waits at most `timeout`; returns whether the event was set (`false`: timed out).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(sys::deadline_after(Some(timeout)), None) == WaitOutcome::Set
    }

    /// Waits until set, `deadline`, or until `check` (called every [`CHECK_INTERVAL`] while
    /// asleep, and between spin rounds) returns false.
    pub(crate) fn wait_until(
        &self,
        deadline: Option<Instant>,
        check: Option<&mut dyn FnMut() -> bool>,
    ) -> WaitOutcome {
        let word = &self.cell().word;
        let mut signalled = |_| word.load(Ordering::Relaxed) & SET != 0 && self.try_wait();
        self.wait_inner(&mut signalled, false, deadline, check)
    }

    /// The waiting half of an eventcount: waits until `cond()` holds, or a signal comes, or
    /// `deadline`, or `check` (as in [`wait_until`](Event::wait_until)) returns false.
    ///
    /// The other side makes `cond` true and then calls [`notify`](Event::notify), which
    /// writes the event's word only when a waiter sleeps in the kernel. So while both sides
    /// spin, a hand-off moves only the cache lines `cond` reads, not the event's as well
    /// (the channel's round trip is made of two such hand-offs).
    ///
    /// `cond` gets `true` on its rare looks (between yields, and before each sleep), where it
    /// may afford to look further than while spinning.
    ///
    /// Returns `Set` when `cond` held or a signal was consumed: callers re-check what they
    /// wait for, a signal may be stale.
    pub(crate) fn wait_for(
        &self,
        mut cond: impl FnMut(bool) -> bool,
        deadline: Option<Instant>,
        check: Option<&mut dyn FnMut() -> bool>,
    ) -> WaitOutcome {
        self.wait_inner(&mut cond, true, deadline, check)
    }

    /// Makes a [`wait_for`](Event::wait_for) waiter re-check its condition: call it after
    /// the stores that make the condition true. Costs a fence and a read of a cache line
    /// nobody writes, unless a waiter sleeps (then it is [`set`](Event::set)).
    #[inline]
    pub(crate) fn notify(&self) {
        let cell = self.cell();
        let cpu = sys::current_cpu();
        // Read before writing: the line stays shared while the notifier stays on one CPU.
        if cell.setter_cpu.load(Ordering::Relaxed) != cpu {
            cell.setter_cpu.store(cpu, Ordering::Relaxed);
        }
        // Dekker with the sleeper's registration in `sleep`: either it sees our stores (its
        // `cond` holds), or we see it registered and wake it.
        fence(Ordering::SeqCst);
        if cell.word.load(Ordering::Relaxed) >= SLEEPER {
            self.set();
        }
    }

    /// Spins for `ready()` as the strategy says, then sleeps; `cond_ready` says that `ready`
    /// is an eventcount condition (see `wait_for`) rather than the event's own signal.
    fn wait_inner(
        &self,
        ready: &mut dyn FnMut(bool) -> bool,
        cond_ready: bool,
        deadline: Option<Instant>,
        mut check: Option<&mut dyn FnMut() -> bool>,
    ) -> WaitOutcome {
        if ready(false) {
            return WaitOutcome::Set;
        }
        // Whether this wait may nap or spin on past the adaptive spin (see `nap`).
        let mut predict = false;
        let spun = match self.strategy {
            WaitStrategy::Block => false,
            WaitStrategy::SpinThenBlock { spins } => (0..spins).any(|_| {
                hint::spin_loop();
                ready(false)
            }),
            WaitStrategy::Spin => return self.spin_until(ready, deadline, &mut check),
            WaitStrategy::Adaptive => match self.adaptive_spin(ready) {
                Spun::Ready => true,
                Spun::Missed => {
                    predict = true;
                    false
                }
                Spun::MissedOnOurCpu => false,
                Spun::BusyCpu => {
                    // Not a measure of how long spinning would have taken: do not learn.
                    let cond = if cond_ready { Some(ready) } else { None };
                    return self.sleep(cond, deadline, &mut check);
                }
            },
        };
        if spun {
            return WaitOutcome::Set;
        }
        let slept = Instant::now();
        let mut outcome = None;
        if predict {
            match self.nap() {
                // Recent waits ran this long, give or take little, and a sleep and wake-up
                // would cost about as much: spin for it.
                Some((nap, spin)) if nap.is_zero() => {
                    outcome = self.spin_for(ready, spin).then_some(WaitOutcome::Set);
                }
                // Longer: sleep through most of it with a timer, then spin for the signal,
                // so that neither side pays for a wake-up (the setter sees no sleeper; we
                // are up when it comes).
                Some((nap, spin)) => {
                    let until = slept + nap;
                    let nap_end = deadline.map_or(until, |d| d.min(until));
                    let cond = if cond_ready { Some(&mut *ready) } else { None };
                    outcome = match self.sleep(cond, Some(nap_end), &mut check) {
                        WaitOutcome::TimedOut if deadline.is_none_or(|d| Instant::now() < d) => {
                            self.spin_for(ready, spin).then_some(WaitOutcome::Set)
                        }
                        o => Some(o),
                    };
                }
                None => {}
            }
        }
        let outcome = match outcome {
            Some(o) => o,
            None => {
                let cond = if cond_ready { Some(ready) } else { None };
                self.sleep(cond, deadline, &mut check)
            }
        };
        if self.strategy == WaitStrategy::Adaptive && outcome == WaitOutcome::Set {
            let took = slept.elapsed();
            self.learn(took < MAX_SPIN);
            if predict {
                self.learn_nap(took);
            }
        }
        outcome
    }

    /// When recent waits past the spin were regular (mean deviation under a quarter of the
    /// mean, mean at most [`NAP_MAX`]) and the last setter ran on another CPU: how long to sleep on a timer (their mean less
    /// [`NAP_LEAD`]; none for waits shorter than [`NAP_SHORT`], which are spun for), then
    /// how long to spin at most.
    #[inline(never)]
    fn nap(&self) -> Option<(Duration, Duration)> {
        let mean = self.slept_us.load(Ordering::Relaxed);
        let dev = self.slept_dev_us.load(Ordering::Relaxed);
        // Spinning while the setter waits for our CPU would only delay it.
        if dev.saturating_mul(4) > mean {
            return None;
        }
        let (mean, dev) = (
            Duration::from_micros(u64::from(mean)),
            Duration::from_micros(u64::from(dev)),
        );
        if mean <= NAP_SHORT {
            Some((Duration::ZERO, mean + 2 * dev + Duration::from_micros(20)))
        } else if mean <= NAP_MAX {
            Some((mean - NAP_LEAD, NAP_SPIN))
        } else {
            None
        }
    }

    /// Folds a wait that went past the spin (`took` from the end of the spin to the signal)
    /// into the running mean and deviation (weight 1/4 each).
    #[inline(never)]
    fn learn_nap(&self, took: Duration) {
        let d = took.as_micros().min(u128::from(u32::MAX / 4)) as i64;
        let mean = i64::from(self.slept_us.load(Ordering::Relaxed));
        let dev = i64::from(self.slept_dev_us.load(Ordering::Relaxed).min(u32::MAX / 4));
        let new_mean = mean + (d - mean) / 4;
        let new_dev = dev + ((d - mean).abs() - dev) / 4;
        self.slept_us.store(new_mean as u32, Ordering::Relaxed);
        self.slept_dev_us.store(new_dev as u32, Ordering::Relaxed);
    }

    /// Spins for `ready()` for at most `limit`; whether it held.
    #[inline(never)]
    fn spin_for(&self, ready: &mut dyn FnMut(bool) -> bool, limit: Duration) -> bool {
        let start = Instant::now();
        loop {
            for _ in 0..64 {
                if ready(false) {
                    return true;
                }
                hint::spin_loop();
            }
            if start.elapsed() > limit {
                return false;
            }
        }
    }

    /// Spins for `ready()` (unless the last setter shares our CPU), then yields a few times;
    /// or, for a while after the CPU was found busy, neither (see [`WaitStrategy::Adaptive`]).
    ///
    /// The budget is counted in spin iterations so that a wait answered while spinning reads
    /// no clock at all; the clock is read every 64 iterations only to cap a spin at
    /// [`MAX_SPIN`] whatever a pause costs on this CPU (a gap over [`BUSY_CPU`] between two
    /// reads: another task ran), and around the first yield (one over `BUSY_CPU`: it ran
    /// another task, and more yields would only run more of it).
    fn adaptive_spin(&self, ready: &mut dyn FnMut(bool) -> bool) -> Spun {
        let left = self.busy_left.load(Ordering::Relaxed);
        if left > 0 {
            self.busy_left.store(left - 1, Ordering::Relaxed);
            return Spun::BusyCpu;
        }
        let cell = self.cell();
        let budget = self.spin_iters.load(Ordering::Relaxed);
        // u32::MAX: unknown (no set yet, or a platform without a cheap getcpu): spin.
        let setter = cell.setter_cpu.load(Ordering::Relaxed);
        let spun = setter == u32::MAX || setter != sys::current_cpu();
        if spun {
            let mut last: Option<Instant> = None;
            let mut spent = Duration::ZERO;
            for i in 1..=budget {
                hint::spin_loop();
                if ready(false) {
                    // Answered while spinning: keep the budget at least twice this wait.
                    self.spin_iters.store(
                        budget.max(i.saturating_mul(2)).min(MAX_SPIN_ITERS),
                        Ordering::Relaxed,
                    );
                    self.cpu_free();
                    return Spun::Ready;
                }
                if i % 64 == 0 {
                    let now = Instant::now();
                    let gap = last.map_or(Duration::ZERO, |l| now - l);
                    last = Some(now);
                    if gap > BUSY_CPU {
                        return self.cpu_busy();
                    }
                    spent += gap;
                    if spent > MAX_SPIN {
                        break;
                    }
                }
            }
        }
        let start = Instant::now();
        for k in 0..YIELDS {
            sys::yield_now();
            // A yield that ran others for a slice and not the setter; or for several slices.
            let took = if k == 0 {
                start.elapsed()
            } else {
                Duration::ZERO
            };
            if ready(true) {
                if took > BUSY_CPU_READY {
                    self.cpu_busy();
                } else if spun {
                    // Just missed it: spin longer next time.
                    self.learn(true);
                }
                return Spun::Ready;
            }
            if took > BUSY_CPU {
                return self.cpu_busy();
            }
        }
        self.cpu_free();
        if spun {
            Spun::Missed
        } else {
            Spun::MissedOnOurCpu
        }
    }

    /// Another task ran on our CPU while we waited: sleep at once for the next waits.
    #[cold]
    fn cpu_busy(&self) -> Spun {
        let n = self.busy_waits.load(Ordering::Relaxed);
        self.busy_left.store(n, Ordering::Relaxed);
        self.busy_waits
            .store(n.saturating_mul(2).min(MAX_BUSY_WAITS), Ordering::Relaxed);
        Spun::BusyCpu
    }

    /// A wait that spun or yielded saw no other task: the next busy spell sleeps at once for
    /// fewer waits.
    #[inline]
    fn cpu_free(&self) {
        let n = self.busy_waits.load(Ordering::Relaxed);
        if n > MIN_BUSY_WAITS {
            self.busy_waits
                .store((n / 2).max(MIN_BUSY_WAITS), Ordering::Relaxed);
        }
    }

    /// After a wait that had to sleep: grow the budget if the wait was short enough that
    /// spinning would have caught it, shrink it if it was long (spinning would be waste).
    fn learn(&self, short: bool) {
        let b = self.spin_iters.load(Ordering::Relaxed);
        let nb = if short {
            b.saturating_mul(2).min(MAX_SPIN_ITERS)
        } else {
            (b / 2).max(MIN_SPIN_ITERS)
        };
        self.spin_iters.store(nb, Ordering::Relaxed);
    }

    fn spin_until(
        &self,
        ready: &mut dyn FnMut(bool) -> bool,
        deadline: Option<Instant>,
        check: &mut Option<&mut dyn FnMut() -> bool>,
    ) -> WaitOutcome {
        let mut last_check = Instant::now();
        loop {
            for _ in 0..1024 {
                hint::spin_loop();
                if ready(false) {
                    return WaitOutcome::Set;
                }
            }
            sys::yield_now();
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return WaitOutcome::TimedOut;
            }
            if let Some(check) = check.as_mut() {
                if now.duration_since(last_check) >= CHECK_INTERVAL {
                    last_check = now;
                    if !check() {
                        return WaitOutcome::Aborted;
                    }
                }
            }
        }
    }

    /// Sleeps in the kernel until set, the deadline, or the check fails.
    /// With `cond` (an eventcount wait), also until `cond()` holds.
    #[cold]
    fn sleep<'c>(
        &self,
        mut cond: Option<&mut (dyn FnMut(bool) -> bool + 'c)>,
        deadline: Option<Instant>,
        check: &mut Option<&mut dyn FnMut() -> bool>,
    ) -> WaitOutcome {
        let word = &self.cell().word;
        word.fetch_add(SLEEPER, Ordering::AcqRel);
        // Pairs with the fence in `notify`: from here on, a notifier sees us registered, or
        // we see its stores in `cond`.
        fence(Ordering::SeqCst);
        let outcome = loop {
            if cond.as_mut().is_some_and(|c| c(true)) {
                break WaitOutcome::Set;
            }
            let v = word.load(Ordering::Acquire);
            if v & SET != 0 {
                // Consume the signal and unregister in one step.
                if word
                    .compare_exchange(
                        v,
                        (v & !SET).saturating_sub(SLEEPER),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    return WaitOutcome::Set;
                }
                continue;
            }
            let now = Instant::now();
            let mut timeout = match deadline {
                Some(d) if now >= d => break WaitOutcome::TimedOut,
                Some(d) => Some(d - now),
                None => None,
            };
            if check.is_some() {
                timeout = Some(timeout.map_or(CHECK_INTERVAL, |t| t.min(CHECK_INTERVAL)));
            }
            if let Some(heal) = HEAL_INTERVAL {
                timeout = Some(timeout.map_or(heal, |t| t.min(heal)));
            }
            self.waiter.wait(word, v, timeout);
            // We are registered: a count of none, or of more than any machine runs, was
            // written by a broken peer. Count ourselves again, so that `set` wakes us.
            let now = word.load(Ordering::Relaxed);
            if now / SLEEPER == 0 || now / SLEEPER > MAX_SLEEPERS {
                let _ = word.compare_exchange(
                    now,
                    (now & SET) | SLEEPER,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            if let Some(check) = check.as_mut() {
                if word.load(Ordering::Relaxed) & SET == 0 && !check() {
                    break WaitOutcome::Aborted;
                }
            }
        };
        // Unregister (never below none: the count may have been scribbled on); a signal
        // that raced with our giving up is still ours to take.
        let mut v = word.load(Ordering::Relaxed);
        while v >= SLEEPER {
            match word.compare_exchange_weak(v, v - SLEEPER, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if self.try_wait() {
            return WaitOutcome::Set;
        }
        outcome
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.cell().word.load(Ordering::Relaxed);
        f.debug_struct("Event")
            .field("set", &(w & SET != 0))
            .field("sleepers", &(w / SLEEPER))
            .field("strategy", &self.strategy)
            .finish()
    }
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
