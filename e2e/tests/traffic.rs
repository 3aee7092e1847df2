//! The gateway's traffic features, each observed with real traffic through a real Envoy fed by
//! gloo-core: resilience (timeouts, retries, circuit breakers, health checks, outlier
//! detection, load balancing), traffic control (shadowing, faults, rate limits, rewrites,
//! headers, CORS, redirects, direct responses), TLS (SNI, rotation, client certificates),
//! protocols (gRPC-Web, WebSocket, TCP) and observability (access logs, Prometheus stats,
//! request ids). Each test starts one gloo-core and one Envoy and checks several features.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use e2e::{
    envoy::Proxy,
    fixtures::resource,
    free_port,
    http::{self, eventually, Response},
    scripted::{raw_request, Scripted},
    Client,
};
use proto::v1::{ApplyRequest, Kind, Resource};
use serde_json::{json, Value};

async fn apply(c: &mut Client, r: Resource) {
    c.apply(ApplyRequest {
        resource: Some(r),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("apply: {e}"));
}

/// Applies `r`, expecting the store to refuse it; the reason.
async fn refused(c: &mut Client, r: Resource) -> String {
    match c
        .apply(ApplyRequest {
            resource: Some(r),
            ..Default::default()
        })
        .await
    {
        Ok(_) => panic!("the write was accepted"),
        Err(e) => e.message().to_string(),
    }
}

fn hosts(backends: &[&Scripted]) -> Value {
    Value::Array(
        backends
            .iter()
            .map(|b| json!({"addr": "127.0.0.1", "port": b.addr.port()}))
            .collect(),
    )
}

/// An Upstream over `backends` with extra spec fields.
fn upstream(name: &str, backends: &[&Scripted], extra: Value) -> Resource {
    let mut spec = json!({"static": {"hosts": hosts(backends)}});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    resource(Kind::Upstream, name, spec)
}

fn to(upstream: &str) -> Value {
    json!({"single": {"upstream": {"name": upstream}}})
}

fn route(prefix: &str, upstream: &str, options: Value) -> Value {
    json!({"matchers": [{"prefix": prefix}], "routeAction": to(upstream), "options": options})
}

struct Gw {
    p: Proxy,
}

impl Gw {
    async fn start() -> Gw {
        Gw::start_with(false).await
    }

    /// `delta` picks incremental ADS.
    async fn start_with(delta: bool) -> Gw {
        let gw = Gw {
            p: Proxy::start(delta).await,
        };
        gw.wait_for("/", &[], |r| r.status == 404, "Envoy's listener to come up");
        gw
    }

    fn req(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Option<Response> {
        e2e::http::request(self.p.listen, method, path, headers)
    }

    fn get(&self, path: &str) -> Response {
        self.req("GET", path, &[])
            .unwrap_or_else(|| panic!("GET {path}: no answer"))
    }

    fn wait_for(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        ok: impl Fn(&Response) -> bool,
        what: &str,
    ) -> Response {
        eventually(Duration::from_secs(20), || {
            self.req("GET", path, headers).filter(|r| ok(r))
        })
        .unwrap_or_else(|| {
            panic!(
                "waiting for {what}: last answer {:?}\ngloo-core log:\n{}\nEnvoy log:\n{}",
                self.req("GET", path, headers),
                tail(&self.p.core.log()),
                tail(&self.p.envoy.log())
            )
        })
    }

    fn stat(&self, name: &str) -> u64 {
        self.p.envoy.stat(name).unwrap_or(0)
    }

    /// A second Gateway `name` on a fresh port, with extra spec fields.
    async fn gateway(&mut self, name: &str, extra: Value) -> SocketAddr {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut spec = json!({"bindAddress": "127.0.0.1", "bindPort": listen.port()});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        apply(&mut self.p.client, resource(Kind::Gateway, name, spec)).await;
        listen
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_retries_and_circuit_breakers() {
    let mut gw = Gw::start().await;
    let b = Scripted::start("b").await;
    let cb = Scripted::start("cb").await;
    apply(&mut gw.p.client, upstream("b", &[&b], json!({}))).await;
    apply(
        &mut gw.p.client,
        upstream(
            "cb",
            &[&cb],
            json!({"circuitBreakers": {"maxConnections": 1, "maxPendingRequests": 1, "maxRequests": 1}}),
        ),
    )
    .await;
    // A listener that never accepts, its queue full: connections to it hang in SYN.
    let stuck = PyServer::start(
        "import socket, sys, time\ns = socket.socket()\ns.bind(('127.0.0.1', int(sys.argv[1])))\ns.listen(0)\ntime.sleep(600)",
    );
    let _queued: Vec<_> = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], stuck.port)),
                Duration::from_millis(200),
            )
            .ok()
        })
        .collect();
    apply(
        &mut gw.p.client,
        resource(
            Kind::Upstream,
            "stuck",
            json!({"static": {"hosts": [{"addr": "127.0.0.1", "port": stuck.port}]}, "connectTimeout": "0.25s"}),
        ),
    )
    .await;
    for (name, cb) in [
        ("max-retries", json!({"maxRetries": 1})),
        (
            "budget",
            json!({"retryBudgetPercent": 1, "retryBudgetMinConcurrency": 1}),
        ),
    ] {
        apply(
            &mut gw.p.client,
            upstream(name, &[&b], json!({"circuitBreakers": cb})),
        )
        .await;
    }
    let retry_twice = json!({"retries": {"retryOn": "5xx", "numRetries": 2}});
    let routes = json!([
        route("/max-retries", "max-retries", retry_twice.clone()),
        route(
            "/codes",
            "b",
            json!({"retries": {"retryOn": "retriable-status-codes", "retriableStatusCodes": [418], "numRetries": 1}})
        ),
        route("/budget", "budget", retry_twice),
        route("/connect", "stuck", json!({})),
        route("/timeout", "b", json!({"timeout": "0.3s"})),
        route(
            "/retry",
            "b",
            json!({"retries": {"retryOn": "5xx", "numRetries": 2}})
        ),
        route(
            "/per-try",
            "b",
            json!({"timeout": "5s", "retries": {"retryOn": "5xx", "numRetries": 1, "perTryTimeout": "0.3s"}})
        ),
        route("/cb", "cb", json!({})),
    ]);
    apply(
        &mut gw.p.client,
        resource(Kind::VirtualService, "vs", json!({"routes": routes})),
    )
    .await;
    gw.wait_for("/timeout", &[], |r| r.status == 200, "the routes");

    // Route timeout: a slow backend is a 504 at the client, after the timeout.
    let t = Instant::now();
    assert_eq!(gw.get("/timeout?delay_ms=2000").status, 504);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );

    // Connect timeout: an upstream that never completes the handshake is a 503 after 0.25 s.
    let t = Instant::now();
    assert_eq!(gw.get("/connect").status, 503);
    assert!(
        t.elapsed() < Duration::from_millis(2000),
        "{:?}",
        t.elapsed()
    );
    assert!(gw.stat("cluster.stuck_default.upstream_cx_connect_timeout") >= 1);

    // Retries: the backend fails the first two requests, the client sees one 200, the backend
    // three requests.
    let before = b.hits();
    let r = gw.get("/retry?fail=r1:2");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(b.hits() - before, 3);
    // Retries on a chosen status code (not a 5xx): 418 is tried twice.
    let before = b.hits();
    assert_eq!(gw.get("/codes?status=418").status, 418);
    assert_eq!(b.hits() - before, 2);
    // Retries run out: three failures beyond two retries are the client's 503.
    assert_eq!(gw.get("/retry?fail=r2:3").status, 503);

    // Per-try timeout: each try is cut at 0.3 s and retried once, well before the route's 5 s.
    let before = b.hits();
    let t = Instant::now();
    let r = gw.get("/per-try?delay_ms=1500&fail=pt:0");
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        t.elapsed() < Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(b.hits() - before, 2, "the per-try timeout retried once");

    // Circuit breaker: one request at a time, one pending; the rest overflow as 503s.
    let addr = gw.p.listen;
    let tasks: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || http::get(addr, "/cb?delay_ms=700").map(|r| r.status)))
        .collect();
    let statuses: Vec<Option<u16>> = tasks.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = statuses.iter().filter(|s| **s == Some(200)).count();
    let overflow = statuses.iter().filter(|s| **s == Some(503)).count();
    assert!(ok >= 1 && overflow >= 1, "{statuses:?}");
    let counted = gw.stat("cluster.cb_default.upstream_rq_pending_overflow");
    assert!(
        counted >= overflow as u64,
        "overflow counter {counted}, 503s {overflow}"
    );
    assert!(
        cb.hits() <= 2 + ok,
        "only admitted requests reach the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_outlier_detection_and_load_balancing() {
    let mut gw = Gw::start().await;
    let bs = [
        Scripted::start("b0").await,
        Scripted::start("b1").await,
        Scripted::start("b2").await,
    ];
    let all: Vec<&Scripted> = bs.iter().collect();
    // A closed port: the TCP check finds it down.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let fast = json!({"interval": "0.2s", "timeout": "0.2s", "unhealthyThreshold": 1, "healthyThreshold": 1});
    let mut http_check = fast.clone();
    http_check["http"] = json!({"path": "/healthz"});
    let mut tcp_check = fast.clone();
    tcp_check["tcp"] = json!({});
    apply(
        &mut gw.p.client,
        upstream("hc", &all[..2], json!({"healthChecks": [http_check]})),
    )
    .await;
    let mut tcp_hosts = hosts(&all[2..]);
    tcp_hosts
        .as_array_mut()
        .unwrap()
        .push(json!({"addr": "127.0.0.1", "port": dead_port}));
    apply(
        &mut gw.p.client,
        resource(
            Kind::Upstream,
            "tcp",
            json!({"static": {"hosts": tcp_hosts}, "healthChecks": [tcp_check]}),
        ),
    )
    .await;
    apply(
        &mut gw.p.client,
        upstream(
            "od",
            &all[..2],
            json!({"outlierDetection": {"consecutive5xx": 2, "interval": "0.1s", "baseEjectionTime": "30s", "maxEjectionPercent": 50}}),
        ),
    )
    .await;
    apply(
        &mut gw.p.client,
        upstream(
            "hash",
            &all,
            json!({"loadBalancer": {"policy": "RING_HASH", "hashHeader": "x-user"}}),
        ),
    )
    .await;
    apply(
        &mut gw.p.client,
        upstream(
            "maglev",
            &all,
            json!({"loadBalancer": {"policy": "MAGLEV", "hashHeader": "x-user"}}),
        ),
    )
    .await;
    apply(
        &mut gw.p.client,
        upstream(
            "lr",
            &all,
            json!({"loadBalancer": {"policy": "LEAST_REQUEST"}}),
        ),
    )
    .await;
    let routes = json!([
        route("/hc", "hc", json!({})),
        route("/tcp", "tcp", json!({})),
        route("/od", "od", json!({})),
        route("/hash", "hash", json!({})),
        route("/maglev", "maglev", json!({})),
        route("/lr", "lr", json!({})),
    ]);
    apply(
        &mut gw.p.client,
        resource(Kind::VirtualService, "vs", json!({"routes": routes})),
    )
    .await;
    gw.wait_for("/lr", &[], |r| r.status == 200, "the routes");

    // HTTP health check: b1 reports unhealthy and is taken out of rotation.
    bs[1].set_health(503);
    gw.wait_for(
        "/hc",
        &[],
        |_| gw.stat("cluster.hc_default.membership_healthy") == 1,
        "b1 to be found unhealthy",
    );
    for _ in 0..10 {
        assert_eq!(gw.get("/hc").backend().as_deref(), Some("b0"));
    }
    // ... and back when healthy again.
    bs[1].set_health(200);
    gw.wait_for(
        "/hc",
        &[],
        |r| r.backend().as_deref() == Some("b1"),
        "b1 back in rotation",
    );

    // TCP health check: the closed port is never chosen.
    gw.wait_for(
        "/tcp",
        &[],
        |_| gw.stat("cluster.tcp_default.membership_healthy") == 1,
        "the closed port to be found down",
    );
    for _ in 0..10 {
        let r = gw.get("/tcp");
        assert_eq!(r.backend().as_deref(), Some("b2"), "{r:?}");
    }

    // Outlier detection: b0 fails every request on /od?status=500 ... is ejected after 2.
    let mut ejected = false;
    for _ in 0..20 {
        let _ = gw.get("/od?status=500");
        if gw.stat("cluster.od_default.outlier_detection.ejections_active") == 1 {
            ejected = true;
            break;
        }
    }
    assert!(ejected, "an endpoint answering 500s was ejected");
    // With max 50% ejected, one endpoint keeps serving everything.
    let served: std::collections::BTreeSet<String> =
        (0..6).filter_map(|_| gw.get("/od").backend()).collect();
    assert_eq!(served.len(), 1, "{served:?}");

    // Ring hash and Maglev: one user sticks to one backend; many users spread.
    for path in ["/hash", "/maglev"] {
        let mut spread = std::collections::BTreeSet::new();
        for user in 0..12 {
            let u = format!("user-{user}");
            let first = gw.req("GET", path, &[("x-user", &u)]).unwrap().backend();
            for _ in 0..3 {
                assert_eq!(
                    gw.req("GET", path, &[("x-user", &u)]).unwrap().backend(),
                    first,
                    "{path} {u}"
                );
            }
            spread.insert(first);
        }
        assert!(spread.len() >= 2, "{path}: {spread:?}");
    }
    // Least request over idle backends still reaches all of them.
    let served: std::collections::BTreeSet<String> =
        (0..30).filter_map(|_| gw.get("/lr").backend()).collect();
    assert_eq!(served.len(), 3, "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadowing_faults_rate_limits_rewrites_headers_cors_and_redirects() {
    let mut gw = Gw::start().await;
    let b = Scripted::start("b").await;
    let shadow = Scripted::start("shadow").await;
    apply(&mut gw.p.client, upstream("b", &[&b], json!({}))).await;
    apply(&mut gw.p.client, upstream("shadow", &[&shadow], json!({}))).await;
    let routes = json!([
        route("/mirror", "b", json!({"shadowing": {"upstream": {"name": "shadow"}, "percentage": 100}})),
        route("/abort", "b", json!({"faults": {"abort": {"httpStatus": 418, "percentage": 100}}})),
        route("/delay", "b", json!({"faults": {"delay": {"fixedDelay": "0.4s", "percentage": 100}}})),
        route("/limited", "b", json!({"rateLimit": {"maxTokens": 3, "fillInterval": "60s"}})),
        route("/old/", "b", json!({"prefixRewrite": "/new/"})),
        {"matchers": [{"regex": "^/re/[0-9]+$"}], "routeAction": to("b"),
         "options": {"regexRewrite": {"pattern": "^/re/([0-9]+)$", "substitution": "/item/\\1"}}},
        route("/host", "b", json!({"hostRewrite": "internal.example"})),
        route("/headers", "b", json!({"headers": {
            "requestHeadersToAdd": {"x-added": "yes"}, "requestHeadersToRemove": ["x-secret"],
            "responseHeadersToAdd": {"x-gateway": "gloo"}, "responseHeadersToRemove": ["content-type"]}})),
        route("/cors", "b", json!({"cors": {"allowOrigin": ["https://app.example"], "allowMethods": ["GET", "POST"], "maxAge": "600s"}})),
        {"matchers": [{"prefix": "/secure"}], "redirect": {"https": true}},
        {"matchers": [{"prefix": "/moved"}], "redirect": {"host": "new.example", "responseCode": 302}},
        {"matchers": [{"exact": "/old-page"}], "redirect": {"path": "/new-page"}},
        {"matchers": [{"prefix": "/direct"}], "directResponse": {"status": 202, "body": "straight from the gateway"}},
        route("/", "b", json!({})),
    ]);
    apply(
        &mut gw.p.client,
        resource(Kind::VirtualService, "vs", json!({"routes": routes})),
    )
    .await;
    // A second host whose routes share one rate limit.
    apply(
        &mut gw.p.client,
        resource(
            Kind::VirtualService,
            "limited-host",
            json!({"domains": ["limited.test"], "options": {"rateLimit": {"maxTokens": 2, "fillInterval": "60s"}},
                   "routes": [route("/a", "b", json!({})), route("/b", "b", json!({}))]}),
        ),
    )
    .await;
    // A host whose routes all retry.
    apply(
        &mut gw.p.client,
        resource(
            Kind::VirtualService,
            "retrying-host",
            json!({"domains": ["retrying.test"], "options": {"retries": {"retryOn": "5xx", "numRetries": 1}},
                   "routes": [route("/", "b", json!({}))]}),
        ),
    )
    .await;
    gw.wait_for("/direct", &[], |r| r.status == 202, "the routes");
    gw.wait_for(
        "/",
        &[("Host", "retrying.test")],
        |r| r.status == 200,
        "the retrying host",
    );
    gw.wait_for(
        "/a",
        &[("Host", "limited.test")],
        |r| r.status == 200,
        "the limited host",
    );

    // Shadowing: every request is also sent to the shadow backend (its answer is dropped).
    assert_eq!(gw.get("/mirror/1").backend().as_deref(), Some("b"));
    assert_eq!(gw.get("/mirror/2").backend().as_deref(), Some("b"));
    let mirrored = eventually(Duration::from_secs(5), || {
        (shadow.hits() >= 2).then_some(())
    });
    assert!(mirrored.is_some(), "shadow saw {:?}", shadow.paths());
    assert!(shadow.paths().iter().any(|p| p == "/mirror/1"));

    // Faults: an abort answers without the backend; a delay holds the request.
    let before = b.hits();
    assert_eq!(gw.get("/abort").status, 418);
    assert_eq!(
        b.hits(),
        before,
        "an aborted request never reaches the backend"
    );
    let t = Instant::now();
    assert_eq!(gw.get("/delay").status, 200);
    // (Envoy's timers may fire up to a millisecond early.)
    assert!(
        t.elapsed() >= Duration::from_millis(390),
        "the delay fault held the request only {:?}",
        t.elapsed()
    );

    // Local rate limit per route: 3 tokens, then 429.
    let statuses: Vec<u16> = (0..5).map(|_| gw.get("/limited").status).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(gw.get("/old/x").status, 200, "other routes are not limited");
    // Per virtual host: two tokens shared by both routes of the host.
    let host = [("Host", "limited.test")];
    // (the wait above may have taken a token)
    let statuses: Vec<(&str, u16)> = ["/a", "/b", "/a", "/b", "/a", "/b"]
        .into_iter()
        .map(|p| (p, gw.req("GET", p, &host).unwrap().status))
        .collect();
    let allowed = statuses.iter().take_while(|(_, s)| *s == 200).count();
    assert!(allowed <= 2, "{statuses:?}");
    assert!(
        statuses[allowed..].iter().all(|(_, s)| *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses[allowed..].iter().any(|(p, _)| *p == "/a")
            && statuses[allowed..].iter().any(|(p, _)| *p == "/b"),
        "both routes share the limit: {statuses:?}"
    );

    // Retries set on the virtual host apply to its routes.
    let before = b.hits();
    let r = gw
        .req("GET", "/vh?fail=vh:1", &[("Host", "retrying.test")])
        .unwrap();
    assert_eq!((r.status, b.hits() - before), (200, 2));

    // Rewrites.
    assert_eq!(gw.get("/old/x?q=1").json()["path"], "/new/x");
    assert_eq!(gw.get("/re/123").json()["path"], "/item/123");
    assert_eq!(
        gw.get("/host").json()["headers"]["host"],
        "internal.example"
    );

    // Header manipulation, both ways.
    let r = gw
        .req(
            "GET",
            "/headers",
            &[("x-secret", "s3cr3t"), ("x-kept", "1")],
        )
        .unwrap();
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-added"], "yes");
    assert_eq!(seen["x-kept"], "1");
    assert!(seen.get("x-secret").is_none(), "{seen}");
    assert_eq!(r.header("x-gateway"), Some("gloo"));
    assert_eq!(r.header("content-type"), None);

    // CORS: the gateway answers the preflight itself.
    let before = b.hits();
    let pre = gw
        .req(
            "OPTIONS",
            "/cors",
            &[
                ("Origin", "https://app.example"),
                ("Access-Control-Request-Method", "POST"),
            ],
        )
        .unwrap();
    assert_eq!(pre.status, 200, "{pre:?}");
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(pre.header("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(pre.header("access-control-max-age"), Some("600"));
    assert_eq!(b.hits(), before, "the preflight never reached the backend");
    let other = gw
        .req("GET", "/cors", &[("Origin", "https://evil.example")])
        .unwrap();
    assert_eq!(other.header("access-control-allow-origin"), None);

    // Redirects and direct responses.
    let r = gw.get("/secure/page");
    assert_eq!(
        (r.status, r.header("location")),
        (301, Some("https://test.local/secure/page"))
    );
    let r = gw.get("/moved/here");
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("http://new.example/moved/here"))
    );
    let r = gw.get("/old-page");
    assert_eq!(
        (r.status, r.header("location")),
        (301, Some("http://test.local/new-page"))
    );
    let r = gw.get("/direct");
    assert_eq!(
        (r.status, r.body.as_str()),
        (202, "straight from the gateway")
    );
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed certificate for `host` with organisation `org` (to tell versions apart).
fn self_signed(dir: &std::path::Path, file: &str, host: &str, org: &str) -> (String, String) {
    let (cert, key) = (format!("{file}.pem"), format!("{file}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-days",
            "2",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &cert,
            "-subj",
            &format!("/O={org}/CN={host}"),
            "-addext",
            &format!("subjectAltName=DNS:{host}"),
        ],
    );
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    (read(&cert), read(&key))
}

fn tls_secret(name: &str, cert: &str, key: &str, ca: &str) -> Resource {
    resource(
        Kind::Secret,
        name,
        json!({"tls": {"certChain": cert, "privateKey": key, "rootCa": ca}}),
    )
}

/// An `openssl s_client` session kept open: what it printed so far, and a way to send more.
struct TlsSession {
    child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<String>>,
}

impl TlsSession {
    fn open(addr: SocketAddr, sni: &str, extra: &[&str]) -> TlsSession {
        use std::io::Read;
        let mut child = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &addr.to_string(),
                "-servername",
                sni,
                "-ign_eof",
            ])
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_client");
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (mut stdout, o) = (child.stdout.take().unwrap(), out.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                o.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        TlsSession { child, out }
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Sends a GET on the open connection and waits for its answer (the n-th on this session).
    fn get(&mut self, n: usize) -> bool {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        let _ = stdin.write_all(b"GET /tls HTTP/1.1\r\nHost: test.local\r\n\r\n");
        let _ = stdin.flush();
        eventually(Duration::from_secs(5), || {
            (self.output().matches("HTTP/1.1 200").count() >= n).then_some(())
        })
        .is_some()
    }

    /// The organisation of the certificate the server presented.
    fn served_org(&self) -> Option<String> {
        eventually(Duration::from_secs(5), || {
            let out = self.output();
            let line = out.lines().find(|l| l.starts_with("subject="))?.to_string();
            let org = line
                .split("O = ")
                .nth(1)?
                .split(',')
                .next()?
                .trim()
                .to_string();
            Some(org)
        })
    }
}

impl Drop for TlsSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The organisation of the certificate served for `sni`, on a fresh connection.
fn served_org(addr: SocketAddr, sni: &str) -> Option<String> {
    TlsSession::open(addr, sni, &[]).served_org()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_gateway_serves_a_certificate_per_sni_rotates_it_and_checks_client_certificates() {
    tls_gateway(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_gateway_over_delta_ads_serves_and_rotates_certificates() {
    tls_gateway(true).await;
}

async fn tls_gateway(delta: bool) {
    let mut gw = Gw::start_with(delta).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a1, a1k) = self_signed(d, "a1", "a.test", "a-one");
    let (a2, a2k) = self_signed(d, "a2", "a.test", "a-two");
    let (bc, bk) = self_signed(d, "b", "b.test", "b-one");
    e2e::certs::make_certs(d);
    std::fs::write(d.join("client.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            "/CN=client",
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "client.pem",
            "-days",
            "2",
            "-extfile",
            "client.cnf",
        ],
    );
    let ca = std::fs::read_to_string(d.join("ca.pem")).unwrap();

    let b = Scripted::start("b").await;
    apply(&mut gw.p.client, upstream("b", &[&b], json!({}))).await;
    apply(
        &mut gw.p.client,
        resource(
            Kind::VirtualService,
            "vs",
            json!({"routes": [route("/", "b", json!({}))]}),
        ),
    )
    .await;
    apply(&mut gw.p.client, tls_secret("a-cert", &a1, &a1k, "")).await;
    apply(&mut gw.p.client, tls_secret("b-cert", &bc, &bk, "")).await;
    apply(&mut gw.p.client, tls_secret("client-ca", "", "", &ca)).await;
    let tls = gw
        .gateway(
            "tls",
            json!({"tls": {"certificates": [
                {"serverNames": ["a.test"], "secretRef": {"name": "a-cert"}},
                {"serverNames": ["b.test"], "secretRef": {"name": "b-cert"}},
            ]}}),
        )
        .await;
    let mtls = gw
        .gateway(
            "mtls",
            json!({"tls": {"certificates": [{"secretRef": {"name": "b-cert"}}],
                           "clientCaSecretRef": {"name": "client-ca"}}}),
        )
        .await;

    // A certificate from a Secret that does not exist is refused, naming the field.
    let reason = refused(
        &mut gw.p.client,
        resource(
            Kind::Gateway,
            "broken",
            json!({"bindAddress": "127.0.0.1", "bindPort": free_port(),
                   "tls": {"certificates": [{"secretRef": {"name": "nope"}}]}}),
        ),
    )
    .await;
    assert!(reason.contains("tls.certificates[0].secretRef"), "{reason}");

    // One certificate per server name; the first one for clients naming no other.
    let up = eventually(Duration::from_secs(20), || {
        served_org(tls, "a.test").filter(|o| o == "a-one")
    });
    assert!(
        up.is_some(),
        "TLS gateway never served a.test; Envoy log:\n{}",
        tail(&gw.p.envoy.log())
    );
    assert_eq!(served_org(tls, "b.test").as_deref(), Some("b-one"));
    assert_eq!(served_org(tls, "other.test").as_deref(), Some("a-one"));

    // A connection open before the rotation...
    let mut session = TlsSession::open(tls, "a.test", &[]);
    assert!(
        session.get(1),
        "HTTPS through the gateway: {}",
        session.output()
    );
    // ... the Secret changes: new connections get the new certificate ...
    let modified = gw.stat("listener_manager.listener_modified");
    apply(&mut gw.p.client, tls_secret("a-cert", &a2, &a2k, "")).await;
    let rotated = eventually(Duration::from_secs(20), || {
        served_org(tls, "a.test").filter(|o| o == "a-two")
    });
    assert!(
        rotated.is_some(),
        "the rotated certificate was never served"
    );
    // ... and the open connection keeps working (the listener was not drained).
    assert!(
        session.get(2),
        "the connection from before the rotation: {}",
        session.output()
    );
    assert_eq!(
        gw.stat("listener_manager.listener_modified"),
        modified,
        "the rotation replaced no listener"
    );

    // Client certificates: without one the handshake fails, with one signed by the CA it works.
    let mut without = TlsSession::open(mtls, "b.test", &[]);
    assert!(!without.get(1), "{}", without.output());
    let p = |f: &str| d.join(f).display().to_string();
    let mut with = TlsSession::open(
        mtls,
        "b.test",
        &["-cert", &p("client.pem"), "-key", &p("client.key")],
    );
    assert!(with.get(1), "{}", with.output());
}

fn python() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python").to_string()
}

/// A Python server from `script` (given the port as its argument), killed on drop.
struct PyServer {
    child: std::process::Child,
    port: u16,
}

impl PyServer {
    fn start(script: &str) -> PyServer {
        let port = free_port();
        let child = std::process::Command::new(python())
            .args(["-c", script, &port.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("starting python");
        let up = eventually(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "the Python server did not come up");
        PyServer { child, port }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const GRPC_ECHO: &str = r#"
import sys
from concurrent import futures
import grpc
def say(request, context):
    return b"echo:" + request
handler = grpc.method_handlers_generic_handler(
    "echo.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
server.start()
server.wait_for_termination()
"#;

const WS_ECHO: &str = r#"
import asyncio, sys
from websockets.asyncio.server import serve
async def echo(ws):
    async for message in ws:
        await ws.send(message)
async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1])):
        await asyncio.Future()
asyncio.run(main())
"#;

/// A WebSocket client, by hand: the upgrade, one masked text frame, the echoed frame back.
fn websocket_echo(addr: SocketAddr, text: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let upgrade = "GET /ws HTTP/1.1\r\nHost: test.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    s.write_all(upgrade.as_bytes()).map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).map_err(|e| e.to_string())?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    if !head.starts_with("HTTP/1.1 101") {
        return Err(head);
    }
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | text.len() as u8];
    frame.extend(mask);
    frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).map_err(|e| e.to_string())?;
    let mut hdr = [0u8; 2];
    s.read_exact(&mut hdr).map_err(|e| e.to_string())?;
    let mut payload = vec![0u8; (hdr[1] & 0x7f) as usize];
    s.read_exact(&mut payload).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&payload).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_websocket_and_tcp_proxy() {
    let mut gw = Gw::start().await;
    let grpc = PyServer::start(GRPC_ECHO);
    let ws = PyServer::start(WS_ECHO);
    let tcp_echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_port = tcp_echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp_echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let host = |port: u16| json!({"static": {"hosts": [{"addr": "127.0.0.1", "port": port}]}});
    let mut grpc_up = host(grpc.port);
    grpc_up["useHttp2"] = json!(true);
    apply(&mut gw.p.client, resource(Kind::Upstream, "grpc", grpc_up)).await;
    apply(
        &mut gw.p.client,
        resource(Kind::Upstream, "ws", host(ws.port)),
    )
    .await;
    apply(
        &mut gw.p.client,
        resource(Kind::Upstream, "echo", host(tcp_port)),
    )
    .await;
    apply(
        &mut gw.p.client,
        resource(
            Kind::VirtualService,
            "vs",
            json!({"routes": [route("/echo.Echo/", "grpc", json!({})), route("/ws", "ws", json!({})),
                              {"matchers": [{"prefix": "/up"}], "directResponse": {"status": 200}}]}),
        ),
    )
    .await;
    let tcp = gw
        .gateway("tcp", json!({"tcpUpstream": {"name": "echo"}}))
        .await;
    gw.wait_for("/up", &[], |r| r.status == 200, "the routes");

    // gRPC-Web: a framed request in, the gRPC server's answer and its trailers back.
    let mut frame = vec![0u8];
    frame.extend(5u32.to_be_bytes());
    frame.extend(b"hello");
    let head = "POST /echo.Echo/Say HTTP/1.1\r\nHost: test.local\r\n\
                Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1";
    let raw = raw_request(gw.p.listen, head, &frame).expect("a gRPC-Web answer");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("application/grpc-web"), "{text}");
    assert!(text.contains("echo:hello"), "{text}");
    assert!(text.contains("grpc-status:0"), "{text}");

    // WebSocket: upgraded through the gateway, echoed by the server.
    assert_eq!(
        websocket_echo(gw.p.listen, "hi there").as_deref(),
        Ok("hi there")
    );

    // TCP proxy: raw bytes through a Gateway with a tcpUpstream.
    let echoed = eventually(Duration::from_secs(20), || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(tcp).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"ping over tcp").ok()?;
        let mut buf = [0u8; 13];
        s.read_exact(&mut buf).ok()?;
        Some(buf)
    });
    assert_eq!(echoed.as_ref().map(|b| &b[..]), Some(&b"ping over tcp"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_logs_prometheus_stats_and_request_ids() {
    let mut gw = Gw::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let b = Scripted::start("b").await;
    apply(&mut gw.p.client, upstream("b", &[&b], json!({}))).await;
    apply(
        &mut gw.p.client,
        resource(
            Kind::VirtualService,
            "vs",
            // Per-route statistics are opt-in: `all` has them, `unwatched` not.
            json!({"routes": [
                {"name": "unwatched", "matchers": [{"prefix": "/unwatched"}], "routeAction": to("b")},
                {"name": "all", "matchers": [{"prefix": "/"}], "routeAction": to("b"),
                 "options": {"stats": true}}
            ]}),
        ),
    )
    .await;
    let logged = gw
        .gateway(
            "logged",
            json!({"accessLog": {"path": log.display().to_string(),
                                 "format": "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %UPSTREAM_CLUSTER%"}}),
        )
        .await;
    gw.wait_for("/ready", &[], |r| r.status == 200, "the route");
    eventually(Duration::from_secs(20), || {
        http::get(logged, "/ready").filter(|r| r.status == 200)
    })
    .expect("the logged gateway");

    // One access-log line per request, in the configured format.
    for i in 0..5 {
        assert_eq!(
            http::get(logged, &format!("/logged/{i}")).unwrap().status,
            200
        );
    }
    let lines = eventually(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).ok()?;
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains("/logged/"))
            .map(str::to_string)
            .collect();
        (lines.len() >= 5).then_some(lines)
    })
    .expect("five access-log lines");
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[0], "GET /logged/0 200 b_default");

    // Per-upstream and per-route statistics on Envoy's Prometheus endpoint.
    assert_eq!(http::get(logged, "/unwatched").unwrap().status, 200);
    let prom = http::get(gw.p.envoy.admin, "/stats/prometheus")
        .unwrap()
        .body;
    let value = |metric: &str, label: &str| -> Option<f64> {
        prom.lines()
            .filter(|l| l.starts_with(metric) && l.contains(label))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let upstream = value(
        "envoy_cluster_upstream_rq_completed{",
        "envoy_cluster_name=\"b_default\"",
    );
    assert!(upstream.is_some_and(|v| v >= 6.0), "{upstream:?}");
    let per_route = prom
        .lines()
        .find(|l| l.contains("default-vs-all") && l.contains("upstream_rq_completed"));
    assert!(
        per_route.is_some(),
        "no per-route statistics:\n{}",
        prom.lines()
            .filter(|l| l.contains("vhost"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !prom.contains("default-vs-unwatched"),
        "per-route statistics for a route without options.stats"
    );

    // A request id on every request, seen by the backend, distinct per request.
    let ids: Vec<String> = (0..2)
        .map(|_| {
            gw.get("/id").json()["headers"]["x-request-id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(!ids[0].is_empty() && ids[0] != ids[1], "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_shift_under_load_with_no_errors() {
    let mut gw = Gw::start().await;
    let stable = Scripted::start("stable").await;
    let canary = Scripted::start("canary").await;
    apply(&mut gw.p.client, upstream("stable", &[&stable], json!({}))).await;
    apply(&mut gw.p.client, upstream("canary", &[&canary], json!({}))).await;
    let group = |canary_weight: u32| {
        resource(
            Kind::UpstreamGroup,
            "release",
            json!({"destinations": [
                {"destination": {"upstream": {"name": "stable"}}, "weight": 100 - canary_weight},
                {"destination": {"upstream": {"name": "canary"}}, "weight": canary_weight}]}),
        )
    };
    apply(&mut gw.p.client, group(20)).await;
    apply(
        &mut gw.p.client,
        resource(
            Kind::VirtualService,
            "vs",
            json!({"routes": [{"routeAction": {"upstreamGroup": {"name": "release"}}}]}),
        ),
    )
    .await;
    gw.wait_for("/", &[], |r| r.status == 200, "the route");

    // 20% canary, observed over many requests.
    let share = |gw: &Gw| {
        let n = 300;
        let c = (0..n)
            .filter(|_| gw.get("/").backend().as_deref() == Some("canary"))
            .count();
        c as f64 / n as f64
    };
    let s = share(&gw);
    assert!((0.12..0.28).contains(&s), "canary share {s}");

    // Shift to 100% canary in steps while requests keep flowing: none fails.
    let load = e2e::http::Load::start(gw.p.listen, &[], |r| r.status == 200);
    for w in [40, 60, 80, 100] {
        apply(&mut gw.p.client, group(w)).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    gw.wait_for(
        "/",
        &[],
        |_| (0..20).all(|_| gw.get("/").backend().as_deref() == Some("canary")),
        "all traffic on the canary",
    );
    load.finish(51);
}
