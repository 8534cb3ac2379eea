// The drop-in ASP.NET provider: a real System.Web.SessionState.SessionStateStoreProviderBase
// (Gardenstate.Web.dll, references System.Web) forwarding to GardenstateSessionStore.
//
// web.config (every attribute but type is optional; README.md lists them with their defaults):
//   <sessionState mode="Custom" customProvider="gardenstate" timeout="20">
//     <providers>
//       <add name="gardenstate" type="Gardenstate.Web.GardenstateSessionStateProvider, Gardenstate.Web"
//            segmentName="myapp-sessions" applicationName="/myapp" open="createOrAttach"
//            capacityBytes="268435456" maxEntries="100000" maxKey="256" maxValue="1048576"
//            maxClients="512" feedLength="65536" mode="0660" evict="false" executionTimeoutSeconds="110" />
//     </providers>
//   </sessionState>
using System;
using System.Collections.Specialized;
using System.Configuration.Provider;
using System.Globalization;
using System.Web;
using System.Web.Configuration;
using System.Web.SessionState;
using GS = Gardenstate;
using AspActions = System.Web.SessionState.SessionStateActions;

namespace Gardenstate.Web
{
    public sealed class GardenstateSessionStateProvider : SessionStateStoreProviderBase
    {
        GS.GardenstateSessionStore inner;

        static readonly string[] knownKeys = {
            "segmentName", "applicationName", "open", "capacityBytes", "maxEntries", "maxKey", "maxValue",
            "maxClients", "feedLength", "mode", "evict", "executionTimeoutSeconds", "lockWaitMilliseconds", "description",
        };

        /// <summary>Reads the provider's web.config attributes (README.md, "web.config"), then opens
        /// the segment: open="createOrAttach" (default) is the engine's open, race-free however many
        /// workers start at once (exactly one creates it, with the capacity attributes; the others
        /// attach, checking only the attributes given: one that differs from the segment's is
        /// refused with both values); open="attach" only
        /// attaches to a segment an operator created (gardenstate create). mode="0660" creates a
        /// segment the creator's group may use and attaches to one of another user of this
        /// group. An unknown attribute or a bad value is a ProviderException naming it.</summary>
        public override void Initialize(string name, NameValueCollection config)
        {
            if (config == null) config = new NameValueCollection();
            foreach (string k in config.AllKeys)
                if (Array.IndexOf(knownKeys, k) < 0)
                    throw new ProviderException("gardenstate provider: unknown attribute \"" + k + "\" (known: " +
                        string.Join(", ", knownKeys) + ")");
            base.Initialize(string.IsNullOrEmpty(name) ? "gardenstate" : name, config);
            string segment = config["segmentName"] ?? "gardenstate-sessions";
            string app = config["applicationName"] ?? System.Web.Hosting.HostingEnvironment.ApplicationVirtualPath ?? "/";
            var o = new GS.StoreOptions
            {
                CapacityBytes = Number(config, "capacityBytes", ulong.MaxValue),
                MaxEntries = Number(config, "maxEntries", ulong.MaxValue),
                MaxValue = Number(config, "maxValue", ulong.MaxValue),
                FeedLength = Number(config, "feedLength", ulong.MaxValue),
                MaxKey = (uint)Number(config, "maxKey", uint.MaxValue),
                MaxClients = (uint)Number(config, "maxClients", uint.MaxValue),
                Mode = Mode(config["mode"]),
                // GDS_OPTION_EVICT, and GDS_OPTION_EVICT_GIVEN when evict is set at all: only
                // attributes given are checked against an existing segment.
                Flags = (Flag(config, "evict") ? GS.StoreOptions.Evict : 0u) | (config["evict"] != null ? GS.StoreOptions.EvictGiven : 0u),
            };
            string open = config["open"] ?? "createOrAttach";
            GS.Store store;
            try
            {
                if (open == "createOrAttach") store = GS.Store.Open(segment, o);
                else if (open == "attach")
                {
                    foreach (string k in new[] { "capacityBytes", "maxEntries", "maxKey", "maxValue", "maxClients", "feedLength", "evict" })
                        if (config[k] != null)
                            throw new ProviderException("gardenstate provider: " + k + " sizes a segment when it is created: it is not used with open=\"attach\"");
                    store = GS.Store.Attach(segment, o.Mode == 0x1B0);
                }
                else throw new ProviderException("gardenstate provider: open=\"" + open + "\": use createOrAttach or attach");
            }
            catch (GS.GardenstateException e)
            {
                throw new ProviderException("gardenstate provider: cannot " + (open == "attach" ? "attach to" : "open or create") +
                    " segment \"" + segment + "\": " + e.Message, e);
            }
            inner = new GS.GardenstateSessionStore(store, app, true);
            // SessionIDManager's ids are at most 80 characters: each must fit in a key.
            if (inner.MaxIdBytes < SessionIDManager.SessionIDMaxLength)
            {
                inner.Dispose();
                throw new ProviderException("gardenstate provider: segment \"" + segment + "\" keys hold " + inner.MaxIdBytes +
                    " bytes after applicationName \"" + app + "/\", fewer than a session id's " + SessionIDManager.SessionIDMaxLength +
                    ": create the segment with a larger maxKey, or use a shorter applicationName");
            }
            ulong t = Number(config, "executionTimeoutSeconds", int.MaxValue);
            inner.ExecutionTimeout = t != 0 ? TimeSpan.FromSeconds(t) : HostExecutionTimeout();
            if (config["lockWaitMilliseconds"] != null)
                inner.LockWait = TimeSpan.FromMilliseconds(Number(config, "lockWaitMilliseconds", 60000));
        }

        // httpRuntime executionTimeout: what the host's module waits before it gives up on a lock.
        static TimeSpan HostExecutionTimeout()
        {
            var rt = WebConfigurationManager.GetSection("system.web/httpRuntime") as HttpRuntimeSection;
            return rt != null && rt.ExecutionTimeout > TimeSpan.Zero ? rt.ExecutionTimeout : TimeSpan.FromSeconds(110);
        }

        // A non-negative integer attribute (0 or absent: the default).
        static ulong Number(NameValueCollection config, string key, ulong max)
        {
            string s = config[key];
            if (s == null) return 0;
            ulong n;
            if (!ulong.TryParse(s.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out n) || n > max)
                throw new ProviderException("gardenstate provider: " + key + "=\"" + s + "\" is not an integer from 0 to " + max);
            return n;
        }

        static bool Flag(NameValueCollection config, string key)
        {
            string s = config[key];
            if (s == null || s == "false") return false;
            if (s == "true") return true;
            throw new ProviderException("gardenstate provider: " + key + "=\"" + s + "\": use true or false");
        }

        // mode: "0600" (default: this user only) or "0660" (also the segment file's group).
        static uint Mode(string s)
        {
            if (s == null || s == "0600") return 0;
            if (s == "0660") return 0x1B0; // octal 0660
            throw new ProviderException("gardenstate provider: mode=\"" + s + "\": use 0600 or 0660");
        }

        /// <summary>The store underneath (for monitoring: Stats, Check).</summary>
        public GS.GardenstateSessionStore Store { get { return inner; } }

        public override void Dispose() { if (inner != null) inner.Dispose(); }
        public override bool SetItemExpireCallback(SessionStateItemExpireCallback expireCallback) { return false; }
        public override void InitializeRequest(HttpContext context) { }
        public override void EndRequest(HttpContext context) { }

        public override SessionStateStoreData CreateNewStoreData(HttpContext context, int timeout)
        {
            return new SessionStateStoreData(new SessionStateItemCollection(), Statics(context), timeout);
        }

        static HttpStaticObjectsCollection Statics(HttpContext context)
        {
            return context == null ? new HttpStaticObjectsCollection() : SessionStateUtility.GetSessionStaticObjects(context);
        }

        public override void CreateUninitializedItem(HttpContext context, string id, int timeout)
        {
            Write(context, () => inner.CreateUninitializedItem(id, timeout));
        }

        // A write the segment refuses (a standby, a fenced primary, a failover in progress): HTTP 503
        // with Retry-After: 1 instead of the host's 500, since writes usually come back within a
        // second and a load balancer or client should retry (README.md, "Failover").
        static void Write(HttpContext context, Action write)
        {
            try { write(); }
            catch (GS.ReadOnlyException e)
            {
                if (context != null) context.Response.AppendHeader("Retry-After", "1");
                throw new HttpException(503, "gardenstate provider: the session segment takes no writes now (a standby, " +
                    "a fenced primary, or a failover in progress): retry in a second", e);
            }
        }

        public override SessionStateStoreData GetItem(HttpContext context, string id, out bool locked, out TimeSpan lockAge,
            out object lockId, out AspActions actions)
        {
            GS.SessionStateActions a;
            var d = inner.GetItem(id, out locked, out lockAge, out lockId, out a);
            actions = (AspActions)(int)a;
            return ToAspNet(context, d);
        }

        public override SessionStateStoreData GetItemExclusive(HttpContext context, string id, out bool locked, out TimeSpan lockAge,
            out object lockId, out AspActions actions)
        {
            GS.SessionStateActions a;
            GS.SessionData d;
            try { d = inner.GetItemExclusive(id, out locked, out lockAge, out lockId, out a); }
            catch (GS.ReadOnlyException)
            {
                // No lock on a segment that takes no writes: the session as it is, without a lock;
                // a page that changes it gets 503 when it is written (SetAndReleaseItemExclusive).
                d = inner.GetItem(id, out locked, out lockAge, out lockId, out a);
            }
            actions = (AspActions)(int)a;
            return ToAspNet(context, d);
        }

        public override void SetAndReleaseItemExclusive(HttpContext context, string id, SessionStateStoreData item, object lockId, bool newItem)
        {
            var d = FromAspNet(item);
            // Mono's module hands over the SessionStateStoreData of the request's start: a
            // Session.Timeout the page set is only on the session still in the context.
            HttpSessionState live = context != null ? context.Session : null;
            if (d != null && live != null && live.SessionID == id && live.Timeout > 0) d.Timeout = live.Timeout;
            Write(context, () => inner.SetAndReleaseItemExclusive(id, d, lockId, newItem));
        }

        public override void ReleaseItemExclusive(HttpContext context, string id, object lockId)
        {
            Write(context, () => inner.ReleaseItemExclusive(id, lockId));
        }

        public override void RemoveItem(HttpContext context, string id, object lockId, SessionStateStoreData item)
        {
            Write(context, () => inner.RemoveItem(id, lockId, null));
        }

        public override void ResetItemTimeout(HttpContext context, string id)
        {
            // Every request of a session calls this, read-only pages too: on a segment that takes
            // no writes the deadline stays (as reads there do not extend it), and the page is served.
            try { inner.ResetItemTimeout(id); }
            catch (GS.ReadOnlyException) { }
        }

        static SessionStateStoreData ToAspNet(HttpContext context, GS.SessionData d)
        {
            if (d == null) return null;
            var items = new SessionStateItemCollection();
            foreach (var kv in d.Items) items[kv.Key] = kv.Value;
            items.Dirty = false;
            return new SessionStateStoreData(items, Statics(context), d.Timeout);
        }

        // A null item (a request that never got its session) stays null: nothing to write.
        static GS.SessionData FromAspNet(SessionStateStoreData item)
        {
            if (item == null) return null;
            var d = new GS.SessionData(item.Timeout);
            var items = item.Items;
            if (items != null)
                foreach (string k in items.Keys) d.Items[k] = items[k];
            return d;
        }
    }
}
