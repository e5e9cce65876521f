//! `shmlink`: list, inspect and clean up shmlink's shared-memory objects, and measure a quick
//! local figure.
//!
//! ```text
//! shmlink list              every object: name, kind, owner, live or stale, size
//! shmlink inspect NAME      one service's objects, and what is inside its channel and pool
//! shmlink clean [--dry-run] remove objects whose owner is dead (never a live one)
//! shmlink bench             channel round trip and pool bulk, beside a Unix socket
//! ```

mod bench;
mod show;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shmlink::admin::{self, Status};

#[derive(Parser)]
#[command(
    name = "shmlink",
    version,
    about = "List, inspect and clean up shmlink objects; measure a quick local figure"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every shmlink object: name, kind, owner, live or stale, size.
    List,
    /// One service's objects, and what is inside its channel (slots, clients) and pool
    /// (lists, buffers, counters), read without taking any lock.
    Inspect {
        /// The service name.
        name: String,
        /// Show every buffer of a pool (default: the first 64).
        #[arg(long)]
        all: bool,
    },
    /// Removes objects whose owner is dead; live and foreign objects are never touched.
    Clean {
        /// Only show what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Measures a channel round trip (64 B) and pool bulk (1 MiB), with a Unix socket
    /// beside them (a few seconds; build with --release for meaningful figures).
    Bench {
        /// Round trips per transport (at most 2 s of them).
        #[arg(long, default_value_t = 20_000)]
        calls: u32,
        /// Bulk messages per transport (at most 2 s of them).
        #[arg(long, default_value_t = 2000)]
        messages: u32,
    },
    /// A peer process of `bench` (internal).
    #[command(hide = true)]
    BenchPeer { role: String, arg: String },
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::List => {
            let objects = admin::list()?;
            show::table(&objects);
            let stale: u64 = objects
                .iter()
                .filter(|o| o.status == Status::Stale)
                .map(|o| o.size)
                .sum();
            println!(
                "{} objects, {} in stale ones (`shmlink clean` frees them)",
                objects.len(),
                show::size(stale),
            );
        }
        Command::Inspect { name, all } => show::inspection(&admin::inspect(&name)?, all),
        Command::Clean { dry_run } => {
            let removed = admin::clean(dry_run)?;
            let verb = if dry_run { "would remove" } else { "removed" };
            for o in &removed {
                println!("{verb} {} ({}, {})", o.os_name, o.kind, show::size(o.size));
            }
            println!("{verb} {} stale objects", removed.len());
        }
        Command::Bench { calls, messages } => bench::run(bench::Options { calls, messages })?,
        Command::BenchPeer { role, arg } => bench::peer(&role, &arg)?,
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmlink: {e}");
            ExitCode::FAILURE
        }
    }
}
