//! Helpers shared by the integration tests.
#![allow(dead_code)]

use gardenstate::{Options, Store};

/// A segment name unique to this test and process, destroyed when dropped.
pub struct Seg {
    pub name: String,
}

impl Seg {
    pub fn new(tag: &str) -> Seg {
        let name = format!("gds-test-{tag}-{}", std::process::id());
        let _ = Store::destroy(&name);
        Seg { name }
    }
}

impl Drop for Seg {
    fn drop(&mut self) {
        let _ = Store::destroy(&self.name);
    }
}

/// Runs the segment check and fails the test on any violated invariant.
pub fn assert_healthy(st: &Store) -> gardenstate::CheckReport {
    let report = st.check();
    assert!(report.problems.is_empty() && report.dead_clients == 0, "{report:#?}");
    report
}

pub fn small() -> Options {
    Options {
        capacity_bytes: 8 << 20,
        max_entries: 10_000,
        max_key: 64,
        max_value: 64 << 10,
        max_clients: 64,
        feed_len: 1024,
        ..Options::default()
    }
}

// ---- helpers of the multi-process and crash tests (multiprocess.rs, crash.rs) ----------------

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A small deterministic PRNG (the engine's splitmix64, seeded apart from the fuzzers'):
/// tests print their seed so a run can be replayed.
#[derive(Debug, Clone)]
pub struct Rng(gardenstate::fuzzing::Rng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(gardenstate::fuzzing::Rng(seed ^ 0x9e37_79b9_7f4a_7c15))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// The seed named by env var `var` (decimal or 0x-hex), else one from the clock and pid.
pub fn seed_from_env(var: &str) -> u64 {
    if let Ok(s) = std::env::var(var) {
        let s = s.trim();
        let parsed = match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16),
            None => s.parse(),
        };
        return parsed.unwrap_or_else(|_| panic!("{var}={s:?} is not a number"));
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (t.as_nanos() as u64) ^ ((std::process::id() as u64) << 32)
}

/// Who wrote a self-verifying value (see [`make_value`]); absent for the short form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ident {
    pub writer: u32,
    pub seq: u64,
    pub counter: u64,
}

const VALUE_MAGIC: &[u8; 4] = b"GDSv";
/// Values at least this long carry the full header (writer, seq, counter).
pub const FULL_VALUE_MIN: usize = 32;
/// The shortest self-verifying value.
pub const VALUE_MIN: usize = 8;

fn key_seed(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// A value that proves which key it was written for and that it is whole: the last 8 bytes
/// are an xxh3 of everything before them, seeded with the hash of the key (so a value read
/// under another key, truncated, extended or mixed with another value fails the check).
/// From `FULL_VALUE_MIN` bytes on it also carries `GDSv`, the writer, a sequence number and
/// a counter. `len >= VALUE_MIN`.
pub fn make_value(key: &[u8], writer: u32, seq: u64, counter: u64, len: usize) -> Vec<u8> {
    assert!(len >= VALUE_MIN, "values are at least {VALUE_MIN} bytes");
    let mut v = vec![0u8; len];
    let body = len - 8;
    // Filler that differs between writes, so a mix of two writes of one length is detected.
    let mut r = Rng::new(seq ^ ((writer as u64) << 40) ^ key_seed(key));
    for chunk in v[..body].chunks_mut(8) {
        let x = r.next_u64().to_le_bytes();
        chunk.copy_from_slice(&x[..chunk.len()]);
    }
    if len >= FULL_VALUE_MIN {
        v[0..4].copy_from_slice(VALUE_MAGIC);
        v[4..8].copy_from_slice(&writer.to_le_bytes());
        v[8..16].copy_from_slice(&seq.to_le_bytes());
        v[16..24].copy_from_slice(&counter.to_le_bytes());
    }
    let sum = xxhash_rust::xxh3::xxh3_64_with_seed(&v[..body], key_seed(key));
    v[body..].copy_from_slice(&sum.to_le_bytes());
    v
}

/// Checks a value read under `key` (see [`make_value`]): `Err` describes the violation.
pub fn check_value(key: &[u8], v: &[u8]) -> Result<Option<Ident>, String> {
    let k = String::from_utf8_lossy(key);
    if v.len() < VALUE_MIN {
        return Err(format!("key {k}: value of {} bytes is shorter than any value written", v.len()));
    }
    let body = v.len() - 8;
    let sum = xxhash_rust::xxh3::xxh3_64_with_seed(&v[..body], key_seed(key));
    if sum.to_le_bytes() != v[body..] {
        let head = &v[..v.len().min(32)];
        return Err(format!(
            "key {k}: WRONG OR TORN VALUE: checksum mismatch ({} bytes, starts {head:02x?})",
            v.len()
        ));
    }
    if v.len() < FULL_VALUE_MIN {
        return Ok(None);
    }
    if &v[0..4] != VALUE_MAGIC {
        return Err(format!("key {k}: checksum ok but no magic: {:02x?}", &v[..8]));
    }
    let u32_at = |i: usize| u32::from_le_bytes(v[i..i + 4].try_into().unwrap());
    let u64_at = |i: usize| u64::from_le_bytes(v[i..i + 8].try_into().unwrap());
    Ok(Some(Ident { writer: u32_at(4), seq: u64_at(8), counter: u64_at(16) }))
}

/// A command that re-runs this test binary with only the test `child_test`, with `envs` set.
/// `child_test` is either a child role (a fn marked `#[ignore = "child role of <parent>"]`,
/// so a plain `cargo test` does not count it as a test, which does nothing unless its role
/// env var is set) or the calling test itself ([`isolate`]): `--include-ignored` runs either.
pub fn child_command(child_test: &str, envs: &[(&str, String)]) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--include-ignored", "--exact", child_test, "--nocapture", "--test-threads=1", "--quiet"]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Waits up to `limit` for `child`; on timeout kills it (SIGKILL), reaps it and returns `None`.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Err(e) => panic!("waiting for child {}: {e}", child.id()),
        }
    }
}

/// Sends SIGCONT to `pid` (a child stopped at a failpoint).
pub fn sigcont(pid: u32) {
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is a child we spawned and
    // have not reaped yet, so the pid cannot have been reused.
    let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
    assert_eq!(r, 0, "kill({pid}, SIGCONT): {}", std::io::Error::last_os_error());
}

/// The state letter of process `pid` (`R`, `S`, `T` = stopped, `Z`, ...), if it exists.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].split_ascii_whitespace().next()?.chars().next()
}

/// Sends SIGKILL to `pid`.
pub fn sigkill(pid: u32) {
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is a child we spawned and
    // have not reaped yet, so the pid cannot have been reused.
    let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    assert_eq!(r, 0, "kill({pid}, SIGKILL): {}", std::io::Error::last_os_error());
}

/// Runs `store.sweep(u64::MAX)` until it gets the sweeper lease (a killed sweeper holds it
/// for up to 2 s), returning the report of the sweep that ran.
pub fn sweep_fully(store: &Store) -> gardenstate::SweepReport {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = store.sweep(u64::MAX).expect("sweep");
        if r.ran {
            return r;
        }
        assert!(Instant::now() < deadline, "the sweeper lease was never free for 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills (SIGKILL) and reaps every child still held when dropped: a failing test leaves no
/// process behind.
#[derive(Default)]
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

// ---- helpers of the damage, security and fork tests (damage.rs, security.rs, fork.rs) -------

/// Where the regions of a segment made with some options are, in 8-byte words from the start
/// of the file: the same arithmetic as the engine's `layout::Geometry` (checked against
/// `Store::info` by [`geom_of`]), so tests can find the index and the heap in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geom {
    pub page_size: u64,
    pub n_pages: u64,
    pub n_buckets: u64,
    pub feed_off: u64,
    pub clients_off: u64,
    pub index_off: u64,
    pub pages_off: u64,
    pub bitmap_off: u64,
    pub heap_off: u64,
    pub segment_bytes: u64,
}

/// Words of the segment header (the layout contract of `layout.rs`).
pub const HEADER_WORDS: u64 = 512;
/// Header word indexes (layout.rs `H_*`).
pub const H_MAGIC: u64 = 0;
pub const H_VERSION: u64 = 1;
pub const H_FINGERPRINT: u64 = 2;
pub const H_STATE: u64 = 3;
pub const H_SEGMENT_BYTES: u64 = 4;
pub const H_MAX_ENTRIES: u64 = 5;
pub const H_MAX_KEY: u64 = 6;
pub const H_MAX_VALUE: u64 = 7;
pub const H_PAGE_SIZE: u64 = 8;
pub const H_N_PAGES: u64 = 9;
pub const H_N_BUCKETS: u64 = 10;
pub const H_MAX_CLIENTS: u64 = 11;
pub const H_FEED_LEN: u64 = 12;
pub const H_FLAGS: u64 = 13;
pub const H_HASH_SEED: u64 = 14;
pub const H_DATASET_ID: u64 = 15;
pub const H_CREATED_UNIX_MS: u64 = 16;
pub const H_CHECKSUM: u64 = 17;
pub const H_EPOCH: u64 = 24;
pub const H_WRITE_MODE: u64 = 25;
pub const H_FEED_HEAD: u64 = 32;
pub const H_SWEEP_LEASE: u64 = 40;
pub const H_SWEEP_CURSOR: u64 = 41;
pub const H_RETIRED_STATS: u64 = 48;
pub const H_CLASS_HINT: u64 = 128;
pub const MAGIC: u64 = u64::from_be_bytes(*b"GRDNSTAT");
pub const READY: u64 = u64::from_be_bytes(*b"READY!!!");
/// Record words (layout.rs `R_*`) and the record header size.
pub const R_STATE: u64 = 0;
pub const R_LENS: u64 = 3;
pub const R_META: u64 = 4;
pub const RECORD_HEADER_BYTES: u64 = 88;

/// The region offsets of a segment created with `o` (see [`Geom`]).
pub fn geom(o: &Options) -> Geom {
    let max_record = RECORD_HEADER_BYTES + (o.max_key as u64).div_ceil(8) * 8 + o.max_value.div_ceil(8) * 8;
    let page_size = max_record.next_power_of_two().max(64 * 1024);
    let n_pages = o.capacity_bytes.div_ceil(page_size).max(1);
    let n_buckets = (o.max_entries * 2).div_ceil(8);
    let bitmap_words = (page_size / 64).div_ceil(64);
    let feed_off = HEADER_WORDS;
    let clients_off = feed_off + o.feed_len * 4;
    let index_off = clients_off + o.max_clients as u64 * 32;
    let pages_off = index_off + n_buckets * 8;
    let bitmap_off = pages_off + n_pages;
    let heap_off = (bitmap_off + n_pages * bitmap_words).next_multiple_of(512);
    let segment_bytes = heap_off * 8 + n_pages * page_size;
    Geom {
        page_size,
        n_pages,
        n_buckets,
        feed_off,
        clients_off,
        index_off,
        pages_off,
        bitmap_off,
        heap_off,
        segment_bytes,
    }
}

/// [`geom`], checked against what the engine reports for the open store `st`.
pub fn geom_of(st: &Store, o: &Options) -> Geom {
    let g = geom(o);
    let info = st.info();
    assert_eq!(
        (g.segment_bytes, g.page_size, g.n_pages * g.page_size),
        (info.segment_bytes, info.page_size, info.heap_bytes),
        "the tests' copy of the layout arithmetic disagrees with the engine: update common::geom"
    );
    g
}

impl Geom {
    pub fn heap_words(&self) -> u64 {
        self.n_pages * self.page_size / 8
    }
    pub fn index_slots(&self) -> u64 {
        self.n_buckets * 8
    }
}

/// The file of segment `name`.
pub fn seg_path(name: &str) -> std::path::PathBuf {
    gardenstate::shm_dir().join(name)
}

/// Direct read/write access to a segment file, word by word (pread/pwrite: on tmpfs these hit
/// the same pages every process has mapped, so attached stores see the change at once).
pub struct RawFile {
    pub file: std::fs::File,
}

impl RawFile {
    pub fn open(name: &str) -> RawFile {
        let path = seg_path(name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        RawFile { file }
    }
    pub fn file_len(&self) -> u64 {
        self.file.metadata().unwrap().len()
    }
    pub fn word(&self, i: u64) -> u64 {
        let mut b = [0u8; 8];
        std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut b, i * 8).unwrap();
        u64::from_ne_bytes(b)
    }
    pub fn set_word(&self, i: u64, v: u64) {
        std::os::unix::fs::FileExt::write_all_at(&self.file, &v.to_ne_bytes(), i * 8).unwrap();
    }
    pub fn bytes(&self, at: u64, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut b, at).unwrap();
        b
    }
    pub fn set_bytes(&self, at: u64, b: &[u8]) {
        std::os::unix::fs::FileExt::write_all_at(&self.file, b, at).unwrap();
    }
}

/// What a child process did: exit status (`None` if it was killed for running past its time
/// limit) and everything it printed.
#[derive(Debug)]
pub struct ChildRun {
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
}

/// Exit code of a child whose [`watch`]dog fired: an operation never returned.
pub const HANG_EXIT: i32 = 86;

impl ChildRun {
    /// The signal that killed the child, if one did.
    pub fn signal(&self) -> Option<i32> {
        std::os::unix::process::ExitStatusExt::signal(self.status.as_ref()?)
    }
    pub fn describe(&self) -> String {
        let how = match (&self.status, self.signal()) {
            (None, _) => "was still running at its time limit and was killed".to_string(),
            (Some(_), Some(sig)) => format!("DIED OF SIGNAL {sig} ({})", signal_name(sig)),
            (Some(st), None) if st.code() == Some(HANG_EXIT) => {
                format!("HUNG: an operation never returned (watchdog exit {HANG_EXIT})")
            }
            (Some(st), None) if st.code() == Some(101) => "PANICKED or failed an assertion (exit 101)".into(),
            (Some(st), None) => format!("exited with {st}"),
        };
        let tail = |s: &str| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "child {how} after {:?}\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
            self.elapsed,
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTRAP => "SIGTRAP",
        _ => "other",
    }
}

/// Spawns `cmd` with its output piped, waits up to `limit` (killing it past that) and
/// collects its output.
pub fn run_child(mut cmd: Command, limit: Duration) -> ChildRun {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn().expect("spawn child");
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let status = wait_timeout(&mut child, limit);
    let elapsed = t0.elapsed();
    ChildRun { status, elapsed, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// Env var naming the test an [`isolate`]d child process runs.
pub const ISOLATE_ENV: &str = "GDS_ISOLATED";

/// Runs `body` in a child process (this test binary, re-run with only test `test`), so a
/// SIGSEGV/SIGBUS, a panic or a hang in the engine fails this test with a diagnosis instead
/// of taking the harness down. `test` must be the name of the calling test function.
/// Returns true in the child (after running `body`), false in the parent.
pub fn isolate(test: &str, limit: Duration, body: impl FnOnce()) -> bool {
    if std::env::var(ISOLATE_ENV).as_deref() == Ok(test) {
        body();
        return true;
    }
    let run = run_child(child_command(test, &[(ISOLATE_ENV, test.to_string())]), limit);
    assert!(run.success(), "{test}: {}", run.describe());
    assert!(
        run.stdout.contains("1 passed") || run.stdout.contains("test result: ok"),
        "{test}: the child did not run the test (wrong name?)\n{}",
        run.describe()
    );
    false
}

struct WatchState {
    label: String,
    deadline: Option<Instant>,
}

static WATCH: std::sync::Mutex<WatchState> =
    std::sync::Mutex::new(WatchState { label: String::new(), deadline: None });
static WATCHER: std::sync::Once = std::sync::Once::new();

/// Guards one operation in a child process: if it has not returned within `limit`, prints
/// `HANG: <label>` and exits the process with [`HANG_EXIT`]. Only for child processes.
pub fn watch(label: impl Into<String>, limit: Duration) -> WatchGuard {
    WATCHER.call_once(|| {
        std::thread::spawn(|| {
            loop {
                std::thread::sleep(Duration::from_millis(20));
                let w = WATCH.lock().unwrap_or_else(|e| e.into_inner());
                if w.deadline.is_some_and(|d| Instant::now() > d) {
                    eprintln!("HANG: `{}` did not return within its limit", w.label);
                    println!("HANG: `{}` did not return within its limit", w.label);
                    // exit() runs no destructors: remove the segments `Seg` guards would have.
                    for name in HANG_CLEANUP.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                        let _ = Store::destroy(name);
                    }
                    std::process::exit(HANG_EXIT);
                }
            }
        });
    });
    let mut w = WATCH.lock().unwrap_or_else(|e| e.into_inner());
    w.label = label.into();
    w.deadline = Some(Instant::now() + limit);
    WatchGuard(())
}

static HANG_CLEANUP: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Segment `name` is destroyed if the [`watch`]dog ends the process.
pub fn destroy_on_hang(name: &str) {
    HANG_CLEANUP.lock().unwrap_or_else(|e| e.into_inner()).push(name.to_string());
}

pub struct WatchGuard(());

impl Drop for WatchGuard {
    fn drop(&mut self) {
        WATCH.lock().unwrap_or_else(|e| e.into_inner()).deadline = None;
    }
}

/// Is this process running as root (some permission tests need to chown)?
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Joins `h`, failing the test if the thread has not finished within `limit` (a hung engine
/// call: the thread is left behind, and ends with the test process).
pub fn join_within<T>(h: std::thread::JoinHandle<T>, limit: Duration, what: &str) -> T {
    let deadline = Instant::now() + limit;
    while !h.is_finished() {
        assert!(Instant::now() < deadline, "{what} did not finish within {limit:?} (hung)");
        std::thread::sleep(Duration::from_millis(5));
    }
    h.join().unwrap_or_else(|_| panic!("{what} panicked"))
}
