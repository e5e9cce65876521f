//! Unit tests and loom models of the event word (on heap events).

#[cfg(all(test, not(loom)))]
mod unit {
    use super::super::*;

    const ROUNDS: u32 = if cfg!(miri) { 100 } else { 100_000 };
    /// A lost wake-up fails the test after this long instead of hanging it.
    const WATCHDOG: Duration = Duration::from_secs(30);

    #[test]
    fn set_is_consumed_once() {
        let ev = Event::on_heap(WaitStrategy::Block);
        assert!(!ev.try_wait());
        ev.set();
        ev.set(); // signals do not count
        assert!(ev.try_wait());
        assert!(!ev.try_wait());
        assert!(!ev.wait_timeout(Duration::from_millis(1)));
        assert_eq!(ev.sleepers(), 0, "a timed-out sleeper unregisters");
    }

    /// Ping-pong through two events: every `set` wakes the waiter, sleeping or spinning.
    fn ping_pong(strategy: WaitStrategy, rounds: u32) {
        let (ping, pong) = (Event::on_heap(strategy), Event::on_heap(strategy));
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..rounds {
                    assert!(ping.wait_timeout(WATCHDOG), "lost wake-up");
                    pong.set();
                }
            });
            for _ in 0..rounds {
                ping.set();
                assert!(pong.wait_timeout(WATCHDOG), "lost wake-up");
            }
        });
        assert_eq!((ping.sleepers(), pong.sleepers()), (0, 0));
        assert!(!ping.try_wait() && !pong.try_wait());
    }

    #[test]
    fn ping_pong_block() {
        ping_pong(WaitStrategy::Block, ROUNDS);
    }

    #[test]
    fn ping_pong_adaptive() {
        ping_pong(WaitStrategy::Adaptive, ROUNDS);
    }

    /// After another task was seen on our CPU, adaptive waits sleep at once (and learn
    /// nothing) for a number of waits that doubles while the CPU stays busy and halves
    /// after each wait that finds it free.
    #[test]
    fn busy_cpu_sleeps_at_once_for_a_while() {
        let ev = Event::on_heap(WaitStrategy::Adaptive);
        let budget = ev.spin_iters.load(Ordering::Relaxed);
        ev.cpu_busy();
        assert_eq!(ev.busy_left.load(Ordering::Relaxed), MIN_BUSY_WAITS);
        assert!(!ev.wait_timeout(Duration::from_millis(1)));
        assert_eq!(ev.busy_left.load(Ordering::Relaxed), MIN_BUSY_WAITS - 1);
        assert_eq!(ev.spin_iters.load(Ordering::Relaxed), budget);
        ev.set();
        assert!(ev.wait_timeout(WATCHDOG));
        for _ in 0..32 {
            ev.cpu_busy();
        }
        assert_eq!(ev.busy_waits.load(Ordering::Relaxed), MAX_BUSY_WAITS);
        assert_eq!(ev.busy_left.load(Ordering::Relaxed), MAX_BUSY_WAITS);
        ev.cpu_free();
        assert_eq!(ev.busy_waits.load(Ordering::Relaxed), MAX_BUSY_WAITS / 2);
        for _ in 0..32 {
            ev.cpu_free();
        }
        assert_eq!(ev.busy_waits.load(Ordering::Relaxed), MIN_BUSY_WAITS);
    }

    /// A ping-pong whose waiters all start out treating the CPU as busy still loses no
    /// wake-up.
    #[test]
    fn ping_pong_adaptive_busy_cpu() {
        let (ping, pong) = (
            Event::on_heap(WaitStrategy::Adaptive),
            Event::on_heap(WaitStrategy::Adaptive),
        );
        ping.busy_left.store(u32::MAX, Ordering::Relaxed);
        pong.busy_left.store(u32::MAX, Ordering::Relaxed);
        let rounds = ROUNDS / 10;
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..rounds {
                    assert!(ping.wait_timeout(WATCHDOG), "lost wake-up");
                    pong.set();
                }
            });
            for _ in 0..rounds {
                ping.set();
                assert!(pong.wait_timeout(WATCHDOG), "lost wake-up");
            }
        });
        assert_eq!((ping.sleepers(), pong.sleepers()), (0, 0));
    }

    /// The eventcount: `notify` after the store that makes `wait_for`'s condition true.
    #[test]
    fn notify_wakes_wait_for() {
        let ev = Event::on_heap(WaitStrategy::Block);
        let back = Event::on_heap(WaitStrategy::Block);
        let flag = AtomicU32::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 1..=ROUNDS {
                    let seen = |_| flag.load(Ordering::Acquire) >= i;
                    while !seen(true) {
                        let deadline = sys::deadline_after(Some(WATCHDOG));
                        assert_eq!(ev.wait_for(seen, deadline, None), WaitOutcome::Set);
                    }
                    back.set();
                }
            });
            for i in 1..=ROUNDS {
                flag.store(i, Ordering::Release);
                ev.notify();
                assert!(back.wait_timeout(WATCHDOG), "lost wake-up");
            }
        });
        assert_eq!(ev.sleepers(), 0);
    }

    /// Signals that come at a steady pace from another CPU, slower than the spin: the
    /// waiter learns the pace, naps and spins for them, and misses none.
    #[test]
    #[cfg_attr(miri, ignore = "waits for real time")]
    fn steady_signals_are_napped_for_and_none_is_missed() {
        let ev = Event::on_heap(WaitStrategy::Adaptive);
        let back = Event::on_heap(WaitStrategy::Block);
        let rounds = 300;
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..rounds {
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_micros(400) {
                        std::hint::spin_loop();
                    }
                    ev.set();
                    assert!(back.wait_timeout(WATCHDOG), "lost wake-up");
                }
            });
            for _ in 0..rounds {
                assert!(ev.wait_timeout(WATCHDOG), "lost wake-up");
                back.set();
            }
        });
        assert_eq!(ev.sleepers(), 0);
    }

    /// Yields until `cond` holds; fails the test after [`WATCHDOG`].
    fn until(cond: impl Fn() -> bool) {
        let t = Instant::now();
        while !cond() {
            assert!(t.elapsed() < WATCHDOG, "condition never held");
            std::thread::yield_now();
        }
    }

    /// A broken peer writes the sleeper count away (0) or to garbage while a waiter sleeps
    /// (for longer than the heal interval): the sleeper counts itself again, so `set` still wakes it (within
    /// `HEAL_INTERVAL`), and the count ends right.
    #[test]
    #[cfg_attr(miri, ignore = "waits for real time")]
    fn a_scribbled_sleeper_count_heals() {
        for garbage in [0, SET, u32::MAX - 1, u32::MAX] {
            let ev = Event::on_heap(WaitStrategy::Block);
            std::thread::scope(|s| {
                let waiter = s.spawn(|| ev.wait_timeout(WATCHDOG));
                until(|| ev.sleepers() == 1);
                ev.cell().word.store(garbage & !SET, Ordering::Relaxed);
                // Let the sleeper see the garbage before the signal comes.
                until(|| ev.sleepers() == 1);
                let t = Instant::now();
                ev.set();
                assert!(waiter.join().unwrap(), "never woken");
                assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
            });
            assert_eq!(ev.sleepers(), 0, "garbage {garbage:#x}");
            // And the next hand-off is a normal one.
            std::thread::scope(|s| {
                let waiter = s.spawn(|| ev.wait_timeout(WATCHDOG));
                until(|| ev.sleepers() == 1);
                ev.set();
                assert!(waiter.join().unwrap());
            });
        }
    }
}

/// Loom models of the two hand-offs and of the sleeper count. The kernel sleep is modelled
/// in `sys` (`cfg(loom)`); waits use `Block` and no deadline, so every run is replayable.
#[cfg(all(test, loom))]
mod loom_models {
    use super::super::*;
    use loom::thread;

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound.get_or_insert(3);
        b.check(f);
    }

    fn word(ev: &Event) -> u32 {
        ev.cell().word.load(Ordering::Relaxed)
    }

    /// `set` then `wait`: the waiter returns (a lost wake-up is a loom deadlock), and leaves
    /// the event reset with no sleeper counted.
    #[test]
    fn set_wakes_a_waiter() {
        model(|| {
            let ev = Arc::new(Event::on_heap(WaitStrategy::Block));
            let w = Arc::clone(&ev);
            let t = thread::spawn(move || w.wait());
            ev.set();
            t.join().unwrap();
            assert_eq!(word(&ev), 0);
        });
    }

    /// The eventcount: the notifier stores, then `notify` wakes only a counted sleeper; the
    /// waiter registers, then re-checks. It always sees the store, and the count is 0 after.
    #[test]
    fn notify_wakes_a_wait_for() {
        model(|| {
            let ev = Arc::new(Event::on_heap(WaitStrategy::Block));
            let flag = Arc::new(AtomicU32::new(0));
            let (w, f) = (Arc::clone(&ev), Arc::clone(&flag));
            let t = thread::spawn(move || {
                let out = w.wait_for(|_| f.load(Ordering::Acquire) == 1, None, None);
                assert_eq!(out, WaitOutcome::Set);
                assert_eq!(f.load(Ordering::Relaxed), 1, "returned before the store");
            });
            flag.store(1, Ordering::Release);
            ev.notify();
            t.join().unwrap();
            assert_eq!(ev.sleepers(), 0);
        });
    }

    /// Two waiters that give up after one sleep race one `set`: the sleeper count never
    /// underflows or leaks, and the signal is consumed by exactly one waiter or still set.
    #[test]
    fn sleepers_are_counted_exactly_and_no_signal_is_lost() {
        model(|| {
            let ev = Arc::new(Event::on_heap(WaitStrategy::Block));
            let waiter = |ev: Arc<Event>| {
                thread::spawn(move || {
                    let mut give_up = || false;
                    let out = ev.wait_until(None, Some(&mut give_up));
                    assert!(ev.sleepers() <= 2, "underflow: {:#x}", word(&ev));
                    out == WaitOutcome::Set
                })
            };
            let (a, b) = (waiter(Arc::clone(&ev)), waiter(Arc::clone(&ev)));
            ev.set();
            let woken = u32::from(a.join().unwrap()) + u32::from(b.join().unwrap());
            assert_eq!(woken + (word(&ev) & SET), 1, "signal lost or doubled");
            assert_eq!(ev.sleepers(), 0);
        });
    }
}
