// The .NET binding of libgardenstate: Store (a segment handle), its results, and the
// exceptions that carry the C status code and message.
using System;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;

namespace Gardenstate
{
    /// <summary>Status codes of include/gardenstate.h (stable: never renumbered).</summary>
    public enum Status
    {
        Ok = 0, NotFound = 1, FeedEmpty = 2, FeedPending = 3,
        Exists = 10, VersionMismatch = 11, Locked = 12, LockMismatch = 13, ReadOnly = 14,
        FullIndex = 20, FullHeap = 21, FullClients = 22, KeyLength = 23, ValueLength = 24,
        BufferTooSmall = 25, FeedOverflow = 26,
        Io = 30, SegmentExists = 31, NoSegment = 32, Permission = 33, Incompatible = 34,
        Corrupt = 35, NotReady = 36, InvalidOptions = 37, Refused = 38, Destroyed = 39,
        NullArgument = 40, InvalidArgument = 41, Panic = 42, OutOfMemory = 43, Unknown = 49,
    }

    /// <summary>An error status (10 or more) from libgardenstate, with its thread-local message.</summary>
    public class GardenstateException : Exception
    {
        public int Code { get; private set; }
        public Status Status { get { return (Status)Code; } }
        public GardenstateException(int code, string message) : base(message) { Code = code; }
    }
    /// <summary>GDS_ERR_EXISTS: Add found a live entry.</summary>
    public class KeyExistsException : GardenstateException { public KeyExistsException(int c, string m) : base(c, m) { } }
    /// <summary>GDS_ERR_VERSION_MISMATCH: CompareAndSet lost.</summary>
    public class VersionMismatchException : GardenstateException { public VersionMismatchException(int c, string m) : base(c, m) { } }
    /// <summary>GDS_ERR_LOCK_MISMATCH: the lock was taken over, or the entry is not locked.</summary>
    public class LockMismatchException : GardenstateException { public LockMismatchException(int c, string m) : base(c, m) { } }
    /// <summary>GDS_ERR_READ_ONLY: a standby or fenced segment.</summary>
    public class ReadOnlyException : GardenstateException { public ReadOnlyException(int c, string m) : base(c, m) { } }
    /// <summary>GDS_ERR_FULL_INDEX, _HEAP, _CLIENTS.</summary>
    public class StoreFullException : GardenstateException { public StoreFullException(int c, string m) : base(c, m) { } }
    /// <summary>GDS_ERR_SEGMENT_EXISTS, NO_SEGMENT, INCOMPATIBLE, CORRUPT, NOT_READY, REFUSED, PERMISSION, IO, DESTROYED.</summary>
    public class SegmentException : GardenstateException { public SegmentException(int c, string m) : base(c, m) { } }
    /// <summary>GDS_ERR_DESTROYED: the segment was destroyed while this store was attached; nothing
    /// written to it would be read again. Dispose the store and open it again (Open creates or
    /// attaches the segment now under the name).</summary>
    public class SegmentDestroyedException : SegmentException { public SegmentDestroyedException(int c, string m) : base(c, m) { } }

    /// <summary>Metadata of an entry.</summary>
    public struct EntryMeta
    {
        public ulong Version, ValueLength, LockId, LockAgeMs;
        /// <summary>Milliseconds before expiry; null if the entry never expires.</summary>
        public ulong? TtlLeftMs;
        internal static EntryMeta From(GdsMeta m)
        {
            return new EntryMeta
            {
                Version = m.version, ValueLength = m.value_len, LockId = m.lock_id, LockAgeMs = m.lock_age_ms,
                TtlLeftMs = m.ttl_left_ms == Native.TTL_NEVER ? (ulong?)null : m.ttl_left_ms,
            };
        }
    }

    /// <summary>The answer of Store.Lock: either the lock is ours (Acquired), or who holds it.</summary>
    public sealed class LockResult
    {
        public bool Acquired;
        /// <summary>Acquired: the id that unlocks. Otherwise: the holder's id.</summary>
        public ulong LockId;
        /// <summary>Not acquired: how long the holder has held it (ms).</summary>
        public ulong LockAgeMs;
        public bool TookOver;
        /// <summary>Acquired: the value (never null).</summary>
        public byte[] Value;
        public EntryMeta Meta;
    }

    public struct StoreInfo
    {
        public ulong SegmentBytes, HeapBytes, PageSize, MaxEntries, IndexSlots, MaxKey, MaxValue,
            MaxClients, FeedLength, DatasetId, Flags;
    }

    /// <summary>What a segment is for its workers now (GDS_ROLE_*).</summary>
    public enum ReplicationRole : uint
    {
        /// <summary>Writable: writes are accepted.</summary>
        Primary = 0,
        /// <summary>A standby replica: writes throw ReadOnlyException until a promotion.</summary>
        Standby = 1,
        /// <summary>A primary that lost its quorum (or was demoted): writes throw ReadOnlyException.</summary>
        Fenced = 2,
        /// <summary>Writable, but the replication daemon stopped renewing its write lease: writes
        /// throw ReadOnlyException until it renews it or a failover ends it.</summary>
        LeaseLapsed = 3,
    }

    /// <summary>Where a segment stands in its replication history (gds_replication_state).</summary>
    public struct ReplicationState
    {
        /// <summary>Raised by every promotion, never lowered.</summary>
        public ulong Epoch;
        public ReplicationRole Role;
        /// <summary>Grows on every role change and epoch raise: compare it with the value seen before
        /// to learn that a failover happened.</summary>
        public ulong Changes;
        /// <summary>Whether writes are accepted now (Role is Primary).</summary>
        public bool Writable { get { return Role == ReplicationRole.Primary; } }
    }

    public struct StoreStats
    {
        public ulong LiveEntries, BytesUsed, BytesFree, Hits, Misses, Sets, Deletes, Expirations,
            Evictions, Touches, Locks, LockContentions, LockTakeovers, DeadReclaims, Sweeps, Clients, FeedHead;
    }

    public struct CheckReport
    {
        public ulong Entries, BlocksInUse, LeakedBlocks, HiddenFreeBlocks, StaleFreeBits, DeadClients, ProblemCount;
        /// <summary>One problem per line; null for a healthy segment.</summary>
        public string Problems;
        public bool Ok { get { return ProblemCount == 0; } }
    }

    public struct SweepReport { public bool Ran; public ulong Examined, Expired, DeadClientsReclaimed; }

    /// <summary>Segment capacity; a field left 0 takes the library default when Open creates the
    /// segment, and is not checked when it attaches to an existing one (only the fields set are:
    /// Flags Evict gives "evict", EvictGiven alone gives "no eviction").</summary>
    public sealed class StoreOptions
    {
        /// <summary>Flags bits: GDS_OPTION_EVICT, GDS_OPTION_EVICT_GIVEN.</summary>
        public const uint Evict = 1, EvictGiven = 2;
        public ulong CapacityBytes, MaxEntries, MaxValue, FeedLength;
        public uint MaxKey, MaxClients, Mode, Flags;
    }

    /// <summary>How a write expires.</summary>
    public struct Expiry
    {
        internal uint Kind; internal ulong TtlMs;
        public static readonly Expiry Never = new Expiry { Kind = Native.EXPIRY_NEVER, TtlMs = 0 };
        public static Expiry After(TimeSpan ttl) { return new Expiry { Kind = Native.EXPIRY_AFTER, TtlMs = Ms(ttl) }; }
        public static Expiry Sliding(TimeSpan ttl) { return new Expiry { Kind = Native.EXPIRY_SLIDING, TtlMs = Ms(ttl) }; }
        static ulong Ms(TimeSpan t)
        {
            if (t.Ticks <= 0) throw new ArgumentOutOfRangeException("ttl", "a TTL must be positive");
            double ms = Math.Ceiling(t.TotalMilliseconds);
            return ms < 1 ? 1UL : (ulong)ms;
        }
        public override string ToString() { return Kind == 0 ? "never" : (Kind == 1 ? "after " : "sliding ") + TtlMs + " ms"; }
    }

    /// <summary>One open segment. Safe for any number of threads; Dispose closes it.</summary>
    public sealed unsafe class Store : IDisposable
    {
        static readonly object initGate = new object();
        static bool abiChecked;
        static readonly Regex nameRe = new Regex("^[A-Za-z0-9._-]{1,200}$");

        readonly StoreHandle h;
        readonly string name;
        // The per-thread read buffer of Get(key): grows on GDS_ERR_BUFFER_TOO_SMALL.
        [ThreadStatic] static byte[] readBuf;

        /// <summary>Checks gds_abi_version() == GDS_ABI_VERSION before any other call; throws if not.</summary>
        public static void EnsureLibrary()
        {
            if (abiChecked) return;
            lock (initGate)
            {
                if (abiChecked) return;
                uint abi = Native.gds_abi_version();
                if (abi != Native.AbiVersion)
                    throw new InvalidOperationException(string.Format(
                        "libgardenstate has ABI version {0}, this binding was written for {1}: use a matching library", abi, Native.AbiVersion));
                abiChecked = true;
            }
        }

        public static string LibraryVersion { get { EnsureLibrary(); return Marshal.PtrToStringAnsi(Native.gds_version()); } }

        /// <summary>The directory segments live in (/dev/shm or $GARDENSTATE_SHM_DIR).</summary>
        public static string ShmDir
        {
            get
            {
                EnsureLibrary();
                IntPtr p;
                Check(Native.gds_shm_dir(out p));
                try { return Marshal.PtrToStringAnsi(p); } finally { Native.gds_buffer_free(p); }
            }
        }

        // The segment's limits, read once at open: over-long keys and values are refused here
        // with ArgumentException before any call (the library would refuse them too).
        readonly ulong maxKey, maxValue;

        Store(StoreHandle h, string name)
        {
            this.h = h; this.name = name;
            var i = Info();
            maxKey = i.MaxKey; maxValue = i.MaxValue;
        }
        public string Name { get { return name; } }

        public static Store Create(string name, StoreOptions options = null) { return Make(0, name, options); }
        /// <summary>Open, creating it if absent (what every worker of a pool calls).</summary>
        public static Store Open(string name, StoreOptions options = null) { return Make(1, name, options); }
        public static Store Attach(string name, bool group = false) { return Make(group ? 3 : 2, name, null); }

        static Store Make(int how, string name, StoreOptions o)
        {
            EnsureLibrary();
            byte[] n = NameBytes(name);
            var opts = new GdsOptions { struct_size = (ulong)sizeof(GdsOptions) };
            if (o != null)
            {
                opts.capacity_bytes = o.CapacityBytes; opts.max_entries = o.MaxEntries; opts.max_value = o.MaxValue;
                opts.feed_len = o.FeedLength; opts.max_key = o.MaxKey; opts.max_clients = o.MaxClients;
                opts.mode = o.Mode; opts.flags = o.Flags;
            }
            StoreHandle sh;
            int st;
            switch (how)
            {
                case 0: st = Native.gds_create(n, ref opts, out sh); break;
                case 1: st = Native.gds_open(n, ref opts, out sh); break;
                case 2: st = Native.gds_attach(n, out sh); break;
                default: st = Native.gds_attach_group(n, out sh); break;
            }
            Check(st);
            return new Store(sh, name);
        }

        /// <summary>Removes a segment; false if there was none.</summary>
        public static bool Destroy(string name)
        {
            EnsureLibrary();
            int st = Native.gds_destroy(NameBytes(name));
            if (st == Native.NOT_FOUND) return false;
            Check(st);
            return true;
        }

        public void Dispose() { h.Dispose(); }
        public bool IsClosed { get { return h.IsClosed; } }

        // ---- data path ----

        /// <summary>The value of key, or null if absent or expired (extends a sliding deadline).</summary>
        public byte[] Get(byte[] key)
        {
            EntryMeta m;
            return Get(key, out m);
        }

        public byte[] Get(byte[] key, out EntryMeta meta)
        {
            byte[] buf = readBuf ?? (readBuf = new byte[4096]);
            int len;
            if (!TryGet(key, ref buf, out len, out meta)) return null;
            readBuf = buf;
            var v = new byte[len];
            Buffer.BlockCopy(buf, 0, v, 0, len);
            return v;
        }

        /// <summary>Reads key into buffer (replaced by a larger array when too small: keep the
        /// returned one for the next call). False if absent; else the value is buffer[0..length].</summary>
        public bool TryGet(byte[] key, ref byte[] buffer, out int length, out EntryMeta meta)
        {
            Key(key);
            if (buffer == null) buffer = new byte[0];
            Use();
            for (;;)
            {
                UIntPtr vlen; GdsMeta gm; int st;
                fixed (byte* k = key)
                fixed (byte* b = buffer)
                    st = Native.gds_get(h, k, (UIntPtr)key.Length, b, (UIntPtr)buffer.Length, out vlen, out gm);
                if (st == (int)Status.BufferTooSmall)
                {
                    ulong need = (ulong)vlen;
                    if (need > int.MaxValue) throw new GardenstateException(st, "value too large for a .NET array");
                    buffer = new byte[Math.Max((int)need, buffer.Length * 2)];
                    continue; // the value may have grown again meanwhile: ask once more
                }
                if (st == Native.NOT_FOUND) { length = 0; meta = default(EntryMeta); return false; }
                Check(st);
                length = (int)(ulong)vlen;
                meta = EntryMeta.From(gm);
                return true;
            }
        }

        /// <summary>Metadata of key without its value, or null if absent.</summary>
        public EntryMeta? GetMeta(byte[] key)
        {
            Key(key); Use();
            GdsMeta gm; int st;
            fixed (byte* k = key) st = Native.gds_get_meta(h, k, (UIntPtr)key.Length, out gm);
            if (st == Native.NOT_FOUND) return null;
            Check(st);
            return EntryMeta.From(gm);
        }

        /// <summary>Stores value (replacing any, dropping any lock); returns the new version.</summary>
        public ulong Set(byte[] key, byte[] value, Expiry expiry = default(Expiry))
        {
            Key(key); Value(value); Use();
            ulong ver; int st;
            fixed (byte* k = key) fixed (byte* v = value)
                st = Native.gds_set(h, k, (UIntPtr)key.Length, v, (UIntPtr)value.Length, expiry.Kind, expiry.TtlMs, out ver);
            Check(st);
            return ver;
        }

        /// <summary>Stores value only if key is absent; the version, or null if a live entry exists.</summary>
        public ulong? Add(byte[] key, byte[] value, Expiry expiry = default(Expiry))
        {
            Key(key); Value(value); Use();
            ulong ver; int st;
            fixed (byte* k = key) fixed (byte* v = value)
                st = Native.gds_add(h, k, (UIntPtr)key.Length, v, (UIntPtr)value.Length, expiry.Kind, expiry.TtlMs, out ver);
            if (st == (int)Status.Exists) return null;
            Check(st);
            return ver;
        }

        /// <summary>Stores value only if key is at expectedVersion; the new version, or null if
        /// the entry is absent or at another version.</summary>
        public ulong? CompareAndSet(byte[] key, ulong expectedVersion, byte[] value, Expiry expiry = default(Expiry))
        {
            Key(key); Value(value); Use();
            ulong ver; int st;
            fixed (byte* k = key) fixed (byte* v = value)
                st = Native.gds_compare_and_set(h, k, (UIntPtr)key.Length, expectedVersion, v, (UIntPtr)value.Length,
                    expiry.Kind, expiry.TtlMs, out ver);
            if (st == Native.NOT_FOUND || st == (int)Status.VersionMismatch) return null;
            Check(st);
            return ver;
        }

        /// <summary>Removes key; false if it was absent.</summary>
        public bool Delete(byte[] key)
        {
            Key(key); Use();
            int st;
            fixed (byte* k = key) st = Native.gds_delete(h, k, (UIntPtr)key.Length);
            if (st == Native.NOT_FOUND) return false;
            Check(st);
            return true;
        }

        /// <summary>Resets key's expiry from now; false if absent.</summary>
        public bool Touch(byte[] key, Expiry expiry)
        {
            Key(key); Use();
            int st;
            fixed (byte* k = key) st = Native.gds_touch(h, k, (UIntPtr)key.Length, expiry.Kind, expiry.TtlMs);
            if (st == Native.NOT_FOUND) return false;
            Check(st);
            return true;
        }

        /// <summary>Takes the session lock of key and reads it (never waits). A lock older than
        /// takeoverAfter, or whose owner died, is taken over. Null if key is absent.</summary>
        public LockResult Lock(byte[] key, TimeSpan takeoverAfter)
        {
            return LockWait(key, takeoverAfter, TimeSpan.Zero);
        }

        /// <summary>Lock, waiting up to timeout while another lock id holds it (gds_lock_wait):
        /// returns as soon as the holder releases it, woken by the release itself, or once it can
        /// be taken over; Acquired = false (with the holder) only once timeout passed. Blocks the
        /// calling thread. TimeSpan.Zero: Lock.</summary>
        public LockResult LockWait(byte[] key, TimeSpan takeoverAfter, TimeSpan timeout)
        {
            Key(key); Use();
            if (takeoverAfter.Ticks < 0) throw new ArgumentOutOfRangeException("takeoverAfter");
            if (timeout.Ticks < 0) throw new ArgumentOutOfRangeException("timeout");
            ulong tk = (ulong)Math.Ceiling(takeoverAfter.TotalMilliseconds);
            ulong wait = (ulong)Math.Ceiling(timeout.TotalMilliseconds);
            IntPtr vp; UIntPtr vlen; GdsMeta gm; GdsLockInfo li; int st;
            fixed (byte* k = key)
                st = wait == 0
                    ? Native.gds_lock(h, k, (UIntPtr)key.Length, tk, out vp, out vlen, out gm, out li)
                    : Native.gds_lock_wait(h, k, (UIntPtr)key.Length, tk, wait, out vp, out vlen, out gm, out li);
            if (st == Native.NOT_FOUND) return null;
            if (st == (int)Status.Locked)
                return new LockResult { Acquired = false, LockId = li.lock_id, LockAgeMs = li.age_ms };
            Check(st);
            byte[] v;
            try
            {
                v = new byte[(int)(ulong)vlen];
                if (v.Length > 0) Marshal.Copy(vp, v, 0, v.Length);
            }
            finally { Native.gds_buffer_free(vp); }
            return new LockResult { Acquired = true, LockId = li.lock_id, TookOver = li.took_over != 0, Value = v, Meta = EntryMeta.From(gm) };
        }

        /// <summary>Releases lock lockId on key, keeping the value. False if the entry is gone;
        /// LockMismatchException if the lock was taken over (or the entry is not locked).</summary>
        public bool Unlock(byte[] key, ulong lockId)
        {
            Key(key); Use();
            int st;
            fixed (byte* k = key) st = Native.gds_unlock(h, k, (UIntPtr)key.Length, lockId);
            if (st == Native.NOT_FOUND) return false;
            Check(st);
            return true;
        }

        /// <summary>Stores value and releases lockId in one step. Null if the entry is gone;
        /// LockMismatchException if the lock was taken over (the write lost).</summary>
        public ulong? SetAndUnlock(byte[] key, ulong lockId, byte[] value, Expiry expiry = default(Expiry))
        {
            Key(key); Value(value); Use();
            ulong ver; int st;
            fixed (byte* k = key) fixed (byte* v = value)
                st = Native.gds_set_and_unlock(h, k, (UIntPtr)key.Length, lockId, v, (UIntPtr)value.Length,
                    expiry.Kind, expiry.TtlMs, out ver);
            if (st == Native.NOT_FOUND) return null;
            Check(st);
            return ver;
        }

        // ---- maintenance ----

        public StoreInfo Info()
        {
            Use();
            var i = new GdsInfo { struct_size = (ulong)sizeof(GdsInfo) };
            Check(Native.gds_get_info(h, ref i));
            return new StoreInfo
            {
                SegmentBytes = i.segment_bytes, HeapBytes = i.heap_bytes, PageSize = i.page_size, MaxEntries = i.max_entries,
                IndexSlots = i.index_slots, MaxKey = i.max_key, MaxValue = i.max_value, MaxClients = i.max_clients,
                FeedLength = i.feed_len, DatasetId = i.dataset_id, Flags = i.flags,
            };
        }

        /// <summary>The epoch, role and change counter, in a few atomic loads: cheap enough for every
        /// request. On anything but a primary, writes throw ReadOnlyException: answer 503 with
        /// Retry-After (README.md, "Failover").</summary>
        public ReplicationState GetReplicationState()
        {
            Use();
            var r = new GdsReplicationState { struct_size = (ulong)sizeof(GdsReplicationState) };
            Check(Native.gds_get_replication_state(h, ref r));
            return new ReplicationState { Epoch = r.epoch, Role = (ReplicationRole)r.role, Changes = r.changes };
        }

        public StoreStats Stats()
        {
            Use();
            var s = new GdsStats { struct_size = (ulong)sizeof(GdsStats) };
            Check(Native.gds_get_stats(h, ref s));
            return new StoreStats
            {
                LiveEntries = s.live_entries, BytesUsed = s.bytes_used, BytesFree = s.bytes_free, Hits = s.hits,
                Misses = s.misses, Sets = s.sets, Deletes = s.deletes, Expirations = s.expirations, Evictions = s.evictions,
                Touches = s.touches, Locks = s.locks, LockContentions = s.lock_contentions, LockTakeovers = s.lock_takeovers,
                DeadReclaims = s.dead_reclaims, Sweeps = s.sweeps, Clients = s.clients, FeedHead = s.feed_head,
            };
        }

        public SweepReport Sweep(ulong budget)
        {
            Use();
            var r = new GdsSweepReport { struct_size = (ulong)sizeof(GdsSweepReport) };
            Check(Native.gds_sweep(h, budget, ref r));
            return new SweepReport { Ran = r.ran != 0, Examined = r.examined, Expired = r.expired, DeadClientsReclaimed = r.dead_clients_reclaimed };
        }

        /// <summary>Checks every invariant of the segment (meant for a quiet segment).</summary>
        public CheckReport Check()
        {
            Use();
            var r = new GdsCheckReport { struct_size = (ulong)sizeof(GdsCheckReport) };
            IntPtr p;
            Check(Native.gds_check(h, ref r, out p));
            string problems = null;
            if (p != IntPtr.Zero) { try { problems = Marshal.PtrToStringAnsi(p); } finally { Native.gds_buffer_free(p); } }
            return new CheckReport
            {
                Entries = r.entries, BlocksInUse = r.blocks_in_use, LeakedBlocks = r.leaked_blocks,
                HiddenFreeBlocks = r.hidden_free_blocks, StaleFreeBits = r.stale_free_bits, DeadClients = r.dead_clients,
                ProblemCount = r.problem_count, Problems = problems,
            };
        }

        // ---- helpers ----

        void Use() { if (h.IsClosed) throw new ObjectDisposedException("Store " + name); }

        void Key(byte[] key)
        {
            if (key == null) throw new ArgumentNullException("key");
            if (key.Length == 0) throw new ArgumentException("a key must not be empty", "key");
            if ((ulong)key.Length > maxKey)
                throw new ArgumentException(string.Format("a key of {0} bytes is longer than this segment's max_key ({1})", key.Length, maxKey), "key");
        }

        void Value(byte[] value)
        {
            if (value == null) throw new ArgumentNullException("value");
            if ((ulong)value.Length > maxValue)
                throw new ArgumentException(string.Format("a value of {0} bytes is longer than this segment's max_value ({1})", value.Length, maxValue), "value");
        }

        static byte[] NameBytes(string name)
        {
            if (name == null) throw new ArgumentNullException("name");
            if (!nameRe.IsMatch(name))
                throw new ArgumentException("a segment name is 1 to 200 characters from [A-Za-z0-9._-], got \"" + name + "\"", "name");
            var b = Encoding.ASCII.GetBytes(name);
            Array.Resize(ref b, b.Length + 1); // NUL
            return b;
        }

        /// <summary>Throws the exception for an error status (10 or more, or unknown).</summary>
        internal static void Check(int st)
        {
            if (st == Native.OK) return;
            string msg = Marshal.PtrToStringAnsi(Native.gds_last_error_message());
            if (string.IsNullOrEmpty(msg) || st < 10) msg = Marshal.PtrToStringAnsi(Native.gds_strerror(st));
            msg = string.Format("{0} ({1}): {2}", (Status)st, st, msg);
            switch ((Status)st)
            {
                case Status.Exists: throw new KeyExistsException(st, msg);
                case Status.VersionMismatch: throw new VersionMismatchException(st, msg);
                case Status.LockMismatch: throw new LockMismatchException(st, msg);
                case Status.ReadOnly: throw new ReadOnlyException(st, msg);
                case Status.FullIndex: case Status.FullHeap: case Status.FullClients: throw new StoreFullException(st, msg);
                case Status.Io: case Status.SegmentExists: case Status.NoSegment: case Status.Permission:
                case Status.Incompatible: case Status.Corrupt: case Status.NotReady: case Status.Refused:
                    throw new SegmentException(st, msg);
                case Status.Destroyed: throw new SegmentDestroyedException(st, msg);
                default: throw new GardenstateException(st, msg);
            }
        }
    }
}
