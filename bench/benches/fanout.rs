//! xDS fan-out, in process and without Envoy: gloo-core's ADS server (`gloo_core::xds`, started
//! as gloo-core starts it: `xds::server::serve` on 127.0.0.1) and many simulated SotW ADS
//! clients in the same process. Run with `bash bench/run-gateway.sh`.
//!
//! ```text
//!  bench ─ publish(snapshot) ─► SnapshotCache ─► ADS server ══ N HTTP/2 connections ══► clients
//!                                                    ▲          (clients / N streams each)  │
//!                                                    └──────────── ACK every response ◄────┘
//! ```
//!
//! Each client subscribes to clusters and listeners (wildcard) and ACKs every response. A
//! snapshot of 1,000 clusters and 10 listeners is published and every client must receive and
//! ACK it (the server's `NodeRegistry` is asked, not only the clients). Then one cluster changes
//! per round: the time from `publish` to each client receiving the new cluster set is measured
//! (p50 / p99 / max over clients); target: the slowest client within 1 s. The server and the
//! clients share the process and its two runtime threads, so the clients' decoding is in the
//! figure.
//!
//! "Each resource serialized once", checked two ways:
//! - Counting: the bench builds every snapshot itself, and every `XdsResource::new` goes through
//!   one counter. A change re-encodes only the changed cluster and reuses the other `Arc`s. The
//!   count is the same for 10 clients and for 1,000: the server never builds an `XdsResource`.
//! - Bytes: every encoded resource carries an extra unknown field (number 10000) appended to its
//!   bytes. prost drops unknown fields on decode, so any decode/re-encode on the way would lose
//!   it; every resource of every response is compared to the snapshot's bytes, marker included.
//!
//! Env: FANOUT_CLIENTS (1000), FANOUT_CONNECTIONS (20), FANOUT_SMALL_CLIENTS (10, the comparison
//! run), FANOUT_CLUSTERS (1000), FANOUT_LISTENERS (10), FANOUT_ROUNDS (5).
//! The markdown report goes to stdout; exit code 1 when a target or a check fails.
mod support;

use std::{
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig},
                Cluster,
            },
            core::v3::{
                address, config_source::ConfigSourceSpecifier, socket_address::PortSpecifier,
                Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress,
            },
            listener::v3::Listener,
        },
        service::discovery::v3::DiscoveryResponse,
    },
    google::protobuf::{Any, Duration as PbDuration},
};
use gloo_core::xds::{
    self, content_version, nodes::NodeRegistry, Snapshot, XdsMetrics, XdsResource, CLUSTER,
    LISTENER,
};
use prost::Message;
use support::{ms, percentile, sorted, thousands, verdict};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const MAX_TARGET: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(120);
/// The unknown field number the bench appends to every encoded resource.
const MARKER_FIELD: u32 = 10_000;

struct Config {
    clients: usize,
    small_clients: usize,
    connections: usize,
    clusters: usize,
    listeners: usize,
    rounds: usize,
}

impl Config {
    fn from_env() -> Config {
        Config {
            clients: support::env_count("FANOUT_CLIENTS", 1000),
            small_clients: support::env_count("FANOUT_SMALL_CLIENTS", 10),
            connections: support::env_count("FANOUT_CONNECTIONS", 20),
            clusters: support::env_count("FANOUT_CLUSTERS", 1000),
            listeners: support::env_count("FANOUT_LISTENERS", 10),
            rounds: support::env_count("FANOUT_ROUNDS", 5),
        }
    }
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cfg = Config::from_env();
    let mut runs = Vec::new();
    for clients in [cfg.small_clients, cfg.clients] {
        let connections = cfg.connections.min(clients);
        runs.push(runtime.block_on(run(&cfg, clients, connections)));
    }
    println!("{}", markdown(&cfg, &runs));
    let pass = runs.iter().all(|r| r.pass()) && encodes_independent(&runs);
    if pass {
        ExitCode::SUCCESS
    } else {
        eprintln!("bench: a target or a check failed");
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots, encoded once each resource

/// The unknown field appended to every resource: `MARKER_FIELD`, length-delimited, "bench".
fn marker() -> Vec<u8> {
    let mut m = Vec::new();
    prost::encoding::encode_key(
        MARKER_FIELD,
        prost::encoding::WireType::LengthDelimited,
        &mut m,
    );
    prost::encoding::encode_varint(5, &mut m);
    m.extend_from_slice(b"bench");
    m
}

/// Builds the bench's snapshots; every encode of a resource is counted here.
struct Encoder {
    encodes: usize,
    marker: Vec<u8>,
}

impl Encoder {
    fn new() -> Encoder {
        Encoder {
            encodes: 0,
            marker: marker(),
        }
    }

    fn encode<M: Message + prost::Name>(&mut self, name: &str, msg: &M) -> Arc<XdsResource> {
        self.encodes += 1;
        let mut r = XdsResource::new(name, msg);
        r.value.extend_from_slice(&self.marker);
        r.version = content_version(&r.value);
        Arc::new(r)
    }

    fn cluster(&mut self, i: usize, generation: usize) -> Arc<XdsResource> {
        let name = format!("cluster-{i:04}");
        let cluster = Cluster {
            name: name.clone(),
            alt_stat_name: format!("{name}-g{generation}"),
            connect_timeout: Some(PbDuration {
                seconds: 1,
                nanos: 0,
            }),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                eds_config: Some(ConfigSource {
                    resource_api_version: ApiVersion::V3 as i32,
                    config_source_specifier: Some(ConfigSourceSpecifier::Ads(
                        AggregatedConfigSource {},
                    )),
                    ..Default::default()
                }),
                service_name: String::new(),
            }),
            ..Default::default()
        };
        self.encode(&name, &cluster)
    }

    fn listener(&mut self, i: usize) -> Arc<XdsResource> {
        let name = format!("listener-{i:02}");
        let listener = Listener {
            name: name.clone(),
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: "127.0.0.1".into(),
                    port_specifier: Some(PortSpecifier::PortValue(10_000 + i as u32)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        self.encode(&name, &listener)
    }
}

fn insert(snap: &mut Snapshot, type_url: &'static str, r: Arc<XdsResource>) {
    snap.resources
        .entry(type_url)
        .or_default()
        .insert(r.name.clone(), r);
}

/// The resources a wildcard subscriber of `type_url` gets, in the response's (name) order.
fn expected(snap: &Snapshot, type_url: &str) -> Vec<Any> {
    snap.of_type(type_url)
        .into_iter()
        .flatten()
        .map(|(_, r)| r.any())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The clients

struct Received {
    client: usize,
    at: Instant,
    resp: DiscoveryResponse,
}

/// One simulated Envoy: wildcard CDS and LDS on one stream of `channel`; ACKs every response
/// right after handing it (and the time it arrived) to the bench.
async fn client(
    id: usize,
    channel: tonic::transport::Channel,
    to_bench: mpsc::UnboundedSender<Received>,
) {
    let node = format!("bench-{id:04}");
    let (requests, mut responses) = support::ads_stream(
        channel,
        vec![
            support::subscribe(&node, CLUSTER, Vec::new()),
            support::subscribe(&node, LISTENER, Vec::new()),
        ],
    )
    .await;
    while let Ok(Some(resp)) = responses.message().await {
        let at = Instant::now();
        let ack = support::ack(&resp, Vec::new());
        if to_bench
            .send(Received {
                client: id,
                at,
                resp,
            })
            .is_err()
        {
            return;
        }
        if requests.send(ack).await.is_err() {
            return;
        }
    }
}

/// Receives until every client got `version` of `type_url` (a list of (type_url, version)
/// pairs for several at once). Returns what they received of those, by client.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Received>,
    clients: usize,
    want: &[(&str, String)],
    unexpected: &mut usize,
) -> Vec<Received> {
    let mut got = Vec::new();
    let mut done = vec![0usize; clients];
    let mut complete = 0;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while complete < clients {
        let r = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("only {complete} of {clients} clients received {want:?} in {TIMEOUT:?}")
            })
            .expect("the clients are running");
        if want
            .iter()
            .any(|(t, v)| *t == r.resp.type_url && *v == r.resp.version_info)
        {
            done[r.client] += 1;
            if done[r.client] == want.len() {
                complete += 1;
            }
            got.push(r);
        } else {
            *unexpected += 1;
        }
    }
    got
}

/// Waits until the server has recorded every stream's ACK of `version` for each type.
async fn all_acked(nodes: &NodeRegistry, clients: usize, want: &[(&str, String)]) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let streams = nodes.streams();
        let acked = streams
            .iter()
            .filter(|s| {
                want.iter().all(|(t, v)| {
                    s.types
                        .get(*t)
                        .is_some_and(|st| st.version_acked.as_deref() == Some(v.as_str()))
                })
            })
            .count();
        if acked == clients && streams.len() == clients {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {acked} of {clients} streams ACKed {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Counts resources whose bytes differ from the snapshot's or lost the marker.
fn check_bytes(got: &[Received], snap: &Snapshot, marker: &[u8]) -> (usize, usize) {
    let (mut checked, mut bad) = (0, 0);
    for r in got {
        let want = expected(snap, &r.resp.type_url);
        if r.resp.resources.len() != want.len() {
            bad += want.len().max(1);
            continue;
        }
        for (a, b) in r.resp.resources.iter().zip(&want) {
            checked += 1;
            if a != b || !a.value.ends_with(marker) {
                bad += 1;
            }
        }
    }
    (checked, bad)
}

// ---------------------------------------------------------------------------------------------
// One run

struct Run {
    clients: usize,
    connections: usize,
    /// Publish → every client holding and having ACKed the first snapshot (they connect after
    /// it was published: this is their initial sync).
    initial: Duration,
    encodes_first: usize,
    encodes_per_change: Vec<usize>,
    /// Per round: publish → each client's receipt.
    rounds: Vec<Vec<Duration>>,
    cds_response_bytes: usize,
    resources_checked: usize,
    resources_bad: usize,
    /// Responses that were neither the awaited version nor expected (e.g. a resent type).
    unexpected: usize,
}

impl Run {
    fn all(&self) -> Vec<Duration> {
        sorted(self.rounds.iter().flatten().copied().collect())
    }

    fn pass(&self) -> bool {
        self.all().last().is_some_and(|m| *m < MAX_TARGET)
            && self.resources_bad == 0
            && self.unexpected == 0
            && self.encodes_per_change.iter().all(|n| *n == 1)
    }
}

async fn run(cfg: &Config, clients: usize, connections: usize) -> Run {
    let (mut publisher, cache) = xds::channel();
    let (nodes, _nacks) = NodeRegistry::new(XdsMetrics::default());
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(xds::server::serve(
        listener,
        cache,
        nodes.clone(),
        shutdown.clone(),
    ));

    let mut enc = Encoder::new();
    // The marker really is something a decode + re-encode would lose.
    let probe = enc.cluster(0, 0);
    let reencoded = Cluster::decode(probe.value.as_slice())
        .unwrap()
        .encode_to_vec();
    assert!(!reencoded.ends_with(&enc.marker) && probe.value.ends_with(&enc.marker));
    enc.encodes = 0;

    let mut snap = Snapshot::default();
    for i in 0..cfg.clusters {
        insert(&mut snap, CLUSTER, enc.cluster(i, 0));
    }
    for i in 0..cfg.listeners {
        insert(&mut snap, LISTENER, enc.listener(i));
    }
    let encodes_first = enc.encodes;
    let first = Arc::new(snap);
    let want = [
        (CLUSTER, first.type_version(CLUSTER)),
        (LISTENER, first.type_version(LISTENER)),
    ];
    let started = Instant::now();
    publisher.publish(first.clone());

    let channels =
        futures::future::join_all((0..connections).map(|_| support::xds_channel(addr))).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    for id in 0..clients {
        tokio::spawn(client(id, channels[id % connections].clone(), tx.clone()));
    }
    let mut unexpected = 0;
    let got = collect(&mut rx, clients, &want, &mut unexpected).await;
    all_acked(&nodes, clients, &want).await;
    let initial = started.elapsed();
    let (mut resources_checked, mut resources_bad) = check_bytes(&got, &first, &enc.marker);
    let cds_response_bytes = got
        .iter()
        .find(|r| r.resp.type_url == CLUSTER)
        .map_or(0, |r| r.resp.encoded_len());
    drop(got);
    eprintln!(
        "bench[{clients} clients]: initial snapshot received and ACKed by all in {}",
        ms(initial)
    );

    let mut current = first;
    let mut rounds = Vec::new();
    let mut encodes_per_change = Vec::new();
    for round in 1..=cfg.rounds {
        let before = enc.encodes;
        let mut next = (*current).clone();
        insert(&mut next, CLUSTER, enc.cluster(round % cfg.clusters, round));
        encodes_per_change.push(enc.encodes - before);
        let next = Arc::new(next);
        let want = [(CLUSTER, next.type_version(CLUSTER))];
        let published = Instant::now();
        assert!(publisher.publish(next.clone()), "the change is a change");
        let got = collect(&mut rx, clients, &want, &mut unexpected).await;
        let latencies: Vec<Duration> = got.iter().map(|r| r.at - published).collect();
        all_acked(&nodes, clients, &want).await;
        let (c, b) = check_bytes(&got, &next, &enc.marker);
        resources_checked += c;
        resources_bad += b;
        let s = sorted(latencies.clone());
        eprintln!(
            "bench[{clients} clients]: round {round}: p50 {} p99 {} max {}",
            ms(percentile(&s, 50.0)),
            ms(percentile(&s, 99.0)),
            ms(*s.last().unwrap())
        );
        rounds.push(latencies);
        current = next;
    }
    // Anything still queued (nothing should be: every type was ACKed at its last version).
    tokio::time::sleep(Duration::from_millis(100)).await;
    while rx.try_recv().is_ok() {
        unexpected += 1;
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    Run {
        clients,
        connections,
        initial,
        encodes_first,
        encodes_per_change,
        rounds,
        cds_response_bytes,
        resources_checked,
        resources_bad,
        unexpected,
    }
}

fn encodes_independent(runs: &[Run]) -> bool {
    runs.windows(2).all(|w| {
        w[0].encodes_first == w[1].encodes_first
            && w[0].encodes_per_change == w[1].encodes_per_change
    })
}

// ---------------------------------------------------------------------------------------------
// Report

fn markdown(cfg: &Config, runs: &[Run]) -> String {
    let mut out = String::from(
        "### xDS fan-out: one cluster change to every client (SotW ADS, in process)\n\n",
    );
    out.push_str(&format!(
        "Snapshot: {} clusters + {} listeners; clients subscribe to both (wildcard) and ACK every \
         response; {} rounds of one changed cluster each. Latency = `publish` → the client has \
         the new cluster set, over every client of every round.\n\n",
        thousands(cfg.clusters),
        cfg.listeners,
        cfg.rounds
    ));
    out.push_str(
        "| clients | HTTP/2 connections | p50 | p99 | max | slowest round's max | target (max) | result | \
         initial sync of all | CDS response | bytes per change |\n\
         |---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|\n",
    );
    for r in runs {
        let all = r.all();
        let worst_round = r
            .rounds
            .iter()
            .map(|l| l.iter().max().copied().unwrap_or_default())
            .max()
            .unwrap_or_default();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | < {} | {} | {} | {:.0} KiB | {:.1} MiB |\n",
            thousands(r.clients),
            r.connections,
            ms(percentile(&all, 50.0)),
            ms(percentile(&all, 99.0)),
            ms(*all.last().unwrap()),
            ms(worst_round),
            ms(MAX_TARGET),
            verdict(r.pass()),
            ms(r.initial),
            r.cds_response_bytes as f64 / 1024.0,
            (r.cds_response_bytes * r.clients) as f64 / 1048576.0,
        ));
    }
    for r in runs {
        let maxima: Vec<String> = r
            .rounds
            .iter()
            .map(|l| ms(l.iter().max().copied().unwrap_or_default()))
            .collect();
        out.push_str(&format!(
            "\n- slowest client per round, {} clients: {}",
            thousands(r.clients),
            maxima.join(", ")
        ));
    }
    out.push_str(
        "\n\n#### Each resource serialized once\n\n\
         | clients | resource encodes for the first snapshot | encodes per change | resources \
         delivered | not byte-identical to the snapshot (marker lost or differs) | unexpected \
         responses |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        let per_change: Vec<String> = r.encodes_per_change.iter().map(|n| n.to_string()).collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            thousands(r.clients),
            thousands(r.encodes_first),
            per_change.join(", "),
            thousands(r.resources_checked),
            r.resources_bad,
            r.unexpected
        ));
    }
    out.push_str(&format!(
        "\nEncodes independent of the client count: {}.\n",
        verdict(encodes_independent(runs))
    ));
    out
}
