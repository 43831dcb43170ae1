//! `connections`: N idle MQTT 3.1.1 connections (CONNECT, CONNACK, then silence with keep
//! alive off) held against a server process; its RSS growth per connection and the
//! CONNECT→CONNACK time at that load: opened [`CONCURRENCY`] at once (a reconnect storm:
//! the last of a burst waits for those before it), then [`ONE_AT_A_TIME`] more one after
//! another (the server's own answer time).
//!
//! The packets are written by hand: a client library per connection would measure the
//! library, and 10 000 of them would crowd the load generator.

use std::{net::SocketAddr, time::Duration, time::Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::{stream, StreamExt};
use hdrhistogram::Histogram;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{results::Connections, server::rss_mib};

/// Connections opened at once.
const CONCURRENCY: usize = 64;

/// Connections opened one after another once the idle ones are held, each closed after its
/// CONNACK.
const ONE_AT_A_TIME: usize = 1000;

/// An MQTT 3.1.1 CONNECT: clean session, keep alive 0 (the server never times it out).
fn connect_packet(client_id: &str) -> Vec<u8> {
    let id = client_id.as_bytes();
    let remaining = 10 + 2 + id.len();
    let mut p = Vec::with_capacity(2 + remaining);
    p.push(0x10);
    p.push(u8::try_from(remaining).unwrap_or(127));
    p.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0]);
    p.extend_from_slice(&u16::try_from(id.len()).unwrap_or(0).to_be_bytes());
    p.extend_from_slice(id);
    p
}

/// One connection: CONNECT, then CONNACK accepted; returns the stream and the time it took.
async fn open(addr: SocketAddr, client_id: String) -> Result<(TcpStream, Duration)> {
    let mut s = TcpStream::connect(addr).await.context("connect")?;
    s.set_nodelay(true)?;
    let t0 = Instant::now();
    s.write_all(&connect_packet(&client_id)).await?;
    let mut ack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut ack))
        .await
        .map_err(|_| anyhow!("no CONNACK in 30 s"))??;
    if ack[0] != 0x20 || ack[3] != 0 {
        bail!("CONNACK refused: {ack:?}");
    }
    Ok((s, t0.elapsed()))
}

/// Open files this process may hold (soft limit), from `/proc/self/limits`.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// Holds `wanted` idle connections against `server` (process `pid`) at `addr`.
pub async fn run(server: &str, addr: SocketAddr, pid: u32, wanted: usize) -> Result<Connections> {
    let n = match open_files_limit() {
        Some(limit) if limit < wanted + 200 => {
            let n = limit.saturating_sub(200).max(1);
            eprintln!(
                "  open files limited to {limit} (raise with `ulimit -n`): {n} connections instead of {wanted}"
            );
            n
        }
        _ => wanted,
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before_mib = rss_mib(pid).context("server RSS")?;
    let mut rss_points = Vec::new();
    let mut connack = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| anyhow!("histogram: {e}"))?;
    let mut held = Vec::with_capacity(n);
    let step = (n / 10).max(1);
    let run = std::process::id();
    while held.len() < n {
        let batch = step.min(n - held.len());
        let base = held.len();
        let opened: Vec<Result<(TcpStream, Duration)>> = stream::iter(0..batch)
            .map(|i| open(addr, format!("idle-{run}-{}", base + i)))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for o in opened {
            let (s, d) = o.with_context(|| format!("connection {} to {server}", held.len()))?;
            let _ = connack.record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
            held.push(s);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        rss_points.push((held.len(), rss_mib(pid).unwrap_or(0.0)));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_end = rss_mib(pid).context("server RSS")?;
    if let Some(last) = rss_points.last_mut() {
        last.1 = rss_end;
    }
    let one = one_at_a_time(addr, run)
        .await
        .with_context(|| format!("one at a time to {server}"))?;
    drop(held);
    Ok(Connections {
        server: server.to_owned(),
        connections: n,
        rss_before_mib,
        rss_points,
        kib_per_connection: (rss_end - rss_before_mib) * 1024.0 / n as f64,
        connack_p50_ms: connack.value_at_quantile(0.5) as f64 / 1000.0,
        connack_p99_ms: connack.value_at_quantile(0.99) as f64 / 1000.0,
        connack_one_p50_ms: one.value_at_quantile(0.5) as f64 / 1000.0,
        connack_one_p99_ms: one.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// CONNECT → CONNACK of [`ONE_AT_A_TIME`] connections opened one after another, µs.
async fn one_at_a_time(addr: SocketAddr, run: u32) -> Result<Histogram<u64>> {
    let mut connack = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| anyhow!("histogram: {e}"))?;
    for i in 0..ONE_AT_A_TIME {
        let (_, d) = open(addr, format!("one-{run}-{i}")).await?;
        let _ = connack.record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
    }
    Ok(connack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_packet_is_mqtt_3_1_1_with_its_length() {
        let p = connect_packet("ab");
        assert_eq!(
            p,
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 2, b'a', b'b']
        );
    }
}
