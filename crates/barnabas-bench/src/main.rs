//! `barnabas-bench`: each protocol's produce rate through an in-process gateway, beside a
//! direct Kafka producer to the same broker, measured in the same run (ratios, not absolute
//! numbers, are what carries over between machines).
//!
//!   barnabas-bench [--count N] [--size BYTES] [--connections N] [--json FILE] [SCENARIO…]
//!
//! Scenarios: direct, mqtt-qos0, mqtt-qos1, mqtt-qos2, http-1, http-100, amqp (default: all).
//! A message counts when the gateway acknowledged it (PUBACK/PUBCOMP, HTTP 200, AMQP
//! `accepted`), i.e. after Kafka did; QoS 0 counts when sent and then waits for Kafka to hold
//! all of them.

mod report;
mod results;
mod scenarios;

use std::{net::SocketAddr, time::Instant};

use anyhow::{bail, Context, Result};
use barnabas::{
    config::Config,
    run::{EmbeddedPlan, Gateway, Plan},
};
use clap::Parser;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "barnabas-bench",
    about = "Produce rates through barnabas beside a direct Kafka producer"
)]
struct Args {
    /// Messages per scenario.
    #[arg(long, default_value_t = 200_000)]
    count: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Client connections for MQTT and HTTP scenarios.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
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

/// One scenario's result.
pub struct Measured {
    /// Scenario name.
    pub name: String,
    /// Messages acknowledged.
    pub messages: usize,
    /// Wall time of the scenario.
    pub seconds: f64,
}

const ALL: [&str; 7] = [
    "direct",
    "mqtt-qos0",
    "mqtt-qos1",
    "mqtt-qos2",
    "http-1",
    "http-100",
    "amqp",
];

fn free_addr() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let scenarios: Vec<String> = if args.scenarios.is_empty() {
        ALL.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.scenarios.clone()
    };
    for s in &scenarios {
        if !ALL.contains(&s.as_str()) {
            bail!("unknown scenario '{s}' (known: {})", ALL.join(", "));
        }
    }
    let mut config = Config::default();
    for listen in [
        &mut config.http.listen,
        &mut config.mqtt.listen,
        &mut config.amqp.listen,
    ] {
        *listen = "127.0.0.1:0".into();
    }
    let kafka_addr = free_addr()?;
    let started = Instant::now();
    let gateway = Gateway::start(Plan {
        config,
        embedded: Some(EmbeddedPlan {
            listen: kafka_addr,
            advertised: None,
            data_dir: None,
        }),
    })
    .await
    .map_err(|e| anyhow::anyhow!("gateway did not start: {e:?}"))?;
    while !gateway.readiness().is_ready() {
        if started.elapsed().as_secs() > 30 {
            bail!("gateway not ready after 30 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    eprintln!(
        "gateway with embedded broker ready in {:?}",
        started.elapsed()
    );
    let target = Target {
        kafka: kafka_addr.to_string(),
        http: gateway.http_addr().context("http listener")?,
        mqtt: gateway.mqtt_addr().context("mqtt listener")?,
        amqp: gateway.amqp_addr().context("amqp listener")?,
    };
    let mut results = Vec::new();
    for s in &scenarios {
        eprintln!("running {s} ({} × {} B)…", args.count, args.size);
        let m = scenarios::run(s, &target, args.count, args.size, args.connections).await?;
        results.push(m);
    }
    gateway.shutdown().await;
    print_table(&results, args.size);
    if let Some(path) = &args.json {
        let direct = results.iter().find(|m| m.name == "direct").map(rate);
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|m| {
                serde_json::json!({
                    "scenario": m.name, "messages": m.messages, "seconds": m.seconds,
                    "msgs_per_s": rate(m), "mb_per_s": rate(m) * args.size as f64 / 1e6,
                    "ratio_to_direct": direct.map(|d| rate(m) / d),
                })
            })
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn rate(m: &Measured) -> f64 {
    m.messages as f64 / m.seconds.max(1e-9)
}

fn print_table(results: &[Measured], size: usize) {
    let direct = results.iter().find(|m| m.name == "direct").map(rate);
    println!(
        "{:<12} {:>10} {:>9} {:>12} {:>8} {:>9}",
        "scenario", "messages", "seconds", "msgs/s", "MB/s", "÷ direct"
    );
    for m in results {
        let ratio = direct.map_or_else(|| "-".to_owned(), |d| format!("{:.2}", rate(m) / d));
        println!(
            "{:<12} {:>10} {:>9.2} {:>12.0} {:>8.2} {:>9}",
            m.name,
            m.messages,
            m.seconds,
            rate(m),
            rate(m) * size as f64 / 1e6,
            ratio
        );
    }
}
