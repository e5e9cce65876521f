//! A channel as `shmlink inspect` shows it: its configuration, flags and slots, read from
//! the segment without the slot mutex, trusting nothing (see
//! [`admin::inspect`](crate::admin::inspect)).
//!
//! Nothing here writes to the segment or takes a lock: each slot's words are loaded once
//! and reported as they are, so a slot changing state meanwhile shows one state or the other.

use std::sync::Arc;
use std::time::Duration;

use super::layout::{Config, Layout, Mapped, Notes, KIND_VERSION};
use super::slot::{self, SlotHeader};
use crate::error::{Error, Result};
use crate::name::ServiceName;
use crate::segment::{Access, Segment, SegmentKind};
use crate::sync::atomic::Ordering::{Acquire, Relaxed};

/// How long to wait for a channel that is being created to be published.
const READY_WAIT: Duration = Duration::from_millis(100);

/// What a slot's state word says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotState {
    /// Connected, no call in flight.
    Idle,
    /// The client is writing a request.
    Writing,
    /// A request waits for a worker.
    RequestReady,
    /// A worker runs the handler.
    InService,
    /// The answer waits for the client.
    ResponseReady,
    /// A value no shmlink process writes (a broken peer's).
    Invalid(u32),
}

/// One connected slot of a channel, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlotInfo {
    /// The slot's number.
    pub slot: u32,
    /// Its state.
    pub state: SlotState,
    /// The client's pid as it recorded it (for messages: a pid from another PID namespace
    /// is not this one's).
    pub client_pid: u32,
    /// Whether the client is alive (judged by its liveness token, not its pid).
    pub client_alive: bool,
    /// The slot's connection count: which connection to this slot the client is.
    pub connection: u32,
    /// Calls answered on this connection (statistics the server keeps; wrapping).
    pub calls: u32,
}

/// A channel as read from its segment (see [`admin::inspect`](crate::admin::inspect)).
///
/// The worker count is not here: it lives only in the server process
/// ([`ServerHandle::stats`](crate::ServerHandle::stats)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelInfo {
    /// The server's pid as recorded (for messages).
    pub server_pid: u32,
    /// Whether the server is alive (its liveness token where the OS has one).
    pub server_alive: bool,
    /// A graceful shutdown has begun: new calls are refused.
    pub shutting_down: bool,
    /// The workers have stopped: nothing will be answered any more.
    pub closed: bool,
    /// Slots (the most clients connected at once).
    pub slots: u32,
    /// Largest request or response in bytes.
    pub max_message: usize,
    /// Calls submitted and not answered yet: waiting for a worker or in a handler.
    pub in_flight: u32,
    /// Every slot that is not free, in slot order.
    pub clients: Vec<SlotInfo>,
}

/// Reads channel `name`'s segment; `Ok(None)` if the service has no channel.
///
/// # Errors
/// The segment exists but cannot be opened, or its configuration does not fit it.
pub(crate) fn inspect(name: &ServiceName) -> Result<Option<ChannelInfo>> {
    let seg = match Segment::open_kind_access(
        name,
        "chan",
        SegmentKind::Channel,
        KIND_VERSION,
        READY_WAIT,
        Access::own(true),
    ) {
        Ok(seg) => Arc::new(seg),
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let corrupt = |reason: &str| Error::Corrupt {
        name: name.as_str().to_owned(),
        reason: reason.to_owned(),
    };
    let config = seg
        .data()
        .get::<Config>(0)
        .ok_or_else(|| corrupt("channel segment smaller than its configuration"))?;
    let notes = Notes {
        depth: config.note_depth.load(Relaxed),
        max: config.note_max.load(Relaxed) as usize,
    };
    let map = Layout::new(
        config.slots.load(Relaxed),
        config.max_message.load(Relaxed) as usize,
        notes,
    )
    .and_then(|layout| Mapped::new(Arc::clone(&seg), layout))
    .ok_or_else(|| corrupt("configuration does not fit the segment"))?;
    let layout = map.layout;
    let clients: Vec<SlotInfo> = (0..layout.slots)
        .filter_map(|i| connected(&seg, map.slot(i), i))
        .collect();
    let in_flight = clients
        .iter()
        .filter(|c| matches!(c.state, SlotState::RequestReady | SlotState::InService))
        .count() as u32;
    let flags = map.flags();
    Ok(Some(ChannelInfo {
        server_pid: seg.owner().pid(),
        server_alive: seg.owner_alive(),
        shutting_down: flags.shutting_down.load(Acquire) != 0,
        closed: flags.closed.load(Acquire) != 0,
        slots: layout.slots,
        max_message: layout.max_message,
        in_flight,
        clients,
    }))
}

/// Slot `i` as read, `None` if it is free.
fn connected(seg: &Segment, h: &SlotHeader, i: u32) -> Option<SlotInfo> {
    let state = match h.state() {
        slot::FREE => return None,
        slot::IDLE => SlotState::Idle,
        slot::WRITING => SlotState::Writing,
        slot::REQUEST_READY => SlotState::RequestReady,
        slot::IN_SERVICE => SlotState::InService,
        slot::RESPONSE_READY => SlotState::ResponseReady,
        s => SlotState::Invalid(s),
    };
    let owner = h.owner();
    Some(SlotInfo {
        slot: i,
        state,
        client_pid: owner.pid,
        client_alive: seg.is_alive(owner),
        connection: h.epoch(),
        calls: h.served(),
    })
}
