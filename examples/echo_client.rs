//! Asks an echo server (see `echo_server.rs`) who it is, reads its welcome notification,
//! then calls it N times and prints round-trip percentiles.
//!
//! ```text
//! cargo run --release --example echo_client -- [name] [calls] [bytes]
//! ```

use std::time::{Duration, Instant};

use shmlink::Client;

fn main() {
    // Report errors with their message (Display), not their Debug form.
    if let Err(e) = run() {
        eprintln!("echo_client: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "echo".to_owned());
    let calls: usize = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(100_000);
    let bytes: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(64);
    let mut client = Client::connect_timeout(&name, Duration::from_secs(5))?;
    println!(
        "echo_client: the server sees us as {}",
        String::from_utf8_lossy(&client.call(b"whoami")?)
    );
    // The server greets a client once it has seen it connect (within about 20 ms).
    match client.recv_notification_timeout(Duration::from_secs(1)) {
        Ok(note) => println!("echo_client: notified: {}", String::from_utf8_lossy(&note)),
        Err(e) => println!("echo_client: no welcome notification ({e})"),
    }
    let request: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
    // Warm up (caches, the adaptive wait's learnt spin budget).
    for _ in 0..calls.min(1000) {
        client.call_with(|buf| copy_in(buf, &request), |_| ())?;
    }
    let mut times = Vec::with_capacity(calls);
    let start = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        // Zero-copy form: no allocation per call.
        let ok = client.call_with(
            |buf| copy_in(buf, &request),
            |resp| resp == request.as_slice(),
        )?;
        times.push(t.elapsed());
        assert!(ok, "echo mismatch");
    }
    let total = start.elapsed();
    times.sort_unstable();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    println!(
        "echo_client: {calls} calls of {bytes} B to {name:?} in {total:.2?}: {:.0} calls/s",
        calls as f64 / total.as_secs_f64()
    );
    println!(
        "round trip: p50 {:.2?}  p90 {:.2?}  p99 {:.2?}  p99.9 {:.2?}  max {:.2?}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        times[times.len() - 1]
    );
    Ok(())
}

fn copy_in(buf: &mut [u8], request: &[u8]) -> usize {
    buf[..request.len()].copy_from_slice(request);
    request.len()
}
