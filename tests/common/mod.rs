//! Test support shared by every integration test file: child processes that re-execute the
//! test binary in a named role, line-based handshakes over pipes (no sleeps), watchdogs,
//! and unique object names that are cleaned out of /dev/shm even when a test fails.
#![allow(dead_code, unreachable_pub)]
// Test files using this module start with #![cfg(target_os = "linux")]: the tests
// need /dev/shm, SIGKILL and sched_setaffinity; macOS and Windows are type-checked only.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ROLE_ENV: &str = "SHMLINK_TEST_ROLE";
const ARGS_ENV: &str = "SHMLINK_TEST_ARGS";
const SEP: char = '\u{1f}';
/// Marks handshake lines: the child's stdout also carries the test harness's own output.
const TAG: &str = "@shmlink-test:";

/// Bytes of the common segment header before a segment's data region (the layout that the
/// hostile-peer tests write into by hand; pinned by `src/segment.rs`).
pub const HEADER_SIZE: usize = 512;

/// Generous bound for any single handshake step; a hang becomes a failure with a message.
pub const STEP: Duration = Duration::from_secs(30);

/// If this process is a child started by [`spawn`], its role and arguments.
///
/// Call it first thing in the test function the child was started for. It also arms a
/// watchdog that ends the child if its parent dies or it runs for more than 120 s.
pub fn child_role() -> Option<(String, Vec<String>)> {
    let role = std::env::var(ROLE_ENV).ok()?;
    let args = std::env::var(ARGS_ENV).unwrap_or_default();
    let args = if args.is_empty() {
        Vec::new()
    } else {
        args.split(SEP).map(str::to_owned).collect()
    };
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        let start = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            if std::os::unix::process::parent_id() != parent
                || start.elapsed() > Duration::from_secs(120)
            {
                eprintln!("child watchdog: parent gone or child ran too long; exiting");
                std::process::exit(3);
            }
        }
    });
    Some((role, args))
}

/// Ends a child role: flushes and exits at once, skipping the test harness's summary.
pub fn child_exit(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

/// Writes one handshake line to the parent.
pub fn tell_parent(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{TAG}{line}").unwrap();
    out.flush().unwrap();
}

/// Reads one line from the parent (stdin), e.g. a "go" signal. `None` at EOF.
pub fn hear_parent() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end().to_owned()),
    }
}

/// A child process running one role of a test; killed and reaped on drop.
pub struct Child {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    role: String,
}

/// Starts this test binary again, running only `test` (its full path, e.g.
/// `"mutex_owner_death"`), as `role` with `args`.
pub fn spawn(test: &str, role: &str, args: &[&str]) -> Child {
    spawn_with(test, role, args, |_| {})
}

/// As [`spawn`], letting the caller adjust the command (e.g. `pre_exec`).
pub fn spawn_with(
    test: &str,
    role: &str,
    args: &[&str],
    adjust: impl FnOnce(&mut Command),
) -> Child {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        test,
        "--nocapture",
        "--test-threads=1",
        "--quiet",
    ])
    .env(ROLE_ENV, role)
    .env(ARGS_ENV, args.join(&SEP.to_string()))
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    adjust(&mut cmd);
    let mut child = cmd.spawn().expect("spawn child test process");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Some(line) = line.strip_prefix(TAG) else {
                continue;
            };
            if tx.send(line.to_owned()).is_err() {
                break;
            }
        }
    });
    Child {
        child,
        lines,
        role: role.to_owned(),
    }
}

impl Child {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (at most [`STEP`]) for the child's next handshake line; panics with a message on
    /// timeout or if the child exits first.
    pub fn expect_line(&mut self) -> String {
        self.expect_line_within(STEP)
    }

    pub fn expect_line_within(&mut self, limit: Duration) -> String {
        match self.lines.recv_timeout(limit) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("child {:?} said nothing for {limit:?}", self.role)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                panic!("child {:?} closed its output (exit status {status:?}) before the expected line", self.role)
            }
        }
    }

    /// Waits for the next line and checks it equals `want`.
    pub fn expect(&mut self, want: &str) {
        let got = self.expect_line();
        assert_eq!(
            got, want,
            "child {:?} said {got:?}, expected {want:?}",
            self.role
        );
    }

    /// Sends a line to the child's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to child");
        stdin.flush().unwrap();
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (at most [`STEP`]) for the child to exit and returns its exit code.
    pub fn wait(&mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < STEP,
                "child {:?} did not exit within {STEP:?}",
                self.role
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the child to exit and checks it succeeded.
    pub fn wait_ok(&mut self) {
        let code = self.wait();
        assert_eq!(code, 0, "child {:?} exited with {code}", self.role);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A unique service name for one test; removes every /dev/shm object derived from it when
/// dropped (so also when the test panics).
pub struct TestName(String);

impl TestName {
    pub fn new(what: &str) -> TestName {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        TestName(format!(
            "t{}-{what}-{}-{nanos:x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// OS objects of this name left in /dev/shm.
    pub fn leftovers(&self) -> Vec<String> {
        list_shm()
            .into_iter()
            .filter(|f| f.contains(&self.0))
            .collect()
    }

    /// Fails the test if any object of this name is still in /dev/shm.
    #[track_caller]
    pub fn assert_no_leftovers(&self) {
        let left = self.leftovers();
        assert!(left.is_empty(), "left behind in /dev/shm: {left:?}");
    }
}

impl std::ops::Deref for TestName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for TestName {
    fn drop(&mut self) {
        for f in self.leftovers() {
            let _ = std::fs::remove_file(format!("/dev/shm/{f}"));
        }
    }
}

pub fn list_shm() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Fails the test with a message (instead of hanging CI) if it runs longer than `limit`.
/// Drop the guard at the end of the test.
pub struct Watchdog(mpsc::Sender<()>);

pub fn watchdog(what: &str, limit: Duration) -> Watchdog {
    let (tx, rx) = mpsc::channel::<()>();
    let what = what.to_owned();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            eprintln!("watchdog: test {what:?} still running after {limit:?}: failing it");
            // Remove this process's objects: Drop impls will not run after exit.
            let tag = format!("t{}-", std::process::id());
            for f in list_shm().into_iter().filter(|f| f.contains(&tag)) {
                let _ = std::fs::remove_file(format!("/dev/shm/{f}"));
            }
            std::process::exit(101);
        }
    });
    Watchdog(tx)
}

/// Polls `cond` every millisecond until it holds or `limit` passes; returns whether it held.
/// For state another process changes where no event exists to wait on.
pub fn poll_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// This process's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Whether this process runs as root (tests that switch a child to another uid need it).
pub fn is_root() -> bool {
    euid() == 0
}

/// The uid and gid [`become_nobody`] switches to.
pub const NOBODY: u32 = 65534;

/// Switches this (child) process to uid and gid [`NOBODY`]; panics if it cannot.
pub fn become_nobody() {
    // SAFETY: setgid/setuid have no memory preconditions; the child is single-threaded apart
    // from its watchdog, which uses no credentials.
    let ok = unsafe { libc::setgid(NOBODY) == 0 && libc::setuid(NOBODY) == 0 };
    assert!(ok, "setuid({NOBODY}) failed");
}

/// Pins the calling thread to `cpu` (benches and placement tests).
pub fn pin_to_cpu(cpu: usize) -> bool {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}
