//! A real moto server (PyPI `moto[server]`) as the AWS Lambda API, with invocations answered
//! without Docker; functions, versions, aliases and tags are made through boto3
//! (`e2e/tools/moto_lambda.py`), the real AWS client. [`LambdaApiProxy`] puts
//! `e2e/py/lambda_api_proxy.py` in front of it for what moto 5.2.5 cannot do: page
//! ListFunctions (50 per page, as AWS) and answer TooManyRequestsException.
use std::{
    io::Write,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::free_port;

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

fn venv_bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.venv/bin")
        .join(name)
}

pub struct Moto {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Set when moto checks signatures: the IAM user's (access key id, secret key).
    pub keys: Option<(String, String)>,
    auth: bool,
}

impl Moto {
    /// moto accepting any request (no signature check).
    pub fn start() -> Moto {
        let mut m = Moto {
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            keys: None,
            auth: false,
        };
        m.spawn();
        m
    }

    /// moto that, after creating an IAM user, verifies every request's SigV4 signature against
    /// that user's key (`INITIAL_NO_AUTH_ACTION_COUNT`); the key is in `keys`.
    pub fn start_authenticated() -> Moto {
        let mut m = Moto {
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            keys: None,
            auth: true,
        };
        m.spawn();
        let user = m.lambda(serde_json::json!([{"op": "iam-user"}]));
        m.keys = Some((
            user[0]["accessKeyId"].as_str().unwrap().to_string(),
            user[0]["secretAccessKey"].as_str().unwrap().to_string(),
        ));
        m
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("moto.log")).expect("log");
        let mut cmd = Command::new(venv_bin("moto_server"));
        if self.auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
        }
        let child = cmd
            .args(["-H", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting moto_server (run scripts/setup.sh)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = r#"{"lambda": {"use_docker": false}}"#;
            if crate::http_post(self.addr, "/moto-api/config", body).is_some_and(|c| c < 300) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "moto did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    /// Stops moto (its state is lost, as with a real outage of an emulator).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts moto again on the same port (empty).
    pub fn start_again(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Runs Lambda operations through boto3 (see `e2e/tools/moto_lambda.py`); their results.
    pub fn lambda(&self, ops: serde_json::Value) -> Vec<serde_json::Value> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/moto_lambda.py");
        let mut child =
            Command::new(venv_bin("python"))
                .arg(script)
                .arg(self.url())
                .arg(REGION)
                .envs(self.keys.iter().flat_map(|(k, s)| {
                    [("MOTO_KEY_ID", k.clone()), ("MOTO_SECRET_KEY", s.clone())]
                }))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("python");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ops.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "moto_lambda.py {ops}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON from moto_lambda.py")
    }

    /// Queues the answers moto gives to the next invocations (moto without Docker answers
    /// from this queue, else "Simple Lambda happy path OK").
    pub fn queue_answers(&self, answers: &[&str]) {
        let body = serde_json::json!({"results": answers, "region": REGION}).to_string();
        let code = crate::http_post(self.addr, "/moto-api/static/lambda-simple/response", &body);
        assert_eq!(code, Some(201), "queueing lambda answers");
    }

    /// The request lines moto logged for invocations (`POST /2015-03-31/functions/.../invocations`)
    /// with their status.
    pub fn invocations(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("/invocations"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `e2e/py/lambda_api_proxy.py` in front of a [`Moto`]: forwards every Lambda call unchanged,
/// except that ListFunctions is paged as the published API pages it (`MaxItems`, `Marker`,
/// `NextMarker`, at most `page_size` per page; moto answers everything in one page), and that
/// it answers AWS's throttling error (HTTP 429 `TooManyRequestsException`, `Retry-After`) when
/// told to with [`LambdaApiProxy::throttle`].
pub struct LambdaApiProxy {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl LambdaApiProxy {
    /// AWS's page size: ListFunctions returns at most 50 functions per call.
    pub const AWS_PAGE_SIZE: usize = 50;

    pub fn start(moto: &Moto, page_size: usize) -> LambdaApiProxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.path().join("proxy.log")).expect("log");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/lambda_api_proxy.py");
        let child = Command::new(venv_bin("python"))
            .arg(script)
            .args(["--port", &addr.port().to_string()])
            .args(["--upstream", &moto.url()])
            .args(["--page-size", &page_size.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting lambda_api_proxy.py");
        let mut p = LambdaApiProxy {
            addr,
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while crate::http_get(p.addr, "/_proxy/stats").is_none_or(|(c, _)| c != 200) {
            let exited = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "lambda_api_proxy.py did not start:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// The next `count` Lambda API calls are throttled (-1: every call until `throttle(0, _)`),
    /// each answered with `Retry-After: retry_after_s`.
    pub fn throttle(&self, count: i64, retry_after_s: u64) {
        let body = serde_json::json!({"count": count, "retry_after": retry_after_s}).to_string();
        let code = crate::http_post(self.addr, "/_proxy/throttle", &body);
        assert_eq!(code, Some(200), "setting the throttle");
    }

    /// One of `lambda_requests`, `throttled`, `list_functions_pages`,
    /// `list_functions_snapshots` (the number of ListFunctions listings begun).
    pub fn stat(&self, name: &str) -> u64 {
        let (_, body) = crate::http_get(self.addr, "/_proxy/stats").expect("proxy stats");
        let v: serde_json::Value = serde_json::from_str(&body).expect("stats JSON");
        v[name].as_u64().unwrap_or(0)
    }
}

impl Drop for LambdaApiProxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
