//! A desired set as the sync driver keeps it between Syncs: the objects encoded (protobuf, as
//! they go on the wire), with the set's digest and its count per kind worked out once.
//!
//! ```text
//!  source ──push(Resource)──► DesiredSetBuilder ──finish()──► DesiredSet ──► sync driver
//!            (one at a time;     hashes it canonically,        encoded bytes,   decodes it only
//!             nothing decoded     appends its encoding          digest, counts   to build a Sync
//!             is kept)
//! ```
//!
//! A decoded `Resource` is large (its `spec` is a oneof as big as the largest kind, inline),
//! while a discovered Upstream or Endpoints object encodes to about a hundred bytes: for 20,000
//! objects that is tens of MiB against a few. The driver holds the newest set for as long as
//! it may have to send it again (retries, the periodic resync), so it holds this form.
use std::collections::BTreeMap;

use prost::Message;
use proto::v1::Resource;
use sha2::{Digest, Sha256};

use crate::sync::kind_of;

/// A source's complete desired set, encoded. Build one with [`DesiredSet::builder`] (or
/// `collect()` an iterator of [`Resource`]s) and hand it to
/// [`Publisher::publish_set`](crate::sync::Publisher::publish_set).
#[derive(Clone, Debug)]
pub struct DesiredSet {
    /// The objects, each length-delimited.
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
        let mut out = Vec::with_capacity(self.len);
        let mut buf = self.encoded.as_slice();
        while !buf.is_empty() {
            out.push(
                Resource::decode_length_delimited(&mut buf)
                    .expect("a DesiredSet holds only what it encoded itself"),
            );
        }
        out
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
        r.encode_length_delimited(&mut self.encoded)
            .expect("encoding into a Vec cannot fail");
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
