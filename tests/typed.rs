//! Typed messages (feature `serde`) between real processes: a typed server in a child
//! process, typed pool messages from a child Writer, schema mismatches, application errors.
#![cfg(all(target_os = "linux", feature = "serde"))]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{child_exit, child_role, hear_parent, spawn, tell_parent, watchdog, TestName};
use serde::{Deserialize, Serialize};
use shmlink::typed::{self, Schema, TypedClient, TypedError, TypedReader, TypedWriter};
use shmlink::{PoolConfig, Reader, Server, Writer};

/// A nested request, with the shapes serde users have: enums with data, maps, options.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Req {
    Put { key: String, value: Record },
    Get(String),
    Keys,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Record {
    id: u64,
    tags: Vec<String>,
    attrs: BTreeMap<String, Option<i32>>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Resp {
    Done,
    Found(Record),
    Keys(Vec<String>),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum KvError {
    Missing(String),
}

const KV: Schema = Schema::new("tests.kv", 3);

fn record(id: u64) -> Record {
    Record {
        id,
        tags: vec!["a".into(), format!("tag-{id}")],
        attrs: [("x".to_owned(), Some(-5)), ("y".to_owned(), None)].into(),
    }
}

/// Server role: a typed key-value store; says "ready", serves until told to stop.
fn kv_server(name: &str) -> ! {
    let mut store: BTreeMap<String, Record> = BTreeMap::new();
    let server = Server::builder(name).max_message(4096).create().unwrap();
    let stop = server.shutdown_handle();
    std::thread::spawn(move || {
        hear_parent();
        stop.shutdown();
    });
    tell_parent("ready");
    server.serve(typed::handler(KV, move |req: Req| match req {
        Req::Put { key, value } => {
            store.insert(key, value);
            Ok(Resp::Done)
        }
        Req::Get(key) => store
            .get(&key)
            .cloned()
            .map(Resp::Found)
            .ok_or(KvError::Missing(key)),
        Req::Keys => Ok(Resp::Keys(store.keys().cloned().collect())),
    }));
    child_exit(0)
}

#[test]
fn typed_calls_round_trip_nested_types_and_application_errors_across_processes() {
    if let Some((_, args)) = child_role() {
        kv_server(&args[0]);
    }
    let _w = watchdog("typed_calls", Duration::from_secs(60));
    let name = TestName::new("typed-kv");
    let mut server = spawn(
        "typed_calls_round_trip_nested_types_and_application_errors_across_processes",
        "server",
        &[&name],
    );
    server.expect("ready");
    let mut kv = TypedClient::<Req, Resp, KvError>::connect(&name, KV).unwrap();
    for id in 0..100 {
        let put = Req::Put {
            key: format!("k{id:03}"),
            value: record(id),
        };
        assert_eq!(kv.call(&put).unwrap(), Ok(Resp::Done));
    }
    assert_eq!(
        kv.call(&Req::Get("k042".into())).unwrap(),
        Ok(Resp::Found(record(42)))
    );
    assert_eq!(
        kv.call(&Req::Get("nope".into())).unwrap(),
        Err(KvError::Missing("nope".into())),
        "the handler's own error arrives as such"
    );
    match kv.call(&Req::Keys).unwrap() {
        Ok(Resp::Keys(keys)) => assert_eq!(keys.len(), 100),
        other => panic!("{other:?}"),
    }

    // A client of another schema (or another version) is refused at connect.
    let v4 = Schema::new("tests.kv", 4);
    match TypedClient::<Req, Resp, KvError>::connect(&name, v4) {
        Err(TypedError::SchemaMismatch { ours, theirs }) => {
            assert_eq!(ours, "tests.kv v4");
            assert_eq!(theirs, "tests.kv v3");
        }
        other => panic!("expected a schema mismatch, got {other:?}"),
    }
    // A value too large for the channel is an encoding error, and the client still works.
    let huge = Req::Put {
        key: "big".into(),
        value: Record {
            id: 0,
            tags: vec!["x".repeat(5000)],
            attrs: BTreeMap::new(),
        },
    };
    assert!(matches!(
        kv.call(&huge),
        Err(TypedError::Call(_) | TypedError::Encode(_))
    ));
    assert!(kv.call(&Req::Keys).unwrap().is_ok());
    drop(kv);
    server.send("stop");
    server.wait_ok();
    name.assert_no_leftovers();
}

/// Writer role: sends `n` typed records with `schema_version`, says "sent".
fn typed_writer(name: &str, n: u64, version: u32) -> ! {
    let writer = Writer::connect(name).unwrap();
    let typed = TypedWriter::<Record>::new(writer, Schema::new("tests.records", version));
    for id in 0..n {
        typed.send(&record(id)).unwrap();
    }
    tell_parent("sent");
    hear_parent();
    child_exit(0)
}

#[test]
fn typed_pool_messages_arrive_in_order_and_another_schema_is_refused() {
    if let Some((_, args)) = child_role() {
        typed_writer(&args[0], args[1].parse().unwrap(), args[2].parse().unwrap());
    }
    let _w = watchdog("typed_pool", Duration::from_secs(60));
    let name = TestName::new("typed-pool");
    let reader = Reader::create(&name, PoolConfig::default()).unwrap();
    let typed = TypedReader::<Record>::new(reader, Schema::new("tests.records", 1));
    let test = "typed_pool_messages_arrive_in_order_and_another_schema_is_refused";
    let mut good = spawn(test, "writer", &[&name, "500", "1"]);
    for id in 0..500 {
        let got = typed.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(got, record(id));
    }
    good.expect("sent");
    let mut other = spawn(test, "writer", &[&name, "1", "2"]);
    other.expect("sent");
    assert!(matches!(
        typed.recv_timeout(Duration::from_secs(10)),
        Err(TypedError::SchemaMismatch { .. })
    ));
    for k in [&mut good, &mut other] {
        k.send("done");
        k.wait_ok();
    }
    drop(typed);
    name.assert_no_leftovers();
}
