//! The AMQP path barnabas owns: a transfer's payload (arbitrary bytes) decoded as fe2o3-amqp
//! decodes it for a sender link, then turned into a Kafka record by `barnabas_amqp::convert`;
//! and every record delivered to a receiver link encodes into a message that decodes again with
//! the same value. The frame layer itself is fe2o3-amqp's. Must never panic.
#![no_main]

use barnabas_amqp::convert;
use barnabas_core::ConsumedRecord;
use fe2o3_amqp::types::{
    messaging::{
        message::{__private::Serializable, DecodeIntoMessage},
        Body,
    },
    primitives::Value,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let reader = serde_amqp::read::SliceReader::new(data);
    let Ok(message) = <Body<Value>>::decode_message_from_reader(reader) else {
        return;
    };
    let Ok(record) = convert::to_record(&message, "fuzz", None) else {
        return;
    };
    // The same record as a receiver would get it back from Kafka.
    let consumed = ConsumedRecord {
        topic: record.topic.clone(),
        partition: record.partition.unwrap_or(0).max(0),
        offset: 7,
        timestamp: Some(1),
        key: record.key.clone(),
        value: record.value.clone(),
        headers: record.headers.clone(),
    };
    let outgoing = convert::to_message(&consumed);
    let bytes = serde_amqp::to_vec(&Serializable(outgoing)).expect("a delivered message encodes");
    let back =
        <Body<Value>>::decode_message_from_reader(serde_amqp::read::SliceReader::new(&bytes))
            .expect("a delivered message decodes");
    let again = convert::to_record(&back, "fuzz", None).expect("a delivered message converts");
    assert_eq!(
        again.value.unwrap_or_default(),
        consumed.value.unwrap_or_default(),
        "value survives delivery"
    );
});
