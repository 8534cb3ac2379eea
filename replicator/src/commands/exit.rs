//! How a command ends: its exit code and the message printed on stderr.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | the key does not exist (`get`, `del`): an answer, not an error |
//! | 2 | error: bad arguments, unknown segment, an engine error, I/O, a damaged or refused dump |
//! | 3 | `check` ran and found the segment damaged |
//!
//! Clap's own usage errors also exit with 2.

use std::fmt::Display;

pub const EXIT_OK: u8 = 0;
pub const EXIT_NOT_FOUND: u8 = 1;
pub const EXIT_ERROR: u8 = 2;
pub const EXIT_CHECK_FAILED: u8 = 3;

/// The text appended to `gardenstate --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  key not found (get, del)
  2  error: bad arguments, unknown segment, engine or I/O error, damaged or refused dump
  3  check found problems in the segment";

/// Why a command did not succeed. `main` prints `gardenstate <command>: <message>` on stderr
/// (nothing when the message is empty) and exits with `code`.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn error(message: impl Display) -> Failure {
        Failure { code: EXIT_ERROR, message: message.to_string() }
    }

    pub fn not_found(message: impl Display) -> Failure {
        Failure { code: EXIT_NOT_FOUND, message: message.to_string() }
    }

    pub fn check_failed(message: impl Display) -> Failure {
        Failure { code: EXIT_CHECK_FAILED, message: message.to_string() }
    }

    /// Writing to stdout failed. A closed pipe (`gardenstate keys s | head`) is the reader's
    /// choice, not an error: the command stops quietly with success.
    pub fn output(e: std::io::Error) -> Failure {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure { code: EXIT_OK, message: String::new() }
        } else {
            Failure::error(format!("writing to stdout: {e}"))
        }
    }
}

impl From<gardenstate::Error> for Failure {
    fn from(e: gardenstate::Error) -> Failure {
        Failure::error(e)
    }
}

/// What every command returns.
pub type CmdResult = Result<(), Failure>;
