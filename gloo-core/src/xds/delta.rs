//! Incremental ("delta") ADS, one [`DeltaStream`] per gRPC stream: requests and snapshots in,
//! responses and events out, no I/O.
//!
//! The stream keeps, per type, what Envoy holds (name → version): from its
//! `initial_resource_versions` when it reconnects, then from what it is sent. A response carries
//! only the resources whose version differs from that, and the names Envoy holds that left the
//! snapshot (`removed_resources`). Subscriptions arrive as changes (`resource_names_subscribe` /
//! `_unsubscribe`) and are applied from every request, whatever its nonce; a non-empty nonce
//! answers the in-flight response of its type, and any other is stale: its ACK or NACK is ignored.
//! The shared rules (push order, one response in flight, no resend of a NACKed version,
//! make-before-break) are in `protocol`. Removals of clusters and endpoints wait until the
//! stream's listeners and routes are ACKed at the snapshot's versions.
use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use tracing::debug;

use super::{
    names_version,
    protocol::{
        blame, control_plane, is_retained_type, is_wildcard_type, push_order, rejection, Event,
        Held, Nonces, Output, Rejection, Subscription, XdsError, ROUTING_TYPES,
    },
    Snapshot, XdsResource,
};

/// The protocol state of one incremental ADS stream.
#[derive(Debug, Default)]
pub struct DeltaStream {
    node_id: Option<String>,
    nonces: Nonces,
    types: BTreeMap<String, TypeState>,
}

#[derive(Debug, Default)]
struct TypeState {
    sub: Subscription,
    /// What Envoy holds once it applies what it was sent: name → version. Shared with the
    /// registry's view of the stream; copied only when it changes while shared.
    has: Arc<BTreeMap<String, String>>,
    /// A fresh wildcard subscription is owed a first response, even an empty one: Envoy waits
    /// for it to finish initializing.
    owes_response: bool,
    in_flight: Option<InFlight>,
    /// The `system_version_info` of the last response: a hash of `has`.
    version: Option<String>,
    /// The last answer was a NACK.
    rejected: bool,
    acked_version: Option<String>,
    /// What Envoy holds as of its last ACK.
    acked: Arc<BTreeMap<String, String>>,
    last_nack: Option<Rejection>,
    /// `has` matches what this (sealed snapshot, retain) asks for: no diff to work out. Forgotten
    /// when a request changes the subscription or what Envoy holds.
    clean: Option<(u64, bool)>,
}

#[derive(Debug)]
struct InFlight {
    nonce: String,
    version: String,
    sent: Vec<(String, String)>,
    removed: Vec<String>,
}

/// What must change for a type: resources to (re)send and names to remove.
struct Diff<'a> {
    updates: Vec<&'a Arc<XdsResource>>,
    removals: Vec<String>,
}

impl DeltaStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// The node id of the first request that carried one.
    pub fn node_id(&self) -> Option<&str> {
        self.node_id.as_deref()
    }

    pub fn acked_version(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url)?.acked_version.as_deref()
    }

    pub fn last_nack(&self, type_url: &str) -> Option<&Rejection> {
        self.types.get(type_url)?.last_nack.as_ref()
    }

    /// What Envoy holds of `type_url` (name → version), counting what is in flight.
    pub fn held(&self, type_url: &str) -> Option<&BTreeMap<String, String>> {
        Some(&*self.types.get(type_url)?.has)
    }

    pub fn on_request(
        &mut self,
        req: DeltaDiscoveryRequest,
        snap: &Snapshot,
    ) -> Result<Output<DeltaDiscoveryResponse>, XdsError> {
        if req.type_url.is_empty() {
            return Err(XdsError::MissingTypeUrl);
        }
        if self.node_id.is_none() {
            if let Some(node) = &req.node {
                self.node_id = Some(node.id.clone());
            }
        }
        let mut out = Output::default();
        let first = !self.types.contains_key(&req.type_url);
        let st = self.types.entry(req.type_url.clone()).or_default();
        if first
            || !req.resource_names_subscribe.is_empty()
            || !req.resource_names_unsubscribe.is_empty()
        {
            st.clean = None;
        }

        if !req.response_nonce.is_empty() {
            match st.in_flight.take() {
                Some(f) if f.nonce == req.response_nonce => st.answer(&req, f, &mut out),
                other => {
                    st.in_flight = other;
                    debug!(type_url = %req.type_url, nonce = %req.response_nonce, "stale nonce, ignored");
                }
            }
        }
        if first {
            st.sub.wildcard =
                req.resource_names_subscribe.is_empty() && is_wildcard_type(&req.type_url);
            st.owes_response = st.sub.wildcard && req.initial_resource_versions.is_empty();
            Arc::make_mut(&mut st.has).extend(req.initial_resource_versions.clone());
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                st.sub.wildcard = true;
                continue;
            }
            st.sub.names.insert(name.clone());
            // A (re)subscription is owed the resource, unless Envoy says it already holds it.
            if !req.initial_resource_versions.contains_key(name) && st.has.contains_key(name) {
                Arc::make_mut(&mut st.has).remove(name);
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                st.sub.wildcard = false;
                let TypeState { has, sub, .. } = st;
                Arc::make_mut(has).retain(|n, _| sub.names.contains(n));
                continue;
            }
            st.sub.names.remove(name);
            // Envoy forgets it; under a wildcard it expects to be sent it again.
            if st.has.contains_key(name) {
                Arc::make_mut(&mut st.has).remove(name);
            }
        }
        self.flush(snap, &mut out);
        Ok(out)
    }

    pub fn on_snapshot(&mut self, snap: &Snapshot) -> Output<DeltaDiscoveryResponse> {
        let mut out = Output::default();
        self.flush(snap, &mut out);
        out
    }

    fn flush(&mut self, snap: &Snapshot, out: &mut Output<DeltaDiscoveryResponse>) {
        let routes_converged = self.routes_converged(snap);
        let mut held = false;
        for type_url in push_order(self.types.keys()) {
            let st = self.types.get_mut(&type_url).expect("a known type");
            let retain = is_retained_type(&type_url) && !routes_converged;
            let key = snap.sealed_id().map(|id| (id, retain));
            if key.is_some() && st.clean == key && !st.owes_response {
                continue;
            }
            let Diff { updates, removals } = st.diff(&type_url, snap, retain);
            if updates.is_empty() && removals.is_empty() && !st.owes_response {
                st.clean = key;
                continue;
            }
            if held || st.in_flight.is_some() {
                held = true;
                continue;
            }
            let has = Arc::make_mut(&mut st.has);
            for r in &updates {
                has.insert(r.name.clone(), r.version.clone());
            }
            for n in &removals {
                has.remove(n);
            }
            // Envoy will hold exactly what this snapshot asks for.
            st.clean = key;
            let version = names_version(st.has.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            let nonce = self.nonces.next();
            out.responses.push(DeltaDiscoveryResponse {
                system_version_info: version.clone(),
                resources: updates
                    .iter()
                    .map(|r| Resource {
                        name: r.name.clone(),
                        version: r.version.clone(),
                        resource: Some(r.any()),
                        ..Default::default()
                    })
                    .collect(),
                type_url: type_url.clone(),
                removed_resources: removals.clone(),
                nonce: nonce.clone(),
                control_plane: control_plane(),
                ..Default::default()
            });
            st.in_flight = Some(InFlight {
                nonce: nonce.clone(),
                version: version.clone(),
                sent: updates
                    .iter()
                    .map(|r| (r.name.clone(), r.version.clone()))
                    .collect(),
                removed: removals,
            });
            st.version = Some(version.clone());
            st.owes_response = false;
            out.events.push(Event::Sent {
                type_url,
                version,
                nonce,
                resources: Held::Versions(st.has.clone()),
            });
        }
    }

    /// Whether this stream's listeners and routes are ACKed at what the snapshot holds for it.
    fn routes_converged(&self, snap: &Snapshot) -> bool {
        ROUTING_TYPES.iter().all(|t| match self.types.get(*t) {
            None => true,
            Some(st) => {
                if st.in_flight.is_some() || st.rejected {
                    return false;
                }
                if snap
                    .sealed_id()
                    .is_some_and(|id| st.clean == Some((id, false)))
                {
                    return true;
                }
                let diff = st.diff(t, snap, false);
                diff.updates.is_empty() && diff.removals.is_empty()
            }
        })
    }
}

impl TypeState {
    /// Records Envoy's answer to the in-flight response.
    fn answer(
        &mut self,
        req: &DeltaDiscoveryRequest,
        f: InFlight,
        out: &mut Output<DeltaDiscoveryResponse>,
    ) {
        match &req.error_detail {
            Some(status) => {
                let sent = f.sent.iter().map(|(n, v)| (n.as_str(), v.as_str()));
                let blamed = blame(&status.message, sent, &Held::Versions(self.acked.clone()));
                let rejection = rejection(&req.type_url, f.version, &status.message, blamed);
                // `has` keeps the refused versions: they are not sent again until they change.
                self.rejected = true;
                self.last_nack = Some(rejection.clone());
                out.events.push(Event::Nacked(rejection));
            }
            None => {
                let accepted = f
                    .sent
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                let acked = Arc::make_mut(&mut self.acked);
                acked.extend(f.sent);
                for n in &f.removed {
                    acked.remove(n);
                }
                self.rejected = false;
                self.acked_version = Some(f.version.clone());
                out.events.push(Event::Acked {
                    type_url: req.type_url.clone(),
                    version: f.version,
                    accepted,
                });
            }
        }
    }

    /// What this stream must be sent of `type_url` to hold the snapshot's subscribed resources;
    /// when `retain`, resources that left the snapshot are not removed yet.
    fn diff<'a>(&self, type_url: &str, snap: &'a Snapshot, retain: bool) -> Diff<'a> {
        let current = snap.of_type(type_url);
        let mut updates = Vec::new();
        if let Some(current) = current {
            let mut consider = |r: &'a Arc<XdsResource>| {
                if self.has.get(&r.name) != Some(&r.version) {
                    updates.push(r);
                }
            };
            if self.sub.wildcard {
                current.values().for_each(&mut consider);
            } else {
                self.sub
                    .names
                    .iter()
                    .filter_map(|n| current.get(n))
                    .for_each(&mut consider);
            }
        }
        let removals = if retain {
            Vec::new()
        } else {
            self.has
                .keys()
                .filter(|n| !self.sub.matches(n) || current.is_none_or(|c| !c.contains_key(*n)))
                .cloned()
                .collect()
        };
        Diff { updates, removals }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::{envoy::config::core::v3::Node, google::rpc::Status};

    use super::*;
    use crate::xds::{fixtures::*, CLUSTER, ENDPOINT, LISTENER, ROUTE};

    fn request(type_url: &str, subscribe: &[&str]) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.into(),
            resource_names_subscribe: subscribe.iter().map(|n| n.to_string()).collect(),
            node: Some(Node {
                id: "node-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ack(resp: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            response_nonce: resp.nonce.clone(),
            ..request(&resp.type_url, &[])
        }
    }

    fn nack(resp: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            error_detail: Some(Status {
                code: 3,
                message: "boom".into(),
                ..Default::default()
            }),
            ..ack(resp)
        }
    }

    fn one(out: Output<DeltaDiscoveryResponse>) -> DeltaDiscoveryResponse {
        assert_eq!(out.responses.len(), 1, "{:?}", out.responses);
        out.responses.into_iter().next().unwrap()
    }

    fn names(resp: &DeltaDiscoveryResponse) -> Vec<String> {
        let names = names_in(
            &resp.type_url,
            resp.resources.iter().filter_map(|r| r.resource.as_ref()),
        );
        let listed: Vec<String> = resp.resources.iter().map(|r| r.name.clone()).collect();
        assert_eq!(names, listed);
        names
    }

    /// A stream that has subscribed to and ACKed all four types of `snap`.
    fn converged(snap: &Snapshot, eds: &[&str], rds: &[&str]) -> DeltaStream {
        let mut s = DeltaStream::new();
        for (t, n) in [
            (CLUSTER, &[][..]),
            (ENDPOINT, eds),
            (LISTENER, &[][..]),
            (ROUTE, rds),
        ] {
            if n.is_empty() && (t == ENDPOINT || t == ROUTE) {
                continue;
            }
            let r = one(s.on_request(request(t, n), snap).unwrap());
            assert!(s.on_request(ack(&r), snap).unwrap().responses.is_empty());
        }
        s
    }

    #[test]
    fn ack_records_version() {
        let snap = snapshot([cluster("a")]);
        let mut s = DeltaStream::new();
        let r = one(s.on_request(request(CLUSTER, &[]), &snap).unwrap());
        assert_eq!(names(&r), ["a"]);
        assert_eq!(r.system_version_info, snap.type_version(CLUSTER));
        let out = s.on_request(ack(&r), &snap).unwrap();
        assert_eq!(
            out.events,
            [Event::Acked {
                type_url: CLUSTER.into(),
                version: r.system_version_info.clone(),
                accepted: [("a", cluster("a").version.as_str())].into_iter().collect(),
            }]
        );
        assert_eq!(
            s.acked_version(CLUSTER),
            Some(r.system_version_info.as_str())
        );
        assert_eq!(s.node_id(), Some("node-1"));
    }

    #[test]
    fn empty_wildcard_is_answered() {
        let mut s = DeltaStream::new();
        let r = one(s
            .on_request(request(CLUSTER, &[]), &Snapshot::default())
            .unwrap());
        assert!(r.resources.is_empty() && r.removed_resources.is_empty());
    }

    #[test]
    fn nack_is_not_resent() {
        let snap = snapshot([cluster("a")]);
        let mut s = DeltaStream::new();
        let r = one(s.on_request(request(CLUSTER, &[]), &snap).unwrap());
        let out = s.on_request(nack(&r), &snap).unwrap();
        assert!(out.responses.is_empty());
        let Event::Nacked(rej) = &out.events[0] else {
            panic!("{:?}", out.events)
        };
        assert_eq!(rej.version, r.system_version_info);
        assert_eq!(rej.resource_names, ["a"]);
        assert_eq!(s.last_nack(CLUSTER), Some(rej));
        assert!(s.on_snapshot(&snap).responses.is_empty());
        assert!(s
            .on_snapshot(&snapshot([cluster("a")]))
            .responses
            .is_empty());
    }

    #[test]
    fn nack_then_new_snapshot_is_sent() {
        let snap = snapshot([cluster("a"), cluster("b")]);
        let mut s = DeltaStream::new();
        let r = one(s.on_request(request(CLUSTER, &[]), &snap).unwrap());
        s.on_request(nack(&r), &snap).unwrap();
        let fixed = snapshot([cluster("a"), cluster_v("b", "fixed")]);
        let r2 = one(s.on_snapshot(&fixed));
        // Only what changed since: "a" was sent and is unchanged.
        assert_eq!(names(&r2), ["b"]);
        assert_eq!(r2.system_version_info, fixed.type_version(CLUSTER));
        s.on_request(ack(&r2), &fixed).unwrap();
        assert_eq!(
            s.acked_version(CLUSTER),
            Some(r2.system_version_info.as_str())
        );
    }

    #[test]
    fn stale_nonce_is_ignored() {
        let snap = snapshot([endpoints("a"), endpoints("b")]);
        let mut s = DeltaStream::new();
        let r = one(s.on_request(request(ENDPOINT, &["a"]), &snap).unwrap());
        s.on_request(ack(&r), &snap).unwrap();
        // A NACK naming an answered nonce changes nothing, but its subscriptions still count.
        let out = s
            .on_request(
                DeltaDiscoveryRequest {
                    resource_names_subscribe: vec!["b".into()],
                    ..nack(&r)
                },
                &snap,
            )
            .unwrap();
        assert!(!out.events.iter().any(|e| matches!(e, Event::Nacked(_))));
        assert_eq!(names(&one(out)), ["b"]);
        assert_eq!(s.last_nack(ENDPOINT), None);
    }

    #[test]
    fn reconnect_with_current_version_gets_nothing_new() {
        let snap = snapshot([cluster("a"), cluster("b"), endpoints("a")]);
        let versions = |t: &str| -> HashMap<String, String> {
            snap.of_type(t)
                .unwrap()
                .iter()
                .map(|(n, r)| (n.clone(), r.version.clone()))
                .collect()
        };
        let mut s = DeltaStream::new();
        let out = s
            .on_request(
                DeltaDiscoveryRequest {
                    initial_resource_versions: versions(CLUSTER),
                    ..request(CLUSTER, &[])
                },
                &snap,
            )
            .unwrap();
        assert!(out.responses.is_empty());
        let out = s
            .on_request(
                DeltaDiscoveryRequest {
                    initial_resource_versions: versions(ENDPOINT),
                    ..request(ENDPOINT, &["a"])
                },
                &snap,
            )
            .unwrap();
        assert!(out.responses.is_empty());

        // Holding an old "a" and a "gone" that no longer exists: only those two are fixed.
        let mut s = DeltaStream::new();
        let mut held = versions(CLUSTER);
        held.insert("a".into(), "old".into());
        held.insert("gone".into(), "1".into());
        let r = one(s
            .on_request(
                DeltaDiscoveryRequest {
                    initial_resource_versions: held,
                    ..request(CLUSTER, &[])
                },
                &snap,
            )
            .unwrap());
        assert_eq!(names(&r), ["a"]);
        assert_eq!(r.removed_resources, ["gone"]);
        assert_eq!(r.system_version_info, snap.type_version(CLUSTER));
    }

    #[test]
    fn unsubscribe_then_resubscribe() {
        let snap = snapshot([endpoints("a"), endpoints("b")]);
        let mut s = DeltaStream::new();
        let r = one(s.on_request(request(ENDPOINT, &["a", "b"]), &snap).unwrap());
        assert_eq!(names(&r), ["a", "b"]);
        s.on_request(ack(&r), &snap).unwrap();
        // Unsubscribing needs no answer: Envoy drops "b" by itself.
        let unsub = DeltaDiscoveryRequest {
            resource_names_unsubscribe: vec!["b".into()],
            ..request(ENDPOINT, &[])
        };
        assert!(s.on_request(unsub, &snap).unwrap().responses.is_empty());
        assert_eq!(s.held(ENDPOINT).unwrap().len(), 1);
        // Subscribing again gets it again, at the same version.
        let r = one(s.on_request(request(ENDPOINT, &["b"]), &snap).unwrap());
        assert_eq!(names(&r), ["b"]);
        assert!(r.removed_resources.is_empty());
    }

    #[test]
    fn wildcard_vs_named() {
        let snap = snapshot([cluster("a"), cluster("b"), endpoints("a"), endpoints("b")]);
        let mut s = DeltaStream::new();
        let r = one(s.on_request(request(CLUSTER, &[]), &snap).unwrap());
        assert_eq!(names(&r), ["a", "b"]);
        // EDS naming nothing is subscribed to nothing.
        assert!(s
            .on_request(request(ENDPOINT, &[]), &snap)
            .unwrap()
            .responses
            .is_empty());
        let r = one(s
            .on_request(request(ENDPOINT, &["b", "missing"]), &snap)
            .unwrap());
        assert_eq!(names(&r), ["b"]);
        assert!(r.removed_resources.is_empty());

        // Named CDS, then an explicit "*".
        let mut s = DeltaStream::new();
        let r = one(s.on_request(request(CLUSTER, &["a"]), &snap).unwrap());
        assert_eq!(names(&r), ["a"]);
        s.on_request(ack(&r), &snap).unwrap();
        let r = one(s.on_request(request(CLUSTER, &["*"]), &snap).unwrap());
        assert_eq!(names(&r), ["b"]);
    }

    #[test]
    fn endpoint_removals_wait_for_listeners() {
        let snap = snapshot([endpoints("a"), endpoints("b"), listener("l"), listener("m")]);
        let mut s = converged(&snap, &["a", "b"], &[]);
        let next = snapshot([endpoints("a"), listener("l")]);
        let lds = one(s.on_snapshot(&next));
        assert_eq!(lds.type_url, LISTENER);
        assert_eq!(lds.removed_resources, ["m"]);
        let eds = one(s.on_request(ack(&lds), &next).unwrap());
        assert_eq!(eds.type_url, ENDPOINT);
        assert_eq!(eds.removed_resources, ["b"]);
    }

    #[test]
    fn push_order_is_cds_eds_lds_rds() {
        let snap = snapshot([
            cluster("a"),
            endpoints("a"),
            listener("l"),
            routes("r", "x"),
        ]);
        let mut s = converged(&snap, &["a"], &["r"]);
        let next = snapshot([
            cluster_v("a", "2"),
            endpoints_v("a", 2),
            listener_v("l", "2"),
            routes("r", "y"),
        ]);
        let out = s.on_snapshot(&next);
        let types: Vec<&str> = out.responses.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(types, [CLUSTER, ENDPOINT, LISTENER, ROUTE]);
    }

    #[test]
    fn stale_clusters_removed_after_routes_ack() {
        let snap = snapshot([
            cluster("a"),
            cluster("b"),
            endpoints("b"),
            listener("l"),
            routes("r", "to-b"),
        ]);
        let mut s = converged(&snap, &["b"], &["r"]);
        let next = snapshot([
            cluster("a"),
            cluster("c"),
            listener("l"),
            routes("r", "to-c"),
        ]);
        let out = s.on_snapshot(&next);
        let types: Vec<&str> = out.responses.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(types, [CLUSTER, ROUTE]);
        let (cds, rds) = (&out.responses[0], &out.responses[1]);
        assert_eq!(names(cds), ["c"]);
        assert!(cds.removed_resources.is_empty());
        assert!(s.on_request(ack(cds), &next).unwrap().responses.is_empty());
        // Routes ACKed: now "b" and its endpoints go, clusters first.
        let out = s.on_request(ack(rds), &next).unwrap();
        let types: Vec<&str> = out.responses.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(types, [CLUSTER, ENDPOINT]);
        assert_eq!(out.responses[0].removed_resources, ["b"]);
        assert!(out.responses[0].resources.is_empty());
        assert_eq!(
            out.responses[0].system_version_info,
            next.type_version(CLUSTER)
        );
        assert_eq!(out.responses[1].removed_resources, ["b"]);
    }

    #[test]
    fn stale_clusters_kept_while_routes_are_nacked() {
        let snap = snapshot([
            cluster("a"),
            cluster("b"),
            listener("l"),
            routes("r", "to-b"),
        ]);
        let mut s = converged(&snap, &[], &["r"]);
        let next = snapshot([cluster("a"), listener("l"), routes("r", "bad")]);
        let rds = one(s.on_snapshot(&next));
        assert_eq!(rds.type_url, ROUTE);
        assert!(s
            .on_request(nack(&rds), &next)
            .unwrap()
            .responses
            .is_empty());
        let fixed = snapshot([cluster("a"), listener("l"), routes("r", "good")]);
        let rds = one(s.on_snapshot(&fixed));
        let cleanup = one(s.on_request(ack(&rds), &fixed).unwrap());
        assert_eq!(cleanup.type_url, CLUSTER);
        assert_eq!(cleanup.removed_resources, ["b"]);
    }

    #[test]
    fn identical_snapshot_pushes_nothing() {
        let snap = snapshot([
            cluster("a"),
            endpoints("a"),
            listener("l"),
            routes("r", "x"),
        ]);
        let mut s = converged(&snap, &["a"], &["r"]);
        let same = snapshot([
            cluster("a"),
            endpoints("a"),
            listener("l"),
            routes("r", "x"),
        ]);
        let out = s.on_snapshot(&same);
        assert!(out.responses.is_empty() && out.events.is_empty());
    }
}
