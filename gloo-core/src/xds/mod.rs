//! The xDS server: serves translated snapshots to Envoy over ADS (state-of-the-world and
//! delta), tracking what each node has ACKed or NACKed.
//!
//! ```text
//!  translator ──► Snapshot ──► SnapshotCache (watch channel: one writer, many readers)
//!                                   │
//!              ┌────────────────────┼─────────────────────┐
//!        stream task (tonic I/O)  stream task          stream task
//!              │ request in / responses out
//!        sotw::SotwStream / delta::DeltaStream  (synchronous state machines, unit-tested)
//!              │ NACKs, ACK state
//!              ▼
//!        NodeRegistry ──► /config_dump, reporter (NACK → object status), metrics
//! ```
//!
//! Each resource is encoded once, when its snapshot is built; its version is a hash
//! of those bytes, so an unchanged resource keeps its version across translations and across
//! restarts of gloo-core.
//!
//! Wiring: [`cache::channel`] gives the translator its [`cache::SnapshotPublisher`] and the
//! server its [`cache::SnapshotCache`]; [`nodes::NodeRegistry::new`] gives the admin server its
//! `/config_dump` and the reporter its NACK receiver; [`server::serve`] runs the ADS server until
//! the shutdown token fires.
use std::{collections::BTreeMap, sync::Arc};

use envoy_types::pb::google::protobuf::Any;

pub mod cache;
pub mod delta;
pub mod metrics;
pub mod nodes;
pub mod protocol;
pub mod rejections;
pub mod server;
pub mod sotw;
pub mod wire;

pub use cache::{channel, SnapshotCache, SnapshotPublisher};
pub use metrics::XdsMetrics;
pub use nodes::{Ack, Nack, NodeRegistry, Verdict};
pub use protocol::{Event, Held, Output, Rejection, XdsError};
pub use rejections::Rejections;

pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Scoped route configurations (SRDS): which RouteConfiguration serves a request, by its host.
pub const SCOPED_ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration";
/// TLS secrets (SDS). Only their names and versions are ever shown (see `nodes`).
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// The order a snapshot's types are pushed in: make-before-break.
pub const TYPE_ORDER: [&str; 5] = [CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, ROUTE];

/// One Envoy resource, encoded once. Its type URL is one of the served types' constants, not
/// a string of its own: a snapshot of a large configuration holds tens of thousands of these.
#[derive(Clone, Debug, PartialEq)]
pub struct XdsResource {
    pub name: String,
    /// Hex of a hash of `value`.
    pub version: String,
    pub type_url: &'static str,
    /// The encoded message.
    pub value: Vec<u8>,
}

impl XdsResource {
    pub fn new<M: prost::Message + prost::Name>(name: impl Into<String>, msg: &M) -> Self {
        Self::encoded::<M>(name, msg.encode_to_vec())
    }

    /// A resource of type `M` from its bytes, encoded by hand.
    pub fn encoded<M: prost::Name>(name: impl Into<String>, value: Vec<u8>) -> Self {
        XdsResource {
            name: name.into(),
            version: content_version(&value),
            type_url: type_url_of::<M>(),
            value,
        }
    }

    /// The resource as a protobuf `Any`, copied (a delta response carries it so).
    pub fn any(&self) -> Any {
        Any {
            type_url: self.type_url.to_string(),
            value: self.value.clone(),
        }
    }
}

/// The type URL of `M`, one of the served types, found without formatting one (this runs for
/// every resource a pass encodes). A type gloo-core does not serve is a programming error.
fn type_url_of<M: prost::Name>() -> &'static str {
    TYPE_ORDER
        .into_iter()
        .chain([SECRET])
        .find(|t| {
            t.strip_prefix("type.googleapis.com/")
                .and_then(|n| n.strip_prefix(M::PACKAGE))
                .and_then(|n| n.strip_prefix('.'))
                == Some(M::NAME)
        })
        .unwrap_or_else(|| panic!("gloo-core serves no {}.{}", M::PACKAGE, M::NAME))
}

/// A short, stable content hash.
pub fn content_version(bytes: &[u8]) -> String {
    digest_version(content_digest(bytes))
}

/// The first 128 bits of the SHA-256 of `bytes`.
pub fn content_digest(bytes: &[u8]) -> u128 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(bytes);
    u128::from_be_bytes(d[..16].try_into().expect("32 bytes"))
}

/// [`content_version`] of the bytes a [`content_digest`] was taken of: its first 64 bits, in hex.
pub fn digest_version(digest: u128) -> String {
    hex(&digest.to_be_bytes()[..8])
}

/// The version of a message whose content is `name` and a set of parts given by their digests
/// (say, a route configuration and its virtual hosts, whose order follows from their names):
/// the parts are summed, so the cost is an addition a part, not a hash of all their versions.
/// Two different sets give the same sum only by chance (the digests are 128-bit SHA-256
/// prefixes of content the writers control only through authenticated writes).
pub fn set_version(name: &str, parts: impl IntoIterator<Item = u128>) -> String {
    use sha2::{Digest, Sha256};
    let (mut sum, mut count) = (0u128, 0u64);
    for p in parts {
        sum = sum.wrapping_add(p);
        count += 1;
    }
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0]);
    h.update(count.to_le_bytes());
    h.update(sum.to_le_bytes());
    hex(&h.finalize()[..8])
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The resources of one type, by name.
pub type Resources = BTreeMap<String, Arc<XdsResource>>;

/// Everything served to Envoy at one moment, by type URL.
///
/// Once published ([`SnapshotPublisher::publish`]) a snapshot is sealed: what every stream would
/// otherwise work out for itself from it (each type's version, the list a wildcard subscriber
/// gets) is computed once and shared. A sealed snapshot is never changed: a clone is unsealed.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub resources: BTreeMap<&'static str, Resources>,
    sealed: Option<Arc<Sealed>>,
}

/// What a published snapshot shares with every stream.
#[derive(Debug)]
struct Sealed {
    /// Unique per sealing, so a stream can tell it already worked on this snapshot.
    id: u64,
    types: BTreeMap<&'static str, (String, ResourceList)>,
}

/// Resources of one type in name order, shared (a response's, a stream's, the registry's).
pub type ResourceList = Arc<[Arc<XdsResource>]>;

impl Clone for Snapshot {
    /// An unsealed copy, free to change.
    fn clone(&self) -> Self {
        Snapshot {
            resources: self.resources.clone(),
            sealed: None,
        }
    }
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.resources == other.resources
    }
}

impl Snapshot {
    pub fn of_type(&self, type_url: &str) -> Option<&Resources> {
        self.resources.get(type_url)
    }

    /// A version for a whole type: a hash of its names and versions.
    pub fn type_version(&self, type_url: &str) -> String {
        if let Some((version, _)) = self.sealed.as_ref().and_then(|s| s.types.get(type_url)) {
            return version.clone();
        }
        names_version(
            self.of_type(type_url)
                .into_iter()
                .flatten()
                .map(|(n, r)| (n.as_str(), r.version.as_str())),
        )
    }

    /// Every resource of a type, in name order.
    pub fn all_of(&self, type_url: &str) -> ResourceList {
        if let Some((_, all)) = self.sealed.as_ref().and_then(|s| s.types.get(type_url)) {
            return all.clone();
        }
        self.of_type(type_url)
            .into_iter()
            .flatten()
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Identifies a sealed snapshot: equal ids, same snapshot. None when not sealed.
    pub(crate) fn sealed_id(&self) -> Option<u64> {
        self.sealed.as_ref().map(|s| s.id)
    }

    /// Computes what streams share; called by the publisher, after which nobody changes it.
    pub(crate) fn seal(&mut self) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        self.sealed = None;
        let types = self
            .resources
            .keys()
            .map(|t| (*t, (self.type_version(t), self.all_of(t))))
            .collect();
        self.sealed = Some(Arc::new(Sealed {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            types,
        }));
    }
}

/// The version of a set of resources given as (name, version) pairs in name order: the same hash
/// [`Snapshot::type_version`] computes for a whole type, so a stream that is sent all of a type
/// reports the snapshot's own type version.
pub fn names_version<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    use sha2::{Digest, Sha256};
    // The hash of `name \0 version \0 ...`, fed piece by piece instead of copied into one buffer.
    let mut h = Sha256::new();
    for (name, version) in pairs {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(version.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize()[..8])
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Small builders of Envoy resources and snapshots for the state machines' tests.
    use envoy_types::pb::envoy::config::{
        cluster::v3::Cluster,
        endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints},
        listener::v3::Listener,
        route::v3::{RouteConfiguration, ScopedRouteConfiguration, VirtualHost},
    };

    use super::*;

    pub fn cluster(name: &str) -> Arc<XdsResource> {
        Arc::new(XdsResource::new(
            name,
            &Cluster {
                name: name.into(),
                ..Default::default()
            },
        ))
    }

    /// A cluster whose content differs from `cluster(name)`.
    pub fn cluster_v(name: &str, alt_stat_name: &str) -> Arc<XdsResource> {
        Arc::new(XdsResource::new(
            name,
            &Cluster {
                name: name.into(),
                alt_stat_name: alt_stat_name.into(),
                ..Default::default()
            },
        ))
    }

    pub fn endpoints(name: &str) -> Arc<XdsResource> {
        endpoints_v(name, 0)
    }

    /// Endpoints whose content differs with `priority`.
    pub fn endpoints_v(name: &str, priority: u32) -> Arc<XdsResource> {
        Arc::new(XdsResource::new(
            name,
            &ClusterLoadAssignment {
                cluster_name: name.into(),
                endpoints: vec![LocalityLbEndpoints {
                    priority,
                    ..Default::default()
                }],
                ..Default::default()
            },
        ))
    }

    pub fn listener(name: &str) -> Arc<XdsResource> {
        listener_v(name, "")
    }

    /// A listener whose content differs with `stat_prefix`.
    pub fn listener_v(name: &str, stat_prefix: &str) -> Arc<XdsResource> {
        Arc::new(XdsResource::new(
            name,
            &Listener {
                name: name.into(),
                stat_prefix: stat_prefix.into(),
                ..Default::default()
            },
        ))
    }

    /// The names of the resources in a list of `Any`s of one type.
    pub fn names_in<'a>(type_url: &str, anys: impl IntoIterator<Item = &'a Any>) -> Vec<String> {
        use prost::Message;
        anys.into_iter()
            .map(|any| {
                let v = any.value.as_slice();
                match type_url {
                    CLUSTER => Cluster::decode(v).unwrap().name,
                    ENDPOINT => ClusterLoadAssignment::decode(v).unwrap().cluster_name,
                    LISTENER => Listener::decode(v).unwrap().name,
                    ROUTE => RouteConfiguration::decode(v).unwrap().name,
                    SCOPED_ROUTE => ScopedRouteConfiguration::decode(v).unwrap().name,
                    other => panic!("no fixture for {other}"),
                }
            })
            .collect()
    }

    /// A route configuration whose one virtual host serves `domain` (change it to change content).
    pub fn routes(name: &str, domain: &str) -> Arc<XdsResource> {
        Arc::new(XdsResource::new(
            name,
            &RouteConfiguration {
                name: name.into(),
                virtual_hosts: vec![VirtualHost {
                    name: "vh".into(),
                    domains: vec![domain.into()],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ))
    }

    /// A snapshot of the given resources, each under its own type URL, sealed as published
    /// snapshots are.
    pub fn snapshot(resources: impl IntoIterator<Item = Arc<XdsResource>>) -> Snapshot {
        let mut snap = unsealed(resources);
        snap.seal();
        snap
    }

    /// The same, not sealed: every stream works it out for itself.
    pub fn unsealed(resources: impl IntoIterator<Item = Arc<XdsResource>>) -> Snapshot {
        let mut snap = Snapshot::default();
        for r in resources {
            snap.resources
                .entry(r.type_url)
                .or_default()
                .insert(r.name.clone(), r);
        }
        snap
    }

    #[test]
    fn sealing_shares_what_every_stream_needs_and_a_clone_is_unsealed() {
        let snap = snapshot([cluster("a"), cluster("b")]);
        let open = unsealed([cluster("a"), cluster("b")]);
        assert_eq!(snap, open);
        assert!(snap.sealed_id().is_some() && open.sealed_id().is_none());
        assert_eq!(snap.type_version(CLUSTER), open.type_version(CLUSTER));
        assert_eq!(snap.all_of(CLUSTER)[..], open.all_of(CLUSTER)[..]);
        // Shared, not rebuilt, on every call.
        assert!(Arc::ptr_eq(&snap.all_of(CLUSTER), &snap.all_of(CLUSTER)));
        // A copy may change, so it must work out its own.
        let mut copy = snap.clone();
        assert_eq!(copy.sealed_id(), None);
        copy.resources
            .get_mut(CLUSTER)
            .unwrap()
            .insert("c".into(), cluster("c"));
        assert_ne!(copy.type_version(CLUSTER), snap.type_version(CLUSTER));
        assert_eq!(copy.all_of(CLUSTER).len(), 3);
        let mut resealed = copy.clone();
        resealed.seal();
        assert_ne!(resealed.sealed_id(), snap.sealed_id());
    }

    #[test]
    fn names_version_matches_type_version() {
        let snap = snapshot([cluster("a"), cluster("b")]);
        let all = snap.of_type(CLUSTER).unwrap();
        assert_eq!(
            names_version(all.iter().map(|(n, r)| (n.as_str(), r.version.as_str()))),
            snap.type_version(CLUSTER)
        );
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn a_digest_version_is_the_content_version() {
        for bytes in [&b""[..], b"a", b"virtual host"] {
            assert_eq!(
                digest_version(content_digest(bytes)),
                content_version(bytes)
            );
        }
    }

    #[test]
    fn a_set_version_sees_every_part_and_the_name_but_not_the_order() {
        let parts: Vec<u128> = ["a", "b", "c"]
            .iter()
            .map(|p| content_digest(p.as_bytes()))
            .collect();
        let v = set_version("rc", parts.clone());
        assert_eq!(v, set_version("rc", parts.iter().rev().copied()));
        assert_ne!(v, set_version("rc2", parts.clone()));
        assert_ne!(v, set_version("rc", parts[..2].to_vec()));
        let mut changed = parts.clone();
        changed[1] = content_digest(b"b2");
        assert_ne!(v, set_version("rc", changed));
        // A part twice is not the same as once, nor as none.
        let mut twice = parts.clone();
        twice.push(parts[0]);
        assert_ne!(v, set_version("rc", twice));
        assert_ne!(set_version("rc", []), set_version("rc", [0]));
    }
}
