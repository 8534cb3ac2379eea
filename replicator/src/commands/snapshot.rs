//! The snapshot format: what `gardenstate dump` writes and `gardenstate restore` reads (and
//! what the replicator's resync may send later). This comment is the format's contract; bump
//! [`FORMAT_VERSION`] whenever anything here changes meaning.
//!
//! All integers are little-endian. A file is a header, zero or more entries, and a trailer:
//!
//! ```text
//! header (72 bytes)
//!   0   7  magic              "GDSDUMP"
//!   7   1  format version     1
//!   8   8  dumped_at_unix_ms  u64: wall-clock time the dump started (ms since 1970)
//!  16   8  heap_bytes         u64: the source segment's heap capacity
//!  24   8  max_entries        u64  \
//!  32   8  max_value          u64   |
//!  40   4  max_key            u32   | the source segment's shape, the defaults of
//!  44   4  max_clients        u32   | `restore --create`
//!  48   8  feed_len           u64  /
//!  56   8  dataset_id         u64: the source segment's dataset id (informational)
//!  64   4  flags              u32: bit 0 = the source evicts when full; other bits 0
//!  68   4  reserved           u32: 0
//! entry (21 bytes + key + value), repeated
//!   0   1  tag                0x01
//!   1   4  key_len            u32: 1..=max_key
//!   5   4  value_len          u32: 0..=max_value
//!   9   8  ttl_ms             u64: time left at dump time, in ms; 0 = never expires
//!  17   4  sliding_ms         u32: the sliding window in ms; 0 = a fixed deadline
//!                             (nonzero only with a nonzero ttl_ms)
//!  21      key                key_len bytes
//!          value              value_len bytes
//! trailer (17 bytes)
//!   0   1  tag                0x00
//!   1   8  entry_count        u64: the number of entries above
//!   9   8  checksum           u64: xxh3-64 (seed 0) of every byte before it, from the magic
//!                             through entry_count
//! end of file: nothing may follow the checksum.
//! ```
//!
//! Decoding is strict: a wrong magic, an unknown version or flag, a nonzero reserved word,
//! a length outside its bounds, a short file, a count or checksum mismatch or trailing bytes
//! are each reported as a [`SnapshotError`] naming the entry and the byte offset, and no
//! input makes the decoder panic or allocate much more than it has actually read (values are
//! read incrementally, so a huge length field in a short file fails as truncation before
//! any large buffer exists).
//!
//! The streaming [`Reader`] returns each entry as soon as it is read, before the checksum
//! at the end has covered it: a caller that must not act on unverified data reads the
//! stream to its end first (`restore` does so in a validation pass, then reads it again to
//! apply it). [`decode`] is the all-at-once form for byte slices, used by tests and fuzzers.

use crate::replication::frame::{Shape, read_full};
use gardenstate::Options;
use std::fmt;
use std::io::{self, Read, Write};
use xxhash_rust::xxh3::Xxh3;

pub const MAGIC: &[u8; 7] = b"GDSDUMP";
pub const FORMAT_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 72;
pub const ENTRY_FIXED_LEN: usize = 21;
pub const TRAILER_LEN: usize = 17;
const TAG_ENTRY: u8 = 0x01;
const TAG_END: u8 = 0x00;
const FLAG_EVICT: u32 = 1;
/// Bounds of the engine (keys up to 65,535 bytes, values up to 1 GiB), so a header can never
/// announce larger entries than any segment could have held.
pub const MAX_KEY_LIMIT: u32 = 65_535;
pub const MAX_VALUE_LIMIT: u64 = 1 << 30;

/// The fixed part of a snapshot: when it was taken, and the shape of the segment it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub dumped_at_unix_ms: u64,
    pub heap_bytes: u64,
    pub max_entries: u64,
    pub max_value: u64,
    pub max_key: u32,
    pub max_clients: u32,
    pub feed_len: u64,
    pub dataset_id: u64,
    pub evict: bool,
}

impl Header {
    /// The options that recreate the dumped segment's shape, mode 0600 (as a standby creates
    /// its segment from the primary's [`Shape`]).
    pub fn options(&self) -> Options {
        let &Header { heap_bytes, max_entries, max_value, max_key, max_clients, feed_len, evict, .. } = self;
        Shape { heap_bytes, max_entries, max_key, max_value, max_clients, feed_len, evict }.options()
    }
}

/// One entry as dumped. `ttl_ms` and `sliding_ms` are relative to `Header::dumped_at_unix_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Milliseconds left at dump time; 0 = never expires.
    pub ttl_ms: u64,
    /// The sliding window in ms; 0 = a fixed deadline.
    pub sliding_ms: u32,
}

/// A whole decoded snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub header: Header,
    pub entries: Vec<Record>,
}

/// Why a snapshot could not be read (or written). Each message says what was expected, what
/// was found, and what to do.
#[derive(Debug)]
pub enum SnapshotError {
    /// Reading or writing the underlying file failed.
    Io(io::Error),
    /// The first 7 bytes are not `GDSDUMP`.
    BadMagic { found: Vec<u8> },
    /// A format version this build does not read.
    UnsupportedVersion { found: u8 },
    /// The stream ended early: `what` was being read at byte `offset`.
    Truncated { what: String, offset: u64 },
    /// A field holds a value outside its bounds.
    Invalid { what: String, offset: u64, detail: String },
    /// The trailer's entry count disagrees with the entries present.
    CountMismatch { stored: u64, found: u64 },
    /// The trailer's checksum disagrees with the bytes.
    Checksum { stored: u64, computed: u64 },
    /// Bytes follow the trailer.
    TrailingBytes { offset: u64 },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Io(e) => write!(f, "{e}"),
            SnapshotError::BadMagic { found } => write!(
                f,
                "not a gardenstate dump: it starts with {:?}, expected \"GDSDUMP\"; \
                 give a file written by `gardenstate dump`",
                crate::commands::escape::escape(found)
            ),
            SnapshotError::UnsupportedVersion { found } => write!(
                f,
                "dump format version {found}: this build reads version {FORMAT_VERSION}; \
                 restore it with the gardenstate build that wrote it, or a newer one"
            ),
            SnapshotError::Truncated { what, offset } => write!(
                f,
                "truncated dump: the file ends at byte {offset}, inside {what}; \
                 it was cut short (a copy or a dump that did not finish): take a new dump"
            ),
            SnapshotError::Invalid { what, offset, detail } => write!(
                f,
                "damaged dump: {what} at byte {offset}: {detail}; the file was damaged or \
                 not written by gardenstate: take a new dump"
            ),
            SnapshotError::CountMismatch { stored, found } => write!(
                f,
                "damaged dump: the trailer counts {stored} entries, the file holds {found}; take a new dump"
            ),
            SnapshotError::Checksum { stored, computed } => write!(
                f,
                "damaged dump: checksum mismatch (stored {stored:#018x}, computed {computed:#018x}): \
                 the file changed after it was written; take a new dump"
            ),
            SnapshotError::TrailingBytes { offset } => write!(
                f,
                "damaged dump: unexpected bytes after the end of the dump at byte {offset}; \
                 the file was appended to or damaged: take a new dump"
            ),
        }
    }
}

impl std::error::Error for SnapshotError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SnapshotError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for SnapshotError {
    fn from(e: io::Error) -> SnapshotError {
        SnapshotError::Io(e)
    }
}

fn invalid(what: impl Into<String>, offset: u64, detail: impl Into<String>) -> SnapshotError {
    SnapshotError::Invalid { what: what.into(), offset, detail: detail.into() }
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..7].copy_from_slice(MAGIC);
        b[7] = FORMAT_VERSION;
        b[8..16].copy_from_slice(&self.dumped_at_unix_ms.to_le_bytes());
        b[16..24].copy_from_slice(&self.heap_bytes.to_le_bytes());
        b[24..32].copy_from_slice(&self.max_entries.to_le_bytes());
        b[32..40].copy_from_slice(&self.max_value.to_le_bytes());
        b[40..44].copy_from_slice(&self.max_key.to_le_bytes());
        b[44..48].copy_from_slice(&self.max_clients.to_le_bytes());
        b[48..56].copy_from_slice(&self.feed_len.to_le_bytes());
        b[56..64].copy_from_slice(&self.dataset_id.to_le_bytes());
        let flags = if self.evict { FLAG_EVICT } else { 0 };
        b[64..68].copy_from_slice(&flags.to_le_bytes());
        b
    }

    /// Checks the limits every entry is validated against.
    fn validate(&self) -> Result<(), SnapshotError> {
        if self.max_key == 0 || self.max_key > MAX_KEY_LIMIT {
            return Err(invalid(
                "header max_key",
                40,
                format!("{} is outside 1..={MAX_KEY_LIMIT}", self.max_key),
            ));
        }
        if self.max_value > MAX_VALUE_LIMIT {
            return Err(invalid("header max_value", 32, format!("{} exceeds 1 GiB", self.max_value)));
        }
        Ok(())
    }
}

/// The running checksum (a newtype: `Xxh3` has no `Debug`).
struct Hasher(Xxh3);

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Xxh3")
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

// ---- writing ---------------------------------------------------------------------------------

/// Writes a snapshot to `W`: [`Writer::new`] writes the header, [`Writer::entry`] one entry,
/// [`Writer::finish`] the trailer. The writer refuses an entry the reader would refuse, so
/// every finished stream decodes.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    hash: Hasher,
    max_key: u32,
    max_value: u64,
    count: u64,
    bytes: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, header: &Header) -> Result<Writer<W>, SnapshotError> {
        header.validate()?;
        let mut w = Writer {
            out,
            hash: Hasher(Xxh3::new()),
            max_key: header.max_key,
            max_value: header.max_value,
            count: 0,
            bytes: 0,
        };
        w.put(&header.encode())?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hash.0.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    /// Appends one entry.
    pub fn entry(&mut self, r: &Record) -> Result<(), SnapshotError> {
        let at = self.bytes;
        let which = || format!("entry #{}", self.count + 1);
        if r.key.is_empty() || r.key.len() > self.max_key as usize {
            return Err(invalid(
                which(),
                at,
                format!("key of {} bytes outside 1..={}", r.key.len(), self.max_key),
            ));
        }
        if r.value.len() as u64 > self.max_value {
            return Err(invalid(
                which(),
                at,
                format!("value of {} bytes exceeds max_value {}", r.value.len(), self.max_value),
            ));
        }
        if r.sliding_ms != 0 && r.ttl_ms == 0 {
            return Err(invalid(which(), at, "a sliding window without a TTL"));
        }
        let mut fixed = [0u8; ENTRY_FIXED_LEN];
        fixed[0] = TAG_ENTRY;
        fixed[1..5].copy_from_slice(&(r.key.len() as u32).to_le_bytes());
        fixed[5..9].copy_from_slice(&(r.value.len() as u32).to_le_bytes());
        fixed[9..17].copy_from_slice(&r.ttl_ms.to_le_bytes());
        fixed[17..21].copy_from_slice(&r.sliding_ms.to_le_bytes());
        self.put(&fixed)?;
        self.put(&r.key)?;
        self.put(&r.value)?;
        self.count += 1;
        Ok(())
    }

    /// Entries written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes the trailer and flushes; returns the inner writer.
    pub fn finish(mut self) -> Result<W, SnapshotError> {
        let mut t = [0u8; 9];
        t[0] = TAG_END;
        t[1..9].copy_from_slice(&self.count.to_le_bytes());
        self.put(&t)?;
        let sum = self.hash.0.digest();
        self.out.write_all(&sum.to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Encodes a whole snapshot into bytes.
pub fn encode(s: &Snapshot) -> Result<Vec<u8>, SnapshotError> {
    let mut w = Writer::new(Vec::new(), &s.header)?;
    for r in &s.entries {
        w.entry(r)?;
    }
    w.finish()
}

// ---- reading ---------------------------------------------------------------------------------

/// Reads a snapshot from `R` entry by entry, validating as it goes (see the module comment:
/// entries come before the checksum that covers them).
#[derive(Debug)]
pub struct Reader<R: Read> {
    input: R,
    hash: Hasher,
    header: Header,
    offset: u64,
    count: u64,
    done: bool,
}

impl<R: Read> Reader<R> {
    /// Reads and validates the header.
    pub fn new(mut input: R) -> Result<Reader<R>, SnapshotError> {
        let mut b = [0u8; HEADER_LEN];
        let n = read_full(&mut input, &mut b)?;
        if n < MAGIC.len() || b[..7] != MAGIC[..] {
            return Err(SnapshotError::BadMagic { found: b[..n.min(7)].to_vec() });
        }
        if n >= 8 && b[7] != FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion { found: b[7] });
        }
        if n < HEADER_LEN {
            return Err(SnapshotError::Truncated { what: "the header".into(), offset: n as u64 });
        }
        let flags = u32_at(&b, 64);
        if flags & !FLAG_EVICT != 0 {
            return Err(invalid(
                "header flags",
                64,
                format!("unknown flag bits {:#x} (a newer format?)", flags & !FLAG_EVICT),
            ));
        }
        if u32_at(&b, 68) != 0 {
            return Err(invalid("header reserved word", 68, format!("{:#x}, expected 0", u32_at(&b, 68))));
        }
        let header = Header {
            dumped_at_unix_ms: u64_at(&b, 8),
            heap_bytes: u64_at(&b, 16),
            max_entries: u64_at(&b, 24),
            max_value: u64_at(&b, 32),
            max_key: u32_at(&b, 40),
            max_clients: u32_at(&b, 44),
            feed_len: u64_at(&b, 48),
            dataset_id: u64_at(&b, 56),
            evict: flags & FLAG_EVICT != 0,
        };
        header.validate()?;
        let mut hash = Hasher(Xxh3::new());
        hash.0.update(&b);
        Ok(Reader { input, hash, header, offset: HEADER_LEN as u64, count: 0, done: false })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Entries read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Reads exactly `buf.len()` bytes, hashing them, or reports truncation inside `what`.
    fn take(&mut self, buf: &mut [u8], what: impl FnOnce() -> String) -> Result<(), SnapshotError> {
        let n = read_full(&mut self.input, buf)?;
        self.offset += n as u64;
        if n < buf.len() {
            return Err(SnapshotError::Truncated { what: what(), offset: self.offset });
        }
        self.hash.0.update(buf);
        Ok(())
    }

    /// Reads `len` bytes into a new vector, growing it only as data arrives.
    fn take_vec(&mut self, len: usize, what: impl FnOnce() -> String) -> Result<Vec<u8>, SnapshotError> {
        let mut v = Vec::with_capacity(len.min(64 << 10));
        let n = (&mut self.input).take(len as u64).read_to_end(&mut v)?;
        self.offset += n as u64;
        if n < len {
            return Err(SnapshotError::Truncated { what: what(), offset: self.offset });
        }
        self.hash.0.update(&v);
        Ok(v)
    }

    /// The next entry, or `None` once the trailer has been read and verified (count,
    /// checksum, end of input). After an error or `None`, every call returns `None`.
    pub fn next_entry(&mut self) -> Result<Option<Record>, SnapshotError> {
        if self.done {
            return Ok(None);
        }
        let r = self.read_one();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r
    }

    fn read_one(&mut self) -> Result<Option<Record>, SnapshotError> {
        let at = self.offset;
        let n = self.count + 1;
        let mut tag = [0u8; 1];
        self.take(&mut tag, || "the end marker (the file holds no trailer)".into())?;
        match tag[0] {
            TAG_ENTRY => {}
            TAG_END => return self.read_trailer().map(|()| None),
            t => {
                return Err(invalid(
                    format!("entry #{n}"),
                    at,
                    format!("tag {t:#04x}, expected 0x01 (entry) or 0x00 (end)"),
                ));
            }
        }
        let mut fixed = [0u8; ENTRY_FIXED_LEN - 1];
        self.take(&mut fixed, || format!("the header of entry #{n}"))?;
        let key_len = u32_at(&fixed, 0);
        let value_len = u32_at(&fixed, 4);
        let ttl_ms = u64_at(&fixed, 8);
        let sliding_ms = u32_at(&fixed, 16);
        let what = format!("entry #{n}");
        if key_len == 0 || key_len > self.header.max_key {
            return Err(invalid(
                what,
                at,
                format!("key length {key_len} outside 1..={}", self.header.max_key),
            ));
        }
        if value_len as u64 > self.header.max_value {
            return Err(invalid(
                what,
                at,
                format!("value length {value_len} exceeds the header's max_value {}", self.header.max_value),
            ));
        }
        if sliding_ms != 0 && ttl_ms == 0 {
            return Err(invalid(what, at, format!("sliding window {sliding_ms} ms without a TTL")));
        }
        let key = self.take_vec(key_len as usize, || format!("the key of entry #{n}"))?;
        let value = self.take_vec(value_len as usize, || format!("the value of entry #{n}"))?;
        self.count += 1;
        Ok(Some(Record { key, value, ttl_ms, sliding_ms }))
    }

    fn read_trailer(&mut self) -> Result<(), SnapshotError> {
        let mut count = [0u8; 8];
        self.take(&mut count, || "the trailer".into())?;
        let computed = self.hash.0.digest();
        let mut sum = [0u8; 8];
        let n = read_full(&mut self.input, &mut sum)?;
        self.offset += n as u64;
        if n < 8 {
            return Err(SnapshotError::Truncated {
                what: "the trailer's checksum".into(),
                offset: self.offset,
            });
        }
        let stored = u64::from_le_bytes(sum);
        if stored != computed {
            return Err(SnapshotError::Checksum { stored, computed });
        }
        let stored_count = u64::from_le_bytes(count);
        if stored_count != self.count {
            return Err(SnapshotError::CountMismatch { stored: stored_count, found: self.count });
        }
        let mut extra = [0u8; 1];
        if read_full(&mut self.input, &mut extra)? != 0 {
            return Err(SnapshotError::TrailingBytes { offset: self.offset });
        }
        Ok(())
    }
}

/// Decodes and fully verifies a snapshot held in memory. Never panics, whatever `bytes` holds.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    let mut r = Reader::new(bytes)?;
    let mut entries = Vec::new();
    while let Some(e) = r.next_entry()? {
        entries.push(e);
    }
    Ok(Snapshot { header: r.header, entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::snapshot_header as header;
    use gardenstate::fuzzing::Rng;

    fn sample() -> Snapshot {
        Snapshot {
            header: header(),
            entries: vec![
                Record { key: b"a".to_vec(), value: b"".to_vec(), ttl_ms: 0, sliding_ms: 0 },
                Record { key: b"\0\xff\n".to_vec(), value: vec![0, 1, 2, 255], ttl_ms: 5_000, sliding_ms: 0 },
                Record {
                    key: b"sid:1".to_vec(),
                    value: vec![7; 4096],
                    ttl_ms: 1_200_000,
                    sliding_ms: 1_200_000,
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let bytes = encode(&s).unwrap();
        let body: usize = s.entries.iter().map(|e| ENTRY_FIXED_LEN + e.key.len() + e.value.len()).sum();
        assert_eq!(bytes.len(), HEADER_LEN + body + TRAILER_LEN);
        assert_eq!(&bytes[..8], b"GDSDUMP\x01");
        assert_eq!(decode(&bytes).unwrap(), s);
        let empty = Snapshot { header: header(), entries: vec![] };
        assert_eq!(decode(&encode(&empty).unwrap()).unwrap(), empty);
    }

    #[test]
    fn layout_is_as_documented() {
        let s = Snapshot {
            header: header(),
            entries: vec![Record { key: b"k".to_vec(), value: b"vv".to_vec(), ttl_ms: 9, sliding_ms: 3 }],
        };
        let b = encode(&s).unwrap();
        assert_eq!(u64_at(&b, 8), 1_700_000_000_000);
        assert_eq!(u64_at(&b, 16), 8 << 20);
        assert_eq!(u64_at(&b, 24), 1000);
        assert_eq!(u64_at(&b, 32), 4096);
        assert_eq!(u32_at(&b, 40), 64);
        assert_eq!(u32_at(&b, 44), 16);
        assert_eq!(u64_at(&b, 48), 1024);
        assert_eq!(u64_at(&b, 56), 0xfeed);
        assert_eq!(u32_at(&b, 64), 1);
        let e = HEADER_LEN;
        assert_eq!(b[e], 1);
        assert_eq!((u32_at(&b, e + 1), u32_at(&b, e + 5)), (1, 2));
        assert_eq!((u64_at(&b, e + 9), u32_at(&b, e + 17)), (9, 3));
        assert_eq!(&b[e + 21..e + 24], b"kvv");
        let t = e + 24;
        assert_eq!((b[t], u64_at(&b, t + 1)), (0, 1));
        assert_eq!(u64_at(&b, t + 9), xxhash_rust::xxh3::xxh3_64(&b[..t + 9]));
        assert_eq!(b.len(), t + TRAILER_LEN);
    }

    #[test]
    fn options_recreate_the_dumped_shape() {
        let o = header().options();
        let got = (o.capacity_bytes, o.max_entries, o.max_key, o.max_value, o.max_clients, o.feed_len);
        assert_eq!(got, (8 << 20, 1000, 64, 4096, 16, 1024));
        assert_eq!((o.evict, o.mode), (true, 0o600));
    }

    #[test]
    fn damage_is_named() {
        let good = encode(&sample()).unwrap();
        let err = |b: &[u8]| decode(b).unwrap_err();
        assert!(matches!(err(b"HELLO WORLD"), SnapshotError::BadMagic { .. }));
        assert!(matches!(err(b""), SnapshotError::BadMagic { .. }));
        let mut v2 = good.clone();
        v2[7] = 2;
        assert!(matches!(err(&v2), SnapshotError::UnsupportedVersion { found: 2 }));
        assert!(matches!(err(&good[..40]), SnapshotError::Truncated { .. }));
        assert!(matches!(err(&good[..good.len() - 1]), SnapshotError::Truncated { .. }));
        assert!(matches!(err(&good[..HEADER_LEN]), SnapshotError::Truncated { .. }));
        let mut extra = good.clone();
        extra.push(0);
        assert!(matches!(err(&extra), SnapshotError::TrailingBytes { .. }));
        // A flipped bit in a value: only the checksum can tell.
        let mut flipped = good.clone();
        let second_value = HEADER_LEN + (ENTRY_FIXED_LEN + 1) + ENTRY_FIXED_LEN + 3;
        flipped[second_value] ^= 0x10;
        assert!(matches!(err(&flipped), SnapshotError::Checksum { .. }));
        // A huge value length in a short file: refused by bounds, before any allocation.
        let mut huge = good.clone();
        huge[HEADER_LEN + 5..HEADER_LEN + 9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(err(&huge), SnapshotError::Invalid { .. }), "{}", err(&huge));
        // A header announcing 1 GiB values, and an entry claiming one, in a tiny file.
        let mut big = Snapshot { header: header(), entries: vec![] };
        big.header.max_value = 1 << 30;
        let mut b = encode(&big).unwrap();
        b.truncate(b.len() - TRAILER_LEN);
        b.extend_from_slice(&[1, 1, 0, 0, 0]);
        b.extend_from_slice(&(1u32 << 30).to_le_bytes());
        b.extend_from_slice(&[0; 12]);
        b.push(b'k');
        assert!(matches!(err(&b), SnapshotError::Truncated { .. }));
        // A count that lies (with a checksum that matches the lie).
        let mut lie = good[..good.len() - 16].to_vec();
        lie.extend_from_slice(&7u64.to_le_bytes());
        let sum = xxhash_rust::xxh3::xxh3_64(&lie);
        lie.extend_from_slice(&sum.to_le_bytes());
        assert!(matches!(err(&lie), SnapshotError::CountMismatch { stored: 7, found: 3 }));
        for e in [err(&huge), err(&flipped), err(&good[..50]), err(b"nope")] {
            let msg = e.to_string();
            assert!(msg.contains("dump"), "{msg}");
        }
    }

    #[test]
    fn writer_refuses_what_the_reader_would() {
        let mut w = Writer::new(Vec::new(), &header()).unwrap();
        let bad = [
            Record { key: vec![], value: vec![], ttl_ms: 0, sliding_ms: 0 },
            Record { key: vec![1; 65], value: vec![], ttl_ms: 0, sliding_ms: 0 },
            Record { key: vec![1], value: vec![0; 4097], ttl_ms: 0, sliding_ms: 0 },
            Record { key: vec![1], value: vec![], ttl_ms: 0, sliding_ms: 5 },
        ];
        for r in bad {
            assert!(w.entry(&r).is_err(), "{r:?}");
        }
        let h = Header { max_key: 0, ..header() };
        assert!(Writer::new(Vec::new(), &h).is_err());
    }

    /// Decoding never panics: random bytes, random damage to a valid snapshot, every prefix.
    #[test]
    fn garbage_never_panics() {
        let good = encode(&sample()).unwrap();
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "prefix of {cut} bytes decoded");
        }
        let mut rng = Rng(42);
        for round in 0..20_000 {
            let input: Vec<u8> = if round % 4 == 0 {
                // Pure noise, sometimes behind a valid magic and version.
                let len = (rng.next_u64() % 200) as usize;
                let mut v: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                if round % 8 == 0 && v.len() >= 8 {
                    v[..8].copy_from_slice(b"GDSDUMP\x01");
                }
                v
            } else {
                let mut v = good.clone();
                for _ in 0..1 + rng.next_u64() % 4 {
                    let i = (rng.next_u64() as usize) % v.len();
                    match rng.next_u64() % 3 {
                        0 => v[i] ^= 1 << (rng.next_u64() % 8),
                        1 => v[i] = rng.next_u64() as u8,
                        _ => {
                            let at = (rng.next_u64() as usize) % v.len();
                            v.truncate(at.max(1));
                        }
                    }
                }
                v
            };
            if let Ok(s) = decode(&input) {
                // Only an undamaged stream may decode, and then to what was encoded.
                assert_eq!(encode(&s).unwrap(), input);
            }
        }
    }
}
