//! gloo-core's memory with a large configuration, and how long loading it and its first full
//! translation take. Runs a real, release-built gloo-core: `bash bench/run-gateway.sh`.
//!
//! Loaded through the storage API, as the real writers would:
//! - one Gateway (Apply, admin token);
//! - 10,000 kube Upstreams and 10,000 Endpoints objects of 5 addresses each (50,000 endpoints),
//!   in one Sync with the discovery token, as discovery-k8s would;
//! - 10,000 routes: 1,000 VirtualServices x 10 prefix routes, each route to its own Upstream,
//!   each VirtualService its own domain, in one Sync with the admin token (owner `bench-routes`).
//!
//! A simulated Envoy (one SotW ADS stream: CDS, LDS and SRDS wildcard, EDS for every cluster,
//! RDS for every route configuration the Gateway's scopes name, ACKing each response; with 1,000
//! VirtualServices the Gateway, which leaves `scopedRoutes` unset, is served with scoped routes:
//! a RouteConfiguration per VirtualService) is connected before loading. It
//! tells when the first snapshot holding everything was published, and it keeps gloo-core in
//! the state of serving one Envoy the whole configuration when its memory is read.
//!
//! "Settled" means `gloo_translator_passes_total` and `gloo_translator_status_writes_total`
//! have not moved for 2 s (statuses are written after each pass); `e2e::settle` confirms every
//! object has its status afterwards (after the memory is read: its Lists of every object would
//! raise the peak). Memory is VmRSS and VmHWM (peak) from /proc/<pid>/status.
//!
//! Env: MEMORY_UPSTREAMS (10000), MEMORY_ENDPOINTS_PER_UPSTREAM (5), MEMORY_ROUTES_PER_VS (10),
//! MEMORY_PROFILE_WAIT_S (seconds to wait before loading, to attach a profiler; default 0).
//! The markdown report goes to stdout; exit code 1 when the target is missed.
mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    process::ExitCode,
    time::{Duration, Instant},
};

use e2e::fixtures::resource;
use e2e::{Core, ADMIN_TOKEN, DISCOVERY_OWNER, DISCOVERY_TOKEN};
use envoy_types::pb::envoy::{
    config::{
        cluster::v3::Cluster,
        endpoint::v3::ClusterLoadAssignment,
        route::v3::{RouteConfiguration, ScopedRouteConfiguration},
    },
    service::discovery::v3::DiscoveryResponse,
};
use gloo_core::{
    translate::names,
    xds::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE},
};
use prost::Message;
use proto::v1::{ApplyRequest, Kind, Resource, SyncRequest};
use serde_json::json;
use support::{mib, ms, proc_status_kib, secs, thousands, verdict};
use tokio::sync::watch;

const RSS_TARGET_KIB: u64 = 100 * 1024;
const QUIET: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(300);
const ROUTES_OWNER: &str = "bench-routes";

struct Config {
    upstreams: usize,
    endpoints_per_upstream: usize,
    routes_per_vs: usize,
}

impl Config {
    fn from_env() -> Config {
        Config {
            upstreams: support::env_count("MEMORY_UPSTREAMS", 10_000),
            endpoints_per_upstream: support::env_count("MEMORY_ENDPOINTS_PER_UPSTREAM", 5),
            routes_per_vs: support::env_count("MEMORY_ROUTES_PER_VS", 10),
        }
    }

    fn virtual_services(&self) -> usize {
        self.upstreams.div_ceil(self.routes_per_vs)
    }
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cfg = Config::from_env();
    let report = runtime.block_on(run(&cfg));
    println!("{}", report.markdown(&cfg));
    if report.pass() {
        ExitCode::SUCCESS
    } else {
        eprintln!("bench: the memory target was missed");
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------------------------
// The configuration

fn upstream_name(i: usize) -> String {
    format!("up-{i:05}")
}

fn discovered(cfg: &Config) -> Vec<Resource> {
    let mut out = Vec::with_capacity(2 * cfg.upstreams);
    for i in 0..cfg.upstreams {
        let name = upstream_name(i);
        out.push(resource(
            Kind::Upstream,
            &name,
            json!({"kube": {"serviceName": format!("svc-{i}"), "serviceNamespace": "default", "servicePort": 8080}}),
        ));
        let endpoints: Vec<serde_json::Value> = (0..cfg.endpoints_per_upstream)
            .map(|k| {
                let n = i * cfg.endpoints_per_upstream + k;
                json!({"address": format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255), "port": 8080})
            })
            .collect();
        out.push(resource(
            Kind::Endpoints,
            &name,
            json!({"upstream": name, "endpoints": endpoints}),
        ));
    }
    out
}

fn virtual_services(cfg: &Config) -> Vec<Resource> {
    (0..cfg.virtual_services())
        .map(|j| {
            let routes: Vec<serde_json::Value> = (0..cfg.routes_per_vs)
                .map(|k| j * cfg.routes_per_vs + k)
                .filter(|i| *i < cfg.upstreams)
                .map(|i| {
                    json!({
                        "name": format!("r{i}"),
                        "matchers": [{"prefix": format!("/r{i}")}],
                        "routeAction": {"single": {"upstream": {"name": upstream_name(i)}}},
                    })
                })
                .collect();
            resource(
                Kind::VirtualService,
                &format!("vs-{j:05}"),
                json!({"domains": [format!("vs-{j}.bench.test")], "routes": routes}),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The simulated Envoy

/// What the simulated Envoy holds.
#[derive(Clone, Debug, Default)]
struct Held {
    clusters: usize,
    endpoints: usize,
    listeners: usize,
    scopes: usize,
    routes: usize,
}

/// One SotW ADS stream that behaves like Envoy: CDS, LDS and SRDS wildcard, EDS for the
/// clusters it was given, RDS for `route_config` and for every route configuration a scope
/// names (a Gateway serving 100 VirtualServices or more is served with scoped routes); ACKs
/// everything. Publishes what it holds.
fn simulated_envoy(core: &Core, route_config: String) -> watch::Receiver<Held> {
    let (tx, rx) = watch::channel(Held::default());
    let xds = core.xds;
    tokio::spawn(async move {
        let node = "bench-envoy";
        let channel = support::xds_channel(xds).await;
        let (requests, mut responses) = support::ads_stream(
            channel,
            vec![
                support::subscribe(node, CLUSTER, Vec::new()),
                support::subscribe(node, LISTENER, Vec::new()),
                support::subscribe(node, SCOPED_ROUTE, Vec::new()),
                support::subscribe(node, ROUTE, vec![route_config.clone()]),
            ],
        )
        .await;
        let mut held = Held::default();
        let mut eds_names: Vec<String> = Vec::new();
        let mut rds_names: Vec<String> = vec![route_config.clone()];
        // Routes per route configuration: an RDS response may hold only some of them.
        let mut routes_by_rc: BTreeMap<String, usize> = BTreeMap::new();
        while let Ok(Some(resp)) = responses.message().await {
            let names = match resp.type_url.as_str() {
                CLUSTER => {
                    let clusters = decode::<Cluster>(&resp);
                    held.clusters = clusters.len();
                    let wanted: BTreeSet<String> = clusters.into_iter().map(|c| c.name).collect();
                    let wanted: Vec<String> = wanted.into_iter().collect();
                    // ACK first, then (re)subscribe to the clusters' endpoints, as Envoy does.
                    let _ = requests.send(support::ack(&resp, Vec::new())).await;
                    if wanted != eds_names {
                        eds_names = wanted;
                        let _ = requests
                            .send(support::subscribe(node, ENDPOINT, eds_names.clone()))
                            .await;
                    }
                    let _ = tx.send(held.clone());
                    continue;
                }
                SCOPED_ROUTE => {
                    let scopes = decode::<ScopedRouteConfiguration>(&resp);
                    held.scopes = scopes.len();
                    let wanted: BTreeSet<String> = scopes
                        .into_iter()
                        .map(|s| s.route_configuration_name)
                        .chain([route_config.clone()])
                        .collect();
                    let wanted: Vec<String> = wanted.into_iter().collect();
                    let _ = requests.send(support::ack(&resp, Vec::new())).await;
                    if wanted != rds_names {
                        rds_names = wanted;
                        routes_by_rc.retain(|name, _| rds_names.binary_search(name).is_ok());
                        held.routes = routes_by_rc.values().sum();
                        let _ = requests
                            .send(support::subscribe(node, ROUTE, rds_names.clone()))
                            .await;
                    }
                    let _ = tx.send(held.clone());
                    continue;
                }
                ENDPOINT => {
                    held.endpoints = decode::<ClusterLoadAssignment>(&resp)
                        .iter()
                        .flat_map(|c| &c.endpoints)
                        .map(|l| l.lb_endpoints.len())
                        .sum();
                    eds_names.clone()
                }
                LISTENER => {
                    held.listeners = resp.resources.len();
                    Vec::new()
                }
                ROUTE => {
                    for rc in decode::<RouteConfiguration>(&resp) {
                        let n = rc.virtual_hosts.iter().map(|vh| vh.routes.len()).sum();
                        routes_by_rc.insert(rc.name, n);
                    }
                    held.routes = routes_by_rc.values().sum();
                    rds_names.clone()
                }
                _ => Vec::new(),
            };
            let _ = requests.send(support::ack(&resp, names)).await;
            let _ = tx.send(held.clone());
        }
    });
    rx
}

fn decode<M: Message + Default>(resp: &DiscoveryResponse) -> Vec<M> {
    resp.resources
        .iter()
        .map(|a| M::decode(a.value.as_slice()).expect("a well-formed resource"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The run

struct Report {
    baseline_rss_kib: u64,
    /// VmRSS right after each load step's answer (translation may still run).
    rss_after_discovered_kib: u64,
    rss_after_routes_kib: u64,
    /// At the end: anonymous (heap) and file-backed resident memory, from smaps_rollup.
    anon_kib: u64,
    file_kib: u64,
    rss_kib: u64,
    hwm_kib: u64,
    sync_discovered: Duration,
    sync_routes: Duration,
    /// From the start of loading until the simulated Envoy held every route and endpoint.
    first_full_snapshot: Duration,
    /// From the start of loading until the translator's last pass and status write.
    settled: Duration,
    passes: f64,
    status_writes: f64,
    held: Held,
    request_bytes: (usize, usize),
}

impl Report {
    fn pass(&self) -> bool {
        self.rss_kib < RSS_TARGET_KIB
    }

    fn markdown(&self, cfg: &Config) -> String {
        let mut out = String::from("### gloo-core memory with a large configuration\n\n");
        out.push_str(&format!(
            "{} kube Upstreams, {} Endpoints objects x {} addresses ({} endpoints), {} routes in \
             {} VirtualServices, one Gateway; one simulated Envoy (SotW ADS) holding all of it.\n\n",
            thousands(cfg.upstreams),
            thousands(cfg.upstreams),
            cfg.endpoints_per_upstream,
            thousands(cfg.upstreams * cfg.endpoints_per_upstream),
            thousands(cfg.upstreams),
            thousands(cfg.virtual_services()),
        ));
        out.push_str("| measure | value | target | result |\n|---|---:|---:|---|\n");
        out.push_str(&format!(
            "| RSS (VmRSS) after settling | {} | < {} | {} |\n",
            mib(self.rss_kib),
            mib(RSS_TARGET_KIB),
            verdict(self.pass())
        ));
        out.push_str(&format!(
            "| peak RSS (VmHWM) | {} | | |\n| RSS of the empty gloo-core before loading | {} | | |\n",
            mib(self.hwm_kib),
            mib(self.baseline_rss_kib)
        ));
        out.push_str(&format!(
            "| of which anonymous (heap) / file-backed | {} / {} | | |\n",
            mib(self.anon_kib),
            mib(self.file_kib)
        ));
        out.push_str(&format!(
            "| RSS when the Upstreams + Endpoints Sync answered / the VirtualServices Sync answered | {} / {} | | |\n",
            mib(self.rss_after_discovered_kib),
            mib(self.rss_after_routes_kib)
        ));
        out.push_str(&format!(
            "| Sync of Upstreams + Endpoints ({:.1} MiB request) | {} | | |\n",
            self.request_bytes.0 as f64 / 1048576.0,
            ms(self.sync_discovered)
        ));
        out.push_str(&format!(
            "| Sync of VirtualServices ({:.1} MiB request) | {} | | |\n",
            self.request_bytes.1 as f64 / 1048576.0,
            ms(self.sync_routes)
        ));
        out.push_str(&format!(
            "| loading + first full translation (start → Envoy holds everything) | {} | | |\n",
            secs(self.first_full_snapshot)
        ));
        out.push_str(&format!(
            "| loading + translation + statuses settled | {} | | |\n",
            secs(self.settled)
        ));
        out.push_str(&format!(
            "| translation passes / status writes | {:.0} / {:.0} | | |\n",
            self.passes, self.status_writes
        ));
        let h = &self.held;
        out.push_str(&format!(
            "| held by the simulated Envoy: clusters / endpoints / listeners / scopes / routes | {} / {} / {} / {} / {} | | |\n",
            thousands(h.clusters),
            thousands(h.endpoints),
            h.listeners,
            thousands(h.scopes),
            thousands(h.routes)
        ));
        out
    }
}

async fn run(cfg: &Config) -> Report {
    let core = Core::start();
    let pid = support::core_pid(&core).expect("the gloo-core process in /proc");
    let baseline_rss_kib = proc_status_kib(pid, "VmRSS").unwrap_or(0);
    // Time to attach a profiler to the idle gloo-core (e.g. `heaptrack -p <pid>`).
    let wait = support::env_count("MEMORY_PROFILE_WAIT_S", 0);
    if wait > 0 {
        eprintln!("bench: gloo-core is pid {pid}; loading in {wait} s");
        tokio::time::sleep(Duration::from_secs(wait as u64)).await;
    }
    let mut admin = support::connect(&core, ADMIN_TOKEN).await;
    let mut discovery = support::connect(&core, DISCOVERY_TOKEN).await;
    let gateway = resource(
        Kind::Gateway,
        "gw",
        json!({"bindAddress": "127.0.0.1", "bindPort": e2e::free_port()}),
    );
    let mut held = simulated_envoy(&core, names::route_config("default", "gw"));

    let discovered = SyncRequest {
        owner: DISCOVERY_OWNER.into(),
        kinds: vec![Kind::Upstream as i32, Kind::Endpoints as i32],
        resources: discovered(cfg),
        dry_run: false,
    };
    let routes = SyncRequest {
        owner: ROUTES_OWNER.into(),
        kinds: vec![Kind::VirtualService as i32],
        resources: virtual_services(cfg),
        dry_run: false,
    };
    let request_bytes = (discovered.encoded_len(), routes.encoded_len());

    let started = Instant::now();
    admin
        .apply(ApplyRequest {
            resource: Some(gateway),
            ..Default::default()
        })
        .await
        .expect("Apply of the Gateway");
    let t = Instant::now();
    let r = discovery
        .sync(discovered)
        .await
        .expect("Sync of Upstreams and Endpoints")
        .into_inner();
    let sync_discovered = t.elapsed();
    let rss_after_discovered_kib = proc_status_kib(pid, "VmRSS").unwrap_or(0);
    assert!(r.rejected.is_empty(), "rejected: {:?}", r.rejected.first());
    eprintln!(
        "bench: Upstreams + Endpoints synced in {}",
        ms(sync_discovered)
    );
    let t = Instant::now();
    let r = admin
        .sync(routes)
        .await
        .expect("Sync of VirtualServices")
        .into_inner();
    let sync_routes = t.elapsed();
    let rss_after_routes_kib = proc_status_kib(pid, "VmRSS").unwrap_or(0);
    assert!(r.rejected.is_empty(), "rejected: {:?}", r.rejected.first());
    eprintln!("bench: VirtualServices synced in {}", ms(sync_routes));

    // The first snapshot with everything, as the simulated Envoy receives it.
    let want_endpoints = cfg.upstreams * cfg.endpoints_per_upstream;
    let complete = tokio::time::timeout(TIMEOUT, async {
        held.wait_for(|h| {
            h.clusters == cfg.upstreams
                && h.routes == cfg.upstreams
                && h.endpoints == want_endpoints
        })
        .await
        .is_ok()
    })
    .await;
    if complete != Ok(true) {
        panic!(
            "the simulated Envoy never held everything: {:?}\ngloo-core log:\n{}",
            *held.borrow(),
            core.log()
        );
    }
    let first_full_snapshot = started.elapsed();
    eprintln!(
        "bench: the simulated Envoy holds everything after {}",
        ms(first_full_snapshot)
    );

    // Settled: no translation pass and no status write for QUIET.
    let series = [
        "gloo_translator_passes_total",
        "gloo_translator_status_writes_total",
    ];
    let mut last = (f64::NAN, f64::NAN);
    let mut last_change = Instant::now();
    while last_change.elapsed() < QUIET {
        assert!(started.elapsed() < TIMEOUT, "the translator never settled");
        let now = (
            support::metric(&core, series[0]).await.unwrap_or(f64::NAN),
            support::metric(&core, series[1]).await.unwrap_or(f64::NAN),
        );
        if now.0.is_nan() || now.1.is_nan() {
            panic!("/metrics has no {series:?}");
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settled = last_change - started;
    let rss_kib = proc_status_kib(pid, "VmRSS").expect("VmRSS");
    let hwm_kib = proc_status_kib(pid, "VmHWM").expect("VmHWM");
    let rollup = |field: &str| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    };
    let anon_kib = rollup("Anonymous").unwrap_or(0);
    let file_kib = rss_kib.saturating_sub(anon_kib);
    eprintln!(
        "bench: settled after {}; RSS {} (peak {})",
        ms(settled),
        mib(rss_kib),
        mib(hwm_kib)
    );
    // Every object has its status for its current generation.
    e2e::settle(&mut admin).await;
    let held = held.borrow().clone();
    Report {
        baseline_rss_kib,
        rss_after_discovered_kib,
        rss_after_routes_kib,
        anon_kib,
        file_kib,
        rss_kib,
        hwm_kib,
        sync_discovered,
        sync_routes,
        first_full_snapshot,
        settled,
        passes: last.0,
        status_writes: last.1,
        held,
        request_bytes,
    }
}
