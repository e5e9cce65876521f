//! Segments across real processes: stale objects, live owners, foreign objects, bad headers,
//! permissions, and no leftovers.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::{child_exit, child_role, spawn, tell_parent, watchdog, TestName};
use shmlink::{Error, Segment};

fn shm_path(seg_os_name: &str) -> String {
    format!("/dev/shm{seg_os_name}")
}

#[test]
fn stale_segment_of_a_killed_creator_is_replaced() {
    if let Some((_, args)) = child_role() {
        let seg = Segment::builder(&args[0]).size(4096).create().unwrap();
        tell_parent("created");
        common::hear_parent(); // never answered: we get SIGKILLed holding the segment
        drop(seg);
        child_exit(0);
    }
    let _w = watchdog(
        "stale_segment_of_a_killed_creator_is_replaced",
        Duration::from_secs(60),
    );
    let name = TestName::new("stale");
    let mut child = spawn(
        "stale_segment_of_a_killed_creator_is_replaced",
        "creator",
        &[&name],
    );
    child.expect("created");
    let old = Segment::open(&name).unwrap();
    assert_eq!(old.owner().pid(), child.pid());
    child.kill();
    assert!(
        !old.owner().is_alive(),
        "a killed (and reaped) creator must not look alive"
    );
    let seg = Segment::builder(&name)
        .size(8192)
        .create()
        .expect("create over a stale segment");
    assert_eq!(seg.len(), 8192);
    assert_ne!(
        seg.token(),
        old.token(),
        "a new incarnation gets a new token"
    );
    drop((seg, old));
    assert!(
        name.leftovers().is_empty(),
        "left behind: {:?}",
        name.leftovers()
    );
}

#[test]
fn live_creator_makes_a_second_create_fail_with_already_running() {
    if let Some((_, args)) = child_role() {
        let _seg = Segment::builder(&args[0]).size(64).create().unwrap();
        tell_parent("created");
        common::hear_parent(); // until the parent closes our stdin (or kills us)
        child_exit(0);
    }
    let _w = watchdog("live_creator", Duration::from_secs(60));
    let name = TestName::new("live");
    let mut child = spawn(
        "live_creator_makes_a_second_create_fail_with_already_running",
        "creator",
        &[&name],
    );
    child.expect("created");
    match Segment::builder(&name).size(64).create() {
        Err(Error::AlreadyRunning { pid, .. }) => assert_eq!(pid, child.pid()),
        other => panic!("expected AlreadyRunning, got {other:?}"),
    }
    // The live segment is untouched and still opens.
    assert!(Segment::open(&name).is_ok());
    child.kill();
}

#[test]
fn foreign_object_is_refused_and_left_alone() {
    let name = TestName::new("foreign");
    let path = shm_path(&format!("/shmlink.{}.seg", name.as_str()));
    let content = b"not a shmlink segment, just someone else's bytes".repeat(20);
    std::fs::write(&path, &content).unwrap();
    match Segment::builder(&name).size(64).create() {
        Err(Error::Foreign { .. }) => {}
        other => panic!("expected Foreign on create, got {other:?}"),
    }
    match Segment::open(&name) {
        Err(Error::Foreign { .. }) => {}
        other => panic!("expected Foreign on open, got {other:?}"),
    }
    assert!(matches!(
        Segment::remove(&name, true),
        Err(Error::Foreign { .. })
    ));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        content,
        "a foreign object must never be modified or removed"
    );
}

#[test]
fn wrong_header_version_is_refused() {
    let name = TestName::new("version");
    let seg = Segment::builder(&name).size(64).create().unwrap();
    let path = shm_path(seg.os_name());
    // header_version is the u32 right after the 8-byte magic.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_ne_bytes());
    std::fs::write(&path, &bytes).unwrap();
    match Segment::open(&name) {
        Err(e @ Error::VersionMismatch { found: 99, .. }) => {
            assert!(e.to_string().contains("99"), "{e}")
        }
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
}

#[test]
fn truncated_segment_is_refused() {
    let name = TestName::new("trunc");
    let seg = Segment::builder(&name).size(8192).create().unwrap();
    let path = shm_path(seg.os_name());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4096)
        .unwrap();
    match Segment::open(&name) {
        Err(e @ Error::Corrupt { .. }) => assert!(e.to_string().contains("bytes"), "{e}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    assert!(matches!(Segment::open(&name), Err(Error::Corrupt { .. })));
}

#[test]
fn kind_mismatch_and_missing_and_bad_names_give_clear_errors() {
    let name = TestName::new("kinds");
    assert!(matches!(Segment::open(&name), Err(Error::NotFound { .. })));
    assert!(matches!(
        Segment::open("bad/name"),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        Segment::builder("").create(),
        Err(Error::InvalidName { .. })
    ));
    let _m = shmlink::Mutex::create(&name).unwrap();
    // The mutex lives under another tag, so a raw open of the same service name finds nothing.
    assert!(matches!(Segment::open(&name), Err(Error::NotFound { .. })));
}

#[test]
fn impossible_size_is_an_error_not_a_sigbus() {
    let name = TestName::new("nospace");
    match Segment::builder(&name).size(1 << 45).create() {
        Err(Error::NoSpace { size, .. }) => assert!(size >= 1 << 45),
        other => panic!("expected NoSpace for 32 TiB, got {other:?}"),
    }
    assert!(
        name.leftovers().is_empty(),
        "a failed create must not leave its object behind"
    );
}

#[test]
fn owner_only_segment_refuses_another_uid() {
    if let Some((_, args)) = child_role() {
        // SAFETY: single-threaded child (apart from the watchdog) dropping privileges.
        let ok = unsafe { libc::setgid(65534) == 0 && libc::setuid(65534) == 0 };
        assert!(ok, "setuid failed");
        match Segment::open(&args[0]) {
            Err(Error::PermissionDenied { .. }) => tell_parent("denied"),
            other => tell_parent(&format!("unexpected: {other:?}")),
        }
        child_exit(0);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "SKIPPED owner_only_segment_refuses_another_uid: needs root to switch to another uid"
        );
        return;
    }
    let _w = watchdog("owner_only", Duration::from_secs(60));
    let name = TestName::new("perm");
    let seg = Segment::builder(&name).size(64).create().unwrap();
    let mode = std::fs::metadata(shm_path(seg.os_name()))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
    assert_eq!(mode, 0o600);
    let mut child = spawn(
        "owner_only_segment_refuses_another_uid",
        "intruder",
        &[&name],
    );
    child.expect("denied");
    child.wait_ok();
}

#[test]
fn dropping_the_creator_leaves_nothing_in_dev_shm() {
    let name = TestName::new("noleak");
    {
        let seg = Segment::builder(&name).size(1 << 20).create().unwrap();
        let _peer = Segment::open(&name).unwrap();
        let _m = shmlink::Mutex::create(&name).unwrap();
        let _e = shmlink::EventPair::create(&name).unwrap();
        assert!(!name.leftovers().is_empty());
        assert!(seg.is_owner());
    }
    assert!(
        name.leftovers().is_empty(),
        "left behind: {:?}",
        name.leftovers()
    );
}

#[test]
fn remove_refuses_a_live_owner_and_removes_a_dead_one() {
    if let Some((_, args)) = child_role() {
        let _seg = Segment::builder(&args[0]).size(64).create().unwrap();
        tell_parent("created");
        common::hear_parent();
        child_exit(0);
    }
    let _w = watchdog("remove", Duration::from_secs(60));
    let name = TestName::new("remove");
    let mut child = spawn(
        "remove_refuses_a_live_owner_and_removes_a_dead_one",
        "creator",
        &[&name],
    );
    child.expect("created");
    assert!(matches!(
        Segment::remove(&name, false),
        Err(Error::AlreadyRunning { .. })
    ));
    child.kill();
    assert!(Segment::remove(&name, false).unwrap());
    assert!(!Segment::remove(&name, false).unwrap());
    assert!(name.leftovers().is_empty());
}
