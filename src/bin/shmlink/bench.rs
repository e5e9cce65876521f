//! `shmlink bench`: a quick local figure, with a Unix socket measured beside it in the same
//! run (Unix only).
//!
//! Every peer runs in a child process, this executable started again with the hidden
//! `bench-peer` subcommand, so each figure is between two processes. A peer says `ready` on
//! its stdout and stops when its stdin closes (the parent finished, or died).
//!
//! - channel round trip: one client calls a 64 B echo, one call at a time (median, p99);
//! - pool bulk: a Writer fills every byte of a 1 MiB buffer and sends it; the Reader
//!   checksums every byte and releases it; the pool has one buffer, so each message is
//!   acknowledged (released) before the next is written;
//! - the socket does the same over one `UnixStream`: 64 B echoed, and 1 MiB written,
//!   checksummed and acknowledged with one byte.

use std::error::Error;
#[cfg(unix)]
use std::io::Read;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use shmlink::{checksum, Client, PoolConfig, Reader, Server, Writer};

type Res<T> = Result<T, Box<dyn Error>>;

/// Bytes per call, each way.
const CALL: usize = 64;
/// Bytes per bulk message.
const MIB: usize = 1 << 20;
/// Longest a figure is measured: it stops early rather than run long on a slow machine.
const BUDGET: Duration = Duration::from_secs(2);
/// Longest a peer may take to say it is ready, or to stop.
const PEER_WAIT: Duration = Duration::from_secs(10);
/// Longest one call, message or acknowledgement may take.
const STEP: Duration = Duration::from_secs(10);

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// Round trips per transport.
    pub(crate) calls: u32,
    /// Bulk messages per transport.
    pub(crate) messages: u32,
}

/// Round-trip times of one transport.
struct Latency {
    median: Duration,
    p99: Duration,
    n: usize,
}

/// Throughput of one transport.
struct Bulk {
    gbs: f64,
    n: u32,
}

/// Runs every figure and prints them.
pub(crate) fn run(opts: Options) -> Res<()> {
    if cfg!(debug_assertions) {
        println!("(a debug build: build with --release for meaningful figures)");
    }
    let name = format!("bench-{}", std::process::id());
    let chan = channel_round_trips(&name, opts.calls)?;
    print_latency("shmlink channel round trip, 64 B", &chan);
    // The socket baseline: std offers Unix-domain sockets on Unix only.
    #[cfg(unix)]
    let sock = socket_round_trips(opts.calls)?;
    #[cfg(unix)]
    print_latency("unix socket round trip, 64 B", &sock);
    let pool = pool_bulk(&name, opts.messages)?;
    print_bulk("shmlink pool bulk, 1 MiB acked one at a time", &pool);
    #[cfg(unix)]
    {
        let sbulk = socket_bulk(opts.messages)?;
        print_bulk("unix socket bulk, 1 MiB acked one at a time", &sbulk);
        let ratio = sock.median.as_secs_f64() / chan.median.as_secs_f64().max(1e-9);
        println!("ratio: round trip {ratio:.1}x faster than the socket (medians)");
        let ratio = pool.gbs / sbulk.gbs.max(1e-9);
        println!("ratio: bulk {ratio:.1}x the socket's throughput");
    }
    Ok(())
}

fn print_latency(what: &str, l: &Latency) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{what}: median {:.2} us, p99 {:.2} us ({} calls)",
        us(l.median),
        us(l.p99),
        l.n
    );
}

fn print_bulk(what: &str, b: &Bulk) {
    println!("{what}: {:.2} GB/s ({} messages)", b.gbs, b.n);
}

/// Median and p99 of `times`.
fn latency(mut times: Vec<Duration>) -> Res<Latency> {
    if times.is_empty() {
        return Err("no round trip measured".into());
    }
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok(Latency {
        median: at(0.5),
        p99: at(0.99),
        n: times.len(),
    })
}

/// Times up to `calls` round trips of `one` (after a short warm-up), within [`BUDGET`].
fn round_trips(calls: u32, mut one: impl FnMut() -> Res<()>) -> Res<Latency> {
    for _ in 0..(calls / 10).clamp(1, 1000) {
        one()?;
    }
    let mut times = Vec::with_capacity(calls as usize);
    let start = Instant::now();
    for _ in 0..calls.max(1) {
        let t = Instant::now();
        one()?;
        times.push(t.elapsed());
        if start.elapsed() > BUDGET {
            break;
        }
    }
    latency(times)
}

/// Sends up to `messages` messages with `one` (after a short warm-up), within [`BUDGET`];
/// `finish` waits until the last one was acknowledged.
fn bulk(
    messages: u32,
    mut one: impl FnMut(u8) -> Res<()>,
    finish: impl FnOnce() -> Res<()>,
) -> Res<Bulk> {
    for i in 0..messages.clamp(1, 8) {
        one(i as u8)?;
    }
    let start = Instant::now();
    let mut n = 0;
    while n < messages.max(1) {
        one(n as u8)?;
        n += 1;
        if start.elapsed() > BUDGET {
            break;
        }
    }
    finish()?;
    let gbs = f64::from(n) * MIB as f64 / start.elapsed().as_secs_f64() / 1e9;
    Ok(Bulk { gbs, n })
}

fn channel_round_trips(name: &str, calls: u32) -> Res<Latency> {
    let mut peer = Peer::start("server", name)?;
    let mut client = Client::connect(name)?;
    let request = [7u8; CALL];
    let l = round_trips(calls, || {
        let n = client.call_with_timeout(
            |req| {
                req[..CALL].copy_from_slice(&request);
                CALL
            },
            |resp| resp.len(),
            STEP,
        )?;
        check_len(n, CALL)
    })?;
    drop(client);
    peer.stop()?;
    Ok(l)
}

fn pool_bulk(name: &str, messages: u32) -> Res<Bulk> {
    let mut peer = Peer::start("reader", name)?;
    let writer = Writer::connect(name)?;
    let b = bulk(
        messages,
        |fill| {
            let mut buf = writer.acquire_timeout(STEP)?;
            buf.set_len(MIB)?;
            buf.fill(fill);
            writer.send(buf).map_err(|e| e.error().to_string())?;
            Ok(())
        },
        // The pool's one buffer is free again once the last message was released.
        || writer.acquire_timeout(STEP).map(drop).map_err(Into::into),
    )?;
    drop(writer);
    peer.stop()?;
    Ok(b)
}

fn check_len(got: usize, want: usize) -> Res<()> {
    if got == want {
        Ok(())
    } else {
        Err(format!("answer of {got} bytes, expected {want}").into())
    }
}

/// The one-buffer pool of the bulk figure: each message is released before the next.
fn bulk_pool_config() -> PoolConfig {
    PoolConfig {
        initial_buffer_size: MIB,
        max_buffer_size: MIB,
        start_buffers: 1,
        max_buffers: 1,
        resize_threshold: 0,
        ..PoolConfig::default()
    }
}

// ------------------------------------------------------------------------ Unix socket
// (Unix only: std has no Unix-domain sockets elsewhere.)

/// The socket the peer `role` listens on, connected.
#[cfg(unix)]
fn socket_peer(role: &str) -> Res<(Peer, std::os::unix::net::UnixStream)> {
    let path =
        std::env::temp_dir().join(format!("shmlink-bench-{}-{role}.sock", std::process::id()));
    let path = path.to_str().ok_or("temporary directory is not UTF-8")?;
    let peer = Peer::start(role, path)?;
    let stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_read_timeout(Some(STEP))?;
    Ok((peer, stream))
}

#[cfg(unix)]
fn socket_round_trips(calls: u32) -> Res<Latency> {
    let (mut peer, mut s) = socket_peer("socket-echo")?;
    let request = [7u8; CALL];
    let mut response = [0u8; CALL];
    let l = round_trips(calls, || {
        s.write_all(&request)?;
        s.read_exact(&mut response)?;
        Ok(())
    })?;
    drop(s);
    peer.stop()?;
    Ok(l)
}

#[cfg(unix)]
fn socket_bulk(messages: u32) -> Res<Bulk> {
    let (mut peer, mut s) = socket_peer("socket-sink")?;
    let mut buf = vec![0u8; MIB];
    let b = bulk(
        messages,
        |fill| {
            buf.fill(fill);
            s.write_all(&buf)?;
            s.read_exact(&mut [0u8])?;
            Ok(())
        },
        || Ok(()),
    )?;
    drop(s);
    peer.stop()?;
    Ok(b)
}

// ------------------------------------------------------------------------------- peers

/// A peer process: this executable running `bench-peer ROLE ARG`.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Peer {
    /// Starts the peer and waits (at most [`PEER_WAIT`]) until it says it is ready.
    fn start(role: &str, arg: &str) -> Res<Peer> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["bench-peer", role, arg])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no pipe from the peer")?;
        let mut peer = Peer { child, stdin };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(PEER_WAIT) {
            Ok(line) if line.trim_end() == "ready" => Ok(peer),
            Ok(line) => {
                peer.kill();
                Err(format!("bench peer {role}: {:?} instead of ready", line.trim_end()).into())
            }
            Err(_) => {
                peer.kill();
                Err(format!("bench peer {role} not ready after {PEER_WAIT:?}").into())
            }
        }
    }

    /// Closes its stdin and waits (at most [`PEER_WAIT`]) for it to exit cleanly.
    fn stop(&mut self) -> Res<()> {
        drop(self.stdin.take());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("bench peer exited with {status}").into())
                };
            }
            if start.elapsed() > PEER_WAIT {
                self.kill();
                return Err("bench peer did not stop".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.stop();
        }
    }
}

/// The peer's side (`shmlink bench-peer ROLE ARG`).
pub(crate) fn peer(role: &str, arg: &str) -> Res<()> {
    match role {
        "server" => {
            let handle = Server::builder(arg).max_message(CALL).create()?.spawn(
                |req: &[u8], resp: &mut [u8]| {
                    resp[..req.len()].copy_from_slice(req);
                    req.len()
                },
            )?;
            ready();
            wait_for_eof();
            handle.shutdown();
        }
        "reader" => {
            let reader = Reader::create(arg, bulk_pool_config())?;
            let stop = stop_on_eof();
            ready();
            let mut sum = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match reader.recv_timeout(Duration::from_millis(50)) {
                    Ok(m) => sum ^= checksum(&m),
                    Err(shmlink::PoolError::Timeout) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            // Nothing left queued, so the pool goes with the Reader rather than wait for
            // the next one.
            while let Ok(Some(m)) = reader.try_recv() {
                sum ^= checksum(&m);
            }
            std::hint::black_box(sum);
        }
        #[cfg(unix)]
        "socket-echo" | "socket-sink" => socket_serve(role, arg)?,
        _ => return Err(format!("unknown bench peer role {role:?}").into()),
    }
    Ok(())
}

/// Serves one connection on the socket `path`: echoes 64 B calls, or checksums 1 MiB
/// messages and acknowledges each with one byte.
#[cfg(unix)]
fn socket_serve(role: &str, path: &str) -> Res<()> {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    // No shared memory to clean up here: exit as soon as the parent is gone.
    let stop = stop_on_eof();
    let socket = path.to_owned();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(socket);
        std::process::exit(0);
    });
    ready();
    let (mut s, _) = listener.accept()?;
    let _ = std::fs::remove_file(path);
    let mut buf = vec![0u8; if role == "socket-echo" { CALL } else { MIB }];
    let mut sum = 0u64;
    while s.read_exact(&mut buf).is_ok() {
        if role == "socket-echo" {
            s.write_all(&buf)?;
        } else {
            sum ^= checksum(&buf);
            s.write_all(&[1])?;
        }
    }
    std::hint::black_box(sum);
    Ok(())
}

fn ready() {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
}

/// Blocks until stdin closes.
fn wait_for_eof() {
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
}

/// A flag set when stdin closes.
fn stop_on_eof() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        wait_for_eof();
        flag.store(true, Ordering::Relaxed);
    });
    stop
}
