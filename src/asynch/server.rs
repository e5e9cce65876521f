//! [`block_on_handler`]: async handlers for the existing [`Server`](crate::Server).

use std::future::Future;

use super::block_on;

/// Turns an async handler into a server [`Handler`](crate::Handler): each server worker
/// runs the handler's future to completion with [`block_on`] on its own thread.
///
/// The handler takes the request (copied out of shared memory, so the future owns it) and
/// resolves to the response, which is copied into the response buffer. A response longer
/// than the server's `max_message` fails the call with
/// [`CallError::BadResponse`](crate::CallError::BadResponse); a handler that panics fails it
/// with [`CallError::HandlerPanicked`](crate::CallError::HandlerPanicked); the server keeps
/// serving either way.
///
/// As many futures run at once as the server has workers
/// ([`ServerBuilder::workers`](crate::ServerBuilder::workers)): a worker waits for its
/// future before it serves the next call. The result is `Fn + Sync` when `handler` is,
/// so it serves both threading models.
///
/// Futures that need a runtime's reactor or timers (tokio's sockets or `sleep`) run when
/// the handler enters that runtime first, or hand the work to it (a spawned task's join
/// handle is a plain future):
///
/// ```
/// use shmlink::{block_on, block_on_handler, AsyncClient, Server};
/// # let name = format!("doc-block-on-handler-{}", std::process::id());
/// let handle = Server::builder(&name)
///     .workers(4)
///     .create()?
///     .spawn(block_on_handler(|req: Vec<u8>| async move {
///         // e.g. `runtime.spawn(async move { ... }).await.unwrap()` for tokio work
///         let mut answer = req;
///         answer.reverse();
///         answer
///     }))?;
/// let client = AsyncClient::connect(&name, 1)?;
/// assert_eq!(block_on(client.call(b"abc"))?, b"cba");
/// handle.shutdown();
/// # Ok::<(), shmlink::CallError>(())
/// ```
pub fn block_on_handler<F, Fut>(handler: F) -> impl Fn(&[u8], &mut [u8]) -> usize
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: Future<Output = Vec<u8>>,
{
    move |req: &[u8], resp: &mut [u8]| {
        let answer = block_on(handler(req.to_vec()));
        if let Some(dst) = resp.get_mut(..answer.len()) {
            dst.copy_from_slice(&answer);
        }
        // Beyond the buffer: the server fails the call with BadResponse.
        answer.len()
    }
}
