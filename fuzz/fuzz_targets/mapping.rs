//! The topic-mapping template language: a rule (pattern, Kafka topic template, key template)
//! and an MQTT topic name and filter, split from the input at newlines. Compiling the rule may
//! fail (configuration error); resolving and reverse-mapping must never panic, and a resolved
//! Kafka topic must be one the filter of that same name maps back to.
#![no_main]

use barnabas_core::{MappingRule, TopicMapper};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(5, '\n');
    let (Some(pattern), Some(kafka_topic), Some(key), Some(topic)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let filter = parts.next().unwrap_or(topic);
    let rule = MappingRule {
        pattern: pattern.to_owned(),
        kafka_topic: kafka_topic.to_owned(),
        key: (!key.is_empty()).then(|| key.to_owned()),
    };
    let Ok(mapper) = TopicMapper::new(&[rule], "default") else {
        return;
    };
    let resolved = mapper.resolve(topic);
    if let Some(parsed) = barnabas_mqtt::filter::Filter::parse(filter) {
        let sources = mapper.sources(&parsed.levels());
        let _ = sources.is_empty();
    }
    // A topic name is also a filter that matches exactly itself: where it was written must be
    // among the sources it is read back from.
    if let (Ok(Some(r)), Some(exact)) = (resolved, barnabas_mqtt::filter::Filter::parse(topic)) {
        if !topic.contains(['+', '#']) && !topic.starts_with('$') {
            assert!(
                mapper.sources(&exact.levels()).matches(&r.kafka_topic),
                "{topic:?} is written to {:?} but not read back from it",
                r.kafka_topic
            );
        }
    }
});
