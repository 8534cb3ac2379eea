// The .NET binding's tests: a console program with its own assertions (no test framework).
//   mono GardenstateTests.exe              run everything (workers are this exe again)
//   mono GardenstateTests.exe worker ...   one multi-process worker (spawned by the tests)
// Needs libgardenstate.so on the loader path and GARDENSTATE_CLI (the gardenstate command).
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Text;
using System.Threading;
using Gardenstate;

// The tests' clock hook of libgardenstate (exported, not in the header): moves the calling
// thread's engine clock forward, so a TTL passes without a sleep.
static class Clock
{
    [System.Runtime.InteropServices.DllImport("gardenstate")]
    static extern void gds__advance_clock_for_tests(ulong ms);
    public static void Advance(ulong ms) { gds__advance_clock_for_tests(ms); }
}

static class T
{
    public static int Passed, Failed;
    public static string Current = "";
    public static void True(bool c, string what)
    {
        if (!c) throw new Exception("assertion failed: " + what);
    }
    public static void Eq<X>(X want, X got, string what)
    {
        if (!EqualityComparer<X>.Default.Equals(want, got))
            throw new Exception(string.Format("{0}: want {1}, got {2}", what, want, got));
    }
    public static void Bytes(byte[] want, byte[] got, string what)
    {
        if (want == null || got == null) { True(want == got, what + ": null mismatch"); return; }
        Eq(want.Length, got.Length, what + " length");
        for (int i = 0; i < want.Length; i++)
            if (want[i] != got[i]) throw new Exception(string.Format("{0}: byte {1} differs", what, i));
    }
    public static E Throws<E>(Action a, string what) where E : Exception
    {
        try { a(); }
        catch (E e) { return e; }
        catch (Exception e) { throw new Exception(what + ": want " + typeof(E).Name + ", got " + e.GetType().Name + ": " + e.Message); }
        throw new Exception(what + ": want " + typeof(E).Name + ", nothing thrown");
    }
    public static void Run(string name, Action a)
    {
        Current = name;
        var sw = Stopwatch.StartNew();
        try { a(); Passed++; Console.WriteLine("ok   {0} ({1} ms)", name, sw.ElapsedMilliseconds); }
        catch (Exception e) { Failed++; Console.WriteLine("FAIL {0}: {1}", name, e); }
    }
    public static void WaitUntil(Func<bool> c, int seconds, string what)
    {
        var sw = Stopwatch.StartNew();
        while (!c())
        {
            if (sw.Elapsed.TotalSeconds > seconds) throw new Exception("timed out after " + seconds + " s waiting for " + what);
            Thread.Sleep(20);
        }
    }
}

static class Program
{
    // Segment names of this run; test.sh sets the prefix so it can remove them even if the
    // run is killed (the finally below destroys them otherwise).
    static readonly string Prefix = Environment.GetEnvironmentVariable("GDS_NET_TEST_PREFIX") ?? "nettest-" + Process.GetCurrentProcess().Id + "-";
    static readonly List<string> segments = new List<string>();
    static string Seg(string tag) { var n = Prefix + tag; segments.Add(n); Store.Destroy(n); return n; }
    static byte[] B(string s) { return Encoding.UTF8.GetBytes(s); }
    static byte[] Pattern(int n, int seed)
    {
        var b = new byte[n];
        for (int i = 0; i < n; i++) b[i] = (byte)(i * 31 + seed * 7 + (i >> 8));
        return b;
    }

    static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "worker") return Worker.HammerMain(args);
        if (args.Length > 0 && args[0] == "session-worker") return Worker.SessionMain(args);
        try
        {
            T.Run("abi and version", AbiAndVersion);
            T.Run("segment lifecycle and errors", Lifecycle);
            T.Run("get/set 0 B, 1 B, 64 KiB, buffer growth", Values);
            T.Run("add, compare-and-set, delete, touch, meta", Conditional);
            T.Run("bad input changes nothing", BadInput);
            T.Run("ttl expiry (after, sliding)", Ttl);
            T.Run("lock protocol", Locks);
            T.Run("stats, info, sweep, check", Maintenance);
            T.Run("replication state: role, epoch, change counter", Replication);
            T.Run("session data serialisation", Serialisation);
            T.Run("session store provider", Provider);
            T.Run("session ids of bindings/SESSION-FORMAT.md", Ids);
            T.Run("interop with the gardenstate CLI", Interop);
            T.Run("multi-process hammer with kill -9", MultiProcess);
            T.Run("multi-process session locks", MultiProcessSessions);
        }
        finally
        {
            foreach (var s in segments) { try { Store.Destroy(s); } catch (Exception e) { Console.WriteLine("destroy " + s + ": " + e.Message); } }
        }
        Console.WriteLine("{0} passed, {1} failed", T.Passed, T.Failed);
        return T.Failed == 0 ? 0 : 1;
    }

    static void AbiAndVersion()
    {
        Store.EnsureLibrary();
        T.True(Store.LibraryVersion.Split('.').Length == 3, "version is MAJOR.MINOR.PATCH: " + Store.LibraryVersion);
        T.True(Directory.Exists(Store.ShmDir), "shm dir exists: " + Store.ShmDir);
    }

    static void Lifecycle()
    {
        string n = Seg("life");
        T.Throws<ArgumentException>(() => Store.Create("bad/name"), "bad name");
        T.Throws<ArgumentNullException>(() => Store.Open(null), "null name");
        var e = T.Throws<SegmentException>(() => Store.Attach(n), "attach missing");
        T.Eq(Status.NoSegment, e.Status, "attach missing code");
        T.True(e.Message.Length > 20, "message from gds_last_error_message: " + e.Message);
        var bad = T.Throws<GardenstateException>(() => Store.Create(n, new StoreOptions { MaxClients = 1u << 20 }), "bad options");
        T.Eq(Status.InvalidOptions, bad.Status, "bad options code");
        T.True(!File.Exists(Path.Combine(Store.ShmDir, n)), "refused create left no segment");
        using (var s = Store.Create(n, new StoreOptions { CapacityBytes = 4 << 20, MaxEntries = 1024 }))
        {
            T.Eq(n, s.Name, "name");
            var ex = T.Throws<SegmentException>(() => Store.Create(n), "create existing");
            T.Eq(Status.SegmentExists, ex.Status, "create existing code");
            s.Set(B("k"), B("v"));
            using (var a = Store.Attach(n)) T.Bytes(B("v"), a.Get(B("k")), "attach sees the value");
            using (var o = Store.Open(n, new StoreOptions { CapacityBytes = 4 << 20, MaxEntries = 1024 })) T.Bytes(B("v"), o.Get(B("k")), "open sees the value");
            var inc = T.Throws<SegmentException>(() => Store.Open(n, new StoreOptions { MaxEntries = 4096 }), "open other options");
            T.Eq(Status.Incompatible, inc.Status, "incompatible");
            T.True(inc.Message.Contains("max_entries=1024") && inc.Message.Contains("max_entries=4096 was given")
                && inc.Message.Contains("without giving max_entries") && !inc.Message.Contains("destroy it"), "both values and a safe fix: " + inc.Message);
            using (var o = Store.Open(n)) T.Eq(1024UL, o.Info().MaxEntries, "open with no options attaches whatever the shape");
            s.Dispose();
            T.True(s.IsClosed, "closed");
            T.Throws<ObjectDisposedException>(() => s.Get(B("k")), "use after dispose");
        }
        T.True(Store.Destroy(n), "destroy existing");
        T.True(!Store.Destroy(n), "destroy missing is false");
    }

    static void Values()
    {
        using (var s = Store.Create(Seg("values")))
        {
            foreach (int n in new[] { 0, 1, 65536, 5000, 1 })
            {
                var v = Pattern(n, n);
                ulong ver = s.Set(B("v"), v);
                EntryMeta m;
                T.Bytes(v, s.Get(B("v"), out m), n + " B via Get");
                T.Eq(ver, m.Version, "version");
                T.Eq((ulong)n, m.ValueLength, "value_len");
                byte[] buf = new byte[1];
                int len;
                T.True(s.TryGet(B("v"), ref buf, out len, out m), "TryGet found");
                T.Eq(n, len, "TryGet length");
                T.True(buf.Length >= n, "buffer grew");
                var got = new byte[len]; Array.Copy(buf, got, len);
                T.Bytes(v, got, n + " B via TryGet");
            }
            T.True(s.Get(B("absent")) == null, "absent is null");
            byte[] b2 = new byte[4]; int l2; EntryMeta m2;
            T.True(!s.TryGet(B("absent"), ref b2, out l2, out m2), "TryGet absent");
            var bin = new byte[256]; for (int i = 0; i < 256; i++) bin[i] = (byte)i;
            s.Set(bin, bin);
            T.Bytes(bin, s.Get(bin), "binary key and value");
        }
    }

    static void Conditional()
    {
        using (var s = Store.Create(Seg("cond")))
        {
            ulong? v1 = s.Add(B("a"), B("1"));
            T.True(v1.HasValue, "add new");
            T.True(!s.Add(B("a"), B("2")).HasValue, "add existing is null");
            T.Bytes(B("1"), s.Get(B("a")), "add kept the first");
            T.True(!s.CompareAndSet(B("a"), v1.Value + 12345, B("x")).HasValue, "cas wrong version");
            T.Bytes(B("1"), s.Get(B("a")), "cas loser changed nothing");
            ulong? v2 = s.CompareAndSet(B("a"), v1.Value, B("2"));
            T.True(v2.HasValue && v2.Value != v1.Value, "cas right version");
            T.Bytes(B("2"), s.Get(B("a")), "cas wrote");
            T.True(!s.CompareAndSet(B("nope"), 1, B("x")).HasValue, "cas absent");
            T.Eq(v2.Value, s.GetMeta(B("a")).Value.Version, "meta version");
            T.True(s.GetMeta(B("a")).Value.TtlLeftMs == null, "never expires");
            T.True(s.Touch(B("a"), Expiry.After(TimeSpan.FromHours(1))), "touch");
            ulong? ttl = s.GetMeta(B("a")).Value.TtlLeftMs;
            T.True(ttl.HasValue && ttl.Value > 0 && ttl.Value <= 3600000, "touched ttl " + ttl);
            T.True(!s.Touch(B("nope"), Expiry.After(TimeSpan.FromHours(1))), "touch absent");
            T.True(s.GetMeta(B("nope")) == null, "meta absent");
            T.True(s.Delete(B("a")), "delete");
            T.True(!s.Delete(B("a")), "delete again");
            T.True(s.Get(B("a")) == null, "deleted");
        }
    }

    static void BadInput()
    {
        using (var s = Store.Create(Seg("bad"), new StoreOptions { MaxValue = 1024, MaxKey = 16 }))
        {
            s.Set(B("k"), B("keep"));
            T.Throws<ArgumentNullException>(() => s.Set(null, B("x")), "null key");
            T.Throws<ArgumentNullException>(() => s.Set(B("k"), null), "null value");
            T.Throws<ArgumentException>(() => s.Set(new byte[0], B("x")), "empty key");
            T.Throws<ArgumentException>(() => s.Set(B("k"), new byte[1025]), "value over max_value");
            T.Throws<ArgumentException>(() => s.Set(new byte[17], B("x")), "key over max_key");
            T.Throws<ArgumentException>(() => s.CompareAndSet(B("k"), 1, new byte[2000]), "cas too large");
            T.Throws<ArgumentOutOfRangeException>(() => s.Set(B("k"), B("x"), Expiry.After(TimeSpan.Zero)), "zero ttl");
            T.Throws<ArgumentNullException>(() => s.Get(null), "get null");
            T.Throws<ArgumentNullException>(() => s.Lock(null, TimeSpan.FromSeconds(1)), "lock null");
            T.Bytes(B("keep"), s.Get(B("k")), "nothing changed");
            s.Set(B("k"), new byte[1024]);
            T.Eq(1024, s.Get(B("k")).Length, "exactly max_value is accepted");
        }
    }

    static void Ttl()
    {
        using (var s = Store.Create(Seg("ttl")))
        {
            s.Set(B("short"), B("x"), Expiry.After(TimeSpan.FromMilliseconds(100)));
            s.Set(B("long"), B("y"), Expiry.After(TimeSpan.FromHours(1)));
            s.Set(B("slide"), B("z"), Expiry.Sliding(TimeSpan.FromMinutes(20)));
            T.WaitUntil(() => s.Get(B("short")) == null, 30, "the 100 ms entry to expire");
            T.True(s.GetMeta(B("short")) == null, "expired meta is absent");
            T.Bytes(B("y"), s.Get(B("long")), "1 h entry lives");
            var m = s.GetMeta(B("slide")).Value;
            T.True(m.TtlLeftMs.HasValue && m.TtlLeftMs.Value <= 20 * 60000, "sliding ttl " + m.TtlLeftMs);
            // A sliding entry lives past its TTL while it is read. The clock is advanced, not
            // slept: no stall of the machine between two reads can let the window run out.
            s.Set(B("s2"), B("w"), Expiry.Sliding(TimeSpan.FromSeconds(3)));
            for (int i = 1; i <= 6; i++) { Clock.Advance(750); T.Bytes(B("w"), s.Get(B("s2")), "sliding kept alive by reads at " + (750 * i) + " ms"); }
            // Any read (Get, GetMeta) would extend it again: leave it unread for more than its TTL.
            Clock.Advance(3001);
            T.True(s.Get(B("s2")) == null, "the sliding entry expired once unread for longer than its TTL");
        }
    }

    static void Locks()
    {
        using (var s = Store.Create(Seg("locks")))
        {
            byte[] k = B("sess");
            T.True(s.Lock(k, TimeSpan.FromSeconds(60)) == null, "lock absent is null");
            s.Set(k, B("v0"));
            var l1 = s.Lock(k, TimeSpan.FromMinutes(10));
            T.True(l1.Acquired && l1.LockId != 0 && !l1.TookOver, "first lock acquired");
            T.Bytes(B("v0"), l1.Value, "lock reads the value");
            var l2 = s.Lock(k, TimeSpan.FromMinutes(10));
            T.True(!l2.Acquired, "second exclusive get is refused");
            T.Eq(l1.LockId, l2.LockId, "holder id reported");
            Thread.Sleep(300);
            var l3 = s.Lock(k, TimeSpan.FromMinutes(10));
            T.True(!l3.Acquired && l3.LockAgeMs >= 300 && l3.LockAgeMs >= l2.LockAgeMs, "lock age grows: " + l2.LockAgeMs + " -> " + l3.LockAgeMs);
            EntryMeta gm;
            T.Bytes(B("v0"), s.Get(k, out gm), "plain get does not wait");
            T.Eq(l1.LockId, gm.LockId, "get shows the lock");
            // Takeover: a lock older than takeoverAfter goes to the caller.
            var l4 = s.Lock(k, TimeSpan.FromMilliseconds(100));
            T.True(l4.Acquired && l4.TookOver && l4.LockId != l1.LockId, "takeover after timeout");
            T.Eq(Status.LockMismatch, T.Throws<LockMismatchException>(() => s.Unlock(k, l1.LockId), "old holder unlock").Status, "code");
            T.Throws<LockMismatchException>(() => s.SetAndUnlock(k, l1.LockId, B("lost")), "old holder write loses");
            T.Bytes(B("v0"), s.Get(k), "lost write changed nothing");
            T.True(s.SetAndUnlock(k, l4.LockId, B("v1"), Expiry.Sliding(TimeSpan.FromMinutes(20))).HasValue, "set and unlock");
            T.Eq(0UL, s.GetMeta(k).Value.LockId, "unlocked");
            T.Bytes(B("v1"), s.Get(k), "written");
            var l5 = s.Lock(k, TimeSpan.FromMinutes(10));
            T.True(l5.Acquired, "lock again after release");
            T.True(s.Unlock(k, l5.LockId), "unlock");
            T.Throws<LockMismatchException>(() => s.Unlock(k, l5.LockId), "unlock an unlocked entry");
            T.True(s.Lock(k, TimeSpan.FromMinutes(10)).Acquired, "released lock can be taken");
            s.Set(k, B("v2"));
            T.Eq(0UL, s.GetMeta(k).Value.LockId, "set drops the lock");
            var l6 = s.Lock(k, TimeSpan.FromMinutes(10));
            s.Delete(k);
            T.True(!s.Unlock(k, l6.LockId), "unlock of a deleted entry is false");
            T.True(!s.SetAndUnlock(k, l6.LockId, B("x")).HasValue, "set-and-unlock of a deleted entry is null");
            // LockWait: a wait that runs out names the holder; one in another thread is handed
            // the lock by the holder's unlock (patience 10 min: only the release ends it).
            s.Set(k, B("v3"));
            var l7 = s.Lock(k, TimeSpan.FromMinutes(10));
            var w1 = s.LockWait(k, TimeSpan.FromMinutes(10), TimeSpan.FromMilliseconds(5));
            T.True(!w1.Acquired && w1.LockId == l7.LockId, "a wait that runs out reports the holder");
            LockResult w2 = null;
            var waiter = new Thread(() => { w2 = s.LockWait(k, TimeSpan.FromMinutes(10), TimeSpan.FromMinutes(10)); });
            waiter.Start();
            T.True(s.Unlock(k, l7.LockId), "the holder unlocks");
            T.True(waiter.Join(TimeSpan.FromMinutes(2)), "the waiter returned after the release");
            T.True(w2.Acquired && !w2.TookOver && w2.LockId != l7.LockId, "the waiter was handed the lock");
            T.True(s.Unlock(k, w2.LockId), "the waiter unlocks");
            T.Throws<ArgumentOutOfRangeException>(() => s.LockWait(k, TimeSpan.Zero, TimeSpan.FromMilliseconds(-1)), "negative timeout");
        }
    }

    // The replicator's call (the daemon's, not the binding's), through a handle of its own.
    [System.Runtime.InteropServices.DllImport("gardenstate")] static extern int gds_attach(byte[] name, out IntPtr store);
    [System.Runtime.InteropServices.DllImport("gardenstate")] static extern int gds_set_write_mode(IntPtr store, uint mode);
    [System.Runtime.InteropServices.DllImport("gardenstate")] static extern void gds_close(IntPtr store);

    public static void SetWriteMode(string segment, uint mode)
    {
        IntPtr h;
        T.Eq(0, gds_attach(Encoding.UTF8.GetBytes(segment + "\0"), out h), "attach as the daemon");
        T.Eq(0, gds_set_write_mode(h, mode), "set write mode " + mode);
        gds_close(h);
    }

    static void Replication()
    {
        string n = Seg("repl");
        using (var s = Store.Create(n, new StoreOptions { CapacityBytes = 4 << 20, MaxEntries = 1024 }))
        {
            var first = s.GetReplicationState();
            T.True(first.Role == ReplicationRole.Primary && first.Writable && first.Epoch == 0, "a new segment is a primary");
            ulong seen = first.Changes;
            var steps = new[] { Tuple.Create(1u, ReplicationRole.Standby), Tuple.Create(2u, ReplicationRole.Fenced),
                Tuple.Create(0u, ReplicationRole.Primary) };
            foreach (var step in steps)
            {
                SetWriteMode(n, step.Item1);
                var now = s.GetReplicationState();
                T.Eq(step.Item2, now.Role, "role after write mode " + step.Item1);
                T.True(now.Changes > seen, "the change counter moved");
                T.True(now.Writable == (step.Item2 == ReplicationRole.Primary), "writable");
                if (!now.Writable) T.Throws<ReadOnlyException>(() => s.Set(B("k"), B("v")), "writes refused");
                seen = now.Changes;
            }
            SetWriteMode(n, 0);
            T.Eq(seen, s.GetReplicationState().Changes, "the same mode again is no change");
        }
    }

    static void Maintenance()
    {
        using (var s = Store.Create(Seg("maint"), new StoreOptions { MaxEntries = 2000, MaxClients = 64 }))
        {
            var i = s.Info();
            T.True(i.MaxEntries == 2000 && i.MaxClients == 64 && i.HeapBytes >= 64 << 20 && i.PageSize > 0 && i.MaxValue == 1 << 20 && i.MaxKey == 256, "info");
            for (int n = 0; n < 100; n++) s.Set(B("k" + n), Pattern(n * 10, n));
            s.Get(B("k1")); s.Get(B("missing")); s.Delete(B("k2"));
            s.Lock(B("k3"), TimeSpan.FromSeconds(60));
            var st = s.Stats();
            T.Eq(99UL, st.LiveEntries, "live entries");
            T.True(st.Sets >= 100 && st.Hits >= 1 && st.Misses >= 1 && st.Deletes >= 1 && st.Locks >= 1 && st.Clients == 0, "counters");
            var sw = s.Sweep(100000);
            T.True(sw.Examined > 0 || !sw.Ran, "sweep");
            var c = s.Check();
            T.True(c.Ok && c.Problems == null, "check clean: " + c.Problems);
            T.Eq(99UL, c.Entries, "check entries");
            // Fill up: a full heap is a StoreFullException, the store stays usable.
            var big = new byte[200000];
            T.Throws<StoreFullException>(() => { for (int n = 0; n < 1000; n++) s.Set(B("big" + n), big); }, "heap fills");
            T.Bytes(Pattern(50, 5), s.Get(B("k5")), "still readable when full");
        }
    }

    static void Serialisation()
    {
        var d = new SessionData(20);
        d["s"] = "héllo"; d["e"] = ""; d["b"] = true; d["i"] = -7; d["l"] = long.MaxValue; d["d"] = 2.5;
        d["t"] = new DateTime(2026, 11, 24, 19, 0, 0, DateTimeKind.Utc); d["n"] = null; d["bytes"] = Pattern(300, 1);
        bool un;
        var bytes = GardenstateSessionStoreTestAccess.Serialize(d, true);
        var r = GardenstateSessionStoreTestAccess.Deserialize(bytes, out un);
        T.True(un, "uninitialized flag");
        T.Eq(20, r.Timeout, "timeout");
        T.Eq(d.Items.Count, r.Items.Count, "count");
        foreach (var kv in d.Items)
        {
            if (kv.Value is byte[]) T.Bytes((byte[])kv.Value, (byte[])r[kv.Key], kv.Key);
            else T.Eq(kv.Value, r[kv.Key], kv.Key);
        }
        T.Throws<ArgumentException>(() => { var x = new SessionData(1); x["o"] = new object(); GardenstateSessionStoreTestAccess.Serialize(x, false); }, "unsupported type");
        var wrongVersion = (byte[])bytes.Clone(); wrongVersion[1] = 99;
        T.Throws<InvalidDataException>(() => GardenstateSessionStoreTestAccess.Deserialize(wrongVersion, out un), "unknown version");
        T.Throws<InvalidDataException>(() => GardenstateSessionStoreTestAccess.Deserialize(new byte[] { 1, 2, 3, 4 }, out un), "bad magic");
        var truncated = new byte[bytes.Length - 3]; Array.Copy(bytes, truncated, truncated.Length);
        T.Throws<Exception>(() => GardenstateSessionStoreTestAccess.Deserialize(truncated, out un), "truncated");
    }

    static void Provider()
    {
        string n = Seg("provider");
        using (var p = new GardenstateSessionStore(n, "app1"))
        using (var other = new GardenstateSessionStore(p.Store, "app2"))
        {
            bool locked; TimeSpan age; object lockId; SessionStateActions act;
            T.True(p.GetItemExclusive("s1", out locked, out age, out lockId, out act) == null && !locked, "no session");
            p.CreateUninitializedItem("s1", 20);
            var d = p.GetItemExclusive("s1", out locked, out age, out lockId, out act);
            T.True(d != null && !locked && lockId is ulong, "exclusive get of a new session");
            T.Eq(SessionStateActions.InitializeItem, act, "uninitialized item");
            T.Eq(20, d.Timeout, "timeout");
            // A second request: exclusive and read-only access both see the lock.
            object lockId2;
            T.True(p.GetItemExclusive("s1", out locked, out age, out lockId2, out act) == null && locked, "second exclusive get is locked");
            T.Eq(lockId, lockId2, "holder's id");
            T.True(p.GetItem("s1", out locked, out age, out lockId2, out act) == null && locked, "read-only get is locked");
            T.True(other.GetItem("s1", out locked, out age, out lockId2, out act) == null && !locked, "another application does not see it");
            d["user"] = "ann"; d["count"] = 1;
            T.True(p.SetAndReleaseItemExclusive("s1", d, lockId, false), "set and release");
            var r = p.GetItem("s1", out locked, out age, out lockId2, out act);
            T.True(r != null && !locked, "read after release");
            T.Eq(SessionStateActions.None, act, "initialized now");
            T.Eq("ann", (string)r["user"], "item");
            T.Eq(1, (int)r["count"], "item");
            // Release without changes, then abandon.
            var d2 = p.GetItemExclusive("s1", out locked, out age, out lockId, out act);
            p.ReleaseItemExclusive("s1", lockId);
            T.True(p.GetItem("s1", out locked, out age, out lockId2, out act) != null && !locked, "released");
            // A stale lock id: another request holds the lock now.
            object holder;
            p.GetItemExclusive("s1", out locked, out age, out holder, out act);
            T.True(!p.RemoveItem("s1", lockId, d2), "remove with a stale lock id does nothing");
            p.ReleaseItemExclusive("s1", holder);
            p.GetItemExclusive("s1", out locked, out age, out lockId, out act);
            p.ResetItemTimeout("s1");
            T.True(p.RemoveItem("s1", lockId, d2), "remove with the lock");
            T.True(p.GetItem("s1", out locked, out age, out lockId2, out act) == null && !locked, "removed");
            // Takeover after ExecutionTimeout: the old holder's write is dropped.
            var nd = p.CreateNewStoreData(5); nd["x"] = "new";
            p.SetAndReleaseItemExclusive("s2", nd, null, true);
            p.GetItemExclusive("s2", out locked, out age, out lockId, out act);
            p.ExecutionTimeout = TimeSpan.FromMilliseconds(50);
            Thread.Sleep(200);
            object lockId3;
            var d3 = p.GetItemExclusive("s2", out locked, out age, out lockId3, out act);
            T.True(d3 != null && !locked && !lockId3.Equals(lockId), "taken over");
            d3["x"] = "old holder";
            T.True(!p.SetAndReleaseItemExclusive("s2", d3, lockId, false), "stale holder's write is dropped");
            d3["x"] = "new holder";
            T.True(p.SetAndReleaseItemExclusive("s2", d3, lockId3, false), "new holder writes");
            T.Eq("new holder", (string)p.GetItem("s2", out locked, out age, out lockId2, out act)["x"], "value");
            // The host's "no session yet" and "no lock held": answered, not thrown.
            T.True(p.GetItem(null, out locked, out age, out lockId2, out act) == null && !locked, "null id: no session");
            p.ReleaseItemExclusive("s2", "not a lock id");
            T.True(p.GetItem("s2", out locked, out age, out lockId2, out act) != null && !locked, "a foreign lock id releases nothing");
            T.Throws<ArgumentNullException>(() => p.SetAndReleaseItemExclusive(null, nd, null, true), "storing under a null id");
            var ttl = p.Store.GetMeta(B("app1/s2")).Value.TtlLeftMs;
            T.True(ttl.HasValue && ttl.Value <= 5 * 60000, "session ttl is its Timeout, sliding: " + ttl);
        }
    }

    static string Cli { get { return Environment.GetEnvironmentVariable("GARDENSTATE_CLI") ?? "gardenstate"; } }

    static byte[] RunCli(string args, out int exit)
    {
        var psi = new ProcessStartInfo(Cli, args) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        using (var p = Process.Start(psi))
        {
            var ms = new MemoryStream();
            var errTask = p.StandardError.ReadToEndAsync();
            p.StandardOutput.BaseStream.CopyTo(ms);
            p.WaitForExit();
            exit = p.ExitCode;
            if (exit != 0 && exit != 1) Console.WriteLine("  cli " + args + ": exit " + exit + ": " + errTask.Result);
            return ms.ToArray();
        }
    }

    static void Ids()
    {
        var seen = new HashSet<string>();
        for (int i = 0; i < 1000; i++)
        {
            string id = SessionIds.New();
            T.True(System.Text.RegularExpressions.Regex.IsMatch(id, "^[A-Za-z0-9_-]{43}$"), "new id " + id);
            T.True(seen.Add(id), "ids differ");
        }
        foreach (var ok in new[] { new string('a', 16), new string('Z', 128), "0123456789abcdefABCDEF-_",
                                   "85A779F31811B4FC584E4357" /* Mono's own */ })
            T.True(SessionIds.IsValid(ok), "accepted: " + ok);
        foreach (var bad in new[] { null, "", new string('a', 15), new string('a', 129), "bad,id-0123456789",
                                    "with space 0123456789", "slash/0123456789abc", "plus+0123456789abc" })
            T.True(!SessionIds.IsValid(bad), "refused: " + (bad ?? "null"));
    }

    static void Interop()
    {
        string n = Seg("interop");
        int exit;
        using (var s = Store.Create(n))
        {
            var v = new byte[70000]; for (int i = 0; i < v.Length; i++) v[i] = (byte)(i * 13 + 1);
            s.Set(B("from-dotnet"), v);
            s.Set(B("empty"), new byte[0]);
            T.Bytes(v, RunCli("get " + n + " from-dotnet --raw", out exit), "CLI reads the C# value");
            string made = Seg("cli-made");
            RunCli("create " + made + " --max-entries 3000 --max-value 8192 --evict", out exit);
            T.Eq(0, exit, "gardenstate create");
            using (var o = Store.Open(made)) T.True(o.Info().MaxEntries == 3000 && o.Info().MaxValue == 8192, "Open with no options attaches to the CLI's segment");
            var off = T.Throws<SegmentException>(() => Store.Open(made, new StoreOptions { Flags = StoreOptions.EvictGiven }), "evict given false");
            T.True(off.Status == Status.Incompatible && off.Message.Contains("evict=true, but evict=false was given"), "evict: " + off.Message);
            T.Eq(0, exit, "cli get exit");
            T.Eq(0, RunCli("get " + n + " empty --raw", out exit).Length, "CLI reads an empty value");
            RunCli("get " + n + " nope --raw", out exit);
            T.Eq(1, exit, "cli get of an absent key exits 1");
            string f = Path.GetTempFileName();
            try
            {
                var w = Pattern(3000, 9);
                File.WriteAllBytes(f, w);
                RunCli("set " + n + " from-cli --file " + f, out exit);
                T.Eq(0, exit, "cli set exit");
                T.Bytes(w, s.Get(B("from-cli")), "C# reads the CLI's value");
                RunCli("set " + n + " from-cli-ttl short --ttl 1h", out exit);
                var m = s.GetMeta(B("from-cli-ttl")).Value;
                T.True(m.TtlLeftMs.HasValue && m.TtlLeftMs.Value <= 3600000, "CLI ttl seen: " + m.TtlLeftMs);
                RunCli("del " + n + " from-dotnet", out exit);
                T.Eq(0, exit, "cli del");
                T.True(s.Get(B("from-dotnet")) == null, "C# sees the CLI's delete");
            }
            finally { File.Delete(f); }
        }
    }

    public const int Keys = 24;

    static Process Spawn(string args)
    {
        string exe = typeof(Program).Assembly.Location;
        string mono = Environment.GetEnvironmentVariable("MONO") ?? "mono";
        var psi = new ProcessStartInfo(mono, "--debug \"" + exe + "\" " + args) { UseShellExecute = false, RedirectStandardOutput = true };
        return Process.Start(psi);
    }

    static void MultiProcess()
    {
        string n = Seg("multi");
        using (var s = Store.Create(n, new StoreOptions { MaxEntries = 4096 }))
        {
            const int workers = 4, ops = 6000;
            var procs = new List<Process>();
            var outputs = new List<string>();
            // The victim loops until killed; it says "ready" once it has written.
            var victim = Spawn("worker " + n + " 99 0");
            string first = victim.StandardOutput.ReadLine();
            T.Eq("ready", first, "victim started");
            for (int w = 0; w < workers; w++) procs.Add(Spawn("worker " + n + " " + w + " " + ops));
            Thread.Sleep(300);
            victim.Kill(); // SIGKILL on Linux: mid-operation, holding whatever it held
            victim.WaitForExit();
            T.True(victim.ExitCode != 0, "victim was killed (exit " + victim.ExitCode + ")");
            foreach (var p in procs)
            {
                string o = p.StandardOutput.ReadToEnd();
                p.WaitForExit();
                outputs.Add(o.Trim());
                T.Eq(0, p.ExitCode, "worker exit: " + o);
            }
            long reads = 0;
            foreach (var o in outputs)
            {
                // "done reads=N wrong=0"
                T.True(o.EndsWith("wrong=0"), "zero wrong reads: " + o);
                foreach (var part in o.Split(' ')) if (part.StartsWith("reads=")) reads += long.Parse(part.Substring(6));
            }
            T.True(reads > 0, "reads happened");
            // The victim may have died holding the sweeper lease: sweep until a sweep runs.
            T.WaitUntil(() => s.Sweep(1 << 20).Ran, 120, "a sweep to run after the kill");
            var c = s.Check();
            T.True(c.Ok, "check after kill -9: " + c.Problems);
            T.Eq(0UL, c.DeadClients, "dead clients reclaimed");
            for (int k = 0; k < Keys; k++)
            {
                var v = s.Get(B("hk" + k));
                if (v != null) T.True(Worker.Verify(v), "final value of hk" + k + " verifies");
            }
            Console.WriteLine("  {0} workers x {1} ops, {2} verified reads, victim killed", workers, ops, reads);
        }
    }

    static void MultiProcessSessions()
    {
        string n = Seg("sessions");
        const int workers = 3, increments = 150;
        using (var p = new GardenstateSessionStore(n, "app"))
        {
            var d = p.CreateNewStoreData(20); d["count"] = 0;
            p.SetAndReleaseItemExclusive("shared", d, null, true);
            var procs = new List<Process>();
            for (int w = 0; w < workers; w++) procs.Add(Spawn("session-worker " + n + " " + increments));
            foreach (var pr in procs)
            {
                string o = pr.StandardOutput.ReadToEnd();
                pr.WaitForExit();
                T.Eq(0, pr.ExitCode, "session worker: " + o);
            }
            bool locked; TimeSpan age; object id; SessionStateActions act;
            var r = p.GetItem("shared", out locked, out age, out id, out act);
            T.True(!locked, "unlocked at the end");
            T.Eq(workers * increments, (int)r["count"], "every locked increment survived (no lost update)");
            T.True(p.Store.Check().Ok, "check");
        }
    }
}

static class GardenstateSessionStoreTestAccess
{
    // SessionData's format is internal; the test reaches it through reflection.
    static readonly System.Reflection.MethodInfo ser = typeof(SessionData).GetMethod("Serialize", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static);
    static readonly System.Reflection.MethodInfo de = typeof(SessionData).GetMethod("Deserialize", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static);
    public static byte[] Serialize(SessionData d, bool un)
    {
        try { return (byte[])ser.Invoke(null, new object[] { d, un }); }
        catch (System.Reflection.TargetInvocationException e) { throw e.InnerException; }
    }
    public static SessionData Deserialize(byte[] b, out bool un)
    {
        var a = new object[] { b, false };
        try { var r = (SessionData)de.Invoke(null, a); un = (bool)a[1]; return r; }
        catch (System.Reflection.TargetInvocationException e) { throw e.InnerException; }
    }
}

static class Worker
{
    static readonly int[] Sizes = { 0, 1, 100, 1000, 2900, 65536 };

    // A self-verifying value: [int32 worker][int32 seq][int32 n][n payload bytes][uint32 sum].
    static byte[] Make(int w, int seq, Random rnd)
    {
        // A few payload sizes only: a heap page (2 MiB) belongs to one size class for good,
        // so a spread of sizes would need more pages than the default 64 MiB has.
        int n = Sizes[rnd.Next(Sizes.Length)];
        var v = new byte[12 + n + 4];
        BitConverter.GetBytes(w).CopyTo(v, 0); BitConverter.GetBytes(seq).CopyTo(v, 4); BitConverter.GetBytes(n).CopyTo(v, 8);
        for (int i = 0; i < n; i++) v[12 + i] = (byte)(w * 41 + seq * 7 + i);
        BitConverter.GetBytes(Sum(v, 12 + n)).CopyTo(v, 12 + n);
        return v;
    }
    static uint Sum(byte[] v, int len) { uint h = 2166136261; for (int i = 0; i < len; i++) h = (h ^ v[i]) * 16777619; return h; }
    public static bool Verify(byte[] v)
    {
        if (v.Length < 16) return false;
        int w = BitConverter.ToInt32(v, 0), seq = BitConverter.ToInt32(v, 4), n = BitConverter.ToInt32(v, 8);
        if (n < 0 || v.Length != 12 + n + 4) return false;
        for (int i = 0; i < n; i++) if (v[12 + i] != (byte)(w * 41 + seq * 7 + i)) return false;
        return BitConverter.ToUInt32(v, 12 + n) == Sum(v, 12 + n);
    }

    public static int HammerMain(string[] a)
    {
        string name = a[1]; int w = int.Parse(a[2]); int ops = int.Parse(a[3]);
        var rnd = new Random(w * 7919 + 1);
        long reads = 0, wrong = 0;
        using (var s = Store.Attach(name))
        {
            byte[] buf = new byte[64];
            for (int i = 0; ops == 0 || i < ops; i++)
            {
                byte[] key = Encoding.ASCII.GetBytes("hk" + rnd.Next(Program.Keys));
                int op = rnd.Next(10);
                if (op < 5)
                {
                    int len; EntryMeta m;
                    if (s.TryGet(key, ref buf, out len, out m))
                    {
                        var v = new byte[len]; Array.Copy(buf, v, len);
                        reads++;
                        if (!Verify(v)) { wrong++; Console.Error.WriteLine("wrong read of " + Encoding.ASCII.GetString(key)); }
                    }
                }
                else if (op < 8) s.Set(key, Make(w, i, rnd), Expiry.Sliding(TimeSpan.FromMinutes(5)));
                else if (op < 9) s.Delete(key);
                else
                {
                    var l = s.Lock(key, TimeSpan.FromSeconds(2));
                    if (l != null && l.Acquired)
                    {
                        reads++;
                        if (!Verify(l.Value)) wrong++;
                        try { s.SetAndUnlock(key, l.LockId, Make(w, i, rnd)); } catch (LockMismatchException) { }
                    }
                }
                if (ops == 0 && i == 200) Console.WriteLine("ready");
            }
        }
        Console.WriteLine("done reads={0} wrong={1}", reads, wrong);
        return 0;
    }

    // Increments a counter in a shared session under the provider's exclusive lock.
    public static int SessionMain(string[] a)
    {
        string name = a[1]; int n = int.Parse(a[2]);
        using (var p = new GardenstateSessionStore(Store.Attach(name), "app", true))
        {
            for (int i = 0; i < n; i++)
            {
                for (;;)
                {
                    bool locked; TimeSpan age; object id; SessionStateActions act;
                    var d = p.GetItemExclusive("shared", out locked, out age, out id, out act);
                    if (d == null)
                    {
                        if (!locked) { Console.WriteLine("session vanished"); return 2; }
                        Thread.Sleep(1); // ASP.NET polls a locked session
                        continue;
                    }
                    d["count"] = (int)d["count"] + 1;
                    if (!p.SetAndReleaseItemExclusive("shared", d, id, false)) { Console.WriteLine("lock lost"); return 3; }
                    break;
                }
            }
        }
        Console.WriteLine("done");
        return 0;
    }
}
