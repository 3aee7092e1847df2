//! Step 1: Upstreams become clusters. `static` upstreams carry their hosts in the cluster
//! (STATIC for IPs, STRICT_DNS for names); `kube` upstreams use EDS, with one
//! ClusterLoadAssignment built from their Endpoints objects (empty when there are none yet, so
//! Envoy never waits on a cluster that warms forever).
use std::{net::IpAddr, sync::Arc};

use prost::Message;

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig},
                Cluster,
            },
            core::v3::{
                address, config_source::ConfigSourceSpecifier, data_source, socket_address,
                transport_socket, Address, AggregatedConfigSource, ApiVersion, ConfigSource,
                DataSource, Http2ProtocolOptions, SocketAddress, TransportSocket,
            },
            endpoint::v3::{lb_endpoint, ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints},
        },
        extensions::{
            transport_sockets::tls::v3::{
                common_tls_context::ValidationContextType, CertificateValidationContext,
                CommonTlsContext, TlsCertificate, UpstreamTlsContext,
            },
            upstreams::http::v3::{
                http_protocol_options::{
                    explicit_http_config::ProtocolConfig, ExplicitHttpConfig,
                    UpstreamProtocolOptions,
                },
                HttpProtocolOptions,
            },
        },
    },
    google::protobuf::{Any, Duration},
};
use proto::v1::{
    resource::Spec, secret_spec, upstream_spec::UpstreamType, Endpoint, Kind, Resource,
    UpstreamSpec,
};

use super::{names, plugins::Plugin, Context};
use crate::{
    resource::{Key, WARNING_ANNOTATION_PREFIX},
    xds::XdsResource,
};

pub fn any<M: prost::Message + prost::Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

pub fn duration(d: &pbjson_types::Duration) -> Duration {
    Duration {
        seconds: d.seconds,
        nanos: d.nanos,
    }
}

pub fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

fn socket(address: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn lb_endpoint(address: &str, port: u32) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(
            envoy_types::pb::envoy::config::endpoint::v3::Endpoint {
                address: Some(socket(address, port)),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

pub fn load_assignment<'a>(
    cluster: &str,
    endpoints: impl IntoIterator<Item = (&'a str, u32)>,
) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints
                .into_iter()
                .map(|(a, p)| lb_endpoint(a, p))
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The address and port of an endpoint that has nothing else set, as [`load_assignment`]
/// builds it. Every field is named, so a field a new Envoy API adds must be looked at here.
fn plain_endpoint(lb: &LbEndpoint) -> Option<(&str, u32)> {
    let LbEndpoint {
        health_status: 0,
        metadata: None,
        load_balancing_weight: None,
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)),
    } = lb
    else {
        return None;
    };
    let envoy_types::pb::envoy::config::endpoint::v3::Endpoint {
        address:
            Some(Address {
                address: Some(address::Address::SocketAddress(socket)),
            }),
        health_check_config: None,
        hostname,
        additional_addresses,
        observability_name,
    } = endpoint
    else {
        return None;
    };
    let SocketAddress {
        protocol: 0,
        address,
        resolver_name,
        ipv4_compat: false,
        network_namespace_filepath,
        port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
    } = socket
    else {
        return None;
    };
    let plain = hostname.is_empty()
        && additional_addresses.is_empty()
        && observability_name.is_empty()
        && resolver_name.is_empty()
        && network_namespace_filepath.is_empty();
    plain.then_some((address.as_str(), *port))
}

/// The localities of a load assignment whose endpoints are all plain (see [`plain_endpoint`]),
/// with nothing else set but the cluster name; none for any other.
fn plain_localities(cla: &ClusterLoadAssignment) -> Option<&[LocalityLbEndpoints]> {
    let ClusterLoadAssignment {
        cluster_name: _,
        endpoints,
        named_endpoints,
        policy: None,
    } = cla
    else {
        return None;
    };
    let plain = named_endpoints.is_empty()
        && endpoints.iter().all(|l| {
            let LocalityLbEndpoints {
                locality: None,
                metadata: None,
                lb_endpoints,
                load_balancing_weight: None,
                priority: 0,
                proximity: None,
                lb_config: None,
            } = l
            else {
                return false;
            };
            lb_endpoints.iter().all(|e| plain_endpoint(e).is_some())
        });
    plain.then_some(endpoints)
}

/// A length-delimited field's size: its key (one byte: every tag here is below 16), its length,
/// its bytes.
fn field_len(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// The sizes of a plain endpoint's nested messages, innermost first: SocketAddress (address,
/// when not empty, field 2; port_value, 3), Address (socket_address, 1), Endpoint (address, 1),
/// LbEndpoint (endpoint, 1).
fn endpoint_lens((address, port): (&str, u32)) -> [usize; 4] {
    let address = if address.is_empty() {
        0
    } else {
        field_len(address.len())
    };
    let socket = address + 1 + prost::encoding::encoded_len_varint(port as u64);
    let address = field_len(socket);
    let endpoint = field_len(address);
    [socket, address, endpoint, field_len(endpoint)]
}

/// A plain locality's size: its endpoints (lb_endpoints, field 2).
fn locality_len(l: &LocalityLbEndpoints) -> usize {
    l.lb_endpoints
        .iter()
        .filter_map(plain_endpoint)
        .map(|ep| field_len(endpoint_lens(ep)[3]))
        .sum()
}

/// A plain load assignment's size (see [`plain_localities`]): cluster_name (1), endpoints (2).
fn plain_assignment_len(name: &str, localities: &[LocalityLbEndpoints]) -> usize {
    let name = if name.is_empty() {
        0
    } else {
        field_len(name.len())
    };
    name + localities
        .iter()
        .map(|l| field_len(locality_len(l)))
        .sum::<usize>()
}

/// Writes a plain load assignment as prost would, field by field, with each nested length
/// summed once: prost computes a nested message's length again at each level above it, six
/// levels here, and that was a third of a cluster's encoding.
fn write_plain_assignment(name: &str, localities: &[LocalityLbEndpoints], buf: &mut Vec<u8>) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    let head = |tag: u32, len: usize, buf: &mut Vec<u8>| {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
    };
    if !name.is_empty() {
        head(1, name.len(), buf);
        buf.extend_from_slice(name.as_bytes());
    }
    for l in localities {
        head(2, locality_len(l), buf);
        for ep in l.lb_endpoints.iter().filter_map(plain_endpoint) {
            let [socket, address, endpoint, lb_endpoint] = endpoint_lens(ep);
            head(2, lb_endpoint, buf);
            head(1, endpoint, buf);
            head(1, address, buf);
            head(1, socket, buf);
            if !ep.0.is_empty() {
                head(2, ep.0.len(), buf);
                buf.extend_from_slice(ep.0.as_bytes());
            }
            encode_key(3, WireType::Varint, buf);
            encode_varint(ep.1 as u64, buf);
        }
    }
}

/// A load assignment's bytes: by hand when it is plain, else prost's.
pub fn encode_assignment(cla: &ClusterLoadAssignment) -> Vec<u8> {
    let Some(localities) = plain_localities(cla) else {
        return cla.encode_to_vec();
    };
    let mut buf = Vec::with_capacity(plain_assignment_len(&cla.cluster_name, localities));
    write_plain_assignment(&cla.cluster_name, localities, &mut buf);
    buf
}

/// A cluster's bytes: prost's, but a plain load assignment is written by hand, as field 33
/// after the others (a parser takes fields in any order). They are written into a buffer kept
/// from the last cluster and copied out at their size: that measures them without prost's
/// measuring pass over the cluster's hundred fields.
pub fn encode_cluster(c: &mut Cluster) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, WireType};
    use std::cell::RefCell;
    const LOAD_ASSIGNMENT: u32 = 33;
    thread_local! {
        static BYTES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    BYTES.with_borrow_mut(|buf| {
        buf.clear();
        let la = c.load_assignment.take();
        let plain = la
            .as_ref()
            .and_then(|l| Some((l.cluster_name.as_str(), plain_localities(l)?)));
        let written = match plain {
            Some((name, localities)) => {
                c.encode_raw(buf);
                let len = plain_assignment_len(name, localities);
                encode_key(LOAD_ASSIGNMENT, WireType::LengthDelimited, buf);
                encode_varint(len as u64, buf);
                write_plain_assignment(name, localities, buf);
                true
            }
            None => false,
        };
        c.load_assignment = la;
        if !written {
            c.encode_raw(buf);
        }
        let bytes = buf.to_vec();
        // A cluster with inline certificates can be large: no thread keeps such a buffer.
        if buf.capacity() > 1 << 16 {
            *buf = Vec::new();
        }
        bytes
    })
}

pub fn inline_body(s: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineString(s.to_string())),
        ..Default::default()
    }
}

/// The TLS transport socket for an upstream: SNI, and the CA (and client certificate) from
/// its Secret.
fn tls_socket(
    ctx: &Context<'_>,
    namespace: &str,
    spec: &UpstreamSpec,
    default_sni: &str,
) -> Result<Option<TransportSocket>, String> {
    let Some(tls) = &spec.tls else {
        return Ok(None);
    };
    let mut common = CommonTlsContext {
        alpn_protocols: tls.alpn_protocols.clone(),
        ..Default::default()
    };
    if let Some(r) = tls.secret_ref.as_ref().filter(|r| !r.name.is_empty()) {
        let (ns, secret) = ctx.secret_ref("tls.secretRef", namespace, r)?;
        let Some(secret_spec::Kind::Tls(t)) = &secret.kind else {
            return Err(format!(
                "tls.secretRef: Secret {ns}/{} is not a tls secret",
                r.name
            ));
        };
        if !t.root_ca.is_empty() {
            common.validation_context_type = Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(inline_body(&t.root_ca)),
                    ..Default::default()
                },
            ));
        }
        if !t.cert_chain.is_empty() && !t.private_key.is_empty() {
            common.tls_certificates = vec![TlsCertificate {
                certificate_chain: Some(inline_body(&t.cert_chain)),
                private_key: Some(inline_body(&t.private_key)),
                ..Default::default()
            }];
        }
    }
    let sni = if tls.sni.is_empty() {
        default_sni
    } else {
        &tls.sni
    };
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: sni.to_string(),
        ..Default::default()
    };
    Ok(Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
    }))
}

fn http2_options() -> Any {
    any(&HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
            },
        )),
        ..Default::default()
    })
}

/// The base cluster of an upstream, before plugins, written into `c` (a default cluster):
/// a Cluster is a few kilobytes, and is built where it stays rather than returned, or boxed
/// (an allocation that large is one of malloc's slow ones).
fn cluster(
    ctx: &Context<'_>,
    namespace: &str,
    name: &str,
    spec: &UpstreamSpec,
    endpoints: &[(&str, u32)],
    c: &mut Cluster,
) -> Result<Option<ClusterLoadAssignment>, String> {
    let cname = names::cluster(namespace, name);
    c.connect_timeout = Some(
        spec.connect_timeout
            .as_ref()
            .map(duration)
            .unwrap_or(Duration {
                seconds: 5,
                nanos: 0,
            }),
    );
    let mut cla = None;
    let mut default_sni = String::new();
    match &spec.upstream_type {
        Some(UpstreamType::Static(s)) => {
            let named = s.hosts.iter().find(|h| h.addr.parse::<IpAddr>().is_err());
            let kind = if named.is_none() {
                DiscoveryType::Static
            } else {
                c.dns_lookup_family = DnsLookupFamily::V4Preferred as i32;
                DiscoveryType::StrictDns
            };
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(kind as i32));
            let hosts = s.hosts.iter().map(|h| (h.addr.as_str(), h.port));
            c.load_assignment = Some(load_assignment(&cname, hosts));
            if let Some(h) = named {
                default_sni = h.addr.clone();
            }
            if let Some(h) = s.hosts.iter().find(|h| !h.sni.is_empty()) {
                default_sni = h.sni.clone();
            }
        }
        Some(UpstreamType::Kube(_)) => {
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
            c.eds_cluster_config = Some(EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: String::new(),
            });
            cla = Some(load_assignment(&cname, endpoints.iter().copied()));
        }
        // Cloud upstreams are shaped entirely by their plugins.
        Some(UpstreamType::Aws(_)) | Some(UpstreamType::Gcp(_)) => {}
        None => return Err("spec: one of static, kube, aws or gcp is required".into()),
    }
    c.transport_socket = tls_socket(ctx, namespace, spec, &default_sni)?;
    if spec.use_http2 {
        c.typed_extension_protocol_options.insert(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
            http2_options(),
        );
    }
    c.name = cname;
    Ok(cla)
}

/// One Upstream's translation: its cluster and, for EDS, its endpoint assignment, each
/// encoded once; or why it has none.
pub type UpstreamOut = Result<(Arc<XdsResource>, Option<Arc<XdsResource>>), String>;

/// The cluster and endpoint assignment of one Upstream, from its Endpoints objects.
pub fn translate_one(
    ctx: &Context<'_>,
    plugins: &[Box<dyn Plugin>],
    key: &Key,
    spec: &UpstreamSpec,
    endpoints: &[&Arc<Resource>],
) -> UpstreamOut {
    let mut addrs: Vec<(&str, u32)> = endpoints
        .iter()
        .filter_map(|r| match &r.spec {
            Some(Spec::Endpoints(e)) => Some(e.endpoints.iter()),
            _ => None,
        })
        .flatten()
        .map(|Endpoint { address, port, .. }| (address.as_str(), *port))
        .collect();
    addrs.sort();
    addrs.dedup();
    let mut c = Cluster::default();
    let cla = cluster(ctx, &key.namespace, &key.name, spec, &addrs, &mut c)?;
    for p in plugins {
        p.upstream(ctx, &key.namespace, spec, &mut c)
            .map_err(|e| format!("{}: {e}", p.name()))?;
    }
    let value = encode_cluster(&mut c);
    Ok((
        Arc::new(XdsResource::encoded::<Cluster>(
            std::mem::take(&mut c.name),
            value,
        )),
        cla.map(|cla| {
            let value = encode_assignment(&cla);
            Arc::new(XdsResource::encoded::<ClusterLoadAssignment>(
                cla.cluster_name,
                value,
            ))
        }),
    ))
}

/// Problems discovery services found with the upstream (say, the spec it serves does not
/// parse), from their `discovery.solo.io/warning.<service>` annotations: one Warning each,
/// naming the service, in the order of the services' names. An empty annotation is no warning.
pub fn discovery_warnings(r: &Resource) -> Vec<String> {
    let Some(m) = &r.metadata else {
        return Vec::new();
    };
    let mut found: Vec<(&str, &str)> = m
        .annotations
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(WARNING_ANNOTATION_PREFIX)?, v.as_str())))
        .filter(|(_, v)| !v.trim().is_empty())
        .collect();
    found.sort_unstable();
    found
        .into_iter()
        .map(|(service, problem)| format!("{service}: {problem}"))
        .collect()
}

/// The warning of an Endpoints object or a Function whose upstream does not exist.
pub fn orphan_warning(ctx: &Context<'_>, key: &Key, r: &Resource) -> Option<String> {
    let upstream = match &r.spec {
        Some(Spec::Endpoints(e)) => &e.upstream,
        Some(Spec::Function(f)) => &f.upstream,
        _ => return None,
    };
    ctx.get(Kind::Upstream, &key.namespace, upstream)
        .is_none()
        .then(|| format!("upstream {}/{upstream} not found", key.namespace))
}
