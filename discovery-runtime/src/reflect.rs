//! A local, always-current copy of some kinds of gloo-core's store, for sources driven by
//! stored objects (discovery-lambda reads AWS Upstreams and their Secrets, discovery-openapi
//! reads Upstreams). One Watch from revision 0 fills it; afterwards it follows live events and,
//! when the stream breaks, resumes from the last revision seen, so a reconnect does not
//! re-read everything. A resume point that gloo-core has compacted away (OUT_OF_RANGE) starts a
//! fresh listing. Views are published only once consistent (after the first BOOKMARK).
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use proto::v1::{watch_event::Type, Kind, Resource, WatchRequest};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{backoff::Backoff, client::Client, metrics::Metrics, sync::kind_of};

/// `(kind, namespace, name)`.
pub type Key = (i32, String, String);

/// A consistent copy of the watched objects as of `revision`.
#[derive(Clone, Debug, Default)]
pub struct StoreView {
    pub objects: BTreeMap<Key, Resource>,
    pub revision: u64,
}

impl StoreView {
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Resource> {
        self.objects
            .iter()
            .filter(move |(k, _)| k.0 == kind as i32)
            .map(|(_, r)| r)
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Resource> {
        self.objects
            .get(&(kind as i32, namespace.to_string(), name.to_string()))
    }
}

fn key_of(r: &Resource, kind: i32) -> Option<Key> {
    let m = r.metadata.as_ref()?;
    Some((kind, m.namespace.clone(), m.name.clone()))
}

/// Starts following `kinds`; the receiver holds `None` until the first consistent view. The
/// returned future is the driver: run it (it ends at `shutdown`).
pub fn reflect(
    client: Client,
    kinds: Vec<Kind>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> (
    watch::Receiver<Option<Arc<StoreView>>>,
    impl std::future::Future<Output = ()> + Send,
) {
    let (tx, rx) = watch::channel(None);
    let driver = async move {
        let mut view = StoreView::default();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            let start = view.revision;
            let res = follow(&client, &kinds, &mut view, &tx, &shutdown, &mut backoff).await;
            if shutdown.is_cancelled() {
                return;
            }
            match res {
                Ok(()) => debug!("store watch ended; resuming"),
                Err(status) => {
                    if status.code() == tonic::Code::OutOfRange {
                        info!(
                            from = start,
                            "store history compacted past our resume point; re-listing"
                        );
                        view = StoreView::default();
                    }
                    let delay = backoff.next_delay();
                    metrics.error("storage");
                    metrics.backing_off("storage-watch", delay);
                    warn!(code = ?status.code(), error = %status.message(), retry_in_ms = delay.as_millis() as u64, "watching gloo-core's store failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    };
    (rx, driver)
}

async fn follow(
    client: &Client,
    kinds: &[Kind],
    view: &mut StoreView,
    tx: &watch::Sender<Option<Arc<StoreView>>>,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), tonic::Status> {
    let fresh = view.revision == 0;
    let req = WatchRequest {
        kinds: kinds.iter().map(|k| *k as i32).collect(),
        namespace: String::new(),
        start_revision: view.revision,
        bookmark_interval_ms: 0,
    };
    let mut stream = client.clone().watch(req).await?.into_inner();
    // A fresh listing builds a new map, so readers never see a half-filled one.
    let mut building = if fresh { Some(BTreeMap::new()) } else { None };
    // Set when the view changed and is not published yet: a burst of events that are already
    // received is applied as a whole and published once (a copy per event would make a burst
    // quadratic in the size of the store).
    let mut dirty = false;
    loop {
        let ev = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            ev = stream.next() => ev,
            () = std::future::ready(()), if dirty => {
                tx.send_replace(Some(Arc::new(view.clone())));
                dirty = false;
                continue;
            }
        };
        let ev = match ev {
            Some(Ok(ev)) => ev,
            // The stream ended or broke: publish what was applied before resuming.
            end => {
                if dirty {
                    tx.send_replace(Some(Arc::new(view.clone())));
                }
                return end.map_or(Ok(()), |e| e.map(|_| ()));
            }
        };
        backoff.reset();
        let objects = building.as_mut().unwrap_or(&mut view.objects);
        match Type::try_from(ev.r#type).unwrap_or(Type::Bookmark) {
            Type::Added | Type::Modified => {
                if let Some(r) = ev.resource {
                    let kind = kind_of(&r);
                    if let Some(k) = key_of(&r, kind) {
                        objects.insert(k, r);
                    }
                }
            }
            Type::Deleted => {
                if let Some(r) = ev.resource {
                    let kind = kind_of(&r);
                    if let Some(k) = key_of(&r, kind) {
                        objects.remove(&k);
                    }
                }
            }
            Type::Bookmark => {}
        }
        view.revision = view.revision.max(ev.revision);
        if let Some(done) = building.take_if(|_| ev.r#type == Type::Bookmark as i32) {
            view.objects = done;
        }
        if building.is_none() {
            dirty = true;
        }
    }
}
