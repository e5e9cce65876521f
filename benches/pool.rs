//! Buffer pool benchmarks, the Writer in a real child process (this binary started again
//! with a role), the Reader here; split CPUs (Reader on CPU 0, Writer on CPU 1) when the
//! machine has two:
//!
//! * `pool/64B`: per-message cost of acquire + fill + send + recv + checksum + release, with
//!   the writer running ahead up to the pool size;
//! * `pool/1MiB`, `pool/16MiB`: throughput, the writer fills every byte of each buffer, the
//!   reader reads (checksums) every byte, several buffers in flight;
//! * beside them, in the same run: in-process `memcpy + checksum` of the same sizes, and a
//!   Unix socket carrying the same messages (writer fills, reader reads + checksums);
//! * `read_view/{in-place,copy_to}/<size>`: checksumming a received message where it lies
//!   against copying it out first with `ReadBuf::copy_to` (the view for untrusted Writers).
//!
//! `cargo bench --bench pool`; prints a table at the end (also written to
//! `target/shmlink-bench-pool.md`).

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {}

#[cfg(target_os = "linux")]
mod common;

#[cfg(target_os = "linux")]
mod linux {
    use crate::common::{median, pin, record};
    use std::collections::HashMap;
    use std::io::{BufRead, Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::process::{Child, ChildStdin, Command, Stdio};
    use std::time::{Duration, Instant};

    use criterion::{Criterion, Throughput};
    use shmlink::{checksum, PoolConfig, Reader, Writer};

    const ROLE: &str = "SHMLINK_BENCH_POOL_ROLE";
    const SAMPLES: usize = 10;
    const SIZES: [(&str, usize); 3] = [("64B", 64), ("1MiB", 1 << 20), ("16MiB", 16 << 20)];

    /// The writer process: runs commands from stdin, one per line:
    /// `pool NAME N SIZE` or `sock PATH N SIZE`: send N messages of SIZE bytes, every byte
    /// written.
    fn child() {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
            pin(1);
        }
        let mut writers: HashMap<String, Writer> = HashMap::new();
        let mut socks: HashMap<String, UnixStream> = HashMap::new();
        let mut scratch = Vec::new();
        for line in std::io::stdin().lock().lines() {
            let line = line.unwrap();
            let f: Vec<&str> = line.split_whitespace().collect();
            let (n, size): (u64, usize) = (f[2].parse().unwrap(), f[3].parse().unwrap());
            match f[0] {
                "pool" => {
                    let w = writers
                        .entry(f[1].to_owned())
                        .or_insert_with(|| Writer::connect(f[1]).unwrap());
                    for i in 0..n {
                        let mut buf = w.acquire_timeout(Duration::from_secs(30)).unwrap();
                        buf.set_len(size).unwrap();
                        buf.fill(i as u8);
                        w.send(buf).unwrap();
                    }
                }
                "sock" => {
                    let s = socks
                        .entry(f[1].to_owned())
                        .or_insert_with(|| UnixStream::connect(f[1]).unwrap());
                    scratch.resize(size, 0);
                    for i in 0..n {
                        scratch.fill(i as u8);
                        s.write_all(&scratch).unwrap();
                    }
                }
                _ => unreachable!(),
            }
        }
    }

    struct Peer {
        child: Child,
        stdin: ChildStdin,
    }

    impl Peer {
        fn start() -> Peer {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .env(ROLE, "writer")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let stdin = child.stdin.take().unwrap();
            Peer { child, stdin }
        }

        fn run(&mut self, cmd: &str) {
            writeln!(self.stdin, "{cmd}").unwrap();
            self.stdin.flush().unwrap();
        }
    }

    impl Drop for Peer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn pool_config(size: usize) -> PoolConfig {
        let buffers = if size <= 4096 {
            64
        } else if size <= 1 << 20 {
            8
        } else {
            4
        };
        PoolConfig {
            initial_buffer_size: size.max(4096),
            max_buffer_size: size.max(4096),
            start_buffers: buffers,
            max_buffers: buffers,
            min_buffers: Some(buffers),
            resize_threshold: 0,
            ..PoolConfig::default()
        }
    }

    fn bench_pool(c: &mut Criterion, peer: &mut Peer) {
        let mut g = c.benchmark_group("pool");
        for (label, size) in SIZES {
            let name = format!("bench-pool-{}-{label}", std::process::id());
            let reader = Reader::create(&name, pool_config(size)).unwrap();
            g.throughput(if size <= 4096 {
                Throughput::Elements(1)
            } else {
                Throughput::Bytes(size as u64)
            });
            let id = format!("pool/{label}");
            g.bench_function(label, |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    peer.run(&format!("pool {name} {iters} {size}"));
                    let mut sum = 0u64;
                    for _ in 0..iters {
                        let m = reader.recv_timeout(Duration::from_secs(30)).unwrap();
                        sum ^= checksum(&m);
                    }
                    let took = start.elapsed();
                    std::hint::black_box(sum);
                    record(&id, iters, took);
                    took
                })
            });
        }
        g.finish();
    }

    fn bench_memcpy(c: &mut Criterion) {
        let mut g = c.benchmark_group("memcpy_checksum");
        for (label, size) in SIZES {
            let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let mut dst = vec![0u8; size];
            g.throughput(if size <= 4096 {
                Throughput::Elements(1)
            } else {
                Throughput::Bytes(size as u64)
            });
            let id = format!("memcpy_checksum/{label}");
            g.bench_function(label, |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    let mut sum = 0u64;
                    for _ in 0..iters {
                        dst.copy_from_slice(std::hint::black_box(&src));
                        sum ^= checksum(std::hint::black_box(&dst));
                    }
                    let took = start.elapsed();
                    std::hint::black_box(sum);
                    record(&id, iters, took);
                    took
                })
            });
        }
        g.finish();
    }

    fn bench_socket(c: &mut Criterion, peer: &mut Peer) {
        let path =
            std::env::temp_dir().join(format!("shmlink-bench-pool-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let path_s = path.to_str().unwrap().to_owned();
        peer.run(&format!("sock {path_s} 0 1"));
        let (mut conn, _) = listener.accept().unwrap();
        let mut g = c.benchmark_group("unix_socket");
        for (label, size) in SIZES {
            let mut buf = vec![0u8; size];
            g.throughput(if size <= 4096 {
                Throughput::Elements(1)
            } else {
                Throughput::Bytes(size as u64)
            });
            let id = format!("unix_socket/{label}");
            g.bench_function(label, |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    peer.run(&format!("sock {path_s} {iters} {size}"));
                    let mut sum = 0u64;
                    for _ in 0..iters {
                        conn.read_exact(&mut buf).unwrap();
                        sum ^= checksum(&buf);
                    }
                    let took = start.elapsed();
                    std::hint::black_box(sum);
                    record(&id, iters, took);
                    took
                })
            });
        }
        g.finish();
        let _ = std::fs::remove_file(&path);
    }

    pub(crate) fn main() {
        if std::env::var(ROLE).is_ok() {
            child();
            return;
        }
        if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
            pin(0);
        }
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3))
            .sample_size(SAMPLES)
            .configure_from_args();
        let mut peer = Peer::start();
        bench_pool(&mut c, &mut peer);
        bench_memcpy(&mut c);
        bench_socket(&mut c, &mut peer);
        drop(peer);
        bench_read_view(&mut c);
        c.final_summary();
        report();
    }

    /// What the copying view costs: one received message, read in place or copied out.
    fn bench_read_view(c: &mut Criterion) {
        let mut g = c.benchmark_group("read_view");
        for (label, size) in SIZES {
            let name = format!("bench-view-{}-{label}", std::process::id());
            let reader = Reader::create(&name, pool_config(size)).unwrap();
            let writer = Writer::connect(&name).unwrap();
            let mut buf = writer.acquire().unwrap();
            buf.extend_from_slice(&vec![0x5a; size]).unwrap();
            writer.send(buf).unwrap();
            let msg = reader.recv_timeout(Duration::from_secs(5)).unwrap();
            let mut copy = vec![0u8; size];
            g.throughput(Throughput::Bytes(size as u64));
            g.bench_function(format!("in-place/{label}"), |b| {
                b.iter(|| checksum(std::hint::black_box(&msg[..])))
            });
            g.bench_function(format!("copy_to/{label}"), |b| {
                b.iter(|| {
                    msg.copy_to(&mut copy);
                    checksum(std::hint::black_box(&copy))
                })
            });
        }
        g.finish();
    }

    fn report() {
        let get = |id: &str| median(id, SAMPLES);
        let mut out = String::from(
            "| size | pool | memcpy+checksum (in-process) | Unix socket | pool vs memcpy+checksum | pool vs socket |\n|---|---:|---:|---:|---:|---:|\n",
        );
        for (label, size) in SIZES {
            let (Some(p), Some(m), Some(s)) = (
                get(&format!("pool/{label}")),
                get(&format!("memcpy_checksum/{label}")),
                get(&format!("unix_socket/{label}")),
            ) else {
                continue;
            };
            let fmt = |ns: f64| {
                if size <= 4096 {
                    format!("{:.3} us/msg", ns / 1000.0)
                } else {
                    format!("{:.2} GB/s", size as f64 / ns)
                }
            };
            // Throughput ratio: higher is better for the pool.
            out += &format!(
                "| {label} | {} | {} | {} | {:.2}x | {:.2}x |\n",
                fmt(p),
                fmt(m),
                fmt(s),
                m / p,
                s / p
            );
        }
        println!("\n{out}");
        let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        let _ = std::fs::write(format!("{dir}/shmlink-bench-pool.md"), out);
    }
}
