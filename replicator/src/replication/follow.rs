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
//! Positions: a write's version is its feed position + 1. Every frame carries the follower's
//! `cursor()`: the position before which every change has been emitted, so a standby that has
//! applied a frame with `pos` has every change before `pos`, and its `Ack(pos)` makes
//! `Store::wait_replicated(version)` return for every write with `version <= pos`.
//!
//! Writes still in flight (R1): a feed entry that is reserved but not written yet (its writer
//! is between its reservation and its entry: mid-operation, throttled, swapped out, stopped) is
//! *held*: the follower reads on past it, but its cursor stays at the lowest held position, so
//! no frame, heartbeat or snapshot end says the standby has that write before it was shipped.
//! When the entry is written (whenever that is, across any number of resyncs) its slot is
//! shipped and the position is released. A held position is dropped only when its writer is
//! gone by proof: no client not proven dead claims it (`Store::feed_claims`, feed.rs F1) and
//! its entry is still not readable (never written, or overwritten by a later lap): then a
//! change may be missed, so the follower resyncs. Time only paces how often a held position's
//! claim is looked at ([`CLAIM_RECHECK`]); it never decides anything.
//!
//! Snapshot (at connect, and to resync): take `c0 = feed_head`, hold every position before
//! `c0` a live writer still claims, scan every live entry, then follow the feed from `c0`. A
//! write the scan missed has a position at or after `c0` (followed) or is held (shipped when
//! its entry is written). A lapped ring (`Overflow`) means a change may be lost: resync.

use crate::replication::frame::{EntryFrame, Message};
use gardenstate::{Change, ChangeKind, FeedRead, ScanEntry, Store};
use std::collections::{BTreeMap, HashMap};
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

/// How often the claims of held positions are looked at (R1): a pace, not a verdict.
pub const CLAIM_RECHECK: Duration = Duration::from_millis(100);

/// What one look at the feed found.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    /// A change was read (and its frames, if any, emitted).
    Progress,
    /// The cursor is at the head (positions may still be held, R1).
    Empty,
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
    /// The next feed position to read.
    next: u64,
    /// Held positions (R1), below `next`, each with when its claim was last looked at.
    held: BTreeMap<u64, Instant>,
    // One allocation per shipped key, shared by both maps.
    slots: SlotKeys,
    keys: HashMap<Arc<[u8]>, u32, KeyHash>,
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
            next: 0,
            held: BTreeMap::new(),
            slots: SlotKeys::default(),
            keys: HashMap::with_hasher(KeyHash::new()),
        }
    }

    /// The feed position before which every change has been emitted: the lowest held
    /// position (R1), else the next position to read.
    pub fn cursor(&self) -> u64 {
        self.held.keys().next().map_or(self.next, |&h| h.min(self.next))
    }

    /// Emits a full snapshot (SnapshotBegin, an Entry per live entry, SnapshotEnd) and
    /// positions the follower after it. Returns the number of entries.
    pub fn snapshot(&mut self, emit: &mut Emit<'_>) -> io::Result<u64> {
        // The head first, then the claims: a write that took a position before `c0` has its
        // claim visible by then (feed.rs F1).
        let c0 = self.store.feed_head();
        let now = Instant::now();
        self.held = self.store.feed_claims().into_iter().filter(|&p| p < c0).map(|p| (p, now)).collect();
        self.next = c0;
        let pos = self.cursor();
        // Sized for the entries there now, so the map does not rehash during the scan.
        let live = self.store.stats().live_entries as usize;
        self.slots = SlotKeys::default();
        self.keys = HashMap::with_capacity_and_hasher(live, KeyHash::new());
        emit(&Message::SnapshotBegin)?;
        let mut n = 0u64;
        let mut failed = None;
        self.store
            .scan_while(|e| {
                self.remember(e.slot, &e.key);
                n += 1;
                match emit(&entry_frame(e, pos)) {
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
        emit(&Message::SnapshotEnd { pos })?;
        Ok(n)
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

    /// Looks at the held positions, then reads the feed at the next position, and emits what
    /// the changes call for.
    pub fn poll(&mut self, emit: &mut Emit<'_>) -> io::Result<Poll> {
        let released = match self.poll_held(emit)? {
            Ok(released) => released,
            Err(why) => return Ok(Poll::Resync(why)),
        };
        match self.store.feed_read(self.next) {
            FeedRead::Empty if released => Ok(Poll::Progress),
            FeedRead::Empty => Ok(Poll::Empty),
            FeedRead::Overflow => Ok(Poll::Resync(format!(
                "the change feed overwrote position {} before it was shipped (raise --feed-len, or the link is too slow)",
                self.next
            ))),
            FeedRead::Pending => {
                // Reserved, not written yet: hold it and read on (R1).
                self.held.insert(self.next, Instant::now());
                self.next += 1;
                Ok(Poll::Progress)
            }
            FeedRead::Change(c) => {
                self.next = c.seq + 1;
                self.ship(c, emit)?;
                Ok(Poll::Progress)
            }
        }
    }

    /// Ships the slot of a written entry, at the cursor (which it may have just released).
    fn ship(&mut self, c: Change, emit: &mut Emit<'_>) -> io::Result<()> {
        if c.kind != ChangeKind::Nop {
            self.reconcile(c.slot, self.cursor(), emit)?;
        }
        Ok(())
    }

    /// Ships the held positions whose entries are written now, and looks at the claims of the
    /// others every [`CLAIM_RECHECK`]. Returns whether it released any, or (`Err`) why a change
    /// may be missed.
    fn poll_held(&mut self, emit: &mut Emit<'_>) -> io::Result<Result<bool, String>> {
        let mut released = false;
        let mut claims: Option<Vec<u64>> = None;
        let held: Vec<(u64, Instant)> = self.held.iter().map(|(&p, &t)| (p, t)).collect();
        for (p, looked) in held {
            if let FeedRead::Change(c) = self.store.feed_read(p) {
                self.held.remove(&p);
                self.ship(c, emit)?;
                released = true;
                continue;
            }
            if looked.elapsed() < CLAIM_RECHECK {
                continue;
            }
            let claims = claims.get_or_insert_with(|| self.store.feed_claims());
            if claims.contains(&p) {
                self.held.insert(p, Instant::now());
                continue;
            }
            // Nobody alive claims it: its writer wrote the entry since (read it again: the
            // claim is cleared after the entry), or is dead by proof (feed.rs F1).
            match self.store.feed_read(p) {
                FeedRead::Change(c) => {
                    self.held.remove(&p);
                    self.ship(c, emit)?;
                    released = true;
                }
                _ => {
                    return Ok(Err(format!(
                        "feed position {p} was reserved by a writer that is gone (dead, or its entry \
                         was overwritten by a later lap of the feed) before its change was shipped"
                    )));
                }
            }
        }
        Ok(Ok(released))
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

    /// What a standby would hold after the frames so far, and the position it acknowledges
    /// (a frame's or heartbeat's position; a snapshot's only at its end).
    #[cfg(feature = "failpoints")]
    #[derive(Default)]
    struct Mirror {
        kv: HashMap<Vec<u8>, Vec<u8>>,
        snapshot: Option<HashMap<Vec<u8>, Vec<u8>>>,
        acked: u64,
    }

    #[cfg(feature = "failpoints")]
    impl Mirror {
        fn apply(&mut self, m: &Message) {
            match m {
                Message::SnapshotBegin => self.snapshot = Some(HashMap::new()),
                Message::SnapshotEnd { pos } => {
                    self.kv = self.snapshot.take().expect("SnapshotEnd without SnapshotBegin");
                    self.acked = self.acked.max(*pos);
                }
                Message::Entry(e) => match &mut self.snapshot {
                    Some(s) => {
                        s.insert(e.key.clone(), e.value.clone());
                    }
                    None => {
                        self.kv.insert(e.key.clone(), e.value.clone());
                        self.acked = self.acked.max(e.pos);
                    }
                },
                Message::Delete { pos, key } => {
                    self.kv.remove(key);
                    self.acked = self.acked.max(*pos);
                }
                m => panic!("unexpected {m:?}"),
            }
        }

        /// Follows as the primary does (a heartbeat with the cursor after each look, a
        /// snapshot on a resync) until `done`, checking after every frame that an
        /// acknowledgement covering `version` means the mirror holds `key = value`
        /// (what `wait_replicated` promises). Returns the resyncs seen.
        fn follow(
            &mut self,
            f: &mut Follower<'_>,
            (key, value, version): (&[u8], &[u8], u64),
            mut done: impl FnMut(&Mirror) -> bool,
        ) -> u32 {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut resyncs = 0;
            let check = |m: &Mirror| {
                if m.acked >= version {
                    assert_eq!(
                        m.kv.get(key).map(Vec::as_slice),
                        Some(value),
                        "acknowledged position {} covers version {version}, which the standby does not have",
                        m.acked
                    );
                }
            };
            while !done(self) {
                assert!(Instant::now() < deadline, "the follower never got there");
                let mut out = Vec::new();
                let p = f.poll(&mut |m: &Message| {
                    out.push(m.clone());
                    Ok(())
                });
                if let Poll::Resync(_) = p.unwrap() {
                    resyncs += 1;
                    f.snapshot(&mut |m: &Message| {
                        out.push(m.clone());
                        Ok(())
                    })
                    .unwrap();
                }
                for m in &out {
                    self.apply(m);
                    check(self);
                }
                self.acked = self.acked.max(f.cursor()); // the heartbeat
                check(self);
                std::thread::sleep(Duration::from_micros(200));
            }
            resyncs
        }
    }

    /// Spawns in `sc` a writer of `k = new` and parks it between its feed reservation and its
    /// publishing CAS. The pause releases it when dropped, so a failing test reports its
    /// failure instead of hanging on the parked thread.
    #[cfg(feature = "failpoints")]
    fn parked_writer<'s>(
        sc: &'s std::thread::Scope<'s, '_>,
        st: &'s Store,
    ) -> (std::thread::ScopedJoinHandle<'s, u64>, Arc<gardenstate::FailpointPause>) {
        let go = Arc::new(std::sync::Barrier::new(2));
        let started = go.clone();
        let writer = sc.spawn(move || {
            started.wait();
            st.set(b"k", b"new", Expiry::Never).unwrap()
        });
        let pause = gardenstate::pause_at_failpoint("update.before_publish", 1, Some(writer.thread().id()));
        go.wait();
        pause.wait_reached();
        (writer, pause)
    }

    /// A writer parked between its feed reservation and its publishing CAS (for as long as the
    /// test likes: 200 other writes and any number of the follower's looks) holds the
    /// follower's cursor below its version, yet later writes still ship; once it publishes,
    /// its change ships and the cursor passes it.
    #[cfg(feature = "failpoints")]
    #[test]
    fn a_write_stalled_after_its_reservation_is_never_acknowledged_before_it_ships() {
        let s = seg("follow-stall");
        let st = &s.1;
        st.set(b"k", b"old", Expiry::Never).unwrap();
        let mut f = Follower::new(st);
        let mut m = Mirror::default();
        f.snapshot(&mut |msg: &Message| {
            m.apply(msg);
            Ok(())
        })
        .unwrap();
        std::thread::scope(|sc| {
            let (writer, pause) = parked_writer(sc, st);
            let version = st.feed_head(); // the parked write's position is the last taken
            assert_eq!(st.feed_claims(), vec![version - 1], "the parked writer claims its position");
            // Later writes ship while the parked one holds the cursor.
            st.set(b"later", b"1", Expiry::Never).unwrap();
            let stalled = (&b"k"[..], &b"new"[..], version);
            m.follow(&mut f, stalled, |m| m.kv.contains_key(&b"later"[..]));
            assert!(f.cursor() < version, "cursor {} passed the parked write {version}", f.cursor());
            // The feed laps while it is parked: resyncs keep the cursor below it.
            for i in 0..200u32 {
                st.set(&i.to_le_bytes(), b"v", Expiry::Never).unwrap();
            }
            let resyncs = m.follow(&mut f, stalled, |m| m.kv.contains_key(&199u32.to_le_bytes()[..]));
            assert!(resyncs > 0, "the feed was lapped: a resync was due");
            assert!(f.cursor() < version, "cursor {} passed the parked write {version}", f.cursor());
            assert!(!writer.is_finished());
            // Published late: shipped, and only then acknowledged.
            pause.release();
            assert_eq!(writer.join().unwrap(), version);
            let head = st.feed_head();
            m.follow(&mut f, stalled, |m| m.acked >= head);
            assert_eq!(m.kv.get(&b"k"[..]).map(Vec::as_slice), Some(&b"new"[..]));
        });
    }

    /// A writer that publishes while a resync's snapshot is being sent: the snapshot ends
    /// below its position, and its change ships after (whether or not the scan saw it).
    #[cfg(feature = "failpoints")]
    #[test]
    fn a_write_published_during_a_resync_is_shipped_before_it_is_acknowledged() {
        let s = seg("follow-midsync");
        let st = &s.1;
        for i in 0..20u32 {
            st.set(&i.to_le_bytes(), b"v", Expiry::Never).unwrap();
        }
        st.set(b"k", b"old", Expiry::Never).unwrap();
        std::thread::scope(|sc| {
            let (writer, pause) = parked_writer(sc, st);
            let version = st.feed_head();
            let mut f = Follower::new(st);
            let mut m = Mirror::default();
            let mut released = false;
            let mut out = Vec::new();
            f.snapshot(&mut |msg: &Message| {
                if !released && matches!(msg, Message::Entry(_)) {
                    // Mid-scan: the writer publishes and records its change.
                    released = true;
                    pause.release();
                    while !writer.is_finished() {
                        std::thread::yield_now();
                    }
                }
                out.push(msg.clone());
                Ok(())
            })
            .unwrap();
            assert!(released);
            let end = out.iter().find_map(|msg| match msg {
                Message::SnapshotEnd { pos } => Some(*pos),
                _ => None,
            });
            assert_eq!(end, Some(version - 1), "the snapshot ended past a write in flight");
            for msg in &out {
                m.apply(msg);
            }
            let head = st.feed_head();
            m.follow(&mut f, (&b"k"[..], &b"new"[..], version), |m| m.acked >= head);
            assert_eq!(m.kv.get(&b"k"[..]).map(Vec::as_slice), Some(&b"new"[..]));
        });
    }
}
