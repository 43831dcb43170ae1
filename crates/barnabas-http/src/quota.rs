//! Kafka consumers one principal holds on this replica: consumer instances and SSE streams
//! both count against `limits.max_consumers_per_principal`, since each is a librdkafka
//! consumer (threads, connections, buffers) that one client could otherwise multiply.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::http::StatusCode;

use crate::{error::ApiError, AppState};

/// Open SSE streams per owner name.
#[derive(Default)]
pub struct StreamCounts {
    counts: Mutex<HashMap<Arc<str>, usize>>,
}

/// One SSE stream's place in [`StreamCounts`], given back when the stream ends (dropped).
pub struct StreamSlot {
    counts: Arc<StreamCounts>,
    owner: Arc<str>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(n) = counts.get_mut(&self.owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.owner);
            }
        }
    }
}

impl StreamCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, usize>> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Streams `owner` has open.
    pub fn count(&self, owner: &str) -> usize {
        self.lock().get(owner).copied().unwrap_or(0)
    }

    fn take(self: &Arc<Self>, owner: Arc<str>) -> StreamSlot {
        *self.lock().entry(owner.clone()).or_insert(0) += 1;
        StreamSlot {
            counts: self.clone(),
            owner,
        }
    }
}

/// Consumers (instances and SSE streams) `owner` holds on this replica.
fn held(state: &AppState, owner: &str) -> usize {
    state.consumers.count_owned_by(owner) + state.sse_streams.count(owner)
}

/// 429 when `owner` is at `limits.max_consumers_per_principal` already.
pub fn check_room(state: &AppState, owner: &str) -> Result<(), ApiError> {
    let cap = state.settings.max_consumers_per_principal;
    if held(state, owner) < cap {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "Principal '{owner}' has {cap} Kafka consumers (consumer instances and SSE streams) on this replica already (limits.max_consumers_per_principal); close some first."
        ),
    ))
}

/// A slot for one more SSE stream of `owner`, or 429.
pub fn take_stream(state: &AppState, owner: Arc<str>) -> Result<StreamSlot, ApiError> {
    check_room(state, &owner)?;
    Ok(state.sse_streams.take(owner))
}
