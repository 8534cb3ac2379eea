//! The heartbeats' handshake: a session key per pair of peers, derived from the pre-shared key
//! and a fresh nonce of each side, and per-direction sequence numbers, over datagrams.
//!
//! Every heartbeat datagram names two nonces, the sender's and the receiver's as the sender
//! knows it, and is authenticated with the key of that pair and direction:
//!
//! ```text
//! k(from, to) = HMAC-SHA256(psk, "gardenstate-heartbeat-2" || from || to)   (seal::derive_key)
//! hello       from = my offer, to = 0            "I do not know you yet"
//! data        from = my session nonce, to = the peer's session nonce
//! ```
//!
//! Each node keeps, per peer address, an *offer*: 32 fresh random bytes, replaced by new ones
//! each time it opens a session with them. Addresses it has no slot for (a standby the primary
//! has not met yet) share one offer, the *stranger* offer, replaced the same way.
//!
//! ```text
//! A -> B   hello (a, 0)              a: A's offer for B
//! B -> A   (b, a)  at once           b: B's offer for A; B keeps no state for it
//! A        (b, a) names A's offer: a datagram made after A made `a`, by a holder of the PSK:
//!          A opens the session (a, b) and makes a new offer
//! A -> B   (a, b)                    B: it names B's offer: B opens the session (b, a)
//! ```
//!
//! Both nonces are fresh on each side's own terms: a node opens a session only on a datagram
//! that names its current offer, which it made after every earlier session, so no recording
//! can open one. The rules for an authenticated datagram from address X:
//! - it names X's current session (`from` = their nonce, `to` = mine): accepted if its sequence
//!   number is above the last accepted one in that direction, else dropped as reordered or
//!   replayed;
//! - it names my current offer for X: it opens a new session with X (the peer restarted, or
//!   this is the first contact), replacing any older one;
//! - a hello: answered at once with `(my offer, their nonce)`; nothing changes, so a replayed
//!   hello is harmless (its answer names an offer of a past process, which no node holds);
//! - anything else is from no current session (a replay of an old one, or a peer that lost
//!   its session: it restarted, or we did): dropped; if we have no session with X we answer
//!   with a hello, so a peer that still holds a session with our previous process learns to
//!   open a new one.
//!
//! So a datagram that fails its tag changes nothing, an authentic old one changes nothing, and
//! a slot is only ever created by a datagram that names an offer made after every session
//! before it: nothing a recording or a forgery sends can grow this state or reset a session.
//! A restarted peer has a new offer, its hello is answered, and its first datagram naming our
//! offer replaces the session of its previous process.

use crate::replication::auth::{self, Key};
use crate::replication::frame::{MAC_LEN, NONCE_LEN};
use crate::replication::seal::derive_key;

pub type Nonce = [u8; NONCE_LEN];
/// A datagram key (one pair of nonces, one direction).
pub type DatagramKey = [u8; MAC_LEN];
/// The receiver nonce of a hello.
pub const NO_NONCE: Nonce = [0; NONCE_LEN];
const LABEL: &[u8] = b"gardenstate-heartbeat-2";

/// The key of datagrams sent by the holder of `from` to the holder of `to`.
pub fn direction_key(psk: &Key, from: &Nonce, to: &Nonce) -> DatagramKey {
    derive_key(psk.bytes(), LABEL, from, to)
}

/// 32 fresh random bytes, never [`NO_NONCE`].
pub fn offer() -> Result<Nonce, String> {
    let mut n = auth::nonce().map_err(|e| format!("heartbeat nonce from /dev/urandom: {e}"))?;
    n[0] |= 1;
    Ok(n)
}

/// How to authenticate the next datagram to a peer, and the sequence number to echo (0: none).
#[derive(Clone, Copy)]
pub struct Outgoing {
    pub from: Nonce,
    pub to: Nonce,
    pub key: DatagramKey,
    pub echo: u64,
}

struct Session {
    mine: Nonce,
    theirs: Nonce,
    send: DatagramKey,
    recv: DatagramKey,
    /// The newest sequence number accepted from the peer in this session.
    last_seq: u64,
}

/// One peer address's handshake state: my current offer and the session, if one is open.
pub struct Pairing {
    offer: Nonce,
    session: Option<Session>,
}

/// What to do with a datagram, by [`receive`].
pub enum Verdict {
    /// Its tag does not match the key its nonces name.
    Forged,
    /// My own hello, looped back.
    Own,
    /// A hello: send this answer; nothing changed.
    Hello(Outgoing),
    /// The next datagram of the current session: accept it.
    Current,
    /// It opened a new session: accept it. For a stranger, the new slot's pairing.
    Opened(Option<Pairing>),
    /// Of the current session, but not newer than the last accepted one (reordered, replayed).
    Stale,
    /// Authentic, of no current session (a replay, or a peer that lost its session); send the
    /// hello if one is given (we have no session with that address).
    OldSession(Option<Outgoing>),
}

impl Pairing {
    pub fn new() -> Result<Pairing, String> {
        Ok(Pairing { offer: offer()?, session: None })
    }

    /// The next datagram to this peer: in the session, or a hello.
    pub fn outgoing(&self, psk: &Key) -> Outgoing {
        match &self.session {
            Some(s) => Outgoing { from: s.mine, to: s.theirs, key: s.send, echo: s.last_seq },
            None => hello(psk, &self.offer),
        }
    }
}

fn hello(psk: &Key, offer: &Nonce) -> Outgoing {
    Outgoing { from: *offer, to: NO_NONCE, key: direction_key(psk, offer, &NO_NONCE), echo: 0 }
}

/// Classifies a datagram from one address with the nonces `from` and `to` and sequence number
/// `seq` (read before authentication: they name the key), and moves the handshake on.
/// `pairing`: the address's slot, if it has one; `stranger`: the offer to addresses without.
/// `authentic` checks the datagram's tag with a key. An error only when no fresh nonce could
/// be read (nothing changed then).
pub fn receive(
    psk: &Key,
    pairing: Option<&mut Pairing>,
    stranger: &mut Nonce,
    (from, to, seq): (&Nonce, &Nonce, u64),
    authentic: impl Fn(&DatagramKey) -> bool,
) -> Result<Verdict, String> {
    if let Some(s) = pairing.as_ref().and_then(|p| p.session.as_ref()) {
        if (from, to) == (&s.theirs, &s.mine) {
            if !authentic(&s.recv) {
                return Ok(Verdict::Forged);
            }
            let s = pairing.expect("checked").session.as_mut().expect("checked");
            if seq <= s.last_seq {
                return Ok(Verdict::Stale);
            }
            s.last_seq = seq;
            return Ok(Verdict::Current);
        }
    }
    let key = direction_key(psk, from, to);
    if !authentic(&key) {
        return Ok(Verdict::Forged);
    }
    let my_offer = pairing.as_ref().map_or(*stranger, |p| p.offer);
    if *to == NO_NONCE {
        if *from == my_offer {
            return Ok(Verdict::Own);
        }
        let reply =
            Outgoing { from: my_offer, to: *from, key: direction_key(psk, &my_offer, from), echo: seq };
        return Ok(Verdict::Hello(reply));
    }
    if *to != my_offer {
        let lost = pairing.as_ref().is_none_or(|p| p.session.is_none());
        return Ok(Verdict::OldSession(lost.then(|| hello(psk, &my_offer))));
    }
    let session =
        Session { mine: *to, theirs: *from, send: direction_key(psk, to, from), recv: key, last_seq: seq };
    match pairing {
        Some(p) => {
            p.offer = offer()?;
            p.session = Some(session);
            Ok(Verdict::Opened(None))
        }
        None => {
            let p = Pairing { offer: offer()?, session: Some(session) };
            *stranger = offer()?;
            Ok(Verdict::Opened(Some(p)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psk() -> Key {
        Key::new(b"pairing test key, long enough".to_vec()).unwrap()
    }

    /// One node's view of one peer, with its own stranger offer.
    struct End {
        pairing: Option<Pairing>,
        stranger: Nonce,
    }

    /// A datagram on the wire: its nonces, its seq, and the key it was sealed with.
    #[derive(Clone, Copy)]
    struct Wire {
        from: Nonce,
        to: Nonce,
        seq: u64,
        key: DatagramKey,
    }

    impl End {
        fn new(slot: bool) -> End {
            End { pairing: slot.then(|| Pairing::new().unwrap()), stranger: offer().unwrap() }
        }
        fn send(&self, seq: u64) -> Wire {
            let o = self.pairing.as_ref().expect("a slot").outgoing(&psk());
            Wire { from: o.from, to: o.to, seq, key: o.key }
        }
        fn recv(&mut self, w: Wire) -> Verdict {
            let v =
                receive(&psk(), self.pairing.as_mut(), &mut self.stranger, (&w.from, &w.to, w.seq), |k| {
                    *k == w.key
                })
                .unwrap();
            if let Verdict::Opened(Some(p)) = v {
                self.pairing = Some(p);
                return Verdict::Opened(None);
            }
            v
        }
        fn session(&self) -> Option<(Nonce, Nonce)> {
            self.pairing.as_ref()?.session.as_ref().map(|s| (s.mine, s.theirs))
        }
    }

    fn reply(v: Verdict, seq: u64) -> Wire {
        match v {
            Verdict::Hello(o) | Verdict::OldSession(Some(o)) => {
                Wire { from: o.from, to: o.to, seq, key: o.key }
            }
            _ => panic!("no answer"),
        }
    }

    /// `a` (which targets `b`) and `b` (which learns `a`) open a session: hello, answer, data.
    fn pair(a: &mut End, b: &mut End, seq: &mut u64) {
        *seq += 1;
        let answer = reply(b.recv(a.send(*seq)), *seq + 1);
        *seq += 1;
        assert!(matches!(a.recv(answer), Verdict::Opened(None)));
        *seq += 1;
        assert!(matches!(b.recv(a.send(*seq)), Verdict::Opened(None)));
        let (am, at) = a.session().unwrap();
        assert_eq!(b.session().unwrap(), (at, am));
    }

    fn name(v: Verdict) -> &'static str {
        match v {
            Verdict::Forged => "forged",
            Verdict::Own => "own",
            Verdict::Hello(_) => "hello",
            Verdict::Current => "current",
            Verdict::Opened(_) => "opened",
            Verdict::Stale => "stale",
            Verdict::OldSession(Some(_)) => "old+hello",
            Verdict::OldSession(None) => "old",
        }
    }

    #[test]
    fn a_session_opens_reorders_are_stale_and_forgeries_fail() {
        let (mut a, mut b, mut seq) = (End::new(true), End::new(false), 0);
        pair(&mut a, &mut b, &mut seq);
        let (d1, d2) = (a.send(10), a.send(11));
        assert_eq!(name(b.recv(d2)), "current");
        assert_eq!(name(b.recv(d1)), "stale");
        assert_eq!(name(b.recv(d2)), "stale");
        assert_eq!(name(b.recv(Wire { key: [7; 32], ..a.send(12) })), "forged");
        let mut flipped = a.send(12);
        flipped.to[5] ^= 4;
        assert_eq!(name(b.recv(flipped)), "forged");
        // The direction matters: b's own datagram reflected to b is no datagram of a.
        assert_eq!(name(b.recv(b.send(13))), "old");
        // A replayed hello is answered and changes nothing.
        let s = b.session();
        assert_eq!(
            name(b.recv(Wire {
                to: NO_NONCE,
                key: direction_key(&psk(), &[9; 32], &NO_NONCE),
                ..a.send(14)
            })),
            "forged"
        );
        let hello = {
            let o = hello(&psk(), &[9; 32]);
            Wire { from: o.from, to: o.to, seq: 1, key: o.key }
        };
        assert_eq!(name(b.recv(hello)), "hello");
        assert_eq!(b.session(), s);
        assert_eq!(name(b.recv(a.send(15))), "current");
    }

    #[test]
    fn a_restarted_peer_is_paired_again_and_its_old_session_is_never_replayed() {
        let (mut a, mut b, mut seq) = (End::new(true), End::new(false), 0);
        pair(&mut a, &mut b, &mut seq);
        let captured: Vec<Wire> = (0..3).map(|i| a.send(100 + i)).collect();
        for w in &captured {
            assert_eq!(name(b.recv(*w)), "current");
        }
        // a restarts: a new process, new offers, sequence numbers from 1 again.
        let mut a2 = End::new(true);
        seq = 0;
        pair(&mut a2, &mut b, &mut seq);
        let now = b.session();
        // The recorded datagrams of a's first process (with far higher seqs) change nothing.
        for w in &captured {
            assert_eq!(name(b.recv(*w)), "old");
        }
        assert_eq!(b.session(), now);
        assert_eq!(name(b.recv(a2.send(50))), "current");
        // b restarts: a's session is gone there; a's datagrams get a hello back, and its answer
        // opens a new session on a's side, and a's next datagram on b's.
        let mut b2 = End::new(false);
        let hello = reply(b2.recv(a2.send(51)), 1);
        let answer = reply(a2.recv(hello), 52);
        assert_eq!(name(b2.recv(answer)), "opened");
        assert_eq!(name(a2.recv(b2.send(2))), "opened");
        let (m, t) = a2.session().unwrap();
        assert_eq!(b2.session().unwrap(), (t, m));
        // The first b's answers and data are worthless now.
        assert_eq!(name(a2.recv(Wire { seq: 999, ..b.send(999) })), "old");
    }
}
