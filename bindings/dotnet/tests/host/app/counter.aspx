<%@ Page Language="C#" EnableSessionState="True" %>
<%-- Increments Session["n"]. ?work=MS holds the session MS milliseconds; ?big=N also stores an
     N-character string; ?timeout=M sets Session.Timeout; ?abandon=1
     calls Session.Abandon(). Prints who answered and when. --%>
<script runat="server">
static long Now() { return (DateTime.UtcNow.Ticks - 621355968000000000L) / 10000; }
protected void Page_Load(object sender, EventArgs e)
{
    long enter = Now();
    int work;
    if (int.TryParse(Request.QueryString["work"], out work) && work > 0) System.Threading.Thread.Sleep(work);
    object o = Session["n"];
    int n = o == null ? 1 : (int)o + 1;
    Session["n"] = n;
    string big = Request.QueryString["big"];
    if (big != null) Session["big"] = new string('x', int.Parse(big));
    if (Request.QueryString["abandon"] == "1") Session.Abandon();
    int timeout;
    if (int.TryParse(Request.QueryString["timeout"], out timeout)) Session.Timeout = timeout;
    Response.ContentType = "text/plain";
    Response.Write("page=counter pid=" + System.Diagnostics.Process.GetCurrentProcess().Id + " id=" + Session.SessionID +
        " new=" + Session.IsNewSession + " n=" + n + " enter=" + enter + " leave=" + Now() + "\n");
}
</script>
