//! One worker process of `gardenstate demo`: simulated web traffic against the primary's
//! segment (run by the demo as the hidden `gardenstate demo-worker`).
//!
//! A worker is one process of a web server. It serves its own users (sticky sessions behind
//! a load balancer, so each user's cookie lives in the worker's memory) and anonymous
//! visitors:
//!
//! - log in: `add` a session under a random 32-character id, 20 min sliding expiry;
//! - read-only pages (`get_into`), small updates (`get_into` + `compare_and_set`), pages that
//!   use the session under its lock (`lock`, then `set_and_unlock`, or `unlock` when they have
//!   nothing to write: ASP.NET's exclusive access; `Locked` is contention), keep-alive pings
//!   (`touch`), log out (`delete`);
//! - anonymous visitors get 3 s sliding sessions and mostly never come back: those expire.
//!
//! Every value is self-verifying: it starts with its own key and carries a request count and a
//! checksum, so a torn read or another session's value is caught on every read (here, and by
//! the demo when it compares the primary's sessions with the promoted standby's).
//!
//! The worker given `--critical` also places orders: every [`ORDER_EVERY`] it writes an
//! `order:` entry and waits (`Store::wait_replicated`) until the standby has it, as a web
//! application would before telling a customer "order confirmed". The demo checks that every
//! confirmed order survives the failover.
//!
//! The worker talks to the demo over its stdout, one line per message (see [`Msg`]); it
//! stops when its stdin closes (the demo ended it, or the demo itself died).

use crate::commands::cli::DemoWorkerArgs;
use crate::commands::exit::{CmdResult, Failure};
use gardenstate::demo::{self, Rng, SESSION_ID_LEN};
use gardenstate::{Error, Expiry, Store};
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

// Shared with the engine's demo example: the workers' counters, and the self-verifying
// values (the demo checks the standby's copies with `verify` and `request_count_of`).
pub use gardenstate::demo::{Tally, request_count_of, verify};

/// Prefix of the keys of orders, the writes that wait for the standby.
pub const ORDER_PREFIX: &str = "order:";
/// How often the critical worker places an order.
pub const ORDER_EVERY: Duration = Duration::from_millis(20);
/// How long an order waits for the standby's acknowledgement before it is reported
/// unconfirmed.
pub const ORDER_WAIT: Duration = Duration::from_secs(2);
/// Users per worker (each logs in, browses, sometimes logs out and in again).
const USERS: usize = 1_000;
/// A logged-in user's session timeout (sliding, as in ASP.NET).
const USER_TTL: Duration = Duration::from_secs(20 * 60);
/// An anonymous visitor's session timeout: short, so visitors expire during the demo.
const VISITOR_TTL: Duration = Duration::from_secs(3);
/// One request in this many is an anonymous visitor.
const VISITOR_ONE_IN: u64 = 4;
/// A session lock older than this is taken over (ASP.NET: the execution timeout).
const LOCK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a worker reports its counters.
const REPORT_EVERY: Duration = Duration::from_millis(200);

/// What a worker tells the demo, one line on stdout each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// The worker's counters so far.
    Report(Tally),
    /// An order was written (before waiting for the standby).
    Ordered(String),
    /// An order's write is on the standby: `wait_replicated` returned true after `micros`.
    Confirmed(String, u64),
    /// An order's write was not acknowledged within [`ORDER_WAIT`].
    Unconfirmed(String),
}

impl Msg {
    /// The line that carries the message (keys are ASCII, without spaces).
    pub fn line(&self) -> String {
        match self {
            Msg::Report(t) => t.line(),
            Msg::Ordered(k) => format!("ordered {k}"),
            Msg::Confirmed(k, us) => format!("confirmed {k} {us}"),
            Msg::Unconfirmed(k) => format!("unconfirmed {k}"),
        }
    }

    /// Parses a line written by [`Msg::line`].
    pub fn parse(line: &str) -> Option<Msg> {
        let mut words = line.split(' ');
        let msg = match words.next()? {
            "report" => Msg::Report(Tally::parse_fields(words.by_ref())?),
            "ordered" => Msg::Ordered(words.next()?.to_string()),
            "confirmed" => Msg::Confirmed(words.next()?.to_string(), words.next()?.parse().ok()?),
            "unconfirmed" => Msg::Unconfirmed(words.next()?.to_string()),
            _ => return None,
        };
        words.next().is_none().then_some(msg)
    }
}

/// `gardenstate demo-worker`: serves simulated traffic until stdin closes.
pub fn run(a: DemoWorkerArgs) -> CmdResult {
    let stop = Arc::new(AtomicBool::new(false));
    // Ctrl-C reaches the whole process group: the demo cleans up and ends us by closing our
    // stdin (or killing us). If the demo itself dies, the closed stdin stops us too.
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(sig, Arc::new(AtomicBool::new(false))).map_err(Failure::error)?;
    }
    let on_eof = stop.clone();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(k) if k > 0) {}
        on_eof.store(true, Ordering::Relaxed);
    });

    let store = Store::attach(&a.segment).map_err(Failure::error)?;
    let mut w = Worker {
        store,
        rng: Rng::new(u64::from(a.worker)),
        buf: vec![0; 64 << 10],
        value: Vec::new(),
        jar: vec![None; USERS],
        visitors: Vec::new(),
        tally: Tally::default(),
        out: std::io::stdout(),
    };
    let tag = a.worker;
    let mut orders = 0u64;
    let start = Instant::now();
    let mut next_report = start;
    let mut next_order = start;
    let batch = 16u64;
    let mut served = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..batch {
            w.request().map_err(|e| Failure::error(format!("worker {tag}: {e}")))?;
        }
        served += batch;
        let now = Instant::now();
        if a.critical && now >= next_order {
            orders += 1;
            w.order(&format!("{ORDER_PREFIX}{tag}-{orders:06}"))?;
            next_order = Instant::now() + ORDER_EVERY;
        }
        if now >= next_report {
            w.send(&Msg::Report(w.tally.clone()))?;
            next_report = now + REPORT_EVERY;
        }
        if a.rate > 0 {
            // Paced traffic: `served` requests are due `served / rate` seconds after the start.
            let due = start + Duration::from_secs_f64(served as f64 / a.rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
    w.send(&Msg::Report(w.tally.clone()))
}

struct Worker {
    store: Store,
    rng: Rng,
    /// Read buffer for `get_into`.
    buf: Vec<u8>,
    /// Scratch space for the next value.
    value: Vec<u8>,
    /// Each user's session cookie: `None` when logged out.
    jar: Vec<Option<[u8; SESSION_ID_LEN]>>,
    /// Recent anonymous visitors' session ids.
    visitors: Vec<[u8; SESSION_ID_LEN]>,
    tally: Tally,
    out: std::io::Stdout,
}

type R<T = ()> = gardenstate::Result<T>;

impl Worker {
    /// Sends one message to the demo. Stdout is line-buffered: each line is one `write`, so a
    /// line written before the worker is killed reaches the demo.
    fn send(&mut self, m: &Msg) -> CmdResult {
        writeln!(self.out, "{}", m.line()).map_err(|e| Failure::error(format!("writing to the demo: {e}")))
    }

    /// Counts a value read from the store as verified or bad.
    fn check(&mut self, ok: bool) {
        if ok {
            self.tally.verified += 1;
        } else {
            self.tally.bad += 1;
            eprintln!("BAD READ: a value failed its checksum or belongs to another key");
        }
    }

    fn request(&mut self) -> R {
        self.tally.requests += 1;
        if self.rng.below(VISITOR_ONE_IN) == 0 {
            return self.visitor();
        }
        let user = self.rng.below(USERS as u64) as usize;
        let Some(sid) = self.jar[user] else { return self.log_in(user) };
        let served = match self.rng.below(100) {
            0..55 => self.view(&sid)?,
            55..72 => self.update(&sid)?,
            72..92 => self.exclusive(&sid)?,
            92..97 => self.store.touch(&sid, Expiry::Sliding(USER_TTL))?,
            _ => {
                self.store.delete(&sid)?;
                self.jar[user] = None;
                self.tally.logouts += 1;
                return Ok(());
            }
        };
        if !served {
            self.log_in(user)?; // the session is gone: log in again
        }
        Ok(())
    }

    fn log_in(&mut self, user: usize) -> R {
        let sid = self.rng.session_id();
        self.make_value(&sid, 0, 100, 1000);
        self.store.add(&sid, &self.value, Expiry::Sliding(USER_TTL))?;
        self.jar[user] = Some(sid);
        self.tally.logins += 1;
        Ok(())
    }

    /// A page that only reads the session (which pushes its sliding deadline out).
    fn view(&mut self, sid: &[u8]) -> R<bool> {
        let Some(meta) = self.store.get_into(sid, &mut self.buf)? else { return Ok(false) };
        let ok = verify(sid, &self.buf[..meta.len]);
        self.check(ok);
        Ok(true)
    }

    /// A small update without the lock: written back only if the version did not change.
    fn update(&mut self, sid: &[u8]) -> R<bool> {
        let Some(meta) = self.store.get_into(sid, &mut self.buf)? else { return Ok(false) };
        let ok = verify(sid, &self.buf[..meta.len]);
        self.check(ok);
        if meta.lock.is_some() {
            return Ok(true); // another request holds it exclusively
        }
        let count = request_count_of(sid, &self.buf[..meta.len]) + 1;
        self.make_value(sid, count, 100, 1000);
        match self.store.compare_and_set(sid, meta.version, &self.value, Expiry::Sliding(USER_TTL)) {
            Ok(_) => self.tally.updates += 1,
            Err(Error::VersionMismatch { .. } | Error::NotFound) => self.tally.conflicts += 1,
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    /// A page that uses the session under its lock: lock, then write back and unlock in one
    /// step, or (one time in four) just unlock.
    fn exclusive(&mut self, sid: &[u8]) -> R<bool> {
        let locked = match self.store.lock(sid, LOCK_TIMEOUT) {
            Ok(Some(locked)) => locked,
            Ok(None) => return Ok(false),
            Err(Error::Locked { .. }) => return Ok(true),
            Err(e) => return Err(e),
        };
        self.check(verify(sid, &locked.value));
        if self.rng.below(4) == 0 {
            // The page read the session under its lock and had nothing to write back.
            return match self.store.unlock(sid, locked.lock_id) {
                Ok(()) | Err(Error::NotFound | Error::LockMismatch { .. }) => Ok(true),
                Err(e) => Err(e),
            };
        }
        let count = request_count_of(sid, &locked.value) + 1;
        self.make_value(sid, count, 100, 1000);
        match self.store.set_and_unlock(sid, locked.lock_id, &self.value, Expiry::Sliding(USER_TTL)) {
            Ok(_) | Err(Error::NotFound | Error::LockMismatch { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// An anonymous visitor: half the time a new one, half the time a recent one coming back,
    /// whose session may have expired meanwhile.
    fn visitor(&mut self) -> R {
        if !self.visitors.is_empty() && self.rng.below(2) == 0 {
            let sid = self.visitors[self.rng.below(self.visitors.len() as u64) as usize];
            if self.view(&sid)? {
                return Ok(());
            }
        }
        let sid = self.rng.session_id();
        self.make_value(&sid, 0, 64, 300);
        self.store.add(&sid, &self.value, Expiry::Sliding(VISITOR_TTL))?;
        if self.visitors.len() < 4096 {
            self.visitors.push(sid);
        } else {
            let i = self.rng.below(4096) as usize;
            self.visitors[i] = sid;
        }
        Ok(())
    }

    /// A critical write: the order is stored, then the request waits until the standby has
    /// it before "confirming" it to the customer.
    fn order(&mut self, key: &str) -> CmdResult {
        self.make_value(key.as_bytes(), 1, 64, 300);
        let version = self
            .store
            .set(key.as_bytes(), &self.value, Expiry::After(Duration::from_secs(3600)))
            .map_err(|e| Failure::error(format!("order {key}: {e}")))?;
        self.send(&Msg::Ordered(key.to_string()))?;
        let t = Instant::now();
        if self.store.wait_replicated(version, ORDER_WAIT) {
            self.send(&Msg::Confirmed(key.to_string(), t.elapsed().as_micros() as u64))
        } else {
            self.send(&Msg::Unconfirmed(key.to_string()))
        }
    }

    /// A value of `min..max` bytes: the key, a request count, filler, checksum.
    fn make_value(&mut self, key: &[u8], count: u64, min: u64, max: u64) {
        let len = (min + self.rng.below(max - min)) as usize;
        demo::make_value(&mut self.value, key, count, len, &mut self.rng);
    }
}

/// A value as the workers write it: `key`, `count`, `filler`, checksum (for tests).
#[cfg(test)]
pub(crate) fn sealed_value(key: &[u8], count: u64, filler: &[u8]) -> Vec<u8> {
    let mut body = key.to_vec();
    body.extend_from_slice(&count.to_le_bytes());
    body.extend_from_slice(filler);
    demo::seal(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let t = Tally { requests: 1, verified: 2, bad: 3, logins: 4, logouts: 5, updates: 6, conflicts: 7 };
        for m in [
            Msg::Report(t),
            Msg::Ordered("order:1-000001".into()),
            Msg::Confirmed("order:1-000002".into(), 1234),
            Msg::Unconfirmed("order:1-000003".into()),
        ] {
            assert_eq!(Msg::parse(&m.line()), Some(m));
        }
        assert_eq!(Msg::parse("confirmed order:1 x"), None);
        assert_eq!(Msg::parse("report requests=1 extra"), None);
        assert_eq!(Msg::parse("hello"), None);
    }
}
