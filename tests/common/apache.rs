//! Apache Kafka 4.4 (KRaft, one combined broker + controller) started by `scripts/kafka/run`
//! from jars Maven Central serves: the real broker users put barnabas in front of (issue 23).
//! tests/apache_kafka.rs always uses it; with `BARNABAS_TEST_KAFKA=apache` the in-process
//! harness ([`super::gateway::start`], [`super::broker::start`]) gives every test a fresh one
//! instead of the embedded tansu broker.
//!
//! Needs Java 17+ and Maven (the classpath is fetched once per machine into
//! target/apache-kafka/libs); without them a test fails saying so.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{free_port, workspace_root};

/// A first run fetches the jars from Maven Central.
const KAFKA_START: Duration = Duration::from_secs(600);

/// Whether this run's tests use Apache Kafka instead of the embedded broker
/// (`BARNABAS_TEST_KAFKA=apache`; `tansu` or unset: the embedded one).
pub fn selected() -> bool {
    match std::env::var("BARNABAS_TEST_KAFKA").as_deref() {
        Ok("apache") => true,
        Ok("tansu") | Ok("") | Err(_) => false,
        Ok(other) => panic!("BARNABAS_TEST_KAFKA={other}: apache or tansu"),
    }
}

/// An Apache Kafka broker process (its whole process group is killed on drop).
pub struct ApacheKafka {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    pub bootstrap: String,
    /// What [`Self::restart`] starts again: ports, extra properties, environment.
    launch: Launch,
    dir: tempfile::TempDir,
}

struct Launch {
    port: u16,
    controller: u16,
    properties: Vec<String>,
    env: Vec<(String, String)>,
}

impl ApacheKafka {
    /// A broker with small segments and a fast log cleaner, so compaction is observable.
    pub fn start() -> ApacheKafka {
        Self::start_with(&[
            "log.segment.bytes=1048576",
            "log.cleaner.min.cleanable.ratio=0.01",
        ])
    }

    /// A broker with these extra server properties (`key=value`).
    pub fn start_with(properties: &[&str]) -> ApacheKafka {
        let properties: Vec<String> = properties.iter().map(|p| (*p).to_owned()).collect();
        Self::launch(|_, _| properties, &[])
    }

    /// A broker that requires SASL/SCRAM-SHA-256 logins (`users`: name, password; stored when
    /// the storage is formatted) and authorizes with Kafka's `StandardAuthorizer`: a principal
    /// may do only what an ACL allows, except `super_users`.
    pub fn start_sasl(users: &[(&str, &str)], super_users: &[&str]) -> ApacheKafka {
        let (admin, admin_pw) = users[0];
        let supers: Vec<String> = super_users
            .iter()
            .map(|u| format!("User:{u}"))
            .chain(["User:ANONYMOUS".to_owned()]) // the controller listener (plaintext)
            .collect();
        let properties = move |port: u16, controller: u16| {
            vec![
                format!("listeners=SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}"),
                format!("advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{port}"),
                "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
                "inter.broker.listener.name=SASL_PLAINTEXT".into(),
                "sasl.enabled.mechanisms=SCRAM-SHA-256".into(),
                "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-256".into(),
                format!(
                    "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=\
                     org.apache.kafka.common.security.scram.ScramLoginModule required \
                     username=\"{admin}\" password=\"{admin_pw}\";"
                ),
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer".into(),
                format!("super.users={}", supers.join(";")),
            ]
        };
        let scram: Vec<String> = users.iter().map(|(u, p)| format!("{u}={p}")).collect();
        Self::launch(properties, &[("BARNABAS_KAFKA_SCRAM", &scram.join(" "))])
    }

    fn launch(
        properties: impl FnOnce(u16, u16) -> Vec<String>,
        env: &[(&str, &str)],
    ) -> ApacheKafka {
        let ports = distinct_free_ports(2);
        let (port, controller) = (ports[0], ports[1]);
        let mut kafka = Self::spawn(port, controller, properties(port, controller), env);
        kafka.wait_ready();
        kafka
    }

    /// Starts the broker process; [`Self::wait_ready`] waits until it accepts connections.
    fn spawn(
        port: u16,
        controller: u16,
        properties: Vec<String>,
        env: &[(&str, &str)],
    ) -> ApacheKafka {
        let launch = Launch {
            port,
            controller,
            properties,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let dir = tempfile::tempdir().unwrap();
        let (child, log) = Self::run(&launch, &dir);
        ApacheKafka {
            child,
            log,
            bootstrap: format!("127.0.0.1:{port}"),
            launch,
            dir,
        }
    }

    /// `scripts/kafka/run` on `dir` (formatted on the first start only), in a process group
    /// of its own; its stderr is echoed and kept for [`Self::wait_ready`].
    fn run(launch: &Launch, dir: &tempfile::TempDir) -> (Child, Arc<Mutex<Vec<String>>>) {
        use std::os::unix::process::CommandExt;
        let port = launch.port;
        let mut child = Command::new(workspace_root().join("scripts/kafka/run"))
            .arg(dir.path().join("kafka"))
            .args([port.to_string(), launch.controller.to_string()])
            .args(&launch.properties)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("scripts/kafka/run");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[apache-kafka:{port}] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        (child, log)
    }

    /// `kill -9` of the broker (the JVM and its launcher script).
    pub fn kill(&mut self) {
        self.signal_quietly("KILL");
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same ports and log directories (after [`Self::kill`]:
    /// what it had written to disk is all it has), and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let (child, log) = Self::run(&self.launch, &self.dir);
        self.child = child;
        self.log = log;
        self.wait_ready();
    }

    /// Sends `sig` (e.g. `STOP`, `CONT`) to the broker's whole process group.
    pub fn signal(&self, sig: &str) {
        let group = format!("-{}", self.child.id());
        let status = Command::new("kill")
            .args([&format!("-{sig}"), "--", &group])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} {group}");
    }

    /// Waits until the broker accepts connections; fails at once if its process ended.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + KAFKA_START;
        loop {
            let log = self.log.lock().unwrap().clone();
            if log.iter().any(|l| l.contains("kafka ready on")) {
                return;
            }
            let ended = self.child.try_wait().ok().flatten();
            assert!(
                ended.is_none() && Instant::now() < deadline,
                "Apache Kafka did not start ({}):\n{}",
                ended.map_or_else(|| "timed out".to_owned(), |s| s.to_string()),
                log.join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ApacheKafka {
    fn drop(&mut self) {
        self.signal_quietly("KILL");
        let _ = self.child.wait();
    }
}

impl ApacheKafka {
    fn signal_quietly(&self, sig: &str) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), "--", &group])
            .status();
    }
}

/// A cluster of Apache Kafka nodes, each a combined broker and controller (KRaft), replicating
/// with `min.insync.replicas=2` and replication factor 3 by default: the replication cases of
/// issue 23 (one node killed under load, nothing acknowledged lost).
pub struct ApacheCluster {
    pub nodes: Vec<ApacheKafka>,
    /// Every node's address, comma-separated.
    pub bootstrap: String,
}

impl ApacheCluster {
    pub fn start(size: usize) -> ApacheCluster {
        let free = distinct_free_ports(2 * size);
        let ports: Vec<(u16, u16)> = free.chunks(2).map(|p| (p[0], p[1])).collect();
        let voters: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
            .collect();
        let replicas = size.min(3);
        let mut nodes: Vec<ApacheKafka> = ports
            .iter()
            .enumerate()
            .map(|(i, &(port, controller))| {
                let properties = vec![
                    format!("node.id={}", i + 1),
                    format!("controller.quorum.voters={}", voters.join(",")),
                    format!("default.replication.factor={replicas}"),
                    format!("offsets.topic.replication.factor={replicas}"),
                    format!("transaction.state.log.replication.factor={replicas}"),
                    format!("min.insync.replicas={}", replicas.min(2)),
                    "unclean.leader.election.enable=false".into(),
                ];
                // Any valid id, the same for every node.
                ApacheKafka::spawn(
                    port,
                    controller,
                    properties,
                    &[("BARNABAS_KAFKA_CLUSTER_ID", "MkU3OEVBNTcwNTJENDM2Qg")],
                )
            })
            .collect();
        for node in &mut nodes {
            node.wait_ready();
        }
        let bootstrap = nodes
            .iter()
            .map(|n| n.bootstrap.clone())
            .collect::<Vec<_>>()
            .join(",");
        ApacheCluster { nodes, bootstrap }
    }
}

/// `n` different free ports: two [`free_port`] calls can return the same port (each binds
/// port 0 and lets it go), and a broker given one port for two listeners does not start.
fn distinct_free_ports(n: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::with_capacity(n);
    while ports.len() < n {
        let p = free_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    ports
}
