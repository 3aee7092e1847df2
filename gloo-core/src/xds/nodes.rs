//! The registry of connected ADS streams: what each node was served and whether it ACKed it.
//!
//! ```text
//!  stream task ── StreamHandle::record(events) ──► NodeRegistry ──► dump()  (/config_dump)
//!                                                      │        └─► outstanding_nacks()
//!                                                      └─► mpsc Nack ──► reporter (object status)
//! ```
//!
//! A stream registers on its first request (which names the node) and leaves when its
//! [`StreamHandle`] drops. Only names and versions are kept, never resource contents, so the
//! dump is safe to show even when Secrets are served.
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{metrics::XdsMetrics, protocol::Event};

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
    pub resources: BTreeMap<String, String>,
    pub last_nack: Option<NackStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NackStatus {
    pub version: String,
    pub message: String,
    pub resource_names: Vec<String>,
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
    nacks: mpsc::UnboundedSender<Nack>,
    metrics: XdsMetrics,
}

impl NodeRegistry {
    /// The registry, and the receiver of every NACK for the reporter. NACKs are few (a refused
    /// version is never resent), so the channel is unbounded; dropping the receiver is fine.
    pub fn new(metrics: XdsMetrics) -> (Arc<Self>, mpsc::UnboundedReceiver<Nack>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let registry = NodeRegistry {
            streams: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            nacks: tx,
            metrics,
        };
        (Arc::new(registry), rx)
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
                    });
                }
            }
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }
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
                    t.resources = resources.iter().cloned().collect();
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
                    t.resources = resources.iter().cloned().collect();
                }
                Event::Acked { type_url, version } => {
                    registry.metrics.ack(type_url);
                    debug!(node = %self.node, %type_url, %version, "ACK");
                    let t = entry.types.entry(type_url.clone()).or_default();
                    t.version_acked = Some(version.clone());
                    t.nacked = false;
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
                        at: SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs()),
                    });
                    // A reporter that is gone (or not wired yet) is no reason to fail a stream.
                    let _ = registry.nacks.send(Nack {
                        node: self.node.clone(),
                        type_url: r.type_url.clone(),
                        version: r.version.clone(),
                        message: r.message.clone(),
                        resource_names: r.resource_names.clone(),
                    });
                }
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
                resources: vec![("a".into(), "1".into())],
            },
            Event::Nacked(Rejection {
                type_url: CLUSTER.into(),
                version: "v1".into(),
                message: "cluster a: bad".into(),
                resource_names: vec!["a".into()],
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
            resources: vec![("tls-cert".into(), "abc".into())],
        }]);
        let text = registry.dump().to_string();
        assert!(text.contains("tls-cert"));
        assert!(!text.contains("PRIVATE KEY"));
    }
}
