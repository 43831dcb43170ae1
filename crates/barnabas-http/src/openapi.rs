//! `GET /openapi` (and `/openapi/v3`): the OpenAPI 3 document of this API.
//!
//! The document is written by hand (`openapi.json`); a test checks that it names exactly the
//! routes the router serves, so the two cannot drift apart.

use axum::{
    http::header,
    response::{IntoResponse, Response},
};

/// The OpenAPI document.
pub const OPENAPI: &str = include_str!("openapi.json");

/// `GET /openapi`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::OPENAPI;

    /// `(METHOD, path)` of every `.route("…", get(…).post(…))` in the router sources.
    fn routed() -> BTreeSet<(String, String)> {
        let sources = [include_str!("lib.rs"), include_str!("consumers/mod.rs")];
        let mut out = BTreeSet::new();
        for src in sources {
            // Routes of the files' own test modules are not served.
            let src = src.split("\n#[cfg(test)]\nmod tests").next().unwrap_or(src);
            for chunk in src.split(".route(").skip(1) {
                let Some(path) = chunk.split('"').nth(1) else {
                    continue;
                };
                // The handler part ends at the route call's closing parenthesis + newline.
                let body = chunk.split("\n        .").next().unwrap_or(chunk);
                for (method, needle) in [("GET", "get("), ("POST", "post("), ("DELETE", "delete(")]
                {
                    if body.contains(needle) {
                        out.insert((method.to_owned(), path.to_owned()));
                    }
                }
            }
        }
        out
    }

    fn documented() -> BTreeSet<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap_or_default();
        let mut out = BTreeSet::new();
        if let Some(paths) = doc["paths"].as_object() {
            for (path, ops) in paths {
                for method in ["get", "post", "delete", "put", "patch"] {
                    if ops.get(method).is_some() {
                        out.insert((method.to_uppercase(), path.clone()));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_document_names_exactly_the_routes_served() {
        let routed = routed();
        let documented = documented();
        assert!(
            routed.len() >= 25,
            "router parse found too few routes: {routed:?}"
        );
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from openapi.json: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "openapi.json documents routes that do not exist: {unrouted:?}"
        );
    }
}
