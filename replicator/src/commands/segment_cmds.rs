//! Commands on a whole segment: `create`, `stats`, `check`, `destroy`, `promote`.

use crate::commands::attach::{attach, is_missing, missing};
use crate::commands::cli::{CheckArgs, CreateArgs, DestroyArgs, PromoteArgs, ShapeArgs, StatsArgs};
use crate::commands::exit::{CmdResult, Failure};
use crate::commands::render;
use crate::commands::units::{format_bytes, format_count};
use crate::operations::status;
use gardenstate::{Options, Store, WriteMode};
use std::io::{BufRead, IsTerminal, Write};

/// `base` with every option given on the command line applied. Range checks are the engine's
/// (`Store::create` validates before it creates anything); this only refuses what does not
/// fit the option's type.
pub fn shape_options(shape: &ShapeArgs, base: Options) -> Result<Options, Failure> {
    let narrow = |flag: &str, v: u64| {
        u32::try_from(v)
            .map_err(|_| Failure::error(format!("--{flag} {v} is out of range (at most {})", u32::MAX)))
    };
    Ok(Options {
        capacity_bytes: shape.capacity.unwrap_or(base.capacity_bytes),
        max_entries: shape.max_entries.unwrap_or(base.max_entries),
        max_key: shape.max_key.map(|v| narrow("max-key", v)).transpose()?.unwrap_or(base.max_key),
        max_value: shape.max_value.unwrap_or(base.max_value),
        max_clients: shape
            .max_clients
            .map(|v| narrow("max-clients", v))
            .transpose()?
            .unwrap_or(base.max_clients),
        feed_len: shape.feed_len.unwrap_or(base.feed_len),
        evict: shape.evict || base.evict,
        mode: if shape.group { 0o660 } else { base.mode },
    })
}

/// Whether any shape option was given.
pub fn shape_given(s: &ShapeArgs) -> bool {
    s.capacity.is_some()
        || s.max_entries.is_some()
        || s.max_key.is_some()
        || s.max_value.is_some()
        || s.max_clients.is_some()
        || s.feed_len.is_some()
        || s.evict
        || s.group
}

pub fn create(a: CreateArgs) -> CmdResult {
    let opts = shape_options(&a.shape, Options::default())?;
    let store = Store::create(&a.name, &opts).map_err(|e| match e {
        gardenstate::Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
            Failure::error(format!(
                "segment {:?} already exists; remove it first with `gardenstate destroy {}`",
                a.name, a.name
            ))
        }
        e => Failure::error(e),
    })?;
    let info = store.info();
    println!(
        "created segment {} ({}): {} of heap, up to {} entries, keys up to {}, values up to {}, mode {:o}{}",
        a.name,
        gardenstate::shm_dir().join(&a.name).display(),
        format_bytes(info.heap_bytes),
        format_count(info.max_entries),
        format_bytes(info.max_key),
        format_bytes(info.max_value),
        opts.mode,
        if info.evict { ", evicts when full" } else { "" }
    );
    Ok(())
}

pub fn stats(a: StatsArgs) -> CmdResult {
    let store = attach(&a.name)?;
    let (info, s, mode) = (store.info(), store.stats(), store.write_mode());
    let path = gardenstate::shm_dir().join(&a.name).display().to_string();
    let repl = render::Replication {
        mode,
        lease_lapsed: render::lease_lapsed(&store),
        epoch: store.epoch(),
        history: store.history_id(),
        feed_head: s.feed_head,
        replicated_upto: store.replicated_upto(),
        status_file: status::status_path(&a.name).map(|p| p.display().to_string()).unwrap_or_default(),
        daemon: status::daemon_state(&a.name),
    };
    let text = if a.json {
        let j = render::stats_json(&a.name, path, mode, &info, &s, &repl);
        serde_json::to_string_pretty(&j).map_err(Failure::error)? + "\n"
    } else {
        render::stats_human(&a.name, &path, mode, &info, &s, &repl)
    };
    std::io::stdout().write_all(text.as_bytes()).map_err(Failure::output)
}

pub fn check(a: CheckArgs) -> CmdResult {
    let store = attach(&a.name)?;
    let report = store.check();
    let text = if a.json {
        serde_json::to_string_pretty(&render::check_json(&a.name, &report)).map_err(Failure::error)? + "\n"
    } else {
        render::check_human(&a.name, &report)
    };
    std::io::stdout().write_all(text.as_bytes()).map_err(Failure::output)?;
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::check_failed(format!(
            "{} problem(s) found. Sessions in good records are served as usual, and an operation on a \
             damaged one fails with a \"damaged segment\" error; leaked or hidden blocks only cost heap \
             room. Keep the segment: if a standby follows it, switch the workers over to the standby \
             (`gardenstate promote`) and resync this one from it at a quiet time; `check --repair` is \
             not available yet (issue 19)",
            report.problems.len()
        )))
    }
}

pub fn destroy(a: DestroyArgs) -> CmdResult {
    // Describe what is about to go; a damaged segment can still be destroyed. The store is
    // dropped at once: attached, this process would count among the holders.
    let what = match Store::attach_group(&a.name) {
        Ok(store) => format!("segment {} with {} entries", a.name, format_count(store.stats().live_entries)),
        Err(e) if is_missing(&e) => return Err(missing(&a.name)),
        Err(e @ gardenstate::Error::InvalidOptions(_)) => return Err(Failure::error(e)),
        Err(e) => format!("segment {} (it cannot be attached: {e})", a.name),
    };
    let attached = match Store::holders(&a.name).map_err(Failure::error)? {
        Some(h) if h.attached => Some(holders_text(&h)),
        Some(_) => None,
        None => return Err(missing(&a.name)),
    };
    if let Some(who) = &attached
        && !a.force
    {
        return Err(Failure::error(format!(
            "refusing to destroy {what}: {who} attached to it, and would go on writing into a \
             segment nobody reads again; stop them first, or add --force (their next operation then \
             fails with a \"destroyed\" error, and reopening the store creates a new segment)"
        )));
    }
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::error(format!(
                "refusing to destroy {what} without --yes when stdin is not a terminal"
            )));
        }
        let also = attached.as_ref().map(|who| format!(" {who} attached to it.")).unwrap_or_default();
        eprint!("destroy {what}?{also} Its sessions are lost. [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).map_err(Failure::error)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            return Err(Failure::error("not destroyed (answer y to confirm)"));
        }
    }
    if Store::destroy(&a.name)? {
        let also = attached
            .map(|who| {
                format!("; {who} attached to it: their next operation fails with a \"destroyed\" error")
            })
            .unwrap_or_default();
        println!("destroyed {what}{also}");
        Ok(())
    } else {
        Err(Failure::error(format!("segment {:?} is already gone", a.name)))
    }
}

/// "2 processes (pids 311, 4120) are", or what can be said when `/proc/locks` is unreadable.
fn holders_text(h: &gardenstate::Holders) -> String {
    let pids = h.pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
    match h.pids.len() {
        0 => "processes (pids unknown: /proc/locks cannot be read) are".to_string(),
        1 => format!("1 process (pid {pids}) is"),
        n => format!("{n} processes (pids {pids}) are"),
    }
}

/// Makes a standby's segment the primary's successor: writable, with an epoch one above the
/// history it followed, so its old primary (which has the lower epoch) can never stream over
/// it. Stop the standby daemon first (a running one notices and exits).
pub fn promote(a: PromoteArgs) -> CmdResult {
    let store = attach(&a.segment)?;
    let mode = store.write_mode();
    if mode == WriteMode::Writable && !a.force {
        return Err(Failure::error(format!(
            "segment {:?} is already writable (epoch {}): it is a primary, not a standby; \
             use --force to raise its epoch anyway",
            a.segment,
            store.epoch()
        )));
    }
    if mode == WriteMode::Replica && store.history_id() == 0 && !a.force {
        return Err(Failure::error(format!(
            "segment {:?} is an incomplete replica (its standby was interrupted while loading a snapshot): \
             promoting it would serve a half-loaded table; use --force to promote it anyway",
            a.segment
        )));
    }
    let epoch = store.raise_epoch(store.epoch() + 1);
    // A standalone primary now: no replication daemon renews a lease.
    store.set_write_lease(None);
    store.set_write_mode(WriteMode::Writable);
    println!("promoted segment {}: writable, epoch {epoch} (was {mode:?})", a.segment);
    Ok(())
}
