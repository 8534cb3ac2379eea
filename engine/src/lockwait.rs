//! Lock waits woken directly (`Store::lock_wait`): a waiter sleeps on a shared futex word of
//! the segment, and the write that releases a session lock wakes it.
//!
//! The words: `LOCK_WAIT_WORDS` header words from `H_LOCK_WAIT` (layout.rs), a key's word
//! picked by bits 16..22 of its hash (the index uses the high bits for the bucket and the low
//! 16 for the tag). A word is `[0:32 | seq:31 | waiting:1]`; its low half is the futex word
//! the kernel compares (its first 4 bytes on little-endian, its last 4 on big-endian).
//! Futexes are shared (no FUTEX_PRIVATE_FLAG): the kernel keys them by the file page, the
//! same for every process mapping the segment. Several keys share a word: a release wakes
//! every sleeper of its word, and those waiting on another key find it still locked and
//! sleep again (a spurious wakeup, which the protocol allows anyway).
//!
//! The protocol:
//! - waiter: `arm` (set `waiting` with a SeqCst RMW, then a SeqCst fence; remember the low
//!   half `v` it left), then try the lock (a full `Store::lock`: it reads the key's index slot
//!   and record); if it is still held, `sleep` (FUTEX_WAIT on `v`, bounded by the wait's
//!   deadline, the lock's takeover age and, when the owner is another process, the next
//!   liveness re-check), then start over from `arm`;
//! - releaser (any write that publishes the key's record without its lock, or removes a
//!   locked record: unlock, set_and_unlock, set, delete, expiry, eviction, the replicator's
//!   apply): after its publishing CAS, a SeqCst fence, then load the word; if `waiting` is
//!   clear, done (no syscall: the common case, nobody waits); else CAS it to `seq + 1` with
//!   `waiting` clear, then FUTEX_WAKE every sleeper of the word.
//!
//! L1 (no lost wakeup). A waiter that saw the lock held never sleeps through its release.
//! The waiter's arm and the releaser's publish are each followed by a SeqCst fence, and each
//! side then reads what the other wrote (Dekker): either the waiter's lock attempt sees the
//! release (and it does not sleep), or the releaser's load sees `waiting` set by this arm or
//! a later value of the word. In the first case of the second, the releaser changes the low
//! half (bumps `seq`) before it wakes; in the second, someone else's CAS cleared `waiting`
//! after the arm, which also bumped `seq`, and that releaser wakes too. Either way the word
//! no longer holds `v` once the wake is issued: the waiter's FUTEX_WAIT either starts after
//! the change (the kernel compares `v` under its bucket lock and returns EAGAIN at once) or
//! is queued before the FUTEX_WAKE that follows the change, and is woken. `seq` coming back
//! to the same 31 bits needs 2^31 wakes of one word between a waiter's arm and its sleep, and
//! even then the sleep is bounded (the timeout); that is not what L1 rests on.
//!
//! L2 (nothing left behind). A waiter holds no client slot, no count and nothing of the key
//! while it sleeps: killed (SIGKILL) or stalled at any instruction, the most it leaves is
//! `waiting` set on its word. The next release of any key of that word then clears it and
//! pays one FUTEX_WAKE that wakes nobody: a stale bit costs one syscall once, and is gone.
//! No other process ever waits for a waiter. A release never waits either: the CAS loop only
//! retries when another releaser or waiter changed the word, and ends once `waiting` is clear.
//! A stray write into a word (damage) is as harmless: a set `waiting` bit costs one wasted
//! wake, a changed `seq` one spurious wakeup, and the next wake's CAS writes the high half
//! back to 0 (the kernel compares the low half only).
//!
//! Owner death and takeover by age cannot wake anyone (a dead process writes nothing), so a
//! waiter bounds each sleep by the lock's takeover age and, when the owner is another
//! process, by `OWNER_RECHECK`, after which its lock attempt judges the owner with the
//! engine's rules (`os::liveness`: only a proven death frees the lock early).

use crate::layout::{H_LOCK_WAIT, LOCK_WAIT_WORDS};
use crate::os;
use crate::segment::Segment;
use crate::sync::{AtomicU64, Ordering, fence};
use std::time::Duration;

/// The `waiting` bit of a lock-wait word.
pub(crate) const WAITING: u64 = 1;
/// The futex half of a lock-wait word (the high half stays 0).
const LOW: u64 = 0xffff_ffff;

/// How often a waiter on a lock held by another process re-checks that process's liveness.
pub(crate) const OWNER_RECHECK: Duration = Duration::from_millis(50);

impl Segment {
    fn lock_wait_word(&self, key_hash: u64) -> &AtomicU64 {
        self.mem.w(H_LOCK_WAIT + (key_hash >> 16) as usize % LOCK_WAIT_WORDS)
    }

    /// A waiter on the lock of the key of `key_hash` announces itself, before it looks at the
    /// lock. Returns the futex value to sleep on (L1).
    pub(crate) fn arm_lock_wait(&self, key_hash: u64) -> u32 {
        let v = self.lock_wait_word(key_hash).fetch_or(WAITING, Ordering::SeqCst) | WAITING;
        fence(Ordering::SeqCst);
        (v & LOW) as u32
    }

    /// Sleeps until a release of a key of the same word, a spurious wakeup, or `nap`; returns
    /// at once if a release came after `arm_lock_wait` returned `armed`.
    pub(crate) fn sleep_lock_wait(&self, key_hash: u64, armed: u32, nap: Duration) {
        os::futex_wait(self.lock_wait_word(key_hash), armed, nap);
    }

    /// Wakes the waiters of the key of `key_hash`: called after the CAS that published its
    /// record without a lock, or removed a locked one. No syscall unless someone armed the
    /// word since the last wake (L1, L2).
    pub(crate) fn wake_lock_waiters(&self, key_hash: u64) {
        fence(Ordering::SeqCst);
        let w = self.lock_wait_word(key_hash);
        let mut v = w.load(Ordering::Relaxed);
        while v & WAITING != 0 {
            // `waiting` is the low bit: + 1 clears it and carries into `seq`.
            match w.compare_exchange_weak(v, (v + 1) & LOW, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => {
                    os::futex_wake(w);
                    return;
                }
                Err(now) => v = now,
            }
        }
    }
}
