//! Step 3: VirtualServices become Envoy virtual hosts. Each matcher of a route becomes one
//! Envoy route with the route's action; a route's destinations must exist (else the whole
//! VirtualService is Rejected, naming the route and the missing object), while a missing
//! Function is a Warning and the route answers 503 until the Function appears.
use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption},
            route::v3::{
                header_matcher::HeaderMatchSpecifier,
                query_parameter_matcher::QueryParameterMatchSpecifier,
                redirect_action::{
                    PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
                },
                retry_policy::RetryBackOff,
                route::Action as EnvoyAction,
                route_action::{ClusterSpecifier, HostRewriteSpecifier},
                route_match::PathSpecifier,
                weighted_cluster::ClusterWeight,
                DirectResponseAction, HeaderMatcher as EnvoyHeaderMatcher,
                QueryParameterMatcher as EnvoyQueryMatcher, RedirectAction as EnvoyRedirect,
                RetryPolicy as EnvoyRetryPolicy, Route as EnvoyRoute,
                RouteAction as EnvoyRouteAction, RouteMatch, VirtualHost, WeightedCluster,
            },
        },
        r#type::matcher::v3::{string_matcher::MatchPattern, RegexMatcher, StringMatcher},
    },
    google::protobuf::UInt32Value,
};
use proto::v1::{
    matcher::Path, resource::Spec, route::Action, route_action::Destination as Dest, Destination,
    FunctionSpec, HeaderManipulation, Kind, Matcher, RetryPolicy, Route, RouteOptions,
    VirtualServiceSpec, WeightedDestination,
};

use std::{collections::HashMap, sync::Arc};

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use prost::Message;

use super::{
    names,
    plugins::{Plugin, RouteContext, Stage},
    upstreams::{duration, inline_body},
    Context, Reporter,
};
use crate::resource::Key;

/// A VirtualService that translated, ready for the gateways that serve it: its virtual host
/// encoded once, and the HTTP filters its routes need.
pub struct VirtualHostOut {
    pub key: Key,
    pub domains: Vec<String>,
    /// The encoded `VirtualHost` message.
    pub encoded: Vec<u8>,
    pub version: String,
    /// The first 128 bits of the SHA-256 of `encoded` (`version` is the first 64 in hex): what
    /// a route configuration's version is summed from.
    pub digest: u128,
    /// (stage, plugin index, filter) for each filter a plugin asked for.
    pub filters: Vec<(Stage, usize, HttpFilter)>,
    /// Whether every domain can be a scope's key ([`super::listeners::scope_key_problem`]):
    /// worked out once here, not for every VirtualService on each pass of the gateways step.
    pub scope_keys_ok: bool,
}

/// One VirtualService's translation and the warnings of its routes, or why it has none.
pub type VhostResult = Result<(Arc<VirtualHostOut>, Vec<String>), String>;

/// A user's regex, checked for syntax (RE2's syntax is, for what routes use, the `regex`
/// crate's); parsing is enough, compiling it would cost far more.
fn regex(r: &str) -> Result<RegexMatcher, String> {
    regex_syntax::Parser::new()
        .parse(r)
        .map_err(|e| format!("invalid regex {r:?}: {e}"))?;
    Ok(RegexMatcher {
        regex: r.to_string(),
        ..Default::default()
    })
}

fn string_matcher(value: &str, is_regex: bool) -> Result<StringMatcher, String> {
    let pattern = if is_regex {
        MatchPattern::SafeRegex(regex(value)?)
    } else {
        MatchPattern::Exact(value.to_string())
    };
    Ok(StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    })
}

fn route_match(m: &Matcher) -> Result<RouteMatch, String> {
    let path = match &m.path {
        None => PathSpecifier::Prefix("/".into()),
        Some(Path::Prefix(p)) => PathSpecifier::Prefix(p.clone()),
        Some(Path::Exact(p)) => PathSpecifier::Path(p.clone()),
        Some(Path::Regex(r)) => PathSpecifier::SafeRegex(regex(r)?),
    };
    let mut headers = Vec::with_capacity(m.headers.len() + usize::from(!m.methods.is_empty()));
    for h in &m.headers {
        if h.name.is_empty() {
            return Err("headers: a header matcher needs a name".into());
        }
        let spec = if h.value.is_empty() && !h.regex {
            HeaderMatchSpecifier::PresentMatch(true)
        } else {
            HeaderMatchSpecifier::StringMatch(string_matcher(&h.value, h.regex)?)
        };
        headers.push(EnvoyHeaderMatcher {
            name: h.name.to_ascii_lowercase(),
            invert_match: h.invert,
            header_match_specifier: Some(spec),
            ..Default::default()
        });
    }
    if !m.methods.is_empty() {
        // `^(GET|POST)$`, written in one string.
        let len = m.methods.iter().map(|s| s.len() + 1).sum::<usize>() + 3;
        let mut regex = String::with_capacity(len);
        regex.push_str("^(");
        for (i, method) in m.methods.iter().enumerate() {
            if i > 0 {
                regex.push('|');
            }
            regex.extend(method.chars().map(|c| c.to_ascii_uppercase()));
        }
        regex.push_str(")$");
        headers.push(EnvoyHeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
                    regex,
                    ..Default::default()
                })),
                ..Default::default()
            })),
            ..Default::default()
        });
    }
    let mut query_parameters = Vec::new();
    for q in &m.query_parameters {
        let spec = if q.value.is_empty() && !q.regex {
            QueryParameterMatchSpecifier::PresentMatch(true)
        } else {
            QueryParameterMatchSpecifier::StringMatch(string_matcher(&q.value, q.regex)?)
        };
        query_parameters.push(EnvoyQueryMatcher {
            name: q.name.clone(),
            query_parameter_match_specifier: Some(spec),
        });
    }
    Ok(RouteMatch {
        path_specifier: Some(path),
        headers,
        query_parameters,
        ..Default::default()
    })
}

/// The cluster of a destination's upstream, checking that it exists and translated.
fn destination_cluster(
    ctx: &Context<'_>,
    reporter: &Reporter,
    namespace: &str,
    d: &Destination,
) -> Result<String, String> {
    let up = d
        .upstream
        .as_ref()
        .ok_or("destination: upstream is required")?;
    let ns = if up.namespace.is_empty() {
        namespace
    } else {
        &up.namespace
    };
    if ctx.get(Kind::Upstream, ns, &up.name).is_none() {
        return Err(format!("upstream {ns}/{} not found", up.name));
    }
    // A key is made (and its name copied) only when there is a verdict to look it up in.
    if reporter.has_rejections() && reporter.is_rejected(&Key::new(Kind::Upstream, ns, &up.name)) {
        return Err(format!("upstream {ns}/{} is Rejected", up.name));
    }
    Ok(names::cluster(ns, &up.name))
}

/// The Function a destination names, when it names one: Ok(None) when it names none, Err with
/// a warning when it names one that is not there (yet).
pub(crate) fn destination_function<'a>(
    ctx: &Context<'a>,
    namespace: &str,
    d: &Destination,
) -> Result<Option<&'a FunctionSpec>, String> {
    if d.function.is_empty() {
        return Ok(None);
    }
    let up = d
        .upstream
        .as_ref()
        .map(|u| (u.namespace.as_str(), u.name.as_str()));
    let (up_ns, up_name) = up.unwrap_or(("", ""));
    let ns = if up_ns.is_empty() { namespace } else { up_ns };
    let found = ctx
        .get(Kind::Function, ns, &d.function)
        .and_then(|r| match &r.spec {
            Some(Spec::Function(f)) if f.upstream == up_name => Some(f),
            _ => None,
        });
    found.map(Some).ok_or_else(|| {
        format!(
            "function {ns}/{} of upstream {up_name} not found (yet)",
            d.function
        )
    })
}

fn weighted(
    ctx: &Context<'_>,
    reporter: &Reporter,
    namespace: &str,
    dests: &[WeightedDestination],
) -> Result<WeightedCluster, String> {
    if dests.iter().all(|d| d.weight == 0) {
        return Err("the destinations' weights add up to 0".into());
    }
    let mut clusters = Vec::new();
    for (i, wd) in dests.iter().enumerate() {
        let d = wd
            .destination
            .as_ref()
            .ok_or_else(|| format!("destinations[{i}]: destination is required"))?;
        let name = destination_cluster(ctx, reporter, namespace, d)
            .map_err(|e| format!("destinations[{i}]: {e}"))?;
        if wd.weight > 0 {
            clusters.push(ClusterWeight {
                name,
                weight: Some(UInt32Value { value: wd.weight }),
                ..Default::default()
            });
        }
    }
    Ok(WeightedCluster {
        clusters,
        ..Default::default()
    })
}

fn header_options(h: &HeaderManipulation) -> (Vec<HeaderValueOption>, Vec<HeaderValueOption>) {
    let opt = |(k, v): (&String, &String)| HeaderValueOption {
        header: Some(HeaderValue {
            key: k.clone(),
            value: v.clone(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    };
    let mut req: Vec<_> = h.request_headers_to_add.iter().map(opt).collect();
    let mut resp: Vec<_> = h.response_headers_to_add.iter().map(opt).collect();
    // Maps have no order; Envoy resources must not change when nothing changed.
    let by_key = |o: &HeaderValueOption| o.header.as_ref().map(|h| h.key.clone());
    req.sort_by_key(by_key);
    resp.sort_by_key(by_key);
    (req, resp)
}

/// Envoy's retry policy for a route's or a virtual host's `retries`.
pub fn retry_policy(r: &RetryPolicy) -> EnvoyRetryPolicy {
    EnvoyRetryPolicy {
        retry_on: if r.retry_on.is_empty() {
            "5xx".into()
        } else {
            r.retry_on.clone()
        },
        num_retries: Some(UInt32Value {
            value: r.num_retries.max(1),
        }),
        per_try_timeout: r.per_try_timeout.as_ref().map(duration),
        retriable_status_codes: r.retriable_status_codes.clone(),
        retry_back_off: Some(RetryBackOff {
            base_interval: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: 0,
                nanos: 25_000_000,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn apply_options(o: &RouteOptions, out: &mut EnvoyRoute) -> Result<(), String> {
    if let Some(h) = &o.headers {
        let (req, resp) = header_options(h);
        out.request_headers_to_add = req;
        out.request_headers_to_remove = h.request_headers_to_remove.clone();
        out.response_headers_to_add = resp;
        out.response_headers_to_remove = h.response_headers_to_remove.clone();
    }
    let Some(EnvoyAction::Route(ra)) = out.action.as_mut() else {
        return Ok(());
    };
    if let Some(t) = &o.timeout {
        ra.timeout = Some(duration(t));
    }
    if !o.prefix_rewrite.is_empty() {
        ra.prefix_rewrite = o.prefix_rewrite.clone();
    }
    if let Some(rr) = &o.regex_rewrite {
        ra.regex_rewrite = Some(
            envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute {
                pattern: Some(regex(&rr.pattern)?),
                substitution: rr.substitution.clone(),
            },
        );
    }
    if !o.host_rewrite.is_empty() {
        ra.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(
            o.host_rewrite.clone(),
        ));
    }
    if let Some(r) = &o.retries {
        ra.retry_policy = Some(retry_policy(r));
    }
    Ok(())
}

/// The Envoy action of a route, or the reason the route cannot be translated. A warning (a
/// missing function) still yields an action.
fn action(
    ctx: &Context<'_>,
    plugins: &[Box<dyn Plugin>],
    reporter: &Reporter,
    rc: &RouteContext<'_>,
    warnings: &mut Vec<String>,
    out: &mut EnvoyRoute,
) -> Result<(), String> {
    let ns = rc.namespace;
    match &rc.route.action {
        None => Err("an action is required (routeAction, redirect or directResponse)".into()),
        Some(Action::DirectResponse(d)) => {
            out.action = Some(EnvoyAction::DirectResponse(DirectResponseAction {
                status: d.status,
                body: (!d.body.is_empty()).then(|| inline_body(&d.body)),
                ..Default::default()
            }));
            Ok(())
        }
        Some(Action::Redirect(r)) => {
            let code = match r.response_code {
                0 | 301 => RedirectResponseCode::MovedPermanently,
                302 => RedirectResponseCode::Found,
                303 => RedirectResponseCode::SeeOther,
                307 => RedirectResponseCode::TemporaryRedirect,
                308 => RedirectResponseCode::PermanentRedirect,
                c => {
                    return Err(format!(
                        "redirect.responseCode: {c} is not 301, 302, 303, 307 or 308"
                    ))
                }
            };
            let path = if !r.path.is_empty() {
                Some(PathRewriteSpecifier::PathRedirect(r.path.clone()))
            } else if !r.prefix_rewrite.is_empty() {
                Some(PathRewriteSpecifier::PrefixRewrite(
                    r.prefix_rewrite.clone(),
                ))
            } else {
                None
            };
            out.action = Some(EnvoyAction::Redirect(EnvoyRedirect {
                host_redirect: r.host.clone(),
                response_code: code as i32,
                scheme_rewrite_specifier: r
                    .https
                    .then_some(SchemeRewriteSpecifier::HttpsRedirect(true)),
                path_rewrite_specifier: path,
                ..Default::default()
            }));
            Ok(())
        }
        Some(Action::RouteAction(ra)) => {
            let spec = match &ra.destination {
                None => {
                    return Err(
                        "routeAction: one of single, multi or upstreamGroup is required".into(),
                    )
                }
                Some(Dest::Single(d)) => {
                    let cluster = destination_cluster(ctx, reporter, ns, d)?;
                    match destination_function(ctx, ns, d) {
                        Ok(function) => {
                            out.action = Some(EnvoyAction::Route(EnvoyRouteAction {
                                cluster_specifier: Some(ClusterSpecifier::Cluster(cluster)),
                                ..Default::default()
                            }));
                            for p in plugins {
                                p.destination(ctx, rc, d, function, out)
                                    .map_err(|e| format!("{}: {e}", p.name()))?;
                            }
                            return Ok(());
                        }
                        Err(w) => {
                            out.action = Some(EnvoyAction::DirectResponse(DirectResponseAction {
                                status: 503,
                                body: Some(inline_body(&format!("{w}\n"))),
                                ..Default::default()
                            }));
                            warnings.push(w);
                            return Ok(());
                        }
                    }
                }
                Some(Dest::Multi(m)) => weighted(ctx, reporter, ns, &m.destinations)?,
                Some(Dest::UpstreamGroup(g)) => {
                    let gns = if g.namespace.is_empty() {
                        ns
                    } else {
                        &g.namespace
                    };
                    let group = ctx
                        .get(Kind::UpstreamGroup, gns, &g.name)
                        .ok_or_else(|| format!("upstream group {gns}/{} not found", g.name))?;
                    let Some(Spec::UpstreamGroup(group)) = &group.spec else {
                        return Err(format!("upstream group {gns}/{} has no spec", g.name));
                    };
                    weighted(ctx, reporter, gns, &group.destinations)
                        .map_err(|e| format!("upstream group {gns}/{}: {e}", g.name))?
                }
            };
            out.action = Some(EnvoyAction::Route(EnvoyRouteAction {
                cluster_specifier: Some(ClusterSpecifier::WeightedClusters(spec)),
                ..Default::default()
            }));
            Ok(())
        }
    }
}

fn translate_vs(
    ctx: &Context<'_>,
    plugins: &[Box<dyn Plugin>],
    reporter: &Reporter,
    key: &Key,
    vs: &VirtualServiceSpec,
    mut routes: Vec<EnvoyRoute>,
) -> Result<(VirtualHost, Vec<String>), String> {
    routes.clear();
    routes.reserve(vs.routes.len());
    let mut warnings = Vec::new();
    for (i, route) in vs.routes.iter().enumerate() {
        // Formatted only for an error or a warning.
        let label = || {
            if route.name.is_empty() {
                format!("routes[{i}]")
            } else {
                format!("route {:?} (routes[{i}])", route.name)
            }
        };
        let rc = RouteContext {
            namespace: &key.namespace,
            route,
        };
        // An Envoy route is a large value: it is built where it stays (the virtual host's
        // list), first as the template every matcher's route is made from.
        let start = routes.len();
        routes.push(EnvoyRoute {
            name: route_name(key, route, i),
            ..Default::default()
        });
        let template = &mut routes[start];
        let mut route_warnings = Vec::new();
        action(ctx, plugins, reporter, &rc, &mut route_warnings, template)
            .map_err(|e| format!("{}: {e}", label()))?;
        if let Some(o) = &route.options {
            apply_options(o, template).map_err(|e| format!("{}: {e}", label()))?;
        }
        for p in plugins {
            p.route(ctx, &rc, template)
                .map_err(|e| format!("{}: {}: {e}", label(), p.name()))?;
        }
        warnings.extend(
            route_warnings
                .into_iter()
                .map(|w| format!("{}: {w}", label())),
        );
        let default_matcher = [Matcher::default()];
        let matchers: &[Matcher] = if route.matchers.is_empty() {
            &default_matcher
        } else {
            &route.matchers
        };
        // One route a matcher: the template takes the first, copies of it the others.
        for _ in 1..matchers.len() {
            routes.push(routes[start].clone());
        }
        for (j, m) in matchers.iter().enumerate() {
            let r = &mut routes[start + j];
            r.r#match =
                Some(route_match(m).map_err(|e| format!("{}: matchers[{j}]: {e}", label()))?);
            if matchers.len() > 1 {
                r.name = format!("{}-{j}", r.name);
            }
        }
        for p in plugins {
            p.matched(ctx, &rc, &mut routes, start)
                .map_err(|e| format!("{}: {}: {e}", label(), p.name()))?;
        }
    }
    let mut vhost = VirtualHost {
        name: names::virtual_host(&key.namespace, &key.name),
        domains: domains(vs),
        routes,
        ..Default::default()
    };
    if let Some(h) = vs.options.as_ref().and_then(|o| o.headers.as_ref()) {
        let (req, resp) = header_options(h);
        vhost.request_headers_to_add = req;
        vhost.request_headers_to_remove = h.request_headers_to_remove.clone();
        vhost.response_headers_to_add = resp;
        vhost.response_headers_to_remove = h.response_headers_to_remove.clone();
    }
    for p in plugins {
        p.virtual_host(ctx, &key.namespace, vs, &mut vhost)
            .map_err(|e| format!("{}: {e}", p.name()))?;
    }
    Ok((vhost, warnings))
}

/// One entry of a protobuf `map<string, Any>` field, as it is encoded.
#[derive(Clone, PartialEq, prost::Message)]
struct MapEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<envoy_types::pb::google::protobuf::Any>,
}

/// Appends a `map<string, Any>` field in key order. prost encodes maps in the HashMap's
/// iteration order, which differs between passes; equal input must give equal bytes.
fn encode_map(
    tag: u32,
    map: &HashMap<String, envoy_types::pb::google::protobuf::Any>,
    buf: &mut Vec<u8>,
) {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in entries {
        let entry = MapEntry {
            key: k.clone(),
            value: Some(v.clone()),
        };
        prost::encoding::message::encode(tag, &entry, buf);
    }
}

/// A virtual host's bytes, with its and its routes' per-filter configuration maps in key
/// order (fields may come in any order on the wire). The per-filter configurations are taken
/// out; the rest is left.
fn encode_vhost(rest: &mut VirtualHost, scratch: &mut Scratch) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
    const VHOST_ROUTES: u32 = 3;
    const VHOST_FILTER_CONFIG: u32 = 15;
    const ROUTE_FILTER_CONFIG: u32 = 13;
    let mut routes = std::mem::take(&mut rest.routes);
    let config = std::mem::take(&mut rest.typed_per_filter_config);
    // Each route is encoded once, into the scratch buffer, and so measured without prost's
    // measuring pass (which visits every field and nested message once more). By reference:
    // a route is a few kilobytes, each move of it a copy.
    let (bytes, ends) = (&mut scratch.bytes, &mut scratch.ends);
    bytes.clear();
    ends.clear();
    for route in routes.iter_mut() {
        if route.typed_per_filter_config.is_empty() {
            route.encode_raw(bytes);
        } else {
            let route_config = std::mem::take(&mut route.typed_per_filter_config);
            route.encode_raw(bytes);
            encode_map(ROUTE_FILTER_CONFIG, &route_config, bytes);
        }
        ends.push(bytes.len());
    }
    let routes_end = bytes.len();
    encode_map(VHOST_FILTER_CONFIG, &config, bytes);
    let field = |n: usize| 1 + encoded_len_varint(n as u64) + n;
    let mut routes_len = 0;
    let mut from = 0;
    for &end in ends.iter() {
        routes_len += field(end - from);
        from = end;
    }
    let mut buf = Vec::with_capacity(rest.encoded_len() + routes_len + bytes.len() - routes_end);
    rest.encode_raw(&mut buf);
    let mut from = 0;
    for &end in ends.iter() {
        encode_key(VHOST_ROUTES, WireType::LengthDelimited, &mut buf);
        encode_varint((end - from) as u64, &mut buf);
        buf.extend_from_slice(&bytes[from..end]);
        from = end;
    }
    buf.extend_from_slice(&bytes[routes_end..]);
    rest.routes = routes;
    buf
}

fn route_name(key: &Key, route: &Route, i: usize) -> String {
    if route.name.is_empty() {
        [&*key.namespace, "-", &*key.name, "-", &i.to_string()].concat()
    } else {
        [&*key.namespace, "-", &*key.name, "-", &route.name].concat()
    }
}

pub fn domains(vs: &VirtualServiceSpec) -> Vec<String> {
    if vs.domains.is_empty() {
        vec!["*".into()]
    } else {
        vs.domains.clone()
    }
}

/// Buffers each VirtualService's translation takes over from the last one's: the Envoy routes
/// (a few kilobytes each: a new vector each time is one of malloc's slow allocations) and the
/// routes' bytes before they are framed.
#[derive(Default)]
pub struct Scratch {
    routes: Vec<EnvoyRoute>,
    bytes: Vec<u8>,
    /// Where each route's bytes end.
    ends: Vec<usize>,
}

/// One VirtualService: its virtual host, encoded once, with the filters its routes need.
pub fn translate_one(
    ctx: &Context<'_>,
    plugins: &[Box<dyn Plugin>],
    reporter: &Reporter,
    key: &Key,
    vs: &VirtualServiceSpec,
    scratch: &mut Scratch,
) -> VhostResult {
    let routes = std::mem::take(&mut scratch.routes);
    let (mut vhost, warnings) = translate_vs(ctx, plugins, reporter, key, vs, routes)?;
    let mut filters = Vec::new();
    for (i, p) in plugins.iter().enumerate() {
        for (stage, f) in p.vhost_filters(&vhost) {
            filters.push((stage, i, f));
        }
    }
    let encoded = encode_vhost(&mut vhost, scratch);
    let domains = std::mem::take(&mut vhost.domains);
    scratch.routes = std::mem::take(&mut vhost.routes);
    scratch.routes.clear();
    let digest = crate::xds::content_digest(&encoded);
    let scope_keys_ok = domains
        .iter()
        .all(|d| super::listeners::scope_key_problem(d).is_none());
    let out = VirtualHostOut {
        key: key.clone(),
        domains,
        version: crate::xds::digest_version(digest),
        digest,
        encoded,
        filters,
        scope_keys_ok,
    };
    Ok((Arc::new(out), warnings))
}
