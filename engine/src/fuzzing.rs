//! Fuzz target bodies for the engine (not part of the API: hidden, and may change at will).
//!
//! The cargo-fuzz targets in `fuzz/` and the replay tests in `tests/fuzz_regressions.rs` call
//! the same function here, so an input saved by the fuzzer is replayed by `cargo test` on
//! stable. Safe code only: the module forbids `unsafe`, it works through files, the segment
//! attach protocol and the public operations.
//!
//! [`attach`]: write a segment file, attach to it, and run every operation on it. The input's
//! first byte picks how the file is made, the rest describes it:
//!
//! | `data[0] % 4` | file |
//! | --- | --- |
//! | 0 | the rest of the input, as it is (any bytes, any length) |
//! | 1 | a valid segment holding a few entries, then 12-byte edits `(word u32, value u64)` |
//! | 2 | the same, then the header checksum recomputed (so forged geometry gets past it) |
//! | 3 | as 2, then the file resized to the length in the first 4 bytes of the rest |
//!
//! Whatever the file, attach and every operation must return (an error is fine): no panic,
//! no crash, no hang. Attach does not wait for a creator here (a file that is not stamped
//! ready is refused at once), so each input costs microseconds.
//!
//! The replay tests of both crates share the rest: [`saved_inputs`] (the files under
//! `fuzz/`), [`replay`] (run them all, report every failure), and [`Rng`], the seeded PRNG of
//! their mutation smokes (which other tests use for reproducible random data too).

#![forbid(unsafe_code)]

use crate::layout::{H_CHECKSUM, H_CREATED_UNIX_MS, H_DATASET_ID, H_HASH_SEED, H_HISTORY_ID, Options};
use crate::segment::Segment;
use crate::store::{Expiry, LockInfo, Store, WriteMode};
use crate::sync::Ordering;
use std::any::Any;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The shape of the fuzzed segment: small (three 64 KiB pages, one size class each), so a
/// fresh copy costs little to write.
pub fn options() -> Options {
    Options {
        capacity_bytes: 192 << 10,
        max_entries: 32,
        max_key: 32,
        max_value: 512,
        max_clients: 4,
        feed_len: 16,
        evict: false,
        mode: 0o600,
    }
}

/// The hash seed of the template, fixed so that a saved input replays the same way in every
/// process (a random seed would put the keys in other slots).
const SEED: u64 = 0x5eed_f00d_1234_5678;

/// Keys the template holds (and the operations use).
pub fn keys() -> Vec<Vec<u8>> {
    (0..12u8).map(|i| format!("fuzz-key-{i:02}").into_bytes()).collect()
}

/// A unique segment name for this process.
fn unique_name(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("gds-fuzz-{tag}-{}-{n}", std::process::id())
}

/// Removes the segment file when dropped, panic or not.
struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The bytes of a valid segment with a few entries (fixed seed, fixed dataset id), built once
/// per process.
pub fn template() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| build_template().expect("building the fuzz template segment"))
}

fn build_template() -> crate::Result<Vec<u8>> {
    let name = unique_name("template");
    let path = crate::os::segment_path(&name)?;
    let _unlink = Unlink(path.clone());
    let mut seg = Segment::create(&name, &options())?.expect("a fresh unique name");
    for (w, v) in [(H_HASH_SEED, SEED), (H_DATASET_ID, 7), (H_HISTORY_ID, 7), (H_CREATED_UNIX_MS, 0)] {
        seg.mem.w(w).store(v, Ordering::Relaxed);
    }
    seg.mem.w(H_CHECKSUM).store(crate::layout::header_checksum(&seg.mem), Ordering::Relaxed);
    seg.seed = SEED;
    let st = Store::from_segment(seg);
    for (i, k) in keys().iter().enumerate().take(9) {
        let value = vec![b'a' + i as u8; if i % 2 == 0 { 24 + i } else { 300 + i }];
        let expiry = match i % 3 {
            0 => Expiry::Never,
            1 => Expiry::After(Duration::from_secs(3600)),
            _ => Expiry::Sliding(Duration::from_secs(600)),
        };
        st.set(k, &value, expiry)?;
    }
    st.delete(&keys()[4])?;
    if let Some(l) = st.lock(&keys()[2], Duration::from_secs(60))? {
        st.unlock(&keys()[2], l.lock_id)?;
    }
    // Left locked: a lock held by this (then gone) client is part of the picture.
    st.lock(&keys()[5], Duration::from_secs(60))?;
    drop(st);
    std::fs::read(&path).map_err(|e| crate::Error::Io {
        op: "read",
        path: path.display().to_string(),
        source: e,
    })
}

/// The segment file an input describes (see the module comment).
pub fn segment_bytes(data: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else { return Vec::new() };
    if mode % 4 == 0 {
        return rest.to_vec();
    }
    let mut bytes = template().to_vec();
    let words = bytes.len() / 8;
    let (resize, edits) = match (mode % 4, rest.split_first_chunk::<4>()) {
        (3, Some((len, edits))) => (Some(u32::from_le_bytes(*len) as usize), edits),
        _ => (None, rest),
    };
    for e in edits.chunks_exact(12) {
        let w = u32::from_le_bytes(e[..4].try_into().expect("4 bytes")) as usize % words;
        bytes[w * 8..w * 8 + 8].copy_from_slice(&e[4..]);
    }
    if mode % 4 >= 2 {
        let sum = crate::layout::header_checksum_of_bytes(&bytes);
        bytes[H_CHECKSUM * 8..H_CHECKSUM * 8 + 8].copy_from_slice(&sum.to_ne_bytes());
    }
    if let Some(len) = resize {
        // At most twice the template: a grown file is refused by its size either way.
        bytes.resize(len % (2 * template().len() + 1), 0);
    }
    bytes
}

/// The attach target: see the module comment.
pub fn attach(data: &[u8]) {
    let bytes = segment_bytes(data);
    let name = unique_name("attach");
    let path = crate::os::segment_path(&name).expect("a valid name");
    let _unlink = Unlink(path.clone());
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .expect("creating the fuzz segment file");
        f.write_all(&bytes).expect("writing the fuzz segment file");
    }
    // The template with no edits: it must attach and hold what was written (a check on the
    // harness itself: a fuzzer whose every input is refused at attach tests little).
    let pristine = matches!(data, [m] if m % 4 == 1 || m % 4 == 2);
    let seg = match Segment::attach(&name, Duration::ZERO, false) {
        Ok(Some(seg)) => seg,
        Ok(None) => panic!("the segment file vanished"),
        Err(e) => {
            assert!(!pristine, "the unmodified template was refused: {e}");
            let _ = e.to_string();
            return;
        }
    };
    let st = Store::from_segment(seg);
    if pristine {
        let e = st.get(&keys()[0]).expect("a read of the template").expect("the template's first key");
        assert_eq!(e.value, vec![b'a'; 24], "the template's first value");
    }
    exercise(&st, data);
}

/// Every operation, on the template's keys and on keys and values taken from the input.
fn exercise(st: &Store, data: &[u8]) {
    let mut keys = keys();
    let tail = &data[data.len().saturating_sub(40)..];
    keys.push(tail.iter().copied().take(40).collect());
    let ttl = u64::from_le_bytes(
        data.iter().rev().copied().chain([0; 8]).take(8).collect::<Vec<_>>().try_into().expect("8"),
    );
    let _ = st.info();
    let _ = st.stats();
    let r = st.check();
    let _ = format!("{r:?}");
    for (i, k) in keys.iter().enumerate() {
        let _ = st.get(k).map_err(|e| e.to_string());
        let _ = st.get_into(k, &mut [0u8; 100]);
        let _ = st.meta_of(k);
        let value = vec![i as u8; (i * 57) % 600];
        match i % 6 {
            0 => {
                let _ = st.set(k, &value, Expiry::Never);
            }
            1 => {
                let _ = st.add(k, &value, Expiry::After(Duration::from_millis(ttl % 5000 + 1)));
            }
            2 => {
                let _ = st.compare_and_set(k, ttl, &value, Expiry::Sliding(Duration::from_secs(5)));
            }
            3 => {
                let _ = st.delete(k);
            }
            4 => {
                let _ = st.touch(k, Expiry::After(Duration::from_secs(ttl)));
            }
            _ => {
                if let Ok(Some(l)) = st.lock(k, Duration::from_millis(ttl % 100)) {
                    let _ = st.set_and_unlock(k, l.lock_id, &value, Expiry::Never);
                }
                let _ = st.unlock(k, ttl);
            }
        }
    }
    // The replicator's writes, with durations and lock ages taken from the input.
    let d = Duration::from_millis(ttl);
    let _ = st.apply_replicated(
        &keys[0],
        b"replicated",
        Some(d),
        Some(d),
        Some(LockInfo { lock_id: ttl, age: d }),
    );
    let _ = st.apply_replicated(&keys[1], b"", None, None, None);
    let _ = st.apply_replicated_delete(&keys[2]);
    let mut seen = 0;
    let _ = st.scan_while(|_| {
        seen += 1;
        seen < 10_000
    });
    for slot in [0, 1, 7, 31, 63, 64, ttl as u32, u32::MAX] {
        let _ = st.entry_at(slot);
    }
    let head = st.feed_head();
    for c in [0, 1, ttl, head.saturating_sub(20), head.saturating_sub(1), head, head.saturating_add(1)] {
        let _ = st.feed_read(c);
    }
    let _ = st.sweep(ttl % 1000);
    let _ = st.sweep(u64::MAX);
    st.acknowledge_replicated(ttl);
    let _ = st.replicated_upto();
    // The daemon's control words, with values from the input (a Duration::MAX write lease
    // once wrapped to an expired one), and a worker's writes under each.
    for lease in [Some(Duration::from_millis(ttl)), Some(Duration::MAX), None] {
        st.set_write_lease(lease);
        let _ = st.set(&keys[0], b"leased", Expiry::Never);
    }
    let _ = st.raise_epoch(ttl);
    st.set_history_id(ttl);
    for mode in [WriteMode::Fenced, WriteMode::Replica, WriteMode::Writable] {
        st.set_write_mode(mode);
        let _ = st.drain_writers(Duration::ZERO);
        let _ = st.touch(&keys[0], Expiry::After(d));
    }
    let _ = st.check();
}

/// The workspace's `fuzz/` directory: the cargo-fuzz crate, its seed corpus and its saved
/// regressions (found from this crate's source tree, so for tests run from a checkout).
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The inputs saved for the fuzz target `target`, as (name, bytes): the files of
/// `fuzz/regressions/<target>/` (inputs that once failed), then of `fuzz/corpus/<target>/`
/// (the seed corpus), each sorted by name, dot files skipped, named `<kind>/<target>/<file>`.
/// A missing directory holds none.
pub fn saved_inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in ["regressions", "corpus"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        let mut files: Vec<PathBuf> = rd
            .map(|e| e.unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())).path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for p in files {
            let file = p.file_name().expect("a listed file has a name").to_string_lossy().into_owned();
            if file.starts_with('.') {
                continue;
            }
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            out.push((format!("{kind}/{target}/{file}"), bytes));
        }
    }
    out
}

/// What a caught panic said.
pub fn panic_text(p: Box<dyn Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(non-string panic)".into())
}

/// Runs `run` on every input of `target`, then panics naming each input it failed (with its
/// length and the error), so one run reports them all.
pub fn replay(target: &str, inputs: &[(String, Vec<u8>)], mut run: impl FnMut(&[u8]) -> Result<(), String>) {
    let mut failures = Vec::new();
    for (name, bytes) in inputs {
        if let Err(e) = run(bytes) {
            failures.push(format!("{name} ({} bytes): {e}", bytes.len()));
        }
    }
    println!("{target}: {} saved inputs replayed", inputs.len());
    assert!(failures.is_empty(), "{target}: {} inputs fail:\n{}", failures.len(), failures.join("\n"));
}

/// A small seeded PRNG (splitmix64) for the fuzzers' mutation smokes and the tests' random
/// data: a seed gives the same numbers in every build and process, so a failing run that
/// prints its seed replays.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Small seeds for the attach target (the fuzzer's starting corpus; also replayed by the tests).
pub fn seeds() -> Vec<Vec<u8>> {
    let g = crate::layout::Geometry::from_options(&options()).expect("valid options");
    let edit =
        |word: usize, value: u64| [(word as u32).to_le_bytes().as_slice(), &value.to_le_bytes()].concat();
    let raw_header: Vec<u8> = [&[0u8][..], &template()[..crate::layout::HEADER_WORDS * 8]].concat();
    vec![
        vec![1],
        raw_header,
        [vec![1], edit(g.index_off + 3, u64::MAX), edit(crate::layout::H_FEED_HEAD, 1 << 63)].concat(),
        [vec![1], edit(g.pages_off, 0x55), edit(g.bitmap_off, u64::MAX), edit(g.clients_off, 1)].concat(),
        [vec![2], edit(crate::layout::H_N_PAGES, 2), edit(crate::layout::H_MAX_VALUE, 4096)].concat(),
        [vec![3], (template().len() as u32 - 8).to_le_bytes().to_vec()].concat(),
    ]
}
