//! discovery-lambda against a moto account with many functions (see docs/benchmarks.md). Run
//! with `bash bench/run-lambda.sh`, which builds the release binaries first.
//!
//! 1. Listing: the bare paginated `ListFunctions` of the account, against discovery-lambda's
//!    listing of the same account (`FunctionVersion=ALL`, with and without one `ListAliases`
//!    per function), same SDK client, median of BENCH_LAMBDA_RUNS runs.
//! 2. First pass of the real binary: start → first Sync done (readyz), against a real gloo-core
//!    with a real Envoy connected.
//! 3. Unchanged passes: after two more listings of the unchanged account, gloo-core's store
//!    revision, discovery_writes_total and gloo_xds_responses_total must not have moved.
//!
//! Progress on stderr, the markdown table on stdout; exit code 1 when a target is missed.
//! BENCH_LAMBDA_FUNCTIONS (default 10,000) sets the account's size.
use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

mod support;

use discovery_lambda::{
    aws::{self, Filters},
    targets::{CredentialSource, StaticKeys, Target},
};
use e2e::{
    discovery::{metric_value, Discovery},
    envoy::Envoy,
    fixtures::resource,
    http_get,
    moto::Moto,
    Core, ADMIN_TOKEN, LAMBDA_TOKEN,
};
use proto::v1::{ApplyRequest, Kind};
use serde_json::json;
use support::{env_count, ms, secs, sorted, thousands, verdict};

const TARGET_RATIO: f64 = 1.2;

fn median(v: Vec<Duration>) -> Duration {
    let v = sorted(v);
    v[v.len() / 2]
}

fn core_metric(core: &Core, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, body) = http_get(core.admin, "/metrics").unwrap_or_default();
    metric_value(&body, name, labels)
}

/// Waits until gloo-core's revision has not moved for `quiet` (the reporter's status writes
/// after a big Sync have landed).
fn settle(core: &Core, quiet: Duration) -> f64 {
    let mut last = core_metric(core, "gloo_revision", &[]);
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = core_metric(core, "gloo_revision", &[]);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return now;
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let n = env_count("BENCH_LAMBDA_FUNCTIONS", 10_000);
    let runs = env_count("BENCH_LAMBDA_RUNS", 3);
    let moto = Moto::start();
    eprintln!("creating {n} functions in moto...");
    let t = Instant::now();
    moto.lambda(json!([{"op": "create", "name": "fn", "count": n}]));
    let create_time = t.elapsed();
    eprintln!("created in {}", secs(create_time));

    // 1. Listing, in process, with the same client.
    let target = Target {
        namespace: "default".into(),
        upstream: "aws".into(),
        region: "us-east-1".into(),
        endpoint: Some(moto.url()),
        credentials: CredentialSource::Static(StaticKeys {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            session_token: String::new(),
        }),
    };
    let http = aws::http_client();
    let client = aws::client(&target, &http).await.expect("client");
    let mut bare = Vec::new();
    let mut ours = Vec::new();
    let mut ours_aliases = Vec::new();
    for run in 0..runs {
        let t = Instant::now();
        let mut pages = client.list_functions().into_paginator().items().send();
        let mut count = 0;
        while let Some(f) = pages.next().await {
            f.expect("ListFunctions");
            count += 1;
        }
        assert_eq!(count, n);
        bare.push(t.elapsed());
        let t = Instant::now();
        let no_aliases = Filters {
            aliases: false,
            ..Default::default()
        };
        let c = aws::list(&client, &no_aliases, 4).await.expect("list");
        assert_eq!(c.len(), n);
        ours.push(t.elapsed());
        let t = Instant::now();
        let with_aliases = Filters {
            aliases: true,
            ..Default::default()
        };
        let c = aws::list(&client, &with_aliases, 8).await.expect("list");
        assert_eq!(c.len(), n);
        ours_aliases.push(t.elapsed());
        eprintln!(
            "run {run}: bare {} / discovery (no aliases) {} / discovery (+{n} ListAliases) {}",
            ms(bare[run]),
            ms(ours[run]),
            ms(ours_aliases[run])
        );
    }
    let (bare, ours, ours_aliases) = (median(bare), median(ours), median(ours_aliases));
    let ratio = ours.as_secs_f64() / bare.as_secs_f64();
    let ratio_aliases = ours_aliases.as_secs_f64() / bare.as_secs_f64();

    // 2. The real binary's first pass, with a real Envoy on gloo-core.
    let core = Core::start();
    let _envoy = Envoy::start(core.xds, false);
    let mut admin = core.client(ADMIN_TOKEN).await;
    for r in [
        resource(
            Kind::Secret,
            "creds",
            json!({"aws": {"accessKeyId": "testing", "secretAccessKey": "testing"}}),
        ),
        resource(
            Kind::Upstream,
            "aws",
            json!({"aws": {"region": "us-east-1", "secretRef": {"name": "creds"}, "endpoint": moto.url()}}),
        ),
    ] {
        admin
            .apply(ApplyRequest {
                resource: Some(r),
                ..Default::default()
            })
            .await
            .expect("apply");
    }
    // Envoy has its cluster before discovery starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    while core_metric(&core, "gloo_xds_acks_total", &[]) < 1.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = Instant::now();
    let mut d = Discovery::start(
        "discovery-lambda",
        &core,
        LAMBDA_TOKEN,
        &[
            "--interval",
            "1s",
            "--max-interval",
            "2s",
            "--no-aliases",
            "--log",
            "warn",
        ],
    );
    d.wait_ready(Duration::from_secs(600));
    let first_pass = t.elapsed();
    let listing_s = d.metric("lambda_listing_duration_seconds_sum", &[]);
    eprintln!("first pass (start → first Sync done): {}", secs(first_pass));

    // 3. Unchanged passes.
    let rev0 = settle(&core, Duration::from_secs(3));
    let xds0 = core_metric(&core, "gloo_xds_responses_total", &[]);
    let writes0 = d.metric("discovery_writes_total", &[]);
    let ok0 = d.metric("lambda_listings_total", &[("result", "ok")]);
    let deadline = Instant::now() + Duration::from_secs(300);
    while d.metric("lambda_listings_total", &[("result", "ok")]) < ok0 + 2.0 {
        assert!(
            Instant::now() < deadline,
            "no further listings:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let rev1 = core_metric(&core, "gloo_revision", &[]);
    let xds1 = core_metric(&core, "gloo_xds_responses_total", &[]);
    let writes1 = d.metric("discovery_writes_total", &[]);
    let passes = d.metric("lambda_listings_total", &[("result", "ok")]) - ok0;

    let pass_ratio = ratio <= TARGET_RATIO;
    let zero = rev1 == rev0 && xds1 == xds0 && writes1 == writes0;
    println!("### discovery-lambda: {} functions in moto\n", thousands(n));
    println!("| measurement | result | target | verdict |");
    println!("|---|---|---|---|");
    println!(
        "| creating the functions in moto (boto3, 8 threads) | {} | – | – |",
        secs(create_time)
    );
    println!(
        "| bare paginated ListFunctions (median of {runs}) | {} | – | – |",
        ms(bare)
    );
    println!(
        "| discovery listing, FunctionVersion=ALL, no aliases | {} ({ratio:.2}×) | ≤ {TARGET_RATIO}× bare | {} |",
        ms(ours),
        verdict(pass_ratio)
    );
    println!(
        "| discovery listing + one ListAliases per function (concurrency 8) | {} ({ratio_aliases:.2}×) | – | info |",
        ms(ours_aliases)
    );
    println!(
        "| real binary: start → first Sync of {} Functions done | {} (listing {:.2} s) | – | info |",
        thousands(n),
        secs(first_pass),
        listing_s
    );
    println!(
        "| {passes} unchanged passes: store revision / discovery writes / xDS responses | +{} / +{} / +{} | 0 / 0 / 0 | {} |",
        rev1 - rev0,
        writes1 - writes0,
        xds1 - xds0,
        verdict(zero)
    );
    if pass_ratio && zero {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
