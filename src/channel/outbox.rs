//! The server's sending side of the notification queues (see `notify.rs`): one lock and one
//! count per slot, so any thread may send to any client.

use parking_lot::Mutex;

use super::error::NotifyError;
use super::handler::ClientId;
use super::layout::Mapped;
use super::notify::PushError;
use super::slot::FREE;
use crate::sync::Event;

/// What a [`broadcast`](crate::ClientTable::broadcast) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Broadcast {
    /// The connections the notification was queued for.
    pub sent: Vec<ClientId>,
    /// The connections it could not be queued for, and why (a full queue, or a connection
    /// that ended meanwhile).
    pub failed: Vec<(ClientId, NotifyError)>,
}

/// Per slot: the server's count of notifications published, and the owner's wake-up event.
pub(super) struct Outbox {
    heads: Vec<Mutex<u32>>,
    events: Vec<Event>,
}

impl Outbox {
    /// The outbox of a server whose slot `i` has the initialised note event `events[i]`.
    pub(super) fn new(events: Vec<Event>) -> Outbox {
        Outbox {
            heads: events.iter().map(|_| Mutex::new(0)).collect(),
            events,
        }
    }

    /// Queues a notification for connection `id`, written in place by `write`.
    pub(super) fn send(
        &self,
        map: &Mapped,
        id: ClientId,
        write: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<(), NotifyError> {
        let (i, epoch) = (id.slot(), id.epoch());
        let not_connected = Err(NotifyError::NotConnected { id });
        if i >= map.layout.slots {
            return not_connected;
        }
        let slot = map.slot(i);
        let mut head = self.heads[i as usize].lock();
        // A connection ending right after this check is harmless: the entry carries `epoch`,
        // which the slot's next owner skips.
        if slot.state() == FREE || slot.epoch() != epoch {
            return not_connected;
        }
        let queued = map.notes(i).push(&mut head, epoch, write);
        // Also on a full queue: a sleeping owner wakes and republishes a scribbled count.
        self.events[i as usize].notify();
        queued.map_err(|e| match e {
            PushError::Full => NotifyError::QueueFull {
                id,
                depth: map.layout.notes.depth,
            },
            PushError::TooLarge(len) => NotifyError::TooLarge {
                len,
                max: map.layout.notes.max,
            },
        })
    }

    /// Queues `msg` for every connected client.
    pub(super) fn broadcast(&self, map: &Mapped, msg: &[u8]) -> Result<Broadcast, NotifyError> {
        let max = map.layout.notes.max;
        if msg.len() > max {
            return Err(NotifyError::TooLarge {
                len: msg.len(),
                max,
            });
        }
        let mut out = Broadcast::default();
        for i in 0..map.layout.slots {
            let slot = map.slot(i);
            if slot.state() == FREE {
                continue;
            }
            let id = ClientId::new(i, slot.epoch());
            match self.send(map, id, |buf| {
                buf[..msg.len()].copy_from_slice(msg);
                msg.len()
            }) {
                Ok(()) => out.sent.push(id),
                // Left between the two looks: not a client any more.
                Err(NotifyError::NotConnected { .. }) => {}
                Err(e) => out.failed.push((id, e)),
            }
        }
        Ok(out)
    }
}
