//! The request channel: one server, many clients.
//!
//! A [`Server`] creates one segment per channel name. Each [`Client`] claims one slot in it
//! (under the segment's named mutex), writes a request into the slot, pushes the slot number
//! into a shared submission ring and notifies a doorbell event; a free worker pops the
//! number, validates everything it reads, runs the handler with the request bytes and a
//! response buffer (both in shared memory), and notifies the slot's `done` event.
//!
//! Invariants:
//! - A slot's state word says who may touch its bytes; only the transitions in `slot.rs`
//!   change it, and the one CAS out of `REQUEST_READY` serves every request at most once,
//!   whatever the ring holds.
//! - The ring is a hint and the state words are the truth: a popped number is validated, and
//!   workers scan the slots when entries may have been lost (a failed push, a dead or
//!   preempted producer, an idle tick).
//! - A response carries the sequence number of the request it answers, so the late answer to
//!   a call that timed out is never returned by the next call.
//! - Nothing read from the segment is trusted: numbers, lengths and states are checked before
//!   use, so a broken client can fail its own calls, never the server or other clients.
//! - The server can take an idle slot back from a live client (eviction, idle reaping): the
//!   slot's state word carries the owning connection's generation, and a call begins with a
//!   CAS from that connection's `IDLE`, racing the server's CAS from the same word, so a call
//!   that has begun is never cut off and a client whose slot was taken back (and perhaps
//!   given to another) only finds a word that is not its own, and reconnects.
//! - The server keeps a table of its clients from what the slots show (claims, releases,
//!   dead owners, calls answered), scanned by a housekeeping thread every 20 ms, which also
//!   delivers connection events and reaps dead clients' slots.
//! - A client learns that its server is gone from the segment owner's liveness (checked every
//!   ~20 ms while it sleeps) and from the `closed` flag of a graceful shutdown; its mapping
//!   pins that incarnation of the channel, so after a restart it reconnects to the new
//!   segment (new instance token) on its next call.
//!
//! The "exec" half of each slot's event pair is the shared ring plus one doorbell: that is
//! what lets any free worker serve any client. Both events are eventcounts
//! (`Event::wait_for` / `Event::notify`): a waiting worker spins on the ring's next cell and
//! a waiting client on its slot's state word, and the event itself is written only when the
//! other side has gone to sleep. So while both sides spin, a round trip moves only the lines
//! that carry the call (request, slot header, ring cell, response), and those are prefetched
//! together so their transfers overlap. A slot's addresses are computed once per connection,
//! not on every access. (docs/PERFORMANCE.md records the measurements behind these choices.)
//!
//! Files, one concept each, dependencies pointing down the list:
//! - `mod.rs`: this overview, the public re-exports, [`server_or_client`];
//! - `client.rs`: [`Client`] (calls, reconnects, hand-over after a server restart);
//! - `server.rs`: [`ServerBuilder`], [`Server`] and its handles;
//! - `clients.rs`: the client table, connection events, the housekeeping scan;
//! - `conn.rs`: a client's connection (claiming, one call's steps, releasing its slot);
//! - `worker.rs`: what the workers share, the worker loop, serving one slot, shutdown;
//! - `layout.rs`: where everything lies in the segment, and typed views of it;
//! - `slot.rs`: one slot's header and its state machine;
//! - `ring.rs`: the submission ring;
//! - `error.rs`: [`CallError`];
//! - `inspect.rs`: the segment read as a snapshot, for `shmlink::admin::inspect`.
//!
//! `layout.rs` is apart from `slot.rs` so that the state machine depends on nothing but
//! atomics and is unit-tested on plain memory.
//!
//! # Examples
//! ```
//! use shmlink::{Client, Server};
//! # let name = format!("doc-channel-{}", std::process::id());
//! let server = Server::builder(&name).slots(4).max_message(1024).create()?;
//! let handle = server.spawn(|req: &[u8], resp: &mut [u8]| {
//!     resp[..req.len()].copy_from_slice(req); // echo
//!     req.len()
//! })?;
//! let mut client = Client::connect(&name)?;   // usually in another process
//! assert_eq!(client.call(b"ping")?, b"ping");
//! handle.shutdown();
//! # Ok::<(), shmlink::CallError>(())
//! ```

mod client;
mod clients;
mod conn;
mod error;
mod handler;
pub(crate) mod inspect;
mod layout;
mod notify;
mod outbox;
mod ring;
mod server;
mod slot;
mod stats;
mod worker;

use std::time::Duration;

pub use client::Client;
pub use clients::{ClientInfo, ConnectionEvent, DisconnectReason};
pub use error::{CallError, NotifyError};
pub use handler::{AppError, Bytes, CallInfo, ClientId, Handler, SharedHandler, WithInfo};
pub use outbox::Broadcast;
pub use server::{ClientTable, Free, Server, ServerBuilder, ServerHandle, ShutdownHandle, Single};
pub use stats::ServerStats;

/// What [`server_or_client`] made of this process.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Role {
    /// This process won the election and serves the name.
    Server(Server),
    /// Another process serves the name; this is a client connected to it.
    Client(Client),
}

/// Becomes the server for `name` if none runs, otherwise a client of the one that does.
///
/// Exactly one of any number of processes racing here becomes the server: creating the
/// channel segment is exclusive, and the losers connect to the winner (waiting up to 5 s for
/// it to publish its segment). The server uses [`Server::builder`]'s defaults.
///
/// # Examples
/// ```
/// use shmlink::{server_or_client, Role};
/// # let name = format!("doc-elect-{}", std::process::id());
/// match server_or_client(&name)? {
///     Role::Server(server) => { /* serve: server.serve(handler) */ }
///     Role::Client(mut client) => { /* client.call(b"...")?; */ }
/// }
/// # Ok::<(), shmlink::CallError>(())
/// ```
///
/// # Errors
/// [`CallError::ServerBusy`] if the server has no free slot; [`CallError::Setup`] for a bad
/// name or an OS failure; [`CallError::NoServer`] if the elected server vanished before this
/// process could connect.
pub fn server_or_client(name: &str) -> Result<Role, CallError> {
    for _ in 0..8 {
        match Server::builder(name).create() {
            Ok(server) => return Ok(Role::Server(server)),
            Err(CallError::AlreadyRunning { .. }) => {
                match Client::connect_timeout(name, Duration::from_secs(5)) {
                    Ok(client) => return Ok(Role::Client(client)),
                    // The winner died or stopped meanwhile: run the election again.
                    Err(CallError::NoServer { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(CallError::NoServer {
        name: name.to_owned(),
    })
}

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Client>();
    assert_send::<Server<Single>>();
    assert_send::<Server<Free>>();
    assert_send::<ServerHandle>();
};
