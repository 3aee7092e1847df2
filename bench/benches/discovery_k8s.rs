//! discovery-k8s with 10,000 Services of 3 ready endpoints each: how long from the start of its
//! watches (initial lists of Services and EndpointSlices) until every Upstream and Endpoints
//! object is stored in gloo-core, its memory, and its CPU while nothing changes.
//! Real, release-built gloo-core and discovery-k8s: `bash bench/discovery-k8s.sh`.
//!
//! The API server is `scripts/k8s-listwatch-server.py` (`e2e::k8s::ApiServer`), loaded with
//! 10,000 Services and 10,000 EndpointSlices before discovery-k8s starts. "Stored" is
//! discovery-k8s' `/readyz` turning 200: it does so after its first Sync succeeded, and the
//! first Sync is only sent once both initial lists are complete, so it carries all 20,000
//! objects; `discovery_writes_total{op="created"}` confirms they were all written.
//! Memory is VmRSS / VmHWM from /proc/<pid>/status; CPU is utime + stime from
//! /proc/<pid>/stat over an idle window (the API server sends a BOOKMARK per watch every second
//! of quiet, as a busier real one would less often).
//!
//! Env: K8S_SERVICES (10000), K8S_ENDPOINTS (3), K8S_IDLE_S (20).
mod support;

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use e2e::{discovery::Discovery, k8s::ApiServer, Core, K8S_TOKEN};
use serde_json::json;
use support::{mib, ms, proc_status_kib, thousands, verdict};

const STORED_TARGET: Duration = Duration::from_secs(2);
const RSS_TARGET_KIB: u64 = 50 * 1024;
const CPU_TARGET_PCT: f64 = 1.0;

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `elapsed_ms=N` of the "initial lists complete" log line.
fn initial_list_ms(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("initial lists complete"))?;
    // Without the terminal colour codes the log may carry.
    let mut plain = String::new();
    let mut in_escape = false;
    for c in line.chars() {
        match (in_escape, c) {
            (false, '\u{1b}') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, c) => plain.push(c),
        }
    }
    let line = plain.as_str();
    let at = line.find("elapsed_ms=")? + "elapsed_ms=".len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn load(api: &ApiServer, services: usize, endpoints: usize) {
    let mut batch = Vec::new();
    for i in 0..services {
        let name = format!("svc-{i}");
        let ns = format!("team-{}", i % 20);
        batch.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name, "tier": "web"}},
            "spec": {"selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
        }));
        let addresses: Vec<_> = (0..endpoints)
            .map(|e| {
                json!({"addresses": [format!("10.{}.{}.{}", (i >> 8) & 255, i & 255, e + 1)],
                       "conditions": {"ready": true}})
            })
            .collect();
        batch.push(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-abcde"), "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": addresses,
        }));
        if batch.len() >= 4000 {
            api.bulk(std::mem::take(&mut batch));
        }
    }
    if !batch.is_empty() {
        api.bulk(batch);
    }
}

fn main() -> ExitCode {
    let services = support::env_count("K8S_SERVICES", 10_000);
    let endpoints = support::env_count("K8S_ENDPOINTS", 3);
    let idle = Duration::from_secs(support::env_count("K8S_IDLE_S", 20) as u64);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _guard = runtime.enter();

    eprintln!("loading {services} Services and EndpointSlices into the API server");
    let api = ApiServer::start_ephemeral();
    load(&api, services, endpoints);
    let core = Core::start();
    let kubeconfig = api.kubeconfig();

    eprintln!("starting discovery-k8s");
    let started = Instant::now();
    let mut d = Discovery::start(
        "discovery-k8s",
        &core,
        K8S_TOKEN,
        &["--kubeconfig", kubeconfig.to_str().unwrap()],
    );
    let pid = d.pid().expect("discovery-k8s pid");
    loop {
        assert!(d.running(), "discovery-k8s exited:\n{}", d.log());
        if e2e::http_get(d.metrics, "/readyz").is_some_and(|(c, _)| c == 200) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "{}", d.log());
        std::thread::sleep(Duration::from_millis(5));
    }
    let stored = started.elapsed();
    let created = d.metric("discovery_writes_total", &[("op", "created")]) as usize;
    let listed = initial_list_ms(&d.log()).map(Duration::from_millis);
    let rss_after_load = proc_status_kib(pid, "VmRSS").unwrap_or(0);

    eprintln!("idle for {idle:?}");
    std::thread::sleep(Duration::from_secs(2));
    let writes_before = d.metric("discovery_writes_total", &[]);
    let t0 = cpu_ticks(pid);
    let w0 = Instant::now();
    std::thread::sleep(idle);
    let cpu_pct = (cpu_ticks(pid) - t0) as f64 / clock_ticks() / w0.elapsed().as_secs_f64() * 100.0;
    let idle_writes = d.metric("discovery_writes_total", &[]) - writes_before;
    let rss = proc_status_kib(pid, "VmRSS").unwrap_or(0);
    let hwm = proc_status_kib(pid, "VmHWM").unwrap_or(0);
    let code = d.terminate();

    let want = services * 2;
    let all = created == want;
    let ok_stored = all && stored < STORED_TARGET;
    let ok_rss = rss < RSS_TARGET_KIB;
    let ok_cpu = cpu_pct < CPU_TARGET_PCT && idle_writes == 0.0;
    println!(
        "discovery-k8s: {} Services x {endpoints} endpoints ({} objects to store)\n",
        thousands(services),
        thousands(want)
    );
    println!("| measure | result | target | verdict |");
    println!("|---|---|---|---|");
    println!(
        "| watches started → initial lists done (Services + EndpointSlices) | {} | | |",
        listed.map(ms).unwrap_or_else(|| "?".into())
    );
    println!(
        "| start → all Upstreams and Endpoints stored ({} created) | {} | < {} | {} |",
        thousands(created),
        ms(stored),
        ms(STORED_TARGET),
        verdict(ok_stored)
    );
    println!(
        "| RSS after the initial Sync | {} | | |",
        mib(rss_after_load)
    );
    println!(
        "| RSS idle (peak VmHWM) | {} ({}) | < {} | {} |",
        mib(rss),
        mib(hwm),
        mib(RSS_TARGET_KIB),
        verdict(ok_rss)
    );
    println!(
        "| CPU while nothing changes ({}s window), writes in it | {cpu_pct:.2} % of a core, {idle_writes} | < {CPU_TARGET_PCT} %, 0 | {} |",
        idle.as_secs(),
        verdict(ok_cpu)
    );
    println!(
        "| SIGTERM exit code | {code:?} | 0 | {} |",
        verdict(code == Some(0))
    );
    if ok_stored && ok_rss && ok_cpu && code == Some(0) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
