//! discovery-lambda against a moto account with many functions (see docs/benchmarks.md). Run
//! with `bash bench/run-lambda.sh`, which builds the release binaries first.
//!
//! The account is made once per run in moto, and every call goes through
//! `e2e/py/lambda_api_proxy.py`, which pages ListFunctions 50 per page as AWS does (moto alone
//! answers every function in one page), so 10,000 functions are 200 pages.
//!
//! 1. Baseline: the bare paginated `ListFunctions(FunctionVersion=ALL)` of the account (what
//!    discovery lists), with the same SDK client, median of BENCH_LAMBDA_RUNS runs; and that
//!    listing followed by one bare `ListAliases` per function at the same concurrency (8).
//! 2. First pass of the real release binary, start → first Sync done (readyz), against a real
//!    gloo-core (empty store each time) with a real Envoy connected: with `--no-aliases`
//!    (median of BENCH_LAMBDA_RUNS) and with aliases (once), each split into its phases from
//!    the binary's own log and metrics (start → targets known, listing, building the set,
//!    Sync).
//! 3. Unchanged passes after each first pass: gloo-core's store revision,
//!    discovery_writes_total and gloo_xds_responses_total must not move.
//!
//! Progress on stderr, the markdown table on stdout; exit code 1 when a target is missed.
//! BENCH_LAMBDA_FUNCTIONS (default 10,000) sets the account's size.
use std::{
    process::ExitCode,
    time::{Duration, Instant, SystemTime},
};

mod support;

use discovery_lambda::{
    aws::{self, sdk::types::FunctionVersion},
    targets::{CredentialSource, StaticKeys, Target},
};
use e2e::{
    discovery::{metric_value, Discovery},
    envoy::Envoy,
    fixtures::resource,
    http_get,
    moto::{LambdaApiProxy, Moto},
    Core, ADMIN_TOKEN, LAMBDA_TOKEN,
};
use futures::{stream, StreamExt, TryStreamExt};
use proto::v1::{ApplyRequest, Kind};
use serde_json::json;
use support::{env_count, ms, secs, sorted, thousands, verdict};

const TARGET_RATIO: f64 = 1.2;
const CONCURRENCY: usize = 8;

fn median(v: &[Duration]) -> Duration {
    let v = sorted(v.to_vec());
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

/// Seconds since midnight UTC of a tracing log line (`2026-12-01T18:29:24.123456Z  INFO ...`,
/// perhaps inside ANSI colour codes).
fn log_time(line: &str) -> Option<f64> {
    let i = line.find('T')?;
    let z = i + line[i..].find('Z')?;
    let t = &line[i + 1..z];
    let mut it = t.split(':');
    let (h, m, s) = (it.next()?, it.next()?, it.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

fn now_of_day() -> f64 {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    (d.as_secs_f64()) % 86_400.0
}

/// Where one first pass spent its time.
struct FirstPass {
    total: Duration,
    /// process start → the first target known (storage connected, owned Functions read,
    /// store view received)
    start: f64,
    /// the target's listing (the binary's lambda_listing_duration_seconds)
    listing: f64,
    /// listing done → set published (Functions built, digested)
    build: f64,
    /// published → first Sync done (the Sync RPC: gloo-core validates and stores)
    sync: f64,
}

/// Starts the release binary against a fresh gloo-core (with Envoy) and measures its first
/// pass; returns the measurements and the running processes for the unchanged-pass check.
async fn first_pass(moto_url: &str, extra: &[&str]) -> (FirstPass, Core, Envoy, Discovery) {
    let core = Core::start();
    let envoy = Envoy::start(core.xds, false);
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
            json!({"aws": {"region": "us-east-1", "secretRef": {"name": "creds"}, "endpoint": moto_url}}),
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
    settle(&core, Duration::from_secs(1));
    let conc = CONCURRENCY.to_string();
    let mut args = vec![
        "--interval",
        "1s",
        "--max-interval",
        "2s",
        "--concurrency",
        &conc,
        "--log",
        "info",
    ];
    args.extend_from_slice(extra);
    let started_of_day = now_of_day();
    let t = Instant::now();
    let mut d = Discovery::start("discovery-lambda", &core, LAMBDA_TOKEN, &args);
    d.wait_ready(Duration::from_secs(900));
    let total = t.elapsed();
    let log = d.log();
    let at = |msg: &str| {
        log.lines()
            .find(|l| l.contains(msg))
            .and_then(log_time)
            .unwrap_or_else(|| panic!("no {msg:?} in the log:\n{log}"))
    };
    let (known, published, ready) = (
        at("listing target"),
        at("publishing"),
        at("first Sync done"),
    );
    let listing = d.metric("lambda_listing_duration_seconds_sum", &[]);
    let fp = FirstPass {
        total,
        start: known - started_of_day,
        listing,
        build: (published - known - listing).max(0.0),
        sync: ready - published,
    };
    eprintln!(
        "first pass {extra:?}: {} = start {:.2} s + listing {:.2} s + build {:.3} s + Sync {:.2} s",
        secs(fp.total),
        fp.start,
        fp.listing,
        fp.build,
        fp.sync
    );
    (fp, core, envoy, d)
}

/// After `passes` more good listings of the unchanged account: (store revision, discovery
/// writes, xDS responses) moved by, and the number of passes seen.
fn unchanged_passes(core: &Core, d: &Discovery, passes: f64) -> ((f64, f64, f64), f64) {
    let rev0 = settle(core, Duration::from_secs(3));
    let xds0 = core_metric(core, "gloo_xds_responses_total", &[]);
    let writes0 = d.metric("discovery_writes_total", &[]);
    let ok0 = d.metric("lambda_listings_total", &[("result", "ok")]);
    let deadline = Instant::now() + Duration::from_secs(900);
    while d.metric("lambda_listings_total", &[("result", "ok")]) < ok0 + passes {
        assert!(
            Instant::now() < deadline,
            "no further listings:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let moved = (
        core_metric(core, "gloo_revision", &[]) - rev0,
        d.metric("discovery_writes_total", &[]) - writes0,
        core_metric(core, "gloo_xds_responses_total", &[]) - xds0,
    );
    let seen = d.metric("lambda_listings_total", &[("result", "ok")]) - ok0;
    (moved, seen)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> ExitCode {
    let n = env_count("BENCH_LAMBDA_FUNCTIONS", 10_000);
    let runs = env_count("BENCH_LAMBDA_RUNS", 3);
    let moto = Moto::start();
    eprintln!("creating {n} functions in moto (load {})...", load());
    let t = Instant::now();
    moto.lambda(json!([{"op": "create", "name": "fn", "count": n}]));
    let create_time = t.elapsed();
    eprintln!("created in {}", secs(create_time));
    let api = LambdaApiProxy::start(&moto, LambdaApiProxy::AWS_PAGE_SIZE);

    // 1. Baselines, with the SDK client discovery-lambda builds.
    let target = Target {
        namespace: "default".into(),
        upstream: "aws".into(),
        region: "us-east-1".into(),
        endpoint: Some(api.url()),
        credentials: CredentialSource::Static(StaticKeys {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            session_token: String::new(),
        }),
    };
    let http = aws::http_client();
    let client = aws::client(&target, &http).await.expect("client");
    let mut bare = Vec::new();
    let mut names = Vec::new();
    let pages0 = api.stat("list_functions_pages");
    for run in 0..runs {
        let t = Instant::now();
        let mut items = client
            .list_functions()
            .function_version(FunctionVersion::All)
            .into_paginator()
            .items()
            .send();
        names.clear();
        while let Some(f) = items.next().await {
            names.push(f.expect("ListFunctions").function_name.unwrap_or_default());
        }
        assert_eq!(names.len(), n);
        bare.push(t.elapsed());
        eprintln!(
            "run {run}: bare ListFunctions(ALL) {} (load {})",
            ms(bare[run]),
            load()
        );
    }
    let pages = (api.stat("list_functions_pages") - pages0) / runs as u64;
    let bare = median(&bare);
    // BENCH_LAMBDA_ALIASES=0 skips the alias runs (each is one call per function, three times).
    let with_aliases = std::env::var("BENCH_LAMBDA_ALIASES").map_or(true, |v| v != "0");
    let t = Instant::now();
    let aliases: usize = stream::iter(if with_aliases {
        names.clone()
    } else {
        Vec::new()
    })
    .map(|name| {
        let client = client.clone();
        async move {
            let mut items = client
                .list_aliases()
                .function_name(name)
                .into_paginator()
                .items()
                .send();
            let mut k = 0;
            while let Some(a) = items.next().await {
                a?;
                k += 1;
            }
            Ok::<_, aws::sdk::error::SdkError<_, _>>(k)
        }
    })
    .buffer_unordered(CONCURRENCY)
    .try_fold(0, |acc, k| async move { Ok(acc + k) })
    .await
    .expect("ListAliases");
    let bare_aliases = bare + t.elapsed();
    eprintln!(
        "bare ListAliases x {n} ({aliases} aliases): {} (load {})",
        ms(t.elapsed()),
        load()
    );

    // 2 + 3. The real binary, without and with aliases.
    let mut plain = Vec::new();
    let mut plain_unchanged = None;
    for run in 0..runs {
        let (fp, core, _envoy, d) = first_pass(&api.url(), &["--no-aliases"]).await;
        plain.push(fp);
        if run + 1 == runs {
            plain_unchanged = Some(unchanged_passes(&core, &d, 2.0));
        }
    }
    plain.sort_by_key(|f| f.total);
    let plain = plain.swap_remove(plain.len() / 2);
    let mut alias_run = None;
    if with_aliases {
        let (fa, core, _envoy, d) = first_pass(&api.url(), &[]).await;
        alias_run = Some((fa, unchanged_passes(&core, &d, 1.0)));
    }

    let ratio = plain.total.as_secs_f64() / bare.as_secs_f64();
    let ratio_aliases = alias_run
        .as_ref()
        .map(|(fa, _)| fa.total.as_secs_f64() / bare_aliases.as_secs_f64());
    let (plain_moved, plain_seen) = plain_unchanged.expect("at least one run");
    let zero = |m: (f64, f64, f64)| m == (0.0, 0.0, 0.0);
    let pass = ratio <= TARGET_RATIO
        && ratio_aliases.is_none_or(|r| r <= TARGET_RATIO)
        && zero(plain_moved)
        && alias_run.as_ref().is_none_or(|(_, (m, _))| zero(*m));

    println!(
        "### discovery-lambda: {} functions in moto, ListFunctions paged {} per page ({pages} pages)\n",
        thousands(n),
        LambdaApiProxy::AWS_PAGE_SIZE
    );
    println!("Load average at the end: {}\n", load());
    println!("| measurement | result | target | verdict |");
    println!("|---|---|---|---|");
    println!(
        "| creating the functions in moto (boto3, 8 threads) | {} | – | – |",
        secs(create_time)
    );
    println!(
        "| baseline: bare paginated ListFunctions(FunctionVersion=ALL) (median of {runs}) | {} | – | – |",
        ms(bare)
    );
    if with_aliases {
        println!(
            "| baseline with aliases: that + one bare ListAliases per function (concurrency {CONCURRENCY}) | {} | – | – |",
            ms(bare_aliases)
        );
    }
    let phases = |f: &FirstPass| {
        format!(
            "start {:.2} s + listing {:.2} s + build {:.3} s + Sync {:.2} s",
            f.start, f.listing, f.build, f.sync
        )
    };
    println!(
        "| real binary `--no-aliases`: start → first Sync of {} Functions done (median of {runs}) | {} ({ratio:.2}× bare; {}) | ≤ {TARGET_RATIO}× | {} |",
        thousands(n),
        secs(plain.total),
        phases(&plain),
        verdict(ratio <= TARGET_RATIO)
    );
    let mut unchanged = vec![("`--no-aliases`", (plain_moved, plain_seen))];
    if let (Some((fa, u)), Some(r)) = (&alias_run, ratio_aliases) {
        println!(
            "| real binary with aliases (concurrency {CONCURRENCY}): start → first Sync done | {} ({r:.2}× bare with aliases; {}) | ≤ {TARGET_RATIO}× | {} |",
            secs(fa.total),
            phases(fa),
            verdict(r <= TARGET_RATIO)
        );
        unchanged.push(("with aliases", *u));
    }
    for (what, (m, seen)) in unchanged {
        println!(
            "| {what}: {seen} unchanged passes: store revision / discovery writes / xDS responses | +{} / +{} / +{} | 0 / 0 / 0 | {} |",
            m.0,
            m.1,
            m.2,
            verdict(zero(m))
        );
    }
    if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
