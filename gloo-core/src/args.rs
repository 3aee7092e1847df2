//! Command-line flags and process wiring: open the store, start the servers, stop cleanly on
//! SIGTERM/SIGINT.
use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::{Context, Result};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tracing::{error, info};

use crate::{
    admin::Admin,
    auth::Tokens,
    controller::{Controller, ControllerMetrics},
    metrics::ApiMetrics,
    storage::{grpc::StorageService, Storage},
    store::{redb::RedbBackend, Store},
    translate,
    xds::{self, metrics::XdsMetrics, nodes::NodeRegistry},
};

/// gloo-core: the function gateway's control plane.
///
/// Stores the gateway's configuration (Upstreams, Functions, VirtualServices, Gateways, ...) in
/// an embedded database under --data-dir and serves it over an authenticated gRPC storage API
/// to glooctl, CI and the discovery services.
#[derive(Debug, Parser)]
#[command(name = "gloo-core", version)]
pub struct Args {
    /// Directory of the embedded store (created if missing).
    #[arg(long, env = "GLOO_DATA_DIR", default_value = ".data")]
    pub data_dir: PathBuf,

    /// Address of the gRPC storage API.
    #[arg(long, env = "GLOO_STORAGE_LISTEN", default_value = "127.0.0.1:9980")]
    pub storage_listen: SocketAddr,

    /// Address of the xDS (ADS) server Envoy connects to (state-of-the-world and delta).
    #[arg(long, env = "GLOO_XDS_LISTEN", default_value = "127.0.0.1:9977")]
    pub xds_listen: SocketAddr,

    /// Address of the admin HTTP server (/healthz, /readyz, /metrics).
    #[arg(long, env = "GLOO_ADMIN_LISTEN", default_value = "127.0.0.1:9091")]
    pub admin_listen: SocketAddr,

    /// YAML file mapping bearer tokens to identities and rights (see README, "Tokens and rights").
    #[arg(long, env = "GLOO_TOKENS_FILE")]
    pub tokens_file: PathBuf,

    /// PEM certificate chain to serve the storage API over TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle: when given, storage API clients must present a certificate it signed.
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Largest storage API message accepted or sent, in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Revisions of history kept so watches can resume after a disconnect.
    #[arg(long, default_value_t = 100_000)]
    pub history_revisions: u64,

    /// Memory for the embedded store's page cache, in MiB (every object is in memory anyway;
    /// this only spares re-reading the file's pages).
    #[arg(long, default_value_t = 4)]
    pub store_cache_mib: usize,

    /// Log filter, e.g. "info" or "gloo_core=debug".
    #[arg(long, env = "GLOO_LOG", default_value = "info")]
    pub log: String,
}

impl Args {
    pub fn run(self) -> ExitCode {
        init_tracing(&self.log);
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                error!(%e, "starting the async runtime");
                return ExitCode::from(1);
            }
        };
        match runtime.block_on(self.serve()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("{e:#}");
                eprintln!("gloo-core: {e:#}");
                ExitCode::from(1)
            }
        }
    }

    async fn serve(self) -> Result<()> {
        let tokens = Tokens::load(&self.tokens_file)?;
        if tokens.is_empty() {
            anyhow::bail!(
                "tokens file {} lists no tokens: nobody could call the storage API",
                self.tokens_file.display()
            );
        }
        let cache_bytes = self.store_cache_mib.saturating_mul(1024 * 1024);
        let backend =
            RedbBackend::open_with_cache(&self.data_dir, self.history_revisions, cache_bytes)
                .with_context(|| format!("opening the store in {}", self.data_dir.display()))?;
        let store = Arc::new(Store::open(Box::new(backend))?);
        info!(
            data_dir = %self.data_dir.display(), revision = store.revision(),
            objects = store.read().len(), tokens = tokens.len(), "store opened"
        );

        let shutdown = CancellationToken::new();
        let mut registry = prometheus_client::registry::Registry::default();
        let api_metrics = ApiMetrics::register(&mut registry);
        let controller_metrics = ControllerMetrics::register(&mut registry);
        let (nodes, nacks) = NodeRegistry::with_verdicts(XdsMetrics::register(&mut registry));
        let (publisher, cache) = xds::cache::channel();
        let mut admin = Admin::new(registry, store.clone());
        admin.config_dump = Some({
            let (nodes, cache) = (nodes.clone(), cache.clone());
            Arc::new(move || {
                serde_json::json!({
                    "snapshot": cache.versions(),
                    "nodes": nodes.dump(),
                })
            })
        });
        let ready = admin.ready.clone();

        let storage = Arc::new(Storage::new(store.clone()).with_validator({
            let v = translate::validate::Validator::watching(&store);
            Arc::new(move |state, writes| v.validate(state, writes))
        }));
        let controller = Controller {
            store: store.clone(),
            storage: storage.clone(),
            publisher,
            nacks,
            metrics: controller_metrics,
        };
        let service = StorageService::new(storage, Arc::new(tokens), api_metrics, shutdown.clone())
            .into_server(self.max_message_bytes);

        let storage_listener = tokio::net::TcpListener::bind(self.storage_listen)
            .await
            .with_context(|| format!("binding the storage API to {}", self.storage_listen))?;
        let xds_listener = tokio::net::TcpListener::bind(self.xds_listen)
            .await
            .with_context(|| format!("binding the xDS server to {}", self.xds_listen))?;
        let admin_listener = tokio::net::TcpListener::bind(self.admin_listen)
            .await
            .with_context(|| format!("binding the admin server to {}", self.admin_listen))?;

        let mut builder = tonic::transport::Server::builder();
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let read =
                |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            let mut tls = tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(read(cert)?, read(key)?),
            );
            if let Some(ca) = &self.tls_client_ca {
                tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
            }
            builder = builder.tls_config(tls).context("configuring TLS")?;
        }
        info!(
            storage = %storage_listener.local_addr()?, xds = %xds_listener.local_addr()?,
            admin = %admin_listener.local_addr()?,
            tls = self.tls_cert.is_some(), "listening"
        );

        let grpc = builder.add_service(service).serve_with_incoming_shutdown(
            // Small answers (an Apply's, a watch event) must not wait for Nagle's algorithm.
            TcpIncoming::from(storage_listener).with_nodelay(Some(true)),
            shutdown.clone().cancelled_owned(),
        );
        let admin_server = admin.serve(admin_listener, shutdown.clone());
        let xds_server = xds::server::serve(xds_listener, cache, nodes, shutdown.clone());
        let controller = tokio::spawn(controller.run(shutdown.clone()));
        ready.store(true, std::sync::atomic::Ordering::Release);

        let signals = {
            let shutdown = shutdown.clone();
            async move {
                wait_for_signal().await;
                info!("shutting down");
                shutdown.cancel();
            }
        };
        tokio::spawn(signals);
        let (g, a, x) = tokio::join!(grpc, admin_server, xds_server);
        g.context("storage API server")?;
        a.context("admin server")?;
        x.context("xDS server")?;
        let _ = controller.await;
        info!(revision = store.revision(), "stopped");
        Ok(())
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

pub fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
