// The ASP.NET session-state provider shape over a Store: the method set of
// System.Web.SessionState.SessionStateStoreProviderBase, without HttpContext (see README.md:
// a standalone class; the web.config adapter is a thin subclass that forwards to it).
using System;
using System.Collections.Generic;
using System.IO;
using System.Text;

namespace Gardenstate
{
    /// <summary>System.Web.SessionState.SessionStateActions.</summary>
    [Flags]
    public enum SessionStateActions { None = 0, InitializeItem = 1 }

    /// <summary>One session: its items and its timeout (minutes), like SessionStateStoreData.
    /// Item values are null, string, bool, int, long, double, DateTime or byte[].</summary>
    public sealed class SessionData
    {
        public int Timeout;
        public readonly Dictionary<string, object> Items = new Dictionary<string, object>(StringComparer.Ordinal);
        public SessionData(int timeoutMinutes) { Timeout = timeoutMinutes; }

        public object this[string name]
        {
            get { object v; return Items.TryGetValue(name, out v) ? v : null; }
            set { Items[name] = value; }
        }

        // Format, version 1 (little endian, BinaryWriter): byte 'G', byte version, byte flags
        // (1: uninitialized), int32 timeout minutes, int32 count, then per item: string name
        // (BinaryWriter's length-prefixed UTF-8), byte tag, value.
        internal const byte FormatVersion = 1;
        enum Tag : byte { Null = 0, String = 1, Bool = 2, Int = 3, Long = 4, Double = 5, DateTime = 6, Bytes = 7 }

        internal static byte[] Serialize(SessionData d, bool uninitialized)
        {
            var ms = new MemoryStream();
            using (var w = new BinaryWriter(ms, Encoding.UTF8))
            {
                w.Write((byte)'G'); w.Write(FormatVersion); w.Write((byte)(uninitialized ? 1 : 0));
                w.Write(d.Timeout); w.Write(d.Items.Count);
                foreach (var kv in d.Items)
                {
                    w.Write(kv.Key);
                    object v = kv.Value;
                    if (v == null) w.Write((byte)Tag.Null);
                    else if (v is string) { w.Write((byte)Tag.String); w.Write((string)v); }
                    else if (v is bool) { w.Write((byte)Tag.Bool); w.Write((bool)v); }
                    else if (v is int) { w.Write((byte)Tag.Int); w.Write((int)v); }
                    else if (v is long) { w.Write((byte)Tag.Long); w.Write((long)v); }
                    else if (v is double) { w.Write((byte)Tag.Double); w.Write((double)v); }
                    else if (v is DateTime) { w.Write((byte)Tag.DateTime); w.Write(((DateTime)v).ToBinary()); }
                    else if (v is byte[]) { var b = (byte[])v; w.Write((byte)Tag.Bytes); w.Write(b.Length); w.Write(b); }
                    else throw new ArgumentException("session item \"" + kv.Key + "\" has type " + v.GetType() +
                        ": only null, string, bool, int, long, double, DateTime and byte[] are stored");
                }
            }
            return ms.ToArray();
        }

        internal static SessionData Deserialize(byte[] bytes, out bool uninitialized)
        {
            using (var r = new BinaryReader(new MemoryStream(bytes), Encoding.UTF8))
            {
                if (bytes.Length < 3 || r.ReadByte() != (byte)'G')
                    throw new InvalidDataException("not a gardenstate session (bad magic)");
                byte ver = r.ReadByte();
                if (ver != FormatVersion)
                    throw new InvalidDataException("session format version " + ver + " is not supported (this build reads " + FormatVersion + ")");
                uninitialized = (r.ReadByte() & 1) != 0;
                var d = new SessionData(r.ReadInt32());
                int n = r.ReadInt32();
                if (n < 0) throw new InvalidDataException("negative item count");
                for (int i = 0; i < n; i++)
                {
                    string name = r.ReadString();
                    switch ((Tag)r.ReadByte())
                    {
                        case Tag.Null: d.Items[name] = null; break;
                        case Tag.String: d.Items[name] = r.ReadString(); break;
                        case Tag.Bool: d.Items[name] = r.ReadBoolean(); break;
                        case Tag.Int: d.Items[name] = r.ReadInt32(); break;
                        case Tag.Long: d.Items[name] = r.ReadInt64(); break;
                        case Tag.Double: d.Items[name] = r.ReadDouble(); break;
                        case Tag.DateTime: d.Items[name] = DateTime.FromBinary(r.ReadInt64()); break;
                        case Tag.Bytes:
                            int len = r.ReadInt32();
                            var b = r.ReadBytes(len);
                            if (b.Length != len) throw new InvalidDataException("truncated byte[] item");
                            d.Items[name] = b; break;
                        default: throw new InvalidDataException("unknown item tag");
                    }
                }
                if (r.BaseStream.Position != bytes.Length) throw new InvalidDataException("trailing bytes after the session");
                return d;
            }
        }
    }

    /// <summary>The operations of SessionStateStoreProviderBase over a gardenstate segment, as the
    /// hosts really call them (Microsoft's and Mono's SessionStateModule differ; see README.md
    /// "The provider contract"): a null, empty or over-long id is "no session" (a new visitor has
    /// none); a lock id that is not a gardenstate one (null, or the boxed Int32 0 of a read-only
    /// page) holds no lock, so releasing with it does nothing. Sessions expire sliding after their
    /// Timeout (every read pushes it out); the session lock is the segment's (lock id, lock age,
    /// takeover after ExecutionTimeout or at once from a dead owner).</summary>
    public sealed class GardenstateSessionStore : IDisposable
    {
        readonly Store store;
        readonly bool ownsStore;
        readonly string prefix;
        readonly ulong maxKey, maxValue;
        /// <summary>A lock older than this is taken over (ASP.NET: httpRuntime executionTimeout, 110 s).</summary>
        public TimeSpan ExecutionTimeout = TimeSpan.FromSeconds(110);
        /// <summary>How long GetItemExclusive waits for a held lock before answering "locked"
        /// (the host then polls again: Mono every 500 ms). Within it the holder's release wakes
        /// the request at once instead of at the host's next poll. Below the host's poll
        /// interval, so a periodic poll never overlaps a wait; Zero: never wait.</summary>
        public TimeSpan LockWait = TimeSpan.FromMilliseconds(400);

        /// <summary>Opens (or creates) the segment segmentName; keys are "applicationName/sessionId".</summary>
        public GardenstateSessionStore(string segmentName, string applicationName, StoreOptions options = null)
            : this(Store.Open(segmentName, options), applicationName, true) { }

        public GardenstateSessionStore(Store store, string applicationName, bool ownsStore = false)
        {
            if (store == null) throw new ArgumentNullException("store");
            if (applicationName == null) throw new ArgumentNullException("applicationName");
            this.store = store; this.ownsStore = ownsStore;
            prefix = applicationName + "/";
            var info = store.Info();
            maxKey = info.MaxKey; maxValue = info.MaxValue;
        }

        public Store Store { get { return store; } }
        /// <summary>The longest session id a key of this segment holds (maxKey less the prefix).</summary>
        public int MaxIdBytes { get { return (int)maxKey - Encoding.UTF8.GetByteCount(prefix); } }
        public void Dispose() { if (ownsStore) store.Dispose(); }

        /// <summary>The segment key of session id, or null if no session can have that id (null,
        /// empty, or a key longer than the segment's max key: nothing was ever stored under it).</summary>
        public byte[] KeyOf(string id)
        {
            if (string.IsNullOrEmpty(id)) return null;
            byte[] k = Encoding.UTF8.GetBytes(prefix + id);
            return (ulong)k.Length > maxKey ? null : k;
        }

        // The key of a session this call is about to store: an id no key can hold is the
        // caller's error, said so.
        byte[] WriteKey(string id)
        {
            if (id == null) throw new ArgumentNullException("id");
            byte[] k = KeyOf(id);
            if (k == null)
                throw new ArgumentException("session id \"" + id + "\" makes a key longer than the segment's max key (" +
                    maxKey + " bytes): create the segment with a larger maxKey, or use a shorter applicationName", "id");
            return k;
        }

        // The bytes of a session, refused with a clear message when they exceed the segment's max value.
        byte[] Bytes(string id, SessionData d, bool uninitialized)
        {
            byte[] v = SessionData.Serialize(d, uninitialized);
            if ((ulong)v.Length > maxValue)
                throw new ArgumentException("session \"" + id + "\" is " + v.Length + " bytes serialized, more than the segment's max value (" +
                    maxValue + " bytes): store less in the session, or create the segment with a larger maxValue; the session keeps its previous contents", "item");
            return v;
        }

        static Expiry Timeout(int minutes)
        {
            if (minutes <= 0) throw new ArgumentOutOfRangeException("timeout", "a session timeout is at least 1 minute");
            return Expiry.Sliding(TimeSpan.FromMinutes(minutes));
        }

        // A lock id this store handed out, or null (none held: null, Mono's boxed Int32 0, anything else).
        static ulong? OurLock(object lockId)
        {
            if (lockId is ulong && (ulong)lockId != 0) return (ulong)lockId;
            return null;
        }

        public SessionData CreateNewStoreData(int timeout) { return new SessionData(timeout); }

        /// <summary>Stores an empty, uninitialized session (cookieless sessions); a live one is kept.</summary>
        public void CreateUninitializedItem(string id, int timeout)
        {
            byte[] key = WriteKey(id);
            store.Add(key, Bytes(id, new SessionData(timeout), true), Timeout(timeout));
        }

        /// <summary>Read-only access: the session, or null. If it is locked: null, locked = true,
        /// with the holder's lockAge and lockId.</summary>
        public SessionData GetItem(string id, out bool locked, out TimeSpan lockAge, out object lockId, out SessionStateActions actions)
        {
            locked = false; lockAge = TimeSpan.Zero; lockId = null; actions = SessionStateActions.None;
            byte[] key = KeyOf(id);
            if (key == null) return null;
            EntryMeta meta;
            byte[] v = store.Get(key, out meta);
            if (v == null) return null;
            if (meta.LockId != 0)
            {
                locked = true; lockAge = TimeSpan.FromMilliseconds(meta.LockAgeMs); lockId = meta.LockId;
                return null;
            }
            bool uninit;
            var d = SessionData.Deserialize(v, out uninit);
            if (uninit) actions = SessionStateActions.InitializeItem;
            return d;
        }

        /// <summary>Exclusive access: takes the session lock, waiting up to LockWait for its
        /// release. Null with locked = false: no session. Null with locked = true: another request
        /// still holds it (lockAge, lockId are the holder's; ASP.NET polls again). Else the
        /// session, with lockId the id to release it.</summary>
        public SessionData GetItemExclusive(string id, out bool locked, out TimeSpan lockAge, out object lockId, out SessionStateActions actions)
        {
            locked = false; lockAge = TimeSpan.Zero; lockId = null; actions = SessionStateActions.None;
            byte[] key = KeyOf(id);
            if (key == null) return null;
            LockResult r = store.LockWait(key, ExecutionTimeout, LockWait);
            if (r == null) return null;
            if (!r.Acquired)
            {
                locked = true; lockAge = TimeSpan.FromMilliseconds(r.LockAgeMs); lockId = r.LockId;
                return null;
            }
            lockId = r.LockId;
            bool uninit;
            SessionData d;
            try { d = SessionData.Deserialize(r.Value, out uninit); }
            catch { store.Unlock(key, r.LockId); throw; }
            if (uninit) actions = SessionStateActions.InitializeItem;
            return d;
        }

        /// <summary>Writes the session and releases its lock; returns whether it was written.
        /// newItem, or no lock of ours (Mono's module stores a new session with newItem false and
        /// the null lock id of its GetItemExclusive): a new session, written only if no live session
        /// has that id (an uninitialized one is replaced when newItem). A lock taken over meanwhile,
        /// or a session that expired, makes the write a no-op (as the SQL Server provider). A null
        /// item (a request that never got its session) writes nothing and releases the lock. A
        /// session too large for the segment is refused with ArgumentException after releasing the
        /// lock, so the session keeps its previous contents and stays usable.</summary>
        public bool SetAndReleaseItemExclusive(string id, SessionData item, object lockId, bool newItem)
        {
            if (item == null)
            {
                ReleaseItemExclusive(id, lockId);
                return false;
            }
            ulong? ours = OurLock(lockId);
            byte[] key = WriteKey(id);
            byte[] v;
            try { v = Bytes(id, item, false); }
            catch
            {
                if (ours.HasValue) ReleaseItemExclusive(id, lockId);
                throw;
            }
            var exp = Timeout(item.Timeout);
            if (ours.HasValue)
            {
                try { return store.SetAndUnlock(key, ours.Value, v, exp).HasValue; }
                catch (LockMismatchException) { return false; }
            }
            if (newItem)
            {
                // Replace an uninitialized session (cookieless ids), never a live initialized one.
                EntryMeta meta;
                byte[] old = store.Get(key, out meta);
                if (old != null)
                {
                    bool uninit;
                    try { SessionData.Deserialize(old, out uninit); } catch (InvalidDataException) { uninit = false; }
                    if (!uninit || meta.LockId != 0) return false;
                    return store.CompareAndSet(key, meta.Version, v, exp).HasValue;
                }
            }
            return store.Add(key, v, exp).HasValue;
        }

        /// <summary>Releases the lock (the request ended without changes). A lock no longer ours, a
        /// lock id that is not a gardenstate one, a missing session: nothing to do.</summary>
        public void ReleaseItemExclusive(string id, object lockId)
        {
            ulong? ours = OurLock(lockId);
            byte[] key = KeyOf(id);
            if (!ours.HasValue || key == null) return;
            try { store.Unlock(key, ours.Value); }
            catch (LockMismatchException) { }
        }

        /// <summary>Session.Abandon(): removes the session unless another request holds its lock.
        /// Microsoft's module calls this with the lock still held by lockId; Mono's releases the
        /// lock first (ReleaseItemExclusive, then RemoveItem with the same id), and a read-only
        /// page has no lock at all: so the session is removed when its lock is lockId's or free.
        /// A stale lock id (the lock was taken over) removes nothing. Returns whether it was removed.</summary>
        public bool RemoveItem(string id, object lockId, SessionData item)
        {
            byte[] key = KeyOf(id);
            if (key == null) return false;
            ulong? ours = OurLock(lockId);
            // The C ABI has no delete-if-locked-by: check the lock, then delete. A lock taken in
            // between is lost with its session; see README.md.
            EntryMeta? m = store.GetMeta(key);
            if (!m.HasValue || (m.Value.LockId != 0 && m.Value.LockId != (ours ?? 0UL))) return false;
            return store.Delete(key);
        }

        /// <summary>Pushes the session's sliding deadline out (a read of its metadata does it);
        /// a missing session is left missing.</summary>
        public void ResetItemTimeout(string id)
        {
            byte[] key = KeyOf(id);
            if (key != null) store.GetMeta(key);
        }
    }
}
