//! A whole MQTT session fed arbitrary packet sequences: the first byte picks the protocol
//! version and session flags of a valid CONNECT (or, with its top bit set, the input is the raw
//! connection from its first byte), the rest is whatever the client sends next: PUBLISH at
//! every QoS, SUBSCRIBE and deliveries back, PUBREL/PUBACK for unknown ids, pings, garbage.
//! Behind the session is an in-memory Kafka (`barnabas_fuzz::memory_kafka`); time is tokio's
//! paused clock, so deadlines pass instantly. Must never panic, whatever arrives.
#![no_main]

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use barnabas_core::{Authenticator, GatewayMetrics, MetricsRegistry, TopicCatalog, TopicMapper};
use barnabas_mqtt::{
    retained::RetainedStore, state::MqttState, store::SessionStore, MqttContext, MqttMetrics,
    MqttSettings, Sessions,
};
use libfuzzer_sys::fuzz_target;
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

fn context(shutdown: &CancellationToken) -> Arc<MqttContext> {
    let backend = barnabas_fuzz::memory_kafka::backend();
    let registry = MetricsRegistry::new();
    let live = Arc::new(Sessions::default());
    let retained = Arc::new(RetainedStore::default());
    let stored = Arc::new(SessionStore::default());
    let state = MqttState::follow(
        &backend,
        live.clone(),
        stored.clone(),
        retained.clone(),
        shutdown.clone(),
    );
    Arc::new(MqttContext {
        backend_publisher: backend.publisher.clone(),
        mapper: TopicMapper::new(&[], "mqtt").expect("the default mapping compiles"),
        settings: MqttSettings {
            max_message_bytes: 65_536,
            connect_timeout: Duration::from_secs(5),
            receive_window: 16,
            max_connections: 16,
            publish_rate: 0,
            max_subscriptions: 16,
            kafka_metadata: true,
        },
        metrics: MqttMetrics::new(&registry),
        gateway_metrics: GatewayMetrics::new(&registry),
        sessions: live,
        consumers: backend.consumers.clone(),
        admin: backend.admin.clone(),
        catalog: TopicCatalog::spawn(backend.admin.clone(), Duration::from_millis(500)),
        retained,
        stored,
        state,
        auth: Arc::new(Authenticator::open()),
        throttle: Arc::default(),
        tls: None,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let input = if flags & 0x80 != 0 {
        rest.to_vec()
    } else {
        let mut v = connect(flags);
        v.extend_from_slice(rest);
        v
    };
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
        let reader = input
            .as_slice()
            .chain(EofLater(Box::pin(tokio::time::sleep(Duration::from_secs(3)))));
        let io = tokio::io::join(reader, tokio::io::sink());
        let peer = "127.0.0.1:1883".parse().expect("a socket address");
        let session = barnabas_mqtt::session::run(io, peer, None, ctx, shutdown.clone());
        // Bounded in virtual time: a session that never ends is a finding too.
        let ended = tokio::time::timeout(Duration::from_secs(600), session).await;
        assert!(ended.is_ok(), "the session did not end after its client left");
        shutdown.cancel();
    });
});
