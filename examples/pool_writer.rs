//! A Writer: fills pool buffers in place and sends them to the Reader.
//!
//! ```text
//! cargo run --example pool_writer -- my-pool [COUNT] [SIZE]
//! ```
//! Start `pool_reader` first (the writer waits up to 10 s for it).

use std::io::Write;
use std::time::Duration;

use shmlink::Writer;

fn main() {
    // Report errors with their message (Display), not their Debug form.
    if let Err(e) = run() {
        eprintln!("pool_writer: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "pool-example".into());
    let count: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);
    let size: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);

    let writer = Writer::connect_timeout(&name, Duration::from_secs(10))?;
    for i in 0..count {
        let mut buf = writer.acquire_timeout(Duration::from_secs(5))?;
        write!(buf, "message {i} from process {}", std::process::id())?;
        if size > buf.len() {
            // Zero-copy: grow the length and fill the bytes in place (grows the buffer
            // itself if needed, up to the pool's max_buffer_size).
            let start = buf.len();
            buf.set_len(size)?;
            buf[start..].fill(b'.');
        }
        writer.send(buf)?;
    }
    println!("sent {count} messages; {:?}", writer.stats()?);
    Ok(())
}
