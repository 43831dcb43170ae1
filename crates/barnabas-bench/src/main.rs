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

mod amqp;
mod connections;
mod http_consume;
mod latency;
mod report;
mod results;
mod scenarios;
mod server;

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use results::{RunResults, Throughput};
use server::{Sampler, ServerProcess};

/// The gateway's allocator (jemalloc, `crates/barnabas/src/main.rs`) in the load generator
/// too, for librdkafka's C allocations as well (the `unprefixed_malloc_on_supported_platforms`
/// feature, as the gateway has it): the direct baseline runs in this process, and glibc's
/// malloc would hold it back where the gateway is not (librdkafka allocates each header of
/// each record; glibc's malloc and free were a fifth of this process's samples under
/// `direct-mqtt-records` when only Rust's allocations were on jemalloc).
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

/// Scenarios that count what Kafka stored (`mqtt-qos0`) or read records back: left out with
/// `--engine null`, where they could only time out (`Args::keeps_records`).
const NEED_STORED: [&str; 4] = [
    "mqtt-qos0",
    "http-consume",
    "strimzi-http-consume",
    "http-long-poll",
];

/// Run only with `--kafka-libs`: the Kafka Java producer's benchmark beside `direct`.
const JAVA: [&str; 1] = ["direct-java"];

/// A scenario name that counts messages (a row of the throughput table).
fn is_throughput(s: &str) -> bool {
    THROUGHPUT.contains(&s) || STRIMZI.contains(&s) || JAVA.contains(&s)
}

impl Args {
    /// The scenarios to run: those named, or every one this run can do (the Strimzi and Java
    /// ones only when their server or jars were given). All are checked before anything
    /// starts, so a misspelt name fails at once instead of after minutes of load.
    fn scenarios(&self) -> Result<Vec<String>> {
        let scenarios = if self.scenarios.is_empty() {
            self.default_scenarios()
        } else {
            self.scenarios.clone()
        };
        for s in &scenarios {
            self.check_scenario(s)?;
        }
        if self.keeps_records() {
            return Ok(scenarios);
        }
        let (skipped, kept): (Vec<String>, Vec<String>) = scenarios
            .into_iter()
            .partition(|s| NEED_STORED.contains(&s.as_str()));
        if !skipped.is_empty() {
            eprintln!(
                "skipped with --engine null (the broker keeps nothing to count or read): {}",
                skipped.join(", ")
            );
        }
        Ok(kept)
    }

    /// Whether the broker keeps what is written: not with the embedded `null` engine, where
    /// a scenario that counts stored records or reads them back could only time out.
    fn keeps_records(&self) -> bool {
        self.kafka.is_some() || self.engine != "null"
    }

    /// Every scenario, in run order: throughput first (the optional baselines beside the
    /// ones they compare with), then the others.
    fn default_scenarios(&self) -> Vec<String> {
        let strimzi: &[&str] = if self.strimzi.is_some() {
            &STRIMZI
        } else {
            &[]
        };
        let java: &[&str] = if self.kafka_libs.is_some() {
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
    }

    /// Fails on an unknown scenario, or one whose server or jars were not given.
    fn check_scenario(&self, s: &str) -> Result<()> {
        if !is_throughput(s) && !OTHER.contains(&s) {
            bail!(
                "unknown scenario '{s}' (known: {}, {}, {}, {})",
                THROUGHPUT.join(", "),
                STRIMZI.join(", "),
                JAVA.join(", "),
                OTHER.join(", ")
            );
        }
        if STRIMZI.contains(&s) && self.strimzi.is_none() {
            bail!("scenario '{s}' needs --strimzi (a running Strimzi Kafka Bridge)");
        }
        if JAVA.contains(&s) && self.kafka_libs.is_none() {
            bail!("scenario '{s}' needs --kafka-libs (Apache Kafka's jars)");
        }
        Ok(())
    }

    /// The running gateway given by `--kafka`, `--http`, `--mqtt` and `--amqp`, if it was.
    fn given_gateway(&self) -> Option<Target> {
        match (&self.kafka, self.http, self.mqtt, self.amqp) {
            (Some(kafka), Some(http), Some(mqtt), Some(amqp)) => Some(Target {
                kafka: kafka.clone(),
                http,
                mqtt,
                amqp,
            }),
            _ => None,
        }
    }

    /// The results before anything is measured: what the run is on and what it runs
    /// (mosquitto's version only when a scenario starts it).
    fn new_results(&self, wants_mosquitto: bool) -> RunResults {
        RunResults {
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
            engine: if self.kafka.is_some() {
                "external".to_owned()
            } else {
                self.engine.clone()
            },
            payload_bytes: self.size,
            ..RunResults::default()
        }
    }
}

/// The servers under load: the gateway (started here unless given) and a local mosquitto
/// when a scenario compares with it. Kept together so they stop together, after the last
/// scenario.
struct Servers {
    /// The gateway's process when the bench started it (a given gateway is left running).
    gateway: Option<ServerProcess>,
    /// Where the gateway listens.
    target: Target,
    /// The gateway's process id, to sample (`None`: given without `--server-pid`).
    pid: Option<u32>,
    /// Start → ready of a gateway started here, ms.
    ready_ms: Option<f64>,
    /// mosquitto's process and MQTT address, when a scenario needs it.
    mosquitto: Option<(ServerProcess, SocketAddr)>,
}

impl Servers {
    /// Starts the gateway (unless given) and, if `wants_mosquitto`, mosquitto.
    async fn start(args: &Args, wants_mosquitto: bool) -> Result<Self> {
        let mut servers = match args.given_gateway() {
            Some(target) => Self {
                gateway: None,
                target,
                pid: args.server_pid,
                ready_ms: None,
                mosquitto: None,
            },
            None => Self::start_gateway(args).await?,
        };
        if wants_mosquitto {
            servers.mosquitto = Some(server::start_mosquitto().await?);
        }
        Ok(servers)
    }

    /// The `barnabas` binary with its embedded broker, started here.
    async fn start_gateway(args: &Args) -> Result<Self> {
        let bin = args
            .gateway_bin
            .clone()
            .unwrap_or_else(server::default_gateway_bin);
        let (process, target, ready_ms) = server::start_gateway(&bin, &args.engine).await?;
        eprintln!(
            "barnabas (embedded {} broker) ready in {ready_ms:.0} ms",
            args.engine
        );
        Ok(Self {
            pid: Some(process.pid),
            gateway: Some(process),
            target,
            ready_ms: Some(ready_ms),
            mosquitto: None,
        })
    }

    /// The process a throughput scenario loads, whose CPU and memory its row reports.
    fn pid_for(&self, scenario: &str, strimzi_pid: Option<u32>) -> Option<u32> {
        if scenario.starts_with("mosquitto") {
            self.mosquitto.as_ref().map(|(p, _)| p.pid)
        } else if scenario.starts_with("strimzi") {
            strimzi_pid
        } else {
            self.pid
        }
    }

    /// Stops what the bench started: mosquitto, then the gateway.
    async fn stop(self) {
        if let Some((process, _)) = self.mosquitto {
            process.stop().await;
        }
        if let Some(process) = self.gateway {
            process.stop().await;
        }
    }
}

/// A spinner on stderr showing `msg` and the time it has been running.
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

/// Runs `work` under a spinner showing `msg`, so a scenario that takes minutes shows it
/// is alive; the spinner is gone when the work ends.
async fn with_spinner<T>(msg: String, work: impl Future<Output = Result<T>>) -> Result<T> {
    let bar = spinner(msg);
    let out = work.await;
    bar.finish_and_clear();
    out
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(saved) = &args.from_json {
        return rerender(saved, args.report.as_deref());
    }
    let scenarios = args.scenarios()?;
    let wants = |name: &str| scenarios.iter().any(|s| s == name);
    let wants_mosquitto =
        wants("connections") || scenarios.iter().any(|s| s.starts_with("mosquitto"));

    let mut results = args.new_results(wants_mosquitto);
    let servers = Servers::start(&args, wants_mosquitto).await?;
    results.ready_ms = servers.ready_ms;
    run_throughput(&args, &scenarios, &servers, &mut results).await?;
    if wants("e2e-latency") {
        let msg = format!(
            "e2e-latency: {} msgs/s × {} per protocol",
            args.rate, args.latency_count
        );
        let receivers = args.keeps_records();
        let run = latency::run(
            &servers.target,
            args.rate,
            args.latency_count,
            args.size,
            receivers,
        );
        results.latency = with_spinner(msg, run).await?;
    }
    if wants("http-long-poll") {
        run_long_polls(&args, &servers.target, &mut results).await?;
    }
    if wants("connections") {
        run_connections(&args, &servers, &mut results).await?;
    }
    servers.stop().await;

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

/// `--from-json`: the report again from a saved run, measuring nothing.
fn rerender(saved: &Path, docs: Option<&Path>) -> Result<()> {
    let results: RunResults = serde_json::from_str(
        &std::fs::read_to_string(saved).with_context(|| format!("reading {}", saved.display()))?,
    )?;
    if let Some(docs) = docs {
        report::render(&results, docs)?;
    }
    Ok(())
}

/// The throughput scenarios among `scenarios`, in order, then each row's ratios to its
/// baselines (which are only known once all have run).
async fn run_throughput(
    args: &Args,
    scenarios: &[String],
    servers: &Servers,
    results: &mut RunResults,
) -> Result<()> {
    let load = scenarios::Load {
        count: args.count,
        size: args.size,
        conns: args.connections,
        inflight: args.inflight,
    };
    let baselines = scenarios::Baselines {
        mosquitto: servers.mosquitto.as_ref().map(|(_, a)| *a),
        strimzi: args.strimzi,
        kafka_libs: args.kafka_libs.clone(),
    };
    for s in scenarios.iter().filter(|s| is_throughput(s)) {
        let server_pid = servers.pid_for(s, args.strimzi_pid);
        let msg = format!("{s}: {} × {} B", load.count, load.size);
        let measured = measure_throughput(s, &servers.target, &baselines, load, server_pid);
        let row = with_spinner(msg, measured).await?;
        eprintln!(
            "{s}: {} in {:.2} s = {:.0} msgs/s",
            row.messages, row.seconds, row.msgs_per_s
        );
        results.throughput.push(row);
    }
    set_ratios(&mut results.throughput);
    Ok(())
}

/// One throughput scenario, with the CPU and peak memory of the server it loads (process
/// `server_pid`) sampled meanwhile. The row's ratios are left for [`set_ratios`].
async fn measure_throughput(
    scenario: &str,
    target: &Target,
    baselines: &scenarios::Baselines,
    load: scenarios::Load,
    server_pid: Option<u32>,
) -> Result<Throughput> {
    let sampler = server_pid.map(Sampler::start);
    let (messages, seconds) = scenarios::run(scenario, target, baselines, load).await?;
    let (cpu, rss) = match sampler {
        Some(sm) => sm.finish().await,
        None => (None, None),
    };
    let msgs_per_s = messages as f64 / seconds.max(1e-9);
    Ok(Throughput {
        scenario: scenario.to_owned(),
        messages,
        seconds,
        msgs_per_s,
        mb_per_s: msgs_per_s * load.size as f64 / 1e6,
        server_cpu_cores: cpu,
        server_rss_mib: rss,
        ..Throughput::default()
    })
}

/// `http-long-poll`: a long poll's time to return a new record, on the gateway and on the
/// Strimzi bridge when one was given.
async fn run_long_polls(args: &Args, target: &Target, results: &mut RunResults) -> Result<()> {
    let servers = std::iter::once(("http-long-poll", format!("http://{}", target.http))).chain(
        args.strimzi
            .map(|s| ("strimzi-http-long-poll", format!("http://{s}"))),
    );
    for (name, base) in servers {
        let msg = format!("{name}: {} samples", args.long_polls);
        let poll = http_consume::long_poll_latency(&base, "bench-long-poll", args.long_polls, name);
        results.latency.push(with_spinner(msg, poll).await?);
    }
    Ok(())
}

/// `connections`: idle MQTT connections held against the gateway (when its process is
/// known, to read its memory) and against mosquitto.
async fn run_connections(args: &Args, servers: &Servers, results: &mut RunResults) -> Result<()> {
    let barnabas = servers
        .pid
        .map(|pid| ("barnabas", servers.target.mqtt, pid));
    if barnabas.is_none() {
        eprintln!("connections: no --server-pid, the gateway's memory cannot be read: skipped");
    }
    let mosquitto = servers
        .mosquitto
        .as_ref()
        .map(|(process, addr)| ("mosquitto", *addr, process.pid));
    for (name, addr, pid) in barnabas.into_iter().chain(mosquitto) {
        let msg = format!("connections: {} idle MQTT connections to {name}", args.idle);
        let held = connections::run(name, addr, pid, args.idle);
        results.connections.push(with_spinner(msg, held).await?);
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

/// The results on stdout, one table per kind of scenario.
fn print_tables(r: &RunResults) {
    if let Some(ms) = r.ready_ms {
        println!("start → ready: {ms:.0} ms");
    }
    if !r.throughput.is_empty() {
        print_throughput(&r.throughput);
    }
    if !r.latency.is_empty() {
        print_latency(&r.latency);
    }
    for c in &r.connections {
        println!(
            "connections {:<10} {:>6} held: {:.2} KiB each, CONNACK p50 {:.2} ms p99 {:.2} ms; one at a time p50 {:.3} ms p99 {:.3} ms",
            c.server,
            c.connections,
            c.kib_per_connection,
            c.connack_p50_ms,
            c.connack_p99_ms,
            c.connack_one_p50_ms,
            c.connack_one_p99_ms
        );
    }
}

fn print_throughput(rows: &[Throughput]) {
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
    for t in rows {
        let [same_records, mosquitto, strimzi, cpu, cpu_per_100k] =
            t.comparisons_and_cpu().map(|v| opt(v, 2));
        println!(
            "{:<24} {:>9} {:>8.2} {:>10.0} {:>7.2} {:>9} {:>9} {:>8} {:>9} {:>6} {:>8} {:>7}",
            t.scenario,
            t.messages,
            t.seconds,
            t.msgs_per_s,
            t.mb_per_s,
            opt(t.ratio, 2),
            same_records,
            mosquitto,
            strimzi,
            cpu,
            cpu_per_100k,
            opt(t.server_rss_mib, 0),
        );
    }
}

fn print_latency(rows: &[results::Latency]) {
    println!(
        "{:<22} {:<19} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10}",
        "latency", "kind", "samples", "p50 ms", "p90 ms", "p99 ms", "p99.9", "max ms", "p99 added"
    );
    for l in rows {
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
