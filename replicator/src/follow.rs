//! The primary's side of replication, without the network: a snapshot of the segment, then a
//! follower of its change feed that turns each change into the frames that bring a standby to
//! the slot's current state.
//!
//! A feed entry names only the index slot that changed, so the follower re-reads the slot
//! (`Store::entry_at`) and ships what is there now: the current value is at least as new as
//! the change, and a burst of writes to one key ships few frames. To ship deletes, the follower
//! remembers which key it last shipped for each slot (`slots`, and its inverse `keys`): a slot
//! that now holds another key, or nothing, means the old key is gone. A key lives in one slot
//! at a time, so when a key shows up in a new slot (deleted and re-inserted elsewhere, with the
//! feed entries read in another order) its old slot's mapping is dropped without a Delete.
//!
//! Positions: a write's version is its feed position + 1. Every frame carries the cursor after
//! the change it came from, so a standby that has applied a frame with `pos` has every change
//! before `pos`, and its `Ack(pos)` makes `Store::wait_replicated(version)` return for every
//! write with `version <= pos`.
//!
//! Snapshot (at connect, and to resync): take `c0 = feed_head`, wait until every feed entry
//! before `c0` is complete (so each write with a position before `c0` is published and the
//! scan sees it or something newer), scan every live entry, then follow the feed from `c0`.
//! Writers never stop: a write the scan missed has a position at or after `c0` and is
//! followed. A feed entry still pending after [`PENDING_WAIT`] (its writer died
//! mid-operation) or a lapped ring (`Overflow`) means a change may be lost: resync.

use crate::frame::{EntryFrame, Message};
use gardenstate::{ChangeKind, FeedRead, ScanEntry, Store};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// A hasher for the replicator's maps and sets of keys: one-shot xxh3 with a random per-map
/// seed (keys come from clients, so a fixed seed would invite collision floods), far cheaper
/// than SipHash on a million keys.
#[derive(Debug, Clone, Copy)]
pub struct KeyHash(u64);

impl KeyHash {
    pub fn new() -> KeyHash {
        KeyHash(RandomState::new().hash_one(0x6764_735f_6b65_7973_u64))
    }
}

impl Default for KeyHash {
    fn default() -> KeyHash {
        KeyHash::new()
    }
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.0)
    }
}

/// See [`KeyHash`].
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u64(&mut self, n: u64) {
        // A key's length prefix (`write_usize`) comes here. A multiply-xorshift mix
        // (splitmix64's finalizer) of the seed and n.
        let mut z = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.0 = z ^ (z >> 31);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64)
    }
}

/// How long a pending feed entry is waited for before the follower resyncs.
pub const PENDING_WAIT: Duration = Duration::from_millis(100);

/// What one look at the feed found.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    /// A change was read (and its frames, if any, emitted).
    Progress,
    /// The cursor is at the head.
    Empty,
    /// The entry at the cursor is not written yet; look again soon.
    Pending,
    /// A change may have been missed: take a new snapshot. The string says why.
    Resync(String),
}

/// Slot -> the key last shipped from it: a table indexed by slot, in chunks allocated on
/// first use. A snapshot's scan goes slot by slot, so it fills the table in order (no hashing,
/// no cache miss per key as a hash map had); a sparse segment pays only for the chunks its
/// entries fall in.
#[derive(Debug, Default)]
struct SlotKeys {
    chunks: Vec<Option<Chunk>>,
}

/// [`SLOT_CHUNK`] consecutive slots' keys.
type Chunk = Box<[Option<Arc<[u8]>>]>;

const SLOT_CHUNK: usize = 512;

impl SlotKeys {
    fn get(&self, slot: u32) -> Option<&Arc<[u8]>> {
        let (c, i) = (slot as usize / SLOT_CHUNK, slot as usize % SLOT_CHUNK);
        self.chunks.get(c)?.as_ref()?[i].as_ref()
    }

    fn insert(&mut self, slot: u32, key: Arc<[u8]>) -> Option<Arc<[u8]>> {
        let (c, i) = (slot as usize / SLOT_CHUNK, slot as usize % SLOT_CHUNK);
        if self.chunks.len() <= c {
            self.chunks.resize_with(c + 1, || None);
        }
        let chunk = self.chunks[c].get_or_insert_with(|| vec![None; SLOT_CHUNK].into_boxed_slice());
        chunk[i].replace(key)
    }

    fn remove(&mut self, slot: u32) -> Option<Arc<[u8]>> {
        let (c, i) = (slot as usize / SLOT_CHUNK, slot as usize % SLOT_CHUNK);
        self.chunks.get_mut(c)?.as_mut()?[i].take()
    }
}

/// The feed follower and its slot map.
#[derive(Debug)]
pub struct Follower<'a> {
    store: &'a Store,
    cursor: u64,
    // One allocation per shipped key, shared by both maps.
    slots: SlotKeys,
    keys: HashMap<Arc<[u8]>, u32, KeyHash>,
    pending_since: Option<Instant>,
}

/// Where frames go (a buffered socket in the daemon, a vector in tests).
pub type Emit<'e> = dyn FnMut(&Message) -> io::Result<()> + 'e;

fn engine(e: gardenstate::Error) -> io::Error {
    io::Error::other(e)
}

/// The frame that ships `e`.
pub fn entry_frame(e: ScanEntry, pos: u64) -> Message {
    let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
    Message::Entry(EntryFrame {
        pos,
        ttl_left_ms: e.meta.ttl_left.map(ms),
        sliding_ms: e.meta.sliding.map(ms),
        lock: e.meta.lock.map(|l| (l.lock_id, ms(l.age))),
        key: e.key,
        value: e.value,
    })
}

impl<'a> Follower<'a> {
    pub fn new(store: &'a Store) -> Follower<'a> {
        Follower {
            store,
            cursor: 0,
            slots: SlotKeys::default(),
            keys: HashMap::with_hasher(KeyHash::new()),
            pending_since: None,
        }
    }

    /// The feed position before which every change has been emitted.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Emits a full snapshot (SnapshotBegin, an Entry per live entry, SnapshotEnd) and
    /// positions the follower after it. Returns the number of entries.
    pub fn snapshot(&mut self, emit: &mut Emit<'_>) -> io::Result<u64> {
        let c0 = self.settled_head();
        // Sized for the entries there now, so the map does not rehash during the scan.
        let live = self.store.stats().live_entries as usize;
        self.slots = SlotKeys::default();
        self.keys = HashMap::with_capacity_and_hasher(live, KeyHash::new());
        self.pending_since = None;
        emit(&Message::SnapshotBegin)?;
        let mut n = 0u64;
        let mut failed = None;
        self.store
            .scan_while(|e| {
                self.remember(e.slot, &e.key);
                n += 1;
                match emit(&entry_frame(e, c0)) {
                    Ok(()) => true,
                    Err(err) => {
                        failed = Some(err);
                        false
                    }
                }
            })
            .map_err(engine)?;
        if let Some(e) = failed {
            return Err(e);
        }
        emit(&Message::SnapshotEnd { pos: c0 })?;
        self.cursor = c0;
        Ok(n)
    }

    /// The feed head, once every entry before it is complete (or [`PENDING_WAIT`] has passed:
    /// a writer that died mid-operation never completes its entry; what it published, if
    /// anything, the scan sees).
    fn settled_head(&self) -> u64 {
        let head = self.store.feed_head();
        let from = head.saturating_sub(self.store.info().feed_len);
        let deadline = Instant::now() + PENDING_WAIT;
        for p in from..head {
            while self.store.feed_read(p) == FeedRead::Pending && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        head
    }

    fn remember(&mut self, slot: u32, key: &[u8]) {
        let key: Arc<[u8]> = Arc::from(key);
        if let Some(old) = self.slots.insert(slot, key.clone()) {
            if old != key && self.keys.get(&old) == Some(&slot) {
                self.keys.remove(&old);
            }
        }
        if let Some(prev) = self.keys.insert(key, slot) {
            if prev != slot {
                self.slots.remove(prev);
            }
        }
    }

    /// Reads the feed at the cursor and emits what the change calls for.
    pub fn poll(&mut self, emit: &mut Emit<'_>) -> io::Result<Poll> {
        match self.store.feed_read(self.cursor) {
            FeedRead::Empty => Ok(Poll::Empty),
            FeedRead::Overflow => Ok(Poll::Resync(format!(
                "the change feed overwrote position {} before it was shipped (raise --feed-len, or the link is too slow)",
                self.cursor
            ))),
            FeedRead::Pending => {
                let since = *self.pending_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= PENDING_WAIT {
                    return Ok(Poll::Resync(format!(
                        "feed position {} stayed unwritten for {PENDING_WAIT:?} (a writer died mid-operation?)",
                        self.cursor
                    )));
                }
                Ok(Poll::Pending)
            }
            FeedRead::Change(c) => {
                self.pending_since = None;
                let pos = c.seq + 1;
                if c.kind != ChangeKind::Nop {
                    self.reconcile(c.slot, pos, emit)?;
                }
                self.cursor = pos;
                Ok(Poll::Progress)
            }
        }
    }

    fn reconcile(&mut self, slot: u32, pos: u64, emit: &mut Emit<'_>) -> io::Result<()> {
        let now = self.store.entry_at(slot).map_err(engine)?;
        let shipped = self.slots.get(slot);
        let same_key = matches!((shipped, &now), (Some(k), Some(e)) if **k == e.key[..]);
        if !same_key {
            if let Some(old) = self.slots.remove(slot) {
                if self.keys.get(&old) == Some(&slot) {
                    self.keys.remove(&old);
                    emit(&Message::Delete { pos, key: old.to_vec() })?;
                }
            }
        }
        if let Some(e) = now {
            // The maps are inverses: a slot still shipping its key needs no update.
            if !same_key {
                self.remember(slot, &e.key);
            }
            emit(&entry_frame(e, pos))?;
        }
        Ok(())
    }
}

/// A scratch segment for the unit tests here and in `apply`.
#[cfg(test)]
pub(crate) mod scratch {
    use gardenstate::{Options, Store};

    /// A segment's name and handle; the segment is destroyed when this is dropped.
    pub(crate) struct Seg(pub String, pub Store);

    impl Drop for Seg {
        fn drop(&mut self) {
            let _ = Store::destroy(&self.0);
        }
    }

    /// A fresh small segment (4 MiB, 1,024 entries, a 64-entry feed) named
    /// `gds-<tag>-<pid>`.
    pub(crate) fn seg(tag: &str) -> Seg {
        let name = format!("gds-{tag}-{}", std::process::id());
        let _ = Store::destroy(&name);
        let opts = Options { capacity_bytes: 4 << 20, max_entries: 1024, feed_len: 64, ..Options::default() };
        Seg(name.clone(), Store::create(&name, &opts).unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::scratch::seg;
    use super::*;
    use gardenstate::Expiry;

    fn drain(f: &mut Follower<'_>) -> (Vec<Message>, Poll) {
        let mut out = Vec::new();
        loop {
            let p = f.poll(&mut |m: &Message| {
                out.push(m.clone());
                Ok(())
            });
            match p.unwrap() {
                Poll::Progress => {}
                other => return (out, other),
            }
        }
    }

    #[test]
    fn a_snapshot_then_changes_ship_current_values_and_deletes() {
        let s = seg("follow-basic");
        s.1.set(b"a", b"1", Expiry::Never).unwrap();
        s.1.set(b"b", b"2", Expiry::After(Duration::from_secs(60))).unwrap();
        let mut f = Follower::new(&s.1);
        let mut snap = Vec::new();
        let n = f
            .snapshot(&mut |m: &Message| {
                snap.push(m.clone());
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(snap.first(), Some(&Message::SnapshotBegin));
        assert_eq!(snap.last(), Some(&Message::SnapshotEnd { pos: 2 }));
        s.1.set(b"a", b"3", Expiry::Never).unwrap();
        s.1.delete(b"b").unwrap();
        let v = s.1.set(b"c", b"4", Expiry::Never).unwrap();
        let (msgs, p) = drain(&mut f);
        assert_eq!(p, Poll::Empty);
        assert_eq!(f.cursor(), v);
        let summary: Vec<(String, Vec<u8>, u64)> = msgs
            .iter()
            .map(|m| match m {
                Message::Entry(e) => ("set".into(), e.key.clone(), e.pos),
                Message::Delete { key, pos } => ("del".into(), key.clone(), *pos),
                m => panic!("unexpected {m:?}"),
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("set".into(), b"a".to_vec(), 3),
                ("del".into(), b"b".to_vec(), 4),
                ("set".into(), b"c".to_vec(), 5)
            ]
        );
    }

    #[test]
    fn the_slot_table_grows_by_chunks_and_ignores_slots_it_never_held() {
        let mut t = SlotKeys::default();
        assert_eq!(t.get(u32::MAX), None);
        assert_eq!(t.remove(u32::MAX), None);
        let k = |b: &[u8]| -> Arc<[u8]> { Arc::from(b) };
        assert_eq!(t.insert(3, k(b"a")), None);
        assert_eq!(t.insert(SLOT_CHUNK as u32 * 5 + 1, k(b"b")), None);
        assert_eq!(t.chunks.iter().filter(|c| c.is_some()).count(), 2, "only touched chunks exist");
        assert_eq!(t.insert(3, k(b"c")).as_deref(), Some(&b"a"[..]));
        assert_eq!(t.get(3).map(|r| &r[..]), Some(&b"c"[..]));
        assert_eq!(t.get(4), None);
        assert_eq!(t.remove(SLOT_CHUNK as u32 * 5 + 1).as_deref(), Some(&b"b"[..]));
        assert_eq!(t.get(SLOT_CHUNK as u32 * 5 + 1), None);
    }

    #[test]
    fn a_lapped_feed_asks_for_a_resync() {
        let s = seg("follow-lap");
        let mut f = Follower::new(&s.1);
        f.snapshot(&mut |_: &Message| Ok(())).unwrap();
        for i in 0..200u32 {
            s.1.set(&i.to_le_bytes(), b"v", Expiry::Never).unwrap();
        }
        assert!(matches!(drain(&mut f).1, Poll::Resync(_)));
    }
}
