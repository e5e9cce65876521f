//! The `tracing` feature's events: a server's connections (a client process that died
//! included), failed calls and shutdown, seen by a subscriber that records them.
#![cfg(feature = "tracing")]

mod common;

use std::fmt::{self, Write as _};
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use common::{
    child_exit, child_role, hear_parent, poll_until, spawn, tell_parent, watchdog, TestName,
};
use shmlink::{AppError, CallError, CallInfo, Client, Server};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Every event of the process: its level and its fields, as `name=value ` pairs.
static EVENTS: StdMutex<Vec<(Level, String)>> = StdMutex::new(Vec::new());

/// Records events into [`EVENTS`]; has no spans.
struct Recorder;

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut f = Fields(String::new());
        event.record(&mut f);
        EVENTS
            .lock()
            .unwrap()
            .push((*event.metadata().level(), f.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// The events of service `name` so far, as `LEVEL fields` lines.
fn events_of(name: &str) -> Vec<String> {
    let tag = format!("service={name:?} ");
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, f)| f.contains(&tag))
        .map(|(l, f)| format!("{l} {f}"))
        .collect()
}

/// Whether one of `events` has level `level` and contains each of `parts`.
fn has(events: &[String], level: &str, parts: &[&str]) -> bool {
    events
        .iter()
        .any(|e| e.starts_with(&format!("{level} ")) && parts.iter().all(|p| e.contains(p)))
}

#[test]
fn a_server_reports_connections_failed_calls_and_its_shutdown() {
    const TEST: &str = "a_server_reports_connections_failed_calls_and_its_shutdown";
    if let Some((_, args)) = child_role() {
        let _c = Client::connect_timeout(&args[0], Duration::from_secs(10)).unwrap();
        tell_parent("connected");
        hear_parent(); // killed meanwhile
        child_exit(0);
    }
    let _w = watchdog(TEST, Duration::from_secs(60));
    tracing::subscriber::set_global_default(Recorder).unwrap();
    let name = TestName::new("trace");
    let handle = Server::builder(&name)
        .slots(2)
        .max_message(64)
        .create()
        .unwrap()
        .spawn(
            |_: &CallInfo, req: &[u8], resp: &mut [u8]| -> Result<usize, AppError> {
                match req {
                    b"refuse" => Err(AppError::new(5)),
                    b"panic" => panic!("handler panics on request (expected by the test)"),
                    b"overlong" => Ok(resp.len() + 1),
                    _ => Ok(0),
                }
            },
        )
        .unwrap();
    let mut c = Client::connect(&name).unwrap();
    assert!(poll_until(Duration::from_secs(10), || handle.connected() == 1));
    assert!(matches!(
        c.call(b"refuse"),
        Err(CallError::Application { code: 5, .. })
    ));
    assert!(matches!(c.call(b"panic"), Err(CallError::HandlerPanicked)));
    assert!(matches!(
        c.call(b"overlong"),
        Err(CallError::BadResponse { .. })
    ));
    drop(c);
    assert!(poll_until(Duration::from_secs(10), || handle.connected() == 0));
    let mut kid = spawn(TEST, "client", &[&name]);
    kid.expect("connected");
    assert!(poll_until(Duration::from_secs(10), || handle.connected() == 1));
    kid.kill();
    assert!(poll_until(Duration::from_secs(10), || handle.connected() == 0));
    handle.shutdown();

    let events = events_of(&name);
    let died = format!("pid={} ", kid.pid());
    for (level, parts) in [
        ("INFO", &["message=client connected "][..]),
        (
            "DEBUG",
            &["message=call answered with an application error", "code=5 "],
        ),
        ("WARN", &["message=handler panicked "]),
        (
            "WARN",
            &[
                "message=handler answered beyond max_message",
                "len=65 max=64 ",
            ],
        ),
        (
            "INFO",
            &["message=client disconnected ", "reason=Graceful "],
        ),
        ("WARN", &["message=client died", &died]),
        ("INFO", &["message=server shut down"]),
    ] {
        assert!(
            has(&events, level, parts),
            "no {level} {parts:?} in {events:#?}"
        );
    }
    assert!(name.leftovers().is_empty(), "left: {:?}", name.leftovers());
}
