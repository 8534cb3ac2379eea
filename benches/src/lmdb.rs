//! LMDB (the C library, vendored and built by `lmdb-master-sys`, through `heed`): the same
//! keys and values, one transaction per operation (a read transaction per get, a committed
//! write transaction per put), default (durable) flags, the environment on /dev/shm (tmpfs).

use crate::report::{Measurement, Memory, Section};
use crate::workload::{Clock, Limit, Rng, SEED, Summary, key, run, value};
use heed::types::Bytes;
use heed::{CommitOrAbort, Database, EnvOpenOptions};
use std::hint::black_box;

/// Removes the environment directory on drop.
struct Dir(std::path::PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn bench(cfg: &crate::Config, clock: &Clock, value_len: usize, sessions: u64) -> Result<Section, String> {
    let err = |e: heed::Error| format!("lmdb: {e}");
    let dir = Dir(std::path::PathBuf::from(format!("/dev/shm/gds-bench-lmdb-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).map_err(|e| format!("{}: {e}", dir.0.display()))?;
    let map_size = (sessions as usize * (value_len + 32 + 64) * 2 + (64 << 20)).next_multiple_of(1 << 20);
    // SAFETY: heed requires that the environment is not opened twice in this process and
    // that its files are not modified by anything but LMDB: the directory is new, ours,
    // and opened once here.
    let env = unsafe { EnvOpenOptions::new().map_size(map_size).max_dbs(1).open(&dir.0) }.map_err(err)?;
    let w = env.write_txn().map_err(err)?;
    let db: Database<Bytes, Bytes> = env
        .create_databases_and_commit(w, |opener, w| -> Result<_, heed::Error> {
            Ok(CommitOrAbort::<_, ()>::Commit(opener.create_database::<Bytes, Bytes>(w, None)?))
        })
        .map_err(err)?
        .unwrap_commit();

    let v = value(value_len);
    let mut i = 0;
    while i < sessions {
        let mut w = env.write_txn().map_err(err)?;
        for j in i..(i + 10_000).min(sessions) {
            db.put(&mut w, &key(j), &v).map_err(err)?;
        }
        w.commit().map_err(err)?;
        i += 10_000;
    }

    let mut rng = Rng::new(SEED);
    let mut buf = vec![0u8; value_len];
    let get = run(
        Limit::Ops(cfg.ops / 4),
        || key(rng.below(sessions)),
        |k| {
            let r = env.read_txn().expect("read txn");
            let got = db.get(&r, &k).expect("get").expect("a loaded session");
            buf.copy_from_slice(got);
            black_box(&buf);
        },
    );
    let mut rng = Rng::new(SEED);
    let put = run(
        Limit::Ops((cfg.ops / 20).max(1000)),
        || key(rng.below(sessions)),
        |k| {
            let mut w = env.write_txn().expect("write txn");
            db.put(&mut w, &k, &v).expect("put");
            w.commit().expect("commit");
        },
    );
    let disk = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(dir.0.join("data.mdb")).map(|m| m.blocks() * 512).unwrap_or(0)
    };
    let m =
        |op, r| Measurement::new("lmdb", op, value_len, sessions, 1, "thread", 1, Summary::of(clock, &[r]));
    Ok(Section {
        detail: {
            let v = heed::lmdb_version();
            format!(
                "LMDB {}.{}.{} (C, vendored by the heed crate), one transaction per operation, default durable flags, on /dev/shm",
                v.major, v.minor, v.patch
            )
        },
        measurements: vec![m("get", get), m("set", put)],
        memory: vec![Memory::new("lmdb", value_len, sessions, "data.mdb bytes on tmpfs", disk)],
        scaling: Vec::new(),
    })
}
