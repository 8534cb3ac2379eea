// Tests of Gardenstate.Web.GardenstateSessionStateProvider, the System.Web provider, called as
// ASP.NET's SessionStateModule calls it (through the SessionStateStoreProviderBase type).
using System;
using System.Collections.Specialized;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;
using System.Web;
using System.Web.SessionState;
using Gardenstate.Web;

static class WebTests
{
    static int failed;
    static void True(bool c, string what) { if (!c) { failed++; Console.WriteLine("FAIL " + what); } }

    // The calls Mono's SessionStateModule (System.Web.SessionState_2.0) makes, in its order.
    static void MonoModuleSequences(SessionStateStoreProviderBase p, string seg)
    {
        bool locked; TimeSpan age; object lockId; SessionStateActions act;
        // A new visitor: no cookie, so a null id; then a new session stored with newItem false
        // and the null lock id GetItemExclusive gave, then ResetItemTimeout.
        True(p.GetItemExclusive(null, null, out locked, out age, out lockId, out act) == null && !locked, "null id: no item, not locked");
        True(p.GetItem(null, null, out locked, out age, out lockId, out act) == null && !locked, "null id, read-only: no item");
        True(p.GetItemExclusive(null, "", out locked, out age, out lockId, out act) == null && !locked, "empty id: no item");
        True(p.GetItemExclusive(null, new string('x', 5000), out locked, out age, out lockId, out act) == null && !locked, "over-long id: no item");
        var nd = p.CreateNewStoreData(null, 20);
        nd.Items["n"] = 1;
        p.SetAndReleaseItemExclusive(null, "m1", nd, lockId, false);
        p.ResetItemTimeout(null, "m1");
        var got = p.GetItem(null, "m1", out locked, out age, out lockId, out act);
        True(got != null && (int)got.Items["n"] == 1, "new session stored with newItem false and no lock");
        // A read-only page: GetItem, then ReleaseItemExclusive with whatever lock id it has
        // (null, or a boxed Int32 0), then ResetItemTimeout; also on a missing session.
        p.ReleaseItemExclusive(null, "m1", lockId);
        p.ReleaseItemExclusive(null, "m1", 0);
        p.ReleaseItemExclusive(null, null, 0);
        p.ResetItemTimeout(null, "no-such-session");
        p.ResetItemTimeout(null, null);
        True(p.GetItem(null, "no-such-session", out locked, out age, out lockId, out act) == null && !locked, "ResetItemTimeout creates nothing");
        // A second "new" write of a live id without its lock does not clobber it.
        var other = p.CreateNewStoreData(null, 20);
        other.Items["n"] = 99;
        p.SetAndReleaseItemExclusive(null, "m1", other, null, false);
        got = p.GetItem(null, "m1", out locked, out age, out lockId, out act);
        True(got != null && (int)got.Items["n"] == 1, "a live session is not overwritten without its lock");
        // Session.Abandon() under Mono: ReleaseItemExclusive, then RemoveItem with the same id.
        var d = p.GetItemExclusive(null, "m1", out locked, out age, out lockId, out act);
        True(d != null && !locked, "m1 locked");
        p.ReleaseItemExclusive(null, "m1", lockId);
        p.RemoveItem(null, "m1", lockId, d);
        True(p.GetItem(null, "m1", out locked, out age, out lockId, out act) == null && !locked, "abandon (release, then remove) removes it");
        // RemoveItem with a stale lock id leaves the session of the lock's new holder.
        p.CreateUninitializedItem(null, "m2", 20);
        p.CreateUninitializedItem(null, "m2", 20); // already there: kept
        object held;
        d = p.GetItemExclusive(null, "m2", out locked, out age, out held, out act);
        True(d != null && act == SessionStateActions.InitializeItem, "uninitialized item");
        p.RemoveItem(null, "m2", (ulong)12345, d);
        p.RemoveItem(null, "m2", null, d);
        True(p.GetItem(null, "m2", out locked, out age, out lockId, out act) == null && locked && lockId.Equals(held), "stale or no lock id removes nothing while locked");
        // A null item (a request that never got its session) releases the lock, writes nothing.
        p.SetAndReleaseItemExclusive(null, "m2", null, held, false);
        got = p.GetItem(null, "m2", out locked, out age, out lockId, out act);
        True(got != null && !locked && act == SessionStateActions.InitializeItem, "null item: released, still uninitialized");
        // newItem replaces an uninitialized session (cookieless ids).
        nd = p.CreateNewStoreData(null, 20);
        nd.Items["k"] = "v";
        p.SetAndReleaseItemExclusive(null, "m2", nd, null, true);
        got = p.GetItem(null, "m2", out locked, out age, out lockId, out act);
        True(got != null && act == SessionStateActions.None && (string)got.Items["k"] == "v", "newItem replaces an uninitialized session");
        // A session too large for the segment: a clear ArgumentException, the lock released,
        // the old contents kept.
        d = p.GetItemExclusive(null, "m2", out locked, out age, out held, out act);
        d.Items["big"] = new byte[70000];
        try { p.SetAndReleaseItemExclusive(null, "m2", d, held, false); True(false, "too large: refused"); }
        catch (ArgumentException e) { True(e.Message.Contains("max value"), "too large: says max value: " + e.Message); }
        got = p.GetItemExclusive(null, "m2", out locked, out age, out held, out act);
        True(got != null && !locked && !got.Items.Keys.Cast<string>().Contains("big") && (string)got.Items["k"] == "v", "too large: lock released, old contents kept");
        p.ReleaseItemExclusive(null, "m2", held);
        // Unknown attributes and bad values are named.
        foreach (var bad in new[] { new NameValueCollection { { "segmentNmae", seg } }, new NameValueCollection { { "segmentName", seg }, { "maxValue", "big" } },
                                    new NameValueCollection { { "segmentName", seg }, { "mode", "0666" } }, new NameValueCollection { { "segmentName", seg }, { "open", "attach" }, { "maxValue", "1" } } })
        {
            try { new GardenstateSessionStateProvider().Initialize("gardenstate", bad); True(false, "bad config refused: " + bad.AllKeys[0]); }
            catch (System.Configuration.Provider.ProviderException e) { True(e.Message.StartsWith("gardenstate provider: "), "bad config named: " + e.Message); }
        }
        // Create-or-attach with other capacity is refused, attach-only of a missing segment too.
        try { new GardenstateSessionStateProvider().Initialize("gardenstate", new NameValueCollection { { "segmentName", seg }, { "maxValue", "1048576" } }); True(false, "other capacity refused"); }
        catch (System.Configuration.Provider.ProviderException e) { True(e.Message.Contains(seg), "other capacity: " + e.Message); }
        try { new GardenstateSessionStateProvider().Initialize("gardenstate", new NameValueCollection { { "segmentName", seg + "-none" }, { "open", "attach" } }); True(false, "attach of a missing segment refused"); }
        catch (System.Configuration.Provider.ProviderException e) { True(e.Message.Contains("attach"), "attach of a missing segment: " + e.Message); }
        // A segment whose keys cannot hold applicationName + a session id is refused at start-up.
        try { new GardenstateSessionStateProvider().Initialize("gardenstate", new NameValueCollection { { "segmentName", seg }, { "open", "attach" }, { "applicationName", new string('a', 60) } }); True(false, "short keys refused"); }
        catch (System.Configuration.Provider.ProviderException e) { True(e.Message.Contains("maxKey"), "short keys: " + e.Message); }
        // mode="0660": a segment the creator's group may use.
        var grp = new GardenstateSessionStateProvider();
        grp.Initialize("gardenstate", new NameValueCollection { { "segmentName", seg + "-group" }, { "mode", "0660" } });
        var st = Process.Start(new ProcessStartInfo("stat", "-c %a " + System.IO.Path.Combine(Gardenstate.Store.ShmDir, seg + "-group"))
            { UseShellExecute = false, RedirectStandardOutput = true });
        string perm = st.StandardOutput.ReadToEnd().Trim(); st.WaitForExit();
        True(perm == "660", "mode=0660 creates a group segment: " + perm);
        grp.Dispose();
        Gardenstate.Store.Destroy(seg + "-group");
        var same = new GardenstateSessionStateProvider();
        same.Initialize("gardenstate", new NameValueCollection { { "segmentName", seg }, { "open", "attach" } });
        True(same.Store.Store.Info().MaxValue == 65536, "attach sees the created capacity");
        same.Dispose();
    }

    // The replicator's call (the daemon's, not the binding's), through a handle of its own.
    [DllImport("gardenstate")] static extern int gds_attach(byte[] name, out IntPtr store);
    [DllImport("gardenstate")] static extern int gds_set_write_mode(IntPtr store, uint mode);
    [DllImport("gardenstate")] static extern void gds_close(IntPtr store);

    static void SetWriteMode(string segment, uint mode)
    {
        IntPtr h;
        True(gds_attach(Encoding.UTF8.GetBytes(segment + "\0"), out h) == 0, "attach as the daemon");
        True(gds_set_write_mode(h, mode) == 0, "set write mode " + mode);
        gds_close(h);
    }

    // A standby, a fenced primary, a failover in progress: pages that read their session are
    // served without a lock; a page that writes it gets 503 with Retry-After: 1, not a 500.
    static void ReadOnlySegment(SessionStateStoreProviderBase p, string seg)
    {
        bool locked; TimeSpan age; object lockId; SessionStateActions act;
        var d = p.CreateNewStoreData(null, 20);
        d.Items["n"] = 1;
        p.SetAndReleaseItemExclusive(null, "ro1", d, null, true);
        SetWriteMode(seg, 1);
        try
        {
            var got = p.GetItemExclusive(null, "ro1", out locked, out age, out lockId, out act);
            True(got != null && !locked && lockId == null && (int)got.Items["n"] == 1, "read-only segment: the session, no lock");
            p.ResetItemTimeout(null, "ro1");
            p.ReleaseItemExclusive(null, "ro1", lockId);
            got.Items["n"] = 2;
            var ctx = new HttpContext(new HttpRequest("", "http://localhost/", ""), new HttpResponse(new StringWriter()));
            try { p.SetAndReleaseItemExclusive(ctx, "ro1", got, lockId, false); True(false, "a refused write throws"); }
            catch (HttpException e) { True(e.GetHttpCode() == 503, "a refused write is a 503, not a 500: " + e.GetHttpCode()); }
            True(ctx.Response.Headers["Retry-After"] == "1", "Retry-After: 1");
        }
        finally { SetWriteMode(seg, 0); }
        var after = p.GetItem(null, "ro1", out locked, out age, out lockId, out act);
        True(after != null && (int)after.Items["n"] == 1, "the refused write changed nothing");
    }

    static int Main()
    {
        string seg = (Environment.GetEnvironmentVariable("GDS_NET_TEST_PREFIX") ?? "nettest-" + Process.GetCurrentProcess().Id + "-") + "web";
        Gardenstate.Store.Destroy(seg);
        try
        {
            var impl = new GardenstateSessionStateProvider();
            impl.Initialize("gardenstate", new NameValueCollection { { "segmentName", seg }, { "applicationName", "/app" }, { "executionTimeoutSeconds", "1" },
                { "capacityBytes", "8388608" }, { "maxEntries", "1000" }, { "maxValue", "65536" }, { "maxKey", "128" } });
            var info = impl.Store.Store.Info();
            True(info.MaxValue == 65536 && info.MaxKey == 128 && info.MaxEntries >= 1000, "web.config capacity attributes create the segment");
            SessionStateStoreProviderBase p = impl;
            bool locked; TimeSpan age; object lockId, lockId2; SessionStateActions act;

            True(p.GetItemExclusive(null, "s1", out locked, out age, out lockId, out act) == null && !locked, "no session yet");
            p.CreateUninitializedItem(null, "s1", 20);
            var d = p.GetItemExclusive(null, "s1", out locked, out age, out lockId, out act);
            True(d != null && !locked && act == SessionStateActions.InitializeItem, "uninitialized item, locked by us");
            True(p.GetItemExclusive(null, "s1", out locked, out age, out lockId2, out act) == null && locked && lockId2.Equals(lockId), "second request sees the lock");
            True(p.GetItem(null, "s1", out locked, out age, out lockId2, out act) == null && locked, "read-only request sees the lock");
            d.Items["user"] = "ann"; d.Items["n"] = 41;
            p.SetAndReleaseItemExclusive(null, "s1", d, lockId, false);
            var r = p.GetItem(null, "s1", out locked, out age, out lockId2, out act);
            True(r != null && !locked && act == SessionStateActions.None, "read after release");
            True(r != null && (string)r.Items["user"] == "ann" && (int)r.Items["n"] == 41 && r.Timeout == 20, "items and timeout round-trip");
            var nd = p.CreateNewStoreData(null, 5);
            nd.Items["x"] = "new";
            p.SetAndReleaseItemExclusive(null, "s2", nd, null, true);
            p.GetItemExclusive(null, "s2", out locked, out age, out lockId, out act);
            // executionTimeoutSeconds=1: a lock older than that is taken over.
            Thread.Sleep(1300);
            var t = p.GetItemExclusive(null, "s2", out locked, out age, out lockId2, out act);
            True(t != null && !locked && !lockId2.Equals(lockId), "takeover after executionTimeout");
            p.ReleaseItemExclusive(null, "s2", lockId); // stale: ignored
            True(p.GetItem(null, "s2", out locked, out age, out lockId, out act) == null && locked, "stale release left the new lock");
            p.ReleaseItemExclusive(null, "s2", lockId2);
            True(p.GetItem(null, "s2", out locked, out age, out lockId, out act) != null && !locked, "released");
            p.ResetItemTimeout(null, "s2");
            p.GetItemExclusive(null, "s2", out locked, out age, out lockId, out act);
            p.RemoveItem(null, "s2", lockId, null);
            True(p.GetItem(null, "s2", out locked, out age, out lockId, out act) == null && !locked, "removed");
            True(!p.SetItemExpireCallback(null), "no expire callbacks");
            ReadOnlySegment(p, seg);
            MonoModuleSequences(p, seg);
            True(impl.Store.Store.Check().Ok, "segment check");
            p.Dispose();
        }
        catch (Exception e) { failed++; Console.WriteLine("FAIL " + e); }
        finally { Gardenstate.Store.Destroy(seg); }
        Console.WriteLine(failed == 0 ? "ok   System.Web provider (SessionStateStoreProviderBase)" : failed + " web checks failed");
        return failed == 0 ? 0 : 1;
    }
}
