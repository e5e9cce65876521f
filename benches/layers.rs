//! What the typed (`serde`) and plain-old-data (`pod`) layers cost over the byte API: one
//! round trip of a 32-byte value through each, against a server process answering all
//! three, in the same run.
//!
//! ```text
//! cargo bench --features serde,pod --bench layers
//! ```
//!
//! The server runs in a child process (this binary, role `server`). With 2 CPUs or more
//! the client is pinned to CPU 0 and the server to CPU 1.
//!
//! - `layers/bytes`: `Client::call` of 32 bytes, echoed.
//! - `layers/pod`: `PodClient::call_in_place` of a `[u64; 4]`, answered in place.
//! - `layers/typed`: `TypedClient::call` of a struct of four `u64` (postcard).
//! - `layers/paired` (printed): the three in alternating turns of 20,000 calls each, the
//!   median per-turn ratio of each layer to the byte call (a VM's cross-CPU cost swings
//!   from one minute to the next, which turns cancel out).

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
    use std::time::{Duration, Instant};

    use criterion::Criterion;
    use serde::{Deserialize, Serialize};
    use shmlink::pod::{self, PodClient};
    use shmlink::typed::{self, TypedClient};
    use shmlink::{Client, Schema, Server};

    use crate::common::{pin, role, say, wait_for_eof, Proc};

    const POD: Schema = Schema::new("bench.pod", 1);
    const TYPED: Schema = Schema::new("bench.typed", 1);

    #[derive(Serialize, Deserialize, Clone, Copy)]
    struct Quad {
        a: u64,
        b: u64,
        c: u64,
        d: u64,
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Never;

    pub(crate) fn main() {
        if let Some((role, args)) = role() {
            assert_eq!(role, "server");
            serve(&args);
            return;
        }
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(20)
            .configure_from_args();
        let two = std::thread::available_parallelism().map_or(1, usize::from) >= 2;
        let base = format!("bench-layers-{}", std::process::id());
        let mut server = Proc::spawn("server", &[&base, if two { "1" } else { "0" }]);
        server.expect("ready");
        pin(0);

        let mut bytes = Client::connect(&format!("{base}-bytes")).unwrap();
        let mut pod =
            PodClient::<[u64; 4], [u64; 4]>::connect(&format!("{base}-pod"), POD).unwrap();
        let mut typed =
            TypedClient::<Quad, Quad, Never>::connect(&format!("{base}-typed"), TYPED).unwrap();
        let mut g = c.benchmark_group("layers");
        g.bench_function("bytes", |b| {
            let req = [7u8; 32];
            b.iter(|| bytes.call(&req).unwrap())
        });
        g.bench_function("pod", |b| {
            b.iter(|| {
                pod.call_in_place(|r| *r = [1, 2, 3, 4], |resp| resp[0])
                    .unwrap()
            })
        });
        g.bench_function("typed", |b| {
            let q = Quad {
                a: 1,
                b: 2,
                c: 3,
                d: 4,
            };
            b.iter(|| typed.call(&q).unwrap().ok().unwrap().a)
        });
        g.finish();

        let q = Quad {
            a: 1,
            b: 2,
            c: 3,
            d: 4,
        };
        let mut calls: [Box<dyn FnMut()>; 3] = [
            Box::new(|| drop(bytes.call(&[7u8; 32]).unwrap())),
            Box::new(|| {
                std::hint::black_box(
                    pod.call_in_place(|r| *r = [1, 2, 3, 4], |resp| resp[0])
                        .unwrap(),
                );
            }),
            Box::new(|| {
                std::hint::black_box(typed.call(&q).unwrap().ok().unwrap().a);
            }),
        ];
        let mut ratios = [Vec::new(), Vec::new()];
        for _ in 0..15 {
            let mut t = [0f64; 3];
            for (i, call) in calls.iter_mut().enumerate() {
                let start = Instant::now();
                for _ in 0..20_000 {
                    call();
                }
                t[i] = start.elapsed().as_secs_f64() / 20_000.0;
            }
            ratios[0].push(t[1] / t[0]);
            ratios[1].push(t[2] / t[0]);
        }
        for (r, name) in ratios.iter_mut().zip(["pod", "typed"]) {
            r.sort_by(f64::total_cmp);
            println!(
                "layers/paired: {name} / bytes = {:.2}x (median of 15 turns; range {:.2}-{:.2}x)",
                r[7], r[0], r[14]
            );
        }
        drop(calls);
        drop(server);
        c.final_summary();
    }

    fn serve(args: &[String]) {
        pin(args[1].parse().unwrap());
        let base = &args[0];
        let bytes = Server::builder(&format!("{base}-bytes"))
            .create()
            .unwrap()
            .spawn(|req: &[u8], resp: &mut [u8]| {
                resp[..req.len()].copy_from_slice(req);
                req.len()
            })
            .unwrap();
        let pod = Server::builder(&format!("{base}-pod"))
            .create()
            .unwrap()
            .spawn(pod::handler(POD, |req: &[u64; 4], resp: &mut [u64; 4]| {
                *resp = *req
            }))
            .unwrap();
        let typed = Server::builder(&format!("{base}-typed"))
            .create()
            .unwrap()
            .spawn(typed::handler(TYPED, |q: Quad| Ok::<_, Never>(q)))
            .unwrap();
        say("ready");
        wait_for_eof();
        bytes.shutdown();
        pod.shutdown();
        typed.shutdown();
    }
}
