//! The aws_lambda plugin through the whole translator: cluster shape, metadata, per-route
//! config, the listener's filter, and per-object reports.
use envoy_types::pb::envoy::{
    config::listener::v3::{filter, Listener},
    extensions::{
        filters::{
            http::aws_lambda::v3::{config::InvocationMode, PerRouteConfig},
            network::http_connection_manager::v3::HttpConnectionManager,
        },
        transport_sockets::tls::v3::UpstreamTlsContext,
    },
};
use envoy_types::pb::google::protobuf::value::Kind as VK;
use proto::v1::{
    function_spec, secret_spec, AwsSecret, AwsUpstream, LambdaFunction, LambdaOptions,
    RouteOptions, SecretSpec,
};

use super::*;
use crate::translate::plugins::aws_lambda::{FILTER, METADATA};

fn aws_us(name: &str, endpoint: &str, secret: Option<&str>) -> Resource {
    res(
        name,
        Spec::Upstream(UpstreamSpec {
            upstream_type: Some(UpstreamType::Aws(Box::new(AwsUpstream {
                region: "us-east-1".into(),
                account_id: "123456789012".into(),
                secret_ref: secret.map(|s| ResourceRef {
                    name: s.into(),
                    namespace: String::new(),
                }),
                endpoint: endpoint.into(),
                ..Default::default()
            }))),
            ..Default::default()
        }),
    )
}

fn aws_secret(name: &str) -> Resource {
    res(
        name,
        Spec::Secret(SecretSpec {
            kind: Some(secret_spec::Kind::Aws(AwsSecret {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "s3cr3t-key".into(),
                session_token: String::new(),
            })),
        }),
    )
}

fn lambda_fn(name: &str, upstream: &str, function: &str, qualifier: &str) -> Resource {
    res(
        name,
        Spec::Function(FunctionSpec {
            upstream: upstream.into(),
            function: Some(function_spec::Function::Lambda(LambdaFunction {
                function_name: function.into(),
                qualifier: qualifier.into(),
                arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{function}"),
            })),
        }),
    )
}

fn fn_route(name: &str, prefix: &str, upstream: &str, function: &str) -> Route {
    let mut d = dest(upstream);
    d.function = function.into();
    route_to(name, prefix, Dest::Single(d))
}

fn per_route(rc: &RouteConfiguration, i: usize) -> Option<PerRouteConfig> {
    let any = rc.virtual_hosts[0].routes[i]
        .typed_per_filter_config
        .get(FILTER)?;
    Some(PerRouteConfig::decode(any.value.as_slice()).unwrap())
}

fn hcm(t: &Translation, listener: &str) -> HttpConnectionManager {
    let l: Listener = decode(t, xds::LISTENER, listener);
    let Some(filter::ConfigType::TypedConfig(a)) = &l.filter_chains[0].filters[0].config_type
    else {
        panic!("no hcm");
    };
    HttpConnectionManager::decode(a.value.as_slice()).unwrap()
}

#[test]
fn aws_upstream_is_a_tls_cluster_to_the_regional_endpoint_with_lambda_metadata() {
    let t = translate(&input(vec![aws_us("aws", "", None)]));
    assert_eq!(report(&t, Kind::Upstream, "aws").state, State::Accepted);
    let c: Cluster = decode(&t, xds::CLUSTER, "aws_default");
    assert_eq!(
        c.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::LogicalDns as i32))
    );
    let cla = c.load_assignment.as_ref().unwrap();
    let ep = format!("{:?}", cla.endpoints[0].lb_endpoints[0]);
    assert!(
        ep.contains("lambda.us-east-1.amazonaws.com") && ep.contains("PortValue(443)"),
        "{ep}"
    );
    let md = &c.metadata.as_ref().unwrap().filter_metadata[METADATA];
    assert_eq!(md.fields["egress_gateway"].kind, Some(VK::BoolValue(true)));
    let ts = c.transport_socket.as_ref().expect("TLS");
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        a,
    )) = &ts.config_type
    else {
        panic!("no tls config")
    };
    let tls = UpstreamTlsContext::decode(a.value.as_slice()).unwrap();
    assert_eq!(tls.sni, "lambda.us-east-1.amazonaws.com");
}

#[test]
fn endpoint_override_makes_a_plain_http_static_cluster() {
    let t = translate(&input(vec![aws_us("moto", "http://127.0.0.1:5555", None)]));
    let c: Cluster = decode(&t, xds::CLUSTER, "moto_default");
    assert_eq!(
        c.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32))
    );
    assert!(c.transport_socket.is_none());
    let ep = format!(
        "{:?}",
        c.load_assignment.unwrap().endpoints[0].lb_endpoints[0]
    );
    assert!(
        ep.contains("127.0.0.1") && ep.contains("PortValue(5555)"),
        "{ep}"
    );
    assert!(c.metadata.unwrap().filter_metadata.contains_key(METADATA));

    let t = translate(&input(vec![aws_us("bad", "ftp://x", None)]));
    let r = report(&t, Kind::Upstream, "bad");
    assert_eq!(r.state, State::Rejected);
    assert!(r.reason.contains("aws.endpoint"), "{r:?}");
}

#[test]
fn missing_secret_rejects_the_upstream_naming_the_secret() {
    let t = translate(&input(vec![aws_us("aws", "", Some("creds"))]));
    let r = report(&t, Kind::Upstream, "aws");
    assert_eq!(r.state, State::Rejected);
    assert!(r.reason.contains("Secret default/creds not found"), "{r:?}");
    assert!(t.snapshot.of_type(xds::CLUSTER).unwrap().is_empty());
}

#[test]
fn route_to_a_lambda_function_invokes_that_function_and_qualifier() {
    let mut async_route = fn_route("async", "/async", "aws", "hello-live");
    async_route.options = Some(RouteOptions {
        lambda: Some(Box::new(LambdaOptions {
            asynchronous: true,
            wrap_as_json: true,
        })),
        ..Default::default()
    });
    let objects = vec![
        aws_secret("creds"),
        aws_us("aws", "http://127.0.0.1:5555", Some("creds")),
        lambda_fn("hello", "aws", "hello", ""),
        lambda_fn("hello-live", "aws", "hello", "live"),
        vs(
            "v",
            &[],
            vec![fn_route("sync", "/hello", "aws", "hello"), async_route],
        ),
        gateway("gw", 8080),
    ];
    let t = translate(&input(objects));
    assert_eq!(report(&t, Kind::VirtualService, "v").state, State::Accepted);
    let rc: RouteConfiguration = decode(&t, xds::ROUTE, "gw_default-routes");
    let sync = per_route(&rc, 0).unwrap().invoke_config.unwrap();
    assert_eq!(
        sync.arn,
        "arn:aws:lambda:us-east-1:123456789012:function:hello"
    );
    assert_eq!(sync.invocation_mode, InvocationMode::Synchronous as i32);
    assert!(sync.payload_passthrough);
    assert_eq!(sync.host_rewrite, "lambda.us-east-1.amazonaws.com");
    let creds = sync.credentials.unwrap();
    assert_eq!(creds.access_key_id, "AKIDEXAMPLE");
    assert_eq!(creds.secret_access_key, "s3cr3t-key");
    let live = per_route(&rc, 1).unwrap().invoke_config.unwrap();
    assert_eq!(
        live.arn,
        "arn:aws:lambda:us-east-1:123456789012:function:hello:live"
    );
    assert_eq!(live.invocation_mode, InvocationMode::Asynchronous as i32);
    assert!(!live.payload_passthrough);

    // The listener gets the filter, disabled unless a route enables it, before the router.
    let h = hcm(&t, "gw_default");
    let names: Vec<&str> = h.http_filters.iter().map(|f| f.name.as_str()).collect();
    let n = names.len();
    assert!(n >= 2, "{names:?}");
    assert_eq!(names[n - 2..], [FILTER, "envoy.filters.http.router"]);
    assert!(h.http_filters[n - 2].disabled);
}

#[test]
fn listeners_without_lambda_routes_have_no_lambda_filter() {
    let objects = vec![
        static_us("a", "127.0.0.1", 1),
        vs("v", &[], vec![route_to("r", "/", Dest::Single(dest("a")))]),
        gateway("gw", 8080),
    ];
    let t = translate(&input(objects));
    let h = hcm(&t, "gw_default");
    assert!(
        h.http_filters.iter().all(|f| f.name != FILTER),
        "{:?}",
        h.http_filters.iter().map(|f| &f.name).collect::<Vec<_>>()
    );
    let rc: RouteConfiguration = decode(&t, xds::ROUTE, "gw_default-routes");
    assert!(per_route(&rc, 0).is_none());
}

#[test]
fn route_to_a_missing_lambda_function_is_a_warning() {
    let objects = vec![
        aws_us("aws", "", None),
        vs("v", &[], vec![fn_route("r", "/", "aws", "nope")]),
        gateway("gw", 8080),
    ];
    let t = translate(&input(objects));
    let r = report(&t, Kind::VirtualService, "v");
    assert_eq!(r.state, State::Warning, "{r:?}");
    let rc: RouteConfiguration = decode(&t, xds::ROUTE, "gw_default-routes");
    assert!(per_route(&rc, 0).is_none());
}

#[test]
fn a_rotated_secret_reaches_the_cached_route() {
    let mut tr = Translator::new();
    let mut objects = vec![
        stamped(aws_secret("creds"), 1, 1),
        stamped(aws_us("aws", "", Some("creds")), 2, 1),
        stamped(lambda_fn("hello", "aws", "hello", ""), 3, 1),
        stamped(vs("v", &[], vec![fn_route("r", "/", "aws", "hello")]), 4, 1),
        stamped(gateway("gw", 8080), 5, 1),
    ];
    tr.translate(&input(objects.clone()));
    let mut rotated = aws_secret("creds");
    if let Some(Spec::Secret(SecretSpec {
        kind: Some(secret_spec::Kind::Aws(a)),
    })) = &mut rotated.spec
    {
        a.secret_access_key = "rotated".into();
    }
    objects[0] = stamped(rotated, 1, 2);
    let t = tr.translate(&input(objects));
    let rc: RouteConfiguration = decode(&t, xds::ROUTE, "gw_default-routes");
    let c = per_route(&rc, 0).unwrap().invoke_config.unwrap();
    assert_eq!(c.credentials.unwrap().secret_access_key, "rotated");
}
