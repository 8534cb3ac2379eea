//! The write mode belongs to the replication daemon: `gds_set_write_mode` is refused while a
//! live process owns it (`Store::own_write_mode`, played here by a child process of this test
//! binary), and works again once that process is dead (its owner word then names nobody).

use crate::status::gds_status::{GDS_ERR_REFUSED, GDS_OK};
use crate::store::{GDS_WRITE_MODE_WRITABLE, gds_attach, gds_close, gds_set_write_mode, gds_store};
use std::ffi::CString;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

const SEGMENT_ENV: &str = "GDS_WRITE_MODE_TEST_SEGMENT";

#[test]
#[ignore = "child role of a_worker_cannot_set_the_write_mode_a_daemon_owns"]
fn child_owns_the_write_mode() {
    let name = std::env::var(SEGMENT_ENV).expect("segment name");
    let store = engine::Store::attach(&name).unwrap();
    store.own_write_mode().unwrap();
    println!("OWNED");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

#[test]
fn a_worker_cannot_set_the_write_mode_a_daemon_owns() {
    let name = format!("gds-ffi-mode-owner-{}", std::process::id());
    let _ = engine::Store::destroy(&name);
    let opts =
        engine::Options { capacity_bytes: 4 << 20, max_entries: 1024, max_clients: 8, ..Default::default() };
    let rust = engine::Store::create(&name, &opts).unwrap();
    rust.set_write_mode(engine::WriteMode::Fenced);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--include-ignored", "--exact", "write_mode_tests::child_owns_the_write_mode", "--nocapture"])
        .env(SEGMENT_ENV, &name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.by_ref().map_while(Result::ok).any(|l| l.contains("OWNED")),
        "the child did not own the mode"
    );

    let c_name = CString::new(name.clone()).unwrap();
    let mut store: *mut gds_store = std::ptr::null_mut();
    // SAFETY: a NUL-terminated name and a valid out pointer.
    assert_eq!(unsafe { gds_attach(c_name.as_ptr(), &mut store) }, GDS_OK);
    // SAFETY: `store` is the live handle gds_attach returned.
    let set = || unsafe { gds_set_write_mode(store, GDS_WRITE_MODE_WRITABLE) };
    assert_eq!(set(), GDS_ERR_REFUSED, "a worker made the daemon's fenced segment writable");
    assert_eq!(rust.write_mode(), engine::WriteMode::Fenced);
    assert!(rust.request_write_mode(engine::WriteMode::Writable).is_err());

    // The owner dies (kill -9): its word names a dead process and no longer counts.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(set(), GDS_OK);
    assert_eq!(rust.write_mode(), engine::WriteMode::Writable);
    // SAFETY: the live handle, closed once.
    unsafe { gds_close(store) };
    engine::Store::destroy(&name).unwrap();
}
