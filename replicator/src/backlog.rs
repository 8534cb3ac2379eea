//! The primary's replication backlog: the last frames it shipped, so a standby that lost its
//! connection for a moment resumes where it was instead of taking a full snapshot (Redis's
//! partial resync).
//!
//! Invariant B1: the backlog holds, in stream order, every Entry and Delete frame the
//! follower emitted with a position above `floor`, and the follower has emitted nothing
//! since. A standby that has applied every change before `p` (its acknowledged position),
//! with `floor <= p <= cursor`, lacks exactly the changes in the frames with a position above
//! `p`: replaying them, then following on, brings it to the primary's state, because frames
//! carry current values and deletes (applying one twice is harmless) in the follower's order.
//! A snapshot restarts the follower's slot maps, so the backlog is cleared and `floor` set to
//! the snapshot's position; evicting the oldest frame (the size cap) raises `floor` to its
//! position.

use std::collections::VecDeque;

/// See the module comment.
#[derive(Debug)]
pub struct Backlog {
    frames: VecDeque<(u64, Vec<u8>)>,
    bytes: usize,
    cap: usize,
    floor: u64,
}

impl Backlog {
    /// An empty backlog of at most `cap` bytes of frames; nothing can resume from it until a
    /// snapshot sets its floor.
    pub fn new(cap: usize) -> Backlog {
        Backlog { frames: VecDeque::new(), bytes: 0, cap, floor: u64::MAX }
    }

    /// After a snapshot at position `pos`: empty, and a standby that has `pos` can resume.
    pub fn reset(&mut self, pos: u64) {
        self.frames.clear();
        self.bytes = 0;
        self.floor = pos;
    }

    /// Records a shipped Entry or Delete frame (its encoded bytes) at position `pos`.
    pub fn push(&mut self, pos: u64, frame: &[u8]) {
        if frame.len() > self.cap {
            // Larger than the whole backlog: nobody before it can resume.
            self.reset(pos);
            return;
        }
        while self.bytes + frame.len() > self.cap {
            let Some((p, f)) = self.frames.pop_front() else { break };
            self.bytes -= f.len();
            self.floor = self.floor.max(p);
        }
        self.bytes += frame.len();
        self.frames.push_back((pos, frame.to_vec()));
    }

    /// The frames a standby at position `p` lacks, if the backlog still has them all
    /// (`cursor` is the follower's position).
    pub fn since(&self, p: u64, cursor: u64) -> Option<impl Iterator<Item = &[u8]>> {
        (self.floor <= p && p <= cursor)
            .then(|| self.frames.iter().filter(move |(pos, _)| *pos > p).map(|(_, f)| f.as_slice()))
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn got(b: &Backlog, p: u64, cursor: u64) -> Option<Vec<u8>> {
        b.since(p, cursor).map(|it| it.map(|f| f[0]).collect())
    }

    #[test]
    fn a_standby_resumes_only_inside_the_window_and_gets_exactly_what_it_lacks() {
        let mut b = Backlog::new(4);
        assert_eq!(got(&b, 0, 0), None, "nothing before the first snapshot");
        b.reset(10);
        assert_eq!(got(&b, 10, 10), Some(vec![]));
        assert_eq!(got(&b, 9, 10), None, "before the snapshot");
        for (pos, tag) in [(11, 1u8), (12, 2), (12, 3), (14, 4)] {
            b.push(pos, &[tag]);
        }
        assert_eq!(got(&b, 10, 14), Some(vec![1, 2, 3, 4]));
        assert_eq!(got(&b, 12, 14), Some(vec![4]));
        assert_eq!(got(&b, 15, 14), None, "ahead of the primary");
        // The cap evicts the oldest frame: a standby at 10 can no longer resume, one at 11 can.
        b.push(15, &[5]);
        assert_eq!(got(&b, 10, 15), None);
        assert_eq!(got(&b, 11, 15), Some(vec![2, 3, 4, 5]));
        assert_eq!(b.bytes(), 4);
        // A frame larger than the cap empties it and moves the floor past it.
        b.push(16, &[6; 9]);
        assert_eq!(got(&b, 15, 16), None);
        assert_eq!(got(&b, 16, 16), Some(vec![]));
    }
}
