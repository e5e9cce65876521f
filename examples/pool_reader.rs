//! The receiving end of a buffer pool: creates the pool (or adopts the one a crashed or
//! stopped Reader left) and prints what Writers send.
//!
//! ```text
//! cargo run --example pool_reader -- my-pool          # in one terminal
//! cargo run --example pool_writer -- my-pool 5        # in another
//! ```
//! Kill the reader while writers run and start it again: it adopts the pool, delivers what
//! was queued (and redelivers what it had not finished), and the writers carry on. A reader
//! that stops by itself (the limit, or 10 s without a message) leaves what is still queued
//! to the next one the same way, and removes the pool if nothing is.

use std::time::Duration;

use shmlink::{PoolConfig, PoolError, Reader};

fn main() {
    // Report errors with their message (Display), not their Debug form.
    if let Err(e) = run() {
        eprintln!("pool_reader: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), PoolError> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "pool-example".into());
    let limit: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(u64::MAX);
    let idle = Duration::from_secs(10);

    let reader = Reader::create(&name, PoolConfig::default())?;
    if reader.adopted() {
        println!("adopted the pool {name:?} (its last Reader died or left messages queued)");
    } else if let Some(why) = reader.adoption_refused() {
        println!("could not adopt the old pool ({why}); started a fresh one");
    }
    println!("reading {name:?}; stops after {idle:?} without a message");

    let mut count = 0u64;
    while count < limit {
        let msg = match reader.recv_timeout(idle) {
            Ok(m) => m,
            Err(PoolError::Timeout) => break,
            Err(e) => return Err(e),
        };
        count += 1;
        let text = String::from_utf8_lossy(&msg[..msg.len().min(60)]);
        let again = if msg.redelivered() {
            " (redelivered)"
        } else {
            ""
        };
        println!("#{count}: {} bytes{again}: {text}", msg.len());
        // `msg` goes back to the free list here.
    }
    println!("{count} messages; {:?}", reader.stats()?);
    Ok(())
}
