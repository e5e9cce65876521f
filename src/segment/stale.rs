//! Judging an object that stands under a name: live (its owner or creator is alive), stale
//! (removable), or not ours; and removing a stale one without racing a fresh creator.

use super::*;

/// What an existing object turned out to be.
pub(super) enum Found {
    Live(u32),
    Stale(sys::Shm),
}

/// Opens the object `os_name` of `name` if `expect` allows it ([`Error::Squatted`] if not).
pub(super) fn open_shm(
    name: &ServiceName,
    os_name: &str,
    expect: &sys::Expect,
) -> Result<sys::Shm> {
    sys::Shm::open(os_name, expect).map_err(|e| match e {
        sys::OpenError::Os(e) => Error::os("shm_open", name.as_str(), e),
        sys::OpenError::Squatted { reason, owner_uid } => Error::Squatted {
            name: name.to_string(),
            reason,
            owner_uid,
        },
    })
}

/// Removes the name `os_name` if it still names `shm`, giving up after [`CLEANUP_LOCK_WAIT`].
pub(super) fn unlink(name: &ServiceName, os_name: &str, shm: &sys::Shm) -> Result<bool> {
    sys::Shm::unlink_stale(os_name, shm, CLEANUP_LOCK_WAIT).map_err(|e| {
        let op = if e.kind() == io::ErrorKind::WouldBlock {
            "cleanup lock"
        } else {
            "shm_unlink"
        };
        Error::os(op, name.as_str(), e)
    })
}

/// Removes the object `os_name` if it is ours and its owner is dead; errors if it is live,
/// foreign or squatted. Returns when the caller may try to create again.
pub(super) fn remove_if_stale(
    name: &ServiceName,
    os_name: &str,
    expect: &sys::Expect,
) -> Result<()> {
    let shm = match open_shm(name, os_name, expect) {
        Ok(shm) => shm,
        Err(Error::NotFound { .. }) => return Ok(()), // gone meanwhile
        Err(e) => return Err(e),
    };
    match classify(name, os_name, expect, shm)? {
        Found::Live(pid) => Err(Error::AlreadyRunning {
            name: name.to_string(),
            pid,
        }),
        Found::Stale(shm) => unlink(name, os_name, &shm).map(drop),
    }
}

/// Decides whether the object `shm` (opened as `os_name`) is live or stale.
///
/// Where the OS has a liveness token (Linux), the creator took it before sizing the object
/// and holds it while it lives, so a held token means live however slowly the creator
/// initialises, and a free one means it is gone: no waiting. Elsewhere an object without a
/// header yet is given [`READY_WAIT`] / 4 to get one before it is judged stale. A published
/// header that names another service is [`Error::Squatted`]; an object without our magic is
/// [`Error::Foreign`]; neither is ever judged stale.
///
/// A segment that belongs to another (see [`SegmentKind::parent_tag`]) is live while the
/// instance it names is, and stale once that one is stale or gone.
pub(super) fn classify(
    name: &ServiceName,
    os_name: &str,
    expect: &sys::Expect,
    shm: sys::Shm,
) -> Result<Found> {
    classify_at(name, os_name, expect, shm, true)
}

/// As [`classify`]; `follow` says whether a parent is followed (once: the parent's own
/// header, which a peer may have scribbled, is never followed further).
fn classify_at(
    name: &ServiceName,
    os_name: &str,
    expect: &sys::Expect,
    mut shm: sys::Shm,
    follow: bool,
) -> Result<Found> {
    let start = Instant::now();
    let foreign = || {
        Err(Error::Foreign {
            name: name.to_string(),
        })
    };
    loop {
        let settled = start.elapsed() > READY_WAIT / 4;
        let token = shm.token();
        if shm.len() >= HEADER_SIZE {
            let region = shm_region(&shm);
            let h = region.at::<Header>(0);
            let magic = h.magic.load(Ordering::Acquire);
            if magic == MAGIC {
                // The owner's identity is written before the magic (Release / Acquire).
                check_name(h, name, &shm)?;
                let owner = ProcessId::from_raw(
                    h.owner_pid.load(Ordering::Acquire),
                    h.owner_start.load(Ordering::Acquire),
                );
                let parent_tag = SegmentKind::parent_tag(h.kind.load(Ordering::Relaxed));
                let parent = load_token(&h.parent);
                if let Some(tag) = parent_tag.filter(|_| follow && parent != [0; 16]) {
                    return Ok(match parent_live(name, tag, parent, expect)? {
                        true => Found::Live(owner.pid()),
                        false => Found::Stale(shm),
                    });
                }
                // A token decides where the OS has one (pids lie across PID namespaces).
                let live = match token {
                    sys::Token::Held => true,
                    sys::Token::Free => false,
                    sys::Token::Unknown => owner.is_alive(),
                };
                if live {
                    return Ok(Found::Live(owner.pid()));
                }
                return Ok(Found::Stale(shm));
            } else if magic != 0 {
                return foreign();
            } else if token == sys::Token::Held {
                // Its creator is alive and has not written the header yet.
                return Ok(Found::Live(0));
            } else if token == sys::Token::Free || settled {
                // Sized and zero: a creator that died before writing anything.
                let all_zero = region
                    .slice::<AtomicU64>(0, HEADER_SIZE / 8)
                    .is_some_and(|words| words.iter().all(|w| w.load(Ordering::Relaxed) == 0));
                return if all_zero {
                    Ok(Found::Stale(shm))
                } else {
                    foreign()
                };
            }
        } else if shm.len() > 0 {
            // We size objects in one ftruncate, so a short object is not ours.
            return foreign();
        } else {
            // Not sized yet: a creator still at work, or one that died there.
            match token {
                sys::Token::Held => return Ok(Found::Live(0)),
                sys::Token::Free => return Ok(Found::Stale(shm)),
                sys::Token::Unknown if settled => return Ok(Found::Stale(shm)),
                sys::Token::Unknown => {}
            }
        }
        std::thread::sleep(Duration::from_millis(2));
        shm = open_shm(name, os_name, expect)?;
    }
}

/// Whether the segment `tag` of `name` is the instance `token` and live. Gone, or another
/// instance under the name (a newer one), is not.
fn parent_live(
    name: &ServiceName,
    tag: &str,
    token: [u8; 16],
    expect: &sys::Expect,
) -> Result<bool> {
    let os_name = name.os_name(tag);
    let shm = match open_shm(name, &os_name, expect) {
        Ok(shm) => shm,
        Err(Error::NotFound { .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    if shm.len() < HEADER_SIZE {
        return Ok(false);
    }
    let h = shm_region(&shm).at::<Header>(0);
    if h.magic.load(Ordering::Acquire) != MAGIC || load_token(&h.token) != token {
        return Ok(false);
    }
    let found = classify_at(name, &os_name, expect, shm, false)?;
    Ok(matches!(found, Found::Live(_)))
}

/// Refuses a published segment whose header names another service than `name` (a peer
/// linked another service's object under this name, or two names hash alike on macOS).
pub(super) fn check_name(h: &Header, name: &ServiceName, shm: &sys::Shm) -> Result<()> {
    // Nothing is trusted before READY, and the name's place depends on the header version.
    if h.state.load(Ordering::Acquire) != STATE_READY
        || h.header_version.load(Ordering::Relaxed) != HEADER_VERSION
    {
        return Ok(());
    }
    // Read once: a peer could change the length under us; clamp it to the field.
    let len = (h.name_len.load(Ordering::Relaxed) as usize).min(MAX_NAME_LEN);
    let found: Vec<u8> = h.name[..len]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    if found == name.as_str().as_bytes() {
        return Ok(());
    }
    Err(Error::Squatted {
        name: name.to_string(),
        reason: format!(
            "its header names service {:?}",
            String::from_utf8_lossy(&found)
        ),
        owner_uid: shm.owner_uid().unwrap_or(u32::MAX),
    })
}
