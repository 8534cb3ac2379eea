//! `gardenstate standby`: keeps a local segment a copy of the primary's.
//!
//! It connects to the primary, authenticates (`auth`: nothing is created, changed or sent
//! before both sides have proved they hold the key), reads the primary's Hello, then opens its
//! segment, creating it with the primary's shape if it does not exist. The segment is put in
//! `WriteMode::Replica` (local workers may read it; their writes fail with `ReadOnly`) and
//! adopts the primary's history id and epoch. It refuses to overwrite (and exits) a segment
//! whose epoch is above the primary's (it was promoted since it last followed: a newer
//! history), and a replica of another history than the primary's (the primary's segment was
//! recreated, e.g. by a reboot: following it would replace the sessions with its emptiness).
//!
//! Frames are applied as they arrive with `Store::apply_replicated` and
//! `apply_replicated_delete`. A snapshot (SnapshotBegin .. SnapshotEnd) carries every live
//! entry of the primary; the keys it carried are remembered, and at SnapshotEnd every local
//! key it did not carry is deleted, so a resync converges to exactly the primary's content.
//! The standby acknowledges the feed position it has applied (an `Ack`) whenever it has
//! drained what the socket had, and at least every 10 ms while frames keep coming, and every
//! second when idle (a keepalive for the primary's timeout).
//!
//! Any error (a frame that fails to decode, a connection that drops, a primary silent for
//! [`PEER_TIMEOUT`], an entry the segment cannot hold) closes the connection with a logged
//! reason; the standby reconnects with backoff (100 ms doubling to 5 s, back to 100 ms after a
//! session that caught up with the primary) and resyncs. It stops
//! when its segment becomes writable (`gardenstate promote`). Operators should stop the
//! daemon first and then promote.

use crate::commands::cli::StandbyArgs;
use crate::commands::exit::{CmdResult, Failure};
use crate::failover::node::{self, Next, Node};
use crate::operations::config::{DaemonKind, RoleFlags, Source};
use crate::operations::log;
use crate::replication::apply::Applier;
use crate::replication::auth::{self, AuthError};
use crate::replication::frame::{
    self, HANDSHAKE_MAX_PAYLOAD, Hello, Message, PROTOCOL_VERSION, Role, Shape, payload_limit,
};
use crate::replication::primary::PEER_TIMEOUT;
use crate::replication::transport::{self, Conn};
use gardenstate::{Store, WriteMode};
use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const ACK_EVERY: Duration = Duration::from_millis(10);
const KEEPALIVE_EVERY: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How a session ended without an error.
enum End {
    /// The segment became writable: a promotion; the daemon exits.
    Promoted,
}

/// Why a session ended with an error.
enum SessionError {
    /// Worth retrying (the network, the primary, a frame error).
    Retry(String),
    /// The daemon must stop (the segment holds a newer history).
    Fatal(String),
}

fn retry(e: impl std::fmt::Display) -> SessionError {
    SessionError::Retry(e.to_string())
}

pub fn run(a: StandbyArgs) -> CmdResult {
    let source = Source {
        kind: DaemonKind::Standby,
        role: RoleFlags { segment: a.segment, connect: a.connect, ..RoleFlags::default() },
        args: a.daemon,
    };
    let cfg = source.resolve().map_err(Failure::error)?;
    node::run(source, cfg)
}

/// What the session and the failover watchdog share.
#[derive(Default)]
struct Link {
    /// Milliseconds after the node started when a frame last arrived (0: never).
    last_frame_ms: AtomicU64,
    /// The position applied so far in this role (0: none yet): a reconnect offers it to the
    /// primary, which resumes from its backlog if it still can (`backlog`).
    applied: AtomicU64,
    /// The history this daemon adopted from the primary in this role (0: none yet). A replica
    /// left incomplete (history 0) by a snapshot this daemon was loading from that same
    /// history resyncs; it is not taken for a replica of another history.
    history: AtomicU64,
    /// Whether the current session caught up with the primary (applied a whole snapshot, or a
    /// Heartbeat outside one): such a session made progress, and the next reconnect after it
    /// waits the shortest backoff.
    caught_up: AtomicBool,
    /// The current connection, so the watchdog can end it after promoting.
    conn: Mutex<Option<TcpStream>>,
    /// Set by the watchdog when it promoted the segment: ends a reconnect backoff at once.
    promoted: AtomicBool,
    stop: AtomicBool,
}

impl Link {
    fn frame_arrived(&self, node: &Node) {
        let ms = node.started.elapsed().as_millis().max(1) as u64;
        self.last_frame_ms.store(ms, Ordering::Release);
    }
}

/// The standby role: follows the primary at `addr` until the segment is promoted (then the
/// node becomes a primary if it has a `--listen` address, else the daemon exits).
pub fn follow(node: &Node, addr: &str, planned: bool) -> Result<Next, Failure> {
    let name = &node.cfg.segment;
    log::info(&format!(
        "standby: segment {name} following the primary at {addr}{}",
        if planned { " (after a planned switchover)" } else { "" }
    ));
    node.status.set_role("standby");
    let link = Link::default();
    std::thread::scope(|s| {
        s.spawn(|| watchdog(node, &link));
        let r = reconnect(node, addr, &link);
        link.stop.store(true, Ordering::Release);
        r
    })?;
    Ok(if node.cfg.listen.is_some() {
        log::info(&format!("segment {name} is writable now (promoted): serving as the primary"));
        Next::Primary
    } else {
        log::info(&format!(
            "segment {name} is writable now (promoted): standby exits (no --listen to serve on)"
        ));
        Next::Exit
    })
}

/// F1 (`node`), once per heartbeat: announces this standby and promotes it when the rule says.
fn watchdog(node: &Node, link: &Link) {
    let since = Instant::now();
    let mut store = None;
    while !link.stop.load(Ordering::Acquire) {
        std::thread::sleep(node.cfg.heartbeat);
        if store.is_none() {
            store = Store::attach(&node.cfg.segment).ok();
        }
        let Some(st) = &store else { continue };
        let ms = link.last_frame_ms.load(Ordering::Acquire);
        let last = (ms > 0).then(|| node.started + Duration::from_millis(ms));
        if node::failover_round(node, st, last, since) {
            link.promoted.store(true, Ordering::Release);
            if let Some(c) = lock(&link.conn).take() {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Connects, follows, reconnects with backoff; returns once the segment is writable.
///
/// The backoff (100 ms doubling to 5 s) is for a primary that refuses or fails us: a connect
/// that fails, a handshake or session that ends before the standby caught up. A session that
/// caught up with the primary (`Link::caught_up`) or lasted over 10 s resets it: a link that
/// breaks again and again between good sessions must not leave a healed link idle for up to
/// 5 s (a test saw the wait reach 1.6 s after four short sessions, and 5 s after six).
fn reconnect(node: &Node, addr: &str, link: &Link) -> Result<(), Failure> {
    let name = &node.cfg.segment;
    let mut backoff = BACKOFF_MIN;
    let mut followed = false;
    let promoted =
        |followed: bool| followed && Store::attach(name).is_ok_and(|s| s.write_mode() == WriteMode::Writable);
    loop {
        // Promoted while the primary was unreachable (by the watchdog or by hand).
        if promoted(followed) {
            return Ok(());
        }
        let started = Instant::now();
        link.caught_up.store(false, Ordering::Release);
        let why = match connect_unless_promoted(addr, link) {
            None => return Ok(()),
            Some(Err(e)) => format!("cannot connect to {addr}: {e}"),
            Some(Ok(conn)) => {
                if let Ok(c) = conn.try_clone() {
                    *lock(&link.conn) = Some(c);
                }
                let r = session(conn, node, addr, link, &mut followed);
                lock(&link.conn).take();
                node.status.set_peer(Some(addr.to_string()), false);
                match r {
                    Ok(End::Promoted) => return Ok(()),
                    Err(SessionError::Fatal(e)) => {
                        log::error(&e);
                        return Err(Failure::error(e));
                    }
                    Err(SessionError::Retry(e)) => format!("connection to {addr} closed: {e}"),
                }
            }
        };
        if promoted(followed) {
            return Ok(());
        }
        if link.caught_up.load(Ordering::Acquire) || started.elapsed() > Duration::from_secs(10) {
            backoff = BACKOFF_MIN;
        }
        log::warn(&format!("{why}; reconnecting in {backoff:?}"));
        // A promotion by the watchdog ends the wait: the node serves as the primary at once
        // rather than up to 5 s later.
        let until = Instant::now() + backoff;
        while !link.promoted.load(Ordering::Acquire) {
            let Some(left) = until.checked_duration_since(Instant::now()) else { break };
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Connects to `addr`, unless the watchdog promotes the segment first (`None`). A connect
/// into a black hole (the primary's host gone mid-handshake) blocks for the kernel's SYN
/// retries, minutes, and must not keep a promoted node from serving: the connect runs on
/// a thread of its own, a promotion returns at once, and that thread drops its late
/// connection when it ends.
fn connect_unless_promoted(addr: &str, link: &Link) -> Option<std::io::Result<TcpStream>> {
    let (tx, rx) = mpsc::channel();
    let to = addr.to_string();
    let spawned = std::thread::Builder::new().name("connect".into()).spawn(move || {
        let _ = tx.send(TcpStream::connect(to));
    });
    if let Err(e) = spawned {
        return Some(Err(e));
    }
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(r) => return Some(r),
            Err(RecvTimeoutError::Timeout) if link.promoted.load(Ordering::Acquire) => return None,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Some(Err(std::io::Error::other("the connect thread ended without an answer")));
            }
        }
    }
}

/// Attaches to the segment, or creates it with the primary's shape.
/// The segment's write mode is this daemon's from then on: workers read it, cannot set it.
fn open_segment(name: &str, shape: &Shape) -> Result<Store, SessionError> {
    let owned = |s: Store| {
        s.own_write_mode()
            .map(|()| s)
            .map_err(|e| SessionError::Fatal(format!("segment {name}: taking its write mode: {e}")))
    };
    match Store::attach(name) {
        Ok(s) => owned(s),
        Err(e) if crate::commands::attach::is_missing(&e) => {
            let s = Store::create(name, &shape.options()).map_err(|e| {
                SessionError::Fatal(format!("creating segment {name} like the primary's: {e}"))
            })?;
            log::info(&format!("created segment {name} with the primary's shape"));
            owned(s)
        }
        Err(e) => Err(SessionError::Fatal(format!("segment {name}: {e}"))),
    }
}

fn session(
    tcp: TcpStream,
    node: &Node,
    addr: &str,
    link: &Link,
    followed: &mut bool,
) -> Result<End, SessionError> {
    let name = &node.cfg.segment;
    tcp.set_nodelay(true).map_err(retry)?;
    // TLS (or plain TCP): the primary's certificate is checked before anything is sent.
    let mut conn = transport::client(tcp, addr, node.cfg.tls.as_ref(), PEER_TIMEOUT).map_err(retry)?;
    conn.set_read_timeout(Some(PEER_TIMEOUT)).map_err(retry)?;
    conn.set_write_timeout(Some(PEER_TIMEOUT)).map_err(retry)?;
    match auth::standby_handshake(&mut conn, &node.cfg.key) {
        Ok(keys) => conn.seal(keys),
        Err(e @ AuthError::WrongKey) => {
            log::error(&format!("primary {addr} failed authentication: {e}"));
            return Err(retry("authentication failed"));
        }
        Err(e) => return Err(retry(e)),
    }
    // The standby's own view, for the primary's log.
    let local = Store::attach(name).ok();
    let mine = Message::Hello(Hello {
        proto: PROTOCOL_VERSION as u16,
        role: Role::Standby,
        history: local.as_ref().map_or(0, |s| s.history_id()),
        epoch: local.as_ref().map_or(0, |s| s.epoch()),
        // Where to resume: only a complete replica (history known) may.
        feed_head: match &local {
            Some(s) if s.history_id() != 0 && s.write_mode() == WriteMode::Replica => {
                link.applied.load(Ordering::Acquire)
            }
            _ => 0,
        },
        shape: Shape::default(),
    });
    drop(local);
    conn.write_all(&frame::encode(&mine)).map_err(retry)?;
    let hello = match frame::read_frame(&mut conn, HANDSHAKE_MAX_PAYLOAD, &mut Vec::new()) {
        Ok(Message::Hello(h)) if h.role == Role::Primary => h,
        Ok(m) => return Err(retry(format!("expected the primary's Hello, got {}", m.name()))),
        Err(e) => return Err(retry(e)),
    };
    let store = open_segment(name, &hello.shape)?;
    if *followed && store.write_mode() == WriteMode::Writable {
        return Ok(End::Promoted); // promoted between the connect and now
    }
    if store.epoch() > hello.epoch {
        return Err(SessionError::Fatal(format!(
            "segment {} has epoch {} but the primary at {} has epoch {}: this segment was promoted and \
             holds a newer history; refusing to overwrite it",
            name,
            store.epoch(),
            addr,
            hello.epoch
        )));
    }
    // A snapshot this daemon was loading from this very history left the replica incomplete
    // (history 0): it resyncs. Anything else of another history is refused.
    let ours = store.history_id() == 0
        && hello.history != 0
        && link.history.load(Ordering::Acquire) == hello.history;
    if store.write_mode() == WriteMode::Replica && store.history_id() != hello.history && !ours {
        if store.history_id() == 0 {
            return Err(SessionError::Fatal(format!(
                "segment {name} is an incomplete replica (a snapshot was interrupted, history unknown to \
                 this daemon), and the primary at {addr} holds history {:016x}: refusing to overwrite \
                 it, as it may hold sessions of another history; destroy segment {name} to start over \
                 from the primary, or `promote --force` it",
                hello.history
            )));
        }
        return Err(SessionError::Fatal(format!(
            "the primary at {} holds history {:016x}, but segment {} is a replica of history {:016x}: \
             the primary's segment was recreated (a reboot empties shared memory) and following it \
             would replace this replica's sessions; promote this standby and make the old primary \
             follow it, or destroy segment {} to start over from the primary",
            addr,
            hello.history,
            name,
            store.history_id(),
            name
        )));
    }
    // Anything but a complete replica of this history is incomplete (history 0) until the
    // snapshot the primary now sends ends (the `Applier` then records the history), so F1
    // never counts it as a replica. History first, then the mode: `synced` needs both. (A
    // fresh segment used to take the primary's history here and count as synced until the
    // snapshot began.)
    if store.write_mode() != WriteMode::Replica || store.history_id() != hello.history {
        store.set_history_id(0);
    }
    store.set_write_mode(WriteMode::Replica);
    store.raise_epoch(hello.epoch);
    link.history.store(hello.history, Ordering::Release);
    *followed = true;
    node.status.set_peer(Some(addr.to_string()), true);
    node.status.set_epoch(store.epoch(), hello.history);
    log::info(&format!(
        "authenticated with primary {} (history {:016x}, epoch {}); segment {} is a replica",
        addr, hello.history, hello.epoch, name
    ));
    let limit = payload_limit(hello.shape.max_key as u64, hello.shape.max_value);
    apply_stream(conn, &store, limit, node, link, hello.history)
}

fn apply_stream(
    conn: Conn,
    store: &Store,
    limit: u32,
    node: &Node,
    link: &Link,
    history: u64,
) -> Result<End, SessionError> {
    let name = &node.cfg.segment;
    let mut acks = conn.try_clone().map_err(retry)?;
    let mut reader = BufReader::with_capacity(256 << 10, conn);
    let mut buf = Vec::new();
    let mut applier = Applier::new(store, name, history, link.applied.load(Ordering::Acquire));
    let (mut acked, mut last_ack) = (0u64, Instant::now());
    loop {
        if store.write_mode() == WriteMode::Writable {
            return Ok(End::Promoted);
        }
        let m = frame::read_frame(&mut reader, limit, &mut buf).map_err(retry)?;
        link.frame_arrived(node);
        match &m {
            Message::Promote { pos, epoch } => {
                let refuse = if applier.in_snapshot() {
                    Some("a snapshot is in progress".to_string())
                } else if applier.applied() < *pos {
                    Some(format!("applied up to {}, not {pos}", applier.applied()))
                } else if node.cfg.listen.is_none() {
                    Some("this standby has no --listen address to serve on".to_string())
                } else {
                    None
                };
                let done = match &refuse {
                    Some(why) => Message::Done { ok: false, text: why.clone() },
                    None => {
                        let e = store.raise_epoch(*epoch);
                        node::announce_primary(node, store);
                        store.set_write_mode(WriteMode::Writable);
                        log::info(&format!("switchover: promoted at position {pos} to epoch {e}"));
                        Message::Done { ok: true, text: format!("promoted at position {pos}, epoch {e}") }
                    }
                };
                acks.write_all(&frame::encode(&done)).map_err(retry)?;
                if refuse.is_none() {
                    return Ok(End::Promoted);
                }
                continue;
            }
            Message::Entry(e) => node.status.applied(1, (e.key.len() + e.value.len()) as u64),
            _ => {}
        }
        let heartbeat = matches!(m, Message::Heartbeat { .. }).then(|| m.clone());
        let sync_point = matches!(m, Message::Heartbeat { .. } | Message::SnapshotEnd { .. });
        applier.apply(m).map_err(retry)?;
        if sync_point && !applier.in_snapshot() {
            link.caught_up.store(true, Ordering::Release);
        }
        let applied = applier.applied();
        link.applied.store(if applier.in_snapshot() { 0 } else { applied }, Ordering::Release);
        if let Some(Message::Heartbeat { pos }) = heartbeat {
            // Everything before `pos` was sent; what is still in the socket is the lag.
            node.status.standby_lag(pos.saturating_sub(applied));
            node.status.head_at(pos);
            node.status.acked(applied);
        }
        let drained = reader.buffer().is_empty();
        let due = (applied > acked && (drained || last_ack.elapsed() >= ACK_EVERY))
            || last_ack.elapsed() >= KEEPALIVE_EVERY;
        if due {
            acks.write_all(&frame::encode(&Message::Ack { pos: applied })).map_err(retry)?;
            acked = applied;
            last_ack = Instant::now();
        }
    }
}
