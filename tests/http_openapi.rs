//! Strimzi's own openapi.json as the contract: schemathesis (PyPI, property-based) generates
//! requests from it — examples, coverage, fuzzing and the stateful phase, every check — and
//! runs them against a gateway with its embedded broker. Any finding fails the test, except
//! the cases docs/http.md lists under "Where barnabas deliberately differs" (the document
//! contradicting itself or its bridge, or interface.md deciding otherwise), which
//! tests/http/schemathesis_hooks.py lets through by operation, check and exact condition.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::Command;

use common::gateway::{self, JSON, V2};
use serde_json::json;

/// The consumer instance and topic the hooks aim the instance operations at (also named in
/// tests/http/schemathesis.toml).
const GROUP: &str = "st-fixture-group";
const INSTANCE: &str = "st-fixture";
const TOPIC: &str = "st-fixture-topic";

#[tokio::test(flavor = "multi_thread")]
async fn strimzi_openapi_document_holds_under_schemathesis() {
    let gw = gateway::start(|c| {
        // What the run creates and leaves behind goes again within the run.
        c.http.consumer_idle_timeout_ms = barnabas::config::Millis(20_000);
        c.limits.max_consumers_per_principal = 10_000;
        c.kafka.default_partitions = 2;
    })
    .await;

    // Test data: a topic with records (a keyless one, a header with a null value) and a json
    // consumer instance subscribed to it, so the instance operations get past 404.
    let a = gw
        .post_json("/admin/topics", JSON, &json!({"topic_name": TOPIC}))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let a = gw
        .post_json(
            &format!("/topics/{TOPIC}"),
            JSON,
            &json!({"records": [
                {"key": "k", "value": {"n": 1}, "headers": [{"key": "h", "value": "aGk="}, {"key": "nothing", "value": null}]},
                {"value": 2},
                {"key": [1], "value": null, "partition": 1},
            ]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = gw
        .post_json(
            &format!("/consumers/{GROUP}"),
            V2,
            &json!({"name": INSTANCE, "format": "json", "auto.offset.reset": "earliest"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = gw
        .post_json(
            &format!("/consumers/{GROUP}/instances/{INSTANCE}/subscription"),
            V2,
            &json!({"topics": [TOPIC]}),
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.text);

    let dir = common::workspace_root().join("tests/http");
    let base = gw.base.clone();
    // Whatever schemathesis writes goes to a scratch directory, not the repository.
    let scratch = tempfile::tempdir().unwrap();
    let cwd = scratch.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(common::python())
            .current_dir(cwd)
                .args(["-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"])
                .arg("--config-file")
                .arg(dir.join("schemathesis.toml"))
                .arg("run")
                .arg(dir.join("strimzi-openapi.json"))
                .args(["--url", &base])
                // Every check; the four built-ins below run as the hooks' `*_per_contract`.
                .args(["--checks", "all"])
                .args([
                    "--exclude-checks",
                    "status_code_conformance,response_schema_conformance,positive_data_acceptance,negative_data_rejection",
                ])
                .args(["--phases", "examples,coverage,fuzzing,stateful"])
                .arg("--no-color")
                .env("SCHEMATHESIS_HOOKS", dir.join("schemathesis_hooks.py"))
                .env("BARNABAS_ST_BASE", &base)
                .env("BARNABAS_ST_GROUP", GROUP)
                .env("BARNABAS_ST_INSTANCE", INSTANCE)
                .env("BARNABAS_ST_TOPIC", TOPIC)
                .output()
                .expect("run schemathesis")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found what docs/http.md does not list ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // It ran what it was asked to: every operation, every phase, and the stateful one for real.
    for needle in [
        "25 selected / 25 total",
        "✅ Examples",
        "✅ Coverage",
        "✅ Fuzzing",
        "✅ Stateful",
    ] {
        assert!(stdout.contains(needle), "no '{needle}' in:\n{stdout}");
    }
    let generated = stdout
        .lines()
        .find_map(|l| l.trim().strip_suffix(" passed")?.split_once(" generated, "))
        .and_then(|(g, p)| Some((g.parse::<u32>().ok()?, p.parse::<u32>().ok()?)));
    let Some((generated, passed)) = generated else {
        panic!("no 'N generated, N passed' line:\n{stdout}");
    };
    assert!(
        generated >= 500 && passed == generated,
        "{generated} generated, {passed} passed:\n{stdout}"
    );
    assert!(
        !stdout.contains("Missing test data"),
        "instance operations never got past 404:\n{stdout}"
    );
    gw.stop().await;
}
