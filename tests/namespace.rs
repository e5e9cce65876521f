//! Participants in another PID namespace (a container sharing /dev/shm with the host): pids
//! mean nothing across the boundary, so liveness must come from the kernel. And a pool in a
//! mount namespace whose /dev/shm is a small tmpfs of its own (a container's), to fill it.
//! Needs root (`unshare(CLONE_NEWPID | CLONE_NEWNS)`); each test skips with a message
//! without it.
#![cfg(target_os = "linux")]

mod common;

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    child_exit, child_role, hear_parent, poll_until, spawn_with, tell_parent, watchdog, Child,
    TestName,
};
use shmlink::{CallError, Client, PoolConfig, PoolError, Reader, Server, Writer};

/// Makes `cmd` run its program as pid 1 of a new PID namespace with its own /proc, as
/// `unshare --pid --fork --mount-proc` does: the forked child unshares, forks again (a raw
/// clone: no atfork handlers in a child of a threaded process) and waits for the grandchild,
/// which mounts a fresh /proc and goes on to exec. /dev/shm stays the host's.
fn in_new_pid_namespace(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe system calls (no allocation, no locks).
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            let pid = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0);
            if pid < 0 {
                return Err(io::Error::last_os_error());
            }
            if pid > 0 {
                // The waiting parent: let go of every descriptor but stdio (the spawner's
                // exec-error pipe among them, so its spawn returns when the grandchild execs).
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                let mut status = 0;
                while libc::waitpid(pid as libc::pid_t, &mut status, 0) < 0 {}
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                };
                libc::_exit(code);
            }
            // Pid 1 of the new namespace: dies with the waiting parent.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            if !mounts_made_private()
                || libc::mount(
                    c"proc".as_ptr(),
                    c"/proc".as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Why PID namespaces cannot be used here, if they cannot.
fn cannot_unshare() -> Option<String> {
    if !common::is_root() {
        return Some("not root".into());
    }
    let mut probe = Command::new("/bin/sh");
    probe.args(["-c", "test $$ = 1"]);
    in_new_pid_namespace(&mut probe);
    match probe.status() {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!(
            "the probe did not run as pid 1 of a new namespace ({s})"
        )),
        Err(e) => Some(format!("unshare(CLONE_NEWPID | CLONE_NEWNS) failed: {e}")),
    }
}

/// Skips the test (returns) with a printed reason when namespaces cannot be used.
macro_rules! need_pid_namespaces {
    () => {
        if let Some(why) = cannot_unshare() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Runs `role` of `test` as pid 1 of a new PID namespace.
fn spawn_namespaced(test: &str, role: &str, args: &[&str]) -> Child {
    spawn_with(test, role, args, in_new_pid_namespace)
}

/// SIGKILLs the namespaced process itself (the child of the waiting parent `child`), so
/// that the time to notice its death is measured from its own death.
fn kill_namespaced(child: &mut Child) -> Instant {
    let parent = child.pid();
    let path = format!("/proc/{parent}/task/{parent}/children");
    let inner: Option<i32> = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok());
    let at = Instant::now();
    match inner {
        // SAFETY: plain kill(2) of our own grandchild.
        Some(pid) => assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0),
        // No children file: killing the waiting parent kills it through PDEATHSIG.
        None => child.kill(),
    }
    at
}

fn echo(req: &[u8], resp: &mut [u8]) -> usize {
    if req == b"block" {
        // Held until the process is killed.
        tell_parent("blocked");
        hear_parent();
    }
    resp[..req.len()].copy_from_slice(req);
    req.len()
}

#[test]
fn a_namespaced_server_is_alive_to_the_host_and_its_death_is_noticed() {
    let test = "a_namespaced_server_is_alive_to_the_host_and_its_death_is_noticed";
    if let Some((role, args)) = child_role() {
        assert_eq!(std::process::id(), 1, "not pid 1 of a new namespace");
        match role.as_str() {
            "server" => {
                let server = Server::builder(&args[0]).slots(2).create().unwrap();
                tell_parent("serving");
                server.serve(echo);
            }
            "client" => {
                let mut c = Client::connect(&args[0]).unwrap();
                assert_eq!(c.call(b"hi").unwrap(), b"hi");
                tell_parent("connected");
                hear_parent();
            }
            _ => unreachable!(),
        }
        child_exit(0);
    }
    need_pid_namespaces!();
    let _w = watchdog(test, Duration::from_secs(60));
    let name = TestName::new("ns-server");
    let mut server = spawn_namespaced(test, "server", &[&name]);
    server.expect("serving");

    // The host sees it alive: no second server, and a host client is served.
    match Server::builder(&name).create() {
        Err(CallError::AlreadyRunning { .. }) => {}
        other => panic!("a second server must be refused, got {other:?}"),
    }
    let mut client = Client::connect(&name).expect("host client connects");
    assert_eq!(client.call(b"hello").unwrap(), b"hello");
    let mut other = Client::connect(&name).expect("second host client connects");
    assert_eq!(other.call(b"x").unwrap(), b"x");
    drop(other);

    // A namespaced client's slot is not reaped while it lives: the last slot is its.
    let mut ns_client = spawn_namespaced(test, "client", &[&name]);
    ns_client.expect("connected");
    match Client::connect(&name) {
        Err(CallError::ServerBusy { .. }) => {}
        other => panic!("a live namespaced client's slot was taken: {other:?}"),
    }
    let killed = kill_namespaced(&mut ns_client);
    let mut third = None;
    assert!(
        poll_until(Duration::from_secs(10), || {
            third = Client::connect(&name).ok();
            third.is_some()
        }),
        "the dead namespaced client's slot was never reaped"
    );
    eprintln!(
        "slot of a killed namespaced client reaped after {:?}",
        killed.elapsed()
    );
    drop(third);

    // A call in flight when the namespaced server is killed fails with ServerGone.
    let waiting = std::thread::spawn(move || {
        let r = client.call_timeout(b"block", Duration::from_secs(20));
        (r, Instant::now())
    });
    server.expect("blocked");
    let killed = kill_namespaced(&mut server);
    let (r, at) = waiting.join().unwrap();
    match r {
        Err(CallError::ServerGone) => {}
        other => panic!("expected ServerGone, got {other:?}"),
    }
    eprintln!(
        "host client waiting on a namespaced server learnt it was killed after {:?}",
        at.saturating_duration_since(killed)
    );
    // And the name is free again for a host server.
    let host = Server::builder(&name)
        .create()
        .expect("the dead server's name is free");
    drop(host);
}

#[test]
fn a_namespaced_reader_and_writer_are_judged_alive_and_dead_correctly() {
    let test = "a_namespaced_reader_and_writer_are_judged_alive_and_dead_correctly";
    if let Some((role, args)) = child_role() {
        assert_eq!(std::process::id(), 1, "not pid 1 of a new namespace");
        match role.as_str() {
            "reader" => {
                let reader = Reader::create(&args[0], small()).unwrap();
                tell_parent("reading");
                let msg = reader.recv_timeout(common::STEP).unwrap();
                let text = String::from_utf8_lossy(&msg).into_owned();
                drop(msg); // back to the free list
                tell_parent(&text);
                hear_parent();
            }
            "writer" => {
                let writer = Writer::connect(&args[0]).unwrap();
                let mut buf = writer.acquire().unwrap();
                buf.extend_from_slice(b"from the namespace").unwrap();
                tell_parent("holding");
                assert_eq!(hear_parent().as_deref(), Some("send"));
                writer.send(buf).expect("the held buffer is still ours");
                let _held = writer.acquire().unwrap();
                tell_parent("sent");
                hear_parent();
            }
            _ => unreachable!(),
        }
        child_exit(0);
    }
    need_pid_namespaces!();
    let _w = watchdog(test, Duration::from_secs(60));

    // A namespaced Reader: alive to a host Writer, and its death is noticed while waiting.
    let name = TestName::new("ns-reader");
    let mut reader = spawn_namespaced(test, "reader", &[&name]);
    reader.expect("reading");
    match Reader::create(&name, small()) {
        Err(PoolError::AlreadyRunning { .. }) => {}
        other => panic!("a second Reader must be refused, got {other:?}"),
    }
    let writer = Writer::connect(&name).unwrap();
    assert!(writer.reader_alive());
    let mut buf = writer.acquire().unwrap();
    buf.extend_from_slice(b"to the namespace").unwrap();
    writer.send(buf).unwrap();
    reader.expect("to the namespace");
    // Hold every buffer, then wait for one while the Reader is killed.
    let held: Vec<_> = (0..small().max_buffers)
        .map(|_| writer.acquire().unwrap())
        .collect();
    let waiting = std::thread::spawn(move || {
        let r = writer.acquire_timeout(Duration::from_secs(20));
        (r.map(drop), Instant::now())
    });
    // Whether the Writer sleeps by the time the Reader dies or not, it must say NoReader.
    let killed = kill_namespaced(&mut reader);
    let (r, at) = waiting.join().unwrap();
    assert!(
        matches!(r, Err(PoolError::NoReader)),
        "expected NoReader, got {r:?}"
    );
    eprintln!(
        "host Writer waiting on a namespaced Reader learnt it was killed after {:?}",
        at.saturating_duration_since(killed)
    );
    drop(held);

    // A namespaced Writer: its held buffer is not taken back while it lives, and is once it
    // is killed.
    let name = TestName::new("ns-writer");
    let reader = Reader::create(&name, small()).unwrap();
    let mut writer = spawn_namespaced(test, "writer", &[&name]);
    writer.expect("holding");
    // The Reader checks the holders every 100 ms: a few rounds must leave the buffer alone.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(400) {
        let s = reader.stats().unwrap();
        assert_eq!(
            (s.allocated, s.reclaimed),
            (1, 0),
            "a live namespaced Writer's buffer was taken back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.send("send");
    writer.expect("sent");
    let msg = reader.recv_timeout(common::STEP).unwrap();
    assert_eq!(&*msg, b"from the namespace");
    drop(msg);
    let killed = kill_namespaced(&mut writer);
    assert!(
        poll_until(Duration::from_secs(10), || reader
            .stats()
            .is_ok_and(|s| s.reclaimed == 1 && s.allocated == 0)),
        "a killed namespaced Writer's buffer was never taken back"
    );
    eprintln!(
        "buffer of a killed namespaced Writer taken back after {:?}",
        killed.elapsed()
    );
}

fn small() -> PoolConfig {
    PoolConfig {
        initial_buffer_size: 4096,
        max_buffer_size: 4096,
        start_buffers: 4,
        max_buffers: 4,
        ..PoolConfig::default()
    }
}

/// In a new mount namespace: stops mounts made here from reaching the parent's namespace.
/// Async-signal-safe (for `pre_exec`).
fn mounts_made_private() -> bool {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: mount(2) with valid NUL-terminated strings (or null where allowed).
    unsafe {
        libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) == 0
    }
}

/// Gives `cmd` a mount namespace of its own with a 2 MiB tmpfs on /dev/shm.
fn with_tiny_dev_shm(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe system calls (no allocation, no locks).
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || !mounts_made_private()
                || libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/dev/shm".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    c"size=2m".as_ptr().cast(),
                ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn a_writer_out_of_buffers_in_a_full_dev_shm_is_told_no_space() {
    let test = "a_writer_out_of_buffers_in_a_full_dev_shm_is_told_no_space";
    if let Some((_, args)) = child_role() {
        let config = PoolConfig {
            initial_buffer_size: 256 * 1024,
            max_buffer_size: 256 * 1024,
            start_buffers: 2,
            max_buffers: 64,
            min_buffers: Some(2),
            resize_increment: Some(1),
            resize_threshold: 0,
            sweep_timeout: Duration::from_secs(30),
        };
        let reader = Reader::create(&args[0], config).unwrap();
        let writer = Writer::connect(&args[0]).unwrap();
        let mut held = Vec::new();
        let outcome = loop {
            match writer.acquire_timeout(Duration::from_millis(500)) {
                Ok(b) if held.len() < 64 => held.push(b),
                other => break other.map(|_| ()),
            }
        };
        tell_parent(&format!("{} held, then {outcome:?}", held.len()));
        // Room again: the next buffer comes (a held one is sent and received).
        let mut b = held.pop().unwrap();
        b.extend_from_slice(b"x").unwrap();
        writer.send(b).unwrap();
        drop(reader.recv_timeout(Duration::from_secs(5)).unwrap());
        writer.acquire_timeout(Duration::from_secs(5)).unwrap();
        tell_parent("acquired again");
        drop(held);
        drop(writer);
        drop(reader);
        child_exit(0);
    }
    need_pid_namespaces!();
    let _w = watchdog(test, Duration::from_secs(60));
    let name = TestName::new("ns-nospace");
    let mut kid = spawn_with(test, "pool", &[&name], with_tiny_dev_shm);
    let line = kid.expect_line();
    assert!(line.ends_with("then Err(NoSpace)"), "{line}");
    let held: usize = line.split(' ').next().unwrap().parse().unwrap();
    assert!((2..8).contains(&held), "{line}");
    kid.expect("acquired again");
    kid.wait_ok();
}
