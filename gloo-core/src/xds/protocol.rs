//! What the state-of-the-world (`sotw`) and incremental (`delta`) state machines share: their
//! output, the events they observe, subscriptions, the push order and NACK attribution.
//!
//! Both machines follow the same rules, per type URL:
//! - at most one response is unanswered ("in flight"); a change that arrives meanwhile is sent
//!   when Envoy answers, so a slow Envoy gets the latest snapshot, not every one in between;
//! - types go out in push order (secrets and other dependencies, then CDS, EDS, LDS, RDS); a
//!   type that must wait for its own answer holds the types after it, so a route never reaches
//!   Envoy before the cluster it names;
//! - a NACKed version is not sent again: only a change of content (or of subscription) is;
//! - make-before-break: a cluster that leaves the snapshot stays in what the stream is served
//!   until its LDS and RDS are ACKed at the snapshot's versions.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use serde::Serialize;

use super::{ResourceList, CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, TYPE_ORDER};

/// What one step of a state machine asks the I/O task to do: send `responses` in order, and
/// record `events`.
#[derive(Debug)]
pub struct Output<R> {
    pub responses: Vec<R>,
    pub events: Vec<Event>,
}

impl<R> Default for Output<R> {
    fn default() -> Self {
        Output {
            responses: Vec::new(),
            events: Vec::new(),
        }
    }
}

/// What a state machine observed, for the node registry, metrics and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A response was sent: the type's version is now `version`, and Envoy should hold
    /// `resources` once it ACKs.
    Sent {
        type_url: String,
        version: String,
        nonce: String,
        resources: Held,
    },
    /// A reconnecting Envoy already holds the current resources: nothing was sent.
    Resumed {
        type_url: String,
        version: String,
        resources: Held,
    },
    /// Envoy accepted `version`: it holds `accepted` (all it holds of the type in SotW, the
    /// resources of the accepted response in delta).
    Acked {
        type_url: String,
        version: String,
        accepted: Held,
    },
    Nacked(Rejection),
}

/// Names and versions of resources a stream holds or was sent, shared with the state machine
/// rather than copied for every event: a wildcard stream's list is the snapshot's own.
#[derive(Clone, Debug)]
pub enum Held {
    /// In name order.
    Resources(ResourceList),
    Versions(Arc<BTreeMap<String, String>>),
}

impl Default for Held {
    fn default() -> Self {
        Held::Resources(Arc::new([]))
    }
}

impl Held {
    /// (name, version) pairs in name order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
        match self {
            Held::Resources(l) => Box::new(l.iter().map(|r| (r.name.as_str(), r.version.as_str()))),
            Held::Versions(m) => Box::new(m.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Held::Resources(l) => l.len(),
            Held::Versions(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The version held of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        match self {
            Held::Resources(l) => l
                .binary_search_by(|r| r.name.as_str().cmp(name))
                .ok()
                .map(|i| l[i].version.as_str()),
            Held::Versions(m) => m.get(name).map(String::as_str),
        }
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Held {}

/// As a map of name to version: never the contents (a Secret's key stays where it is).
impl Serialize for Held {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Held {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(iter: I) -> Self {
        Held::Versions(Arc::new(
            iter.into_iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        ))
    }
}

/// A NACK: Envoy refused `version` of `type_url`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub type_url: String,
    /// The version of the refused response (of the whole type).
    pub version: String,
    pub message: String,
    /// The resources of the refused response that Envoy's message names, or when it names none,
    /// those that changed since the last ACK.
    pub resource_names: Vec<String>,
    /// The refused version of each of `resource_names`: what a later ACK must hold to clear it.
    pub resource_versions: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("a discovery request must carry a type_url")]
    MissingTypeUrl,
}

impl From<XdsError> for tonic::Status {
    fn from(e: XdsError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// What a stream asked for, for one type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Subscription {
    pub wildcard: bool,
    pub names: BTreeSet<String>,
}

impl Subscription {
    pub fn matches(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    pub fn is_empty(&self) -> bool {
        !self.wildcard && self.names.is_empty()
    }
}

/// Types a client may subscribe to as a whole by naming nothing in its first request
/// ("legacy wildcard"); EDS, RDS and SDS are always named. Envoy subscribes to scoped route
/// configurations as a whole too, and a response of them is the whole set, as for CDS and LDS.
pub(crate) fn is_wildcard_type(type_url: &str) -> bool {
    type_url == CLUSTER || type_url == LISTENER || type_url == SCOPED_ROUTE
}

/// Types whose state-of-the-world responses need carry only what changed: Envoy keeps each
/// named route configuration it holds until it unsubscribes, whatever a response leaves out
/// (xDS: "all resource types except Listener and Cluster are grouped into responses in the
/// same way as in the incremental protocol variants"). EDS is left whole, because a cluster
/// Envoy re-creates asks again for an assignment under the same name.
pub(crate) fn is_partial_type(type_url: &str) -> bool {
    type_url == ROUTE
}

/// Types whose removals wait for routes to converge (make-before-break).
pub(crate) fn is_retained_type(type_url: &str) -> bool {
    type_url == CLUSTER || type_url == ENDPOINT
}

/// Types that must be ACKed at the snapshot's versions before stale clusters go.
pub(crate) const ROUTING_TYPES: [&str; 3] = [LISTENER, SCOPED_ROUTE, ROUTE];

/// Types in push order: anything not in [`TYPE_ORDER`] (secrets, extension configs: things
/// clusters and listeners depend on) first, by name, then CDS, EDS, LDS, RDS.
pub(crate) fn push_order<'a>(types: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let rank = |t: &str| TYPE_ORDER.iter().position(|o| *o == t).map_or(0, |p| p + 1);
    let mut v: Vec<String> = types.into_iter().cloned().collect();
    v.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    v
}

/// The resources of a refused response to blame, as (name, version): those Envoy's message
/// mentions, else those that changed since the last ACK (`acked`), else all of them.
pub(crate) fn blame<'a>(
    message: &str,
    sent: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    acked: &Held,
) -> Vec<(String, String)> {
    let owned = |(n, v): (&str, &str)| (n.to_string(), v.to_string());
    let mentioned: Vec<_> = sent
        .clone()
        .filter(|(n, _)| mentions(message, n))
        .map(owned)
        .collect();
    if !mentioned.is_empty() {
        return mentioned;
    }
    let changed: Vec<_> = sent
        .clone()
        .filter(|(n, v)| acked.get(n) != Some(v))
        .map(owned)
        .collect();
    if !changed.is_empty() {
        return changed;
    }
    sent.map(owned).collect()
}

/// A [`Rejection`] of `version` blaming `blamed`.
pub(crate) fn rejection(
    type_url: &str,
    version: String,
    message: &str,
    blamed: Vec<(String, String)>,
) -> Rejection {
    Rejection {
        type_url: type_url.to_string(),
        version,
        message: message.to_string(),
        resource_names: blamed.iter().map(|(n, _)| n.clone()).collect(),
        resource_versions: blamed.into_iter().collect(),
    }
}

/// Whether `message` names `name` as a whole word, so that `a` is not found in `cluster_a2`.
fn mentions(message: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let part_of_name = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    message.match_indices(name).any(|(i, _)| {
        let before = message[..i].chars().next_back();
        let after = message[i + name.len()..].chars().next();
        !before.is_some_and(part_of_name) && !after.is_some_and(part_of_name)
    })
}

/// Per-stream nonces: unique within the stream, which is all the protocol asks.
#[derive(Debug, Default)]
pub(crate) struct Nonces(u64);

impl Nonces {
    pub fn next(&mut self) -> String {
        self.0 += 1;
        self.0.to_string()
    }
}

pub(crate) fn control_plane() -> Option<ControlPlane> {
    Some(ControlPlane {
        identifier: "gloo-core".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::SECRET;

    #[test]
    fn push_order_puts_dependencies_first() {
        let types = [ROUTE, LISTENER, SECRET, ENDPOINT, CLUSTER].map(String::from);
        assert_eq!(
            push_order(&types),
            [SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE].map(String::from)
        );
    }

    #[test]
    fn nack_blames_names_the_message_mentions() {
        let sent = [("a", "1"), ("routes", "2")];
        let names = |b: Vec<(String, String)>| b.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(
            names(blame(
                "route config routes: invalid regex",
                sent.iter().copied(),
                &Held::default()
            )),
            ["routes"]
        );
        // "a" only appears inside words: fall back to what changed since the last ACK.
        let acked: Held = [("a", "1")].into_iter().collect();
        assert_eq!(
            blame("bad stat_prefix", sent.iter().copied(), &acked),
            [("routes".to_string(), "2".to_string())]
        );
    }

    #[test]
    fn held_lists_and_maps_compare_and_serialize_alike() {
        use crate::xds::fixtures::cluster;
        let list = Held::Resources(vec![cluster("a"), cluster("b")].into());
        let map: Held = list.iter().collect();
        assert_eq!(list, map);
        assert_eq!(list.get("b"), Some(cluster("b").version.as_str()));
        assert_eq!(list.get("c"), None);
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            serde_json::to_value(&map).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&list).unwrap()["a"],
            cluster("a").version.as_str()
        );
    }
}
