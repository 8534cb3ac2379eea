//! The replication wire format: framed, versioned, checksummed messages over TCP.
//!
//! All integers are little-endian. A frame is
//!
//! ```text
//! header (8 bytes)
//!   0  2  magic     "GS"
//!   2  1  version   PROTOCOL_VERSION (2: every byte after the handshake is in sealed records, `seal`)
//!   3  1  type      1..=11 (see `Message`)
//!   4  4  length    u32: payload bytes, at most the receiver's limit
//! payload           `length` bytes, laid out per type (below)
//! checksum (8)      u64: xxh3-64, seed 0, of header + payload
//! ```
//!
//! Payloads (`pos` is a change-feed position of the primary: every change before it has been
//! sent, or, in an `Ack`, applied):
//!
//! | type | message | payload |
//! | --- | --- | --- |
//! | 1 | Hello | proto u16, role u8 (1 primary, 2 standby, 3 control: `gardenstate switchover`), history u64, epoch u64, feed_head u64, heap_bytes u64, max_entries u64, max_key u32, max_value u64, max_clients u32, feed_len u64, evict u8 (68 bytes) |
//! | 2 | Challenge | nonce, 32 bytes |
//! | 3 | Response | HMAC-SHA256, 32 bytes |
//! | 4 | SnapshotBegin | empty |
//! | 5 | Entry | flags u8 (1 ttl, 2 sliding, 4 lock), pos u64, ttl_left_ms u64, sliding_ms u64, lock_id u64, lock_age_ms u64, key_len u32, key, value (the rest) |
//! | 6 | Delete | pos u64, key (the rest, 1 byte or more) |
//! | 7 | SnapshotEnd | pos u64 |
//! | 8 | Heartbeat | pos u64 (primary → standby: everything before pos was sent) |
//! | 9 | Ack | pos u64 (standby → primary: everything before pos was applied) |
//! | 10 | Promote | pos u64, epoch u64 (switchover, primary → standby: you have everything before pos; become the primary with epoch) |
//! | 11 | Done | ok u8 (0 or 1), text (UTF-8, the rest): the outcome of a Promote or of a switchover |
//!
//! Decoding is strict and total: a bad magic, another version, an unknown type, a length over
//! the limit, a short read, a checksum mismatch, or a payload that does not have its type's
//! exact layout (a wrong size, unknown flag bits, fields that contradict the flags) are each a
//! distinct [`FrameError`], never a panic. The checksum is verified before the payload is
//! parsed, so nothing is acted on from a damaged frame. The receiver sets the length limit:
//! a small one before authentication (so a stranger cannot make it allocate), then the
//! segment's `max_key + max_value + 64`, and never more than [`MAX_PAYLOAD`].

use gardenstate::Options;
use std::fmt;
use std::io::{self, Read, Write};
use xxhash_rust::xxh3::xxh3_64;

pub const MAGIC: [u8; 2] = *b"GS";
pub const PROTOCOL_VERSION: u8 = 2;
pub const HEADER_LEN: usize = 8;
/// The highest frame type this build knows (`Message::type_byte`).
pub const LAST_TYPE: u8 = 11;
pub const CHECKSUM_LEN: usize = 8;
/// The largest payload any frame may have: a 1 GiB value plus room for its key and fields.
pub const MAX_PAYLOAD: u32 = (1 << 30) + (64 << 10);
/// The limit before the peer is authenticated: the largest handshake frame is a Hello.
pub const HANDSHAKE_MAX_PAYLOAD: u32 = 128;
pub const NONCE_LEN: usize = 32;
pub const MAC_LEN: usize = 32;
const ENTRY_FIXED: usize = 1 + 8 * 5 + 4;
const FLAG_TTL: u8 = 1;
const FLAG_SLIDING: u8 = 2;
const FLAG_LOCK: u8 = 4;

/// The payload limit for a segment's entries.
pub fn payload_limit(max_key: u64, max_value: u64) -> u32 {
    max_key.saturating_add(max_value).saturating_add(64).min(MAX_PAYLOAD as u64) as u32
}

/// Who sent a Hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary = 1,
    Standby = 2,
    /// `gardenstate switchover`: an operator's request, not a replica.
    Control = 3,
}

/// The shape of a segment, so a standby can create its own like the primary's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    pub heap_bytes: u64,
    pub max_entries: u64,
    pub max_key: u32,
    pub max_value: u64,
    pub max_clients: u32,
    pub feed_len: u64,
    pub evict: bool,
}

impl Shape {
    /// The shape of a segment created with `o` (its mode is not part of the shape).
    pub fn of(o: &Options) -> Shape {
        Shape {
            heap_bytes: o.capacity_bytes,
            max_entries: o.max_entries,
            max_key: o.max_key,
            max_value: o.max_value,
            max_clients: o.max_clients,
            feed_len: o.feed_len,
            evict: o.evict,
        }
    }

    /// The options that create a segment of this shape, mode 0600.
    pub fn options(&self) -> Options {
        Options {
            capacity_bytes: self.heap_bytes,
            max_entries: self.max_entries,
            max_key: self.max_key,
            max_value: self.max_value,
            max_clients: self.max_clients,
            feed_len: self.feed_len,
            evict: self.evict,
            mode: 0o600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub proto: u16,
    pub role: Role,
    pub history: u64,
    pub epoch: u64,
    pub feed_head: u64,
    pub shape: Shape,
}

/// One replicated entry, as the primary had it when it read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFrame {
    pub pos: u64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub ttl_left_ms: Option<u64>,
    pub sliding_ms: Option<u64>,
    /// (lock id, age in ms)
    pub lock: Option<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    Challenge([u8; NONCE_LEN]),
    Response([u8; MAC_LEN]),
    SnapshotBegin,
    Entry(EntryFrame),
    Delete {
        pos: u64,
        key: Vec<u8>,
    },
    SnapshotEnd {
        pos: u64,
    },
    Heartbeat {
        pos: u64,
    },
    Ack {
        pos: u64,
    },
    /// Switchover, primary to standby: you have every change before `pos` (the primary's
    /// writes are drained); become the primary with `epoch`.
    Promote {
        pos: u64,
        epoch: u64,
    },
    /// The outcome of a Promote (standby to primary) or of a switchover (primary to the
    /// operator's command): ok, and a line for a person.
    Done {
        ok: bool,
        text: String,
    },
}

impl Message {
    pub fn type_byte(&self) -> u8 {
        match self {
            Message::Hello(_) => 1,
            Message::Challenge(_) => 2,
            Message::Response(_) => 3,
            Message::SnapshotBegin => 4,
            Message::Entry(_) => 5,
            Message::Delete { .. } => 6,
            Message::SnapshotEnd { .. } => 7,
            Message::Heartbeat { .. } => 8,
            Message::Ack { .. } => 9,
            Message::Promote { .. } => 10,
            Message::Done { .. } => 11,
        }
    }

    /// The message's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Challenge(_) => "Challenge",
            Message::Response(_) => "Response",
            Message::SnapshotBegin => "SnapshotBegin",
            Message::Entry(_) => "Entry",
            Message::Delete { .. } => "Delete",
            Message::SnapshotEnd { .. } => "SnapshotEnd",
            Message::Heartbeat { .. } => "Heartbeat",
            Message::Ack { .. } => "Ack",
            Message::Promote { .. } => "Promote",
            Message::Done { .. } => "Done",
        }
    }
}

/// Every way a frame can be refused.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection at a frame boundary.
    Closed,
    BadMagic {
        found: [u8; 2],
    },
    BadVersion {
        found: u8,
    },
    UnknownType {
        found: u8,
    },
    TooLong {
        len: u32,
        limit: u32,
    },
    /// The input ended inside a frame.
    Truncated {
        needed: usize,
        got: usize,
    },
    BadChecksum {
        expected: u64,
        found: u64,
    },
    /// The checksum matched but the payload is not a valid message of its type.
    Malformed {
        kind: &'static str,
        reason: String,
    },
    Io(io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Closed => write!(f, "connection closed by the peer"),
            FrameError::BadMagic { found } => write!(
                f,
                "bad frame magic {found:02x?} (expected \"GS\"): the peer does not speak the gardenstate replication protocol"
            ),
            FrameError::BadVersion { found } => write!(
                f,
                "protocol version {found}, this build speaks {PROTOCOL_VERSION}: run the same gardenstate version on both hosts"
            ),
            FrameError::UnknownType { found } => write!(f, "unknown frame type {found}"),
            FrameError::TooLong { len, limit } => {
                write!(f, "frame payload of {len} bytes exceeds the limit of {limit}")
            }
            FrameError::Truncated { needed, got } => {
                write!(f, "truncated frame: {got} of {needed} bytes before the input ended")
            }
            FrameError::BadChecksum { expected, found } => {
                write!(
                    f,
                    "frame checksum mismatch (computed {expected:016x}, frame says {found:016x}): damaged in transit"
                )
            }
            FrameError::Malformed { kind, reason } => write!(f, "malformed {kind} frame: {reason}"),
            FrameError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Appends `m` as one frame to `out`.
pub fn encode_into(m: &Message, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(PROTOCOL_VERSION);
    out.push(m.type_byte());
    out.extend_from_slice(&[0; 4]);
    let p = out.len();
    match m {
        Message::Hello(h) => {
            out.extend_from_slice(&h.proto.to_le_bytes());
            out.push(h.role as u8);
            for v in [h.history, h.epoch, h.feed_head, h.shape.heap_bytes, h.shape.max_entries] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&h.shape.max_key.to_le_bytes());
            out.extend_from_slice(&h.shape.max_value.to_le_bytes());
            out.extend_from_slice(&h.shape.max_clients.to_le_bytes());
            out.extend_from_slice(&h.shape.feed_len.to_le_bytes());
            out.push(h.shape.evict as u8);
        }
        Message::Challenge(b) | Message::Response(b) => out.extend_from_slice(b),
        Message::SnapshotBegin => {}
        Message::Entry(e) => {
            let flags = (e.ttl_left_ms.is_some() as u8 * FLAG_TTL)
                | (e.sliding_ms.is_some() as u8 * FLAG_SLIDING)
                | (e.lock.is_some() as u8 * FLAG_LOCK);
            out.push(flags);
            let (lock_id, lock_age) = e.lock.unwrap_or((0, 0));
            for v in [e.pos, e.ttl_left_ms.unwrap_or(0), e.sliding_ms.unwrap_or(0), lock_id, lock_age] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
            out.extend_from_slice(&e.key);
            out.extend_from_slice(&e.value);
        }
        Message::Delete { pos, key } => {
            out.extend_from_slice(&pos.to_le_bytes());
            out.extend_from_slice(key);
        }
        Message::SnapshotEnd { pos } | Message::Heartbeat { pos } | Message::Ack { pos } => {
            out.extend_from_slice(&pos.to_le_bytes())
        }
        Message::Promote { pos, epoch } => {
            out.extend_from_slice(&pos.to_le_bytes());
            out.extend_from_slice(&epoch.to_le_bytes());
        }
        Message::Done { ok, text } => {
            out.push(u8::from(*ok));
            out.extend_from_slice(text.as_bytes());
        }
    }
    let len = (out.len() - p) as u32;
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    let sum = xxh3_64(&out[start..]);
    out.extend_from_slice(&sum.to_le_bytes());
}

pub fn encode(m: &Message) -> Vec<u8> {
    let mut v = Vec::new();
    encode_into(m, &mut v);
    v
}

/// Writes `m` as one frame (buffered writers batch many).
pub fn write_frame(w: &mut impl Write, m: &Message, scratch: &mut Vec<u8>) -> io::Result<()> {
    scratch.clear();
    encode_into(m, scratch);
    w.write_all(scratch)
}

/// Checks a header; returns the type and payload length.
fn check_header(h: &[u8; HEADER_LEN], limit: u32) -> Result<(u8, u32), FrameError> {
    if h[0..2] != MAGIC {
        return Err(FrameError::BadMagic { found: [h[0], h[1]] });
    }
    if h[2] != PROTOCOL_VERSION {
        return Err(FrameError::BadVersion { found: h[2] });
    }
    if !(1..=LAST_TYPE).contains(&h[3]) {
        return Err(FrameError::UnknownType { found: h[3] });
    }
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let limit = limit.min(MAX_PAYLOAD);
    if len > limit {
        return Err(FrameError::TooLong { len, limit });
    }
    Ok((h[3], len))
}

/// Decodes one frame at the start of `buf`; returns the message and the bytes it used.
pub fn decode(buf: &[u8], limit: u32) -> Result<(Message, usize), FrameError> {
    let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
        return Err(FrameError::Truncated { needed: HEADER_LEN, got: buf.len() });
    };
    let (ty, len) = check_header(h, limit)?;
    let total = HEADER_LEN + len as usize + CHECKSUM_LEN;
    if buf.len() < total {
        return Err(FrameError::Truncated { needed: total, got: buf.len() });
    }
    let body = &buf[..HEADER_LEN + len as usize];
    let found = u64::from_le_bytes(buf[body.len()..total].try_into().expect("8 bytes"));
    let expected = xxh3_64(body);
    if expected != found {
        return Err(FrameError::BadChecksum { expected, found });
    }
    Ok((parse_payload(ty, &body[HEADER_LEN..])?, total))
}

/// Reads one frame from `r` (blocking); `buf` is reused between calls.
pub fn read_frame(r: &mut impl Read, limit: u32, buf: &mut Vec<u8>) -> Result<Message, FrameError> {
    let mut h = [0u8; HEADER_LEN];
    let got = read_full(r, &mut h).map_err(FrameError::Io)?;
    if got == 0 {
        return Err(FrameError::Closed);
    }
    if got < HEADER_LEN {
        return Err(FrameError::Truncated { needed: HEADER_LEN, got });
    }
    let (_, len) = check_header(&h, limit)?;
    let total = HEADER_LEN + len as usize + CHECKSUM_LEN;
    buf.clear();
    buf.extend_from_slice(&h);
    // Grows with the bytes actually received, so a huge length in a short stream fails as
    // truncation without allocating what it announced.
    loop {
        match r.by_ref().take((total - buf.len()) as u64).read_to_end(buf) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let got = buf.len();
    if got < total {
        return Err(FrameError::Truncated { needed: total, got });
    }
    decode(buf, limit).map(|(m, _)| m)
}

/// Reads until `buf` is full or the input ends (retrying `Interrupted`); returns the bytes
/// read. Also the dump reader's (`snapshot`).
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn malformed(kind: &'static str, reason: impl Into<String>) -> FrameError {
    FrameError::Malformed { kind, reason: reason.into() }
}

fn u64_at(p: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(p[at..at + 8].try_into().expect("caller checked the length"))
}

fn u32_at(p: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(p[at..at + 4].try_into().expect("caller checked the length"))
}

fn exact(kind: &'static str, p: &[u8], n: usize) -> Result<(), FrameError> {
    if p.len() != n {
        return Err(malformed(kind, format!("payload of {} bytes, expected {n}", p.len())));
    }
    Ok(())
}

fn parse_payload(ty: u8, p: &[u8]) -> Result<Message, FrameError> {
    Ok(match ty {
        1 => {
            exact("Hello", p, 68)?;
            let role = match p[2] {
                1 => Role::Primary,
                2 => Role::Standby,
                3 => Role::Control,
                r => return Err(malformed("Hello", format!("unknown role {r}"))),
            };
            if p[67] > 1 {
                return Err(malformed("Hello", format!("evict flag {}", p[67])));
            }
            Message::Hello(Hello {
                proto: u16::from_le_bytes([p[0], p[1]]),
                role,
                history: u64_at(p, 3),
                epoch: u64_at(p, 11),
                feed_head: u64_at(p, 19),
                shape: Shape {
                    heap_bytes: u64_at(p, 27),
                    max_entries: u64_at(p, 35),
                    max_key: u32_at(p, 43),
                    max_value: u64_at(p, 47),
                    max_clients: u32_at(p, 55),
                    feed_len: u64_at(p, 59),
                    evict: p[67] == 1,
                },
            })
        }
        2 => {
            exact("Challenge", p, NONCE_LEN)?;
            Message::Challenge(p.try_into().expect("checked"))
        }
        3 => {
            exact("Response", p, MAC_LEN)?;
            Message::Response(p.try_into().expect("checked"))
        }
        4 => {
            exact("SnapshotBegin", p, 0)?;
            Message::SnapshotBegin
        }
        5 => {
            if p.len() < ENTRY_FIXED {
                return Err(malformed(
                    "Entry",
                    format!("payload of {} bytes, at least {ENTRY_FIXED}", p.len()),
                ));
            }
            let flags = p[0];
            if flags & !(FLAG_TTL | FLAG_SLIDING | FLAG_LOCK) != 0 {
                return Err(malformed("Entry", format!("unknown flags {flags:#x}")));
            }
            let (pos, ttl, sliding, lock_id, lock_age) =
                (u64_at(p, 1), u64_at(p, 9), u64_at(p, 17), u64_at(p, 25), u64_at(p, 33));
            let key_len = u32_at(p, 41) as usize;
            if key_len == 0 || key_len > p.len() - ENTRY_FIXED {
                return Err(malformed(
                    "Entry",
                    format!("key length {key_len} in a {}-byte payload", p.len()),
                ));
            }
            if flags & FLAG_SLIDING != 0 && flags & FLAG_TTL == 0 {
                return Err(malformed("Entry", "a sliding window without a TTL"));
            }
            let set = |flag: u8, v: u64| if flags & flag != 0 { Some(v) } else { None };
            for (flag, v, name) in
                [(FLAG_TTL, ttl, "ttl"), (FLAG_SLIDING, sliding, "sliding"), (FLAG_LOCK, lock_id, "lock")]
            {
                if flags & flag == 0 && v != 0 {
                    return Err(malformed("Entry", format!("{name} field set without its flag")));
                }
            }
            if flags & FLAG_LOCK == 0 && lock_age != 0 {
                return Err(malformed("Entry", "lock age set without a lock"));
            }
            Message::Entry(EntryFrame {
                pos,
                key: p[ENTRY_FIXED..ENTRY_FIXED + key_len].to_vec(),
                value: p[ENTRY_FIXED + key_len..].to_vec(),
                ttl_left_ms: set(FLAG_TTL, ttl),
                sliding_ms: set(FLAG_SLIDING, sliding),
                lock: set(FLAG_LOCK, lock_id).map(|id| (id, lock_age)),
            })
        }
        6 => {
            if p.len() < 9 {
                return Err(malformed("Delete", format!("payload of {} bytes, at least 9", p.len())));
            }
            Message::Delete { pos: u64_at(p, 0), key: p[8..].to_vec() }
        }
        7..=9 => {
            let kind = ["SnapshotEnd", "Heartbeat", "Ack"][ty as usize - 7];
            exact(kind, p, 8)?;
            let pos = u64_at(p, 0);
            match ty {
                7 => Message::SnapshotEnd { pos },
                8 => Message::Heartbeat { pos },
                _ => Message::Ack { pos },
            }
        }
        10 => {
            exact("Promote", p, 16)?;
            Message::Promote { pos: u64_at(p, 0), epoch: u64_at(p, 8) }
        }
        11 => {
            let (&ok, text) = p.split_first().ok_or_else(|| malformed("Done", "empty payload"))?;
            if ok > 1 {
                return Err(malformed("Done", format!("ok flag {ok}")));
            }
            let text =
                String::from_utf8(text.to_vec()).map_err(|_| malformed("Done", "text is not UTF-8"))?;
            Message::Done { ok: ok == 1, text }
        }
        _ => return Err(FrameError::UnknownType { found: ty }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello(Hello {
                proto: 1,
                role: Role::Primary,
                history: 0xdead_beef_0123_4567,
                epoch: 3,
                feed_head: 99,
                shape: Shape {
                    heap_bytes: 64 << 20,
                    max_entries: 65_536,
                    max_key: 256,
                    max_value: 1 << 20,
                    max_clients: 512,
                    feed_len: 65_536,
                    evict: true,
                },
            }),
            Message::Hello(Hello {
                proto: 1,
                role: Role::Standby,
                history: 1,
                epoch: 0,
                feed_head: 0,
                shape: Shape::default(),
            }),
            Message::Challenge([7; NONCE_LEN]),
            Message::Response([0xa5; MAC_LEN]),
            Message::SnapshotBegin,
            crate::fuzzing::entry_message(),
            Message::Entry(EntryFrame {
                pos: 13,
                key: vec![0, 255, 10],
                value: Vec::new(),
                ttl_left_ms: None,
                sliding_ms: None,
                lock: None,
            }),
            Message::Delete { pos: 14, key: b"k".to_vec() },
            Message::SnapshotEnd { pos: 15 },
            Message::Heartbeat { pos: 16 },
            Message::Ack { pos: u64::MAX },
            Message::Promote { pos: 17, epoch: 3 },
            Message::Done { ok: true, text: "promoted: epoch 3".into() },
            Message::Done { ok: false, text: String::new() },
        ]
    }

    #[test]
    fn every_type_round_trips_from_bytes_and_from_a_reader() {
        let mut stream = Vec::new();
        for m in samples() {
            let bytes = encode(&m);
            let (back, used) = decode(&bytes, MAX_PAYLOAD).unwrap();
            assert_eq!((back, used), (m.clone(), bytes.len()));
            stream.extend_from_slice(&bytes);
        }
        let mut r = &stream[..];
        let mut buf = Vec::new();
        for m in samples() {
            assert_eq!(read_frame(&mut r, MAX_PAYLOAD, &mut buf).unwrap(), m);
        }
        assert!(matches!(read_frame(&mut r, MAX_PAYLOAD, &mut buf), Err(FrameError::Closed)));
    }

    #[test]
    fn each_kind_of_damage_is_its_own_error() {
        let good = encode(&Message::Heartbeat { pos: 5 });
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(decode(&bad, 100), Err(FrameError::BadMagic { .. })));
        let mut bad = good.clone();
        bad[2] = PROTOCOL_VERSION + 1;
        assert!(
            matches!(decode(&bad, 100), Err(FrameError::BadVersion { found }) if found == PROTOCOL_VERSION + 1)
        );
        let mut bad = good.clone();
        bad[3] = 0;
        assert!(matches!(decode(&bad, 100), Err(FrameError::UnknownType { found: 0 })));
        bad[3] = LAST_TYPE + 1;
        assert!(
            matches!(decode(&bad, 100), Err(FrameError::UnknownType { found }) if found == LAST_TYPE + 1)
        );
        assert!(matches!(decode(&good, 4), Err(FrameError::TooLong { len: 8, limit: 4 })));
        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&bad, u32::MAX), Err(FrameError::TooLong { limit: MAX_PAYLOAD, .. })));
        for cut in 0..good.len() {
            assert!(matches!(decode(&good[..cut], 100), Err(FrameError::Truncated { .. })), "cut {cut}");
            let mut r = &good[..cut];
            let e = read_frame(&mut r, 100, &mut Vec::new()).unwrap_err();
            assert!(matches!(e, FrameError::Truncated { .. } | FrameError::Closed), "cut {cut}: {e}");
        }
        let mut bad = good.clone();
        bad[10] ^= 1;
        assert!(matches!(decode(&bad, 100), Err(FrameError::BadChecksum { .. })));
        // A checksum-valid frame whose payload does not fit its type.
        let mut raw = vec![b'G', b'S', PROTOCOL_VERSION, 9, 3, 0, 0, 0, 1, 2, 3];
        let sum = xxh3_64(&raw);
        raw.extend_from_slice(&sum.to_le_bytes());
        assert!(matches!(decode(&raw, 100), Err(FrameError::Malformed { kind: "Ack", .. })));
    }

    #[test]
    fn garbage_and_bit_flips_never_panic_and_are_never_accepted() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let frames: Vec<Vec<u8>> = samples().iter().map(encode).collect();
        for _ in 0..20_000 {
            let f = &frames[next() as usize % frames.len()];
            let mut bad = f.clone();
            match next() % 3 {
                0 => {
                    // Flip 1-3 bits anywhere.
                    for _ in 0..=next() % 3 {
                        let bit = next() as usize % (bad.len() * 8);
                        bad[bit / 8] ^= 1 << (bit % 8);
                    }
                }
                1 => {
                    // Random bytes, sometimes behind a valid-looking header.
                    let n = next() as usize % 200;
                    bad = (0..n).map(|_| next() as u8).collect();
                    if n >= 4 && next() % 2 == 0 {
                        bad[..4].copy_from_slice(&[b'G', b'S', 1, (next() % (LAST_TYPE as u64 + 1)) as u8]);
                    }
                }
                _ => bad.truncate(next() as usize % bad.len()),
            }
            if let Ok((m, used)) = decode(&bad, MAX_PAYLOAD) {
                // Only a frame identical to the one encoded may be accepted.
                assert_eq!(encode(&m), bad[..used], "accepted a damaged frame");
                assert!(frames.contains(&bad[..used].to_vec()), "accepted a damaged frame");
            }
            let _ = read_frame(&mut &bad[..], MAX_PAYLOAD, &mut Vec::new());
        }
    }
}
