//! The boundary every export runs its body in.
//!
//! A panic must never unwind into C (undefined behaviour) and must never abort the host
//! process (an nginx or IIS worker serving other users): `guard` catches it and returns a
//! fallback value instead. `boundary` adds the status convention on top: the body returns
//! `Ok(status)` for success and outcomes, `Err(Fail)` for failures, and a failure that is an
//! error records its message for `gds_last_error_message`.
//!
//! After a caught panic the call is abandoned midway. That is safe for the segment: the
//! engine keeps every invariant across a process killed at any instruction, and its drop
//! guards make an unwind leave the segment as a kill there would, then give back what
//! reclaiming the killed client would (its journaled blocks, its raised write flag, the
//! sweeper lease; engine store.rs, "Unwinding"). The handle stays usable.
//!
//! Exports that only return a constant (`gds_version`, `gds_abi_version`, ...) contain no
//! code that can panic and do not need a guard.

use crate::status::{Fail, gds_status, set_message};
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `body`, returning `on_panic` if it panics (the message goes to the thread-local
/// error message).
pub(crate) fn guard<T>(on_panic: T, body: impl FnOnce() -> T) -> T {
    // AssertUnwindSafe: after a panic nothing of the body's state is used again; the shared
    // state it may have left midway (the segment) is crash-safe by design (module comment).
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(payload) => {
            set_message(&format!(
                "internal error (panic) in libgardenstate {}: {}; please report it",
                env!("CARGO_PKG_VERSION"),
                panic_text(&*payload)
            ));
            on_panic
        }
    }
}

/// Runs an export's body under `guard` and applies the status convention.
pub(crate) fn boundary(body: impl FnOnce() -> Result<gds_status, Fail>) -> gds_status {
    guard(gds_status::GDS_ERR_PANIC, || match body() {
        Ok(status) => status,
        Err(fail) => {
            if fail.status.is_error() {
                set_message(&fail.message);
            }
            fail.status
        }
    })
}

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::gds_last_error_message;
    use std::ffi::CStr;

    fn last_message() -> String {
        // SAFETY: gds_last_error_message returns a valid NUL-terminated string that lives
        // until the next call on this thread; it is copied at once.
        unsafe { CStr::from_ptr(gds_last_error_message()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let st = boundary(|| panic!("boom {}", 42));
        assert_eq!(st, gds_status::GDS_ERR_PANIC);
        assert!(last_message().contains("boom 42"), "{}", last_message());
        assert_eq!(guard(7, || panic!("static")), 7);
        assert!(last_message().contains("static"));
    }

    #[test]
    fn outcomes_keep_the_previous_message() {
        let st = boundary(|| Err(Fail::invalid("first")));
        assert_eq!(st, gds_status::GDS_ERR_INVALID_ARGUMENT);
        let st = boundary(|| Err(Fail::new(gds_status::GDS_NOT_FOUND, "absent")));
        assert_eq!(st, gds_status::GDS_NOT_FOUND);
        assert_eq!(last_message(), "first");
        assert_eq!(boundary(|| Ok(gds_status::GDS_OK)), gds_status::GDS_OK);
        assert_eq!(last_message(), "first");
    }
}
