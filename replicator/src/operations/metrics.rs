//! A Prometheus endpoint for a daemon: `GET /metrics` answers the replication status and the
//! segment's counters in the text exposition format, version 0.0.4.
//!
//! A minimal HTTP/1.1 server on std alone, since it answers one request: each connection
//! gets a thread (at most [`MAX_CONNECTIONS`] at once, `operations::admission`) that reads
//! the request head (at most [`MAX_REQUEST`] bytes, within [`REQUEST_TIMEOUT`] in all),
//! answers, and closes (`Connection: close`). A client that trickles or sends nothing holds
//! one thread for at most [`REQUEST_TIMEOUT`], and only until a newcomer needs its place:
//! with [`MAX_CONNECTIONS`] admitted, a new connection evicts the one that has waited
//! longest for its request head, so idle sockets (a slowloris) cannot keep a scrape out.
//! When every admitted connection is being answered, a newcomer gets 503 without being
//! read. A malformed request line gets 400, an oversized head 431, another path 404,
//! another method than GET 405.
//!
//! Health checks for a load balancer, on the same server: `GET /health/primary` answers 200
//! only while the segment takes writes (writable, and its write lease not lapsed: what
//! `stats` shows as `writable`), 503 otherwise; `GET /health/standby` answers 200 while the
//! daemon is a standby connected to its primary and at most [`CONVERGED_ENTRIES`] changes
//! behind the primary's feed head as last heard (its heartbeat), 503 otherwise. The body says
//! why in one line. The segment is attached when first needed (a standby creates it when it
//! first connects).
//!
//! Every sample carries the label `segment`; names start with `gardenstate_`; counters end in
//! `_total`; each family has `# HELP` and `# TYPE` lines. A value that is not known (the lag
//! before the first acknowledgement) is left out rather than reported as 0.

use crate::commands::attach::attach;
use crate::commands::render::{
    LEASE_LAPSED, effective_mode_name, lease_lapsed, takes_writes, write_mode_name,
};
use crate::operations::admission::{Admission, Ticket};
use crate::operations::status::{Status, StatusReport, unix_ms_now};
use gardenstate::{Store, WriteMode};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections served at once; more are refused with 503.
pub const MAX_CONNECTIONS: usize = 16;
/// The longest request head read (request line and headers).
pub const MAX_REQUEST: usize = 8 << 10;
/// The whole request must arrive within this time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Sending the answer must not take longer than this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// A standby at most this many changes behind the primary's feed head (as last heard) is
/// converged for `/health/standby`.
pub const CONVERGED_ENTRIES: u64 = 1_000;
/// Roles exposed by `gardenstate_replication_role` (1 for the current one, 0 for the others).
const ROLES: [&str; 5] = ["primary", "standby", "witness", "fenced", "demoted"];

/// Binds `addr` (e.g. `127.0.0.1:9480`, or port 0 for any) and serves `/metrics` from a
/// thread of its own, for as long as the process lives. Returns the address bound. `store`,
/// when given, adds the segment's own counters (`Store::stats`, a read of the index: about
/// 2 ms per million entries per scrape).
pub fn serve(addr: &str, status: Arc<Status>, store: Option<Arc<Store>>) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("metrics: cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| format!("metrics: {e}"))?;
    let segment = Arc::new(Segment { name: status.segment().to_string(), store: Mutex::new(store) });
    let admission = Admission::new(MAX_CONNECTIONS, MAX_CONNECTIONS);
    std::thread::Builder::new()
        .name("gs-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let conn = match conn {
                    Ok(c) => c,
                    Err(_) => {
                        // Out of file descriptors, or an aborted connection: do not spin.
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                let Some(ticket) = admission.admit(&conn) else {
                    refuse_busy(conn);
                    continue;
                };
                let (status, segment) = (status.clone(), segment.clone());
                let spawned = std::thread::Builder::new().name("gs-metrics-conn".into()).spawn(move || {
                    handle(conn, &ticket, &status, &segment);
                });
                if spawned.is_err() {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        })
        .map_err(|e| format!("metrics: cannot start the server thread: {e}"))?;
    Ok(local)
}

/// The daemon's segment, attached when first found.
struct Segment {
    name: String,
    store: Mutex<Option<Arc<Store>>>,
}

impl Segment {
    fn store(&self) -> Option<Arc<Store>> {
        let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if s.is_none() {
            *s = attach(&self.name).ok().map(Arc::new);
        }
        s.clone()
    }
}

/// `/health/primary`: 200 while the segment takes writes.
fn health_primary(store: Option<&Store>) -> Vec<u8> {
    match store {
        Some(s) if takes_writes(s) => response(200, "OK", "text/plain", b"primary: takes writes\n", &[]),
        Some(s) => {
            let mode = effective_mode_name(s.write_mode(), lease_lapsed(s));
            unavailable(&format!("not taking writes: the segment is {mode}\n"))
        }
        None => unavailable("no segment\n"),
    }
}

/// `/health/standby`: 200 while a standby is connected and converged.
fn health_standby(r: &StatusReport) -> Vec<u8> {
    if r.role != "standby" {
        return unavailable(&format!(
            "not a standby: {}\n",
            if r.role.is_empty() { "starting" } else { &r.role }
        ));
    }
    if !r.connected {
        return unavailable("standby, not connected to its primary\n");
    }
    match r.lag_entries {
        Some(lag) if lag <= CONVERGED_ENTRIES => {
            response(200, "OK", "text/plain", format!("standby: converged, {lag} behind\n").as_bytes(), &[])
        }
        Some(lag) => {
            unavailable(&format!("standby, {lag} changes behind (converged: at most {CONVERGED_ENTRIES})\n"))
        }
        None => unavailable("standby, not caught up yet\n"),
    }
}

fn unavailable(why: &str) -> Vec<u8> {
    response(503, "Service Unavailable", "text/plain", why.as_bytes(), &[])
}

/// Answers 503 without reading or waiting: the accepting thread must not block. (A client
/// that had already sent its request may see a reset instead of the 503: refused either way.)
fn refuse_busy(conn: TcpStream) {
    let _ = conn.set_nonblocking(true);
    let _ = (&conn).write_all(&response(503, "Service Unavailable", "text/plain", b"busy\n", &[]));
}

fn response(code: u16, reason: &str, content_type: &str, body: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// How a request head ended up.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// The request line (without its line end).
    Line(String),
    TooLarge,
    /// Closed, timed out, or failed before a whole head arrived: nothing to answer.
    Gone,
}

/// Reads up to the blank line that ends the request head.
fn read_head(conn: &mut TcpStream) -> Head {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
            return Head::Gone;
        }
        let n = match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return Head::Gone,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .or_else(|| buf.windows(2).position(|w| w == b"\n\n"));
        if let Some(end) = end {
            if end > MAX_REQUEST {
                return Head::TooLarge;
            }
            let line = buf[..end].split(|&b| b == b'\n').next().unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            return Head::Line(String::from_utf8_lossy(line).into_owned());
        }
        if buf.len() > MAX_REQUEST {
            return Head::TooLarge;
        }
    }
}

/// What a request line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request<'a> {
    Get(&'a str),
    OtherMethod,
    Malformed,
}

fn parse_request_line(line: &str) -> Request<'_> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Malformed;
    };
    let token = !method.is_empty() && method.bytes().all(|b| b.is_ascii_alphabetic());
    if !token || !target.starts_with('/') || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Request::Malformed;
    }
    if method != "GET" {
        return Request::OtherMethod;
    }
    Request::Get(target.split_once('?').map_or(target, |(path, _)| path))
}

fn handle(mut conn: TcpStream, ticket: &Ticket, status: &Status, segment: &Segment) {
    let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
    let head = read_head(&mut conn);
    ticket.proven();
    let answer = match head {
        Head::Gone => return,
        Head::TooLarge => {
            response(431, "Request Header Fields Too Large", "text/plain", b"request too large\n", &[])
        }
        Head::Line(line) => match parse_request_line(&line) {
            Request::Malformed => response(400, "Bad Request", "text/plain", b"bad request\n", &[]),
            Request::OtherMethod => {
                response(405, "Method Not Allowed", "text/plain", b"only GET\n", &[("Allow", "GET")])
            }
            Request::Get("/metrics") => {
                let store = segment.store();
                response(
                    200,
                    "OK",
                    CONTENT_TYPE,
                    render(&status.snapshot(), store.as_deref()).as_bytes(),
                    &[],
                )
            }
            Request::Get("/health/primary") => health_primary(segment.store().as_deref()),
            Request::Get("/health/standby") => health_standby(&status.snapshot()),
            Request::Get(_) => response(
                404,
                "Not Found",
                "text/plain",
                b"not found: try /metrics, /health/primary or /health/standby\n",
                &[],
            ),
        },
    };
    let _ = conn.write_all(&answer);
    let _ = conn.flush();
    linger_close(conn);
}

/// Closes after the answer without losing it: closing a socket with unread input (the rest
/// of an oversized or refused request) resets the connection, and a reset can discard the
/// answer before the client reads it. So: end our side, then drain the client's for a
/// moment (at most 64 KiB, 1 s) until it closes too.
fn linger_close(mut conn: TcpStream) {
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < 64 << 10 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match conn.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// A label value with `\`, `"` and newline escaped, as the format requires.
fn label_value(v: &str) -> String {
    v.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

/// A sample value: integers exactly, floats as the format spells them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

/// An exposition being written: one family at a time, every sample labelled with the segment.
struct Exposition {
    out: String,
    segment: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str, samples: &[(&[(&str, &str)], f64)]) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = write!(self.out, "{name}{{segment=\"{}\"", self.segment);
            for (k, v) in labels.iter() {
                let _ = write!(self.out, ",{k}=\"{}\"", label_value(v));
            }
            let _ = writeln!(self.out, "}} {}", number(*value));
        }
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help, &[(&[], value)]);
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help, &[(&[], value as f64)]);
    }
}

/// The exposition text for a status report and, when given, the segment's counters.
pub fn render(r: &StatusReport, store: Option<&Store>) -> String {
    let mut x = Exposition { out: String::with_capacity(8 << 10), segment: label_value(&r.segment) };
    let now_ms = unix_ms_now();

    let mut roles: Vec<&str> = ROLES.to_vec();
    // (No role yet while the daemon starts.)
    if !r.role.is_empty() && !roles.contains(&r.role.as_str()) {
        roles.push(&r.role);
    }
    let role_samples: Vec<([(&str, &str); 1], f64)> =
        roles.iter().map(|&role| ([("role", role)], if role == r.role { 1.0 } else { 0.0 })).collect();
    let role_samples: Vec<(&[(&str, &str)], f64)> = role_samples.iter().map(|(l, v)| (&l[..], *v)).collect();
    x.family(
        "gardenstate_replication_role",
        "gauge",
        "The daemon's role (1 for the current one).",
        &role_samples,
    );
    x.gauge("gardenstate_replication_epoch", "The daemon's replication epoch.", r.epoch as f64);
    x.gauge(
        "gardenstate_replication_connected",
        "1 while a connection to the peer is up.",
        if r.connected { 1.0 } else { 0.0 },
    );
    x.counter("gardenstate_replication_connections_total", "Peer connections established.", r.connections);
    if let Some(expires) = r.tls_cert_expires_unix_ms {
        x.gauge(
            "gardenstate_tls_certificate_expiry_days",
            "Days until this node's TLS certificate expires (negative once it has).",
            (expires as f64 - now_ms as f64) / 86_400_000.0,
        );
    }
    if let Some(lag) = r.lag_entries {
        x.gauge(
            "gardenstate_replication_lag_entries",
            "Changes not yet acknowledged by the peer.",
            lag as f64,
        );
    }
    if let Some(ms) = r.lag_ms {
        x.gauge(
            "gardenstate_replication_lag_seconds",
            "Age of the oldest change not yet acknowledged by the standby.",
            ms as f64 / 1000.0,
        );
    }
    x.counter(
        "gardenstate_replication_shipped_frames_total",
        "Frames sent to the standby.",
        r.shipped_frames,
    );
    x.counter("gardenstate_replication_shipped_bytes_total", "Bytes sent to the standby.", r.shipped_bytes);
    x.counter(
        "gardenstate_replication_applied_entries_total",
        "Entries and deletes applied from the primary.",
        r.applied_entries,
    );
    x.counter(
        "gardenstate_replication_applied_bytes_total",
        "Bytes applied from the primary.",
        r.applied_bytes,
    );
    x.counter("gardenstate_replication_resyncs_total", "Full resyncs (snapshots) started.", r.resyncs);
    if !r.last_heartbeat_unix_ms.is_empty() {
        let ages: Vec<([(&str, &str); 1], f64)> = r
            .last_heartbeat_unix_ms
            .iter()
            .map(|(role, &t)| ([("peer_role", role.as_str())], now_ms.saturating_sub(t) as f64 / 1000.0))
            .collect();
        let ages: Vec<(&[(&str, &str)], f64)> = ages.iter().map(|(l, v)| (&l[..], *v)).collect();
        x.family(
            "gardenstate_replication_heartbeat_age_seconds",
            "gauge",
            "Seconds since the last valid heartbeat from a peer of this role.",
            &ages,
        );
    }
    x.gauge(
        "gardenstate_replication_daemon_uptime_seconds",
        "Seconds since the daemon started.",
        r.uptime_ms as f64 / 1000.0,
    );

    if let Some(store) = store {
        engine(&mut x, store);
    }
    x.out
}

/// The segment's own figures: write mode, replication header words, counters, occupancy.
fn engine(x: &mut Exposition, store: &Store) {
    // As workers meet it: a writable segment whose write lease lapsed is `lease_lapsed`.
    let mode = effective_mode_name(store.write_mode(), lease_lapsed(store));
    let modes = [WriteMode::Writable, WriteMode::Replica, WriteMode::Fenced].map(write_mode_name);
    let labels: Vec<[(&str, &str); 1]> =
        modes.iter().chain([&LEASE_LAPSED]).map(|&m| [("mode", m)]).collect();
    let samples: Vec<(&[(&str, &str)], f64)> =
        labels.iter().map(|l| (&l[..], if l[0].1 == mode { 1.0 } else { 0.0 })).collect();
    x.family(
        "gardenstate_write_mode",
        "gauge",
        "The segment's write mode as workers meet it (1 for the current one; lease_lapsed: writable, \
         but the write lease ran out, so writes are refused).",
        &samples,
    );
    let (info, s) = (store.info(), store.stats());
    x.gauge("gardenstate_epoch", "The segment's replication epoch.", store.epoch() as f64);
    x.gauge("gardenstate_feed_head", "Change-feed position (mutations recorded).", s.feed_head as f64);
    // Only where a standby has acknowledged something: on a segment never replicated it
    // would be 0, and `feed_head - replicated_upto` a lag alert that fires for nothing.
    if store.write_mode() != WriteMode::Replica && store.replicated_upto() > 0 {
        x.gauge(
            "gardenstate_replicated_upto",
            "Feed position up to which the standby acknowledged every change (a primary that has a standby).",
            store.replicated_upto() as f64,
        );
    }
    x.gauge(
        "gardenstate_live_entries",
        "Entries present, including expired ones not yet swept.",
        s.live_entries as f64,
    );
    x.gauge("gardenstate_max_entries", "Live entries the index is sized for.", info.max_entries as f64);
    x.gauge("gardenstate_bytes_used", "Heap bytes in use.", s.bytes_used as f64);
    x.gauge("gardenstate_bytes_free", "Heap bytes free.", s.bytes_free as f64);
    x.gauge("gardenstate_heap_bytes", "Heap capacity.", info.heap_bytes as f64);
    x.gauge("gardenstate_clients", "Client slots in use (threads attached).", s.clients as f64);
    x.gauge("gardenstate_max_clients", "Client slots.", info.max_clients as f64);
    let counters: [(&str, &str, u64); 12] = [
        ("hits", "Reads that found their key.", s.hits),
        ("misses", "Reads that did not find their key.", s.misses),
        ("sets", "Writes.", s.sets),
        ("deletes", "Deletes.", s.deletes),
        ("touches", "TTL renewals.", s.touches),
        ("expirations", "Entries removed by expiry.", s.expirations),
        ("evictions", "Entries evicted to make room.", s.evictions),
        ("locks", "Session locks taken.", s.locks),
        ("lock_contentions", "Session locks refused because held.", s.lock_contentions),
        ("lock_takeovers", "Session locks taken over.", s.lock_takeovers),
        ("dead_reclaims", "Client slots and locks reclaimed from dead processes.", s.dead_reclaims),
        ("sweeps", "Sweeps run.", s.sweeps),
    ];
    for (name, help, v) in counters {
        x.counter(&format!("gardenstate_{name}_total"), help, v);
    }
    let causes = [
        ("full", s.failed_full),
        ("too_large", s.failed_too_large),
        ("read_only", s.failed_read_only),
        ("locked", s.failed_locked),
    ];
    let labels: Vec<[(&str, &str); 1]> = causes.iter().map(|(c, _)| [("cause", *c)]).collect();
    let samples: Vec<(&[(&str, &str)], f64)> =
        labels.iter().zip(causes).map(|(l, (_, v))| (&l[..], v as f64)).collect();
    x.family(
        "gardenstate_failed_writes_total",
        "counter",
        "Worker writes that failed, by cause: full (heap or index), too_large (key or value over the \
         limits), read_only (a standby, fenced, or the write lease run out), locked (another lock id \
         holds the entry, or the caller's lock was taken over).",
        &samples,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use gardenstate::{Expiry, Options};
    use std::collections::HashMap;

    /// A segment for the test, destroyed when dropped.
    struct Seg(String);

    impl Drop for Seg {
        fn drop(&mut self) {
            let _ = Store::destroy(&self.0);
        }
    }

    fn fetch(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(request).unwrap();
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
        let code = head.split(' ').nth(1).unwrap().parse().unwrap();
        (code, head.to_string(), body.to_string())
    }

    fn valid_name(n: &str) -> bool {
        let mut b = n.bytes();
        b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
    }

    /// Parses an exposition strictly enough for the test: every sample's family has a TYPE
    /// line before it, names and labels are well formed, values are numbers. Returns
    /// `(name, labels) -> value`.
    fn parse(text: &str, segment: &str) -> HashMap<(String, String), f64> {
        let mut types: HashMap<String, String> = HashMap::new();
        let mut samples = HashMap::new();
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut p = rest.splitn(3, ' ');
                let (kw, name, what) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
                assert!(valid_name(name), "{line}");
                assert!(name.starts_with("gardenstate_"), "{line}");
                match kw {
                    "HELP" => assert!(!what.is_empty()),
                    "TYPE" => {
                        assert!(matches!(what, "gauge" | "counter"), "{line}");
                        assert!(
                            types.insert(name.to_string(), what.to_string()).is_none(),
                            "two TYPEs: {line}"
                        );
                    }
                    _ => panic!("unknown comment {line}"),
                }
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
            let (name, labels) = series.split_once('{').unwrap();
            assert!(valid_name(name), "{line}");
            let kind = types.get(name).unwrap_or_else(|| panic!("no TYPE before {line}"));
            if kind == "counter" {
                assert!(name.ends_with("_total") && value >= 0.0, "{line}");
            }
            let labels = labels.strip_suffix('}').unwrap();
            assert!(labels.starts_with(&format!("segment=\"{segment}\"")), "{line}");
            for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label {pair} in {line}"));
                assert!(valid_name(k) && !v.contains('\n'), "{line}");
            }
            assert!(samples.insert((name.to_string(), labels.to_string()), value).is_none(), "dup {line}");
        }
        samples
    }

    #[test]
    fn metrics_are_well_formed_and_carry_the_status_and_the_counters() {
        let seg = Seg(format!("gds-metrics-{}", std::process::id()));
        let _ = Store::destroy(&seg.0);
        let store = Arc::new(Store::create(&seg.0, &Options::default()).unwrap());
        store.set(b"a", b"1", Expiry::Never).unwrap();
        store.set(b"b", b"2", Expiry::Never).unwrap();
        let _ = store.get(b"a").unwrap();
        let _ = store.get(b"zz").unwrap();
        let status = Status::new(&seg.0);
        status.set_role("primary");
        status.set_epoch(4, 9);
        status.set_peer(Some("127.0.0.1:1".into()), true);
        status.acked(0);
        status.head_at(2);
        status.shipped(10, 1_000);
        status.resync();
        status.heartbeat_from("witness");
        let addr = serve("127.0.0.1:0", status.clone(), Some(store.clone())).unwrap();
        let (code, head, body) = fetch(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(code, 200, "{head}");
        assert!(head.contains(CONTENT_TYPE), "{head}");
        let m = parse(&body, &seg.0);
        let get = |name: &str, extra: &str| {
            let labels = format!("segment=\"{}\"{extra}", seg.0);
            *m.get(&(name.to_string(), labels)).unwrap_or_else(|| panic!("{name}{extra} missing:\n{body}"))
        };
        assert_eq!(get("gardenstate_replication_role", ",role=\"primary\""), 1.0);
        assert_eq!(get("gardenstate_replication_role", ",role=\"standby\""), 0.0);
        assert_eq!(get("gardenstate_replication_epoch", ""), 4.0);
        assert_eq!(get("gardenstate_replication_connected", ""), 1.0);
        assert_eq!(get("gardenstate_replication_lag_entries", ""), 2.0);
        assert!(get("gardenstate_replication_lag_seconds", "") >= 0.0);
        assert_eq!(get("gardenstate_replication_shipped_frames_total", ""), 10.0);
        assert_eq!(get("gardenstate_replication_shipped_bytes_total", ""), 1_000.0);
        assert_eq!(get("gardenstate_replication_resyncs_total", ""), 1.0);
        assert!(get("gardenstate_replication_heartbeat_age_seconds", ",peer_role=\"witness\"") < 60.0);
        assert_eq!(get("gardenstate_write_mode", ",mode=\"writable\""), 1.0);
        assert_eq!(get("gardenstate_write_mode", ",mode=\"replica\""), 0.0);
        assert_eq!(get("gardenstate_write_mode", ",mode=\"lease_lapsed\""), 0.0);
        assert_eq!(get("gardenstate_live_entries", ""), 2.0);
        assert_eq!(get("gardenstate_sets_total", ""), 2.0);
        assert_eq!(get("gardenstate_hits_total", ""), 1.0);
        assert_eq!(get("gardenstate_misses_total", ""), 1.0);
        assert_eq!(get("gardenstate_feed_head", ""), 2.0);
        assert!(get("gardenstate_bytes_used", "") > 0.0);
        // A query string is fine; HTTP/1.0 too.
        assert_eq!(fetch(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").0, 200);
        // A write lease run out: writes are refused, so the mode is not `writable`.
        store.set_write_lease(Some(Duration::from_millis(1)));
        while store.write_lease_left() != Some(Duration::ZERO) {
            std::thread::yield_now();
        }
        let m = parse(&fetch(addr, b"GET /metrics HTTP/1.1\r\n\r\n").2, &seg.0);
        let get = |name: &str, extra: &str| m[&(name.to_string(), format!("segment=\"{}\"{extra}", seg.0))];
        assert_eq!(get("gardenstate_write_mode", ",mode=\"writable\""), 0.0);
        assert_eq!(get("gardenstate_write_mode", ",mode=\"lease_lapsed\""), 1.0);
        store.set_write_lease(None);

        // Without a store, and before any acknowledgement: no engine figures, no lag.
        let bare = Status::new("bare");
        let addr = serve("127.0.0.1:0", bare, None).unwrap();
        let (code, _, body) = fetch(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(code, 200);
        let m = parse(&body, "bare");
        assert!(m.keys().all(|(n, _)| n.starts_with("gardenstate_replication_")), "{body}");
        assert!(!body.contains("lag_"), "{body}");
    }

    /// `/health/primary` follows the write mode and the lease as `stats` does; `/health/standby`
    /// wants a connected standby within `CONVERGED_ENTRIES` of the head it last heard.
    #[test]
    fn health_checks_answer_200_only_where_the_role_holds() {
        let seg = Seg(format!("gds-health-{}", std::process::id()));
        let _ = Store::destroy(&seg.0);
        let status = Status::new(&seg.0);
        // The segment does not exist yet: not a primary; found once it does.
        let addr = serve("127.0.0.1:0", status.clone(), None).unwrap();
        let get = |path: &str| fetch(addr, format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
        assert_eq!(get("/health/primary").0, 503);
        let store = Store::create(&seg.0, &Options::default()).unwrap();
        let (code, _, body) = get("/health/primary");
        assert_eq!(code, 200, "{body}");
        store.set_write_mode(WriteMode::Fenced);
        let (code, _, body) = get("/health/primary");
        assert_eq!((code, body.as_str()), (503, "not taking writes: the segment is fenced\n"));
        store.set_write_mode(WriteMode::Writable);
        store.set_write_lease(Some(Duration::from_millis(1)));
        while store.write_lease_left() != Some(Duration::ZERO) {
            std::thread::yield_now();
        }
        assert_eq!(get("/health/primary").2, "not taking writes: the segment is lease_lapsed\n");
        store.set_write_lease(None);
        assert_eq!(get("/health/primary").0, 200);
        // The standby check: the role, the link, then the distance to the head last heard.
        assert_eq!(get("/health/standby").0, 503);
        status.set_role("standby");
        assert_eq!(get("/health/standby").0, 503);
        status.set_peer(Some("127.0.0.1:1".into()), true);
        let (code, _, body) = get("/health/standby");
        assert_eq!((code, body.as_str()), (503, "standby, not caught up yet\n"));
        status.head_at(10 + CONVERGED_ENTRIES + 1);
        status.acked(10);
        status.standby_lag(CONVERGED_ENTRIES + 1);
        assert_eq!(get("/health/standby").0, 503);
        status.acked(11);
        status.standby_lag(CONVERGED_ENTRIES);
        let (code, _, body) = get("/health/standby");
        assert_eq!(code, 200, "{body}");
        status.set_peer(Some("127.0.0.1:1".into()), false);
        assert_eq!(get("/health/standby").0, 503);
    }

    #[test]
    fn other_paths_methods_and_garbage_are_refused() {
        let addr = serve("127.0.0.1:0", Status::new("refuse"), None).unwrap();
        assert_eq!(fetch(addr, b"GET / HTTP/1.1\r\n\r\n").0, 404);
        assert_eq!(fetch(addr, b"GET /metricsx HTTP/1.1\r\n\r\n").0, 404);
        let (code, head, _) = fetch(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(code, 405);
        assert!(head.contains("Allow: GET"));
        assert_eq!(fetch(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n").0, 405);
        assert_eq!(fetch(addr, b"\x00\x01\xffgarbage\r\n\r\n").0, 400);
        assert_eq!(fetch(addr, b"GET /metrics\r\n\r\n").0, 400);
        assert_eq!(fetch(addr, b"GET /metrics HTTP/9\r\n\r\n").0, 400);
        // An endless head is cut off.
        let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_REQUEST + 10));
        assert_eq!(fetch(addr, &huge).0, 431);
        // Garbage then hang-up: closed with no answer, and the server goes on.
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"\x16\x03\x01 tls hello?").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert_eq!(fetch(addr, b"GET /metrics HTTP/1.1\r\n\r\n").0, 200);
    }

    #[test]
    fn silent_clients_do_not_block_others_and_are_cut_off() {
        let addr = serve("127.0.0.1:0", Status::new("slow"), None).unwrap();
        // Silent and trickling clients, fewer than the cap.
        let silent: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut trickle = TcpStream::connect(addr).unwrap();
        trickle.write_all(b"GET /met").unwrap();
        let t = Instant::now();
        assert_eq!(fetch(addr, b"GET /metrics HTTP/1.1\r\n\r\n").0, 200);
        assert!(t.elapsed() < Duration::from_secs(2), "served while others hang");
        // The silent ones are closed after REQUEST_TIMEOUT, answerless.
        let mut s = silent.into_iter().next().unwrap();
        s.set_read_timeout(Some(REQUEST_TIMEOUT * 3)).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert!(t.elapsed() >= REQUEST_TIMEOUT - Duration::from_millis(500));
    }

    #[test]
    fn sixteen_idle_sockets_do_not_blind_the_scrape() {
        let addr = serve("127.0.0.1:0", Status::new("cap"), None).unwrap();
        // A slowloris: the cap's worth of sockets that send nothing, reopened as they close.
        let mut idle: Vec<TcpStream> =
            (0..MAX_CONNECTIONS).map(|_| TcpStream::connect(addr).unwrap()).collect();
        for round in 0..3 {
            let (code, head, _) = fetch(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
            assert_eq!(code, 200, "scrape {round} behind {} idle sockets: {head}", idle.len());
            idle.extend((0..MAX_CONNECTIONS).map(|_| TcpStream::connect(addr).unwrap()));
        }
        // The evicted idle sockets were closed, answerless; the server holds at most the cap.
        let mut closed = 0;
        for mut s in idle {
            s.set_read_timeout(Some(REQUEST_TIMEOUT * 3)).unwrap();
            let mut rest = Vec::new();
            if s.read_to_end(&mut rest).is_ok() {
                assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
                closed += 1;
            }
        }
        assert!(closed >= 3 * MAX_CONNECTIONS, "{closed}");
    }

    #[test]
    fn label_values_and_numbers_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(number(1.5), "1.5");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(parse_request_line("GET /metrics HTTP/1.1"), Request::Get("/metrics"));
        assert_eq!(parse_request_line("GET  /metrics HTTP/1.1"), Request::Malformed);
        assert_eq!(parse_request_line("PUT /x HTTP/1.1"), Request::OtherMethod);
    }
}
