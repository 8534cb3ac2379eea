//! Helpers shared by the integration tests.
#![allow(dead_code)]

use gardenstate::{Options, Store};

/// A segment name unique to this test and process, destroyed when dropped.
pub struct Seg {
    pub name: String,
}

impl Seg {
    pub fn new(tag: &str) -> Seg {
        let name = format!("gds-test-{tag}-{}", std::process::id());
        let _ = Store::destroy(&name);
        Seg { name }
    }
}

impl Drop for Seg {
    fn drop(&mut self) {
        let _ = Store::destroy(&self.name);
    }
}

/// Runs the segment check and fails the test on any violated invariant.
pub fn assert_healthy(st: &Store) -> gardenstate::CheckReport {
    let report = st.check();
    assert!(report.problems.is_empty() && report.dead_clients == 0, "{report:#?}");
    report
}

pub fn small() -> Options {
    Options {
        capacity_bytes: 8 << 20,
        max_entries: 10_000,
        max_key: 64,
        max_value: 64 << 10,
        max_clients: 64,
        feed_len: 1024,
        ..Options::default()
    }
}
