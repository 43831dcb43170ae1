//! A delivery shaped for one client's limits before it is sent: the client's Maximum Packet
//! Size (v5), measured on the exact encoded packet, and topic aliases towards the client up
//! to its Topic Alias Maximum (v5). Pure per-connection state, no I/O: the session asks
//! [`Outbound::shape`] for each PUBLISH it is about to send.

use std::{collections::HashMap, num::NonZeroU16};

use crate::packet::{Publish, PublishProperties, QoS};
use bytestring::ByteString;

/// Topic aliases the gateway sets towards one client, at most, whatever the client's Topic
/// Alias Maximum: the table is per connection, and a client may announce 65 535.
pub const OUTBOUND_ALIAS_CAP: u16 = 32;
/// Longest topic given an alias: with [`OUTBOUND_ALIAS_CAP`], a connection's table holds at
/// most 8 KiB of topic names. Longer topics are sent by name.
pub const MAX_ALIASED_TOPIC: usize = 256;
/// An alias is reassigned to a new topic only once it went unused for this many deliveries:
/// replacing the least recently used one at once would, for a client reading more topics
/// in turn than it has aliases, replace one with every delivery and never send a topic by
/// alias alone. So a full table keeps its aliases and new topics go by name, until one of
/// them goes stale.
pub const STALE_AFTER: u64 = 256;

/// One connection's outbound limits and alias table.
pub struct Outbound {
    v5: bool,
    max_packet: Option<usize>,
    aliases: Aliases,
}

/// Topic → alias towards the client; when full, a stale alias is reassigned.
struct Aliases {
    max: u16,
    by_topic: HashMap<ByteString, NonZeroU16>,
    /// Index `alias - 1`: the topic it stands for and when it was last used.
    slots: Vec<(ByteString, u64)>,
    clock: u64,
}

impl Outbound {
    /// For a client of this protocol version, with its v5 Maximum Packet Size and Topic
    /// Alias Maximum (0 = it accepts no aliases [MQTT-3.1.2-27]).
    pub fn new(v5: bool, max_packet: Option<usize>, topic_alias_max: u16) -> Self {
        let max = if v5 {
            topic_alias_max.min(OUTBOUND_ALIAS_CAP)
        } else {
            0
        };
        Self {
            v5,
            max_packet,
            aliases: Aliases {
                max,
                by_topic: HashMap::new(),
                slots: Vec::new(),
                clock: 0,
            },
        }
    }

    /// The PUBLISH as it goes to this client, or `None` when it is larger than the client's
    /// Maximum Packet Size: the server must not send it [MQTT-3.1.2-24] and discards it as if
    /// it had been sent [MQTT-3.1.2-25] (the caller finishes the record).
    ///
    /// Topic aliases (3.3.2.3.4): a topic with an alias goes as a zero-length topic
    /// name plus the alias; a new topic takes a free alias (or the least recently used one,
    /// unused for [`STALE_AFTER`] deliveries, which the server may reassign [3.3.2.3.4]) and
    /// goes with its name and the alias, which
    /// sets it on the client. Aliases stay within 1..=the client's Topic Alias Maximum
    /// [MQTT-3.3.2-8] [MQTT-3.1.2-26] [MQTT-3.3.2-11]. An assignment is kept only when its packet is sent.
    pub fn shape(&mut self, mut publish: Publish) -> Option<Publish> {
        if !self.v5 {
            return Some(publish);
        }
        let fits = |p: &Publish, max: Option<usize>| max.is_none_or(|m| packet_size(p, true) <= m);
        self.aliases.clock = self.aliases.clock.wrapping_add(1);
        let topic = publish.topic.clone();
        if let Some(&alias) = self.aliases.by_topic.get(&topic) {
            let by_alias = with_alias(&publish, ByteString::new(), alias);
            if fits(&by_alias, self.max_packet) {
                self.aliases.touch(alias);
                return Some(by_alias);
            }
            return None;
        }
        let free = (!topic.is_empty() && topic.len() <= MAX_ALIASED_TOPIC)
            .then(|| self.aliases.next_free())
            .flatten();
        if let Some(alias) = free {
            let setting = with_alias(&publish, topic.clone(), alias);
            if fits(&setting, self.max_packet) {
                self.aliases.assign(alias, topic);
                return Some(setting);
            }
        }
        // No alias: the plain PUBLISH (3 bytes smaller than one setting an alias).
        publish.topic = topic;
        fits(&publish, self.max_packet).then_some(publish)
    }
}

fn with_alias(publish: &Publish, topic: ByteString, alias: NonZeroU16) -> Publish {
    let mut p = publish.clone();
    p.topic = topic;
    p.properties
        .get_or_insert_with(PublishProperties::default)
        .topic_alias = Some(alias);
    p
}

impl Aliases {
    /// The alias a new topic takes: the next never used one, else the least recently used
    /// if it is stale; `None` when the client takes no aliases or all are in use.
    fn next_free(&self) -> Option<NonZeroU16> {
        if self.slots.len() < usize::from(self.max) {
            // slots.len() < max <= u16::MAX, so len + 1 fits and is not zero.
            return u16::try_from(self.slots.len() + 1)
                .ok()
                .and_then(NonZeroU16::new);
        }
        let (oldest, (_, used)) = self
            .slots
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, used))| *used)?;
        if self.clock.wrapping_sub(*used) < STALE_AFTER {
            return None;
        }
        u16::try_from(oldest + 1).ok().and_then(NonZeroU16::new)
    }

    fn assign(&mut self, alias: NonZeroU16, topic: ByteString) {
        match self.slots.get_mut(usize::from(alias.get() - 1)) {
            Some(slot) => {
                // Reassigned: the topic it stood for goes by name until it gets one again.
                let (old, _) = std::mem::replace(slot, (topic.clone(), self.clock));
                self.by_topic.remove(&old);
            }
            None => self.slots.push((topic.clone(), self.clock)),
        }
        self.by_topic.insert(topic, alias);
    }

    fn touch(&mut self, alias: NonZeroU16) {
        if let Some(slot) = self.slots.get_mut(usize::from(alias.get() - 1)) {
            slot.1 = self.clock;
        }
    }
}

/// Bytes of a Variable Byte Integer holding `n` (1.5.5).
fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// The exact size of a PUBLISH on the wire, fixed header included (what a v5 client's
/// Maximum Packet Size bounds, 3.1.2.11.4), as rmqtt-codec encodes it. Saturating: a size
/// that does not fit a `usize` is too large for any client.
pub fn packet_size(p: &Publish, v5: bool) -> usize {
    let mut rest = 2usize
        .saturating_add(p.topic.len())
        .saturating_add(if p.qos == QoS::AtMostOnce { 0 } else { 2 })
        .saturating_add(p.payload.len());
    if v5 {
        let props = p.properties.as_ref().map_or(0, properties_size);
        rest = rest.saturating_add(varint_len(props)).saturating_add(props);
    }
    1usize.saturating_add(varint_len(rest)).saturating_add(rest)
}

fn properties_size(p: &PublishProperties) -> usize {
    let string = |s: &Option<ByteString>| s.as_ref().map_or(0, |s| 3usize.saturating_add(s.len()));
    let mut n = 0usize;
    n = n.saturating_add(if p.topic_alias.is_some() { 3 } else { 0 });
    n = n.saturating_add(
        p.correlation_data
            .as_ref()
            .map_or(0, |d| 3usize.saturating_add(d.len())),
    );
    n = n.saturating_add(if p.message_expiry_interval.is_some() {
        5
    } else {
        0
    });
    n = n.saturating_add(string(&p.content_type));
    n = n.saturating_add(if p.is_utf8_payload { 2 } else { 0 });
    n = n.saturating_add(string(&p.response_topic));
    for id in &p.subscription_ids {
        n = n.saturating_add(1 + varint_len(usize::try_from(id.get()).unwrap_or(usize::MAX)));
    }
    for (k, v) in &p.user_properties {
        n = n
            .saturating_add(5)
            .saturating_add(k.len())
            .saturating_add(v.len());
    }
    n
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use rmqtt_codec::{v5, MqttCodec, MqttPacket};
    use tokio_util::codec::Encoder;

    fn publish(topic: &str, qos: QoS, payload: usize) -> Publish {
        Publish {
            dup: false,
            retain: false,
            qos,
            topic: topic.into(),
            packet_id: (qos != QoS::AtMostOnce).then_some(NonZeroU16::MIN),
            payload: Bytes::from(vec![b'x'; payload]),
            properties: Some(PublishProperties::default()),
        }
    }

    fn encoded(p: &Publish) -> usize {
        let mut codec = MqttCodec::V5(v5::Codec::new(0, 0));
        let mut buf = BytesMut::new();
        codec
            .encode(
                MqttPacket::V5(v5::Packet::Publish(Box::new(crate::wire::publish_out(
                    p.clone(),
                )))),
                &mut buf,
            )
            .expect("encodes");
        buf.len()
    }

    /// The computed size is the encoder's, with every property the gateway sends, across
    /// the Variable Byte Integer boundaries.
    #[test]
    fn packet_size_is_the_encoded_size() {
        for payload in [0, 1, 100, 120, 127, 128, 16_380, 16_400, 70_000] {
            let mut p = publish("a/b", QoS::AtLeastOnce, payload);
            assert_eq!(
                packet_size(&p, true),
                encoded(&p),
                "bare, payload {payload}"
            );
            let props = p.properties.as_mut().unwrap();
            props.topic_alias = NonZeroU16::new(3);
            props.correlation_data = Some(Bytes::from_static(b"\x00\x01"));
            props.message_expiry_interval = std::num::NonZeroU32::new(60);
            props.content_type = Some("text/plain".into());
            props.is_utf8_payload = true;
            props.response_topic = Some("r/t".into());
            props.subscription_ids = vec![std::num::NonZeroU32::new(200_000).unwrap()];
            props.user_properties = vec![("k".into(), "v".into()), ("é".into(), "ü".into())];
            assert_eq!(
                packet_size(&p, true),
                encoded(&p),
                "props, payload {payload}"
            );
            let q0 = publish("a/b", QoS::AtMostOnce, payload);
            assert_eq!(
                packet_size(&q0, true),
                encoded(&q0),
                "QoS 0, payload {payload}"
            );
        }
    }

    fn alias_of(p: &Publish) -> Option<u16> {
        p.properties
            .as_ref()
            .and_then(|p| p.topic_alias)
            .map(NonZeroU16::get)
    }

    #[test]
    fn aliases_stay_within_the_clients_maximum_and_are_reused() {
        let mut out = Outbound::new(true, None, 2);
        let mut send = |t: &str| out.shape(publish(t, QoS::AtLeastOnce, 1)).unwrap();
        let first = send("t/1");
        assert_eq!((first.topic.as_ref(), alias_of(&first)), ("t/1", Some(1)));
        let again = send("t/1");
        assert_eq!(
            (again.topic.as_ref(), alias_of(&again)),
            ("", Some(1)),
            "a known topic goes by alias only"
        );
        let second = send("t/0");
        assert_eq!((second.topic.as_ref(), alias_of(&second)), ("t/0", Some(2)));
        // Full: a third topic goes by name, the aliases stay (no thrashing in a cycle).
        for _ in 0..3 {
            for t in ["t/0", "t/1", "t/2"] {
                let p = send(t);
                match t {
                    "t/2" => assert_eq!((p.topic.as_ref(), alias_of(&p)), ("t/2", None)),
                    _ => assert_eq!(p.topic, "", "{t} by alias"),
                }
            }
        }
        // Once t/0 went unused for STALE_AFTER deliveries, its alias is reassigned.
        for _ in 0..STALE_AFTER {
            send("t/1");
        }
        let reassigned = send("t/2");
        assert_eq!(
            (reassigned.topic.as_ref(), alias_of(&reassigned)),
            ("t/2", Some(2))
        );
        let by_name = send("t/0");
        assert_eq!((by_name.topic.as_ref(), alias_of(&by_name)), ("t/0", None));
    }

    #[test]
    fn no_aliases_without_a_topic_alias_maximum_or_for_v3_or_long_topics() {
        for mut out in [Outbound::new(true, None, 0), Outbound::new(false, None, 10)] {
            for _ in 0..3 {
                let p = out.shape(publish("t/1", QoS::AtLeastOnce, 1)).unwrap();
                assert_eq!(p.topic, "t/1");
                assert!(p.properties.is_none_or(|p| p.topic_alias.is_none()));
            }
        }
        let long = "x".repeat(MAX_ALIASED_TOPIC + 1);
        let mut out = Outbound::new(true, None, 65_535);
        let p = out.shape(publish(&long, QoS::AtMostOnce, 1)).unwrap();
        assert!(p.properties.unwrap().topic_alias.is_none());
        // A client announcing 65 535 aliases gets at most the gateway's cap.
        let mut most = 0;
        for i in 0..100 {
            let p = out
                .shape(publish(&format!("t/{i}"), QoS::AtMostOnce, 1))
                .unwrap();
            most = most.max(alias_of(&p).unwrap_or(0));
        }
        assert_eq!(most, OUTBOUND_ALIAS_CAP);
        assert!(out.aliases.by_topic.len() <= usize::from(OUTBOUND_ALIAS_CAP));
    }

    /// A packet exactly at the client's Maximum Packet Size goes, one byte more does not;
    /// an alias is not set by a packet that was not sent.
    #[test]
    fn maximum_packet_size_is_exact() {
        let p = publish("a/b", QoS::AtLeastOnce, 100);
        let size = packet_size(&p, true);
        let mut out = Outbound::new(true, Some(size), 0);
        assert!(out.shape(p.clone()).is_some());
        assert!(out.shape(publish("a/b", QoS::AtLeastOnce, 101)).is_none());
        // With aliases: the alias-setting packet is 3 bytes larger; too large, it goes
        // without an alias, and the alias is not recorded.
        let mut out = Outbound::new(true, Some(size), 5);
        let sent = out.shape(p).unwrap();
        assert_eq!(sent.topic, "a/b");
        assert!(sent.properties.unwrap().topic_alias.is_none());
        assert!(out.aliases.by_topic.is_empty());
    }
}
