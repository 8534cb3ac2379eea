//! Two applications under different users, replicating segments in one segment directory:
//! each daemon publishes its status in its own user's directory, and neither is told to
//! remove a directory the other uses. The other user's daemon is played by a child process
//! of this test running as `nobody` (uid 65534) through the same API the daemons use; the
//! test needs root to start it and is skipped, with a message, otherwise.

use gardenstate::{Options, Store};
use gardenstate_replicator::operations::status::{self, DaemonState, Status};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const OTHER_UID: u32 = 65534;
const SHM_ENV: &str = "GARDENSTATE_SHM_DIR";

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

fn segment_options() -> Options {
    Options {
        capacity_bytes: 4 << 20,
        max_entries: 1024,
        max_value: 256,
        max_clients: 8,
        ..Options::default()
    }
}

#[test]
#[ignore = "child role of two_users_daemons_share_one_segment_directory"]
fn child_other_users_daemon() {
    let _segment = Store::create("app-b", &segment_options()).expect("create app-b as the other user");
    let s = Status::new("app-b");
    s.set_role("standby");
    let _guard = status::publish_forever(s).expect("the other user's daemon publishes its status");
    println!("PUBLISHED");
    // Runs until the parent closes our stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

#[test]
fn two_users_daemons_share_one_segment_directory() {
    if !is_root() {
        eprintln!("skipped: needs root to run the second application as another user");
        return;
    }
    // One segment directory for both applications, like /dev/shm (world-writable, sticky).
    let dir = std::env::temp_dir().join(format!("gds-status-users-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    // SAFETY: the only test of this binary that runs here (the other is a child role, run only
    // in the child), and no other thread exists yet.
    unsafe { std::env::set_var(SHM_ENV, &dir) };

    // The other user's application starts first, so it makes its status directory first.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--include-ignored", "--exact", "child_other_users_daemon", "--nocapture", "--test-threads=1"])
        .env(SHM_ENV, &dir)
        .uid(OTHER_UID)
        .gid(OTHER_UID)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let published = lines.by_ref().map_while(Result::ok).any(|l| l.contains("PUBLISHED"));
    assert!(published, "the other user's daemon did not publish (see its output above)");

    // This user's daemon publishes too, and `stats` finds both.
    let _segment = Store::create("app-a", &segment_options()).unwrap();
    let s = Status::new("app-a");
    s.set_role("primary");
    let guard = status::publish_forever(s);
    let guard = guard.unwrap_or_else(|e| panic!("this user's daemon cannot publish: {e}"));
    let role = |seg: &str| match status::daemon_state(seg) {
        DaemonState::Found { report, running, .. } => {
            assert!(running, "{seg}: {report:?}");
            report.role
        }
        other => panic!("{seg}: {other:?}"),
    };
    assert_eq!(role("app-a"), "primary");
    assert_eq!(role("app-b"), "standby", "the other user's daemon, found through its segment's owner");
    drop(guard);
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let _ = Store::destroy("app-a");
    let _ = Store::destroy("app-b");
}
