//! Heartbeats: small authenticated UDP datagrams between the primary, the standby and the
//! witness, on their own sockets, so a large snapshot on the TCP link never delays failure
//! detection.
//!
//! Every node sends one datagram to each peer every `interval`. A datagram announces the
//! sender's state (role, epoch, history, position, fenced/synced flags and, for a witness,
//! how long ago it last heard a primary and a standby) and echoes the newest sequence number
//! the sender has received *from that destination*.
//!
//! Authentication (`pairing`): each pair of peers runs a small datagram handshake (a hello,
//! its answer, the first datagram naming the answer) that gives the pair a session key per
//! direction, derived from the pre-shared key and a fresh nonce of each side; every datagram
//! carries the sender's and the receiver's session nonces and a tag made with that key. Within
//! a session, a datagram whose sequence number is not above the last accepted one in its
//! direction is dropped (reordered or replayed); an authentic datagram of no current session
//! (recorded before a peer restarted, say) is dropped too; both are counted and logged at most
//! once per [`QUIET`]. A restarted peer (new nonces) says hello, and its first datagram that
//! names our fresh offer replaces its previous process's session. A hello's own fields are
//! never taken as the peer's state (a hello proves no freshness).
//!
//! Liveness comes only from echoes. A node's sequence numbers are the microseconds since it
//! started (strictly increasing, so also in each direction), so when a session datagram echoes
//! one of my sequence numbers I know the peer was alive after I sent it:
//! `alive_at = my start + echoed seq` (the session key binds the echo to my process). A
//! delayed datagram can only echo an old sequence number, so it proves nothing new; a forged
//! one fails the tag. The announced state of a peer is likewise taken only from datagrams that
//! echo one of my sequence numbers sent within the last [`FRESH`]: a recording of yesterday's
//! primary saying "I am primary, epoch 7" changes nothing.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "GDHB"
//!      4     1  version (2)
//!      5     1  role: 1 primary, 2 standby, 3 witness
//!      6     1  flags: bit 0 fenced (refuses writes), bit 1 synced (a complete replica),
//!               bit 2 claim (standby: asks the witness for the next epoch; witness: it
//!               granted epoch `history` to the node whose id is `position`)
//!      7     1  reserved, 0
//!      8    32  the sender's nonce (its session nonce, or in a hello its offer)
//!     40    32  the receiver's nonce as the sender knows it (0 in a hello)
//!     72     8  seq (microseconds since the sender started)
//!     80     8  epoch
//!     88     8  history id
//!     96     8  position (primary: feed head; standby: applied position)
//!    104     8  echo seq (the newest seq accepted from the receiver in this session; 0: none)
//!    112     4  witness: ms since it last heard a primary (u32::MAX: never)
//!    116     4  witness: ms since it last heard a standby (u32::MAX: never)
//!    120     2  the sender's listen port (where it serves when primary; 0: none)
//!    122     2  reserved, 0
//!    124     8  node id (random per process: names a claimant and a grant's holder, W1)
//!    132    16  HMAC-SHA256(k(sender nonce, receiver nonce), bytes 0..132), first 16 bytes
//! ```
//! All integers little-endian. The nonces are read before the tag is checked (they name its
//! key); no other field is interpreted before. Anything else (another length, magic, version,
//! role, a bad tag) is dropped and counted, never logged per datagram (a flood must not fill
//! the log).

use crate::failover::pairing::{self, DatagramKey, Nonce, Outgoing, Pairing, Verdict};
use crate::operations::log;
use crate::replication::auth::Key;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const DATAGRAM_LEN: usize = 148;
const MAGIC: [u8; 4] = *b"GDHB";
const VERSION: u8 = 2;
const BODY_LEN: usize = 132;
const TAG_LEN: usize = 16;
/// Replayed, reordered and old-session datagrams are logged at most once per this long.
pub const QUIET: Duration = Duration::from_secs(10);
/// A peer's announced state counts only if its datagram echoed a sequence number I sent within
/// this long.
pub const FRESH: Duration = Duration::from_secs(2);
/// Peers remembered at most (learned from authenticated datagrams).
const MAX_PEERS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeRole {
    Primary,
    Standby,
    Witness,
}

impl NodeRole {
    fn byte(self) -> u8 {
        match self {
            NodeRole::Primary => 1,
            NodeRole::Standby => 2,
            NodeRole::Witness => 3,
        }
    }

    fn from_byte(b: u8) -> Option<NodeRole> {
        match b {
            1 => Some(NodeRole::Primary),
            2 => Some(NodeRole::Standby),
            3 => Some(NodeRole::Witness),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NodeRole::Primary => "primary",
            NodeRole::Standby => "standby",
            NodeRole::Witness => "witness",
        }
    }
}

/// What a node says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    pub role: NodeRole,
    pub fenced: bool,
    pub synced: bool,
    /// A standby's request for the next epoch, or a witness's grant of it (see the layout).
    pub claim: bool,
    pub epoch: u64,
    pub history: u64,
    pub pos: u64,
}

impl Announce {
    /// Whether it says "a primary that takes writes".
    pub fn writable(&self) -> bool {
        self.role == NodeRole::Primary && !self.fenced
    }
}

/// One decoded datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    pub announce: Announce,
    /// The sender's nonce and the receiver's (NO_NONCE in a hello): they name the key.
    pub from: Nonce,
    pub to: Nonce,
    /// The sender's node id (random per process).
    pub node: u64,
    pub seq: u64,
    pub echo_seq: u64,
    /// Witness only: ms since it last heard each role (u32::MAX: never).
    pub primary_age_ms: u32,
    pub standby_age_ms: u32,
    /// The sender's TCP listen port (0: it has none).
    pub listen_port: u16,
}

fn mac(key: &DatagramKey, body: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(body);
    m
}

/// A datagram, sealed with the key of its nonces (`pairing`).
pub fn encode(d: &Datagram, key: &DatagramKey) -> [u8; DATAGRAM_LEN] {
    let mut b = [0u8; DATAGRAM_LEN];
    b[0..4].copy_from_slice(&MAGIC);
    b[4] = VERSION;
    b[5] = d.announce.role.byte();
    b[6] =
        u8::from(d.announce.fenced) | (u8::from(d.announce.synced) << 1) | (u8::from(d.announce.claim) << 2);
    b[8..40].copy_from_slice(&d.from);
    b[40..72].copy_from_slice(&d.to);
    let words = [d.seq, d.announce.epoch, d.announce.history, d.announce.pos, d.echo_seq];
    for (i, w) in words.iter().enumerate() {
        b[72 + 8 * i..80 + 8 * i].copy_from_slice(&w.to_le_bytes());
    }
    b[112..116].copy_from_slice(&d.primary_age_ms.to_le_bytes());
    b[116..120].copy_from_slice(&d.standby_age_ms.to_le_bytes());
    b[120..122].copy_from_slice(&d.listen_port.to_le_bytes());
    b[124..132].copy_from_slice(&d.node.to_le_bytes());
    let tag = mac(key, &b[..BODY_LEN]).finalize().into_bytes();
    b[BODY_LEN..].copy_from_slice(&tag[..TAG_LEN]);
    b
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    Length,
    Magic,
    Version,
    Mac,
    Field,
}

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A datagram's nonces and sequence number, read before it is authenticated (the nonces name
/// its key): only its length, magic and version are checked.
pub fn peek(b: &[u8]) -> Result<(Nonce, Nonce, u64), Reject> {
    if b.len() != DATAGRAM_LEN {
        return Err(Reject::Length);
    }
    if b[0..4] != MAGIC {
        return Err(Reject::Magic);
    }
    if b[4] != VERSION {
        return Err(Reject::Version);
    }
    let nonce = |at: usize| -> Nonce { b[at..at + 32].try_into().expect("32 bytes") };
    Ok((nonce(8), nonce(40), word(b, 72)))
}

/// Whether the tag of a datagram of the right length matches `key` (in constant time).
pub fn authentic(b: &[u8], key: &DatagramKey) -> bool {
    b.len() == DATAGRAM_LEN && mac(key, &b[..BODY_LEN]).verify_truncated_left(&b[BODY_LEN..]).is_ok()
}

/// Decodes and authenticates a datagram: the tag is checked before any field but the nonces
/// is interpreted.
pub fn decode(b: &[u8], key: &DatagramKey) -> Result<Datagram, Reject> {
    peek(b)?;
    if !authentic(b, key) {
        return Err(Reject::Mac);
    }
    fields(b)
}

/// The fields of an authenticated datagram.
fn fields(b: &[u8]) -> Result<Datagram, Reject> {
    let (from, to, seq) = peek(b)?;
    let role = NodeRole::from_byte(b[5]).ok_or(Reject::Field)?;
    if b[6] & !7 != 0 || b[7] != 0 || b[122..124] != [0, 0] {
        return Err(Reject::Field);
    }
    let half = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    Ok(Datagram {
        announce: Announce {
            role,
            fenced: b[6] & 1 != 0,
            synced: b[6] & 2 != 0,
            claim: b[6] & 4 != 0,
            epoch: word(b, 80),
            history: word(b, 88),
            pos: word(b, 96),
        },
        from,
        to,
        seq,
        echo_seq: word(b, 104),
        primary_age_ms: half(112),
        standby_age_ms: half(116),
        listen_port: u16::from_le_bytes([b[120], b[121]]),
        node: word(b, 124),
    })
}

/// What this node knows of one peer (one address).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The peer's newest *fresh* datagram (it echoed a recent seq of ours), and when it proved
    /// the peer alive: the time we sent the sequence number it echoed.
    pub fresh: Option<(Datagram, Instant)>,
    /// The peer's newest authenticated datagram of a current session (echoing anything or
    /// nothing), and when it *arrived*. The sender was alive before that, maybe long before (a
    /// delayed datagram): only for clocks that a late arrival can only make wait longer (a
    /// standby's and the witness's "no primary for ..." clocks, `Beacon::last_heard`), never
    /// as a proof that the sender is alive now.
    pub heard: Option<(Datagram, Instant)>,
}

impl Peer {
    /// Where the peer serves: its datagrams' source IP and its announced listen port (a
    /// proxy or NAT in between may change the source port, never what it announces).
    pub fn serve_addr(&self) -> SocketAddr {
        match self.fresh {
            Some((d, _)) if d.listen_port != 0 => SocketAddr::new(self.addr.ip(), d.listen_port),
            _ => self.addr,
        }
    }

    /// The peer's announced state, if it proved itself alive within `within`.
    pub fn alive_within(&self, within: Duration) -> Option<&Datagram> {
        self.fresh.as_ref().filter(|(_, at)| at.elapsed() <= within).map(|(d, _)| d)
    }
}

/// Counts of dropped datagrams, by reason (for stats and tests).
#[derive(Debug, Default)]
pub struct Drops {
    /// A bad tag (forged, corrupted, or another key).
    pub unauthenticated: AtomicU64,
    pub malformed: AtomicU64,
    /// Of the current session, not newer than the last accepted one (reordered, replayed).
    pub stale: AtomicU64,
    /// Authentic, of no current session (a replay of an old one, or a peer that lost its own).
    pub old_session: AtomicU64,
}

/// One peer address: what we know of it and its handshake.
struct Slot {
    peer: Peer,
    pairing: Pairing,
    /// A configured peer (never evicted).
    target: bool,
}

/// The peer table: one slot per configured peer and per address that opened a session.
struct Table {
    slots: HashMap<SocketAddr, Slot>,
    /// The offer to addresses without a slot (`pairing`).
    stranger: Nonce,
    /// When the last line about dropped replays was logged, and the counts then.
    logged: Option<(Instant, u64, u64)>,
}

/// A node's heartbeat socket: sends its announcement to every peer, learns peers from
/// authenticated datagrams, and answers "when did I last hear X".
pub struct Beacon {
    socket: UdpSocket,
    key: Key,
    /// Random per process, never 0: names this node in a claim and a grant (W1).
    node: u64,
    born: Instant,
    last_seq: AtomicU64,
    interval: Duration,
    /// Announced in every datagram (the port of `listen`).
    listen_port: u16,
    state: Mutex<(Announce, u32, u32)>,
    /// Since when every datagram sent announces a primary that takes writes (role primary,
    /// not fenced); None while it announces anything else. Set under the `state` lock, which
    /// the sender holds through a round, so every sequence number taken after it belongs to
    /// a datagram that says "writable primary".
    writable_since: Mutex<Option<Instant>>,
    peers: Mutex<Table>,
    pub drops: Drops,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking holder leaves plain data behind; the daemon keeps going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Resolves HOST:PORT to one socket address.
pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("address {addr:?} resolves to nothing"))
}

impl Beacon {
    /// Binds the UDP socket on `listen` and starts the sender and receiver threads.
    pub fn start(
        listen: &str,
        targets: &[String],
        key: Key,
        interval: Duration,
        announce: Announce,
    ) -> Result<Arc<Beacon>, String> {
        let socket =
            UdpSocket::bind(listen).map_err(|e| format!("heartbeat socket on {listen} (UDP): {e}"))?;
        let listen_port = socket.local_addr().map_err(|e| e.to_string())?.port();
        socket.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| e.to_string())?;
        let targets = targets.iter().map(|t| resolve(t)).collect::<Result<Vec<_>, _>>()?;
        let mut slots = HashMap::new();
        for addr in &targets {
            let peer = Peer { addr: *addr, fresh: None, heard: None };
            slots.insert(*addr, Slot { peer, pairing: Pairing::new()?, target: true });
        }
        let table = Table { slots, stranger: pairing::offer()?, logged: None };
        let mut id = [0u8; 8];
        crate::replication::auth::fill_random(&mut id).map_err(|e| format!("random node id: {e}"))?;
        let beacon = Arc::new(Beacon {
            socket,
            key,
            node: u64::from_le_bytes(id) | 1,
            born: Instant::now(),
            last_seq: AtomicU64::new(0),
            interval,
            listen_port,
            // The witness's view starts at "heard just now" (0 ms), not "never": datagrams go
            // out before its first round sets the view, and a standby must not promote on
            // the word of a witness that has not looked yet (witness.rs).
            state: Mutex::new((announce, 0, 0)),
            writable_since: Mutex::new(announce.writable().then(Instant::now)),
            peers: Mutex::new(table),
            drops: Drops::default(),
            stop: AtomicBool::new(false),
        });
        let b = beacon.clone();
        std::thread::Builder::new()
            .name("heartbeat-send".into())
            .spawn(move || b.send_loop())
            .map_err(|e| e.to_string())?;
        let b = beacon.clone();
        std::thread::Builder::new()
            .name("heartbeat-recv".into())
            .spawn(move || b.recv_loop())
            .map_err(|e| e.to_string())?;
        Ok(beacon)
    }

    /// This node's id (random per process), as its datagrams carry it.
    pub fn node_id(&self) -> u64 {
        self.node
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("a bound socket has an address")
    }

    /// Stops both threads (within one read timeout).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Changes what this node announces from the next datagram on; returns once no datagram
    /// with the old announcement can be sent any more.
    pub fn announce(&self, a: Announce) {
        let mut state = lock(&self.state);
        if a.writable() != state.0.writable() {
            *lock(&self.writable_since) = a.writable().then(Instant::now);
        }
        state.0 = a;
    }

    /// Since when this node has announced itself as a writable primary (see the field).
    pub fn writable_since(&self) -> Option<Instant> {
        *lock(&self.writable_since)
    }

    /// A witness's view of the other roles, sent with its datagrams.
    pub fn set_view(&self, primary_age_ms: u32, standby_age_ms: u32) {
        let mut s = lock(&self.state);
        (s.1, s.2) = (primary_age_ms, standby_age_ms);
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Every known peer.
    pub fn peers(&self) -> Vec<Peer> {
        lock(&self.peers).slots.values().map(|s| s.peer).collect()
    }

    /// The freshest proof of life among peers announcing `role` (with their datagram).
    pub fn last_alive(&self, role: NodeRole) -> Option<(Datagram, Instant)> {
        lock(&self.peers)
            .slots
            .values()
            .filter_map(|s| s.peer.fresh)
            .filter(|(d, _)| d.announce.role == role)
            .max_by_key(|(_, at)| *at)
    }

    /// When the newest authenticated datagram from a peer announcing `role` (and passing
    /// `which`) *arrived*: a clock that a delayed or replayed datagram can only restart
    /// later, never earlier (see `Peer::heard`).
    pub fn last_heard(&self, role: NodeRole, which: impl Fn(&Announce) -> bool) -> Option<Instant> {
        lock(&self.peers)
            .slots
            .values()
            .filter_map(|s| s.peer.heard)
            .filter(|(d, _)| d.announce.role == role && which(&d.announce))
            .map(|(_, at)| at)
            .max()
    }

    fn next_seq(&self) -> u64 {
        let now = self.born.elapsed().as_micros() as u64 + 1;
        let prev = self.last_seq.fetch_max(now, Ordering::AcqRel);
        if prev < now {
            now
        } else {
            // Two sends in one microsecond: take the next number.
            self.last_seq.fetch_add(1, Ordering::AcqRel) + 1
        }
    }

    /// When I sent `seq` (None if it is not one of mine yet).
    fn sent_at(&self, seq: u64) -> Option<Instant> {
        if seq == 0 || seq > self.last_seq.load(Ordering::Acquire) {
            return None;
        }
        self.born.checked_add(Duration::from_micros(seq - 1))
    }

    fn send_loop(&self) {
        while !self.stop.load(Ordering::Acquire) {
            // Held through the round: once `announce` returns, no datagram built from the
            // state it replaced is sent any more (a just-promoted standby must not be heard
            // saying "standby" afterwards).
            let state = lock(&self.state);
            let to: Vec<(SocketAddr, Outgoing)> =
                lock(&self.peers).slots.iter().map(|(a, s)| (*a, s.pairing.outgoing(&self.key))).collect();
            for (addr, out) in to {
                self.send(&state, addr, &out);
            }
            drop(state);
            std::thread::sleep(self.interval);
        }
    }

    /// Sends one datagram (the caller holds the announcement).
    fn send(&self, state: &(Announce, u32, u32), addr: SocketAddr, out: &Outgoing) {
        let (announce, p_age, s_age) = *state;
        let d = Datagram {
            announce,
            from: out.from,
            to: out.to,
            node: self.node,
            seq: self.next_seq(),
            echo_seq: out.echo,
            primary_age_ms: p_age,
            standby_age_ms: s_age,
            listen_port: self.listen_port,
        };
        // A peer that is down answers with ICMP; the next round tries again.
        let _ = self.socket.send_to(&encode(&d, &out.key), addr);
    }

    fn recv_loop(&self) {
        let mut buf = [0u8; 512];
        while !self.stop.load(Ordering::Acquire) {
            let (n, from) = match self.socket.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    continue;
                }
                // ECONNREFUSED from an earlier send to a peer that is down, and the like.
                Err(_) => continue,
            };
            if let Some(answer) = self.receive(from, &buf[..n]) {
                self.send(&lock(&self.state), from, &answer);
            }
        }
    }

    /// Takes one datagram from `from`: moves its handshake on, and takes the peer's state from
    /// it if it is the newest of a current session. Returns the answer to send, if any.
    fn receive(&self, from: SocketAddr, b: &[u8]) -> Option<Outgoing> {
        let Ok(nonces) = peek(b) else {
            self.drops.malformed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let mut table = lock(&self.peers);
        let t = &mut *table;
        let verdict = pairing::receive(
            &self.key,
            t.slots.get_mut(&from).map(|s| &mut s.pairing),
            &mut t.stranger,
            (&nonces.0, &nonces.1, nonces.2),
            |k| authentic(b, k),
        );
        let verdict = match verdict {
            Ok(v) => v,
            Err(e) => {
                log::warn(&format!("heartbeat: {e}"));
                return None;
            }
        };
        match verdict {
            Verdict::Forged => {
                self.drops.unauthenticated.fetch_add(1, Ordering::Relaxed);
                None
            }
            Verdict::Own => None,
            Verdict::Hello(answer) => Some(answer),
            Verdict::Stale | Verdict::OldSession(_) => {
                let counter = if matches!(verdict, Verdict::Stale) {
                    &self.drops.stale
                } else {
                    &self.drops.old_session
                };
                counter.fetch_add(1, Ordering::Relaxed);
                self.log_drops(t, from);
                match verdict {
                    Verdict::OldSession(hello) => hello,
                    _ => None,
                }
            }
            Verdict::Current | Verdict::Opened(_) => {
                let Ok(d) = fields(b) else {
                    self.drops.malformed.fetch_add(1, Ordering::Relaxed);
                    return None;
                };
                if let Verdict::Opened(Some(pairing)) = verdict {
                    self.learn(t, from, pairing);
                }
                if let Some(slot) = t.slots.get_mut(&from) {
                    // Only a current session's newer datagrams get here: a replay or a
                    // reordered one is `Stale`, an old process's `OldSession`.
                    slot.peer.heard = Some((d, Instant::now()));
                    self.alive(&mut slot.peer, d);
                }
                None
            }
        }
    }

    /// Adds the slot of an address that just opened a session, making room if needed.
    fn learn(&self, t: &mut Table, from: SocketAddr, pairing: Pairing) {
        if t.slots.len() >= MAX_PEERS {
            let oldest = t
                .slots
                .values()
                .filter(|s| !s.target)
                .min_by_key(|s| s.peer.fresh.map(|(_, at)| at))
                .map(|s| s.peer.addr);
            if let Some(a) = oldest {
                t.slots.remove(&a);
            }
        }
        t.slots.insert(
            from,
            Slot { peer: Peer { addr: from, fresh: None, heard: None }, pairing, target: false },
        );
    }

    /// Logs the dropped replays, at most once per [`QUIET`].
    fn log_drops(&self, t: &mut Table, from: SocketAddr) {
        if t.logged.is_some_and(|(at, _, _)| at.elapsed() < QUIET) {
            return;
        }
        let now = (self.drops.stale.load(Ordering::Relaxed), self.drops.old_session.load(Ordering::Relaxed));
        let (_, stale, old) = t.logged.unwrap_or((self.born, 0, 0));
        log::warn(&format!(
            "heartbeat: ignored datagrams, the latest from {from}: {} reordered or replayed within a \
             session, {} of no current session (recorded before a restart, or a peer that restarted and \
             pairs again) since the last such line",
            now.0 - stale,
            now.1 - old
        ));
        t.logged = Some((Instant::now(), now.0, now.1));
    }

    /// Takes the state of a peer from a datagram of a current session, if it echoes one of my
    /// sequence numbers sent within [`FRESH`] (the session binds the echo to this process).
    fn alive(&self, peer: &mut Peer, d: Datagram) {
        let Some(at) = self.sent_at(d.echo_seq).filter(|at| at.elapsed() <= FRESH) else { return };
        if peer.fresh.is_some_and(|(_, prev)| at < prev) {
            return;
        }
        let changed = |prev: &Announce| Announce { pos: 0, ..*prev } != Announce { pos: 0, ..d.announce };
        if peer.fresh.is_none_or(|(prev, _)| changed(&prev.announce)) {
            log::info(&format!(
                "heartbeat: {} at {} is {}{} (epoch {}, history {:016x})",
                d.announce.role.name(),
                peer.addr,
                if d.announce.fenced { "fenced " } else { "" },
                if d.announce.synced { "synced" } else { "not synced" },
                d.announce.epoch,
                d.announce.history
            ));
        }
        peer.fresh = Some((d, at));
    }
}

/// Milliseconds since `at`, saturated to the datagram field (u32::MAX means never).
pub fn age_ms(at: Option<Instant>) -> u32 {
    at.map_or(u32::MAX, |t| t.elapsed().as_millis().min(u32::MAX as u128 - 1) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::pairing::{NO_NONCE, direction_key};

    fn key() -> Key {
        Key::new(b"0123456789abcdef-heartbeat-test".to_vec()).unwrap()
    }

    fn sample() -> Datagram {
        Datagram {
            announce: Announce {
                role: NodeRole::Standby,
                fenced: false,
                synced: true,
                claim: true,
                epoch: 7,
                history: 0xfeed,
                pos: 42,
            },
            from: [3; 32],
            to: [4; 32],
            node: 0x5eed,
            seq: 1234,
            echo_seq: 6,
            primary_age_ms: 10,
            standby_age_ms: u32::MAX,
            listen_port: 7480,
        }
    }

    #[test]
    fn datagrams_round_trip_and_every_bit_flip_is_rejected() {
        let k = direction_key(&key(), &[3; 32], &[4; 32]);
        let b = encode(&sample(), &k);
        assert_eq!(decode(&b, &k), Ok(sample()));
        assert_eq!(peek(&b), Ok(([3; 32], [4; 32], 1234)));
        for bit in 0..DATAGRAM_LEN * 8 {
            let mut d = b;
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&d, &k).is_err(), "bit {bit} flipped was accepted");
        }
        assert_eq!(decode(&b[..DATAGRAM_LEN - 1], &k), Err(Reject::Length));
        let other = Key::new(b"another key of sixteen bytes".to_vec()).unwrap();
        assert_eq!(decode(&b, &direction_key(&other, &[3; 32], &[4; 32])), Err(Reject::Mac));
        // The other direction's key, and the key of other nonces, fail too.
        assert_eq!(decode(&b, &direction_key(&key(), &[4; 32], &[3; 32])), Err(Reject::Mac));
        assert_eq!(decode(&b, &direction_key(&key(), &[3; 32], &NO_NONCE)), Err(Reject::Mac));
    }

    fn beacon_at(role: NodeRole, epoch: u64, targets: &[String]) -> Arc<Beacon> {
        let a = Announce { role, fenced: false, synced: true, claim: false, epoch, history: 1, pos: 0 };
        Beacon::start("127.0.0.1:0", targets, key(), Duration::from_millis(20), a).unwrap()
    }

    fn beacon(role: NodeRole, targets: &[String]) -> Arc<Beacon> {
        beacon_at(role, 1, targets)
    }

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn two_beacons_prove_each_other_alive_and_learn_return_addresses() {
        let p = beacon(NodeRole::Primary, &[]);
        let s = beacon(NodeRole::Standby, &[p.local_addr().to_string()]);
        wait_for("the standby to see the primary", || s.last_alive(NodeRole::Primary).is_some());
        wait_for("the primary to see the standby", || p.last_alive(NodeRole::Standby).is_some());
        let (d, at) = s.last_alive(NodeRole::Primary).unwrap();
        assert_eq!(d.announce.role, NodeRole::Primary);
        assert!(at.elapsed() < FRESH);
        s.stop();
        // Without the standby, the primary's proof of life ages.
        std::thread::sleep(Duration::from_millis(300));
        let (_, at) = p.last_alive(NodeRole::Standby).unwrap();
        assert!(at.elapsed() >= Duration::from_millis(150));
        p.stop();
    }

    /// The standby's and the witness's "no primary for ..." clocks restart at the arrival of
    /// any authenticated datagram of a current session, whatever it echoes, and `which`
    /// filters on what it announced.
    #[test]
    fn arrivals_restart_the_silence_clocks_and_say_what_was_announced() {
        let p = beacon(NodeRole::Primary, &[]);
        let fenced = Announce {
            role: NodeRole::Primary,
            fenced: true,
            synced: true,
            claim: false,
            epoch: 1,
            history: 1,
            pos: 0,
        };
        p.announce(fenced);
        let s = beacon(NodeRole::Standby, &[p.local_addr().to_string()]);
        let before = Instant::now();
        wait_for("the standby to hear the primary", || s.last_heard(NodeRole::Primary, |_| true).is_some());
        assert!(s.last_heard(NodeRole::Primary, |_| true).is_some_and(|t| t >= before));
        assert_eq!(s.last_heard(NodeRole::Primary, |a| a.writable()), None, "it said fenced");
        p.announce(Announce { fenced: false, ..fenced });
        wait_for("a writable announcement to arrive", || {
            s.last_heard(NodeRole::Primary, |a| a.writable()).is_some()
        });
        s.stop();
        p.stop();
    }

    /// `writable_since` moves only when the announcement starts or stops saying "writable
    /// primary", so an echo of a datagram sent after it is an echo of a "writable" one.
    #[test]
    fn writable_since_follows_the_announcement() {
        let p = beacon(NodeRole::Primary, &[]);
        let first = p.writable_since().expect("announced writable from the start");
        let a = Announce {
            role: NodeRole::Primary,
            fenced: false,
            synced: true,
            claim: false,
            epoch: 1,
            history: 1,
            pos: 9,
        };
        p.announce(a);
        assert_eq!(p.writable_since(), Some(first), "a new position is no new writability");
        p.announce(Announce { fenced: true, ..a });
        assert_eq!(p.writable_since(), None);
        let before = Instant::now();
        p.announce(a);
        assert!(p.writable_since().is_some_and(|t| t >= before));
        p.stop();
    }

    /// An in-path relay between standbys and a primary that records what the standby sends.
    struct Relay {
        socket: UdpSocket,
        standby: Arc<Mutex<Option<SocketAddr>>>,
        recorded: Arc<Mutex<Vec<Vec<u8>>>>,
        stop: Arc<AtomicBool>,
    }

    impl Relay {
        fn start(primary: SocketAddr) -> Relay {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let r = Relay {
                socket: socket.try_clone().unwrap(),
                standby: Arc::default(),
                recorded: Arc::default(),
                stop: Arc::default(),
            };
            let (standby, recorded, stop) = (r.standby.clone(), r.recorded.clone(), r.stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::Acquire) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                    if from == primary {
                        if let Some(s) = *lock(&standby) {
                            let _ = socket.send_to(&buf[..n], s);
                        }
                    } else if Some(from) == *lock(&standby) {
                        lock(&recorded).push(buf[..n].to_vec());
                        let _ = socket.send_to(&buf[..n], primary);
                    }
                }
            });
            r
        }

        fn addr(&self) -> String {
            self.socket.local_addr().unwrap().to_string()
        }

        /// The standby's recorded session datagrams (not hellos).
        fn session_datagrams(&self) -> Vec<Vec<u8>> {
            lock(&self.recorded)
                .iter()
                .filter(|b| peek(b).is_ok_and(|(_, to, _)| to != NO_NONCE))
                .cloned()
                .collect()
        }
    }

    fn standby_epoch(p: &Beacon) -> Option<u64> {
        p.last_alive(NodeRole::Standby).filter(|(_, at)| at.elapsed() < FRESH).map(|(d, _)| d.announce.epoch)
    }

    /// A standby restarts behind the same address (a relay); its first process's recorded
    /// datagrams, replayed to the primary afterwards, are dropped as of an old session and
    /// change nothing; replays within the current session and flipped bits are dropped too,
    /// and the restarted standby stays paired and alive.
    #[test]
    fn a_restarted_peer_pairs_again_and_its_old_sessions_replays_change_nothing() {
        let p = beacon(NodeRole::Primary, &[]);
        let relay = Relay::start(p.local_addr());
        let s1 = beacon_at(NodeRole::Standby, 1, &[relay.addr()]);
        *lock(&relay.standby) = Some(s1.local_addr());
        wait_for("the primary to see the first standby", || standby_epoch(&p) == Some(1));
        wait_for("a few session datagrams", || relay.session_datagrams().len() >= 5);
        s1.stop();
        let old = relay.session_datagrams();
        lock(&relay.recorded).clear();

        let s2 = beacon_at(NodeRole::Standby, 2, &[relay.addr()]);
        *lock(&relay.standby) = Some(s2.local_addr());
        wait_for("the primary to pair with the restarted standby", || standby_epoch(&p) == Some(2));
        assert!(p.peers().len() == 1, "one slot for the relay's address: {:?}", p.peers());

        let before = p.drops.old_session.load(Ordering::Relaxed);
        for b in &old {
            relay.socket.send_to(b, p.local_addr()).unwrap();
        }
        wait_for("the replays to be dropped as of an old session", || {
            p.drops.old_session.load(Ordering::Relaxed) >= before + old.len() as u64
        });
        // Within the current session: a replayed datagram is stale, a flipped one forged.
        let current = relay.session_datagrams();
        let (stale, forged) =
            (p.drops.stale.load(Ordering::Relaxed), p.drops.unauthenticated.load(Ordering::Relaxed));
        relay.socket.send_to(&current[0], p.local_addr()).unwrap();
        let mut flipped = current[current.len() - 1].clone();
        flipped[80] ^= 1; // the epoch
        relay.socket.send_to(&flipped, p.local_addr()).unwrap();
        wait_for("the stale and the forged datagram to be counted", || {
            p.drops.stale.load(Ordering::Relaxed) > stale
                && p.drops.unauthenticated.load(Ordering::Relaxed) > forged
        });
        // The restarted standby is still the one the primary hears, with fresh proofs of life.
        let (_, at) = p.last_alive(NodeRole::Standby).unwrap();
        wait_for("a newer proof of life from the restarted standby", || {
            p.last_alive(NodeRole::Standby).is_some_and(|(d, t)| t > at && d.announce.epoch == 2)
        });
        relay.stop.store(true, Ordering::Release);
        s2.stop();
        p.stop();
    }
}
