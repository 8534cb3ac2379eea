//! Fuzz target bodies (not part of the API: hidden, and may change at will).
//!
//! The cargo-fuzz targets in `fuzz/` and the replay tests in `tests/fuzz_regressions.rs` call
//! these same functions, so an input saved by the fuzzer is replayed by `cargo test` on
//! stable. Each takes arbitrary bytes and panics only when a property is violated:
//!
//! - [`frame`]: the wire decoder. `decode` and `read_frame` (fed in small chunks) agree on
//!   every frame of a stream, and a decoded frame re-encodes to exactly its bytes.
//! - [`snapshot`]: the dump decoder. `decode` and the streaming `Reader` agree, and a decoded
//!   snapshot re-encodes to exactly its bytes.
//! - [`handshake`]: both sides of the authentication handshake against a peer that sends the
//!   input: always refused (the input cannot know the fresh nonce's MAC).
//! - [`sealed`]: the authenticated record layer after the handshake (`seal`): nothing forged
//!   opens, a refused stream stays refused, and any flipped byte of a sealed stream is caught.
//! - [`units`]: the size, count, duration and TTL parsers and the escape syntax.
//! - [`config`]: a daemon's `--config` TOML file through `config::resolve`: an error or a
//!   configuration that keeps its own rules (the timing rule, the heartbeat's bounds).
//!
//! The first byte of a `frame` or `snapshot` input is a mode byte (see each function): it can
//! have the checksum recomputed, so the fuzzer reaches the payload parsers behind it.

use crate::replication::auth::{self, Key};
use crate::replication::frame::{self, FrameError, HANDSHAKE_MAX_PAYLOAD, MAX_PAYLOAD, Message};
use crate::{commands::escape, commands::snapshot, commands::units};
use std::io::{self, Read, Write};
use xxhash_rust::xxh3::xxh3_64;

/// A reader that hands out at most `chunk` bytes a call and, when `interrupt`, answers every
/// other call with `Interrupted` (which every reader must retry).
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
    interrupt: bool,
    calls: u64,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.interrupt && self.calls % 2 == 0 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The frame target. `data[0]`: bit 0 = make the rest a checksum-valid frame (magic,
/// version, length and checksum fixed up, the type and payload kept), bits 1-2 = the length
/// limit (the largest, the handshake's, 64, 0), bits 3-5 = the reader's chunk size - 1,
/// bit 6 = the reader is interrupted every other call.
pub fn frame(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if mode & 1 != 0 && bytes.len() >= frame::HEADER_LEN {
        bytes[..3].copy_from_slice(&[frame::MAGIC[0], frame::MAGIC[1], frame::PROTOCOL_VERSION]);
        let len = (bytes.len() - frame::HEADER_LEN) as u32;
        bytes[4..8].copy_from_slice(&len.to_le_bytes());
        let sum = xxh3_64(&bytes);
        bytes.extend_from_slice(&sum.to_le_bytes());
    }
    let limit = [MAX_PAYLOAD, HANDSHAKE_MAX_PAYLOAD, 64, 0][(mode as usize >> 1) & 3];
    let mut reader =
        Trickle { data: &bytes, chunk: 1 + (mode as usize >> 3 & 7), interrupt: mode & 64 != 0, calls: 0 };
    let mut buf = Vec::new();
    let mut at = 0;
    loop {
        let from_slice = frame::decode(&bytes[at..], limit);
        let from_reader = frame::read_frame(&mut reader, limit, &mut buf);
        match (from_slice, from_reader) {
            (Ok((m, used)), Ok(m2)) => {
                assert_eq!(m, m2, "decode and read_frame disagree at byte {at}");
                assert!(used >= frame::HEADER_LEN + frame::CHECKSUM_LEN && used <= bytes.len() - at);
                let again = frame::encode(&m);
                assert_eq!(again, bytes[at..at + used], "a decoded frame does not re-encode to its bytes");
                assert!(m.name().len() > 2 && (1..=frame::LAST_TYPE).contains(&m.type_byte()));
                at += used;
            }
            (Err(e), Err(e2)) => {
                // The same refusal, but for how the end of input is reported.
                let end = |e: &FrameError| matches!(e, FrameError::Truncated { .. } | FrameError::Closed);
                assert!(
                    std::mem::discriminant(&e) == std::mem::discriminant(&e2) || (end(&e) && end(&e2)),
                    "decode says {e:?}, read_frame says {e2:?}"
                );
                assert!(!matches!(e2, FrameError::Io(_)), "an interrupted read surfaced: {e2}");
                let _ = (e.to_string(), e2.to_string());
                return;
            }
            (a, b) => panic!("decode and read_frame disagree at byte {at}: {a:?} vs {b:?}"),
        }
    }
}

/// The snapshot target. `data[0]`: bit 0 = make the rest start with a valid magic, version
/// and reserved word, bit 1 = recompute the trailer's checksum over the bytes before it,
/// bits 2-4 = the streaming reader's chunk size - 1, bit 5 = interrupt it every other call.
pub fn snapshot(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if mode & 1 != 0 && bytes.len() >= snapshot::HEADER_LEN {
        bytes[..7].copy_from_slice(snapshot::MAGIC);
        bytes[7] = snapshot::FORMAT_VERSION;
        let flags = u32::from_le_bytes(bytes[64..68].try_into().expect("4 bytes")) & 1;
        bytes[64..68].copy_from_slice(&flags.to_le_bytes());
        bytes[68..72].fill(0);
    }
    if mode & 2 != 0 && bytes.len() >= 8 {
        let end = bytes.len() - 8;
        let sum = xxh3_64(&bytes[..end]);
        bytes[end..].copy_from_slice(&sum.to_le_bytes());
    }
    let whole = snapshot::decode(&bytes);
    // The streaming reader over the same bytes, trickled.
    let input =
        Trickle { data: &bytes, chunk: 1 + (mode as usize >> 2 & 7), interrupt: mode & 32 != 0, calls: 0 };
    let streamed = snapshot::Reader::new(input).and_then(|mut r| {
        let mut entries = Vec::new();
        while let Some(e) = r.next_entry()? {
            entries.push(e);
        }
        assert!(r.next_entry().is_ok_and(|e| e.is_none()), "the reader goes on after its end");
        Ok(snapshot::Snapshot { header: r.header().clone(), entries })
    });
    match (whole, streamed) {
        (Ok(s), Ok(s2)) => {
            assert_eq!(s, s2, "decode and the streaming reader disagree");
            let again = snapshot::encode(&s).expect("a decoded snapshot encodes");
            assert_eq!(again, bytes, "a decoded snapshot does not re-encode to its bytes");
            let _ = s.header.options();
        }
        (Err(e), Err(e2)) => {
            assert_eq!(e.to_string(), e2.to_string(), "decode and the streaming reader disagree");
            assert!(!matches!(e, snapshot::SnapshotError::Io(_)), "an interrupted read surfaced: {e}");
        }
        (a, b) => panic!("decode and the streaming reader disagree: {a:?} vs {b:?}"),
    }
}

/// A peer that sends the input and swallows what it is sent.
struct Peer<'a> {
    input: Trickle<'a>,
    sent: Vec<u8>,
}

impl Read for Peer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Peer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sent.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The handshake target. `data[0]`: bit 0 = play the primary (else the standby), bits 1-3 =
/// the chunk size - 1; `data[1]` = the key's length (keys shorter than 16 bytes are refused),
/// taken from the bytes after it; the rest is what the peer sends. Always refused: the
/// handshake MACs a fresh random nonce the input cannot know.
pub fn handshake(data: &[u8]) {
    let [mode, key_len, rest @ ..] = data else { return };
    let key_len = (*key_len as usize).min(rest.len());
    let (key, sent) = rest.split_at(key_len);
    let key = match Key::new(key.to_vec()) {
        Ok(k) => k,
        Err(e) => {
            assert!(key.len() < auth::MIN_KEY_LEN, "a {}-byte key refused: {e}", key.len());
            Key::new(b"fuzzing-key-0123456789".to_vec()).expect("a long key")
        }
    };
    let mut peer = Peer {
        input: Trickle { data: sent, chunk: 1 + (*mode as usize >> 1 & 7), interrupt: false, calls: 0 },
        sent: Vec::new(),
    };
    let r = if mode & 1 != 0 {
        auth::primary_handshake(&mut peer, &key)
    } else {
        auth::standby_handshake(&mut peer, &key)
    };
    let e = r.expect_err("a handshake succeeded without the peer knowing the nonce");
    let _ = e.to_string();
    // What we sent is valid handshake frames.
    let mut out = &peer.sent[..];
    while !out.is_empty() {
        let m = frame::read_frame(&mut out, HANDSHAKE_MAX_PAYLOAD, &mut Vec::new())
            .expect("we send valid frames");
        assert!(matches!(m, Message::Challenge(_) | Message::Response(_)), "sent {}", m.name());
    }
}

/// The sealed-record target (`seal`): `data` is what a peer sends after the handshake.
/// Opening it (read in chunks of `data[0] % 16 + 1` bytes) never panics, and once a record is
/// refused every later read fails too. What opened (nothing, unless the input holds records
/// sealed with the target's keys, as its seed does), sealed again, opens to itself, and one
/// flipped byte (at `data[1]`) of that makes it fail.
pub fn sealed(data: &[u8]) {
    use crate::replication::seal::{End, SessionKeys};
    let keys = |end| SessionKeys::derive(b"fuzzing-key-0123456789", &[1; 32], &[2; 32], end);
    let chunk = data.first().map_or(1, |b| *b as usize % 16 + 1);
    let (_, mut opener) = keys(End::Standby).split();
    let mut r = data;
    let mut buf = vec![0u8; chunk];
    let mut opened = Vec::new();
    loop {
        match opener.read_opened(&mut r, &mut buf) {
            Ok(0) => break,
            Ok(n) => opened.extend_from_slice(&buf[..n]),
            Err(e) => {
                assert!(e.to_string().contains("authentication failed"), "{e}");
                assert!(opener.read_opened(&mut r, &mut buf).is_err(), "a failed stream read on");
                break;
            }
        }
    }
    let data = &opened[..];
    let (mut sealer, _) = keys(End::Primary).split();
    let mut wire = Vec::new();
    sealer.seal_into(data, &mut wire);
    let mut out = Vec::new();
    {
        let (_, mut o) = keys(End::Standby).split();
        let mut r = &wire[..];
        loop {
            match o.read_opened(&mut r, &mut buf).expect("a sealed stream opens") {
                0 => break,
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }
    assert_eq!(out, data, "a sealed stream opened to other bytes");
    if let Some(&at) = data.get(1) {
        let mut bad = wire.clone();
        let i = at as usize % bad.len();
        bad[i] ^= 0x01;
        let (_, mut o) = keys(End::Standby).split();
        let mut r = &bad[..];
        let failed = loop {
            match o.read_opened(&mut r, &mut buf) {
                Ok(0) => break false,
                Ok(_) => {}
                Err(_) => break true,
            }
        };
        assert!(failed, "a flipped byte at {i} went unnoticed");
    }
}

/// The units target: the input as text through every parser, and as bytes through the
/// escape syntax.
pub fn units(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let s = text.as_ref();
    if let Ok(n) = units::parse_size(s) {
        let _ = units::format_bytes(n);
        assert_eq!(units::parse_size(&n.to_string()), Ok(n));
    }
    if let Ok(n) = units::parse_count(s) {
        assert_eq!(units::format_count(n).replace(',', ""), n.to_string());
        assert_eq!(units::parse_count(&n.to_string()), Ok(n));
    }
    if let Ok(d) = units::parse_duration(s) {
        // The printed form reads back (past a minute, whole seconds only).
        let printed = units::format_duration(d);
        let back =
            units::parse_duration(&printed).unwrap_or_else(|e| panic!("{printed:?} does not parse: {e}"));
        let ms = d.as_millis();
        let want = if ms < 60_000 { ms } else { ms / 1000 * 1000 };
        assert_eq!(back.as_millis(), want, "{s:?} printed as {printed:?}");
    }
    if let Ok(d) = units::parse_ttl(s) {
        assert!(!d.is_zero() && d <= units::MAX_TTL, "{s:?} gave a TTL of {d:?}");
    }
    if data.len() >= 16 {
        let a = u64::from_le_bytes(data[..8].try_into().expect("8"));
        let b = u64::from_le_bytes(data[8..16].try_into().expect("8"));
        let _ = (units::format_percent(a, b), units::format_bytes(a), units::format_count(b));
        let _ = units::format_duration(std::time::Duration::from_millis(a));
    }
    // Escaping: one line of text, no control characters, and it reads back exactly.
    let escaped = escape::escape(data);
    assert!(!escaped.chars().any(|c| c.is_control()), "{escaped:?} holds a control character");
    assert_eq!(escape::unescape(escaped.as_bytes()).as_deref(), Ok(data), "escape does not read back");
    assert_eq!(escape::is_plain(data), escaped.as_bytes() == data);
    if let Ok(bytes) = escape::unescape(data) {
        let again = escape::escape(&bytes);
        assert_eq!(escape::unescape(again.as_bytes()), Ok(bytes));
    }
}

/// The config target: `data[0] % 3` picks the daemon (primary, standby, witness), the rest is
/// the TOML file. The key file is given as a flag (flags win), so the file's paths are never
/// opened but for TLS; inputs naming device or kernel files are skipped (a config may point
/// anywhere the operator says, and reading /dev/zero would never end).
pub fn config(data: &[u8]) {
    use crate::commands::cli::DaemonArgs;
    use crate::operations::config::{self, DaemonKind, RoleFlags};
    use std::os::unix::fs::PermissionsExt;
    let Some((&kind, text)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(text);
    if ["/dev", "/proc", "/sys"].iter().any(|d| text.contains(d)) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("gds-fuzz-config-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let (key, file) = (dir.join("key"), dir.join("config.toml"));
    if !key.exists() {
        std::fs::write(&key, b"a fuzzing key of 32 bytes length").expect("scratch dir");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("scratch dir");
    }
    std::fs::write(&file, text.as_bytes()).expect("scratch dir");
    let kind = [DaemonKind::Primary, DaemonKind::Standby, DaemonKind::Witness][kind as usize % 3];
    let args = DaemonArgs { config: Some(file), key_file: Some(key), ..DaemonArgs::default() };
    if let Ok(c) = config::resolve(kind, RoleFlags::default(), args) {
        assert!(c.fence_after + 3 * c.heartbeat < c.failover_after, "{c:?} breaks the timing rule");
        assert!(c.heartbeat >= std::time::Duration::from_millis(10), "{c:?}");
        match kind {
            DaemonKind::Primary => assert!(c.listen.is_some() && !c.segment.is_empty()),
            DaemonKind::Standby => assert!(c.connect.is_some() && !c.segment.is_empty()),
            DaemonKind::Witness => assert!(c.listen.is_some()),
        }
    }
}

/// An Entry frame with every optional field set: a frame seed's (and the `frame` module's
/// unit tests').
pub fn entry_message() -> Message {
    Message::Entry(frame::EntryFrame {
        pos: 12,
        key: b"sid:1".to_vec(),
        value: b"cart=3".to_vec(),
        ttl_left_ms: Some(1_200_000),
        sliding_ms: Some(1_200_000),
        lock: Some((42, 1500)),
    })
}

/// A valid dump header of a small segment: the snapshot seeds' (and the `snapshot` module's
/// unit tests').
pub fn snapshot_header() -> snapshot::Header {
    snapshot::Header {
        dumped_at_unix_ms: 1_700_000_000_000,
        heap_bytes: 8 << 20,
        max_entries: 1000,
        max_value: 4096,
        max_key: 64,
        max_clients: 16,
        feed_len: 1024,
        dataset_id: 0xfeed,
        evict: true,
    }
}

/// Small seeds for each target (the fuzzer's starting corpus; also replayed by the tests).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let with_mode = |mode: u8, bytes: Vec<u8>| [vec![mode], bytes].concat();
    match target {
        "frame" => {
            let msgs = [
                Message::Challenge([7; frame::NONCE_LEN]),
                entry_message(),
                Message::Delete { pos: 14, key: b"k".to_vec() },
                Message::Heartbeat { pos: 16 },
            ];
            let mut stream = Vec::new();
            for m in &msgs {
                frame::encode_into(m, &mut stream);
            }
            // Mode bit 0: an Entry's header and payload, the checksum left to the target.
            let entry = frame::encode(&msgs[1]);
            let unsummed = entry[..entry.len() - frame::CHECKSUM_LEN].to_vec();
            vec![
                with_mode(0, stream.clone()),
                with_mode(0b0101_1000, stream),
                with_mode(0b0001_0001, unsummed),
            ]
        }
        "snapshot" => {
            let header = snapshot_header();
            let entries = vec![
                snapshot::Record { key: b"a".to_vec(), value: vec![], ttl_ms: 0, sliding_ms: 0 },
                snapshot::Record {
                    key: b"sid:1".to_vec(),
                    value: b"v".repeat(40),
                    ttl_ms: 9000,
                    sliding_ms: 3000,
                },
            ];
            let s = snapshot::encode(&snapshot::Snapshot { header, entries }).expect("a valid snapshot");
            vec![with_mode(0, s.clone()), with_mode(0b10_1110, s)]
        }
        "handshake" => {
            let mut peer = Vec::new();
            frame::encode_into(&Message::Challenge([3; frame::NONCE_LEN]), &mut peer);
            frame::encode_into(&Message::Response([4; frame::MAC_LEN]), &mut peer);
            let key = b"0123456789abcdef".to_vec();
            let mut a = vec![0, key.len() as u8];
            a.extend_from_slice(&key);
            a.extend_from_slice(&peer);
            let mut b = a.clone();
            b[0] = 1;
            vec![a, b]
        }
        "sealed" => {
            use crate::replication::seal::{End, SessionKeys};
            let keys = SessionKeys::derive(b"fuzzing-key-0123456789", &[1; 32], &[2; 32], End::Primary);
            let (mut sealer, _) = keys.split();
            let mut wire = Vec::new();
            sealer.seal_into(&frame::encode(&entry_message()), &mut wire);
            sealer.seal_into(&frame::encode(&Message::Heartbeat { pos: 16 }), &mut wire);
            vec![wire, b"\x05\x00\x00\x00hello0123456789abcdef0123456789abcdef".to_vec(), vec![3, 200]]
        }
        "config" => [
            "\x00segment = \"s\"\nlisten = \"127.0.0.1:7480\"\nwitness = \"w:7480\"\nfence_after = \"2s\"\n",
            "\x01segment = \"s\"\nconnect = \"p:7480\"\nlisten = \"0.0.0.0:7480\"\nheartbeat = \"50ms\"\nbacklog = \"1MiB\"\n",
            "\x02listen = \"0.0.0.0:7480\"\npeers = [\"a:1\", \"b:2\"]\nfailover_after = \"1h\"\n",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect(),
        "units" => ["64MiB", "1_000_000", "1h30m", "500ms", "a\\x00\\u{202e}\\n"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message type, the switchover's Promote and Done too (types 10 and 11, once
    /// refused by a stale bound here), passes the frame target.
    #[test]
    fn the_frame_target_accepts_every_message_type() {
        let msgs = [
            entry_message(),
            Message::SnapshotEnd { pos: 3 },
            Message::Promote { pos: 17, epoch: 3 },
            Message::Done { ok: true, text: "promoted".into() },
        ];
        for m in msgs {
            frame(&[&[0][..], &frame::encode(&m)].concat());
        }
    }
}
