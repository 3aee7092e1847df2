//! The translator that keeps what it made: a pass is driven by the keys that changed, through
//! an index of who looked up what, and updates the kept snapshot, reports and origins in place.
//! A pass after one change costs what that change touches, not what the input holds.
//!
//! ```text
//!  changes (key → object, or gone)
//!     │  same content as kept (a status write)? keep the new Arc; nothing to translate
//!     ▼
//!  changed keys ──► readers: key → the objects whose translation looked it up (found or not)
//!     1. Upstreams: changed, or a Secret / Endpoints they read changed → cluster, assignment
//!        (one whose Rejected-ness flipped counts as changed for the steps below)
//!     2. Endpoints, Functions: is their upstream there?
//!     3. plugin clusters (gcf): when a Function, a flip, or what they read changed
//!     4. VirtualServices → virtual hosts (an equal result keeps the old one)
//!     5. Gateways → listeners, route configurations: when a virtual host, a Gateway, a flip,
//!        or what they read changed
//!  ─► the kept Translation: each object's report is its own step's, then step 3's, then 5's
//! ```
//!
//! Every lookup goes through [`Context::get`], which records it, so a plugin that reads another
//! object depends on it with nothing more to declare. Tests compare every pass with a fresh
//! translation, including a randomized sequence of changes.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use proto::v1::{resource::Spec, status::State, Kind, Resource};

use super::{
    listeners, names,
    plugins::{self, Plugin},
    routes::{self, VirtualHostOut},
    upstreams, Context, FastMap, FastSet, Index, Input, Report, Reporter, Reports, Translation,
};
use crate::{
    resource::Key,
    xds::{self, XdsResource},
};

/// One object's translation, kept with the keys it looked up.
struct Unit {
    reads: Vec<Key>,
    /// What this object's own step says of it (none: nothing to say).
    report: Option<Report>,
    out: UnitOut,
}

enum UnitOut {
    /// Endpoints, Functions and VirtualServices (whose virtual hosts are kept apart, in key
    /// order): only a report.
    Checked,
    /// An Upstream's cluster and assignment (none when Rejected).
    Upstream(Option<(Arc<XdsResource>, Option<Arc<XdsResource>>)>),
}

/// A step over many objects at once (plugin clusters, gateways), run again as a whole when
/// what it read changed.
#[derive(Default)]
struct Step {
    /// Sorted.
    reads: Vec<Key>,
    reports: Reports,
}

impl Step {
    /// Whether any of these keys (sorted) was read.
    fn read_any(&self, keys: &[Key]) -> bool {
        self.reads.iter().any(|k| keys.binary_search(k).is_ok())
    }
}

/// A translator that keeps its input, each object's translation and the snapshot between
/// passes: [`Translator::apply`] takes the objects that changed and re-translates only what
/// read them.
pub struct Translator {
    plugins: Vec<Box<dyn Plugin>>,
    input: Input,
    index: Index,
    /// Endpoints objects by the Upstream they name, sorted (mostly one: a set would cost a
    /// B-tree node each).
    endpoints_of: FastMap<Key, Vec<Key>>,
    units: FastMap<Key, Unit>,
    /// Who read each key, once each: mostly one or two, so a vector, kept in step by
    /// [`replace_unit`] from the difference of old and new reads.
    readers: FastMap<Key, Readers>,
    rejected_upstreams: Arc<FastSet<Key>>,
    /// The virtual hosts of the VirtualServices that translated, in key order.
    vhosts: BTreeMap<Key, Arc<VirtualHostOut>>,
    plugin_step: Step,
    plugin_clusters: BTreeMap<String, Arc<XdsResource>>,
    gateway_step: Step,
    /// What the gateways step made of each VirtualService served with scoped routes.
    scoped: listeners::Scoped,
    /// The names of the gateways' own route configurations (those not scoped), last pass.
    gateway_routes: Vec<String>,
    /// Passes whose gateways step only rebuilt edited VirtualServices' route configurations.
    pub(crate) gateway_fast_passes: u64,
    /// The names the gateways step gave origins for.
    gateway_origins: BTreeSet<String>,
    out: Translation,
    started: bool,
    /// Whether to keep the Envoy resources; without them a pass gives only the reports.
    keep_resources: bool,
}

impl Default for Translator {
    fn default() -> Self {
        Translator::new()
    }
}

/// Whether two versions of an object are the same to the translator: everything but the
/// status, the resource_version and the field managers.
fn same_for_translation(a: &Resource, b: &Resource) -> bool {
    a.spec == b.spec
        && match (&a.metadata, &b.metadata) {
            (Some(x), Some(y)) => {
                x.name == y.name
                    && x.namespace == y.namespace
                    && x.uid == y.uid
                    && x.generation == y.generation
                    && x.owner == y.owner
                    && x.labels == y.labels
                    && x.annotations == y.annotations
            }
            (None, None) => true,
            _ => false,
        }
}

fn endpoints_upstream(r: &Resource) -> Option<&str> {
    match &r.spec {
        Some(Spec::Endpoints(e)) => Some(&e.upstream),
        _ => None,
    }
}

/// The Upstream key a cluster name (`<name>_<namespace>`, both DNS labels) is made from.
fn cluster_upstream(name: &str) -> Option<Key> {
    let (n, ns) = name.split_once('_')?;
    Some(Key::new(Kind::Upstream, ns, n))
}

/// A name's first eight bytes as a big-endian number (zeros after a shorter name): two names
/// whose numbers differ are in the order of their numbers.
fn name_prefix(name: &str) -> u64 {
    match name.as_bytes().first_chunk::<8>() {
        Some(word) => u64::from_be_bytes(*word),
        None => name
            .bytes()
            .enumerate()
            .fold(0, |w, (i, b)| w | (b as u64) << (56 - 8 * i)),
    }
}

fn report_of(state: State, reason: &str) -> Report {
    let mut r = Report::accepted();
    r.merge(state, reason);
    r
}

/// The objects that read a key, once each: mostly one, kept in place (a vector of one would be
/// an allocation for each key read).
enum Readers {
    One(Key),
    Many(Vec<Key>),
}

impl Readers {
    fn as_slice(&self) -> &[Key] {
        match self {
            Readers::One(k) => std::slice::from_ref(k),
            Readers::Many(v) => v,
        }
    }

    fn push(&mut self, key: Key) {
        match self {
            Readers::One(first) => *self = Readers::Many(vec![first.clone(), key]),
            Readers::Many(v) => v.push(key),
        }
    }

    /// Removes `key`; whether none is left.
    fn remove(&mut self, key: &Key) -> bool {
        match self {
            Readers::One(k) => k == key,
            Readers::Many(v) => {
                if let Some(i) = v.iter().position(|k| k == key) {
                    v.swap_remove(i);
                }
                v.is_empty()
            }
        }
    }
}

/// Replaces the unit of `key` (removing it when `unit` is none) and its entries in `readers`;
/// returns the old one.
fn replace_unit(
    units: &mut FastMap<Key, Unit>,
    readers: &mut FastMap<Key, Readers>,
    key: &Key,
    unit: Option<Unit>,
) -> Option<Unit> {
    use std::collections::hash_map::Entry;
    // One search of `units`: the new unit's reads are read where it now lies.
    let (old, now): (Option<Unit>, &[Key]) = match unit {
        Some(u) => match units.entry(key.clone()) {
            Entry::Occupied(mut e) => {
                let old = std::mem::replace(e.get_mut(), u);
                (Some(old), &e.into_mut().reads)
            }
            Entry::Vacant(e) => (None, &e.insert(u).reads),
        },
        None => (units.remove(key), &[]),
    };
    let before = old.as_ref().map(|u| u.reads.as_slice()).unwrap_or(&[]);
    // Both sorted: a key gained is pushed (it cannot be there yet), a key lost is removed.
    for r in now {
        if before.binary_search(r).is_err() {
            match readers.entry(r.clone()) {
                Entry::Occupied(mut e) => e.get_mut().push(key.clone()),
                Entry::Vacant(e) => {
                    e.insert(Readers::One(key.clone()));
                }
            }
        }
    }
    for r in before {
        if now.binary_search(r).is_err() && readers.get_mut(r).is_some_and(|v| v.remove(key)) {
            readers.remove(r);
        }
    }
    old
}

/// Whether the input has one Gateway, served with scoped routes last pass (asked for, or
/// automatic: an edit that keeps every VirtualService's domains keeps that choice), serving
/// every VirtualService.
fn one_scoped_gateway(input: &Input, scoped: &listeners::Scoped) -> bool {
    let mut gateways = input.of_kind(Kind::Gateway);
    match (gateways.next(), gateways.next()) {
        (Some((k, r)), None) => {
            scoped.gateway.as_ref() == Some(k)
                && matches!(&r.spec, Some(Spec::Gateway(g))
                    if g.virtual_services.is_empty() && g.tcp_upstream.is_none())
        }
        _ => false,
    }
}

/// Applies what changed of the scoped route configurations and scopes to the snapshot and
/// origins: the gone first, so that a replacement's same names are put back.
fn patch_scoped(
    out: &mut Translation,
    scoped: &listeners::Scoped,
    changes: &listeners::ScopedChanges,
) {
    let made = || changes.made.iter().map(|k| &scoped.by_vs[k]);
    let resources = &mut out.snapshot.resources;
    let routes = resources.entry(xds::ROUTE).or_default();
    for g in &changes.gone {
        routes.remove(&g.route_config.name);
    }
    for s in made() {
        routes.insert(s.route_config.name.clone(), s.route_config.clone());
    }
    let scopes = resources.entry(xds::SCOPED_ROUTE).or_default();
    for g in &changes.gone {
        for sc in &g.scopes {
            scopes.remove(&sc.name);
        }
    }
    for s in made() {
        for sc in &s.scopes {
            scopes.insert(sc.name.clone(), sc.clone());
        }
    }
    for g in &changes.gone {
        out.origins.remove(&g.route_config.name);
        for sc in &g.scopes {
            out.origins.remove(&sc.name);
        }
    }
    for s in made() {
        out.origins
            .insert(s.route_config.name.clone(), s.origin.clone());
        for sc in &s.scopes {
            out.origins.insert(sc.name.clone(), s.origin.clone());
        }
    }
}

impl Translator {
    pub fn new() -> Self {
        Translator::with_plugins(plugins::defaults())
    }

    pub fn with_plugins(plugins: Vec<Box<dyn Plugin>>) -> Self {
        let mut out = Translation::default();
        for url in [
            xds::CLUSTER,
            xds::ENDPOINT,
            xds::LISTENER,
            xds::ROUTE,
            xds::SECRET,
            xds::SCOPED_ROUTE,
        ] {
            out.snapshot.resources.insert(url, Default::default());
        }
        Translator {
            plugins,
            input: Input::default(),
            index: Index::default(),
            endpoints_of: FastMap::default(),
            units: FastMap::default(),
            readers: FastMap::default(),
            rejected_upstreams: Arc::default(),
            vhosts: BTreeMap::new(),
            plugin_step: Step::default(),
            plugin_clusters: BTreeMap::new(),
            gateway_step: Step::default(),
            scoped: listeners::Scoped::default(),
            gateway_routes: Vec::new(),
            gateway_fast_passes: 0,
            gateway_origins: BTreeSet::new(),
            out,
            started: false,
            keep_resources: true,
        }
    }

    /// A translator for validation: it gives only the reports, and keeps no encoded Envoy
    /// resource (the snapshot and origins stay empty), so it costs little memory besides the
    /// controller's.
    pub fn reports_only() -> Self {
        Translator {
            keep_resources: false,
            ..Translator::new()
        }
    }

    /// The result of the last pass.
    pub fn current(&self) -> &Translation {
        &self.out
    }

    /// The input the last pass translated.
    pub fn input(&self) -> &Input {
        &self.input
    }

    /// Translates `input` as a whole: the differences from the last input are applied.
    pub fn translate(&mut self, input: &Input) -> Translation {
        self.replace(input).clone()
    }

    /// [`Translator::translate`], without copying the result out.
    pub fn replace(&mut self, input: &Input) -> &Translation {
        let mut changes: Vec<(Key, Option<Arc<Resource>>)> = input
            .objects
            .iter()
            .filter(|(k, v)| {
                self.input
                    .objects
                    .get(*k)
                    .is_none_or(|o| !Arc::ptr_eq(o, v))
            })
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        changes.extend(
            self.input
                .objects
                .keys()
                .filter(|k| !input.objects.contains_key(*k))
                .map(|k| (k.clone(), None)),
        );
        self.apply(changes)
    }

    /// Takes these copies of objects it holds with the same content (say, the store's after a
    /// status write), so that it stops keeping the old copies alive; any other object is left
    /// for a pass to take. Translates nothing.
    pub fn share(&mut self, objects: impl IntoIterator<Item = Arc<Resource>>) {
        for n in objects {
            let Some(key) = Key::of(&n) else { continue };
            if let Some(o) = self.input.objects.get_mut(&key) {
                if !Arc::ptr_eq(o, &n) && same_for_translation(o, &n) {
                    *o = n.clone();
                    self.index.insert(&key, n);
                }
            }
        }
    }

    /// Applies changes (an object as it is now, or none when it is gone) and translates what
    /// they touch. Changing an object to what it already is costs nothing.
    pub fn apply<I>(&mut self, changes: I) -> &Translation
    where
        I: IntoIterator<Item = (Key, Option<Arc<Resource>>)>,
    {
        let first = !self.started;
        self.started = true;
        self.out.changed_reports.clear();
        // Into an empty translator (a pass from scratch) the maps are built in bulk, from
        // sorted keys, rather than one search per object: the last change of a key wins.
        let from_scratch = self.input.objects.is_empty();
        let mut changes: Vec<(Key, Option<Arc<Resource>>)> = changes.into_iter().collect();
        if from_scratch {
            // Stable, so the last change of a key is the last of its run (and a sorted input,
            // such as `replace`'s, costs one comparison an item).
            changes.sort_by(|a, b| a.0.cmp(&b.0));
            changes.dedup_by(|later, earlier| {
                let same = later.0 == earlier.0;
                if same {
                    std::mem::swap(later, earlier);
                }
                same
            });
            self.units.reserve(changes.len());
        }
        let mut added: Vec<(Key, Arc<Resource>)> =
            Vec::with_capacity(if from_scratch { changes.len() } else { 0 });
        let mut changed: Vec<Key> = Vec::with_capacity(changes.len());
        let mut dirty_upstreams: BTreeSet<Key> = BTreeSet::new();
        for (key, new) in changes {
            let old = self.input.objects.get(&key);
            match (old, &new) {
                (None, None) => continue,
                (Some(o), Some(n)) if Arc::ptr_eq(o, n) => continue,
                (Some(o), Some(n)) if same_for_translation(o, n) => {
                    // Share the caller's copy (the store's); nothing to translate.
                    self.index.insert(&key, n.clone());
                    self.input.objects.insert(key, n.clone());
                    continue;
                }
                _ => {}
            }
            if key.kind == Kind::Endpoints {
                let ups = [
                    old.and_then(|o| endpoints_upstream(o)),
                    new.as_deref().and_then(endpoints_upstream),
                ];
                for (i, up) in ups.into_iter().enumerate() {
                    let Some(up) = up else { continue };
                    let at = Key::new(Kind::Upstream, &key.namespace, up);
                    if i == 0 {
                        if let Some(list) = self.endpoints_of.get_mut(&at) {
                            if let Ok(i) = list.binary_search(&key) {
                                list.remove(i);
                            }
                            if list.is_empty() {
                                self.endpoints_of.remove(&at);
                            }
                        }
                    } else {
                        let list = self.endpoints_of.entry(at.clone()).or_default();
                        if let Err(i) = list.binary_search(&key) {
                            list.insert(i, key.clone());
                        }
                    }
                    dirty_upstreams.insert(at);
                }
            }
            match new {
                Some(n) if from_scratch => {
                    self.index.insert(&key, n.clone());
                    added.push((key.clone(), n));
                }
                Some(n) => {
                    self.index.insert(&key, n.clone());
                    self.input.objects.insert(key.clone(), n);
                }
                None => {
                    self.index.remove(&key);
                    self.input.objects.remove(&key);
                }
            }
            changed.push(key);
        }
        if from_scratch {
            // Sorted and once each: built without a search.
            self.input.objects = added.into_iter().collect();
        }
        if changed.is_empty() && !first {
            return &self.out;
        }
        // Sorted and once each (from scratch they are already: one comparison a key).
        changed.sort();
        changed.dedup();
        self.pass(first, &changed, dirty_upstreams);
        &self.out
    }

    /// A pass over what changed: `changed` is sorted, once each.
    fn pass(&mut self, first: bool, changed: &[Key], dirty_upstreams: BTreeSet<Key>) {
        // One look at who read each changed key, for steps 1 and 2: gathered, then sorted
        // (from scratch, that is mostly sorted keys, one comparison each) with no B-tree.
        // Sized for a pass from scratch, where every key is one of its own readers.
        let mut dirty_upstreams: Vec<Key> = dirty_upstreams.into_iter().collect();
        dirty_upstreams.reserve(changed.len());
        let mut dirty_checked = Vec::with_capacity(changed.len());
        for k in changed {
            let readers = self.readers.get(k).map(Readers::as_slice).unwrap_or(&[]);
            for r in std::iter::once(k).chain(readers) {
                match r.kind {
                    Kind::Upstream => dirty_upstreams.push(r.clone()),
                    Kind::Endpoints | Kind::Function => dirty_checked.push(r.clone()),
                    _ => {}
                }
            }
        }
        for keys in [&mut dirty_upstreams, &mut dirty_checked] {
            keys.sort();
            keys.dedup();
        }
        // Every object whose report may have changed: sorted and deduplicated before use.
        let mut touched: Vec<Key> =
            Vec::with_capacity(changed.len() + dirty_upstreams.len() + dirty_checked.len());
        touched.extend(changed.iter().cloned());

        let Translator {
            plugins,
            input,
            index,
            endpoints_of,
            units,
            readers,
            rejected_upstreams,
            vhosts,
            plugin_step,
            plugin_clusters,
            gateway_step,
            scoped,
            gateway_routes,
            gateway_fast_passes,
            gateway_origins,
            out,
            keep_resources,
            ..
        } = self;
        let keep = *keep_resources;
        let (plugins, input, index) = (&*plugins, &*input, &*index);
        let ctx = Context::new(input, index);

        // 1. Upstreams → clusters and endpoint assignments.
        let mut flipped: BTreeSet<Key> = BTreeSet::new();
        let mut regateway = false;
        // From scratch: (cluster name's prefix, cluster name, Upstream, what it made), sorted
        // once below.
        type Made = Option<(Arc<XdsResource>, Option<Arc<XdsResource>>)>;
        let mut bulk: Vec<(u64, String, Key, Made)> =
            Vec::with_capacity(if first { dirty_upstreams.len() } else { 0 });
        {
            let rejected = Arc::make_mut(rejected_upstreams);
            for key in &dirty_upstreams {
                // The index, not the input's B-tree: a hash lookup, no key comparisons.
                let object = index.of(key);
                let spec = match object.and_then(|r| r.spec.as_ref()) {
                    Some(Spec::Upstream(s)) => Some(s),
                    _ => None,
                };
                let unit = spec.map(|spec| {
                    let eps: Vec<&Arc<Resource>> = endpoints_of
                        .get(key)
                        .into_iter()
                        .flatten()
                        .filter_map(|k| index.of(k))
                        .collect();
                    let built = upstreams::translate_one(&ctx, plugins, key, spec, &eps);
                    let mut report = built.as_ref().err().map(|e| report_of(State::Rejected, e));
                    // Annotations are part of what `same_for_translation` compares, so a
                    // discovery service's warning is re-read whenever it changes.
                    if let Some(r) = object {
                        for w in upstreams::discovery_warnings(r) {
                            report
                                .get_or_insert_with(Report::accepted)
                                .merge(State::Warning, &w);
                        }
                    }
                    Unit {
                        reads: ctx.take_reads(),
                        report,
                        out: UnitOut::Upstream(built.ok().filter(|_| keep)),
                    }
                });
                let new_out = match unit.as_ref().map(|u| &u.out) {
                    Some(UnitOut::Upstream(o)) => o.clone(),
                    _ => None,
                };
                let exists = unit.is_some();
                let is_rejected = unit
                    .as_ref()
                    .and_then(|u| u.report.as_ref())
                    .is_some_and(|r| r.state == State::Rejected);
                let old = replace_unit(units, readers, key, unit);
                let old_out = match old.as_ref().map(|u| &u.out) {
                    Some(UnitOut::Upstream(o)) => o.clone(),
                    _ => None,
                };
                // From scratch, nothing is kept yet: what was made is gathered below.
                if !first {
                    let clusters = out.snapshot.resources.entry(xds::CLUSTER).or_default();
                    if let Some((c, _)) = &old_out {
                        if !plugin_clusters.contains_key(&c.name) {
                            clusters.remove(&c.name);
                        }
                    }
                    if let Some((c, _)) = &new_out {
                        if !plugin_clusters.contains_key(&c.name) {
                            clusters.insert(c.name.clone(), c.clone());
                        }
                    }
                    let assignments = out.snapshot.resources.entry(xds::ENDPOINT).or_default();
                    if let Some((_, Some(cla))) = &old_out {
                        assignments.remove(&cla.name);
                    }
                    if let Some((_, Some(cla))) = &new_out {
                        assignments.insert(cla.name.clone(), cla.clone());
                    }
                }
                let was_rejected = if is_rejected {
                    !rejected.insert(key.clone())
                } else {
                    rejected.remove(key)
                };
                if was_rejected != is_rejected {
                    flipped.insert(key.clone());
                }
                if keep && (exists || old.is_some()) {
                    let cluster = names::cluster(&key.namespace, &key.name);
                    if exists && first {
                        // Nothing kept yet: the maps are built in bulk below.
                        bulk.push((name_prefix(&cluster), cluster, key.clone(), new_out));
                    } else if exists {
                        out.origins.insert(cluster, vec![key.clone()]);
                    } else {
                        out.origins.remove(&cluster);
                        // A gateway's resource of the same name shows again.
                        regateway |= gateway_origins.contains(&cluster);
                    }
                }
                touched.push(key.clone());
            }
        }
        if first {
            // A new translator's maps are empty, and step 1 is the first to fill them: one sort
            // by cluster name (not the keys' order: `a-1_ns` sorts after `a-10_ns`) for all
            // three, then bulk builds of sorted items, not a search per resource.
            debug_assert!(out.origins.is_empty());
            // Names compare by their first eight bytes first, as one number: most differ
            // there, and the whole names are compared only when those are the same.
            bulk.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            let (mut clusters, mut assignments) = (Vec::with_capacity(bulk.len()), Vec::new());
            let mut origins = Vec::with_capacity(bulk.len());
            for (_, name, key, made) in bulk {
                if let Some((c, cla)) = made {
                    if let Some(cla) = cla {
                        assignments.push((cla.name.clone(), cla));
                    }
                    clusters.push((c.name.clone(), c));
                }
                origins.push((name, vec![key]));
            }
            let resources = &mut out.snapshot.resources;
            resources.insert(xds::CLUSTER, clusters.into_iter().collect());
            resources.insert(xds::ENDPOINT, assignments.into_iter().collect());
            out.origins = origins.into_iter().collect();
        }
        let _ = ctx.take_reads();

        // 2. Endpoints and Functions: their upstream must exist.
        for key in &dirty_checked {
            let unit = index.of(key).map(|r| {
                let warning = upstreams::orphan_warning(&ctx, key, r);
                Unit {
                    reads: ctx.take_reads(),
                    report: warning.map(|w| report_of(State::Warning, &w)),
                    out: UnitOut::Checked,
                }
            });
            replace_unit(units, readers, key, unit);
            touched.push(key.clone());
        }

        // 3. Clusters made from several objects (plugins).
        let functions_changed = changed.iter().any(|k| k.kind == Kind::Function);
        if first || functions_changed || !flipped.is_empty() || plugin_step.read_any(changed) {
            let mut reporter = Reporter::after_upstreams(rejected_upstreams.clone());
            let mut made: BTreeMap<String, Arc<XdsResource>> = BTreeMap::new();
            for p in plugins.iter() {
                for c in p.clusters(&ctx, &mut reporter) {
                    made.insert(c.name.clone(), c);
                }
            }
            let step = Step {
                reads: ctx.take_reads(),
                reports: reporter.into_reports(),
            };
            if !keep {
                made.clear();
            }
            let clusters = out.snapshot.resources.entry(xds::CLUSTER).or_default();
            for name in plugin_clusters.keys() {
                if made.contains_key(name) {
                    continue;
                }
                clusters.remove(name);
                // An Upstream's cluster of the same name shows again.
                let own = cluster_upstream(name).and_then(|k| match units.get(&k) {
                    Some(Unit {
                        out: UnitOut::Upstream(Some((c, _))),
                        ..
                    }) if c.name == *name => Some(c.clone()),
                    _ => None,
                });
                if let Some(c) = own {
                    clusters.insert(name.clone(), c);
                }
            }
            for (name, c) in &made {
                clusters.insert(name.clone(), c.clone());
            }
            *plugin_clusters = made;
            touched.extend(plugin_step.reports.keys().cloned());
            touched.extend(step.reports.keys().cloned());
            *plugin_step = step;
        }

        // 4. VirtualServices → virtual hosts.
        let dirty_vs = {
            let mut d = Vec::new();
            for k in changed.iter().chain(&flipped) {
                let rs = readers.get(k).map(Readers::as_slice).unwrap_or(&[]);
                for r in std::iter::once(k).chain(rs) {
                    if r.kind == Kind::VirtualService {
                        d.push(r.clone());
                    }
                }
            }
            d.sort();
            d.dedup();
            d
        };
        let mut vhosts_changed = false;
        // Virtual hosts replaced by one with the same domains and filters: (key, new one).
        let mut vhosts_edited: Vec<(Key, Arc<VirtualHostOut>)> = Vec::new();
        let mut vhosts_reshaped = false;
        {
            let reporter = Reporter::after_upstreams(rejected_upstreams.clone());
            let mut scratch = routes::Scratch::default();
            touched.reserve(dirty_vs.len());
            for key in &dirty_vs {
                let spec = match index.of(key).and_then(|r| r.spec.as_ref()) {
                    Some(Spec::VirtualService(vs)) => Some(vs),
                    _ => None,
                };
                let built = spec.map(|vs| {
                    let r = routes::translate_one(&ctx, plugins, &reporter, key, vs, &mut scratch);
                    (r, ctx.take_reads())
                });
                let (unit, vhost, report) = match built {
                    None => (None, None, None),
                    Some((Ok((vhost, warnings)), reads)) => {
                        let report = (!warnings.is_empty()).then(|| {
                            let mut r = Report::accepted();
                            for w in &warnings {
                                r.merge(State::Warning, w);
                            }
                            r
                        });
                        (Some(reads), Some(vhost), report)
                    }
                    Some((Err(e), reads)) => {
                        (Some(reads), None, Some(report_of(State::Rejected, &e)))
                    }
                };
                let unit = unit.map(|reads| Unit {
                    reads,
                    report,
                    out: UnitOut::Checked,
                });
                replace_unit(units, readers, key, unit);
                match vhost {
                    Some(v) => {
                        let v = if keep {
                            v
                        } else {
                            match Arc::try_unwrap(v) {
                                Ok(mut o) => {
                                    o.encoded = Vec::new();
                                    Arc::new(o)
                                }
                                Err(v) => v,
                            }
                        };
                        // An equal result keeps the old one: the gateways need not change.
                        if vhosts.get(key).is_none_or(|o| o.version != v.version) {
                            match vhosts.get(key) {
                                Some(o) if o.domains == v.domains && o.filters == v.filters => {
                                    vhosts_edited.push((key.clone(), v.clone()))
                                }
                                _ => vhosts_reshaped = true,
                            }
                            vhosts.insert(key.clone(), v);
                            vhosts_changed = true;
                        }
                    }
                    None => {
                        let gone = vhosts.remove(key).is_some();
                        vhosts_changed |= gone;
                        vhosts_reshaped |= gone;
                    }
                }
                touched.push(key.clone());
            }
        }

        // 5. Gateways → listeners, route configurations, SDS secrets.
        let gateways_changed = changed.iter().any(|k| k.kind == Kind::Gateway);
        let other_reasons = first
            || regateway
            || gateways_changed
            || !flipped.is_empty()
            || gateway_step.read_any(changed);
        if vhosts_changed && !vhosts_reshaped && !other_reasons && one_scoped_gateway(input, scoped)
        {
            // Only routes changed, under the one Gateway, which has scoped routes and serves
            // every VirtualService: domains and filters are the same, so are the domain claims,
            // the listener and every report; only the edited VirtualServices' route
            // configurations change.
            let mut changes = listeners::ScopedChanges::default();
            for (key, v) in vhosts_edited {
                if let Some(gone) = scoped.replace(&key, &v) {
                    changes.gone.push(gone);
                    changes.made.push(key);
                }
            }
            if keep {
                patch_scoped(out, scoped, &changes);
            }
            *gateway_fast_passes += 1;
        } else if vhosts_changed || other_reasons {
            let list: Vec<Arc<VirtualHostOut>> = vhosts.values().cloned().collect();
            let mut reporter = Reporter::after_upstreams(rejected_upstreams.clone());
            let (listeners, route_configs, secrets, changes, origins) =
                listeners::translate(&ctx, &list, &mut reporter, scoped);
            let step = Step {
                reads: ctx.take_reads(),
                reports: reporter.into_reports(),
            };
            if keep {
                for (url, items) in [(xds::LISTENER, listeners), (xds::SECRET, secrets)] {
                    out.snapshot.resources.insert(
                        url,
                        items.into_iter().map(|r| (r.name.clone(), r)).collect(),
                    );
                }
                // Route configurations: the gateways' own replaced, the scoped ones patched.
                let routes = out.snapshot.resources.entry(xds::ROUTE).or_default();
                for name in gateway_routes.drain(..) {
                    routes.remove(&name);
                }
                for r in route_configs {
                    gateway_routes.push(r.name.clone());
                    routes.insert(r.name.clone(), r);
                }
                patch_scoped(out, scoped, &changes);
            }
            let origins = if keep { origins } else { BTreeMap::new() };
            let upstream_owns =
                |name: &str| cluster_upstream(name).is_some_and(|k| input.objects.contains_key(&k));
            for name in gateway_origins.iter() {
                if !origins.contains_key(name) && !upstream_owns(name) {
                    out.origins.remove(name);
                }
            }
            gateway_origins.clear();
            for (name, keys) in origins {
                gateway_origins.insert(name.clone());
                if !upstream_owns(&name) {
                    out.origins.insert(name, keys);
                }
            }
            touched.extend(gateway_step.reports.keys().cloned());
            touched.extend(step.reports.keys().cloned());
            *gateway_step = step;
        }

        // Reports: an object's own step's, then the plugins', then the gateways'.
        // Built in bulk when they start empty (always, for the changed ones).
        let bulk = out.reports.is_empty();
        let mut new_reports: Vec<(Key, Report)> =
            Vec::with_capacity(if bulk { touched.len() } else { 0 });
        let mut changed_reports: Vec<Key> = Vec::with_capacity(touched.len());
        // A few sorted runs (the changed keys, then each step's): the stable sort merges them.
        touched.sort();
        touched.dedup();
        for key in touched {
            let unit = units.get(&key);
            let own = unit.and_then(|u| u.report.as_ref());
            let parts = [
                own,
                plugin_step.reports.get(&key),
                gateway_step.reports.get(&key),
            ];
            // An object with a unit exists; only those of the other kinds are looked up.
            let exists = unit.is_some() || index.get(key.kind, &key.namespace, &key.name).is_some();
            let report = (exists || parts.iter().any(Option::is_some)).then(|| {
                let mut r = Report::accepted();
                for p in parts.into_iter().flatten() {
                    if p.state != State::Accepted || !p.reason.is_empty() {
                        r.merge(p.state, &p.reason);
                    }
                }
                r
            });
            if out.reports.get(&key) != report.as_ref() {
                match report {
                    Some(r) if bulk => new_reports.push((key.clone(), r)),
                    Some(r) => {
                        out.reports.insert(key.clone(), r);
                    }
                    None => {
                        out.reports.remove(&key);
                    }
                }
                changed_reports.push(key);
            }
        }
        if bulk {
            out.reports = new_reports.into_iter().collect();
        }
        // `touched` is sorted: so is this.
        out.changed_reports = changed_reports.into_iter().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::name_prefix;

    #[test]
    fn names_in_the_order_of_their_prefixes_are_in_name_order() {
        let names = [
            "",
            "a",
            "a_b",
            "a-1_default",
            "a-10_default",
            "a-1",
            "us-1_default",
            "us-10_default",
            "us-100_default",
            "us-1000_default",
            "us-10000_default",
            "us-1_ns",
            "z",
            "zzzzzzzz",
            "zzzzzzzza",
        ];
        for a in names {
            for b in names {
                let (pa, pb) = (name_prefix(a), name_prefix(b));
                if pa != pb {
                    assert_eq!(pa.cmp(&pb), a.cmp(b), "{a:?} and {b:?}");
                }
            }
        }
    }
}
