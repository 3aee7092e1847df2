//! Test harness: starts the project's real binaries as child processes on 127.0.0.1 and gives
//! tests clients for them. Binaries are taken from the Cargo target dir of the running test
//! (`cargo test --workspace` builds them first).
#![forbid(unsafe_code)]

pub mod certs;
pub mod discovery;
pub mod envoy;
pub mod gcf;
pub mod http;
pub mod k8s;
pub mod moto;
pub mod openapi;
pub mod scripted;

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub use discovery_runtime::client::{Client, ConnectOptions};

pub const ADMIN_TOKEN: &str = "admin-token";
pub const EDITOR_TOKEN: &str = "editor-token";
pub const VIEWER_TOKEN: &str = "viewer-token";
pub const DISCOVERY_TOKEN: &str = "discovery-token";
pub const DISCOVERY_OWNER: &str = "discovery-test";

pub const REPORTER_TOKEN: &str = "reporter-token";

/// Tokens of the discovery services, as a deployment would give them: each writes only its own
/// kinds under its own name; the ones whose credentials live in Secrets may read Secrets.
pub const K8S_TOKEN: &str = "discovery-k8s-token";
pub const LAMBDA_TOKEN: &str = "discovery-lambda-token";
pub const GCF_TOKEN: &str = "discovery-gcf-token";
pub const OPENAPI_TOKEN: &str = "discovery-openapi-token";

const TOKENS: &str = r#"tokens:
  - {name: admin, token: admin-token, role: admin}
  - {name: alice, token: editor-token, role: editor}
  - {name: viewer, token: viewer-token, role: viewer}
  - {name: discovery-test, token: discovery-token, role: discovery, kinds: [Upstream, Endpoints, Function]}
  - {name: reporter, token: reporter-token, role: reporter}
  - {name: discovery-k8s, token: discovery-k8s-token, role: discovery, kinds: [Upstream, Endpoints]}
  - {name: discovery-lambda, token: discovery-lambda-token, role: discovery, kinds: [Function], readSecrets: true}
  - {name: discovery-gcf, token: discovery-gcf-token, role: discovery, kinds: [Function], readSecrets: true}
  - {name: discovery-openapi, token: discovery-openapi-token, role: discovery, kinds: [Function]}
"#;

/// The path of one of the workspace's binaries, next to the running test's target dir.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo test --workspace builds every binary)",
        path.display()
    );
    path
}

/// A free port on 127.0.0.1 (released before use; collisions are unlikely but possible).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// A gloo-core process with its own data dir, tokens file and ports.
pub struct Core {
    pub dir: tempfile::TempDir,
    pub storage: SocketAddr,
    pub admin: SocketAddr,
    pub xds: SocketAddr,
    child: Option<Child>,
    extra_args: Vec<String>,
}

impl Core {
    pub fn start() -> Core {
        Core::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> Core {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tokens.yaml"), TOKENS).expect("writing tokens");
        let mut core = Core {
            dir,
            storage: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            xds: SocketAddr::from(([127, 0, 0, 1], free_port())),
            child: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        // A port found free can be taken by a parallel test before gloo-core binds it: then
        // gloo-core exits saying so, and it is started again on other ports.
        for _ in 0..5 {
            match core.try_spawn() {
                Ok(()) => return core,
                Err(log) if log.contains("binding") => {
                    core.storage = SocketAddr::from(([127, 0, 0, 1], free_port()));
                    core.admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
                    core.xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
                }
                Err(log) => panic!("gloo-core exited at start; log:\n{log}"),
            }
        }
        panic!(
            "gloo-core found no free ports in 5 tries; log:\n{}",
            core.log()
        );
    }

    pub fn tokens_file(&self) -> PathBuf {
        self.dir.path().join("tokens.yaml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.storage)
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("gloo-core exited at start; log:\n{log}");
        }
    }

    /// Starts gloo-core and waits until it is ready; Err(its log) if it exited first.
    fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("gloo-core.log"))
            .expect("log file");
        let child = Command::new(bin("gloo-core"))
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--tokens-file")
            .arg(self.tokens_file())
            .arg("--storage-listen")
            .arg(self.storage.to_string())
            .arg("--admin-listen")
            .arg(self.admin.to_string())
            .arg("--xds-listen")
            .arg(self.xds.to_string())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting gloo-core");
        self.child = Some(child);
        self.wait_ready()
    }

    /// Waits until /readyz answers 200; Err(the log) if gloo-core exited meanwhile.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("exited with {status}:\n{}", self.log()));
            }
            if http_get(self.admin, "/readyz").is_some_and(|(code, _)| code == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gloo-core not ready after 30 s; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gloo-core.log")).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        c.wait().ok().and_then(|s| s.code())
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn options(&self, token: &str) -> ConnectOptions {
        ConnectOptions {
            server: self.url(),
            token: token.into(),
            ..Default::default()
        }
    }

    /// Every stored object of `kind` in every namespace, as an admin sees it.
    pub async fn list(&self, kind: proto::v1::Kind) -> Vec<proto::v1::Resource> {
        self.client(ADMIN_TOKEN)
            .await
            .list(proto::v1::ListRequest {
                kind: kind as i32,
                ..Default::default()
            })
            .await
            .expect("listing")
            .into_inner()
            .items
    }

    pub async fn client(&self, token: &str) -> Client {
        self.options(token)
            .connect()
            .await
            .expect("connecting to gloo-core")
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits until gloo-core has reported a status on every object for its current generation,
/// so that a test can then assume nothing more will be written on its own.
pub async fn settle(c: &mut Client) {
    for _ in 0..400 {
        let items = c
            .list(proto::v1::ListRequest::default())
            .await
            .expect("listing")
            .into_inner()
            .items;
        let done = items.iter().all(|r| {
            let generation = r.metadata.as_ref().map_or(0, |m| m.generation);
            r.status.as_ref().is_some_and(|s| {
                s.observed_generation == generation
                    && s.state != proto::v1::status::State::Pending as i32
            })
        });
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("statuses did not settle in 10 s");
}

/// A GET on loopback: (status, body), or None when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http::get(addr, path).map(|r| (r.status, r.body))
}

/// POSTs a JSON body; the status code.
pub fn http_post(addr: SocketAddr, path: &str, json: &str) -> Option<u16> {
    http::send(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        json,
    )
    .map(|r| r.status)
}

/// Builders for the resources tests write.
pub mod fixtures {
    use proto::v1::{
        resource::Spec, static_upstream::Host, upstream_spec::UpstreamType, Kind, Metadata,
        ObjectKey, Resource, StaticUpstream, UpstreamSpec,
    };

    /// A resource in namespace `default` from its kind and its spec in the proto3 JSON
    /// mapping (as in YAML files, e.g. `json!({"static": {"hosts": [...]}})`).
    pub fn resource(kind: Kind, name: &str, spec: serde_json::Value) -> Resource {
        fn de<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
            serde_json::from_value(v).unwrap_or_else(|e| panic!("spec: {e}"))
        }
        let spec = match kind {
            Kind::Upstream => Spec::Upstream(de(spec)),
            Kind::Function => Spec::Function(de(spec)),
            Kind::Endpoints => Spec::Endpoints(de(spec)),
            Kind::VirtualService => Spec::VirtualService(de(spec)),
            Kind::UpstreamGroup => Spec::UpstreamGroup(de(spec)),
            Kind::Gateway => Spec::Gateway(de(spec)),
            Kind::Secret => Spec::Secret(de(spec)),
            Kind::Unspecified => panic!("a resource needs a kind"),
        };
        Resource {
            metadata: Some(meta("default", name)),
            status: None,
            spec: Some(spec),
        }
    }

    pub fn meta(ns: &str, name: &str) -> Metadata {
        Metadata {
            name: name.into(),
            namespace: ns.into(),
            ..Default::default()
        }
    }

    pub fn static_upstream(ns: &str, name: &str, port: u32) -> Resource {
        Resource {
            metadata: Some(meta(ns, name)),
            status: None,
            spec: Some(Spec::Upstream(UpstreamSpec {
                upstream_type: Some(UpstreamType::Static(StaticUpstream {
                    hosts: vec![Host {
                        addr: "127.0.0.1".into(),
                        port,
                        sni: String::new(),
                    }],
                })),
                ..Default::default()
            })),
        }
    }

    pub fn key(kind: Kind, ns: &str, name: &str) -> Option<ObjectKey> {
        Some(ObjectKey {
            kind: kind as i32,
            namespace: ns.into(),
            name: name.into(),
        })
    }

    pub fn port_of(r: &Resource) -> u32 {
        match &r.spec {
            Some(Spec::Upstream(UpstreamSpec {
                upstream_type: Some(UpstreamType::Static(s)),
                ..
            })) => s.hosts[0].port,
            _ => panic!("not a static upstream: {r:?}"),
        }
    }
}
