//! The primary's replication backlog: the last frames it shipped, so a standby that lost its
//! connection for a moment resumes where it was instead of taking a full snapshot (Redis's
//! partial resync).
//!
//! Invariant B1: the backlog holds, in stream order, every Entry and Delete frame the
//! follower emitted with a position at or above `floor`, and the follower has emitted nothing
//! since. Frame positions never decrease, but several frames share one (a change's Delete and
//! Entry, and every frame shipped while a position is held, follow.rs R1), so a standby whose
//! acknowledged position is `p` may lack frames carrying `p` itself. With `floor <= p <=
//! cursor` it lacks at most the frames with a position at or above `p`: replaying them (a
//! suffix of the stream, some perhaps applied already: applying a frame again, in order, is
//! harmless since frames carry current values and deletes), then following on, brings it to
//! the primary's state. A snapshot restarts the follower's slot maps, so the backlog is
//! cleared and `floor` set to the snapshot's position; evicting the oldest frame (the size
//! cap) raises `floor` past its position.

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
            // Larger than the whole backlog: nobody at or before its position can resume.
            self.reset(pos + 1);
            return;
        }
        while self.bytes + frame.len() > self.cap {
            let Some((p, f)) = self.frames.pop_front() else { break };
            self.bytes -= f.len();
            self.floor = self.floor.max(p + 1);
        }
        self.bytes += frame.len();
        self.frames.push_back((pos, frame.to_vec()));
    }

    /// The frames a standby at position `p` lacks, if the backlog still has them all
    /// (`cursor` is the follower's position).
    pub fn since(&self, p: u64, cursor: u64) -> Option<impl Iterator<Item = &[u8]>> {
        (self.floor <= p && p <= cursor)
            .then(|| self.frames.iter().filter(move |(pos, _)| *pos >= p).map(|(_, f)| f.as_slice()))
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
        // A standby at 12 may have applied only one of the two frames carrying 12.
        assert_eq!(got(&b, 12, 14), Some(vec![2, 3, 4]));
        assert_eq!(got(&b, 15, 14), None, "ahead of the primary");
        // The cap evicts the oldest frame (11): a standby at 11 can no longer resume, one at
        // 12 can.
        b.push(15, &[5]);
        assert_eq!(got(&b, 11, 15), None);
        assert_eq!(got(&b, 12, 15), Some(vec![2, 3, 4, 5]));
        assert_eq!(b.bytes(), 4);
        // A frame larger than the cap empties it and moves the floor past it.
        b.push(16, &[6; 9]);
        assert_eq!(got(&b, 16, 16), None);
        assert_eq!(got(&b, 17, 17), Some(vec![]));
    }
}
