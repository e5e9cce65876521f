//! Benchmarks of the request channel across real processes, with a Unix-socket echo beside it.
//!
//! ```text
//! cargo bench --bench channel
//! ```
//!
//! The bench re-runs its own binary as the server (and load clients) it needs, chosen by the
//! `SHMLINK_BENCH_ROLE` environment variable. Two placements, pinned with
//! `sched_setaffinity`: "split" (client on CPU 0, server on CPU 1) and "one-cpu" (both on
//! CPU 0).
//!
//! - `rtt/<placement>/<transport>/<size>`: one round trip, measured by the client with
//!   `iter_custom`; transports: the channel with the default (adaptive) wait, two processes
//!   spinning on two atomics that hand a 64-byte request and response line across (the floor,
//!   split only), and a length-prefixed Unix-socket echo.
//! - `aggregate/<placement>/<n> clients`: calls/s of n client processes calling at once
//!   (64 B), each pinned like the client of its placement; `aggregate/<placement>/paired`
//!   (printed): 16 clients against one in alternating turns, the median throughput ratio.

#[cfg(not(target_os = "linux"))]
fn main() {}

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(target_os = "linux")]
mod common;

#[cfg(target_os = "linux")]
mod linux {
    use crate::common::{echo_server, pin, role, say, socket_echo_server, Proc};
    use std::io::{BufRead, Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    use criterion::{BenchmarkId, Criterion, Throughput};
    use std::sync::atomic::{AtomicU32, Ordering};

    use shmlink::{Client, Segment, WaitStrategy};

    const MAX_MESSAGE: usize = 64 * 1024;
    const SIZES: [usize; 3] = [64, 4096, 64 * 1024];
    /// Tells the spin-floor child to exit (even: the ping values are odd).
    const SPIN_STOP: u32 = 2;

    pub(crate) fn main() {
        if let Some((role, args)) = role() {
            child(&role, &args);
            return;
        }
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(20)
            .configure_from_args();
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let placements: &[(&str, usize, usize)] = if cpus >= 2 {
            &[("split", 0, 1), ("one-cpu", 0, 0)]
        } else {
            &[("one-cpu", 0, 0)]
        };
        for &(placement, client_cpu, server_cpu) in placements {
            pin(client_cpu);
            round_trips(&mut c, placement, server_cpu);
            aggregate(&mut c, placement, client_cpu, server_cpu);
        }
        c.final_summary();
    }

    fn round_trips(c: &mut Criterion, placement: &str, server_cpu: usize) {
        let mut g = c.benchmark_group(format!("rtt/{placement}"));
        let pid = std::process::id();
        // The channel, default (adaptive) wait on both sides.
        let name = format!("bench-rtt-{placement}-{pid}");
        let mut server = Proc::spawn("server", &[&name, &server_cpu.to_string(), "adaptive"]);
        server.expect("ready");
        let mut client = Client::connect_timeout(&name, Duration::from_secs(5)).unwrap();
        // The floor of this placement: two processes spinning on two atomics in a segment
        // (meaningless on one CPU, where a spinner only keeps its peer from running). Both
        // servers stay up; the one not being measured is stopped (SIGSTOP), so the two
        // can be measured in turns over the same minutes (see `paired`).
        let floor_seg = (placement == "split").then(|| {
            let name = format!("bench-spin-{placement}-{pid}");
            let seg = Segment::builder(&name).size(FLOOR_BYTES).create().unwrap();
            let mut spin = Proc::spawn("spin-server", &[&name, &server_cpu.to_string()]);
            spin.expect("ready");
            spin.pause(true);
            (seg, spin)
        });
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            g.bench_function(BenchmarkId::new("channel", size), |b| {
                b.iter_custom(|iters| channel_calls(&mut client, size, iters))
            });
        }
        if let Some((seg, spin)) = &floor_seg {
            let f = floor(seg);
            let mut k = 0u32;
            server.pause(true);
            spin.pause(false);
            g.throughput(Throughput::Bytes(64));
            g.bench_function("raw-spin-floor", |b| {
                b.iter_custom(|iters| floor_calls(&f, &mut k, iters))
            });
            paired(&f, &mut k, &mut client, &server, spin);
            f.ping.store(SPIN_STOP, Ordering::Release);
        }
        drop(floor_seg);
        drop(client);
        drop(server);
        // The Unix-socket echo.
        let path = std::env::temp_dir().join(format!("shmlink-bench-{placement}-{pid}.sock"));
        let path_s = path.to_str().unwrap().to_owned();
        let mut server = Proc::spawn("socket-server", &[&path_s, &server_cpu.to_string()]);
        server.expect("ready");
        let mut sock = UnixStream::connect(&path).unwrap();
        for size in [64, 4096] {
            g.throughput(Throughput::Bytes(size as u64));
            g.bench_function(BenchmarkId::new("unix-socket", size), |b| {
                b.iter_custom(|iters| socket_calls(&mut sock, size, iters))
            });
        }
        drop(sock);
        drop(server);
        let _ = std::fs::remove_file(&path);
        g.finish();
    }

    fn aggregate(c: &mut Criterion, placement: &str, client_cpu: usize, server_cpu: usize) {
        let mut g = c.benchmark_group(format!("aggregate/{placement}"));
        g.throughput(Throughput::Elements(1));
        let name = format!("bench-agg-{placement}-{}", std::process::id());
        let mut server = Proc::spawn("server", &[&name, &server_cpu.to_string(), "adaptive"]);
        server.expect("ready");
        // All 16 connect once; a run with n clients drives the first n (the others wait on
        // their stdin, holding a slot nobody serves: like idle clients of a real server).
        let mut clients: Vec<Proc> = (0..16)
            .map(|_| Proc::spawn("load", &[&name, &client_cpu.to_string()]))
            .collect();
        for cl in &mut clients {
            cl.expect("ready");
        }
        for n in [1usize, 4, 16] {
            g.bench_function(BenchmarkId::new("clients", n), |b| {
                b.iter_custom(|iters| load_calls(&mut clients[..n], iters))
            });
        }
        aggregate_paired(placement, &mut clients);
        drop(clients);
        drop(server);
        g.finish();
    }

    /// Time per call of `clients` calling at once, `iters` calls in all: calls/s = 1 / this.
    fn load_calls(clients: &mut [Proc], iters: u64) -> Duration {
        let n = clients.len() as u64;
        let per = iters.div_ceil(n);
        let start = Instant::now();
        for cl in clients.iter_mut() {
            cl.send(&format!("run {per}"));
        }
        for cl in clients.iter_mut() {
            cl.expect("done");
        }
        start.elapsed().mul_f64(iters as f64 / (per * n) as f64)
    }

    /// 16 clients against one, in alternating turns of 100 ms or so: as with the round trip,
    /// only a ratio taken over the same minutes means something on this VM (the host moves
    /// its vCPUs, and a call costs 3x more in some minutes than in others, for one client and
    /// sixteen alike). Prints the median of the per-turn throughput ratios.
    fn aggregate_paired(placement: &str, clients: &mut [Proc]) {
        const TURNS: usize = 11;
        let iters: u64 = if placement == "split" {
            400_000
        } else {
            40_000
        };
        let mut ratios = Vec::new();
        for _ in 0..TURNS {
            let one = load_calls(&mut clients[..1], iters);
            let all = load_calls(clients, iters);
            ratios.push(one.as_secs_f64() / all.as_secs_f64());
        }
        ratios.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "aggregate/{placement}/paired: calls/s of 16 clients / 1 client, median of {TURNS} \
             turns {:.2}x (min {:.2}x, max {:.2}x)",
            ratios[TURNS / 2],
            ratios[0],
            ratios[TURNS - 1],
        );
    }

    /// The channel's 64-byte round trip and the spin floor measured in turns, 100 ms each,
    /// the other's server stopped: on a VM whose vCPUs the host moves between cores (the floor
    /// here is 0.1 us on some minutes, 0.45 us on others) only a ratio taken over the same
    /// minutes means something. Prints the median of the per-turn ratios.
    fn paired(f: &Floor<'_>, k: &mut u32, client: &mut Client, server: &Proc, spin: &Proc) {
        const TURNS: usize = 21;
        const ITERS: u64 = 200_000;
        let (mut ratios, mut chan, mut flo) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..TURNS {
            spin.pause(true);
            server.pause(false);
            channel_calls(client, 64, ITERS / 20); // wake the worker up
            let c = channel_calls(client, 64, ITERS).as_nanos() as f64 / ITERS as f64;
            server.pause(true);
            spin.pause(false);
            floor_calls(f, k, ITERS / 20);
            let s = floor_calls(f, k, ITERS).as_nanos() as f64 / ITERS as f64;
            ratios.push(c / s);
            chan.push(c);
            flo.push(s);
        }
        server.pause(false);
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        println!(
            "rtt/split/paired: channel/64 {:.1} ns, raw-spin-floor {:.1} ns (medians of {TURNS} turns); \
             median ratio channel/floor {:.2}x (min {:.2}x, max {:.2}x)",
            med(&mut chan),
            med(&mut flo),
            med(&mut ratios),
            ratios[0],
            ratios[TURNS - 1],
        );
    }

    /// `iters` round trips of the spin floor: a 64-byte request line and response line
    /// handed across by two spinning atomics.
    fn floor_calls(f: &Floor<'_>, k: &mut u32, iters: u64) -> Duration {
        let mut buf = [7u8; 64];
        let start = Instant::now();
        for _ in 0..iters {
            *k = k.wrapping_add(2) | 1; // odd: never 0 (idle) or SPIN_STOP
            buf[0] = *k as u8;
            // SAFETY: between handshakes the request line is ours to write.
            unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), f.req, 64) };
            f.ping.store(*k, Ordering::Release);
            while f.pong.load(Ordering::Acquire) != *k {
                std::hint::spin_loop();
            }
            // SAFETY: after the pong the response line is ours to read.
            unsafe { std::ptr::copy_nonoverlapping(f.resp, buf.as_mut_ptr(), 64) };
            assert_eq!(buf[0], *k as u8);
        }
        start.elapsed()
    }

    fn channel_calls(client: &mut Client, size: usize, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            let n = client
                .call_with(
                    |buf| {
                        buf[0] = 1;
                        buf[size - 1] = 2;
                        size
                    },
                    |resp| resp.len(),
                )
                .unwrap();
            assert_eq!(n, size);
        }
        start.elapsed()
    }

    fn socket_calls(sock: &mut UnixStream, size: usize, iters: u64) -> Duration {
        let mut buf = vec![7u8; size + 4];
        buf[..4].copy_from_slice(&(size as u32).to_le_bytes());
        let mut back = vec![0u8; size + 4];
        let start = Instant::now();
        for _ in 0..iters {
            sock.write_all(&buf).unwrap();
            sock.read_exact(&mut back).unwrap();
        }
        start.elapsed()
    }

    /// Child roles.
    fn child(role: &str, args: &[String]) {
        match role {
            // server <name> <cpu> <adaptive|spin>: echo until stdin closes.
            "server" => {
                let strategy = if args[2] == "spin" {
                    WaitStrategy::Spin
                } else {
                    WaitStrategy::Adaptive
                };
                echo_server(&args[0], args[1].parse().unwrap(), 32, strategy);
            }
            // spin-server <name> <cpu>: for each new ping, copy the 64-byte request to the
            // response and answer with pong; stop when ping is SPIN_STOP.
            "spin-server" => {
                pin(args[1].parse().unwrap());
                let seg = Segment::open(&args[0]).unwrap();
                let f = floor(&seg);
                say("ready");
                let mut seen = 0;
                loop {
                    let v = f.ping.load(Ordering::Acquire);
                    if v == SPIN_STOP {
                        break;
                    }
                    if v == seen {
                        std::hint::spin_loop();
                        continue;
                    }
                    seen = v;
                    // SAFETY: between ping and pong both lines are ours.
                    unsafe { std::ptr::copy_nonoverlapping(f.req.cast_const(), f.resp, 64) };
                    f.pong.store(v, Ordering::Release);
                }
            }
            // socket-server <path> <cpu>: length-prefixed echo, one connection.
            "socket-server" => {
                pin(args[1].parse().unwrap());
                socket_echo_server(&args[0], MAX_MESSAGE);
            }
            // load <name> <cpu>: on "run K", make K 64-byte calls, then say "done".
            "load" => {
                pin(args[1].parse().unwrap());
                let mut client = Client::connect_timeout(&args[0], Duration::from_secs(5)).unwrap();
                say("ready");
                let stdin = std::io::stdin();
                for line in stdin.lock().lines() {
                    let line = line.unwrap();
                    let Some(k) = line.strip_prefix("run ") else {
                        break;
                    };
                    channel_calls(&mut client, 64, k.parse().unwrap());
                    say("done");
                }
            }
            _ => panic!("unknown role {role}"),
        }
    }

    /// Bytes of the spin floor's segment: ping, pong, request, response, a line each.
    const FLOOR_BYTES: usize = 4 * 64;

    /// The spin floor's shared lines: the same work as a 64-byte round trip of the channel
    /// (a request line and a response line cross), signalled by two spinning atomics.
    struct Floor<'a> {
        ping: &'a AtomicU32,
        pong: &'a AtomicU32,
        req: *mut u8,
        resp: *mut u8,
    }

    fn floor(seg: &Segment) -> Floor<'_> {
        assert!(seg.len() >= FLOOR_BYTES);
        let base = seg.as_ptr();
        // SAFETY: the data region is 64-aligned and FLOOR_BYTES long, lives as long as `seg`;
        // the first two lines are only accessed through these atomics.
        unsafe {
            Floor {
                ping: &*base.cast::<AtomicU32>(),
                pong: &*base.add(64).cast::<AtomicU32>(),
                req: base.add(128),
                resp: base.add(192),
            }
        }
    }
}
