//! The AMQP 1.0 front end with real clients: the fe2o3-amqp client (Rust) and
//! python3-qpid-proton (Debian), against the gateway and its embedded broker; Kafka read back
//! and written with a Kafka client (the adapter's, and the Python confluent-kafka).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use bytes::Bytes;
use common::{gateway, gateway::TestGateway, read_topic};
use fe2o3_amqp::{
    link::CreditMode,
    sasl_profile::SaslProfile,
    types::{
        definitions::LinkError,
        messaging::{Body, Message, MessageAnnotations, Outcome, Properties, Source},
        primitives::{Symbol, Value},
    },
    Connection, Receiver, Sendable, Sender, Session,
};

fn amqp_addr(gw: &TestGateway) -> SocketAddr {
    gw.gateway.amqp_addr().unwrap()
}

fn with_amqp(c: &mut barnabas::config::Config) {
    c.amqp.listen = "127.0.0.1:0".into();
}

async fn connect(
    gw: &TestGateway,
    id: &str,
) -> (
    fe2o3_amqp::connection::ConnectionHandle<()>,
    fe2o3_amqp::session::SessionHandle<()>,
) {
    let a = amqp_addr(gw);
    let mut conn = Connection::builder()
        .container_id(id)
        .sasl_profile(SaslProfile::Plain {
            username: "alice".into(),
            password: "secret".into(),
        })
        .open(format!("amqp://{a}").as_str())
        .await
        .expect("AMQP connection");
    let session = Session::begin(&mut conn).await.expect("session");
    (conn, session)
}

fn keyed(i: usize) -> Message<fe2o3_amqp::types::messaging::AmqpValue<String>> {
    Message::builder()
        .message_annotations(
            MessageAnnotations::builder()
                .insert("x-opt-kafka-key", format!("k{}", i % 10))
                .build(),
        )
        .application_properties(
            fe2o3_amqp::types::messaging::ApplicationProperties::builder()
                .insert("n", i as i64)
                .build(),
        )
        .properties(Properties::builder().message_id(format!("m{i}")).build())
        .value(format!("v{i}"))
        .build()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_unsettled_transfers_are_accepted_after_kafka_with_keys_and_headers() {
    let gw = gateway::start(with_amqp).await;
    let (mut conn, mut session) = connect(&gw, "sender-1").await;
    let mut sender = Sender::attach(&mut session, "orders-sender", "orders")
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for i in 0..1000 {
        outcomes.push(sender.send_batchable(keyed(i)).await.unwrap());
    }
    let mut accepted = 0;
    for o in outcomes {
        if let Ok(Outcome::Accepted(_)) = o.await {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1000, "every transfer settled accepted");
    let got = read_topic(&gw, "orders", 1000).await;
    assert_eq!(got.len(), 1000, "every accepted transfer is in Kafka");
    let r = got
        .iter()
        .find(|r| r.value.as_deref() == Some(b"v17".as_slice()))
        .unwrap();
    assert_eq!(r.key, Some(Bytes::from("k7")));
    assert_eq!(r.header("n"), Some(&Bytes::from("17")));
    assert_eq!(r.header("amqp.message-id"), Some(&Bytes::from("m17")));
    sender.close().await.unwrap();
    session.end().await.unwrap();
    conn.close().await.unwrap();
    gw.stop().await;
}

/// docs/amqp.md §Links the client sends on: target `T/partitions/P` writes to partition P;
/// pre-settled transfers are written at most once; a value above `limits.max_message_bytes`
/// is `rejected` with `amqp:link:message-size-exceeded` and nothing is written. The whole
/// topic is read back to its high watermarks, so a transfer written twice is seen.
///
/// Broken to: `produce.rs` writing every transfer's records twice: the whole-topic read held
/// each value twice and the exactly-once assertion failed.
#[tokio::test(flavor = "multi_thread")]
async fn partition_by_address_presettled_sends_and_a_too_large_message_is_rejected() {
    let gw = gateway::start(|c| {
        with_amqp(c);
        c.limits.max_message_bytes = 1024;
    })
    .await;
    gw.gateway
        .backend()
        .admin
        .create_topic("parts", Some(3), None)
        .await
        .unwrap();
    let (_conn, mut session) = connect(&gw, "sender-2").await;

    let mut to_p2 = Sender::attach(&mut session, "p2", "parts/partitions/2")
        .await
        .unwrap();
    let o = to_p2
        .send(Message::builder().value("on two".to_string()).build())
        .await
        .unwrap();
    assert!(o.is_accepted(), "{o:?}");

    // Pre-settled: nothing to wait for, written at most once.
    let mut fire = Sender::builder()
        .name("fire")
        .target("parts/partitions/1")
        .sender_settle_mode(fe2o3_amqp::types::definitions::SenderSettleMode::Settled)
        .attach(&mut session)
        .await
        .unwrap();
    for i in 0..10 {
        fire.send(
            Sendable::builder()
                .message(Message::builder().value(format!("fire-{i}")).build())
                .settled(true)
                .build(),
        )
        .await
        .unwrap();
    }

    // Above limits.max_message_bytes: rejected with a condition, nothing written.
    let big = Message::builder().value("x".repeat(2000)).build();
    match to_p2.send(big).await.unwrap() {
        Outcome::Rejected(r) => {
            let e = r.error.expect("a condition");
            assert_eq!(e.condition, LinkError::MessageSizeExceeded.into(), "{e:?}");
            assert!(e.description.unwrap_or_default().contains("1024"));
        }
        other => panic!("expected rejected, got {other:?}"),
    }
    // At most once: the whole topic, read up to each partition's high watermark with the
    // stock client, holds every pre-settled transfer exactly once (and nothing else).
    let mut stored = topic_values(&gw, "parts").await;
    stored.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("fire-{i}")).collect();
    want.push("on two".into());
    want.sort();
    assert_eq!(
        stored, want,
        "each transfer written once, the rejected one never"
    );
    let got = read_topic(&gw, "parts", 11).await;
    assert_eq!(got.len(), 11);
    assert!(got.iter().filter(|r| r.partition == 1).count() == 10);
    let on_two: Vec<_> = got.iter().filter(|r| r.partition == 2).collect();
    assert_eq!(on_two.len(), 1);
    assert_eq!(on_two[0].value, Some(Bytes::from("on two")));
    gw.stop().await;
}

/// Every value of `topic`, all partitions read up to their high watermarks with the stock
/// Kafka client (confluent-kafka), as text.
async fn topic_values(gw: &TestGateway, topic: &str) -> Vec<String> {
    let out = common::python_async("kafka_client.py", &["values", &gw.kafka, topic]).await;
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The error condition a refused link reports at its first use.
async fn refused_send(
    session: &mut fe2o3_amqp::session::SessionHandle<()>,
    address: &str,
) -> String {
    let mut s = Sender::attach(session, format!("s-{address}"), address)
        .await
        .unwrap();
    let err = s
        .send(Message::builder().value("x".to_string()).build())
        .await
        .unwrap_err();
    format!("{err:?}")
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_addresses_are_refused_with_a_condition_and_the_connection_goes_on() {
    let gw = gateway::start(|c| {
        with_amqp(c);
        c.kafka.auto_create_topics = false;
    })
    .await;
    let (_conn, mut session) = connect(&gw, "refused").await;
    let e = refused_send(&mut session, "a/b/c").await;
    assert!(e.contains("InvalidField"), "{e}");
    let e = refused_send(&mut session, "missing-topic").await;
    assert!(
        e.contains("NotFound") && e.contains("auto_create_topics"),
        "{e}"
    );
    // A receiver without a group, and one with a bad filter.
    let mut r = Receiver::attach(&mut session, "no-group", "orders")
        .await
        .unwrap();
    let e = format!("{:?}", r.recv::<Body<Value>>().await.unwrap_err());
    assert!(e.contains("InvalidField"), "{e}");
    let source = Source::builder()
        .address("orders/group.id/g")
        .add_to_filter(
            Symbol::from("apache.org:selector-filter:string"),
            serde_amqp::described::Described {
                descriptor: serde_amqp::descriptor::Descriptor::Code(0x0000_468C_0000_0004),
                value: Value::String("color = 'red'".into()),
            },
        )
        .build();
    let mut r = Receiver::builder()
        .name("bad-filter")
        .source(source)
        .attach(&mut session)
        .await
        .unwrap();
    let e = format!("{:?}", r.recv::<Body<Value>>().await.unwrap_err());
    assert!(e.contains("InvalidField"), "{e}");
    // The same session still works.
    gw.gateway
        .backend()
        .admin
        .create_topic("exists", None, None)
        .await
        .unwrap();
    let mut ok = Sender::attach(&mut session, "ok", "exists").await.unwrap();
    assert!(ok
        .send(Message::builder().value("fine".to_string()).build())
        .await
        .unwrap()
        .is_accepted());
    gw.stop().await;
}

/// docs/amqp.md §Links the client receives on: records go out only within the receiver's
/// credit, each with the `x-opt-kafka-*` annotations and the Event Hubs ones (`x-opt-offset`
/// as a string, `x-opt-sequence-number`, `x-opt-enqueued-time` = the Kafka timestamp,
/// `x-opt-partition-key` = the key); a group with no committed offset starts at the earliest
/// record, and the group resumes after what was accepted.
///
/// Broken to: `convert.rs` without the `x-opt-offset`, then without the
/// `x-opt-sequence-number`, then without the `x-opt-partition-key` annotation: each time the
/// assertion on that annotation failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_gets_no_more_than_its_credit_and_commits_what_it_accepted() {
    let gw = gateway::start(with_amqp).await;
    for i in 0..20 {
        common::produce(&gw, "credit", &format!("k{i}"), &format!("r{i}")).await;
    }
    let (_conn, mut session) = connect(&gw, "credit-1").await;
    let mut r = manual_receiver(&mut session, "five", "credit/group.id/g5").await;
    r.set_credit(5).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..5 {
        let d = tokio::time::timeout(Duration::from_secs(30), r.recv::<Body<Value>>())
            .await
            .expect("delivery within credit")
            .unwrap();
        held.push(d);
    }
    // No credit left: nothing more arrives while the five are held.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), r.recv::<Body<Value>>())
            .await
            .is_err()
    );
    let first = &held[0];
    let ma = first.message().message_annotations.as_ref().unwrap();
    let get = |k: &str| {
        ma.get(&k as &dyn fe2o3_amqp::types::messaging::annotations::AnnotationKey)
            .cloned()
    };
    assert_eq!(
        get("x-opt-kafka-topic"),
        Some(Value::String("credit".into()))
    );
    assert_eq!(get("x-opt-kafka-offset"), Some(Value::Long(0)));
    assert_eq!(get("x-opt-kafka-partition"), Some(Value::Int(0)));
    assert_eq!(get("x-opt-kafka-key"), Some(Value::String("k0".into())));
    // The Event Hubs annotations: the offset (as a string) and the sequence number are the
    // Kafka offset, the enqueued time the record's timestamp, the partition key its key.
    assert_eq!(get("x-opt-offset"), Some(Value::String("0".into())));
    assert_eq!(get("x-opt-sequence-number"), Some(Value::Long(0)));
    assert_eq!(get("x-opt-partition-key"), Some(Value::String("k0".into())));
    let kafka_timestamp = match get("x-opt-kafka-timestamp") {
        Some(Value::Long(ms)) => ms,
        other => panic!("x-opt-kafka-timestamp: {other:?}"),
    };
    match get("x-opt-enqueued-time") {
        Some(Value::Timestamp(t)) => assert_eq!(t.milliseconds(), kafka_timestamp),
        other => panic!("x-opt-enqueued-time: {other:?}"),
    }
    let fifth = held[4].message().message_annotations.as_ref().unwrap();
    let get5 = |k: &str| {
        fifth
            .get(&k as &dyn fe2o3_amqp::types::messaging::annotations::AnnotationKey)
            .cloned()
    };
    assert_eq!(get5("x-opt-offset"), Some(Value::String("4".into())));
    assert_eq!(get5("x-opt-sequence-number"), Some(Value::Long(4)));
    assert_eq!(
        get5("x-opt-partition-key"),
        Some(Value::String("k4".into()))
    );
    // Accept three; then leave. The group resumes after the third.
    for d in &held[..3] {
        r.accept(d).await.unwrap();
    }
    common::wait_for_commit(&gw, "g5", ("credit", 0), 3, Duration::from_secs(30)).await;
    drop(r);
    drop(session);
    drop(_conn);
    let (_conn, mut session) = connect(&gw, "credit-2").await;
    let mut r = Receiver::attach(&mut session, "again", "credit/group.id/g5")
        .await
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(30), r.recv::<Body<Value>>())
        .await
        .unwrap()
        .unwrap();
    let body = match &d.message().body {
        Body::Data(b) => String::from_utf8_lossy(&b[0].0).into_owned(),
        other => panic!("{other:?}"),
    };
    assert_eq!(body, "r3", "resumes at the first delivery not accepted");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_plain_with_a_long_password_and_anonymous_both_connect() {
    let gw = gateway::start(with_amqp).await;
    let a = amqp_addr(&gw);
    // Long credentials, up to fe2o3-amqp's 512-byte SASL frame (upstream #317; see docs/amqp.md).
    let mut conn = Connection::builder()
        .container_id("long-password")
        .sasl_profile(SaslProfile::Plain {
            username: "device-with-a-long-name".into(),
            password: "p".repeat(400),
        })
        .open(format!("amqp://{a}").as_str())
        .await
        .expect("PLAIN with a 400-byte password");
    let mut session = Session::begin(&mut conn).await.unwrap();
    let mut s = Sender::attach(&mut session, "s", "long-pw").await.unwrap();
    assert!(s
        .send(Message::builder().value("ok".to_string()).build())
        .await
        .unwrap()
        .is_accepted());
    let mut anon = Connection::builder()
        .container_id("anonymous")
        .sasl_profile(SaslProfile::Anonymous)
        .open(format!("amqp://{a}").as_str())
        .await
        .expect("ANONYMOUS");
    anon.close().await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_a_wrong_header_and_a_truncated_frame_close_only_that_connection() {
    let gw = gateway::start(with_amqp).await;
    let a = amqp_addr(&gw);
    let closed = |mut s: TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => {
                    return e.kind() != std::io::ErrorKind::WouldBlock
                        && e.kind() != std::io::ErrorKind::TimedOut
                }
            }
        }
    };
    // A wrong protocol header.
    let mut s = TcpStream::connect(a).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(closed(s));
    // Garbage after the SASL header.
    let mut s = TcpStream::connect(a).unwrap();
    s.write_all(b"AMQP\x03\x01\x00\x00").unwrap();
    s.write_all(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 1, 2, 3])
        .unwrap();
    assert!(closed(s));
    // A frame too short to be one (a size of 5).
    let mut s = TcpStream::connect(a).unwrap();
    s.write_all(b"AMQP\x03\x01\x00\x00").unwrap();
    s.write_all(&[0, 0, 0, 5, 2]).unwrap();
    assert!(closed(s));
    // A truncated frame, then silence: closed by the open deadline.
    let mut s = TcpStream::connect(a).unwrap();
    s.write_all(b"AMQP\x03\x01\x00\x00").unwrap();
    s.write_all(&[0, 0, 0, 64, 2, 1, 0]).unwrap();
    assert!(closed(s));
    // The gateway still serves a new client.
    let (_conn, mut session) = connect(&gw, "after-garbage").await;
    let mut ok = Sender::attach(&mut session, "ok", "still-up")
        .await
        .unwrap();
    assert!(ok
        .send(Message::builder().value("fine".to_string()).build())
        .await
        .unwrap()
        .is_accepted());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn qpid_proton_sends_and_receives_with_kafka_clients_on_the_other_side() {
    let gw = gateway::start(with_amqp).await;
    let url = format!("amqp://alice:secret@{}", amqp_addr(&gw));
    // Sender → Kafka, read back with a Kafka client.
    let out =
        common::system_python_async("amqp_proton.py", &["send", &url, "proton-in", "20"]).await;
    assert!(out.contains("\"accepted\": 20"), "{out}");
    // Read back with the stock Kafka client (confluent-kafka).
    let bootstrap = gw.kafka.clone();
    let out = common::python_async(
        "kafka_client.py",
        &["consume", &bootstrap, "proton-in", "check", "20"],
    )
    .await;
    let got: Vec<serde_json::Value> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(got.len(), 20);
    let r = got.iter().find(|r| r["value"] == "proton-4").unwrap();
    assert_eq!(r["key"], "pk1");
    assert_eq!(r["headers"]["origin"], "proton");
    assert_eq!(r["headers"]["seq"], "4");
    assert_eq!(r["headers"]["amqp.message-id"], "msg-4");

    // Records written by the stock Kafka client (confluent-kafka) → a proton receiver, which
    // accepts half and leaves; a new receiver in the same group gets the other half.
    let bootstrap = gw.kafka.clone();
    common::python_async(
        "kafka_client.py",
        &["produce", &bootstrap, "proton-out", "10"],
    )
    .await;
    let out = common::system_python_async(
        "amqp_proton.py",
        &["receive", &url, "proton-out/group.id/pg", "10", "5"],
    )
    .await;
    let first: Vec<serde_json::Value> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(first.len(), 10);
    assert_eq!(first[0]["body"], "v0");
    let ann = &first[0]["annotations"];
    assert_eq!(ann["x-opt-kafka-topic"], "proton-out");
    assert_eq!(ann["x-opt-kafka-partition"], 0);
    assert_eq!(ann["x-opt-kafka-offset"], 0);
    assert_eq!(ann["x-opt-kafka-key"], "k0");
    assert!(ann["x-opt-kafka-timestamp"].is_number());
    assert_eq!(
        first[3]["properties"]["seq"], "3",
        "Kafka headers come back as application-properties"
    );
    common::wait_for_commit(&gw, "pg", ("proton-out", 0), 5, Duration::from_secs(30)).await;
    let out = common::system_python_async(
        "amqp_proton.py",
        &["receive", &url, "proton-out/group.id/pg", "5", "5"],
    )
    .await;
    let second: Vec<serde_json::Value> = serde_json::from_str(out.trim()).unwrap();
    let bodies: Vec<&str> = second.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(
        bodies,
        ["v5", "v6", "v7", "v8", "v9"],
        "the half not accepted"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_receivers_in_one_group_split_the_partitions() {
    let gw = gateway::start(with_amqp).await;
    gw.gateway
        .backend()
        .admin
        .create_topic("split", Some(2), None)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
    let mut keep = Vec::new();
    for member in 0..2 {
        let (conn, mut session) = connect(&gw, &format!("member-{member}")).await;
        let mut r = Receiver::attach(&mut session, format!("m{member}"), "split/group.id/workers")
            .await
            .unwrap();
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok(d) = r.recv::<Body<Value>>().await {
                r.accept(&d).await.unwrap();
                if let Body::Data(b) = &d.message().body {
                    let _ = tx.send((member, String::from_utf8_lossy(&b[0].0).into_owned()));
                }
            }
        });
        keep.push((conn, session));
    }
    common::assert_two_members_split(&gw, "split", &mut rx).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_shutdown_every_accepted_transfer_is_in_kafka() {
    use barnabas::embedded::{EmbeddedKafka, Storage};
    let kafka_addr = common::free_addr();
    let broker = EmbeddedKafka::start(kafka_addr, None, Storage::Temporary)
        .await
        .unwrap();
    let gw = gateway::start_on(Some(broker.bootstrap()), with_amqp).await;
    let (_conn, mut session) = connect(&gw, "until-shutdown").await;
    let mut sender = Sender::attach(&mut session, "s", "draining").await.unwrap();
    assert!(sender.send(keyed(0)).await.unwrap().is_accepted());
    // Keep sending while the gateway shuts down; outcomes are collected as they come.
    let (outcome_tx, mut outcome_rx) = tokio::sync::mpsc::unbounded_channel();
    let sending = tokio::spawn(async move {
        for i in 1..1_000_000 {
            match sender.send_batchable(keyed(i)).await {
                Ok(fut) => {
                    let _ = outcome_tx.send((i, fut));
                }
                Err(_) => break,
            }
        }
    });
    let accepted_so_far = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted_so_far.clone();
    let settling = tokio::spawn(async move {
        let mut accepted = vec![0];
        while let Some((i, fut)) = outcome_rx.recv().await {
            if let Ok(Outcome::Accepted(_)) = fut.await {
                accepted.push(i);
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        accepted
    });
    // Stop once transfers are flowing through Kafka (100 accepted).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while accepted_so_far.load(std::sync::atomic::Ordering::SeqCst) < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "transfers never flowed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.stop().await;
    tokio::time::timeout(Duration::from_secs(30), sending)
        .await
        .expect("the sender's link ended with the gateway")
        .unwrap();
    let accepted = tokio::time::timeout(Duration::from_secs(30), settling)
        .await
        .expect("every outcome resolved")
        .unwrap();
    assert!(
        accepted.len() > 1,
        "some transfers were accepted before the stop"
    );
    // Everything accepted is in Kafka (read with the stock client; the broker outlived us).
    let bootstrap = broker.bootstrap();
    // Transfers reach Kafka in order, so the first max+1 records cover every accepted one.
    let n = (accepted.iter().max().copied().unwrap_or(0) + 1).to_string();
    let out = common::python_async(
        "kafka_client.py",
        &["consume", &bootstrap, "draining", "after", &n],
    )
    .await;
    let stored: BTreeSet<String> = serde_json::from_str::<Vec<serde_json::Value>>(out.trim())
        .unwrap()
        .iter()
        .map(|r| r["value"].as_str().unwrap_or_default().to_owned())
        .collect();
    let missing: Vec<usize> = accepted
        .iter()
        .copied()
        .filter(|i| !stored.contains(&format!("v{i}")))
        .collect();
    assert!(missing.is_empty(), "accepted but not in Kafka: {missing:?}");
    broker.stop().await;
}

/// The body of a delivery the gateway sent (a Kafka value is one data section).
fn data_body(d: &fe2o3_amqp::link::delivery::Delivery<Body<Value>>) -> String {
    match &d.message().body {
        Body::Data(b) => String::from_utf8_lossy(&b[0].0).into_owned(),
        other => panic!("{other:?}"),
    }
}

/// A receiver on `source` that grants credit only when told and settles only when told.
async fn manual_receiver(
    session: &mut fe2o3_amqp::session::SessionHandle<()>,
    name: &str,
    source: &str,
) -> Receiver {
    Receiver::builder()
        .name(name)
        .source(source)
        .credit_mode(CreditMode::Manual)
        .auto_accept(false)
        .attach(session)
        .await
        .unwrap()
}

/// The next delivery on `r` within 30 s.
async fn next_delivery(r: &mut Receiver) -> fe2o3_amqp::link::delivery::Delivery<Body<Value>> {
    tokio::time::timeout(Duration::from_secs(30), r.recv::<Body<Value>>())
        .await
        .expect("a delivery within 30 s")
        .unwrap()
}

/// docs/amqp.md §Links the client receives on: a `rejected` delivery is skipped (committed,
/// never sent again), `released` and `modified` ones are read again on the same link; the
/// group's next reader starts after all of them.
#[tokio::test(flavor = "multi_thread")]
async fn released_and_modified_deliveries_come_again_and_rejected_ones_are_skipped() {
    let gw = gateway::start(with_amqp).await;
    for i in 0..5 {
        common::produce(&gw, "outcomes", "k", &format!("r{i}")).await;
    }
    let (_conn, mut session) = connect(&gw, "outcomes-1").await;
    let mut r = manual_receiver(&mut session, "outcomes", "outcomes/group.id/og").await;
    r.set_credit(5).await.unwrap();
    let mut first = Vec::new();
    for _ in 0..5 {
        first.push(next_delivery(&mut r).await);
    }
    let bodies: Vec<String> = first.iter().map(data_body).collect();
    assert_eq!(bodies, ["r0", "r1", "r2", "r3", "r4"]);
    r.reject(&first[0], None).await.unwrap();
    r.release(&first[1]).await.unwrap();
    let modified = fe2o3_amqp::types::messaging::Modified {
        delivery_failed: Some(true),
        undeliverable_here: None,
        message_annotations: None,
    };
    r.modify(&first[2], modified).await.unwrap();
    r.accept(&first[3]).await.unwrap();
    r.accept(&first[4]).await.unwrap();
    // The released and the modified one come again (and only they: r0 was rejected).
    r.set_credit(5).await.unwrap();
    let mut again = vec![next_delivery(&mut r).await, next_delivery(&mut r).await];
    let mut bodies: Vec<String> = again.iter().map(data_body).collect();
    bodies.sort();
    assert_eq!(bodies, ["r1", "r2"], "released and modified are read again");
    for d in again.drain(..) {
        r.accept(&d).await.unwrap();
    }
    // Everything is settled: the group's offset moves past all five, r0 included.
    common::wait_for_commit(&gw, "og", ("outcomes", 0), 5, Duration::from_secs(30)).await;
    drop(r);
    // A new reader of the group gets the next record, not the rejected one.
    common::produce(&gw, "outcomes", "k", "r5").await;
    let mut r = Receiver::attach(&mut session, "outcomes-again", "outcomes/group.id/og")
        .await
        .unwrap();
    assert_eq!(data_body(&next_delivery(&mut r).await), "r5");
    gw.stop().await;
}

/// docs/amqp.md §Links the client receives on: at most 256 deliveries wait for the client's
/// outcome on one link, whatever credit the client grants; settling one lets one more out.
#[tokio::test(flavor = "multi_thread")]
async fn at_most_256_deliveries_wait_for_the_clients_outcome() {
    let gw = gateway::start(with_amqp).await;
    let records = (0..300)
        .map(|i| barnabas_core::Record::new("unsettled", format!("u{i}")))
        .collect();
    common::produce_all(&gw, records).await;
    let (_conn, mut session) = connect(&gw, "unsettled-1").await;
    let mut r = manual_receiver(&mut session, "greedy", "unsettled/group.id/ug").await;
    r.set_credit(300).await.unwrap();
    // The first delivery waits for the group's join (Apache Kafka holds a new group's first
    // rebalance for group.initial.rebalance.delay.ms, 3 s); after it, take what comes until
    // nothing more has come for 3 s.
    let mut held = vec![next_delivery(&mut r).await];
    while let Ok(d) = tokio::time::timeout(Duration::from_secs(3), r.recv::<Body<Value>>()).await {
        held.push(d.unwrap());
    }
    assert_eq!(held.len(), 256, "deliveries out before any was settled");
    r.accept(&held[0]).await.unwrap();
    let next = next_delivery(&mut r).await;
    assert_eq!(data_body(&next), "u256", "one settled, one more out");
    gw.stop().await;
}

/// docs/amqp.md §Links the client sends on and §receives on: the annotation
/// `x-opt-kafka-partition` picks the partition, Event Hubs' `x-opt-partition-key` is the key,
/// every body kind becomes the value as documented, the standard properties become `amqp.*`
/// headers and come back as the properties they came from; a partition that does not exist
/// is `amqp:not-found`.
#[tokio::test(flavor = "multi_thread")]
async fn annotations_body_kinds_and_properties_map_both_ways() {
    use fe2o3_amqp::types::{
        messaging::{AmqpSequence, AmqpValue, Data},
        primitives::Binary,
    };
    let gw = gateway::start(with_amqp).await;
    gw.gateway
        .backend()
        .admin
        .create_topic("mapped", Some(2), Some(1))
        .await
        .unwrap();
    let (_conn, mut session) = connect(&gw, "mapping").await;
    let mut sender = Sender::attach(&mut session, "mapping", "mapped")
        .await
        .unwrap();
    let bodies: Vec<(&str, Body<Value>)> = vec![
        (
            "data",
            Body::Data(
                vec![
                    Data(Binary::from(b"ab".to_vec())),
                    Data(Binary::from(b"cd".to_vec())),
                ]
                .into(),
            ),
        ),
        (
            "sequence",
            Body::Sequence(
                vec![AmqpSequence::new(vec![
                    Value::Int(1),
                    Value::String("a".into()),
                ])]
                .into(),
            ),
        ),
        (
            "binary",
            Body::Value(AmqpValue(Value::Binary(Binary::from(vec![0, 255])))),
        ),
        (
            "string",
            Body::Value(AmqpValue(Value::String("text".into()))),
        ),
        ("empty", Body::Empty),
        ("null", Body::Value(AmqpValue(Value::Null))),
    ];
    for (name, body) in bodies {
        let m = Message::builder()
            .message_annotations(
                MessageAnnotations::builder()
                    .insert("x-opt-kafka-partition", 1i32)
                    .insert("x-opt-partition-key", format!("pk-{name}"))
                    .build(),
            )
            .properties(
                Properties::builder()
                    .message_id(format!("id-{name}"))
                    .correlation_id("corr".to_owned())
                    .content_type("text/plain")
                    .subject("subj")
                    .reply_to("replies")
                    .to("mapped")
                    .build(),
            )
            .body(body)
            .build();
        let outcome = sender.send(m).await.unwrap();
        assert!(outcome.is_accepted(), "{name}: {outcome:?}");
    }
    let got = read_topic(&gw, "mapped", 6).await;
    assert_eq!(got.len(), 6);
    let by_key = |name: &str| {
        got.iter()
            .find(|r| r.key.as_deref() == Some(format!("pk-{name}").as_bytes()))
            .unwrap_or_else(|| panic!("no record keyed pk-{name}: {got:?}"))
    };
    let value = |name: &str| by_key(name).value.clone().map(|v| v.to_vec());
    assert_eq!(
        value("data"),
        Some(b"abcd".to_vec()),
        "data sections concatenated"
    );
    assert_eq!(
        value("sequence"),
        Some(br#"[1,"a"]"#.to_vec()),
        "a sequence is a JSON array"
    );
    assert_eq!(value("binary"), Some(vec![0, 255]));
    assert_eq!(value("string"), Some(b"text".to_vec()));
    // An empty body is a zero-length value, which librdkafka reads back as a null value.
    assert!(
        value("empty").unwrap_or_default().is_empty(),
        "an empty body is an empty value"
    );
    assert_eq!(value("null"), None, "amqp-value null is a null value");
    let r = by_key("data");
    assert!(
        got.iter().all(|r| r.partition == 1),
        "x-opt-kafka-partition picks partition 1"
    );
    for (header, want) in [
        ("amqp.message-id", "id-data"),
        ("amqp.correlation-id", "corr"),
        ("amqp.content-type", "text/plain"),
        ("amqp.subject", "subj"),
        ("amqp.reply-to", "replies"),
        ("amqp.to", "mapped"),
    ] {
        assert_eq!(r.header(header), Some(&Bytes::from(want)), "{header}");
    }

    // Read back over AMQP: the amqp.* headers are the standard properties again.
    let mut receiver = Receiver::attach(&mut session, "mapped-back", "mapped/group.id/back")
        .await
        .unwrap();
    let mut seen = 0;
    while seen < 6 {
        let d = next_delivery(&mut receiver).await;
        receiver.accept(&d).await.unwrap();
        seen += 1;
        let p = d.message().properties.as_ref().expect("properties");
        let ma = d.message().message_annotations.as_ref().unwrap();
        let key = ma
            .get(
                &"x-opt-kafka-key" as &dyn fe2o3_amqp::types::messaging::annotations::AnnotationKey,
            )
            .cloned();
        if key != Some(Value::String("pk-data".into())) {
            continue;
        }
        assert_eq!(p.message_id, Some("id-data".to_owned().into()));
        assert_eq!(p.correlation_id, Some("corr".to_owned().into()));
        assert_eq!(p.content_type, Some("text/plain".into()));
        assert_eq!(p.subject.as_deref(), Some("subj"));
        assert_eq!(p.reply_to.as_deref(), Some("replies"));
        assert_eq!(p.to.as_deref(), Some("mapped"));
        assert_eq!(data_body(&d), "abcd");
    }

    // A partition that does not exist.
    let mut missing = Sender::attach(&mut session, "missing", "mapped/partitions/7")
        .await
        .unwrap();
    let refused = missing
        .send(Message::builder().value("x".to_owned()).build())
        .await;
    let text = format!("{refused:?}");
    assert!(
        text.contains("NotFound") || text.contains("not-found"),
        "{text}"
    );
    gw.stop().await;
}

/// docs/amqp.md §Connections: "max-frame-size 64 KiB (larger messages go as multi-frame
/// transfers), channel-max 255, idle time-out 60 s". python3-qpid-proton reads the three from
/// the gateway's Open frame (its transport's remote settings), then sends a 300 000-byte
/// message: with frames traced (PN_TRACE_FRM) it goes out as at least five TRANSFER frames of
/// at most 64 KiB, is accepted, and the Kafka record holds the whole body.
///
/// Broken to: the Open frame's values are what the assertions compare, so another frame size,
/// channel-max or idle time-out in `run.rs` fails them; with a frame size above the message
/// (the max-frame-size of the gateway's Open bounds the frames the client sends it) it would
/// go as one TRANSFER. Seen failing with the size asserted as 65 535, and with the transfers
/// asserted as 1 (there were 5).
#[tokio::test(flavor = "multi_thread")]
async fn open_offers_64_kib_frames_255_channels_60_s_and_big_messages_span_frames() {
    const SIZE: usize = 300_000;
    let gw = gateway::start(with_amqp).await;
    let url = format!("amqp://{}", amqp_addr(&gw));
    let size = SIZE.to_string();
    let out = common::system_python_async("amqp_open.py", &[&url, "big-frames", &size]).await;
    let seen: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(seen["max_frame_size"], 65_536, "{seen}");
    assert_eq!(seen["channel_max"], 255, "{seen}");
    assert_eq!(seen["idle_timeout_ms"], 60_000, "{seen}");
    assert_eq!(seen["accepted"], true, "{seen}");
    let transfers = seen["transfers"].as_u64().unwrap();
    assert!(
        transfers as usize > SIZE / 65_536,
        "{SIZE} bytes in {transfers} TRANSFER frames of at most 64 KiB: {seen}"
    );
    let got = read_topic(&gw, "big-frames", 1).await;
    assert_eq!(got.len(), 1);
    let want: Vec<u8> = b"0123456789".iter().copied().cycle().take(SIZE).collect();
    assert!(
        got[0].value.as_deref() == Some(&want[..]),
        "the record holds the whole body ({:?} bytes)",
        got[0].value.as_ref().map(|v| v.len())
    );
    gw.stop().await;
}

/// The condition of a rejected outcome (panics on any other outcome).
fn rejected_condition(o: Outcome) -> (String, String) {
    match o {
        Outcome::Rejected(r) => {
            let e = r.error.expect("a rejected transfer carries a condition");
            (
                format!("{:?}", e.condition),
                e.description.unwrap_or_default(),
            )
        }
        other => panic!("expected rejected, got {other:?}"),
    }
}

/// docs/amqp.md §Links the client sends on: a transfer Kafka does not take is settled
/// `rejected` with a condition and a description — `amqp:not-found` for a partition the topic
/// does not have (annotation `x-opt-kafka-partition` 7 of a one-partition topic), and
/// `amqp:internal-error` when Kafka does not answer (the broker, a process of its own, stopped
/// with SIGSTOP; `kafka.produce_timeout_ms` 3 s). The link still works for the next transfer
/// once the broker is back; the record for the missing partition was never written (the
/// unanswered one may be, when the stopped broker had its request already: a rejection after
/// a time-out does not mean not written).
///
/// Broken to: a transfer settled `accepted` (or `released`) instead fails `rejected_condition`;
/// the conditions are compared by name. Seen failing with the not-found case expecting
/// `InternalError`.
#[tokio::test(flavor = "multi_thread")]
async fn transfers_kafka_does_not_take_are_rejected_with_their_condition() {
    let (broker, bootstrap) = common::broker_process();
    let gw = gateway::start_on(Some(bootstrap), |c| {
        with_amqp(c);
        c.kafka.produce_timeout_ms = 3_000;
    })
    .await;
    gw.gateway
        .backend()
        .admin
        .create_topic("refusals", Some(1), None)
        .await
        .unwrap();
    let (_conn, mut session) = connect(&gw, "refused-sender").await;
    let mut sender = Sender::attach(&mut session, "refusals", "refusals")
        .await
        .unwrap();
    let o = sender
        .send(Message::builder().value("first".to_string()).build())
        .await
        .unwrap();
    assert!(o.is_accepted(), "{o:?}");

    let to_seven = Message::builder()
        .message_annotations(
            MessageAnnotations::builder()
                .insert("x-opt-kafka-partition", 7i32)
                .build(),
        )
        .value("nowhere".to_string())
        .build();
    let (condition, description) = rejected_condition(sender.send(to_seven).await.unwrap());
    assert_eq!(condition, "AmqpError(NotFound)", "{description}");
    assert!(!description.is_empty());

    broker.signal("STOP");
    let (condition, description) = rejected_condition(
        sender
            .send(Message::builder().value("unanswered".to_string()).build())
            .await
            .unwrap(),
    );
    broker.signal("CONT");
    assert_eq!(condition, "AmqpError(InternalError)", "{description}");
    assert!(!description.is_empty());

    let o = sender
        .send(Message::builder().value("after".to_string()).build())
        .await
        .unwrap();
    assert!(o.is_accepted(), "{o:?}");
    let end = gw
        .gateway
        .backend()
        .admin
        .watermarks("refusals", 0)
        .await
        .unwrap()
        .high;
    let values: Vec<Bytes> = read_topic(&gw, "refusals", usize::try_from(end).unwrap())
        .await
        .into_iter()
        .filter_map(|r| r.value)
        .collect();
    // The unanswered transfer may still be stored once the broker resumes (its produce request
    // was already with the broker); the one for a missing partition never is.
    let stored: Vec<&[u8]> = values.iter().map(|v| &v[..]).collect();
    assert!(
        stored == [&b"first"[..], b"after"] || stored == [&b"first"[..], b"unanswered", b"after"],
        "stored: {values:?}"
    );
    drop(sender);
    gw.stop().await;
    drop(broker);
}

/// docs/amqp.md §Links the client sends on: `amqp:resource-limit-exceeded` when the producer's
/// queue stays full (librdkafka's `queue.buffering.max.messages` 5 here, the broker paused:
/// five transfers wait in the queue, the sixth finds no room within the gateway's 5 s
/// patience). The queued five are accepted once the broker goes on; the refused one is not
/// written.
#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_refused_for_a_full_producer_queue_is_rejected_resource_limit_exceeded() {
    let (broker, bootstrap) = common::broker_process();
    let gw = gateway::start_on(Some(bootstrap), |c| {
        with_amqp(c);
        c.kafka
            .properties
            .insert("queue.buffering.max.messages".into(), "5".into());
    })
    .await;
    let (_conn, mut session) = connect(&gw, "overloaded-sender").await;
    let mut sender = Sender::attach(&mut session, "overloads", "overloads")
        .await
        .unwrap();
    let o = sender
        .send(Message::builder().value("first".to_string()).build())
        .await
        .unwrap();
    assert!(o.is_accepted(), "{o:?}");
    broker.signal("STOP");
    let mut outcomes = Vec::new();
    for i in 0..6 {
        let m = Message::builder().value(format!("queued-{i}")).build();
        outcomes.push(sender.send_batchable(m).await.unwrap());
    }
    // The sixth is refused once the gateway's patience for queue room is over: counted failed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = gw.get("/metrics", None).await.text;
        if metrics
            .lines()
            .any(|l| l == r#"barnabas_records_failed_total{protocol="amqp"} 1"#)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    broker.signal("CONT");
    let mut settled = Vec::new();
    for o in outcomes {
        settled.push(o.await.unwrap());
    }
    for o in &settled[..5] {
        assert!(o.is_accepted(), "a queued transfer: {o:?}");
    }
    let (condition, description) = rejected_condition(settled[5].clone());
    assert_eq!(
        condition, "AmqpError(ResourceLimitExceeded)",
        "{description}"
    );
    let values: Vec<Bytes> = read_topic(&gw, "overloads", 6)
        .await
        .into_iter()
        .filter_map(|r| r.value)
        .collect();
    assert_eq!(values.len(), 6, "first and the five queued: {values:?}");
    assert!(!values
        .iter()
        .any(|v| &v[..] == b"queued-5" || &v[..] == b"nowhere"));
    drop(sender);
    gw.stop().await;
    drop(broker);
}

/// docs/amqp.md §Links the client sends on: unsettled transfers are settled "in the order they
/// arrived". python-qpid-proton sends 300 transfers at once (the link credit is 1 000) to a
/// three-partition topic; every seventh is above `limits.max_message_bytes`, so its
/// `rejected` outcome is ready at once while the transfers before it still wait for Kafka.
/// The outcomes must reach the client in transfer order (by delivery tag, as proton reports
/// the dispositions), and the accepted ones are in Kafka.
///
/// Broken to: `produce.rs` keeping in-flight transfers in a `FuturesUnordered` instead of a
/// `FuturesOrdered` (each disposition goes out when its own outcome is ready): the rejected
/// transfers were answered before the earlier accepted ones and the tag order failed.
#[tokio::test(flavor = "multi_thread")]
async fn outcomes_are_sent_in_the_order_the_transfers_arrived() {
    const COUNT: usize = 300;
    let gw = gateway::start(|c| {
        with_amqp(c);
        c.limits.max_message_bytes = 1024;
    })
    .await;
    gw.gateway
        .backend()
        .admin
        .create_topic("ordered", Some(3), None)
        .await
        .unwrap();
    let url = format!("amqp://alice:secret@{}", amqp_addr(&gw));
    let count = COUNT.to_string();
    let out = common::system_python_async(
        "amqp_outcomes.py",
        &["order", &url, "ordered", &count, "7", "2000"],
    )
    .await;
    let seen: Vec<serde_json::Value> = serde_json::from_str(out.trim()).unwrap();
    let tags: Vec<&str> = seen.iter().map(|o| o["tag"].as_str().unwrap()).collect();
    let want: Vec<String> = (0..COUNT).map(|n| n.to_string()).collect();
    assert_eq!(tags, want, "outcomes in the order of the transfers");
    for (n, o) in seen.iter().enumerate() {
        if n % 7 == 6 {
            assert_eq!(o["outcome"], "rejected", "{o}");
            assert_eq!(o["condition"], "amqp:link:message-size-exceeded", "{o}");
        } else {
            assert_eq!(o["outcome"], "accepted", "{o}");
        }
    }
    let mut stored = topic_values(&gw, "ordered").await;
    stored.sort();
    let mut accepted: Vec<String> = (0..COUNT)
        .filter(|n| n % 7 != 6)
        .map(|n| format!("order-{n}"))
        .collect();
    accepted.sort();
    assert_eq!(stored, accepted, "the accepted transfers, once each");
    gw.stop().await;
}

/// docs/amqp.md §Links the client sends on: a body that does not decode is settled `rejected`
/// with `amqp:decode-error`, through a real link. python-qpid-proton sends raw transfer
/// payloads on one link: an amqp-value section whose str8 says 200 bytes and holds 3 (the
/// frame decoder of the gateway cannot read it), then an amqp-value int (a body of another
/// type), then a good message. The first two are `rejected` with `amqp:decode-error` and a
/// description, the third is `accepted` on the same link, and only it is in Kafka.
///
/// Broken to: `produce.rs` answering an undecodable transfer (`RecvError::MessageDecode`) with
/// `amqp:internal-error` instead: the first outcome's condition failed the assertion.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_does_not_decode_is_rejected_with_decode_error_and_the_link_goes_on() {
    let gw = gateway::start(with_amqp).await;
    let url = format!("amqp://alice:secret@{}", amqp_addr(&gw));
    let out =
        common::system_python_async("amqp_outcomes.py", &["undecodable", &url, "undecodable"])
            .await;
    let answers: Vec<serde_json::Value> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(answers.len(), 3, "{out}");
    for (what, a) in ["a cut-short section", "an int amqp-value"]
        .iter()
        .zip(&answers)
    {
        assert_eq!(a["outcome"], "rejected", "{what}: {a}");
        assert_eq!(a["condition"], "amqp:decode-error", "{what}: {a}");
        assert!(
            !a["description"].as_str().unwrap_or_default().is_empty(),
            "{what}: {a}"
        );
    }
    assert_eq!(answers[2]["outcome"], "accepted", "the link goes on: {out}");
    assert_eq!(
        topic_values(&gw, "undecodable").await,
        ["after-undecodable"],
        "nothing written for the rejected transfers"
    );
    gw.stop().await;
}

/// What a sender saw of a gateway stopping under it ([`stop_while_sending`]).
struct StopSeen {
    /// Every transfer the client sent, in order, with its outcome (or the error instead).
    outcomes: Vec<(String, Result<Outcome, String>)>,
    /// The error of the send that found the link gone.
    send_error: String,
    /// From the start of the stop to the end of the client's connection.
    closed_within: Duration,
    /// Every value in the topic, read to its high watermarks after the stop.
    stored: Vec<String>,
}

/// A fe2o3-amqp sender sends `s0`, `s1`, … without pause on one link;
/// `limits.publish_rate` (50 a second) makes the gateway take the transfers off the link
/// more slowly than they come, so when the gateway stops (once 20 were accepted) there are
/// transfers the link has not taken yet. The broker outlives the gateway, so the topic is
/// read back afterwards.
async fn stop_while_sending(topic: &'static str) -> StopSeen {
    use barnabas::embedded::{EmbeddedKafka, Storage};
    use std::time::Instant;
    let broker = EmbeddedKafka::start(common::free_addr(), None, Storage::Temporary)
        .await
        .unwrap();
    let gw = gateway::start_on(Some(broker.bootstrap()), |c| {
        with_amqp(c);
        c.limits.publish_rate = 50;
    })
    .await;
    let (mut conn, session) = connect(&gw, "stopping").await;
    let mut session = session;
    let mut sender = Sender::attach(&mut session, "s", topic).await.unwrap();
    let (outcome_tx, mut outcome_rx) = tokio::sync::mpsc::unbounded_channel();
    let sending = tokio::spawn(async move {
        for i in 0.. {
            match sender
                .send_batchable(Message::builder().value(format!("s{i}")).build())
                .await
            {
                Ok(fut) => outcome_tx.send((format!("s{i}"), fut)).unwrap(),
                Err(e) => return format!("{e:?}"),
            }
        }
        unreachable!()
    });
    let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::unbounded_channel();
    let settling = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        while let Some((body, fut)) = outcome_rx.recv().await {
            let outcome = fut.await.map_err(|e| format!("{e:?}"));
            if let Ok(Outcome::Accepted(_)) = outcome {
                let _ = accepted_tx.send(());
            }
            outcomes.push((body, outcome));
        }
        outcomes
    });
    // Stop once transfers flow through Kafka (20 accepted).
    for _ in 0..20 {
        tokio::time::timeout(Duration::from_secs(60), accepted_rx.recv())
            .await
            .expect("transfers flow")
            .unwrap();
    }
    let stop = Instant::now();
    let closed = tokio::spawn(async move {
        let result = conn.on_close().await;
        (stop.elapsed(), format!("{result:?}"))
    });
    gw.stop().await;
    let (closed_within, _) = tokio::time::timeout(Duration::from_secs(30), closed)
        .await
        .expect("the client's connection ended")
        .unwrap();
    let send_error = tokio::time::timeout(Duration::from_secs(30), sending)
        .await
        .expect("the sender's link ended with the gateway")
        .unwrap();
    let outcomes = tokio::time::timeout(Duration::from_secs(30), settling)
        .await
        .expect("every outcome resolved")
        .unwrap();
    let out =
        common::python_async("kafka_client.py", &["values", &broker.bootstrap(), topic]).await;
    let stored: Vec<String> = serde_json::from_str(out.trim()).unwrap();
    drop(session);
    broker.stop().await;
    StopSeen {
        outcomes,
        send_error,
        closed_within,
        stored,
    }
}

/// docs/amqp.md §Links the client sends on: "When the gateway stops, a link settles what it
/// received, …, then detaches; the connection closes once its sessions ended (at most 8 s)."
/// In [`stop_while_sending`]: the client's next send fails because the gateway closed the
/// link (`RemoteClosed`, the detach), the client's connection has ended within 8 s of the
/// stop, every accepted transfer is in Kafka once, and nothing the client was not told
/// `accepted` is (a transfer answered otherwise or not at all was not written).
///
/// Broken to: `produce.rs` without the link's `close()` (no detach; the session and the
/// connection end under it): the send error was no longer the link's `RemoteClosed`.
#[tokio::test(flavor = "multi_thread")]
async fn on_stop_a_link_settles_what_it_took_and_detaches_and_the_connection_closes_within_8_s() {
    let seen = stop_while_sending("stop-detach").await;
    assert_eq!(
        seen.send_error, "LinkStateError(RemoteClosed)",
        "the link was detached (closed) by the gateway"
    );
    assert!(
        seen.closed_within < Duration::from_secs(8),
        "the connection closed {:?} after the stop",
        seen.closed_within
    );
    let stored: BTreeSet<&String> = seen.stored.iter().collect();
    assert_eq!(stored.len(), seen.stored.len(), "nothing written twice");
    let accepted: BTreeSet<&String> = seen
        .outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Ok(Outcome::Accepted(_))))
        .map(|(body, _)| body)
        .collect();
    assert!(accepted.len() >= 20, "accepted before the stop");
    assert_eq!(
        stored, accepted,
        "exactly the accepted transfers are in Kafka"
    );
}

/// docs/amqp.md §Links the client sends on: "When the gateway stops, … answers transfers
/// still arriving `released` (not written: the client may send them again)". In
/// [`stop_while_sending`] every transfer the client sent must get an outcome, `accepted` or
/// `released`, some `released`, and none of those written. (It failed before issue 22's
/// third round: the stopping link lowered its credit to 0, and fe2o3-amqp answered every
/// transfer the client had sent within its old credit with `TransferLimitExceeded`, which
/// ended the release loop: those transfers got no outcome at all. The link is drained now.)
#[tokio::test(flavor = "multi_thread")]
async fn on_stop_transfers_the_link_has_not_taken_are_released_not_written() {
    let seen = stop_while_sending("stop-release").await;
    let stored: BTreeSet<&String> = seen.stored.iter().collect();
    let mut released = Vec::new();
    for (body, outcome) in &seen.outcomes {
        match outcome {
            Ok(Outcome::Accepted(_)) => {}
            Ok(Outcome::Released(_)) => released.push(body),
            other => panic!("{body} got neither accepted nor released: {other:?}"),
        }
    }
    assert!(
        !released.is_empty(),
        "transfers after the stop are released"
    );
    let written: Vec<_> = released.iter().filter(|b| stored.contains(*b)).collect();
    assert!(written.is_empty(), "released but written: {written:?}");
}

/// docs/amqp.md §Links the client receives on: the selector filter
/// `amqp.annotation.x-opt-offset > 'N'` on a `T/group.id/G` source starts every partition of
/// the topic at offset N+1 (the group has no committed offset, so without the filter it would
/// start at the earliest). Ten records in each of two partitions; a receiver with `> '4'`
/// gets offsets 5–9 of both partitions, and its first delivery of each partition is at 5.
///
/// Broken to: `consume.rs` not seeking the assigned partitions (`seek_when_assigned` left
/// out): the receiver started at offset 0.
#[tokio::test(flavor = "multi_thread")]
async fn an_offset_selector_filter_starts_every_partition_at_that_offset() {
    let gw = gateway::start(with_amqp).await;
    gw.gateway
        .backend()
        .admin
        .create_topic("from-offset", Some(2), None)
        .await
        .unwrap();
    let records = (0..2)
        .flat_map(|p| {
            (0..10).map(move |i| barnabas_core::Record {
                partition: Some(p),
                ..barnabas_core::Record::new("from-offset", format!("p{p}-{i}"))
            })
        })
        .collect();
    common::produce_all(&gw, records).await;
    let (_conn, mut session) = connect(&gw, "from-offset").await;
    let source = Source::builder()
        .address("from-offset/group.id/fresh")
        .add_to_filter(
            Symbol::from("apache.org:selector-filter:string"),
            serde_amqp::described::Described {
                descriptor: serde_amqp::descriptor::Descriptor::Code(0x0000_468C_0000_0004),
                value: Value::String("amqp.annotation.x-opt-offset > '4'".into()),
            },
        )
        .build();
    let mut r = Receiver::builder()
        .name("from-offset")
        .source(source)
        .attach(&mut session)
        .await
        .unwrap();
    let mut got: Vec<(i32, i64, String)> = Vec::new();
    for _ in 0..10 {
        let d = next_delivery(&mut r).await;
        let ma = d.message().message_annotations.as_ref().unwrap();
        let get = |k: &str| {
            ma.get(&k as &dyn fe2o3_amqp::types::messaging::annotations::AnnotationKey)
                .cloned()
        };
        let (Some(Value::Int(p)), Some(Value::Long(o))) =
            (get("x-opt-kafka-partition"), get("x-opt-kafka-offset"))
        else {
            panic!("no partition or offset annotation: {ma:?}");
        };
        got.push((p, o, data_body(&d)));
    }
    for p in 0..2 {
        let first = got.iter().find(|(q, _, _)| *q == p);
        assert_eq!(
            first.map(|(_, o, _)| *o),
            Some(5),
            "partition {p} starts at 5: {got:?}"
        );
    }
    got.sort();
    let want: Vec<(i32, i64, String)> = (0..2)
        .flat_map(|p| (5..10).map(move |o| (p, o, format!("p{p}-{o}"))))
        .collect();
    assert_eq!(got, want);
    gw.stop().await;
}
