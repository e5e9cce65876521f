//! The server's view of its clients: the client table, connection events, and the
//! housekeeping thread that keeps both.
//!
//! No message tells the server that a client came or went; the slot headers do. A claim is a
//! slot leaving `FREE` with a new connection number (`epoch`), a graceful leave is the slot
//! going back to `FREE`, a death is an owner whose proof of life is gone. The housekeeping
//! thread scans the headers every [`TICK`], turns what changed into the table and the
//! events, and reaps the slots of dead clients (under the slot mutex, as a claimer would), so
//! they are free before a newcomer asks. The workers count calls in the slot header (a load
//! and a store on the line the answer writes anyway); the scan turns a changed count into
//! the "last call" time, so no clock is read on a call's path.
//!
//! The scan also takes slots back from live clients, only ever from `IDLE` (see
//! `SlotHeader::revoke`): a client asked to leave (`disconnect`, which also marks the slot so
//! that the client gives it up itself when its next call begins), and, with an idle timeout,
//! the client idle the longest once a newcomer found every slot taken (the `slot_wanted`
//! flag) and no slot has been free since.
//!
//! What a scan cannot see: a connection that begins and ends between two scans, and which
//! of two ways a slot changed hands between scans (released, then claimed; or its dead
//! owner reaped by the claimer). The second is told by the old owner's liveness when the
//! scan looks.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex as StdMutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::handler::ClientId;
use super::layout::Mapped;
use super::slot::{FREE, IDLE, IN_SERVICE};
use crate::process::Member;
use crate::sync::atomic::Ordering;
use crate::sync::Mutex;

/// How often the housekeeping thread scans the slots: events come at most this late (plus
/// the time the OS takes to drop a dead process's proof of life).
pub(super) const TICK: Duration = Duration::from_millis(20);

/// Why a client's connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client released its slot (dropped its [`Client`](crate::Client), or its process
    /// exited after doing so).
    Graceful,
    /// The client's process died while it owned the slot; the server reaped the slot.
    Died,
    /// The client made no call for the server's
    /// [`idle_timeout`](crate::ServerBuilder::idle_timeout) and a newcomer needed its slot.
    Reaped,
    /// The server disconnected it ([`ServerHandle::disconnect`](crate::ServerHandle::disconnect)).
    Evicted,
}

/// A change in the server's set of clients, handed to the
/// [`on_connection`](crate::ServerBuilder::on_connection) callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// A client claimed a slot.
    Connected {
        /// The new connection.
        id: ClientId,
        /// The client's process id, as the client recorded it.
        pid: u32,
    },
    /// A client's connection ended.
    Disconnected {
        /// The connection that ended.
        id: ClientId,
        /// The client's process id, as the client recorded it.
        pid: u32,
        /// How it ended.
        reason: DisconnectReason,
    },
}

/// One connected client, as the server saw it at its last scan (see
/// [`ServerHandle::clients`](crate::ServerHandle::clients)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientInfo {
    /// The connection.
    pub id: ClientId,
    /// The client's process id, as the client recorded it.
    pub pid: u32,
    /// When the server first saw the connection.
    pub connected_since: Instant,
    /// When the server last saw a call answered (to within one scan), if any was.
    pub last_call: Option<Instant>,
    /// Calls answered on this connection.
    pub calls: u64,
}

/// The connection-event callback, as the server keeps it.
pub(super) type OnConnection = Arc<dyn Fn(ConnectionEvent) + Send + Sync>;

/// A slot's connection as the last scan left it.
struct Entry {
    info: ClientInfo,
    epoch: u32,
    owner: Member,
    /// The slot's `served` count when last seen.
    served: u32,
    /// Set when the server asked the connection to leave ([`DisconnectReason::Evicted`]).
    leaving: Option<DisconnectReason>,
}

/// The table proper, under one lock.
struct Table {
    /// By slot.
    slots: Vec<Option<Entry>>,
    /// A newcomer found every slot taken, and none has been free since.
    want: bool,
}

/// Tells the housekeeping thread to stop (kept apart from the core, so the thread can wait
/// on it without holding the core alive).
#[derive(Default)]
pub(super) struct Stop {
    stop: StdMutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Waits one [`TICK`] or until stopped; `true` if stopped.
    pub(super) fn wait_tick(&self) -> bool {
        let g = self.stop.lock().unwrap_or_else(PoisonError::into_inner);
        let (g, _) = self
            .wake
            .wait_timeout_while(g, TICK, |stop| !*stop)
            .unwrap_or_else(PoisonError::into_inner);
        *g
    }
}

/// The client table, the callback and the housekeeping thread's controls.
pub(super) struct Clients {
    table: StdMutex<Table>,
    on_event: Option<OnConnection>,
    idle_timeout: Option<Duration>,
    pub(super) stop: Arc<Stop>,
    pub(super) thread: StdMutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Clients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clients")
            .field("connected", &self.connected())
            .finish_non_exhaustive()
    }
}

impl Clients {
    pub(super) fn new(
        slots: u32,
        on_event: Option<OnConnection>,
        idle_timeout: Option<Duration>,
    ) -> Clients {
        Clients {
            table: StdMutex::new(Table {
                slots: (0..slots).map(|_| None).collect(),
                want: false,
            }),
            on_event,
            idle_timeout,
            stop: Arc::default(),
            thread: StdMutex::new(None),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Clients connected at the last scan.
    pub(super) fn connected(&self) -> usize {
        self.table().slots.iter().flatten().count()
    }

    /// The connected clients at the last scan, by slot.
    pub(super) fn list(&self) -> Vec<ClientInfo> {
        self.table()
            .slots
            .iter()
            .flatten()
            .map(|e| e.info)
            .collect()
    }

    /// Asks the connections `which` picks to leave: each gives its slot up at the start of
    /// its next call, or the next scan takes it back while it is idle. Returns how many were
    /// asked.
    pub(super) fn evict(&self, map: &Mapped, mut which: impl FnMut(ClientId) -> bool) -> usize {
        let mut n = 0;
        for (i, e) in (0..map.layout.slots).zip(self.table().slots.iter_mut()) {
            if let Some(e) = e.as_mut().filter(|e| which(e.info.id)) {
                e.leaving = Some(DisconnectReason::Evicted);
                map.slot(i).mark_evicted(e.epoch);
                n += 1;
            }
        }
        n
    }

    /// Stops the housekeeping thread and waits for it (unless called on it).
    pub(super) fn stop(&self) {
        *self
            .stop
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.stop.wake.notify_all();
        let t = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = t {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }

    /// One scan of the slots of `map` (whose slot mutex is `mutex`): updates the table,
    /// reaps the slots of dead owners, then delivers the events (outside the table lock).
    pub(super) fn scan(&self, map: &Mapped, mutex: &Mutex) {
        let now = Instant::now();
        let mut events = Vec::new();
        let flags = map.flags();
        let wanted = flags.slot_wanted.load(Ordering::Relaxed) != 0
            && flags.slot_wanted.swap(0, Ordering::Relaxed) != 0;
        {
            let mut guard = self.table();
            let table = &mut *guard;
            table.want |= wanted && self.idle_timeout.is_some();
            // The longest idle client past the idle timeout: (idle since, slot, epoch).
            let mut idlest: Option<(Instant, u32, u32)> = None;
            let mut any_free = false;
            for (i, entry) in (0..map.layout.slots).zip(table.slots.iter_mut()) {
                let slot = map.slot(i);
                // The state first (Acquire): a claim's owner and epoch are visible after it.
                let state = slot.state();
                let (epoch, owner, served) = (slot.epoch(), slot.owner(), slot.served());
                if let Some(e) = entry.take_if(|e| state == FREE || e.epoch != epoch) {
                    // Released (same connection, now FREE), or the slot changed hands since
                    // the last scan: released, or its dead owner reaped by the claimer.
                    let graceful = (state == FREE && e.epoch == epoch) || map.seg.is_alive(e.owner);
                    events.push(ConnectionEvent::Disconnected {
                        id: e.info.id,
                        pid: e.info.pid,
                        reason: e.leaving.unwrap_or(if graceful {
                            DisconnectReason::Graceful
                        } else {
                            DisconnectReason::Died
                        }),
                    });
                }
                if state == FREE {
                    any_free = true;
                    continue;
                }
                let e = entry.get_or_insert_with(|| {
                    let id = ClientId::new(i, epoch);
                    events.push(ConnectionEvent::Connected { id, pid: owner.pid });
                    Entry {
                        info: ClientInfo {
                            id,
                            pid: owner.pid,
                            connected_since: now,
                            last_call: None,
                            calls: 0,
                        },
                        epoch,
                        owner,
                        served: 0, // `claim` reset the slot's count
                        leaving: None,
                    }
                });
                if served != e.served {
                    e.info.calls += u64::from(served.wrapping_sub(e.served));
                    e.info.last_call = Some(now);
                    e.served = served;
                }
                // A disowned slot (its owner left in mid-call) has no owner: not alive either.
                if state != IN_SERVICE && !map.seg.is_alive(owner) {
                    if let Some(reason) = reap(map, mutex, i, epoch, owner) {
                        let e = entry.take().expect("just inserted");
                        events.push(ConnectionEvent::Disconnected {
                            id: e.info.id,
                            pid: e.info.pid,
                            reason: e.leaving.unwrap_or(reason),
                        });
                        any_free = true;
                    }
                    continue;
                }
                if state != IDLE {
                    continue; // in a call: never taken back
                }
                if e.leaving == Some(DisconnectReason::Evicted) {
                    if revoke(map, mutex, i, epoch) {
                        let e = entry.take().expect("just inserted");
                        events.push(ConnectionEvent::Disconnected {
                            id: e.info.id,
                            pid: e.info.pid,
                            reason: DisconnectReason::Evicted,
                        });
                        any_free = true;
                    }
                    continue;
                }
                let since = e.info.last_call.unwrap_or(e.info.connected_since);
                if self
                    .idle_timeout
                    .is_some_and(|d| now.saturating_duration_since(since) >= d)
                    && idlest.is_none_or(|(s, _, _)| since < s)
                {
                    idlest = Some((since, i, epoch));
                }
            }
            if any_free {
                table.want = false; // the newcomer can have that one
            } else if let Some((_, i, epoch)) = idlest.filter(|_| table.want) {
                if revoke(map, mutex, i, epoch) {
                    table.want = false;
                    let e = table.slots[i as usize].take().expect("a connected slot");
                    events.push(ConnectionEvent::Disconnected {
                        id: e.info.id,
                        pid: e.info.pid,
                        reason: DisconnectReason::Reaped,
                    });
                }
            }
        }
        #[cfg(feature = "tracing")]
        for ev in &events {
            trace_connection(map.seg.name(), ev);
        }
        if let Some(f) = &self.on_event {
            for ev in events {
                f(ev);
            }
        }
    }
}

/// Emits a connection event (feature `tracing`): a client that died is a warning.
#[cfg(feature = "tracing")]
fn trace_connection(service: &str, ev: &ConnectionEvent) {
    match *ev {
        ConnectionEvent::Connected { id, pid } => {
            tracing::info!(service, client = id.as_u64(), pid, "client connected");
        }
        ConnectionEvent::Disconnected {
            id,
            pid,
            reason: DisconnectReason::Died,
        } => {
            tracing::warn!(
                service,
                client = id.as_u64(),
                pid,
                "client died; its slot is reaped"
            );
        }
        ConnectionEvent::Disconnected { id, pid, reason } => {
            tracing::info!(
                service,
                client = id.as_u64(),
                pid,
                ?reason,
                "client disconnected"
            );
        }
    }
}

/// Takes slot `i` back from connection `epoch` if it is idle, under the slot mutex.
fn revoke(map: &Mapped, mutex: &Mutex, i: u32, epoch: u32) -> bool {
    let Ok(_guard) = mutex.lock_timeout(TICK) else {
        return false; // the next scan tries again
    };
    map.slot(i).revoke(epoch)
}

/// Reaps slot `i` if it still holds connection `epoch` of the dead `owner`, under the slot
/// mutex (a claimer may be reaping it too). The reason: an owner that cleared itself
/// (`disown`: it left in mid-call) left gracefully.
fn reap(
    map: &Mapped,
    mutex: &Mutex,
    i: u32,
    epoch: u32,
    owner: Member,
) -> Option<DisconnectReason> {
    // A holder that died is taken over; a live one is waited for at most one tick, else the
    // next scan tries again.
    let _guard = mutex.lock_timeout(TICK).ok()?;
    let slot = map.slot(i);
    if slot.epoch() != epoch || slot.owner() != owner || !slot.reap() {
        return None;
    }
    Some(if owner == Member::default() {
        DisconnectReason::Graceful
    } else {
        DisconnectReason::Died
    })
}
