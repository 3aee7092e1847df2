//! The xDS server against a real Envoy, over both state-of-the-world and delta ADS: Envoy gets a
//! listener whose routes come from RDS and an EDS cluster, serves traffic with them, follows a
//! route change, and NACKs a route it cannot accept while still serving the previous one.
//!
//! The Envoy binary is `$GLOO_ENVOY_BIN` (set by scripts/test.sh), else the one the project's
//! setup installs under `.venv`.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig},
                Cluster,
            },
            core::v3::{
                address, config_source::ConfigSourceSpecifier, data_source,
                socket_address::PortSpecifier, Address, AggregatedConfigSource, ApiVersion,
                ConfigSource, DataSource, SocketAddress,
            },
            endpoint::v3::{
                lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint,
                LocalityLbEndpoints,
            },
            listener::v3::{filter, Filter, FilterChain, Listener},
            route::v3::{
                route::Action, route_match::PathSpecifier, DirectResponseAction, Route,
                RouteConfiguration, RouteMatch, VirtualHost,
            },
        },
        extensions::filters::{
            http::router::v3::Router,
            network::http_connection_manager::v3::{
                http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager,
                HttpFilter, Rds,
            },
        },
        r#type::matcher::v3::RegexMatcher,
    },
    google::protobuf::Duration as PbDuration,
};
use envoy_types::util::pack_any;
use gloo_core::xds::{
    self,
    nodes::{NodeRegistry, Protocol},
    Nack, Snapshot, SnapshotPublisher, XdsMetrics, XdsResource, CLUSTER, ENDPOINT, LISTENER, ROUTE,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

const NODE: &str = "envoy-under-test";
const ROUTES: &str = "routes";
const BACKEND: &str = "backend";
const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_follows_routes_and_nacks_bad_ones_over_sotw() {
    follows_routes_and_nacks_bad_ones(Protocol::Sotw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_follows_routes_and_nacks_bad_ones_over_delta() {
    follows_routes_and_nacks_bad_ones(Protocol::Delta).await;
}

async fn follows_routes_and_nacks_bad_ones(protocol: Protocol) {
    let Some(bin) = envoy_bin() else {
        eprintln!("SKIPPED: no Envoy binary (set GLOO_ENVOY_BIN or run scripts/setup.sh)");
        return;
    };
    let Ads {
        mut publisher,
        nodes,
        mut nacks,
        shutdown,
        server,
        port: ads_port,
    } = Ads::start().await;
    let listener_port = free_port();
    let backend_port = free_port();
    publisher.publish(snapshot(
        listener_port,
        backend_port,
        route_to_body("hello"),
    ));

    let mut envoy = Envoy::start(&bin, protocol, ads_port);

    // 1. Traffic flows with routes from RDS, and the EDS cluster is warm.
    wait_for_body(listener_port, "hello", &envoy).await;
    let clusters = envoy.admin("/clusters").await;
    assert!(
        clusters.contains(&format!("{BACKEND}::127.0.0.1:{backend_port}")),
        "EDS endpoints reached Envoy: {clusters}"
    );
    let first = all_acked(&nodes, protocol, &envoy).await;

    // 2. A route change converges, without touching the listener.
    publisher.publish(snapshot(
        listener_port,
        backend_port,
        route_to_body("hello v2"),
    ));
    wait_for_body(listener_port, "hello v2", &envoy).await;
    let second = all_acked(&nodes, protocol, &envoy).await;
    assert_eq!(
        second[LISTENER]["version_sent"],
        first[LISTENER]["version_sent"]
    );
    assert_ne!(second[ROUTE]["version_sent"], first[ROUTE]["version_sent"]);
    let good_routes = second[ROUTE]["version_acked"].clone();

    // 3. A route Envoy refuses (a regex over RE2's program size limit) is NACKed, reported with
    //    the route configuration's name, not resent, and the previous routes keep serving.
    publisher.publish(snapshot(
        listener_port,
        backend_port,
        route_with_huge_regex(),
    ));
    let nack = next_nack(&mut nacks).await;
    eprintln!("{protocol:?} NACK: {nack:?}");
    assert_eq!(nack.node, NODE);
    assert_eq!(nack.type_url, ROUTE);
    assert_eq!(nack.resource_names, [ROUTES], "{nack:?}");
    assert!(!nack.message.is_empty());
    for _ in 0..5 {
        assert_eq!(get(listener_port).await, Some((200, "hello v2".into())));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let third = stream_status(&nodes, protocol);
    assert_eq!(third[ROUTE]["nacked"], true, "{third:#?}");
    assert_eq!(third[ROUTE]["version_acked"], good_routes);
    assert_eq!(third[ROUTE]["last_nack"]["version"], nack.version.as_str());
    assert!(
        nacks.try_recv().is_err(),
        "the refused version was sent only once"
    );
    assert_eq!(nodes.metrics().nacks(ROUTE), 1);

    // 4. Fixing the route clears the NACK; the cluster replaced at the same time leaves Envoy
    //    once the new routes are in (make-before-break), and its replacement is warm.
    publisher.publish(snapshot_with_cluster(
        "backend2",
        listener_port,
        backend_port,
        route_to_body("hello v3"),
    ));
    wait_for_body(listener_port, "hello v3", &envoy).await;
    wait_until("the NACK to clear", &envoy, || {
        let nodes = nodes.clone();
        async move { nodes.outstanding_nacks().is_empty().then_some(()) }
    })
    .await;
    wait_until("the old cluster to go", &envoy, || async {
        let clusters = envoy.admin("/clusters").await;
        let replaced = clusters.contains(&format!("backend2::127.0.0.1:{backend_port}"))
            && !clusters.contains(&format!("{BACKEND}::"));
        replaced.then_some(())
    })
    .await;
    let fourth = all_acked(&nodes, protocol, &envoy).await;
    let held: Vec<&String> = fourth[CLUSTER]["resources"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(held, ["backend2"]);

    // 5. Shutdown ends the open ADS stream instead of waiting for Envoy to hang up.
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the xDS server stops while Envoy is still connected")
        .unwrap()
        .unwrap();
    assert!(envoy.is_running());
}

struct Ads {
    publisher: SnapshotPublisher,
    nodes: Arc<NodeRegistry>,
    nacks: UnboundedReceiver<Nack>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    port: u16,
}

impl Ads {
    async fn start() -> Self {
        let (publisher, cache) = xds::channel();
        let (nodes, nacks) = NodeRegistry::new(XdsMetrics::default());
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(xds::server::serve(
            listener,
            cache,
            nodes.clone(),
            shutdown.clone(),
        ));
        Ads {
            publisher,
            nodes,
            nacks,
            shutdown,
            server,
            port,
        }
    }
}

/// The per-type status of the one stream of `protocol` (from the registry's dump).
fn stream_status(nodes: &NodeRegistry, protocol: Protocol) -> BTreeMap<String, serde_json::Value> {
    let streams = nodes.streams();
    let stream = streams
        .iter()
        .find(|s| s.node == NODE && s.protocol == protocol)
        .unwrap_or_else(|| panic!("no {protocol:?} stream of {NODE}: {:#}", nodes.dump()));
    stream
        .types
        .iter()
        .map(|(t, s)| (t.clone(), serde_json::to_value(s).unwrap()))
        .collect()
}

/// Waits until Envoy has ACKed what it was last sent of every type, and returns the status.
async fn all_acked(
    nodes: &NodeRegistry,
    protocol: Protocol,
    envoy: &Envoy,
) -> BTreeMap<String, serde_json::Value> {
    wait_until("Envoy to ACK every type", envoy, || async {
        let status = stream_status(nodes, protocol);
        let acked = [CLUSTER, ENDPOINT, LISTENER, ROUTE].iter().all(|t| {
            status.get(*t).is_some_and(|s| {
                !s["version_sent"].is_null() && s["version_acked"] == s["version_sent"]
            })
        });
        acked.then_some(status)
    })
    .await
}

async fn next_nack(nacks: &mut UnboundedReceiver<Nack>) -> Nack {
    tokio::time::timeout(TIMEOUT, nacks.recv())
        .await
        .expect("Envoy NACKed the route")
        .expect("the NACK channel is open")
}

// ---------------------------------------------------------------------------------------------
// The snapshot
// ---------------------------------------------------------------------------------------------

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

fn socket(port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(PortSpecifier::PortValue(port.into())),
            ..Default::default()
        })),
    }
}

fn snapshot(listener_port: u16, backend_port: u16, routes: RouteConfiguration) -> Snapshot {
    snapshot_with_cluster(BACKEND, listener_port, backend_port, routes)
}

fn snapshot_with_cluster(
    cluster_name: &str,
    listener_port: u16,
    backend_port: u16,
    routes: RouteConfiguration,
) -> Snapshot {
    let cluster = Cluster {
        name: cluster_name.into(),
        connect_timeout: Some(PbDuration {
            seconds: 1,
            nanos: 0,
        }),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        ..Default::default()
    };
    let endpoints = ClusterLoadAssignment {
        cluster_name: cluster_name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                    address: Some(socket(backend_port)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: "http".into(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: ROUTES.into(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    let listener = Listener {
        name: "http".into(),
        address: Some(socket(listener_port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut snap = Snapshot::default();
    let mut add = |type_url: &'static str, r: XdsResource| {
        snap.resources
            .entry(type_url)
            .or_default()
            .insert(r.name.clone(), Arc::new(r));
    };
    add(CLUSTER, XdsResource::new(cluster_name, &cluster));
    add(ENDPOINT, XdsResource::new(cluster_name, &endpoints));
    add(LISTENER, XdsResource::new("http", &listener));
    add(ROUTE, XdsResource::new(ROUTES, &routes));
    snap
}

fn routes(path: PathSpecifier, body: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: ROUTES.into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(path),
                    ..Default::default()
                }),
                action: Some(Action::DirectResponse(DirectResponseAction {
                    status: 200,
                    body: Some(DataSource {
                        specifier: Some(data_source::Specifier::InlineString(body.into())),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn route_to_body(body: &str) -> RouteConfiguration {
    routes(PathSpecifier::Prefix("/".into()), body)
}

/// Valid protobuf, refused by Envoy: RE2 compiles `a{1000}` to a program far over the default
/// limit of 100 instructions.
fn route_with_huge_regex() -> RouteConfiguration {
    routes(
        PathSpecifier::SafeRegex(RegexMatcher {
            regex: "a{1000}".into(),
            ..Default::default()
        }),
        "never served",
    )
}

// ---------------------------------------------------------------------------------------------
// Envoy
// ---------------------------------------------------------------------------------------------

fn envoy_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("GLOO_ENVOY_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "GLOO_ENVOY_BIN={} is not a file",
            bin.display()
        );
        return Some(bin);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let lib = repo.join(".venv/lib");
    std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.is_file())
}

/// A running Envoy, killed on drop; its log is printed if the test failed.
struct Envoy {
    child: Child,
    dir: tempfile::TempDir,
    admin: String,
}

impl Envoy {
    fn start(bin: &Path, protocol: Protocol, ads_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let api_type = match protocol {
            Protocol::Sotw => "GRPC",
            Protocol::Delta => "DELTA_GRPC",
        };
        let bootstrap = format!(
            r#"
node: {{ id: {NODE}, cluster: gloo-test }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [{{ envoy_grpc: {{ cluster_name: xds }} }}]
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: xds
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {ads_port} }} }} }}
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
"#
        );
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, bootstrap).unwrap();
        let admin_path = dir.path().join("admin-address");
        let log = std::fs::File::create(dir.path().join("envoy.log")).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config)
            .arg("--base-id")
            .arg(base_id(protocol).to_string())
            .arg("--disable-hot-restart")
            .args(["--concurrency", "1", "--log-level", "info"])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut envoy = Envoy {
            child,
            dir,
            admin: String::new(),
        };
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match std::fs::read_to_string(&admin_path) {
                Ok(addr) if !addr.trim().is_empty() => {
                    envoy.admin = addr.trim().to_string();
                    break;
                }
                _ => {}
            }
            assert!(envoy.is_running(), "Envoy exited:\n{}", envoy.log());
            assert!(
                Instant::now() < deadline,
                "Envoy admin never came up:\n{}",
                envoy.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        envoy
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    async fn admin(&self, path: &str) -> String {
        let (host, port) = self.admin.rsplit_once(':').unwrap();
        assert_eq!(host, "127.0.0.1");
        http_get(port.parse().unwrap(), path)
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() || std::env::var_os("GLOO_TEST_ENVOY_LOG").is_some() {
            eprintln!("---- envoy log ----\n{}", self.log());
        }
    }
}

/// A base id no other Envoy of this run uses (shared memory is per base id when hot restart is
/// on; unique ids keep parallel tests apart either way).
fn base_id(protocol: Protocol) -> u32 {
    (std::process::id() % 100_000) * 10
        + match protocol {
            Protocol::Sotw => 1,
            Protocol::Delta => 2,
        }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_body(port: u16, body: &str, envoy: &Envoy) {
    let want = Some((200, body.to_string()));
    let last = wait_until(&format!("Envoy to answer {body:?}"), envoy, || async {
        let got = get(port).await;
        (got == want).then_some(got)
    })
    .await;
    assert_eq!(last, want);
}

/// Polls `check` until it returns something, failing (with Envoy's log) after [`TIMEOUT`].
async fn wait_until<T, F, Fut>(what: &str, envoy: &Envoy, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; config dump:\n{}",
                envoy.admin("/config_dump").await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(port: u16) -> Option<(u16, String)> {
    http_get(port, "/").await
}

/// A minimal HTTP/1.1 GET over a plain socket: (status, body). The body is read by its length
/// (or chunks), not to the end of the stream: Envoy delays closing its side by a second.
async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        (&s).write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let status = line.split_whitespace().nth(1)?.parse().ok()?;
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            r.read_line(&mut line).ok()?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':')?;
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                r.read_line(&mut line).ok()?;
                let size = usize::from_str_radix(line.trim(), 16).ok()?;
                let mut chunk = vec![0; size + 2];
                r.read_exact(&mut chunk).ok()?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            r.read_exact(&mut body).ok()?;
        } else {
            r.read_to_end(&mut body).ok()?;
        }
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    })
    .await
    .ok()?
}
