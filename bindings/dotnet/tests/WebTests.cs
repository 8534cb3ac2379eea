// Tests of Gardenstate.Web.GardenstateSessionStateProvider, the System.Web provider, called as
// ASP.NET's SessionStateModule calls it (through the SessionStateStoreProviderBase type).
using System;
using System.Collections.Specialized;
using System.Diagnostics;
using System.Threading;
using System.Web.SessionState;
using Gardenstate.Web;

static class WebTests
{
    static int failed;
    static void True(bool c, string what) { if (!c) { failed++; Console.WriteLine("FAIL " + what); } }

    static int Main()
    {
        string seg = (Environment.GetEnvironmentVariable("GDS_NET_TEST_PREFIX") ?? "nettest-" + Process.GetCurrentProcess().Id + "-") + "web";
        Gardenstate.Store.Destroy(seg);
        try
        {
            var impl = new GardenstateSessionStateProvider();
            impl.Initialize("gardenstate", new NameValueCollection { { "segmentName", seg }, { "applicationName", "/app" }, { "executionTimeoutSeconds", "1" } });
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
            True(impl.Store.Store.Check().Ok, "segment check");
            p.Dispose();
        }
        catch (Exception e) { failed++; Console.WriteLine("FAIL " + e); }
        finally { Gardenstate.Store.Destroy(seg); }
        Console.WriteLine(failed == 0 ? "ok   System.Web provider (SessionStateStoreProviderBase)" : failed + " web checks failed");
        return failed == 0 ? 0 : 1;
    }
}
