//! The segment file as a security boundary: exact permissions whatever the umask, no following
//! of symlinks, no adopting of files that are not ours (another owner, not a regular file, a
//! squatted name), unpredictable hash seeds, and a race-free create-or-attach.

mod common;
use common::*;
use gardenstate::{Error, Expiry, Options, Store};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn describe<T>(r: &gardenstate::Result<T>) -> String {
    match r {
        Ok(_) => "Ok(store)".into(),
        Err(e) => format!("Err({e:?})"),
    }
}

/// A file outside the shm directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, content: &[u8]) -> TempFile {
        let p = std::env::temp_dir().join(format!("gds-sec-{tag}-{}", std::process::id()));
        std::fs::write(&p, content).unwrap();
        TempFile(p)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The segment file gets exactly the requested mode (0600, or 0660), whatever the umask.
/// Runs in a child process: the umask is process-wide.
#[test]
fn segment_mode_is_exact_whatever_the_umask() {
    isolate("segment_mode_is_exact_whatever_the_umask", Duration::from_secs(20), || {
        for mask in [0o000, 0o002, 0o022, 0o077, 0o777] {
            // SAFETY: umask has no preconditions; this child process runs only this test.
            unsafe { libc::umask(mask) };
            for (want, opts) in [(0o600, small()), (0o660, Options { mode: 0o660, ..small() })] {
                let s = Seg::new(&format!("mode{mask:o}-{want:o}"));
                let st = Store::create(&s.name, &opts).unwrap();
                let m = std::fs::metadata(seg_path(&s.name)).unwrap();
                assert_eq!(m.mode() & 0o7777, want, "create, umask {mask:03o}");
                // SAFETY: geteuid has no preconditions.
                assert_eq!(m.uid(), unsafe { libc::geteuid() });
                drop(st);
                Store::destroy(&s.name).unwrap();
                let st = Store::open(&s.name, &opts).unwrap();
                assert_eq!(mode_of(&seg_path(&s.name)), want, "open (creating), umask {mask:03o}");
                st.set(b"k", b"v", Expiry::Never).unwrap();
            }
        }
    });
}

/// A symlink at the segment's name is never followed: attach and open refuse it and the target
/// is left exactly as it was, whether it is an ordinary file, a valid segment, or missing.
#[test]
fn symlink_at_segment_name_is_refused() {
    let s = Seg::new("symlink");
    let link = seg_path(&s.name);
    let check_refused = |what: &str| {
        for (op, r) in [("attach", Store::attach(&s.name)), ("open", Store::open(&s.name, &small()))] {
            match &r {
                Err(Error::Refused { reason, .. }) => {
                    assert!(reason.contains("symbolic link"), "{what}: {reason}")
                }
                _ => panic!("{what}: {op} through a symlink: expected Refused, got {}", describe(&r)),
            }
        }
        let r = Store::attach_group(&s.name);
        assert!(matches!(r, Err(Error::Refused { .. })), "{what}: attach_group: {}", describe(&r));
        assert!(Store::create(&s.name, &small()).is_err(), "{what}: create over a symlink");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "{what}: link replaced");
    };

    // 1. An ordinary file of the user's elsewhere.
    let precious = b"precious data that must not be truncated or overwritten".repeat(100);
    let target = TempFile::new("target", &precious);
    std::fs::set_permissions(&target.0, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = std::fs::metadata(&target.0).unwrap();
    std::os::unix::fs::symlink(&target.0, &link).unwrap();
    check_refused("link to a file");
    let after = std::fs::metadata(&target.0).unwrap();
    assert_eq!(std::fs::read(&target.0).unwrap(), precious, "the target's content changed");
    assert_eq!((after.len(), after.mode(), after.mtime()), (before.len(), before.mode(), before.mtime()));
    std::fs::remove_file(&link).unwrap();

    // 2. A valid segment of the same options (under another name): still refused.
    let real = Seg::new("symlink-real");
    let st = Store::create(&real.name, &small()).unwrap();
    st.set(b"k", b"real", Expiry::Never).unwrap();
    std::os::unix::fs::symlink(seg_path(&real.name), &link).unwrap();
    check_refused("link to a valid segment");
    assert_eq!(st.get(b"k").unwrap().unwrap().value, b"real");
    // destroy removes the link, not the segment it points to.
    assert!(Store::destroy(&s.name).unwrap());
    assert!(seg_path(&real.name).exists());

    // 3. A dangling link: nothing is created at its target.
    let missing = std::env::temp_dir().join(format!("gds-sec-missing-{}", std::process::id()));
    let _ = std::fs::remove_file(&missing);
    std::os::unix::fs::symlink(&missing, &link).unwrap();
    check_refused("dangling link");
    assert!(!missing.exists(), "a file was created at the dangling link's target");
}

/// A file of ours at the name whose size does not match its header is refused.
#[test]
fn wrong_size_file_is_refused() {
    let s = Seg::new("wrongsize");
    drop(Store::create(&s.name, &small()).unwrap());
    let f = RawFile::open(&s.name);
    let len = f.file_len();
    for bad in [len + 4096, len - 4096, 4096, len * 2] {
        f.file.set_len(bad).unwrap();
        for (op, r) in [("attach", Store::attach(&s.name)), ("open", Store::open(&s.name, &small()))] {
            match &r {
                Err(e @ Error::Corrupt { what: "file size", .. }) => {
                    assert!(e.to_string().contains(&bad.to_string()), "{e}")
                }
                // Grown with holes: refused before it is mapped (a hole could SIGBUS).
                Err(e @ Error::Unreserved { size, .. }) if *size == bad => {
                    assert!(e.to_string().contains(&bad.to_string()), "{e}")
                }
                _ => panic!("{op} of a {bad}-byte file (header says {len}): {}", describe(&r)),
            }
        }
        assert_eq!(f.file_len(), bad, "the file was resized");
    }
}

/// Runs `f` on a helper thread; fails if it does not return within `limit` (an open of a
/// FIFO that blocks would hang the test otherwise).
fn within<T: Send + 'static>(what: &str, limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("{what}: did not return within {limit:?}"))
}

/// Directories, FIFOs, sockets and device nodes at the name are refused (and left alone).
#[test]
fn non_regular_files_are_refused() {
    let s = Seg::new("nonregular");
    let p = seg_path(&s.name);
    let try_all = |what: &str| {
        for op in ["attach", "attach_group", "open"] {
            let name = s.name.clone();
            let r = within(&format!("{what}: {op}"), Duration::from_secs(10), move || match op {
                "attach" => Store::attach(&name).map(drop),
                "attach_group" => Store::attach_group(&name).map(drop),
                _ => Store::open(&name, &small()).map(drop),
            });
            match &r {
                Err(Error::Refused { reason, .. }) => {
                    assert!(reason.contains("not a regular file"), "{reason}")
                }
                // Opening a directory or a socket read-write fails in the kernel already.
                Err(Error::Io { .. }) => {}
                _ => panic!("{what}: {op}: expected Refused (or Io), got {r:?}"),
            }
        }
    };

    std::fs::create_dir(&p).unwrap();
    std::fs::write(p.join("inside"), b"x").unwrap();
    try_all("directory");
    assert_eq!(std::fs::read(p.join("inside")).unwrap(), b"x");
    assert!(Store::destroy(&s.name).is_err(), "destroy removed a directory");
    std::fs::remove_dir_all(&p).unwrap();

    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "{}", std::io::Error::last_os_error());
    try_all("fifo");
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&std::fs::symlink_metadata(&p).unwrap().file_type()));
    std::fs::remove_file(&p).unwrap();

    let sock = std::os::unix::net::UnixListener::bind(&p).unwrap();
    try_all("unix socket");
    drop(sock);
    std::fs::remove_file(&p).unwrap();

    if is_root() {
        // SAFETY: a valid NUL-terminated path; makedev has no preconditions.
        let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
        if r == 0 {
            try_all("character device (/dev/null's numbers)");
            std::fs::remove_file(&p).unwrap();
        } else {
            println!("mknod not permitted here ({}): device case skipped", std::io::Error::last_os_error());
        }
    }
}

const NOBODY: u32 = 65534;

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
}

/// A segment owned by another user is refused by attach, attach_group (it is not
/// group-shared) and open. Needs root (to chown); skipped otherwise.
#[test]
fn segment_of_another_owner_is_refused() {
    if !is_root() {
        println!("SKIPPED: needs root to chown a segment to another user");
        return;
    }
    let s = Seg::new("owner");
    let st = Store::create(&s.name, &small()).unwrap();
    st.set(b"k", b"v", Expiry::Never).unwrap();
    drop(st);
    let p = seg_path(&s.name);
    chown(&p, NOBODY, NOBODY);
    for (op, r) in [
        ("attach", Store::attach(&s.name)),
        ("attach_group", Store::attach_group(&s.name)),
        ("open", Store::open(&s.name, &small())),
    ] {
        match &r {
            Err(e @ Error::Refused { reason, .. }) => {
                assert!(reason.contains(&format!("uid {NOBODY}")), "{op}: {e}");
            }
            _ => panic!("{op} of a segment owned by uid {NOBODY}: expected Refused, got {}", describe(&r)),
        }
    }
    // Owned by us again, it attaches: the refusal was about the owner only.
    chown(&p, 0, 0);
    assert_eq!(Store::attach(&s.name).unwrap().get(b"k").unwrap().unwrap().value, b"v");
}

/// Group sharing (attach_group, or open with mode 0660) accepts another user's segment only
/// if it is shared with *our* group and with no one else. /dev/shm is world-writable: any user
/// can create the name first (squat it) with a valid-looking segment of their own group, or
/// world-readable, and would then read every session written into it. Needs root.
#[test]
fn group_attach_refuses_world_accessible_or_foreign_group_segments() {
    if !is_root() {
        println!("SKIPPED: needs root to chown a segment to another user");
        return;
    }
    let group = Options { mode: 0o660, ..small() };
    let s = Seg::new("groupsquat");
    let p = seg_path(&s.name);
    let fresh = || {
        let _ = Store::destroy(&s.name);
        drop(Store::create(&s.name, &group).unwrap());
    };
    // Positive control: another user's 0660 segment of our group (gid 0) is accepted.
    fresh();
    chown(&p, NOBODY, 0);
    let st = Store::attach_group(&s.name);
    assert!(st.is_ok(), "a group-shared segment of our own group was refused: {}", describe(&st));
    drop(st);

    let mut accepted = Vec::new();
    for (what, gid, mode) in [
        ("mode 0666 (world read/write), owner and group nobody", NOBODY, 0o666),
        ("mode 0666 (world read/write), our group", 0, 0o666),
        ("mode 0664 (world readable), our group", 0, 0o664),
        ("mode 0660, owner and group nobody (we are not in that group)", NOBODY, 0o660),
    ] {
        fresh();
        chown(&p, NOBODY, gid);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        for (op, r) in [
            ("attach_group", Store::attach_group(&s.name)),
            ("open(mode 0660)", Store::open(&s.name, &group)),
        ] {
            match r {
                Err(Error::Refused { .. }) => {}
                Ok(st) => {
                    st.set(b"session", b"secret", Expiry::Never).unwrap();
                    accepted.push(format!("{op} ACCEPTED a segment with {what} and stored a session in it"));
                }
                Err(e) => {
                    accepted.push(format!("{op} of a segment with {what}: expected Refused, got {e:?}"))
                }
            }
        }
    }
    assert!(accepted.is_empty(), "group sharing trusts segments it must not:\n{}", accepted.join("\n"));
}

/// Hash of a file's content (to check it was not modified).
fn digest(p: &Path) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&std::fs::read(p).unwrap())
}

/// A file already at the name that is not a segment made by this build (garbage, zeros, empty,
/// garbage with a valid-looking stamp) makes open fail: it is neither used nor overwritten.
#[test]
fn squatted_name_is_not_used() {
    let opts = small();
    let size = geom(&opts).segment_bytes;
    let mut rng = Rng::new(seed_from_env("GDS_SEED"));
    let garbage: Vec<u8> = (0..size).map(|_| rng.next_u64() as u8).collect();
    let mut stamped = garbage.clone();
    stamped[24..32].copy_from_slice(&READY.to_ne_bytes());
    let mut magic_stamped = stamped.clone();
    magic_stamped[0..8].copy_from_slice(&MAGIC.to_ne_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random garbage", garbage),
        ("zeros", vec![0u8; size as usize]),
        ("an empty file", Vec::new()),
        ("garbage with the READY stamp", stamped),
        ("garbage with the magic and the READY stamp", magic_stamped),
    ];
    let threads: Vec<_> = cases
        .into_iter()
        .enumerate()
        .map(|(n, (what, content))| {
            let opts = opts.clone();
            std::thread::spawn(move || {
                let s = Seg::new(&format!("squat{n}"));
                let p = seg_path(&s.name);
                std::fs::write(&p, &content).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
                let d = digest(&p);
                let r = Store::open(&s.name, &opts);
                match &r {
                    Err(Error::Corrupt { .. } | Error::NotReady { .. } | Error::Incompatible { .. }) => {}
                    _ => panic!("open over {what}: expected an error, got {}", describe(&r)),
                }
                let msg = r.unwrap_err().to_string();
                assert!(msg.contains("destroy"), "{what}: the message does not say what to do: {msg}");
                assert_eq!(digest(&p), d, "open over {what} modified the file");
                assert!(Store::attach(&s.name).is_err(), "attach over {what}");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // A valid segment made with other options is refused by open as incompatible.
    let s = Seg::new("squat-other");
    drop(Store::create(&s.name, &Options { max_entries: 777, ..small() }).unwrap());
    assert!(matches!(Store::open(&s.name, &small()), Err(Error::Incompatible { .. })));
}

/// Every segment gets its own random hash seed: the same keys land in different slots, so a
/// key set crafted to collide in one segment does not collide in the next.
#[test]
fn hash_seeds_differ_between_segments() {
    let opts = small();
    let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("user-session-{i}").into_bytes()).collect();
    let mut runs = Vec::new();
    for n in 0..3 {
        let s = Seg::new(&format!("seed{n}"));
        let st = Store::create(&s.name, &opts).unwrap();
        for k in &keys {
            st.set(k, b"v", Expiry::Never).unwrap();
        }
        let mut slots = std::collections::HashMap::new();
        st.scan(|e| {
            slots.insert(e.key, e.slot);
        })
        .unwrap();
        let seq: Vec<u32> = keys.iter().map(|k| slots[k]).collect();
        let f = RawFile::open(&s.name);
        runs.push((seq, f.word(H_HASH_SEED), st.info().dataset_id));
    }
    for a in 0..runs.len() {
        for b in a + 1..runs.len() {
            let same = runs[a].0.iter().zip(&runs[b].0).filter(|(x, y)| x == y).count();
            assert!(
                same < 20,
                "segments {a} and {b}: {same} of 200 keys in the same slot: the seed is not random"
            );
            assert_ne!(runs[a].1, runs[b].1, "segments {a} and {b} have the same hash seed");
            assert_ne!(runs[a].2, runs[b].2, "segments {a} and {b} have the same dataset id");
        }
    }
    for (seq, seed, _) in &runs {
        assert_ne!(*seed, 0);
        assert!(seq.iter().collect::<std::collections::HashSet<_>>().len() == 200);
    }
}

const RACE_SEG: &str = "GDS_RACE_SEG";

/// Child role of the create-or-attach race: waits for the common start time, opens the store,
/// writes and reads back its own key, prints the dataset id it got.
#[test]
#[ignore = "child role of create_or_attach_race"]
fn race_child() {
    let Ok(name) = std::env::var(RACE_SEG) else { return };
    let id: u32 = std::env::var("GDS_RACE_ID").unwrap().parse().unwrap();
    let start: u128 = std::env::var("GDS_RACE_START").unwrap().parse().unwrap();
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
    while now() < start {
        std::hint::spin_loop();
    }
    let st = Store::open(&name, &small()).unwrap_or_else(|e| panic!("racer {id}: open: {e}"));
    let k = format!("racer-{id}");
    let v = make_value(k.as_bytes(), id, 1, 0, 64);
    st.set(k.as_bytes(), &v, Expiry::Never).unwrap();
    assert_eq!(st.get(k.as_bytes()).unwrap().unwrap().value, v);
    println!("racer {id} dataset {:#x}", st.info().dataset_id);
}

/// Eight processes open the same fresh name at the same instant: exactly one creates it,
/// everyone ends up in that one segment, and every write is visible afterwards.
#[test]
fn create_or_attach_race() {
    const RACERS: u32 = 8;
    for round in 0..4 {
        let s = Seg::new(&format!("race{round}"));
        let start =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() + 400_000;
        let children: Vec<_> = (0..RACERS)
            .map(|id| {
                let cmd = child_command(
                    "race_child",
                    &[
                        (RACE_SEG, s.name.clone()),
                        ("GDS_RACE_ID", id.to_string()),
                        ("GDS_RACE_START", start.to_string()),
                    ],
                );
                std::thread::spawn(move || run_child(cmd, Duration::from_secs(30)))
            })
            .collect();
        let mut datasets = std::collections::HashSet::new();
        for (id, c) in children.into_iter().enumerate() {
            let run = c.join().unwrap();
            assert!(run.success(), "round {round}, racer {id}: {}", run.describe());
            let line = run.stdout.lines().find(|l| l.starts_with("racer")).expect("racer report");
            datasets.insert(line.rsplit(' ').next().unwrap().to_string());
        }
        assert_eq!(
            datasets.len(),
            1,
            "round {round}: the racers ended up in different segments: {datasets:?}"
        );
        let entries: Vec<_> = std::fs::read_dir(gardenstate::shm_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&s.name))
            .collect();
        assert_eq!(entries.len(), 1, "round {round}: files left at the name: {entries:?}");
        let st = Store::attach(&s.name).unwrap();
        assert_eq!(format!("{:#x}", st.info().dataset_id), *datasets.iter().next().unwrap());
        for id in 0..RACERS {
            let k = format!("racer-{id}");
            let e = st.get(k.as_bytes()).unwrap().unwrap_or_else(|| panic!("round {round}: {k} missing"));
            assert_eq!(e.value, make_value(k.as_bytes(), id, 1, 0, 64));
        }
        assert_eq!(st.stats().live_entries, RACERS as u64);
        assert_eq!(mode_of(&seg_path(&s.name)), 0o600);
        assert_healthy(&st);
    }
}
