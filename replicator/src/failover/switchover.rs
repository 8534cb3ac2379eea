//! `gardenstate switchover`: asks the primary daemon for a planned switchover (the work is
//! done by the daemons: `primary::switchover` and the standby's Promote handling) and prints
//! its outcome, with the measured write pause.
//!
//! The command authenticates like a standby (the same key and challenge-response), says
//! `Control` in its Hello, and waits for one Done frame. With `--tls-cert`, `--tls-key` and
//! `--tls-ca` it connects over TLS, as the daemons do (a certificate from the cluster's CA).

use crate::commands::cli::SwitchoverArgs;
use crate::commands::exit::{CmdResult, Failure};
use crate::replication::auth;
use crate::replication::frame::{self, Hello, Message, PROTOCOL_VERSION, Role, Shape};
use crate::replication::transport::{self, Tls};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

/// The daemon gives up after 10 s; this waits a little longer for its answer.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

pub fn run(a: SwitchoverArgs) -> CmdResult {
    let key = auth::Key::from_file(&a.key_file).map_err(Failure::error)?;
    let tls = Tls::from_paths(a.tls.tls_cert, a.tls.tls_key, a.tls.tls_ca).map_err(Failure::error)?;
    let tcp = TcpStream::connect(&a.primary)
        .map_err(|e| Failure::error(format!("cannot connect to the primary at {}: {e}", a.primary)))?;
    let mut conn = transport::client(tcp, &a.primary, tls.as_ref(), ANSWER_WAIT)
        .map_err(|e| Failure::error(format!("{}: {e}", a.primary)))?;
    conn.set_read_timeout(Some(ANSWER_WAIT)).map_err(Failure::error)?;
    let keys = auth::standby_handshake(&mut conn, &key)
        .map_err(|e| Failure::error(format!("{}: {e}", a.primary)))?;
    conn.seal(keys);
    let mut buf = Vec::new();
    match frame::read_frame(&mut conn, 4096, &mut buf) {
        Ok(Message::Hello(h)) if h.role == Role::Primary => {}
        Ok(m) => return Err(Failure::error(format!("expected the primary's Hello, got {}", m.name()))),
        Err(e) => return Err(Failure::error(e)),
    }
    let hello = Hello {
        proto: PROTOCOL_VERSION as u16,
        role: Role::Control,
        history: 0,
        epoch: 0,
        feed_head: 0,
        shape: Shape::default(),
    };
    conn.write_all(&frame::encode(&Message::Hello(hello))).map_err(Failure::error)?;
    match frame::read_frame(&mut conn, 4096, &mut buf) {
        Ok(Message::Done { ok: true, text }) => {
            println!("{text}");
            Ok(())
        }
        Ok(Message::Done { ok: false, text }) => Err(Failure::error(format!("switchover failed: {text}"))),
        Ok(m) => Err(Failure::error(format!("expected the outcome, got {}", m.name()))),
        Err(e) => Err(Failure::error(format!("waiting for the outcome: {e}"))),
    }
}
