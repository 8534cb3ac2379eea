//! The gardenstate demo: a web garden of four worker processes shares one session store.
//!
//! ```text
//! cargo run --release -p gardenstate --example demo
//! ```
//!
//! This process is the *monitor*. It creates a segment, starts the workers (copies of this
//! program run as `demo worker <segment> <n>`), and prints one line of the segment's
//! statistics a second. The workers simulate web traffic for ten seconds:
//!
//! - a user's request carries a session cookie; the simulated browsers' cookie jar lives in
//!   the segment too (`jar:<user>`), so any worker can serve any user, as behind a load
//!   balancer;
//! - log in: `add` a session under a random 32-character id (20 min sliding expiry), then
//!   publish the cookie with `compare_and_set` (two tabs logging in at once keep one session);
//! - read-only pages: `get_into`; updates: `get_into` + `compare_and_set`; pages that write the
//!   session: `lock` + `set_and_unlock` (ASP.NET's exclusive access; `Locked` is contention);
//!   keep-alive pings: `touch`; log out: `delete`;
//! - anonymous visitors get 2 s sessions and mostly never come back: those expire.
//!
//! Every value carries a checksum, which the workers verify on every read. At second 6 the
//! monitor kills one worker with SIGKILL, mid-traffic: the others keep going, and one of them
//! notices the dead process and reclaims its client slot (and any memory or lock it held).
//! At the end the monitor prints a summary, checks the whole segment (`Store::check`, an fsck),
//! fails if any read was wrong or anything leaked, and destroys the segment (also on Ctrl-C).

use gardenstate::demo::{self, Rng, SESSION_ID_LEN, Tally, request_count_of, seal, unseal, verify};
use gardenstate::{Error, Expiry, Options, Stats, Store};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The demo's settings: no command line, `cargo run --example demo` is the whole interface.
struct Config {
    /// Worker processes (a "web garden").
    workers: usize,
    /// How long the traffic runs.
    seconds: u64,
    /// The second at which one worker is killed with SIGKILL (`kill -9`).
    kill_at: u64,
    /// The worker that is killed (1-based).
    victim: usize,
    /// Registered users, shared by all workers.
    users: usize,
    /// The first `hot_users` get a fifth of all requests (many tabs open): lock contention.
    hot_users: usize,
    /// Session timeout of a logged-in user (sliding, as in ASP.NET).
    user_ttl: Duration,
    /// Session timeout of an anonymous visitor: short, so they expire during the demo.
    visitor_ttl: Duration,
    /// Each worker sees a visitor (new or returning) this often.
    visitor_every: Duration,
    /// How long a request that locked its session works before writing it back.
    request_work: Duration,
    /// A session lock older than this is taken over (ASP.NET: the execution timeout).
    lock_timeout: Duration,
}

const CONFIG: Config = Config {
    workers: 4,
    seconds: 10,
    kill_at: 6,
    victim: 2,
    users: 2_000,
    hot_users: 16,
    user_ttl: Duration::from_secs(20 * 60),
    visitor_ttl: Duration::from_secs(2),
    visitor_every: Duration::from_micros(500),
    request_work: Duration::from_micros(10),
    lock_timeout: Duration::from_secs(2),
};

/// The segment's capacity: room for every user and about 20k live visitors, with headroom.
fn segment_options() -> Options {
    Options {
        capacity_bytes: 48 << 20,
        max_entries: 65_536,
        max_key: 64,
        max_value: 64 << 10,
        max_clients: 64,
        feed_len: 65_536,
        ..Options::default() // no eviction (a full store says Full), mode 0600
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [] => monitor(),
        [w, segment, n] if w == "worker" => match n.parse() {
            Ok(n) => worker(segment, n),
            Err(_) => Err(format!("bad worker number {n:?}").into()),
        },
        _ => Err("usage: demo   (no arguments; `demo worker ...` is how the demo starts its workers)".into()),
    };
    if let Err(e) = result {
        eprintln!("demo: {e}");
        std::process::exit(1);
    }
}

type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

// ================================================================================================
// The monitor
// ================================================================================================

/// Removes the segment when the monitor ends, however it ends (return, panic or Ctrl-C).
struct SegmentGuard(String);

impl Drop for SegmentGuard {
    fn drop(&mut self) {
        match Store::destroy(&self.0) {
            Ok(_) => println!("segment {} destroyed.", self.0),
            Err(e) => eprintln!("demo: could not destroy segment {}: {e}", self.0),
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed); // async-signal-safe: one atomic store
}

fn monitor() -> AnyResult<()> {
    let c = &CONFIG;
    // SAFETY: `on_sigint` only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };

    let name = format!("gardenstate-demo-{}", std::process::id());
    let store = Store::create(&name, &segment_options())?;
    let _guard = SegmentGuard(name.clone());
    let info = store.info();
    println!("gardenstate demo: {} worker processes share one session store for {} s.", c.workers, c.seconds);
    println!(
        "segment {}: {:.1} MiB ({} MiB heap, up to {} entries), mode 0600",
        gardenstate::shm_dir().join(&name).display(),
        mib(info.segment_bytes),
        info.heap_bytes >> 20,
        num(info.max_entries)
    );

    // A thread holds a client slot only while inside an operation, so the `clients` column
    // counts the workers' operations in flight at the instant of the sample (and the killed
    // worker's slot, if it died mid-operation, until a survivor reclaims it).
    std::thread::scope(|s| s.spawn(|| seed_cookie_jar(&store)).join().expect("seeding thread"))?;
    println!(
        "{} users ({} of them hot), anonymous visitors with a {} s sliding timeout, all logged out.",
        num(c.users as u64),
        c.hot_users,
        c.visitor_ttl.as_secs()
    );

    let mut workers =
        (1..=c.workers).map(|n| WorkerProcess::spawn(&name, n)).collect::<AnyResult<Vec<_>>>()?;
    let pids: Vec<String> = workers.iter().map(|w| w.child.id().to_string()).collect();
    println!("started workers 1-{} (pids {})\n", c.workers, pids.join(", "));
    let columns = [
        "sec",
        "ops/s",
        "hits/s",
        "misses/s",
        "sessions",
        "locks/s",
        "contended/s",
        "expired/s",
        "used MiB",
        "clients",
    ];
    println!("{}", row(columns.map(String::from)));

    let start = Instant::now();
    let first = store.stats();
    let mut prev = first.clone();
    let mut killed_at: Option<u64> = None;
    let mut reclaim_seen = false;
    for sec in 1..=c.seconds {
        if !sleep_until(start + Duration::from_secs(sec)) {
            break;
        }
        let now = store.stats();
        // Counters only grow, but a reader can catch a dead client's counters halfway through
        // being folded into the retired totals: hence saturating_sub.
        let per_sec = |f: fn(&Stats) -> u64| num(f(&now).saturating_sub(f(&prev)));
        println!(
            "{}",
            row([
                sec.to_string(),
                per_sec(ops),
                per_sec(|s| s.hits),
                per_sec(|s| s.misses),
                num(sessions(&now)),
                per_sec(|s| s.locks),
                per_sec(|s| s.lock_contentions),
                per_sec(|s| s.expirations),
                format!("{:.1}", mib(now.bytes_used)),
                now.clients.to_string(),
            ])
        );
        if killed_at.is_some() && !reclaim_seen && now.dead_reclaims > first.dead_reclaims {
            reclaim_seen = true;
            println!(
                "     ^ a surviving worker found worker {}'s process dead and reclaimed what it held",
                c.victim
            );
        }
        if sec == c.kill_at && c.victim <= workers.len() {
            let w = &mut workers[c.victim - 1];
            // `Child::kill` is SIGKILL on Unix: the worker stops at whatever instruction it is
            // at, maybe halfway through a write or holding a session lock.
            w.child.kill()?;
            w.child.wait()?;
            killed_at = Some(sec);
            println!(
                "     kill -9 worker {} (pid {}): the others keep serving its users",
                c.victim,
                w.child.id()
            );
        }
        prev = now;
    }
    let interrupted = INTERRUPTED.load(Ordering::Relaxed);
    let elapsed = start.elapsed();

    // Closing a worker's stdin tells it to finish; it sends a last report and exits.
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for (i, mut w) in workers.into_iter().enumerate() {
        drop(w.stdin.take());
        let status = w.child.wait()?;
        if let Some(t) = w.reader.take() {
            let _ = t.join();
        }
        let was_killed = killed_at.is_some() && i + 1 == c.victim;
        if !was_killed && !status.success() {
            failed.push(format!("worker {} exited with {status}", i + 1));
        }
        reports.push(w.report.lock().unwrap_or_else(|e| e.into_inner()).clone());
    }
    let end = store.stats();
    // Every process is gone now: an fsck of the whole segment (index, heap, client table) finds
    // nothing leaked, not even what the killed worker was in the middle of.
    let check = store.check();
    let total = reports.iter().fold(Tally::default(), |a, b| a.plus(b));

    println!("\nsummary: {:.1} s, {} workers", elapsed.as_secs_f64(), c.workers);
    if let Some(sec) = killed_at {
        println!("  (worker {} was killed at second {sec}; its figures are from its last report)", c.victim);
    }
    let line = |what: &str, v: String| println!("  {what:<24}{v}");
    let per_sec = |n: u64| num((n as f64 / elapsed.as_secs_f64()) as u64);
    let total_ops = ops(&end).saturating_sub(ops(&first));
    line("engine operations", format!("{} ({}/s)", num(total_ops), per_sec(total_ops)));
    line("requests served", format!("{} ({}/s)", num(total.requests), per_sec(total.requests)));
    line("reads verified", format!("{} (checksum and session id of every value read)", num(total.verified)));
    line("bad reads", total.bad.to_string());
    line("logins / logouts", format!("{} / {}", num(total.logins), num(total.logouts)));
    line(
        "session locks",
        format!(
            "{} taken, {} contended, {} taken over (holder dead or timed out)",
            num(end.locks),
            num(end.lock_contentions),
            num(end.lock_takeovers)
        ),
    );
    line(
        "optimistic updates",
        format!("{} ok, {} lost a race (version changed)", num(total.updates), num(total.conflicts)),
    );
    line("expired sessions", num(end.expirations));
    line(
        "dead-process reclaims",
        format!(
            "{} (client slots, and locks whose owner died); client slots in use now: {}",
            end.dead_reclaims, end.clients
        ),
    );
    line(
        "segment check (fsck)",
        format!(
            "{} entries, {} blocks in use, {} leaked, {} dead clients, {} problems",
            num(check.entries),
            num(check.blocks_in_use),
            check.leaked_blocks,
            check.dead_clients,
            check.problems.len()
        ),
    );
    line("sessions at the end", format!("{} in {:.1} MiB", num(sessions(&end)), mib(end.bytes_used)));
    for p in check.problems.iter().take(10) {
        println!("  check: {p}");
    }

    if interrupted {
        println!("interrupted (Ctrl-C): stopped early.");
    }
    if total.bad > 0 {
        failed.push(format!("{} reads returned a wrong or torn value", total.bad));
    }
    if total.verified == 0 {
        failed.push("no read was verified".into());
    }
    if !check.problems.is_empty() {
        failed.push(format!("the segment check found {} problems", check.problems.len()));
    }
    // Nobody is inside an operation now: a slot still in use is the killed worker's, held
    // mid-operation and never reclaimed.
    if killed_at.is_some() && end.clients != 0 {
        failed.push("the killed worker's client slot was not reclaimed".into());
    }
    if !failed.is_empty() {
        return Err(format!("FAILED: {}", failed.join("; ")).into());
    }
    println!(
        "ok: zero bad reads{}.",
        if killed_at.is_some() { ", dead worker reclaimed, nothing leaked" } else { "" }
    );
    Ok(())
}

/// Every user starts logged out: an empty cookie. `set` because nothing else writes yet.
fn seed_cookie_jar(store: &Store) -> gardenstate::Result<()> {
    for user in 0..CONFIG.users {
        store.set(jar_key(user).as_bytes(), &seal(Vec::new()), Expiry::Never)?;
    }
    Ok(())
}

/// Engine operations counted by the segment: reads, writes, deletes and lock attempts.
fn ops(s: &Stats) -> u64 {
    s.hits + s.misses + s.sets + s.deletes + s.locks + s.lock_contentions
}

/// Live sessions: every entry but the cookie jar's (expired ones the sweeper has not reached
/// yet included).
fn sessions(s: &Stats) -> u64 {
    s.live_entries.saturating_sub(CONFIG.users as u64)
}

/// Sleeps until `t`; false if Ctrl-C came first.
fn sleep_until(t: Instant) -> bool {
    loop {
        if INTERRUPTED.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= t {
            return true;
        }
        std::thread::sleep((t - now).min(Duration::from_millis(50)));
    }
}

/// A running worker: its process, the pipe that keeps it running, and its latest report.
struct WorkerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    report: Arc<Mutex<Tally>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl WorkerProcess {
    fn spawn(segment: &str, n: usize) -> AnyResult<WorkerProcess> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["worker", segment, &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let report = Arc::new(Mutex::new(Tally::default()));
        let latest = report.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match parse_report(&line) {
                    Some(t) => *latest.lock().unwrap_or_else(|e| e.into_inner()) = t,
                    None => println!("worker {n}: {line}"),
                }
            }
        });
        Ok(WorkerProcess { child, stdin, report, reader: Some(reader) })
    }
}

// ================================================================================================
// A worker
// ================================================================================================

/// A worker's `report ...` line (`Tally::line`), if `line` is one.
fn parse_report(line: &str) -> Option<Tally> {
    Tally::parse_fields(line.strip_prefix("report ")?.split(' '))
}

static STOP: AtomicBool = AtomicBool::new(false);

fn worker(segment: &str, n: usize) -> AnyResult<()> {
    // Ctrl-C reaches the whole process group: leave it to the monitor, which stops us by
    // closing our stdin (so we also stop if the monitor dies).
    // SAFETY: installing SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(k) if k > 0) {}
        STOP.store(true, Ordering::Relaxed);
    });

    let mut w = Worker {
        store: Store::attach(segment)?,
        rng: Rng::new(n as u64),
        buf: vec![0; 64 << 10],
        value: Vec::new(),
        visitors: Vec::new(),
        tally: Tally::default(),
    };
    let mut stdout = std::io::stdout();
    let mut next_report = Instant::now();
    let mut next_visitor = Instant::now();
    while !STOP.load(Ordering::Relaxed) {
        for _ in 0..32 {
            let user = w.pick_user();
            w.user_request(user)?;
        }
        let now = Instant::now();
        while next_visitor <= now {
            w.visitor()?;
            next_visitor += CONFIG.visitor_every;
        }
        if now >= next_report {
            writeln!(stdout, "{}", w.tally.line())?;
            next_report = now + Duration::from_millis(200);
        }
    }
    writeln!(stdout, "{}", w.tally.line())?;
    Ok(())
}

struct Worker {
    store: Store,
    rng: Rng,
    /// Read buffer for `get_into`: reads copy into it, no allocation.
    buf: Vec<u8>,
    /// Scratch space for building the next value.
    value: Vec<u8>,
    /// Recent anonymous visitors' session ids (this worker's own: visitors are sticky).
    visitors: Vec<[u8; SESSION_ID_LEN]>,
    tally: Tally,
}

/// The result type of the workers' requests: anything unexpected ends the worker.
type R = gardenstate::Result<()>;

impl Worker {
    fn pick_user(&mut self) -> usize {
        if self.rng.below(5) == 0 {
            self.rng.below(CONFIG.hot_users as u64) as usize
        } else {
            self.rng.below(CONFIG.users as u64) as usize
        }
    }

    /// Checks a value read from the store; counts it as verified or bad.
    fn check(&mut self, ok: bool) {
        if ok {
            self.tally.verified += 1;
        } else {
            self.tally.bad += 1;
            eprintln!("BAD READ: a value failed its checksum or belongs to another session");
        }
    }

    /// One request of a registered user.
    fn user_request(&mut self, user: usize) -> R {
        self.tally.requests += 1;
        let jar = jar_key(user);
        // The browser sends its cookie: a session id, or nothing if logged out.
        let Some(cookie) = self.store.get_into(jar.as_bytes(), &mut self.buf)? else {
            unreachable!("cookie jar entries are never deleted");
        };
        let body = unseal(&self.buf[..cookie.len]).map(<[u8]>::to_vec);
        self.check(body.as_ref().is_some_and(|b| b.is_empty() || b.len() == SESSION_ID_LEN));
        let Some(sid) = body.and_then(|b| <[u8; SESSION_ID_LEN]>::try_from(b).ok()) else {
            return self.log_in(&jar, cookie.version);
        };
        let served = match self.rng.below(100) {
            0..60 => self.view(&sid)?,
            60..75 => self.update(&sid)?,
            75..92 => self.exclusive(&sid)?,
            92..97 => self.store.touch(&sid, Expiry::Sliding(CONFIG.user_ttl))?,
            _ => return self.log_out(&sid, &jar, cookie.version),
        };
        if !served {
            // The session is gone (another tab logged out, or it timed out): log in again.
            self.log_in(&jar, cookie.version)?;
        }
        Ok(())
    }

    /// Log in: a new session, then the cookie, unless another tab logged in first.
    fn log_in(&mut self, jar: &str, jar_version: u64) -> R {
        let sid = self.rng.session_id();
        self.make_value(&sid, 0, 200, 4000);
        self.store.add(&sid, &self.value, Expiry::Sliding(CONFIG.user_ttl))?;
        match self.store.compare_and_set(jar.as_bytes(), jar_version, &seal(sid.to_vec()), Expiry::Never) {
            Ok(_) => self.tally.logins += 1,
            Err(Error::VersionMismatch { .. }) => {
                self.store.delete(&sid)?; // the other tab's session won
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn log_out(&mut self, sid: &[u8], jar: &str, jar_version: u64) -> R {
        self.store.delete(sid)?;
        match self.store.compare_and_set(jar.as_bytes(), jar_version, &seal(Vec::new()), Expiry::Never) {
            Ok(_) | Err(Error::VersionMismatch { .. }) => {}
            Err(e) => return Err(e),
        }
        self.tally.logouts += 1;
        Ok(())
    }

    /// A page that only reads the session. Reading pushes its sliding deadline out.
    fn view(&mut self, sid: &[u8]) -> gardenstate::Result<bool> {
        let Some(meta) = self.store.get_into(sid, &mut self.buf)? else { return Ok(false) };
        let ok = verify(sid, &self.buf[..meta.len]);
        self.check(ok);
        Ok(true)
    }

    /// A small update without the session lock: read, then write back only if nothing changed
    /// in between (`compare_and_set` on the version). A blind `set` would also drop a lock
    /// another request holds, so writers that do not lock use the version.
    fn update(&mut self, sid: &[u8]) -> gardenstate::Result<bool> {
        let Some(meta) = self.store.get_into(sid, &mut self.buf)? else { return Ok(false) };
        let ok = verify(sid, &self.buf[..meta.len]);
        self.check(ok);
        if meta.lock.is_some() {
            return Ok(true); // a request holds it exclusively: leave it alone this time
        }
        let count = request_count_of(sid, &self.buf[..meta.len]) + 1;
        self.make_value(sid, count, 200, 4000);
        match self.store.compare_and_set(sid, meta.version, &self.value, Expiry::Sliding(CONFIG.user_ttl)) {
            Ok(_) => self.tally.updates += 1,
            Err(Error::VersionMismatch { .. } | Error::NotFound) => self.tally.conflicts += 1,
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    /// A page that writes the session, with ASP.NET's exclusive access: lock, work, write back
    /// and unlock in one step. `Locked` means another request of this user holds it; ASP.NET
    /// would poll again, here the request just moves on (the store counts the contention).
    fn exclusive(&mut self, sid: &[u8]) -> gardenstate::Result<bool> {
        let locked = match self.store.lock(sid, CONFIG.lock_timeout) {
            Ok(Some(locked)) => locked,
            Ok(None) => return Ok(false),
            Err(Error::Locked { .. }) => return Ok(true),
            Err(e) => return Err(e),
        };
        self.check(verify(sid, &locked.value));
        let until = Instant::now() + CONFIG.request_work;
        while Instant::now() < until {
            std::hint::spin_loop(); // the request's own work, session locked
        }
        let count = request_count_of(sid, &locked.value) + 1;
        self.make_value(sid, count, 200, 4000);
        match self.store.set_and_unlock(sid, locked.lock_id, &self.value, Expiry::Sliding(CONFIG.user_ttl)) {
            // Logged out by another tab meanwhile, or the lock was taken over: the write is lost,
            // as in ASP.NET.
            Ok(_) | Err(Error::NotFound | Error::LockMismatch { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// An anonymous visitor: half the time a new one (a short session), half the time one of
    /// the recent ones coming back, whose session may have timed out meanwhile.
    fn visitor(&mut self) -> R {
        if !self.visitors.is_empty() && self.rng.below(2) == 0 {
            let sid = self.visitors[self.rng.below(self.visitors.len() as u64) as usize];
            if self.view(&sid)? {
                return Ok(());
            }
        }
        let sid = self.rng.session_id();
        self.make_value(&sid, 0, 100, 500);
        self.store.add(&sid, &self.value, Expiry::Sliding(CONFIG.visitor_ttl))?;
        if self.visitors.len() < 8192 {
            self.visitors.push(sid);
        } else {
            let i = self.rng.below(8192) as usize;
            self.visitors[i] = sid;
        }
        Ok(())
    }

    /// A session value of `min..max` bytes: session id, request count, some data, checksum.
    fn make_value(&mut self, sid: &[u8], count: u64, min: u64, max: u64) {
        let len = (min + self.rng.below(max - min)) as usize;
        demo::make_value(&mut self.value, sid, count, len, &mut self.rng);
    }
}

// ================================================================================================
// Keys, formatting (values, checksums and randomness: gardenstate::demo)
// ================================================================================================

fn jar_key(user: usize) -> String {
    format!("jar:{user:06}")
}

/// One line of the live table: right-aligned columns.
fn row(cells: [String; 10]) -> String {
    const WIDTHS: [usize; 10] = [4, 11, 10, 9, 9, 8, 11, 10, 9, 8];
    let cols: Vec<String> = cells.iter().zip(WIDTHS).map(|(c, w)| format!("{c:>w$}")).collect();
    cols.join(" ")
}

/// 1234567 -> "1,234,567".
fn num(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}
