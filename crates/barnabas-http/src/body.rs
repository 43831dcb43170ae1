//! Request bodies: size-limited, parsed by us so that every failure is a JSON error
//! (413 too large, 400 malformed, 415 wrong content type, 422 invalid) instead of axum's text.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{header::CONTENT_TYPE, HeaderMap, StatusCode},
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The raw body, with the size limit's rejection turned into a JSON error.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|rejection| {
                let status = rejection.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(status, "request body exceeds limits.max_message_bytes")
                } else {
                    ApiError::new(status, rejection.body_text())
                }
            })
    }
}

/// The request's content type without parameters, lower-cased ("" when absent).
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// Parses a JSON body: 400 for malformed JSON (interface §3), 422 for JSON of the wrong shape
/// (unknown or missing fields, wrong types): 422 is the status Strimzi's openapi.json lists
/// for invalid input, where its bridge's request validator answers an undocumented 400.
/// Every request body is a JSON object: serde would also read a struct from an array.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::unprocessable(format!("invalid request body: {e}"))
        } else {
            ApiError::bad_request(format!("malformed JSON body: {e}"))
        }
    })?;
    if !value.is_object() {
        return Err(ApiError::unprocessable(
            "invalid request body: it must be a JSON object",
        ));
    }
    T::deserialize(value).map_err(|e| ApiError::unprocessable(format!("invalid request body: {e}")))
}

/// A list of JSON objects, each read as a `T` (serde alone would also take an array for a
/// struct): `#[serde(deserialize_with = "objects")]`.
pub fn objects<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    use serde::{de::Error as _, Deserialize as _};
    Vec::<serde_json::Map<String, serde_json::Value>>::deserialize(d)?
        .into_iter()
        .map(|o| T::deserialize(serde_json::Value::Object(o)).map_err(D::Error::custom))
        .collect()
}

/// [`objects`] for an optional field that, when present, is not null (`#[serde(default, …)]`).
pub fn some_objects<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    objects(d).map(Some)
}

/// Like [`parse_json`], but an empty body is `T::default()`.
pub fn parse_json_or_default<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_json(body)
    }
}

/// JSON Schema's `integer`: a JSON number with no fractional part, `3.0` included (serde's
/// integer types refuse `3.0`, which every schema-valid client may send). For
/// `#[serde(deserialize_with = "…")]` on `Option<i64>`/`Option<i32>` fields.
pub mod integer {
    use serde::{de::Error as _, Deserialize, Deserializer};
    use serde_json::Number;

    /// The number as an `i64`, if it is an integer in range.
    pub fn of(n: &Number) -> Option<i64> {
        if let Some(i) = n.as_i64() {
            return Some(i);
        }
        let f = n.as_f64()?;
        // Both bounds are exclusive: ±2^63 as f64 also stands for integers just beyond i64.
        (f.fract() == 0.0 && f > i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
    }

    fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Number>, D::Error> {
        Option::<Number>::deserialize(d)
    }

    /// An optional `i64`.
    pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match number(d)? {
            None => Ok(None),
            Some(n) => of(&n)
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("{n} is not a 64-bit integer"))),
        }
    }

    /// An optional `i32`.
    pub fn opt_i32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
        match number(d)? {
            None => Ok(None),
            Some(n) => of(&n)
                .and_then(|i| i32::try_from(i).ok())
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("{n} is not a 32-bit integer"))),
        }
    }

    /// An optional `i32` that, when present, is not null (`#[serde(default, …)]`).
    pub fn some_i32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
        i32(d).map(Some)
    }

    /// An optional `i64` that, when present, is not null (`#[serde(default, …)]`).
    pub fn some_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        i64(d).map(Some)
    }

    /// A required `i64`.
    pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        opt_i64(d)?.ok_or_else(|| D::Error::custom("an integer is required, not null"))
    }

    /// A required `i32`.
    pub fn i32<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        opt_i32(d)?.ok_or_else(|| D::Error::custom("an integer is required, not null"))
    }
}

/// An optional field that, when present, is not null: with `#[serde(default, deserialize_with
/// = "present")]`, absent is `None` and `null` an error (Strimzi's schemas allow no nulls
/// there), where plain `Option` would take `null` for absent.
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// An integer query parameter as JSON Schema's unbounded `integer`: beyond `i64` it
/// saturates (a `timeout` of 10^30 ms is "as long as allowed"); `None` if it is not an
/// integer at all.
pub fn saturating_int(raw: &str) -> Option<i64> {
    let digits = raw.strip_prefix(['-', '+']).unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(raw.parse::<i64>().unwrap_or(if raw.starts_with('-') {
        i64::MIN
    } else {
        i64::MAX
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct N {
        #[serde(default, deserialize_with = "integer::opt_i32")]
        n: Option<i32>,
    }

    fn n(text: &str) -> Option<Option<i32>> {
        serde_json::from_str::<N>(text).ok().map(|v| v.n)
    }

    #[test]
    fn integers_as_json_schema_counts_them() {
        assert_eq!(n(r#"{"n": 3}"#), Some(Some(3)));
        assert_eq!(n(r#"{"n": 3.0}"#), Some(Some(3)));
        assert_eq!(n(r#"{"n": -7e2}"#), Some(Some(-700)));
        assert_eq!(n(r#"{"n": null}"#), Some(None));
        assert_eq!(n(r#"{}"#), Some(None));
        assert_eq!(n(r#"{"n": 3.5}"#), None);
        assert_eq!(n(r#"{"n": 4294967296}"#), None);
        assert_eq!(n(r#"{"n": "3"}"#), None);
    }

    #[test]
    fn query_integers_saturate() {
        assert_eq!(saturating_int("15"), Some(15));
        assert_eq!(saturating_int("-3"), Some(-3));
        assert_eq!(saturating_int("+3"), Some(3));
        assert_eq!(
            saturating_int("1000000000000000000000000000000"),
            Some(i64::MAX)
        );
        assert_eq!(
            saturating_int("-1000000000000000000000000000000"),
            Some(i64::MIN)
        );
        assert_eq!(saturating_int(""), None);
        assert_eq!(saturating_int("-"), None);
        assert_eq!(saturating_int("1.5"), None);
        assert_eq!(saturating_int("abc"), None);
    }
}
