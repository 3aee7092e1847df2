//! What Envoy refused, as the reporter shows it on objects' status.
//!
//! ```text
//!  NodeRegistry ── Verdict::Nack ──► Rejections::on_verdict ──► iter() ──► Rejected statuses
//!               └─ Verdict::Ack ───►   (clears)       ▲
//!  translation pass ──────────────► retain_current ───┘ (clears what changed)
//! ```
//!
//! A rejection is of one resource at one version by one node. It lasts until that node accepts
//! the resource at that version (an ACK whose accepted resources hold it: after Envoy restarted,
//! or when the refusal came from something Envoy lacked at the time), or until the resource
//! changes or leaves the snapshot (the new version may be fine; Envoy's answer to it decides).
//! The versions compared are the resource's own, never a response's type-level version.
use std::collections::BTreeMap;

use super::{
    nodes::{Ack, Nack, Verdict},
    Snapshot,
};

/// The current rejections, by resource name and node.
#[derive(Debug, Default)]
pub struct Rejections {
    by_name: BTreeMap<(String, String), Refused>,
}

#[derive(Debug)]
struct Refused {
    type_url: String,
    /// The resource's version that was refused.
    version: String,
    message: String,
}

/// One resource a node refused.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejected<'a> {
    pub name: &'a str,
    pub node: &'a str,
    pub message: &'a str,
}

impl Rejections {
    /// Takes in Envoy's answer; returns whether the rejections changed (and so the statuses
    /// should be reported again).
    pub fn on_verdict(&mut self, verdict: &Verdict, snapshot: &Snapshot) -> bool {
        match verdict {
            Verdict::Nack(nack) => self.on_nack(nack, snapshot),
            Verdict::Ack(ack) => self.on_ack(ack),
        }
    }

    /// Records the resources a NACK blames, at the versions the node refused (for a NACK that
    /// does not say, the snapshot's current version of each).
    pub fn on_nack(&mut self, nack: &Nack, snapshot: &Snapshot) -> bool {
        let mut changed = false;
        for name in &nack.resource_names {
            let version = nack.resource_versions.get(name).cloned().or_else(|| {
                snapshot
                    .of_type(&nack.type_url)
                    .and_then(|r| r.get(name))
                    .map(|r| r.version.clone())
            });
            let Some(version) = version else { continue };
            self.by_name.insert(
                (name.clone(), nack.node.clone()),
                Refused {
                    type_url: nack.type_url.clone(),
                    version,
                    message: nack.message.clone(),
                },
            );
            changed = true;
        }
        changed
    }

    /// Forgets what the node now accepted at the version it had refused.
    pub fn on_ack(&mut self, ack: &Ack) -> bool {
        let before = self.by_name.len();
        self.by_name.retain(|(name, node), r| {
            !(node == &ack.node
                && r.type_url == ack.type_url
                && ack.accepted.get(name) == Some(r.version.as_str()))
        });
        self.by_name.len() != before
    }

    /// Forgets rejections of resources that changed or left the snapshot.
    pub fn retain_current(&mut self, snapshot: &Snapshot) -> bool {
        let before = self.by_name.len();
        self.by_name.retain(|(name, _), r| {
            snapshot
                .of_type(&r.type_url)
                .and_then(|m| m.get(name))
                .is_some_and(|current| current.version == r.version)
        });
        self.by_name.len() != before
    }

    pub fn iter(&self) -> impl Iterator<Item = Rejected<'_>> {
        self.by_name.iter().map(|((name, node), r)| Rejected {
            name,
            node,
            message: &r.message,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::{
        fixtures::{cluster, cluster_v, routes, snapshot},
        protocol::Held,
        CLUSTER, ROUTE,
    };

    fn nack(node: &str, type_url: &str, name: &str, version: &str) -> Verdict {
        Verdict::Nack(Nack {
            node: node.into(),
            type_url: type_url.into(),
            // The type-level version: never what a resource's rejection is matched by.
            version: "type-level".into(),
            message: format!("{name}: bad"),
            resource_names: vec![name.into()],
            resource_versions: [(name.into(), version.into())].into(),
        })
    }

    fn ack(node: &str, type_url: &str, accepted: &[(&str, &str)]) -> Verdict {
        Verdict::Ack(Ack {
            node: node.into(),
            type_url: type_url.into(),
            version: "type-level-2".into(),
            accepted: accepted.iter().copied().collect::<Held>(),
        })
    }

    fn names(r: &Rejections) -> Vec<(&str, &str)> {
        r.iter().map(|r| (r.name, r.node)).collect()
    }

    #[test]
    fn later_ack_of_the_refused_version_clears_the_rejection() {
        let r1 = routes("r", "bad");
        let snap = snapshot([cluster("a"), r1.clone()]);
        let mut rej = Rejections::default();
        assert!(rej.on_verdict(&nack("envoy-1", ROUTE, "r", &r1.version), &snap));
        assert_eq!(names(&rej), [("r", "envoy-1")]);
        assert_eq!(rej.iter().next().unwrap().message, "r: bad");
        // A pass on the same snapshot keeps it: nothing changed.
        assert!(!rej.retain_current(&snap));
        // An ACK of something else, or by another node, or of another type, clears nothing.
        assert!(!rej.on_verdict(&ack("envoy-1", ROUTE, &[("other", "1")]), &snap));
        assert!(!rej.on_verdict(&ack("envoy-2", ROUTE, &[("r", r1.version.as_str())]), &snap));
        assert!(!rej.on_verdict(
            &ack("envoy-1", CLUSTER, &[("r", r1.version.as_str())]),
            &snap
        ));
        assert!(!rej.is_empty());
        // envoy-1 (restarted) accepts the very version it refused: the status clears, although
        // the resource never changed.
        assert!(rej.on_verdict(&ack("envoy-1", ROUTE, &[("r", r1.version.as_str())]), &snap));
        assert!(rej.is_empty());
    }

    #[test]
    fn ack_of_another_version_leaves_the_rejection_to_the_next_pass() {
        let snap = snapshot([cluster_v("a", "bad")]);
        let bad = snap.of_type(CLUSTER).unwrap()["a"].version.clone();
        let mut rej = Rejections::default();
        rej.on_verdict(&nack("envoy-1", CLUSTER, "a", &bad), &snap);
        // Envoy holds (and re-ACKs) the version before the bad one: still refused.
        let good = cluster("a").version.clone();
        assert!(!rej.on_verdict(&ack("envoy-1", CLUSTER, &[("a", good.as_str())]), &snap));
        assert_eq!(names(&rej), [("a", "envoy-1")]);
        // The resource changes: the rejection goes, whatever Envoy says later.
        assert!(rej.retain_current(&snapshot([cluster("a")])));
        assert!(rej.is_empty());
    }

    #[test]
    fn each_node_s_rejection_lasts_until_that_node_accepts() {
        let snap = snapshot([cluster("a")]);
        let v = snap.of_type(CLUSTER).unwrap()["a"].version.clone();
        let mut rej = Rejections::default();
        rej.on_verdict(&nack("envoy-1", CLUSTER, "a", &v), &snap);
        rej.on_verdict(&nack("envoy-2", CLUSTER, "a", &v), &snap);
        rej.on_verdict(&ack("envoy-1", CLUSTER, &[("a", v.as_str())]), &snap);
        assert_eq!(names(&rej), [("a", "envoy-2")]);
        // A resource that left the snapshot is no longer anyone's rejection.
        assert!(rej.retain_current(&snapshot([cluster("b")])));
        assert!(rej.is_empty());
    }
}
