//! One command that shows what shmlink does, with real processes:
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! The demo re-runs its own binary as the child processes it needs.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::sync::mpsc;

use shmlink::{
    checksum, AppError, CallInfo, Client, ConnectionEvent, EventPair, Locked, Mutex, PoolConfig,
    Reader, Segment, Server, Writer,
};

type DynResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const ROUND_TRIPS: usize = 20_000;
const CLIENTS: usize = 4;
const CALLS: usize = 50_000;
const POOL_SMALL: usize = 200_000;
const POOL_BULK: usize = 2048;

fn main() {
    // Report errors with their message (Display), not their Debug form.
    if let Err(e) = run() {
        eprintln!("demo: {e}");
        std::process::exit(1);
    }
}

fn run() -> DynResult {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        return child(&args[2], &args[3]);
    }
    let name = format!("demo-{}", std::process::id());
    println!(
        "shmlink demo (pid {}), service names start with {name:?}\n",
        std::process::id()
    );
    building_blocks(&name)?;
    request_channel(&name)?;
    buffer_pool(&name)?;
    println!("\ndone: every object was removed, nothing is left in shared memory.");
    Ok(())
}

/// Starts this binary again as `role`.
fn spawn(role: &str, name: &str) -> DynResult<(Child, BufReader<ChildStdout>)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--child", role, name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    Ok((child, out))
}

fn read_line(out: &mut BufReader<ChildStdout>) -> DynResult<String> {
    let mut line = String::new();
    if out.read_line(&mut line)? == 0 {
        return Err("child process exited early".into());
    }
    Ok(line.trim_end().to_owned())
}

fn say(line: &str) -> DynResult {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    Ok(out.flush()?)
}

fn child(role: &str, name: &str) -> DynResult {
    match role {
        "pong" => {
            let pair = EventPair::open(name)?;
            let seg = Segment::open(name)?;
            say("ready")?;
            loop {
                pair.exec().wait();
                // SAFETY: the first byte of the data region is the stop flag; the exec/done
                // handshake orders our accesses with the parent's.
                if unsafe { seg.as_ptr().read_volatile() } != 0 {
                    return Ok(());
                }
                pair.done().set();
            }
        }
        "locker" => {
            let mutex = Mutex::open(name)?;
            let _guard = mutex.lock()?;
            say("locked")?;
            // Hold the lock until we are killed.
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            Ok(())
        }
        "client" => {
            let mut client = Client::connect_timeout(name, Duration::from_secs(10))?;
            let me = std::process::id().to_le_bytes();
            let mut times = Vec::with_capacity(CALLS);
            for i in 0..CALLS as u32 {
                let t = Instant::now();
                // Zero copy: the request is written and the answer checked in shared memory.
                // The server answers with the request and, after it, the pid it saw calling.
                let ok = client.call_with(
                    |req| {
                        req[..4].copy_from_slice(&me);
                        req[4..8].copy_from_slice(&i.to_le_bytes());
                        60
                    },
                    |resp| {
                        resp.len() == 64
                            && resp[..8] == [me, i.to_le_bytes()].concat()[..]
                            && resp[60..] == me
                    },
                )?;
                times.push(t.elapsed());
                if !ok {
                    return Err("an answer did not match its request".into());
                }
            }
            let ns: Vec<String> = times.iter().map(|t| t.as_nanos().to_string()).collect();
            say(&ns.join(" "))?;
            // Then wait for the server's word before leaving.
            let note = client.recv_notification_timeout(Duration::from_secs(10))?;
            say(&String::from_utf8_lossy(&note))
        }
        "writer" => {
            let writer = Writer::connect_timeout(name, Duration::from_secs(10))?;
            // Small messages: a sequence number in 64 bytes, written in place.
            for i in 0..POOL_SMALL as u64 {
                let mut buf = writer.acquire_timeout(Duration::from_secs(5))?;
                buf.set_len(64)?;
                buf[..8].copy_from_slice(&i.to_le_bytes());
                writer.send(buf)?;
            }
            // Bulk: every byte of every 1 MiB buffer written in place.
            for i in 0..POOL_BULK {
                let mut buf = writer.acquire_timeout(Duration::from_secs(5))?;
                buf.set_len(1 << 20)?;
                buf.fill(i as u8);
                writer.send(buf)?;
            }
            Ok(())
        }
        _ => Err(format!("unknown role {role}").into()),
    }
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    format!(
        "p50 {:.2} us, p90 {:.2} us, p99 {:.2} us, max {:.2} us",
        p(0.5),
        p(0.9),
        p(0.99),
        p(1.0)
    )
}

/// Segment + mutex + exec/done pair, ping-pong with a child process, owner death.
fn building_blocks(name: &str) -> DynResult {
    println!("[1] building blocks: a segment, an exec/done event pair, an owner-death-safe mutex");
    let seg = Segment::builder(name).size(64).create()?;
    let pair = EventPair::create(name)?;
    let mutex = Mutex::create(name)?;
    println!(
        "    created {} ({} data bytes), its event pair and mutex",
        seg.os_name(),
        seg.len()
    );

    let (mut child, mut out) = spawn("pong", name)?;
    if read_line(&mut out)? != "ready" {
        return Err("child did not start".into());
    }
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let t = Instant::now();
        pair.exec().set();
        if !pair.done().wait_timeout(Duration::from_secs(5)) {
            return Err("the child stopped answering".into());
        }
        samples.push(t.elapsed());
    }
    // SAFETY: the child reads the stop flag only after the exec signal below.
    unsafe { seg.as_ptr().write_volatile(1) };
    pair.exec().set();
    child.wait()?;
    println!(
        "    {ROUND_TRIPS} exec/done round trips with a child process: {}",
        percentiles(samples)
    );

    let (mut child, mut out) = spawn("locker", name)?;
    if read_line(&mut out)? != "locked" {
        return Err("child did not lock".into());
    }
    child.kill()?; // SIGKILL on Unix, TerminateProcess on Windows: no unlock happens
    child.wait()?;
    let t = Instant::now();
    match mutex.lock_timeout(Duration::from_secs(5))? {
        Locked::OwnerDied(_guard) => {
            println!("    a child locked the mutex and was killed: the next lock got it in {:?} and was told the owner died", t.elapsed())
        }
        Locked::Acquired(_guard) => {
            println!("    unexpected: the lock came back without an owner-death report")
        }
    }
    Ok(())
}

/// A server here (two workers), several client processes calling it at once.
fn request_channel(name: &str) -> DynResult {
    println!("\n[2] request channel: a server here, {CLIENTS} client processes calling it at once");
    let (tx, events) = mpsc::channel();
    let server = Server::builder(name)
        .slots(16)
        .max_message(4096)
        .on_connection(move |event: ConnectionEvent| {
            let _ = tx.send(event);
        })
        .workers(2)
        .create()?;
    // The handler sees who calls: it appends the caller's pid to the request it echoes.
    let handle = server.spawn(
        |call: &CallInfo, req: &[u8], resp: &mut [u8]| -> Result<usize, AppError> {
            let n = req.len();
            resp[..n].copy_from_slice(req);
            resp[n..n + 4].copy_from_slice(&call.pid().to_le_bytes());
            Ok(n + 4)
        },
    )?;
    let start = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(spawn("client", name)?);
    }
    let mut ids = HashMap::new();
    let mut samples = Vec::with_capacity(CLIENTS * CALLS);
    for (child, out) in &mut clients {
        for ns in read_line(out)?.split(' ') {
            samples.push(Duration::from_nanos(ns.parse()?));
        }
        // The client waits for a notification; it connected long ago, so the server's
        // connection event (within ~20 ms of the claim) has come.
        while !ids.contains_key(&child.id()) {
            if let ConnectionEvent::Connected { id, pid } =
                events.recv_timeout(Duration::from_secs(5))?
            {
                ids.insert(pid, id);
            }
        }
        handle.notify(ids[&child.id()], b"thanks, you may go")?;
        let said = read_line(out)?;
        child.wait()?;
        println!(
            "    client {} (pid {}) made {CALLS} calls, was notified {said:?} and left",
            ids[&child.id()],
            child.id()
        );
    }
    let took = start.elapsed();
    let mut left = Vec::new();
    while left.len() < CLIENTS {
        if let ConnectionEvent::Disconnected { reason, .. } =
            events.recv_timeout(Duration::from_secs(5))?
        {
            left.push(format!("{reason:?}"));
        }
    }
    println!("    the server saw them leave: {}", left.join(", "));
    handle.shutdown();
    println!(
        "    {} calls (60 B asked, 64 B answered), every answer checked: {:.0} calls/s in all (process start included)",
        samples.len(),
        samples.len() as f64 / took.as_secs_f64()
    );
    println!("    round trips: {}", percentiles(samples));
    Ok(())
}

/// A Reader here, a Writer in a child process: small messages, then 1 MiB buffers.
fn buffer_pool(name: &str) -> DynResult {
    println!("\n[3] buffer pool: a Reader here, a Writer in a child process, zero copy");
    let config = PoolConfig {
        initial_buffer_size: 1 << 20,
        max_buffer_size: 1 << 20,
        start_buffers: 8,
        max_buffers: 16,
        min_buffers: Some(4),
        ..PoolConfig::default()
    };
    let reader = Reader::create(name, config)?;
    let (mut child, _out) = spawn("writer", name)?;

    let first = reader.recv_timeout(Duration::from_secs(10))?;
    let start = Instant::now();
    drop(first);
    for expected in 1..POOL_SMALL as u64 {
        let buf = reader.recv_timeout(Duration::from_secs(5))?;
        let seq = u64::from_le_bytes(buf[..8].try_into()?);
        if seq != expected {
            return Err(format!("message {seq} arrived when {expected} was due").into());
        }
    }
    let small = start.elapsed();
    println!(
        "    {POOL_SMALL} x 64 B messages in order: {:.2} us each (acquire + write + send + recv + release)",
        small.as_secs_f64() * 1e6 / POOL_SMALL as f64
    );

    let start = Instant::now();
    let mut sum = 0u64;
    for _ in 0..POOL_BULK {
        let buf = reader.recv_timeout(Duration::from_secs(5))?;
        sum = sum.wrapping_add(checksum(&buf));
    }
    let bulk = start.elapsed();
    child.wait()?;
    println!(
        "    {POOL_BULK} x 1 MiB buffers, every byte written by the child and checksummed here: {:.1} GB/s (checksum {sum:x})",
        (POOL_BULK << 20) as f64 / bulk.as_secs_f64() / 1e9
    );
    let stats = reader.stats()?;
    println!(
        "    pool now: {} buffers ({} free, {} queued)",
        stats.buffers, stats.free, stats.queued
    );
    Ok(())
}
