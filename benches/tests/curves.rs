//! Runs the bounded form of the curves (`harness --curves --smoke`: 10k and 100k sessions,
//! small segments, 2 minutes of churn; about 2.5 minutes) and checks that the report has every
//! curve, as a table and as an SVG that draws something. Never checks timings: the machine is
//! shared and noisy. Redis is skipped when it is not installed (`--no-install`), with the
//! reason in the report. `.ci/test.sh` runs it in a section of its own, so its time shows
//! there and `cargo test --workspace` stays as fast as before.

use std::process::Command;

#[test]
#[ignore = "bounded curves, about 2.5 minutes: run by .ci/test.sh's own section (cargo test -p gardenstate-benches --test curves -- --ignored)"]
fn bounded_curves_write_every_curve() {
    let out = std::env::temp_dir().join(format!("gds-bench-curves-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.args(["--smoke", "--curves", "--out"]).arg(&out);
    if std::env::var_os("GARDENSTATE_BENCH_INSTALL").is_none() {
        cmd.arg("--no-install");
    }
    let run = cmd.output().expect("run the harness");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "harness --curves failed:\n{stderr}\n{stdout}");

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("curves.json")).expect("curves.json"))
            .expect("valid JSON");
    let curves = json["curves"].as_array().expect("curves");
    let series = |id: &str| -> Vec<String> {
        let c = curves.iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no curve {id}"));
        c["series"].as_array().unwrap().iter().map(|s| s[0].as_str().unwrap().to_string()).collect()
    };
    for (id, wanted) in [
        (
            "curve_sessions",
            &[
                "gardenstate get p99",
                "gardenstate set p99",
                "gardenstate miss p99",
                "gardenstate delete p99",
                "floor copy p99",
            ][..],
        ),
        ("curve_sessions_ratio", &["get p50", "set p50"][..]),
        ("curve_value_size", &["gardenstate get p50", "floor copy p50"][..]),
        ("curve_value_size_ratio", &["get p50"][..]),
        ("curve_fill", &["get 1 KiB p99", "set mix of 40 p99", "floor copy 1 KiB p50"][..]),
        ("curve_workers", &["gardenstate get", "floor copy", "spin (computation)"][..]),
        ("curve_workers_scaling", &["gardenstate set"][..]),
        ("curve_workers_p99", &["gardenstate get p99"][..]),
        ("curve_churn_p99", &["login (insert) p99", "read p99", "update p99", "logout (delete) p99"][..]),
        ("curve_churn_memory", &["heap blocks in use"][..]),
        ("curve_churn_sweep", &["timed sweep: ns per slot examined"][..]),
    ] {
        let have = series(id);
        for w in wanted {
            assert!(have.iter().any(|h| h == w), "{id} lacks the series {w:?}: {have:?}");
        }
        let svg = std::fs::read_to_string(out.join(format!("{id}.svg")))
            .unwrap_or_else(|e| panic!("{id}.svg: {e}"));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{id}.svg is not an SVG");
        assert!(svg.contains("<polyline") && svg.contains("<circle"), "{id}.svg draws nothing");
    }
    // Every point of the sessions curve has its floor.
    let sessions = curves.iter().find(|c| c["id"] == "curve_sessions").unwrap();
    let xs = |name: &str| -> Vec<f64> {
        sessions["series"].as_array().unwrap().iter().find(|s| s[0] == name).unwrap()[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_f64().unwrap())
            .collect()
    };
    assert_eq!(xs("gardenstate get p50"), vec![10_000.0, 100_000.0]);
    assert_eq!(xs("floor copy p50"), xs("gardenstate get p50"));
    let facts: Vec<String> =
        json["facts"].as_array().unwrap().iter().map(|f| f[0].as_str().unwrap().to_string()).collect();
    for f in [
        "largest value the default options allow",
        "1 KiB: sessions per MiB of capacity at the first Full",
        "mix of 40: sessions per MiB of capacity at the first Full",
        "1 KiB: failing insert once full, p50 / p99",
        "churn",
    ] {
        assert!(facts.iter().any(|h| h == f), "no fact {f:?}: {facts:?}");
    }
    let md = std::fs::read_to_string(out.join("curves.md")).expect("curves.md");
    assert!(md.contains("| live sessions |") && md.contains("load average"), "curves.md lacks its tables");
    let _ = std::fs::remove_dir_all(&out);
}
