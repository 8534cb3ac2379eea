//! The authenticated replication stream: after the handshake (`auth`), every byte either side
//! sends travels in a sealed record, with or without TLS, so whoever can inject into the TCP
//! connection (or corrupt, drop, repeat or reorder its segments) cannot feed a peer anything.
//!
//! ```text
//! record      len u32 LE (1..=RECORD_MAX) | data (len bytes) | tag (32 bytes)
//! tag         HMAC-SHA256(k_dir, seq u64 LE || len u32 LE || data)
//! k_dir       HMAC-SHA256(psk, "gardenstate-stream-2 primary to standby" || ns || np)  (or
//!             "... standby to primary"), ns and np the handshake's two fresh nonces
//! seq         the record's number in its direction, from 0: never sent, each side counts
//! ```
//!
//! Session keys: one per direction, derived from the pre-shared key and both handshake nonces
//! (an HMAC keyed with the PSK over a label and the nonces: HKDF's expand step with the PSK as
//! the pseudo-random key), so they are fresh for every connection (a record of one connection
//! is worthless in another, or in the other direction). HMAC-SHA256 comes from the RustCrypto
//! `hmac` and `sha2` crates the handshake already uses (maintained, constant-time
//! verification, no new dependency). Replay protection: the sequence number is inside the MAC
//! and never on the wire, so a dropped, repeated, reordered or injected record has the wrong
//! tag for the number the receiver expects. The first bad record fails the read with an
//! [`InvalidData`](io::ErrorKind::InvalidData) error naming the record and what may have
//! happened, and every read after it fails too: the daemons close the link and log it, and
//! nothing from the bad record (or after it) reaches the frame decoder, so it never changes
//! the standby.

use crate::replication::frame::MAC_LEN;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{self, Read, Write};

/// The largest record payload: what a reader buffers before it can check a tag.
pub const RECORD_MAX: usize = 64 << 10;
const LEN_BYTES: usize = 4;
const LABEL_TO_STANDBY: &[u8] = b"gardenstate-stream-2 primary to standby";
const LABEL_TO_PRIMARY: &[u8] = b"gardenstate-stream-2 standby to primary";

/// A session key: HMAC-SHA256 keyed with the pre-shared key over `label || first || second`
/// (HKDF's expand step with the PSK as the pseudo-random key). The one derivation of every
/// session key: the stream's (here) and the heartbeats' (`failover::pairing`).
pub fn derive_key(psk: &[u8], label: &[u8], first: &[u8], second: &[u8]) -> [u8; MAC_LEN] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(psk).expect("HMAC takes keys of any length");
    m.update(label);
    m.update(first);
    m.update(second);
    m.finalize().into_bytes().into()
}

/// Which end of the link this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Primary,
    Standby,
}

/// A connection's two session keys, as one end uses them.
#[derive(Clone)]
pub struct SessionKeys {
    send: [u8; MAC_LEN],
    recv: [u8; MAC_LEN],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

impl SessionKeys {
    /// The keys of `end` for the handshake that exchanged `ns` (the standby's nonce) and `np`
    /// (the primary's), under the pre-shared key `psk`.
    pub fn derive(psk: &[u8], ns: &[u8], np: &[u8], end: End) -> SessionKeys {
        let k = |label: &[u8]| derive_key(psk, label, ns, np);
        let (to_standby, to_primary) = (k(LABEL_TO_STANDBY), k(LABEL_TO_PRIMARY));
        match end {
            End::Primary => SessionKeys { send: to_standby, recv: to_primary },
            End::Standby => SessionKeys { send: to_primary, recv: to_standby },
        }
    }

    /// The sealing and opening halves.
    pub fn split(self) -> (Sealer, Opener) {
        (
            Sealer { key: self.send, seq: 0 },
            Opener { key: self.recv, seq: 0, buf: Vec::new(), at: 0, failed: None },
        )
    }
}

fn tag(key: &[u8; MAC_LEN], seq: u64, data: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(&seq.to_le_bytes());
    m.update(&(data.len() as u32).to_le_bytes());
    m.update(data);
    m
}

/// The sending half: turns bytes into records.
#[derive(Debug)]
pub struct Sealer {
    key: [u8; MAC_LEN],
    seq: u64,
}

impl Sealer {
    /// Appends `data` to `out` as records of at most [`RECORD_MAX`] bytes each.
    pub fn seal_into(&mut self, data: &[u8], out: &mut Vec<u8>) {
        for chunk in data.chunks(RECORD_MAX) {
            out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(&tag(&self.key, self.seq, chunk).finalize().into_bytes());
            self.seq += 1;
        }
    }

    /// Writes `data` to `w` as records.
    pub fn write_sealed(&mut self, w: &mut impl Write, data: &[u8]) -> io::Result<()> {
        let mut out =
            Vec::with_capacity(data.len() + (LEN_BYTES + MAC_LEN) * data.len().div_ceil(RECORD_MAX));
        self.seal_into(data, &mut out);
        w.write_all(&out)
    }
}

/// The receiving half: reads records, checks them, and hands out their bytes.
#[derive(Debug)]
pub struct Opener {
    key: [u8; MAC_LEN],
    seq: u64,
    /// The current record's data, and how much of it was handed out.
    buf: Vec<u8>,
    at: usize,
    /// Why the stream failed (every read after the first bad record fails with it).
    failed: Option<String>,
}

impl Opener {
    fn fail(&mut self, why: String) -> io::Error {
        let text = format!(
            "replication stream authentication failed at record {} ({why}): a tampered, replayed, reordered, \
             dropped or injected record; closing the link",
            self.seq
        );
        self.failed = Some(text.clone());
        io::Error::new(io::ErrorKind::InvalidData, text)
    }

    /// Reads from `r` (the raw stream) into `out`: bytes of checked records only.
    pub fn read_opened(&mut self, r: &mut impl Read, out: &mut [u8]) -> io::Result<usize> {
        if let Some(why) = &self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, why.clone()));
        }
        if out.is_empty() {
            return Ok(0);
        }
        if self.at == self.buf.len() {
            let mut len = [0u8; LEN_BYTES];
            match crate::replication::frame::read_full(r, &mut len)? {
                0 => return Ok(0), // the peer closed between records
                LEN_BYTES => {}
                n => {
                    return Err(
                        self.fail(format!("the stream ended inside a record header ({n} of 4 bytes)"))
                    );
                }
            }
            let len = u32::from_le_bytes(len) as usize;
            if len == 0 || len > RECORD_MAX {
                return Err(self.fail(format!("record length {len} is not 1..={RECORD_MAX}")));
            }
            self.buf.resize(len + MAC_LEN, 0);
            let got = crate::replication::frame::read_full(r, &mut self.buf)?;
            if got < self.buf.len() {
                return Err(
                    self.fail(format!("the stream ended inside a record ({got} of {} bytes)", len + MAC_LEN))
                );
            }
            let (data, mac) = self.buf.split_at(len);
            if tag(&self.key, self.seq, data).verify_slice(mac).is_err() {
                return Err(self.fail("its tag does not match".into()));
            }
            self.buf.truncate(len);
            self.at = 0;
            self.seq += 1;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (SessionKeys, SessionKeys) {
        let psk = b"correct horse battery staple";
        let (ns, np) = ([1u8; 32], [2u8; 32]);
        (SessionKeys::derive(psk, &ns, &np, End::Primary), SessionKeys::derive(psk, &ns, &np, End::Standby))
    }

    fn open_all(o: &mut Opener, wire: &[u8]) -> io::Result<Vec<u8>> {
        let mut r = wire;
        let mut got = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            match o.read_opened(&mut r, &mut buf)? {
                0 => return Ok(got),
                n => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[test]
    fn records_open_in_order_and_any_change_fails() {
        let (p, s) = keys();
        let (mut seal, _) = p.split();
        let (_, open) = s.split();
        let mut wire = Vec::new();
        let big = vec![9u8; RECORD_MAX + 5];
        for m in [&b"hello"[..], &big, b"x"] {
            seal.seal_into(m, &mut wire);
        }
        let rec = |i: usize| -> std::ops::Range<usize> {
            let mut at = 0;
            for _ in 0..i {
                at += LEN_BYTES + u32::from_le_bytes(wire[at..at + 4].try_into().unwrap()) as usize + MAC_LEN;
            }
            at..at + LEN_BYTES + u32::from_le_bytes(wire[at..at + 4].try_into().unwrap()) as usize + MAC_LEN
        };
        let mut o = open;
        let want: Vec<u8> = [&b"hello"[..], &big, b"x"].concat();
        assert_eq!(open_all(&mut o, &wire).unwrap(), want);
        let fresh = || keys().1.split().1;
        // A flipped bit anywhere, a dropped, repeated or swapped record, an injected one.
        for i in (0..wire.len()).step_by(997).chain([0, 3, 4, wire.len() - 1]) {
            let mut w = wire.clone();
            w[i] ^= 0x20;
            assert!(open_all(&mut fresh(), &w).is_err(), "flip at {i}");
        }
        let (r0, r1, r2, r3) = (rec(0), rec(1), rec(2), rec(3));
        let dropped = [&wire[r0.clone()], &wire[r2.clone()]].concat();
        let repeated = [&wire[r0.clone()], &wire[r0.clone()], &wire[r1.clone()]].concat();
        let swapped = [&wire[r1.clone()], &wire[r0.clone()]].concat();
        let mut other = keys().0.split().0; // a record sealed with the right key, seq 0, again
        let mut injected = wire[r0.clone()].to_vec();
        other.seal_into(b"evil", &mut injected);
        for (what, w) in [("drop", dropped), ("repeat", repeated), ("swap", swapped), ("inject", injected)] {
            let mut o = fresh();
            let e = open_all(&mut o, &w).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}");
            assert!(e.to_string().contains("authentication failed"), "{what}: {e}");
            // Stays failed.
            assert!(o.read_opened(&mut &wire[r3.end..], &mut [0u8; 4]).is_err(), "{what}");
        }
        // The standby's keys do not open what the standby itself sent (no reflection).
        let (mut sseal, _) = keys().1.split();
        let mut back = Vec::new();
        sseal.seal_into(b"ack", &mut back);
        assert!(open_all(&mut fresh(), &back).is_err());
        assert_eq!(open_all(&mut keys().0.split().1, &back).unwrap(), b"ack");
    }
}
