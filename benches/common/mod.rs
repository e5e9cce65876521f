//! Support shared by the benches: CPU pinning for the two placements, and a record of
//! per-iteration times from criterion's `iter_custom` runs so each bench can print a ratio
//! table of medians measured in the same run.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// The environment variables that make a bench binary run as one of its child roles.
pub const ROLE_ENV: &str = "SHMLINK_BENCH_ROLE";
pub const ARGS_ENV: &str = "SHMLINK_BENCH_ARGS";

/// The role and arguments this process was started with by [`Proc::spawn`], if it is a
/// bench's child.
pub fn role() -> Option<(String, Vec<String>)> {
    let role = std::env::var(ROLE_ENV).ok()?;
    let args = std::env::var(ARGS_ENV)
        .unwrap_or_default()
        .split(' ')
        .map(str::to_owned)
        .collect();
    Some((role, args))
}

/// Pins the calling thread (and threads it starts later) to `cpu`.
pub fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity only reads it.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    assert!(ok, "sched_setaffinity to CPU {cpu} failed");
}

/// Lets the calling thread run on every CPU again.
pub fn unpin() {
    // SAFETY: as in `pin`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

static RESULTS: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

/// Records one `iter_custom` call of bench `id`: `iters` iterations took `took`.
pub fn record(id: &str, iters: u64, took: Duration) {
    RESULTS
        .lock()
        .unwrap()
        .entry(id.to_owned())
        .or_default()
        .push(took.as_nanos() as f64 / iters as f64);
}

/// Median ns per iteration over the last `samples` calls recorded for `id` (earlier calls
/// are criterion's warm-up, which includes first-touch page faults).
pub fn median(id: &str, samples: usize) -> Option<f64> {
    let r = RESULTS.lock().unwrap();
    let v = r.get(id)?;
    let mut v = v[v.len().saturating_sub(samples)..].to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Some(v[v.len() / 2])
}

pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

pub fn wait_for_eof() {
    let mut sink = [0u8; 64];
    while std::io::stdin()
        .read(&mut sink)
        .map(|n| n > 0)
        .unwrap_or(false)
    {}
}

/// A child process of this bench; on drop, closing its stdin ends it gracefully (a hog is
/// killed).
pub struct Proc {
    child: Child,
    out: BufReader<ChildStdout>,
    hog: bool,
}

impl Proc {
    pub fn spawn(role: &str, args: &[&str]) -> Proc {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE_ENV, role)
            .env(ARGS_ENV, args.join(" "))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Proc {
            child,
            out,
            hog: role == "hog",
        }
    }

    pub fn expect(&mut self, want: &str) {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), want, "bench child said something else");
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) the child.
    pub fn pause(&self, stop: bool) {
        let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child, not
        // yet waited for.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig}) failed");
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.hog {
            let _ = self.child.kill();
        } else {
            self.pause(false);
        }
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The Unix-socket baseline's server: binds `path`, says "ready", accepts one connection and
/// echoes length-prefixed messages of up to `max` bytes until it closes.
pub fn socket_echo_server(path: &str, max: usize) {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    say("ready");
    let (mut s, _) = listener.accept().unwrap();
    let mut buf = vec![0u8; max + 4];
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() {
            break;
        }
        let n = u32::from_le_bytes(len) as usize;
        buf[..4].copy_from_slice(&len);
        s.read_exact(&mut buf[4..4 + n]).unwrap();
        s.write_all(&buf[..4 + n]).unwrap();
    }
}

/// An echo server child: pinned to `cpu`, `slots` slots of 64 KiB, waiting as `strategy`
/// says; says "ready" and serves until its stdin closes.
pub fn echo_server(name: &str, cpu: usize, slots: u32, strategy: shmlink::WaitStrategy) {
    pin(cpu);
    let handle = shmlink::Server::builder(name)
        .slots(slots)
        .max_message(64 * 1024)
        .wait_strategy(strategy)
        .create()
        .unwrap()
        .spawn(|req: &[u8], resp: &mut [u8]| {
            resp[..req.len()].copy_from_slice(req);
            req.len()
        })
        .unwrap();
    say("ready");
    wait_for_eof();
    handle.shutdown();
}
