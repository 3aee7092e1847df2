//! discovery-openapi's own metrics, next to the shared `discovery_*` ones.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProblemLabel {
    pub upstream: String,
    pub problem: &'static str,
}

#[derive(Clone, Default)]
pub struct OpenapiMetrics {
    /// HTTP requests sent to services, by result.
    pub requests: Family<ResultLabel, Counter>,
    /// 1 while the upstream's spec has this problem.
    pub problems: Family<ProblemLabel, Gauge>,
    pub upstreams_with_spec: Gauge,
    /// 1 while the upstream is not probed (no spec through every delay up to the cap).
    pub stopped: Family<UpstreamLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    pub upstream: String,
}

const KINDS: [&str; 5] = [
    "too_large",
    "parse",
    "not_a_spec",
    "unresolved_ref",
    "duplicate_operation_id",
];

impl OpenapiMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = OpenapiMetrics::default();
        let r = registry.sub_registry_with_prefix("openapi");
        r.register(
            "requests",
            "HTTP requests sent to services for their specs, by result",
            m.requests.clone(),
        );
        r.register(
            "spec_problem",
            "1 while an upstream's spec is bad (the Functions of its last good spec are kept)",
            m.problems.clone(),
        );
        r.register(
            "upstreams_with_spec",
            "Selected upstreams that serve a spec",
            m.upstreams_with_spec.clone(),
        );
        r.register(
            "probing_stopped",
            "1 while an upstream is not probed: it served no spec through every delay up to \
             --max-probe-interval; probing restarts when the Upstream changes",
            m.stopped.clone(),
        );
        m
    }

    pub fn set_stopped(&self, k: &(String, String), stopped: bool) {
        let l = UpstreamLabel {
            upstream: format!("{}/{}", k.0, k.1),
        };
        if stopped {
            self.stopped.get_or_create(&l).set(1);
        } else {
            self.stopped.remove(&l);
        }
    }

    pub fn request(&self, result: &'static str) {
        self.requests.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn set_problem(&self, k: &(String, String), problem: &'static str) {
        self.clear_problem(k);
        self.problems
            .get_or_create(&ProblemLabel {
                upstream: format!("{}/{}", k.0, k.1),
                problem,
            })
            .set(1);
    }

    pub fn clear_problem(&self, k: &(String, String)) {
        let upstream = format!("{}/{}", k.0, k.1);
        for problem in KINDS {
            self.problems.remove(&ProblemLabel {
                upstream: upstream.clone(),
                problem,
            });
        }
    }
}
