//! The translator: a pure function from a consistent set of resources to Envoy resources and
//! a report per object. No I/O, no store, no tonic: it is unit-tested and benchmarked alone.
//!
//! ```text
//!  Input (all objects) ─► Context (indexes: upstreams, functions, endpoints, groups)
//!     1. upstreams.rs   Upstream      ─► Cluster           (+ upstream plugins)
//!     2. functions      Function      ─► looked up by routes (function plugins)
//!     3. routes.rs      VirtualService ─► VirtualHost/Routes (+ route plugins)
//!     4. plugins.rs     HTTP filters the routes need, in a fixed order
//!     5. listeners.rs   Gateway       ─► Listener + RouteConfiguration (RDS)
//!  ─► Translation { snapshot (each resource encoded once), reports }
//! ```
//!
//! Errors are per object: a VirtualService with a route to a missing Upstream is Rejected and
//! left out, everything else still translates. A route to a Function that does not exist yet
//! is a Warning (the route answers 503 until it appears).
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use proto::v1::{resource::Spec, status::State, Kind, Resource};

use crate::{resource::Key, xds};

pub mod listeners;
pub mod plugins;
pub mod routes;
pub mod upstreams;
pub mod validate;

/// Every object the translation sees, by key.
#[derive(Clone, Default)]
pub struct Input {
    pub objects: BTreeMap<Key, Arc<Resource>>,
}

impl Input {
    pub fn from_state(state: &crate::store::State) -> Input {
        Input {
            objects: state
                .all()
                .filter_map(|r| Some((Key::of(r)?, r.clone())))
                .collect(),
        }
    }

    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = (&Key, &Arc<Resource>)> {
        let start = Key::new(kind, "", "");
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind)
    }
}

/// What the translation says of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub state: State,
    pub reason: String,
}

impl Report {
    pub fn accepted() -> Self {
        Report {
            state: State::Accepted,
            reason: String::new(),
        }
    }
}

pub type Reports = BTreeMap<Key, Report>;

/// Collects reports; the worst state wins and reasons accumulate.
#[derive(Default)]
pub struct Reporter {
    reports: Reports,
}

impl Reporter {
    fn rank(s: State) -> u8 {
        match s {
            State::Pending => 0,
            State::Accepted => 1,
            State::Warning => 2,
            State::Rejected => 3,
        }
    }

    pub fn accept(&mut self, key: &Key) {
        self.reports
            .entry(key.clone())
            .or_insert_with(Report::accepted);
    }

    fn add(&mut self, key: &Key, state: State, reason: String) {
        let r = self
            .reports
            .entry(key.clone())
            .or_insert_with(Report::accepted);
        if Self::rank(state) > Self::rank(r.state) {
            r.state = state;
        }
        if !r.reason.is_empty() {
            r.reason.push_str("; ");
        }
        r.reason.push_str(&reason);
    }

    pub fn warn(&mut self, key: &Key, reason: impl Into<String>) {
        self.add(key, State::Warning, reason.into());
    }

    pub fn reject(&mut self, key: &Key, reason: impl Into<String>) {
        self.add(key, State::Rejected, reason.into());
    }

    pub fn is_rejected(&self, key: &Key) -> bool {
        self.reports
            .get(key)
            .is_some_and(|r| r.state == State::Rejected)
    }

    pub fn into_reports(self) -> Reports {
        self.reports
    }
}

/// The result of one translation pass.
#[derive(Clone, Debug, Default)]
pub struct Translation {
    pub snapshot: xds::Snapshot,
    pub reports: Reports,
    /// The objects each Envoy resource was made from, by resource name, so that Envoy's verdict
    /// on a resource (a NACK) can be reported on them.
    pub origins: BTreeMap<String, Vec<Key>>,
}

/// Envoy names of our objects (Gloo's convention: `<name>_<namespace>`).
pub mod names {
    pub fn cluster(namespace: &str, name: &str) -> String {
        format!("{name}_{namespace}")
    }
    pub fn listener(namespace: &str, name: &str) -> String {
        format!("{name}_{namespace}")
    }
    pub fn route_config(namespace: &str, name: &str) -> String {
        format!("{name}_{namespace}-routes")
    }
    pub fn virtual_host(namespace: &str, name: &str) -> String {
        format!("{name}_{namespace}")
    }
}

/// Names one version of an object's spec: (uid, generation). Status writes leave it alone.
pub type Stamp = (u64, u64);

/// What a cached translation read, flattened: stamps (0, 0 when absent) and flags. Equal deps
/// mean an equal result.
pub type Deps = Vec<Option<Stamp>>;

pub fn stamp(r: &Resource) -> Stamp {
    r.metadata
        .as_ref()
        .map_or((0, 0), |m| (m.uid, m.generation))
}

/// Indexes over the input that the steps share.
pub struct Context<'a> {
    pub input: &'a Input,
    /// Functions by (namespace, function name).
    pub functions: HashMap<(&'a str, &'a str), &'a Resource>,
    /// Every object by kind, namespace and name: looked up by `&str`, with no allocation.
    index: HashMap<Kind, HashMap<&'a str, HashMap<&'a str, &'a Arc<Resource>>>>,
}

impl<'a> Context<'a> {
    fn new(input: &'a Input) -> Self {
        let mut functions = HashMap::new();
        for (k, r) in input.of_kind(Kind::Function) {
            functions.insert((k.namespace.as_str(), k.name.as_str()), r.as_ref());
        }
        let mut index: HashMap<Kind, HashMap<&str, HashMap<&str, &Arc<Resource>>>> = HashMap::new();
        for (k, r) in &input.objects {
            index
                .entry(k.kind)
                .or_default()
                .entry(k.namespace.as_str())
                .or_default()
                .insert(k.name.as_str(), r);
        }
        Context {
            input,
            functions,
            index,
        }
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&'a Arc<Resource>> {
        self.index.get(&kind)?.get(namespace)?.get(name).copied()
    }

    pub fn stamp(&self, kind: Kind, namespace: &str, name: &str) -> Option<Stamp> {
        self.get(kind, namespace, name).map(|r| stamp(r))
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&'a proto::v1::SecretSpec> {
        match self.get(Kind::Secret, namespace, name)?.spec.as_ref()? {
            Spec::Secret(s) => Some(s),
            _ => None,
        }
    }

    /// The Secret a reference in field `field` names, in `namespace` unless the reference
    /// names one: (its namespace, its spec), or an error naming the field and the Secret.
    pub fn secret_ref<'r>(
        &self,
        field: &str,
        namespace: &'r str,
        r: &'r proto::v1::ResourceRef,
    ) -> Result<(&'r str, &'a proto::v1::SecretSpec), String> {
        let ns = if r.namespace.is_empty() {
            namespace
        } else {
            &r.namespace
        };
        self.secret(ns, &r.name)
            .map(|s| (ns, s))
            .ok_or_else(|| format!("{field}: Secret {ns}/{} not found", r.name))
    }
}

/// Translates everything with the default plugins, from scratch.
pub fn translate(input: &Input) -> Translation {
    Translator::new().translate(input)
}

/// A translator that remembers each Upstream's and VirtualService's last translation with the
/// stamps of what it read, and reuses it while those are unchanged: a pass after a small change
/// rebuilds and re-encodes only what the change touches.
pub struct Translator {
    plugins: Vec<Box<dyn plugins::Plugin>>,
    upstreams: HashMap<Key, upstreams::UpstreamEntry>,
    vhosts: HashMap<Key, routes::VhostEntry>,
}

impl Default for Translator {
    fn default() -> Self {
        Translator::new()
    }
}

impl Translator {
    pub fn new() -> Self {
        Translator::with_plugins(plugins::defaults())
    }

    pub fn with_plugins(plugins: Vec<Box<dyn plugins::Plugin>>) -> Self {
        Translator {
            plugins,
            upstreams: HashMap::new(),
            vhosts: HashMap::new(),
        }
    }

    pub fn translate(&mut self, input: &Input) -> Translation {
        let ctx = Context::new(input);
        let mut reporter = Reporter::default();
        for key in input.objects.keys() {
            reporter.accept(key);
        }
        let plugins = &self.plugins;
        // 1. Upstreams → clusters; 2. their endpoints.
        let (mut clusters, endpoints) =
            upstreams::translate(&ctx, plugins, &mut reporter, &mut self.upstreams);
        for p in plugins {
            clusters.extend(p.clusters(&ctx, &mut reporter));
        }
        // 3. VirtualServices → virtual hosts (a Rejected one is left out).
        let vhosts = routes::translate(&ctx, plugins, &mut reporter, &mut self.vhosts);
        // 4 + 5. Gateways → listeners with the filters their routes need, and route configurations.
        let (listeners, route_configs, secrets, mut origins) =
            listeners::translate(&ctx, &vhosts, &mut reporter);
        for (key, _) in input.of_kind(Kind::Upstream) {
            origins.insert(names::cluster(&key.namespace, &key.name), vec![key.clone()]);
        }
        let mut snapshot = xds::Snapshot::default();
        for (url, items) in [
            (xds::CLUSTER, clusters),
            (xds::ENDPOINT, endpoints),
            (xds::LISTENER, listeners),
            (xds::ROUTE, route_configs),
            (xds::SECRET, secrets),
        ] {
            snapshot.resources.insert(
                url,
                items.into_iter().map(|r| (r.name.clone(), r)).collect(),
            );
        }
        Translation {
            snapshot,
            reports: reporter.into_reports(),
            origins,
        }
    }
}

#[cfg(test)]
mod tests;
