//! gardenstate itself: get, set, delete, lock+release, miss and insert on a segment loaded
//! with the run's sessions, memory per session, and 2-process scaling.
//!
//! The 2-process figure re-executes the harness binary (`harness --worker ...`) as a second
//! process attached to the same segment. Both processes get ready (client slot claimed),
//! the parent releases them together through the child's stdin, each runs the same loop
//! for the same window, and the aggregate throughput is the sum of their rates. The
//! 1-process baseline is the same loop, in the parent, just before.

use crate::workload::{KEY_LEN, Limit, Rng, Run, SEED, key, permutation_step, run, value};
use ::gardenstate::{Expiry, Options, Store};
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Every session's expiry: sliding 20 minutes, as ASP.NET's default.
pub const TTL: Expiry = Expiry::Sliding(Duration::from_secs(20 * 60));
/// ASP.NET's executionTimeout, the lock takeover age.
const TAKEOVER: Duration = Duration::from_secs(110);

/// A segment of this run, destroyed on drop (also on panic).
pub struct Segment {
    pub store: Store,
    pub name: String,
}

impl Drop for Segment {
    fn drop(&mut self) {
        let _ = Store::destroy(&self.name);
    }
}

/// Options for `sessions` sessions of `value_len` bytes: the index sized for them, the heap
/// for their records as the allocator packs them (README "Segment options": records in size
/// classes of 8 per power of two, pages of the largest record rounded up to a power of two,
/// at least 64 KiB), plus a tenth and 64 pages of headroom.
pub fn options(sessions: u64, value_len: usize) -> Options {
    const MAX_KEY: u64 = 64;
    let max_value = (value_len as u64).max(4096);
    let record = (KEY_LEN as u64 + value_len as u64 + 88).next_multiple_of(8);
    let step = (1u64 << record.ilog2()) / 8;
    let class = record.next_multiple_of(step.max(8));
    let page = (MAX_KEY + max_value + 88).next_power_of_two().max(64 << 10);
    let pages = sessions.div_ceil(page / class) * 11 / 10 + 64;
    Options {
        capacity_bytes: pages * page,
        max_entries: sessions,
        max_key: MAX_KEY as u32,
        max_value,
        max_clients: 64,
        ..Options::default()
    }
}

pub fn create(sessions: u64, value_len: usize) -> Result<Segment, String> {
    let name = format!("gds-bench-{}-{value_len}", std::process::id());
    let _ = Store::destroy(&name);
    let store = Store::create(&name, &options(sessions, value_len)).map_err(|e| e.to_string())?;
    Ok(Segment { store, name })
}

/// Loads sessions `0..sessions` in order, timing each insert.
pub fn fill(store: &Store, sessions: u64, value_len: usize) -> Run {
    let v = value(value_len);
    let mut i = 0u64;
    run(
        Limit::Ops(sessions),
        || {
            i += 1;
            key(i - 1)
        },
        |k| {
            store.set(&k, &v, TTL).expect("fill");
        },
    )
}

/// The operations a worker process can be asked to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Set,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
        }
    }
    fn parse(s: &str) -> Option<Op> {
        match s {
            "get" => Some(Op::Get),
            "set" => Some(Op::Set),
            _ => None,
        }
    }
}

/// Random gets (hits) or overwriting sets of loaded sessions.
pub fn random_ops(store: &Store, op: Op, sessions: u64, value_len: usize, limit: Limit, seed: u64) -> Run {
    let mut rng = Rng::new(seed);
    let next = move || key(rng.below(sessions));
    match op {
        Op::Get => {
            let mut buf = vec![0u8; value_len];
            run(limit, next, |k| {
                black_box(store.get_into(&k, &mut buf).expect("get").expect("a loaded session"));
            })
        }
        Op::Set => {
            let v = value(value_len);
            run(limit, next, |k| {
                black_box(store.set(&k, &v, TTL).expect("set"));
            })
        }
    }
}

/// Gets of keys never loaded.
pub fn misses(store: &Store, sessions: u64, value_len: usize, limit: Limit) -> Run {
    let mut rng = Rng::new(SEED ^ 0xabcd);
    let mut buf = vec![0u8; value_len];
    run(
        limit,
        || key(sessions + rng.below(sessions)),
        |k| {
            black_box(store.get_into(&k, &mut buf).expect("get"));
        },
    )
}

/// lock then unlock of random sessions (ASP.NET GetItemExclusive + ReleaseItemExclusive).
pub fn lock_release(store: &Store, sessions: u64, limit: Limit) -> Run {
    let mut rng = Rng::new(SEED ^ 0x10c);
    run(
        limit,
        || key(rng.below(sessions)),
        |k| {
            let l = store.lock(&k, TAKEOVER).expect("lock").expect("a loaded session");
            store.unlock(&k, l.lock_id).expect("unlock");
        },
    )
}

/// Deletes `n` distinct sessions (timed), then inserts them again (timed: inserts into
/// a loaded table, the figure a login is).
pub fn delete_and_reinsert(store: &Store, sessions: u64, value_len: usize, n: u64) -> (Run, Run) {
    let step = permutation_step(sessions);
    let v = value(value_len);
    let mut i = 0u64;
    let deletes = run(
        Limit::Ops(n),
        || {
            i += 1;
            key((i - 1) * step % sessions)
        },
        |k| assert!(store.delete(&k).expect("delete"), "deleted a loaded session"),
    );
    let mut i = 0u64;
    let inserts = run(
        Limit::Ops(n),
        || {
            i += 1;
            key((i - 1) * step % sessions)
        },
        |k| {
            store.set(&k, &v, TTL).expect("insert");
        },
    );
    (deletes, inserts)
}

/// What a worker process reports on its stdout when done.
#[derive(Debug, Clone, Copy)]
pub struct WorkerResult {
    pub ops: u64,
    pub elapsed: Duration,
}

/// Runs `op` for `window` in the parent and in a second process at once; returns the
/// parent's run and the child's counts.
pub fn two_processes(
    seg: &Segment,
    op: Op,
    sessions: u64,
    value_len: usize,
    window: Duration,
) -> Result<(Run, WorkerResult), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut child = Command::new(exe)
        .args([
            "--worker".to_string(),
            seg.name.clone(),
            op.name().to_string(),
            sessions.to_string(),
            value_len.to_string(),
            window.as_millis().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning the second process: {e}"))?;
    let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut line = String::new();
    out.read_line(&mut line).map_err(|e| e.to_string())?;
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("second process did not get ready: {line:?}"));
    }
    // Warm this process's client slot too, then release both together.
    let _ = seg.store.get_into(&key(0), &mut vec![0u8; value_len]);
    stdin.write_all(b"go\n").map_err(|e| e.to_string())?;
    drop(stdin);
    let mine = random_ops(&seg.store, op, sessions, value_len, Limit::For(window), SEED);
    line.clear();
    out.read_line(&mut line).map_err(|e| e.to_string())?;
    let status = child.wait().map_err(|e| e.to_string())?;
    let mut it = line.split_whitespace().map(|w| w.parse::<u64>());
    match (it.next(), it.next()) {
        (Some(Ok(ops)), Some(Ok(ns))) if status.success() => {
            Ok((mine, WorkerResult { ops, elapsed: Duration::from_nanos(ns) }))
        }
        _ => Err(format!("second process failed ({status}): {line:?}")),
    }
}

/// The second process: `--worker SEGMENT OP SESSIONS VALUE_LEN WINDOW_MS`. Prints "ready",
/// waits for a line on stdin, runs, prints "OPS ELAPSED_NS".
pub fn worker_main(args: &[String]) -> Result<(), String> {
    let [name, op, sessions, value_len, ms] = args else {
        return Err("usage: --worker SEGMENT OP SESSIONS VALUE_LEN WINDOW_MS".into());
    };
    let op = Op::parse(op).ok_or("op: get or set")?;
    let num = |s: &String| s.parse::<u64>().map_err(|e| format!("{s}: {e}"));
    let (sessions, value_len, ms) = (num(sessions)?, num(value_len)? as usize, num(ms)?);
    let store = Store::attach(name).map_err(|e| e.to_string())?;
    let _ = store.get_into(&key(0), &mut vec![0u8; value_len]);
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready").and_then(|_| stdout.flush()).map_err(|e| e.to_string())?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| e.to_string())?;
    let r = random_ops(
        &store,
        op,
        sessions,
        value_len,
        Limit::For(Duration::from_millis(ms)),
        SEED ^ 0x5555_5555,
    );
    writeln!(stdout, "{} {}", r.ops, r.elapsed.as_nanos()).map_err(|e| e.to_string())?;
    Ok(())
}

/// Bytes of the segment file actually backed by memory (tmpfs pages touched).
pub fn resident_bytes(name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let path = ::gardenstate::shm_dir().join(name);
    std::fs::metadata(path).ok().map(|m| m.blocks() * 512)
}

/// A segment of default options but an index for `max_entries`, filled with 1 KiB sessions
/// until the first `Full`; then `n` inserts of new keys, each timed and each expected to fail
/// with `Full` (what a host sees once its segment is full). Returns the failing inserts and
/// how many sessions the segment took.
pub fn failing_inserts(max_entries: u64, n: u64) -> Result<(Run, u64), String> {
    let name = format!("gds-bench-{}-full-{max_entries}", std::process::id());
    let _ = Store::destroy(&name);
    let opts = Options { max_entries, max_clients: 64, ..Options::default() };
    let store = Store::create(&name, &opts).map_err(|e| e.to_string())?;
    let seg = Segment { store, name };
    let v = value(1024);
    let mut stored = 0u64;
    loop {
        match seg.store.set(&key(stored), &v, TTL) {
            Ok(_) => stored += 1,
            Err(::gardenstate::Error::Full(_)) => break,
            Err(e) => return Err(format!("filling: {e}")),
        }
    }
    let mut i = stored;
    let failing = run(
        Limit::Ops(n),
        || {
            i += 1;
            key(i)
        },
        |k| match seg.store.set(&k, &v, TTL) {
            Err(::gardenstate::Error::Full(_)) => {}
            other => panic!("an insert into a full segment: {other:?}"),
        },
    );
    Ok((failing, stored))
}
