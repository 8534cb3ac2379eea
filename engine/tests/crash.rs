//! Writers killed with SIGKILL at random moments, over and over, while others keep working.
//!
//! Writer children (the test binary re-run with a role) do fast set / delete / lock /
//! set_and_unlock / unlock on a shared key space and on keys each writer slot owns alone. Every
//! value is self-verifying. Before each write to an owned key a writer records its intent in
//! its slot's journal, and once the write returned Ok it records the acknowledgement. The
//! journal is a file in the shared-memory directory, mapped shared: plain memory stores, which
//! outlive a killed process like its stores to the segment do, so logging costs no system call
//! and kills land inside engine code rather than in logging. The parent kills a random writer every 0-30 ms and starts a new
//! incarnation of its slot, while a reader thread of the parent reads every key and scans the
//! table the whole time.
//!
//! Checked: no wrong or torn value is ever read (by anyone); reads of an owned key never go
//! back to an older write; every acknowledged write of an owned key is still there unless a
//! later write (acknowledged or in flight at a kill) replaced it; survivors never hang (each
//! child is bounded by a timeout) and finish cleanly when told to stop; afterwards the dead
//! clients are reclaimed (client count back to where it was), a scan meets no damaged record,
//! deleting everything leaves no byte in use, and filling the heap again fits exactly as many
//! blocks as it holds (no block was lost, whatever the bitmaps say).
//!
//! Knobs: `GDS_SEED` (replay the parent's choices), `GDS_CRASH_ROUNDS` (kills, default 500, the reliability bar for CI).

mod common;
use common::{
    Ident, Rng, Seg, check_value, child_command, join_within, make_value, seed_from_env, sigkill,
    sweep_fully, wait_timeout,
};
use gardenstate::{Error, Expiry, FullKind, Options, Store};
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const ROLE_VAR: &str = "GDS_CRASH_ROLE";
/// Writers alive at any time (each a "slot" whose keys it owns; a killed one is replaced by a
/// new incarnation of the same slot).
const SLOTS: u32 = 3;
const OWNED: u32 = 8;
const SHARED: u32 = 32;
const STOP_KEY: &[u8] = b"ctl-stop";
/// Any child that takes longer than this to exit is hung.
const HANG: Duration = Duration::from_secs(60);
/// A writer gives up (and fails) after this long, in case the parent is gone.
const WRITER_LIFETIME: Duration = Duration::from_secs(120);

/// Every record of this test fills a power-of-two block exactly (1024 or 4096 bytes), so a
/// page holds whole blocks with no tail and "free bytes" must come back to exactly the heap
/// size. Which value lengths do that depends on the record header, so the parent measures
/// them (`Sizes::measure`) and hands them to the writers. Keys are at most 8 bytes.
const BLOCKS: [u64; 2] = [1024, 4096];

/// Value lengths (inclusive ranges) whose records take a 1024-byte and a 4096-byte block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sizes {
    small: (u64, u64),
    large: (u64, u64),
}

static SIZES: std::sync::OnceLock<Sizes> = std::sync::OnceLock::new();

fn sizes() -> Sizes {
    *SIZES.get().expect("sizes not set")
}

impl Sizes {
    /// Measures, on a scratch segment, which value lengths give records of exactly the
    /// `BLOCKS` sizes (block sizes are what `bytes_used` counts).
    fn measure(name: &str) -> Sizes {
        let probe =
            Store::create(name, &Options { capacity_bytes: 2 << 20, max_entries: 16, ..opts() }).unwrap();
        let block_of = |len: u64| {
            probe.set(b"probe-k8", &vec![7; len as usize], Expiry::Never).unwrap();
            let b = probe.stats().bytes_used;
            assert!(probe.delete(b"probe-k8").unwrap());
            b
        };
        let range = |block: u64| {
            let mut hi = block;
            while block_of(hi) > block {
                hi -= 1;
            }
            assert_eq!(block_of(hi), block, "no value length gives a {block}-byte record");
            let mut lo = hi;
            while block_of(lo - 1) == block {
                lo -= 1;
            }
            (lo, hi)
        };
        Sizes { small: range(BLOCKS[0]), large: range(BLOCKS[1]) }
    }

    fn to_env(self) -> String {
        format!("{},{},{},{}", self.small.0, self.small.1, self.large.0, self.large.1)
    }

    fn from_env(s: &str) -> Sizes {
        let v: Vec<u64> = s.split(',').map(|x| x.parse().unwrap()).collect();
        Sizes { small: (v[0], v[1]), large: (v[2], v[3]) }
    }
}

fn opts() -> Options {
    Options {
        capacity_bytes: 16 << 20,
        max_entries: 32_768,
        max_key: 16,
        max_value: 4096,
        max_clients: 64,
        feed_len: 4096,
        ..Options::default()
    }
}

fn owned_key(slot: u32, i: u32) -> Vec<u8> {
    format!("o{slot}-{i}").into_bytes()
}

fn shared_key(i: u32) -> Vec<u8> {
    format!("s{i:02}").into_bytes()
}

/// The owner slot of an owned key.
fn owner_of(key: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(key).ok()?.strip_prefix('o')?;
    s.split('-').next()?.parse().ok()
}

fn all_keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..SLOTS).flat_map(|s| (0..OWNED).map(move |i| owned_key(s, i))).collect();
    keys.extend((0..SHARED).map(shared_key));
    keys
}

fn value(rng: &mut Rng, key: &[u8], writer: u32, seq: u64) -> Vec<u8> {
    let (lo, hi) = if rng.below(4) == 0 { sizes().large } else { sizes().small };
    make_value(key, writer, seq, 0, rng.range(lo, hi) as usize)
}

/// Checks a value read under `key` by anyone: intact, and for an owned key written by its
/// owner slot.
fn verify(key: &[u8], v: &[u8]) -> Result<Ident, String> {
    let k = String::from_utf8_lossy(key);
    let Some(id) = check_value(key, v)? else { return Err(format!("key {k}: value without header")) };
    if let Some(owner) = owner_of(key) {
        if id.writer != owner {
            return Err(format!("key {k} (owned by slot {owner}) holds a value of writer {}", id.writer));
        }
    }
    Ok(id)
}

// ---- the journal of a writer slot -----------------------------------------------------------

/// Words 0..OWNED: per owned key, the highest acknowledged seq. Then from `J_ENTRIES`, two words
/// an entry, one entry per write begun on an owned key: `[seq, key | delete << 8 | ACK]`. A
/// writer stores the second word, then the seq (the entry exists once its seq is non-zero),
/// then does the write, then sets `ACK` and raises the key's header word. Incarnations of a slot
/// append to the same journal (one at a time: a killed writer is reaped before its successor
/// starts).
const J_ENTRIES: usize = 16;
const J_ACK: u64 = 1 << 9;
const J_CAPACITY: usize = 8 << 20; // entries; a writer that fills its journal stops owned writes

struct Journal {
    map: memmap2::MmapRaw,
    words: usize,
}

impl Journal {
    fn create(path: &Path) -> Journal {
        let f = std::fs::File::create_new(path).expect("create journal");
        f.set_len(((J_ENTRIES + 2 * J_CAPACITY) * 8) as u64).expect("size journal");
        Journal::open(path)
    }

    fn open(path: &Path) -> Journal {
        let f = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open journal");
        let map = memmap2::MmapRaw::map_raw(&f).expect("map journal");
        let words = map.len() / 8;
        Journal { map, words }
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.words, "journal word {i} out of bounds");
        // SAFETY: the mapping is page aligned and `words * 8` bytes long, lives as long as
        // `self`, and every process accesses it only through atomics.
        unsafe { &*(self.map.as_mut_ptr() as *const AtomicU64).add(i) }
    }

    fn seq_at(&self, e: usize) -> u64 {
        self.word(J_ENTRIES + 2 * e).load(Ordering::SeqCst)
    }

    /// The first free entry at or after `from`.
    fn end(&self, from: usize) -> usize {
        (from..J_CAPACITY).find(|&e| self.seq_at(e) == 0).unwrap_or(J_CAPACITY)
    }

    /// The highest acknowledged seq of owned key `key` (0 if none yet).
    fn acked(&self, key: u32) -> u64 {
        self.word(key as usize).load(Ordering::SeqCst)
    }

    /// Entries `from..to` as (seq, key, delete, acked).
    fn entries(&self, from: usize, to: usize) -> impl Iterator<Item = (u64, u32, bool, bool)> + '_ {
        (from..to).map(|e| {
            let w = self.word(J_ENTRIES + 2 * e + 1).load(Ordering::SeqCst);
            (self.seq_at(e), (w & 0xff) as u32, w & (1 << 8) != 0, w & J_ACK != 0)
        })
    }
}

fn journal_path(dir: &Path, slot: u32) -> PathBuf {
    dir.join(format!("slot-{slot}.journal"))
}

/// Where the journals go: the shared-memory directory (memory, no disk writeback), in a
/// folder of this test process.
fn journal_dir() -> PathBuf {
    gardenstate::shm_dir().join(format!("gds-test-crash-journals-{}", std::process::id()))
}

// ---- the writer child ------------------------------------------------------------------------

/// What this incarnation knows an owned key holds (after its own writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Unknown,
    Absent,
    Seq(u64),
}

struct Writer {
    st: Store,
    slot: u32,
    inc: u64,
    n: u64,
    rng: Rng,
    known: Vec<Known>,
    journal: Journal,
    next_entry: usize,
    /// `all_keys()`, made once (the loop should spend its time in the engine).
    keys: Vec<Vec<u8>>,
}

impl Writer {
    fn owned(&self, i: u32) -> Vec<u8> {
        self.keys[(self.slot * OWNED + i) as usize].clone()
    }

    fn next_seq(&mut self) -> u64 {
        self.n += 1;
        (self.inc << 32) | self.n
    }

    fn fail(&self, msg: String) -> ! {
        panic!("VIOLATION in writer slot {} incarnation {}: {msg}", self.slot, self.inc);
    }

    /// Records the intent to write (or delete) owned key `key` as `seq`; `None` if the
    /// journal is full.
    fn begin(&mut self, key: u32, seq: u64, delete: bool) -> Option<usize> {
        let e = self.next_entry;
        if e >= J_CAPACITY {
            return None;
        }
        self.next_entry += 1;
        let j = &self.journal;
        j.word(J_ENTRIES + 2 * e + 1).store(key as u64 | (delete as u64) << 8, Ordering::SeqCst);
        j.word(J_ENTRIES + 2 * e).store(seq, Ordering::SeqCst);
        Some(e)
    }

    /// Records that the write of entry `e` returned Ok.
    fn ack(&mut self, e: usize, key: u32, seq: u64, delete: bool) {
        let j = &self.journal;
        j.word(J_ENTRIES + 2 * e + 1).store(key as u64 | (delete as u64) << 8 | J_ACK, Ordering::SeqCst);
        j.word(key as usize).store(seq, Ordering::SeqCst);
        self.known[key as usize] = if delete { Known::Absent } else { Known::Seq(seq) };
    }

    /// Checks what a read of owned key `i` returned against this incarnation's own writes.
    fn check_owned(&self, i: u32, got: Option<&[u8]>) {
        let key = self.owned(i);
        let got = got.map(|v| verify(&key, v).unwrap_or_else(|e| self.fail(e)).seq);
        let ok = match (self.known[i as usize], got) {
            (Known::Unknown, None) => true,
            // Written by an earlier incarnation of this slot.
            (Known::Unknown, Some(seq)) => seq < self.inc << 32,
            (Known::Absent, None) => true,
            (Known::Seq(s), Some(seq)) => s == seq,
            _ => false,
        };
        if !ok {
            self.fail(format!(
                "owned key {} read {got:?} after this writer's own last write {:?} (nobody else writes it)",
                String::from_utf8_lossy(&key),
                self.known[i as usize]
            ));
        }
    }

    fn owned_op(&mut self) {
        let i = self.rng.below(OWNED as u64) as u32;
        let key = self.owned(i);
        match self.rng.below(100) {
            0..45 => {
                let seq = self.next_seq();
                let v = value(&mut self.rng, &key, self.slot, seq);
                let Some(e) = self.begin(i, seq, false) else { return };
                if let Err(err) = self.st.set(&key, &v, Expiry::Never) {
                    self.fail(format!("set: {err:?}"));
                }
                self.ack(e, i, seq, false);
            }
            45..60 => {
                let seq = self.next_seq();
                let Some(e) = self.begin(i, seq, true) else { return };
                if let Err(err) = self.st.delete(&key) {
                    self.fail(format!("delete: {err:?}"));
                }
                self.ack(e, i, seq, true);
            }
            60..75 => {
                let got = self.st.get(&key).unwrap_or_else(|e| self.fail(format!("get: {e:?}")));
                self.check_owned(i, got.as_ref().map(|e| e.value.as_slice()));
            }
            r => {
                // Only this slot locks its keys; a lock left by a killed earlier incarnation
                // is taken over at once (its process is dead).
                let l = match self.st.lock(&key, Duration::from_secs(600)) {
                    Ok(l) => l,
                    Err(e) => self.fail(format!("lock of an owned key: {e:?}")),
                };
                self.check_owned(i, l.as_ref().map(|l| l.value.as_slice()));
                let Some(l) = l else { return };
                let seq = self.next_seq();
                let v = (r < 90).then(|| value(&mut self.rng, &key, self.slot, seq));
                if let Some((e, v)) = v.and_then(|v| Some((self.begin(i, seq, false)?, v))) {
                    if let Err(err) = self.st.set_and_unlock(&key, l.lock_id, &v, Expiry::Never) {
                        self.fail(format!("set_and_unlock of an owned key: {err:?}"));
                    }
                    self.ack(e, i, seq, false);
                } else if let Err(e) = self.st.unlock(&key, l.lock_id) {
                    self.fail(format!("unlock of an owned key: {e:?}"));
                }
            }
        }
    }

    fn shared_op(&mut self) {
        let key = self.keys[(SLOTS * OWNED) as usize + self.rng.below(SHARED as u64) as usize].clone();
        let writer = 100 + self.slot;
        let tolerated =
            |e: &Error| matches!(e, Error::Locked { .. } | Error::LockMismatch { .. } | Error::NotFound);
        match self.rng.below(100) {
            0..40 => {
                let seq = self.next_seq();
                let v = value(&mut self.rng, &key, writer, seq);
                // Some shared entries expire soon, so sweeps (a slice every 100 ms) and
                // deletes unpublish expired records while writers are being killed.
                let exp = match self.rng.below(10) {
                    0..3 => Expiry::After(Duration::from_millis(self.rng.range(1, 40))),
                    _ => Expiry::Never,
                };
                if let Err(e) = self.st.set(&key, &v, exp) {
                    self.fail(format!("set: {e:?}"));
                }
            }
            40..55 => {
                if let Err(e) = self.st.delete(&key) {
                    self.fail(format!("delete: {e:?}"));
                }
            }
            55..65 => {
                // Never, like the entries' own (none sliding): the in-place path of touch.
                if let Err(e) = self.st.touch(&key, Expiry::Never) {
                    self.fail(format!("touch: {e:?}"));
                }
            }
            _ => {
                // Short patience: locks of killed writers and of slow live ones are taken over.
                let l = match self.st.lock(&key, Duration::from_millis(20)) {
                    Ok(Some(l)) => l,
                    Ok(None) => return,
                    Err(e) if tolerated(&e) => return,
                    Err(e) => self.fail(format!("lock: {e:?}")),
                };
                verify(&key, &l.value).unwrap_or_else(|e| self.fail(format!("lock: {e}")));
                let r = if self.rng.below(2) == 0 {
                    let seq = self.next_seq();
                    let v = value(&mut self.rng, &key, writer, seq);
                    self.st.set_and_unlock(&key, l.lock_id, &v, Expiry::Never).map(drop)
                } else {
                    self.st.unlock(&key, l.lock_id)
                };
                match r {
                    Ok(()) => {}
                    Err(e) if tolerated(&e) => {}
                    Err(e) => self.fail(format!("set_and_unlock/unlock: {e:?}")),
                }
            }
        }
    }

    fn read_any(&mut self) {
        let key = &self.keys[self.rng.below(self.keys.len() as u64) as usize];
        match self.st.get(key) {
            Ok(Some(e)) => {
                verify(key, &e.value).unwrap_or_else(|e| self.fail(format!("get: {e}")));
            }
            Ok(None) => {}
            Err(e) => self.fail(format!("get: {e:?}")),
        }
    }
}

#[test]
#[ignore = "child role of killed_writers_lose_nothing"]
fn child_writer() {
    let Ok(role) = std::env::var(ROLE_VAR) else { return };
    assert_eq!(role, "writer");
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let slot: u32 = env("GDS_SLOT").parse().unwrap();
    let inc: u64 = env("GDS_INC").parse().unwrap();
    let seed: u64 = env("GDS_SEED").parse().unwrap();
    SIZES.set(Sizes::from_env(&env("GDS_SIZES"))).unwrap();
    let journal = Journal::open(Path::new(&env("GDS_JOURNAL")));
    let next_entry = journal.end(0);
    let st = Store::attach(&env("GDS_SEG")).expect("attach");
    let known = vec![Known::Unknown; OWNED as usize];
    let keys = all_keys();
    let mut w = Writer { st, slot, inc, n: 0, rng: Rng::new(seed), known, journal, next_entry, keys };
    let t0 = Instant::now();
    let mut ops = 0u64;
    loop {
        ops += 1;
        if ops % 32 == 0 {
            match w.st.get(STOP_KEY) {
                Ok(Some(_)) => break,
                Ok(None) => {}
                Err(e) => w.fail(format!("get stop key: {e:?}")),
            }
            assert!(t0.elapsed() < WRITER_LIFETIME, "writer ran {WRITER_LIFETIME:?} without a stop");
        }
        match w.rng.below(100) {
            0..50 => w.owned_op(),
            50..85 => w.shared_op(),
            _ => w.read_any(),
        }
    }
}

// ---- the parent ------------------------------------------------------------------------------

struct Running {
    child: Child,
    inc: u64,
}

impl Drop for Running {
    /// A failing test leaves no writer behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn_writer(seg: &str, dir: &Path, slot: u32, inc: u64, seed: u64) -> Running {
    let child = child_command(
        "child_writer",
        &[
            (ROLE_VAR, "writer".to_string()),
            ("GDS_SEG", seg.to_string()),
            ("GDS_SLOT", slot.to_string()),
            ("GDS_INC", inc.to_string()),
            ("GDS_SEED", seed.to_string()),
            ("GDS_JOURNAL", journal_path(dir, slot).display().to_string()),
            ("GDS_SIZES", sizes().to_env()),
        ],
    )
    .stdout(Stdio::null()) // the harness's chatter; failures are reported on stderr
    .spawn()
    .expect("spawn writer");
    Running { child, inc }
}

/// What the parent's reader thread saw.
#[derive(Debug, Default)]
struct ReaderReport {
    reads: u64,
    scans: u64,
    worst_gap: Duration,
    /// What the reader was doing when it went longest without completing an operation, and
    /// when (seconds since the start).
    worst_gap_at: (&'static str, f64),
    /// Gaps over 100 ms (a loaded machine deschedules the reader now and then).
    long_gaps: u64,
    violations: Vec<String>,
    /// Reads of owned keys: (slot, key index, highest seq acknowledged before the read
    /// began, the seq read or None if absent). Checked against the journals at the end.
    owned_reads: Vec<(u32, u32, u64, Option<u64>)>,
}

/// Reads random keys and scans the table until `stop`, checking every value; owned keys must
/// never go back to an older write. `progress` is the ms (since `t0`) of the last completed op.
fn reader_loop(
    st: &Store,
    seed: u64,
    journals: &[Journal],
    stop: &AtomicBool,
    progress: &AtomicU64,
    t0: Instant,
) -> ReaderReport {
    let mut rep = ReaderReport::default();
    let mut rng = Rng::new(seed ^ 0x5eed);
    let keys = all_keys();
    let mut newest: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut last = Instant::now();
    let mut ops = 0u64;
    while !stop.load(Ordering::Relaxed) && rep.violations.len() < 10 {
        ops += 1;
        let what = if ops % 500 == 0 { "scan" } else { "get" };
        if ops % 500 == 0 {
            let mut bad = Vec::new();
            match st.scan(|e| {
                if let Err(m) = verify(&e.key, &e.value) {
                    bad.push(format!("scan: {m}"));
                }
            }) {
                Ok(()) => rep.scans += 1,
                Err(e) => rep.violations.push(format!("scan failed: {e:?}")),
            }
            rep.violations.extend(bad);
        } else {
            let key = &keys[rng.below(keys.len() as u64) as usize];
            let owned = owner_of(key).map(|slot| {
                let i: u32 = String::from_utf8_lossy(key).split('-').nth(1).unwrap().parse().unwrap();
                (slot, i, journals[slot as usize].acked(i))
            });
            let r = st.get(key);
            if let (Some((slot, i, acked)), Ok(got)) = (owned, &r) {
                let seq = got.as_ref().and_then(|e| verify(key, &e.value).ok()).map(|id| id.seq);
                rep.owned_reads.push((slot, i, acked, seq));
            }
            match r {
                Ok(None) => {}
                Ok(Some(e)) => match verify(key, &e.value) {
                    Err(m) => rep.violations.push(format!("reader: {m}")),
                    Ok(id) if owner_of(key).is_some() => {
                        let n = newest.entry(key.clone()).or_insert(0);
                        if id.seq < *n {
                            rep.violations.push(format!(
                                "reader: owned key {} went back from seq {:#x} to {:#x}",
                                String::from_utf8_lossy(key),
                                *n,
                                id.seq
                            ));
                        }
                        *n = (*n).max(id.seq);
                    }
                    Ok(_) => {}
                },
                Err(e) => rep.violations.push(format!("reader: get {}: {e:?}", String::from_utf8_lossy(key))),
            }
            rep.reads += 1;
        }
        let now = Instant::now();
        if now - last > rep.worst_gap {
            rep.worst_gap = now - last;
            rep.worst_gap_at = (what, (now - t0).as_secs_f64());
        }
        rep.long_gaps += u64::from(now - last > Duration::from_millis(100));
        last = now;
        progress.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    rep
}

/// Every write begun on an owned key: per (slot, key), seq -> (delete, acknowledged).
type Ops = HashMap<(u32, u32), HashMap<u64, (bool, bool)>>;

fn journal_ops(journals: &[Journal]) -> Ops {
    let mut ops = Ops::new();
    for (slot, j) in journals.iter().enumerate() {
        for (seq, key, delete, acked) in j.entries(0, j.end(0)) {
            assert!(key < OWNED, "journal of slot {slot}: entry for key {key}");
            ops.entry((slot as u32, key)).or_default().insert(seq, (delete, acked));
        }
    }
    ops
}

/// Each read of an owned key must show the acknowledged op known before the read began, or a
/// later one: a value of seq >= it, or absence made by a delete of seq >= it.
fn check_owned_reads(reads: &[(u32, u32, u64, Option<u64>)], ops: &Ops) {
    let mut problems = Vec::new();
    for &(slot, i, acked, got) in reads {
        let o = ops.get(&(slot, i));
        let ok = match got {
            Some(seq) => seq >= acked && o.is_some_and(|o| o.get(&seq).is_some_and(|&(d, _)| !d)),
            None => acked == 0 || o.is_some_and(|o| o.iter().any(|(&s, &(d, _))| d && s >= acked)),
        };
        if !ok && problems.len() < 20 {
            problems.push(format!(
                "read of owned key o{slot}-{i} gave {} after seq {acked:#x} was acknowledged (a {})",
                got.map_or("nothing".to_string(), |s| format!("seq {s:#x}")),
                match o.and_then(|o| o.get(&acked)) {
                    Some((true, _)) => "delete",
                    Some((false, _)) => "write",
                    None => "?",
                }
            ));
        }
    }
    assert!(problems.is_empty(), "STALE OR LOST READS of acknowledged writes:\n{}", problems.join("\n"));
}

/// The durability check: for each owned key, the value present at the end must be what the
/// last acknowledged operation left, or what an unacknowledged later one (in flight when its
/// writer was killed) left.
fn check_acknowledged(st: &Store, ops: &Ops) -> u64 {
    let mut in_flight_total = 0;
    let mut problems = Vec::new();
    let empty = HashMap::new();
    for slot in 0..SLOTS {
        for i in 0..OWNED {
            let key = owned_key(slot, i);
            let got =
                st.get(&key).expect("final get").map(|e| verify(&key, &e.value).expect("final value").seq);
            let o = ops.get(&(slot, i)).unwrap_or(&empty);
            let last_ack = o.iter().filter(|&(_, &(_, a))| a).map(|(&s, _)| s).max();
            // (seq, delete) of each state the key may legitimately be in.
            let mut allowed: Vec<(u64, bool)> = match last_ack {
                Some(s) => vec![(s, o[&s].0)],
                None => vec![(0, true)], // never acknowledged: absent, unless an in-flight write landed
            };
            let in_flight: Vec<(u64, bool)> = o
                .iter()
                .filter(|&(&s, &(_, a))| !a && last_ack.is_none_or(|l| s > l))
                .map(|(&s, &(d, _))| (s, d))
                .collect();
            in_flight_total += in_flight.len() as u64;
            allowed.extend(&in_flight);
            let ok = match got {
                None => allowed.iter().any(|&(_, d)| d),
                Some(seq) => allowed.iter().any(|&(s, d)| !d && s == seq),
            };
            if !ok {
                problems.push(format!(
                    "owned key {}: holds {} but the last acknowledged op is {:?} (seq {:?}) and the \
                     unacknowledged later ones are {in_flight:x?} (seq, is_delete)",
                    String::from_utf8_lossy(&key),
                    got.map_or("nothing".to_string(), |s| format!("seq {s:#x}")),
                    last_ack.map(|s| if o[&s].0 { "delete" } else { "write" }),
                    last_ack.map(|s| format!("{s:#x}")),
                ));
            }
        }
    }
    assert!(problems.is_empty(), "ACKNOWLEDGED WRITES LOST:\n{}", problems.join("\n"));
    in_flight_total
}

/// Fills the heap with records of the test's two block sizes until it is full; returns the
/// number of records and the bytes of their blocks. Deletes them again.
fn fill_heap(st: &Store) -> (u64, u64) {
    let mut rng = Rng::new(7);
    let mut n = 0u32;
    let mut bytes = 0;
    for ((lo, hi), block) in [sizes().small, sizes().large].into_iter().zip(BLOCKS) {
        loop {
            let key = format!("f{n}").into_bytes();
            match st.set(&key, &make_value(&key, 9, n as u64, 0, rng.range(lo, hi) as usize), Expiry::Never) {
                Ok(_) => {
                    n += 1;
                    bytes += block;
                }
                Err(Error::Full(FullKind::Heap)) => break,
                Err(e) => panic!("filling the heap: {e:?}"),
            }
        }
    }
    for i in 0..n {
        assert!(st.delete(format!("f{i}").as_bytes()).unwrap());
    }
    (n as u64, bytes)
}

#[test]
fn killed_writers_lose_nothing() {
    let probe = Seg::new("crash-probe");
    SIZES.set(Sizes::measure(&probe.name)).unwrap();
    drop(probe);
    println!("value lengths for 1024/4096-byte records: {:?}", sizes());
    let seg = Seg::new("crash");
    let st = Arc::new(Store::create(&seg.name, &opts()).unwrap());
    let seed = seed_from_env("GDS_SEED");
    let rounds: u64 = std::env::var("GDS_CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(500);
    println!("crash: seed {seed} (replay with GDS_SEED={seed}), {rounds} kills (GDS_CRASH_ROUNDS)");
    let mut rng = Rng::new(seed);
    let heap_bytes = st.info().heap_bytes;
    let fresh = st.stats();
    assert_eq!((fresh.bytes_used, fresh.bytes_free), (0, heap_bytes), "{fresh:?}");
    assert_eq!(st.get(b"warm-up").unwrap(), None); // this thread's client slot
    let clients0 = st.stats().clients;
    let dir = journal_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    struct RmDir(PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = RmDir(dir.clone());
    let journals: Arc<Vec<Journal>> =
        Arc::new((0..SLOTS).map(|s| Journal::create(&journal_path(&dir, s))).collect());
    let t0 = Instant::now();

    // The reader thread.
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let reader = {
        let (st, journals) = (Arc::clone(&st), Arc::clone(&journals));
        let (stop, progress) = (Arc::clone(&stop), Arc::clone(&progress));
        std::thread::spawn(move || reader_loop(&st, seed, &journals, &stop, &progress, t0))
    };

    let mut inc = 0u64;
    let mut spawn = |slot: u32, rng: &mut Rng| {
        inc += 1;
        spawn_writer(&seg.name, &dir, slot, inc, rng.next_u64())
    };
    let mut running: Vec<Running> = (0..SLOTS).map(|s| spawn(s, &mut rng)).collect();
    let mut ends = vec![0usize; SLOTS as usize];
    let (mut kills_writing, mut kills_cut_owned) = (0u64, 0u64);
    for round in 0..rounds {
        std::thread::sleep(Duration::from_millis(rng.below(31)));
        for (slot, r) in running.iter_mut().enumerate() {
            if let Some(status) = r.child.try_wait().unwrap() {
                panic!(
                    "writer slot {slot} incarnation {} exited on its own ({status}): see its message above",
                    r.inc
                );
            }
        }
        let stale = (t0.elapsed().as_millis() as u64).saturating_sub(progress.load(Ordering::Relaxed));
        assert!(stale < HANG.as_millis() as u64, "the reader made no progress for {stale} ms (hung)");
        let victim = rng.below(SLOTS as u64) as usize;
        let mut r = running.remove(victim);
        sigkill(r.child.id());
        let status = wait_timeout(&mut r.child, HANG).expect("a killed writer did not die");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "writer ended otherwise than by our kill: {status}");
        // What the killed incarnation journaled: did it get to work, was a write cut?
        let j = &journals[victim];
        let end = j.end(ends[victim]);
        if end > ends[victim] {
            kills_writing += 1;
            if j.entries(end - 1, end).any(|(.., acked)| !acked) {
                kills_cut_owned += 1;
            }
        }
        ends[victim] = end;
        drop(r);
        running.insert(victim, spawn(victim as u32, &mut rng));
        if round % 25 == 24 {
            println!("  {} kills, {:.1} s", round + 1, t0.elapsed().as_secs_f64());
        }
    }
    let loop_time = t0.elapsed();

    // Tell the survivors to stop; they must finish cleanly and promptly.
    st.set(STOP_KEY, &make_value(STOP_KEY, 0, 0, 0, sizes().small.0 as usize), Expiry::Never).unwrap();
    for (slot, mut r) in running.drain(..).enumerate() {
        let status = wait_timeout(&mut r.child, HANG)
            .unwrap_or_else(|| panic!("writer slot {slot} did not stop within {HANG:?} (hung)"));
        assert!(status.success(), "writer slot {slot} failed ({status}): see its message above");
    }
    stop.store(true, Ordering::Relaxed);
    let rep = join_within(reader, HANG, "the reader thread");
    println!(
        "kills: {rounds} in {:.1} s: {kills_writing} after the writer began owned writes, {kills_cut_owned} of \
         them cutting one (begun, not acknowledged)",
        loop_time.as_secs_f64()
    );
    println!(
        "reader: {} reads, {} scans; worst time between two completed operations {:?} (a {} ending at \
         {:.1} s); {} gaps over 100 ms",
        rep.reads, rep.scans, rep.worst_gap, rep.worst_gap_at.0, rep.worst_gap_at.1, rep.long_gaps
    );
    assert!(rep.violations.is_empty(), "READ VIOLATIONS (seed {seed}):\n{}", rep.violations.join("\n"));

    // Every acknowledged write is there (or superseded), and was seen by every later read.
    let ops = journal_ops(&journals);
    check_owned_reads(&rep.owned_reads, &ops);
    let in_flight = check_acknowledged(&st, &ops);
    let begun: usize = ops.values().map(HashMap::len).sum();
    let acked: usize = ops.values().flat_map(|o| o.values()).filter(|&&(_, a)| a).count();
    println!(
        "owned keys: {begun} writes begun, {acked} acknowledged, {} cut by a kill ({in_flight} of them after \
         their key's last acknowledged op); {} reads checked against the acknowledgements",
        begun - acked,
        rep.owned_reads.len()
    );

    // Dead clients reclaimed, nothing damaged, nothing leaked. (First let every short-lived
    // shared entry expire, so the sweep reclaims them all and none expires afterwards.)
    std::thread::sleep(Duration::from_millis(60));
    let sweep = sweep_fully(&st);
    let stats = st.stats();
    println!("after the kills: {sweep:?}\n  {stats:?}");
    assert_eq!(stats.clients, clients0, "client slots of killed writers not reclaimed: {stats:?}");
    let health = common::assert_healthy(&st);
    println!("  {health:?}");
    let mut keys = Vec::new();
    st.scan(|e| {
        verify(&e.key, &e.value).unwrap_or_else(|m| panic!("final scan: {m}"));
        keys.push(e.key);
    })
    .expect("final scan met a damaged record");
    assert_eq!(stats.live_entries, keys.len() as u64, "index members vs scan: {stats:?}");
    for k in &keys {
        assert!(st.delete(k).unwrap());
    }
    sweep_fully(&st);
    let stats = st.stats();
    assert_eq!(stats.live_entries, 0, "{stats:?}");
    assert_eq!(stats.bytes_used, 0, "blocks leaked by killed writers: {stats:?}");
    assert_eq!(stats.bytes_free, heap_bytes, "free bytes not back to the fresh heap's: {stats:?}");
    common::assert_healthy(&st);
    // The bitmaps could hide a lost block (one OWNED with its bit clear): allocate for real.
    let (n, bytes) = fill_heap(&st);
    println!("refill: {n} records filled {bytes} of {heap_bytes} heap bytes");
    assert_eq!(bytes, heap_bytes, "the heap no longer holds as many blocks as it has: blocks were lost");
    let stats = st.stats();
    assert_eq!((stats.bytes_used, stats.live_entries), (0, 0), "{stats:?}");
    common::assert_healthy(&st);
    println!("crash total: {:.1} s", t0.elapsed().as_secs_f64());
}
