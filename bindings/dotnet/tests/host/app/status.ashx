<%@ WebHandler Language="C#" Class="Status" %>
// No session state: what the segment holds for the visitor's session cookie (exists, lock,
// TTL left), and the segment's capacity, read through a handle of its own. ?expire=1 makes the
// session expire now (the engine's expiry, instead of waiting Session.Timeout minutes).
using System;
using System.Text;
using System.Web;
using System.Web.Configuration;

public class Status : IHttpHandler
{
    static Gardenstate.Store store;
    static string prefix;
    static readonly object gate = new object();

    static Gardenstate.Store Store()
    {
        lock (gate)
        {
            if (store == null)
            {
                var section = (System.Web.Configuration.SessionStateSection)WebConfigurationManager.GetSection("system.web/sessionState");
                var p = section.Providers[section.CustomProvider].Parameters;
                prefix = p["applicationName"] + "/";
                store = Gardenstate.Store.Attach(p["segmentName"]);
            }
            return store;
        }
    }

    public bool IsReusable { get { return true; } }

    public void ProcessRequest(HttpContext context)
    {
        var s = Store();
        var sb = new StringBuilder("page=status pid=" + System.Diagnostics.Process.GetCurrentProcess().Id);
        var info = s.Info();
        sb.Append(" maxValue=" + info.MaxValue + " maxKey=" + info.MaxKey + " heap=" + info.HeapBytes);
        HttpCookie c = context.Request.Cookies["gds_session"]; // web.config's cookieName
        if (c != null)
        {
            byte[] key = Encoding.UTF8.GetBytes(prefix + c.Value);
            if (context.Request.QueryString["expire"] == "1")
                s.Touch(key, Gardenstate.Expiry.After(TimeSpan.FromMilliseconds(1)));
            Gardenstate.EntryMeta? m = s.GetMeta(key);
            sb.Append(" id=" + c.Value + " exists=" + (m.HasValue ? 1 : 0));
            if (m.HasValue) sb.Append(" lock=" + m.Value.LockId + " ttl=" + m.Value.TtlLeftMs);
        }
        context.Response.ContentType = "text/plain";
        context.Response.Write(sb.Append("\n").ToString());
    }
}
