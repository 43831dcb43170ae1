//! `barnabas-bench`: each protocol's rate and latency through the `barnabas` binary, beside
//! a direct Kafka producer to the same broker and a local mosquitto, measured in the same
//! run (ratios, not absolute numbers, are what carries over between machines).
//!
//!   barnabas-bench [--count N] [--size BYTES] [--connections N] [--inflight N]
//!                  [--engine sqlite|null] [--rate N] [--latency-count N] [--idle N]
//!                  [--json FILE] [--report DOCS_DIR] [SCENARIO…]
//!
//! Throughput scenarios count a message when the gateway acknowledged it (PUBACK/PUBCOMP,
//! HTTP 200, AMQP `accepted`), i.e. after Kafka did; MQTT QoS 0 counts what Kafka stored.
//! The gateway runs as its own process (started here with its embedded broker, or given by
//! address) so its CPU and memory can be read from `/proc` apart from the load's.

mod connections;
mod http_consume;
mod latency;
mod report;
mod results;
mod scenarios;
mod server;

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use results::{RunResults, Throughput};
use server::{Sampler, ServerProcess};

/// The gateway's allocator (jemalloc, `crates/barnabas/src/main.rs`) in the load generator
/// too: the direct baseline runs in this process, and glibc's malloc would hold it back where
/// the gateway is not (records with headers are allocated per message).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "barnabas-bench",
    about = "Rates and latencies through barnabas beside a direct Kafka producer and mosquitto"
)]
struct Args {
    /// Messages per throughput scenario.
    #[arg(long, default_value_t = 200_000)]
    count: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Client connections for the MQTT and HTTP throughput scenarios.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Unacknowledged QoS 1/2 publishes per MQTT connection, and unsettled AMQP transfers.
    #[arg(long, default_value_t = 1000)]
    inflight: usize,
    /// Embedded broker storage: `sqlite` (stores, the default) or `null` (acknowledges and
    /// discards: the gateway's own cost without the broker's storage).
    #[arg(long, default_value = "sqlite")]
    engine: String,
    /// `e2e-latency`: publish rate per protocol, msgs/s.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// `e2e-latency`: messages per protocol.
    #[arg(long, default_value_t = 50_000)]
    latency_count: usize,
    /// `connections`: idle MQTT connections to hold.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// The `barnabas` binary to start (default: the one beside this binary).
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
    /// Use a running gateway instead of starting one: its Kafka bootstrap…
    #[arg(long, requires_all = ["http", "mqtt", "amqp"])]
    kafka: Option<String>,
    /// …its HTTP listener…
    #[arg(long)]
    http: Option<SocketAddr>,
    /// …its MQTT listener…
    #[arg(long)]
    mqtt: Option<SocketAddr>,
    /// …its AMQP listener…
    #[arg(long)]
    amqp: Option<SocketAddr>,
    /// …and its process id, to sample its CPU and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A running Strimzi Kafka Bridge on the same Kafka (`scripts/strimzi/run`): adds the
    /// `strimzi-http-produce-1`/`-100` scenarios, the same load through it.
    #[arg(long)]
    strimzi: Option<SocketAddr>,
    /// …and its process id, to sample its CPU and memory.
    #[arg(long, requires = "strimzi")]
    strimzi_pid: Option<u32>,
    /// Apache Kafka's jars (scripts/kafka/run fetches them into target/apache-kafka/libs):
    /// adds `direct-java`, the Kafka Java producer's `kafka-producer-perf-test` with the same
    /// producer settings, beside `direct` (librdkafka).
    #[arg(long)]
    kafka_libs: Option<PathBuf>,
    /// `http-long-poll`: samples per server.
    #[arg(long, default_value_t = 200)]
    long_polls: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Render the report into this docs directory (`benchmarks.md`'s generated section and
    /// `bench/*.svg`).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Re-render the report from a saved `--json` file instead of measuring.
    #[arg(long, requires = "report")]
    from_json: Option<PathBuf>,
    /// Scenarios to run (default: all).
    scenarios: Vec<String>,
}

/// Where the load goes.
pub struct Target {
    /// Kafka bootstrap of the broker the gateway uses.
    pub kafka: String,
    /// The gateway's HTTP listener.
    pub http: SocketAddr,
    /// The gateway's MQTT listener.
    pub mqtt: SocketAddr,
    /// The gateway's AMQP listener.
    pub amqp: SocketAddr,
}

const THROUGHPUT: [&str; 11] = [
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
    "mosquitto-qos1",
];

const OTHER: [&str; 3] = ["e2e-latency", "http-long-poll", "connections"];

/// Run only with `--strimzi`: the HTTP scenarios through a Strimzi Kafka Bridge.
const STRIMZI: [&str; 3] = [
    "strimzi-http-produce-1",
    "strimzi-http-produce-100",
    "strimzi-http-consume",
];

/// Run only with `--kafka-libs`: the Kafka Java producer's benchmark beside `direct`.
const JAVA: [&str; 1] = ["direct-java"];

fn spinner(msg: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(msg);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(saved) = &args.from_json {
        let results: RunResults = serde_json::from_str(
            &std::fs::read_to_string(saved)
                .with_context(|| format!("reading {}", saved.display()))?,
        )?;
        if let Some(docs) = &args.report {
            report::render(&results, docs)?;
        }
        return Ok(());
    }
    let scenarios: Vec<String> = if args.scenarios.is_empty() {
        let strimzi: &[&str] = if args.strimzi.is_some() {
            &STRIMZI
        } else {
            &[]
        };
        let java: &[&str] = if args.kafka_libs.is_some() {
            &JAVA
        } else {
            &[]
        };
        THROUGHPUT
            .iter()
            .chain(java)
            .chain(strimzi)
            .chain(OTHER.iter())
            .map(|s| (*s).to_owned())
            .collect()
    } else {
        args.scenarios.clone()
    };
    let is_throughput =
        |s: &str| THROUGHPUT.contains(&s) || STRIMZI.contains(&s) || JAVA.contains(&s);
    for s in &scenarios {
        if !is_throughput(s) && !OTHER.contains(&s.as_str()) {
            bail!(
                "unknown scenario '{s}' (known: {}, {}, {}, {})",
                THROUGHPUT.join(", "),
                STRIMZI.join(", "),
                JAVA.join(", "),
                OTHER.join(", ")
            );
        }
        if STRIMZI.contains(&s.as_str()) && args.strimzi.is_none() {
            bail!("scenario '{s}' needs --strimzi (a running Strimzi Kafka Bridge)");
        }
        if JAVA.contains(&s.as_str()) && args.kafka_libs.is_none() {
            bail!("scenario '{s}' needs --kafka-libs (Apache Kafka's jars)");
        }
    }
    let wants_mosquitto = scenarios
        .iter()
        .any(|s| s.starts_with("mosquitto") || s == "connections");

    let mut results = RunResults {
        machine: server::machine(),
        versions: results::Versions {
            barnabas: env!("CARGO_PKG_VERSION").to_owned(),
            tansu: "0.6.0".to_owned(),
            librdkafka: rdkafka::util::get_rdkafka_version().1,
            mosquitto: if wants_mosquitto {
                server::mosquitto_version()
            } else {
                None
            },
        },
        command: std::env::args().collect::<Vec<_>>().join(" "),
        engine: if args.kafka.is_some() {
            "external".to_owned()
        } else {
            args.engine.clone()
        },
        payload_bytes: args.size,
        ..RunResults::default()
    };

    // The gateway: started here, or given.
    let (gateway, target, pid): (Option<ServerProcess>, Target, Option<u32>) =
        match (&args.kafka, args.http, args.mqtt, args.amqp) {
            (Some(kafka), Some(http), Some(mqtt), Some(amqp)) => (
                None,
                Target {
                    kafka: kafka.clone(),
                    http,
                    mqtt,
                    amqp,
                },
                args.server_pid,
            ),
            _ => {
                let bin = args
                    .gateway_bin
                    .clone()
                    .unwrap_or_else(server::default_gateway_bin);
                let (process, target, ready_ms) = server::start_gateway(&bin, &args.engine).await?;
                eprintln!(
                    "barnabas (embedded {} broker) ready in {ready_ms:.0} ms",
                    args.engine
                );
                results.ready_ms = Some(ready_ms);
                let pid = process.pid;
                (Some(process), target, Some(pid))
            }
        };
    let mosquitto = if wants_mosquitto {
        Some(server::start_mosquitto().await?)
    } else {
        None
    };
    let mosquitto_addr = mosquitto.as_ref().map(|(_, a)| *a);

    let load = scenarios::Load {
        count: args.count,
        size: args.size,
        conns: args.connections,
        inflight: args.inflight,
    };
    let baselines = scenarios::Baselines {
        mosquitto: mosquitto_addr,
        strimzi: args.strimzi,
        kafka_libs: args.kafka_libs.clone(),
    };
    for s in scenarios.iter().filter(|s| is_throughput(s)) {
        let server_pid = if s.starts_with("mosquitto") {
            mosquitto.as_ref().map(|(p, _)| p.pid)
        } else if s.starts_with("strimzi") {
            args.strimzi_pid
        } else {
            pid
        };
        let bar = spinner(format!("{s}: {} × {} B", args.count, args.size));
        let sampler = server_pid.map(Sampler::start);
        let (messages, seconds) = scenarios::run(s, &target, &baselines, load).await?;
        let (cpu, rss) = match sampler {
            Some(sm) => sm.finish().await,
            None => (None, None),
        };
        bar.finish_and_clear();
        let msgs_per_s = messages as f64 / seconds.max(1e-9);
        eprintln!("{s}: {messages} in {seconds:.2} s = {msgs_per_s:.0} msgs/s");
        results.throughput.push(Throughput {
            scenario: s.clone(),
            baseline: None,
            messages,
            seconds,
            msgs_per_s,
            mb_per_s: msgs_per_s * args.size as f64 / 1e6,
            ratio: None,
            vs_mosquitto: None,
            vs_same_records: None,
            vs_strimzi: None,
            server_cpu_cores: cpu,
            server_rss_mib: rss,
        });
    }
    set_ratios(&mut results.throughput);

    if scenarios.iter().any(|s| s == "e2e-latency") {
        let bar = spinner(format!(
            "e2e-latency: {} msgs/s × {} per protocol",
            args.rate, args.latency_count
        ));
        results.latency = latency::run(&target, args.rate, args.latency_count, args.size).await?;
        bar.finish_and_clear();
    }
    if scenarios.iter().any(|s| s == "http-long-poll") {
        let servers = std::iter::once(("http-long-poll", format!("http://{}", target.http))).chain(
            args.strimzi
                .map(|s| ("strimzi-http-long-poll", format!("http://{s}"))),
        );
        for (name, base) in servers {
            let bar = spinner(format!("{name}: {} samples", args.long_polls));
            let row =
                http_consume::long_poll_latency(&base, "bench-long-poll", args.long_polls, name)
                    .await?;
            results.latency.push(row);
            bar.finish_and_clear();
        }
    }
    if scenarios.iter().any(|s| s == "connections") {
        if let Some(pid) = pid {
            let bar = spinner(format!(
                "connections: {} idle MQTT connections to barnabas",
                args.idle
            ));
            results
                .connections
                .push(connections::run("barnabas", target.mqtt, pid, args.idle).await?);
            bar.finish_and_clear();
        } else {
            eprintln!("connections: no --server-pid, the gateway's memory cannot be read: skipped");
        }
        if let Some((process, addr)) = &mosquitto {
            let bar = spinner(format!(
                "connections: {} idle MQTT connections to mosquitto",
                args.idle
            ));
            results
                .connections
                .push(connections::run("mosquitto", *addr, process.pid, args.idle).await?);
            bar.finish_and_clear();
        }
    }

    if let Some((process, _)) = mosquitto {
        process.stop().await;
    }
    if let Some(process) = gateway {
        process.stop().await;
    }
    print_tables(&results);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(docs) = &args.report {
        report::render(&results, docs)?;
    }
    Ok(())
}

/// Each row's ratio to its baseline measured in the same run: gateway scenarios divide by
/// `direct`; the MQTT ones are also set against mosquitto at the same QoS.
fn set_ratios(rows: &mut [Throughput]) {
    let rate_of = |rows: &[Throughput], name: &str| {
        rows.iter()
            .find(|r| r.scenario == name)
            .map(|r| r.msgs_per_s)
    };
    let direct = rate_of(rows, "direct");
    let mosq0 = rate_of(rows, "mosquitto-qos0");
    let mosq1 = rate_of(rows, "mosquitto-qos1");
    let same_records = rate_of(rows, "direct-mqtt-records");
    let strimzi: Vec<(String, Option<f64>)> =
        ["http-produce-1", "http-produce-100", "http-consume"]
            .iter()
            .map(|s| ((*s).to_owned(), rate_of(rows, &format!("strimzi-{s}"))))
            .collect();
    for r in rows.iter_mut() {
        let baseline = match r.scenario.as_str() {
            // A consumer's rate divided by a producer's says nothing.
            "direct"
            | "mosquitto-qos0"
            | "mosquitto-qos1"
            | "http-consume"
            | "strimzi-http-consume" => None,
            _ => direct.map(|d| ("direct", d)),
        };
        if let Some((name, rate)) = baseline {
            r.baseline = Some(name.to_owned());
            r.ratio = Some(r.msgs_per_s / rate);
        }
        r.vs_mosquitto = match r.scenario.as_str() {
            "mqtt-qos0" => mosq0.map(|m| r.msgs_per_s / m),
            "mqtt-qos1" => mosq1.map(|m| r.msgs_per_s / m),
            _ => None,
        };
        r.vs_strimzi = strimzi
            .iter()
            .find(|(name, _)| *name == r.scenario)
            .and_then(|(_, rate)| rate.map(|s| r.msgs_per_s / s));
        r.vs_same_records = match r.scenario.as_str() {
            "mqtt-qos0" | "mqtt-qos1" | "mqtt-qos2" => same_records.map(|d| r.msgs_per_s / d),
            _ => None,
        };
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn print_tables(r: &RunResults) {
    if let Some(ms) = r.ready_ms {
        println!("start → ready: {ms:.0} ms");
    }
    if !r.throughput.is_empty() {
        println!(
            "{:<24} {:>9} {:>8} {:>10} {:>7} {:>9} {:>9} {:>8} {:>9} {:>6} {:>8} {:>7}",
            "scenario",
            "messages",
            "seconds",
            "msgs/s",
            "MB/s",
            "÷ direct",
            "÷ same rec",
            "÷ mosq",
            "÷ strimzi",
            "cpu",
            "cpu s/100k",
            "rss MiB"
        );
        for t in &r.throughput {
            println!(
                "{:<24} {:>9} {:>8.2} {:>10.0} {:>7.2} {:>9} {:>9} {:>8} {:>9} {:>6} {:>8} {:>7}",
                t.scenario,
                t.messages,
                t.seconds,
                t.msgs_per_s,
                t.mb_per_s,
                opt(t.ratio, 2),
                opt(t.vs_same_records, 2),
                opt(t.vs_mosquitto, 2),
                opt(t.vs_strimzi, 2),
                opt(t.server_cpu_cores, 2),
                opt(t.server_cpu_s_per_100k(), 2),
                opt(t.server_rss_mib, 0),
            );
        }
    }
    if !r.latency.is_empty() {
        println!(
            "{:<22} {:<19} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10}",
            "latency",
            "kind",
            "samples",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9",
            "max ms",
            "p99 added"
        );
        for l in &r.latency {
            println!(
                "{:<22} {:<19} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>10}",
                l.protocol,
                l.kind,
                l.count,
                l.p50_ms,
                l.p90_ms,
                l.p99_ms,
                l.p999_ms,
                l.max_ms,
                opt(l.p99_added_ms, 2),
            );
        }
    }
    for c in &r.connections {
        println!(
            "connections {:<10} {:>6} held: {:.2} KiB each, CONNACK p50 {:.2} ms p99 {:.2} ms",
            c.server, c.connections, c.kib_per_connection, c.connack_p50_ms, c.connack_p99_ms
        );
    }
}
