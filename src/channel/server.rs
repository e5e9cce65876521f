//! The serving end's public face: the builder, [`Server`], and the handles that shut it
//! down. The workers themselves are in `worker.rs`.

use std::fmt;
use std::marker::PhantomData;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use super::clients::{ClientInfo, ConnectionEvent, OnConnection};
use super::error::{CallError, NotifyError};
use super::handler::ClientId;
#[cfg(doc)]
use super::handler::{AppError, CallInfo};
use super::handler::{Handler, SharedHandler};
use super::layout::{Layout, Mapped, Notes, KIND_VERSION, MAX_MESSAGE_LIMIT, MAX_SLOTS};
use super::notify::MAX_DEPTH;
use super::outbox::Broadcast;
use super::ring::Ring;
use super::stats::ServerStats;
use super::worker::{Core, Exit, Pool};
use crate::segment::{Segment, SegmentKind, DEFAULT_MODE};
use crate::sync::atomic::Ordering;
use crate::sync::{Event, Mutex, WaitStrategy};

mod handle;

pub use handle::{ClientTable, ServerHandle, ShutdownHandle};

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
    on_connection: Option<OnConnection>,
    idle_timeout: Option<Duration>,
    notes: Notes,
    /// Set by [`workers`](ServerBuilder::workers): the [`Free`] model.
    free: bool,
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
            .field("on_connection", &self.on_connection.is_some())
            .finish()
    }
}

impl<M> ServerBuilder<M> {
    /// Most clients connected at once (default 32), from 1 to 65536. Each client owns one
    /// slot. [`create`](ServerBuilder::create) refuses a value out of range.
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = slots;
        self
    }

    /// Largest request and largest response in bytes (default 64 KiB), from 1 to 1 GiB.
    /// Every slot reserves this much shared memory each way.
    /// [`create`](ServerBuilder::create) refuses a value out of range.
    pub fn max_message(mut self, bytes: usize) -> Self {
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

    /// Serves with `k` worker threads (at least 1) sharing one `Fn + Send + Sync` handler
    /// (the [`Free`] model): any free worker serves any client. A spawned server can change
    /// the count later ([`ServerHandle::set_workers`]).
    /// [`create`](ServerBuilder::create) refuses 0.
    pub fn workers(self, k: usize) -> ServerBuilder<Free> {
        ServerBuilder {
            name: self.name,
            slots: self.slots,
            max_message: self.max_message,
            workers: k,
            strategy: self.strategy,
            mode: self.mode,
            on_connection: self.on_connection,
            idle_timeout: self.idle_timeout,
            notes: self.notes,
            free: true,
            _model: PhantomData,
        }
    }

    /// Calls `f` for every client that connects or disconnects ([`ConnectionEvent`]), on
    /// the server's housekeeping thread, at most about 20 ms after the server can see it: a
    /// client's claim or release of its slot, or the OS dropping a dead client's proof of
    /// life. `f` should return quickly: the next scan waits for it.
    ///
    /// The server learns of clients by scanning their slots, so a connection that begins and
    /// ends within one scan may go unseen.
    ///
    /// # Examples
    /// ```
    /// use std::sync::mpsc;
    /// use shmlink::{Client, ConnectionEvent, Server};
    /// # let name = format!("doc-on-connection-{}", std::process::id());
    /// let (tx, events) = mpsc::channel();
    /// let handle = Server::builder(&name)
    ///     .on_connection(move |event: ConnectionEvent| { let _ = tx.send(event); })
    ///     .create()?
    ///     .spawn(|_: &[u8], _: &mut [u8]| 0)?;
    /// let client = Client::connect(&name)?;
    /// match events.recv().unwrap() {
    ///     ConnectionEvent::Connected { pid, .. } => assert_eq!(pid, std::process::id()),
    ///     other => panic!("{other:?}"),
    /// }
    /// # drop(client);
    /// # handle.shutdown();
    /// # Ok::<(), shmlink::CallError>(())
    /// ```
    pub fn on_connection(mut self, f: impl Fn(ConnectionEvent) + Send + Sync + 'static) -> Self {
        self.on_connection = Some(Arc::new(f));
        self
    }

    /// Lets a newcomer have the slot of a client that made no call for `d` (default: never).
    ///
    /// Idle clients are reaped only when needed: when a client finds every slot taken
    /// ([`CallError::ServerBusy`]), the server takes back the slot of the client idle the
    /// longest, if that is `d` or more (within about 20 ms of both being true), so the
    /// newcomer's next try (e.g. [`Client::connect_timeout`](crate::Client::connect_timeout)'s
    /// retries) gets it. A client in a call is never reaped; idleness counts from its last
    /// answered call (or its connection). The reaped client is told nothing until its next
    /// call, which reconnects by itself if a slot is free and otherwise fails with
    /// [`CallError::Disconnected`] (not executed). Its connection ends with
    /// [`DisconnectReason::Reaped`](crate::DisconnectReason::Reaped).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = Some(d);
        self
    }

    /// Each client's notification queue: up to `depth` notifications (default 16, from 1 to
    /// 65536) of up to `max_len` bytes (default 1 KiB, up to 1 GiB) that the server sent
    /// ([`ClientTable::notify`]) and the client has not read yet
    /// ([`Client::recv_notification`](crate::Client::recv_notification)). Every slot
    /// reserves `depth * max_len` bytes of shared memory (plus 8 per notification, rounded up
    /// to 64). [`create`](ServerBuilder::create) refuses a value out of range.
    pub fn notifications(mut self, depth: u32, max_len: usize) -> Self {
        self.notes = Notes {
            depth,
            max: max_len,
        };
        self
    }

    /// Creates the channel segment and publishes it: clients can connect from now on (their
    /// calls wait until the server serves).
    ///
    /// # Examples
    /// ```
    /// use shmlink::{CallError, Server};
    /// # let name = format!("doc-create-{}", std::process::id());
    /// let server = Server::builder(&name).slots(4).create()?;
    /// assert_eq!(server.slots(), 4);
    /// assert!(matches!(
    ///     Server::builder("doc-create-bad").slots(0).create(),
    ///     Err(CallError::InvalidConfig(_))
    /// ));
    /// # Ok::<(), shmlink::CallError>(())
    /// ```
    ///
    /// # Errors
    /// [`CallError::InvalidConfig`] if a value is out of range (see the setters);
    /// [`CallError::AlreadyRunning`] if a live server owns the name (a dead server's segment
    /// is removed and replaced); [`CallError::Setup`] for a bad name, an OS failure, or a
    /// housekeeping thread that cannot be started.
    pub fn create(self) -> Result<Server<M>, CallError> {
        let layout = self.layout()?;
        let seg = Arc::new(
            Segment::builder(&self.name)
                .tag("chan")
                .kind(SegmentKind::Channel, KIND_VERSION)
                .size(layout.total)
                .mode(self.mode)
                .create_unpublished()?,
        );
        let map = Mapped::new(Arc::clone(&seg), layout).expect("created with layout.total bytes");
        let config = map.config();
        config.slots.store(layout.slots, Ordering::Relaxed);
        config
            .max_message
            .store(layout.max_message as u32, Ordering::Relaxed);
        config
            .note_depth
            .store(layout.notes.depth, Ordering::Relaxed);
        config
            .note_max
            .store(layout.notes.max as u32, Ordering::Relaxed);
        // SAFETY: the offsets come from the layout: disjoint, 64-aligned, inside the data
        // region, used for nothing else, and the segment is not published yet.
        let (mutex, bell, ring) = unsafe {
            (
                Mutex::init_at(&seg, layout.mutex)?,
                Event::init_at(&seg, layout.doorbell)?,
                Ring::init(map.ring(), layout.ring_cap).expect("the layout holds the ring"),
            )
        };
        let events = |at: fn(&Layout, u32) -> usize| {
            (0..layout.slots)
                .map(|i| {
                    // SAFETY: as above: slot i's done or note event.
                    unsafe { Event::init_at(&seg, at(&layout, i)) }
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let done = events(Layout::done_event)?;
        let notes = events(Layout::note_event)?;
        // Slots start zero-filled: FREE, no owner.
        seg.publish();
        let core = Arc::new(Core::new(
            map,
            ring,
            bell,
            done,
            notes,
            mutex,
            Pool {
                strategy: self.strategy,
                workers: self.workers,
                resizable: self.free,
                on_connection: self.on_connection,
                idle_timeout: self.idle_timeout,
            },
        ));
        // From here on, dropping the server ends the housekeeping thread too (`finish`).
        let server = Server {
            core,
            detached: false,
            _model: PhantomData,
        };
        start_housekeeping(&server.core)?;
        Ok(server)
    }

    /// The layout the values ask for, or why they do not make one.
    fn layout(&self) -> Result<Layout, CallError> {
        let bad = |why: String| Err(CallError::InvalidConfig(why));
        if self.slots == 0 || self.slots > MAX_SLOTS {
            return bad(format!(
                "slots must be in 1..={MAX_SLOTS}, not {}",
                self.slots
            ));
        }
        if self.max_message == 0 || self.max_message > MAX_MESSAGE_LIMIT {
            return bad(format!(
                "max_message must be in 1..={MAX_MESSAGE_LIMIT}, not {}",
                self.max_message
            ));
        }
        if self.workers == 0 {
            return bad("workers must be at least 1".into());
        }
        let Notes { depth, max } = self.notes;
        if depth == 0 || depth > MAX_DEPTH || max > MAX_MESSAGE_LIMIT {
            return bad(format!(
                "notifications must be 1..={MAX_DEPTH} deep and at most {MAX_MESSAGE_LIMIT} \
                 bytes each, not {depth} of {max} bytes"
            ));
        }
        Layout::new(self.slots, self.max_message, self.notes).map_or_else(
            || {
                bad(format!(
                    "{} slots of {} bytes each way do not fit in memory",
                    self.slots, self.max_message
                ))
            },
            Ok,
        )
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
/// It comes in two shapes ([`Handler`]): `|req, resp| -> usize`, or
/// `|call: &CallInfo, req, resp| -> Result<usize, AppError>` to learn who calls
/// ([`CallInfo`]: client id, pid, slot, sequence number) and to fail a call with an
/// application error ([`CallError::Application`] at the caller). A handler that panics
/// fails that call with [`CallError::HandlerPanicked`], one that returns more than the
/// buffer's length with [`CallError::BadResponse`]; the server keeps serving.
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
    /// Handed to a [`ServerHandle`] by `spawn`, which ends the server from then on.
    detached: bool,
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
    /// Starts building a server for `name`: 32 slots, 64 KiB messages, 16 notifications of
    /// up to 1 KiB queued per client, one worker ([`Single`] model),
    /// [`WaitStrategy::Adaptive`].
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
            on_connection: None,
            idle_timeout: None,
            notes: Notes {
                depth: 16,
                max: 1024,
            },
            free: false,
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
    pub fn serve<A, H: Handler<A>>(self, mut handler: H) {
        self.core.run_worker(&mut |c, q, r| handler.handle(c, q, r));
        self.core.finish();
    }

    /// Serves on a background thread; the handle shuts it down.
    ///
    /// # Errors
    /// [`CallError::Setup`] if the thread cannot be started.
    pub fn spawn<A, H: Handler<A> + Send + 'static>(
        mut self,
        mut handler: H,
    ) -> Result<ServerHandle, CallError> {
        let core = Arc::clone(&self.core);
        let t = spawn_worker(0, move || {
            core.run_worker(&mut |c, q, r| handler.handle(c, q, r));
        })?;
        self.detached = true;
        Ok(ServerHandle {
            core: Arc::clone(&self.core),
            threads: vec![t],
            resizer: None,
        })
    }
}

impl Server<Free> {
    /// Serves with the configured number of worker threads until
    /// [`shutdown_handle`](Server::shutdown_handle)'s `shutdown` is called; then answers what
    /// is in flight, refuses what comes later, and removes the channel.
    pub fn serve<A, H: SharedHandler<A> + Send>(self, handler: H) {
        std::thread::scope(|s| {
            for _ in 1..self.core.workers {
                let (core, handler) = (&self.core, &handler);
                s.spawn(move || core.run_worker(&mut |c, q, r| handler.handle(c, q, r)));
            }
            self.core.run_worker(&mut |c, q, r| handler.handle(c, q, r));
        });
        self.core.finish();
    }

    /// Serves with the configured number of worker threads in the background; the handle
    /// shuts them down.
    ///
    /// # Errors
    /// [`CallError::Setup`] if a thread cannot be started (those started are stopped).
    pub fn spawn<A: 'static, H: SharedHandler<A> + Send + 'static>(
        mut self,
        handler: H,
    ) -> Result<ServerHandle, CallError> {
        let handler = Arc::new(handler);
        let weak = Arc::downgrade(&self.core);
        let (exited, exits) = mpsc::channel();
        let spawn: Spawner = Box::new(move |i| {
            let (handler, exited) = (Arc::clone(&handler), exited.clone());
            let Some(core) = weak.upgrade() else {
                return Err(CallError::ShuttingDown);
            };
            spawn_worker(i as usize, move || {
                let exit = core.run_worker(&mut |c, q, r| handler.handle(c, q, r));
                drop(core);
                // For `set_workers` (nobody listens once the handle is gone).
                let _ = exited.send((std::thread::current().id(), exit));
            })
        });
        let mut resizer = Resizer {
            spawn,
            started: 0,
            exits: StdMutex::new(exits),
        };
        let mut handle = ServerHandle {
            core: Arc::clone(&self.core),
            threads: Vec::new(),
            resizer: None,
        };
        for _ in 0..self.core.workers {
            // On error `handle` drops, which stops the workers already started.
            handle.threads.push(resizer.start()?);
        }
        handle.resizer = Some(resizer);
        self.detached = true;
        Ok(handle)
    }
}

/// Starts worker number `i` of a [`Free`] server.
type Spawner = Box<dyn Fn(u32) -> Result<JoinHandle<()>, CallError> + Send + Sync>;

/// What the handle of a [`Free`] server needs to change its worker count.
struct Resizer {
    spawn: Spawner,
    /// Workers started so far (the next one's number, for its thread's name).
    started: u32,
    /// Each worker's thread sends its id, and why it returned, as it ends. (In a mutex only
    /// to keep the handle `Sync`: `set_workers` has `&mut` access.)
    exits: StdMutex<Receiver<(ThreadId, Exit)>>,
}

impl Resizer {
    /// Starts the next worker.
    fn start(&mut self) -> Result<JoinHandle<()>, CallError> {
        let t = (self.spawn)(self.started)?;
        self.started += 1;
        Ok(t)
    }
}

fn spawn_worker(i: usize, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, CallError> {
    spawn_thread(format!("shmlink-worker-{i}"), "spawn worker thread", f)
}

fn spawn_thread(
    name: String,
    op: &'static str,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, CallError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(|e| {
            CallError::Setup(crate::Error::Os {
                op,
                name: String::new(),
                source: e,
            })
        })
}

/// Starts the thread that keeps the client table and delivers connection events (see
/// `clients.rs`). It holds the core only while it scans, and `Core::finish` stops it.
fn start_housekeeping(core: &Arc<Core>) -> Result<(), CallError> {
    let weak = Arc::downgrade(core);
    let stop = Arc::clone(&core.clients.stop);
    let t = spawn_thread(
        "shmlink-clients".to_owned(),
        "spawn housekeeping thread",
        move || loop {
            match weak.upgrade() {
                Some(core) => core.housekeep(),
                None => return,
            }
            if stop.wait_tick() {
                return;
            }
        },
    )?;
    *core
        .clients
        .thread
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(t);
    Ok(())
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

    /// A handle on the server's client table, for use while [`serve`](Server::serve) runs
    /// (a [`ServerHandle`] has the same methods).
    pub fn client_table(&self) -> ClientTable {
        ClientTable {
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
    pub fn poll<A, H: Handler<A>>(&self, handler: &mut H, timeout: Duration) -> usize {
        self.core
            .poll(&mut |c, q, r| handler.handle(c, q, r), timeout)
    }
}

impl<M> Drop for Server<M> {
    /// Closes the channel and removes its name (clients get [`CallError::ShuttingDown`] or
    /// [`CallError::ServerGone`]), unless [`spawn`](Server::spawn) handed it to a
    /// [`ServerHandle`]. After [`serve`](Server::serve) this has been done already.
    fn drop(&mut self) {
        if !self.detached {
            self.core.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_builder_values_are_refused_at_create_not_by_a_panic() {
        let name = "unit-invalid-config";
        let refused = |r: Result<Server<Single>, CallError>| match r {
            Err(CallError::InvalidConfig(why)) => why,
            r => panic!("expected InvalidConfig, got {r:?}"),
        };
        let why = refused(Server::builder(name).slots(0).create());
        assert!(why.contains("slots"), "{why}");
        let why = refused(Server::builder(name).slots(MAX_SLOTS + 1).create());
        assert!(why.contains("slots"), "{why}");
        let why = refused(Server::builder(name).max_message(0).create());
        assert!(why.contains("max_message"), "{why}");
        let why = refused(
            Server::builder(name)
                .max_message(MAX_MESSAGE_LIMIT + 1)
                .create(),
        );
        assert!(why.contains("max_message"), "{why}");
        match Server::builder(name).workers(0).create() {
            Err(CallError::InvalidConfig(why)) => assert!(why.contains("workers"), "{why}"),
            r => panic!("expected InvalidConfig, got {r:?}"),
        }
    }
}
