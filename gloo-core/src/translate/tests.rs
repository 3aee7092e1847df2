use std::sync::Arc;

use envoy_types::pb::envoy::config::{
    cluster::v3::{cluster::ClusterDiscoveryType, cluster::DiscoveryType, Cluster},
    endpoint::v3::ClusterLoadAssignment,
    route::v3::{
        route::Action as EA, route_action::ClusterSpecifier, route_match::PathSpecifier,
        RouteConfiguration,
    },
};
use prost::Message;
use proto::v1::{
    matcher::Path, resource::Spec, route::Action, route_action::Destination as Dest,
    static_upstream::Host, status::State, upstream_spec::UpstreamType, Destination, DirectResponse,
    EndpointsSpec, FunctionSpec, GatewaySpec, HeaderMatcher, KubeUpstream, Matcher, Metadata,
    MultiDestination, Resource, ResourceRef, Route, RouteAction, StaticUpstream, UpstreamGroupSpec,
    UpstreamSpec, VirtualServiceSpec, WeightedDestination,
};

use super::*;
use crate::xds;

fn res(name: &str, spec: Spec) -> Resource {
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

fn static_us(name: &str, addr: &str, port: u32) -> Resource {
    res(
        name,
        Spec::Upstream(UpstreamSpec {
            upstream_type: Some(UpstreamType::Static(StaticUpstream {
                hosts: vec![Host {
                    addr: addr.into(),
                    port,
                    sni: String::new(),
                }],
            })),
            ..Default::default()
        }),
    )
}

fn dest(upstream: &str) -> Destination {
    Destination {
        upstream: Some(ResourceRef {
            name: upstream.into(),
            namespace: String::new(),
        }),
        ..Default::default()
    }
}

fn route_to(name: &str, prefix: &str, d: Dest) -> Route {
    Route {
        name: name.into(),
        matchers: vec![Matcher {
            path: Some(Path::Prefix(prefix.into())),
            ..Default::default()
        }],
        action: Some(Action::RouteAction(RouteAction {
            destination: Some(d),
        })),
        options: None,
    }
}

fn vs(name: &str, domains: &[&str], routes: Vec<Route>) -> Resource {
    res(
        name,
        Spec::VirtualService(VirtualServiceSpec {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes,
            options: None,
        }),
    )
}

fn gateway(name: &str, port: u32) -> Resource {
    res(
        name,
        Spec::Gateway(GatewaySpec {
            bind_address: "127.0.0.1".into(),
            bind_port: port,
            ..Default::default()
        }),
    )
}

fn input(objects: Vec<Resource>) -> Input {
    Input {
        objects: objects
            .into_iter()
            .map(|r| (crate::resource::Key::of(&r).unwrap(), Arc::new(r)))
            .collect(),
    }
}

fn report<'a>(t: &'a Translation, kind: Kind, name: &str) -> &'a Report {
    &t.reports[&crate::resource::Key::new(kind, "default", name)]
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
fn static_and_kube_upstreams_become_clusters_with_endpoints() {
    let kube = res(
        "pets",
        Spec::Upstream(UpstreamSpec {
            upstream_type: Some(UpstreamType::Kube(KubeUpstream {
                service_name: "pets".into(),
                service_namespace: "default".into(),
                service_port: 8080,
                ..Default::default()
            })),
            ..Default::default()
        }),
    );
    let eps = res(
        "pets",
        Spec::Endpoints(EndpointsSpec {
            upstream: "pets".into(),
            endpoints: vec![proto::v1::Endpoint {
                address: "10.0.0.1".into(),
                port: 8080,
                ..Default::default()
            }],
        }),
    );
    let lonely = res(
        "lonely",
        Spec::Upstream(UpstreamSpec {
            upstream_type: Some(UpstreamType::Kube(KubeUpstream {
                service_name: "lonely".into(),
                service_port: 80,
                ..Default::default()
            })),
            ..Default::default()
        }),
    );
    let t = translate(&input(vec![
        static_us("ip", "127.0.0.1", 80),
        static_us("dns", "example.com", 443),
        kube,
        eps,
        lonely,
    ]));
    let ip: Cluster = decode(&t, xds::CLUSTER, "ip_default");
    assert_eq!(
        ip.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32))
    );
    let dns: Cluster = decode(&t, xds::CLUSTER, "dns_default");
    assert_eq!(
        dns.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32))
    );
    let pets: Cluster = decode(&t, xds::CLUSTER, "pets_default");
    assert_eq!(
        pets.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
    );
    let cla: ClusterLoadAssignment = decode(&t, xds::ENDPOINT, "pets_default");
    assert_eq!(cla.endpoints[0].lb_endpoints.len(), 1);
    // An EDS cluster with no Endpoints yet still gets an (empty) assignment.
    let empty: ClusterLoadAssignment = decode(&t, xds::ENDPOINT, "lonely_default");
    assert!(empty.endpoints[0].lb_endpoints.is_empty());
    assert!(
        t.reports.values().all(|r| r.state == State::Accepted),
        "{:?}",
        t.reports
    );
}

#[test]
fn missing_upstream_rejects_only_that_virtual_service() {
    let t = translate(&input(vec![
        static_us("good", "127.0.0.1", 80),
        vs(
            "ok",
            &["ok.example"],
            vec![route_to("a", "/", Dest::Single(dest("good")))],
        ),
        vs(
            "broken",
            &["broken.example"],
            vec![route_to("pets", "/pets", Dest::Single(dest("nope")))],
        ),
        gateway("gw", 8080),
    ]));
    let broken = report(&t, Kind::VirtualService, "broken");
    assert_eq!(broken.state, State::Rejected);
    assert!(
        broken.reason.contains("route \"pets\"") && broken.reason.contains("default/nope"),
        "{broken:?}"
    );
    assert_eq!(
        report(&t, Kind::VirtualService, "ok").state,
        State::Accepted
    );
    let rc: RouteConfiguration = decode(&t, xds::ROUTE, "gw_default-routes");
    let names: Vec<_> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, vec!["ok_default"]);
}

#[test]
fn missing_function_is_a_warning_and_answers_503_until_it_appears() {
    let mut d = dest("lambda");
    d.function = "hello".into();
    let objects = vec![
        static_us("lambda", "127.0.0.1", 80),
        vs("fn", &[], vec![route_to("call", "/hello", Dest::Single(d))]),
        gateway("gw", 8080),
    ];
    let t = translate(&input(objects.clone()));
    let r = report(&t, Kind::VirtualService, "fn");
    assert_eq!(r.state, State::Warning);
    assert!(r.reason.contains("function default/hello"), "{r:?}");
    let rc: RouteConfiguration = decode(&t, xds::ROUTE, "gw_default-routes");
    assert!(matches!(
        rc.virtual_hosts[0].routes[0].action,
        Some(EA::DirectResponse(ref d)) if d.status == 503
    ));

    let mut with_fn = objects;
    with_fn.push(res(
        "hello",
        Spec::Function(FunctionSpec {
            upstream: "lambda".into(),
            function: None,
        }),
    ));
    let t = translate(&input(with_fn));
    assert_eq!(
        report(&t, Kind::VirtualService, "fn").state,
        State::Accepted
    );
}

#[test]
fn matchers_and_weighted_destinations_translate() {
    let route = Route {
        name: "m".into(),
        matchers: vec![
            Matcher {
                path: Some(Path::Exact("/exact".into())),
                headers: vec![HeaderMatcher {
                    name: "X-Env".into(),
                    value: "prod".into(),
                    ..Default::default()
                }],
                methods: vec!["get".into(), "POST".into()],
                ..Default::default()
            },
            Matcher {
                path: Some(Path::Regex("^/r/[0-9]+$".into())),
                ..Default::default()
            },
        ],
        action: Some(Action::RouteAction(RouteAction {
            destination: Some(Dest::Multi(MultiDestination {
                destinations: vec![
                    WeightedDestination {
                        destination: Some(dest("a")),
                        weight: 3,
                    },
                    WeightedDestination {
                        destination: Some(dest("b")),
                        weight: 1,
                    },
                ],
            })),
        })),
        options: None,
    };
    let group = res(
        "g",
        Spec::UpstreamGroup(UpstreamGroupSpec {
            destinations: vec![WeightedDestination {
                destination: Some(dest("a")),
                weight: 1,
            }],
        }),
    );
    let to_group = route_to(
        "grp",
        "/g",
        Dest::UpstreamGroup(ResourceRef {
            name: "g".into(),
            namespace: String::new(),
        }),
    );
    let t = translate(&input(vec![
        static_us("a", "127.0.0.1", 1),
        static_us("b", "127.0.0.1", 2),
        group,
        vs("v", &[], vec![route, to_group]),
        gateway("gw", 8080),
    ]));
    assert_eq!(
        report(&t, Kind::VirtualService, "v").state,
        State::Accepted,
        "{:?}",
        t.reports
    );
    let rc: RouteConfiguration = decode(&t, xds::ROUTE, "gw_default-routes");
    let routes = &rc.virtual_hosts[0].routes;
    assert_eq!(routes.len(), 3, "one Envoy route per matcher");
    let m0 = routes[0].r#match.as_ref().unwrap();
    assert_eq!(
        m0.path_specifier,
        Some(PathSpecifier::Path("/exact".into()))
    );
    assert_eq!(m0.headers.len(), 2);
    assert_eq!(m0.headers[0].name, "x-env");
    assert_eq!(m0.headers[1].name, ":method");
    let Some(EA::Route(ra)) = &routes[1].action else {
        panic!()
    };
    let Some(ClusterSpecifier::WeightedClusters(w)) = &ra.cluster_specifier else {
        panic!()
    };
    let weights: Vec<_> = w
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.as_ref().unwrap().value))
        .collect();
    assert_eq!(weights, vec![("a_default", 3), ("b_default", 1)]);
}

#[test]
fn invalid_regex_and_domain_conflicts_are_rejected() {
    let bad = Route {
        name: "bad".into(),
        matchers: vec![Matcher {
            path: Some(Path::Regex("([".into())),
            ..Default::default()
        }],
        action: Some(Action::DirectResponse(DirectResponse {
            status: 200,
            body: String::new(),
        })),
        options: None,
    };
    let direct = |n: &str| Route {
        name: n.into(),
        matchers: vec![],
        action: Some(Action::DirectResponse(DirectResponse {
            status: 200,
            body: n.into(),
        })),
        options: None,
    };
    let t = translate(&input(vec![
        vs("a-first", &["same.example"], vec![direct("a")]),
        vs("b-second", &["same.example"], vec![direct("b")]),
        vs("regex", &["r.example"], vec![bad]),
        gateway("gw", 8080),
        gateway("gw2", 8080),
    ]));
    let r = report(&t, Kind::VirtualService, "regex");
    assert!(
        r.state == State::Rejected && r.reason.contains("invalid regex"),
        "{r:?}"
    );
    let r = report(&t, Kind::VirtualService, "b-second");
    assert!(
        r.state == State::Rejected && r.reason.contains("same.example"),
        "{r:?}"
    );
    assert_eq!(
        report(&t, Kind::VirtualService, "a-first").state,
        State::Accepted
    );
    let r = report(&t, Kind::Gateway, "gw2");
    assert!(
        r.state == State::Rejected && r.reason.contains("already used"),
        "{r:?}"
    );
}

#[test]
fn the_same_input_gives_byte_identical_resources() {
    let objects = vec![
        static_us("a", "127.0.0.1", 1),
        vs("v", &[], vec![route_to("r", "/", Dest::Single(dest("a")))]),
        gateway("gw", 8080),
    ];
    let one = translate(&input(objects.clone()));
    let two = translate(&input(objects));
    assert_eq!(one.snapshot, two.snapshot);
    for url in xds::TYPE_ORDER {
        assert_eq!(
            one.snapshot.type_version(url),
            two.snapshot.type_version(url)
        );
    }
}

/// Sets (uid, generation) as the store would: a new spec version gets a new generation.
fn stamped(mut r: Resource, uid: u64, generation: u64) -> Resource {
    let m = r.metadata.as_mut().unwrap();
    m.uid = uid;
    m.generation = generation;
    r
}

#[test]
fn a_cached_translator_agrees_with_a_fresh_one_through_changes() {
    let mut objects = vec![
        stamped(static_us("a", "127.0.0.1", 1), 1, 1),
        stamped(static_us("b", "127.0.0.1", 2), 2, 1),
        stamped(
            vs(
                "v",
                &["v.example"],
                vec![route_to("r", "/", Dest::Single(dest("a")))],
            ),
            3,
            1,
        ),
        stamped(
            vs(
                "w",
                &["w.example"],
                vec![route_to("r", "/", Dest::Single(dest("b")))],
            ),
            4,
            1,
        ),
        stamped(gateway("gw", 8080), 5, 1),
    ];
    let mut cached = Translator::new();
    let check = |cached: &mut Translator, objects: &[Resource]| {
        let inp = input(objects.to_vec());
        let got = cached.translate(&inp);
        let want = translate(&inp);
        assert_eq!(got.snapshot, want.snapshot);
        assert_eq!(got.reports, want.reports);
    };
    check(&mut cached, &objects);
    // Change an upstream's port: its cluster changes.
    objects[0] = stamped(static_us("a", "127.0.0.1", 9), 1, 2);
    check(&mut cached, &objects);
    // Delete upstream b: VirtualService w (not re-written) becomes Rejected.
    objects.remove(1);
    check(&mut cached, &objects);
    let t = cached.translate(&input(objects.clone()));
    assert_eq!(report(&t, Kind::VirtualService, "w").state, State::Rejected);
    // b comes back (a new object: a new uid): w is Accepted again without being touched.
    objects.push(stamped(static_us("b", "127.0.0.1", 2), 10, 1));
    check(&mut cached, &objects);
    let t = cached.translate(&input(objects.clone()));
    assert_eq!(report(&t, Kind::VirtualService, "w").state, State::Accepted);
    // Edit a VirtualService's domains.
    objects[1] = stamped(
        vs(
            "v",
            &["other.example"],
            vec![route_to("r", "/", Dest::Single(dest("a")))],
        ),
        3,
        2,
    );
    check(&mut cached, &objects);
}

#[test]
fn an_unchanged_pass_reuses_every_encoded_resource() {
    let objects = vec![
        stamped(static_us("a", "127.0.0.1", 1), 1, 1),
        stamped(
            vs("v", &[], vec![route_to("r", "/", Dest::Single(dest("a")))]),
            2,
            1,
        ),
        stamped(gateway("gw", 8080), 3, 1),
    ];
    let mut t = Translator::new();
    let one = t.translate(&input(objects.clone()));
    let two = t.translate(&input(objects));
    let cluster = |t: &Translation| t.snapshot.of_type(xds::CLUSTER).unwrap()["a_default"].clone();
    assert!(
        Arc::ptr_eq(&cluster(&one), &cluster(&two)),
        "the cluster was rebuilt"
    );
    assert_eq!(one.snapshot, two.snapshot);
}

#[test]
fn validation_judges_each_proposal_on_its_own() {
    use crate::store::{redb::RedbBackend, Store, Write};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(Box::new(RedbBackend::open(dir.path(), 100).unwrap())).unwrap();
    store
        .transact(|_| {
            Ok::<_, crate::store::StoreError>((
                vec![
                    Write::Put(Box::new(static_us("a", "127.0.0.1", 1))),
                    Write::Put(Box::new(gateway("gw", 8080))),
                ],
                (),
            ))
        })
        .unwrap();
    let v = validate::Validator::new();
    let to = |up: &str| vs("v", &[], vec![route_to("r", "/", Dest::Single(dest(up)))]);
    // Two proposals for the same object and generation, one bad and one good: each is judged
    // on its own content, whatever the validator remembers of the other.
    let bad = v.validate(&store.read(), &[Write::Put(Box::new(to("missing")))]);
    assert!(bad.unwrap_err().contains("default/missing"));
    let good = v.validate(&store.read(), &[Write::Put(Box::new(to("a")))]);
    assert!(good.is_ok(), "{good:?}");
    let bad_again = v.validate(&store.read(), &[Write::Put(Box::new(to("missing")))]);
    assert!(bad_again.is_err());
}

#[test]
fn a_discovery_warning_annotation_is_a_warning_on_the_upstream_until_removed() {
    let mut pets = static_us("pets", "127.0.0.1", 8080);
    let problem = "http://127.0.0.1:8080/openapi.json: the spec does not parse: JSON: EOF";
    let meta = pets.metadata.as_mut().unwrap();
    meta.annotations.insert(
        "discovery.solo.io/warning.discovery-openapi".into(),
        problem.into(),
    );
    // Other annotations, even under discovery.solo.io/, are not warnings.
    meta.annotations.insert(
        "discovery.solo.io/openapi-url".into(),
        "/openapi.json".into(),
    );
    let mut tr = Translator::new();
    let t = tr.translate(&input(vec![pets.clone()]));
    let r = report(&t, Kind::Upstream, "pets");
    assert_eq!(r.state, State::Warning);
    assert_eq!(r.reason, format!("discovery-openapi: {problem}"));
    // Still a working cluster: the warning is about discovery, not traffic.
    let c: Cluster = decode(&t, xds::CLUSTER, "pets_default");
    assert_eq!(c.name, "pets_default");

    // The same translator (its cache keyed by generation) sees the annotation go.
    pets.metadata
        .as_mut()
        .unwrap()
        .annotations
        .remove("discovery.solo.io/warning.discovery-openapi");
    let t = tr.translate(&input(vec![pets]));
    assert_eq!(report(&t, Kind::Upstream, "pets"), &Report::accepted());
}

#[test]
fn a_discovery_warning_does_not_hide_a_rejection() {
    let mut broken = static_us("broken", "127.0.0.1", 8443);
    if let Some(Spec::Upstream(u)) = broken.spec.as_mut() {
        u.tls = Some(Box::new(proto::v1::UpstreamTls {
            secret_ref: Some(ResourceRef {
                name: "missing".into(),
                namespace: String::new(),
            }),
            ..Default::default()
        }));
    }
    broken.metadata.as_mut().unwrap().annotations.insert(
        "discovery.solo.io/warning.discovery-openapi".into(),
        "no spec".into(),
    );
    let t = translate(&input(vec![broken]));
    let r = report(&t, Kind::Upstream, "broken");
    assert_eq!(r.state, State::Rejected, "{r:?}");
    assert!(r.reason.contains("discovery-openapi: no spec"), "{r:?}");
}

mod aws_lambda;
mod incremental;

#[test]
fn after_a_status_write_the_translator_holds_the_stores_copy_and_not_the_old_one() {
    let up = Arc::new(static_us("a", "10.0.0.1", 80));
    let changed_spec = Arc::new(static_us("a", "10.0.0.2", 80));
    let mut tr = Translator::new();
    tr.replace(&input(vec![(*up).clone()]));
    let key = Key::of(&up).unwrap();
    let held = tr.input().objects[&key].clone();
    // The store's copy after a status write: same content, new status.
    let mut with_status = (*held).clone();
    with_status.status = Some(proto::v1::Status {
        state: State::Accepted as i32,
        ..Default::default()
    });
    let with_status = Arc::new(with_status);
    let before = tr.current().snapshot.clone();
    tr.share([with_status.clone(), changed_spec.clone()]);
    assert!(Arc::ptr_eq(&tr.input().objects[&key], &with_status));
    // Only the old copy's last holders were the test and the translator: it is let go.
    assert_eq!(Arc::strong_count(&held), 1);
    // A copy whose content differs is left for a pass: nothing was translated.
    assert_eq!(tr.current().snapshot, before);
    tr.apply([(key.clone(), Some(changed_spec))]);
    assert_ne!(
        tr.current().snapshot,
        before,
        "the new address was translated"
    );
    let fresh = translate(tr.input());
    assert_eq!(tr.current().snapshot, fresh.snapshot);
}

fn scoped_gateway(name: &str, port: u32) -> Resource {
    let mut g = gateway(name, port);
    if let Some(Spec::Gateway(spec)) = &mut g.spec {
        spec.scoped_routes = Some(true);
    }
    g
}

#[test]
fn a_scoped_gateway_serves_each_virtual_service_as_its_own_route_configuration() {
    use envoy_types::pb::envoy::{
        config::{listener::v3::Listener, route::v3::ScopedRouteConfiguration},
        extensions::filters::network::http_connection_manager::v3::{
            http_connection_manager::RouteSpecifier, HttpConnectionManager,
        },
    };
    let mut objects = vec![
        static_us("a", "127.0.0.1", 1),
        vs(
            "v",
            &["v.example", "www.v.example"],
            vec![route_to("r", "/", Dest::Single(dest("a")))],
        ),
        vs(
            "w",
            &["w.example"],
            vec![route_to("r", "/w", Dest::Single(dest("a")))],
        ),
        scoped_gateway("gw", 8080),
    ];
    let t = translate(&input(objects.clone()));
    for k in ["v", "w"] {
        assert_eq!(report(&t, Kind::VirtualService, k).state, State::Accepted);
    }
    // The listener asks for scopes by host; there is no gateway-wide route configuration.
    let l: Listener = decode(&t, xds::LISTENER, "gw_default");
    let hcm = HttpConnectionManager::decode(match &l.filter_chains[0].filters[0].config_type {
        Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a)) => {
            a.value.as_slice()
        }
        other => panic!("{other:?}"),
    })
    .unwrap();
    let Some(RouteSpecifier::ScopedRoutes(sr)) = hcm.route_specifier else {
        panic!("{:?}", hcm.route_specifier)
    };
    assert_eq!(sr.name, "gw_default");
    assert!(!t
        .snapshot
        .of_type(xds::ROUTE)
        .unwrap()
        .contains_key("gw_default-routes"));
    // One route configuration per VirtualService, one scope per domain pointing at it.
    let rc: RouteConfiguration = decode(&t, xds::ROUTE, "v_default~routes");
    assert_eq!(rc.virtual_hosts.len(), 1);
    assert_eq!(rc.virtual_hosts[0].domains, ["v.example", "www.v.example"]);
    let scopes = t.snapshot.of_type(xds::SCOPED_ROUTE).unwrap();
    assert_eq!(
        scopes.keys().collect::<Vec<_>>(),
        [
            "v_default~v.example",
            "v_default~www.v.example",
            "w_default~w.example"
        ]
    );
    let s: ScopedRouteConfiguration = decode(&t, xds::SCOPED_ROUTE, "w_default~w.example");
    assert_eq!(s.route_configuration_name, "w_default~routes");
    assert_eq!(format!("{:?}", s.key), format!("{:?}", Some(
        envoy_types::pb::envoy::config::route::v3::scoped_route_configuration::Key {
            fragments: vec![envoy_types::pb::envoy::config::route::v3::scoped_route_configuration::key::Fragment {
                r#type: Some(envoy_types::pb::envoy::config::route::v3::scoped_route_configuration::key::fragment::Type::StringKey("w.example".into())),
            }],
        }
    )));
    assert_eq!(
        t.origins["w_default~routes"],
        [
            crate::resource::Key::new(Kind::Gateway, "default", "gw"),
            crate::resource::Key::new(Kind::VirtualService, "default", "w"),
        ]
    );

    // Editing w changes w's route configuration alone.
    let mut cached = Translator::new();
    cached.translate(&input(objects.clone()));
    objects[2] = vs(
        "w",
        &["w.example"],
        vec![route_to("r", "/other", Dest::Single(dest("a")))],
    );
    let before = t.snapshot.clone();
    let after = cached.translate(&input(objects.clone()));
    assert_eq!(after.snapshot, translate(&input(objects.clone())).snapshot);
    let changed: Vec<&String> = after
        .snapshot
        .of_type(xds::ROUTE)
        .unwrap()
        .iter()
        .filter(|(n, r)| before.of_type(xds::ROUTE).unwrap().get(*n) != Some(r))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(changed, ["w_default~routes"]);
    assert_eq!(
        after.snapshot.of_type(xds::SCOPED_ROUTE),
        before.of_type(xds::SCOPED_ROUTE)
    );

    // A domain a scope cannot match rejects that VirtualService, naming the domain and why.
    for (domain, why) in [
        ("*.x.example", "not \"*\""),
        ("x.example:8080", "without its port"),
        ("X.example", "lowercase"),
    ] {
        let mut bad = objects.clone();
        bad.push(vs(
            "x",
            &[domain],
            vec![route_to("r", "/", Dest::Single(dest("a")))],
        ));
        let t = translate(&input(bad));
        let r = report(&t, Kind::VirtualService, "x");
        assert_eq!(r.state, State::Rejected);
        assert!(
            r.reason.contains(&format!(
                "domain {domain:?} cannot be served by Gateway default/gw, which has scopedRoutes"
            )),
            "{r:?}"
        );
        assert!(r.reason.contains(why), "{r:?}");
        assert_eq!(report(&t, Kind::VirtualService, "v").state, State::Accepted);
    }

    // A second scoped Gateway is refused; the first keeps serving.
    objects.push(scoped_gateway("gw2", 8081));
    let t = translate(&input(objects));
    let r = report(&t, Kind::Gateway, "gw2");
    assert_eq!(r.state, State::Rejected);
    assert!(
        r.reason
            .contains("scopedRoutes: Gateway default/gw already uses scoped routes"),
        "{r:?}"
    );
    assert_eq!(report(&t, Kind::Gateway, "gw").state, State::Accepted);
    assert!(t
        .snapshot
        .of_type(xds::LISTENER)
        .unwrap()
        .contains_key("gw_default"));
}

/// The connection manager of a gateway's listener, and whether it takes scoped routes.
fn listener_hcm(
    t: &Translation,
    listener: &str,
) -> envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager{
    use envoy_types::pb::envoy::config::listener::v3::{filter::ConfigType, Listener};
    let l: Listener = decode(t, xds::LISTENER, listener);
    match &l.filter_chains[0].filters[0].config_type {
        Some(ConfigType::TypedConfig(a)) => prost::Message::decode(a.value.as_slice()).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn served_scoped(t: &Translation, listener: &str) -> bool {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
    let hcm = listener_hcm(t, listener);
    let scoped = matches!(hcm.route_specifier, Some(RouteSpecifier::ScopedRoutes(_)));
    // Scoped routes lowercase the host first, so hosts match in any case either way.
    assert_eq!(
        hcm.http_filters[0].name == "gloo.scoped_routes.lowercase_host",
        scoped,
        "{:?}",
        hcm.http_filters
    );
    let routes = t.snapshot.of_type(xds::ROUTE).unwrap();
    assert_eq!(
        routes.contains_key(&format!("{listener}-routes")),
        !scoped,
        "a gateway-wide route configuration exactly when not scoped"
    );
    scoped
}

#[test]
fn a_gateway_that_leaves_scoped_routes_unset_is_scoped_once_it_serves_many_exact_hosts() {
    let min = super::listeners::AUTO_SCOPED_MIN_VIRTUAL_SERVICES;
    let many = |n: usize| -> Vec<Resource> {
        (0..n)
            .map(|i| {
                vs(
                    &format!("v{i:03}"),
                    &[&format!("v{i}.example")],
                    vec![route_to("r", "/", Dest::Single(dest("a")))],
                )
            })
            .collect()
    };
    let with = |gw: Resource, vss: Vec<Resource>| {
        let mut objects = vec![static_us("a", "127.0.0.1", 1), gw];
        objects.extend(vss);
        objects
    };

    // One short of the threshold: one route configuration.
    let t = translate(&input(with(gateway("gw", 8080), many(min - 1))));
    assert!(!served_scoped(&t, "gw_default"));
    // At the threshold: scoped, a route configuration per VirtualService.
    let objects = with(gateway("gw", 8080), many(min));
    let t = translate(&input(objects.clone()));
    assert!(served_scoped(&t, "gw_default"));
    assert_eq!(t.snapshot.of_type(xds::SCOPED_ROUTE).unwrap().len(), min);
    assert!(t
        .snapshot
        .of_type(xds::ROUTE)
        .unwrap()
        .contains_key("v007_default~routes"));

    // A domain a scope cannot match turns it back, and that VirtualService is served (not
    // rejected, as it is when the Gateway asks for scoped routes).
    for domain in ["*.wild.example", "port.example:8080", "Upper.example"] {
        let mut bad = objects.clone();
        bad.push(vs(
            "odd",
            &[domain],
            vec![route_to("r", "/", Dest::Single(dest("a")))],
        ));
        let t = translate(&input(bad));
        assert!(!served_scoped(&t, "gw_default"), "{domain}");
        assert_eq!(
            report(&t, Kind::VirtualService, "odd").state,
            State::Accepted
        );
        assert!(t
            .snapshot
            .of_type(xds::SCOPED_ROUTE)
            .is_none_or(|s| s.is_empty()));
    }

    // `scopedRoutes: false` keeps one route configuration whatever the size.
    let mut pinned = gateway("gw", 8080);
    if let Some(Spec::Gateway(spec)) = &mut pinned.spec {
        spec.scoped_routes = Some(false);
    }
    let t = translate(&input(with(pinned, many(min))));
    assert!(!served_scoped(&t, "gw_default"));

    // Only one Gateway of a proxy can be scoped: the first that qualifies, and none when a
    // Gateway asks for it.
    let mut two = objects.clone();
    two.push(gateway("gw2", 8081));
    let t = translate(&input(two.clone()));
    assert!(served_scoped(&t, "gw_default"));
    assert!(!served_scoped(&t, "gw2_default"));
    assert_eq!(report(&t, Kind::Gateway, "gw2").state, State::Accepted);
    two.push(scoped_gateway("gw3", 8082));
    let t = translate(&input(two));
    assert!(!served_scoped(&t, "gw_default"));
    assert!(!served_scoped(&t, "gw2_default"));
    assert!(served_scoped(&t, "gw3_default"));

    // The translator that keeps state crosses the threshold both ways like a fresh one.
    let mut cached = Translator::new();
    let mut objects = with(gateway("gw", 8080), many(min - 1));
    cached.translate(&input(objects.clone()));
    for extra in [many(min), many(min - 1), many(min)] {
        objects.truncate(2);
        objects.extend(extra);
        let after = cached.translate(&input(objects.clone()));
        assert_eq!(after.snapshot, translate(&input(objects.clone())).snapshot);
    }
}

#[test]
fn the_fast_hasher_tells_apart_every_short_tail() {
    // Every string of 1 to 7 bytes over a few letters, and a NUL: each hashes differently
    // from the others (with one seed; a collision here would be the tail's fault).
    let letters = [b'a', b'b', b'\0', b'-'];
    let mut seen = std::collections::HashMap::new();
    let mut all: Vec<Vec<u8>> = vec![Vec::new()];
    for _ in 0..7 {
        all = all
            .iter()
            .flat_map(|s| {
                letters.iter().map(move |l| {
                    let mut t = s.clone();
                    t.push(*l);
                    t
                })
            })
            .collect();
        for s in &all {
            let mut h = FastState(7).build_hasher();
            h.write(s);
            if let Some(other) = seen.insert(h.finish(), s.clone()) {
                panic!("{s:?} and {other:?} hash alike");
            }
        }
    }
    assert_eq!(seen.len(), (1..=7).map(|n| 4usize.pow(n)).sum::<usize>());
}

#[test]
fn plain_load_assignments_are_written_as_prost_writes_them() {
    use envoy_types::pb::envoy::config::endpoint::v3::{LbEndpoint, LocalityLbEndpoints};
    let plain = [
        upstreams::load_assignment("us-1_default", [("10.0.0.1", 8080)]),
        upstreams::load_assignment("", [("", 0)]),
        upstreams::load_assignment("a", []),
        upstreams::load_assignment(
            &"long-name-".repeat(20),
            [("10.0.0.1", 1), ("host.example", 70000), ("::1", 443)],
        ),
        ClusterLoadAssignment {
            cluster_name: "two".into(),
            endpoints: vec![
                LocalityLbEndpoints::default(),
                upstreams::load_assignment("", [("10.1.1.1", 9)]).endpoints[0].clone(),
            ],
            ..Default::default()
        },
    ];
    for cla in &plain {
        assert_eq!(
            upstreams::encode_assignment(cla),
            cla.encode_to_vec(),
            "{cla:?}"
        );
    }
    // Anything else set: prost's bytes, the same message.
    let mut weighted = plain[0].clone();
    weighted.endpoints[0].priority = 1;
    let mut healthy = plain[3].clone();
    healthy.endpoints[0].lb_endpoints[1] = LbEndpoint {
        health_status: 1,
        ..healthy.endpoints[0].lb_endpoints[1].clone()
    };
    for cla in [weighted, healthy] {
        assert_eq!(upstreams::encode_assignment(&cla), cla.encode_to_vec());
    }
    // In a cluster: the assignment goes last, and the bytes read back as the same cluster.
    for cla in plain {
        let mut c = Cluster {
            name: "us-1_default".into(),
            connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: 2,
                nanos: 0,
            }),
            load_assignment: Some(cla),
            ..Default::default()
        };
        let bytes = upstreams::encode_cluster(&mut c);
        assert_eq!(Cluster::decode(&bytes[..]).unwrap(), c);
        assert_eq!(bytes.len(), c.encoded_len());
    }
}
