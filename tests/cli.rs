//! The `shmlink` command-line tool (feature `cli`) against real objects of real processes:
//! a live server, the stale segment of a SIGKILLed one, a pool with queued messages, a
//! channel with a connected client, and `bench`'s peer processes.
#![cfg(feature = "cli")]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{child_role, hear_parent, spawn, tell_parent, watchdog, TestName};
use shmlink::{Client, PoolConfig, Reader, Server, Writer};

/// Runs the binary with `args`; fails the test if it fails or runs longer than `limit`
/// (killed then, so that a hang is a message, not a CI timeout).
fn shmlink_within(args: &[&str], limit: Duration) -> (u32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shmlink"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the shmlink binary");
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shmlink {args:?} still running after {limit:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = reader.join().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "shmlink {args:?}: {status}\n{out}\n{err}");
    (pid, out)
}

fn shmlink(args: &[&str]) -> String {
    shmlink_within(args, Duration::from_secs(30)).1
}

/// The line of `output` about the object `os_name`.
#[cfg(target_os = "linux")] // listing needs /dev/shm
fn line<'a>(output: &'a str, os_name: &str) -> Option<&'a str> {
    output
        .lines()
        .find(|l| l.split_whitespace().next() == Some(os_name))
}

/// The line of `output` that starts (after indentation) with `label`, unindented.
fn labelled<'a>(output: &'a str, label: &str) -> &'a str {
    output
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in\n{output}"))
}

#[test]
#[cfg(target_os = "linux")] // listing needs /dev/shm
fn list_shows_live_and_stale_objects_and_clean_removes_only_the_stale() {
    if let Some((role, args)) = child_role() {
        match role.as_str() {
            "server" => {
                let handle = Server::builder(&args[0])
                    .create()
                    .unwrap()
                    .spawn(|_: &[u8], _: &mut [u8]| 0)
                    .unwrap();
                tell_parent("ready");
                hear_parent();
                handle.shutdown();
            }
            "owner" => {
                let _seg = shmlink::Segment::builder(&args[0])
                    .size(1 << 20)
                    .create()
                    .unwrap();
                tell_parent("ready");
                hear_parent(); // killed here
            }
            _ => unreachable!(),
        }
        common::child_exit(0);
    }
    let _w = watchdog("cli", Duration::from_secs(60));
    let test = "list_shows_live_and_stale_objects_and_clean_removes_only_the_stale";
    let live = TestName::new("cli-live");
    let dead = TestName::new("cli-dead");
    let mut server = spawn(test, "server", &[&live]);
    server.expect("ready");
    let mut owner = spawn(test, "owner", &[&dead]);
    owner.expect("ready");
    owner.kill();
    let live_obj = format!("/shmlink.{}.chan", live.as_str());
    let dead_obj = format!("/shmlink.{}.seg", dead.as_str());

    let listed = shmlink(&["list"]);
    let l = line(&listed, &live_obj).unwrap_or_else(|| panic!("{live_obj} not in\n{listed}"));
    assert!(l.contains("channel") && l.ends_with("live"), "{l}");
    assert!(
        l.contains(&server.pid().to_string()),
        "owner pid shown: {l}"
    );
    let d = line(&listed, &dead_obj).unwrap_or_else(|| panic!("{dead_obj} not in\n{listed}"));
    assert!(d.contains("raw segment") && d.ends_with("stale"), "{d}");

    let inspected = shmlink(&["inspect", live.as_str()]);
    let l = line(&inspected, &live_obj).unwrap_or_else(|| panic!("{live_obj} in\n{inspected}"));
    assert!(l.contains("channel") && l.ends_with("live"), "{l}");
    assert!(
        labelled(&inspected, "server:").contains("alive"),
        "{inspected}"
    );

    let dry = shmlink(&["clean", "--dry-run"]);
    assert!(dry.contains(&format!("would remove {dead_obj}")), "{dry}");
    assert!(!dry.contains(&live_obj), "{dry}");
    assert!(!dead.leftovers().is_empty(), "a dry run removes nothing");

    let cleaned = shmlink(&["clean"]);
    assert!(
        cleaned.contains(&format!("removed {dead_obj}")),
        "{cleaned}"
    );
    assert!(!cleaned.contains(&live_obj), "{cleaned}");
    assert!(dead.leftovers().is_empty(), "the stale one is gone");
    let mut client = Client::connect(&live).unwrap();
    assert!(client.call(b"still serving").is_ok());
    drop(client);

    server.send("stop");
    server.wait_ok();
    live.assert_no_leftovers();
}

#[test]
fn inspect_shows_a_pool_s_lists_and_queued_messages() {
    if let Some((role, args)) = child_role() {
        assert_eq!(role, "reader");
        let config = PoolConfig {
            initial_buffer_size: 4096,
            start_buffers: 4,
            max_buffers: 4, // no growth: the counts stay as the test makes them
            ..PoolConfig::default()
        };
        let reader = Reader::create(&args[0], config).unwrap();
        tell_parent("ready");
        assert_eq!(hear_parent().as_deref(), Some("drain"));
        for _ in 0..3 {
            drop(reader.recv_timeout(common::STEP).unwrap());
        }
        drop(reader); // nothing pending: the pool goes with it
        tell_parent("drained");
        common::child_exit(0);
    }
    let _w = watchdog("inspect pool", Duration::from_secs(60));
    let test = "inspect_shows_a_pool_s_lists_and_queued_messages";
    let name = TestName::new("cli-pool");
    let mut reader = spawn(test, "reader", &[&name]);
    reader.expect("ready");
    let writer = Writer::connect(&name).unwrap();
    for i in 0..3u8 {
        let mut buf = writer.acquire_timeout(common::STEP).unwrap();
        buf.extend_from_slice(&[i; 100]).unwrap();
        writer.send(buf).map_err(|e| e.into_inner()).unwrap();
    }
    let held = writer.acquire_timeout(common::STEP).unwrap();

    let out = shmlink(&["inspect", name.as_str()]);
    assert!(out.contains("without the pool lock"), "{out}");
    let lists = labelled(&out, "lists:");
    for want in [
        "free 0",
        "allocated 1",
        "queued 3",
        "received 0",
        "disposed 0",
    ] {
        assert!(lists.contains(want), "{want:?} in {lists:?}");
    }
    assert!(lists.contains("4 buffers of at most 4"), "{lists}");
    assert!(
        labelled(&out, "counters:").contains("sent 3, delivered 0"),
        "{out}"
    );
    let who = labelled(&out, "reader:");
    assert!(
        who.contains(&format!("pid {}, alive", reader.pid())),
        "{who}"
    );
    assert_eq!(
        labelled(&out, "queue:").split_whitespace().count(),
        1 + 3 + 4,
        "{out}"
    );
    let me = std::process::id().to_string();
    let queued = out.lines().filter(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.get(1) == Some(&"queued") && cols.last() == Some(&me.as_str())
    });
    assert_eq!(
        queued.count(),
        3,
        "queued buffers name their Writer:\n{out}"
    );
    assert!(labelled(&out, "config:").contains("4.0 KiB each"), "{out}");
    #[cfg(target_os = "linux")] // listing needs /dev/shm
    assert!(
        out.contains(&format!("/shmlink.{}.pool", name.as_str())),
        "{out}"
    );

    drop(held);
    drop(writer);
    reader.send("drain");
    reader.expect("drained");
    reader.wait_ok();
    name.assert_no_leftovers();
    let gone = shmlink(&["inspect", name.as_str()]);
    assert!(gone.contains("no objects of service"), "{gone}");
}

#[test]
fn inspect_shows_a_channel_s_connected_client() {
    if let Some((role, args)) = child_role() {
        assert_eq!(role, "server");
        let handle = Server::builder(&args[0])
            .slots(4)
            .max_message(256)
            .create()
            .unwrap()
            .spawn(|_: &[u8], _: &mut [u8]| 0)
            .unwrap();
        tell_parent("ready");
        hear_parent();
        handle.shutdown();
        common::child_exit(0);
    }
    let _w = watchdog("inspect channel", Duration::from_secs(60));
    let test = "inspect_shows_a_channel_s_connected_client";
    let name = TestName::new("cli-chan");
    let mut server = spawn(test, "server", &[&name]);
    server.expect("ready");
    let mut client = Client::connect(&name).unwrap();
    for _ in 0..2 {
        client.call(b"hello").unwrap();
    }

    let out = shmlink(&["inspect", name.as_str()]);
    let s = labelled(&out, "server:");
    assert!(s.contains(&format!("pid {}, alive", server.pid())), "{s}");
    let slots = labelled(&out, "slots:");
    assert!(
        slots.contains("1 of 4 connected, 0 calls in flight"),
        "{slots}"
    );
    assert!(slots.contains("256 B"), "{slots}");
    let me = std::process::id().to_string();
    let row = out
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(me.as_str()))
        .unwrap_or_else(|| panic!("no slot of client {me} in\n{out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[2..], ["yes", "idle", "1", "2"], "{row}");

    drop(client);
    let after = shmlink(&["inspect", name.as_str()]);
    assert!(
        labelled(&after, "slots:").contains("0 of 4 connected"),
        "{after}"
    );
    server.send("stop");
    server.wait_ok();
    name.assert_no_leftovers();
}

/// A stalled Reader's index, scribbled on as a broken peer would: `inspect` reports what it
/// finds (clamped, cut short, marked invalid) and never fails, hangs or panics.
#[test]
fn inspect_survives_a_scribbled_pool_index() {
    if let Some((role, args)) = child_role() {
        assert_eq!(role, "reader");
        let config = PoolConfig {
            initial_buffer_size: 4096,
            start_buffers: 4,
            max_buffers: 4,
            ..PoolConfig::default()
        };
        let _reader = Reader::create(&args[0], config).unwrap();
        tell_parent("ready");
        hear_parent(); // stopped, then killed here
        common::child_exit(0);
    }
    let _w = watchdog("inspect scribbled", Duration::from_secs(90));
    let test = "inspect_survives_a_scribbled_pool_index";
    let name = TestName::new("cli-scribbled");
    let mut reader = spawn(test, "reader", &[&name]);
    reader.expect("ready");
    let writer = Writer::connect(&name).unwrap();
    for i in 0..3u8 {
        let mut buf = writer.acquire_timeout(common::STEP).unwrap();
        buf.extend_from_slice(&[i; 10]).unwrap();
        writer.send(buf).map_err(|e| e.into_inner()).unwrap();
    }
    // No service thread may repair what follows. Unix: the Reader is stopped, so the pool
    // stays live (another test's `shmlink clean` would remove a dead Reader's). Windows
    // cannot stop a process: it is killed, and the Writer keeps the objects open.
    #[cfg(unix)]
    let frozen = common::freeze(&reader);
    #[cfg(windows)]
    reader.kill();

    // Index data-region offsets, pinned by src/pool/index/tests.rs: the lists' words at
    // 72..128 (queued count at 96, allocated at 120), the directory at 832, 64 B entries.
    let raw = common::RawObject::open(&common::os_name(&name, "pool"));
    let at = |offset: usize| common::HEADER_SIZE + offset;
    let entry = |i: usize, field: usize| at(832 + i * 64 + field);
    raw.write_u32(at(96), u32::MAX);
    raw.write_u32(at(120), u32::MAX);
    raw.write_u32(entry(2, 8), 0); // the queue's tail links back to its head: a cycle
    raw.write_u32(entry(3, 0), 0x77); // a status nobody writes
    let out = shmlink(&["inspect", name.as_str()]);
    let reader_alive = cfg!(unix);
    let who = labelled(&out, "reader:");
    assert!(
        who.contains(if reader_alive { "alive" } else { "dead" }),
        "{who}"
    );
    let lists = labelled(&out, "lists:");
    assert!(lists.contains("allocated 4, queued 4"), "clamped: {lists}");
    let queue = labelled(&out, "queue:");
    assert!(
        queue.starts_with("queue:     0 1 2 0 (buffers"),
        "cut short: {queue}"
    );
    assert!(out.contains("invalid 0x77"), "{out}");

    // Random words over the lists and the directory: every snapshot is read, none fails.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
    for _ in 0..20 {
        for offset in (72..128).step_by(4).chain((832..832 + 4 * 64).step_by(4)) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let word = match x % 4 {
                0 => x as u32 % 8,
                1 => u32::MAX,
                _ => x as u32,
            };
            raw.write_u32(at(offset), word);
        }
        let out = shmlink(&["inspect", name.as_str()]);
        assert!(
            labelled(&out, "lists:").contains("buffers of at most 4"),
            "{out}"
        );
    }
    drop(raw);
    #[cfg(unix)]
    frozen.thaw();
    reader.kill();
    drop(writer);
}

#[test]
fn inspect_refuses_a_bad_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_shmlink"))
        .args(["inspect", "no/such name"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid service name"), "{err}");
}

#[test]
fn bench_prints_its_figures_and_leaves_nothing() {
    let _w = watchdog("bench", Duration::from_secs(120));
    let args = ["bench", "--calls", "300", "--messages", "4"];
    let (pid, out) = shmlink_within(&args, Duration::from_secs(90));
    let figure = |what: &str| labelled(&out, what).to_owned();
    assert!(
        figure("shmlink channel round trip").contains("median"),
        "{out}"
    );
    assert!(figure("shmlink pool bulk").contains("GB/s"), "{out}");
    #[cfg(unix)] // the socket baseline is Unix-only
    {
        assert!(figure("unix socket round trip").contains("p99"), "{out}");
        assert!(figure("unix socket bulk").contains("GB/s"), "{out}");
        assert!(figure("ratio: round trip").contains('x'), "{out}");
    }
    let tag = format!("bench-{pid}");
    let left: Vec<String> = common::list_shm()
        .into_iter()
        .filter(|f| f.contains(&tag))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
