//! The serving side: builder, workers, graceful shutdown.

use std::fmt;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::ring::Ring;
use super::slot::{
    Layout, Mapped, IN_SERVICE, KIND_VERSION, MAX_MESSAGE_LIMIT, MAX_SLOTS, REQUEST_READY,
    RESPONSE_READY, STATUS_BAD_LENGTH, STATUS_OK, STATUS_PANICKED, STATUS_REFUSED,
};
use super::CallError;
use crate::segment::{Segment, SegmentKind, DEFAULT_MODE};
use crate::sync::atomic::{fence, prefetch_read, prefetch_write, AtomicBool, AtomicU32, Ordering};
use crate::sync::{Event, Mutex, WaitOutcome, WaitStrategy};

/// How often an idle worker wakes up to look for requests whose ring entry was lost and to
/// repair a ring that stopped moving.
const TICK: Duration = Duration::from_millis(50);

/// How many polls of a spinning worker between looks at whether the ring's head entry is
/// claimed but unpublished (that look reads the clients' enqueue position, whose cache line
/// would otherwise stay with them).
const STUCK_CHECK: u32 = 64;

/// Threading model marker: one worker, handler `FnMut` (calls are serialised).
#[derive(Debug, Clone, Copy)]
pub struct Single;

/// Threading model marker: several workers share one `Fn + Send + Sync` handler.
#[derive(Debug, Clone, Copy)]
pub struct Free;

/// Options for a [`Server`]; see [`Server::builder`].
///
/// The builder starts in the [`Single`] model (one worker, `FnMut` handler);
/// [`workers`](ServerBuilder::workers) switches to the [`Free`] model.
pub struct ServerBuilder<M = Single> {
    name: String,
    slots: u32,
    max_message: usize,
    workers: usize,
    strategy: WaitStrategy,
    mode: u32,
    _model: PhantomData<M>,
}

impl<M> fmt::Debug for ServerBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("name", &self.name)
            .field("slots", &self.slots)
            .field("max_message", &self.max_message)
            .field("workers", &self.workers)
            .field("strategy", &self.strategy)
            .finish()
    }
}

impl<M> ServerBuilder<M> {
    /// Most clients connected at once (default 32). Each client owns one slot.
    ///
    /// # Panics
    /// If `slots` is 0 or more than 65536.
    pub fn slots(mut self, slots: u32) -> Self {
        assert!(
            slots > 0 && slots <= MAX_SLOTS,
            "slots must be in 1..={MAX_SLOTS}"
        );
        self.slots = slots;
        self
    }

    /// Largest request and largest response in bytes (default 64 KiB). Every slot reserves
    /// this much shared memory each way.
    ///
    /// # Panics
    /// If `bytes` is 0 or more than 1 GiB.
    pub fn max_message(mut self, bytes: usize) -> Self {
        assert!(
            bytes > 0 && bytes <= MAX_MESSAGE_LIMIT,
            "max_message must be in 1..={MAX_MESSAGE_LIMIT}"
        );
        self.max_message = bytes;
        self
    }

    /// How the workers wait for requests (default [`WaitStrategy::Adaptive`]: spin briefly,
    /// then sleep, so idle workers cost no CPU).
    pub fn wait_strategy(mut self, strategy: WaitStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Permission bits of the channel segment on POSIX (default `0o600`: owner only).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Serves with `k` worker threads sharing one `Fn + Send + Sync` handler (the [`Free`]
    /// model): any free worker serves any client.
    ///
    /// # Panics
    /// If `k` is 0.
    pub fn workers(self, k: usize) -> ServerBuilder<Free> {
        assert!(k > 0, "at least one worker");
        ServerBuilder {
            name: self.name,
            slots: self.slots,
            max_message: self.max_message,
            workers: k,
            strategy: self.strategy,
            mode: self.mode,
            _model: PhantomData,
        }
    }

    /// Creates the channel segment and publishes it: clients can connect from now on (their
    /// calls wait until the server serves).
    ///
    /// # Errors
    /// [`CallError::AlreadyRunning`] if a live server owns the name (a dead server's segment
    /// is removed and replaced); [`CallError::Setup`] for a bad name or an OS failure.
    pub fn create(self) -> Result<Server<M>, CallError> {
        let layout = Layout::new(self.slots, self.max_message).expect("checked by the builder");
        let seg = Arc::new(
            Segment::builder(&self.name)
                .tag("chan")
                .kind(SegmentKind::Channel, KIND_VERSION)
                .size(layout.total)
                .mode(self.mode)
                .create_unpublished()?,
        );
        // SAFETY: the segment's data region is layout.total bytes.
        let map = unsafe { Mapped::new(Arc::clone(&seg), layout) };
        let config = map.config_ptr();
        // SAFETY: unpublished: nobody else reads the config yet; it lies in the data region.
        unsafe {
            (*config).slots = layout.slots;
            (*config).max_message = layout.max_message as u32;
        }
        // SAFETY: the offsets come from the layout: disjoint, 64-aligned, inside the data
        // region, used for nothing else, and the segment is not published yet.
        let (mutex, bell, ring) = unsafe {
            (
                Mutex::init_at(&seg, layout.mutex)?,
                Event::init_at(&seg, layout.doorbell)?,
                Ring::init(map.ring_ptr(), layout.ring_cap),
            )
        };
        let done = (0..layout.slots)
            .map(|i| {
                // SAFETY: as above, slot i's done event.
                unsafe { Event::init_at(&seg, layout.done_event(i)) }
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Slots start zero-filled: FREE, no owner.
        seg.publish();
        let core = Core {
            map,
            ring,
            bell,
            done,
            _mutex: mutex,
            stop: AtomicBool::new(false),
            strategy: self.strategy,
            workers: self.workers,
            scan_from: AtomicU32::new(0),
        };
        Ok(Server {
            core: Arc::new(core),
            _model: PhantomData,
        })
    }
}

/// The serving end of a request channel.
///
/// Create one with [`Server::builder`], then serve with [`serve`](Server::serve) (blocking),
/// [`spawn`](Server::spawn) (background threads, with a handle to shut down), or
/// [`poll`](Server::poll) from a loop of your own.
///
/// The handler gets the request bytes and the response buffer (`max_message` bytes, both in
/// shared memory), writes the response at the start of the buffer and returns its length.
/// A handler that panics (or returns more than the buffer's length) fails that call with
/// [`CallError::HandlerPanicked`]; the server keeps serving.
///
/// # Examples
/// ```
/// use shmlink::{Client, Server};
/// # let name = format!("doc-server-{}", std::process::id());
/// let server = Server::builder(&name).slots(8).max_message(4096).workers(2).create()?;
/// let handle = server.spawn(|req: &[u8], resp: &mut [u8]| {
///     let n = req.len();
///     resp[..n].copy_from_slice(req);
///     resp[..n].make_ascii_uppercase();
///     n
/// })?;
/// let mut client = Client::connect(&name)?;
/// assert_eq!(client.call(b"hello")?, b"HELLO");
/// handle.shutdown();
/// # Ok::<(), shmlink::CallError>(())
/// ```
pub struct Server<M = Single> {
    core: Arc<Core>,
    _model: PhantomData<M>,
}

impl<M> fmt::Debug for Server<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.core.map.seg.name())
            .field("layout", &self.core.map.layout)
            .field("workers", &self.core.workers)
            .finish()
    }
}

impl Server<Single> {
    /// Starts building a server for `name`: 32 slots, 64 KiB messages, one worker
    /// ([`Single`] model), [`WaitStrategy::Adaptive`].
    ///
    /// # Examples
    /// ```
    /// use shmlink::{Server, WaitStrategy};
    /// # let name = format!("doc-builder-{}", std::process::id());
    /// // 4 workers share an `Fn + Send + Sync` handler (the "free" model).
    /// let server = Server::builder(&name)
    ///     .slots(16)
    ///     .max_message(4096)
    ///     .wait_strategy(WaitStrategy::Adaptive)
    ///     .workers(4)
    ///     .create()?;
    /// assert_eq!(server.slots(), 16);
    /// # Ok::<(), shmlink::CallError>(())
    /// ```
    pub fn builder(name: &str) -> ServerBuilder<Single> {
        ServerBuilder {
            name: name.to_owned(),
            slots: 32,
            max_message: 64 * 1024,
            workers: 1,
            strategy: WaitStrategy::Adaptive,
            mode: DEFAULT_MODE,
            _model: PhantomData,
        }
    }

    /// Serves on the calling thread until [`shutdown_handle`](Server::shutdown_handle)'s
    /// `shutdown` is called; then answers what is in flight, refuses what comes later, and
    /// removes the channel.
    ///
    /// # Examples
    /// ```no_run
    /// # let server = shmlink::Server::builder("echo").create()?;
    /// let mut calls = 0u64;
    /// server.serve(move |req: &[u8], resp: &mut [u8]| {
    ///     calls += 1; // FnMut: calls are serialised
    ///     resp[..req.len()].copy_from_slice(req);
    ///     req.len()
    /// });
    /// # Ok::<(), shmlink::CallError>(())
    /// ```
    pub fn serve<H: FnMut(&[u8], &mut [u8]) -> usize>(self, mut handler: H) {
        self.core.run_worker(&mut handler);
        self.core.finish();
    }

    /// Serves on a background thread; the handle shuts it down.
    ///
    /// # Errors
    /// [`CallError::Setup`] if the thread cannot be started.
    pub fn spawn<H: FnMut(&[u8], &mut [u8]) -> usize + Send + 'static>(
        self,
        mut handler: H,
    ) -> Result<ServerHandle, CallError> {
        let core = Arc::clone(&self.core);
        let t = spawn_worker(0, move || core.run_worker(&mut handler))?;
        Ok(ServerHandle {
            core: Arc::clone(&self.core),
            threads: vec![t],
        })
    }
}

impl Server<Free> {
    /// Serves with the configured number of worker threads until
    /// [`shutdown_handle`](Server::shutdown_handle)'s `shutdown` is called; then answers what
    /// is in flight, refuses what comes later, and removes the channel.
    pub fn serve<H: Fn(&[u8], &mut [u8]) -> usize + Send + Sync>(self, handler: H) {
        std::thread::scope(|s| {
            for _ in 1..self.core.workers {
                s.spawn(|| {
                    self.core
                        .run_worker(&mut |req: &[u8], resp: &mut [u8]| handler(req, resp))
                });
            }
            self.core
                .run_worker(&mut |req: &[u8], resp: &mut [u8]| handler(req, resp));
        });
        self.core.finish();
    }

    /// Serves with the configured number of worker threads in the background; the handle
    /// shuts them down.
    ///
    /// # Errors
    /// [`CallError::Setup`] if a thread cannot be started (those started are stopped).
    pub fn spawn<H: Fn(&[u8], &mut [u8]) -> usize + Send + Sync + 'static>(
        self,
        handler: H,
    ) -> Result<ServerHandle, CallError> {
        let handler = Arc::new(handler);
        let mut handle = ServerHandle {
            core: Arc::clone(&self.core),
            threads: Vec::new(),
        };
        for i in 0..self.core.workers {
            let (core, handler) = (Arc::clone(&self.core), Arc::clone(&handler));
            // On error `handle` drops, which stops the workers already started.
            handle.threads.push(spawn_worker(i, move || {
                core.run_worker(&mut |req: &[u8], resp: &mut [u8]| handler(req, resp))
            })?);
        }
        Ok(handle)
    }
}

fn spawn_worker(i: usize, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, CallError> {
    std::thread::Builder::new()
        .name(format!("shmlink-worker-{i}"))
        .spawn(f)
        .map_err(|e| {
            CallError::Setup(crate::Error::Os {
                op: "spawn worker thread",
                name: String::new(),
                source: e,
            })
        })
}

impl<M> Server<M> {
    /// The service name.
    pub fn name(&self) -> &str {
        self.core.map.seg.name()
    }

    /// Largest request / response in bytes.
    pub fn max_message(&self) -> usize {
        self.core.map.layout.max_message
    }

    /// Number of slots (most clients connected at once).
    pub fn slots(&self) -> u32 {
        self.core.map.layout.slots
    }

    /// A handle that stops [`serve`](Server::serve) from another thread (or a signal
    /// handler's helper thread).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            core: Arc::downgrade(&self.core),
        }
    }

    /// One step for callers with their own loop: serves every request that is ready; if none
    /// is, waits at most `timeout` for one and serves what came. Returns how many calls were
    /// answered.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// # let name = format!("doc-poll-{}", std::process::id());
    /// let server = shmlink::Server::builder(&name).create()?;
    /// let mut echo = |req: &[u8], resp: &mut [u8]| {
    ///     resp[..req.len()].copy_from_slice(req);
    ///     req.len()
    /// };
    /// loop {
    ///     let _served = server.poll(&mut echo, Duration::from_millis(10));
    ///     // ... other work of this loop ...
    ///     # break;
    /// }
    /// # Ok::<(), shmlink::CallError>(())
    /// ```
    pub fn poll<H: FnMut(&[u8], &mut [u8]) -> usize>(
        &self,
        handler: &mut H,
        timeout: Duration,
    ) -> usize {
        let n = self.core.serve_available(handler, false, false);
        if n > 0 {
            return n;
        }
        let mut work = false;
        self.core.bell.wait_for(
            |_| {
                work = self.core.work_waiting();
                work
            },
            Some(Instant::now() + timeout),
            None,
        );
        // Scan the slots unless the ring showed work: after a signal with an empty ring (an
        // entry lost), and after a quiet timeout.
        self.core.serve_available(handler, !work, false)
    }
}

/// Stops a server that runs [`Server::serve`]; cheap to clone and send to another thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    /// Weak: a forgotten handle must not keep the channel (and its name) alive.
    core: Weak<Core>,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown: clients get [`CallError::ShuttingDown`] for new calls, the
    /// workers answer what is in flight, then `serve` returns. Does not wait.
    pub fn shutdown(&self) {
        if let Some(core) = self.core.upgrade() {
            core.request_stop();
        }
    }
}

/// The workers started by [`Server::spawn`]. Dropping it shuts the server down gracefully.
#[derive(Debug)]
pub struct ServerHandle {
    core: Arc<Core>,
    threads: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// Gracefully stops the server: new calls get [`CallError::ShuttingDown`], calls in flight
    /// are answered, then the workers stop and the channel is removed. Waits for all that.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    /// A handle to start the shutdown from elsewhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            core: Arc::downgrade(&self.core),
        }
    }

    /// The service name.
    pub fn name(&self) -> &str {
        self.core.map.seg.name()
    }

    fn stop_and_join(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.core.request_stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.core.finish();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// What the workers share.
struct Core {
    map: Mapped,
    ring: Ring,
    /// The doorbell, for setting (each worker waits on a handle of its own).
    bell: Event,
    /// Slot `i`'s done event.
    done: Vec<Event>,
    _mutex: Mutex,
    /// Local stop request (the shared `shutting_down` flag is only advice to clients).
    stop: AtomicBool,
    strategy: WaitStrategy,
    workers: usize,
    /// Where the next slot scan starts (round robin, so no slot is always last).
    scan_from: AtomicU32,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("name", &self.map.seg.name())
            .finish_non_exhaustive()
    }
}

impl Core {
    fn request_stop(&self) {
        self.map.flags().shutting_down.store(1, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        self.bell.set();
    }

    /// One worker: drain the ring, wait on the doorbell, repeat; after a stop request, serve
    /// what is left and return.
    fn run_worker(&self, handler: &mut dyn FnMut(&[u8], &mut [u8]) -> usize) {
        // SAFETY: the doorbell was initialised at this offset before publishing.
        let bell = match unsafe { Event::open_at(&self.map.seg, self.map.layout.doorbell) } {
            Ok(bell) => bell.with_strategy(self.strategy),
            Err(_) => return,
        };
        let mut scan = true;
        let sole = self.workers == 1;
        let mut last_deq = self.ring.dequeue_pos();
        // The tick's deadline is refreshed only when it passes: no clock read per request.
        let mut tick_at = Instant::now() + TICK;
        loop {
            let n = self.serve_available(handler, scan, sole);
            if self.stop.load(Ordering::Acquire) {
                // Drain: whatever was submitted before the flag is answered.
                while self.serve_available(handler, true, sole) > 0 {}
                self.bell.set(); // pass the wake-up on to the next worker
                return;
            }
            scan = false;
            if n > 0 {
                continue;
            }
            // Spin on the ring's next cell (or sleep until a client notifies the bell). No
            // liveness check: `request_stop` rings the bell, and each stopping worker rings
            // it again for the next, so an idle worker wakes only once per TICK.
            let (mut work, mut stuck, mut polls) = (false, false, 0u32);
            let outcome = bell.wait_for(
                |thorough| {
                    work = self.work_waiting();
                    polls = polls.wrapping_add(1);
                    // Always on the rare looks before a sleep: a client that pushed behind the
                    // stuck head while we were not yet registered as asleep did not wake us.
                    if !work
                        && (thorough || polls % STUCK_CHECK == 0)
                        && self.ring.head_unpublished()
                    {
                        // A client was preempted (or died) between claiming its ring cell
                        // and publishing it: whoever pushed after it waits behind it.
                        stuck = true;
                    }
                    work || stuck
                },
                Some(tick_at),
                None,
            );
            match outcome {
                WaitOutcome::Set if stuck => scan = true,
                WaitOutcome::Set if work => {}
                // Rung, yet the ring looked empty (an entry lost to a dead or broken client,
                // or stuck behind one): look at the slots themselves.
                WaitOutcome::Set => scan = true,
                WaitOutcome::Aborted => {}
                WaitOutcome::TimedOut => {
                    scan = true;
                    tick_at = Instant::now() + TICK;
                    if self.ring.dequeue_pos() == last_deq {
                        // No entry came out for a whole tick: if one was claimed and never
                        // published (its producer died mid-push), skip it; the scan finds
                        // what waited behind it.
                        self.ring.skip_stuck();
                    }
                    last_deq = self.ring.dequeue_pos();
                }
            }
        }
    }

    /// What a waiting worker spins on: the ring's next entry is published, or a stop or a
    /// slot scan is asked for. Reads no line a client writes unless there is work.
    fn work_waiting(&self) -> bool {
        if let Some(i) = self.ring.peek() {
            // Its lines then travel while the worker returns from its wait and pops.
            self.prefetch_slot(i);
            return true;
        }
        self.stop.load(Ordering::Relaxed) || self.map.flags().need_scan.load(Ordering::Relaxed) != 0
    }

    /// Starts fetching the lines serving slot `i` touches (its client wrote them last), all at
    /// once rather than one after another. `i` is untrusted: out of range, nothing happens.
    #[inline]
    fn prefetch_slot(&self, i: u32) {
        if i < self.map.layout.slots {
            prefetch_write(self.map.slot(i));
            prefetch_read(self.map.request(i));
            prefetch_write(self.map.response(i));
        }
    }

    /// Serves everything the ring holds; if it held nothing and a scan is asked for (by the
    /// caller, or by a client whose push failed), scans the slots. Returns how many requests
    /// were answered.
    ///
    /// `sole_consumer`: see [`Ring::pop`] (true only for the one worker of a one-worker
    /// server; `poll` may be called from several threads).
    fn serve_available(
        &self,
        handler: &mut dyn FnMut(&[u8], &mut [u8]) -> usize,
        force_scan: bool,
        sole_consumer: bool,
    ) -> usize {
        let mut n = 0;
        while let Some(i) = self.ring.pop(sole_consumer) {
            if self.workers > 1 && self.ring.has_more() {
                self.bell.notify(); // let another worker take the next one meanwhile
            }
            n += usize::from(self.serve_slot(i, handler, false));
        }
        if n == 0 {
            let flags = self.map.flags();
            let asked = flags.need_scan.load(Ordering::Relaxed) != 0
                && flags.need_scan.swap(0, Ordering::AcqRel) != 0;
            // (Not `ring.looks_nonempty()`: reading the clients' enqueue position here would
            // pull its cache line away from them on every round trip.)
            if force_scan || asked {
                n += self.scan(handler, false);
            }
        }
        n
    }

    /// Serves every slot found in `REQUEST_READY` (ground truth when ring entries were lost).
    fn scan(&self, handler: &mut dyn FnMut(&[u8], &mut [u8]) -> usize, refuse: bool) -> usize {
        let slots = self.map.layout.slots;
        let start = self.scan_from.fetch_add(1, Ordering::Relaxed) % slots;
        let mut n = 0;
        for k in 0..slots {
            let i = (start + k) % slots;
            if self.map.slot(i).state.load(Ordering::Relaxed) == REQUEST_READY {
                n += usize::from(self.serve_slot(i, handler, refuse));
            }
        }
        n
    }

    /// Serves slot `i` if it really holds a request (the number is untrusted). With `refuse`,
    /// answers [`STATUS_REFUSED`] without running the handler.
    fn serve_slot(
        &self,
        i: u32,
        handler: &mut dyn FnMut(&[u8], &mut [u8]) -> usize,
        refuse: bool,
    ) -> bool {
        let layout = &self.map.layout;
        if i >= layout.slots {
            return false; // bogus ring entry
        }
        let slot = self.map.slot(i);
        self.prefetch_slot(i);
        if slot
            .state
            .compare_exchange(
                REQUEST_READY,
                IN_SERVICE,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false; // stale, duplicated or forged entry
        }
        let seq = slot.seq.load(Ordering::Relaxed);
        let len = slot.req_len.load(Ordering::Relaxed) as usize;
        let max = layout.max_message;
        let (status, out) = if len > max {
            (STATUS_BAD_LENGTH, 0)
        } else if refuse {
            (STATUS_REFUSED, 0)
        } else {
            // SAFETY: i < slots and len <= max_message, so both ranges lie in slot i's byte
            // areas, which do not overlap. In IN_SERVICE the slot's bytes are ours by
            // protocol; a misbehaving client can still write them concurrently, which can
            // only garble its own call (u8 has no invalid values, lengths are rechecked).
            let (req, resp) = unsafe {
                (
                    std::slice::from_raw_parts(self.map.request(i), len),
                    std::slice::from_raw_parts_mut(self.map.response(i), max),
                )
            };
            match catch_unwind(AssertUnwindSafe(|| {
                let n = handler(req, resp);
                assert!(
                    n <= max,
                    "handler returned {n}, more than the {max}-byte response buffer"
                );
                n
            })) {
                Ok(n) => (STATUS_OK, n),
                Err(_) => (STATUS_PANICKED, 0),
            }
        };
        slot.resp_len.store(out as u32, Ordering::Relaxed);
        slot.status.store(status, Ordering::Relaxed);
        slot.resp_seq.store(seq, Ordering::Relaxed);
        // A store, not a CAS (one locked instruction less): nobody else moves a slot out of
        // IN_SERVICE, and should a broken client have scribbled on the word meanwhile, this
        // only repairs it. The fence in `notify` publishes it.
        slot.state.store(RESPONSE_READY, Ordering::Release);
        // Wakes the client only if it sleeps; a spinning one sees the state word change.
        self.done[i as usize].notify();
        true
    }

    /// After the workers stopped: mark the channel closed (waiting clients learn it within
    /// their liveness check) and refuse what slipped in after the drain.
    fn finish(&self) {
        self.map.flags().closed.store(1, Ordering::SeqCst);
        // Pairs with the fence in the clients' `notify` after their REQUEST_READY store.
        fence(Ordering::SeqCst);
        self.scan(&mut |_: &[u8], _: &mut [u8]| 0, true);
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // A server dropped without serving: tell clients nobody will answer.
        self.map.flags().closed.store(1, Ordering::SeqCst);
    }
}
