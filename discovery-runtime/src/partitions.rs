//! Last-good results per part of a source. A source that reads several independent parts
//! (one per upstream, region or account) replaces a part's objects only when that part was
//! read successfully; a part that failed keeps what it had, so a transient error never deletes
//! what was found. Parts that no longer exist (the upstream was deleted) are dropped.
use std::collections::BTreeMap;

use proto::v1::Resource;

#[derive(Debug)]
pub struct Partitions<K: Ord> {
    parts: BTreeMap<K, Vec<Resource>>,
}

impl<K: Ord> Default for Partitions<K> {
    fn default() -> Self {
        Partitions {
            parts: BTreeMap::new(),
        }
    }
}

impl<K: Ord> Partitions<K> {
    /// `key` was read successfully: these are its objects now.
    pub fn set(&mut self, key: K, resources: Vec<Resource>) {
        self.parts.insert(key, resources);
    }

    /// Whether `key` has ever been read successfully.
    pub fn contains(&self, key: &K) -> bool {
        self.parts.contains_key(key)
    }

    /// Drops the parts for which `keep` is false (they no longer exist in the source's config).
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.parts.retain(|k, _| keep(k));
    }

    /// Every part's objects, the desired set to Sync.
    pub fn desired(&self) -> Vec<Resource> {
        self.parts.values().flatten().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.parts.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
