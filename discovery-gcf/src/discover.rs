//! The discovery loop: each pass lists the functions of every GCP Upstream (a few at a time),
//! turns them into Function objects, and publishes the full set.
//!
//! Never delete on error: a part (one upstream) is replaced only by a listing that succeeded.
//! A part that has never been listed since this process started (the API is down at start,
//! or its credentials are broken) keeps what gloo-core already holds for it under our owner,
//! so a restart during an outage deletes nothing either.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use discovery_runtime::{
    backoff::{Backoff, PollInterval},
    names::object_name,
    partitions::Partitions,
    reflect::{reflect, StoreView},
    sync::digest,
    Context,
};
use futures::StreamExt;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use proto::v1::{
    function_spec, resource::Spec, secret_spec, upstream_spec::UpstreamType, FunctionSpec,
    GcfFunction, GcpUpstream, Kind, Metadata, Resource,
};
use tracing::{debug, info, warn};

use crate::{
    api::{self, Function},
    auth::{Credentials, ServiceAccountKey, TokenSource, DEFAULT_TOKEN_URL},
    error::Error,
    Args,
};

/// A part: (namespace, upstream name).
pub type PartKey = (String, String);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// discovery-gcf's own metrics.
#[derive(Clone)]
pub struct GcfMetrics {
    /// Functions discovered per upstream (`namespace/name`) in its last good listing.
    pub functions: Family<UpstreamLabel, Gauge>,
    /// Listings of one upstream, by result (`ok`, `error`).
    pub listings: Family<ResultLabel, Counter>,
}

impl GcfMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = GcfMetrics {
            functions: Family::default(),
            listings: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("gcf");
        r.register(
            "functions",
            "Functions found per upstream in its last good listing",
            m.functions.clone(),
        );
        r.register(
            "listings",
            "Listings of one upstream, by result",
            m.listings.clone(),
        );
        m
    }
}

/// What the loop keeps between passes.
#[derive(Default)]
pub struct State {
    pub parts: Partitions<PartKey>,
    /// Token sources by upstream, with the credentials they were built from.
    tokens: HashMap<PartKey, (String, Arc<TokenSource>)>,
}

/// What one upstream asks for.
struct Job {
    key: PartKey,
    project: String,
    location: String,
    base: String,
    tokens: Arc<TokenSource>,
}

/// Function filters from the flags.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub labels: Vec<(String, String)>,
    pub name_prefix: String,
}

impl Filter {
    pub fn keeps(&self, f: &Function) -> bool {
        f.short_name().starts_with(&self.name_prefix)
            && self
                .labels
                .iter()
                .all(|(k, v)| f.labels.get(k).is_some_and(|x| x == v))
    }
}

/// The Function objects for one upstream's listing: ACTIVE, HTTP-triggered functions that
/// pass the filter, named after their short name (with the location when two regions hold the
/// same name).
pub fn to_resources(
    namespace: &str,
    upstream: &str,
    functions: &[Function],
    filter: &Filter,
) -> Vec<Resource> {
    let mut keep: Vec<(&Function, &str)> = functions
        .iter()
        .filter(|f| filter.keeps(f))
        .filter_map(|f| f.routable_url().map(|u| (f, u)))
        .collect();
    keep.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let mut count: HashMap<String, usize> = HashMap::new();
    for (f, _) in &keep {
        *count.entry(object_name(&[f.short_name()])).or_default() += 1;
    }
    keep.into_iter()
        .map(|(f, url)| {
            let short = object_name(&[f.short_name()]);
            let name = if count[&short] > 1 {
                object_name(&[f.short_name(), f.location()])
            } else {
                short
            };
            function_resource(namespace, &name, upstream, &f.name, url)
        })
        .collect()
}

fn function_resource(ns: &str, name: &str, upstream: &str, full: &str, url: &str) -> Resource {
    Resource {
        metadata: Some(Metadata {
            name: name.into(),
            namespace: ns.into(),
            ..Default::default()
        }),
        status: None,
        spec: Some(Spec::Function(FunctionSpec {
            upstream: upstream.into(),
            function: Some(function_spec::Function::Gcf(GcfFunction {
                name: full.into(),
                url: url.into(),
            })),
        })),
    }
}

/// What gloo-core holds for an upstream under `owner`, as a desired set (metadata the store
/// sets left out).
fn stored_part(view: &StoreView, owner: &str, key: &PartKey) -> Vec<Resource> {
    view.of_kind(Kind::Function)
        .filter(|r| {
            let m = r.metadata.as_ref();
            m.is_some_and(|m| m.owner == owner && m.namespace == key.0)
                && matches!(&r.spec, Some(Spec::Function(f)) if f.upstream == key.1)
        })
        .map(|r| {
            let m = r.metadata.clone().unwrap_or_default();
            Resource {
                metadata: Some(Metadata {
                    name: m.name,
                    namespace: m.namespace,
                    ..Default::default()
                }),
                status: None,
                spec: r.spec.clone(),
            }
        })
        .collect()
}

/// The desired set: every part's objects, the first of two with the same name winning.
pub fn desired(parts: &Partitions<PartKey>) -> Vec<Resource> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for r in parts.desired() {
        let m = r.metadata.as_ref();
        let key = m.map(|m| (m.namespace.clone(), m.name.clone()));
        if seen.insert(key.clone()) {
            out.push(r);
        } else if let Some((ns, name)) = key {
            warn!(namespace = %ns, function = %name, "two upstreams' functions share a name; keeping the first");
        }
    }
    out
}

fn gcp_of(r: &Resource) -> Option<(&Metadata, &GcpUpstream)> {
    match &r.spec {
        Some(Spec::Upstream(u)) => match &u.upstream_type {
            Some(UpstreamType::Gcp(g)) => Some((r.metadata.as_ref()?, g)),
            _ => None,
        },
        _ => None,
    }
}

/// Runs the loop until shutdown.
pub async fn run(ctx: Context, args: Args, metrics: GcfMetrics) -> anyhow::Result<()> {
    let selector = ctx.args.label_selector()?;
    let owner = ctx
        .args
        .owner
        .clone()
        .unwrap_or_else(|| "discovery-gcf".into());
    let http = reqwest::Client::builder()
        .timeout(args.request_timeout)
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let (mut view_rx, driver) = reflect(
        ctx.client.clone(),
        vec![Kind::Upstream, Kind::Secret, Kind::Function],
        ctx.metrics.clone(),
        ctx.shutdown.clone(),
    );
    tokio::spawn(driver);
    let filter = Filter {
        labels: args.labels.clone(),
        name_prefix: args.name_prefix.clone(),
    };
    let mut state = State::default();
    let mut poll = PollInterval::new(ctx.args.interval, args.max_interval);
    let mut backoff = Backoff::new(Duration::from_millis(500), args.max_interval);
    let mut last: Option<[u8; 32]> = None;
    loop {
        let view = loop {
            if let Some(v) = view_rx.borrow_and_update().clone() {
                break v;
            }
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                r = view_rx.changed() => if r.is_err() { return Ok(()) },
            }
        };
        let (failed, retry_after) = pass(
            &ctx, &args, &http, &view, &owner, &selector, &filter, &metrics, &mut state,
        )
        .await;
        let set = desired(&state.parts);
        let d = digest(&set);
        let changed = last != Some(d);
        last = Some(d);
        ctx.publisher.publish(set);
        let (delay, backing_off) = if failed > 0 {
            // Google's Retry-After, when it sent one, is a floor (capped at --max-interval).
            let delay = backoff
                .next_delay()
                .max(retry_after.unwrap_or_default().min(args.max_interval));
            ctx.metrics.backing_off("gcf", delay);
            (delay, true)
        } else {
            if backoff.failures() > 0 {
                info!("Cloud Functions API answers again");
            }
            backoff.reset();
            ctx.metrics.recovered("gcf");
            (poll.observe(changed), false)
        };
        debug!(delay_ms = delay.as_millis() as u64, failed, "next poll");
        let config = config_of(&view);
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(deadline) => break,
                // A new or edited Upstream or Secret is listed at once, unless backing off;
                // our own Functions being written is no reason to list again.
                r = view_rx.changed(), if !backing_off => {
                    if r.is_err() {
                        return Ok(());
                    }
                    let changed = view_rx
                        .borrow()
                        .as_ref()
                        .is_some_and(|v| config_of(v) != config);
                    if changed {
                        break;
                    }
                }
            }
        }
    }
}

/// What the listings depend on in the store: the Upstreams and Secrets, by version.
fn config_of(view: &StoreView) -> Vec<(i32, &str, &str, u64)> {
    view.objects
        .iter()
        .filter(|(k, _)| k.0 == Kind::Upstream as i32 || k.0 == Kind::Secret as i32)
        .map(|(k, r)| {
            let version = r.metadata.as_ref().map_or(0, |m| m.resource_version);
            (k.0, k.1.as_str(), k.2.as_str(), version)
        })
        .collect()
}

/// One pass over every GCP upstream; returns how many failed, and the longest Retry-After.
#[allow(clippy::too_many_arguments)]
async fn pass(
    ctx: &Context,
    args: &Args,
    http: &reqwest::Client,
    view: &StoreView,
    owner: &str,
    selector: &discovery_runtime::selector::Selector,
    filter: &Filter,
    metrics: &GcfMetrics,
    state: &mut State,
) -> (usize, Option<Duration>) {
    let mut jobs = Vec::new();
    let mut failures: Vec<(PartKey, Error)> = Vec::new();
    let mut present = HashSet::new();
    for r in view.of_kind(Kind::Upstream) {
        let Some((m, gcp)) = gcp_of(r) else { continue };
        let labels: std::collections::HashMap<String, String> = m
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !ctx.args.namespace_selected(&m.namespace) || !selector.matches(&labels) {
            continue;
        }
        let key = (m.namespace.clone(), m.name.clone());
        present.insert(key.clone());
        match job(args, http, view, &key, gcp, &mut state.tokens) {
            Ok(j) => jobs.push(j),
            Err(e) => failures.push((key, e)),
        }
    }
    state.tokens.retain(|k, _| present.contains(k));
    state.parts.retain(|k| present.contains(k));

    let page_size = args.page_size;
    let mut results = futures::stream::iter(jobs)
        .map(|j| async move {
            let res =
                api::list_functions(http, &j.base, &j.tokens, &j.project, &j.location, page_size)
                    .await;
            (j.key, res)
        })
        .buffer_unordered(args.concurrency.max(1));
    let mut listed = BTreeMap::new();
    while let Some((key, res)) = results.next().await {
        match res {
            Ok(fns) => {
                listed.insert(key, fns);
            }
            Err(e) => failures.push((key, e)),
        }
    }
    drop(results);
    for ((ns, name), fns) in listed {
        let resources = to_resources(&ns, &name, &fns, filter);
        info!(namespace = %ns, upstream = %name, listed = fns.len(), routable = resources.len(), "functions listed");
        metrics
            .functions
            .get_or_create(&UpstreamLabel {
                upstream: format!("{ns}/{name}"),
            })
            .set(resources.len() as i64);
        metrics
            .listings
            .get_or_create(&ResultLabel { result: "ok" })
            .inc();
        state.parts.set((ns, name), resources);
    }
    let failed = failures.len();
    let mut longest_retry_after = None;
    for (key, e) in failures {
        longest_retry_after = longest_retry_after.max(e.retry_after());
        metrics
            .listings
            .get_or_create(&ResultLabel { result: "error" })
            .inc();
        ctx.metrics.error(e.kind());
        let retry_after = e.retry_after().map(|d| d.as_secs());
        warn!(namespace = %key.0, upstream = %key.1, error = %e, kind = e.kind(), ?retry_after, "listing functions failed; keeping what was found before");
        if !state.parts.contains(&key) {
            let stored = stored_part(view, owner, &key);
            state.parts.set(key, stored);
        }
    }
    (failed, longest_retry_after)
}

/// The request an upstream needs, with its (cached) token source.
fn job(
    args: &Args,
    http: &reqwest::Client,
    view: &StoreView,
    key: &PartKey,
    gcp: &GcpUpstream,
    tokens: &mut HashMap<PartKey, (String, Arc<TokenSource>)>,
) -> Result<Job, Error> {
    let (ns, name) = key;
    if gcp.project.is_empty() {
        return Err(Error::Invalid(format!(
            "upstream {ns}/{name}: spec.gcp.project is empty"
        )));
    }
    let (id, creds) = match gcp.secret_ref.as_ref().filter(|r| !r.name.is_empty()) {
        Some(r) => {
            let sns = if r.namespace.is_empty() {
                ns
            } else {
                &r.namespace
            };
            let what = format!(
                "upstream {ns}/{name}: spec.gcp.secretRef: Secret {sns}/{}",
                r.name
            );
            let secret = match view
                .get(Kind::Secret, sns, &r.name)
                .and_then(|s| s.spec.as_ref())
            {
                Some(Spec::Secret(s)) => s,
                _ => return Err(Error::Credentials(format!("{what} not found"))),
            };
            let Some(secret_spec::Kind::Gcp(g)) = &secret.kind else {
                return Err(Error::Credentials(format!("{what} is not a gcp secret")));
            };
            let id = format!("sa\0{}\0{:?}", g.service_account_json, args.token_url);
            // Parse the key only when it changed: the token source keeps its cached token.
            if let Some((_, t)) = tokens.get(key).filter(|(have, _)| *have == id) {
                return Ok(Job {
                    key: key.clone(),
                    project: gcp.project.clone(),
                    location: location(gcp),
                    base: base(args, gcp),
                    tokens: t.clone(),
                });
            }
            let sa = ServiceAccountKey::parse(&g.service_account_json)
                .map_err(|e| Error::Credentials(format!("{what}: {e}")))?;
            let token_url = args
                .token_url
                .clone()
                .or_else(|| Some(sa.token_uri.clone()).filter(|u| !u.is_empty()))
                .unwrap_or_else(|| DEFAULT_TOKEN_URL.into());
            (id, Credentials::ServiceAccount { key: sa, token_url })
        }
        None => (
            format!("md\0{}", args.metadata_base),
            Credentials::Metadata {
                base: args.metadata_base.clone(),
            },
        ),
    };
    let t = match tokens.get(key).filter(|(have, _)| *have == id) {
        Some((_, t)) => t.clone(),
        None => {
            let t = Arc::new(TokenSource::new(creds, http.clone()));
            tokens.insert(key.clone(), (id, t.clone()));
            t
        }
    };
    Ok(Job {
        key: key.clone(),
        project: gcp.project.clone(),
        location: location(gcp),
        base: base(args, gcp),
        tokens: t,
    })
}

fn location(gcp: &GcpUpstream) -> String {
    if gcp.region.is_empty() {
        "-".into()
    } else {
        gcp.region.clone()
    }
}

fn base(args: &Args, gcp: &GcpUpstream) -> String {
    if gcp.endpoint.is_empty() {
        args.api_base.clone()
    } else {
        gcp.endpoint.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, state: &str, uri: &str) -> Function {
        Function {
            name: name.into(),
            state: state.into(),
            service_config: Some(api::ServiceConfig { uri: uri.into() }),
            ..Default::default()
        }
    }

    fn names(rs: &[Resource]) -> Vec<String> {
        rs.iter()
            .map(|r| r.metadata.as_ref().unwrap().name.clone())
            .collect()
    }

    #[test]
    fn active_http_functions_become_functions_of_the_upstream() {
        let fns = vec![
            f(
                "projects/p/locations/us-central1/functions/Hello_World",
                "ACTIVE",
                "https://h1.run.app",
            ),
            f(
                "projects/p/locations/us-central1/functions/broken",
                "FAILED",
                "https://h2.run.app",
            ),
        ];
        let rs = to_resources("team", "gcp", &fns, &Filter::default());
        assert_eq!(rs.len(), 1);
        let m = rs[0].metadata.as_ref().unwrap();
        assert_eq!(m.namespace, "team");
        assert!(m.name.starts_with("hello-world-"), "{}", m.name);
        let Some(Spec::Function(spec)) = &rs[0].spec else {
            panic!()
        };
        assert_eq!(spec.upstream, "gcp");
        assert_eq!(
            spec.function,
            Some(function_spec::Function::Gcf(GcfFunction {
                name: "projects/p/locations/us-central1/functions/Hello_World".into(),
                url: "https://h1.run.app".into(),
            }))
        );
    }

    #[test]
    fn same_name_in_two_regions_gets_the_region_in_the_name() {
        let fns = vec![
            f(
                "projects/p/locations/us-central1/functions/hello",
                "ACTIVE",
                "https://a",
            ),
            f(
                "projects/p/locations/europe-west1/functions/hello",
                "ACTIVE",
                "https://b",
            ),
            f(
                "projects/p/locations/europe-west1/functions/other",
                "ACTIVE",
                "https://c",
            ),
        ];
        let rs = to_resources("default", "gcp", &fns, &Filter::default());
        assert_eq!(
            names(&rs),
            ["hello-europe-west1", "other", "hello-us-central1"]
        );
    }

    #[test]
    fn filters_by_label_and_name_prefix() {
        let mut a = f(
            "projects/p/locations/l/functions/api-a",
            "ACTIVE",
            "https://a",
        );
        a.labels.insert("team".into(), "x".into());
        let mut b = f(
            "projects/p/locations/l/functions/api-b",
            "ACTIVE",
            "https://b",
        );
        b.labels.insert("team".into(), "y".into());
        let c = f(
            "projects/p/locations/l/functions/job-c",
            "ACTIVE",
            "https://c",
        );
        let fns = vec![a, b, c];
        let by_prefix = Filter {
            name_prefix: "api-".into(),
            ..Default::default()
        };
        assert_eq!(
            names(&to_resources("d", "u", &fns, &by_prefix)),
            ["api-a", "api-b"]
        );
        let by_label = Filter {
            labels: vec![("team".into(), "y".into())],
            ..Default::default()
        };
        assert_eq!(names(&to_resources("d", "u", &fns, &by_label)), ["api-b"]);
    }

    #[test]
    fn a_name_two_upstreams_share_is_published_once() {
        let mut parts = Partitions::default();
        let one = |u: &str| {
            to_resources(
                "d",
                u,
                &[f(
                    "projects/p/locations/l/functions/x",
                    "ACTIVE",
                    "https://a",
                )],
                &Filter::default(),
            )
        };
        parts.set(("d".to_string(), "a".to_string()), one("a"));
        parts.set(("d".to_string(), "b".to_string()), one("b"));
        let set = desired(&parts);
        assert_eq!(set.len(), 1);
        let Some(Spec::Function(spec)) = &set[0].spec else {
            panic!()
        };
        assert_eq!(spec.upstream, "a");
    }
}
