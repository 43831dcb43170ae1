//! The servers under load, each in its own process so its CPU and memory can be read from
//! `/proc` apart from the load generator's: the `barnabas` binary (with its embedded broker)
//! and, for the reference ratio, a local `mosquitto`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use std::process::{Child, Command};

use anyhow::{anyhow, bail, Context, Result};

use crate::Target;

/// A server process the bench started; [`stop`](Self::stop) ends it (SIGTERM, then SIGKILL),
/// and so does dropping it (SIGKILL).
pub struct ServerProcess {
    child: Child,
    /// Its process id, for [`Sampler`].
    pub pid: u32,
    /// Where its stderr goes (shown when it fails to start).
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Takes charge of `child`, whose stderr goes to `log` inside `dir` (kept until the
    /// process is dropped, so the log and the server's files outlive the start).
    fn new(child: Child, log: PathBuf, dir: tempfile::TempDir) -> Self {
        let pid = child.id();
        Self {
            child,
            pid,
            log,
            _dir: dir,
        }
    }

    /// Asks the process to stop and waits up to 10 s for it.
    pub async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Checks `ready` every `every` until it holds; fails (with the log's tail) if the
    /// process exits first or `limit` passes.
    async fn wait_until<F, Fut>(
        &mut self,
        name: &str,
        limit: Duration,
        every: Duration,
        mut ready: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        while !ready().await {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("{name} exited ({status}):\n{}", self.log_tail());
            }
            if started.elapsed() > limit {
                bail!("{name} not ready after {limit:?}:\n{}", self.log_tail());
            }
            tokio::time::sleep(every).await;
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_addr() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The `barnabas` binary beside this one (same cargo target directory), unless told.
pub fn default_gateway_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("barnabas")))
        .unwrap_or_else(|| PathBuf::from("barnabas"))
}

/// Starts `barnabas` with its embedded broker (`engine` = `sqlite` or `null`) on free ports
/// and waits for `/ready`. Returns the process, where it listens, and start→ready in ms.
pub async fn start_gateway(bin: &Path, engine: &str) -> Result<(ServerProcess, Target, f64)> {
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p barnabas) or pass --gateway-bin",
            bin.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("barnabas.log");
    let target = Target {
        kafka: free_addr()?.to_string(),
        http: free_addr()?,
        mqtt: free_addr()?,
        amqp: free_addr()?,
    };
    let started = Instant::now();
    let child = Command::new(bin)
        .arg("run")
        .arg(format!("--embedded-kafka={}", target.kafka))
        .args(["--embedded-storage", engine])
        .args(["--http-listen", &target.http.to_string()])
        .args(["--mqtt-listen", &target.mqtt.to_string()])
        .args(["--amqp-listen", &target.amqp.to_string()])
        .env("RUST_LOG", "warn")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut server = ServerProcess::new(child, log, dir);
    let http = reqwest::Client::new();
    let ready = format!("http://{}/ready", target.http);
    server
        .wait_until(
            "barnabas",
            Duration::from_secs(30),
            Duration::from_millis(2),
            || async {
                matches!(http.get(&ready).send().await, Ok(r) if r.status().as_u16() == 200)
            },
        )
        .await?;
    let ready_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok((server, target, ready_ms))
}

/// `mosquitto` from PATH, else where Debian puts it (`/usr/sbin` is not on every PATH).
fn mosquitto_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("mosquitto").exists()))
        .unwrap_or(false);
    if !on_path && Path::new("/usr/sbin/mosquitto").exists() {
        PathBuf::from("/usr/sbin/mosquitto")
    } else {
        PathBuf::from("mosquitto")
    }
}

/// Starts a local `mosquitto` (it keeps nothing on disk) and waits until it accepts.
pub async fn start_mosquitto() -> Result<(ServerProcess, SocketAddr)> {
    let dir = tempfile::tempdir()?;
    let addr = free_addr()?;
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {} {}\nallow_anonymous true\npersistence false\nmax_inflight_messages 0\n",
            addr.port(),
            addr.ip()
        ),
    )?;
    let log = dir.path().join("mosquitto.log");
    let child = Command::new(mosquitto_bin())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .map_err(|e| {
            anyhow!("cannot start mosquitto ({e}): install it (Debian package `mosquitto`)")
        })?;
    let mut server = ServerProcess::new(child, log, dir);
    server
        .wait_until(
            "mosquitto",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || async { tokio::net::TcpStream::connect(addr).await.is_ok() },
        )
        .await?;
    Ok((server, addr))
}

/// `mosquitto`'s version, if it is installed.
pub fn mosquitto_version() -> Option<String> {
    let out = std::process::Command::new(mosquitto_bin())
        .arg("-h")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("mosquitto version "))
        .map(|v| v.trim().to_owned())
}

/// A process's resident memory now, MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(kb_field(&status, "VmRSS:")? / 1024.0)
}

/// The value of a `Key:   N kB` line of a `/proc` file.
fn kb_field(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// A process's CPU time so far (user + system), seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the command.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Samples one process's CPU and peak RSS while a scenario runs.
pub struct Sampler {
    pid: u32,
    cpu_start: Option<f64>,
    started: Instant,
    stop: tokio::sync::oneshot::Sender<()>,
    peak: tokio::task::JoinHandle<f64>,
}

impl Sampler {
    /// Starts sampling `pid` every 50 ms.
    pub fn start(pid: u32) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let peak = tokio::spawn(async move {
            let mut peak = rss_mib(pid).unwrap_or(0.0);
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    _ = &mut stopped => return peak,
                    _ = tick.tick() => peak = peak.max(rss_mib(pid).unwrap_or(0.0)),
                }
            }
        });
        Self {
            pid,
            cpu_start: cpu_seconds(pid),
            started: Instant::now(),
            stop,
            peak,
        }
    }

    /// (CPU cores used on average, peak RSS MiB) since [`start`](Self::start).
    pub async fn finish(self) -> (Option<f64>, Option<f64>) {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let cpu = match (self.cpu_start, cpu_seconds(self.pid)) {
            (Some(a), Some(b)) => Some((b - a) / wall),
            _ => None,
        };
        let _ = self.stop.send(());
        let peak = self.peak.await.ok().filter(|p| *p > 0.0);
        (cpu, peak)
    }
}

/// The machine the run is on, from `/proc`.
pub fn machine() -> crate::results::Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb = kb_field(&meminfo, "MemTotal:").unwrap_or(0.0);
    crate::results::Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        mem_gib: mem_kb / 1024.0 / 1024.0,
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_default(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
    }
}
