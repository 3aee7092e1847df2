//! Storage API benchmarks against a real, release-built gloo-core process (see
//! docs/benchmarks.md). Run with `bash bench/run.sh`, which builds gloo-core first.
//!
//! 1. First Sync of 10,000 Upstreams into a fresh store (a fresh gloo-core per run).
//! 2. Unchanged re-Sync of the same 10,000: nothing may be written, the revision may not move.
//! 3. Watch fan-out: 100 Watch streams (10 HTTP/2 connections x 10 streams) on Upstreams, and
//!    the delay from an Apply's answer to each watcher receiving that Apply's event.
//!
//! Also reported: gloo-core's peak RSS (VmHWM), and a split of the Sync time into client-side
//! encoding, server-side store work (from gloo-core's own /metrics) and the rest.
//!
//! Progress goes to stderr, the markdown report to stdout. The exit code is 1 when a target is
//! missed. Counts can be changed with BENCH_FIRST_RUNS, BENCH_RESYNC_RUNS, BENCH_APPLIES,
//! BENCH_CONNECTIONS, BENCH_STREAMS_PER_CONNECTION.
use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

mod support;

use support::{
    connect, core_pid, env_count, metric, ms, percentile, proc_status_kib, sorted, verdict,
};

use e2e::{fixtures::static_upstream, Client, Core, ADMIN_TOKEN, DISCOVERY_OWNER, DISCOVERY_TOKEN};
use prost::Message;
use proto::v1::{
    watch_event::Type, ApplyRequest, Kind, ListRequest, Resource, SyncRequest, SyncResponse,
    WatchRequest,
};

const UPSTREAMS: usize = 10_000;
const FIRST_SYNC_TARGET: Duration = Duration::from_secs(1);
const RESYNC_TARGET: Duration = Duration::from_millis(100);
const FANOUT_P99_TARGET: Duration = Duration::from_millis(10);
/// Applies before the measured ones, to warm connections and code paths.
const WARMUP_APPLIES: usize = 5;
struct Config {
    first_runs: usize,
    resync_runs: usize,
    applies: usize,
    connections: usize,
    streams_per_connection: usize,
}

impl Config {
    fn from_env() -> Config {
        Config {
            first_runs: env_count("BENCH_FIRST_RUNS", 5),
            resync_runs: env_count("BENCH_RESYNC_RUNS", 20),
            applies: env_count("BENCH_APPLIES", 200),
            connections: env_count("BENCH_CONNECTIONS", 10),
            streams_per_connection: env_count("BENCH_STREAMS_PER_CONNECTION", 10),
        }
    }

    fn watchers(&self) -> usize {
        self.connections * self.streams_per_connection
    }
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; there is nothing to filter, so arguments are ignored.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let report = runtime.block_on(run(Config::from_env()));
    println!("{}", report.markdown());
    if report.all_pass() {
        ExitCode::SUCCESS
    } else {
        eprintln!("bench: at least one target was missed");
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics

// ---------------------------------------------------------------------------------------------
// gloo-core process facts: pid, peak RSS, server-side time from /metrics

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

/// Total seconds gloo-core has spent in the store on `method` calls (its own histogram sum:
/// validation + transaction + commit, without gRPC decoding and encoding).
async fn server_seconds(core: &Core, method: &str) -> Option<f64> {
    metric(
        core,
        &format!("gloo_storage_call_duration_seconds_sum{{method=\"{method}\"}}"),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Storage API helpers

fn upstreams() -> Vec<Resource> {
    (0..UPSTREAMS)
        .map(|i| static_upstream("bench", &format!("up-{i:05}"), 1024 + i as u32))
        .collect()
}

fn sync_request(resources: Vec<Resource>, dry_run: bool) -> SyncRequest {
    SyncRequest {
        owner: DISCOVERY_OWNER.into(),
        kinds: vec![Kind::Upstream as i32],
        resources,
        dry_run,
    }
}

/// One timed Sync: the wall time from handing the request to tonic (which encodes it) until the
/// decoded answer is back.
async fn timed_sync(client: &mut Client, resources: Vec<Resource>) -> (Duration, SyncResponse) {
    let request = sync_request(resources, false);
    let started = Instant::now();
    let response = client.sync(request).await.expect("Sync").into_inner();
    (started.elapsed(), response)
}

/// The store revision, from a List that matches nothing (cheap however big the store is).
async fn store_revision(client: &mut Client) -> u64 {
    client
        .list(ListRequest {
            kind: Kind::Upstream as i32,
            namespace: "bench-no-such-namespace".into(),
            ..Default::default()
        })
        .await
        .expect("List")
        .into_inner()
        .revision
}

/// Waits until gloo-core's own writes after `since` (the controller reporting statuses) have
/// stopped: the store revision has not moved for `QUIET`. Returns how long after `since` the
/// last move was seen (±`POLL`), and the settled revision.
async fn settle(client: &mut Client, since: Instant) -> (Duration, u64) {
    const POLL: Duration = Duration::from_millis(10);
    const QUIET: Duration = Duration::from_secs(1);
    let deadline = since + Duration::from_secs(120);
    let mut revision = store_revision(client).await;
    let mut moved = since;
    loop {
        tokio::time::sleep(POLL).await;
        let now = store_revision(client).await;
        let at = Instant::now();
        if now != revision {
            revision = now;
            moved = at;
        } else if at - moved >= QUIET {
            return (moved - since, revision);
        }
        assert!(
            at < deadline,
            "gloo-core kept writing for 120 s after a Sync"
        );
    }
}

/// (number of Upstreams, store revision) from a List of Upstreams.
async fn list_upstreams(client: &mut Client) -> (usize, u64) {
    let list = client
        .list(ListRequest {
            kind: Kind::Upstream as i32,
            ..Default::default()
        })
        .await
        .expect("List")
        .into_inner();
    (list.items.len(), list.revision)
}

// ---------------------------------------------------------------------------------------------
// The benchmarks

struct FirstSync {
    runs: Vec<Duration>,
    server: Vec<Duration>,
    encode: Duration,
    request_bytes: usize,
    peak_rss_kib: Vec<u64>,
    /// Sync answered → the last of gloo-core's own follow-up writes (the statuses).
    settled: Vec<Duration>,
    /// Revisions those follow-up writes took.
    follow_up_revisions: Vec<u64>,
}

struct Resync {
    runs: Vec<Duration>,
    server: Vec<Duration>,
    unchanged: Vec<u32>,
    revision_before: u64,
    revision_after: u64,
}

struct Fanout {
    /// What the store held while measuring.
    store: String,
    watchers: usize,
    connections: usize,
    streams_per_connection: usize,
    applies: usize,
    /// Event received − Apply answered, clamped at 0.
    latencies: Vec<Duration>,
    /// Samples where the event arrived before the Apply's answer, and the largest such lead.
    early: usize,
    max_lead: Duration,
    /// Apply round trips (request sent → answer), for context.
    apply_rtt: Vec<Duration>,
    /// Per Apply: the slowest watcher's delay after the answer.
    slowest_per_apply: Vec<Duration>,
    /// Other events the watchers got (gloo-core's status writes on the probe Upstream).
    other_events: usize,
    /// Per Apply: last watcher's receipt − first watcher's receipt (the fan-out's own spread,
    /// whatever Apply's answer time).
    spread: Vec<Duration>,
    /// Mean server-side store time of the measured Applies (from /metrics).
    server_apply_mean: Option<Duration>,
}

struct Report {
    first: FirstSync,
    resync: Resync,
    /// Fan-out with 10,000 Upstreams in the store, then with an empty store.
    fanouts: Vec<Fanout>,
    /// /proc/loadavg before and after: other work on the machine skews the numbers.
    loadavg: (String, String),
    /// Peak RSS of the gloo-core that ran the re-Syncs and the fan-out (10,000 Upstreams held).
    peak_rss_kib: Option<u64>,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

async fn run(cfg: Config) -> Report {
    let loadavg_before = loadavg();
    let resources = upstreams();

    // Client-side cost of the request alone: prost encoding of the whole SyncRequest.
    let request = sync_request(resources.clone(), false);
    let started = Instant::now();
    let encoded = request.encode_to_vec();
    let encode = started.elapsed();
    let request_bytes = encoded.len();
    drop((request, encoded));

    // 1. First Sync, a fresh gloo-core (fresh store) each run; the last one is kept.
    let mut first = FirstSync {
        runs: Vec::new(),
        server: Vec::new(),
        encode,
        request_bytes,
        peak_rss_kib: Vec::new(),
        settled: Vec::new(),
        follow_up_revisions: Vec::new(),
    };
    let mut kept = None;
    for run in 1..=cfg.first_runs {
        let core = Core::start();
        let mut discovery = connect(&core, DISCOVERY_TOKEN).await;
        // Warm the connection (and the token) with an empty dry run.
        discovery
            .sync(sync_request(Vec::new(), true))
            .await
            .expect("warm-up Sync");
        let server_before = server_seconds(&core, "sync").await;
        let (took, response) = timed_sync(&mut discovery, resources.clone()).await;
        let answered = Instant::now();
        let server_after = server_seconds(&core, "sync").await;
        // The controller now translates and reports a status on every new object.
        let (settled, revision) = settle(&mut discovery, answered).await;
        first.settled.push(settled);
        first
            .follow_up_revisions
            .push(revision.saturating_sub(response.revision));
        assert!(
            response.rejected.is_empty(),
            "first Sync rejected {} items, e.g. {:?}",
            response.rejected.len(),
            response.rejected.first()
        );
        assert_eq!(
            response.created as usize, UPSTREAMS,
            "first Sync: {response:?}"
        );
        if let (Some(b), Some(a)) = (server_before, server_after) {
            first.server.push(Duration::from_secs_f64((a - b).max(0.0)));
        }
        if let Some(kib) = core_pid(&core).and_then(|pid| proc_status_kib(pid, "VmHWM")) {
            first.peak_rss_kib.push(kib);
        }
        eprintln!(
            "bench: first Sync run {run}/{}: {}",
            cfg.first_runs,
            ms(took)
        );
        first.runs.push(took);
        kept = Some((core, discovery));
    }
    let (core, mut discovery) = kept.expect("at least one first-Sync run");
    let pid = core_pid(&core);
    if pid.is_none() {
        eprintln!("bench: could not find the gloo-core process in /proc; no RSS figure");
    }

    // 2. Unchanged re-Sync of the same set on the kept store, which has settled (above).
    let mut admin = connect(&core, ADMIN_TOKEN).await;
    let (count, revision_before) = list_upstreams(&mut admin).await;
    assert_eq!(count, UPSTREAMS, "Upstreams stored after the first Sync");
    let mut resync = Resync {
        runs: Vec::new(),
        server: Vec::new(),
        unchanged: Vec::new(),
        revision_before,
        revision_after: 0,
    };
    for _ in 0..cfg.resync_runs {
        let server_before = server_seconds(&core, "sync").await;
        let (took, response) = timed_sync(&mut discovery, resources.clone()).await;
        let server_after = server_seconds(&core, "sync").await;
        assert_eq!(
            response.revision, revision_before,
            "an unchanged re-Sync answered with a new revision"
        );
        assert_eq!(
            (
                response.created,
                response.updated,
                response.deleted,
                response.rejected.len()
            ),
            (0, 0, 0, 0),
            "an unchanged re-Sync changed something: {response:?}"
        );
        assert_eq!(
            response.unchanged as usize, UPSTREAMS,
            "re-Sync: {response:?}"
        );
        if let (Some(b), Some(a)) = (server_before, server_after) {
            resync
                .server
                .push(Duration::from_secs_f64((a - b).max(0.0)));
        }
        resync.unchanged.push(response.unchanged);
        resync.runs.push(took);
    }
    let (count, revision_after) = list_upstreams(&mut admin).await;
    assert_eq!(count, UPSTREAMS, "Upstreams stored after the re-Syncs");
    assert_eq!(
        revision_after, revision_before,
        "the store revision moved during unchanged re-Syncs"
    );
    resync.revision_after = revision_after;
    eprintln!(
        "bench: {} unchanged re-Syncs: median {}, revision {} → {}",
        cfg.resync_runs,
        ms(percentile(&sorted(resync.runs.clone()), 50.0)),
        revision_before,
        revision_after
    );

    // 3. Watch fan-out, on the same store (10,000 Upstreams already held), ...
    let mut fanouts = vec![
        watch_fanout(
            &cfg,
            &core,
            &mut admin,
            revision_after,
            "10,000 Upstreams in the store",
        )
        .await,
    ];
    let peak_rss_kib = pid.and_then(|pid| proc_status_kib(pid, "VmHWM"));
    drop((admin, discovery, core));

    // ... and on a fresh, empty store, where Apply itself is cheap.
    let core = Core::start();
    let mut admin = connect(&core, ADMIN_TOKEN).await;
    let revision = store_revision(&mut admin).await;
    fanouts.push(watch_fanout(&cfg, &core, &mut admin, revision, "empty store").await);
    drop((admin, core));

    Report {
        first,
        resync,
        fanouts,
        loadavg: (loadavg_before, loadavg()),
        peak_rss_kib,
    }
}

async fn watch_fanout(
    cfg: &Config,
    core: &Core,
    admin: &mut Client,
    from: u64,
    store: &str,
) -> Fanout {
    let watchers = cfg.watchers();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u64, Instant)>();
    let mut tasks = Vec::new();
    for c in 0..cfg.connections {
        // connect() opens a new HTTP/2 connection; clones of a client multiplex streams on it.
        let client = connect(core, ADMIN_TOKEN).await;
        for s in 0..cfg.streams_per_connection {
            let id = c * cfg.streams_per_connection + s;
            let mut client = client.clone();
            // Resume from the current revision: no backlog, every later event is delivered.
            let mut stream = client
                .watch(WatchRequest {
                    kinds: vec![Kind::Upstream as i32],
                    start_revision: from,
                    ..Default::default()
                })
                .await
                .expect("Watch")
                .into_inner();
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok(Some(event)) = stream.message().await {
                    let received = Instant::now();
                    if event.r#type == Type::Bookmark as i32 {
                        continue;
                    }
                    if tx.send((id, event.revision, received)).is_err() {
                        break;
                    }
                }
            }));
        }
    }
    drop(tx);

    let mut out = Fanout {
        store: store.into(),
        watchers,
        connections: cfg.connections,
        streams_per_connection: cfg.streams_per_connection,
        applies: cfg.applies,
        latencies: Vec::with_capacity(watchers * cfg.applies),
        early: 0,
        max_lead: Duration::ZERO,
        apply_rtt: Vec::new(),
        slowest_per_apply: Vec::new(),
        other_events: 0,
        spread: Vec::new(),
        server_apply_mean: None,
    };
    let mut server_before = None;
    // One Upstream, changed on every Apply so that each Apply is a write and an event. Each
    // Apply waits until all watchers have its event, and then until the controller's status
    // write on it has reached them too, so samples do not queue behind each other.
    for i in 0..WARMUP_APPLIES + cfg.applies {
        let measured = i >= WARMUP_APPLIES;
        if i == WARMUP_APPLIES {
            server_before = server_seconds(core, "apply").await;
        }
        let upstream = static_upstream("fanout", "probe", 20_000 + i as u32);
        let sent = Instant::now();
        let applied = admin
            .apply(ApplyRequest {
                resource: Some(upstream),
                ..Default::default()
            })
            .await
            .expect("Apply")
            .into_inner();
        let answered = Instant::now();
        let revision = applied
            .resource
            .and_then(|r| r.metadata)
            .map(|m| m.resource_version)
            .expect("Apply answers with the stored resource");
        let mut seen = vec![false; watchers];
        let mut slowest = Duration::ZERO;
        let mut matched = 0;
        let (mut first_at, mut last_at): (Option<Instant>, Option<Instant>) = (None, None);
        while matched < watchers {
            let (id, got, received) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("not every watcher got revision {revision} within 10 s"))
                .expect("watch streams ended");
            if got != revision {
                // gloo-core's status write on the probe (one watcher may see the status
                // write of this Apply before another has seen the Apply itself).
                out.other_events += usize::from(measured);
                continue;
            }
            matched += 1;
            assert!(!seen[id], "watcher {id} got revision {revision} twice");
            seen[id] = true;
            first_at = Some(first_at.map_or(received, |t| t.min(received)));
            last_at = Some(last_at.map_or(received, |t| t.max(received)));
            let latency = match received.checked_duration_since(answered) {
                Some(d) => d,
                None => {
                    if measured {
                        out.early += 1;
                        out.max_lead = out.max_lead.max(answered - received);
                    }
                    Duration::ZERO
                }
            };
            slowest = slowest.max(latency);
            if measured {
                out.latencies.push(latency);
            }
        }
        if measured {
            out.apply_rtt.push(answered - sent);
            out.slowest_per_apply.push(slowest);
            if let (Some(a), Some(b)) = (first_at, last_at) {
                out.spread.push(b - a);
            }
        }
        // Let the status write that follows reach every watcher before the next Apply.
        while let Ok(Some((_, got, _))) =
            tokio::time::timeout(Duration::from_millis(50), rx.recv()).await
        {
            assert!(
                got > revision,
                "a watcher got revision {got} after {revision}"
            );
            out.other_events += usize::from(measured);
        }
    }
    if let (Some(b), Some(a)) = (server_before, server_seconds(core, "apply").await) {
        out.server_apply_mean = Some(Duration::from_secs_f64(
            (a - b).max(0.0) / cfg.applies as f64,
        ));
    }
    for t in tasks {
        t.abort();
    }
    eprintln!(
        "bench: watch fan-out ({store}): {} samples, p99 {}",
        out.latencies.len(),
        ms(percentile(&sorted(out.latencies.clone()), 99.0))
    );
    out
}

// ---------------------------------------------------------------------------------------------
// The report

impl Fanout {
    fn pass(&self) -> bool {
        percentile(&sorted(self.latencies.clone()), 99.0) < FANOUT_P99_TARGET
    }

    fn row(&self) -> String {
        let lat = sorted(self.latencies.clone());
        format!(
            "| Watch fan-out, {}: {} watchers ({} connections × {} streams) × {} Applies, event received − Apply answered (clamped at 0) | p50 {}, p99 {}, max {} ({} samples) | p99 < 10 ms | {} |\n",
            self.store,
            self.watchers,
            self.connections,
            self.streams_per_connection,
            self.applies,
            ms(percentile(&lat, 50.0)),
            ms(percentile(&lat, 99.0)),
            ms(percentile(&lat, 100.0)),
            lat.len(),
            verdict(self.pass()),
        )
    }

    fn details(&self) -> String {
        let rtt = sorted(self.apply_rtt.clone());
        let spread = sorted(self.spread.clone());
        let slowest = sorted(self.slowest_per_apply.clone());
        format!(
            "- Fan-out, {}: {} of {} samples arrived before the Apply answer (clamped to 0; largest lead {}); Apply round trip p50 {}, p99 {} (server store work, validation included, mean {}); spread first → last watcher per Apply p50 {}, p99 {}, max {}; slowest watcher after the answer per Apply p50 {}, p99 {}; {} other events (the controller's status write after each Apply) received and not counted; {WARMUP_APPLIES} warm-up Applies not counted\n",
            self.store,
            self.early,
            self.latencies.len(),
            ms(self.max_lead),
            ms(percentile(&rtt, 50.0)),
            ms(percentile(&rtt, 99.0)),
            self.server_apply_mean.map_or("n/a".into(), ms),
            ms(percentile(&spread, 50.0)),
            ms(percentile(&spread, 99.0)),
            ms(percentile(&spread, 100.0)),
            ms(percentile(&slowest, 50.0)),
            ms(percentile(&slowest, 99.0)),
            self.other_events,
        )
    }
}

impl Report {
    fn first_pass(&self) -> bool {
        self.first.runs.iter().all(|d| *d < FIRST_SYNC_TARGET)
    }

    fn resync_pass(&self) -> bool {
        percentile(&sorted(self.resync.runs.clone()), 99.0) < RESYNC_TARGET
    }

    fn all_pass(&self) -> bool {
        self.first_pass() && self.resync_pass() && self.fanouts.iter().all(Fanout::pass)
    }

    fn markdown(&self) -> String {
        let first = sorted(self.first.runs.clone());
        let resync = sorted(self.resync.runs.clone());
        let mut s = String::new();
        s.push_str("| benchmark | result | target | verdict |\n|---|---|---|---|\n");
        s.push_str(&format!(
            "| First Sync of {UPSTREAMS} Upstreams, fresh store ({} runs, fresh gloo-core each) | median {}, max {} | < 1 s (every run) | {} |\n",
            first.len(),
            ms(percentile(&first, 50.0)),
            ms(percentile(&first, 100.0)),
            verdict(self.first_pass()),
        ));
        s.push_str(&format!(
            "| Unchanged re-Sync of the same {UPSTREAMS} ({} runs) | median {}, p99 {} (max {}) | p99 < 100 ms | {} |\n",
            resync.len(),
            ms(percentile(&resync, 50.0)),
            ms(percentile(&resync, 99.0)),
            ms(percentile(&resync, 100.0)),
            verdict(self.resync_pass()),
        ));
        for f in &self.fanouts {
            s.push_str(&f.row());
        }
        let first_rss = self.first.peak_rss_kib.iter().max().copied();
        s.push_str(&format!(
            "| gloo-core peak RSS (VmHWM) | {} after first Sync (max of runs); {} after re-Syncs + fan-out (10,000 Upstreams) | — | info |\n",
            first_rss.map_or("n/a".into(), mib),
            self.peak_rss_kib.map_or("n/a".into(), mib),
        ));

        s.push_str("\nDetails:\n\n");
        let server_first = sorted(self.first.server.clone());
        s.push_str(&format!(
            "- First Sync split: request {} bytes ({:.0} B/Upstream); client prost encode {}; ",
            self.first.request_bytes,
            self.first.request_bytes as f64 / UPSTREAMS as f64,
            ms(self.first.encode),
        ));
        if server_first.is_empty() {
            s.push_str("server-side store time unavailable (/metrics not read)\n");
        } else {
            let server = percentile(&server_first, 50.0);
            let wall = percentile(&first, 50.0);
            s.push_str(&format!(
                "server store work (validate + transaction + commit, from gloo-core /metrics) median {}; the rest (gRPC encode/transfer/decode both ways, scheduling) ≈ {}\n",
                ms(server),
                ms(wall.saturating_sub(server)),
            ));
        }
        let settled = sorted(self.first.settled.clone());
        s.push_str(&format!(
            "- After each first Sync gloo-core's controller translated the new objects and wrote their statuses ({} revisions); the last of those writes came {} (median; max {}) after the Sync answer (polled every 10 ms). The re-Syncs and the fan-out start only after the store has been quiet for 1 s.\n",
            self.first
                .follow_up_revisions
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            ms(percentile(&settled, 50.0)),
            ms(percentile(&settled, 100.0)),
        ));
        let server_resync = sorted(self.resync.server.clone());
        if !server_resync.is_empty() {
            s.push_str(&format!(
                "- Re-Sync split: server store work median {} of median wall {}\n",
                ms(percentile(&server_resync, 50.0)),
                ms(percentile(&resync, 50.0)),
            ));
        }
        s.push_str(&format!(
            "- Re-Sync checks: every response said unchanged = {} (minimum over runs; created/updated/deleted 0, none rejected); store revision from List of Upstreams {} before, {} after\n",
            self.resync.unchanged.iter().min().copied().unwrap_or(0),
            self.resync.revision_before,
            self.resync.revision_after,
        ));
        for f in &self.fanouts {
            s.push_str(&f.details());
        }
        s.push_str(&format!(
            "- Load average (1/5/15 min) before: {}; after: {}\n",
            self.loadavg.0, self.loadavg.1
        ));
        s
    }
}
