//! Judging an object found by OS name without opening it as a kind (`shmlink::admin`).

use super::*;

/// What [`survey`] found under one OS name.
#[derive(Debug)]
pub(crate) struct Survey {
    /// The service name the header records (`None` before it is published, or when the
    /// object is not ours).
    pub(crate) service: Option<ServiceName>,
    /// What follows `shmlink.<service>.` in the OS name (e.g. `chan`, `pool.b3.g1`).
    pub(crate) tag: Option<String>,
    pub(crate) kind: String,
    pub(crate) owner_pid: u32,
    pub(crate) size: u64,
    pub(crate) verdict: Verdict,
}

/// Whether an object is in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Live,
    Stale,
    /// Not made by shmlink, or not ours to judge: the reason.
    Untouchable(String),
}

/// Reads the header of the object `os_name` and judges it as stale cleanup would, without
/// removing anything.
pub(crate) fn survey(os_name: &str) -> Result<Survey> {
    let expect = sys::Expect::default();
    let probe = ServiceName::new("survey").expect("a valid name");
    let untouchable = |why: String| Survey {
        service: None,
        tag: None,
        kind: "?".into(),
        owner_pid: 0,
        size: 0,
        verdict: Verdict::Untouchable(why),
    };
    let shm = match open_shm(&probe, os_name, &expect) {
        Ok(shm) => shm,
        Err(Error::Squatted { reason, .. }) => return Ok(untouchable(reason)),
        Err(e) => return Err(e),
    };
    if shm.len() < HEADER_SIZE {
        let mut s = untouchable(format!("{} bytes, no header", shm.len()));
        if shm.token() == sys::Token::Held {
            s.verdict = Verdict::Live;
        }
        return Ok(s);
    }
    let h = shm_region(&shm).at::<Header>(0);
    if h.magic.load(Ordering::Acquire) != MAGIC
        || h.state.load(Ordering::Acquire) != STATE_READY
        || h.header_version.load(Ordering::Relaxed) != HEADER_VERSION
    {
        let mut s = untouchable("no published shmlink header".into());
        if shm.token() == sys::Token::Held {
            s.verdict = Verdict::Live;
        }
        return Ok(s);
    }
    let len = (h.name_len.load(Ordering::Relaxed) as usize).min(MAX_NAME_LEN);
    let bytes: Vec<u8> = h.name[..len]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let Some(service) = String::from_utf8(bytes)
        .ok()
        .and_then(|n| ServiceName::new(&n).ok())
    else {
        return Ok(untouchable("the header's service name is invalid".into()));
    };
    let prefix = format!("{}shmlink.{}.", sys::OS_NAME_PREFIX, service.as_str());
    let tag = os_name.strip_prefix(&prefix).map(str::to_owned);
    let kind = SegmentKind::describe(h.kind.load(Ordering::Relaxed));
    let owner_pid = h.owner_pid.load(Ordering::Relaxed);
    let size = h.size.load(Ordering::Relaxed);
    let verdict = match classify(&service, os_name, &expect, shm) {
        Ok(Found::Live(_)) => Verdict::Live,
        Ok(Found::Stale(_)) => Verdict::Stale,
        Err(e) => Verdict::Untouchable(e.to_string()),
    };
    Ok(Survey {
        service: Some(service),
        tag,
        kind,
        owner_pid,
        size,
        verdict,
    })
}
