//! Prometheus metrics of the storage API, registered by the component that owns them.
use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: &'static str,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeniedLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

#[derive(Clone)]
pub struct ApiMetrics {
    calls: Family<CallLabels, Counter>,
    denied: Family<DeniedLabels, Counter>,
    duration: Family<MethodLabels, Histogram>,
    pub watchers: Gauge,
}

impl ApiMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = ApiMetrics {
            calls: Family::default(),
            denied: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
            }),
            watchers: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("gloo_storage");
        r.register(
            "calls",
            "Storage API writes by method and result code",
            m.calls.clone(),
        );
        r.register(
            "denied",
            "Calls refused before reaching the store",
            m.denied.clone(),
        );
        r.register(
            "call_duration_seconds",
            "Time spent in the store per write",
            m.duration.clone(),
        );
        r.register("watchers", "Open Watch streams", m.watchers.clone());
        m
    }

    pub fn observe<T>(&self, method: &'static str, out: &Result<T, tonic::Status>, took: Duration) {
        let code = match out {
            Ok(_) => "OK".to_string(),
            Err(s) => format!("{:?}", s.code()),
        };
        self.calls.get_or_create(&CallLabels { method, code }).inc();
        self.duration
            .get_or_create(&MethodLabels { method })
            .observe(took.as_secs_f64());
    }

    pub fn denied(&self, reason: &'static str) {
        self.denied.get_or_create(&DeniedLabels { reason }).inc();
    }
}
