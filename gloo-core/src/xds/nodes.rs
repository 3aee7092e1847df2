//! The registry of connected ADS streams: what each node was served and whether it ACKed it.
//!
//! ```text
//!  stream task ── StreamHandle::record(events) ──► NodeRegistry ──► dump()  (/config_dump)
//!                                                      │        └─► outstanding_nacks()
//!                                                      └─► mpsc Nack / Verdict ──► reporter
//! ```
//!
//! A stream registers on its first request (which names the node) and leaves when its
//! [`StreamHandle`] drops. Only names and versions are shown, never resource contents, so the
//! dump is safe to show even when Secrets are served. What a stream holds is the state
//! machine's own shared list ([`Held`]), not a copy per stream.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{
    metrics::XdsMetrics,
    protocol::{Event, Held},
};

/// A NACK by one node: Envoy refused `version` of `type_url`, blaming `resource_names` (the
/// names of the refused response that `message` mentions, or if it mentions none, those that
/// changed since the node's last ACK).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Nack {
    pub node: String,
    pub type_url: String,
    pub version: String,
    pub message: String,
    pub resource_names: Vec<String>,
    /// The refused version of each of `resource_names`.
    pub resource_versions: BTreeMap<String, String>,
}

/// An ACK by one node: it accepted `version` of `type_url` and holds `accepted`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub node: String,
    pub type_url: String,
    pub version: String,
    pub accepted: Held,
}

/// Envoy's answers the reporter needs: every NACK, and the ACKs that may clear one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Nack(Nack),
    Ack(Ack),
}

/// Where NACKs (and ACKs) go.
#[derive(Debug)]
enum Reports {
    Nacks(mpsc::UnboundedSender<Nack>),
    Verdicts {
        tx: mpsc::UnboundedSender<Verdict>,
        /// (node, type URL) that NACKed since gloo-core started: only their ACKs can clear a
        /// rejection, so only those are sent.
        nacked: Mutex<BTreeSet<(String, String)>>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Sotw,
    Delta,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Sotw => "sotw",
            Protocol::Delta => "delta",
        }
    }
}

/// What one stream was served of one type, and Envoy's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TypeStatus {
    /// The version of the last response (or of what a reconnecting Envoy already held).
    pub version_sent: Option<String>,
    pub nonce: Option<String>,
    pub version_acked: Option<String>,
    /// The last answer was a NACK, not yet followed by an ACK.
    pub nacked: bool,
    /// What Envoy holds once it applies the last response: name → version.
    pub resources: Held,
    pub last_nack: Option<NackStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NackStatus {
    pub version: String,
    pub message: String,
    pub resource_names: Vec<String>,
    pub resource_versions: BTreeMap<String, String>,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// One connected stream.
#[derive(Clone, Debug, Serialize)]
pub struct StreamStatus {
    pub id: u64,
    pub node: String,
    pub protocol: Protocol,
    pub connected_seconds: u64,
    pub types: BTreeMap<String, TypeStatus>,
}

#[derive(Debug)]
struct Entry {
    node: String,
    protocol: Protocol,
    since: Instant,
    types: BTreeMap<String, TypeStatus>,
}

#[derive(Debug)]
pub struct NodeRegistry {
    streams: Mutex<BTreeMap<u64, Entry>>,
    next_id: AtomicU64,
    reports: Reports,
    metrics: XdsMetrics,
}

impl NodeRegistry {
    /// The registry, and the receiver of every NACK for the reporter. NACKs are few (a refused
    /// version is never resent), so the channel is unbounded; dropping the receiver is fine.
    pub fn new(metrics: XdsMetrics) -> (Arc<Self>, mpsc::UnboundedReceiver<Nack>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self::with_reports(metrics, Reports::Nacks(tx)), rx)
    }

    /// The registry, and the receiver of every NACK and of the ACKs that follow a NACK of the
    /// same node and type, so the reporter can clear a rejection Envoy later accepted.
    pub fn with_verdicts(metrics: XdsMetrics) -> (Arc<Self>, mpsc::UnboundedReceiver<Verdict>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let reports = Reports::Verdicts {
            tx,
            nacked: Mutex::new(BTreeSet::new()),
        };
        (Self::with_reports(metrics, reports), rx)
    }

    fn with_reports(metrics: XdsMetrics, reports: Reports) -> Arc<Self> {
        Arc::new(NodeRegistry {
            streams: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            reports,
            metrics,
        })
    }

    /// A reporter that is gone (or not wired yet) is no reason to fail a stream: sends ignore
    /// a closed channel.
    fn report_nack(&self, nack: Nack) {
        match &self.reports {
            Reports::Nacks(tx) => {
                let _ = tx.send(nack);
            }
            Reports::Verdicts { tx, nacked } => {
                lock(nacked).insert((nack.node.clone(), nack.type_url.clone()));
                let _ = tx.send(Verdict::Nack(nack));
            }
        }
    }

    fn report_ack(&self, node: &str, type_url: &str, version: &str, accepted: &Held) {
        let Reports::Verdicts { tx, nacked } = &self.reports else {
            return;
        };
        if lock(nacked).contains(&(node.to_string(), type_url.to_string())) {
            let _ = tx.send(Verdict::Ack(Ack {
                node: node.to_string(),
                type_url: type_url.to_string(),
                version: version.to_string(),
                accepted: accepted.clone(),
            }));
        }
    }

    pub fn metrics(&self) -> &XdsMetrics {
        &self.metrics
    }

    /// Registers a stream of `node`; it stays listed until the handle drops.
    pub fn connect(self: &Arc<Self>, node: &str, protocol: Protocol) -> StreamHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Entry {
                node: node.to_string(),
                protocol,
                since: Instant::now(),
                types: BTreeMap::new(),
            },
        );
        self.metrics.stream_opened(protocol.as_str());
        StreamHandle {
            registry: self.clone(),
            id,
            node: node.to_string(),
            protocol,
        }
    }

    /// Every connected stream, by stream id.
    pub fn streams(&self) -> Vec<StreamStatus> {
        self.lock()
            .iter()
            .map(|(id, e)| StreamStatus {
                id: *id,
                node: e.node.clone(),
                protocol: e.protocol,
                connected_seconds: e.since.elapsed().as_secs(),
                types: e.types.clone(),
            })
            .collect()
    }

    /// What is served to which node and its ACK state, for the admin `/config_dump`:
    /// `{"streams": n, "nodes": {"<node id>": [{"id", "protocol", "types": {"<type url>":
    /// {"version_sent", "version_acked", "nacked", "resources": {"<name>": "<version>"},
    /// "last_nack"}}}]}}`. Names and versions only, never contents.
    pub fn dump(&self) -> serde_json::Value {
        let streams = self.streams();
        let mut nodes: BTreeMap<String, Vec<StreamStatus>> = BTreeMap::new();
        let n = streams.len();
        for s in streams {
            nodes.entry(s.node.clone()).or_default().push(s);
        }
        serde_json::json!({ "streams": n, "nodes": nodes })
    }

    /// The NACKs not yet followed by an ACK of the same type on the same stream: what the
    /// reporter should still show on objects' status.
    pub fn outstanding_nacks(&self) -> Vec<Nack> {
        let streams = self.lock();
        let mut out = Vec::new();
        for e in streams.values() {
            for (type_url, t) in &e.types {
                if let (true, Some(n)) = (t.nacked, &t.last_nack) {
                    out.push(Nack {
                        node: e.node.clone(),
                        type_url: type_url.clone(),
                        version: n.version.clone(),
                        message: n.message.clone(),
                        resource_names: n.resource_names.clone(),
                        resource_versions: n.resource_versions.clone(),
                    });
                }
            }
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        lock(&self.streams)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A registered stream; dropping it unregisters the stream.
#[derive(Debug)]
pub struct StreamHandle {
    registry: Arc<NodeRegistry>,
    id: u64,
    node: String,
    protocol: Protocol,
}

impl StreamHandle {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Records what the stream's state machine observed; logs and reports NACKs.
    pub fn record(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let registry = &self.registry;
        let mut reports = Vec::new();
        let mut streams = registry.lock();
        let Some(entry) = streams.get_mut(&self.id) else {
            return;
        };
        for event in events {
            match event {
                Event::Sent {
                    type_url,
                    version,
                    nonce,
                    resources,
                } => {
                    registry.metrics.response(type_url);
                    debug!(node = %self.node, %type_url, %version, %nonce, resources = resources.len(), "sent");
                    let t = entry.types.entry(type_url.clone()).or_default();
                    t.version_sent = Some(version.clone());
                    t.nonce = Some(nonce.clone());
                    t.resources = resources.clone();
                }
                Event::Resumed {
                    type_url,
                    version,
                    resources,
                } => {
                    debug!(node = %self.node, %type_url, %version, "resumed: Envoy holds the current version");
                    let t = entry.types.entry(type_url.clone()).or_default();
                    t.version_sent = Some(version.clone());
                    t.version_acked = Some(version.clone());
                    t.nacked = false;
                    t.resources = resources.clone();
                }
                Event::Acked {
                    type_url,
                    version,
                    accepted,
                } => {
                    registry.metrics.ack(type_url);
                    debug!(node = %self.node, %type_url, %version, "ACK");
                    let t = entry.types.entry(type_url.clone()).or_default();
                    t.version_acked = Some(version.clone());
                    t.nacked = false;
                    if !accepted.is_empty() {
                        reports.push(event);
                    }
                }
                Event::Nacked(r) => {
                    registry.metrics.nack(&r.type_url);
                    warn!(
                        node = %self.node, type_url = %r.type_url, version = %r.version,
                        resources = ?r.resource_names, error = %r.message,
                        "Envoy refused configuration (NACK)"
                    );
                    let t = entry.types.entry(r.type_url.clone()).or_default();
                    t.nacked = true;
                    t.last_nack = Some(NackStatus {
                        version: r.version.clone(),
                        message: r.message.clone(),
                        resource_names: r.resource_names.clone(),
                        resource_versions: r.resource_versions.clone(),
                        at: SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs()),
                    });
                    reports.push(event);
                }
            }
        }
        // Sent outside the streams' lock.
        drop(streams);
        for event in reports {
            match event {
                Event::Nacked(r) => registry.report_nack(Nack {
                    node: self.node.clone(),
                    type_url: r.type_url.clone(),
                    version: r.version.clone(),
                    message: r.message.clone(),
                    resource_names: r.resource_names.clone(),
                    resource_versions: r.resource_versions.clone(),
                }),
                Event::Acked {
                    type_url,
                    version,
                    accepted,
                } => registry.report_ack(&self.node, type_url, version, accepted),
                _ => {}
            }
        }
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
        self.registry.metrics.stream_closed(self.protocol.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::{protocol::Rejection, CLUSTER, SECRET};

    #[test]
    fn nack_reaches_the_reporter_and_the_dump() {
        let (registry, mut nacks) = NodeRegistry::new(XdsMetrics::default());
        let handle = registry.connect("envoy-1", Protocol::Sotw);
        handle.record(&[
            Event::Sent {
                type_url: CLUSTER.into(),
                version: "v1".into(),
                nonce: "1".into(),
                resources: [("a", "1")].into_iter().collect(),
            },
            Event::Nacked(Rejection {
                type_url: CLUSTER.into(),
                version: "v1".into(),
                message: "cluster a: bad".into(),
                resource_names: vec!["a".into()],
                resource_versions: [("a".into(), "1".into())].into(),
            }),
        ]);
        let nack = nacks.try_recv().unwrap();
        assert_eq!(nack.node, "envoy-1");
        assert_eq!(nack.resource_names, ["a"]);
        assert_eq!(registry.outstanding_nacks(), [nack]);
        assert_eq!(registry.metrics().nacks(CLUSTER), 1);
        let dump = registry.dump();
        let t = &dump["nodes"]["envoy-1"][0]["types"][CLUSTER];
        assert_eq!(t["nacked"], true);
        assert_eq!(t["resources"]["a"], "1");
        assert_eq!(t["last_nack"]["message"], "cluster a: bad");

        handle.record(&[Event::Acked {
            type_url: CLUSTER.into(),
            version: "v2".into(),
            accepted: [("a", "2")].into_iter().collect(),
        }]);
        assert!(registry.outstanding_nacks().is_empty());
        assert_eq!(registry.metrics().streams("sotw"), 1);
        drop(handle);
        assert_eq!(registry.dump()["streams"], 0);
        assert_eq!(registry.metrics().streams("sotw"), 0);
    }

    #[test]
    fn dump_shows_secret_names_not_contents() {
        let (registry, _nacks) = NodeRegistry::new(XdsMetrics::default());
        let handle = registry.connect("envoy-1", Protocol::Delta);
        handle.record(&[Event::Sent {
            type_url: SECRET.into(),
            version: "v1".into(),
            nonce: "1".into(),
            resources: [("tls-cert", "abc")].into_iter().collect(),
        }]);
        let text = registry.dump().to_string();
        assert!(text.contains("tls-cert"));
        assert!(!text.contains("PRIVATE KEY"));
    }

    fn nack_of_a(version: &str) -> Event {
        Event::Nacked(Rejection {
            type_url: CLUSTER.into(),
            version: format!("type-{version}"),
            message: "bad".into(),
            resource_names: vec!["a".into()],
            resource_versions: [("a".into(), version.into())].into(),
        })
    }

    fn ack_of_a(version: &str) -> Event {
        Event::Acked {
            type_url: CLUSTER.into(),
            version: format!("type-{version}"),
            accepted: [("a", version)].into_iter().collect(),
        }
    }

    #[test]
    fn acks_reach_the_reporter_only_after_a_nack_of_that_node() {
        let (registry, mut verdicts) = NodeRegistry::with_verdicts(XdsMetrics::default());
        let one = registry.connect("envoy-1", Protocol::Sotw);
        let other = registry.connect("envoy-2", Protocol::Sotw);
        // Nothing refused yet: ACKs are nobody's business.
        one.record(&[ack_of_a("1")]);
        assert!(verdicts.try_recv().is_err());
        one.record(&[nack_of_a("2")]);
        let Ok(Verdict::Nack(nack)) = verdicts.try_recv() else {
            panic!("the NACK is reported")
        };
        assert_eq!(nack.resource_versions["a"], "2");
        // Another node's ACK clears nothing of envoy-1's.
        other.record(&[ack_of_a("2")]);
        assert!(verdicts.try_recv().is_err());
        // envoy-1 again, on a new stream (it restarted): its ACK is passed on.
        drop(one);
        let again = registry.connect("envoy-1", Protocol::Sotw);
        again.record(&[ack_of_a("2")]);
        let Ok(Verdict::Ack(ack)) = verdicts.try_recv() else {
            panic!("the ACK is reported")
        };
        assert_eq!(
            (ack.node.as_str(), ack.accepted.get("a")),
            ("envoy-1", Some("2"))
        );
    }

    #[test]
    fn registry_shares_what_the_stream_holds() {
        use crate::xds::fixtures::cluster;
        let (registry, _nacks) = NodeRegistry::new(XdsMetrics::default());
        let handle = registry.connect("envoy-1", Protocol::Sotw);
        let list: crate::xds::ResourceList = vec![cluster("a"), cluster("b")].into();
        handle.record(&[Event::Sent {
            type_url: CLUSTER.into(),
            version: "v1".into(),
            nonce: "1".into(),
            resources: Held::Resources(list.clone()),
        }]);
        let streams = registry.streams();
        let Held::Resources(held) = &streams[0].types[CLUSTER].resources else {
            panic!("a shared list")
        };
        assert!(Arc::ptr_eq(held, &list));
        assert_eq!(
            registry.dump()["nodes"]["envoy-1"][0]["types"][CLUSTER]["resources"]["b"],
            cluster("b").version.as_str()
        );
    }
}
