//! The storage API's semantics, independent of gRPC: Get, List, Apply, Delete, Sync and
//! UpdateStatus over the [`Store`], with authorization, validation and field ownership.
//!
//! Every write runs inside one store transaction, so its checks (resource_version, ownership)
//! and its effect are atomic. Calls here block on disk I/O: the gRPC layer runs them on the
//! blocking pool.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use proto::v1::{
    resource::Spec, secret_spec, status::State, sync_response::Rejected, Kind, Resource, Status,
    SyncRequest, SyncResponse,
};

use crate::{
    auth::{Identity, Role},
    resource::{kind_name, Key, LabelSelector},
    store::{Store, StoreError, Write},
};

pub mod fields;
pub mod grpc;
pub mod validate;
pub mod watch;

use fields::Content;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(Key),
    #[error("{}", conflict_message(key, *expected, *current))]
    Conflict {
        key: Key,
        expected: u64,
        current: u64,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Denied(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn conflict_message(key: &Key, expected: u64, current: u64) -> String {
    if current == 0 {
        format!("{key} does not exist (the write expected resource_version {expected})")
    } else {
        format!(
            "{key} has resource_version {current}, not {expected}: it changed since it was read; \
             get it again and retry"
        )
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::NotFound(_) => tonic::Status::not_found(msg),
            Error::Conflict { .. } => tonic::Status::aborted(msg),
            Error::Invalid(_) => tonic::Status::invalid_argument(msg),
            Error::Denied(_) => tonic::Status::permission_denied(msg),
            Error::Store(StoreError::Compacted { .. }) => tonic::Status::out_of_range(msg),
            Error::Store(StoreError::Backend(_)) => tonic::Status::unavailable(msg),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyOptions {
    pub expected_resource_version: u64,
    pub dry_run: bool,
    pub draft: bool,
}

/// An item of a Sync after its structural checks: its key, or why it is refused (with its key
/// when it has one, so that a refused item is never taken for a vanished one).
type Checked = Result<Key, (Option<Key>, String)>;

pub struct ApplyOutcome {
    pub resource: Arc<Resource>,
    pub created: bool,
    pub unchanged: bool,
}

/// Checks a write against the whole configuration (the translator's validation): the reason
/// it must be refused, if any.
pub type Validator =
    Arc<dyn Fn(&crate::store::State, &[Write]) -> Result<(), String> + Send + Sync>;

pub struct Storage {
    store: Arc<Store>,
    validator: Option<Validator>,
}

fn rv(r: &Resource) -> u64 {
    r.metadata.as_ref().map_or(0, |m| m.resource_version)
}

fn owner_of(r: &Resource) -> &str {
    r.metadata.as_ref().map_or("", |m| m.owner.as_str())
}

fn content_of(r: &Resource) -> Option<Content> {
    let meta = r.metadata.as_ref()?;
    Some(Content {
        spec: r.spec.clone()?,
        labels: meta.labels.clone(),
        annotations: meta.annotations.clone(),
    })
}

fn same_content(a: &Resource, b: &Resource) -> bool {
    let (Some(ma), Some(mb)) = (&a.metadata, &b.metadata) else {
        return false;
    };
    a.spec == b.spec && ma.labels == mb.labels && ma.annotations == mb.annotations
}

/// Whether `new` is `current` with only `who`'s own warning annotation added, changed or
/// removed, on an object of a kind `who` may read: the one write a discovery identity may make
/// to objects it does not own (see [`crate::resource::WARNING_ANNOTATION_PREFIX`]).
fn only_own_warning_changes(
    who: &Identity,
    kind: Kind,
    current: &Resource,
    new: &Resource,
) -> bool {
    let Some(mine) = who.warning_annotation() else {
        return false;
    };
    let (Some(mc), Some(mn)) = (&current.metadata, &new.metadata) else {
        return false;
    };
    let others = |a: &HashMap<String, String>| {
        let mut a = a.clone();
        a.remove(&mine);
        a
    };
    who.can_read(kind)
        && current.spec == new.spec
        && mc.labels == mn.labels
        && others(&mc.annotations) == others(&mn.annotations)
}

fn managers_of(r: &Resource) -> fields::Managers {
    r.metadata
        .as_ref()
        .map(|m| m.field_managers.clone())
        .unwrap_or_default()
}

fn pending() -> Status {
    Status {
        state: State::Pending as i32,
        ..Default::default()
    }
}

/// The object as `who` may see it: Secrets' contents are removed for callers without the
/// right to read them.
pub fn redact_for(who: &Identity, r: Arc<Resource>) -> Arc<Resource> {
    if who.can_read(Kind::Secret) || !matches!(r.spec, Some(Spec::Secret(_))) {
        return r;
    }
    let mut copy = (*r).clone();
    copy.spec = Some(Spec::Secret(proto::v1::SecretSpec {
        kind: match &copy.spec {
            Some(Spec::Secret(s)) => s.kind.as_ref().map(|k| match k {
                secret_spec::Kind::Tls(_) => secret_spec::Kind::Tls(Default::default()),
                secret_spec::Kind::Aws(_) => secret_spec::Kind::Aws(Default::default()),
                secret_spec::Kind::Gcp(_) => secret_spec::Kind::Gcp(Default::default()),
                secret_spec::Kind::Opaque(_) => secret_spec::Kind::Opaque(Default::default()),
            }),
            _ => None,
        },
    }));
    Arc::new(copy)
}

fn check_read(who: &Identity, kind: Kind) -> Result<(), Error> {
    if who.can_read(kind) {
        Ok(())
    } else {
        Err(Error::Denied(format!(
            "{} may not read {} objects",
            who.name,
            kind_name(kind)
        )))
    }
}

impl Storage {
    pub fn new(store: Arc<Store>) -> Self {
        Storage {
            store,
            validator: None,
        }
    }

    /// Every Apply and Delete must also pass `validator`, unless written as a draft.
    pub fn with_validator(mut self, validator: Validator) -> Self {
        self.validator = Some(validator);
        self
    }

    fn validate(&self, state: &crate::store::State, writes: &[Write]) -> Result<(), Error> {
        match &self.validator {
            Some(v) => v(state, writes).map_err(Error::Invalid),
            None => Ok(()),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn get(&self, who: &Identity, key: &Key) -> Result<Arc<Resource>, Error> {
        check_read(who, key.kind)?;
        self.store
            .get(key)
            .ok_or_else(|| Error::NotFound(key.clone()))
    }

    /// Objects of `kind` (every kind the caller may read when `None`).
    pub fn list(
        &self,
        who: &Identity,
        kind: Option<Kind>,
        namespace: Option<&str>,
        selector: &LabelSelector,
    ) -> Result<(Vec<Arc<Resource>>, u64), Error> {
        let kinds: Vec<Kind> = match kind {
            Some(k) => {
                check_read(who, k)?;
                vec![k]
            }
            None => crate::resource::KINDS
                .into_iter()
                .filter(|k| who.can_read(*k))
                .collect(),
        };
        let state = self.store.read();
        let mut out = Vec::new();
        for k in kinds {
            out.extend(
                state
                    .of_kind(k, namespace)
                    .filter(|r| {
                        r.metadata
                            .as_ref()
                            .is_some_and(|m| selector.matches(&m.labels))
                    })
                    .cloned(),
            );
        }
        Ok((out, state.revision()))
    }

    pub fn apply(
        &self,
        who: &Identity,
        mut r: Resource,
        opts: ApplyOptions,
    ) -> Result<ApplyOutcome, Error> {
        let key = validate::normalize_and_check(&mut r).map_err(Error::Invalid)?;
        r.status = None;
        let (events, outcome) = self.store.transact(|state| {
            let current = state.get(&key);
            if opts.expected_resource_version != 0 {
                let cur = current.map_or(0, |c| rv(c));
                if cur != opts.expected_resource_version {
                    return Err(Error::Conflict {
                        key: key.clone(),
                        expected: opts.expected_resource_version,
                        current: cur,
                    });
                }
            }
            let meta = r.metadata.get_or_insert_with(Default::default);
            let current_owner = current.map_or("", |c| owner_of(c));
            if meta.owner.is_empty() {
                meta.owner = match (current, who.role) {
                    (Some(_), _) => current_owner.to_string(),
                    (None, Role::Discovery) => who.manager().to_string(),
                    (None, _) => String::new(),
                };
            } else if meta.owner != current_owner
                && !matches!(who.role, Role::Admin | Role::Discovery)
            {
                return Err(Error::Denied(format!(
                    "{} may not change metadata.owner of {key} (from {current_owner:?} to {:?}); \
                     only admins hand objects to another owner",
                    who.name, meta.owner
                )));
            }
            let new_owner = meta.owner.clone();
            // A discovery identity's report of a problem with an object it only reads.
            let annotating = current.is_some_and(|c| {
                new_owner == current_owner && only_own_warning_changes(who, key.kind, c, &r)
            });
            if !annotating {
                let denied = |e: String| match (current, who.warning_annotation()) {
                    (Some(_), Some(a)) => Error::Denied(format!(
                        "{e} (of objects it may read it may change only the annotation {a})"
                    )),
                    _ => Error::Denied(e),
                };
                if let Some(c) = current {
                    who.can_write(key.kind, owner_of(c)).map_err(denied)?;
                }
                who.can_write(key.kind, &new_owner).map_err(denied)?;
            }

            if let Some(c) = current {
                if same_content(c, &r) && owner_of(c) == owner_of(&r) {
                    return Ok((vec![], (c.clone(), false, true)));
                }
            }
            let new_content = content_of(&r).expect("validated objects have spec and metadata");
            let old = current.and_then(|c| content_of(c).map(|cc| (cc.fields(), managers_of(c))));
            let managers = fields::update(
                old.as_ref().map(|(f, m)| (f, m)),
                &new_content.fields(),
                who.manager(),
            );
            let meta = r.metadata.get_or_insert_with(Default::default);
            meta.field_managers = managers;
            meta.generation = match current {
                None => 1,
                Some(c) => {
                    let g = c.metadata.as_ref().map_or(0, |m| m.generation);
                    if c.spec == r.spec {
                        g
                    } else {
                        g + 1
                    }
                }
            };
            meta.resource_version = current.map_or(0, |c| rv(c));
            meta.uid = current
                .and_then(|c| c.metadata.as_ref())
                .map_or(0, |m| m.uid);
            r.status = Some(
                current
                    .and_then(|c| c.status.clone())
                    .unwrap_or_else(pending),
            );
            let created = current.is_none();
            let writes = vec![Write::Put(Box::new(r.clone()))];
            // A warning annotation changes no translation but the object's own Warning, so it
            // cannot break anything (and must be writable on an object that is Rejected).
            if !opts.draft && !annotating {
                self.validate(state, &writes)?;
            }
            if opts.dry_run {
                return Ok((vec![], (Arc::new(r), created, false)));
            }
            Ok((writes, (Arc::new(r), created, false)))
        })?;
        let (resource, created, unchanged) = outcome;
        let resource = events.into_iter().next().map_or(resource, |e| e.resource);
        Ok(ApplyOutcome {
            resource,
            created,
            unchanged,
        })
    }

    pub fn delete(
        &self,
        who: &Identity,
        key: &Key,
        expected_resource_version: u64,
    ) -> Result<Arc<Resource>, Error> {
        let (events, ()) = self.store.transact(|state| {
            let current = state.get(key).ok_or_else(|| Error::NotFound(key.clone()))?;
            who.can_write(key.kind, owner_of(current))
                .map_err(Error::Denied)?;
            if expected_resource_version != 0 && rv(current) != expected_resource_version {
                return Err(Error::Conflict {
                    key: key.clone(),
                    expected: expected_resource_version,
                    current: rv(current),
                });
            }
            let writes = vec![Write::Delete(key.clone())];
            self.validate(state, &writes)?;
            Ok((writes, ()))
        })?;
        Ok(events
            .into_iter()
            .next()
            .expect("a delete of an existing object writes one event")
            .resource)
    }

    pub fn update_status(
        &self,
        who: &Identity,
        key: &Key,
        status: Status,
    ) -> Result<(Arc<Resource>, bool), Error> {
        if !who.can_update_status() {
            return Err(Error::Denied(format!("{} may not set statuses", who.name)));
        }
        let (events, current) = self.store.transact(|state| {
            let current = state.get(key).ok_or_else(|| Error::NotFound(key.clone()))?;
            if current.status.as_ref() == Some(&status) {
                return Ok::<_, Error>((vec![], current.clone()));
            }
            let mut r = (**current).clone();
            r.status = Some(status);
            Ok((vec![Write::Put(Box::new(r))], current.clone()))
        })?;
        Ok(match events.into_iter().next() {
            Some(e) => (e.resource, false),
            None => (current, true),
        })
    }

    /// Sets many statuses in one transaction (the reporter's call). An entry is skipped when
    /// the object is gone or its generation moved on since the status was computed, or when its
    /// status is already that. Returns the objects written, as stored now.
    pub fn update_statuses(
        &self,
        who: &Identity,
        items: Vec<(Key, u64, Status)>,
    ) -> Result<Vec<Arc<Resource>>, Error> {
        if !who.can_update_status() {
            return Err(Error::Denied(format!("{} may not set statuses", who.name)));
        }
        let (events, ()) = self.store.transact(|state| {
            let mut writes = Vec::new();
            for (key, generation, status) in items {
                let Some(current) = state.get(&key) else {
                    continue;
                };
                let g = current.metadata.as_ref().map_or(0, |m| m.generation);
                if g != generation || current.status.as_ref() == Some(&status) {
                    continue;
                }
                let mut r = (**current).clone();
                r.status = Some(status);
                writes.push(Write::Put(Box::new(r)));
            }
            Ok::<_, Error>((writes, ()))
        })?;
        Ok(events.into_iter().map(|e| e.resource).collect())
    }

    /// Makes the objects of `req.kinds` owned by `req.owner` exactly `req.resources`, keeping
    /// other managers' fields; see the module docs of [`fields`].
    pub fn sync(&self, who: &Identity, req: SyncRequest) -> Result<SyncResponse, Error> {
        let owner = req.owner.clone();
        if owner.is_empty() {
            return Err(Error::Invalid("sync: owner: required".into()));
        }
        let kinds: HashSet<Kind> = req
            .kinds
            .iter()
            .map(|k| Kind::try_from(*k).unwrap_or(Kind::Unspecified))
            .collect();
        if kinds.is_empty() || kinds.contains(&Kind::Unspecified) {
            return Err(Error::Invalid(
                "sync: kinds: one or more known kinds are required".into(),
            ));
        }
        for k in &kinds {
            who.can_write(*k, &owner).map_err(Error::Denied)?;
        }
        // Structural checks need no store state: do them before taking the writer lock.
        let items: Vec<(usize, Checked, Resource)> = req
            .resources
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                let checked = validate::normalize_and_check(&mut r).map_err(|e| (Key::of(&r), e));
                (i, checked, r)
            })
            .collect();

        let (_, resp) = self.store.transact(|state| {
            let mut resp = SyncResponse::default();
            let mut writes = Vec::new();
            // Keys this Sync speaks of: never deleted by it.
            let mut seen: HashSet<Key> = HashSet::new();
            let reject = |resp: &mut SyncResponse, i: usize, key: Option<&Key>, reason: String| {
                resp.rejected.push(Rejected {
                    key: key.map(Key::to_proto),
                    index: i as u32,
                    reason,
                });
            };
            for (i, checked, mut r) in items {
                let key = match checked {
                    Ok(k) => k,
                    Err((key, reason)) => {
                        if let Some(k) = &key {
                            seen.insert(k.clone());
                        }
                        reject(&mut resp, i, key.as_ref(), reason);
                        continue;
                    }
                };
                if !kinds.contains(&key.kind) {
                    let reason = format!(
                        "{key}: kind {} is not among this Sync's kinds",
                        kind_name(key.kind)
                    );
                    reject(&mut resp, i, Some(&key), reason);
                    continue;
                }
                if !seen.insert(key.clone()) {
                    reject(
                        &mut resp,
                        i,
                        Some(&key),
                        format!("{key}: appears more than once in this Sync"),
                    );
                    continue;
                }
                let meta = r.metadata.get_or_insert_with(Default::default);
                if !meta.owner.is_empty() && meta.owner != owner {
                    let reason = format!(
                        "{key}: metadata.owner is {:?}, not this Sync's owner {owner:?}",
                        meta.owner
                    );
                    reject(&mut resp, i, Some(&key), reason);
                    continue;
                }
                meta.owner = owner.clone();
                r.status = None;
                match state.get(&key) {
                    None => {
                        let content = content_of(&r).expect("validated");
                        let meta = r.metadata.get_or_insert_with(Default::default);
                        meta.field_managers = fields::update(None, &content.fields(), &owner);
                        meta.generation = 1;
                        r.status = Some(pending());
                        writes.push(Write::Put(Box::new(r)));
                        resp.created += 1;
                    }
                    Some(c) if owner_of(c) != owner => {
                        let by = match owner_of(c) {
                            "" => "people (no owner)".to_string(),
                            o => format!("{o:?}"),
                        };
                        reject(
                            &mut resp,
                            i,
                            Some(&key),
                            format!("{key}: already exists and is owned by {by}; it is left alone"),
                        );
                    }
                    Some(c) if same_content(c, &r) => resp.unchanged += 1,
                    Some(c) => {
                        let cur = content_of(c).expect("stored objects have spec and metadata");
                        let desired = content_of(&r).expect("validated");
                        let (merged, managers) = fields::merge_sync(
                            &cur.fields(),
                            &managers_of(c),
                            desired.fields(),
                            &owner,
                        );
                        let merged = match Content::from_fields(key.kind, merged) {
                            Ok(m) => m,
                            Err(e) => {
                                reject(&mut resp, i, Some(&key), format!("{key}: {e}"));
                                continue;
                            }
                        };
                        if merged == cur && managers == managers_of(c) {
                            resp.unchanged += 1;
                            continue;
                        }
                        let mut next = (**c).clone();
                        let meta = next.metadata.get_or_insert_with(Default::default);
                        if merged.spec != cur.spec {
                            meta.generation += 1;
                        }
                        meta.labels = merged.labels;
                        meta.annotations = merged.annotations;
                        meta.field_managers = managers;
                        next.spec = Some(merged.spec);
                        writes.push(Write::Put(Box::new(next)));
                        resp.updated += 1;
                    }
                }
            }
            for kind in &kinds {
                for r in state.of_kind(*kind, None) {
                    if owner_of(r) == owner {
                        let key = Key::of(r).expect("stored objects have keys");
                        if !seen.contains(&key) {
                            writes.push(Write::Delete(key));
                            resp.deleted += 1;
                        }
                    }
                }
            }
            resp.revision = state.revision() + writes.len() as u64;
            if req.dry_run {
                resp.revision = state.revision();
                writes.clear();
            }
            Ok::<_, Error>((writes, resp))
        })?;
        Ok(resp)
    }
}

/// Counts of stored objects by kind, for metrics.
pub fn count_by_kind(store: &Store) -> HashMap<Kind, usize> {
    let state = store.read();
    let mut out = HashMap::new();
    for r in state.all() {
        if let Some(k) = crate::resource::kind_of(r) {
            *out.entry(k).or_insert(0) += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Tokens;
    use proto::v1::{static_upstream::Host, upstream_spec::UpstreamType, StaticUpstream};

    const TOKENS: &str = r#"tokens:
  - {name: admin, token: admin, role: admin}
  - {name: discovery-openapi, token: openapi, role: discovery, kinds: [Function]}
  - {name: discovery-k8s, token: k8s, role: discovery, kinds: [Upstream, Endpoints]}
"#;
    const WARNING: &str = "discovery.solo.io/warning.discovery-openapi";

    fn who(token: &str) -> Arc<Identity> {
        Tokens::parse(TOKENS)
            .unwrap()
            .authenticate(Some(&format!("Bearer {token}")))
            .unwrap()
    }

    fn upstream(name: &str, port: u32) -> Resource {
        Resource {
            metadata: Some(proto::v1::Metadata {
                name: name.into(),
                namespace: "default".into(),
                annotations: [(
                    "discovery.solo.io/openapi-url".to_string(),
                    "/api.json".to_string(),
                )]
                .into(),
                ..Default::default()
            }),
            status: None,
            spec: Some(Spec::Upstream(proto::v1::UpstreamSpec {
                upstream_type: Some(UpstreamType::Static(StaticUpstream {
                    hosts: vec![Host {
                        addr: "127.0.0.1".into(),
                        port,
                        sni: String::new(),
                    }],
                })),
                ..Default::default()
            })),
        }
    }

    fn storage(dir: &std::path::Path) -> Storage {
        let backend = crate::store::redb::RedbBackend::open(dir, 1000).unwrap();
        Storage::new(Arc::new(Store::open(Box::new(backend)).unwrap()))
    }

    /// A store holding the admin's Upstream `shop` (keep the dir while the store is used).
    fn with_shop() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let s = storage(dir.path());
        s.apply(
            &who("admin"),
            upstream("shop", 8080),
            ApplyOptions::default(),
        )
        .unwrap();
        (dir, s)
    }

    fn key(name: &str) -> Key {
        Key::new(Kind::Upstream, "default", name)
    }

    /// The stored object with `edit` applied, as a client would send it back.
    fn edited(s: &Storage, name: &str, edit: impl FnOnce(&mut Resource)) -> Resource {
        let mut r = (*s.store().get(&key(name)).unwrap()).clone();
        edit(&mut r);
        r
    }

    fn annotations(r: &mut Resource) -> &mut HashMap<String, String> {
        &mut r.metadata.as_mut().unwrap().annotations
    }

    #[test]
    fn discovery_may_set_and_remove_its_warning_on_an_object_it_does_not_own() {
        let (_dir, s) = with_shop();
        let opts = ApplyOptions::default();
        let openapi = who("openapi");

        let warned = edited(&s, "shop", |r| {
            annotations(r).insert(WARNING.into(), "http://x/openapi.json: bad".into());
        });
        let out = s.apply(&openapi, warned, opts).unwrap();
        let m = out.resource.metadata.clone().unwrap();
        assert_eq!(m.annotations[WARNING], "http://x/openapi.json: bad");
        assert_eq!(
            m.field_managers[&format!("annotations.{WARNING}")],
            "discovery-openapi"
        );
        assert_eq!((m.owner.as_str(), m.generation), ("", 1));
        // The rest is still the person's.
        assert_eq!(m.field_managers["spec.static"], "admin");
        assert_eq!(m.annotations["discovery.solo.io/openapi-url"], "/api.json");

        let cleared = edited(&s, "shop", |r| {
            annotations(r).remove(WARNING);
        });
        let out = s.apply(&openapi, cleared, opts).unwrap();
        let m = out.resource.metadata.clone().unwrap();
        assert!(!m.annotations.contains_key(WARNING), "{m:?}");
        assert_eq!(m.annotations.len(), 1);
    }

    #[test]
    fn discovery_still_may_not_change_anything_else_of_an_object_it_does_not_own() {
        let (_dir, s) = with_shop();
        let opts = ApplyOptions::default();
        let openapi = who("openapi");
        let with_warning = |r: &mut Resource| {
            annotations(r).insert(WARNING.into(), "bad".into());
        };
        let attempts: Vec<(&str, Resource)> = vec![
            (
                "spec",
                edited(&s, "shop", |r| {
                    with_warning(r);
                    *r = Resource {
                        spec: upstream("shop", 9090).spec,
                        ..r.clone()
                    };
                }),
            ),
            (
                "a label",
                edited(&s, "shop", |r| {
                    with_warning(r);
                    let m = r.metadata.as_mut().unwrap();
                    m.labels.insert("team".into(), "x".into());
                }),
            ),
            (
                "another annotation under discovery.solo.io/",
                edited(&s, "shop", |r| {
                    annotations(r).insert("discovery.solo.io/openapi-url".into(), "/x".into());
                }),
            ),
            (
                "another service's warning",
                edited(&s, "shop", |r| {
                    annotations(r)
                        .insert("discovery.solo.io/warning.discovery-k8s".into(), "x".into());
                }),
            ),
            (
                "the owner",
                edited(&s, "shop", |r| {
                    with_warning(r);
                    r.metadata.as_mut().unwrap().owner = "discovery-openapi".into();
                }),
            ),
            ("a new object", {
                let mut r = upstream("new", 80);
                with_warning(&mut r);
                r
            }),
        ];
        for (what, r) in attempts {
            let e = s.apply(&openapi, r, opts).err();
            assert!(
                matches!(&e, Some(Error::Denied(_))),
                "changing {what}: {e:?}"
            );
        }
        let e = s
            .apply(
                &openapi,
                edited(&s, "shop", |r| {
                    r.metadata
                        .as_mut()
                        .unwrap()
                        .labels
                        .insert("team".into(), "x".into());
                }),
                opts,
            )
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(&format!("only the annotation {WARNING}")), "{e}");
        let stored = s.store().get(&key("shop")).unwrap();
        assert_eq!(stored.metadata.as_ref().unwrap().resource_version, 1);
    }

    #[test]
    fn the_owner_s_sync_keeps_another_service_s_warning() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage(dir.path());
        let k8s = who("k8s");
        let sync = |port| SyncRequest {
            owner: "discovery-k8s".into(),
            kinds: vec![Kind::Upstream as i32],
            resources: vec![upstream("shop", port)],
            dry_run: false,
        };
        s.sync(&k8s, sync(8080)).unwrap();
        let warned = edited(&s, "shop", |r| {
            annotations(r).insert(WARNING.into(), "bad".into());
        });
        s.apply(&who("openapi"), warned, ApplyOptions::default())
            .unwrap();
        let resp = s.sync(&k8s, sync(8080)).unwrap();
        assert_eq!(resp.unchanged, 1);
        let resp = s.sync(&k8s, sync(9090)).unwrap();
        assert_eq!(resp.updated, 1);
        let stored = s.store().get(&key("shop")).unwrap();
        assert_eq!(
            stored.metadata.as_ref().unwrap().annotations[WARNING],
            "bad"
        );
    }
}
