//! [`AsyncClient`]: calls from many tasks over a few connections, each served by a thread.
//!
//! A call first tries the fast path, on the polling thread: with no call queued and a
//! connection idle, it submits the request itself and polls for the answer for up to
//! [`FAST_PATH_POLL`], in which a server on another CPU usually answers. Otherwise the wait
//! goes to a thread: the connection's own thread finishes a call the fast path started, and
//! calls wait in one FIFO queue for the next free connection's thread, which makes them with
//! its blocking [`Client`] and hands the answer to the call's future. A call still queued at
//! its deadline is failed by a timer thread (the threads may all be busy).

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{lock, oneshot, spawn_thread, Receiver, Sender};
use crate::channel::{CallError, Client};

/// How long the fast path polls for the answer on the polling thread before handing the
/// wait to the connection's thread: about what the hand-off and the wake-up back cost.
const FAST_PATH_POLL: Duration = Duration::from_micros(10);

/// A client for async code: any number of tasks call at once through a fixed set of
/// connections (each one [`Client`], owning one of the server's slots).
///
/// Calls are served in the order they were made, by whichever connection is free first;
/// while every connection is busy, calls wait in a queue without occupying a thread. A call
/// that finds a connection idle submits its request at once and polls a few microseconds for
/// the answer on the polling thread (a fast server answers in that time: no thread hand-off);
/// otherwise the connection's thread waits for the answer (on a futex, as [`Client::call`]
/// does) and wakes the call's future; a timer thread ends queued calls at their deadline.
/// No thread per call, no polling beyond those microseconds.
///
/// Cheap to clone (the clones share the connections); the connections close once the last
/// clone is dropped and their threads have finished the calls they were making.
///
/// **Cancellation.** Dropping a call's future is safe at any point: a call still queued is
/// never made; a call in progress is finished by its connection, whose answer is discarded
/// (the connection takes the next call once the server answered, as after
/// [`Client::call_timeout`] timed out). No answer ever reaches another call.
///
/// # Examples
/// ```
/// use shmlink::{block_on, AsyncClient, Server};
/// # let name = format!("doc-async-client-{}", std::process::id());
/// # let handle = Server::builder(&name).create()?.spawn(|req: &[u8], resp: &mut [u8]| { resp[..req.len()].copy_from_slice(req); req.len() })?;
/// let client = AsyncClient::connect(&name, 4)?; // 4 connections, 4 of the server's slots
/// let answers = block_on(async {
///     // Clones share the connections: e.g. one per spawned task.
///     let (a, b) = (client.clone(), client.clone());
///     (a.call(b"one").await, b.call(b"two").await)
/// });
/// assert_eq!(answers.0?, b"one");
/// assert_eq!(answers.1?, b"two");
/// # Ok::<(), shmlink::CallError>(())
/// ```
#[derive(Clone)]
pub struct AsyncClient {
    inner: Arc<Inner>,
}

/// What the clones share; dropping it closes the queue, which ends the threads.
struct Inner {
    shared: Arc<Shared>,
    name: String,
    connections: usize,
}

/// What the futures, the workers and the timer share.
struct Shared {
    queue: Mutex<Queue>,
    /// Idle workers wait here for a call.
    work: Condvar,
    /// The timer waits here until the earliest deadline of a queued call.
    timer: Condvar,
}

struct Queue {
    calls: VecDeque<Job>,
    /// Each connection's client, by connection: parked while its thread waits for work.
    conns: Vec<Conn>,
    /// No more calls: the threads end.
    closed: bool,
    /// Workers waiting on `work`.
    idle: usize,
    /// The deadline the timer sleeps until (`None`: it sleeps until told).
    timer_at: Option<Instant>,
}

/// Where a connection's [`Client`] is.
enum Conn {
    /// Idle, its thread waiting: a queued call or a fast path may take it.
    Parked(Client),
    /// Making a call: on its thread, or on a future's fast path.
    Busy,
    /// A call the fast path started and did not see answered: the thread finishes it.
    Handoff(Handoff),
}

/// A started call, handed to the connection's thread to wait for the answer.
struct Handoff {
    client: Client,
    len: usize,
    deadline: Option<Instant>,
    reply: Sender<Result<Vec<u8>, CallError>>,
}

/// What the first poll of a call did.
enum Start {
    /// Answered (or failed) on the fast path.
    Done(Result<Vec<u8>, CallError>),
    /// Queued, or handed to a connection's thread: the answer comes through here.
    Wait(Receiver<Result<Vec<u8>, CallError>>),
}

/// One call, queued until a worker takes it.
struct Job {
    request: Vec<u8>,
    deadline: Option<Instant>,
    reply: Sender<Result<Vec<u8>, CallError>>,
}

impl fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncClient")
            .field("name", &self.inner.name)
            .field("connections", &self.inner.connections)
            .field("queued", &lock(&self.inner.shared.queue).calls.len())
            .finish()
    }
}

impl AsyncClient {
    /// Connects `connections` clients to the server of `name` (each claims a slot) and
    /// starts one thread for each, plus the timer thread.
    ///
    /// Blocks as [`Client::connect`] does (microseconds among healthy peers, at most 2 s per
    /// connection): call it before entering the async code, or where a short block is fine.
    ///
    /// # Examples
    /// ```
    /// use shmlink::{AsyncClient, CallError};
    /// assert!(matches!(
    ///     AsyncClient::connect("doc-async-nobody", 2),
    ///     Err(CallError::NoServer { .. })
    /// ));
    /// assert!(matches!(
    ///     AsyncClient::connect("doc-async-nobody", 0),
    ///     Err(CallError::InvalidConfig(_))
    /// ));
    /// ```
    ///
    /// # Errors
    /// [`CallError::InvalidConfig`] for 0 connections; as [`Client::connect`] for each
    /// connection ([`CallError::ServerBusy`] if the server has fewer free slots); a
    /// [`CallError::Setup`] if a thread cannot be started.
    pub fn connect(name: &str, connections: usize) -> Result<AsyncClient, CallError> {
        Self::connect_each(name, connections, |_| Client::connect(name))
    }

    /// As [`connect`](AsyncClient::connect), but waits up to `timeout` in all for a server to
    /// appear and for free slots, as [`Client::connect_timeout`] does.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use shmlink::{AsyncClient, CallError};
    /// let r = AsyncClient::connect_timeout("doc-async-late", 2, Duration::from_millis(20));
    /// assert!(matches!(r, Err(CallError::NoServer { .. })));
    /// ```
    ///
    /// # Errors
    /// As [`connect`](AsyncClient::connect), once the time is up.
    pub fn connect_timeout(
        name: &str,
        connections: usize,
        timeout: Duration,
    ) -> Result<AsyncClient, CallError> {
        let deadline = Instant::now() + timeout;
        Self::connect_each(name, connections, |_| {
            Client::connect_timeout(name, deadline.saturating_duration_since(Instant::now()))
        })
    }

    fn connect_each(
        name: &str,
        connections: usize,
        connect: impl Fn(usize) -> Result<Client, CallError>,
    ) -> Result<AsyncClient, CallError> {
        if connections == 0 {
            return Err(CallError::InvalidConfig(
                "an AsyncClient needs at least 1 connection".into(),
            ));
        }
        let clients = (0..connections)
            .map(connect)
            .collect::<Result<Vec<_>, _>>()?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                calls: VecDeque::new(),
                conns: clients.into_iter().map(Conn::Parked).collect(),
                closed: false,
                idle: 0,
                timer_at: None,
            }),
            work: Condvar::new(),
            timer: Condvar::new(),
        });
        // From here on, dropping `inner` (on an error too) ends the threads started.
        let inner = Arc::new(Inner {
            shared: Arc::clone(&shared),
            name: name.to_owned(),
            connections,
        });
        let sh = Arc::clone(&shared);
        spawn_thread("shmlink-async-timer".into(), move || sh.run_timer())?;
        for i in 0..connections {
            let sh = Arc::clone(&shared);
            spawn_thread(format!("shmlink-async-conn-{i}"), move || sh.run_worker(i))?;
        }
        Ok(AsyncClient { inner })
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The number of connections (calls made at once at most).
    pub fn connections(&self) -> usize {
        self.inner.connections
    }

    /// Sends `request` and waits for the answer as long as it takes, as [`Client::call`]
    /// does: it ends when the server answers or dies or stops ([`CallError::ServerGone`],
    /// noticed within about 20 ms), or when it reconnects after a server restart and finds
    /// no server ([`CallError::NoServer`]).
    ///
    /// Like every future, it does nothing until polled: the first poll copies `request`
    /// into the queue.
    ///
    /// # Examples
    /// ```
    /// # use shmlink::{block_on, AsyncClient, Server};
    /// # let name = format!("doc-async-call-{}", std::process::id());
    /// # let handle = Server::builder(&name).create()?.spawn(|req: &[u8], resp: &mut [u8]| { resp[..req.len()].copy_from_slice(req); req.len() })?;
    /// let client = AsyncClient::connect(&name, 1)?;
    /// let answer = block_on(client.call(b"ping"))?;
    /// assert_eq!(answer, b"ping");
    /// # Ok::<(), shmlink::CallError>(())
    /// ```
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn call(&self, request: &[u8]) -> Result<Vec<u8>, CallError> {
        self.exchange(request, None).await
    }

    /// As [`call`](AsyncClient::call), waiting at most `timeout` in all: in the queue for a
    /// free connection, and then for the answer (as [`Client::call_timeout`]).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// # use shmlink::{block_on, AsyncClient, Server};
    /// # let name = format!("doc-async-call-timeout-{}", std::process::id());
    /// # let handle = Server::builder(&name).create()?.spawn(|req: &[u8], resp: &mut [u8]| { resp[..req.len()].copy_from_slice(req); req.len() })?;
    /// let client = AsyncClient::connect(&name, 1)?;
    /// let answer = block_on(client.call_timeout(b"ping", Duration::from_secs(5)))?;
    /// assert_eq!(answer, b"ping");
    /// # Ok::<(), shmlink::CallError>(())
    /// ```
    ///
    /// # Errors
    /// [`CallError::Timeout`]: still queued at the deadline (not executed: no connection
    /// took it), or no answer in time (maybe executed); otherwise as [`call`](Self::call).
    pub async fn call_timeout(
        &self,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        // A deadline beyond what `Instant` holds is no deadline.
        self.exchange(request, Instant::now().checked_add(timeout))
            .await
    }

    /// Makes the call on the fast path or queues it (at the first poll), and waits for its
    /// answer.
    async fn exchange(
        &self,
        request: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>, CallError> {
        let answer = match self.inner.shared.start(request, deadline) {
            Start::Done(r) => return r,
            Start::Wait(answer) => answer,
        };
        // The threads outlive every future (each borrows a clone), so a missing answer
        // means a connection's thread ended by a panic.
        answer.await.unwrap_or(Err(CallError::Protocol {
            reason: "the async client's connection thread ended",
        }))
    }
}

impl Shared {
    /// The fast path: with no call queued ahead and a connection idle, submits the request
    /// on this thread and polls briefly for the answer; if it does not come, the
    /// connection's thread waits for it. Otherwise queues the call.
    fn start(&self, request: &[u8], deadline: Option<Instant>) -> Start {
        let mut q = lock(&self.queue);
        let idle = q.calls.is_empty().then(|| {
            q.conns
                .iter()
                .position(|c| matches!(c, Conn::Parked(client) if client.ready_now()))
        });
        let Some(i) = idle.flatten() else {
            drop(q);
            return Start::Wait(self.push(request, deadline));
        };
        let Conn::Parked(mut client) = std::mem::replace(&mut q.conns[i], Conn::Busy) else {
            unreachable!("found parked")
        };
        drop(q);
        let write = |buf: &mut [u8]| {
            let max = buf.len();
            let dst = buf.get_mut(..request.len()).ok_or(CallError::TooLarge {
                len: request.len(),
                max,
            })?;
            dst.copy_from_slice(request);
            Ok(request.len())
        };
        let (next, start) = match client.start(write, deadline) {
            Err(e) => (Conn::Parked(client), Start::Done(Err(e))),
            Ok(len) => match client.poll_finish_for(<[u8]>::to_vec, FAST_PATH_POLL) {
                Ok(answer) => (Conn::Parked(client), Start::Done(Ok(answer))),
                Err(_) => {
                    let (reply, rx) = oneshot();
                    let handoff = Handoff {
                        client,
                        len,
                        deadline,
                        reply,
                    };
                    (Conn::Handoff(handoff), Start::Wait(rx))
                }
            },
        };
        let handoff = matches!(next, Conn::Handoff(_));
        let mut q = lock(&self.queue);
        q.conns[i] = next;
        // The connection's thread, to finish the call or to take calls queued meanwhile;
        // otherwise it sleeps on (a wake-up would cost more than the call).
        if q.idle > 0 && (handoff || !q.calls.is_empty()) {
            self.work.notify_all();
        }
        start
    }

    /// Queues a call and tells the idle workers (or the timer, about a deadline).
    fn push(
        &self,
        request: &[u8],
        deadline: Option<Instant>,
    ) -> Receiver<Result<Vec<u8>, CallError>> {
        let (reply, rx) = oneshot();
        let job = Job {
            request: request.to_vec(),
            deadline,
            reply,
        };
        let mut q = lock(&self.queue);
        q.calls.push_back(job);
        // All of them: one whose client is on a fast path cannot take it.
        if q.idle > 0 {
            self.work.notify_all();
        }
        // More calls than idle workers: this one may wait in the queue, so the timer must
        // wake by its deadline.
        if let Some(d) = deadline.filter(|_| q.calls.len() > q.idle) {
            if q.timer_at.is_none_or(|t| d < t) {
                q.timer_at = Some(d);
                self.timer.notify_one();
            }
        }
        rx
    }

    /// Connection `i`'s thread: finishes the call a fast path handed over, or takes the
    /// next queued call and makes it; hands the answer over.
    fn run_worker(&self, i: usize) {
        let mut q = lock(&self.queue);
        loop {
            match std::mem::replace(&mut q.conns[i], Conn::Busy) {
                Conn::Handoff(mut h) => {
                    drop(q);
                    let result = h.client.finish(h.len, <[u8]>::to_vec, h.deadline);
                    // A dropped future's answer is discarded here.
                    let _ = h.reply.send(result);
                    q = lock(&self.queue);
                    q.conns[i] = Conn::Parked(h.client);
                }
                Conn::Parked(mut client) => {
                    let job = loop {
                        match q.calls.pop_front() {
                            Some(job) if job.reply.is_cancelled() => continue,
                            job => break job,
                        }
                    };
                    let Some(job) = job else {
                        q.conns[i] = Conn::Parked(client);
                        if q.closed {
                            return;
                        }
                        q = self.wait_for_work(q);
                        continue;
                    };
                    drop(q);
                    let result = match job.deadline {
                        None => client.call(&job.request),
                        Some(d) => match d.checked_duration_since(Instant::now()) {
                            Some(left) if !left.is_zero() => {
                                client.call_timeout(&job.request, left)
                            }
                            _ => Err(CallError::Timeout),
                        },
                    };
                    // A dropped future's answer is discarded here.
                    let _ = job.reply.send(result);
                    q = lock(&self.queue);
                    q.conns[i] = Conn::Parked(client);
                }
                // On a future's fast path: it parks the client or hands the call over, and
                // wakes us.
                Conn::Busy => q = self.wait_for_work(q),
            }
        }
    }

    fn wait_for_work<'a>(&self, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        q.idle += 1;
        q = self.work.wait(q).unwrap_or_else(|e| e.into_inner());
        q.idle -= 1;
        q
    }

    /// The timer thread: fails queued calls whose deadline passed, and drops cancelled
    /// ones, sleeping until the earliest deadline in the queue.
    fn run_timer(&self) {
        let mut q = lock(&self.queue);
        loop {
            if q.closed {
                return;
            }
            let now = Instant::now();
            let mut expired = Vec::new();
            let mut next: Option<Instant> = None;
            let mut i = 0;
            while i < q.calls.len() {
                let job = &q.calls[i];
                match job.deadline {
                    _ if job.reply.is_cancelled() => drop(q.calls.remove(i)),
                    Some(d) if d <= now => expired.extend(q.calls.remove(i)),
                    d => {
                        next = match (next, d) {
                            (Some(n), Some(d)) => Some(n.min(d)),
                            (n, d) => n.or(d),
                        };
                        i += 1;
                    }
                }
            }
            q.timer_at = next;
            if !expired.is_empty() {
                // Wake the futures outside the lock.
                drop(q);
                for job in expired {
                    let _ = job.reply.send(Err(CallError::Timeout));
                }
                q = lock(&self.queue);
                continue;
            }
            q = match next {
                None => self.timer.wait(q).unwrap_or_else(|e| e.into_inner()),
                Some(t) => {
                    let wait = t.saturating_duration_since(now);
                    self.timer
                        .wait_timeout(q, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

impl Drop for Inner {
    /// Closes the queue: idle threads end now, busy ones after their call.
    fn drop(&mut self) {
        let mut q = lock(&self.shared.queue);
        q.closed = true;
        // Only cancelled calls can be left (every future borrowed a clone).
        let left = std::mem::take(&mut q.calls);
        drop(q);
        drop(left);
        self.shared.work.notify_all();
        self.shared.timer.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_client_is_send_sync_and_its_future_is_send() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        let c: Option<AsyncClient> = None;
        if let Some(c) = &c {
            send_sync(c);
            send(&c.call(b"x"));
            send(&c.call_timeout(b"x", Duration::ZERO));
        }
    }
}
