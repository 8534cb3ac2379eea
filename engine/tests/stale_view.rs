//! A conditional write, lock or delete never succeeds on a view that is not current, however
//! long its writer stalls (issue 13 item 2; layout.rs `slot`, heap.rs H5).
//!
//! The index slot word carries only 14 bits of its block's generation, and a writer's
//! publishing CAS compares that word alone. A writer parked between its view and its CAS
//! across exactly k x 16,384 plain sets of its key (the setter's two blocks taking turns, so
//! the viewed block comes back to the same slot word) used to publish over a record it never
//! saw: `compare_and_set` returned Ok, the version went backwards, the displaced record
//! leaked. Each test parks one writer in-process (`pause_at_failpoint`) either after its
//! view (before it journals the block it viewed: `update.after_view`) or right before its
//! publishing CAS (`update.before_publish`, `delete.after_journal`), runs 2^14, 2^15 or a
//! random multiple of 2^14 sets of the key from another thread, releases it, and checks:
//! the write fails as it must (or, for lock and delete, acts on the current record), the
//! version never went backwards, `check` is clean and no byte is left in use once the key
//! is deleted.
//!
//! Run: `cargo test -p gardenstate --features failpoints --test stale_view`; `GDS_SEED`
//! replays the random count.

mod common;
use common::{Rng, Seg, seed_from_env};
use gardenstate::{Error, Expiry, Options, Store, pause_at_failpoint};
use std::time::Duration;

const KEY: &[u8] = b"session";
/// Sets that bring the viewed block back to the same slot word on the old layout.
const WRAP: u64 = 1 << 14;

fn opts() -> Options {
    Options {
        capacity_bytes: 1 << 20,
        max_entries: 1024,
        max_key: 16,
        max_value: 256,
        max_clients: 16,
        feed_len: 1024,
        ..Options::default()
    }
}

/// The writes under test, each stalled on a view of the key's first record.
#[derive(Debug, Clone, Copy)]
enum Write {
    CompareAndSet,
    SetAndUnlock,
    Lock,
    Delete,
}

/// The counts of plain sets each stall lasts: 2^14, 2^15, and a random multiple of 2^14
/// (the counts that wrapped the old slot word).
fn counts() -> [u64; 3] {
    let seed = seed_from_env("GDS_SEED");
    let k = Rng::new(seed).range(3, 6);
    eprintln!("stale_view: GDS_SEED={seed} (random count {k} x {WRAP})");
    [WRAP, 2 * WRAP, k * WRAP]
}

fn value_of(n: u64) -> Vec<u8> {
    format!("value {n:08}").into_bytes()
}

/// Parks `write` on its view of the key at failpoint `at`, runs `sets` plain sets of the key,
/// releases it and checks the outcome.
fn stalled(write: Write, at: &'static str, sets: u64) {
    let seg = Seg::new(&format!("stale-{write:?}-{}-{sets}", at.replace('.', "-")));
    let st = Store::create(&seg.name, &opts()).unwrap();
    let first = st.set(KEY, &value_of(0), Expiry::Never).unwrap();
    let lock_id = match write {
        Write::SetAndUnlock => st.lock(KEY, Duration::from_secs(3600)).unwrap().unwrap().lock_id,
        _ => 0,
    };
    let viewed = st.get(KEY).unwrap().unwrap().meta.version;
    let go = std::sync::Barrier::new(2);
    let (outcome, last) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            go.wait();
            match write {
                Write::CompareAndSet => {
                    st.compare_and_set(KEY, viewed, b"stale cas", Expiry::Never).map(Some)
                }
                Write::SetAndUnlock => {
                    st.set_and_unlock(KEY, lock_id, b"stale unlock", Expiry::Never).map(Some)
                }
                Write::Lock => st.lock(KEY, Duration::from_secs(3600)).map(|l| {
                    let l = l.expect("the key is present throughout");
                    assert_eq!(l.value, value_of(sets), "lock returned a value that is no longer current");
                    Some(l.lock_id)
                }),
                Write::Delete => st.delete(KEY).map(|d| {
                    assert!(d, "delete of a present key said absent");
                    None
                }),
            }
        });
        let pause = pause_at_failpoint(at, 1, Some(writer.thread().id()));
        go.wait();
        pause.wait_reached();
        let mut last = first;
        for n in 1..=sets {
            let v = st.set(KEY, &value_of(n), Expiry::Never).unwrap();
            assert!(v > last, "set {n}: version {v} after {last}");
            last = v;
        }
        assert!(!writer.is_finished(), "the writer went past its failpoint while paused");
        pause.release();
        (writer.join().unwrap(), last)
    });
    let what = format!("{write:?} stalled at {at} across {sets} sets");
    let now = st.get(KEY).unwrap();
    match write {
        Write::CompareAndSet => {
            assert!(
                matches!(outcome, Err(Error::VersionMismatch { expected, found }) if expected == viewed && found == last),
                "{what}: a compare-and-set on a replaced version gave {outcome:?}"
            );
        }
        Write::SetAndUnlock => {
            // The plain sets replaced the record and its lock.
            assert!(
                matches!(outcome, Err(Error::LockMismatch { presented, held: 0 }) if presented == lock_id),
                "{what}: a set-and-unlock with a lock that no longer holds gave {outcome:?}"
            );
        }
        Write::Lock => {
            let id = outcome.unwrap().expect("lock id");
            assert!(id > last, "{what}: lock version {id} is not after the last set's {last}");
            let now = now.as_ref().expect("locked entry");
            assert_eq!(now.meta.version, id, "{what}");
            assert_eq!(now.meta.lock.map(|l| l.lock_id), Some(id), "{what}");
        }
        Write::Delete => {
            outcome.unwrap();
            assert!(now.is_none(), "{what}: the key survived its delete");
        }
    }
    if let Write::CompareAndSet | Write::SetAndUnlock = write {
        let now = now.expect("the key is present");
        assert_eq!((now.value, now.meta.version), (value_of(sets), last), "{what}: the last set was undone");
    }
    let report = common::assert_healthy(&st);
    assert_eq!(report.leaked_blocks, 0, "{what}: {report:#?}");
    st.delete(KEY).unwrap();
    assert_eq!(st.stats().bytes_used, 0, "{what}: bytes left in use with no entry");
    common::assert_healthy(&st);
}

/// The failpoints at which `write` is parked: after its view (nothing journaled yet), and
/// right before its publishing CAS.
fn stall_points(write: Write) -> [&'static str; 2] {
    match write {
        Write::Delete => ["update.after_view", "delete.after_journal"],
        _ => ["update.after_view", "update.before_publish"],
    }
}

fn stalled_everywhere(write: Write) {
    for at in stall_points(write) {
        for sets in counts() {
            stalled(write, at, sets);
        }
    }
}

#[test]
fn a_stalled_compare_and_set_fails_on_a_replaced_version() {
    stalled_everywhere(Write::CompareAndSet);
}

#[test]
fn a_stalled_set_and_unlock_fails_on_a_replaced_lock() {
    stalled_everywhere(Write::SetAndUnlock);
}

#[test]
fn a_stalled_lock_locks_the_current_record() {
    stalled_everywhere(Write::Lock);
}

#[test]
fn a_stalled_delete_removes_the_current_record() {
    stalled_everywhere(Write::Delete);
}
