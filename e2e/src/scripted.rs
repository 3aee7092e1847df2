//! A test backend whose behaviour each request chooses in its query string, for the gateway's
//! traffic features: `delay_ms=N` answers after N ms, `status=N` answers N, `fail=KEY:N`
//! answers 503 to the first N requests carrying KEY. `/healthz` answers the backend's current
//! health (settable). Every answer is `{"backend", "method", "path", "query", "headers"}`, and
//! the backend counts the requests it saw (health checks apart).
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU16, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

#[derive(Default)]
struct State {
    hits: AtomicUsize,
    health: AtomicU16,
    failures: Mutex<HashMap<String, u32>>,
    paths: Mutex<Vec<String>>,
}

pub struct Scripted {
    pub name: String,
    pub addr: SocketAddr,
    state: Arc<State>,
    _server: tokio::task::JoinHandle<()>,
}

fn query(q: &str, key: &str) -> Option<String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

impl Scripted {
    pub async fn start(name: &str) -> Scripted {
        use axum::{body::Body, extract::Request, http::StatusCode, Router};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            health: AtomicU16::new(200),
            ..Default::default()
        });
        let (n, st) = (name.to_string(), state.clone());
        let app = Router::new().fallback(move |req: Request<Body>| {
            let (n, st) = (n.clone(), st.clone());
            async move {
                let q = req.uri().query().unwrap_or("").to_string();
                let mut status = 200;
                if req.uri().path() == "/healthz" {
                    status = st.health.load(Ordering::SeqCst);
                } else {
                    st.hits.fetch_add(1, Ordering::SeqCst);
                    st.paths.lock().unwrap().push(req.uri().to_string());
                    if let Some(ms) = query(&q, "delay_ms").and_then(|v| v.parse().ok()) {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    if let Some(s) = query(&q, "status").and_then(|v| v.parse().ok()) {
                        status = s;
                    }
                    if let Some((key, n)) =
                        query(&q, "fail").as_deref().and_then(|f| f.split_once(':'))
                    {
                        let mut f = st.failures.lock().unwrap();
                        let seen = f.entry(key.to_string()).or_default();
                        *seen += 1;
                        if *seen <= n.parse().unwrap_or(0) {
                            status = 503;
                        }
                    }
                }
                let headers: serde_json::Map<String, serde_json::Value> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                    .collect();
                let body = serde_json::json!({
                    "backend": n,
                    "method": req.method().as_str(),
                    "path": req.uri().path(),
                    "query": q,
                    "headers": headers,
                });
                (
                    StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
            }
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Scripted {
            name: name.into(),
            addr,
            state,
            _server: server,
        }
    }

    /// Requests seen, health checks apart.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// The paths (with query) of the requests seen, in order.
    pub fn paths(&self) -> Vec<String> {
        self.state.paths.lock().unwrap().clone()
    }

    /// What `/healthz` answers from now on.
    pub fn set_health(&self, status: u16) {
        self.state.health.store(status, Ordering::SeqCst);
    }
}

/// An HTTP/1.1 request with a body, on its own connection; the raw response bytes.
pub fn raw_request(addr: SocketAddr, head: &str, body: &[u8]) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "{head}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    Some(raw)
}
