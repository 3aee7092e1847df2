//! The problem with an upstream's spec, shown on the Upstream itself.
//!
//! discovery-openapi does not own the Upstreams it reads, so it may not write them or their
//! statuses. gloo-core lets a discovery identity set one annotation on objects it may read,
//! `discovery.solo.io/warning.<its owner>`, and nothing else of them; the translator reports
//! that annotation as a Warning on the Upstream's status, and the Upstream is Accepted again
//! once it is gone.
//!
//! ```text
//!  per-upstream problem ─► desired annotation ─┐
//!  Upstream in the view ─► current annotation ─┴─ differ? ─► Apply (only that annotation,
//!                                                            expected resource_version)
//! ```
//!
//! Each pass compares what should be there with what the view shows and writes only the
//! difference. A write is tried once per (resource_version, value): a conflict or a refusal is
//! not retried until the Upstream changes, so a core that refuses the write (an older one)
//! costs one request per change, not one per pass.
use std::collections::HashMap;

use discovery_runtime::{client::Client, reflect::StoreView};
use proto::v1::{ApplyRequest, Kind};
use tracing::{debug, info, warn};

/// Annotations with this prefix are warnings of discovery services (gloo-core's
/// `resource::WARNING_ANNOTATION_PREFIX`).
pub const WARNING_PREFIX: &str = "discovery.solo.io/warning.";

/// Problems are cut to this many bytes: a status reason is for people, not for a whole body.
const MAX_LEN: usize = 1024;

type UpKey = (String, String);

pub struct Warnings {
    /// `discovery.solo.io/warning.<owner>`.
    annotation: String,
    /// The last write tried per upstream: the resource_version it was based on, and the value.
    tried: HashMap<UpKey, (u64, Option<String>)>,
}

fn shorten(s: &str) -> String {
    if s.len() <= MAX_LEN {
        return s.to_string();
    }
    let mut end = MAX_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

impl Warnings {
    pub fn new(owner: &str) -> Self {
        Warnings {
            annotation: format!("{WARNING_PREFIX}{owner}"),
            tried: HashMap::new(),
        }
    }

    pub fn annotation(&self) -> &str {
        &self.annotation
    }

    /// Makes every Upstream's annotation say `problems[upstream]`, or removes it from the
    /// Upstreams without a problem (including those no longer selected).
    pub async fn reconcile(
        &mut self,
        client: &mut Client,
        view: &StoreView,
        problems: &HashMap<UpKey, String>,
    ) {
        let mut seen = Vec::new();
        for up in view.of_kind(Kind::Upstream) {
            let Some(m) = &up.metadata else { continue };
            let key = (m.namespace.clone(), m.name.clone());
            let want = problems.get(&key).map(|p| shorten(p));
            if m.annotations.get(&self.annotation) == want.as_ref() {
                self.tried.remove(&key);
                continue;
            }
            seen.push(key.clone());
            let attempt = (m.resource_version, want.clone());
            if self.tried.get(&key) == Some(&attempt) {
                continue;
            }
            self.tried.insert(key.clone(), attempt);
            let mut r = up.clone();
            r.status = None;
            let meta = r.metadata.as_mut().expect("checked above");
            match &want {
                Some(p) => meta.annotations.insert(self.annotation.clone(), p.clone()),
                None => meta.annotations.remove(&self.annotation),
            };
            let req = ApplyRequest {
                expected_resource_version: m.resource_version,
                resource: Some(r),
                ..Default::default()
            };
            let target = format!("{}/{}", key.0, key.1);
            match client.apply(req).await {
                Ok(_) => match &want {
                    Some(problem) => {
                        info!(upstream = %target, %problem, "Warning set on the Upstream")
                    }
                    None => info!(upstream = %target, "Warning removed from the Upstream"),
                },
                Err(s) if s.code() == tonic::Code::Aborted => {
                    debug!(upstream = %target, "the Upstream changed meanwhile; trying again with the new version")
                }
                Err(s) => {
                    warn!(upstream = %target, code = ?s.code(), error = s.message(), "could not set the Warning annotation on the Upstream")
                }
            }
        }
        self.tried.retain(|k, _| seen.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_problems_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_LEN);
        let s = shorten(&long);
        assert!(s.len() <= MAX_LEN + 3 && s.ends_with("..."), "{}", s.len());
        assert_eq!(shorten("short"), "short");
    }
}
