//! The store: every object in memory for reads, a durable [`Backend`] for writes, and an
//! event log for watches.
//!
//! ```text
//!   transact(f) ──► writer lock ──► f(&state) → writes ──► backend.commit (durable)
//!                                                              │
//!            readers ◄── state (RwLock) ◄── applied after commit ┘──► broadcast(events)
//! ```
//!
//! Writers are serialized; each written object gets its own revision (so a watch can resume
//! between any two events), and an object's `resource_version` is the revision that last wrote
//! it. The in-memory state changes only after the backend has made the write durable, and
//! events are published only after the state changed, so nobody ever sees a write that a crash
//! could take back.
use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Bound,
    sync::{Arc, Mutex, RwLock, Weak},
};

use proto::v1::{Kind, Resource};
use tokio::sync::broadcast;

use crate::resource::Key;

pub mod redb;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change: the object as written, or as it was when deleted (with the deletion's revision
/// as its resource_version).
#[derive(Clone, Debug)]
pub struct Event {
    pub revision: u64,
    pub kind: EventType,
    pub resource: Arc<Resource>,
    /// Only the status changed: nothing the translator reads.
    pub status_only: bool,
}

pub enum Write {
    Put(Box<Resource>),
    Delete(Key),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("revision {requested} is no longer in the store's history (oldest kept: {oldest}); list again and watch from the list's revision")]
    Compacted { requested: u64, oldest: u64 },
    #[error("store backend: {0}")]
    Backend(String),
}

/// Durable persistence of objects and their event history.
pub trait Backend: Send + Sync + 'static {
    /// Every stored object and the store's revision.
    fn load(&self) -> Result<(Vec<Resource>, u64), StoreError>;
    /// Makes these events (consecutive revisions) durable, with the objects they leave;
    /// returns only once a crash can no longer lose them.
    fn commit(&self, events: &[Event]) -> Result<(), StoreError>;
    /// Every event after revision `after`, in order.
    fn events_since(&self, after: u64) -> Result<Vec<Event>, StoreError>;
}

/// The objects at one revision.
#[derive(Default)]
pub struct State {
    objects: BTreeMap<Key, Arc<Resource>>,
    revision: u64,
}

impl State {
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn get(&self, key: &Key) -> Option<&Arc<Resource>> {
        self.objects.get(key)
    }

    /// The objects of one kind (in one namespace, when given), in key order.
    pub fn of_kind<'a>(
        &'a self,
        kind: Kind,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Arc<Resource>> + 'a {
        let start = Key::new(kind, namespace.unwrap_or(""), "");
        self.objects
            .range((Bound::Included(start), Bound::Unbounded))
            .take_while(move |(k, _)| {
                k.kind == kind && namespace.is_none_or(|ns| &*k.namespace == ns)
            })
            .map(|(_, v)| v)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Resource>> {
        self.objects.values()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

pub struct Store {
    backend: Box<dyn Backend>,
    state: RwLock<State>,
    writer: Mutex<()>,
    events: broadcast::Sender<Arc<[Event]>>,
    trackers: Mutex<Vec<Weak<Mutex<ChangedKeys>>>>,
}

/// The keys written since a reader last took them, for a reader that catches up only now and
/// then (the validator, at the next Apply). Unlike a broadcast receiver it keeps no object
/// alive: a receiver that is not read pins every batch in the channel, and with them the old
/// version of every object a big Sync wrote after its statuses were rewritten.
#[derive(Debug, Default)]
pub struct ChangedKeys {
    keys: BTreeSet<Key>,
    /// More keys changed than are worth keeping: the reader must compare the whole state.
    overflowed: bool,
}

impl ChangedKeys {
    /// Past this many keys, only "everything may have changed" is kept: comparing the whole
    /// state costs about what applying that many changes does.
    pub const LIMIT: usize = 1024;

    /// The keys written since the last call, or `None` when too many were to keep.
    pub fn take(&mut self) -> Option<BTreeSet<Key>> {
        let keys = std::mem::take(&mut self.keys);
        (!std::mem::replace(&mut self.overflowed, false)).then_some(keys)
    }

    fn add(&mut self, keys: impl Iterator<Item = Key>) {
        if self.overflowed {
            return;
        }
        self.keys.extend(keys);
        if self.keys.len() > Self::LIMIT {
            self.keys = BTreeSet::new();
            self.overflowed = true;
        }
    }
}

impl Store {
    pub fn open(backend: Box<dyn Backend>) -> Result<Self, StoreError> {
        let (objects, revision) = backend.load()?;
        let objects = objects
            .into_iter()
            .filter_map(|r| Some((Key::of(&r)?, Arc::new(r))))
            .collect();
        // Small: a batch can hold every object of a big Sync, and a watcher that falls behind
        // catches up from the event log anyway.
        let (events, _) = broadcast::channel(16);
        Ok(Store {
            backend,
            state: RwLock::new(State { objects, revision }),
            writer: Mutex::new(()),
            events,
            trackers: Mutex::new(Vec::new()),
        })
    }

    /// A read view; hold it briefly (writers wait for it).
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn revision(&self) -> u64 {
        self.read().revision
    }

    pub fn get(&self, key: &Key) -> Option<Arc<Resource>> {
        self.read().get(key).cloned()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<[Event]>> {
        self.events.subscribe()
    }

    /// Keys of every write from now on, kept until taken (see [`ChangedKeys`]); the store
    /// stops filling it once it is dropped.
    pub fn track_changes(&self) -> Arc<Mutex<ChangedKeys>> {
        let tracker = Arc::new(Mutex::new(ChangedKeys::default()));
        self.trackers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&tracker));
        tracker
    }

    pub fn events_since(&self, after: u64) -> Result<Vec<Event>, StoreError> {
        self.backend.events_since(after)
    }

    /// Runs `f` with exclusive write access to the latest state and durably commits the writes
    /// it returns, all or nothing. Blocking: call from a blocking context.
    pub fn transact<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&State) -> Result<(Vec<Write>, T), E>,
    ) -> Result<(Vec<Event>, T), E> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let events = {
            let state = self.read();
            let (writes, out) = f(&state)?;
            let events = to_events(&state, writes);
            if events.is_empty() {
                return Ok((events, out));
            }
            self.backend.commit(&events)?;
            drop(state);
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            for ev in &events {
                let key = Key::of(&ev.resource).expect("events carry keyed resources");
                match ev.kind {
                    EventType::Deleted => state.objects.remove(&key),
                    _ => state.objects.insert(key, ev.resource.clone()),
                };
                state.revision = ev.revision;
            }
            // Under the writer lock, like the state: a tracker never misses a write it did
            // not see in the state.
            self.trackers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|t| match t.upgrade() {
                    Some(t) => {
                        t.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .add(events.iter().filter_map(|e| Key::of(&e.resource)));
                        true
                    }
                    None => false,
                });
            (events, out)
        };
        let (events, out) = events;
        // No receiver is fine: nobody is watching.
        let _ = self.events.send(events.clone().into());
        Ok((events, out))
    }
}

/// Numbers the writes with consecutive revisions after the state's.
fn to_events(state: &State, writes: Vec<Write>) -> Vec<Event> {
    let mut revision = state.revision;
    let mut events = Vec::with_capacity(writes.len());
    for w in writes {
        let (kind, mut resource, status_only) = match w {
            Write::Put(r) => {
                let old = Key::of(&r).and_then(|k| state.objects.get(&k));
                let status_only = old.is_some_and(|o| same_but_status(o, &r));
                let kind = if old.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                (kind, *r, status_only)
            }
            Write::Delete(key) => match state.objects.get(&key) {
                Some(r) => (EventType::Deleted, (**r).clone(), false),
                None => continue,
            },
        };
        revision += 1;
        let meta = resource.metadata.get_or_insert_with(Default::default);
        meta.resource_version = revision;
        if kind == EventType::Added {
            meta.uid = revision;
        }
        events.push(Event {
            revision,
            kind,
            resource: Arc::new(resource),
            status_only,
        });
    }
    events
}

/// Whether two versions of an object differ only in status (and resource_version).
fn same_but_status(a: &Resource, b: &Resource) -> bool {
    let strip = |m: &Option<proto::v1::Metadata>| {
        m.clone().map(|mut m| {
            m.resource_version = 0;
            m
        })
    };
    a.spec == b.spec && strip(&a.metadata) == strip(&b.metadata)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proto::v1::{resource::Spec, Metadata, UpstreamSpec};

    pub fn upstream(ns: &str, name: &str) -> Resource {
        Resource {
            metadata: Some(Metadata {
                name: name.into(),
                namespace: ns.into(),
                ..Default::default()
            }),
            status: None,
            spec: Some(Spec::Upstream(UpstreamSpec::default())),
        }
    }

    fn open(dir: &std::path::Path) -> Store {
        Store::open(Box::new(redb::RedbBackend::open(dir, 1000).unwrap())).unwrap()
    }

    fn put(store: &Store, writes: Vec<Write>) -> Vec<Event> {
        store
            .transact(|_| Ok::<_, StoreError>((writes, ())))
            .unwrap()
            .0
    }

    #[test]
    fn each_write_gets_its_own_revision_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            let ev = put(
                &store,
                vec![
                    Write::Put(Box::new(upstream("a", "x"))),
                    Write::Put(Box::new(upstream("a", "y"))),
                ],
            );
            assert_eq!(
                ev.iter().map(|e| e.revision).collect::<Vec<_>>(),
                vec![1, 2]
            );
            put(
                &store,
                vec![Write::Delete(Key::new(Kind::Upstream, "a", "x"))],
            );
            assert_eq!(store.revision(), 3);
        }
        let store = open(dir.path());
        assert_eq!(store.revision(), 3);
        let y = store.get(&Key::new(Kind::Upstream, "a", "y")).unwrap();
        assert_eq!(y.metadata.as_ref().unwrap().resource_version, 2);
        assert!(store.get(&Key::new(Kind::Upstream, "a", "x")).is_none());
        let since: Vec<_> = store
            .events_since(1)
            .unwrap()
            .into_iter()
            .map(|e| (e.revision, e.kind))
            .collect();
        assert_eq!(since, vec![(2, EventType::Added), (3, EventType::Deleted)]);
    }

    #[test]
    fn old_history_is_compacted_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(Box::new(redb::RedbBackend::open(dir.path(), 5).unwrap())).unwrap();
        for i in 0..20 {
            put(
                &store,
                vec![Write::Put(Box::new(upstream("a", &format!("u{i}"))))],
            );
        }
        assert!(matches!(
            store.events_since(2),
            Err(StoreError::Compacted { .. })
        ));
        assert_eq!(store.events_since(16).unwrap().len(), 4);
    }

    #[test]
    fn a_failed_transaction_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let r: Result<(Vec<Event>, ()), StoreError> =
            store.transact(|_| Err(StoreError::Backend("refused".into())));
        assert!(r.is_err());
        assert_eq!(store.revision(), 0);
        assert!(store.read().is_empty());
    }

    #[test]
    fn a_change_tracker_names_the_keys_written_and_past_its_limit_says_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let tracker = store.track_changes();
        put(&store, vec![Write::Put(Box::new(upstream("a", "x")))]);
        put(
            &store,
            vec![Write::Delete(Key::new(Kind::Upstream, "a", "x"))],
        );
        let keys = tracker.lock().unwrap().take().expect("few keys");
        assert_eq!(
            keys.into_iter().collect::<Vec<_>>(),
            vec![Key::new(Kind::Upstream, "a", "x")]
        );
        // Taken: nothing new since.
        assert_eq!(tracker.lock().unwrap().take(), Some(BTreeSet::new()));
        let many: Vec<Write> = (0..=ChangedKeys::LIMIT)
            .map(|i| Write::Put(Box::new(upstream("a", &format!("u{i}")))))
            .collect();
        put(&store, many);
        assert_eq!(tracker.lock().unwrap().take(), None, "too many to keep");
        assert_eq!(tracker.lock().unwrap().take(), Some(BTreeSet::new()));
        // A dropped tracker is forgotten by the store.
        drop(tracker);
        put(&store, vec![Write::Put(Box::new(upstream("a", "y")))]);
        assert!(store.trackers.lock().unwrap().is_empty());
    }
}
