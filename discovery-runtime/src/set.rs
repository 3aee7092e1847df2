//! A desired set as the sync driver keeps it between Syncs: the objects encoded (protobuf,
//! exactly as they go on the wire in a `SyncRequest`), with the set's digest and its count per
//! kind worked out once.
//!
//! ```text
//!  source ──push(Resource)──► DesiredSetBuilder ──finish()──► DesiredSet ──► sync driver
//!            (one at a time;     hashes it canonically,        encoded bytes,   SyncMessage: the
//!             nothing decoded     appends its encoding          digest, counts   bytes copied into
//!             is kept)                                                           the request body
//! ```
//!
//! A decoded `Resource` is large (its `spec` is a oneof as big as the largest kind, inline,
//! plus an allocation per string and map), while a discovered Upstream or Endpoints object
//! encodes to about a hundred bytes: for 20,000 objects that is tens of MiB against a few. The
//! driver holds the newest set for as long as it may have to send it again (retries, the
//! periodic resync), so it holds this form, and a Sync never decodes it: [`SyncMessage`]
//! writes the same bytes a `SyncRequest` with these resources would.
use std::{collections::BTreeMap, sync::Arc};

use prost::{
    bytes::{Buf, BufMut},
    encoding::{self, DecodeContext, WireType},
    DecodeError, Message,
};
use proto::v1::{Resource, SyncRequest};
use sha2::{Digest, Sha256};

use crate::sync::kind_of;

/// A source's complete desired set, encoded. Build one with [`DesiredSet::builder`] (or
/// `collect()` an iterator of [`Resource`]s) and hand it to
/// [`Publisher::publish_set`](crate::sync::Publisher::publish_set).
#[derive(Clone, Debug)]
pub struct DesiredSet {
    /// The objects as the `resources` field (3) of a `SyncRequest`: key, length, message.
    encoded: Vec<u8>,
    len: usize,
    digest: [u8; 32],
    by_kind: BTreeMap<i32, i64>,
}

impl DesiredSet {
    pub fn builder() -> DesiredSetBuilder {
        DesiredSetBuilder::default()
    }

    /// How many objects the set has.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Equal for equal sets, whatever the order of their objects or of their labels and
    /// annotations; different when any object differs.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// How many objects of each kind (`Kind as i32`) the set has.
    pub fn count_by_kind(&self) -> &BTreeMap<i32, i64> {
        &self.by_kind
    }

    /// The bytes the set takes encoded.
    pub fn encoded_len(&self) -> usize {
        self.encoded.len()
    }

    /// The objects, decoded (in the order they were pushed).
    pub fn resources(&self) -> Vec<Resource> {
        SyncRequest::decode(self.encoded.as_slice())
            .expect("a DesiredSet holds only what it encoded itself")
            .resources
    }
}

impl FromIterator<Resource> for DesiredSet {
    fn from_iter<I: IntoIterator<Item = Resource>>(iter: I) -> DesiredSet {
        let mut b = DesiredSet::builder();
        b.extend(iter);
        b.finish()
    }
}

/// Collects a desired set one object at a time, so a source never needs all of it decoded.
#[derive(Default)]
pub struct DesiredSetBuilder {
    encoded: Vec<u8>,
    hashes: Vec<[u8; 32]>,
    by_kind: BTreeMap<i32, i64>,
    scratch: Vec<u8>,
}

impl DesiredSetBuilder {
    pub fn push(&mut self, mut r: Resource) {
        self.hashes.push(canonical_hash(&mut r, &mut self.scratch));
        *self.by_kind.entry(kind_of(&r)).or_default() += 1;
        encoding::message::encode(RESOURCES_FIELD, &r, &mut self.encoded);
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    pub fn finish(mut self) -> DesiredSet {
        // The multiset of object hashes, in a canonical order: independent of the order the
        // objects came in, and still different when any one object differs.
        self.hashes.sort_unstable();
        let mut h = Sha256::new();
        h.update((self.hashes.len() as u64).to_le_bytes());
        for x in &self.hashes {
            h.update(x);
        }
        self.encoded.shrink_to_fit();
        DesiredSet {
            encoded: self.encoded,
            len: self.hashes.len(),
            digest: h.finalize().into(),
            by_kind: self.by_kind,
        }
    }
}

impl Extend<Resource> for DesiredSetBuilder {
    fn extend<I: IntoIterator<Item = Resource>>(&mut self, iter: I) {
        for r in iter {
            self.push(r);
        }
    }
}

/// `SyncRequest.resources`.
const RESOURCES_FIELD: u32 = 3;

/// A `SyncRequest` whose resources are a [`DesiredSet`]: it encodes to the same bytes as
/// `SyncRequest { owner, kinds, resources: set.resources(), dry_run }` without decoding the set.
/// Only ever encoded (it is what the sync driver sends).
#[derive(Clone, Debug, Default)]
pub struct SyncMessage {
    pub owner: String,
    /// `Kind as i32`.
    pub kinds: Vec<i32>,
    pub set: Option<Arc<DesiredSet>>,
    pub dry_run: bool,
}

impl Message for SyncMessage {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.owner.is_empty() {
            encoding::string::encode(1, &self.owner, buf);
        }
        encoding::int32::encode_packed(2, &self.kinds, buf);
        if let Some(set) = &self.set {
            buf.put_slice(&set.encoded);
        }
        if self.dry_run {
            encoding::bool::encode(4, &self.dry_run, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // Never received; skipping keeps decoding well-defined.
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        let owner = if self.owner.is_empty() {
            0
        } else {
            encoding::string::encoded_len(1, &self.owner)
        };
        let set = self.set.as_ref().map_or(0, |s| s.encoded.len());
        let dry_run = if self.dry_run {
            encoding::bool::encoded_len(4, &self.dry_run)
        } else {
            0
        };
        owner + encoding::int32::encoded_len_packed(2, &self.kinds) + set + dry_run
    }

    fn clear(&mut self) {
        *self = SyncMessage::default();
    }
}

/// A hash of one object that does not depend on the order of its labels and annotations.
/// They are HashMaps, which prost encodes in iteration order (random per map), so they are
/// hashed sorted, apart from the rest of the object; `r` is left as it was.
fn canonical_hash(r: &mut Resource, scratch: &mut Vec<u8>) -> [u8; 32] {
    let mut h = Sha256::new();
    let maps = r.metadata.as_mut().map(|m| {
        (
            std::mem::take(&mut m.labels),
            std::mem::take(&mut m.annotations),
        )
    });
    for map in maps.iter().flat_map(|(l, a)| [l, a]) {
        let mut sorted: Vec<(&String, &String)> = map.iter().collect();
        sorted.sort_unstable();
        h.update((sorted.len() as u64).to_le_bytes());
        for (k, v) in sorted {
            for s in [k, v] {
                h.update((s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
        }
    }
    scratch.clear();
    r.encode(scratch).expect("encoding into a Vec cannot fail");
    h.update((scratch.len() as u64).to_le_bytes());
    h.update(&scratch[..]);
    if let (Some(m), Some((labels, annotations))) = (r.metadata.as_mut(), maps) {
        m.labels = labels;
        m.annotations = annotations;
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::v1::{resource::Spec, EndpointsSpec, Kind, Metadata, UpstreamSpec};

    fn upstream(name: &str, labels: &[(&str, &str)]) -> Resource {
        Resource {
            metadata: Some(Metadata {
                name: name.into(),
                namespace: "default".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            spec: Some(Spec::Upstream(UpstreamSpec::default())),
            ..Default::default()
        }
    }

    fn endpoints(name: &str) -> Resource {
        Resource {
            metadata: Some(Metadata {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(Spec::Endpoints(EndpointsSpec {
                upstream: name.into(),
                endpoints: vec![],
            })),
            ..Default::default()
        }
    }

    fn set(items: Vec<Resource>) -> DesiredSet {
        items.into_iter().collect()
    }

    #[test]
    fn a_set_gives_back_the_objects_it_was_built_from() {
        let items = vec![
            upstream("a", &[("app", "a"), ("tier", "web")]),
            endpoints("a"),
        ];
        let s = set(items.clone());
        assert_eq!(s.len(), 2);
        assert_eq!(s.resources(), items);
        assert_eq!(s.count_by_kind()[&(Kind::Upstream as i32)], 1);
        assert_eq!(s.count_by_kind()[&(Kind::Endpoints as i32)], 1);
        assert!(set(vec![]).resources().is_empty());
    }

    #[test]
    fn a_sync_message_is_the_sync_request_on_the_wire() {
        let items = vec![upstream("a", &[("app", "a")]), endpoints("a")];
        for (owner, dry_run, items) in [
            ("discovery-k8s", false, items.clone()),
            ("x", true, vec![]),
            ("", false, items),
        ] {
            let want = SyncRequest {
                owner: owner.into(),
                kinds: vec![Kind::Upstream as i32, Kind::Endpoints as i32],
                resources: items.clone(),
                dry_run,
            };
            let msg = SyncMessage {
                owner: owner.into(),
                kinds: want.kinds.clone(),
                set: Some(Arc::new(set(items))),
                dry_run,
            };
            let bytes = msg.encode_to_vec();
            assert_eq!(bytes.len(), msg.encoded_len());
            assert_eq!(SyncRequest::decode(bytes.as_slice()).unwrap(), want);
            assert_eq!(bytes, want.encode_to_vec(), "the same bytes");
        }
    }

    #[test]
    fn the_digest_ignores_object_and_label_order_and_sees_every_change() {
        let many: Vec<(String, String)> = (0..32)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        let fwd: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let rev: Vec<(&str, &str)> = fwd.iter().rev().copied().collect();
        let a = set(vec![upstream("a", &fwd), upstream("b", &[])]);
        let b = set(vec![upstream("b", &[]), upstream("a", &rev)]);
        assert_eq!(a.digest(), b.digest());

        let changed = [
            set(vec![upstream("a", &fwd)]),
            set(vec![upstream("a", &fwd), upstream("c", &[])]),
            set(vec![upstream("a", &fwd[1..]), upstream("b", &[])]),
            set(vec![upstream("a", &fwd), upstream("b", &[("x", "y")])]),
            set(vec![
                upstream("a", &fwd),
                upstream("b", &[]),
                upstream("b", &[]),
            ]),
            set(vec![upstream("a", &fwd), endpoints("b")]),
        ];
        for c in &changed {
            assert_ne!(a.digest(), c.digest(), "{:?}", c.resources());
        }
    }
}
