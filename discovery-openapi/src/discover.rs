//! The discovery loop: follow the store's Upstreams (and Endpoints), probe the selected ones
//! for a spec when they are due, and publish every Function found.
//!
//! ```text
//!  store (Upstreams, Endpoints) ──reflect──► select ─► per-upstream state ─► due? ─► probe
//!                                                                                     │
//!    publish(all partitions) ◄── Partitions[(ns, upstream)] ◄── good spec ◄───────────┤
//!                                 (kept as they were)        ◄── 304 / bad spec / none ┘
//! ```
//!
//! Each upstream has its own clock: with a spec, one conditional GET per `--interval`; without
//! one, the candidate paths are tried again only after a delay that doubles each time up to
//! `--max-probe-interval`, and after the probe that followed a wait of that long, not at all
//! ("stopped") until the Upstream changes (generation, labels, annotations, its address) or
//! the service restarts: an upstream that never serves a spec costs nothing in the long run.
//! A bad spec (or an unreachable service) never removes the Functions of the last good one;
//! only an upstream that is deleted or no longer selected loses its Functions. The Functions
//! this owner wrote before a restart seed the last good sets. A bad spec's problem is also set
//! on the Upstream as a warning annotation ([`crate::warnings`]), which gloo-core reports as a
//! Warning on the Upstream's status.
use std::{
    collections::{hash_map::Entry, HashMap},
    hash::{Hash, Hasher},
    time::{Duration, Instant},
};

use discovery_runtime::{
    backoff::PollInterval, partitions::Partitions, reflect::StoreView, Context,
};
use futures::StreamExt;
use proto::v1::Kind;
use tracing::{debug, info, warn};

use crate::{
    fetch::{shown, Fetched, Fetcher, Validators},
    functions::{dedupe_across_upstreams, functions, PROBLEM_ANNOTATION, UPSTREAM_LABEL},
    metrics::OpenapiMetrics,
    select::{candidate_urls, Selection},
    spec::{self, Api, SpecError},
    warnings::{Warnings, WARNING_PREFIX},
};

#[derive(Clone, Debug)]
pub struct Config {
    pub selection: Selection,
    pub paths: Vec<String>,
    pub interval: Duration,
    pub max_probe_interval: Duration,
    pub concurrency: usize,
}

type UpKey = (String, String);
/// Where a spec was found, and the validators of its last answer.
type Known = (String, Validators);

struct UpState {
    urls: Vec<String>,
    /// Where the spec was found, and its validators.
    known: Option<Known>,
    /// The growing delay between probes while no spec is found.
    poll: PollInterval,
    /// When to probe next; `None` once stopped (no spec through every delay up to the cap).
    due: Option<Instant>,
    problem: Option<String>,
    /// What of the Upstream a change of restarts probing (see [`fingerprint`]).
    fingerprint: u64,
}

/// The parts of an Upstream whose change makes a stopped upstream worth asking again: its
/// generation (spec), labels and annotations, except discovery services' own warnings.
fn fingerprint(up: &proto::v1::Resource) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Some(m) = &up.metadata {
        m.generation.hash(&mut h);
        let mut labels: Vec<_> = m.labels.iter().collect();
        labels.sort_unstable();
        labels.hash(&mut h);
        let mut annotations: Vec<_> = m
            .annotations
            .iter()
            .filter(|(k, _)| !k.starts_with(WARNING_PREFIX))
            .collect();
        annotations.sort_unstable();
        annotations.hash(&mut h);
    }
    h.finish()
}

#[derive(Debug)]
pub enum Outcome {
    Unchanged,
    Good {
        url: String,
        validators: Validators,
        api: Api,
    },
    Bad {
        url: String,
        validators: Validators,
        error: SpecError,
    },
    NoSpec(String),
}

fn label(r: &reqwest::Error) -> &'static str {
    if r.is_connect() {
        "connect_error"
    } else if r.is_timeout() {
        "timeout"
    } else {
        "error"
    }
}

/// Asks one upstream for its spec: the known URL conditionally first, else every candidate
/// in order until one serves a spec that parses.
pub async fn probe(
    fetcher: &Fetcher,
    metrics: &OpenapiMetrics,
    urls: &[String],
    known: Option<&Known>,
) -> Outcome {
    let parsed = |url: &str, validators: Validators, body: &[u8]| match spec::parse(body) {
        Ok(api) => Outcome::Good {
            url: url.into(),
            validators,
            api,
        },
        Err(error) => Outcome::Bad {
            url: url.into(),
            validators,
            error,
        },
    };
    if let Some((url, v)) = known {
        match fetcher.get(url, Some(v)).await {
            Ok(Fetched::NotModified) => {
                metrics.request("not_modified");
                return Outcome::Unchanged;
            }
            Ok(Fetched::Body(body, v)) => {
                metrics.request("ok");
                return parsed(url, v, &body);
            }
            Ok(Fetched::TooLarge(error)) => {
                metrics.request("too_large");
                return Outcome::Bad {
                    url: url.clone(),
                    validators: Validators::default(),
                    error,
                };
            }
            Ok(Fetched::Status(s)) => {
                metrics.request("status");
                debug!(url = %shown(url), status = %s, "the spec is gone from where it was; probing again");
            }
            Err(e) => {
                metrics.request(label(&e));
                return Outcome::NoSpec(format!("{}: {}", shown(url), e.without_url()));
            }
        }
    }
    let mut first_bad = None;
    let mut reasons = Vec::new();
    for url in urls {
        match fetcher.get(url, None).await {
            Ok(Fetched::Body(body, v)) => {
                metrics.request("ok");
                match parsed(url, v, &body) {
                    good @ Outcome::Good { .. } => return good,
                    bad => {
                        first_bad.get_or_insert(bad);
                    }
                }
            }
            Ok(Fetched::TooLarge(error)) => {
                metrics.request("too_large");
                first_bad.get_or_insert(Outcome::Bad {
                    url: url.clone(),
                    validators: Validators::default(),
                    error,
                });
            }
            Ok(Fetched::NotModified) | Ok(Fetched::Status(_)) => {
                metrics.request("status");
                reasons.push(format!("{}: no spec", shown(url)));
            }
            Err(e) => {
                metrics.request(label(&e));
                let connect = e.is_connect();
                reasons.push(format!("{}: {}", shown(url), e.without_url()));
                if connect {
                    // Nobody listens: the other paths would fail the same way.
                    break;
                }
            }
        }
    }
    first_bad.unwrap_or_else(|| Outcome::NoSpec(reasons.join("; ")))
}

pub async fn run(
    ctx: Context,
    cfg: Config,
    fetcher: Fetcher,
    metrics: OpenapiMetrics,
    mut view_rx: tokio::sync::watch::Receiver<Option<std::sync::Arc<StoreView>>>,
) -> anyhow::Result<()> {
    let selector = ctx.args.label_selector()?;
    let mut states: HashMap<UpKey, UpState> = HashMap::new();
    let mut parts: Partitions<UpKey> = Partitions::default();
    let owner = ctx
        .args
        .owner
        .clone()
        .unwrap_or_else(|| "discovery-openapi".into());
    let mut seeded = false;
    let mut warnings = Warnings::new(&owner);
    let mut client = ctx.client.clone();
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
        if !seeded {
            // After a restart, what an earlier run wrote is the last good set: a spec that is
            // bad or unreachable now must not delete it.
            seeded = true;
            for (k, fs) in seed(&view, &owner) {
                parts.set(k, fs);
            }
        }

        // Which upstreams, and where their specs may be.
        let now = Instant::now();
        let mut wanted = HashMap::new();
        for up in view.of_kind(Kind::Upstream) {
            let Some(m) = &up.metadata else { continue };
            if !cfg.selection.selects(up)
                || !ctx.args.namespace_selected(&m.namespace)
                || !selector.matches(&m.labels)
            {
                continue;
            }
            if let Some(urls) = candidate_urls(up, &view, &cfg.paths) {
                wanted.insert(
                    (m.namespace.clone(), m.name.clone()),
                    (urls, fingerprint(up)),
                );
            }
        }
        states.retain(|k, s| {
            let keep = wanted.get(k).is_some_and(|(urls, _)| *urls == s.urls);
            if !keep {
                metrics.clear_problem(k);
                metrics.set_stopped(k, false);
            }
            keep
        });
        parts.retain(|k| wanted.contains_key(k));
        for (k, (urls, fp)) in wanted {
            match states.entry(k) {
                Entry::Occupied(mut e) => {
                    let s = e.get_mut();
                    if s.fingerprint != fp {
                        s.fingerprint = fp;
                        // A changed Upstream may serve a spec now: ask at once, and start
                        // the backoff over.
                        if s.known.is_none() {
                            if s.due.is_none() {
                                info!(upstream = %format!("{}/{}", e.key().0, e.key().1), "the Upstream changed; probing it again");
                                metrics.set_stopped(e.key(), false);
                            }
                            let s = e.get_mut();
                            s.poll = PollInterval::new(cfg.interval, cfg.max_probe_interval);
                            s.due = Some(now);
                        }
                    }
                }
                Entry::Vacant(e) => {
                    e.insert(UpState {
                        urls,
                        known: None,
                        poll: PollInterval::new(cfg.interval, cfg.max_probe_interval),
                        due: Some(now),
                        problem: None,
                        fingerprint: fp,
                    });
                }
            }
        }

        // Probe the due ones, a bounded number at a time.
        let due: Vec<(UpKey, Vec<String>, Option<Known>)> = states
            .iter()
            .filter(|(_, s)| s.due.is_some_and(|t| t <= now))
            .map(|(k, s)| (k.clone(), s.urls.clone(), s.known.clone()))
            .collect();
        if !due.is_empty() {
            let probes = futures::stream::iter(due)
                .map(|(k, urls, known)| {
                    let (fetcher, metrics) = (&fetcher, &metrics);
                    async move {
                        let o = probe(fetcher, metrics, &urls, known.as_ref()).await;
                        (k, o)
                    }
                })
                .buffer_unordered(cfg.concurrency.max(1))
                .collect::<Vec<_>>();
            let outcomes = tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                o = probes => o,
            };
            let now = Instant::now();
            for (k, outcome) in outcomes {
                let Some(s) = states.get_mut(&k) else {
                    continue;
                };
                apply(&ctx, &metrics, &cfg, &mut parts, &k, s, outcome, now);
            }
        }

        let mut desired = parts.desired();
        dedupe_across_upstreams(&mut desired);
        annotate_problems(&mut desired, &states);
        metrics
            .upstreams_with_spec
            .set(states.values().filter(|s| s.known.is_some()).count() as i64);
        ctx.publisher.publish(desired);

        let problems: HashMap<UpKey, String> = states
            .iter()
            .filter_map(|(k, s)| Some((k.clone(), s.problem.clone()?)))
            .collect();
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            () = warnings.reconcile(&mut client, &view, &problems) => {}
        }

        let next = states.values().filter_map(|s| s.due).min();
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            _ = view_rx.changed() => {}
            _ = sleep => {}
        }
    }
}

/// The Functions `owner` wrote earlier, by upstream, reduced to what a Sync sends.
fn seed(view: &StoreView, owner: &str) -> HashMap<UpKey, Vec<proto::v1::Resource>> {
    let mut out: HashMap<UpKey, Vec<proto::v1::Resource>> = HashMap::new();
    for r in view.of_kind(Kind::Function) {
        let Some(m) = &r.metadata else { continue };
        let Some(upstream) = m.labels.get(UPSTREAM_LABEL) else {
            continue;
        };
        if m.owner != owner {
            continue;
        }
        let mut annotations = m.annotations.clone();
        annotations.remove(PROBLEM_ANNOTATION);
        out.entry((m.namespace.clone(), upstream.clone()))
            .or_default()
            .push(proto::v1::Resource {
                metadata: Some(proto::v1::Metadata {
                    name: m.name.clone(),
                    namespace: m.namespace.clone(),
                    labels: m.labels.clone(),
                    annotations,
                    ..Default::default()
                }),
                status: None,
                spec: r.spec.clone(),
            });
    }
    out
}

/// The Functions kept from an upstream's last good spec carry the problem with its current
/// one, so `glooctl get function` shows why they are not changing (discovery may not write
/// the Upstream itself, which it does not own).
fn annotate_problems(desired: &mut [proto::v1::Resource], states: &HashMap<UpKey, UpState>) {
    for r in desired {
        let Some(m) = r.metadata.as_mut() else {
            continue;
        };
        let Some(upstream) = m.labels.get(UPSTREAM_LABEL) else {
            continue;
        };
        let key = (m.namespace.clone(), upstream.clone());
        if let Some(problem) = states.get(&key).and_then(|s| s.problem.as_ref()) {
            m.annotations
                .insert(PROBLEM_ANNOTATION.into(), problem.clone());
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn apply(
    ctx: &Context,
    metrics: &OpenapiMetrics,
    cfg: &Config,
    parts: &mut Partitions<UpKey>,
    k: &UpKey,
    s: &mut UpState,
    outcome: Outcome,
    now: Instant,
) {
    let target = format!("{}/{}", k.0, k.1);
    match outcome {
        Outcome::Unchanged => {
            s.due = Some(now + cfg.interval);
        }
        Outcome::Good {
            url,
            validators,
            api,
        } => {
            let fs = functions(&api, &k.0, &k.1);
            if s.known.as_ref().map(|(u, _)| u) != Some(&url) || s.problem.is_some() {
                info!(upstream = %target, url = %shown(&url), flavour = %api.flavour, functions = fs.len(), "spec found");
            }
            parts.set(k.clone(), fs);
            s.known = Some((url, validators));
            s.problem = None;
            s.poll.observe(true);
            s.due = Some(now + cfg.interval);
            metrics.clear_problem(k);
            ctx.metrics.recovered(&target);
        }
        Outcome::Bad {
            url,
            validators,
            error,
        } => {
            let problem = format!("{}: {error}", shown(&url));
            if s.problem.as_ref() != Some(&problem) {
                warn!(upstream = %target, url = %shown(&url), %error, kept_functions = parts.contains(k), "bad spec; keeping the Functions of the last good one");
            }
            ctx.metrics.error(&format!("spec_{}", error.kind()));
            metrics.set_problem(k, error.kind());
            s.known = Some((url, validators));
            s.problem = Some(problem);
            s.due = Some(now + cfg.interval);
        }
        Outcome::NoSpec(reason) => {
            // This probe came after a wait of --max-probe-interval: it was the last.
            let last = s.known.is_none() && s.poll.current() >= cfg.max_probe_interval;
            let delay = s.poll.observe(false);
            if s.known.is_some() {
                warn!(upstream = %target, %reason, "the spec is no longer served; keeping its Functions");
            } else if last {
                info!(upstream = %target, %reason, "no spec after backing off to --max-probe-interval; not probing again until the Upstream changes or the service restarts");
            } else {
                debug!(upstream = %target, %reason, next_in_s = delay.as_secs_f64(), "no spec");
            }
            s.known = None;
            if last {
                s.due = None;
                metrics.set_stopped(k, true);
            } else {
                s.due = Some(now + delay);
            }
            ctx.metrics.backing_off(&target, delay);
        }
    }
}
