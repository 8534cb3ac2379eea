//! Peer servers (redis-server, memcached): found on the PATH, installed with apt-get when
//! missing and allowed (root only), started on a free loopback port, stopped on drop; and
//! measured in the same shapes ([`Loopback`]), so their figures compare.

use crate::Config;
use crate::report::Measurement;
use crate::workload::{Clock, KEY_LEN, Limit, Rng, Run, SEED, Summary, key, run};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// A server process this harness started; killed (by its own child handle) on drop.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bin` on the PATH (or in the sbin directories, which a non-login PATH may lack).
pub fn locate(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Finds `bin`, installing Debian package `pkg` if it is missing and `install` is set and
/// this process is root; otherwise says what is missing and how to get it.
pub fn ensure(bin: &str, pkg: &str, install: bool) -> Result<PathBuf, String> {
    if let Some(p) = locate(bin) {
        return Ok(p);
    }
    let missing = format!("{bin} is not installed (Debian/Ubuntu: apt-get install -y {pkg})");
    if !install {
        return Err(format!("{missing}; --no-install given"));
    }
    if !is_root() || locate("apt-get").is_none() {
        return Err(format!("{missing}; not root or no apt-get, so not installing it"));
    }
    static UPDATE: Once = Once::new();
    UPDATE.call_once(|| {
        eprintln!("  apt-get update (to install missing peers)");
        let _ = Command::new("apt-get").args(["update", "-qq"]).stdout(Stdio::null()).status();
    });
    eprintln!("  apt-get install -y {pkg}");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", pkg])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    match locate(bin) {
        Some(p) if ok => Ok(p),
        _ => Err(format!("{missing}; apt-get install failed")),
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding a free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Starts `bin` with `args(port)` on a free loopback port and waits until it accepts
/// connections (3 tries, in case another process takes the port first).
pub fn start(bin: &Path, args: impl Fn(u16) -> Vec<String>) -> Result<Server, String> {
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port()?;
        let child = Command::new(bin)
            .args(args(port))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = server.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                last = format!("{} exited ({status}): {}", bin.display(), err.trim());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if last.is_empty() {
            last = format!("{} did not accept connections on port {port} within 5 s", bin.display());
        }
    }
    Err(last)
}

/// The first line `bin --version` prints.
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown version".into())
}

/// Requests in flight on each connection of the pipelined shape.
pub const PIPELINE: u32 = 16;
/// Connections (one thread each) of the pipelined shape: the most a loopback server serves
/// on this machine.
const CLIENTS: u64 = 2;

/// The shapes a loopback peer is measured in: one connection without pipelining (a web
/// worker's round trip per request), then [`CLIENTS`] connections on as many threads with
/// [`PIPELINE`] requests in flight each (a pipelined request's latency is its batch's).
/// Every shape draws random keys of the `sessions` loaded, the same sequence for every peer.
pub struct Loopback<'a> {
    /// The peer's name in the report ("redis", "memcached").
    pub system: &'static str,
    pub cfg: &'a Config,
    pub clock: &'a Clock,
    pub value_len: usize,
    pub sessions: u64,
}

impl Loopback<'_> {
    fn measurement(&self, op: &str, workers: u32, pipeline: u32, runs: &[Run]) -> Measurement {
        let s = Summary::of(self.clock, runs);
        Measurement::new(self.system, op, self.value_len, self.sessions, workers, "connection", pipeline, s)
    }

    /// `cfg.net_ops` calls of `request` with a random session's key, one at a time.
    pub fn unpipelined(&self, op: &str, request: impl FnMut([u8; KEY_LEN])) -> Measurement {
        let mut rng = Rng::new(SEED);
        let r = run(Limit::Ops(self.cfg.net_ops), || key(rng.below(self.sessions)), request);
        self.measurement(op, 1, 1, &[r])
    }

    /// For `cfg.window`, on each of [`CLIENTS`] threads: `batch` with [`PIPELINE`] random
    /// sessions' keys, again and again, over the thread's own connection from `connect`
    /// (opened before the thread starts). Each key counts as one operation.
    pub fn pipelined<C: Send, E: Send + std::fmt::Debug>(
        &self,
        op: &str,
        connect: impl Fn() -> Result<C, E>,
        batch: impl Fn(&mut C, [[u8; KEY_LEN]; PIPELINE as usize]) + Sync,
    ) -> Measurement {
        let runs: Vec<Run> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..CLIENTS)
                .map(|t| {
                    let con = connect();
                    let batch = &batch;
                    s.spawn(move || {
                        let system = self.system;
                        let mut con = con.unwrap_or_else(|e| panic!("{system} connection: {e:?}"));
                        let mut rng = Rng::new(SEED ^ t.wrapping_mul(0x9e37));
                        let mut r = run(
                            Limit::For(self.cfg.window),
                            || std::array::from_fn(|_| key(rng.below(self.sessions))),
                            |keys| batch(&mut con, keys),
                        );
                        r.ops *= PIPELINE as u64;
                        r
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("client thread")).collect()
        });
        self.measurement(op, CLIENTS as u32, PIPELINE, &runs)
    }
}
