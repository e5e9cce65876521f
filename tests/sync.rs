//! Mutex and Event across real processes, with real SIGKILLs (TerminateProcess on Windows,
//! where the mutex is a named kernel mutex and owner death is WAIT_ABANDONED).

mod common;

use std::time::{Duration, Instant};

use common::{
    child_exit, child_role, hear_parent, poll_until, spawn, tell_parent, watchdog, TestName,
};
use shmlink::{Error, Event, EventPair, Locked, Mutex, ProcessId, Segment, WaitStrategy};

/// The lock word of glibc's pthread mutex (first field), read through the object's file;
/// bit 31 (FUTEX_WAITERS) is set once a waiter sleeps in the kernel.
#[cfg(target_os = "linux")]
fn mutex_has_sleeping_waiter(name: &str) -> bool {
    let bytes = std::fs::read(format!("/dev/shm/shmlink.{name}.mutex")).unwrap();
    let at = common::HEADER_SIZE;
    u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) & 0x8000_0000 != 0
}

/// Elsewhere (Windows' kernel mutex) no waiter count can be seen. The waiter has said
/// "locking" and is in, or about to enter, `WaitForSingleObject`; an abandoned mutex is
/// reported to it either way (a locker arriving after the death:
/// `mutex_fresh_locker_is_told_the_owner_died...`).
#[cfg(not(target_os = "linux"))]
fn mutex_has_sleeping_waiter(_name: &str) -> bool {
    true
}

/// Child roles shared by the mutex tests.
fn mutex_child(role: &str, args: &[String]) -> ! {
    let m = Mutex::open(&args[0]).unwrap();
    match role {
        // Lock and hold until killed.
        "holder" => {
            let _g = m.lock().unwrap();
            tell_parent("locked");
            hear_parent();
            child_exit(1)
        }
        // Block in lock(); report how the lock was obtained.
        "waiter" => {
            tell_parent("locking");
            let locked = m.lock().unwrap();
            let how = if locked.owner_died() {
                "owner_died"
            } else {
                "acquired"
            };
            drop(locked); // exit() skips destructors: unlock first, or we die holding it
            tell_parent(how);
            child_exit(0)
        }
        _ => unreachable!(),
    }
}

#[test]
fn mutex_waiter_blocked_in_lock_gets_it_when_the_owner_is_killed() {
    if let Some((role, args)) = child_role() {
        mutex_child(&role, &args);
    }
    let _w = watchdog("mutex_waiter_blocked", Duration::from_secs(60));
    let name = TestName::new("mtx-blocked");
    let m = Mutex::create(&name).unwrap();
    let test = "mutex_waiter_blocked_in_lock_gets_it_when_the_owner_is_killed";
    let mut holder = spawn(test, "holder", &[&name]);
    holder.expect("locked");
    let mut waiter = spawn(test, "waiter", &[&name]);
    waiter.expect("locking");
    assert!(
        poll_until(Duration::from_secs(10), || mutex_has_sleeping_waiter(&name)),
        "the waiter never blocked in the kernel"
    );
    let killed = Instant::now();
    holder.kill();
    waiter.expect("owner_died");
    let took = killed.elapsed();
    eprintln!("blocked waiter got the lock {took:?} after the owner was killed");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    waiter.wait_ok();
    // The mutex is consistent again: a normal lock works and reports a clean handover.
    assert!(!m.lock().unwrap().owner_died());
}

#[test]
fn mutex_fresh_locker_is_told_the_owner_died_and_rounds_continue() {
    if let Some((role, args)) = child_role() {
        if role == "rounds" {
            let m = Mutex::open(&args[0]).unwrap();
            let seg = Segment::open(&args[0]).unwrap();
            rounds(&m, &seg, 1000);
            child_exit(0);
        }
        mutex_child(&role, &args);
    }
    let _w = watchdog("mutex_fresh_locker", Duration::from_secs(120));
    let name = TestName::new("mtx-fresh");
    let m = Mutex::create(&name).unwrap();
    let test = "mutex_fresh_locker_is_told_the_owner_died_and_rounds_continue";
    let mut holder = spawn(test, "holder", &[&name]);
    holder.expect("locked");
    holder.kill();
    let start = Instant::now();
    let locked = m
        .lock_timeout(Duration::from_secs(5))
        .expect("lock after owner death");
    let took = start.elapsed();
    assert!(
        matches!(locked, Locked::OwnerDied(_)),
        "the fresh locker must be told the owner died"
    );
    eprintln!("fresh locker got the lock in {took:?}");
    assert!(took < Duration::from_secs(1));
    drop(locked);

    // 1000 more cross-process rounds each: a non-atomic counter under the lock must add up.
    let seg = Segment::builder(&name).size(64).create().unwrap();
    let mut child = spawn(test, "rounds", &[&name]);
    rounds(&m, &seg, 1000);
    child.wait_ok();
    let _g = m.lock().unwrap();
    // SAFETY: the data region holds at least 8 bytes; we hold the lock.
    let total = unsafe { seg.as_ptr().cast::<u64>().read_volatile() };
    assert_eq!(total, 2000, "lost updates: the mutex did not exclude");
}

/// Increments the counter at the start of `seg` `n` times, each under the lock, with a
/// deliberately non-atomic read-yield-write.
fn rounds(m: &Mutex, seg: &Segment, n: u32) {
    let counter = seg.as_ptr().cast::<u64>();
    for _ in 0..n {
        let _g = m.lock().unwrap().into_guard();
        // SAFETY: 8 bytes in the data region, accessed only under the lock.
        unsafe {
            let v = counter.read_volatile();
            std::thread::yield_now();
            counter.write_volatile(v + 1);
        }
    }
}

#[test]
fn mutex_timeouts_try_lock_and_relock_errors() {
    if let Some((role, args)) = child_role() {
        mutex_child(&role, &args);
    }
    let _w = watchdog("mutex_timeouts", Duration::from_secs(60));
    let name = TestName::new("mtx-timeout");
    let m = Mutex::create(&name).unwrap();
    {
        let _g = m.lock().unwrap();
        assert!(
            matches!(m.lock(), Err(Error::WouldDeadlock)),
            "relocking from the holder must be an error, not a hang"
        );
    }
    let mut holder = spawn(
        "mutex_timeouts_try_lock_and_relock_errors",
        "holder",
        &[&name],
    );
    holder.expect("locked");
    assert!(m.try_lock().unwrap().is_none());
    let start = Instant::now();
    assert!(matches!(
        m.lock_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    assert!(start.elapsed() >= Duration::from_millis(50));
    holder.kill();
}

/// Child side of the ping-pong: answers `rounds` exec signals, echoing the round number.
fn pong(name: &str, strategy: WaitStrategy, rounds: u64) {
    let pair = EventPair::open(name).unwrap().wait_strategy(strategy);
    let seg = Segment::open(name).unwrap();
    let round = seg.as_ptr().cast::<u64>();
    tell_parent("ready");
    for i in 1..=rounds {
        assert!(
            pair.exec().wait_timeout(common::STEP),
            "lost wake-up: exec {i} never came"
        );
        // SAFETY: 16 bytes in the data region; the exec/done handshake orders the accesses.
        unsafe {
            assert_eq!(round.read_volatile(), i, "exec for the wrong round");
            round.add(1).write_volatile(i);
        }
        pair.done().set();
    }
}

fn ping_pong(test: &str, strategy: WaitStrategy, label: &str) {
    const ROUNDS: u64 = 100_000;
    let _w = watchdog(test, Duration::from_secs(240));
    let name = TestName::new(label);
    let pair = EventPair::create(&name).unwrap().wait_strategy(strategy);
    let seg = Segment::builder(&name).size(64).create().unwrap();
    let round = seg.as_ptr().cast::<u64>();
    let mut child = spawn(test, "pong", &[&name]);
    child.expect("ready");
    let start = Instant::now();
    for i in 1..=ROUNDS {
        // SAFETY: as in `pong`.
        unsafe { round.write_volatile(i) };
        pair.exec().set();
        assert!(
            pair.done().wait_timeout(common::STEP),
            "lost wake-up: done {i} never came"
        );
        // SAFETY: as in `pong`.
        let answered = unsafe { round.add(1).read_volatile() };
        assert_eq!(answered, i, "answer for the wrong round");
    }
    eprintln!(
        "{label}: {ROUNDS} round trips in {:?} ({:?} each)",
        start.elapsed(),
        start.elapsed() / ROUNDS as u32
    );
    child.wait_ok();
}

macro_rules! ping_pong_test {
    ($test:ident, $strategy:expr) => {
        #[test]
        fn $test() {
            if let Some((_, args)) = child_role() {
                pong(&args[0], $strategy, 100_000);
                child_exit(0);
            }
            ping_pong(stringify!($test), $strategy, stringify!($test));
        }
    };
}

ping_pong_test!(event_ping_pong_adaptive, WaitStrategy::Adaptive);
ping_pong_test!(event_ping_pong_block, WaitStrategy::Block);
ping_pong_test!(
    event_ping_pong_spin_then_block,
    WaitStrategy::SpinThenBlock { spins: 2000 }
);
ping_pong_test!(event_ping_pong_spin, WaitStrategy::Spin);

#[test]
fn event_wait_timeout_without_set_returns_false_after_the_timeout() {
    let name = TestName::new("ev-timeout");
    for strategy in [
        WaitStrategy::Adaptive,
        WaitStrategy::Block,
        WaitStrategy::Spin,
        WaitStrategy::SpinThenBlock { spins: 100 },
    ] {
        let ev = Event::create(&name).unwrap().wait_strategy(strategy);
        let start = Instant::now();
        assert!(!ev.wait_timeout(Duration::from_millis(50)), "{strategy:?}");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(50),
            "{strategy:?} returned after {took:?}"
        );
        assert!(took < Duration::from_secs(10), "{strategy:?} took {took:?}");
    }
}

#[test]
fn event_is_auto_reset_and_sets_do_not_count() {
    let name = TestName::new("ev-auto");
    let ev = Event::create(&name).unwrap();
    let peer = Event::open(&name).unwrap();
    assert!(!peer.try_wait());
    ev.set();
    ev.set();
    assert!(peer.try_wait());
    assert!(!peer.try_wait(), "two sets before a wait are one signal");
    ev.set();
    assert!(peer.wait_timeout(Duration::from_secs(1)));
    assert!(!ev.wait_timeout(Duration::from_millis(1)));
}

#[test]
fn event_waiter_killed_inside_wait_does_not_break_the_next_pair() {
    if let Some((_, args)) = child_role() {
        let ev = Event::open(&args[0])
            .unwrap()
            .wait_strategy(WaitStrategy::Block);
        tell_parent("waiting");
        ev.wait();
        child_exit(1); // never set: we get killed in there
    }
    let _w = watchdog("event_waiter_killed", Duration::from_secs(60));
    let name = TestName::new("ev-killed");
    let ev = Event::create(&name).unwrap();
    let mut child = spawn(
        "event_waiter_killed_inside_wait_does_not_break_the_next_pair",
        "waiter",
        &[&name],
    );
    child.expect("waiting");
    assert!(
        poll_until(Duration::from_secs(10), || ev.sleepers() == 1),
        "the child never slept in the event"
    );
    child.kill();
    // Nothing stale: no signal appears, and a set/wait pair works as before.
    let peer = Event::open(&name).unwrap();
    assert!(!peer.wait_timeout(Duration::from_millis(20)));
    ev.set();
    assert!(
        peer.wait_timeout(Duration::from_secs(1)),
        "the set after the killed waiter was lost"
    );
    assert!(!peer.try_wait());
    // And across threads, a sleeper is woken.
    std::thread::scope(|s| {
        let t = s.spawn(|| peer.wait_timeout(common::STEP));
        assert!(poll_until(Duration::from_secs(10), || ev.sleepers() >= 2));
        ev.set();
        assert!(t.join().unwrap());
    });
}

#[test]
fn process_identity_survives_death_zombies_and_pid_reuse() {
    if child_role().is_some() {
        tell_parent("up");
        hear_parent();
        child_exit(0);
    }
    let me = ProcessId::current();
    assert!(me.is_alive());
    assert!(
        !ProcessId::new(me.pid(), me.start_time() + 1).is_alive(),
        "same pid, other start time: a reused pid"
    );
    assert!(!ProcessId::new(0, 0).is_alive());
    assert!(
        !ProcessId::new(u32::MAX, 0).is_alive(),
        "a negative pid_t must not address a process group"
    );
    let mut child = spawn(
        "process_identity_survives_death_zombies_and_pid_reuse",
        "sleeper",
        &[],
    );
    child.expect("up");
    let pid = child.pid();
    // Linux only: zombies and /proc (a Windows process ends with TerminateProcess; its
    // handle, held by `child`, keeps the pid from reuse but the process counts as dead).
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain kill(2) of our own child.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        // Killed but not yet reaped: a zombie, which must count as dead.
        let stat =
            |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            poll_until(Duration::from_secs(10), || stat(pid).contains(") Z")),
            "child did not become a zombie"
        );
        assert!(!ProcessId::new(pid, 0).is_alive());
    }
    child.kill();
    assert!(!ProcessId::new(pid, 0).is_alive());
}

#[test]
// Not on Windows: the mutex there is a named kernel object; nothing of it lies in shared
// memory for a peer to rewrite.
#[cfg(unix)]
fn a_hostile_process_rewriting_a_held_lock_cannot_crash_the_holder_or_wedge_the_next_locker() {
    use std::os::unix::fs::FileExt;
    let test =
        "a_hostile_process_rewriting_a_held_lock_cannot_crash_the_holder_or_wedge_the_next_locker";
    if let Some((_, args)) = child_role() {
        let m = Mutex::open(&args[0]).unwrap();
        for _ in 0..args[1].parse::<u32>().unwrap() {
            assert_eq!(hear_parent().as_deref(), Some("lock"));
            let g = m.lock().unwrap();
            tell_parent("locked");
            assert_eq!(hear_parent().as_deref(), Some("unlock"));
            drop(g);
            tell_parent("unlocked");
        }
        child_exit(0);
    }
    let _w = watchdog(test, Duration::from_secs(60));
    let name = TestName::new("mtx-hostile");
    let m = Mutex::create(&name).unwrap();
    // Every byte of the lock's 64 bytes of shared memory, in several patterns: all ones,
    // all zeros, looks-like-pointers (this process's own addresses), and pseudo-random.
    let here = &name as *const _ as u64;
    let mut patterns: Vec<[u8; 64]> = vec![[0xff; 64], [0; 64]];
    let mut p = [0u8; 64];
    for (i, chunk) in p.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&(here + 8 * i as u64).to_ne_bytes());
    }
    patterns.push(p);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..5 {
        for b in p.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        patterns.push(p);
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/shmlink.{}.mutex", name.as_str()))
        .unwrap();
    let rounds = patterns.len().to_string();
    let mut holder = spawn(test, "holder", &[&name, &rounds]);
    for (i, pattern) in patterns.iter().enumerate() {
        holder.send("lock");
        holder.expect("locked");
        file.write_all_at(pattern, common::HEADER_SIZE as u64)
            .unwrap();
        holder.send("unlock");
        holder.expect("unlocked"); // the holder's unlock returned: it survived
        let locked = m
            .lock_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("pattern {i}: the next locker was not served: {e}"));
        eprintln!(
            "pattern {i}: next locker served ({})",
            if locked.owner_died() {
                "owner died"
            } else {
                "acquired"
            }
        );
        drop(locked);
    }
    holder.wait_ok();
    // The lock works normally afterwards.
    assert!(!m.lock().unwrap().owner_died());
}
