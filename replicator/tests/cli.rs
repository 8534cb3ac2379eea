//! End-to-end tests of the `gardenstate` binary: each runs the built command on segments with
//! names unique to the test and process, and destroys them afterwards. The engine crate is
//! used directly only to fill segments with entries a shell cannot type (binary keys, locks)
//! and to read back exactly what a restore produced.

use gardenstate::fuzzing::Rng;
use gardenstate::{Expiry, Store};
use gardenstate_replicator::commands::snapshot;
use serde_json::Value;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gardenstate");

/// A segment name unique to this test and process, destroyed when dropped.
struct Seg(String);

impl Seg {
    fn new(tag: &str) -> Seg {
        let name = format!("gds-cli-{tag}-{}", std::process::id());
        let _ = Store::destroy(&name);
        Seg(name)
    }
    fn name(&self) -> &str {
        &self.0
    }
    fn exists(&self) -> bool {
        gardenstate::shm_dir().join(&self.0).exists()
    }
}

impl Drop for Seg {
    fn drop(&mut self) {
        let _ = Store::destroy(&self.0);
    }
}

/// A scratch file path, removed when dropped.
struct TmpPath(PathBuf);

impl TmpPath {
    fn new(tag: &str) -> TmpPath {
        TmpPath(std::env::temp_dir().join(format!("gds-cli-{tag}-{}.gds", std::process::id())))
    }
}

impl Drop for TmpPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn gs_in(args: &[&OsStr], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gardenstate");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn gs(args: &[&str]) -> Output {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    gs_in(&args, b"")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
fn expect(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "stdout: {}\nstderr: {}", stdout(o), stderr(o));
}

#[track_caller]
fn ok(args: &[&str]) -> String {
    let o = gs(args);
    expect(&o, 0);
    stdout(&o)
}

/// Exit 2 with a message on stderr that contains `needle`.
#[track_caller]
fn fails(args: &[&str], needle: &str) -> String {
    let o = gs(args);
    expect(&o, 2);
    let e = stderr(&o);
    assert!(e.contains(needle), "stderr of {args:?} lacks {needle:?}: {e}");
    e
}

/// The limits of the tests' segments, but for the heap's size.
const LIMITS: [&str; 8] =
    ["--max-entries", "5000", "--max-key", "128", "--max-value", "16KiB", "--max-clients", "16"];

/// Creates `seg` with `capacity` bytes of heap, the usual [`LIMITS`], and `extra` options.
fn create_sized(seg: &Seg, capacity: &str, extra: &[&str]) {
    let mut args = vec!["create", seg.name(), "--capacity", capacity];
    args.extend_from_slice(&LIMITS);
    args.extend_from_slice(extra);
    ok(&args);
}

/// Creates `seg` with a 4 MiB heap, the usual [`LIMITS`], and `extra` options.
fn create_small(seg: &Seg, extra: &[&str]) {
    create_sized(seg, "4MiB", extra);
}

#[test]
fn create_with_options_then_stats_and_check() {
    let seg = Seg::new("stats");
    create_small(&seg, &["--feed-len", "256", "--evict"]);
    assert!(seg.exists());
    fails(&["create", seg.name()], "already exists");

    let json: Value = serde_json::from_str(&ok(&["stats", seg.name(), "--json"])).unwrap();
    assert_eq!(json["schema"], 1);
    assert_eq!(json["segment"], seg.name());
    assert_eq!(json["write_mode"], "writable");
    let info = &json["info"];
    assert_eq!(info["max_entries"], 5000);
    assert_eq!(info["max_key"], 128);
    assert_eq!(info["max_value"], 16384);
    assert_eq!(info["max_clients"], 16);
    assert_eq!(info["feed_len"], 256);
    assert_eq!(info["evict"], true);
    assert!(info["heap_bytes"].as_u64().unwrap() >= 4 << 20);
    assert_eq!(info["dataset_id"].as_str().unwrap().len(), 16);
    assert_eq!(json["stats"]["live_entries"], 0);
    assert!(json["derived"]["hit_ratio"].is_null());

    ok(&["set", seg.name(), "a", "1"]);
    ok(&["set", seg.name(), "b", "2"]);
    ok(&["set", seg.name(), "c", "3", "--ttl", "1h"]);
    ok(&["get", seg.name(), "a"]);
    expect(&gs(&["get", seg.name(), "zz"]), 1);
    ok(&["del", seg.name(), "b"]);

    let json: Value = serde_json::from_str(&ok(&["stats", seg.name(), "--json"])).unwrap();
    let s = &json["stats"];
    assert_eq!(s["live_entries"], 2);
    assert_eq!((s["hits"].as_u64(), s["misses"].as_u64()), (Some(1), Some(1)));
    assert_eq!((s["sets"].as_u64(), s["deletes"].as_u64()), (Some(3), Some(1)));
    assert!(s["bytes_used"].as_u64().unwrap() > 0);
    assert_eq!(json["derived"]["hit_ratio"], 0.5);
    for field in ["expirations", "evictions", "touches", "locks", "lock_contentions", "lock_takeovers"] {
        assert!(s[field].is_u64(), "{field}");
    }
    for field in ["dead_reclaims", "sweeps", "clients", "feed_head", "bytes_free"] {
        assert!(s[field].is_u64(), "{field}");
    }

    let human = ok(&["stats", seg.name()]);
    for needle in [
        "2 of 5,000 max",
        "hit ratio        50.0%",
        "heap used",
        "evict",
        "max value        16.0 KiB",
        "write mode       writable",
    ] {
        assert!(human.contains(needle), "human stats lack {needle:?}:\n{human}");
    }

    let out = ok(&["check", seg.name()]);
    assert!(out.contains("healthy"), "{out}");
    let json: Value = serde_json::from_str(&ok(&["check", seg.name(), "--json"])).unwrap();
    assert_eq!(json["healthy"], true);
    assert_eq!(json["entries"], 2);
    assert_eq!(json["problems"].as_array().unwrap().len(), 0);
}

#[test]
fn set_get_del_round_trips_binary_values() {
    let seg = Seg::new("entries");
    create_small(&seg, &[]);
    let name = OsStr::new(seg.name());
    let arg = |s: &str| OsStr::new(s).to_owned();

    ok(&["set", seg.name(), "sid:1", "cart=3"]);
    assert_eq!(ok(&["get", seg.name(), "sid:1"]), "cart=3\n");

    // A binary value through stdin, with NUL, invalid UTF-8 and a terminal escape.
    let binary = b"\0\xff\xfe\x1b[2Jtext\n\xc3".to_vec();
    expect(&gs_in(&[&arg("set"), name, &arg("bin"), &arg("--stdin")], &binary), 0);
    let raw = gs_in(&[&arg("get"), name, &arg("bin"), &arg("--raw")], b"");
    expect(&raw, 0);
    assert_eq!(raw.stdout, binary, "--raw is byte-exact");
    let shown = ok(&["get", seg.name(), "bin"]);
    assert_eq!(shown, "\\0\\xff\\xfe\\x1b[2Jtext\\n\\xc3\n");
    assert!(!shown.as_bytes().contains(&0x1b) && !shown.as_bytes().contains(&0));

    // Every byte value through --file.
    let file = TmpPath::new("value");
    let all: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    std::fs::write(&file.0, &all).unwrap();
    ok(&["set", seg.name(), "all", "--file", file.0.to_str().unwrap(), "--ttl", "30s"]);
    assert_eq!(gs(&["get", seg.name(), "all", "--raw"]).stdout, all);

    // A non-UTF-8 argument is passed as its bytes.
    let key = OsStr::from_bytes(b"k\xffey");
    expect(&gs_in(&[&arg("set"), name, key, OsStr::from_bytes(b"v\x80")], b""), 0);
    let keys = ok(&["keys", seg.name()]);
    assert!(keys.lines().any(|l| l == "k\\xffey"), "{keys}");
    // ... and the escaped form that `keys` prints gets it back.
    let v = gs(&["get", seg.name(), "-e", "k\\xffey", "--raw"]);
    expect(&v, 0);
    assert_eq!(v.stdout, b"v\x80");
    ok(&["set", seg.name(), "--escaped", "nul\\0key", "a\\nb"]);
    assert_eq!(Store::attach(seg.name()).unwrap().get(b"nul\0key").unwrap().unwrap().value, b"a\nb");
    fails(&["get", seg.name(), "-e", "bad\\q"], "bad escape");

    // --meta: TTL, sliding window, lock.
    ok(&["set", seg.name(), "s", "x", "--ttl", "20m", "--sliding"]);
    let meta = ok(&["get", seg.name(), "s", "--meta"]);
    assert!(
        meta.contains("window 20m") && meta.contains("left") && meta.contains("lock             none"),
        "{meta}"
    );
    let meta = ok(&["get", seg.name(), "sid:1", "--meta"]);
    assert!(meta.contains("never expires") && meta.contains("length           6 bytes"), "{meta}");
    let store = Store::attach(seg.name()).unwrap();
    let locked = store.lock(b"sid:1", Duration::from_secs(60)).unwrap().unwrap();
    let meta = ok(&["get", seg.name(), "sid:1", "--meta"]);
    assert!(meta.contains(&format!("id {}", locked.lock_id)), "{meta}");

    // A short TTL expires (the sleep is a lower bound: a slow machine only sleeps longer).
    ok(&["set", seg.name(), "brief", "x", "--ttl", "200ms"]);
    std::thread::sleep(Duration::from_millis(300));
    expect(&gs(&["get", seg.name(), "brief"]), 1);

    // Delete, then the key is missing: exit 1 with a message.
    ok(&["del", seg.name(), "sid:1"]);
    let o = gs(&["get", seg.name(), "sid:1"]);
    expect(&o, 1);
    assert!(stderr(&o).contains("key not found: sid:1"), "{}", stderr(&o));
    let o = gs(&["del", seg.name(), "sid:1"]);
    expect(&o, 1);
    assert!(stderr(&o).contains("key not found"));

    // Engine errors keep their message, prefixed by the command.
    fails(&["set", seg.name(), &"k".repeat(129), "v"], "gardenstate set: key of 129 bytes");
    let big = TmpPath::new("big");
    std::fs::write(&big.0, vec![1u8; 16 * 1024 + 1]).unwrap();
    fails(&["set", seg.name(), "big", "--file", big.0.to_str().unwrap()], "max_value");
}

#[test]
fn keys_with_prefix_and_limit() {
    let seg = Seg::new("keys");
    create_small(&seg, &[]);
    let store = Store::attach(seg.name()).unwrap();
    for i in 0..30 {
        store.set(format!("user:{i:02}").as_bytes(), b"v", Expiry::Never).unwrap();
        store.set(format!("cart:{i:02}").as_bytes(), b"v", Expiry::Never).unwrap();
    }
    store.set(b"user:\n-injected", b"v", Expiry::Never).unwrap();
    drop(store);
    let all = ok(&["keys", seg.name()]);
    assert_eq!(all.lines().count(), 61);
    let users = ok(&["keys", seg.name(), "--prefix", "user:"]);
    let mut lines: Vec<&str> = users.lines().collect();
    assert_eq!(lines.len(), 31);
    // Streamed in the table's order; a newline in a key stays escaped.
    lines.sort_unstable();
    assert_eq!(lines[..2], ["user:00", "user:01"]);
    assert!(lines.contains(&"user:\\n-injected"), "{lines:?}");
    let few = ok(&["keys", seg.name(), "--prefix", "cart:", "--limit", "3"]);
    let few: std::collections::HashSet<&str> = few.lines().collect();
    assert_eq!(few.len(), 3);
    assert!(few.iter().all(|k| k.starts_with("cart:")), "{few:?}");
    assert_eq!(ok(&["keys", seg.name(), "--limit", "0"]), "");
    assert_eq!(ok(&["keys", seg.name(), "--prefix", "none:"]), "");
}

/// `dump NAME -` writes the dump to standard output and `restore NAME -` reads it from
/// standard input, so a dump goes through gzip (or ssh) without a file; `-` is never taken
/// for a file name (before, `dump s -` wrote a file named `-`).
#[test]
fn dump_and_restore_through_a_pipe() {
    let src = Seg::new("pipe-src");
    let dst = Seg::new("pipe-dst");
    create_small(&src, &[]);
    let store = Store::attach(src.name()).unwrap();
    for i in 0..500u32 {
        let value = vec![i as u8; (i % 300) as usize];
        store.set(format!("sid:{i}").as_bytes(), &value, Expiry::Never).unwrap();
    }
    store.set(b"bin\n\xff", b"\0", Expiry::After(Duration::from_secs(3600))).unwrap();
    let before = snapshot_of(&store);
    let dir = std::env::temp_dir().join(format!("gds-cli-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "set -o pipefail; '{BIN}' dump {} - | gzip | gunzip | '{BIN}' restore {} - --create",
        src.name(),
        dst.name()
    );
    let o = Command::new("bash").arg("-c").arg(&script).current_dir(&dir).output().unwrap();
    expect(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("restored 501 entries") && out.contains("from standard input"), "{out}");
    assert!(stderr(&o).contains("dumped 501 entries"), "the dump's summary is on stderr: {}", stderr(&o));
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.is_empty(), "no file appears in the working directory: {names:?}");
    std::fs::remove_dir(&dir).unwrap();
    let after = snapshot_of(&Store::attach(dst.name()).unwrap());
    assert_eq!(after.len(), before.len());
    for (key, want) in &before {
        assert_eq!(after[key].value, want.value, "{key:?}");
    }
    // A damaged stream is refused before anything is applied, as a damaged file is.
    let fresh = Seg::new("pipe-bad");
    let o = gs_in(
        &[OsStr::new("restore"), OsStr::new(fresh.name()), OsStr::new("-"), OsStr::new("--create")],
        b"GDSDUMP\x01short",
    );
    expect(&o, 2);
    assert!(stderr(&o).contains("standard input: truncated dump"), "{}", stderr(&o));
    assert!(!fresh.exists());
}

/// What a restore must bring back, per key.
#[derive(Debug, Clone)]
struct Expected {
    value: Vec<u8>,
    ttl_left: Option<Duration>,
    sliding: Option<Duration>,
}

fn snapshot_of(store: &Store) -> HashMap<Vec<u8>, Expected> {
    let mut m = HashMap::new();
    store
        .scan(|e| {
            m.insert(e.key, Expected { value: e.value, ttl_left: e.meta.ttl_left, sliding: e.meta.sliding });
        })
        .unwrap();
    m
}

#[test]
fn dump_destroy_restore_round_trips_2000_entries() {
    let seg = Seg::new("roundtrip");
    let file = TmpPath::new("roundtrip");
    create_sized(&seg, "16MiB", &["--feed-len", "512"]);
    let store = Store::attach(seg.name()).unwrap();
    let mut rng = Rng(7);
    let mut keys = Vec::new();
    for i in 0..2000u64 {
        // Binary keys: a counter, then random bytes (NUL, newline, 0xff all likely).
        let mut key = i.to_le_bytes().to_vec();
        let key_tail = 1 + (rng.next_u64() % 40) as usize;
        key.extend(rng.bytes(key_tail));
        let value_len = (rng.next_u64() % 2000) as usize;
        let value = rng.bytes(value_len);
        let expiry = match i % 3 {
            0 => Expiry::Never,
            1 => Expiry::After(Duration::from_secs(600 + rng.next_u64() % 3000)),
            _ => Expiry::Sliding(Duration::from_secs(300 + rng.next_u64() % 1500)),
        };
        store.set(&key, &value, expiry).unwrap();
        keys.push(key);
    }
    for key in keys.iter().take(5) {
        store.lock(key, Duration::from_secs(60)).unwrap().unwrap();
    }
    // Entries that expire between the dump and the restore are skipped. They live an hour
    // here, and the dump file is edited below to end them 1 ms after the dump started: a
    // real short TTL would need the dump to run within it, however slow the machine.
    for i in 0..7u8 {
        store.set(&[b'x', i], b"short-lived", Expiry::After(Duration::from_secs(3600))).unwrap();
    }
    let before = snapshot_of(&store);
    let t0 = Instant::now();
    assert_eq!(before.len(), 2007);
    drop(store);

    let out = ok(&["dump", seg.name(), file.0.to_str().unwrap()]);
    assert!(out.contains("dumped 2,007 entries"), "{out}");
    assert!(out.contains("5 entries were locked"), "{out}");
    assert_eq!(std::fs::metadata(&file.0).unwrap().permissions().mode() & 0o777, 0o600);
    let dir_entries: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains(&format!("gds-cli-roundtrip-{}.gds.", std::process::id()))
        })
        .collect();
    assert!(dir_entries.is_empty(), "no temporary file is left behind");
    let mut dumped = snapshot::decode(&std::fs::read(&file.0).unwrap()).unwrap();
    for r in dumped.entries.iter_mut().filter(|r| r.key.len() == 2 && r.key[0] == b'x') {
        r.ttl_ms = 1;
    }
    std::fs::write(&file.0, snapshot::encode(&dumped).unwrap()).unwrap();

    // Without --yes and without a terminal, destroy refuses.
    fails(&["destroy", seg.name()], "without --yes");
    ok(&["destroy", seg.name(), "--yes"]);
    assert!(!seg.exists());

    let out = ok(&["restore", seg.name(), file.0.to_str().unwrap(), "--create"]);
    assert!(out.contains("restored 2,000 entries"), "{out}");
    assert!(out.contains("skipped 7 entries that expired"), "{out}");
    assert!(out.contains("locks are not part of a dump"), "{out}");
    let elapsed = t0.elapsed();

    let store = Store::attach(seg.name()).unwrap();
    let info = store.info();
    assert_eq!((info.max_entries, info.max_key, info.max_value, info.max_clients), (5000, 128, 16384, 16));
    assert_eq!(info.feed_len, 512, "the dumped segment's shape is the default of --create");
    let after = snapshot_of(&store);
    assert_eq!(after.len(), 2000);
    let slack = Duration::from_secs(2);
    for (key, want) in before.iter().filter(|(k, _)| k[0] != b'x' || k.len() != 2) {
        let got = after.get(key).unwrap_or_else(|| panic!("key {key:?} missing after restore"));
        assert_eq!(got.value, want.value);
        assert_eq!(got.sliding, want.sliding);
        match (want.ttl_left, want.sliding, got.ttl_left) {
            (None, _, got_ttl) => assert_eq!(got_ttl, None),
            (Some(_), Some(window), Some(t)) => {
                // A sliding entry restarts its window (see dump_cmds.rs).
                assert!(t <= window && t + slack >= window, "sliding {t:?} vs window {window:?}");
            }
            (Some(w), None, Some(t)) => {
                assert!(t <= w && t + elapsed + slack >= w, "ttl {t:?}, was {w:?}, {elapsed:?} elapsed");
            }
            other => panic!("{key:?}: {other:?}"),
        }
    }
    let mut locked = 0;
    store
        .scan(|e| {
            locked += u32::from(e.meta.lock.is_some());
        })
        .unwrap();
    assert_eq!(locked, 0, "locks are not restored");
    let json: Value = serde_json::from_str(&ok(&["stats", seg.name(), "--json"])).unwrap();
    assert_eq!(json["stats"]["live_entries"], 2000);
    ok(&["check", seg.name()]);

    // Restoring again into the now full segment is refused unless --merge, which keeps
    // what is there.
    fails(&["restore", seg.name(), file.0.to_str().unwrap()], "--merge");
    let out = ok(&["restore", seg.name(), file.0.to_str().unwrap(), "--merge"]);
    assert!(out.contains("kept 2,000 keys"), "{out}");
    assert_eq!(snapshot_of(&store).len(), 2000);
}

#[test]
fn damaged_dumps_are_refused_and_change_nothing() {
    let src = Seg::new("damage-src");
    let dst = Seg::new("damage-dst");
    let fresh = Seg::new("damage-new");
    let file = TmpPath::new("damage");
    let bad = TmpPath::new("damage-bad");
    create_small(&src, &[]);
    create_small(&dst, &[]);
    let store = Store::attach(src.name()).unwrap();
    for i in 0..50u32 {
        store.set(format!("sid:{i}").as_bytes(), &vec![i as u8; 100 + i as usize], Expiry::Never).unwrap();
    }
    drop(store);
    ok(&["dump", src.name(), file.0.to_str().unwrap(), "--quiet"]);
    let good = std::fs::read(&file.0).unwrap();

    let header = 72;
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "not a gardenstate dump"),
        ("bad magic", [b"GDSDUMX".as_slice(), &good[7..]].concat(), "not a gardenstate dump"),
        ("future version", [b"GDSDUMP\x09".as_slice(), &good[8..]].concat(), "format version 9"),
        ("truncated header", good[..40].to_vec(), "truncated dump"),
        ("truncated entry", good[..good.len() / 2].to_vec(), "truncated dump"),
        ("no checksum", good[..good.len() - 3].to_vec(), "truncated dump"),
        ("trailing bytes", [good.as_slice(), b"x"].concat(), "after the end"),
    ];
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x01;
    // The entry order follows the segment's random hash seed, so the middle byte may be a
    // length (a structural error) or data (the checksum): both are "damaged dump".
    cases.push(("flipped byte", flipped, "damaged dump"));
    let mut huge_value = good.clone();
    huge_value[header + 5..header + 9].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    cases.push(("huge value length", huge_value, "value length 4294967280"));
    let mut huge_key = good.clone();
    huge_key[header + 1..header + 5].copy_from_slice(&u32::MAX.to_le_bytes());
    cases.push(("huge key length", huge_key, "key length 4294967295"));
    let mut huge_limit = good.clone();
    huge_limit[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
    cases.push(("huge max_value in the header", huge_limit, "max_value"));

    for (what, bytes, needle) in cases {
        std::fs::write(&bad.0, &bytes).unwrap();
        let path = bad.0.to_str().unwrap();
        let e = fails(&["restore", dst.name(), path], needle);
        assert!(e.starts_with("gardenstate restore: "), "{what}: {e}");
        assert_eq!(Store::attach(dst.name()).unwrap().stats().live_entries, 0, "{what}: nothing applied");
        fails(&["restore", fresh.name(), path, "--create"], needle);
        assert!(!fresh.exists(), "{what}: no segment created");
    }

    // A dump that does not fit the segment is refused before anything is applied.
    let tiny = Seg::new("damage-tiny");
    ok(&["create", tiny.name(), "--capacity", "1MiB", "--max-value", "120"]);
    let e = fails(&["restore", tiny.name(), file.0.to_str().unwrap()], "max_value of 120");
    assert!(e.contains("entry #") && e.contains("nothing was changed"), "{e}");
    assert_eq!(Store::attach(tiny.name()).unwrap().stats().live_entries, 0);
    let e = fails(
        &["restore", fresh.name(), file.0.to_str().unwrap(), "--create", "--max-entries", "10"],
        "sized for 10",
    );
    assert!(e.contains("--max-entries 50"), "{e}");
    assert!(!fresh.exists());

    // The intact file still restores.
    let out = ok(&["restore", dst.name(), file.0.to_str().unwrap()]);
    assert!(out.contains("restored 50 entries"), "{out}");
}

#[test]
fn bad_command_lines_exit_2_with_a_clear_message() {
    let seg = Seg::new("badcli");
    fails(&["create", seg.name(), "--capacity", "64QB"], "unknown unit");
    fails(&["create", seg.name(), "--capacity", "64MB"], "64MiB");
    fails(&["create", seg.name(), "--max-entries", "lots"], "whole number");
    fails(&["create", seg.name(), "--max-key", "100000"], "max_key 100000");
    fails(&["create", seg.name(), "--max-clients", "99999999999"], "max-clients");
    assert!(!seg.exists(), "bad options create nothing");
    fails(&["create", "../escape"], "segment name");
    fails(&["create"], "required");
    fails(&["get", seg.name()], "required");
    fails(&["frobnicate"], "unrecognized subcommand");

    create_small(&seg, &[]);
    fails(&["set", seg.name(), "k", "v", "--ttl", "20"], "add a unit");
    fails(&["set", seg.name(), "k", "v", "--ttl", "5 parsecs"], "unknown unit");
    fails(&["set", seg.name(), "k", "v", "--ttl", "0s"], "at least 1ms");
    fails(&["set", seg.name(), "k"], "required");
    fails(&["set", seg.name(), "k", "v", "--sliding"], "--ttl");
    fails(&["set", seg.name(), "k", "v", "--stdin"], "cannot be used with");
    fails(&["restore", seg.name(), "/nonexistent/file.gds"], "cannot open");
    fails(&["restore", seg.name(), "/dev/null", "--capacity", "1MiB"], "--create");

    let missing = Seg::new("badcli-missing");
    let never = TmpPath::new("never-written");
    let never_path = never.0.to_str().unwrap();
    for args in [
        vec!["stats", missing.name()],
        vec!["get", missing.name(), "k"],
        vec!["keys", missing.name()],
        vec!["dump", missing.name(), never_path],
        vec!["destroy", missing.name(), "--yes"],
    ] {
        fails(&args, "no segment named");
    }
    assert!(!never.0.exists(), "a failed dump writes no file");

    let help = ok(&["--help"]);
    assert!(help.contains("Exit codes:") && help.contains("1  key not found"), "{help}");
}

#[test]
fn restore_that_runs_out_of_heap_is_undone() {
    // Three size classes, and a target heap of two pages: each class needs a page of its own,
    // so the pre-check (which only knows byte totals) passes and the engine says "full".
    let src = Seg::new("undo-src");
    let dst = Seg::new("undo-dst");
    let fresh = Seg::new("undo-new");
    let file = TmpPath::new("undo");
    ok(&["create", src.name(), "--capacity", "1MiB", "--max-value", "8KiB"]);
    let store = Store::attach(src.name()).unwrap();
    for (i, len) in [100usize, 1000, 5000].into_iter().enumerate() {
        store.set(format!("k{i}").as_bytes(), &vec![b'v'; len], Expiry::Never).unwrap();
    }
    drop(store);
    ok(&["dump", src.name(), file.0.to_str().unwrap()]);
    ok(&["create", dst.name(), "--capacity", "128KiB", "--max-value", "8KiB"]);
    let dst_store = Store::attach(dst.name()).unwrap();
    assert_eq!(dst_store.info().heap_bytes, 128 << 10, "two 64 KiB pages");
    let e = fails(&["restore", dst.name(), file.0.to_str().unwrap()], "store full");
    assert!(e.contains("entry #") && e.contains("were removed again"), "{e}");
    assert_eq!(dst_store.stats().live_entries, 0);
    // Creating, the pre-check counts pages per size class as the engine does: it refuses
    // before anything exists, and the capacity it suggests holds the dump.
    let e = fails(
        &["restore", fresh.name(), file.0.to_str().unwrap(), "--create", "--capacity", "128KiB"],
        "nothing was changed",
    );
    assert!(e.contains("--capacity 192KiB"), "three pages of 64 KiB: {e}");
    assert!(!fresh.exists());
    ok(&["restore", fresh.name(), file.0.to_str().unwrap(), "--create", "--capacity", "192KiB"]);
    assert_eq!(Store::attach(fresh.name()).unwrap().stats().live_entries, 3);
}

/// A `restore --merge` that fails midway undoes only its own writes: a key a worker rewrote
/// after the restore added it keeps the worker's value (before, the undo deleted it: an
/// acknowledged write lost). The restore is stalled (SIGSTOP) once its first entry is in, the
/// worker rewrites what the restore added so far, and the restore then runs out of heap.
#[test]
fn failed_merge_keeps_what_a_worker_wrote_meanwhile() {
    use gardenstate_replicator::commands::snapshot::{Record, Writer};
    let dst = Seg::new("merge-undo");
    let file = TmpPath::new("merge-undo");
    ok(&["create", dst.name(), "--capacity", "2MiB", "--max-value", "8KiB", "--max-entries", "20000"]);
    let store = Store::attach(dst.name()).unwrap();
    let info = store.info();
    // How many small records fill all pages but one, by the engine's own count.
    let mut demand = info.options().heap_demand().unwrap();
    let page = {
        demand.add(8, 100);
        demand.capacity_bytes()
    };
    let mut small = 1u64;
    while {
        demand.add(8, 100);
        demand.capacity_bytes() <= info.heap_bytes - page
    } {
        small += 1;
    }
    // The dump: the small entries, then one record of another class (takes the last page),
    // then one of a third class: no page is left for it, and the merge fails there.
    let mut header = gardenstate_replicator::fuzzing::snapshot_header();
    header.max_value = 8192;
    let mut w = Writer::new(std::fs::File::create(&file.0).unwrap(), &header).unwrap();
    let key = |i: u64| format!("d:{i:06}").into_bytes();
    for i in 0..small {
        w.entry(&Record { key: key(i), value: vec![b'r'; 100], ttl_ms: 0, sliding_ms: 0 }).unwrap();
    }
    for (i, len) in [(small, 5000), (small + 1, 1000)] {
        w.entry(&Record { key: key(i), value: vec![b'r'; len], ttl_ms: 0, sliding_ms: 0 }).unwrap();
    }
    w.finish().unwrap();

    let restore = Command::new(BIN)
        .args(["restore", dst.name(), file.0.to_str().unwrap(), "--merge", "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = restore.id().to_string();
    while store.get(&key(0)).unwrap().is_none() {
        std::hint::spin_loop();
    }
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    // The worker rewrites every key the restore has added so far, at the same size, so its
    // writes stay in that size class and empty no page (an empty page would serve the
    // restore's last record, and the merge would not fail).
    let mine = {
        let mut v = b"worker".to_vec();
        v.resize(100, b'w');
        v
    };
    let mut written = Vec::new();
    for i in 0..small {
        if store.get(&key(i)).unwrap().is_some() {
            store.set(&key(i), &mine, Expiry::Never).unwrap();
            written.push(key(i));
        }
    }
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let out = restore.wait_with_output().unwrap();
    expect(&out, 2);
    let e = stderr(&out);
    assert!(e.contains("store full"), "{e}");
    assert!(!written.is_empty());
    for k in &written {
        let got = store.get(k).unwrap().map(|e| e.value);
        assert_eq!(
            got.as_deref(),
            Some(&mine[..]),
            "{:?} lost the worker's write: {e}",
            String::from_utf8_lossy(k)
        );
    }
    assert!(e.contains("left as they are"), "{e}");
    // Everything else the restore added is gone again.
    assert_eq!(store.stats().live_entries, written.len() as u64, "{e}");
}

/// `gardenstate create` of a segment larger than its directory's filesystem (a 16 MiB tmpfs
/// mounted in a private mount namespace, like a container's small /dev/shm) fails with the
/// engine's message: the directory, the room needed and free, and the fixes. Skipped, saying
/// so, where the namespace or the mount is not permitted.
#[test]
fn create_in_a_too_small_directory_says_what_to_do() {
    let dir = std::env::temp_dir().join(format!("gds-cli-smallfs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = r#"mount -t tmpfs -o size=16m gds-cli-small "$1" || { echo "SKIPPED: cannot mount a tmpfs here"; exit 0; }
GARDENSTATE_SHM_DIR="$1" "$2" create sessions; echo "exit $?""#;
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&dir)
        .arg(BIN)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => return println!("SKIPPED: unshare -m is not permitted here: {}", stderr(&o).trim()),
        Err(e) => return println!("SKIPPED: cannot run unshare: {e}"),
    };
    if stdout(&out).contains("SKIPPED") {
        return println!("{}", stdout(&out).trim());
    }
    let (e, dir) = (stderr(&out), dir.display().to_string());
    assert!(stdout(&out).contains("exit 2"), "{}\n{e}", stdout(&out));
    for part in [
        format!("gardenstate create: no room in {dir} for the segment"),
        "--shm-size".into(),
        "smaller capacity".into(),
        "GARDENSTATE_SHM_DIR".into(),
        "16777216 bytes".into(),
    ] {
        assert!(e.contains(&part), "the message does not say {part:?}: {e}");
    }
}

/// `destroy` while a process is attached (issue 21): `--yes` answers the prompt only; the
/// refusal names the process; `--force` destroys, and the attached process's next operation
/// fails with `Destroyed` instead of writing into a segment nobody reads again.
#[test]
fn destroy_refuses_while_a_process_is_attached() {
    let seg = Seg::new("destroy-attached");
    create_small(&seg, &[]);
    let store = Store::attach(seg.name()).unwrap();
    store.set(b"k", b"v", Expiry::Never).unwrap();
    let e = fails(&["destroy", seg.name(), "--yes"], "refusing to destroy");
    let me = format!("1 process (pid {}) is attached", std::process::id());
    assert!(e.contains(&me) && e.contains("--force"), "{e}");
    assert!(seg.exists());
    assert_eq!(store.get(b"k").unwrap().unwrap().value, b"v", "the refused destroy changed nothing");
    let out = ok(&["destroy", seg.name(), "--yes", "--force"]);
    assert!(out.contains("destroyed segment") && out.contains(&me), "{out}");
    assert!(!seg.exists());
    let err = store.set(b"k", b"w", Expiry::Never).unwrap_err();
    assert!(matches!(err, gardenstate::Error::Destroyed { .. }), "{err:?}");
    drop(store);
    // Nobody attached: --yes is enough.
    create_small(&seg, &[]);
    let out = ok(&["destroy", seg.name(), "--yes"]);
    assert!(out.contains("destroyed segment") && !out.contains("attached to it"), "{out}");
}

/// `stats --json` counts failed writes by cause, and reports no replication lag on a segment
/// no standby ever followed (issue 21): before, 6,360 `Full` errors left no trace, and
/// `replication.unacknowledged` equalled the feed head, firing lag alerts for nothing.
#[test]
fn stats_counts_failed_writes_by_cause_and_no_lag_without_a_standby() {
    let seg = Seg::new("failed-writes");
    create_sized(&seg, "1MiB", &[]);
    let store = Store::attach(seg.name()).unwrap();
    store.set(b"session", b"v", Expiry::Never).unwrap();
    let l = store.lock(b"session", Duration::from_secs(60)).unwrap().unwrap();
    assert!(matches!(
        store.lock(b"session", Duration::from_secs(60)),
        Err(gardenstate::Error::Locked { .. })
    ));
    store.unlock(b"session", l.lock_id).unwrap();
    let big = vec![7u8; 16 << 10];
    let mut full = 0;
    for i in 0..10_000u32 {
        match store.set(&i.to_le_bytes(), &big, Expiry::Never) {
            Err(gardenstate::Error::Full(_)) => full += 1,
            Ok(_) => {}
            Err(e) => panic!("{e:?}"),
        }
        if full == 3 {
            break;
        }
    }
    assert_eq!(full, 3, "the heap never filled");
    assert!(matches!(
        store.set(b"k", &[0; 20 << 10], Expiry::Never),
        Err(gardenstate::Error::ValueTooLarge { .. })
    ));
    assert!(matches!(
        store.set(&[b'k'; 200], b"v", Expiry::Never),
        Err(gardenstate::Error::KeyTooLarge { .. })
    ));
    store.set_write_mode(gardenstate::WriteMode::Fenced);
    assert!(matches!(store.delete(b"k"), Err(gardenstate::Error::ReadOnly)));
    store.set_write_mode(gardenstate::WriteMode::Writable);

    let json: Value = serde_json::from_str(&ok(&["stats", seg.name(), "--json"])).unwrap();
    let f = &json["stats"]["failed_writes"];
    assert_eq!(
        (f["full"].as_u64(), f["too_large"].as_u64(), f["read_only"].as_u64(), f["locked"].as_u64()),
        (Some(3), Some(2), Some(1), Some(1)),
        "{json:#}"
    );
    let r = &json["replication"];
    assert!(r["feed_head"].as_u64().unwrap() > 0);
    assert!(r["unacknowledged"].is_null(), "no standby ever followed: {r:#}");
    let human = ok(&["stats", seg.name()]);
    assert!(human.contains("3 full, 2 too large, 1 read-only, 1 locked"), "{human}");
    assert!(human.contains("no standby has followed this segment"), "{human}");
}
