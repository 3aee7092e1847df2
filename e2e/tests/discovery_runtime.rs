//! The shared sync loop against a real gloo-core: desired sets become owner-scoped Syncs,
//! unchanged sets write nothing, and a gloo-core outage only delays.
use std::time::Duration;

use discovery_runtime::{metrics::Metrics, sync::Publisher, sync::SyncDriver};
use e2e::{fixtures::static_upstream, Core, DISCOVERY_OWNER, DISCOVERY_TOKEN};
use prometheus_client::{encoding::text::encode, registry::Registry};
use proto::v1::Kind;
use tokio_util::sync::CancellationToken;

async fn names(core: &Core) -> Vec<String> {
    let mut n: Vec<String> = core
        .list(Kind::Upstream)
        .await
        .into_iter()
        .map(|r| r.metadata.unwrap().name)
        .collect();
    n.sort();
    n
}

async fn eventually_names(core: &Core, want: &[&str]) {
    for _ in 0..200 {
        if names(core).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("upstreams are {:?}, want {want:?}", names(core).await);
}

fn metric(registry: &Registry, name: &str, label: &str) -> f64 {
    let mut text = String::new();
    encode(&mut text, registry).unwrap();
    e2e::discovery::metric_value(
        &text,
        name,
        &label
            .split_once('=')
            .map(|(k, v)| vec![(k, v)])
            .unwrap_or_default(),
    )
}

#[tokio::test]
async fn desired_sets_sync_skip_when_unchanged_and_survive_a_core_outage() {
    let mut core = Core::start();
    let client = core.options(DISCOVERY_TOKEN).sync_client_lazy().unwrap();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let (publisher, rx) = Publisher::new();
    let shutdown = CancellationToken::new();
    let driver = SyncDriver {
        client,
        owner: DISCOVERY_OWNER.into(),
        kinds: vec![Kind::Upstream],
        metrics: metrics.clone(),
        resync: Duration::from_secs(300),
    };
    let task = tokio::spawn(driver.run(rx, shutdown.clone(), || {}));

    publisher.publish(vec![
        static_upstream("default", "a", 1),
        static_upstream("default", "b", 2),
    ]);
    eventually_names(&core, &["a", "b"]).await;
    assert_eq!(
        metric(&registry, "discovery_writes_total", "op=created"),
        2.0
    );

    // The same set in another order: recognised as unchanged, no Sync sent.
    publisher.publish(vec![
        static_upstream("default", "b", 2),
        static_upstream("default", "a", 1),
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metric(&registry, "discovery_syncs_total", "result=skipped"),
        1.0
    );
    assert_eq!(metric(&registry, "discovery_syncs_total", "result=ok"), 1.0);

    // gloo-core goes away; the newest set waits, with backoff, until it is back.
    core.kill9();
    publisher.publish(vec![
        static_upstream("default", "a", 1),
        static_upstream("default", "c", 3),
    ]);
    for _ in 0..100 {
        if metric(&registry, "discovery_retries_total", "target=storage") >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metric(&registry, "discovery_retries_total", "target=storage") >= 2.0);
    assert!(metric(&registry, "discovery_errors_total", "kind=storage") >= 2.0);
    core.restart();
    eventually_names(&core, &["a", "c"]).await;
    assert_eq!(
        metric(&registry, "discovery_backoff_seconds", "target=storage"),
        0.0
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("driver stops at shutdown")
        .unwrap();
}
