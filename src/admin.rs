//! Finding, inspecting and cleaning up shmlink's objects: what `shmlink list`, `shmlink
//! inspect` and `shmlink clean` show.
//!
//! A process killed at the wrong moment can leave its segments behind (on Linux, files in
//! `/dev/shm`; a killed Reader's pool can hold gigabytes). The next `create` of the same
//! name removes them, but a name that is never used again keeps its memory until someone
//! cleans up. [`list`] shows every shmlink object with whether its owner is alive;
//! [`clean`] removes those whose owner is dead, and never a live or foreign object.
//! [`inspect`] reads what is inside one service's channel and pool: slots and clients,
//! buffers, lists and counters.
//!
//! Listing needs a namespace the OS can enumerate: Linux's `/dev/shm`. macOS cannot list
//! POSIX shared memory, and Windows' named sections vanish with their last handle (nothing
//! is ever left behind there), so both return an empty list.
//!
//! # Examples
//! ```
//! # let name = format!("doc-admin-{}", std::process::id());
//! let seg = shmlink::Segment::builder(&name).size(4096).create()?;
//! let mine = shmlink::admin::list()?
//!     .into_iter()
//!     .filter(|o| o.service.as_deref() == Some(name.as_str()))
//!     .collect::<Vec<_>>();
//! # #[cfg(target_os = "linux")]
//! assert_eq!(mine[0].status, shmlink::admin::Status::Live);
//! # Ok::<(), shmlink::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::name::ServiceName;
use crate::segment::{self, Segment, Verdict};

pub use crate::channel::inspect::{ChannelInfo, SlotInfo, SlotState};
pub use crate::pool::inspect::{BufferInfo, BufferStatus, PoolInfo, PoolState};

/// Whether an object is in use.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Its owner (or, while it is being created, its creator) is alive.
    Live,
    /// Its owner is dead: [`clean`] removes it.
    Stale,
    /// Not ours to judge or remove: not a published shmlink object, another user's, or
    /// otherwise refused (the reason says which).
    Untouchable(String),
}

/// One shmlink object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Object {
    /// The OS object name (on Linux, the file name in `/dev/shm` with a leading slash).
    pub os_name: String,
    /// The service name its header records (`None` if it has no readable header).
    pub service: Option<String>,
    /// What it holds: "channel", "pool index", "pool buffer", "mutex", "event", ...
    pub kind: String,
    /// The owner's process id as recorded (for messages: another PID namespace's id, or 0
    /// while it is being created).
    pub owner_pid: u32,
    /// Size in bytes, header included.
    pub size: u64,
    /// Live, stale, or not ours.
    pub status: Status,
}

/// Every shmlink object this process can see, in name order.
///
/// # Errors
/// [`Error::Os`] if the shared-memory directory cannot be read.
pub fn list() -> Result<Vec<Object>> {
    let mut out = Vec::new();
    for os_name in os_names()? {
        let s = match segment::survey(&os_name) {
            Ok(s) => s,
            Err(Error::NotFound { .. }) => continue, // removed meanwhile
            Err(e) => Object::untouchable_survey(e),
        };
        out.push(Object {
            os_name,
            service: s.service.as_ref().map(|n| n.as_str().to_owned()),
            kind: s.kind,
            owner_pid: s.owner_pid,
            size: s.size,
            status: match s.verdict {
                Verdict::Live => Status::Live,
                Verdict::Stale => Status::Stale,
                Verdict::Untouchable(why) => Status::Untouchable(why),
            },
        });
    }
    Ok(out)
}

/// Removes every stale object (owner dead) and returns what it removed; with `dry_run`,
/// returns what it would remove and removes nothing. Live, foreign and other users'
/// objects are never touched: each is judged again, as `create` would, just before removal.
///
/// # Errors
/// As [`list`].
pub fn clean(dry_run: bool) -> Result<Vec<Object>> {
    let mut removed = Vec::new();
    for o in list()? {
        if o.status != Status::Stale {
            continue;
        }
        if !dry_run {
            let Ok(s) = segment::survey(&o.os_name) else {
                continue;
            };
            let (Some(service), Some(tag)) = (s.service, s.tag) else {
                continue;
            };
            // Judged again under the cleanup lock; refuses anything live or not ours.
            if !matches!(Segment::remove_tagged(&service, &tag, false), Ok(true)) {
                continue;
            }
        }
        removed.push(o);
    }
    Ok(removed)
}

/// What one service holds (see [`inspect`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inspection {
    /// The service name.
    pub service: String,
    /// Its objects, as [`list`] shows them (empty where the OS cannot list them: macOS,
    /// Windows).
    pub objects: Vec<Object>,
    /// Its channel's slots and clients, if it has a channel.
    pub channel: Option<ChannelInfo>,
    /// Its pool's lists, buffers and counters, if it has a pool.
    pub pool: Option<PoolInfo>,
    /// Parts that exist but could not be read, each with the reason (another user's, another
    /// layout version, corrupt).
    pub unreadable: Vec<String>,
}

/// Reads what service `name` holds: its objects, and what is inside its channel and pool.
///
/// Read-only and without waiting: nothing is written to the objects and no lock is waited
/// for (a channel or pool being created is given at most 100 ms to appear), so inspecting
/// never stalls or disturbs the service. (Windows can tell whether a Reader is alive only
/// by taking its alive lock, which is given back at once.) Every value is read from memory that its peers write, so it is
/// a snapshot that may be inconsistent while they work, and it reports garbage a broken
/// peer wrote as it is ([`SlotState::Invalid`], [`BufferStatus::Invalid`]) rather than
/// failing.
///
/// # Examples
/// ```
/// use shmlink::{PoolConfig, Reader, Writer};
/// # let name = format!("doc-inspect-{}", std::process::id());
/// let reader = Reader::create(&name, PoolConfig::default())?;
/// let writer = Writer::connect(&name)?;
/// let mut buf = writer.acquire()?;
/// buf.extend_from_slice(b"hello")?;
/// writer.send(buf).map_err(|e| e.error().to_string())?;
///
/// let pool = shmlink::admin::inspect(&name)?.pool.expect("the service has a pool");
/// assert_eq!((pool.stats.queued, pool.queue.len()), (1, 1));
/// assert!(pool.reader_alive);
/// # drop(reader.try_recv()?); // leave nothing queued: the pool goes with the Reader
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::InvalidName`] for a name that is not a service name; as [`list`].
pub fn inspect(name: &str) -> Result<Inspection> {
    let service = ServiceName::new(name)?;
    let objects = list()?
        .into_iter()
        .filter(|o| o.service.as_deref() == Some(name))
        .collect();
    let mut unreadable = Vec::new();
    let mut note = |what: &str, e: Error| unreadable.push(format!("{what}: {e}"));
    let channel = crate::channel::inspect::inspect(&service).unwrap_or_else(|e| {
        note("channel", e);
        None
    });
    let pool = crate::pool::inspect::inspect(&service).unwrap_or_else(|e| {
        note("pool", e);
        None
    });
    Ok(Inspection {
        service: name.to_owned(),
        objects,
        channel,
        pool,
        unreadable,
    })
}

impl Object {
    fn untouchable_survey(e: Error) -> segment::Survey {
        segment::Survey {
            service: None,
            tag: None,
            kind: "?".into(),
            owner_pid: 0,
            size: 0,
            verdict: Verdict::Untouchable(e.to_string()),
        }
    }
}

/// The OS names of all objects whose name starts like ours.
#[cfg(target_os = "linux")]
fn os_names() -> Result<Vec<String>> {
    let dir = std::fs::read_dir("/dev/shm").map_err(|e| Error::os("read_dir", "/dev/shm", e))?;
    let mut names: Vec<String> = dir
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("shmlink."))
        .map(|n| format!("/{n}"))
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(not(target_os = "linux"))]
fn os_names() -> Result<Vec<String>> {
    Ok(Vec::new())
}
