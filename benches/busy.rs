//! The channel and the pool on a busy machine: CPU-bound processes ("hogs", two per CPU,
//! started by this bench and killed at its end) compete with both sides, and a Unix-socket
//! round trip is measured beside them in the same run.
//!
//! ```text
//! cargo bench --bench busy
//! ```
//!
//! Placements as in the channel bench, pinned with `sched_setaffinity`: "split" (client or
//! Reader on CPU 0, server or Writer on CPU 1) and "one-cpu" (both on CPU 0); the hogs are
//! pinned two to each CPU.
//!
//! - `busy/<placement>/channel/64`: one 64 B call, default (adaptive) wait on both sides;
//! - `busy/<placement>/pool/64B`: one 64 B message (acquire + fill + send in the Writer,
//!   recv + checksum + release here), the Writer running ahead up to the pool size;
//! - `busy/<placement>/unix-socket/64`: a 64 B length-prefixed echo round trip.
//!
//! A call on a busy CPU costs anywhere from microseconds to a time slice, so the bench also
//! measures the three in alternating turns (`busy/<placement>/paired`, printed) and reports
//! the median per-turn ratio of the channel and the pool to the socket.

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
    use crate::common::{echo_server, median, pin, record, role, say, socket_echo_server, Proc};
    use std::io::{BufRead, Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    use criterion::{BenchmarkId, Criterion};
    use shmlink::{checksum, Client, PoolConfig, Reader, WaitStrategy, Writer};

    const HOGS_PER_CPU: usize = 2;
    const SAMPLES: usize = 10;
    /// Alternating turns of `busy/<placement>/paired`, and what each turn runs.
    const TURNS: usize = 9;
    const TURN_TIME: Duration = Duration::from_millis(300);

    pub(crate) fn main() {
        if let Some((role, args)) = role() {
            child(&role, &args);
            return;
        }
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(SAMPLES)
            .configure_from_args();
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let placements: &[(&str, usize)] = if cpus >= 2 {
            &[("split", 1), ("one-cpu", 0)]
        } else {
            &[("one-cpu", 0)]
        };
        pin(0);
        let hogs: Vec<Proc> = (0..cpus * HOGS_PER_CPU)
            .map(|i| Proc::spawn("hog", &[&(i % cpus).to_string()]))
            .collect();
        let mut report = String::new();
        for &(placement, peer_cpu) in placements {
            report += &placement_benches(&mut c, placement, peer_cpu, hogs.len());
        }
        drop(hogs);
        c.final_summary();
        println!("\n{report}");
    }

    /// The three transports of one placement, then their alternating turns; returns the
    /// report lines.
    fn placement_benches(
        c: &mut Criterion,
        placement: &str,
        peer_cpu: usize,
        hogs: usize,
    ) -> String {
        let pid = std::process::id();
        let cpu = peer_cpu.to_string();
        let name = format!("bench-busy-{placement}-{pid}");
        let mut server = Proc::spawn("server", &[&name, &cpu]);
        server.expect("ready");
        let mut client = Client::connect_timeout(&name, Duration::from_secs(30)).unwrap();

        let pool_name = format!("bench-busy-pool-{placement}-{pid}");
        let reader = Reader::create(&pool_name, pool_config()).unwrap();
        let mut writer = Proc::spawn("writer", &[&pool_name, &cpu]);
        writer.expect("ready");

        let path = std::env::temp_dir().join(format!("shmlink-bench-busy-{placement}-{pid}.sock"));
        let path_s = path.to_str().unwrap().to_owned();
        let mut sock_server = Proc::spawn("socket-server", &[&path_s, &cpu]);
        sock_server.expect("ready");
        let mut sock = UnixStream::connect(&path).unwrap();

        let ids = [
            format!("busy/{placement}/channel/64"),
            format!("busy/{placement}/pool/64B"),
            format!("busy/{placement}/unix-socket/64"),
        ];
        let mut g = c.benchmark_group(format!("busy/{placement}"));
        g.bench_function(BenchmarkId::new("channel", 64), |b| {
            b.iter_custom(|iters| {
                let took = channel_calls(&mut client, iters);
                record(&ids[0], iters, took);
                took
            })
        });
        g.bench_function("pool/64B", |b| {
            b.iter_custom(|iters| {
                let took = pool_messages(&reader, &mut writer, iters);
                record(&ids[1], iters, took);
                took
            })
        });
        g.bench_function(BenchmarkId::new("unix-socket", 64), |b| {
            b.iter_custom(|iters| {
                let took = socket_calls(&mut sock, iters);
                record(&ids[2], iters, took);
                took
            })
        });
        g.finish();

        // Alternating turns: each transport runs for about TURN_TIME (its count sized from
        // its criterion median), then the next.
        let per_turn = |id: &str| {
            let ns = median(id, SAMPLES).unwrap_or(10_000.0).max(100.0);
            ((TURN_TIME.as_nanos() as f64 / ns) as u64).clamp(20, 1_000_000)
        };
        let n = [per_turn(&ids[0]), per_turn(&ids[1]), per_turn(&ids[2])];
        let (mut chan, mut pool, mut sockr) = (Vec::new(), Vec::new(), Vec::new());
        let mut figs = [Vec::new(), Vec::new(), Vec::new()];
        let per = |d: Duration, n: u64| d.as_nanos() as f64 / n as f64;
        for _ in 0..TURNS {
            let ch = per(channel_calls(&mut client, n[0]), n[0]);
            let po = per(pool_messages(&reader, &mut writer, n[1]), n[1]);
            let so = per(socket_calls(&mut sock, n[2]), n[2]);
            chan.push(ch / so);
            pool.push(po / so);
            sockr.push(so);
            for (f, v) in figs.iter_mut().zip([ch, po, so]) {
                f.push(v);
            }
        }
        drop(sock);
        drop(sock_server);
        let _ = std::fs::remove_file(&path);
        drop(writer);
        drop(reader);
        drop(client);
        drop(server);

        let med = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            (v[v.len() / 2], v[0], v[v.len() - 1])
        };
        let us = |ns: f64| ns / 1000.0;
        let [mut fc, mut fp, mut fs] = figs;
        let ((c, _, _), (p, _, _), (s, _, _)) = (med(&mut fc), med(&mut fp), med(&mut fs));
        let (cr, crmin, crmax) = med(&mut chan);
        let (pr, prmin, prmax) = med(&mut pool);
        format!(
            "busy/{placement}/paired ({hogs} hogs, {TURNS} turns): channel/64 {:.1} us, pool/64B {:.1} us, \
             unix-socket/64 {:.1} us (medians); median ratio to the socket: channel {cr:.2}x \
             (min {crmin:.2}x, max {crmax:.2}x), pool {pr:.2}x (min {prmin:.2}x, max {prmax:.2}x)\n",
            us(c),
            us(p),
            us(s),
        )
    }

    /// The pool as the pool bench sizes it for 64 B messages.
    fn pool_config() -> PoolConfig {
        PoolConfig {
            initial_buffer_size: 4096,
            max_buffer_size: 4096,
            start_buffers: 64,
            max_buffers: 64,
            min_buffers: Some(64),
            resize_threshold: 0,
            ..PoolConfig::default()
        }
    }

    fn channel_calls(client: &mut Client, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            let n = client
                .call_with(
                    |buf| {
                        buf[0] = 1;
                        buf[63] = 2;
                        64
                    },
                    |resp| resp.len(),
                )
                .unwrap();
            assert_eq!(n, 64);
        }
        start.elapsed()
    }

    /// `iters` 64 B messages from the Writer child, received and checksummed here.
    fn pool_messages(reader: &Reader, writer: &mut Proc, iters: u64) -> Duration {
        let start = Instant::now();
        writer.send(&format!("send {iters}"));
        let mut sum = 0u64;
        for _ in 0..iters {
            let m = reader.recv_timeout(Duration::from_secs(60)).unwrap();
            sum ^= checksum(&m);
        }
        let took = start.elapsed();
        std::hint::black_box(sum);
        took
    }

    fn socket_calls(sock: &mut UnixStream, iters: u64) -> Duration {
        let mut buf = [7u8; 68];
        buf[..4].copy_from_slice(&64u32.to_le_bytes());
        let mut back = [0u8; 68];
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
            // hog <cpu>: spin until killed (or until the bench dies).
            "hog" => {
                // SAFETY: prctl(PR_SET_PDEATHSIG) has no memory-safety preconditions.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                pin(args[0].parse().unwrap());
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            // server <name> <cpu>: 64 B echo, default wait, until stdin closes.
            "server" => echo_server(
                &args[0],
                args[1].parse().unwrap(),
                4,
                WaitStrategy::Adaptive,
            ),
            // writer <pool> <cpu>: on "send K", send K 64 B messages.
            "writer" => {
                pin(args[1].parse().unwrap());
                let w = Writer::connect(&args[0]).unwrap();
                say("ready");
                for line in std::io::stdin().lock().lines() {
                    let line = line.unwrap();
                    let Some(k) = line.strip_prefix("send ") else {
                        break;
                    };
                    for i in 0..k.parse::<u64>().unwrap() {
                        let mut buf = w.acquire_timeout(Duration::from_secs(60)).unwrap();
                        buf.set_len(64).unwrap();
                        buf.fill(i as u8);
                        w.send(buf).unwrap();
                    }
                }
            }
            // socket-server <path> <cpu>: length-prefixed echo, one connection.
            "socket-server" => {
                pin(args[1].parse().unwrap());
                socket_echo_server(&args[0], 4096);
            }
            _ => panic!("unknown role {role}"),
        }
    }
}
