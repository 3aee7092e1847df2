//! Validation on write, with the translator itself: a write is refused when it would leave the
//! object it writes Rejected, or turn another object that works now into Rejected (a route
//! that works would break).
//!
//! "Works now" is what the reporter last said (the objects' stored statuses), so only the
//! state after the write is translated, by a translator kept in step with the store between
//! writes: it is told what changed (the keys the store wrote since, when it watches the store;
//! else, or after many writes, a comparison with the whole state), and the proposal is applied on top as one more change.
//! So a write costs what it touches, like a controller pass, and the translator keeps only
//! what reports need (no encoded Envoy resource). The proposal is left applied;
//! before the next write the keys it touched are set back to what the store holds (the same
//! content when it was committed, which costs nothing).
//!
//! The objects a write proposes carry a uid no stored object has, and no other proposal had,
//! so a plugin's cache keyed by (uid, generation) never mistakes one proposal for another, or
//! for a later write of the same generation.
use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Mutex,
};

use proto::v1::{status::State, Resource};

use super::{Input, Translator};
use crate::{
    resource::Key,
    store::{self, ChangedKeys, Store, Write},
};

struct Synced {
    translator: Translator,
    /// The keys the store wrote since the last write, when watching. Keys, not events: events
    /// held until the next Apply would keep every object they carry alive.
    changes: Option<Arc<Mutex<ChangedKeys>>>,
    /// Whether the translator has seen the whole state once (and no event was missed since).
    whole: bool,
    /// The keys the last proposal set.
    proposed: Vec<Key>,
}

pub struct Validator {
    synced: Mutex<Synced>,
    /// Uids for proposed objects, counting down from the top: the store numbers real uids
    /// from 1 by revision.
    next_proposal: AtomicU64,
}

impl Default for Validator {
    fn default() -> Self {
        Validator {
            synced: Mutex::new(Synced {
                translator: Translator::reports_only(),
                changes: None,
                whole: false,
                proposed: Vec::new(),
            }),
            next_proposal: AtomicU64::new(u64::MAX),
        }
    }
}

impl Validator {
    /// A validator that compares the whole state before each write (tests, one-off checks).
    pub fn new() -> Self {
        Validator::default()
    }

    /// A validator that follows what `store` writes, so a write costs what it touches. Writes
    /// must be validated under the store's writer lock (inside `transact`).
    pub fn watching(store: &Store) -> Self {
        let v = Validator::default();
        v.synced.lock().unwrap_or_else(|p| p.into_inner()).changes = Some(store.track_changes());
        v
    }

    pub fn validate(&self, state: &store::State, writes: &[Write]) -> Result<(), String> {
        let uid = self.next_proposal.fetch_sub(1, Ordering::Relaxed);
        let mut guard = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        let synced = &mut *guard;

        // Bring the translator to `state`.
        let mut keys = std::mem::take(&mut synced.proposed);
        let mut whole = !synced.whole;
        match &synced.changes {
            None => whole = true,
            Some(c) => match c.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(written) => keys.extend(written),
                None => whole = true,
            },
        }
        if whole {
            synced.translator.replace(&Input::from_state(state));
            synced.whole = true;
        } else {
            let changes: Vec<_> = keys
                .into_iter()
                .map(|k| {
                    let now = state.get(&k).cloned();
                    (k, now)
                })
                .collect();
            synced.translator.apply(changes);
        }

        // The proposal, as one more change.
        let mut written = Vec::new();
        let mut changes: Vec<(Key, Option<Arc<Resource>>)> = Vec::new();
        for w in writes {
            match w {
                Write::Put(r) => {
                    if let Some(k) = Key::of(r) {
                        let mut proposed = (**r).clone();
                        proposed.metadata.get_or_insert_with(Default::default).uid = uid;
                        changes.push((k.clone(), Some(Arc::new(proposed))));
                        written.push(k);
                    }
                }
                Write::Delete(k) => changes.push((k.clone(), None)),
            }
        }
        synced.proposed = changes.iter().map(|(k, _)| k.clone()).collect();
        let t = synced.translator.apply(changes);
        for k in &written {
            if let Some(r) = t.reports.get(k).filter(|r| r.state == State::Rejected) {
                return Err(format!("{k} would be Rejected: {}", r.reason));
            }
        }
        // Only a report this write changed can be one it breaks.
        for k in &t.changed_reports {
            let Some(r) = t.reports.get(k) else { continue };
            if r.state != State::Rejected || written.contains(k) {
                continue;
            }
            let works_now = state.get(k).is_some_and(|cur| {
                cur.status
                    .as_ref()
                    .is_none_or(|s| s.state != State::Rejected as i32)
            });
            if works_now {
                let what: Vec<String> = writes
                    .iter()
                    .map(|w| match w {
                        Write::Put(r) => Key::of(r).map_or_else(String::new, |k| k.to_string()),
                        Write::Delete(k) => format!("deleting {k}"),
                    })
                    .collect();
                return Err(format!("{} would break {k}: {}", what.join(", "), r.reason));
            }
        }
        Ok(())
    }
}

/// Validation with a fresh translator (tests, one-off checks).
pub fn validate(state: &store::State, writes: &[Write]) -> Result<(), String> {
    Validator::new().validate(state, writes)
}
