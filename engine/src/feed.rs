//! The change feed: a ring in the segment recording every mutation, for followers (the
//! replicator) that read it with their own cursor.
//!
//! Entry `p` (4 words, at ring index `p % feed_len`): `[seq, kind | slot << 8, version,
//! key_hash]`. A writer takes `p` with a CAS of `H_FEED_HEAD` from `p` to `p + 1` (which also
//! gives the new record its version, `p + 1`), publishes its change, then fills the entry and
//! stores `seq = p + 1` last with release ordering. Writers never wait for followers: the ring
//! simply overwrites its oldest entries.
//!
//! Reservation claims (F1): before its CAS of the head, a writer stores `p + 1` in its client
//! slot's `C_FEED` word (clients.rs), and it clears the word (0) after storing the entry's
//! `seq`. The CAS is a release and the follower loads the head with acquire, so a follower
//! that saw `head > p` sees the claim of whoever took `p` (or a later value of that word,
//! written after the entry was complete). A word left by a CAS that failed claims a position
//! someone else took: harmless, it only makes a follower look at that position again later.
//! So "the entry at `p` is not written and no client whose process is not proven dead claims
//! `p`" proves the entry will never be written by a live writer: its writer died (whatever it
//! published, a scan made afterwards sees). A writer stalled for any time between its CAS and
//! its entry keeps its claim, so a follower never skips a change that is still to come
//! (replicator `follow.rs`). A writer killed at any instruction leaves a claim its dead client
//! slot keeps until it is reclaimed; a live client's stale claim lasts until its next write.
//!
//! A follower at cursor `c` reads entry `c`: `seq == c + 1` means it is complete (re-checked
//! after reading, in case it was overwritten meanwhile); `seq < c + 1` means its writer has not
//! finished (or died: [`crate::Store::feed_claims`] tells the two apart, by proof only);
//! `seq > c + 1` or `head - c > feed_len` means the follower was lapped and must resync from a
//! scan. An entry names the index slot that changed; the follower re-reads that slot's current
//! record, so it never needs the old value, and a slot keeps one key until that key is deleted.

use crate::clients::C_FEED;
use crate::layout::{FEED_ENTRY_WORDS, H_FEED_HEAD};
use crate::segment::Segment;
use crate::sync::{Ordering, fence};

/// What a feed entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChangeKind {
    /// A reserved position whose operation then changed nothing: a write that took a feed
    /// position (its record's version) and lost a race that made it fail (an add that found
    /// the key after all, a CAS whose version moved).
    Nop = 0,
    Set = 1,
    Delete = 2,
    Touch = 3,
    Lock = 4,
    Unlock = 5,
    Expire = 6,
    Evict = 7,
}

impl ChangeKind {
    fn from_u8(v: u8) -> Option<ChangeKind> {
        use ChangeKind::*;
        [Nop, Set, Delete, Touch, Lock, Unlock, Expire, Evict].get(v as usize).copied()
    }
}

/// One recorded mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Feed position (0-based); the cursor after this entry is `seq + 1`.
    pub seq: u64,
    pub kind: ChangeKind,
    /// Index slot of the key (stable for the key's lifetime in the segment).
    pub slot: u32,
    /// Version of the entry after the change: the new record's for a rewrite, the unchanged
    /// one for a touch in place (a CAS of the deadline), 0 for removals and `Nop`.
    pub version: u64,
    /// The key's seeded hash.
    pub key_hash: u64,
}

/// The result of reading the feed at a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedRead {
    Change(Change),
    /// Nothing new: the cursor is at the head.
    Empty,
    /// The entry at the cursor is reserved but not yet written (its writer is mid-operation,
    /// paused, or dead), or is being rewritten for a later lap: read again; a follower that
    /// was lapped gets `Overflow` on a later read, since the head is checked first.
    Pending,
    /// The ring overwrote entries the follower had not read: resync with a scan.
    Overflow,
}

impl Segment {
    /// Takes the next feed position for the client whose slot starts at `client`, claiming it
    /// in the client's `C_FEED` word first (F1); the caller must `feed_write` it exactly once.
    pub(crate) fn feed_reserve(&self, client: usize) -> u64 {
        let head = self.mem.w(H_FEED_HEAD);
        let claim = self.mem.w(client + C_FEED);
        let mut p = head.load(Ordering::Relaxed);
        loop {
            claim.store(p.wrapping_add(1), Ordering::Relaxed);
            // Release: whoever sees the head past `p` sees the claim (F1).
            match head.compare_exchange_weak(p, p.wrapping_add(1), Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return p,
                Err(now) => p = now,
            }
        }
    }

    fn feed_entry(&self, p: u64) -> usize {
        self.g.feed_off + (p % self.g.feed_len) as usize * FEED_ENTRY_WORDS
    }

    /// Writes entry `p`, reserved by the client whose slot starts at `client`, and drops the
    /// client's claim on it (F1).
    pub(crate) fn feed_write(
        &self,
        client: usize,
        p: u64,
        kind: ChangeKind,
        slot: usize,
        version: u64,
        key_hash: u64,
    ) {
        let e = self.feed_entry(p);
        // Mark the entry as being rewritten before the payload changes (seqlock style), so a
        // follower reading the previous lap's entry sees the change on its re-check.
        self.mem.w(e).store(0, Ordering::Relaxed);
        fence(Ordering::Release);
        self.mem.w(e + 1).store(kind as u64 | (slot as u64) << 8, Ordering::Relaxed);
        self.mem.w(e + 2).store(version, Ordering::Relaxed);
        self.mem.w(e + 3).store(key_hash, Ordering::Relaxed);
        self.mem.w(e).store(p.wrapping_add(1), Ordering::Release);
        // After the entry (release): a follower that sees the claim gone sees the entry.
        self.mem.w(client + C_FEED).store(0, Ordering::Release);
    }

    pub(crate) fn feed_head(&self) -> u64 {
        self.mem.w(H_FEED_HEAD).load(Ordering::Acquire)
    }

    pub(crate) fn feed_read(&self, cursor: u64) -> FeedRead {
        let head = self.feed_head();
        if cursor >= head {
            return FeedRead::Empty;
        }
        if head.wrapping_sub(cursor) > self.g.feed_len {
            return FeedRead::Overflow;
        }
        let e = self.feed_entry(cursor);
        let seq = self.mem.w(e).load(Ordering::Acquire);
        if seq > cursor.wrapping_add(1) {
            return FeedRead::Overflow;
        }
        if seq < cursor.wrapping_add(1) {
            return FeedRead::Pending;
        }
        let a = self.mem.w(e + 1).load(Ordering::Relaxed);
        let version = self.mem.w(e + 2).load(Ordering::Relaxed);
        let key_hash = self.mem.w(e + 3).load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if self.mem.w(e).load(Ordering::Relaxed) != seq {
            return FeedRead::Overflow;
        }
        match ChangeKind::from_u8(a as u8) {
            Some(kind) => {
                FeedRead::Change(Change { seq: cursor, kind, slot: (a >> 8) as u32, version, key_hash })
            }
            None => FeedRead::Overflow,
        }
    }
}
