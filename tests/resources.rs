//! Bounded resources: a pool's buffers cost no file descriptor each, and `admin::list` /
//! `admin::clean` judge them by their pool (live while its Reader is, stale after it dies).
//! Linux only: both read Linux's views (/proc/self/fd, /dev/shm); on Windows a section
//! handle per buffer is cheap and nothing is ever left behind to list.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::{child_exit, child_role, hear_parent, spawn, tell_parent, watchdog, TestName};
use shmlink::admin::{self, Status};
use shmlink::{PoolConfig, Reader, Writer};

/// Serialises this file's tests: fds are counted per process, and the other test's child
/// holds pipes.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn config() -> PoolConfig {
    PoolConfig {
        start_buffers: 4,
        max_buffers: 128,
        initial_buffer_size: 4096,
        ..PoolConfig::default()
    }
}

/// This service's objects as `admin::list` sees them: (tag after the service name, status).
fn listed(name: &str) -> Vec<(String, Status)> {
    let prefix = format!("/shmlink.{name}.");
    admin::list()
        .unwrap()
        .into_iter()
        .filter(|o| o.service.as_deref() == Some(name))
        .map(|o| (o.os_name.trim_start_matches(&prefix).to_owned(), o.status))
        .collect()
}

#[test]
fn a_pool_grown_to_96_buffers_costs_its_reader_and_writer_no_fd_per_buffer() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _w = watchdog("fds per pool", Duration::from_secs(60));
    let name = TestName::new("res-fds");
    let before = open_fds();
    let reader = Reader::create(&name, config()).unwrap();
    let writer = Writer::connect(&name).unwrap();
    // Held at once, the 96 buffers make the pool grow; sent, the Reader maps each one.
    let held: Vec<_> = (0..96).map(|_| writer.acquire().unwrap()).collect();
    for (i, mut b) in held.into_iter().enumerate() {
        b.extend_from_slice(&(i as u32).to_le_bytes()).unwrap();
        writer.send(b).unwrap();
    }
    for i in 0..96u32 {
        let m = reader.recv_timeout(common::STEP).unwrap();
        assert_eq!(&m[..], &i.to_le_bytes());
    }
    let stats = reader.stats().unwrap();
    assert!(stats.buffers >= 96, "{stats:?}");
    let grown = open_fds() - before;
    println!(
        "{} buffers, mapped by both: {grown} more fds (Reader and Writer together)",
        stats.buffers
    );
    assert!(
        grown <= 12,
        "{grown} fds for a pool of {} buffers",
        stats.buffers
    );
    drop(writer);
    drop(reader);
    assert!(open_fds() <= before, "fds left open after the pool's end");
    name.assert_no_leftovers();
}

#[test]
fn list_shows_a_live_pools_buffers_live_and_clean_removes_a_killed_readers_pool() {
    const TEST: &str =
        "list_shows_a_live_pools_buffers_live_and_clean_removes_a_killed_readers_pool";
    if let Some((_, args)) = child_role() {
        let _reader = Reader::create(&args[0], config()).unwrap();
        tell_parent("ready");
        hear_parent(); // killed here
        child_exit(1);
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _w = watchdog(TEST, Duration::from_secs(60));
    let name = TestName::new("res-list");
    let mut reader = spawn(TEST, "reader", &[&name]);
    reader.expect("ready");
    let writer = Writer::connect(&name).unwrap();
    let held: Vec<_> = (0..20).map(|_| writer.acquire().unwrap()).collect();
    for b in held {
        writer.send(b).unwrap();
    }
    let live = listed(&name);
    let buffers = live.iter().filter(|(t, _)| t.starts_with("pool.b")).count();
    assert!(buffers >= 20, "{live:?}");
    assert!(
        live.iter().all(|(_, s)| *s == Status::Live),
        "a live pool's objects: {live:?}"
    );
    reader.kill();
    reader.wait();
    let dead = listed(&name);
    assert!(
        dead.iter().all(|(_, s)| *s == Status::Stale),
        "a killed Reader's pool: {dead:?}"
    );
    let removed = admin::clean(false).unwrap();
    let ours = removed
        .iter()
        .filter(|o| o.service.as_deref() == Some(name.as_str()))
        .count();
    assert_eq!(ours, dead.len(), "removed {removed:?}");
    assert!(listed(&name).is_empty());
    drop(writer);
    name.assert_no_leftovers();
}
