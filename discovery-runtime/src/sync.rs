//! The sync loop shared by every source:
//!
//! ```text
//!  source task ──publish(full desired set)──► watch channel (latest wins)
//!                                                   │
//!                              sync driver ◄────────┘
//!                                │  unchanged since the last good Sync? skip
//!                                │  else Sync(owner, kinds, set), retried with backoff
//!                                ▼
//!                            gloo-core
//! ```
//!
//! A source only ever publishes complete sets that it read successfully; when reading fails it
//! publishes nothing, so an error never deletes anything. While gloo-core is down the driver
//! keeps retrying with backoff, always with the newest set, and catches up when it returns.
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use prost::Message;
use proto::v1::{Kind, Resource, SyncResponse};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use crate::set::{DesiredSet, DesiredSetBuilder, SyncMessage};
use crate::{
    backoff::Backoff,
    client::SyncClient,
    metrics::{KindLabel, Metrics, OpLabel, ResultLabel},
};

/// A source's handle for handing over its desired sets.
#[derive(Clone)]
pub struct Publisher {
    tx: Arc<watch::Sender<Option<Arc<DesiredSet>>>>,
}

/// Where the sync driver receives the newest desired set.
pub type SetReceiver = watch::Receiver<Option<Arc<DesiredSet>>>;

impl Publisher {
    pub fn new() -> (Publisher, SetReceiver) {
        let (tx, rx) = watch::channel(None);
        (Publisher { tx: Arc::new(tx) }, rx)
    }

    /// The source's complete desired set, read successfully. Replaces any set not yet synced.
    pub fn publish(&self, resources: Vec<Resource>) {
        self.publish_set(resources.into_iter().collect());
    }

    /// Like [`Publisher::publish`], for a set built one object at a time with
    /// [`DesiredSet::builder`], so the source never holds it all decoded.
    pub fn publish_set(&self, set: DesiredSet) {
        // The set it replaces is dropped here, before the driver wakes up.
        drop(self.tx.send_replace(Some(Arc::new(set))));
    }
}

/// Sorts a desired set into a canonical order and hashes it, so the same set read twice (in
/// any order) is recognised as unchanged.
pub fn digest(resources: &[Resource]) -> [u8; 32] {
    let mut keyed: Vec<(_, &Resource)> = resources
        .iter()
        .map(|r| {
            let m = r.metadata.as_ref();
            let key = (
                kind_of(r),
                m.map(|m| m.namespace.as_str()).unwrap_or(""),
                m.map(|m| m.name.as_str()).unwrap_or(""),
            );
            (key, r)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    let mut buf = Vec::new();
    for (_, r) in keyed {
        // Labels and annotations are HashMaps, which prost encodes in iteration order (random
        // per map): hash them sorted, apart, so the same set always has the same digest.
        let mut r = r.clone();
        let mut maps = Vec::new();
        if let Some(m) = r.metadata.as_mut() {
            maps.push(std::mem::take(&mut m.labels));
            maps.push(std::mem::take(&mut m.annotations));
        }
        for map in maps {
            let sorted: BTreeMap<String, String> = map.into_iter().collect();
            h.update((sorted.len() as u64).to_le_bytes());
            for (k, v) in sorted {
                for s in [k, v] {
                    h.update((s.len() as u64).to_le_bytes());
                    h.update(s.as_bytes());
                }
            }
        }
        buf.clear();
        r.encode(&mut buf).expect("encoding into a Vec cannot fail");
        h.update((buf.len() as u64).to_le_bytes());
        h.update(&buf);
    }
    h.finalize().into()
}

/// The kind of a resource, from its spec.
pub fn kind_of(r: &Resource) -> i32 {
    use proto::v1::resource::Spec;
    let k = match &r.spec {
        Some(Spec::Upstream(_)) => Kind::Upstream,
        Some(Spec::Function(_)) => Kind::Function,
        Some(Spec::Endpoints(_)) => Kind::Endpoints,
        Some(Spec::VirtualService(_)) => Kind::VirtualService,
        Some(Spec::UpstreamGroup(_)) => Kind::UpstreamGroup,
        Some(Spec::Gateway(_)) => Kind::Gateway,
        Some(Spec::Secret(_)) => Kind::Secret,
        None => Kind::Unspecified,
    };
    k as i32
}

fn kind_label(kind: i32) -> String {
    Kind::try_from(kind)
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|_| kind.to_string())
}

/// Sends desired sets to gloo-core as one owner's Sync.
pub struct SyncDriver {
    pub client: SyncClient,
    pub owner: String,
    pub kinds: Vec<Kind>,
    pub metrics: Metrics,
    /// Re-send an unchanged set this often, so objects removed behind discovery's back come
    /// back (gloo-core writes nothing when the set matches what is stored).
    pub resync: Duration,
}

impl SyncDriver {
    /// Runs until `shutdown`. `on_synced` is called after every successful Sync (the runtime
    /// uses it for readiness).
    pub async fn run(
        mut self,
        mut rx: SetReceiver,
        shutdown: CancellationToken,
        on_synced: impl Fn() + Send,
    ) {
        let mut last: Option<([u8; 32], Instant)> = None;
        loop {
            let due = last.map(|(_, at)| at + self.resync);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = rx.changed() => if changed.is_err() { return },
                _ = sleep_until(due) => {}
            }
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
            loop {
                let Some(set) = rx.borrow_and_update().clone() else {
                    break;
                };
                let hash = set.digest();
                let resync_due = last.is_some_and(|(_, at)| at.elapsed() >= self.resync);
                if last.is_some_and(|(h, _)| h == hash) && !resync_due {
                    debug!(
                        objects = set.len(),
                        "desired set unchanged; nothing to sync"
                    );
                    self.metrics
                        .syncs
                        .get_or_create(&ResultLabel { result: "skipped" })
                        .inc();
                    break;
                }
                match self.sync(&set).await {
                    Ok(()) => {
                        self.metrics.recovered("storage");
                        last = Some((hash, Instant::now()));
                        on_synced();
                        break;
                    }
                    Err(status) => {
                        let delay = backoff.next_delay();
                        self.metrics.error("storage");
                        self.metrics.backing_off("storage", delay);
                        warn!(
                            code = ?status.code(),
                            error = %status.message(),
                            retry_in_ms = delay.as_millis() as u64,
                            failures = backoff.failures(),
                            "Sync to gloo-core failed; will retry with the newest desired set"
                        );
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
        }
    }

    async fn sync(&mut self, set: &Arc<DesiredSet>) -> Result<(), tonic::Status> {
        let mut by_kind: BTreeMap<i32, i64> = self.kinds.iter().map(|k| (*k as i32, 0)).collect();
        for (kind, n) in set.count_by_kind() {
            *by_kind.entry(*kind).or_default() += n;
        }
        for (kind, n) in &by_kind {
            self.metrics
                .objects
                .get_or_create(&KindLabel {
                    kind: kind_label(*kind),
                })
                .set(*n);
        }
        let started = Instant::now();
        let res = self
            .client
            .sync(&self.owner, &self.kinds, set.clone(), false)
            .await;
        self.metrics
            .sync_duration
            .observe(started.elapsed().as_secs_f64());
        let result = if res.is_ok() { "ok" } else { "error" };
        self.metrics
            .syncs
            .get_or_create(&ResultLabel { result })
            .inc();
        let resp: SyncResponse = res?.into_inner();
        for (op, n) in [
            ("created", resp.created),
            ("updated", resp.updated),
            ("deleted", resp.deleted),
        ] {
            self.metrics
                .writes
                .get_or_create(&OpLabel { op })
                .inc_by(u64::from(n));
        }
        for rej in &resp.rejected {
            self.metrics.error("rejected");
            let key = rej.key.clone().unwrap_or_default();
            warn!(
                kind = %kind_label(key.kind),
                namespace = %key.namespace,
                name = %key.name,
                reason = %rej.reason,
                "gloo-core rejected a discovered object; the others were applied"
            );
        }
        if resp.created + resp.updated + resp.deleted > 0 {
            info!(
                objects = set.len(),
                created = resp.created,
                updated = resp.updated,
                deleted = resp.deleted,
                rejected = resp.rejected.len(),
                revision = resp.revision,
                "synced"
            );
        } else {
            debug!(objects = set.len(), "synced; nothing changed in the store");
        }
        Ok(())
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::v1::{resource::Spec, Metadata, UpstreamSpec};

    fn upstream(name: &str) -> Resource {
        Resource {
            metadata: Some(Metadata {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(Spec::Upstream(UpstreamSpec::default())),
            ..Default::default()
        }
    }

    #[test]
    fn digest_ignores_order_and_sees_changes() {
        let a = [upstream("a"), upstream("b")];
        let b = [upstream("b"), upstream("a")];
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&[upstream("a")]));
        let mut c = upstream("a");
        c.metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("x".into(), "y".into());
        assert_ne!(digest(&a), digest(&[c, upstream("b")]));
    }

    #[test]
    fn digest_of_labels_does_not_depend_on_map_order() {
        let with = |pairs: &[(&str, &str)]| {
            let mut u = upstream("a");
            let m = u.metadata.as_mut().unwrap();
            for (k, v) in pairs {
                m.labels.insert(k.to_string(), v.to_string());
            }
            u
        };
        let many: Vec<(String, String)> = (0..32)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        let fwd: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let rev: Vec<(&str, &str)> = fwd.iter().rev().copied().collect();
        for _ in 0..10 {
            assert_eq!(digest(&[with(&fwd)]), digest(&[with(&rev)]));
        }
        assert_ne!(
            digest(&[with(&[("a", "b")])]),
            digest(&[with(&[("a", "c")])])
        );
    }
}
