//! Google Cloud Functions for tests: the admin API and token endpoint test double
//! (`e2e/py/gcf_admin_api.py`, checking RS256-signed JWTs with a service-account key made
//! here with the openssl CLI), and functions served by the real `functions-framework`.
use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::free_port;

pub const CLIENT_EMAIL: &str = "discovery@test-project.iam.gserviceaccount.com";

fn venv_bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.venv/bin")
        .join(name)
}

fn wait_port(addr: SocketAddr, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{what} not listening on {addr} after 20 s: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// One HTTP/1.1 request with a JSON body; (status, body).
pub fn send(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let host = addr.to_string();
    let headers = [
        ("Host", host.as_str()),
        ("Content-Type", "application/json"),
    ];
    crate::http::send(addr, method, path, &headers, body).map(|r| (r.status, r.body))
}

/// The Cloud Functions admin API and token endpoint.
pub struct GcfApi {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl GcfApi {
    /// Serves pages of `page_size` functions; tokens expire after `expires_in` seconds.
    pub fn start(page_size: usize, expires_in: u64) -> GcfApi {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("sa-key.pem");
        let public = dir.path().join("sa-pub.pem");
        let ok = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&key)
            .stderr(Stdio::null())
            .status()
            .expect("running openssl")
            .success()
            && Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(&public)
                .status()
                .expect("running openssl")
                .success();
        assert!(ok, "openssl could not make the service-account key");
        let mut api = GcfApi {
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            args: vec![
                "--public-key".into(),
                public.display().to_string(),
                "--client-email".into(),
                CLIENT_EMAIL.into(),
                "--page-size".into(),
                page_size.to_string(),
                "--expires-in".into(),
                expires_in.to_string(),
            ],
            dir,
            child: None,
        };
        api.spawn();
        api
    }

    fn spawn(&mut self) {
        let log_path = self.dir.path().join("api.log");
        let log = std::fs::File::create(&log_path).expect("log");
        let mut child = Command::new(venv_bin("python"))
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/gcf_admin_api.py"))
            .arg("--port")
            .arg(self.addr.port().to_string())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting gcf_admin_api.py");
        wait_port(self.addr, &mut child, "gcf_admin_api.py", &log_path);
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The service-account key file (JSON) whose public half the server checks JWTs with.
    pub fn key_json(&self) -> String {
        let pem = std::fs::read_to_string(self.dir.path().join("sa-key.pem")).expect("key");
        serde_json::json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "test-key-1",
            "private_key": pem,
            "client_email": CLIENT_EMAIL,
            "client_id": "1",
            "token_uri": self.token_url(),
        })
        .to_string()
    }

    /// Replaces the whole set of functions (Google's `Function` JSON objects).
    pub fn set_functions(&self, functions: &[serde_json::Value]) {
        let body = serde_json::Value::Array(functions.to_vec()).to_string();
        let r = send(self.addr, "PUT", "/_test/functions", &body);
        assert_eq!(r.map(|r| r.0), Some(200), "setting functions");
    }

    /// The next `count` listings answer `status` (-1: all, 0: stop failing).
    pub fn fail(&self, status: u16, count: i64) {
        let body = serde_json::json!({"status": status, "count": count}).to_string();
        let r = send(self.addr, "POST", "/_test/fail", &body);
        assert_eq!(r.map(|r| r.0), Some(200), "injecting failures");
    }

    /// `{"token_requests", "list_requests", "bad_tokens"}`.
    pub fn stats(&self) -> serde_json::Value {
        let (_, body) = send(self.addr, "GET", "/_test/stats", "").expect("stats");
        serde_json::from_str(&body).expect("stats JSON")
    }

    pub fn stat(&self, name: &str) -> u64 {
        self.stats()[name].as_u64().unwrap_or(0)
    }

    /// Stops answering (connection refused) until [`GcfApi::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Up again on the same port, with no functions, counters or tokens.
    pub fn start_again(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for GcfApi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `Function` as the v2 API returns it.
pub fn function(
    project: &str,
    location: &str,
    name: &str,
    state: &str,
    uri: &str,
) -> serde_json::Value {
    serde_json::json!({
        "name": format!("projects/{project}/locations/{location}/functions/{name}"),
        "state": state,
        "environment": "GEN_2",
        "url": uri,
        "buildConfig": {"runtime": "python312", "entryPoint": name},
        "serviceConfig": {
            "uri": uri,
            "service": format!("projects/{project}/locations/{location}/services/{name}"),
            "availableMemory": "256M",
            "timeoutSeconds": 60
        },
        "updateTime": "2026-01-01T00:00:00Z",
        "labels": {}
    })
}

/// A function served by the real `functions-framework` on 127.0.0.1.
pub struct FunctionsFramework {
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    child: Child,
}

impl FunctionsFramework {
    /// Serves function `target` from Python `source` (the file's text).
    pub fn start(target: &str, source: &str) -> FunctionsFramework {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("main.py");
        std::fs::write(&file, source).expect("writing the function");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log_path = dir.path().join("ff.log");
        let log = std::fs::File::create(&log_path).expect("log");
        let mut child = Command::new(venv_bin("functions-framework"))
            .args(["--target", target, "--source"])
            .arg(&file)
            .args(["--signature-type", "http", "--host", "127.0.0.1", "--port"])
            .arg(addr.port().to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting functions-framework");
        wait_port(addr, &mut child, "functions-framework", &log_path);
        FunctionsFramework {
            addr,
            _dir: dir,
            child,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FunctionsFramework {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
