//! The async client's round trip against the blocking client's, across real processes.
//!
//! ```text
//! cargo bench --features async --bench asynch
//! ```
//!
//! The bench re-runs its own binary as the echo server, chosen by `SHMLINK_BENCH_ROLE`.
//! Placement "split": this process (the caller and the async client's connection thread)
//! on CPU 0, the server on CPU 1 (both on CPU 0 with one CPU).
//!
//! - `async-rtt/blocking/64`: [`Client::call`], 64 B each way;
//! - `async-rtt/async-block_on/64`: [`AsyncClient::call`] with one connection, awaited in a
//!   loop under `shmlink::block_on`;
//! - `async-rtt/async-tokio/64`: the same under a current-thread tokio runtime;
//! - `async-rtt/async-tokio-64-tasks/64`: per call, 64 tokio tasks (2 runtime threads)
//!   calling at once over 4 connections.
//!
//! Then `async-rtt/paired` (printed): blocking and async (block_on) in alternating turns,
//! the median of the per-turn ratios, since on a VM only figures of the same minutes
//! compare.

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
    use crate::common::{echo_server, pin, role, Proc};
    use std::time::{Duration, Instant};

    use criterion::{BenchmarkId, Criterion, Throughput};
    use shmlink::{block_on, AsyncClient, Client, WaitStrategy};

    const SIZE: usize = 64;

    pub(crate) fn main() {
        if let Some((role, args)) = role() {
            assert_eq!(role, "server");
            echo_server(
                &args[0],
                args[1].parse().unwrap(),
                8,
                WaitStrategy::Adaptive,
            );
            return;
        }
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(20)
            .configure_from_args();
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let server_cpu = usize::from(cpus >= 2);
        pin(0);
        let name = format!("bench-async-{}", std::process::id());
        let mut server = Proc::spawn("server", &[&name, &server_cpu.to_string()]);
        server.expect("ready");
        let mut blocking = Client::connect_timeout(&name, Duration::from_secs(5)).unwrap();
        let one = AsyncClient::connect(&name, 1).unwrap();
        let four = AsyncClient::connect(&name, 4).unwrap();
        let tokio1 = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let tokio2 = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let req = [7u8; SIZE];

        let mut g = c.benchmark_group("async-rtt");
        g.throughput(Throughput::Bytes(SIZE as u64));
        g.bench_function(BenchmarkId::new("blocking", SIZE), |b| {
            b.iter_custom(|iters| blocking_calls(&mut blocking, &req, iters))
        });
        g.bench_function(BenchmarkId::new("async-block_on", SIZE), |b| {
            b.iter_custom(|iters| async_calls(&one, &req, iters))
        });
        g.bench_function(BenchmarkId::new("async-tokio", SIZE), |b| {
            b.iter_custom(|iters| {
                tokio1.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        assert_eq!(one.call(&req).await.unwrap().len(), SIZE);
                    }
                    start.elapsed()
                })
            })
        });
        g.bench_function(BenchmarkId::new("async-tokio-64-tasks", SIZE), |b| {
            b.iter_custom(|iters| {
                const TASKS: u64 = 64;
                let per = iters.div_ceil(TASKS);
                let start = Instant::now();
                tokio2.block_on(async {
                    let tasks: Vec<_> = (0..TASKS)
                        .map(|_| {
                            let c = four.clone();
                            tokio::spawn(async move {
                                for _ in 0..per {
                                    assert_eq!(c.call(&req).await.unwrap().len(), SIZE);
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                });
                start.elapsed().mul_f64(iters as f64 / (per * TASKS) as f64)
            })
        });
        g.finish();
        paired(&mut blocking, &one, &req);
        c.final_summary();
        drop((one, four, blocking));
        drop(server);
    }

    fn blocking_calls(client: &mut Client, req: &[u8], iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            assert_eq!(client.call(req).unwrap().len(), req.len());
        }
        start.elapsed()
    }

    fn async_calls(client: &AsyncClient, req: &[u8], iters: u64) -> Duration {
        block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                assert_eq!(client.call(req).await.unwrap().len(), req.len());
            }
            start.elapsed()
        })
    }

    /// Blocking and async round trips in alternating turns; prints both medians and the
    /// median of the per-turn ratios async / blocking.
    fn paired(blocking: &mut Client, one: &AsyncClient, req: &[u8]) {
        const TURNS: usize = 21;
        const ITERS: u64 = 20_000;
        let (mut ratios, mut b, mut a) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..TURNS {
            blocking_calls(blocking, req, ITERS / 20);
            let x = blocking_calls(blocking, req, ITERS).as_nanos() as f64 / ITERS as f64;
            async_calls(one, req, ITERS / 20);
            let y = async_calls(one, req, ITERS).as_nanos() as f64 / ITERS as f64;
            ratios.push(y / x);
            b.push(x);
            a.push(y);
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|p, q| p.partial_cmp(q).unwrap());
            v[v.len() / 2]
        };
        println!(
            "async-rtt/paired: blocking/64 {:.0} ns, async-block_on/64 {:.0} ns (medians of \
             {TURNS} turns); median ratio async/blocking {:.2}x (min {:.2}x, max {:.2}x)",
            med(&mut b),
            med(&mut a),
            med(&mut ratios),
            ratios[0],
            ratios[TURNS - 1],
        );
    }
}
