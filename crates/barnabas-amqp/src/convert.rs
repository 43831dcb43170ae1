//! AMQP messages ↔ Kafka records (interface §2).
//!
//! Incoming: the body (data sections, an amqp-value string or binary, an amqp-sequence as a
//! JSON array) is the value; annotation `x-opt-kafka-key` (or Event Hubs' `x-opt-partition-key`)
//! the key; `x-opt-kafka-partition` the partition; application-properties become headers, and
//! the standard properties become `amqp.*` headers. Outgoing is the reverse, plus the
//! `x-opt-kafka-*` and Event Hubs annotations saying where the record lives.

use barnabas_core::{ConsumedRecord, Header, Record};
use bytes::Bytes;
use fe2o3_amqp::types::{
    messaging::{
        annotations::AnnotationKey, ApplicationProperties, Body, Data, Message, MessageAnnotations,
        MessageId, Properties,
    },
    primitives::{Binary, SimpleValue, Symbol, Timestamp, Value},
};

/// Headers holding the standard AMQP properties a message was sent with.
const MESSAGE_ID: &str = "amqp.message-id";
const CORRELATION_ID: &str = "amqp.correlation-id";
const CONTENT_TYPE: &str = "amqp.content-type";
const SUBJECT: &str = "amqp.subject";
const REPLY_TO: &str = "amqp.reply-to";
const TO: &str = "amqp.to";

/// Why a message cannot become a record (answered `rejected` with `amqp:decode-error`).
#[derive(Debug)]
pub struct BadMessage(pub String);

fn annotation<'a>(m: &'a Message<Body<Value>>, key: &str) -> Option<&'a Value> {
    m.message_annotations
        .as_ref()
        .and_then(|ma| ma.get(&key as &dyn AnnotationKey))
}

/// The bytes of a key, partition key or header value given as a simple AMQP value.
fn value_bytes(v: &Value) -> Option<Bytes> {
    Some(match v {
        Value::Null => return None,
        Value::String(s) => Bytes::copy_from_slice(s.as_bytes()),
        Value::Symbol(s) => Bytes::copy_from_slice(s.as_str().as_bytes()),
        Value::Binary(b) => Bytes::copy_from_slice(b),
        Value::Bool(b) => Bytes::from(b.to_string()),
        Value::Ubyte(n) => Bytes::from(n.to_string()),
        Value::Ushort(n) => Bytes::from(n.to_string()),
        Value::Uint(n) => Bytes::from(n.to_string()),
        Value::Ulong(n) => Bytes::from(n.to_string()),
        Value::Byte(n) => Bytes::from(n.to_string()),
        Value::Short(n) => Bytes::from(n.to_string()),
        Value::Int(n) => Bytes::from(n.to_string()),
        Value::Long(n) => Bytes::from(n.to_string()),
        Value::Float(n) => Bytes::from(n.to_string()),
        Value::Double(n) => Bytes::from(n.to_string()),
        Value::Char(c) => Bytes::from(c.to_string()),
        Value::Timestamp(t) => Bytes::from(t.milliseconds().to_string()),
        Value::Uuid(u) => Bytes::from(format!("{u:?}")),
        other => Bytes::from(format!("{other:?}")),
    })
}

fn message_id_bytes(id: &MessageId) -> Bytes {
    match id {
        MessageId::Ulong(n) => Bytes::from(n.to_string()),
        MessageId::Uuid(u) => Bytes::from(format!("{u:?}")),
        MessageId::Binary(b) => Bytes::copy_from_slice(b),
        MessageId::String(s) => Bytes::copy_from_slice(s.as_bytes()),
    }
}

fn json_of(v: &Value) -> Result<serde_json::Value, BadMessage> {
    use serde_json::Value as J;
    Ok(match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::String(s) => J::String(s.clone()),
        Value::Symbol(s) => J::String(s.as_str().to_owned()),
        Value::Long(n) => J::from(*n),
        Value::Int(n) => J::from(*n),
        Value::Short(n) => J::from(*n),
        Value::Byte(n) => J::from(*n),
        Value::Ulong(n) => J::from(*n),
        Value::Uint(n) => J::from(*n),
        Value::Ushort(n) => J::from(*n),
        Value::Ubyte(n) => J::from(*n),
        Value::Double(n) => J::from(n.0),
        Value::Float(n) => J::from(f64::from(n.0)),
        Value::List(items) => J::Array(items.iter().map(json_of).collect::<Result<_, _>>()?),
        other => {
            return Err(BadMessage(format!(
                "amqp-sequence element {other:?} has no JSON form"
            )))
        }
    })
}

/// The record value of a message body.
fn body_value(body: &Body<Value>) -> Result<Option<Bytes>, BadMessage> {
    Ok(match body {
        Body::Data(sections) => {
            let mut out = Vec::with_capacity(sections.iter().map(|d| d.0.len()).sum());
            for Data(bytes) in sections.iter() {
                out.extend_from_slice(bytes);
            }
            Some(Bytes::from(out))
        }
        Body::Value(v) => match &v.0 {
            Value::String(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
            Value::Binary(b) => Some(Bytes::copy_from_slice(b)),
            Value::Null => None,
            other => {
                return Err(BadMessage(format!(
                    "amqp-value bodies must be a string or binary, not {other:?}"
                )))
            }
        },
        Body::Sequence(seqs) => {
            let mut items = Vec::new();
            for seq in seqs.iter() {
                for v in &seq.0 {
                    items.push(json_of(v)?);
                }
            }
            Some(Bytes::from(serde_json::Value::Array(items).to_string()))
        }
        Body::Empty => Some(Bytes::new()),
    })
}

/// The message format of an Azure Event Hubs batch: every data section of the body is one
/// whole encoded message.
pub const BATCH_MESSAGE_FORMAT: u32 = 0x8001_3700;

/// The records of one transfer: one, or with the Event Hubs batch format, one per message
/// inside its data sections (a message's own partition key first, else the batch's).
pub fn to_records(
    m: &Message<Body<Value>>,
    message_format: Option<u32>,
    topic: &str,
    partition: Option<i32>,
) -> Result<Vec<Record>, BadMessage> {
    if message_format != Some(BATCH_MESSAGE_FORMAT) {
        return to_record(m, topic, partition).map(|r| vec![r]);
    }
    let Body::Data(sections) = &m.body else {
        return Err(BadMessage(
            "an Event Hubs batch (message format 0x80013700) must carry data sections".into(),
        ));
    };
    let batch_key = annotation(m, "x-opt-partition-key").and_then(value_bytes);
    let mut records = Vec::with_capacity(sections.len());
    for (i, section) in sections.iter().enumerate() {
        use fe2o3_amqp::types::messaging::message::DecodeIntoMessage;
        let inner = <Body<Value> as DecodeIntoMessage>::decode_message_from_reader(
            serde_amqp::read::SliceReader::new(&section.0),
        )
        .map_err(|e| BadMessage(format!("message {i} of the batch does not decode: {e}")))?;
        let mut record = to_record(&inner, topic, partition)?;
        if record.key.is_none() {
            record.key.clone_from(&batch_key);
        }
        records.push(record);
    }
    Ok(records)
}

/// The Kafka record for a message sent to `topic` (`partition` from the address, if any).
pub fn to_record(
    m: &Message<Body<Value>>,
    topic: &str,
    partition: Option<i32>,
) -> Result<Record, BadMessage> {
    let value = body_value(&m.body)?;
    let key = annotation(m, "x-opt-kafka-key")
        .or_else(|| annotation(m, "x-opt-partition-key"))
        .and_then(value_bytes);
    let partition = record_partition(m, partition)?;
    let mut headers = m
        .properties
        .as_ref()
        .map(property_headers)
        .unwrap_or_default();
    if let Some(ap) = &m.application_properties {
        // `barnabas.*` headers are the gateway's (interface §4): a client's never shadows them.
        let own =
            ap.0.iter()
                .filter(|(k, _)| !barnabas_core::internal::is_gateway_header(k));
        for (k, v) in own {
            headers.push(Header {
                key: k.clone(),
                value: value_bytes(&Value::from(v.clone())),
            });
        }
    }
    Ok(Record {
        topic: topic.to_owned(),
        partition,
        key,
        value,
        headers,
        timestamp: None,
    })
}

/// The partition a message goes to: the address's, else its `x-opt-kafka-partition`
/// annotation (which must be a number), else none (the producer's partitioner picks).
fn record_partition(
    m: &Message<Body<Value>>,
    partition: Option<i32>,
) -> Result<Option<i32>, BadMessage> {
    if partition.is_some() {
        return Ok(partition);
    }
    let Some(v) = annotation(m, "x-opt-kafka-partition") else {
        return Ok(None);
    };
    value_bytes(v)
        .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<i32>().ok())
        .map(Some)
        .ok_or_else(|| {
            BadMessage(format!(
                "x-opt-kafka-partition {v:?} is not a partition number"
            ))
        })
}

/// The `amqp.*` headers keeping a message's standard properties, for [`to_message`] to give
/// back as properties.
fn property_headers(props: &Properties) -> Vec<Header> {
    let mut headers = Vec::new();
    if let Some(id) = &props.message_id {
        headers.push(Header::new(MESSAGE_ID, message_id_bytes(id)));
    }
    if let Some(id) = &props.correlation_id {
        headers.push(Header::new(CORRELATION_ID, message_id_bytes(id)));
    }
    if let Some(ct) = &props.content_type {
        headers.push(Header::new(CONTENT_TYPE, ct.as_str().to_owned()));
    }
    if let Some(s) = &props.subject {
        headers.push(Header::new(SUBJECT, s.clone()));
    }
    if let Some(r) = &props.reply_to {
        headers.push(Header::new(REPLY_TO, r.clone()));
    }
    if let Some(t) = &props.to {
        headers.push(Header::new(TO, t.clone()));
    }
    headers
}

/// The message delivering a record to a receiver link.
pub fn to_message(r: &ConsumedRecord) -> Message<Data> {
    let (props, app) = header_properties(&r.headers);
    let builder = Message::builder().message_annotations(record_annotations(r));
    let builder = if r.headers.is_empty() {
        builder
    } else {
        builder.application_properties(app)
    };
    let builder = match props {
        Some(props) => builder.properties(props),
        None => builder,
    };
    builder
        .data(Binary::from(
            r.value.as_ref().map(|v| v.to_vec()).unwrap_or_default(),
        ))
        .build()
}

/// The annotations saying where a record lives, in Kafka's terms and in Event Hubs' (whose
/// offset and sequence number are both the Kafka offset), with its timestamp and key.
fn record_annotations(r: &ConsumedRecord) -> MessageAnnotations {
    let key_value = |k: &Bytes| match std::str::from_utf8(k) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => Value::Binary(Binary::from(k.to_vec())),
    };
    let mut ma = MessageAnnotations::builder()
        .insert("x-opt-kafka-topic", r.topic.clone())
        .insert("x-opt-kafka-partition", r.partition)
        .insert("x-opt-kafka-offset", r.offset)
        .insert("x-opt-offset", r.offset.to_string())
        .insert("x-opt-sequence-number", r.offset);
    if let Some(ts) = r.timestamp {
        ma = ma
            .insert("x-opt-kafka-timestamp", ts)
            .insert("x-opt-enqueued-time", Timestamp::from_milliseconds(ts));
    }
    if let Some(k) = &r.key {
        ma = ma
            .insert("x-opt-kafka-key", key_value(k))
            .insert("x-opt-partition-key", key_value(k));
    }
    ma.build()
}

/// A record's headers as message properties: the `amqp.*` ones [`property_headers`] made
/// back into the standard properties (`None` when there are none), the others application
/// properties.
fn header_properties(headers: &[Header]) -> (Option<Properties>, ApplicationProperties) {
    let mut props = Properties::builder();
    let mut app = ApplicationProperties::builder();
    let mut has_props = false;
    for h in headers {
        let text = h
            .value
            .as_ref()
            .and_then(|v| std::str::from_utf8(v).ok().map(str::to_owned));
        match (h.key.as_str(), text) {
            (MESSAGE_ID, Some(t)) => props = props.message_id(t),
            (CORRELATION_ID, Some(t)) => props = props.correlation_id(t),
            (CONTENT_TYPE, Some(t)) => props = props.content_type(Symbol::from(t)),
            (SUBJECT, Some(t)) => props = props.subject(t),
            (REPLY_TO, Some(t)) => props = props.reply_to(t),
            (TO, Some(t)) => props = props.to(t),
            (key, text) => {
                let v = match (text, &h.value) {
                    (Some(t), _) => SimpleValue::String(t),
                    (None, Some(b)) => SimpleValue::Binary(Binary::from(b.to_vec())),
                    (None, None) => SimpleValue::Null,
                };
                app = app.insert(key.to_owned(), v);
                continue;
            }
        }
        has_props = true;
    }
    (has_props.then(|| props.build()), app.build())
}
