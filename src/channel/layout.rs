//! The channel segment's layout: configuration, flags, the slot-claim mutex, the doorbell,
//! the submission ring and the slots; and typed views of a mapped segment.
//!
//! ```text
//! data region of the channel segment (every part 64-aligned)
//!  0    Config     slots, max_message          written once before the segment is published
//!  64   Flags      shutting_down, closed       set by the server, read by clients
//!  128  Mutex      guards claiming / releasing slots
//!  ..   doorbell   Event: "a slot number was pushed", waited on by the workers
//!  ..   ring       Vyukov MPMC ring of slot numbers (see ring.rs)
//!  ..   slot 0     SlotHeader | done Event | request bytes | response bytes
//!                  | note Event | notification queue (see notify.rs)
//!  ..   slot 1 ...
//! ```
//!
//! Everything after `Config` is written by processes the server does not trust. The server
//! never reads the layout back from shared memory (it keeps its own [`Layout`]), and clients
//! recompute it from `Config` and check that it fits the segment.

use std::sync::Arc;

use super::notify::{queue_bytes, NoteQueue, MAX_DEPTH};
use super::ring::ring_bytes;
use super::slot::SlotHeader;
use crate::region::{Region, ShmAtomic};
use crate::segment::Segment;
use crate::sync::atomic::AtomicU32;
use crate::sync::{EVENT_STORAGE, MUTEX_STORAGE};

/// Layout version of the channel segment.
pub(crate) const KIND_VERSION: u32 = 2;
/// Largest `max_message` a channel accepts (1 GiB).
pub(crate) const MAX_MESSAGE_LIMIT: usize = 1 << 30;
/// Most slots a channel accepts.
pub(crate) const MAX_SLOTS: u32 = 1 << 16;

/// Written once by the server before publishing; read (and validated) by clients.
#[repr(C, align(64))]
pub(crate) struct Config {
    pub(crate) slots: AtomicU32,
    pub(crate) max_message: AtomicU32,
    /// Notifications each slot's queue holds.
    pub(crate) note_depth: AtomicU32,
    /// Largest notification in bytes.
    pub(crate) note_max: AtomicU32,
}

/// Server-wide flags (`0` / `1`).
#[repr(C, align(64))]
pub(crate) struct Flags {
    /// Set when a graceful shutdown starts: clients stop submitting (`ShuttingDown`).
    pub(crate) shutting_down: AtomicU32,
    /// Set when the workers have stopped: nothing in the segment will be answered any more.
    pub(crate) closed: AtomicU32,
    /// Set by a client whose ring push failed: the workers should scan the slots.
    pub(crate) need_scan: AtomicU32,
    /// Set by a client that found every slot taken: the server may reap an idle client
    /// (see `ServerBuilder::idle_timeout`).
    pub(crate) slot_wanted: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Config>() == 64 && std::mem::size_of::<Flags>() == 64);

// SAFETY: `#[repr(C, align(64))]`, atomics only; any bit pattern is valid.
unsafe impl ShmAtomic for Config {}
// SAFETY: as for Config.
unsafe impl ShmAtomic for Flags {}

/// What each slot's notification queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Notes {
    /// Notifications per queue (>= 1).
    pub(crate) depth: u32,
    /// Largest notification in bytes.
    pub(crate) max: usize,
}

/// Offsets of everything in the data region, computed from the configuration values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) slots: u32,
    pub(crate) max_message: usize,
    pub(crate) notes: Notes,
    pub(crate) ring_cap: u32,
    pub(crate) mutex: usize,
    pub(crate) doorbell: usize,
    pub(crate) ring: usize,
    slots_at: usize,
    area: usize,
    queue: usize,
    stride: usize,
    pub(crate) total: usize,
}

impl Layout {
    const CONFIG: usize = 0;
    const FLAGS: usize = 64;

    /// The layout for `slots` slots of `max_message` bytes each way and `notes`
    /// notifications each; `None` if out of range.
    pub(crate) fn new(slots: u32, max_message: usize, notes: Notes) -> Option<Layout> {
        if slots == 0 || slots > MAX_SLOTS || max_message == 0 || max_message > MAX_MESSAGE_LIMIT {
            return None;
        }
        if notes.depth == 0 || notes.depth > MAX_DEPTH || notes.max > MAX_MESSAGE_LIMIT {
            return None;
        }
        // Room for every slot plus as many stale entries (retracted requests), so a push
        // fails only when the ring was tampered with.
        let ring_cap = (2 * slots).next_power_of_two().max(2);
        let mutex = 128;
        let doorbell = mutex + MUTEX_STORAGE.next_multiple_of(64);
        let ring = doorbell + EVENT_STORAGE;
        let slots_at = ring + ring_bytes(ring_cap);
        let area = max_message.next_multiple_of(64);
        let queue = queue_bytes(notes.depth, notes.max)?;
        let stride = (64 + EVENT_STORAGE + 2 * area + EVENT_STORAGE).checked_add(queue)?;
        let total = stride.checked_mul(slots as usize)?.checked_add(slots_at)?;
        Some(Layout {
            slots,
            max_message,
            notes,
            ring_cap,
            mutex,
            doorbell,
            ring,
            slots_at,
            area,
            queue,
            stride,
            total,
        })
    }

    fn slot_at(&self, i: u32) -> usize {
        assert!(i < self.slots, "slot {i} out of range");
        self.slots_at + i as usize * self.stride
    }

    /// Offset of slot `i`'s `done` event.
    pub(crate) fn done_event(&self, i: u32) -> usize {
        self.slot_at(i) + 64
    }

    /// Offset of slot `i`'s `note` event (set when a notification is queued for a sleeping
    /// owner).
    pub(crate) fn note_event(&self, i: u32) -> usize {
        self.slot_at(i) + 64 + EVENT_STORAGE + 2 * self.area
    }

    fn queue_at(&self, i: u32) -> usize {
        self.note_event(i) + EVENT_STORAGE
    }
}

/// A mapped channel segment with its layout: typed access to the shared parts.
#[derive(Debug, Clone)]
pub(crate) struct Mapped {
    pub(crate) seg: Arc<Segment>,
    /// `seg`'s data region, kept here: the mapping never moves while `seg` lives, and every
    /// slot access on a call's path starts from it.
    data: Region<'static>,
    pub(crate) layout: Layout,
}

impl Mapped {
    /// `None` if `layout` does not fit `seg`'s data region.
    pub(crate) fn new(seg: Arc<Segment>, layout: Layout) -> Option<Mapped> {
        // SAFETY: `seg` is stored beside the region and outlives every view of it: views
        // borrow `self`, and `SlotRef`s are dropped before their `Mapped` (see `slot_ref`).
        let data = unsafe { seg.data().detach() };
        let data = data.sub(0, layout.total)?;
        Some(Mapped { seg, data, layout })
    }

    pub(crate) fn config(&self) -> &Config {
        self.data.at(Layout::CONFIG)
    }

    #[inline]
    pub(crate) fn flags(&self) -> &Flags {
        self.data.at(Layout::FLAGS)
    }

    /// The header of slot `i` (panics if `i >= slots`: callers validate untrusted numbers).
    #[inline]
    pub(crate) fn slot(&self, i: u32) -> &SlotHeader {
        self.data.at(self.layout.slot_at(i))
    }

    fn request_at(&self, i: u32) -> usize {
        self.layout.slot_at(i) + 64 + EVENT_STORAGE
    }

    /// Slot `i`'s request bytes (`max_message` of them) as a region.
    #[inline]
    pub(crate) fn request(&self, i: u32) -> Region<'_> {
        let at = self.request_at(i);
        self.data
            .sub(at, self.layout.max_message)
            .expect("inside the layout")
    }

    /// Slot `i`'s response bytes (`max_message` of them) as a region.
    #[inline]
    pub(crate) fn response(&self, i: u32) -> Region<'_> {
        let at = self.request_at(i) + self.layout.area;
        self.data
            .sub(at, self.layout.max_message)
            .expect("inside the layout")
    }

    /// Slot `i`'s views, computed once (a client uses its slot on every call).
    ///
    /// # Safety
    /// The returned value must not be used after `self` is dropped.
    pub(crate) unsafe fn slot_ref(&self, i: u32) -> SlotRef {
        // SAFETY: the caller keeps `self` (and so the mapping) alive while it uses these.
        unsafe {
            SlotRef {
                header: self.data.at(self.layout.slot_at(i)),
                request: self.request(i).detach(),
                response: self.response(i).detach(),
            }
        }
    }

    /// Slot `i`'s notification queue.
    pub(crate) fn notes(&self, i: u32) -> NoteQueue<'_> {
        let region = self
            .data
            .sub(self.layout.queue_at(i), self.layout.queue)
            .expect("inside the layout");
        NoteQueue::new(region, self.layout.notes.depth, self.layout.notes.max)
            .expect("the layout sized the queue")
    }

    /// The submission ring's bytes.
    pub(crate) fn ring(&self) -> Region<'_> {
        self.data
            .sub(self.layout.ring, self.layout.slots_at - self.layout.ring)
            .expect("inside the layout")
    }
}

/// One slot's views inside a [`Mapped`] (see [`Mapped::slot_ref`]), so that a call's path
/// does no address arithmetic.
pub(crate) struct SlotRef {
    header: &'static SlotHeader,
    /// The request bytes (`max_message`).
    pub(crate) request: Region<'static>,
    /// The response bytes (`max_message`).
    pub(crate) response: Region<'static>,
}

impl SlotRef {
    #[inline]
    pub(crate) fn header(&self) -> &SlotHeader {
        self.header
    }

    /// Bytes per direction.
    #[inline]
    pub(crate) fn max_message(&self) -> usize {
        self.request.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tests/channel.rs (the hostile client) and tests/scribble.rs write these offsets by hand (the slot header's
    /// field offsets are pinned in slot.rs).
    #[test]
    fn offsets_the_hostile_client_test_relies_on() {
        let l = Layout::new(8, 512, NOTES).unwrap();
        assert_eq!((l.mutex, l.doorbell, l.ring), (128, 192, 256));
        assert_eq!(l.slots_at % 64, 0);
        // tests/scribble.rs.
        let l = Layout::new(4, 64, Notes { depth: 4, max: 64 }).unwrap();
        assert_eq!((l.slots_at, l.stride), (448, 960));
        assert_eq!(l.note_event(0) - l.slot_at(0), 256);
    }

    const NOTES: Notes = Notes { depth: 4, max: 100 };

    #[test]
    fn layouts_out_of_range_are_refused() {
        assert!(Layout::new(0, 64, NOTES).is_none());
        assert!(Layout::new(1, 0, NOTES).is_none());
        assert!(Layout::new(MAX_SLOTS + 1, 64, NOTES).is_none());
        assert!(Layout::new(1, MAX_MESSAGE_LIMIT + 1, NOTES).is_none());
        assert!(Layout::new(1, 64, Notes { depth: 0, max: 8 }).is_none());
        assert!(Layout::new(
            1,
            64,
            Notes {
                depth: MAX_DEPTH + 1,
                max: 8
            }
        )
        .is_none());
        let big = Layout::new(MAX_SLOTS, MAX_MESSAGE_LIMIT, NOTES);
        assert!(big.is_none() || big.unwrap().total > MAX_MESSAGE_LIMIT);
    }

    #[test]
    fn each_slot_s_parts_are_disjoint_and_aligned() {
        let l = Layout::new(3, 100, NOTES).unwrap();
        for i in 0..3 {
            let parts = [
                l.slot_at(i),
                l.done_event(i),
                l.slot_at(i) + 64 + EVENT_STORAGE,
                l.note_event(i),
                l.queue_at(i),
            ];
            assert!(parts.iter().all(|p| p % 64 == 0));
            assert!(parts.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(l.queue_at(i) + l.queue, l.slot_at(i) + l.stride);
        }
        assert_eq!(l.total, l.slot_at(2) + l.stride);
    }
}
