//! Prometheus metrics of the xDS server, registered by the component that owns them.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    /// `sotw` or `delta`.
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub type_url: String,
}

/// Counters are shared: clones update the same series.
#[derive(Clone, Debug, Default)]
pub struct XdsMetrics {
    streams: Family<ProtocolLabels, Gauge>,
    responses: Family<TypeLabels, Counter>,
    acks: Family<TypeLabels, Counter>,
    nacks: Family<TypeLabels, Counter>,
}

impl XdsMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = XdsMetrics::default();
        let r = registry.sub_registry_with_prefix("gloo_xds");
        r.register(
            "streams",
            "Connected ADS streams by protocol",
            m.streams.clone(),
        );
        r.register(
            "responses",
            "xDS responses sent, by type",
            m.responses.clone(),
        );
        r.register("acks", "ACKs received, by type", m.acks.clone());
        r.register(
            "nacks",
            "NACKs received (configuration Envoy refused), by type",
            m.nacks.clone(),
        );
        m
    }

    pub(crate) fn stream_opened(&self, protocol: &'static str) {
        self.streams
            .get_or_create(&ProtocolLabels { protocol })
            .inc();
    }

    pub(crate) fn stream_closed(&self, protocol: &'static str) {
        self.streams
            .get_or_create(&ProtocolLabels { protocol })
            .dec();
    }

    pub(crate) fn response(&self, type_url: &str) {
        self.by_type(&self.responses, type_url).inc();
    }

    pub(crate) fn ack(&self, type_url: &str) {
        self.by_type(&self.acks, type_url).inc();
    }

    pub(crate) fn nack(&self, type_url: &str) {
        self.by_type(&self.nacks, type_url).inc();
    }

    fn by_type(&self, family: &Family<TypeLabels, Counter>, type_url: &str) -> Counter {
        family
            .get_or_create(&TypeLabels {
                type_url: type_url.to_string(),
            })
            .clone()
    }

    /// Connected streams of `protocol` (for tests and `/config_dump`).
    pub fn streams(&self, protocol: &'static str) -> i64 {
        self.streams
            .get_or_create(&ProtocolLabels { protocol })
            .get()
    }

    /// NACKs received for `type_url`.
    pub fn nacks(&self, type_url: &str) -> u64 {
        self.by_type(&self.nacks, type_url).get()
    }
}
