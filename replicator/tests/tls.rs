//! The replication link over TLS (issue 4): the built `gardenstate` binary runs as primary and
//! standby with certificates made here (rcgen): a CA, a certificate per node, and one from
//! another CA. Covers replication under load, a planned switchover, and the refusals: a
//! plaintext peer of a TLS node (both ways), a certificate from another CA, and a wrong HMAC
//! key inside valid TLS. Every refused standby must leave no segment behind.

use gardenstate::{Expiry, Store, WriteMode};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;
use common::*;

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// Writes a node certificate (for 127.0.0.1 and localhost, server and client use) signed by
/// `issuer`, and its key (mode 0600); returns the TLS flags for them and `ca_file`.
fn node(dir: &Scratch, name: &str, issuer: &Issuer<'_, KeyPair>, ca_file: &Path) -> Vec<String> {
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    let (cert_file, key_file) = (dir.0.join(format!("{name}.crt")), dir.0.join(format!("{name}.key")));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    vec!["--tls-cert".into(), s(&cert_file), "--tls-key".into(), s(&key_file), "--tls-ca".into(), s(ca_file)]
}

/// A cluster's PKI: flags for the primary, the standby, an operator, and a node whose
/// certificate comes from another CA.
struct Pki {
    primary: Vec<String>,
    standby: Vec<String>,
    operator: Vec<String>,
    foreign: Vec<String>,
    /// A certificate from the other CA, with our CA: refused at start.
    misfit: Vec<String>,
}

fn pki(dir: &Scratch) -> Pki {
    let (ours, theirs) = (ca("gardenstate test CA"), ca("some other CA"));
    let ca_file = dir.0.join("ca.crt");
    std::fs::write(&ca_file, ours.pem()).unwrap();
    // The foreign node trusts both CAs: its own certificate passes its start-up check and it
    // accepts the primary's, so what is tested is the primary refusing its certificate.
    let bundle = dir.0.join("both-cas.crt");
    std::fs::write(&bundle, ours.pem() + &theirs.pem()).unwrap();
    Pki {
        primary: node(dir, "primary", &ours, &ca_file),
        standby: node(dir, "standby", &ours, &ca_file),
        operator: node(dir, "operator", &ours, &ca_file),
        foreign: node(dir, "foreign", &theirs, &bundle),
        misfit: node(dir, "misfit", &theirs, &ca_file),
    }
}

/// Waits up to 10 s for `needle` in the daemon's log; the failure shows the log.
fn wait_log(d: &Daemon, what: &str, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !d.log().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {needle:?} not in:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Setup {
    dir: Scratch,
    pki: Pki,
    key: PathBuf,
    pseg: Seg,
    sseg: Seg,
    addr: String,
}

fn setup(tag: &str) -> (Setup, Store) {
    let dir = Scratch::new(&format!("tls-{tag}"));
    let key = dir.key("key", b"tls test replication key 0123456789");
    let pki = pki(&dir);
    let (pseg, sseg) = (Seg::new(&format!("tls-{tag}-p")), Seg::new(&format!("tls-{tag}-s")));
    let store = pseg.create();
    let addr = format!("127.0.0.1:{}", free_port());
    (Setup { dir, pki, key, pseg, sseg, addr }, store)
}

impl Setup {
    fn primary(&self, tls: &[String]) -> Daemon {
        self.primary_with_env(tls, &[])
    }

    fn primary_with_env(&self, tls: &[String], env: &[(&str, &str)]) -> Daemon {
        let mut args = vec!["primary", "--segment", &self.pseg.0, "--listen", &self.addr];
        args.extend(["--key-file", self.key.to_str().unwrap()]);
        args.extend(tls.iter().map(String::as_str));
        let d = Daemon::start_with_env(&self.dir, "primary", &args, env);
        wait_logged("the primary to listen", Duration::from_secs(10), &[&d], || d.log().contains("serving"));
        d
    }

    fn standby(&self, tls: &[String], key: &Path, extra: &[&str]) -> Daemon {
        let mut args = vec!["standby", "--segment", &self.sseg.0, "--connect", &self.addr];
        args.extend(["--key-file", key.to_str().unwrap()]);
        args.extend(tls.iter().map(String::as_str));
        args.extend(extra);
        Daemon::start(&self.dir, "standby", &args)
    }
}

#[test]
fn writes_under_load_converge_over_tls() {
    let (t, store) = setup("load");
    let primary = t.primary(&t.pki.primary);
    let standby = t.standby(&t.pki.standby, &t.key, &[]);
    churn_then_converge(&store, &t.sseg, Duration::from_secs(30));
    // Acks flow back through the TLS link too.
    wait_until("the standby's acks", Duration::from_secs(10), || {
        store.replicated_upto() >= store.feed_head()
    });
    assert!(standby.log().contains("snapshot applied"), "{}", standby.log());
    assert!(!primary.log().contains("refused"), "{}", primary.log());
    assert!(!primary.log().contains("TLS link"), "{}", primary.log());
}

#[test]
fn a_plaintext_peer_of_a_tls_node_is_refused_both_ways() {
    let (t, store) = setup("plain");
    store.set(b"secret", b"session", Expiry::Never).unwrap();
    // A plaintext standby against a TLS primary.
    let mut primary = t.primary(&t.pki.primary);
    let mut standby = t.standby(&[], &t.key, &[]);
    wait_log(
        &primary,
        "the primary to refuse the plaintext standby",
        "speaks plaintext (no TLS), but this node requires TLS",
    );
    wait_log(&standby, "the standby to log the failure", "authentication failed");
    assert!(!primary.log().contains("authenticated"), "{}", primary.log());
    assert!(!t.sseg.exists(), "the refused standby created its segment");
    standby.kill();
    primary.kill();
    // A TLS standby against a plaintext primary.
    let primary = t.primary(&[]);
    let standby = t.standby(&t.pki.standby, &t.key, &[]);
    wait_log(
        &primary,
        "the primary to refuse the TLS standby",
        "the peer started a TLS handshake, but this node runs without TLS",
    );
    wait_log(&standby, "the standby to log why", "does it run without TLS?");
    assert!(!primary.log().contains("authenticated"), "{}", primary.log());
    assert!(!t.sseg.exists(), "the refused standby created its segment");
    eprintln!("primary:\n{}\nstandby:\n{}", primary.log(), standby.log());
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let (t, store) = setup("foreign");
    store.set(b"secret", b"session", Expiry::Never).unwrap();
    let primary = t.primary(&t.pki.primary);
    let standby = t.standby(&t.pki.foreign, &t.key, &[]);
    wait_log(&primary, "the primary to refuse the foreign certificate", "refused connection");
    let log = primary.log();
    assert!(log.contains("invalid peer certificate"), "{log}");
    // The standby hears the primary's alert, and says what to do about it (before, only
    // rustls's "received fatal alert: UnknownCA").
    wait_log(&standby, "the standby to log the refusal", "TLS link with");
    let log = standby.log();
    assert!(
        log.contains(
            "the primary does not trust the certificate authority that signed this node's certificate"
        ) && log.contains("check --tls-ca on the primary"),
        "{log}"
    );
    assert!(!primary.log().contains("authenticated"), "{}", primary.log());
    assert!(!t.sseg.exists(), "the refused standby created its segment");
    eprintln!("primary:\n{}\nstandby:\n{}", primary.log(), standby.log());
}

#[test]
fn a_wrong_hmac_key_inside_valid_tls_is_refused() {
    let (t, store) = setup("wrongkey");
    store.set(b"secret", b"session", Expiry::Never).unwrap();
    let other = t.dir.key("other", b"not the primary's key, but long enough");
    let primary = t.primary(&t.pki.primary);
    let standby = t.standby(&t.pki.standby, &other, &[]);
    wait_log(&primary, "the primary to refuse the standby", "refused connection");
    wait_log(&standby, "the standby to log the failure", "failed authentication");
    assert!(primary.log().contains("authentication failed"), "{}", primary.log());
    assert!(!primary.log().contains("invalid peer certificate"), "{}", primary.log());
    assert!(!primary.log().contains("authenticated"), "{}", primary.log());
    assert!(!t.sseg.exists(), "the refused standby created its segment");
    eprintln!("primary:\n{}\nstandby:\n{}", primary.log(), standby.log());
}

#[test]
fn a_planned_switchover_runs_over_tls() {
    let (t, store) = setup("switchover");
    let s_addr = format!("127.0.0.1:{}", free_port());
    let primary = t.primary(&t.pki.primary);
    let standby = t.standby(&t.pki.standby, &t.key, &["--listen", &s_addr]);
    for i in 0..200u32 {
        store.set(format!("k{i}").as_bytes(), b"before", Expiry::Never).unwrap();
    }
    wait_converged(&store, &t.sseg, Duration::from_secs(30));
    let switchover = |tls: &[String]| {
        let mut args = vec!["switchover", "--primary", &t.addr, "--key-file", t.key.to_str().unwrap()];
        args.extend(tls.iter().map(String::as_str));
        let out = Command::new(BIN).args(&args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    // Without TLS the operator's command is refused, and nothing changes.
    let (ok, text) = switchover(&[]);
    assert!(!ok, "{text}");
    wait_log(&primary, "the primary to log the plaintext refusal", "speaks plaintext");
    assert_eq!(store.write_mode(), WriteMode::Writable);
    let (ok, text) = switchover(&t.pki.operator);
    assert!(ok, "{text}\nprimary:\n{}\nstandby:\n{}", primary.log(), standby.log());
    assert!(text.contains("switchover complete"), "{text}");
    let new_primary = Store::attach(&t.sseg.0).unwrap();
    assert_eq!(new_primary.write_mode(), WriteMode::Writable);
    // The old primary follows the new one, over TLS (the address it learned from heartbeats).
    wait_until("the old primary to follow", Duration::from_secs(20), || {
        store.write_mode() == WriteMode::Replica
    });
    new_primary.set(b"after", b"switchover", Expiry::Never).unwrap();
    wait_converged(&new_primary, &t.pseg, Duration::from_secs(30));
}

#[test]
fn tls_settings_are_checked_at_start() {
    let (t, _store) = setup("checks");
    let run = |extra: &[&str]| {
        let mut args = vec!["standby", "--segment", &t.sseg.0, "--connect", &t.addr];
        args.extend(["--key-file", t.key.to_str().unwrap()]);
        args.extend(extra);
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?} was accepted");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let misfit: Vec<&str> = t.pki.misfit.iter().map(String::as_str).collect();
    let err = run(&misfit);
    assert!(err.contains("is not valid under the CA"), "{err}");
    let err = run(&misfit[..4]);
    assert!(err.contains("TLS needs all three") && err.contains("missing: tls_ca"), "{err}");
    std::fs::set_permissions(&t.pki.standby[3], std::fs::Permissions::from_mode(0o640)).unwrap();
    let standby: Vec<&str> = t.pki.standby.iter().map(String::as_str).collect();
    let err = run(&standby);
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!t.sseg.exists());
}

/// SIGHUP reloads the TLS files instead of killing the daemon (before, it died silently), and
/// replaced files are picked up without a signal too: the next connection uses the new
/// certificate. Here the primary's certificate, key and CA are replaced by ones from another
/// CA, so a standby that trusts only the old CA refuses the primary, and says what to do.
#[test]
fn sighup_and_replaced_files_reload_the_certificates() {
    let (t, _store) = setup("reload");
    // The primary gets a CA file of its own, to replace it alone.
    let mut flags = t.pki.primary.clone();
    let own_ca = t.dir.0.join("primary-ca.crt");
    std::fs::copy(&flags[5], &own_ca).unwrap();
    flags[5] = own_ca.to_str().unwrap().to_string();
    let mut primary = t.primary(&flags);
    let pid = primary.child.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_log(&primary, "the primary to reload on SIGHUP", "SIGHUP: reloaded the TLS certificate");
    assert!(primary.log().contains("take effect at a restart"), "{}", primary.log());
    assert!(primary.child.as_mut().unwrap().try_wait().unwrap().is_none(), "SIGHUP killed the primary");

    let rotated_ca = ca("rotated CA");
    let rotated_ca_file = t.dir.0.join("rotated-ca.crt");
    std::fs::write(&rotated_ca_file, rotated_ca.pem()).unwrap();
    let rotated = node(&t.dir, "rotated", &rotated_ca, &rotated_ca_file);
    for (from, to) in [(&rotated[1], &flags[1]), (&rotated[3], &flags[3]), (&rotated[5], &flags[5])] {
        std::fs::copy(from, to).unwrap();
    }
    wait_log(&primary, "the primary to see the new files", "the TLS files changed: reloaded");
    let standby = t.standby(&t.pki.standby, &t.key, &[]);
    wait_log(
        &standby,
        "the standby to refuse the rotated certificate",
        "the certificate of the primary is not signed by a CA in this node's --tls-ca",
    );
    assert!(primary.child.as_mut().unwrap().try_wait().unwrap().is_none());
    assert!(!t.sseg.exists(), "the refused standby created its segment");
}

/// The civil date (year, month, day) `days` days after 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    ((yoe + era * 400) as i32 + i32::from(m <= 2), m, d)
}

/// A certificate that expires within days (before, nothing said so until peers refused it):
/// the daemon logs a warning and `/metrics` shows the days left.
#[test]
fn an_expiring_certificate_is_warned_about_and_exported() {
    let (t, _store) = setup("expiry");
    let our_ca = ca("expiry test CA");
    let ca_file = t.dir.0.join("expiry-ca.crt");
    std::fs::write(&ca_file, our_ca.pem()).unwrap();
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let today =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400;
    let (y, m, d) = civil_from_days(today as i64 + 4);
    p.not_after = rcgen::date_time_ymd(y, m, d);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &our_ca).unwrap();
    let (cert_file, key_file) = (t.dir.0.join("expiring.crt"), t.dir.0.join("expiring.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let flags = [
        "--tls-cert",
        &s(&cert_file),
        "--tls-key",
        &s(&key_file),
        "--tls-ca",
        &s(&ca_file),
        "--metrics",
        &metrics,
    ];
    let primary = t.primary(&flags.map(String::from));
    // Between 3 and 4 days left, whatever the time of day ("4.0" rounded, just after midnight UTC).
    wait_log(&primary, "the expiry warning", "expires in ");
    let log = primary.log();
    let days: f64 =
        log.split("expires in ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
    assert!((3.0..=4.0).contains(&days), "{log}");
    assert!(primary.log().contains("--tls-warn-days"), "{}", primary.log());
    let body = {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(&metrics).unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).unwrap();
        out
    };
    let line = body
        .lines()
        .find(|l| l.starts_with("gardenstate_tls_certificate_expiry_days{"))
        .unwrap_or_else(|| panic!("no expiry metric in:\n{body}"));
    let days: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((3.0..4.0).contains(&days), "{line}");
}

/// An open link whose peer's certificate expires is closed, with the reason (before, it ran
/// on until the next reconnect failed). The standby's certificate is valid for an hour, so
/// the TLS handshake (rustls, the real clock) accepts it however slow the machine is; the
/// primary's clock for open links' certificates runs two hours ahead
/// (`GDS_TEST_CERT_CLOCK_AHEAD_S`, feature `failpoints`), so it closes the link it just
/// opened: no race with a certificate that expires in seconds.
#[cfg(feature = "failpoints")]
#[test]
fn a_link_whose_peer_certificate_expires_is_closed() {
    let (t, _store) = setup("expired-link");
    let our_ca = ca("short-lived CA");
    let ca_file = t.dir.0.join("short-ca.crt");
    std::fs::write(&ca_file, our_ca.pem()).unwrap();
    let flags = |name: &str, not_after: time::OffsetDateTime| {
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.not_after = not_after;
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &our_ca).unwrap();
        let (cert_file, key_file) =
            (t.dir.0.join(format!("{name}.crt")), t.dir.0.join(format!("{name}.key")));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = |p: &Path| p.to_str().unwrap().to_string();
        vec![
            "--tls-cert".into(),
            s(&cert_file),
            "--tls-key".into(),
            s(&key_file),
            "--tls-ca".into(),
            s(&ca_file),
        ]
    };
    let now = time::OffsetDateTime::now_utc();
    let ahead = [("GDS_TEST_CERT_CLOCK_AHEAD_S", "7200")];
    let primary = t.primary_with_env(&flags("long", now + time::Duration::days(30)), &ahead);
    let standby = t.standby(&flags("short", now + time::Duration::hours(1)), &t.key, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !primary.log().contains("the peer's certificate expired at") {
        assert!(std::time::Instant::now() < deadline, "the link was not closed:\n{}", primary.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(primary.log().contains("closing the link"), "{}", primary.log());
    drop(standby);
}
