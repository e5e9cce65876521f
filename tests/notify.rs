//! Server-initiated notifications across real processes: order and volume, broadcast, a
//! client that does not keep up, and how a waiting client learns that its connection ended.
//! Runs on Linux and Windows (under Wine in CI).

mod common;

use std::time::{Duration, Instant};

use common::TestName;
use common::{child_exit, child_role, hear_parent, poll_until, spawn, tell_parent, watchdog};
use shmlink::{CallError, Client, ClientId, NotifyError, Server, ServerHandle};

/// The answer every test server gives: the request reversed.
fn reverse(req: &[u8], resp: &mut [u8]) -> usize {
    let n = req.len();
    resp[..n].copy_from_slice(req);
    resp[..n].reverse();
    n
}

/// The id of the connection the process `pid` holds, once the server has seen it.
fn id_of(handle: &ServerHandle, pid: u32) -> ClientId {
    let mut id = None;
    let seen = poll_until(common::STEP, || {
        id = handle.clients().iter().find(|c| c.pid == pid).map(|c| c.id);
        id.is_some()
    });
    assert!(seen, "the server never saw process {pid} connect");
    id.unwrap()
}

/// Sends `msg` to `id`, waiting while the client's queue is full (the client reads
/// meanwhile); returns how many times the queue was full.
fn notify_all_the_way(handle: &ServerHandle, id: ClientId, msg: &[u8]) -> u32 {
    let mut full = 0;
    let end = Instant::now() + common::STEP;
    loop {
        match handle.notify(id, msg) {
            Ok(()) => return full,
            Err(NotifyError::QueueFull { id: i, depth: 16 }) if i == id => {
                assert!(Instant::now() < end, "client {id} stopped reading");
                full += 1;
                std::thread::yield_now();
            }
            Err(e) => panic!("notify {id}: {e:?}"),
        }
    }
}

/// Client role: connect, say "ready", then receive `count` notifications (numbered from 0,
/// little-endian u32), making a call after every 100th; say "ok" if all came in order.
fn numbered_receiver(name: &str, count: u32) -> ! {
    let mut client = Client::connect_timeout(name, common::STEP).unwrap();
    tell_parent("ready");
    for i in 0..count {
        let got = client.recv_notification_timeout(common::STEP).unwrap();
        assert_eq!(got, i.to_le_bytes(), "notification {i} out of order");
        if i % 100 == 99 {
            assert_eq!(
                client.call(b"abc").unwrap(),
                b"cba",
                "a call between notifications"
            );
        }
    }
    assert_eq!(client.try_recv_notification().unwrap(), None);
    tell_parent("ok");
    child_exit(0)
}

#[test]
fn ten_thousand_notifications_reach_one_client_process_in_order_between_its_calls() {
    if let Some((_, args)) = child_role() {
        numbered_receiver(&args[0], args[1].parse().unwrap());
    }
    let _w = watchdog("notify_ten_thousand", Duration::from_secs(120));
    let name = TestName::new("note-many");
    let handle = Server::builder(&name)
        .slots(2)
        .max_message(64)
        .notifications(16, 64)
        .workers(1)
        .create()
        .unwrap()
        .spawn(reverse)
        .unwrap();
    let test = "ten_thousand_notifications_reach_one_client_process_in_order_between_its_calls";
    let mut kid = spawn(test, "receiver", &[&name, "10000"]);
    kid.expect("ready");
    let id = id_of(&handle, kid.pid());
    let started = Instant::now();
    let mut full = 0;
    for i in 0..10_000u32 {
        full += notify_all_the_way(&handle, id, &i.to_le_bytes());
    }
    kid.expect("ok");
    eprintln!(
        "10,000 notifications in {:?}; the queue was full {full} times",
        started.elapsed()
    );
    kid.wait_ok();
    handle.shutdown();
    name.assert_no_leftovers();
}

/// Client role: connect, say "ready"; "read N" -> receive N notifications and say them
/// (comma-separated) ; "drain" -> say what is queued, then "end"; EOF -> exit.
fn listener(name: &str) -> ! {
    let mut client = Client::connect_timeout(name, common::STEP).unwrap();
    tell_parent("ready");
    while let Some(line) = hear_parent() {
        let mut got = Vec::new();
        if let Some(n) = line.strip_prefix("read ") {
            for _ in 0..n.parse::<u32>().unwrap() {
                got.push(client.recv_notification_timeout(common::STEP).unwrap());
            }
        } else {
            while let Some(n) = client.try_recv_notification().unwrap() {
                got.push(n);
            }
        }
        let got: Vec<String> = got
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        tell_parent(&got.join(","));
    }
    child_exit(0)
}

#[test]
fn broadcast_reaches_eight_clients_and_one_that_never_reads_fills_only_its_own_queue() {
    if let Some((_, args)) = child_role() {
        listener(&args[0]);
    }
    let _w = watchdog("notify_broadcast", Duration::from_secs(120));
    let name = TestName::new("note-bcast");
    let handle = Server::builder(&name)
        .slots(9)
        .max_message(64)
        .notifications(16, 32)
        .create()
        .unwrap()
        .spawn(reverse)
        .unwrap();
    let test = "broadcast_reaches_eight_clients_and_one_that_never_reads_fills_only_its_own_queue";
    let mut kids: Vec<_> = (0..9).map(|_| spawn(test, "listener", &[&name])).collect();
    for k in &mut kids {
        k.expect("ready");
    }
    let ids: Vec<ClientId> = kids.iter().map(|k| id_of(&handle, k.pid())).collect();
    let deaf = ids[8];
    let rounds = 40;
    let mut deaf_full = 0;
    for k in &mut kids[..8] {
        k.send(&format!("read {rounds}"));
    }
    for r in 0..rounds {
        let msg = format!("m{r}");
        let sent = handle.broadcast(msg.as_bytes()).unwrap();
        assert_eq!(sent.sent.len() + sent.failed.len(), 9, "{sent:?}");
        for (id, e) in sent.failed {
            if id == deaf {
                assert_eq!(e, NotifyError::QueueFull { id, depth: 16 });
                deaf_full += 1;
            } else {
                // A reader that has not caught up yet: it does, so this one gets through.
                assert!(matches!(e, NotifyError::QueueFull { .. }), "{e:?}");
                notify_all_the_way(&handle, id, msg.as_bytes());
            }
        }
    }
    let want: Vec<String> = (0..rounds).map(|r| format!("m{r}")).collect();
    for k in &mut kids[..8] {
        assert_eq!(k.expect_line(), want.join(","));
    }
    // The deaf client's queue holds the first 16; the other 24 were refused as full.
    assert_eq!(deaf_full, rounds - 16);
    kids[8].send("drain");
    assert_eq!(kids[8].expect_line(), want[..16].join(","));
    // Once it has read them, it is sent to again.
    assert_eq!(handle.notify(deaf, b"late"), Ok(()));
    kids[8].send("drain");
    assert_eq!(kids[8].expect_line(), "late");
    drop(kids);
    handle.shutdown();
    name.assert_no_leftovers();
}

#[test]
fn a_waiting_client_learns_of_disconnect_and_shutdown_and_gets_what_was_queued_first() {
    let _w = watchdog("notify_endings", Duration::from_secs(60));
    let name = TestName::new("note-end");
    let handle = Server::builder(&name)
        .slots(2)
        .max_message(64)
        .create()
        .unwrap()
        .spawn(reverse)
        .unwrap();
    let waiter = |mut client: Client| {
        std::thread::spawn(move || {
            let r = client.recv_notification();
            (Instant::now(), r, client)
        })
    };
    let client = Client::connect(&name).unwrap();
    let me = std::process::id();
    let first = id_of(&handle, me);

    // Disconnected while waiting: told at once (the slot is taken back at the next scan).
    let waiting = waiter(client);
    assert!(handle.disconnect(first));
    let asked = Instant::now();
    let (at, r, mut client) = waiting.join().unwrap();
    assert!(matches!(r, Err(CallError::Disconnected)), "{r:?}");
    assert!(
        at.duration_since(asked) < Duration::from_secs(1),
        "{:?}",
        at - asked
    );
    assert_eq!(
        handle.notify(first, b"x"),
        Err(NotifyError::NotConnected { id: first })
    );

    // The next receive reconnects as a new connection, which the server can notify.
    let reconnected = std::thread::spawn(move || {
        let r = client.recv_notification_timeout(common::STEP);
        (r, client)
    });
    let second = {
        let mut id = None;
        assert!(poll_until(common::STEP, || {
            id = handle
                .clients()
                .first()
                .map(|c| c.id)
                .filter(|&i| i != first);
            id.is_some()
        }));
        id.unwrap()
    };
    handle.notify(second, b"hello again").unwrap();
    let (r, mut client) = reconnected.join().unwrap();
    assert_eq!(r.unwrap(), b"hello again");

    // Notifications queued before the server stops are still read; then the wait ends.
    handle.notify(second, b"one").unwrap();
    handle.notify(second, b"two").unwrap();
    assert_eq!(
        handle.notify_with(second, |buf| buf.len() + 1),
        Err(NotifyError::TooLarge {
            len: 1025,
            max: 1024
        })
    );
    handle.shutdown();
    assert_eq!(client.recv_notification().unwrap(), b"one");
    assert_eq!(client.recv_notification().unwrap(), b"two");
    let stopped = Instant::now();
    let r = client.recv_notification();
    assert!(matches!(r, Err(CallError::ServerGone)), "{r:?}");
    assert!(stopped.elapsed() < Duration::from_secs(1));
    drop(client);
    name.assert_no_leftovers();
}
