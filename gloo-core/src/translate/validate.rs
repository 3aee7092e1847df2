//! Validation on write, with the translator itself: a write is refused when it would leave the
//! object it writes Rejected, or turn another object that works now into Rejected (a route
//! that works would break).
//!
//! "Works now" is what the reporter last said (the objects' stored statuses), so only the
//! state after the write is translated, by a translator kept warm between writes. The objects
//! a write proposes carry a uid no stored object has, and no other proposal had, so what the
//! translator remembers of one proposal can never be mistaken for another, or for a later
//! write of the same generation.
use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Mutex,
};

use proto::v1::status::State;

use super::{Input, Translator};
use crate::{
    resource::Key,
    store::{self, Write},
};

pub struct Validator {
    translator: Mutex<Translator>,
    /// Uids for proposed objects, counting down from the top: the store numbers real uids
    /// from 1 by revision.
    next_proposal: AtomicU64,
}

impl Default for Validator {
    fn default() -> Self {
        Validator {
            translator: Mutex::default(),
            next_proposal: AtomicU64::new(u64::MAX),
        }
    }
}

impl Validator {
    pub fn new() -> Self {
        Validator::default()
    }

    pub fn validate(&self, state: &store::State, writes: &[Write]) -> Result<(), String> {
        let uid = self.next_proposal.fetch_sub(1, Ordering::Relaxed);
        let mut after = Input::from_state(state);
        let mut written = Vec::new();
        for w in writes {
            match w {
                Write::Put(r) => {
                    if let Some(k) = Key::of(r) {
                        let mut proposed = (**r).clone();
                        proposed.metadata.get_or_insert_with(Default::default).uid = uid;
                        after.objects.insert(k.clone(), Arc::new(proposed));
                        written.push(k);
                    }
                }
                Write::Delete(k) => {
                    after.objects.remove(k);
                }
            }
        }
        let reports = self
            .translator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .translate(&after)
            .reports;
        for k in &written {
            if let Some(r) = reports.get(k).filter(|r| r.state == State::Rejected) {
                return Err(format!("{k} would be Rejected: {}", r.reason));
            }
        }
        for (k, r) in &reports {
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
