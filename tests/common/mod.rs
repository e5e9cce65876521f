//! Test support shared by every integration test file: child processes that re-execute the
//! test binary in a named role, line-based handshakes over pipes (no sleeps), watchdogs,
//! and unique object names that are cleaned out of /dev/shm even when a test fails.
//!
//! The tests run on Linux and on Windows (under Wine in CI: `../shared/tools/wine-test.sh`);
//! macOS is type-checked only. What differs between the two lives in the platform layer at
//! the end of this file: [`RawObject`] (an object opened raw, as a hostile peer has it),
//! [`list_shm`] (leftovers), the child's parent watch, and the Unix-only credentials and CPU
//! pinning. `Child::kill` is SIGKILL on Unix and TerminateProcess on Windows: both end the
//! process at once, without running any of its code.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ROLE_ENV: &str = "SHMLINK_TEST_ROLE";
const ARGS_ENV: &str = "SHMLINK_TEST_ARGS";
const PARENT_ENV: &str = "SHMLINK_TEST_PARENT";
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
    let parent = ParentWatch::new();
    std::thread::spawn(move || {
        let start = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            if parent.gone() || start.elapsed() > Duration::from_secs(120) {
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
    .env(PARENT_ENV, std::process::id().to_string())
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

    /// Kills the child at once (SIGKILL; TerminateProcess on Windows) and reaps it.
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

    /// OS objects of this name left in /dev/shm (always none on Windows, see [`list_shm`]).
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
            remove_shm(&f);
        }
    }
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
                remove_shm(&f);
            }
            // Nor do `Frozen`'s: a stopped child would outlive the test.
            #[cfg(unix)]
            kill_frozen();
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

/// A child process stopped with SIGSTOP (Unix only: Windows has no signal that freezes a
/// process). Dropping it resumes the child (SIGCONT), also when the test panics; a
/// [`watchdog`] that fires meanwhile kills it, so that no stopped process outlives a test.
#[cfg(unix)]
pub struct Frozen(u32);

/// Pids of the children stopped now (see [`Frozen`]).
#[cfg(unix)]
static FROZEN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

#[cfg(unix)]
fn kill_frozen() {
    for &pid in FROZEN.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// Stops `child` (SIGSTOP) and returns once it is stopped.
#[cfg(unix)]
pub fn freeze(child: &Child) -> Frozen {
    let pid = child.pid();
    FROZEN.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
    let frozen = Frozen(pid);
    // SAFETY: kill has no memory preconditions.
    let r = unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    assert_eq!(r, 0, "SIGSTOP");
    let mut status = 0;
    // SAFETY: `status` is writable. WUNTRACED returns when the child stops (without reaping
    // it); an exited child is reaped here, and the test fails below.
    let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WUNTRACED) };
    assert!(
        r == pid as i32 && libc::WIFSTOPPED(status),
        "child {pid} did not stop (waitpid {r}, status {status:#x})"
    );
    frozen
}

/// Stops `child`, which keeps taking and releasing the process-shared lock whose state word
/// is at byte `at` of `obj`, at a moment it holds that lock: retries until the word stays
/// set while the child is stopped (other holders, in this process, keep it for
/// microseconds). Linux and macOS: a free lock word is 0. Linux: the holder's pid, at
/// byte `at + 8` (pinned in src/sys/linux.rs), must be recorded too, so that the child is
/// not stopped in the instant between taking the lock and recording itself (or the
/// reverse, when unlocking).
#[cfg(unix)]
pub fn freeze_holding(child: &Child, obj: &RawObject, at: usize) -> Frozen {
    let recorded = |obj: &RawObject| cfg!(not(target_os = "linux")) || obj.read_u32(at + 8) != 0;
    for _ in 0..20_000 {
        let frozen = freeze(child);
        let held = (0..30).all(|_| {
            let held = obj.read_u32(at) != 0 && recorded(obj);
            std::thread::sleep(Duration::from_millis(1));
            held
        });
        if held {
            return frozen;
        }
        drop(frozen);
        std::thread::sleep(Duration::from_micros(300));
    }
    panic!("child {} was never stopped holding the lock", child.pid());
}

#[cfg(unix)]
impl Frozen {
    /// Resumes the child (as dropping does).
    pub fn thaw(self) {}
}

#[cfg(unix)]
impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
        FROZEN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&p| p != self.0);
    }
}

// ------------------------------------------------------------------------- platform layer

/// How a child notices that its parent (the test) is gone, so that it never outlives it.
#[cfg(unix)]
struct ParentWatch(u32);

#[cfg(unix)]
impl ParentWatch {
    fn new() -> ParentWatch {
        ParentWatch(std::os::unix::process::parent_id())
    }

    /// Reparented: the parent died.
    fn gone(&self) -> bool {
        std::os::unix::process::parent_id() != self.0
    }
}

/// Windows has no reparenting: the child holds a handle to its parent (pid passed by
/// [`spawn`]), which is signalled when the parent exits.
#[cfg(windows)]
struct ParentWatch(Option<win::Handle>);

#[cfg(windows)]
impl ParentWatch {
    fn new() -> ParentWatch {
        let pid = std::env::var(PARENT_ENV).ok().and_then(|p| p.parse().ok());
        ParentWatch(pid.and_then(win::open_process))
    }

    fn gone(&self) -> bool {
        self.0.as_ref().is_some_and(win::is_signalled)
    }
}

/// Names of the shared-memory objects that exist now, for leftover checks.
///
/// Linux: the files in /dev/shm. Windows: none, ever: a section is removed by the kernel
/// when its last handle closes (exit and TerminateProcess included), so nothing can be left
/// behind to list, and the object namespace offers no listing to check it with.
pub fn list_shm() -> Vec<String> {
    #[cfg(unix)]
    return std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    #[cfg(windows)]
    return Vec::new();
}

/// Removes a leftover object named by [`list_shm`] (nothing to do on Windows).
fn remove_shm(file: &str) {
    #[cfg(unix)]
    let _ = std::fs::remove_file(format!("/dev/shm/{file}"));
    #[cfg(windows)]
    let _ = file;
}

/// OS name of service `name`'s object with tag `tag` (`seg`, `chan`, `pool`, `mutex`,
/// `pool.b<i>` ...), as `src/name.rs` spells it for short names.
pub fn os_name(name: &str, tag: &str) -> String {
    #[cfg(unix)]
    return format!("/shmlink.{name}.{tag}");
    #[cfg(windows)]
    return format!("Local\\shmlink.{name}.{tag}");
}

/// A service's object mapped raw, read and written with volatile accesses and no locking,
/// as a hostile or buggy peer has it. Linux: the /dev/shm file, mapped shared. Windows: the
/// named section, opened with `OpenFileMappingW` and mapped whole.
pub struct RawObject {
    ptr: *mut u8,
    len: usize,
    #[cfg(windows)]
    _section: win::Handle,
}

impl RawObject {
    /// Opens `os_name` (see [`os_name`]); panics if it does not exist.
    pub fn open(os_name: &str) -> RawObject {
        Self::try_open(os_name).unwrap_or_else(|e| panic!("raw open of {os_name}: {e}"))
    }

    /// Opens `os_name` if it exists.
    pub fn try_open(os_name: &str) -> std::io::Result<RawObject> {
        #[cfg(unix)]
        {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(format!("/dev/shm{os_name}"))?;
            let len = f.metadata()?.len() as usize;
            Ok(RawObject {
                ptr: unix_map(&f, len),
                len,
            })
        }
        #[cfg(windows)]
        {
            let (section, ptr, len) = win::open_section(os_name)?;
            Ok(RawObject {
                ptr,
                len,
                _section: section,
            })
        }
    }

    /// Creates `os_name` holding `bytes` (an object that is not ours: a foreign squatter).
    /// On Windows the section lives as long as the returned value (or another handle).
    pub fn create_foreign(os_name: &str, bytes: &[u8]) -> RawObject {
        #[cfg(unix)]
        {
            std::fs::write(format!("/dev/shm{os_name}"), bytes).unwrap();
            let o = RawObject::open(os_name);
            assert_eq!(o.len, bytes.len());
            o
        }
        #[cfg(windows)]
        {
            let (section, ptr, len) = win::create_section(os_name, bytes.len()).unwrap();
            let o = RawObject {
                ptr,
                len,
                _section: section,
            };
            o.write(0, bytes);
            o
        }
    }

    /// Bytes mapped (Windows: whole pages).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn read(&self, at: usize, n: usize) -> Vec<u8> {
        assert!(at + n <= self.len, "raw read out of bounds");
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: in bounds of the mapping (checked), which lives as long as self.
            out.push(unsafe { std::ptr::read_volatile(self.ptr.add(at + i)) });
        }
        out
    }

    pub fn write(&self, at: usize, bytes: &[u8]) {
        assert!(at + bytes.len() <= self.len, "raw write out of bounds");
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: in bounds of the mapping (checked), which lives as long as self.
            unsafe { std::ptr::write_volatile(self.ptr.add(at + i), b) };
        }
    }

    pub fn read_u32(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.read(at, 4).try_into().unwrap())
    }

    pub fn write_u32(&self, at: usize, v: u32) {
        self.write(at, &v.to_ne_bytes())
    }

    pub fn read_u64(&self, at: usize) -> u64 {
        u64::from_ne_bytes(self.read(at, 8).try_into().unwrap())
    }

    pub fn write_u64(&self, at: usize, v: u64) {
        self.write(at, &v.to_ne_bytes())
    }
}

impl Drop for RawObject {
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            // SAFETY: the mapping made in `unix_map`, unused after this.
            unsafe { libc::munmap(self.ptr.cast(), self.len.max(1)) };
        }
        #[cfg(windows)]
        win::unmap(self.ptr);
    }
}

#[cfg(unix)]
fn unix_map(f: &std::fs::File, len: usize) -> *mut u8 {
    use std::os::fd::AsRawFd;
    // SAFETY: mapping a file we opened read-write, shared; checked for MAP_FAILED.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len.max(1),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(ptr, libc::MAP_FAILED, "mmap");
    ptr.cast()
}

#[cfg(windows)]
mod win {
    use std::os::windows::ffi::OsStrExt;
    use windows_sys::Win32::Foundation::{
        CloseHandle, GetLastError, ERROR_ALREADY_EXISTS, HANDLE, INVALID_HANDLE_VALUE,
        WAIT_OBJECT_0,
    };
    use windows_sys::Win32::System::Memory::{
        CreateFileMappingW, MapViewOfFile, OpenFileMappingW, UnmapViewOfFile, VirtualQuery,
        FILE_MAP_READ, FILE_MAP_WRITE, MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS,
        PAGE_READWRITE,
    };
    use windows_sys::Win32::System::Threading::{
        OpenProcess, WaitForSingleObject, PROCESS_SYNCHRONIZE,
    };

    /// A kernel handle, closed on drop.
    pub struct Handle(HANDLE);
    // SAFETY: kernel handles are process-wide values usable from any thread.
    unsafe impl Send for Handle {}

    impl Drop for Handle {
        fn drop(&mut self) {
            // SAFETY: we own the handle.
            unsafe { CloseHandle(self.0) };
        }
    }

    fn wide(s: &str) -> Vec<u16> {
        std::ffi::OsStr::new(s).encode_wide().chain([0]).collect()
    }

    pub fn open_process(pid: u32) -> Option<Handle> {
        // SAFETY: no memory preconditions; null means failure.
        let h = unsafe { OpenProcess(PROCESS_SYNCHRONIZE, 0, pid) };
        (!h.is_null()).then_some(Handle(h))
    }

    pub fn is_signalled(h: &Handle) -> bool {
        // SAFETY: a valid handle with SYNCHRONIZE access.
        unsafe { WaitForSingleObject(h.0, 0) == WAIT_OBJECT_0 }
    }

    fn map(section: Handle) -> std::io::Result<(Handle, *mut u8, usize)> {
        // SAFETY: a valid section handle with read/write access; 0, 0 maps all of it.
        let view = unsafe { MapViewOfFile(section.0, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, 0) };
        if view.Value.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: plain data, valid zeroed; VirtualQuery writes it.
        let mut info: MEMORY_BASIC_INFORMATION = unsafe { std::mem::zeroed() };
        // SAFETY: `view` is a live view, `info` is writable.
        let n = unsafe { VirtualQuery(view.Value, &mut info, std::mem::size_of_val(&info)) };
        assert_ne!(n, 0, "VirtualQuery");
        Ok((section, view.Value.cast(), info.RegionSize))
    }

    pub fn open_section(name: &str) -> std::io::Result<(Handle, *mut u8, usize)> {
        let w = wide(name);
        // SAFETY: NUL-terminated name that outlives the call.
        let h = unsafe { OpenFileMappingW(FILE_MAP_READ | FILE_MAP_WRITE, 0, w.as_ptr()) };
        if h.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        map(Handle(h))
    }

    pub fn create_section(name: &str, size: usize) -> std::io::Result<(Handle, *mut u8, usize)> {
        let w = wide(name);
        // SAFETY: NUL-terminated name; pagefile-backed; default security.
        let h = unsafe {
            CreateFileMappingW(
                INVALID_HANDLE_VALUE,
                std::ptr::null(),
                PAGE_READWRITE,
                0,
                size as u32,
                w.as_ptr(),
            )
        };
        if h.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        let h = Handle(h);
        // SAFETY: no preconditions.
        if unsafe { GetLastError() } == ERROR_ALREADY_EXISTS {
            return Err(std::io::ErrorKind::AlreadyExists.into());
        }
        map(h)
    }

    pub fn unmap(ptr: *mut u8) {
        // SAFETY: the base of a view mapped by `map`, unused after this.
        unsafe { UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS { Value: ptr.cast() }) };
    }
}

/// This process's effective uid.
#[cfg(unix)]
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Whether this process runs as root (tests that switch a child to another uid need it).
#[cfg(unix)]
pub fn is_root() -> bool {
    euid() == 0
}

/// The uid and gid [`become_nobody`] switches to.
#[cfg(unix)]
pub const NOBODY: u32 = 65534;

/// Switches this (child) process to uid and gid [`NOBODY`]; panics if it cannot.
#[cfg(unix)]
pub fn become_nobody() {
    // SAFETY: setgid/setuid have no memory preconditions; the child is single-threaded apart
    // from its watchdog, which uses no credentials.
    let ok = unsafe { libc::setgid(NOBODY) == 0 && libc::setuid(NOBODY) == 0 };
    assert!(ok, "setuid({NOBODY}) failed");
}

/// This process's effective gid.
#[cfg(unix)]
pub fn egid() -> u32 {
    // SAFETY: getegid has no preconditions.
    unsafe { libc::getegid() }
}

/// Switches this (child) process to uid and gid [`NOBODY`] with `group` as its only
/// supplementary group (a user of the group a service is shared with); panics if it cannot.
#[cfg(unix)]
pub fn become_nobody_in_group(group: u32) {
    become_user_in_group(NOBODY, group);
}

/// Switches this (child) process to uid and gid `uid` with `group` as its only
/// supplementary group; panics if it cannot.
#[cfg(unix)]
pub fn become_user_in_group(uid: u32, group: u32) {
    // SAFETY: setgroups reads one gid from a live local; setgid/setuid as in
    // `become_nobody`.
    let ok = unsafe {
        libc::setgroups(1, &group) == 0 && libc::setgid(uid) == 0 && libc::setuid(uid) == 0
    };
    assert!(ok, "switching to uid {uid} in group {group} failed");
}

/// Pins the calling thread to `cpu` (benches and placement tests).
#[cfg(target_os = "linux")]
pub fn pin_to_cpu(cpu: usize) -> bool {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}
