//! Heartbeats: small authenticated UDP datagrams between the primary, the standby and the
//! witness, on their own sockets, so a large snapshot on the TCP link never delays failure
//! detection.
//!
//! Every node sends one datagram to each peer every `interval`. A datagram announces the
//! sender's state (role, epoch, history, position, fenced/synced flags and, for a witness,
//! how long ago it last heard a primary and a standby) and echoes the newest sequence number
//! the sender has received *from that destination*.
//!
//! Liveness comes only from echoes. A node's sequence numbers are the microseconds since it
//! started (strictly increasing), so when a datagram echoes one of my sequence numbers I know
//! the peer was alive after I sent it: `alive_at = my start + echoed seq`. A replayed or
//! delayed datagram can only echo an old sequence number, so it proves nothing new; a forged
//! one fails the MAC. The announced state of a peer is likewise taken only from datagrams that
//! echo one of my sequence numbers sent within the last [`FRESH`]: a recording of yesterday's
//! primary saying "I am primary, epoch 7" changes nothing. Within one sender, datagrams with a
//! sequence number not above the last accepted one are dropped (reordering, replays).
//!
//! ```text
//! offset  size  field
//!      0     4  magic "GDHB"
//!      4     1  version (1)
//!      5     1  role: 1 primary, 2 standby, 3 witness
//!      6     1  flags: bit 0 fenced (refuses writes), bit 1 synced (a complete replica),
//!               bit 2 claim (standby: asks the witness for the next epoch; witness: it
//!               granted epoch `history` to the node whose id is `position`)
//!      7     1  reserved, 0
//!      8     8  node id (random per process)
//!     16     8  seq (microseconds since the sender started)
//!     24     8  epoch
//!     32     8  history id (witness with claim: the epoch it granted)
//!     40     8  position (primary: feed head; standby: applied position; witness with
//!               claim: the node id it granted that epoch to)
//!     48     8  echo node id (0 before the first datagram from the destination)
//!     56     8  echo seq
//!     64     4  witness: ms since it last heard a primary (u32::MAX: never)
//!     68     4  witness: ms since it last heard a standby (u32::MAX: never)
//!     72     2  the sender's listen port (where it serves when primary; 0: none)
//!     74     2  reserved, 0
//!     76    16  HMAC-SHA256(key, "gardenstate-heartbeat-1" || bytes 0..76), first 16 bytes
//! ```
//! All integers little-endian. Anything else (another length, magic, version, role, a bad MAC)
//! is dropped and counted, never logged per datagram (a flood must not fill the log).

use crate::operations::log;
use crate::replication::auth::Key;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const DATAGRAM_LEN: usize = 92;
const MAGIC: [u8; 4] = *b"GDHB";
const VERSION: u8 = 1;
const BODY_LEN: usize = 76;
const TAG_LEN: usize = 16;
const LABEL: &[u8] = b"gardenstate-heartbeat-1";
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

/// One decoded datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    pub announce: Announce,
    pub node: u64,
    pub seq: u64,
    pub echo_node: u64,
    pub echo_seq: u64,
    /// Witness only: ms since it last heard each role (u32::MAX: never).
    pub primary_age_ms: u32,
    pub standby_age_ms: u32,
    /// The sender's TCP listen port (0: it has none).
    pub listen_port: u16,
}

fn mac(key: &Key) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key.bytes()).expect("HMAC takes any key length");
    m.update(LABEL);
    m
}

pub fn encode(d: &Datagram, key: &Key) -> [u8; DATAGRAM_LEN] {
    let mut b = [0u8; DATAGRAM_LEN];
    b[0..4].copy_from_slice(&MAGIC);
    b[4] = VERSION;
    b[5] = d.announce.role.byte();
    b[6] =
        u8::from(d.announce.fenced) | (u8::from(d.announce.synced) << 1) | (u8::from(d.announce.claim) << 2);
    let words =
        [d.node, d.seq, d.announce.epoch, d.announce.history, d.announce.pos, d.echo_node, d.echo_seq];
    for (i, w) in words.iter().enumerate() {
        b[8 + 8 * i..16 + 8 * i].copy_from_slice(&w.to_le_bytes());
    }
    b[64..68].copy_from_slice(&d.primary_age_ms.to_le_bytes());
    b[68..72].copy_from_slice(&d.standby_age_ms.to_le_bytes());
    b[72..74].copy_from_slice(&d.listen_port.to_le_bytes());
    let mut m = mac(key);
    m.update(&b[..BODY_LEN]);
    b[BODY_LEN..].copy_from_slice(&m.finalize().into_bytes()[..TAG_LEN]);
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

/// Decodes and authenticates a datagram. The MAC is checked (in constant time) before any
/// field is interpreted.
pub fn decode(b: &[u8], key: &Key) -> Result<Datagram, Reject> {
    if b.len() != DATAGRAM_LEN {
        return Err(Reject::Length);
    }
    if b[0..4] != MAGIC {
        return Err(Reject::Magic);
    }
    if b[4] != VERSION {
        return Err(Reject::Version);
    }
    let mut m = mac(key);
    m.update(&b[..BODY_LEN]);
    m.verify_truncated_left(&b[BODY_LEN..]).map_err(|_| Reject::Mac)?;
    let role = NodeRole::from_byte(b[5]).ok_or(Reject::Field)?;
    if b[6] & !7 != 0 || b[7] != 0 || b[74..76] != [0, 0] {
        return Err(Reject::Field);
    }
    let word = |i: usize| u64::from_le_bytes(b[8 + 8 * i..16 + 8 * i].try_into().expect("8 bytes"));
    let half = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    Ok(Datagram {
        announce: Announce {
            role,
            fenced: b[6] & 1 != 0,
            synced: b[6] & 2 != 0,
            claim: b[6] & 4 != 0,
            epoch: word(2),
            history: word(3),
            pos: word(4),
        },
        node: word(0),
        seq: word(1),
        echo_node: word(5),
        echo_seq: word(6),
        primary_age_ms: half(64),
        standby_age_ms: half(68),
        listen_port: u16::from_le_bytes([b[72], b[73]]),
    })
}

/// What this node knows of one peer (one address).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The peer's node id and newest accepted sequence number (what we echo back).
    pub node: u64,
    pub seq: u64,
    /// The peer's newest *fresh* datagram (it echoed a recent seq of ours), and when it proved
    /// the peer alive: the time we sent the sequence number it echoed.
    pub fresh: Option<(Datagram, Instant)>,
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
    pub unauthenticated: AtomicU64,
    pub malformed: AtomicU64,
    pub stale: AtomicU64,
}

/// A node's heartbeat socket: sends its announcement to every peer, learns peers from
/// authenticated datagrams, and answers "when did I last hear X".
pub struct Beacon {
    socket: UdpSocket,
    key: Key,
    node: u64,
    born: Instant,
    last_seq: AtomicU64,
    interval: Duration,
    /// Announced in every datagram (the port of `listen`).
    listen_port: u16,
    /// Configured peers (always sent to, even before they answer).
    targets: Vec<SocketAddr>,
    state: Mutex<(Announce, u32, u32)>,
    peers: Mutex<HashMap<SocketAddr, Peer>>,
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
            targets,
            state: Mutex::new((announce, u32::MAX, u32::MAX)),
            peers: Mutex::new(HashMap::new()),
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
        lock(&self.state).0 = a;
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
        lock(&self.peers).values().copied().collect()
    }

    /// The freshest proof of life among peers announcing `role` (with their datagram).
    pub fn last_alive(&self, role: NodeRole) -> Option<(Datagram, Instant)> {
        lock(&self.peers)
            .values()
            .filter_map(|p| p.fresh)
            .filter(|(d, _)| d.announce.role == role)
            .max_by_key(|(_, at)| *at)
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
            let (announce, p_age, s_age) = *state;
            let mut to: Vec<(SocketAddr, u64, u64)> = self.targets.iter().map(|a| (*a, 0, 0)).collect();
            for p in lock(&self.peers).values() {
                match to.iter_mut().find(|t| t.0 == p.addr) {
                    Some(t) => (t.1, t.2) = (p.node, p.seq),
                    None => to.push((p.addr, p.node, p.seq)),
                }
            }
            for (addr, echo_node, echo_seq) in to {
                let d = Datagram {
                    announce,
                    node: self.node,
                    seq: self.next_seq(),
                    echo_node,
                    echo_seq,
                    primary_age_ms: p_age,
                    standby_age_ms: s_age,
                    listen_port: self.listen_port,
                };
                // A peer that is down answers with ICMP; the next round tries again.
                let _ = self.socket.send_to(&encode(&d, &self.key), addr);
            }
            drop(state);
            std::thread::sleep(self.interval);
        }
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
            match decode(&buf[..n], &self.key) {
                Ok(d) => self.accept(from, d),
                Err(Reject::Mac) => {
                    self.drops.unauthenticated.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.drops.malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Takes an authenticated datagram into the peer table.
    pub fn accept(&self, from: SocketAddr, d: Datagram) {
        if d.node == self.node {
            return; // our own datagram, looped back by a misconfiguration
        }
        let mut peers = lock(&self.peers);
        if !peers.contains_key(&from) && peers.len() >= MAX_PEERS {
            let oldest = peers.values().min_by_key(|p| p.fresh.map(|(_, at)| at)).map(|p| p.addr);
            if let Some(a) = oldest {
                peers.remove(&a);
            }
        }
        let peer = peers.entry(from).or_insert(Peer { addr: from, node: d.node, seq: 0, fresh: None });
        if peer.node != d.node {
            // Another process at that address (a restart): start its sequence over.
            if peer.fresh.is_some_and(|(_, at)| at.elapsed() < FRESH) && d.echo_node != self.node {
                // The current process there is alive and this one cannot prove it is newer.
                self.drops.stale.fetch_add(1, Ordering::Relaxed);
                return;
            }
            *peer = Peer { addr: from, node: d.node, seq: 0, fresh: None };
        }
        if d.seq <= peer.seq {
            self.drops.stale.fetch_add(1, Ordering::Relaxed);
            return;
        }
        peer.seq = d.seq;
        if d.echo_node == self.node {
            if let Some(at) = self.sent_at(d.echo_seq).filter(|at| at.elapsed() <= FRESH) {
                if peer.fresh.is_none_or(|(_, prev)| at >= prev) {
                    let changed =
                        |prev: &Announce| Announce { pos: 0, ..*prev } != Announce { pos: 0, ..d.announce };
                    if peer.fresh.is_none_or(|(prev, _)| changed(&prev.announce)) {
                        log::info(&format!(
                            "heartbeat: {} at {from} is {}{} (epoch {}, history {:016x})",
                            d.announce.role.name(),
                            if d.announce.fenced { "fenced " } else { "" },
                            if d.announce.synced { "synced" } else { "not synced" },
                            d.announce.epoch,
                            d.announce.history
                        ));
                    }
                    peer.fresh = Some((d, at));
                }
            }
        }
    }
}

/// Milliseconds since `at`, saturated to the datagram field (u32::MAX means never).
pub fn age_ms(at: Option<Instant>) -> u32 {
    at.map_or(u32::MAX, |t| t.elapsed().as_millis().min(u32::MAX as u128 - 1) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            node: 99,
            seq: 1234,
            echo_node: 5,
            echo_seq: 6,
            primary_age_ms: 10,
            standby_age_ms: u32::MAX,
            listen_port: 7480,
        }
    }

    #[test]
    fn datagrams_round_trip_and_every_bit_flip_is_rejected() {
        let k = key();
        let b = encode(&sample(), &k);
        assert_eq!(decode(&b, &k), Ok(sample()));
        for bit in 0..DATAGRAM_LEN * 8 {
            let mut d = b;
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&d, &k).is_err(), "bit {bit} flipped was accepted");
        }
        assert_eq!(decode(&b[..DATAGRAM_LEN - 1], &k), Err(Reject::Length));
        let other = Key::new(b"another key of sixteen bytes".to_vec()).unwrap();
        assert_eq!(decode(&b, &other), Err(Reject::Mac));
    }

    fn beacon(role: NodeRole, targets: &[String]) -> Arc<Beacon> {
        let a = Announce { role, fenced: false, synced: true, claim: false, epoch: 1, history: 1, pos: 0 };
        Beacon::start("127.0.0.1:0", targets, key(), Duration::from_millis(20), a).unwrap()
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

    #[test]
    fn replayed_or_unechoed_datagrams_prove_nothing() {
        let p = beacon(NodeRole::Primary, &[]);
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        // A datagram that echoes nothing of ours: the address is learned, liveness is not.
        p.accept(from, Datagram { echo_node: 0, echo_seq: 0, ..sample() });
        assert!(p.last_alive(NodeRole::Standby).is_none());
        // Echoing a sequence number we never sent: nothing.
        p.accept(from, Datagram { seq: 2000, echo_node: p.node, echo_seq: u64::MAX, ..sample() });
        assert!(p.last_alive(NodeRole::Standby).is_none());
        // A fresh echo counts; replaying the same datagram (same seq) is dropped.
        std::thread::sleep(Duration::from_millis(50));
        let mine = p.last_seq.load(Ordering::Acquire);
        let good = Datagram { seq: 3000, echo_node: p.node, echo_seq: mine, ..sample() };
        p.accept(from, good);
        assert!(p.last_alive(NodeRole::Standby).is_some());
        let stale_before = p.drops.stale.load(Ordering::Relaxed);
        p.accept(from, good);
        assert_eq!(p.drops.stale.load(Ordering::Relaxed), stale_before + 1);
        p.stop();
    }
}
