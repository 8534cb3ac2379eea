//! A daemon's configuration: command-line flags over a TOML file over defaults.
//!
//! The file's keys are the flags' long names with `_` for `-`; durations and addresses are
//! strings, as on the command line:
//!
//! ```toml
//! segment = "sessions"            # primary, standby
//! connect = "10.0.0.1:7480"       # standby: the primary's address
//! peers = ["10.0.0.1:7480"]       # witness: data nodes (optional: it learns them)
//! listen = "0.0.0.0:7480"         # TCP (when primary) and UDP heartbeats, same port
//! key_file = "/etc/gardenstate/replication.key"
//! witness = "10.0.0.3:7480"       # enables automatic failover and self-fencing
//! heartbeat = "50ms"
//! failover_after = "600ms"
//! fence_after = "400ms"
//! rejoin_after = "10s"
//! metrics = "127.0.0.1:9480"        # also /health/primary and /health/standby
//! notify = "/etc/gardenstate/notify"  # run as `notify ROLE EPOCH SEGMENT` on role changes
//! backlog = "64MiB"               # primary: frames kept for standbys that reconnect
//! log_format = "json"             # or "text" (the default)
//! log_level = "debug"             # error, warn, info (the default) or debug
//! tls_cert = "/etc/gardenstate/node.crt"   # TLS on the TCP link: all three, or none
//! tls_key = "/etc/gardenstate/node.key"    # mode 0600 or stricter, like key_file
//! tls_ca = "/etc/gardenstate/ca.crt"       # peers' certificates must chain to it
//! tls_warn_days = 14              # warn this long before our certificate expires
//! ```
//!
//! TLS (`transport`): with `tls_cert`, `tls_key` and `tls_ca` (PEM files) the TCP link
//! (primary <-> standby, and `gardenstate switchover`) runs over TLS 1.3, both sides showing a
//! certificate signed by the CA; the HMAC challenge-response still runs inside it. Without
//! them it is plaintext. Give all three or none; every node of a cluster must agree (a TLS
//! node refuses a plaintext peer and the other way round). Each node's certificate must carry
//! the DNS name or IP address its peers connect to (`connect`, and the `listen` address they
//! learn from heartbeats after a failover), and be usable for both server and client
//! authentication, since nodes swap roles. The files are read and checked at start (the key
//! file's mode, the key matching the certificate, the certificate chaining to the CA).
//!
//! Reloading: on SIGHUP a daemon resolves its settings again from the same command line
//! ([`Source`]: flags over the file, read again, over defaults) and [`changes`] sorts what
//! differs. Applied at once: `log_level`, `log_format`, `tls_warn_days` (they only change what
//! is logged), and the TLS files' contents (same paths). Everything else needs a restart and
//! is logged as such, unapplied: the timings above all (a node whose `fence_after` or
//! `heartbeat` changed while its peers still run with the old ones would break the timing rule
//! below between nodes, which is checked only within one node's settings, and a lease or a
//! silence clock already running was computed with the old values), and also what was bound,
//! attached or connected at start (segment, listen, connect, peers, witness, metrics, the key,
//! the TLS paths, backlog). A file that no longer resolves is logged and the old settings kept.
//!
//! An unknown key, a value of the wrong type, or a setting the role needs but nobody gave is
//! refused with the file's name and the key, before anything is bound or attached.
//!
//! Timing rule: a primary cut off from its standby and the witness must fence itself before
//! the standby may promote itself, or two primaries would accept writes. So
//! `fence_after + 3 x heartbeat < failover_after` is required (checked on every node, which is
//! why all nodes should share one file). Why that is enough, whatever stalls:
//!
//! ## Why fencing comes first
//!
//! Three clocks, each on one host, each CLOCK_MONOTONIC (`Instant`, and `os::now_ms` for the
//! lease in the segment), compared only through durations measured on one host:
//!
//! - **The primary's write lease** (`H_WRITE_LEASE`, engine `replica.rs`). Every worker
//!   checks it before a write: past it, `ReadOnly`. The guard (`node::Guard::round`, every
//!   heartbeat) sets it to `h + fence_after`, where `h` is the newest time *we sent* a
//!   heartbeat that a peer then echoed: the standby (any of ours), or the witness (only one
//!   sent after we started announcing "writable primary", `Beacon::writable_since`). Not a TCP
//!   acknowledgement (over a link cut one way they go on arriving while the standby hears
//!   nothing). A just-promoted node has `fence_after` from its promotion until a peer echoes it.
//! - **The standby's silence clock** (`node::failover_round`): restarted at the *arrival* of
//!   every primary heartbeat (`Beacon::last_heard`) and TCP frame; it promotes only once
//!   this clock reads `failover_after` ...
//! - **... and the witness's** (`witness`): restarted at the arrival of every heartbeat
//!   announcing a writable primary, and started at the witness's own start (a restarted
//!   witness cannot know what its previous process echoed); the standby also needs a fresh
//!   witness datagram whose age reads `failover_after` (computed before it was sent, so it can
//!   only under-read).
//!
//! A peer that echoed our heartbeat sent at `h` received it at some real time `r >= h`, and its
//! clock restarted then (for the witness: that heartbeat said "writable", by the filter). So
//! the standby cannot promote before `r + failover_after >= h + failover_after`, while our
//! workers stop at `h + fence_after`. That holds:
//! - *whatever the network does*: delay, loss, reordering, duplication and one-way cuts make
//!   arrivals later or echoes rarer, which only restarts peers' clocks later or shortens our
//!   lease; a forged datagram fails the MAC, a replayed one is dropped by its sequence number
//!   (and if it were not, it would only delay a failover);
//! - *whatever stalls*: the lease is in the segment and workers check it themselves, so a
//!   primary daemon stalled (or killed) between two rounds cannot stretch it; a stalled
//!   standby or witness only promotes later. A worker stalled between its lease check and its
//!   publish can land one write after the lease: that write is never acknowledged by a standby
//!   that promoted itself, so `wait_replicated` never reports it safe (it is not a waited write);
//! - *within clock bounds*: the margin `failover_after - fence_after` (at least three
//!   heartbeats) absorbs the lease's millisecond rounding (1 ms) and the rate difference of two
//!   hosts' monotonic clocks (NTP slews at most 500 ppm: 0.3 ms over 600 ms). A host that is
//!   *suspended* (its CLOCK_MONOTONIC stops while the others' run) is outside this argument:
//!   do not suspend a primary's host (a VM paused by its hypervisor keeps its clock running).
//!
//! ## The defaults
//!
//! `heartbeat` 50 ms, `fence_after` 400 ms, `failover_after` 600 ms (`rejoin_after` 10 s):
//! - a primary's host lost: the standby serves writes after `failover_after` plus at most
//!   about three heartbeats (the witness's round, its datagram, the standby's round): ~0.7 s;
//! - a partition: the old primary stops at `fence_after` after its last echoed heartbeat and
//!   the standby promotes `failover_after` after its last arrival plus the same rounds: no host
//!   takes writes for about `failover_after - fence_after` + 1-3 heartbeats, ~0.3 s;
//! - no false fence on a bad link: a proof reaches the primary every heartbeat plus a round
//!   trip; with a 50 ms one-way delay that is ~150 ms old, so fencing needs about five
//!   heartbeats in a row lost (or echoes lost) on *both* the standby's and the witness's path;
//!   a false failover needs twelve in a row lost from the primary to both the standby and
//!   the witness. On a link of worse delay or loss raise all three in proportion.
//! - under CPU starvation each daemon thread must run once per heartbeat-ish; a stall of
//!   `fence_after - round trip` fences (safe: writes stop), never more.
//!
//! Measured on three network-namespace hosts (`replicator/tests/three_hosts.rs`): README.md
//! "Heartbeats, the witness, and automatic failover".

use crate::commands::cli::DaemonArgs;
use crate::commands::units::{parse_duration, parse_size};
use crate::operations::log::Level;
use crate::replication::auth::Key;
use crate::replication::transport::Tls;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The timing defaults: why they are safe and what they give, module doc ("Why fencing comes
/// first", "The defaults").
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(50);
pub const DEFAULT_FAILOVER_AFTER: Duration = Duration::from_millis(600);
pub const DEFAULT_FENCE_AFTER: Duration = Duration::from_millis(400);
pub const DEFAULT_REJOIN_AFTER: Duration = Duration::from_secs(10);
pub const DEFAULT_BACKLOG: u64 = 64 << 20;
pub const DEFAULT_TLS_WARN_DAYS: u32 = 14;

/// Which daemon is being configured (what it requires).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonKind {
    Primary,
    Standby,
    Witness,
}

/// The TOML file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    segment: Option<String>,
    connect: Option<String>,
    peers: Option<Vec<String>>,
    listen: Option<String>,
    key_file: Option<PathBuf>,
    witness: Option<String>,
    heartbeat: Option<String>,
    failover_after: Option<String>,
    fence_after: Option<String>,
    rejoin_after: Option<String>,
    metrics: Option<String>,
    notify: Option<PathBuf>,
    backlog: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_warn_days: Option<u32>,
}

/// A daemon's resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub segment: String,
    pub connect: Option<String>,
    pub peers: Vec<String>,
    pub listen: Option<String>,
    pub key: Key,
    pub witness: Option<String>,
    pub heartbeat: Duration,
    pub failover_after: Duration,
    pub fence_after: Duration,
    pub rejoin_after: Duration,
    pub metrics: Option<String>,
    /// A program run on every role change (`operations::notify`).
    pub notify: Option<PathBuf>,
    /// Bytes of shipped frames the primary keeps for resuming standbys.
    pub backlog: usize,
    /// Log lines as JSON objects rather than text.
    pub log_json: bool,
    /// The least serious lines logged.
    pub log_level: Level,
    /// TLS on the TCP link, or None for plaintext.
    pub tls: Option<Tls>,
    /// Warn when our certificate expires within this many days.
    pub tls_warn_days: u32,
}

/// Role-specific settings given as flags (the rest is in `DaemonArgs`).
#[derive(Debug, Default, Clone)]
pub struct RoleFlags {
    pub segment: Option<String>,
    pub connect: Option<String>,
    pub peers: Vec<String>,
}

/// Where a daemon's settings come from: its command line, kept to resolve them again on a
/// reload exactly as at start.
#[derive(Debug, Clone)]
pub struct Source {
    pub kind: DaemonKind,
    pub role: RoleFlags,
    pub args: DaemonArgs,
}

impl Source {
    /// [`resolve`]s the settings (reading the file again).
    pub fn resolve(&self) -> Result<Config, String> {
        resolve(self.kind, self.role.clone(), self.args.clone())
    }
}

/// What differs between the running settings and newly resolved ones: the settings applied
/// at run time (`name: old -> new`), and the names of those that need a restart (module doc,
/// Reloading).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub applied: Vec<String>,
    pub need_restart: Vec<&'static str>,
}

pub fn changes(old: &Config, new: &Config) -> Changes {
    let mut c = Changes::default();
    let format = |json: bool| if json { "json" } else { "text" };
    if old.log_level != new.log_level {
        c.applied.push(format!("log_level {} -> {}", old.log_level.name(), new.log_level.name()));
    }
    if old.log_json != new.log_json {
        c.applied.push(format!("log_format {} -> {}", format(old.log_json), format(new.log_json)));
    }
    if old.tls_warn_days != new.tls_warn_days {
        c.applied.push(format!("tls_warn_days {} -> {}", old.tls_warn_days, new.tls_warn_days));
    }
    let tls_paths = |t: &Option<Tls>| t.as_ref().map(|t| t.files().map(Path::to_path_buf));
    let restart = [
        ("segment", old.segment != new.segment),
        ("connect", old.connect != new.connect),
        ("peers", old.peers != new.peers),
        ("listen", old.listen != new.listen),
        ("key_file", old.key != new.key),
        ("witness", old.witness != new.witness),
        ("heartbeat", old.heartbeat != new.heartbeat),
        ("failover_after", old.failover_after != new.failover_after),
        ("fence_after", old.fence_after != new.fence_after),
        ("rejoin_after", old.rejoin_after != new.rejoin_after),
        ("metrics", old.metrics != new.metrics),
        ("backlog", old.backlog != new.backlog),
        ("notify", old.notify != new.notify),
        ("tls_cert/tls_key/tls_ca", tls_paths(&old.tls) != tls_paths(&new.tls)),
    ];
    c.need_restart = restart.into_iter().filter(|(_, changed)| *changed).map(|(name, _)| name).collect();
    c
}

fn read_file(path: &std::path::Path) -> Result<File, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
}

fn duration(
    flag: Option<Duration>,
    file: Option<&str>,
    key: &str,
    default: Duration,
) -> Result<Duration, String> {
    match (flag, file) {
        (Some(d), _) => Ok(d),
        (None, Some(s)) => parse_duration(s).map_err(|e| format!("{key}: {e}")),
        (None, None) => Ok(default),
    }
}

/// Merges flags over the file (if any) over defaults and checks what `kind` needs.
pub fn resolve(kind: DaemonKind, role: RoleFlags, d: DaemonArgs) -> Result<Config, String> {
    let file = match &d.config {
        Some(p) => read_file(p)?,
        None => File::default(),
    };
    let origin =
        d.config.as_ref().map_or("the command line".to_string(), |p| format!("--config {}", p.display()));
    let missing = |what: &str| {
        format!("{what} is required (a --{} flag, or `{what}` in {origin})", what.replace('_', "-"))
    };
    let key_file = d.key_file.or(file.key_file).ok_or_else(|| missing("key_file"))?;
    let key = Key::from_file(&key_file)?;
    let in_file = |r: Result<Duration, String>| r.map_err(|e| format!("{origin}: {e}"));
    let t = d.tls;
    let tls =
        Tls::from_paths(t.tls_cert.or(file.tls_cert), t.tls_key.or(file.tls_key), t.tls_ca.or(file.tls_ca))
            .map_err(|e| if d.config.is_some() { format!("{origin}: {e}") } else { e })?;
    let c = Config {
        segment: match kind {
            DaemonKind::Witness => role.segment.or(file.segment).unwrap_or_default(),
            _ => role.segment.or(file.segment).ok_or_else(|| missing("segment"))?,
        },
        connect: role.connect.or(file.connect),
        peers: if role.peers.is_empty() { file.peers.unwrap_or_default() } else { role.peers },
        listen: d.listen.or(file.listen),
        key,
        witness: d.witness.or(file.witness),
        heartbeat: in_file(duration(d.heartbeat, file.heartbeat.as_deref(), "heartbeat", DEFAULT_HEARTBEAT))?,
        failover_after: in_file(duration(
            d.failover_after,
            file.failover_after.as_deref(),
            "failover_after",
            DEFAULT_FAILOVER_AFTER,
        ))?,
        fence_after: in_file(duration(
            d.fence_after,
            file.fence_after.as_deref(),
            "fence_after",
            DEFAULT_FENCE_AFTER,
        ))?,
        rejoin_after: in_file(duration(
            d.rejoin_after,
            file.rejoin_after.as_deref(),
            "rejoin_after",
            DEFAULT_REJOIN_AFTER,
        ))?,
        metrics: d.metrics.or(file.metrics),
        notify: match d.notify.or(file.notify) {
            // A bare name is looked up in PATH when run; a path must name a file now.
            Some(p) if p.components().count() > 1 && !p.is_file() => {
                return Err(format!("{origin}: notify: {} is not a file", p.display()));
            }
            p => p,
        },
        backlog: match (d.backlog, file.backlog.as_deref()) {
            (Some(n), _) => n,
            (None, Some(t)) => parse_size(t).map_err(|e| format!("{origin}: backlog: {e}"))?,
            (None, None) => DEFAULT_BACKLOG,
        } as usize,
        log_json: match d.log_format.or(file.log_format).as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(format!("{origin}: log_format must be \"text\" or \"json\", not {other:?}"));
            }
        },
        log_level: match d.log_level.or(file.log_level) {
            None => Level::Info,
            Some(name) => Level::parse(&name).ok_or_else(|| {
                format!("{origin}: log_level must be one of {:?}, not {name:?}", Level::NAMES)
            })?,
        },
        tls,
        tls_warn_days: t.tls_warn_days.or(file.tls_warn_days).unwrap_or(DEFAULT_TLS_WARN_DAYS),
    };
    match kind {
        DaemonKind::Primary | DaemonKind::Witness if c.listen.is_none() => return Err(missing("listen")),
        DaemonKind::Standby if c.connect.is_none() => return Err(missing("connect")),
        DaemonKind::Standby if c.witness.is_some() && c.listen.is_none() => {
            return Err(format!(
                "listen is required with witness: after an automatic promotion the standby serves the old \
                 primary on it (set it in {origin})"
            ));
        }
        _ => {}
    }
    if !(Duration::from_millis(10)..=Duration::from_secs(10)).contains(&c.heartbeat) {
        return Err(format!("heartbeat must be between 10ms and 10s, not {:?}", c.heartbeat));
    }
    if c.fence_after + 3 * c.heartbeat >= c.failover_after {
        return Err(format!(
            "fence_after ({:?}) + 3 x heartbeat ({:?}) must be less than failover_after ({:?}): a primary cut \
             off from its peers must fence itself before the standby may promote itself",
            c.fence_after, c.heartbeat, c.failover_after
        ));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("gds-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let key = d.join("key");
        std::fs::write(&key, b"0123456789abcdef0123").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        Dir(d)
    }

    fn write(d: &Dir, text: &str) -> PathBuf {
        let p = d.0.join("gardenstate.toml");
        std::fs::write(&p, text.replace("KEY", &d.0.join("key").display().to_string())).unwrap();
        p
    }

    /// Issue 17 item 1: failover under 1 s and a no-writable-host window under 0.5 s, by the
    /// bounds of the module doc ("The defaults"): the standby promotes at most about three
    /// heartbeats after `failover_after`, and the old primary's lease ends `fence_after` after
    /// a proof that is itself at most a heartbeat and a round trip old. (5 s and 3 s before.)
    #[test]
    fn the_default_timings_fail_over_within_a_second_and_fence_first() {
        let (hb, fence, failover) = (DEFAULT_HEARTBEAT, DEFAULT_FENCE_AFTER, DEFAULT_FAILOVER_AFTER);
        assert!(fence + 3 * hb < failover, "the timing rule");
        assert!(failover + 3 * hb < Duration::from_secs(1), "failover {failover:?} + 3 heartbeats of {hb:?}");
        assert!(failover - fence + 3 * hb < Duration::from_millis(500), "the window with no writable host");
        // A default configuration passes every node's check.
        let d = dir("defaults");
        let file = write(&d, "segment = \"s\"\nkey_file = \"KEY\"\nlisten = \"h:1\"\nwitness = \"w:1\"\n");
        let args = DaemonArgs { config: Some(file), ..Default::default() };
        let c = resolve(DaemonKind::Primary, RoleFlags::default(), args).unwrap();
        assert_eq!((c.heartbeat, c.fence_after, c.failover_after), (hb, fence, failover));
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let d = dir("merge");
        let p =
            write(&d, "segment = \"s\"\nconnect = \"h:1\"\nkey_file = \"KEY\"\nfailover_after = \"8s\"\n");
        let args =
            DaemonArgs { config: Some(p), fence_after: Some(Duration::from_secs(4)), ..Default::default() };
        let c = resolve(
            DaemonKind::Standby,
            RoleFlags { connect: Some("h:2".into()), ..Default::default() },
            args,
        )
        .unwrap();
        assert_eq!(c.segment, "s");
        assert_eq!(c.connect.as_deref(), Some("h:2"));
        assert_eq!(c.failover_after, Duration::from_secs(8));
        assert_eq!(c.fence_after, Duration::from_secs(4));
        assert_eq!(c.heartbeat, DEFAULT_HEARTBEAT);
    }

    #[test]
    fn bad_files_and_missing_settings_are_refused_with_the_key_named() {
        let d = dir("bad");
        let cases = [
            ("segment = \"s\"\nkey_file = \"KEY\"\nlisten = \"x:1\"\nlisen = \"typo\"\n", "lisen"),
            ("segment = 5\nkey_file = \"KEY\"\n", "segment"),
            ("segment = \"s\"\nkey_file = \"KEY\"\nlisten = \"x:1\"\nheartbeat = \"fast\"\n", "heartbeat"),
            ("key_file = \"KEY\"\nlisten = \"x:1\"\n", "segment is required"),
            ("segment = \"s\"\nkey_file = \"KEY\"\n", "listen is required"),
            (
                "segment = \"s\"\nkey_file = \"KEY\"\nlisten = \"x:1\"\nfence_after = \"5s\"\n",
                "must fence itself",
            ),
            ("segment = [\n", "gardenstate.toml"),
        ];
        for (text, expect) in cases {
            let args = DaemonArgs { config: Some(write(&d, text)), ..Default::default() };
            let err = resolve(DaemonKind::Primary, RoleFlags::default(), args).unwrap_err();
            assert!(err.contains(expect), "{text:?}: {err}");
        }
        let err = resolve(DaemonKind::Primary, RoleFlags::default(), DaemonArgs::default()).unwrap_err();
        assert!(err.contains("key_file is required (a --key-file flag"), "{err}");
    }

    /// A reload applies the log settings and names every other changed setting (issue 21).
    #[test]
    fn changes_apply_the_log_settings_and_leave_the_rest_to_a_restart() {
        let d = dir("changes");
        let base = "segment = \"s\"\nkey_file = \"KEY\"\nlisten = \"x:1\"\n";
        let at = |text: &str| {
            let args = DaemonArgs { config: Some(write(&d, &format!("{base}{text}"))), ..Default::default() };
            resolve(DaemonKind::Primary, RoleFlags::default(), args).unwrap()
        };
        let old = at("");
        assert_eq!(old.log_level, Level::Info);
        assert_eq!(changes(&old, &at("")), Changes::default());
        let new =
            at("log_level = \"debug\"\nlog_format = \"json\"\nheartbeat = \"60ms\"\nmetrics = \"m:1\"\n");
        let c = changes(&old, &new);
        assert_eq!(c.applied, ["log_level info -> debug", "log_format text -> json"]);
        assert_eq!(c.need_restart, ["heartbeat", "metrics"]);
        let args = DaemonArgs {
            config: Some(write(&d, &format!("{base}log_level = \"loud\"\n"))),
            ..Default::default()
        };
        let err = resolve(DaemonKind::Primary, RoleFlags::default(), args).unwrap_err();
        assert!(err.contains("log_level must be one of") && err.contains("gardenstate.toml"), "{err}");
    }

    #[test]
    fn tls_takes_all_three_files_or_none_and_a_private_key_file() {
        let d = dir("tls");
        let base = "segment = \"s\"\nkey_file = \"KEY\"\nlisten = \"x:1\"\n";
        let p = write(&d, &format!("{base}tls_cert = \"/nonexistent/c\"\ntls_ca = \"/nonexistent/ca\"\n"));
        let err = resolve(
            DaemonKind::Primary,
            RoleFlags::default(),
            DaemonArgs { config: Some(p), ..Default::default() },
        )
        .unwrap_err();
        assert!(
            err.contains("all three") && err.contains("missing: tls_key") && err.contains("gardenstate.toml"),
            "{err}"
        );
        let tls_key = d.0.join("tls.key");
        std::fs::write(&tls_key, b"not checked before the mode").unwrap();
        std::fs::set_permissions(&tls_key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let p = write(&d, base);
        let tls = crate::commands::cli::TlsArgs {
            tls_cert: Some("/nonexistent/c".into()),
            tls_key: Some(tls_key),
            tls_ca: Some("/nonexistent/ca".into()),
            tls_warn_days: None,
        };
        let args = DaemonArgs { config: Some(p), tls, ..Default::default() };
        let err = resolve(DaemonKind::Primary, RoleFlags::default(), args).unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
        let p = write(&d, base);
        let c = resolve(
            DaemonKind::Primary,
            RoleFlags::default(),
            DaemonArgs { config: Some(p), ..Default::default() },
        );
        assert!(c.unwrap().tls.is_none());
    }
}
