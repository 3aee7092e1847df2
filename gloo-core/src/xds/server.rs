//! The ADS gRPC service: both `StreamAggregatedResources` (state of the world) and
//! `DeltaAggregatedResources` (incremental).
//!
//! Each stream is one task that only shuttles: it `select!`s over Envoy's requests, snapshot
//! changes and the shutdown token, feeds the stream's state machine (`sotw` or `delta`), sends
//! the responses it returns in order and records its events in the [`NodeRegistry`]. On shutdown
//! every stream ends at once, so open streams never hold the server open. Routing, decoding
//! and framing are in `wire`: each response is framed by its task into a buffer of its own size.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{TcpConnectInfo, TcpIncoming};
use tonic::{body::Body, codec::Streaming, Status};
use tracing::{debug, info, Instrument};

use super::{
    cache::SnapshotCache,
    delta::DeltaStream,
    nodes::{NodeRegistry, Protocol, StreamHandle},
    protocol::{Output, XdsError},
    sotw::{SotwResponse, SotwStream},
    wire::{self, AdsServer, Encode, ProstDecoder, ResponseBody},
    Snapshot,
};

/// Largest message sent or accepted: a snapshot of every cluster of a big installation can be
/// tens of MiB, and a refused one comes back in Envoy's error message.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Responses buffered per stream between its task and the transport.
const STREAM_BUFFER: usize = 8;

/// The ADS service.
#[derive(Clone, Debug)]
pub struct AdsService {
    cache: SnapshotCache,
    nodes: Arc<NodeRegistry>,
    shutdown: CancellationToken,
}

/// The tonic service to add to a server; streams end when `shutdown` fires.
pub fn service(
    cache: SnapshotCache,
    nodes: Arc<NodeRegistry>,
    shutdown: CancellationToken,
) -> AdsServer<AdsService> {
    AdsServer::new(AdsService {
        cache,
        nodes,
        shutdown,
    })
}

/// Serves ADS on `listener` until `shutdown` fires. HTTP/2 keepalives find Envoys that vanished
/// without closing their connection, so their streams do not linger in the registry.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cache: SnapshotCache,
    nodes: Arc<NodeRegistry>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    info!(?addr, "xDS server listening");
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .add_service(service(cache, nodes, shutdown.clone()))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled_owned(),
        )
        .await
}

impl wire::Ads for AdsService {
    fn sotw(&self, req: http::Request<Body>) -> http::Response<Body> {
        self.spawn::<SotwStream>(req)
    }

    fn delta(&self, req: http::Request<Body>) -> http::Response<Body> {
        self.spawn::<DeltaStream>(req)
    }
}

impl AdsService {
    fn spawn<M: Machine>(&self, request: http::Request<Body>) -> http::Response<Body> {
        let peer = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(|i| i.remote_addr());
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let span = tracing::info_span!(
            "ads",
            protocol = M::PROTOCOL.as_str(),
            peer = ?peer,
            node = tracing::field::Empty,
        );
        let inbound = Streaming::new_request(
            ProstDecoder::<M::Request>::default(),
            request.into_body(),
            None,
            Some(MAX_MESSAGE_BYTES),
        );
        let task = StreamTask::<M> {
            inbound,
            tx,
            snapshots: self.cache.subscribe(),
            nodes: self.nodes.clone(),
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(task.run().instrument(span));
        wire::response(ResponseBody::new(rx))
    }
}

/// A protocol state machine, as the stream task sees it.
trait Machine: Default + Send + 'static {
    type Request: prost::Message + Default + Send + 'static;
    type Response: Encode + Send + 'static;
    const PROTOCOL: Protocol;
    fn on_request(
        &mut self,
        req: Self::Request,
        snap: &Snapshot,
    ) -> Result<Output<Self::Response>, XdsError>;
    fn on_snapshot(&mut self, snap: &Snapshot) -> Output<Self::Response>;
    fn node_id(&self) -> Option<&str>;
}

impl Machine for SotwStream {
    type Request = DiscoveryRequest;
    type Response = SotwResponse;
    const PROTOCOL: Protocol = Protocol::Sotw;
    fn on_request(
        &mut self,
        req: DiscoveryRequest,
        snap: &Snapshot,
    ) -> Result<Output<SotwResponse>, XdsError> {
        SotwStream::on_request(self, req, snap)
    }
    fn on_snapshot(&mut self, snap: &Snapshot) -> Output<SotwResponse> {
        SotwStream::on_snapshot(self, snap)
    }
    fn node_id(&self) -> Option<&str> {
        SotwStream::node_id(self)
    }
}

impl Machine for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const PROTOCOL: Protocol = Protocol::Delta;
    fn on_request(
        &mut self,
        req: DeltaDiscoveryRequest,
        snap: &Snapshot,
    ) -> Result<Output<DeltaDiscoveryResponse>, XdsError> {
        DeltaStream::on_request(self, req, snap)
    }
    fn on_snapshot(&mut self, snap: &Snapshot) -> Output<DeltaDiscoveryResponse> {
        DeltaStream::on_snapshot(self, snap)
    }
    fn node_id(&self) -> Option<&str> {
        DeltaStream::node_id(self)
    }
}

struct StreamTask<M: Machine> {
    inbound: Streaming<M::Request>,
    tx: mpsc::Sender<Result<Bytes, Status>>,
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    nodes: Arc<NodeRegistry>,
    shutdown: CancellationToken,
}

/// Why a stream ended.
enum End {
    Shutdown,
    ClientClosed,
    ClientError(Status),
    Refused(XdsError),
    /// A response over the message size limit: Envoy could not take it either.
    TooLarge(Status),
    CacheClosed,
}

impl<M: Machine> StreamTask<M> {
    async fn run(mut self) {
        let mut handle: Option<StreamHandle> = None;
        let end = self.serve(&mut handle).await;
        let node = handle.as_ref().map(|h| h.node().to_string());
        match end {
            End::Shutdown => info!(?node, "ADS stream closed: shutting down"),
            End::ClientClosed => info!(?node, "ADS stream closed by Envoy"),
            End::ClientError(status) => {
                info!(?node, code = ?status.code(), error = %status.message(), "ADS stream broken")
            }
            End::Refused(error) => {
                info!(?node, %error, "ADS stream refused");
                let _ = self.tx.send(Err(error.into())).await;
            }
            End::TooLarge(status) => {
                tracing::warn!(?node, error = %status.message(), "ADS stream ended: response too large");
                let _ = self.tx.send(Err(status)).await;
            }
            End::CacheClosed => debug!(?node, "snapshot cache closed"),
        }
        // Dropping the handle unregisters the stream; dropping `tx` ends the response stream.
        drop(handle);
    }

    async fn serve(&mut self, handle: &mut Option<StreamHandle>) -> End {
        // Nothing is answered before the first snapshot: an empty answer to a reconnecting Envoy
        // would remove its configuration. Requests wait in the transport meanwhile.
        let mut snap = loop {
            if let Some(s) = self.snapshots.borrow_and_update().clone() {
                break s;
            }
            debug!("waiting for the first snapshot");
            tokio::select! {
                () = self.shutdown.cancelled() => return End::Shutdown,
                changed = self.snapshots.changed() => if changed.is_err() { return End::CacheClosed },
            }
        };
        let mut machine = M::default();
        loop {
            let out = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return End::Shutdown,
                msg = self.inbound.message() => match msg {
                    Ok(Some(req)) => {
                        let out = machine.on_request(req, &snap);
                        if handle.is_none() {
                            let node = machine.node_id().unwrap_or_default();
                            tracing::Span::current().record("node", node);
                            let h = self.nodes.connect(node, M::PROTOCOL);
                            info!(node, stream = h.id(), "ADS stream connected");
                            *handle = Some(h);
                        }
                        match out {
                            Ok(out) => out,
                            Err(e) => return End::Refused(e),
                        }
                    }
                    Ok(None) => return End::ClientClosed,
                    Err(status) => return End::ClientError(status),
                },
                changed = self.snapshots.changed() => {
                    if changed.is_err() {
                        return End::CacheClosed;
                    }
                    let Some(next) = self.snapshots.borrow_and_update().clone() else {
                        continue;
                    };
                    snap = next;
                    machine.on_snapshot(&snap)
                }
            };
            if let Some(h) = handle.as_ref() {
                h.record(&out.events);
            }
            for response in out.responses {
                // Framed here, one response at a time: at most STREAM_BUFFER of them wait for
                // the transport, each in a buffer of its own size.
                let framed = match wire::frame(&response, MAX_MESSAGE_BYTES) {
                    Ok(bytes) => bytes,
                    Err(status) => return End::TooLarge(status),
                };
                drop(response);
                tokio::select! {
                    biased;
                    () = self.shutdown.cancelled() => return End::Shutdown,
                    sent = self.tx.send(Ok(framed)) => if sent.is_err() { return End::ClientClosed },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::{
        config::core::v3::Node,
        service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    };

    use tokio_stream::wrappers::ReceiverStream;

    use super::*;
    use crate::xds::{cache::channel, fixtures::*, metrics::XdsMetrics, CLUSTER};

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn stream_waits_for_first_snapshot_and_ends_on_shutdown() {
        let (mut publisher, cache) = channel();
        let (nodes, _nacks) = NodeRegistry::new(XdsMetrics::default());
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, cache, nodes.clone(), shutdown.clone()));

        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (requests, rx) = mpsc::channel(4);
        requests
            .send(DiscoveryRequest {
                type_url: CLUSTER.into(),
                node: Some(Node {
                    id: "node-1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut responses = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();

        // No snapshot yet: no answer (an empty one would wipe a reconnecting Envoy).
        let early = tokio::time::timeout(Duration::from_millis(300), responses.message()).await;
        assert!(early.is_err(), "answered before any snapshot: {early:?}");

        publisher.publish(snapshot([cluster("a")]));
        let r = tokio::time::timeout(WAIT, responses.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(r.type_url, CLUSTER);
        assert_eq!(r.resources.len(), 1);
        let streams = nodes.streams();
        assert_eq!(streams.len(), 1);
        assert_eq!(streams[0].node, "node-1");
        assert_eq!(nodes.metrics().streams("sotw"), 1);

        // Shutdown ends the stream although the client keeps its side open.
        shutdown.cancel();
        let end = tokio::time::timeout(WAIT, responses.message())
            .await
            .expect("the stream ends on shutdown");
        assert!(matches!(end, Ok(None)), "{end:?}");
        tokio::time::timeout(WAIT, server)
            .await
            .expect("the server stops with a client still connected")
            .unwrap()
            .unwrap();
        assert!(nodes.streams().is_empty());
        assert_eq!(nodes.metrics().streams("sotw"), 0);
        drop(requests);
    }
}
