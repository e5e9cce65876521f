//! Unit tests of the index on heap memory, small enough for Miri.

use super::*;

/// Heap storage laid out like the segment (the header, then the directory).
struct Heap {
    hdr: Box<IndexHeader>,
    dir: Vec<Entry>,
}

fn zeroed<T>() -> T {
    // SAFETY: only used for the all-atomic structs of this module, for which all-zero
    // bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

fn heap(start: u32, max: u32) -> Heap {
    let h = Heap {
        hdr: Box::new(zeroed()),
        dir: (0..max).map(|_| zeroed()).collect(),
    };
    let cfg = PoolConfig {
        start_buffers: start,
        max_buffers: max,
        min_buffers: Some(0),
        resize_threshold: 0,
        ..PoolConfig::default()
    };
    h.index().init(&cfg);
    h
}

impl Heap {
    fn index(&self) -> Index<'_> {
        Index {
            hdr: &self.hdr,
            dir: &self.dir,
            max_size: PoolConfig::default().max_buffer_size as u64,
        }
    }
}

fn take(ix: &Index<'_>, list: List, status: u32) -> u32 {
    let i = ix.pop_front(list).unwrap().unwrap();
    ix.dir[i as usize].status.store(status, Relaxed);
    i
}

#[test]
fn layout_is_pinned() {
    // tests/pool.rs corrupts entries by offset: keep these in step with it.
    assert_eq!(std::mem::offset_of!(Entry, status), 0);
    assert_eq!(std::mem::offset_of!(Entry, prev), 4);
    assert_eq!(std::mem::offset_of!(Entry, next), 8);
    assert_eq!(std::mem::offset_of!(Entry, generation), 12);
    assert_eq!(std::mem::offset_of!(Entry, len), 16);
    assert_eq!(std::mem::offset_of!(Entry, capacity), 24);
    assert_eq!(std::mem::offset_of!(IndexHeader, signature), 0);
    // tests/scribble.rs writes these.
    assert_eq!(std::mem::offset_of!(IndexHeader, state), 64);
    assert_eq!(std::mem::offset_of!(IndexHeader, free), 72);
    assert_eq!(std::mem::offset_of!(IndexHeader, received), 124);
    assert_eq!(std::mem::offset_of!(IndexHeader, grow_failed), 224);
    assert_eq!(
        (MUTEX_OFFSET, QUEUE_EVENT_OFFSET, DIR_OFFSET),
        (512, 640, 832)
    );
    assert_eq!(DIR_OFFSET % 64, 0);
    assert_eq!(SERVICE_EVENT_OFFSET + 64, DIR_OFFSET);
}

#[test]
fn init_is_valid() {
    let h = heap(3, 8);
    let ix = h.index();
    ix.validate().unwrap();
    assert_eq!(ix.count(List::Free), 3);
    assert_eq!(ix.count(List::Disposed), 5);
    assert_eq!(ix.buffers(), 3);
}

#[test]
fn queue_is_fifo_and_free_is_lifo() {
    let h = heap(8, 8);
    let ix = h.index();
    let n = if cfg!(miri) { 100 } else { 100_000 };
    let mut expect = std::collections::VecDeque::new();
    for round in 0..n {
        if round % 3 != 2 && ix.count(List::Free) > 0 {
            let i = take(&ix, List::Free, QUEUED);
            ix.push_back(List::Queued, i);
            expect.push_back(i);
        } else if let Some(i) = ix.pop_front(List::Queued).unwrap() {
            assert_eq!(Some(i), expect.pop_front());
            ix.dir[i as usize].status.store(FREE, Relaxed);
            ix.push_front(List::Free, i);
            // LIFO: the one just freed is the next one handed out.
            assert_eq!(ix.hdr.free.head.load(Relaxed), i);
        }
        if round % 1000 == 0 {
            ix.validate().unwrap();
        }
    }
    ix.validate().unwrap();
}

#[test]
fn unlink_from_the_middle_and_ends() {
    let h = heap(5, 5);
    let ix = h.index();
    for i in [2, 0, 4, 1, 3] {
        ix.unlink(List::Free, i).unwrap();
        ix.dir[i as usize].status.store(DISPOSED, Relaxed);
        ix.push_back(List::Disposed, i);
        ix.validate().unwrap();
    }
    assert_eq!(ix.count(List::Free), 0);
    assert_eq!(ix.pop_front(List::Free).unwrap(), None);
}

#[test]
fn allocated_and_received_are_counted() {
    let h = heap(4, 4);
    let ix = h.index();
    take(&ix, List::Free, ALLOCATED);
    assert!(ix.validate().is_err(), "count not updated yet");
    ix.hdr.allocated.store(1, Relaxed);
    ix.validate().unwrap();
}

fn corrupted(f: impl Fn(&Index<'_>)) -> Heap {
    let h = heap(6, 8);
    let ix = h.index();
    for _ in 0..3 {
        let i = take(&ix, List::Free, QUEUED);
        ix.dir[i as usize].seq.store(u64::from(10 - i), Relaxed);
        ix.dir[i as usize].len.store(10, Relaxed);
        ix.push_back(List::Queued, i);
    }
    ix.validate().unwrap();
    f(&ix);
    h
}

#[test]
fn validate_finds_corruption_and_repair_fixes_it() {
    type Corrupter = Box<dyn Fn(&Index<'_>)>;
    let cases: Vec<(&str, Corrupter)> = vec![
        (
            "link out of range",
            Box::new(|ix| ix.dir[0].next.store(1000, Relaxed)),
        ),
        ("cycle", Box::new(|ix| ix.dir[1].next.store(0, Relaxed))),
        (
            "bad back link",
            Box::new(|ix| ix.dir[4].prev.store(5, Relaxed)),
        ),
        (
            "bad status",
            Box::new(|ix| ix.dir[3].status.store(77, Relaxed)),
        ),
        (
            "status of another list",
            Box::new(|ix| ix.dir[3].status.store(QUEUED, Relaxed)),
        ),
        (
            "len > capacity",
            Box::new(|ix| ix.dir[1].len.store(u64::MAX, Relaxed)),
        ),
        (
            "capacity > max",
            Box::new(|ix| ix.dir[4].capacity.store(u64::MAX, Relaxed)),
        ),
        (
            "head out of range",
            Box::new(|ix| ix.hdr.queued.head.store(99, Relaxed)),
        ),
        ("count", Box::new(|ix| ix.hdr.free.count.store(1, Relaxed))),
        (
            "allocated count",
            Box::new(|ix| ix.hdr.allocated.store(5, Relaxed)),
        ),
        (
            "entry on no list",
            Box::new(|ix| ix.hdr.disposed.head.store(NIL, Relaxed)),
        ),
    ];
    for (what, f) in cases {
        let h = corrupted(f);
        let ix = h.index();
        assert!(ix.validate().is_err(), "{what}: not detected");
        // Popping never goes out of bounds, whatever it finds.
        for list in [List::Free, List::Queued, List::Disposed] {
            for _ in 0..10 {
                match ix.pop_front(list) {
                    Ok(Some(i)) => assert!(i < 8),
                    _ => break,
                }
            }
        }
    }
    // Repair restores the invariants and keeps the queue's send order.
    let h = corrupted(|ix| {
        ix.dir[1].next.store(1000, Relaxed);
        ix.dir[4].status.store(77, Relaxed);
        ix.hdr.queued.count.store(0, Relaxed);
    });
    let ix = h.index();
    assert!(ix.validate().is_err());
    let report = ix.repair(false);
    ix.validate().unwrap();
    assert_eq!(report.disposed, vec![4]);
    let order: Vec<u32> = std::iter::from_fn(|| ix.pop_front(List::Queued).unwrap()).collect();
    assert_eq!(order, vec![2, 1, 0], "by seq");
}

#[test]
fn repair_for_adoption_redelivers_received_first() {
    let h = heap(4, 4);
    let ix = h.index();
    let a = take(&ix, List::Free, QUEUED);
    ix.dir[a as usize].seq.store(5, Relaxed);
    ix.push_back(List::Queued, a);
    let b = take(&ix, List::Free, RECEIVED);
    ix.dir[b as usize].seq.store(3, Relaxed);
    ix.hdr.received.store(1, Relaxed);
    ix.validate().unwrap();
    let report = ix.repair(true);
    ix.validate().unwrap();
    assert_eq!(report.redelivered, 1);
    assert_eq!(ix.pop_front(List::Queued).unwrap(), Some(b));
    assert_ne!(ix.dir[b as usize].flags.load(Relaxed) & FLAG_REDELIVERED, 0);
    assert_eq!(ix.pop_front(List::Queued).unwrap(), Some(a));
}

// ------------------------------------------------------------------ transitions

/// Two Writers.
fn wa() -> Member {
    Member { pid: 100, token: 1 }
}

fn wb() -> Member {
    Member { pid: 200, token: 2 }
}

/// Every word of the header's lists and counts and of every entry.
fn snapshot(ix: &Index<'_>) -> Vec<u64> {
    let h = ix.hdr;
    let mut v: Vec<u64> = [&h.free, &h.queued, &h.disposed]
        .iter()
        .flat_map(|l| [&l.head, &l.tail, &l.count])
        .chain([&h.allocated, &h.received, &h.state, &h.grow_requested])
        .map(|a| u64::from(a.load(Relaxed)))
        .collect();
    v.push(h.next_seq.load(Relaxed));
    for e in ix.dir {
        v.extend(
            [
                &e.status,
                &e.prev,
                &e.next,
                &e.generation,
                &e.owner_pid,
                &e.flags,
            ]
            .map(|a| u64::from(a.load(Relaxed))),
        );
        v.extend(
            [&e.len, &e.capacity, &e.released_at, &e.seq, &e.owner_token].map(|a| a.load(Relaxed)),
        );
    }
    v
}

/// Runs a transition that must be refused, and checks that it changed nothing.
#[track_caller]
fn refused<T: fmt::Debug>(ix: &Index<'_>, f: impl FnOnce() -> Result<T, Refused>) -> Refused {
    let before = snapshot(ix);
    let r = f().expect_err("an illegal transition was applied");
    assert_eq!(
        snapshot(ix),
        before,
        "a refused transition changed the index ({r})"
    );
    r
}

fn status_of(ix: &Index<'_>, i: u32) -> u32 {
    ix.dir[i as usize].status()
}

/// The members of `list`, head to tail.
fn members(ix: &Index<'_>, list: List) -> Vec<u32> {
    let mut out = Vec::new();
    let mut cur = ix.front(list).unwrap();
    while let Some(i) = cur {
        out.push(i);
        assert!(out.len() <= ix.dir.len(), "{list:?} list: a cycle");
        cur = Some(ix.dir[i as usize].next.load(Relaxed)).filter(|&n| n != NIL);
    }
    out
}

fn generation(ix: &Index<'_>, i: u32) -> u32 {
    ix.dir[i as usize].generation.load(Relaxed)
}

#[test]
fn allocate_hands_a_free_entry_to_its_owner_empty() {
    let h = heap(3, 4);
    let ix = h.index();
    ix.dir[0].len.store(77, Relaxed); // stale: reset by allocate
    let slot = ix.allocate(0, wa()).unwrap();
    assert_eq!((slot.index, slot.len, slot.generation), (0, 0, 1));
    assert_eq!(slot.capacity, PoolConfig::default().initial_buffer_size);
    assert_eq!(status_of(&ix, 0), ALLOCATED);
    assert_eq!(ix.dir[0].owner(), wa());
    assert_eq!(members(&ix, List::Free), [1, 2]);
    ix.validate().unwrap();

    // Not FREE: ALLOCATED, DISPOSED, out of range.
    let r = refused(&ix, || ix.allocate(0, wb()));
    assert_eq!(
        r,
        Refused::Status {
            entry: 0,
            found: ALLOCATED
        }
    );
    refused(&ix, || ix.allocate(3, wa()));
    assert_eq!(
        refused(&ix, || ix.allocate(99, wa())),
        Refused::Status {
            entry: 99,
            found: 0
        }
    );
    // An impossible capacity: refused as Invalid, for the caller to dispose of.
    ix.dir[1].capacity.store(u64::MAX, Relaxed);
    assert!(matches!(
        refused(&ix, || ix.allocate(1, wa())),
        Refused::Invalid(_)
    ));
    ix.dir[1].capacity.store(1, Relaxed);
    // Broken links: refused as Corrupt, for the caller to repair.
    ix.dir[1].prev.store(3, Relaxed);
    assert!(matches!(
        refused(&ix, || ix.allocate(1, wa())),
        Refused::Corrupt(_)
    ));
}

#[test]
fn give_back_puts_an_unsent_buffer_at_the_free_head() {
    let h = heap(3, 3);
    let ix = h.index();
    ix.allocate(2, wa()).unwrap();
    // Another owner, another generation, another status: not the holder's to give back.
    assert_eq!(
        refused(&ix, || ix.give_back(2, wb(), 1)),
        Refused::NotHeld { entry: 2 }
    );
    assert_eq!(
        refused(&ix, || ix.give_back(2, wa(), 2)),
        Refused::NotHeld { entry: 2 }
    );
    refused(&ix, || ix.give_back(0, wa(), 1));
    ix.give_back(2, wa(), 1).unwrap();
    assert_eq!(status_of(&ix, 2), FREE);
    assert_eq!(ix.dir[2].owner(), Member::default());
    assert_eq!(members(&ix, List::Free), [2, 0, 1]);
    ix.validate().unwrap();
    refused(&ix, || ix.give_back(2, wa(), 1));
}

#[test]
fn queue_appends_in_send_order() {
    let h = heap(4, 4);
    let ix = h.index();
    let a = ix.allocate(0, wa()).unwrap();
    let b = ix.allocate(1, wb()).unwrap();
    let cap = a.capacity as u64;
    assert_eq!(
        refused(&ix, || ix.queue(0, wb(), 1, cap, 5)),
        Refused::NotHeld { entry: 0 }
    );
    assert_eq!(
        refused(&ix, || ix.queue(0, wa(), 2, cap, 5)),
        Refused::NotHeld { entry: 0 }
    );
    assert_eq!(
        refused(&ix, || ix.queue(0, wa(), 1, cap + 1, 5)),
        Refused::NotHeld { entry: 0 }
    );
    assert!(matches!(
        refused(&ix, || ix.queue(0, wa(), 1, cap, cap + 1)),
        Refused::Invalid(_)
    ));
    refused(&ix, || ix.queue(2, wa(), 1, cap, 5));
    let s1 = ix.queue(1, wb(), b.generation, cap, 7).unwrap();
    let s0 = ix.queue(0, wa(), a.generation, cap, 5).unwrap();
    assert!(s0 > s1);
    assert_eq!(members(&ix, List::Queued), [1, 0]);
    assert_eq!(
        (status_of(&ix, 0), ix.dir[0].len.load(Relaxed)),
        (QUEUED, 5)
    );
    ix.validate().unwrap();
    refused(&ix, || ix.queue(0, wa(), 1, cap, 5));
}

#[test]
fn receive_takes_a_queued_message_with_checked_values() {
    let h = heap(3, 3);
    let ix = h.index();
    for i in 0..2 {
        let s = ix.allocate(i, wa()).unwrap();
        ix.queue(i, wa(), s.generation, s.capacity as u64, 10 + u64::from(i))
            .unwrap();
    }
    refused(&ix, || ix.receive(2));
    // wa() peer scribbled an impossible length: the message is not handed out.
    ix.dir[1].len.store(u64::MAX, Relaxed);
    assert!(matches!(
        refused(&ix, || ix.receive(1)),
        Refused::Invalid(_)
    ));
    ix.dir[1].len.store(11, Relaxed);
    let slot = ix.receive(0).unwrap();
    assert_eq!((slot.index, slot.len), (0, 10));
    assert_eq!(status_of(&ix, 0), RECEIVED);
    assert_eq!(members(&ix, List::Queued), [1]);
    ix.validate().unwrap();
    refused(&ix, || ix.receive(0));
}

#[test]
fn release_frees_a_received_message_left_whole() {
    let h = heap(2, 2);
    let ix = h.index();
    let s = ix.allocate(0, wa()).unwrap();
    ix.queue(0, wa(), s.generation, s.capacity as u64, 9)
        .unwrap();
    refused(&ix, || ix.release(0, 1));
    ix.receive(0).unwrap();
    assert_eq!(
        refused(&ix, || ix.release(0, 2)),
        Refused::NotHeld { entry: 0 }
    );
    refused(&ix, || ix.release(1, 1));
    ix.release(0, 1).unwrap();
    assert_eq!(status_of(&ix, 0), FREE);
    assert_eq!(ix.dir[0].len.load(Relaxed), 9, "the message is left whole");
    assert_eq!(members(&ix, List::Free), [0, 1]);
    ix.validate().unwrap();
    refused(&ix, || ix.release(0, 1));
}

#[test]
fn dispose_leaves_every_live_status_and_keeps_the_generation() {
    let h = heap(4, 5);
    let ix = h.index();
    let s = ix.allocate(1, wa()).unwrap();
    let cap = s.capacity as u64;
    let s = ix.allocate(2, wa()).unwrap();
    ix.queue(2, wa(), s.generation, cap, 3).unwrap();
    let s = ix.allocate(3, wa()).unwrap();
    ix.queue(3, wa(), s.generation, cap, 3).unwrap();
    ix.receive(3).unwrap();
    // The caller's idea of the status must be right; DISPOSED cannot be disposed of.
    refused(&ix, || ix.dispose(0, ALLOCATED));
    refused(&ix, || ix.dispose(4, DISPOSED));
    refused(&ix, || ix.dispose(4, FREE));
    for (i, from) in [(0, FREE), (1, ALLOCATED), (2, QUEUED), (3, RECEIVED)] {
        ix.dispose(i, from).unwrap();
        assert_eq!(status_of(&ix, i), DISPOSED);
        assert_eq!(ix.dir[i as usize].capacity.load(Relaxed), 0);
        assert_eq!(generation(&ix, i), 1, "names the segment to remove");
        ix.validate().unwrap();
        refused(&ix, || ix.dispose(i, from));
    }
    assert_eq!(members(&ix, List::Disposed), [4, 0, 1, 2, 3]);
    assert_eq!(ix.buffers(), 0);
}

#[test]
fn revive_gives_a_disposed_entry_a_new_buffer() {
    let h = heap(1, 3);
    let ix = h.index();
    assert_eq!(
        refused(&ix, || ix.revive(2, 7, 1, 64)),
        Refused::NotHeld { entry: 2 }
    );
    assert!(matches!(
        refused(&ix, || ix.revive(2, 0, 1, 0)),
        Refused::Invalid(_)
    ));
    assert!(matches!(
        refused(&ix, || ix.revive(2, 0, 1, u64::MAX)),
        Refused::Invalid(_)
    ));
    refused(&ix, || ix.revive(0, 1, 2, 64));
    ix.revive(2, 0, 1, 64).unwrap();
    assert_eq!((status_of(&ix, 2), generation(&ix, 2)), (FREE, 1));
    assert_eq!(ix.dir[2].capacity.load(Relaxed), 64);
    assert_eq!(members(&ix, List::Free), [2, 0]);
    ix.validate().unwrap();
    refused(&ix, || ix.revive(2, 0, 1, 64));
}

#[test]
fn redeliver_marks_a_received_message_queued_again() {
    let h = heap(2, 2);
    let ix = h.index();
    let s = ix.allocate(0, wa()).unwrap();
    ix.queue(0, wa(), s.generation, s.capacity as u64, 4)
        .unwrap();
    refused(&ix, || ix.redeliver(0));
    ix.receive(0).unwrap();
    refused(&ix, || ix.redeliver(1));
    ix.redeliver(0).unwrap();
    assert_eq!(status_of(&ix, 0), QUEUED);
    assert_ne!(ix.dir[0].flags.load(Relaxed) & FLAG_REDELIVERED, 0);
    // It links nothing: repair does, and then the index is whole again.
    ix.repair(false);
    ix.validate().unwrap();
    assert_eq!(members(&ix, List::Queued), [0]);
}

#[test]
fn replace_buffer_is_only_for_the_holder() {
    let h = heap(2, 2);
    let ix = h.index();
    refused(&ix, || ix.replace_buffer(0, wa(), 1, 2, 128));
    ix.allocate(0, wa()).unwrap();
    assert_eq!(
        refused(&ix, || ix.replace_buffer(0, wb(), 1, 2, 128)),
        Refused::NotHeld { entry: 0 }
    );
    assert_eq!(
        refused(&ix, || ix.replace_buffer(0, wa(), 2, 3, 128)),
        Refused::NotHeld { entry: 0 }
    );
    assert!(matches!(
        refused(&ix, || ix.replace_buffer(0, wa(), 1, 2, 0)),
        Refused::Invalid(_)
    ));
    ix.replace_buffer(0, wa(), 1, 2, 128).unwrap();
    assert_eq!(
        (generation(&ix, 0), ix.dir[0].capacity.load(Relaxed)),
        (2, 128)
    );
    ix.validate().unwrap();
}

#[test]
fn header_state_and_grow_request() {
    let h = heap(1, 1);
    let hdr = &*h.hdr;
    assert_eq!(hdr.state(), STATE_OPEN);
    assert!(hdr.park());
    assert!(hdr.is_parked() && !hdr.is_retired());
    assert!(!hdr.park(), "parked once");
    hdr.retire();
    assert!(hdr.is_retired() && !hdr.is_parked());
    assert!(!hdr.park(), "a retired index is never parked");
    hdr.open(ProcessId::from_raw(100, 1), (5, 6));
    assert_eq!(hdr.state(), STATE_OPEN);
    assert_eq!(hdr.reader_pid.load(Relaxed), 100);
    assert!(!hdr.take_grow_request());
    assert!(hdr.request_grow());
    assert!(!hdr.request_grow(), "one request pending at a time");
    assert!(hdr.take_grow_request());
    assert!(!hdr.take_grow_request());
}

/// Random transitions, legal and illegal, against a model of the statuses and lists: each
/// is applied exactly when the model says it is legal, and the index stays valid.
#[test]
fn random_transitions_follow_the_model() {
    const N: u32 = 8;
    let h = heap(5, N);
    let ix = h.index();
    let cap = PoolConfig::default().initial_buffer_size as u64;
    // Per entry: status, owner, generation; and the lists, head first.
    let mut status: Vec<u32> = (0..N)
        .map(|i| if i < 5 { FREE } else { DISPOSED })
        .collect();
    let mut owner = vec![wa(); N as usize];
    let mut gen: Vec<u32> = (0..N).map(|i| u32::from(i < 5)).collect();
    let mut free: Vec<u32> = (0..5).collect();
    let mut queued: Vec<u32> = Vec::new();
    let mut disposed: Vec<u32> = (5..N).collect();
    let remove = |l: &mut Vec<u32>, i: u32| l.retain(|&x| x != i);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut rand = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let steps = if cfg!(miri) { 100 } else { 100_000 };
    let mut applied = 0;
    for step in 0..steps {
        let i = rand(u64::from(N)) as u32;
        let who = if rand(2) == 0 { wa() } else { wb() };
        let k = i as usize;
        let (s, o, g) = (status[k], owner[k], gen[k]);
        let ok = match rand(7) {
            0 => {
                let r = ix.allocate(i, who);
                if s == FREE {
                    (status[k], owner[k]) = (ALLOCATED, who);
                    remove(&mut free, i);
                }
                r.is_ok()
            }
            1 => {
                let r = ix.give_back(i, who, g);
                if s == ALLOCATED && o == who {
                    status[k] = FREE;
                    free.insert(0, i);
                }
                r.is_ok()
            }
            2 => {
                let r = ix.queue(i, who, g, cap, rand(cap + 1));
                if s == ALLOCATED && o == who {
                    status[k] = QUEUED;
                    queued.push(i);
                }
                r.is_ok()
            }
            3 => {
                let r = ix.receive(i);
                if s == QUEUED {
                    status[k] = RECEIVED;
                    remove(&mut queued, i);
                }
                r.is_ok()
            }
            4 => {
                let r = ix.release(i, g);
                if s == RECEIVED {
                    status[k] = FREE;
                    free.insert(0, i);
                }
                r.is_ok()
            }
            5 => {
                let from = 1 + rand(5) as u32;
                let r = ix.dispose(i, from);
                if from == s && s != DISPOSED {
                    remove(&mut free, i);
                    remove(&mut queued, i);
                    status[k] = DISPOSED;
                    disposed.push(i);
                }
                r.is_ok()
            }
            _ => {
                let r = ix.revive(i, g, g + 1, cap);
                if s == DISPOSED {
                    (status[k], gen[k]) = (FREE, g + 1);
                    remove(&mut disposed, i);
                    free.insert(0, i);
                }
                r.is_ok()
            }
        };
        // Every legal transition changes the status.
        let legal = status[k] != s;
        assert_eq!(ok, legal, "step {step}: entry {i} in status {s}");
        applied += u32::from(ok);
        for (j, &st) in status.iter().enumerate() {
            assert_eq!(ix.dir[j].status(), st, "step {step}: entry {j}");
        }
        assert_eq!(members(&ix, List::Free), free, "step {step}");
        assert_eq!(members(&ix, List::Queued), queued, "step {step}");
        assert_eq!(members(&ix, List::Disposed), disposed, "step {step}");
        if cfg!(miri) || step % 1000 == 0 {
            ix.validate().unwrap();
        }
    }
    ix.validate().unwrap();
    assert!(applied > steps / 10, "only {applied} of {steps} applied");
}

#[test]
fn a_queue_head_written_away_is_noticed_and_repaired() {
    let h = heap(4, 4);
    let ix = h.index();
    for seq in 0..2 {
        let i = take(&ix, List::Free, FREE);
        ix.dir[i as usize].status.store(ALLOCATED, Relaxed);
        ix.dir[i as usize].seq.store(seq, Relaxed);
        ix.push_back(List::Queued, i);
        ix.dir[i as usize].status.store(QUEUED, Relaxed);
    }
    ix.hdr.queued.head.store(NIL, Relaxed);
    assert!(ix.front(List::Queued).is_err());
    assert!(ix.validate().is_err());
    ix.repair(false);
    assert_eq!(ix.count(List::Queued), 2);
    assert!(ix.front(List::Queued).unwrap().is_some());
    // And a count written to 0 under a live head.
    ix.hdr.queued.count.store(0, Relaxed);
    assert!(ix.front(List::Queued).is_err());
}
