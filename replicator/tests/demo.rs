//! `gardenstate demo` end to end: the built binary runs the whole demo (daemons, workers,
//! kill -9, promote, comparison) with short settings, and must say what survived, exit 0, and
//! leave nothing behind. A second test stops a demo with SIGTERM mid-traffic: it must clean up
//! as well. The tests take turns (a lock): each demo runs seven processes on a small machine.

use gardenstate_replicator::operations::status;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gardenstate");

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What a demo run with process id `pid` may leave behind: its two segments, their daemons'
/// status files and its scratch directory.
fn leftovers(pid: u32) -> Vec<std::path::PathBuf> {
    let shm =
        std::env::var_os("GARDENSTATE_SHM_DIR").map_or_else(|| "/dev/shm".into(), std::path::PathBuf::from);
    [
        shm.join(format!("gds-demo-{pid}-primary")),
        shm.join(format!("gds-demo-{pid}-standby")),
        status::status_path(&format!("gds-demo-{pid}-primary")).unwrap(),
        status::status_path(&format!("gds-demo-{pid}-standby")).unwrap(),
        std::env::temp_dir().join(format!("gds-demo-{pid}")),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .collect()
}

/// The number after `label` on the line that starts with it (after indentation), commas
/// removed: `  lost (absent on the standby)      7` -> 7.
fn figure(stdout: &str, label: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no line {label:?} in:\n{stdout}"));
    let rest = &line.trim_start()[label.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(|c| *c != ',')
        .collect();
    digits.parse().unwrap_or_else(|_| panic!("no number after {label:?} in {line:?}"))
}

/// A live line of the traffic table starts with the elapsed time: `   3.0s   55,159 ...`.
fn is_live_line(line: &str) -> bool {
    line.split_whitespace()
        .next()
        .and_then(|t| t.strip_suffix('s'))
        .is_some_and(|t| t.contains('.') && t.parse::<f64>().is_ok())
}

fn run_demo(args: &[&str]) -> (Output, u32) {
    let child = Command::new(BIN)
        .arg("demo")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gardenstate demo");
    let pid = child.id();
    (child.wait_with_output().expect("wait for the demo"), pid)
}

#[test]
fn a_short_demo_fails_over_keeps_every_confirmed_order_and_cleans_up() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (out, pid) = run_demo(&["--seconds", "6", "--workers", "2", "--rate", "3000"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed ({}):\n{stdout}\n{stderr}", out.status);

    for expected in [
        "standby synced",
        "a local write is refused (ReadOnly)",
        "traffic on the primary",
        "kill -9 the primary daemon",
        "promoted segment gds-demo-",
        "a read and a write on the promoted segment: both served",
        "failover time:",
        "what survived",
        "ok: every confirmed order survived",
        "cleaned up: 4 processes stopped, segments",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    // One live line a second.
    let live = stdout.lines().filter(|l| is_live_line(l)).count();
    assert!(live >= 5, "expected about 6 live lines:\n{stdout}");

    let at_death = figure(&stdout, "sessions on the primary at its death");
    let kept = figure(&stdout, "kept (same value on the standby)");
    let stale = figure(&stdout, "stale (an older value on the standby)");
    let lost = figure(&stdout, "lost (absent on the standby)");
    let expiring = figure(&stdout, "expired since (absent, and past their deadline)");
    assert!(at_death > 1_000, "too few sessions:\n{stdout}");
    assert_eq!(kept + stale + lost + expiring, at_death, "the categories must add up:\n{stdout}");
    let confirmed = figure(&stdout, "orders confirmed by wait_replicated");
    assert!(confirmed > 50, "worker 1 confirms an order every 20 ms:\n{stdout}");
    assert!(stdout.contains("all on the standby, intact"), "{stdout}");
    assert!(stdout.contains(", 0 bad"), "{stdout}");
    assert!(leftovers(pid).is_empty(), "left behind: {:?}", leftovers(pid));
}

#[test]
fn sigterm_mid_traffic_cleans_up_and_fails() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut child = Command::new(BIN)
        .args(["demo", "--seconds", "60", "--workers", "2", "--rate", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gardenstate demo");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Wait for the first live line: the daemons and workers are all running.
    loop {
        let line = lines.next().expect("the demo ended early").unwrap();
        if is_live_line(&line) {
            break;
        }
        assert!(Instant::now() < deadline, "no live line within 60 s");
    }
    let killed = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("run kill");
    assert!(killed.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2), "{rest:?}");
    assert!(rest.iter().any(|l| l.starts_with("cleaned up: 4 processes stopped, segments")), "{rest:?}");
    assert!(leftovers(pid).is_empty(), "left behind: {:?}", leftovers(pid));
}

#[test]
fn bad_settings_are_refused() {
    for args in [&["--workers", "0"][..], &["--seconds", "0"], &["--rate", "fast"]] {
        let out = Command::new(BIN).arg("demo").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value"), "{args:?}");
    }
}
