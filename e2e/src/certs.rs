//! Test certificates, made with the `openssl` command: a CA, a server certificate for
//! `localhost` / 127.0.0.1 that it signed (`ca.pem`, `server.pem`, `server.key`), and an
//! unrelated CA (`other.pem`).
use std::{path::Path, process::Command};

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

/// A P-256 key and, with `x509`, a self-signed certificate (else a signing request), valid
/// for two days.
fn key_and_cert(dir: &Path, name: &str, cn: &str, x509: bool, extra: &[&str]) {
    let (key, out) = (
        format!("{name}.key"),
        format!("{name}.{}", if x509 { "pem" } else { "csr" }),
    );
    let subj = format!("/CN={cn}");
    let mut args = vec!["req"];
    if x509 {
        args.extend(["-x509", "-days", "2"]);
    }
    args.extend([
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ]);
    args.extend(["-keyout", &key, "-out", &out, "-subj", &subj]);
    args.extend(extra);
    openssl(dir, &args);
}

/// A CA and a server certificate for localhost / 127.0.0.1 signed by it.
pub fn make_certs(dir: &Path) {
    let ca = [
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ];
    key_and_cert(dir, "ca", "test-ca", true, &ca);
    key_and_cert(dir, "server", "localhost", false, &[]);
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
    key_and_cert(dir, "other", "other", true, &ca[..2]);
}
