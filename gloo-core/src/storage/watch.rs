//! Watch: the store's events after a revision, then live, with no event lost or repeated.
//!
//! The task subscribes to the store's broadcast *before* reading the backlog (from the state
//! for a fresh watch, from the event log for a resume), then skips every live event at or
//! below the last revision it accounted for. A watcher that falls behind the broadcast reads
//! the gap back from the event log instead of losing it. Bookmarks carry the last revision
//! seen (matching or not), so a filtered watcher can resume without replaying what it skipped.
use std::{collections::HashSet, sync::Arc, time::Duration};

use proto::v1::{watch_event::Type, Kind, Resource, WatchEvent, WatchRequest};
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_util::sync::CancellationToken;

use super::{redact_for, Error};
use crate::{
    auth::Identity,
    resource::{kind_name, kind_of, KINDS},
    store::{Event, EventType, Store},
};

pub type WatchItem = Result<WatchEvent, tonic::Status>;

struct Filter {
    who: Arc<Identity>,
    kinds: HashSet<Kind>,
    namespace: Option<String>,
}

impl Filter {
    fn matches(&self, r: &Resource) -> bool {
        kind_of(r).is_some_and(|k| self.kinds.contains(&k))
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| r.metadata.as_ref().is_some_and(|m| m.namespace == ns))
    }
}

fn event_type(k: EventType) -> Type {
    match k {
        EventType::Added => Type::Added,
        EventType::Modified => Type::Modified,
        EventType::Deleted => Type::Deleted,
    }
}

/// Starts a watch for `who`; events arrive on the returned channel until the client goes away,
/// the store shuts down, or `shutdown` fires.
pub fn start(
    store: Arc<Store>,
    who: Arc<Identity>,
    req: WatchRequest,
    shutdown: CancellationToken,
) -> Result<mpsc::Receiver<WatchItem>, Error> {
    let mut kinds = HashSet::new();
    for k in &req.kinds {
        let kind = Kind::try_from(*k)
            .ok()
            .filter(|k| *k != Kind::Unspecified)
            .ok_or_else(|| Error::Invalid(format!("watch: kinds: unknown kind {k}")))?;
        if !who.can_read(kind) {
            return Err(Error::Denied(format!(
                "{} may not read {} objects",
                who.name,
                kind_name(kind)
            )));
        }
        kinds.insert(kind);
    }
    if kinds.is_empty() {
        kinds = KINDS.into_iter().filter(|k| who.can_read(*k)).collect();
    }
    let filter = Filter {
        who,
        kinds,
        namespace: (!req.namespace.is_empty()).then(|| req.namespace.clone()),
    };
    let bookmark_every = match req.bookmark_interval_ms {
        0 => Duration::from_secs(10),
        ms => Duration::from_millis(u64::from(ms).max(50)),
    };
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        tokio::select! {
            () = run(store, filter, req.start_revision, bookmark_every, tx) => {}
            () = shutdown.cancelled() => {}
        }
    });
    Ok(rx)
}

struct Sender {
    tx: mpsc::Sender<WatchItem>,
    /// The last revision accounted for: every event up to it was sent or filtered out.
    last: u64,
    sent_since_bookmark: bool,
}

impl Sender {
    /// Sends one event if it is new and matches; false when the client has gone.
    async fn event(&mut self, filter: &Filter, ev: &Event) -> bool {
        if ev.revision <= self.last {
            return true;
        }
        self.last = ev.revision;
        if !filter.matches(&ev.resource) {
            return true;
        }
        self.sent_since_bookmark = true;
        let msg = WatchEvent {
            r#type: event_type(ev.kind) as i32,
            revision: ev.revision,
            resource: Some((*redact_for(&filter.who, ev.resource.clone())).clone()),
        };
        self.tx.send(Ok(msg)).await.is_ok()
    }

    async fn bookmark(&mut self) -> bool {
        self.sent_since_bookmark = false;
        let msg = WatchEvent {
            r#type: Type::Bookmark as i32,
            revision: self.last,
            resource: None,
        };
        self.tx.send(Ok(msg)).await.is_ok()
    }

    /// Reads events after `last` from the store's log; false when the client has gone or the
    /// log no longer reaches back that far (the client was told).
    async fn catch_up(&mut self, store: &Arc<Store>, filter: &Filter) -> bool {
        let s = store.clone();
        let after = self.last;
        let backlog = tokio::task::spawn_blocking(move || s.events_since(after)).await;
        let backlog = match backlog {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                let _ = self.tx.send(Err(Error::from(e).into())).await;
                return false;
            }
            Err(e) => {
                let _ = self
                    .tx
                    .send(Err(tonic::Status::internal(format!("watch: {e}"))))
                    .await;
                return false;
            }
        };
        for ev in &backlog {
            if !self.event(filter, ev).await {
                return false;
            }
        }
        true
    }
}

async fn run(
    store: Arc<Store>,
    filter: Filter,
    start_revision: u64,
    bookmark_every: Duration,
    tx: mpsc::Sender<WatchItem>,
) {
    let mut live = store.subscribe();
    let mut out = Sender {
        tx,
        last: start_revision,
        sent_since_bookmark: false,
    };
    if start_revision == 0 {
        let (current, revision) = {
            let state = store.read();
            let items: Vec<Arc<Resource>> = filter
                .kinds
                .iter()
                .flat_map(|k| state.of_kind(*k, filter.namespace.as_deref()).cloned())
                .collect();
            (items, state.revision())
        };
        for r in current {
            let msg = WatchEvent {
                r#type: Type::Added as i32,
                revision: r.metadata.as_ref().map_or(0, |m| m.resource_version),
                resource: Some((*redact_for(&filter.who, r)).clone()),
            };
            if out.tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
        out.last = revision;
        if !out.bookmark().await {
            return;
        }
    } else if !out.catch_up(&store, &filter).await {
        return;
    }

    let mut ticker = tokio::time::interval(bookmark_every);
    ticker.tick().await;
    loop {
        tokio::select! {
            msg = live.recv() => match msg {
                Ok(batch) => {
                    for ev in batch.iter() {
                        if !out.event(&filter, ev).await {
                            return;
                        }
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    if !out.catch_up(&store, &filter).await {
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            },
            _ = ticker.tick() => {
                if !out.sent_since_bookmark && !out.bookmark().await {
                    return;
                }
                out.sent_since_bookmark = false;
            }
            () = out.tx.closed() => return,
        }
    }
}
