//! A small HTTP/1.1 client for tests (one request per connection), and test backends that
//! answer every request with what they saw, as JSON.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (what a test backend answers).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The name of the test backend that answered, if one did.
    pub fn backend(&self) -> Option<String> {
        self.json()["backend"].as_str().map(str::to_string)
    }
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<Response> {
    send(addr, method, path, headers, "")
}

/// Like [`request`], with a body.
pub fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("Host: test.local\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).ok()?;
    parse(&read_response(&mut s)?)
}

/// Reads one response: its head, then as much body as `Content-Length` (or the chunks) says,
/// without waiting for the server to close. Envoy holds the connection of a reply it made itself
/// (a redirect, a 429, a fault) open for its delayed-close timeout, a second per request.
fn read_response(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).ok()?;
        raw.extend_from_slice(&buf[..n]);
        if n == 0 {
            break;
        }
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let body = &raw[end + 4..];
        let done = match length {
            Some(len) => body.len() >= len,
            None if head.contains("transfer-encoding: chunked") => body.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if done {
            break;
        }
    }
    Some(raw)
}

pub fn get(addr: SocketAddr, path: &str) -> Option<Response> {
    request(addr, "GET", path, &[])
}

fn parse(raw: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `f` until it gives `Some`, for at most `timeout`.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A test backend on 127.0.0.1: answers every request with
/// `{"backend": NAME, "method", "path", "query", "headers": {...}}`.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _server: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        use axum::{body::Body, extract::Request, Router};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (n, h) = (name.to_string(), hits.clone());
        let app = Router::new().fallback(move |req: Request<Body>| {
            let (n, h) = (n.clone(), h.clone());
            async move {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let headers: serde_json::Map<String, serde_json::Value> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                    .collect();
                let body = serde_json::json!({
                    "backend": n,
                    "method": req.method().as_str(),
                    "path": req.uri().path(),
                    "query": req.uri().query().unwrap_or(""),
                    "headers": headers,
                });
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
            }
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Backend {
            name: name.into(),
            addr,
            hits,
            _server: server,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Steady load: one thread sends `GET /` with `headers` to `addr` back to back until
/// [`Load::finish`], counting the answers `good` accepts and keeping every other one (its status,
/// or `None` when the connection failed) so a test can say which requests were lost.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u32, Vec<Option<u16>>)>,
}

impl Load {
    pub fn start(
        addr: SocketAddr,
        headers: &[(&str, &str)],
        good: impl Fn(&Response) -> bool + Send + 'static,
    ) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let (mut ok, mut bad) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match request(addr, "GET", "/", &headers) {
                        Some(r) if good(&r) => ok += 1,
                        other => bad.push(other.map(|r| r.status)),
                    }
                }
                (ok, bad)
            })
        };
        Load { stop, thread }
    }

    /// Stops the load and asserts that at least `min_ok` requests went through and none failed.
    pub fn finish(self, min_ok: u32) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, bad) = self.thread.join().expect("the load thread panicked");
        assert!(ok >= min_ok, "only {ok} requests went through");
        assert!(
            bad.is_empty(),
            "{} of {} requests failed: {bad:?}",
            bad.len(),
            ok as usize + bad.len()
        );
    }
}
