//! The translator: a pure function from a consistent set of resources to Envoy resources and
//! a report per object. No I/O, no store, no tonic: it is unit-tested and benchmarked alone.
//!
//! ```text
//!  changed objects ─► Translator (incremental.rs: kept input, index, per-object results)
//!                      │ Context: lookups by kind/namespace/name, each one recorded
//!     1. upstreams.rs   Upstream      ─► Cluster           (+ upstream plugins)
//!     2. functions      Function      ─► looked up by routes (function plugins)
//!     3. routes.rs      VirtualService ─► VirtualHost/Routes (+ route plugins)
//!     4. plugins.rs     HTTP filters the routes need, in a fixed order
//!     5. listeners.rs   Gateway       ─► Listener + RouteConfiguration (RDS)
//!  ─► Translation { snapshot (each resource encoded once), reports }
//! ```
//!
//! A pass re-translates only the objects that changed and those whose translation looked one
//! of them up (see `incremental.rs`); its result always equals a translation from scratch.
//!
//! Errors are per object: a VirtualService with a route to a missing Upstream is Rejected and
//! left out, everything else still translates. A route to a Function that does not exist yet
//! is a Warning (the route answers 503 until it appears).
use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    hash::{BuildHasher, Hasher},
    sync::{Arc, OnceLock},
};

use proto::v1::{resource::Spec, status::State, Kind, Resource};

use crate::{resource::Key, xds};

mod incremental;
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
    /// The Upstreams Rejected by step 1, which runs apart from the steps that ask.
    rejected_upstreams: Arc<FastSet<Key>>,
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

    fn after_upstreams(rejected_upstreams: Arc<FastSet<Key>>) -> Self {
        Reporter {
            reports: Reports::new(),
            rejected_upstreams,
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
        r.merge(state, &reason);
    }

    pub fn warn(&mut self, key: &Key, reason: impl Into<String>) {
        self.add(key, State::Warning, reason.into());
    }

    pub fn reject(&mut self, key: &Key, reason: impl Into<String>) {
        self.add(key, State::Rejected, reason.into());
    }

    /// Whether any object may be Rejected so far (there is a rejected Upstream, or any report
    /// at all): if not, [`Reporter::is_rejected`] is false for every key.
    pub fn has_rejections(&self) -> bool {
        !self.rejected_upstreams.is_empty() || !self.reports.is_empty()
    }

    pub fn is_rejected(&self, key: &Key) -> bool {
        self.rejected_upstreams.contains(key)
            || self
                .reports
                .get(key)
                .is_some_and(|r| r.state == State::Rejected)
    }

    pub fn into_reports(self) -> Reports {
        self.reports
    }
}

impl Report {
    /// Adds what another step said: the worse state wins, reasons accumulate in order.
    fn merge(&mut self, state: State, reason: &str) {
        if Reporter::rank(state) > Reporter::rank(self.state) {
            self.state = state;
        }
        if !self.reason.is_empty() {
            self.reason.push_str("; ");
        }
        self.reason.push_str(reason);
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
    /// The objects whose report this pass changed, or added or removed (after a pass from
    /// scratch: every object), so that only their statuses need a look.
    pub changed_reports: BTreeSet<Key>,
}

/// Envoy names of our objects (Gloo's convention: `<name>_<namespace>`).
pub mod names {
    pub fn cluster(namespace: &str, name: &str) -> String {
        [name, "_", namespace].concat()
    }
    pub fn listener(namespace: &str, name: &str) -> String {
        [name, "_", namespace].concat()
    }
    pub fn route_config(namespace: &str, name: &str) -> String {
        [name, "_", namespace, "-routes"].concat()
    }
    pub fn virtual_host(namespace: &str, name: &str) -> String {
        [name, "_", namespace].concat()
    }
    /// A VirtualService's own route configuration, on a gateway with scoped routes (`~` is in
    /// no DNS label, so no gateway's route configuration can have this name).
    pub fn scoped_route_config(namespace: &str, name: &str) -> String {
        [name, "_", namespace, "~routes"].concat()
    }
    /// The scope that sends `domain` to a VirtualService's own route configuration.
    pub fn scope(namespace: &str, name: &str, domain: &str) -> String {
        [name, "_", namespace, "~", domain].concat()
    }
}

/// Names one version of an object's spec: (uid, generation). Status writes leave it alone.
pub type Stamp = (u64, u64);

pub fn stamp(r: &Resource) -> Stamp {
    r.metadata
        .as_ref()
        .map_or((0, 0), |m| (m.uid, m.generation))
}

/// The translator's hash maps, keyed by object keys and names: SipHash, the default, took a
/// twentieth of a full pass. This is FxHash (rustc's), seeded once per process; it does not
/// resist deliberate flooding, and the names it hashes come from authenticated writers.
pub(crate) type FastMap<K, V> = HashMap<K, V, FastState>;
pub(crate) type FastSet<K> = HashSet<K, FastState>;

#[derive(Clone, Copy)]
pub(crate) struct FastState(u64);

impl Default for FastState {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        FastState(*SEED.get_or_init(|| std::hash::RandomState::new().hash_one(0u64)))
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

pub(crate) struct FastHasher(u64);

/// The 1 to 7 bytes of `rest` as a little-endian word, from at most two overlapping loads:
/// object names mostly end in such a tail, and a copy into a zeroed word is a `memcpy` call.
#[inline]
fn tail_word(rest: &[u8]) -> u64 {
    let n = rest.len();
    debug_assert!((1..8).contains(&n));
    if n >= 4 {
        // Two 4-byte loads, the second ending at the end: together they hold every byte, and
        // the length is mixed in apart, so different tails give different words.
        let lo = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as u64;
        let hi = u32::from_le_bytes(rest[n - 4..].try_into().expect("4 bytes")) as u64;
        lo | (hi << 32)
    } else {
        // The first, middle and last byte: all of them, for 1 to 3 bytes.
        rest[0] as u64 | (rest[n / 2] as u64) << 8 | (rest[n - 1] as u64) << 16
    }
}

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // The length too, so "a" and "a\0" differ.
            self.add(tail_word(rest) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(n as u64);
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(n as u64);
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    #[inline]
    fn write_isize(&mut self, n: isize) {
        self.add(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // A multiply carries a change only to higher bits, and names differ most in their
        // last bytes, the high bits of the last word; hashbrown takes a bucket from the low
        // bits and a tag from the top seven. The halves of a full 128-bit product, folded,
        // depend on every bit of the state.
        let full = (self.0 as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (full as u64) ^ ((full >> 64) as u64)
    }
}

/// The objects of one namespace and kind, by name.
type Names = FastMap<Arc<str>, Arc<Resource>>;

/// Every object by kind, namespace and name, kept by the translator between passes and looked
/// up by `&str`, with no allocation. Its names are the objects' keys' own shared copies, so a
/// lookup can hand out the key it found without allocating.
#[derive(Default)]
pub(crate) struct Index {
    by_kind: FastMap<Kind, FastMap<Arc<str>, Names>>,
}

impl Index {
    fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Arc<Resource>> {
        self.by_kind.get(&kind)?.get(namespace)?.get(name)
    }

    /// The object of a key.
    pub(crate) fn of(&self, key: &Key) -> Option<&Arc<Resource>> {
        self.get(key.kind, &key.namespace, &key.name)
    }

    /// The object and its key, made of the index's shared names.
    fn get_keyed(&self, kind: Kind, namespace: &str, name: &str) -> Option<(Key, &Arc<Resource>)> {
        let (ns, names) = self.by_kind.get(&kind)?.get_key_value(namespace)?;
        let (n, r) = names.get_key_value(name)?;
        Some((Key::from_shared(kind, ns.clone(), n.clone()), r))
    }

    fn insert(&mut self, key: &Key, r: Arc<Resource>) {
        self.by_kind
            .entry(key.kind)
            .or_default()
            .entry(key.namespace.clone())
            .or_default()
            .insert(key.name.clone(), r);
    }

    fn remove(&mut self, key: &Key) {
        let Some(namespaces) = self.by_kind.get_mut(&key.kind) else {
            return;
        };
        if let Some(names) = namespaces.get_mut(&*key.namespace) {
            names.remove(&*key.name);
            if names.is_empty() {
                namespaces.remove(&*key.namespace);
            }
        }
    }
}

/// What the steps see of the input. Every lookup is recorded: what a cached result read is
/// exactly what it depends on, plugins included, with no list of dependencies to keep up.
pub struct Context<'a> {
    pub input: &'a Input,
    index: &'a Index,
    reads: RefCell<Vec<Key>>,
}

impl<'a> Context<'a> {
    fn new(input: &'a Input, index: &'a Index) -> Self {
        Context {
            input,
            index,
            reads: RefCell::new(Vec::new()),
        }
    }

    /// The keys looked up since the last call, sorted, once each: in a vector of their own
    /// size, while the context keeps its buffer for the next object's.
    fn take_reads(&self) -> Vec<Key> {
        let mut reads = self.reads.borrow_mut();
        reads.sort_unstable();
        reads.dedup();
        reads.drain(..).collect()
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&'a Arc<Resource>> {
        match self.index.get_keyed(kind, namespace, name) {
            Some((key, r)) => {
                self.reads.borrow_mut().push(key);
                Some(r)
            }
            None => {
                self.reads
                    .borrow_mut()
                    .push(Key::new(kind, namespace, name));
                None
            }
        }
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

pub use incremental::Translator;

#[cfg(test)]
mod tests;
