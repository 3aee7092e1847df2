//! A Kubernetes API server for tests: `scripts/k8s-listwatch-server.py` (list/watch with
//! resourceVersions, bookmarks and 410 Expired, as kube's watcher needs; see
//! `scripts/NOTES-kmock.md` for why not kmock alone), run with the project's venv Python on
//! 127.0.0.1, with helpers to create, change and delete Services and EndpointSlices.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{json, Value};

/// The workspace root (the e2e crate's parent).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lives in the workspace")
        .to_path_buf()
}

pub fn python() -> PathBuf {
    workspace().join(".venv/bin/python")
}

pub struct ApiServer {
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl ApiServer {
    /// Starts the server on a free port, keeping its objects in a state file so that a
    /// restart (an API server outage) keeps them.
    pub fn start() -> ApiServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = ApiServer {
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: None,
        };
        s.spawn(0, true);
        s
    }

    /// Like [`ApiServer::start`] without the state file (faster for many objects).
    pub fn start_ephemeral() -> ApiServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = ApiServer {
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: None,
        };
        s.spawn(0, false);
        s
    }

    fn spawn(&mut self, port: u16, state: bool) {
        let script = workspace().join("scripts/k8s-listwatch-server.py");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("apiserver.log"))
            .expect("log file");
        let mut cmd = Command::new(python());
        cmd.arg(&script).arg("--port").arg(port.to_string());
        if state {
            cmd.arg("--state").arg(self.dir.path().join("state.json"));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", script.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("reading the API server's port");
        let port: u16 = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("API server did not start: {line:?}\n{}", self.log()));
        self.addr = SocketAddr::from(([127, 0, 0, 1], port));
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig file pointing at this server (no credentials: the test server has none).
    pub fn kubeconfig(&self) -> PathBuf {
        let path = self.dir.path().join("kubeconfig");
        let kc = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n\
             users:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context:\n    \
             cluster: test\n    user: test\ncurrent-context: test\n",
            self.url()
        );
        std::fs::write(&path, kc).expect("writing kubeconfig");
        path
    }

    /// Stops the server (SIGKILL): an outage.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same objects.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.addr.port();
        for _ in 0..50 {
            if std::net::TcpListener::bind(self.addr).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.spawn(port, true);
    }

    /// A request with an optional JSON body; the status and the JSON answer.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        call(self.addr, method, path, body)
    }

    /// Creates or replaces a Service.
    pub fn apply_service(&self, svc: &Value) {
        self.apply("api/v1", "services", svc);
    }

    /// Creates or replaces an EndpointSlice.
    pub fn apply_slice(&self, slice: &Value) {
        self.apply("apis/discovery.k8s.io/v1", "endpointslices", slice);
    }

    fn apply(&self, prefix: &str, plural: &str, obj: &Value) {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = obj["metadata"]["name"].as_str().expect("metadata.name");
        let (code, body) = self.call(
            "PUT",
            &format!("/{prefix}/namespaces/{ns}/{plural}/{name}"),
            Some(obj),
        );
        assert_eq!(code, 200, "PUT {plural} {ns}/{name}: {body}");
    }

    pub fn delete_service(&self, ns: &str, name: &str) {
        let (code, body) = self.call(
            "DELETE",
            &format!("/api/v1/namespaces/{ns}/services/{name}"),
            None,
        );
        assert_eq!(code, 200, "DELETE service {ns}/{name}: {body}");
    }

    pub fn delete_slice(&self, ns: &str, name: &str) {
        let (code, body) = self.call(
            "DELETE",
            &format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices/{name}"),
            None,
        );
        assert_eq!(code, 200, "DELETE endpointslice {ns}/{name}: {body}");
    }

    /// Creates many objects in one request (`/_admin/bulk`, not a Kubernetes API).
    pub fn bulk(&self, items: Vec<Value>) {
        let (code, body) = self.call("POST", "/_admin/bulk", Some(&json!({ "items": items })));
        assert_eq!(code, 200, "bulk load: {body}");
    }

    /// Ends every open watch (a broken connection); clients resume from their resourceVersion.
    pub fn drop_watches(&self) -> u64 {
        let (_, body) = self.call("POST", "/_admin/drop-watches", None);
        body["dropped"].as_u64().unwrap_or(0)
    }

    /// Forgets the watch history and sends open watches 410 Expired; clients relist.
    pub fn expire_watches(&self) -> u64 {
        let (_, body) = self.call("POST", "/_admin/expire-watches", None);
        body["expired"].as_u64().unwrap_or(0)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Service with `labels` and TCP `ports` of (name, port, targetPort).
pub fn service(ns: &str, name: &str, labels: Value, ports: &[(&str, u16, u16)]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "selector": {"app": name},
            "ports": ports.iter().map(|(n, p, t)| json!({
                "name": n, "port": p, "targetPort": t, "protocol": "TCP"
            })).collect::<Vec<_>>(),
        }
    })
}

/// An EndpointSlice of Service `svc`: ports (name, port) and ready endpoint addresses.
pub fn endpoint_slice(
    ns: &str,
    name: &str,
    svc: &str,
    ports: &[(&str, u16)],
    addresses: &[&str],
) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": svc},
        },
        "addressType": "IPv4",
        "ports": ports.iter().map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"}))
            .collect::<Vec<_>>(),
        "endpoints": addresses.iter().map(|a| json!({
            "addresses": [a], "conditions": {"ready": true}
        })).collect::<Vec<_>>(),
    })
}

fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connecting to the API server {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("sending the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("reading the answer");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}
