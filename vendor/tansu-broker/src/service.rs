// Copyright ⓒ 2024-2025 Peter Morgan <peter.james.morgan@gmail.com>
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use std::{fmt, sync::Arc};

use bytes::Bytes;
use rama::{Context, Layer, Service};
use rsasl::config::SASLConfig;
use tansu_sans_io::{
    ApiKey as _, ApiVersionsRequest, ApiVersionsResponse, ErrorCode, Frame, Header,
    RootMessageMeta, api_versions_response::ApiVersion,
};
use tansu_service::{
    BytesFrameLayer, BytesFrameService, FrameRouteService, TcpBytesLayer, TcpBytesService,
    TcpContext, TcpContextLayer, TcpContextService,
};
use tansu_storage::Storage;
use tracing::debug;

use crate::{Error, Result, coordinator::group::Coordinator};

pub mod auth;
pub mod coordinator;
pub mod storage;

type TcpRouteFrame = TcpContextService<
    TcpBytesService<
        UnsupportedApiVersionsService<BytesFrameService<FrameRouteService<(), Error>>>,
        (),
    >,
>;

pub fn services<C, S>(
    cluster_id: &str,
    coordinator: C,
    storage: S,
    sasl_config: Option<Arc<SASLConfig>>,
) -> Result<TcpRouteFrame, Error>
where
    S: Storage,
    C: Coordinator,
{
    storage::services(FrameRouteService::<(), Error>::builder(), storage)
        .inspect(|builder| debug!(?builder))
        .and_then(|builder| {
            coordinator::services(builder, coordinator).inspect(|builder| debug!(?builder))
        })
        .and_then(auth::services)
        .and_then(|builder| builder.build().map_err(Into::into))
        .map(|route| {
            (
                TcpContextLayer::new(TcpContext::default().cluster_id(Some(cluster_id.into()))),
                TcpBytesLayer::default(),
                UnsupportedApiVersionsLayer,
                BytesFrameLayer::default().with_sasl_config(sasl_config),
            )
                .into_layer(route)
        })
}

// barnabas fix: an ApiVersions request of an unknown version was decoded as if known.
//
/// A [`Layer`] answering an ApiVersions request of a version this broker does not know, as the
/// Kafka protocol asks (KIP-511): an ApiVersionsResponse v0 with UNSUPPORTED_VERSION and the
/// versions of ApiVersions that are supported, so that the client asks again with the highest
/// of them. Without it such a request reaches the decoder, which reads its body as the schema
/// of a known version says, fails ("failed to fill whole buffer") or misreads it, and the
/// connection is closed: kafka-clients 4.4 (ApiVersions v5, with a cluster id and node id)
/// then reconnects for ever.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct UnsupportedApiVersionsLayer;

impl<S> Layer<S> for UnsupportedApiVersionsLayer {
    type Service = UnsupportedApiVersionsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UnsupportedApiVersionsService { inner }
    }
}

/// The [`Service`] of [`UnsupportedApiVersionsLayer`]: a request frame ([`Bytes`], with its
/// size) goes to the inner service unless it is an ApiVersions request of an unknown version.
#[derive(Clone, Copy, Default, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct UnsupportedApiVersionsService<S> {
    inner: S,
}

impl<S> fmt::Debug for UnsupportedApiVersionsService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(stringify!(UnsupportedApiVersionsService))
            .finish()
    }
}

/// The correlation id of `frame` (a request with its size) when it is an ApiVersions request
/// of a version outside the range this broker supports.
fn unsupported_api_versions(frame: &[u8]) -> Option<i32> {
    // size (4), request_api_key (2), request_api_version (2), correlation_id (4): the same
    // layout in every request header version, and readable whatever the body.
    let header = frame.get(4..12)?;
    let api_key = i16::from_be_bytes([header[0], header[1]]);
    let api_version = i16::from_be_bytes([header[2], header[3]]);
    let correlation_id = i32::from_be_bytes([header[4], header[5], header[6], header[7]]);

    (api_key == ApiVersionsRequest::KEY
        && RootMessageMeta::messages()
            .requests()
            .get(&api_key)
            .is_some_and(|meta| !meta.version.valid.within(api_version)))
    .then(|| {
        debug!(
            api_version,
            correlation_id, "unsupported ApiVersions version"
        );
        correlation_id
    })
}

/// An ApiVersionsResponse v0 (the version a client parses when its request's version was not
/// supported): UNSUPPORTED_VERSION, with the versions of ApiVersions this broker supports.
fn unsupported_api_versions_response(correlation_id: i32) -> Result<Bytes, Error> {
    let api_keys = RootMessageMeta::messages()
        .requests()
        .get(&ApiVersionsRequest::KEY)
        .map(|meta| {
            ApiVersion::default()
                .api_key(ApiVersionsRequest::KEY)
                .min_version(meta.version.valid.start)
                .max_version(meta.version.valid.end)
        })
        .into_iter()
        .collect();

    Frame::response(
        Header::Response { correlation_id },
        ApiVersionsResponse::default()
            .error_code(ErrorCode::UnsupportedVersion.into())
            .api_keys(Some(api_keys))
            .into(),
        ApiVersionsRequest::KEY,
        0,
    )
    .map_err(Into::into)
}

impl<S, State> Service<State, Bytes> for UnsupportedApiVersionsService<S>
where
    S: Service<State, Bytes, Response = Bytes, Error = Error>,
    State: Clone + Send + Sync + 'static,
{
    type Response = Bytes;
    type Error = Error;

    async fn serve(&self, ctx: Context<State>, req: Bytes) -> Result<Self::Response, Self::Error> {
        if let Some(correlation_id) = unsupported_api_versions(&req[..]) {
            unsupported_api_versions_response(correlation_id)
        } else {
            self.inner.serve(ctx, req).await
        }
    }
}
