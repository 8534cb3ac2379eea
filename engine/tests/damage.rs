//! Damaged segments: a damaged header, a truncated or extended file, damaged records and index
//! slots, and a hostile co-tenant scribbling on the mapping must all give clear errors, never
//! a crash (SIGSEGV/SIGBUS), a panic, a hang or a read outside the mapping.
//!
//! Everything that could crash or hang runs in a child process (this binary re-run with one
//! test, see `common::isolate`), so a signal or a hang fails the test with a diagnosis instead
//! of killing the harness; every operation in a child runs under a watchdog (`common::watch`)
//! that names the operation that never returned.

mod common;
use common::*;
use gardenstate::{Error, Expiry, FeedRead, Options, Store};
use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// A small segment: header tests attach to it thousands of times.
fn tiny() -> Options {
    Options {
        capacity_bytes: 256 << 10,
        max_entries: 64,
        max_key: 32,
        max_value: 1024,
        max_clients: 8,
        feed_len: 16,
        ..Options::default()
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(non-string panic)".into())
}

/// `Store::attach`, with a panic turned into `Err(message)`.
fn try_attach(name: &str) -> Result<gardenstate::Result<Store>, String> {
    catch_unwind(|| Store::attach(name)).map_err(panic_text)
}

/// A segment with one entry, for the header tests.
fn header_fixture(tag: &str) -> (Seg, RawFile, Vec<u64>) {
    let s = Seg::new(tag);
    let st = Store::create(&s.name, &tiny()).unwrap();
    st.set(b"canary", b"still here", Expiry::Never).unwrap();
    drop(st);
    let f = RawFile::open(&s.name);
    let header: Vec<u64> = (0..HEADER_WORDS).map(|i| f.word(i)).collect();
    (s, f, header)
}

/// After restoring the header, the segment attaches again and its data is intact.
fn assert_attaches_intact(name: &str) {
    let st = Store::attach(name).expect("the restored segment attaches");
    assert_eq!(st.get(b"canary").unwrap().unwrap().value, b"still here");
}

/// Checks the error of attaching with header word `word` changed to `found` (`header` holds
/// the original words): the right variant, and a message naming what was expected and found.
fn judge_header_error(word: u64, found: u64, header: &[u64], e: &Error) -> Result<(), String> {
    let msg = e.to_string();
    let ok = match (word, e) {
        (H_MAGIC, Error::Corrupt { what: "magic", .. }) => {
            msg.contains(&format!("{MAGIC:#018x}")) && msg.contains(&format!("{found:#018x}"))
        }
        (H_VERSION, Error::Incompatible { what: "layout version", expected, found: f }) => {
            // The build's version is the one the intact header holds.
            *expected == header[H_VERSION as usize].to_string()
                && *f == found.to_string()
                && msg.contains(&format!("expected {expected}"))
                && msg.contains(f.as_str())
        }
        (H_FINGERPRINT, Error::Incompatible { what: "layout fingerprint", expected, found: f }) => {
            *expected == format!("{:#x}", header[H_FINGERPRINT as usize])
                && *f == format!("{found:#x}")
                && msg.contains(expected.as_str())
                && msg.contains(f.as_str())
        }
        (H_SEGMENT_BYTES..H_CHECKSUM, Error::Corrupt { what: "header checksum", .. }) => {
            msg.contains(&format!("stored {:#x}", header[H_CHECKSUM as usize])) && msg.contains("computed")
        }
        (H_CHECKSUM, Error::Corrupt { what: "header checksum", .. }) => {
            msg.contains(&format!("stored {found:#x}")) && msg.contains("computed")
        }
        _ => false,
    };
    if ok { Ok(()) } else { Err(format!("word {word} = {found:#x}: unexpected error {e:?} ({msg})")) }
}

/// Sets header word `word` to each of `values` in turn and checks attach refuses it.
fn check_header_word(s: &Seg, f: &RawFile, header: &[u64], word: u64, values: &[u64], bad: &mut Vec<String>) {
    for &v in values {
        if v == header[word as usize] {
            continue;
        }
        f.set_word(word, v);
        match try_attach(&s.name) {
            Ok(Err(e)) => {
                if let Err(why) = judge_header_error(word, v, header, &e) {
                    bad.push(why);
                }
            }
            Ok(Ok(_)) => {
                bad.push(format!("word {word} = {v:#x} (was {:#x}): ATTACH SUCCEEDED", header[word as usize]))
            }
            Err(p) => bad.push(format!("word {word} = {v:#x}: PANIC in attach: {p}")),
        }
        f.set_word(word, header[word as usize]);
    }
}

/// Every bit of every validated header word (all but the state stamp, word 3), flipped alone.
#[test]
fn header_bit_flips_are_refused() {
    let (s, f, header) = header_fixture("hdrflip");
    let mut bad = Vec::new();
    for word in (0..=H_CHECKSUM).filter(|&w| w != H_STATE) {
        let flips: Vec<u64> = (0..64).map(|b| header[word as usize] ^ (1 << b)).collect();
        check_header_word(&s, &f, &header, word, &flips, &mut bad);
    }
    assert!(bad.is_empty(), "{} bad outcomes:\n{}", bad.len(), bad.join("\n"));
    assert_attaches_intact(&s.name);
}

/// Random garbage (and all-zero, all-one words) in every validated header word.
#[test]
fn header_garbage_words_are_refused() {
    let (s, f, header) = header_fixture("hdrgarbage");
    let seed = seed_from_env("GDS_SEED");
    println!("GDS_SEED={seed}");
    let mut rng = Rng::new(seed);
    let mut bad = Vec::new();
    for word in (0..=H_CHECKSUM).filter(|&w| w != H_STATE) {
        let mut values = vec![0, u64::MAX, 1 << 63, u32::MAX as u64];
        values.extend((0..16).map(|_| rng.next_u64()));
        check_header_word(&s, &f, &header, word, &values, &mut bad);
    }
    assert!(bad.is_empty(), "{} bad outcomes:\n{}", bad.len(), bad.join("\n"));
    assert_attaches_intact(&s.name);
}

/// Words 18..=23 sit in the immutable part of the header (before the mutable words at 24) but
/// nothing covers them: not the checksum (it ends at word 17), not a check for zero. Damage
/// there goes unnoticed. Harmless while no field lives there, but the header is the one place
/// where any damage should be caught; this test asks that it is.
#[test]
fn reserved_header_words_are_checked() {
    let (s, f, header) = header_fixture("hdrreserved");
    let mut unnoticed = Vec::new();
    for word in 18..24u64 {
        for v in [header[word as usize] ^ 1, u64::MAX] {
            f.set_word(word, v);
            match try_attach(&s.name) {
                Ok(Ok(st)) => {
                    // Nothing reads the word: the store works, so the damage is unnoticed.
                    assert_eq!(st.get(b"canary").unwrap().unwrap().value, b"still here");
                    unnoticed.push(format!("word {word} = {v:#x}"));
                }
                Ok(Err(e)) => assert!(matches!(e, Error::Corrupt { .. }), "word {word}: {e:?}"),
                Err(p) => panic!("word {word}: PANIC in attach: {p}"),
            }
            f.set_word(word, header[word as usize]);
        }
    }
    assert!(
        unnoticed.is_empty(),
        "damage to reserved header words 18..=23 is not detected (not covered by the header \
         checksum, not checked to be zero): {unnoticed:?}"
    );
}

/// The state stamp: anything but READY means "not ready", reported after the wait limit.
#[test]
fn header_state_stamp_damage_is_not_ready() {
    let cases = [READY ^ 1, READY ^ (1 << 63), 0, 0x0123_4567_89ab_cdef];
    let threads: Vec<_> = cases
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            std::thread::spawn(move || {
                let (s, f, _) = header_fixture(&format!("hdrstate{i}"));
                f.set_word(H_STATE, v);
                let t0 = Instant::now();
                let r = try_attach(&s.name);
                let waited = t0.elapsed();
                match r {
                    Ok(Err(e @ Error::NotReady { .. })) => {
                        let msg = e.to_string();
                        assert!(msg.contains("still initializing") && msg.contains("destroy"), "{msg}");
                        assert!(waited >= Duration::from_secs(4), "gave up after only {waited:?}");
                    }
                    other => panic!("stamp {v:#x}: expected NotReady, got {:?}", other.map(|r| r.map(drop))),
                }
                // Store::open must not take over or re-create it either.
                assert!(matches!(Store::open(&s.name, &tiny()), Err(Error::NotReady { .. })));
                f.set_word(H_STATE, READY);
                assert_attaches_intact(&s.name);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// A segment written by a machine of the other byte order is named as such.
#[test]
fn byte_swapped_magic_names_byte_order() {
    let (s, f, header) = header_fixture("hdrswap");
    let check = |what: &str| match try_attach(&s.name) {
        Ok(Err(e @ Error::Incompatible { what: "byte order", .. })) => {
            let msg = e.to_string();
            assert!(msg.contains("byte order") && msg.contains("opposite"), "{what}: {msg}");
        }
        other => panic!("{what}: expected Incompatible(byte order), got {:?}", other.map(|r| r.map(drop))),
    };
    f.set_word(H_MAGIC, MAGIC.swap_bytes());
    check("swapped magic");
    // The whole header byte-swapped, as another-endian creator would have written it.
    for (i, w) in header.iter().enumerate().take(24) {
        f.set_word(i as u64, w.swap_bytes());
    }
    check("swapped header");
    for (i, w) in header.iter().enumerate() {
        f.set_word(i as u64, *w);
    }
    assert_attaches_intact(&s.name);
}

/// The header checksum as the engine computes it (xxh3 of words 0..17 but the state stamp).
fn header_checksum(words: &[u64]) -> u64 {
    let bytes: Vec<u8> = (0..H_CHECKSUM as usize)
        .filter(|&i| i != H_STATE as usize)
        .flat_map(|i| words[i].to_le_bytes())
        .collect();
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// A header rewritten with a valid checksum (a buggy tool, or a co-tenant who recomputes it)
/// but an impossible or inconsistent geometry is still refused, with an error, not a panic.
#[test]
fn forged_header_with_valid_checksum_is_refused() {
    let (s, f, header) = header_fixture("hdrforged");
    let h = |i: u64| header[i as usize];
    let big = Options { max_entries: 1 << 31, ..tiny() };
    let gb = geom(&big);
    let cases: Vec<(&str, Vec<(u64, u64)>)> = vec![
        ("bucket count + 1", vec![(H_N_BUCKETS, h(H_N_BUCKETS) + 1)]),
        ("page size doubled", vec![(H_PAGE_SIZE, h(H_PAGE_SIZE) * 2)]),
        ("page count + 1", vec![(H_N_PAGES, h(H_N_PAGES) + 1)]),
        ("segment size + 8", vec![(H_SEGMENT_BYTES, h(H_SEGMENT_BYTES) + 8)]),
        ("page count 2^40", vec![(H_N_PAGES, 1 << 40)]),
        ("page count u64::MAX", vec![(H_N_PAGES, u64::MAX)]),
        ("page size u64::MAX", vec![(H_PAGE_SIZE, u64::MAX)]),
        ("page size 0", vec![(H_PAGE_SIZE, 0)]),
        ("max entries 0", vec![(H_MAX_ENTRIES, 0)]),
        ("max entries u64::MAX", vec![(H_MAX_ENTRIES, u64::MAX)]),
        ("max key 0", vec![(H_MAX_KEY, 0)]),
        ("max key 2^32", vec![(H_MAX_KEY, 1 << 32)]),
        ("max value u64::MAX", vec![(H_MAX_VALUE, u64::MAX)]),
        ("max clients 0", vec![(H_MAX_CLIENTS, 0)]),
        ("max clients 2^32 + 5", vec![(H_MAX_CLIENTS, (1 << 32) + 5)]),
        ("feed len 0", vec![(H_FEED_LEN, 0)]),
        ("feed len u64::MAX", vec![(H_FEED_LEN, u64::MAX)]),
        (
            "consistent geometry of 2^31 entries in a small file",
            vec![(H_MAX_ENTRIES, 1 << 31), (H_N_BUCKETS, gb.n_buckets), (H_SEGMENT_BYTES, gb.segment_bytes)],
        ),
    ];
    let mut bad = Vec::new();
    for (what, changes) in &cases {
        let mut words = header.clone();
        for &(i, v) in changes {
            words[i as usize] = v;
        }
        words[H_CHECKSUM as usize] = header_checksum(&words);
        for i in 0..=H_CHECKSUM {
            f.set_word(i, words[i as usize]);
        }
        match try_attach(&s.name) {
            Ok(Err(Error::Corrupt { .. } | Error::Incompatible { .. })) => {}
            Ok(Err(e)) => bad.push(format!("{what}: unexpected error kind {e:?}")),
            Ok(Ok(_)) => bad.push(format!("{what}: ATTACH SUCCEEDED")),
            Err(p) => bad.push(format!("{what}: PANIC in attach: {p}")),
        }
        for i in 0..=H_CHECKSUM {
            f.set_word(i, h(i));
        }
    }
    assert!(bad.is_empty(), "{} bad outcomes:\n{}", bad.len(), bad.join("\n"));
    assert_attaches_intact(&s.name);
}

/// The root cause behind a forged page count panicking: `Geometry::from_options` multiplies
/// the page count by the page size unchecked, so an absurd capacity overflows (a panic in
/// debug builds, a wrapped and accepted geometry in release) instead of `InvalidOptions`.
#[test]
fn absurd_capacity_is_invalid_options_not_a_panic() {
    let s = Seg::new("absurdcap");
    for cap in [u64::MAX, u64::MAX / 2, 1 << 62, 1 << 48] {
        let o = Options { capacity_bytes: cap, ..tiny() };
        match catch_unwind(|| Store::create(&s.name, &o).map(drop)) {
            Ok(Err(Error::InvalidOptions(_))) => {}
            Ok(other) => panic!("capacity {cap:#x}: expected InvalidOptions, got {other:?}"),
            Err(p) => panic!("capacity {cap:#x}: PANIC in Store::create: {}", panic_text(p)),
        }
    }
}

/// A file cut or grown to `len` bytes is refused for its size, or, if the change left holes
/// in it (an extension; a cut inside a page, which a tmpfs may drop), before it is mapped as
/// not all reserved (a hole could raise SIGBUS on a full filesystem).
fn expect_file_size_error(len: u64, r: Result<gardenstate::Result<Store>, String>) {
    match r {
        Ok(Err(e @ (Error::Corrupt { what: "file size", .. } | Error::Unreserved { .. }))) => {
            if let Error::Unreserved { size, .. } = e {
                assert_eq!(size, len, "{e}");
            }
            let msg = e.to_string();
            assert!(msg.contains(&len.to_string()), "size {len}: the message does not name the size: {msg}");
        }
        other => panic!(
            "size {len}: expected Corrupt(file size) or Unreserved, got {:?}",
            other.map(|r| r.map(drop))
        ),
    }
}

/// A file cut short (anywhere from inside the header to one word short) is refused.
#[test]
fn truncated_file_is_refused() {
    let (s, f, _) = header_fixture("trunc");
    let full = f.file_len();
    for len in [4096, 4096 + 8, full / 2, full - 4096, full - 8, full - 3] {
        f.file.set_len(len).unwrap();
        expect_file_size_error(len, try_attach(&s.name));
        // open must refuse it too, not re-create or "repair" it.
        expect_file_size_error(len, catch_unwind(|| Store::open(&s.name, &tiny())).map_err(panic_text));
        assert_eq!(f.file_len(), len, "the damaged file was changed");
    }
}

/// A file shorter than the header is waited on (a creator may be sizing it), then refused.
#[test]
fn truncated_below_header_is_refused() {
    let threads: Vec<_> = [0u64, 100, 4095]
        .into_iter()
        .map(|len| {
            std::thread::spawn(move || {
                let (s, f, _) = header_fixture(&format!("trunc{len}"));
                f.file.set_len(len).unwrap();
                expect_file_size_error(len, try_attach(&s.name));
                assert_eq!(f.file_len(), len);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// A file with extra bytes is refused (its size is recorded in the header).
#[test]
fn extended_file_is_refused() {
    let (s, f, _) = header_fixture("extend");
    let full = f.file_len();
    for extra in [1, 8, 4096, 1 << 20] {
        f.file.set_len(full + extra).unwrap();
        expect_file_size_error(full + extra, try_attach(&s.name));
        expect_file_size_error(
            full + extra,
            catch_unwind(|| Store::open(&s.name, &tiny())).map_err(panic_text),
        );
    }
    f.file.set_len(full).unwrap();
    assert_attaches_intact(&s.name);
}

// ---- damaged records and index slots -------------------------------------------------------

/// The options of the record-damage tests: 64 KiB pages, 32 of them.
fn rec_opts() -> Options {
    Options {
        capacity_bytes: 2 << 20,
        max_entries: 2048,
        max_key: 64,
        max_value: 4096,
        max_clients: 16,
        feed_len: 256,
        ..Options::default()
    }
}

const N_KEYS: u64 = 600;
const N_EXPIRING: u64 = 20;
/// No operation on a 2 MiB segment takes anywhere near this long: past it, it is a hang.
const OP_LIMIT: Duration = Duration::from_secs(4);

fn key(i: u64) -> Vec<u8> {
    format!("dmg-key-{i:05}").into_bytes()
}
fn value(i: u64, gen_: u64) -> Vec<u8> {
    make_value(&key(i), 1, gen_ * 1000 + i, gen_, 40 + (i as usize * 7) % 300)
}

/// A populated segment and where each key's index slot and record are in the file.
struct Fixture {
    _s: Seg,
    st: Store,
    g: Geom,
    f: RawFile,
    /// Per key: index position.
    slot: Vec<u64>,
    /// The expiring keys' index slot words (file word, value) as written.
    exp_slots: Vec<(u64, u64)>,
}

impl Fixture {
    fn new() -> Fixture {
        let s = Seg::new("recdmg");
        destroy_on_hang(&s.name);
        let o = rec_opts();
        let st = Store::create(&s.name, &o).unwrap();
        let g = geom_of(&st, &o);
        for i in 0..N_KEYS {
            st.set(&key(i), &value(i, 0), Expiry::Never).unwrap();
        }
        for i in 0..N_EXPIRING {
            st.set(format!("exp-{i}").as_bytes(), b"soon gone", Expiry::After(Duration::from_secs(60)))
                .unwrap();
        }
        let mut by_key = HashMap::new();
        st.scan(|e| {
            by_key.insert(e.key, e.slot as u64);
        })
        .unwrap();
        let slot: Vec<u64> = (0..N_KEYS).map(|i| by_key[&key(i)]).collect();
        let f = RawFile::open(&s.name);
        let exp_slots = (0..N_EXPIRING)
            .map(|i| by_key[format!("exp-{i}").as_bytes()])
            .map(|pos| (g.index_off + pos, f.word(g.index_off + pos)))
            .collect();
        let fx = Fixture { _s: s, st, g, f, slot, exp_slots };
        for i in 0..N_KEYS {
            let rec = fx.record(i);
            let lens = fx.f.word(rec + R_LENS);
            assert_eq!(lens, key(i).len() as u64 | (value(i, 0).len() as u64) << 32, "key {i}");
            assert_eq!(fx.f.bytes(rec * 8 + RECORD_HEADER_BYTES, key(i).len()), key(i), "key {i}");
        }
        // The exp-* keys expire now (they were live for the scan that found their slots): this
        // thread's clock is advanced past their TTL, so no stall of a slow machine can expire
        // them before the scan.
        gardenstate::advance_clock_for_tests(Duration::from_secs(61));
        fx
    }
    /// File word of key `i`'s index slot.
    fn slot_word(&self, i: u64) -> u64 {
        self.g.index_off + self.slot[i as usize]
    }
    /// Heap word offset (the slot's block field) of key `i`'s record.
    fn block(&self, i: u64) -> u64 {
        self.f.word(self.slot_word(i)) & 0xffff_ffff
    }
    /// File word of key `i`'s record.
    fn record(&self, i: u64) -> u64 {
        self.g.heap_off + self.block(i)
    }
    fn set_block(&self, i: u64, block: u64) {
        let w = self.f.word(self.slot_word(i));
        self.f.set_word(self.slot_word(i), (w & !0xffff_ffff) | (block & 0xffff_ffff));
    }
}

/// What a damage test does to the fixture: returns the keys it damaged.
type Damage = fn(&Fixture, &mut Rng) -> HashSet<u64>;

/// Victim keys, spread over the table.
const VICTIMS: [u64; 6] = [7, 50, 123, 300, 451, 599];

fn damage_lengths(fx: &Fixture, _: &mut Rng) -> HashSet<u64> {
    let max_key = rec_opts().max_key as u64;
    let max_value = rec_opts().max_value;
    let lens = |i: u64| fx.f.word(fx.record(i) + R_LENS);
    let lo = |l: u64| l & 0xffff_ffff;
    let hi = |l: u64| l & !0xffff_ffff;
    let [a, b, _, d, e, _] = VICTIMS.map(lens);
    let values = [
        hi(a) | u32::MAX as u64,         // key_len u32::MAX
        lo(b) | (u32::MAX as u64) << 32, // value_len u32::MAX
        u64::MAX,                        // both
        hi(d),                           // key_len 0
        lo(e) | (max_value + 1) << 32,   // value_len max_value + 1
        (max_key + 1) | 8 << 32,         // key_len max_key + 1
    ];
    for (&i, v) in VICTIMS.iter().zip(values) {
        fx.f.set_word(fx.record(i) + R_LENS, v);
    }
    VICTIMS.into_iter().collect()
}

fn damage_state(fx: &Fixture, rng: &mut Rng) -> HashSet<u64> {
    let st = |i: u64| fx.f.word(fx.record(i) + R_STATE);
    let values = [
        st(VICTIMS[0]) ^ (1 << 5),  // generation
        st(VICTIMS[1]) ^ (1 << 62), // kind: OWNED -> FREE
        st(VICTIMS[2]) ^ (1 << 63), // kind: OWNED -> 3 (invalid)
        0,                          // zeroed
        rng.next_u64(),             // garbage
        st(VICTIMS[5]) ^ (1 << 50), // owner field only
    ];
    for (&i, v) in VICTIMS.iter().zip(values) {
        fx.f.set_word(fx.record(i) + R_STATE, v);
    }
    VICTIMS.into_iter().collect()
}

fn damage_record_garbage(fx: &Fixture, rng: &mut Rng) -> HashSet<u64> {
    for (n, &i) in VICTIMS.iter().enumerate() {
        let at = fx.record(i) * 8;
        let len = match n % 3 {
            0 => RECORD_HEADER_BYTES as usize,      // the whole header
            1 => RECORD_HEADER_BYTES as usize + 16, // header and key
            _ => 8,                                 // one random word of the header
        };
        let at = if n % 3 == 2 { at + 8 * rng.below(10) } else { at };
        let garbage: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        fx.f.set_bytes(at, &garbage);
    }
    VICTIMS.into_iter().collect()
}

fn damage_offsets_beyond_heap(fx: &Fixture, _: &mut Rng) -> HashSet<u64> {
    let hw = fx.g.heap_words();
    let blocks = [hw, hw + 1000, u32::MAX as u64, hw - 9, hw - 1, u32::MAX as u64 - 9];
    for (&i, b) in VICTIMS.iter().zip(blocks) {
        fx.set_block(i, b);
    }
    VICTIMS.into_iter().collect()
}

fn damage_offsets_into_heap(fx: &Fixture, _: &mut Rng) -> HashSet<u64> {
    let page_words = fx.g.page_size / 8;
    let last_page = (fx.g.n_pages - 1) * page_words;
    let blocks = [
        fx.block(VICTIMS[0]) + 1,            // one word into its own record
        fx.block(VICTIMS[4]) + 12,           // inside another record's key/value
        last_page,                           // an unassigned page (zeros: a FREE "block")
        fx.block(VICTIMS[5] - 1),            // another key's record (whole and valid)
        0,                                   // the heap's first block
        last_page - RECORD_HEADER_BYTES / 8, // the tail of a page
    ];
    assert_eq!(fx.f.word(fx.g.pages_off + fx.g.n_pages - 1), 0, "the last page is unassigned");
    for (&i, b) in VICTIMS.iter().zip(blocks) {
        fx.set_block(i, b);
    }
    VICTIMS.into_iter().collect()
}

fn damage_index_garbage(fx: &Fixture, rng: &mut Rng) -> HashSet<u64> {
    let mut hit = HashSet::new();
    // Random bytes over two whole buckets (probe bound words included).
    let mut ranges = Vec::new();
    for &i in &VICTIMS[..2] {
        let bucket = fx.slot[i as usize] / 8;
        ranges.push((fx.g.index_off + bucket * 8, 8));
    }
    // Single bit flips in the generation, tag and state fields of two slot words, and the
    // probe bound word of a third key's bucket set to 0 and to garbage.
    let flip = |i: u64, bit: u32| fx.f.set_word(fx.slot_word(i), fx.f.word(fx.slot_word(i)) ^ (1 << bit));
    flip(VICTIMS[2], 33); // generation
    flip(VICTIMS[3], 50); // tag
    flip(VICTIMS[4], 62); // state MEMBER -> INSERTING|MEMBER (3, invalid)
    hit.extend(&VICTIMS[2..5]);
    for (start, words) in ranges {
        for w in start..start + words {
            fx.f.set_word(w, rng.next_u64());
        }
        for i in 0..N_KEYS {
            if (start..start + words).contains(&fx.slot_word(i)) {
                hit.insert(i);
            }
        }
    }
    let b = fx.slot[VICTIMS[5] as usize] / 8;
    fx.f.set_word(fx.g.index_off + b * 8, u64::MAX);
    hit
}

/// Env var selecting the phase a damage child runs.
const PHASE_ENV: &str = "GDS_DAMAGE_PHASE";
const PHASES: [&str; 6] = ["read", "scan", "check", "write", "delete", "sweep"];

/// Collects what an operation on a damaged segment did wrong.
#[derive(Default)]
struct Verdict {
    bad: Vec<String>,
    errors: u64,
}

impl Verdict {
    /// An error is acceptable from a damaged key (or anything, for scans): `Corrupt` names the
    /// damage. Anything else is reported.
    fn err(&mut self, what: &str, e: &Error) {
        self.errors += 1;
        if !matches!(e, Error::Corrupt { .. }) {
            self.bad.push(format!("{what}: unexpected error kind {e:?}"));
        } else if !e.to_string().contains("damaged segment") {
            self.bad.push(format!("{what}: unclear message: {e}"));
        }
    }
}

/// Runs `f` under the watchdog, turning a panic into a reported violation.
fn op<T>(v: &mut Verdict, label: String, f: impl FnOnce() -> T) -> Option<T> {
    let _w = watch(label.clone(), OP_LIMIT);
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(t) => Some(t),
        Err(p) => {
            v.bad.push(format!("{label}: PANIC: {}", panic_text(p)));
            None
        }
    }
}

fn run_phase(fx: &Fixture, damaged: &HashSet<u64>, phase: &str) -> Verdict {
    let st = &fx.st;
    let mut v = Verdict::default();
    let keys = 0..N_KEYS;
    match phase {
        "read" => {
            for i in keys {
                let (k, want) = (key(i), value(i, 0));
                let hurt = damaged.contains(&i);
                match op(&mut v, format!("get key {i}"), || st.get(&k)) {
                    Some(Ok(Some(e))) if e.value == want => {}
                    Some(Ok(got)) if !hurt => {
                        v.bad.push(format!("get undamaged key {i}: wrong result {got:?}"))
                    }
                    Some(Err(e)) if hurt => v.err(&format!("get key {i}"), &e),
                    Some(Err(e)) => v.bad.push(format!("get undamaged key {i}: error {e}")),
                    _ => {}
                }
                let mut buf = vec![0u8; 8192];
                match op(&mut v, format!("get_into key {i}"), || st.get_into(&k, &mut buf)) {
                    Some(Ok(Some(m))) if buf[..m.len] == want[..] => {}
                    Some(Ok(got)) if !hurt => v.bad.push(format!("get_into undamaged key {i}: {got:?}")),
                    Some(Err(e)) if hurt => v.err(&format!("get_into key {i}"), &e),
                    Some(Err(e)) => v.bad.push(format!("get_into undamaged key {i}: error {e}")),
                    _ => {}
                }
                match op(&mut v, format!("meta_of key {i}"), || st.meta_of(&k)) {
                    Some(Ok(Some(m))) if m.len == want.len() => {}
                    Some(Ok(got)) if !hurt => v.bad.push(format!("meta_of undamaged key {i}: {got:?}")),
                    Some(Err(e)) if hurt => v.err(&format!("meta_of key {i}"), &e),
                    Some(Err(e)) => v.bad.push(format!("meta_of undamaged key {i}: error {e}")),
                    _ => {}
                }
            }
        }
        "scan" => {
            let mut seen = HashMap::new();
            match op(&mut v, "scan".into(), || {
                st.scan(|e| {
                    seen.insert(e.key, e.value);
                })
            }) {
                Some(Ok(())) => {
                    for i in keys.filter(|i| !damaged.contains(i)) {
                        if seen.get(&key(i)) != Some(&value(i, 0)) {
                            v.bad.push(format!("scan: undamaged key {i} missing or wrong"));
                        }
                    }
                }
                Some(Err(e)) => v.err("scan", &e),
                None => {}
            }
            for pos in 0..fx.g.index_slots() as u32 {
                match op(&mut v, format!("entry_at slot {pos}"), || st.entry_at(pos)) {
                    Some(Err(e)) => v.err(&format!("entry_at {pos}"), &e),
                    Some(Ok(Some(e))) => {
                        let i = fx.slot.iter().position(|&s| s == pos as u64);
                        if let Some(i) = i.filter(|&i| !damaged.contains(&(i as u64))) {
                            if e.key != key(i as u64) || e.value != value(i as u64, 0) {
                                v.bad.push(format!("entry_at slot {pos}: undamaged key {i} wrong"));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        "check" => {
            if let Some(r) = op(&mut v, "check".into(), || st.check()) {
                if r.problems.is_empty() {
                    v.bad.push(format!("check found nothing wrong with a damaged segment: {r:?}"));
                }
                println!("check: {} problems, first: {:?}", r.problems.len(), r.problems.first());
            }
        }
        "write" => {
            for i in keys.clone() {
                let (k, want) = (key(i), value(i, 1));
                let hurt = damaged.contains(&i);
                match op(&mut v, format!("set key {i}"), || st.set(&k, &want, Expiry::Never)) {
                    Some(Ok(_)) => match op(&mut v, format!("get after set key {i}"), || st.get(&k)) {
                        Some(Ok(Some(e))) if e.value == want => {}
                        Some(Err(e)) if hurt => v.err(&format!("get after set key {i}"), &e),
                        Some(got) => v.bad.push(format!("set key {i} succeeded but get gives {got:?}")),
                        None => {}
                    },
                    Some(Err(e)) if hurt => v.err(&format!("set key {i}"), &e),
                    Some(Err(e)) => v.bad.push(format!("set undamaged key {i}: error {e}")),
                    None => {}
                }
            }
            for i in keys.step_by(7) {
                let k = key(i);
                let hurt = damaged.contains(&i);
                match op(&mut v, format!("lock key {i}"), || st.lock(&k, Duration::from_secs(60))) {
                    Some(Ok(Some(l))) => {
                        if let Some(Err(e)) =
                            op(&mut v, format!("unlock key {i}"), || st.unlock(&k, l.lock_id))
                        {
                            v.bad.push(format!("unlock key {i} after a successful lock: {e}"));
                        }
                    }
                    Some(Ok(None)) if hurt => {}
                    Some(Err(e)) if hurt => v.err(&format!("lock key {i}"), &e),
                    Some(other) => v.bad.push(format!("lock undamaged key {i}: {other:?}")),
                    None => {}
                }
                match op(&mut v, format!("touch key {i}"), || {
                    st.touch(&k, Expiry::After(Duration::from_secs(60)))
                }) {
                    Some(Ok(true)) => {}
                    Some(Ok(false)) if hurt => {}
                    Some(Err(e)) if hurt => v.err(&format!("touch key {i}"), &e),
                    Some(other) => v.bad.push(format!("touch undamaged key {i}: {other:?}")),
                    None => {}
                }
            }
        }
        "delete" => {
            for i in keys {
                let k = key(i);
                let hurt = damaged.contains(&i);
                match op(&mut v, format!("delete key {i}"), || st.delete(&k)) {
                    Some(Ok(true)) => {
                        if let Some(r) = op(&mut v, format!("get after delete key {i}"), || st.get(&k)) {
                            match r {
                                Ok(None) => {}
                                Err(e) if hurt => v.err(&format!("get after delete key {i}"), &e),
                                other => v.bad.push(format!("key {i} deleted but get gives {other:?}")),
                            }
                        }
                    }
                    Some(Ok(false)) if hurt => {}
                    Some(Err(e)) if hurt => v.err(&format!("delete key {i}"), &e),
                    Some(other) => v.bad.push(format!("delete undamaged key {i}: {other:?}")),
                    None => {}
                }
            }
        }
        "sweep" => {
            // The damage may land on an expiring key's slot too (the hash seed is random):
            // only the intact ones must expire.
            let intact = fx.exp_slots.iter().filter(|&&(w, was)| fx.f.word(w) == was).count() as u64;
            match op(&mut v, "sweep".into(), || st.sweep(u64::MAX)) {
                Some(Ok(r)) if r.ran && r.expired >= intact => {}
                Some(other) => v.bad.push(format!("sweep: {other:?} (expected {intact} expired entries)")),
                None => {}
            }
            op(&mut v, "stats".into(), || st.stats());
            let head = st.feed_head();
            for c in head.saturating_sub(300)..head + 2 {
                if let Some(FeedRead::Change(ch)) = op(&mut v, format!("feed_read {c}"), || st.feed_read(c)) {
                    op(&mut v, format!("entry_at feed slot {}", ch.slot), || st.entry_at(ch.slot));
                }
            }
        }
        p => panic!("unknown phase {p}"),
    }
    v
}

/// The body of a damage test: in the parent, runs every phase in its own child process (all
/// at once) and reports each; in a child, builds the fixture, damages it and runs one phase.
fn damage_test(test: &str, damage: Damage) {
    if std::env::var(ISOLATE_ENV).as_deref() == Ok(test) {
        let phase = std::env::var(PHASE_ENV).expect("phase");
        let seed = seed_from_env("GDS_SEED");
        println!("GDS_SEED={seed} phase {phase}");
        let fx = Fixture::new();
        let damaged = damage(&fx, &mut Rng::new(seed));
        println!("damaged keys: {damaged:?}");
        let v = run_phase(&fx, &damaged, &phase);
        println!("phase {phase}: {} errors reported", v.errors);
        assert!(v.bad.is_empty(), "phase {phase}: {} violations:\n{}", v.bad.len(), v.bad.join("\n"));
        return;
    }
    if std::env::var(ISOLATE_ENV).is_ok() {
        return; // a child of another test
    }
    let seed = seed_from_env("GDS_SEED");
    let children: Vec<_> = PHASES
        .iter()
        .map(|&phase| {
            let cmd = child_command(
                test,
                &[
                    (ISOLATE_ENV, test.to_string()),
                    (PHASE_ENV, phase.to_string()),
                    ("GDS_SEED", seed.to_string()),
                ],
            );
            std::thread::spawn(move || (phase, run_child(cmd, Duration::from_secs(30))))
        })
        .collect();
    let mut failures = Vec::new();
    for c in children {
        let (phase, run) = c.join().unwrap();
        if run.success() {
            println!("{test}: phase {phase}: ok ({:?})", run.elapsed);
        } else {
            failures.push(format!("=== phase {phase}: {}", run.describe()));
        }
    }
    assert!(failures.is_empty(), "{test} (GDS_SEED={seed}):\n{}", failures.join("\n"));
}

/// Record lengths set to u32::MAX, 0, or past the segment's limits.
#[test]
fn record_lengths_out_of_bounds() {
    damage_test("record_lengths_out_of_bounds", damage_lengths);
}

/// Record state words (the block generation and kind) flipped, zeroed, garbage.
#[test]
fn record_state_word_damage() {
    damage_test("record_state_word_damage", damage_state);
}

/// Random bytes over record headers (and keys).
#[test]
fn record_header_garbage() {
    damage_test("record_header_garbage", damage_record_garbage);
}

/// Values damaged in place, as a stray write would (one bit flipped, one byte changed, a
/// word or a run of up to 64 bytes of garbage; at a value's first byte, its last, or anywhere):
/// every read that copies the value reports `Corrupt`, never the damaged bytes (the record
/// header and key are untouched, so only the value checksum can notice); every other key
/// reads back intact.
#[test]
fn value_damage_in_place_is_corrupt() {
    let seed = seed_from_env("GDS_SEED");
    println!("GDS_SEED={seed}");
    let mut rng = Rng::new(seed);
    let fx = Fixture::new();
    let mut damaged = HashSet::new();
    for i in (0..N_KEYS).step_by(3) {
        let v = value(i, 0);
        let len = v.len() as u64;
        let vat = fx.record(i) * 8 + RECORD_HEADER_BYTES + (key(i).len() as u64).div_ceil(8) * 8;
        let n = match (i / 3) % 4 {
            0 | 1 => 1,
            2 => 8,
            _ => 1 + rng.below(64),
        }
        .min(len);
        let at = match (i / 3) % 3 {
            0 => 0,
            1 => len - n,
            _ => rng.below(len - n + 1),
        };
        let old = fx.f.bytes(vat + at, n as usize);
        let new: Vec<u8> = match (i / 3) % 4 {
            0 => vec![old[0] ^ (1 << rng.below(8))],
            1 => vec![old[0].wrapping_add(1 + rng.below(255) as u8)],
            _ => (0..n).map(|_| rng.next_u64() as u8).collect(),
        };
        if new != old {
            fx.f.set_bytes(vat + at, &new);
            damaged.insert(i);
        }
    }
    assert!(damaged.len() > 150, "only {} values damaged", damaged.len());
    let mut bad = Vec::new();
    let mut buf = vec![0u8; 4096];
    for i in 0..N_KEYS {
        let hurt = damaged.contains(&i);
        let ok = value(i, 0);
        match (hurt, fx.st.get(&key(i))) {
            (true, Err(Error::Corrupt { .. })) => {}
            (false, Ok(Some(e))) if e.value == ok => {}
            (_, got) => {
                bad.push(format!("get key {i} (damaged: {hurt}): {:?}", got.map(|e| e.map(|e| e.meta))))
            }
        }
        match (hurt, fx.st.get_into(&key(i), &mut buf)) {
            (true, Err(Error::Corrupt { .. })) => {}
            (false, Ok(Some(m))) if buf[..m.len] == ok[..] => {}
            (_, got) => bad.push(format!("get_into key {i} (damaged: {hurt}): {got:?}")),
        }
    }
    let mut scanned_damaged = 0;
    match fx.st.scan(|e| scanned_damaged += usize::from(damaged.iter().any(|&i| e.key == key(i)))) {
        Err(Error::Corrupt { .. }) => {}
        other => {
            bad.push(format!("scan over damaged values: {other:?} ({scanned_damaged} damaged returned)"))
        }
    }
    assert!(bad.is_empty(), "GDS_SEED={seed}: {} violations:\n{}", bad.len(), bad.join("\n"));
}

/// Index slots whose block offset points past the heap.
#[test]
fn slot_offsets_beyond_heap() {
    damage_test("slot_offsets_beyond_heap", damage_offsets_beyond_heap);
}

/// Index slots whose block offset points inside the heap, but not at their record.
#[test]
fn slot_offsets_into_the_heap() {
    damage_test("slot_offsets_into_the_heap", damage_offsets_into_heap);
}

/// Random words and bit flips in the index region.
#[test]
fn index_region_garbage() {
    damage_test("index_region_garbage", damage_index_garbage);
}

/// The mutable header words (feed head, sweeper lease and cursor, write mode, class hints,
/// retired counters) are not validated on attach; extreme values there must still give
/// errors or harmless behaviour, never a panic.
#[test]
fn mutable_header_words_extreme_values() {
    isolate("mutable_header_words_extreme_values", Duration::from_secs(30), || {
        let s = Seg::new("mutable");
        destroy_on_hang(&s.name);
        let st = Store::create(&s.name, &rec_opts()).unwrap();
        for i in 0..50u64 {
            st.set(&key(i), &value(i, 0), Expiry::Never).unwrap();
        }
        drop(st);
        let f = RawFile::open(&s.name);
        let words: Vec<u64> = [H_EPOCH, H_WRITE_MODE, H_FEED_HEAD, H_SWEEP_LEASE, H_SWEEP_CURSOR]
            .into_iter()
            .chain(H_RETIRED_STATS..H_RETIRED_STATS + 12)
            .chain([H_CLASS_HINT, H_CLASS_HINT + 5, H_CLASS_HINT + 40, 26, 100, 511])
            .collect();
        let mut v = Verdict::default();
        for &w in &words {
            let orig = f.word(w);
            for x in [u64::MAX, u64::MAX - 1, 1 << 63, 0x5555_5555_5555_5555] {
                f.set_word(w, x);
                let what = format!("header word {w} = {x:#x}");
                let st = match op(&mut v, format!("{what}: attach"), || Store::attach(&s.name)) {
                    Some(Ok(st)) => st,
                    Some(Err(e)) => {
                        v.bad.push(format!("{what}: attach refused a mutable word: {e}"));
                        continue;
                    }
                    None => continue,
                };
                let ro = w == H_WRITE_MODE;
                for n in 0..3u64 {
                    let k = key(n);
                    match op(&mut v, format!("{what}: set"), || st.set(&k, &value(n, 2), Expiry::Never)) {
                        Some(Ok(_)) => {}
                        Some(Err(Error::ReadOnly)) if ro => {}
                        Some(other) => v.bad.push(format!("{what}: set: {other:?}")),
                        None => {}
                    }
                    op(&mut v, format!("{what}: get"), || st.get(&k));
                }
                op(&mut v, format!("{what}: delete"), || st.delete(&key(10)));
                op(&mut v, format!("{what}: add"), || st.add(&key(10), &value(10, 0), Expiry::Never));
                op(&mut v, format!("{what}: touch"), || {
                    st.touch(&key(11), Expiry::After(Duration::from_secs(9)))
                });
                op(&mut v, format!("{what}: scan"), || st.scan(|_| {}));
                op(&mut v, format!("{what}: sweep"), || st.sweep(u64::MAX));
                op(&mut v, format!("{what}: stats"), || st.stats());
                op(&mut v, format!("{what}: check"), || st.check());
                let head = st.feed_head();
                op(&mut v, format!("{what}: feed_read"), || {
                    for c in head.saturating_sub(3)..head.saturating_add(2) {
                        let _ = st.feed_read(c);
                    }
                });
                drop(st);
                f.set_word(w, orig);
            }
        }
        assert!(v.bad.is_empty(), "{} violations:\n{}", v.bad.len(), v.bad.join("\n"));
    });
}

// ---- a hostile co-tenant ---------------------------------------------------------------------

const ROLE_ENV: &str = "GDS_HOSTILE_ROLE";
const NAME_ENV: &str = "GDS_HOSTILE_SEG";
const HOSTILE_TIME: Duration = Duration::from_secs(2);

fn hostile_key(i: u64) -> Vec<u8> {
    format!("hostile-{i:04}").into_bytes()
}
fn hostile_value(i: u64) -> Vec<u8> {
    make_value(&hostile_key(i), 7, i, 0, 24 + (i as usize * 13) % 500)
}
const HOSTILE_KEYS: u64 = 1000;

/// Child role of the hostile tests (does nothing unless `GDS_HOSTILE_ROLE` is set):
/// - `scribbler-outside-heap` / `scribbler-anywhere`: writes random bytes at random offsets of
///   the mapped segment for `HOSTILE_TIME` (never the first 24 words, which are only read at
///   attach: the victims must get to attach);
/// - `reader`: gets, metas, stats, feed reads and checks (no scan, no write) until the
///   scribbler is done, checking every value it is given;
/// - `full`: everything, including scans, entry_at, sweeps, and (but in the strict run)
///   writes and deletes.
#[test]
#[ignore = "child role of hostile_cotenant_outside_heap and hostile_cotenant_anywhere"]
fn hostile_child() {
    let Ok(role) = std::env::var(ROLE_ENV) else { return };
    let name = std::env::var(NAME_ENV).unwrap();
    let seed = seed_from_env("GDS_SEED");
    let mut rng = Rng::new(seed ^ role.len() as u64);
    let o = rec_opts();
    let g = geom(&o);
    let t0 = Instant::now();
    if let Some(mode) = role.strip_prefix("scribbler-") {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(seg_path(&name)).unwrap();
        // SAFETY: a shared mapping of a file others write concurrently; this process only
        // writes it with volatile byte stores and never forms references into it.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&file).unwrap() };
        assert_eq!(map.len() as u64, g.segment_bytes);
        let base = map.as_mut_ptr();
        let meta_end = g.heap_off * 8;
        // Where the records are: the pages in use (class word set).
        let raw = RawFile::open(&name);
        let used_pages: Vec<u64> = (0..g.n_pages).filter(|&p| raw.word(g.pages_off + p) != 0).collect();
        let mut writes = 0u64;
        while t0.elapsed() < HOSTILE_TIME {
            let at = if mode == "anywhere" && rng.below(2) == 0 {
                let page = used_pages[rng.below(used_pages.len() as u64) as usize];
                meta_end + page * g.page_size + rng.below(g.page_size)
            } else {
                24 * 8 + rng.below(meta_end - 24 * 8)
            };
            // SAFETY: `at` < the mapping's length (checked above); a byte store cannot tear.
            unsafe { std::ptr::write_volatile(base.add(at as usize), rng.next_u64() as u8) };
            writes += 1;
            // About 1000 bytes over the run: damage accumulates while the victims work.
            std::thread::sleep(Duration::from_millis(2));
        }
        println!("scribbler {mode}: {writes} random bytes written");
        return;
    }
    let st = Store::attach(&name).unwrap();
    let full = role == "full";
    // In the strict run nobody allocates: scribbled page-table words could otherwise make a
    // writer's block overlap a live record (undetectable without checksums) and the readers'
    // strict value check would blame the engine for the scribbler's work.
    let writes = full && std::env::var("GDS_STRICT_VALUES").is_err();
    let (mut right, mut wrong, mut missing, mut errors) = (0u64, 0u64, 0u64, HashMap::<String, u64>::new());
    let mut wrong_examples = Vec::new();
    let mut n = 0u64;
    let limit = Duration::from_secs(5);
    while t0.elapsed() < HOSTILE_TIME + Duration::from_millis(500) {
        n += 1;
        let i = rng.below(HOSTILE_KEYS);
        let k = hostile_key(i);
        let r = {
            let _w = watch(format!("get key {i}"), limit);
            st.get(&k)
        };
        match r {
            // The values of the `full` victim's writes verify too (make_value/check_value).
            Ok(Some(e)) if e.value == hostile_value(i) || check_value(&k, &e.value).is_ok() => right += 1,
            Ok(Some(e)) => {
                wrong += 1;
                if wrong_examples.len() < 5 {
                    wrong_examples.push(check_value(&k, &e.value).err().unwrap_or_default());
                }
            }
            Ok(None) => missing += 1,
            Err(e) => *errors.entry(format!("{e}").chars().take(60).collect()).or_default() += 1,
        }
        {
            let _w = watch(format!("meta_of key {i}"), limit);
            let _ = st.meta_of(&k);
        }
        if n % 64 == 0 {
            let _w = watch("stats, feed_read, check", limit);
            let _ = st.stats();
            let head = st.feed_head();
            let _ = st.feed_read(head.saturating_sub(rng.below(300) + 1));
            let _ = st.check();
        }
        if full {
            if n % 97 == 0 {
                let _w = watch("scan", limit);
                let _ = st.scan(|_| {});
            }
            let pos = rng.below(g.index_slots()) as u32;
            {
                let _w = watch(format!("entry_at slot {pos}"), limit);
                let _ = st.entry_at(pos);
            }
            if writes && n % 3 == 0 {
                let v = make_value(&k, 8, n, 1, 24 + (n as usize % 400));
                let _w = watch(format!("set key {i}"), limit);
                let _ = st.set(&k, &v, Expiry::Never);
            }
            if writes && n % 11 == 0 {
                let _w = watch(format!("delete key {i}"), limit);
                let _ = st.delete(&k);
            }
            if n % 501 == 0 {
                let _w = watch("sweep", limit);
                let _ = st.sweep(4096);
            }
        }
    }
    println!(
        "victim {role}: {n} rounds: {right} right, {wrong} WRONG, {missing} missing, errors {errors:?}\n\
         wrong values: {wrong_examples:#?}"
    );
    if !full && std::env::var("GDS_STRICT_VALUES").is_ok() {
        assert_eq!(wrong, 0, "a reader was given wrong values: {wrong_examples:#?}");
    }
}

fn hostile_run(mode: &str, strict: bool) {
    let s = Seg::new(&format!("hostile-{mode}"));
    let st = Store::create(&s.name, &rec_opts()).unwrap();
    for i in 0..HOSTILE_KEYS {
        st.set(&hostile_key(i), &hostile_value(i), Expiry::Never).unwrap();
    }
    drop(st);
    let seed = seed_from_env("GDS_SEED");
    println!("GDS_SEED={seed}");
    let spawn = |role: &str| {
        let mut envs =
            vec![(ROLE_ENV, role.to_string()), (NAME_ENV, s.name.clone()), ("GDS_SEED", seed.to_string())];
        if strict {
            envs.push(("GDS_STRICT_VALUES", "1".into()));
        }
        let cmd = child_command("hostile_child", &envs);
        std::thread::spawn(move || run_child(cmd, Duration::from_secs(20)))
    };
    let victims = [("reader", spawn("reader")), ("full", spawn("full"))];
    let scribbler = spawn(&format!("scribbler-{mode}"));
    let scribbler = scribbler.join().unwrap();
    assert!(scribbler.success(), "the scribbler itself failed: {}", scribbler.describe());
    let mut failures = Vec::new();
    for (role, v) in victims {
        let run = v.join().unwrap();
        let summary = run.stdout.lines().find(|l| l.starts_with("victim")).unwrap_or("(no summary)");
        println!("{role}: {summary}");
        if !run.success() {
            failures.push(format!("=== victim `{role}`: {}", run.describe()));
        }
    }
    assert!(failures.is_empty(), "hostile co-tenant ({mode}, GDS_SEED={seed}):\n{}", failures.join("\n"));
}

/// A co-tenant scribbles over everything but the records (index, page table, bitmaps, client
/// table, feed, mutable header words). Victims must not die of a signal, panic or hang, and
/// readers must get the right value, no value, or an error: never another value (records are
/// untouched and no victim writes in this run, so a wrong value would be the engine mixing
/// records up).
#[test]
fn hostile_cotenant_outside_heap() {
    hostile_run("outside-heap", true);
}

/// A co-tenant scribbles anywhere, records included. Victims must not die of a signal, panic
/// or hang. (Values are checked and wrong ones counted, but not failed on: records carry no
/// checksum, so a scribbled value byte is returned as it is.)
#[test]
fn hostile_cotenant_anywhere() {
    hostile_run("anywhere", false);
}

/// The file truncated under attached processes: the next access to a page past the new end
/// raises SIGBUS. Inherent in mapping a named tmpfs file (it cannot be sealed against
/// shrinking, and the engine installs no SIGBUS handler): a same-user process that truncates
/// the segment crashes every process using it. Kept as a record of the limit; run with
/// `--ignored` to see it.
#[test]
#[ignore = "known limit: truncating a mapped segment kills its users with SIGBUS"]
fn file_truncated_while_attached() {
    isolate("file_truncated_while_attached", Duration::from_secs(20), || {
        let s = Seg::new("truncattached");
        destroy_on_hang(&s.name);
        let st = Store::create(&s.name, &rec_opts()).unwrap();
        for i in 0..N_KEYS {
            st.set(&key(i), &value(i, 0), Expiry::Never).unwrap();
        }
        RawFile::open(&s.name).file.set_len(4096).unwrap();
        for i in 0..N_KEYS {
            let _w = watch(format!("get key {i}"), OP_LIMIT);
            let _ = st.get(&key(i));
        }
    });
}

/// A bucket's probe bound beyond the most a key may probe is clamped by readers (so every
/// key still reads), and only `check` can say the word is damaged: it must.
#[test]
fn a_probe_bound_beyond_the_limit_is_reported_by_check() {
    let fx = Fixture::new();
    let b = fx.slot[0] / 8;
    fx.f.set_word(fx.g.index_off + b * 8, 1 << 40);
    let report = fx.st.check();
    assert!(
        report.problems.iter().any(|p| p.contains(&format!("bucket {b}: probe bound"))),
        "check did not report the damaged bound: {:?}",
        report.problems
    );
    for i in 0..N_KEYS {
        assert!(fx.st.get(&key(i)).unwrap().is_some(), "key {i} lost to a clamped bound");
    }
}
