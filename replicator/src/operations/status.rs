//! The replication daemon's live status, shared by its threads, and the status file through
//! which `gardenstate stats` (another process) sees it.
//!
//! A daemon makes one [`Status`] with [`Status::new`] and hands `Arc` clones to its threads,
//! which report what happens: the role and epoch, the peer, frames shipped and entries
//! applied, the feed head and the standby's acknowledgements (from which the lag is
//! computed), heartbeats received, resyncs, notable events. Hot counters are atomics; the
//! rest sits behind one mutex held only for a few field updates. [`Status::snapshot`] turns it
//! into a plain, serializable [`StatusReport`], with throughput per second over the last few
//! seconds.
//!
//! # Lag
//!
//! On a primary, `head_at(pos)` records the feed head observed now and `acked(pos)` the
//! standby's acknowledgement (every change before `pos` is applied there). The lag in entries
//! is `head - acked`. The lag in time is the age of the oldest change not yet acknowledged:
//! each head observation that moved the head is remembered as a `(pos, Instant)` sample ("the
//! changes before `pos` existed at this instant") in a bounded ring; acknowledged samples are
//! dropped, and the lag is the age of the first sample beyond `acked`. Samples closer than
//! [`LAG_RESOLUTION`] are merged into the earlier one (the lag may read up to that much high,
//! never low by more than the time between two head observations); a full ring merges its two
//! closest samples into the earlier one, so the oldest time is always kept and the lag errs
//! high by at most the ring's widest gap (its time span / 512 under steady load). On a
//! standby, the daemon reports its own estimate with `standby_lag(entries)`.
//!
//! # The status file
//!
//! [`publish_forever`] writes the report as JSON every [`PUBLISH_EVERY`] to
//! [`status_path`]`(segment)`: `<shm_dir>/gardenstate+status.<uid>/<segment>.json`, one
//! directory per user (the daemon's effective uid), so applications of different users that
//! share one segment directory each publish in their own (one shared directory belonged to
//! the first user, and every other user's daemon had to exit). The directory name holds a
//! `+`, which a segment name (`[A-Za-z0-9._-]`) can never contain, so it can never collide
//! with a segment (a `gardenstate-status/` directory could: that is a valid segment name). The
//! directory is created with mode 0700 and is used only if it is a real directory (not a
//! symlink) owned by this user without group or other permissions (a directory of this name
//! owned by anyone else was planted: refused, and no other user's directory is ever
//! touched); a reader ([`daemon_state`]) looks in its own user's directory, then in that of
//! the segment file's owner. The file
//! is written as a temporary file (mode 0600, created exclusively, so nothing planted under
//! its name is followed) and renamed over the old one, so a reader never sees half a report.
//! A reader calls the report stale when its `written_unix_ms` is more than [`STALE_AFTER`]
//! old or its pid is gone: the daemon is not running (or is hung).

use crate::operations::notify::Notifier;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The prefix of the per-user directories under `gardenstate::shm_dir()` that hold the status
/// files (`gardenstate+status.<uid>`). Its `+` keeps them out of the segment namespace.
pub const STATUS_DIR: &str = "gardenstate+status";
/// How often [`publish_forever`] rewrites the status file.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(500);
/// A status file older than this means its daemon is not running (or is hung).
pub const STALE_AFTER: Duration = Duration::from_secs(3);
/// Throughput is averaged over (about) this much of the recent past.
pub const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Throughput samples are taken at most this often (snapshots in between reuse them).
const RATE_SPACING: Duration = Duration::from_millis(100);
const RATE_SAMPLES: usize = 128;
/// Head observations closer than this are merged: the lag's time resolution.
pub const LAG_RESOLUTION: Duration = Duration::from_millis(10);
/// The most lag samples kept (a full ring is thinned to every other sample).
const LAG_SAMPLES: usize = 512;
/// Longest event text kept, bytes; longest peer-role name; most peer roles tracked.
const MAX_EVENT: usize = 1024;
const MAX_ROLE: usize = 32;
const MAX_ROLES: usize = 16;

/// Milliseconds since 1970-01-01 UTC, now.
pub fn unix_ms_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Cumulative counters at one instant (for throughput).
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    frames: u64,
    bytes: u64,
    entries: u64,
    applied_bytes: u64,
}

/// The mutable part of the status, behind the mutex.
#[derive(Debug, Default)]
struct StatusData {
    role: String,
    epoch: u64,
    history: u64,
    peer: Option<String>,
    connected: bool,
    connected_since_unix_ms: Option<u64>,
    connections: u64,
    /// Primary: the highest feed head observed, and the highest position acknowledged.
    head: Option<u64>,
    acked: Option<u64>,
    /// Primary: `(pos, when)`: the changes before `pos` existed at `when`; only samples
    /// beyond `acked`, oldest first.
    unacked: VecDeque<(u64, Instant)>,
    /// Standby: the daemon's own lag estimate.
    standby_lag: Option<u64>,
    heartbeats: BTreeMap<String, u64>,
    last_event: Option<Event>,
    rates: VecDeque<(Instant, Counters)>,
    tls_cert_expires_unix_ms: Option<u64>,
    /// Told of every change of role (`operations::notify`).
    notifier: Option<Notifier>,
}

/// A replication daemon's live status (see the module comment). `Send + Sync`: share it in
/// an `Arc`.
#[derive(Debug)]
pub struct Status {
    segment: String,
    pid: u32,
    started: Instant,
    started_unix_ms: u64,
    shipped_frames: AtomicU64,
    shipped_bytes: AtomicU64,
    applied_entries: AtomicU64,
    applied_bytes: AtomicU64,
    resyncs: AtomicU64,
    data: Mutex<StatusData>,
}

/// A notable event: its text and when it happened.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Event {
    pub text: String,
    pub unix_ms: u64,
}

/// Throughput over the recent past (`window_ms` of it; 0 when there is no earlier sample yet).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rates {
    pub window_ms: u64,
    /// Primary: frames and bytes shipped per second.
    pub frames_per_s: f64,
    pub bytes_per_s: f64,
    /// Standby: entries (and their bytes) applied per second.
    pub applied_entries_per_s: f64,
    pub applied_bytes_per_s: f64,
}

/// A point-in-time copy of a [`Status`]: what the status file holds (as JSON) and what
/// `/metrics` exposes. Field names are a stable interface (replicator/README.md); a field
/// missing from a file (an older daemon) reads as its default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusReport {
    pub segment: String,
    pub pid: u32,
    pub started_unix_ms: u64,
    pub uptime_ms: u64,
    /// When this report was taken (a reader's freshness test).
    pub written_unix_ms: u64,
    /// "primary", "standby", "witness", "fenced", "demoted" ("unknown" before it is set).
    pub role: String,
    pub epoch: u64,
    /// The history id, 16 hex digits.
    pub history: String,
    pub peer: Option<String>,
    pub connected: bool,
    pub connected_since_unix_ms: Option<u64>,
    /// How many times a peer connection was established.
    pub connections: u64,
    /// Primary: the feed head last observed, and the standby's acknowledged position.
    pub feed_head: Option<u64>,
    pub acked: Option<u64>,
    /// Changes not yet on the peer (primary: head - acked; standby: its estimate); null
    /// when unknown (no acknowledgement yet).
    pub lag_entries: Option<u64>,
    /// Age of the oldest change not yet acknowledged (primary); null when unknown.
    pub lag_ms: Option<u64>,
    pub shipped_frames: u64,
    pub shipped_bytes: u64,
    pub applied_entries: u64,
    pub applied_bytes: u64,
    pub resyncs: u64,
    pub rates: Rates,
    /// Peer role ("primary", "standby", "witness") → when its last valid heartbeat arrived.
    pub last_heartbeat_unix_ms: BTreeMap<String, u64>,
    pub last_event: Option<Event>,
    /// When this node's TLS certificate expires; null without TLS.
    pub tls_cert_expires_unix_ms: Option<u64>,
}

impl Status {
    /// A fresh status for the daemon of `segment` (role "unknown", all counters 0).
    pub fn new(segment: &str) -> Arc<Status> {
        Arc::new(Status {
            segment: segment.to_string(),
            pid: std::process::id(),
            started: Instant::now(),
            started_unix_ms: unix_ms_now(),
            shipped_frames: AtomicU64::new(0),
            shipped_bytes: AtomicU64::new(0),
            applied_entries: AtomicU64::new(0),
            applied_bytes: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            data: Mutex::new(StatusData { role: "unknown".into(), ..StatusData::default() }),
        })
    }

    /// When the certificate in use expires (Unix ms).
    pub fn set_cert_expiry(&self, unix_ms: Option<u64>) {
        self.data().tls_cert_expires_unix_ms = unix_ms;
    }

    /// The segment this status is about.
    pub fn segment(&self) -> &str {
        &self.segment
    }

    fn data(&self) -> MutexGuard<'_, StatusData> {
        // A panicking reporter leaves plain data behind: keep going with it.
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The daemon's role: "primary", "standby", "witness", "fenced", "demoted". A change of
    /// role forgets the lag figures, which mean something else in the new role.
    pub fn set_role(&self, role: &str) {
        let role = truncated(role, MAX_ROLE);
        let mut d = self.data();
        if d.role != role {
            if let Some(n) = &d.notifier {
                n.changed(&role, d.epoch);
            }
            d.role = role;
            d.head = None;
            d.acked = None;
            d.unacked.clear();
            d.standby_lag = None;
        }
    }

    /// From now on every change of role runs `notifier`'s hook (with the epoch last set:
    /// set the epoch before the role).
    pub fn set_notifier(&self, notifier: Notifier) {
        self.data().notifier = Some(notifier);
    }

    /// The role last set.
    pub fn role(&self) -> String {
        self.data().role.clone()
    }

    pub fn set_epoch(&self, epoch: u64, history: u64) {
        let mut d = self.data();
        d.epoch = epoch;
        d.history = history;
    }

    /// The peer's address (None: no peer known) and whether a connection to it is up. A
    /// connection to another address than the current one counts as a new connection.
    pub fn set_peer(&self, addr: Option<String>, connected: bool) {
        let mut d = self.data();
        if connected && (!d.connected || d.peer != addr) {
            d.connections += 1;
            d.connected_since_unix_ms = Some(unix_ms_now());
        } else if !connected {
            d.connected_since_unix_ms = None;
        }
        d.peer = addr;
        d.connected = connected;
    }

    /// Primary: `frames` frames of `bytes` bytes were sent to the standby.
    pub fn shipped(&self, frames: u64, bytes: u64) {
        self.shipped_frames.fetch_add(frames, Ordering::Relaxed);
        self.shipped_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Standby: `entries` entries (or deletes) of `bytes` bytes were applied.
    pub fn applied(&self, entries: u64, bytes: u64) {
        self.applied_entries.fetch_add(entries, Ordering::Relaxed);
        self.applied_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Primary: the feed head observed now (call it whenever the head is read; cheap).
    pub fn head_at(&self, pos: u64) {
        self.head_at_time(pos, Instant::now());
    }

    fn head_at_time(&self, pos: u64, now: Instant) {
        let mut d = self.data();
        if d.head.is_some_and(|h| h >= pos) {
            return;
        }
        d.head = Some(pos);
        if pos <= d.acked.unwrap_or(0) {
            return;
        }
        match d.unacked.back_mut() {
            // Merged: the changes up to `pos` are dated a little early (at most
            // LAG_RESOLUTION), so the lag errs high.
            Some(last) if now.saturating_duration_since(last.1) < LAG_RESOLUTION => last.0 = pos,
            _ => {
                d.unacked.push_back((pos, now));
                if d.unacked.len() > LAG_SAMPLES {
                    // Merge the two closest samples into the earlier one: the resolution
                    // stays even across the ring, and the oldest time is kept.
                    let closest = (1..d.unacked.len())
                        .min_by_key(|&i| d.unacked[i].1.saturating_duration_since(d.unacked[i - 1].1))
                        .unwrap_or(1);
                    d.unacked[closest - 1].0 = d.unacked[closest].0;
                    d.unacked.remove(closest);
                }
            }
        }
    }

    /// Primary: the standby acknowledged every change before `pos`.
    pub fn acked(&self, pos: u64) {
        let mut d = self.data();
        let acked = d.acked.map_or(pos, |a| a.max(pos));
        d.acked = Some(acked);
        while d.unacked.front().is_some_and(|&(p, _)| p <= acked) {
            d.unacked.pop_front();
        }
    }

    /// Standby: its own estimate of how many changes it is behind.
    pub fn standby_lag(&self, entries: u64) {
        self.data().standby_lag = Some(entries);
    }

    /// A valid heartbeat arrived from a peer of `role` ("primary", "standby", "witness").
    pub fn heartbeat_from(&self, role: &str) {
        let (role, now) = (truncated(role, MAX_ROLE), unix_ms_now());
        let mut d = self.data();
        if let Some(t) = d.heartbeats.get_mut(&role) {
            *t = now;
        } else if d.heartbeats.len() < MAX_ROLES {
            d.heartbeats.insert(role, now);
        }
    }

    /// A resync (a new full snapshot) started.
    pub fn resync(&self) {
        self.resyncs.fetch_add(1, Ordering::Relaxed);
    }

    /// A notable event (its text is kept, cut to 1 KiB, with the time).
    pub fn event(&self, what: &str) {
        self.data().last_event = Some(Event { text: truncated(what, MAX_EVENT), unix_ms: unix_ms_now() });
    }

    fn counters(&self) -> Counters {
        Counters {
            frames: self.shipped_frames.load(Ordering::Relaxed),
            bytes: self.shipped_bytes.load(Ordering::Relaxed),
            entries: self.applied_entries.load(Ordering::Relaxed),
            applied_bytes: self.applied_bytes.load(Ordering::Relaxed),
        }
    }

    /// Everything, now, with the lag and the throughput computed.
    pub fn snapshot(&self) -> StatusReport {
        self.snapshot_at(Instant::now(), unix_ms_now())
    }

    fn snapshot_at(&self, now: Instant, now_unix_ms: u64) -> StatusReport {
        let c = self.counters();
        let mut d = self.data();
        let rates = rates(&mut d.rates, now, c);
        let (lag_entries, lag_ms) = match (d.head, d.acked) {
            (Some(head), Some(acked)) => {
                let entries = head.saturating_sub(acked);
                let ms = if entries == 0 {
                    Some(0)
                } else {
                    d.unacked.front().map(|&(_, t)| now.saturating_duration_since(t).as_millis() as u64)
                };
                (Some(entries), ms)
            }
            _ => (d.standby_lag, None),
        };
        StatusReport {
            segment: self.segment.clone(),
            pid: self.pid,
            started_unix_ms: self.started_unix_ms,
            uptime_ms: now.saturating_duration_since(self.started).as_millis() as u64,
            written_unix_ms: now_unix_ms,
            role: d.role.clone(),
            epoch: d.epoch,
            history: format!("{:016x}", d.history),
            peer: d.peer.clone(),
            connected: d.connected,
            connected_since_unix_ms: d.connected_since_unix_ms,
            connections: d.connections,
            feed_head: d.head,
            acked: d.acked,
            lag_entries,
            lag_ms,
            shipped_frames: c.frames,
            shipped_bytes: c.bytes,
            applied_entries: c.entries,
            applied_bytes: c.applied_bytes,
            resyncs: self.resyncs.load(Ordering::Relaxed),
            rates,
            last_heartbeat_unix_ms: d.heartbeats.clone(),
            last_event: d.last_event.clone(),
            tls_cert_expires_unix_ms: d.tls_cert_expires_unix_ms,
        }
    }
}

/// Throughput between the oldest sample of the last [`RATE_WINDOW`] and `now` (when snapshots
/// are rarer than the window, since the previous one), then records `now` as a sample.
fn rates(samples: &mut VecDeque<(Instant, Counters)>, now: Instant, c: Counters) -> Rates {
    while samples.len() >= 2 && now.saturating_duration_since(samples[1].0) >= RATE_WINDOW {
        samples.pop_front();
    }
    let mut r = Rates::default();
    if let Some(&(t0, c0)) = samples.front() {
        let dt = now.saturating_duration_since(t0);
        if !dt.is_zero() {
            let per_s = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt.as_secs_f64();
            r = Rates {
                window_ms: dt.as_millis() as u64,
                frames_per_s: per_s(c.frames, c0.frames),
                bytes_per_s: per_s(c.bytes, c0.bytes),
                applied_entries_per_s: per_s(c.entries, c0.entries),
                applied_bytes_per_s: per_s(c.applied_bytes, c0.applied_bytes),
            };
        }
    }
    if samples.back().is_none_or(|&(t, _)| now.saturating_duration_since(t) >= RATE_SPACING) {
        samples.push_back((now, c));
        if samples.len() > RATE_SAMPLES {
            samples.pop_front();
        }
    }
    r
}

// ---- the status file ----------------------------------------------------------------------

/// This user's directory of status files: `<shm_dir>/gardenstate+status.<uid>`.
pub fn status_dir() -> PathBuf {
    status_dir_of(my_uid().unwrap_or(u32::MAX))
}

/// User `uid`'s directory of status files.
pub fn status_dir_of(uid: u32) -> PathBuf {
    gardenstate::shm_dir().join(format!("{STATUS_DIR}.{uid}"))
}

/// The status file this user's daemon of `segment` writes. Refuses a name that is not a
/// segment name (it would not stay inside the directory).
pub fn status_path(segment: &str) -> Result<PathBuf, String> {
    status_path_in(&status_dir(), segment)
}

fn status_path_in(dir: &Path, segment: &str) -> Result<PathBuf, String> {
    let ok = !segment.is_empty()
        && segment.len() <= 200
        && segment != "."
        && segment != ".."
        && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(format!("segment name {segment:?}: use 1-200 characters from [A-Za-z0-9._-]"));
    }
    Ok(dir.join(format!("{segment}.json")))
}

/// This process's effective uid (the owner of `/proc/self`).
fn my_uid() -> std::io::Result<u32> {
    std::fs::metadata("/proc/self").map(|m| m.uid())
}

/// Creates the status directory (0700), or checks that the existing one is ours and private.
fn ensure_dir(dir: &Path) -> Result<(), String> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create status directory {}: {e}", dir.display())),
    }
    let m = std::fs::symlink_metadata(dir).map_err(|e| format!("status directory {}: {e}", dir.display()))?;
    let uid = my_uid().map_err(|e| format!("cannot tell this process's uid from /proc/self: {e}"))?;
    if !m.file_type().is_dir() {
        return Err(format!("{} exists but is not a directory (a symlink?): remove it", dir.display()));
    }
    if m.uid() != uid {
        // Named after this uid but owned by another user: planted, not another app's own
        // directory (each user has its own name), so no other application uses it.
        return Err(format!(
            "status directory {} is named for this user (uid {uid}) but belongs to uid {}: it was not \
             made by a gardenstate daemon of this user; have its owner or root remove it",
            dir.display(),
            m.uid()
        ));
    }
    if m.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "status directory {} has mode {:o}: group and others must have no access (chmod 700 it)",
            dir.display(),
            m.permissions().mode() & 0o777
        ));
    }
    Ok(())
}

/// Writes `report` to `path` atomically (temporary file, mode 0600, then rename).
pub fn write_status_file(path: &Path, report: &StatusReport) -> Result<(), String> {
    let dir = path.parent().ok_or("a status file path needs a directory")?;
    ensure_dir(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Unique per write, so two publishers in one process cannot trip over each other.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let mut json = serde_json::to_vec_pretty(report).map_err(|e| e.to_string())?;
    json.push(b'\n');
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&json))
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing status file {}: {e}", path.display())
    })
}

/// Publishes a daemon's status: keeps its status file rewritten every [`PUBLISH_EVERY`]
/// while the guard lives. The first write happens before it returns, so a directory that
/// cannot be used is an error here; later write failures are logged (once until they stop).
/// Dropping the guard stops the thread and removes the file (if it is still this process's);
/// a daemon killed without unwinding leaves the file, which readers then see go stale.
pub fn publish_forever(status: Arc<Status>) -> Result<StatusFileGuard, String> {
    let path = status_path(status.segment())?;
    write_status_file(&path, &status.snapshot())?;
    let (stop, stopped) = mpsc::channel::<()>();
    let file = path.clone();
    let thread = std::thread::Builder::new()
        .name("gs-status".into())
        .spawn(move || {
            let mut failing: Option<String> = None;
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(PUBLISH_EVERY) {
                match write_status_file(&file, &status.snapshot()) {
                    Ok(()) => {
                        if failing.take().is_some() {
                            crate::operations::log::info(&format!(
                                "status file {} written again",
                                file.display()
                            ));
                        }
                    }
                    Err(e) => {
                        if failing.as_ref() != Some(&e) {
                            crate::operations::log::warn(&e);
                        }
                        failing = Some(e);
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the status thread: {e}"))?;
    Ok(StatusFileGuard { path, stop: Some(stop), thread: Some(thread) })
}

/// Keeps the status file published; dropping it stops publishing and removes the file.
#[derive(Debug)]
pub struct StatusFileGuard {
    path: PathBuf,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl StatusFileGuard {
    /// The status file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StatusFileGuard {
    fn drop(&mut self) {
        drop(self.stop.take()); // wakes the thread: its channel is disconnected
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Only our own file: another daemon may have taken the name over meanwhile.
        if read_report(&self.path).ok().flatten().is_some_and(|r| r.pid == std::process::id()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Reads a status file: `Ok(None)` if there is none.
pub fn read_report(path: &Path) -> Result<Option<StatusReport>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("status file {} is not a status report: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read status file {}: {e}", path.display())),
    }
}

/// What a reader (`gardenstate stats`) finds about a segment's daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum DaemonState {
    /// No status file: no replication daemon runs for the segment (or never published).
    None,
    /// A status file that cannot be read or parsed (e.g. another user's daemon: it is 0600).
    Unreadable(String),
    /// A report, `age_ms` old; `running` when fresh (at most [`STALE_AFTER`]) and its pid
    /// still exists.
    Found { report: Box<StatusReport>, age_ms: u64, pid_alive: bool, running: bool },
}

/// Looks for `segment`'s daemon through its status file: this user's, else that of the
/// segment file's owner (a daemon runs as the user of its application).
pub fn daemon_state(segment: &str) -> DaemonState {
    let path = match status_path(segment) {
        Ok(p) => p,
        Err(e) => return DaemonState::Unreadable(e),
    };
    let owner = std::fs::metadata(gardenstate::shm_dir().join(segment)).map(|m| m.uid());
    let path = match owner {
        Ok(uid) if !path.exists() => status_path_in(&status_dir_of(uid), segment).unwrap_or(path),
        _ => path,
    };
    match read_report(&path) {
        Ok(None) => DaemonState::None,
        Err(e) => DaemonState::Unreadable(e),
        Ok(Some(report)) => {
            let age_ms = unix_ms_now().saturating_sub(report.written_unix_ms);
            let pid_alive = report.pid != 0 && Path::new(&format!("/proc/{}", report.pid)).exists();
            let running = pid_alive && age_ms <= STALE_AFTER.as_millis() as u64;
            DaemonState::Found { report: Box::new(report), age_ms, pid_alive, running }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn status_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Status>();
        check::<StatusFileGuard>();
    }

    #[test]
    fn lag_in_entries_and_in_time() {
        let s = Status::new("lag");
        s.set_role("primary");
        let t0 = Instant::now();
        // No acknowledgement yet: unknown.
        s.head_at_time(10, t0);
        let r = s.snapshot_at(t0 + ms(5), 0);
        assert_eq!((r.lag_entries, r.lag_ms), (None, None));
        s.acked(10);
        let r = s.snapshot_at(t0 + ms(5), 0);
        assert_eq!((r.lag_entries, r.lag_ms), (Some(0), Some(0)));
        // Changes 10..20 seen at t0+100, 20..30 at t0+200.
        s.head_at_time(20, t0 + ms(100));
        s.head_at_time(30, t0 + ms(200));
        let r = s.snapshot_at(t0 + ms(300), 0);
        assert_eq!(r.lag_entries, Some(20));
        assert_eq!(r.lag_ms, Some(200), "the oldest unacknowledged change is from t0+100");
        assert_eq!((r.feed_head, r.acked), (Some(30), Some(10)));
        // Part of the first batch acknowledged: still the first sample's age.
        s.acked(15);
        assert_eq!(s.snapshot_at(t0 + ms(300), 0).lag_ms, Some(200));
        // The first batch acknowledged: the second batch's age.
        s.acked(20);
        let r = s.snapshot_at(t0 + ms(300), 0);
        assert_eq!((r.lag_entries, r.lag_ms), (Some(10), Some(100)));
        // Everything acknowledged.
        s.acked(30);
        let r = s.snapshot_at(t0 + ms(400), 0);
        assert_eq!((r.lag_entries, r.lag_ms), (Some(0), Some(0)));
        // Acks never go backwards; a head below the known one is ignored.
        s.acked(5);
        s.head_at_time(3, t0 + ms(500));
        let r = s.snapshot_at(t0 + ms(500), 0);
        assert_eq!((r.feed_head, r.acked, r.lag_entries), (Some(30), Some(30), Some(0)));
    }

    #[test]
    fn close_head_observations_merge_into_the_earlier_one() {
        let s = Status::new("merge");
        let t0 = Instant::now();
        s.acked(0);
        s.head_at_time(1, t0);
        s.head_at_time(2, t0 + ms(3)); // within LAG_RESOLUTION: dated t0
        s.head_at_time(3, t0 + ms(50));
        s.acked(1);
        // The change at 1 (dated t0 with the merged sample up to 2) is unacknowledged.
        assert_eq!(s.snapshot_at(t0 + ms(100), 0).lag_ms, Some(100));
        s.acked(2);
        assert_eq!(s.snapshot_at(t0 + ms(100), 0).lag_ms, Some(50));
    }

    #[test]
    fn a_full_lag_ring_keeps_its_oldest_sample() {
        let s = Status::new("ring");
        let t0 = Instant::now();
        s.acked(0);
        for i in 1..=5_000u64 {
            s.head_at_time(i, t0 + ms(i * 20));
        }
        assert!(s.data().unacked.len() <= LAG_SAMPLES);
        let now = t0 + ms(5_000 * 20);
        let r = s.snapshot_at(now, 0);
        assert_eq!(r.lag_entries, Some(5_000));
        assert_eq!(r.lag_ms, Some(5_000 * 20 - 20), "measured from the very first change");
        // Halfway acknowledged: merging errs high, by at most the widest gap (about
        // 100 s / 512 here).
        s.acked(2_500);
        let lag = s.snapshot_at(now, 0).lag_ms.unwrap();
        let exact = (5_000 - 2_501) * 20;
        assert!(lag >= exact && lag <= exact + 400, "lag {lag} vs exact {exact}");
    }

    #[test]
    fn a_role_change_forgets_the_lag_and_the_standby_reports_its_own() {
        let s = Status::new("roles");
        s.set_role("primary");
        s.acked(1);
        s.head_at(5);
        assert_eq!(s.snapshot().lag_entries, Some(4));
        s.set_role("standby");
        let r = s.snapshot();
        assert_eq!((r.role.as_str(), r.lag_entries, r.feed_head), ("standby", None, None));
        s.standby_lag(7);
        assert_eq!(s.snapshot().lag_entries, Some(7));
        assert_eq!(s.snapshot().lag_ms, None);
    }

    #[test]
    fn throughput_over_the_recent_window() {
        let s = Status::new("rate");
        let t0 = Instant::now();
        let r = s.snapshot_at(t0, 0);
        assert_eq!(r.rates, Rates::default(), "no earlier sample: no rate");
        // 1,000 frames / 100 KB per second for 2 s, sampled every 500 ms.
        for i in 1..=4u64 {
            s.shipped(500, 50_000);
            s.applied(10, 1_000);
            s.snapshot_at(t0 + ms(500 * i), 0);
        }
        s.shipped(500, 50_000);
        s.applied(10, 1_000);
        let r = s.snapshot_at(t0 + ms(2_500), 0);
        assert_eq!(r.rates.window_ms, 2_500);
        assert!((r.rates.frames_per_s - 1_000.0).abs() < 1e-6, "{:?}", r.rates);
        assert!((r.rates.bytes_per_s - 100_000.0).abs() < 1e-6);
        assert!((r.rates.applied_entries_per_s - 20.0).abs() < 1e-6);
        assert!((r.rates.applied_bytes_per_s - 2_000.0).abs() < 1e-6);
        assert_eq!((r.shipped_frames, r.shipped_bytes, r.applied_entries), (2_500, 250_000, 50));
        // Idle for 10 s, sampled every 500 ms: the window slides past the busy period.
        for i in 1..=20u64 {
            s.snapshot_at(t0 + ms(2_500 + 500 * i), 0);
        }
        let r = s.snapshot_at(t0 + ms(13_000), 0);
        assert!(r.rates.window_ms >= RATE_WINDOW.as_millis() as u64 && r.rates.window_ms <= 5_500);
        assert_eq!(r.rates.frames_per_s, 0.0);
        // A burst after a long quiet with no snapshots: averaged since the last snapshot.
        s.shipped(3_000, 0);
        let r = s.snapshot_at(t0 + ms(43_000), 0);
        assert_eq!(r.rates.window_ms, 30_000);
        assert!((r.rates.frames_per_s - 100.0).abs() < 1e-6);
        assert!(s.data().rates.len() <= RATE_SAMPLES);
    }

    #[test]
    fn peers_heartbeats_events_and_counters() {
        let s = Status::new("misc");
        s.set_epoch(3, 0xabc);
        s.set_peer(Some("10.0.0.2:7480".into()), true);
        s.set_peer(Some("10.0.0.2:7480".into()), true);
        s.heartbeat_from("witness");
        s.heartbeat_from("primary");
        s.resync();
        s.resync();
        s.event(&"x".repeat(5_000));
        s.event("standby 10.0.0.2 authenticated");
        let r = s.snapshot();
        assert_eq!((r.epoch, r.history.as_str()), (3, "0000000000000abc"));
        assert_eq!((r.peer.as_deref(), r.connected, r.connections), (Some("10.0.0.2:7480"), true, 1));
        assert!(r.connected_since_unix_ms.is_some());
        assert_eq!(r.last_heartbeat_unix_ms.keys().collect::<Vec<_>>(), ["primary", "witness"]);
        assert_eq!(r.resyncs, 2);
        assert_eq!(r.last_event.as_ref().unwrap().text, "standby 10.0.0.2 authenticated");
        assert_eq!(r.pid, std::process::id());
        s.set_peer(Some("10.0.0.3:7480".into()), true); // a new standby supersedes the old
        assert_eq!(s.snapshot().connections, 2);
        s.set_peer(None, false);
        let r = s.snapshot();
        assert_eq!((r.peer, r.connected, r.connected_since_unix_ms), (None, false, None));
        s.set_role(&"r".repeat(100));
        s.acked(1);
        s.set_role(&"r".repeat(100)); // the same (truncated) role: the lag is kept
        assert_eq!(s.snapshot().acked, Some(1));
        for i in 0..100 {
            s.heartbeat_from(&format!("role{i}"));
        }
        assert_eq!(s.snapshot().last_heartbeat_unix_ms.len(), MAX_ROLES);
        assert_eq!(truncated("héllo", 2), "h");
    }

    #[test]
    fn a_report_round_trips_and_missing_fields_default() {
        let s = Status::new("json");
        s.set_role("standby");
        s.event("hello");
        let r = s.snapshot();
        let back: StatusReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let old: StatusReport = serde_json::from_str(r#"{"role":"primary","pid":7}"#).unwrap();
        assert_eq!((old.role.as_str(), old.pid, old.resyncs), ("primary", 7, 0));
    }

    #[test]
    fn status_paths_stay_in_their_directory() {
        let uid = my_uid().unwrap();
        assert!(
            status_path("sessions").unwrap().ends_with(format!("gardenstate+status.{uid}/sessions.json"))
        );
        for bad in ["", ".", "..", "a/b", "../x", "a b", &"x".repeat(201)] {
            assert!(status_path(bad).is_err(), "{bad:?}");
        }
        // The directory's name is not a possible segment name.
        assert!(status_path(STATUS_DIR).is_err());
    }

    #[test]
    fn the_status_file_is_published_private_and_removed_with_its_guard() {
        let name = format!("gds-status-unit-{}", std::process::id());
        let s = Status::new(&name);
        s.set_role("primary");
        s.event("started");
        let guard = publish_forever(s.clone()).unwrap();
        let path = status_path(&name).unwrap();
        assert_eq!(guard.path(), path);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&status_dir()), 0o700);
        let DaemonState::Found { report, running, pid_alive, age_ms } = daemon_state(&name) else {
            panic!("no status file");
        };
        assert!(running && pid_alive && age_ms < 3_000);
        assert_eq!((report.role.as_str(), report.segment.as_str()), ("primary", name.as_str()));
        // Rewritten every 500 ms.
        s.set_role("fenced");
        std::thread::sleep(PUBLISH_EVERY * 3);
        let DaemonState::Found { report, .. } = daemon_state(&name) else { panic!("gone") };
        assert_eq!(report.role, "fenced");
        drop(guard);
        assert!(!path.exists(), "the guard removes the file");
        assert_eq!(daemon_state(&name), DaemonState::None);
        let leftovers: Vec<_> = std::fs::read_dir(status_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(&name))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn threads_report_concurrently() {
        let s = Status::new("threads");
        s.set_role("primary");
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for pos in 1..=20_000 {
                    s.head_at(pos);
                    s.shipped(1, 10);
                }
                done.store(true, Ordering::Release);
            });
            scope.spawn(|| {
                for pos in 1..=20_000 {
                    s.acked(pos / 2);
                }
            });
            scope.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    let r = s.snapshot();
                    assert!(r.acked.unwrap_or(0) <= 20_000);
                }
            });
        });
        s.acked(20_000);
        let r = s.snapshot();
        assert_eq!((r.shipped_frames, r.shipped_bytes), (20_000, 200_000));
        assert_eq!((r.lag_entries, r.lag_ms), (Some(0), Some(0)));
        assert!(s.data().unacked.is_empty());
    }
}
