//! State-of-the-world ADS, one [`SotwStream`] per gRPC stream: requests and snapshots in,
//! responses and events out, no I/O.
//!
//! ```text
//!  DiscoveryRequest ──► on_request ─┐                        ┌─► SotwResponse (in order)
//!                                   ├─► per type: subscription, in flight, sent, acked ─┤
//!  Snapshot change ───► on_snapshot ┘                        └─► Event (sent, ACK, NACK)
//! ```
//!
//! Every response of a type stands for all of that type the stream is subscribed to (all of it
//! for a wildcard CDS/LDS/SRDS subscription, the named resources that exist otherwise), and its
//! version is the hash of exactly that set. A response of route configurations carries only
//! those of the set that changed since the last response, or that were just subscribed to:
//! Envoy keeps the others (see `protocol::is_partial_type`). A request answers the in-flight response when its nonce is the
//! last one sent for its type; any other non-empty nonce is stale and the request is ignored
//! (Envoy repeats its whole subscription in the next one). The shared rules are in `protocol`.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tracing::debug;

use super::{
    names_version,
    protocol::{
        blame, is_partial_type, is_wildcard_type, push_order, rejection, Event, Held, Nonces,
        Output, Rejection, Subscription, XdsError, ROUTING_TYPES,
    },
    ResourceList, Resources, Snapshot, XdsResource, CLUSTER,
};

/// A `DiscoveryResponse` as the state machine makes it: its resources are the snapshot's own,
/// shared; their encoded bytes are copied only onto the wire (see `wire`).
#[derive(Clone, Debug, PartialEq)]
pub struct SotwResponse {
    pub version_info: String,
    pub type_url: String,
    pub nonce: String,
    /// In name order: all the response stands for, or, for route configurations, the part of
    /// it that Envoy does not hold yet.
    pub resources: ResourceList,
}

/// The protocol state of one state-of-the-world ADS stream.
#[derive(Debug, Default)]
pub struct SotwStream {
    node_id: Option<String>,
    nonces: Nonces,
    types: BTreeMap<String, TypeState>,
}

#[derive(Debug, Default)]
struct TypeState {
    sub: Subscription,
    /// The first request named nothing: a CDS/LDS wildcard until the client names something.
    legacy_wildcard: bool,
    /// The subscription changed since the last response: answer even if the version did not.
    resubscribed: bool,
    /// Names subscribed to since the last response (of a partial type): Envoy holds nothing of
    /// them, whatever was sent before, so the next response carries them.
    added: BTreeSet<String>,
    /// Names a request with a stale nonce left out: Envoy dropped them, and if the next request
    /// names them again they count as added, though the subscription looks the same.
    dropped: BTreeSet<String>,
    /// The version a reconnecting client said it holds, until its first response is decided.
    resume_version: Option<String>,
    last_nonce: Option<String>,
    in_flight: bool,
    /// What the last response held, in name order.
    sent: ResourceList,
    sent_version: Option<String>,
    /// The last answer was a NACK of `sent_version`.
    rejected: bool,
    acked_version: Option<String>,
    /// What Envoy held as of the last ACK, to blame what changed when a NACK names nothing.
    acked: ResourceList,
    last_nack: Option<Rejection>,
    /// The last [`TypeState::desired`], while the snapshot and the subscription stay the same.
    desired: Option<Desired>,
}

/// What a stream should hold of a type, for one sealed snapshot.
#[derive(Debug)]
struct Desired {
    snapshot: u64,
    retain: bool,
    resources: ResourceList,
    version: String,
}

impl SotwStream {
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

    pub fn sent_version(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url)?.sent_version.as_deref()
    }

    pub fn last_nack(&self, type_url: &str) -> Option<&Rejection> {
        self.types.get(type_url)?.last_nack.as_ref()
    }

    /// A request from Envoy: an initial request, an ACK or NACK, and/or a change of the names it
    /// subscribes to.
    pub fn on_request(
        &mut self,
        req: DiscoveryRequest,
        snap: &Snapshot,
    ) -> Result<Output<SotwResponse>, XdsError> {
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

        // A nonce answers a response only if this stream sent one of this type; a client that
        // brings a nonce from an earlier stream is making an initial request.
        if !req.response_nonce.is_empty() && st.last_nonce.is_some() {
            if st.last_nonce.as_deref() != Some(req.response_nonce.as_str()) {
                debug!(type_url = %req.type_url, nonce = %req.response_nonce, "stale nonce, ignored");
                st.note_dropped(&req.type_url, &req.resource_names);
                return Ok(out);
            }
            if st.in_flight {
                st.in_flight = false;
                let version = st.sent_version.clone().unwrap_or_default();
                match &req.error_detail {
                    Some(status) => {
                        let sent = st
                            .sent
                            .iter()
                            .map(|r| (r.name.as_str(), r.version.as_str()));
                        let blamed =
                            blame(&status.message, sent, &Held::Resources(st.acked.clone()));
                        let rejection = rejection(&req.type_url, version, &status.message, blamed);
                        st.rejected = true;
                        st.last_nack = Some(rejection.clone());
                        out.events.push(Event::Nacked(rejection));
                    }
                    None => {
                        st.rejected = false;
                        st.acked_version = Some(version.clone());
                        st.acked = st.sent.clone();
                        out.events.push(Event::Acked {
                            type_url: req.type_url.clone(),
                            version,
                            accepted: Held::Resources(st.acked.clone()),
                        });
                    }
                }
            }
        } else if first && !req.version_info.is_empty() {
            st.resume_version = Some(req.version_info.clone());
        }

        st.resubscribe(&req.type_url, &req.resource_names, first);
        self.flush(snap, &mut out);
        Ok(out)
    }

    /// A new snapshot was published: push what changed for this stream.
    pub fn on_snapshot(&mut self, snap: &Snapshot) -> Output<SotwResponse> {
        let mut out = Output::default();
        self.flush(snap, &mut out);
        out
    }

    /// Sends, in push order, every type whose content for this stream differs from what it was
    /// last sent, unless it waits for an answer (which then holds the types after it).
    fn flush(&mut self, snap: &Snapshot, out: &mut Output<SotwResponse>) {
        let routes_converged = self.routes_converged(snap);
        let mut held = false;
        for type_url in push_order(self.types.keys()) {
            let st = self.types.get_mut(&type_url).expect("a known type");
            if st.sub.is_empty() && st.sent_version.is_none() && !st.resubscribed {
                continue;
            }
            let retain = type_url == CLUSTER && !routes_converged;
            let (desired, version) = st.desired(&type_url, snap, retain);

            if let Some(resume) = st.resume_version.take() {
                if st.sent_version.is_none() && resume == version {
                    // Envoy already holds exactly this: nothing to send, and it counts as ACKed.
                    st.sent = desired;
                    st.sent_version = Some(version.clone());
                    st.acked_version = Some(version.clone());
                    st.acked = st.sent.clone();
                    st.resubscribed = false;
                    st.added.clear();
                    out.events.push(Event::Resumed {
                        type_url: type_url.clone(),
                        version,
                        resources: Held::Resources(st.sent.clone()),
                    });
                    continue;
                }
            }
            let unchanged = st.sent_version.as_deref() == Some(version.as_str());
            let needed = !unchanged || (st.resubscribed && !st.rejected) || !st.added.is_empty();
            if !needed {
                st.resubscribed = false;
                continue;
            }
            if held || st.in_flight {
                held = true;
                continue;
            }
            let nonce = self.nonces.next();
            let resources = if is_partial_type(&type_url) {
                news(&desired, &st.sent, &st.added)
            } else {
                desired.clone()
            };
            out.responses.push(SotwResponse {
                version_info: version.clone(),
                resources,
                type_url: type_url.clone(),
                nonce: nonce.clone(),
            });
            st.added.clear();
            // What was computed for this snapshot stays right with `sent` replaced by it: the
            // resources kept back (retain) are in both.
            st.sent = desired;
            st.sent_version = Some(version.clone());
            st.last_nonce = Some(nonce.clone());
            st.in_flight = true;
            st.rejected = false;
            st.resubscribed = false;
            out.events.push(Event::Sent {
                type_url,
                version,
                nonce,
                resources: Held::Resources(st.sent.clone()),
            });
        }
    }

    /// Whether this stream's listeners and routes are ACKed at what the snapshot holds for it,
    /// so no route of Envoy's can still name a cluster that left the snapshot.
    fn routes_converged(&mut self, snap: &Snapshot) -> bool {
        ROUTING_TYPES.iter().all(|t| match self.types.get_mut(*t) {
            None => true,
            Some(st) if st.sub.is_empty() && st.sent_version.is_none() => true,
            Some(st) => {
                if st.in_flight || st.acked_version != st.sent_version {
                    return false;
                }
                let (_, version) = st.desired(t, snap, false);
                st.sent_version.as_deref() == Some(version.as_str())
            }
        })
    }
}

impl TypeState {
    /// Applies the names of a request. The legacy wildcard (a CDS/LDS stream's first request
    /// names nothing) lasts while requests keep naming nothing; `*` is an explicit wildcard.
    fn resubscribe(&mut self, type_url: &str, names: &[String], first: bool) {
        if first {
            self.legacy_wildcard = names.is_empty() && is_wildcard_type(type_url);
        } else if !names.is_empty() {
            self.legacy_wildcard = false;
        }
        let wildcard = self.legacy_wildcard || names.iter().any(|n| n == "*");
        // Most requests (ACKs) repeat the subscription: compare before building a new one.
        let same = wildcard == self.sub.wildcard
            && names.iter().filter(|n| *n != "*").count() == self.sub.names.len()
            && names
                .iter()
                .filter(|n| *n != "*")
                .all(|n| self.sub.names.contains(n));
        // A repeated subscription with nothing dropped names nothing new: skip the lookups.
        if is_partial_type(type_url) && (!same || !self.dropped.is_empty()) {
            let (old, dropped) = (&self.sub, &self.dropped);
            self.added.extend(
                names
                    .iter()
                    .filter(|n| *n != "*" && (!old.names.contains(*n) || dropped.contains(*n)))
                    .cloned(),
            );
            self.dropped.clear();
        }
        if !same {
            self.sub = Subscription {
                wildcard,
                names: names
                    .iter()
                    .filter(|n| *n != "*")
                    .cloned()
                    .collect::<BTreeSet<_>>(),
            };
            self.resubscribed = true;
            self.desired = None;
        }
    }

    /// Records the subscribed names a request with a stale nonce left out (of a partial type).
    fn note_dropped(&mut self, type_url: &str, names: &[String]) {
        if is_partial_type(type_url) {
            let named: BTreeSet<&str> = names.iter().map(String::as_str).collect();
            let gone = self
                .sub
                .names
                .iter()
                .filter(|n| !named.contains(n.as_str()));
            self.dropped.extend(gone.cloned());
        }
    }

    /// What this stream should hold of `type_url` and its version: the subscribed resources
    /// that exist, plus, when `retain`, those it was sent that have since left the snapshot.
    /// Worked out once per sealed snapshot (and subscription); for a wildcard it is the
    /// snapshot's own shared list and version.
    fn desired(&mut self, type_url: &str, snap: &Snapshot, retain: bool) -> (ResourceList, String) {
        if let (Some(id), Some(d)) = (snap.sealed_id(), &self.desired) {
            if d.snapshot == id && d.retain == retain {
                return (d.resources.clone(), d.version.clone());
            }
        }
        let (resources, version) = self.compute(type_url, snap, retain);
        if let Some(id) = snap.sealed_id() {
            self.desired = Some(Desired {
                snapshot: id,
                retain,
                resources: resources.clone(),
                version: version.clone(),
            });
        }
        (resources, version)
    }

    fn compute(&self, type_url: &str, snap: &Snapshot, retain: bool) -> (ResourceList, String) {
        let current = snap.of_type(type_url);
        // A stream last sent the snapshot's own list has nothing that left it.
        let gone: Vec<&Arc<XdsResource>> = if retain
            && !(snap.sealed_id().is_some() && Arc::ptr_eq(&self.sent, &snap.all_of(type_url)))
        {
            self.sent
                .iter()
                .filter(|r| {
                    current.is_none_or(|c| !c.contains_key(&r.name)) && self.sub.matches(&r.name)
                })
                .collect()
        } else {
            Vec::new()
        };
        if self.sub.wildcard && gone.is_empty() {
            return (snap.all_of(type_url), snap.type_version(type_url));
        }
        // The snapshot's resources this stream subscribes to, in name order.
        let mut desired: Vec<&Arc<XdsResource>> = match current {
            None => Vec::new(),
            Some(c) if self.sub.wildcard => c.values().collect(),
            Some(c) => named(&self.sub.names, c),
        };
        if !gone.is_empty() {
            // Kept back, in their place by name: none of them is in the snapshot.
            desired.extend(gone);
            desired.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let resources: ResourceList = desired.into_iter().cloned().collect();
        let version = version_of(&resources);
        (resources, version)
    }
}

/// The resources of `current` that `names` names, in name order. Both are in name order: with
/// as many names as resources (a proxy subscribes to every scope's route configuration), one
/// walk of both, with no map built; with a few names, a search each.
fn named<'a>(names: &BTreeSet<String>, current: &'a Resources) -> Vec<&'a Arc<XdsResource>> {
    if names.len().saturating_mul(8) < current.len() {
        return names.iter().filter_map(|n| current.get(n)).collect();
    }
    let mut out = Vec::with_capacity(names.len().min(current.len()));
    let (mut wanted, mut held) = (names.iter().peekable(), current.iter().peekable());
    while let (Some(w), Some((h, r))) = (wanted.peek(), held.peek()) {
        match w.as_str().cmp(h.as_str()) {
            std::cmp::Ordering::Less => {
                wanted.next();
            }
            std::cmp::Ordering::Greater => {
                held.next();
            }
            std::cmp::Ordering::Equal => {
                out.push(*r);
                wanted.next();
                held.next();
            }
        }
    }
    out
}

/// What of `desired` a client that was last sent `sent` lacks: what changed or is new since,
/// and everything named in `added`. `sent` and `desired` are in name order.
fn news(desired: &ResourceList, sent: &ResourceList, added: &BTreeSet<String>) -> ResourceList {
    if sent.is_empty() {
        return desired.clone();
    }
    desired
        .iter()
        .filter(|r| {
            added.contains(&r.name)
                || sent
                    .binary_search_by(|s| s.name.as_str().cmp(&r.name))
                    .map_or(true, |i| sent[i].version != r.version)
        })
        .cloned()
        .collect()
}

/// The version of a response: the hash of its resources' names and versions.
fn version_of(resources: &[Arc<XdsResource>]) -> String {
    names_version(
        resources
            .iter()
            .map(|r| (r.name.as_str(), r.version.as_str())),
    )
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::{envoy::config::core::v3::Node, google::rpc::Status};

    use super::*;
    use crate::xds::{fixtures::*, ENDPOINT, LISTENER, ROUTE};

    fn request(type_url: &str, names: &[&str]) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.into(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            node: Some(Node {
                id: "node-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ack(resp: &SotwResponse, names: &[&str]) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            ..request(&resp.type_url, names)
        }
    }

    fn nack(resp: &SotwResponse, names: &[&str], previous: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: previous.into(),
            response_nonce: resp.nonce.clone(),
            error_detail: Some(Status {
                code: 3,
                message: "boom".into(),
                ..Default::default()
            }),
            ..request(&resp.type_url, names)
        }
    }

    #[test]
    fn named_resources_are_those_subscribed_that_exist_in_name_order() {
        let fill: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
        let held: Resources = ["a", "b", "c1", "c10", "d", "x", "y", "z"]
            .into_iter()
            .chain(fill.iter().map(String::as_str))
            .map(|n| {
                (
                    n.to_string(),
                    Arc::new(XdsResource::encoded::<
                        envoy_types::pb::envoy::config::cluster::v3::Cluster,
                    >(n, vec![])),
                )
            })
            .collect();
        // Of 20 held: a few names (a search each) and many (one walk of both), with absent ones.
        for wanted in [
            vec!["c10", "q"],
            vec!["", "a", "c", "c1", "c10", "e", "x", "zz"],
            vec![],
        ] {
            let names: BTreeSet<String> = wanted.iter().map(|n| n.to_string()).collect();
            let got: Vec<&str> = named(&names, &held)
                .iter()
                .map(|r| r.name.as_str())
                .collect();
            let want: Vec<&str> = names
                .iter()
                .filter(|n| held.contains_key(*n))
                .map(String::as_str)
                .collect();
            assert_eq!(got, want, "{wanted:?}");
        }
    }

    fn one(out: Output<SotwResponse>) -> SotwResponse {
        assert_eq!(out.responses.len(), 1, "{:?}", out.responses);
        out.responses.into_iter().next().unwrap()
    }

    fn names(resp: &SotwResponse) -> Vec<String> {
        let anys: Vec<_> = resp.resources.iter().map(|r| r.any()).collect();
        names_in(&resp.type_url, &anys)
    }

    /// A stream that has subscribed to and ACKed all four types of `snap`.
    fn converged(snap: &Snapshot, eds: &[&str], rds: &[&str]) -> SotwStream {
        let mut s = SotwStream::new();
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
            let out = s.on_request(ack(&r, n), snap).unwrap();
            assert!(out.responses.is_empty());
        }
        s
    }

    #[test]
    fn ack_records_version() {
        let snap = snapshot([cluster("a")]);
        let mut s = SotwStream::new();
        let r = one(s.on_request(request(CLUSTER, &[]), &snap).unwrap());
        assert_eq!(r.version_info, snap.type_version(CLUSTER));
        assert_eq!(s.acked_version(CLUSTER), None);
        let out = s.on_request(ack(&r, &[]), &snap).unwrap();
        assert!(out.responses.is_empty());
        assert_eq!(
            out.events,
            [Event::Acked {
                type_url: CLUSTER.into(),
                version: r.version_info.clone(),
                accepted: snap
                    .of_type(CLUSTER)
                    .unwrap()
                    .iter()
                    .map(|(n, r)| (n.as_str(), r.version.as_str()))
                    .collect(),
            }]
        );
        assert_eq!(s.acked_version(CLUSTER), Some(r.version_info.as_str()));
        assert_eq!(s.node_id(), Some("node-1"));
    }

    #[test]
    fn nack_is_not_resent() {
        let snap = snapshot([cluster("a")]);
        let mut s = SotwStream::new();
        let r = one(s.on_request(request(CLUSTER, &[]), &snap).unwrap());
        let out = s.on_request(nack(&r, &[], ""), &snap).unwrap();
        assert!(out.responses.is_empty());
        let Event::Nacked(rej) = &out.events[0] else {
            panic!("{:?}", out.events)
        };
        assert_eq!(rej.version, r.version_info);
        assert_eq!(rej.message, "boom");
        assert_eq!(rej.resource_names, ["a"]);
        assert_eq!(s.last_nack(CLUSTER), Some(rej));
        assert_eq!(s.acked_version(CLUSTER), None);
        // The same snapshot again, or an identical one, sends nothing.
        assert!(s.on_snapshot(&snap).responses.is_empty());
        assert!(s
            .on_snapshot(&snapshot([cluster("a")]))
            .responses
            .is_empty());
    }

    #[test]
    fn nack_then_new_snapshot_is_sent() {
        let snap = snapshot([cluster("a")]);
        let mut s = SotwStream::new();
        let r = one(s.on_request(request(CLUSTER, &[]), &snap).unwrap());
        s.on_request(nack(&r, &[], ""), &snap).unwrap();
        let fixed = snapshot([cluster_v("a", "fixed")]);
        let r2 = one(s.on_snapshot(&fixed));
        assert_eq!(r2.version_info, fixed.type_version(CLUSTER));
        assert_ne!(r2.nonce, r.nonce);
        s.on_request(ack(&r2, &[]), &fixed).unwrap();
        assert_eq!(s.acked_version(CLUSTER), Some(r2.version_info.as_str()));
    }

    #[test]
    fn nack_blames_what_changed_since_the_last_ack() {
        let snap = snapshot([cluster("a"), cluster("b")]);
        let mut s = SotwStream::new();
        let r = one(s.on_request(request(CLUSTER, &[]), &snap).unwrap());
        s.on_request(ack(&r, &[]), &snap).unwrap();
        let next = snapshot([cluster("a"), cluster_v("b", "bad")]);
        let r2 = one(s.on_snapshot(&next));
        let out = s
            .on_request(nack(&r2, &[], &r.version_info), &next)
            .unwrap();
        let Event::Nacked(rej) = &out.events[0] else {
            panic!("{:?}", out.events)
        };
        assert_eq!(rej.resource_names, ["b"]);
    }

    #[test]
    fn stale_nonce_is_ignored() {
        let snap = snapshot([cluster("a")]);
        let mut s = SotwStream::new();
        let r = one(s.on_request(request(CLUSTER, &[]), &snap).unwrap());
        s.on_request(ack(&r, &[]), &snap).unwrap();
        let next = snapshot([cluster("a"), cluster("b")]);
        let r2 = one(s.on_snapshot(&next));
        // A NACK (or anything) carrying the older nonce is ignored.
        let out = s.on_request(nack(&r, &[], ""), &next).unwrap();
        assert!(out.responses.is_empty() && out.events.is_empty());
        assert_eq!(s.acked_version(CLUSTER), Some(r.version_info.as_str()));
        let out = s.on_request(ack(&r2, &[]), &next).unwrap();
        assert_eq!(out.events.len(), 1);
        assert_eq!(s.acked_version(CLUSTER), Some(r2.version_info.as_str()));
    }

    #[test]
    fn nonce_of_an_earlier_stream_is_an_initial_request() {
        let snap = snapshot([cluster("a")]);
        let mut s = SotwStream::new();
        let req = DiscoveryRequest {
            version_info: "old".into(),
            response_nonce: "42".into(),
            ..request(CLUSTER, &[])
        };
        assert_eq!(names(&one(s.on_request(req, &snap).unwrap())), ["a"]);
    }

    #[test]
    fn change_while_in_flight_waits_for_the_answer() {
        let snap = snapshot([cluster("a")]);
        let mut s = SotwStream::new();
        let r = one(s.on_request(request(CLUSTER, &[]), &snap).unwrap());
        let next = snapshot([cluster("a"), cluster("b")]);
        assert!(s.on_snapshot(&next).responses.is_empty());
        let r2 = one(s.on_request(ack(&r, &[]), &next).unwrap());
        assert_eq!(names(&r2), ["a", "b"]);
    }

    #[test]
    fn reconnect_with_current_version_gets_nothing_new() {
        let snap = snapshot([cluster("a"), endpoints("a"), listener("l")]);
        let mut s = SotwStream::new();
        let reconnect = |t: &str, names: &[&str], version: String| DiscoveryRequest {
            version_info: version,
            ..request(t, names)
        };
        let out = s
            .on_request(reconnect(CLUSTER, &[], snap.type_version(CLUSTER)), &snap)
            .unwrap();
        assert!(out.responses.is_empty());
        assert!(matches!(&out.events[..], [Event::Resumed { .. }]));
        assert_eq!(
            s.acked_version(CLUSTER),
            Some(snap.type_version(CLUSTER).as_str())
        );
        let out = s
            .on_request(
                reconnect(ENDPOINT, &["a"], snap.type_version(ENDPOINT)),
                &snap,
            )
            .unwrap();
        assert!(out.responses.is_empty());
        // An older version is answered with the current one.
        let r = one(s
            .on_request(reconnect(LISTENER, &[], "old".into()), &snap)
            .unwrap());
        assert_eq!(names(&r), ["l"]);
        s.on_request(ack(&r, &[]), &snap).unwrap();
        // And the resumed types follow later changes as usual.
        let next = snapshot([cluster("a"), cluster("b"), endpoints("a"), listener("l")]);
        assert_eq!(names(&one(s.on_snapshot(&next))), ["a", "b"]);
    }

    #[test]
    fn unsubscribe_then_resubscribe() {
        let snap = snapshot([endpoints("a"), endpoints("b")]);
        let mut s = SotwStream::new();
        let r = one(s.on_request(request(ENDPOINT, &["a", "b"]), &snap).unwrap());
        assert_eq!(names(&r), ["a", "b"]);
        let r = one(s.on_request(ack(&r, &["a"]), &snap).unwrap());
        assert_eq!(names(&r), ["a"]);
        let r = one(s.on_request(ack(&r, &["a", "b"]), &snap).unwrap());
        assert_eq!(names(&r), ["a", "b"]);
        assert!(s
            .on_request(ack(&r, &["a", "b"]), &snap)
            .unwrap()
            .responses
            .is_empty());
    }

    #[test]
    fn resubscribe_resends_even_at_the_same_version() {
        // Envoy dropped "a" (its cluster went away and came back): it must get it again.
        let snap = snapshot([endpoints("a")]);
        let mut s = SotwStream::new();
        let r = one(s.on_request(request(ENDPOINT, &["a"]), &snap).unwrap());
        let r = one(s.on_request(ack(&r, &[]), &snap).unwrap());
        assert!(names(&r).is_empty());
        let r = one(s.on_request(ack(&r, &["a"]), &snap).unwrap());
        assert_eq!(names(&r), ["a"]);
    }

    #[test]
    fn route_responses_carry_only_what_changed() {
        let snap = snapshot([routes("r1", "a.test"), routes("r2", "b.test")]);
        let mut s = SotwStream::new();
        let r = one(s.on_request(request(ROUTE, &["r1", "r2"]), &snap).unwrap());
        assert_eq!(names(&r), ["r1", "r2"]);
        assert!(s
            .on_request(ack(&r, &["r1", "r2"]), &snap)
            .unwrap()
            .responses
            .is_empty());

        // One of the two changes: the response carries it alone, at the whole set's version.
        let next = snapshot([routes("r1", "a.test"), routes("r2", "c.test")]);
        let r = one(s.on_snapshot(&next));
        assert_eq!(names(&r), ["r2"]);
        assert_eq!(r.version_info, version_of(&next.all_of(ROUTE)));
        s.on_request(ack(&r, &["r1", "r2"]), &next).unwrap();
        assert_eq!(s.acked_version(ROUTE), Some(r.version_info.as_str()));

        // A new name brings just that one; a name that goes needs no resource at all.
        let more = snapshot([
            routes("r1", "a.test"),
            routes("r2", "c.test"),
            routes("r3", "d.test"),
        ]);
        assert!(
            s.on_snapshot(&more).responses.is_empty(),
            "r3 is not subscribed to"
        );
        let r = one(s.on_request(ack(&r, &["r1", "r2", "r3"]), &more).unwrap());
        assert_eq!(names(&r), ["r3"]);
        let r = one(s.on_request(ack(&r, &["r1", "r3"]), &more).unwrap());
        assert!(names(&r).is_empty());
        assert_eq!(
            r.version_info,
            version_of(&[more.all_of(ROUTE)[0].clone(), more.all_of(ROUTE)[2].clone()])
        );

        s.on_request(ack(&r, &["r1", "r3"]), &more).unwrap();

        // A NACKed route configuration is not sent again while it stays the same.
        let bad = snapshot([
            routes("r1", "x.test"),
            routes("r2", "c.test"),
            routes("r3", "d.test"),
        ]);
        let r = one(s.on_snapshot(&bad));
        assert_eq!(names(&r), ["r1"]);
        assert!(s
            .on_request(nack(&r, &["r1", "r3"], "old"), &bad)
            .unwrap()
            .responses
            .is_empty());
        let fixed = snapshot([
            routes("r1", "y.test"),
            routes("r2", "c.test"),
            routes("r3", "e.test"),
        ]);
        assert_eq!(names(&one(s.on_snapshot(&fixed))), ["r1", "r3"]);

        // Other types stay whole.
        let eds = snapshot([endpoints("a"), endpoints("b")]);
        let mut s = SotwStream::new();
        let r = one(s.on_request(request(ENDPOINT, &["a", "b"]), &eds).unwrap());
        s.on_request(ack(&r, &["a", "b"]), &eds).unwrap();
        let next = snapshot([endpoints_v("a", 2), endpoints("b")]);
        assert_eq!(names(&one(s.on_snapshot(&next))), ["a", "b"]);
    }

    #[test]
    fn a_route_dropped_and_named_again_while_a_response_was_in_flight_is_sent_again() {
        let snap = snapshot([routes("r1", "a.test"), routes("r2", "b.test")]);
        let mut s = SotwStream::new();
        let r = one(s.on_request(request(ROUTE, &["r1", "r2"]), &snap).unwrap());
        s.on_request(ack(&r, &["r1", "r2"]), &snap).unwrap();
        let next = snapshot([routes("r1", "c.test"), routes("r2", "b.test")]);
        let in_flight = one(s.on_snapshot(&next));
        assert_eq!(names(&in_flight), ["r1"]);
        // Before the response reaches it, Envoy drops r2 (its stale-nonce request is ignored)...
        assert!(s
            .on_request(ack(&r, &["r1"]), &next)
            .unwrap()
            .responses
            .is_empty());
        // ... and names it again when it ACKs: the subscription looks unchanged, but Envoy
        // holds nothing of r2 now.
        let again = one(s.on_request(ack(&in_flight, &["r1", "r2"]), &next).unwrap());
        assert_eq!(names(&again), ["r2"]);
        assert_eq!(again.version_info, in_flight.version_info);
    }

    #[test]
    fn wildcard_vs_named() {
        let snap = snapshot([cluster("a"), cluster("b"), endpoints("a"), endpoints("b")]);
        let mut s = SotwStream::new();
        assert_eq!(
            names(&one(s.on_request(request(CLUSTER, &[]), &snap).unwrap())),
            ["a", "b"]
        );
        // EDS is never a wildcard: naming nothing gets nothing.
        assert!(s
            .on_request(request(ENDPOINT, &[]), &snap)
            .unwrap()
            .responses
            .is_empty());

        let mut s = SotwStream::new();
        let r = one(s
            .on_request(request(CLUSTER, &["a", "missing"]), &snap)
            .unwrap());
        assert_eq!(names(&r), ["a"]);
        // Once names were given, naming nothing unsubscribes from everything.
        let r = one(s.on_request(ack(&r, &[]), &snap).unwrap());
        assert!(names(&r).is_empty());
        // "*" subscribes to everything explicitly.
        let r = one(s.on_request(ack(&r, &["*"]), &snap).unwrap());
        assert_eq!(names(&r), ["a", "b"]);

        let mut s = SotwStream::new();
        let r = one(s.on_request(request(ENDPOINT, &["b"]), &snap).unwrap());
        assert_eq!(names(&r), ["b"]);
        assert_eq!(
            r.version_info,
            names_version([("b", snap.of_type(ENDPOINT).unwrap()["b"].version.as_str())])
        );
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
    fn routes_wait_for_an_unanswered_cluster_update() {
        let snap = snapshot([cluster("a"), listener("l"), routes("r", "x")]);
        let mut s = converged(&snap, &[], &["r"]);
        let v2 = snapshot([cluster("a"), cluster("b"), listener("l"), routes("r", "x")]);
        let cds = one(s.on_snapshot(&v2));
        // Clusters change again, routes too, while the first CDS push is unanswered: nothing
        // may overtake it.
        let v3 = snapshot([
            cluster("a"),
            cluster("b"),
            cluster("c"),
            listener("l"),
            routes("r", "c"),
        ]);
        assert!(s.on_snapshot(&v3).responses.is_empty());
        let out = s.on_request(ack(&cds, &[]), &v3).unwrap();
        let types: Vec<&str> = out.responses.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(types, [CLUSTER, ROUTE]);
    }

    #[test]
    fn stale_clusters_removed_after_routes_ack() {
        let snap = snapshot([
            cluster("a"),
            cluster("b"),
            listener("l"),
            routes("r", "to-b"),
        ]);
        let mut s = converged(&snap, &[], &["r"]);
        // "b" leaves, "c" arrives, and the route that used "b" now uses "c".
        let next = snapshot([
            cluster("a"),
            cluster("c"),
            listener("l"),
            routes("r", "to-c"),
        ]);
        let out = s.on_snapshot(&next);
        assert_eq!(out.responses.len(), 2);
        let (cds, rds) = (&out.responses[0], &out.responses[1]);
        assert_eq!(cds.type_url, CLUSTER);
        assert_eq!(rds.type_url, ROUTE);
        assert_eq!(names(cds), ["a", "b", "c"]);
        assert!(s
            .on_request(ack(cds, &[]), &next)
            .unwrap()
            .responses
            .is_empty());
        // Routes ACKed at the new version: now "b" goes.
        let cleanup = one(s.on_request(ack(rds, &["r"]), &next).unwrap());
        assert_eq!(cleanup.type_url, CLUSTER);
        assert_eq!(names(&cleanup), ["a", "c"]);
        assert_eq!(cleanup.version_info, next.type_version(CLUSTER));
    }

    #[test]
    fn removal_alone_waits_for_routes() {
        let snap = snapshot([
            cluster("a"),
            cluster("b"),
            listener("l"),
            routes("r", "to-b"),
        ]);
        let mut s = converged(&snap, &[], &["r"]);
        let next = snapshot([cluster("a"), listener("l"), routes("r", "to-a")]);
        // Keeping "b" leaves CDS as it was: only the routes go out.
        let rds = one(s.on_snapshot(&next));
        assert_eq!(rds.type_url, ROUTE);
        let cleanup = one(s.on_request(ack(&rds, &["r"]), &next).unwrap());
        assert_eq!(names(&cleanup), ["a"]);
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
        let out = s
            .on_request(nack(&rds, &["r"], &snap.type_version(ROUTE)), &next)
            .unwrap();
        // Envoy still routes with the old routes, which may name "b".
        assert!(out.responses.is_empty());
        let fixed = snapshot([cluster("a"), listener("l"), routes("r", "good")]);
        let rds = one(s.on_snapshot(&fixed));
        assert_eq!(rds.type_url, ROUTE);
        let cleanup = one(s.on_request(ack(&rds, &["r"]), &fixed).unwrap());
        assert_eq!(names(&cleanup), ["a"]);
    }

    #[test]
    fn removed_cluster_without_route_change_goes_at_once() {
        let snap = snapshot([cluster("a"), cluster("b"), listener("l"), routes("r", "x")]);
        let mut s = converged(&snap, &[], &["r"]);
        let next = snapshot([cluster("a"), listener("l"), routes("r", "x")]);
        assert_eq!(names(&one(s.on_snapshot(&next))), ["a"]);
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

    #[test]
    fn missing_type_url_is_an_error() {
        let mut s = SotwStream::new();
        assert!(matches!(
            s.on_request(DiscoveryRequest::default(), &Snapshot::default()),
            Err(XdsError::MissingTypeUrl)
        ));
    }

    #[test]
    fn wildcard_streams_share_the_snapshot_s_list() {
        let snap = snapshot([cluster("a"), cluster("b"), listener("l")]);
        let all = snap.all_of(CLUSTER);
        let mut streams = [SotwStream::new(), SotwStream::new()];
        for s in &mut streams {
            let out = s.on_request(request(CLUSTER, &[]), &snap).unwrap();
            let Event::Sent { resources, .. } = &out.events[0] else {
                panic!("{:?}", out.events)
            };
            // What the registry is told is the snapshot's own list, not a copy per stream.
            assert!(matches!(resources, Held::Resources(l) if Arc::ptr_eq(l, &all)));
            let r = one(out);
            s.on_request(ack(&r, &[]), &snap).unwrap();
            let st = &s.types[CLUSTER];
            assert!(Arc::ptr_eq(&st.sent, &all) && Arc::ptr_eq(&st.acked, &all));
        }
    }

    #[test]
    fn ack_of_the_current_snapshot_reuses_what_was_worked_out() {
        let snap = snapshot([endpoints("a"), endpoints("b"), endpoints("c")]);
        let mut s = SotwStream::new();
        let r = one(s.on_request(request(ENDPOINT, &["a", "b"]), &snap).unwrap());
        let worked_out = s.types[ENDPOINT]
            .desired
            .as_ref()
            .unwrap()
            .resources
            .clone();
        assert!(s
            .on_request(ack(&r, &["a", "b"]), &snap)
            .unwrap()
            .responses
            .is_empty());
        let after_ack = &s.types[ENDPOINT].desired.as_ref().unwrap().resources;
        assert!(Arc::ptr_eq(&worked_out, after_ack), "recomputed on ACK");
        // A change of names is worked out again, on the same snapshot.
        let r = one(s.on_request(ack(&r, &["a", "c"]), &snap).unwrap());
        assert_eq!(names(&r), ["a", "c"]);
        // And so is a new snapshot.
        let next = snapshot([endpoints("a"), endpoints_v("c", 2)]);
        let r = one(s.on_request(ack(&r, &["a", "c"]), &next).unwrap());
        assert_eq!(
            r.version_info,
            version_of(&[
                next.of_type(ENDPOINT).unwrap()["a"].clone(),
                next.of_type(ENDPOINT).unwrap()["c"].clone()
            ])
        );
    }

    #[test]
    fn sealed_and_unsealed_snapshots_get_the_same_answers() {
        fn script(seal: bool) -> Vec<(String, String, Vec<String>)> {
            let make = |r: Vec<Arc<XdsResource>>| if seal { snapshot(r) } else { unsealed(r) };
            let snap = make(vec![
                cluster("a"),
                cluster("b"),
                listener("l"),
                routes("r", "to-b"),
            ]);
            let mut s = converged(&snap, &[], &["r"]);
            let next = make(vec![
                cluster("a"),
                cluster("c"),
                listener("l"),
                routes("r", "to-c"),
            ]);
            let mut log = Vec::new();
            let mut out = s.on_snapshot(&next).responses;
            while !out.is_empty() {
                let r = out.remove(0);
                log.push((r.type_url.clone(), r.version_info.clone(), names(&r)));
                let names: Vec<&str> = if r.type_url == ROUTE {
                    vec!["r"]
                } else {
                    vec![]
                };
                out.extend(s.on_request(ack(&r, &names), &next).unwrap().responses);
            }
            log
        }
        let sealed = script(true);
        assert_eq!(sealed, script(false));
        // Routes, the CDS update keeping "b", then its removal.
        assert_eq!(sealed.len(), 3, "{sealed:?}");
        assert_eq!(sealed.last().unwrap().2, ["a", "c"]);
    }
}
