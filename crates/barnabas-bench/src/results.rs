//! What one bench run measured: the shape of `--json` and the input of the report (so a
//! report can be rendered again from a saved run without re-measuring).

use serde::{Deserialize, Serialize};

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunResults {
    /// The machine the run was on.
    pub machine: Machine,
    /// Versions of what was measured.
    pub versions: Versions,
    /// The bench command line, as typed.
    pub command: String,
    /// Embedded broker storage engine (`sqlite` or `null`), or `external`.
    pub engine: String,
    /// Payload bytes per message.
    pub payload_bytes: usize,
    /// Start of the gateway process to `/ready` answering 200, in milliseconds (`None` when
    /// the gateway was not started by the bench).
    pub ready_ms: Option<f64>,
    /// Throughput scenarios, in the order run.
    pub throughput: Vec<Throughput>,
    /// Latency scenarios.
    pub latency: Vec<Latency>,
    /// Idle-connection scenarios.
    pub connections: Vec<Connections>,
}

/// The machine.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cores: usize,
    /// Total memory, GiB.
    pub mem_gib: f64,
    /// CPU model name.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
}

/// Versions of what was measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Versions {
    /// barnabas.
    pub barnabas: String,
    /// The embedded broker (tansu).
    pub tansu: String,
    /// librdkafka (the gateway's and the direct baseline's Kafka client).
    pub librdkafka: String,
    /// mosquitto, when the mosquitto baseline ran.
    pub mosquitto: Option<String>,
}

/// One throughput scenario.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Throughput {
    /// Scenario name (`direct`, `mqtt-qos1`, `mosquitto-qos0`, …).
    pub scenario: String,
    /// The scenario its ratio divides by (`direct` or `mosquitto-qos0`/`-qos1`), if any.
    pub baseline: Option<String>,
    /// Messages acknowledged (or, for QoS 0, stored / sent).
    pub messages: usize,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Messages per second.
    pub msgs_per_s: f64,
    /// Payload megabytes per second.
    pub mb_per_s: f64,
    /// `msgs_per_s` ÷ the baseline's, measured in the same run.
    pub ratio: Option<f64>,
    /// For `mqtt-qos0`/`mqtt-qos1`: `msgs_per_s` ÷ mosquitto's at the same QoS, same run.
    #[serde(default)]
    pub vs_mosquitto: Option<f64>,
    /// For the `mqtt-*` rows: `msgs_per_s` ÷ `direct-mqtt-records` (a direct producer writing
    /// the same key and headers the MQTT front end writes), same run: the gateway's own share.
    #[serde(default)]
    pub vs_same_records: Option<f64>,
    /// For the gateway's HTTP rows: `msgs_per_s` ÷ the Strimzi Kafka Bridge's in the same
    /// scenario, same run (`--strimzi`).
    #[serde(default)]
    pub vs_strimzi: Option<f64>,
    /// The measured server process's CPU use during the scenario, in cores (1.0 = one core).
    pub server_cpu_cores: Option<f64>,
    /// The measured server process's peak resident memory during the scenario, MiB.
    pub server_rss_mib: Option<f64>,
}

impl Throughput {
    /// CPU seconds the server process spent per 100 000 messages (its cores × the time
    /// 100 000 messages took at the measured rate): the cost per message, apart from how
    /// many cores the box had left for it. With the embedded broker it includes the broker.
    pub fn server_cpu_s_per_100k(&self) -> Option<f64> {
        let cores = self.server_cpu_cores?;
        (self.msgs_per_s > 0.0).then(|| cores * 100_000.0 / self.msgs_per_s)
    }

    /// The row's ratios to the other baselines (÷ same records, ÷ mosquitto, ÷ Strimzi) and
    /// the server's CPU (cores, [`server_cpu_s_per_100k`](Self::server_cpu_s_per_100k)):
    /// columns that the printed table and the report both show in this order, each to two
    /// decimals.
    pub fn comparisons_and_cpu(&self) -> [Option<f64>; 5] {
        [
            self.vs_same_records,
            self.vs_mosquitto,
            self.vs_strimzi,
            self.server_cpu_cores,
            self.server_cpu_s_per_100k(),
        ]
    }
}

/// Latency of one protocol at a fixed publish rate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Protocol the messages were published with (`direct`, `mqtt-qos1`, `amqp`, `http`).
    pub protocol: String,
    /// `ack` (publish → the publisher's acknowledgement) or `receive` (publish → a
    /// subscriber of the same protocol got it).
    pub kind: String,
    /// Publish rate asked for, msgs/s.
    pub rate: u64,
    /// Samples recorded.
    pub count: u64,
    /// Percentiles in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest sample, ms.
    pub max_ms: f64,
    /// `p99_ms` minus the direct producer's `ack` p99 in the same run (for `ack` rows).
    pub p99_added_ms: Option<f64>,
    /// Points of the CDF: (fraction of samples at or below, ms), ascending.
    pub cdf: Vec<(f64, f64)>,
}

/// Idle MQTT connections held open against one server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Connections {
    /// `barnabas` or `mosquitto`.
    pub server: String,
    /// Connections held at the end.
    pub connections: usize,
    /// Server RSS before the first connection, MiB.
    pub rss_before_mib: f64,
    /// (connections open, server RSS MiB), measured along the way.
    pub rss_points: Vec<(usize, f64)>,
    /// (RSS at the end − RSS before) ÷ connections, KiB.
    pub kib_per_connection: f64,
    /// CONNECT → CONNACK, median, ms.
    pub connack_p50_ms: f64,
    /// CONNECT → CONNACK, 99th percentile, ms.
    pub connack_p99_ms: f64,
    /// CONNECT → CONNACK with one connection opened at a time (after the idle ones are
    /// held), median, ms: the server's own answer time, without the queue of a burst.
    #[serde(default = "not_measured")]
    pub connack_one_p50_ms: f64,
    /// The same, 99th percentile, ms.
    #[serde(default = "not_measured")]
    pub connack_one_p99_ms: f64,
}

/// A figure a saved run from before it existed does not have (shown as "–").
fn not_measured() -> f64 {
    f64::NAN
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cpu_per_100k_messages_is_cores_over_the_rate() {
        let t = Throughput {
            msgs_per_s: 120_000.0,
            server_cpu_cores: Some(1.2),
            ..Throughput::default()
        };
        let per_100k = t.server_cpu_s_per_100k().unwrap();
        assert!((per_100k - 1.0).abs() < 1e-9, "{per_100k}");
        let unsampled = Throughput {
            server_cpu_cores: None,
            ..t.clone()
        };
        assert_eq!(unsampled.server_cpu_s_per_100k(), None);
        let nothing = Throughput {
            msgs_per_s: 0.0,
            ..t
        };
        assert_eq!(nothing.server_cpu_s_per_100k(), None);
    }
}
