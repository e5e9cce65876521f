//! Segments across real processes: stale objects, live owners, foreign objects, bad headers,
//! permissions, squatted names (other users, links, FIFOs), cleanup that never blocks, and no
//! leftovers.
//!
//! Runs on Linux and Windows (under Wine in CI). What cannot exist on Windows is gated with
//! its reason: other uids, truncation, links and FIFOs under a name, file locks. Where
//! Windows differs by design (a section lives while any handle to it is open), the test pins
//! the Windows behaviour.

mod common;

use std::time::Duration;

#[cfg(target_os = "linux")]
use common::NOBODY;
use common::{child_exit, child_role, os_name, spawn, tell_parent, watchdog, RawObject, TestName};
#[cfg(target_os = "linux")]
use shmlink::{server_or_client, Access, CallError, Client, EventPair, Mutex, Server};
use shmlink::{Error, Segment};

#[cfg(target_os = "linux")]
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
    let old_token = old.token();
    // Windows keeps a section while any handle is open and cannot remove its name: while
    // `old` maps the dead creator's segment, creating the name again is refused with a
    // clear error; once the last handle is gone, the name is free.
    #[cfg(windows)]
    {
        match Segment::builder(&name).size(8192).create() {
            Err(e @ Error::StillMapped { .. }) => {
                assert!(e.to_string().contains("still"), "{e}")
            }
            other => panic!("expected StillMapped while a peer maps it, got {other:?}"),
        }
        drop(old);
    }
    let seg = Segment::builder(&name)
        .size(8192)
        .create()
        .expect("create over a stale segment");
    assert_eq!(seg.len(), 8192);
    assert_ne!(seg.token(), old_token, "a new incarnation gets a new token");
    drop(seg);
    #[cfg(unix)]
    drop(old);
    name.assert_no_leftovers();
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
    let content = b"not a shmlink segment, just someone else's bytes".repeat(20);
    let raw = RawObject::create_foreign(&os_name(&name, "seg"), &content);
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
        RawObject::open(&os_name(&name, "seg")).read(0, content.len()),
        content,
        "a foreign object must never be modified or removed"
    );
    drop(raw);
}

#[test]
fn wrong_header_version_is_refused() {
    let name = TestName::new("version");
    let seg = Segment::builder(&name).size(64).create().unwrap();
    // header_version is the u32 right after the 8-byte magic.
    RawObject::open(seg.os_name()).write_u32(8, 99);
    match Segment::open(&name) {
        Err(e @ Error::VersionMismatch { found: 99, .. }) => {
            assert!(e.to_string().contains("99"), "{e}")
        }
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
}

#[test]
// Windows: a section's size is fixed at creation; nothing can truncate it.
#[cfg(target_os = "linux")]
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
    name.assert_no_leftovers();
}

#[test]
// Unix only: switches a child to another uid (Windows: the default DACL, not testable here).
#[cfg(target_os = "linux")]
fn owner_only_segment_refuses_another_uid() {
    if let Some((_, args)) = child_role() {
        common::become_nobody();
        match Segment::open(&args[0]) {
            Err(Error::PermissionDenied { .. }) => tell_parent("denied"),
            other => tell_parent(&format!("unexpected: {other:?}")),
        }
        child_exit(0);
    }
    if !common::is_root() {
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
        #[cfg(unix)]
        assert!(!name.leftovers().is_empty());
        assert!(seg.is_owner());
    }
    name.assert_no_leftovers();
    // Windows has no listing (see common::list_shm): the name must not open any more.
    assert!(RawObject::try_open(&os_name(&name, "seg")).is_err());
    assert!(RawObject::try_open(&os_name(&name, "mutex")).is_err());
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
    // Windows removes a section with its last handle: the dead owner's is already gone.
    assert_eq!(Segment::remove(&name, false).unwrap(), cfg!(unix));
    assert!(!Segment::remove(&name, false).unwrap());
    name.assert_no_leftovers();
}

// ------------------------------------------------------------------------ squatted names

/// Inode of the /dev/shm entry `file` (not following a link).
#[cfg(target_os = "linux")]
fn inode(file: &str) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::symlink_metadata(file).unwrap())
}

/// Whether `e` is `Error::Squatted` (also wrapped in a channel error) whose reason contains
/// `why`, owned by `uid`.
#[cfg(target_os = "linux")]
fn is_squatted(e: &(dyn std::error::Error + 'static), why: &str, uid: u32) -> bool {
    let err = match e.downcast_ref::<CallError>() {
        Some(CallError::Setup(inner)) => inner,
        Some(_) => return false,
        None => match e.downcast_ref::<Error>() {
            Some(inner) => inner,
            None => return false,
        },
    };
    matches!(err, Error::Squatted { reason, owner_uid, .. }
        if reason.contains(why) && *owner_uid == uid)
}

#[track_caller]
#[cfg(target_os = "linux")]
fn assert_squatted<T: std::fmt::Debug, E: std::error::Error + 'static>(
    r: Result<T, E>,
    why: &str,
    uid: u32,
) {
    match r {
        Err(e) if is_squatted(&e, why, uid) => {
            // The message names what is wrong and who owns the object.
            let msg = e.to_string();
            assert!(msg.contains(&format!("uid {uid}")), "{msg}");
        }
        other => panic!("expected Squatted ({why}, uid {uid}), got {other:?}"),
    }
}

#[test]
// Unix only: another uid (setuid) and file modes.
#[cfg(target_os = "linux")]
fn another_users_world_writable_object_is_squatted_never_served_or_removed() {
    if let Some((_, args)) = child_role() {
        common::become_nobody();
        let server = Server::builder(&args[0]).mode(0o666).create().unwrap();
        let handle = server
            .spawn(|_req: &[u8], resp: &mut [u8]| {
                resp[..8].copy_from_slice(b"hijacked");
                8
            })
            .unwrap();
        let seg = Segment::builder(&args[0]).mode(0o666).size(64).create();
        tell_parent(&format!("ready {}", seg.is_ok()));
        common::hear_parent(); // until the parent says so (or kills us)
        handle.shutdown();
        drop(seg);
        child_exit(0);
    }
    if !common::is_root() {
        eprintln!(
            "SKIPPED another_users_world_writable_object_is_squatted_never_served_or_removed: \
             needs root to switch a child to another uid"
        );
        return;
    }
    let _w = watchdog("other_user_squat", Duration::from_secs(60));
    let name = TestName::new("squat");
    let mut child = spawn(
        "another_users_world_writable_object_is_squatted_never_served_or_removed",
        "squatter",
        &[&name],
    );
    child.expect("ready true");
    let chan = shm_path(&format!("/shmlink.{}.chan", name.as_str()));
    let seg = shm_path(&format!("/shmlink.{}.seg", name.as_str()));
    let before = (inode(&chan), inode(&seg));
    for f in [&chan, &seg] {
        let m = std::fs::metadata(f).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&m), NOBODY);
        assert_eq!(std::os::unix::fs::MetadataExt::mode(&m) & 0o777, 0o666);
    }
    let why = &format!("owned by uid {NOBODY}");
    // Our server does not start (and is not told "already running"), our client is not
    // answered by the other user's server, and nothing of theirs is removed.
    assert_squatted(Server::builder(&name).create(), why, NOBODY);
    assert_squatted(Client::connect(&name), why, NOBODY);
    assert_squatted(server_or_client(&name), why, NOBODY);
    assert_squatted(Segment::builder(&name).size(64).create(), why, NOBODY);
    assert_squatted(Segment::open(&name), why, NOBODY);
    assert_squatted(Segment::remove(&name, true), why, NOBODY);
    assert_eq!(
        (inode(&chan), inode(&seg)),
        before,
        "squatted objects were replaced"
    );
    child.send("quit");
    child.wait_ok();
}

#[test]
// Linux only: /dev/shm symlinks (Windows sections are not files).
#[cfg(target_os = "linux")]
fn symlink_under_our_name_is_refused_and_its_target_untouched() {
    let _w = watchdog("symlink_squat", Duration::from_secs(60));
    let ours = TestName::new("link-a");
    let theirs = TestName::new("link-b");
    // Service B runs; a symbolic link to its objects is planted under service A's names.
    let server = Server::builder(&theirs).create().unwrap();
    let handle = server
        .spawn(|req: &[u8], resp: &mut [u8]| {
            resp[..req.len()].copy_from_slice(req);
            req.len()
        })
        .unwrap();
    let seg_b = Segment::builder(&theirs).size(64).create().unwrap();
    let mut planted = Vec::new();
    for tag in ["chan", "seg"] {
        let target = shm_path(&format!("/shmlink.{}.{tag}", theirs.as_str()));
        let link = shm_path(&format!("/shmlink.{}.{tag}", ours.as_str()));
        std::os::unix::fs::symlink(&target, &link).unwrap();
        planted.push((link, target.clone(), inode(&target)));
    }
    let me = common::euid();
    let why = "symbolic link";
    assert_squatted(Client::connect(&ours), why, me);
    assert_squatted(Server::builder(&ours).create(), why, me);
    assert_squatted(Segment::open(&ours), why, me);
    assert_squatted(Segment::builder(&ours).size(64).create(), why, me);
    assert_squatted(Segment::remove(&ours, true), why, me);
    for (link, target, ino) in &planted {
        assert!(std::fs::symlink_metadata(link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(inode(target), *ino, "the link's target was replaced");
    }
    // Service B is untouched and still serves its own clients.
    let mut client = Client::connect(&theirs).unwrap();
    assert_eq!(client.call(b"still B").unwrap(), b"still B");
    assert_eq!(Segment::open(&theirs).unwrap().token(), seg_b.token());
    drop(client);
    handle.shutdown();
}

#[test]
// Linux only: a FIFO in /dev/shm (Windows sections are not files).
#[cfg(target_os = "linux")]
fn fifo_under_our_name_fails_at_once_instead_of_blocking() {
    // A blocked open would hang here: the watchdog turns that into a failure.
    let _w = watchdog("fifo_squat", Duration::from_secs(60));
    let name = TestName::new("fifo");
    let mut fifos = Vec::new();
    for tag in ["seg", "chan"] {
        let path = shm_path(&format!("/shmlink.{}.{tag}", name.as_str()));
        let c = std::ffi::CString::new(path.clone()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        fifos.push(path);
    }
    let me = common::euid();
    let why = "a FIFO";
    assert_squatted(Segment::builder(&name).size(64).create(), why, me);
    assert_squatted(Segment::open(&name), why, me);
    assert_squatted(Segment::remove(&name, true), why, me);
    assert_squatted(Server::builder(&name).create(), why, me);
    assert_squatted(Client::connect(&name), why, me);
    // A live owner whose name was swapped for a FIFO: its drop neither opens nor removes it.
    let swapped = TestName::new("fifo-swap");
    let seg = Segment::builder(&swapped).size(64).create().unwrap();
    let path = shm_path(seg.os_name());
    std::fs::remove_file(&path).unwrap();
    let c = std::ffi::CString::new(path.clone()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    fifos.push(path);
    drop(seg);
    for f in &fifos {
        assert!(
            std::os::unix::fs::FileTypeExt::is_fifo(
                &std::fs::symlink_metadata(f).unwrap().file_type()
            ),
            "the FIFO was removed"
        );
    }
}

// --------------------------------------------------------------- cleanup never blocks

/// Child role: takes `how` ("flock-sh", "flock-ex", or "range": a write lock on every byte
/// of the object but the first, the liveness token's) on the object at `args[0]`, says
/// "locked", and keeps it until the parent says "release".
#[cfg(target_os = "linux")]
fn lock_holder(args: &[String]) -> ! {
    let file = std::fs::File::open(&args[0]).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: `fd` is open; `lock` is a valid flock for F_SETLK.
    let ok = unsafe {
        match args[1].as_str() {
            "flock-sh" => libc::flock(fd, libc::LOCK_SH) == 0,
            "flock-ex" => libc::flock(fd, libc::LOCK_EX) == 0,
            "range" => {
                let mut lock: libc::flock = std::mem::zeroed();
                lock.l_type = libc::F_RDLCK as _;
                lock.l_whence = libc::SEEK_SET as _;
                lock.l_start = 1;
                lock.l_len = 0; // to the end, however far
                libc::fcntl(fd, libc::F_SETLK, &lock) == 0
            }
            other => panic!("unknown lock {other}"),
        }
    };
    assert!(ok, "{}: {}", args[1], std::io::Error::last_os_error());
    tell_parent("locked");
    while let Some(line) = common::hear_parent() {
        if line == "release" {
            break;
        }
    }
    drop(file);
    tell_parent("released");
    child_exit(0);
}

#[cfg(target_os = "linux")]
const LOCK_TEST: &str = "a_peer_holding_a_flock_blocks_neither_drop_nor_stale_cleanup";

#[test]
// Linux only: flock / fcntl locks on the object (no such locks on sections).
#[cfg(target_os = "linux")]
fn a_peer_holding_a_flock_blocks_neither_drop_nor_stale_cleanup() {
    if let Some((role, args)) = child_role() {
        if role == "creator" {
            let _seg = Segment::builder(&args[0]).size(64).create().unwrap();
            tell_parent("created");
            common::hear_parent(); // SIGKILLed holding the segment
            child_exit(0);
        }
        lock_holder(&args);
    }
    // A drop or cleanup that waited for the lock would hang here until the watchdog fires.
    let _w = watchdog(LOCK_TEST, Duration::from_secs(60));
    // A server's shutdown removes its channel while a read-only peer keeps a shared flock.
    let name = TestName::new("flock-server");
    let server = Server::builder(&name).create().unwrap();
    let handle = server.spawn(|_: &[u8], _: &mut [u8]| 0).unwrap();
    let path = shm_path(&format!("/shmlink.{}.chan", name.as_str()));
    let mut peer = spawn(LOCK_TEST, "locker", &[&path, "flock-sh"]);
    peer.expect("locked");
    handle.shutdown();
    name.assert_no_leftovers();
    peer.send("release");
    peer.expect("released");

    for how in ["flock-sh", "flock-ex"] {
        // The owner's drop removes the name while the peer keeps its lock.
        let name = TestName::new(how);
        let seg = Segment::builder(&name).size(64).create().unwrap();
        let path = shm_path(seg.os_name());
        let mut peer = spawn(LOCK_TEST, "locker", &[&path, how]);
        peer.expect("locked");
        drop(seg);
        name.assert_no_leftovers();
        peer.send("release");
        peer.expect("released");

        // Stale cleanup over a killed owner's object removes it while the peer keeps its lock.
        let name = TestName::new(how);
        let mut creator = spawn(LOCK_TEST, "creator", &[&name]);
        creator.expect("created");
        let path = shm_path(&format!("/shmlink.{}.seg", name.as_str()));
        let mut peer = spawn(LOCK_TEST, "locker", &[&path, how]);
        peer.expect("locked");
        creator.kill();
        let seg = Segment::builder(&name)
            .size(64)
            .create()
            .unwrap_or_else(|e| panic!("create over a stale object locked with {how}: {e}"));
        assert_ne!(inode(&path), 0);
        drop(seg);
        name.assert_no_leftovers();
        peer.send("release");
        peer.expect("released");
    }
}

#[test]
// Linux only: a hard link in /dev/shm (a Windows section has one name).
#[cfg(target_os = "linux")]
fn header_naming_another_service_is_squatted() {
    let ours = TestName::new("hdr-a");
    let theirs = TestName::new("hdr-b");
    let seg_b = Segment::builder(&theirs).size(64).create().unwrap();
    let target = shm_path(seg_b.os_name());
    let link = shm_path(&format!("/shmlink.{}.seg", ours.as_str()));
    // A same-user peer links service B's object under service A's name.
    std::fs::hard_link(&target, &link).unwrap();
    let why = &format!("header names service {:?}", theirs.as_str());
    let me = common::euid();
    assert_squatted(Segment::open(&ours), why, me);
    assert_squatted(Segment::builder(&ours).size(64).create(), why, me);
    assert_squatted(Segment::remove(&ours, true), why, me);
    assert_eq!(
        inode(&link),
        inode(&target),
        "the linked object was replaced"
    );
    assert_eq!(Segment::open(&theirs).unwrap().token(), seg_b.token());
}

#[cfg(target_os = "linux")]
const RANGE_TEST: &str = "a_peer_holding_the_cleanup_lock_makes_drop_give_up_not_wait";

#[test]
// Linux only: the cleanup lock is an OFD lock (Windows has nothing to remove).
#[cfg(target_os = "linux")]
fn a_peer_holding_the_cleanup_lock_makes_drop_give_up_not_wait() {
    if let Some((_, args)) = child_role() {
        lock_holder(&args);
    }
    let _w = watchdog(RANGE_TEST, Duration::from_secs(60));
    let name = TestName::new("range");
    let seg = Segment::builder(&name).size(64).create().unwrap();
    let path = shm_path(seg.os_name());
    let mut peer = spawn(RANGE_TEST, "locker", &[&path, "range"]);
    peer.expect("locked");
    // Drop gives up after a short bound and leaves the name, marked as having no owner.
    drop(seg);
    assert!(std::fs::metadata(&path).is_ok(), "the name should be left");
    // Stale cleanup gives up too, with an error that says why.
    match Segment::builder(&name).size(64).create() {
        Err(e @ Error::Os { .. }) => {
            let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
            assert!(chain.contains("cleanup lock"), "{chain}");
        }
        other => panic!("expected an error while the cleanup lock is held, got {other:?}"),
    }
    peer.send("release");
    peer.expect("released");
    // Left stale, not live: this process (its owner) still runs, and cleanup now succeeds.
    let seg = Segment::builder(&name).size(64).create().unwrap();
    drop(seg);
    name.assert_no_leftovers();
}

#[cfg(target_os = "linux")]
const SLOW_TEST: &str = "slow_creator_holding_its_token_is_not_judged_stale";

#[test]
// Linux only: the liveness token is an OFD lock (no token on Windows).
#[cfg(target_os = "linux")]
fn slow_creator_holding_its_token_is_not_judged_stale() {
    if let Some((_, args)) = child_role() {
        // A creator that has taken its liveness token (an open-file-description lock on the
        // object's first byte, see src/sys/mod.rs) and sized the object, and then takes its
        // time: it never writes a header while the parent watches.
        let c = std::ffi::CString::new(args[0].clone()).unwrap();
        // SAFETY: valid path; flags and mode are plain values.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                0o600,
            )
        };
        assert!(fd >= 0, "open: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is open; `lock` is a valid flock with l_pid 0, as F_OFD_SETLK needs.
        unsafe {
            let mut lock: libc::flock = std::mem::zeroed();
            lock.l_type = libc::F_WRLCK as _;
            lock.l_whence = libc::SEEK_SET as _;
            lock.l_len = 1;
            assert_eq!(libc::fcntl(fd, libc::F_OFD_SETLK, &lock), 0, "F_OFD_SETLK");
            assert_eq!(libc::ftruncate(fd, 4096), 0, "ftruncate");
        }
        tell_parent("sized");
        common::hear_parent(); // until killed
        child_exit(0);
    }
    let _w = watchdog(SLOW_TEST, Duration::from_secs(60));
    let name = TestName::new("slow");
    let path = shm_path(&format!("/shmlink.{}.seg", name.as_str()));
    let mut child = spawn(SLOW_TEST, "slow-creator", &[&path]);
    child.expect("sized");
    let ino = inode(&path);
    // Well past the half second after which a sized, all-zero object used to be judged
    // stale (and removed under its live creator), the verdict is still "live".
    let since = std::time::Instant::now();
    let mut tries = 0;
    while since.elapsed() < Duration::from_millis(1500) || tries < 3 {
        match Segment::builder(&name).size(64).create() {
            Err(Error::AlreadyRunning { pid: 0, .. }) => {}
            other => panic!("expected AlreadyRunning from a slow creator, got {other:?}"),
        }
        assert!(matches!(
            Segment::remove(&name, false),
            Err(Error::AlreadyRunning { .. })
        ));
        assert_eq!(inode(&path), ino, "the slow creator's object was replaced");
        tries += 1;
        // Let time pass: the age of the object is what this test is about.
        std::thread::sleep(Duration::from_millis(100));
    }
    // Once the creator is gone, its all-zero object is stale at once.
    child.kill();
    let seg = Segment::builder(&name).size(64).create().unwrap();
    assert_ne!(inode(&path), ino);
    drop(seg);
    name.assert_no_leftovers();
}

/// The longest service name (200 characters) works for every object kind: OS names stay
/// within the OS limits (Windows: kernel object names under `Local\`, MAX_PATH in all,
/// suffixed for the named mutexes and events; Linux: NAME_MAX in /dev/shm), unhashed, and
/// one character more is refused with a clear error.
#[test]
fn the_longest_name_works_for_every_object_kind() {
    let _w = watchdog("longest name", Duration::from_secs(60));
    let base = TestName::new("long");
    let name = format!("{}{}", base.as_str(), "x".repeat(200 - base.len()));
    assert_eq!(name.len(), 200);
    let seg = Segment::builder(&name).size(64).create().unwrap();
    // Unhashed, in the session-local namespace on Windows.
    assert_eq!(seg.os_name(), os_name(&name, "seg"));
    #[cfg(windows)]
    assert!(seg.os_name().starts_with("Local\\"));
    assert_eq!(
        RawObject::open(seg.os_name()).read(0, 8),
        RawObject::open(&os_name(&name, "seg")).read(0, 8)
    );
    let m = shmlink::Mutex::create(&name).unwrap();
    assert!(!m.lock().unwrap().owner_died());
    let pair = shmlink::EventPair::create(&name).unwrap();
    drop(pair);
    let server = shmlink::Server::builder(&name)
        .slots(1)
        .max_message(16)
        .create()
        .unwrap()
        .spawn(|req: &[u8], resp: &mut [u8]| {
            resp[..req.len()].copy_from_slice(req);
            req.len()
        })
        .unwrap();
    let mut c = shmlink::Client::connect(&name).unwrap();
    assert_eq!(c.call(b"long").unwrap(), b"long");
    drop(c);
    server.shutdown();
    let reader = shmlink::Reader::create(&name, shmlink::PoolConfig::default()).unwrap();
    let w = shmlink::Writer::connect(&name).unwrap();
    let mut b = w.acquire().unwrap();
    b.extend_from_slice(b"long").unwrap();
    w.send(b).unwrap();
    assert_eq!(
        &*reader.recv_timeout(Duration::from_secs(10)).unwrap(),
        b"long"
    );
    drop((w, reader, m, seg));
    let longer = format!("{name}x");
    assert!(matches!(
        Segment::builder(&longer).size(64).create(),
        Err(Error::InvalidName { .. })
    ));
    base.assert_no_leftovers();
}

/// Truncation is a same-user power (like SIGKILL) and out of scope; another user must not
/// have it. A process of another uid cannot open a server's or a segment's object for
/// writing, so it cannot `ftruncate` it, and the server keeps serving.
#[test]
// Unix only: another uid (setuid), file modes and /dev/shm paths.
#[cfg(target_os = "linux")]
fn another_user_cannot_open_our_objects_to_truncate_them() {
    if let Some((_, args)) = child_role() {
        common::become_nobody();
        let mut refused = 0;
        for path in &args {
            match std::fs::OpenOptions::new().write(true).open(path) {
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => refused += 1,
                Err(e) => panic!("{path}: {e}"),
                Ok(f) => {
                    let _ = f.set_len(0);
                }
            }
        }
        tell_parent(&format!("refused {refused}"));
        child_exit(0);
    }
    if !common::is_root() {
        eprintln!(
            "SKIPPED another_user_cannot_open_our_objects_to_truncate_them: needs root to \
             switch a child to another uid"
        );
        return;
    }
    let _w = watchdog("truncate_other_user", Duration::from_secs(60));
    let name = TestName::new("trunc");
    let handle = Server::builder(&name)
        .create()
        .unwrap()
        .spawn(|req: &[u8], resp: &mut [u8]| {
            resp[..req.len()].copy_from_slice(req);
            req.len()
        })
        .unwrap();
    let seg = Segment::builder(&name).size(4096).create().unwrap();
    let chan = shm_path(&format!("/shmlink.{}.chan", name.as_str()));
    let raw = shm_path(seg.os_name());
    let mut child = spawn(
        "another_user_cannot_open_our_objects_to_truncate_them",
        "truncater",
        &[&chan, &raw],
    );
    child.expect("refused 2");
    child.wait_ok();
    let mut client = Client::connect(&name).unwrap();
    assert_eq!(client.call(b"still whole").unwrap(), b"still whole");
    assert_eq!(std::fs::metadata(&raw).unwrap().len() as usize, 512 + 4096);
    drop(client);
    drop(seg);
    handle.shutdown();
    name.assert_no_leftovers();
}

/// The multi-user recipe: a server created with a wider mode serves another user's client
/// that accepts it with `Access::shared_by(server uid)`; without that, the client refuses it.
#[test]
// Unix only: another uid (setuid), file modes and /dev/shm paths.
#[cfg(target_os = "linux")]
fn a_client_of_another_user_is_served_when_it_accepts_the_servers_uid() {
    if let Some((_, args)) = child_role() {
        common::become_nobody();
        let owner: u32 = args[1].parse().unwrap();
        let plain = matches!(
            Client::connect(&args[0]),
            Err(CallError::Setup(Error::Squatted { .. }))
        );
        let mut c = Client::connect_with(&args[0], Access::shared_by(owner)).unwrap();
        let answer = c.call(b"from nobody").unwrap();
        // The building blocks follow the same recipe.
        assert!(Mutex::open(&args[0]).is_err());
        let lock = Mutex::open_with(&args[0], Access::shared_by(owner)).unwrap();
        drop(lock.lock().unwrap());
        let pair = EventPair::open_with(&args[0], Access::shared_by(owner)).unwrap();
        pair.exec().set();
        tell_parent(&format!("{plain} {}", String::from_utf8(answer).unwrap()));
        drop(c);
        child_exit(0);
    }
    if !common::is_root() {
        eprintln!(
            "SKIPPED a_client_of_another_user_is_served_when_it_accepts_the_servers_uid: \
             needs root to switch a child to another uid"
        );
        return;
    }
    let _w = watchdog("multi_user", Duration::from_secs(60));
    let name = TestName::new("multi-user");
    let handle = Server::builder(&name)
        .mode(0o666)
        .create()
        .unwrap()
        .spawn(|req: &[u8], resp: &mut [u8]| {
            resp[..req.len()].copy_from_slice(req);
            req.len()
        })
        .unwrap();
    let lock = Mutex::create_with_mode(&name, 0o666).unwrap();
    let pair = EventPair::create_with_mode(&name, 0o666).unwrap();
    let me = common::euid();
    // This user's own client refuses an object others may write unless it says so.
    assert!(matches!(
        Client::connect(&name),
        Err(CallError::Setup(Error::Squatted { .. }))
    ));
    let mut own = Client::connect_with(&name, Access::shared_by(me)).unwrap();
    assert_eq!(own.call(b"own").unwrap(), b"own");
    let mut child = spawn(
        "a_client_of_another_user_is_served_when_it_accepts_the_servers_uid",
        "guest",
        &[&name, &me.to_string()],
    );
    child.expect("true from nobody");
    child.wait_ok();
    assert!(
        pair.exec().wait_timeout(Duration::from_secs(5)),
        "the guest set the event"
    );
    assert!(matches!(
        lock.try_lock(),
        Ok(Some(shmlink::Locked::Acquired(_)))
    ));
    drop((lock, pair));
    drop(own);
    handle.shutdown();
    name.assert_no_leftovers();
}
