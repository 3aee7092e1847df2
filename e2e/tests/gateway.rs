//! Real traffic through a real Envoy configured by gloo-core: each matcher and action, weights
//! observed over many requests, rejection and warnings on status, NACKs, restarts on either
//! side, and route edits under load.
use std::{net::SocketAddr, time::Duration};

use e2e::{
    envoy::{Envoy, Proxy},
    fixtures::resource,
    free_port,
    http::{self, eventually, Backend, Response},
    Client, Core, ADMIN_TOKEN,
};
use proto::v1::{
    resource::Spec, status::State, ApplyRequest, GetRequest, Kind, Metadata, ObjectKey, Resource,
};
use serde_json::json;

fn upstream_for(name: &str, b: &Backend) -> Resource {
    resource(
        Kind::Upstream,
        name,
        json!({"static": {"hosts": [{"addr": "127.0.0.1", "port": b.addr.port()}]}}),
    )
}

/// A VirtualService `name` sending every request to `upstream`.
fn catch_all(name: &str, upstream: &str) -> Resource {
    resource(
        Kind::VirtualService,
        name,
        json!({"routes": [{"routeAction": to(upstream)}]}),
    )
}

fn to(upstream: &str) -> serde_json::Value {
    json!({"single": {"upstream": {"name": upstream}}})
}

struct Gateway {
    core: Core,
    envoy: Envoy,
    listen: SocketAddr,
    client: Client,
}

impl Gateway {
    async fn start(delta: bool) -> Gateway {
        let Proxy {
            core,
            envoy,
            listen,
            client,
        } = Proxy::start(delta).await;
        let gw = Gateway {
            core,
            envoy,
            listen,
            client,
        };
        // The listener is up when Envoy answers at all (404: no routes yet).
        gw.wait_for("/", |r| r.status == 404, "Envoy's listener to come up");
        gw
    }

    fn get(&self, path: &str) -> Option<Response> {
        http::get(self.listen, path)
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Option<Response> {
        http::request(self.listen, method, path, headers)
    }

    /// Waits until a GET of `path` satisfies `ok`; panics with Envoy's log otherwise.
    fn wait_for(&self, path: &str, ok: impl Fn(&Response) -> bool, what: &str) -> Response {
        eventually(Duration::from_secs(20), || self.get(path).filter(|r| ok(r))).unwrap_or_else(
            || {
                panic!(
                    "waiting for {what}: last answer {:?}\ngloo-core log:\n{}\nEnvoy log (tail):\n{}",
                    self.get(path),
                    self.core.log(),
                    tail(&self.envoy.log())
                )
            },
        )
    }

    async fn status(&mut self, kind: Kind, name: &str) -> (State, String) {
        let r = self
            .client
            .get(GetRequest {
                key: Some(ObjectKey {
                    kind: kind as i32,
                    namespace: "default".into(),
                    name: name.into(),
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .resource
            .unwrap();
        let s = r.status.unwrap_or_default();
        (State::try_from(s.state).unwrap(), s.reason)
    }

    async fn wait_status(&mut self, kind: Kind, name: &str, want: State) -> String {
        for _ in 0..400 {
            let (state, reason) = self.status(kind, name).await;
            if state == want {
                return reason;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "{kind:?} {name} never became {want:?}: {:?}",
            self.status(kind, name).await
        );
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

async fn apply(c: &mut Client, r: Resource) -> Resource {
    c.apply(ApplyRequest {
        resource: Some(r),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("apply: {e}"))
    .into_inner()
    .resource
    .unwrap()
}

async fn try_apply(c: &mut Client, r: Resource, draft: bool) -> Result<Resource, tonic::Status> {
    c.apply(ApplyRequest {
        resource: Some(r),
        draft,
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().resource.unwrap())
}

fn answered_by(r: &Response, backend: &str) -> bool {
    r.status == 200 && r.backend().as_deref() == Some(backend)
}

/// A backend and its upstream, applied.
async fn backend(gw: &mut Gateway, name: &str) -> Backend {
    let b = Backend::start(name).await;
    apply(&mut gw.client, upstream_for(name, &b)).await;
    b
}

async fn matchers(delta: bool) {
    let mut gw = Gateway::start(delta).await;
    for n in ["exact", "regex", "header", "query", "method", "prefix"] {
        let b = backend(&mut gw, n).await;
        std::mem::forget(b); // keep serving for the whole test
    }
    let routes = json!([
        {"name": "exact", "matchers": [{"exact": "/exact"}], "routeAction": to("exact")},
        {"name": "regex", "matchers": [{"regex": "^/re/[0-9]+$"}], "routeAction": to("regex")},
        {"name": "header", "matchers": [{"prefix": "/h", "headers": [{"name": "x-team", "value": "blue"}]}],
         "routeAction": to("header")},
        {"name": "query", "matchers": [{"prefix": "/q", "queryParameters": [{"name": "v", "value": "2"}]}],
         "routeAction": to("query")},
        {"name": "method", "matchers": [{"prefix": "/m", "methods": ["POST", "PUT"]}], "routeAction": to("method")},
        {"name": "prefix", "matchers": [{"prefix": "/p"}], "routeAction": to("prefix")},
    ]);
    apply(
        &mut gw.client,
        resource(
            Kind::VirtualService,
            "vs",
            json!({"domains": ["*"], "routes": routes}),
        ),
    )
    .await;
    gw.wait_for("/exact", |r| answered_by(r, "exact"), "the exact route");

    // Exact matches only the exact path.
    assert_eq!(gw.get("/exact/more").unwrap().status, 404);
    // Regex.
    assert!(answered_by(&gw.get("/re/123").unwrap(), "regex"));
    assert_eq!(gw.get("/re/abc").unwrap().status, 404);
    // Header.
    assert!(answered_by(
        &gw.request("GET", "/h", &[("X-Team", "blue")]).unwrap(),
        "header"
    ));
    assert_eq!(
        gw.request("GET", "/h", &[("X-Team", "red")])
            .unwrap()
            .status,
        404
    );
    assert_eq!(gw.get("/h").unwrap().status, 404);
    // Query parameter.
    let q = gw.get("/q?v=2&x=1").unwrap();
    assert!(answered_by(&q, "query"));
    assert_eq!(
        q.json()["query"],
        "v=2&x=1",
        "the query string reaches the backend"
    );
    assert_eq!(gw.get("/q?v=3").unwrap().status, 404);
    // Methods.
    assert!(answered_by(
        &gw.request("POST", "/m", &[]).unwrap(),
        "method"
    ));
    assert!(answered_by(
        &gw.request("PUT", "/m", &[]).unwrap(),
        "method"
    ));
    assert_eq!(gw.request("GET", "/m", &[]).unwrap().status, 404);
    // Prefix, with the path passed through.
    let p = gw.get("/pets/1").unwrap();
    assert!(answered_by(&p, "prefix"));
    assert_eq!(p.json()["path"], "/pets/1");
    assert_eq!(
        gw.status(Kind::VirtualService, "vs").await.0,
        State::Accepted
    );

    // gloo-core's /config_dump: what this Envoy node was sent, and that it ACKed all of it.
    let dump = eventually(Duration::from_secs(10), || {
        let body = http::get(gw.core.admin, "/config_dump")?.body;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let streams = v["nodes"]["nodes"][gw.envoy.node_id.as_str()]
            .as_array()?
            .clone();
        let routes = streams.first()?["types"]
            ["type.googleapis.com/envoy.config.route.v3.RouteConfiguration"]
            .clone();
        (routes["version_acked"] == routes["version_sent"] && !routes["version_acked"].is_null())
            .then_some(routes)
    })
    .expect("the node's route configuration is sent and ACKed in /config_dump");
    assert_eq!(dump["nacked"], false, "{dump}");
    assert!(dump["resources"]["gw_default-routes"].is_string(), "{dump}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_matcher_routes_real_requests_sotw() {
    matchers(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_matcher_routes_real_requests_delta() {
    matchers(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_destinations_split_traffic_as_configured() {
    let mut gw = Gateway::start(false).await;
    let (a, b) = (backend(&mut gw, "a").await, backend(&mut gw, "b").await);
    let route = json!({"matchers": [{"prefix": "/"}], "routeAction": {"multi": {"destinations": [
        {"destination": {"upstream": {"name": "a"}}, "weight": 3},
        {"destination": {"upstream": {"name": "b"}}, "weight": 1},
    ]}}});
    apply(
        &mut gw.client,
        resource(Kind::VirtualService, "split", json!({"routes": [route]})),
    )
    .await;
    gw.wait_for("/", |r| r.status == 200, "the weighted route");
    let (a0, b0) = (a.hits(), b.hits());
    let n = 800;
    for _ in 0..n {
        assert_eq!(gw.get("/").unwrap().status, 200);
    }
    let (ha, hb) = (a.hits() - a0, b.hits() - b0);
    assert_eq!(ha + hb, n);
    let share = ha as f64 / n as f64;
    assert!(
        (0.68..=0.82).contains(&share),
        "a got {ha} of {n} (want ~75%), b {hb}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_group_splits_traffic_and_follows_its_edits() {
    let mut gw = Gateway::start(false).await;
    let (a, b) = (backend(&mut gw, "a").await, backend(&mut gw, "b").await);
    let group = |wa: u32, wb: u32| {
        resource(
            Kind::UpstreamGroup,
            "ab",
            json!({"destinations": [
                {"destination": {"upstream": {"name": "a"}}, "weight": wa},
                {"destination": {"upstream": {"name": "b"}}, "weight": wb},
            ]}),
        )
    };
    apply(&mut gw.client, group(1, 1)).await;
    let route = json!({"routeAction": {"upstreamGroup": {"name": "ab"}}});
    apply(
        &mut gw.client,
        resource(Kind::VirtualService, "grp", json!({"routes": [route]})),
    )
    .await;
    gw.wait_for("/", |r| r.status == 200, "the group route");
    let (a0, b0) = (a.hits(), b.hits());
    for _ in 0..400 {
        gw.get("/").unwrap();
    }
    let (ha, hb) = (a.hits() - a0, b.hits() - b0);
    assert!(ha > 140 && hb > 140, "an even split: a {ha}, b {hb}");
    // Shift everything to b by editing the group only.
    apply(&mut gw.client, group(0, 1)).await;
    // One answer from b proves nothing while the old even split is served: wait for a run.
    gw.wait_for(
        "/",
        |r| {
            answered_by(r, "b")
                && (0..20).all(|_| gw.get("/").is_some_and(|r| answered_by(&r, "b")))
        },
        "the shift to b",
    );
    let a1 = a.hits();
    for _ in 0..100 {
        assert!(answered_by(&gw.get("/").unwrap(), "b"));
    }
    assert_eq!(a.hits(), a1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_and_direct_response_actions() {
    let mut gw = Gateway::start(false).await;
    let routes = json!([
        {"matchers": [{"prefix": "/old"}], "redirect": {"host": "new.example", "path": "/new", "responseCode": 301}},
        {"matchers": [{"prefix": "/secure"}], "redirect": {"https": true, "responseCode": 302}},
        {"matchers": [{"prefix": "/teapot"}], "directResponse": {"status": 418, "body": "short and stout"}},
    ]);
    apply(
        &mut gw.client,
        resource(Kind::VirtualService, "acts", json!({"routes": routes})),
    )
    .await;
    let t = gw.wait_for("/teapot", |r| r.status == 418, "the direct response");
    assert_eq!(t.body, "short and stout");
    let r = gw.get("/old").unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("http://new.example/new"));
    let s = gw.get("/secure/x").unwrap();
    assert_eq!(s.status, 302);
    assert!(
        s.header("location").unwrap().starts_with("https://"),
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_virtual_service_is_rejected_while_the_rest_keeps_serving() {
    let mut gw = Gateway::start(false).await;
    let _good = backend(&mut gw, "good").await;
    apply(
        &mut gw.client,
        resource(
            Kind::VirtualService,
            "good",
            json!({"domains": ["good.example"], "routes": [{"routeAction": to("good")}]}),
        ),
    )
    .await;
    let bad = resource(
        Kind::VirtualService,
        "bad",
        json!({"domains": ["*"], "routes": [{"name": "pets", "routeAction": to("missing")}]}),
    );
    // Validation refuses it...
    let e = try_apply(&mut gw.client, bad.clone(), false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("default/missing"), "{e:?}");
    // ...unless written as a draft; then it is reported Rejected, naming route and upstream.
    try_apply(&mut gw.client, bad, true).await.unwrap();
    let reason = gw
        .wait_status(Kind::VirtualService, "bad", State::Rejected)
        .await;
    assert!(
        reason.contains("\"pets\"") && reason.contains("default/missing"),
        "{reason}"
    );
    let ok = eventually(Duration::from_secs(10), || {
        http::request(gw.listen, "GET", "/", &[("Host", "good.example")])
            .filter(|r| answered_by(r, "good"))
    });
    assert!(ok.is_some(), "the good VirtualService keeps serving");
    assert_eq!(
        gw.status(Kind::VirtualService, "good").await.0,
        State::Accepted
    );

    // The upstream appears: the VirtualService becomes Accepted without being touched.
    let _missing = backend(&mut gw, "missing").await;
    gw.wait_status(Kind::VirtualService, "bad", State::Accepted)
        .await;
    gw.wait_for(
        "/",
        |r| answered_by(r, "missing"),
        "the fixed VirtualService",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_envoy_nacks_shows_on_the_object_s_status() {
    let mut gw = Gateway::start(false).await;
    apply(
        &mut gw.client,
        resource(
            Kind::VirtualService,
            "fine",
            json!({"routes": [{"matchers": [{"prefix": "/fine"}], "directResponse": {"status": 200, "body": "fine"}}]}),
        ),
    )
    .await;
    gw.wait_for("/fine", |r| r.status == 200, "the first route");
    // Valid to our validation, but over RE2's program size limit in Envoy.
    let big = json!({"routes": [
        {"matchers": [{"regex": "^/(a{1000}|b{1000})$"}], "directResponse": {"status": 200}},
        {"matchers": [{"prefix": "/fine"}], "directResponse": {"status": 200, "body": "fine"}},
    ]});
    apply(&mut gw.client, resource(Kind::VirtualService, "fine", big)).await;
    let reason = gw
        .wait_status(Kind::VirtualService, "fine", State::Rejected)
        .await;
    assert!(
        reason.contains("Envoy") && reason.contains("rejected"),
        "{reason}"
    );
    // Envoy keeps serving the last configuration it accepted.
    assert_eq!(gw.get("/fine").unwrap().body, "fine");
    // Fixing it clears the status.
    apply(
        &mut gw.client,
        resource(
            Kind::VirtualService,
            "fine",
            json!({"routes": [{"matchers": [{"prefix": "/fine"}], "directResponse": {"status": 200, "body": "fixed"}}]}),
        ),
    )
    .await;
    gw.wait_for("/fine", |r| r.body == "fixed", "the fixed route");
    gw.wait_status(Kind::VirtualService, "fine", State::Accepted)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_restarting_reconnects_and_gets_the_full_config() {
    for delta in [false, true] {
        let mut gw = Gateway::start(delta).await;
        let _b = backend(&mut gw, "b").await;
        apply(&mut gw.client, catch_all("v", "b")).await;
        gw.wait_for("/x", |r| answered_by(r, "b"), "the route");
        gw.envoy.restart();
        gw.wait_for(
            "/x",
            |r| answered_by(r, "b"),
            "the route after Envoy restarted",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gloo_core_restarting_leaves_envoy_serving_then_resyncs() {
    let mut gw = Gateway::start(false).await;
    let _b = backend(&mut gw, "b").await;
    let _c = backend(&mut gw, "c").await;
    apply(&mut gw.client, catch_all("v", "b")).await;
    gw.wait_for("/", |r| answered_by(r, "b"), "the route");
    gw.core.kill9();
    // Envoy keeps its last configuration while the control plane is down.
    for _ in 0..20 {
        assert!(answered_by(&gw.get("/").unwrap(), "b"));
    }
    gw.core.restart();
    gw.client = gw.core.client(ADMIN_TOKEN).await;
    apply(&mut gw.client, catch_all("v", "c")).await;
    gw.wait_for(
        "/",
        |r| answered_by(r, "c"),
        "the change made after gloo-core restarted",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_edits_under_steady_load_lose_no_request() {
    let mut gw = Gateway::start(false).await;
    let _a = backend(&mut gw, "a").await;
    let _b = backend(&mut gw, "b").await;
    let vs = |u: &str| catch_all("v", u);
    apply(&mut gw.client, vs("a")).await;
    gw.wait_for("/", |r| answered_by(r, "a"), "the first route");

    let load = http::Load::start(gw.listen, &[], |r| r.status == 200);
    for i in 0..20 {
        apply(&mut gw.client, vs(if i % 2 == 0 { "b" } else { "a" })).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    load.finish(101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_upstreams_route_to_their_endpoints_over_eds() {
    let mut gw = Gateway::start(false).await;
    let (one, two) = (Backend::start("one").await, Backend::start("two").await);
    apply(
        &mut gw.client,
        resource(
            Kind::Upstream,
            "default-pets-8080",
            json!({"kube": {"serviceName": "pets", "serviceNamespace": "default", "servicePort": 8080}}),
        ),
    )
    .await;
    let endpoints = |backends: &[&Backend]| {
        let eps: Vec<_> = backends
            .iter()
            .map(|b| json!({"address": "127.0.0.1", "port": b.addr.port()}))
            .collect();
        resource(
            Kind::Endpoints,
            "default-pets-8080",
            json!({"upstream": "default-pets-8080", "endpoints": eps}),
        )
    };
    apply(&mut gw.client, endpoints(&[&one])).await;
    apply(&mut gw.client, catch_all("pets", "default-pets-8080")).await;
    gw.wait_for(
        "/",
        |r| answered_by(r, "one"),
        "the kube upstream's endpoint",
    );
    // The endpoint set changes (a scaled deployment): traffic follows, over EDS only.
    apply(&mut gw.client, endpoints(&[&two])).await;
    gw.wait_for("/", |r| answered_by(r, "two"), "the new endpoint");
    for _ in 0..20 {
        assert!(answered_by(&gw.get("/").unwrap(), "two"));
    }
}

/// `openssl s_server` as a TLS backend that answers HTTP and refuses a handshake whose server
/// name is not `localhost`.
struct TlsBackend {
    port: u16,
    child: std::process::Child,
}

impl TlsBackend {
    fn start(dir: &std::path::Path) -> TlsBackend {
        let port = free_port();
        let child = std::process::Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                &format!("127.0.0.1:{port}"),
                "-www",
                "-quiet",
            ])
            .args(["-cert", "server.pem", "-key", "server.key"])
            .args(["-servername", "localhost", "-servername_fatal"])
            .args(["-cert2", "server.pem", "-key2", "server.key"])
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting openssl s_server");
        let up = eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "openssl s_server did not start");
        TlsBackend { port, child }
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verifies_the_ca_and_sends_the_sni() {
    let certs = tempfile::tempdir().unwrap();
    e2e::certs::make_certs(certs.path());
    let read = |f: &str| std::fs::read_to_string(certs.path().join(f)).unwrap();
    let backend = TlsBackend::start(certs.path());
    let mut gw = Gateway::start(false).await;
    let secret = |name: &str, ca: String| Resource {
        metadata: Some(Metadata {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        status: None,
        spec: Some(Spec::Secret(
            serde_json::from_value(json!({"tls": {"rootCa": ca}})).unwrap(),
        )),
    };
    apply(&mut gw.client, secret("backend-ca", read("ca.pem"))).await;
    apply(&mut gw.client, secret("other-ca", read("other.pem"))).await;
    let upstream = |name: &str, sni: &str, ca: &str| {
        resource(
            Kind::Upstream,
            name,
            json!({"static": {"hosts": [{"addr": "127.0.0.1", "port": backend.port}]},
                   "tls": {"sni": sni, "secretRef": {"name": ca}}}),
        )
    };
    apply(&mut gw.client, upstream("good", "localhost", "backend-ca")).await;
    apply(
        &mut gw.client,
        upstream("wrong-sni", "elsewhere.test", "backend-ca"),
    )
    .await;
    apply(
        &mut gw.client,
        upstream("wrong-ca", "localhost", "other-ca"),
    )
    .await;
    let routes = json!([
        {"matchers": [{"prefix": "/good"}], "routeAction": to("good")},
        {"matchers": [{"prefix": "/sni"}], "routeAction": to("wrong-sni")},
        {"matchers": [{"prefix": "/ca"}], "routeAction": to("wrong-ca")},
    ]);
    apply(
        &mut gw.client,
        resource(Kind::VirtualService, "tls", json!({"routes": routes})),
    )
    .await;
    // s_server -www answers any GET with a page about the TLS session.
    let ok = gw.wait_for("/good", |r| r.status == 200, "the TLS upstream");
    assert!(ok.body.contains("Cipher"), "{}", ok.body);
    // Another server name is refused by the backend; another CA is refused by Envoy.
    assert_eq!(gw.get("/sni").unwrap().status, 503);
    assert_eq!(gw.get("/ca").unwrap().status, 503);
}

/// GET `/` of `host` through the gateway's listener.
fn get_host(gw: &Gateway, host: &str, path: &str) -> Option<Response> {
    http::request(gw.listen, "GET", path, &[("Host", host)])
}

fn wait_host(gw: &Gateway, host: &str, path: &str, ok: impl Fn(&Response) -> bool, what: &str) {
    let got = eventually(Duration::from_secs(20), || {
        get_host(gw, host, path).filter(|r| ok(r))
    });
    assert!(
        got.is_some(),
        "waiting for {what}: last answer {:?}\ngloo-core log:\n{}\nEnvoy log (tail):\n{}",
        get_host(gw, host, path),
        gw.core.log(),
        tail(&gw.envoy.log())
    );
}

fn host_vs(name: &str, domains: &[&str], prefix: &str, upstream: &str) -> Resource {
    resource(
        Kind::VirtualService,
        name,
        json!({"domains": domains, "routes": [{"matchers": [{"prefix": prefix}], "routeAction": to(upstream)}]}),
    )
}

async fn scoped_routes(delta: bool) {
    let mut gw = Gateway::start(delta).await;
    apply(
        &mut gw.client,
        resource(
            Kind::Gateway,
            "gw",
            json!({"bindAddress": "127.0.0.1", "bindPort": gw.listen.port(), "scopedRoutes": true}),
        ),
    )
    .await;
    let _a = backend(&mut gw, "a").await;
    let _b = backend(&mut gw, "b").await;
    apply(
        &mut gw.client,
        host_vs("a", &["a.example", "www.a.example"], "/", "a"),
    )
    .await;
    apply(&mut gw.client, host_vs("b", &["b.example"], "/", "b")).await;

    // Each host reaches its own VirtualService, with or without a port; other hosts get 404.
    wait_host(&gw, "a.example", "/", |r| answered_by(r, "a"), "a.example");
    wait_host(&gw, "b.example", "/x", |r| answered_by(r, "b"), "b.example");
    let port = format!("www.a.example:{}", gw.listen.port());
    assert!(answered_by(&get_host(&gw, &port, "/").unwrap(), "a"));
    // Hosts match in any case, as they do with one route configuration.
    assert!(answered_by(
        &get_host(&gw, "WWW.A.Example", "/").unwrap(),
        "a"
    ));
    assert_eq!(get_host(&gw, "c.example", "/").unwrap().status, 404);
    for name in ["a", "b"] {
        gw.wait_status(Kind::VirtualService, name, State::Accepted)
            .await;
    }
    assert_eq!(gw.status(Kind::Gateway, "gw").await.0, State::Accepted);
    let dump = gw.envoy.config_dump();
    assert!(
        dump.contains("a_default~routes") && dump.contains("b_default~b.example"),
        "{dump}"
    );

    // An edit of b: Envoy reloads b's route configuration, not a's.
    let reload = |gw: &Gateway, vs: &str| {
        gw.envoy.stat(&format!(
            "http.gw_default.rds.{vs}_default~routes.config_reload"
        ))
    };
    let a_reloads = reload(&gw, "a");
    assert!(
        a_reloads.is_some(),
        "no RDS counter for a's route configuration"
    );
    apply(&mut gw.client, host_vs("b", &["b.example"], "/only", "b")).await;
    wait_host(&gw, "b.example", "/x", |r| r.status == 404, "b's edit");
    assert!(answered_by(
        &get_host(&gw, "b.example", "/only").unwrap(),
        "b"
    ));
    assert!(answered_by(&get_host(&gw, "a.example", "/").unwrap(), "a"));
    assert_eq!(reload(&gw, "a"), a_reloads, "a's routes were not reloaded");

    // A new VirtualService gets its scope; a deleted one loses it and the rest keep serving.
    apply(&mut gw.client, host_vs("c", &["c.example"], "/", "b")).await;
    wait_host(
        &gw,
        "c.example",
        "/",
        |r| answered_by(r, "b"),
        "the new c.example",
    );
    gw.client
        .delete(proto::v1::DeleteRequest {
            key: Some(ObjectKey {
                kind: Kind::VirtualService as i32,
                namespace: "default".into(),
                name: "a".into(),
            }),
            expected_resource_version: 0,
        })
        .await
        .unwrap();
    wait_host(
        &gw,
        "a.example",
        "/",
        |r| r.status == 404,
        "a.example to go",
    );
    assert!(answered_by(&get_host(&gw, "c.example", "/").unwrap(), "b"));

    // A domain a scope cannot match is refused on Apply, naming the domain.
    let e = try_apply(
        &mut gw.client,
        host_vs("w", &["*.example"], "/", "a"),
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message()
            .contains("domain \"*.example\" cannot be served by Gateway default/gw"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_gateway_routes_by_host_and_reloads_only_the_edited_virtual_service_sotw() {
    scoped_routes(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_gateway_routes_by_host_and_reloads_only_the_edited_virtual_service_delta() {
    scoped_routes(true).await;
}

/// Under steady load on one host (sent in mixed case), a Gateway that leaves `scopedRoutes` unset
/// switches to scoped routes when it comes to serve 100 VirtualServices, and back when one of
/// them has a wildcard domain, without a failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_switches_to_scoped_routes_at_100_virtual_services_and_back_losing_no_request() {
    let mut gw = Gateway::start(false).await;
    apply(
        &mut gw.client,
        resource(
            Kind::Gateway,
            "gw",
            json!({"bindAddress": "127.0.0.1", "bindPort": gw.listen.port()}),
        ),
    )
    .await;
    let _a = backend(&mut gw, "a").await;
    for i in 0..99 {
        let host = format!("v{i}.example");
        apply(
            &mut gw.client,
            host_vs(&format!("v{i}"), &[&host], "/", "a"),
        )
        .await;
    }
    wait_host(
        &gw,
        "v98.example",
        "/",
        |r| answered_by(r, "a"),
        "v98.example",
    );
    let scoped = |gw: &Gateway| {
        gw.envoy
            .stat("http.gw_default.rds.v0_default~routes.config_reload")
            .is_some()
    };
    assert!(
        !scoped(&gw),
        "99 VirtualServices share one route configuration"
    );

    let load = http::Load::start(gw.listen, &[("Host", "V0.Example")], |r| {
        answered_by(r, "a")
    });

    // The 100th: scoped routes, a route configuration per VirtualService.
    apply(&mut gw.client, host_vs("v99", &["v99.example"], "/", "a")).await;
    wait_host(
        &gw,
        "v99.example",
        "/",
        |r| answered_by(r, "a"),
        "v99.example",
    );
    let switched = eventually(Duration::from_secs(20), || scoped(&gw).then_some(()));
    assert!(switched.is_some(), "{}", gw.envoy.config_dump());
    assert!(answered_by(
        &get_host(&gw, "v42.example", "/").unwrap(),
        "a"
    ));
    assert_eq!(get_host(&gw, "nobody.example", "/").unwrap().status, 404);

    // A wildcard domain cannot be a scope: back to one route configuration, and it serves.
    apply(
        &mut gw.client,
        host_vs("wild", &["*.wild.example"], "/", "a"),
    )
    .await;
    wait_host(
        &gw,
        "x.wild.example",
        "/",
        |r| answered_by(r, "a"),
        "*.wild.example",
    );
    assert_eq!(
        gw.status(Kind::VirtualService, "wild").await.0,
        State::Accepted
    );
    assert!(answered_by(
        &get_host(&gw, "v99.example", "/").unwrap(),
        "a"
    ));
    std::thread::sleep(Duration::from_millis(300));

    load.finish(101);
}
