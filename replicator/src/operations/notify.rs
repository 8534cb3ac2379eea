//! Notify hooks: a program run on every change of a daemon's role, keepalived style, to move
//! a virtual IP or tell a load balancer (`--notify PROGRAM`, `notify` in the config file).
//!
//! The program is executed directly, never through a shell, with three arguments: the new
//! role (`primary`: the segment takes writes, after a promotion or an unfencing; `fenced`;
//! `standby`: following a primary, after a start or a demotion), the replication epoch the
//! daemon knows, and the segment's name. Nothing else is passed, so no value from a peer or
//! a file ends up in a command line to interpret.
//!
//! Hooks run on a thread of their own, one at a time and in the order of the changes: the
//! role code only queues the change ([`Notifier::changed`] never blocks), so a slow or hung
//! hook never delays fencing or a promotion. A hook still running after [`HOOK_TIMEOUT`] is
//! killed so the changes after it still run. Each run is logged with its exit status; its
//! standard output and error go to the daemon's standard error.

use crate::operations::log;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Sender, channel};
use std::time::{Duration, Instant};

/// A hook still running after this long is killed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// The queue of role changes to the hook thread.
#[derive(Debug)]
pub struct Notifier {
    changes: Sender<(String, u64)>,
}

impl Notifier {
    /// Starts the hook thread for `program`, run for segment `segment`.
    pub fn start(program: &Path, segment: &str) -> Result<Notifier, String> {
        let (changes, queue) = channel::<(String, u64)>();
        let (program, segment) = (program.to_path_buf(), segment.to_string());
        std::thread::Builder::new()
            .name("gs-notify".into())
            .spawn(move || {
                for (role, epoch) in queue {
                    run(&program, &role, epoch, &segment);
                }
            })
            .map_err(|e| format!("notify: cannot start the hook thread: {e}"))?;
        Ok(Notifier { changes })
    }

    /// The role became `role` at `epoch`: queues a run of the hook (never blocks).
    pub fn changed(&self, role: &str, epoch: u64) {
        let _ = self.changes.send((role.to_string(), epoch));
    }
}

/// Runs the hook once and logs how it ended.
fn run(program: &PathBuf, role: &str, epoch: u64, segment: &str) {
    let what = format!("notify hook {} {role} {epoch} {segment}", program.display());
    let started = Instant::now();
    let mut child = match Command::new(program)
        .args([role, &epoch.to_string(), segment])
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            log::warn(&format!("{what}: cannot run: {e}"));
            return;
        }
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if started.elapsed() >= HOOK_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("killed after {HOOK_TIMEOUT:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => break Err(e.to_string()),
        }
    };
    let took = started.elapsed();
    match status {
        Ok(s) if s.success() => log::info(&format!("{what}: exited 0 in {took:.1?}")),
        Ok(s) => log::warn(&format!("{what}: failed ({s}) in {took:.1?}")),
        Err(e) => log::warn(&format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hook gets role, epoch and segment as separate arguments, untouched by any shell, in
    /// the order of the changes; `changed` returns while a hook still runs.
    #[test]
    fn hooks_run_in_order_with_plain_arguments_and_never_block_the_caller() {
        let dir = std::env::temp_dir().join(format!("gds-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("calls");
        let gate = dir.join("gate");
        let hook = dir.join("hook");
        // The first call waits for the gate file: the caller must not wait with it.
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.01; done\nprintf '%s|%s|%s\\n' \"$1\" \"$2\" \"$3\" >> {out}\n",
                gate = gate.display(),
                out = out.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let n = Notifier::start(&hook, "seg $(touch pwned); x").unwrap();
        n.changed("fenced", 3);
        n.changed("primary", 4);
        assert!(!out.exists(), "a hook ran past its gate");
        std::fs::write(&gate, b"").unwrap();
        let want = "fenced|3|seg $(touch pwned); x\nprimary|4|seg $(touch pwned); x\n";
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::read_to_string(&out).unwrap_or_default() != want {
            assert!(Instant::now() < deadline, "{:?}", std::fs::read_to_string(&out));
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!Path::new("pwned").exists() && !dir.join("pwned").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
