//! The standby's side of replication, without the network: applies the primary's frames to
//! the local segment, in stream order, and tracks the feed position it has applied.
//!
//! A snapshot (SnapshotBegin .. SnapshotEnd) carries every live entry of the primary, and the
//! standby must end with exactly those: every local entry the snapshot did not carry is
//! stale and is deleted at SnapshotEnd. The stale candidates are the keys the segment held
//! when the snapshot began (`Snapshot::stale`, read by one scan at SnapshotBegin); each key
//! the snapshot carries (an Entry) or removes (a Delete) is taken out of the set; what is
//! left at SnapshotEnd is deleted. This is exact (keys, not hashes: nothing is deleted
//! wrongly, nothing stale survives) because during a snapshot only this applier writes the
//! segment (it is in `WriteMode::Replica`; local workers get `ReadOnly`), so every key the
//! segment holds at SnapshotEnd was either there at SnapshotBegin or written by a frame of
//! the snapshot. A fresh standby (the common resync: an empty segment) scans an empty index
//! once and keeps no set at all; before, every snapshot key was copied into a set and the
//! whole segment (values too) scanned again at SnapshotEnd.
//!
//! Positions: a frame's `pos` says every change before it was sent. Entries of a snapshot
//! all carry the snapshot's position, which is reached only at SnapshotEnd, so no position
//! is acknowledged from inside a snapshot.

use crate::operations::log;
use crate::replication::follow::KeyHash;
use crate::replication::frame::Message;
use gardenstate::{LockInfo, Store};
use std::collections::HashSet;
use std::time::Duration;

/// The snapshot being received.
#[derive(Debug)]
struct Snapshot {
    /// Keys the segment held at SnapshotBegin and no frame of the snapshot has written or
    /// removed yet.
    stale: HashSet<Vec<u8>, KeyHash>,
    entries: u64,
}

/// Applies frames to a segment.
#[derive(Debug)]
pub struct Applier<'s> {
    store: &'s Store,
    name: &'s str,
    /// The primary's history, adopted at SnapshotEnd (0 marks the replica incomplete while a
    /// snapshot loads: such a standby is never promoted automatically, F1 in `node`).
    history: u64,
    snapshot: Option<Snapshot>,
    applied: u64,
}

impl<'s> Applier<'s> {
    /// An applier of frames into `store` (the segment `name`, for messages) from a primary of
    /// `history`, resuming at `applied` (0 unless the primary resumed a stream).
    pub fn new(store: &'s Store, name: &'s str, history: u64, applied: u64) -> Applier<'s> {
        Applier { store, name, history, snapshot: None, applied }
    }

    /// Whether a snapshot is being received.
    pub fn in_snapshot(&self) -> bool {
        self.snapshot.is_some()
    }

    /// The feed position before which every change has been applied (what to acknowledge).
    pub fn applied(&self) -> u64 {
        self.applied
    }

    fn engine(&self, what: &str, e: gardenstate::Error) -> String {
        format!("{what} in segment {}: {e}", self.name)
    }

    /// Applies one frame from the primary.
    pub fn apply(&mut self, m: Message) -> Result<(), String> {
        match m {
            Message::SnapshotBegin => {
                log::info("receiving a snapshot");
                self.store.set_history_id(0);
                let mut stale = HashSet::with_hasher(KeyHash::new());
                self.store
                    .scan(|e| {
                        stale.insert(e.key);
                    })
                    .map_err(|err| self.engine("scanning", err))?;
                self.snapshot = Some(Snapshot { stale, entries: 0 });
            }
            Message::Entry(e) => {
                let ms = Duration::from_millis;
                let lock = e.lock.map(|(lock_id, age)| LockInfo { lock_id, age: ms(age) });
                self.store
                    .apply_replicated(&e.key, &e.value, e.ttl_left_ms.map(ms), e.sliding_ms.map(ms), lock)
                    .map_err(|err| self.engine("applying an entry", err))?;
                match self.snapshot.as_mut() {
                    Some(s) => {
                        if !s.stale.is_empty() {
                            s.stale.remove(&e.key);
                        }
                        s.entries += 1;
                    }
                    None => self.applied = self.applied.max(e.pos),
                }
            }
            Message::Delete { pos, key } => {
                self.store
                    .apply_replicated_delete(&key)
                    .map_err(|err| self.engine("applying a delete", err))?;
                match self.snapshot.as_mut() {
                    Some(s) => {
                        s.stale.remove(&key);
                    }
                    None => self.applied = self.applied.max(pos),
                }
            }
            Message::SnapshotEnd { pos } => {
                let Some(s) = self.snapshot.take() else {
                    return Err("SnapshotEnd without SnapshotBegin".into());
                };
                for k in &s.stale {
                    self.store
                        .apply_replicated_delete(k)
                        .map_err(|err| self.engine("removing a stale entry", err))?;
                }
                log::info(&format!(
                    "snapshot applied: {} entries, {} stale local entries removed; streaming from position {pos}",
                    s.entries,
                    s.stale.len()
                ));
                self.applied = self.applied.max(pos);
                self.store.set_history_id(self.history);
            }
            Message::Heartbeat { pos } => {
                if self.snapshot.is_none() {
                    self.applied = self.applied.max(pos);
                }
            }
            m => return Err(format!("unexpected {} frame from the primary", m.name())),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::follow::scratch::seg;
    use crate::replication::frame::EntryFrame;
    use gardenstate::Expiry;

    fn entry(key: &[u8], value: &[u8], pos: u64) -> Message {
        Message::Entry(EntryFrame {
            pos,
            key: key.to_vec(),
            value: value.to_vec(),
            ttl_left_ms: None,
            sliding_ms: None,
            lock: None,
        })
    }
    fn keys(s: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        s.scan(|e| out.push((e.key, e.value))).unwrap();
        out.sort();
        out
    }

    #[test]
    fn a_snapshot_leaves_exactly_its_entries_and_acknowledges_only_its_end() {
        let s = seg("apply-exact");
        for k in [b"a", b"b", b"c", b"e"] {
            s.1.set(k, b"old", Expiry::Never).unwrap();
        }
        let mut a = Applier::new(&s.1, &s.0, 77, 0);
        a.apply(Message::Heartbeat { pos: 3 }).unwrap();
        assert_eq!(a.applied(), 3);
        a.apply(Message::SnapshotBegin).unwrap();
        assert_eq!(s.1.history_id(), 0, "a replica is incomplete while a snapshot loads");
        a.apply(entry(b"a", b"new", 9)).unwrap();
        a.apply(entry(b"d", b"new", 9)).unwrap();
        a.apply(Message::Delete { pos: 9, key: b"e".to_vec() }).unwrap();
        a.apply(Message::Heartbeat { pos: 9 }).unwrap();
        assert_eq!(a.applied(), 3, "nothing inside a snapshot is acknowledged");
        a.apply(Message::SnapshotEnd { pos: 9 }).unwrap();
        assert_eq!(a.applied(), 9);
        assert_eq!(s.1.history_id(), 77);
        assert_eq!(keys(&s.1), vec![(b"a".to_vec(), b"new".to_vec()), (b"d".to_vec(), b"new".to_vec())]);
        // After the snapshot, frames apply and advance the position one by one.
        a.apply(entry(b"b", b"later", 10)).unwrap();
        a.apply(Message::Delete { pos: 11, key: b"a".to_vec() }).unwrap();
        assert_eq!(a.applied(), 11);
        assert_eq!(keys(&s.1), vec![(b"b".to_vec(), b"later".to_vec()), (b"d".to_vec(), b"new".to_vec())]);
        assert!(a.apply(Message::SnapshotEnd { pos: 12 }).is_err());
    }
}
