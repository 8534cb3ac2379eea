//! Admission of connections that have proved nothing yet (an HTTP client whose request head
//! has not arrived, a replication peer not yet authenticated), so that idle or hostile
//! sockets can neither blind a server nor lock a legitimate peer out.
//!
//! Each admitted connection holds a [`Ticket`] (one thread, one fd) until it ends. A
//! connection is *waiting* from its admission until it proves itself ([`Ticket::proven`]);
//! while waiting it may be evicted: its socket is shut down, so its thread's read returns at
//! once and the thread ends. A newcomer evicts the oldest waiting connection of its own
//! source address when that source already has `per_source` waiting, and the oldest waiting
//! connection overall when `max` are admitted. So sixteen idle sockets cannot keep a scrape
//! out (the scrape takes the place of the oldest of them and sends its request in
//! microseconds), and a flood from other sources cannot lock out a restarting standby. At
//! most `2 x max` connections are admitted at once (evicted ones until their thread has
//! noticed): beyond that the accept loop waits for an evicted connection's thread to end
//! (its socket is shut down, so that takes a moment however loaded the host; refusing the
//! newcomer instead, after evicting for it, refused a scrape whenever the evicted threads had
//! not run yet). When every admitted connection has proved itself, a newcomer is refused.
//!
//! [`Throttle`] bounds the log lines such connections cause.

use std::collections::VecDeque;
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    next: u64,
    admitted: usize,
    /// Waiting connections, oldest first: id, source, a handle to shut it down.
    waiting: VecDeque<(u64, IpAddr, TcpStream)>,
    evicted: u64,
}

/// The admission of one server's connections.
#[derive(Debug)]
pub struct Admission {
    max: usize,
    per_source: usize,
    state: Mutex<State>,
    /// Signalled when a ticket is given back (`admitted` went down).
    released: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Admission {
    pub fn new(max: usize, per_source: usize) -> Arc<Admission> {
        Arc::new(Admission { max, per_source, state: Mutex::new(State::default()), released: Condvar::new() })
    }

    /// Admits `conn` (evicting a waiting connection if a bound is reached), or refuses it
    /// (`None`: close it without serving it).
    pub fn admit(self: &Arc<Self>, conn: &TcpStream) -> Option<Ticket> {
        let source = conn.peer_addr().ok()?.ip();
        let handle = conn.try_clone().ok()?;
        let mut s = lock(&self.state);
        let from_source = s.waiting.iter().filter(|(_, ip, _)| *ip == source).count();
        let victim = if from_source >= self.per_source {
            s.waiting.iter().position(|(_, ip, _)| *ip == source)
        } else if s.admitted >= self.max {
            Some(0).filter(|_| !s.waiting.is_empty())
        } else {
            None
        };
        if let Some((_, _, c)) = victim.and_then(|i| s.waiting.remove(i)) {
            let _ = c.shutdown(Shutdown::Both);
            s.evicted += 1;
        } else if s.admitted >= self.max {
            return None; // every admitted connection has proved itself
        }
        // Above `max` only by evicted connections whose threads have not ended yet: they end as
        // soon as they run (their sockets are shut down), so wait for one. The timeout only
        // bounds a wait on a thread that is stuck for another reason.
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.admitted >= 2 * self.max {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            s = self.released.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        s.next += 1;
        let id = s.next;
        s.admitted += 1;
        s.waiting.push_back((id, source, handle));
        Some(Ticket { admission: self.clone(), id })
    }

    /// Connections evicted so far.
    pub fn evicted(&self) -> u64 {
        lock(&self.state).evicted
    }
}

/// One admitted connection's place, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    id: u64,
}

impl Ticket {
    /// The connection proved itself (sent its request, authenticated): no longer evictable.
    pub fn proven(&self) {
        lock(&self.admission.state).waiting.retain(|(id, _, _)| *id != self.id);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = lock(&self.admission.state);
        s.waiting.retain(|(id, _, _)| *id != self.id);
        s.admitted -= 1;
        self.admission.released.notify_all();
    }
}

/// At most `per_second` log lines a second; the rest are counted and reported with the next
/// line allowed.
#[derive(Debug)]
pub struct Throttle {
    per_second: u32,
    state: Mutex<(Instant, u32, u64)>,
}

impl Throttle {
    pub fn new(per_second: u32) -> Throttle {
        Throttle { per_second, state: Mutex::new((Instant::now(), 0, 0)) }
    }

    /// Whether to log a line now, and how many were suppressed before it (to say so).
    pub fn allow(&self) -> Option<u64> {
        let mut s = lock(&self.state);
        if s.0.elapsed() >= Duration::from_secs(1) {
            (s.0, s.1) = (Instant::now(), 0);
        }
        if s.1 >= self.per_second {
            s.2 += 1;
            return None;
        }
        s.1 += 1;
        Some(std::mem::take(&mut s.2))
    }

    /// `line`, logged as a warning if allowed, with the count of lines suppressed before it.
    pub fn warn(&self, line: &str) {
        if let Some(suppressed) = self.allow() {
            crate::operations::log::warn(&if suppressed > 0 {
                format!("{line} ({suppressed} more such lines suppressed)")
            } else {
                line.to_string()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_newcomer_evicts_the_oldest_waiting_and_proven_ones_stay() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = Admission::new(3, 2);
        let c: Vec<TcpStream> =
            (0..6).map(|_| TcpStream::connect(l.local_addr().unwrap()).unwrap()).collect();
        let t0 = a.admit(&c[0]).unwrap();
        t0.proven();
        let t1 = a.admit(&c[1]).unwrap();
        let t2 = a.admit(&c[2]).unwrap();
        assert_eq!(a.evicted(), 0);
        // A third waiting one from this source evicts the oldest waiting one (not the proven).
        let t3 = a.admit(&c[3]).unwrap();
        assert_eq!(a.evicted(), 1);
        let mut b = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut &c[1], &mut b).unwrap(), 0, "c[1] was shut down");
        // Proven connections are never evicted: with all of them proven, a newcomer is refused.
        t2.proven();
        t3.proven();
        assert!(a.admit(&c[4]).is_none());
        drop(t1);
        assert!(a.admit(&c[4]).is_none(), "still 3 proven");
        drop(t0);
        assert!(a.admit(&c[5]).is_some());
    }

    #[test]
    fn the_throttle_counts_what_it_suppresses() {
        let t = Throttle::new(2);
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        let mut s = lock(&t.state);
        s.0 -= Duration::from_secs(2);
        drop(s);
        assert_eq!(t.allow(), Some(2));
    }
}
