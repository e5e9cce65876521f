//! The handles that stop a server, resize it and show its clients.

use std::sync::PoisonError;

use super::*;

/// Stops a server that runs [`Server::serve`]; cheap to clone and send to another thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    /// Weak: a forgotten handle must not keep the channel (and its name) alive.
    pub(super) core: Weak<Core>,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown: clients get [`CallError::ShuttingDown`] for new calls, the
    /// workers answer what is in flight, the channel's name is removed, then `serve` returns.
    /// Does not wait for any of that (it may be called from a handler): join the thread that
    /// runs `serve` to wait; once `serve` has returned, nothing of the channel is left in the
    /// system, even if the process exits at once. Does nothing if the server is gone.
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-shutdown-handle-{}", std::process::id());
    /// let server = shmlink::Server::builder(&name).create()?;
    /// let stop = server.shutdown_handle();
    /// let serving = std::thread::spawn(move || server.serve(|_: &[u8], _: &mut [u8]| 0));
    /// stop.shutdown();
    /// serving.join().unwrap();
    /// # Ok::<(), shmlink::CallError>(())
    /// ```
    pub fn shutdown(&self) {
        if let Some(core) = self.core.upgrade() {
            core.request_stop();
        }
    }
}

/// The workers started by [`Server::spawn`]. Dropping it shuts the server down gracefully
/// and waits, as [`shutdown`](ServerHandle::shutdown) does.
pub struct ServerHandle {
    pub(super) core: Arc<Core>,
    /// The running workers, in no particular order.
    pub(super) threads: Vec<JoinHandle<()>>,
    /// Starts and retires workers ([`Free`] servers only).
    pub(super) resizer: Option<Resizer>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("core", &self.core)
            .field("workers", &self.threads.len())
            .finish()
    }
}

impl ServerHandle {
    /// Gracefully stops the server: new calls get [`CallError::ShuttingDown`], calls in flight
    /// are answered, then the workers stop and the channel is removed (nothing is left in the
    /// system when this returns, nor when the handle's drop returns). Waits for all that,
    /// with no time limit: a handler that never returns keeps it waiting. To start the
    /// shutdown without waiting, use a [`ShutdownHandle`].
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-handle-shutdown-{}", std::process::id());
    /// let handle = shmlink::Server::builder(&name).create()?.spawn(|_: &[u8], _: &mut [u8]| 0)?;
    /// handle.shutdown(); // the channel is gone when this returns
    /// assert!(shmlink::Client::connect(&name).is_err());
    /// # Ok::<(), shmlink::CallError>(())
    /// ```
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

    /// Clients connected at the server's last scan of its slots (at most about 20 ms ago).
    pub fn connected(&self) -> usize {
        self.core.clients.connected()
    }

    /// The connected clients at the server's last scan (at most about 20 ms ago), in slot
    /// order: id, pid, when the server first saw them, their last call, calls answered.
    ///
    /// # Examples
    /// ```
    /// use shmlink::{Client, Server};
    /// # let name = format!("doc-clients-{}", std::process::id());
    /// let handle = Server::builder(&name).create()?.spawn(|_: &[u8], _: &mut [u8]| 0)?;
    /// let mut client = Client::connect(&name)?;
    /// client.call(b"hi")?;
    /// while handle.clients().first().is_none_or(|c| c.calls == 0) {
    ///     std::thread::sleep(std::time::Duration::from_millis(5)); // the next scan
    /// }
    /// assert_eq!(handle.clients()[0].pid, std::process::id());
    /// # handle.shutdown();
    /// # Ok::<(), shmlink::CallError>(())
    /// ```
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.core.clients.list()
    }

    /// The server's call counters since it started, with the calls in flight, the clients
    /// connected and the workers running. Each worker counts on a cache line of its own and
    /// this sums them, so counting costs a call next to nothing; the counts are each exact,
    /// though a snapshot taken while calls are answered may show one counted and not
    /// another.
    ///
    /// # Examples
    /// ```
    /// use shmlink::{AppError, CallError, CallInfo, Client, Server};
    /// # let name = format!("doc-stats-{}", std::process::id());
    /// let handle = Server::builder(&name).create()?.spawn(
    ///     |_: &CallInfo, req: &[u8], _: &mut [u8]| -> Result<usize, AppError> {
    ///         if req == b"bad" {
    ///             return Err(AppError::new(1));
    ///         }
    ///         Ok(0)
    ///     },
    /// )?;
    /// let mut client = Client::connect(&name)?;
    /// client.call(b"good")?;
    /// assert!(matches!(client.call(b"bad"), Err(CallError::Application { code: 1, .. })));
    /// let stats = handle.stats();
    /// assert_eq!((stats.answered, stats.app_errors, stats.workers), (1, 1, 1));
    /// # handle.shutdown();
    /// # Ok::<(), CallError>(())
    /// ```
    pub fn stats(&self) -> ServerStats {
        let mut s = self.core.stats();
        s.workers = self.threads.len(); // started, if not all in their loop yet
        s
    }

    /// A handle on the client table that can be sent elsewhere.
    pub fn client_table(&self) -> ClientTable {
        ClientTable {
            core: Arc::downgrade(&self.core),
        }
    }

    /// Disconnects client `id`: an idle client loses its slot at the server's next scan
    /// (within about 20 ms); a client in a call gets its answer first, as usual, and gives
    /// the slot up when its next call begins. Either way that next call reconnects by itself
    /// (a new [`ClientId`]) if a slot is free, and otherwise fails with
    /// [`CallError::Disconnected`] (not executed). The connection ends with
    /// [`DisconnectReason::Evicted`](crate::DisconnectReason::Evicted). Returns whether `id`
    /// was connected (at the last scan).
    ///
    /// # Examples
    /// ```
    /// use shmlink::{Client, Server};
    /// # let name = format!("doc-disconnect-{}", std::process::id());
    /// let handle = Server::builder(&name).create()?.spawn(|_: &[u8], _: &mut [u8]| 0)?;
    /// let mut client = Client::connect(&name)?;
    /// while handle.connected() == 0 {
    ///     std::thread::sleep(std::time::Duration::from_millis(5)); // the next scan
    /// }
    /// assert!(handle.disconnect(handle.clients()[0].id));
    /// client.call(b"")?; // reconnects
    /// # handle.shutdown();
    /// # Ok::<(), shmlink::CallError>(())
    /// ```
    pub fn disconnect(&self, id: ClientId) -> bool {
        self.core.evict(|c| c == id) > 0
    }

    /// Disconnects every client, as [`disconnect`](ServerHandle::disconnect) does; returns
    /// how many were connected (at the last scan).
    pub fn disconnect_all(&self) -> usize {
        self.core.evict(|_| true)
    }

    /// Queues the notification `msg` for client `id`, who reads it with
    /// [`Client::recv_notification`](crate::Client::recv_notification) and its forms. Never
    /// waits: a client that has not read the notifications before leaves this one unsent
    /// ([`NotifyError::QueueFull`]). Notifications to one client arrive in the order sent;
    /// those still queued when its connection ends are dropped.
    ///
    /// # Examples
    /// ```
    /// use shmlink::{Client, Server};
    /// # let name = format!("doc-notify-{}", std::process::id());
    /// let handle = Server::builder(&name).create()?.spawn(|_: &[u8], _: &mut [u8]| 0)?;
    /// let mut client = Client::connect(&name)?;
    /// while handle.connected() == 0 {
    ///     std::thread::sleep(std::time::Duration::from_millis(5)); // the next scan
    /// }
    /// handle.notify(handle.clients()[0].id, b"config changed")?;
    /// assert_eq!(client.recv_notification()?, b"config changed");
    /// # handle.shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`NotifyError::NotConnected`], [`NotifyError::QueueFull`],
    /// [`NotifyError::TooLarge`] (beyond [`ServerBuilder::notifications`]' size).
    pub fn notify(&self, id: ClientId, msg: &[u8]) -> Result<(), NotifyError> {
        self.core.outbox.send(&self.core.map, id, copy(msg))
    }

    /// The zero-copy [`notify`](ServerHandle::notify): `write` fills the notification in
    /// the client's queue (it gets the server's notification size in bytes and returns how
    /// many it wrote). It is not called if the queue is full or the client gone.
    ///
    /// # Errors
    /// As [`notify`](ServerHandle::notify); [`NotifyError::TooLarge`] if `write` returns
    /// more than the buffer's length (nothing is sent).
    pub fn notify_with(
        &self,
        id: ClientId,
        write: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<(), NotifyError> {
        self.core.outbox.send(&self.core.map, id, write)
    }

    /// Queues `msg` for every connected client (those whose slots are taken now, not only
    /// at the last scan), as [`notify`](ServerHandle::notify) does; says for whom it was
    /// queued and for whom not.
    ///
    /// # Errors
    /// [`NotifyError::TooLarge`] (nothing is sent).
    pub fn broadcast(&self, msg: &[u8]) -> Result<Broadcast, NotifyError> {
        self.core.outbox.broadcast(&self.core.map, msg)
    }

    /// Workers now running.
    pub fn workers(&self) -> usize {
        self.threads.len()
    }

    /// Grows or shrinks the worker pool of a [`Free`] server to `n` threads. Growing starts
    /// the new workers at once; shrinking retires the workers that are next free (idle ones,
    /// or busy ones once they answered the call they hold) and waits for them to leave, so no
    /// call is dropped or held back (calls waiting to be served are left to the others).
    ///
    /// # Examples
    /// ```
    /// use shmlink::{Client, Server};
    /// # let name = format!("doc-set-workers-{}", std::process::id());
    /// let mut handle = Server::builder(&name)
    ///     .workers(1)
    ///     .create()?
    ///     .spawn(|_: &[u8], _: &mut [u8]| 0)?;
    /// handle.set_workers(4)?;
    /// assert_eq!(handle.workers(), 4);
    /// handle.set_workers(2)?;
    /// assert_eq!(Client::connect(&name)?.call(b"")?, b"");
    /// # handle.shutdown();
    /// # Ok::<(), shmlink::CallError>(())
    /// ```
    ///
    /// # Errors
    /// [`CallError::InvalidConfig`] for 0 or a [`Single`] server; [`CallError::ShuttingDown`]
    /// once the server stops; [`CallError::Setup`] if a thread cannot be started (the pool
    /// then keeps the workers that did start).
    pub fn set_workers(&mut self, n: usize) -> Result<(), CallError> {
        let Some(resizer) = &mut self.resizer else {
            return Err(CallError::InvalidConfig(
                "set_workers needs a server with workers(k) (the Free model)".into(),
            ));
        };
        if n == 0 || n > u32::MAX as usize {
            return Err(CallError::InvalidConfig(format!(
                "workers must be at least 1, not {n}"
            )));
        }
        if self.threads.is_empty() || self.core.stopping() {
            return Err(CallError::ShuttingDown);
        }
        let now = self.threads.len();
        self.core.set_target(n as u32);
        if n < now {
            self.core.retire((now - n) as u32);
            let exits = resizer
                .exits
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner);
            for _ in n..now {
                // Anything but a retirement: a shutdown raced this call (dropping the handle
                // joins every worker).
                let Ok((id, Exit::Retired)) = exits.recv() else {
                    return Err(CallError::ShuttingDown);
                };
                if let Some(k) = self.threads.iter().position(|t| t.thread().id() == id) {
                    let _ = self.threads.swap_remove(k).join();
                }
            }
        }
        while self.threads.len() < n {
            match resizer.start() {
                Ok(t) => self.threads.push(t),
                Err(e) => {
                    self.core.set_target(self.threads.len() as u32);
                    return Err(e);
                }
            }
        }
        Ok(())
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

/// The client table of a server, for code that does not hold its [`ServerHandle`] (or for a
/// server run with [`Server::serve`]); see [`Server::client_table`]. Cheap to clone; it does
/// not keep the server alive: once the server is gone it reports no clients.
#[derive(Debug, Clone)]
pub struct ClientTable {
    pub(super) core: Weak<Core>,
}

impl ClientTable {
    /// As [`ServerHandle::connected`].
    pub fn connected(&self) -> usize {
        self.core.upgrade().map_or(0, |c| c.clients.connected())
    }

    /// As [`ServerHandle::clients`].
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.core
            .upgrade()
            .map_or_else(Vec::new, |c| c.clients.list())
    }

    /// As [`ServerHandle::stats`]; `None` once the server is gone.
    pub fn stats(&self) -> Option<ServerStats> {
        self.core.upgrade().map(|c| c.stats())
    }

    /// The entry of client `id`, if it is connected.
    pub fn get(&self, id: ClientId) -> Option<ClientInfo> {
        self.clients().into_iter().find(|c| c.id == id)
    }

    /// As [`ServerHandle::disconnect`].
    pub fn disconnect(&self, id: ClientId) -> bool {
        self.core
            .upgrade()
            .is_some_and(|c| c.evict(|c| c == id) > 0)
    }

    /// As [`ServerHandle::disconnect_all`].
    pub fn disconnect_all(&self) -> usize {
        self.core.upgrade().map_or(0, |c| c.evict(|_| true))
    }

    /// As [`ServerHandle::notify`].
    ///
    /// # Errors
    /// As [`ServerHandle::notify`]; [`NotifyError::ServerStopped`] once the server is gone.
    pub fn notify(&self, id: ClientId, msg: &[u8]) -> Result<(), NotifyError> {
        self.notify_with(id, copy(msg))
    }

    /// As [`ServerHandle::notify_with`].
    ///
    /// # Errors
    /// As [`notify`](ClientTable::notify).
    pub fn notify_with(
        &self,
        id: ClientId,
        write: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<(), NotifyError> {
        let core = self.core.upgrade().ok_or(NotifyError::ServerStopped)?;
        core.outbox.send(&core.map, id, write)
    }

    /// As [`ServerHandle::broadcast`].
    ///
    /// # Errors
    /// As [`ServerHandle::broadcast`]; [`NotifyError::ServerStopped`] once the server is
    /// gone.
    pub fn broadcast(&self, msg: &[u8]) -> Result<Broadcast, NotifyError> {
        let core = self.core.upgrade().ok_or(NotifyError::ServerStopped)?;
        core.outbox.broadcast(&core.map, msg)
    }
}

/// A writer for `notify_with` that copies `msg` (refused as too large if it does not fit).
fn copy(msg: &[u8]) -> impl FnOnce(&mut [u8]) -> usize + '_ {
    move |buf: &mut [u8]| match buf.get_mut(..msg.len()) {
        Some(dst) => {
            dst.copy_from_slice(msg);
            msg.len()
        }
        None => msg.len(),
    }
}
