//! Route convergence through a real, release-built gloo-core and a real Envoy 1.40 over
//! state-of-the-world ADS. Run with `bash bench/run-gateway.sh` (it builds gloo-core first).
//!
//! One Gateway, four test backends (each a static Upstream). New routes are added one at a
//! time, each as its own VirtualService with its own domain (`new-<i>.bench.test`, one prefix
//! `/` route to a backend), so each addition is one Apply and one new virtual host in the one
//! route configuration (or, with scoped routes, one new scope and route configuration). Per
//! route:
//!
//! ```text
//!  prober thread: GET / (Host: new-<i>) ─ 404, 404, ... ──────────────── 200  (kept-alive HTTP/1.1,
//!  bench:                  first 404 seen ─► Apply ─► answer                    no pause between GETs)
//!                                                       └──── measured ───┘
//! ```
//!
//! The figure is the time from Apply's answer to the first 200 through Envoy. It includes
//! gloo-core's translation and push, Envoy applying the RDS update, and the prober's next round
//! trip. Two phases, each with a fresh gloo-core and Envoy:
//!
//! 1. quiet: only the new routes exist;
//! 2. churn: 5,000 other routes exist first (500 VirtualServices x 10 prefix routes, own domains
//!    `churn-<j>.bench.test`), and a background task re-Applies one of those VirtualServices at a
//!    steady rate (a new `x-churn` response header value on its first route: a real change, so a
//!    translation and an RDS push each), round-robin, while the new routes are added.
//!
//! Each phase runs twice by default: with the Gateway as it comes (`quiet`, `churn`:
//! `scopedRoutes` unset, so scoped routes from the 100th VirtualService on, a RouteConfiguration
//! per VirtualService picked by host, so a churned VirtualService makes Envoy rebuild its 10
//! routes, not all of them), and with `scopedRoutes: false` (`quiet-one`, `churn-one`: one
//! RouteConfiguration for the whole Gateway). `quiet-scoped` and `churn-scoped` set
//! `scopedRoutes: true` (scoped from the first VirtualService). The `-one` phases are for
//! comparison: a miss there is reported but does not fail the bench (the target is claimed for
//! the Gateway as it comes, not for one that opts out of scoped routes).
//!
//! Env: CONVERGENCE_ROUTES (default 1000), CONVERGENCE_CHURN_VS (500), CONVERGENCE_CHURN_ROUTES_PER_VS
//! (10), CONVERGENCE_CHURN_RATE (Applies per second, 20), CONVERGENCE_PHASES
//! (`quiet,churn,quiet-one,churn-one`), CONVERGENCE_ADS (`delta` for incremental ADS; state of
//! the world by default), CONVERGENCE_POLL_PAUSE_US (pause between the prober's GETs, default 0), CONVERGENCE_DUMP (a
//! file to write Envoy's /config_dump to once the churned routes are served).
//! Progress goes to stderr, the markdown report to stdout; exit code 1 when a target is missed.
mod support;

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use e2e::fixtures::resource;
use e2e::{
    envoy::{Envoy, Proxy},
    http::Backend,
    Client, Core, ADMIN_TOKEN,
};
use proto::v1::{ApplyRequest, Kind, Resource};
use serde_json::json;
use support::{ms, percentile, sorted, thousands, verdict, Prober};

const P99_TARGET: Duration = Duration::from_millis(50);
const BACKENDS: usize = 4;
/// Routes added (and measured the same way) before the measured ones, to warm every path.
const WARMUP_ROUTES: usize = 5;
/// Longest wait for one route to answer 200 before the run is abandoned.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

struct Config {
    routes: usize,
    churn_vs: usize,
    churn_routes_per_vs: usize,
    churn_rate: usize,
    phases: Vec<String>,
}

impl Config {
    fn from_env() -> Config {
        Config {
            routes: support::env_count("CONVERGENCE_ROUTES", 1000),
            churn_vs: support::env_count("CONVERGENCE_CHURN_VS", 500),
            churn_routes_per_vs: support::env_count("CONVERGENCE_CHURN_ROUTES_PER_VS", 10),
            churn_rate: support::env_count("CONVERGENCE_CHURN_RATE", 20),
            phases: std::env::var("CONVERGENCE_PHASES")
                .unwrap_or_else(|_| "quiet,churn,quiet-one,churn-one".into())
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }
}

/// Whether Envoy uses incremental (delta) ADS: CONVERGENCE_ADS=delta; state of the world by
/// default, as `deploy/`'s bootstrap does.
fn delta_ads() -> bool {
    std::env::var("CONVERGENCE_ADS").is_ok_and(|v| v == "delta")
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cfg = Config::from_env();
    let mut results = Vec::new();
    for phase in &cfg.phases {
        let (churn, mode) = match phase.split_once('-') {
            None => (phase.as_str(), Mode::Unset),
            Some((c, "one")) => (c, Mode::One),
            Some((c, "scoped")) => (c, Mode::Scoped),
            Some(_) => (phase.as_str(), Mode::Unset),
        };
        let with_churn = match churn {
            "quiet" => false,
            "churn" => true,
            _ => panic!("unknown phase {phase:?} (quiet or churn, alone or with -one or -scoped)"),
        };
        let result = runtime.block_on(phase_run(&cfg, with_churn, mode));
        results.push(result);
    }
    println!("{}", markdown(&cfg, &results));
    if results.iter().filter(|p| p.counts()).all(Phase::pass) {
        ExitCode::SUCCESS
    } else {
        eprintln!("bench: at least one target was missed");
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway under test

struct Gateway {
    core: Core,
    envoy: Envoy,
    listen: SocketAddr,
    client: Client,
    _backends: Vec<Backend>,
}

/// The Gateway's `scopedRoutes`.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Unset: scoped routes once it serves 100 VirtualServices.
    Unset,
    /// `false`: one RouteConfiguration.
    One,
    /// `true`: scoped routes.
    Scoped,
}

impl Gateway {
    async fn start(mode: Mode) -> Gateway {
        let Proxy {
            core,
            envoy,
            listen,
            mut client,
        } = Proxy::start(delta_ads()).await;
        if mode != Mode::Unset {
            apply(
                &mut client,
                resource(
                    Kind::Gateway,
                    "gw",
                    json!({"bindAddress": "127.0.0.1", "bindPort": listen.port(),
                           "scopedRoutes": mode == Mode::Scoped}),
                ),
            )
            .await;
        }
        let mut backends = Vec::new();
        for i in 0..BACKENDS {
            let b = Backend::start(&format!("b{i}")).await;
            apply(
                &mut client,
                resource(
                    Kind::Upstream,
                    &format!("b{i}"),
                    json!({"static": {"hosts": [{"addr": "127.0.0.1", "port": b.addr.port()}]}}),
                ),
            )
            .await;
            backends.push(b);
        }
        let gw = Gateway {
            core,
            envoy,
            listen,
            client,
            _backends: backends,
        };
        // The listener is up when Envoy answers at all (404: no routes yet).
        gw.wait_status("any.bench.test", "/", 404, "Envoy's listener to come up")
            .await;
        gw
    }

    /// Waits until a GET with `host` answers `status`.
    async fn wait_status(&self, host: &str, path: &str, status: u16, what: &str) {
        let (listen, host, path) = (self.listen, host.to_string(), path.to_string());
        let ok = tokio::task::spawn_blocking(move || {
            let mut p = Prober::new(listen, &host, &path);
            let deadline = Instant::now() + ROUTE_TIMEOUT;
            while Instant::now() < deadline {
                if p.status() == Some(status) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })
        .await
        .unwrap();
        if !ok {
            self.fail(&format!("waiting for {what}"));
        }
    }

    fn fail(&self, what: &str) -> ! {
        let tail = |s: String| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        panic!(
            "{what}\ngloo-core log (tail):\n{}\nEnvoy log (tail):\n{}",
            tail(self.core.log()),
            tail(self.envoy.log())
        );
    }
}

async fn apply(c: &mut Client, r: Resource) {
    c.apply(ApplyRequest {
        resource: Some(r),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("apply: {e}"));
}

fn to(upstream: &str) -> serde_json::Value {
    json!({"single": {"upstream": {"name": upstream}}})
}

fn new_route(i: usize) -> Resource {
    resource(
        Kind::VirtualService,
        &format!("new-{i:05}"),
        json!({
            "domains": [format!("new-{i}.bench.test")],
            "routes": [{"matchers": [{"prefix": "/"}], "routeAction": to(&format!("b{}", i % BACKENDS))}],
        }),
    )
}

/// A churned VirtualService: `routes` prefix routes, the first carrying version `n` of a
/// response header.
fn churn_vs(j: usize, routes: usize, n: usize) -> Resource {
    let routes: Vec<serde_json::Value> = (0..routes)
        .map(|k| {
            let mut r = json!({
                "name": format!("r{k}"),
                "matchers": [{"prefix": format!("/r{k}")}],
                "routeAction": to(&format!("b{}", (j + k) % BACKENDS)),
            });
            if k == 0 {
                r["options"] =
                    json!({"headers": {"responseHeadersToAdd": {"x-churn": n.to_string()}}});
            }
            r
        })
        .collect();
    resource(
        Kind::VirtualService,
        &format!("churn-{j:04}"),
        json!({"domains": [format!("churn-{j}.bench.test")], "routes": routes}),
    )
}

// ---------------------------------------------------------------------------------------------
// One phase

struct Phase {
    /// The Gateway's `scopedRoutes`.
    mode: Mode,
    churn: Option<Churn>,
    /// First 200 − Apply's answer, clamped at 0, per measured route.
    latencies: Vec<Duration>,
    /// Routes whose first 200 came before Apply's answer reached the bench.
    early: usize,
    /// Apply round trips of the measured routes.
    apply_rtt: Vec<Duration>,
    /// 404s seen per route before its 200 (how fast the prober polled).
    not_found: Vec<usize>,
    /// Requests per second of the prober, over all measured routes.
    probe_rate: f64,
    /// gloo-core's own counters over the measured routes (churn included).
    server: ServerCounters,
    /// Envoy's own time to apply one route configuration (its `rds.*.update_duration`
    /// histogram, over the whole phase): p50 and p99, in ms.
    envoy_rds: Option<(f64, f64)>,
}

/// Envoy's `update_duration` histograms of its RDS subscriptions, cumulative over the Envoy's
/// life (p50 ms, p99 ms; with scoped routes, the highest of the route configurations' own).
/// Envoy folds histogram samples into /stats at its stats flush (every 5 s), so the last
/// seconds of a phase may be missing.
fn envoy_rds_update(envoy: &Envoy) -> Option<(f64, f64)> {
    let body = e2e::http::get(envoy.admin, "/stats?filter=rds.*update_duration")?.body;
    // `name: P0(interval,cumulative) P25(...) ... P99(...) P99.5(...) P99.9(...) P100(...)`
    let quantile = |line: &str, q: &str| -> Option<f64> {
        let rest = line.split(&format!(" P{q}(")).nth(1)?;
        rest.split(')').next()?.split(',').nth(1)?.parse().ok()
    };
    body.lines()
        .filter(|l| l.contains("update_duration"))
        .filter_map(|l| Some((quantile(l, "50")?, quantile(l, "99")?)))
        .reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)))
}

/// Counters of gloo-core's own `/metrics`, to split the figure into server-side parts.
#[derive(Clone, Copy, Default)]
struct ServerCounters {
    apply_seconds: f64,
    applies: f64,
    pass_seconds: f64,
    passes: f64,
}

impl ServerCounters {
    async fn read(core: &Core) -> ServerCounters {
        let m = |s: &'static str| async move { support::metric(core, s).await.unwrap_or(0.0) };
        ServerCounters {
            apply_seconds: m("gloo_storage_call_duration_seconds_sum{method=\"apply\"}").await,
            applies: m("gloo_storage_call_duration_seconds_count{method=\"apply\"}").await,
            pass_seconds: m("gloo_translator_pass_duration_seconds_sum").await,
            passes: m("gloo_translator_pass_duration_seconds_count").await,
        }
    }

    fn since(self, before: ServerCounters) -> ServerCounters {
        ServerCounters {
            apply_seconds: self.apply_seconds - before.apply_seconds,
            applies: self.applies - before.applies,
            pass_seconds: self.pass_seconds - before.pass_seconds,
            passes: self.passes - before.passes,
        }
    }
}

struct Churn {
    vs: usize,
    routes: usize,
    target_rate: usize,
    applies: usize,
    elapsed: Duration,
    apply_rtt: Vec<Duration>,
    setup: Duration,
}

impl Phase {
    fn pass(&self) -> bool {
        percentile(&sorted(self.latencies.clone()), 99.0) < P99_TARGET
    }

    /// Whether the target is claimed for this phase: for the Gateway as it comes and with
    /// scoped routes asked for, not for one that opts out of them (`scopedRoutes: false`), run
    /// for comparison (Envoy rebuilds its one RouteConfiguration whole on every change).
    fn counts(&self) -> bool {
        self.mode != Mode::One
    }

    fn verdict(&self) -> &'static str {
        match (self.pass(), self.counts()) {
            (true, _) => verdict(true),
            (false, true) => verdict(false),
            (false, false) => "miss (comparison, not a target)",
        }
    }
}

/// What the prober saw of one route.
struct Probe {
    first_200: Instant,
    not_found: usize,
    requests: usize,
    started: Instant,
}

/// A pause between the prober's GETs (CONVERGENCE_POLL_PAUSE_US, default 0: a tight loop),
/// to tell how much the prober's own load on the 2 cores weighs in the figure.
fn poll_pause_us() -> u64 {
    std::env::var("CONVERGENCE_POLL_PAUSE_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Polls `host` until it answers 200; `saw_404` fires at the first 404. Fails on a 200 before
/// any 404 (the route existed before it was added) or after `ROUTE_TIMEOUT`.
fn probe(
    listen: SocketAddr,
    host: String,
    saw_404: tokio::sync::oneshot::Sender<()>,
) -> Result<Probe, String> {
    let mut p = Prober::new(listen, &host, "/");
    let started = Instant::now();
    let pause = Duration::from_micros(poll_pause_us());
    let mut saw_404 = Some(saw_404);
    let (mut not_found, mut requests) = (0, 0);
    while started.elapsed() < ROUTE_TIMEOUT {
        let status = p.status();
        let at = Instant::now();
        requests += 1;
        match status {
            Some(404) => {
                not_found += 1;
                if let Some(tx) = saw_404.take() {
                    let _ = tx.send(());
                }
            }
            Some(200) if saw_404.is_none() => {
                return Ok(Probe {
                    first_200: at,
                    not_found,
                    requests,
                    started,
                })
            }
            Some(200) => return Err(format!("{host} answered 200 before it was added")),
            _ => {}
        }
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    Err(format!(
        "{host}: no 200 after {ROUTE_TIMEOUT:?} ({not_found} 404s)"
    ))
}

async fn phase_run(cfg: &Config, with_churn: bool, mode: Mode) -> Phase {
    let name = match (with_churn, mode) {
        (false, Mode::Unset) => "quiet",
        (true, Mode::Unset) => "churn",
        (false, Mode::One) => "quiet-one",
        (true, Mode::One) => "churn-one",
        (false, Mode::Scoped) => "quiet-scoped",
        (true, Mode::Scoped) => "churn-scoped",
    };
    let mut gw = Gateway::start(mode).await;

    // The churned set, created and served before anything is measured.
    let mut churn_setup = Duration::ZERO;
    if with_churn {
        let started = Instant::now();
        for j in 0..cfg.churn_vs {
            apply(&mut gw.client, churn_vs(j, cfg.churn_routes_per_vs, 0)).await;
        }
        let last = cfg.churn_vs - 1;
        gw.wait_status(
            &format!("churn-{last}.bench.test"),
            &format!("/r{}", cfg.churn_routes_per_vs - 1),
            200,
            "the churned routes to be served",
        )
        .await;
        churn_setup = started.elapsed();
        if let Ok(f) = std::env::var("CONVERGENCE_DUMP") {
            std::fs::write(f, gw.envoy.config_dump()).unwrap();
        }
        eprintln!(
            "bench[{name}]: {} routes in {} VirtualServices served after {}",
            cfg.churn_vs * cfg.churn_routes_per_vs,
            cfg.churn_vs,
            ms(churn_setup)
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let churner = with_churn.then(|| {
        let stop = stop.clone();
        let (vs, routes, rate) = (cfg.churn_vs, cfg.churn_routes_per_vs, cfg.churn_rate);
        let options = gw.core.options(ADMIN_TOKEN);
        tokio::spawn(async move {
            let mut client = options.connect().await.expect("churn client");
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (started, mut n, mut rtt) = (Instant::now(), 0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let t = Instant::now();
                apply(&mut client, churn_vs(n % vs, routes, n)).await;
                rtt.push(t.elapsed());
            }
            (n, started.elapsed(), rtt)
        })
    });

    let mut phase = Phase {
        mode,
        churn: None,
        latencies: Vec::new(),
        early: 0,
        apply_rtt: Vec::new(),
        not_found: Vec::new(),
        probe_rate: 0.0,
        server: ServerCounters::default(),
        envoy_rds: None,
    };
    let server_before = ServerCounters::read(&gw.core).await;
    let (mut requests, mut probing) = (0usize, Duration::ZERO);
    let total = WARMUP_ROUTES + cfg.routes;
    let mut next_progress = 100;
    for i in 0..total {
        let (tx, saw_404) = tokio::sync::oneshot::channel();
        let (listen, host) = (gw.listen, format!("new-{i}.bench.test"));
        let prober = std::thread::spawn(move || probe(listen, host, tx));
        if saw_404.await.is_err() {
            let e = prober.join().unwrap().err().unwrap_or_default();
            gw.fail(&format!("route {i}: {e}"));
        }
        let sent = Instant::now();
        apply(&mut gw.client, new_route(i)).await;
        let answered = Instant::now();
        let seen = tokio::task::spawn_blocking(move || prober.join().unwrap())
            .await
            .unwrap();
        let seen = seen.unwrap_or_else(|e| gw.fail(&format!("route {i}: {e}")));
        if seen.first_200 < sent {
            gw.fail(&format!("route {i} answered 200 before its Apply was sent"));
        }
        if i < WARMUP_ROUTES {
            continue;
        }
        if seen.first_200 < answered {
            phase.early += 1;
        }
        phase
            .latencies
            .push(seen.first_200.saturating_duration_since(answered));
        phase.apply_rtt.push(answered - sent);
        phase.not_found.push(seen.not_found);
        requests += seen.requests;
        probing += seen.first_200 - seen.started;
        if i + 1 - WARMUP_ROUTES == next_progress {
            next_progress += 100;
            let so_far = sorted(phase.latencies.clone());
            eprintln!(
                "bench[{name}]: {}/{} routes, p50 {} p99 {} max {}",
                i + 1 - WARMUP_ROUTES,
                cfg.routes,
                ms(percentile(&so_far, 50.0)),
                ms(percentile(&so_far, 99.0)),
                ms(*so_far.last().unwrap())
            );
        }
    }
    phase.probe_rate = requests as f64 / probing.as_secs_f64().max(1e-9);
    phase.server = ServerCounters::read(&gw.core).await.since(server_before);
    phase.envoy_rds = envoy_rds_update(&gw.envoy);

    if let Some(churner) = churner {
        stop.store(true, Ordering::Relaxed);
        let (applies, elapsed, apply_rtt) = churner.await.expect("churn task");
        // The churn really reached Envoy: the last value written is served.
        let j = applies % cfg.churn_vs;
        let (listen, host) = (gw.listen, format!("churn-{j}.bench.test"));
        let want = applies.to_string();
        let served = tokio::task::spawn_blocking(move || {
            let mut p = Prober::new(listen, &host, "/r0");
            let deadline = Instant::now() + ROUTE_TIMEOUT;
            while Instant::now() < deadline {
                if let Some((200, headers)) = p.get() {
                    if headers.iter().any(|(k, v)| k == "x-churn" && *v == want) {
                        return true;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })
        .await
        .unwrap();
        if !served {
            gw.fail("the last churned change never reached Envoy");
        }
        phase.churn = Some(Churn {
            vs: cfg.churn_vs,
            routes: cfg.churn_vs * cfg.churn_routes_per_vs,
            target_rate: cfg.churn_rate,
            applies,
            elapsed,
            apply_rtt,
            setup: churn_setup,
        });
    }
    phase
}

// ---------------------------------------------------------------------------------------------
// Report

fn markdown(cfg: &Config, phases: &[Phase]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "### Route convergence: Apply answered → first 200 through Envoy ({} ADS)\n\n\
         {} new routes per phase, added one at a time, each its own VirtualService with its own \
         domain; {WARMUP_ROUTES} warm-up routes before them are not counted.\n\n",
        if delta_ads() { "delta" } else { "SotW" },
        thousands(cfg.routes)
    ));
    out.push_str(
        "| phase | routes | p50 | p99 | max | target (p99) | result | Apply RTT p50 / p99 | \
         200 before Apply's answer | prober GETs/s | gloo-core: Apply mean (server) | \
         gloo-core: passes, mean pass | Envoy: RDS apply p50 / p99 |\n\
         |---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in phases {
        let l = sorted(p.latencies.clone());
        let rtt = sorted(p.apply_rtt.clone());
        let mut phase = match &p.churn {
            None => "quiet".to_string(),
            Some(c) => format!(
                "churn: {} other routes, {:.1} Applies/s",
                thousands(c.routes),
                c.applies as f64 / c.elapsed.as_secs_f64()
            ),
        };
        phase.push_str(match p.mode {
            Mode::Unset => ", scopedRoutes unset",
            Mode::One => ", scopedRoutes: false",
            Mode::Scoped => ", scopedRoutes: true",
        });
        let sv = &p.server;
        let mean = |sum: f64, n: f64| ms(Duration::from_secs_f64(sum / n.max(1.0)));
        out.push_str(&format!(
            "| {phase} | {} | {} | {} | {} | < {} | {} | {} / {} | {} | {:.0} | {} | {:.0}, {} | {} |\n",
            thousands(l.len()),
            ms(percentile(&l, 50.0)),
            ms(percentile(&l, 99.0)),
            ms(*l.last().unwrap()),
            ms(P99_TARGET),
            p.verdict(),
            ms(percentile(&rtt, 50.0)),
            ms(percentile(&rtt, 99.0)),
            p.early,
            p.probe_rate,
            mean(sv.apply_seconds, sv.applies),
            sv.passes,
            mean(sv.pass_seconds, sv.passes),
            p.envoy_rds.map_or("?".into(), |(p50, p99)| {
                // Envoy's histograms are in milliseconds; shown rounded like the other columns.
                let of = |v: f64| {
                    Duration::try_from_secs_f64(v / 1e3).map_or_else(|_| "?".to_string(), ms)
                };
                format!("{} / {}", of(p50), of(p99))
            }),
        ));
    }
    for p in phases {
        if let Some(c) = &p.churn {
            let rtt = sorted(c.apply_rtt.clone());
            out.push_str(&format!(
                "\nChurn: {} VirtualServices x {} routes ({} routes, created and served in {}), \
                 one VirtualService re-Applied every {} (target {} Applies/s, achieved {:.1}/s, \
                 {} Applies in {}; churn Apply RTT p50 {}, p99 {}), each a changed response \
                 header on its first route, round-robin. The last churned value was checked to \
                 be served by Envoy.\n",
                thousands(c.vs),
                c.routes / c.vs,
                thousands(c.routes),
                ms(c.setup),
                ms(Duration::from_secs_f64(1.0 / c.target_rate as f64)),
                c.target_rate,
                c.applies as f64 / c.elapsed.as_secs_f64(),
                thousands(c.applies),
                ms(c.elapsed),
                ms(percentile(&rtt, 50.0)),
                ms(percentile(&rtt, 99.0)),
            ));
        }
    }
    out
}
