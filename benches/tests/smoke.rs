//! Runs the harness in `--smoke` mode (10k sessions, few operations) and checks that the
//! report has every section and the plots exist. Never checks timings: the machine is
//! shared and noisy. Peers whose servers are not installed are skipped by the harness
//! (with the reason in the report), not failed; `--no-install` keeps this test from
//! calling apt-get (set GARDENSTATE_BENCH_INSTALL=1 to let it install them).

use std::process::Command;

#[test]
fn smoke_run_writes_every_section() {
    let out = std::env::temp_dir().join(format!("gds-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.arg("--smoke").arg("--out").arg(&out);
    if std::env::var_os("GARDENSTATE_BENCH_INSTALL").is_none() {
        cmd.arg("--no-install");
    }
    let run = cmd.output().expect("run the harness");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "harness failed:\n{stderr}\n{stdout}");
    assert!(stdout.contains("| system | operation |"), "no table on stdout:\n{stdout}");

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json"))
            .expect("valid JSON");
    for section in
        ["machine", "method", "peers", "measurements", "scaling", "memory", "replication", "goals", "config"]
    {
        assert!(json.get(section).is_some(), "report.json lacks {section}");
    }
    let measurements = json["measurements"].as_array().expect("measurements");
    let has = |system: &str, op: &str| measurements.iter().any(|m| m["system"] == system && m["op"] == op);
    for op in ["get", "set", "delete", "lock+release", "get (miss)", "insert"] {
        assert!(has("gardenstate", op), "no gardenstate {op}");
    }
    assert!(has("floor", "copy"));
    for size in [64, 1024, 16384] {
        assert!(measurements.iter().any(|m| m["system"] == "gardenstate" && m["value_bytes"] == size));
    }
    for m in measurements {
        for field in ["p50_ns", "p99_ns", "p999_ns", "ops_per_sec", "cdf"] {
            assert!(m.get(field).is_some(), "measurement without {field}: {m}");
        }
    }
    assert!(
        json["scaling"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["system"] == "gardenstate" && s["worker_kind"] == "process")
    );
    // Replication is measured if the replicator binary is built next to the harness, or
    // skipped with the reason (the smoke run never builds it).
    let status = json["replication"]["status"].as_str().expect("replication status");
    assert!(status == "measured" || status.starts_with("skipped: "), "replication status {status:?}");
    if status == "measured" {
        for field in ["sustained_set_per_sec", "standby_lag_p50_ms", "standby_lag_p99_ms", "resync_seconds"] {
            assert!(json["replication"][field].is_number(), "replication lacks {field}");
        }
    }
    println!("replication: {status}");
    assert!(json["goals"].as_array().unwrap().len() >= 8);

    // Every peer is either measured or skipped with a reason.
    for peer in json["peers"].as_array().unwrap() {
        let name = peer["name"].as_str().unwrap();
        match peer["skipped"].as_str() {
            Some(why) => {
                assert!(!why.is_empty());
                println!("peer {name} skipped: {why}");
            }
            None => assert!(
                name == "replication" || measurements.iter().any(|m| m["system"] == name),
                "peer {name} reported measured but has no measurements"
            ),
        }
    }
    for name in ["lmdb", "dashmap", "redis", "memcached"] {
        assert!(
            json["peers"].as_array().unwrap().iter().any(|p| p["name"] == name),
            "peer {name} not reported"
        );
    }

    for svg in ["latency_cdf_get.svg", "latency_cdf_set.svg", "latency_cdf_gardenstate.svg", "throughput.svg"]
    {
        let text = std::fs::read_to_string(out.join(svg)).unwrap_or_else(|e| panic!("{svg}: {e}"));
        assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"), "{svg} is not an SVG");
        assert!(text.contains("<polyline") || text.contains("<rect x="), "{svg} draws nothing");
    }
    let _ = std::fs::remove_dir_all(&out);
}
