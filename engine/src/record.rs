//! Records: the layout of a published entry inside its heap block, how a writer fills one,
//! and how a reader copies one out optimistically.
//!
//! A record is immutable once published, except `R_EXPIRES` (touch and sliding expiry, a CAS
//! on that single word). A new value, a lock or an unlock writes a new record and publishes it
//! with one CAS on the index slot (copy-on-write), so a reader sees either the old record or
//! the new one, never a mixture.
//!
//! Optimistic read (a seqlock whose sequence is the block state word): load the slot word
//! (acquire) and the record's state word (acquire); copy with relaxed loads; `fence(Acquire)`;
//! reload both. If either moved, the block may have been freed and reused during the copy, so
//! the copy is thrown away and the caller retries. Nothing read in the window (lengths, the
//! key) is trusted before that validation, and every length is bounds-checked before it is
//! used to address memory, so a damaged or concurrently reused record yields a retry or a
//! `Corrupt` error, never a read outside the mapping. Readers write nothing to shared memory.

use crate::layout::*;
use crate::segment::Segment;
use crate::sync::{Ordering, fence};

/// A record's lock fields: lock id (0 = unlocked), when taken (`now_ms`), owner process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LockWords {
    pub id: u64,
    pub time: u64,
    pub pid: u32,
    pub start: u64,
}

/// Everything a writer puts in a new record.
pub(crate) struct NewRecord<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub key_hash: u64,
    pub version: u64,
    pub expires: u64,
    pub sliding_ms: u32,
    pub lock: LockWords,
}

/// The validated metadata of a record a reader copied.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View {
    /// The block state word the record was read under (its identity for freeing).
    pub state: u64,
    pub version: u64,
    /// The deadline (0 = never), and the raw `R_EXPIRES` word it came from (for a CAS).
    pub expires: u64,
    pub expires_word: u64,
    pub sliding_ms: u32,
    pub value_len: usize,
    pub lock: LockWords,
}

/// Where a reader copies the value (and the key, for scans).
pub(crate) enum Sink<'a> {
    Nothing,
    Buf(&'a mut [u8]),
    Vec(&'a mut Vec<u8>),
    KeyAndValue(&'a mut Vec<u8>, &'a mut Vec<u8>),
}

pub(crate) enum Read {
    /// Validated; the value was copied if the sink had room (`value_fits`).
    Ok { view: View, value_fits: bool },
    /// Validated: the record holds another key (a tag collision).
    OtherKey,
    /// The slot or the block changed during the read: retry from the slot.
    Changed,
    /// The record is unchanged but its lengths are impossible: the segment is damaged.
    Damaged(&'static str),
}

/// Lanes of the value checksum.
const SUM_LANES: usize = 4;
const SUM_K: u64 = 0x9e37_79b9_7f4a_7c15;

/// The value checksum (`R_SUM`), seeded with the key hash, over the value's words as stored
/// (native byte order, the last one zero-padded): word `i` steps lane `i % 4` with
/// `lane = rotl((lane ^ w) * K, 29)` (K odd), then the lanes and the length are folded the
/// same way and avalanched. Each step is a bijection of the lane for a given word and of the
/// word for a given lane, so damage confined to one word of the value always changes the sum;
/// other damage goes unnoticed with a probability of about 2^-64. Readers compute it in the
/// copy loop, on the words as they load them: the value is read once, and the four
/// independent lanes keep the multiplier busy instead of waiting on one chain. (It replaced
/// xxh3 of the value bytes: a second pass over the value and ~870 instructions a KiB.)
#[derive(Clone, Copy)]
struct ValueSum {
    lanes: [u64; SUM_LANES],
}

impl ValueSum {
    fn new(key_hash: u64) -> ValueSum {
        ValueSum { lanes: core::array::from_fn(|j| key_hash ^ SUM_K.wrapping_mul(j as u64 + 1)) }
    }
    #[inline(always)]
    fn step(lane: u64, w: u64) -> u64 {
        (lane ^ w).wrapping_mul(SUM_K).rotate_left(29)
    }
    /// Word `4m + j` of the value.
    #[inline(always)]
    fn word(&mut self, j: usize, w: u64) {
        self.lanes[j] = ValueSum::step(self.lanes[j], w);
    }
    fn finish(self, value_len: usize) -> u64 {
        let mut h = (value_len as u64).wrapping_mul(SUM_K);
        for l in self.lanes {
            h = ValueSum::step(h, l);
        }
        // murmur3's fmix64 (a bijection).
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// The checksum of `value` as a writer stores it (see [`ValueSum`]).
pub(crate) fn value_sum(value: &[u8], key_hash: u64) -> u64 {
    let mut s = ValueSum::new(key_hash);
    let mut blocks = value.chunks_exact(SUM_LANES * 8);
    for b in &mut blocks {
        for j in 0..SUM_LANES {
            s.word(j, word_of(b, j));
        }
    }
    let rest = blocks.remainder();
    for j in 0..rest.len().div_ceil(8) {
        s.word(j, word_of(rest, j));
    }
    s.finish(value.len())
}

fn word_of(bytes: &[u8], i: usize) -> u64 {
    let start = i * 8;
    let end = (start + 8).min(bytes.len());
    let mut w = [0u8; 8];
    w[..end - start].copy_from_slice(&bytes[start..end]);
    u64::from_ne_bytes(w)
}

impl Segment {
    /// Fills block `off` (owned by the caller, unpublished) with `r`, for index position `pos`.
    pub(crate) fn write_record(&self, off: u32, pos: usize, r: &NewRecord<'_>) {
        let base = self.heap_word(off as u64);
        let st = |i: usize, v: u64| self.mem.w(base + i).store(v, Ordering::Relaxed);
        let state = self.mem.w(base + R_STATE).load(Ordering::Relaxed);
        st(R_VERSION, r.version);
        st(R_EXPIRES, expires_word(r.expires, state));
        st(R_LENS, r.key.len() as u64 | (r.value.len() as u64) << 32);
        st(R_META, r.sliding_ms as u64 | (pos as u64) << 32);
        st(R_KEY_HASH, r.key_hash);
        st(R_LOCK_ID, r.lock.id);
        st(R_LOCK_TIME, r.lock.time);
        st(R_LOCK_PID, r.lock.pid as u64);
        st(R_LOCK_START, r.lock.start);
        st(R_SUM, value_sum(r.value, r.key_hash));
        let kw = r.key.len().div_ceil(8);
        for i in 0..kw {
            st(RECORD_HEADER_WORDS + i, word_of(r.key, i));
        }
        self.write_words(base + RECORD_HEADER_WORDS + kw, r.value);
    }

    fn write_words(&self, at: usize, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        let mut i = at;
        for c in &mut chunks {
            self.mem.w(i).store(u64::from_ne_bytes(c.try_into().expect("8 bytes")), Ordering::Relaxed);
            i += 1;
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.mem.w(i).store(word_of(rest, 0), Ordering::Relaxed);
        }
    }

    fn copy_words(&self, at: usize, out: &mut [u8]) {
        self.mem.load_bytes(at, out);
    }

    /// Do the words at `at` hold `key` (as `write_record` stores it: zero-padded)?
    fn key_equals(&self, at: usize, key: &[u8]) -> bool {
        let mut chunks = key.chunks_exact(8);
        let mut i = at;
        for c in &mut chunks {
            if self.mem.w(i).load(Ordering::Relaxed) != u64::from_ne_bytes(c.try_into().expect("8 bytes")) {
                return false;
            }
            i += 1;
        }
        let rest = chunks.remainder();
        rest.is_empty() || self.mem.w(i).load(Ordering::Relaxed) == word_of(rest, 0)
    }

    /// Copies the value stored at word `at` into `out` (its length) and returns the checksum
    /// of the words as loaded (see [`ValueSum`]): one pass, sixteen words a bounds check.
    fn copy_value(&self, at: usize, out: &mut [u8], key_hash: u64) -> u64 {
        /// Words a bounds check covers (a multiple of the lane count).
        const BLOCK: usize = 16;
        let mut i = at;
        let mut blocks = out.chunks_exact_mut(BLOCK * 8);
        // The lanes as four locals here: as `ValueSum`'s array, which the tail below indexes
        // by a variable, they were written back to memory at every word (measured: a store
        // per word, a third of the loop's stores).
        let [mut l0, mut l1, mut l2, mut l3] = ValueSum::new(key_hash).lanes;
        for b in &mut blocks {
            let ws = self.mem.words::<BLOCK>(i);
            for (q, o) in ws.chunks_exact(SUM_LANES).zip(b.chunks_exact_mut(SUM_LANES * 8)) {
                let w: [u64; SUM_LANES] = core::array::from_fn(|j| q[j].load(Ordering::Relaxed));
                for (j, c) in o.chunks_exact_mut(8).enumerate() {
                    c.copy_from_slice(&w[j].to_ne_bytes());
                }
                l0 = ValueSum::step(l0, w[0]);
                l1 = ValueSum::step(l1, w[1]);
                l2 = ValueSum::step(l2, w[2]);
                l3 = ValueSum::step(l3, w[3]);
            }
            i += BLOCK;
        }
        let mut s = ValueSum { lanes: [l0, l1, l2, l3] };
        for (j, c) in blocks.into_remainder().chunks_mut(8).enumerate() {
            let w = self.mem.w(i + j).load(Ordering::Relaxed);
            c.copy_from_slice(&w.to_ne_bytes()[..c.len()]);
            s.word(j % SUM_LANES, w);
        }
        s.finish(out.len())
    }

    /// Optimistically reads the record that index slot `pos` held as word `w` (see the module
    /// comment). With `key`, first checks the record holds that key.
    pub(crate) fn read_record(&self, pos: usize, w: u64, key: Option<&[u8]>, sink: &mut Sink<'_>) -> Read {
        let off = slot::block(w) as u64;
        let heap_words = self.g.heap_words();
        if off + RECORD_HEADER_WORDS as u64 > heap_words {
            return self.judge(pos, w, None, "record offset beyond the heap");
        }
        let base = self.heap_word(off);
        let ld = |i: usize| self.mem.w(base + i).load(Ordering::Relaxed);
        let st = self.mem.w(base + R_STATE).load(Ordering::Acquire);
        if block::kind(st) != block::OWNED || block::generation(st) & slot::GEN_MASK != slot::generation(w) {
            // A block is freed only after its slot moved on: if the slot still holds `w`, the
            // state word itself is damaged (or `w` points inside a record, not at one).
            return self.judge(pos, w, None, "block state does not match its index slot");
        }
        let lens = ld(R_LENS);
        let (key_len, value_len) = ((lens & 0xffff_ffff) as usize, (lens >> 32) as usize);
        let kw = key_len.div_ceil(8);
        let total = (RECORD_HEADER_WORDS + kw + value_len.div_ceil(8)) as u64;
        if key_len == 0
            || key_len as u64 > self.g.max_key
            || value_len as u64 > self.g.max_value
            || off + total > heap_words
        {
            return self.judge(pos, w, Some(st), "record lengths out of bounds");
        }
        if let Some(k) = key {
            if k.len() != key_len || !self.key_equals(base + RECORD_HEADER_WORDS, k) {
                return match self.judge(pos, w, Some(st), "") {
                    Read::Damaged(_) => Read::OtherKey,
                    other => other,
                };
            }
        }
        let meta = ld(R_META);
        let expires_word = self.mem.w(base + R_EXPIRES).load(Ordering::Relaxed);
        let view = View {
            state: st,
            version: ld(R_VERSION),
            expires: expires_word & DEADLINE_MASK,
            expires_word,
            sliding_ms: meta as u32,
            value_len,
            lock: LockWords {
                id: ld(R_LOCK_ID),
                time: ld(R_LOCK_TIME),
                pid: ld(R_LOCK_PID) as u32,
                start: ld(R_LOCK_START),
            },
        };
        let vat = base + RECORD_HEADER_WORDS + kw;
        let (sum, key_hash) = (ld(R_SUM), ld(R_KEY_HASH));
        let (value_fits, sum_ok) = match sink {
            Sink::Nothing => (true, true),
            Sink::Buf(b) if b.len() < value_len => (false, true),
            Sink::Buf(b) => (true, self.copy_value(vat, &mut b[..value_len], key_hash) == sum),
            Sink::Vec(v) => {
                v.resize(value_len, 0);
                (true, self.copy_value(vat, v, key_hash) == sum)
            }
            Sink::KeyAndValue(k, v) => {
                k.resize(key_len, 0);
                self.copy_words(base + RECORD_HEADER_WORDS, k);
                v.resize(value_len, 0);
                (true, self.copy_value(vat, v, key_hash) == sum)
            }
        };
        match self.judge(pos, w, Some(st), "value checksum mismatch") {
            Read::Damaged(_) if sum_ok => Read::Ok { view, value_fits },
            other => other,
        }
    }

    /// Validation at the end of an optimistic read: `Changed` if the slot or the block moved,
    /// else `Damaged(why)` (callers use an empty `why` when unchanged means success).
    fn judge(&self, pos: usize, w: u64, st: Option<u64>, why: &'static str) -> Read {
        fence(Ordering::Acquire);
        let slot_now = self.mem.w(self.g.index_off + pos).load(Ordering::Relaxed);
        let block_same = st.is_none_or(|st| {
            self.mem.w(self.heap_word(slot::block(w) as u64) + R_STATE).load(Ordering::Relaxed) == st
        });
        if slot_now != w || !block_same { Read::Changed } else { Read::Damaged(why) }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::value_sum;

    #[test]
    fn every_single_bit_flip_changes_the_value_sum() {
        for len in [0usize, 1, 7, 8, 63, 64, 65, 1024, 1031] {
            let v: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(7)).collect();
            let sum = value_sum(&v, 42);
            assert_ne!(sum, value_sum(&v, 43), "len {len}: the key hash seeds the sum");
            for bit in 0..len * 8 {
                let mut d = v.clone();
                d[bit / 8] ^= 1 << (bit % 8);
                assert_ne!(value_sum(&d, 42), sum, "len {len}: bit {bit} flipped unnoticed");
            }
        }
        // Zero padding does not make lengths equal.
        assert_ne!(value_sum(&[0u8; 3], 1), value_sum(&[0u8; 4], 1));
        assert_ne!(value_sum(&[], 1), value_sum(&[0u8; 8], 1));
    }

    #[test]
    fn swapped_words_and_repeated_garbage_change_the_value_sum() {
        let v: Vec<u8> = (0..1024u32).map(|i| (i * 7 + 3) as u8).collect();
        let sum = value_sum(&v, 9);
        for (a, b) in [(0, 8), (0, 64), (8, 16), (1000, 1016)] {
            let mut d = v.clone();
            let (x, y) = (d[a..a + 8].to_vec(), d[b..b + 8].to_vec());
            d[a..a + 8].copy_from_slice(&y);
            d[b..b + 8].copy_from_slice(&x);
            assert_ne!(value_sum(&d, 9), sum, "words at {a} and {b} swapped unnoticed");
        }
        for at in (0..1024 - 64).step_by(40) {
            let mut d = v.clone();
            d[at..at + 64].fill(0xff);
            assert_ne!(value_sum(&d, 9), sum, "64 bytes of 0xff at {at} unnoticed");
        }
    }
}
