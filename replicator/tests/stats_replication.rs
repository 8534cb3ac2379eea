//! `gardenstate stats` shows a segment's replication: its header words always, and its
//! daemon's status as published in the status file (`status::publish_forever`): running,
//! stale (not running), absent or unreadable. The daemon is played by this test process
//! through the same API the daemons use.

use gardenstate::{Expiry, Options, Store, WriteMode};
use gardenstate_replicator::operations::status::{self, Status, StatusReport};
use serde_json::Value;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_gardenstate");

/// A segment unique to the test and process; it and its status file go when dropped.
struct Seg(String);

impl Seg {
    fn new(tag: &str) -> Seg {
        let name = format!("gds-statsrepl-{tag}-{}", std::process::id());
        let _ = Store::destroy(&name);
        let _ = std::fs::remove_file(status::status_path(&name).unwrap());
        Seg(name)
    }
}

impl Drop for Seg {
    fn drop(&mut self) {
        let _ = Store::destroy(&self.0);
        let _ = std::fs::remove_file(status::status_path(&self.0).unwrap());
    }
}

fn stats(name: &str, json: bool) -> String {
    let mut args = vec!["stats", name];
    if json {
        args.push("--json");
    }
    let out = Command::new(BIN).args(&args).output().unwrap();
    assert!(out.status.success(), "stats failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn replication(name: &str) -> Value {
    let v: Value = serde_json::from_str(&stats(name, true)).unwrap();
    assert_eq!(v["schema"], 1);
    v["replication"].clone()
}

#[test]
fn a_running_daemon_is_shown_and_gone_when_it_stops() {
    let seg = Seg::new("run");
    let store = Store::create(&seg.0, &Options::default()).unwrap();
    for i in 0..5u8 {
        store.set(&[b'k', i], b"v", Expiry::Never).unwrap();
    }
    store.acknowledge_replicated(3);
    let s = Status::new(&seg.0);
    s.set_role("primary");
    s.set_epoch(store.epoch(), store.history_id());
    s.set_peer(Some("192.0.2.7:7480".into()), true);
    s.acked(3);
    s.head_at(5);
    s.shipped(40, 4_000);
    s.heartbeat_from("witness");
    s.resync();
    s.event("standby 192.0.2.7 authenticated\x1b[2J");
    let guard = status::publish_forever(s.clone()).unwrap();

    let r = replication(&seg.0);
    assert_eq!(r["daemon"], "running", "{r}");
    assert_eq!(r["daemon_running"], true);
    assert_eq!(r["pid"], std::process::id());
    assert_eq!(r["pid_alive"], true);
    assert!(r["status_age_ms"].as_u64().unwrap() < 3_000);
    assert_eq!(r["status_file"], status::status_path(&seg.0).unwrap().display().to_string());
    assert_eq!(r["role"], "primary");
    assert_eq!(r["epoch"], 0);
    assert_eq!(r["history"], format!("{:016x}", store.history_id()));
    assert_eq!(r["peer"], "192.0.2.7:7480");
    assert_eq!(r["connected"], true);
    assert_eq!(r["lag_entries"], 2);
    assert!(r["lag_ms"].as_u64().is_some());
    assert_eq!((r["feed_head"].as_u64(), r["replicated_upto"].as_u64()), (Some(5), Some(3)));
    assert_eq!(r["unacknowledged"], 2);
    assert_eq!(r["shipped_frames"], 40);
    assert_eq!(r["shipped_bytes"], 4_000);
    assert!(r["frames_per_s"].is_number() && r["rate_window_ms"].is_number());
    assert_eq!(r["resyncs"], 1);
    assert!(r["heartbeats"]["witness"]["ago_ms"].as_u64().unwrap() < 60_000);
    assert_eq!(r["last_event"]["text"], "standby 192.0.2.7 authenticated\x1b[2J");

    let human = stats(&seg.0, false);
    for needle in [
        "Replication",
        &format!("running, pid {}", std::process::id()),
        "role             primary",
        "192.0.2.7:7480, connected",
        "2 entries",
        "witness ",
        "resyncs          1",
        "authenticated\\x1b[2J (",
        "3 of feed head 5",
    ] {
        assert!(human.contains(needle), "human stats lack {needle:?}:\n{human}");
    }
    assert!(!human.contains('\x1b'), "event text is escaped");

    // The daemon stops: its guard removes the file.
    drop(guard);
    let r = replication(&seg.0);
    assert_eq!(r["daemon"], "none");
    assert_eq!(r["daemon_running"], false);
    assert!(r["role"].is_null() && r["pid"].is_null());
    assert_eq!(r["unacknowledged"], 2, "the segment's own figures stay");
}

#[test]
fn a_stale_status_file_means_the_daemon_is_not_running() {
    let seg = Seg::new("stale");
    Store::create(&seg.0, &Options::default()).unwrap();
    let path = status::status_path(&seg.0).unwrap();
    let s = Status::new(&seg.0);
    s.set_role("standby");
    s.standby_lag(7);
    s.event("applying");

    // Written 10 s ago by this (living) process: hung.
    let mut old: StatusReport = s.snapshot();
    old.written_unix_ms -= 10_000;
    status::write_status_file(&path, &old).unwrap();
    let r = replication(&seg.0);
    assert_eq!(r["daemon"], "stale", "{r}");
    assert_eq!(r["daemon_running"], false);
    assert!(r["status_age_ms"].as_u64().unwrap() >= 10_000);
    assert_eq!(r["role"], "standby", "the last report is still shown");
    assert_eq!(r["lag_entries"], 7);
    let human = stats(&seg.0, false);
    assert!(human.contains("NOT RUNNING") && human.contains("hung?"), "{human}");

    // Fresh, but its pid is gone (a daemon killed a moment ago).
    let mut dead: StatusReport = s.snapshot();
    dead.pid = 0x7fff_fff0; // above any pid_max
    status::write_status_file(&path, &dead).unwrap();
    let r = replication(&seg.0);
    assert_eq!((r["daemon"].as_str(), r["pid_alive"].as_bool()), (Some("stale"), Some(false)), "{r}");
    let human = stats(&seg.0, false);
    assert!(human.contains("NOT RUNNING") && human.contains("is gone"), "{human}");

    // A fresh file from a live pid is running again.
    status::write_status_file(&path, &s.snapshot()).unwrap();
    assert_eq!(replication(&seg.0)["daemon"], "running");
}

#[test]
fn without_a_daemon_the_segment_figures_are_still_shown() {
    let seg = Seg::new("none");
    let store = Store::create(&seg.0, &Options::default()).unwrap();
    store.set(b"a", b"1", Expiry::Never).unwrap();
    let r = replication(&seg.0);
    assert_eq!(r["daemon"], "none");
    assert_eq!((r["feed_head"].as_u64(), r["replicated_upto"].as_u64()), (Some(1), Some(0)));
    // No standby ever followed it: no lag to report (issue 21: it was the whole feed).
    assert!(r["unacknowledged"].is_null(), "{r}");
    let human = stats(&seg.0, false);
    assert!(human.contains("no replication daemon"), "{human}");
    assert!(human.contains("write mode       writable") && human.contains("epoch            0"), "{human}");

    // A replica: no "unacknowledged" (the primary's figure).
    store.set_write_mode(WriteMode::Replica);
    store.raise_epoch(2);
    let r = replication(&seg.0);
    assert!(r["unacknowledged"].is_null());
    assert_eq!(r["epoch"], 2);
    assert!(!stats(&seg.0, false).contains("acknowledged"));
}

#[test]
fn an_unreadable_status_file_is_reported_not_fatal() {
    let seg = Seg::new("garbage");
    Store::create(&seg.0, &Options::default()).unwrap();
    let path = status::status_path(&seg.0).unwrap();
    // A real (private) status directory, then garbage in the file.
    status::write_status_file(&path, &Status::new(&seg.0).snapshot()).unwrap();
    std::fs::write(&path, b"{not json").unwrap();
    let r = replication(&seg.0);
    assert_eq!(r["daemon"], "unreadable");
    assert!(r["status_error"].as_str().unwrap().contains("not a status report"), "{r}");
    assert!(stats(&seg.0, false).contains("daemon           unknown: status file"));
}
