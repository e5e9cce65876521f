//! The `shmlink` command-line tool (feature `cli`) against real objects of real processes:
//! a live server, and the stale segment of a SIGKILLed one.
#![cfg(all(target_os = "linux", feature = "cli"))]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{child_role, hear_parent, spawn, tell_parent, watchdog, TestName};
use shmlink::{Client, Segment, Server};

fn shmlink(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shmlink"))
        .args(args)
        .output()
        .expect("run the shmlink binary");
    assert!(out.status.success(), "shmlink {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The line of `output` about the object `os_name`.
fn line<'a>(output: &'a str, os_name: &str) -> Option<&'a str> {
    output
        .lines()
        .find(|l| l.split_whitespace().next() == Some(os_name))
}

#[test]
fn list_shows_live_and_stale_objects_and_clean_removes_only_the_stale() {
    if let Some((role, args)) = child_role() {
        match role.as_str() {
            "server" => {
                let handle = Server::builder(&args[0])
                    .create()
                    .unwrap()
                    .spawn(|_: &[u8], _: &mut [u8]| 0)
                    .unwrap();
                tell_parent("ready");
                hear_parent();
                handle.shutdown();
            }
            "owner" => {
                let _seg = Segment::builder(&args[0]).size(1 << 20).create().unwrap();
                tell_parent("ready");
                hear_parent(); // killed here
            }
            _ => unreachable!(),
        }
        common::child_exit(0);
    }
    let _w = watchdog("cli", Duration::from_secs(60));
    let test = "list_shows_live_and_stale_objects_and_clean_removes_only_the_stale";
    let live = TestName::new("cli-live");
    let dead = TestName::new("cli-dead");
    let mut server = spawn(test, "server", &[&live]);
    server.expect("ready");
    let mut owner = spawn(test, "owner", &[&dead]);
    owner.expect("ready");
    owner.kill();
    let live_obj = format!("/shmlink.{}.chan", live.as_str());
    let dead_obj = format!("/shmlink.{}.seg", dead.as_str());

    let listed = shmlink(&["list"]);
    let l = line(&listed, &live_obj).unwrap_or_else(|| panic!("{live_obj} not in\n{listed}"));
    assert!(l.contains("channel") && l.ends_with("live"), "{l}");
    assert!(
        l.contains(&server.pid().to_string()),
        "owner pid shown: {l}"
    );
    let d = line(&listed, &dead_obj).unwrap_or_else(|| panic!("{dead_obj} not in\n{listed}"));
    assert!(d.contains("raw segment") && d.ends_with("stale"), "{d}");

    let inspected = shmlink(&["inspect", live.as_str()]);
    assert!(inspected.contains(&live_obj) && inspected.contains("kind:    channel"));

    let dry = shmlink(&["clean", "--dry-run"]);
    assert!(dry.contains(&format!("would remove {dead_obj}")), "{dry}");
    assert!(!dry.contains(&live_obj), "{dry}");
    assert!(!dead.leftovers().is_empty(), "a dry run removes nothing");

    let cleaned = shmlink(&["clean"]);
    assert!(
        cleaned.contains(&format!("removed {dead_obj}")),
        "{cleaned}"
    );
    assert!(!cleaned.contains(&live_obj), "{cleaned}");
    assert!(dead.leftovers().is_empty(), "the stale one is gone");
    let mut client = Client::connect(&live).unwrap();
    assert!(client.call(b"still serving").is_ok());
    drop(client);

    server.send("stop");
    server.wait_ok();
    live.assert_no_leftovers();
}
