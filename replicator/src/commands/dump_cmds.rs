//! `dump` and `restore`: a segment to a snapshot file and back (format: `snapshot`).
//!
//! `dump` copies every live entry with `Store::scan_while` (no lock, so workers go on; an entry
//! changed during the dump is saved before or after the change) into a hidden temporary file
//! beside the target, mode 0600 (sessions are credentials), then fsyncs it and renames it
//! over the target: an interrupted or failed dump leaves no partial file under the name.
//! `dump NAME -` writes to standard output instead (the summary goes to stderr).
//!
//! `restore` changes nothing until the whole file has been validated:
//! 1. it reads the header, and attaches to the segment (or works out the options of the one
//!    `--create` will make, defaulting to the dumped segment's shape);
//! 2. a first pass reads every entry and the trailer (lengths, count, checksum) and checks
//!    that every entry fits the segment (key and value limits, entry count, and the heap
//!    the entries take, counted by the engine's allocator rules with `HeapDemand`: exact for
//!    a segment to create, a lower bound against an existing segment's free heap);
//! 3. only then does it create the segment (with `--create`) and apply the entries in a
//!    second pass over the same open file, with `Store::add`, so a key that a worker writes
//!    meanwhile keeps the worker's value. If applying fails (the heap turns out too
//!    fragmented for the size mix, or the file changed between the passes), what this
//!    restore added is removed again, each entry only if it still holds the version the
//!    restore wrote (`Store::delete_if_version`: a worker's write since is kept), or the
//!    segment it created is destroyed.
//!
//! `restore NAME -` reads standard input: it is first copied into an unlinked temporary
//! file, since the two passes read the dump twice.
//!
//! TTLs are relative to the dump's wall-clock time: an entry with `ttl_ms` left at the dump
//! gets what is left of it now, and one whose time ran out since is skipped and counted.
//! A sliding entry gets its full window again: the engine sets a sliding entry's deadline to
//! now + window and has no call to set an earlier one (so restore never shortens a session).
//! Session locks are not dumped: a lock belongs to a request in flight on the source host.

use crate::commands::attach::{attach, is_missing};
use crate::commands::cli::{DumpArgs, RestoreArgs};
use crate::commands::escape::escape;
use crate::commands::exit::{CmdResult, Failure};
use crate::commands::progress::{Progress, Unit};
use crate::commands::segment_cmds::{shape_given, shape_options};
use crate::commands::snapshot::{Header, Reader, Record, SnapshotError, TRAILER_LEN, Writer};
use crate::commands::units::{format_bytes, format_count};
use gardenstate::{Error, Expiry, HeapDemand, Options, Store, WriteMode};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, IsTerminal, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn unix_ms_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// A key in a message: escaped, and cut to 80 characters.
fn key_for_message(key: &[u8]) -> String {
    let s = escape(key);
    match s.char_indices().nth(80) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s,
    }
}

fn file_error(path: &Path) -> impl Fn(SnapshotError) -> Failure + '_ {
    move |e| Failure::error(format!("{}: {e}", path.display()))
}

// ---- dump --------------------------------------------------------------------------------------

/// A file written beside its final path and renamed over it by `persist`; removed if dropped
/// before that.
struct TempFile {
    path: PathBuf,
    target: PathBuf,
    file: Option<File>,
}

impl TempFile {
    fn create(target: &Path) -> Result<TempFile, Failure> {
        let name = target
            .file_name()
            .ok_or_else(|| Failure::error(format!("{}: not a file name", target.display())))?;
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let path = dir.join(tmp_name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Failure::error(format!("cannot create {}: {e}", path.display())))?;
        Ok(TempFile { path, target: target.to_path_buf(), file: Some(file) })
    }

    fn file(&self) -> &File {
        self.file.as_ref().expect("open until persisted")
    }

    /// Flushes the data to disk and renames the file over its target.
    fn persist(mut self) -> Result<(), Failure> {
        let file = self.file.take().expect("open until persisted");
        let io =
            |what: &str, e: std::io::Error| Failure::error(format!("{what} {}: {e}", self.path.display()));
        file.sync_all().map_err(|e| io("fsync", e))?;
        drop(file);
        std::fs::rename(&self.path, &self.target).map_err(|e| {
            Failure::error(format!("cannot rename {} to {}: {e}", self.path.display(), self.target.display()))
        })?;
        let dir = self.target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        // The rename is durable once the directory is: best effort (some filesystems refuse).
        let _ = File::open(dir).and_then(|d| d.sync_all());
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether a FILE argument names standard input or output.
fn is_std_stream(path: &Path) -> bool {
    path.as_os_str() == "-"
}

pub fn dump(a: DumpArgs) -> CmdResult {
    let to_stdout = is_std_stream(&a.file);
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(Failure::error(
            "standard output is a terminal: pipe `dump NAME -` into a file or a command (gzip, ssh)",
        ));
    }
    let store = attach(&a.name)?;
    let info = store.info();
    let shape = info.options();
    let header = Header {
        dumped_at_unix_ms: unix_ms_now(),
        heap_bytes: shape.capacity_bytes,
        max_entries: shape.max_entries,
        max_value: shape.max_value,
        max_key: shape.max_key,
        max_clients: shape.max_clients,
        feed_len: shape.feed_len,
        dataset_id: info.dataset_id,
        evict: shape.evict,
    };
    let started = Instant::now();
    let (count, bytes, locked) = if to_stdout {
        let out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        // A dump cut short is useless, so a closed pipe is an error here (unlike `keys`).
        write_dump(&store, &header, out, a.quiet, |e| {
            Failure::error(format!("writing the dump to standard output: {e}"))
        })?
    } else {
        let tmp = TempFile::create(&a.file)?;
        let out = BufWriter::with_capacity(1 << 20, tmp.file());
        let done = write_dump(&store, &header, out, a.quiet, file_error(&tmp.path))?;
        tmp.persist()?;
        done
    };
    if !a.quiet {
        let summary = format!(
            "dumped {} entries ({}) from {} to {} in {:.1}s",
            format_count(count),
            format_bytes(bytes),
            a.name,
            if to_stdout { "standard output".into() } else { a.file.display().to_string() },
            started.elapsed().as_secs_f64()
        );
        let locks = (locked > 0).then(|| {
            format!(
                "{} entries were locked: their values are in the dump, their session locks are not",
                format_count(locked)
            )
        });
        // With `-`, standard output is the dump: the summary goes to stderr.
        for line in std::iter::once(summary).chain(locks) {
            if to_stdout {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// Writes every live entry of `store` to `out` as a snapshot, flushed. Returns the entries
/// and bytes written, and how many entries were locked.
fn write_dump<W: Write>(
    store: &Store,
    header: &Header,
    out: W,
    quiet: bool,
    fail: impl Fn(SnapshotError) -> Failure,
) -> Result<(u64, u64, u64), Failure> {
    let mut w = Writer::new(out, header).map_err(&fail)?;
    let mut progress = Progress::new("dumping", Unit::Entries, store.stats().live_entries, quiet);
    let mut failed: Option<SnapshotError> = None;
    let mut locked = 0u64;
    store.scan_while(|e| {
        locked += u64::from(e.meta.lock.is_some());
        let ttl_ms = e.meta.ttl_left.map_or(0, |d| millis(d).max(1));
        let sliding_ms = match (ttl_ms, e.meta.sliding) {
            (0, _) | (_, None) => 0,
            (_, Some(d)) => u32::try_from(millis(d)).unwrap_or(u32::MAX).max(1),
        };
        progress.inc(1);
        match w.entry(&Record { key: e.key, value: e.value, ttl_ms, sliding_ms }) {
            Ok(()) => true,
            Err(err) => {
                failed = Some(err);
                false
            }
        }
    })?;
    progress.finish();
    if let Some(e) = failed {
        return Err(fail(e));
    }
    let (count, bytes) = (w.count(), w.bytes() + TRAILER_LEN as u64);
    w.finish().map_err(&fail)?;
    Ok((count, bytes, locked))
}

// ---- restore -----------------------------------------------------------------------------------

/// What the target segment can hold.
struct Limits {
    max_key: u64,
    max_value: u64,
    max_entries: u64,
    /// Free heap: the whole capacity of a segment to create.
    heap_free: u64,
    /// The segment's options, for the heap the entries take in it.
    options: Options,
}

/// What the validation pass learned.
struct Survey {
    entries: u64,
    /// Entries whose TTL ran out since the dump (skipped).
    expired: u64,
    /// The heap the entries to apply take in the target (by the engine's allocator rules).
    demand: HeapDemand,
    /// The first entry that does not fit, and why.
    misfit: Option<String>,
    longest_key: u64,
    longest_value: u64,
}

/// Milliseconds since the dump, by the wall clock (0 if the clock went back).
fn elapsed_since(h: &Header) -> u64 {
    unix_ms_now().saturating_sub(h.dumped_at_unix_ms)
}

/// A snapshot reader over `file` from its start.
fn reader_at_start<'f>(file: &'f File, path: &Path) -> Result<Reader<BufReader<&'f File>>, Failure> {
    let mut input = file;
    input.seek(SeekFrom::Start(0)).map_err(|e| Failure::error(format!("{}: {e}", path.display())))?;
    Reader::new(BufReader::with_capacity(1 << 20, input)).map_err(file_error(path))
}

/// Pass 1: reads and verifies the whole file, checking each entry against `limits`.
fn survey(file: &File, path: &Path, limits: &Limits, quiet: bool) -> Result<Survey, Failure> {
    let mut r = reader_at_start(file, path)?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut progress = Progress::new("checking", Unit::Bytes, total, quiet);
    let elapsed = elapsed_since(r.header());
    let mut s = Survey {
        entries: 0,
        expired: 0,
        demand: limits.options.heap_demand()?,
        misfit: None,
        longest_key: 0,
        longest_value: 0,
    };
    while let Some(e) = r.next_entry().map_err(file_error(path))? {
        s.entries += 1;
        progress.set(r.offset());
        if e.ttl_ms != 0 && e.ttl_ms <= elapsed {
            s.expired += 1;
            continue;
        }
        let (k, v) = (e.key.len() as u64, e.value.len() as u64);
        s.longest_key = s.longest_key.max(k);
        s.longest_value = s.longest_value.max(v);
        s.demand.add(e.key.len(), e.value.len());
        if s.misfit.is_none() {
            let why = if k > limits.max_key {
                Some(format!("its key of {k} bytes exceeds the segment's max_key of {}", limits.max_key))
            } else if v > limits.max_value {
                Some(format!(
                    "its value of {v} bytes exceeds the segment's max_value of {}",
                    limits.max_value
                ))
            } else {
                None
            };
            s.misfit =
                why.map(|why| format!("entry #{} (key {}): {why}", s.entries, key_for_message(&e.key)));
        }
    }
    progress.finish();
    Ok(s)
}

/// Refuses a dump the segment cannot hold, naming the entry or the total and the remedy.
fn check_fit(s: &Survey, l: &Limits, creating: bool) -> Result<(), Failure> {
    let remedy = |flag: &str, need: String| {
        if creating {
            format!("restore with --create --{flag} {need} (or more)")
        } else {
            format!("restore into a segment created with --{flag} {need} (or more), e.g. with --create")
        }
    };
    if let Some(m) = &s.misfit {
        let fix = if s.longest_key > l.max_key {
            remedy("max-key", s.longest_key.to_string())
        } else {
            remedy("max-value", s.longest_value.to_string())
        };
        return Err(Failure::error(format!("the segment cannot hold {m}; {fix}; nothing was changed")));
    }
    let live = s.entries - s.expired;
    if live > l.max_entries {
        return Err(Failure::error(format!(
            "the dump holds {} live entries, the segment is sized for {}; {}; nothing was changed",
            format_count(live),
            format_count(l.max_entries),
            remedy("max-entries", live.to_string())
        )));
    }
    // Creating: the segment holds the entries if its heap has the pages each size class needs
    // (exact). Into an existing segment: the blocks must fit in its free heap (a lower bound:
    // free blocks of one class do not serve another, and workers write meanwhile).
    let need = if creating { s.demand.capacity_bytes() } else { s.demand.block_bytes() };
    if need > l.heap_free {
        return Err(Failure::error(format!(
            "the dump's entries need {} of heap, the segment has {}{}; {}; nothing was changed",
            format_bytes(need),
            format_bytes(l.heap_free),
            if creating { "" } else { " free" },
            remedy("capacity", format!("{}KiB", s.demand.capacity_bytes().div_ceil(1024)))
        )));
    }
    Ok(())
}

/// What applying did.
#[derive(Default)]
struct Applied {
    restored: u64,
    expired: u64,
    kept: u64,
    sliding: u64,
}

/// Pass 2: adds every live entry. On failure `added` holds the keys added so far, each with
/// the version this restore wrote (for the undo).
fn apply(
    store: &Store,
    file: &File,
    path: &Path,
    header: &Header,
    total: u64,
    quiet: bool,
    added: &mut Vec<(Vec<u8>, u64)>,
) -> Result<Applied, Failure> {
    let mut r = reader_at_start(file, path)?;
    if r.header() != header {
        return Err(Failure::error(format!(
            "restore failed: {}: the file changed while it was being restored",
            path.display()
        )));
    }
    let mut progress = Progress::new("restoring", Unit::Entries, total, quiet);
    let mut done = Applied::default();
    let mut n = 0u64;
    while let Some(e) = r.next_entry().map_err(|err| {
        Failure::error(format!(
            "restore failed: {}: the file changed while it was being restored: {err}",
            path.display()
        ))
    })? {
        n += 1;
        progress.set(n);
        let elapsed = elapsed_since(header);
        if e.ttl_ms != 0 && e.ttl_ms <= elapsed {
            done.expired += 1;
            continue;
        }
        let expiry = if e.sliding_ms != 0 {
            Expiry::Sliding(Duration::from_millis(e.sliding_ms as u64))
        } else if e.ttl_ms != 0 {
            Expiry::After(Duration::from_millis(e.ttl_ms - elapsed))
        } else {
            Expiry::Never
        };
        match store.add(&e.key, &e.value, expiry) {
            Ok(version) => {
                done.restored += 1;
                done.sliding += u64::from(e.sliding_ms != 0);
                added.push((e.key, version));
            }
            Err(Error::Exists) => done.kept += 1,
            Err(err) => {
                return Err(Failure::error(format!(
                    "restore failed at entry #{n} (key {}, value of {} bytes): {err}",
                    key_for_message(&e.key),
                    e.value.len()
                )));
            }
        }
    }
    progress.finish();
    Ok(done)
}

/// Copies standard input into an unlinked temporary file (mode 0600, in the temporary
/// directory) and returns it: restore reads a dump twice (validate everything, then apply), and
/// a pipe can be read only once. Memory stays constant; the disk holds one copy of the dump
/// until the restore ends.
fn spool_stdin() -> Result<File, Failure> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(Failure::error(
            "standard input is a terminal: pipe a dump into `restore NAME -` (e.g. from gunzip or ssh)",
        ));
    }
    let dir = std::env::temp_dir();
    let path = dir.join(format!(".gardenstate-restore.{}.tmp", std::process::id()));
    let io = |what: &str, e: std::io::Error| {
        Failure::error(format!(
            "{what} {}: {e} (set TMPDIR to a directory with room for the dump)",
            path.display()
        ))
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io("cannot create", e))?;
    std::fs::remove_file(&path).map_err(|e| io("cannot unlink", e))?;
    std::io::copy(&mut stdin.lock(), &mut file).map_err(|e| io("copying standard input to", e))?;
    Ok(file)
}

/// Removes what a failed merge added, but only entries that still hold the version this
/// restore wrote (`Store::delete_if_version`): a key a worker wrote, deleted or rewrote since
/// keeps the worker's write. Returns the sentence that says what was undone.
fn undo_added(store: &Store, added: &[(Vec<u8>, u64)]) -> String {
    let (mut removed, mut kept, mut failed) = (0u64, 0u64, 0u64);
    for (key, version) in added {
        match store.delete_if_version(key, *version) {
            Ok(()) => removed += 1,
            Err(Error::VersionMismatch { .. } | Error::NotFound) => kept += 1,
            Err(_) => failed += 1,
        }
    }
    let mut undo = format!(
        "{} of the {} entries it had added were removed again",
        format_count(removed),
        format_count(added.len() as u64)
    );
    if kept > 0 {
        undo.push_str(&format!(
            "; {} were written or deleted by others meanwhile and were left as they are",
            format_count(kept)
        ));
    }
    if failed > 0 {
        undo.push_str(&format!("; {} could not be removed", format_count(failed)));
    }
    undo
}

pub fn restore(a: RestoreArgs) -> CmdResult {
    if !a.create && shape_given(&a.shape) {
        return Err(Failure::error("the segment options (--capacity, --max-entries, ...) go with --create"));
    }
    let started = Instant::now();
    let (file, path) = if is_std_stream(&a.file) {
        (spool_stdin()?, Path::new("standard input"))
    } else {
        let path = a.file.as_path();
        let file =
            File::open(path).map_err(|e| Failure::error(format!("cannot open {}: {e}", path.display())))?;
        (file, path)
    };
    let header = reader_at_start(&file, path)?.header().clone();

    // The target: the options of the segment to create, or the attached segment.
    let (existing, opts, limits) = if a.create {
        let opts = shape_options(&a.shape, header.options())?;
        let exists = match Store::attach_group(&a.name) {
            Ok(_) => String::new(),
            Err(e) if is_missing(&e) => String::new(),
            Err(e @ Error::InvalidOptions(_)) => return Err(Failure::error(e)),
            Err(e) => format!(" (and cannot be attached: {e})"),
        };
        if !exists.is_empty() || gardenstate::shm_dir().join(&a.name).exists() {
            return Err(Failure::error(format!(
                "segment {:?} already exists{exists}; restore into it without --create, or destroy it first",
                a.name
            )));
        }
        let limits = Limits {
            max_key: opts.max_key as u64,
            max_value: opts.max_value,
            max_entries: opts.max_entries,
            heap_free: opts.capacity_bytes,
            options: opts.clone(),
        };
        (None, Some(opts), limits)
    } else {
        let store = attach(&a.name)?;
        if store.write_mode() != WriteMode::Writable {
            return Err(Failure::error(Error::ReadOnly));
        }
        let info = store.info();
        if !a.merge && !store.scan_while(|_| false)? {
            return Err(Failure::error(format!(
                "segment {} holds {} entries; restore into an empty segment, or pass --merge to add \
                     the dump's entries to it (keys already present keep their value); nothing was changed",
                a.name,
                format_count(store.stats().live_entries)
            )));
        }
        let limits = Limits {
            max_key: info.max_key,
            max_value: info.max_value,
            max_entries: info.max_entries,
            heap_free: store.stats().bytes_free,
            options: info.options(),
        };
        (Some(store), None, limits)
    };

    let survey = survey(&file, path, &limits, a.quiet)?;
    check_fit(&survey, &limits, a.create)?;

    let (store, created) = match (existing, opts) {
        (Some(store), _) => (store, false),
        (None, Some(opts)) => (Store::create(&a.name, &opts)?, true),
        (None, None) => unreachable!("a target is attached or to be created"),
    };
    let mut added = Vec::new();
    let result = apply(&store, &file, path, &header, survey.entries, a.quiet, &mut added);
    let done = match result {
        Ok(done) => done,
        Err(f) => {
            let undo = if created {
                drop(store);
                match Store::destroy(&a.name) {
                    Ok(_) => format!("the segment {} this restore created was destroyed", a.name),
                    Err(e) => {
                        format!("destroying the segment {} this restore created failed too: {e}", a.name)
                    }
                }
            } else {
                undo_added(&store, &added)
            };
            return Err(Failure::error(format!("{}; {undo}", f.message)));
        }
    };
    if !a.quiet {
        println!(
            "restored {} entries into {} from {} in {:.1}s",
            format_count(done.restored),
            a.name,
            path.display(),
            started.elapsed().as_secs_f64()
        );
        if done.expired > 0 {
            println!("skipped {} entries that expired since the dump", format_count(done.expired));
        }
        if done.kept > 0 {
            println!(
                "kept {} keys already in the segment (their dumped value was not applied)",
                format_count(done.kept)
            );
        }
        if done.sliding > 0 {
            println!("{} sliding entries start a full window from now", format_count(done.sliding));
        }
        println!("session locks are not part of a dump: every restored entry is unlocked");
    }
    Ok(())
}
