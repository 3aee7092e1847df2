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
use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use serde::Serialize;

use super::{CLUSTER, ENDPOINT, LISTENER, ROUTE, TYPE_ORDER};

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
    /// `resources` (name, version) once it ACKs.
    Sent {
        type_url: String,
        version: String,
        nonce: String,
        resources: Vec<(String, String)>,
    },
    /// A reconnecting Envoy already holds the current resources: nothing was sent.
    Resumed {
        type_url: String,
        version: String,
        resources: Vec<(String, String)>,
    },
    Acked {
        type_url: String,
        version: String,
    },
    Nacked(Rejection),
}

/// A NACK: Envoy refused `version` of `type_url`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub type_url: String,
    pub version: String,
    pub message: String,
    /// The resources of the refused response that Envoy's message names, or when it names none,
    /// those that changed since the last ACK.
    pub resource_names: Vec<String>,
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
/// ("legacy wildcard"); EDS, RDS and SDS are always named.
pub(crate) fn is_wildcard_type(type_url: &str) -> bool {
    type_url == CLUSTER || type_url == LISTENER
}

/// Types whose removals wait for routes to converge (make-before-break).
pub(crate) fn is_retained_type(type_url: &str) -> bool {
    type_url == CLUSTER || type_url == ENDPOINT
}

/// Types that must be ACKed at the snapshot's versions before stale clusters go.
pub(crate) const ROUTING_TYPES: [&str; 2] = [LISTENER, ROUTE];

/// Types in push order: anything not in [`TYPE_ORDER`] (secrets, extension configs: things
/// clusters and listeners depend on) first, by name, then CDS, EDS, LDS, RDS.
pub(crate) fn push_order<'a>(types: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let rank = |t: &str| TYPE_ORDER.iter().position(|o| *o == t).map_or(0, |p| p + 1);
    let mut v: Vec<String> = types.into_iter().cloned().collect();
    v.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    v
}

/// The names of a refused response to blame: those Envoy's message mentions, else those that
/// changed since the last ACK (`acked`: name → version), else all of them.
pub(crate) fn blame(
    message: &str,
    sent: &[(String, String)],
    acked: &BTreeMap<String, String>,
) -> Vec<String> {
    let mentioned: Vec<String> = sent
        .iter()
        .filter(|(n, _)| mentions(message, n))
        .map(|(n, _)| n.clone())
        .collect();
    if !mentioned.is_empty() {
        return mentioned;
    }
    let changed: Vec<String> = sent
        .iter()
        .filter(|(n, v)| acked.get(n) != Some(v))
        .map(|(n, _)| n.clone())
        .collect();
    if !changed.is_empty() {
        return changed;
    }
    sent.iter().map(|(n, _)| n.clone()).collect()
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
        let sent = vec![
            ("a".to_string(), "1".to_string()),
            ("routes".to_string(), "2".to_string()),
        ];
        let acked = BTreeMap::new();
        assert_eq!(
            blame("route config routes: invalid regex", &sent, &acked),
            ["routes"]
        );
        // "a" only appears inside words: fall back to what changed since the last ACK.
        let acked = BTreeMap::from([("a".to_string(), "1".to_string())]);
        assert_eq!(blame("bad stat_prefix", &sent, &acked), ["routes"]);
    }
}
