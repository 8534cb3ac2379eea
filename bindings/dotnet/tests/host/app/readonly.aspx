<%@ Page Language="C#" EnableSessionState="ReadOnly" %>
<%-- Reads Session["n"] without the session lock. --%>
<script runat="server">
protected void Page_Load(object sender, EventArgs e)
{
    object o = Session["n"];
    Response.ContentType = "text/plain";
    Response.Write("page=readonly pid=" + System.Diagnostics.Process.GetCurrentProcess().Id + " id=" + Session.SessionID +
        " new=" + Session.IsNewSession + " n=" + (o == null ? "none" : o.ToString()) + "\n");
}
</script>
