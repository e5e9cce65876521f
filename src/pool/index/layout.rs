//! What the index segment holds: the constants of its layout and state words, the header,
//! and the directory entries. Plain `#[repr(C)]` structs of atomics, valid for any bits.

use crate::region::ShmAtomic;
use std::time::Duration;

use crate::pool::config::PoolConfig;
use crate::process::Member;
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// `b"shmlpool"`: the first bytes of a pool index.
pub(crate) const SIGNATURE: u64 = u64::from_le_bytes(*b"shmlpool");
/// Version of the layout below (header, directory, entry) and of the meaning of its state
/// words. Also the segment kind version. 2: the header state `STATE_PARKED`.
pub(crate) const LAYOUT_VERSION: u32 = 2;
/// "No entry" in links and list heads.
pub(crate) const NIL: u32 = u32::MAX;

/// `Entry::status` values. Zero is never valid (an uninitialised entry).
///
/// | value | meaning | on list |
/// |---|---|---|
/// | `FREE` (1) | has a buffer segment, nobody holds it | free |
/// | `ALLOCATED` (2) | held by the Writer `owner` | none |
/// | `QUEUED` (3) | sent, waiting for the Reader | queued |
/// | `RECEIVED` (4) | being read by the Reader | none |
/// | `DISPOSED` (5) | no buffer segment (never grown, or swept) | disposed |
pub(crate) const FREE: u32 = 1;
/// See [`FREE`].
pub(crate) const ALLOCATED: u32 = 2;
/// See [`FREE`].
pub(crate) const QUEUED: u32 = 3;
/// See [`FREE`].
pub(crate) const RECEIVED: u32 = 4;
/// See [`FREE`].
pub(crate) const DISPOSED: u32 = 5;

/// `Entry::flags` bit: the message was received by a Reader that died before releasing it,
/// and is delivered again.
pub(crate) const FLAG_REDELIVERED: u32 = 1;

/// `IndexHeader::state` values.
///
/// | value | meaning |
/// |---|---|
/// | `STATE_OPEN` (1) | a Reader serves this index, or it died and a future Reader may adopt it |
/// | `STATE_RETIRED` (2) | no Reader will ever read it again (its Reader stopped with nothing pending and removes it, or a fresh index replaced it): Writers copy on send or report `NoReader` |
/// | `STATE_PARKED` (3) | its Reader stopped gracefully and left pending messages to the next Reader, which adopts the index whether or not the stopped Reader's process still runs; Writers queue into it meanwhile |
pub(crate) const STATE_OPEN: u32 = 1;
/// See [`STATE_OPEN`].
pub(crate) const STATE_RETIRED: u32 = 2;
/// See [`STATE_OPEN`].
pub(crate) const STATE_PARKED: u32 = 3;

/// Offsets in the index segment's data region.
pub(crate) const MUTEX_OFFSET: usize = 512;
/// The "a Reader is alive" lock: held by the Reader's service thread for its whole life.
pub(crate) const ALIVE_OFFSET: usize = 576;
/// Event: queue not empty (the Reader waits on it).
pub(crate) const QUEUE_EVENT_OFFSET: usize = 640;
/// Event: a buffer was freed or the pool grew (Writers wait on it in `acquire`).
pub(crate) const FREED_EVENT_OFFSET: usize = 704;
/// Event: wake the service thread (growth requested, shutdown).
pub(crate) const SERVICE_EVENT_OFFSET: usize = 768;
/// The directory: `max_buffers` entries of [`ENTRY_SIZE`] bytes.
pub(crate) const DIR_OFFSET: usize = 832;
/// Bytes per directory entry.
pub(crate) const ENTRY_SIZE: usize = 64;

/// Bytes of index data for `max_buffers` entries.
pub(crate) fn index_size(max_buffers: u32) -> usize {
    DIR_OFFSET + max_buffers as usize * ENTRY_SIZE
}

/// The pool configuration as stored in the index (fixed-width fields).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct RawConfig {
    pub(crate) initial_buffer_size: AtomicU64,
    pub(crate) max_buffer_size: AtomicU64,
    pub(crate) start_buffers: AtomicU32,
    pub(crate) max_buffers: AtomicU32,
    pub(crate) min_buffers: AtomicU32,
    pub(crate) resize_increment: AtomicU32,
    pub(crate) resize_threshold: AtomicU32,
    _pad: AtomicU32,
    pub(crate) sweep_timeout_ns: AtomicU64,
}

impl RawConfig {
    /// Stores `cfg` (validated by the caller), the optional values resolved.
    pub(crate) fn store(&self, cfg: &PoolConfig) {
        let r = Relaxed;
        self.initial_buffer_size
            .store(cfg.initial_buffer_size as u64, r);
        self.max_buffer_size.store(cfg.max_buffer_size as u64, r);
        self.start_buffers.store(cfg.start_buffers, r);
        self.max_buffers.store(cfg.max_buffers, r);
        self.min_buffers.store(cfg.min_buffers(), r);
        self.resize_increment.store(cfg.resize_increment(), r);
        self.resize_threshold.store(cfg.resize_threshold, r);
        self.sweep_timeout_ns.store(
            u64::try_from(cfg.sweep_timeout.as_nanos()).unwrap_or(u64::MAX),
            r,
        );
    }

    /// The configuration as stored (to be validated by the caller).
    pub(crate) fn load(&self) -> PoolConfig {
        let r = Relaxed;
        PoolConfig {
            initial_buffer_size: usize::try_from(self.initial_buffer_size.load(r))
                .unwrap_or(usize::MAX),
            max_buffer_size: usize::try_from(self.max_buffer_size.load(r)).unwrap_or(usize::MAX),
            start_buffers: self.start_buffers.load(r),
            max_buffers: self.max_buffers.load(r),
            min_buffers: Some(self.min_buffers.load(r)),
            resize_increment: Some(self.resize_increment.load(r)),
            resize_threshold: self.resize_threshold.load(r),
            sweep_timeout: Duration::from_nanos(self.sweep_timeout_ns.load(r)),
        }
    }
}

/// Head, tail and length of one list.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ListHead {
    pub(super) head: AtomicU32,
    pub(super) tail: AtomicU32,
    pub(super) count: AtomicU32,
    _pad: AtomicU32,
}

/// The index header, at offset 0 of the index segment's data region.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct IndexHeader {
    /// [`SIGNATURE`].
    pub(crate) signature: AtomicU64,
    /// [`LAYOUT_VERSION`].
    pub(crate) layout_version: AtomicU32,
    /// [`ENTRY_SIZE`].
    pub(crate) entry_size: AtomicU32,
    pub(crate) config: RawConfig,
    /// See [`STATE_OPEN`] and the table there.
    pub(super) state: AtomicU32,
    /// Set by a Writer that wants more buffers; cleared by the service thread.
    pub(super) grow_requested: AtomicU32,
    pub(crate) free: ListHead,
    pub(crate) queued: ListHead,
    pub(crate) disposed: ListHead,
    /// Entries in the ALLOCATED / RECEIVED states.
    pub(crate) allocated: AtomicU32,
    pub(crate) received: AtomicU32,
    /// The Reader serving the index (pid, start time) and its instance token.
    pub(crate) reader_pid: AtomicU32,
    pub(crate) adoptions: AtomicU32,
    pub(crate) reader_start: AtomicU64,
    pub(crate) reader_token: [AtomicU64; 2],
    /// Next `Entry::seq` to hand out (send order).
    pub(crate) next_seq: AtomicU64,
    /// Counters, for `stats()`.
    pub(crate) sent: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) grown: AtomicU64,
    pub(crate) swept: AtomicU64,
    pub(crate) reclaimed: AtomicU64,
    pub(crate) repairs: AtomicU64,
    /// Set by the service thread when it could not add buffers for lack of shared memory,
    /// cleared when it could: a Writer out of buffers then says why.
    pub(crate) grow_failed: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<IndexHeader>() <= MUTEX_OFFSET);

// SAFETY: `#[repr(C)]`, atomics only (RawConfig and ListHead are atomics too); any bit
// pattern is valid; alignment 8.
unsafe impl ShmAtomic for IndexHeader {}

/// One directory entry: the state of one buffer.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct Entry {
    /// See [`FREE`] and the table there; changed only by the transitions in the parent
    /// module.
    pub(super) status: AtomicU32,
    pub(crate) prev: AtomicU32,
    pub(crate) next: AtomicU32,
    /// Buffer segment generation: the segment's tag is `pool.b<index>.g<generation>`.
    pub(crate) generation: AtomicU32,
    /// Bytes of message in the buffer (QUEUED / RECEIVED; stale in the other states).
    pub(crate) len: AtomicU64,
    /// Bytes of the buffer segment's data region in use (0 when DISPOSED).
    pub(crate) capacity: AtomicU64,
    /// When it went back to the free list, ns since the Unix epoch (the sweeper's clock).
    pub(crate) released_at: AtomicU64,
    /// Send order (QUEUED / RECEIVED), to rebuild the FIFO after a crash.
    pub(crate) seq: AtomicU64,
    /// The Writer holding it (ALLOCATED): its liveness token (see `Segment::member`),
    /// checked by the Reader before taking the buffer back, and its pid (for messages).
    /// Kept through QUEUED and RECEIVED as the Writer that sent the message
    /// (`ReadBuf::writer`); cleared when the buffer goes back unsent or is disposed of.
    pub(crate) owner_token: AtomicU64,
    pub(crate) owner_pid: AtomicU32,
    /// [`FLAG_REDELIVERED`].
    pub(crate) flags: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Entry>() == ENTRY_SIZE);

// SAFETY: `#[repr(C, align(64))]`, atomics only; any bit pattern is valid.
unsafe impl ShmAtomic for Entry {}

impl Entry {
    pub(crate) fn owner(&self) -> Member {
        Member {
            pid: self.owner_pid.load(Relaxed),
            token: self.owner_token.load(Relaxed),
        }
    }

    /// The status (see [`FREE`]), as read now.
    pub(crate) fn status(&self) -> u32 {
        self.status.load(Relaxed)
    }

    pub(super) fn set_owner(&self, p: Option<Member>) {
        let m = p.unwrap_or_default();
        self.owner_pid.store(m.pid, Relaxed);
        self.owner_token.store(m.token, Relaxed);
    }
}
