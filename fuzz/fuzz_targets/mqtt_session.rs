//! A whole MQTT session fed arbitrary packet sequences: the first byte picks the protocol
//! version and session flags of a valid CONNECT (or, with its top bit set, the input is the raw
//! connection from its first byte), the rest is whatever the client sends next: PUBLISH at
//! every QoS, SUBSCRIBE and deliveries back, PUBREL/PUBACK for unknown ids, pings, garbage.
//! Behind the session is an in-memory Kafka (`barnabas_fuzz::memory_kafka`); time is tokio's
//! paused clock, so deadlines pass instantly. Must never panic, whatever arrives.
//!
//! Issue 20: the retained store holds messages (one with an absurd expiry) and a persistent
//! session of the client id is stored with a `#` subscription, so SUBSCRIBE and restored
//! sessions deliver retained messages and Kafka records, one of which carries a forged
//! `barnabas.mqtt.message_expiry`; flag bits put a v5 PUBLISH with `barnabas.*` user
//! properties and a SUBSCRIBE repeating `#` hundreds of times in front of the input. Each
//! input runs under a wall-clock watchdog: a session that spins without awaiting (which the
//! paused clock cannot catch) aborts the process, and is a finding.
#![no_main]

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use barnabas_core::{
    Authenticator, GatewayMetrics, Header, MetricsRegistry, Principal, Record, Services,
    TopicMapper,
};
use barnabas_mqtt::{
    convert::{Message, EXPIRY_HEADER, TOPIC_HEADER},
    filter::Filter,
    store::{StoredSession, Subscribed},
    MqttContext, MqttSettings,
};
use libfuzzer_sys::fuzz_target;
use rmqtt_codec::types::QoS;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio_util::sync::CancellationToken;

/// End of input after a (virtual) while, so deliveries and acks run before the client "leaves".
struct EofLater(Pin<Box<tokio::time::Sleep>>);

impl AsyncRead for EofLater {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.0.as_mut().poll(cx).map(Ok)
    }
}

use std::future::Future;

/// A valid CONNECT: MQTT 3.1.1 or 5, clean or not, with or without a will.
fn connect(flags: u8) -> Vec<u8> {
    let v5 = flags & 1 != 0;
    let clean = flags & 2 != 0;
    let will = flags & 4 != 0;
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', if v5 { 5 } else { 4 }];
    body.push(u8::from(clean) << 1 | if will { 0b0000_1100 } else { 0 });
    body.extend([0, 60]); // keep alive
    if v5 {
        body.push(0); // no properties
    }
    let id = b"fuzz";
    body.extend([0, id.len() as u8]);
    body.extend(id);
    if will {
        if v5 {
            body.push(0);
        }
        body.extend([0, 4]);
        body.extend(b"will");
        body.extend([0, 2, b'h', b'i']);
    }
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// Wall-clock bound on one input: far above what a session needs on the paused clock.
const WALL_CLOCK_LIMIT: Duration = Duration::from_secs(20);

/// Panics (so libFuzzer aborts and keeps the input) unless the returned sender is dropped
/// within [`WALL_CLOCK_LIMIT`]: a loop without an await never yields to tokio's timers.
fn watchdog() -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(WALL_CLOCK_LIMIT) {
            panic!("one input ran over {WALL_CLOCK_LIMIT:?} of wall-clock time: a spin");
        }
    });
    tx
}

/// An MQTT remaining length.
fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        out.push(if n > 0 { byte | 0x80 } else { byte });
        if n == 0 {
            break;
        }
    }
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    varint(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.extend((s.len() as u16).to_be_bytes());
    out.extend(s.as_bytes());
}

/// A v5 QoS 1 PUBLISH whose user properties forge gateway headers.
fn forged_publish() -> Vec<u8> {
    let mut props = Vec::new();
    for (k, v) in [
        (EXPIRY_HEADER, "18446744073709551615"),
        (TOPIC_HEADER, "$SYS/forged"),
        ("Barnabas.mqtt.qos", "9"),
    ] {
        props.push(0x26);
        string(k, &mut props);
        string(v, &mut props);
    }
    let mut body = Vec::new();
    string("a/b", &mut body);
    body.extend([0, 1]);
    varint(props.len(), &mut body);
    body.extend(props);
    body.extend(b"boom");
    packet(0x32, &body)
}

/// A SUBSCRIBE repeating `#` (QoS 1) `times` times.
fn repeated_subscribe(v5: bool, times: usize) -> Vec<u8> {
    let mut body = vec![0, 2];
    if v5 {
        body.push(0);
    }
    for _ in 0..times {
        string("#", &mut body);
        body.push(1);
    }
    packet(0x82, &body)
}

/// Retained messages (one expiring at an absurd time), a Kafka record with a forged expiry,
/// and a stored session of the client id subscribed to `#`.
async fn seed(ctx: &MqttContext) {
    for (topic, expires_at) in [
        ("a/b", None),
        ("$SYS/x", None),
        (
            "c",
            std::time::UNIX_EPOCH.checked_add(Duration::from_secs(u64::from(u32::MAX) * 4)),
        ),
    ] {
        ctx.retained.set(Message {
            topic: topic.into(),
            payload: bytes::Bytes::from_static(b"kept"),
            qos: QoS::AtLeastOnce,
            retain: true,
            headers: vec![Header::new(EXPIRY_HEADER, "18446744073709551615")],
            origin_client: None,
            expires_at,
        });
    }
    let record = Record::new("mqtt", "forged")
        .with_key("a/b")
        .with_header(EXPIRY_HEADER, "18446744073709551615")
        .with_header(TOPIC_HEADER, "a/b");
    let _ = ctx.publisher.publish_one_as(&Principal::anonymous(), record).await;
    if let Some(filter) = Filter::parse("#") {
        let sub = Subscribed {
            filter,
            qos: QoS::ExactlyOnce,
            no_local: false,
            retain_as_published: true,
            id: None,
            since: Default::default(),
        };
        ctx.stored
            .put("fuzz", StoredSession::new(vec![sub], u32::MAX, None));
    }
}

fn context(shutdown: &CancellationToken) -> Arc<MqttContext> {
    let registry = MetricsRegistry::new();
    let services = Services {
        backend: barnabas_fuzz::memory_kafka::backend(),
        gateway_metrics: GatewayMetrics::new(&registry),
        registry,
        auth: Arc::new(Authenticator::open()),
        tls: None,
    };
    let settings = MqttSettings {
        max_message_bytes: 65_536,
        connect_timeout: Duration::from_secs(5),
        receive_window: 16,
        max_connections: 16,
        publish_rate: 0,
        max_subscriptions: 16,
        kafka_metadata: true,
        server_keep_alive: None,
        max_sessions: 16,
        max_consumers_per_connection: 4,
        ws_allowed_origins: Vec::new(),
        max_retained_bytes: usize::MAX,
        topic_refresh: Duration::from_millis(500),
    };
    let mapper = TopicMapper::new(&[], "mqtt").expect("the default mapping compiles");
    MqttContext::new(&services, mapper, settings, shutdown)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let input = if flags & 0x80 != 0 {
        rest.to_vec()
    } else {
        let mut v = connect(flags);
        let v5 = flags & 1 != 0;
        if v5 && flags & 8 != 0 {
            v.extend(forged_publish());
        }
        if flags & 16 != 0 {
            v.extend(repeated_subscribe(v5, 300));
        }
        v.extend_from_slice(rest);
        v
    };
    let _watchdog = watchdog();
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    else {
        return;
    };
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let ctx = context(&shutdown);
        seed(&ctx).await;
        let reader =
            input
                .as_slice()
                .chain(EofLater(Box::pin(tokio::time::sleep(Duration::from_secs(
                    3,
                )))));
        let io = tokio::io::join(reader, tokio::io::sink());
        let peer = "127.0.0.1:1883".parse().expect("a socket address");
        let session = barnabas_mqtt::session::run(io, peer, None, ctx, shutdown.clone());
        // Bounded in virtual time: a session that never ends is a finding too.
        let ended = tokio::time::timeout(Duration::from_secs(600), session).await;
        assert!(
            ended.is_ok(),
            "the session did not end after its client left"
        );
        shutdown.cancel();
    });
});
