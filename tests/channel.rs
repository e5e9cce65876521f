//! The request channel across real processes: many clients, SIGKILLed clients and servers,
//! timeouts, elections, hostile clients, more clients than slots, graceful shutdown.
//! Runs on Linux and Windows (under Wine in CI).

mod common;

use std::sync::mpsc;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use common::{
    child_exit, child_role, hear_parent, poll_until, spawn, tell_parent, watchdog, TestName,
};
use shmlink::{
    server_or_client, AppError, CallError, CallInfo, Client, ClientId, ConnectionEvent,
    DisconnectReason, Role, Server, ShutdownHandle, WaitStrategy,
};

/// The answer every test server gives: the request reversed.
fn reverse(req: &[u8], resp: &mut [u8]) -> usize {
    for (o, i) in resp.iter_mut().zip(req.iter().rev()) {
        *o = *i;
    }
    req.len()
}

fn reversed(req: &[u8]) -> Vec<u8> {
    req.iter().rev().copied().collect()
}

/// A request unique to (client, call), 8..=263 bytes long.
fn request(client: u32, i: u32) -> Vec<u8> {
    let mut x = (client.wrapping_mul(0x9E37_79B9) ^ i.wrapping_mul(0x85EB_CA6B)) | 1;
    let len = 8 + (x % 256) as usize;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&client.to_le_bytes());
    v.extend_from_slice(&i.to_le_bytes());
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
    }
    v
}

/// Client role: connect (waiting with `strategy`), say "ready", wait for "go", make `calls`
/// checked calls (each waiting at most 5 s: a lost wake-up fails, never hangs), say "ok".
fn checked_caller(name: &str, id: u32, calls: u32, strategy: WaitStrategy) -> ! {
    let mut c = Client::connect_timeout(name, Duration::from_secs(10))
        .unwrap()
        .wait_strategy(strategy);
    tell_parent("ready");
    hear_parent();
    for i in 0..calls {
        let req = request(id, i);
        let resp = c
            .call_timeout(&req, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("client {id} call {i}: {e}"));
        assert_eq!(
            resp,
            reversed(&req),
            "client {id} call {i} got another call's answer"
        );
    }
    tell_parent("ok");
    child_exit(0)
}

#[test]
fn sixteen_client_processes_each_get_their_own_answers() {
    if let Some((role, args)) = child_role() {
        assert_eq!(role, "client");
        checked_caller(
            &args[0],
            args[1].parse().unwrap(),
            args[2].parse().unwrap(),
            WaitStrategy::Adaptive,
        );
    }
    let _w = watchdog("sixteen_clients", Duration::from_secs(240));
    let name = TestName::new("chan-16");
    let handle = Server::builder(&name)
        .slots(16)
        .max_message(512)
        .workers(2)
        .create()
        .unwrap()
        .spawn(reverse)
        .unwrap();
    const CLIENTS: u32 = 16;
    const CALLS: u32 = 10_000;
    let mut kids: Vec<_> = (0..CLIENTS)
        .map(|id| {
            spawn(
                "sixteen_client_processes_each_get_their_own_answers",
                "client",
                &[&name, &id.to_string(), &CALLS.to_string()],
            )
        })
        .collect();
    for k in &mut kids {
        k.expect("ready");
    }
    let start = Instant::now();
    for k in &mut kids {
        k.send("go");
    }
    for k in &mut kids {
        k.expect_line_within(Duration::from_secs(200));
        k.wait_ok();
    }
    let took = start.elapsed();
    let total = f64::from(CLIENTS * CALLS);
    println!(
        "{CLIENTS} clients x {CALLS} calls: {took:?}, {:.0} calls/s",
        total / took.as_secs_f64()
    );
    handle.shutdown();
    assert!(
        name.leftovers().is_empty(),
        "left in /dev/shm: {:?}",
        name.leftovers()
    );
}

/// A handler that blocks on requests starting with `hold` until the test releases it, and
/// tells the test when it got there.
struct Gate {
    entered: StdMutex<mpsc::Sender<Vec<u8>>>,
    release: StdMutex<mpsc::Receiver<()>>,
}

impl Gate {
    fn new() -> (Gate, mpsc::Receiver<Vec<u8>>, mpsc::Sender<()>) {
        let (etx, erx) = mpsc::channel();
        let (rtx, rrx) = mpsc::channel();
        (
            Gate {
                entered: StdMutex::new(etx),
                release: StdMutex::new(rrx),
            },
            erx,
            rtx,
        )
    }

    fn handle(&self, req: &[u8], resp: &mut [u8]) -> usize {
        if req.starts_with(b"hold") {
            self.entered.lock().unwrap().send(req.to_vec()).unwrap();
            self.release
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(60))
                .expect("test released the handler");
        }
        reverse(req, resp)
    }
}

fn child_calls(name: &str) -> ! {
    // Role "caller": connect, then per parent line: "call" -> 200 checked calls, "hold" ->
    // one call the server holds, "quit" -> exit.
    let mut c = Client::connect_timeout(name, Duration::from_secs(10)).unwrap();
    tell_parent("ready");
    let id = std::process::id();
    let mut n = 0;
    while let Some(line) = hear_parent() {
        match line.as_str() {
            "call" => {
                for _ in 0..200 {
                    let req = request(id, n);
                    n += 1;
                    assert_eq!(c.call(&req).unwrap(), reversed(&req));
                }
                tell_parent("ok");
            }
            "hold" => {
                tell_parent("holding");
                let r = c.call(b"hold");
                tell_parent(&format!("{r:?}"));
            }
            _ => break,
        }
    }
    drop(c);
    child_exit(0)
}

#[test]
fn client_killed_mid_call_its_slot_is_reclaimed_and_others_never_notice() {
    if let Some((_, args)) = child_role() {
        child_calls(&args[0]);
    }
    let _w = watchdog("client_killed_mid_call", Duration::from_secs(60));
    let name = TestName::new("chan-kill-client");
    let (gate, entered, release) = Gate::new();
    let handle = Server::builder(&name)
        .slots(2)
        .max_message(512)
        .workers(2)
        .create()
        .unwrap()
        .spawn(move |q: &[u8], r: &mut [u8]| gate.handle(q, r))
        .unwrap();
    let test = "client_killed_mid_call_its_slot_is_reclaimed_and_others_never_notice";
    let mut steady = spawn(test, "caller", &[&name]);
    steady.expect("ready");
    let mut victim = spawn(test, "caller", &[&name]);
    victim.expect("ready");
    // Both slots taken.
    assert!(matches!(
        Client::connect(&name),
        Err(CallError::ServerBusy { .. })
    ));
    victim.send("hold");
    victim.expect("holding");
    entered
        .recv_timeout(Duration::from_secs(30))
        .expect("victim's call reached the handler");
    steady.send("call");
    steady.expect("ok");
    victim.kill(); // SIGKILL, in the middle of its call
    release.send(()).unwrap(); // the handler answers a dead client
    steady.send("call");
    steady.expect("ok");
    // The dead client's slot is reaped by the next client to connect.
    let mut newcomer = spawn(test, "caller", &[&name]);
    newcomer.expect("ready");
    newcomer.send("call");
    newcomer.expect("ok");
    steady.send("call");
    steady.expect("ok");
    for k in [&mut steady, &mut newcomer] {
        k.send("quit");
        k.wait_ok();
    }
    handle.shutdown();
    assert!(name.leftovers().is_empty());
}

#[test]
fn server_killed_in_handler_clients_get_server_gone_then_reconnect() {
    if let Some((role, args)) = child_role() {
        let name = &args[0];
        match role.as_str() {
            "server" => {
                let handle = Server::builder(name)
                    .slots(4)
                    .max_message(512)
                    .create()
                    .unwrap()
                    .spawn(|req: &[u8], resp: &mut [u8]| {
                        if req == b"hang" {
                            tell_parent("in handler");
                            loop {
                                std::thread::park();
                            }
                        }
                        reverse(req, resp)
                    })
                    .unwrap();
                tell_parent("serving");
                hear_parent();
                handle.shutdown();
                child_exit(0)
            }
            _ => {
                // Client: per line, make one call ("hang" or "ping") and report the outcome
                // and how long the wait after the parent's "killed" notice took.
                let mut c = Client::connect_timeout(name, Duration::from_secs(10)).unwrap();
                tell_parent("ready");
                while let Some(line) = hear_parent() {
                    if line == "quit" {
                        break;
                    }
                    tell_parent("calling");
                    let r = c.call(line.as_bytes());
                    tell_parent(&match r {
                        Ok(v) => format!("ok {}", String::from_utf8_lossy(&v)),
                        Err(CallError::ServerGone) => "gone".to_owned(),
                        Err(e) => format!("error {e}"),
                    });
                }
                child_exit(0)
            }
        }
    }
    let _w = watchdog("server_killed_in_handler", Duration::from_secs(60));
    let name = TestName::new("chan-kill-server");
    let test = "server_killed_in_handler_clients_get_server_gone_then_reconnect";
    let mut server = spawn(test, "server", &[&name]);
    server.expect("serving");
    let mut a = spawn(test, "client", &[&name]);
    let mut b = spawn(test, "client", &[&name]);
    a.expect("ready");
    b.expect("ready");
    a.send("hang");
    a.expect("calling");
    server.expect("in handler");
    b.send("ping"); // queued behind the hung call (one worker)
    b.expect("calling");
    let killed = Instant::now();
    server.kill();
    for c in [&mut a, &mut b] {
        assert_eq!(c.expect_line(), "gone");
    }
    let took = killed.elapsed();
    println!(
        "ServerGone reached both clients {took:?} after SIGKILL (target: 100 ms plus scheduling)"
    );
    assert!(took < Duration::from_secs(1), "ServerGone took {took:?}");
    // A new server (it removes the stale segment); the clients' next calls reconnect.
    let mut server2 = spawn(test, "server", &[&name]);
    server2.expect("serving");
    for c in [&mut a, &mut b] {
        c.send("again");
        c.expect("calling");
        assert_eq!(c.expect_line(), "ok niaga");
        c.send("quit");
        c.wait_ok();
    }
    server2.send("quit");
    server2.wait_ok();
    assert!(name.leftovers().is_empty(), "left: {:?}", name.leftovers());
}

#[test]
fn timed_out_call_then_next_call_gets_its_own_answer() {
    if let Some((_, args)) = child_role() {
        let mut c = Client::connect_timeout(&args[0], Duration::from_secs(10)).unwrap();
        for round in 0..2 {
            let r = c.call_timeout(
                format!("hold-{round}").as_bytes(),
                Duration::from_millis(50),
            );
            assert!(matches!(r, Err(CallError::Timeout)), "round {round}: {r:?}");
            tell_parent("timed out");
            // Round 0: call at once (the late answer comes while this call waits).
            // Round 1: call after the late answer was written.
            if round == 1 {
                hear_parent();
            }
            let req = format!("next-{round}");
            let resp = c.call(req.as_bytes()).unwrap();
            assert_eq!(
                resp,
                reversed(req.as_bytes()),
                "round {round}: got a late answer"
            );
            tell_parent("own answer");
        }
        child_exit(0)
    }
    let _w = watchdog("timed_out_call", Duration::from_secs(60));
    let name = TestName::new("chan-timeout");
    let (gate, entered, release) = Gate::new();
    let (done_tx, done_rx) = mpsc::channel();
    let handle = Server::builder(&name)
        .slots(2)
        .max_message(512)
        .create()
        .unwrap()
        .spawn(move |q: &[u8], r: &mut [u8]| {
            let n = gate.handle(q, r);
            if q.starts_with(b"hold") {
                done_tx.send(()).unwrap();
            }
            n
        })
        .unwrap();
    let mut c = spawn(
        "timed_out_call_then_next_call_gets_its_own_answer",
        "client",
        &[&name],
    );
    // Round 0.
    entered.recv_timeout(Duration::from_secs(30)).unwrap();
    c.expect("timed out");
    release.send(()).unwrap();
    c.expect("own answer");
    done_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    // Round 1.
    entered.recv_timeout(Duration::from_secs(30)).unwrap();
    c.expect("timed out");
    release.send(()).unwrap();
    done_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    c.send("go");
    c.expect("own answer");
    c.wait_ok();
    handle.shutdown();
}

#[test]
fn eight_processes_racing_server_or_client_elect_exactly_one_server() {
    if let Some((_, args)) = child_role() {
        let name = &args[0];
        hear_parent(); // "go": all at once
        match server_or_client(name).unwrap() {
            Role::Server(server) => {
                let handle = server.spawn(reverse).unwrap();
                tell_parent("server");
                hear_parent();
                handle.shutdown();
            }
            Role::Client(mut c) => {
                assert_eq!(c.call(b"abc").unwrap(), b"cba");
                tell_parent("client");
                hear_parent();
            }
        }
        child_exit(0)
    }
    let _w = watchdog("election", Duration::from_secs(60));
    let name = TestName::new("chan-elect");
    let mut kids: Vec<_> = (0..8)
        .map(|_| {
            spawn(
                "eight_processes_racing_server_or_client_elect_exactly_one_server",
                "elect",
                &[&name],
            )
        })
        .collect();
    for k in &mut kids {
        k.send("go");
    }
    let roles: Vec<String> = kids.iter_mut().map(|k| k.expect_line()).collect();
    assert_eq!(
        roles.iter().filter(|r| *r == "server").count(),
        1,
        "roles: {roles:?}"
    );
    assert_eq!(
        roles.iter().filter(|r| *r == "client").count(),
        7,
        "roles: {roles:?}"
    );
    // Clients first, then the server.
    let mut order: Vec<usize> = (0..8).collect();
    order.sort_by_key(|&i| roles[i] == "server");
    for i in order {
        kids[i].send("quit");
        kids[i].wait_ok();
    }
    assert!(name.leftovers().is_empty());
}

/// Offsets inside the channel segment file, mirroring `src/channel/layout.rs`, `slot.rs` and
/// `ring.rs` (unit tests there pin them): the segment header, then the data region.
mod raw {
    pub(crate) const DATA: usize = crate::common::HEADER_SIZE;
    pub(crate) const RING: usize = DATA + 256;
    pub(crate) const RING_CELLS: usize = RING + 128;
    /// Slot header fields (the state word: state in the low 8 bits, generation above).
    pub(crate) const STATE: usize = 0;
    pub(crate) const REQ_LEN: usize = 8;
    pub(crate) const STATUS: usize = 20;
    pub(crate) const OWNER_PID: usize = 24;
}

/// The mapped channel segment of `name`, read and written with raw volatile accesses (as a
/// hostile process would).
struct RawChannel {
    obj: common::RawObject,
    len: usize,
}

impl RawChannel {
    fn open(name: &str) -> RawChannel {
        let obj = common::RawObject::open(&common::os_name(name, "chan"));
        let len = obj.len();
        RawChannel { obj, len }
    }

    fn read(&self, at: usize) -> u32 {
        self.obj.read_u32(at)
    }

    fn write(&self, at: usize, v: u32) {
        self.obj.write_u32(at, v)
    }

    /// Offset of the slot header whose owner is this process (IDLE).
    fn my_slot(&self) -> usize {
        let me = std::process::id();
        (raw::RING_CELLS..self.len - 64)
            .step_by(64)
            .find(|&at| {
                self.read(at + raw::OWNER_PID) == me && self.read(at + raw::STATE) & 0xFF == 1
            })
            .expect("own slot")
    }
}

#[test]
fn hostile_client_scribbling_on_its_slot_and_the_ring_cannot_break_the_server() {
    if let Some((role, args)) = child_role() {
        let name = &args[0];
        if role == "caller" {
            checked_caller(name, args[1].parse().unwrap(), 3000, WaitStrategy::Adaptive);
        }
        // The hostile client.
        let mut c = Client::connect_timeout(name, Duration::from_secs(10)).unwrap();
        assert_eq!(c.call(b"honest").unwrap(), b"tsenoh");
        let raw = RawChannel::open(name);
        let slot = raw.my_slot();
        // 1. Garbage in the ring: positions, sequence numbers, out-of-range and foreign slot
        //    numbers.
        let mut x: u32 = 0x1234_5678;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let cell = raw::RING_CELLS + 8 * (x as usize % 8);
            match x % 5 {
                0 => raw.write(raw::RING, x),
                1 => raw.write(raw::RING + 64, x >> 3),
                2 => raw.write(cell, x.rotate_left(9)),
                3 => raw.write(cell + 4, x),
                _ => raw.write(cell + 4, x % 8),
            }
        }
        tell_parent("ring scribbled");
        // 2. A request whose length is far beyond max_message, submitted by hand.
        raw.write(slot + raw::REQ_LEN, u32::MAX);
        raw.write(slot + raw::STATE, 2); // REQUEST_READY
        assert!(
            poll_until(Duration::from_secs(10), || raw.read(slot + raw::STATE) == 4),
            "server never answered the forged request"
        );
        assert_eq!(raw.read(slot + raw::STATUS), 2, "refused as a bad length");
        tell_parent("bad length refused");
        // 3. The next honest call works (the forged answer is discarded).
        assert_eq!(c.call(b"again").unwrap(), b"niaga");
        // 4. A garbage state word: that call fails, or (if the server's housekeeping took the
        // garbled slot back first) reconnects and is answered; either way the next one works.
        raw.write(slot + raw::STATE, 0xDEAD_BEEF);
        let r = c.call(b"x");
        assert!(
            matches!(&r, Err(CallError::Protocol { .. })) || matches!(&r, Ok(v) if v == b"x"),
            "{r:?}"
        );
        tell_parent("garbage state: call failed");
        assert_eq!(c.call(b"after").unwrap(), b"retfa");
        tell_parent("ok");
        child_exit(0)
    }
    let _w = watchdog("hostile_client", Duration::from_secs(120));
    let name = TestName::new("chan-hostile");
    let handle = Server::builder(&name)
        .slots(8)
        .max_message(512)
        .workers(2)
        .create()
        .unwrap()
        .spawn(reverse)
        .unwrap();
    let test = "hostile_client_scribbling_on_its_slot_and_the_ring_cannot_break_the_server";
    let mut honest: Vec<_> = (0..2)
        .map(|i| spawn(test, "caller", &[&name, &i.to_string()]))
        .collect();
    for h in &mut honest {
        h.expect("ready");
        h.send("go");
    }
    let mut hostile = spawn(test, "hostile", &[&name]);
    hostile.expect("ring scribbled");
    hostile.expect("bad length refused");
    hostile.expect("garbage state: call failed");
    hostile.expect("ok");
    hostile.wait_ok();
    for h in &mut honest {
        h.expect_line_within(Duration::from_secs(100));
        h.wait_ok();
    }
    // The server is still up and serving.
    let mut c = Client::connect(&name).unwrap();
    assert_eq!(c.call(b"still up").unwrap(), b"pu llits");
    drop(c);
    handle.shutdown();
}

#[test]
fn more_clients_than_slots_busy_or_wait_for_a_free_slot() {
    if let Some((role, args)) = child_role() {
        let name = &args[0];
        if role == "caller" {
            child_calls(name);
        }
        // The extra client.
        match Client::connect(name) {
            Err(CallError::ServerBusy { slots: 2, .. }) => tell_parent("busy"),
            r => panic!("expected ServerBusy, got {r:?}"),
        }
        let mut c = Client::connect_timeout(name, Duration::from_secs(30)).unwrap();
        assert_eq!(c.call(b"in").unwrap(), b"ni");
        tell_parent("connected");
        drop(c);
        child_exit(0)
    }
    let _w = watchdog("more_clients_than_slots", Duration::from_secs(60));
    let name = TestName::new("chan-busy");
    let handle = Server::builder(&name)
        .slots(2)
        .max_message(512)
        .create()
        .unwrap()
        .spawn(reverse)
        .unwrap();
    let test = "more_clients_than_slots_busy_or_wait_for_a_free_slot";
    let mut holders: Vec<_> = (0..2).map(|_| spawn(test, "caller", &[&name])).collect();
    for h in &mut holders {
        h.expect("ready");
    }
    let mut extra = spawn(test, "extra", &[&name]);
    extra.expect("busy");
    holders[0].send("quit"); // frees a slot: the waiting connect gets it
    holders[0].wait_ok();
    extra.expect("connected");
    extra.wait_ok();
    holders[1].send("quit");
    holders[1].wait_ok();
    handle.shutdown();
}

#[test]
fn graceful_shutdown_answers_in_flight_calls_and_refuses_new_ones() {
    if let Some((_, args)) = child_role() {
        child_calls(&args[0]);
    }
    let _w = watchdog("graceful_shutdown", Duration::from_secs(60));
    let name = TestName::new("chan-shutdown");
    let (gate, entered, release) = Gate::new();
    let handle = Server::builder(&name)
        .slots(4)
        .max_message(512)
        .create()
        .unwrap()
        .spawn(move |q: &[u8], r: &mut [u8]| gate.handle(q, r))
        .unwrap();
    let test = "graceful_shutdown_answers_in_flight_calls_and_refuses_new_ones";
    let mut busy = spawn(test, "caller", &[&name]);
    busy.expect("ready");
    let mut late = Client::connect(&name).unwrap();
    busy.send("hold");
    busy.expect("holding");
    entered.recv_timeout(Duration::from_secs(30)).unwrap();
    let stopper = handle.shutdown_handle();
    let joiner = std::thread::spawn(move || handle.shutdown());
    stopper.shutdown(); // make sure the flag is up before the next call
    assert!(matches!(late.call(b"new"), Err(CallError::ShuttingDown)));
    release.send(()).unwrap();
    assert_eq!(busy.expect_line(), "Ok([100, 108, 111, 104])"); // "hold" reversed, answered
    joiner.join().unwrap();
    busy.send("quit");
    busy.wait_ok();
    drop(late);
    assert!(name.leftovers().is_empty(), "left: {:?}", name.leftovers());
}

/// Server role for the shutdown test: serves one call, shuts down the way `how` says, and
/// exits the process the moment the shutdown returns (no destructor of ours runs after).
fn shut_down_and_exit(name: &str, how: &str) -> ! {
    // Workers that sleep in the kernel at once: the stopping thread's wake-up can then hand
    // its CPU to the worker, which ends the server while the stopping thread still runs.
    let builder = Server::builder(name)
        .slots(2)
        .max_message(256)
        .wait_strategy(WaitStrategy::Block);
    // A client in a helper thread: its call proves the server serves; then it stops the
    // server through a ShutdownHandle, as a signal handler's helper thread would.
    let call_then_stop = |stop: ShutdownHandle| {
        let name = name.to_owned();
        std::thread::spawn(move || {
            let mut c = Client::connect_timeout(&name, Duration::from_secs(10)).unwrap();
            assert_eq!(c.call(b"ping").unwrap(), b"gnip");
            drop(c);
            stop.shutdown();
        })
    };
    match how {
        // `serve` on this thread, stopped from another; exit as soon as it returns.
        "serve" => {
            let server = builder.create().unwrap();
            let _helper = call_then_stop(server.shutdown_handle());
            server.serve(reverse);
        }
        "serve-free" => {
            let server = builder.workers(2).create().unwrap();
            let _helper = call_then_stop(server.shutdown_handle());
            server.serve(reverse);
        }
        // `spawn`, stopped with `ServerHandle::shutdown` or by dropping the handle.
        "spawn" | "spawn-drop" => {
            let handle = builder.create().unwrap().spawn(reverse).unwrap();
            let mut c = Client::connect(name).unwrap();
            assert_eq!(c.call(b"ping").unwrap(), b"gnip");
            if how == "spawn" {
                handle.shutdown();
            } else {
                drop(handle);
            }
        }
        // Never served: dropped while another thread asks it to stop.
        "unserved" => {
            let server = builder.create().unwrap();
            let stop = server.shutdown_handle();
            let _helper = std::thread::spawn(move || stop.shutdown());
            drop(server);
        }
        _ => unreachable!("{how}"),
    }
    child_exit(0)
}

#[test]
fn graceful_shutdown_in_a_process_that_exits_at_once_leaves_nothing_behind() {
    const TEST: &str = "graceful_shutdown_in_a_process_that_exits_at_once_leaves_nothing_behind";
    if let Some((_, args)) = child_role() {
        shut_down_and_exit(&args[0], &args[1]);
    }
    let _w = watchdog(TEST, Duration::from_secs(120));
    let start = Instant::now();
    let hows = ["serve", "serve-free", "spawn", "spawn-drop", "unserved"];
    let mut left = Vec::new();
    for round in 0..50 {
        let how = hows[round % hows.len()];
        let name = TestName::new("chan-exit");
        let mut child = spawn(TEST, "server", &[&name, how]);
        child.wait_ok();
        if !name.leftovers().is_empty() {
            left.push(format!("round {round} ({how}): {:?}", name.leftovers()));
        }
    }
    eprintln!("50 shutdowns in {:?}", start.elapsed());
    assert!(
        left.is_empty(),
        "{} of 50 left objects: {left:#?}",
        left.len()
    );
}

#[test]
fn too_large_requests_and_panicking_handlers_fail_only_that_call() {
    let _w = watchdog("too_large_and_panic", Duration::from_secs(60));
    let name = TestName::new("chan-errors");
    let handle = Server::builder(&name)
        .slots(2)
        .max_message(100)
        .create()
        .unwrap()
        .spawn(|req: &[u8], resp: &mut [u8]| {
            assert!(
                req != b"panic",
                "handler panics on request (expected by the test)"
            );
            if req == b"overlong" {
                return resp.len() + 1; // a handler bug: more than the buffer
            }
            reverse(req, resp)
        })
        .unwrap();
    let mut c = Client::connect(&name).unwrap();
    assert_eq!(c.max_message(), Some(100));
    assert!(matches!(
        c.call(&[0u8; 101]),
        Err(CallError::TooLarge { len: 101, max: 100 })
    ));
    assert!(matches!(
        c.call_with(|buf| buf.len() + 1, |_| ()),
        Err(CallError::TooLarge { .. })
    ));
    assert!(matches!(c.call(b"panic"), Err(CallError::HandlerPanicked)));
    assert!(matches!(
        c.call(b"overlong"),
        Err(CallError::BadResponse { len: 101, max: 100 })
    ));
    // Zero-copy form; the connection survived the failures.
    let req = [7u8; 100];
    let sum: u32 = c
        .call_with(
            |buf| {
                buf.copy_from_slice(&req);
                100
            },
            |resp| resp.iter().map(|&b| u32::from(b)).sum(),
        )
        .unwrap();
    assert_eq!(sum, 700);
    assert!(matches!(
        Server::builder(&name).create(),
        Err(CallError::AlreadyRunning { .. })
    ));
    drop(c);
    handle.shutdown();
    assert!(name.leftovers().is_empty());
    assert!(matches!(
        Client::connect(&name),
        Err(CallError::NoServer { .. })
    ));
}

/// Every wait on both sides sleeps in the kernel (`WaitStrategy::Block`), so every hand-off
/// goes through the eventcount's slow path: the notifier must see the sleeper it has to wake.
/// A lost wake-up would not hang (a waiting client re-checks every 20 ms, an idle worker
/// every 50 ms), but would cost that much per call: 3 x 3,000 calls would take over a
/// minute instead of well under a second, hence the 30 s limit.
#[test]
fn sleeping_clients_and_workers_are_always_woken() {
    const TEST: &str = "sleeping_clients_and_workers_are_always_woken";
    const CALLS: u32 = 3_000;
    if let Some((role, args)) = child_role() {
        assert_eq!(role, "client");
        checked_caller(
            &args[0],
            args[1].parse().unwrap(),
            CALLS,
            WaitStrategy::Block,
        );
    }
    let _w = watchdog(TEST, Duration::from_secs(120));
    let name = TestName::new("chan-block");
    let handle = Server::builder(&name)
        .slots(4)
        .max_message(512)
        .wait_strategy(WaitStrategy::Block)
        .workers(2)
        .create()
        .unwrap()
        .spawn(reverse)
        .unwrap();
    let mut kids: Vec<_> = (0..3u32)
        .map(|id| spawn(TEST, "client", &[&name, &id.to_string()]))
        .collect();
    for k in &mut kids {
        k.expect("ready");
    }
    for k in &mut kids {
        k.send("go");
    }
    for k in &mut kids {
        k.expect_line_within(Duration::from_secs(30));
        k.wait_ok();
    }
    handle.shutdown();
    assert!(
        name.leftovers().is_empty(),
        "left in /dev/shm: {:?}",
        name.leftovers()
    );
}

/// A client that claimed a ring cell and never published it (preempted or killed between the
/// two steps of a push) must not hold up the requests pushed behind it: the worker notices the
/// unpublished head within microseconds and serves the slots directly. (Waiting for the 50 ms
/// tick that skips such a head would make these 40 calls take over 2 s.)
#[test]
fn a_push_stalled_halfway_holds_up_no_other_call() {
    let _w = watchdog("stalled_push", Duration::from_secs(60));
    let name = TestName::new("chan-stalled");
    // 32 slots: a 64-cell ring, so the stalled cells do not fill it (a full ring makes the
    // client ask for a scan, which would hide the problem) within the 40 calls.
    let handle = Server::builder(&name)
        .slots(32)
        .max_message(512)
        .create()
        .unwrap()
        .spawn(reverse)
        .unwrap();
    let mut c = Client::connect(&name).unwrap();
    assert_eq!(c.call(b"warm").unwrap(), b"mraw");
    let raw = RawChannel::open(&name);
    let start = Instant::now();
    for i in 0..40u32 {
        // Claim the next cell as a stalled producer would: move the enqueue position only.
        let enq = raw.read(raw::RING);
        raw.write(raw::RING, enq.wrapping_add(1));
        let req = request(7, i);
        let resp = c
            .call_timeout(&req, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(resp, reversed(&req));
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "40 calls behind stalled pushes took {took:?}"
    );
    drop(c);
    handle.shutdown();
}

/// Client role for `the_handler_sees_each_client_process_by_id_and_pid`: two calls, each
/// answered with the caller's id and pid as the handler saw them; prints both answers.
fn identity_caller(name: &str) -> ! {
    let mut c = Client::connect_timeout(name, Duration::from_secs(10)).unwrap();
    let first = c.call(b"who").unwrap();
    let second = c.call(b"who").unwrap();
    assert_eq!(first, second, "one connection, one identity");
    tell_parent(&format!(
        "{} {}",
        std::process::id(),
        String::from_utf8(first).unwrap()
    ));
    hear_parent();
    child_exit(0)
}

#[test]
fn the_handler_sees_each_client_process_by_id_and_pid() {
    if let Some((_, args)) = child_role() {
        identity_caller(&args[0]);
    }
    let _w = watchdog("handler_identity", Duration::from_secs(60));
    let name = TestName::new("chan-ident");
    let handle = Server::builder(&name)
        .slots(4)
        .workers(2)
        .create()
        .unwrap()
        .spawn(
            |call: &CallInfo, _: &[u8], resp: &mut [u8]| -> Result<usize, AppError> {
                let me = format!("{} {} {}", call.client().as_u64(), call.pid(), call.slot());
                resp[..me.len()].copy_from_slice(me.as_bytes());
                Ok(me.len())
            },
        )
        .unwrap();
    let mut kids: Vec<_> = (0..4)
        .map(|_| {
            spawn(
                "the_handler_sees_each_client_process_by_id_and_pid",
                "client",
                &[&name],
            )
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    let mut slots = std::collections::HashSet::new();
    for k in &mut kids {
        let line = k.expect_line();
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 4, "{line}");
        assert_eq!(
            f[0], f[2],
            "the handler saw another pid than the caller's: {line}"
        );
        assert_eq!(f[0], k.pid().to_string());
        ids.insert(f[1].to_owned());
        slots.insert(f[3].to_owned());
    }
    assert_eq!(ids.len(), 4, "four connections, four ids: {ids:?}");
    assert_eq!(slots.len(), 4, "four clients, four slots: {slots:?}");
    for k in &mut kids {
        k.send("done");
        k.wait_ok();
    }
    // A new connection on a slot used before gets a new id.
    let mut again = Client::connect(&name).unwrap();
    let me = String::from_utf8(again.call(b"who").unwrap()).unwrap();
    let id = me.split_whitespace().next().unwrap().to_owned();
    assert!(!ids.contains(&id), "id {id} reused from {ids:?}");
    drop(again);
    handle.shutdown();
    assert!(name.leftovers().is_empty(), "left: {:?}", name.leftovers());
}

#[test]
fn application_errors_and_oversized_lengths_fail_only_that_call() {
    let _w = watchdog("app_errors", Duration::from_secs(60));
    let name = TestName::new("chan-apperr");
    let handle = Server::builder(&name)
        .max_message(64)
        .create()
        .unwrap()
        .spawn(
            |_: &CallInfo, req: &[u8], resp: &mut [u8]| -> Result<usize, AppError> {
                match req {
                    b"refuse" => {
                        resp[..4].copy_from_slice(b"nope");
                        Err(AppError::with_detail(42, 4))
                    }
                    b"bare" => Err(AppError::new(7)),
                    b"too long" => Ok(resp.len() + 1),
                    b"too much detail" => Err(AppError::with_detail(1, resp.len() + 1)),
                    _ => {
                        resp[..req.len()].copy_from_slice(req);
                        Ok(req.len())
                    }
                }
            },
        )
        .unwrap();
    let mut c = Client::connect(&name).unwrap();
    match c.call(b"refuse") {
        Err(CallError::Application { code: 42, detail }) => assert_eq!(detail, b"nope"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.call(b"bare"),
        Err(CallError::Application { code: 7, ref detail }) if detail.is_empty()
    ));
    assert_eq!(c.call(b"echo").unwrap(), b"echo");
    match c.call(b"too long") {
        Err(CallError::BadResponse { len: 65, max: 64 }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.call(b"too much detail"),
        Err(CallError::BadResponse { .. })
    ));
    assert_eq!(c.call(b"still served").unwrap(), b"still served");
    drop(c);
    handle.shutdown();
    assert!(name.leftovers().is_empty(), "left: {:?}", name.leftovers());
}

/// A server killed while an idle client stays connected, then restarted.
///
/// Linux: the new server replaces the stale segment and the idle client's next call reaches
/// it. Windows (a platform difference, see README): the idle client's mapping keeps the dead
/// server's section and its name alive, so the new server is refused with
/// `Error::StillMapped` until that client lets go, which its next call does (ServerGone);
/// after that the restart works and calls reach the new server.
#[test]
fn a_server_killed_while_a_client_idles_can_be_restarted() {
    const TEST: &str = "a_server_killed_while_a_client_idles_can_be_restarted";
    if let Some((_, args)) = child_role() {
        match Server::builder(&args[0]).slots(2).max_message(64).create() {
            Ok(server) => {
                let handle = server.spawn(reverse).unwrap();
                tell_parent("serving");
                hear_parent();
                handle.shutdown();
            }
            Err(CallError::Setup(shmlink::Error::StillMapped { .. })) => {
                tell_parent("still mapped")
            }
            Err(e) => tell_parent(&format!("error {e}")),
        }
        child_exit(0);
    }
    let _w = watchdog(TEST, Duration::from_secs(60));
    let name = TestName::new("chan-idle-restart");
    let mut first = spawn(TEST, "server", &[&name]);
    first.expect("serving");
    let mut client = Client::connect_timeout(&name, Duration::from_secs(10)).unwrap();
    assert_eq!(client.call(b"one").unwrap(), b"eno");
    first.kill();
    let mut second = spawn(TEST, "server", &[&name]);
    if cfg!(windows) {
        second.expect("still mapped");
        second.wait_ok();
        assert!(matches!(client.call(b"two"), Err(CallError::ServerGone)));
        second = spawn(TEST, "server", &[&name]);
    }
    second.expect("serving");
    assert_eq!(client.call(b"three").unwrap(), b"eerht");
    drop(client);
    second.send("quit");
    second.wait_ok();
    name.assert_no_leftovers();
}

/// Client role for the connection-event test: connect, make one call, say "ready"; then per
/// parent line: "drop" -> drop the client and say "dropped"; anything else (or EOF) -> exit.
fn connecting_caller(name: &str) -> ! {
    let mut c = Some(Client::connect_timeout(name, Duration::from_secs(10)).unwrap());
    c.as_mut().unwrap().call(b"hello").unwrap();
    tell_parent("ready");
    while let Some(line) = hear_parent() {
        if line != "drop" {
            break;
        }
        drop(c.take());
        tell_parent("dropped");
    }
    child_exit(0)
}

/// Connection events with the time they were delivered.
type Events = mpsc::Receiver<(Instant, ConnectionEvent)>;

/// Waits (at most `common::STEP`) for the next event that `pick` accepts; returns it with
/// the time it was delivered.
fn next_event(
    events: &Events,
    mut pick: impl FnMut(&ConnectionEvent) -> bool,
) -> (Instant, ConnectionEvent) {
    let end = Instant::now() + common::STEP;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok((at, ev)) if pick(&ev) => return (at, ev),
            Ok(_) => {}
            Err(e) => panic!("no connection event within {:?}: {e}", common::STEP),
        }
    }
}

#[test]
fn connection_events_name_each_client_and_say_how_it_left() {
    if let Some((_, args)) = child_role() {
        connecting_caller(&args[0]);
    }
    let _w = watchdog("connection_events", Duration::from_secs(90));
    let name = TestName::new("chan-events");
    let (tx, events) = mpsc::channel();
    let handle = Server::builder(&name)
        .slots(4)
        .max_message(64)
        .on_connection(move |ev: ConnectionEvent| {
            let _ = tx.send((Instant::now(), ev));
        })
        .workers(2)
        .create()
        .unwrap()
        .spawn(reverse)
        .unwrap();
    let test = "connection_events_name_each_client_and_say_how_it_left";
    let mut kids: Vec<_> = (0..4).map(|_| spawn(test, "client", &[&name])).collect();
    for k in &mut kids {
        k.expect("ready");
    }
    // Four Connected events, one per process, with its real pid and an id of its own.
    let mut ids = std::collections::HashMap::new();
    for _ in 0..4 {
        match next_event(&events, |_| true).1 {
            ConnectionEvent::Connected { id, pid } => {
                assert!(ids.insert(pid, id).is_none(), "pid {pid} connected twice");
            }
            other => panic!("expected Connected, got {other:?}"),
        }
    }
    let mut pids: Vec<u32> = ids.keys().copied().collect();
    let mut want: Vec<u32> = kids.iter().map(common::Child::pid).collect();
    pids.sort_unstable();
    want.sort_unstable();
    assert_eq!(pids, want, "the events name the client processes");
    let ids_of: Vec<ClientId> = kids.iter().map(|k| ids[&k.pid()]).collect();
    assert_eq!(
        ids_of
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        4
    );
    // The table agrees once every call is counted.
    assert!(poll_until(common::STEP, || {
        let c = handle.clients();
        c.len() == 4 && c.iter().all(|c| c.calls == 1 && c.last_call.is_some())
    }));
    assert_eq!(handle.connected(), 4);
    for c in handle.clients() {
        assert_eq!(ids[&c.pid], c.id, "table and events agree on {c:?}");
    }
    // A graceful drop.
    kids[0].send("drop");
    kids[0].expect("dropped");
    let said = Instant::now();
    let (at, ev) = next_event(&events, |_| true);
    assert_eq!(
        ev,
        ConnectionEvent::Disconnected {
            id: ids_of[0],
            pid: kids[0].pid(),
            reason: DisconnectReason::Graceful
        }
    );
    println!(
        "graceful drop reported {:?} after the client said it dropped",
        at.saturating_duration_since(said)
    );
    // A SIGKILL.
    let pid = kids[1].pid();
    kids[1].kill();
    let killed = Instant::now();
    let (at, ev) = next_event(&events, |_| true);
    assert_eq!(
        ev,
        ConnectionEvent::Disconnected {
            id: ids_of[1],
            pid,
            reason: DisconnectReason::Died
        }
    );
    println!(
        "SIGKILL reported {:?} after the kill returned",
        at.saturating_duration_since(killed)
    );
    assert!(poll_until(common::STEP, || handle.connected() == 2));
    for k in &mut kids[2..] {
        k.send("drop");
        k.expect("dropped");
        k.send("quit");
        k.wait_ok();
    }
    for _ in 0..2 {
        assert!(matches!(
            next_event(&events, |_| true).1,
            ConnectionEvent::Disconnected {
                reason: DisconnectReason::Graceful,
                ..
            }
        ));
    }
    assert!(poll_until(common::STEP, || handle.connected() == 0));
    kids[0].send("quit");
    kids[0].wait_ok();
    handle.shutdown();
    assert!(name.leftovers().is_empty(), "left: {:?}", name.leftovers());
}

/// Client role for the worker-count test: connect, say "ready", wait for "go", then make
/// checked calls (each waiting at most 10 s) until the parent says "stop"; say how many.
fn calling_until_stopped(name: &str, id: u32) -> ! {
    let mut c = Client::connect_timeout(name, Duration::from_secs(10)).unwrap();
    tell_parent("ready");
    hear_parent();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = std::sync::Arc::clone(&stop);
    std::thread::spawn(move || {
        hear_parent();
        s.store(true, std::sync::atomic::Ordering::Release);
    });
    let mut i = 0;
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        let req = request(id, i);
        let resp = c
            .call_timeout(&req, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("client {id} call {i}: {e}"));
        assert_eq!(resp, reversed(&req), "client {id} call {i}");
        i += 1;
    }
    tell_parent(&format!("ok {i}"));
    child_exit(0)
}

#[test]
// Under Wine every event operation is a wineserver round trip: the load phases outlast the
// children's watchdogs. (Logic only; Wine cannot time a real Windows.)
#[cfg_attr(windows, ignore = "too slow under Wine's emulated kernel objects")]
fn set_workers_one_to_four_to_two_under_load_answers_every_call() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    if let Some((_, args)) = child_role() {
        calling_until_stopped(&args[0], args[1].parse().unwrap());
    }
    let _w = watchdog("set_workers", Duration::from_secs(120));
    let name = TestName::new("chan-workers");
    // Calls answered, handlers running now, most running at once since the last reset.
    let (done, inside, peak) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (d, n, p) = (Arc::clone(&done), Arc::clone(&inside), Arc::clone(&peak));
    let mut handle = Server::builder(&name)
        .slots(8)
        .max_message(512)
        .workers(1)
        .create()
        .unwrap()
        .spawn(move |req: &[u8], resp: &mut [u8]| {
            let now = n.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
            n.fetch_sub(1, Ordering::SeqCst);
            d.fetch_add(1, Ordering::SeqCst);
            reverse(req, resp)
        })
        .unwrap();
    let test = "set_workers_one_to_four_to_two_under_load_answers_every_call";
    let mut kids: Vec<_> = (0..8u32)
        .map(|id| spawn(test, "client", &[&name, &id.to_string()]))
        .collect();
    for k in &mut kids {
        k.expect("ready");
    }
    for k in &mut kids {
        k.send("go");
    }
    // Runs `calls` more calls with `workers` workers; returns the rate and the peak.
    let phase = |calls: usize| {
        let from = done.load(Ordering::SeqCst);
        let start = Instant::now();
        assert!(poll_until(common::STEP, || done.load(Ordering::SeqCst) >= from + calls));
        let rate = (done.load(Ordering::SeqCst) - from) as f64 / start.elapsed().as_secs_f64();
        (rate, peak.load(Ordering::SeqCst))
    };
    let (r1, p1) = phase(200);
    assert_eq!(p1, 1, "one worker runs one handler at a time");
    handle.set_workers(4).unwrap();
    assert_eq!(handle.workers(), 4);
    assert!(
        poll_until(common::STEP, || peak.load(Ordering::SeqCst) == 4),
        "four workers never ran four handlers at once"
    );
    let (r4, _) = phase(800);
    let shrinking = Instant::now();
    handle.set_workers(2).unwrap();
    let shrunk_in = shrinking.elapsed();
    assert_eq!(handle.workers(), 2);
    // The retired workers are joined: from now on at most two handlers run at once, and
    // both workers left serve.
    peak.store(inside.load(Ordering::SeqCst), Ordering::SeqCst);
    assert!(
        poll_until(common::STEP, || peak.load(Ordering::SeqCst) >= 2),
        "two workers never ran two handlers at once"
    );
    let (r2, p2) = phase(400);
    assert_eq!(p2, 2, "{p2} handlers at once with two workers");
    println!("calls/s with 1, 4, 2 workers: {r1:.0}, {r4:.0}, {r2:.0}; shrunk in {shrunk_in:?}");
    let mut total = 0;
    for k in &mut kids {
        k.send("stop");
    }
    for k in &mut kids {
        let line = k.expect_line();
        total += line
            .strip_prefix("ok ")
            .unwrap_or_else(|| panic!("{line}"))
            .parse::<usize>()
            .unwrap();
        k.wait_ok();
    }
    assert_eq!(
        total,
        done.load(Ordering::SeqCst),
        "every call answered once"
    );
    handle.shutdown();
    assert!(name.leftovers().is_empty(), "left: {:?}", name.leftovers());
}

/// Shrinking a pool whose workers all sleep on the doorbell: whichever worker the wake-up
/// reaches retires and passes it on, so the count is right and the rest still serve.
#[test]
fn set_workers_shrinks_and_grows_an_idle_pool() {
    let _w = watchdog("set_workers_idle", Duration::from_secs(60));
    let name = TestName::new("chan-workers-idle");
    let mut handle = Server::builder(&name)
        .workers(8)
        .create()
        .unwrap()
        .spawn(|req: &[u8], resp: &mut [u8]| reverse(req, resp))
        .unwrap();
    let mut client = Client::connect(&name).unwrap();
    for (round, n) in [1, 8, 3, 5, 2, 8, 1].into_iter().enumerate() {
        handle.set_workers(n).unwrap();
        assert_eq!(handle.workers(), n);
        let req = request(n as u32, round as u32);
        assert_eq!(client.call(&req).unwrap(), reversed(&req));
    }
    assert!(matches!(
        handle.set_workers(0),
        Err(CallError::InvalidConfig(_))
    ));
    drop(client);
    handle.shutdown();
    assert!(name.leftovers().is_empty(), "left: {:?}", name.leftovers());
}

/// A server for the reaping and eviction tests: `slots` slots, two workers running a
/// [`Gate`] handler, connection events sent to the returned receiver.
fn gated_server(
    name: &str,
    slots: u32,
    idle: Option<Duration>,
) -> (
    shmlink::ServerHandle,
    Events,
    mpsc::Receiver<Vec<u8>>,
    mpsc::Sender<()>,
) {
    let (tx, events) = mpsc::channel();
    let (gate, entered, release) = Gate::new();
    let mut b = Server::builder(name)
        .slots(slots)
        .max_message(512)
        .on_connection(move |ev: ConnectionEvent| {
            let _ = tx.send((Instant::now(), ev));
        });
    if let Some(d) = idle {
        b = b.idle_timeout(d);
    }
    let handle = b
        .workers(2)
        .create()
        .unwrap()
        .spawn(move |req: &[u8], resp: &mut [u8]| gate.handle(req, resp))
        .unwrap();
    (handle, events, entered, release)
}

/// The id the next Connected event gives the process `pid`.
fn connected_id(events: &Events, pid: u32) -> ClientId {
    match next_event(
        events,
        |ev| matches!(ev, ConnectionEvent::Connected { pid: p, .. } if *p == pid),
    )
    .1
    {
        ConnectionEvent::Connected { id, .. } => id,
        _ => unreachable!(),
    }
}

#[test]
fn idle_timeout_lets_a_newcomer_have_the_idlest_clients_slot() {
    if let Some((_, args)) = child_role() {
        child_calls(&args[0]);
    }
    let _w = watchdog("idle_timeout_newcomer", Duration::from_secs(90));
    let name = TestName::new("chan-idle");
    let idle = Duration::from_millis(200);
    let (handle, events, _entered, _release) = gated_server(&name, 2, Some(idle));
    let test = "idle_timeout_lets_a_newcomer_have_the_idlest_clients_slot";
    let mut first = spawn(test, "caller", &[&name]);
    first.expect("ready");
    let first_id = connected_id(&events, first.pid());
    let mut second = spawn(test, "caller", &[&name]);
    second.expect("ready");
    let second_id = connected_id(&events, second.pid());
    // Both slots are taken by idle clients: a newcomer gets the one idle the longest.
    let start = Instant::now();
    let mut newcomer = Client::connect_timeout(&name, common::STEP).unwrap();
    println!(
        "newcomer connected {:?} after it started trying (idle timeout {idle:?})",
        start.elapsed()
    );
    let (_, ev) = next_event(&events, |ev| {
        matches!(ev, ConnectionEvent::Disconnected { .. })
    });
    assert_eq!(
        ev,
        ConnectionEvent::Disconnected {
            id: first_id,
            pid: first.pid(),
            reason: DisconnectReason::Reaped
        },
        "the client idle the longest is reaped"
    );
    assert_eq!(newcomer.call(b"new").unwrap(), b"wen");
    connected_id(&events, std::process::id());
    assert!(handle.clients().iter().all(|c| c.id != first_id));
    // Once a slot is free, the reaped client's next calls reconnect and succeed.
    drop(newcomer);
    next_event(&events, |ev| {
        matches!(
            ev,
            ConnectionEvent::Disconnected {
                reason: DisconnectReason::Graceful,
                pid,
                ..
            } if *pid == std::process::id()
        )
    });
    first.send("call");
    first.expect("ok");
    assert_ne!(
        connected_id(&events, first.pid()),
        first_id,
        "a new connection"
    );
    assert!(handle.clients().iter().any(|c| c.id == second_id));
    for k in [&mut first, &mut second] {
        k.send("quit");
        k.wait_ok();
    }
    handle.shutdown();
    assert!(name.leftovers().is_empty(), "left: {:?}", name.leftovers());
}

#[test]
fn idle_timeout_never_reaps_a_client_in_a_call() {
    if let Some((_, args)) = child_role() {
        child_calls(&args[0]);
    }
    let _w = watchdog("idle_timeout_in_call", Duration::from_secs(90));
    let name = TestName::new("chan-idle-call");
    let idle = Duration::from_millis(100);
    let (handle, events, entered, release) = gated_server(&name, 2, Some(idle));
    let test = "idle_timeout_never_reaps_a_client_in_a_call";
    let mut kids = [
        spawn(test, "caller", &[&name]),
        spawn(test, "caller", &[&name]),
    ];
    for k in &mut kids {
        k.expect("ready");
        k.send("hold");
        k.expect("holding");
        entered
            .recv_timeout(common::STEP)
            .expect("the call reached the handler");
    }
    // Both clients are in calls far longer than the idle timeout: nobody is reaped.
    match Client::connect_timeout(&name, idle * 5) {
        Err(CallError::ServerBusy { .. }) => {}
        r => panic!("expected ServerBusy, got {r:?}"),
    }
    while let Ok((_, ev)) = events.try_recv() {
        assert!(
            matches!(ev, ConnectionEvent::Connected { .. }),
            "a client in a call lost its slot: {ev:?}"
        );
    }
    for k in &mut kids {
        release.send(()).unwrap();
        let said = k.expect_line();
        assert!(said.starts_with("Ok("), "the held call failed: {said}");
    }
    for k in &mut kids {
        k.send("quit");
        k.wait_ok();
    }
    handle.shutdown();
    assert!(name.leftovers().is_empty(), "left: {:?}", name.leftovers());
}

#[test]
fn disconnect_evicts_idle_and_busy_clients_and_they_reconnect() {
    if let Some((_, args)) = child_role() {
        child_calls(&args[0]);
    }
    let _w = watchdog("disconnect", Duration::from_secs(90));
    let name = TestName::new("chan-evict");
    let (handle, events, entered, release) = gated_server(&name, 4, None);
    let test = "disconnect_evicts_idle_and_busy_clients_and_they_reconnect";
    let mut kids = [
        spawn(test, "caller", &[&name]),
        spawn(test, "caller", &[&name]),
        spawn(test, "caller", &[&name]),
    ];
    let mut by_pid = std::collections::HashMap::new();
    for k in &mut kids {
        k.expect("ready");
    }
    while by_pid.len() < 3 {
        if let ConnectionEvent::Connected { id, pid } = next_event(&events, |_| true).1 {
            by_pid.insert(pid, id);
        }
    }
    let mut ids: Vec<ClientId> = kids.iter().map(|k| by_pid[&k.pid()]).collect();
    let evicted = |id: ClientId, pid: u32| ConnectionEvent::Disconnected {
        id,
        pid,
        reason: DisconnectReason::Evicted,
    };
    // An idle client: its slot is taken back; its next calls reconnect.
    assert!(handle.disconnect(ids[0]));
    let (_, ev) = next_event(&events, |_| true);
    assert_eq!(ev, evicted(ids[0], kids[0].pid()));
    assert!(!handle.disconnect(ids[0]), "already gone");
    kids[0].send("call");
    kids[0].expect("ok");
    ids[0] = connected_id(&events, kids[0].pid());
    // A client blocked in a call: the call is answered, then the slot is taken back.
    kids[1].send("hold");
    kids[1].expect("holding");
    entered.recv_timeout(common::STEP).unwrap();
    assert!(handle.disconnect(ids[1]));
    release.send(()).unwrap();
    assert_eq!(
        kids[1].expect_line(),
        format!("{:?}", Ok::<_, ()>(b"dloh".to_vec()))
    );
    let (_, ev) = next_event(&events, |_| true);
    assert_eq!(ev, evicted(ids[1], kids[1].pid()));
    kids[1].send("call");
    kids[1].expect("ok");
    ids[1] = connected_id(&events, kids[1].pid());
    // Everyone.
    assert!(poll_until(common::STEP, || handle.connected() == 3));
    assert_eq!(handle.disconnect_all(), 3);
    let mut gone = std::collections::HashSet::new();
    for _ in 0..3 {
        match next_event(&events, |_| true).1 {
            ConnectionEvent::Disconnected {
                id,
                reason: DisconnectReason::Evicted,
                ..
            } => assert!(gone.insert(id)),
            other => panic!("expected an eviction, got {other:?}"),
        }
    }
    assert_eq!(gone, ids.iter().copied().collect());
    assert!(poll_until(common::STEP, || handle.connected() == 0));
    for k in &mut kids {
        k.send("call");
        k.expect("ok");
    }
    for k in &mut kids {
        k.send("quit");
        k.wait_ok();
    }
    handle.shutdown();
    assert!(name.leftovers().is_empty(), "left: {:?}", name.leftovers());
}

/// Role: connects and disconnects in a loop (each time taking the slot-claim lock twice),
/// until the parent says "exit".
#[cfg(unix)]
fn claiming_in_a_loop(name: &str) -> ! {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                drop(Client::connect(name).unwrap());
            }
        });
        tell_parent("looping");
        hear_parent();
        stop.store(true, Ordering::Relaxed);
    });
    child_exit(0);
}

/// Byte offset of the slot-claim mutex's state word in the channel object (the layout in
/// `src/channel/layout.rs`: the mutex follows the configuration and flags).
#[cfg(unix)]
const CLAIM_MUTEX_AT: usize = common::HEADER_SIZE + 128;

// Unix only: SIGSTOP freezes the lock holder; Windows has no such signal.
#[cfg(unix)]
#[test]
fn connect_timeout_waits_out_a_frozen_claim_lock_holder_until_its_own_deadline() {
    const TEST: &str =
        "connect_timeout_waits_out_a_frozen_claim_lock_holder_until_its_own_deadline";
    if let Some((_, args)) = child_role() {
        claiming_in_a_loop(&args[0]);
    }
    let _w = watchdog(TEST, Duration::from_secs(60));
    let name = TestName::new("chan-frozen");
    let handle = Server::builder(&name)
        .slots(4)
        .create()
        .unwrap()
        .spawn(reverse)
        .unwrap();
    let mut connected = Client::connect(&name).unwrap();
    let mut child = spawn(TEST, "claimer", &[&name]);
    child.expect("looping");
    let obj = common::RawObject::open(&common::os_name(&name, "chan"));
    let frozen = common::freeze_holding(&child, &obj, CLAIM_MUTEX_AT);

    let lock_held = |r: Result<Client, CallError>, what: &str, took: Duration| match r {
        Err(e @ CallError::LockHeld { pid, .. }) => {
            eprintln!("{what} with a frozen claim-lock holder: {took:?}, {e}");
            assert_eq!(pid, Some(child.pid()), "{e}");
        }
        r => panic!("{what} with a frozen claim-lock holder: {took:?}, {r:?}"),
    };
    // A connected client's calls do not need the claim lock.
    assert_eq!(connected.call(b"abc").unwrap(), b"cba");
    // connect_timeout keeps waiting until its own deadline, then says what held it up.
    let timeout = Duration::from_secs(3);
    let start = Instant::now();
    let r = Client::connect_timeout(&name, timeout);
    let took = start.elapsed();
    lock_held(r, "connect_timeout(3 s)", took);
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(100),
        "connect_timeout(3 s) took {took:?}"
    );
    // connect, which has no deadline, gives up after its bound with the same error.
    let start = Instant::now();
    let r = Client::connect(&name);
    lock_held(r, "connect()", start.elapsed());

    frozen.thaw();
    let mut c = Client::connect_timeout(&name, Duration::from_secs(10)).unwrap();
    assert_eq!(c.call(b"xyz").unwrap(), b"zyx");
    assert_eq!(connected.call(b"abc").unwrap(), b"cba");
    child.send("exit");
    child.wait_ok();
    drop((c, connected));
    drop(handle);
    name.assert_no_leftovers();
}

/// Client role for `stats_count_each_outcome_of_calls_from_client_processes`: a known mix
/// of calls (3 answered, 2 application errors, 1 panic, 1 response too large), then "done";
/// leaves when told.
fn mixed_caller(name: &str) -> ! {
    let mut c = Client::connect_timeout(name, Duration::from_secs(10)).unwrap();
    for _ in 0..3 {
        assert_eq!(c.call(b"echo").unwrap(), b"echo");
    }
    for _ in 0..2 {
        assert!(matches!(
            c.call(b"refuse"),
            Err(CallError::Application { code: 9, .. })
        ));
    }
    assert!(matches!(c.call(b"panic"), Err(CallError::HandlerPanicked)));
    assert!(matches!(
        c.call(b"overlong"),
        Err(CallError::BadResponse { .. })
    ));
    tell_parent("done");
    hear_parent();
    drop(c);
    child_exit(0)
}

#[test]
fn stats_count_each_outcome_of_calls_from_client_processes() {
    const TEST: &str = "stats_count_each_outcome_of_calls_from_client_processes";
    if let Some((_, args)) = child_role() {
        mixed_caller(&args[0]);
    }
    let _w = watchdog(TEST, Duration::from_secs(60));
    let name = TestName::new("chan-stats");
    let handle = Server::builder(&name)
        .slots(4)
        .max_message(64)
        .workers(2)
        .create()
        .unwrap()
        .spawn(
            |_: &CallInfo, req: &[u8], resp: &mut [u8]| -> Result<usize, AppError> {
                match req {
                    b"refuse" => Err(AppError::new(9)),
                    b"panic" => panic!("handler panics on request (expected by the test)"),
                    b"overlong" => Ok(resp.len() + 1),
                    _ => {
                        resp[..req.len()].copy_from_slice(req);
                        Ok(req.len())
                    }
                }
            },
        )
        .unwrap();
    let table = handle.client_table();
    let s = handle.stats();
    assert_eq!((s.answered, s.in_flight, s.workers), (0, 0, 2), "{s:?}");
    const CLIENTS: u64 = 3;
    let mut kids: Vec<_> = (0..CLIENTS)
        .map(|_| spawn(TEST, "client", &[&name]))
        .collect();
    for k in &mut kids {
        k.expect("done");
    }
    assert!(
        poll_until(Duration::from_secs(10), || handle.stats().connected == 3),
        "{:?}",
        handle.stats()
    );
    let s = handle.stats();
    assert_eq!(
        (
            s.answered,
            s.app_errors,
            s.panics,
            s.bad_responses,
            s.bad_requests,
            s.refused
        ),
        (3 * CLIENTS, 2 * CLIENTS, CLIENTS, CLIENTS, 0, 0),
        "{s:?}"
    );
    assert_eq!((s.in_flight, s.workers), (0, 2), "{s:?}");
    assert_eq!(table.stats(), Some(s), "the table sees the same counts");
    for k in &mut kids {
        k.send("go");
        k.wait_ok();
    }
    assert!(
        poll_until(Duration::from_secs(10), || handle.stats().connected == 0),
        "{:?}",
        handle.stats()
    );
    handle.shutdown();
    assert_eq!(table.stats(), None, "the server is gone");
    assert!(name.leftovers().is_empty(), "left: {:?}", name.leftovers());
}
