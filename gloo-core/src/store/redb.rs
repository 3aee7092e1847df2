//! The embedded backend: one `redb` file under `--data-dir`.
//!
//! Tables: `objects` (encoded key → encoded Resource), `events` (revision → event type byte +
//! encoded Resource) and `meta` (`revision`, `compacted`). Each commit is one redb write
//! transaction with immediate durability, so an acknowledged write survives `kill -9`.
//!
//! redb's page cache is kept small: every object is also held in memory by the store, so the
//! file is read only at start and when a watch resumes from history; the cache mostly saves
//! reading B-tree pages again on commits, which the OS page cache does nearly as well.
use std::path::Path;

use prost::Message;
use proto::v1::Resource;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Backend, Event, EventType, StoreError};
use crate::resource::Key;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub struct RedbBackend {
    db: Database,
    /// How many revisions of history to keep for watches to resume from.
    history: u64,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The default size of redb's page cache (redb's own default is 1 GiB).
pub const DEFAULT_CACHE_BYTES: usize = 4 * 1024 * 1024;

impl RedbBackend {
    pub fn open(data_dir: &Path, history: u64) -> Result<Self, StoreError> {
        Self::open_with_cache(data_dir, history, DEFAULT_CACHE_BYTES)
    }

    /// Opens with a page cache of at most `cache_bytes` (reads and pending writes together).
    pub fn open_with_cache(
        data_dir: &Path,
        history: u64,
        cache_bytes: usize,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| err(format!("creating {}: {e}", data_dir.display())))?;
        let path = data_dir.join("gloo.redb");
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(OBJECTS).map_err(err)?;
        tx.open_table(EVENTS).map_err(err)?;
        tx.open_table(META).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(RedbBackend {
            db,
            history: history.max(1),
        })
    }
}

fn encode_event(ev: &Event) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 + ev.resource.encoded_len());
    buf.push(match ev.kind {
        EventType::Added => 0,
        EventType::Modified => 1,
        EventType::Deleted => 2,
    });
    ev.resource.encode(&mut buf).expect("Vec grows");
    buf
}

fn decode_event(revision: u64, bytes: &[u8]) -> Result<Event, StoreError> {
    let (tag, body) = bytes
        .split_first()
        .ok_or_else(|| err(format!("event {revision} is empty")))?;
    let kind = match tag {
        0 => EventType::Added,
        1 => EventType::Modified,
        2 => EventType::Deleted,
        t => return Err(err(format!("event {revision} has unknown type {t}"))),
    };
    let resource = Resource::decode(body).map_err(|e| err(format!("event {revision}: {e}")))?;
    Ok(Event {
        revision,
        kind,
        resource: resource.into(),
        // Only the translator reads this, from live events; a replayed event counts as a change.
        status_only: false,
    })
}

impl Backend for RedbBackend {
    fn load(&self) -> Result<(Vec<Resource>, u64), StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let meta = tx.open_table(META).map_err(err)?;
        let revision = meta.get("revision").map_err(err)?.map_or(0, |v| v.value());
        let objects = tx.open_table(OBJECTS).map_err(err)?;
        let mut out = Vec::new();
        for row in objects.iter().map_err(err)? {
            let (k, v) = row.map_err(err)?;
            let r = Resource::decode(v.value())
                .map_err(|e| err(format!("object {}: {e}", k.value())))?;
            out.push(r);
        }
        Ok((out, revision))
    }

    fn commit(&self, events: &[Event]) -> Result<(), StoreError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut objects = tx.open_table(OBJECTS).map_err(err)?;
            let mut log = tx.open_table(EVENTS).map_err(err)?;
            let mut meta = tx.open_table(META).map_err(err)?;
            for ev in events {
                let key = Key::of(&ev.resource)
                    .ok_or_else(|| err("event without kind or metadata"))?
                    .encode();
                match ev.kind {
                    EventType::Deleted => {
                        objects.remove(key.as_str()).map_err(err)?;
                    }
                    _ => {
                        objects
                            .insert(key.as_str(), ev.resource.encode_to_vec().as_slice())
                            .map_err(err)?;
                    }
                }
                log.insert(ev.revision, encode_event(ev).as_slice())
                    .map_err(err)?;
            }
            meta.insert("revision", last.revision).map_err(err)?;
            // Trim history in steps, not on every commit, to keep commits cheap.
            let compacted = meta.get("compacted").map_err(err)?.map_or(0, |v| v.value());
            let keep_from = last.revision.saturating_sub(self.history);
            if keep_from > compacted + self.history / 10 {
                log.retain_in(..=keep_from, |_, _| false).map_err(err)?;
                meta.insert("compacted", keep_from).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn events_since(&self, after: u64) -> Result<Vec<Event>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let meta = tx.open_table(META).map_err(err)?;
        let compacted = meta.get("compacted").map_err(err)?.map_or(0, |v| v.value());
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: compacted + 1,
            });
        }
        let log = tx.open_table(EVENTS).map_err(err)?;
        let mut out = Vec::new();
        for row in log.range(after + 1..).map_err(err)? {
            let (k, v) = row.map_err(err)?;
            out.push(decode_event(k.value(), v.value())?);
        }
        Ok(out)
    }
}
