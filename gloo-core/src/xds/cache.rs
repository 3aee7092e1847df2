//! The snapshot cache: one writer (the translator loop) publishes whole snapshots, every ADS
//! stream reads the latest one.
//!
//! ```text
//!  SnapshotPublisher::publish ──► watch channel (Option<Arc<Snapshot>>) ──► stream tasks
//!   (one, not Clone)               None until the first publish              (SnapshotCache::subscribe)
//! ```
//!
//! A snapshot equal to the current one (same names and versions for every type: versions are
//! content hashes) is not published, so it wakes no stream. Streams wait for the first snapshot
//! before answering anything: answering a reconnecting Envoy from an empty cache would remove
//! its whole configuration. Resources are shared (`Arc<XdsResource>`) and already encoded; the
//! streams copy their bytes into responses and never encode them again. A published snapshot is
//! sealed first (see [`Snapshot`]): what all streams need of it is computed once, not per stream.
use std::{collections::BTreeMap, sync::Arc};

use tokio::sync::watch;

use super::{Resources, Snapshot};

/// Creates the cache: the publisher goes to the translator loop, the cache to the xDS server.
pub fn channel() -> (SnapshotPublisher, SnapshotCache) {
    let (tx, _) = watch::channel(None);
    let tx = Arc::new(tx);
    (SnapshotPublisher { tx: tx.clone() }, SnapshotCache { tx })
}

/// The only writer of the cache.
#[derive(Debug)]
pub struct SnapshotPublisher {
    tx: Arc<watch::Sender<Option<Arc<Snapshot>>>>,
}

impl SnapshotPublisher {
    /// Makes `snap` the current snapshot. Returns whether it differed from the current one (and
    /// so was pushed to the streams).
    pub fn publish(&mut self, snap: impl Into<Arc<Snapshot>>) -> bool {
        let mut snap = snap.into();
        if let Some(cur) = self.tx.borrow().as_ref() {
            if same_content(cur, &snap) {
                return false;
            }
        }
        // Sealed here, where it stops changing (a snapshot still shared with the caller is
        // copied first): every stream then shares its type versions and wildcard lists.
        Arc::make_mut(&mut snap).seal();
        // The only writer: nothing was published between the comparison and this.
        self.tx.send_replace(Some(snap));
        true
    }

    /// The current snapshot: hand [`SnapshotPublisher::publish`] the only reference to a new
    /// one and take it back from here, so that sealing it does not copy it.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.tx.borrow().clone()
    }
}

/// The readers' side of the cache: cheap to clone.
#[derive(Clone, Debug)]
pub struct SnapshotCache {
    tx: Arc<watch::Sender<Option<Arc<Snapshot>>>>,
}

impl SnapshotCache {
    /// The current snapshot, if one was published yet.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.tx.borrow().clone()
    }

    /// A receiver that is notified of each published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.tx.subscribe()
    }

    /// The version of each type of the current snapshot, for `/config_dump`.
    pub fn versions(&self) -> BTreeMap<String, String> {
        let Some(snap) = self.current() else {
            return BTreeMap::new();
        };
        snap.resources
            .keys()
            .map(|t| (t.to_string(), snap.type_version(t)))
            .collect()
    }
}

/// Whether two snapshots hold the same resources: the same names at the same versions for every
/// type, a type with no resources being the same as an absent one.
fn same_content(a: &Snapshot, b: &Snapshot) -> bool {
    if std::ptr::eq(a, b) {
        return true;
    }
    fn non_empty(s: &Snapshot) -> Vec<(&str, &Resources)> {
        s.resources
            .iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(t, r)| (*t, r))
            .collect()
    }
    let (a, b) = (non_empty(a), non_empty(b));
    a.len() == b.len()
        && a.iter().zip(&b).all(|((ta, ra), (tb, rb))| {
            ta == tb
                && ra.len() == rb.len()
                && ra
                    .iter()
                    .zip(rb.iter())
                    .all(|((na, xa), (nb, xb))| na == nb && xa.version == xb.version)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::{fixtures::*, CLUSTER};

    #[test]
    fn identical_snapshot_notifies_nobody() {
        let (mut publisher, cache) = channel();
        let mut rx = cache.subscribe();
        assert!(cache.current().is_none());
        assert!(publisher.publish(snapshot([cluster("a")])));
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        // Rebuilt from scratch, byte-identical: no push.
        assert!(!publisher.publish(snapshot([cluster("a")])));
        assert!(!rx.has_changed().unwrap());
        // An empty type is no change either.
        let mut with_empty = snapshot([cluster("a")]);
        with_empty
            .resources
            .insert(crate::xds::ROUTE, Default::default());
        assert!(!publisher.publish(with_empty));
        assert!(!rx.has_changed().unwrap());
        assert!(publisher.publish(snapshot([cluster_v("a", "2")])));
        assert!(rx.has_changed().unwrap());
        assert_eq!(
            cache.versions()[CLUSTER],
            snapshot([cluster_v("a", "2")]).type_version(CLUSTER)
        );
    }

    #[test]
    fn published_resources_are_shared_not_copied() {
        let (mut publisher, cache) = channel();
        let a = cluster("a");
        publisher.publish(snapshot([a.clone()]));
        let current = cache.current().unwrap();
        assert!(Arc::ptr_eq(&current.of_type(CLUSTER).unwrap()["a"], &a));
    }
}
