//! The replication link's byte stream: plain TCP, or TLS 1.3 (rustls) with certificates on
//! both sides, behind one type, [`Conn`], that the daemons use like a `TcpStream`.
//!
//! TLS is on when a node is given `tls_cert`, `tls_key` and `tls_ca` (all three; see
//! `config`). Both ends must agree: a TLS node refuses a plaintext peer and a plaintext node
//! refuses a TLS peer, each with a logged reason, before any data flows. Inside TLS the HMAC
//! challenge-response (`auth`) still runs, so a stolen certificate without the key gets
//! nowhere (and a stolen key without a certificate neither).
//!
//! Why a pump: the daemons use one connection from two threads (the primary's streaming
//! writer and ack reader, the standby's reader and ack writer, each on a `try_clone`), set
//! read and write timeouts on it and `shutdown` it from a third thread. A rustls connection
//! is one state machine that cannot be shared that way. So a TLS [`Conn`] is one end (`app`)
//! of a `UnixStream::pair()`, which has all of the above; the other end (`pump`) is served by
//! two threads that own the TCP socket:
//!
//! ```text
//!   daemon threads <-> app ==unix pair== pump --[rx thread]-- TCP --> rustls --> pump (plaintext)
//!                                             --[tx thread]-- pump --> rustls --> TCP
//! ```
//!
//! Invariants that make the pump correct:
//! 1. No deadlock: the rustls state sits behind a `Mutex` that is held only for in-memory
//!    work (feeding it received bytes, taking out plaintext or records); never across a read
//!    or a write on a socket. Only the rx thread reads the TCP socket and only the tx thread
//!    writes it (so records are never interleaved); rustls output that the rx side causes
//!    (an alert, a key-update answer) is sent by the tx thread, which looks for it at least
//!    every [`TX_POLL`] even when the daemon writes nothing.
//! 2. Back-pressure, not buffering: each thread moves one chunk at a time and blocks on the
//!    next socket when it is full, so a peer that stops reading stalls the daemon's writes
//!    (which then time out, as on plain TCP), and a daemon that stops reading stalls the TCP
//!    socket.
//! 3. Either thread ending ends the link both ways; nothing stays half-alive:
//!    - the daemon drops every handle of its `Conn` (or shuts it down): the tx thread reads
//!      EOF on `pump`, sends close_notify and a FIN, and sets a [`LINGER`] read timeout; the
//!      rx thread reads on (and drops what it cannot deliver) until the peer closes too or
//!      LINGER of silence, then shuts the socket: a graceful close, since closing a socket
//!      with unread data resets it, which can destroy the last records in flight;
//!    - the peer closes, resets, or sends bad TLS: the rx thread shuts `pump` (so the daemon
//!      reads EOF after what arrived) and, on an error, the TCP socket both ways (which ends
//!      the tx thread's write, and its next poll reads EOF on the shut `pump`);
//!    - a TCP write fails or times out ([`Conn`]'s timeout also bounds the pump's TCP
//!      writes): the tx thread shuts both sockets down, and the rx thread ends as above.
//!    - the peer's certificate expires (rustls checks validity only at the handshake): the tx
//!      thread, which wakes at least every [`TX_POLL`], logs it and ends as on a failed write.
//!    - `Conn::shutdown(Both)` (the daemons' way to stop the other thread) shuts down `app`
//!      and the TCP socket at once, as on plain TCP; a shut-down raw `TcpStream` clone (the
//!      daemons keep one to end a role) propagates the same way through the pump.
//! 4. `flush` means what a returned write means on plain TCP: the bytes are in the kernel's
//!    socket. The daemon's writes and the tx thread's sends are counted (under a lock never
//!    held across I/O); `flush` waits, bounded by the write timeout, until the tx thread has
//!    sent everything written before it, or fails if the tx thread ended first. A daemon that
//!    must get a last message out before it cuts the socket (a switchover's outcome) flushes.

use crate::replication::seal::{Opener, Sealer, SessionKeys};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The tx thread looks for rustls output it did not cause itself at least this often.
const TX_POLL: Duration = Duration::from_millis(50);
/// How long a closing link waits for the peer to close too (see `tx`).
const LINGER: Duration = Duration::from_secs(2);
/// Bytes moved per step.
const CHUNK: usize = 16 << 10;
/// The first byte of a TLS handshake record (a ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;

/// A node's TLS identity and trust: its certificate chain and key, and the CA its peers'
/// certificates must chain to. Cheap to clone; clones share the configuration, so a
/// [`Tls::reload`] applies to every next handshake (links already open keep theirs).
#[derive(Clone)]
pub struct Tls {
    configs: Arc<Mutex<Configs>>,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

/// Both sides' rustls configurations, built from the same files, and when our certificate
/// expires (Unix ms).
struct Configs {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    expires_unix_ms: u64,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "certificate {}", self.cert.display())
    }
}

impl Tls {
    /// From the three optional paths: all three (TLS), or none (plaintext).
    pub fn from_paths(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
    ) -> Result<Option<Tls>, String> {
        match (cert, key, ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Tls::load(&cert, &key, &ca).map(Some),
            (cert, key, ca) => {
                let missing: Vec<&str> =
                    [("tls_cert", cert.is_none()), ("tls_key", key.is_none()), ("tls_ca", ca.is_none())]
                        .into_iter()
                        .filter_map(|(name, absent)| absent.then_some(name))
                        .collect();
                Err(format!(
                    "TLS needs all three of tls_cert, tls_key and tls_ca (or none, for plaintext); missing: {}",
                    missing.join(", ")
                ))
            }
        }
    }

    /// Reads the PEM files and builds both sides' rustls configurations (TLS 1.3 only, `ring`).
    /// Refuses a key file the group or others may access, empty files, a key that does not
    /// match the certificate, and a certificate that the CA did not sign.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Tls, String> {
        let meta = std::fs::metadata(key).map_err(|e| format!("TLS key file {}: {e}", key.display()))?;
        if meta.mode() & 0o077 != 0 {
            return Err(format!(
                "TLS key file {} has mode {:o}: it must not be accessible to group or others; run `chmod 600 {}`",
                key.display(),
                meta.mode() & 0o777,
                key.display()
            ));
        }
        let certs = read_certs(cert, "tls_cert")?;
        let expires_unix_ms =
            not_after_unix_ms(&certs[0]).map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
        let private = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("TLS key file {}: no usable private key: {e}", key.display()))?;
        let mut roots = RootCertStore::empty();
        for c in read_certs(ca, "tls_ca")? {
            roots.add(c).map_err(|e| format!("TLS CA file {}: {e}", ca.display()))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_err = |what: &str, e: rustls::Error| format!("TLS {what}: {e}");
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("TLS CA file {}: {e}", ca.display()))?;
        // Our own certificate must be one our peers accept (they trust the same CA): say so
        // now rather than at every connection.
        verifier.verify_client_cert(&certs[0], &certs[1..], UnixTime::now()).map_err(|e| {
            format!(
                "TLS certificate {} is not valid under the CA in {} (for a replication node): {e}",
                cert.display(),
                ca.display()
            )
        })?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err("setup", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), private.clone_key())
            .map_err(|e| format!("TLS certificate {} and key {}: {e}", cert.display(), key.display()))?;
        server.send_tls13_tickets = 0; // no resumption: links are long-lived
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err("setup", e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, private)
            .map_err(|e| format!("TLS certificate {} and key {}: {e}", cert.display(), key.display()))?;
        client.resumption = rustls::client::Resumption::disabled();
        Ok(Tls {
            configs: Arc::new(Mutex::new(Configs {
                server: Arc::new(server),
                client: Arc::new(client),
                expires_unix_ms,
            })),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            ca: ca.to_path_buf(),
        })
    }

    /// Reads the three files again, with every check of [`Tls::load`]; on success the next
    /// handshakes use them. On failure the current ones stay in use and the error says why.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = Tls::load(&self.cert, &self.key, &self.ca)?;
        let new = fresh.configs.lock().unwrap_or_else(|p| p.into_inner());
        let mut cur = self.configs.lock().unwrap_or_else(|p| p.into_inner());
        *cur = Configs {
            server: new.server.clone(),
            client: new.client.clone(),
            expires_unix_ms: new.expires_unix_ms,
        };
        Ok(())
    }

    /// When our certificate (the first of the chain in use) expires, in Unix ms.
    pub fn expires_unix_ms(&self) -> u64 {
        self.current().expires_unix_ms
    }

    /// The three files, for watching them.
    pub fn files(&self) -> [&Path; 3] {
        [&self.cert, &self.key, &self.ca]
    }

    fn current(&self) -> MutexGuard<'_, Configs> {
        self.configs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// When a certificate expires (its notAfter), in Unix ms.
fn not_after_unix_ms(der: &CertificateDer<'_>) -> Result<u64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    Ok(cert.validity().not_after.timestamp().max(0) as u64 * 1000)
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{what} file {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} file {}: no CERTIFICATE in it", path.display()));
    }
    Ok(certs)
}

/// One replication connection (see the module doc). Cloning (`try_clone`) gives another
/// handle on the same stream, as with `TcpStream`.
#[derive(Debug)]
pub struct Conn {
    tcp: TcpStream,
    /// TLS: the daemon's end of the pair, and how much of what was written to it the tx
    /// thread has put on the socket (for `flush`).
    app: Option<(UnixStream, Arc<Sent>)>,
    /// After the handshake: the sealed-record layer (`seal`), shared by every handle, so
    /// each direction counts its records once whichever clone sends or reads them. Each
    /// half's lock is held across the socket I/O of one record: only one thread reads and
    /// one writes a connection, so nothing waits on it but the record's own bytes.
    sealed: Option<Arc<(Mutex<Sealer>, Mutex<Opener>)>>,
}

/// A connection's bytes under the sealed-record layer.
struct Raw<'c>(&'c Conn);

impl Read for Raw<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.0.app {
            Some((app, _)) => (&*app).read(buf),
            None => (&self.0.tcp).read(buf),
        }
    }
}

impl Write for Raw<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.0.app {
            Some((app, sent)) => {
                let n = (&*app).write(buf)?;
                sent.lock().0 += n as u64;
                Ok(n)
            }
            None => (&self.0.tcp).write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Plaintext bytes written by the daemon into the pair, bytes sent by the tx thread (as
/// records, to the socket), and whether the tx thread has ended. The lock is never held
/// across I/O.
#[derive(Debug, Default)]
struct Sent {
    counts: Mutex<(u64, u64, bool)>,
    moved: Condvar,
}

impl Sent {
    fn lock(&self) -> MutexGuard<'_, (u64, u64, bool)> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The accepting side: with `tls`, a TLS server handshake (the peer's certificate must chain
/// to the CA); without, plain TCP. Either way a peer that speaks the other way is refused.
/// The handshake (and the peek at the first byte) gives up after `timeout` of silence.
pub fn server(tcp: TcpStream, tls: Option<&Tls>, timeout: Duration) -> Result<Conn, String> {
    tcp.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut first = [0u8; 1];
    let seen = match tcp.peek(&mut first) {
        Ok(0) => None,
        Ok(_) => Some(first[0]),
        Err(e) if is_timeout(&e) => return Err(format!("the peer sent nothing for {timeout:?}")),
        Err(e) => return Err(e.to_string()),
    };
    let refuse = |why: &str| {
        // Shut, not just dropped: the caller may hold a clone of the socket.
        let _ = tcp.shutdown(Shutdown::Both);
        Err(why.to_string())
    };
    match (tls, seen) {
        (None, Some(TLS_HANDSHAKE)) => refuse(
            "the peer started a TLS handshake, but this node runs without TLS (no tls_cert/tls_key/tls_ca): \
             both ends of a link must use TLS, or neither",
        ),
        (Some(_), Some(b)) if b == crate::replication::frame::MAGIC[0] => refuse(
            "the peer speaks plaintext (no TLS), but this node requires TLS: give the peer tls_cert, tls_key \
             and tls_ca too",
        ),
        (None, _) => Ok(Conn { tcp, app: None, sealed: None }),
        (Some(t), _) => {
            let c = ServerConnection::new(t.current().server.clone()).map_err(|e| format!("TLS: {e}"))?;
            handshake(tcp, Connection::Server(c), timeout)
        }
    }
}

/// The connecting side, on a connected socket: with `tls`, a TLS client handshake that checks
/// the server's certificate against the CA and the host in `addr` (`HOST:PORT`: a DNS name
/// or an IP address the certificate must carry), and presents ours; without, plain TCP.
pub fn client(tcp: TcpStream, addr: &str, tls: Option<&Tls>, timeout: Duration) -> Result<Conn, String> {
    let Some(t) = tls else { return Ok(Conn { tcp, app: None, sealed: None }) };
    tcp.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("TLS: {host:?} (from {addr}) is neither a DNS name nor an IP address"))?;
    let c = ClientConnection::new(t.current().client.clone(), name).map_err(|e| format!("TLS: {e}"))?;
    handshake(tcp, Connection::Client(c), timeout)
}

/// What an operator does about a handshake that failed with `e`, when we know: the peer's
/// alert says it refused our certificate, or we refused the peer's. `is_client`: we
/// connected (a standby, or `switchover`), so the peer is the primary.
fn advice(e: &rustls::Error, is_client: bool) -> Option<String> {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let peer = if is_client { "the primary" } else { "the connecting node (standby or operator)" };
    let us = if is_client { "this node" } else { "the primary" };
    Some(match e {
        E::AlertReceived(A::UnknownCA) => format!(
            "{peer} does not trust the certificate authority that signed {us}'s certificate: \
             check --tls-ca on {peer} (it must hold the CA that signed this node's --tls-cert), \
             or give this node a certificate signed by that CA"
        ),
        E::AlertReceived(A::CertificateExpired) => format!(
            "{peer} refused this node's certificate as expired: renew --tls-cert here, then send \
             SIGHUP (or just replace the files: they are watched)"
        ),
        E::AlertReceived(A::BadCertificate | A::CertificateUnknown | A::UnsupportedCertificate) => format!(
            "{peer} refused this node's certificate: check that --tls-cert is signed by the CA in \
             {peer}'s --tls-ca and allows both server and client authentication"
        ),
        E::AlertReceived(A::CertificateRequired) => {
            format!("{peer} requires a client certificate: give this node --tls-cert, --tls-key and --tls-ca")
        }
        E::InvalidCertificate(C::UnknownIssuer) => format!(
            "the certificate of {peer} is not signed by a CA in this node's --tls-ca: add that CA to \
             --tls-ca here, or give {peer} a certificate from this CA"
        ),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => format!(
            "the certificate of {peer} has expired: renew its --tls-cert (nodes reload certificates \
             when the files change or on SIGHUP)"
        ),
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            format!("the certificate of {peer} is not valid yet: check the clocks of both hosts")
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "the certificate of {peer} does not carry the name or address this node connects to: \
             add it to the certificate's subject alternative names, or connect by a name it carries"
        ),
        _ => return None,
    })
}

/// A TLS error for the log: what to do about it first, when [`advice`] knows, then rustls's
/// own words.
fn describe(e: &rustls::Error, is_client: bool) -> String {
    match advice(e, is_client) {
        Some(what) => format!("{what} (TLS: {e})"),
        None => e.to_string(),
    }
}

/// [`describe`] for the rustls error inside an I/O error (as rustls's I/O calls return them).
fn describe_io(e: &io::Error, is_client: bool) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls_error) => describe(tls_error, is_client),
        None => e.to_string(),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Runs the handshake on the socket (bounded by its timeouts), then starts the pump.
fn handshake(mut tcp: TcpStream, mut tls: Connection, timeout: Duration) -> Result<Conn, String> {
    let is_client = matches!(tls, Connection::Client(_));
    let explain = |e: io::Error| match e.kind() {
        _ if is_timeout(&e) => format!("TLS handshake: the peer was silent for {timeout:?}"),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
            "TLS handshake: the peer closed the connection (does it run without TLS? both ends of a \
             link must use TLS, or neither; or it refused our certificate)"
                .into()
        }
        _ => format!("TLS handshake: {}", describe_io(&e, is_client)),
    };
    let mut run = || -> io::Result<()> {
        while tls.is_handshaking() {
            tls.complete_io(&mut tcp)?;
        }
        while tls.wants_write() {
            tls.write_tls(&mut tcp)?;
        }
        Ok(())
    };
    if let Err(e) = run() {
        let _ = tcp.shutdown(Shutdown::Both); // the caller may hold a clone of the socket
        return Err(explain(e));
    }
    tls.set_buffer_limit(None); // the pump drains after every chunk (invariant 2)
    // The link lives on only while the peer's certificate is valid: the tx thread closes it
    // once the certificate expires (rustls checks validity at the handshake only).
    let peer_expires =
        tls.peer_certificates().and_then(|c| c.first()).and_then(|c| not_after_unix_ms(c).ok());
    // The rx thread blocks until the peer sends or the link ends (invariant 3); writes keep
    // the timeout, so a stalled peer cannot hold the tx thread forever.
    tcp.set_read_timeout(None).map_err(|e| e.to_string())?;
    let (app, pump) = UnixStream::pair().map_err(|e| e.to_string())?;
    // The handshake's last read may have brought application data too (the peer's first
    // message, sent right behind its Finished): hand it over before the rx thread waits for
    // more, or it would sit in rustls unseen. It is small, the pair is empty: no blocking.
    let (mut early, mut closed) = (Vec::new(), false);
    drain_plaintext(&mut tls, &mut early, &mut closed).map_err(|e| format!("TLS: {e}"))?;
    (&pump).write_all(&early).map_err(|e| e.to_string())?;
    if closed {
        pump.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    }
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    let state = Arc::new(Mutex::new(tls));
    let (rx_tcp, rx_pump) =
        (tcp.try_clone().map_err(|e| e.to_string())?, pump.try_clone().map_err(|e| e.to_string())?);
    let rx_state = state.clone();
    let rx_peer = peer.clone();
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new().name(name.into()).spawn(f).map_err(|e| format!("TLS pump: {e}"))
    };
    spawn("tls-rx", Box::new(move || rx(rx_tcp, rx_pump, &rx_state, &rx_peer)))?;
    let tx_tcp = tcp.try_clone().map_err(|e| e.to_string())?;
    pump.set_read_timeout(Some(TX_POLL)).map_err(|e| e.to_string())?;
    let sent = Arc::new(Sent::default());
    let tx_sent = sent.clone();
    let tx_thread = move || {
        tx(tx_tcp, pump, &state, &tx_sent, &peer, peer_expires);
        tx_sent.lock().2 = true;
        tx_sent.moved.notify_all();
    };
    spawn("tls-tx", Box::new(tx_thread))?;
    Ok(Conn { tcp, app: Some((app, sent)), sealed: None })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Everything rustls has to send, taken out under the lock (in memory).
fn take_records(tls: &mut Connection, out: &mut Vec<u8>) {
    while tls.wants_write() {
        if tls.write_tls(out).is_err() {
            break; // writing into a Vec does not fail
        }
    }
}

/// Socket -> rustls -> plaintext to the daemon.
fn rx(mut tcp: TcpStream, mut pump: UnixStream, state: &Mutex<Connection>, peer: &str) {
    let mut buf = vec![0u8; CHUNK];
    let mut plain = Vec::new();
    // Some(None): the link failed below TLS (reset...): the daemon hears of it as EOF.
    let failure: Option<Option<String>> = loop {
        let n = match tcp.read(&mut buf) {
            Ok(0) => break None, // EOF (with or without close_notify): the daemon sees EOF
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break Some(None),
        };
        plain.clear();
        let mut closed = false;
        let step = {
            let mut tls = lock(state);
            let is_client = matches!(*tls, Connection::Client(_));
            let mut rest = &buf[..n];
            let mut step = Ok(());
            while !rest.is_empty() && step.is_ok() {
                step = tls
                    .read_tls(&mut rest)
                    .map_err(|e| e.to_string())
                    .and_then(|_| tls.process_new_packets().map(drop).map_err(|e| describe(&e, is_client)))
                    .and_then(|_| drain_plaintext(&mut tls, &mut plain, &mut closed));
            }
            step
        };
        if let Err(e) = step {
            break Some(Some(e));
        }
        if !plain.is_empty() && pump.write_all(&plain).is_err() {
            // The daemon closed its end: the tx thread closes gracefully; drain what the peer
            // still sends, for at most LINGER of silence, so that the close is no reset.
            let _ = tcp.set_read_timeout(Some(LINGER));
            while matches!(tcp.read(&mut buf), Ok(n) if n > 0) {}
            break Some(None);
        }
        if closed {
            break None;
        }
    };
    match failure {
        Some(why) => {
            if let Some(e) = why {
                crate::operations::log::warn(&format!("TLS link with {peer} failed: {e}"));
            }
            let _ = tcp.shutdown(Shutdown::Both);
            let _ = pump.shutdown(Shutdown::Both);
        }
        None => {
            let _ = pump.shutdown(Shutdown::Write);
        }
    }
}

fn drain_plaintext(tls: &mut Connection, plain: &mut Vec<u8>, closed: &mut bool) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    loop {
        match tls.reader().read(&mut chunk) {
            Ok(0) => {
                *closed = true; // close_notify
                return Ok(());
            }
            Ok(n) => plain.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Milliseconds since 1970, for the expiry of an open link's peer certificate. With the
/// `failpoints` feature (tests only), `GDS_TEST_CERT_CLOCK_AHEAD_S` seconds are added: a test
/// lets a peer connect with a certificate valid for hours (rustls checks it with the real
/// clock) and sees the link closed at once, instead of racing a certificate that expires in
/// seconds.
fn cert_clock_ms() -> u64 {
    let now = crate::operations::status::unix_ms_now();
    #[cfg(feature = "failpoints")]
    let now = now.saturating_add(
        std::env::var("GDS_TEST_CERT_CLOCK_AHEAD_S")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map_or(0, |s| s.saturating_mul(1000)),
    );
    now
}

/// Plaintext from the daemon -> rustls -> socket; also sends what the rx side made rustls
/// queue (invariant 1).
fn tx(
    mut tcp: TcpStream,
    mut pump: UnixStream,
    state: &Mutex<Connection>,
    sent: &Sent,
    peer: &str,
    peer_expires: Option<u64>,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::new();
    loop {
        if let Some(at) = peer_expires.filter(|&at| cert_clock_ms() >= at) {
            crate::operations::log::warn(&format!(
                "TLS link with {peer}: the peer's certificate expired at {}: closing the link; \
                 the peer must renew its --tls-cert (a node reloads replaced files) to connect again",
                crate::operations::log::timestamp(std::time::UNIX_EPOCH + Duration::from_millis(at))
            ));
            break;
        }
        out.clear();
        let n = match pump.read(&mut buf) {
            Ok(0) => {
                let mut tls = lock(state);
                tls.send_close_notify();
                take_records(&mut tls, &mut out);
                drop(tls);
                // A graceful close: FIN after close_notify, and the rx thread reads on (for at
                // most LINGER) until the peer closes too. Closing a socket with unread data
                // sends a reset, which can destroy our last records (a switchover's Done)
                // before the peer has read them.
                let _ = tcp.set_read_timeout(Some(LINGER));
                if tcp.write_all(&out).is_ok() {
                    let _ = tcp.shutdown(Shutdown::Write);
                    return;
                }
                break;
            }
            Ok(n) => n,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => 0,
            Err(_) => break,
        };
        {
            let mut tls = lock(state);
            if n > 0 {
                if let Err(e) = tls.writer().write_all(&buf[..n]) {
                    let is_client = matches!(*tls, Connection::Client(_));
                    crate::operations::log::warn(&format!(
                        "TLS link with {peer} failed: {}",
                        describe_io(&e, is_client)
                    ));
                    break;
                }
            }
            take_records(&mut tls, &mut out);
        }
        if !out.is_empty() && tcp.write_all(&out).is_err() {
            break;
        }
        if n > 0 {
            sent.lock().1 += n as u64;
            sent.moved.notify_all();
        }
    }
    let _ = tcp.shutdown(Shutdown::Both);
    let _ = pump.shutdown(Shutdown::Both);
}

impl Conn {
    /// A plain TCP connection (for callers that have no TLS to offer).
    pub fn plain(tcp: TcpStream) -> Conn {
        Conn { tcp, app: None, sealed: None }
    }

    /// From now on every byte sent or read is sealed with the session keys of the handshake
    /// that just ended (`seal`); set before the handle is cloned.
    pub fn seal(&mut self, keys: SessionKeys) {
        let (sealer, opener) = keys.split();
        self.sealed = Some(Arc::new((Mutex::new(sealer), Mutex::new(opener))));
    }

    pub fn is_tls(&self) -> bool {
        self.app.is_some()
    }

    pub fn try_clone(&self) -> io::Result<Conn> {
        let app = match &self.app {
            Some((app, sent)) => Some((app.try_clone()?, sent.clone())),
            None => None,
        };
        Ok(Conn { tcp: self.tcp.try_clone()?, app, sealed: self.sealed.clone() })
    }

    /// As `TcpStream::shutdown`: ends reads and/or writes on every handle now (TLS: also the
    /// socket under it, so the pump ends; invariant 3).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if let Some((app, _)) = &self.app {
            let _ = app.shutdown(how);
        }
        self.tcp.shutdown(how)
    }

    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match &self.app {
            Some((app, _)) => app.set_read_timeout(d),
            None => self.tcp.set_read_timeout(d),
        }
    }

    pub fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match &self.app {
            Some((app, _)) => app.set_write_timeout(d),
            None => self.tcp.set_write_timeout(d),
        }
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.tcp.set_nodelay(on)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr()
    }
}

impl Read for &Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.sealed {
            Some(s) => lock(&s.1).read_opened(&mut Raw(self), buf),
            None => Raw(self).read(buf),
        }
    }
}

impl Write for &Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.sealed {
            Some(s) => {
                lock(&s.0).write_sealed(&mut Raw(self), buf)?;
                Ok(buf.len())
            }
            None => Raw(self).write(buf),
        }
    }
    /// As on plain TCP, where a write is in the kernel when it returns: waits until the tx
    /// thread has put everything this thread wrote so far on the socket (bounded by the write
    /// timeout).
    fn flush(&mut self) -> io::Result<()> {
        let Some((app, sent)) = &self.app else { return Ok(()) };
        let limit = app.write_timeout()?.map(|d| Instant::now() + d);
        let mut counts = sent.lock();
        let target = counts.0;
        while counts.1 < target {
            if counts.2 {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the TLS link ended before sending it all",
                ));
            }
            let wait = match limit {
                Some(l) if Instant::now() >= l => return Err(io::Error::from(io::ErrorKind::TimedOut)),
                Some(l) => l - Instant::now(),
                None => Duration::from_secs(1),
            };
            counts = sent.moved.wait_timeout(counts, wait).unwrap_or_else(|p| p.into_inner()).0;
        }
        Ok(())
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}
