//! The calling end: connect (claim a slot), call, reconnect after a server restart.

use crate::segment::Access;
use std::fmt;
use std::time::{Duration, Instant};

use super::conn::{overwritten, Conn, Waited};
use super::error::CallError;
use crate::sync::WaitStrategy;

/// How often `connect_timeout` retries while no server (or no free slot) is there.
const RETRY: Duration = Duration::from_millis(5);

/// The calling end of a request channel. Owns one of the server's slots until dropped.
///
/// Calls take `&mut self`: one call at a time per client (use one client per thread).
/// Every call checks, while it waits, that the server is alive; a server that dies is
/// noticed within about 20 ms ([`CallError::ServerGone`]). After a server restart the next
/// call reconnects by itself.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmlink::{CallError, Client, Server};
/// # let name = format!("doc-client-{}", std::process::id());
/// # let handle = Server::builder(&name).create()?.spawn(|req: &[u8], resp: &mut [u8]| { resp[..req.len()].copy_from_slice(req); req.len() })?;
/// let mut client = Client::connect_timeout(&name, Duration::from_secs(1))?;
/// assert_eq!(client.call(b"one")?, b"one");
/// match client.call_timeout(b"two", Duration::from_millis(100)) {
///     Ok(answer) => assert_eq!(answer, b"two"),
///     Err(CallError::Timeout) => { /* the late answer is discarded */ }
///     Err(e) => return Err(e),
/// }
/// # Ok::<(), shmlink::CallError>(())
/// ```
pub struct Client {
    name: String,
    strategy: WaitStrategy,
    access: Access,
    conn: Option<Conn>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name)
            .field("slot", &self.conn.as_ref().map(|c| c.slot))
            .field("strategy", &self.strategy)
            .finish()
    }
}

impl Client {
    /// Connects to the server of `name` and claims a slot.
    ///
    /// Does not wait for a server to appear or for a slot to become free (see
    /// [`connect_timeout`](Client::connect_timeout)). It waits only for steps that take
    /// microseconds among healthy peers, each for at most 2 s: a server publishing its
    /// channel at this very moment, and the slot lock while another client claims or
    /// releases a slot (a dead holder's is taken over at once).
    ///
    /// # Examples
    /// ```
    /// use shmlink::{CallError, Client};
    /// match Client::connect("doc-connect-nobody") {
    ///     Err(CallError::NoServer { name }) => assert_eq!(name, "doc-connect-nobody"),
    ///     r => panic!("{r:?}"),
    /// }
    /// ```
    ///
    /// # Errors
    /// [`CallError::NoServer`] if no live server serves the name; [`CallError::ServerBusy`]
    /// if all its slots are taken; [`CallError::ShuttingDown`]; [`CallError::LockHeld`] if
    /// another process (a stalled client) holds the slot lock for 2 s; [`CallError::Setup`]
    /// for a bad name, a foreign or incompatible segment, a channel still unpublished after
    /// 2 s ([`Error::NotReady`](crate::Error::NotReady)), or an OS failure.
    pub fn connect(name: &str) -> Result<Client, CallError> {
        Client::connect_until(name, None)
    }

    /// As [`connect`](Client::connect), but waits up to `timeout` for a server to appear, for
    /// a slot to become free, and for the slot lock (however long another process holds
    /// it); every wait inside ends by then as well.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use shmlink::{CallError, Client};
    /// let r = Client::connect_timeout("doc-connect-timeout-nobody", Duration::from_millis(20));
    /// assert!(matches!(r, Err(CallError::NoServer { .. })));
    /// ```
    ///
    /// # Errors
    /// As [`connect`](Client::connect): the last error once the time is up
    /// ([`CallError::LockHeld`] if the slot lock stayed held until then).
    pub fn connect_timeout(name: &str, timeout: Duration) -> Result<Client, CallError> {
        let deadline = Instant::now() + timeout;
        loop {
            match Client::connect_until(name, Some(deadline)) {
                Err(
                    CallError::NoServer { .. }
                    | CallError::ServerBusy { .. }
                    | CallError::LockHeld { .. }
                    | CallError::ShuttingDown,
                ) if Instant::now() < deadline => std::thread::sleep(
                    RETRY.min(deadline.saturating_duration_since(Instant::now())),
                ),
                r => return r,
            }
        }
    }

    /// Connects to the server `name` whose channel `access` accepts: another user's service
    /// ([`Access::shared_by`] its uid), or one created with a group/other-writable mode.
    /// Reconnects after a server restart accept the same.
    ///
    /// # Errors
    /// As [`connect`](Client::connect).
    pub fn connect_with(name: &str, access: Access) -> Result<Client, CallError> {
        Client::connect_until_with(name, None, access)
    }

    fn connect_until(name: &str, deadline: Option<Instant>) -> Result<Client, CallError> {
        Client::connect_until_with(name, deadline, Access::owner_only())
    }

    fn connect_until_with(
        name: &str,
        deadline: Option<Instant>,
        access: Access,
    ) -> Result<Client, CallError> {
        let conn = Conn::open(name, WaitStrategy::default(), deadline, access)?;
        Ok(Client {
            name: name.to_owned(),
            strategy: WaitStrategy::default(),
            access,
            conn: Some(conn),
        })
    }

    /// Waits for answers with `strategy` (default [`WaitStrategy::Adaptive`]), also after a
    /// reconnect.
    ///
    /// # Examples
    /// ```
    /// use shmlink::{Client, Server, WaitStrategy};
    /// # let name = format!("doc-client-wait-{}", std::process::id());
    /// # let handle = Server::builder(&name).create()?.spawn(|req: &[u8], resp: &mut [u8]| { resp[..req.len()].copy_from_slice(req); req.len() })?;
    /// // Answers take long here: sleep at once instead of spinning first.
    /// let mut client = Client::connect(&name)?.wait_strategy(WaitStrategy::Block);
    /// assert_eq!(client.call(b"slow")?, b"slow");
    /// # Ok::<(), shmlink::CallError>(())
    /// ```
    pub fn wait_strategy(mut self, strategy: WaitStrategy) -> Self {
        self.strategy = strategy;
        if let Some(c) = self.conn.as_mut() {
            c.done.set_wait_strategy(strategy);
        }
        self
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connected server's largest request / response, or `None` while disconnected.
    pub fn max_message(&self) -> Option<usize> {
        self.conn.as_ref().map(|c| c.map.layout.max_message)
    }

    /// Sends `request` and waits for the answer as long as it takes: it never times out, but
    /// stops waiting when the server dies or stops ([`CallError::ServerGone`], noticed within
    /// about 20 ms).
    ///
    /// If the server was gone at the last call, this one first reconnects, as
    /// [`connect`](Client::connect) does: without waiting for a new server to appear.
    ///
    /// # Examples
    /// ```
    /// # use shmlink::{Client, Server};
    /// # let name = format!("doc-call-{}", std::process::id());
    /// # let handle = Server::builder(&name).create()?.spawn(|req: &[u8], resp: &mut [u8]| { resp[..req.len()].copy_from_slice(req); req.len() })?;
    /// let mut client = Client::connect(&name)?;
    /// assert_eq!(client.call(b"ping")?, b"ping");
    /// # Ok::<(), shmlink::CallError>(())
    /// ```
    ///
    /// # Errors
    /// [`CallError::TooLarge`], [`CallError::ServerGone`], [`CallError::ShuttingDown`],
    /// [`CallError::HandlerPanicked`], [`CallError::Protocol`]; when (re)connecting, as
    /// [`connect`](Client::connect).
    pub fn call(&mut self, request: &[u8]) -> Result<Vec<u8>, CallError> {
        self.call_until(request, None)
    }

    /// As [`call`](Client::call), waiting at most `timeout` in all: for the answer, for an
    /// earlier call's late answer still being made, and for reconnecting.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// # use shmlink::{Client, Server};
    /// # let name = format!("doc-call-timeout-{}", std::process::id());
    /// # let handle = Server::builder(&name).create()?.spawn(|req: &[u8], resp: &mut [u8]| { resp[..req.len()].copy_from_slice(req); req.len() })?;
    /// let mut client = Client::connect(&name)?;
    /// assert_eq!(client.call_timeout(b"ping", Duration::from_secs(5))?, b"ping");
    /// # Ok::<(), shmlink::CallError>(())
    /// ```
    ///
    /// # Errors
    /// [`CallError::Timeout`], or as [`call`](Client::call).
    pub fn call_timeout(
        &mut self,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        self.call_until(request, Some(Instant::now() + timeout))
    }

    fn call_until(
        &mut self,
        request: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>, CallError> {
        self.exchange(
            |buf| {
                let max = buf.len();
                let dst = buf.get_mut(..request.len()).ok_or(CallError::TooLarge {
                    len: request.len(),
                    max,
                })?;
                dst.copy_from_slice(request);
                Ok(request.len())
            },
            <[u8]>::to_vec,
            deadline,
        )
    }

    /// The zero-copy call: `write` fills the request in shared memory (it gets a buffer of
    /// `max_message` bytes and returns how many it wrote), `read` looks at the response in
    /// shared memory and returns what the caller keeps. No allocation, no copy.
    ///
    /// # Examples
    /// ```
    /// # use shmlink::{Client, Server};
    /// # let name = format!("doc-zc-{}", std::process::id());
    /// # let handle = Server::builder(&name).create()?.spawn(|req: &[u8], resp: &mut [u8]| { resp[..req.len()].copy_from_slice(req); req.len() })?;
    /// let mut client = Client::connect(&name)?;
    /// let sum: u32 = client.call_with(
    ///     |req| { req[..4].copy_from_slice(&[1, 2, 3, 4]); 4 },
    ///     |resp| resp.iter().map(|&b| u32::from(b)).sum(),
    /// )?;
    /// assert_eq!(sum, 10);
    /// # Ok::<(), shmlink::CallError>(())
    /// ```
    ///
    /// # Errors
    /// [`CallError::TooLarge`] if `write` returns more than the buffer's length; otherwise as
    /// [`call`](Client::call).
    pub fn call_with<R>(
        &mut self,
        write: impl FnOnce(&mut [u8]) -> usize,
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, CallError> {
        self.exchange(|buf| checked_len(write(buf), buf.len()), read, None)
    }

    /// As [`call_with`](Client::call_with), waiting at most `timeout` in all (as
    /// [`call_timeout`](Client::call_timeout)).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// # use shmlink::{Client, Server};
    /// # let name = format!("doc-zc-timeout-{}", std::process::id());
    /// # let handle = Server::builder(&name).create()?.spawn(|req: &[u8], resp: &mut [u8]| { resp[..req.len()].copy_from_slice(req); req.len() })?;
    /// let mut client = Client::connect(&name)?;
    /// let first = client.call_with_timeout(
    ///     |req| { req[0] = 42; 1 },
    ///     |resp| resp[0],
    ///     Duration::from_secs(5),
    /// )?;
    /// assert_eq!(first, 42);
    /// # Ok::<(), shmlink::CallError>(())
    /// ```
    ///
    /// # Errors
    /// [`CallError::Timeout`], or as [`call_with`](Client::call_with).
    pub fn call_with_timeout<R>(
        &mut self,
        write: impl FnOnce(&mut [u8]) -> usize,
        read: impl FnOnce(&[u8]) -> R,
        timeout: Duration,
    ) -> Result<R, CallError> {
        self.exchange(
            |buf| checked_len(write(buf), buf.len()),
            read,
            Some(Instant::now() + timeout),
        )
    }

    /// Waits for the next notification the server sent to this connection
    /// ([`ServerHandle::notify`](crate::ServerHandle::notify),
    /// [`broadcast`](crate::ServerHandle::broadcast)) and returns it. Notifications arrive in
    /// the order sent and queue up while the client makes calls (up to the server's
    /// [queue depth](crate::ServerBuilder::notifications); the server is told when a client
    /// does not keep up). Those queued when the connection ends are dropped.
    ///
    /// Waits as long as it takes, but stops when the server dies or stops
    /// ([`CallError::ServerGone`], within about 20 ms) or disconnects this client
    /// ([`CallError::Disconnected`]); the next call or receive reconnects (as a new
    /// [`ClientId`](crate::ClientId)). A client that is not connected connects first, as
    /// [`call`](Client::call) does.
    ///
    /// Receiving takes `&mut self`, as calls do: a thread that waits for notifications and
    /// also calls uses [`recv_notification_timeout`](Client::recv_notification_timeout) or
    /// [`try_recv_notification`](Client::try_recv_notification) between calls.
    ///
    /// # Examples
    /// ```
    /// use shmlink::{Client, Server};
    /// # let name = format!("doc-recv-notification-{}", std::process::id());
    /// let handle = Server::builder(&name).create()?.spawn(|_: &[u8], _: &mut [u8]| 0)?;
    /// let mut client = Client::connect(&name)?;
    /// while handle.broadcast(b"hello, all")?.sent.is_empty() {
    ///     // The client claimed its slot before `broadcast` looked: sent at the first try.
    /// }
    /// assert_eq!(client.recv_notification()?, b"hello, all");
    /// # handle.shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`CallError::ServerGone`], [`CallError::Disconnected`], [`CallError::Protocol`] (a
    /// slot scribbled on); when (re)connecting, as [`connect`](Client::connect).
    pub fn recv_notification(&mut self) -> Result<Vec<u8>, CallError> {
        self.next_notification(true, None, <[u8]>::to_vec)
            .map(|n| n.expect("waited for one"))
    }

    /// As [`recv_notification`](Client::recv_notification), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`CallError::Timeout`] if none came in time, or as
    /// [`recv_notification`](Client::recv_notification).
    pub fn recv_notification_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>, CallError> {
        self.recv_notification_with_timeout(<[u8]>::to_vec, timeout)
    }

    /// The next notification if one is queued, without waiting.
    ///
    /// # Errors
    /// As [`recv_notification`](Client::recv_notification).
    pub fn try_recv_notification(&mut self) -> Result<Option<Vec<u8>>, CallError> {
        self.next_notification(false, None, <[u8]>::to_vec)
    }

    /// The zero-copy [`recv_notification`](Client::recv_notification): `read` looks at the
    /// notification in shared memory and returns what the caller keeps.
    ///
    /// # Errors
    /// As [`recv_notification`](Client::recv_notification).
    pub fn recv_notification_with<R>(
        &mut self,
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, CallError> {
        self.next_notification(true, None, read)
            .map(|n| n.expect("waited for one"))
    }

    /// As [`recv_notification_with`](Client::recv_notification_with), waiting at most
    /// `timeout`.
    ///
    /// # Errors
    /// As [`recv_notification_timeout`](Client::recv_notification_timeout).
    pub fn recv_notification_with_timeout<R>(
        &mut self,
        read: impl FnOnce(&[u8]) -> R,
        timeout: Duration,
    ) -> Result<R, CallError> {
        self.next_notification(true, Some(Instant::now() + timeout), read)
            .map(|n| n.expect("waited for one"))
    }

    fn next_notification<R>(
        &mut self,
        wait: bool,
        deadline: Option<Instant>,
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, CallError> {
        // A connection the server closed still holds what it queued before it stopped.
        if self.conn.is_none() {
            self.reconnect(deadline)?;
        }
        let conn = self.conn.as_mut().expect("connected");
        conn.notification(wait, deadline, read)
            .map_err(|w| self.fail(w))
    }

    /// The connection, (re)opened if there is none or the server closed it.
    #[inline]
    fn conn(&mut self, deadline: Option<Instant>) -> Result<&mut Conn, CallError> {
        if self.conn.as_ref().is_none_or(Conn::closed) {
            self.reconnect(deadline)?;
        }
        Ok(self.conn.as_mut().expect("connected"))
    }

    #[cold]
    fn reconnect(&mut self, deadline: Option<Instant>) -> Result<(), CallError> {
        self.conn = None;
        self.conn = Some(Conn::open(
            &self.name,
            self.strategy,
            deadline,
            self.access,
        )?);
        Ok(())
    }

    fn exchange<R>(
        &mut self,
        write: impl FnOnce(&mut [u8]) -> Result<usize, CallError>,
        read: impl FnOnce(&[u8]) -> R,
        deadline: Option<Instant>,
    ) -> Result<R, CallError> {
        let len = self.start(write, deadline)?;
        match self.poll_finish(read) {
            Ok(r) => Ok(r),
            Err(read) => self.finish(len, read, deadline),
        }
    }

    /// Whether a call would begin at once: connected, the last call answered, no reconnect
    /// or late answer to wait for (the async client's fast path calls only then).
    #[cfg(feature = "async")]
    pub(crate) fn ready_now(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| !c.closed() && !c.shutting_down() && c.idle())
    }

    /// Begins a call and submits the request `write` fills; returns its length. The answer
    /// is then taken with [`poll_finish`](Self::poll_finish) or [`finish`](Self::finish).
    pub(crate) fn start(
        &mut self,
        write: impl FnOnce(&mut [u8]) -> Result<usize, CallError>,
        deadline: Option<Instant>,
    ) -> Result<usize, CallError> {
        let conn = self.begin(deadline)?;
        let len = match write(conn.request_buf()) {
            Ok(len) => len,
            Err(e) => {
                conn.abandon();
                return Err(e);
            }
        };
        if !conn.submit(len) {
            return Err(self.fail(Waited::Failed(overwritten())));
        }
        Ok(len)
    }

    /// The started call's answer, read by `read`, if it comes within a few microseconds of
    /// polling; otherwise `read` back.
    pub(crate) fn poll_finish<R, F: FnOnce(&[u8]) -> R>(&mut self, read: F) -> Result<R, F> {
        self.finish_if(read, Conn::poll_answer)
    }

    /// As [`poll_finish`](Self::poll_finish), polling for up to `budget`.
    #[cfg(feature = "async")]
    pub(crate) fn poll_finish_for<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        read: F,
        budget: Duration,
    ) -> Result<R, F> {
        self.finish_if(read, |conn| conn.poll_answer_for(budget))
    }

    /// Reads and ends the call if `poll` finds its answer; otherwise gives `read` back.
    fn finish_if<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        read: F,
        poll: impl FnOnce(&mut Conn) -> Option<usize>,
    ) -> Result<R, F> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(read);
        };
        match poll(conn) {
            Some(n) => {
                let r = read(conn.response(n));
                conn.end_call();
                Ok(r)
            }
            None => Err(read),
        }
    }

    /// Waits for the answer of the call [`start`](Self::start) submitted (`len` bytes).
    pub(crate) fn finish<R>(
        &mut self,
        len: usize,
        read: impl FnOnce(&[u8]) -> R,
        deadline: Option<Instant>,
    ) -> Result<R, CallError> {
        let mut resent = false;
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Err(CallError::ServerGone);
            };
            match conn.wait(deadline) {
                Waited::Answer(n) => {
                    let r = read(conn.response(n));
                    conn.end_call();
                    return Ok(r);
                }
                Waited::Gone {
                    retracted: true,
                    graceful: false,
                } if !resent => {
                    // The dead server never took the request: hand it to a new server if one
                    // is up (this is not a retry: the request was never served).
                    let old = self.conn.take().expect("connected");
                    let mut new = Conn::open(&self.name, self.strategy, deadline, self.access)
                        .map_err(|_| CallError::ServerGone)?;
                    let max = new.map.layout.max_message;
                    if let Err(w) = new.begin(deadline) {
                        self.conn = Some(new);
                        return Err(self.fail(w));
                    }
                    if len > max {
                        new.abandon();
                        self.conn = Some(new);
                        return Err(CallError::TooLarge { len, max });
                    }
                    // SAFETY: both request areas are ours (slot IDLE / retracted) and belong to
                    // different mappings; both views end within this statement.
                    unsafe {
                        let from = old.map.request(old.slot).bytes(0, len);
                        let to = new.map.request(new.slot).bytes_mut(0, len);
                        to.zip(from).map(|(to, from)| to.copy_from_slice(from))
                    }
                    .expect("len <= both max_messages");
                    drop(old);
                    if !new.submit(len) {
                        return Err(self.fail(Waited::Failed(overwritten())));
                    }
                    self.conn = Some(new);
                    resent = true;
                }
                w => return Err(self.fail(w)),
            }
        }
    }

    /// The connection with a call begun on it (see `Conn::begin`). A connection the server
    /// took back (evicted or reaped for idleness) is left and a new one made, once; if no
    /// slot is free for it, the call fails with [`CallError::Disconnected`].
    #[inline]
    fn begin(&mut self, deadline: Option<Instant>) -> Result<&mut Conn, CallError> {
        let conn = self.conn(deadline)?;
        if conn.shutting_down() {
            return Err(CallError::ShuttingDown);
        }
        conn.prefetch();
        match conn.begin(deadline) {
            Ok(()) => Ok(self.conn.as_mut().expect("connected")),
            Err(Waited::Revoked) => self.rejoin(deadline),
            Err(w) => Err(self.fail(w)),
        }
    }

    #[cold]
    fn rejoin(&mut self, deadline: Option<Instant>) -> Result<&mut Conn, CallError> {
        // Dropping the old connection releases the slot if it is still ours (asked to leave).
        self.conn = None;
        match Conn::open(&self.name, self.strategy, deadline, self.access) {
            Ok(c) => self.conn = Some(c),
            Err(CallError::ServerBusy { .. }) => return Err(CallError::Disconnected),
            Err(e) => return Err(e),
        }
        let conn = self.conn.as_mut().expect("connected");
        match conn.begin(deadline) {
            Ok(()) => Ok(self.conn.as_mut().expect("connected")),
            Err(Waited::Revoked) => {
                self.conn = None;
                Err(CallError::Disconnected)
            }
            Err(w) => Err(self.fail(w)),
        }
    }

    /// Turns a failed wait into the error, dropping the connection where it is unusable.
    fn fail(&mut self, w: Waited) -> CallError {
        match w {
            Waited::Revoked => {
                self.conn = None;
                CallError::Disconnected
            }
            Waited::Timeout => CallError::Timeout,
            Waited::Gone {
                retracted,
                graceful,
            } => {
                self.conn = None;
                if graceful && retracted {
                    CallError::ShuttingDown
                } else {
                    CallError::ServerGone
                }
            }
            Waited::Failed(e) => {
                if matches!(e, CallError::Protocol { .. }) {
                    self.conn = None;
                }
                e
            }
            Waited::Answer(_) => unreachable!("not a failure"),
        }
    }
}

fn checked_len(n: usize, max: usize) -> Result<usize, CallError> {
    if n > max {
        Err(CallError::TooLarge { len: n, max })
    } else {
        Ok(n)
    }
}
