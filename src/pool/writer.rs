//! The sending end of a pool: connecting, acquiring free buffers and sending them.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::buf::WriteBuf;
use super::conn::{Conn, LockWait, PoolStats, INDEX_TAG, KIND_VERSION};
use super::error::{PoolError, SendError};
use super::index::{bump, List, Refused, ALLOCATED, FREE};
use crate::error::Error;
use crate::name::ServiceName;
use crate::segment::{Access, Segment, SegmentKind};
use crate::sync::atomic::Ordering;
use crate::sync::{WaitOutcome, WaitStrategy};

/// A Writer drops its mappings of disposed buffers every this many acquires.
const PRUNE_EVERY: u32 = 256;

/// The sending end of a buffer pool: acquires free buffers, fills them in place and sends
/// them to the [`Reader`](crate::Reader).
///
/// A Writer follows its pool across Reader restarts: when a new Reader adopts the pool,
/// nothing changes for the Writer; when a new Reader had to start a fresh pool, buffers
/// acquired from the old one are copied into the new one when sent. While no Reader serves
/// the pool (its Reader died, or stopped with messages queued), the buffers still free are
/// handed out and what is sent waits for the next Reader; a Reader that stopped with
/// nothing queued removed the pool, and the Writer gets [`PoolError::NoReader`] until a new
/// one starts.
///
/// # Examples
/// ```
/// use std::io::Write;
/// use shmlink::{PoolConfig, Reader, Writer};
/// # let name = format!("doc-writer-{}", std::process::id());
/// # let reader = Reader::create(&name, PoolConfig::default())?;
/// let writer = Writer::connect(&name)?;
/// let mut buf = writer.acquire()?;
/// buf.set_len(4)?;                       // zero-copy: fill the bytes in place
/// buf.copy_from_slice(&[1, 2, 3, 4]);
/// write!(buf, " and more")?;             // or append
/// writer.send(buf)?;
/// # assert_eq!(&reader.recv()?[..4], &[1, 2, 3, 4]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Writer {
    name: ServiceName,
    conn: parking_lot::Mutex<Arc<Conn>>,
    strategy: WaitStrategy,
    /// Whose index this Writer accepts, on connecting and when it follows a newer pool.
    access: Access,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Connects to the pool `name`.
    ///
    /// # Errors
    /// [`PoolError::NoReader`] if no pool of that name exists; [`PoolError::Corrupt`] if its
    /// index is inconsistent; [`PoolError::Setup`] for other setup errors.
    pub fn connect(name: &str) -> Result<Writer, PoolError> {
        Writer::connect_with(name, Access::owner_only())
    }

    /// Connects to the pool `name` whose index `access` accepts: a pool shared between users
    /// ([`Access::shared_by`] the Reader's uid; see
    /// [`Reader::create_with_mode`](crate::Reader::create_with_mode)), or this user's own
    /// pool created with a mode that lets others write ([`Access::shared_by`] this user's
    /// uid). When the Writer follows a newer pool of the name (a Reader restart), it accepts
    /// the same. Buffers it grows get the pool's mode (and group, where only the group may
    /// write), so that the Reader accepts them.
    ///
    /// # Examples
    /// ```no_run
    /// use shmlink::{Access, Writer};
    /// // The pool "ingest" of a Reader run by uid 990, created with mode 0o660.
    /// let writer = Writer::connect_with("ingest", Access::shared_by(990))?;
    /// let mut buf = writer.acquire()?;
    /// buf.extend_from_slice(b"from another user")?;
    /// writer.send(buf)?;
    /// # Ok::<(), shmlink::PoolError>(())
    /// ```
    ///
    /// # Errors
    /// As [`Writer::connect`]; [`PoolError::Setup`] with
    /// [`Error::Squatted`] if the index is not one `access` accepts.
    pub fn connect_with(name: &str, access: Access) -> Result<Writer, PoolError> {
        let name = ServiceName::new(name)?;
        let strategy = WaitStrategy::default();
        let conn = Self::open(&name, Duration::from_secs(2), strategy, access)?;
        Ok(Writer {
            name,
            conn: parking_lot::Mutex::new(Arc::new(conn)),
            strategy,
            access,
        })
    }

    /// Makes this Writer's waits for a free buffer ([`acquire`](Writer::acquire),
    /// [`acquire_timeout`](Writer::acquire_timeout) and copy-on-send) use `strategy`, as
    /// [`ServerBuilder::wait_strategy`](crate::ServerBuilder::wait_strategy) does for a
    /// server. The default is [`WaitStrategy::Adaptive`].
    ///
    /// # Examples
    /// ```
    /// use shmlink::{PoolConfig, Reader, WaitStrategy, Writer};
    /// # let name = format!("doc-writer-ws-{}", std::process::id());
    /// # let reader = Reader::create(&name, PoolConfig::default())?;
    /// let writer = Writer::connect(&name)?.wait_strategy(WaitStrategy::Spin);
    /// # Ok::<(), shmlink::PoolError>(())
    /// ```
    pub fn wait_strategy(mut self, strategy: WaitStrategy) -> Self {
        self.strategy = strategy;
        let conn = self.conn.get_mut();
        match Arc::get_mut(conn) {
            Some(c) => c.set_wait_strategy(strategy),
            // Buffers acquired before share this attachment: attach to the same index again
            // for the waits from now on. If that fails, the next attachment (after a Reader
            // restart) gets the strategy.
            None => {
                if let Ok(c) = Conn::attach(Arc::clone(&conn.seg), self.name.clone(), strategy) {
                    *conn = Arc::new(c);
                }
            }
        }
        self
    }

    /// Connects to the pool `name`, waiting up to `timeout` for a Reader to create it.
    ///
    /// # Errors
    /// As [`Writer::connect`], after the timeout.
    pub fn connect_timeout(name: &str, timeout: Duration) -> Result<Writer, PoolError> {
        let start = Instant::now();
        loop {
            match Self::connect(name) {
                Err(PoolError::NoReader) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                r => return r,
            }
        }
    }

    fn open(
        name: &ServiceName,
        ready_wait: Duration,
        strategy: WaitStrategy,
        access: Access,
    ) -> Result<Conn, PoolError> {
        match Segment::open_kind_access(
            name,
            INDEX_TAG,
            SegmentKind::PoolIndex,
            KIND_VERSION,
            ready_wait,
            access,
        ) {
            Ok(seg) => Conn::attach(Arc::new(seg), name.clone(), strategy),
            Err(Error::NotFound { .. } | Error::NotReady { .. }) => Err(PoolError::NoReader),
            Err(e) => Err(e.into()),
        }
    }

    fn current(&self) -> Arc<Conn> {
        Arc::clone(&self.conn.lock())
    }

    /// Looks for a new pool replacing `old`: `Some(new)` if the name now names another
    /// index, `None` if it still names `old`'s. (Attachments are told apart by their index's
    /// instance token: `wait_strategy` may have attached to the same index again.)
    ///
    /// The Writer's current attachment is taken as the new pool only while it is not retired
    /// itself: a buffer held across two Reader restarts follows the name to the newest pool.
    #[cold]
    fn refresh(&self, old: &Arc<Conn>) -> Result<Option<Arc<Conn>>, PoolError> {
        let mut cur = self.conn.lock();
        if cur.token != old.token && !cur.retired() {
            return Ok(Some(Arc::clone(&cur)));
        }
        let conn = Self::open(
            &self.name,
            Duration::from_millis(500),
            self.strategy,
            self.access,
        )?;
        if conn.token == old.token {
            return Ok(None);
        }
        if conn.token == cur.token {
            // The name still names our retired attachment's index: it says NoReader.
            return Ok(Some(Arc::clone(&cur)));
        }
        let conn = Arc::new(conn);
        *cur = Arc::clone(&conn);
        Ok(Some(conn))
    }

    /// Whether a Reader serves the pool now.
    pub fn reader_alive(&self) -> bool {
        let c = self.current();
        !c.retired() && c.reader_alive_now()
    }

    /// The largest buffer the pool allows.
    pub fn max_buffer_size(&self) -> usize {
        self.current().max_buffer_size
    }

    /// A snapshot of the pool's lists and counters.
    ///
    /// # Errors
    /// [`PoolError::LockHeld`] if another process holds the pool's lock for 5 s.
    pub fn stats(&self) -> Result<PoolStats, PoolError> {
        self.current().stats()
    }

    /// Acquires a free buffer (length 0), waiting as long as it takes for one, or until it
    /// is clear that no Reader serves the pool. Asks the Reader to grow the pool when few
    /// buffers are free.
    ///
    /// It also waits for the pool's lock as long as a live process holds it (a peer stopped
    /// while holding it stops this call too, until it resumes or dies).
    ///
    /// # Errors
    /// [`PoolError::NoReader`] as soon as it is clear that no Reader serves the pool (within
    /// 100 ms while waiting); [`PoolError::Corrupt`] if the index stays inconsistent after
    /// repair; [`PoolError::Setup`] if a buffer cannot be mapped.
    pub fn acquire(&self) -> Result<WriteBuf, PoolError> {
        self.acquire_deadline(None)
    }

    /// Acquires a free buffer (length 0) as [`Writer::acquire`] does, waiting at most
    /// `timeout` for one, the pool's lock included.
    ///
    /// # Errors
    /// [`PoolError::PoolFull`] when the time is up: no buffer became free, or another process
    /// held the pool's lock until then (a stalled peer); otherwise as [`Writer::acquire`].
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<WriteBuf, PoolError> {
        self.acquire_deadline(Instant::now().checked_add(timeout))
    }

    fn acquire_deadline(&self, deadline: Option<Instant>) -> Result<WriteBuf, PoolError> {
        let wait = LockWait::deadline(deadline, || PoolError::PoolFull, LockWait::Forever);
        let mut conn = self.current();
        let mut waited = false;
        loop {
            if conn.retired() {
                conn = self.refresh(&conn)?.ok_or(PoolError::NoReader)?;
                continue;
            }
            if let Some(buf) = self.try_acquire(&conn, waited, wait)? {
                return Ok(buf);
            }
            if !conn.reader_alive() {
                match self.refresh(&conn)? {
                    Some(new) => {
                        conn = new;
                        continue;
                    }
                    None => return Err(PoolError::NoReader),
                }
            }
            let mut check = || conn.reader_alive() && !conn.retired();
            match conn.freed_ev.wait_until(deadline, Some(&mut check)) {
                WaitOutcome::Set => waited = true,
                WaitOutcome::TimedOut if conn.hdr().grow_failed.load(Ordering::Acquire) != 0 => {
                    return Err(PoolError::NoSpace)
                }
                WaitOutcome::TimedOut => return Err(PoolError::PoolFull),
                WaitOutcome::Aborted => {}
            }
        }
    }

    /// One attempt: pops a free buffer if there is one, waiting for the pool's lock as
    /// `wait` says.
    #[inline]
    fn try_acquire(
        &self,
        conn: &Arc<Conn>,
        pass_on: bool,
        wait: LockWait,
    ) -> Result<Option<WriteBuf>, PoolError> {
        for _ in 0..conn.max_buffers + 2 {
            let (slot, grow, more) = {
                let g = conn.locked_for(wait)?;
                let ix = conn.index();
                let h = ix.hdr;
                let head = match ix.front(List::Free) {
                    Ok(head) => head,
                    Err(_) => {
                        ix.repair(false);
                        bump(&h.repairs);
                        continue;
                    }
                };
                let taken = match head.map(|i| (i, ix.allocate(i, conn.me))) {
                    None => None,
                    Some((_, Ok(slot))) => Some(slot),
                    Some((i, Err(Refused::Invalid(_)))) => {
                        // An impossible capacity: the buffer cannot be trusted.
                        if ix.dispose(i, FREE).is_err() {
                            ix.repair(false);
                        }
                        bump(&h.repairs);
                        continue;
                    }
                    Some((_, Err(_))) => {
                        ix.repair(false);
                        bump(&h.repairs);
                        continue;
                    }
                };
                let free = ix.count(List::Free);
                let threshold = h.config.resize_threshold.load(Ordering::Relaxed);
                // Few free (or none at all: then even with a threshold of 0): ask for more.
                let grow = (free < threshold || taken.is_none())
                    && ix.buffers() < conn.max_buffers
                    && h.request_grow();
                drop(g);
                let Some(slot) = taken else {
                    if grow {
                        conn.service_ev.set();
                    }
                    return Ok(None);
                };
                (slot, grow, free > 0)
            };
            if grow {
                conn.service_ev.set();
            }
            let n = conn.acquires.load(Ordering::Relaxed).wrapping_add(1);
            conn.acquires.store(n, Ordering::Relaxed);
            if n % PRUNE_EVERY == 0 {
                conn.prune();
            }
            if pass_on && more {
                // We were woken for a freed buffer and more are free: wake the next Writer.
                conn.freed_ev.set();
            }
            match conn.map(&slot, false) {
                Ok(seg) => {
                    return Ok(Some(WriteBuf {
                        conn: Arc::clone(conn),
                        seg,
                        slot,
                        len: 0,
                        me: conn.me,
                        done: false,
                    }))
                }
                Err(e) => {
                    // A broken entry (its segment is missing or wrong) is given up and the
                    // next free buffer tried; any other failure puts the buffer back.
                    let broken = matches!(
                        e,
                        PoolError::Corrupt(_)
                            | PoolError::Setup(
                                Error::NotFound { .. }
                                    | Error::Corrupt { .. }
                                    | Error::Foreign { .. }
                                    | Error::WrongKind { .. }
                                    | Error::VersionMismatch { .. }
                                    | Error::NotReady { .. }
                                    | Error::Squatted { .. }
                            )
                    );
                    // Bounded whatever the caller's deadline: the buffer must go back.
                    let g = conn.locked()?;
                    let ix = conn.index();
                    if ix.holds(slot.index, ALLOCATED, slot.generation, Some(conn.me)) {
                        if broken {
                            let _ = ix.dispose(slot.index, ALLOCATED);
                            bump(&ix.hdr.repairs);
                        } else {
                            let _ = ix.give_back(slot.index, conn.me, slot.generation);
                        }
                    }
                    drop(g);
                    if !broken {
                        return Err(e);
                    }
                }
            }
        }
        Err(PoolError::Corrupt(
            "the free list stays inconsistent after repair".into(),
        ))
    }

    /// Sends `buf` to the Reader's queue (FIFO) and wakes the Reader. Does not wait, except
    /// for copy-on-send (below), which waits as long as it takes for a buffer of the new
    /// pool, or until it is clear that no Reader serves it, and for the pool's lock, which
    /// a healthy peer holds for microseconds (at most 5 s, see [`PoolError::LockHeld`]).
    ///
    /// `Ok` means the message is queued: it is delivered, in this Writer's send order, to
    /// the Reader serving the pool or, if that one stops or dies first, to the next Reader of
    /// the name (see the crate's [delivery guarantees](crate#delivery)). If the Reader died,
    /// or stopped with messages queued, and nobody replaced it yet, the message is queued
    /// for the Reader that will adopt the pool. If a new Reader started a fresh pool, the
    /// bytes are copied into one of its buffers (copy-on-send).
    ///
    /// On Windows, where a buffer object lives only while some process has it open, sending
    /// a buffer that this Writer grew (see [`WriteBuf::set_len`]) also waits until the
    /// Reader has mapped it, so that the message survives this process exiting right after.
    ///
    /// # Errors
    /// Every error hands the buffer back and means the message was **not** queued (retrying
    /// it cannot duplicate it): [`PoolError::NoReader`] (the pool was removed, or closed, and
    /// no Reader replaced it), [`PoolError::NotOwner`], [`PoolError::TooLarge`] (a copy that
    /// does not fit the new pool), [`PoolError::LockHeld`] (another process held the pool's
    /// lock for 5 s), [`PoolError::Corrupt`], [`PoolError::Setup`].
    pub fn send(&self, buf: WriteBuf) -> Result<(), SendError> {
        self.send_deadline(buf, None)
    }

    /// Sends `buf` as [`Writer::send`] does, waiting at most `timeout` for a buffer of a new
    /// pool when copying on send, and for the pool's lock.
    ///
    /// # Errors
    /// Gives the buffer back with [`PoolError::PoolFull`] when the time is up: no buffer for
    /// the copy became free, or another process held the pool's lock until then (a stalled
    /// peer); otherwise as [`Writer::send`].
    pub fn send_timeout(&self, buf: WriteBuf, timeout: Duration) -> Result<(), SendError> {
        self.send_deadline(buf, Instant::now().checked_add(timeout))
    }

    fn send_deadline(&self, buf: WriteBuf, deadline: Option<Instant>) -> Result<(), SendError> {
        let wait = LockWait::deadline(deadline, || PoolError::PoolFull, LockWait::Bounded);
        let conn = Arc::clone(&buf.conn);
        if conn.retired() || !conn.reader_alive() {
            match self.refresh(&conn) {
                Ok(Some(new)) => return self.copy_send(buf, &new, deadline, wait),
                Ok(None) if conn.retired() => return Err(SendError::new(buf, PoolError::NoReader)),
                // The Reader died; its index still has the name: queue for its adopter.
                Ok(None) => {}
                // Nothing has the name any more: nobody would ever read what we queue.
                Err(error) => return Err(SendError::new(buf, error)),
            }
        }
        #[cfg(windows)]
        let grown_here = (buf.seg.owner().pid() == std::process::id())
            .then(|| (Arc::clone(&buf.seg), buf.slot.index, buf.slot.generation));
        self.queue(buf, wait)?;
        #[cfg(windows)]
        if let Some((seg, i, generation)) = grown_here {
            parked::keep_until_mapped(&conn, seg, i, generation, deadline);
        }
        Ok(())
    }

    #[inline]
    fn queue(&self, mut buf: WriteBuf, wait: LockWait) -> Result<(), SendError> {
        let r = (|| {
            let conn = &buf.conn;
            let _g = conn.locked_for(wait)?;
            let ix = conn.index();
            if ix.hdr.is_retired() {
                return Err(PoolError::NoReader);
            }
            let slot = &buf.slot;
            ix.queue(
                slot.index,
                buf.me,
                slot.generation,
                slot.capacity as u64,
                buf.len as u64,
            )
            .map_err(|_| PoolError::NotOwner)?;
            bump(&ix.hdr.sent);
            Ok(())
        })();
        match r {
            Ok(()) => {
                buf.done = true;
                buf.conn.queue_ev.set();
                Ok(())
            }
            Err(error) => Err(SendError::new(buf, error)),
        }
    }

    /// Copy-on-send: `buf` belongs to a pool that no Reader will read; copy it into `new`.
    #[cold]
    fn copy_send(
        &self,
        mut buf: WriteBuf,
        new: &Arc<Conn>,
        deadline: Option<Instant>,
        wait: LockWait,
    ) -> Result<(), SendError> {
        let copy = (|| {
            if buf.len > new.max_buffer_size {
                return Err(PoolError::TooLarge {
                    requested: buf.len,
                    max: new.max_buffer_size,
                });
            }
            let mut nb = loop {
                if let Some(b) = self.try_acquire(new, false, wait)? {
                    break b;
                }
                let mut check = || new.reader_alive() && !new.retired();
                match new.freed_ev.wait_until(deadline, Some(&mut check)) {
                    WaitOutcome::Set => {}
                    WaitOutcome::TimedOut => return Err(PoolError::PoolFull),
                    WaitOutcome::Aborted => return Err(PoolError::NoReader),
                }
            };
            nb.set_len(buf.len)?;
            nb.copy_from_slice(&buf);
            Ok(nb)
        })();
        match copy {
            Ok(nb) => match self.queue(nb, wait) {
                Ok(()) => {
                    // The old pool is abandoned: do not release into it.
                    buf.done = true;
                    Ok(())
                }
                Err(e) => Err(SendError::new(buf, e.into_parts().1)),
            },
            Err(error) => Err(SendError::new(buf, error)),
        }
    }
}

/// Windows: a section lives only while some process has it open, so a buffer a Writer grew
/// (a section its process created) would die with the Writer's last handle, and the message
/// in it with it, if that went before the Reader mapped it. `send` keeps it open until then.
#[cfg(windows)]
pub(super) mod parked {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::super::conn::Conn;
    use super::super::index::{QUEUED, RECEIVED};
    use crate::segment::Segment;
    use crate::sync::atomic::Ordering;

    /// Buffers sent to a Reader in this same process, kept open until the Reader is done
    /// with their message (this process may drop the Writer first).
    static PARKED: parking_lot::Mutex<Vec<Parked>> = parking_lot::Mutex::new(Vec::new());

    /// Buffer `index` of `generation` in `conn`'s pool, kept open by `_seg`.
    struct Parked {
        conn: Arc<Conn>,
        _seg: Arc<Segment>,
        index: u32,
        generation: u32,
    }

    /// Keeps `seg` (buffer `i` of `generation` in `conn`'s pool, just queued) open until the
    /// Reader has it. Another process's Reader: waits until it has mapped it (mapping a
    /// buffer, the Reader takes the segment over, so its header's owner changes), it is
    /// gone or has retired the pool, or `deadline`. A Reader in this process (maybe this
    /// very thread) cannot be waited for: the buffer is parked until its message is done.
    pub(in crate::pool) fn keep_until_mapped(
        conn: &Arc<Conn>,
        seg: Arc<Segment>,
        i: u32,
        generation: u32,
        deadline: Option<Instant>,
    ) {
        let me = std::process::id();
        prune();
        if conn.hdr().reader_pid.load(Ordering::Relaxed) == me {
            PARKED.lock().push(Parked {
                conn: Arc::clone(conn),
                _seg: seg,
                index: i,
                generation,
            });
            return;
        }
        let mut pause = Duration::from_micros(50);
        while seg.owner().pid() == me
            && conn.reader_alive()
            && !conn.retired()
            && deadline.is_none_or(|d| Instant::now() < d)
        {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// Lets go of parked buffers whose message the Reader is done with (or whose pool has
    /// no Reader any more). Called on each send and when a Reader starts.
    pub(in crate::pool) fn prune() {
        PARKED.lock().retain(|p| {
            let ix = p.conn.index();
            !p.conn.retired()
                && p.conn.reader_alive()
                && (ix.holds(p.index, QUEUED, p.generation, None)
                    || ix.holds(p.index, RECEIVED, p.generation, None))
        });
    }
}
