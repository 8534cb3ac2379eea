//! The segment layout: where everything is, how words are packed, and how a segment is
//! validated on attach. This file is the written contract of the shared memory format; bump
//! [`LAYOUT_VERSION`] whenever anything here changes meaning.
//!
//! ```text
//! offset (words)        region            size
//! 0                     header            512 words (4 KiB): immutable geometry, then
//!                                         mutable words each on its own cache line, and
//!                                         the lock-wait words (448..512, lockwait.rs)
//! feed_off              change feed       feed_len x 4 words (a ring, see feed.rs)
//! clients_off           client table      max_clients x 32 words (256 B per client, clients.rs)
//! index_off             index             n_buckets x 8 words (one cache line a bucket, table.rs)
//! pages_off             page table        n_pages words (`page`: ACTIVE class, RETIRING, RETIRED, INIT)
//! bitmap_off            page bitmaps      n_pages x bitmap_words (1 bit a block: 1 = in use)
//! heap_off (page-aligned) heap            n_pages x page_size bytes of blocks (heap.rs)
//! ```
//!
//! All words are native-endian; [`MAGIC`] read with the other byte order shows up as
//! [`MAGIC_SWAPPED`], so a segment from another architecture is named as such.

use crate::error::{Error, Result, corrupt};
use crate::mem::Mem;
use crate::sync::Ordering;
use xxhash_rust::xxh3::xxh3_64;

pub const MAGIC: u64 = u64::from_be_bytes(*b"GRDNSTAT");
pub const MAGIC_SWAPPED: u64 = MAGIC.swap_bytes();
/// Version of this layout, independent of the crate version.
pub const LAYOUT_VERSION: u64 = 3;
/// The value of [`H_STATE`] once the creator finished initializing the segment.
pub const READY: u64 = u64::from_be_bytes(*b"READY!!!");
/// The value of [`H_STATE`] once the segment is destroyed (segment.rs `destroy`): stored
/// (a CAS from READY) before the name is unlinked, never changed back. Every operation loads
/// `H_STATE` first (a read-only line: nothing else on it is ever written after creation) and
/// fails with `Error::Destroyed` on any value but READY, so a process still attached to the
/// unlinked segment learns at its next operation that nobody will read what it writes, and an
/// attacher that opened the file just before the unlink treats it as missing (`open` then
/// creates or attaches the segment now under the name). An operation that loaded READY just
/// before the stamp completes into the unlinked segment: its write is lost with the segment,
/// as any write the destroy raced. A process killed anywhere in destroy leaves either READY
/// (nothing happened) or DESTROYED on a file that may still be named: attachers treat it as
/// missing and `open` loops to its limit, so a second `destroy` (which unlinks whatever the
/// state) finishes it. Builds of the same layout version that predate this value never look
/// at `H_STATE` after attach: they keep writing, as every build did before.
pub const DESTROYED: u64 = u64::from_be_bytes(*b"DESTROYD");

// ---- header words: immutable after the READY stamp -------------------------------------------
pub const H_MAGIC: usize = 0;
pub const H_VERSION: usize = 1;
pub const H_FINGERPRINT: usize = 2;
pub const H_STATE: usize = 3;
pub const H_SEGMENT_BYTES: usize = 4;
pub const H_MAX_ENTRIES: usize = 5;
pub const H_MAX_KEY: usize = 6;
pub const H_MAX_VALUE: usize = 7;
pub const H_PAGE_SIZE: usize = 8;
pub const H_N_PAGES: usize = 9;
pub const H_N_BUCKETS: usize = 10;
pub const H_MAX_CLIENTS: usize = 11;
pub const H_FEED_LEN: usize = 12;
pub const H_FLAGS: usize = 13;
pub const H_HASH_SEED: usize = 14;
pub const H_DATASET_ID: usize = 15;
pub const H_CREATED_UNIX_MS: usize = 16;
pub const H_CHECKSUM: usize = 17;
/// The boot the segment was created in: a hash of the kernel's boot id (os.rs `ClockId`).
/// Every deadline in the segment (record expiries, lock times, the write and sweep leases)
/// is a CLOCK_MONOTONIC value, which restarts at boot: attach refuses a segment of another
/// boot (`Error::OtherBoot`) instead of reading its deadlines on the new clock (a segment kept
/// in a persistent `GARDENSTATE_SHM_DIR` showed a 1 s TTL as 29 days left).
pub const H_BOOT_ID: usize = 18;
/// The creator's CLOCK_MONOTONIC time-namespace offset in nanoseconds (as i64 bits). Two
/// processes of one boot read different CLOCK_MONOTONIC values in time namespaces with
/// different offsets (`unshare -T --monotonic`), so the boot id alone does not tell: attach
/// also refuses a process whose offset differs (`Error::OtherTimeNamespace`). Comparing the
/// offsets the kernel reports is exact; deriving one from clock readings (monotonic against
/// boottime or realtime) is not, as those drift apart with suspends and wall-clock steps.
pub const H_CLOCK_OFFSET: usize = 19;
/// Words covered by the header checksum: every word before the mutable ones (the reserved
/// words 20..24 included, which must stay zero), except the state stamp and the checksum.
const H_IMMUTABLE_END: usize = 24;

// ---- header words: mutable, one cache line (8 words) each group ------------------------------
/// Replication epoch (bumped by promotions; see the replicator).
pub const H_EPOCH: usize = 24;
/// `[mode changes:56 | mode:8]`: the write mode in the low byte (0 = writable, 1 = read-only
/// replica, 2 = fenced; [`write_mode`]) and, above it, how many times the mode changed.
/// Only `Store::set_write_mode` writes it, with one SeqCst compare-and-swap that changes the
/// mode and counts the change together (and writes nothing when the mode is already the one
/// asked for), so a process killed or stalled at any instruction leaves either the old word or
/// the new one: the count never misses a change nor counts one that did not happen. With
/// [`H_EPOCH`], which never decreases, it makes the role change counter workers read
/// (replica.rs `replication_state`): mode changes + epoch, which moves on every mode change
/// and every epoch raise, and never moves back.
pub const H_WRITE_MODE: usize = 25;
/// The dataset history this segment holds (replica.rs); starts as the dataset id.
pub const H_HISTORY_ID: usize = 26;
/// Feed position up to which the standby has applied every change (replica.rs).
pub const H_REPL_ACKED: usize = 27;
/// Write lease: a CLOCK_MONOTONIC ms deadline after which workers' writes are refused; 0 =
/// none (replica.rs). Segments of older builds hold 0 here.
pub const H_WRITE_LEASE: usize = 28;
/// The process that owns the write mode (a replication daemon, replica.rs "Write-mode
/// ownership"): its client owner word (clients.rs: pid and start time), or 0 (none: any
/// process may set the mode). Changed with single stores (`own_write_mode`); a dead
/// owner's word is stale and ignored.
pub const H_MODE_OWNER: usize = 29;
/// Next change-feed position; also the source of entry versions (feed.rs).
pub const H_FEED_HEAD: usize = 32;
/// Sweeper lease: client slot + 1 in the high 16 bits, deadline ms in the low 48 (store.rs
/// `sweep_with`).
pub const H_SWEEP_LEASE: usize = 40;
/// Next index position the sweeper examines.
pub const H_SWEEP_CURSOR: usize = 41;
/// When (`now_ms`) the next opportunistic sweep is due (store.rs).
pub const H_SWEEP_DUE: usize = 42;
/// Next client slot a bounded sweep step looks at (store.rs `sweep_with`).
pub const H_SWEEP_CLIENT_CURSOR: usize = 64;
/// The heap epoch: bumped by every page retirement, so a process's failed-pass memo (heap.rs
/// "Failing allocations") ends with one. On its own cache line.
pub const H_HEAP_EPOCH: usize = 72;
/// Segment-wide counters (stats.rs), `STAT_COUNT` words (48..64): dead clients reclaimed.
/// Layout 3 added the failed-write counters (stats.rs `FAILED_*`) after the 12 of layout 2,
/// in the client slots' counter range (words 20..24 of a slot) and here.
pub const H_RETIRED_STATS: usize = 48;
/// The PID namespace of the segment's creator (`os::pid_namespace`, the inode shown as
/// `pid:[inode]`), written before the READY stamp and never changed: a process in another
/// PID namespace is refused (clients.rs `client_identity`), since the pids and start times
/// every liveness decision reads would name other processes there. Word 96 of the range
/// 96..111 the client table's segment-wide words use.
pub const H_PID_NS: usize = 96;
/// Per size class: `[frees:40 | page:24]`, the page where allocation of that class looks
/// first and a count of the class's frees (heap.rs "Failing allocations").
pub const H_CLASS_HINT: usize = 128;
pub const MAX_CLASSES: usize = 256;
/// The lock-wait words (lockwait.rs): `LOCK_WAIT_WORDS` shared futex words that `lock_wait`
/// sleeps on and the releases of session locks wake, a key's word chosen by its hash. Each
/// word is `[0:32 | seq:31 | waiting:1]`: the high half stays 0, the low half is the 32-bit
/// futex word (FUTEX_WAIT/FUTEX_WAKE without FUTEX_PRIVATE_FLAG: the key is the file page,
/// shared by every process mapping the segment). `waiting` is set by a waiter before it
/// checks the lock and cleared (with `seq` bumped in the same CAS) by the release that wakes
/// the word's sleepers; zero in a new segment. Invariants (L1, L2) in lockwait.rs.
pub const H_LOCK_WAIT: usize = 448;
pub const LOCK_WAIT_WORDS: usize = 64;
pub const HEADER_WORDS: usize = 512;

pub const FLAG_EVICT: u64 = 1;
pub const FLAG_GROUP: u64 = 2;

/// The mode field of an [`H_WRITE_MODE`] word, and the unit of its change count.
pub mod write_mode {
    pub const MODE_BITS: u32 = 8;
    pub const MODE_MASK: u64 = (1 << MODE_BITS) - 1;
    /// The mode (`WRITE_MODE_*`) of a word.
    pub const fn mode(w: u64) -> u64 {
        w & MODE_MASK
    }
    /// How many times the mode changed.
    pub const fn changes(w: u64) -> u64 {
        w >> MODE_BITS
    }
    /// The word after a change to `mode`.
    pub const fn changed(w: u64, mode: u64) -> u64 {
        (w & !MODE_MASK).wrapping_add(1 << MODE_BITS) | mode
    }
}

pub const WRITE_MODE_WRITABLE: u64 = 0;
pub const WRITE_MODE_REPLICA: u64 = 1;
pub const WRITE_MODE_FENCED: u64 = 2;

// ---- per-region sizes -------------------------------------------------------------------------
pub const FEED_ENTRY_WORDS: usize = 4;
pub const CLIENT_WORDS: usize = 32;
pub const BUCKET_SLOTS: usize = 8;
/// How many buckets past its home bucket a key may be placed (and a lookup may look).
pub const MAX_PROBE_BUCKETS: usize = 16;
const MIN_PAGE_SIZE: u64 = 64 * 1024;
const MIN_BLOCK: u64 = 64;

// ---- records (heap blocks), in words from the block start ------------------------------------
/// Block state: `[kind:2 | owner:14 | gen:48]`, the allocator's source of truth (heap.rs).
pub const R_STATE: usize = 0;
/// The entry's version (unique in the segment, increasing).
pub const R_VERSION: usize = 1;
/// `[block gen:24 | deadline:40]`: the expiry deadline in `now_ms` milliseconds (0 = never),
/// tagged with the block generation so a stale CAS (touch, sliding expiry) can never hit a
/// later record in a reused block. The only word changed after publish.
pub const R_EXPIRES: usize = 2;
/// key_len (low 32) | value_len (high 32).
pub const R_LENS: usize = 3;
/// sliding ttl ms (low 32) | index position the record is published at (high 32).
pub const R_META: usize = 4;
/// The full 64-bit seeded hash of the key.
pub const R_KEY_HASH: usize = 5;
/// Session lock: lock id (0 = unlocked), when it was taken, and the owner process.
pub const R_LOCK_ID: usize = 6;
pub const R_LOCK_TIME: usize = 7;
pub const R_LOCK_PID: usize = 8;
pub const R_LOCK_START: usize = 9;
/// The value checksum seeded with the key hash (record.rs `ValueSum`): a value damaged in
/// place (a stray write into the mapping) is reported as `Corrupt` by the reads that copy
/// it, never returned.
pub const R_SUM: usize = 10;
pub const RECORD_HEADER_WORDS: usize = 11;

/// Bytes of a record holding a key and a value of these lengths.
pub const fn record_bytes(key_len: usize, value_len: usize) -> usize {
    RECORD_HEADER_WORDS * 8 + key_len.div_ceil(8) * 8 + value_len.div_ceil(8) * 8
}

/// The size class of a block able to hold `bytes`: 64 B, then 8 steps per power of two, so a
/// block wastes less than 1/8 of its size (plus under 8 B of padding) to internal fragmentation.
pub const fn class_of(bytes: u64) -> usize {
    if bytes <= MIN_BLOCK {
        return 0;
    }
    let k = 63 - (bytes - 1).leading_zeros() as u64; // 2^k <= bytes-1 < 2^(k+1), k >= 6
    let m = (bytes - 1) >> (k - 3); // 8..=15
    ((k - 6) * 8 + (m - 8) + 1) as usize
}

/// The block size of class `c` (inverse of [`class_of`]).
pub const fn class_size(c: usize) -> u64 {
    if c == 0 {
        return MIN_BLOCK;
    }
    let k = 6 + (c as u64 - 1) / 8;
    let m = 8 + (c as u64 - 1) % 8;
    (m + 1) << (k - 3)
}

/// Packs an `R_EXPIRES` word for a block whose state word is `state`.
pub const fn expires_word(deadline: u64, state: u64) -> u64 {
    ((block::generation(state) & 0xff_ffff) << 40) | (deadline & DEADLINE_MASK)
}
pub const DEADLINE_MASK: u64 = (1 << 40) - 1;

/// Index slot word: `[state:2 | tag:16 | gen:14 | block:32]`. `block` is the record's word
/// offset inside the heap; `gen` is the low 14 bits of the block generation at publish, so a
/// freed and reused block never validates against an old slot word.
///
/// Why 14 bits are enough, whatever a writer's stall. A writer's publishing CAS (update,
/// delete, lock, unlock, expiry, eviction) compares this word alone, so it must not come back
/// to the same value with another record behind it while the writer is between its view and
/// its CAS. A block's generation goes up by one on every take and every free, so the same
/// block at the same slot word needs 2^14 generations, 2^13 reuses of the block. That alone
/// is a count, not a bound: a writer stalled across exactly 16,384 sets of its key (the same
/// two blocks taking turns) used to publish over a record it never saw, its version going
/// backwards and the record it displaced leaking. What bounds it is H5 (heap.rs): a writer
/// journals the block it viewed in its `C_J_OLD` and then re-checks the block's state word
/// (heap.rs `journal_view`), and a take that would bring a block to a guarded generation
/// ([`block::guarded`], two in every [`block::GUARD_SPACING`] = 4,096) first looks through
/// every client's `C_J_OLD` and steps back if one names the block. So a block a writer has
/// viewed and journaled cannot advance more than 4,096 + 1 generations until the writer is
/// done (or dead and reclaimed), under the 2^14 it would need to repeat its slot word; a
/// stall before the journal is caught by the re-check. The width must stay above
/// `log2(GUARD_SPACING) + 1` bits; 14 leaves a factor 4 of margin, and the guard's cost (a
/// scan of the client table) is paid on one take of a block in 2,048.
pub mod slot {
    pub const EMPTY: u64 = 0;
    pub const INSERTING: u64 = 1;
    pub const MEMBER: u64 = 2;
    pub const GEN_MASK: u64 = (1 << 14) - 1;

    pub const fn pack(state: u64, tag: u16, gen_: u64, block: u32) -> u64 {
        (state << 62) | ((tag as u64) << 46) | ((gen_ & GEN_MASK) << 32) | block as u64
    }
    pub const fn state(w: u64) -> u64 {
        w >> 62
    }
    pub const fn tag(w: u64) -> u16 {
        (w >> 46) as u16
    }
    pub const fn generation(w: u64) -> u64 {
        (w >> 32) & GEN_MASK
    }
    pub const fn block(w: u64) -> u32 {
        w as u32
    }
    pub const fn with_state(w: u64, state: u64) -> u64 {
        (w & !(3 << 62)) | (state << 62)
    }
}

/// Page word (the page table, one word a page; heap.rs "Page reuse"): `[state:2 | ...]`.
/// - ACTIVE (state 0): the word is 0 (never used, its memory zeroed) or class + 1.
/// - RETIRING (1): `[1:2 | retirer client:14 | class + 1:48]`, its free blocks being marked
///   RETIRED so no allocator takes them.
/// - RETIRED (2): `[2:2 | bound:62]`, every block RETIRED; `bound` (even) is above every
///   generation any block of the page ever had, and the page's next blocks start FREE at it
///   (generations never repeat at an offset). Reusable once no client's journal names it.
/// - INIT (3): `[3:2 | client:14 | class + 1:48]`, being made a page of that class.
pub mod page {
    pub const ACTIVE: u64 = 0;
    pub const RETIRING: u64 = 1;
    pub const RETIRED: u64 = 2;
    pub const INIT: u64 = 3;
    const LOW: u64 = (1 << 48) - 1;

    pub const fn state(w: u64) -> u64 {
        w >> 62
    }
    pub const fn owned(state: u64, owner: usize, class: usize) -> u64 {
        (state << 62) | (((owner as u64) & 0x3fff) << 48) | (class as u64 + 1)
    }
    pub const fn owner(w: u64) -> usize {
        ((w >> 48) & 0x3fff) as usize
    }
    pub const fn retired(bound: u64) -> u64 {
        (RETIRED << 62) | (bound & ((1 << 62) - 1))
    }
    pub const fn bound(w: u64) -> u64 {
        w & ((1 << 62) - 1)
    }
    /// The size class of a page whose blocks may be in use (ACTIVE and assigned, or
    /// RETIRING); `None` for any other word, or a class beyond `n_classes`.
    pub fn class_of_word(w: u64, n_classes: usize) -> Option<usize> {
        let c = match state(w) {
            ACTIVE => w,
            RETIRING => w & LOW,
            _ => return None,
        };
        (c != 0 && c as usize <= n_classes).then(|| c as usize - 1)
    }
}

/// Block state word: `[kind:2 | owner:14 | gen:48]`.
pub mod block {
    pub const FREE: u64 = 0;
    pub const OWNED: u64 = 1;
    /// Free, in a page being retired: no allocator may take it (heap.rs "Page reuse").
    pub const RETIRED: u64 = 2;
    pub const GEN_MASK: u64 = (1 << 48) - 1;

    pub const fn pack(kind: u64, owner: u16, gen_: u64) -> u64 {
        (kind << 62) | (((owner as u64) & 0x3fff) << 48) | (gen_ & GEN_MASK)
    }
    pub const fn kind(w: u64) -> u64 {
        w >> 62
    }
    pub const fn owner(w: u64) -> u16 {
        ((w >> 48) & 0x3fff) as u16
    }
    pub const fn generation(w: u64) -> u64 {
        w & GEN_MASK
    }

    /// Guarded generations come back every `GUARD_SPACING` (see `slot`, heap.rs H5).
    pub const GUARD_SPACING: u64 = 1 << 12;
    /// Is a take that brings a block to generation `gen_` guarded (H5)? Two consecutive
    /// generations of each `GUARD_SPACING`, so every run of `GUARD_SPACING` generations holds
    /// one a take lands on (takes land on every other generation). Not the first take of a
    /// block (generation 1): filling a segment pays no guard.
    pub const fn guarded(gen_: u64) -> bool {
        gen_ % GUARD_SPACING >= GUARD_SPACING - 2
    }
}

/// The most clients a segment can have (the block owner field is 14 bits).
pub const MAX_CLIENTS_LIMIT: u64 = (1 << 14) - 1;

/// A fingerprint of every constant that shapes the layout (here, in clients.rs and in
/// stats.rs): two builds that would read the segment differently have different
/// fingerprints, so one refuses the other's segment instead of misreading it.
pub fn fingerprint() -> u64 {
    use crate::clients::{
        C_FEED, C_J_NEW, C_J_OLD, C_J_OLD_STATE, C_OWNER, C_PAGE_GEN, C_RECENT_FREE, C_WRITING,
    };
    let parts = [
        HEADER_WORDS as u64,
        H_CHECKSUM as u64,
        H_BOOT_ID as u64,
        H_CLOCK_OFFSET as u64,
        H_EPOCH as u64,
        H_WRITE_MODE as u64,
        write_mode::changed(0x1234_5600, WRITE_MODE_FENCED),
        H_HISTORY_ID as u64,
        H_REPL_ACKED as u64,
        H_WRITE_LEASE as u64,
        H_MODE_OWNER as u64,
        H_FEED_HEAD as u64,
        H_SWEEP_LEASE as u64,
        H_SWEEP_CURSOR as u64,
        H_SWEEP_DUE as u64,
        H_SWEEP_CLIENT_CURSOR as u64,
        H_HEAP_EPOCH as u64,
        C_PAGE_GEN as u64,
        page::owned(page::INIT, 0x1234, 77),
        page::retired(0x5678),
        H_RETIRED_STATS as u64,
        H_PID_NS as u64,
        H_CLASS_HINT as u64,
        MAX_CLASSES as u64,
        H_LOCK_WAIT as u64,
        LOCK_WAIT_WORDS as u64,
        crate::lockwait::WAITING,
        FEED_ENTRY_WORDS as u64,
        CLIENT_WORDS as u64,
        C_OWNER as u64,
        crate::clients::owner_word_example(),
        C_J_NEW as u64,
        C_J_OLD as u64,
        C_J_OLD_STATE as u64,
        C_RECENT_FREE as u64,
        C_WRITING as u64,
        C_FEED as u64,
        crate::stats::CLIENT_STATS_OFF as u64,
        BUCKET_SLOTS as u64,
        MAX_PROBE_BUCKETS as u64,
        RECORD_HEADER_WORDS as u64,
        R_STATE as u64,
        R_VERSION as u64,
        R_EXPIRES as u64,
        R_LENS as u64,
        R_META as u64,
        R_KEY_HASH as u64,
        R_LOCK_ID as u64,
        R_LOCK_TIME as u64,
        R_LOCK_PID as u64,
        R_LOCK_START as u64,
        R_SUM as u64,
        slot::pack(2, 0xabcd, 0x1234, 0x5678_9abc),
        block::pack(1, 0x1234, 0x5678),
        // H5: the guard spacing, and the flag of a guarded take in a C_J_NEW journal word.
        block::GUARD_SPACING,
        crate::heap::J_NEW_GUARDING,
        class_size(37),
        crate::stats::STAT_COUNT as u64,
        // The value checksum function (record.rs): a build that sums values differently
        // would report every value of this one as damaged.
        crate::record::value_sum(b"gardenstate value checksum", 0x5eed),
    ];
    let bytes: Vec<u8> = parts.iter().flat_map(|p| p.to_le_bytes()).collect();
    xxh3_64(&bytes)
}

/// Capacity and behaviour of a segment, fixed when it is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Bytes of heap for records (key + value + an 88-byte header each, in size classes).
    pub capacity_bytes: u64,
    /// Live entries the index is sized for: about 1.75 usable slots an entry (two index
    /// positions, one in eight of them a bucket's probe bound), so inserts find room.
    pub max_entries: u64,
    /// Longest key, in bytes.
    pub max_key: u32,
    /// Longest value, in bytes (default 1 MiB; up to 1 GiB).
    pub max_value: u64,
    /// Operations (across all processes) that can be in flight at the same instant: a thread
    /// holds a client slot only inside an operation, so any number of threads may use the
    /// segment; a claim that finds every slot in use waits for one (up to 2 s).
    pub max_clients: u32,
    /// Change-feed entries kept for followers before they must fall back to a scan.
    pub feed_len: u64,
    /// When full, evict the entry closest to expiry instead of failing with `Full`.
    pub evict: bool,
    /// File mode of the segment: 0o600 by default, 0o660 to share it with the group.
    pub mode: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            capacity_bytes: 64 << 20,
            max_entries: 65_536,
            max_key: 256,
            max_value: 1 << 20,
            max_clients: 512,
            feed_len: 65_536,
            evict: false,
            mode: 0o600,
        }
    }
}

/// The per-segment values `write_header` records besides the geometry.
#[derive(Debug, Clone, Copy)]
pub struct HeaderIds {
    /// The key hash seed.
    pub seed: u64,
    /// The dataset id (also the first history id).
    pub dataset: u64,
    pub now_unix_ms: u64,
    /// The creator's boot and monotonic clock (`H_BOOT_ID`, `H_CLOCK_OFFSET`).
    pub clock: crate::os::ClockId,
}

impl HeaderIds {
    /// Fixed ids for the in-process segments of unit tests and loom models (never attached).
    #[cfg(test)]
    pub fn unit_test(seed: u64) -> HeaderIds {
        HeaderIds {
            seed,
            dataset: 1,
            now_unix_ms: 0,
            clock: crate::os::ClockId { boot: 1, monotonic_offset_ns: 0 },
        }
    }
}

impl Options {
    /// An empty [`HeapDemand`] for a segment with these options (its page size follows from
    /// `max_key` and `max_value`), or why the options are invalid.
    pub fn heap_demand(&self) -> Result<HeapDemand> {
        let g = Geometry::from_options(self)?;
        Ok(HeapDemand { page_size: g.page_size, blocks: vec![0; g.n_classes] })
    }
}

/// The heap a set of records takes, counted by the allocator's own rules (heap.rs): a record
/// takes one block of its size class, and a page holds blocks of one class only while any is
/// in use (an empty page returns to the common pool: heap.rs "Page reuse"). `restore` counts a
/// dump's records with it before writing anything, so the capacity it suggests is one that
/// holds them.
#[derive(Debug, Clone)]
pub struct HeapDemand {
    page_size: u64,
    /// Blocks needed, per size class.
    blocks: Vec<u64>,
}

impl HeapDemand {
    /// Counts one record. Lengths beyond the options' `max_key` / `max_value` are counted in
    /// the largest class (such a record is refused by the store anyway).
    pub fn add(&mut self, key_len: usize, value_len: usize) {
        let class = class_of(record_bytes(key_len, value_len) as u64).min(self.blocks.len() - 1);
        self.blocks[class] += 1;
    }

    /// Bytes of the blocks the records take: what they add to `Stats::bytes_used`, and a lower
    /// bound of the free heap a segment needs for them (free blocks of other classes do not
    /// serve).
    pub fn block_bytes(&self) -> u64 {
        self.blocks.iter().enumerate().map(|(c, &n)| n * class_size(c)).sum()
    }

    /// The heap capacity that holds the records in an empty segment with these options:
    /// whole pages of each class.
    pub fn capacity_bytes(&self) -> u64 {
        let per_page = |c: usize| self.page_size / class_size(c);
        self.blocks.iter().enumerate().map(|(c, &n)| n.div_ceil(per_page(c)) * self.page_size).sum()
    }
}

/// Region offsets derived from the options: the single place that computes them, used by the
/// creator to build the segment and by attachers to check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub max_entries: u64,
    pub max_key: u64,
    pub max_value: u64,
    pub page_size: u64,
    pub n_pages: u64,
    pub n_buckets: u64,
    pub max_clients: u64,
    pub feed_len: u64,
    pub feed_off: usize,
    pub clients_off: usize,
    pub index_off: usize,
    pub pages_off: usize,
    pub bitmap_off: usize,
    pub bitmap_words: usize,
    pub heap_off: usize,
    pub segment_bytes: u64,
    pub n_classes: usize,
}

impl Geometry {
    pub fn from_options(o: &Options) -> Result<Geometry> {
        let bad = |s: String| Err(Error::InvalidOptions(s));
        if o.max_key == 0 || o.max_key > 65_535 {
            return bad(format!("max_key {} must be 1..=65535", o.max_key));
        }
        if o.max_value > 1 << 30 {
            return bad(format!("max_value {} exceeds 1 GiB", o.max_value));
        }
        if o.max_entries == 0 || o.max_entries > 1 << 31 {
            return bad(format!("max_entries {} must be 1..=2^31", o.max_entries));
        }
        if o.max_clients == 0 || o.max_clients as u64 > MAX_CLIENTS_LIMIT {
            return bad(format!("max_clients {} must be 1..={MAX_CLIENTS_LIMIT}", o.max_clients));
        }
        if o.feed_len < 16 || o.feed_len > 1 << 28 {
            return bad(format!("feed_len {} must be 16..=2^28", o.feed_len));
        }
        if o.mode & !0o660 != 0 || o.mode & 0o600 != 0o600 {
            return bad(format!(
                "mode {:o}: use 600 (owner) or 660 (group); sessions are never world-accessible",
                o.mode
            ));
        }
        let max_record = record_bytes(o.max_key as usize, o.max_value as usize) as u64;
        let page_size = max_record.next_power_of_two().max(MIN_PAGE_SIZE);
        let n_pages = o.capacity_bytes.div_ceil(page_size).max(1);
        if n_pages.checked_mul(page_size).is_none_or(|heap| heap / 8 > u32::MAX as u64) {
            return bad(format!("capacity_bytes {} exceeds 32 GiB", o.capacity_bytes));
        }
        let n_classes = class_of(page_size) + 1;
        let n_buckets = (o.max_entries * 2).div_ceil(BUCKET_SLOTS as u64);
        let bitmap_words = (page_size / MIN_BLOCK).div_ceil(64) as usize;
        let feed_off = HEADER_WORDS;
        let clients_off = feed_off + o.feed_len as usize * FEED_ENTRY_WORDS;
        let index_off = clients_off + o.max_clients as usize * CLIENT_WORDS;
        let pages_off = index_off + n_buckets as usize * BUCKET_SLOTS;
        let bitmap_off = pages_off + n_pages as usize;
        let heap_off = (bitmap_off + n_pages as usize * bitmap_words).next_multiple_of(512);
        let segment_bytes = heap_off as u64 * 8 + n_pages * page_size;
        Ok(Geometry {
            max_entries: o.max_entries,
            max_key: o.max_key as u64,
            max_value: o.max_value,
            page_size,
            n_pages,
            n_buckets,
            max_clients: o.max_clients as u64,
            feed_len: o.feed_len,
            feed_off,
            clients_off,
            index_off,
            pages_off,
            bitmap_off,
            bitmap_words,
            heap_off,
            segment_bytes,
            n_classes,
        })
    }

    pub fn heap_words(&self) -> u64 {
        self.n_pages * self.page_size / 8
    }
    pub fn page_words(&self) -> u64 {
        self.page_size / 8
    }
    pub fn index_slots(&self) -> u64 {
        self.n_buckets * BUCKET_SLOTS as u64
    }

    /// Writes the immutable header (everything but the READY stamp) into a zeroed segment.
    pub fn write_header(&self, mem: &Mem, o: &Options, ids: HeaderIds) {
        let HeaderIds { seed, dataset, now_unix_ms, clock } = ids;
        let flags = if o.evict { FLAG_EVICT } else { 0 } | if o.mode & 0o060 != 0 { FLAG_GROUP } else { 0 };
        let vals = [
            (H_MAGIC, MAGIC),
            (H_VERSION, LAYOUT_VERSION),
            (H_FINGERPRINT, fingerprint()),
            (H_SEGMENT_BYTES, self.segment_bytes),
            (H_MAX_ENTRIES, self.max_entries),
            (H_MAX_KEY, self.max_key),
            (H_MAX_VALUE, self.max_value),
            (H_PAGE_SIZE, self.page_size),
            (H_N_PAGES, self.n_pages),
            (H_N_BUCKETS, self.n_buckets),
            (H_MAX_CLIENTS, self.max_clients),
            (H_FEED_LEN, self.feed_len),
            (H_FLAGS, flags),
            (H_HASH_SEED, seed),
            (H_DATASET_ID, dataset),
            (H_HISTORY_ID, dataset),
            (H_CREATED_UNIX_MS, now_unix_ms),
            (H_BOOT_ID, clock.boot),
            (H_CLOCK_OFFSET, clock.monotonic_offset_ns as u64),
        ];
        for (i, v) in vals {
            mem.w(i).store(v, Ordering::Relaxed);
        }
        mem.w(H_CHECKSUM).store(header_checksum(mem), Ordering::Relaxed);
    }

    /// Checks a mapped segment's header (O(1): no scan) and returns its geometry.
    /// `file_bytes` is the size of the file, which must match the recorded size exactly.
    pub fn validate(mem: &Mem, file_bytes: u64) -> Result<Geometry> {
        let r = |i: usize| mem.w(i).load(Ordering::Acquire);
        let incompatible =
            |what, expected: String, found: String| Err(Error::Incompatible { what, expected, found });
        match r(H_MAGIC) {
            MAGIC => {}
            MAGIC_SWAPPED => {
                return incompatible("byte order", "this machine's".into(), "the opposite byte order".into());
            }
            m => return Err(corrupt("magic", format!("expected {MAGIC:#018x}, found {m:#018x}"))),
        }
        if r(H_VERSION) != LAYOUT_VERSION {
            return incompatible("layout version", LAYOUT_VERSION.to_string(), r(H_VERSION).to_string());
        }
        if r(H_FINGERPRINT) != fingerprint() {
            return incompatible(
                "layout fingerprint",
                format!("{:#x}", fingerprint()),
                format!("{:#x}", r(H_FINGERPRINT)),
            );
        }
        let sum = header_checksum(mem);
        if r(H_CHECKSUM) != sum {
            return Err(corrupt(
                "header checksum",
                format!("computed {sum:#x}, stored {:#x}", r(H_CHECKSUM)),
            ));
        }
        let opts = Options {
            capacity_bytes: r(H_N_PAGES).saturating_mul(r(H_PAGE_SIZE)),
            max_entries: r(H_MAX_ENTRIES),
            max_key: u32::try_from(r(H_MAX_KEY)).unwrap_or(0),
            max_value: r(H_MAX_VALUE),
            max_clients: u32::try_from(r(H_MAX_CLIENTS)).unwrap_or(0),
            feed_len: r(H_FEED_LEN),
            evict: r(H_FLAGS) & FLAG_EVICT != 0,
            mode: 0o600,
        };
        let g = Geometry::from_options(&opts).map_err(|e| corrupt("header geometry", e.to_string()))?;
        let recorded = [
            ("page size", r(H_PAGE_SIZE), g.page_size),
            ("page count", r(H_N_PAGES), g.n_pages),
            ("bucket count", r(H_N_BUCKETS), g.n_buckets),
            ("segment size", r(H_SEGMENT_BYTES), g.segment_bytes),
            ("file size", file_bytes, g.segment_bytes),
        ];
        for (what, found, expected) in recorded {
            if found != expected {
                return Err(corrupt(what, format!("expected {expected}, found {found}")));
            }
        }
        Ok(g)
    }
}

pub(crate) fn header_checksum(mem: &Mem) -> u64 {
    header_checksum_with(|i| mem.w(i).load(Ordering::Relaxed))
}

/// The header checksum of a segment file's bytes (the fuzzer forges headers with it).
#[cfg(not(loom))]
pub(crate) fn header_checksum_of_bytes(bytes: &[u8]) -> u64 {
    header_checksum_with(|i| u64::from_ne_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes")))
}

fn header_checksum_with(word: impl Fn(usize) -> u64) -> u64 {
    let bytes: Vec<u8> = (0..H_IMMUTABLE_END)
        .filter(|&i| i != H_STATE && i != H_CHECKSUM)
        .flat_map(|i| word(i).to_le_bytes())
        .collect();
    xxh3_64(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_demand_counts_whole_pages_per_class() {
        let o = Options { capacity_bytes: 1 << 20, max_value: 8 << 10, ..Options::default() };
        let mut d = o.heap_demand().unwrap();
        assert_eq!((d.block_bytes(), d.capacity_bytes()), (0, 0));
        for len in [100, 1000, 5000] {
            d.add(2, len);
        }
        let blocks: u64 =
            [100, 1000, 5000].map(|v| class_size(class_of(record_bytes(2, v) as u64))).iter().sum();
        assert_eq!(d.block_bytes(), blocks);
        assert_eq!(d.capacity_bytes(), 3 * MIN_PAGE_SIZE, "three classes, a page each");
        // A page of the 100-byte class fills up, then the next record of it takes a page more.
        let per_page = MIN_PAGE_SIZE / class_size(class_of(record_bytes(2, 100) as u64));
        for _ in 1..per_page {
            d.add(2, 100);
        }
        assert_eq!(d.capacity_bytes(), 3 * MIN_PAGE_SIZE);
        d.add(2, 100);
        assert_eq!(d.capacity_bytes(), 4 * MIN_PAGE_SIZE);
    }

    #[test]
    fn classes_round_trip_and_bound_waste() {
        assert_eq!(class_of(1), 0);
        assert_eq!(class_of(64), 0);
        assert_eq!(class_of(65), 1);
        assert_eq!(class_size(1), 72);
        for c in 0..200 {
            let s = class_size(c);
            assert_eq!(class_of(s), c, "class {c} size {s}");
            assert_eq!(class_of(s + 1), c + 1, "one past class {c}");
            assert_eq!(s % 8, 0);
        }
        for bytes in (65..1_000_000u64).step_by(97) {
            let s = class_size(class_of(bytes));
            assert!(s >= bytes && (s - bytes) * 8 < s, "{bytes} -> {s}");
        }
    }

    #[test]
    fn slot_and_block_words_pack() {
        let w = slot::pack(slot::MEMBER, 0xbeef, 0x3fff + 5, 0xdead_beef);
        assert_eq!(slot::state(w), slot::MEMBER);
        assert_eq!(slot::tag(w), 0xbeef);
        assert_eq!(slot::generation(w), 4);
        assert_eq!(slot::block(w), 0xdead_beef);
        assert_eq!(slot::state(slot::with_state(w, slot::INSERTING)), slot::INSERTING);
        let b = block::pack(block::OWNED, 0x3ffe, (1 << 48) + 9);
        assert_eq!((block::kind(b), block::owner(b), block::generation(b)), (block::OWNED, 0x3ffe, 9));
    }

    #[test]
    fn geometry_is_consistent() {
        let g = Geometry::from_options(&Options::default()).unwrap();
        assert_eq!(g.page_size, 2 << 20);
        assert!(class_size(g.n_classes - 1) <= g.page_size);
        assert!(class_size(g.n_classes - 1) as usize >= record_bytes(256, 1 << 20));
        assert!(g.n_classes <= MAX_CLASSES);
        assert_eq!(g.heap_off % 512, 0, "heap is page aligned");
        assert!(g.index_slots() >= 2 * g.max_entries);
        let big = Options { max_value: 8 << 20, capacity_bytes: 1 << 30, ..Options::default() };
        assert_eq!(Geometry::from_options(&big).unwrap().page_size, 16 << 20);
    }

    #[test]
    fn bad_options_are_refused() {
        let d = Options::default();
        for o in [
            Options { max_key: 0, ..d.clone() },
            Options { max_value: 2 << 30, ..d.clone() },
            Options { max_entries: 0, ..d.clone() },
            Options { max_clients: 20_000, ..d.clone() },
            Options { mode: 0o644, ..d.clone() },
            Options { mode: 0o400, ..d.clone() },
            Options { capacity_bytes: 64 << 30, ..d.clone() },
        ] {
            assert!(matches!(Geometry::from_options(&o), Err(Error::InvalidOptions(_))), "{o:?}");
        }
    }
}
