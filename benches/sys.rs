//! Platform layer benchmarks: uncontended mutex, and a 64 B request -> 64 B response round
//! trip between two real processes over our `EventPair` (each `WaitStrategy`), beside raw
//! baselines measured in the same run: two spinning atomics (the floor), a raw futex that
//! blocks at once, and a Unix socket. Both placements: split CPUs and one shared CPU.
//!
//! `cargo bench --bench sys`; prints a ratio table at the end (also written to
//! `target/shmlink-bench-sys.md`).

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the sys benchmarks need Linux (sched_setaffinity, futex)");
}

#[cfg(target_os = "linux")]
mod common;

#[cfg(target_os = "linux")]
mod linux {
    use crate::common::{median, pin, record, unpin};
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use criterion::Criterion;
    use shmlink::{EventPair, Mutex, Segment, WaitStrategy};

    const MSG: usize = 64;
    const ROLE: &str = "SHMLINK_BENCH_ROLE";

    /// Shared layout for the raw baselines and the event transports.
    #[repr(C, align(64))]
    struct Line<T>(T);
    #[repr(C)]
    struct Shared {
        ping: Line<AtomicU64>,
        pong: Line<AtomicU64>,
        ping_futex: Line<AtomicU32>,
        pong_futex: Line<AtomicU32>,
        stop: Line<AtomicU32>,
        req: Line<[u8; MSG]>,
        resp: Line<[u8; MSG]>,
    }

    fn futex_wait(w: &AtomicU32, v: u32) {
        // SAFETY: shared (non-private) FUTEX_WAIT on a valid, aligned u32.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                w.as_ptr(),
                libc::FUTEX_WAIT,
                v,
                std::ptr::null::<libc::timespec>(),
            )
        };
    }

    fn futex_wake(w: &AtomicU32) {
        // SAFETY: shared FUTEX_WAKE on a valid, aligned u32.
        unsafe { libc::syscall(libc::SYS_futex, w.as_ptr(), libc::FUTEX_WAKE, 1) };
    }

    fn shared(seg: &Segment) -> &Shared {
        assert!(seg.len() >= std::mem::size_of::<Shared>());
        // SAFETY: the data region is 64-aligned, large enough, and all fields are atomics or
        // byte arrays accessed in the handshake order.
        unsafe { &*seg.as_ptr().cast::<Shared>() }
    }

    /// Every transport the round-trip benches measure, in the report's order.
    const TRANSPORTS: [&str; 7] = [
        "spin",
        "futex",
        "unix_socket",
        "event_adaptive",
        "event_block",
        "event_spin2000",
        "event_spin",
    ];

    fn strategy(name: &str) -> WaitStrategy {
        match name {
            "event_adaptive" => WaitStrategy::Adaptive,
            "event_block" => WaitStrategy::Block,
            "event_spin2000" => WaitStrategy::SpinThenBlock { spins: 2000 },
            "event_spin" => WaitStrategy::Spin,
            other => panic!("unknown strategy {other}"),
        }
    }

    /// The child: answers round trips until told to stop.
    fn child(role: &str) {
        let name = std::env::var("SHMLINK_BENCH_NAME").unwrap();
        pin(std::env::var("SHMLINK_BENCH_CPU").unwrap().parse().unwrap());
        if role == "unix_socket" {
            let mut s = UnixStream::connect(&name).unwrap();
            let mut buf = [0u8; MSG];
            while s.read_exact(&mut buf).is_ok() {
                buf[0] = buf[0].wrapping_add(1);
                if s.write_all(&buf).is_err() {
                    break;
                }
            }
            return;
        }
        let seg = Segment::open(&name).unwrap();
        let sh = shared(&seg);
        let req = sh.req.0.as_ptr();
        let resp = sh.resp.0.as_ptr().cast_mut();
        let mut buf = [0u8; MSG];
        let answer = |buf: &mut [u8; MSG]| {
            // SAFETY: the handshake gives us exclusive use of req (read) and resp (write).
            unsafe {
                std::ptr::copy_nonoverlapping(req, buf.as_mut_ptr(), MSG);
                buf[0] = buf[0].wrapping_add(1);
                std::ptr::copy_nonoverlapping(buf.as_ptr(), resp, MSG);
            }
        };
        match role {
            "spin" => {
                let mut seen = 0;
                loop {
                    let v = sh.ping.0.load(Ordering::Acquire);
                    if v == seen {
                        std::hint::spin_loop();
                        continue;
                    }
                    if v == u64::MAX {
                        return;
                    }
                    seen = v;
                    answer(&mut buf);
                    sh.pong.0.store(v, Ordering::Release);
                }
            }
            "futex" => loop {
                while sh.ping_futex.0.load(Ordering::Acquire) == 0 {
                    futex_wait(&sh.ping_futex.0, 0);
                }
                sh.ping_futex.0.store(0, Ordering::Relaxed);
                if sh.stop.0.load(Ordering::Acquire) != 0 {
                    return;
                }
                answer(&mut buf);
                sh.pong_futex.0.store(1, Ordering::Release);
                futex_wake(&sh.pong_futex.0);
            },
            ev => {
                let pair = EventPair::open(&name).unwrap().wait_strategy(strategy(ev));
                loop {
                    pair.exec().wait();
                    if sh.stop.0.load(Ordering::Acquire) != 0 {
                        return;
                    }
                    answer(&mut buf);
                    pair.done().set();
                }
            }
        }
    }

    fn spawn(role: &str, name: &str, cpu: usize) -> Child {
        Command::new(std::env::current_exe().unwrap())
            .env(ROLE, role)
            .env("SHMLINK_BENCH_NAME", name)
            .env("SHMLINK_BENCH_CPU", cpu.to_string())
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// One transport in one placement: a child process answers, we time round trips.
    fn bench_transport(
        c: &mut Criterion,
        placement: &str,
        transport: &str,
        my_cpu: usize,
        peer_cpu: usize,
    ) {
        let id = format!("roundtrip_64B/{placement}/{transport}");
        let name = format!("bench-sys-{}-{placement}-{transport}", std::process::id());
        pin(my_cpu);
        let mut buf = [7u8; MSG];
        if transport == "unix_socket" {
            let path = format!("/tmp/{name}.sock");
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path).unwrap();
            let mut child = spawn(transport, &path, peer_cpu);
            let (mut s, _) = listener.accept().unwrap();
            c.bench_function(&id, |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        s.write_all(&buf).unwrap();
                        s.read_exact(&mut buf).unwrap();
                    }
                    let took = t.elapsed();
                    record(&id, iters, took);
                    took
                })
            });
            drop(s);
            child.wait().unwrap();
            let _ = std::fs::remove_file(&path);
            return;
        }
        let seg = Segment::builder(&name)
            .size(std::mem::size_of::<Shared>())
            .create()
            .unwrap();
        let pair = EventPair::create(&name).unwrap();
        let sh = shared(&seg);
        let req = sh.req.0.as_ptr().cast_mut();
        let resp = sh.resp.0.as_ptr();
        let mut child = spawn(transport, &name, peer_cpu);
        let send = |buf: &[u8; MSG]| {
            // SAFETY: the handshake gives us exclusive use of req (write) before signalling.
            unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), req, MSG) }
        };
        let recv = |buf: &mut [u8; MSG]| {
            // SAFETY: the handshake gives us exclusive use of resp (read) after the answer.
            unsafe { std::ptr::copy_nonoverlapping(resp, buf.as_mut_ptr(), MSG) }
        };
        match transport {
            "spin" => {
                let mut seq = 0u64;
                c.bench_function(&id, |b| {
                    b.iter_custom(|iters| {
                        let t = Instant::now();
                        for _ in 0..iters {
                            seq += 1;
                            send(&buf);
                            sh.ping.0.store(seq, Ordering::Release);
                            while sh.pong.0.load(Ordering::Acquire) != seq {
                                std::hint::spin_loop();
                            }
                            recv(&mut buf);
                        }
                        let took = t.elapsed();
                        record(&id, iters, took);
                        took
                    })
                });
                sh.ping.0.store(u64::MAX, Ordering::Release);
            }
            "futex" => {
                c.bench_function(&id, |b| {
                    b.iter_custom(|iters| {
                        let t = Instant::now();
                        for _ in 0..iters {
                            send(&buf);
                            sh.ping_futex.0.store(1, Ordering::Release);
                            futex_wake(&sh.ping_futex.0);
                            while sh.pong_futex.0.load(Ordering::Acquire) == 0 {
                                futex_wait(&sh.pong_futex.0, 0);
                            }
                            sh.pong_futex.0.store(0, Ordering::Relaxed);
                            recv(&mut buf);
                        }
                        let took = t.elapsed();
                        record(&id, iters, took);
                        took
                    })
                });
                sh.stop.0.store(1, Ordering::Release);
                sh.ping_futex.0.store(1, Ordering::Release);
                futex_wake(&sh.ping_futex.0);
            }
            ev => {
                let pair = pair.wait_strategy(strategy(ev));
                c.bench_function(&id, |b| {
                    b.iter_custom(|iters| {
                        let t = Instant::now();
                        for _ in 0..iters {
                            send(&buf);
                            pair.exec().set();
                            pair.done().wait();
                            recv(&mut buf);
                        }
                        let took = t.elapsed();
                        record(&id, iters, took);
                        took
                    })
                });
                sh.stop.0.store(1, Ordering::Release);
                pair.exec().set();
            }
        }
        child.wait().unwrap();
    }

    fn bench_mutex(c: &mut Criterion) {
        let name = format!("bench-sys-mutex-{}", std::process::id());
        let m = Mutex::create(&name).unwrap();
        c.bench_function("mutex/lock_unlock_uncontended", |b| {
            b.iter(|| drop(m.lock().unwrap()));
        });
        let pair = EventPair::create(&name).unwrap();
        c.bench_function("event/set_without_waiter", |b| {
            b.iter(|| {
                pair.exec().set();
                pair.exec().try_wait()
            });
        });
    }

    pub(crate) fn main() {
        if let Ok(role) = std::env::var(ROLE) {
            child(&role);
            return;
        }
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(20)
            .configure_from_args();
        bench_mutex(&mut c);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus >= 2 {
            for t in TRANSPORTS {
                bench_transport(&mut c, "split_cpus", t, 0, 1);
            }
        }
        // Spinning on a shared CPU only measures the scheduler's time slice: skip those.
        for t in TRANSPORTS
            .iter()
            .filter(|t| !matches!(**t, "spin" | "event_spin"))
        {
            bench_transport(&mut c, "one_cpu", t, 0, 0);
        }
        unpin();
        c.final_summary();
        report();
    }

    fn report() {
        let get = |id: &str| median(id, 20);
        let mut out = String::from("| placement | transport | median round trip | vs spin floor | vs raw futex | vs Unix socket |\n|---|---|---:|---:|---:|---:|\n");
        for placement in ["split_cpus", "one_cpu"] {
            let base = |t: &str| get(&format!("roundtrip_64B/{placement}/{t}"));
            let (spin, futex, sock) = (base("spin"), base("futex"), base("unix_socket"));
            for t in TRANSPORTS {
                let Some(v) = base(t) else { continue };
                let ratio = |b: Option<f64>| b.map_or("-".into(), |b| format!("{:.2}x", v / b));
                out += &format!(
                    "| {placement} | {t} | {:.2} us | {} | {} | {} |\n",
                    v / 1000.0,
                    ratio(spin),
                    ratio(futex),
                    ratio(sock)
                );
            }
        }
        println!("\n{out}");
        let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        let _ = std::fs::write(format!("{dir}/shmlink-bench-sys.md"), out);
    }
}
