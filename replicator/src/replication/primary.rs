//! `gardenstate primary`: serves the segment's changes to one standby at a time.
//!
//! The main thread accepts TCP connections; each gets a thread that authenticates it
//! (`auth`), exchanges Hellos (the primary's carries the segment's shape, history id and
//! epoch), then streams: a snapshot (or, to a standby that can resume, the frames it lacks
//! from the `backlog`), then the change feed (`follow`), batched in a buffered
//! writer that is flushed, with a Heartbeat carrying the cursor, whenever the feed is empty
//! (and at least every 5 ms under continuous load). A second thread per connection reads the
//! standby's Acks and records them with `Store::acknowledge_replicated`, which is what
//! `Store::wait_replicated` waits for.
//!
//! One standby at a time: a newly authenticated standby supersedes the current one (whose
//! session ends at its next step) only once the current one has been silent for
//! [`STANDBY_LIVE`], so a standby that reconnects after a network cut waits at most that
//! long for the old, dead connection, while a second standby started beside a live one is
//! refused (two standbys superseding each other, then both promoting, was a split brain).
//! A standby that restarts closes its old connection, which frees the place at once. A connection that fails authentication,
//! sends garbage, or stays silent for [`PEER_TIMEOUT`] is closed and logged, and nothing is
//! sent to it but the handshake. Connections not yet authenticated are bounded
//! (`operations::admission`: [`MAX_CONNECTIONS`] threads and fds in all, [`MAX_UNPROVEN_PER_SOURCE`]
//! waiting per source address, a newcomer evicting the oldest waiting one), so a flood of
//! them cannot exhaust threads or fds and lock out a restarting standby, and the log lines
//! they cause are throttled ([`LOG_LINES_PER_SECOND`], with a count of those suppressed).
//!
//! With a witness, the node's guard (`node::Guard`, once per heartbeat) fences the segment
//! when the primary is cut off and hands the node over to a newer primary (F2, F3 in
//! `node`). A connection whose Hello says `Control` is an operator's `gardenstate
//! switchover`: see the `switchover` function.

use crate::commands::cli::PrimaryArgs;
use crate::commands::exit::{CmdResult, Failure};
use crate::commands::render::takes_writes;
use crate::failover::heartbeat::{FRESH, NodeRole};
use crate::failover::node::{self, Guard, Next, Node, Verdict};
use crate::operations::admission::{Admission, Throttle, Ticket};
use crate::operations::config::{DaemonKind, RoleFlags, Source};
use crate::operations::log;
use crate::operations::status::Status;
use crate::replication::auth;
use crate::replication::backlog::Backlog;
use crate::replication::follow::{Follower, Poll};
use crate::replication::frame::{
    self, EntryFrame, HANDSHAKE_MAX_PAYLOAD, Hello, Message, PROTOCOL_VERSION, Role, Shape,
};
use crate::replication::transport::{self, Conn};
use gardenstate::{Store, WriteMode};
use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A peer silent for this long (no frame, no ack) is considered gone.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once (standbys, switchover requests, and those still
/// authenticating).
pub const MAX_CONNECTIONS: usize = 32;
/// Connections from one source address still authenticating at once.
pub const MAX_UNPROVEN_PER_SOURCE: usize = 4;
/// Log lines a second about refused or failed connections.
pub const LOG_LINES_PER_SECOND: u32 = 5;
/// A standby connection that sent a frame within this long keeps its place: another
/// standby is refused meanwhile (a standby acknowledges at least every second).
pub const STANDBY_LIVE: Duration = Duration::from_secs(3);
/// Longest time between flushes under continuous load.
const FLUSH_EVERY: Duration = Duration::from_millis(5);
/// A Heartbeat is sent at least this often when there is nothing to ship.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(100);
/// How often the lag is logged while the standby is behind.
const LAG_LOG_EVERY: Duration = Duration::from_secs(10);
/// A switchover gives up (and resumes writes here) after this long.
const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest control frame (a switchover's Done line).
const CONTROL_MAX_PAYLOAD: u32 = 4096;

pub fn run(a: PrimaryArgs) -> CmdResult {
    let source = Source {
        kind: DaemonKind::Primary,
        role: RoleFlags { segment: a.segment, ..RoleFlags::default() },
        args: a.daemon,
    };
    let cfg = source.resolve().map_err(Failure::error)?;
    node::run(source, cfg)
}

/// Where a planned switchover stands (shared by the control connection, the stream and the
/// ack reader of the current standby connection).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Switch {
    Idle,
    /// Writes are drained: ship everything before `head`, then Promote with `epoch`.
    Requested {
        head: u64,
        epoch: u64,
    },
    Sent,
    Done {
        ok: bool,
        text: String,
    },
}

/// What the threads serving one primary role share.
struct Shared {
    store: Store,
    /// The generation of the newest standby connection; a stream whose generation is not
    /// this one stops. `u64::MAX`: the role is ending.
    current: AtomicU64,
    /// The generation of the newest connection that reached streaming (a switchover needs it
    /// to be `current`).
    streaming: AtomicU64,
    /// Milliseconds after the node started when the standby last sent a frame (0: never).
    last_ack_ms: AtomicU64,
    switch: Mutex<Switch>,
    next: Mutex<Option<Next>>,
    /// Every open connection (by a number of its own), to shut them all when the role ends;
    /// a connection removes itself when it ends, so a flapping link leaks no sockets.
    conns: Mutex<HashMap<u64, TcpStream>>,
    /// Bounds the connections that have not authenticated yet.
    admission: Arc<Admission>,
    /// Bounds the log lines about refused or failed connections.
    throttle: Throttle,
    /// The current standby connection and its generation (shut down when a newer one
    /// supersedes it; cleared when it ends).
    standby_conn: Mutex<Option<(u64, Conn)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The primary role: serves standbys (and switchover requests) until the node must take
/// another role. `cold`: the daemon started as a primary (rather than being promoted).
pub fn serve(node: &Node, cold: bool) -> Result<Next, Failure> {
    let cfg = &node.cfg;
    let store = node::segment(node)?;
    // The write mode is this daemon's from now on: workers read it and cannot set it.
    store.own_write_mode().map_err(Failure::error)?;
    let mode = store.write_mode();
    let fenced_ok = node.has_witness() && mode == WriteMode::Fenced;
    if mode != WriteMode::Writable && !fenced_ok {
        return Err(Failure::error(format!(
            "segment {:?} is {:?}, not writable: a standby or fenced segment cannot be a primary \
             (promote it first with `gardenstate promote --segment {}`)",
            cfg.segment, mode, cfg.segment
        )));
    }
    let listen = cfg.listen.as_deref().ok_or_else(|| Failure::error("a primary needs --listen"))?;
    let listener =
        TcpListener::bind(listen).map_err(|e| Failure::error(format!("cannot listen on {listen}: {e}")))?;
    listener.set_nonblocking(true).map_err(Failure::error)?;
    let addr = listener.local_addr().map_err(Failure::error)?;
    log::info(&format!(
        "primary: serving segment {} on {addr} (history {:016x}, epoch {})",
        cfg.segment,
        store.history_id(),
        store.epoch()
    ));
    let shared = Shared {
        store,
        current: AtomicU64::new(0),
        streaming: AtomicU64::new(0),
        last_ack_ms: AtomicU64::new(0),
        switch: Mutex::new(Switch::Idle),
        next: Mutex::new(None),
        conns: Mutex::new(HashMap::new()),
        standby_conn: Mutex::new(None),
        admission: Admission::new(MAX_CONNECTIONS, MAX_UNPROVEN_PER_SOURCE),
        throttle: Throttle::new(LOG_LINES_PER_SECOND),
    };
    let parked = Mutex::new(Parked::Empty);
    let mut guard = Guard::start(node, &shared.store, cold);
    // After the guard's start, which fences a cold primary with a witness: the role said
    // (and told to the notify hook) is the segment's.
    node.status.set_epoch(shared.store.epoch(), shared.store.history_id());
    node.status.set_role(if takes_writes(&shared.store) { "primary" } else { "fenced" });
    node.status.acked(shared.store.replicated_upto());
    let mut last_round = Instant::now() - cfg.heartbeat;
    let mut accepted = 0u64;
    let next = std::thread::scope(|s| {
        let next = loop {
            if let Some(n) = lock(&shared.next).take() {
                break n;
            }
            if last_round.elapsed() >= cfg.heartbeat {
                last_round = Instant::now();
                let ms = shared.last_ack_ms.load(Ordering::Acquire);
                let last_ack = (ms > 0).then(|| node.started + Duration::from_millis(ms));
                if let Verdict::Follow(addr) = guard.round(node, &shared.store, last_ack) {
                    break Next::Follow { addr, planned: false };
                }
            }
            match listener.accept() {
                Ok((conn, from)) => {
                    let Some(ticket) = shared.admission.admit(&conn) else {
                        shared.throttle.warn(&format!(
                            "refused connection from {from}: {MAX_CONNECTIONS} connections are being served"
                        ));
                        continue;
                    };
                    accepted += 1;
                    let id = accepted;
                    if let Ok(c) = conn.try_clone() {
                        lock(&shared.conns).insert(id, c);
                    }
                    let (shared, parked) = (&shared, &parked);
                    s.spawn(move || {
                        let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
                        if let Err(e) = connection(conn, &ticket, node, shared, parked, &peer) {
                            log::warn(&format!("standby {peer}: connection closed: {e}"));
                        }
                        drop(ticket);
                        lock(&shared.conns).remove(&id);
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    shared.throttle.warn(&format!("accept failed: {e}"));
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        // End the role: every stream stops at its next step, every socket is shut.
        shared.current.store(u64::MAX, Ordering::Release);
        for (_, c) in lock(&shared.conns).drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
        next
    });
    Ok(next)
}

fn shape_of(store: &Store) -> Shape {
    Shape::of(&store.info().options())
}

fn connection<'s>(
    tcp: TcpStream,
    ticket: &Ticket,
    node: &Node,
    shared: &'s Shared,
    parked: &Mutex<Parked<'s>>,
    peer: &str,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let store = &shared.store;
    tcp.set_nonblocking(false).map_err(io)?;
    tcp.set_nodelay(true).map_err(io)?;
    // TLS (or plain TCP), refusing a peer that speaks the other way: before any data.
    let mut conn = match transport::server(tcp, node.cfg.tls.as_ref(), PEER_TIMEOUT) {
        Ok(c) => c,
        Err(e) => {
            shared.throttle.warn(&format!("refused connection from {peer} before any data: {e}"));
            return Ok(());
        }
    };
    conn.set_read_timeout(Some(PEER_TIMEOUT)).map_err(io)?;
    conn.set_write_timeout(Some(PEER_TIMEOUT)).map_err(io)?;
    match auth::primary_handshake(&mut conn, &node.cfg.key) {
        Ok(keys) => {
            conn.seal(keys);
            ticket.proven();
        }
        Err(e) => {
            shared.throttle.warn(&format!("refused connection from {peer} before any data: {e}"));
            return Ok(());
        }
    }
    let hello = Message::Hello(Hello {
        proto: PROTOCOL_VERSION as u16,
        role: Role::Primary,
        history: store.history_id(),
        epoch: store.epoch(),
        feed_head: store.feed_head(),
        shape: shape_of(store),
    });
    conn.write_all(&frame::encode(&hello)).map_err(io)?;
    let theirs = match frame::read_frame(&mut conn, HANDSHAKE_MAX_PAYLOAD, &mut Vec::new()) {
        Ok(Message::Hello(h)) if h.role != Role::Primary => h,
        Ok(m) => return Err(format!("expected the standby's Hello, got {}", m.name())),
        Err(e) => return Err(e.to_string()),
    };
    if theirs.role == Role::Control {
        let mut next = None;
        let (ok, text) = switchover(node, shared, &mut next);
        log::info(&format!("switchover requested by {peer}: {text}"));
        // The outcome is on the wire (`flush`: through the TLS pump too) before the role
        // ends, which shuts every connection down.
        let sent = conn.write_all(&frame::encode(&Message::Done { ok, text })).and_then(|_| conn.flush());
        if next.is_some() {
            *lock(&shared.next) = next;
        }
        return sent.map_err(io);
    }
    let generation = {
        let mut current = lock(&shared.standby_conn);
        let ms = shared.last_ack_ms.load(Ordering::Acquire);
        let acked_ago = node.started.elapsed().saturating_sub(Duration::from_millis(ms));
        if current.is_some() && acked_ago < STANDBY_LIVE {
            return Err(format!(
                "refused: another standby is connected and answered {} ms ago; one standby at a time (a \
                 second one would supersede it back and forth, and both could promote themselves); it \
                 may connect once the current one has been silent for {STANDBY_LIVE:?}",
                acked_ago.as_millis()
            ));
        }
        let generation = shared.current.fetch_add(1, Ordering::AcqRel) + 1;
        if generation == u64::MAX {
            return Err("the primary role is ending".into());
        }
        // The superseded connection's stream stops now rather than at its next write timeout,
        // and parks the follower this one may resume from.
        if let Some((_, old)) = current.replace((generation, conn.try_clone().map_err(io)?)) {
            let _ = old.shutdown(Shutdown::Both);
        }
        generation
    };
    // A standby of this very history and epoch says where it is; it may resume there.
    let from =
        (theirs.history == store.history_id() && theirs.epoch == store.epoch() && theirs.feed_head > 0)
            .then_some(theirs.feed_head);
    // Whether it does resume is logged by `stream`, once the backlog has been looked at.
    let plan = match from {
        Some(p) => format!("it asks to resume at position {p}"),
        None => "sending a snapshot".to_string(),
    };
    log::info(&format!(
        "standby {peer} authenticated (its history {:016x}, epoch {}); {plan}",
        theirs.history, theirs.epoch
    ));
    node.status.set_peer(Some(peer.to_string()), true);
    let acks = conn.try_clone().map_err(io)?;
    std::thread::scope(|s| {
        let reader = s.spawn(|| read_acks(acks, node, shared));
        let streamed = stream(&conn, node, shared, parked, generation, peer, from);
        let _ = conn.shutdown(Shutdown::Both);
        let acked = reader.join().unwrap_or_else(|_| Err("ack reader panicked".into()));
        if shared.current.load(Ordering::Acquire) == generation {
            node.status.set_peer(Some(peer.to_string()), false);
        }
        let mut current = lock(&shared.standby_conn);
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
        streamed.and(acked)
    })
}

/// A planned switchover, run for an operator's `gardenstate switchover`: fence, drain the
/// writers (`Store::drain_writers`, so the feed head covers every write that will ever be
/// acknowledged here), let the current standby connection ship everything before the head
/// and then a Promote, wait for the standby's Done and for its first heartbeat as a primary,
/// then hand this node over to it (`next`, set once the operator has the outcome). Writes
/// are refused from the fence until the new primary is writable: that pause is measured (an
/// upper bound: it ends when we hear of it). Any failure before the standby promoted itself
/// gives the writes back here.
fn switchover(node: &Node, shared: &Shared, next: &mut Option<Next>) -> (bool, String) {
    let store = &shared.store;
    let t0 = Instant::now();
    if store.write_mode() != WriteMode::Writable {
        return (false, format!("refused: the segment is {:?}, not writable", store.write_mode()));
    }
    if shared.streaming.load(Ordering::Acquire) != shared.current.load(Ordering::Acquire) {
        return (false, "refused: no standby is connected and streaming".into());
    }
    if *lock(&shared.switch) != Switch::Idle {
        return (false, "refused: a switchover is already running".into());
    }
    store.set_write_mode(WriteMode::Fenced);
    let give_back = |why: String| {
        *lock(&shared.switch) = Switch::Idle;
        store.set_write_mode(WriteMode::Writable);
        (false, format!("{why}; writes resumed here after {} ms", t0.elapsed().as_millis()))
    };
    if !store.drain_writers(SWITCHOVER_TIMEOUT) {
        return give_back("a writer stayed inside a write (stopped process?)".into());
    }
    let head = store.feed_head();
    let epoch = store.epoch() + 1;
    *lock(&shared.switch) = Switch::Requested { head, epoch };
    let deadline = t0 + SWITCHOVER_TIMEOUT;
    let (ok, text) = loop {
        if let Switch::Done { ok, text } = lock(&shared.switch).clone() {
            break (ok, text);
        }
        if Instant::now() >= deadline {
            if *lock(&shared.switch) == Switch::Sent {
                // The standby may have promoted itself: giving writes back could make two
                // primaries. Stay fenced; the guard follows the new primary if there is one.
                return (
                    false,
                    "the standby did not confirm its promotion in time; this node stays fenced".into(),
                );
            }
            return give_back(format!("the standby did not catch up with position {head} in time"));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    if !ok {
        return give_back(format!("the standby refused: {text}"));
    }
    let paused = t0.elapsed();
    // Its heartbeat address is where it serves: follow it (our guard would, after
    // rejoin_after; a planned switchover does not wait).
    let seen = loop {
        let p = node.beacon.peers().into_iter().find(|p| {
            p.alive_within(FRESH)
                .is_some_and(|d| d.announce.role == NodeRole::Primary && d.announce.epoch >= epoch)
        });
        if let Some(p) = p {
            break Some(p.serve_addr().to_string());
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let Some(addr) = seen else {
        return (
            false,
            format!("the standby promoted itself ({text}) but sends no heartbeats; this node stays fenced"),
        );
    };
    *next = Some(Next::Follow { addr: addr.clone(), planned: true });
    (
        true,
        format!(
            "switchover complete: {addr} is the primary (epoch {epoch}), all {head} changes replicated; \
             writes paused {} ms; this node follows it",
            paused.as_millis()
        ),
    )
}

/// Reads the standby's Acks (and a switchover's Done) until the connection ends, then shuts
/// the connection down so the streaming side stops too.
fn read_acks(mut conn: Conn, node: &Node, shared: &Shared) -> Result<(), String> {
    let mut buf = Vec::new();
    let result = loop {
        let m = frame::read_frame(&mut conn, CONTROL_MAX_PAYLOAD, &mut buf);
        if m.is_ok() {
            let ms = node.started.elapsed().as_millis().max(1) as u64;
            shared.last_ack_ms.store(ms, Ordering::Release);
        }
        match m {
            Ok(Message::Ack { pos }) => {
                shared.store.acknowledge_replicated(pos);
                node.status.acked(pos);
            }
            Ok(Message::Done { ok, text }) => *lock(&shared.switch) = Switch::Done { ok, text },
            Ok(m) => break Err(format!("expected Ack from the standby, got {}", m.name())),
            Err(frame::FrameError::Closed) => break Err("the standby closed the connection".into()),
            Err(e) => break Err(format!("reading acks: {e}")),
        }
    };
    let _ = conn.shutdown(Shutdown::Both);
    result
}

/// The buffered frame writer of a connection; counts what it sends for the status.
struct Sink<'c> {
    out: BufWriter<&'c Conn>,
    scratch: Vec<u8>,
    last_flush: Instant,
    status: &'c Status,
    /// Entry and Delete frames are kept here when `record` is on (not during a snapshot).
    backlog: Backlog,
    record: bool,
}

impl Sink<'_> {
    fn send(&mut self, m: &Message) -> std::io::Result<()> {
        frame::write_frame(&mut self.out, m, &mut self.scratch)?;
        self.status.shipped(1, self.scratch.len() as u64);
        if self.record {
            if let Message::Entry(EntryFrame { pos, .. }) | Message::Delete { pos, .. } = m {
                self.backlog.push(*pos, &self.scratch);
            }
        }
        Ok(())
    }

    /// Sends a Heartbeat with the cursor (everything before it is sent) and flushes.
    fn flush(&mut self, cursor: u64) -> Result<(), String> {
        self.send(&Message::Heartbeat { pos: cursor })
            .and_then(|_| self.out.flush())
            .map_err(|e| format!("sending changes: {e}"))?;
        self.last_flush = Instant::now();
        Ok(())
    }
}

/// A standby connection's stream position, handed from one connection to the next so a
/// reconnecting standby can resume (`backlog`).
struct Resume<'s> {
    follower: Follower<'s>,
    backlog: Backlog,
}

/// Where the follower is between connections.
enum Parked<'s> {
    /// No stream has run yet, or the last one could not give its follower back.
    Empty,
    /// A stream holds it.
    Busy,
    Here(Resume<'s>),
}

/// Takes the parked follower, waiting (up to `wait`) for a superseded stream to give it back.
fn take_parked<'s>(parked: &Mutex<Parked<'s>>, wait: Duration) -> Option<Resume<'s>> {
    let deadline = Instant::now() + wait;
    loop {
        let mut p = lock(parked);
        match std::mem::replace(&mut *p, Parked::Busy) {
            Parked::Here(r) => return Some(r),
            Parked::Empty => return None,
            Parked::Busy if Instant::now() >= deadline => return None,
            Parked::Busy => {}
        }
        drop(p);
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Ships the standby what it lacks (from the backlog if it can resume at `from`, else a
/// snapshot) and then the feed, until the connection fails or is superseded; then parks the
/// follower for the next connection.
fn stream<'s>(
    conn: &Conn,
    node: &Node,
    shared: &'s Shared,
    parked: &Mutex<Parked<'s>>,
    generation: u64,
    peer: &str,
    from: Option<u64>,
) -> Result<(), String> {
    let store = &shared.store;
    let Resume { mut follower, backlog } = take_parked(parked, Duration::from_secs(2)).unwrap_or_else(|| {
        Resume { follower: Follower::new(store), backlog: Backlog::new(node.cfg.backlog) }
    });
    let mut sink = Sink {
        out: BufWriter::with_capacity(256 << 10, conn),
        scratch: Vec::new(),
        last_flush: Instant::now(),
        status: &node.status,
        backlog,
        record: false,
    };
    let r = (|| {
        let resumed = from.and_then(|p| {
            let frames = sink.backlog.since(p, follower.cursor())?;
            let mut n = 0u64;
            for f in frames {
                if let Err(e) = sink.out.write_all(f) {
                    return Some(Err(e));
                }
                n += 1;
            }
            Some(Ok((p, n)))
        });
        match resumed {
            Some(Ok((p, n))) => log::info(&format!(
                "standby {peer}: resumed at position {p}: {n} frames from the backlog, no snapshot"
            )),
            Some(Err(e)) => return Err(format!("sending the backlog: {e}")),
            None => {
                let started = Instant::now();
                let n = follower
                    .snapshot(&mut |m| sink.send(m))
                    .map_err(|e| format!("sending the snapshot: {e}"))?;
                sink.backlog.reset(follower.cursor());
                log::info(&format!(
                    "standby {peer}: snapshot of {n} entries sent in {:?}",
                    started.elapsed()
                ));
            }
        }
        sink.record = true;
        follow_feed(&mut sink, &mut follower, node, shared, generation, peer)
    })();
    *lock(parked) = Parked::Here(Resume { follower, backlog: sink.backlog });
    r
}

/// The stream after its start: the change feed, heartbeats, resyncs, a switchover's Promote.
fn follow_feed(
    sink: &mut Sink<'_>,
    follower: &mut Follower<'_>,
    node: &Node,
    shared: &Shared,
    generation: u64,
    peer: &str,
) -> Result<(), String> {
    let store = &shared.store;
    shared.streaming.store(generation, Ordering::Release);
    let mut last_lag_log = Instant::now();
    let mut dirty = true;
    let mut nap = Duration::from_micros(50);
    loop {
        if shared.current.load(Ordering::Acquire) != generation {
            return Err("superseded by a newer standby connection (or the role ended)".into());
        }
        match follower.poll(&mut |m| sink.send(m)).map_err(|e| format!("sending changes: {e}"))? {
            Poll::Progress => {
                dirty = true;
                nap = Duration::from_micros(50);
                if sink.last_flush.elapsed() >= FLUSH_EVERY {
                    sink.flush(follower.cursor())?;
                }
                continue;
            }
            Poll::Resync(why) => {
                log::warn(&format!("standby {peer}: resync: {why}"));
                node.status.resync();
                node.status.event(&format!("resync: {why}"));
                sink.record = false;
                let n = follower
                    .snapshot(&mut |m| sink.send(m))
                    .map_err(|e| format!("sending the snapshot: {e}"))?;
                sink.backlog.reset(follower.cursor());
                sink.record = true;
                log::info(&format!("standby {peer}: resync snapshot of {n} entries sent"));
                dirty = true;
                continue;
            }
            Poll::Empty => {
                let requested = lock(&shared.switch).clone();
                if let Switch::Requested { head, epoch } = requested {
                    if follower.cursor() >= head {
                        sink.flush(follower.cursor())?;
                        sink.send(&Message::Promote { pos: follower.cursor(), epoch })
                            .and_then(|_| sink.out.flush())
                            .map_err(|e| format!("sending Promote: {e}"))?;
                        // The standby's Done may already be back (read_acks): keep it.
                        let mut switch = lock(&shared.switch);
                        if matches!(*switch, Switch::Requested { .. }) {
                            *switch = Switch::Sent;
                        }
                        drop(switch);
                        log::info(&format!("switchover: Promote(epoch {epoch}) sent at position {head}"));
                    }
                }
            }
        }
        if dirty || sink.last_flush.elapsed() >= HEARTBEAT_EVERY {
            sink.flush(follower.cursor())?;
            dirty = false;
        }
        if last_lag_log.elapsed() >= LAG_LOG_EVERY {
            let lag = store.feed_head().saturating_sub(store.replicated_upto());
            if lag > 0 {
                log::info(&format!("standby {peer}: lag {lag} changes (feed head - acknowledged)"));
            }
            last_lag_log = Instant::now();
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(1));
    }
}
