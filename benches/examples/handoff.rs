//! Lock hand-off latency: from the holder's `unlock` to the return of a waiter in another
//! process, for `Store::lock_wait` (woken by the release through a shared futex word) and
//! for `lock` polled every 1 ms and every 0.5 s (Mono's SessionStateModule), in one run.
//!
//! `cargo run --release -p gardenstate-benches --example handoff -- [ROUNDS]`
//!
//! Each round: the holder (this process) locks the session, tells the waiter (a child
//! process, this binary re-run) to start waiting, waits until it is about to wait, sleeps a
//! random 1 ms + U(0, poll interval) (so the waiter sleeps, and an unlock falls anywhere in
//! a poll's cycle), reads CLOCK_REALTIME (comparable across processes) and unlocks. The
//! waiter reads the clock as soon as it holds the lock, and the difference is the hand-off.
//! Rounds: ROUNDS (default 1000) for lock_wait and the 1 ms poll, ROUNDS / 50 for the 0.5 s
//! poll (each costs about 0.75 s).
use gardenstate::{Error, Expiry, Options, Store};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const KEY: &[u8] = b"session";
/// Round number the holder wants the waiter to start waiting in.
const GO: &[u8] = b"go";
/// Round number the waiter is about to wait in.
const READY: &[u8] = b"ready";
/// Round number the waiter is done with (it holds the lock no more).
const DONE: &[u8] = b"done";

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_nanos() as u64
}

fn put(st: &Store, k: &[u8], v: u64) {
    st.set(k, &v.to_le_bytes(), Expiry::Never).unwrap();
}

fn read(st: &Store, k: &[u8]) -> u64 {
    st.get(k).unwrap().map_or(0, |e| u64::from_le_bytes(e.value.try_into().unwrap()))
}

/// Spins (yielding) until `k` holds `v`.
fn await_value(st: &Store, k: &[u8], v: u64) {
    while read(st, k) != v {
        std::thread::yield_now();
    }
}

/// How the waiter waits: `lock_wait`, or `lock` polled every `interval`.
#[derive(Clone, Copy)]
enum Mode {
    Wait,
    Poll(Duration),
}

impl Mode {
    fn parse(s: &str) -> Mode {
        match s {
            "wait" => Mode::Wait,
            ms => Mode::Poll(Duration::from_micros(ms.parse::<u64>().expect("poll interval in us"))),
        }
    }
    fn arg(self) -> String {
        match self {
            Mode::Wait => "wait".into(),
            Mode::Poll(d) => d.as_micros().to_string(),
        }
    }
    fn name(self) -> String {
        match self {
            Mode::Wait => "lock_wait (futex)".into(),
            Mode::Poll(d) if d >= Duration::from_millis(100) => format!("poll every {} s", d.as_secs_f64()),
            Mode::Poll(d) => format!("poll every {} ms", d.as_secs_f64() * 1e3),
        }
    }
}

/// The child: waits for the lock `rounds` times, prints one hand-off time (ns) a line.
fn waiter(name: &str, mode: Mode, rounds: u64) {
    let st = Store::attach(name).unwrap();
    let patience = Duration::from_secs(600);
    for round in 1..=rounds {
        await_value(&st, GO, round);
        put(&st, READY, round);
        let (locked, at) = match mode {
            Mode::Wait => {
                let l = st.lock_wait(KEY, patience, patience).unwrap().unwrap();
                (l, now_ns())
            }
            Mode::Poll(interval) => loop {
                match st.lock(KEY, patience) {
                    Ok(Some(l)) => break (l, now_ns()),
                    Err(Error::Locked { .. }) => std::thread::sleep(interval),
                    other => panic!("lock: {other:?}"),
                }
            },
        };
        assert!(!locked.took_over);
        st.unlock(KEY, locked.lock_id).unwrap();
        println!("{at}");
        put(&st, DONE, round);
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn fmt_ns(ns: f64) -> String {
    match ns {
        n if n >= 1e6 => format!("{:.1} ms", n / 1e6),
        n => format!("{:.1} us", n / 1e3),
    }
}

/// The holder's side of `rounds` hand-offs to a waiter in `mode`; returns the hand-off times.
fn measure(name: &str, mode: Mode, rounds: u64) -> Vec<f64> {
    let st = Store::attach(name).unwrap();
    for k in [GO, READY, DONE] {
        put(&st, k, 0);
    }
    let exe = std::env::current_exe().unwrap();
    let child = std::process::Command::new(exe)
        .args(["--waiter", name, &mode.arg(), &rounds.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut unlocked_at = Vec::new();
    let jitter = match mode {
        Mode::Wait => Duration::from_millis(1),
        Mode::Poll(d) => d,
    };
    for round in 1..=rounds {
        let l = st.lock(KEY, Duration::from_secs(600)).unwrap().unwrap();
        put(&st, GO, round);
        await_value(&st, READY, round);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let frac = (rng >> 11) as f64 / (1u64 << 53) as f64;
        std::thread::sleep(Duration::from_millis(1) + jitter.mul_f64(frac));
        unlocked_at.push(now_ns());
        st.unlock(KEY, l.lock_id).unwrap();
        await_value(&st, DONE, round);
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "waiter failed: {:?}", out.status);
    let returned: Vec<u64> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(returned.len(), unlocked_at.len());
    let mut ns: Vec<f64> =
        returned.iter().zip(&unlocked_at).map(|(r, u)| r.saturating_sub(*u) as f64).collect();
    ns.sort_by(f64::total_cmp);
    ns
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--waiter") {
        waiter(&args[1], Mode::parse(&args[2]), args[3].parse().unwrap());
        return;
    }
    let rounds: u64 = args.first().map_or(1000, |r| r.parse().expect("ROUNDS"));
    let name = format!("handoff-{}", std::process::id());
    let opts = Options { capacity_bytes: 1 << 20, max_entries: 64, max_value: 64, ..Options::default() };
    let st = Store::create(&name, &opts).unwrap();
    st.set(KEY, b"cart=1", Expiry::Never).unwrap();
    println!(
        "lock hand-off, unlock -> waiter's return in another process ({} rounds; 0.5 s poll: {})",
        rounds,
        (rounds / 50).max(5)
    );
    println!("{:<22} {:>10} {:>10} {:>10}", "waiter", "p50", "p99", "max");
    for mode in [Mode::Wait, Mode::Poll(Duration::from_millis(1)), Mode::Poll(Duration::from_millis(500))] {
        let n = if matches!(mode, Mode::Poll(d) if d >= Duration::from_millis(100)) {
            (rounds / 50).max(5)
        } else {
            rounds
        };
        let ns = measure(&name, mode, n);
        println!(
            "{:<22} {:>10} {:>10} {:>10}",
            mode.name(),
            fmt_ns(pct(&ns, 0.5)),
            fmt_ns(pct(&ns, 0.99)),
            fmt_ns(*ns.last().unwrap())
        );
    }
    let stats = st.stats();
    println!("(locks {}, contended attempts {})", stats.locks, stats.lock_contentions);
    drop(st);
    Store::destroy(&name).unwrap();
}
