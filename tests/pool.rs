//! The buffer pool across real processes: many Writers, growth and sweeping, Writers and
//! Readers SIGKILLed, copy-on-send, and a hostile process. (Files streamed through the pool:
//! tests/stream.rs.) Runs on Linux and Windows (under Wine in CI).

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
use common::NOBODY;
use common::{
    child_exit, child_role, hear_parent, poll_until, spawn, tell_parent, watchdog, TestName,
};
use shmlink::{checksum, PoolConfig, PoolError, Reader, WaitStrategy, WriteBuf, Writer};
#[cfg(target_os = "linux")]
use shmlink::{Access, Error};

/// A message of writer `id` with sequence number `seq`: 32 bytes with their own checksum.
fn message(buf: &mut WriteBuf, id: u32, seq: u64) {
    buf.set_len(32).unwrap();
    buf[0..4].copy_from_slice(&id.to_le_bytes());
    buf[4..8].copy_from_slice(&[0xA5; 4]);
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    buf[16..24].copy_from_slice(&(seq.wrapping_mul(0x9E37_79B9) ^ u64::from(id)).to_le_bytes());
    let sum = checksum(&buf[..24]);
    buf[24..32].copy_from_slice(&sum.to_le_bytes());
}

/// Checks a message's checksum; returns (writer id, seq).
fn parse(m: &[u8]) -> (u32, u64) {
    assert_eq!(m.len(), 32, "message length");
    let sum = u64::from_le_bytes(m[24..32].try_into().unwrap());
    assert_eq!(checksum(&m[..24]), sum, "message checksum");
    (
        u32::from_le_bytes(m[0..4].try_into().unwrap()),
        u64::from_le_bytes(m[8..16].try_into().unwrap()),
    )
}

/// Acquires, riding out a Reader restart (NoReader / PoolFull) until `give_up`.
fn acquire_retrying(w: &Writer, give_up: Instant) -> WriteBuf {
    loop {
        match w.acquire_timeout(Duration::from_secs(1)) {
            Ok(b) => return b,
            Err(PoolError::NoReader | PoolError::PoolFull) if Instant::now() < give_up => {
                // Back off while no Reader is there (not a synchronisation: the loop retries).
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("acquire: {e}"),
        }
    }
}

/// Sends writer `id`'s messages `0..n`, retrying what fails, then says "done".
fn writer_role(name: &str, id: u32, n: u64) -> ! {
    let w = Writer::connect(name).unwrap();
    tell_parent("ready");
    assert_eq!(hear_parent().as_deref(), Some("go"));
    let give_up = Instant::now() + Duration::from_secs(90);
    for seq in 0..n {
        let mut buf = acquire_retrying(&w, give_up);
        message(&mut buf, id, seq);
        loop {
            match w.send(buf) {
                Ok(()) => break,
                Err(e) if Instant::now() < give_up => {
                    buf = e.into_inner();
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("send: {e}"),
            }
        }
    }
    tell_parent("done");
    child_exit(0)
}

fn small_config() -> PoolConfig {
    PoolConfig {
        initial_buffer_size: 256,
        max_buffer_size: 4096,
        start_buffers: 32,
        max_buffers: 64,
        min_buffers: Some(8),
        resize_increment: Some(8),
        resize_threshold: 4,
        sweep_timeout: Duration::from_secs(30),
    }
}

#[test]
fn four_writers_send_100k_messages_each_delivered_once_in_order() {
    const TEST: &str = "four_writers_send_100k_messages_each_delivered_once_in_order";
    if let Some((_, args)) = child_role() {
        writer_role(&args[0], args[1].parse().unwrap(), args[2].parse().unwrap());
    }
    let _w = watchdog(TEST, Duration::from_secs(120));
    let name = TestName::new("pool-4x");
    // Fewer under Windows: in CI that is Wine, where every event wake is a wineserver round
    // trip (about 100x slower than a futex).
    let n: u64 = if cfg!(windows) { 5_000 } else { 100_000 };
    let reader = Reader::create(&name, small_config()).unwrap();
    let mut writers: Vec<_> = (0..4)
        .map(|id| spawn(TEST, "writer", &[&name, &id.to_string(), &n.to_string()]))
        .collect();
    for w in &mut writers {
        w.expect("ready");
    }
    for w in &mut writers {
        w.send("go");
    }
    let mut next = [0u64; 4];
    for _ in 0..4 * n {
        let m = reader
            .recv_timeout(Duration::from_secs(30))
            .expect("a message within 30 s");
        assert!(!m.redelivered());
        let (id, seq) = parse(&m);
        assert!(id < 4, "writer id {id}");
        assert_eq!(
            seq, next[id as usize],
            "writer {id}: out of order or duplicated"
        );
        next[id as usize] += 1;
    }
    for w in &mut writers {
        w.expect("done");
        w.wait_ok();
    }
    assert!(matches!(reader.try_recv(), Ok(None)), "nothing more");
    let s = reader.stats().unwrap();
    assert_eq!(
        (s.sent, s.delivered, s.queued, s.allocated, s.received),
        (4 * n, 4 * n, 0, 0, 0)
    );
    reader.validate().unwrap();
    drop(reader);
    name.assert_no_leftovers();
}

#[test]
fn a_burst_grows_the_pool_to_max_buffers_and_idle_time_sweeps_it_to_min_buffers() {
    const TEST: &str =
        "a_burst_grows_the_pool_to_max_buffers_and_idle_time_sweeps_it_to_min_buffers";
    if let Some((_, args)) = child_role() {
        let w = Writer::connect(&args[0]).unwrap();
        let held: Vec<_> = (0..16)
            .map(|_| w.acquire_timeout(Duration::from_secs(20)).unwrap())
            .collect();
        tell_parent("held");
        assert_eq!(hear_parent().as_deref(), Some("release"));
        drop(held);
        tell_parent("released");
        hear_parent();
        child_exit(0);
    }
    let _w = watchdog(TEST, Duration::from_secs(60));
    let name = TestName::new("pool-grow");
    let config = PoolConfig {
        initial_buffer_size: 1024,
        max_buffer_size: 4096,
        start_buffers: 2,
        max_buffers: 16,
        min_buffers: Some(2),
        resize_increment: Some(4),
        resize_threshold: 2,
        sweep_timeout: Duration::from_millis(300),
    };
    let reader = Reader::create(&name, config).unwrap();
    assert_eq!(reader.stats().unwrap().buffers, 2);
    let mut child = spawn(TEST, "burst", &[&name]);
    child.expect("held");
    let s = reader.stats().unwrap();
    assert_eq!((s.buffers, s.allocated, s.free), (16, 16, 0), "{s:?}");
    assert!(s.grown >= 14);
    // Never above max_buffers.
    let w = Writer::connect(&name).unwrap();
    assert!(matches!(
        w.acquire_timeout(Duration::from_millis(300)),
        Err(PoolError::PoolFull)
    ));
    assert_eq!(reader.stats().unwrap().buffers, 16);
    child.send("release");
    child.expect("released");
    assert!(
        poll_until(Duration::from_secs(20), || reader.stats().unwrap().buffers
            == 2),
        "not swept to min_buffers: {:?}",
        reader.stats()
    );
    let s = reader.stats().unwrap();
    assert_eq!((s.free, s.disposed, s.swept), (2, 14, 14), "{s:?}");
    reader.validate().unwrap();
    // The pool still works, and a Writer grows a buffer up to max_buffer_size.
    let mut b = w.acquire().unwrap();
    b.extend_from_slice(b"after the sweep").unwrap();
    b.set_len(4000).unwrap();
    assert!(b.capacity() >= 4000);
    b[3999] = 42;
    w.send(b).unwrap();
    let m = reader.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (&m[..15], m.len(), m[3999]),
        (&b"after the sweep"[..], 4000, 42)
    );
    drop(m);
    child.send("exit");
    child.wait_ok();
    drop(w);
    drop(reader);
    name.assert_no_leftovers();
}

#[test]
fn buffers_held_by_a_killed_writer_return_to_the_free_list() {
    const TEST: &str = "buffers_held_by_a_killed_writer_return_to_the_free_list";
    if let Some((_, args)) = child_role() {
        let w = Writer::connect(&args[0]).unwrap();
        let mut held: Vec<_> = (0..3).map(|_| w.acquire().unwrap()).collect();
        // One of them grown into a bigger segment, to check that one comes back too.
        held[0].set_len(3000).unwrap();
        tell_parent("held");
        hear_parent();
        child_exit(1);
    }
    let _w = watchdog(TEST, Duration::from_secs(60));
    let name = TestName::new("pool-reclaim");
    let config = PoolConfig {
        start_buffers: 8,
        max_buffers: 8,
        ..small_config()
    };
    let reader = Reader::create(&name, config).unwrap();
    let mut child = spawn(TEST, "holder", &[&name]);
    child.expect("held");
    assert_eq!(reader.stats().unwrap().allocated, 3);
    child.kill();
    assert!(
        poll_until(Duration::from_secs(10), || {
            let s = reader.stats().unwrap();
            s.allocated == 0 && s.free == s.buffers
        }),
        "not reclaimed: {:?}",
        reader.stats()
    );
    assert_eq!(reader.stats().unwrap().reclaimed, 3);
    reader.validate().unwrap();
    // All 8 are usable again, the grown one included.
    let w = Writer::connect(&name).unwrap();
    let all: Vec<_> = (0..8).map(|_| w.acquire().unwrap()).collect();
    // Windows: the grown buffer was a section the killed Writer created and nobody else
    // mapped, gone with it; the Writer that finds it missing disposes of it and the pool
    // grows a new one at the initial size.
    assert_eq!(all.iter().any(|b| b.capacity() >= 3000), cfg!(unix));
    drop(all);
    drop(w);
    drop(reader);
    name.assert_no_leftovers();
}

fn record_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{name}.records"))
}

#[test]
fn a_reader_killed_mid_stream_is_replaced_and_nothing_sent_is_lost() {
    const TEST: &str = "a_reader_killed_mid_stream_is_replaced_and_nothing_sent_is_lost";
    if let Some((role, args)) = child_role() {
        if role == "writer" {
            writer_role(&args[0], args[1].parse().unwrap(), args[2].parse().unwrap());
        }
        // The first Reader: records each message (writer, seq) before releasing it.
        let reader = Reader::create(&args[0], small_config()).unwrap();
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(record_path(&args[0]))
            .unwrap();
        tell_parent("ready");
        // Holds on to the last message until the next one is recorded, so that a kill
        // always leaves at least one received-but-unreleased message to redeliver.
        let mut _last = None;
        loop {
            let m = reader.recv().unwrap();
            let (id, seq) = parse(&m);
            let mut rec = [0u8; 12];
            rec[..4].copy_from_slice(&id.to_le_bytes());
            rec[4..].copy_from_slice(&seq.to_le_bytes());
            out.write_all(&rec).unwrap();
            _last = Some(m);
        }
    }
    let _w = watchdog(TEST, Duration::from_secs(90));
    let name = TestName::new("pool-restart");
    let records = record_path(&name);
    let _ = std::fs::remove_file(&records);
    let n: u64 = 20_000;
    let mut first = spawn(TEST, "reader", &[&name]);
    first.expect("ready");
    let mut writers: Vec<_> = (0..2)
        .map(|id| spawn(TEST, "writer", &[&name, &id.to_string(), &n.to_string()]))
        .collect();
    for w in &mut writers {
        w.expect("ready");
        w.send("go");
    }
    let len = || std::fs::metadata(&records).map_or(0, |m| m.len());
    assert!(
        poll_until(Duration::from_secs(30), || len() >= 12 * 3000),
        "the first Reader is too slow"
    );
    first.kill();
    let mut seen: [HashSet<u64>; 2] = [HashSet::new(), HashSet::new()];
    let bytes = std::fs::read(&records).unwrap();
    let _ = std::fs::remove_file(&records);
    let mut next = [0u64; 2];
    for rec in bytes.chunks_exact(12) {
        let id = u32::from_le_bytes(rec[..4].try_into().unwrap()) as usize;
        let seq = u64::from_le_bytes(rec[4..].try_into().unwrap());
        assert_eq!(seq, next[id], "first Reader: writer {id} out of order");
        next[id] += 1;
        seen[id].insert(seq);
    }
    assert!(next[0] < n || next[1] < n, "the stream was not interrupted");
    eprintln!("the first Reader processed {next:?} before it was killed");
    // The replacement adopts the pool: the Writers carry on by themselves.
    let reader = Reader::create(&name, small_config()).unwrap();
    assert!(reader.adopted(), "refused: {:?}", reader.adoption_refused());
    assert_eq!(
        reader.config(),
        &small_config(),
        "the adopter's configuration, the same as the dead Reader's"
    );
    let (mut redelivered, mut fresh_started) = (0, [false; 2]);
    while seen.iter().any(|s| s.len() < n as usize) {
        let m = reader
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}; have {} + {}", seen[0].len(), seen[1].len()));
        let (id, seq) = parse(&m);
        let id = id as usize;
        if m.redelivered() {
            redelivered += 1;
            assert!(!fresh_started[id], "redelivered messages come first");
            assert!(
                seq <= next[id],
                "writer {id}: redelivered {seq}, beyond {}",
                next[id]
            );
            if seq == next[id] {
                next[id] += 1; // received by the first Reader, which died before recording it
            }
            seen[id].insert(seq);
        } else {
            fresh_started[id] = true;
            assert_eq!(
                seq, next[id],
                "writer {id}: out of order, lost or duplicated"
            );
            assert!(seen[id].insert(seq), "writer {id}: {seq} delivered twice");
            next[id] += 1;
        }
    }
    for w in &mut writers {
        w.expect("done");
        w.wait_ok();
    }
    assert!(matches!(reader.try_recv(), Ok(None)));
    let s = reader.stats().unwrap();
    eprintln!("redelivered {redelivered}; {s:?}");
    assert!(
        redelivered >= 1,
        "the message the first Reader held was not redelivered"
    );
    assert_eq!((s.adoptions, s.redelivered), (1, redelivered));
    reader.validate().unwrap();
    drop(reader);
    name.assert_no_leftovers();
}

/// One Reader's share of a stream: receives `quota` messages, recording (writer, seq,
/// redelivered) for each, then stops gracefully while the Writers go on. `how` it stops:
/// `release` (the last message released first), `hold` (the last message still held when
/// the Reader is dropped: the stop waits for it), `drain` (first takes what is queued, up to
/// `quota` more, so that it may stop with an empty queue).
fn reader_share(reader: Reader, quota: u64, how: &str) -> Vec<(u32, u64, bool)> {
    let mut got = Vec::with_capacity(2 * quota as usize);
    let mut last = None;
    for _ in 0..quota {
        let m = reader
            .recv_timeout(Duration::from_secs(30))
            .expect("a message within 30 s");
        let (id, seq) = parse(&m);
        got.push((id, seq, m.redelivered()));
        last = Some(m); // the one before is released here
    }
    if how == "drain" {
        for m in reader.try_iter().take(quota as usize) {
            let (id, seq) = parse(&m);
            got.push((id, seq, m.redelivered()));
        }
    }
    if how == "hold" {
        drop(reader);
        drop(last);
    } else {
        drop(last);
        drop(reader);
    }
    got
}

fn graceful_records_path(name: &str, round: usize) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{name}.r{round}.records"))
}

#[test]
#[cfg_attr(
    windows,
    ignore = "Windows: a new Reader cannot re-create the name while a peer maps the old index (StillMapped, see README) and leftovers cannot be listed"
)]
fn graceful_reader_restarts_mid_stream_lose_nothing_and_deliver_each_message_once() {
    const TEST: &str =
        "graceful_reader_restarts_mid_stream_lose_nothing_and_deliver_each_message_once";
    if let Some((role, args)) = child_role() {
        if role == "writer" {
            writer_role(&args[0], args[1].parse().unwrap(), args[2].parse().unwrap());
        }
        // A Reader process of its own: its share, then a graceful stop and exit.
        let reader = Reader::create(&args[0], small_config()).unwrap();
        let adopted = reader.adopted();
        let got = reader_share(reader, args[1].parse().unwrap(), &args[2]);
        let mut bytes = Vec::with_capacity(got.len() * 13);
        for (id, seq, redelivered) in got {
            bytes.extend_from_slice(&id.to_le_bytes());
            bytes.extend_from_slice(&seq.to_le_bytes());
            bytes.push(u8::from(redelivered));
        }
        std::fs::write(&args[3], bytes).unwrap();
        tell_parent(&format!("stopped {adopted}"));
        child_exit(0);
    }
    let start = Instant::now();
    let _w = watchdog(TEST, Duration::from_secs(120));
    let name = TestName::new("pool-graceful");
    // 2 Writers x 10,000 messages; 20 graceful stops, each after 400 to 800 messages, so
    // that the last one comes with at least 4,000 messages still to send.
    let (n, quota, stops) = (10_000u64, 400u64, 20usize);
    let mut writers = Vec::new();
    let mut got = Vec::new();
    let mut adoptions = 0;
    // Readers take turns: even shares in this process, odd ones in a process of their own
    // (a stopped Reader's process that lives on, and one that exits), stopping each way.
    for round in 0..stops {
        let how = ["release", "hold", "drain"][round % 3];
        let (share, adopted) = if round % 2 == 0 {
            let reader = Reader::create(&name, small_config()).unwrap();
            let adopted = reader.adopted();
            if round == 0 {
                // The Writers connect to the first Reader's pool.
                writers = (0..2)
                    .map(|id| spawn(TEST, "writer", &[&name, &id.to_string(), &n.to_string()]))
                    .collect();
                for w in &mut writers {
                    w.expect("ready");
                    w.send("go");
                }
            }
            (reader_share(reader, quota, how), adopted)
        } else {
            let path = graceful_records_path(&name, round);
            let mut r = spawn(
                TEST,
                "reader",
                &[&name, &quota.to_string(), how, path.to_str().unwrap()],
            );
            let line = r.expect_line();
            r.wait_ok();
            let bytes = std::fs::read(&path).unwrap();
            let _ = std::fs::remove_file(&path);
            let share = bytes
                .chunks_exact(13)
                .map(|c| {
                    (
                        u32::from_le_bytes(c[..4].try_into().unwrap()),
                        u64::from_le_bytes(c[4..12].try_into().unwrap()),
                        c[12] != 0,
                    )
                })
                .collect();
            (share, line == "stopped true")
        };
        adoptions += usize::from(adopted);
        assert!(share.len() as u64 >= quota, "round {round}");
        got.push(share);
    }
    // The last Reader takes the rest.
    let reader = Reader::create(&name, small_config()).unwrap();
    adoptions += usize::from(reader.adopted());
    // Each writer's messages in send order: a gap is a lost message (counted against the
    // stop before it, to report them all), going back is a duplicate or reordering.
    let mut next = [0u64; 2];
    let (mut redelivered, mut lost) = (0, Vec::new());
    let mut check = |stop: usize, id: u32, seq: u64, again: bool, next: &mut [u64; 2]| {
        assert!(id < 2, "writer id {id}");
        let id = id as usize;
        if again {
            // Allowed by the contract (at least once, marked); not expected without a crash.
            redelivered += 1;
            assert!(
                seq < next[id],
                "writer {id}: redelivered {seq} never delivered"
            );
        } else {
            assert!(
                seq >= next[id],
                "writer {id}: {seq} duplicated or out of order"
            );
            if seq > next[id] {
                lost.push((stop, id, seq - next[id]));
            }
            next[id] = seq + 1;
        }
    };
    for (round, share) in got.iter().enumerate() {
        for &(id, seq, again) in share {
            check(round.saturating_sub(1), id, seq, again, &mut next);
        }
    }
    while next.iter().any(|&k| k < n) {
        let m = reader
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| {
                panic!(
                    "{e}: missing {} and {} messages of writers 0 and 1",
                    n - next[0],
                    n - next[1]
                )
            });
        let (id, seq) = parse(&m);
        check(stops - 1, id, seq, m.redelivered(), &mut next);
    }
    let stops_losing: HashSet<usize> = lost.iter().map(|&(stop, _, _)| stop).collect();
    assert!(
        lost.is_empty(),
        "{} messages lost at {} of {stops} graceful stops: (stop, writer, count) {lost:?}",
        lost.iter().map(|&(_, _, k)| k).sum::<u64>(),
        stops_losing.len()
    );
    for w in &mut writers {
        w.expect("done");
        w.wait_ok();
    }
    assert!(matches!(reader.try_recv(), Ok(None)), "nothing more");
    eprintln!(
        "{stops} graceful stops: {adoptions} left messages to the next Reader, {} found \
         nothing queued and removed the pool; {redelivered} redelivered; {:?}",
        stops - adoptions,
        start.elapsed()
    );
    assert_eq!(redelivered, 0, "a graceful stop redelivers nothing");
    assert!(
        adoptions >= 1,
        "no stop left a message queued: nothing tested"
    );
    reader.validate().unwrap();
    drop(reader);
    name.assert_no_leftovers();
}

#[test]
#[cfg_attr(
    windows,
    ignore = "Windows: a new Reader cannot re-create the name while a peer maps the old index (StillMapped, see README) and leftovers cannot be listed"
)]
fn a_reader_dropped_with_messages_queued_leaves_them_to_the_next_reader() {
    let _w = watchdog("parked pool", Duration::from_secs(60));
    let name = TestName::new("pool-park");
    let send = |w: &Writer, text: &[u8]| {
        let mut b = w.acquire_timeout(Duration::from_secs(5)).unwrap();
        b.extend_from_slice(text).unwrap();
        w.send(b).unwrap();
    };
    let reader = Reader::create(&name, small_config()).unwrap();
    let w = Writer::connect(&name).unwrap();
    for i in 0..3u8 {
        send(&w, &[b'a', i]);
    }
    let first = reader.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(&*first, b"a\0");
    // Dropped while the application still holds a message: the pool stays served until it
    // is released, so it is never delivered again.
    drop(reader);
    assert!(w.reader_alive());
    assert!(matches!(
        Reader::create(&name, small_config()),
        Err(PoolError::AlreadyRunning { .. })
    ));
    drop(first);
    // Stopped, with two messages queued: the pool stays for the next Reader, and the
    // Writer goes on queueing into it meanwhile.
    assert!(!w.reader_alive());
    assert!(!name.leftovers().is_empty());
    send(&w, b"b");
    let held = w.acquire().unwrap();
    // The next Reader, in the same process, adopts it.
    let reader = Reader::create(&name, PoolConfig::default()).unwrap();
    assert!(reader.adopted(), "{:?}", reader.adoption_refused());
    // Its own configuration, but for the limits that size what exists.
    assert_eq!(reader.kept_config(), ["max_buffer_size", "max_buffers"]);
    assert_eq!(
        reader.config(),
        &PoolConfig {
            initial_buffer_size: 4096,
            max_buffer_size: 4096,
            max_buffers: 64,
            ..PoolConfig::default()
        }
    );
    let mut rest = Vec::new();
    for m in reader.try_iter() {
        assert!(!m.redelivered());
        rest.push(m.to_vec());
    }
    assert_eq!(rest, [&b"a\x01"[..], b"a\x02", b"b"]);
    // A buffer held across the restart is sent as usual.
    let mut held = held;
    held.extend_from_slice(b"held").unwrap();
    w.send(held).unwrap();
    assert_eq!(
        &*reader.recv_timeout(Duration::from_secs(5)).unwrap(),
        b"held"
    );
    let s = reader.stats().unwrap();
    assert_eq!(
        (s.sent, s.delivered, s.redelivered, s.adoptions),
        (5, 5, 0, 1)
    );
    reader.validate().unwrap();
    // Stopped with nothing queued: everything goes, and the Writer is told.
    drop(reader);
    name.assert_no_leftovers();
    assert!(matches!(
        w.acquire_timeout(Duration::from_secs(5)),
        Err(PoolError::NoReader)
    ));
    drop(w);
    name.assert_no_leftovers();
}

#[test]
fn an_adopting_reader_applies_its_own_limits_and_timeouts() {
    let _w = watchdog("adoption config", Duration::from_secs(60));
    let name = TestName::new("pool-adopt-cfg");
    let reader = Reader::create(&name, small_config()).unwrap();
    let w = Writer::connect(&name).unwrap();
    let mut b = w.acquire_timeout(Duration::from_secs(5)).unwrap();
    b.extend_from_slice(b"queued").unwrap();
    w.send(b).unwrap();
    drop(reader); // parks the pool: 32 buffers, one message queued
    let asked = PoolConfig {
        initial_buffer_size: 128,
        max_buffer_size: 4096,
        start_buffers: 4,
        max_buffers: 16,
        min_buffers: Some(2),
        resize_increment: Some(2),
        resize_threshold: 0,
        sweep_timeout: Duration::from_millis(50),
    };
    let reader = Reader::create(&name, asked.clone()).unwrap();
    assert!(reader.adopted(), "{:?}", reader.adoption_refused());
    assert!(
        reader.kept_config().is_empty(),
        "{:?}",
        reader.kept_config()
    );
    assert_eq!(reader.config(), &asked);
    assert_eq!(
        &*reader.recv_timeout(Duration::from_secs(5)).unwrap(),
        b"queued"
    );
    // The new sweep timeout and minimum apply: idle buffers go down to 2.
    let swept = common::poll_until(Duration::from_secs(10), || {
        reader.stats().unwrap().buffers == 2
    });
    assert!(swept, "{:?}", reader.stats());
    reader.validate().unwrap();
    drop(w);
    drop(reader);
    name.assert_no_leftovers();
}

#[test]
#[cfg_attr(
    windows,
    ignore = "Windows: a new Reader cannot re-create the name while a peer maps the old index (StillMapped, see README) and leftovers cannot be listed"
)]
fn a_buffer_held_across_two_graceful_restarts_is_copied_into_the_newest_pool() {
    let _w = watchdog("held across two restarts", Duration::from_secs(60));
    let name = TestName::new("pool-twice");
    let reader = Reader::create(&name, small_config()).unwrap();
    let w = Writer::connect(&name).unwrap();
    let mut held = w.acquire().unwrap();
    held.extend_from_slice(b"held").unwrap();
    drop(reader); // nothing queued: this pool goes
    let reader = Reader::create(&name, small_config()).unwrap();
    assert!(!reader.adopted());
    // The Writer moves to the second pool and maps one of its buffers...
    drop(w.acquire().unwrap());
    drop(reader); // ...which goes as well
    let reader = Reader::create(&name, small_config()).unwrap();
    // The held buffer follows the name to the third pool, not to the retired second one
    // (whose buffer names the third pool reuses).
    w.send(held).unwrap();
    let m = reader.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((&*m, m.redelivered()), (&b"held"[..], false));
    drop(m);
    assert!(matches!(reader.try_recv(), Ok(None)));
    reader.validate().unwrap();
    drop(w);
    drop(reader);
    name.assert_no_leftovers();
}

#[test]
fn a_buffer_from_a_reader_whose_index_cannot_be_adopted_is_copied_on_send() {
    const TEST: &str = "a_buffer_from_a_reader_whose_index_cannot_be_adopted_is_copied_on_send";
    if let Some((role, args)) = child_role() {
        if role == "reader" {
            let _reader = Reader::create(&args[0], small_config()).unwrap();
            tell_parent("ready");
            hear_parent();
            child_exit(1);
        }
        let w = Writer::connect(&args[0]).unwrap();
        let mut buf = w.acquire().unwrap();
        // Bigger than the old buffer: grown in place before the Reader dies.
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        buf.extend_from_slice(&data).unwrap();
        tell_parent("held");
        assert_eq!(hear_parent().as_deref(), Some("send"));
        match w.send(buf) {
            Ok(()) => tell_parent("sent"),
            Err(e) => tell_parent(&format!("error {}", e.error())),
        }
        hear_parent();
        child_exit(0);
    }
    let _w = watchdog(TEST, Duration::from_secs(60));
    for how in ["corrupt", "removed"] {
        let name = TestName::new("pool-cos");
        let mut old = spawn(TEST, "reader", &[&name]);
        old.expect("ready");
        let mut writer = spawn(TEST, "writer", &[&name]);
        writer.expect("held");
        old.kill();
        let index = common::os_name(&name, "pool");
        if how == "corrupt" {
            // Overwrite the pool signature: the index can no longer be trusted.
            common::RawObject::open(&index).write(common::HEADER_SIZE, b"garbage!");
        } else {
            #[cfg(unix)]
            std::fs::remove_file(format!("/dev/shm{index}")).unwrap();
            // Windows: a name cannot be removed; the index goes with its last handle.
            #[cfg(windows)]
            continue;
        }
        // Windows: the Writer still maps the dead Reader's index, whose name cannot be
        // reused until it lets go: a clear error, and the held buffer cannot be copied into
        // a new pool (its send fails); once the Writer is gone, a new Reader starts.
        if cfg!(windows) {
            // (Until the killed process is wholly gone its Reader still counts as running.)
            let mut last = None;
            let refused = poll_until(common::STEP, || {
                last = Some(Reader::create(&name, PoolConfig::default()));
                !matches!(last, Some(Err(PoolError::AlreadyRunning { .. })))
            });
            match last {
                Some(Err(PoolError::Setup(shmlink::Error::StillMapped { .. }))) if refused => {}
                other => panic!("expected StillMapped, got {other:?}"),
            }
            writer.send("send");
            let line = writer.expect_line();
            assert!(line.starts_with("error"), "{line}");
            writer.send("exit");
            writer.wait_ok();
            // (The exited Writer's handles may linger an instant.)
            let mut reader = None;
            poll_until(common::STEP, || {
                reader = Reader::create(&name, PoolConfig::default()).ok();
                reader.is_some()
            });
            assert!(!reader
                .expect("a new Reader once the Writer is gone")
                .adopted());
            continue;
        }
        let reader = Reader::create(&name, PoolConfig::default()).unwrap();
        assert!(!reader.adopted());
        if how == "corrupt" {
            assert!(reader.adoption_refused().is_some());
        }
        writer.send("send");
        writer.expect("sent");
        let m = reader.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(m.len(), 1000, "{how}");
        assert!(
            m.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8),
            "{how}: bytes differ"
        );
        drop(m);
        writer.send("exit");
        writer.wait_ok();
        reader.validate().unwrap();
        drop(reader);
        // Buffers of the dead index whose names nobody reused are removed by TestName.
    }
}

/// Byte offset of field `at` of directory entry `i` in the index object (layout pinned by
/// the `layout_is_pinned` unit test in src/pool/index.rs).
fn entry_offset(i: u64, at: u64) -> u64 {
    const DIR_OFFSET: u64 = 832;
    common::HEADER_SIZE as u64 + DIR_OFFSET + 64 * i + at
}

#[test]
fn a_hostile_process_corrupting_the_directory_cannot_crash_or_hang_the_reader() {
    const TEST: &str = "a_hostile_process_corrupting_the_directory_cannot_crash_or_hang_the_reader";
    if let Some((role, args)) = child_role() {
        if role == "writer" {
            let w = Writer::connect(&args[0]).unwrap();
            for seq in 0..4 {
                let mut b = w.acquire().unwrap();
                message(&mut b, 0, seq);
                w.send(b).unwrap();
            }
            let _held = w.acquire().unwrap();
            tell_parent("sent");
            hear_parent();
            child_exit(0);
        }
        // The hostile process: writes through the object's file, no locking.
        let f = common::RawObject::open(&common::os_name(&args[0], "pool"));
        let put32 = |i, at, v: u32| f.write(entry_offset(i, at) as usize, &v.to_le_bytes());
        let put64 = |i, at, v: u64| f.write(entry_offset(i, at) as usize, &v.to_le_bytes());
        if args[1] == "fields" {
            put32(0, 8, 12345); // next: out of range
            put32(1, 4, 7); // prev: wrong back link
            put32(2, 0, 77); // status: invalid
            put64(3, 16, u64::MAX); // len > capacity
            put64(4, 24, 1 << 60); // capacity > max_buffer_size
            put32(5, 8, 5); // next: a cycle
            put32(6, 0, 4); // status: RECEIVED though on the free list
            for i in 7..16 {
                put32(i, 12, 999); // generation: names no segment
            }
        } else {
            // Random bytes over the whole directory.
            let mut x = 0x1234_5678_9abc_def0u64;
            let junk: Vec<u8> = (0..16 * 64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            f.write(entry_offset(0, 0) as usize, &junk);
        }
        tell_parent("done");
        child_exit(0);
    }
    let _w = watchdog(TEST, Duration::from_secs(60));
    for how in ["fields", "random"] {
        let name = TestName::new("pool-hostile");
        let config = PoolConfig {
            start_buffers: 16,
            max_buffers: 16,
            min_buffers: Some(16),
            ..small_config()
        };
        let reader = Reader::create(&name, config).unwrap();
        let mut writer = spawn(TEST, "writer", &[&name]);
        writer.expect("sent");
        reader.validate().unwrap();
        let repairs = reader.stats().unwrap().repairs;
        let mut hostile = spawn(TEST, "hostile", &[&name, how]);
        hostile.expect("done");
        hostile.wait_ok();
        // Found by this check, or already repaired by the Reader's service thread (it
        // validates the index every 100 ms).
        assert!(
            reader.validate().is_err() || reader.stats().unwrap().repairs > repairs,
            "{how}: corruption neither reported nor repaired"
        );
        // Whatever it finds, the Reader answers: messages, nothing, or an error. Each
        // message it hands out is in bounds (a bad one would fault or fail the checksum).
        let mut got = 0;
        for _ in 0..40 {
            match reader.try_recv() {
                Ok(Some(m)) => {
                    assert!(m.len() <= m.capacity());
                    let _sum = checksum(&m);
                    got += 1;
                }
                Ok(None) => break,
                Err(e) => eprintln!("{how}: try_recv: {e}"),
            }
        }
        assert!(got <= 4, "{how}: {got} messages out of 4 sent");
        let s = reader.stats().unwrap();
        eprintln!("{how}: {got} of 4 messages survived; {s:?}");
        assert!(s.repairs >= 1, "{how}: {s:?}");
        reader
            .validate()
            .unwrap_or_else(|e| panic!("{how}: not repaired: {e}"));
        // The pool goes on working (growing back into disposed entries if it must).
        let w = Writer::connect(&name).unwrap();
        let mut b = w.acquire_timeout(Duration::from_secs(10)).unwrap();
        message(&mut b, 9, 9);
        w.send(b).unwrap();
        let m = reader.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(parse(&m), (9, 9));
        drop(m);
        // Every buffer can be acquired: broken ones are given up, and the pool grows back
        // into their entries.
        let mut all = Vec::new();
        while let Ok(b) = w.acquire_timeout(Duration::from_secs(1)) {
            all.push(b);
            assert!(all.len() <= 16);
        }
        assert_eq!(all.len(), 16, "{how}: {:?}", reader.stats());
        drop(all);
        reader.validate().unwrap();
        writer.send("exit");
        writer.wait_ok();
        drop(w);
        drop(reader);
    }
}

#[test]
fn a_second_reader_is_refused_a_closed_pool_says_no_reader_and_writers_follow_a_new_one() {
    let _w = watchdog("second reader", Duration::from_secs(30));
    let name = TestName::new("pool-second");
    let reader = Reader::create(&name, small_config()).unwrap();
    assert!(matches!(
        Reader::create(&name, small_config()),
        Err(PoolError::AlreadyRunning { .. })
    ));
    let bad = PoolConfig {
        initial_buffer_size: 10,
        max_buffer_size: 5,
        ..small_config()
    };
    assert!(matches!(
        Reader::create("pool-bad-config", bad),
        Err(PoolError::InvalidConfig(_))
    ));
    assert!(matches!(
        Writer::connect(&format!("{}-none", name.as_str())),
        Err(PoolError::NoReader)
    ));
    // A closed pool: held buffers report NoReader on send, acquire says NoReader.
    let w = Writer::connect(&name).unwrap();
    let mut b = w.acquire().unwrap();
    assert!(matches!(
        b.set_len(5000),
        Err(PoolError::TooLarge {
            requested: 5000,
            max: 4096
        })
    ));
    b.extend_from_slice(b"late").unwrap();
    drop(reader);
    let e = w.send(b).unwrap_err();
    assert!(matches!(e.error(), PoolError::NoReader), "{e}");
    assert!(matches!(
        w.acquire_timeout(Duration::from_secs(5)),
        Err(PoolError::NoReader)
    ));
    // Windows: the closed pool's index lives while this Writer (and the buffer it got back)
    // maps it, and its name cannot be reused until they let go: a clear error. Then a new
    // Reader starts and a new Writer works.
    if cfg!(windows) {
        match Reader::create(&name, small_config()) {
            Err(PoolError::Setup(shmlink::Error::StillMapped { .. })) => {}
            other => panic!("expected StillMapped, got {other:?}"),
        }
        drop((e, w));
        let reader = Reader::create(&name, small_config()).unwrap();
        let w = Writer::connect(&name).unwrap();
        let mut b = w.acquire().unwrap();
        b.extend_from_slice(b"new").unwrap();
        w.send(b).unwrap();
        assert_eq!(
            &*reader.recv_timeout(Duration::from_secs(5)).unwrap(),
            b"new"
        );
        return;
    }
    // A new Reader of the name (a fresh pool): the same Writer carries on, and the buffer
    // it held from the closed pool is copied into the new one when sent.
    let reader = Reader::create(&name, small_config()).unwrap();
    assert!(!reader.adopted());
    w.send(e.into_inner()).unwrap();
    let mut b = w.acquire().unwrap();
    b.extend_from_slice(b"new").unwrap();
    w.send(b).unwrap();
    assert_eq!(
        &*reader.recv_timeout(Duration::from_secs(5)).unwrap(),
        b"late"
    );
    assert_eq!(
        &*reader.recv_timeout(Duration::from_secs(5)).unwrap(),
        b"new"
    );
    drop(w);
    drop(reader);
    name.assert_no_leftovers();
}

#[test]
fn two_readers_racing_to_adopt_a_dead_readers_pool_end_with_one_reader() {
    const TEST: &str = "two_readers_racing_to_adopt_a_dead_readers_pool_end_with_one_reader";
    if let Some((role, args)) = child_role() {
        if role == "first" {
            let r = Reader::create(&args[0], small_config()).unwrap();
            let w = Writer::connect(&args[0]).unwrap();
            for seq in 0..5 {
                let mut b = w.acquire().unwrap();
                message(&mut b, 0, seq);
                w.send(b).unwrap();
            }
            tell_parent("ready");
            hear_parent();
            drop(r);
            child_exit(1);
        }
        tell_parent("ready");
        assert_eq!(hear_parent().as_deref(), Some("go"));
        let outcome = match Reader::create(&args[0], PoolConfig::default()) {
            Ok(r) if r.adopted() => {
                let got = r.try_iter().count();
                tell_parent(&format!("adopted {got} by {}", std::process::id()));
                hear_parent();
                drop(r);
                child_exit(0);
            }
            Ok(_) => "fresh".to_owned(),
            // Names the Reader that won.
            Err(PoolError::AlreadyRunning { pid, .. }) => format!("busy {pid}"),
            Err(e) => format!("error {e}"),
        };
        tell_parent(&outcome);
        hear_parent();
        child_exit(0);
    }
    let _w = watchdog(TEST, Duration::from_secs(60));
    let name = TestName::new("pool-race");
    let mut first = spawn(TEST, "first", &[&name]);
    first.expect("ready");
    first.kill();
    let mut racers: Vec<_> = (0..2).map(|_| spawn(TEST, "racer", &[&name])).collect();
    for r in &mut racers {
        r.expect("ready");
    }
    for r in &mut racers {
        r.send("go");
    }
    let mut outcomes: Vec<String> = racers.iter_mut().map(|r| r.expect_line()).collect();
    outcomes.sort();
    if cfg!(windows) {
        // The dead Reader's index and buffers were open only in its own process (its Writer
        // too), so they go with it, the 5 queued messages included (a platform difference,
        // README; a connected Writer keeps them adoptable). Exactly one racer serves (fresh,
        // or adopting what is left while the dead process's handles linger) and the other
        // is refused with a clear error (AlreadyRunning, or StillMapped while they linger).
        let serving = outcomes
            .iter()
            .filter(|o| *o == "fresh" || o.starts_with("adopted"))
            .count();
        let refused = outcomes
            .iter()
            .filter(|o| o.starts_with("busy") || o.contains("still open in another process"))
            .count();
        assert_eq!((serving, refused), (1, 1), "{outcomes:?}");
    } else {
        // One adopts; the other, and any later Reader, is told the winner's pid.
        let winner = outcomes[0]
            .strip_prefix("adopted 5 by ")
            .expect("one adopted");
        assert_eq!(outcomes[1], format!("busy {winner}"), "{outcomes:?}");
        match Reader::create(&name, PoolConfig::default()) {
            Err(PoolError::AlreadyRunning { pid, .. }) => assert_eq!(pid.to_string(), winner),
            other => panic!("a third Reader: {other:?}"),
        }
    }
    for r in &mut racers {
        r.send("exit");
        r.wait_ok();
    }
    name.assert_no_leftovers();
}

#[test]
fn a_writer_waiting_for_a_buffer_learns_that_the_reader_was_killed() {
    const TEST: &str = "a_writer_waiting_for_a_buffer_learns_that_the_reader_was_killed";
    if let Some((_, args)) = child_role() {
        let config = PoolConfig {
            start_buffers: 2,
            max_buffers: 2,
            min_buffers: Some(2),
            resize_threshold: 0,
            ..small_config()
        };
        let _r = Reader::create(&args[0], config).unwrap();
        tell_parent("ready");
        hear_parent();
        child_exit(1);
    }
    let _w = watchdog(TEST, Duration::from_secs(60));
    let name = TestName::new("pool-noreader");
    let mut reader = spawn(TEST, "reader", &[&name]);
    reader.expect("ready");
    let w = Writer::connect(&name).unwrap();
    assert!(w.reader_alive());
    let held: Vec<_> = (0..2).map(|_| w.acquire().unwrap()).collect();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let start = Instant::now();
            (w.acquire_timeout(Duration::from_secs(20)), start.elapsed())
        });
        reader.kill();
        let (r, took) = waiter.join().unwrap();
        // PoolFull would mean it waited out its timeout instead.
        assert!(
            matches!(r, Err(PoolError::NoReader)),
            "{r:?} after {took:?}"
        );
    });
    assert!(!w.reader_alive());
    // Held buffers can still be sent: a Reader that adopts the pool will deliver them.
    let reader = Reader::create(&name, PoolConfig::default()).unwrap();
    assert!(reader.adopted());
    for (i, mut b) in held.into_iter().enumerate() {
        message(&mut b, 1, i as u64);
        w.send(b).unwrap();
    }
    for i in 0..2 {
        assert_eq!(
            parse(&reader.recv_timeout(Duration::from_secs(5)).unwrap()),
            (1, i)
        );
    }
    drop(w);
    drop(reader);
    name.assert_no_leftovers();
}

/// Mappings of this pool's buffer objects that were removed (swept) but are still mapped.
#[cfg(target_os = "linux")]
fn deleted_mappings(name: &str) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter(|l| l.contains(&format!("shmlink.{name}.pool.b")) && l.ends_with("(deleted)"))
        .count()
}

#[test]
// Linux only: reads /proc/self/maps (Windows: a section goes with its last view anyway).
#[cfg(target_os = "linux")]
fn swept_buffers_are_unmapped_by_writers_too() {
    let _w = watchdog("swept buffers unmapped", Duration::from_secs(60));
    let name = TestName::new("pool-unmap");
    let config = PoolConfig {
        start_buffers: 8,
        min_buffers: Some(1),
        resize_threshold: 0,
        sweep_timeout: Duration::from_millis(100),
        ..small_config()
    };
    let reader = Reader::create(&name, config).unwrap();
    let w = Writer::connect(&name).unwrap();
    drop((0..8).map(|_| w.acquire().unwrap()).collect::<Vec<_>>());
    assert!(
        poll_until(Duration::from_secs(20), || reader.stats().unwrap().buffers
            == 1),
        "{:?}",
        reader.stats()
    );
    // The service thread marks entries disposed before it unlinks their segments: wait
    // (bounded) until all 7 are unlinked. The Writer still maps every one of them.
    assert!(
        poll_until(Duration::from_secs(20), || deleted_mappings(&name) == 7),
        "the Writer should still map the 7 swept buffers, {} found",
        deleted_mappings(&name)
    );
    for _ in 0..256 {
        drop(w.acquire().unwrap());
    }
    assert_eq!(
        deleted_mappings(&name),
        0,
        "the Writer dropped its mappings of swept buffers"
    );
    drop(w);
    drop(reader);
    name.assert_no_leftovers();
}

#[test]
fn wait_strategies_apply_to_readers_and_to_writers_holding_buffers() {
    let _w = watchdog("wait strategies", Duration::from_secs(30));
    let name = TestName::new("pool-strategy");
    let reader = Reader::create(&name, small_config())
        .unwrap()
        .wait_strategy(WaitStrategy::Block);
    let w = Writer::connect(&name).unwrap();
    let mut held = w.acquire().unwrap();
    message(&mut held, 0, 0);
    // A buffer is held: the Writer attaches again for its waits; the held buffer stays valid
    // (sent in place, not copied as if the pool had been replaced).
    let w = w.wait_strategy(WaitStrategy::Spin);
    w.send(held).unwrap();
    let mut b = w.acquire().unwrap();
    message(&mut b, 0, 1);
    w.send(b).unwrap();
    for seq in 0..2 {
        let m = reader.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(parse(&m), (0, seq));
    }
    // A Reader blocked in recv (sleeping at once, with Block) is woken by a send.
    std::thread::scope(|s| {
        let got = s.spawn(|| parse(&reader.recv().unwrap()));
        let mut b = w.acquire().unwrap();
        message(&mut b, 0, 2);
        w.send(b).unwrap();
        assert_eq!(got.join().unwrap(), (0, 2));
    });
    let s = reader.stats().unwrap();
    assert_eq!((s.sent, s.delivered, s.allocated), (3, 3, 0), "{s:?}");
    reader.validate().unwrap();
    drop(w);
    drop(reader);
    name.assert_no_leftovers();
}

/// A Reader killed while a Writer stays connected (and keeps the index mapped) is replaced
/// by a new Reader, which adopts the pool: the message the dead Reader held comes again,
/// marked redelivered, and the Writer carries on into the new Reader, on every platform.
#[test]
fn a_reader_killed_while_a_writer_stays_connected_is_replaced_and_the_writer_follows() {
    const TEST: &str =
        "a_reader_killed_while_a_writer_stays_connected_is_replaced_and_the_writer_follows";
    if let Some((_, args)) = child_role() {
        let reader = Reader::create(&args[0], small_config()).unwrap();
        tell_parent("ready");
        let m = reader.recv_timeout(common::STEP).unwrap();
        tell_parent(&format!("got {:?}", parse(&m)));
        hear_parent(); // killed holding `m`
        child_exit(1);
    }
    let _w = watchdog(TEST, Duration::from_secs(60));
    let name = TestName::new("pool-follow");
    let mut first = spawn(TEST, "reader", &[&name]);
    first.expect("ready");
    let w = Writer::connect(&name).unwrap();
    let mut b = w.acquire().unwrap();
    message(&mut b, 7, 0);
    w.send(b).unwrap();
    first.expect("got (7, 0)");
    first.kill();
    let reader = Reader::create(&name, small_config()).expect("a new Reader");
    assert!(reader.adopted(), "refused: {:?}", reader.adoption_refused());
    let m = reader.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(m.redelivered());
    assert_eq!(parse(&m), (7, 0));
    drop(m);
    let give_up = Instant::now() + Duration::from_secs(20);
    for seq in 1..10 {
        let mut b = acquire_retrying(&w, give_up);
        message(&mut b, 7, seq);
        w.send(b).unwrap();
        let m = reader.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(parse(&m), (7, seq));
    }
    drop(w);
    drop(reader);
    name.assert_no_leftovers();
}

/// A message in a buffer that its Writer grew itself (a new buffer object, made by the
/// Writer) is delivered after that Writer exits, however soon it exits after `send`.
#[test]
fn a_message_in_a_buffer_the_writer_grew_is_delivered_after_the_writer_exits() {
    const TEST: &str = "a_message_in_a_buffer_the_writer_grew_is_delivered_after_the_writer_exits";
    if let Some((_, args)) = child_role() {
        let w = Writer::connect(&args[0]).unwrap();
        let mut b = w.acquire().unwrap();
        let cap = b.capacity();
        b.set_len(3000).unwrap();
        assert!(b.capacity() > cap, "the buffer did not grow");
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i % 251) as u8;
        }
        w.send(b).unwrap();
        tell_parent("sent");
        child_exit(0); // at once, without dropping the Writer
    }
    let _w = watchdog(TEST, Duration::from_secs(60));
    let name = TestName::new("pool-grown");
    let reader = Reader::create(&name, small_config()).unwrap();
    let mut writer = spawn(TEST, "writer", &[&name]);
    // On Windows `send` returns once this Reader has mapped the Writer's new buffer object,
    // so the Reader receives before the Writer says "sent" (and exits).
    let m = reader
        .recv_timeout(Duration::from_secs(10))
        .expect("the grown buffer's message");
    writer.expect("sent");
    writer.wait_ok();
    assert_eq!(m.len(), 3000);
    assert!(m.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    drop(m);
    reader.validate().unwrap();
    drop(reader);
    name.assert_no_leftovers();
}

/// Role: reads the pool's stats in a loop (each read takes the pool's lock), until the
/// parent says "exit".
#[cfg(unix)]
fn locking_in_a_loop(name: &str) -> ! {
    use std::sync::atomic::{AtomicBool, Ordering};
    let w = Writer::connect(name).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                w.stats().unwrap();
            }
        });
        tell_parent("looping");
        hear_parent();
        stop.store(true, Ordering::Relaxed);
    });
    child_exit(0);
}

/// Byte offset of the pool mutex's state word in the index object (layout pinned by the
/// `layout_is_pinned` unit test in src/pool/index.rs).
#[cfg(unix)]
const POOL_MUTEX_AT: usize = common::HEADER_SIZE + 512;

// Unix only: SIGSTOP freezes the lock holder; Windows has no such signal.
#[cfg(unix)]
#[test]
fn a_writer_frozen_holding_the_pool_lock_delays_no_call_past_its_deadline() {
    const TEST: &str = "a_writer_frozen_holding_the_pool_lock_delays_no_call_past_its_deadline";
    if let Some((_, args)) = child_role() {
        locking_in_a_loop(&args[0]);
    }
    let _w = watchdog(TEST, Duration::from_secs(60));
    let name = TestName::new("pool-frozen");
    let reader = Reader::create(&name, small_config()).unwrap();
    let writer = Writer::connect(&name).unwrap();
    // Handed back while the holder is frozen: an unsent buffer and a received message.
    let spare = writer.acquire().unwrap();
    let mut b = writer.acquire().unwrap();
    message(&mut b, 2, 0);
    writer.send(b).unwrap();
    let got = reader.recv().unwrap();
    let mut b = writer.acquire().unwrap();
    message(&mut b, 1, 0);
    writer.send(b).unwrap();
    let held = writer.acquire().unwrap();
    let mut child = spawn(TEST, "locker", &[&name]);
    child.expect("looping");
    let obj = common::RawObject::open(&common::os_name(&name, "pool"));
    let frozen = common::freeze_holding(&child, &obj, POOL_MUTEX_AT);

    // Deadline plus scheduling slack: the calls must not wait for the lock past it.
    let slack = Duration::from_millis(100);
    let timed = |what: &str, timeout: Duration, call: &mut dyn FnMut() -> Option<PoolError>| {
        let start = Instant::now();
        let e = call();
        let took = start.elapsed();
        eprintln!("{what}({timeout:?}) with a frozen lock holder: {took:?}, {e:?}");
        assert!(took < timeout + slack, "{what} took {took:?}");
        e
    };
    std::thread::scope(|s| {
        // Blocking calls without a timeout wait for as long as the holder lives ...
        let blocked = s.spawn(|| reader.recv().map(|m| parse(&m)));
        // ... calls that do not wait otherwise give up after the bound, naming the holder.
        let bounded = s.spawn(|| {
            let start = Instant::now();
            (writer.stats(), start.elapsed())
        });
        let drops = [s.spawn(move || drop(spare)), s.spawn(move || drop(got))];
        let ms = Duration::from_millis;
        let e = timed("acquire_timeout", ms(100), &mut || {
            writer.acquire_timeout(ms(100)).err()
        });
        assert!(matches!(e, Some(PoolError::PoolFull)), "{e:?}");
        let e = timed("recv_timeout", ms(50), &mut || {
            reader.recv_timeout(ms(50)).err()
        });
        assert!(matches!(e, Some(PoolError::Timeout)), "{e:?}");
        let mut held = Some(held);
        let e = timed("send_timeout", ms(50), &mut || {
            match writer.send_timeout(held.take().unwrap(), ms(50)) {
                Ok(()) => None,
                Err(e) => {
                    let (buf, e) = e.into_parts();
                    held = Some(buf); // handed back: not sent
                    Some(e)
                }
            }
        });
        assert!(matches!(e, Some(PoolError::PoolFull)), "{e:?}");

        let (r, took) = bounded.join().unwrap();
        eprintln!("stats() with a frozen lock holder: {took:?}, {r:?}");
        match r {
            Err(e @ PoolError::LockHeld { pid, .. }) => {
                assert_eq!(pid, Some(child.pid()), "{e}");
                assert!(e.to_string().contains(&child.pid().to_string()), "{e}");
            }
            r => panic!("stats() with a frozen lock holder: {r:?}"),
        }
        assert!(
            !blocked.is_finished(),
            "recv() gave up: {:?}",
            blocked.join()
        );

        for d in drops {
            d.join().unwrap();
        }
        // Resumed, the holder lets go: the waiting recv() gets the message.
        frozen.thaw();
        assert_eq!(blocked.join().unwrap().unwrap(), (1, 0));
        let mut b = held.take().unwrap();
        message(&mut b, 1, 1);
        writer.send(b).unwrap();
    });
    assert_eq!(
        parse(&reader.recv_timeout(Duration::from_secs(5)).unwrap()),
        (1, 1)
    );
    child.send("exit");
    child.wait_ok();
    reader.validate().unwrap();
    // The buffers dropped while the lock was held went back with the next lock taken.
    writer.stats().unwrap();
    let stats = reader.stats().unwrap();
    assert_eq!((stats.allocated, stats.received), (0, 0), "{stats:?}");
    // Stopped is not dead: nothing was taken over or repaired.
    assert_eq!(stats.repairs, 0);
    drop(writer);
    drop(reader);
    name.assert_no_leftovers();
}

/// Reader role for the frozen-adoption test: creates the pool, queues 3 messages, says
/// "ready", and waits to be killed.
#[cfg(unix)]
fn reader_with_queue(name: &str) -> ! {
    let reader = Reader::create(name, small_config()).unwrap();
    let w = Writer::connect(name).unwrap();
    for seq in 0..3 {
        let mut b = w.acquire().unwrap();
        message(&mut b, 7, seq);
        w.send(b).unwrap();
    }
    tell_parent("ready");
    hear_parent();
    drop(reader);
    child_exit(0);
}

// Unix only: SIGSTOP freezes the lock holder; Windows has no such signal.
#[cfg(unix)]
#[test]
fn adopting_while_a_live_process_holds_the_lock_fails_and_loses_nothing() {
    const TEST: &str = "adopting_while_a_live_process_holds_the_lock_fails_and_loses_nothing";
    if let Some((role, args)) = child_role() {
        match role.as_str() {
            "reader" => reader_with_queue(&args[0]),
            _ => locking_in_a_loop(&args[0]),
        }
    }
    let _w = watchdog(TEST, Duration::from_secs(60));
    let name = TestName::new("pool-frozen-adopt");
    let mut dead = spawn(TEST, "reader", &[&name]);
    dead.expect("ready");
    let mut locker = spawn(TEST, "locker", &[&name]);
    locker.expect("looping");
    dead.kill();
    let obj = common::RawObject::open(&common::os_name(&name, "pool"));
    let frozen = common::freeze_holding(&locker, &obj, POOL_MUTEX_AT);
    // The lock is held by a live process: adoption fails, naming it, and leaves the pool.
    let start = Instant::now();
    match Reader::create(&name, small_config()) {
        Err(PoolError::LockHeld { pid, .. }) => assert_eq!(pid, Some(locker.pid())),
        other => panic!("adopting under a frozen lock holder: {other:?}"),
    }
    eprintln!("adoption gave up after {:?}", start.elapsed());
    assert!(!name.leftovers().is_empty(), "the pool was removed");
    // Once the holder moves on, the next Reader adopts the pool with its queue.
    frozen.thaw();
    locker.send("stop");
    locker.wait_ok();
    let reader = Reader::create(&name, small_config()).unwrap();
    assert!(reader.adopted(), "{:?}", reader.adoption_refused());
    let got: Vec<_> = reader.try_iter().map(|m| parse(&m)).collect();
    assert_eq!(got, [(7, 0), (7, 1), (7, 2)]);
    drop(reader);
    name.assert_no_leftovers();
}

// ---------------------------------------------------------------- pools shared between users

/// Owner uid, group and permission bits of the /dev/shm file `file`.
#[cfg(target_os = "linux")]
fn owner_group_mode(file: &str) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(format!("/dev/shm/{file}")).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

/// A second uid for the Writers of the multi-user tests, besides [`NOBODY`].
#[cfg(target_os = "linux")]
const OTHER: u32 = NOBODY - 1;

/// The multi-user recipe for pools: a Reader (root) creates the pool with a mode that lets
/// others write; a Writer of another uid connects with `Access::shared_by(reader uid)` and
/// sends, also from a buffer it grew (a segment it creates, owned by its uid); the Reader
/// accepts that segment and gets every message. A Writer of a third uid grows, and sends
/// from, a buffer the first grew and gave back; the Reader removes the first one's segment,
/// which that Writer may not. A single-user pool lets another uid in nowhere.
#[test]
// Unix only: another uid (setuid), file modes and /dev/shm paths.
#[cfg(target_os = "linux")]
fn a_writer_of_another_user_sends_to_a_shared_pool_from_buffers_it_grew() {
    const TEST: &str = "a_writer_of_another_user_sends_to_a_shared_pool_from_buffers_it_grew";
    if let Some((role, args)) = child_role() {
        let owner: u32 = args[1].parse().unwrap();
        let uid = if role == "regrower" { OTHER } else { NOBODY };
        common::become_user_in_group(uid, args[2].parse().unwrap());
        let shared = Access::shared_by(owner);
        if role == "outsider" {
            // Owner-only objects of another uid: the OS refuses the open itself.
            let denied = |r: Result<Writer, PoolError>| {
                matches!(r, Err(PoolError::Setup(Error::PermissionDenied { .. })))
            };
            let plain = denied(Writer::connect(&args[0]));
            let with = denied(Writer::connect_with(&args[0], shared));
            tell_parent(&format!("denied {plain} {with}"));
            child_exit(0);
        }
        if role == "regrower" {
            // Gets the buffer the first Writer grew and gave back (the free list's head),
            // and grows it again: the generation it replaces is not this user's to remove.
            let w = Writer::connect_with(&args[0], shared).unwrap();
            let mut b = w.acquire().unwrap();
            let capacity = b.capacity();
            b.extend_from_slice(&[9; 3000]).unwrap();
            w.send(b).unwrap();
            tell_parent(&format!("regrew {capacity}"));
            child_exit(0);
        }
        // This user refuses another user's pool unless it says whose it accepts.
        let plain = matches!(
            Writer::connect(&args[0]),
            Err(PoolError::Setup(Error::Squatted { .. }))
        );
        let w = Writer::connect_with(&args[0], shared).unwrap();
        for seq in 0..8 {
            let mut b = w.acquire().unwrap();
            message(&mut b, 7, seq);
            w.send(b).unwrap();
        }
        // Beyond the initial 256 bytes: this Writer creates a bigger buffer segment.
        let mut b = w.acquire().unwrap();
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        b.extend_from_slice(&data).unwrap();
        w.send(b).unwrap();
        // A buffer grown and given back unsent: free, at the head of the free list.
        let mut b = w.acquire().unwrap();
        b.extend_from_slice(&[1; 1000]).unwrap();
        drop(b);
        tell_parent(&format!("sent {plain}"));
        child_exit(0);
    }
    if !common::is_root() {
        eprintln!("SKIPPED {TEST}: needs root to switch a child to another uid");
        return;
    }
    let _w = watchdog(TEST, Duration::from_secs(60));
    let (me, group) = (common::euid(), common::egid());
    let args = |name: &TestName| [name.to_string(), me.to_string(), group.to_string()];

    // Single-user (the default mode): another uid cannot even open the index.
    let name = TestName::new("pool-mu-single");
    let reader = Reader::create(&name, small_config()).unwrap();
    let a = args(&name);
    let mut child = spawn(TEST, "outsider", &[&a[0], &a[1], &a[2]]);
    child.expect("denied true true");
    child.wait_ok();
    drop(reader);
    name.assert_no_leftovers();

    // Shared with everyone, and with a group the Writer is in (this process's group).
    for mode in [0o666, 0o660] {
        let name = TestName::new("pool-mu");
        let reader = Reader::create_with_mode(&name, small_config(), mode).unwrap();
        for f in name.leftovers() {
            assert_eq!(owner_group_mode(&f), (me, group, mode), "{f}");
        }
        let a = args(&name);
        let mut child = spawn(TEST, "writer", &[&a[0], &a[1], &a[2]]);
        child.expect("sent true");
        child.wait_ok();
        let mut child = spawn(TEST, "regrower", &[&a[0], &a[1], &a[2]]);
        child.expect("regrew 1000");
        child.wait_ok();
        for seq in 0..8 {
            let m = reader.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(parse(&m), (7, seq), "mode {mode:o}");
        }
        let m = reader.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(m.len(), 3000, "mode {mode:o}");
        assert!(m.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        drop(m);
        let m = reader.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(&m[..], [9; 3000], "mode {mode:o}");
        drop(m);
        // Each grown buffer is its Writer's object, with the pool's mode and, where only
        // the group may write, the pool's group (else the Writer's own). The generation
        // the second Writer replaced, the first Writer's, is gone: the Reader removed it.
        let mut grown: Vec<_> = name
            .leftovers()
            .into_iter()
            .map(|f| owner_group_mode(&f))
            .filter(|&(uid, _, _)| uid != me)
            .collect();
        grown.sort();
        let gid = |uid| if mode & 0o002 == 0 { group } else { uid };
        assert_eq!(
            grown,
            [(OTHER, gid(OTHER), mode), (NOBODY, gid(NOBODY), mode)],
            "mode {mode:o}"
        );
        reader.validate().unwrap();
        assert_eq!(reader.stats().unwrap().repairs, 0, "mode {mode:o}");
        drop(reader);
        // The Reader removes every object, the other user's included.
        name.assert_no_leftovers();
    }
}

/// What the Reader of a pool created with `mode` makes of an object that stands under the
/// name of the buffer its one queued message names: the message is queued, its entry is
/// pointed at the next generation, and `plant(new, old)` puts something under that name
/// (`old`: the message's real buffer object). Returns the message if the Reader delivered
/// it, and whether the planted name was left in place.
#[cfg(target_os = "linux")]
fn receive_from_planted(mode: u32, plant: impl FnOnce(&str, &str)) -> (Option<Vec<u8>>, bool) {
    let name = TestName::new("pool-planted");
    let reader = Reader::create_with_mode(&name, small_config(), mode).unwrap();
    let access = if mode & 0o022 != 0 {
        Access::shared_by(common::euid())
    } else {
        Access::owner_only()
    };
    let writer = Writer::connect_with(&name, access).unwrap();
    let mut b = writer.acquire().unwrap();
    message(&mut b, 3, 1);
    writer.send(b).unwrap();
    let index = common::RawObject::open(&common::os_name(&name, "pool"));
    let queued = (0..64)
        .find(|&i| index.read_u32(entry_offset(i, 0) as usize) == 3)
        .expect("one entry is QUEUED");
    let at = entry_offset(queued, 12) as usize;
    let generation = index.read_u32(at);
    let file = |g: u32| format!("shmlink.{}.pool.b{queued}.g{g}", name.as_str());
    let (old, new) = (file(generation), file(generation + 1));
    plant(&format!("/dev/shm/{new}"), &format!("/dev/shm/{old}"));
    let planted = std::fs::symlink_metadata(format!("/dev/shm/{new}")).unwrap();
    index.write_u32(at, generation + 1);
    let got = reader
        .recv_timeout(Duration::from_millis(200))
        .ok()
        .map(|m| m.copy_to_vec());
    if got.is_none() {
        assert!(
            reader.stats().unwrap().repairs > 0,
            "the message was dropped"
        );
    }
    drop(writer);
    drop(reader);
    let left = std::fs::symlink_metadata(format!("/dev/shm/{new}"));
    let kept = left.is_ok_and(|m| {
        std::os::unix::fs::MetadataExt::ino(&m) == std::os::unix::fs::MetadataExt::ino(&planted)
    });
    (got, kept)
}

/// Copies the buffer object `old` to `new`, owned by [`NOBODY`], group `gid`, mode
/// `mode`: a buffer that a Writer of another uid could have grown (or a squatter planted).
#[cfg(target_os = "linux")]
fn plant_copy(new: &str, old: &str, gid: u32, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(new, std::fs::read(old).unwrap()).unwrap();
    std::os::unix::fs::chown(new, Some(NOBODY), Some(gid)).unwrap();
    std::fs::set_permissions(new, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The rule a pool applies to buffer objects of other uids: accepted only in a pool that
/// lets others write, with a mode no wider than the pool's and, where only the group may
/// write, the pool's group; never a symbolic link. What it refuses it neither uses nor
/// removes (the message in it is dropped as from a missing buffer).
#[test]
// Unix only: other owners (chown), file modes, /dev/shm links.
#[cfg(target_os = "linux")]
fn a_pool_accepts_other_users_buffer_objects_only_within_its_mode_and_group() {
    const TEST: &str = "a_pool_accepts_other_users_buffer_objects_only_within_its_mode_and_group";
    if !common::is_root() {
        eprintln!("SKIPPED {TEST}: needs root to give objects to another uid");
        return;
    }
    let _w = watchdog(TEST, Duration::from_secs(60));
    let group = common::egid();
    let nobody = NOBODY;
    let sent = |got: &Option<Vec<u8>>| got.as_deref().map(parse) == Some((3, 1));

    // Admitted: another uid's buffer in a shared pool, within its mode (and group).
    for (mode, obj_mode) in [(0o660, 0o660), (0o660, 0o600), (0o666, 0o666)] {
        let (got, _) = receive_from_planted(mode, |new, old| plant_copy(new, old, group, obj_mode));
        assert!(sent(&got), "pool {mode:o}, object {obj_mode:o}: {got:?}");
    }
    // Where others may write, the group does not matter.
    let (got, _) = receive_from_planted(0o666, |new, old| plant_copy(new, old, nobody, 0o666));
    assert!(sent(&got), "pool 666, another group: {got:?}");

    // Refused, and left where it is.
    type Plant = Box<dyn FnOnce(&str, &str)>;
    let refused: [(&str, u32, Plant); 5] = [
        (
            "single-user pool, another uid's object",
            0o600,
            Box::new(move |new, old| plant_copy(new, old, group, 0o600)),
        ),
        (
            "single-user pool, another uid's object others may write",
            0o600,
            Box::new(move |new, old| plant_copy(new, old, group, 0o666)),
        ),
        (
            "a mode wider than the pool's",
            0o660,
            Box::new(move |new, old| plant_copy(new, old, group, 0o666)),
        ),
        (
            "another group where only the group may write",
            0o660,
            Box::new(move |new, old| plant_copy(new, old, nobody, 0o660)),
        ),
        (
            "a symbolic link to a real buffer",
            0o666,
            Box::new(move |new, old| std::os::unix::fs::symlink(old, new).unwrap()),
        ),
    ];
    for (what, mode, plant) in refused {
        let (got, kept) = receive_from_planted(mode, plant);
        assert_eq!(got, None, "{what}: delivered");
        assert!(kept, "{what}: the planted object was removed or replaced");
    }
}

/// An adopted pool keeps its mode (and says so); a Reader that asked for a single-user pool
/// refuses one that others may write, and leaves it (and its queue) alone.
#[test]
// Unix only: file modes.
#[cfg(target_os = "linux")]
fn an_adopted_pool_keeps_its_mode_and_a_single_user_reader_refuses_a_shared_one() {
    let _w = watchdog("adopted_mode", Duration::from_secs(60));
    let name = TestName::new("pool-mode-adopt");
    let reader = Reader::create_with_mode(&name, small_config(), 0o660).unwrap();
    assert!(reader.kept_config().is_empty());
    let writer = Writer::connect_with(&name, Access::shared_by(common::euid())).unwrap();
    let mut b = writer.acquire().unwrap();
    message(&mut b, 1, 0);
    writer.send(b).unwrap();
    drop(reader); // parks the pool: a message is queued
    match Reader::create(&name, small_config()) {
        Err(PoolError::Setup(Error::Squatted { reason, .. })) => {
            assert!(reason.contains("writable by group or others"), "{reason}")
        }
        r => panic!("a single-user Reader adopted a shared pool: {r:?}"),
    }
    let reader = Reader::create_with_mode(&name, small_config(), 0o666).unwrap();
    assert!(reader.adopted());
    assert_eq!(reader.kept_config(), ["mode"]);
    for f in name.leftovers() {
        assert_eq!(owner_group_mode(&f).2, 0o660, "{f}");
    }
    let m = reader.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(parse(&m), (1, 0));
    drop(m);
    drop(writer);
    drop(reader);
    name.assert_no_leftovers();
}
