// The drop-in ASP.NET provider: a real System.Web.SessionState.SessionStateStoreProviderBase
// (Gardenstate.Web.dll, references System.Web) forwarding to GardenstateSessionStore.
//
// web.config:
//   <sessionState mode="Custom" customProvider="gardenstate">
//     <providers>
//       <add name="gardenstate" type="Gardenstate.Web.GardenstateSessionStateProvider, Gardenstate.Web"
//            segmentName="myapp-sessions" applicationName="/myapp" executionTimeoutSeconds="110" />
//     </providers>
//   </sessionState>
using System;
using System.Collections.Specialized;
using System.Web;
using System.Web.SessionState;
using GS = Gardenstate;
using AspActions = System.Web.SessionState.SessionStateActions;

namespace Gardenstate.Web
{
    public sealed class GardenstateSessionStateProvider : SessionStateStoreProviderBase
    {
        GS.GardenstateSessionStore inner;

        /// <summary>Config keys: segmentName (default "gardenstate-sessions"), applicationName
        /// (default the application's virtual path), executionTimeoutSeconds (default 110).</summary>
        public override void Initialize(string name, NameValueCollection config)
        {
            if (config == null) config = new NameValueCollection();
            base.Initialize(string.IsNullOrEmpty(name) ? "gardenstate" : name, config);
            string segment = config["segmentName"] ?? "gardenstate-sessions";
            string app = config["applicationName"] ?? System.Web.Hosting.HostingEnvironment.ApplicationVirtualPath ?? "/";
            inner = new GS.GardenstateSessionStore(segment, app);
            string t = config["executionTimeoutSeconds"];
            if (t != null) inner.ExecutionTimeout = TimeSpan.FromSeconds(int.Parse(t));
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
            inner.CreateUninitializedItem(id, timeout);
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
            var d = inner.GetItemExclusive(id, out locked, out lockAge, out lockId, out a);
            actions = (AspActions)(int)a;
            return ToAspNet(context, d);
        }

        public override void SetAndReleaseItemExclusive(HttpContext context, string id, SessionStateStoreData item, object lockId, bool newItem)
        {
            inner.SetAndReleaseItemExclusive(id, FromAspNet(item), lockId, newItem);
        }

        public override void ReleaseItemExclusive(HttpContext context, string id, object lockId)
        {
            inner.ReleaseItemExclusive(id, lockId);
        }

        public override void RemoveItem(HttpContext context, string id, object lockId, SessionStateStoreData item)
        {
            inner.RemoveItem(id, lockId, null);
        }

        public override void ResetItemTimeout(HttpContext context, string id)
        {
            inner.ResetItemTimeout(id);
        }

        static SessionStateStoreData ToAspNet(HttpContext context, GS.SessionData d)
        {
            if (d == null) return null;
            var items = new SessionStateItemCollection();
            foreach (var kv in d.Items) items[kv.Key] = kv.Value;
            items.Dirty = false;
            return new SessionStateStoreData(items, Statics(context), d.Timeout);
        }

        static GS.SessionData FromAspNet(SessionStateStoreData item)
        {
            if (item == null) throw new ArgumentNullException("item");
            var d = new GS.SessionData(item.Timeout);
            var items = item.Items;
            if (items != null)
                foreach (string k in items.Keys) d.Items[k] = items[k];
            return d;
        }
    }
}
