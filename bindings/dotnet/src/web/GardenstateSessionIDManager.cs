// The session ids and cookie of the shared session format (bindings/SESSION-FORMAT.md) for
// ASP.NET under Mono: <sessionState sessionIDManagerType="Gardenstate.Web.GardenstateSessionIDManager,
// Gardenstate.Web" cookieName="gds_session" ...>.
//
// Written against ISessionIDManager rather than derived from SessionIDManager: Mono's
// SessionIDManager.GetSessionID throws HttpException ("Invalid session ID", HTTP 500) for a
// cookie its Validate refuses, and sets the cookie's Path to the application's path; here a
// malformed id is no id (the module makes a new one: never adopted), and the cookie is Path=/
// and HttpOnly (Secure over HTTPS), so every runtime of the site sends and replaces one cookie.
// Cookies only: cookieless="true" is refused at start-up.
using System;
using System.Configuration.Provider;
using System.Web;
using System.Web.Configuration;
using System.Web.SessionState;
using GS = Gardenstate;

namespace Gardenstate.Web
{
    public sealed class GardenstateSessionIDManager : ISessionIDManager
    {
        string cookieName = "ASP.NET_SessionId";

        public void Initialize()
        {
            var config = WebConfigurationManager.GetSection("system.web/sessionState") as SessionStateSection;
            if (config == null) return;
            if (config.Cookieless != HttpCookieMode.UseCookies)
                throw new ProviderException("GardenstateSessionIDManager: cookieless=\"" + config.Cookieless +
                    "\": the session format keeps the id in a cookie; use cookieless=\"UseCookies\"");
            cookieName = config.CookieName;
        }

        public bool InitializeRequest(HttpContext context, bool suppressAutoDetectRedirect, out bool supportSessionIDReissue)
        {
            supportSessionIDReissue = false;
            return false; // never redirects
        }

        public string CreateSessionID(HttpContext context) { return GS.SessionIds.New(); }

        /// <summary>The request's session id, or null (no cookie, or an id outside the format:
        /// the module then makes a new one).</summary>
        public string GetSessionID(HttpContext context)
        {
            HttpCookie cookie = context.Request.Cookies[cookieName];
            return cookie != null && GS.SessionIds.IsValid(cookie.Value) ? cookie.Value : null;
        }

        public void SaveSessionID(HttpContext context, string id, out bool redirected, out bool cookieAdded)
        {
            if (!GS.SessionIds.IsValid(id))
                throw new HttpException("GardenstateSessionIDManager: \"" + id + "\" is not a session id of the format");
            var cookie = new HttpCookie(cookieName, id) { Path = "/", HttpOnly = true, Secure = context.Request.IsSecureConnection };
            context.Response.AppendCookie(cookie);
            redirected = false;
            cookieAdded = true;
        }

        public void RemoveSessionID(HttpContext context) { context.Response.Cookies.Remove(cookieName); }

        public bool Validate(string id) { return GS.SessionIds.IsValid(id); }
    }
}
