//! The bench tool works: every scenario at a tiny count (benchmarks are not tests; this only
//! proves the tool runs, counts what was acknowledged and renders its report).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[test]
fn every_scenario_runs_at_a_tiny_count_and_renders_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    let docs = dir.path().join("docs");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_barnabas-bench"))
        .args(["--count", "1000", "--size", "100", "--inflight", "64"])
        .args(["--rate", "1000", "--latency-count", "200", "--idle", "200"])
        .args(["--long-polls", "20"])
        .arg("--json")
        .arg(&json)
        .arg("--report")
        .arg(&docs)
        .output()
        .expect("run barnabas-bench");
    let shown = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{shown}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(r["ready_ms"].as_f64().unwrap() > 0.0, "{r}");

    let rows = r["throughput"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "direct",
            "direct-mqtt-records",
            "mqtt-qos0",
            "mqtt-qos1",
            "mqtt-qos2",
            "http-produce-1",
            "http-produce-100",
            "http-consume",
            "amqp-send",
            "mosquitto-qos0",
            "mosquitto-qos1"
        ]
    );
    for row in rows {
        assert_eq!(row["messages"], 1000, "{row}");
        assert!(row["msgs_per_s"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["server_rss_mib"].as_f64().unwrap() > 1.0, "{row}");
        let name = row["scenario"].as_str().unwrap();
        // A consumer's rate has no producer to be divided by.
        if name == "direct" || name.starts_with("mosquitto") || name == "http-consume" {
            assert!(row["ratio"].is_null(), "{row}");
        } else {
            assert_eq!(row["baseline"], "direct", "{row}");
            assert!(row["ratio"].as_f64().unwrap() > 0.0, "{row}");
        }
        if name == "mqtt-qos0" || name == "mqtt-qos1" {
            assert!(row["vs_mosquitto"].as_f64().unwrap() > 0.0, "{row}");
        }
        if name.starts_with("mqtt-") {
            assert!(row["vs_same_records"].as_f64().unwrap() > 0.0, "{row}");
        } else {
            assert!(row["vs_same_records"].is_null(), "{row}");
        }
    }

    let latency = r["latency"].as_array().unwrap();
    let kinds: Vec<String> = latency
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["protocol"].as_str().unwrap(),
                l["kind"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "direct ack",
            "direct receive",
            "direct ack, 3 groups fetching",
            "direct receive, 3 groups",
            "mqtt-qos1 ack",
            "mqtt-qos1 receive",
            "amqp ack",
            "amqp receive",
            "http ack",
            "http-long-poll receive (long poll)"
        ]
    );
    for l in latency {
        // Each of the three fetching groups receives every message.
        let samples = match l["kind"].as_str().unwrap() {
            "receive, 3 groups" => 600,
            "receive (long poll)" => 20,
            _ => 200,
        };
        assert_eq!(l["count"], samples, "every paced message measured: {l}");
        let (p50, p99, max) = (
            l["p50_ms"].as_f64().unwrap(),
            l["p99_ms"].as_f64().unwrap(),
            l["max_ms"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{l}");
    }

    let conns = r["connections"].as_array().unwrap();
    let servers: Vec<&str> = conns
        .iter()
        .map(|c| c["server"].as_str().unwrap())
        .collect();
    assert_eq!(servers, ["barnabas", "mosquitto"]);
    for c in conns {
        assert_eq!(c["connections"], 200, "{c}");
        assert!(c["connack_p99_ms"].as_f64().unwrap() > 0.0, "{c}");
        assert!(!c["rss_points"].as_array().unwrap().is_empty(), "{c}");
    }

    let md = std::fs::read_to_string(docs.join("benchmarks.md")).unwrap();
    assert!(
        md.contains("mqtt-qos1") && md.contains("<!-- bench:end -->"),
        "{md}"
    );
    for svg in ["throughput.svg", "latency.svg", "connections.svg"] {
        let text = std::fs::read_to_string(docs.join("bench").join(svg)).unwrap();
        assert!(text.contains("<svg"), "{svg}");
    }
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("÷ direct") && table.contains("mqtt-qos1"),
        "{table}"
    );
}
