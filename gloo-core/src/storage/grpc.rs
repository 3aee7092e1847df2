//! The tonic edge of the storage API: authenticates each call, converts messages, runs the
//! blocking store work off the async threads, and maps errors to gRPC codes.
use std::{pin::Pin, sync::Arc, time::Instant};

use futures::Stream;
use proto::v1::{
    storage_server, ApplyRequest, ApplyResponse, DeleteRequest, DeleteResponse, GetRequest,
    GetResponse, Kind, ListRequest, ListResponse, ObjectKey, SyncRequest, SyncResponse,
    UpdateStatusRequest, UpdateStatusResponse, WatchEvent, WatchRequest,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{info, instrument, warn};

use super::{redact_for, watch, ApplyOptions, Error, Storage};
use crate::{
    auth::{Identity, Tokens},
    metrics::ApiMetrics,
    resource::{Key, LabelSelector},
};

pub struct StorageService {
    storage: Arc<Storage>,
    tokens: Arc<Tokens>,
    metrics: ApiMetrics,
    shutdown: CancellationToken,
}

impl StorageService {
    pub fn new(
        storage: Arc<Storage>,
        tokens: Arc<Tokens>,
        metrics: ApiMetrics,
        shutdown: CancellationToken,
    ) -> Self {
        StorageService {
            storage,
            tokens,
            metrics,
            shutdown,
        }
    }

    pub fn into_server(self, max_message_bytes: usize) -> storage_server::StorageServer<Self> {
        storage_server::StorageServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }

    fn authenticate<T>(&self, req: &Request<T>) -> Result<Arc<Identity>, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.tokens.authenticate(header).map_err(|e| {
            self.metrics.denied("unauthenticated");
            Status::unauthenticated(e)
        })
    }

    /// Runs store work on the blocking pool and records the call's outcome.
    async fn blocking<T: Send + 'static>(
        &self,
        method: &'static str,
        f: impl FnOnce(&Storage) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Status> {
        let storage = self.storage.clone();
        let started = Instant::now();
        let out = tokio::task::spawn_blocking(move || f(&storage))
            .await
            .map_err(|e| Status::internal(format!("{method}: {e}")))?
            .map_err(Status::from);
        self.metrics.observe(method, &out, started.elapsed());
        out
    }
}

fn key_from(k: Option<ObjectKey>) -> Result<Key, Status> {
    let k = k.ok_or_else(|| Status::invalid_argument("key: required"))?;
    let kind = Kind::try_from(k.kind)
        .ok()
        .filter(|k| *k != Kind::Unspecified)
        .ok_or_else(|| Status::invalid_argument("key.kind: required"))?;
    let ns = if k.namespace.is_empty() {
        crate::resource::DEFAULT_NAMESPACE.to_string()
    } else {
        k.namespace
    };
    Ok(Key::new(kind, ns, k.name))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl storage_server::Storage for StorageService {
    #[instrument(skip_all)]
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let who = self.authenticate(&req)?;
        let key = key_from(req.into_inner().key)?;
        let r = self.storage.get(&who, &key).map_err(Status::from)?;
        Ok(Response::new(GetResponse {
            resource: Some((*redact_for(&who, r)).clone()),
        }))
    }

    #[instrument(skip_all)]
    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let who = self.authenticate(&req)?;
        let req = req.into_inner();
        let kind = match Kind::try_from(req.kind) {
            Ok(Kind::Unspecified) => None,
            Ok(k) => Some(k),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "kind: unknown kind {}",
                    req.kind
                )))
            }
        };
        let selector = LabelSelector::parse(&req.label_selector)
            .map_err(|e| Status::invalid_argument(format!("labelSelector: {e}")))?;
        let ns = (!req.namespace.is_empty()).then_some(req.namespace.as_str());
        let (items, revision) = self
            .storage
            .list(&who, kind, ns, &selector)
            .map_err(Status::from)?;
        Ok(Response::new(ListResponse {
            items: items
                .into_iter()
                .map(|r| (*redact_for(&who, r)).clone())
                .collect(),
            revision,
        }))
    }

    #[instrument(skip_all, fields(caller))]
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let who = self.authenticate(&req)?;
        tracing::Span::current().record("caller", who.name.as_str());
        let req = req.into_inner();
        let resource = req
            .resource
            .ok_or_else(|| Status::invalid_argument("resource: required"))?;
        let opts = ApplyOptions {
            expected_resource_version: req.expected_resource_version,
            dry_run: req.dry_run,
            draft: req.draft,
        };
        let who2 = who.clone();
        let out = self
            .blocking("apply", move |s| s.apply(&who2, resource, opts))
            .await;
        let out = match out {
            Ok(o) => o,
            Err(status) => {
                warn!(caller = %who.name, code = ?status.code(), reason = status.message(), "apply refused");
                return Err(status);
            }
        };
        if !out.unchanged && !req.dry_run {
            if let Some(key) = Key::of(&out.resource) {
                let revision = out
                    .resource
                    .metadata
                    .as_ref()
                    .map_or(0, |m| m.resource_version);
                info!(caller = %who.name, object = %key, revision, created = out.created, "applied");
            }
        }
        Ok(Response::new(ApplyResponse {
            resource: Some((*redact_for(&who, out.resource)).clone()),
            created: out.created,
            unchanged: out.unchanged,
        }))
    }

    #[instrument(skip_all)]
    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let who = self.authenticate(&req)?;
        let req = req.into_inner();
        let key = key_from(req.key)?;
        let (who2, key2) = (who.clone(), key.clone());
        let r = self
            .blocking("delete", move |s| {
                s.delete(&who2, &key2, req.expected_resource_version)
            })
            .await?;
        info!(caller = %who.name, object = %key, "deleted");
        Ok(Response::new(DeleteResponse {
            resource: Some((*redact_for(&who, r)).clone()),
        }))
    }

    type WatchStream = WatchStream;

    #[instrument(skip_all)]
    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let who = self.authenticate(&req)?;
        let rx = watch::start(
            self.storage.store().clone(),
            who,
            req.into_inner(),
            self.shutdown.clone(),
        )
        .map_err(Status::from)?;
        let watchers = self.metrics.watchers.clone();
        watchers.inc();
        let stream = WatchGuard {
            inner: ReceiverStream::new(rx),
            gauge: watchers,
        };
        Ok(Response::new(Box::pin(stream)))
    }

    #[instrument(skip_all, fields(owner))]
    async fn sync(&self, req: Request<SyncRequest>) -> Result<Response<SyncResponse>, Status> {
        let who = self.authenticate(&req)?;
        let req = req.into_inner();
        let owner = req.owner.clone();
        tracing::Span::current().record("owner", owner.as_str());
        let who2 = who.clone();
        let resp = self.blocking("sync", move |s| s.sync(&who2, req)).await?;
        if resp.created + resp.updated + resp.deleted > 0 || !resp.rejected.is_empty() {
            info!(
                caller = %who.name, owner, created = resp.created, updated = resp.updated,
                deleted = resp.deleted, unchanged = resp.unchanged,
                rejected = resp.rejected.len(), revision = resp.revision, "synced"
            );
        }
        for r in &resp.rejected {
            warn!(owner, reason = %r.reason, "sync item rejected");
        }
        Ok(Response::new(resp))
    }

    #[instrument(skip_all)]
    async fn update_status(
        &self,
        req: Request<UpdateStatusRequest>,
    ) -> Result<Response<UpdateStatusResponse>, Status> {
        let who = self.authenticate(&req)?;
        let req = req.into_inner();
        let key = key_from(req.key)?;
        let status = req
            .status
            .ok_or_else(|| Status::invalid_argument("status: required"))?;
        let who2 = who.clone();
        let (r, unchanged) = self
            .blocking("update_status", move |s| {
                s.update_status(&who2, &key, status)
            })
            .await?;
        Ok(Response::new(UpdateStatusResponse {
            resource: Some((*redact_for(&who, r)).clone()),
            unchanged,
        }))
    }
}

/// Keeps the open-watchers gauge right however the stream ends.
struct WatchGuard<S> {
    inner: S,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl<S> Drop for WatchGuard<S> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl<S: Stream + Unpin> Stream for WatchGuard<S> {
    type Item = S::Item;
    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}
