//! Regression test for the `amqp_message` fuzz finding: a transfer payload whose encoded length
//! fields claim more than the payload holds (`b3 ff ff ff ff`: a symbol "4 GiB long") made the
//! AMQP decoder allocate the claimed size before reading. With the vendored serde_amqp fix
//! (vendor/README.md) decoding fails cleanly and allocates only as it reads; the process'
//! peak virtual memory shows whether the claimed size was allocated.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use fe2o3_amqp::types::{
    messaging::{message::DecodeIntoMessage, Body},
    primitives::Value,
};

/// The process' peak virtual memory (`VmPeak`), in bytes: an allocation of the claimed
/// 4 GiB shows here even when its pages are never touched.
fn vm_peak() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmPeak:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Payloads that each claim ~4 GiB in a length field: a symbol where a section descriptor is
/// read, a string and a binary in an amqp-value body, a list in application-properties.
const LIARS: &[&[u8]] = &[
    &[0xb3, 0xff, 0xff, 0xff, 0xff],
    &[0x00, 0x53, 0x77, 0xb1, 0xff, 0xff, 0xff, 0xf0, b'a'],
    &[0x00, 0x53, 0x77, 0xb0, 0xff, 0xff, 0xff, 0xf0, 1, 2, 3],
    &[
        0x00, 0x53, 0x74, 0xd1, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 2, 0xa1, 1, b'k',
    ],
];

#[test]
fn length_fields_beyond_the_payload_fail_without_allocating_what_they_claim() {
    for payload in LIARS {
        let before = vm_peak();
        // The reader the receiver link uses (over the transfer's bytes) and the slice reader.
        let io = <Body<Value>>::decode_message_from_reader(serde_amqp::read::IoReader::new(
            &payload[..],
        ));
        let slice =
            <Body<Value>>::decode_message_from_reader(serde_amqp::read::SliceReader::new(payload));
        assert!(
            io.is_err() && slice.is_err(),
            "{payload:02x?} must not decode"
        );
        let grown = vm_peak().saturating_sub(before);
        assert!(
            grown < 256 << 20,
            "{payload:02x?}: peak virtual memory grew by {grown} bytes"
        );
    }
}

/// The second `amqp_message` finding (fuzz/artifacts/amqp_message/crash-6997b1…): a described
/// list whose count is near `u32::MAX` overflowed the decoder's field counter (a panic with
/// overflow checks, a wrapped count without).
#[test]
fn a_count_near_the_limit_is_an_error_not_an_overflow() {
    let payload = [
        0x53, 0x70, 0x00, 0xd0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xb8, 0xb8, 0xb8,
        0xb8, 0xb8, 0xb8, 0x00, 0x70, 0xb8, 0xb8,
    ];
    assert_fails_cleanly(&payload);
}

/// The third (fuzz/artifacts/amqp_message/crash-fe757c…): a list whose size is smaller than
/// its own count field underflowed the remaining length.
#[test]
fn a_size_smaller_than_its_count_field_is_an_error_not_an_underflow() {
    assert_fails_cleanly(&[0x00, 0x53, 0x77, 0xc0, 0xc0, 0xc7, 0xc0, 0x00, 0xee, 0x72]);
    // Every compound with a zero size: an answer either way, never a panic.
    for compound in [0xc0, 0xd0, 0xc1, 0xd1, 0xe0, 0xf0] {
        let payload = [0x00, 0x53, 0x77, compound, 0, 0, 0, 0, 0, 0, 0, 0];
        let decoded = std::panic::catch_unwind(|| {
            <Body<Value>>::decode_message_from_reader(serde_amqp::read::IoReader::new(&payload[..]))
                .is_ok()
        });
        assert!(decoded.is_ok(), "{payload:02x?} panicked");
    }
}

/// The fourth (fuzz/artifacts/amqp_message/crash-… of the third run): a map whose count is
/// odd has a key without a value, and the entry counter underflowed.
#[test]
fn a_map_with_an_odd_count_is_an_error_not_an_underflow() {
    // amqp-value: map8, size 3, count 1, key "k" and no value.
    assert_fails_cleanly(&[0x00, 0x53, 0x77, 0xc1, 0x03, 0x01, 0xa1, 0x01, b'k']);
    // application-properties likewise.
    assert_fails_cleanly(&[0x00, 0x53, 0x74, 0xc1, 0x03, 0x01, 0xa1, 0x01, b'k']);
}

fn assert_fails_cleanly(payload: &[u8]) {
    let decoded = std::panic::catch_unwind(|| {
        <Body<Value>>::decode_message_from_reader(serde_amqp::read::IoReader::new(payload)).is_err()
    });
    assert_eq!(
        decoded.ok(),
        Some(true),
        "{payload:02x?}: decoding fails without panicking"
    );
}

#[test]
fn real_lengths_still_decode() {
    let mut payload = vec![0x00, 0x53, 0x77, 0xb1, 0x00, 0x01, 0x00, 0x00];
    payload.extend(std::iter::repeat_n(b'x', 65_536));
    let m =
        <Body<Value>>::decode_message_from_reader(serde_amqp::read::IoReader::new(&payload[..]))
            .unwrap();
    match m.body {
        Body::Value(v) => assert_eq!(v.0, Value::String("x".repeat(65_536))),
        other => panic!("{other:?}"),
    }
}
