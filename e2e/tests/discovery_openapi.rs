//! discovery-openapi against a real gloo-core, a real FastAPI service, specs served by a plain
//! HTTP server, and (for routing) a real Envoy: specs become REST Functions, changes follow,
//! bad specs keep the last good Functions and make the Upstream's status a Warning, services
//! without specs are probed less and less and then not at all until their Upstream changes,
//! and a route to a discovered function reaches the service's real path.
use std::{collections::BTreeMap, time::Duration};

use e2e::{
    discovery::Discovery,
    envoy::Proxy,
    fixtures::resource,
    http::{self, eventually},
    openapi::{fixture_text, FastApi, SpecServer},
    Core, ADMIN_TOKEN, OPENAPI_TOKEN,
};
use proto::v1::{
    function_spec::Function, resource::Spec, rest_function::parameter::Location, status::State,
    ApplyRequest, Kind, Resource, RestFunction,
};
use serde_json::json;

const BIN: &str = "discovery-openapi";
const LABEL: &str = "discovery.solo.io/function_discovery";

/// A static upstream at `port`, optionally labelled for function discovery.
fn upstream(name: &str, port: u16, discovery: Option<&str>) -> Resource {
    let mut r = resource(
        Kind::Upstream,
        name,
        json!({"static": {"hosts": [{"addr": "127.0.0.1", "port": port}]}}),
    );
    if let Some(v) = discovery {
        r.metadata
            .as_mut()
            .unwrap()
            .labels
            .insert(LABEL.into(), v.into());
    }
    r
}

async fn apply(core: &Core, r: Resource) {
    core.client(ADMIN_TOKEN)
        .await
        .apply(ApplyRequest {
            resource: Some(r),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"));
}

/// The REST Functions in the store, by name: (upstream, function).
async fn functions(core: &Core) -> BTreeMap<String, (String, RestFunction)> {
    core.list(Kind::Function)
        .await
        .into_iter()
        .filter_map(|r| {
            let name = r.metadata?.name;
            let Some(Spec::Function(f)) = r.spec else {
                return None;
            };
            let Some(Function::Rest(rest)) = f.function else {
                return None;
            };
            Some((name, (f.upstream, rest)))
        })
        .collect()
}

async fn names_of(core: &Core, upstream: &str) -> Vec<String> {
    functions(core)
        .await
        .into_iter()
        .filter(|(_, (u, _))| u == upstream)
        .map(|(n, _)| n)
        .collect()
}

/// Waits until `upstream`'s Functions are exactly `want`.
async fn wait_names(core: &Core, d: &Discovery, upstream: &str, want: &[&str]) {
    for _ in 0..300 {
        if names_of(core, upstream).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "functions of {upstream}: {:?}, want {want:?}\ndiscovery log:\n{}",
        names_of(core, upstream).await,
        d.log()
    );
}

fn start(core: &Core, args: &[&str]) -> Discovery {
    let mut d = Discovery::start(BIN, core, OPENAPI_TOKEN, args);
    d.wait_ready(Duration::from_secs(20));
    d
}

fn n(id: &str) -> String {
    discovery_runtime::names::object_name(&[id])
}

fn rest_of<'a>(fs: &'a BTreeMap<String, (String, RestFunction)>, name: &str) -> &'a RestFunction {
    &fs.get(name)
        .unwrap_or_else(|| panic!("no function {name} in {:?}", fs.keys()))
        .1
}

fn params(f: &RestFunction) -> Vec<(String, Location, bool)> {
    f.parameters
        .iter()
        .map(|p| (p.name.clone(), p.location(), p.required))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_spec_flavour_yields_its_functions() {
    let core = Core::start();
    let swagger = SpecServer::start().await;
    swagger.set("/swagger.json", fixture_text("swagger20.json"));
    let v31 = SpecServer::start().await;
    v31.set("/openapi.yaml", fixture_text("openapi31.yaml"));
    let v30 = SpecServer::start().await;
    v30.set("/v3/api-docs", fixture_text("openapi30.json"));
    let fastapi = FastApi::start();
    apply(
        &core,
        upstream("swagger", swagger.addr.port(), Some("enabled")),
    )
    .await;
    apply(&core, upstream("v31", v31.addr.port(), Some("enabled"))).await;
    apply(&core, upstream("v30", v30.addr.port(), Some("enabled"))).await;
    apply(
        &core,
        upstream("petstore", fastapi.addr.port(), Some("enabled")),
    )
    .await;
    let d = start(&core, &["--interval", "1s"]);

    let mut want = [n("getPetById"), "post-pets".into(), n("updatePetWithForm")];
    want.sort();
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    wait_names(&core, &d, "swagger", &want).await;
    let mut want31 = [n("createPet"), n("listPets"), n("showPetById")];
    want31.sort();
    let want31: Vec<&str> = want31.iter().map(String::as_str).collect();
    wait_names(&core, &d, "v31", &want31).await;
    wait_names(&core, &d, "v30", &["find-orders", "get-order"]).await;
    wait_names(
        &core,
        &d,
        "petstore",
        &[
            "add-pet",
            "delete-pet",
            "get-pet",
            "inventory-store-inventory-get",
        ],
    )
    .await;

    let fs = functions(&core).await;
    // Swagger 2.0: basePath, a $ref'd path parameter, body and form parameters as has_body.
    let get = rest_of(&fs, &n("getPetById"));
    assert_eq!(
        (get.method.as_str(), get.path_template.as_str()),
        ("GET", "/pets/{petId}")
    );
    assert_eq!(get.base_path, "/v1");
    assert_eq!(
        params(get),
        [
            ("petId".into(), Location::Path, true),
            ("fields".into(), Location::Query, false)
        ]
    );
    assert!(!get.has_body);
    assert!(rest_of(&fs, &n("updatePetWithForm")).has_body);
    assert!(rest_of(&fs, "post-pets").has_body);
    // OpenAPI 3.1 YAML: server path, a path item $ref, a header parameter $ref, a body $ref.
    let show = rest_of(&fs, &n("showPetById"));
    assert_eq!(show.base_path, "/api/v3");
    assert_eq!(params(show), [("petId".into(), Location::Path, true)]);
    assert_eq!(
        params(rest_of(&fs, &n("listPets"))),
        [
            ("limit".into(), Location::Query, false),
            ("X-Request-Id".into(), Location::Header, true)
        ]
    );
    assert!(rest_of(&fs, &n("createPet")).has_body);
    // OpenAPI 3.0 through openapiv3.
    let order = rest_of(&fs, "get-order");
    assert_eq!(order.path_template, "/orders/{orderId}");
    assert_eq!(order.base_path, "/shop");
    // FastAPI's generated spec: operation ids as given, else FastAPI's own ids.
    let pet = rest_of(&fs, "get-pet");
    assert_eq!(
        (pet.method.as_str(), pet.path_template.as_str()),
        ("GET", "/store/pets/{id}")
    );
    assert_eq!(
        params(pet),
        [
            ("id".into(), Location::Path, true),
            ("verbose".into(), Location::Query, false)
        ]
    );
    assert!(rest_of(&fs, "add-pet").has_body);

    // Probes identify themselves.
    let seen = swagger.seen();
    assert!(
        seen.iter()
            .all(|s| s.user_agent.starts_with("gloo-discovery-openapi/")
                && s.probe_header.as_deref() == Some("openapi")),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_change_adds_and_removes_functions_and_unchanged_specs_are_asked_conditionally() {
    let core = Core::start();
    let specs = SpecServer::start().await;
    let v1 = fixture_text("openapi30.json");
    specs.set("/openapi.json", v1.clone());
    apply(&core, upstream("shop", specs.addr.port(), Some("enabled"))).await;
    let d = start(&core, &["--interval", "300ms"]);
    wait_names(&core, &d, "shop", &["find-orders", "get-order"]).await;

    let v2 = v1.replace("\"find_orders\"", "\"list_orders\"");
    assert_ne!(v1, v2);
    specs.set("/openapi.json", v2);
    wait_names(&core, &d, "shop", &["get-order", "list-orders"]).await;

    // Nothing changes for a while: only conditional requests, about one per interval.
    let before = specs.hits("/openapi.json").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let quiet: Vec<_> = specs
        .hits("/openapi.json")
        .into_iter()
        .skip(before)
        .collect();
    assert!(quiet.iter().all(|s| s.conditional), "{quiet:?}");
    assert!(
        (5..=12).contains(&quiet.len()),
        "{} requests in 3 s at 300ms",
        quiet.len()
    );
    // No other path was asked once the spec was known.
    assert!(specs.seen().iter().all(|s| s.path == "/openapi.json"));
    assert_eq!(names_of(&core, "shop").await, ["get-order", "list-orders"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whitelist_and_blacklist_modes_choose_upstreams_by_label_and_namespace() {
    let core = Core::start();
    let specs = SpecServer::start().await;
    specs.set("/openapi.json", fixture_text("openapi30.json"));
    let port = specs.addr.port();
    // Three upstreams of the same service; Function names collide, so the later ones get
    // their upstream's name in front.
    apply(&core, upstream("a-enabled", port, Some("enabled"))).await;
    apply(&core, upstream("b-plain", port, None)).await;
    apply(&core, upstream("c-disabled", port, Some("disabled"))).await;

    let mut d = start(&core, &["--interval", "300ms", "--mode", "whitelist"]);
    wait_names(&core, &d, "a-enabled", &["find-orders", "get-order"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(names_of(&core, "b-plain").await.is_empty());
    assert!(names_of(&core, "c-disabled").await.is_empty());
    d.terminate();

    let d = start(&core, &["--interval", "300ms", "--mode", "blacklist"]);
    wait_names(
        &core,
        &d,
        "b-plain",
        &["b-plain-find-orders", "b-plain-get-order"],
    )
    .await;
    wait_names(&core, &d, "a-enabled", &["find-orders", "get-order"]).await;
    assert!(names_of(&core, "c-disabled").await.is_empty());
    drop(d);

    // Namespace settings from flags: in whitelist mode an enabled namespace selects its
    // unlabelled upstreams, and an upstream's own "disabled" still wins.
    let d = start(
        &core,
        &["--interval", "300ms", "--enabled-namespace", "default"],
    );
    wait_names(
        &core,
        &d,
        "b-plain",
        &["b-plain-find-orders", "b-plain-get-order"],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(names_of(&core, "c-disabled").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_a_spec_is_probed_less_and_less_often() {
    let core = Core::start();
    let empty = SpecServer::start().await;
    let with_spec = SpecServer::start().await;
    with_spec.set("/openapi.json", fixture_text("openapi30.json"));
    apply(
        &core,
        upstream("nospec", empty.addr.port(), Some("enabled")),
    )
    .await;
    apply(
        &core,
        upstream("shop", with_spec.addr.port(), Some("enabled")),
    )
    .await;
    let d = start(
        &core,
        &[
            "--interval",
            "200ms",
            "--spec-path",
            "/openapi.json,/swagger.json",
        ],
    );
    wait_names(&core, &d, "shop", &["find-orders", "get-order"]).await;
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Every round asks each candidate path once; rounds come further and further apart.
    let rounds: Vec<_> = empty
        .hits("/openapi.json")
        .into_iter()
        .map(|s| s.at)
        .collect();
    assert_eq!(empty.hits("/swagger.json").len(), rounds.len());
    let gaps: Vec<f64> = rounds
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    assert!(
        rounds.len() >= 3 && rounds.len() <= 7,
        "{} rounds: {gaps:?}",
        rounds.len()
    );
    for w in gaps.windows(2) {
        assert!(w[1] > w[0] * 1.5, "gaps do not grow: {gaps:?}");
    }
    // Meanwhile the service with a spec was asked about once per interval.
    let asked = with_spec.hits("/openapi.json").len();
    assert!(asked >= 20, "{asked} requests to the service with a spec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_a_spec_is_not_probed_after_the_cap_until_its_upstream_changes() {
    let core = Core::start();
    let specs = SpecServer::start().await;
    apply(&core, upstream("late", specs.addr.port(), Some("enabled"))).await;
    // Probes at once, after 200 ms, and after 400 ms (the cap): the last.
    let d = start(
        &core,
        &[
            "--interval",
            "100ms",
            "--max-probe-interval",
            "400ms",
            "--spec-path",
            "/openapi.json",
        ],
    );
    let stopped = [("upstream", "default/late")];
    eventually(Duration::from_secs(10), || {
        (d.metric("openapi_probing_stopped", &stopped) == 1.0).then_some(())
    })
    .unwrap_or_else(|| panic!("probing did not stop\n{}", d.log()));
    let asked = specs.hits("/openapi.json").len();
    assert_eq!(asked, 3, "{:?}", specs.seen());
    assert!(d.log().contains("not probing again"), "{}", d.log());

    // The service starts serving a spec: nobody asks.
    specs.set("/openapi.json", fixture_text("openapi30.json"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(specs.hits("/openapi.json").len(), asked);

    // A change to the Upstream (here an annotation a person adds) makes it worth asking again.
    let mut touched = upstream("late", specs.addr.port(), Some("enabled"));
    touched
        .metadata
        .as_mut()
        .unwrap()
        .annotations
        .insert("note".into(), "deployed v2".into());
    apply(&core, touched).await;
    wait_names(&core, &d, "late", &["find-orders", "get-order"]).await;
    assert_eq!(d.metric("openapi_probing_stopped", &stopped), 0.0);
    assert!(d.log().contains("probing it again"), "{}", d.log());
}

/// The state and reason of the Upstream's status.
async fn upstream_status(core: &Core, name: &str) -> (State, String) {
    let r = core
        .list(Kind::Upstream)
        .await
        .into_iter()
        .find(|r| r.metadata.as_ref().is_some_and(|m| m.name == name))
        .unwrap_or_else(|| panic!("no upstream {name}"));
    let s = r.status.unwrap_or_default();
    (s.state(), s.reason)
}

/// Waits until the Upstream's status is `state` with a reason `check` likes.
async fn wait_status(
    core: &Core,
    d: &Discovery,
    name: &str,
    state: State,
    check: impl Fn(&str) -> bool,
) -> String {
    let mut last = (State::Pending, String::new());
    for _ in 0..200 {
        last = upstream_status(core, name).await;
        if last.0 == state && check(&last.1) {
            return last.1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "upstream {name} is {:?} ({:?}), want {state:?}\ndiscovery log:\n{}",
        last.0,
        last.1,
        d.log()
    );
}

/// The `discovery.solo.io/openapi-problem` annotations on Functions.
async fn problem_annotations(core: &Core) -> Vec<String> {
    core.list(Kind::Function)
        .await
        .into_iter()
        .filter_map(|r| {
            r.metadata?
                .annotations
                .get("discovery.solo.io/openapi-problem")
                .cloned()
        })
        .collect()
}

/// Serves a good spec, then `bad`, and checks the Functions stay, the problem shows in the
/// Upstream's status (a Warning naming the problem and the path), the metrics and the log,
/// and a good spec clears it (the Upstream is Accepted again). `says` is a piece of the
/// problem's text the Warning must carry.
async fn bad_spec_keeps_last_good(bad: Vec<u8>, problem: &str, says: &str, extra: &[&str]) {
    let core = Core::start();
    let specs = SpecServer::start().await;
    let good = fixture_text("openapi30.json");
    specs.set("/openapi.json", good.clone());
    apply(&core, upstream("shop", specs.addr.port(), Some("enabled"))).await;
    let mut args = vec!["--interval", "200ms"];
    args.extend_from_slice(extra);
    let d = start(&core, &args);
    wait_names(&core, &d, "shop", &["find-orders", "get-order"]).await;
    wait_status(&core, &d, "shop", State::Accepted, |_| true).await;

    specs.set("/openapi.json", bad);
    let labels = [("upstream", "default/shop"), ("problem", problem)];
    eventually(Duration::from_secs(10), || {
        (d.metric("openapi_spec_problem", &labels) == 1.0).then_some(())
    })
    .unwrap_or_else(|| panic!("no {problem} problem reported\n{}", d.log()));
    let log = d.log();
    assert!(
        log.contains("bad spec") && log.contains("/openapi.json"),
        "the log names neither the problem nor the path:\n{log}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(names_of(&core, "shop").await, ["find-orders", "get-order"]);
    // The kept Functions say why they are stale.
    let notes = problem_annotations(&core).await;
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes.iter().all(|n| n.contains("/openapi.json")),
        "{notes:?}"
    );
    // The Upstream, which discovery does not own, says what is wrong and where.
    let url = format!("http://127.0.0.1:{}/openapi.json", specs.addr.port());
    let reason = wait_status(&core, &d, "shop", State::Warning, |r| r.contains(&url)).await;
    assert!(
        reason.starts_with(&format!("discovery-openapi: {url}: ")) && reason.contains(says),
        "{reason:?} does not name the problem ({says:?})"
    );
    assert_eq!(names_of(&core, "shop").await, ["find-orders", "get-order"]);
    let mut d = d;
    assert!(d.running(), "the service died:\n{}", d.log());

    specs.set(
        "/openapi.json",
        good.replace("\"find_orders\"", "\"search\""),
    );
    wait_names(&core, &d, "shop", &["get-order", "search"]).await;
    assert_eq!(d.metric("openapi_spec_problem", &labels), 0.0);
    assert!(problem_annotations(&core).await.is_empty());
    let reason = wait_status(&core, &d, "shop", State::Accepted, |_| true).await;
    assert_eq!(reason, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_that_does_not_parse_warns_on_the_upstream_and_keeps_the_last_good_functions() {
    bad_spec_keeps_last_good(
        b"{\"openapi\": \"3.0.3\", \"paths\": {".to_vec(),
        "parse",
        "the spec does not parse",
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_with_an_unresolvable_ref_warns_on_the_upstream_and_keeps_the_last_good_functions() {
    let bad = fixture_text("openapi30.json").replace(
        "#/components/parameters/OrderId",
        "#/components/parameters/Missing",
    );
    let says = "$ref \"#/components/parameters/Missing\" does not resolve";
    bad_spec_keeps_last_good(bad.into_bytes(), "unresolved_ref", says, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_with_duplicate_operation_ids_warns_on_the_upstream_and_keeps_the_last_good_functions(
) {
    let bad = fixture_text("openapi30.json").replace("\"find_orders\"", "\"get_order\"");
    let says = "operationId \"get_order\" is used by both";
    bad_spec_keeps_last_good(bad.into_bytes(), "duplicate_operation_id", says, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_over_the_size_limit_warns_on_the_upstream_and_keeps_the_last_good_functions() {
    let mut big = fixture_text("openapi30.json");
    big.push_str(&" ".repeat(20_000));
    bad_spec_keeps_last_good(
        big.into_bytes(),
        "too_large",
        "more than the limit of 10000",
        &["--max-spec-bytes", "10000"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fastapi_function_is_routed_through_envoy_with_its_path_parameter_and_method() {
    let fastapi = FastApi::start();
    let proxy = Proxy::start(false).await;
    let core = &proxy.core;
    apply(
        core,
        upstream("petstore", fastapi.addr.port(), Some("enabled")),
    )
    .await;
    let d = start(core, &["--interval", "1s"]);
    wait_names(
        core,
        &d,
        "petstore",
        &[
            "add-pet",
            "delete-pet",
            "get-pet",
            "inventory-store-inventory-get",
        ],
    )
    .await;
    let to_get_pet = json!({"single": {"upstream": {"name": "petstore"}, "function": "get-pet"}});
    apply(
        core,
        resource(
            Kind::VirtualService,
            "pets",
            json!({"routes": [
                {"matchers": [{"exact": "/store/pets/{id}"}], "routeAction": to_get_pet},
                {"matchers": [{"exact": "/pet/{id}/info"}], "routeAction": to_get_pet},
                {"matchers": [{"prefix": "/shop"}], "routeAction": to_get_pet},
            ]}),
        ),
    )
    .await;

    let listen = proxy.listen;
    let r = eventually(Duration::from_secs(20), || {
        http::get(listen, "/store/pets/42?verbose=true").filter(|r| r.status == 200)
    })
    .unwrap_or_else(|| {
        panic!(
            "no answer through Envoy: {:?}\ngloo-core log:\n{}\nEnvoy log:\n{}",
            http::get(listen, "/store/pets/42"),
            core.log(),
            proxy.envoy.log()
        )
    });
    let body = r.json();
    assert_eq!(body["path"], "/store/pets/42");
    assert_eq!(body["id"], 42);
    assert_eq!(body["name"], "pet-42");
    assert_eq!(body["verbose"], true, "query parameters are kept: {body}");

    // Another public path: the parameter lands in the app's real path.
    let r = http::get(listen, "/pet/7/info?verbose=false").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["path"], "/store/pets/7");
    assert_eq!(r.json()["query"], "verbose=false");
    let r = http::get(listen, "/shop/store/pets/9").unwrap();
    assert_eq!(
        (r.status, r.json()["path"].clone()),
        (200, json!("/store/pets/9"))
    );

    // Wrong method: 405 with Allow, and the app is not called.
    let r = http::request(listen, "DELETE", "/store/pets/42", &[]).unwrap();
    assert_eq!(r.status, 405, "{}", r.body);
    assert_eq!(r.header("allow"), Some("GET"));
    // Not a match of the template at all: not this route.
    assert_eq!(
        http::get(listen, "/store/pets/42/extra").unwrap().status,
        404
    );
}

/// Benchmark (run by `bench/run-openapi.sh`): requests per upstream when nothing changes,
/// counted at the spec servers, and extrapolated to an hour at the default flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: bash bench/run-openapi.sh"]
async fn request_rate() {
    const N: usize = 10;
    let interval = 0.25;
    let max_probe = 4.0;
    let window = 20.0;
    let core = Core::start();
    let mut with = Vec::new();
    let mut without = Vec::new();
    for i in 0..N {
        let s = SpecServer::start().await;
        s.set("/openapi.json", fixture_text("openapi30.json"));
        apply(
            &core,
            upstream(&format!("spec-{i}"), s.addr.port(), Some("enabled")),
        )
        .await;
        with.push(s);
        let e = SpecServer::start().await;
        apply(
            &core,
            upstream(&format!("nospec-{i}"), e.addr.port(), Some("enabled")),
        )
        .await;
        without.push(e);
    }
    let d = start(
        &core,
        &["--interval", "250ms", "--max-probe-interval", "4s"],
    );
    wait_names(
        &core,
        &d,
        "spec-9",
        &["spec-9-find-orders", "spec-9-get-order"],
    )
    .await;
    let t0 = std::time::Instant::now();
    let before: Vec<usize> = with.iter().map(|s| s.seen().len()).collect();
    let before_none: Vec<usize> = without.iter().map(|s| s.seen().len()).collect();
    tokio::time::sleep(Duration::from_secs_f64(window)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let quiet: Vec<usize> = with
        .iter()
        .zip(&before)
        .map(|(s, b)| s.seen().len() - b)
        .collect();
    let conditional = with
        .iter()
        .zip(&before)
        .all(|(s, b)| s.seen()[*b..].iter().all(|x| x.conditional));
    let none_total: Vec<usize> = without.iter().map(|s| s.seen().len()).collect();
    let none_quiet: Vec<usize> = without
        .iter()
        .zip(&before_none)
        .map(|(s, b)| s.seen().len() - b)
        .collect();
    // The second half of the window: long after every spec-less upstream stopped.
    let late = t0 + Duration::from_secs_f64(window / 2.0);
    let none_late: Vec<usize> = without
        .iter()
        .map(|s| s.seen().iter().filter(|x| x.at >= late).count())
        .collect();
    let paths = 7.0;
    let avg = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
    let per_interval = avg(&quiet) / (elapsed / interval);
    // Rounds of a service without a spec: at 0, then after waits of 2I, 4I, ... up to and
    // including one wait of max_probe; then none. Returns (rounds, when the last one is).
    let model_rounds = |i: f64, max: f64| {
        let (mut t, mut delay, mut n) = (0.0, i, 1);
        while delay < max {
            delay = (delay * 2.0f64).min(max);
            t += delay;
            n += 1;
        }
        (n, t)
    };
    let (rounds_fast, _) = model_rounds(interval, max_probe);
    let (rounds_default, last_default) = model_rounds(30.0, 3600.0);
    println!("| upstream | measured ({N} each, {window:.0} s, interval {interval}s, max probe {max_probe}s) | per interval | per hour at --interval 30s, --max-probe-interval 1h |");
    println!("|---|---|---|---|");
    println!(
        "| serving a spec, unchanged | {:.1} requests each ({}) | {per_interval:.2} | {:.0} (one conditional GET per interval, answered 304) |",
        avg(&quiet),
        if conditional { "all conditional" } else { "NOT all conditional" },
        per_interval * 3600.0 / 30.0
    );
    println!(
        "| serving no spec ({paths} paths per round) | {:.1} requests each in total ({:.1} rounds; model {rounds_fast} rounds, then none), {:.1} in the measured window, {:.1} in its second half | — | {:.0} in total over the first {:.1} h ({rounds_default} rounds), then 0 per hour |",
        avg(&none_total),
        avg(&none_total) / paths,
        avg(&none_quiet),
        avg(&none_late),
        paths * rounds_default as f64,
        last_default / 3600.0,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_the_spec_is_bad_keeps_the_functions_written_before() {
    let core = Core::start();
    let specs = SpecServer::start().await;
    let good = fixture_text("openapi30.json");
    specs.set("/openapi.json", good.clone());
    apply(&core, upstream("shop", specs.addr.port(), Some("enabled"))).await;
    let mut d = start(&core, &["--interval", "200ms"]);
    wait_names(&core, &d, "shop", &["find-orders", "get-order"]).await;
    d.terminate();

    specs.set(
        "/openapi.json",
        good.replace("\"find_orders\"", "\"get_order\""),
    );
    d.restart();
    d.wait_ready(Duration::from_secs(20));
    let labels = [
        ("upstream", "default/shop"),
        ("problem", "duplicate_operation_id"),
    ];
    eventually(Duration::from_secs(10), || {
        (d.metric("openapi_spec_problem", &labels) == 1.0).then_some(())
    })
    .unwrap_or_else(|| panic!("no problem reported\n{}", d.log()));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(names_of(&core, "shop").await, ["find-orders", "get-order"]);
    assert_eq!(problem_annotations(&core).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_an_openapi_url_never_reach_the_status_or_the_log() {
    let core = Core::start();
    let specs = SpecServer::start().await;
    specs.set(
        "/private/openapi.json",
        b"{\"openapi\": \"3.0.3\", \"paths\": {".to_vec(),
    );
    let mut up = upstream("vault", specs.addr.port(), Some("enabled"));
    let port = specs.addr.port();
    up.metadata.as_mut().unwrap().annotations.insert(
        "discovery.solo.io/openapi-url".into(),
        format!("http://alice:s3cret@127.0.0.1:{port}/private/openapi.json"),
    );
    apply(&core, up).await;
    let d = start(&core, &["--interval", "200ms"]);
    let shown = format!("http://***:***@127.0.0.1:{port}/private/openapi.json");
    let reason = wait_status(&core, &d, "vault", State::Warning, |r| r.contains(&shown)).await;
    assert!(reason.contains("the spec does not parse"), "{reason:?}");
    let log = d.log();
    assert!(log.contains("bad spec"), "{log}");
    assert!(
        !reason.contains("s3cret") && !log.contains("s3cret"),
        "the password is shown:\n{reason}\n{log}"
    );
}
