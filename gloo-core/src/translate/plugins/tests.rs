//! The traffic plugins' translation: bad options reject their object with a reason naming the
//! field; good ones give the Envoy configuration the e2e tests exercise; resources stay
//! byte-identical across passes.
use std::sync::Arc;

use envoy_types::pb::envoy::config::{
    cluster::v3::{cluster::LbPolicy, Cluster},
    listener::v3::Listener,
    route::v3::{route::Action, RouteConfiguration, VirtualHost},
};
use prost::Message;
use proto::v1::{resource::Spec, status::State, Kind, Metadata, Resource};
use serde_json::{json, Value};

use crate::{
    resource::Key,
    translate::{translate, Input, Translation},
    xds,
};

fn res(kind: Kind, name: &str, spec: Value) -> Resource {
    fn de<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).unwrap()
    }
    let spec = match kind {
        Kind::Upstream => Spec::Upstream(de(spec)),
        Kind::VirtualService => Spec::VirtualService(de(spec)),
        Kind::Gateway => Spec::Gateway(de(spec)),
        Kind::Secret => Spec::Secret(de(spec)),
        _ => unreachable!(),
    };
    Resource {
        metadata: Some(Metadata {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        status: None,
        spec: Some(spec),
    }
}

fn upstream(name: &str, extra: Value) -> Resource {
    let mut spec = json!({"static": {"hosts": [{"addr": "127.0.0.1", "port": 8080}]}});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    res(Kind::Upstream, name, spec)
}

fn vs_with(options: Value, vhost_options: Value) -> Resource {
    res(
        Kind::VirtualService,
        "vs",
        json!({"options": vhost_options, "routes": [{"name": "r", "routeAction": {"single": {"upstream": {"name": "u"}}}, "options": options}]}),
    )
}

fn gateway(extra: Value) -> Resource {
    let mut spec = json!({"bindAddress": "127.0.0.1", "bindPort": 8080});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    res(Kind::Gateway, "gw", spec)
}

fn run(objects: Vec<Resource>) -> Translation {
    translate(&Input {
        objects: objects
            .into_iter()
            .map(|r| (Key::of(&r).unwrap(), Arc::new(r)))
            .collect(),
    })
}

fn state(t: &Translation, kind: Kind, name: &str) -> (State, String) {
    let r = &t.reports[&Key::new(kind, "default", name)];
    (r.state, r.reason.clone())
}

fn rejected_for(t: &Translation, kind: Kind, name: &str, field: &str) {
    let (s, reason) = state(t, kind, name);
    assert_eq!(s, State::Rejected, "{reason}");
    assert!(reason.contains(field), "{reason:?} does not name {field}");
}

fn decode<M: Message + Default>(t: &Translation, url: &str, name: &str) -> M {
    let r = t
        .snapshot
        .of_type(url)
        .and_then(|m| m.get(name))
        .unwrap_or_else(|| panic!("{name} not in {url}"));
    M::decode(r.value.as_slice()).unwrap()
}

#[test]
fn bad_upstream_options_reject_the_upstream_naming_the_field() {
    for (extra, field) in [
        (json!({"healthChecks": [{}]}), "healthChecks[0]"),
        (
            json!({"healthChecks": [{"http": {"path": "healthz"}}]}),
            "healthChecks[0].http.path",
        ),
        (
            json!({"healthChecks": [{"http": {"path": "/h", "expectedStatuses": [42]}}]}),
            "healthChecks[0].http.expectedStatuses",
        ),
        (
            json!({"healthChecks": [{"tcp": {"sendHex": "zz"}}]}),
            "healthChecks[0].tcp.sendHex",
        ),
        (
            json!({"outlierDetection": {"maxEjectionPercent": 101}}),
            "outlierDetection.maxEjectionPercent",
        ),
        (
            json!({"loadBalancer": {"policy": "ROUND_ROBIN", "hashHeader": "x-user"}}),
            "loadBalancer.hashHeader",
        ),
    ] {
        let t = run(vec![upstream("u", extra.clone())]);
        rejected_for(&t, Kind::Upstream, "u", field);
    }
}

#[test]
fn bad_route_options_reject_the_virtual_service_naming_the_field() {
    for (options, vhost, field) in [
        (
            json!({"cors": {"allowMethods": ["GET"]}}),
            json!({}),
            "cors.allowOrigin",
        ),
        (json!({"faults": {}}), json!({}), "faults"),
        (
            json!({"faults": {"abort": {"httpStatus": 99, "percentage": 100}}}),
            json!({}),
            "faults.abort.httpStatus",
        ),
        (
            json!({"faults": {"delay": {"percentage": 100}}}),
            json!({}),
            "faults.delay.fixedDelay",
        ),
        (
            json!({"faults": {"delay": {"fixedDelay": "1s", "percentage": 120}}}),
            json!({}),
            "faults.delay.percentage",
        ),
        (
            json!({"rateLimit": {"maxTokens": 0}}),
            json!({}),
            "rateLimit.maxTokens",
        ),
        (
            json!({"rateLimit": {"maxTokens": 1, "fillInterval": "0.01s"}}),
            json!({}),
            "rateLimit.fillInterval",
        ),
        (
            json!({"shadowing": {"upstream": {"name": "nowhere"}, "percentage": 10}}),
            json!({}),
            "shadowing.upstream",
        ),
        (
            json!({}),
            json!({"rateLimit": {}}),
            "options.rateLimit.maxTokens",
        ),
        (json!({}), json!({"cors": {}}), "options.cors.allowOrigin"),
    ] {
        let t = run(vec![upstream("u", json!({})), vs_with(options, vhost)]);
        rejected_for(&t, Kind::VirtualService, "vs", field);
    }
}

#[test]
fn bad_gateway_options_reject_the_gateway_naming_the_field() {
    let cert = res(
        Kind::Secret,
        "cert",
        json!({"tls": {"certChain": "c", "privateKey": "k"}}),
    );
    let aws = res(Kind::Secret, "aws", json!({"aws": {"accessKeyId": "a"}}));
    for (extra, field) in [
        (json!({"tls": {}}), "tls.certificates"),
        (
            json!({"tls": {"certificates": [{"secretRef": {"name": "missing"}}]}}),
            "tls.certificates[0].secretRef",
        ),
        (
            json!({"tls": {"certificates": [{"secretRef": {"name": "aws"}}]}}),
            "tls.certificates[0].secretRef",
        ),
        (
            json!({"tls": {"certificates": [{"secretRef": {"name": "cert"}}, {"secretRef": {"name": "cert"}}]}}),
            "tls.certificates[1].serverNames",
        ),
        (
            json!({"tls": {"certificates": [{"serverNames": ["a"], "secretRef": {"name": "cert"}}, {"serverNames": ["a"], "secretRef": {"name": "cert"}}]}}),
            "tls.certificates[1].serverNames",
        ),
        (
            json!({"tls": {"certificates": [{"secretRef": {"name": "cert"}}], "clientCaSecretRef": {"name": "cert"}}}),
            "tls.clientCaSecretRef",
        ),
        (json!({"tcpUpstream": {"name": "missing"}}), "tcpUpstream"),
        (
            json!({"accessLog": {"path": "relative.log"}}),
            "accessLog.path",
        ),
    ] {
        let t = run(vec![
            cert.clone(),
            aws.clone(),
            upstream("u", json!({})),
            gateway(extra),
        ]);
        rejected_for(&t, Kind::Gateway, "gw", field);
        assert!(t
            .snapshot
            .of_type(xds::LISTENER)
            .is_none_or(|l| l.is_empty()));
    }
}

#[test]
fn upstream_options_become_cluster_settings_and_route_hash_policy() {
    let t = run(vec![
        upstream(
            "u",
            json!({"loadBalancer": {"policy": "MAGLEV", "hashHeader": "X-User"},
                   "circuitBreakers": {"maxConnections": 3},
                   "healthChecks": [{"tcp": {}}]}),
        ),
        vs_with(json!({}), json!({})),
        gateway(json!({})),
    ]);
    let c: Cluster = decode(&t, xds::CLUSTER, "u_default");
    assert_eq!(c.lb_policy, LbPolicy::Maglev as i32);
    assert_eq!(c.health_checks.len(), 1);
    let th = &c.circuit_breakers.unwrap().thresholds[0];
    assert_eq!(th.max_connections.map(|v| v.value), Some(3));
    assert_eq!(th.max_requests, None, "unset limits keep Envoy's defaults");
    let rc: RouteConfiguration = decode(&t, xds::ROUTE, "gw_default-routes");
    let Some(Action::Route(ra)) = &rc.virtual_hosts[0].routes[0].action else {
        panic!("a route action");
    };
    assert_eq!(ra.hash_policy.len(), 1);
}

#[test]
fn listeners_get_only_the_filters_their_routes_configure() {
    let plain = run(vec![
        upstream("u", json!({})),
        vs_with(json!({}), json!({})),
        gateway(json!({})),
    ]);
    let with = run(vec![
        upstream("u", json!({})),
        vs_with(
            json!({"faults": {"abort": {"httpStatus": 503, "percentage": 1}}}),
            json!({"rateLimit": {"maxTokens": 5}}),
        ),
        gateway(json!({})),
    ]);
    let filters = |t: &Translation| -> Vec<String> {
        let l: Listener = decode(t, xds::LISTENER, "gw_default");
        let any = l.filter_chains[0].filters[0].config_type.clone().unwrap();
        let envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any) =
            any
        else {
            panic!()
        };
        let hcm = envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        hcm.http_filters.into_iter().map(|f| f.name).collect()
    };
    assert_eq!(
        filters(&plain),
        ["envoy.filters.http.grpc_web", "envoy.filters.http.router"]
    );
    assert_eq!(
        filters(&with),
        [
            "envoy.filters.http.fault",
            "envoy.filters.http.grpc_web",
            "envoy.filters.http.local_ratelimit",
            "envoy.filters.http.router"
        ]
    );
}

#[test]
fn tls_gateways_serve_certificates_over_sds_and_stay_byte_identical() {
    let objects = vec![
        res(
            Kind::Secret,
            "a",
            json!({"tls": {"certChain": "c", "privateKey": "k"}}),
        ),
        res(Kind::Secret, "ca", json!({"tls": {"rootCa": "ca"}})),
        upstream("u", json!({})),
        vs_with(
            json!({"cors": {"allowOrigin": ["x"]}, "faults": {"abort": {"httpStatus": 503, "percentage": 1}},
                   "rateLimit": {"maxTokens": 5}}),
            json!({"cors": {"allowOrigin": ["y"]}, "rateLimit": {"maxTokens": 5}}),
        ),
        gateway(
            json!({"tls": {"certificates": [{"serverNames": ["a.test"], "secretRef": {"name": "a"}}],
                                "clientCaSecretRef": {"name": "ca"}},
                       "accessLog": {"format": "%RESPONSE_CODE%"}}),
        ),
    ];
    let one = run(objects.clone());
    assert_eq!(state(&one, Kind::Gateway, "gw").0, State::Accepted);
    let secrets = one.snapshot.of_type(xds::SECRET).unwrap();
    assert!(secrets.contains_key("a_default") && secrets.contains_key("ca_default-ca"));
    let l: Listener = decode(&one, xds::LISTENER, "gw_default");
    assert_eq!(
        l.filter_chains[0]
            .filter_chain_match
            .as_ref()
            .unwrap()
            .server_names,
        ["a.test"]
    );
    assert!(l.default_filter_chain.is_some());
    // Maps of per-filter configuration must not make resources differ between passes.
    for _ in 0..5 {
        let two = run(objects.clone());
        assert_eq!(one.snapshot, two.snapshot);
    }
    let vh: VirtualHost = {
        let rc: RouteConfiguration = decode(&one, xds::ROUTE, "gw_default-routes");
        rc.virtual_hosts[0].clone()
    };
    assert_eq!(vh.typed_per_filter_config.len(), 2);
    assert_eq!(vh.routes[0].typed_per_filter_config.len(), 3);
}

#[test]
fn per_route_statistics_only_where_asked_for() {
    let stat_prefixes = |route: Value, vhost: Value| -> Vec<String> {
        let t = run(vec![
            upstream("u", json!({})),
            vs_with(route, vhost),
            gateway(json!({})),
        ]);
        let rc: RouteConfiguration = decode(&t, xds::ROUTE, "gw_default-routes");
        rc.virtual_hosts[0]
            .routes
            .iter()
            .map(|r| r.stat_prefix.clone())
            .collect()
    };
    assert_eq!(stat_prefixes(json!({}), json!({})), [""], "off by default");
    assert_eq!(
        stat_prefixes(json!({"stats": true}), json!({})),
        ["default-vs-r"]
    );
    assert_eq!(
        stat_prefixes(json!({}), json!({"routeStats": true})),
        ["default-vs-r"]
    );
}
