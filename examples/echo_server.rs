//! An echo server on a shmlink request channel.
//!
//! ```text
//! cargo run --release --example echo_server -- [name] [workers]
//! cargo run --release --example echo_client -- [name] [calls] [bytes]
//! ```
//!
//! It prints one line when it is ready and stops gracefully (answering calls in flight) when
//! its standard input closes (Ctrl-D). Ctrl-C ends it at once; the channel it leaves behind
//! is detected as stale and replaced by the next server of the same name.

use std::io::Read;

use shmlink::Server;

fn main() {
    // Report errors with their message (Display), not their Debug form.
    if let Err(e) = run() {
        eprintln!("echo_server: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "echo".to_owned());
    let workers: usize = args.next().map(|w| w.parse()).transpose()?.unwrap_or(1);
    let echo = |req: &[u8], resp: &mut [u8]| {
        resp[..req.len()].copy_from_slice(req);
        req.len()
    };
    let builder = Server::builder(&name).slots(64).max_message(64 * 1024);
    let handle = if workers > 1 {
        builder.workers(workers).create()?.spawn(echo)?
    } else {
        builder.create()?.spawn(echo)?
    };
    println!(
        "echo_server: serving {name:?} with {workers} worker(s), pid {}; Ctrl-D stops",
        std::process::id()
    );
    // Block until stdin closes (EOF), then shut down gracefully.
    let mut sink = [0u8; 256];
    while std::io::stdin()
        .read(&mut sink)
        .map(|n| n > 0)
        .unwrap_or(false)
    {}
    handle.shutdown();
    println!("echo_server: stopped");
    Ok(())
}
