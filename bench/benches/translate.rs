//! Translator benchmarks: a full translation of N upstreams and N routes (N/10 VirtualServices
//! of 10 routes, one Gateway), and an incremental pass after one object changed, at two sizes
//! to show whether the incremental cost grows with the total; also a pass that adds one
//! VirtualService, which reshapes the gateway (what each route of the convergence bench is).
//! Single-threaded, in process.
//! Each size runs with the Gateway's one RouteConfiguration and with `scopedRoutes` (a
//! RouteConfiguration per VirtualService); TRANSLATE_GATEWAYS (`single,scoped`) picks.
//!
//! `cargo bench -p bench --bench translate` prints a markdown table.
use std::{sync::Arc, time::Instant};

use gloo_core::{
    resource::Key,
    translate::{Input, Translator},
};
use proto::v1::{resource::Spec, Metadata, Resource};
use serde_json::json;

fn object(name: &str, uid: u64, spec: Spec) -> Resource {
    Resource {
        metadata: Some(Metadata {
            name: name.into(),
            namespace: "default".into(),
            uid,
            generation: 1,
            ..Default::default()
        }),
        status: None,
        spec: Some(spec),
    }
}

fn upstream(i: usize) -> Resource {
    let spec = json!({"static": {"hosts": [{"addr": "10.0.0.1", "port": 1000 + i % 50000}]},
                      "connectTimeout": "2s"});
    object(
        &format!("us-{i}"),
        i as u64 + 1,
        Spec::Upstream(serde_json::from_value(spec).unwrap()),
    )
}

fn virtual_service(v: usize, n_upstreams: usize, version: usize) -> Resource {
    let routes: Vec<_> = (0..10)
        .map(|r| {
            let u = (v * 10 + r) % n_upstreams;
            json!({"name": format!("r{r}"),
                   "matchers": [{"prefix": format!("/svc-{v}/v{version}/r{r}"), "methods": ["GET"]}],
                   "routeAction": {"single": {"upstream": {"name": format!("us-{u}")}}},
                   "options": {"timeout": "5s"}})
        })
        .collect();
    let spec = json!({"domains": [format!("svc-{v}.example")], "routes": routes});
    object(
        &format!("vs-{v}"),
        1_000_000 + v as u64,
        Spec::VirtualService(serde_json::from_value(spec).unwrap()),
    )
}

fn input(n: usize, scoped: bool) -> Input {
    let mut objects: Vec<Resource> = (0..n).map(upstream).collect();
    objects.extend((0..n / 10).map(|v| virtual_service(v, n, 0)));
    let gw = json!({"bindAddress": "127.0.0.1", "bindPort": 8080, "scopedRoutes": scoped});
    objects.push(object(
        "gw",
        9_000_000,
        Spec::Gateway(serde_json::from_value(gw).unwrap()),
    ));
    Input {
        objects: objects
            .into_iter()
            .map(|r| (Key::of(&r).unwrap(), Arc::new(r)))
            .collect(),
    }
}

/// Puts a new version of an object into the input; returns the change to hand the translator.
fn put(input: &mut Input, mut r: Resource, generation: u64) -> (Key, Option<Arc<Resource>>) {
    r.metadata.as_mut().unwrap().generation = generation;
    let key = Key::of(&r).unwrap();
    let r = Arc::new(r);
    input.objects.insert(key.clone(), r.clone());
    (key, Some(r))
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// One incremental pass, in ms: a function of its own, so that a profiler can be told to look
/// at it alone (`valgrind --tool=callgrind --toggle-collect='translate::one_change'`).
#[inline(never)]
fn one_change(tr: &mut Translator, change: (Key, Option<Arc<Resource>>)) -> f64 {
    let t0 = Instant::now();
    std::hint::black_box(tr.apply([change]));
    ms(t0.elapsed())
}

struct Row {
    n: usize,
    scoped: bool,
    full: f64,
    full_min: f64,
    full_check: usize,
    vs_p50: f64,
    vs_p99: f64,
    vs_min: f64,
    us_p50: f64,
    us_min: f64,
    /// One new VirtualService (a new virtual host, so the gateways step runs as a whole).
    add_p50: f64,
    add_p99: f64,
    snapshot_clone: f64,
}

fn run(n: usize, scoped: bool) -> Row {
    let mut inp = input(n, scoped);
    // Full translation from scratch, 5 times (TRANSLATE_FULL_RUNS: say 1 under a profiler that
    // looks at the incremental passes).
    let runs = std::env::var("TRANSLATE_FULL_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5usize)
        .max(1);
    let mut full = Vec::new();
    let mut resources = 0;
    for _ in 0..runs {
        let mut tr = Translator::new();
        let t0 = Instant::now();
        let t = tr.replace(&inp);
        full.push(ms(t0.elapsed()));
        resources = t.snapshot.resources.values().map(|m| m.len()).sum();
        assert!(t
            .reports
            .values()
            .all(|r| r.state == proto::v1::status::State::Accepted));
    }
    // Incremental, driven by the changed key as the controller is: one VirtualService changes,
    // then one upstream changes.
    let mut tr = Translator::new();
    tr.replace(&inp);
    let mut vs_times = Vec::new();
    for i in 1..=50 {
        let v = (i * 7) % (n / 10);
        let change = put(&mut inp, virtual_service(v, n, i), 1 + i as u64);
        vs_times.push(one_change(&mut tr, change));
    }
    let mut us_times = Vec::new();
    for i in 1..=50 {
        let u = (i * 13) % n;
        let mut r = upstream(u);
        if let Some(Spec::Upstream(s)) = r.spec.as_mut() {
            s.use_http2 = i % 2 == 0;
        }
        let change = put(&mut inp, r, 100 + i as u64);
        us_times.push(one_change(&mut tr, change));
    }
    // New VirtualServices, each with its own domain: what a convergence probe adds.
    let mut add_times = Vec::new();
    for i in 0..50 {
        let change = put(&mut inp, virtual_service(n / 10 + i, n, 0), 1);
        add_times.push(one_change(&mut tr, change));
    }
    // What the controller pays before a pass: a snapshot of the store's map.
    let t0 = Instant::now();
    for _ in 0..10 {
        std::hint::black_box(inp.objects.clone());
    }
    let snapshot_clone = ms(t0.elapsed()) / 10.0;
    Row {
        n,
        scoped,
        full: percentile(&mut full, 0.5),
        full_min: percentile(&mut full, 0.0),
        vs_min: percentile(&mut vs_times, 0.0),
        us_min: percentile(&mut us_times, 0.0),
        full_check: resources,
        vs_p50: percentile(&mut vs_times.clone(), 0.5),
        vs_p99: percentile(&mut vs_times, 0.99),
        us_p50: percentile(&mut us_times, 0.5),
        add_p50: percentile(&mut add_times.clone(), 0.5),
        add_p99: percentile(&mut add_times, 0.99),
        snapshot_clone,
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("TRANSLATE_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000]);
    let gateways: Vec<bool> = std::env::var("TRANSLATE_GATEWAYS")
        .unwrap_or_else(|_| "single,scoped".into())
        .split(',')
        .map(|g| match g.trim() {
            "single" => false,
            "scoped" => true,
            other => panic!("TRANSLATE_GATEWAYS: unknown {other:?} (single, scoped)"),
        })
        .collect();
    // The minimum is the figure least inflated by other processes on a shared machine.
    println!("| upstreams / routes | Gateway | Envoy resources | full translation: median (min) | one VirtualService changed: p50 / p99 (min) | one Upstream changed: p50 (min) | one VirtualService added: p50 / p99 | input snapshot clone |");
    println!("|---|---|---|---|---|---|---|---|");
    for (&scoped, n) in gateways
        .iter()
        .flat_map(|g| sizes.iter().map(move |&n| (g, n)))
    {
        let r = run(n, scoped);
        println!(
            "| {} / {} | {} | {} | {:.1} ms ({:.1}) | {:.2} / {:.2} ms ({:.2}) | {:.2} ms ({:.2}) | {:.2} / {:.2} ms | {:.2} ms |",
            r.n,
            r.n,
            if r.scoped { "scopedRoutes" } else { "one RouteConfiguration" },
            r.full_check,
            r.full,
            r.full_min,
            r.vs_p50,
            r.vs_p99,
            r.vs_min,
            r.us_p50,
            r.us_min,
            r.add_p50,
            r.add_p99,
            r.snapshot_clone
        );
    }
    println!("\ntargets: full translation of 10,000 / 10,000 under 50 ms on one core; one change under 1 ms, not growing with the total");
}
