//! The storage API over TLS (rustls): a client that trusts the CA gets through; a plain-text
//! client and a client that does not trust the server do not.
use e2e::{certs::make_certs, fixtures::static_upstream, ConnectOptions, Core, ADMIN_TOKEN};
use proto::v1::{ApplyRequest, ListRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_api_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let p = |f: &str| certs.path().join(f).display().to_string();
    let core = Core::start_with(&[
        "--tls-cert",
        &p("server.pem"),
        "--tls-key",
        &p("server.key"),
    ]);
    let https = format!("https://localhost:{}", core.storage.port());

    let trusted = ConnectOptions {
        server: https.clone(),
        token: ADMIN_TOKEN.into(),
        ca_file: Some(p("ca.pem").into()),
        ..Default::default()
    };
    let mut c = trusted
        .connect()
        .await
        .expect("TLS connection with the right CA");
    c.apply(ApplyRequest {
        resource: Some(static_upstream("default", "over-tls", 443)),
        ..Default::default()
    })
    .await
    .unwrap();
    let items = c
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items.len(), 1);

    // Plain text to a TLS port fails.
    let mut plain = core.options(ADMIN_TOKEN).connect_lazy().unwrap();
    assert!(plain.list(ListRequest::default()).await.is_err());
    // A client that trusts another CA refuses the server.
    let untrusted = ConnectOptions {
        ca_file: Some(p("other.pem").into()),
        ..trusted
    };
    match untrusted.connect().await {
        Err(_) => {}
        Ok(mut c) => assert!(c.list(ListRequest::default()).await.is_err()),
    }
}
