//! Validation on write, with the translator itself: a write is refused when it would leave the
//! object it writes Rejected, or turn another object that is not Rejected now into Rejected
//! (a route that works would break).
use std::sync::Arc;

use proto::v1::status::State;

use super::{translate, Input};
use crate::{
    resource::Key,
    store::{self, Write},
};

pub fn validate(state: &store::State, writes: &[Write]) -> Result<(), String> {
    let before = Input::from_state(state);
    let mut after = before.clone();
    let mut written = Vec::new();
    for w in writes {
        match w {
            Write::Put(r) => {
                if let Some(k) = Key::of(r) {
                    after.objects.insert(k.clone(), Arc::new((**r).clone()));
                    written.push(k);
                }
            }
            Write::Delete(k) => {
                after.objects.remove(k);
            }
        }
    }
    let after = translate(&after).reports;
    for k in &written {
        if let Some(r) = after.get(k).filter(|r| r.state == State::Rejected) {
            return Err(format!("{k} would be Rejected: {}", r.reason));
        }
    }
    let before = translate(&before).reports;
    for (k, r) in &after {
        let was_ok = before.get(k).is_some_and(|b| b.state != State::Rejected);
        if r.state == State::Rejected && was_ok {
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
