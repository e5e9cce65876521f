//! Plain-old-data messages (feature `pod`) across real processes: values written and read in
//! place in pool buffers and channel slots, alignment, and peers of another schema or layout
//! refused. Runs on Linux and Windows (under Wine in CI).
#![cfg(feature = "pod")]

mod common;

use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use common::{child_exit, child_role, hear_parent, spawn, tell_parent, watchdog, TestName};
use shmlink::pod::{self, PodClient, PodError, PodReader, PodWriter};
use shmlink::{PoolConfig, Reader, Schema, Server, Writer};

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Tick {
    seq: u64,
    price: f64,
    qty: u32,
    side: u32,
}

/// A type of the largest supported alignment: it must sit at a 64-byte boundary.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line {
    words: [u64; 8],
}

const TICKS: Schema = Schema::new("test.tick", 1);
const LINES: Schema = Schema::new("test.line", 1);

fn is_aligned<T>(value: &T, to: usize) -> bool {
    (value as *const T as usize) % to == 0
}

#[test]
fn a_writer_process_fills_ticks_in_place_and_the_reader_reads_them_in_place_aligned() {
    const TEST: &str =
        "a_writer_process_fills_ticks_in_place_and_the_reader_reads_them_in_place_aligned";
    if let Some((_, args)) = child_role() {
        let ticks = PodWriter::<Tick>::new(Writer::connect(&args[0]).unwrap(), TICKS);
        let lines = PodWriter::<Line>::new(Writer::connect(&args[0]).unwrap(), LINES);
        for seq in 0..2_000u64 {
            let mut t = ticks.acquire_timeout(common::STEP).unwrap();
            assert!(is_aligned(&*t, 64), "a value starts its 64-aligned buffer");
            t.seq = seq;
            t.price = seq as f64 / 4.0;
            t.qty = seq as u32 * 3;
            ticks.send(t).unwrap();
        }
        lines.send_value(&Line { words: [7; 8] }).unwrap();
        tell_parent("sent");
        hear_parent();
        child_exit(0);
    }
    let _w = watchdog(TEST, Duration::from_secs(60));
    let name = TestName::new("pod-pool");
    let reader = Reader::create(&name, PoolConfig::default()).unwrap();
    let ticks = PodReader::<Tick>::new(reader, TICKS);
    let mut child = spawn(TEST, "writer", &[&name]);
    for seq in 0..2_000u64 {
        let t = ticks.recv_timeout(common::STEP).unwrap();
        assert!(is_aligned(&*t, 64));
        let want = Tick {
            seq,
            price: seq as f64 / 4.0,
            qty: seq as u32 * 3,
            side: 0,
        };
        assert_eq!(*t, want);
        assert_eq!(t.writer().pid(), child.pid());
    }
    child.expect("sent");
    let lines = PodReader::<Line>::new(ticks.into_inner(), LINES);
    let line = lines.recv_timeout(common::STEP).unwrap();
    assert!(is_aligned(&*line, 64), "a 64-aligned type sits at 64");
    assert_eq!(line.words, [7; 8]);
    child.send("exit");
    child.wait_ok();
    drop((line, lines));
    name.assert_no_leftovers();
}

#[test]
fn a_reader_refuses_messages_of_another_schema_layout_or_none_and_goes_on() {
    let _w = watchdog("pod refusals", Duration::from_secs(60));
    let name = TestName::new("pod-refuse");
    let reader =
        PodReader::<Tick>::new(Reader::create(&name, PoolConfig::default()).unwrap(), TICKS);
    let raw = Writer::connect(&name).unwrap();
    let v2 = PodWriter::<Tick>::new(Writer::connect(&name).unwrap(), Schema::new("test.tick", 2));
    let wider = PodWriter::<[u64; 5]>::new(Writer::connect(&name).unwrap(), TICKS);
    let good = PodWriter::<Tick>::new(Writer::connect(&name).unwrap(), TICKS);
    let tick = Tick {
        seq: 9,
        price: 1.5,
        qty: 2,
        side: 1,
    };

    v2.send_value(&tick).unwrap();
    let e = reader.recv_timeout(common::STEP).unwrap_err();
    assert!(matches!(e, PodError::SchemaMismatch { .. }), "{e}");
    wider.send_value(&[1; 5]).unwrap();
    let e = reader.recv_timeout(common::STEP).unwrap_err();
    assert!(matches!(e, PodError::SchemaMismatch { .. }), "{e}");
    let mut b = raw.acquire().unwrap();
    b.extend_from_slice(b"hello").unwrap();
    raw.send(b).unwrap();
    let e = reader.recv_timeout(common::STEP).unwrap_err();
    assert!(matches!(e, PodError::Malformed(_)), "{e}");
    // Forged: our trailer after a value of the wrong length.
    let mut b = raw.acquire().unwrap();
    b.extend_from_slice(&[0; 8]).unwrap();
    b.extend_from_slice(&TICKS.fingerprint().to_le_bytes())
        .unwrap();
    b.extend_from_slice(&32u32.to_le_bytes()).unwrap();
    b.extend_from_slice(&0u32.to_le_bytes()).unwrap();
    raw.send(b).unwrap();
    let e = reader.recv_timeout(common::STEP).unwrap_err();
    assert!(matches!(e, PodError::SchemaMismatch { .. }), "{e}");

    good.send_value(&tick).unwrap();
    assert_eq!(*reader.recv_timeout(common::STEP).unwrap(), tick);
    drop((raw, v2, wider, good, reader));
    name.assert_no_leftovers();
}

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Order {
    id: u64,
    qty: [u32; 4],
}

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Fill {
    id: u64,
    total: u64,
    aligned: u32,
    _pad: u32,
}

const ORDERS: Schema = Schema::new("test.orders", 1);

#[test]
fn a_server_process_answers_in_place_and_clients_of_another_schema_are_refused_at_connect() {
    const TEST: &str =
        "a_server_process_answers_in_place_and_clients_of_another_schema_are_refused_at_connect";
    if let Some((_, args)) = child_role() {
        let handle = Server::builder(&args[0])
            .create()
            .unwrap()
            .spawn(pod::handler(ORDERS, |o: &Order, f: &mut Fill| {
                f.id = o.id;
                f.total = o.qty.iter().map(|&q| u64::from(q)).sum();
                f.aligned = u32::from(is_aligned(o, 64) && is_aligned(f, 64));
            }))
            .unwrap();
        tell_parent("ready");
        hear_parent();
        handle.shutdown();
        child_exit(0);
    }
    let _w = watchdog(TEST, Duration::from_secs(60));
    let name = TestName::new("pod-chan");
    let mut server = spawn(TEST, "server", &[&name]);
    server.expect("ready");

    let mut client = PodClient::<Order, Fill>::connect(&name, ORDERS).unwrap();
    for id in 0..1_000u64 {
        let fill = client
            .call_in_place(
                |o| {
                    o.id = id;
                    o.qty = [1, 2, 3, id as u32];
                },
                |f| *f,
            )
            .unwrap();
        assert_eq!((fill.id, fill.total, fill.aligned), (id, 6 + id, 1));
    }
    let order = Order { id: 5, qty: [1; 4] };
    let fill = client.call_timeout(&order, common::STEP).unwrap();
    assert_eq!(fill.total, 4);

    let e = PodClient::<Order, Fill>::connect(&name, Schema::new("test.orders", 2)).unwrap_err();
    assert!(matches!(e, PodError::SchemaMismatch { .. }), "{e}");
    let e = PodClient::<[u64; 4], Fill>::connect(&name, ORDERS).unwrap_err();
    assert!(
        matches!(e, PodError::SchemaMismatch { .. }),
        "another request type: {e}"
    );
    let e = PodClient::<Order, [u64; 2]>::connect(&name, ORDERS).unwrap_err();
    assert!(
        matches!(e, PodError::SchemaMismatch { .. }),
        "another response type: {e}"
    );
    // The refused connections left the server serving.
    assert_eq!(client.call(&order).unwrap().total, 4);

    drop(client);
    server.send("exit");
    server.wait_ok();
    name.assert_no_leftovers();
}
