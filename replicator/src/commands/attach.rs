//! Attaching to a named segment, with the errors a person at a shell needs.
//!
//! Commands attach with `Store::attach_group`, which accepts the user's own segments and the
//! 0660 segments of the user's groups, so an operator in the web server's group can inspect
//! the workers' store. An attached `Store` claims a client slot only on its first operation
//! and gives it back when dropped, so every command returns (never `process::exit`s) with
//! its store dropped.

use crate::commands::exit::Failure;
use gardenstate::{Error, Store};

/// Attaches to segment `name`; a missing segment is named as such, with the way to make one.
pub fn attach(name: &str) -> Result<Store, Failure> {
    Store::attach_group(name).map_err(|e| if is_missing(&e) { missing(name) } else { Failure::error(e) })
}

/// Whether `e` says the segment does not exist.
pub fn is_missing(e: &Error) -> bool {
    matches!(e, Error::Io { op: "attach", source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// The error for a segment that does not exist.
pub fn missing(name: &str) -> Failure {
    Failure::error(format!(
        "no segment named {name:?} (looked for {}); create it with `gardenstate create {name}`",
        gardenstate::shm_dir().join(name).display()
    ))
}
