//! Linearizability of the store, checked on real multi-process histories, and a differential
//! test against a model map.
//!
//! What it proves:
//! - `processes_are_linearizable`: several child processes (this test binary re-run with a
//!   role) run get / set / add / compare_and_set / delete / touch / lock / unlock /
//!   set_and_unlock on a FEW hot keys while the parent SIGKILLs some of them mid-run (their
//!   replacements go on) and SIGSTOPs / SIGCONTs others. Every operation is recorded with its
//!   arguments, its result and invoke/return timestamps of `CLOCK_MONOTONIC` (one clock for
//!   every process of the host) in a journal file in shared memory, which survives its
//!   writer's SIGKILL. The last operation of a killed child has an unknown outcome: it may or
//!   may not have taken effect, and if it did, at any time after its invocation (return =
//!   +infinity). Every value written is unique (and self-verifying, common::make_value), so a
//!   read names the write it saw; versions are unique too. Each key's history is then checked
//!   against a sequential model of one entry (value, version, lock and its owner) with a
//!   Wing-Gong / porcupine-style search: a DFS over linearizations, memoized on (set of
//!   operations linearized, model state), per key (P-compositionality: the store is
//!   linearizable iff every key's history is). A history that cannot be linearized fails the
//!   test with the failing window: the state and the operations left unplaced at the deepest
//!   point the search reached.
//! - `checker_*`: the checker itself rejects known non-linearizable histories (a stale read
//!   after a completed write, a lost update, a takeover of a live owner's lock) and accepts
//!   legal concurrent ones, so it cannot silently accept everything.
//! - `differential_against_model_map`: one process, a random op sequence (seed `GDS_SEED`,
//!   printed) on a small heap, every result compared with a model map: values, versions
//!   (which only grow), lock ids, every error kind, and `Full` exactly when the heap holds as
//!   many records as it can (copy-on-write: an update needs a free block too).
//!
//! Bounded for CI (a few seconds). Long form: `GDS_LONG=1 cargo test -p gardenstate --test
//! linearizability -- --nocapture` (more rounds, more operations, more keys' worth of history).
//! Replay the parent's fault schedule and the differential test with `GDS_SEED=<seed>`.

mod common;
use common::{Rng, Seg, check_value, child_command, make_value, seed_from_env};
use gardenstate::{Error, Expiry, FullKind, Options, Store};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn long() -> bool {
    std::env::var("GDS_LONG").is_ok_and(|v| v != "0" && !v.is_empty())
}

/// `CLOCK_MONOTONIC` in nanoseconds: comparable between the processes of one host.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always supported.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---- operations and their results --------------------------------------------------------------

/// An operation on one key, with its arguments. Value ids name unique writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Get,
    Set { vid: u64 },
    Add { vid: u64 },
    Cas { expected: u64, vid: u64 },
    Delete,
    Touch,
    Lock,
    Unlock { lock_id: u64 },
    SetUnlock { lock_id: u64, vid: u64 },
}

/// What an operation returned. `Unknown`: its process was killed before it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ret {
    Unknown,
    /// get: (value id, version, lock id or 0)
    Value {
        vid: u64,
        version: u64,
        lock_id: u64,
    },
    Absent,
    /// set / add / cas / set_and_unlock: the new version.
    Written {
        version: u64,
    },
    /// delete / touch
    Bool(bool),
    /// unlock
    Done,
    Locked {
        lock_id: u64,
        vid: u64,
        took_over: bool,
    },
    Busy {
        lock_id: u64,
    },
    Exists,
    NotFound,
    VersionMismatch {
        found: u64,
    },
    LockMismatch {
        held: u64,
    },
}

/// One operation of a history: which process, what, when (ns, `u64::MAX` = never returned).
#[derive(Debug, Clone, Copy)]
struct Op {
    proc_: u32,
    call: Call,
    ret: Ret,
    invoke: u64,
    ret_at: u64,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = if self.ret_at == u64::MAX { "never".to_string() } else { self.ret_at.to_string() };
        write!(f, "p{} [{} .. {}] {:?} -> {:?}", self.proc_, self.invoke, r, self.call, self.ret)
    }
}

// ---- the sequential model of one key ---------------------------------------------------------

/// A version the model knows, or the unknown version of the write of op `i` (an unlock, whose
/// new version is not returned, or a write whose process was killed). An unknown version
/// matches any version no completed operation of the key returned (versions are unique), and
/// becomes that version once matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Ver {
    Known(u64),
    Unknown(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct KState {
    present: bool,
    vid: u64,
    version: Ver,
    /// Locked: the lock id is the version (the lock's own write made it).
    locked: bool,
    /// The process holding the lock.
    owner: u32,
}

const ABSENT: KState = KState { present: false, vid: 0, version: Ver::Known(0), locked: false, owner: 0 };

/// When each process died: `killed` = SIGKILL sent (a takeover of its lock may follow),
/// `reaped` = certainly dead (a lock attempt invoked later must see the owner dead).
#[derive(Debug, Clone, Default)]
struct Deaths {
    killed: HashMap<u32, u64>,
    reaped: HashMap<u32, u64>,
}

struct Model<'a> {
    /// Versions returned by completed operations of this key.
    known: HashSet<u64>,
    deaths: &'a Deaths,
}

impl Model<'_> {
    fn matches(&self, v: Ver, x: u64) -> Option<Ver> {
        match v {
            Ver::Known(k) => (k == x).then_some(Ver::Known(x)),
            Ver::Unknown(_) => (x != 0 && !self.known.contains(&x)).then_some(Ver::Known(x)),
        }
    }

    /// May `owner`'s lock have been taken over by an op returning at `t`?
    fn takeover_ok(&self, owner: u32, t: u64) -> bool {
        self.deaths.killed.get(&owner).is_some_and(|&k| k < t)
    }

    /// May an op invoked at `t` have found `owner` still alive?
    fn owner_may_live(&self, owner: u32, t: u64) -> bool {
        self.deaths.reaped.get(&owner).is_none_or(|&r| r > t)
    }

    /// The states `op` can leave `s` in (empty: `op` cannot happen in state `s`).
    fn step(&self, s: &KState, i: u32, op: &Op) -> Vec<KState> {
        let wrote = |vid: u64, version: Ver| KState { present: true, vid, version, locked: false, owner: 0 };
        let mut out = Vec::new();
        match (op.call, op.ret) {
            (Call::Get | Call::Touch, Ret::Unknown) => out.push(*s),
            (Call::Get, Ret::Absent) if !s.present => out.push(*s),
            (Call::Get, Ret::Value { vid, version, lock_id }) if s.present && s.vid == vid => {
                if let Some(v) = self.matches(s.version, version)
                    && (lock_id == 0 && !s.locked || lock_id != 0 && s.locked && lock_id == version)
                {
                    out.push(KState { version: v, ..*s });
                }
            }
            (Call::Touch, Ret::Bool(b)) if b == s.present => out.push(*s),
            (Call::Set { vid }, Ret::Written { version }) => out.push(wrote(vid, Ver::Known(version))),
            (Call::Set { vid }, Ret::Unknown) => {
                out.push(*s);
                out.push(wrote(vid, Ver::Unknown(i)));
            }
            (Call::Add { vid }, Ret::Written { version }) if !s.present => {
                out.push(wrote(vid, Ver::Known(version)))
            }
            (Call::Add { .. }, Ret::Exists) if s.present => out.push(*s),
            (Call::Add { vid }, Ret::Unknown) => {
                out.push(*s);
                if !s.present {
                    out.push(wrote(vid, Ver::Unknown(i)));
                }
            }
            (Call::Cas { expected, vid }, Ret::Written { version })
                if s.present && self.matches(s.version, expected).is_some() =>
            {
                out.push(wrote(vid, Ver::Known(version)));
            }
            (Call::Cas { expected, .. }, Ret::VersionMismatch { found })
                if s.present && found != expected =>
            {
                if let Some(v) = self.matches(s.version, found) {
                    out.push(KState { version: v, ..*s });
                }
            }
            (Call::Cas { .. } | Call::Unlock { .. } | Call::SetUnlock { .. }, Ret::NotFound)
                if !s.present =>
            {
                out.push(*s)
            }
            (Call::Cas { expected, vid }, Ret::Unknown) => {
                out.push(*s);
                if s.present && self.matches(s.version, expected).is_some() {
                    out.push(wrote(vid, Ver::Unknown(i)));
                }
            }
            (Call::Delete, Ret::Bool(true)) if s.present => out.push(ABSENT),
            (Call::Delete, Ret::Bool(false)) if !s.present => out.push(ABSENT),
            (Call::Delete, Ret::Unknown) => {
                out.push(*s);
                if s.present {
                    out.push(ABSENT);
                }
            }
            (Call::Lock, Ret::Absent) if !s.present => out.push(*s),
            (Call::Lock, Ret::Locked { lock_id, vid, took_over }) if s.present && s.vid == vid => {
                let ok = if took_over { s.locked && self.takeover_ok(s.owner, op.ret_at) } else { !s.locked };
                if ok {
                    out.push(KState { version: Ver::Known(lock_id), locked: true, owner: op.proc_, ..*s });
                }
            }
            (Call::Lock, Ret::Busy { lock_id }) if s.present && s.locked => {
                if let Some(v) = self.matches(s.version, lock_id)
                    && self.owner_may_live(s.owner, op.invoke)
                {
                    out.push(KState { version: v, ..*s });
                }
            }
            (Call::Lock, Ret::Unknown) => {
                out.push(*s);
                if s.present && (!s.locked || self.takeover_ok(s.owner, u64::MAX)) {
                    out.push(KState { version: Ver::Unknown(i), locked: true, owner: op.proc_, ..*s });
                }
            }
            (Call::Unlock { lock_id }, Ret::Done)
                if s.present && s.locked && self.matches(s.version, lock_id).is_some() =>
            {
                out.push(KState { version: Ver::Unknown(i), locked: false, owner: 0, ..*s });
            }
            (Call::SetUnlock { lock_id, vid }, Ret::Written { version })
                if s.present && s.locked && self.matches(s.version, lock_id).is_some() =>
            {
                out.push(wrote(vid, Ver::Known(version)));
            }
            (Call::Unlock { lock_id } | Call::SetUnlock { lock_id, .. }, Ret::LockMismatch { held })
                if s.present =>
            {
                // Unlocked: any id presented (0 too) is refused with held = 0.
                if held == 0 && !s.locked {
                    out.push(*s);
                } else if held != 0
                    && held != lock_id
                    && s.locked
                    && let Some(v) = self.matches(s.version, held)
                {
                    out.push(KState { version: v, ..*s });
                }
            }
            (Call::Unlock { lock_id }, Ret::Unknown) => {
                out.push(*s);
                if s.present && s.locked && self.matches(s.version, lock_id).is_some() {
                    out.push(KState { version: Ver::Unknown(i), locked: false, owner: 0, ..*s });
                }
            }
            (Call::SetUnlock { lock_id, vid }, Ret::Unknown) => {
                out.push(*s);
                if s.present && s.locked && self.matches(s.version, lock_id).is_some() {
                    out.push(wrote(vid, Ver::Unknown(i)));
                }
            }
            _ => {}
        }
        out
    }
}

// ---- the checker -------------------------------------------------------------------------------

/// Why a history is not (known to be) linearizable.
#[derive(Debug)]
struct NotLinearizable {
    /// The search gave up (its state bound) rather than proving the history illegal.
    gave_up: bool,
    /// The longest prefix the search could linearize.
    linearized: usize,
    total: usize,
    report: String,
}

#[derive(Debug, Default, Clone, Copy)]
struct CheckStats {
    ops: usize,
    steps: u64,
    cache: usize,
}

/// Checks one key's history (porcupine's algorithm: entries are the calls and returns sorted
/// by time, calls first among equal times; a call is linearized if the model accepts it and
/// (linearized set, state) is new, which lifts its call and return out of the list; meeting a
/// return means the op it closes was not linearized in time: backtrack). Operations that
/// never returned have their return at +infinity. `max_steps` bounds the search.
fn check_history(ops: &[Op], deaths: &Deaths, max_steps: u64) -> Result<CheckStats, NotLinearizable> {
    let n = ops.len();
    let known: HashSet<u64> = ops
        .iter()
        .filter_map(|o| match o.ret {
            Ret::Written { version } => Some(version),
            Ret::Locked { lock_id, .. } => Some(lock_id),
            _ => None,
        })
        .collect();
    let model = Model { known, deaths };
    // Entries: (time, is_return, op). Index 0 is a sentinel head.
    let mut ev: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, o) in ops.iter().enumerate() {
        ev.push((o.invoke, false, i));
        ev.push((o.ret_at, true, i));
    }
    ev.sort_by_key(|&(t, is_ret, i)| (t, is_ret, i));
    let m = ev.len();
    // Doubly linked list over entries 1..=m (0 = head sentinel, m + 1 = none).
    let none = m + 1;
    let mut next: Vec<usize> = (0..=m).map(|i| i + 1).collect();
    let mut prev: Vec<usize> = (0..=m).map(|i| i.saturating_sub(1)).collect();
    let mut ret_entry = vec![0usize; n];
    let mut call_entry = vec![0usize; n];
    for (k, &(_, is_ret, i)) in ev.iter().enumerate() {
        if is_ret {
            ret_entry[i] = k + 1;
        } else {
            call_entry[i] = k + 1;
        }
    }
    let op_of = |e: usize| ev[e - 1].2;
    let is_ret = |e: usize| ev[e - 1].1;
    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        for x in [e, ret_entry[op_of(e)]] {
            let (p, nx) = (prev[x], next[x]);
            next[p] = nx;
            if nx != none {
                prev[nx] = p;
            }
        }
    };
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        for x in [ret_entry[op_of(e)], e] {
            let (p, nx) = (prev[x], next[x]);
            next[p] = x;
            if nx != none {
                prev[nx] = x;
            }
        }
    };
    let words = n.div_ceil(64).max(1);
    let mut lin = vec![0u64; words];
    // The memo is keyed by a 128-bit Zobrist hash of the linearized set (each op has a random
    // key, the set's hash is their XOR, updated in O(1)), not by the set itself: copying an
    // n-bit set per step made the search quadratic (83 s for a 380k-op history). A collision
    // (odds ~ steps^2 / 2^128) could only prune a branch, i.e. report a legal history as
    // illegal, never accept an illegal one.
    let zkeys: Vec<(u64, u64)> = {
        let mut r = Rng::new(0x11ea_4a61_2ab1_e5ed ^ n as u64);
        (0..n).map(|_| (r.next_u64(), r.next_u64())).collect()
    };
    let mut zh = (0u64, 0u64);
    let mut cache: HashSet<((u64, u64), KState)> = HashSet::new();
    // The stack of linearized calls: (call entry, state before, alternative taken).
    let mut stack: Vec<(usize, KState, usize)> = Vec::new();
    let mut state = ABSENT;
    let mut entry = next[0];
    let mut steps = 0u64;
    // The deepest point reached, for the failure report (snapshot when the search turns back
    // from a new deepest point, so a straight run copies nothing).
    let mut best: (usize, KState, Vec<u64>) = (0, state, lin.clone());
    // Tries alternatives `from..` of the op of call entry `e` in `state`: the first whose
    // (linearized + op, new state) is not cached.
    let try_op = |e: usize,
                  from: usize,
                  state: &KState,
                  lin: &mut Vec<u64>,
                  zh: &mut (u64, u64),
                  cache: &mut HashSet<((u64, u64), KState)>|
     -> Option<(usize, KState)> {
        let i = op_of(e);
        let alts = model.step(state, i as u32, &ops[i]);
        let with = (zh.0 ^ zkeys[i].0, zh.1 ^ zkeys[i].1);
        for (a, s) in alts.into_iter().enumerate().skip(from) {
            if cache.insert((with, s)) {
                lin[i / 64] |= 1 << (i % 64);
                *zh = with;
                return Some((a, s));
            }
        }
        None
    };
    while next[0] != none {
        steps += 1;
        if steps > max_steps {
            if stack.len() > best.0 {
                best = (stack.len(), state, lin.clone());
            }
            return Err(failure(ops, &best, true, n, steps, &model));
        }
        if entry == none {
            unreachable!("the list always ends with a return entry");
        }
        if !is_ret(entry) {
            if let Some((a, s)) = try_op(entry, 0, &state, &mut lin, &mut zh, &mut cache) {
                stack.push((entry, state, a));
                state = s;
                lift(&mut next, &mut prev, entry);
                entry = next[0];
            } else {
                entry = next[entry];
            }
            continue;
        }
        // A return whose op is not linearized: undo the last linearization and try on.
        if stack.len() > best.0 {
            best = (stack.len(), state, lin.clone());
        }
        let Some((e, before, a)) = stack.pop() else {
            return Err(failure(ops, &best, false, n, steps, &model));
        };
        state = before;
        let i = op_of(e);
        lin[i / 64] &= !(1 << (i % 64));
        zh = (zh.0 ^ zkeys[i].0, zh.1 ^ zkeys[i].1);
        unlift(&mut next, &mut prev, e);
        // Another outcome of the same op at the same place, else the next entry.
        if let Some((a2, s)) = try_op(e, a + 1, &state, &mut lin, &mut zh, &mut cache) {
            stack.push((e, state, a2));
            state = s;
            lift(&mut next, &mut prev, e);
            entry = next[0];
        } else {
            entry = next[e];
        }
    }
    Ok(CheckStats { ops: n, steps, cache: cache.len() })
}

/// The failure report: the state after the longest linearizable prefix found, and the
/// smallest failing window: the operations not in that prefix that had been invoked before
/// the earliest return among them (one of them can be placed nowhere), plus that return.
fn failure(
    ops: &[Op],
    best: &(usize, KState, Vec<u64>),
    gave_up: bool,
    n: usize,
    steps: u64,
    _model: &Model<'_>,
) -> NotLinearizable {
    let (depth, state, lin) = best;
    let in_prefix = |i: usize| lin[i / 64] & (1 << (i % 64)) != 0;
    let pending: Vec<usize> = (0..n).filter(|&i| !in_prefix(i)).collect();
    let first_ret = pending.iter().map(|&i| ops[i].ret_at).min().unwrap_or(u64::MAX);
    let mut window: Vec<usize> = pending.iter().copied().filter(|&i| ops[i].invoke <= first_ret).collect();
    window.sort_by_key(|&i| ops[i].invoke);
    let mut last: Vec<usize> = (0..n).filter(|&i| in_prefix(i)).collect();
    last.sort_by_key(|&i| ops[i].ret_at);
    let last: Vec<usize> = last.into_iter().rev().take(5).collect();
    let mut report = format!(
        "{} after {steps} search steps: the longest linearizable prefix has {depth} of {n} operations, \
         leaving the key in state {state:?}.\nSmallest failing window ({} operations invoked before the \
         earliest return not placed; one of them fits nowhere):\n",
        if gave_up { "SEARCH BOUND REACHED (not proven illegal)" } else { "NOT LINEARIZABLE" },
        window.len()
    );
    for &i in window.iter().take(40) {
        report += &format!("  #{i} {}\n", ops[i]);
    }
    if window.len() > 40 {
        report += &format!("  ... and {} more\n", window.len() - 40);
    }
    report += "Latest operations of the prefix (newest first):\n";
    for &i in &last {
        report += &format!("  #{i} {}\n", ops[i]);
    }
    NotLinearizable { gave_up, linearized: *depth, total: n, report }
}

// ---- the checker's own tests -----------------------------------------------------------------

fn op(proc_: u32, invoke: u64, ret_at: u64, call: Call, ret: Ret) -> Op {
    Op { proc_, call, ret, invoke, ret_at }
}

fn assert_rejected(name: &str, ops: &[Op], deaths: &Deaths) {
    match check_history(ops, deaths, 1_000_000) {
        Ok(_) => panic!("the checker ACCEPTED the non-linearizable history `{name}`"),
        Err(e) => {
            assert!(!e.gave_up, "{name}: the checker gave up instead of rejecting:\n{}", e.report);
            assert!(e.report.contains("NOT LINEARIZABLE") && e.report.contains('#'), "{}", e.report);
            println!("{name}: rejected as expected ({} of {} placed)\n{}", e.linearized, e.total, e.report);
        }
    }
}

fn assert_accepted(name: &str, ops: &[Op], deaths: &Deaths) {
    if let Err(e) = check_history(ops, deaths, 1_000_000) {
        panic!("the checker rejected the legal history `{name}`:\n{}", e.report);
    }
}

#[test]
fn checker_rejects_stale_read_after_completed_write() {
    let d = Deaths::default();
    let h = [
        op(1, 0, 10, Call::Set { vid: 1 }, Ret::Written { version: 5 }),
        op(1, 20, 30, Call::Set { vid: 2 }, Ret::Written { version: 6 }),
        // Invoked after the second write returned, yet it reads the first.
        op(2, 40, 50, Call::Get, Ret::Value { vid: 1, version: 5, lock_id: 0 }),
    ];
    assert_rejected("stale read", &h, &d);
    // The same read overlapping the second write is legal.
    let mut ok = h;
    ok[2].invoke = 25;
    assert_accepted("read overlapping the write", &ok, &d);
    // A read of a deleted key after the delete returned: stale too.
    let h = [
        op(1, 0, 10, Call::Set { vid: 1 }, Ret::Written { version: 5 }),
        op(1, 20, 30, Call::Delete, Ret::Bool(true)),
        op(2, 40, 50, Call::Get, Ret::Value { vid: 1, version: 5, lock_id: 0 }),
    ];
    assert_rejected("read after delete", &h, &d);
}

#[test]
fn checker_rejects_lost_update() {
    let d = Deaths::default();
    // Two compare-and-sets from the same version both succeed: one update is lost.
    let h = [
        op(1, 0, 10, Call::Set { vid: 1 }, Ret::Written { version: 5 }),
        op(1, 20, 60, Call::Cas { expected: 5, vid: 2 }, Ret::Written { version: 7 }),
        op(2, 25, 65, Call::Cas { expected: 5, vid: 3 }, Ret::Written { version: 8 }),
    ];
    assert_rejected("lost update (two CAS from one version)", &h, &d);
    // Two locks both granted without a takeover.
    let h = [
        op(1, 0, 10, Call::Set { vid: 1 }, Ret::Written { version: 5 }),
        op(1, 20, 60, Call::Lock, Ret::Locked { lock_id: 7, vid: 1, took_over: false }),
        op(2, 25, 65, Call::Lock, Ret::Locked { lock_id: 8, vid: 1, took_over: false }),
    ];
    assert_rejected("two locks granted at once", &h, &d);
    // One CAS wins, the other reports the winner's version: legal.
    let h = [
        op(1, 0, 10, Call::Set { vid: 1 }, Ret::Written { version: 5 }),
        op(1, 20, 60, Call::Cas { expected: 5, vid: 2 }, Ret::Written { version: 7 }),
        op(2, 25, 65, Call::Cas { expected: 5, vid: 3 }, Ret::VersionMismatch { found: 7 }),
    ];
    assert_accepted("one CAS wins", &h, &d);
}

#[test]
fn checker_handles_locks_and_unknown_outcomes() {
    let mut d = Deaths::default();
    let base = [
        op(1, 0, 10, Call::Set { vid: 1 }, Ret::Written { version: 5 }),
        op(1, 20, 30, Call::Lock, Ret::Locked { lock_id: 6, vid: 1, took_over: false }),
    ];
    // A takeover while the owner (process 1) lives: illegal.
    let mut h = base.to_vec();
    h.push(op(2, 40, 50, Call::Lock, Ret::Locked { lock_id: 9, vid: 1, took_over: true }));
    assert_rejected("takeover of a live owner's lock", &h, &d);
    // Once process 1 was killed: legal. And "locked" after it was reaped: illegal.
    d.killed.insert(1, 35);
    d.reaped.insert(1, 36);
    assert_accepted("takeover of a dead owner's lock", &h, &d);
    let mut h = base.to_vec();
    h.push(op(2, 40, 50, Call::Lock, Ret::Busy { lock_id: 6 }));
    assert_rejected("busy lock of a reaped owner", &h, &d);
    let d = Deaths::default();
    // An unlock's new version is unknown: a later read may show any unseen version.
    let mut h = base.to_vec();
    h.push(op(1, 40, 50, Call::Unlock { lock_id: 6 }, Ret::Done));
    h.push(op(2, 60, 70, Call::Get, Ret::Value { vid: 1, version: 11, lock_id: 0 }));
    h.push(op(2, 80, 90, Call::Cas { expected: 11, vid: 2 }, Ret::Written { version: 12 }));
    assert_accepted("unlock then read its version", &h, &d);
    // ... but not a version another write returned.
    let mut bad = h.clone();
    bad[3].ret = Ret::Value { vid: 1, version: 5, lock_id: 0 };
    assert_rejected("unlock then read an old version", &bad, &d);
    // A write that never returned may have landed (seen later) or not (never seen).
    let h = [
        op(1, 0, 10, Call::Set { vid: 1 }, Ret::Written { version: 5 }),
        op(3, 20, u64::MAX, Call::Set { vid: 2 }, Ret::Unknown),
        op(2, 100, 110, Call::Get, Ret::Value { vid: 2, version: 8, lock_id: 0 }),
        op(2, 120, 130, Call::Delete, Ret::Bool(true)),
    ];
    assert_accepted("a killed write that landed", &h, &d);
    let h = [
        op(1, 0, 10, Call::Set { vid: 1 }, Ret::Written { version: 5 }),
        op(3, 20, u64::MAX, Call::Set { vid: 2 }, Ret::Unknown),
        op(2, 100, 110, Call::Get, Ret::Value { vid: 1, version: 5, lock_id: 0 }),
    ];
    assert_accepted("a killed write that did not land", &h, &d);
    // It cannot land before it was invoked.
    let h = [
        op(1, 0, 10, Call::Set { vid: 1 }, Ret::Written { version: 5 }),
        op(2, 20, 30, Call::Get, Ret::Value { vid: 2, version: 8, lock_id: 0 }),
        op(3, 40, u64::MAX, Call::Set { vid: 2 }, Ret::Unknown),
    ];
    assert_rejected("a read of a write not yet invoked", &h, &d);
}

#[test]
fn checker_bound_fails_clearly() {
    // Legal, but the bound is too small to finish: the failure says so (not "illegal"), and
    // shows where the search stood.
    let h = [
        op(1, 0, 10, Call::Set { vid: 1 }, Ret::Written { version: 5 }),
        op(2, 5, 30, Call::Get, Ret::Value { vid: 1, version: 5, lock_id: 0 }),
        op(1, 20, 40, Call::Delete, Ret::Bool(true)),
    ];
    let e = check_history(&h, &Deaths::default(), 2).expect_err("a bound of 2 steps cannot finish");
    assert!(e.gave_up && e.report.contains("SEARCH BOUND REACHED") && e.report.contains('#'), "{}", e.report);
    assert!(check_history(&h, &Deaths::default(), 1000).is_ok());
}

// ---- the multi-process run ---------------------------------------------------------------------

const ROLE_VAR: &str = "GDS_LIN_ROLE";

/// Journal record, `REC_WORDS` words: [state, call kind | key << 8, arg a, arg b, invoke ns,
/// return ns, result kind, r0, r1, r2]. state: 0 = empty, 1 = invoked, 2 = returned. The
/// fields are written before the state word (SeqCst): a record in state 1 whose process was
/// killed is an operation with an unknown outcome.
const REC_WORDS: usize = 10;
const ST_INVOKED: u64 = 1;
const ST_RETURNED: u64 = 2;

struct Journal {
    map: memmap2::MmapRaw,
    words: usize,
}

impl Journal {
    fn create(path: &Path, records: usize) -> Journal {
        let f = std::fs::File::create_new(path).expect("create journal");
        f.set_len((records * REC_WORDS * 8) as u64).expect("size journal");
        Journal::open(path)
    }
    fn open(path: &Path) -> Journal {
        let f = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open journal");
        let map = memmap2::MmapRaw::map_raw(&f).expect("map journal");
        let words = map.len() / 8;
        Journal { map, words }
    }
    fn records(&self) -> usize {
        self.words / REC_WORDS
    }
    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.words, "journal word {i} out of bounds");
        // SAFETY: the mapping is page aligned and `words * 8` bytes long, lives as long as
        // `self`, and every process accesses it only through atomics.
        unsafe { &*(self.map.as_mut_ptr() as *const AtomicU64).add(i) }
    }
    fn rec(&self, r: usize) -> [u64; REC_WORDS] {
        std::array::from_fn(|k| self.word(r * REC_WORDS + k).load(Ordering::SeqCst))
    }
}

fn encode_call(c: Call) -> (u64, u64, u64) {
    match c {
        Call::Get => (0, 0, 0),
        Call::Set { vid } => (1, vid, 0),
        Call::Add { vid } => (2, vid, 0),
        Call::Cas { expected, vid } => (3, expected, vid),
        Call::Delete => (4, 0, 0),
        Call::Touch => (5, 0, 0),
        Call::Lock => (6, 0, 0),
        Call::Unlock { lock_id } => (7, lock_id, 0),
        Call::SetUnlock { lock_id, vid } => (8, lock_id, vid),
    }
}

fn decode_call(k: u64, a: u64, b: u64) -> Call {
    match k {
        0 => Call::Get,
        1 => Call::Set { vid: a },
        2 => Call::Add { vid: a },
        3 => Call::Cas { expected: a, vid: b },
        4 => Call::Delete,
        5 => Call::Touch,
        6 => Call::Lock,
        7 => Call::Unlock { lock_id: a },
        8 => Call::SetUnlock { lock_id: a, vid: b },
        _ => panic!("journal: bad call kind {k}"),
    }
}

fn encode_ret(r: Ret) -> [u64; 4] {
    match r {
        Ret::Unknown => [0, 0, 0, 0],
        Ret::Value { vid, version, lock_id } => [1, vid, version, lock_id],
        Ret::Absent => [2, 0, 0, 0],
        Ret::Written { version } => [3, version, 0, 0],
        Ret::Bool(b) => [4, b as u64, 0, 0],
        Ret::Done => [5, 0, 0, 0],
        Ret::Locked { lock_id, vid, took_over } => [6, lock_id, vid, took_over as u64],
        Ret::Busy { lock_id } => [7, lock_id, 0, 0],
        Ret::Exists => [8, 0, 0, 0],
        Ret::NotFound => [9, 0, 0, 0],
        Ret::VersionMismatch { found } => [10, found, 0, 0],
        Ret::LockMismatch { held } => [11, held, 0, 0],
    }
}

fn decode_ret(w: [u64; 4]) -> Ret {
    match w[0] {
        0 => Ret::Unknown,
        1 => Ret::Value { vid: w[1], version: w[2], lock_id: w[3] },
        2 => Ret::Absent,
        3 => Ret::Written { version: w[1] },
        4 => Ret::Bool(w[1] != 0),
        5 => Ret::Done,
        6 => Ret::Locked { lock_id: w[1], vid: w[2], took_over: w[3] != 0 },
        7 => Ret::Busy { lock_id: w[1] },
        8 => Ret::Exists,
        9 => Ret::NotFound,
        10 => Ret::VersionMismatch { found: w[1] },
        11 => Ret::LockMismatch { held: w[1] },
        k => panic!("journal: bad result kind {k}"),
    }
}

fn hot_key(k: u64) -> Vec<u8> {
    format!("hot{k}").into_bytes()
}

fn lin_opts() -> Options {
    Options {
        capacity_bytes: 4 << 20,
        max_entries: 1024,
        max_key: 16,
        max_value: 1024,
        max_clients: 64,
        feed_len: 1024,
        ..Options::default()
    }
}

/// Value id of a read value, checking it is whole and was written for `key`.
fn vid_of(key: &[u8], v: &[u8]) -> u64 {
    match check_value(key, v) {
        Ok(Some(id)) => id.seq,
        Ok(None) => panic!("value without header under {}", String::from_utf8_lossy(key)),
        Err(e) => panic!("{e}"),
    }
}

/// A child: runs random operations on the hot keys, journaling each, until `ops` are done or
/// the stop word of the control file is set.
#[test]
#[ignore = "child role of processes_are_linearizable"]
fn child_lin_worker() {
    let Ok(role) = std::env::var(ROLE_VAR) else { return };
    assert_eq!(role, "worker");
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let proc_: u32 = env("GDS_PROC").parse().unwrap();
    let keys: u64 = env("GDS_KEYS").parse().unwrap();
    let mut rng = Rng::new(env("GDS_SEED").parse().unwrap());
    let journal = Journal::open(Path::new(&env("GDS_JOURNAL")));
    let control = Journal::open(Path::new(&env("GDS_CONTROL")));
    let st = Store::attach(&env("GDS_SEG")).expect("attach");
    let key_names: Vec<Vec<u8>> = (0..keys).map(hot_key).collect();
    let mut seq = 0u64;
    // What this process last learned of each key: a version, and a lock id it holds.
    let mut seen_version = vec![0u64; keys as usize];
    let mut my_lock = vec![0u64; keys as usize];
    let mut seen_lock = vec![0u64; keys as usize];
    let t0 = Instant::now();
    for r in 0..journal.records() {
        if control.word(0).load(Ordering::Relaxed) != 0 || t0.elapsed() > Duration::from_secs(120) {
            break;
        }
        let k = rng.below(keys) as usize;
        let key = &key_names[k];
        let mut fresh_vid = || {
            seq += 1;
            ((proc_ as u64) << 32) | seq
        };
        let call = match rng.below(100) {
            0..25 => Call::Get,
            25..40 => Call::Set { vid: fresh_vid() },
            40..45 => Call::Add { vid: fresh_vid() },
            45..58 => {
                let expected =
                    if rng.below(4) == 0 { seen_version[k].saturating_sub(1) } else { seen_version[k] };
                Call::Cas { expected, vid: fresh_vid() }
            }
            58..64 => Call::Delete,
            64..68 => Call::Touch,
            68..80 => Call::Lock,
            80..90 => {
                let id = if my_lock[k] != 0 && rng.below(5) != 0 { my_lock[k] } else { seen_lock[k] };
                Call::Unlock { lock_id: id }
            }
            _ => {
                let id = if my_lock[k] != 0 && rng.below(5) != 0 { my_lock[k] } else { seen_lock[k] };
                Call::SetUnlock { lock_id: id, vid: fresh_vid() }
            }
        };
        let (kind, a, b) = encode_call(call);
        let base = r * REC_WORDS;
        let w = |i: usize, v: u64| journal.word(base + i).store(v, Ordering::SeqCst);
        w(1, kind | (k as u64) << 8);
        w(2, a);
        w(3, b);
        w(4, mono_ns());
        control.word(cur_word(proc_)).store(r as u64, Ordering::SeqCst);
        w(0, ST_INVOKED);
        // Sizes drift: a 200-byte band whose start walks up to 780 B as the process writes,
        // so the hot keys' records move between size classes (issue 13 item 4).
        let value =
            |vid: u64| make_value(key, proc_, vid, 0, 32 + ((vid / 32 * 97) % 580 + vid % 200) as usize);
        let never = Expiry::Never;
        let ret = match call {
            Call::Get => match st.get(key).expect("get") {
                None => Ret::Absent,
                Some(e) => Ret::Value {
                    vid: vid_of(key, &e.value),
                    version: e.meta.version,
                    lock_id: e.meta.lock.map_or(0, |l| l.lock_id),
                },
            },
            Call::Set { vid } => Ret::Written { version: st.set(key, &value(vid), never).expect("set") },
            Call::Add { vid } => match st.add(key, &value(vid), never) {
                Ok(version) => Ret::Written { version },
                Err(Error::Exists) => Ret::Exists,
                Err(e) => panic!("add: {e:?}"),
            },
            Call::Cas { expected, vid } => match st.compare_and_set(key, expected, &value(vid), never) {
                Ok(version) => Ret::Written { version },
                Err(Error::VersionMismatch { found, .. }) => Ret::VersionMismatch { found },
                Err(Error::NotFound) => Ret::NotFound,
                Err(e) => panic!("cas: {e:?}"),
            },
            Call::Delete => Ret::Bool(st.delete(key).expect("delete")),
            Call::Touch => Ret::Bool(st.touch(key, never).expect("touch")),
            Call::Lock => match st.lock(key, Duration::from_secs(600)) {
                Ok(None) => Ret::Absent,
                Ok(Some(l)) => {
                    Ret::Locked { lock_id: l.lock_id, vid: vid_of(key, &l.value), took_over: l.took_over }
                }
                Err(Error::Locked { lock_id, .. }) => Ret::Busy { lock_id },
                Err(e) => panic!("lock: {e:?}"),
            },
            Call::Unlock { lock_id } => match st.unlock(key, lock_id) {
                Ok(()) => Ret::Done,
                Err(Error::LockMismatch { held, .. }) => Ret::LockMismatch { held },
                Err(Error::NotFound) => Ret::NotFound,
                Err(e) => panic!("unlock: {e:?}"),
            },
            Call::SetUnlock { lock_id, vid } => match st.set_and_unlock(key, lock_id, &value(vid), never) {
                Ok(version) => Ret::Written { version },
                Err(Error::LockMismatch { held, .. }) => Ret::LockMismatch { held },
                Err(Error::NotFound) => Ret::NotFound,
                Err(e) => panic!("set_and_unlock: {e:?}"),
            },
        };
        let now = mono_ns();
        let [rk, r0, r1, r2] = encode_ret(ret);
        w(6, rk);
        w(7, r0);
        w(8, r1);
        w(9, r2);
        w(5, now);
        w(0, ST_RETURNED);
        // Learn from the result (what a real client would keep).
        match ret {
            Ret::Value { version, lock_id, .. } => {
                seen_version[k] = version;
                seen_lock[k] = lock_id;
            }
            Ret::Written { version } => {
                seen_version[k] = version;
                my_lock[k] = 0;
            }
            Ret::Locked { lock_id, .. } => {
                seen_version[k] = lock_id;
                my_lock[k] = lock_id;
                seen_lock[k] = lock_id;
            }
            Ret::Busy { lock_id } => seen_lock[k] = lock_id,
            Ret::Done => my_lock[k] = 0,
            Ret::VersionMismatch { found } => seen_version[k] = found,
            Ret::LockMismatch { held } => {
                seen_lock[k] = held;
                my_lock[k] = 0;
            }
            _ => {}
        }
        // Spread the operations out a little, so kills and stops land among them.
        if rng.below(2) == 0 {
            std::thread::sleep(Duration::from_micros(rng.below(200)));
        }
    }
    // The time this process stops taking locks: from now on a takeover of its locks is legal.
    control.word(exit_word(proc_)).store(mono_ns(), Ordering::SeqCst);
}

/// The control file's word where worker `proc_` stamps its normal exit.
fn exit_word(proc_: u32) -> usize {
    16 + (proc_ % 1000) as usize
}

/// The control file's word where worker `proc_` names the journal record of its current op.
fn cur_word(proc_: u32) -> usize {
    640 + (proc_ % 1000) as usize
}

/// Stops (SIGSTOP) worker `proc_` (process `pid`) inside an engine call: waits until it is in
/// one, stops it, and if the call returned before the stop landed, lets it go on and tries
/// again (up to 100 times). Returns whether it is stopped mid-operation; it is stopped either way.
fn stop_mid_op(control: &Journal, journal: &Journal, proc_: u32, pid: u32) -> bool {
    for attempt in 0..100 {
        if attempt > 0 {
            signal(pid, libc::SIGCONT);
        }
        await_mid_op(control, journal, proc_);
        signal(pid, libc::SIGSTOP);
        // SAFETY: an all-zero siginfo_t is a valid value (plain C struct).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes only `info`; `pid` is our unreaped child. WNOWAIT: neither the
        // stop nor an exit is consumed, so std's `Child::wait` still reaps it later.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WSTOPPED | libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r != 0 || info.si_code != libc::CLD_STOPPED {
            return false; // it ended meanwhile (std's wait will report how)
        }
        let cur = control.word(cur_word(proc_)).load(Ordering::SeqCst) as usize;
        if cur < journal.records() && journal.word(cur * REC_WORDS).load(Ordering::SeqCst) == ST_INVOKED {
            return true;
        }
    }
    false
}

/// Waits (up to 50 ms) until worker `proc_` is inside an engine call (its current record is
/// invoked, not returned), so the signal that follows lands mid-operation more often than in
/// its pauses between operations.
fn await_mid_op(control: &Journal, journal: &Journal, proc_: u32) {
    let deadline = Instant::now() + Duration::from_millis(50);
    while Instant::now() < deadline {
        let r = control.word(cur_word(proc_)).load(Ordering::SeqCst) as usize;
        if r < journal.records() && journal.word(r * REC_WORDS).load(Ordering::SeqCst) == ST_INVOKED {
            return;
        }
    }
}

struct Worker {
    child: Child,
    proc_: u32,
    journal: PathBuf,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is a child not yet reaped.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}

/// Reads a worker's journal into per-key histories.
fn read_journal(path: &Path, proc_: u32, per_key: &mut [Vec<Op>]) -> (usize, usize) {
    let j = Journal::open(path);
    let (mut done, mut unknown) = (0, 0);
    for r in 0..j.records() {
        let w = j.rec(r);
        if w[0] == 0 {
            break;
        }
        let call = decode_call(w[1] & 0xff, w[2], w[3]);
        let key = (w[1] >> 8) as usize;
        let (ret, ret_at) = if w[0] == ST_RETURNED {
            done += 1;
            (decode_ret([w[6], w[7], w[8], w[9]]), w[5])
        } else {
            unknown += 1;
            (Ret::Unknown, u64::MAX)
        };
        per_key[key].push(Op { proc_, call, ret, invoke: w[4], ret_at });
    }
    (done, unknown)
}

/// Figures of one round.
#[derive(Debug, Default)]
struct Round {
    ops: usize,
    unknown: usize,
    kills: u32,
    /// Kills that landed while the victim was inside an engine call.
    mid_op_kills: u32,
    stops: u32,
    mid_op_stops: u32,
    steps: u64,
}

fn run_round(round: u32, seed: u64, dir: &Path) -> Round {
    let long = long();
    let keys: u64 = 3;
    let procs: u32 = 4;
    let records = if long { 100_000 } else { 20_000 };
    let faults = if long { 80 } else { 16 };
    let run_for = Duration::from_millis(if long { 5_000 } else { 1_200 });
    let seg = Seg::new(&format!("lin{round}"));
    let st = Store::create(&seg.name, &lin_opts()).unwrap();
    let mut rng = Rng::new(seed ^ round as u64);
    let control_path = dir.join(format!("control-{round}"));
    let control = Journal::create(&control_path, 256);
    let mut next_proc = 1u32;
    let mut spawn = |rng: &mut Rng| {
        let proc_ = next_proc + round * 1000;
        next_proc += 1;
        let journal = dir.join(format!("r{round}-p{proc_}.hist"));
        drop(Journal::create(&journal, records));
        let child = child_command(
            "child_lin_worker",
            &[
                (ROLE_VAR, "worker".to_string()),
                ("GDS_PROC", proc_.to_string()),
                ("GDS_KEYS", keys.to_string()),
                ("GDS_SEED", rng.next_u64().to_string()),
                ("GDS_JOURNAL", journal.display().to_string()),
                ("GDS_CONTROL", control_path.display().to_string()),
                ("GDS_SEG", seg.name.clone()),
            ],
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn worker");
        Worker { child, proc_, journal }
    };
    let mut running: Vec<Worker> = (0..procs).map(|_| spawn(&mut rng)).collect();
    let mut finished: Vec<Worker> = Vec::new();
    let mut deaths = Deaths::default();
    let mut r = Round::default();
    let t0 = Instant::now();
    let mut done_faults = 0;
    while (done_faults < faults || t0.elapsed() < run_for) && t0.elapsed() < run_for * 4 {
        if running.iter_mut().all(|w| w.child.try_wait().unwrap().is_some()) {
            break; // every worker filled its journal
        }
        // `faults` faults spread over the run (which lasts until they are all done).
        let gap = run_for.as_millis() as u64 / faults;
        std::thread::sleep(Duration::from_millis(rng.range(gap / 4, gap)));
        if done_faults >= faults {
            continue;
        }
        let v = rng.below(running.len() as u64) as usize;
        // Only a worker under way (it has begun an operation) is a victim.
        let victim_journal = Journal::open(&running[v].journal);
        let started = victim_journal.word(0).load(Ordering::SeqCst) != 0;
        if running[v].child.try_wait().unwrap().is_some() || !started {
            continue;
        }
        done_faults += 1;
        if rng.below(2) == 0 {
            let mut w = running.remove(v);
            if rng.below(4) != 0 {
                r.mid_op_kills += u32::from(stop_mid_op(&control, &victim_journal, w.proc_, w.child.id()));
            }
            deaths.killed.insert(w.proc_, mono_ns());
            signal(w.child.id(), libc::SIGKILL);
            let status = w.child.wait().unwrap();
            deaths.reaped.insert(w.proc_, mono_ns());
            assert!(
                status.signal() == Some(libc::SIGKILL) || status.success(),
                "worker p{} ended otherwise than by our kill: {status}",
                w.proc_
            );
            r.kills += 1;
            finished.push(w);
            running.push(spawn(&mut rng));
        } else {
            let pid = running[v].child.id();
            if rng.below(2) != 0 {
                r.mid_op_stops += u32::from(stop_mid_op(&control, &victim_journal, running[v].proc_, pid));
            } else {
                signal(pid, libc::SIGSTOP);
            }
            std::thread::sleep(Duration::from_millis(rng.range(2, 30)));
            signal(pid, libc::SIGCONT);
            r.stops += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(20));
    control.word(0).store(1, Ordering::SeqCst);
    for mut w in running.drain(..) {
        let status = common::wait_timeout(&mut w.child, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("worker p{} did not stop (hung)", w.proc_));
        assert!(status.success(), "worker p{} failed ({status}): see its message above", w.proc_);
        finished.push(w);
    }
    for w in &finished {
        let t = control.word(exit_word(w.proc_)).load(Ordering::SeqCst);
        if t != 0 {
            deaths.killed.insert(w.proc_, t); // exited normally: its locks may be taken over
        }
    }
    let mut per_key: Vec<Vec<Op>> = vec![Vec::new(); keys as usize];
    for w in &finished {
        let (done, unknown) = read_journal(&w.journal, w.proc_, &mut per_key);
        r.ops += done + unknown;
        r.unknown += unknown;
    }
    common::sweep_fully(&st);
    common::assert_healthy(&st);
    let max_steps = if long { 200_000_000 } else { 20_000_000 };
    for (k, h) in per_key.iter().enumerate() {
        let t = Instant::now();
        match check_history(h, &deaths, max_steps) {
            Ok(s) => {
                r.steps += s.steps;
                println!(
                    "  round {round} key {k}: {} ops linearizable ({} search steps, {} cached states, {:.2} s)",
                    s.ops,
                    s.steps,
                    s.cache,
                    t.elapsed().as_secs_f64()
                );
            }
            Err(e) => panic!(
                "round {round} key {k} (hot{k}), seed {seed}: history of {} ops is {}:\n{}\ndeaths: {deaths:?}",
                h.len(),
                if e.gave_up { "too hard for the search bound" } else { "NOT LINEARIZABLE" },
                e.report
            ),
        }
    }
    r
}

#[test]
fn processes_are_linearizable() {
    let seed = seed_from_env("GDS_SEED");
    let rounds = if long() { 10 } else { 2 };
    println!(
        "linearizability: seed {seed} (replay with GDS_SEED={seed}), {rounds} rounds (GDS_LONG=1 for more)"
    );
    let dir = gardenstate::shm_dir().join(format!("gds-test-lin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    struct RmDir(PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = RmDir(dir.clone());
    let t0 = Instant::now();
    let mut total = Round::default();
    for round in 0..rounds {
        let r = run_round(round, seed, &dir);
        println!("round {round}: {r:?}");
        total.ops += r.ops;
        total.unknown += r.unknown;
        total.kills += r.kills;
        total.stops += r.stops;
        total.mid_op_kills += r.mid_op_kills;
        total.mid_op_stops += r.mid_op_stops;
        total.steps += r.steps;
    }
    println!(
        "linearizability: {} ops in {} key histories checked linearizable ({} with unknown outcome), {} kills ({} \
         mid-operation), {} stops ({} mid-operation), {} search steps, {:.1} s",
        total.ops,
        rounds * 3,
        total.unknown,
        total.kills,
        total.mid_op_kills,
        total.stops,
        total.mid_op_stops,
        total.steps,
        t0.elapsed().as_secs_f64()
    );
}

// ---- differential test against a model map -----------------------------------------------------

/// A result, comparable (the engine's `Error` is not `PartialEq`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Version(u64),
    Got(Option<(Vec<u8>, u64, u64)>),
    Bool(bool),
    Unit,
    Locked(Option<(Vec<u8>, u64)>),
    Exists,
    NotFound,
    Mismatch { found: u64 },
    Busy { lock_id: u64 },
    LockMismatch { held: u64 },
    FullHeap,
    Other(String),
}

fn out_err(e: Error) -> Out {
    match e {
        Error::Exists => Out::Exists,
        Error::NotFound => Out::NotFound,
        Error::VersionMismatch { found, .. } => Out::Mismatch { found },
        Error::Locked { lock_id, .. } => Out::Busy { lock_id },
        Error::LockMismatch { held, .. } => Out::LockMismatch { held },
        Error::Full(FullKind::Heap) => Out::FullHeap,
        e => Out::Other(format!("{e:?}")),
    }
}

#[derive(Debug, Clone)]
struct MEntry {
    value: Vec<u8>,
    version: u64,
    lock: u64,
}

#[test]
fn differential_against_model_map() {
    let seed = seed_from_env("GDS_SEED");
    let n_ops: u64 = if long() { 400_000 } else { 40_000 };
    println!("differential: seed {seed} (replay with GDS_SEED={seed}), {n_ops} ops");
    const VLEN: usize = 3000;
    let opts = Options {
        capacity_bytes: 64 << 10,
        max_entries: 1024,
        max_key: 16,
        max_value: 4096,
        max_clients: 8,
        feed_len: 256,
        ..Options::default()
    };
    // How many records of this size the heap holds: fill a fresh segment.
    let cap = {
        let s = Seg::new("diff-cap");
        let st = Store::create(&s.name, &opts).unwrap();
        let mut n = 0u64;
        while st.set(format!("c{n:03}").as_bytes(), &[1; VLEN], Expiry::Never).is_ok() {
            n += 1;
        }
        n
    };
    let n_keys = cap + 6;
    println!("differential: the heap holds {cap} records; {n_keys} keys");
    let s = Seg::new("diff");
    let st = Store::create(&s.name, &opts).unwrap();
    let mut model: HashMap<Vec<u8>, MEntry> = HashMap::new();
    let mut rng = Rng::new(seed);
    let mut last_version = 0u64;
    let mut counts: HashMap<&'static str, u64> = HashMap::new();
    let mut fulls = 0u64;
    let t0 = Instant::now();
    for i in 0..n_ops {
        let key = format!("c{:03}", rng.below(n_keys)).into_bytes();
        let cur = model.get(&key).cloned();
        let full = model.len() as u64 >= cap;
        let value = make_value(&key, 1, i, 0, VLEN);
        // A plausible version / lock id: the current one mostly, else a stale or a random one.
        let pick = |rng: &mut Rng, cur: u64| match rng.below(4) {
            0 => rng.below(last_version + 2),
            _ => cur,
        };
        let (name, got, want): (&'static str, Out, Out) = match rng.below(100) {
            0..20 => (
                "get",
                match st.get(&key) {
                    Ok(e) => {
                        Out::Got(e.map(|e| (e.value, e.meta.version, e.meta.lock.map_or(0, |l| l.lock_id))))
                    }
                    Err(e) => out_err(e),
                },
                Out::Got(cur.as_ref().map(|c| (c.value.clone(), c.version, c.lock))),
            ),
            20..35 => {
                let got = st.set(&key, &value, Expiry::Never).map_or_else(out_err, Out::Version);
                let want = if full { Out::FullHeap } else { Out::Version(0) };
                ("set", got, want)
            }
            35..42 => {
                let got = st.add(&key, &value, Expiry::Never).map_or_else(out_err, Out::Version);
                let want = match &cur {
                    Some(_) => Out::Exists,
                    None if full => Out::FullHeap,
                    None => Out::Version(0),
                };
                ("add", got, want)
            }
            42..55 => {
                let expected = pick(&mut rng, cur.as_ref().map_or(0, |c| c.version));
                let got = st
                    .compare_and_set(&key, expected, &value, Expiry::Never)
                    .map_or_else(out_err, Out::Version);
                let want = match &cur {
                    None => Out::NotFound,
                    Some(c) if c.version != expected => Out::Mismatch { found: c.version },
                    Some(_) if full => Out::FullHeap,
                    Some(_) => Out::Version(0),
                };
                ("cas", got, want)
            }
            55..65 => ("delete", st.delete(&key).map_or_else(out_err, Out::Bool), Out::Bool(cur.is_some())),
            65..70 => (
                "touch",
                st.touch(&key, Expiry::Never).map_or_else(out_err, Out::Bool),
                Out::Bool(cur.is_some()),
            ),
            70..82 => {
                let after = Duration::from_secs(600);
                let got = match st.lock(&key, after) {
                    Ok(l) => Out::Locked(l.map(|l| {
                        assert_eq!(l.lock_id, l.meta.version, "a lock's id is its version");
                        assert!(!l.took_over, "took over a lock of this live process");
                        (l.value, l.lock_id)
                    })),
                    Err(e) => out_err(e),
                };
                let want = match &cur {
                    None => Out::Locked(None),
                    Some(c) if c.lock != 0 => Out::Busy { lock_id: c.lock },
                    Some(_) if full => Out::FullHeap,
                    Some(c) => Out::Locked(Some((c.value.clone(), 0))),
                };
                ("lock", got, want)
            }
            82..91 => {
                let id = pick(&mut rng, cur.as_ref().map_or(0, |c| c.lock));
                let got = st.unlock(&key, id).map_or_else(out_err, |()| Out::Unit);
                let want = match &cur {
                    None => Out::NotFound,
                    Some(c) if c.lock == 0 || c.lock != id => Out::LockMismatch { held: c.lock },
                    Some(_) if full => Out::FullHeap,
                    Some(_) => Out::Unit,
                };
                ("unlock", got, want)
            }
            _ => {
                let id = pick(&mut rng, cur.as_ref().map_or(0, |c| c.lock));
                let got =
                    st.set_and_unlock(&key, id, &value, Expiry::Never).map_or_else(out_err, Out::Version);
                let want = match &cur {
                    None => Out::NotFound,
                    Some(c) if c.lock == 0 || c.lock != id => Out::LockMismatch { held: c.lock },
                    Some(_) if full => Out::FullHeap,
                    Some(_) => Out::Version(0),
                };
                ("set_and_unlock", got, want)
            }
        };
        *counts.entry(name).or_default() += 1;
        fulls += u64::from(want == Out::FullHeap);
        let k = String::from_utf8_lossy(&key);
        let fail = |what: String| -> ! {
            panic!(
                "differential, seed {seed}, op {i}: {name} {k}: {what}\n  model entry: {cur:?}\n  model size {} of {cap}",
                model.len()
            )
        };
        // New versions (and lock ids) are greater than every earlier one; the model keeps them.
        let fresh = |v: u64, last: &mut u64| {
            if v <= *last {
                fail(format!("new version {v} is not above the previous {last}"));
            }
            *last = v;
            v
        };
        match (name, &want, &got) {
            ("set" | "add" | "cas" | "set_and_unlock", Out::Version(_), Out::Version(v)) => {
                let v = fresh(*v, &mut last_version);
                model.insert(key.clone(), MEntry { value: value.clone(), version: v, lock: 0 });
            }
            ("lock", Out::Locked(Some((wv, _))), Out::Locked(Some((gv, id)))) if wv == gv => {
                let v = fresh(*id, &mut last_version);
                let e = model.get_mut(&key).unwrap();
                e.version = v;
                e.lock = v;
            }
            ("unlock", Out::Unit, Out::Unit) => {
                // The unlock's version is not returned: learn it from a read.
                let e = st.meta_of(&key).unwrap().unwrap_or_else(|| fail("gone after unlock".into()));
                let v = fresh(e.version, &mut last_version);
                if e.lock.is_some() {
                    fail(format!("still locked after unlock: {e:?}"));
                }
                let m = model.get_mut(&key).unwrap();
                m.version = v;
                m.lock = 0;
            }
            ("delete", Out::Bool(true), Out::Bool(true)) => {
                model.remove(&key);
            }
            _ if got == want => {}
            _ => fail(format!("engine returned {got:?}, the model expects {want:?}")),
        }
    }
    // The end state agrees too, and the segment is sound.
    let mut n = 0;
    st.scan(|e| {
        n += 1;
        let m = model
            .get(&e.key)
            .unwrap_or_else(|| panic!("scan: {} not in the model", String::from_utf8_lossy(&e.key)));
        assert_eq!((&e.value, e.meta.version), (&m.value, m.version));
    })
    .unwrap();
    assert_eq!(n, model.len());
    common::assert_healthy(&st);
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort();
    println!(
        "differential: {n_ops} ops agreed with the model ({fulls} expected Full), {counts:?}, {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// Regression: `unlock(key, 0)` and `set_and_unlock(key, 0, ..)` on an UNLOCKED entry used to
/// succeed (0 in the record means "no lock", and the check compared it with the presented id),
/// so a caller with no lock id could write through `set_and_unlock`, and an unlock changed the
/// version of an entry nobody had locked. Found by `processes_are_linearizable`.
#[test]
fn regression_lock_id_zero_does_not_hold_an_unlocked_entry() {
    let s = Seg::new("lockzero");
    let st = Store::create(&s.name, &common::small()).unwrap();
    let v1 = st.set(b"k", b"one", Expiry::Never).unwrap();
    assert!(matches!(st.unlock(b"k", 0), Err(Error::LockMismatch { presented: 0, held: 0 })));
    assert!(matches!(
        st.set_and_unlock(b"k", 0, b"two", Expiry::Never),
        Err(Error::LockMismatch { presented: 0, held: 0 })
    ));
    let e = st.get(b"k").unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.meta.version), (&b"one"[..], v1), "nothing may have changed");
    // Locked: 0 is still not the lock id; the real id works.
    let l = st.lock(b"k", Duration::from_secs(60)).unwrap().unwrap();
    assert!(matches!(st.unlock(b"k", 0), Err(Error::LockMismatch { presented: 0, .. })));
    st.unlock(b"k", l.lock_id).unwrap();
    common::assert_healthy(&st);
}
