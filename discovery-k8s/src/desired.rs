//! The pure half of discovery-k8s: the [`Index`] of Services and EndpointSlices in, the
//! desired set of Upstreams and Endpoints out. No I/O, so every rule here is unit-tested.
//!
//! ```text
//!  Service default/petstore  ports [http 8080→web]          EndpointSlices with label
//!        │                                                  kubernetes.io/service-name=petstore
//!        ▼                                                          │ ready endpoints,
//!  Upstream default/default-petstore-8080  (kube: petstore/default/8080, labels of the Service)
//!  Endpoints default/default-petstore-8080 (upstream = that name) ◄─┘ slice port named "http"
//! ```
use std::collections::{BTreeSet, HashMap};

use discovery_runtime::{names::object_name, selector::Selector, CommonArgs};
use k8s_openapi::api::core::v1::ServicePort;
use proto::v1::{
    resource::Spec, upstream_spec::UpstreamType, Endpoint, EndpointsSpec, KubeUpstream, Metadata,
    Resource, UpstreamSpec,
};

use crate::index::{Index, PortInfo, ServiceInfo, SliceInfo};

/// A Service with this annotation set to `true` is not discovered (and a discovered one goes
/// away when it is added).
pub const DISABLE_ANNOTATION: &str = "discovery.solo.io/disable";

/// The label Kubernetes puts on an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Which Services are discovered.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub namespaces: Vec<String>,
    pub exclude_namespaces: Vec<String>,
    pub selector: Selector,
}

impl Filter {
    pub fn from_args(args: &CommonArgs) -> anyhow::Result<Filter> {
        Ok(Filter {
            namespaces: args.namespaces.clone(),
            exclude_namespaces: args.exclude_namespaces.clone(),
            selector: args.label_selector()?,
        })
    }

    fn namespace_selected(&self, ns: &str) -> bool {
        (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == ns))
            && !self.exclude_namespaces.iter().any(|n| n == ns)
    }

    /// Whether Service `svc` of namespace `ns` is discovered: its namespace is watched and not
    /// excluded, its labels match the selector, and it has not opted out with
    /// [`DISABLE_ANNOTATION`].
    pub fn selects(&self, ns: &str, svc: &ServiceInfo) -> bool {
        if !self.namespace_selected(ns) || svc.disabled {
            return false;
        }
        if self.selector.is_empty() {
            return true;
        }
        let labels: HashMap<String, String> = svc.labels.iter().cloned().collect();
        self.selector.matches(&labels)
    }
}

/// `<namespace>-<service>-<port>`, made a valid object name (at most 63 characters, with a
/// hashed suffix when cut).
pub fn upstream_name(namespace: &str, service: &str, port: i32) -> String {
    object_name(&[namespace, service, &port.to_string()])
}

/// Whether a Service port speaks HTTP/2: its name starts with `grpc`, `h2` or `http2`
/// (Istio's and Gloo's convention), or its appProtocol says so (`kubernetes.io/h2c`, `grpc`,
/// `h2c`, `h2`, `http2`, `grpc-web`, ...).
pub fn wants_http2(port: &ServicePort) -> bool {
    let h2 = |s: &str| {
        let s = s.to_ascii_lowercase();
        let s = s.strip_prefix("kubernetes.io/").unwrap_or(&s);
        ["grpc", "h2", "http2"].iter().any(|p| s.starts_with(p))
    };
    port.name.as_deref().is_some_and(h2) || port.app_protocol.as_deref().is_some_and(h2)
}

/// The ready addresses of `port` of the Service the `slices` belong to. A slice port matches
/// by name (EndpointSlice ports carry the Service port's name, and the target port number, so
/// a `targetPort` mapping is followed); a Service with a single unnamed port matches the
/// slices' unnamed port. Not-ready endpoints and FQDN slices were left out by the index.
pub fn endpoints_for(port: &PortInfo, slices: &[&SliceInfo]) -> Vec<Endpoint> {
    let mut out: BTreeSet<(&str, u32, &str)> = BTreeSet::new();
    for slice in slices {
        let Some(target) = slice
            .ports
            .iter()
            .find(|(name, _)| *name == port.name)
            .and_then(|(_, number)| *number)
        else {
            continue;
        };
        for (address, hostname) in &slice.addresses {
            out.insert((address, target, hostname));
        }
    }
    out.into_iter()
        .map(|(address, port, hostname)| Endpoint {
            address: address.into(),
            port,
            hostname: hostname.into(),
            labels: Default::default(),
        })
        .collect()
}

/// The Upstream and Endpoints objects of Service `ns/name`, given its EndpointSlices.
pub fn service_objects(
    ns: &str,
    name: &str,
    svc: &ServiceInfo,
    slices: &[&SliceInfo],
    emit: &mut impl FnMut(Resource),
) {
    if name.is_empty() {
        return;
    }
    // A Service may list one port number twice (TCP and UDP); one Upstream per number.
    let mut seen = BTreeSet::new();
    for port in &svc.ports {
        if !port.tcp {
            continue;
        }
        let Ok(number) = u32::try_from(port.port) else {
            continue;
        };
        if !seen.insert(number) {
            continue;
        }
        let upstream = upstream_name(ns, name, port.port);
        emit(Resource {
            metadata: Some(Metadata {
                name: upstream.clone(),
                namespace: ns.into(),
                // The Service's labels, as they are: a user selects discovered Upstreams with
                // the labels they already put on their Services
                // (`glooctl get upstreams -l app=petstore`).
                labels: svc.labels.iter().cloned().collect(),
                ..Default::default()
            }),
            spec: Some(Spec::Upstream(UpstreamSpec {
                upstream_type: Some(UpstreamType::Kube(KubeUpstream {
                    service_name: name.into(),
                    service_namespace: ns.into(),
                    service_port: number,
                    selector: Default::default(),
                })),
                use_http2: port.http2,
                ..Default::default()
            })),
            ..Default::default()
        });
        emit(Resource {
            metadata: Some(Metadata {
                name: upstream.clone(),
                namespace: ns.into(),
                ..Default::default()
            }),
            spec: Some(Spec::Endpoints(EndpointsSpec {
                upstream,
                endpoints: endpoints_for(port, slices),
            })),
            ..Default::default()
        });
    }
}

/// The complete desired set, every selected Service's Upstreams and Endpoints, handed to
/// `emit` one object at a time (ordered by namespace and Service name), so the caller decides
/// what to keep.
pub fn desired_set(index: &Index, filter: &Filter, emit: &mut impl FnMut(Resource)) {
    let mut by_service: HashMap<(&str, &str), Vec<&SliceInfo>> = HashMap::new();
    for ((ns, _), slice) in index.slices.iter() {
        if let Some(svc) = &slice.service {
            by_service
                .entry((ns.as_str(), svc.as_str()))
                .or_default()
                .push(slice);
        }
    }
    for ((ns, name), svc) in index.services.iter() {
        if !filter.selects(ns, svc) {
            continue;
        }
        let slices = by_service
            .get(&(ns.as_str(), name.as_str()))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        service_objects(ns, name, svc, slices, emit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        api::{
            core::v1::{Service, ServiceSpec},
            discovery::v1::EndpointSlice,
            discovery::v1::{Endpoint as SliceEndpoint, EndpointConditions, EndpointPort},
        },
        apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
    };

    fn port(name: Option<&str>, number: i32, target: i32) -> ServicePort {
        ServicePort {
            name: name.map(Into::into),
            port: number,
            target_port: Some(IntOrString::Int(target)),
            ..Default::default()
        }
    }

    fn service(ns: &str, name: &str, ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some([("app".to_string(), name.to_string())].into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A slice of `svc` with `(address, ready)` endpoints on `(port name, port)`.
    fn slice(
        ns: &str,
        svc: &str,
        ports: &[(Option<&str>, i32)],
        eps: &[(&str, Option<bool>)],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{svc}-abcde")),
                namespace: Some(ns.into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: n.map(Into::into),
                        port: Some(*p),
                        ..Default::default()
                    })
                    .collect(),
            ),
            endpoints: Some(
                eps.iter()
                    .map(|(a, ready)| SliceEndpoint {
                        addresses: vec![a.to_string()],
                        conditions: Some(EndpointConditions {
                            ready: *ready,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    /// The desired set of these objects.
    fn set(services: &[&Service], slices: &[&EndpointSlice], filter: &Filter) -> Vec<Resource> {
        let index = Index::of(services.iter().copied(), slices.iter().copied());
        let mut out = Vec::new();
        desired_set(&index, filter, &mut |r| out.push(r));
        out
    }

    /// The endpoints of Service port `port`, from these slices.
    fn endpoints(port: &ServicePort, slices: &[&EndpointSlice]) -> Vec<Endpoint> {
        let svc = ServiceInfo::from(&service("default", "x", vec![port.clone()]));
        let slices: Vec<SliceInfo> = slices.iter().map(|s| SliceInfo::from(*s)).collect();
        endpoints_for(&svc.ports[0], &slices.iter().collect::<Vec<_>>())
    }

    fn addrs(eps: &[Endpoint]) -> Vec<String> {
        eps.iter()
            .map(|e| format!("{}:{}", e.address, e.port))
            .collect()
    }

    #[test]
    fn upstream_names_follow_the_gloo_convention() {
        assert_eq!(
            upstream_name("default", "petstore", 8080),
            "default-petstore-8080"
        );
        let long = upstream_name(
            "a-namespace-with-a-rather-long-name",
            "and-a-service-with-an-even-longer-name",
            8080,
        );
        assert_eq!(long.len(), 63, "{long}");
        assert_ne!(
            long,
            upstream_name(
                "a-namespace-with-a-rather-long-name",
                "and-a-service-with-an-even-longer-name",
                8081
            )
        );
    }

    #[test]
    fn http2_is_detected_from_port_name_or_app_protocol() {
        for name in ["grpc", "grpc-api", "h2c", "http2-web", "GRPC"] {
            assert!(wants_http2(&port(Some(name), 80, 80)), "{name}");
        }
        for name in ["http", "web", "metrics", "https"] {
            assert!(!wants_http2(&port(Some(name), 80, 80)), "{name}");
        }
        assert!(!wants_http2(&port(None, 80, 80)));
        for proto in ["kubernetes.io/h2c", "grpc", "h2c", "http2"] {
            let mut p = port(Some("web"), 80, 80);
            p.app_protocol = Some(proto.into());
            assert!(wants_http2(&p), "{proto}");
        }
        let mut p = port(Some("web"), 80, 80);
        p.app_protocol = Some("http".into());
        assert!(!wants_http2(&p));
    }

    #[test]
    fn endpoints_are_the_ready_addresses_on_the_target_port_matched_by_name() {
        let web = port(Some("web"), 80, 8080);
        let s = slice(
            "default",
            "pets",
            &[(Some("metrics"), 9090), (Some("web"), 8080)],
            &[
                ("10.0.0.2", Some(true)),
                ("10.0.0.1", None),
                ("10.0.0.3", Some(false)),
            ],
        );
        let s2 = slice(
            "default",
            "pets",
            &[(Some("web"), 8080)],
            &[("10.0.1.1", Some(true)), ("10.0.0.2", Some(true))],
        );
        assert_eq!(
            addrs(&endpoints(&web, &[&s, &s2])),
            ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.1.1:8080"],
            "not-ready left out, duplicates merged, sorted"
        );
        let metrics = port(Some("metrics"), 9000, 9090);
        assert_eq!(
            addrs(&endpoints(&metrics, &[&s])),
            ["10.0.0.1:9090", "10.0.0.2:9090"]
        );
        let other = port(Some("admin"), 9999, 9999);
        assert!(endpoints(&other, &[&s]).is_empty());
    }

    #[test]
    fn an_unnamed_single_port_matches_the_unnamed_slice_port() {
        let p = port(None, 80, 3000);
        let s = slice(
            "default",
            "pets",
            &[(None, 3000)],
            &[("10.0.0.1", Some(true))],
        );
        assert_eq!(addrs(&endpoints(&p, &[&s])), ["10.0.0.1:3000"]);
    }

    #[test]
    fn fqdn_slices_are_skipped() {
        let p = port(Some("web"), 80, 80);
        let mut s = slice(
            "default",
            "x",
            &[(Some("web"), 80)],
            &[("example.com", None)],
        );
        s.address_type = "FQDN".into();
        assert!(endpoints(&p, &[&s]).is_empty());
    }

    #[test]
    fn each_service_port_becomes_an_upstream_with_its_endpoints() {
        let svc = service(
            "shop",
            "pets",
            vec![port(Some("web"), 80, 8080), port(Some("grpc"), 9000, 9000)],
        );
        let s = slice(
            "shop",
            "pets",
            &[(Some("web"), 8080), (Some("grpc"), 9000)],
            &[("10.0.0.1", Some(true))],
        );
        let other = slice(
            "shop",
            "other",
            &[(Some("web"), 1)],
            &[("10.9.9.9", Some(true))],
        );
        let set = set(&[&svc], &[&s, &other], &Filter::default());
        assert_eq!(set.len(), 4);
        let Some(Spec::Upstream(u)) = &set[0].spec else {
            panic!("{:?}", set[0])
        };
        let meta = set[0].metadata.as_ref().unwrap();
        assert_eq!(meta.name, "shop-pets-80");
        assert_eq!(meta.namespace, "shop");
        assert_eq!(meta.labels["app"], "pets");
        assert!(!u.use_http2);
        let Some(UpstreamType::Kube(k)) = &u.upstream_type else {
            panic!()
        };
        assert_eq!(
            (
                k.service_name.as_str(),
                k.service_namespace.as_str(),
                k.service_port
            ),
            ("pets", "shop", 80)
        );
        let Some(Spec::Endpoints(e)) = &set[1].spec else {
            panic!()
        };
        assert_eq!(e.upstream, "shop-pets-80");
        assert_eq!(addrs(&e.endpoints), ["10.0.0.1:8080"]);
        let Some(Spec::Upstream(g)) = &set[2].spec else {
            panic!()
        };
        assert!(g.use_http2);
    }

    #[test]
    fn filters_select_namespaces_labels_and_honour_the_opt_out_annotation() {
        let a = service("a", "pets", vec![port(Some("web"), 80, 80)]);
        let b = service("b", "pets", vec![port(Some("web"), 80, 80)]);
        let mut off = service("a", "off", vec![port(Some("web"), 80, 80)]);
        off.metadata.annotations = Some([(DISABLE_ANNOTATION.to_string(), "true".into())].into());
        let names = |f: &Filter| -> Vec<String> {
            set(&[&a, &b, &off], &[], f)
                .iter()
                .filter(|r| matches!(r.spec, Some(Spec::Upstream(_))))
                .map(|r| r.metadata.as_ref().unwrap().name.clone())
                .collect()
        };
        assert_eq!(names(&Filter::default()), ["a-pets-80", "b-pets-80"]);
        let only_a = Filter {
            namespaces: vec!["a".into()],
            ..Default::default()
        };
        assert_eq!(names(&only_a), ["a-pets-80"]);
        let not_a = Filter {
            exclude_namespaces: vec!["a".into()],
            ..Default::default()
        };
        assert_eq!(names(&not_a), ["b-pets-80"]);
        let by_label = Filter {
            selector: "app=off".parse().unwrap(),
            ..Default::default()
        };
        assert!(names(&by_label).is_empty(), "opted out even when selected");
        let by_label = Filter {
            selector: "app=pets".parse().unwrap(),
            ..Default::default()
        };
        assert_eq!(names(&by_label), ["a-pets-80", "b-pets-80"]);
    }

    #[test]
    fn udp_ports_are_not_upstreams() {
        let mut dns = port(Some("dns"), 53, 53);
        dns.protocol = Some("UDP".into());
        let svc = service("kube-system", "dns", vec![dns]);
        assert!(set(&[&svc], &[], &Filter::default()).is_empty());
    }
}
