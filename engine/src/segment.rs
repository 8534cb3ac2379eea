//! The segment: creating, attaching to and destroying the named shared-memory file.
//!
//! Creation protocol (race-free when many processes start at once):
//! 1. `open(O_CREAT|O_EXCL|O_NOFOLLOW, 0000)`: exactly one process wins and is the creator;
//!    the file is unreadable by other non-root users until step 4.
//! 2. The creator sizes it and reserves its memory (`posix_fallocate`: a segment that does not
//!    fit its filesystem fails here with `NoSpace`, naming the room missing and the fixes,
//!    instead of killing its users with SIGBUS once the filesystem fills), maps it and writes
//!    the immutable header.
//! 3. The creator sets the file mode to exactly the requested mode (fchmod: the umask cannot
//!    change it), then stamps `H_STATE = READY` last, with release ordering.
//! 4. Every other process (the losers of step 1, and later attachers) opens the file and waits
//!    until the size is right and the stamp is there, then validates the header (O(1)).
//!
//! A creator that dies before the stamp leaves a segment that attachers report as `NotReady`
//! after their wait limit; `destroy` removes it. Once stamped, a segment has its final mode
//! (the mode used to be set after the stamp: a creator killed in between left a READY segment
//! at mode 0000 that no non-root user could ever open; failpoint `create.after_ready`).
//!
//! Attach refuses, before mapping anything, a file whose memory is not all reserved (a sparse
//! file: fewer allocated blocks than bytes; `Unreserved`): a touch of one of its holes could
//! raise SIGBUS once the filesystem is full. This needs a filesystem that counts reserved
//! blocks in `st_blocks` (tmpfs, ext4, xfs do); one that does not (a compressing filesystem)
//! cannot hold segments.
//!
//! Attach also refuses a segment made on another clock: every deadline in a segment is a
//! CLOCK_MONOTONIC reading, so a segment from before the last reboot (`OtherBoot`: kept in a
//! persistent `GARDENSTATE_SHM_DIR`) or made in a time namespace with another monotonic offset
//! (`OtherTimeNamespace`) would have its expiries, lock ages and leases misread by the clock's
//! jump (layout.rs `H_BOOT_ID`, `H_CLOCK_OFFSET`). Refused, not rebased: rebasing would need
//! the old clock's reading at the moment the new one started, which nobody recorded, and a
//! rebase racing live writers would tear deadlines. Destroy and recreate (a standby's resync
//! refills it). A process that enters another time namespace after attaching (a `setns` or an
//! `unshare -T` without `exec`) is not noticed: none of our runtimes does that.

use crate::error::{Error, Result};
use crate::failpoint::failpoint;
use crate::layout::{
    DESTROYED, Geometry, H_BOOT_ID, H_CLOCK_OFFSET, H_STATE, HEADER_WORDS, HeaderIds, Options, READY,
};
use crate::mem::Mem;
use crate::os;
use crate::sync::Ordering;
use memmap2::MmapRaw;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub(crate) struct Segment {
    pub mem: Mem,
    pub g: Geometry,
    pub seed: u64,
    pub evict: bool,
    pub path: PathBuf,
    /// Process-local, three words per size class: the allocator's memos of a full scan that
    /// found no room in the class's pages, and of one that found none anywhere (the class's
    /// hint word and the heap epoch it saw; heap.rs, "Full-scan memo", "Failing
    /// allocations"); not part of the shared layout.
    pub full_scan_memo: Box<[std::sync::atomic::AtomicU64]>,
    // Dropped after `mem` (field order): the mapping outlives every reference into it.
    // Under loom the segment is an in-process `Mem` of loom atomics (`Segment::model`).
    #[cfg(not(loom))]
    _map: Backing,
}

/// The memory behind a segment's `Mem`.
#[cfg(not(loom))]
enum Backing {
    /// The shared mapping of the `/dev/shm` file (every real segment), and the file, open
    /// and holding a shared `flock` for as long as the segment is attached: the kernel's
    /// record of who is attached (`Segment::holders`), dropped with the process whatever
    /// way it ends.
    Map(#[allow(dead_code)] MmapRaw, #[allow(dead_code)] std::fs::File),
    /// A heap buffer (`Segment::in_process`: unit tests, and Miri, which cannot map a file).
    #[cfg(test)]
    Heap(#[allow(dead_code)] Vec<std::sync::atomic::AtomicU64>),
}

/// How long an attacher waits for a concurrent creator to stamp the segment ready.
pub const DEFAULT_READY_WAIT: Duration = Duration::from_secs(5);

impl Segment {
    /// Creates segment `name`; `Ok(None)` if it already exists.
    pub fn create(name: &str, opts: &Options) -> Result<Option<Segment>> {
        let g = Geometry::from_options(opts)?;
        let path = os::segment_path(name)?;
        let clock = os::clock_id()?;
        let Some(file) = os::create_exclusive(&path, g.segment_bytes)? else {
            return Ok(None);
        };
        let built = (|| {
            failpoint!("create.after_excl");
            let map = os::map(&file, &path)?;
            let seg = Segment::from_map(
                map,
                file.try_clone().map_err(|e| os::io("dup", &path, e))?,
                g,
                path.clone(),
            )?;
            let unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let ids = HeaderIds {
                seed: os::random_u64()?,
                dataset: os::random_u64()?,
                now_unix_ms: unix_ms,
                clock,
            };
            g.write_header(&seg.mem, opts, ids);
            seg.stamp_pid_namespace()?;
            let seed = seg.mem.w(crate::layout::H_HASH_SEED).load(Ordering::Relaxed);
            let seg = Segment { seed, evict: opts.evict, ..seg };
            // The mode before the stamp: a creator killed between the two must not leave a
            // READY segment still at mode 0000, which every non-root attacher would be refused
            // forever. (Opened early, attachers wait for the stamp, so they never see a
            // half-built header either way.)
            os::set_mode(&file, &path, opts.mode)?;
            failpoint!("create.after_mode");
            seg.mem.w(H_STATE).store(READY, Ordering::Release);
            failpoint!("create.after_ready");
            Ok(seg)
        })();
        if built.is_err() {
            // Leave no half-built segment behind for others to wait on.
            let _ = os::unlink(&path);
        }
        built.map(Some)
    }

    /// Attaches to existing segment `name`, waiting up to `wait` for its creator to finish.
    /// `Ok(None)` if there is no such segment.
    pub fn attach(name: &str, wait: Duration, allow_group: bool) -> Result<Option<Segment>> {
        let path = os::segment_path(name)?;
        let deadline = Instant::now() + wait;
        loop {
            let file = match os::open_existing(&path, allow_group) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(None),
                // Mode 0000 while the creator initializes (for non-root attachers).
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::PermissionDenied && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let len = os::file_len(&file, &path)?;
            if len < HEADER_WORDS as u64 * 8 {
                if Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                return Err(crate::error::corrupt(
                    "file size",
                    format!("{len} bytes is smaller than the {}-byte header", HEADER_WORDS * 8),
                ));
            }
            // Before mapping it: even a read of a hole faults in a page, which a full tmpfs
            // answers with SIGBUS. Every segment `create` makes is reserved from the moment
            // it has a size (os.rs `create_exclusive`): a hole is never a creator at work.
            let reserved = os::reserved_bytes(&file, &path, len)?;
            if reserved < len {
                return Err(Error::Unreserved { path: path.display().to_string(), size: len, reserved });
            }
            let map = os::map(&file, &path)?;
            let mem = Segment::mem_of(&map);
            // A segment of the other byte order never reads READY here: validate it at once.
            let swapped =
                mem.w(crate::layout::H_MAGIC).load(Ordering::Relaxed) == crate::layout::MAGIC_SWAPPED;
            let state = mem.w(H_STATE).load(Ordering::Acquire);
            if !swapped && state == DESTROYED {
                // Opened just before its destroyer unlinked it (layout.rs `DESTROYED`).
                return Ok(None);
            }
            if !swapped && state != READY {
                if Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                return Err(Error::NotReady { waited: wait });
            }
            let g = Geometry::validate(&mem, len)?;
            same_clock(&mem, os::clock_id()?, &path)?;
            let seg = Segment::from_map(map, file, g, path)?;
            let seed = seg.mem.w(crate::layout::H_HASH_SEED).load(Ordering::Relaxed);
            let evict =
                seg.mem.w(crate::layout::H_FLAGS).load(Ordering::Relaxed) & crate::layout::FLAG_EVICT != 0;
            return Ok(Some(Segment { seed, evict, ..seg }));
        }
    }

    #[cfg(not(loom))]
    fn mem_of(map: &MmapRaw) -> Mem {
        // SAFETY: the mapping is page aligned and `map.len()` bytes long, and it stays mapped
        // while the `Mem` is used: `attach` reads the header through its `Mem` only while it
        // holds the map (moving the `MmapRaw` into `from_map` does not move the mapping), and
        // `from_map` keeps the map in the segment's `_map`, dropped after `mem` (field
        // order). Every access to the segment is atomic (`Mem` hands out only atomics).
        unsafe { Mem::from_raw(map.as_mut_ptr(), map.len() / 8) }
    }

    /// A zeroed segment in a heap buffer of this process, header written and stamped ready: no
    /// file and no mapping, so Miri can run the store's operations on it (unit tests only).
    #[cfg(all(test, not(loom)))]
    pub fn in_process(opts: &Options, seed: u64) -> Result<Segment> {
        use std::sync::atomic::AtomicU64;
        let g = Geometry::from_options(opts)?;
        let words: Vec<AtomicU64> = (0..g.segment_bytes / 8).map(|_| AtomicU64::new(0)).collect();
        // SAFETY: the buffer is 8-byte aligned (AtomicU64) and `words.len()` words long; it
        // moves into `_map`, which is dropped after `mem` and never resized (the buffer stays
        // where it is); it is only ever accessed atomically, through `Mem` (AtomicU64 is an
        // UnsafeCell, so writing through a pointer from `as_ptr` is allowed).
        let mem = unsafe { Mem::from_raw(words.as_ptr() as *mut u8, words.len()) };
        g.write_header(&mem, opts, HeaderIds::unit_test(seed));
        let full_scan_memo = Segment::memo(&g);
        let seg = Segment {
            mem,
            g,
            seed,
            evict: opts.evict,
            path: PathBuf::new(),
            full_scan_memo,
            _map: Backing::Heap(words),
        };
        seg.stamp_pid_namespace()?;
        seg.mem.w(H_STATE).store(READY, Ordering::Release);
        Ok(seg)
    }

    /// Loom atomics cannot live in a mapping: under loom, models build their segment with
    /// [`Segment::model`] and never create or attach a real one.
    #[cfg(loom)]
    fn mem_of(_map: &MmapRaw) -> Mem {
        unreachable!("under cfg(loom) segments are built with Segment::model, not mapped")
    }

    /// A zeroed in-process segment of loom atomics with its header written and stamped ready,
    /// for loom models of the algorithms (no file, no mapping). Only the words `i` with
    /// `live(i)` exist (each loom atomic costs time in every execution a model explores).
    #[cfg(all(test, loom))]
    pub fn model(opts: &Options, seed: u64, live: impl Fn(usize) -> bool) -> Result<Segment> {
        let g = Geometry::from_options(opts)?;
        let mem = Mem::zeroed(g.segment_bytes as usize / 8, live);
        g.write_header(&mem, opts, HeaderIds::unit_test(seed));
        mem.w(H_STATE).store(READY, Ordering::Release);
        let full_scan_memo = Segment::memo(&g);
        Ok(Segment { mem, g, seed, evict: opts.evict, path: PathBuf::new(), full_scan_memo })
    }

    fn memo(g: &Geometry) -> Box<[std::sync::atomic::AtomicU64]> {
        (0..3 * g.n_classes).map(|_| std::sync::atomic::AtomicU64::new(0)).collect()
    }

    fn from_map(map: MmapRaw, file: std::fs::File, g: Geometry, path: PathBuf) -> Result<Segment> {
        os::lock_shared(&file, &path)?;
        if (map.len() as u64) < g.segment_bytes {
            return Err(crate::error::corrupt(
                "mapping size",
                format!("expected {} bytes, mapped {}", g.segment_bytes, map.len()),
            ));
        }
        let mem = Segment::mem_of(&map);
        Ok(Segment {
            mem,
            full_scan_memo: Segment::memo(&g),
            g,
            seed: 0,
            evict: false,
            path,
            #[cfg(not(loom))]
            _map: Backing::Map(map, file),
        })
    }

    /// Removes segment `name`: stamps it `DESTROYED` (layout.rs) if it is a ready segment
    /// this process may open, then unlinks the name. Processes still attached fail their next
    /// operation with `Error::Destroyed`; new opens create a fresh segment. A file that cannot
    /// be opened or mapped (damaged, half-built, another owner's) is unlinked all the same.
    /// Returns whether a segment was there.
    pub fn destroy(name: &str) -> Result<bool> {
        let path = os::segment_path(name)?;
        if let Ok(Some(file)) = os::open_existing(&path, true) {
            if os::file_len(&file, &path).is_ok_and(|len| len >= HEADER_WORDS as u64 * 8)
                && let Ok(map) = os::map_header(&file, &path)
            {
                // The header only: a damaged segment's geometry is not trusted here.
                let mem = Segment::mem_of(&map);
                if mem.w(crate::layout::H_MAGIC).load(Ordering::Relaxed) == crate::layout::MAGIC {
                    let _ = mem.w(H_STATE).compare_exchange(
                        READY,
                        DESTROYED,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                }
            }
        }
        os::unlink(&path)
    }

    /// Who is attached to segment `name`, as the kernel records it (every attached `Store`
    /// holds a shared `flock` on the segment file until it is dropped or its process ends,
    /// however it ends): `None` if there is no such segment. Exact for the yes/no (a probe
    /// for the exclusive lock), and lists pids when `/proc/locks` can be read.
    pub fn holders(name: &str) -> Result<Option<os::Holders>> {
        os::holders(&os::segment_path(name)?)
    }
}

/// Refuses a segment whose deadlines were read from another clock than this process's: made
/// in another boot, or in a time namespace with another monotonic offset (layout.rs
/// `H_BOOT_ID`, `H_CLOCK_OFFSET`).
fn same_clock(mem: &Mem, here: os::ClockId, path: &std::path::Path) -> Result<()> {
    let segment_boot = mem.w(H_BOOT_ID).load(Ordering::Relaxed);
    if segment_boot != here.boot {
        return Err(Error::OtherBoot {
            path: path.display().to_string(),
            segment_boot,
            this_boot: here.boot,
        });
    }
    let segment_offset_ns = mem.w(H_CLOCK_OFFSET).load(Ordering::Relaxed) as i64;
    if segment_offset_ns != here.monotonic_offset_ns {
        return Err(Error::OtherTimeNamespace {
            path: path.display().to_string(),
            segment_offset_ns,
            this_offset_ns: here.monotonic_offset_ns,
        });
    }
    Ok(())
}
