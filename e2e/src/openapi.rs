//! Services with API specs for discovery-openapi's tests: a plain HTTP server serving
//! documents (with ETags, answering If-None-Match with 304, counting every request), and the
//! FastAPI petstore app under uvicorn.
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{free_port, http_get};

/// One request the spec server saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub at: Instant,
    /// It carried If-None-Match or If-Modified-Since.
    pub conditional: bool,
    pub user_agent: String,
    pub probe_header: Option<String>,
}

#[derive(Default)]
struct State {
    docs: HashMap<String, (String, Vec<u8>)>,
    seen: Vec<Seen>,
}

/// Serves documents by path; anything else is 404.
pub struct SpecServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _task: tokio::task::JoinHandle<()>,
}

fn etag(body: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

impl SpecServer {
    pub async fn start() -> SpecServer {
        use axum::{body::Body, extract::Request, http::StatusCode, response::Response, Router};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let app = Router::new().fallback(move |req: Request<Body>| {
            let st = st.clone();
            async move {
                let h = |n: &str| {
                    req.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let inm = h("if-none-match");
                let mut s = st.lock().unwrap();
                s.seen.push(Seen {
                    path: req.uri().path().to_string(),
                    at: Instant::now(),
                    conditional: inm.is_some() || h("if-modified-since").is_some(),
                    user_agent: h("user-agent").unwrap_or_default(),
                    probe_header: h("x-gloo-discovery"),
                });
                match s.docs.get(req.uri().path()) {
                    None => Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Body::from("not found"))
                        .unwrap(),
                    Some((tag, _)) if inm.as_deref() == Some(tag.as_str()) => Response::builder()
                        .status(StatusCode::NOT_MODIFIED)
                        .header("etag", tag.as_str())
                        .body(Body::empty())
                        .unwrap(),
                    Some((tag, body)) => Response::builder()
                        .header("etag", tag.as_str())
                        .body(Body::from(body.clone()))
                        .unwrap(),
                }
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SpecServer {
            addr,
            state,
            _task: task,
        }
    }

    /// Serves `body` at `path` from now on (a new ETag when it changed).
    pub fn set(&self, path: &str, body: impl Into<Vec<u8>>) {
        let body = body.into();
        self.state
            .lock()
            .unwrap()
            .docs
            .insert(path.into(), (etag(&body), body));
    }

    pub fn remove(&self, path: &str) {
        self.state.lock().unwrap().docs.remove(path);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Requests for `path` so far.
    pub fn hits(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

pub fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The FastAPI petstore (`fixtures/petstore_app.py`) under uvicorn on 127.0.0.1.
pub struct FastApi {
    pub addr: SocketAddr,
    child: Child,
}

impl FastApi {
    pub fn start() -> FastApi {
        let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        let port = free_port();
        let child = Command::new(python)
            .args(["-m", "uvicorn", "petstore_app:app", "--host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--log-level", "warning"])
            .current_dir(fixture(""))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting uvicorn (is .venv set up?)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(addr, "/openapi.json").is_none_or(|(s, _)| s != 200) {
            assert!(
                Instant::now() < deadline,
                "uvicorn did not come up on {addr}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        FastApi { addr, child }
    }
}

impl Drop for FastApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
