//! discovery-gcf benchmarks (first pass; no targets yet):
//!
//! 1. Discovery: N functions served by the admin API test double (pages of 1,000, Google's
//!    largest), a real gloo-core and discovery-gcf: the time from starting discovery-gcf to all
//!    N Functions being stored, and how many listing requests that took.
//! 2. Translation: N GCF Functions on distinct hosts (one cluster each) with one route each,
//!    a full pass and an unchanged second pass (the function clusters are rebuilt every pass).
//!
//! Sizes: BENCH_GCF_SIZES (comma-separated, default 1000,3000,5000). Progress on stderr, the
//! markdown table on stdout.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

mod support;

use e2e::{
    discovery::Discovery,
    fixtures::resource,
    gcf::{function, GcfApi},
    Core, ADMIN_TOKEN, GCF_TOKEN,
};
use gloo_core::{
    resource::Key,
    translate::{Input, Translator},
};
use proto::v1::{ApplyRequest, Kind, ListRequest, Resource};
use serde_json::json;
use support::ms;

fn sizes() -> Vec<usize> {
    std::env::var("BENCH_GCF_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1000, 3000, 5000])
}

async fn discovery(n: usize) -> (Duration, u64, u64) {
    let api = GcfApi::start(1000, 3600);
    let fns: Vec<_> = (0..n)
        .map(|i| {
            let name = format!("fn-{i}");
            function(
                "bench",
                "us-central1",
                &name,
                "ACTIVE",
                &format!("https://{name}-abc123-uc.a.run.app"),
            )
        })
        .collect();
    api.set_functions(&fns);
    let core = Core::start();
    let mut c = core.client(ADMIN_TOKEN).await;
    for r in [
        resource(
            Kind::Secret,
            "gcp-sa",
            json!({"gcp": {"serviceAccountJson": api.key_json()}}),
        ),
        resource(
            Kind::Upstream,
            "gcp",
            json!({"gcp": {"project": "bench", "secretRef": {"name": "gcp-sa"}, "endpoint": api.url()}}),
        ),
    ] {
        c.apply(ApplyRequest {
            resource: Some(r),
            ..Default::default()
        })
        .await
        .expect("apply");
    }
    let start = Instant::now();
    let token_url = api.token_url();
    let d = Discovery::start(
        "discovery-gcf",
        &core,
        GCF_TOKEN,
        &["--interval", "30s", "--token-url", &token_url],
    );
    loop {
        let count = c
            .list(ListRequest {
                kind: Kind::Function as i32,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .items
            .len();
        if count == n {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{count}/{n} after 300 s:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = start.elapsed();
    (took, api.stat("list_requests"), api.stat("token_requests"))
}

fn object(name: &str, uid: u64, spec: serde_json::Value, kind: Kind) -> Resource {
    let mut r = resource(kind, name, spec);
    let m = r.metadata.as_mut().unwrap();
    m.uid = uid;
    m.generation = 1;
    r
}

fn translation(n: usize) -> (Duration, Duration, usize) {
    let mut objects = vec![
        object(
            "gcp",
            1,
            json!({"gcp": {"project": "bench"}}),
            Kind::Upstream,
        ),
        object(
            "gw",
            2,
            json!({"bindAddress": "127.0.0.1", "bindPort": 8080}),
            Kind::Gateway,
        ),
    ];
    let mut routes = Vec::new();
    for i in 0..n {
        let name = format!("fn-{i}");
        objects.push(object(
            &name,
            10 + i as u64,
            json!({"upstream": "gcp", "gcf": {"name": format!("projects/bench/locations/l/functions/{name}"),
                   "url": format!("https://{name}-abc123-uc.a.run.app")}}),
            Kind::Function,
        ));
        routes.push(json!({"matchers": [{"prefix": format!("/{name}")}],
            "routeAction": {"single": {"upstream": {"name": "gcp"}, "function": name}}}));
    }
    objects.push(object(
        "vs",
        3,
        json!({"routes": routes}),
        Kind::VirtualService,
    ));
    let input = Input {
        objects: objects
            .into_iter()
            .map(|r| (Key::of(&r).unwrap(), Arc::new(r)))
            .collect(),
    };
    let mut t = Translator::new();
    let start = Instant::now();
    let out = t.translate(&input);
    let full = start.elapsed();
    let clusters = out
        .snapshot
        .of_type(gloo_core::xds::CLUSTER)
        .map_or(0, |m| m.len());
    let start = Instant::now();
    let _ = t.translate(&input);
    (full, start.elapsed(), clusters)
}

#[tokio::main]
async fn main() {
    println!("| functions | discovery: start → all stored | listing requests | token requests | translate: full pass | translate: unchanged pass | clusters |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes() {
        eprintln!("gcf bench: {n} functions");
        let (took, lists, tokens) = discovery(n).await;
        let (full, again, clusters) = translation(n);
        println!(
            "| {n} | {} | {lists} | {tokens} | {} | {} | {clusters} |",
            ms(took),
            ms(full),
            ms(again)
        );
    }
}
