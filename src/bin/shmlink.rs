//! `shmlink`: list, inspect and clean up shmlink's shared-memory objects.
//!
//! ```text
//! shmlink list              every object: name, kind, owner, live or stale, size
//! shmlink inspect NAME      the objects of one service, with their header fields
//! shmlink clean [--dry-run] remove objects whose owner is dead (never a live one)
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shmlink::admin::{self, Object, Status};

#[derive(Parser)]
#[command(
    name = "shmlink",
    version,
    about = "List, inspect and clean up shmlink objects"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every shmlink object: name, kind, owner, live or stale, size.
    List,
    /// The objects of one service, with their header fields.
    Inspect {
        /// The service name.
        name: String,
    },
    /// Removes objects whose owner is dead; live and foreign objects are never touched.
    Clean {
        /// Only show what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

fn status(o: &Object) -> String {
    match &o.status {
        Status::Live => "live".into(),
        Status::Stale => "stale".into(),
        Status::Untouchable(why) => format!("untouchable ({why})"),
        _ => "?".into(),
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn table(objects: &[Object]) {
    println!(
        "{:<48} {:<12} {:>8} {:>10}  status",
        "object", "kind", "owner", "size"
    );
    for o in objects {
        println!(
            "{:<48} {:<12} {:>8} {:>10}  {}",
            o.os_name,
            o.kind,
            o.owner_pid,
            size(o.size),
            status(o)
        );
    }
}

fn run(cli: Cli) -> Result<(), shmlink::Error> {
    match cli.command {
        Command::List => {
            let objects = admin::list()?;
            table(&objects);
            let stale: u64 = objects
                .iter()
                .filter(|o| o.status == Status::Stale)
                .map(|o| o.size)
                .sum();
            println!(
                "{} objects, {} in stale ones (`shmlink clean` frees them)",
                objects.len(),
                size(stale),
            );
        }
        Command::Inspect { name } => {
            let objects: Vec<Object> = admin::list()?
                .into_iter()
                .filter(|o| o.service.as_deref() == Some(name.as_str()))
                .collect();
            if objects.is_empty() {
                println!("no objects of service {name:?}");
            }
            for o in &objects {
                println!("{}", o.os_name);
                println!("  service: {name}");
                println!("  kind:    {}", o.kind);
                println!("  owner:   pid {}", o.owner_pid);
                println!("  size:    {} ({} bytes)", size(o.size), o.size);
                println!("  status:  {}", status(o));
            }
        }
        Command::Clean { dry_run } => {
            let removed = admin::clean(dry_run)?;
            let verb = if dry_run { "would remove" } else { "removed" };
            for o in &removed {
                println!("{verb} {} ({}, {})", o.os_name, o.kind, size(o.size));
            }
            println!("{verb} {} stale objects", removed.len());
        }
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
