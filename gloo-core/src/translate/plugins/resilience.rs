//! Resilience options of an Upstream, as stock Envoy cluster settings: active health checks
//! (HTTP and TCP), circuit breakers, outlier detection and the load-balancer policy. A route to
//! an upstream balanced by RING_HASH or MAGLEV also gets the hash policy on its `hashHeader`,
//! so requests with the same header value stick to one endpoint.
use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                circuit_breakers::{thresholds::RetryBudget, Thresholds},
                cluster::LbPolicy,
                CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlier,
            },
            core::v3::{
                health_check::{self, payload, HealthChecker},
                HealthCheck as EnvoyHealthCheck,
            },
            route::v3::{
                route::Action,
                route_action::{hash_policy, HashPolicy},
                Route as EnvoyRoute,
            },
        },
        r#type::v3::{Int64Range, Percent},
    },
    google::protobuf::{Duration, UInt32Value},
};
use proto::v1::{
    health_check::Check, load_balancer::Policy, resource::Spec, Destination, FunctionSpec, Kind,
    UpstreamSpec,
};

use super::{Plugin, RouteContext};
use crate::translate::{upstreams::duration, Context};

pub struct Resilience;

fn u32v(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

fn hex(field: &str, s: &str) -> Result<health_check::Payload, String> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{field}: {s:?} is not hex"));
    }
    Ok(health_check::Payload {
        payload: Some(payload::Payload::Text(s.to_string())),
    })
}

fn health_check(i: usize, h: &proto::v1::HealthCheck) -> Result<EnvoyHealthCheck, String> {
    let f = format!("healthChecks[{i}]");
    let second = Duration {
        seconds: 1,
        nanos: 0,
    };
    let checker = match &h.check {
        None => return Err(format!("{f}: one of http or tcp is required")),
        Some(Check::Http(http)) => {
            if !http.path.starts_with('/') {
                return Err(format!(
                    "{f}.http.path: {:?} must start with '/'",
                    http.path
                ));
            }
            let mut expected_statuses = Vec::new();
            for s in &http.expected_statuses {
                if !(100..600).contains(s) {
                    return Err(format!(
                        "{f}.http.expectedStatuses: {s} is not an HTTP status"
                    ));
                }
                expected_statuses.push(Int64Range {
                    start: i64::from(*s),
                    end: i64::from(*s) + 1,
                });
            }
            HealthChecker::HttpHealthCheck(health_check::HttpHealthCheck {
                host: http.host.clone(),
                path: http.path.clone(),
                expected_statuses,
                ..Default::default()
            })
        }
        Some(Check::Tcp(tcp)) => {
            let send = if tcp.send_hex.is_empty() {
                None
            } else {
                Some(hex(&format!("{f}.tcp.sendHex"), &tcp.send_hex)?)
            };
            let receive = tcp
                .receive_hex
                .iter()
                .map(|r| hex(&format!("{f}.tcp.receiveHex"), r))
                .collect::<Result<_, _>>()?;
            HealthChecker::TcpHealthCheck(health_check::TcpHealthCheck {
                send,
                receive,
                ..Default::default()
            })
        }
    };
    Ok(EnvoyHealthCheck {
        timeout: Some(h.timeout.as_ref().map_or(second, duration)),
        interval: Some(h.interval.as_ref().map_or(second, duration)),
        unhealthy_threshold: u32v(h.unhealthy_threshold.max(1)),
        healthy_threshold: u32v(h.healthy_threshold.max(1)),
        // Check an endpoint that has not served yet at the normal interval, so a new endpoint
        // that is down is found as fast as one that went down.
        no_traffic_interval: h.interval.as_ref().map(duration),
        always_log_health_check_failures: true,
        health_checker: Some(checker),
        ..Default::default()
    })
}

impl Plugin for Resilience {
    fn name(&self) -> &'static str {
        "resilience"
    }

    fn upstream(
        &self,
        _ctx: &Context<'_>,
        _namespace: &str,
        spec: &UpstreamSpec,
        cluster: &mut Cluster,
    ) -> Result<(), String> {
        cluster.health_checks = spec
            .health_checks
            .iter()
            .enumerate()
            .map(|(i, h)| health_check(i, h))
            .collect::<Result<_, _>>()?;
        if let Some(cb) = &spec.circuit_breakers {
            let budgeted = cb.retry_budget_percent > 0.0 || cb.retry_budget_min_concurrency > 0;
            if !(0.0..=100.0).contains(&cb.retry_budget_percent) {
                return Err(format!(
                    "circuitBreakers.retryBudgetPercent: {} is not between 0 and 100",
                    cb.retry_budget_percent
                ));
            }
            if budgeted && cb.max_retries > 0 {
                return Err(
                    "circuitBreakers.maxRetries: a retry budget replaces maxRetries; set one"
                        .into(),
                );
            }
            let nonzero = |v: u32| (v > 0).then_some(UInt32Value { value: v });
            cluster.circuit_breakers = Some(CircuitBreakers {
                thresholds: vec![Thresholds {
                    max_connections: nonzero(cb.max_connections),
                    max_pending_requests: nonzero(cb.max_pending_requests),
                    max_requests: nonzero(cb.max_requests),
                    max_retries: nonzero(cb.max_retries),
                    retry_budget: budgeted.then(|| RetryBudget {
                        budget_percent: Some(Percent {
                            value: cb.retry_budget_percent,
                        }),
                        min_retry_concurrency: Some(UInt32Value {
                            value: cb.retry_budget_min_concurrency,
                        }),
                        ..Default::default()
                    }),
                    // Report the remaining budget as gauges, so the overflow is observable.
                    track_remaining: true,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        if let Some(od) = &spec.outlier_detection {
            if od.max_ejection_percent > 100 {
                return Err(format!(
                    "outlierDetection.maxEjectionPercent: {} is over 100",
                    od.max_ejection_percent
                ));
            }
            cluster.outlier_detection = Some(EnvoyOutlier {
                consecutive_5xx: u32v(if od.consecutive_5xx == 0 {
                    5
                } else {
                    od.consecutive_5xx
                }),
                interval: od.interval.as_ref().map(duration),
                base_ejection_time: od.base_ejection_time.as_ref().map(duration),
                max_ejection_percent: (od.max_ejection_percent > 0).then_some(UInt32Value {
                    value: od.max_ejection_percent,
                }),
                ..Default::default()
            });
        }
        if let Some(lb) = &spec.load_balancer {
            let policy = Policy::try_from(lb.policy)
                .map_err(|_| format!("loadBalancer.policy: unknown policy {}", lb.policy))?;
            let hashed = matches!(policy, Policy::RingHash | Policy::Maglev);
            if !lb.hash_header.is_empty() && !hashed {
                return Err(
                    "loadBalancer.hashHeader: only RING_HASH and MAGLEV hash a header".into(),
                );
            }
            cluster.lb_policy = match policy {
                Policy::RoundRobin => LbPolicy::RoundRobin,
                Policy::LeastRequest => LbPolicy::LeastRequest,
                Policy::RingHash => LbPolicy::RingHash,
                Policy::Maglev => LbPolicy::Maglev,
                Policy::Random => LbPolicy::Random,
            } as i32;
        }
        Ok(())
    }

    fn destination(
        &self,
        ctx: &Context<'_>,
        route: &RouteContext<'_>,
        destination: &Destination,
        _function: Option<&FunctionSpec>,
        out: &mut EnvoyRoute,
    ) -> Result<(), String> {
        let Some(up) = &destination.upstream else {
            return Ok(());
        };
        let ns = if up.namespace.is_empty() {
            route.namespace
        } else {
            &up.namespace
        };
        let Some(Spec::Upstream(spec)) = ctx
            .get(Kind::Upstream, ns, &up.name)
            .and_then(|r| r.spec.as_ref())
        else {
            return Ok(());
        };
        let Some(lb) = spec
            .load_balancer
            .as_ref()
            .filter(|l| !l.hash_header.is_empty())
        else {
            return Ok(());
        };
        if let Some(Action::Route(ra)) = out.action.as_mut() {
            ra.hash_policy.push(HashPolicy {
                policy_specifier: Some(hash_policy::PolicySpecifier::Header(hash_policy::Header {
                    header_name: lb.hash_header.to_ascii_lowercase(),
                    ..Default::default()
                })),
                ..Default::default()
            });
        }
        Ok(())
    }
}
