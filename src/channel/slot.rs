//! One slot's header: the state table, the response statuses and the owner's identity.

use crate::process::ProcessId;
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// `SlotHeader::state`. Who may change it, and to what:
///
/// | state | meaning | next (by whom) |
/// |---|---|---|
/// | `FREE` (0) | no client owns the slot | `IDLE` (a client claiming it, under the mutex) |
/// | `IDLE` (1) | owned by a client, no call in flight | `REQUEST_READY` (owner), `FREE` (owner releasing, or a reaper under the mutex when the owner is dead) |
/// | `REQUEST_READY` (2) | request written, slot number pushed to the ring | `IN_SERVICE` (a worker, CAS), `IDLE` (owner retracting after a timeout, CAS) |
/// | `IN_SERVICE` (3) | a worker runs the handler; the slot's bytes are the worker's | `RESPONSE_READY` (that worker) |
/// | `RESPONSE_READY` (4) | response (or refusal) written, `done` notified | `IDLE` (owner, after reading it) |
///
/// The CAS out of `REQUEST_READY` is what makes every request served at most once, however
/// many (stale, duplicated or forged) ring entries name the slot. Any other value is garbage
/// written by a broken peer: workers skip the slot, its owner's call fails.
pub(crate) const FREE: u32 = 0;
pub(crate) const IDLE: u32 = 1;
pub(crate) const REQUEST_READY: u32 = 2;
pub(crate) const IN_SERVICE: u32 = 3;
pub(crate) const RESPONSE_READY: u32 = 4;

/// `SlotHeader::status`, valid in `RESPONSE_READY`.
pub(crate) const STATUS_OK: u32 = 0;
/// The server is shutting down and refused the request.
pub(crate) const STATUS_REFUSED: u32 = 1;
/// The request length was larger than `max_message`.
pub(crate) const STATUS_BAD_LENGTH: u32 = 2;
/// The handler panicked.
pub(crate) const STATUS_PANICKED: u32 = 3;

/// The hot words of one slot, on a cache line of their own.
#[repr(C, align(64))]
pub(crate) struct SlotHeader {
    /// See [`FREE`] and the table there.
    pub(crate) state: AtomicU32,
    /// Sequence number of the current request (written by the owner before `REQUEST_READY`).
    pub(crate) seq: AtomicU32,
    /// Request length in bytes (untrusted: the server checks it against `max_message`).
    pub(crate) req_len: AtomicU32,
    /// Sequence number of the request the response answers.
    pub(crate) resp_seq: AtomicU32,
    /// Response length in bytes.
    pub(crate) resp_len: AtomicU32,
    /// See [`STATUS_OK`].
    pub(crate) status: AtomicU32,
    /// Owner pid (0: none).
    pub(crate) owner_pid: AtomicU32,
    _pad: u32,
    /// Owner start time (with the pid: an identity that survives pid reuse).
    pub(crate) owner_start: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<SlotHeader>() == 64);

impl SlotHeader {
    pub(crate) fn owner(&self) -> ProcessId {
        ProcessId::from_raw(
            self.owner_pid.load(Ordering::Acquire),
            self.owner_start.load(Ordering::Acquire),
        )
    }

    pub(crate) fn set_owner(&self, id: Option<ProcessId>) {
        let (pid, start) = id.map_or((0, 0), |p| (p.pid(), p.start_time()));
        self.owner_start.store(start, Ordering::Relaxed);
        self.owner_pid.store(pid, Ordering::Release);
    }
}
