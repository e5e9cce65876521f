//! A scribbler process writes random words into one control area of a live channel or pool
//! for 200 ms, then exits, while honest peers keep working: nothing crashes or wedges, and
//! within `HEAL` of the scribbler's exit a fresh client is served and the honest client's
//! calls succeed again; a fresh Writer's message is delivered, and no message an honest
//! Writer sent is lost. 20 rounds per area.
//! Runs on Linux and Windows (under Wine in CI).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{child_exit, child_role, spawn, watchdog, TestName};
use shmlink::{Client, PoolConfig, PoolError, Reader, Server, Writer};

/// How soon after a scribbler exits the channel serves again (the promise in the docs).
const HEAL: Duration = Duration::from_secs(1);
/// Scheduling slack on top of [`HEAL`] for a loaded 2-CPU test machine.
const SLACK: Duration = Duration::from_millis(500);
const ROUNDS: u32 = 20;
const SCRIBBLE_FOR: Duration = Duration::from_millis(200);

/// The channel these tests build (4 slots, 64-byte messages, 4 notifications of 64 bytes):
/// data-region offsets, pinned by `src/channel/layout.rs`'s unit tests.
mod raw {
    pub(crate) const FLAGS: (usize, usize) = (64, 128);
    pub(crate) const LOCK: (usize, usize) = (128, 192);
    pub(crate) const DOORBELL: (usize, usize) = (192, 256);
    pub(crate) const RING: (usize, usize) = (256, 448);
    pub(crate) const SLOTS_AT: usize = 448;
    pub(crate) const STRIDE: usize = 960;
    pub(crate) const SLOTS: usize = 4;
}

/// The pool these tests build (32 buffers at most): index data-region offsets, pinned by
/// `src/pool/index/tests.rs`.
mod pool_raw {
    /// `state`, `grow_requested`.
    pub(crate) const STATE: (usize, usize) = (64, 72);
    /// The free, queued and disposed list heads, the allocated and received counts.
    pub(crate) const LISTS: (usize, usize) = (72, 128);
    pub(crate) const MUTEX: (usize, usize) = (512, 576);
    /// The queue, freed and service events.
    pub(crate) const EVENTS: (usize, usize) = (640, 832);
    pub(crate) const DIR: usize = 832;
    pub(crate) const ENTRY: usize = 64;
    pub(crate) const MAX_BUFFERS: usize = 32;
}

/// The byte ranges (in the data region) of `area`.
fn ranges(area: &str) -> Vec<(usize, usize)> {
    let per_slot = |from: usize, to: usize| {
        (0..raw::SLOTS)
            .map(|i| {
                let at = raw::SLOTS_AT + i * raw::STRIDE;
                (at + from, at + to)
            })
            .collect()
    };
    match area {
        "flags" => vec![raw::FLAGS],
        "lock" => vec![raw::LOCK],
        "doorbell" => vec![raw::DOORBELL],
        "ring" => vec![raw::RING],
        "slot-headers" => per_slot(0, 64),
        "done-events" => per_slot(64, 128),
        "notifications" => per_slot(256, raw::STRIDE),
        "pool-state" => vec![pool_raw::STATE],
        "pool-lists" => vec![pool_raw::LISTS],
        "pool-lock" => vec![pool_raw::MUTEX],
        "pool-events" => vec![pool_raw::EVENTS],
        // Each entry's prev and next links.
        "pool-links" => (0..pool_raw::MAX_BUFFERS)
            .map(|i| {
                let at = pool_raw::DIR + i * pool_raw::ENTRY;
                (at + 4, at + 12)
            })
            .collect(),
        _ => panic!("unknown area {area}"),
    }
}

/// Scribbler role: random words (and the values that hurt most: 0, 1, all ones, small
/// states with random generations) at random aligned offsets of `area`, for
/// [`SCRIBBLE_FOR`]; then exits.
fn scribbler(name: &str, area: &str, seed: u64) -> ! {
    let tag = if area.starts_with("pool") {
        "pool"
    } else {
        "chan"
    };
    let obj = common::RawObject::open(&common::os_name(name, tag));
    let ranges = ranges(area);
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let end = Instant::now() + SCRIBBLE_FOR;
    while Instant::now() < end {
        for _ in 0..64 {
            let r = next();
            let (from, to) = ranges[r as usize % ranges.len()];
            let at = from + (r >> 8) as usize % ((to - from) / 4) * 4;
            let v = match next() % 6 {
                0 => 0,
                1 => 1,
                2 => u32::MAX,
                3 => (r >> 32) as u32 & 0xFFFF_FF00 | (r as u32 % 6),
                _ => (r >> 32) as u32,
            };
            obj.write_u32(common::HEADER_SIZE + at, v);
        }
        std::thread::yield_now();
    }
    child_exit(0)
}

/// The reply of every server here: the request reversed.
fn reverse(req: &[u8], resp: &mut [u8]) -> usize {
    let n = req.len();
    resp[..n].copy_from_slice(req);
    resp[..n].reverse();
    n
}

/// Calls until the first success; returns how long that took, or `None` after `limit`.
/// With `strict`, a wrong answer fails the test (a scribbler may forge answers while it runs:
/// any client can write another's slot, see docs/ARCHITECTURE.md, "Trust model").
fn served_within(
    client: &mut Option<Client>,
    name: &str,
    limit: Duration,
    strict: bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let left = limit.saturating_sub(start.elapsed());
        if client.is_none() {
            *client = Client::connect_timeout(name, left).ok();
            continue;
        }
        let c = client.as_mut().unwrap();
        match c.call_timeout(b"abc", left.min(Duration::from_millis(200))) {
            Ok(r) if r == b"cba" => return Some(start.elapsed()),
            Ok(r) => assert!(!strict, "a wrong answer {r:?} after the scribbler left"),
            // Its own calls may fail while its slot is scribbled on; it reconnects.
            Err(_) => *client = None,
        }
    }
    None
}

fn scribble_rounds(area: &str, test: &str) {
    let _w = watchdog(test, Duration::from_secs(240));
    let name = TestName::new(&format!("scrib-{area}"));
    let handle = Server::builder(&name)
        .slots(4)
        .max_message(64)
        .notifications(4, 64)
        .workers(2)
        .create()
        .unwrap()
        .spawn(reverse)
        .unwrap();
    let mut worst = Duration::ZERO;
    for round in 0..ROUNDS {
        // An honest client calling all along (its calls may fail while scribbled on).
        let stop = Arc::new(AtomicBool::new(false));
        let honest = {
            let (stop, name) = (Arc::clone(&stop), name.as_str().to_owned());
            std::thread::spawn(move || {
                let mut client = None;
                while !stop.load(Ordering::Relaxed) {
                    served_within(&mut client, &name, Duration::from_millis(100), false);
                }
                client
            })
        };
        let seed = (u64::from(round) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut kid = spawn(test, "scribbler", &[&name, area, &seed.to_string()]);
        kid.wait_ok();
        let healed = Instant::now();
        // A fresh client is served, and so is the honest one.
        let mut fresh = None;
        let took = served_within(&mut fresh, &name, HEAL + SLACK, true)
            .unwrap_or_else(|| panic!("{area} round {round}: no fresh client served"));
        stop.store(true, Ordering::Relaxed);
        let mut old = honest.join().unwrap();
        let left = (HEAL + SLACK).saturating_sub(healed.elapsed());
        served_within(&mut old, &name, left.max(Duration::from_millis(1)), true)
            .unwrap_or_else(|| panic!("{area} round {round}: the honest client not served"));
        worst = worst.max(healed.elapsed()).max(took);
    }
    eprintln!("{area}: {ROUNDS} rounds, served again within {worst:?} of the scribbler's exit");
    handle.shutdown();
    name.assert_no_leftovers();
}

/// A message: the Writer's number and a sequence number.
fn numbered(writer: u32, seq: u64) -> [u8; 12] {
    let mut m = [0; 12];
    m[..4].copy_from_slice(&writer.to_le_bytes());
    m[4..].copy_from_slice(&seq.to_le_bytes());
    m
}

fn pool_rounds(area: &str, test: &str) {
    let _w = watchdog(test, Duration::from_secs(240));
    let name = TestName::new(&format!("scrib-{area}"));
    let config = PoolConfig {
        initial_buffer_size: 256,
        max_buffer_size: 4096,
        start_buffers: 8,
        max_buffers: pool_raw::MAX_BUFFERS as u32,
        resize_threshold: 2,
        ..PoolConfig::default()
    };
    let reader = Reader::create(&name, config).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Receives everything; numbers 0 (the honest Writer) and 1 (fresh Writers' markers).
    let (got_tx, got) = std::sync::mpsc::channel();
    let receiving = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match reader.recv_timeout(Duration::from_millis(20)) {
                    Ok(m) => {
                        let m = m.copy_to_vec();
                        let w = u32::from_le_bytes(m[..4].try_into().unwrap());
                        let seq = u64::from_le_bytes(m[4..12].try_into().unwrap());
                        let _ = got_tx.send((w, seq));
                    }
                    // While the scribbler runs, a receive may find the index beyond repair.
                    Err(PoolError::Timeout | PoolError::Corrupt(_)) => {}
                    Err(e) => panic!("the Reader failed: {e}"),
                }
            }
            reader
        })
    };
    // The honest Writer, sending all along; what `send` returned Ok for must arrive.
    let sending = {
        let (stop, name) = (Arc::clone(&stop), name.as_str().to_owned());
        std::thread::spawn(move || {
            let writer = Writer::connect(&name).unwrap();
            let mut sent = Vec::new();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut b) = writer.acquire_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                b.extend_from_slice(&numbered(0, seq)).unwrap();
                if writer.send(b).is_ok() {
                    sent.push(seq);
                }
                seq += 1;
                // Paced (a few thousand a second), so that markers are not queued behind
                // a flood.
                std::thread::sleep(Duration::from_micros(200));
            }
            sent
        })
    };
    let mut received = std::collections::HashSet::new();
    let mut worst = Duration::ZERO;
    for round in 0..ROUNDS {
        let seed = (u64::from(round) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut kid = spawn(test, "scribbler", &[&name, area, &seed.to_string()]);
        kid.wait_ok();
        let exited = Instant::now();
        // A fresh Writer's message is delivered.
        let fresh = Writer::connect(&name).unwrap();
        let mut b = fresh
            .acquire_timeout(HEAL + SLACK)
            .unwrap_or_else(|e| panic!("{area} round {round}: no buffer: {e}"));
        b.extend_from_slice(&numbered(1, u64::from(round))).unwrap();
        fresh.send(b).unwrap();
        loop {
            let left = (HEAL + SLACK).checked_sub(exited.elapsed());
            let left = left.unwrap_or_else(|| panic!("{area} round {round}: no marker in time"));
            match got.recv_timeout(left) {
                Ok((1, r)) if r == u64::from(round) => break,
                Ok((0, seq)) => {
                    received.insert(seq);
                }
                Ok(other) => panic!("{area} round {round}: unexpected {other:?}"),
                Err(_) => panic!("{area} round {round}: the marker was not delivered"),
            }
        }
        worst = worst.max(exited.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let sent = sending.join().unwrap();
    let reader = receiving.join().unwrap();
    for (w, seq) in got.try_iter() {
        assert_eq!(w, 0);
        received.insert(seq);
    }
    while let Some(m) = reader.try_recv().unwrap() {
        received.insert(u64::from_le_bytes(m[4..12].try_into().unwrap()));
    }
    let lost: Vec<_> = sent.iter().filter(|s| !received.contains(s)).collect();
    assert!(
        lost.is_empty(),
        "{area}: {} sent messages lost: {lost:?}",
        lost.len()
    );
    eprintln!(
        "{area}: {ROUNDS} rounds, a fresh Writer delivered within {worst:?}; {} messages, none lost",
        sent.len()
    );
    drop(reader);
    name.assert_no_leftovers();
}

macro_rules! pool_tests {
    ($($test:ident: $area:literal,)*) => {$(
        #[test]
        fn $test() {
            if let Some((_, args)) = child_role() {
                scribbler(&args[0], &args[1], args[2].parse().unwrap());
            }
            pool_rounds($area, stringify!($test));
        }
    )*};
}

pool_tests! {
    scribbled_pool_state_heals: "pool-state",
    scribbled_pool_lists_heal: "pool-lists",
    scribbled_pool_lock_heals: "pool-lock",
    scribbled_pool_events_heal: "pool-events",
    scribbled_pool_links_heal: "pool-links",
}

macro_rules! area_tests {
    ($($test:ident: $area:literal,)*) => {$(
        #[test]
        fn $test() {
            if let Some((_, args)) = child_role() {
                scribbler(&args[0], &args[1], args[2].parse().unwrap());
            }
            scribble_rounds($area, stringify!($test));
        }
    )*};
}

area_tests! {
    scribbled_flags_heal: "flags",
    scribbled_claim_lock_heals: "lock",
    scribbled_doorbell_heals: "doorbell",
    scribbled_ring_heals: "ring",
    scribbled_slot_headers_heal: "slot-headers",
    scribbled_done_events_heal: "done-events",
    scribbled_notification_queues_heal: "notifications",
}
