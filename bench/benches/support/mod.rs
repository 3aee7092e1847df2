//! What the gateway benchmarks (`convergence`, `memory`, `fanout`) share: statistics and
//! formatting of the markdown reports, finding the gloo-core process and reading its memory and
//! metrics, resource builders, a keep-alive HTTP prober, and a simulated Envoy's ADS stream.
//!
//! Each bench compiles this module into its own crate and uses part of it.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use e2e::{Client, Core};
use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient, DiscoveryRequest,
        DiscoveryResponse,
    },
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Streaming};

pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A positive count from the environment, else `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

/// Nearest-rank percentile of sorted samples (`p` in 0..=100).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    assert!(!sorted.is_empty(), "no samples");
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort();
    v
}

pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "FAIL"
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let groups: Vec<&str> = s
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).expect("ASCII digits"))
        .collect();
    groups.join(",")
}

// ---------------------------------------------------------------------------------------------
// The gloo-core process: pid, memory, metrics

/// The gloo-core child of `core`, found by its `--data-dir` argument (unique per Core) since
/// the harness does not expose the pid.
pub fn core_pid(core: &Core) -> Option<u32> {
    let data_dir = core.data_dir();
    let data_dir = data_dir.to_str()?;
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let mut args = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a));
            let is_core = args.next().is_some_and(|exe| exe.ends_with("gloo-core"));
            (is_core && args.any(|a| a == data_dir)).then_some(pid)
        })
}

/// A `kB` field of /proc/<pid>/status (`VmRSS`, `VmHWM`, ...), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One sample (counter, gauge) from gloo-core's `/metrics`, by its exact series name (labels
/// included, e.g. `gloo_translator_passes_total`).
pub async fn metric(core: &Core, series: &str) -> Option<f64> {
    let admin = core.admin;
    let (code, body) = tokio::task::spawn_blocking(move || e2e::http_get(admin, "/metrics"))
        .await
        .ok()??;
    if code != 200 {
        return None;
    }
    body.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

// ---------------------------------------------------------------------------------------------
// Storage API

pub async fn connect(core: &Core, token: &str) -> Client {
    let mut options = core.options(token);
    options.max_message_bytes = Some(MAX_MESSAGE_BYTES);
    options.connect().await.expect("connecting to gloo-core")
}

// ---------------------------------------------------------------------------------------------
// HTTP through Envoy

/// GETs `/` with one Host header over one kept-alive HTTP/1.1 connection, reconnecting when the
/// connection closes: a probe can then ask as fast as Envoy answers, without a new TCP
/// connection (and a TIME_WAIT socket) per request.
/// Response headers, names lower-cased.
pub type Headers = Vec<(String, String)>;

pub struct Prober {
    addr: SocketAddr,
    request: Vec<u8>,
    conn: Option<BufReader<TcpStream>>,
}

impl Prober {
    pub fn new(addr: SocketAddr, host: &str, path: &str) -> Prober {
        Prober {
            addr,
            request: format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(),
            conn: None,
        }
    }

    /// The status and headers of one GET (body read and dropped), or None when nothing answers.
    pub fn get(&mut self) -> Option<(u16, Headers)> {
        // A kept-alive connection may have been closed by Envoy meanwhile: try once more.
        for _ in 0..2 {
            if self.conn.is_none() {
                let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).ok()?;
                s.set_nodelay(true).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
                self.conn = Some(BufReader::new(s));
            }
            match self.exchange() {
                Some((status, headers, keep)) => {
                    if !keep {
                        self.conn = None;
                    }
                    return Some((status, headers));
                }
                None => self.conn = None,
            }
        }
        None
    }

    pub fn status(&mut self) -> Option<u16> {
        self.get().map(|(s, _)| s)
    }

    fn exchange(&mut self) -> Option<(u16, Headers, bool)> {
        let conn = self.conn.as_mut()?;
        conn.get_mut().write_all(&self.request).ok()?;
        let mut line = String::new();
        conn.read_line(&mut line).ok()?;
        let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            if conn.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':')?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let keep = !header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                line.clear();
                conn.read_line(&mut line).ok()?;
                let n = usize::from_str_radix(line.trim(), 16).ok()?;
                let mut skip = vec![0; n + 2];
                conn.read_exact(&mut skip).ok()?;
                if n == 0 {
                    break;
                }
            }
        } else {
            let n: usize = header("content-length").and_then(|v| v.parse().ok())?;
            let mut skip = vec![0; n];
            conn.read_exact(&mut skip).ok()?;
        }
        Some((status, headers, keep))
    }
}

// ---------------------------------------------------------------------------------------------
// A simulated Envoy's ADS stream (state of the world)

/// A first request of a type: `names` empty is a wildcard subscription (CDS, LDS).
pub fn subscribe(node: &str, type_url: &str, names: Vec<String>) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: node.into(),
            cluster: "bench".into(),
            ..Default::default()
        }),
        type_url: type_url.into(),
        resource_names: names,
        ..Default::default()
    }
}

/// The ACK of `resp`; `names` repeats the subscription (empty for a wildcard).
pub fn ack(resp: &DiscoveryResponse, names: Vec<String>) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: resp.version_info.clone(),
        response_nonce: resp.nonce.clone(),
        type_url: resp.type_url.clone(),
        resource_names: names,
        ..Default::default()
    }
}

/// Opens one SotW ADS stream on `channel` (an HTTP/2 connection shared with other streams) and
/// sends `first`. Returns the sender of further requests (ACKs) and the responses.
pub async fn ads_stream(
    channel: Channel,
    first: Vec<DiscoveryRequest>,
) -> (mpsc::Sender<DiscoveryRequest>, Streaming<DiscoveryResponse>) {
    let (tx, rx) = mpsc::channel(16);
    for r in first {
        tx.send(r).await.expect("the request channel is open");
    }
    let mut client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(256 * 1024 * 1024)
        .max_encoding_message_size(256 * 1024 * 1024);
    let responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("opening the ADS stream")
        .into_inner();
    (tx, responses)
}

/// One HTTP/2 connection to an xDS server.
pub async fn xds_channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("an xDS URL")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connecting to the xDS server")
}
