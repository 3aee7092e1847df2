//! Traffic control options of routes and virtual hosts, as stock Envoy filters configured per
//! route (or per virtual host): CORS (`envoy.filters.http.cors`, preflights answered by Envoy),
//! fault injection (`envoy.filters.http.fault`), local rate limiting
//! (`envoy.filters.http.local_ratelimit`, one token bucket per route or per virtual host), and
//! shadowing (Envoy's request mirror policy). The listener gets each filter only when a route
//! or virtual host it serves configures it; the per-route configuration enables it.
use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::RuntimeFractionalPercent,
            route::v3::{
                route::Action, route_action::RequestMirrorPolicy, Route as EnvoyRoute, VirtualHost,
            },
        },
        extensions::filters::{
            common::fault::v3::{fault_delay::FaultDelaySecifier, FaultDelay},
            http::{
                cors::v3::{Cors, CorsPolicy as EnvoyCors},
                fault::v3::{fault_abort::ErrorType, FaultAbort, HttpFault},
                local_ratelimit::v3::LocalRateLimit as EnvoyLocalRateLimit,
            },
            network::http_connection_manager::v3::{http_filter, HttpFilter},
        },
        r#type::{
            matcher::v3::{string_matcher::MatchPattern, StringMatcher},
            v3::{fractional_percent::DenominatorType, FractionalPercent, TokenBucket},
        },
    },
    google::protobuf::{Any, BoolValue, Duration, UInt32Value},
};
use proto::v1::{
    CorsPolicy, FaultInjection, Kind, LocalRateLimit, Route, Shadowing, VirtualServiceSpec,
};

use super::{Plugin, RouteContext, Stage};
use crate::translate::{
    names,
    routes::retry_policy,
    upstreams::{any, duration},
    Context,
};

pub const CORS: &str = "envoy.filters.http.cors";
pub const FAULT: &str = "envoy.filters.http.fault";
pub const RATE_LIMIT: &str = "envoy.filters.http.local_ratelimit";

pub struct Traffic;

/// A share of requests, 0 to 100 (with up to 4 decimals), as Envoy's fraction of a million.
fn percent(field: &str, p: f64) -> Result<FractionalPercent, String> {
    if !(0.0..=100.0).contains(&p) {
        return Err(format!("{field}: {p} is not between 0 and 100"));
    }
    Ok(FractionalPercent {
        numerator: (p * 10_000.0).round() as u32,
        denominator: DenominatorType::Million as i32,
    })
}

fn always() -> Option<RuntimeFractionalPercent> {
    Some(RuntimeFractionalPercent {
        default_value: Some(FractionalPercent {
            numerator: 100,
            denominator: DenominatorType::Hundred as i32,
        }),
        runtime_key: String::new(),
    })
}

pub fn cors(field: &str, c: &CorsPolicy) -> Result<Any, String> {
    if c.allow_origin.is_empty() {
        return Err(format!(
            "{field}.allowOrigin: at least one origin is required"
        ));
    }
    let origins = c
        .allow_origin
        .iter()
        .map(|o| StringMatcher {
            match_pattern: Some(MatchPattern::Exact(o.clone())),
            ..Default::default()
        })
        .collect();
    Ok(any(&EnvoyCors {
        allow_origin_string_match: origins,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .as_ref()
            .map(|d| d.seconds.to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.then_some(BoolValue { value: true }),
        ..Default::default()
    }))
}

fn fault(f: &FaultInjection) -> Result<Any, String> {
    let mut out = HttpFault::default();
    if let Some(d) = &f.delay {
        let fixed = d
            .fixed_delay
            .as_ref()
            .ok_or("faults.delay.fixedDelay: required")?;
        out.delay = Some(FaultDelay {
            percentage: Some(percent("faults.delay.percentage", d.percentage)?),
            fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(duration(fixed))),
        });
    }
    if let Some(a) = &f.abort {
        if !(200..600).contains(&a.http_status) {
            return Err(format!(
                "faults.abort.httpStatus: {} is not an HTTP status from 200 to 599",
                a.http_status
            ));
        }
        out.abort = Some(FaultAbort {
            percentage: Some(percent("faults.abort.percentage", a.percentage)?),
            error_type: Some(ErrorType::HttpStatus(a.http_status)),
            ..Default::default()
        });
    }
    if out.delay.is_none() && out.abort.is_none() {
        return Err("faults: one of delay or abort is required".into());
    }
    Ok(any(&out))
}

pub fn rate_limit(field: &str, stat_prefix: &str, r: &LocalRateLimit) -> Result<Any, String> {
    if r.max_tokens == 0 {
        return Err(format!("{field}.maxTokens: must be at least 1"));
    }
    let fill = r.fill_interval.as_ref().map_or(
        Duration {
            seconds: 1,
            nanos: 0,
        },
        duration,
    );
    if fill.seconds == 0 && fill.nanos < 50_000_000 {
        return Err(format!("{field}.fillInterval: must be at least 50ms"));
    }
    Ok(any(&EnvoyLocalRateLimit {
        stat_prefix: stat_prefix.into(),
        token_bucket: Some(TokenBucket {
            max_tokens: r.max_tokens,
            tokens_per_fill: Some(UInt32Value {
                value: if r.tokens_per_fill == 0 {
                    r.max_tokens
                } else {
                    r.tokens_per_fill
                },
            }),
            fill_interval: Some(fill),
        }),
        filter_enabled: always(),
        filter_enforced: always(),
        ..Default::default()
    }))
}

fn shadow(
    ctx: &Context<'_>,
    namespace: &str,
    s: &Shadowing,
) -> Result<RequestMirrorPolicy, String> {
    let up = s
        .upstream
        .as_ref()
        .filter(|u| !u.name.is_empty())
        .ok_or("shadowing.upstream: required")?;
    let ns = if up.namespace.is_empty() {
        namespace
    } else {
        &up.namespace
    };
    if s.percentage <= 0.0 {
        return Err("shadowing.percentage: must be above 0 (0 mirrors nothing)".into());
    }
    if ctx.get(Kind::Upstream, ns, &up.name).is_none() {
        return Err(format!(
            "shadowing.upstream: upstream {ns}/{} not found",
            up.name
        ));
    }
    Ok(RequestMirrorPolicy {
        cluster: names::cluster(ns, &up.name),
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(percent("shadowing.percentage", s.percentage)?),
            runtime_key: String::new(),
        }),
        ..Default::default()
    })
}

fn filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// The filter (with an inert listener-level configuration) for a per-route config name.
fn listener_filter(name: &str) -> Option<(Stage, HttpFilter)> {
    Some(match name {
        CORS => (Stage::Early, filter(CORS, any(&Cors::default()))),
        FAULT => (Stage::Early, filter(FAULT, any(&HttpFault::default()))),
        RATE_LIMIT => (
            Stage::Control,
            filter(
                RATE_LIMIT,
                any(&EnvoyLocalRateLimit {
                    stat_prefix: "local_rate_limit".into(),
                    ..Default::default()
                }),
            ),
        ),
        _ => return None,
    })
}

/// Per-route statistics (`vhost.<vhost>.route.<route>.upstream_rq_*`), on Envoy's
/// /stats/prometheus like the per-cluster ones; opt-in (`stats`, `routeStats`), because Envoy
/// makes a stats scope per such route each time it applies the route configuration.
fn route_stats(route: &mut EnvoyRoute) {
    route.stat_prefix = route.name.clone();
}

/// Routes' stat prefixes name the route, so its limiter's counters can be found.
fn route_stat_prefix(route: &EnvoyRoute) -> String {
    format!("route_{}", route.name)
}

impl Plugin for Traffic {
    fn name(&self) -> &'static str {
        "traffic"
    }

    fn route(
        &self,
        ctx: &Context<'_>,
        rc: &RouteContext<'_>,
        out: &mut EnvoyRoute,
    ) -> Result<(), String> {
        let Route {
            options: Some(o), ..
        } = rc.route
        else {
            return Ok(());
        };
        if o.stats {
            route_stats(out);
        }
        if let Some(c) = &o.cors {
            out.typed_per_filter_config
                .insert(CORS.into(), cors("cors", c)?);
        }
        if let Some(f) = &o.faults {
            out.typed_per_filter_config.insert(FAULT.into(), fault(f)?);
        }
        if let Some(r) = &o.rate_limit {
            let prefix = route_stat_prefix(out);
            out.typed_per_filter_config
                .insert(RATE_LIMIT.into(), rate_limit("rateLimit", &prefix, r)?);
        }
        if let Some(s) = &o.shadowing {
            let policy = shadow(ctx, rc.namespace, s)?;
            match out.action.as_mut() {
                Some(Action::Route(ra)) => ra.request_mirror_policies = vec![policy],
                _ => return Err("shadowing: only routes to upstreams can be mirrored".into()),
            }
        }
        Ok(())
    }

    fn virtual_host(
        &self,
        _ctx: &Context<'_>,
        _namespace: &str,
        vs: &VirtualServiceSpec,
        out: &mut VirtualHost,
    ) -> Result<(), String> {
        let Some(o) = &vs.options else {
            return Ok(());
        };
        if o.route_stats {
            out.routes.iter_mut().for_each(route_stats);
        }
        if let Some(c) = &o.cors {
            out.typed_per_filter_config
                .insert(CORS.into(), cors("options.cors", c)?);
        }
        if let Some(r) = &o.rate_limit {
            let prefix = format!("vhost_{}", out.name);
            out.typed_per_filter_config.insert(
                RATE_LIMIT.into(),
                rate_limit("options.rateLimit", &prefix, r)?,
            );
        }
        if let Some(r) = &o.retries {
            out.retry_policy = Some(retry_policy(r));
        }
        Ok(())
    }

    fn vhost_filters(&self, vhost: &VirtualHost) -> Vec<(Stage, HttpFilter)> {
        let mut names: Vec<&str> = vhost
            .typed_per_filter_config
            .keys()
            .chain(
                vhost
                    .routes
                    .iter()
                    .flat_map(|r| r.typed_per_filter_config.keys()),
            )
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names.dedup();
        names.into_iter().filter_map(listener_filter).collect()
    }
}
