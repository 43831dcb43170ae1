//! The Azure Event Hubs request/response nodes: `$cbs` (claims-based security, the
//! `put-token` exchange) and `$management` (`READ` of `com.microsoft:eventhub` and
//! `com.microsoft:partition`).
//!
//! A client attaches a pair of links to a node in one session: one it sends requests on
//! (target `$cbs`), one it receives the answers on (source `$cbs`). Each request is answered on
//! the session's answer link for that node with application properties `status-code` and
//! `status-description`, its `correlation-id` the request's `message-id`. Requests are
//! answered one at a time per request link, within the link credit fe2o3-amqp grants (200), so
//! a client cannot pile up pending requests.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use barnabas_core::{Credentials, Principal, TopicMetadata};
use fe2o3_amqp::{
    types::{
        messaging::{ApplicationProperties, Body, Message, Properties},
        primitives::{OrderedMap, SimpleValue, Timestamp, Value},
    },
    Receiver, Sender,
};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::AmqpContext;

/// How long a request waits for its session's answer link to be attached.
const ANSWER_LINK_WAIT: Duration = Duration::from_secs(5);

/// A node's answer to a request: its `status-code`, `status-description` and body.
type NodeAnswer = (i32, String, Value);

/// An answer without a body, for a request that failed: its status code and why.
fn failed(code: i32, description: impl Into<String>) -> NodeAnswer {
    (code, description.into(), Value::Null)
}

/// A request/response node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    /// `$cbs`: put-token.
    Cbs,
    /// `$management`: Event Hub and partition properties.
    Management,
}

impl Node {
    /// The node an address names (`$cbs`, `$management`, also as the last segment of an
    /// `amqps://host/…` address), if any.
    pub fn of(address: &str) -> Option<Self> {
        match address.rsplit('/').next() {
            Some("$cbs") => Some(Self::Cbs),
            Some("$management") => Some(Self::Management),
            _ => None,
        }
    }
}

/// The answer link of each node in one session, filled in when the client attaches it.
#[derive(Default)]
pub struct AnswerLinks {
    links: Mutex<BTreeMap<Node, Sender>>,
    attached: Notify,
}

impl AnswerLinks {
    /// Records the session's answer link for `node` (a newer one replaces it).
    pub async fn attach(&self, node: Node, sender: Sender) {
        let old = self.links.lock().await.insert(node, sender);
        self.attached.notify_waiters();
        if let Some(old) = old {
            let _ = tokio::time::timeout(crate::CLOSE_WAIT, old.close()).await;
        }
    }

    /// Closes every answer link (the session ends).
    pub async fn close(&self) {
        let links = std::mem::take(&mut *self.links.lock().await);
        for (_, s) in links {
            let _ = tokio::time::timeout(crate::CLOSE_WAIT, s.close()).await;
        }
    }

    /// Sends `answer` on the answer link of `node`, waiting a little for it to be attached.
    async fn send(
        &self,
        node: Node,
        answer: Message<fe2o3_amqp::types::messaging::AmqpValue<Value>>,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + ANSWER_LINK_WAIT;
        loop {
            let notified = self.attached.notified();
            {
                let mut links = self.links.lock().await;
                if let Some(s) = links.get_mut(&node) {
                    // Batchable: fe2o3-amqp then encodes the transfer whole (its last field
                    // set), which the Event Hubs SDK's AMQP stack needs (it reads the payload
                    // after the eleventh field). The client's outcome is not waited for.
                    return matches!(
                        tokio::time::timeout(ANSWER_LINK_WAIT, s.send_batchable(answer)).await,
                        Ok(Ok(_))
                    );
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }
}

/// Serves a request link of `node` until the client detaches or the gateway stops.
pub async fn serve_requests(
    mut requests: Receiver,
    node: Node,
    answers: Arc<AnswerLinks>,
    ctx: Arc<AmqpContext>,
    principal: Principal,
    shutdown: CancellationToken,
) {
    loop {
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => break,
            d = requests.recv::<Body<Value>>() => match d {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(error = ?e, ?node, "request link ended");
                    break;
                }
            },
        };
        let message = delivery.message();
        let (code, description, body) = match node {
            Node::Cbs => put_token(&ctx, message).await,
            Node::Management => management(&ctx, &principal, message).await,
        };
        let mut props = Properties::builder();
        if let Some(id) = message
            .properties
            .as_ref()
            .and_then(|p| p.message_id.clone())
        {
            props = props.correlation_id(id);
        }
        let answer = Message::builder()
            .properties(props.build())
            .application_properties(
                ApplicationProperties::builder()
                    .insert("status-code", SimpleValue::Int(code))
                    .insert("status-description", SimpleValue::String(description))
                    .build(),
            )
            .value(body)
            .build();
        let _ = requests.accept(&delivery).await;
        if !answers.send(node, answer).await {
            tracing::debug!(?node, "no answer link for a request; answer dropped");
        }
    }
    let _ = tokio::time::timeout(crate::CLOSE_WAIT, requests.close()).await;
}

/// An application property of a request, as text.
fn property<'a>(message: &'a Message<Body<Value>>, key: &str) -> Option<&'a str> {
    match message.application_properties.as_ref()?.0.get(key)? {
        SimpleValue::String(s) => Some(s.as_str()),
        SimpleValue::Symbol(s) => Some(s.0.as_str()),
        _ => None,
    }
}

/// The body of a request, as text (amqp-value string, or data sections in UTF-8).
fn body_text(message: &Message<Body<Value>>) -> Option<String> {
    match &message.body {
        Body::Value(v) => match &v.0 {
            Value::String(s) => Some(s.clone()),
            Value::Binary(b) => String::from_utf8(b.to_vec()).ok(),
            _ => None,
        },
        Body::Data(d) => {
            let bytes: Vec<u8> = d.iter().flat_map(|d| d.0.iter().copied()).collect();
            String::from_utf8(bytes).ok()
        }
        _ => None,
    }
}

/// The principal a CBS token proves, with auth on: the whole token as a bearer token of the
/// users file, or a `SharedAccessSignature` whose `sig` is one (of user `skn` when named).
/// A signature the SDK computed from a SharedAccessKey cannot be checked: the users file holds
/// no keys, only hashes.
pub fn token_principal(ctx: &AmqpContext, token: &str) -> Option<Principal> {
    if let Ok(p) = ctx.auth.authenticate(Credentials::Bearer(token.trim())) {
        return Some(p);
    }
    let sas = token.trim().strip_prefix("SharedAccessSignature ")?;
    let mut sig = None;
    let mut skn = None;
    for pair in sas.split('&') {
        let (k, v) = pair.split_once('=')?;
        let v = percent_decode(v)?;
        match k {
            "sig" => sig = Some(v),
            "skn" => skn = Some(v),
            _ => {}
        }
    }
    let p = ctx
        .auth
        .authenticate(Credentials::Bearer(sig?.as_str()))
        .ok()?;
    match skn {
        Some(name) if name != p.name.as_ref() => None,
        _ => Some(p),
    }
}

/// Decodes `%XX` escapes (and `+` as a space); `None` if malformed.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex =
                    std::str::from_utf8(bytes.get(i.checked_add(1)?..i.checked_add(3)?)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i = i.checked_add(3)?;
            }
            b'+' => {
                out.push(b' ');
                i = i.checked_add(1)?;
            }
            _ => {
                out.push(b);
                i = i.checked_add(1)?;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Answers a `$cbs` request: `put-token` is `202 Accepted` when auth is off (any token) or
/// the token proves a user ([`token_principal`]), `401` otherwise.
async fn put_token(ctx: &AmqpContext, message: &Message<Body<Value>>) -> NodeAnswer {
    if property(message, "operation") != Some("put-token") {
        return failed(400, "the $cbs node answers operation put-token only");
    }
    let Some(token) = body_text(message) else {
        return failed(400, "put-token needs the token as a string body");
    };
    if !ctx.auth.checks_credentials() {
        return (202, "Accepted".into(), Value::Null);
    }
    match token_principal(ctx, &token) {
        Some(p) => {
            tracing::debug!(principal = %p.name, "CBS token accepted");
            (202, "Accepted".into(), Value::Null)
        }
        None => {
            tracing::info!("CBS token refused");
            failed(401, "the token is not a bearer token of the users file")
        }
    }
}

/// Answers a `$management` request: `READ` of `com.microsoft:eventhub` (partition ids) or
/// `com.microsoft:partition` (sequence numbers and offsets from the watermarks), for a topic
/// the principal may read.
async fn management(
    ctx: &AmqpContext,
    principal: &Principal,
    message: &Message<Body<Value>>,
) -> NodeAnswer {
    if property(message, "operation") != Some("READ") {
        return failed(400, "the $management node answers operation READ only");
    }
    let Some(name) = property(message, "name") else {
        return failed(400, "READ needs a name");
    };
    if barnabas_core::validate_topic_name(name).is_err() {
        return failed(400, format!("'{name}' is not a topic name"));
    }
    if !ctx
        .auth
        .allows(principal, barnabas_core::Access::Read(name))
    {
        return failed(
            401,
            format!("principal '{}' may not describe '{name}'", principal.name),
        );
    }
    let md = match ctx.admin.topic_metadata(name).await {
        Ok(md) => md,
        Err(barnabas_core::Error::UnknownTopic(_)) => {
            return failed(404, format!("topic '{name}' does not exist"))
        }
        Err(e) => return failed(500, e.to_string()),
    };
    match property(message, "type") {
        Some("com.microsoft:eventhub") => eventhub_properties(name, &md),
        Some("com.microsoft:partition") => partition_properties(ctx, name, &md, message).await,
        other => failed(
            400,
            format!("READ of type {other:?} is not supported (com.microsoft:eventhub or com.microsoft:partition)"),
        ),
    }
}

/// The `com.microsoft:eventhub` properties of topic `name`: its partition ids.
fn eventhub_properties(name: &str, md: &TopicMetadata) -> NodeAnswer {
    let ids: Vec<Value> = md
        .partitions
        .iter()
        .map(|p| Value::String(p.partition.to_string()))
        .collect();
    let mut map = OrderedMap::new();
    map.insert(Value::from("name"), Value::from(name));
    // Kafka does not keep a topic's creation time.
    map.insert(
        Value::from("created_at"),
        Value::Timestamp(Timestamp::from_milliseconds(0)),
    );
    map.insert(
        Value::from("partition_count"),
        Value::Int(i32::try_from(ids.len()).unwrap_or(i32::MAX)),
    );
    map.insert(Value::from("partition_ids"), Value::List(ids));
    (200, "OK".into(), Value::Map(map))
}

/// The `com.microsoft:partition` properties of the partition of topic `name` the request
/// names, from its watermarks (a Kafka offset serves as both sequence number and offset).
async fn partition_properties(
    ctx: &AmqpContext,
    name: &str,
    md: &TopicMetadata,
    message: &Message<Body<Value>>,
) -> NodeAnswer {
    let Some(partition) = property(message, "partition").and_then(|p| p.parse::<i32>().ok()) else {
        return failed(400, "READ of a partition needs its number");
    };
    if !md.partitions.iter().any(|p| p.partition == partition) {
        return failed(404, format!("topic '{name}' has no partition {partition}"));
    }
    let w = match ctx.admin.watermarks(name, partition).await {
        Ok(w) => w,
        Err(e) => return failed(500, e.to_string()),
    };
    let last = w.high.checked_sub(1).unwrap_or(-1).max(-1);
    let empty = w.high <= w.low;
    let mut map = OrderedMap::new();
    map.insert(Value::from("name"), Value::from(name));
    map.insert(Value::from("partition"), Value::from(partition.to_string()));
    map.insert(Value::from("begin_sequence_number"), Value::Long(w.low));
    map.insert(
        Value::from("last_enqueued_sequence_number"),
        Value::Long(if empty { w.low.saturating_sub(1) } else { last }),
    );
    map.insert(
        Value::from("last_enqueued_offset"),
        Value::from(if empty {
            "-1".to_owned()
        } else {
            last.to_string()
        }),
    );
    // Not tracked: reading the last record's timestamp would cost a fetch.
    map.insert(
        Value::from("last_enqueued_time_utc"),
        Value::Timestamp(Timestamp::from_milliseconds(0)),
    );
    map.insert(Value::from("is_partition_empty"), Value::Bool(empty));
    (200, "OK".into(), Value::Map(map))
}
