//! AWS Lambda: `aws` Upstreams become clusters to the regional Lambda endpoint, and a route
//! whose destination names a `lambda` Function invokes exactly that function and qualifier
//! through Envoy's stock `envoy.filters.http.aws_lambda` filter.
//!
//! ```text
//!  Upstream aws{region, secretRef, endpoint}
//!     └─► Cluster lambda.<region>.amazonaws.com:443 (TLS, SNI), or the endpoint override,
//!         with filter metadata com.amazonaws.lambda {egress_gateway: true} (the filter
//!         acts only on such clusters)
//!  Route → Destination{upstream, function} → Function lambda{arn, qualifier}
//!     └─► typed_per_filter_config["envoy.filters.http.aws_lambda"] = PerRouteConfig{
//!           arn[:qualifier], sync/async, passthrough/JSON, Host, credentials from the Secret}
//!  Listener: the aws_lambda filter, disabled by default, so only routes carrying the per-route
//!  config above invoke anything (a placeholder ARN at listener level is never used).
//! ```
//!
//! The signing credentials live in the per-route config (Envoy ≥ 1.30 takes inline
//! credentials); without a Secret, Envoy's own credential chain signs. gloo-core's
//! `/config_dump` shows resource names and versions only, never these contents.
use std::net::IpAddr;

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily},
                Cluster,
            },
            core::v3::{transport_socket, Metadata, TransportSocket},
            route::v3::Route as EnvoyRoute,
        },
        extensions::{
            filters::{
                http::aws_lambda::v3::{
                    config::InvocationMode, Config, Credentials, PerRouteConfig,
                },
                network::http_connection_manager::v3::{http_filter, HttpFilter},
            },
            transport_sockets::tls::v3::UpstreamTlsContext,
        },
    },
    google::protobuf::{value::Kind as ValueKind, Struct, Value},
};
use prost::Message;
use proto::v1::{
    function_spec, resource::Spec, secret_spec, upstream_spec::UpstreamType, AwsUpstream,
    Destination, FunctionSpec, Kind, LambdaFunction, UpstreamSpec,
};

use super::{Plugin, RouteContext, Stage};
use crate::translate::{upstreams::any, upstreams::load_assignment, Context};

pub const FILTER: &str = "envoy.filters.http.aws_lambda";
pub const METADATA: &str = "com.amazonaws.lambda";
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
/// The listener-level filter needs a well-formed ARN; it is disabled there and never invokes it.
const PLACEHOLDER_ARN: &str = "arn:aws:lambda:us-east-1:000000000000:function:gloo-unused";

pub struct AwsLambda;

/// Where an aws upstream's requests go.
#[derive(Debug, PartialEq, Eq)]
pub struct LambdaEndpoint {
    pub host: String,
    pub port: u32,
    pub tls: bool,
}

/// The regional host Lambda is called (and requests signed) as.
pub fn regional_host(region: &str) -> String {
    format!("lambda.{region}.amazonaws.com")
}

/// `aws.endpoint` (`https://host[:port]` or `http://host[:port]`), or the regional endpoint.
pub fn endpoint(aws: &AwsUpstream) -> Result<LambdaEndpoint, String> {
    if aws.endpoint.is_empty() {
        return Ok(LambdaEndpoint {
            host: regional_host(&aws.region),
            port: 443,
            tls: true,
        });
    }
    let e = aws.endpoint.trim_end_matches('/');
    let (tls, rest) = if let Some(r) = e.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = e.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!(
            "aws.endpoint: {:?} must start with https:// or http://",
            aws.endpoint
        ));
    };
    if rest.contains('/') {
        return Err(format!(
            "aws.endpoint: {:?} must be a scheme, host and optional port, without a path",
            aws.endpoint
        ));
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("aws.endpoint: {:?}: unclosed '['", aws.endpoint))?;
        let port = match after.strip_prefix(':') {
            Some(p) => parse_port(p, &aws.endpoint)?,
            None if after.is_empty() => default_port,
            None => return Err(format!("aws.endpoint: {:?}: bad port", aws.endpoint)),
        };
        (h.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), parse_port(p, &aws.endpoint)?),
            None => (rest.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(format!("aws.endpoint: {:?} has no host", aws.endpoint));
    }
    Ok(LambdaEndpoint { host, port, tls })
}

fn parse_port(p: &str, endpoint: &str) -> Result<u32, String> {
    match p.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n),
        _ => Err(format!("aws.endpoint: {endpoint:?}: bad port {p:?}")),
    }
}

/// The credentials of the upstream's Secret, or None when it names none (Envoy's own
/// credential chain signs then). The error names the Secret, never its contents.
fn credentials(
    ctx: &Context<'_>,
    namespace: &str,
    aws: &AwsUpstream,
) -> Result<Option<Credentials>, String> {
    let Some(r) = aws.secret_ref.as_ref().filter(|r| !r.name.is_empty()) else {
        return Ok(None);
    };
    let (ns, secret) = ctx.secret_ref("aws.secretRef", namespace, r)?;
    let Some(secret_spec::Kind::Aws(a)) = &secret.kind else {
        return Err(format!(
            "aws.secretRef: Secret {ns}/{} is not an aws secret",
            r.name
        ));
    };
    if a.access_key_id.is_empty() || a.secret_access_key.is_empty() {
        return Err(format!(
            "aws.secretRef: Secret {ns}/{} needs accessKeyId and secretAccessKey",
            r.name
        ));
    }
    Ok(Some(Credentials {
        access_key_id: a.access_key_id.clone(),
        secret_access_key: a.secret_access_key.clone(),
        session_token: a.session_token.clone(),
    }))
}

/// The ARN to invoke: the Function's ARN (or one built from the upstream's region and
/// account), with the qualifier appended unless the ARN already carries one.
pub fn invoke_arn(aws: &AwsUpstream, f: &LambdaFunction) -> Result<String, String> {
    let base = if !f.arn.is_empty() {
        f.arn.clone()
    } else if f.function_name.is_empty() {
        return Err("lambda: one of arn or functionName is required".into());
    } else if aws.account_id.is_empty() {
        return Err(format!(
            "lambda: function {:?} has no arn and its upstream has no accountId to build one",
            f.function_name
        ));
    } else {
        format!(
            "arn:aws:lambda:{}:{}:function:{}",
            aws.region, aws.account_id, f.function_name
        )
    };
    let parts = base.split(':').count();
    if !base.starts_with("arn:") || !(7..=8).contains(&parts) {
        return Err(format!(
            "lambda: {base:?} is not a function ARN (arn:<partition>:lambda:<region>:<account>:function:<name>[:<qualifier>])"
        ));
    }
    if parts == 7 && !f.qualifier.is_empty() {
        Ok(format!("{base}:{}", f.qualifier))
    } else {
        Ok(base)
    }
}

/// The `aws` spec of a destination's upstream, when it is one.
fn aws_upstream<'a>(
    ctx: &Context<'a>,
    namespace: &str,
    d: &Destination,
) -> Option<(String, &'a AwsUpstream)> {
    let up = d.upstream.as_ref()?;
    let ns = if up.namespace.is_empty() {
        namespace
    } else {
        &up.namespace
    };
    match ctx.get(Kind::Upstream, ns, &up.name)?.spec.as_ref()? {
        Spec::Upstream(UpstreamSpec {
            upstream_type: Some(UpstreamType::Aws(a)),
            ..
        }) => Some((ns.to_string(), a)),
        _ => None,
    }
}

fn struct_of(fields: &[(&str, ValueKind)]) -> Struct {
    Struct {
        fields: fields
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value {
                        kind: Some(v.clone()),
                    },
                )
            })
            .collect(),
    }
}

impl Plugin for AwsLambda {
    fn name(&self) -> &'static str {
        "aws_lambda"
    }

    fn upstream(
        &self,
        ctx: &Context<'_>,
        namespace: &str,
        upstream: &UpstreamSpec,
        cluster: &mut Cluster,
    ) -> Result<(), String> {
        let Some(UpstreamType::Aws(aws)) = &upstream.upstream_type else {
            return Ok(());
        };
        if aws.region.is_empty() {
            return Err("aws.region is required".into());
        }
        let ep = endpoint(aws)?;
        // Checked here so a missing Secret rejects the Upstream itself, not only its routes.
        credentials(ctx, namespace, aws)?;
        let kind = if ep.host.parse::<IpAddr>().is_ok() {
            DiscoveryType::Static
        } else {
            cluster.dns_lookup_family = DnsLookupFamily::V4Preferred as i32;
            DiscoveryType::LogicalDns
        };
        cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(kind as i32));
        cluster.load_assignment = Some(load_assignment(
            &cluster.name,
            [(ep.host.as_str(), ep.port)],
        ));
        cluster
            .metadata
            .get_or_insert_with(Metadata::default)
            .filter_metadata
            .insert(
                METADATA.into(),
                struct_of(&[("egress_gateway", ValueKind::BoolValue(true))]),
            );
        if ep.tls {
            // The user's `tls` (a CA to verify with, a client certificate) is kept; the SNI
            // defaults to the endpoint's host.
            let mut tls = match &cluster.transport_socket {
                Some(TransportSocket {
                    config_type: Some(transport_socket::ConfigType::TypedConfig(a)),
                    ..
                }) => UpstreamTlsContext::decode(a.value.as_slice())
                    .map_err(|e| format!("tls: {e}"))?,
                _ => UpstreamTlsContext::default(),
            };
            if tls.sni.is_empty() && ep.host.parse::<IpAddr>().is_err() {
                tls.sni = ep.host.clone();
            }
            cluster.transport_socket = Some(TransportSocket {
                name: TLS_SOCKET.into(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(any(&tls))),
            });
        } else if upstream.tls.is_none() {
            cluster.transport_socket = None;
        }
        Ok(())
    }

    fn destination(
        &self,
        ctx: &Context<'_>,
        route: &RouteContext<'_>,
        destination: &Destination,
        function: Option<&FunctionSpec>,
        out: &mut EnvoyRoute,
    ) -> Result<(), String> {
        let Some(FunctionSpec {
            function: Some(function_spec::Function::Lambda(f)),
            ..
        }) = function
        else {
            return Ok(());
        };
        let Some((ns, aws)) = aws_upstream(ctx, route.namespace, destination) else {
            return Err(format!(
                "function {:?} is a lambda function but its upstream is not an aws upstream",
                destination.function
            ));
        };
        let opts = route
            .route
            .options
            .as_ref()
            .and_then(|o| o.lambda.as_deref().copied())
            .unwrap_or_default();
        let config = Config {
            arn: invoke_arn(aws, f)
                .map_err(|e| format!("function {:?}: {e}", destination.function))?,
            payload_passthrough: !opts.wrap_as_json,
            invocation_mode: if opts.asynchronous {
                InvocationMode::Asynchronous
            } else {
                InvocationMode::Synchronous
            } as i32,
            host_rewrite: regional_host(&aws.region),
            credentials: credentials(ctx, &ns, aws)?,
            ..Default::default()
        };
        out.typed_per_filter_config.insert(
            FILTER.into(),
            any(&PerRouteConfig {
                invoke_config: Some(config),
            }),
        );
        Ok(())
    }

    fn http_filters(&self, routes: &[&EnvoyRoute]) -> Vec<(Stage, HttpFilter)> {
        if !routes
            .iter()
            .any(|r| r.typed_per_filter_config.contains_key(FILTER))
        {
            return Vec::new();
        }
        let config = Config {
            arn: PLACEHOLDER_ARN.into(),
            payload_passthrough: true,
            ..Default::default()
        };
        vec![(
            Stage::Function,
            HttpFilter {
                name: FILTER.into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(any(&config))),
                disabled: true,
                ..Default::default()
            },
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(region: &str, endpoint: &str) -> AwsUpstream {
        AwsUpstream {
            region: region.into(),
            account_id: "123456789012".into(),
            endpoint: endpoint.into(),
            ..Default::default()
        }
    }

    #[test]
    fn endpoint_defaults_to_the_regional_host_over_tls() {
        assert_eq!(
            endpoint(&aws("eu-west-1", "")).unwrap(),
            LambdaEndpoint {
                host: "lambda.eu-west-1.amazonaws.com".into(),
                port: 443,
                tls: true
            }
        );
    }

    #[test]
    fn endpoint_override_sets_scheme_host_and_port() {
        assert_eq!(
            endpoint(&aws("us-east-1", "http://127.0.0.1:5000/")).unwrap(),
            LambdaEndpoint {
                host: "127.0.0.1".into(),
                port: 5000,
                tls: false
            }
        );
        assert_eq!(
            endpoint(&aws("us-east-1", "https://lambda.internal")).unwrap(),
            LambdaEndpoint {
                host: "lambda.internal".into(),
                port: 443,
                tls: true
            }
        );
        assert_eq!(
            endpoint(&aws("us-east-1", "http://[::1]:81")).unwrap().host,
            "::1"
        );
        for bad in ["lambda.internal", "http://h:0", "https://h/x", "http://:80"] {
            let e = endpoint(&aws("us-east-1", bad)).unwrap_err();
            assert!(e.starts_with("aws.endpoint:"), "{bad}: {e}");
        }
    }

    #[test]
    fn invoke_arn_appends_the_qualifier_once() {
        let up = aws("us-east-1", "");
        let f = |arn: &str, name: &str, q: &str| LambdaFunction {
            function_name: name.into(),
            qualifier: q.into(),
            arn: arn.into(),
        };
        let base = "arn:aws:lambda:us-east-1:123456789012:function:hello";
        assert_eq!(invoke_arn(&up, &f(base, "hello", "")).unwrap(), base);
        assert_eq!(
            invoke_arn(&up, &f(base, "hello", "live")).unwrap(),
            format!("{base}:live")
        );
        assert_eq!(
            invoke_arn(&up, &f(&format!("{base}:3"), "hello", "3")).unwrap(),
            format!("{base}:3")
        );
        assert_eq!(
            invoke_arn(&up, &f("", "hello", "2")).unwrap(),
            format!("{base}:2")
        );
        assert!(invoke_arn(&up, &f("not-an-arn", "x", "")).is_err());
    }
}
