//! The storage API over TLS (rustls): a client that trusts the CA gets through; a plain-text
//! client and a client that does not trust the server do not.
use std::{path::Path, process::Command};

use e2e::{fixtures::static_upstream, ConnectOptions, Core, ADMIN_TOKEN};
use proto::v1::{ApplyRequest, ListRequest};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
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

/// A CA and a server certificate for localhost / 127.0.0.1 signed by it.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    // A second, unrelated CA.
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-days",
            "2",
            "-subj",
            "/CN=other",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ],
    );
}

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
