//! Steps 4 and 5: each Gateway becomes one Envoy listener whose HTTP connection manager takes
//! its routes from RDS (never inline, so a route edit never drains the listener), with the HTTP
//! filters the plugins ask for, router last; and one RouteConfiguration holding a virtual host
//! per VirtualService it serves. A Gateway with `scopedRoutes` instead gets a RouteConfiguration
//! per VirtualService and a ScopedRouteConfiguration per domain (SRDS) that picks it by the
//! request's host, so that Envoy rebuilds only the routes of the VirtualService that changed.
//! A Gateway that leaves `scopedRoutes` unset is served that way once it serves
//! [`AUTO_SCOPED_MIN_VIRTUAL_SERVICES`] VirtualServices whose domains all qualify.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use envoy_types::pb::envoy::{
    config::{
        core::v3::{address, socket_address, Address, SocketAddress},
        listener::v3::{filter, Filter, FilterChain, Listener},
        route::v3::{scoped_route_configuration, ScopedRouteConfiguration},
    },
    extensions::filters::{
        http::router::v3::Router,
        network::http_connection_manager::v3::{
            http_connection_manager::UpgradeConfig,
            http_connection_manager::{CodecType, RouteSpecifier, StripPortMode},
            http_filter, scoped_routes, HttpConnectionManager, HttpFilter, Rds, ScopedRds,
            ScopedRoutes,
        },
    },
};
use proto::v1::{resource::Spec, GatewaySpec, Kind};

use super::{
    names,
    plugins::{listener, Stage},
    routes::VirtualHostOut,
    upstreams::{ads, any},
    Context, FastMap, Reporter,
};
use crate::{
    resource::Key,
    xds::{self, XdsResource},
};

/// The VirtualServices a gateway serves, in key order.
fn served<'v>(
    gw_key: &Key,
    gw: &GatewaySpec,
    vhosts: &'v [Arc<VirtualHostOut>],
    reporter: &mut Reporter,
) -> Vec<&'v Arc<VirtualHostOut>> {
    if gw.virtual_services.is_empty() {
        return vhosts.iter().collect();
    }
    let mut out = Vec::new();
    for r in &gw.virtual_services {
        let ns: &str = if r.namespace.is_empty() {
            &gw_key.namespace
        } else {
            &r.namespace
        };
        match vhosts
            .iter()
            .find(|v| &*v.key.namespace == ns && *v.key.name == *r.name)
        {
            Some(v) => out.push(v),
            None => reporter.warn(
                gw_key,
                format!("virtual service {ns}/{} not found or not Accepted", r.name),
            ),
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out.dedup_by(|a, b| a.key == b.key);
    out
}

/// How many VirtualServices a Gateway that leaves `scopedRoutes` unset must serve before it is
/// served with scoped routes. Below it, Envoy rebuilds one RouteConfiguration of a few hundred
/// routes in about a millisecond, and the Gateway keeps the plainer form (one
/// RouteConfiguration, any domain); above it, rebuilding the whole table on every edit is what
/// delays a new route under churn.
pub const AUTO_SCOPED_MIN_VIRTUAL_SERVICES: usize = 100;

/// The filter that lowercases the request's host before a scope is picked (and clears the
/// route cache when it changed it): Envoy picks scopes by exact key, virtual hosts ignoring
/// case, and a gateway's routes must match the same hosts whichever way it is served.
const LOWERCASE_HOST: &str = "gloo.scoped_routes.lowercase_host";
const LOWERCASE_HOST_LUA: &str = "function envoy_on_request(handle)
  local headers = handle:headers()
  local host = headers:get(\":authority\")
  if host ~= nil then
    local lower = string.lower(host)
    if lower ~= host then
      headers:replace(\":authority\", lower)
    end
  end
end
";

fn lowercase_host() -> HttpFilter {
    use envoy_types::pb::envoy::{
        config::core::v3::{data_source, DataSource},
        extensions::filters::http::lua::v3::Lua,
    };
    HttpFilter {
        name: LOWERCASE_HOST.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(&Lua {
            default_source_code: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(
                    LOWERCASE_HOST_LUA.into(),
                )),
                ..Default::default()
            }),
            stat_prefix: "lowercase_host".into(),
            ..Default::default()
        }))),
        ..Default::default()
    }
}

/// The filters the served virtual hosts asked for (once each, by stage then plugin order),
/// router last; with scoped routes, the host is lowercased first.
fn http_filters(vhosts: &[&Arc<VirtualHostOut>], scoped: bool) -> Vec<HttpFilter> {
    let mut staged: Vec<&(Stage, usize, HttpFilter)> =
        vhosts.iter().flat_map(|v| v.filters.iter()).collect();
    staged.sort_by(|a, b| (a.0, a.1, &a.2.name).cmp(&(b.0, b.1, &b.2.name)));
    staged.dedup_by(|a, b| a.2.name == b.2.name);
    let mut filters: Vec<HttpFilter> = Vec::with_capacity(staged.len() + 2);
    if scoped {
        filters.push(lowercase_host());
    }
    filters.extend(staged.into_iter().map(|(_, _, f)| f.clone()));
    filters.push(HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(
            any(&Router::default()),
        )),
        ..Default::default()
    });
    filters
}

/// A RouteConfiguration built from already encoded virtual hosts: a message's repeated field
/// is the concatenation of its elements, so nothing is encoded again. Its version is a hash of
/// its name and the sum of its virtual hosts' digests (their order follows from their keys).
fn route_configuration(name: &str, vhosts: &[&Arc<VirtualHostOut>]) -> XdsResource {
    use prost::encoding::{encode_key, encode_varint, WireType};
    let mut value =
        Vec::with_capacity(name.len() + vhosts.iter().map(|v| v.encoded.len() + 8).sum::<usize>());
    if !name.is_empty() {
        prost::encoding::string::encode(1, &name.to_string(), &mut value);
    }
    for v in vhosts {
        encode_key(2, WireType::LengthDelimited, &mut value);
        encode_varint(v.encoded.len() as u64, &mut value);
        value.extend_from_slice(&v.encoded);
    }
    let version = xds::set_version(name, vhosts.iter().map(|v| v.digest));
    XdsResource {
        name: name.to_string(),
        version,
        type_url: xds::ROUTE,
        value,
    }
}

/// Why `domain` cannot be a scope's key, if it cannot: Envoy looks a scope up by the request's
/// host exactly (lowercased by [`lowercase_host`], the port left out), so only exact lowercase
/// names can match. It is worked out once for each virtual host, when its VirtualService is
/// translated (`VirtualHostOut::scope_keys_ok`), and again, domain by domain, only for a virtual
/// host that has a problem, to name it.
pub(crate) fn scope_key_problem(domain: &str) -> Option<&'static str> {
    if domain.is_empty() {
        return Some("it is empty");
    }
    let (mut star, mut colon, mut upper) = (false, false, false);
    for b in domain.bytes() {
        star |= b == b'*';
        colon |= b == b':';
        upper |= b.is_ascii_uppercase();
    }
    if star {
        Some("scoped routes match exact host names only, not \"*\"")
    } else if colon {
        Some("scoped routes match the host without its port")
    } else if upper {
        Some("scoped routes match the host in lowercase, so write it in lowercase")
    } else {
        None
    }
}

/// The scoped routes of a connection manager: the scope is the `:authority` (Host) header up to
/// its first `:`, and scopes and their route configurations come over ADS.
fn scoped_routes(name: &str) -> RouteSpecifier {
    use scoped_routes::scope_key_builder::{
        fragment_builder::{self, header_value_extractor::ExtractType, HeaderValueExtractor},
        FragmentBuilder,
    };
    RouteSpecifier::ScopedRoutes(ScopedRoutes {
        name: name.to_string(),
        scope_key_builder: Some(scoped_routes::ScopeKeyBuilder {
            fragments: vec![FragmentBuilder {
                r#type: Some(fragment_builder::Type::HeaderValueExtractor(
                    HeaderValueExtractor {
                        name: ":authority".into(),
                        element_separator: ":".into(),
                        extract_type: Some(ExtractType::Index(0)),
                    },
                )),
            }],
        }),
        rds_config_source: Some(ads()),
        config_specifier: Some(scoped_routes::ConfigSpecifier::ScopedRds(ScopedRds {
            scoped_rds_config_source: Some(ads()),
            ..Default::default()
        })),
    })
}

/// The scope that sends requests for `domain` to the route configuration `rc_name`.
fn scope(name: String, domain: &str, rc_name: &str) -> XdsResource {
    use scoped_route_configuration::{key, Key};
    let msg = ScopedRouteConfiguration {
        name: name.clone(),
        route_configuration_name: rc_name.to_string(),
        key: Some(Key {
            fragments: vec![key::Fragment {
                r#type: Some(key::fragment::Type::StringKey(domain.to_string())),
            }],
        }),
        ..Default::default()
    };
    XdsResource::new(name, &msg)
}

/// What the VirtualServices served with scoped routes became, kept between passes: a pass
/// builds again only those whose virtual host (or gateway) is not the one kept, and tells the
/// translator what to patch in its snapshot, so a pass after one edit costs one VirtualService's
/// resources, not all of them.
#[derive(Default)]
pub(crate) struct Scoped {
    pub by_vs: FastMap<Key, ScopedVs>,
    /// The Gateway served with scoped routes, last pass.
    pub gateway: Option<Key>,
    pass: u64,
}

impl Scoped {
    /// Builds again what `key` became, with virtual host `v` (same domains and filters as the
    /// one kept); returns the entry replaced, if `key` was served.
    pub fn replace(&mut self, key: &Key, v: &Arc<VirtualHostOut>) -> Option<ScopedVs> {
        let kept = self.by_vs.get_mut(key)?;
        let made = ScopedVs::new(v, &kept.origin[0], kept.seen);
        Some(std::mem::replace(kept, made))
    }
}

/// One VirtualService's route configuration and scopes.
pub(crate) struct ScopedVs {
    vhost: Arc<VirtualHostOut>,
    pub route_config: Arc<XdsResource>,
    pub scopes: Vec<Arc<XdsResource>>,
    /// The gateway and the VirtualService: the origin of each of the resources above.
    pub origin: Vec<Key>,
    /// The last pass that served it.
    seen: u64,
}

/// What changed in [`Scoped`] in one pass: the entries that went or were replaced, and the keys
/// of those that are new or replace one.
#[derive(Default)]
pub(crate) struct ScopedChanges {
    pub gone: Vec<ScopedVs>,
    pub made: Vec<Key>,
}

impl ScopedVs {
    fn new(v: &Arc<VirtualHostOut>, gw: &Key, seen: u64) -> ScopedVs {
        let name = names::scoped_route_config(&v.key.namespace, &v.key.name);
        let mut domains: Vec<&str> = v.domains.iter().map(String::as_str).collect();
        domains.sort_unstable();
        domains.dedup();
        let scopes = domains
            .into_iter()
            .map(|d| {
                let scope_name = names::scope(&v.key.namespace, &v.key.name, d);
                Arc::new(scope(scope_name, d, &name))
            })
            .collect();
        ScopedVs {
            vhost: v.clone(),
            route_config: Arc::new(route_configuration(&name, &[v])),
            scopes,
            origin: vec![gw.clone(), v.key.clone()],
            seen,
        }
    }
}

/// Listeners, route configurations, SDS secrets, and the objects each was made from, by
/// resource name; the route configurations and scopes of a gateway with scoped routes are in
/// [`Scoped`] instead, and what changed there.
pub(crate) type Gateways = (
    Vec<Arc<XdsResource>>,
    Vec<Arc<XdsResource>>,
    Vec<Arc<XdsResource>>,
    ScopedChanges,
    BTreeMap<String, Vec<Key>>,
);

pub(crate) fn translate(
    ctx: &Context<'_>,
    vhosts: &[Arc<VirtualHostOut>],
    reporter: &mut Reporter,
    kept: &mut Scoped,
) -> Gateways {
    let gateways: Vec<(&Key, &GatewaySpec)> = ctx
        .input
        .of_kind(Kind::Gateway)
        .filter_map(|(k, r)| match &r.spec {
            Some(Spec::Gateway(g)) => Some((k, g)),
            _ => None,
        })
        .collect();

    // Pass 1: address conflicts between gateways, domain conflicts within each gateway.
    let mut bound: HashMap<(String, u32), &Key> = HashMap::new();
    let mut rejected_vs: BTreeSet<Key> = BTreeSet::new();
    let mut usable = Vec::new();
    let mut scoped_by: Option<&Key> = None;
    // A Gateway that asks for scoped routes has them; one that leaves it unset only when none
    // asks.
    let auto_scoped = !gateways
        .iter()
        .any(|(_, g)| g.scoped_routes == Some(true) && g.tcp_upstream.is_none());
    for (key, gw) in gateways {
        let addr = if gw.bind_address.is_empty() {
            "0.0.0.0"
        } else {
            gw.bind_address.as_str()
        };
        let listener_name = names::listener(&key.namespace, &key.name);
        let extras = listener::tls(ctx, key, gw).and_then(|tls| {
            let tcp = listener::tcp_proxy(ctx, reporter, key, gw, &listener_name)?;
            Ok((tls, tcp, listener::access_logs(gw)?))
        });
        let (tls, tcp, access_log) = match extras {
            Ok(x) => x,
            Err(e) => {
                reporter.reject(key, e);
                continue;
            }
        };
        if let Some(other) = bound.get(&(addr.to_string(), gw.bind_port)) {
            reporter.reject(
                key,
                format!(
                    "bindPort: {addr}:{} is already used by Gateway {}/{}",
                    gw.bind_port, other.namespace, other.name
                ),
            );
            continue;
        }
        let asked = gw.scoped_routes == Some(true);
        if asked {
            let problem = match (scoped_by, &tcp) {
                (Some(other), _) => Some(format!(
                    "scopedRoutes: Gateway {}/{} already uses scoped routes, and Envoy gives \
                     every scoped listener of a proxy the same scopes: only one Gateway may",
                    other.namespace, other.name
                )),
                (None, Some(_)) => {
                    Some("scopedRoutes: a Gateway with tcpUpstream serves no routes".to_string())
                }
                (None, None) => None,
            };
            if let Some(p) = problem {
                reporter.reject(key, p);
                continue;
            }
        }
        bound.insert((addr.to_string(), gw.bind_port), key);
        let list = served(key, gw, vhosts, reporter);
        let scoped = asked
            || (gw.scoped_routes.is_none()
                && auto_scoped
                && scoped_by.is_none()
                && tcp.is_none()
                && list.len() >= AUTO_SCOPED_MIN_VIRTUAL_SERVICES
                && list.iter().all(|v| v.scope_keys_ok));
        if scoped {
            scoped_by = Some(key);
        }
        let mut claimed: FastMap<&str, &Key> = FastMap::default();
        claimed.reserve(list.len());
        for v in &list {
            for d in &v.domains {
                let checked = scoped && !v.scope_keys_ok;
                if let Some(why) = checked.then(|| scope_key_problem(d)).flatten() {
                    reporter.reject(
                        &v.key,
                        format!(
                            "domain {d:?} cannot be served by Gateway {}/{}, which has \
                             scopedRoutes: {why}",
                            key.namespace, key.name
                        ),
                    );
                    rejected_vs.insert(v.key.clone());
                    continue;
                }
                match claimed.get(d.as_str()) {
                    Some(owner) if **owner != v.key => {
                        reporter.reject(
                            &v.key,
                            format!(
                                "domain {d:?} is also served by VirtualService {}/{} on Gateway {}/{}",
                                owner.namespace, owner.name, key.namespace, key.name
                            ),
                        );
                        rejected_vs.insert(v.key.clone());
                    }
                    _ => {
                        claimed.insert(d, &v.key);
                    }
                }
            }
        }
        usable.push((
            key,
            gw,
            addr.to_string(),
            list,
            tls,
            tcp,
            access_log,
            scoped,
        ));
    }

    kept.gateway = scoped_by.cloned();

    // Pass 2: listeners and route configurations, without the VirtualServices rejected above.
    let mut listeners = Vec::new();
    let mut route_configs = Vec::new();
    let mut changes = ScopedChanges::default();
    kept.pass += 1;
    let pass = kept.pass;
    let mut origins = BTreeMap::new();
    let mut secrets: BTreeMap<String, XdsResource> = BTreeMap::new();
    for (key, gw, addr, list, tls, tcp, access_log, scoped) in usable {
        let list: Vec<_> = list
            .into_iter()
            .filter(|v| !rejected_vs.contains(&v.key))
            .collect();
        let listener_name = names::listener(&key.namespace, &key.name);
        let rc_name = names::route_config(&key.namespace, &key.name);
        let network_filter = match tcp {
            Some(tcp) => Filter {
                name: "envoy.filters.network.tcp_proxy".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&tcp))),
            },
            None => {
                let hcm = HttpConnectionManager {
                    stat_prefix: listener_name.clone(),
                    codec_type: CodecType::Auto as i32,
                    route_specifier: Some(if scoped {
                        scoped_routes(&listener_name)
                    } else {
                        RouteSpecifier::Rds(Rds {
                            config_source: Some(ads()),
                            route_config_name: rc_name.clone(),
                        })
                    }),
                    // The scope is picked by the host without its port: so are virtual hosts.
                    strip_port_mode: scoped.then_some(StripPortMode::StripAnyHostPort(true)),
                    http_filters: http_filters(&list, scoped),
                    access_log,
                    upgrade_configs: vec![UpgradeConfig {
                        upgrade_type: "websocket".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
                }
            }
        };
        let mut listener = Listener {
            name: listener_name.clone(),
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: addr,
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(gw.bind_port)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        if tls.chains.is_empty() {
            listener.filter_chains = vec![FilterChain {
                filters: vec![network_filter],
                ..Default::default()
            }];
        } else {
            listener.listener_filters = vec![listener::tls_inspector()];
            for (i, (server_names, socket)) in tls.chains.into_iter().enumerate() {
                let chain = FilterChain {
                    filter_chain_match: listener::chain_match(&server_names),
                    filters: vec![network_filter.clone()],
                    transport_socket: Some(socket),
                    name: format!("tls-{i}"),
                    ..Default::default()
                };
                // The first certificate also answers clients whose SNI matches no other.
                if i == 0 {
                    listener.default_filter_chain = Some(FilterChain {
                        filter_chain_match: None,
                        name: "tls-default".into(),
                        ..chain.clone()
                    });
                }
                if chain.filter_chain_match.is_some() {
                    listener.filter_chains.push(chain);
                }
            }
            for (name, skey) in tls.origins {
                origins.entry(name).or_insert_with(Vec::new).push(skey);
            }
            secrets.extend(tls.secrets);
        }
        origins.insert(listener_name.clone(), vec![key.clone()]);
        if scoped {
            for v in &list {
                match kept.by_vs.get_mut(&v.key) {
                    Some(k) if Arc::ptr_eq(&k.vhost, v) && k.origin[0] == *key => k.seen = pass,
                    Some(k) => {
                        changes
                            .gone
                            .push(std::mem::replace(k, ScopedVs::new(v, key, pass)));
                        changes.made.push(v.key.clone());
                    }
                    None => {
                        kept.by_vs
                            .insert(v.key.clone(), ScopedVs::new(v, key, pass));
                        changes.made.push(v.key.clone());
                    }
                }
            }
        } else {
            let mut rc_origins = vec![key.clone()];
            rc_origins.extend(list.iter().map(|v| v.key.clone()));
            origins.insert(rc_name.clone(), rc_origins);
            route_configs.push(Arc::new(route_configuration(&rc_name, &list)));
        }
        listeners.push(Arc::new(XdsResource::new(listener_name, &listener)));
    }
    // What no gateway served this pass has gone.
    changes
        .gone
        .extend(kept.by_vs.extract_if(|_, s| s.seen != pass).map(|(_, s)| s));
    let secrets = secrets.into_values().map(Arc::new).collect();
    (listeners, route_configs, secrets, changes, origins)
}
