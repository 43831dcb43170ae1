//! The Strimzi/Confluent v2 "embedded formats": how a record's key and value travel inside the
//! JSON body — as JSON values (`json`), base64 strings (`binary`) or plain strings (`text`).

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use bytes::Bytes;
use serde_json::Value;

/// `application/vnd.kafka.v2+json`: requests and answers without embedded records.
pub const V2_JSON: &str = "application/vnd.kafka.v2+json";

/// One embedded format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Keys and values are JSON values, stored as their JSON text.
    Json,
    /// Keys and values are base64 strings, stored as the decoded bytes.
    Binary,
    /// Keys and values are strings, stored as UTF-8.
    Text,
}

impl Format {
    /// The format a consumer is created with (`"format": "json"`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "json" => Some(Format::Json),
            "binary" => Some(Format::Binary),
            "text" => Some(Format::Text),
            _ => None,
        }
    }

    /// The format's name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Binary => "binary",
            Format::Text => "text",
        }
    }

    /// The media type carrying records of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/vnd.kafka.json.v2+json",
            Format::Binary => "application/vnd.kafka.binary.v2+json",
            Format::Text => "application/vnd.kafka.text.v2+json",
        }
    }

    /// The format a media type names, if any.
    pub fn from_content_type(media_type: &str) -> Option<Self> {
        [Format::Json, Format::Binary, Format::Text]
            .into_iter()
            .find(|f| f.content_type() == media_type)
    }

    /// A key or value (`field`) from a request body, as the bytes to store.
    pub fn decode(self, value: &Value, field: &'static str) -> Result<Bytes, DecodeError> {
        match self {
            Format::Json => serde_json::to_vec(value)
                .map(Bytes::from)
                .map_err(|source| DecodeError::Json { field, source }),
            Format::Binary => match value {
                Value::String(s) => B64
                    .decode(s)
                    .map(Bytes::from)
                    .map_err(|source| DecodeError::Base64 { field, source }),
                _ => Err(DecodeError::NotBase64String { field }),
            },
            Format::Text => match value {
                Value::String(s) => Ok(Bytes::from(s.clone())),
                _ => Err(DecodeError::NotString { field }),
            },
        }
    }

    /// Stored bytes as a key or value in a response body. A `json` consumer reading bytes
    /// that are not JSON gets them as a JSON string (UTF-8) rather than an error for the
    /// whole batch.
    pub fn encode(self, bytes: &Bytes) -> Value {
        match self {
            Format::Json => serde_json::from_slice(bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
            Format::Binary => Value::String(B64.encode(bytes)),
            Format::Text => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        }
    }
}

/// Header values travel base64-encoded in every format.
pub fn decode_header_value(value: &str) -> Result<Bytes, DecodeError> {
    B64.decode(value)
        .map(Bytes::from)
        .map_err(DecodeError::HeaderBase64)
}

/// A record field the request's format cannot turn into bytes; the request is answered 422
/// with this text.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// JSON that cannot be serialized again (not expected from a parsed body).
    #[error("{field}: {source}")]
    Json {
        /// `key` or `value`.
        field: &'static str,
        /// What serde_json said.
        source: serde_json::Error,
    },
    /// A binary-format string that is not base64.
    #[error("{field} is not valid base64: {source}")]
    Base64 {
        /// `key` or `value`.
        field: &'static str,
        /// Where the base64 went wrong.
        source: base64::DecodeError,
    },
    /// A binary-format key or value that is not a string.
    #[error("{field} must be a base64 string in the binary format")]
    NotBase64String {
        /// `key` or `value`.
        field: &'static str,
    },
    /// A text-format key or value that is not a string.
    #[error("{field} must be a string in the text format")]
    NotString {
        /// `key` or `value`.
        field: &'static str,
    },
    /// A header value that is not base64.
    #[error("header value is not valid base64: {0}")]
    HeaderBase64(base64::DecodeError),
}

/// Header values travel base64-encoded in every format.
pub fn encode_header_value(value: &[u8]) -> String {
    B64.encode(value)
}

/// A JSON answer with Strimzi's `application/vnd.kafka.v2+json` content type.
pub fn v2_json(status: axum::http::StatusCode, value: &Value) -> axum::response::Response {
    json_with_type(status, value, V2_JSON)
}

/// A JSON answer with the given content type.
pub fn json_with_type(
    status: axum::http::StatusCode,
    value: &Value,
    content_type: &'static str,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        status,
        [(axum::http::header::CONTENT_TYPE, content_type)],
        value.to_string(),
    )
        .into_response()
}

/// A record as a poll answer carries it: `topic, key, value, partition, offset, timestamp`,
/// and `headers` only when it has some (as Strimzi's bridge).
pub fn record_json(format: Format, r: &barnabas_core::ConsumedRecord) -> Value {
    let mut obj = serde_json::Map::new();
    obj.insert("topic".into(), Value::String(r.topic.clone()));
    obj.insert(
        "key".into(),
        r.key.as_ref().map_or(Value::Null, |k| format.encode(k)),
    );
    obj.insert(
        "value".into(),
        r.value.as_ref().map_or(Value::Null, |v| format.encode(v)),
    );
    obj.insert("partition".into(), r.partition.into());
    obj.insert("offset".into(), r.offset.into());
    obj.insert(
        "timestamp".into(),
        r.timestamp.map_or(Value::Null, Value::from),
    );
    if !r.headers.is_empty() {
        let headers: Vec<Value> = r
            .headers
            .iter()
            .map(|h| {
                serde_json::json!({
                    "key": h.key,
                    "value": h.value.as_ref().map(|v| encode_header_value(v)),
                })
            })
            .collect();
        obj.insert("headers".into(), Value::Array(headers));
    }
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats_round_trip() {
        let v = json!({"a": [1, 2]});
        let stored = Format::Json.decode(&v, "value").unwrap_or_default();
        assert_eq!(&stored[..], br#"{"a":[1,2]}"#);
        assert_eq!(Format::Json.encode(&stored), v);
        let stored = Format::Binary
            .decode(&json!("aGVsbG8="), "value")
            .unwrap_or_default();
        assert_eq!(&stored[..], b"hello");
        assert_eq!(Format::Binary.encode(&stored), json!("aGVsbG8="));
        assert_eq!(Format::Text.encode(&Bytes::from("hi")), json!("hi"));
        assert!(Format::Binary
            .decode(&json!("not base64!"), "value")
            .is_err());
        assert!(Format::Text.decode(&json!(5), "key").is_err());
        assert_eq!(
            Format::Json.encode(&Bytes::from("not json")),
            json!("not json")
        );
    }

    /// Found by fuzzing (fuzz/fuzz_targets/http_json.rs): without correctly rounded float
    /// parsing, a JSON number stored and read back came out one unit in the last place off.
    #[test]
    fn json_numbers_survive_a_round_trip() {
        for text in [
            "11E75",
            "0.1",
            "1.7976931348623157e308",
            "5e-324",
            "123456789.123456789",
        ] {
            let v: Value = serde_json::from_str(text).unwrap_or_default();
            let stored = Format::Json.decode(&v, "value").unwrap_or_default();
            let again = Format::Json
                .decode(&Format::Json.encode(&stored), "value")
                .unwrap_or_default();
            assert_eq!(stored, again, "{text}");
        }
    }

    #[test]
    fn content_types_name_formats() {
        for f in [Format::Json, Format::Binary, Format::Text] {
            assert_eq!(Format::from_content_type(f.content_type()), Some(f));
            assert_eq!(Format::from_name(f.name()), Some(f));
        }
        assert_eq!(Format::from_content_type("application/json"), None);
    }
}
