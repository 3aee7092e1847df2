//! Google Cloud Functions: a route to a `gcf` Function of a `gcp` Upstream goes to the
//! function's URL.
//!
//! ```text
//!  Function gcf{url: https://fn-abc-uc.a.run.app/base}  of Upstream gcp (namespace ns)
//!     └─► cluster  <upstream>_<ns>-gcf-https-fn-abc-uc.a.run.app-443   (one per distinct
//!         scheme/host/port of the upstream's functions: TLS with SNI = host, system CAs or the
//!         upstream's tls CA; plain for http:// URLs)
//!  route to it:  host rewritten to the URL's host[:port]
//!                path: /<route prefix>/rest?q  ─►  <URL path>/rest?q
//! ```
//!
//! Path rewrite: the URL's path replaces the part of the request path the route's prefix
//! matched, and the rest follows after one `/` (prefix `/hello`, URL path `/fn`: `/hello` →
//! `/fn/`, `/hello/a/b?x=1` → `/fn/a/b?x=1`; an empty URL path acts as `/`). A route matched
//! by exact path or regex sends the URL's path alone. A route's own `prefixRewrite` or
//! `regexRewrite` wins over this.
//!
//! Identity (`spec.gcp.functionAuth`): `gcpAuthn` puts Envoy's stock
//! `envoy.filters.http.gcp_authn` filter on the listener, with each function cluster's
//! audience (`scheme://host`) in its metadata, so Envoy fetches ID tokens from the GCE
//! metadata server; `tokenSecretRef` sends `Authorization: Bearer <token>` from an opaque
//! Secret (key `token`), added by an upstream `header_mutation` filter on the function's
//! cluster so the token is in no route. The token never appears in reasons or logs.
//!
//! Clusters are made per translation pass by [`Plugin::clusters`] (the one extension of the
//! plugin interface this needed): they depend on Functions, Upstreams and Secrets together.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{Arc, Mutex},
};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily},
                Cluster,
            },
            common::mutation_rules::v3::{header_mutation, HeaderMutation as MutationRule},
            core::v3::{
                header_value_option::HeaderAppendAction, transport_socket, HeaderValue,
                HeaderValueOption, Http1ProtocolOptions, Http2ProtocolOptions, Metadata,
                TransportSocket,
            },
            route::v3::{
                route::Action as EnvoyAction, route_action::ClusterSpecifier,
                route_action::HostRewriteSpecifier, Route as EnvoyRoute,
            },
        },
        extensions::{
            filters::{
                http::{
                    gcp_authn::v3::{Audience, GcpAuthnFilterConfig},
                    header_mutation::v3::{HeaderMutation, Mutations},
                    upstream_codec::v3::UpstreamCodec,
                },
                network::http_connection_manager::v3::{http_filter, HttpFilter},
            },
            transport_sockets::tls::v3::{
                certificate_validation_context::SystemRootCerts,
                common_tls_context::ValidationContextType, CertificateValidationContext,
                CommonTlsContext, UpstreamTlsContext,
            },
            upstreams::http::v3::{
                http_protocol_options::{
                    explicit_http_config::ProtocolConfig, ExplicitHttpConfig,
                    UpstreamProtocolOptions,
                },
                HttpProtocolOptions,
            },
        },
        r#type::matcher::v3::{RegexMatchAndSubstitute, RegexMatcher},
    },
    google::protobuf::{value::Kind as ValueKind, Duration, Struct, Value},
};
use proto::v1::{
    function_spec, matcher::Path, resource::Spec, secret_spec, upstream_spec::UpstreamType,
    Destination, FunctionSpec, GcpUpstream, Kind, UpstreamSpec,
};

use super::{Plugin, RouteContext, Stage};
use crate::{
    resource::Key,
    translate::{
        names,
        upstreams::{any, duration, inline_body, load_assignment},
        Context, Reporter, Stamp,
    },
    xds::XdsResource,
};

pub const GCP_AUTHN: &str = "envoy.filters.http.gcp_authn";
/// The cluster gcp_authn fetches ID tokens through.
pub const METADATA_CLUSTER: &str = "gcp_metadata";
const METADATA_HOST: &str = "metadata.google.internal";
/// Route metadata marking a route whose function wants gcp_authn tokens.
const MARKER: &str = "io.solo.gloo.gcf";
const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The plugin; it keeps each function cluster's encoding while what it was made from (the
/// upstream, its Secrets, the URL) is unchanged, so a pass with thousands of functions does not
/// re-encode thousands of clusters.
#[derive(Default)]
pub struct Gcf {
    cache: Mutex<HashMap<String, ClusterEntry>>,
}

/// A function cluster (or why it could not be made), with what it was made from.
type ClusterEntry = (Vec<Option<Stamp>>, Result<Arc<XdsResource>, String>);

/// A function URL, taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionUrl {
    pub tls: bool,
    pub host: String,
    pub port: u32,
    /// The path, without query or fragment; may be empty.
    pub path: String,
}

impl FunctionUrl {
    pub fn parse(url: &str) -> Result<FunctionUrl, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
        let path = tail[..path_end].to_string();
        if authority.contains('@') {
            return Err(format!("{url:?}: credentials in the URL are not supported"));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                if h.contains(':') && !h.starts_with('[') {
                    (authority, default_port)
                } else {
                    let port = p
                        .parse::<u32>()
                        .ok()
                        .filter(|p| (1..=65535).contains(p))
                        .ok_or_else(|| format!("{url:?}: bad port {p:?}"))?;
                    (h, port)
                }
            }
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        {
            return Err(format!("{url:?}: invalid host {host:?}"));
        }
        Ok(FunctionUrl {
            tls,
            host: host.to_ascii_lowercase(),
            port,
            path,
        })
    }

    fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    fn default_port(&self) -> bool {
        self.port == if self.tls { 443 } else { 80 }
    }

    /// The Host header: host, with the port when it is not the scheme's default.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// What gcp_authn asks ID tokens for: the service's URL.
    pub fn audience(&self) -> String {
        format!("{}://{}", self.scheme(), self.authority())
    }
}

/// The cluster of an upstream's functions at one scheme, host and port.
pub fn cluster_name(namespace: &str, upstream: &str, u: &FunctionUrl) -> String {
    format!(
        "{}-gcf-{}-{}-{}",
        names::cluster(namespace, upstream),
        u.scheme(),
        u.host,
        u.port
    )
}

fn gcp_upstream<'a>(
    ctx: &Context<'a>,
    namespace: &str,
    name: &str,
) -> Option<(&'a UpstreamSpec, &'a GcpUpstream)> {
    match ctx.get(Kind::Upstream, namespace, name)?.spec.as_ref()? {
        Spec::Upstream(u) => match &u.upstream_type {
            Some(UpstreamType::Gcp(g)) => Some((u, g)),
            _ => None,
        },
        _ => None,
    }
}

/// The bearer token of `spec.gcp.functionAuth.tokenSecretRef`, if set. Errors name the field
/// and the Secret, never the token.
fn token<'a>(
    ctx: &Context<'a>,
    namespace: &str,
    gcp: &GcpUpstream,
) -> Result<Option<&'a str>, String> {
    let Some(auth) = &gcp.function_auth else {
        return Ok(None);
    };
    let Some(r) = auth
        .token_secret_ref
        .as_ref()
        .filter(|r| !r.name.is_empty())
    else {
        return Ok(None);
    };
    if auth.gcp_authn {
        return Err("gcp.functionAuth: set gcpAuthn or tokenSecretRef, not both".into());
    }
    let field = "gcp.functionAuth.tokenSecretRef";
    let (ns, secret) = ctx.secret_ref(field, namespace, r)?;
    let what = format!("{field}: Secret {ns}/{}", r.name);
    let Some(secret_spec::Kind::Opaque(o)) = &secret.kind else {
        return Err(format!("{what} is not an opaque secret"));
    };
    let t = o
        .data
        .get("token")
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("{what} has no `token` key"))?;
    if t.chars().any(|c| c.is_control()) {
        return Err(format!("{what}: the token holds control characters"));
    }
    Ok(Some(t))
}

fn gcp_authn(gcp: &GcpUpstream) -> bool {
    gcp.function_auth.as_ref().is_some_and(|a| a.gcp_authn)
}

/// The TLS socket towards a function host: SNI = host, verified with the upstream's CA when
/// its `tls.secretRef` names one, else with the system's roots.
fn tls_socket(
    ctx: &Context<'_>,
    namespace: &str,
    spec: &UpstreamSpec,
    u: &FunctionUrl,
) -> Result<TransportSocket, String> {
    let mut validation = Some(ValidationContextType::ValidationContext(
        CertificateValidationContext {
            system_root_certs: Some(SystemRootCerts {}),
            ..Default::default()
        },
    ));
    let mut sni = u.host.clone();
    if let Some(tls) = &spec.tls {
        if !tls.sni.is_empty() {
            sni = tls.sni.clone();
        }
        if tls.insecure_skip_verify {
            validation = None;
        }
        if let Some(r) = tls.secret_ref.as_ref().filter(|r| !r.name.is_empty()) {
            let (ns, secret) = ctx.secret_ref("tls.secretRef", namespace, r)?;
            let what = format!("tls.secretRef: Secret {ns}/{}", r.name);
            let Some(secret_spec::Kind::Tls(t)) = &secret.kind else {
                return Err(format!("{what} is not a tls secret"));
            };
            if !t.root_ca.is_empty() {
                validation = Some(ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: Some(inline_body(&t.root_ca)),
                        ..Default::default()
                    },
                ));
            }
        }
    }
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: validation,
            ..Default::default()
        }),
        sni,
        ..Default::default()
    };
    Ok(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
    })
}

fn http_filter(name: &str, config: envoy_types::pb::google::protobuf::Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// The cluster for one function host of a GCP upstream.
fn function_cluster(
    ctx: &Context<'_>,
    namespace: &str,
    upstream: &str,
    spec: &UpstreamSpec,
    gcp: &GcpUpstream,
    u: &FunctionUrl,
) -> Result<Cluster, String> {
    let name = cluster_name(namespace, upstream, u);
    let ip = u.host.parse::<IpAddr>().is_ok();
    let mut c =
        Cluster {
            name: name.clone(),
            connect_timeout: Some(spec.connect_timeout.as_ref().map(duration).unwrap_or(
                Duration {
                    seconds: 5,
                    nanos: 0,
                },
            )),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(if ip {
                DiscoveryType::Static as i32
            } else {
                DiscoveryType::LogicalDns as i32
            })),
            load_assignment: Some(load_assignment(&name, [(u.host.as_str(), u.port)])),
            ..Default::default()
        };
    if !ip {
        c.dns_lookup_family = DnsLookupFamily::V4Preferred as i32;
    }
    if u.tls {
        c.transport_socket = Some(tls_socket(ctx, namespace, spec, u)?);
    }
    if gcp_authn(gcp) {
        c.metadata = Some(Metadata {
            typed_filter_metadata: [(
                GCP_AUTHN.to_string(),
                any(&Audience {
                    url: u.audience(),
                    ..Default::default()
                }),
            )]
            .into(),
            ..Default::default()
        });
    }
    let token = token(ctx, namespace, gcp)?;
    if spec.use_http2 || token.is_some() {
        let protocol = if spec.use_http2 {
            ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions::default())
        } else {
            ProtocolConfig::HttpProtocolOptions(Http1ProtocolOptions::default())
        };
        let mut options = HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(protocol),
                },
            )),
            ..Default::default()
        };
        if let Some(t) = token {
            let add = MutationRule {
                action: Some(header_mutation::Action::Append(HeaderValueOption {
                    header: Some(HeaderValue {
                        key: "authorization".into(),
                        value: format!("Bearer {t}"),
                        ..Default::default()
                    }),
                    append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                    ..Default::default()
                })),
            };
            options.http_filters = vec![
                http_filter(
                    "envoy.filters.http.header_mutation",
                    any(&HeaderMutation {
                        mutations: Some(Mutations {
                            request_mutations: vec![add],
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                ),
                http_filter(
                    "envoy.filters.http.upstream_codec",
                    any(&UpstreamCodec::default()),
                ),
            ];
        }
        c.typed_extension_protocol_options
            .insert(HTTP_OPTIONS.into(), any(&options));
    }
    Ok(c)
}

/// What a function cluster is made from besides its URL (which is in its name): the upstream
/// and the Secrets it names.
fn cluster_deps(
    ctx: &Context<'_>,
    namespace: &str,
    upstream: &str,
    spec: &UpstreamSpec,
    gcp: &GcpUpstream,
) -> Vec<Option<Stamp>> {
    let mut d = vec![ctx.stamp(Kind::Upstream, namespace, upstream)];
    let refs = [
        spec.tls.as_ref().and_then(|t| t.secret_ref.as_ref()),
        gcp.function_auth
            .as_ref()
            .and_then(|a| a.token_secret_ref.as_ref()),
    ];
    for r in refs.into_iter().flatten() {
        let ns = if r.namespace.is_empty() {
            namespace
        } else {
            &r.namespace
        };
        d.push(ctx.stamp(Kind::Secret, ns, &r.name));
    }
    d
}

/// The cluster through which gcp_authn reaches the GCE metadata server.
fn metadata_cluster() -> Cluster {
    Cluster {
        name: METADATA_CLUSTER.into(),
        connect_timeout: Some(Duration {
            seconds: 1,
            nanos: 0,
        }),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32)),
        dns_lookup_family: DnsLookupFamily::V4Only as i32,
        load_assignment: Some(load_assignment(METADATA_CLUSTER, [(METADATA_HOST, 80)])),
        ..Default::default()
    }
}

/// A regex matching `s` literally (RE2 syntax).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The path rewrite of a route to a function at `path`, for the route's matchers.
fn path_rewrite(rc: &RouteContext<'_>, path: &str) -> RegexMatchAndSubstitute {
    let base = path.trim_end_matches('/');
    let prefixes: Option<Vec<String>> = if rc.route.matchers.is_empty() {
        Some(vec![String::new()])
    } else {
        rc.route
            .matchers
            .iter()
            .map(|m| match &m.path {
                None => Some(String::new()),
                Some(Path::Prefix(p)) => Some(p.trim_end_matches('/').to_string()),
                _ => None,
            })
            .collect()
    };
    let (pattern, substitution) = match prefixes {
        Some(mut ps) => {
            // Longest first, so `/a/b` wins over `/a`.
            ps.sort_by_key(|p| std::cmp::Reverse(p.len()));
            ps.dedup();
            let alts: Vec<String> = ps.iter().map(|p| escape(p)).collect();
            // `\1` is RE2's group reference in Envoy's substitution; `$` would not do.
            (
                format!("^(?:{})/*(.*)$", alts.join("|")),
                format!("{base}/\\1"),
            )
        }
        None => (
            "^.*$".to_string(),
            if base.is_empty() {
                "/".to_string()
            } else {
                base.to_string()
            },
        ),
    };
    RegexMatchAndSubstitute {
        pattern: Some(RegexMatcher {
            regex: pattern,
            ..Default::default()
        }),
        substitution,
    }
}

fn marker() -> Metadata {
    Metadata {
        filter_metadata: [(
            MARKER.to_string(),
            Struct {
                fields: [(
                    "gcp_authn".to_string(),
                    Value {
                        kind: Some(ValueKind::BoolValue(true)),
                    },
                )]
                .into(),
            },
        )]
        .into(),
        ..Default::default()
    }
}

impl Plugin for Gcf {
    fn name(&self) -> &'static str {
        "gcf"
    }

    fn upstream(
        &self,
        ctx: &Context<'_>,
        namespace: &str,
        upstream: &UpstreamSpec,
        _cluster: &mut Cluster,
    ) -> Result<(), String> {
        if let Some(UpstreamType::Gcp(g)) = &upstream.upstream_type {
            if g.project.is_empty() {
                return Err("gcp.project is required".into());
            }
            token(ctx, namespace, g)?;
        }
        Ok(())
    }

    fn clusters(&self, ctx: &Context<'_>, reporter: &mut Reporter) -> Vec<Arc<XdsResource>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: BTreeMap<String, Arc<XdsResource>> = BTreeMap::new();
        let mut authn = false;
        for (key, r) in ctx.input.of_kind(Kind::Function) {
            let Some(Spec::Function(FunctionSpec {
                upstream,
                function: Some(function_spec::Function::Gcf(g)),
            })) = &r.spec
            else {
                continue;
            };
            let ukey = Key::new(Kind::Upstream, &key.namespace, upstream);
            if reporter.is_rejected(&ukey) {
                continue;
            }
            let Some((spec, gcp)) = gcp_upstream(ctx, &key.namespace, upstream) else {
                if ctx.get(Kind::Upstream, &key.namespace, upstream).is_some() {
                    reporter.warn(
                        key,
                        format!(
                            "gcf: upstream {}/{upstream} is not a gcp upstream",
                            key.namespace
                        ),
                    );
                }
                continue;
            };
            let url = match FunctionUrl::parse(&g.url) {
                Ok(u) => u,
                Err(e) => {
                    reporter.reject(key, format!("gcf.url: {e}"));
                    continue;
                }
            };
            authn |= gcp_authn(gcp);
            let name = cluster_name(&key.namespace, upstream, &url);
            if out.contains_key(&name) {
                continue;
            }
            let deps = cluster_deps(ctx, &key.namespace, upstream, spec, gcp);
            let fresh = cache.get(&name).is_some_and(|(d, _)| *d == deps);
            if !fresh {
                let built = function_cluster(ctx, &key.namespace, upstream, spec, gcp, &url)
                    .map(|c| Arc::new(XdsResource::new(c.name.clone(), &c)));
                cache.insert(name.clone(), (deps, built));
            }
            match &cache[&name].1 {
                Ok(c) => {
                    out.insert(name, c.clone());
                }
                Err(e) => reporter.reject(key, format!("gcf: {e}")),
            }
        }
        cache.retain(|name, _| out.contains_key(name));
        if authn {
            let c = metadata_cluster();
            out.insert(
                METADATA_CLUSTER.into(),
                Arc::new(XdsResource::new(c.name.clone(), &c)),
            );
        }
        out.into_values().collect()
    }

    fn destination(
        &self,
        ctx: &Context<'_>,
        rc: &RouteContext<'_>,
        destination: &Destination,
        function: Option<&FunctionSpec>,
        out: &mut EnvoyRoute,
    ) -> Result<(), String> {
        let Some(FunctionSpec {
            function: Some(function_spec::Function::Gcf(g)),
            ..
        }) = function
        else {
            return Ok(());
        };
        let up = destination
            .upstream
            .as_ref()
            .ok_or("upstream is required")?;
        let ns = if up.namespace.is_empty() {
            rc.namespace
        } else {
            &up.namespace
        };
        let (_, gcp) = gcp_upstream(ctx, ns, &up.name).ok_or_else(|| {
            format!(
                "function {:?} is a gcf function but upstream {ns}/{} is not a gcp upstream",
                destination.function, up.name
            )
        })?;
        let url = FunctionUrl::parse(&g.url)
            .map_err(|e| format!("function {ns}/{}: gcf.url: {e}", destination.function))?;
        let Some(EnvoyAction::Route(ra)) = out.action.as_mut() else {
            return Ok(());
        };
        ra.cluster_specifier = Some(ClusterSpecifier::Cluster(cluster_name(ns, &up.name, &url)));
        ra.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(url.authority()));
        let own_rewrite = rc
            .route
            .options
            .as_ref()
            .is_some_and(|o| !o.prefix_rewrite.is_empty() || o.regex_rewrite.is_some());
        if !own_rewrite {
            ra.regex_rewrite = Some(path_rewrite(rc, &url.path));
        }
        if gcp_authn(gcp) {
            out.metadata = Some(marker());
        }
        Ok(())
    }

    fn http_filters(&self, routes: &[&EnvoyRoute]) -> Vec<(Stage, HttpFilter)> {
        let wanted = routes.iter().any(|r| {
            r.metadata
                .as_ref()
                .is_some_and(|m| m.filter_metadata.contains_key(MARKER))
        });
        if !wanted {
            return Vec::new();
        }
        let config = GcpAuthnFilterConfig {
            cluster: METADATA_CLUSTER.into(),
            timeout: Some(Duration {
                seconds: 5,
                nanos: 0,
            }),
            ..Default::default()
        };
        vec![(Stage::Function, http_filter(GCP_AUTHN, any(&config)))]
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use envoy_types::pb::envoy::config::{
        listener::v3::{filter::ConfigType as FilterConfig, Listener},
        route::v3::RouteConfiguration,
    };
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    use prost::Message;
    use proto::v1::{
        route::Action, route_action::Destination as Dest, status::State, GatewaySpec, GcfFunction,
        GcpFunctionAuth, Matcher, Metadata as Meta, OpaqueSecret, Resource, ResourceRef, Route,
        RouteAction, SecretSpec, VirtualServiceSpec,
    };

    use super::*;
    use crate::{
        translate::{translate, Input, Translation},
        xds,
    };

    const TOKEN: &str = "s3cret-token";

    fn res(name: &str, spec: Spec) -> Resource {
        Resource {
            metadata: Some(Meta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            status: None,
            spec: Some(spec),
        }
    }

    fn gcp(auth: Option<GcpFunctionAuth>) -> Resource {
        res(
            "gcp",
            Spec::Upstream(UpstreamSpec {
                upstream_type: Some(UpstreamType::Gcp(Box::new(GcpUpstream {
                    project: "p".into(),
                    function_auth: auth,
                    ..Default::default()
                }))),
                ..Default::default()
            }),
        )
    }

    fn function(name: &str, url: &str) -> Resource {
        res(
            name,
            Spec::Function(FunctionSpec {
                upstream: "gcp".into(),
                function: Some(function_spec::Function::Gcf(GcfFunction {
                    name: format!("projects/p/locations/l/functions/{name}"),
                    url: url.into(),
                })),
            }),
        )
    }

    fn route_vs(prefix: &str, function: &str) -> Resource {
        res(
            "vs",
            Spec::VirtualService(VirtualServiceSpec {
                routes: vec![Route {
                    matchers: vec![Matcher {
                        path: Some(Path::Prefix(prefix.into())),
                        ..Default::default()
                    }],
                    action: Some(Action::RouteAction(RouteAction {
                        destination: Some(Dest::Single(Destination {
                            upstream: Some(ResourceRef {
                                name: "gcp".into(),
                                namespace: String::new(),
                            }),
                            function: function.into(),
                            ..Default::default()
                        })),
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        )
    }

    fn gateway() -> Resource {
        res(
            "gw",
            Spec::Gateway(GatewaySpec {
                bind_address: "127.0.0.1".into(),
                bind_port: 8080,
                ..Default::default()
            }),
        )
    }

    fn token_secret() -> Resource {
        res(
            "fn-token",
            Spec::Secret(SecretSpec {
                kind: Some(secret_spec::Kind::Opaque(OpaqueSecret {
                    data: [("token".to_string(), TOKEN.to_string())].into(),
                })),
            }),
        )
    }

    fn run(objects: Vec<Resource>) -> Translation {
        translate(&Input {
            objects: objects
                .into_iter()
                .map(|r| (Key::of(&r).unwrap(), Arc::new(r)))
                .collect(),
        })
    }

    fn decode<M: Message + Default>(t: &Translation, url: &str, name: &str) -> M {
        let r = t
            .snapshot
            .of_type(url)
            .and_then(|m| m.get(name))
            .unwrap_or_else(|| {
                panic!(
                    "{name} not in {url}: {:?}",
                    t.snapshot
                        .of_type(url)
                        .map(|m| m.keys().collect::<Vec<_>>())
                )
            });
        M::decode(r.value.as_slice()).unwrap()
    }

    fn report(t: &Translation, kind: Kind, name: &str) -> (State, String) {
        let r = &t.reports[&Key::new(kind, "default", name)];
        (r.state, r.reason.clone())
    }

    fn http_filter_names(t: &Translation) -> Vec<String> {
        let l: Listener = decode(t, xds::LISTENER, "gw_default");
        let Some(FilterConfig::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type
        else {
            panic!("no HCM")
        };
        let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        hcm.http_filters.iter().map(|f| f.name.clone()).collect()
    }

    #[test]
    fn a_route_to_a_function_goes_to_its_host_with_host_and_path_rewritten() {
        let t = run(vec![
            gcp(None),
            function("hello", "https://hello-abc-uc.a.run.app/base"),
            route_vs("/hello", "hello"),
            gateway(),
        ]);
        assert_eq!(
            report(&t, Kind::VirtualService, "vs").0,
            State::Accepted,
            "{t:?}"
        );
        let name = "gcp_default-gcf-https-hello-abc-uc.a.run.app-443";
        let c: Cluster = decode(&t, xds::CLUSTER, name);
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::LogicalDns as i32))
        );
        let Some(transport_socket::ConfigType::TypedConfig(tls)) =
            c.transport_socket.and_then(|t| t.config_type)
        else {
            panic!("no TLS")
        };
        let tls = UpstreamTlsContext::decode(tls.value.as_slice()).unwrap();
        assert_eq!(tls.sni, "hello-abc-uc.a.run.app");
        let rc: RouteConfiguration = decode(&t, xds::ROUTE, "gw_default-routes");
        let Some(EnvoyAction::Route(ra)) = &rc.virtual_hosts[0].routes[0].action else {
            panic!("not a route action")
        };
        assert_eq!(
            ra.cluster_specifier,
            Some(ClusterSpecifier::Cluster(name.into()))
        );
        assert_eq!(
            ra.host_rewrite_specifier,
            Some(HostRewriteSpecifier::HostRewriteLiteral(
                "hello-abc-uc.a.run.app".into()
            ))
        );
        let rw = ra.regex_rewrite.as_ref().unwrap();
        assert_eq!(rw.pattern.as_ref().unwrap().regex, "^(?:/hello)/*(.*)$");
        assert_eq!(rw.substitution, "/base/\\1");
        // No identity configured: no gcp_authn filter.
        assert!(!http_filter_names(&t).contains(&GCP_AUTHN.to_string()));
    }

    #[test]
    fn functions_on_one_host_share_a_cluster_and_plain_http_urls_have_no_tls() {
        let t = run(vec![
            gcp(None),
            function("a", "http://127.0.0.1:9000/a"),
            function("b", "http://127.0.0.1:9000/b"),
            function("c", "https://c.example"),
        ]);
        let names: Vec<&String> = t.snapshot.of_type(xds::CLUSTER).unwrap().keys().collect();
        assert_eq!(
            names,
            [
                "gcp_default",
                "gcp_default-gcf-http-127.0.0.1-9000",
                "gcp_default-gcf-https-c.example-443"
            ]
        );
        let c: Cluster = decode(&t, xds::CLUSTER, "gcp_default-gcf-http-127.0.0.1-9000");
        assert!(c.transport_socket.is_none());
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32))
        );
    }

    #[test]
    fn a_bad_url_rejects_the_function_and_the_route_names_it() {
        let t = run(vec![
            gcp(None),
            function("bad", "ftp://nope"),
            route_vs("/bad", "bad"),
            gateway(),
        ]);
        let (state, reason) = report(&t, Kind::Function, "bad");
        assert_eq!(state, State::Rejected);
        assert!(reason.contains("gcf.url"), "{reason}");
        let (state, reason) = report(&t, Kind::VirtualService, "vs");
        assert_eq!(state, State::Rejected);
        assert!(reason.contains("function default/bad: gcf.url"), "{reason}");
    }

    #[test]
    fn a_token_secret_adds_the_header_on_the_cluster_and_never_shows_in_reasons() {
        let auth = GcpFunctionAuth {
            token_secret_ref: Some(ResourceRef {
                name: "fn-token".into(),
                namespace: String::new(),
            }),
            ..Default::default()
        };
        let objects = vec![
            gcp(Some(auth.clone())),
            function("hello", "https://h.example"),
            route_vs("/", "hello"),
            gateway(),
        ];
        // Without the Secret the upstream is Rejected, naming the field and the Secret.
        let t = run(objects.clone());
        let (state, reason) = report(&t, Kind::Upstream, "gcp");
        assert_eq!(state, State::Rejected);
        assert!(
            reason.contains("gcp.functionAuth.tokenSecretRef: Secret default/fn-token not found"),
            "{reason}"
        );
        let mut with = objects.clone();
        with.push(token_secret());
        let t = run(with);
        assert_eq!(report(&t, Kind::Upstream, "gcp").0, State::Accepted);
        let c: Cluster = decode(&t, xds::CLUSTER, "gcp_default-gcf-https-h.example-443");
        let opts = HttpProtocolOptions::decode(
            c.typed_extension_protocol_options[HTTP_OPTIONS]
                .value
                .as_slice(),
        )
        .unwrap();
        let names: Vec<&str> = opts.http_filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "envoy.filters.http.header_mutation",
                "envoy.filters.http.upstream_codec"
            ]
        );
        let rc: RouteConfiguration = decode(&t, xds::ROUTE, "gw_default-routes");
        assert!(!format!("{rc:?}").contains(TOKEN), "token in a route");
        // A token that is also a gcp_authn config: refused, without the token in the reason.
        let mut both = auth;
        both.gcp_authn = true;
        let mut objects = objects;
        objects[0] = gcp(Some(both));
        objects.push(token_secret());
        let t = run(objects);
        let (state, reason) = report(&t, Kind::Upstream, "gcp");
        assert_eq!(state, State::Rejected);
        assert!(
            reason.contains("not both") && !reason.contains(TOKEN),
            "{reason}"
        );
    }

    #[test]
    fn gcp_authn_puts_the_filter_on_the_listener_and_the_audience_on_the_cluster() {
        let t = run(vec![
            gcp(Some(GcpFunctionAuth {
                gcp_authn: true,
                ..Default::default()
            })),
            function("hello", "https://hello-abc-uc.a.run.app"),
            route_vs("/", "hello"),
            gateway(),
        ]);
        assert_eq!(report(&t, Kind::VirtualService, "vs").0, State::Accepted);
        let filters = http_filter_names(&t);
        assert_eq!(
            filters.last().map(String::as_str),
            Some("envoy.filters.http.router")
        );
        assert!(filters.contains(&GCP_AUTHN.to_string()), "{filters:?}");
        let c: Cluster = decode(
            &t,
            xds::CLUSTER,
            "gcp_default-gcf-https-hello-abc-uc.a.run.app-443",
        );
        let audience = Audience::decode(
            c.metadata.unwrap().typed_filter_metadata[GCP_AUTHN]
                .value
                .as_slice(),
        )
        .unwrap();
        assert_eq!(audience.url, "https://hello-abc-uc.a.run.app");
        let _: Cluster = decode(&t, xds::CLUSTER, METADATA_CLUSTER);
    }

    #[test]
    fn path_rewrite_follows_the_route_matchers() {
        let rc = |matchers: Vec<Matcher>| Route {
            matchers,
            ..Default::default()
        };
        let prefix = |p: &str| Matcher {
            path: Some(Path::Prefix(p.into())),
            ..Default::default()
        };
        let r = rc(vec![prefix("/a/"), prefix("/a/b")]);
        let rw = path_rewrite(
            &RouteContext {
                namespace: "d",
                route: &r,
            },
            "",
        );
        assert_eq!(rw.pattern.unwrap().regex, "^(?:/a/b|/a)/*(.*)$");
        assert_eq!(rw.substitution, "/\\1");
        let r = rc(vec![Matcher {
            path: Some(Path::Exact("/x.y".into())),
            ..Default::default()
        }]);
        let rw = path_rewrite(
            &RouteContext {
                namespace: "d",
                route: &r,
            },
            "/fn",
        );
        assert_eq!(rw.pattern.unwrap().regex, "^.*$");
        assert_eq!(rw.substitution, "/fn");
        assert_eq!(escape("/a.b(c)"), "/a\\.b\\(c\\)");
    }

    #[test]
    fn urls_are_taken_apart() {
        let u = FunctionUrl::parse("https://hello-abc-uc.a.run.app").unwrap();
        assert_eq!(
            u,
            FunctionUrl {
                tls: true,
                host: "hello-abc-uc.a.run.app".into(),
                port: 443,
                path: String::new()
            }
        );
        assert_eq!(u.authority(), "hello-abc-uc.a.run.app");
        assert_eq!(u.audience(), "https://hello-abc-uc.a.run.app");
        let u = FunctionUrl::parse("http://127.0.0.1:8081/fn/x?y=1").unwrap();
        assert!(!u.tls);
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8081, "/fn/x")
        );
        assert_eq!(u.authority(), "127.0.0.1:8081");
        let u = FunctionUrl::parse("http://[::1]:9000/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        assert_eq!(u.authority(), "[::1]:9000");
        for bad in [
            "ftp://x",
            "https://",
            "https://h:99999",
            "https://u:p@h/",
            "https://h h/",
        ] {
            assert!(FunctionUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
