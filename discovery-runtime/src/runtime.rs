//! Wiring shared by every discovery binary: logging, the storage client, the metrics server,
//! the sync driver, and shutdown on SIGTERM or Ctrl-C. A binary builds a [`Runtime`], registers
//! its own metrics, and hands [`Runtime::run`] the future that reads its source.
use std::{
    future::Future,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use proto::v1::Kind;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    args::CommonArgs,
    client::{Client, SyncClient},
    metrics::Metrics,
    sync::{Publisher, SyncDriver},
};

/// What a source's task gets.
#[derive(Clone)]
pub struct Context {
    pub args: CommonArgs,
    /// gloo-core's storage API, as this service's identity (reads every kind but Secrets unless
    /// the token may read them).
    pub client: Client,
    pub publisher: Publisher,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
}

pub struct Runtime {
    name: &'static str,
    args: CommonArgs,
    kinds: Vec<Kind>,
    client: Client,
    sync_client: SyncClient,
    registry: Registry,
    metrics: Metrics,
    shutdown: CancellationToken,
}

/// Sets up logging to stderr with `filter` (EnvFilter syntax).
pub fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

impl Runtime {
    /// `name` is the service's name (the default owner); `kinds` are the kinds its Syncs cover.
    pub fn new(name: &'static str, args: CommonArgs, kinds: &[Kind]) -> anyhow::Result<Runtime> {
        init_tracing(&args.log);
        let (client, sync_client) = args
            .connect_options()?
            .connect_lazy_with_sync()
            .context("setting up the storage client")?;
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        Ok(Runtime {
            name,
            args,
            kinds: kinds.to_vec(),
            client,
            sync_client,
            registry,
            metrics,
            shutdown: CancellationToken::new(),
        })
    }

    /// The registry `/metrics` serves; sources register their own metrics here before `run`.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn owner(&self) -> String {
        self.args.owner.clone().unwrap_or_else(|| self.name.into())
    }

    /// Runs until SIGTERM/Ctrl-C or until the source fails for good. The source should publish
    /// complete desired sets and return when `ctx.shutdown` fires.
    pub async fn run<F, Fut>(self, source: F) -> anyhow::Result<()>
    where
        F: FnOnce(Context) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let owner = self.owner();
        let listener = tokio::net::TcpListener::bind(self.args.metrics_listen)
            .await
            .with_context(|| format!("binding --metrics-listen {}", self.args.metrics_listen))?;
        let ready = Arc::new(AtomicBool::new(false));
        let server = tokio::spawn(crate::server::serve(
            listener,
            Arc::new(self.registry),
            ready.clone(),
            self.shutdown.clone(),
        ));

        let (publisher, rx) = Publisher::new();
        let driver = SyncDriver {
            client: self.sync_client,
            owner: owner.clone(),
            kinds: self.kinds.clone(),
            metrics: self.metrics.clone(),
            resync: Duration::from_secs(300).max(self.args.interval * 10),
        };
        let ready_metric = self.metrics.ready.clone();
        let ready2 = ready.clone();
        let driver = tokio::spawn(driver.run(rx, self.shutdown.clone(), move || {
            if !ready2.swap(true, Ordering::AcqRel) {
                ready_metric.set(1);
                info!("first Sync done; ready");
            }
        }));

        let ctx = Context {
            args: self.args.clone(),
            client: self.client.clone(),
            publisher,
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
        };
        info!(
            service = self.name,
            %owner,
            storage = %self.args.storage,
            metrics = %self.args.metrics_listen,
            "starting"
        );
        let mut source = tokio::spawn(source(ctx));

        let outcome = tokio::select! {
            _ = shutdown_signal() => {
                info!("shutting down");
                Ok(())
            }
            res = &mut source => match res {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("the source task panicked: {e}")),
            },
        };
        self.shutdown.cancel();
        let wait = async {
            if !source.is_finished() {
                let _ = source.await;
            }
            let _ = driver.await;
            let _ = server.await;
        };
        if tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .is_err()
        {
            warn!("tasks did not stop within 10 s; exiting anyway");
        }
        outcome
    }
}

/// SIGTERM (what process supervisors send) or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
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
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The exit code for `main`: 0, or 1 with the error (and its causes) logged.
pub fn exit_code(res: anyhow::Result<()>) -> ExitCode {
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "exiting");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
