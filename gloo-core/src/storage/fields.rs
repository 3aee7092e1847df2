//! Field ownership: who set which part of an object, so that a discovery service's next Sync
//! keeps what a person added to a discovered object.
//!
//! An object is seen as a flat map of *fields*: each top-level spec field (`spec.healthChecks`),
//! each label (`labels.app`) and each annotation (`annotations.note`), with its JSON value. The
//! object's `metadata.field_managers` records, per field, the manager that last set it. No list
//! of fields is written anywhere: whatever the proto3 JSON form of the spec has is a field.
//!
//! - An **Apply** by manager M (a person, CI) is an update: every field whose value it changes
//!   or adds becomes M's; fields it leaves as they are keep their manager; fields it drops are
//!   removed and forgotten.
//! - A **Sync** by owner O is O's desired state for the fields O manages: fields managed by
//!   someone else keep their current value; every other field takes O's desired value, or goes
//!   away when O no longer wants it.
use std::collections::{BTreeMap, HashMap};

use proto::v1::{resource::Spec, Kind};
use serde_json::Value;

use crate::resource::{spec_from_json, spec_to_json};

/// Field path → JSON value.
pub type Fields = BTreeMap<String, Value>;
/// Field path → manager.
pub type Managers = HashMap<String, String>;

const SPEC: &str = "spec.";
const LABELS: &str = "labels.";
const ANNOTATIONS: &str = "annotations.";

/// The parts of an object that fields cover.
#[derive(Clone, Debug, PartialEq)]
pub struct Content {
    pub spec: Spec,
    pub labels: HashMap<String, String>,
    pub annotations: HashMap<String, String>,
}

impl Content {
    pub fn fields(&self) -> Fields {
        let mut out = Fields::new();
        if let Value::Object(map) = spec_to_json(&self.spec) {
            for (k, v) in map {
                out.insert(format!("{SPEC}{k}"), v);
            }
        }
        for (k, v) in &self.labels {
            out.insert(format!("{LABELS}{k}"), Value::String(v.clone()));
        }
        for (k, v) in &self.annotations {
            out.insert(format!("{ANNOTATIONS}{k}"), Value::String(v.clone()));
        }
        out
    }

    /// Rebuilds content from fields; fails when the combined spec is not a valid spec (say,
    /// two managers set two different members of a oneof).
    pub fn from_fields(kind: Kind, fields: Fields) -> Result<Content, String> {
        let mut spec = serde_json::Map::new();
        let mut labels = HashMap::new();
        let mut annotations = HashMap::new();
        for (path, value) in fields {
            if let Some(k) = path.strip_prefix(SPEC) {
                spec.insert(k.to_string(), value);
            } else if let Some(k) = path.strip_prefix(LABELS) {
                labels.insert(k.to_string(), as_string(value));
            } else if let Some(k) = path.strip_prefix(ANNOTATIONS) {
                annotations.insert(k.to_string(), as_string(value));
            }
        }
        let spec = spec_from_json(kind, Value::Object(spec))
            .map_err(|e| format!("the merged spec is invalid: {e}"))?;
        Ok(Content {
            spec,
            labels,
            annotations,
        })
    }
}

fn as_string(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// The managers after manager `who` writes `new` over `current` (Apply semantics).
pub fn update(current: Option<(&Fields, &Managers)>, new: &Fields, who: &str) -> Managers {
    let mut managers = Managers::new();
    for (path, value) in new {
        let keep = current.and_then(|(fields, old)| {
            (fields.get(path) == Some(value))
                .then(|| old.get(path).cloned())
                .flatten()
        });
        managers.insert(path.clone(), keep.unwrap_or_else(|| who.to_string()));
    }
    managers
}

/// The fields and managers after owner `owner` Syncs `desired` over `current`.
pub fn merge_sync(
    current: &Fields,
    managers: &Managers,
    desired: Fields,
    owner: &str,
) -> (Fields, Managers) {
    let mut fields = Fields::new();
    let mut out = Managers::new();
    for (path, value) in current {
        match managers.get(path) {
            Some(m) if m != owner => {
                fields.insert(path.clone(), value.clone());
                out.insert(path.clone(), m.clone());
            }
            _ => {}
        }
    }
    for (path, value) in desired {
        if let std::collections::btree_map::Entry::Vacant(e) = fields.entry(path) {
            out.insert(e.key().clone(), owner.to_string());
            e.insert(value);
        }
    }
    (fields, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::v1::{upstream_spec::UpstreamType, HealthCheck, StaticUpstream, UpstreamSpec};

    fn upstream(port: u32, health: bool, labels: &[(&str, &str)]) -> Content {
        Content {
            spec: Spec::Upstream(UpstreamSpec {
                upstream_type: Some(UpstreamType::Static(StaticUpstream {
                    hosts: vec![proto::v1::static_upstream::Host {
                        addr: "127.0.0.1".into(),
                        port,
                        sni: String::new(),
                    }],
                })),
                health_checks: if health {
                    vec![HealthCheck {
                        healthy_threshold: 2,
                        ..Default::default()
                    }]
                } else {
                    vec![]
                },
                ..Default::default()
            }),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: HashMap::new(),
        }
    }

    #[test]
    fn a_person_s_field_survives_the_owner_s_sync() {
        let discovered = upstream(8080, false, &[("app", "pets")]);
        let m0 = update(None, &discovered.fields(), "discovery-k8s");
        // A person adds a health check and a label.
        let edited = upstream(8080, true, &[("app", "pets"), ("team", "a")]);
        let m1 = update(Some((&discovered.fields(), &m0)), &edited.fields(), "alice");
        assert_eq!(m1["spec.healthChecks"], "alice");
        assert_eq!(m1["spec.static"], "discovery-k8s");
        // Discovery finds the port changed; it knows nothing of the health check.
        let rediscovered = upstream(9090, false, &[("app", "pets")]);
        let (fields, m2) = merge_sync(
            &edited.fields(),
            &m1,
            rediscovered.fields(),
            "discovery-k8s",
        );
        let merged = Content::from_fields(Kind::Upstream, fields).unwrap();
        assert_eq!(
            merged,
            upstream(9090, true, &[("app", "pets"), ("team", "a")])
        );
        assert_eq!(m2["spec.healthChecks"], "alice");
        assert_eq!(m2["labels.team"], "alice");
    }

    #[test]
    fn the_owner_s_dropped_field_goes_away() {
        let first = upstream(8080, true, &[("app", "pets")]);
        let m0 = update(None, &first.fields(), "d");
        let (fields, m1) = merge_sync(
            &first.fields(),
            &m0,
            upstream(8080, false, &[]).fields(),
            "d",
        );
        assert_eq!(
            Content::from_fields(Kind::Upstream, fields).unwrap(),
            upstream(8080, false, &[])
        );
        assert!(!m1.contains_key("spec.healthChecks"));
    }

    #[test]
    fn rewriting_a_field_unchanged_keeps_its_manager() {
        let c = upstream(8080, false, &[]);
        let m0 = update(None, &c.fields(), "d");
        let m1 = update(Some((&c.fields(), &m0)), &c.fields(), "alice");
        assert_eq!(m1, m0);
    }

    #[test]
    fn a_field_the_person_drops_returns_to_the_owner() {
        let c = upstream(8080, false, &[]);
        let m0 = update(None, &c.fields(), "d");
        let edited = upstream(1, false, &[]);
        let m1 = update(Some((&c.fields(), &m0)), &edited.fields(), "alice");
        assert_eq!(m1["spec.static"], "alice");
        // alice removes her field (here: the whole static block is hers), the owner sets it again.
        let mut dropped = edited.fields();
        dropped.remove("spec.static");
        let m2 = update(Some((&edited.fields(), &m1)), &dropped, "alice");
        let (fields, _) = merge_sync(&dropped, &m2, c.fields(), "d");
        assert_eq!(Content::from_fields(Kind::Upstream, fields).unwrap(), c);
    }
}
