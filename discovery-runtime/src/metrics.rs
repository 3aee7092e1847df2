//! The metrics every discovery service exports on `/metrics`; sources add their own to the
//! same registry through [`crate::Runtime::registry`].
use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    pub target: String,
}

/// Cheap to clone: every field is a handle on the registered metric.
#[derive(Clone)]
pub struct Metrics {
    /// Objects in the last desired set, by kind.
    pub objects: Family<KindLabel, Gauge>,
    pub sync_duration: Histogram,
    /// Objects created, updated and deleted by Sync calls.
    pub writes: Family<OpLabel, Counter>,
    /// Sync calls by result: ok, error, or skipped (desired set unchanged since the last one).
    pub syncs: Family<ResultLabel, Counter>,
    /// Errors by kind: `storage` (a failed Sync or watch), `source` (reading the source),
    /// `rejected` (an item gloo-core refused), and source-specific kinds such as `throttled`.
    pub errors: Family<KindLabel, Counter>,
    /// Failed attempts that were retried after a delay, by target (`storage`, or the source).
    pub retries: Family<TargetLabel, Counter>,
    /// The delay before the next retry, by target; 0 once an attempt succeeds.
    pub backoff_seconds: Family<TargetLabel, Gauge<f64, AtomicU64>>,
    /// 1 once the first Sync has succeeded.
    pub ready: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            objects: Family::default(),
            sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            writes: Family::default(),
            syncs: Family::default(),
            errors: Family::default(),
            retries: Family::default(),
            backoff_seconds: Family::default(),
            ready: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("discovery");
        r.register(
            "objects",
            "Objects in the last desired set, by kind",
            m.objects.clone(),
        );
        r.register(
            "sync_duration_seconds",
            "Duration of Sync calls to gloo-core",
            m.sync_duration.clone(),
        );
        r.register(
            "writes",
            "Objects created, updated or deleted by Sync",
            m.writes.clone(),
        );
        r.register("syncs", "Sync calls by result", m.syncs.clone());
        r.register("errors", "Errors by kind", m.errors.clone());
        r.register("retries", "Retried attempts by target", m.retries.clone());
        r.register(
            "backoff_seconds",
            "Current delay before the next retry, by target",
            m.backoff_seconds.clone(),
        );
        r.register(
            "ready",
            "1 after the first successful Sync",
            m.ready.clone(),
        );
        m
    }

    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// Records a failed attempt at `target` that will be retried after `delay`.
    pub fn backing_off(&self, target: &str, delay: Duration) {
        let l = TargetLabel {
            target: target.into(),
        };
        self.retries.get_or_create(&l).inc();
        self.backoff_seconds
            .get_or_create(&l)
            .set(delay.as_secs_f64());
    }

    /// Records that `target` answered again.
    pub fn recovered(&self, target: &str) {
        self.backoff_seconds
            .get_or_create(&TargetLabel {
                target: target.into(),
            })
            .set(0.0);
    }
}
