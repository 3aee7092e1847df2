//! The Kubernetes half: two kube-runtime watchers (Services, EndpointSlices) feed reflector
//! stores; a coalescing loop turns the stores into desired sets for the sync driver.
//!
//! ```text
//!  watcher(Services) ──reflector──► store ─┐
//!  watcher(Slices)   ──reflector──► store ─┤ any event marks dirty
//!        (each with a backoff layer)       ▼
//!             both initial lists done? at most every --coalesce: desired_set() → publish
//! ```
//!
//! A reflector store swaps in a (re)list only when it is complete, so a store always holds a
//! whole state, and nothing is published before both initial lists completed: a half-listed
//! state would delete objects. When the API server is unreachable the watchers back off and the
//! stores keep their last state, so nothing is published and nothing deleted. A watch that
//! breaks resumes from its last resourceVersion; one that expired (410) relists, and when the
//! relist yields the same set, the sync driver writes nothing.
use std::{path::PathBuf, pin::pin, sync::Arc, time::Duration};

use anyhow::Context as _;
use discovery_runtime::{backoff::Backoff as RuntimeBackoff, metrics::Metrics, Context};
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        reflector::{self, Store},
        utils::Backoff as KubeBackoff,
        watcher, WatchStreamExt,
    },
    Api, Client, Config,
};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::desired::{desired_set, Filter};

/// How to reach the API server and how to watch it.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Publish at most this often.
    pub coalesce: Duration,
    /// The longest delay between attempts to reach the API server.
    pub max_backoff: Duration,
}

/// A kube client from `--kubeconfig`, else `KUBECONFIG` / `~/.kube/config`, else the in-cluster
/// service account.
pub async fn client(opts: &WatchOptions) -> anyhow::Result<Client> {
    let kco = KubeConfigOptions {
        context: opts.context.clone(),
        ..Default::default()
    };
    let config = match &opts.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading --kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &kco)
                .await
                .with_context(|| format!("using --kubeconfig {}", path.display()))?
        }
        None if opts.context.is_some() => Config::from_kubeconfig(&kco)
            .await
            .context("loading the kubeconfig")?,
        None => Config::infer()
            .await
            .context("no kubeconfig (KUBECONFIG, ~/.kube/config) and not in a cluster")?,
    };
    info!(cluster = %config.cluster_url, "Kubernetes API");
    Client::try_from(config).context("building the Kubernetes client")
}

/// kube's watcher backoff, with discovery-runtime's exponential delays and jitter, reported in
/// the shared retry metrics (`discovery_retries_total{target="kubernetes"}`). kube resets it
/// when the watch delivers again.
struct WatchBackoff {
    inner: RuntimeBackoff,
    metrics: Metrics,
    target: &'static str,
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.inner.next_delay();
        self.metrics.error("source");
        self.metrics.backing_off(self.target, delay);
        debug!(
            resource = self.target,
            retry_in_ms = delay.as_millis() as u64,
            failures = self.inner.failures(),
            "backing off"
        );
        Some(delay)
    }
}

impl KubeBackoff for WatchBackoff {
    fn reset(&mut self) {
        if self.inner.failures() > 0 {
            info!(resource = self.target, "Kubernetes watch recovered");
        }
        self.inner.reset();
        self.metrics.recovered(self.target);
    }
}

/// What a watcher reports to the loop: something changed, or its (re)list completed.
enum Change {
    Event,
    /// Watcher `0` (Services) or `1` (EndpointSlices) completed a (re)list.
    Listed(usize),
}

fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    backoff: WatchBackoff,
    which: usize,
) -> impl Stream<Item = Result<Change, watcher::Error>> + Send
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let resource = backoff.target;
    watcher(api, config)
        .backoff(backoff)
        .reflect(writer)
        .inspect_err(move |e| debug!(resource, error = %e, "watch error"))
        .map_ok(move |ev| match ev {
            watcher::Event::InitDone => Change::Listed(which),
            _ => Change::Event,
        })
}

/// Watches until `ctx.shutdown`, publishing the desired set after every burst of changes.
pub async fn run(ctx: Context, opts: WatchOptions, filter: Filter) -> anyhow::Result<()> {
    let client = client(&opts).await?;
    // One namespace: watch just it (a namespaced Role is enough). Otherwise all namespaces,
    // filtered here.
    let (services, slices): (Api<Service>, Api<EndpointSlice>) = match filter.namespaces.as_slice()
    {
        [ns] => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        _ => (Api::all(client.clone()), Api::all(client)),
    };
    // The label selector is also sent to the API server, which filters Services there; the
    // filter applies it again, for servers that ignore it.
    let mut svc_config = watcher::Config::default();
    if let Some(sel) = ctx
        .args
        .selector
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        svc_config = svc_config.labels(sel);
    }
    let slice_config = watcher::Config::default().labels(crate::desired::SERVICE_NAME_LABEL);

    let backoff = |target| WatchBackoff {
        inner: RuntimeBackoff::new(Duration::from_millis(200), opts.max_backoff),
        metrics: ctx.metrics.clone(),
        target,
    };
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (slice_store, slice_writer) = reflector::store::<EndpointSlice>();
    let svc_events = watch(services, svc_config, svc_writer, backoff("services"), 0);
    let slice_events = watch(
        slices,
        slice_config,
        slice_writer,
        backoff("endpointslices"),
        1,
    );
    let mut events = pin!(futures::stream::select(svc_events, slice_events));

    let started = Instant::now();
    let mut listed = [false; 2];
    let mut dirty = false;
    let mut last_publish: Option<Instant> = None;
    loop {
        // Both watchers completed their first list.
        let ready = listed == [true, true];
        let publish_at = match (dirty && ready, last_publish) {
            (false, _) => None,
            (true, None) => Some(Instant::now()),
            (true, Some(at)) => Some(at + opts.coalesce),
        };
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            ev = events.next() => match ev {
                Some(Ok(Change::Event)) => dirty = true,
                Some(Ok(Change::Listed(which))) => {
                    dirty = true;
                    if !listed[which] {
                        listed[which] = true;
                        if listed == [true, true] {
                            info!(
                                services = svc_store.len(),
                                endpoint_slices = slice_store.len(),
                                elapsed_ms = started.elapsed().as_millis() as u64,
                                "initial lists complete"
                            );
                        }
                    }
                }
                // The backoff layer already delayed the next attempt and counted the failure.
                Some(Err(e)) => warn!(error = %e, "Kubernetes watch error; retrying"),
                None => anyhow::bail!("the Kubernetes watch streams ended"),
            },
            _ = sleep_until(publish_at) => {
                dirty = false;
                last_publish = Some(Instant::now());
                publish(&ctx, &svc_store, &slice_store, &filter);
            }
        }
    }
}

fn publish(
    ctx: &Context,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    filter: &Filter,
) {
    let t = std::time::Instant::now();
    let services: Vec<Arc<Service>> = services.state();
    let slices: Vec<Arc<EndpointSlice>> = slices.state();
    let set = desired_set(
        services.iter().map(|s| s.as_ref()),
        slices.iter().map(|s| s.as_ref()),
        filter,
    );
    debug!(
        services = services.len(),
        endpoint_slices = slices.len(),
        objects = set.len(),
        build_ms = t.elapsed().as_millis() as u64,
        "publishing the desired set"
    );
    ctx.publisher.publish(set);
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
