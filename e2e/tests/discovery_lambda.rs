//! discovery-lambda against a real moto (the AWS Lambda API), and Lambda routing through a
//! real Envoy: functions, versions and aliases become Functions; deletions and filters; an
//! outage deletes nothing and is retried with backoff; throttling (TooManyRequestsException)
//! backs off, deletes nothing and catches up; 1,500 functions over 30 pages; and a discovered
//! function invoked through Envoy, SigV4-signed, answering with what moto's function returns.
//!
//! moto 5.2.5 neither pages ListFunctions nor throttles, so the paging and throttling tests put
//! `e2e/py/lambda_api_proxy.py` ([`LambdaApiProxy`]) between discovery and moto: it pages moto's
//! real answer as the published API does (50 per page) and answers AWS's 429 on demand.
use std::time::Duration;

use e2e::{
    discovery::Discovery,
    envoy::Proxy,
    fixtures::resource,
    http::{self, eventually},
    moto::{LambdaApiProxy, Moto},
    Core, ADMIN_TOKEN, LAMBDA_TOKEN,
};
use proto::v1::{function_spec, resource::Spec, ApplyRequest, Kind, LambdaFunction, Resource};
use serde_json::json;

const DISCOVERY: &str = "discovery-lambda";

async fn apply(client: &mut e2e::Client, r: Resource) {
    client
        .apply(ApplyRequest {
            resource: Some(r),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"));
}

/// Secret `creds` with `keys` and an aws Upstream `aws` using it, on the Lambda API at
/// `endpoint` (a moto, or a proxy in front of one).
async fn aws_upstream(client: &mut e2e::Client, endpoint: &str, keys: (&str, &str)) {
    apply(
        client,
        resource(
            Kind::Secret,
            "creds",
            json!({"aws": {"accessKeyId": keys.0, "secretAccessKey": keys.1}}),
        ),
    )
    .await;
    apply(
        client,
        resource(
            Kind::Upstream,
            "aws",
            json!({"aws": {"region": "us-east-1", "secretRef": {"name": "creds"}, "endpoint": endpoint}}),
        ),
    )
    .await;
}

/// The Lambda Functions in gloo-core, by name.
async fn functions(core: &Core) -> Vec<(String, LambdaFunction)> {
    let mut out: Vec<_> = core
        .list(Kind::Function)
        .await
        .into_iter()
        .filter_map(|r| {
            let name = r.metadata?.name;
            match r.spec? {
                Spec::Function(f) => match f.function? {
                    function_spec::Function::Lambda(l) => Some((name, l)),
                    _ => None,
                },
                _ => None,
            }
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn names(core: &Core) -> Vec<String> {
    functions(core).await.into_iter().map(|(n, _)| n).collect()
}

async fn wait_names(core: &Core, d: &Discovery, want: &[&str], timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let have = names(core).await;
        if have == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Functions {have:?}, want {want:?}\ndiscovery log:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn start(core: &Core, extra: &[&str]) -> Discovery {
    let mut args = vec!["--interval", "300ms", "--max-interval", "1s"];
    args.extend_from_slice(extra);
    let mut d = Discovery::start(DISCOVERY, core, LAMBDA_TOKEN, &args);
    d.wait_ready(Duration::from_secs(30));
    d
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_versions_and_aliases_appear_and_a_deleted_function_disappears() {
    let moto = Moto::start();
    moto.lambda(json!([
        {"op": "create", "name": "hello", "tags": {"team": "web"}},
        {"op": "publish", "name": "hello"},
        {"op": "alias", "name": "hello", "alias": "live", "version": "1"},
        {"op": "create", "name": "other"},
    ]));
    let core = Core::start();
    let mut admin = core.client(ADMIN_TOKEN).await;
    aws_upstream(&mut admin, &moto.url(), ("testing", "testing")).await;
    let d = start(&core, &[]);
    wait_names(
        &core,
        &d,
        &["aws-hello", "aws-hello-1", "aws-hello-live", "aws-other"],
        Duration::from_secs(20),
    )
    .await;
    let fns = functions(&core).await;
    let arn = "arn:aws:lambda:us-east-1:123456789012:function:hello";
    let by = |n: &str| fns.iter().find(|(m, _)| m == n).unwrap().1.clone();
    assert_eq!(
        (by("aws-hello").arn, by("aws-hello").qualifier),
        (arn.to_string(), String::new())
    );
    assert_eq!(
        (by("aws-hello-1").arn, by("aws-hello-1").qualifier),
        (format!("{arn}:1"), "1".to_string())
    );
    assert_eq!(
        (by("aws-hello-live").arn, by("aws-hello-live").qualifier),
        (format!("{arn}:live"), "live".to_string())
    );
    assert_eq!(by("aws-hello-live").function_name, "hello");

    moto.lambda(json!([{"op": "delete", "name": "other"}]));
    wait_names(
        &core,
        &d,
        &["aws-hello", "aws-hello-1", "aws-hello-live"],
        Duration::from_secs(20),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_and_name_filters_hold() {
    let moto = Moto::start();
    moto.lambda(json!([
        {"op": "create", "name": "web-a", "tags": {"team": "web"}},
        {"op": "create", "name": "web-b", "tags": {"team": "ops"}},
        {"op": "create", "name": "web-c"},
        {"op": "create", "name": "api-d", "tags": {"team": "web"}},
    ]));
    let core = Core::start();
    let mut admin = core.client(ADMIN_TOKEN).await;
    aws_upstream(&mut admin, &moto.url(), ("testing", "testing")).await;
    let d = start(&core, &["--name-prefix", "web-", "--tag", "team=web"]);
    wait_names(&core, &d, &["aws-web-a"], Duration::from_secs(20)).await;
    // A tag added later is seen by the next poll.
    moto.lambda(json!([{"op": "tag", "name": "web-c", "tags": {"team": "web"}}]));
    wait_names(
        &core,
        &d,
        &["aws-web-a", "aws-web-c"],
        Duration::from_secs(20),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_moto_outage_deletes_nothing_backs_off_and_catches_up() {
    let mut moto = Moto::start();
    moto.lambda(json!([
        {"op": "create", "name": "a"},
        {"op": "create", "name": "b"},
    ]));
    let core = Core::start();
    let mut admin = core.client(ADMIN_TOKEN).await;
    aws_upstream(&mut admin, &moto.url(), ("testing", "testing")).await;
    let d = start(&core, &["--no-aliases"]);
    wait_names(&core, &d, &["aws-a", "aws-b"], Duration::from_secs(20)).await;

    moto.stop();
    let retried = eventually(Duration::from_secs(30), || {
        (d.metric("discovery_retries_total", &[("target", "lambda")]) >= 3.0).then_some(())
    });
    assert!(
        retried.is_some(),
        "no backoff observed:\n{}",
        d.metrics_text()
    );
    assert!(d.metric("discovery_backoff_seconds", &[("target", "lambda")]) > 0.0);
    assert!(d.metric("discovery_errors_total", &[("kind", "source")]) >= 3.0);
    assert_eq!(
        names(&core).await,
        ["aws-a", "aws-b"],
        "an outage deleted Functions"
    );

    // moto comes back (empty, as an emulator restarts): what it has now is what counts.
    moto.start_again();
    moto.lambda(json!([
        {"op": "create", "name": "a"},
        {"op": "create", "name": "c"},
    ]));
    wait_names(&core, &d, &["aws-a", "aws-c"], Duration::from_secs(40)).await;
    let recovered = eventually(Duration::from_secs(10), || {
        (d.metric("discovery_backoff_seconds", &[("target", "lambda")]) == 0.0).then_some(())
    });
    assert!(recovered.is_some(), "{}", d.metrics_text());
}

/// Through the proxy, which pages moto's listing 50 per page as AWS does: 1,500 functions are
/// 30 ListFunctions pages, each followed by its NextMarker.
#[tokio::test(flavor = "multi_thread")]
async fn fifteen_hundred_functions_over_thirty_pages_are_all_discovered() {
    let moto = Moto::start();
    moto.lambda(json!([{"op": "create", "name": "fn", "count": 1500}]));
    let api = LambdaApiProxy::start(&moto, LambdaApiProxy::AWS_PAGE_SIZE);
    let core = Core::start();
    let mut admin = core.client(ADMIN_TOKEN).await;
    aws_upstream(&mut admin, &api.url(), ("testing", "testing")).await;
    let d = start(&core, &["--concurrency", "8"]);
    let found = eventually(Duration::from_secs(120), || {
        let n = d.metric("lambda_callables", &[("target", "default/aws")]);
        (n >= 1500.0).then_some(n)
    });
    assert_eq!(found, Some(1500.0), "log:\n{}", d.log());
    let have = names(&core).await;
    let mut want: Vec<String> = (0..1500).map(|i| format!("aws-fn-{i}")).collect();
    want.sort();
    assert_eq!(have.len(), 1500);
    assert_eq!(have, want);
    // Every listing that completed read 30 pages (one more listing may be under way).
    let (listings, pages) = (
        api.stat("list_functions_snapshots"),
        api.stat("list_functions_pages"),
    );
    assert!(
        listings >= 1 && pages >= 30 * (listings - 1) && pages >= 30,
        "{listings} listings read {pages} pages"
    );
}

/// Sustained throttling: every Lambda call answers 429 TooManyRequestsException with
/// `Retry-After: 2`. The SDK retries each call itself (3 attempts) but does not hide the
/// throttle: each listing then fails as `throttled`, and the service waits at least the 2 s
/// the API asked for, keeps every Function, and catches up once the throttle lifts.
#[tokio::test(flavor = "multi_thread")]
async fn throttling_backs_off_at_least_retry_after_deletes_nothing_and_catches_up() {
    let moto = Moto::start();
    moto.lambda(json!([
        {"op": "create", "name": "a"},
        {"op": "create", "name": "b"},
    ]));
    let api = LambdaApiProxy::start(&moto, LambdaApiProxy::AWS_PAGE_SIZE);
    let core = Core::start();
    let mut admin = core.client(ADMIN_TOKEN).await;
    aws_upstream(&mut admin, &api.url(), ("testing", "testing")).await;
    let d = start(&core, &["--no-aliases"]);
    wait_names(&core, &d, &["aws-a", "aws-b"], Duration::from_secs(20)).await;

    api.throttle(-1, 2);
    // The account changes while discovery cannot read it.
    moto.lambda(json!([
        {"op": "delete", "name": "b"},
        {"op": "create", "name": "c"},
    ]));
    let throttled = eventually(Duration::from_secs(60), || {
        let n = d.metric("lambda_listings_total", &[("result", "throttled")]);
        (n >= 2.0).then_some(n)
    })
    .unwrap_or_else(|| panic!("no throttled listings:\n{}", d.metrics_text()));
    assert!(d.metric("discovery_errors_total", &[("kind", "throttled")]) >= 2.0);
    assert!(d.metric("discovery_retries_total", &[("target", "lambda")]) >= 2.0);
    let backoff = d.metric("discovery_backoff_seconds", &[("target", "lambda")]);
    assert!(backoff >= 2.0, "backoff {backoff} s < Retry-After 2 s");
    // The SDK made its 3 attempts of each failed listing's call before giving up.
    let answered_429 = api.stat("throttled") as f64;
    assert!(
        answered_429 >= 3.0 * throttled,
        "{answered_429} throttled calls for {throttled} throttled listings"
    );
    assert_eq!(
        names(&core).await,
        ["aws-a", "aws-b"],
        "throttling deleted or changed Functions"
    );
    assert_eq!(
        d.metric("discovery_writes_total", &[("op", "deleted")]),
        0.0
    );

    api.throttle(0, 0);
    wait_names(&core, &d, &["aws-a", "aws-c"], Duration::from_secs(40)).await;
    let recovered = eventually(Duration::from_secs(10), || {
        (d.metric("discovery_backoff_seconds", &[("target", "lambda")]) == 0.0).then_some(())
    });
    assert!(recovered.is_some(), "{}", d.metrics_text());
}

/// Two throttled answers in a row are absorbed by the SDK's own retries (its third attempt
/// succeeds): the listing completes, and the service records no error and does not back off.
#[tokio::test(flavor = "multi_thread")]
async fn a_brief_throttle_is_absorbed_by_the_sdk_retries_without_backing_off() {
    let moto = Moto::start();
    moto.lambda(json!([{"op": "create", "name": "a"}]));
    let api = LambdaApiProxy::start(&moto, LambdaApiProxy::AWS_PAGE_SIZE);
    let core = Core::start();
    let mut admin = core.client(ADMIN_TOKEN).await;
    aws_upstream(&mut admin, &api.url(), ("testing", "testing")).await;
    let d = start(&core, &["--no-aliases"]);
    wait_names(&core, &d, &["aws-a"], Duration::from_secs(20)).await;

    api.throttle(2, 1);
    moto.lambda(json!([{"op": "create", "name": "b"}]));
    wait_names(&core, &d, &["aws-a", "aws-b"], Duration::from_secs(30)).await;
    assert_eq!(api.stat("throttled"), 2);
    assert_eq!(
        d.metric("discovery_errors_total", &[("kind", "throttled")]),
        0.0
    );
    assert_eq!(
        d.metric("lambda_listings_total", &[("result", "throttled")]),
        0.0
    );
    assert_eq!(
        d.metric("discovery_retries_total", &[("target", "lambda")]),
        0.0
    );
}

/// Two motos would be odd in production, but moto 5.2.5 cannot verify the signature of a GET
/// with a query string (it hashes the parsed query as the body), and ListFunctions sends
/// `FunctionVersion=ALL`. So discovery lists an open moto (as `--region us-east-1=default/aws`,
/// the store's Upstream excluded by a label selector), and Envoy invokes a second moto holding
/// the same functions that checks every signature against its IAM user's key.
#[tokio::test(flavor = "multi_thread")]
async fn a_discovered_function_is_invoked_through_envoy_signed_with_sigv4() {
    let listed = Moto::start();
    let invoked = Moto::start_authenticated();
    let (key_id, secret) = invoked.keys.clone().unwrap();
    let setup = json!([
        {"op": "create", "name": "hello"},
        {"op": "publish", "name": "hello"},
        {"op": "alias", "name": "hello", "alias": "live", "version": "1"},
    ]);
    listed.lambda(setup.clone());
    invoked.lambda(setup);
    let mut proxy = Proxy::start(false).await;
    aws_upstream(&mut proxy.client, &invoked.url(), (&key_id, &secret)).await;
    // The standard credential chain of the --region target (moto accepts any key).
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let url = listed.url();
    let d = start(
        &proxy.core,
        &[
            "--region",
            "us-east-1=default/aws",
            "--endpoint-url",
            &url,
            "--selector",
            "discover=lambda",
        ],
    );
    wait_names(
        &proxy.core,
        &d,
        &["aws-hello", "aws-hello-1", "aws-hello-live"],
        Duration::from_secs(20),
    )
    .await;
    apply(
        &mut proxy.client,
        resource(
            Kind::VirtualService,
            "lambda",
            json!({"routes": [
                {"matchers": [{"prefix": "/hello"}],
                 "routeAction": {"single": {"upstream": {"name": "aws"}, "function": "aws-hello-live"}}},
            ]}),
        ),
    )
    .await;
    invoked.queue_answers(&["hello from lambda", "second answer"]);
    let post = |path: &str| {
        http::send(
            proxy.listen,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            r#"{"name": "gloo"}"#,
        )
    };
    let r = eventually(Duration::from_secs(20), || {
        post("/hello").filter(|r| r.status == 200)
    })
    .unwrap_or_else(|| {
        panic!(
            "no 200 through Envoy: {:?}\nmoto log:\n{}\nEnvoy log:\n{}",
            post("/hello"),
            invoked.log(),
            proxy.envoy.log()
        )
    });
    assert_eq!(r.body, "hello from lambda");
    // Through moto's invoke API, for exactly the alias the Function names.
    let calls = invoked.invocations();
    assert!(
        calls.iter().any(|l| l.contains(
            "/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:hello:live/invocations"
        ) && l.contains(" 200 ")),
        "{calls:?}"
    );

    // moto checks signatures: the same route signed with a wrong secret is refused.
    apply(
        &mut proxy.client,
        resource(
            Kind::Secret,
            "creds",
            json!({"aws": {"accessKeyId": key_id, "secretAccessKey": "wrong-secret-key"}}),
        ),
    )
    .await;
    let refused = eventually(Duration::from_secs(20), || {
        post("/hello").filter(|r| r.status == 403)
    });
    assert!(
        refused.is_some(),
        "a bad signature was accepted: {:?}",
        post("/hello")
    );

    // The keys never show in gloo-core's /config_dump or in either service's log.
    let (_, dump) = e2e::http_get(proxy.core.admin, "/config_dump").unwrap();
    assert!(dump.contains("nodes"), "{dump}");
    assert!(
        !dump.contains(&secret) && !dump.contains("wrong-secret-key"),
        "{dump}"
    );
    assert!(!proxy.core.log().contains(&secret));
    assert!(!d.log().contains(&secret));
}
