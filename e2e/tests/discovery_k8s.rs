//! discovery-k8s against a Kubernetes API server speaking the real list/watch protocol
//! (`e2e::k8s::ApiServer`) and a real gloo-core: Services and EndpointSlices become Upstreams
//! and Endpoints and their changes are followed, outages on either side delete nothing and are
//! caught up, a person's edit survives rediscovery, and a real Envoy routes to a discovered
//! Service.
use std::time::Duration;

use e2e::{
    discovery::Discovery,
    envoy::Proxy,
    fixtures::{key, resource},
    http::{self, eventually, Backend},
    k8s::{endpoint_slice, service, ApiServer},
    Client, Core, ADMIN_TOKEN, EDITOR_TOKEN, K8S_TOKEN,
};
use proto::v1::{
    resource::Spec, upstream_spec::UpstreamType, ApplyRequest, GetRequest, Kind, ListRequest,
    Resource, SyncRequest,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn start(core: &Core, api: &ApiServer, extra: &[&str]) -> Discovery {
    let kubeconfig = api.kubeconfig();
    let mut args = vec![
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--max-backoff",
        "1s",
    ];
    args.extend_from_slice(extra);
    Discovery::start("discovery-k8s", core, K8S_TOKEN, &args)
}

async fn list(c: &mut Client, kind: Kind) -> Vec<Resource> {
    let mut items = c
        .list(ListRequest {
            kind: kind as i32,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .items;
    items.sort_by_key(|r| {
        let m = r.metadata.clone().unwrap();
        (m.namespace, m.name)
    });
    items
}

async fn names(c: &mut Client, kind: Kind) -> Vec<String> {
    list(c, kind)
        .await
        .into_iter()
        .map(|r| {
            let m = r.metadata.unwrap();
            format!("{}/{}", m.namespace, m.name)
        })
        .collect()
}

async fn get(c: &mut Client, kind: Kind, ns: &str, name: &str) -> Option<Resource> {
    c.get(GetRequest {
        key: key(kind, ns, name),
    })
    .await
    .ok()
    .and_then(|r| r.into_inner().resource)
}

/// `address:port` of the Endpoints object `ns/name`, sorted.
async fn endpoints(c: &mut Client, ns: &str, name: &str) -> Option<Vec<String>> {
    let r = get(c, Kind::Endpoints, ns, name).await?;
    let Some(Spec::Endpoints(e)) = r.spec else {
        panic!("not Endpoints: {r:?}")
    };
    let mut v: Vec<String> = e
        .endpoints
        .iter()
        .map(|e| format!("{}:{}", e.address, e.port))
        .collect();
    v.sort();
    Some(v)
}

/// Polls until `f` returns `want`; panics with the discovery log otherwise.
macro_rules! wait_eq {
    ($d:expr, $f:expr, $want:expr) => {{
        let want = $want;
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let got = $f;
            if got == want {
                break;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "{} is {:?}, want {:?}\ndiscovery-k8s log:\n{}",
                    stringify!($f),
                    got,
                    want,
                    $d.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }};
}

fn writes(d: &Discovery) -> f64 {
    d.metric("discovery_writes_total", &[])
}

#[tokio::test]
async fn services_and_slices_become_upstreams_and_endpoints_and_changes_are_followed() {
    let core = Core::start();
    let api = ApiServer::start();
    let mut d = start(&core, &api, &["--exclude-namespace", "kube-system"]);
    d.wait_ready(WAIT);
    let mut c = core.client(ADMIN_TOKEN).await;

    api.apply_service(&service(
        "default",
        "pets",
        json!({"app": "pets", "team": "a"}),
        &[("http", 80, 8080), ("grpc-api", 9000, 9090)],
    ));
    api.apply_slice(&endpoint_slice(
        "default",
        "pets-1",
        "pets",
        &[("http", 8080), ("grpc-api", 9090)],
        &["10.0.0.1", "10.0.0.2", "10.0.0.3"],
    ));
    // Not discovered: opted out by annotation, or in an excluded namespace.
    let mut off = service("default", "off", json!({}), &[("http", 80, 80)]);
    off["metadata"]["annotations"] = json!({"discovery.solo.io/disable": "true"});
    api.apply_service(&off);
    api.apply_service(&service(
        "kube-system",
        "dns",
        json!({}),
        &[("tcp", 53, 53)],
    ));

    wait_eq!(
        d,
        names(&mut c, Kind::Upstream).await,
        ["default/default-pets-80", "default/default-pets-9000"]
    );
    wait_eq!(
        d,
        endpoints(&mut c, "default", "default-pets-80").await,
        Some(vec![
            "10.0.0.1:8080".to_string(),
            "10.0.0.2:8080".into(),
            "10.0.0.3:8080".into()
        ])
    );
    wait_eq!(
        d,
        endpoints(&mut c, "default", "default-pets-9000").await,
        Some(vec![
            "10.0.0.1:9090".to_string(),
            "10.0.0.2:9090".into(),
            "10.0.0.3:9090".into()
        ])
    );
    let up = get(&mut c, Kind::Upstream, "default", "default-pets-80")
        .await
        .unwrap();
    let meta = up.metadata.clone().unwrap();
    assert_eq!(meta.owner, "discovery-k8s");
    assert_eq!(meta.labels.get("team").map(String::as_str), Some("a"));
    let Some(Spec::Upstream(u)) = &up.spec else {
        panic!()
    };
    let Some(UpstreamType::Kube(k)) = &u.upstream_type else {
        panic!("{u:?}")
    };
    assert_eq!(
        (
            k.service_name.as_str(),
            k.service_namespace.as_str(),
            k.service_port
        ),
        ("pets", "default", 80)
    );
    assert!(!u.use_http2);
    let Some(Spec::Upstream(g)) = get(&mut c, Kind::Upstream, "default", "default-pets-9000")
        .await
        .unwrap()
        .spec
    else {
        panic!()
    };
    assert!(g.use_http2, "a port named grpc-* speaks HTTP/2");

    // A changed port: the old Upstream goes, the new one comes.
    api.apply_service(&service(
        "default",
        "pets",
        json!({"app": "pets", "team": "a"}),
        &[("http", 81, 8080), ("grpc-api", 9000, 9090)],
    ));
    wait_eq!(
        d,
        names(&mut c, Kind::Upstream).await,
        ["default/default-pets-81", "default/default-pets-9000"]
    );
    wait_eq!(
        d,
        endpoints(&mut c, "default", "default-pets-81")
            .await
            .map(|v| v.len()),
        Some(3)
    );

    // Scaled down to one ready pod, then a second slice appears.
    api.apply_slice(&endpoint_slice(
        "default",
        "pets-1",
        "pets",
        &[("http", 8080), ("grpc-api", 9090)],
        &["10.0.0.2"],
    ));
    wait_eq!(
        d,
        endpoints(&mut c, "default", "default-pets-81").await,
        Some(vec!["10.0.0.2:8080".to_string()])
    );
    api.apply_slice(&endpoint_slice(
        "default",
        "pets-2",
        "pets",
        &[("http", 8080)],
        &["10.0.1.1"],
    ));
    wait_eq!(
        d,
        endpoints(&mut c, "default", "default-pets-81").await,
        Some(vec!["10.0.0.2:8080".to_string(), "10.0.1.1:8080".into()])
    );

    // A broken watch resumes from its resourceVersion; an expired one (410) relists. Neither
    // rewrites anything, as the set is the same.
    let before = writes(&d);
    assert!(
        api.drop_watches() >= 2,
        "both watches were open\n{}",
        api.log()
    );
    // Both watches resumed (watching again) once an expiry reaches two open watches.
    let mut expired = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        expired += api.expire_watches();
        if expired >= 2 {
            break;
        }
    }
    assert!(expired >= 2, "the watches resumed\n{}", d.log());
    // The relisted set reaches the sync driver, which sees it unchanged and writes nothing.
    wait_eq!(
        d,
        d.metric("discovery_syncs_total", &[("result", "skipped")]) >= 1.0,
        true
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        writes(&d),
        before,
        "a relist of the same state wrote nothing"
    );

    // Deleted: its Upstreams and Endpoints go away.
    api.delete_service("default", "pets");
    wait_eq!(d, names(&mut c, Kind::Upstream).await, Vec::<String>::new());
    wait_eq!(
        d,
        names(&mut c, Kind::Endpoints).await,
        Vec::<String>::new()
    );

    assert_eq!(d.terminate(), Some(0), "SIGTERM exits cleanly");
}

#[tokio::test]
async fn not_ready_and_nothing_synced_until_the_initial_list_completes() {
    let core = Core::start();
    let mut api = ApiServer::start();
    // What discovery-k8s found in an earlier life: an empty (premature) Sync would delete it.
    let mut k8s = core.client(K8S_TOKEN).await;
    k8s.sync(SyncRequest {
        owner: "discovery-k8s".into(),
        kinds: vec![Kind::Upstream as i32, Kind::Endpoints as i32],
        resources: vec![resource(
            Kind::Upstream,
            "default-old-80",
            json!({"kube": {"serviceName": "old", "serviceNamespace": "default", "servicePort": 80}}),
        )],
        dry_run: false,
    })
    .await
    .expect("seeding discovery-k8s' earlier objects");
    let mut c = core.client(ADMIN_TOKEN).await;
    api.apply_service(&service("default", "a", json!({}), &[("http", 80, 80)]));
    api.kill();

    let mut d = start(&core, &api, &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(d.running(), "{}", d.log());
    assert_ne!(
        e2e::http_get(d.metrics, "/readyz").map(|(code, _)| code),
        Some(200),
        "not ready while the API server is down\n{}",
        d.log()
    );
    assert_eq!(d.metric("discovery_syncs_total", &[]), 0.0);
    assert!(
        d.metric("discovery_retries_total", &[]) >= 1.0,
        "{}",
        d.log()
    );
    assert_eq!(
        names(&mut c, Kind::Upstream).await,
        ["default/default-old-80"],
        "nothing deleted before the first complete list"
    );

    api.restart();
    d.wait_ready(WAIT);
    wait_eq!(
        d,
        names(&mut c, Kind::Upstream).await,
        ["default/default-a-80"]
    );
}

#[tokio::test]
async fn outages_of_the_api_server_or_gloo_core_delete_nothing_and_are_caught_up() {
    let mut core = Core::start();
    let mut api = ApiServer::start();
    let mut d = start(&core, &api, &[]);
    d.wait_ready(WAIT);
    let mut c = core.client(ADMIN_TOKEN).await;
    api.apply_service(&service("default", "a", json!({}), &[("http", 80, 80)]));
    api.apply_slice(&endpoint_slice(
        "default",
        "a-1",
        "a",
        &[("http", 80)],
        &["10.0.0.1"],
    ));
    wait_eq!(
        d,
        endpoints(&mut c, "default", "default-a-80").await,
        Some(vec!["10.0.0.1:80".to_string()])
    );

    // The API server goes away: discovery backs off and deletes nothing.
    let retries = d.metric("discovery_retries_total", &[]);
    api.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        d.metric("discovery_retries_total", &[]) > retries,
        "{}",
        d.log()
    );
    assert_eq!(
        d.metric("discovery_writes_total", &[("op", "deleted")]),
        0.0
    );
    assert_eq!(
        names(&mut c, Kind::Upstream).await,
        ["default/default-a-80"]
    );
    // Back (same objects, as after an API server restart): changes are followed again.
    api.restart();
    api.apply_service(&service("default", "b", json!({}), &[("http", 80, 80)]));
    wait_eq!(
        d,
        names(&mut c, Kind::Upstream).await,
        ["default/default-a-80", "default/default-b-80"]
    );

    // gloo-core goes away: Syncs are retried with backoff; the change lands when it is back.
    core.kill9();
    let storage_retries = d.metric("discovery_retries_total", &[("target", "storage")]);
    api.apply_slice(&endpoint_slice(
        "default",
        "a-1",
        "a",
        &[("http", 80)],
        &["10.0.0.1", "10.0.0.2"],
    ));
    let retried = eventually(WAIT, || {
        (d.metric("discovery_retries_total", &[("target", "storage")]) > storage_retries)
            .then_some(())
    });
    assert!(retried.is_some(), "Sync retried\n{}", d.log());
    core.restart();
    let mut c = core.client(ADMIN_TOKEN).await;
    wait_eq!(
        d,
        endpoints(&mut c, "default", "default-a-80").await,
        Some(vec!["10.0.0.1:80".to_string(), "10.0.0.2:80".into()])
    );
    assert_eq!(
        d.metric("discovery_writes_total", &[("op", "deleted")]),
        0.0
    );
}

#[tokio::test]
async fn a_persons_health_check_on_a_discovered_upstream_survives_rediscovery() {
    let core = Core::start();
    let api = ApiServer::start();
    let mut d = start(&core, &api, &[]);
    d.wait_ready(WAIT);
    let mut c = core.client(ADMIN_TOKEN).await;
    api.apply_service(&service(
        "default",
        "a",
        json!({"v": "1"}),
        &[("http", 80, 80)],
    ));
    wait_eq!(
        d,
        names(&mut c, Kind::Upstream).await,
        ["default/default-a-80"]
    );

    // A person (editor) adds a health check to the discovered Upstream.
    let mut editor = core.client(EDITOR_TOKEN).await;
    let mut up = get(&mut editor, Kind::Upstream, "default", "default-a-80")
        .await
        .unwrap();
    let Some(Spec::Upstream(u)) = &mut up.spec else {
        panic!()
    };
    let Spec::Upstream(hc) = resource(
        Kind::Upstream,
        "x",
        json!({"healthChecks": [{"timeout": "1s", "interval": "5s", "unhealthyThreshold": 2,
               "healthyThreshold": 1, "http": {"path": "/healthz"}}]}),
    )
    .spec
    .unwrap() else {
        panic!()
    };
    u.health_checks = hc.health_checks;
    editor
        .apply(ApplyRequest {
            resource: Some(up),
            ..Default::default()
        })
        .await
        .expect("the editor's Apply");

    // The Service changes: discovery rewrites the Upstream (new label) and keeps the check.
    api.apply_service(&service(
        "default",
        "a",
        json!({"v": "2"}),
        &[("http", 80, 80)],
    ));
    wait_eq!(
        d,
        get(&mut c, Kind::Upstream, "default", "default-a-80")
            .await
            .and_then(|r| r.metadata)
            .and_then(|m| m.labels.get("v").cloned()),
        Some("2".to_string())
    );
    let up = get(&mut c, Kind::Upstream, "default", "default-a-80")
        .await
        .unwrap();
    let Some(Spec::Upstream(u)) = &up.spec else {
        panic!()
    };
    assert_eq!(u.health_checks.len(), 1, "the edit survived: {up:?}");
    assert!(matches!(u.upstream_type, Some(UpstreamType::Kube(_))));
    let managers = &up.metadata.as_ref().unwrap().field_managers;
    assert_eq!(
        managers.get("spec.healthChecks").map(String::as_str),
        Some("alice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_routes_to_a_backend_at_the_discovered_address() {
    let mut proxy = Proxy::start(false).await;
    let backend = Backend::start("pets").await;
    let api = ApiServer::start();
    let mut d = start(&proxy.core, &api, &[]);
    d.wait_ready(WAIT);

    api.apply_service(&service(
        "default",
        "pets",
        json!({}),
        &[("http", 80, 8080)],
    ));
    api.apply_slice(&endpoint_slice(
        "default",
        "pets-1",
        "pets",
        &[("http", backend.addr.port())],
        &["127.0.0.1"],
    ));
    wait_eq!(
        d,
        endpoints(&mut proxy.client, "default", "default-pets-80").await,
        Some(vec![format!("127.0.0.1:{}", backend.addr.port())])
    );
    proxy
        .client
        .apply(ApplyRequest {
            resource: Some(resource(
                Kind::VirtualService,
                "pets",
                json!({"routes": [{"routeAction":
                    {"single": {"upstream": {"name": "default-pets-80"}}}}]}),
            )),
            ..Default::default()
        })
        .await
        .expect("applying the VirtualService");
    let answer = eventually(WAIT, || {
        http::get(proxy.listen, "/pets/1").filter(|r| r.status == 200)
    });
    let answer = answer.unwrap_or_else(|| {
        panic!(
            "Envoy never answered 200: {:?}\ngloo-core log:\n{}",
            http::get(proxy.listen, "/pets/1"),
            proxy.core.log()
        )
    });
    assert_eq!(answer.backend().as_deref(), Some("pets"));
    assert_eq!(answer.json()["path"], "/pets/1");
}
