//! The admin HTTP server: `/healthz` (the process is up), `/readyz` (the store is open and the
//! APIs are listening), `/metrics` (Prometheus text format) and `/config_dump` (what the xDS
//! server serves to which Envoy node, and its ACK/NACK state).
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio_util::sync::CancellationToken;

use crate::{resource::kind_name, store::Store};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Gauges read off the store when scraped.
struct StoreGauges {
    objects: Family<KindLabels, Gauge>,
    revision: Gauge,
}

#[derive(Clone)]
pub struct Admin {
    registry: Arc<Mutex<Registry>>,
    /// What `/config_dump` shows: what is served to which node and its ACK state.
    pub config_dump: Option<Arc<dyn Fn() -> serde_json::Value + Send + Sync>>,
    store: Arc<Store>,
    gauges: Arc<StoreGauges>,
    pub ready: Arc<AtomicBool>,
}

impl Admin {
    pub fn new(mut registry: Registry, store: Arc<Store>) -> Self {
        let gauges = StoreGauges {
            objects: Family::default(),
            revision: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("gloo_store");
        r.register("objects", "Stored objects by kind", gauges.objects.clone());
        r.register(
            "revision",
            "The store's current revision",
            gauges.revision.clone(),
        );
        Admin {
            registry: Arc::new(Mutex::new(registry)),
            config_dump: None,
            store,
            gauges: Arc::new(gauges),
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/config_dump", get(config_dump))
            .with_state(self)
    }

    /// Serves until `shutdown` fires.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }

    pub fn local_addr(listener: &tokio::net::TcpListener) -> Option<SocketAddr> {
        listener.local_addr().ok()
    }
}

async fn readyz(State(admin): State<Admin>) -> impl IntoResponse {
    if admin.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn config_dump(State(admin): State<Admin>) -> impl IntoResponse {
    match &admin.config_dump {
        Some(f) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            serde_json::to_string_pretty(&f()).unwrap_or_default(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no xDS server\n").into_response(),
    }
}

async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    let counts = crate::storage::count_by_kind(&admin.store);
    for kind in crate::resource::KINDS {
        let n = counts.get(&kind).copied().unwrap_or(0);
        admin
            .gauges
            .objects
            .get_or_create(&KindLabels {
                kind: kind_name(kind),
            })
            .set(n as i64);
    }
    admin.gauges.revision.set(admin.store.revision() as i64);
    let mut body = String::new();
    let registry = admin.registry.lock().unwrap_or_else(|p| p.into_inner());
    match encode(&mut body, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
