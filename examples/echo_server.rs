//! An echo server on a shmlink request channel.
//!
//! ```text
//! cargo run --release --example echo_server -- [name] [workers]
//! cargo run --release --example echo_client -- [name] [calls] [bytes]
//! ```
//!
//! It answers `whoami` with the caller's client id and pid (the request context), prints a
//! line when a client connects or leaves (connection events) and greets each new client
//! with a notification. It prints one line when it is ready and stops gracefully (answering
//! calls in flight) when its standard input closes (Ctrl-D). Ctrl-C ends it at once; the channel it leaves behind
//! is detected as stale and replaced by the next server of the same name.

use std::io::Read;
use std::sync::{Arc, OnceLock};

use shmlink::{AppError, CallInfo, ClientTable, ConnectionEvent, Server};

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
    let echo = |call: &CallInfo, req: &[u8], resp: &mut [u8]| -> Result<usize, AppError> {
        if req == b"whoami" {
            let me = format!("client {}, pid {}", call.client(), call.pid());
            resp[..me.len()].copy_from_slice(me.as_bytes());
            return Ok(me.len());
        }
        resp[..req.len()].copy_from_slice(req);
        Ok(req.len())
    };
    // The connection callback greets newcomers through the client table, which exists once
    // the server does.
    let table: Arc<OnceLock<ClientTable>> = Arc::default();
    let greeter = Arc::clone(&table);
    let builder = Server::builder(&name)
        .slots(64)
        .max_message(64 * 1024)
        .on_connection(move |event: ConnectionEvent| match event {
            ConnectionEvent::Connected { id, pid } => {
                println!("echo_server: client {id} (pid {pid}) connected");
                if let Some(t) = greeter.get() {
                    let _ = t.notify(id, format!("welcome, client {id}").as_bytes());
                }
            }
            ConnectionEvent::Disconnected { id, pid, reason } => {
                println!("echo_server: client {id} (pid {pid}) left: {reason:?}");
            }
            _ => {}
        });
    let handle = if workers > 1 {
        let server = builder.workers(workers).create()?;
        let _ = table.set(server.client_table());
        server.spawn(echo)?
    } else {
        let server = builder.create()?;
        let _ = table.set(server.client_table());
        server.spawn(echo)?
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
