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
//! reason; the standby reconnects with backoff (100 ms doubling to 5 s) and resyncs. It stops
//! when its segment becomes writable (`gardenstate promote`). Operators should stop the
//! daemon first and then promote.

use crate::apply::Applier;
use crate::auth::{self, AuthError, Key};
use crate::cli::StandbyArgs;
use crate::exit::{CmdResult, Failure};
use crate::frame::{
    self, HANDSHAKE_MAX_PAYLOAD, Hello, Message, PROTOCOL_VERSION, Role, Shape, payload_limit,
};
use crate::log;
use crate::primary::PEER_TIMEOUT;
use gardenstate::{Store, WriteMode};
use std::io::{BufReader, Write};
use std::net::TcpStream;
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
    let key = Key::from_file(&a.key_file).map_err(Failure::error)?;
    log::info(&format!("standby: segment {} following the primary at {}", a.segment, a.connect));
    let mut backoff = BACKOFF_MIN;
    let mut followed = false;
    loop {
        let started = Instant::now();
        match TcpStream::connect(&a.connect) {
            Err(e) => log::warn(&format!("cannot connect to {}: {e}", a.connect)),
            Ok(conn) => match session(conn, &a, &key, &mut followed) {
                Ok(End::Promoted) => {
                    log::info(&format!("segment {} is writable now (promoted): standby exits", a.segment));
                    return Ok(());
                }
                Err(SessionError::Fatal(e)) => {
                    log::error(&e);
                    return Err(Failure::error(e));
                }
                Err(SessionError::Retry(e)) => log::warn(&format!("connection to {} closed: {e}", a.connect)),
            },
        }
        // Promoted while the primary was unreachable.
        if followed && Store::attach(&a.segment).is_ok_and(|s| s.write_mode() == WriteMode::Writable) {
            log::info(&format!("segment {} is writable now (promoted): standby exits", a.segment));
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = BACKOFF_MIN;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Attaches to the segment, or creates it with the primary's shape.
fn open_segment(name: &str, shape: &Shape) -> Result<Store, SessionError> {
    match Store::attach(name) {
        Ok(s) => Ok(s),
        Err(e) if crate::attach::is_missing(&e) => {
            let s = Store::create(name, &shape.options()).map_err(|e| {
                SessionError::Fatal(format!("creating segment {name} like the primary's: {e}"))
            })?;
            log::info(&format!("created segment {name} with the primary's shape"));
            Ok(s)
        }
        Err(e) => Err(SessionError::Fatal(format!("segment {name}: {e}"))),
    }
}

fn session(
    mut conn: TcpStream,
    a: &StandbyArgs,
    key: &Key,
    followed: &mut bool,
) -> Result<End, SessionError> {
    conn.set_nodelay(true).map_err(retry)?;
    conn.set_read_timeout(Some(PEER_TIMEOUT)).map_err(retry)?;
    conn.set_write_timeout(Some(PEER_TIMEOUT)).map_err(retry)?;
    match auth::standby_handshake(&mut conn, key) {
        Ok(()) => {}
        Err(e @ AuthError::WrongKey) => {
            log::error(&format!("primary {} failed authentication: {e}", a.connect));
            return Err(retry("authentication failed"));
        }
        Err(e) => return Err(retry(e)),
    }
    // The standby's own view, for the primary's log.
    let local = Store::attach(&a.segment).ok();
    let mine = Message::Hello(Hello {
        proto: PROTOCOL_VERSION as u16,
        role: Role::Standby,
        history: local.as_ref().map_or(0, |s| s.history_id()),
        epoch: local.as_ref().map_or(0, |s| s.epoch()),
        feed_head: 0,
        shape: Shape::default(),
    });
    drop(local);
    conn.write_all(&frame::encode(&mine)).map_err(retry)?;
    let hello = match frame::read_frame(&mut conn, HANDSHAKE_MAX_PAYLOAD, &mut Vec::new()) {
        Ok(Message::Hello(h)) if h.role == Role::Primary => h,
        Ok(m) => return Err(retry(format!("expected the primary's Hello, got {}", m.name()))),
        Err(e) => return Err(retry(e)),
    };
    let store = open_segment(&a.segment, &hello.shape)?;
    if store.epoch() > hello.epoch {
        return Err(SessionError::Fatal(format!(
            "segment {} has epoch {} but the primary at {} has epoch {}: this segment was promoted and \
             holds a newer history; refusing to overwrite it",
            a.segment,
            store.epoch(),
            a.connect,
            hello.epoch
        )));
    }
    if store.write_mode() == WriteMode::Replica && store.history_id() != hello.history {
        return Err(SessionError::Fatal(format!(
            "the primary at {} holds history {:016x}, but segment {} is a replica of history {:016x}: \
             the primary's segment was recreated (a reboot empties shared memory) and following it \
             would replace this replica's sessions; promote this standby and make the old primary \
             follow it, or destroy segment {} to start over from the primary",
            a.connect,
            hello.history,
            a.segment,
            store.history_id(),
            a.segment
        )));
    }
    store.set_write_mode(WriteMode::Replica);
    store.set_history_id(hello.history);
    store.raise_epoch(hello.epoch);
    *followed = true;
    log::info(&format!(
        "authenticated with primary {} (history {:016x}, epoch {}); segment {} is a replica",
        a.connect, hello.history, hello.epoch, a.segment
    ));
    let limit = payload_limit(hello.shape.max_key as u64, hello.shape.max_value);
    apply_stream(conn, &store, limit, &a.segment)
}

fn apply_stream(conn: TcpStream, store: &Store, limit: u32, name: &str) -> Result<End, SessionError> {
    let mut acks = conn.try_clone().map_err(retry)?;
    let mut reader = BufReader::with_capacity(256 << 10, conn);
    let mut buf = Vec::new();
    let mut applier = Applier::new(store, name);
    let (mut acked, mut last_ack) = (0u64, Instant::now());
    loop {
        if store.write_mode() == WriteMode::Writable {
            return Ok(End::Promoted);
        }
        let m = frame::read_frame(&mut reader, limit, &mut buf).map_err(retry)?;
        applier.apply(m).map_err(retry)?;
        let applied = applier.applied();
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
