//! The storage API of a real gloo-core process: durability, watch, sync, field ownership,
//! auth and bad input, each observed through the gRPC API as a client sees it.
use std::{collections::HashMap, time::Duration};

use e2e::{
    fixtures::{key, meta, port_of, static_upstream},
    http_get, Core, ADMIN_TOKEN, DISCOVERY_OWNER, DISCOVERY_TOKEN, EDITOR_TOKEN, VIEWER_TOKEN,
};
use futures::StreamExt;
use proto::v1::{
    health_check, resource::Spec, secret_spec, watch_event::Type, ApplyRequest, AwsSecret,
    DeleteRequest, GetRequest, HealthCheck, Kind, ListRequest, Resource, SecretSpec, SyncRequest,
    TcpHealthCheck, WatchEvent, WatchRequest,
};
use tonic::Code;

async fn apply(c: &mut e2e::Client, r: Resource) -> Result<Resource, tonic::Status> {
    c.apply(ApplyRequest {
        resource: Some(r),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().resource.unwrap())
}

async fn get(
    c: &mut e2e::Client,
    kind: Kind,
    ns: &str,
    name: &str,
) -> Result<Resource, tonic::Status> {
    c.get(GetRequest {
        key: key(kind, ns, name),
    })
    .await
    .map(|r| r.into_inner().resource.unwrap())
}

async fn list(c: &mut e2e::Client, kind: Kind) -> Vec<Resource> {
    c.list(ListRequest {
        kind: kind as i32,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .items
}

fn rv(r: &Resource) -> u64 {
    r.metadata.as_ref().unwrap().resource_version
}

fn name(r: &Resource) -> &str {
    &r.metadata.as_ref().unwrap().name
}

fn secret(name: &str) -> Resource {
    Resource {
        metadata: Some(meta("default", name)),
        status: None,
        spec: Some(Spec::Secret(SecretSpec {
            kind: Some(secret_spec::Kind::Aws(AwsSecret {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMIK7MDENG".into(),
                session_token: String::new(),
            })),
        })),
    }
}

async fn sync(
    c: &mut e2e::Client,
    resources: Vec<Resource>,
) -> Result<proto::v1::SyncResponse, tonic::Status> {
    c.sync(SyncRequest {
        owner: DISCOVERY_OWNER.into(),
        kinds: vec![Kind::Upstream as i32],
        resources,
        dry_run: false,
    })
    .await
    .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let mut core = Core::start();
    let opts = core.options(ADMIN_TOKEN);
    // A writer applies as fast as it can; every write it saw acknowledged is recorded.
    let writer = tokio::spawn(async move {
        let mut c = opts.connect().await.unwrap();
        let mut acked = Vec::new();
        for i in 0..100_000u32 {
            match apply(
                &mut c,
                static_upstream("default", &format!("u{i}"), 1000 + i % 60000),
            )
            .await
            {
                Ok(r) => acked.push((name(&r).to_string(), port_of(&r), rv(&r))),
                Err(_) => break,
            }
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    core.kill9();
    let acked = writer.await.unwrap();
    assert!(
        acked.len() > 10,
        "the writer got only {} writes in",
        acked.len()
    );

    core.restart();
    let mut c = core.client(ADMIN_TOKEN).await;
    let stored: HashMap<String, (u32, u64)> = list(&mut c, Kind::Upstream)
        .await
        .iter()
        .map(|r| (name(r).to_string(), (port_of(r), rv(r))))
        .collect();
    // The reporter may have written statuses since: same content, later revisions.
    for (n, port, v) in &acked {
        let got = stored.get(n);
        assert!(
            got.is_some_and(|(p, r)| p == port && r >= v),
            "acknowledged write of {n} (port {port}, revision {v}) lost after kill -9: {got:?}"
        );
    }
    // And the store still takes writes, with revisions after the old ones.
    let after = apply(&mut c, static_upstream("default", "after-restart", 80))
        .await
        .unwrap();
    assert!(rv(&after) > acked.last().unwrap().2);
}

async fn next_event(stream: &mut tonic::Streaming<WatchEvent>) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a watch event within 10 s")
        .expect("the stream is open")
        .expect("not an error")
}

/// Reads events until `n` object events have arrived (bookmarks are skipped).
async fn object_events(stream: &mut tonic::Streaming<WatchEvent>, n: usize) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        let ev = next_event(stream).await;
        if ev.r#type != Type::Bookmark as i32 {
            out.push(ev);
        }
    }
    out
}

type Seen = (i32, String, u64);

fn seen(e: &WatchEvent) -> Seen {
    (
        e.r#type,
        name(e.resource.as_ref().unwrap()).to_string(),
        e.revision,
    )
}

/// Object events of a stream up to and including revision `until` (bookmarks skipped).
async fn events_until(stream: &mut tonic::Streaming<WatchEvent>, until: u64) -> Vec<Seen> {
    let mut out = Vec::new();
    loop {
        let ev = next_event(stream).await;
        if ev.r#type == Type::Bookmark as i32 {
            if ev.revision >= until {
                return out;
            }
            continue;
        }
        assert!(
            ev.revision > out.last().map_or(0, |l: &Seen| l.2),
            "out of order: {ev:?}"
        );
        out.push(seen(&ev));
        if ev.revision >= until {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_disconnect_and_restart_with_every_event_once_in_order() {
    let mut core = Core::start();
    let mut c = core.client(ADMIN_TOKEN).await;
    for i in 0..5 {
        apply(&mut c, static_upstream("default", &format!("pre{i}"), 80))
            .await
            .unwrap();
    }
    e2e::settle(&mut c).await;
    let upstreams = |from: u64| WatchRequest {
        kinds: vec![Kind::Upstream as i32],
        start_revision: from,
        bookmark_interval_ms: 100,
        ..Default::default()
    };

    // A fresh watch: the current objects, then a bookmark at the list's revision.
    let mut w = c.watch(upstreams(0)).await.unwrap().into_inner();
    let initial = object_events(&mut w, 5).await;
    assert!(initial.iter().all(|e| e.r#type == Type::Added as i32));
    let bookmark = next_event(&mut w).await;
    assert_eq!(bookmark.r#type, Type::Bookmark as i32);
    let start = bookmark.revision;
    assert!(initial.iter().all(|e| e.revision <= start));

    // A reference watcher that never disconnects, from the same revision.
    let mut reference = c.watch(upstreams(start)).await.unwrap().into_inner();

    let a = apply(&mut c, static_upstream("default", "a", 80))
        .await
        .unwrap();
    let mut got = events_until(&mut w, rv(&a)).await;
    let last = got.last().unwrap().2;
    drop(w); // disconnect

    // Changes while it is away: creates, an update, a delete, and another kind.
    for i in 0..20 {
        apply(&mut c, static_upstream("default", &format!("b{i}"), 80))
            .await
            .unwrap();
    }
    apply(&mut c, static_upstream("default", "b3", 81))
        .await
        .unwrap();
    c.delete(DeleteRequest {
        key: key(Kind::Upstream, "default", "pre0"),
        expected_resource_version: 0,
    })
    .await
    .unwrap();
    apply(&mut c, secret("not-watched")).await.unwrap();
    let end = apply(&mut c, static_upstream("default", "end", 80))
        .await
        .unwrap();

    let mut w = c.watch(upstreams(last)).await.unwrap().into_inner();
    got.extend(events_until(&mut w, rv(&end)).await);
    let expected = events_until(&mut reference, rv(&end)).await;
    assert_eq!(got, expected, "the resumed watcher saw a different history");
    let kinds: Vec<i32> = expected.iter().map(|e| e.0).collect();
    for t in [Type::Added, Type::Modified, Type::Deleted] {
        assert!(
            kinds.contains(&(t as i32)),
            "no {t:?} event in {expected:?}"
        );
    }
    assert!(!expected.iter().any(|e| e.1 == "not-watched"));
    drop(w);
    drop(reference);

    // Across a crash of gloo-core: resume from the last revision seen; nothing is lost.
    e2e::settle(&mut c).await;
    let before_crash = c
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .revision;
    core.restart();
    let mut c = core.client(ADMIN_TOKEN).await;
    let r = apply(&mut c, static_upstream("default", "after-crash", 80))
        .await
        .unwrap();
    let mut w = c.watch(upstreams(before_crash)).await.unwrap().into_inner();
    let after = events_until(&mut w, rv(&r)).await;
    assert_eq!(
        after.first().map(|e| (e.1.as_str(), e.2)),
        Some(("after-crash", rv(&r)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_rules() {
    let core = Core::start();
    let mut d = core.client(DISCOVERY_TOKEN).await;
    let mut admin = core.client(ADMIN_TOKEN).await;

    // Someone else's object with a name discovery would also like to use.
    apply(&mut admin, static_upstream("default", "taken", 1))
        .await
        .unwrap();

    let first = sync(
        &mut d,
        vec![
            static_upstream("default", "one", 8080),
            static_upstream("default", "two", 8081),
            static_upstream("default", "taken", 9999),
            static_upstream("default", "Bad_Name", 80),
            static_upstream("default", "bad-port", 0),
        ],
    )
    .await
    .unwrap();
    assert_eq!((first.created, first.updated, first.deleted), (2, 0, 0));
    // Invalid items are rejected one by one, with reasons, while the rest apply.
    let reasons: Vec<&str> = first.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].contains("taken") && reasons[0].contains("owned by people"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("metadata.name"), "{reasons:?}");
    assert!(
        reasons[2].contains("spec.static.hosts[0].port"),
        "{reasons:?}"
    );
    // Others' objects are never touched. (First let the reporter's status writes land: they
    // are writes too, and this test is about the Sync's.)
    e2e::settle(&mut admin).await;
    let taken = get(&mut admin, Kind::Upstream, "default", "taken")
        .await
        .unwrap();
    assert_eq!(port_of(&taken), 1);
    assert_eq!(taken.metadata.as_ref().unwrap().owner, "");

    let one = get(&mut admin, Kind::Upstream, "default", "one")
        .await
        .unwrap();
    assert_eq!(one.metadata.as_ref().unwrap().owner, DISCOVERY_OWNER);

    // Unchanged objects are not rewritten: same resource_version, no watch event.
    let now = admin
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .revision;
    let mut w = admin
        .watch(WatchRequest {
            start_revision: now,
            bookmark_interval_ms: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let again = sync(
        &mut d,
        vec![
            static_upstream("default", "one", 8080),
            static_upstream("default", "two", 8081),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        (again.created, again.updated, again.deleted, again.unchanged),
        (0, 0, 0, 2)
    );
    let one_again = get(&mut admin, Kind::Upstream, "default", "one")
        .await
        .unwrap();
    assert_eq!(rv(&one_again), rv(&one));
    let ev = next_event(&mut w).await;
    assert_eq!(
        ev.r#type,
        Type::Bookmark as i32,
        "an unchanged Sync wrote {ev:?}"
    );

    // Objects the owner no longer reports are deleted; others' objects stay.
    let third = sync(&mut d, vec![static_upstream("default", "one", 8080)])
        .await
        .unwrap();
    assert_eq!((third.deleted, third.unchanged), (1, 1));
    let names: Vec<String> = list(&mut admin, Kind::Upstream)
        .await
        .iter()
        .map(|r| name(r).to_string())
        .collect();
    assert_eq!(names, vec!["one", "taken"]);

    // An item that is rejected is not deleted either: a bad pass never loses what was found.
    let bad = sync(&mut d, vec![static_upstream("default", "one", 0)])
        .await
        .unwrap();
    assert_eq!((bad.deleted, bad.rejected.len()), (0, 1));
    assert_eq!(
        port_of(
            &get(&mut admin, Kind::Upstream, "default", "one")
                .await
                .unwrap()
        ),
        8080
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_s_edit_to_a_discovered_upstream_survives_rediscovery() {
    let core = Core::start();
    let mut d = core.client(DISCOVERY_TOKEN).await;
    let mut alice = core.client(EDITOR_TOKEN).await;
    sync(&mut d, vec![static_upstream("default", "pets", 8080)])
        .await
        .unwrap();

    // Alice adds a health check and a label to the discovered upstream.
    let mut edited = get(&mut alice, Kind::Upstream, "default", "pets")
        .await
        .unwrap();
    let m = edited.metadata.as_mut().unwrap();
    m.labels.insert("team".into(), "pets".into());
    let health = HealthCheck {
        healthy_threshold: 3,
        unhealthy_threshold: 2,
        check: Some(health_check::Check::Tcp(TcpHealthCheck::default())),
        ..Default::default()
    };
    if let Some(Spec::Upstream(u)) = edited.spec.as_mut() {
        u.health_checks = vec![health.clone()];
    }
    let edited = apply(&mut alice, edited).await.unwrap();
    let managers = &edited.metadata.as_ref().unwrap().field_managers;
    assert_eq!(managers["spec.healthChecks"], "alice");
    assert_eq!(managers["spec.static"], DISCOVERY_OWNER);

    // Discovery's next pass: same as before, it knows nothing of health checks. Nothing changes.
    let same = sync(&mut d, vec![static_upstream("default", "pets", 8080)])
        .await
        .unwrap();
    assert_eq!(same.unchanged, 1);
    // The service's port changes: discovery updates its field, alice's edit stays.
    let moved = sync(&mut d, vec![static_upstream("default", "pets", 9090)])
        .await
        .unwrap();
    assert_eq!(moved.updated, 1);
    let now = get(&mut alice, Kind::Upstream, "default", "pets")
        .await
        .unwrap();
    assert_eq!(port_of(&now), 9090);
    let Some(Spec::Upstream(u)) = &now.spec else {
        unreachable!()
    };
    assert_eq!(u.health_checks, vec![health]);
    assert_eq!(now.metadata.as_ref().unwrap().labels["team"], "pets");
    assert_eq!(now.metadata.as_ref().unwrap().owner, DISCOVERY_OWNER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_denials() {
    let core = Core::start();
    let mut admin = core.client(ADMIN_TOKEN).await;
    apply(&mut admin, secret("aws-creds")).await.unwrap();
    apply(&mut admin, static_upstream("default", "mine", 80))
        .await
        .unwrap();

    // No token, wrong token.
    let channel = tonic::transport::Endpoint::from_shared(core.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut anon = proto::v1::storage_client::StorageClient::new(channel);
    let e = anon.list(ListRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let mut wrong = core.client("not-a-token").await;
    let e = wrong.list(ListRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // Discovery cannot write objects of another owner, nor Sync as another owner.
    let mut d = core.client(DISCOVERY_TOKEN).await;
    let e = apply(&mut d, static_upstream("default", "mine", 81))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = d
        .sync(SyncRequest {
            owner: "someone-else".into(),
            kinds: vec![Kind::Upstream as i32],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = d
        .delete(DeleteRequest {
            key: key(Kind::Upstream, "default", "mine"),
            expected_resource_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(
        port_of(
            &get(&mut admin, Kind::Upstream, "default", "mine")
                .await
                .unwrap()
        ),
        80
    );

    // Only admins hand an object to another owner (an editor could otherwise feed objects to a
    // discovery service's next Sync, which would delete them).
    let mut alice = core.client(EDITOR_TOKEN).await;
    let mut given = static_upstream("default", "gift", 80);
    given.metadata.as_mut().unwrap().owner = DISCOVERY_OWNER.into();
    let e = apply(&mut alice, given.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("metadata.owner"), "{e:?}");
    let r = apply(&mut admin, given).await.unwrap();
    assert_eq!(r.metadata.unwrap().owner, DISCOVERY_OWNER);

    // Discovery and viewers cannot read Secrets: not by get, list or watch.
    for token in [DISCOVERY_TOKEN, VIEWER_TOKEN] {
        let mut c = core.client(token).await;
        let e = get(&mut c, Kind::Secret, "default", "aws-creds")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        let e = c
            .list(ListRequest {
                kind: Kind::Secret as i32,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        let e = c
            .watch(WatchRequest {
                kinds: vec![Kind::Secret as i32],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        // Listing or watching every kind leaves Secrets out.
        let all = c
            .list(ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items;
        assert!(all.iter().all(|r| !matches!(r.spec, Some(Spec::Secret(_)))));
        let mut w = c.watch(WatchRequest::default()).await.unwrap().into_inner();
        loop {
            let ev = next_event(&mut w).await;
            if ev.r#type == Type::Bookmark as i32 {
                break;
            }
            assert!(!matches!(ev.resource.unwrap().spec, Some(Spec::Secret(_))));
        }
        // Viewers cannot write at all.
        if token == VIEWER_TOKEN {
            let e = apply(&mut c, static_upstream("default", "v", 80))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        }
    }
    // The admin reads the secret; its values never reach the log.
    let s = get(&mut admin, Kind::Secret, "default", "aws-creds")
        .await
        .unwrap();
    assert!(format!("{s:?}").contains("redacted"));
    let log = core.log();
    assert!(
        !log.contains("wJalrXUtnFEMIK7MDENG") && !log.contains(ADMIN_TOKEN),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let core = Core::start_with(&["--max-message-bytes", "65536"]);
    let mut c = core.client(EDITOR_TOKEN).await;
    let v1 = apply(&mut c, static_upstream("default", "pets", 80))
        .await
        .unwrap();
    apply(&mut c, static_upstream("default", "pets", 81))
        .await
        .unwrap();
    e2e::settle(&mut c).await;
    let v2 = get(&mut c, Kind::Upstream, "default", "pets")
        .await
        .unwrap();

    // A stale resource_version: ABORTED, naming the current one.
    let e = c
        .apply(ApplyRequest {
            resource: Some(static_upstream("default", "pets", 82)),
            expected_resource_version: rv(&v1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    assert!(
        e.message()
            .contains(&format!("resource_version {}", rv(&v2))),
        "{e:?}"
    );

    // A conditional write to an object that does not exist says so.
    let e = c
        .apply(ApplyRequest {
            resource: Some(static_upstream("default", "absent", 82)),
            expected_resource_version: 7,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    assert!(e.message().contains("does not exist"), "{e:?}");

    // Not a DNS-1123 label.
    let e = apply(&mut c, static_upstream("default", "Pets.Store", 80))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .contains("Upstream default/Pets.Store: metadata.name"),
        "{e:?}"
    );

    // Over the size limit.
    let mut big = static_upstream("default", "big", 80);
    big.metadata
        .as_mut()
        .unwrap()
        .annotations
        .insert("blob".into(), "x".repeat(100_000));
    let e = apply(&mut c, big).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );
    assert!(
        e.message().contains("65536"),
        "the error should name the limit: {e:?}"
    );

    // Nothing stored changed, and the server still serves.
    let now = get(&mut c, Kind::Upstream, "default", "pets")
        .await
        .unwrap();
    assert_eq!((port_of(&now), rv(&now)), (81, rv(&v2)));
    assert_eq!(list(&mut c, Kind::Upstream).await.len(), 1);
    assert_eq!(http_get(core.admin, "/healthz").unwrap().0, 200);
    let (code, metrics) = http_get(core.admin, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("gloo_store_objects{kind=\"Upstream\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_with_a_watch_open() {
    let mut core = Core::start();
    let mut c = core.client(ADMIN_TOKEN).await;
    let _w = c.watch(WatchRequest::default()).await.unwrap().into_inner();
    let started = std::time::Instant::now();
    assert_eq!(core.terminate(), Some(0), "log:\n{}", core.log());
    assert!(started.elapsed() < Duration::from_secs(5));
}
