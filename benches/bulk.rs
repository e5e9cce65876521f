//! Bulk with one message in flight: a Writer process fills a 1 MiB buffer (every byte) and
//! sends it, then waits for an acknowledgement before the next; the Reader here checksums
//! every byte, releases the buffer and acknowledges. Beside it, in the same run, the same
//! exchange over a busy-polling transport: two processes spinning on two atomics next to a
//! 1 MiB area of one segment (the floor a transport that burns both CPUs reaches).
//!
//! ```text
//! cargo bench --bench bulk
//! ```
//!
//! Split placement (Writer on CPU 1, Reader on CPU 0). `bulk/pool/1MiB` uses the default
//! wait on both sides (the acknowledgement is an `Event`); `bulk/spin/1MiB` the spinning
//! pair. `bulk/paired` (printed) runs both in alternating turns and reports the median
//! per-turn ratio of their throughputs, and the CPU time the Reader's process burns while
//! its waits have nothing to wait for (idle for a second).

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
    use crate::common::{median, pin, record, role, say, Proc};
    use std::io::BufRead;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use criterion::Criterion;
    use shmlink::{checksum, Event, PoolConfig, Reader, Segment, Writer};

    const MIB: usize = 1 << 20;
    const SAMPLES: usize = 10;
    const TURNS: usize = 9;
    const PER_TURN: u64 = 300;
    /// The spinning pair's words, on lines of their own, then the data.
    const SEQ_AT: usize = 0;
    const ACK_AT: usize = 64;
    const DATA_AT: usize = 128;

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
        if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
            println!("bulk: needs 2 CPUs");
            return;
        }
        pin(0);
        let pid = std::process::id();
        let name = format!("bench-bulk-{pid}");
        let reader = Reader::create(&name, pool_config()).unwrap();
        let ack = Event::create(&format!("{name}-ack")).unwrap();
        let mut writer = Proc::spawn("pool-writer", &[&name, "1"]);
        writer.expect("ready");

        let spin_seg = Segment::builder(&format!("{name}-spin"))
            .size(DATA_AT + MIB)
            .create()
            .unwrap();
        let mut spinner = Proc::spawn("spin-writer", &[&name, "1"]);
        spinner.expect("ready");

        let ids = ["bulk/pool/1MiB", "bulk/spin/1MiB"];
        let mut g = c.benchmark_group("bulk");
        g.throughput(criterion::Throughput::Bytes(MIB as u64));
        g.bench_function("pool/1MiB", |b| {
            b.iter_custom(|iters| {
                let took = pool_round(&reader, &ack, &mut writer, iters);
                record(ids[0], iters, took);
                took
            })
        });
        g.bench_function("spin/1MiB", |b| {
            b.iter_custom(|iters| {
                let took = spin_round(&spin_seg, &mut spinner, iters);
                record(ids[1], iters, took);
                took
            })
        });
        g.finish();

        let gbs = |d: Duration, n: u64| (n as f64 * MIB as f64) / d.as_secs_f64() / 1e9;
        let (mut pool, mut spin, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..TURNS {
            let p = gbs(pool_round(&reader, &ack, &mut writer, PER_TURN), PER_TURN);
            let s = gbs(spin_round(&spin_seg, &mut spinner, PER_TURN), PER_TURN);
            pool.push(p);
            spin.push(s);
            ratio.push(p / s);
        }
        // What the waits cost when nothing comes: the Reader's process over a quiet second
        // (its service thread included), with the Writer idle too.
        let before = cpu_time();
        std::thread::sleep(Duration::from_secs(1));
        let idle = cpu_time() - before;
        drop(writer);
        drop(spinner);
        drop(reader);
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            (v[v.len() / 2], v[0], v[v.len() - 1])
        };
        let (p, _, _) = med(&mut pool);
        let (s, _, _) = med(&mut spin);
        let (r, rmin, rmax) = med(&mut ratio);
        c.final_summary();
        println!(
            "\nbulk/paired ({TURNS} turns of {PER_TURN} x 1 MiB, ack per message): pool {p:.2} GB/s, \
             spinning pair {s:.2} GB/s (medians); median ratio pool/spin {r:.2}x (min {rmin:.2}x, \
             max {rmax:.2}x); criterion medians {:.1} / {:.1} us per message; the Reader's \
             process idle for 1 s used {:.2} ms of CPU",
            median(ids[0], SAMPLES).unwrap_or(0.0) / 1000.0,
            median(ids[1], SAMPLES).unwrap_or(0.0) / 1000.0,
            idle.as_secs_f64() * 1000.0,
        );
    }

    fn pool_config() -> PoolConfig {
        PoolConfig {
            initial_buffer_size: MIB,
            max_buffer_size: MIB,
            start_buffers: 2,
            max_buffers: 2,
            resize_threshold: 0,
            ..PoolConfig::default()
        }
    }

    /// CPU time of this process so far (all threads).
    fn cpu_time() -> Duration {
        // SAFETY: clock_gettime writes the timespec it is given.
        let ts = unsafe {
            let mut ts: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts);
            ts
        };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// `iters` messages from the Writer child, each checksummed here, released and acked.
    fn pool_round(reader: &Reader, ack: &Event, writer: &mut Proc, iters: u64) -> Duration {
        let start = Instant::now();
        writer.send(&format!("run {iters}"));
        let mut sum = 0u64;
        for _ in 0..iters {
            let m = reader.recv_timeout(Duration::from_secs(60)).unwrap();
            sum ^= checksum(&m);
            drop(m);
            ack.set();
        }
        let took = start.elapsed();
        writer.expect("done");
        std::hint::black_box(sum);
        took
    }

    /// The atomics at `at` in `seg`'s data region.
    fn word(seg: &Segment, at: usize) -> &AtomicU64 {
        // SAFETY: `at` is 8-aligned inside the data region (which is 64-aligned), the
        // segment outlives the reference, and both processes use the word only atomically.
        unsafe { &*seg.as_ptr().add(at).cast::<AtomicU64>() }
    }

    /// `iters` 1 MiB hand-offs over the spinning pair.
    fn spin_round(seg: &Segment, spinner: &mut Proc, iters: u64) -> Duration {
        let (seq, ack) = (word(seg, SEQ_AT), word(seg, ACK_AT));
        let start = Instant::now();
        spinner.send(&format!("run {iters}"));
        let mut sum = 0u64;
        for _ in 0..iters {
            let want = ack.load(Ordering::Relaxed) + 1;
            while seq.load(Ordering::Acquire) != want {
                std::hint::spin_loop();
            }
            // SAFETY: the writer wrote the data before publishing `seq` (Release) and does
            // not write it again before our `ack`.
            let data = unsafe { std::slice::from_raw_parts(seg.as_ptr().add(DATA_AT), MIB) };
            sum ^= checksum(data);
            ack.store(want, Ordering::Release);
        }
        let took = start.elapsed();
        spinner.expect("done");
        std::hint::black_box(sum);
        took
    }

    fn child(role: &str, args: &[String]) {
        pin(args[1].parse().unwrap());
        let name = &args[0];
        match role {
            // pool-writer <name> <cpu>: on "run K", K messages, each waiting for its ack.
            "pool-writer" => {
                let w = Writer::connect(name).unwrap();
                let ack = Event::open(&format!("{name}-ack")).unwrap();
                say("ready");
                let mut i = 0u8;
                for line in std::io::stdin().lock().lines() {
                    let Some(k) = line.unwrap().strip_prefix("run ").map(str::to_owned) else {
                        break;
                    };
                    for _ in 0..k.parse::<u64>().unwrap() {
                        let mut buf = w.acquire_timeout(Duration::from_secs(60)).unwrap();
                        buf.set_len(MIB).unwrap();
                        buf.fill(i);
                        i = i.wrapping_add(1);
                        w.send(buf).unwrap();
                        assert!(ack.wait_timeout(Duration::from_secs(60)), "no ack");
                    }
                    say("done");
                }
            }
            // spin-writer <name> <cpu>: the same over the spinning pair.
            "spin-writer" => {
                let seg = Segment::open(&format!("{name}-spin")).unwrap();
                let (seq, ack) = (word(&seg, SEQ_AT), word(&seg, ACK_AT));
                say("ready");
                let mut i = 0u8;
                for line in std::io::stdin().lock().lines() {
                    let Some(k) = line.unwrap().strip_prefix("run ").map(str::to_owned) else {
                        break;
                    };
                    for _ in 0..k.parse::<u64>().unwrap() {
                        let n = seq.load(Ordering::Relaxed);
                        while ack.load(Ordering::Acquire) != n {
                            std::hint::spin_loop();
                        }
                        // SAFETY: the reader acknowledged the last hand-off and reads the
                        // data again only after the `seq` store below.
                        let data = unsafe {
                            std::slice::from_raw_parts_mut(seg.as_ptr().add(DATA_AT), MIB)
                        };
                        data.fill(i);
                        i = i.wrapping_add(1);
                        seq.store(n + 1, Ordering::Release);
                    }
                    // The last hand-off is acknowledged before the next run starts.
                    while ack.load(Ordering::Acquire) != seq.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                    say("done");
                }
            }
            _ => panic!("unknown role {role}"),
        }
    }
}
