//! Commands on entries: `get`, `set`, `del`, `keys`.
//!
//! `get` is a read like a worker's: on a sliding entry it pushes the deadline out, and it
//! counts as a hit or a miss in the segment's stats. `keys` reads with `Store::scan_while`,
//! which neither slides nor counts, and prints each key as it is found, in the table's order
//! (not sorted: sorting would hold every key in memory; pipe into `sort` for that).

use crate::commands::attach::attach;
use crate::commands::cli::{DelArgs, GetArgs, KeysArgs, SetArgs};
use crate::commands::escape::{escape, unescape};
use crate::commands::exit::{CmdResult, Failure};
use crate::commands::render;
use gardenstate::Expiry;
use std::ffi::OsStr;
use std::io::{BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;

/// The bytes of a command-line argument, unescaped if `--escaped` was given.
fn arg_bytes(what: &str, arg: &OsStr, escaped: bool) -> Result<Vec<u8>, Failure> {
    if escaped {
        unescape(arg.as_bytes()).map_err(|e| Failure::error(format!("{what}: {e}")))
    } else {
        Ok(arg.as_bytes().to_vec())
    }
}

pub fn get(a: GetArgs) -> CmdResult {
    let key = arg_bytes("KEY", &a.key, a.escaped)?;
    let store = attach(&a.name)?;
    let not_found = || Failure::not_found(format!("key not found: {}", escape(&key)));
    let mut out = std::io::stdout().lock();
    if a.meta {
        let meta = store.meta_of(&key)?.ok_or_else(not_found)?;
        out.write_all(render::meta_human(&meta).as_bytes()).map_err(Failure::output)?;
    } else {
        let entry = store.get(&key)?.ok_or_else(not_found)?;
        if a.raw {
            out.write_all(&entry.value).map_err(Failure::output)?;
        } else {
            writeln!(out, "{}", escape(&entry.value)).map_err(Failure::output)?;
        }
    }
    out.flush().map_err(Failure::output)
}

/// Reads at most `max + 1` bytes, so a too-long value is refused without reading it all.
fn read_value(input: impl Read, max: u64, from: &str) -> Result<Vec<u8>, Failure> {
    let mut v = Vec::new();
    input.take(max + 1).read_to_end(&mut v).map_err(|e| Failure::error(format!("reading {from}: {e}")))?;
    if v.len() as u64 > max {
        return Err(Failure::error(format!(
            "the value in {from} is longer than the segment's max_value of {max} bytes"
        )));
    }
    Ok(v)
}

pub fn set(a: SetArgs) -> CmdResult {
    let key = arg_bytes("KEY", &a.key, a.escaped)?;
    let store = attach(&a.name)?;
    let max = store.info().max_value;
    let value = match (&a.value, &a.file) {
        (Some(v), _) => arg_bytes("VALUE", v, a.escaped)?,
        (None, Some(path)) => {
            let f = std::fs::File::open(path)
                .map_err(|e| Failure::error(format!("cannot open {}: {e}", path.display())))?;
            read_value(f, max, &path.display().to_string())?
        }
        (None, None) => read_value(std::io::stdin().lock(), max, "stdin")?,
    };
    let expiry = match (a.ttl, a.sliding) {
        (None, _) => Expiry::Never,
        (Some(d), false) => Expiry::After(d),
        (Some(d), true) => Expiry::Sliding(d),
    };
    store.set(&key, &value, expiry)?;
    Ok(())
}

pub fn del(a: DelArgs) -> CmdResult {
    let key = arg_bytes("KEY", &a.key, a.escaped)?;
    let store = attach(&a.name)?;
    if store.delete(&key)? {
        Ok(())
    } else {
        Err(Failure::not_found(format!("key not found: {}", escape(&key))))
    }
}

pub fn keys(a: KeysArgs) -> CmdResult {
    let prefix =
        a.prefix.as_deref().map(|p| arg_bytes("PREFIX", p, a.escaped)).transpose()?.unwrap_or_default();
    let store = attach(&a.name)?;
    let mut left = a.limit.unwrap_or(u64::MAX);
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut failed = None;
    // Each key is printed as the scan finds it, and the scan stops at the limit (or a closed
    // pipe): memory stays constant however many keys the segment holds.
    if left > 0 {
        store.scan_while(|e| {
            if !e.key.starts_with(&prefix) {
                return true;
            }
            if let Err(err) = writeln!(out, "{}", escape(&e.key)) {
                failed = Some(err);
                return false;
            }
            left -= 1;
            left > 0
        })?;
    }
    if let Some(err) = failed {
        return Err(Failure::output(err));
    }
    out.flush().map_err(Failure::output)
}
