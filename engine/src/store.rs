//! `Store`: the public handle, and the operations built from the index, record, heap, client
//! and feed modules.
//!
//! Every write follows one path (`mutate`): look the key up, decide from what is there, take a
//! block and a feed position, write the new record, publish it with one CAS on the index slot
//! (or remove the slot with one CAS), then free what it displaced and record the change. A CAS
//! that fails means someone else changed the key first: the loop starts over from the lookup,
//! keeping the block and feed position it already took (the position only while it is newer
//! than the record found, so a record's version is always above the one it replaces).
//! Before the publishing CAS the writer journals the block it viewed and re-checks it
//! (`journal_old`, heap.rs H5): the CAS compares a slot word with 14 bits of generation, and
//! H5 is what keeps that word from coming back with another record behind it, however long
//! the writer stalls. Nothing waits on another client, except `lock_wait`, which sleeps on a
//! shared futex word that every release of a lock wakes (lockwait.rs).

use crate::clients::{C_J_NEW, C_J_OLD, C_RECENT_FREE, C_WRITING};
use crate::error::{Error, FullKind, Result};
use crate::failpoint::failpoint;
use crate::feed::{ChangeKind, FeedRead};
use crate::heap::Block;
use crate::layout::{self, Geometry, Options, block, slot};
use crate::os;
use crate::record::{LockWords, NewRecord, Sink, View};
use crate::segment::{DEFAULT_READY_WAIT, Segment};
use crate::stats::{self, Stats};
use crate::sync::Ordering;
use crate::table::{Member, Probe, Settled};
use std::cell::RefCell;
use std::sync::atomic::AtomicU64 as ProcessAtomicU64;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// When an entry expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Never (until deleted).
    Never,
    /// A fixed time after this write.
    After(Duration),
    /// A time after the last access: every read or touch pushes the deadline out again
    /// (ASP.NET session timeout semantics).
    Sliding(Duration),
}

/// Whether the segment accepts writes from its local workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Writable,
    /// A standby replica: only the replicator writes.
    Replica,
    /// A primary that lost its quorum: nobody writes.
    Fenced,
}

/// A held session lock, as seen by someone who does not hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockInfo {
    pub lock_id: u64,
    pub age: Duration,
}

/// Metadata of an entry, returned with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The entry's version: changes on every write, usable with `compare_and_set`.
    pub version: u64,
    /// Length of the value in bytes.
    pub len: usize,
    /// Time left before expiry; `None` if the entry never expires.
    pub ttl_left: Option<Duration>,
    /// The sliding window, if reads and touches push the expiry out (`Expiry::Sliding`).
    pub sliding: Option<Duration>,
    /// The session lock, if the entry is locked.
    pub lock: Option<LockInfo>,
}

/// A value with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub meta: Meta,
}

/// A successful `lock`: the item and the id that unlocks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked {
    pub value: Vec<u8>,
    pub lock_id: u64,
    pub meta: Meta,
    /// The lock was taken over from a holder that timed out or whose process died.
    pub took_over: bool,
}

/// One live entry met by `scan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEntry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub meta: Meta,
    /// The index slot (matches `Change::slot` in the feed).
    pub slot: u32,
}

/// An order-independent digest of a segment's live content (`Store::digest`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest {
    pub entries: u64,
    /// The wrapping sum of each entry's hash.
    pub sum: u64,
}

/// What one `sweep` call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// False if another client held the sweeper lease (nothing was done).
    pub ran: bool,
    pub examined: u64,
    pub expired: u64,
    pub dead_clients_reclaimed: u64,
}

/// The fixed shape of a segment, as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub segment_bytes: u64,
    pub heap_bytes: u64,
    pub page_size: u64,
    pub max_entries: u64,
    /// Slots keys can occupy (seven of every eight index positions).
    pub index_slots: u64,
    pub max_key: u64,
    pub max_value: u64,
    pub max_clients: u64,
    pub feed_len: u64,
    pub evict: bool,
    pub dataset_id: u64,
}

impl Info {
    /// The options that create a segment of this shape (mode 0600: permissions are the
    /// creator's choice, not part of the shape). Standbys and restores use it.
    pub fn options(&self) -> Options {
        Options {
            capacity_bytes: self.heap_bytes,
            max_entries: self.max_entries,
            max_key: u32::try_from(self.max_key).unwrap_or(u32::MAX),
            max_value: self.max_value,
            max_clients: u32::try_from(self.max_clients).unwrap_or(u32::MAX),
            feed_len: self.feed_len,
            evict: self.evict,
            mode: 0o600,
        }
    }
}

/// A handle on a segment, shared by all threads of a process (`Store` is `Send + Sync`; wrap
/// it in an `Arc`). A thread holds a client slot of the segment only while it is inside an
/// operation (clients.rs): any number of threads may use it.
pub struct Store {
    pub(crate) seg: Arc<Segment>,
    id: u64,
}

/// A thread's client state for one store, in this process (after a fork, the child makes
/// its own: its pid, not the parent's, goes into the slots it claims).
struct TlsClient {
    store_id: u64,
    fork_gen: u64,
    seg: Weak<Segment>,
    /// The owner word this thread claims slots with (`Segment::client_identity`).
    me: u64,
    pid: u32,
    /// The slot this thread held last: its next claim tries it first.
    hint: usize,
    rng: u64,
    writes: u32,
}

/// The slot held by one operation: released when the operation ends, recovered like a dead
/// client's if it unwinds (clients.rs `abandon_client`).
struct HeldSlot<'a> {
    seg: &'a Segment,
    idx: usize,
    me: u64,
}

impl Drop for HeldSlot<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.seg.abandon_client(self.idx, self.me);
        } else {
            self.seg.release_client(self.idx);
        }
    }
}

thread_local! {
    static CLIENTS: RefCell<Vec<TlsClient>> = const { RefCell::new(Vec::new()) };
}

static NEXT_STORE_ID: ProcessAtomicU64 = ProcessAtomicU64::new(1);

/// The client context of one operation.
struct Ctx {
    idx: usize,
    base: usize,
    pid: u32,
    /// The owner word of the slot (`Segment::client_identity`).
    me: u64,
    rnd: u64,
    /// This write is the client's `SWEEP_CHECK_EVERY`-th since its last look: look whether
    /// an opportunistic sweep is due (`sweep_if_due`).
    sweep_due: bool,
}

/// Unwinding: a panic inside an operation (caught by a caller: the C ABI's boundary catches
/// every panic) must leave the segment as a kill at that instruction would, and give back
/// what reclaiming the killed client would; the client itself lives on. Three drop guards do
/// it, each disarmed (released, emptied, or done) on the way out of a normal return:
/// `HeldSlot` recovers the client's journal as a reclaimer would, lowers its `C_WRITING` and
/// frees the slot (clients.rs `abandon_client`); `FeedReservation` records a feed position
/// that published nothing as a `Nop` (a position whose record was published is emptied at
/// the publishing CAS and left to the code after it, pending like a killed writer's);
/// `LeaseRelease` gives the sweeper lease back instead of leaving it held until it times out.
/// A feed position taken by a write and not (yet) published: written as a `Nop` when dropped.
struct FeedReservation<'s> {
    seg: &'s Segment,
    /// The reserving client's slot (its `C_FEED` claim is dropped with the entry).
    base: usize,
    pos: Option<u64>,
    hash: u64,
}

impl Drop for FeedReservation<'_> {
    fn drop(&mut self) {
        if let Some(pos) = self.pos {
            self.seg.feed_write(self.base, pos, ChangeKind::Nop, 0, 0, self.hash);
        }
    }
}

/// The sweeper lease this client holds (`mine`), released when dropped if still its own.
struct LeaseRelease<'s> {
    lease: &'s crate::sync::AtomicU64,
    mine: u64,
}

impl Drop for LeaseRelease<'_> {
    fn drop(&mut self) {
        let _ = self.lease.compare_exchange(self.mine, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// Writes between a client's looks at whether an opportunistic sweep is due.
const SWEEP_CHECK_EVERY: u32 = 64;
/// Opportunistic sweeps are paced by time, not by writes: at most one every 100 ms in the
/// whole segment, each examining 1/600 of the index, so the index is swept about once a
/// minute whatever the write rate. (Pacing by writes swept a 1M-entry table every ~110k
/// writes and cost more than half of every set's time.)
const SWEEP_INTERVAL_MS: u64 = 100;
const SWEEP_SHARE: u64 = 600;
const SWEEP_LEASE_MS: u64 = 2_000;
/// The most index slots an opportunistic sweep examines (the 1/600 share, capped), so no
/// write pays for more than this however large the index.
const SWEEP_MAX_SLOTS: u64 = 1 << 16;
/// Client slots an opportunistic sweep looks at (a dead client's slot and journaled blocks
/// are reclaimed within max_clients / 16 sweeps, 3.2 s for 512 slots).
const SWEEP_CLIENTS: u64 = 16;
/// What an insert that finds the heap full sweeps before it fails: a slice of the index and
/// of the client table (their cursors are shared, so the failing inserts of every process
/// together go round both). A constant, so a failing insert costs O(1) whatever the size.
const FULL_SWEEP_SLOTS: u64 = 128;
const FULL_SWEEP_CLIENTS: u64 = 4;

impl Store {
    /// Creates segment `name` with `opts`. Fails if it exists (see [`Store::open`]).
    pub fn create(name: &str, opts: &Options) -> Result<Store> {
        match Segment::create(name, opts)? {
            Some(seg) => Ok(Store::from_segment(seg)),
            None => Err(Error::Io {
                op: "create",
                path: os::segment_path(name)?.display().to_string(),
                source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            }),
        }
    }

    /// Attaches to existing segment `name` (waiting up to 5 s for a concurrent creator).
    pub fn attach(name: &str) -> Result<Store> {
        Store::attach_inner(name, false)
    }

    /// Attaches to a group-shared segment created by another user of this group (mode 0660).
    pub fn attach_group(name: &str) -> Result<Store> {
        Store::attach_inner(name, true)
    }

    fn attach_inner(name: &str, allow_group: bool) -> Result<Store> {
        match Segment::attach(name, DEFAULT_READY_WAIT, allow_group)? {
            Some(seg) => Store::from_attached(seg),
            None => Err(Error::Io {
                op: "attach",
                path: os::segment_path(name)?.display().to_string(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            }),
        }
    }

    /// Creates segment `name`, or attaches to it if it exists: the way every worker of a pool
    /// should open the store, however many start at once. An existing segment made with other
    /// capacity options is refused with `Incompatible`.
    pub fn open(name: &str, opts: &Options) -> Result<Store> {
        let want = Geometry::from_options(opts)?;
        Store::open_checked(name, opts, |store| {
            let seg = &store.seg;
            if seg.g != want || seg.evict != opts.evict {
                return Err(Error::Incompatible {
                    what: "segment options",
                    expected: format!("{want:?} evict={}", opts.evict),
                    found: format!("{:?} evict={}", seg.g, seg.evict),
                });
            }
            Ok(())
        })
    }

    /// As [`Store::open`], with the caller's own rule for an existing segment: `accept` sees
    /// the attached store and refuses it with its own error (the C ABI's `gds_open` checks
    /// only the options its caller gave). A segment created here is not checked. Attaching
    /// accepts a group segment when `opts.mode` is 0660.
    pub fn open_checked<E: From<Error>>(
        name: &str,
        opts: &Options,
        accept: impl Fn(&Store) -> std::result::Result<(), E>,
    ) -> std::result::Result<Store, E> {
        let start = Instant::now();
        for _ in 0..100 {
            if let Some(seg) = Segment::create(name, opts)? {
                return Ok(Store::from_segment(seg));
            }
            if let Some(seg) = Segment::attach(name, DEFAULT_READY_WAIT, opts.mode & 0o060 != 0)? {
                let store = Store::from_attached(seg)?;
                accept(&store)?;
                return Ok(store);
            }
            // Destroyed between our create and attach attempts: try again.
        }
        Err(Error::NotReady { waited: start.elapsed() }.into())
    }

    /// Removes segment `name` (see `Segment::destroy`): stores attached to it, in any
    /// process, fail their next operation with `Error::Destroyed`. Returns whether it existed.
    pub fn destroy(name: &str) -> Result<bool> {
        Segment::destroy(name)
    }

    /// The processes attached to segment `name` (a `Store` on it not yet dropped), as the
    /// kernel records them; `None` if there is no such segment. See `Segment::holders`.
    pub fn holders(name: &str) -> Result<Option<crate::Holders>> {
        Segment::holders(name)
    }

    pub(crate) fn from_segment(seg: Segment) -> Store {
        Store { seg: Arc::new(seg), id: NEXT_STORE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed) }
    }

    /// A store on a segment this process attached to, after checking this process may use it
    /// (its PID namespace: `Segment::client_identity`), so the refusal comes at attach.
    fn from_attached(seg: Segment) -> Result<Store> {
        seg.client_identity()?;
        Ok(Store::from_segment(seg))
    }

    /// The segment's fixed shape.
    pub fn info(&self) -> Info {
        let g = &self.seg.g;
        Info {
            segment_bytes: g.segment_bytes,
            heap_bytes: g.n_pages * g.page_size,
            page_size: g.page_size,
            max_entries: g.max_entries,
            index_slots: g.n_buckets * (layout::BUCKET_SLOTS as u64 - 1),
            max_key: g.max_key,
            max_value: g.max_value,
            max_clients: g.max_clients,
            feed_len: g.feed_len,
            evict: self.seg.evict,
            dataset_id: self.seg.mem.w(layout::H_DATASET_ID).load(Ordering::Relaxed),
        }
    }

    /// Runs `f` holding a client slot, claimed for this operation and released after it
    /// (clients.rs). The thread's identity is made on its first use (and again in a child
    /// after `fork()`, whose pid is not the parent's). `write`: `f` is a mutation, counted
    /// towards the client's next look at the sweep (`Ctx::sweep_due`).
    fn with_client<T>(&self, write: bool, f: impl FnOnce(&mut Ctx) -> Result<T>) -> Result<T> {
        // One load of a line nothing writes after creation but `destroy` (layout.rs `DESTROYED`).
        if self.seg.mem.w(layout::H_STATE).load(Ordering::Relaxed) != layout::READY {
            return Err(Error::Destroyed { path: self.seg.path.display().to_string() });
        }
        let fork_gen = os::fork_generation();
        let (idx, me, pid, rnd, sweep_due) = CLIENTS.with(|cell| -> Result<_> {
            let mut v = cell.borrow_mut();
            // Store ids are never reused, so a live entry for this store can only be this
            // thread's current one; stale entries (another fork, dropped stores) are pruned
            // only when an entry is made, keeping every operation's lookup a short scan.
            let c = match v.iter().position(|c| c.store_id == self.id && c.fork_gen == fork_gen) {
                Some(i) => &mut v[i],
                None => {
                    v.retain(|c| c.fork_gen == fork_gen && c.seg.strong_count() > 0);
                    let me = self.seg.client_identity()?;
                    let (pid, _) = os::self_identity()?;
                    let seed = os::random_u64().unwrap_or(me) | 1;
                    v.push(TlsClient {
                        store_id: self.id,
                        fork_gen,
                        seg: Arc::downgrade(&self.seg),
                        me,
                        pid,
                        hint: seed as usize,
                        rng: seed,
                        writes: 0,
                    });
                    v.last_mut().expect("just pushed")
                }
            };
            c.hint = self.seg.claim_client(c.me, c.hint)?;
            // xorshift64: spreads clients over bitmap words and eviction samples.
            c.rng ^= c.rng << 13;
            c.rng ^= c.rng >> 7;
            c.rng ^= c.rng << 17;
            // Writes only: counting reads too, a client whose operations cycle with its writes
            // off the multiples of SWEEP_CHECK_EVERY never looked at the sweep.
            if write {
                c.writes = c.writes.wrapping_add(1);
            }
            Ok((c.hint, c.me, c.pid, c.rng, write && c.writes % SWEEP_CHECK_EVERY == 0))
        })?;
        let held = HeldSlot { seg: &self.seg, idx, me };
        let base = self.seg.client_base(idx);
        let mut ctx = Ctx { idx, base, pid, me, rnd, sweep_due };
        let r = f(&mut ctx);
        drop(held);
        r
    }

    fn bump(&self, c: &Ctx, which: usize, n: u64) {
        stats::bump(&self.seg.mem, c.base, which, n);
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() || key.len() as u64 > self.seg.g.max_key {
            return Err(Error::KeyTooLarge { len: key.len(), max: self.seg.g.max_key as usize });
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() as u64 > self.seg.g.max_value {
            return Err(Error::ValueTooLarge { len: value.len(), max: self.seg.g.max_value as usize });
        }
        Ok(())
    }

    /// The segment's write mode.
    pub fn write_mode(&self) -> WriteMode {
        match layout::write_mode::mode(self.seg.mem.w(layout::H_WRITE_MODE).load(Ordering::Acquire)) {
            layout::WRITE_MODE_WRITABLE => WriteMode::Writable,
            layout::WRITE_MODE_REPLICA => WriteMode::Replica,
            _ => WriteMode::Fenced,
        }
    }

    /// Changes the segment's write mode (the replicator's call: standby, promote, fence).
    /// A change is counted in the same word (layout.rs `H_WRITE_MODE`), which moves the
    /// `changes` of [`Store::replication_state`]; setting the mode it already has writes
    /// nothing.
    pub fn set_write_mode(&self, mode: WriteMode) {
        let v = match mode {
            WriteMode::Writable => layout::WRITE_MODE_WRITABLE,
            WriteMode::Replica => layout::WRITE_MODE_REPLICA,
            WriteMode::Fenced => layout::WRITE_MODE_FENCED,
        };
        // SeqCst for W1 (`drain_writers`): the compare-and-swap that changes the mode, or the
        // load that finds it already changed, precedes the drain's loads of `C_WRITING`.
        let _ = self.seg.mem.w(layout::H_WRITE_MODE).fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
            (layout::write_mode::mode(w) != v).then(|| layout::write_mode::changed(w, v))
        });
    }

    /// After `set_write_mode` took writes away, waits until every worker write that saw the
    /// segment writable has finished, so the feed head read afterwards covers every write that
    /// will ever be acknowledged here. Returns false if a live writer is still inside its
    /// write at `timeout` (a stopped process, say).
    ///
    /// W1: a writer swaps its `C_WRITING` to 1, then loads the write mode; `set_write_mode`
    /// changes the mode (or finds it changed), then this loads every `C_WRITING`; all four are SeqCst, so in their
    /// single total order either the writer's load follows the mode change (it refuses with
    /// `ReadOnly`) or its raised flag precedes this load (it is waited for).
    pub fn drain_writers(&self, timeout: Duration) -> bool {
        self.seg.wait_no_writers(Instant::now() + timeout)
    }

    fn meta(&self, view: &View, now: u64) -> Meta {
        Meta {
            version: view.version,
            len: view.value_len,
            ttl_left: (view.expires != 0).then(|| Duration::from_millis(view.expires.saturating_sub(now))),
            sliding: (view.sliding_ms != 0).then(|| Duration::from_millis(view.sliding_ms as u64)),
            lock: (view.lock.id != 0).then(|| LockInfo {
                lock_id: view.lock.id,
                age: Duration::from_millis(now.saturating_sub(view.lock.time)),
            }),
        }
    }

    // ---- reads ----------------------------------------------------------------------------

    /// Reads `key`. Expired entries are never returned. A read of a sliding entry pushes its
    /// deadline out (a single CAS, done only once 1/16 of its window has passed).
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        let mut value = Vec::new();
        Ok(self.read(key, &mut Sink::Vec(&mut value))?.map(|meta| Entry { value, meta }))
    }

    /// Reads `key` into `buf`, returning its metadata (`meta.len` bytes were written).
    /// `BufferTooSmall { needed }` if the value does not fit; `buf` is then unspecified.
    pub fn get_into(&self, key: &[u8], buf: &mut [u8]) -> Result<Option<Meta>> {
        self.read(key, &mut Sink::Buf(buf))
    }

    /// The metadata of `key` without its value.
    pub fn meta_of(&self, key: &[u8]) -> Result<Option<Meta>> {
        self.read(key, &mut Sink::Nothing)
    }

    fn read(&self, key: &[u8], sink: &mut Sink<'_>) -> Result<Option<Meta>> {
        self.check_key(key)?;
        let p = self.seg.probe(key);
        // The home bucket is a cache (and TLB) miss on a large table: start it, then do the
        // work that does not depend on it (the clock, this thread's client) while it loads.
        // The clock is read before the record: a time inside the operation, as good as one
        // read after it for deciding expiry (a deadline is compared in whole milliseconds).
        self.seg.prefetch_bucket(&p);
        let now = os::now_ms();
        self.with_client(false, |c| {
            let found = self.seg.find(key, &p, sink)?;
            match found {
                Some(m) if !expired(&m.view, now) => {
                    if !m.value_fits {
                        return Err(Error::BufferTooSmall { needed: m.view.value_len });
                    }
                    self.bump(c, stats::HITS, 1);
                    let mut meta = self.meta(&m.view, now);
                    if let Some(deadline) = self.slide(c, &p, &m, now) {
                        meta.ttl_left = Some(Duration::from_millis(deadline - now));
                    }
                    Ok(Some(meta))
                }
                _ => {
                    self.bump(c, stats::MISSES, 1);
                    Ok(None)
                }
            }
        })
    }

    /// Sliding expiry: extends `m`'s deadline in place. Returns the new deadline if it moved.
    /// The extension is a worker write (`worker_write`): where writes are refused, the read
    /// returns without it.
    fn slide(&self, c: &Ctx, p: &Probe, m: &Member, now: u64) -> Option<u64> {
        let sliding = m.view.sliding_ms as u64;
        if sliding == 0 {
            return None;
        }
        let deadline = now + sliding;
        if deadline < m.view.expires + sliding / 16 {
            return None;
        }
        let extended = self.worker_write(c, || Ok(self.extend(c, p, m, deadline, ChangeKind::Touch)));
        extended.unwrap_or(false).then_some(deadline)
    }

    /// CASes the deadline of the published record `m` to `deadline`, and records the change.
    fn extend(&self, c: &Ctx, p: &Probe, m: &Member, deadline: u64, kind: ChangeKind) -> bool {
        let seg = &*self.seg;
        // The CAS below writes into a block this client does not own: journal it first, as
        // the page's hazard (heap.rs "Page reuse"), and check it is still the record viewed
        // (its state word never repeats) and still published.
        if !self.journal_old(c, m) || seg.index_word(m.pos).load(Ordering::Acquire) != m.word {
            self.unjournal_old(c);
            return false;
        }
        let w = seg.mem.w(seg.heap_word(slot::block(m.word) as u64) + layout::R_EXPIRES);
        let new = layout::expires_word(deadline, m.view.state);
        let swapped =
            w.compare_exchange(m.view.expires_word, new, Ordering::AcqRel, Ordering::Relaxed).is_ok();
        // Still the published record (and the same block incarnation) after the CAS?
        let still = swapped
            && seg.index_word(m.pos).load(Ordering::Acquire) == m.word
            && seg.mem.w(seg.heap_word(slot::block(m.word) as u64)).load(Ordering::Acquire) == m.view.state;
        self.unjournal_old(c);
        if still {
            let pos = seg.feed_reserve(c.base);
            seg.feed_write(c.base, pos, kind, m.pos, m.view.version, p.hash);
            self.bump(c, stats::TOUCHES, 1);
        }
        still
    }

    // ---- writes ---------------------------------------------------------------------------

    /// Stores `value` under `key`, replacing any current value (and any lock on it).
    /// Returns the new version.
    pub fn set(&self, key: &[u8], value: &[u8], expiry: Expiry) -> Result<u64> {
        self.mutate(key, Op::Set { value, expiry, cond: Cond::Any }).map(|o| o.version)
    }

    /// Stores `value` only if `key` is absent (or expired); `Exists` otherwise.
    pub fn add(&self, key: &[u8], value: &[u8], expiry: Expiry) -> Result<u64> {
        self.mutate(key, Op::Set { value, expiry, cond: Cond::Absent }).map(|o| o.version)
    }

    /// Stores `value` only if the current version is `expected`: `VersionMismatch` if it
    /// is another, `NotFound` if the key is absent.
    pub fn compare_and_set(&self, key: &[u8], expected: u64, value: &[u8], expiry: Expiry) -> Result<u64> {
        self.mutate(key, Op::Set { value, expiry, cond: Cond::Version(expected) }).map(|o| o.version)
    }

    /// Removes `key` only if its current version is `expected` (an undo that must not remove
    /// a write made since): `VersionMismatch` if it is another, `NotFound` if the key is absent.
    pub fn delete_if_version(&self, key: &[u8], expected: u64) -> Result<()> {
        self.mutate(key, Op::DeleteVersion(expected)).map(drop)
    }

    /// Removes `key`. Returns whether a live entry was removed.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        match self.mutate(key, Op::Delete) {
            Ok(_) => Ok(true),
            Err(Error::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Resets `key`'s expiry to `expiry` from now. Returns whether the key was present.
    /// Keeping the entry's kind of expiry is one CAS in place; switching between sliding and
    /// fixed (or another sliding window) rewrites the record, which needs a free block and can
    /// fail with `Full`. A worker write like `set`: `ReadOnly` where those are refused.
    pub fn touch(&self, key: &[u8], expiry: Expiry) -> Result<bool> {
        self.check_worker_sizes(key, None)?;
        let p = self.seg.probe(key);
        self.with_client(false, |c| {
            self.worker_write(c, || {
                loop {
                    let Some(m) = self.seg.find(key, &p, &mut Sink::Nothing)? else { return Ok(false) };
                    let now = os::now_ms();
                    if expired(&m.view, now) {
                        return Ok(false);
                    }
                    let (deadline, sliding) = deadline_of(expiry, now);
                    if sliding as u64 != m.view.sliding_ms as u64 {
                        // The sliding window is part of the record: rewrite it.
                        return match self.mutate_with(c, key, &p, Op::Retime { expiry }) {
                            Ok(_) => Ok(true),
                            Err(Error::NotFound) => Ok(false), // deleted or expired meanwhile
                            Err(e) => Err(e),
                        };
                    }
                    if self.extend(c, &p, &m, deadline, ChangeKind::Touch) {
                        return Ok(true);
                    }
                }
            })
        })
    }

    /// Takes the session lock of `key` (ASP.NET `GetItemExclusive`): returns the item and a
    /// lock id. If another lock id holds it, fails with `Locked { lock_id, age }`, unless the
    /// lock is older than `takeover_after` or its owner process has died, in which case the
    /// lock is taken over. `Ok(None)` if the key is absent.
    pub fn lock(&self, key: &[u8], takeover_after: Duration) -> Result<Option<Locked>> {
        match self.mutate(key, Op::Lock { takeover_after }) {
            Ok(o) => Ok(Some(Locked {
                value: o.value,
                lock_id: o.version,
                meta: o.meta.expect("lock outcome carries meta"),
                took_over: o.took_over,
            })),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`lock`](Store::lock), waiting up to `timeout` for the lock if another lock id holds
    /// it: returns as soon as the holder releases it (unlock, `set_and_unlock`, a set or
    /// delete of the key, its expiry), woken directly by the release through a shared futex
    /// word of the segment (lockwait.rs), or once it can be taken over (older than
    /// `takeover_after`, or its owner process proven dead: re-checked every 50 ms while the
    /// owner is another process). `Ok(None)` if the key is absent or goes away while waited
    /// for; `Err(Locked)` with the holder's lock if `timeout` passes first. The waiter holds
    /// nothing while it sleeps (no client slot, nothing of the key): killed or stalled, it
    /// keeps nobody waiting. Waiters are not served in order: a release wakes every waiter of
    /// the key and the first to take the lock has it.
    pub fn lock_wait(
        &self,
        key: &[u8],
        takeover_after: Duration,
        timeout: Duration,
    ) -> Result<Option<Locked>> {
        self.check_key(key)?;
        let hash = self.seg.probe(key).hash;
        let start = Instant::now();
        let (me, _) = os::self_identity()?;
        loop {
            let armed = self.seg.arm_lock_wait(hash);
            let (lock_id, age) = match self.lock(key, takeover_after) {
                Err(Error::Locked { lock_id, age }) => (lock_id, age),
                done => return done,
            };
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::Locked { lock_id, age });
            }
            // Who holds it now (a release since the attempt: try again at once).
            let Some(owner) = self.lock_words(key)?.filter(|l| l.id == lock_id) else { continue };
            // Lock times are whole milliseconds: one more and the age has surely passed.
            let mut nap = left.min(takeover_after.saturating_sub(age) + Duration::from_millis(1));
            if owner.pid != me {
                nap = nap.min(crate::lockwait::OWNER_RECHECK); // its death wakes nobody
            }
            failpoint!("lock_wait.before_sleep");
            self.seg.sleep_lock_wait(hash, armed, nap);
        }
    }

    /// The lock words of `key`'s live record, if it is locked.
    fn lock_words(&self, key: &[u8]) -> Result<Option<LockWords>> {
        let p = self.seg.probe(key);
        let now = os::now_ms();
        self.with_client(false, |_| {
            let found = self.seg.find(key, &p, &mut Sink::Nothing)?;
            Ok(found.filter(|m| !expired(&m.view, now) && m.view.lock.id != 0).map(|m| m.view.lock))
        })
    }

    /// Releases the lock `lock_id` on `key` without changing its value.
    pub fn unlock(&self, key: &[u8], lock_id: u64) -> Result<()> {
        self.mutate(key, Op::Unlock { lock_id }).map(drop)
    }

    /// Stores `value` and releases the lock `lock_id` in one step (ASP.NET
    /// `SetAndReleaseItemExclusive`). `LockMismatch` if `lock_id` no longer holds the entry
    /// (it was taken over); `NotFound` if the entry expired or was deleted meanwhile.
    pub fn set_and_unlock(&self, key: &[u8], lock_id: u64, value: &[u8], expiry: Expiry) -> Result<u64> {
        self.mutate(key, Op::Set { value, expiry, cond: Cond::Lock(lock_id) }).map(|o| o.version)
    }

    /// Runs `f`, a worker's write, unless writes are refused: `ReadOnly` unless the segment
    /// is writable and its write lease, if any, has not run out (replica.rs). The client
    /// raises its `C_WRITING` word before it reads the write mode and lowers it when the
    /// write is done, both sequentially consistent, so `drain_writers` can tell when no write
    /// that saw the segment writable is still in flight (W1 in `drain_writers`). Every write
    /// of a worker goes through here: mutations, touches, and the sliding extension of reads.
    fn worker_write<T>(&self, c: &Ctx, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let writing = self.seg.mem.w(c.base + C_WRITING);
        writing.swap(1, Ordering::SeqCst);
        let mode = layout::write_mode::mode(self.seg.mem.w(layout::H_WRITE_MODE).load(Ordering::SeqCst));
        let lease = self.seg.mem.w(layout::H_WRITE_LEASE).load(Ordering::Relaxed);
        let leased = lease == 0 || os::now_ms() < lease;
        let r = if mode == layout::WRITE_MODE_WRITABLE && leased { f() } else { Err(Error::ReadOnly) };
        writing.store(0, Ordering::Release);
        if let Err(e) = &r {
            let cause = match e {
                Error::Full(FullKind::Index | FullKind::Heap) => Some(stats::FAILED_FULL),
                Error::ReadOnly => Some(stats::FAILED_READ_ONLY),
                Error::Locked { .. } | Error::LockMismatch { .. } => Some(stats::FAILED_LOCKED),
                _ => None,
            };
            if let Some(which) = cause {
                self.bump(c, which, 1);
            }
        }
        r
    }

    /// Checks a worker write's key (and value) against the segment's limits; a refusal is
    /// counted (`stats::FAILED_TOO_LARGE`) in a client slot claimed for that alone, so the
    /// writes that pass pay nothing more.
    fn check_worker_sizes(&self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        let r = self.check_key(key).and_then(|()| value.map_or(Ok(()), |v| self.check_value(v)));
        if r.is_err() {
            let _ = self.with_client(false, |c| {
                self.bump(c, stats::FAILED_TOO_LARGE, 1);
                Ok(())
            });
        }
        r
    }

    /// A worker's mutation (see `worker_write`).
    fn mutate(&self, key: &[u8], op: Op<'_>) -> Result<Outcome> {
        self.mutate_in(key, op, true)
    }

    /// `mutate` without the write-mode check: the replicator writes into a read-only standby.
    pub(crate) fn mutate_as_replicator(&self, key: &[u8], op: Op<'_>) -> Result<Outcome> {
        self.mutate_in(key, op, false)
    }

    fn mutate_in(&self, key: &[u8], op: Op<'_>, worker: bool) -> Result<Outcome> {
        let value = match op {
            Op::Set { value, .. } | Op::Apply { value, .. } => Some(value),
            _ => None,
        };
        if worker {
            self.check_worker_sizes(key, value)?;
        } else {
            self.check_key(key)?;
            value.map_or(Ok(()), |v| self.check_value(v))?;
        }
        let p = self.seg.probe(key);
        self.with_client(true, |c| {
            let r = if worker {
                self.worker_write(c, || self.mutate_with(c, key, &p, op))
            } else {
                self.mutate_with(c, key, &p, op)
            };
            if c.sweep_due {
                self.sweep_if_due(c);
            }
            r
        })
    }

    fn mutate_with(&self, c: &Ctx, key: &[u8], p: &Probe, op: Op<'_>) -> Result<Outcome> {
        let seg = &*self.seg;
        let mut scratch = Vec::new();
        let mut held: Option<Block> = None;
        // Dropped after the loop (and when unwinding): a reserved position that published
        // nothing is recorded as a Nop.
        let mut feed = FeedReservation { seg, base: c.base, pos: None, hash: p.hash };
        let result = loop {
            let needs_value = matches!(op, Op::Lock { .. } | Op::Unlock { .. } | Op::Retime { .. });
            let found = {
                let mut sink = if needs_value { Sink::Vec(&mut scratch) } else { Sink::Nothing };
                // No `?` inside this loop: the cleanup after it must run on every exit.
                match seg.find(key, p, &mut sink) {
                    Ok(found) => found,
                    Err(e) => break Err(e),
                }
            };
            let now = os::now_ms();
            let live = found.filter(|m| !expired(&m.view, now));
            let plan = match plan(&op, live.as_ref(), now, c.pid) {
                Ok(plan) => plan,
                Err(e) => break Err(e),
            };
            failpoint!("update.after_view");
            let (value, expiry_words, lock, kind, took_over) = match plan {
                Plan::Remove => {
                    let Some(m) = found else { break Err(Error::NotFound) };
                    let kind = if live.is_some() { ChangeKind::Delete } else { ChangeKind::Expire };
                    if self.unpublish(c, p.hash, &m, kind) {
                        self.bump(c, if live.is_some() { stats::DELETES } else { stats::EXPIRED }, 1);
                        if live.is_some() {
                            break Ok(Outcome::removed());
                        }
                        break Err(Error::NotFound);
                    }
                    continue;
                }
                Plan::Write { value, expires, sliding, lock, kind, took_over } => {
                    (value, (expires, sliding), lock, kind, took_over)
                }
            };
            let value: &[u8] = match value {
                Some(v) => v,
                None => &scratch,
            };
            let bytes = layout::record_bytes(key.len(), value.len());
            if let Some(b) = held {
                if layout::class_of(bytes as u64)
                    != seg.block_pos(b.off as u64).map_or(usize::MAX, |bp| bp.class)
                {
                    seg.free(b.off as u64, b.state);
                    // Named no more: its page may empty, and a journal naming it would hold
                    // back its reuse (heap.rs "Page reuse").
                    seg.mem.w(c.base + C_J_NEW).store(0, Ordering::Relaxed);
                    held = None;
                }
            }
            let b = match held {
                Some(b) => b,
                None => match self.alloc(c, bytes) {
                    Ok(b) => {
                        held = Some(b);
                        b
                    }
                    Err(e) => break Err(e),
                },
            };
            // A position kept from an earlier attempt can be older than the record found now
            // (its writer stalled while others wrote the key): give it up for a fresh one, so
            // a record's version is always above the one it replaces.
            if let (Some(old), Some(m)) = (feed.pos, &found)
                && old.wrapping_add(1) <= m.view.version
            {
                seg.feed_write(c.base, old, ChangeKind::Nop, 0, 0, p.hash);
                feed.pos = None;
            }
            let pos = *feed.pos.get_or_insert_with(|| seg.feed_reserve(c.base));
            let version = pos.wrapping_add(1);
            let lock = if kind == ChangeKind::Lock { LockWords { id: version, ..lock } } else { lock };
            let rec = NewRecord {
                key,
                value,
                key_hash: p.hash,
                version,
                expires: expiry_words.0,
                sliding_ms: expiry_words.1,
                lock,
            };
            let new_word = |state| slot::pack(state, p.tag, block::generation(b.state), b.off);
            let published = match found {
                Some(m) => {
                    seg.write_record(b.off, m.pos, &rec);
                    if !self.journal_old(c, &m) {
                        continue; // the record viewed was replaced meanwhile
                    }
                    failpoint!(if took_over {
                        "lock.takeover_before_publish"
                    } else {
                        "update.before_publish"
                    });
                    let ok = seg
                        .index_word(m.pos)
                        .compare_exchange(m.word, new_word(slot::MEMBER), Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok();
                    if ok {
                        feed.pos = None; // published: its entry is written below
                        failpoint!(if took_over {
                            "lock.takeover_after_publish"
                        } else {
                            "update.after_publish"
                        });
                        self.release_old(c, &m);
                        if live.is_none() {
                            self.bump(c, stats::EXPIRED, 1);
                        }
                    } else {
                        self.unjournal_old(c); // not displaced by us: nothing to recover
                    }
                    ok.then_some(m.pos)
                }
                None => {
                    let Some(q) = seg.free_slot(p) else {
                        // Expired entries first (they are gone already), as a full heap
                        // sweeps before it evicts.
                        if self.expire_in_window(c, p, now) || seg.evict && self.evict_in_window(c, p) {
                            continue;
                        }
                        break Err(Error::Full(FullKind::Index));
                    };
                    seg.write_record(b.off, q, &rec);
                    let mine = new_word(slot::INSERTING);
                    let placed = seg
                        .index_word(q)
                        .compare_exchange(slot::EMPTY, mine, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok();
                    if placed {
                        failpoint!("insert.after_inserting");
                    }
                    match placed {
                        true => match seg.settle(key, p, q, mine) {
                            Ok(Settled::Inserted) => {
                                feed.pos = None; // published: its entry is written below
                                failpoint!("insert.after_member");
                                Some(q)
                            }
                            Ok(Settled::Lost) => None,
                            Err(e) => {
                                // Withdraw the candidate before its block is freed below.
                                let _ = seg.index_word(q).compare_exchange(
                                    mine,
                                    slot::EMPTY,
                                    Ordering::AcqRel,
                                    Ordering::Relaxed,
                                );
                                break Err(e);
                            }
                        },
                        false => None,
                    }
                }
            };
            let Some(slot_pos) = published else { continue };
            held = None;
            seg.mem.w(c.base + C_J_NEW).store(0, Ordering::Relaxed);
            if lock.id == 0 && found.is_some_and(|m| m.view.lock.id != 0) {
                seg.wake_lock_waiters(p.hash); // a lock released (lockwait.rs)
            }
            seg.feed_write(c.base, pos, kind, slot_pos, version, p.hash);
            match kind {
                ChangeKind::Lock => self.bump(c, stats::LOCKS, 1),
                ChangeKind::Set => self.bump(c, stats::SETS, 1),
                _ => {}
            }
            if took_over {
                self.bump(c, stats::LOCK_TAKEOVERS, 1);
                let owner = found.map(|m| m.view.lock).unwrap_or_default();
                if os::liveness(owner.pid, owner.start) == os::Liveness::Dead {
                    self.bump(c, stats::DEAD_RECLAIMS, 1);
                }
            }
            let view = View {
                state: b.state,
                version,
                expires: rec.expires,
                expires_word: 0,
                sliding_ms: rec.sliding_ms,
                value_len: value.len(),
                lock,
            };
            break Ok(Outcome {
                version,
                meta: Some(self.meta(&view, now)),
                value: std::mem::take(&mut scratch),
                took_over,
            });
        };
        if let Some(b) = held {
            seg.free(b.off as u64, b.state);
            seg.mem.w(c.base + C_J_NEW).store(0, Ordering::Relaxed);
        }
        drop(feed);
        if let Err(Error::Locked { .. }) = &result {
            self.bump(c, stats::LOCK_CONTENDED, 1);
        }
        result
    }

    fn alloc(&self, c: &Ctx, bytes: usize) -> Result<Block> {
        let seg = &*self.seg;
        let mut tries = 0;
        loop {
            let recent = seg.mem.w(c.base + C_RECENT_FREE).load(Ordering::Relaxed);
            match seg.alloc(c.idx, bytes, c.rnd.wrapping_add(tries), recent) {
                Ok(b) => return Ok(b),
                Err(Error::Full(FullKind::Heap)) if tries < 16 => {
                    tries += 1;
                    // Reclaim what the dead and the expired hold, then evict if allowed: one
                    // bounded slice of the sweep, continuing where the last one stopped, so a
                    // failing insert costs O(1) and repeated ones sweep the whole index in turn.
                    let freed_some = tries == 1 && {
                        let r = self.sweep_with(c, FULL_SWEEP_SLOTS, Some(FULL_SWEEP_CLIENTS));
                        r.expired > 0 || r.dead_clients_reclaimed > 0
                    };
                    // A retired page a dead client's journal names waits for its reclaim
                    // (heap.rs "Page reuse"): reclaim the dead (only slots in use are looked
                    // at) rather than fail with that page unused.
                    let unpinned = tries == 1 && seg.has_retired_page() && seg.reclaim_dead_clients(c.me) > 0;
                    if !(freed_some || unpinned || seg.evict && self.evict_for_class(c, bytes)) {
                        return Err(Error::Full(FullKind::Heap));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Journals the record about to be displaced (heap.rs H3) and checks that the view `m` is
    /// still current: false (journal cleared) if its block moved on meanwhile.
    ///
    /// From the check until the journal is cleared, the block cannot pass a guarded generation
    /// (heap.rs H5), so the slot word `m.word` cannot come back with another record behind it
    /// (layout.rs `slot`): a publishing CAS from `m.word` that succeeds displaces exactly the
    /// record this view read, however long the writer stalled, before the journal (the check
    /// sees the block moved) or after it (the block stays put).
    #[must_use]
    fn journal_old(&self, c: &Ctx, m: &Member) -> bool {
        self.seg.journal_view(c.idx, slot::block(m.word) as u64, m.view.state)
    }

    /// Frees the record displaced by a successful CAS and clears the journal.
    fn release_old(&self, c: &Ctx, m: &Member) {
        let off = slot::block(m.word) as u64;
        if self.seg.free(off, m.view.state) {
            self.seg.mem.w(c.base + C_RECENT_FREE).store(off + 1, Ordering::Relaxed);
        }
        self.unjournal_old(c);
    }

    /// Clears the journal of a displaced record (freed, or the CAS that would have displaced
    /// it failed).
    fn unjournal_old(&self, c: &Ctx) {
        self.seg.mem.w(c.base + C_J_OLD).store(0, Ordering::Relaxed);
    }

    /// Removes the published record `m` from the index (delete, expiry, eviction).
    fn unpublish(&self, c: &Ctx, key_hash: u64, m: &Member, kind: ChangeKind) -> bool {
        let seg = &*self.seg;
        if !self.journal_old(c, m) {
            return false;
        }
        if kind == ChangeKind::Delete {
            failpoint!("delete.after_journal");
        }
        if seg
            .index_word(m.pos)
            .compare_exchange(m.word, slot::EMPTY, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            self.unjournal_old(c);
            return false;
        }
        if kind == ChangeKind::Delete {
            failpoint!("delete.after_unpublish");
        }
        if m.view.lock.id != 0 {
            seg.wake_lock_waiters(key_hash); // a locked record removed (lockwait.rs)
        }
        self.release_old(c, m);
        let pos = seg.feed_reserve(c.base);
        seg.feed_write(c.base, pos, kind, m.pos, 0, key_hash);
        true
    }

    fn key_hash_of(&self, m: &Member) -> u64 {
        let seg = &*self.seg;
        seg.mem.w(seg.heap_word(slot::block(m.word) as u64) + layout::R_KEY_HASH).load(Ordering::Relaxed)
    }

    fn evict(&self, c: &Ctx, m: &Member) -> bool {
        let done = self.unpublish(c, self.key_hash_of(m), m, ChangeKind::Evict);
        if done {
            self.bump(c, stats::EVICTED, 1);
        }
        done
    }

    /// Removes the expired entries of `p`'s window (what a sweep would). Returns whether it
    /// removed any.
    fn expire_in_window(&self, c: &Ctx, p: &Probe, now: u64) -> bool {
        self.seg.window(p).filter(|&pos| self.expire_at(c, pos, now)).count() > 0
    }

    /// Removes the entry at index position `pos` if it has expired (a sweep's step).
    /// Returns whether this call removed it.
    fn expire_at(&self, c: &Ctx, pos: usize, now: u64) -> bool {
        if let Ok(Some(m)) = self.seg.member_at(pos, &mut Sink::Nothing)
            && expired(&m.view, now)
            && self.unpublish(c, self.key_hash_of(&m), &m, ChangeKind::Expire)
        {
            self.bump(c, stats::EXPIRED, 1);
            return true;
        }
        false
    }

    /// Evicts the entry of `p`'s window closest to expiry (in `eviction_order`).
    fn evict_in_window(&self, c: &Ctx, p: &Probe) -> bool {
        let victim = self
            .seg
            .window(p)
            .filter_map(|pos| self.seg.member_at(pos, &mut Sink::Nothing).ok().flatten())
            .min_by_key(eviction_order);
        victim.is_some_and(|m| self.evict(c, &m))
    }

    /// Evicts, among a random sample of entries, the one closest to expiry (in
    /// `eviction_order`) whose block has the size class a record of `bytes` needs (freeing
    /// another class would not help).
    fn evict_for_class(&self, c: &Ctx, bytes: usize) -> bool {
        let seg = &*self.seg;
        let class = layout::class_of(bytes as u64);
        let slots = seg.g.index_slots() as usize;
        let start = c.rnd as usize % slots;
        let stride = sample_stride(slots);
        let mut best: Option<Member> = None;
        let mut seen = 0;
        for k in 0..slots {
            if seen >= 64 {
                break;
            }
            let pos = (start + k * stride) % slots;
            let Ok(Some(m)) = self.seg.member_at(pos, &mut Sink::Nothing) else { continue };
            if seg.block_pos(slot::block(m.word) as u64).is_none_or(|bp| bp.class != class) {
                continue;
            }
            seen += 1;
            if best.as_ref().is_none_or(|b| eviction_order(&m) < eviction_order(b)) {
                best = Some(m);
            }
        }
        best.is_some_and(|m| self.evict(c, &m))
    }

    // ---- maintenance ----------------------------------------------------------------------

    /// Reclaims expired entries (up to `budget` index slots, continuing where the last sweep
    /// of any process stopped) and clients of dead processes. Only one client sweeps at a
    /// time (a lease in the segment); a sweeper that dies loses the lease after 2 s. Writers
    /// also sweep a slice of the index when one is due (at most every 100 ms per segment,
    /// the whole index about once a minute, at most 64k index and 16 client slots a time), so a store in use
    /// needs no separate sweeper; an insert that finds the heap full sweeps one constant
    /// slice (128 index slots, 4 client slots) before failing, so `Full` costs O(1).
    /// This call reclaims every dead client and examines `budget` index slots.
    pub fn sweep(&self, budget: u64) -> Result<SweepReport> {
        self.with_client(false, |c| Ok(self.sweep_with(c, budget, None)))
    }

    /// Sweeps a slice of the index if the segment's next sweep is due (see SWEEP_INTERVAL_MS).
    fn sweep_if_due(&self, c: &Ctx) {
        let due = self.seg.mem.w(layout::H_SWEEP_DUE);
        let (now, next) = (os::now_ms(), due.load(Ordering::Relaxed));
        if now >= next
            && due
                .compare_exchange(next, now + SWEEP_INTERVAL_MS, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let slots = (self.seg.g.index_slots() / SWEEP_SHARE).clamp(1024, SWEEP_MAX_SLOTS);
            self.sweep_with(c, slots, Some(SWEEP_CLIENTS));
        }
    }

    /// One sweep step: up to `budget` index slots, and the client table (all of it, or
    /// `clients` slots of it from a shared cursor).
    fn sweep_with(&self, c: &Ctx, budget: u64, clients: Option<u64>) -> SweepReport {
        let seg = &*self.seg;
        let lease = seg.mem.w(layout::H_SWEEP_LEASE);
        let now = os::now_ms();
        let cur = lease.load(Ordering::Acquire);
        let mine = ((c.idx as u64 + 1) << 48) | (now + SWEEP_LEASE_MS);
        if (cur != 0 && cur & ((1 << 48) - 1) > now)
            || lease.compare_exchange(cur, mine, Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            return SweepReport::default();
        }
        // Released when done, and when unwinding out of the sweep (a panic).
        let _lease = LeaseRelease { lease, mine };
        let mut report = SweepReport { ran: true, ..SweepReport::default() };
        report.dead_clients_reclaimed = match clients {
            None => seg.reclaim_dead_clients(c.me),
            Some(n) => {
                let n = n.min(seg.g.max_clients);
                // The cursor is a shared word (any value, in a damaged segment): reduce it
                // before adding, so the step cannot overflow.
                let start = seg.mem.w(layout::H_SWEEP_CLIENT_CURSOR).fetch_add(n, Ordering::Relaxed)
                    % seg.g.max_clients;
                seg.reclaim_dead_clients_in(c.me, (0..n).map(|k| ((start + k) % seg.g.max_clients) as usize))
            }
        };
        let slots = seg.g.index_slots();
        let budget = budget.min(slots);
        let start = seg.mem.w(layout::H_SWEEP_CURSOR).fetch_add(budget, Ordering::Relaxed) % slots;
        for k in 0..budget {
            let pos = ((start + k) % slots) as usize;
            report.examined += 1;
            let w = seg.index_word(pos).load(Ordering::Relaxed);
            if slot::state(w) != slot::MEMBER {
                continue;
            }
            if self.expire_at(c, pos, now) {
                report.expired += 1;
                failpoint!("sweep.mid_expire");
            }
            if k % 1024 == 1023 && lease.load(Ordering::Relaxed) != mine {
                break; // the lease moved on (we stalled past it): stop, the next sweeper goes on.
            }
        }
        self.bump(c, stats::SWEEPS, 1);
        report
    }

    /// A consistent-per-entry copy of the counters, summed over every client.
    pub fn stats(&self) -> Stats {
        let seg = &*self.seg;
        let t = stats::sum(&seg.mem, seg.g.clients_off, seg.g.max_clients as usize);
        let (used, free) = seg.heap_usage();
        Stats {
            live_entries: seg.count_members(),
            bytes_used: used,
            bytes_free: free,
            hits: t[stats::HITS],
            misses: t[stats::MISSES],
            sets: t[stats::SETS],
            deletes: t[stats::DELETES],
            expirations: t[stats::EXPIRED],
            evictions: t[stats::EVICTED],
            touches: t[stats::TOUCHES],
            locks: t[stats::LOCKS],
            lock_contentions: t[stats::LOCK_CONTENDED],
            lock_takeovers: t[stats::LOCK_TAKEOVERS],
            dead_reclaims: t[stats::DEAD_RECLAIMS],
            sweeps: t[stats::SWEEPS],
            failed_full: t[stats::FAILED_FULL],
            failed_too_large: t[stats::FAILED_TOO_LARGE],
            failed_read_only: t[stats::FAILED_READ_ONLY],
            failed_locked: t[stats::FAILED_LOCKED],
            clients: seg.clients_in_use(),
            feed_head: seg.feed_head(),
        }
    }

    /// Calls `f` for every live entry, slot by slot, taking no lock: each entry is a
    /// consistent copy; an entry written during the scan may be seen before or after the
    /// write (keys never move between slots, so none is seen twice).
    pub fn scan(&self, mut f: impl FnMut(ScanEntry)) -> Result<()> {
        self.scan_while(|e| {
            f(e);
            true
        })
        .map(drop)
    }

    /// An order-independent digest of every live entry: the count, and the wrapping sum of a
    /// hash of each entry's key, value, lock id, sliding window and whether it expires. Two
    /// segments with the same content have the same digest whatever their size, seed, slot
    /// order or history (a primary and its caught-up standby), so comparing digests compares
    /// contents. The time a TTL has left is not in it (it differs between hosts by the
    /// replication delay). Like `scan`, it is exact only while nobody writes.
    pub fn digest(&self) -> Result<Digest> {
        let mut d = Digest::default();
        self.scan(|e| {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(&(e.key.len() as u64).to_le_bytes());
            h.update(&e.key);
            h.update(&e.value);
            let lock = e.meta.lock.map_or(0, |l| l.lock_id);
            let sliding = e.meta.sliding.map_or(0, |s| s.as_millis() as u64);
            for w in [lock, sliding, u64::from(e.meta.ttl_left.is_some())] {
                h.update(&w.to_le_bytes());
            }
            d.entries += 1;
            d.sum = d.sum.wrapping_add(h.digest());
        })?;
        Ok(d)
    }

    /// As `scan`, stopping as soon as `f` returns false. Returns whether it went to the end.
    pub fn scan_while(&self, mut f: impl FnMut(ScanEntry) -> bool) -> Result<bool> {
        let now = os::now_ms();
        for pos in 0..self.seg.g.index_slots() as usize {
            if pos % layout::BUCKET_SLOTS == 0 {
                continue;
            }
            let (mut key, mut value) = (Vec::new(), Vec::new());
            let Some(m) = self.seg.member_at(pos, &mut Sink::KeyAndValue(&mut key, &mut value))? else {
                continue;
            };
            if !expired(&m.view, now)
                && !f(ScanEntry { key, value, meta: self.meta(&m.view, now), slot: pos as u32 })
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The entry currently at index slot `slot` (for followers of the change feed).
    pub fn entry_at(&self, slot: u32) -> Result<Option<ScanEntry>> {
        let seg = &*self.seg;
        if slot as u64 >= seg.g.index_slots() || slot as usize % layout::BUCKET_SLOTS == 0 {
            return Ok(None);
        }
        let (mut key, mut value) = (Vec::new(), Vec::new());
        let now = os::now_ms();
        Ok(self
            .seg
            .member_at(slot as usize, &mut Sink::KeyAndValue(&mut key, &mut value))?
            .filter(|m| !expired(&m.view, now))
            .map(|m| ScanEntry { key, value, meta: self.meta(&m.view, now), slot }))
    }

    /// Checks every invariant of the segment (an `fsck`: see `CheckReport`). Reads the whole
    /// index and heap; meant for a quiescent segment, in tests and from the CLI.
    pub fn check(&self) -> crate::CheckReport {
        self.seg.check()
    }

    /// The change-feed position the next mutation will take.
    pub fn feed_head(&self) -> u64 {
        self.seg.feed_head()
    }

    /// The feed positions reserved by a client whose process is not proven dead and whose
    /// entries are not written yet (feed.rs F1): the follower keeps every such position
    /// unshipped, however long its writer stalls. A position below the head that is not
    /// written and not listed here will never be written by a live writer.
    pub fn feed_claims(&self) -> Vec<u64> {
        self.seg.feed_claims()
    }

    /// Reads the change feed at `cursor` (see [`FeedRead`]).
    pub fn feed_read(&self, cursor: u64) -> FeedRead {
        self.seg.feed_read(cursor)
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.seg.path).finish_non_exhaustive()
    }
}

/// The step of `evict_for_class`'s walk over `slots` index positions: near 7919 (so the
/// sample is spread over the index), and coprime with `slots`, so the walk visits every
/// position once. (A fixed 7919 visited only 8 positions of an index of 8 x 7919.)
fn sample_stride(slots: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    (7919..).step_by(2).find(|&s| gcd(s, slots) == 1).expect("an odd number coprime with slots")
}

/// Which entry eviction takes first (the smallest): the closest to expiry, never-expiring
/// ones last, the oldest version first among equals.
fn eviction_order(m: &Member) -> (u64, u64) {
    (if m.view.expires == 0 { u64::MAX } else { m.view.expires }, m.view.version)
}

fn expired(view: &View, now: u64) -> bool {
    view.expires != 0 && view.expires <= now
}

/// `d` in whole milliseconds, `u64::MAX` for a longer one (`as u64` would keep only the low
/// bits: a TTL of 2^64 ms + 1 s would become one second).
pub(crate) fn millis_saturating(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// (deadline, sliding window ms) for an expiry starting now.
fn deadline_of(expiry: Expiry, now: u64) -> (u64, u32) {
    let ms = |d: Duration| millis_saturating(d).clamp(1, u32::MAX as u64);
    match expiry {
        Expiry::Never => (0, 0),
        Expiry::After(d) => ((now + ms(d)).min(layout::DEADLINE_MASK), 0),
        Expiry::Sliding(d) => ((now + ms(d)).min(layout::DEADLINE_MASK), ms(d) as u32),
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Cond {
    Any,
    Absent,
    Version(u64),
    Lock(u64),
}

#[derive(Clone, Copy)]
pub(crate) enum Op<'a> {
    Set {
        value: &'a [u8],
        expiry: Expiry,
        cond: Cond,
    },
    Delete,
    /// Delete only the record of this version.
    DeleteVersion(u64),
    Lock {
        takeover_after: Duration,
    },
    Unlock {
        lock_id: u64,
    },
    Retime {
        expiry: Expiry,
    },
    /// The replicator's write of a primary's entry: its value, deadline, window and lock.
    Apply {
        value: &'a [u8],
        expires: u64,
        sliding: u32,
        lock: LockWords,
    },
}

enum Plan<'a> {
    Remove,
    /// `value: None` = keep the current value (copied into the scratch buffer).
    Write {
        value: Option<&'a [u8]>,
        expires: u64,
        sliding: u32,
        lock: LockWords,
        kind: ChangeKind,
        took_over: bool,
    },
}

pub(crate) struct Outcome {
    pub(crate) version: u64,
    meta: Option<Meta>,
    value: Vec<u8>,
    took_over: bool,
}

impl Outcome {
    fn removed() -> Outcome {
        Outcome { version: 0, meta: None, value: Vec::new(), took_over: false }
    }
}

/// Is `m` locked, with lock id `id`? Lock ids are never 0, and 0 in the record means
/// unlocked: presenting 0 to an unlocked entry must not pass for holding its lock (it did:
/// `unlock(key, 0)` and `set_and_unlock(key, 0, ..)` succeeded on any unlocked entry, found by
/// the linearizability test; README: `LockMismatch { held: 0 }` = unlocked).
fn lock_held_by(m: &Member, id: u64) -> bool {
    m.view.lock.id != 0 && m.view.lock.id == id
}

/// Decides what an operation does given the key's live record (`None` if absent/expired).
fn plan<'a>(op: &Op<'a>, live: Option<&Member>, now: u64, pid: u32) -> Result<Plan<'a>> {
    let keep_deadline = |m: &Member| {
        // Keep the entry's own expiry; a sliding one counts this access.
        let s = m.view.sliding_ms;
        (if s != 0 { now + s as u64 } else { m.view.expires }, s)
    };
    match *op {
        Op::Set { value, expiry, cond } => {
            match (cond, live) {
                (Cond::Any, _) => {}
                (Cond::Absent, None) => {}
                (Cond::Absent, Some(_)) => return Err(Error::Exists),
                (Cond::Version(_) | Cond::Lock(_), None) => return Err(Error::NotFound),
                (Cond::Version(v), Some(m)) if m.view.version != v => {
                    return Err(Error::VersionMismatch { expected: v, found: m.view.version });
                }
                (Cond::Lock(id), Some(m)) if !lock_held_by(m, id) => {
                    return Err(Error::LockMismatch { presented: id, held: m.view.lock.id });
                }
                _ => {}
            }
            let (expires, sliding) = deadline_of(expiry, now);
            Ok(Plan::Write {
                value: Some(value),
                expires,
                sliding,
                lock: LockWords::default(),
                kind: ChangeKind::Set,
                took_over: false,
            })
        }
        // An expired entry is removed too (recorded as an expiry), and reported as absent.
        Op::Delete => Ok(Plan::Remove),
        Op::DeleteVersion(v) => match live {
            None => Err(Error::NotFound),
            Some(m) if m.view.version != v => {
                Err(Error::VersionMismatch { expected: v, found: m.view.version })
            }
            Some(_) => Ok(Plan::Remove),
        },
        Op::Lock { takeover_after } => {
            let m = live.ok_or(Error::NotFound)?;
            let l = m.view.lock;
            let mut took_over = false;
            if l.id != 0 {
                let age = Duration::from_millis(now.saturating_sub(l.time));
                // pid 0: a lock replicated from another host, whose owner cannot be checked
                // from here: only its age can free it.
                // Only a proven death frees a lock early: an owner whose liveness cannot be
                // told (this process out of file descriptors, hidepid) keeps it until it ages.
                let owner_dead = os::liveness(l.pid, l.start) == os::Liveness::Dead;
                if age < takeover_after && !owner_dead {
                    return Err(Error::Locked { lock_id: l.id, age });
                }
                took_over = true;
            }
            let (expires, sliding) = keep_deadline(m);
            let (_, start) = os::self_identity()?;
            let lock = LockWords { id: 0, time: now, pid, start };
            Ok(Plan::Write { value: None, expires, sliding, lock, kind: ChangeKind::Lock, took_over })
        }
        Op::Unlock { lock_id } => {
            let m = live.ok_or(Error::NotFound)?;
            if !lock_held_by(m, lock_id) {
                return Err(Error::LockMismatch { presented: lock_id, held: m.view.lock.id });
            }
            let (expires, sliding) = keep_deadline(m);
            Ok(Plan::Write {
                value: None,
                expires,
                sliding,
                lock: LockWords::default(),
                kind: ChangeKind::Unlock,
                took_over: false,
            })
        }
        Op::Apply { value, expires, sliding, lock } => Ok(Plan::Write {
            value: Some(value),
            expires,
            sliding,
            lock,
            kind: ChangeKind::Set,
            took_over: false,
        }),
        Op::Retime { expiry } => {
            let m = live.ok_or(Error::NotFound)?;
            let (expires, sliding) = deadline_of(expiry, now);
            Ok(Plan::Write {
                value: None,
                expires,
                sliding,
                lock: m.view.lock,
                kind: ChangeKind::Touch,
                took_over: false,
            })
        }
    }
}
