//! The buffers handed to users: [`ReadBuf`] (a received message) and [`WriteBuf`] (a buffer
//! a Writer fills), both views of a buffer segment in place.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::conn::{next_generation, Conn, Deferred, Mapped};
use super::error::PoolError;
use super::index::Slot;
use super::service::ReaderShared;
use crate::process::Member;
use crate::segment::Segment;

/// A message the [`Reader`](crate::Reader) received: derefs to its bytes, in place in shared
/// memory. Dropping it puts the buffer back on the free list.
pub struct ReadBuf {
    pub(super) shared: Arc<ReaderShared>,
    pub(super) seg: Arc<Segment>,
    pub(super) slot: Slot,
    pub(super) redelivered: bool,
}

impl ReadBuf {
    /// Whether this message was received before by a Reader that died before releasing it
    /// (it may have been processed already).
    ///
    /// Never set after a graceful restart: a Reader's stop waits for its `ReadBuf`s (see
    /// [`Reader`](crate::Reader), "Stopping").
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// The buffer's capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.slot.capacity
    }

    /// The Writer that sent this message, to ask [`Reader::writer_alive`] later whether it
    /// is still there (e.g. while waiting for the rest of a stream it sends).
    ///
    /// Recorded by the pool as the Writer acquired the buffer; a process that breaks the
    /// pool's protocol can make it name another Writer, never more than that.
    ///
    /// [`Reader::writer_alive`]: crate::Reader::writer_alive
    pub fn writer(&self) -> WriterId {
        WriterId(self.slot.owner)
    }

    /// Copies the message into `dst` (which must be exactly [`len`](slice::len) bytes long),
    /// reading every byte of shared memory once.
    ///
    /// Dereferencing a `ReadBuf` views the bytes in place: a process that breaks the pool's
    /// protocol could change them while you read them. Where Writers are not trusted that
    /// far, copy first, then validate and use the copy (see the crate's trust model).
    ///
    /// # Panics
    /// If `dst.len()` differs from the message length.
    ///
    /// # Examples
    /// ```
    /// # use std::time::Duration;
    /// # use shmlink::{PoolConfig, Reader, Writer};
    /// # let name = format!("doc-copyto-{}", std::process::id());
    /// # let reader = Reader::create(&name, PoolConfig::default())?;
    /// # let writer = Writer::connect(&name)?;
    /// # let mut buf = writer.acquire()?;
    /// # buf.extend_from_slice(b"header+payload")?;
    /// # writer.send(buf)?;
    /// let msg = reader.recv_timeout(Duration::from_secs(1))?;
    /// let mut header = [0u8; 7];
    /// let mut copy = vec![0u8; msg.len()];
    /// msg.copy_to(&mut copy);
    /// header.copy_from_slice(&copy[..7]); // validated and used: the same bytes
    /// assert_eq!(&header, b"header+");
    /// # Ok::<(), shmlink::PoolError>(())
    /// ```
    pub fn copy_to(&self, dst: &mut [u8]) {
        assert_eq!(
            dst.len(),
            self.slot.len,
            "copy_to needs a buffer of the message's length"
        );
        self.seg
            .data()
            .copy_out(0, dst)
            .expect("len <= capacity <= mapping (checked when mapped)");
    }

    /// The message copied into a new `Vec`; see [`copy_to`](Self::copy_to).
    pub fn copy_to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.slot.len];
        self.copy_to(&mut v);
        v
    }
}

impl Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the entry is RECEIVED: Writers that follow the protocol do not write the
        // buffer until we release it (when self drops), and `seg` keeps the mapping alive
        // for the borrow. A hostile process can change bytes, never the bounds: slot.len <=
        // capacity <= mapping is checked by the region.
        unsafe { self.seg.data().bytes(0, self.slot.len) }
            .expect("len <= capacity <= mapping (checked when mapped)")
    }
}

impl AsRef<[u8]> for ReadBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl ReadBuf {
    fn release(&self) {
        self.shared.conn.hand_back(Deferred::Release {
            index: self.slot.index,
            generation: self.slot.generation,
        });
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        self.release();
        // After the release: the last ReadBuf of a dropped Reader finishes its stop, which
        // then finds nothing of ours received.
        self.shared.buf_back();
    }
}

impl fmt::Debug for ReadBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadBuf")
            .field("index", &self.slot.index)
            .field("len", &self.slot.len)
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

/// The [`Writer`](crate::Writer) that sent a message, as [`ReadBuf::writer`] names it: one
/// Writer's attachment to the pool (two Writers in one process are two `WriterId`s).
///
/// [`Reader::writer_alive`](crate::Reader::writer_alive) tells whether it is still there.
/// Meaningful only to the Readers of the pool the message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WriterId(pub(super) Member);

impl WriterId {
    /// The Writer's process id, for messages. (It says little across PID namespaces, and
    /// is not what liveness is judged by.)
    pub fn pid(&self) -> u32 {
        self.0.pid
    }
}

/// A buffer a [`Writer`](crate::Writer) holds: derefs (mutably) to its first
/// [`len`](WriteBuf::len) bytes, in place in shared memory. Send it with
/// [`Writer::send`](crate::Writer::send); dropping it unsent puts it back on the free list.
///
/// The bytes beyond the length, exposed by [`set_len`](WriteBuf::set_len) and
/// [`spare_capacity_mut`](WriteBuf::spare_capacity_mut), hold whatever an earlier message
/// left there.
pub struct WriteBuf {
    pub(super) conn: Arc<Conn>,
    pub(super) seg: Arc<Segment>,
    pub(super) slot: Slot,
    pub(super) len: usize,
    pub(super) me: Member,
    pub(super) done: bool,
}

impl WriteBuf {
    /// Bytes in the message.
    #[allow(clippy::len_without_is_empty)] // derefs to a slice, which has is_empty
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes the buffer holds without growing.
    pub fn capacity(&self) -> usize {
        self.slot.capacity
    }

    /// The largest capacity this buffer may grow to (the pool's `max_buffer_size`).
    pub fn max_capacity(&self) -> usize {
        self.conn.max_buffer_size
    }

    /// Sets the message length, growing the buffer if `len` exceeds its capacity.
    ///
    /// Unlike [`Vec::set_len`] this is safe and grows: the bytes up to the capacity are
    /// always initialised (see [`spare_capacity_mut`](Self::spare_capacity_mut)).
    ///
    /// # Errors
    /// As [`WriteBuf::reserve`].
    pub fn set_len(&mut self, len: usize) -> Result<(), PoolError> {
        self.reserve_total(len)?;
        self.len = len;
        Ok(())
    }

    /// Sets the length to 0.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `bytes`, growing the buffer if needed.
    ///
    /// # Errors
    /// As [`WriteBuf::reserve`].
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> Result<(), PoolError> {
        let start = self.len;
        let end = start.checked_add(bytes.len()).ok_or(PoolError::TooLarge {
            requested: usize::MAX,
            max: self.conn.max_buffer_size,
        })?;
        self.set_len(end)?;
        self[start..end].copy_from_slice(bytes);
        Ok(())
    }

    /// Makes room for at least `additional` more bytes after [`len`](Self::len), as
    /// [`Vec::reserve`] does: if the capacity is short, a bigger buffer segment replaces this
    /// one (under the next generation's name), keeping the message's bytes. Grows at least
    /// twofold, up to the pool's `max_buffer_size`.
    ///
    /// # Examples
    /// ```
    /// # use shmlink::{PoolConfig, Reader, Writer};
    /// # let name = format!("doc-reserve-{}", std::process::id());
    /// # let reader = Reader::create(&name, PoolConfig::default())?;
    /// let writer = Writer::connect(&name)?;
    /// let mut buf = writer.acquire()?;
    /// buf.extend_from_slice(b"header")?;
    /// buf.reserve(100_000)?;
    /// assert!(buf.capacity() >= 6 + 100_000);
    /// # Ok::<(), shmlink::PoolError>(())
    /// ```
    ///
    /// # Errors
    /// [`PoolError::TooLarge`] beyond `max_buffer_size`; [`PoolError::NotOwner`] if the
    /// buffer is no longer ours; [`PoolError::Setup`] if the memory cannot be reserved;
    /// [`PoolError::LockHeld`] if another process holds the pool's lock for 5 s (growing
    /// records the bigger buffer in the index).
    pub fn reserve(&mut self, additional: usize) -> Result<(), PoolError> {
        let total = self
            .len
            .checked_add(additional)
            .ok_or(PoolError::TooLarge {
                requested: usize::MAX,
                max: self.conn.max_buffer_size,
            })?;
        self.reserve_total(total)
    }

    /// Makes the capacity at least `capacity` bytes.
    fn reserve_total(&mut self, capacity: usize) -> Result<(), PoolError> {
        if capacity <= self.slot.capacity {
            return Ok(());
        }
        let max = self.conn.max_buffer_size;
        if capacity > max {
            return Err(PoolError::TooLarge {
                requested: capacity,
                max,
            });
        }
        self.grow(capacity.max(self.slot.capacity.saturating_mul(2)).min(max))
    }

    #[cold]
    fn grow(&mut self, capacity: usize) -> Result<(), PoolError> {
        let (i, old_gen) = (self.slot.index, self.slot.generation);
        let new_gen = next_generation(old_gen);
        // Owned (removed when dropped) until the index names it. With the pool's permission:
        // in a pool shared between users, the Reader and the other Writers accept it.
        let mut seg = self.conn.create_buffer(i, new_gen, capacity)?;
        // SAFETY: the old buffer is ALLOCATED to us and the new one is ours alone until the
        // index names it, so no protocol-following process writes either; they are distinct
        // objects, and both views end within this statement.
        unsafe {
            let old = self.seg.data().bytes(0, self.len);
            let new = seg.data().bytes_mut(0, self.len);
            new.zip(old).map(|(new, old)| new.copy_from_slice(old))
        }
        .expect("len <= old capacity < new capacity");
        let recorded = {
            let conn = &self.conn;
            let _g = conn.locked()?;
            let ix = conn.index();
            if ix.hdr.is_retired() {
                // No Reader reads this pool again, and its Reader may be removing its
                // buffers right now: the bigger buffer stays private to this WriteBuf (for a
                // copy-on-send) and is removed with it, so that nothing is left behind.
                false
            } else {
                ix.replace_buffer(i, self.me, old_gen, new_gen, capacity as u64)
                    .map_err(|_| PoolError::NotOwner)?;
                // The Reader owns the pool's buffers: it removes this one when it disposes
                // of it.
                seg.disown();
                true
            }
        };
        let seg = Arc::new(seg);
        if recorded {
            self.conn.remove_buffer(i, old_gen, true);
            if let Some(cell) = self.conn.cache.lock().get_mut(i as usize) {
                *cell = Some(Mapped {
                    generation: new_gen,
                    seg: Arc::clone(&seg),
                });
            }
        }
        // Unrecorded, the generation only keeps a second growth from reusing the name.
        self.slot.generation = new_gen;
        self.seg = seg;
        self.slot.capacity = capacity;
        Ok(())
    }

    /// The unused tail of the buffer, from [`len`](Self::len) to
    /// [`capacity`](Self::capacity), to fill before growing the length with
    /// [`set_len`](Self::set_len), as with [`Vec::spare_capacity_mut`].
    ///
    /// Unlike `Vec`'s, these bytes are initialised (shared memory is zero-filled when it is
    /// created, and later holds whatever an earlier message left), so this is a plain
    /// `&mut [u8]`.
    ///
    /// # Examples
    /// ```
    /// use std::io::Read;
    /// # use shmlink::{PoolConfig, Reader, Writer};
    /// # let name = format!("doc-spare-{}", std::process::id());
    /// # let reader = Reader::create(&name, PoolConfig::default())?;
    /// let writer = Writer::connect(&name)?;
    /// let mut buf = writer.acquire()?;
    /// buf.extend_from_slice(b"head:")?;
    /// // Read straight into the buffer, then count what was read in.
    /// let n = (&b"tail"[..]).read(buf.spare_capacity_mut())?;
    /// let len = buf.len() + n;
    /// buf.set_len(len)?;
    /// assert_eq!(&buf[..], b"head:tail");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spare_capacity_mut(&mut self) -> &mut [u8] {
        // SAFETY: we hold the buffer (ALLOCATED to us), so no protocol-following process
        // touches it; &mut self makes this the only view in this process; `seg` keeps the
        // mapping alive for the borrow.
        unsafe {
            self.seg
                .data()
                .bytes_mut(self.len, self.slot.capacity - self.len)
        }
        .expect("len <= capacity <= mapping (checked when mapped or created)")
    }
}

impl Deref for WriteBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ALLOCATED to us, mapping kept alive by `seg`; see spare_capacity_mut.
        unsafe { self.seg.data().bytes(0, self.len) }.expect("len <= capacity <= mapping")
    }
}

impl DerefMut for WriteBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref; &mut self makes this the only view in this process.
        unsafe { self.seg.data().bytes_mut(0, self.len) }.expect("len <= capacity <= mapping")
    }
}

impl AsRef<[u8]> for WriteBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for WriteBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl std::io::Write for WriteBuf {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = self.conn.max_buffer_size - self.len;
        let n = bytes.len().min(room);
        if n == 0 && !bytes.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "the pool buffer is at max_buffer_size",
            ));
        }
        self.extend_from_slice(&bytes[..n])
            .map_err(std::io::Error::other)?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for WriteBuf {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.conn.hand_back(Deferred::GiveBack {
            index: self.slot.index,
            generation: self.slot.generation,
            owner: self.me,
        });
    }
}

impl fmt::Debug for WriteBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBuf")
            .field("index", &self.slot.index)
            .field("len", &self.len)
            .field("capacity", &self.slot.capacity)
            .finish()
    }
}
