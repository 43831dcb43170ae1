//! The whole gateway in-process (embedded broker, HTTP on an ephemeral port) and a small
//! HTTP client for it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use barnabas::{
    config::{Config, OFF},
    run::{EmbeddedPlan, Gateway, Plan},
};
use reqwest::{header::HeaderMap, Client, StatusCode};
use serde_json::Value;

use super::free_addr;

pub const JSON: &str = "application/vnd.kafka.json.v2+json";
pub const BINARY: &str = "application/vnd.kafka.binary.v2+json";
pub const TEXT: &str = "application/vnd.kafka.text.v2+json";
pub const V2: &str = "application/vnd.kafka.v2+json";

pub struct TestGateway {
    pub gateway: Gateway,
    /// The Apache Kafka broker of this gateway under `BARNABAS_TEST_KAFKA=apache`.
    pub apache: Option<super::apache::ApacheKafka>,
    pub base: String,
    pub kafka: String,
    pub client: Client,
}

/// Starts a gateway with its own broker (embedded; Apache Kafka under
/// `BARNABAS_TEST_KAFKA=apache`); `tweak` adjusts the config first.
pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestGateway {
    if super::apache::selected() {
        let apache = super::apache::ApacheKafka::start();
        let mut gw = start_on(Some(apache.bootstrap.clone()), tweak).await;
        gw.apache = Some(apache);
        return gw;
    }
    start_on(None, tweak).await
}

/// Starts a gateway against a broker the test controls (`bootstrap`), or its own embedded one.
pub async fn start_on(bootstrap: Option<String>, tweak: impl FnOnce(&mut Config)) -> TestGateway {
    if std::env::var_os("RUST_LOG").is_some() {
        barnabas::logging::init(barnabas::cli::LogFormat::Text);
    }
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".into();
    config.mqtt.listen = "127.0.0.1:0".into();
    config.amqp.listen = OFF.into();
    if bootstrap.is_some() {
        // One test broker: a `tweak` for a cluster sets more.
        config.kafka.default_replication_factor = 1;
    }
    tweak(&mut config);
    let kafka_addr = free_addr();
    let (embedded, kafka) = match bootstrap {
        Some(b) => {
            config.kafka.bootstrap_servers = b.clone();
            (None, b)
        }
        None => (
            Some(EmbeddedPlan {
                listen: kafka_addr,
                advertised: None,
                data_dir: None,
                discard: false,
            }),
            kafka_addr.to_string(),
        ),
    };
    let plan = Plan { config, embedded };
    let gateway = match Gateway::start(plan).await {
        Ok(g) => g,
        Err(e) => panic!("gateway did not start: {e:?}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !gateway.readiness().is_ready() {
        assert!(Instant::now() < deadline, "gateway not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let base = format!("http://{}", gateway.http_addr().unwrap());
    TestGateway {
        gateway,
        apache: None,
        base,
        kafka,
        client: Client::new(),
    }
}

/// An answer: status, headers, body parsed as JSON (Null when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Answer {
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts an error answer: this status, the JSON error shape, a message, with the
    /// content type of every error but `DELETE …/subscription`'s (`application/vnd.kafka.v2+json`).
    pub fn assert_error(&self, status: u16) -> &Self {
        self.assert_error_as(status, V2)
    }

    /// [`Self::assert_error`] with this content type.
    pub fn assert_error_as(&self, status: u16, content_type: &str) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.content_type(), content_type, "{}", self.text);
        assert_eq!(self.json["error_code"], status, "error body: {}", self.text);
        assert!(
            self.json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "message: {}",
            self.text
        );
        self
    }
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        text,
        json,
    }
}

impl TestGateway {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str, accept: Option<&str>) -> Answer {
        let mut req = self.client.get(self.url(path));
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        answer(req.send().await.unwrap()).await
    }

    pub async fn post(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Answer {
        let mut req = self.client.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        answer(req.send().await.unwrap()).await
    }

    pub async fn post_json(&self, path: &str, content_type: &str, body: &Value) -> Answer {
        self.post(path, Some(content_type), body.to_string()).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        answer(self.client.delete(self.url(path)).send().await.unwrap()).await
    }

    /// Creates a consumer instance; returns its base path (`/consumers/g/instances/n`).
    pub async fn consumer(&self, group: &str, body: Value) -> String {
        let a = self
            .post_json(&format!("/consumers/{group}"), V2, &body)
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        format!(
            "/consumers/{group}/instances/{}",
            a.json["instance_id"].as_str().unwrap()
        )
    }

    /// Polls `…/records` until `n` records arrived (bounded); returns them.
    pub async fn poll_records(&self, instance: &str, accept: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut out = Vec::new();
        while out.len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} records: {out:?}",
                out.len()
            );
            let a = self
                .get(&format!("{instance}/records?timeout=1000"), Some(accept))
                .await;
            assert_eq!(a.status, 200, "{}", a.text);
            out.extend(a.json.as_array().unwrap().iter().cloned());
        }
        out
    }

    /// The `/metrics` page.
    pub async fn metrics(&self) -> String {
        self.get("/metrics", None).await.text
    }

    /// Waits (at most 20 s) until `/metrics` has this exact sample line, e.g.
    /// `barnabas_mqtt_subscriptions 1`; `what` names the awaited state in the failure.
    pub async fn wait_for_metric(&self, line: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.metrics().await.contains(line) {
            assert!(Instant::now() < deadline, "{what}: no '{line}' within 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Graceful shutdown, which must finish promptly.
    pub async fn stop(self) {
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(30), self.gateway.shutdown())
            .await
            .expect("gateway shutdown hung");
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "shutdown took {:?}",
            started.elapsed()
        );
    }
}
