//! The bench tool works: every scenario at a tiny count (benchmarks are not tests; this only
//! proves the tool runs and counts what was acknowledged).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[test]
fn every_scenario_runs_at_a_tiny_count() {
    let dir = std::env::temp_dir().join(format!("barnabas-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("results.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_barnabas-bench"))
        .args(["--count", "1000", "--size", "100", "--json"])
        .arg(&json)
        .output()
        .expect("run barnabas-bench");
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "direct",
            "mqtt-qos0",
            "mqtt-qos1",
            "mqtt-qos2",
            "http-1",
            "http-100",
            "amqp"
        ]
    );
    for r in &rows {
        assert_eq!(r["messages"], 1000, "{r}");
        assert!(r["msgs_per_s"].as_f64().unwrap() > 0.0);
        assert!(r["ratio_to_direct"].as_f64().is_some());
    }
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("÷ direct") && table.contains("mqtt-qos1"),
        "{table}"
    );
}
