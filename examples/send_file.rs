//! Streams a file through a pool of four 1 MiB buffers, from a Writer process to a Reader
//! process, and checks it arrived intact.
//!
//! ```text
//! cargo run --release --example send_file                 # a generated 1 GiB file
//! cargo run --release --example send_file -- FILE         # your file
//! cargo run --release --example send_file -- --size 64M   # a generated file of that size
//! ```
//! The Reader (this process) writes what it receives next to the source as `*.received`
//! and compares checksums; the Writer is this program started again with `--send`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shmlink::{recv_file, send_file, Checksum, PoolConfig, Reader, Writer};

type DynResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    // Report errors with their messages (Display), each cause after a colon.
    if let Err(e) = run() {
        let mut msg = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            msg.push_str(&format!(": {c}"));
            cause = c.source();
        }
        eprintln!("send_file: {msg}");
        std::process::exit(1);
    }
}

fn run() -> DynResult {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--send") {
        // The Writer process: send the file, report what was sent.
        let writer = Writer::connect_timeout(&args[1], Duration::from_secs(10))?;
        let summary = send_file(&writer, &args[2], Duration::from_secs(30))?;
        println!("{} {}", summary.bytes, summary.checksum);
        return Ok(());
    }

    let (source, generated) = match args.first().map(String::as_str) {
        Some("--size") => (
            generate(parse_size(args.get(1).map_or("1G", String::as_str)))?,
            true,
        ),
        Some(path) => (PathBuf::from(path), false),
        None => (generate(1 << 30)?, true),
    };
    let received = source.with_extension("received");
    let name = format!("send-file-{}", std::process::id());
    let config = PoolConfig {
        initial_buffer_size: 1 << 20,
        max_buffer_size: 1 << 20,
        start_buffers: 4,
        max_buffers: 4,
        min_buffers: Some(4),
        resize_threshold: 0,
        ..PoolConfig::default()
    };
    let reader = Reader::create(&name, config)?;

    let start = Instant::now();
    let sender = Command::new(std::env::current_exe()?)
        .args(["--send", &name])
        .arg(&source)
        .stdout(Stdio::piped())
        .spawn()?;
    let got = recv_file(&reader, &received, Duration::from_secs(30))?;
    let elapsed = start.elapsed();
    let output = sender.wait_with_output()?;
    let said = String::from_utf8_lossy(&output.stdout);
    let sent: Vec<u64> = said
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();

    let on_disk = file_checksum(&received)?;
    let ok =
        output.status.success() && sent == [got.bytes, got.checksum] && on_disk == got.checksum;
    println!(
        "stream {}: {} bytes in {} chunks, {:.2?} ({:.2} GB/s), checksum {:#018x}: {}",
        got.stream,
        got.bytes,
        got.chunks,
        elapsed,
        got.bytes as f64 / elapsed.as_secs_f64() / 1e9,
        got.checksum,
        if ok { "intact" } else { "MISMATCH" }
    );
    let _ = std::fs::remove_file(&received);
    if generated {
        let _ = std::fs::remove_file(&source);
    }
    if ok {
        Ok(())
    } else {
        Err("the received file differs from the sent one".into())
    }
}

fn parse_size(s: &str) -> u64 {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().unwrap_or(1);
    n << match unit {
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        _ => 0,
    }
}

/// Writes `size` pseudo-random bytes to a temporary file.
fn generate(size: u64) -> std::io::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("send-file-{}.bin", std::process::id()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let mut block = vec![0u8; 1 << 20];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut left = size;
    while left > 0 {
        for w in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(path)
}

fn file_checksum(path: &Path) -> std::io::Result<u64> {
    let mut f = std::fs::File::open(path)?;
    let mut sum = Checksum::new();
    let mut block = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut block)? {
            0 => return Ok(sum.finish()),
            n => sum.update(&block[..n]),
        }
    }
}
