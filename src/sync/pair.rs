//! [`EventPair`]: two events in one segment for a request/answer exchange.

use std::sync::Arc;

use super::event::{Event, WaitStrategy, EVENT_STORAGE, KIND_VERSION};
use crate::error::{Error, Result};
use crate::name::ServiceName;
use crate::segment::{Access, Segment, SegmentKind, DEFAULT_MODE, READY_WAIT};

/// Two events for a request/answer exchange: `exec` ("request ready") and `done` ("answer
/// ready"), in one segment.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmlink::EventPair;
/// # let name = format!("doc-pair-{}", std::process::id());
/// let server = EventPair::create(&name)?;
/// let client = EventPair::open(&name)?;   // usually in another process
/// client.exec().set();
/// assert!(server.exec().wait_timeout(Duration::from_secs(1)));
/// server.done().set();
/// assert!(client.done().wait_timeout(Duration::from_secs(1)));
/// # Ok::<(), shmlink::Error>(())
/// ```
#[derive(Debug)]
pub struct EventPair {
    exec: Event,
    done: Event,
}

impl EventPair {
    /// Creates the pair `name`, neither event set.
    ///
    /// # Errors
    /// As [`SegmentBuilder::create`](crate::SegmentBuilder::create).
    pub fn create(name: &str) -> Result<EventPair> {
        EventPair::create_with_mode(name, DEFAULT_MODE)
    }

    /// As [`create`](Self::create), with permission bits `mode` on POSIX (e.g. `0o660` for a
    /// group of users; others open it with [`open_with`](Self::open_with)). Ignored on
    /// Windows.
    ///
    /// # Errors
    /// As [`SegmentBuilder::create`](crate::SegmentBuilder::create).
    pub fn create_with_mode(name: &str, mode: u32) -> Result<EventPair> {
        let seg = Arc::new(
            Segment::builder(name)
                .mode(mode)
                .tag("pair")
                .kind(SegmentKind::Event, KIND_VERSION)
                .size(2 * EVENT_STORAGE)
                .create_unpublished()?,
        );
        // SAFETY: two disjoint, 64-aligned EVENT_STORAGE cells in the unpublished data region.
        let (exec, done) = unsafe {
            (
                Event::init_at(&seg, 0)?,
                Event::init_at(&seg, EVENT_STORAGE)?,
            )
        };
        seg.publish();
        Ok(EventPair { exec, done })
    }

    /// Opens the pair `name` created by another process.
    ///
    /// # Errors
    /// As [`Segment::open`].
    pub fn open(name: &str) -> Result<EventPair> {
        EventPair::open_with(name, Access::owner_only())
    }

    /// As [`open`](Self::open), accepting what `access` allows (another user's object, or
    /// one others may write: see [`Access`]).
    ///
    /// # Errors
    /// As [`Segment::open`].
    pub fn open_with(name: &str, access: Access) -> Result<EventPair> {
        let seg = Arc::new(Segment::open_kind_access(
            &ServiceName::new(name)?,
            "pair",
            SegmentKind::Event,
            KIND_VERSION,
            READY_WAIT,
            access,
        )?);
        if seg.len() < 2 * EVENT_STORAGE {
            return Err(Error::Corrupt {
                name: name.into(),
                reason: "event pair segment too small".into(),
            });
        }
        // SAFETY: the creator initialised two events at offsets 0 and EVENT_STORAGE.
        let (exec, done) = unsafe {
            (
                Event::open_at(&seg, 0)?,
                Event::open_at(&seg, EVENT_STORAGE)?,
            )
        };
        Ok(EventPair { exec, done })
    }

    /// Uses `strategy` for both events' waits in this process.
    pub fn wait_strategy(self, strategy: WaitStrategy) -> Self {
        EventPair {
            exec: self.exec.wait_strategy(strategy),
            done: self.done.wait_strategy(strategy),
        }
    }

    /// "Request ready": set by the client, waited on by the server.
    pub fn exec(&self) -> &Event {
        &self.exec
    }

    /// "Answer ready": set by the server, waited on by the client.
    pub fn done(&self) -> &Event {
        &self.done
    }
}
