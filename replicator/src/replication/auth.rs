//! Peer authentication: a pre-shared key and an HMAC-SHA256 challenge-response in both
//! directions, before any data flows.
//!
//! ```text
//! standby -> primary   Challenge(ns)                      ns, np: 32 fresh random bytes
//! primary -> standby   Challenge(np), Response(mac_p)     from /dev/urandom
//! standby -> primary   Response(mac_s)
//! mac_p = HMAC(key, "gardenstate-auth-1 primary" || ns || np)
//! mac_s = HMAC(key, "gardenstate-auth-1 standby" || np || ns)
//! ```
//!
//! Both sides then derive the connection's session keys from the key and both nonces, and
//! every byte after the handshake travels in records sealed with them (`seal`).
//!
//! Each side proves it knows the key by MACing the other side's fresh nonce, so a recorded
//! exchange cannot be replayed; the role label makes a side's own MAC useless as the other
//! side's answer (no reflection). MACs are compared in constant time (`Mac::verify_slice`).
//! Handshake frames are read with a small length limit and a timeout, so a stranger can
//! neither make a peer allocate nor hold it. The key is not a password: it must be at least 16
//! bytes (use `head -c 32 /dev/urandom > key`), in a file nobody but its owner can read.

use crate::replication::frame::{self, FrameError, HANDSHAKE_MAX_PAYLOAD, MAC_LEN, Message, NONCE_LEN};
use crate::replication::seal::{End, SessionKeys};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub const MIN_KEY_LEN: usize = 16;
const LABEL_PRIMARY: &[u8] = b"gardenstate-auth-1 primary";
const LABEL_STANDBY: &[u8] = b"gardenstate-auth-1 standby";

/// The pre-shared key (compared only to tell a reload that the key file changed).
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({} bytes)", self.0.len())
    }
}

impl Key {
    /// A key from bytes; refuses one shorter than [`MIN_KEY_LEN`].
    pub fn new(bytes: Vec<u8>) -> Result<Key, String> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(format!(
                "the key is {} bytes, at least {MIN_KEY_LEN} are required; make one with `head -c 32 /dev/urandom > KEYFILE`",
                bytes.len()
            ));
        }
        Ok(Key(bytes))
    }

    /// Reads the key file: its whole content (one trailing newline is dropped, so `echo`ed keys
    /// work), refusing a file that the group or others may read or write, anything that is not
    /// a regular file (a directory gets advice about a file in it, never `chmod 600` on the
    /// directory), and a file in a directory others may write without the sticky bit (anyone
    /// could replace the key there).
    pub fn from_file(path: &Path) -> Result<Key, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("key file {}: {e}", path.display()))?;
        if meta.is_dir() {
            let d = path.display();
            return Err(format!(
                "key file {d} is a directory, not a file: point --key-file (key_file) at a file, e.g. \
                 `head -c 32 /dev/urandom > {d}/key && chmod 600 {d}/key`{}",
                if meta.mode() & 0o1002 == 0o002 {
                    format!(
                        " (and {d} is writable by everyone: keep the key in a directory only its owner writes)"
                    )
                } else {
                    String::new()
                }
            ));
        }
        if !meta.is_file() {
            return Err(format!(
                "key file {} is not a regular file: point --key-file at a file",
                path.display()
            ));
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if std::fs::metadata(dir).is_ok_and(|d| d.mode() & 0o1002 == 0o002) {
            return Err(format!(
                "key file {} is in {}, a directory everyone may write (and not sticky): anyone could \
                 replace the key; move it to a directory only its owner writes (or `chmod o-w {}`)",
                path.display(),
                dir.display(),
                dir.display()
            ));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(format!(
                "key file {} has mode {:o}: it must not be accessible to group or others; run `chmod 600 {}`",
                path.display(),
                meta.mode() & 0o777,
                path.display()
            ));
        }
        let mut bytes = std::fs::read(path).map_err(|e| format!("key file {}: {e}", path.display()))?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        Key::new(bytes).map_err(|e| format!("key file {}: {e}", path.display()))
    }

    /// The key's bytes, for the other MACs made with it (heartbeats).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self, label: &[u8], first: &[u8], second: &[u8]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        m.update(label);
        m.update(first);
        m.update(second);
        m
    }
}

/// Fills `buf` with fresh random bytes from the kernel.
pub fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// 32 fresh random bytes from the kernel.
pub fn nonce() -> std::io::Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    fill_random(&mut n)?;
    Ok(n)
}

/// Why a handshake failed.
#[derive(Debug)]
pub enum AuthError {
    /// The peer sent something that is not a valid frame.
    Frame(FrameError),
    /// A valid frame, but not the one the handshake expects at this step.
    Unexpected {
        expected: &'static str,
        found: &'static str,
    },
    /// The peer's MAC is wrong: it does not have our key.
    WrongKey,
    /// The peer closed the connection mid-handshake (a standby hangs up on a primary whose
    /// MAC is wrong, so this is how a primary sees a standby with another key).
    HungUp,
    Io(std::io::Error),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Frame(e) => write!(f, "handshake: {e}"),
            AuthError::Unexpected { expected, found } => {
                write!(f, "handshake: expected {expected}, the peer sent {found}")
            }
            AuthError::WrongKey => {
                write!(
                    f,
                    "authentication failed: the peer's response does not match our key (different --key-file?)"
                )
            }
            AuthError::HungUp => {
                write!(
                    f,
                    "authentication failed: the peer hung up during the handshake (it may hold another key, or require TLS)"
                )
            }
            AuthError::Io(e) => write!(f, "handshake: {e}"),
        }
    }
}

fn read(r: &mut impl Read, expected: &'static str) -> Result<Message, AuthError> {
    let m = frame::read_frame(r, HANDSHAKE_MAX_PAYLOAD, &mut Vec::new()).map_err(|e| match e {
        FrameError::Closed => AuthError::HungUp,
        e => AuthError::Frame(e),
    })?;
    let ok =
        matches!((&m, expected), (Message::Challenge(_), "Challenge") | (Message::Response(_), "Response"));
    if !ok {
        return Err(AuthError::Unexpected { expected, found: m.name() });
    }
    Ok(m)
}

fn send(w: &mut impl Write, msgs: &[Message]) -> Result<(), AuthError> {
    let mut out = Vec::new();
    for m in msgs {
        frame::encode_into(m, &mut out);
    }
    w.write_all(&out).and_then(|_| w.flush()).map_err(AuthError::Io)
}

/// The standby's (connecting) side of the handshake. Returns the session keys for `seal`.
pub fn standby_handshake(conn: &mut (impl Read + Write), key: &Key) -> Result<SessionKeys, AuthError> {
    let ns = nonce().map_err(AuthError::Io)?;
    send(conn, &[Message::Challenge(ns)])?;
    let Message::Challenge(np) = read(conn, "Challenge")? else { unreachable!("read checked the type") };
    let Message::Response(mac_p) = read(conn, "Response")? else { unreachable!("read checked the type") };
    key.mac(LABEL_PRIMARY, &ns, &np).verify_slice(&mac_p).map_err(|_| AuthError::WrongKey)?;
    let mac_s: [u8; MAC_LEN] = key.mac(LABEL_STANDBY, &np, &ns).finalize().into_bytes().into();
    send(conn, &[Message::Response(mac_s)])?;
    Ok(SessionKeys::derive(&key.0, &ns, &np, End::Standby))
}

/// The primary's (accepting) side of the handshake. Returns the session keys for `seal`.
pub fn primary_handshake(conn: &mut (impl Read + Write), key: &Key) -> Result<SessionKeys, AuthError> {
    let Message::Challenge(ns) = read(conn, "Challenge")? else { unreachable!("read checked the type") };
    let np = nonce().map_err(AuthError::Io)?;
    let mac_p: [u8; MAC_LEN] = key.mac(LABEL_PRIMARY, &ns, &np).finalize().into_bytes().into();
    send(conn, &[Message::Challenge(np), Message::Response(mac_p)])?;
    let Message::Response(mac_s) = read(conn, "Response")? else { unreachable!("read checked the type") };
    key.mac(LABEL_STANDBY, &np, &ns).verify_slice(&mac_s).map_err(|_| AuthError::WrongKey)?;
    Ok(SessionKeys::derive(&key.0, &ns, &np, End::Primary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::fs::PermissionsExt;

    fn pair(kp: Key, ks: Key) -> (Result<SessionKeys, AuthError>, Result<SessionKeys, AuthError>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            primary_handshake(&mut c, &kp)
        });
        let mut c = TcpStream::connect(addr).unwrap();
        let s = standby_handshake(&mut c, &ks);
        drop(c);
        (t.join().unwrap(), s)
    }

    #[test]
    fn the_same_key_authenticates_both_sides() {
        let k = Key::new(b"0123456789abcdef-shared".to_vec()).unwrap();
        let (p, s) = pair(k.clone(), k);
        assert!(p.is_ok() && s.is_ok(), "{p:?} {s:?}");
        // Both ends derived the same session keys: what one seals, the other opens.
        let ((mut to_standby, _), (_, mut from_primary)) = (p.unwrap().split(), s.unwrap().split());
        let mut wire = Vec::new();
        to_standby.seal_into(b"hello", &mut wire);
        let mut got = [0u8; 5];
        assert_eq!(from_primary.read_opened(&mut &wire[..], &mut got).unwrap(), 5);
        assert_eq!(&got, b"hello");
    }

    #[test]
    fn a_wrong_key_is_refused_by_both_sides() {
        let (p, s) = pair(
            Key::new(b"0123456789abcdef-one".to_vec()).unwrap(),
            Key::new(b"0123456789abcdef-two".to_vec()).unwrap(),
        );
        // The standby checks first and hangs up, so the primary sees no (valid) response.
        assert!(matches!(s, Err(AuthError::WrongKey)), "{s:?}");
        assert!(p.is_err());
    }

    #[test]
    fn garbage_is_refused_before_anything_else() {
        let k = Key::new(vec![1; 16]).unwrap();
        let mut conn = std::io::Cursor::new(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
        assert!(matches!(
            primary_handshake(&mut conn, &k),
            Err(AuthError::Frame(FrameError::BadMagic { .. }))
        ));
    }

    #[test]
    fn key_files_must_be_private_and_long_enough() {
        let dir = std::env::temp_dir().join(format!("gds-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("key");
        std::fs::write(&p, b"0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Key::from_file(&p).is_ok());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(Key::from_file(&p).unwrap_err().contains("chmod 600"));
        std::fs::write(&p, b"short\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Key::from_file(&p).unwrap_err().contains("at least 16"));
        // A world-writable directory given as the key file: advice about a file in it, never
        // `chmod 600` on the directory; a key inside such a directory is refused.
        std::fs::write(&p, b"0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Key::from_file(&dir).unwrap_err();
        assert!(
            e.contains("is a directory")
                && e.contains("/key && chmod 600")
                && e.contains("writable by everyone"),
            "{e}"
        );
        assert!(!e.contains(&format!("chmod 600 {}`", dir.display())), "{e}");
        let e = Key::from_file(&p).unwrap_err();
        assert!(e.contains("everyone may write") && e.contains("chmod o-w"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(Key::from_file(&p).is_ok(), "a sticky directory (like /tmp) is fine");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
