//! Server-to-client notifications: one bounded queue per slot, written by the server,
//! read by the slot's owner.
//!
//! ```text
//! a slot's notification queue (every part 64-aligned)
//!  0    head      notifications published so far      written by the server
//!  64   tail      notifications consumed so far        written by the slot's owner
//!  128  entry 0   len | connection | bytes (max)      entry k holds notification k % depth
//!  ..   entry 1 ...
//! ```
//!
//! One producer (the server, which serialises its threads per slot) and one consumer (the
//! client that owns the slot). The server writes entry `head % depth` only while
//! `head - tail < depth`, so an entry is never written while its reader may look at it, and
//! publishes it by storing `head + 1` (Release); the client reads the entry and then stores
//! `tail + 1`. Each entry carries the connection number it was meant for, so a notification
//! sent as the slot changed hands is skipped by the next owner, which starts at the `head`
//! it finds when it claims the slot.
//!
//! Both counters live in memory other processes write. Each side keeps its own counter in
//! its process and only publishes it, so a scribbled counter heals: a difference beyond
//! `depth` is impossible, the server answers it by publishing its own `head` again (and
//! refusing that one notification as full), the client by resuming at `head`. A
//! notification whose length is beyond `max` is skipped.

use crate::region::{Region, ShmAtomic};
use crate::sync::atomic::{AtomicU32, Ordering};

/// Most notifications a queue holds.
pub(crate) const MAX_DEPTH: u32 = 1 << 16;

#[repr(C, align(64))]
struct Counter(AtomicU32);

/// An entry's header; its bytes follow.
#[repr(C)]
struct EntryHeader {
    len: AtomicU32,
    /// The connection number (`epoch`) of the owner it was sent to.
    conn: AtomicU32,
}

// SAFETY: atomics only; any bit pattern is valid.
unsafe impl ShmAtomic for Counter {}
// SAFETY: as for Counter.
unsafe impl ShmAtomic for EntryHeader {}

const HEAD: usize = 0;
const TAIL: usize = 64;
const ENTRIES: usize = 128;
const ENTRY_HEADER: usize = std::mem::size_of::<EntryHeader>();

/// Bytes of one entry holding up to `max` bytes.
fn entry_stride(max: usize) -> usize {
    (ENTRY_HEADER + max).next_multiple_of(64)
}

/// Bytes of a queue of `depth` notifications of up to `max` bytes; `None` on overflow.
pub(crate) fn queue_bytes(depth: u32, max: usize) -> Option<usize> {
    entry_stride(max)
        .checked_mul(depth as usize)?
        .checked_add(ENTRIES)
}

/// Why the server could not queue a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The owner has not consumed the last `depth` notifications.
    Full,
    /// The writer returned more than `max` bytes.
    TooLarge(usize),
}

/// What the client found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Popped<R> {
    /// Nothing published beyond what it consumed.
    Empty,
    /// A notification for this connection: what `read` returned.
    Item(R),
    /// An entry not for this connection (or with an impossible length), or counters that
    /// were scribbled on: passed over; look again.
    Skipped,
}

/// One slot's queue (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoteQueue<'a> {
    region: Region<'a>,
    depth: u32,
    max: usize,
}

impl<'a> NoteQueue<'a> {
    /// The queue of `depth` (>= 1) entries of up to `max` bytes in `region`, which holds
    /// [`queue_bytes`] bytes; `None` if it does not.
    pub(crate) fn new(region: Region<'a>, depth: u32, max: usize) -> Option<NoteQueue<'a>> {
        let need = queue_bytes(depth, max)?;
        (depth >= 1 && region.len() >= need).then_some(NoteQueue { region, depth, max })
    }

    fn head(&self) -> &'a AtomicU32 {
        &self.region.at::<Counter>(HEAD).0
    }

    fn tail(&self) -> &'a AtomicU32 {
        &self.region.at::<Counter>(TAIL).0
    }

    fn entry_at(&self, n: u32) -> usize {
        ENTRIES + (n % self.depth) as usize * entry_stride(self.max)
    }

    /// The published head (for a waiting consumer's condition).
    #[inline]
    pub(crate) fn published(&self) -> u32 {
        self.head().load(Ordering::Acquire)
    }

    /// Server: queues a notification for connection `conn`, written in place by `write`
    /// (which gets `max` bytes and returns how many it wrote). `head` is the server's own
    /// count for this slot (it publishes it, and never trusts the published one).
    pub(crate) fn push(
        &self,
        head: &mut u32,
        conn: u32,
        write: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<(), PushError> {
        let tail = self.tail().load(Ordering::Acquire);
        let used = head.wrapping_sub(tail);
        if used >= self.depth {
            if used > self.depth {
                // Impossible counters: publish ours again; the owner resumes from it.
                self.head().store(*head, Ordering::Release);
            }
            return Err(PushError::Full);
        }
        let at = self.entry_at(*head);
        // SAFETY: entry `head % depth` is the producer's: the consumer moved past it
        // (`head - tail < depth`), and this process writes this slot's queue from one thread
        // at a time (the caller's lock). A peer breaking the protocol can only garble bytes.
        let buf = unsafe { self.region.bytes_mut(at + ENTRY_HEADER, self.max) }
            .expect("the entry lies inside the queue");
        let len = write(buf);
        if len > self.max {
            return Err(PushError::TooLarge(len));
        }
        let header = self.region.at::<EntryHeader>(at);
        header.len.store(len as u32, Ordering::Relaxed);
        header.conn.store(conn, Ordering::Relaxed);
        *head = head.wrapping_add(1);
        self.head().store(*head, Ordering::Release);
        Ok(())
    }

    /// Client, before claiming the slot: its queue starts at what the server published so
    /// far. Returns the consumer's count.
    pub(crate) fn start(&self) -> u32 {
        let head = self.head().load(Ordering::Acquire);
        self.tail().store(head, Ordering::Release);
        head
    }

    /// Client: publishes its count `tail` again if a peer scribbled on it (the server then
    /// finds the queue full, or impossible, until the owner does this).
    pub(crate) fn republish(&self, tail: u32) {
        if self.tail().load(Ordering::Relaxed) != tail {
            self.tail().store(tail, Ordering::Release);
        }
    }

    /// Client: hands the next notification for connection `conn` to `read`. `tail` is the
    /// client's own count (it publishes it, and never trusts the published one).
    pub(crate) fn pop<R>(
        &self,
        tail: &mut u32,
        conn: u32,
        read: impl FnOnce(&[u8]) -> R,
    ) -> Popped<R> {
        let head = self.head().load(Ordering::Acquire);
        if head == *tail {
            self.republish(*tail);
            return Popped::Empty;
        }
        if head.wrapping_sub(*tail) > self.depth {
            *tail = head;
            self.tail().store(*tail, Ordering::Release);
            return Popped::Skipped;
        }
        let at = self.entry_at(*tail);
        let header = self.region.at::<EntryHeader>(at);
        let len = header.len.load(Ordering::Relaxed) as usize;
        let ours = header.conn.load(Ordering::Relaxed) == conn && len <= self.max;
        let got = ours.then(|| {
            // SAFETY: published (Acquire on head above) and not handed back yet (tail not
            // stored): the server does not write this entry until we move past it.
            let bytes = unsafe { self.region.bytes(at + ENTRY_HEADER, len) }
                .expect("len <= max: inside the entry");
            read(bytes)
        });
        *tail = tail.wrapping_add(1);
        self.tail().store(*tail, Ordering::Release);
        got.map_or(Popped::Skipped, Popped::Item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::HeapRegion;

    fn queue(mem: &HeapRegion, depth: u32, max: usize) -> NoteQueue<'_> {
        NoteQueue::new(mem.region(), depth, max).unwrap()
    }

    fn push(q: &NoteQueue<'_>, head: &mut u32, conn: u32, msg: &[u8]) -> Result<(), PushError> {
        q.push(head, conn, |buf| {
            buf[..msg.len()].copy_from_slice(msg);
            msg.len()
        })
    }

    #[test]
    fn notifications_arrive_in_order_until_the_queue_is_full() {
        let mem = HeapRegion::new(queue_bytes(4, 16).unwrap());
        let q = queue(&mem, 4, 16);
        let (mut head, mut tail) = (0, q.start());
        for i in 0..4u8 {
            push(&q, &mut head, 7, &[i; 3]).unwrap();
        }
        assert_eq!(push(&q, &mut head, 7, b"x"), Err(PushError::Full));
        for i in 0..4u8 {
            assert_eq!(
                q.pop(&mut tail, 7, <[u8]>::to_vec),
                Popped::Item(vec![i; 3])
            );
        }
        assert_eq!(q.pop(&mut tail, 7, <[u8]>::to_vec), Popped::Empty);
        // Wraps around.
        for round in 0..10u8 {
            push(&q, &mut head, 7, &[round]).unwrap();
            assert_eq!(q.pop(&mut tail, 7, |b| b[0]), Popped::Item(round));
        }
    }

    #[test]
    fn oversized_writes_are_refused_without_publishing() {
        let mem = HeapRegion::new(queue_bytes(2, 8).unwrap());
        let q = queue(&mem, 2, 8);
        let (mut head, mut tail) = (0, q.start());
        assert_eq!(q.push(&mut head, 1, |_| 9), Err(PushError::TooLarge(9)));
        assert_eq!(head, 0);
        assert_eq!(q.pop(&mut tail, 1, <[u8]>::to_vec), Popped::Empty);
    }

    #[test]
    fn a_new_owner_skips_what_was_sent_to_the_previous_connection() {
        let mem = HeapRegion::new(queue_bytes(4, 8).unwrap());
        let q = queue(&mem, 4, 8);
        let mut head = 0;
        push(&q, &mut head, 1, b"old").unwrap();
        let mut tail = q.start(); // connection 2 claims the slot
        push(&q, &mut head, 1, b"late").unwrap(); // sent to connection 1 as it left
        push(&q, &mut head, 2, b"new").unwrap();
        assert_eq!(q.pop(&mut tail, 2, <[u8]>::to_vec), Popped::Skipped);
        assert_eq!(
            q.pop(&mut tail, 2, <[u8]>::to_vec),
            Popped::Item(b"new".to_vec())
        );
        assert_eq!(q.pop(&mut tail, 2, <[u8]>::to_vec), Popped::Empty);
    }

    #[test]
    fn scribbled_counters_and_lengths_heal_within_one_notification() {
        let mem = HeapRegion::new(queue_bytes(4, 8).unwrap());
        let q = queue(&mem, 4, 8);
        let (mut head, mut tail) = (0, q.start());
        // A forged tail far ahead: the server refuses one notification and republishes its
        // head; the consumer, finding nothing new, republishes its tail.
        q.tail().store(1000, Ordering::Relaxed);
        assert_eq!(push(&q, &mut head, 1, b"a"), Err(PushError::Full));
        assert_eq!(q.pop(&mut tail, 1, <[u8]>::to_vec), Popped::Empty);
        push(&q, &mut head, 1, b"b").unwrap();
        assert_eq!(
            q.pop(&mut tail, 1, <[u8]>::to_vec),
            Popped::Item(b"b".to_vec())
        );
        // A forged head: the consumer resumes from it; the server's next push republishes
        // its own head, which the consumer again treats as impossible and resumes from.
        q.head().store(500, Ordering::Relaxed);
        assert_eq!(q.pop(&mut tail, 1, <[u8]>::to_vec), Popped::Skipped);
        assert_eq!(push(&q, &mut head, 1, b"c"), Err(PushError::Full));
        assert_eq!(q.pop(&mut tail, 1, <[u8]>::to_vec), Popped::Skipped);
        push(&q, &mut head, 1, b"d").unwrap();
        assert_eq!(
            q.pop(&mut tail, 1, <[u8]>::to_vec),
            Popped::Item(b"d".to_vec())
        );
        // An impossible length is skipped.
        push(&q, &mut head, 1, b"e").unwrap();
        let at = q.entry_at(tail);
        q.region
            .at::<EntryHeader>(at)
            .len
            .store(u32::MAX, Ordering::Relaxed);
        assert_eq!(q.pop(&mut tail, 1, <[u8]>::to_vec), Popped::Skipped);
        push(&q, &mut head, 1, b"f").unwrap();
        assert_eq!(
            q.pop(&mut tail, 1, <[u8]>::to_vec),
            Popped::Item(b"f".to_vec())
        );
    }

    #[test]
    fn a_region_too_small_is_refused() {
        let mem = HeapRegion::new(256);
        assert!(NoteQueue::new(mem.region(), 4, 64).is_none());
        assert!(NoteQueue::new(mem.region(), 0, 8).is_none());
        assert!(queue_bytes(u32::MAX, usize::MAX / 2).is_none());
    }
}
