//! Single-process semantics of every operation.

mod common;
use common::{Seg, small};
use gardenstate::{ChangeKind, Error, Expiry, FeedRead, Options, Store};
use std::time::Duration;

#[test]
fn set_get_overwrite_delete() {
    let s = Seg::new("basic");
    let st = Store::create(&s.name, &small()).unwrap();
    assert_eq!(st.get(b"a").unwrap(), None);
    let v1 = st.set(b"a", b"one", Expiry::Never).unwrap();
    let e = st.get(b"a").unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.meta.version, e.meta.ttl_left), (&b"one"[..], v1, None));
    let v2 = st.set(b"a", &[7u8; 5000], Expiry::Never).unwrap();
    assert!(v2 > v1);
    assert_eq!(st.get(b"a").unwrap().unwrap().value, vec![7u8; 5000]);
    assert!(st.delete(b"a").unwrap());
    assert!(!st.delete(b"a").unwrap());
    assert_eq!(st.get(b"a").unwrap(), None);
    let stats = st.stats();
    assert_eq!(stats.live_entries, 0);
    assert_eq!(stats.bytes_used, 0, "{stats:?}");
    assert_eq!(stats.sets, 2);
    assert_eq!(stats.deletes, 1);
    common::assert_healthy(&st);
}

#[test]
fn get_into_reports_needed_size() {
    let s = Seg::new("into");
    let st = Store::create(&s.name, &small()).unwrap();
    st.set(b"k", b"hello world", Expiry::Never).unwrap();
    let mut small_buf = [0u8; 4];
    match st.get_into(b"k", &mut small_buf) {
        Err(Error::BufferTooSmall { needed: 11 }) => {}
        other => panic!("{other:?}"),
    }
    let mut buf = [0u8; 64];
    let m = st.get_into(b"k", &mut buf).unwrap().unwrap();
    assert_eq!(&buf[..m.len], b"hello world");
}

#[test]
fn add_and_cas() {
    let s = Seg::new("addcas");
    let st = Store::create(&s.name, &small()).unwrap();
    let v = st.add(b"k", b"1", Expiry::Never).unwrap();
    assert!(matches!(st.add(b"k", b"2", Expiry::Never), Err(Error::Exists)));
    assert!(matches!(
        st.compare_and_set(b"k", v + 100, b"3", Expiry::Never),
        Err(Error::VersionMismatch { found, .. }) if found == v
    ));
    let v2 = st.compare_and_set(b"k", v, b"3", Expiry::Never).unwrap();
    assert_eq!(st.get(b"k").unwrap().unwrap().value, b"3");
    assert!(matches!(st.compare_and_set(b"k", v, b"4", Expiry::Never), Err(Error::VersionMismatch { .. })));
    assert!(matches!(st.compare_and_set(b"nope", v2, b"4", Expiry::Never), Err(Error::NotFound)));
}

/// `delete_if_version` removes only the version it names (a restore's undo must not remove a
/// write made since), and reports what it found otherwise.
#[test]
fn delete_if_version_removes_only_that_version() {
    let s = Seg::new("delver");
    let st = Store::create(&s.name, &small()).unwrap();
    let v = st.add(b"k", b"1", Expiry::Never).unwrap();
    let v2 = st.set(b"k", b"2", Expiry::Never).unwrap();
    assert!(matches!(
        st.delete_if_version(b"k", v),
        Err(Error::VersionMismatch { expected, found }) if expected == v && found == v2
    ));
    assert_eq!(st.get(b"k").unwrap().unwrap().value, b"2");
    st.delete_if_version(b"k", v2).unwrap();
    assert!(st.get(b"k").unwrap().is_none());
    assert!(matches!(st.delete_if_version(b"k", v2), Err(Error::NotFound)));
}

#[test]
fn ttl_expiry_touch_and_sliding() {
    let s = Seg::new("ttl");
    let st = Store::create(&s.name, &small()).unwrap();
    // The sliding entry outlives its first deadline only because reads, each inside its
    // window, keep pushing it out. The test's clock is advanced, not slept: no stall of the
    // machine between two reads can let the window run out.
    st.set(b"short", b"x", Expiry::After(Duration::from_millis(500))).unwrap();
    st.set(b"slide", b"y", Expiry::Sliding(Duration::from_millis(1000))).unwrap();
    st.set(b"touched", b"z", Expiry::After(Duration::from_millis(1000))).unwrap();
    let left = st.get(b"short").unwrap().unwrap().meta.ttl_left.unwrap();
    assert_eq!(st.get(b"short").unwrap().unwrap().meta.sliding, None);
    assert_eq!(st.meta_of(b"slide").unwrap().unwrap().sliding, Some(Duration::from_millis(1000)));
    assert!(left <= Duration::from_millis(500));
    assert!(st.touch(b"touched", Expiry::After(Duration::from_secs(60))).unwrap());
    for _ in 0..6 {
        gardenstate::advance_clock_for_tests(Duration::from_millis(300));
        assert!(st.get(b"slide").unwrap().is_some(), "sliding entry kept alive by reads");
    }
    // Unread for longer than its window, it expires.
    gardenstate::advance_clock_for_tests(Duration::from_millis(1001));
    assert!(st.meta_of(b"slide").unwrap().is_none(), "a sliding entry unread for its window expires");
    assert_eq!(st.get(b"short").unwrap(), None, "expired entries are never returned");
    assert!(st.get(b"touched").unwrap().is_some());
    assert!(!st.touch(b"short", Expiry::Never).unwrap());
    // The sweep reclaims the expired entry and its memory.
    let r = st.sweep(u64::MAX).unwrap();
    assert!(r.ran && r.expired >= 1, "{r:?}");
    let stats = st.stats();
    assert_eq!(stats.live_entries, 1);
    assert!(stats.expirations >= 2);
    // add over an expired entry succeeds.
    st.set(b"gone", b"1", Expiry::After(Duration::from_millis(1))).unwrap();
    gardenstate::advance_clock_for_tests(Duration::from_millis(2));
    st.add(b"gone", b"2", Expiry::Never).unwrap();
    assert_eq!(st.get(b"gone").unwrap().unwrap().value, b"2");
}

#[test]
fn session_locks() {
    let s = Seg::new("locks");
    let st = Store::create(&s.name, &small()).unwrap();
    assert_eq!(st.lock(b"none", Duration::from_secs(1)).unwrap(), None);
    st.set(b"s", b"cart=1", Expiry::Sliding(Duration::from_secs(60))).unwrap();
    let l = st.lock(b"s", Duration::from_secs(60)).unwrap().unwrap();
    assert_eq!(l.value, b"cart=1");
    assert!(!l.took_over);
    match st.lock(b"s", Duration::from_secs(60)) {
        Err(Error::Locked { lock_id, .. }) => assert_eq!(lock_id, l.lock_id),
        other => panic!("{other:?}"),
    }
    // Readers still see the item and the lock.
    let m = st.meta_of(b"s").unwrap().unwrap();
    assert_eq!(m.lock.unwrap().lock_id, l.lock_id);
    assert!(matches!(st.unlock(b"s", l.lock_id + 1), Err(Error::LockMismatch { .. })));
    st.set_and_unlock(b"s", l.lock_id, b"cart=2", Expiry::Sliding(Duration::from_secs(60))).unwrap();
    assert_eq!(st.meta_of(b"s").unwrap().unwrap().lock, None);
    assert!(matches!(
        st.set_and_unlock(b"s", l.lock_id, b"x", Expiry::Never),
        Err(Error::LockMismatch { .. })
    ));
    // Takeover of an old lock.
    let l2 = st.lock(b"s", Duration::from_secs(60)).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let l3 = st.lock(b"s", Duration::from_millis(10)).unwrap().unwrap();
    assert!(l3.took_over && l3.lock_id != l2.lock_id);
    assert!(matches!(st.unlock(b"s", l2.lock_id), Err(Error::LockMismatch { .. })));
    st.unlock(b"s", l3.lock_id).unwrap();
    let stats = st.stats();
    assert_eq!((stats.locks, stats.lock_takeovers), (3, 1));
    assert!(stats.lock_contentions >= 1);
}

/// `lock_wait`: the release of the lock (unlock, a set, a delete) ends the wait at once with
/// the outcome a `lock` would have then; a lock that ages past `takeover_after` is taken over;
/// a wait that runs out is `Locked`. The holder is this process (alive), so only a release
/// or the age ends a wait: no liveness re-check wakes the waiter (lockwait.rs), and a release
/// that did not wake it would leave the waiter asleep for its whole 600 s.
#[test]
fn lock_wait_returns_when_the_lock_is_released() {
    let s = Seg::new("lock-wait");
    let st = std::sync::Arc::new(Store::create(&s.name, &small()).unwrap());
    let patience = Duration::from_secs(600);
    assert_eq!(st.lock_wait(b"none", patience, patience).unwrap(), None);
    st.set(b"s", b"v1", Expiry::Never).unwrap();
    let free = st.lock_wait(b"s", patience, patience).unwrap().unwrap();
    assert!(!free.took_over, "an unlocked entry is locked at once");
    match st.lock_wait(b"s", patience, Duration::from_millis(1)) {
        Err(Error::Locked { lock_id, .. }) => assert_eq!(lock_id, free.lock_id),
        other => panic!("a wait that runs out: {other:?}"),
    }
    // A waiter in another thread (not scoped: a hung one must fail the test, not block it).
    let wait_in_thread = || {
        let st = st.clone();
        std::thread::spawn(move || st.lock_wait(b"s", patience, patience))
    };
    // Each way of releasing the lock ends the wait.
    type Release = fn(&Store, u64);
    let releases: [(&str, Release); 3] = [
        ("unlock", |st, id| st.unlock(b"s", id).unwrap()),
        ("set_and_unlock", |st, id| {
            st.set_and_unlock(b"s", id, b"v2", Expiry::Never).unwrap();
        }),
        ("set", |st, _| {
            st.set(b"s", b"v3", Expiry::Never).unwrap();
        }),
    ];
    let mut held = free.lock_id;
    for (how, release) in releases {
        let waiter = wait_in_thread();
        release(&st, held);
        let got = common::join_within(waiter, Duration::from_secs(120), how).unwrap().unwrap();
        assert!(!got.took_over, "{how}: the waiter took the lock over instead of being handed it");
        held = got.lock_id;
    }
    // A delete ends the wait with "absent".
    let waiter = wait_in_thread();
    assert!(st.delete(b"s").unwrap());
    assert_eq!(common::join_within(waiter, Duration::from_secs(120), "delete").unwrap(), None);
    // A lock older than the waiter's `takeover_after` is taken over.
    st.set(b"s", b"v4", Expiry::Never).unwrap();
    let old = st.lock(b"s", patience).unwrap().unwrap();
    let took = st.lock_wait(b"s", Duration::from_millis(20), patience).unwrap().unwrap();
    assert!(took.took_over && took.lock_id != old.lock_id);
    common::assert_healthy(&st);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let s = Seg::new("bad");
    let st = Store::create(&s.name, &small()).unwrap();
    assert!(matches!(st.set(b"", b"v", Expiry::Never), Err(Error::KeyTooLarge { .. })));
    assert!(matches!(st.set(&[1u8; 65], b"v", Expiry::Never), Err(Error::KeyTooLarge { len: 65, max: 64 })));
    assert!(matches!(
        st.set(b"k", &vec![0u8; (64 << 10) + 1], Expiry::Never),
        Err(Error::ValueTooLarge { .. })
    ));
    assert_eq!(st.stats().live_entries, 0);
    st.set(b"k", &vec![1u8; 64 << 10], Expiry::Never).unwrap();
    assert!(Store::create(&s.name, &small()).is_err(), "create refuses an existing segment");
    // Info::options recreates the shape: opening with it attaches to this very segment.
    assert_eq!(Store::open(&s.name, &st.info().options()).unwrap().info(), st.info());
    let other = Options { max_entries: 99, ..small() };
    assert!(matches!(Store::open(&s.name, &other), Err(Error::Incompatible { .. })));
}

#[test]
fn full_then_evict() {
    let s = Seg::new("full");
    let opts = Options { capacity_bytes: 1 << 20, max_value: 4096, max_entries: 100_000, ..small() };
    let st = Store::create(&s.name, &opts).unwrap();
    let mut n = 0;
    let err = loop {
        match st.set(format!("k{n}").as_bytes(), &[3u8; 1000], Expiry::Never) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::Full(gardenstate::FullKind::Heap)), "{err}");
    assert!(n > 800, "1 MiB holds {n} 1 KiB records");
    // Everything stored is intact; deleting makes room again.
    for i in 0..n {
        assert_eq!(st.get(format!("k{i}").as_bytes()).unwrap().unwrap().value, vec![3u8; 1000]);
    }
    st.delete(b"k0").unwrap();
    st.set(b"again", &[3u8; 1000], Expiry::Never).unwrap();
    drop(st);

    let s2 = Seg::new("evict");
    let st = Store::create(&s2.name, &Options { evict: true, ..opts }).unwrap();
    for i in 0..5000 {
        st.set(format!("k{i}").as_bytes(), &[3u8; 1000], Expiry::Never).unwrap();
    }
    let stats = st.stats();
    assert!(stats.evictions > 0 && stats.live_entries < 1100, "{stats:?}");
    assert!(st.get(b"k4999").unwrap().is_some(), "the newest entry survives");
    common::assert_healthy(&st);
}

/// Eviction samples the index with a fixed stride, which must be coprime with the number of
/// index positions: with max_entries 31,676 there are 8 x 7,919 positions and the stride was
/// 7,919, so the sample visited 8 positions, almost always empty ones, and a full heap with
/// eviction on reported `Full` instead of evicting.
#[test]
fn eviction_samples_the_whole_index_whatever_its_size() {
    let s = Seg::new("evict-stride");
    let opts =
        Options { capacity_bytes: 1 << 20, max_value: 4096, max_entries: 31_676, evict: true, ..small() };
    let st = Store::create(&s.name, &opts).unwrap();
    assert_eq!(st.info().index_slots, 7 * 7_919);
    for i in 0..3000 {
        st.set(format!("k{i}").as_bytes(), &[3u8; 1000], Expiry::Never).unwrap();
    }
    assert!(st.stats().evictions > 0);
    common::assert_healthy(&st);
}

#[test]
fn scan_and_feed() {
    let s = Seg::new("scan");
    let st = Store::create(&s.name, &small()).unwrap();
    let head0 = st.feed_head();
    for i in 0..100u32 {
        st.set(format!("key{i}").as_bytes(), &i.to_le_bytes(), Expiry::Never).unwrap();
    }
    st.delete(b"key5").unwrap();
    let mut seen = Vec::new();
    st.scan(|e| seen.push((e.key, e.value))).unwrap();
    assert_eq!(seen.len(), 99);
    assert!(
        seen.iter()
            .all(|(k, v)| format!("key{}", u32::from_le_bytes(v[..4].try_into().unwrap())).as_bytes() == k)
    );
    let mut cursor = head0;
    let mut kinds = Vec::new();
    while let FeedRead::Change(c) = st.feed_read(cursor) {
        kinds.push(c.kind);
        if c.kind == ChangeKind::Set {
            let e = st.entry_at(c.slot).unwrap();
            assert!(e.is_none_or(|e| e.meta.version >= c.version));
        }
        cursor = c.seq + 1;
    }
    assert_eq!(kinds.len(), 101);
    assert_eq!(kinds.last(), Some(&ChangeKind::Delete));
    // A follower that falls a whole ring behind is told to resync.
    for i in 0..2000u32 {
        st.set(b"churn", &i.to_le_bytes(), Expiry::Never).unwrap();
    }
    assert_eq!(st.feed_read(head0), FeedRead::Overflow);
}

#[test]
fn many_keys_round_trip() {
    let s = Seg::new("many");
    let opts = Options { capacity_bytes: 64 << 20, max_entries: 50_000, ..small() };
    let st = Store::create(&s.name, &opts).unwrap();
    for i in 0..50_000u32 {
        st.set(format!("session-{i:08}").as_bytes(), &i.to_le_bytes().repeat(16), Expiry::Never).unwrap();
    }
    for i in 0..50_000u32 {
        let e = st.get(format!("session-{i:08}").as_bytes()).unwrap().unwrap();
        assert_eq!(e.value, i.to_le_bytes().repeat(16));
    }
    assert_eq!(st.stats().live_entries, 50_000);
    let report = common::assert_healthy(&st);
    assert_eq!(report.entries, 50_000);
    assert_eq!(report.blocks_in_use, 50_000);
}

#[test]
fn threads_churn_one_store() {
    let s = Seg::new("threads");
    let st = Store::create(&s.name, &Options { max_entries: 4096, ..small() }).unwrap();
    std::thread::scope(|sc| {
        for t in 0..4u64 {
            let st = &st;
            sc.spawn(move || {
                let mut x = t + 1;
                for i in 0..20_000u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = format!("k{}", x % 300);
                    let len = (x % 3000) as usize;
                    let value = vec![(i % 251) as u8; len];
                    match x % 5 {
                        0 => {
                            st.delete(key.as_bytes()).unwrap();
                        }
                        1 => match st.add(key.as_bytes(), &value, Expiry::Never) {
                            Ok(_) | Err(Error::Exists) => {}
                            Err(e) => panic!("add: {e}"),
                        },
                        _ => {
                            st.set(key.as_bytes(), &value, Expiry::Never).unwrap();
                        }
                    }
                    if let Some(e) = st.get(key.as_bytes()).unwrap() {
                        assert!(e.value.iter().all(|&b| b == e.value[0]), "torn value for {key}");
                    }
                }
            });
        }
    });
    common::assert_healthy(&st);
    let mut n = 0;
    st.scan(|_| n += 1).unwrap();
    assert_eq!(st.stats().live_entries, n);
}

#[test]
fn replica_writes_acks_and_epochs() {
    use gardenstate::{LockInfo, WriteMode};
    let s = Seg::new("replica");
    let st = Store::create(&s.name, &small()).unwrap();
    let fresh_history = st.history_id();
    assert_eq!(fresh_history, st.info().dataset_id);
    st.set_write_mode(WriteMode::Replica);
    assert!(matches!(st.set(b"k", b"v", Expiry::Never), Err(Error::ReadOnly)));
    // The replicator writes anyway, recreating expiry, window and lock.
    let lock = LockInfo { lock_id: 77, age: Duration::from_secs(5) };
    st.apply_replicated(
        b"k",
        b"v1",
        Some(Duration::from_secs(30)),
        Some(Duration::from_secs(60)),
        Some(lock),
    )
    .unwrap();
    let m = st.meta_of(b"k").unwrap().unwrap();
    assert!(m.ttl_left.unwrap() <= Duration::from_secs(30) && m.ttl_left.unwrap() > Duration::from_secs(25));
    assert_eq!(m.sliding, Some(Duration::from_secs(60)));
    let l = m.lock.unwrap();
    assert_eq!(l.lock_id, 77);
    assert!(l.age >= Duration::from_secs(5));
    assert!(st.apply_replicated_delete(b"k").unwrap());
    assert!(!st.apply_replicated_delete(b"k").unwrap());
    // After promotion, a replicated lock (owner on another host) frees only by age.
    st.set_write_mode(WriteMode::Writable);
    st.apply_replicated(b"s", b"x", None, None, Some(lock)).unwrap();
    assert!(matches!(st.lock(b"s", Duration::from_secs(60)), Err(Error::Locked { lock_id: 77, .. })));
    assert!(st.lock(b"s", Duration::from_secs(1)).unwrap().unwrap().took_over);
    // Epochs only rise; acknowledgements only advance; a waiter sees them.
    assert_eq!(st.raise_epoch(3), 3);
    assert_eq!(st.raise_epoch(2), 3);
    st.set_history_id(42);
    assert_eq!((st.epoch(), st.history_id()), (3, 42));
    let v = st.set(b"w", b"1", Expiry::Never).unwrap();
    assert!(!st.wait_replicated(v, Duration::from_millis(20)));
    std::thread::scope(|sc| {
        sc.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            st.acknowledge_replicated(v);
        });
        assert!(st.wait_replicated(v, Duration::from_secs(10)));
    });
    st.acknowledge_replicated(1);
    assert_eq!(st.replicated_upto(), v, "acknowledgements never move back");
    common::assert_healthy(&st);
}

/// Workers learn about failover: the epoch, the role and a change counter that moves on
/// every role change and epoch raise (also A -> B -> A, which the role alone cannot show),
/// seen by another handle of the segment (a worker), and not moved by a mode set twice.
#[test]
fn replication_state_counts_every_role_and_epoch_change() {
    use gardenstate::{ReplicationState, Role, WriteMode};
    let s = Seg::new("role");
    let daemon = Store::create(&s.name, &small()).unwrap();
    let worker = Store::attach(&s.name).unwrap();
    let fresh = worker.replication_state();
    assert_eq!(fresh, ReplicationState { epoch: 0, role: Role::Primary, changes: 0 });
    let mut last = fresh.changes;
    let mut moved = |want_role: Role, want_epoch: u64| {
        let now = worker.replication_state();
        assert_eq!((now.role, now.epoch), (want_role, want_epoch));
        assert!(now.changes > last, "the counter did not move: {now:?} after {last}");
        last = now.changes;
    };
    daemon.set_write_mode(WriteMode::Replica);
    moved(Role::Standby, 0);
    // A standby adopting its primary's epoch.
    daemon.raise_epoch(4);
    moved(Role::Standby, 4);
    // The promote path (commands/segment_cmds.rs `promote`, failover/node.rs).
    daemon.raise_epoch(daemon.epoch() + 1);
    daemon.set_write_mode(WriteMode::Writable);
    moved(Role::Primary, 5);
    // Fenced and unfenced again: same role and epoch as before, yet the counter moved.
    daemon.set_write_mode(WriteMode::Fenced);
    moved(Role::Fenced, 5);
    assert!(matches!(worker.set(b"k", b"v", Expiry::Never), Err(Error::ReadOnly)));
    daemon.set_write_mode(WriteMode::Writable);
    moved(Role::Primary, 5);
    worker.set(b"k", b"v", Expiry::Never).unwrap();
    // Setting the mode it has, or an epoch below the current one, is no change.
    daemon.set_write_mode(WriteMode::Writable);
    daemon.raise_epoch(2);
    assert_eq!(worker.replication_state().changes, last);
    // A lapsed write lease shows in the role (writes are refused) without a counted change.
    daemon.set_write_lease(Some(Duration::from_millis(1)));
    std::thread::sleep(Duration::from_millis(5));
    let lapsed = worker.replication_state();
    assert_eq!((lapsed.role, lapsed.changes), (Role::LeaseLapsed, last));
    assert!(matches!(worker.set(b"k", b"v2", Expiry::Never), Err(Error::ReadOnly)));
    daemon.set_write_lease(None);
    assert_eq!(worker.replication_state().role, Role::Primary);
    assert_eq!(worker.write_mode(), WriteMode::Writable);
    common::assert_healthy(&worker);
}

/// W1: after a fence and `drain_writers`, the feed head covers every write that succeeded,
/// however the writers' threads were interleaved with the fence.
#[test]
fn drain_writers_covers_every_acknowledged_write() {
    use gardenstate::WriteMode;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let s = Seg::new("drain");
    let st = Store::create(&s.name, &small()).unwrap();
    for round in 0..20u64 {
        st.set_write_mode(WriteMode::Writable);
        let stop = AtomicBool::new(false);
        let newest = AtomicU64::new(0);
        let head = std::thread::scope(|sc| {
            for t in 0..3u64 {
                let (st, stop, newest) = (&st, &stop, &newest);
                sc.spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("r{round}-t{t}-{}", i % 50);
                        match st.set(key.as_bytes(), b"v", Expiry::Never) {
                            Ok(v) => {
                                newest.fetch_max(v, Ordering::Relaxed);
                            }
                            Err(Error::ReadOnly) => {}
                            Err(e) => panic!("{e}"),
                        }
                        i += 1;
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(2 + round % 5));
            st.set_write_mode(WriteMode::Fenced);
            assert!(st.drain_writers(Duration::from_secs(10)), "live writers never drained");
            let head = st.feed_head();
            std::thread::sleep(Duration::from_millis(5));
            stop.store(true, Ordering::Relaxed);
            head
        });
        assert!(newest.load(Ordering::Relaxed) <= head, "round {round}: a write succeeded after the drain");
        assert_eq!(st.feed_head(), head, "round {round}: the feed moved after the drain");
    }
    common::assert_healthy(&st);
}

/// The write lease: worker writes stop once it runs out, the replicator's do not, and
/// clearing it gives the writes back.
#[test]
fn an_expired_write_lease_refuses_worker_writes() {
    let s = Seg::new("lease");
    let st = Store::create(&s.name, &small()).unwrap();
    assert_eq!(st.write_lease_left(), None);
    st.set_write_lease(Some(Duration::from_secs(60)));
    st.set(b"a", b"1", Expiry::Never).unwrap();
    assert!(st.write_lease_left().unwrap() <= Duration::from_secs(60));
    // The clock is advanced past the lease, not slept: the write above cannot miss it.
    gardenstate::advance_clock_for_tests(Duration::from_secs(61));
    assert_eq!(st.write_lease_left(), Some(Duration::ZERO));
    assert!(matches!(st.set(b"a", b"2", Expiry::Never), Err(Error::ReadOnly)));
    assert!(matches!(st.delete(b"a"), Err(Error::ReadOnly)));
    assert_eq!(st.get(b"a").unwrap().unwrap().value, b"1");
    st.apply_replicated(b"r", b"replicated", None, None, None).unwrap();
    st.set_write_lease(None);
    st.set(b"a", b"3", Expiry::Never).unwrap();
    assert_eq!(st.get(b"a").unwrap().unwrap().value, b"3");
}

/// Freed blocks are reused before an unassigned page is claimed for their class, also right
/// after a fill (the allocator's full-scan memo, heap.rs), so churn in one size class does
/// not take pages another class could use: the room left for a second class is the same
/// after deleting and rewriting records of the first as without.
#[test]
fn rewrites_after_deletes_reuse_blocks_before_claiming_pages() {
    let opts = Options { capacity_bytes: 2 << 20, max_value: 4096, max_entries: 100_000, ..small() };
    let room_for_big = |churn: bool| {
        let s = Seg::new(if churn { "reuse-churn" } else { "reuse-plain" });
        let st = Store::create(&s.name, &opts).unwrap();
        for i in 0..800 {
            st.set(format!("k{i}").as_bytes(), &[1u8; 1000], Expiry::Never).unwrap();
        }
        if churn {
            // Every 5th record, in order: the last free is in the page filled last.
            for i in (0..800).step_by(5) {
                assert!(st.delete(format!("k{i}").as_bytes()).unwrap());
            }
            for i in 0..160 {
                st.set(format!("n{i}").as_bytes(), &[2u8; 1000], Expiry::Never).unwrap();
            }
        }
        let mut n = 0;
        while st.set(format!("big{n}").as_bytes(), &[3u8; 3000], Expiry::Never).is_ok() {
            n += 1;
        }
        common::assert_healthy(&st);
        n
    };
    let plain = room_for_big(false);
    assert!(plain > 50, "room for {plain} 3 KB records");
    assert_eq!(room_for_big(true), plain);
}

/// The digest depends on the content only: two segments of different shapes (so other slots
/// and seeds), filled in opposite orders, agree; any change of value, lock or expiry kind
/// shows.
#[test]
fn the_digest_compares_contents_whatever_the_layout() {
    let (a, b) = (Seg::new("digest-a"), Seg::new("digest-b"));
    let sa = Store::create(&a.name, &small()).unwrap();
    let sb = Store::create(&b.name, &Options { max_entries: 4096, ..small() }).unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("session-{i}")).collect();
    for k in &keys {
        sa.set(k.as_bytes(), k.as_bytes(), Expiry::Never).unwrap();
    }
    for k in keys.iter().rev() {
        sb.set(k.as_bytes(), k.as_bytes(), Expiry::Never).unwrap();
    }
    let d = sa.digest().unwrap();
    assert_eq!(d.entries, 300);
    assert_eq!(d, sb.digest().unwrap());
    sb.set(b"session-7", b"changed", Expiry::Never).unwrap();
    assert_ne!(sa.digest().unwrap(), sb.digest().unwrap());
    sb.set(b"session-7", b"session-7", Expiry::After(Duration::from_secs(600))).unwrap();
    assert_ne!(sa.digest().unwrap(), sb.digest().unwrap(), "expiring or not is in the digest");
    sb.set(b"session-7", b"session-7", Expiry::Never).unwrap();
    assert_eq!(sa.digest().unwrap(), sb.digest().unwrap());
    sb.lock(b"session-8", Duration::from_secs(60)).unwrap();
    assert_ne!(sa.digest().unwrap(), sb.digest().unwrap(), "a lock is in the digest");
}
