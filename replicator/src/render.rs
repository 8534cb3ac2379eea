//! What `stats`, `check` and `get --meta` print: for a person (aligned labels, units,
//! percentages) and for a program (`--json`: one object whose field names are a stable
//! interface, documented in replicator/README.md, independent of the engine's Rust names).
//!
//! The JSON carries `"schema": 1`; fields may be added within a schema version, never
//! renamed, removed or given another meaning. The replication daemon will add a
//! `replication` object to the stats.

use crate::units::{format_bytes, format_count, format_duration, format_percent};
use gardenstate::{CheckReport, Info, Meta, Stats, WriteMode};
use serde::Serialize;
use std::fmt::Write;

pub const STATS_SCHEMA: u32 = 1;

pub fn write_mode_name(m: WriteMode) -> &'static str {
    match m {
        WriteMode::Writable => "writable",
        WriteMode::Replica => "replica",
        WriteMode::Fenced => "fenced",
    }
}

/// `stats --json`.
#[derive(Debug, Serialize)]
pub struct StatsJson<'a> {
    pub schema: u32,
    pub segment: &'a str,
    pub path: String,
    pub write_mode: &'static str,
    pub info: InfoJson,
    pub stats: CountersJson,
    pub derived: DerivedJson,
}

#[derive(Debug, Serialize)]
pub struct InfoJson {
    pub segment_bytes: u64,
    pub heap_bytes: u64,
    pub page_size: u64,
    pub max_entries: u64,
    pub index_slots: u64,
    pub max_key: u64,
    pub max_value: u64,
    pub max_clients: u64,
    pub feed_len: u64,
    pub evict: bool,
    /// 16 hex digits: a u64 does not survive a JSON parser that reads numbers as doubles.
    pub dataset_id: String,
}

#[derive(Debug, Serialize)]
pub struct CountersJson {
    pub live_entries: u64,
    pub bytes_used: u64,
    pub bytes_free: u64,
    pub hits: u64,
    pub misses: u64,
    pub sets: u64,
    pub deletes: u64,
    pub expirations: u64,
    pub evictions: u64,
    pub touches: u64,
    pub locks: u64,
    pub lock_contentions: u64,
    pub lock_takeovers: u64,
    pub dead_reclaims: u64,
    pub sweeps: u64,
    pub clients: u64,
    pub feed_head: u64,
}

#[derive(Debug, Serialize)]
pub struct DerivedJson {
    /// hits / (hits + misses); null before the first read.
    pub hit_ratio: Option<f64>,
    /// bytes_used / heap_bytes.
    pub heap_used_ratio: f64,
    /// live_entries / max_entries.
    pub entries_ratio: f64,
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

pub fn stats_json<'a>(name: &'a str, path: String, mode: WriteMode, info: &Info, s: &Stats) -> StatsJson<'a> {
    let reads = s.hits + s.misses;
    StatsJson {
        schema: STATS_SCHEMA,
        segment: name,
        path,
        write_mode: write_mode_name(mode),
        info: InfoJson {
            segment_bytes: info.segment_bytes,
            heap_bytes: info.heap_bytes,
            page_size: info.page_size,
            max_entries: info.max_entries,
            index_slots: info.index_slots,
            max_key: info.max_key,
            max_value: info.max_value,
            max_clients: info.max_clients,
            feed_len: info.feed_len,
            evict: info.evict,
            dataset_id: format!("{:016x}", info.dataset_id),
        },
        stats: CountersJson {
            live_entries: s.live_entries,
            bytes_used: s.bytes_used,
            bytes_free: s.bytes_free,
            hits: s.hits,
            misses: s.misses,
            sets: s.sets,
            deletes: s.deletes,
            expirations: s.expirations,
            evictions: s.evictions,
            touches: s.touches,
            locks: s.locks,
            lock_contentions: s.lock_contentions,
            lock_takeovers: s.lock_takeovers,
            dead_reclaims: s.dead_reclaims,
            sweeps: s.sweeps,
            clients: s.clients,
            feed_head: s.feed_head,
        },
        derived: DerivedJson {
            hit_ratio: (reads > 0).then(|| ratio(s.hits, reads)),
            heap_used_ratio: ratio(s.bytes_used, info.heap_bytes),
            entries_ratio: ratio(s.live_entries, info.max_entries),
        },
    }
}

/// Two aligned columns under section titles.
struct Table {
    out: String,
}

impl Table {
    fn section(&mut self, title: &str) {
        if !self.out.is_empty() {
            self.out.push('\n');
        }
        let _ = writeln!(self.out, "{title}");
    }

    fn row(&mut self, label: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.out, "  {label:<16} {value}");
    }
}

/// `stats` for a person.
pub fn stats_human(name: &str, path: &str, mode: WriteMode, info: &Info, s: &Stats) -> String {
    let mut t = Table { out: String::new() };
    t.section(&format!("Segment {name} ({path})"));
    t.row("write mode", write_mode_name(mode));
    t.row("dataset id", format!("{:016x}", info.dataset_id));

    t.section("Entries");
    t.row(
        "live",
        format!(
            "{} of {} max ({})",
            format_count(s.live_entries),
            format_count(info.max_entries),
            format_percent(s.live_entries, info.max_entries)
        ),
    );
    t.row("index slots", format_count(info.index_slots));

    t.section("Memory");
    t.row(
        "heap used",
        format!("{} ({})", format_bytes(s.bytes_used), format_percent(s.bytes_used, info.heap_bytes)),
    );
    t.row(
        "heap free",
        format!("{} ({})", format_bytes(s.bytes_free), format_percent(s.bytes_free, info.heap_bytes)),
    );
    t.row("heap size", format_bytes(info.heap_bytes));
    t.row("segment size", format_bytes(info.segment_bytes));
    t.row("page size", format_bytes(info.page_size));

    t.section("Operations");
    let reads = s.hits + s.misses;
    t.row("hits", format_count(s.hits));
    t.row("misses", format_count(s.misses));
    t.row(
        "hit ratio",
        if reads == 0 { "n/a (no reads yet)".to_string() } else { format_percent(s.hits, reads) },
    );
    t.row("sets", format_count(s.sets));
    t.row("deletes", format_count(s.deletes));
    t.row("touches", format_count(s.touches));
    t.row("expirations", format_count(s.expirations));
    t.row("evictions", format_count(s.evictions));
    t.row("sweeps", format_count(s.sweeps));

    t.section("Session locks");
    t.row("taken", format_count(s.locks));
    t.row("contended", format_count(s.lock_contentions));
    t.row("taken over", format_count(s.lock_takeovers));

    t.section("Clients");
    t.row("attached", format!("{} of {} max", format_count(s.clients), format_count(info.max_clients)));
    t.row("dead reclaimed", format_count(s.dead_reclaims));

    t.section("Change feed");
    t.row("head", format_count(s.feed_head));
    t.row("ring length", format_count(info.feed_len));

    t.section("Limits");
    t.row("max key", format_bytes(info.max_key));
    t.row("max value", format_bytes(info.max_value));
    t.row(
        "when full",
        if info.evict { "evict (closest to expiry first)" } else { "fail with \"store full\"" },
    );
    t.out
}

/// `check --json`.
#[derive(Debug, Serialize)]
pub struct CheckJson<'a> {
    pub schema: u32,
    pub segment: &'a str,
    pub healthy: bool,
    pub entries: u64,
    pub blocks_in_use: u64,
    pub leaked_blocks: u64,
    pub hidden_free_blocks: u64,
    pub stale_free_bits: u64,
    pub dead_clients: u64,
    pub problems: &'a [String],
}

pub fn check_json<'a>(name: &'a str, r: &'a CheckReport) -> CheckJson<'a> {
    CheckJson {
        schema: STATS_SCHEMA,
        segment: name,
        healthy: r.problems.is_empty(),
        entries: r.entries,
        blocks_in_use: r.blocks_in_use,
        leaked_blocks: r.leaked_blocks,
        hidden_free_blocks: r.hidden_free_blocks,
        stale_free_bits: r.stale_free_bits,
        dead_clients: r.dead_clients,
        problems: &r.problems,
    }
}

/// `check` for a person.
pub fn check_human(name: &str, r: &CheckReport) -> String {
    let mut out = String::new();
    if r.problems.is_empty() {
        let _ = writeln!(out, "segment {name} is healthy");
    } else {
        let _ = writeln!(out, "segment {name} is DAMAGED: {} problem(s)", r.problems.len());
        for p in &r.problems {
            let _ = writeln!(out, "  - {p}");
        }
    }
    let mut t = Table { out: String::new() };
    t.row("entries", format_count(r.entries));
    t.row("blocks in use", format_count(r.blocks_in_use));
    t.row("leaked blocks", format_count(r.leaked_blocks));
    t.row("hidden free", format_count(r.hidden_free_blocks));
    t.row("stale free bits", format!("{} (harmless)", format_count(r.stale_free_bits)));
    t.row("dead clients", format!("{} (the next sweep reclaims them)", format_count(r.dead_clients)));
    out + &t.out
}

/// `get --meta`.
pub fn meta_human(m: &Meta) -> String {
    let mut t = Table { out: String::new() };
    t.row("version", m.version);
    t.row("length", format!("{} bytes", format_count(m.len as u64)));
    t.row("ttl", m.ttl_left.map_or("never expires".to_string(), |d| format!("{} left", format_duration(d))));
    t.row(
        "sliding",
        m.sliding
            .map_or("no (fixed deadline)".to_string(), |d| format!("yes, window {}", format_duration(d))),
    );
    t.row(
        "lock",
        m.lock
            .map_or("none".to_string(), |l| format!("id {}, held for {}", l.lock_id, format_duration(l.age))),
    );
    t.out
}
