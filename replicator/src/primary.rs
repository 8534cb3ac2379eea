//! `gardenstate primary`: serves the segment's changes to one standby at a time.
//!
//! The main thread accepts TCP connections; each gets a thread that authenticates it
//! (`auth`), exchanges Hellos (the primary's carries the segment's shape, history id and
//! epoch), then streams: a snapshot, then the change feed (`follow`), batched in a buffered
//! writer that is flushed, with a Heartbeat carrying the cursor, whenever the feed is empty
//! (and at least every 5 ms under continuous load). A second thread per connection reads the
//! standby's Acks and records them with `Store::acknowledge_replicated`, which is what
//! `Store::wait_replicated` waits for.
//!
//! One standby at a time: a newly authenticated standby supersedes the current one (whose
//! session ends at its next step), so a standby that reconnects after a network cut does not
//! wait for the old, dead connection to time out. A connection that fails authentication,
//! sends garbage, or stays silent for [`PEER_TIMEOUT`] is closed and logged, and nothing is
//! sent to it but the handshake.

use crate::attach::attach;
use crate::auth::{self, Key};
use crate::cli::PrimaryArgs;
use crate::exit::{CmdResult, Failure};
use crate::follow::{Follower, Poll};
use crate::frame::{self, HANDSHAKE_MAX_PAYLOAD, Hello, Message, PROTOCOL_VERSION, Role, Shape};
use crate::log;
use gardenstate::{Store, WriteMode};
use std::io::{BufWriter, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A peer silent for this long (no frame, no ack) is considered gone.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time between flushes under continuous load.
const FLUSH_EVERY: Duration = Duration::from_millis(5);
/// A Heartbeat is sent at least this often when there is nothing to ship.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(100);
/// How often the lag is logged while the standby is behind.
const LAG_LOG_EVERY: Duration = Duration::from_secs(10);

pub fn run(a: PrimaryArgs) -> CmdResult {
    let key = Key::from_file(&a.key_file).map_err(Failure::error)?;
    let store = attach(&a.segment)?;
    if store.write_mode() != WriteMode::Writable {
        return Err(Failure::error(format!(
            "segment {:?} is {:?}, not writable: a standby or fenced segment cannot be a primary \
             (promote it first with `gardenstate promote --segment {}`)",
            a.segment,
            store.write_mode(),
            a.segment
        )));
    }
    let listener = TcpListener::bind(&a.listen)
        .map_err(|e| Failure::error(format!("cannot listen on {}: {e}", a.listen)))?;
    let addr = listener.local_addr().map_err(Failure::error)?;
    log::info(&format!(
        "primary: serving segment {} on {addr} (history {:016x}, epoch {})",
        a.segment,
        store.history_id(),
        store.epoch()
    ));
    let store = Arc::new(store);
    let current = Arc::new(AtomicU64::new(0));
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                log::warn(&format!("accept failed: {e}"));
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let (store, key, current) = (store.clone(), key.clone(), current.clone());
        std::thread::spawn(move || {
            let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
            if let Err(e) = serve(conn, &store, &key, &current, &peer) {
                log::warn(&format!("standby {peer}: connection closed: {e}"));
            }
        });
    }
    Ok(())
}

fn shape_of(store: &Store) -> Shape {
    Shape::of(&store.info().options())
}

fn serve(
    mut conn: TcpStream,
    store: &Store,
    key: &Key,
    current: &AtomicU64,
    peer: &str,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    conn.set_nodelay(true).map_err(io)?;
    conn.set_read_timeout(Some(PEER_TIMEOUT)).map_err(io)?;
    conn.set_write_timeout(Some(PEER_TIMEOUT)).map_err(io)?;
    if let Err(e) = auth::primary_handshake(&mut conn, key) {
        log::warn(&format!("refused connection from {peer} before any data: {e}"));
        return Ok(());
    }
    let generation = current.fetch_add(1, Ordering::AcqRel) + 1;
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
        Ok(Message::Hello(h)) if h.role == Role::Standby => h,
        Ok(m) => return Err(format!("expected the standby's Hello, got {}", m.name())),
        Err(e) => return Err(e.to_string()),
    };
    log::info(&format!(
        "standby {peer} authenticated (its history {:016x}, epoch {}); sending a snapshot",
        theirs.history, theirs.epoch
    ));
    let acks = conn.try_clone().map_err(io)?;
    std::thread::scope(|s| {
        let reader = s.spawn(|| read_acks(acks, store));
        let streamed = stream(&conn, store, current, generation, peer);
        let _ = conn.shutdown(Shutdown::Both);
        let acked = reader.join().unwrap_or_else(|_| Err("ack reader panicked".into()));
        streamed.and(acked)
    })
}

/// Reads the standby's Acks until the connection ends, then shuts the connection down so the
/// streaming side stops too.
fn read_acks(mut conn: TcpStream, store: &Store) -> Result<(), String> {
    let mut buf = Vec::new();
    let result = loop {
        match frame::read_frame(&mut conn, HANDSHAKE_MAX_PAYLOAD, &mut buf) {
            Ok(Message::Ack { pos }) => store.acknowledge_replicated(pos),
            Ok(m) => break Err(format!("expected Ack from the standby, got {}", m.name())),
            Err(frame::FrameError::Closed) => break Err("the standby closed the connection".into()),
            Err(e) => break Err(format!("reading acks: {e}")),
        }
    };
    let _ = conn.shutdown(Shutdown::Both);
    result
}

/// The buffered frame writer of a connection.
struct Sink<'c> {
    out: BufWriter<&'c TcpStream>,
    scratch: Vec<u8>,
    last_flush: Instant,
}

impl Sink<'_> {
    fn send(&mut self, m: &Message) -> std::io::Result<()> {
        frame::write_frame(&mut self.out, m, &mut self.scratch)
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

/// Ships the snapshot and then the feed, until the connection fails or is superseded.
fn stream(
    conn: &TcpStream,
    store: &Store,
    current: &AtomicU64,
    generation: u64,
    peer: &str,
) -> Result<(), String> {
    let mut sink = Sink {
        out: BufWriter::with_capacity(256 << 10, conn),
        scratch: Vec::new(),
        last_flush: Instant::now(),
    };
    let mut follower = Follower::new(store);
    let started = Instant::now();
    let n = follower.snapshot(&mut |m| sink.send(m)).map_err(|e| format!("sending the snapshot: {e}"))?;
    log::info(&format!("standby {peer}: snapshot of {n} entries sent in {:?}", started.elapsed()));
    let mut last_lag_log = Instant::now();
    let mut dirty = true;
    let mut nap = Duration::from_micros(50);
    loop {
        if current.load(Ordering::Acquire) != generation {
            return Err("superseded by a newer standby connection".into());
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
                let n = follower
                    .snapshot(&mut |m| sink.send(m))
                    .map_err(|e| format!("sending the snapshot: {e}"))?;
                log::info(&format!("standby {peer}: resync snapshot of {n} entries sent"));
                dirty = true;
                continue;
            }
            Poll::Empty | Poll::Pending => {}
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
