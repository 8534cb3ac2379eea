//! What the two demos share: the engine's `examples/demo.rs` and the replicator's
//! `gardenstate demo` (whose workers write the values and whose demo checks the promoted
//! standby's copies). Self-verifying session values, session ids, and the counters a worker
//! process reports to its parent ([`Tally`]). Not part of the store's API.
//!
//! A value is `key, count, filler, checksum`: the key it is stored under, a request count
//! (u64, little-endian) that grows with every write of the session, any filler, and a
//! checksum of all that (u64, little-endian). A torn read (a mix of two values) fails the
//! checksum; another key's value fails the key. [`seal`] and [`unseal`] are the checksum
//! alone, for values of other shapes (the engine demo's cookie jar).

/// Length of a session id (the key of a session).
pub const SESSION_ID_LEN: usize = 32;

/// Appends a checksum of `body`.
pub fn seal(mut body: Vec<u8>) -> Vec<u8> {
    let sum = checksum(&body);
    body.extend_from_slice(&sum.to_le_bytes());
    body
}

/// The body of a sealed value, if its checksum matches.
pub fn unseal(value: &[u8]) -> Option<&[u8]> {
    let (body, sum) = value.split_at_checked(value.len().checked_sub(8)?)?;
    (checksum(body).to_le_bytes() == sum).then_some(body)
}

/// Whether `value` is a value written under `key`: its checksum matches and it starts with
/// the key and a count, so a torn value or another key's value fails.
pub fn verify(key: &[u8], value: &[u8]) -> bool {
    unseal(value).is_some_and(|body| body.len() >= key.len() + 8 && body.starts_with(key))
}

/// The request count of a verified value of `key` (0 if the value is too short): of two
/// values of one key, the one with the lower count is older.
pub fn request_count_of(key: &[u8], value: &[u8]) -> u64 {
    value.get(key.len()..key.len() + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

/// Replaces `value` with a sealed value of about `len` bytes (at least the key, the count and
/// the checksum): `key`, `count`, random filler from `rng`, checksum. Reuses the allocation.
pub fn make_value(value: &mut Vec<u8>, key: &[u8], count: u64, len: usize, rng: &mut Rng) {
    let mut v = std::mem::take(value);
    v.clear();
    v.extend_from_slice(key);
    v.extend_from_slice(&count.to_le_bytes());
    while v.len() + 8 < len {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    *value = seal(v);
}

/// A fast 64-bit checksum (word-wise multiply-rotate); any torn mix of two values fails it.
fn checksum(bytes: &[u8]) -> u64 {
    let mut h = 0x243f_6a88_85a3_08d3 ^ bytes.len() as u64;
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
    h
}

/// xorshift64*, seeded from the clock, the pid and a worker number. (A real server draws
/// session ids from the OS's CSPRNG; a demo does not need to.)
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(n: u64) -> Rng {
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Rng((t as u64 ^ ((std::process::id() as u64) << 32) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// 32 characters from [A-Za-z0-9].
    pub fn session_id(&mut self) -> [u8; SESSION_ID_LEN] {
        const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        std::array::from_fn(|_| ALPHABET[self.below(62) as usize])
    }
}

/// A worker's counters. A worker sends them to its parent as one line ([`Tally::line`])
/// several times a second, so a killed worker's figures survive it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Requests served (users' and visitors').
    pub requests: u64,
    /// Values read and verified (checksum and key).
    pub verified: u64,
    /// Values read that failed verification: torn, or another session's.
    pub bad: u64,
    pub logins: u64,
    pub logouts: u64,
    /// Optimistic updates that won (`compare_and_set`).
    pub updates: u64,
    /// Optimistic updates that lost a race (the version changed meanwhile).
    pub conflicts: u64,
}

impl Tally {
    /// `report requests=N verified=N ...`: the line a worker writes.
    pub fn line(&self) -> String {
        let t = self;
        format!(
            "report requests={} verified={} bad={} logins={} logouts={} updates={} conflicts={}",
            t.requests, t.verified, t.bad, t.logins, t.logouts, t.updates, t.conflicts
        )
    }

    /// Parses the `name=N` words that follow `report` in a [`Tally::line`]; None if any word
    /// is not one of them.
    pub fn parse_fields<'a>(words: impl Iterator<Item = &'a str>) -> Option<Tally> {
        let mut t = Tally::default();
        for field in words {
            let (k, v) = field.split_once('=')?;
            let v: u64 = v.parse().ok()?;
            *match k {
                "requests" => &mut t.requests,
                "verified" => &mut t.verified,
                "bad" => &mut t.bad,
                "logins" => &mut t.logins,
                "logouts" => &mut t.logouts,
                "updates" => &mut t.updates,
                "conflicts" => &mut t.conflicts,
                _ => return None,
            } = v;
        }
        Some(t)
    }

    /// The sum of two workers' counters.
    pub fn plus(&self, o: &Tally) -> Tally {
        Tally {
            requests: self.requests + o.requests,
            verified: self.verified + o.verified,
            bad: self.bad + o.bad,
            logins: self.logins + o.logins,
            logouts: self.logouts + o.logouts,
            updates: self.updates + o.updates,
            conflicts: self.conflicts + o.conflicts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_verify_and_order_by_count() {
        let mut rng = Rng::new(1);
        let sid = rng.session_id();
        let mut v = Vec::new();
        make_value(&mut v, &sid, 7, 100, &mut rng);
        assert!((100..116).contains(&v.len()), "about the length asked for: {}", v.len());
        assert!(verify(&sid, &v));
        assert_eq!(request_count_of(&sid, &v), 7);
        assert!(!verify(&rng.session_id(), &v), "another key's value");
        let mut torn = v.clone();
        torn[SESSION_ID_LEN + 9] ^= 1;
        assert!(!verify(&sid, &torn));
        assert!(!verify(&sid, &v[..5]));
        assert_eq!(unseal(&seal(b"jar".to_vec())), Some(&b"jar"[..]));
        assert_eq!(unseal(&seal(Vec::new())), Some(&b""[..]));
        assert_eq!(unseal(b"short"), None);
    }

    #[test]
    fn a_tally_round_trips_through_its_line() {
        let t = Tally { requests: 1, verified: 2, bad: 3, logins: 4, logouts: 5, updates: 6, conflicts: 7 };
        let line = t.line();
        assert_eq!(Tally::parse_fields(line.strip_prefix("report ").unwrap().split(' ')), Some(t.clone()));
        assert_eq!(t.plus(&t).conflicts, 14);
        assert_eq!(Tally::parse_fields("requests=1 extra".split(' ')), None);
    }
}
