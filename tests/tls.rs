//! TLS on every listener (issue 10): HTTPS, MQTT over TLS and AMQPS with one certificate, made
//! in the test with rcgen; the stock clients (curl, mosquitto_pub/sub, python3-qpid-proton)
//! with the right CA, a wrong CA and plain TCP to a TLS port; a client certificate as the
//! principal (mutual TLS); the certificate reloaded on SIGHUP while a connection stays open.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use common::{free_addr, hash_password, text, wait_for_status, Gateway};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA that signs certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A certificate for `names` (server SANs) or with common name `cn` (client): PEM cert
    /// and key.
    fn issue(&self, names: &[&str], cn: &str) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(&self, path: &Path) {
        std::fs::write(path, self.cert.pem()).unwrap();
    }
}

struct Setup {
    dir: tempfile::TempDir,
    http: SocketAddr,
    https: SocketAddr,
    mqtts: SocketAddr,
    wss: SocketAddr,
    amqps: SocketAddr,
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// Certificates (server by `ca`, client `device-1` by `client_ca`, a `wrong` CA), users,
/// and a config with every TLS listener; returns the running gateway.
fn start(ca: &Ca, client_ca: &Ca) -> (Setup, Gateway) {
    start_with(ca, client_ca, &[])
}

/// [`start`] with extra environment for the gateway.
fn start_with(ca: &Ca, client_ca: &Ca, env: &[(&str, &str)]) -> (Setup, Gateway) {
    let s = Setup {
        dir: tempfile::tempdir().unwrap(),
        http: free_addr(),
        https: free_addr(),
        mqtts: free_addr(),
        wss: free_addr(),
        amqps: free_addr(),
    };
    ca.write(&s.path("ca.pem"));
    client_ca.write(&s.path("client-ca.pem"));
    Ca::new("wrong CA").write(&s.path("wrong-ca.pem"));
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"], "barnabas");
    std::fs::write(s.path("server.pem"), cert).unwrap();
    std::fs::write(s.path("server.key"), key).unwrap();
    let (cert, key) = client_ca.issue(&[], "device-1");
    std::fs::write(s.path("client.pem"), cert).unwrap();
    std::fs::write(s.path("client.key"), key).unwrap();
    std::fs::write(
        s.path("users.toml"),
        format!(
            "[[user]]\nname = \"device-1\"\npassword_hash = \"{}\"\n",
            hash_password("s3cret")
        ),
    )
    .unwrap();
    let config = format!(
        r#"
[http]
listen = "{http}"
tls_listen = "{https}"
[mqtt]
listen = "off"
tls_listen = "{mqtts}"
wss_listen = "{wss}"
[[mqtt.mapping]]
pattern = "devices/{{device}}/telemetry"
kafka_topic = "telemetry"
key = "{{device}}"
[amqp]
listen = "off"
tls_listen = "{amqps}"
[tls]
cert_file = "{cert}"
key_file = "{key}"
client_ca_file = "{client_ca}"
[auth]
mode = "users"
users_file = "{users}"
[[acl]]
principal = "device-1"
allow = ["write:telemetry", "read:telemetry", "group:*"]
"#,
        http = s.http,
        https = s.https,
        mqtts = s.mqtts,
        wss = s.wss,
        amqps = s.amqps,
        cert = s.file("server.pem"),
        key = s.file("server.key"),
        client_ca = s.file("client-ca.pem"),
        users = s.file("users.toml"),
    );
    std::fs::write(s.path("barnabas.toml"), config).unwrap();
    let kafka = free_addr().to_string();
    let gateway = Gateway::spawn(
        &[
            "run",
            "--config",
            &s.file("barnabas.toml"),
            &format!("--embedded-kafka={kafka}"),
        ],
        env,
    );
    wait_for_status(s.http, "/ready", 200, Duration::from_secs(60));
    (s, gateway)
}

fn mosquitto_pub(s: &Setup, tls: &[&str], message: &str) -> Output {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &s.mqtts.port().to_string()])
        .args(["-q", "1", "-t", "devices/device-1/telemetry", "-m", message])
        .args(tls)
        .output()
        .expect("mosquitto_pub")
}

fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn every_listener_speaks_tls_with_the_right_ca_only_and_client_certificates_name_principals() {
    let (ca, client_ca) = (Ca::new("test CA"), Ca::new("client CA"));
    let (s, mut gateway) = start(&ca, &client_ca);
    let (ca_file, wrong) = (s.file("ca.pem"), s.file("wrong-ca.pem"));
    let login = ["-u", "device-1", "-P", "s3cret"];

    // MQTT over TLS: the right CA and a password; the wrong CA fails; plain TCP to the TLS
    // port fails; a client certificate alone logs in as its CN.
    let ok = mosquitto_pub(
        &s,
        &[&["--cafile", &ca_file][..], &login[..]].concat(),
        "tls-password",
    );
    assert!(ok.status.success(), "{}", text(&ok));
    let bad = mosquitto_pub(&s, &[&["--cafile", &wrong][..], &login[..]].concat(), "x");
    assert!(!bad.status.success(), "wrong CA accepted: {}", text(&bad));
    let plain = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &s.mqtts.port().to_string()])
        .args(["-q", "1", "-t", "devices/device-1/telemetry", "-m", "x"])
        .args(login)
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "plain TCP accepted on the TLS port: {}",
        text(&plain)
    );
    let (cert, key) = (s.file("client.pem"), s.file("client.key"));
    let mtls = mosquitto_pub(
        &s,
        &["--cafile", &ca_file, "--cert", &cert, "--key", &key],
        "tls-certificate",
    );
    assert!(mtls.status.success(), "client certificate: {}", text(&mtls));
    let anonymous = mosquitto_pub(&s, &["--cafile", &ca_file], "x");
    assert!(
        !anonymous.status.success(),
        "no credentials at all: {}",
        text(&anonymous)
    );

    // HTTPS: the same certificate; probes open, produce with Basic or the client
    // certificate, the wrong CA refused by curl (exit 60).
    let https = |path: &str| format!("https://127.0.0.1:{}{path}", s.https.port());
    assert_eq!(
        curl(&["--cacert", &ca_file, &https("/ready")]),
        (0, "200".into())
    );
    let (code, _) = curl(&["--cacert", &wrong, &https("/ready")]);
    assert_eq!(code, 60, "curl trusts a server its CA did not sign");
    let produce = |extra: &[&str]| {
        let mut args = vec![
            "--cacert",
            &ca_file,
            "-X",
            "POST",
            "-H",
            "content-type: application/vnd.kafka.json.v2+json",
            "--data",
            r#"{"records":[{"value":"https"}]}"#,
        ];
        args.extend_from_slice(extra);
        let url = https("/topics/telemetry");
        args.push(&url);
        curl(&args)
    };
    assert_eq!(produce(&[]), (0, "401".into()));
    assert_eq!(produce(&["-u", "device-1:s3cret"]), (0, "200".into()));
    assert_eq!(
        produce(&["--cert", &cert, "--key", &key]),
        (0, "200".into())
    );

    // AMQPS with python3-qpid-proton: SASL PLAIN inside TLS; the wrong CA fails.
    let amqps = |creds: &str| format!("amqps://{creds}localhost:{}", s.amqps.port());
    let (ok, error) = proton(&amqps("device-1:s3cret@"), &ca_file, &[]);
    assert!(ok, "AMQPS: {error}");
    let (ok, _) = proton(&amqps("device-1:s3cret@"), &wrong, &[]);
    assert!(!ok, "AMQPS with the wrong CA");
    // SASL EXTERNAL: no password, the client certificate's CN is the principal.
    let external = [
        ("AMQP_CERT", cert.as_str()),
        ("AMQP_KEY", key.as_str()),
        ("AMQP_MECHS", "EXTERNAL"),
    ];
    let (ok, error) = proton(&amqps(""), &ca_file, &external);
    assert!(ok, "AMQPS with SASL EXTERNAL: {error}");
    let (ok, _) = proton(&amqps(""), &ca_file, &[("AMQP_MECHS", "EXTERNAL")]);
    assert!(!ok, "SASL EXTERNAL without a client certificate");

    // MQTT over WebSocket over TLS with paho-mqtt: the right CA and a password.
    let wss = |ca: &str, password: &str| paho_wss(&s, ca, password);
    let v = wss(&ca_file, "s3cret");
    assert_eq!(v["puback"], true, "MQTT over WSS: {v}");
    let v = wss(&wrong, "s3cret");
    assert_eq!(v["puback"], false, "MQTT over WSS with the wrong CA: {v}");
    assert!(!v["error"].as_str().unwrap().is_empty(), "{v}");
    let v = wss(&ca_file, "wrong");
    assert_eq!(
        v["puback"], false,
        "MQTT over WSS with a wrong password: {v}"
    );

    // Seven records made it: MQTT password + certificate, HTTPS Basic + certificate, AMQPS
    // with PLAIN and with EXTERNAL, MQTT over WSS.
    let out = Command::new(common::python())
        .arg(common::workspace_root().join("tests/python/kafka_client.py"))
        .args([
            "consume",
            &gateway_kafka(&gateway),
            "telemetry",
            "check-tls",
            "7",
        ])
        .output()
        .unwrap();
    let got: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("kafka_client: {}", text(&out)));
    assert_eq!(got.len(), 7, "{got:?}");

    gateway.signal("TERM");
    assert!(gateway.wait_exit(Duration::from_secs(30)).success());
}

/// python3-qpid-proton sends one message to `telemetry` at `url` trusting `ca`: (accepted,
/// error).
fn proton(url: &str, ca: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut all = vec![("AMQP_CA", ca)];
    all.extend_from_slice(env);
    let a = common::proton_try(url, "send", "telemetry", &all);
    (a.ok, a.error)
}

/// paho-mqtt over WSS logs in as `device-1` with `password` trusting `ca` and publishes one
/// QoS 1 message: `{"connack", "puback", "error"}`.
fn paho_wss(s: &Setup, ca: &str, password: &str) -> serde_json::Value {
    let out = Command::new(common::python())
        .arg(common::workspace_root().join("tests/python/mqtt_paho_wss.py"))
        .args([
            "localhost",
            &s.wss.port().to_string(),
            ca,
            "device-1",
            password,
        ])
        .arg("devices/device-1/telemetry")
        .output()
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap_or_else(|_| panic!("paho: {}", text(&out)))
}

/// `limits.max_connections` on the TLS listeners (per listener): a connection over the limit
/// still gets its protocol's "server busy" answer, over TLS — mosquitto_pub (MQTT 3.1.1 and 5)
/// and paho-mqtt over WSS are told the server is unavailable/busy, curl gets 503,
/// python3-qpid-proton `amqp:resource-limit-exceeded` — and once the slot is free, the same
/// client is served.
#[test]
fn tls_listeners_over_their_connection_limit_answer_busy_over_tls() {
    let (ca, client_ca) = (Ca::new("test CA"), Ca::new("client CA"));
    let (s, mut gateway) = start_with(
        &ca,
        &client_ca,
        &[("BARNABAS_LIMITS__MAX_CONNECTIONS", "1")],
    );
    let ca_file = s.file("ca.pem");
    let login = ["-u", "device-1", "-P", "s3cret"];
    let pub_args = |version: &'static str| {
        let mut args = vec!["-V", version, "--cafile", ca_file.as_str()];
        args.extend_from_slice(&login);
        args
    };

    for (version, reason) in [("mqttv311", "unavailable"), ("mqttv5", "busy")] {
        let out = while_held(s.mqtts, || mosquitto_pub(&s, &pub_args(version), "busy"));
        assert!(
            !out.status.success() && text(&out).to_ascii_lowercase().contains(reason),
            "MQTT/TLS {version} over the limit: {}",
            text(&out)
        );
    }
    eventually("MQTT/TLS served again", || {
        mosquitto_pub(&s, &pub_args("mqttv5"), "after")
            .status
            .success()
    });

    let v = while_held(s.wss, || paho_wss(&s, &ca_file, "s3cret"));
    assert!(
        v["connack"]
            .as_str()
            .is_some_and(|c| c.to_ascii_lowercase().contains("unavailable")),
        "MQTT/WSS over the limit: {v}"
    );
    eventually("MQTT/WSS served again", || {
        paho_wss(&s, &ca_file, "s3cret")["puback"] == true
    });

    let https = format!("https://127.0.0.1:{}/ready", s.https.port());
    assert_eq!(
        while_held(s.https, || curl(&["--cacert", &ca_file, &https])),
        (0, "503".into()),
        "HTTPS over the limit"
    );
    eventually("HTTPS served again", || {
        curl(&["--cacert", &ca_file, &https]) == (0, "200".into())
    });

    let amqps = format!("amqps://device-1:s3cret@localhost:{}", s.amqps.port());
    let (ok, error) = while_held(s.amqps, || proton(&amqps, &ca_file, &[]));
    assert!(
        !ok && error.contains("resource-limit-exceeded"),
        "AMQPS over the limit: {error}"
    );
    eventually("AMQPS served again", || proton(&amqps, &ca_file, &[]).0);

    gateway.signal("TERM");
    assert!(gateway.wait_exit(Duration::from_secs(30)).success());
}

/// Runs `attempt` while `addr`'s one connection slot is taken by a TCP connection that has not
/// begun its handshake. The gateway closes such a connection at its handshake deadline
/// (`tls.handshake_timeout_ms`, 5 s), so an attempt that took 4 s or more may have found the slot free again: it
/// is not judged but made again with a fresh hold (3 times at most).
fn while_held<T>(addr: SocketAddr, mut attempt: impl FnMut() -> T) -> T {
    for _ in 0..3 {
        let held = std::net::TcpStream::connect(addr).unwrap();
        let started = std::time::Instant::now();
        let result = attempt();
        let took = started.elapsed();
        drop(held);
        // The gateway sees the close at once; let it free the slot before any next hold.
        std::thread::sleep(Duration::from_millis(300));
        if took < Duration::from_secs(4) {
            return result;
        }
    }
    panic!("every attempt took 4 s or more: the slot may have been free again");
}

/// Retries `check` for up to 20 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 20 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The embedded broker's address, from the gateway's "barnabas ready" line.
fn gateway_kafka(gateway: &Gateway) -> String {
    gateway
        .stderr()
        .iter()
        .find(|l| l.contains("barnabas ready"))
        .and_then(|l| l.split("kafka=").nth(1))
        .map(|k| k.split_whitespace().next().unwrap_or("").to_owned())
        .expect("ready line with the Kafka address")
}

#[test]
fn sighup_reloads_the_certificate_and_open_connections_stay() {
    let (ca, client_ca) = (Ca::new("test CA"), Ca::new("client CA"));
    let (s, mut gateway) = start(&ca, &client_ca);
    let ca_file = s.file("ca.pem");
    // A subscriber connected with the first certificate.
    let subscriber = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &s.mqtts.port().to_string()])
        .args(["--cafile", &ca_file, "-u", "device-1", "-P", "s3cret"])
        .args([
            "-t",
            "devices/+/telemetry",
            "-q",
            "1",
            "-C",
            "1",
            "-W",
            "60",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for_metric_line(
        s.http,
        "barnabas_mqtt_subscriptions 1",
        "the subscriber connected with the first certificate",
        Duration::from_secs(30),
    );

    // A new certificate from another CA, then SIGHUP.
    let new_ca = Ca::new("new CA");
    new_ca.write(&s.path("new-ca.pem"));
    let (cert, key) = new_ca.issue(&["localhost", "127.0.0.1"], "barnabas");
    std::fs::write(s.path("server.pem"), cert).unwrap();
    std::fs::write(s.path("server.key"), key).unwrap();
    gateway.signal("HUP");
    gateway.wait_for_line("TLS certificate reloaded", Duration::from_secs(10));

    let login = ["-u", "device-1", "-P", "s3cret"];
    let old = mosquitto_pub(&s, &[&["--cafile", &ca_file][..], &login[..]].concat(), "x");
    assert!(
        !old.status.success(),
        "the old certificate is still served: {}",
        text(&old)
    );
    let new_ca_file = s.file("new-ca.pem");
    let new = mosquitto_pub(
        &s,
        &[&["--cafile", &new_ca_file][..], &login[..]].concat(),
        "after-reload",
    );
    assert!(new.status.success(), "{}", text(&new));
    // The subscriber that connected before the reload is still there and gets the record.
    let out = subscriber.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "after-reload");

    // A key file that does not load: the reload fails, the current certificate stays.
    std::fs::write(s.path("server.key"), "not a key").unwrap();
    gateway.signal("HUP");
    gateway.wait_for_line("TLS certificate not reloaded", Duration::from_secs(10));
    let still = mosquitto_pub(
        &s,
        &[&["--cafile", &new_ca_file][..], &login[..]].concat(),
        "y",
    );
    assert!(still.status.success(), "{}", text(&still));
    gateway.signal("TERM");
    assert!(gateway.wait_exit(Duration::from_secs(30)).success());
}

#[test]
fn a_bad_certificate_file_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("barnabas.toml");
    std::fs::write(
        &config,
        "[mqtt]\ntls_listen = \"127.0.0.1:0\"\n[tls]\ncert_file = \"/nonexistent/server.pem\"\nkey_file = \"/nonexistent/server.key\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_barnabas"))
        .args(["check-config", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tls.cert_file") && err.contains("/nonexistent/server.pem"),
        "{err}"
    );
}

/// openssl s_client against `addr` with `version` (`-tls1_1`, `-tls1_2`, …) trusting `ca`:
/// (handshake completed, what it printed). `DEFAULT@SECLEVEL=0` and no system configuration
/// let OpenSSL itself offer the old versions, so a refusal is the server's.
fn s_client(addr: SocketAddr, version: &str, ca: &str) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), version])
        .args(["-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", ca, "-brief"])
        // No system configuration: it may raise the client's own minimum version.
        .env("OPENSSL_CONF", "/dev/null")
        .stdin(Stdio::null())
        .output()
        .expect("openssl (Debian package openssl)");
    let said = text(&out);
    let done = said.contains("Protocol version:") || said.contains("CONNECTION ESTABLISHED");
    (done, said)
}

/// TLS 1.2 and 1.3 only, on every TLS listener: openssl s_client completes a handshake with
/// `-tls1_2` and `-tls1_3`, and is refused with `-tls1_1` and `-tls1` (the server answers
/// with an alert).
#[test]
fn every_tls_listener_speaks_tls_1_2_and_1_3_only() {
    let (ca, client_ca) = (Ca::new("test CA"), Ca::new("client CA"));
    let (s, mut gateway) = start(&ca, &client_ca);
    let ca_file = s.file("ca.pem");
    for (name, addr) in [
        ("HTTPS", s.https),
        ("MQTT/TLS", s.mqtts),
        ("MQTT/WSS", s.wss),
        ("AMQPS", s.amqps),
    ] {
        for (version, spoken) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
            let (done, said) = s_client(addr, version, &ca_file);
            assert!(
                done && said.contains(&format!("Protocol version: {spoken}")),
                "{name} {version}: {said}"
            );
        }
        for version in ["-tls1_1", "-tls1"] {
            let (done, said) = s_client(addr, version, &ca_file);
            assert!(!done, "{name} accepted {version}: {said}");
            // The server's alert (rustls: handshake_failure, no version in common), not a
            // client that gave up by itself.
            assert!(
                said.contains("SSL alert number"),
                "{name} {version} refused by the server: {said}"
            );
        }
    }
    gateway.signal("TERM");
    assert!(gateway.wait_exit(Duration::from_secs(30)).success());
}

/// A key that does not belong to the certificate: `check-config` and `run` both stop with
/// exit 2 and a line naming `tls.key_file` and the file.
#[test]
fn a_key_that_does_not_match_the_certificate_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, _) = ca.issue(&["localhost"], "barnabas");
    let (_, other_key) = ca.issue(&["localhost"], "barnabas");
    let (cert_file, key_file) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, other_key).unwrap();
    let config = dir.path().join("barnabas.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"{}\"\ntls_listen = \"{}\"\n[mqtt]\nlisten = \"off\"\n\
             [tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            free_addr(),
            free_addr(),
            cert_file.display(),
            key_file.display()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let kafka = format!("--embedded-kafka={}", free_addr());
    for args in [
        vec!["check-config", "--config", config.as_str()],
        vec!["run", "--config", config.as_str(), kafka.as_str()],
    ] {
        let mut gateway = Gateway::spawn(&args, &[]);
        let status = gateway.wait_exit(Duration::from_secs(30));
        let log = gateway.stderr().join("\n");
        assert_eq!(status.code(), Some(2), "{args:?}: {log}");
        assert!(
            log.contains("tls.key_file") && log.contains(&key_file.display().to_string()),
            "{args:?}: {log}"
        );
    }
}

/// Mutual TLS: a client certificate must chain to `client_ca_file`. One with the same CN
/// (`device-1`) from another CA is refused at the handshake on HTTPS (curl), MQTT/TLS
/// (mosquitto_pub) and AMQPS (python3-qpid-proton, SASL EXTERNAL); the one from the client CA
/// is accepted on each.
#[test]
fn a_client_certificate_must_chain_to_the_client_ca() {
    let (ca, client_ca) = (Ca::new("test CA"), Ca::new("client CA"));
    let (s, mut gateway) = start(&ca, &client_ca);
    let (cert, key) = Ca::new("rogue CA").issue(&[], "device-1");
    std::fs::write(s.path("rogue.pem"), cert).unwrap();
    std::fs::write(s.path("rogue.key"), key).unwrap();
    let ca_file = s.file("ca.pem");
    for (name, cert, key, accepted) in [
        (
            "client CA",
            s.file("client.pem"),
            s.file("client.key"),
            true,
        ),
        ("rogue CA", s.file("rogue.pem"), s.file("rogue.key"), false),
    ] {
        let (code, status) = curl(&[
            "--cacert",
            &ca_file,
            "--cert",
            &cert,
            "--key",
            &key,
            "-X",
            "POST",
            "-H",
            "content-type: application/vnd.kafka.json.v2+json",
            "--data",
            r#"{"records":[{"value":"mtls"}]}"#,
            &format!("https://127.0.0.1:{}/topics/telemetry", s.https.port()),
        ]);
        if accepted {
            assert_eq!((code, status.as_str()), (0, "200"), "HTTPS, {name}");
        } else {
            assert!(
                code != 0 && status == "000",
                "HTTPS with a certificate of the {name}: curl exit {code}, HTTP {status}"
            );
        }
        let out = mosquitto_pub(
            &s,
            &["--cafile", &ca_file, "--cert", &cert, "--key", &key],
            "mtls",
        );
        assert_eq!(
            out.status.success(),
            accepted,
            "MQTT/TLS, {name}: {}",
            text(&out)
        );
        let a = common::proton_try(
            &format!("amqps://localhost:{}", s.amqps.port()),
            "send",
            "telemetry",
            &[
                ("AMQP_CA", ca_file.as_str()),
                ("AMQP_CERT", cert.as_str()),
                ("AMQP_KEY", key.as_str()),
                ("AMQP_MECHS", "EXTERNAL"),
            ],
        );
        assert_eq!(a.ok, accepted, "AMQPS, {name}: {a:?}");
    }
    gateway.signal("TERM");
    assert!(gateway.wait_exit(Duration::from_secs(30)).success());
}

/// SIGHUP reloads the client CA as well as the certificate, on every TLS listener: after a
/// new client CA (and a new server certificate) and SIGHUP, a client certificate of the new
/// client CA names the principal over HTTPS, MQTT/TLS and AMQPS while one of the old client CA
/// is refused; MQTT over WSS serves the new server certificate.
#[test]
fn sighup_reloads_the_client_ca_on_every_tls_listener() {
    let (ca, client_ca) = (Ca::new("test CA"), Ca::new("client CA"));
    let (s, mut gateway) = start(&ca, &client_ca);
    let (new_ca, new_client_ca) = (Ca::new("new CA"), Ca::new("new client CA"));
    new_ca.write(&s.path("new-ca.pem"));
    let (cert, key) = new_client_ca.issue(&[], "device-1");
    std::fs::write(s.path("new-client.pem"), cert).unwrap();
    std::fs::write(s.path("new-client.key"), key).unwrap();

    /// Whether a certificate login works on each of HTTPS, MQTT/TLS and AMQPS.
    fn logins(s: &Setup, ca: &str, cert: &str, key: &str) -> [bool; 3] {
        let (code, status) = curl(&[
            "--cacert",
            ca,
            "--cert",
            cert,
            "--key",
            key,
            "-X",
            "POST",
            "-H",
            "content-type: application/vnd.kafka.json.v2+json",
            "--data",
            r#"{"records":[{"value":"reloaded"}]}"#,
            &format!("https://127.0.0.1:{}/topics/telemetry", s.https.port()),
        ]);
        let https = code == 0 && status == "200";
        let mqtts = mosquitto_pub(
            s,
            &["--cafile", ca, "--cert", cert, "--key", key],
            "reloaded",
        )
        .status
        .success();
        let amqps = common::proton_try(
            &format!("amqps://localhost:{}", s.amqps.port()),
            "send",
            "telemetry",
            &[
                ("AMQP_CA", ca),
                ("AMQP_CERT", cert),
                ("AMQP_KEY", key),
                ("AMQP_MECHS", "EXTERNAL"),
            ],
        )
        .ok;
        [https, mqtts, amqps]
    }
    let (old_cert, old_key) = (s.file("client.pem"), s.file("client.key"));
    let (new_cert, new_key) = (s.file("new-client.pem"), s.file("new-client.key"));
    let (old_server_ca, new_server_ca) = (s.file("ca.pem"), s.file("new-ca.pem"));
    assert_eq!(logins(&s, &old_server_ca, &old_cert, &old_key), [true; 3]);
    assert_eq!(
        logins(&s, &old_server_ca, &new_cert, &new_key),
        [false; 3],
        "the new client CA is not trusted before the reload"
    );

    new_client_ca.write(&s.path("client-ca.pem"));
    let (cert, key) = new_ca.issue(&["localhost", "127.0.0.1"], "barnabas");
    std::fs::write(s.path("server.pem"), cert).unwrap();
    std::fs::write(s.path("server.key"), key).unwrap();
    gateway.signal("HUP");
    gateway.wait_for_line("TLS certificate reloaded", Duration::from_secs(10));

    assert_eq!(
        logins(&s, &new_server_ca, &new_cert, &new_key),
        [true; 3],
        "[HTTPS, MQTT/TLS, AMQPS] trust the new client CA after SIGHUP"
    );
    assert_eq!(
        logins(&s, &new_server_ca, &old_cert, &old_key),
        [false; 3],
        "[HTTPS, MQTT/TLS, AMQPS] no longer trust the old client CA"
    );
    let v = paho_wss(&s, &new_server_ca, "s3cret");
    assert_eq!(
        v["puback"], true,
        "MQTT/WSS serves the new certificate: {v}"
    );
    let v = paho_wss(&s, &old_server_ca, "s3cret");
    assert_eq!(
        v["puback"], false,
        "MQTT/WSS no longer serves the old one: {v}"
    );
    gateway.signal("TERM");
    assert!(gateway.wait_exit(Duration::from_secs(30)).success());
}

/// The TLS handshake deadline (`tls.handshake_timeout_ms`, 5 s by default) on HTTPS: a client that opens a TCP connection to the HTTPS
/// port and says nothing is closed by the gateway within a bound (well under the 30 s header
/// deadline that follows a handshake), while a real client is served meanwhile.
#[test]
fn a_silent_client_is_closed_at_the_https_handshake_deadline() {
    use std::io::Read;
    let (ca, client_ca) = (Ca::new("test CA"), Ca::new("client CA"));
    let (s, mut gateway) = start(&ca, &client_ca);
    let started = std::time::Instant::now();
    let mut silent = std::net::TcpStream::connect(s.https).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    let ready = format!("https://127.0.0.1:{}/ready", s.https.port());
    assert_eq!(
        curl(&["--cacert", &s.file("ca.pem"), &ready]),
        (0, "200".into()),
        "others are served meanwhile"
    );
    let mut buf = [0u8; 64];
    let read = silent.read(&mut buf);
    let took = started.elapsed();
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the gateway closed the silent connection: {read:?} after {took:?}"
    );
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "closed at the 5 s handshake deadline: {took:?}"
    );
    gateway.signal("TERM");
    assert!(gateway.wait_exit(Duration::from_secs(30)).success());
}

/// `auth.mode = "none"` checks nothing, but a verified client certificate still names the
/// principal the ACL applies to: with the certificate of `device-1` (granted
/// `write:telemetry`), mosquitto_pub over TLS publishes; without it, the same client is
/// `anonymous`, granted nothing, and its publish is refused (v3.1.1: closed, no PUBACK).
#[test]
fn with_auth_mode_none_a_client_certificate_still_names_the_principal() {
    let (ca, client_ca) = (Ca::new("test CA"), Ca::new("client CA"));
    let (s, mut gateway) = start_with(&ca, &client_ca, &[("BARNABAS_AUTH__MODE", "none")]);
    let ca_file = s.file("ca.pem");
    let (cert, key) = (s.file("client.pem"), s.file("client.key"));
    let named = mosquitto_pub(
        &s,
        &["--cafile", &ca_file, "--cert", &cert, "--key", &key],
        "certificate",
    );
    assert!(named.status.success(), "as device-1: {}", text(&named));
    let anonymous = mosquitto_pub(&s, &["--cafile", &ca_file], "anonymous");
    assert!(
        !anonymous.status.success(),
        "anonymous may not write telemetry: {}",
        text(&anonymous)
    );
    gateway.signal("TERM");
    assert!(gateway.wait_exit(Duration::from_secs(30)).success());
}
