//! [`AsyncReader`] and [`AsyncWriter`]: the pool's waits, moved to one thread per object.
//!
//! Receiving never takes a message on behalf of a future that might be gone: the futures
//! take messages themselves (`try_recv`), and the Reader's thread only waits for the
//! queue's event and wakes the longest-waiting future. Acquiring is the other way round:
//! the Writer's thread acquires for the first waiting future and passes the buffer on if
//! that future was dropped (a buffer is only free space, nothing is lost by releasing it).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{lock, oneshot, spawn_thread, Sender};
use crate::pool::{PoolError, ReadBuf, Reader, SendError, WriteBuf, Writer};

/// While a future waits for a buffer, the Writer's thread waits in steps of at most this
/// long, so that a shorter deadline that came meanwhile, or the object's drop, is seen.
const ACQUIRE_STEP: Duration = Duration::from_millis(50);

// ------------------------------------------------------------------------------ Reader

/// A [`Reader`] for async code: [`recv`](AsyncReader::recv) is a future.
///
/// One thread waits on the pool's queue event for all the futures and wakes the one that
/// has waited longest (FIFO); the future then takes the message itself. So a dropped
/// future loses nothing: a message is taken only by a future that returns it.
///
/// # Examples
/// ```
/// use shmlink::{block_on, AsyncReader, PoolConfig, Reader, Writer};
/// # let name = format!("doc-async-reader-{}", std::process::id());
/// let reader = AsyncReader::new(Reader::create(&name, PoolConfig::default())?)?;
/// let writer = Writer::connect(&name)?; // usually in another process
/// let mut buf = writer.acquire()?;
/// buf.extend_from_slice(b"hello")?;
/// writer.send(buf)?;
/// let msg = block_on(reader.recv())?;
/// assert_eq!(&*msg, b"hello");
/// # Ok::<(), shmlink::PoolError>(())
/// ```
pub struct AsyncReader {
    reader: Arc<Reader>,
    watch: Watch,
}

/// The Reader's thread and what it shares with the futures; dropping it ends the thread.
struct Watch {
    shared: Arc<RecvShared>,
    reader: Arc<Reader>,
    thread: Option<JoinHandle<()>>,
}

struct RecvShared {
    state: Mutex<RecvState>,
    /// The thread waits here while no future waits.
    wake: Condvar,
}

struct RecvState {
    /// Futures waiting for a message, longest-waiting first.
    waiters: VecDeque<Waiter>,
    next_id: u64,
    closed: bool,
    /// Set while the thread waits on the queue event: until when (`Some(None)`: no deadline).
    sleeping: Option<Option<Instant>>,
}

struct Waiter {
    id: u64,
    /// `None` once woken, until the future polls again.
    waker: Option<Waker>,
    deadline: Option<Instant>,
}

impl fmt::Debug for AsyncReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncReader")
            .field("reader", &self.reader)
            .field("waiting", &lock(&self.watch.shared.state).waiters.len())
            .finish()
    }
}

impl AsyncReader {
    /// Wraps `reader` and starts its thread.
    ///
    /// # Errors
    /// [`PoolError::Setup`] if the thread cannot be started.
    pub fn new(reader: Reader) -> Result<AsyncReader, PoolError> {
        let reader = Arc::new(reader);
        let shared = Arc::new(RecvShared {
            state: Mutex::new(RecvState {
                waiters: VecDeque::new(),
                next_id: 0,
                closed: false,
                sleeping: None,
            }),
            wake: Condvar::new(),
        });
        let (sh, r) = (Arc::clone(&shared), Arc::clone(&reader));
        let thread = spawn_thread("shmlink-async-reader".into(), move || sh.run(&r))?;
        Ok(AsyncReader {
            watch: Watch {
                shared,
                reader: Arc::clone(&reader),
                thread: Some(thread),
            },
            reader,
        })
    }

    /// The blocking Reader, for everything else it offers (`stats`, `try_recv`, ...).
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// Stops the thread and gives the Reader back.
    ///
    /// # Examples
    /// ```
    /// use shmlink::{AsyncReader, PoolConfig, Reader};
    /// # let name = format!("doc-async-reader-inner-{}", std::process::id());
    /// let reader = AsyncReader::new(Reader::create(&name, PoolConfig::default())?)?;
    /// let reader: Reader = reader.into_inner(); // blocking from here on
    /// assert!(reader.try_recv()?.is_none());
    /// # Ok::<(), shmlink::PoolError>(())
    /// ```
    pub fn into_inner(self) -> Reader {
        let AsyncReader { reader, watch } = self;
        drop(watch);
        Arc::into_inner(reader).expect("the thread has ended and held the last other handle")
    }

    /// Receives the next message, waiting as long as it takes (as [`Reader::recv`]).
    ///
    /// Cancellation safe: a dropped future has taken no message.
    ///
    /// # Examples
    /// ```
    /// use shmlink::{block_on, AsyncReader, PoolConfig, Reader, Writer};
    /// # let name = format!("doc-async-recv-{}", std::process::id());
    /// let reader = AsyncReader::new(Reader::create(&name, PoolConfig::default())?)?;
    /// # let writer = Writer::connect(&name)?;
    /// # for word in [&b"one"[..], b"two"] {
    /// #     let mut buf = writer.acquire()?;
    /// #     buf.extend_from_slice(word)?;
    /// #     writer.send(buf)?;
    /// # }
    /// block_on(async {
    ///     // e.g. in a task of its own; released when `msg` drops
    ///     while let Ok(msg) = reader.recv().await {
    ///         println!("{} bytes", msg.len());
    ///         # if &*msg == b"two" { break; }
    ///     }
    /// });
    /// # Ok::<(), shmlink::PoolError>(())
    /// ```
    ///
    /// # Errors
    /// As [`Reader::try_recv`]: [`PoolError::Corrupt`], [`PoolError::LockHeld`].
    pub fn recv(&self) -> impl Future<Output = Result<ReadBuf, PoolError>> + Send + '_ {
        Recv {
            r: self,
            deadline: None,
            id: None,
        }
    }

    /// As [`recv`](AsyncReader::recv), waiting at most `timeout` (from the first poll).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use shmlink::{block_on, AsyncReader, PoolConfig, PoolError, Reader};
    /// # let name = format!("doc-async-recv-timeout-{}", std::process::id());
    /// let reader = AsyncReader::new(Reader::create(&name, PoolConfig::default())?)?;
    /// let r = block_on(reader.recv_timeout(Duration::from_millis(10)));
    /// assert!(matches!(r, Err(PoolError::Timeout)));
    /// # Ok::<(), shmlink::PoolError>(())
    /// ```
    ///
    /// # Errors
    /// [`PoolError::Timeout`] if no message came in time; otherwise as
    /// [`recv`](AsyncReader::recv).
    pub fn recv_timeout(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<ReadBuf, PoolError>> + Send + '_ {
        let mut first = true;
        let mut recv = Recv {
            r: self,
            deadline: None,
            id: None,
        };
        std::future::poll_fn(move |cx| {
            if first {
                first = false;
                recv.deadline = Instant::now().checked_add(timeout);
            }
            Pin::new(&mut recv).poll(cx)
        })
    }
}

/// The future of [`AsyncReader::recv`].
struct Recv<'a> {
    r: &'a AsyncReader,
    deadline: Option<Instant>,
    /// Its place in the waiters, once it waited.
    id: Option<u64>,
}

impl Future for Recv<'_> {
    type Output = Result<ReadBuf, PoolError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // Register before looking, so that a message queued after the look wakes us.
        this.register(cx.waker());
        let r = match this.r.reader.try_recv() {
            Ok(Some(buf)) => Ok(buf),
            Ok(None) if this.deadline.is_some_and(|d| Instant::now() >= d) => {
                Err(PoolError::Timeout)
            }
            Ok(None) => return Poll::Pending,
            Err(e) => Err(e),
        };
        this.unregister();
        Poll::Ready(r)
    }
}

impl Recv<'_> {
    fn register(&mut self, waker: &Waker) {
        let sh = &self.r.watch.shared;
        let mut st = lock(&sh.state);
        let found = self
            .id
            .and_then(|id| st.waiters.iter_mut().find(|w| w.id == id));
        match found {
            Some(w) => match &mut w.waker {
                Some(old) if old.will_wake(waker) => {}
                slot => *slot = Some(waker.clone()),
            },
            None => {
                let id = st.next_id;
                st.next_id += 1;
                self.id = Some(id);
                st.waiters.push_back(Waiter {
                    id,
                    waker: Some(waker.clone()),
                    deadline: self.deadline,
                });
            }
        }
        match st.sleeping {
            // The thread waits for futures: tell it.
            None => sh.wake.notify_one(),
            // It waits on the queue until later than our deadline: make it look again.
            Some(until) if self.deadline.is_some_and(|d| until.is_none_or(|u| d < u)) => {
                st.sleeping = Some(self.deadline);
                drop(st);
                self.r.reader.signal_queue();
            }
            Some(_) => {}
        }
    }

    /// Leaves the waiters. Returns whether this future had been woken and not polled since.
    fn unregister(&mut self) -> bool {
        let Some(id) = self.id.take() else {
            return false;
        };
        let mut st = lock(&self.r.watch.shared.state);
        let at = st.waiters.iter().position(|w| w.id == id);
        at.and_then(|i| st.waiters.remove(i))
            .is_some_and(|w| w.waker.is_none())
    }
}

impl Drop for Recv<'_> {
    fn drop(&mut self) {
        if self.unregister() {
            // Woken for a message it will not take: pass the wake on to the next future.
            self.r.reader.signal_queue();
        }
    }
}

impl RecvShared {
    /// The Reader's thread: while futures wait, waits on the queue event (until the
    /// earliest deadline) and wakes the longest-waiting future.
    fn run(&self, reader: &Reader) {
        let mut st = lock(&self.state);
        loop {
            if st.closed {
                return;
            }
            if st.waiters.is_empty() {
                st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let until = st.waiters.iter().filter_map(|w| w.deadline).min();
            st.sleeping = Some(until);
            drop(st);
            let signalled = reader.wait_queue_signal(until);
            st = lock(&self.state);
            st.sleeping = None;
            let now = Instant::now();
            let mut wake = Vec::new();
            if signalled {
                wake.extend(st.waiters.iter_mut().find_map(|w| w.waker.take()));
            }
            for w in st.waiters.iter_mut() {
                if w.deadline.is_some_and(|d| d <= now) {
                    wake.extend(w.waker.take());
                }
            }
            if !wake.is_empty() {
                drop(st);
                wake.into_iter().for_each(Waker::wake);
                st = lock(&self.state);
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut st = lock(&self.shared.state);
        st.closed = true;
        let sleeping = st.sleeping.is_some();
        drop(st);
        self.shared.wake.notify_all();
        if sleeping {
            self.reader.signal_queue();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------------------------------------ Writer

/// A [`Writer`] for async code: [`acquire`](AsyncWriter::acquire) is a future that waits
/// while the pool is full.
///
/// A buffer free at the first poll is taken at once, on the polling thread. Otherwise the
/// future waits in a FIFO queue, and one thread acquires buffers (as
/// [`Writer::acquire_timeout`] does, in steps of at most 50 ms) and hands each to the
/// longest-waiting future. A buffer whose future was dropped goes to the next one, or back
/// to the pool. Sending does not wait ([`send`](AsyncWriter::send)).
///
/// # Examples
/// ```
/// use shmlink::{block_on, AsyncWriter, PoolConfig, Reader, Writer};
/// # let name = format!("doc-async-writer-{}", std::process::id());
/// # let reader = Reader::create(&name, PoolConfig::default())?;
/// let writer = AsyncWriter::new(Writer::connect(&name)?)?;
/// block_on(async {
///     let mut buf = writer.acquire().await?;
///     buf.extend_from_slice(b"hello")?;
///     writer.send(buf)?;
///     Ok::<(), shmlink::PoolError>(())
/// })?;
/// # assert_eq!(&*reader.recv()?, b"hello");
/// # Ok::<(), shmlink::PoolError>(())
/// ```
pub struct AsyncWriter {
    writer: Arc<Writer>,
    thread: Acquirer,
}

/// The Writer's thread and its queue; dropping it ends the thread.
struct Acquirer {
    shared: Arc<AcqShared>,
    thread: Option<JoinHandle<()>>,
}

struct AcqShared {
    state: Mutex<AcqState>,
    /// The thread waits here while no future waits.
    wake: Condvar,
}

struct AcqState {
    waiting: VecDeque<Request>,
    closed: bool,
}

/// One future waiting for a buffer.
struct Request {
    deadline: Option<Instant>,
    reply: Sender<Result<WriteBuf, PoolError>>,
}

impl fmt::Debug for AsyncWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncWriter")
            .field("writer", &self.writer)
            .field("waiting", &lock(&self.thread.shared.state).waiting.len())
            .finish()
    }
}

impl AsyncWriter {
    /// Wraps `writer` and starts its thread.
    ///
    /// # Errors
    /// [`PoolError::Setup`] if the thread cannot be started.
    pub fn new(writer: Writer) -> Result<AsyncWriter, PoolError> {
        let writer = Arc::new(writer);
        let shared = Arc::new(AcqShared {
            state: Mutex::new(AcqState {
                waiting: VecDeque::new(),
                closed: false,
            }),
            wake: Condvar::new(),
        });
        let (sh, w) = (Arc::clone(&shared), Arc::clone(&writer));
        let thread = spawn_thread("shmlink-async-writer".into(), move || sh.run(&w))?;
        Ok(AsyncWriter {
            writer,
            thread: Acquirer {
                shared,
                thread: Some(thread),
            },
        })
    }

    /// The blocking Writer, for everything else it offers (`stats`, `send_timeout`, ...).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Stops the thread and gives the Writer back.
    ///
    /// # Examples
    /// ```
    /// use shmlink::{AsyncWriter, PoolConfig, Reader, Writer};
    /// # let name = format!("doc-async-writer-inner-{}", std::process::id());
    /// # let reader = Reader::create(&name, PoolConfig::default())?;
    /// let writer = AsyncWriter::new(Writer::connect(&name)?)?;
    /// let writer: Writer = writer.into_inner(); // blocking from here on
    /// drop(writer.acquire()?);
    /// # Ok::<(), shmlink::PoolError>(())
    /// ```
    pub fn into_inner(self) -> Writer {
        let AsyncWriter { writer, thread } = self;
        drop(thread);
        Arc::into_inner(writer).expect("the thread has ended and held the last other handle")
    }

    /// Acquires a free buffer (length 0), waiting as long as it takes, as
    /// [`Writer::acquire`] does.
    ///
    /// Cancellation safe: a buffer acquired for a dropped future goes to the next waiting
    /// future or back to the pool.
    ///
    /// # Examples
    /// ```
    /// use std::io::Write;
    /// use shmlink::{block_on, AsyncWriter, PoolConfig, Reader, Writer};
    /// # let name = format!("doc-async-acquire-{}", std::process::id());
    /// # let reader = Reader::create(&name, PoolConfig::default())?;
    /// let writer = AsyncWriter::new(Writer::connect(&name)?)?;
    /// block_on(async {
    ///     for i in 0..3 {
    ///         let mut buf = writer.acquire().await?; // waits while the pool is full
    ///         write!(buf, "frame {i}")?;
    ///         writer.send(buf)?;
    ///     }
    ///     Ok::<(), Box<dyn std::error::Error>>(())
    /// })?;
    /// # for i in 0..3 { assert_eq!(&*reader.recv()?, format!("frame {i}").as_bytes()); }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Writer::acquire`]: [`PoolError::NoReader`] (within about 100 ms of the Reader's
    /// end, while waiting too), [`PoolError::Corrupt`], [`PoolError::Setup`].
    pub async fn acquire(&self) -> Result<WriteBuf, PoolError> {
        self.acquire_until(None).await
    }

    /// As [`acquire`](AsyncWriter::acquire), waiting at most `timeout` (from the first
    /// poll).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use shmlink::{block_on, AsyncWriter, PoolConfig, PoolError, Reader, Writer};
    /// # let name = format!("doc-async-acquire-timeout-{}", std::process::id());
    /// let config = PoolConfig {
    ///     start_buffers: 1,
    ///     max_buffers: 1,
    ///     min_buffers: Some(1),
    ///     resize_threshold: 0,
    ///     ..PoolConfig::default()
    /// };
    /// # let reader = Reader::create(&name, config)?;
    /// let writer = AsyncWriter::new(Writer::connect(&name)?)?;
    /// let held = block_on(writer.acquire())?;            // the only buffer
    /// let r = block_on(writer.acquire_timeout(Duration::from_millis(20)));
    /// assert!(matches!(r, Err(PoolError::PoolFull)));
    /// drop(held);
    /// # Ok::<(), shmlink::PoolError>(())
    /// ```
    ///
    /// # Errors
    /// [`PoolError::PoolFull`] (or [`PoolError::NoSpace`]) when the time is up; otherwise as
    /// [`acquire`](AsyncWriter::acquire).
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<WriteBuf, PoolError> {
        self.acquire_until(Instant::now().checked_add(timeout))
            .await
    }

    async fn acquire_until(&self, deadline: Option<Instant>) -> Result<WriteBuf, PoolError> {
        let sh = &self.thread.shared;
        // A buffer free now is taken without a thread hop, unless futures queue before us.
        if lock(&sh.state).waiting.is_empty() {
            match self.writer.acquire_timeout(Duration::ZERO) {
                Err(PoolError::PoolFull | PoolError::NoSpace) => {}
                r => return r,
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(PoolError::PoolFull);
        }
        let (reply, rx) = oneshot();
        lock(&sh.state)
            .waiting
            .push_back(Request { deadline, reply });
        sh.wake.notify_one();
        // The thread answers every request before it ends (it outlives every future).
        rx.await.unwrap_or_else(|| {
            Err(PoolError::Setup(crate::Error::Os {
                op: "async writer thread",
                name: String::new(),
                source: std::io::Error::other("the thread ended"),
            }))
        })
    }

    /// Sends `buf`, as [`Writer::send`] (which does not wait, except for a copy-on-send
    /// after a Reader restart; see there).
    ///
    /// # Errors
    /// As [`Writer::send`]: the buffer comes back in the [`SendError`].
    pub fn send(&self, buf: WriteBuf) -> Result<(), SendError> {
        self.writer.send(buf)
    }
}

impl AcqShared {
    /// The Writer's thread: acquires buffers for the waiting futures, in order.
    fn run(&self, writer: &Writer) {
        // Whether the last step ended for want of shared memory (then timeouts say so).
        let mut no_space = false;
        loop {
            let mut st = lock(&self.state);
            let (expired, until) = loop {
                if st.closed {
                    return;
                }
                let now = Instant::now();
                let mut expired = Vec::new();
                let mut i = 0;
                while i < st.waiting.len() {
                    let r = &st.waiting[i];
                    if r.reply.is_cancelled() {
                        drop(st.waiting.remove(i));
                    } else if r.deadline.is_some_and(|d| d <= now) {
                        expired.extend(st.waiting.remove(i));
                    } else {
                        i += 1;
                    }
                }
                if !expired.is_empty() || !st.waiting.is_empty() {
                    let first = st.waiting.iter().filter_map(|r| r.deadline).min();
                    let step = now + ACQUIRE_STEP;
                    break (expired, first.map_or(step, |d| d.min(step)));
                }
                st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            };
            let none_waiting = st.waiting.is_empty();
            drop(st);
            for r in expired {
                let e = if no_space {
                    PoolError::NoSpace
                } else {
                    PoolError::PoolFull
                };
                let _ = r.reply.send(Err(e));
            }
            if none_waiting {
                continue;
            }
            match writer.acquire_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(buf) => self.hand_out(buf),
                Err(PoolError::PoolFull) => no_space = false,
                Err(PoolError::NoSpace) => no_space = true,
                Err(e) => {
                    // For the first future; the others try again themselves.
                    let first = lock(&self.state).waiting.pop_front();
                    if let Some(r) = first {
                        let _ = r.reply.send(Err(e));
                    }
                }
            }
        }
    }

    /// Gives `buf` to the longest-waiting future still there; with none, drops it (back to
    /// the free list).
    fn hand_out(&self, mut buf: WriteBuf) {
        loop {
            let Some(r) = lock(&self.state).waiting.pop_front() else {
                return;
            };
            match r.reply.send(Ok(buf)) {
                Err(Ok(back)) => buf = back,
                _ => return,
            }
        }
    }
}

impl Drop for Acquirer {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_pool_ends_are_send_sync_and_their_futures_send() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        let (r, w): (Option<AsyncReader>, Option<AsyncWriter>) = (None, None);
        if let (Some(r), Some(w)) = (&r, &w) {
            send_sync(r);
            send_sync(w);
            send(&r.recv());
            send(&r.recv_timeout(Duration::ZERO));
            send(&w.acquire());
            send(&w.acquire_timeout(Duration::ZERO));
        }
    }
}
