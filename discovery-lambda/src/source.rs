//! The polling loop. Each target (aws Upstream or `--region`) has its own schedule: after a
//! good listing it waits its [`PollInterval`] (longer while nothing changes, back to
//! `--interval` after a change); after a failure it waits its [`Backoff`] (throttling and
//! errors alike) and keeps its last good Functions. Due targets are listed `--concurrency` at
//! a time; the full set (every target's last good part) is published once every target has
//! been read at least once, so a restart never deletes Functions of a target not read yet.
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use discovery_runtime::{
    backoff::{Backoff, PollInterval},
    partitions::Partitions,
    reflect::{reflect, StoreView},
    sync::digest,
    Context,
};
use futures::{stream, StreamExt};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use proto::v1::Kind;
use tracing::{debug, info, warn};

use crate::{
    aws::{self, Filters},
    objects,
    targets::{self, RegionTarget, Target},
};

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

pub struct Settings {
    pub regions: Vec<RegionTarget>,
    pub filters: Filters,
    pub concurrency: usize,
    pub max_interval: Duration,
    pub endpoint_url: Option<String>,
    pub role_arn: Option<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    pub target: String,
}

/// discovery-lambda's own metrics, next to the runtime's `discovery_*`.
#[derive(Clone)]
pub struct LambdaMetrics {
    /// Callables found by the last good listing, by target (`namespace/upstream`).
    pub callables: Family<TargetLabel, Gauge>,
    /// Listings by target and result.
    pub listings: Family<ListingLabel, Counter>,
    pub listing_duration: Histogram,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListingLabel {
    pub target: String,
    pub result: &'static str,
}

impl LambdaMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = LambdaMetrics {
            callables: Family::default(),
            listings: Family::default(),
            listing_duration: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.01, 2.0, 14),
            ),
        };
        let r = registry.sub_registry_with_prefix("lambda");
        r.register(
            "callables",
            "Functions, versions and aliases found by the last good listing, by target",
            m.callables.clone(),
        );
        r.register(
            "listings",
            "Listings of a target by result (ok, throttled, source)",
            m.listings.clone(),
        );
        r.register(
            "listing_duration_seconds",
            "Duration of one target's listing",
            m.listing_duration.clone(),
        );
        m
    }
}

struct Schedule {
    target: Target,
    client: Option<aws_sdk_lambda::Client>,
    backoff: Backoff,
    poll: PollInterval,
    due: Instant,
    last: Option<[u8; 32]>,
}

pub async fn run(ctx: Context, s: Settings, m: LambdaMetrics) -> anyhow::Result<()> {
    let selector = ctx.args.label_selector()?;
    let (mut view_rx, driver) = reflect(
        ctx.client.clone(),
        vec![Kind::Upstream, Kind::Secret],
        ctx.metrics.clone(),
        ctx.shutdown.clone(),
    );
    tokio::spawn(driver);
    let http = aws::http_client();
    let backoff_cap = ctx
        .args
        .interval
        .max(Duration::from_secs(60).min(s.max_interval));
    let mut schedules: HashMap<(String, String), Schedule> = HashMap::new();
    // What this service wrote before (an earlier run): each upstream keeps it until its
    // first good listing, so a target that cannot be read after a restart loses nothing.
    let mut parts = match seed(&ctx).await {
        Some(p) => p,
        None => return Ok(()),
    };
    let mut published: Option<[u8; 32]> = None;

    let targets_of = |view: &StoreView| {
        targets::targets(
            view,
            &ctx.args,
            &selector,
            &s.regions,
            s.endpoint_url.as_deref(),
            s.role_arn.as_deref(),
        )
    };
    let mut current: Option<(Vec<Target>, Vec<targets::Blocked>)> = None;
    loop {
        // Wait for gloo-core's store the first time, then follow its changes.
        let view = loop {
            if let Some(v) = view_rx.borrow_and_update().clone() {
                break v;
            }
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                r = view_rx.changed() => if r.is_err() { return Ok(()) },
            }
        };
        let (targets, blocked) = targets_of(&view);
        if current.as_ref() != Some(&(targets.clone(), blocked.clone())) {
            for b in &blocked {
                warn!(namespace = %b.namespace, upstream = %b.upstream, reason = %b.reason, "cannot list this upstream; keeping its Functions");
                ctx.metrics.error("config");
            }
            let keep: HashSet<_> = targets
                .iter()
                .map(Target::key)
                .chain(
                    blocked
                        .iter()
                        .map(|b| (b.namespace.clone(), b.upstream.clone())),
                )
                .collect();
            // Parts of upstreams that are gone are dropped; seeded parts wait for their target.
            parts.retain(|k| keep.contains(k));
            schedules.retain(|k, _| keep.contains(k));
            for t in &targets {
                let fresh = schedules.get(&t.key()).is_none_or(|s| s.target != *t);
                if fresh {
                    info!(namespace = %t.namespace, upstream = %t.upstream, region = %t.region, endpoint = t.endpoint.as_deref().unwrap_or("default"), "listing target");
                    schedules.insert(
                        t.key(),
                        Schedule {
                            target: t.clone(),
                            client: None,
                            backoff: Backoff::new(Duration::from_millis(500), backoff_cap),
                            poll: PollInterval::new(ctx.args.interval, s.max_interval),
                            due: Instant::now(),
                            last: None,
                        },
                    );
                }
            }
            current = Some((targets, blocked));
        }

        // List every due target, `concurrency` at a time.
        let now = Instant::now();
        let mut due: Vec<&mut Schedule> = schedules.values_mut().filter(|s| s.due <= now).collect();
        for sc in due.iter_mut() {
            if sc.client.is_none() {
                sc.client = aws::client(&sc.target, &http).await.ok();
            }
        }
        let jobs: Vec<(usize, Option<aws_sdk_lambda::Client>)> = due
            .iter()
            .enumerate()
            .map(|(i, sc)| (i, sc.client.clone()))
            .collect();
        let mut by_index: Vec<_> = stream::iter(jobs)
            .map(|(i, client)| {
                let filters = s.filters.clone();
                let concurrency = s.concurrency;
                let listing_duration = m.listing_duration.clone();
                async move {
                    let start = Instant::now();
                    let res = match client {
                        Some(c) => aws::list(&c, &filters, concurrency).await,
                        None => Err(aws::ListError::Failed("no client".into())),
                    };
                    listing_duration.observe(start.elapsed().as_secs_f64());
                    (i, res, start.elapsed())
                }
            })
            .buffer_unordered(s.concurrency)
            .collect()
            .await;
        by_index.sort_by_key(|(i, _, _)| *i);
        for ((_, res, took), sc) in by_index.into_iter().zip(due.iter_mut()) {
            let t = &sc.target;
            let label = format!("{}/{}", t.namespace, t.upstream);
            match res {
                Ok(callables) => {
                    let fns = objects::functions(&t.namespace, &t.upstream, &callables);
                    let d = digest(&fns);
                    let changed = sc.last != Some(d);
                    sc.last = Some(d);
                    m.callables
                        .get_or_create(&TargetLabel {
                            target: label.clone(),
                        })
                        .set(fns.len() as i64);
                    m.listings
                        .get_or_create(&ListingLabel {
                            target: label.clone(),
                            result: "ok",
                        })
                        .inc();
                    if sc.backoff.failures() > 0 {
                        info!(target = %label, "Lambda API answers again");
                        ctx.metrics.recovered("lambda");
                    }
                    sc.backoff.reset();
                    let wait = sc.poll.observe(changed);
                    sc.due = Instant::now() + wait;
                    debug!(target = %label, callables = fns.len(), changed, took_ms = took.as_millis() as u64, next_in_s = wait.as_secs(), "listed");
                    parts.set(t.key(), fns);
                }
                Err(e) => {
                    // A throttled listing waits at least what the API asked for (whatever
                    // the polling flags say; an absurd Retry-After is capped).
                    let delay = sc
                        .backoff
                        .next_delay()
                        .max(e.retry_after().unwrap_or_default().min(MAX_RETRY_AFTER));
                    ctx.metrics.error(e.kind());
                    ctx.metrics.backing_off("lambda", delay);
                    m.listings
                        .get_or_create(&ListingLabel {
                            target: label.clone(),
                            result: e.kind(),
                        })
                        .inc();
                    warn!(target = %label, error = %e, retry_in_ms = delay.as_millis() as u64, "listing failed; keeping the last good Functions");
                    sc.due = Instant::now() + delay;
                    // A new client next time (credentials or endpoint may have recovered).
                    if matches!(e, aws::ListError::Failed(_)) && sc.backoff.failures() > 3 {
                        sc.client = None;
                    }
                }
            }
        }
        drop(due);

        // Publish every target's last good part (or what the store held); only a changed set
        // reaches gloo-core.
        {
            let set = parts.desired();
            let d = digest(&set);
            if published != Some(d) {
                info!(functions = set.len(), "publishing");
                ctx.publisher.publish(set);
                published = Some(d);
            }
        }

        // Sleep until the next target is due, or the store's targets change.
        let next = schedules
            .values()
            .map(|s| s.due)
            .min()
            .unwrap_or_else(|| Instant::now() + s.max_interval);
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(next.into()) => break,
                r = view_rx.changed() => {
                    if r.is_err() { return Ok(()) }
                    let Some(v) = view_rx.borrow_and_update().clone() else { continue };
                    let t = targets_of(&v);
                    if current.as_ref() != Some(&t) { break }
                }
            }
        }
    }
}

/// The Functions this service owns in gloo-core now, by (namespace, upstream), as desired
/// objects (name, namespace, labels, spec). Retries until gloo-core answers; None at shutdown.
async fn seed(ctx: &Context) -> Option<Partitions<(String, String)>> {
    let owner = ctx
        .args
        .owner
        .clone()
        .unwrap_or_else(|| "discovery-lambda".into());
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let items = loop {
        let mut client = ctx.client.clone();
        let res = client
            .list(proto::v1::ListRequest {
                kind: Kind::Function as i32,
                ..Default::default()
            })
            .await;
        match res {
            Ok(r) => break r.into_inner().items,
            Err(status) => {
                let delay = backoff.next_delay();
                ctx.metrics.error("storage");
                ctx.metrics.backing_off("storage", delay);
                warn!(code = ?status.code(), error = %status.message(), retry_in_ms = delay.as_millis() as u64, "listing our Functions in gloo-core failed");
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    let mut by_part: HashMap<(String, String), Vec<proto::v1::Resource>> = HashMap::new();
    for r in items {
        let (Some(m), Some(proto::v1::resource::Spec::Function(f))) = (&r.metadata, &r.spec) else {
            continue;
        };
        if m.owner != owner {
            continue;
        }
        let desired = proto::v1::Resource {
            metadata: Some(proto::v1::Metadata {
                name: m.name.clone(),
                namespace: m.namespace.clone(),
                labels: m.labels.clone(),
                ..Default::default()
            }),
            status: None,
            spec: r.spec.clone(),
        };
        by_part
            .entry((m.namespace.clone(), f.upstream.clone()))
            .or_default()
            .push(desired);
    }
    let mut parts = Partitions::default();
    let n: usize = by_part.values().map(Vec::len).sum();
    for (k, v) in by_part {
        parts.set(k, v);
    }
    info!(functions = n, "Functions this service wrote before");
    Some(parts)
}
