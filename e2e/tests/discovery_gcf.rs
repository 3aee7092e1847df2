//! discovery-gcf against the Cloud Functions admin API test double (Google's v2 JSON, RS256
//! JWTs checked at its token endpoint) and a real gloo-core; end to end, a function served by
//! the real functions-framework answers through a real Envoy.
use std::{collections::BTreeMap, time::Duration};

use e2e::{
    discovery::Discovery,
    envoy::Proxy,
    fixtures::resource,
    gcf::{function, FunctionsFramework, GcfApi},
    http::{self, eventually},
    Client, Core, ADMIN_TOKEN, GCF_TOKEN,
};
use proto::v1::{function_spec, resource::Spec, ApplyRequest, GcfFunction, Kind, Resource};
use serde_json::json;

const PROJECT: &str = "test-project";

async fn apply(c: &mut Client, r: Resource) {
    c.apply(ApplyRequest {
        resource: Some(r),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("apply: {e}"));
}

/// The Secret with the service-account key and a GCP Upstream `gcp` using it, listing every
/// location of the project at `api`.
async fn gcp_upstream(c: &mut Client, api: &GcfApi, extra: serde_json::Value) {
    apply(
        c,
        resource(
            Kind::Secret,
            "gcp-sa",
            json!({"gcp": {"serviceAccountJson": api.key_json()}}),
        ),
    )
    .await;
    let mut gcp =
        json!({"project": PROJECT, "secretRef": {"name": "gcp-sa"}, "endpoint": api.url()});
    if let (Some(g), Some(e)) = (gcp.as_object_mut(), extra.as_object()) {
        g.extend(e.clone());
    }
    apply(c, resource(Kind::Upstream, "gcp", json!({ "gcp": gcp }))).await;
}

/// The Functions in gloo-core: name → (upstream, gcf spec).
async fn functions(core: &Core) -> BTreeMap<String, (String, GcfFunction)> {
    core.list(Kind::Function)
        .await
        .into_iter()
        .filter_map(|r| {
            let name = r.metadata?.name;
            match r.spec? {
                Spec::Function(f) => match f.function? {
                    function_spec::Function::Gcf(g) => Some((name, (f.upstream, g))),
                    _ => None,
                },
                _ => None,
            }
        })
        .collect()
}

async fn function_names(core: &Core) -> Vec<String> {
    functions(core).await.into_keys().collect()
}

async fn wait_names(core: &Core, d: &Discovery, want: &[&str]) {
    for _ in 0..300 {
        if function_names(core).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "functions are {:?}, want {want:?}\ndiscovery log:\n{}",
        function_names(core).await,
        d.log()
    );
}

fn start_discovery(core: &Core, api: &GcfApi, extra: &[&str]) -> Discovery {
    let mut args = vec!["--interval", "300ms", "--max-interval", "1s"];
    let token_url = api.token_url();
    args.extend_from_slice(&["--token-url", &token_url]);
    args.extend_from_slice(extra);
    Discovery::start("discovery-gcf", core, GCF_TOKEN, &args)
}

fn url(name: &str) -> String {
    format!("https://{name}-abc123-uc.a.run.app")
}

#[tokio::test]
async fn paged_listing_keeps_active_http_functions_follows_deletes_and_refreshes_the_token() {
    // Pages of 2; tokens live 3 s.
    let api = GcfApi::start(2, 3);
    let mut event = function(
        PROJECT,
        "us-central1",
        "on-upload",
        "ACTIVE",
        &url("on-upload"),
    );
    event["eventTrigger"] = json!({
        "eventType": "google.cloud.storage.object.v1.finalized",
        "trigger": "projects/test-project/locations/us-central1/triggers/t",
    });
    api.set_functions(&[
        function(PROJECT, "us-central1", "alpha", "ACTIVE", &url("alpha")),
        function(PROJECT, "europe-west1", "beta", "ACTIVE", &url("beta")),
        function(
            PROJECT,
            "us-central1",
            "deploying",
            "DEPLOYING",
            &url("deploying"),
        ),
        event,
        function(PROJECT, "us-east1", "gamma", "ACTIVE", &url("gamma")),
        function(
            "other-project",
            "us-central1",
            "elsewhere",
            "ACTIVE",
            &url("x"),
        ),
    ]);
    let core = Core::start();
    let mut c = core.client(ADMIN_TOKEN).await;
    gcp_upstream(&mut c, &api, json!({})).await;
    let mut d = start_discovery(&core, &api, &[]);
    d.wait_ready(Duration::from_secs(30));
    wait_names(&core, &d, &["alpha", "beta", "gamma"]).await;
    let fns = functions(&core).await;
    assert_eq!(
        fns["beta"],
        (
            "gcp".to_string(),
            GcfFunction {
                name: "projects/test-project/locations/europe-west1/functions/beta".into(),
                url: url("beta"),
            }
        )
    );
    // Three pages per listing (5 functions of the project, 2 a page).
    assert!(api.stat("list_requests") >= 3);

    // A deleted function disappears.
    api.set_functions(&[
        function(PROJECT, "us-central1", "alpha", "ACTIVE", &url("alpha")),
        function(PROJECT, "us-east1", "gamma", "ACTIVE", &url("gamma")),
    ]);
    wait_names(&core, &d, &["alpha", "gamma"]).await;

    // Tokens are fetched again before they expire: after 7 s of polling with 3 s tokens,
    // several token requests, and the API never saw an expired or unknown token.
    let before = api.stat("token_requests");
    tokio::time::sleep(Duration::from_secs(7)).await;
    let after = api.stat("token_requests");
    assert!(
        after >= before + 2,
        "token requests {before} → {after}\n{}",
        d.log()
    );
    assert_eq!(api.stat("bad_tokens"), 0, "{}", d.log());
    assert!(!d.log().contains("BEGIN PRIVATE KEY"));
}

#[tokio::test]
async fn api_errors_and_outages_back_off_and_delete_nothing() {
    let mut api = GcfApi::start(2, 3600);
    api.set_functions(&[
        function(PROJECT, "us-central1", "alpha", "ACTIVE", &url("alpha")),
        function(PROJECT, "us-central1", "beta", "ACTIVE", &url("beta")),
    ]);
    let core = Core::start();
    let mut c = core.client(ADMIN_TOKEN).await;
    gcp_upstream(&mut c, &api, json!({"region": "us-central1"})).await;
    let mut d = start_discovery(&core, &api, &[]);
    d.wait_ready(Duration::from_secs(30));
    wait_names(&core, &d, &["alpha", "beta"]).await;

    let backoff = |d: &Discovery| d.metric("discovery_backoff_seconds", &[("target", "gcf")]);
    let retries = |d: &Discovery| d.metric("discovery_retries_total", &[("target", "gcf")]);

    // 429: throttled, backing off.
    api.fail(429, -1);
    eventually(Duration::from_secs(10), || {
        (d.metric("discovery_errors_total", &[("kind", "throttled")]) >= 2.0 && backoff(&d) > 0.0)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no throttling backoff:\n{}", d.metrics_text()));
    // Backing off: far fewer listings than polls every 300 ms would make.
    let (r0, l0) = (retries(&d), api.stat("list_requests"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (r1, l1) = (retries(&d), api.stat("list_requests"));
    assert!(r1 > r0, "retries {r0} → {r1}");
    assert!(
        l1 - l0 <= 7,
        "{} listings in 3 s while backing off",
        l1 - l0
    );
    assert_eq!(function_names(&core).await, ["alpha", "beta"]);

    // 500: a source error, still nothing deleted.
    api.fail(500, -1);
    eventually(Duration::from_secs(15), || {
        (d.metric("discovery_errors_total", &[("kind", "source")]) >= 1.0).then_some(())
    })
    .unwrap_or_else(|| panic!("no source error:\n{}", d.metrics_text()));
    assert_eq!(function_names(&core).await, ["alpha", "beta"]);

    // Down (connection refused), and discovery restarted meanwhile: nothing deleted.
    api.stop();
    d.restart();
    d.wait_ready(Duration::from_secs(30));
    let errors = d.metric("discovery_errors_total", &[]);
    eventually(Duration::from_secs(15), || {
        (d.metric("discovery_errors_total", &[("kind", "source")]) >= 2.0 && backoff(&d) > 0.0)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no errors while down ({errors}):\n{}", d.metrics_text()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        function_names(&core).await,
        ["alpha", "beta"],
        "{}",
        d.log()
    );

    // Back up with one function: discovery recovers, and the other one goes.
    api.start_again();
    api.set_functions(&[function(
        PROJECT,
        "us-central1",
        "alpha",
        "ACTIVE",
        &url("alpha"),
    )]);
    wait_names(&core, &d, &["alpha"]).await;
    eventually(Duration::from_secs(10), || {
        (backoff(&d) == 0.0).then_some(())
    })
    .expect("backoff reset after recovery");
}

const FUNCTION_SOURCE: &str = r#"
import json

def hello(request):
    return json.dumps({
        "greeting": "hello from a cloud function",
        "path": request.path,
        "query": request.query_string.decode(),
        "host": request.host,
        "authorization": request.headers.get("Authorization", ""),
    }), 200, {"Content-Type": "application/json"}
"#;

#[tokio::test]
async fn a_discovered_function_answers_through_envoy() {
    let ff = FunctionsFramework::start("hello", FUNCTION_SOURCE);
    let api = GcfApi::start(100, 3600);
    let fn_url = format!("{}/base", ff.url());
    api.set_functions(&[function(PROJECT, "us-central1", "hello", "ACTIVE", &fn_url)]);

    let proxy = Proxy::start(false).await;
    let mut c = proxy.client.clone();
    apply(
        &mut c,
        resource(
            Kind::Secret,
            "fn-token",
            json!({"opaque": {"data": {"token": "invoke-token-123"}}}),
        ),
    )
    .await;
    gcp_upstream(
        &mut c,
        &api,
        json!({"functionAuth": {"tokenSecretRef": {"name": "fn-token"}}}),
    )
    .await;
    let mut d = start_discovery(&proxy.core, &api, &[]);
    d.wait_ready(Duration::from_secs(30));
    wait_names(&proxy.core, &d, &["hello"]).await;
    apply(
        &mut c,
        resource(
            Kind::VirtualService,
            "functions",
            json!({"routes": [{
                "matchers": [{"prefix": "/hello"}],
                "routeAction": {"single": {"upstream": {"name": "gcp"}, "function": "hello"}},
            }]}),
        ),
    )
    .await;

    let r = eventually(Duration::from_secs(20), || {
        http::get(proxy.listen, "/hello/world?x=1").filter(|r| r.status == 200)
    })
    .unwrap_or_else(|| {
        panic!(
            "no answer from the function: {:?}\ngloo-core log:\n{}\nEnvoy log:\n{}",
            http::get(proxy.listen, "/hello/world?x=1"),
            proxy.core.log(),
            proxy.envoy.log()
        )
    });
    let body = r.json();
    assert_eq!(
        body["greeting"], "hello from a cloud function",
        "{}",
        r.body
    );
    assert_eq!(body["path"], "/base/world");
    assert_eq!(body["query"], "x=1");
    assert_eq!(body["host"], ff.addr.to_string());
    assert_eq!(body["authorization"], "Bearer invoke-token-123");
    // The token is in no gloo-core answer a viewer gets, nor in its logs.
    let dump = e2e::http_get(proxy.core.admin, "/config_dump")
        .map(|r| r.1)
        .unwrap_or_default();
    assert!(!dump.contains("invoke-token-123"));
    assert!(!proxy.core.log().contains("invoke-token-123"));
}

#[tokio::test]
async fn envoy_accepts_gcp_authn_identity_for_functions() {
    let ff = FunctionsFramework::start("hello", FUNCTION_SOURCE);
    let proxy = Proxy::start(false).await;
    let mut c = proxy.client.clone();
    apply(
        &mut c,
        resource(
            Kind::Upstream,
            "gcp",
            json!({"gcp": {"project": PROJECT, "functionAuth": {"gcpAuthn": true}}}),
        ),
    )
    .await;
    apply(
        &mut c,
        resource(
            Kind::Function,
            "hello",
            json!({"upstream": "gcp", "gcf": {"name": "projects/test-project/locations/l/functions/hello", "url": ff.url()}}),
        ),
    )
    .await;
    apply(
        &mut c,
        resource(
            Kind::VirtualService,
            "functions",
            json!({"routes": [{"routeAction": {"single": {"upstream": {"name": "gcp"}, "function": "hello"}}}]}),
        ),
    )
    .await;
    // Envoy took the listener with gcp_authn, the audience-carrying function cluster and the
    // metadata-server cluster, and refused nothing.
    let dump = eventually(Duration::from_secs(20), || {
        let d = proxy.envoy.config_dump();
        (d.contains("envoy.filters.http.gcp_authn")
            && d.contains("gcp_default-gcf-http-127.0.0.1")
            && d.contains("\"gcp_metadata\""))
        .then_some(d)
    });
    assert!(
        dump.is_some(),
        "Envoy has no gcp_authn config\nEnvoy log:\n{}",
        proxy.envoy.log()
    );
    for stat in [
        "listener_manager.lds.update_rejected",
        "cluster_manager.cds.update_rejected",
    ] {
        assert_eq!(
            proxy.envoy.stat(stat).unwrap_or(0),
            0,
            "{stat}\n{}",
            proxy.envoy.log()
        );
    }
}
