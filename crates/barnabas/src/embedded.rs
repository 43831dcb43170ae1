//! The in-process Kafka broker (tansu) behind `--embedded-kafka`.
//!
//! Storage is tansu's SQLite engine: it is the engine whose high watermarks are right after
//! batched produces (the `memory://` engine reports the last batch's base offset + 1), and
//! the same engine serves both the default (a temporary file, removed at exit) and
//! `--data-dir` (a file kept across restarts, durable through `kill -9`).

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    time::Duration,
};

use tansu_broker::{broker::Broker, coordinator::group::administrator::Controller};
use tansu_storage::StorageContainer;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use url::Url;

/// Where the embedded broker keeps its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// A temporary SQLite file, deleted when the broker is stopped.
    Temporary,
    /// `DIR/tansu.db`, kept across restarts.
    Dir(PathBuf),
    /// Nothing is stored: every write is acknowledged and discarded (benchmarks only).
    Null,
}

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The address is taken or not ours to bind.
    #[error("cannot listen on {addr} for the embedded Kafka broker: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The data directory is unusable.
    #[error("data dir {path}: {reason}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// tansu refused to build.
    #[error("embedded Kafka broker failed to start: {0}")]
    Broker(String),
}

/// A running embedded broker. Dropping it (or calling [`stop`](Self::stop)) stops the broker
/// and removes temporary storage.
pub struct EmbeddedKafka {
    addr: SocketAddr,
    advertised: String,
    /// Where tansu keeps its data (for [`add_scram_user`](Self::add_scram_user)).
    storage_url: Url,
    task: Option<JoinHandle<()>>,
    _temp: Option<TempDir>,
}

impl EmbeddedKafka {
    /// Starts tansu on `addr`, advertising `advertised` (default: `addr`, with an unspecified
    /// IP replaced by 127.0.0.1) to clients, and returns once it accepts connections.
    pub async fn start(
        addr: SocketAddr,
        advertised: Option<String>,
        storage: Storage,
    ) -> Result<Self, EmbeddedError> {
        Self::start_with_sasl(addr, advertised, storage, false).await
    }

    /// [`start`](Self::start), with `sasl` = every client must authenticate (SASL PLAIN,
    /// which tansu accepts with any password, or SCRAM-SHA-256/512 against the credentials
    /// stored with AlterUserScramCredentials). For testing identity passthrough.
    pub async fn start_with_sasl(
        addr: SocketAddr,
        advertised: Option<String>,
        storage: Storage,
        sasl: bool,
    ) -> Result<Self, EmbeddedError> {
        // tansu binds inside its serve task, where a busy port would only be logged: find out
        // here, where it can be reported as a start-up error.
        drop(TcpListener::bind(addr).map_err(|source| EmbeddedError::Bind { addr, source })?);

        let (storage_url, temp, data) = storage_location(&storage)?;
        let advertised = advertised.unwrap_or_else(|| default_advertised(addr));
        let broker = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
            .node_id(1)
            .cluster_id("barnabas")
            .incarnation_id(uuid::Uuid::new_v4())
            .advertised_listener(parse_url(&format!("tcp://{advertised}"))?)
            .storage(storage_url.clone())
            .listener(parse_url(&format!("tcp://{addr}"))?)
            .silent(true)
            .authentication(sasl)
            .build()
            .await
            .map_err(|e| EmbeddedError::Broker(format!("{e:?}")))?;

        let task = tokio::spawn(async move {
            let mut broker = broker;
            if let Err(e) = broker.serve(tokio::time::Instant::now()).await {
                tracing::error!(error = ?e, "embedded Kafka broker stopped");
            }
        });
        let this = Self {
            addr,
            advertised,
            storage_url,
            task: Some(task),
            _temp: temp,
        };
        this.wait_accepting().await?;
        let kept = !matches!(storage, Storage::Temporary);
        tracing::info!(listen = %addr, advertised = %this.advertised, data = %data, kept, "embedded Kafka broker started");
        Ok(this)
    }

    /// Stores a SCRAM-SHA-256 credential for `user` in the broker, as Kafka's
    /// AlterUserScramCredentials would (on a broker started with SASL, a client can only log in
    /// with a stored SCRAM credential, so the first ones are stored here, directly).
    pub async fn add_scram_user(&self, user: &str, password: &str) -> Result<(), EmbeddedError> {
        use sha2::{Digest, Sha256};

        const ITERATIONS: u32 = 4096;
        let salt = uuid::Uuid::new_v4().as_bytes().to_vec();
        let mut salted = Default::default();
        rsasl::mechanisms::scram::tools::hash_password::<Sha256>(
            password.as_bytes(),
            ITERATIONS,
            &salt,
            &mut salted,
        );
        let (client_key, server_key) =
            rsasl::mechanisms::scram::tools::derive_keys::<Sha256>(salted.as_slice());
        let credential = tansu_storage::ScramCredential {
            salt: salt.into(),
            iterations: ITERATIONS as i32,
            stored_key: Sha256::digest(client_key).to_vec().into(),
            server_key: server_key.to_vec().into(),
        };
        let storage = StorageContainer::builder()
            .cluster_id("barnabas")
            .node_id(1)
            .advertised_listener(parse_url(&format!("tcp://{}", self.advertised))?)
            .storage(self.storage_url.clone())
            .silent(true)
            .build()
            .await
            .map_err(|e| EmbeddedError::Broker(format!("{e:?}")))?;
        tansu_storage::Storage::upsert_user_scram_credential(
            &storage,
            user,
            tansu_sans_io::ScramMechanism::Scram256,
            credential,
        )
        .await
        .map_err(|e| EmbeddedError::Broker(format!("storing {user}'s SCRAM credential: {e:?}")))
    }

    /// Polls until the broker's port accepts a connection (bounded).
    async fn wait_accepting(&self) -> Result<(), EmbeddedError> {
        let probe = self.advertised.clone();
        for _ in 0..200 {
            if self.task.as_ref().is_some_and(JoinHandle::is_finished) {
                return Err(EmbeddedError::Broker(
                    "broker task ended during start".into(),
                ));
            }
            if tokio::net::TcpStream::connect(&probe).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(EmbeddedError::Broker(format!(
            "broker did not accept connections on {probe} within 5 s"
        )))
    }

    /// The `bootstrap.servers` value for clients of this broker.
    pub fn bootstrap(&self) -> String {
        self.advertised.clone()
    }

    /// The address the broker listens on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the broker task has ended (it should not while the gateway runs).
    pub fn has_stopped(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the broker (tansu has no stop handle: its task is aborted, which drops its
    /// listener and connections) and removes temporary storage.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Where `storage` keeps the broker's data: tansu's storage URL, the temporary directory to
/// delete on stop (if any), and the path to log.
fn storage_location(storage: &Storage) -> Result<(Url, Option<TempDir>, String), EmbeddedError> {
    Ok(match storage {
        Storage::Temporary => {
            let dir = tempfile::Builder::new()
                .prefix("barnabas-kafka-")
                .tempdir()
                .map_err(|e| EmbeddedError::DataDir {
                    path: std::env::temp_dir(),
                    reason: e.to_string(),
                })?;
            let file = dir.path().join("tansu.db");
            (sqlite_url(&file)?, Some(dir), file.display().to_string())
        }
        Storage::Dir(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| EmbeddedError::DataDir {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
            let dir = dir.canonicalize().map_err(|e| EmbeddedError::DataDir {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
            let file = dir.join("tansu.db");
            (sqlite_url(&file)?, None, file.display().to_string())
        }
        Storage::Null => (
            parse_url("null://barnabas")?,
            None,
            "nowhere (null)".to_owned(),
        ),
    })
}

/// The address clients are told to use when none was given: the listen address, with
/// 127.0.0.1 for an unspecified (0.0.0.0) host.
fn default_advertised(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    SocketAddr::new(ip.parse().unwrap_or(addr.ip()), addr.port()).to_string()
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn parse_url(s: &str) -> Result<Url, EmbeddedError> {
    Url::parse(s).map_err(|e| EmbeddedError::Broker(format!("bad URL {s}: {e}")))
}

/// tansu 0.6.0 joins a `sqlite://` URL's host and path onto the current directory, which
/// turns an absolute path into a relative one. A path that begins with `//` survives that
/// join as an absolute path (`PathBuf::push` of an absolute path replaces), so an absolute
/// file is written as `sqlite://barnabas//abs/path`.
fn sqlite_url(file: &Path) -> Result<Url, EmbeddedError> {
    let path = file
        .to_str()
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| EmbeddedError::DataDir {
            path: file.to_owned(),
            reason: "needs an absolute UTF-8 path".into(),
        })?;
    let url = parse_url(&format!("sqlite://barnabas/{path}"))?;
    if url.path() != format!("/{path}") {
        return Err(EmbeddedError::DataDir {
            path: file.to_owned(),
            reason: "the path has characters the embedded broker cannot address (use letters, digits, '/', '.', '-', '_')".into(),
        });
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_url_keeps_absolute_paths() -> Result<(), EmbeddedError> {
        let url = sqlite_url(Path::new("/tmp/x/tansu.db"))?;
        assert_eq!(url.path(), "//tmp/x/tansu.db");
        // What tansu does with it: current dir + host, then push(path minus one '/').
        let mut joined = PathBuf::from("/somewhere");
        joined.push(url.domain().unwrap_or_default());
        joined.push(url.path().strip_prefix('/').unwrap_or(url.path()));
        assert_eq!(joined, PathBuf::from("/tmp/x/tansu.db"));
        assert!(sqlite_url(Path::new("relative/tansu.db")).is_err());
        assert!(sqlite_url(Path::new("/tmp/with space/tansu.db")).is_err());
        Ok(())
    }
}
