//! A pool as `shmlink inspect` shows it: the index read as a snapshot, without the pool
//! mutex, trusting nothing (see [`admin::inspect`](crate::admin::inspect)).
//!
//! Nothing here writes to the index or waits for a lock: every value is loaded once,
//! clamped or reported as it is, and the lists are walked at most one step per directory
//! entry. A snapshot taken while a peer changes the lists may therefore be inconsistent
//! (counts that disagree with the entries, a queue cut short); it never fails for that.

use std::sync::Arc;
use std::time::Duration;

use super::conn::{check_header, INDEX_TAG, KIND_VERSION};
use super::index::{self, Entry, Index, IndexHeader, List};
use super::{PoolConfig, PoolStats};
use crate::error::{Error, Result};
use crate::name::ServiceName;
use crate::segment::{Access, Segment, SegmentKind};
use crate::sync::atomic::Ordering::Relaxed;
use crate::sync::Mutex;

/// How long to wait for an index that is being created to be published.
const READY_WAIT: Duration = Duration::from_millis(100);

/// The state of a pool's index as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolState {
    /// A Reader serves it, or one died and the next Reader of the name adopts it.
    Open,
    /// Its Reader stopped and left queued messages to the next Reader.
    Parked,
    /// No Reader will read it again (it is about to be removed or replaced).
    Retired,
    /// A value no shmlink process writes.
    Invalid(u32),
}

/// What a buffer's directory entry says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BufferStatus {
    /// On the free list.
    Free,
    /// Held by a Writer.
    Allocated,
    /// Sent, waiting for the Reader.
    Queued,
    /// Being read by the Reader.
    Received,
    /// No buffer segment (never grown, or swept).
    Disposed,
    /// A value no shmlink process writes.
    Invalid(u32),
}

/// One buffer of a pool: a directory entry that is not disposed, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BufferInfo {
    /// The entry's index in the directory.
    pub index: u32,
    /// Its status.
    pub status: BufferStatus,
    /// The generation of its buffer segment (`pool.b<index>.g<generation>`).
    pub generation: u32,
    /// Bytes of buffer.
    pub capacity: u64,
    /// Bytes of message (meaningful for queued and received buffers).
    pub len: u64,
    /// The pid of the Writer that holds it (allocated) or sent it (queued, received); 0
    /// for none. For messages: a pid from another PID namespace is not this one's.
    pub writer_pid: u32,
    /// For an allocated buffer, whether its Writer is alive (judged by its liveness token,
    /// not its pid); `None` for the other statuses.
    pub writer_alive: Option<bool>,
    /// Delivered again after a Reader died holding it.
    pub redelivered: bool,
}

/// A pool as read from its index (see [`admin::inspect`](crate::admin::inspect)).
///
/// A snapshot taken without the pool mutex: while Writers and the Reader work, the counts
/// and the entries may disagree with each other by a message or two.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolInfo {
    /// The index's state.
    pub state: PoolState,
    /// The pid of the Reader that serves (or last served) the pool, as recorded.
    pub reader_pid: u32,
    /// Whether a Reader holds the pool's alive lock now.
    pub reader_alive: bool,
    /// The pid recorded by the holder of the pool mutex (0: not recorded yet), if a live
    /// one holds it now: a holder that stays is a stalled peer. Always `None` on Windows,
    /// where asking means taking the lock.
    pub lock_holder: Option<u32>,
    /// The configuration the index records.
    pub config: PoolConfig,
    /// The header's list counts and counters (clamped to the directory size).
    pub stats: PoolStats,
    /// Directory indices on the queued list, in delivery order, as linked when read.
    pub queue: Vec<u32>,
    /// Every entry that has a buffer (not disposed), in directory order.
    pub buffers: Vec<BufferInfo>,
}

/// Reads pool `name`'s index; `Ok(None)` if the pool has none.
///
/// # Errors
/// The index exists but cannot be opened or is not a pool index of this version.
pub(crate) fn inspect(name: &ServiceName) -> Result<Option<PoolInfo>> {
    let seg = match Segment::open_kind_access(
        name,
        INDEX_TAG,
        SegmentKind::PoolIndex,
        KIND_VERSION,
        READY_WAIT,
        Access::own(true),
    ) {
        Ok(seg) => Arc::new(seg),
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let corrupt = |reason: String| Error::Corrupt {
        name: name.as_str().to_owned(),
        reason,
    };
    let (max_buffers, max_size) = check_header(&seg).map_err(corrupt)?;
    let data = seg.data();
    let hdr = data
        .get::<IndexHeader>(0)
        .ok_or_else(|| corrupt("the index holds no header".into()))?;
    let dir = data
        .slice::<Entry>(index::DIR_OFFSET, max_buffers as usize)
        .ok_or_else(|| corrupt("the index does not hold its directory".into()))?;
    let ix = Index {
        hdr,
        dir,
        max_size: max_size as u64,
    };
    // SAFETY: the creator initialised the alive lock at this fixed offset before
    // publishing; check_header verified the segment holds it.
    let alive = unsafe { Mutex::open_at(&seg, index::ALIVE_OFFSET)? };
    let lock_holder = lock_holder(&seg)?;
    Ok(Some(PoolInfo {
        state: match hdr.state() {
            index::STATE_OPEN => PoolState::Open,
            index::STATE_PARKED => PoolState::Parked,
            index::STATE_RETIRED => PoolState::Retired,
            s => PoolState::Invalid(s),
        },
        reader_pid: hdr.reader_pid.load(Relaxed),
        reader_alive: alive.is_held(),
        lock_holder,
        config: hdr.config.load(),
        stats: stats(&ix),
        queue: queue(&ix),
        buffers: dir
            .iter()
            .zip(0u32..)
            .filter_map(|(e, i)| buffer(&seg, e, i))
            .collect(),
    }))
}

/// Who holds the pool mutex, asked without taking it.
#[cfg(not(windows))]
fn lock_holder(seg: &Arc<Segment>) -> Result<Option<u32>> {
    // SAFETY: the creator initialised the pool mutex at this fixed offset before publishing;
    // check_header verified the segment holds it.
    let mutex = unsafe { Mutex::open_at(seg, index::MUTEX_OFFSET)? };
    Ok(mutex.is_held().then(|| mutex.holder_pid().unwrap_or(0)))
}

/// Windows can only tell by taking the lock, which would hide a dead holder's abandonment
/// from the next locker (who repairs the lists): not asked.
#[cfg(windows)]
fn lock_holder(_seg: &Arc<Segment>) -> Result<Option<u32>> {
    Ok(None)
}

/// The header's counts and counters, each clamped to the directory where it counts entries.
fn stats(ix: &Index<'_>) -> PoolStats {
    let h = ix.hdr;
    let n = ix.dir.len() as u32;
    let disposed = ix.count(List::Disposed);
    PoolStats {
        buffers: n - disposed,
        free: ix.count(List::Free),
        allocated: h.allocated.load(Relaxed).min(n),
        queued: ix.count(List::Queued),
        received: h.received.load(Relaxed).min(n),
        disposed,
        max_buffers: n,
        sent: h.sent.load(Relaxed),
        delivered: h.delivered.load(Relaxed),
        redelivered: h.redelivered.load(Relaxed),
        grown: h.grown.load(Relaxed),
        swept: h.swept.load(Relaxed),
        reclaimed: h.reclaimed.load(Relaxed),
        repairs: h.repairs.load(Relaxed),
        adoptions: h.adoptions.load(Relaxed),
    }
}

/// The queued list from its head, one step per directory entry at most: it stops at the
/// end, at a link out of range, or where a (changing or scribbled) list would loop.
fn queue(ix: &Index<'_>) -> Vec<u32> {
    let mut out = Vec::new();
    let mut at = ix.front(List::Queued).ok().flatten();
    while let Some(i) = at {
        let Some(e) = ix.entry(i) else { break };
        if out.len() >= ix.dir.len() {
            break;
        }
        out.push(i);
        at = Some(e.next.load(Relaxed)).filter(|&next| next != index::NIL);
    }
    out
}

/// Entry `i` as read, `None` if it is disposed.
fn buffer(seg: &Segment, e: &Entry, i: u32) -> Option<BufferInfo> {
    let status = match e.status() {
        index::DISPOSED => return None,
        index::FREE => BufferStatus::Free,
        index::ALLOCATED => BufferStatus::Allocated,
        index::QUEUED => BufferStatus::Queued,
        index::RECEIVED => BufferStatus::Received,
        s => BufferStatus::Invalid(s),
    };
    // Only these statuses vouch for the owner fields.
    let sender = matches!(
        status,
        BufferStatus::Allocated | BufferStatus::Queued | BufferStatus::Received
    );
    let owner = e.owner();
    Some(BufferInfo {
        index: i,
        status,
        generation: e.generation.load(Relaxed),
        capacity: e.capacity.load(Relaxed),
        len: e.len.load(Relaxed),
        writer_pid: if sender { owner.pid } else { 0 },
        writer_alive: (status == BufferStatus::Allocated).then(|| seg.is_alive(owner)),
        redelivered: e.flags.load(Relaxed) & index::FLAG_REDELIVERED != 0,
    })
}
