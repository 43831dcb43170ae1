//! A fake Casper node: serves recorded event streams (`data/{main,deploys,sigs}.sse`) on
//! `/events/{stream}` the way a node does — the `ApiVersion` event first, then events with
//! `id:`s, replaying from `?start_from=<id>` — optionally pacing events and breaking each
//! stream off halfway on its first connection (to exercise reconnects).

use std::{
    collections::{BTreeSet, HashMap},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{Path as UrlPath, Query, State},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use barnabas_sse::parser::SseParser;
use futures::StreamExt;

/// One recorded stream: its opening ApiVersion data and its events (data, id).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub api: String,
    pub events: Vec<(String, u64)>,
}

/// Reads `dir/{name}.sse`.
pub fn load(dir: &Path, name: &str) -> Recorded {
    let path = dir.join(format!("{name}.sse"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut api = String::new();
    let mut events = Vec::new();
    for e in SseParser::default().feed(&bytes) {
        match e.id.and_then(|i| i.parse().ok()) {
            Some(id) => events.push((e.data, id)),
            None => api = e.data,
        }
    }
    Recorded { api, events }
}

/// How the fake node behaves.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Pause before each event.
    pub pace: Duration,
    /// Break each stream off halfway on its first connection.
    pub drop_halfway_once: bool,
    /// Add one malformed event (data that is not JSON, id 1) at the start of `deploys`.
    pub malformed_deploy: bool,
    /// Replay this many events before the `start_from` asked for, as a node whose event
    /// buffer does not line up with the client's position would.
    pub replay_overlap: u64,
}

#[derive(Clone)]
struct Node {
    streams: Arc<HashMap<String, Recorded>>,
    dropped: Arc<Mutex<BTreeSet<String>>>,
    behaviour: Behaviour,
}

/// The node's routes over the recorded `main`, `deploys` and `sigs` streams in `dir`.
pub fn router(dir: &Path, behaviour: Behaviour) -> (Router, HashMap<String, Recorded>) {
    let streams: HashMap<String, Recorded> = ["main", "deploys", "sigs"]
        .into_iter()
        .map(|s| (s.to_owned(), load(dir, s)))
        .collect();
    let node = Node {
        streams: Arc::new(streams.clone()),
        dropped: Arc::default(),
        behaviour,
    };
    let app = Router::new()
        .route("/events/{stream}", get(events))
        .with_state(node);
    (app, streams)
}

async fn events(
    State(node): State<Node>,
    UrlPath(stream): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(rec) = node.streams.get(&stream).cloned() else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    let from: u64 = q
        .get("start_from")
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(0, |id| id.saturating_sub(node.behaviour.replay_overlap));
    let chosen: Vec<(String, u64)> = rec
        .events
        .into_iter()
        .filter(|(_, id)| *id >= from)
        .collect();
    let first = node
        .dropped
        .lock()
        .map(|mut d| d.insert(stream.clone()))
        .unwrap_or(false);
    let broken = first && node.behaviour.drop_halfway_once;
    let take = if broken {
        chosen.len() / 2
    } else {
        chosen.len()
    };
    let pace = node.behaviour.pace;
    let mut head = format!("data:{}\n\n", rec.api);
    if stream == "deploys" && from <= 1 && node.behaviour.malformed_deploy {
        head.push_str("data:{\"DeployAccepted\": not json\nid:1\n\n");
    }
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(head) })
        .chain(futures::stream::iter(chosen.into_iter().take(take)).then(
            move |(data, id)| async move {
                tokio::time::sleep(pace).await;
                Ok(format!("data:{data}\nid:{id}\n\n"))
            },
        ))
        // A live node keeps the stream open after the recorded events; a broken one ends it.
        .chain(futures::stream::once(async move {
            if !broken {
                tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
            }
            Ok(": bye\n\n".to_owned())
        }));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(axum::body::Body::from_stream(body))
        .unwrap_or_else(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
