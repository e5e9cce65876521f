//! Async forms of the blocking ends (feature `async`), for any executor.
//!
//! The blocking ends already wait well: on a futex or named event, with liveness checks. So
//! the async forms keep them and move the waiting off the executor: each async object owns
//! a few threads of its own (one per connection for an [`AsyncClient`], one for an
//! [`AsyncReader`] or [`AsyncWriter`]), never one per pending operation, and those threads
//! wake the futures' [`Waker`]s. Nothing here polls in a loop, and nothing depends on a
//! runtime: the futures are plain [`Future`]s that tokio, async-std, smol or [`block_on`]
//! can drive.
//!
//! | blocking | async |
//! |---|---|
//! | [`Client`](crate::Client) (one call at a time) | [`AsyncClient`]: calls from many tasks over a few connections |
//! | a [`Handler`](crate::Handler) closure | [`block_on_handler`]: an async closure, run by each server worker |
//! | [`Reader::recv`](crate::Reader::recv) | [`AsyncReader::recv`] |
//! | [`Writer::acquire`](crate::Writer::acquire) | [`AsyncWriter::acquire`] |
//!
//! Every future is **cancellation safe**: dropping it never loses a message, never leaves a
//! connection unusable, and never hands one call's answer to another.
//!
//! Files: `mod.rs` ([`block_on`], the one-shot hand-off the threads complete futures
//! with), `client.rs`, `server.rs`, `pool.rs`.
//!
//! # Examples
//! ```
//! use shmlink::{block_on, block_on_handler, AsyncClient, Server};
//! # let name = format!("doc-async-{}", std::process::id());
//! let handle = Server::builder(&name).workers(2).create()?.spawn(block_on_handler(
//!     |req: Vec<u8>| async move { req.to_ascii_uppercase() },
//! ))?;
//! let client = AsyncClient::connect(&name, 2)?;
//! assert_eq!(block_on(client.call(b"hi"))?, b"HI");
//! handle.shutdown();
//! # Ok::<(), shmlink::CallError>(())
//! ```

mod client;
mod pool;
mod server;

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

pub use client::AsyncClient;
pub use pool::{AsyncReader, AsyncWriter};
pub use server::block_on_handler;

/// Runs `future` to completion on the calling thread, parking the thread while it is
/// pending: the smallest executor, for handlers ([`block_on_handler`]), tests and `main`s
/// without a runtime.
///
/// It drives only this future: futures that need a runtime's reactor or timers (tokio's
/// sockets, `tokio::time::sleep`) work when the calling thread has entered that runtime
/// (tokio: `let _guard = runtime.handle().enter();`).
///
/// # Examples
/// ```
/// let answer = shmlink::block_on(async { 6 * 7 });
/// assert_eq!(answer, 42);
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let unpark = Arc::new(Unpark {
        thread: thread::current(),
        woken: AtomicBool::new(false),
    });
    let waker = Waker::from(Arc::clone(&unpark));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        // A wake that came during the poll is kept in `woken`; park returns spuriously too.
        while !unpark.woken.swap(false, Ordering::Acquire) {
            thread::park();
        }
    }
}

/// The waker of [`block_on`]: unparks the thread that polls.
struct Unpark {
    thread: Thread,
    woken: AtomicBool,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::Release) {
            self.thread.unpark();
        }
    }
}

/// Locks `m`, ignoring poison: every critical section here leaves its state consistent
/// (no user code runs under these locks).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A one-shot hand-off from a worker thread to the future waiting for the result.
///
/// The future side ([`Receiver`]) may be dropped at any time (cancellation): the sender then
/// gets its value back from [`Sender::send`], to discard it or pass it on.
fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new(Shot {
        value: None,
        waker: None,
        receiver_gone: false,
        sender_gone: false,
    }));
    (Sender(Arc::clone(&shared)), Receiver(shared))
}

struct Shot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    receiver_gone: bool,
    sender_gone: bool,
}

/// The worker's end of a [`oneshot`].
struct Sender<T>(Arc<Mutex<Shot<T>>>);

impl<T> Sender<T> {
    /// Whether the future gave up (was dropped): its operation need not run.
    fn is_cancelled(&self) -> bool {
        lock(&self.0).receiver_gone
    }

    /// Hands `value` to the future and wakes it; gives it back if the future was dropped.
    fn send(self, value: T) -> Result<(), T> {
        let mut s = lock(&self.0);
        if s.receiver_gone {
            return Err(value);
        }
        s.value = Some(value);
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut s = lock(&self.0);
        s.sender_gone = true;
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The future's end of a [`oneshot`]: resolves to the value, or `None` if the sender was
/// dropped without sending (its thread ended).
struct Receiver<T>(Arc<Mutex<Shot<T>>>);

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = lock(&self.0);
        if let Some(v) = s.value.take() {
            return Poll::Ready(Some(v));
        }
        if s.sender_gone {
            return Poll::Ready(None);
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut s = lock(&self.0);
        s.receiver_gone = true;
        // A value sent but never taken is dropped outside the lock.
        let value = s.value.take();
        drop(s);
        drop(value);
    }
}

/// Starts a named thread for an async object, as an [`Error::Os`](crate::Error::Os) if the
/// OS refuses.
fn spawn_thread(
    name: String,
    f: impl FnOnce() + Send + 'static,
) -> Result<thread::JoinHandle<()>, crate::Error> {
    thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(|source| crate::Error::Os {
            op: "spawn async worker thread",
            name: String::new(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_waits_for_a_wake_from_another_thread() {
        let (tx, rx) = oneshot::<u32>();
        let t = thread::spawn(move || {
            thread::sleep(std::time::Duration::from_millis(10));
            assert!(tx.send(7).is_ok());
        });
        assert_eq!(block_on(rx), Some(7));
        t.join().unwrap();
    }

    #[test]
    fn a_dropped_receiver_gives_the_value_back_and_a_dropped_sender_ends_the_wait() {
        let (tx, rx) = oneshot::<String>();
        assert!(!tx.is_cancelled());
        drop(rx);
        assert!(tx.is_cancelled());
        assert_eq!(tx.send("late".into()), Err("late".to_owned()));
        let (tx, rx) = oneshot::<u8>();
        drop(tx);
        assert_eq!(block_on(rx), None);
    }
}
