//! The submission ring: a bounded multi-producer multi-consumer queue of slot numbers in
//! shared memory.
//!
//! The algorithm is Dmitry Vyukov's bounded MPMC queue
//! (<https://www.1024cores.net/home/lock-free-algorithms/queues/bounded-mpmc-queue>): every
//! cell carries a sequence number that tells producers and consumers whose turn the cell is,
//! so a push or pop is one CAS on a position counter plus one Release store.
//!
//! Changes that make it fit for memory shared with untrusted or dying processes:
//! - every loop is bounded, so garbage can make `push` / `pop` give up, never spin forever;
//! - positions are masked into the ring, so a garbage position can never index out of it;
//! - a cell whose sequence number no consistent ring can hold at the position looking at it
//!   is repaired in place (made free for that lap), so scribbling heals instead of wedging
//!   the ring for good; never a whole-ring reset, which would race with live producers;
//! - an entry claimed but never published (its producer died in between) can be skipped
//!   ([`Ring::skip_stuck`]) so it does not hold up every entry behind it.
//!
//! The ring is only an accelerator: the slot state words are the truth. A value popped from
//! the ring is a hint that the server validates; a request whose entry was lost is found by a
//! scan of the slots (see the server).

use std::fmt;

use crate::region::{Region, ShmAtomic};
use crate::sync::atomic::{prefetch_write, AtomicU32, Ordering};

/// A position counter on a cache line of its own (producers and consumers never share one).
#[repr(C, align(64))]
pub(crate) struct RingPos {
    pos: AtomicU32,
}

/// One cell: `seq` says whose turn it is, `value` is the slot number.
///
/// | `seq - pos` (wrapping, as i32) | for a producer at `pos` | for a consumer at `pos` |
/// |---|---|---|
/// | `0` | free: claim it | (`seq == pos`) not yet published: empty |
/// | `1` | - | (`seq == pos + 1`) published: take it |
/// | `< 0` | still full from the last lap: ring full | - |
#[repr(C)]
pub(crate) struct RingCell {
    seq: AtomicU32,
    value: AtomicU32,
}

/// Bytes before the cells: the enqueue and dequeue positions, one cache line each.
pub(crate) const RING_HEADER: usize = 2 * std::mem::size_of::<RingPos>();
/// How many times `push` / `pop` retry after losing a race before giving up.
const MAX_RETRIES: u32 = 1024;

const _: () = assert!(std::mem::size_of::<RingPos>() == 64 && std::mem::size_of::<RingCell>() == 8);

/// Bytes a ring of `cap` cells takes (header included), rounded up to 64.
pub(crate) fn ring_bytes(cap: u32) -> usize {
    (RING_HEADER + cap as usize * std::mem::size_of::<RingCell>()).next_multiple_of(64)
}

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// Every cell is taken.
    Full,
    /// Gave up after [`MAX_RETRIES`] (heavy contention or a corrupted ring).
    Contended,
}

// SAFETY: `#[repr(C, align(64))]`, one atomic and padding that is never read.
unsafe impl ShmAtomic for RingPos {}
// SAFETY: `#[repr(C)]`, atomics only; any bit pattern is valid.
unsafe impl ShmAtomic for RingCell {}

/// A view of a ring placed in memory shared with other processes.
pub(crate) struct Ring {
    enq: &'static RingPos,
    deq: &'static RingPos,
    cells: &'static [RingCell],
    mask: u32,
}

impl Ring {
    /// Initialises an empty ring of `cap` cells in `mem` and attaches to it.
    ///
    /// # Safety
    /// As [`Ring::attach`], and nobody else uses the ring while it is initialised.
    pub(crate) unsafe fn init(mem: Region<'_>, cap: u32) -> Option<Ring> {
        // SAFETY: forwarded.
        let ring = unsafe { Ring::attach(mem, cap) }?;
        ring.reset();
        Some(ring)
    }

    /// Attaches to the ring of `cap` cells (a power of two >= 2) at the start of `mem`;
    /// `None` if `ring_bytes(cap)` bytes do not fit.
    ///
    /// # Safety
    /// The memory behind `mem` stays mapped, and is used only as a ring, for as long as the
    /// returned `Ring` lives.
    pub(crate) unsafe fn attach(mem: Region<'_>, cap: u32) -> Option<Ring> {
        debug_assert!(cap.is_power_of_two() && cap >= 2);
        // SAFETY: the caller keeps the memory alive for as long as the Ring.
        let mem = unsafe { mem.detach() };
        Some(Ring {
            enq: mem.get(0)?,
            deq: mem.get(std::mem::size_of::<RingPos>())?,
            cells: mem.slice(RING_HEADER, cap as usize)?,
            mask: cap - 1,
        })
    }

    /// Empties the ring. Only for a ring nobody else uses yet: a producer that claimed a cell
    /// before the reset would publish a stale sequence number into it afterwards.
    pub(crate) fn reset(&self) {
        for i in 0..=self.mask {
            self.cell(i).seq.store(i, Ordering::Relaxed);
            self.cell(i).value.store(u32::MAX, Ordering::Relaxed);
        }
        self.deq().store(0, Ordering::Release);
        self.enq().store(0, Ordering::Release);
    }

    #[inline]
    fn enq(&self) -> &AtomicU32 {
        &self.enq.pos
    }

    #[inline]
    fn deq(&self) -> &AtomicU32 {
        &self.deq.pos
    }

    #[inline]
    fn cell(&self, pos: u32) -> &RingCell {
        // `pos & mask < cap == cells.len()`.
        &self.cells[(pos & self.mask) as usize]
    }

    /// Starts fetching the cell the next `push` writes (a consumer wrote it last).
    #[inline]
    pub(crate) fn prefetch_push(&self) {
        prefetch_write(self.cell(self.enq().load(Ordering::Relaxed)));
    }

    /// Appends `value`.
    #[inline]
    pub(crate) fn push(&self, value: u32) -> Result<(), PushError> {
        let mut pos = self.enq().load(Ordering::Relaxed);
        for _ in 0..MAX_RETRIES {
            let cell = self.cell(pos);
            // A consumer wrote the cell last (and may be spinning on it): ask for it with
            // intent to write, so the load and the stores below cost one transfer, not two.
            prefetch_write(cell);
            let seq = cell.seq.load(Ordering::Acquire);
            let diff = seq.wrapping_sub(pos) as i32;
            if diff == 0 {
                match self.enq().compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        cell.value.store(value, Ordering::Relaxed);
                        cell.seq.store(pos.wrapping_add(1), Ordering::Release);
                        return Ok(());
                    }
                    Err(now) => pos = now,
                }
                continue;
            }
            let now = self.enq().load(Ordering::Relaxed);
            if now != pos {
                pos = now; // another producer moved on
            } else if diff < 0
                && (seq == pos.wrapping_sub(self.mask)
                    || pos.wrapping_sub(self.deq().load(Ordering::Relaxed)) > self.mask)
            {
                // Last lap's entry still there (published and not yet consumed, or its
                // producer stalls before publishing with the ring a lap ahead): full. Only
                // on this path do producers read the consumers' position.
                return Err(PushError::Full);
            } else {
                // A value no consistent ring holds at the producers' position: scribbled.
                // Free the cell for this lap (an entry lost this way is found by the scan).
                let _ = cell
                    .seq
                    .compare_exchange(seq, pos, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
        Err(PushError::Contended)
    }

    /// Takes the oldest value, or `None` if the ring is empty (or gave up, see the module
    /// docs). The value is untrusted: callers validate it.
    ///
    /// `sole_consumer`: the caller is the only thread of any process that pops, so the
    /// dequeue position is advanced with a plain store instead of a CAS (a locked instruction
    /// less on the server's path).
    #[inline]
    pub(crate) fn pop(&self, sole_consumer: bool) -> Option<u32> {
        let mut pos = self.deq().load(Ordering::Relaxed);
        for _ in 0..MAX_RETRIES {
            let cell = self.cell(pos);
            let seq = cell.seq.load(Ordering::Acquire);
            let diff = seq.wrapping_sub(pos.wrapping_add(1)) as i32;
            if diff == 0 {
                let claimed = if sole_consumer {
                    self.deq().store(pos.wrapping_add(1), Ordering::Relaxed);
                    Ok(pos)
                } else {
                    self.deq().compare_exchange_weak(
                        pos,
                        pos.wrapping_add(1),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                };
                match claimed {
                    Ok(_) => {
                        let value = cell.value.load(Ordering::Relaxed);
                        cell.seq.store(
                            pos.wrapping_add(self.mask).wrapping_add(1),
                            Ordering::Release,
                        );
                        return Some(value);
                    }
                    Err(now) => pos = now,
                }
                continue;
            }
            if seq == pos || seq == pos.wrapping_sub(self.mask) {
                // Empty, or its producer has not published yet; or last lap's entry whose
                // consumer stalls mid-pop (or a late publish into a skipped cell, which
                // `skip_stuck` repairs).
                return None;
            }
            let now = self.deq().load(Ordering::Relaxed);
            if now != pos {
                pos = now; // another consumer moved on
            } else {
                // Neither "free for this lap" nor "published": scribbled or stale. Make it
                // free for the producer at this position.
                let _ = cell
                    .seq
                    .compare_exchange(seq, pos, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
        None
    }

    /// Skips the entry at the dequeue position if it was claimed by a producer but never
    /// published (its producer died between the two steps, or stalls): without this, every
    /// later entry would wait behind it. Call it only after the position has been stuck for a
    /// long time (the server: a whole tick). Returns whether an entry was skipped.
    ///
    /// Positions more than a lap apart (scribbled) are realigned here too: the consumer jumps
    /// to the producers' position, dropping what lies between (the slot scan finds it).
    pub(crate) fn skip_stuck(&self) -> bool {
        let pos = self.deq().load(Ordering::Relaxed);
        let enq = self.enq().load(Ordering::Relaxed);
        if enq.wrapping_sub(pos) > self.mask + 1 {
            return self
                .deq()
                .compare_exchange(pos, enq, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        }
        let seq = self.cell(pos).seq.load(Ordering::Acquire);
        if seq == pos.wrapping_sub(self.mask) {
            // Last lap's value for a whole tick: a late publish into a skipped cell (or a
            // consumer stalled that long). Free the cell for this lap.
            return self
                .cell(pos)
                .seq
                .compare_exchange(seq, pos, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        }
        if enq == pos || seq != pos {
            return false;
        }
        if self
            .deq()
            .compare_exchange(
                pos,
                pos.wrapping_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        // As if consumed. Should the producer publish after all, its late `seq` is repaired
        // by the next producer or consumer at this cell (see `push` / `pop`).
        self.cell(pos).seq.store(
            pos.wrapping_add(self.mask).wrapping_add(1),
            Ordering::Release,
        );
        true
    }

    /// Whether the next entry is published (a peek: takes nothing; reads only the consumer's
    /// position and one cell, no producer-owned cache line).
    pub(crate) fn has_more(&self) -> bool {
        self.peek().is_some()
    }

    /// The next entry's value if it is published, without taking it (untrusted, as `pop`'s).
    #[inline]
    pub(crate) fn peek(&self) -> Option<u32> {
        let pos = self.deq().load(Ordering::Relaxed);
        let cell = self.cell(pos);
        (cell.seq.load(Ordering::Acquire) == pos.wrapping_add(1))
            .then(|| cell.value.load(Ordering::Relaxed))
    }

    /// Whether a producer has claimed the next cell but not published it yet (entries pushed
    /// after it wait behind it). Reads the producers' position: call it now and then only.
    pub(crate) fn head_unpublished(&self) -> bool {
        let pos = self.deq().load(Ordering::Relaxed);
        self.enq().load(Ordering::Relaxed) != pos
            && self.cell(pos).seq.load(Ordering::Relaxed) == pos
    }

    /// The dequeue position (to notice a ring that stopped moving).
    pub(crate) fn dequeue_pos(&self) -> u32 {
        self.deq().load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("cap", &(self.mask + 1))
            .field("enqueue", &self.enq().load(Ordering::Relaxed))
            .field("dequeue", &self.deq().load(Ordering::Relaxed))
            .finish()
    }
}

/// Heap memory standing in for a segment, for tests: 64-aligned, and every 4-byte word a
/// constructed atomic (under loom, atomics must be made by `new`).
#[cfg(test)]
struct Mem {
    buf: Vec<Line>,
}

#[cfg(test)]
#[repr(C, align(64))]
struct Line([AtomicU32; 16]);

#[cfg(test)]
impl Mem {
    fn new(cap: u32) -> Mem {
        let lines = ring_bytes(cap) / 64;
        Mem {
            buf: (0..lines)
                .map(|_| Line(std::array::from_fn(|_| AtomicU32::new(0))))
                .collect(),
        }
    }

    /// A ring of `cap` cells in this memory.
    fn ring(&mut self, cap: u32) -> Ring {
        // SAFETY: the buffer is 64-aligned, initialised atomics, only ever used as such;
        // every test keeps `self` alive for as long as the ring.
        let mem = unsafe { Region::new(self.buf.as_mut_ptr().cast(), self.buf.len() * 64) };
        // SAFETY: as above.
        unsafe { Ring::init(mem, cap) }.expect("ring_bytes(cap) bytes")
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ring(mem: &mut Mem, cap: u32) -> Ring {
        mem.ring(cap)
    }

    const N: u32 = if cfg!(miri) { 100 } else { 100_000 };

    #[test]
    fn fifo_and_full_and_empty() {
        let mut mem = Mem::new(8);
        let r = ring(&mut mem, 8);
        assert_eq!(r.pop(false), None);
        for lap in 0..(N / 8).max(3) {
            for i in 0..8 {
                r.push(lap * 8 + i).unwrap();
            }
            assert_eq!(r.push(99), Err(PushError::Full));
            for i in 0..8 {
                assert_eq!(r.pop(false), Some(lap * 8 + i));
            }
            assert_eq!(r.pop(false), None);
        }
    }

    #[test]
    fn positions_wrap_around_u32() {
        let mut mem = Mem::new(4);
        let r = ring(&mut mem, 4);
        let start = u32::MAX - 5;
        r.enq().store(start, Ordering::Relaxed);
        r.deq().store(start, Ordering::Relaxed);
        for i in 0..4 {
            r.cell(start + i)
                .seq
                .store(start.wrapping_add(i), Ordering::Relaxed);
        }
        for i in 0..20 {
            r.push(i).unwrap();
            assert_eq!(r.pop(false), Some(i));
        }
    }

    #[test]
    fn garbage_never_hangs_or_escapes() {
        let mut mem = Mem::new(8);
        let r = ring(&mut mem, 8);
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..N / 10 {
            // xorshift: scribble over positions, sequence numbers and values
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match x % 4 {
                0 => r.enq().store(x, Ordering::Relaxed),
                1 => r.deq().store(x.rotate_left(7), Ordering::Relaxed),
                2 => r.cell(x).seq.store(x.rotate_left(3), Ordering::Relaxed),
                _ => r.cell(x).value.store(x, Ordering::Relaxed),
            }
            let _ = r.push(x);
            let _ = r.pop(false);
        }
        // The ring heals without a reset, at most a cell per tick (the server calls
        // `skip_stuck` when nothing came out for a tick); then every push comes out in order.
        for _ in 0..64 {
            let _ = r.push(0);
            while r.pop(false).is_some() {}
            r.skip_stuck();
        }
        for lap in 0..4 {
            for i in 0..8 {
                r.push(lap * 8 + i).unwrap();
            }
            for i in 0..8 {
                assert_eq!(r.pop(false), Some(lap * 8 + i));
            }
        }
    }

    #[test]
    fn producer_dying_mid_push_is_skipped_and_its_late_publish_heals() {
        let mut mem = Mem::new(4);
        let r = ring(&mut mem, 4);
        assert!(!r.head_unpublished(), "empty is not stuck");
        // A producer claims position 0 and stalls before publishing.
        r.enq().store(1, Ordering::Relaxed);
        assert!(r.head_unpublished());
        r.push(10).unwrap();
        r.push(11).unwrap();
        assert_eq!(r.pop(false), None, "stuck behind the unpublished entry");
        assert!(r.head_unpublished());
        assert!(r.skip_stuck());
        assert!(!r.head_unpublished(), "published head");
        assert_eq!(r.pop(false), Some(10));
        assert_eq!(r.pop(false), Some(11));
        // The stalled producer publishes after all, into a cell already skipped: the ring
        // goes on until that cell comes round again, then looks full there until the next
        // tick's `skip_stuck` repairs it.
        r.cell(0).value.store(99, Ordering::Relaxed);
        r.cell(0).seq.store(1, Ordering::Release);
        r.push(0).unwrap();
        assert_eq!(r.pop(false), Some(0));
        assert_eq!(r.push(1), Err(PushError::Full));
        assert_eq!(r.pop(false), None);
        assert!(r.skip_stuck());
        for i in 0..(N / 10).max(20) {
            r.push(i).unwrap();
            assert_eq!(r.pop(false), Some(i));
        }
    }

    #[test]
    fn scribbled_cells_are_repaired_in_place() {
        let mut mem = Mem::new(8);
        let r = ring(&mut mem, 8);
        for i in 0..(N / 10).max(40) {
            r.cell(i.wrapping_mul(7))
                .seq
                .store(i.wrapping_mul(0x9E37_79B9), Ordering::Relaxed);
            // A push may lose its entry to the scribble (the slot scan covers that), but the
            // ring never wedges: within a few operations pushes come out again.
            let _ = r.push(i);
            let _ = r.pop(false);
            let _ = r.pop(false);
        }
        for _ in 0..64 {
            let _ = r.push(0);
            while r.pop(false).is_some() {}
            r.skip_stuck();
        }
        for i in 0..16 {
            r.push(i).unwrap();
            assert_eq!(r.pop(false), Some(i));
        }
    }

    #[test]
    fn threads_every_value_once() {
        const PRODUCERS: u32 = 4;
        const CONSUMERS: usize = 4;
        let per = N / PRODUCERS;
        let mut mem = Mem::new(64);
        let r = Arc::new(ring(&mut mem, 64));
        let seen: Arc<Vec<AtomicU32>> =
            Arc::new((0..PRODUCERS * per).map(|_| AtomicU32::new(0)).collect());
        let taken = Arc::new(AtomicU32::new(0));
        std::thread::scope(|s| {
            for p in 0..PRODUCERS {
                let r = Arc::clone(&r);
                s.spawn(move || {
                    for i in 0..per {
                        while r.push(p * per + i).is_err() {
                            std::thread::yield_now();
                        }
                    }
                });
            }
            for _ in 0..CONSUMERS {
                let (r, seen, taken) = (Arc::clone(&r), Arc::clone(&seen), Arc::clone(&taken));
                s.spawn(move || {
                    while taken.load(Ordering::Relaxed) < PRODUCERS * per {
                        match r.pop(false) {
                            Some(v) => {
                                seen[v as usize].fetch_add(1, Ordering::Relaxed);
                                taken.fetch_add(1, Ordering::Relaxed);
                            }
                            None => std::thread::yield_now(),
                        }
                    }
                });
            }
        });
        assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
        drop(r);
        drop(mem);
    }
}

/// Loom models of the hand-off through the ring: every value whose push returned `Ok` comes
/// out exactly once, in its producer's order, whoever wins the races and however late stores
/// become visible.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::thread;
    use std::sync::Arc;

    /// `producers` threads push `per` values each into a ring of `cap` cells, giving up on a
    /// value when the ring is full (as a client does: the slot scan covers it), so that only
    /// the consumer spins (loom cannot bound two threads spinning on a third). The model's
    /// main thread pops, as the server's sole consumer or with the CAS, until the producers
    /// are done and the ring is empty.
    fn hand_off(producers: u32, per: u32, cap: u32, sole_consumer: bool) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound.get_or_insert(2);
        b.check(move || {
            let mut mem = Mem::new(cap);
            let ring = Arc::new(mem.ring(cap));
            let done = Arc::new(AtomicU32::new(0));
            let threads: Vec<_> = (0..producers)
                .map(|p| {
                    let (ring, done) = (Arc::clone(&ring), Arc::clone(&done));
                    thread::spawn(move || {
                        let pushed: Vec<u32> = (p * per..(p + 1) * per)
                            .filter(|&v| match ring.push(v) {
                                Ok(()) => true,
                                Err(PushError::Full) => false,
                                Err(e) => panic!("{e:?}"),
                            })
                            .collect();
                        done.fetch_add(1, Ordering::Release);
                        pushed
                    })
                })
                .collect();
            let mut got = Vec::new();
            loop {
                // Read before popping: once every producer is done, an empty pop is final.
                let finished = done.load(Ordering::Acquire) == producers;
                match ring.pop(sole_consumer) {
                    Some(v) => got.push(v),
                    None if finished => break,
                    None => thread::yield_now(),
                }
            }
            for (p, t) in (0..producers).zip(threads) {
                let pushed = t.join().unwrap();
                let out: Vec<u32> = got.iter().copied().filter(|v| v / per == p).collect();
                assert_eq!(out, pushed, "lost, duplicated or out of order: {got:?}");
            }
            drop(ring);
            drop(mem);
        });
    }

    #[test]
    fn two_producers_sole_consumer_ring_full() {
        hand_off(2, 2, 2, true);
    }

    #[test]
    fn two_producers_cas_consumer_ring_full() {
        hand_off(2, 2, 2, false);
    }

    /// Two consumers race (with the CAS) for entries a producer is still pushing; each pops
    /// twice without waiting and the main thread drains the rest after them.
    #[test]
    fn two_consumers_race() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound.get_or_insert(2);
        b.check(|| {
            let mut mem = Mem::new(2);
            let ring = Arc::new(mem.ring(2));
            ring.push(0).unwrap();
            let consumers: Vec<_> = (0..2)
                .map(|_| {
                    let ring = Arc::clone(&ring);
                    thread::spawn(move || [ring.pop(false), ring.pop(false)])
                })
                .collect();
            let pushed_1 = ring.push(1).is_ok();
            let mut got: Vec<u32> = consumers
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .flatten()
                .collect();
            got.sort_unstable();
            while let Some(v) = ring.pop(false) {
                got.push(v); // after every racer's: still in order
            }
            let want: &[u32] = if pushed_1 { &[0, 1] } else { &[0] };
            assert_eq!(got, want, "lost or duplicated");
            drop(ring);
            drop(mem);
        });
    }

    #[test]
    fn one_producer_laps_the_ring() {
        hand_off(1, 3, 2, true);
    }
}
