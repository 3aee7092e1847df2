//! The Kubernetes half: two kube-runtime watchers (Services, EndpointSlices) feed the
//! [`Index`]; a coalescing loop turns it into desired sets for the sync driver.
//!
//! ```text
//!  watcher(Services) ──reduce──► index.services ─┐
//!  watcher(Slices)   ──reduce──► index.slices   ─┤ any event marks dirty
//!        (each with a backoff layer)             ▼
//!        both initial lists done? at most every --coalesce: desired_set() → encoded → publish
//! ```
//!
//! Each object is reduced to the few fields discovery uses as soon as it is received, and the
//! desired set is encoded object by object as it is built, so neither the full Kubernetes
//! objects nor a decoded desired set stay in memory. The index swaps in a (re)list only when
//! it is complete, so it always holds a whole state, and nothing is published before both
//! initial lists completed: a half-listed state would delete objects. When the API server is
//! unreachable the watchers back off and the index keeps its last state, so nothing is
//! published and nothing deleted. A watch that
//! breaks resumes from its last resourceVersion; one that expired (410) relists, and when the
//! relist yields the same set, the sync driver writes nothing.
use std::{path::PathBuf, pin::pin, time::Duration};

use anyhow::Context as _;
use discovery_runtime::{
    backoff::Backoff as RuntimeBackoff, metrics::Metrics, sync::DesiredSet, Context,
};
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{utils::Backoff as KubeBackoff, watcher, WatchStreamExt},
    Api, Client, Config,
};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::{
    desired::{desired_set, Filter},
    index::{reduce, Index, Key, ServiceInfo, SliceInfo},
};

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

/// A watcher's event, its object already reduced.
enum Change {
    Service(watcher::Event<(Key, ServiceInfo)>),
    Slice(watcher::Event<(Key, SliceInfo)>),
}

fn watch<K, T>(
    api: Api<K>,
    config: watcher::Config,
    backoff: WatchBackoff,
    change: fn(watcher::Event<(Key, T)>) -> Change,
) -> impl Stream<Item = Result<Change, watcher::Error>> + Send
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    T: for<'a> From<&'a K> + Send + 'static,
{
    let resource = backoff.target;
    watcher(api, config)
        .backoff(backoff)
        .inspect_err(move |e| debug!(resource, error = %e, "watch error"))
        .map_ok(move |ev| change(reduce(ev)))
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
    let mut index = Index::default();
    let svc_events = watch(services, svc_config, backoff("services"), Change::Service);
    let slice_events = watch(
        slices,
        slice_config,
        backoff("endpointslices"),
        Change::Slice,
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
                Some(Ok(change)) => {
                    dirty = true;
                    // Which watcher (0: Services, 1: EndpointSlices) completed a (re)list.
                    let done = match change {
                        Change::Service(ev) => index.services.apply(ev).then_some(0),
                        Change::Slice(ev) => index.slices.apply(ev).then_some(1),
                    };
                    if let Some(which) = done.filter(|w| !listed[*w]) {
                        listed[which] = true;
                        if listed == [true, true] {
                            info!(
                                services = index.services.len(),
                                endpoint_slices = index.slices.len(),
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
                publish(&ctx, &index, &filter);
            }
        }
    }
}

fn publish(ctx: &Context, index: &Index, filter: &Filter) {
    let t = std::time::Instant::now();
    let mut set = DesiredSet::builder();
    desired_set(index, filter, &mut |r| set.push(r));
    let set = set.finish();
    debug!(
        services = index.services.len(),
        endpoint_slices = index.slices.len(),
        objects = set.len(),
        encoded_bytes = set.encoded_len(),
        build_ms = t.elapsed().as_millis() as u64,
        "publishing the desired set"
    );
    ctx.publisher.publish_set(set);
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
