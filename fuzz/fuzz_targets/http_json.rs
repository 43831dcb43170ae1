//! The HTTP API's embedded formats: an arbitrary JSON value decoded as a record value or key
//! in each format (json, binary = base64, text), and a header value; decoding may refuse, must
//! never panic, and what decodes must encode back to the same bytes.
#![no_main]

use barnabas_http::format::{decode_header_value, encode_header_value, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        for format in [Format::Json, Format::Binary, Format::Text] {
            if let Ok(bytes) = format.decode(&value, "value") {
                let again = format.encode(&bytes);
                if let Ok(round) = format.decode(&again, "value") {
                    assert_eq!(round, bytes, "{format:?} round trip");
                }
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(bytes) = decode_header_value(text) {
            assert_eq!(
                decode_header_value(&encode_header_value(&bytes)).ok(),
                Some(bytes)
            );
        }
    }
});
