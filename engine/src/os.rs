//! The operating-system layer: the `/dev/shm` file and its mapping, process identity and
//! liveness, the shared clock, randomness and fork detection. Linux only (it reads `/proc`).

use crate::error::{Error, Result};
use memmap2::MmapRaw;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where segments live. Overridable (tests, containers with another tmpfs) by `GARDENSTATE_SHM_DIR`.
pub fn shm_dir() -> PathBuf {
    std::env::var_os("GARDENSTATE_SHM_DIR").map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from)
}

/// The file path of segment `name`, after checking the name is one path component.
pub fn segment_path(name: &str) -> Result<PathBuf> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(Error::InvalidOptions(format!(
            "segment name {name:?}: use 1-200 characters from [A-Za-z0-9._-]"
        )));
    }
    Ok(shm_dir().join(name))
}

pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Error {
    Error::Io { op, path: path.display().to_string(), source }
}

/// Creates the segment file exclusively, never following a symlink, with mode 0000 (opened
/// by `set_mode` once initialized), sized to `len` zero bytes whose memory is reserved.
/// Returns `Ok(None)` if the file already exists (someone else is the creator).
///
/// Reserved, not only sized: `ftruncate` alone makes a sparse file, whose pages a tmpfs
/// allocates on first touch; once the filesystem is full that touch raises SIGBUS in whichever
/// process made it (a worker's `set`, a `check`). `posix_fallocate` allocates every page now
/// (PostgreSQL reserves its dynamic shared memory the same way, for the same reason), so a
/// segment that does not fit fails here with [`Error::NoSpace`] and one that fits can never
/// fault for want of space. On tmpfs the file's size goes from 0 to `len` only once every page
/// is allocated, so an attacher sees either no size (and waits) or a fully reserved file.
/// On failure the file is removed: nothing half-made is left for others to wait on.
pub fn create_exclusive(path: &std::path::Path, len: u64) -> Result<Option<File>> {
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o000)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(io("create", path, e)),
    };
    // Size first, open permissions last: attachers cannot open a 0000 file, and once they can,
    // they wait for the ready stamp (layout.rs), so they never see a half-built header.
    if let Err(errno) = reserve(&file, len) {
        drop(file);
        let _ = std::fs::remove_file(path);
        let dir = path.parent().unwrap_or(std::path::Path::new("/"));
        if errno == libc::ENOSPC {
            // Measured after the removal: what a retry with a smaller segment could use.
            return Err(Error::NoSpace {
                dir: dir.display().to_string(),
                needed: len,
                free: free_bytes(dir),
            });
        }
        return Err(io("posix_fallocate", path, std::io::Error::from_raw_os_error(errno)));
    }
    Ok(Some(file))
}

/// Sizes `file` to `len` bytes and allocates all of them (`posix_fallocate`); the errno if not.
fn reserve(file: &File, len: u64) -> std::result::Result<(), i32> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(|_| libc::EFBIG)?;
    loop {
        // SAFETY: the descriptor is open for writing for the duration of the call (`file` is
        // borrowed); posix_fallocate takes no pointers and returns the error number.
        match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
            0 => return Ok(()),
            libc::EINTR => continue,
            errno => return Err(errno),
        }
    }
}

/// Bytes an unprivileged user may still allocate in the filesystem holding `dir`, if known.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: all-zero bytes are a valid `statvfs` (plain integers).
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs, both live for the call.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// How many of the file's `len` bytes have memory (or disk) allocated to them: its allocated
/// 512-byte blocks, capped at `len`. Less than `len` means a sparse file (holes), whose first
/// touch of a hole can raise SIGBUS once the filesystem is full (see `create_exclusive`).
pub fn reserved_bytes(file: &File, path: &std::path::Path, len: u64) -> Result<u64> {
    let blocks = file.metadata().map_err(|e| io("fstat", path, e))?.blocks();
    Ok(blocks.saturating_mul(512).min(len))
}

/// Opens the permissions of a freshly initialized segment to exactly `mode`.
pub fn set_mode(file: &File, path: &std::path::Path, mode: u32) -> Result<()> {
    file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| io("fchmod", path, e))
}

/// Opens an existing segment file for read/write, refusing symlinks, non-regular files and
/// files owned by another user (unless `allow_group` and the file is group read/write).
/// `ENOENT` is reported as `Ok(None)`.
pub fn open_existing(path: &std::path::Path, allow_group: bool) -> Result<Option<File>> {
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::Refused {
                path: path.display().to_string(),
                reason: "it is a symbolic link".into(),
            });
        }
        Err(e) => return Err(io("open", path, e)),
    };
    let meta = file.metadata().map_err(|e| io("fstat", path, e))?;
    if !meta.file_type().is_file() {
        return Err(Error::Refused {
            path: path.display().to_string(),
            reason: "it is not a regular file".into(),
        });
    }
    let refuse = |reason: String| Err(Error::Refused { path: path.display().to_string(), reason });
    if meta.mode() & 0o007 != 0 {
        return refuse(format!(
            "mode {:o} gives other users access: a segment is 0600 or 0660",
            meta.mode() & 0o777
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        let group_shared = allow_group && meta.mode() & 0o060 == 0o060 && in_group(meta.gid());
        if !group_shared {
            return refuse(format!(
                "owned by uid {} (gid {}), not by this user (uid {euid}){}",
                meta.uid(),
                meta.gid(),
                if allow_group { ", and not a 0660 segment of one of this user's groups" } else { "" }
            ));
        }
    }
    Ok(Some(file))
}

/// Is `gid` this process's effective group or one of its supplementary groups?
fn in_group(gid: u32) -> bool {
    // SAFETY: getegid has no preconditions and cannot fail.
    if unsafe { libc::getegid() } == gid {
        return true;
    }
    // Sized by asking first (a size of 0 returns the count): a fixed 1024 made getgroups fail
    // with EINVAL for a user in more groups (Linux allows 65536), refusing every group segment.
    // SAFETY: with a size of 0 the list is not touched, so a null pointer is allowed.
    let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if count <= 0 {
        return false;
    }
    let mut groups = vec![0 as libc::gid_t; count as usize];
    // SAFETY: `groups` has room for `groups.len()` entries, the size passed.
    let n = unsafe { libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr()) };
    n > 0 && groups[..n as usize].contains(&gid)
}

/// The length of an open segment file.
pub fn file_len(file: &File, path: &std::path::Path) -> Result<u64> {
    Ok(file.metadata().map_err(|e| io("fstat", path, e))?.len())
}

/// Maps the whole file shared, read/write.
pub fn map(file: &File, path: &std::path::Path) -> Result<MmapRaw> {
    MmapRaw::map_raw(file).map_err(|e| io("mmap", path, e))
}

/// Maps the file's header only (`destroy`: a damaged segment's size is not trusted).
pub fn map_header(file: &File, path: &std::path::Path) -> Result<MmapRaw> {
    memmap2::MmapOptions::new()
        .len(crate::layout::HEADER_WORDS * 8)
        .map_raw(file)
        .map_err(|e| io("mmap", path, e))
}

/// Takes a shared `flock` on an attached segment's file, held while the file stays open: the
/// record of who is attached (`holders`). Shared locks never wait for each other, and no
/// process ever takes the exclusive one but to probe, non-blocking, so this never blocks.
pub fn lock_shared(file: &File, path: &std::path::Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock takes a file descriptor, which `file` keeps open during the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(io("flock", path, e));
        }
    }
}

/// The processes attached to a segment (`Segment::holders`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holders {
    /// Whether any process holds the segment open (the kernel refused the exclusive lock).
    pub attached: bool,
    /// The pids `/proc/locks` names as holders (the process that took the lock: a child it
    /// forked shares its lock); empty when `/proc/locks` cannot be read.
    pub pids: Vec<u32>,
}

/// Who holds a shared lock on the file at `path` (see `lock_shared`); `None` if it is missing.
pub fn holders(path: &std::path::Path) -> Result<Option<Holders>> {
    use std::os::fd::AsRawFd;
    let file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("open", path, e)),
    };
    // SAFETY: flock takes a file descriptor, which `file` keeps open during the call; the
    // exclusive lock, if granted, goes with the file at the end of this function.
    let attached = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0;
    if attached {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io("flock", path, e));
        }
    }
    let meta = file.metadata().map_err(|e| io("fstat", path, e))?;
    let pids = std::fs::read_to_string("/proc/locks")
        .map(|text| lock_holders(&text, meta.dev(), meta.ino()))
        .unwrap_or_default();
    Ok(Some(Holders { attached, pids }))
}

/// The pids of the granted shared `FLOCK` locks on file (`dev`, `ino`) in `/proc/locks` text,
/// whose lines read `1: FLOCK  ADVISORY  READ  1234 00:1a:5678 0 EOF` (a waiter's has `->`
/// after the number; the device is `major:minor` in hex). Exclusive ones are probes
/// (`holders`), this one's own included.
fn lock_holders(text: &str, dev: u64, ino: u64) -> Vec<u32> {
    let file = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    let mut pids: Vec<u32> = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let shared = f.get(1) == Some(&"FLOCK") && f.get(3) == Some(&"READ");
            (shared && f.get(5) == Some(&file.as_str())).then(|| f[4].parse().ok())?
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Removes the segment's name; processes that mapped it keep their mapping until they drop it.
pub fn unlink(path: &std::path::Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("unlink", path, e)),
    }
}

/// Milliseconds of `CLOCK_MONOTONIC`: one clock for every process on the host, immune to wall
/// clock steps. Expiry deadlines and lock times in the segment use it. Plus the calling
/// thread's [`advance_clock`] total, which is 0 outside tests.
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always supported.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000).saturating_add(CLOCK_AHEAD_MS.get())
}

std::thread_local! {
    /// How far [`advance_clock`] moved this thread's engine clock, in milliseconds.
    static CLOCK_AHEAD_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Tests only: moves the engine's clock forward by `by` for the calling thread, from its next
/// operation on, so a test can let a TTL or a lock age without sleeping (and without depending
/// on how fast the machine runs the sleep). It changes what this thread *reads* as now, never
/// what the segment stores or how: deadlines it writes are its own now plus their TTL, as for
/// any thread. Per thread, so tests running in parallel in one process do not see each
/// other's clocks; other processes, and other threads of this one, keep the real clock, so a
/// thread that advanced it sees entries of theirs expire early, and they see its entries
/// live longer. Never call it in production code.
pub fn advance_clock(by: std::time::Duration) {
    let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
    CLOCK_AHEAD_MS.set(CLOCK_AHEAD_MS.get().saturating_add(ms));
}

/// Which boot of the host and which monotonic clock a process sees: what the header records
/// at creation (layout.rs `H_BOOT_ID`, `H_CLOCK_OFFSET`) and attach compares, because every
/// deadline in a segment is a [`now_ms`] value, meaningful only on the clock it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockId {
    /// A hash of `/proc/sys/kernel/random/boot_id` (a random UUID the kernel draws at boot);
    /// never 0.
    pub boot: u64,
    /// This process's time-namespace offset of CLOCK_MONOTONIC, in nanoseconds (0 outside a
    /// time namespace, and on kernels without them).
    pub monotonic_offset_ns: i64,
}

/// This process's [`ClockId`]. An error if `/proc` cannot tell (a made-up answer could let a
/// segment of another clock in, or refuse a good one).
pub fn clock_id() -> Result<ClockId> {
    let path = std::path::Path::new("/proc/sys/kernel/random/boot_id");
    let text = std::fs::read_to_string(path).map_err(|e| io("read", path, e))?;
    let boot = xxhash_rust::xxh3::xxh3_64(text.trim().as_bytes()).max(1);
    Ok(ClockId { boot, monotonic_offset_ns: monotonic_offset_ns()? })
}

/// The CLOCK_MONOTONIC offset of this process's time namespace, from
/// `/proc/self/timens_offsets` (lines `<clock> <secs> <nanosecs>`, the clock named or
/// numbered): the namespace an `unshare -T` (or a container runtime) put it in before its
/// `exec`. No such file: a kernel without time namespaces, offset 0.
fn monotonic_offset_ns() -> Result<i64> {
    let path = std::path::Path::new("/proc/self/timens_offsets");
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("read", path, e)),
    };
    let monotonic = libc::CLOCK_MONOTONIC.to_string();
    for line in text.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if let [clock, secs, nanos] = f[..]
            && (clock == "monotonic" || clock == monotonic)
        {
            let parsed = secs.parse::<i64>().ok().zip(nanos.parse::<i64>().ok());
            if let Some(ns) = parsed.and_then(|(s, n)| s.checked_mul(1_000_000_000)?.checked_add(n)) {
                return Ok(ns);
            }
        }
    }
    Err(io(
        "parse the monotonic offset in",
        path,
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unexpected content {text:?}")),
    ))
}

/// Random bytes from the kernel (for the hash seed and dataset ids).
pub fn random_u64() -> Result<u64> {
    let mut b = [0u8; 8];
    let path = std::path::Path::new("/dev/urandom");
    File::open(path).and_then(|mut f| f.read_exact(&mut b)).map_err(|e| io("read", path, e))?;
    Ok(u64::from_ne_bytes(b))
}

/// What can be known about whether a process is still running. Only `Dead` allows taking
/// what the process held (its client slots, its locks): `Unknown` is never treated as dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It is running (its pid exists and `/proc` shows the start time it registered with).
    Alive,
    /// Proven gone: `kill(pid, 0)` said ESRCH, or `/proc/<pid>/stat` was read and shows a
    /// zombie or another start time (the pid was reused).
    Dead,
    /// It could not be told: `/proc` could not be read (EMFILE, ENFILE, ENOMEM, `hidepid`
    /// hiding another user's process, ...). Treated as alive by every caller.
    Unknown,
}

/// Start times are compared on their low 40 bits (the client slot word keeps 40): 2^40 clock
/// ticks at 100 Hz are 348 years of uptime, so two processes with one pid never share them.
pub const START_MASK: u64 = (1 << 40) - 1;

/// Is the process that registered as (`pid`, `start_time`) still running? The one liveness
/// decision of the engine: client reclaim, lock takeover, the drain of writers and `check`
/// all come here. Callers must be in the PID namespace of the segment (attach refuses
/// otherwise: `Segment::client_identity`), so `pid` names the same process for them.
pub fn liveness(pid: u32, start_time: u64) -> Liveness {
    // 0 would probe our own process group and a negative pid every process we may signal.
    if pid == 0 || pid > i32::MAX as u32 {
        return Liveness::Unknown;
    }
    match signal_probe(pid) {
        Liveness::Dead => return Liveness::Dead,
        Liveness::Unknown => return Liveness::Unknown,
        Liveness::Alive => {}
    }
    #[cfg(feature = "failpoints")]
    let read = match crate::failpoint::injected_errno("liveness.read_proc") {
        Some(errno) => Err(std::io::Error::from_raw_os_error(errno)),
        None => read_stat(&format!("/proc/{pid}/stat")),
    };
    #[cfg(not(feature = "failpoints"))]
    let read = read_stat(&format!("/proc/{pid}/stat"));
    match read {
        Ok((zombie, start)) if zombie || (start ^ start_time) & START_MASK != 0 => Liveness::Dead,
        Ok(_) => Liveness::Alive,
        // Gone between the probe and the read, or hidden (hidepid): ask the kernel again.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match signal_probe(pid) {
            Liveness::Dead => Liveness::Dead,
            _ => Liveness::Unknown,
        },
        Err(_) => Liveness::Unknown,
    }
}

/// `kill(pid, 0)`: ESRCH proves no such process exists (`Dead`); success or EPERM (another
/// user's process) say one does (`Alive`: some process has the pid, maybe a reuse); anything
/// else is `Unknown`. Needs no file descriptor and no memory.
fn signal_probe(pid: u32) -> Liveness {
    // SAFETY: signal 0 sends nothing; kill(2) has no memory-safety preconditions. `pid` is
    // positive (checked by the caller), so it names one process, never a group.
    if unsafe { libc::kill(pid as libc::pid_t, 0) } == 0 {
        return Liveness::Alive;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ESRCH) => Liveness::Dead,
        Some(libc::EPERM) => Liveness::Alive,
        _ => Liveness::Unknown,
    }
}

/// (is a zombie, start time) from a `/proc/.../stat` file: field 3 is the state, field 22 the
/// start time in clock ticks since boot. Read into a stack buffer: no allocation, so a process
/// out of memory gets the read's own error, not an abort. Every failure is an error (the caller
/// decides what it proves: nothing, except ENOENT together with ESRCH).
fn read_stat(path: &str) -> std::io::Result<(bool, u64)> {
    let mut buf = [0u8; 4096];
    let mut f = File::open(path)?;
    let mut len = 0;
    while len < buf.len() {
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{path}: unexpected format"));
    let stat = std::str::from_utf8(&buf[..len]).map_err(|_| bad())?;
    // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')').ok_or_else(bad)? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next().ok_or_else(bad)?; // field 3
    let start = fields.nth(18).and_then(|f| f.parse().ok()).ok_or_else(bad)?; // field 22
    Ok((state == "Z" || state == "X", start))
}

/// The inode of this process's PID namespace (`/proc/self/ns/pid`, shown as `pid:[inode]`).
/// Processes that share a segment must share it: a pid means another process elsewhere.
pub fn pid_namespace() -> Result<u64> {
    let path = std::path::Path::new("/proc/self/ns/pid");
    std::fs::metadata(path).map(|m| m.ino()).map_err(|e| io("stat", path, e))
}

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

#[cfg(not(miri))]
extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// A number that changes in a child after every `fork()`: handles compare it to notice they were
/// inherited and must register the child as a new client instead of impersonating the parent.
pub fn fork_generation() -> u64 {
    // Miri cannot call pthread_atfork (nor fork): the generation stays 0 there.
    #[cfg(not(miri))]
    {
        static REGISTER: std::sync::Once = std::sync::Once::new();
        REGISTER.call_once(|| {
            // SAFETY: the handler is async-signal-safe (one atomic add) and lives for the program.
            let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
            // It fails only without memory. Going on would let a forked child use its parent's
            // client slot (journal, locks) as its own: refuse every operation instead.
            assert_eq!(rc, 0, "pthread_atfork failed (out of memory): fork detection is impossible");
        });
    }
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// This process's identity: (pid, start time), read once per process (and again after a fork).
/// An error if `/proc` cannot tell the start time: registering with a made-up one would make
/// every other process judge this one's clients dead and reclaim them under it.
pub fn self_identity() -> Result<(u32, u64)> {
    static CACHE: std::sync::Mutex<Option<(u64, u32, u64)>> = std::sync::Mutex::new(None);
    let fork_gen = fork_generation();
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    match *cache {
        Some((g, pid, start)) if g == fork_gen => Ok((pid, start)),
        _ => {
            let pid = std::process::id();
            // /proc/self: right even where /proc belongs to another PID namespace than the
            // pid getpid() returns (the namespace check then refuses with a clear error).
            let path = std::path::Path::new("/proc/self/stat");
            let (_, start) = read_stat("/proc/self/stat")
                .map_err(|e| io("read this process's start time from", path, e))?;
            *cache = Some((fork_gen, pid, start));
            Ok((pid, start))
        }
    }
}

/// The 32-bit futex word of a lock-wait word (lockwait.rs): its low half.
#[cfg(not(loom))]
fn futex_addr(word: &crate::sync::AtomicU64) -> *mut u32 {
    let p = word.as_ptr() as *mut u32;
    // The low half of a native-endian u64 is its first 4 bytes on little-endian, the last 4
    // on big-endian.
    if cfg!(target_endian = "big") { p.wrapping_add(1) } else { p }
}

/// FUTEX_WAIT, shared (no FUTEX_PRIVATE_FLAG: the word is in a file mapping other processes
/// share): sleeps while the low half of `word` holds `expected`, until a [`futex_wake`] of it,
/// a signal, a spurious wakeup or `timeout`; returns at once if it holds something else.
/// Every outcome is a plain return: the caller re-checks what it waits for.
#[cfg(not(loom))]
pub fn futex_wait(word: &crate::sync::AtomicU64, expected: u32, timeout: std::time::Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the address is 4-byte aligned (half of an aligned u64) and inside the segment's
    // mapping, which outlives the call (`word` borrows it); the kernel only reads the word
    // and `ts`, a valid timespec; the last two arguments are unused by FUTEX_WAIT.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex_addr(word),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// FUTEX_WAKE of every sleeper of `word` (shared, as [`futex_wait`]).
#[cfg(not(loom))]
pub fn futex_wake(word: &crate::sync::AtomicU64) {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE reads nothing but its arguments (the timeout,
    // second address and third value are unused).
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex_addr(word),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Under loom the kernel's futex is modelled by one queue (a mutex and a condition variable)
/// for every word: a wait compares the word under the queue's lock and sleeps until a wake,
/// as the kernel compares under its bucket lock; a wake takes the lock and wakes every
/// sleeper. The timeout is ignored (a wait ends only by a wake), so a lost wakeup is a
/// deadlock loom reports (loom_tests.rs `loom_lock_wait_no_lost_wakeup`).
#[cfg(loom)]
mod futex_model {
    loom::lazy_static! {
        pub static ref QUEUE: (loom::sync::Mutex<()>, loom::sync::Condvar) =
            (loom::sync::Mutex::new(()), loom::sync::Condvar::new());
    }
}
#[cfg(loom)]
pub fn futex_wait(word: &crate::sync::AtomicU64, expected: u32, _timeout: std::time::Duration) {
    let (lock, sleepers) = &*futex_model::QUEUE;
    let held = lock.lock().expect("the futex model's lock");
    if word.load(crate::sync::Ordering::SeqCst) as u32 == expected {
        drop(sleepers.wait(held).expect("the futex model's lock"));
    }
}
#[cfg(loom)]
pub fn futex_wake(_word: &crate::sync::AtomicU64) {
    let (lock, sleepers) = &*futex_model::QUEUE;
    let _held = lock.lock().expect("the futex model's lock");
    sleepers.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_holders_reads_granted_flocks_of_the_file_only() {
        let dev = libc::makedev(0, 0x1a);
        let text = "1: FLOCK  ADVISORY  READ  1234 00:1a:5678 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 999 00:1a:5678 0 EOF\n\
                    2: POSIX  ADVISORY  READ  77 00:1a:5678 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 78 00:1a:5678 0 EOF\n\
                    3: FLOCK  ADVISORY  READ  55 00:1a:56789 0 EOF\n\
                    4: FLOCK  ADVISORY  READ  42 00:1a:5678 0 EOF\n\
                    5: FLOCK  ADVISORY  READ  1234 00:1a:5678 0 EOF\n";
        assert_eq!(lock_holders(text, dev, 5678), vec![42, 1234]);
        assert!(lock_holders(text, libc::makedev(0, 0x1b), 5678).is_empty());
    }

    #[test]
    fn own_start_time_is_stable_and_alive() {
        let (pid, st) = self_identity().unwrap();
        assert!(st > 0);
        assert_eq!(liveness(pid, st), Liveness::Alive);
        assert_eq!(liveness(pid, st + 1), Liveness::Dead, "another start time is another process");
        assert_eq!(liveness(0, st), Liveness::Unknown, "pid 0 names no process");
        assert_eq!(liveness(u32::MAX, st), Liveness::Unknown, "nor does a negative pid");
    }

    #[test]
    fn dead_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let (_, start) = read_stat(&format!("/proc/{pid}/stat")).unwrap();
        child.wait().unwrap();
        assert_eq!(liveness(pid, start), Liveness::Dead);
    }

    #[test]
    fn a_zombie_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let (_, start) = read_stat(&format!("/proc/{pid}/stat")).unwrap();
        // Not reaped yet: the pid exists (kill succeeds) but the process has exited.
        while !read_stat(&format!("/proc/{pid}/stat")).unwrap().0 {
            std::thread::yield_now();
        }
        assert_eq!(liveness(pid, start), Liveness::Dead);
        child.wait().unwrap();
    }

    #[test]
    fn names_are_single_components() {
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(201)] {
            assert!(segment_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(segment_path("sessions-1.prod_a").is_ok());
    }
}
