//! The async API (feature `async`) across real processes: many concurrent calls over a few
//! connections, cancelled calls, async handlers, a server killed under waiting futures, and
//! the pool's async ends. Driven from tokio; runs on Linux and Windows (under Wine in CI).
#![cfg(feature = "async")]

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use common::{child_exit, child_role, hear_parent, spawn, tell_parent, watchdog, TestName};
use shmlink::{
    block_on, block_on_handler, AsyncClient, AsyncReader, AsyncWriter, CallError, Client,
    PoolConfig, Reader, Server, Writer,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

fn reversed(req: &[u8]) -> Vec<u8> {
    req.iter().rev().copied().collect()
}

/// Polls `fut` once (with a waker that does nothing): it starts, and is left pending.
fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

/// Server role `server <name> <mode>`; says "serving", stops at "quit" on stdin.
///
/// - `reverse`: one worker answers the request reversed; it tells the parent "got <req>"
///   for each, and on `slow` waits for the parent's "release" first;
/// - `hang`: 8 workers; on `hang` a worker says "in handler" and never answers;
/// - `async`: 2 workers run an async handler that hands the work to a tokio runtime.
fn server_role(name: &str, mode: &str) -> ! {
    // One reader of stdin: "quit" ends the role, anything else goes to the handler.
    let (quit_tx, quit) = mpsc::channel::<()>();
    let (line_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        while let Some(line) = hear_parent() {
            if line == "quit" {
                break;
            }
            let _ = line_tx.send(line);
        }
        let _ = quit_tx.send(());
    });
    let builder = Server::builder(name).slots(16).max_message(1024);
    let handle = match mode {
        "reverse" => {
            let lines = StdMutex::new(lines);
            builder
                .create()
                .unwrap()
                .spawn(move |req: &[u8], resp: &mut [u8]| {
                    tell_parent(&format!("got {}", String::from_utf8_lossy(req)));
                    if req == b"slow" {
                        let line = lines.lock().unwrap().recv().unwrap();
                        assert_eq!(line, "release");
                    }
                    for (o, i) in resp.iter_mut().zip(req.iter().rev()) {
                        *o = *i;
                    }
                    req.len()
                })
                .unwrap()
        }
        "hang" => builder
            .workers(8)
            .create()
            .unwrap()
            .spawn(|req: &[u8], resp: &mut [u8]| {
                if req == b"hang" {
                    tell_parent("in handler");
                    loop {
                        std::thread::park();
                    }
                }
                resp[..req.len()].copy_from_slice(req);
                req.len()
            })
            .unwrap(),
        "async" => {
            let rt = Arc::new(runtime());
            let handle = rt.handle().clone();
            let h = builder
                .workers(2)
                .create()
                .unwrap()
                .spawn(block_on_handler(move |req: Vec<u8>| {
                    // Work that needs the runtime (a timer) runs on it; the join handle is a
                    // plain future that `block_on` drives.
                    let task = handle.spawn(async move {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        if req == b"big" {
                            return vec![0; 2048]; // beyond max_message
                        }
                        reversed(&req)
                    });
                    async move { task.await.unwrap() }
                }))
                .unwrap();
            std::mem::forget(rt); // lives as long as the role (the process)
            h
        }
        m => panic!("unknown mode {m}"),
    };
    tell_parent("serving");
    let _ = quit.recv();
    handle.shutdown();
    child_exit(0)
}

#[test]
fn thousand_concurrent_calls_over_four_connections_each_get_their_own_answer() {
    if let Some((_, args)) = child_role() {
        server_role(&args[0], &args[1]);
    }
    let _w = watchdog("thousand_concurrent_calls", Duration::from_secs(120));
    let name = TestName::new("async-1000");
    let test = "thousand_concurrent_calls_over_four_connections_each_get_their_own_answer";
    let mut server = spawn(test, "server", &[&name, "reverse"]);
    server.expect("serving");
    let client = AsyncClient::connect_timeout(&name, 4, Duration::from_secs(10)).unwrap();
    assert_eq!(client.connections(), 4);
    let started = Instant::now();
    runtime().block_on(async {
        let tasks: Vec<_> = (0..1000u32)
            .map(|i| {
                let c = client.clone();
                tokio::spawn(async move {
                    let req = format!("call number {i} of a thousand").into_bytes();
                    let answer = c.call_timeout(&req, Duration::from_secs(60)).await;
                    (req, answer)
                })
            })
            .collect();
        for t in tasks {
            let (req, answer) = t.await.unwrap();
            assert_eq!(answer.unwrap(), reversed(&req));
        }
    });
    println!(
        "1000 concurrent calls over 4 connections: {:?}",
        started.elapsed()
    );
    drop(client);
    server.send("quit");
    server.wait_ok();
    name.assert_no_leftovers();
}

#[test]
fn dropped_futures_mid_call_and_queued_leave_the_connection_usable() {
    if let Some((_, args)) = child_role() {
        server_role(&args[0], &args[1]);
    }
    let _w = watchdog("dropped_futures", Duration::from_secs(60));
    let name = TestName::new("async-cancel");
    let test = "dropped_futures_mid_call_and_queued_leave_the_connection_usable";
    let mut server = spawn(test, "server", &[&name, "reverse"]);
    server.expect("serving");
    // One connection: every call below goes through the same one.
    let client = AsyncClient::connect_timeout(&name, 1, Duration::from_secs(10)).unwrap();
    {
        let mut slow = pin!(client.call(b"slow"));
        assert!(poll_once(slow.as_mut()).is_pending());
        server.expect("got slow"); // in the handler now
        let mut queued = pin!(client.call(b"never"));
        assert!(poll_once(queued.as_mut()).is_pending());
        // A call still queued at its deadline times out, without being made.
        let late = runtime().block_on(client.call_timeout(b"late", Duration::from_millis(20)));
        assert!(matches!(late, Err(CallError::Timeout)), "{late:?}");
        // Both futures are dropped here: one mid-call, one still queued.
    }
    let next = std::thread::scope(|s| {
        let next = s.spawn(|| runtime().block_on(client.call(b"next")));
        server.send("release"); // the slow call's answer comes, and is discarded
        next.join().unwrap()
    });
    assert_eq!(next.unwrap(), b"txen", "the next call got its own answer");
    // The server saw "slow" then "next": the dropped and the timed-out calls were never
    // made.
    server.expect("got next");
    assert_eq!(block_on(client.call(b"again")).unwrap(), b"niaga");
    server.expect("got again");
    drop(client);
    server.send("quit");
    server.wait_ok();
    name.assert_no_leftovers();
}

#[test]
fn async_handler_server_answers_blocking_and_async_clients() {
    if let Some((_, args)) = child_role() {
        server_role(&args[0], &args[1]);
    }
    let _w = watchdog("async_handler", Duration::from_secs(60));
    let name = TestName::new("async-handler");
    let test = "async_handler_server_answers_blocking_and_async_clients";
    let mut server = spawn(test, "server", &[&name, "async"]);
    server.expect("serving");
    let mut blocking = Client::connect_timeout(&name, Duration::from_secs(10)).unwrap();
    assert_eq!(blocking.call(b"blocking").unwrap(), b"gnikcolb");
    let client = AsyncClient::connect(&name, 2).unwrap();
    runtime().block_on(async {
        let (a, b) = tokio::join!(client.call(b"first"), client.call(b"second"));
        assert_eq!(a.unwrap(), b"tsrif");
        assert_eq!(b.unwrap(), b"dnoces");
        match client.call(b"big").await {
            Err(CallError::BadResponse {
                len: 2048,
                max: 1024,
            }) => {}
            r => panic!("a response beyond max_message: {r:?}"),
        }
        assert_eq!(client.call(b"after").await.unwrap(), b"retfa");
    });
    drop((client, blocking));
    server.send("quit");
    server.wait_ok();
    name.assert_no_leftovers();
}

#[test]
fn server_killed_while_eight_futures_wait_each_gets_server_gone() {
    if let Some((_, args)) = child_role() {
        server_role(&args[0], &args[1]);
    }
    let _w = watchdog("server_killed", Duration::from_secs(60));
    let name = TestName::new("async-kill");
    let test = "server_killed_while_eight_futures_wait_each_gets_server_gone";
    let mut server = spawn(test, "server", &[&name, "hang"]);
    server.expect("serving");
    let client = AsyncClient::connect_timeout(&name, 8, Duration::from_secs(10)).unwrap();
    let rt = runtime();
    let (done_tx, done) = mpsc::channel();
    for _ in 0..8 {
        let (c, tx) = (client.clone(), done_tx.clone());
        rt.spawn(async move {
            let r = c.call(b"hang").await;
            let _ = tx.send((Instant::now(), r));
        });
    }
    for _ in 0..8 {
        server.expect("in handler"); // every call is in a handler
    }
    let killed = Instant::now();
    server.kill();
    let mut slowest = Duration::ZERO;
    for _ in 0..8 {
        let (at, r) = done.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(matches!(r, Err(CallError::ServerGone)), "{r:?}");
        slowest = slowest.max(at.duration_since(killed));
    }
    println!(
        "ServerGone reached all 8 futures {slowest:?} after the kill (target: 100 ms plus \
         scheduling)"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "ServerGone took {slowest:?}"
    );
    // With the server gone, the next call finds none (not executed).
    match rt.block_on(client.call(b"ping")) {
        Err(CallError::NoServer { .. } | CallError::ServerGone) => {}
        r => panic!("{r:?}"),
    }
    drop(client);
    drop(rt);
}

#[test]
fn async_pool_ends_round_trip_across_processes_and_a_full_pool_makes_acquire_wait() {
    if let Some((role, args)) = child_role() {
        assert_eq!(role, "writer");
        // Sends numbered messages through the small pool with the async Writer: it waits
        // whenever the Reader holds every buffer.
        let writer =
            AsyncWriter::new(Writer::connect_timeout(&args[0], Duration::from_secs(10)).unwrap())
                .unwrap();
        let n: u32 = args[1].parse().unwrap();
        block_on(async {
            for i in 0..n {
                let mut buf = writer.acquire().await.unwrap();
                buf.extend_from_slice(&i.to_le_bytes()).unwrap();
                writer.send(buf).unwrap();
            }
        });
        tell_parent("sent");
        child_exit(0);
    }
    let _w = watchdog("async_pool", Duration::from_secs(60));
    let name = TestName::new("async-pool");
    let test = "async_pool_ends_round_trip_across_processes_and_a_full_pool_makes_acquire_wait";
    let config = PoolConfig {
        initial_buffer_size: 256,
        max_buffer_size: 4096,
        start_buffers: 2,
        max_buffers: 2,
        min_buffers: Some(2),
        resize_threshold: 0,
        ..PoolConfig::default()
    };
    let reader = AsyncReader::new(Reader::create(&name, config).unwrap()).unwrap();
    let rt = runtime();
    // A receive dropped while it waits takes nothing with it.
    {
        let mut early = pin!(reader.recv());
        assert!(poll_once(early.as_mut()).is_pending());
    }
    assert!(matches!(
        rt.block_on(reader.recv_timeout(Duration::from_millis(10))),
        Err(shmlink::PoolError::Timeout)
    ));
    // Across processes: every message arrives, in order.
    let n = 300u32;
    let mut writer = spawn(test, "writer", &[&name, &n.to_string()]);
    rt.block_on(async {
        for i in 0..n {
            let msg = reader
                .recv_timeout(Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("message {i}: {e}"));
            assert_eq!(&*msg, &i.to_le_bytes());
        }
    });
    writer.expect("sent");
    writer.wait_ok();
    // In this process: with both buffers held, an acquire waits until one is released.
    let w = AsyncWriter::new(Writer::connect(&name).unwrap()).unwrap();
    rt.block_on(async {
        let first = w.acquire().await.unwrap();
        let second = w.acquire().await.unwrap();
        assert!(matches!(
            w.acquire_timeout(Duration::from_millis(10)).await,
            Err(shmlink::PoolError::PoolFull)
        ));
        let w = &w;
        let (third, ()) = tokio::join!(w.acquire(), async move {
            let mut first = first;
            first.extend_from_slice(b"one").unwrap();
            w.send(first).unwrap();
            drop(second); // unsent: back to the free list
        });
        let mut third = third.unwrap();
        third.extend_from_slice(b"three").unwrap();
        w.send(third).unwrap();
        assert_eq!(&*reader.recv().await.unwrap(), b"one");
        assert_eq!(&*reader.recv().await.unwrap(), b"three");
    });
    drop(w);
    drop(reader.into_inner());
    drop(rt);
    name.assert_no_leftovers();
}

/// A waker that records that it was woken.
struct Flag(std::sync::atomic::AtomicBool);

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_woken_receive_that_is_dropped_passes_the_message_on_to_the_next() {
    let _w = watchdog("woken_receive_dropped", Duration::from_secs(60));
    let name = TestName::new("async-recv-pass");
    let reader = AsyncReader::new(Reader::create(&name, PoolConfig::default()).unwrap()).unwrap();
    let flags = [(); 2].map(|()| Arc::new(Flag(false.into())));
    let wakers = flags.clone().map(Waker::from);
    let woken = |i: usize| {
        common::poll_until(Duration::from_secs(10), || {
            flags[i].0.load(std::sync::atomic::Ordering::SeqCst)
        })
    };
    let mut second = Box::pin(reader.recv());
    {
        let mut first = pin!(reader.recv());
        // Both wait, `first` longest.
        assert!(first
            .as_mut()
            .poll(&mut Context::from_waker(&wakers[0]))
            .is_pending());
        assert!(second
            .as_mut()
            .poll(&mut Context::from_waker(&wakers[1]))
            .is_pending());
        let writer = Writer::connect(&name).unwrap();
        let mut buf = writer.acquire().unwrap();
        buf.extend_from_slice(b"only one").unwrap();
        writer.send(buf).unwrap();
        assert!(woken(0), "the longest-waiting receive was not woken");
        // `first` is dropped here, woken but never polled again.
    }
    assert!(woken(1), "the wake was not passed on");
    match second.as_mut().poll(&mut Context::from_waker(&wakers[1])) {
        Poll::Ready(Ok(msg)) => assert_eq!(&*msg, b"only one"),
        r => panic!("{r:?}"),
    }
    drop(second);
    drop(reader);
    name.assert_no_leftovers();
}
