//! The API client and token source against a small local server: tokens are reused until
//! shortly before they expire, a refused token is replaced once, pages are followed, and an
//! incomplete listing (`unreachable` locations) is an error rather than a short list.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use discovery_gcf::{
    api::list_functions,
    auth::{Credentials, TokenSource},
};

#[derive(Default)]
struct Server {
    tokens_issued: AtomicUsize,
    /// Tokens the API refuses (as if revoked).
    revoked: Mutex<Vec<String>>,
    unreachable: Mutex<bool>,
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn token(State(s): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return json(StatusCode::FORBIDDEN, serde_json::json!({}));
    }
    let n = s.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
    json(
        StatusCode::OK,
        serde_json::json!({"access_token": format!("t{n}"), "expires_in": 1, "token_type": "Bearer"}),
    )
}

async fn list(State(s): State<Arc<Server>>, headers: HeaderMap, uri: Uri) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if s.revoked
        .lock()
        .unwrap()
        .iter()
        .any(|t| auth == format!("Bearer {t}"))
    {
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}),
        );
    }
    let f = |n: &str| serde_json::json!({"name": format!("projects/p/locations/l/functions/{n}"), "state": "ACTIVE", "serviceConfig": {"uri": format!("https://{n}.run.app")}});
    let q: HashMap<&str, &str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let mut body = match q.get("pageToken").copied() {
        None => serde_json::json!({"functions": [f("a"), f("b")], "nextPageToken": "p2"}),
        Some("p2") => serde_json::json!({"functions": [f("c")]}),
        Some(_) => return json(StatusCode::BAD_REQUEST, serde_json::json!({})),
    };
    if *s.unreachable.lock().unwrap() {
        body["unreachable"] = serde_json::json!(["europe-west1"]);
    }
    json(StatusCode::OK, body)
}

async fn serve() -> (String, Arc<Server>) {
    let state = Arc::new(Server::default());
    let app = Router::new()
        .route(
            "/computeMetadata/v1/instance/service-accounts/default/token",
            get(token),
        )
        .route("/v2/projects/{p}/locations/{l}/functions", get(list))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, state)
}

#[tokio::test]
async fn tokens_are_reused_then_refreshed_before_they_expire() {
    let (base, server) = serve().await;
    let tokens = TokenSource::new(Credentials::Metadata { base }, reqwest::Client::new());
    assert_eq!(tokens.token().await.unwrap(), "t1");
    assert_eq!(tokens.token().await.unwrap(), "t1");
    // A 1 s token is replaced a fifth of its life early.
    tokio::time::sleep(Duration::from_millis(850)).await;
    assert_eq!(tokens.token().await.unwrap(), "t2");
    assert_eq!(server.tokens_issued.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn pages_are_followed_and_a_refused_token_is_replaced_once() {
    let (base, server) = serve().await;
    let http = reqwest::Client::new();
    let tokens = TokenSource::new(Credentials::Metadata { base: base.clone() }, http.clone());
    let fns = list_functions(&http, &base, &tokens, "p", "-", 1000)
        .await
        .unwrap();
    let names: Vec<&str> = fns.iter().map(|f| f.short_name()).collect();
    assert_eq!(names, ["a", "b", "c"]);

    // The cached token is revoked: one 401, a new token, and the listing succeeds.
    server.revoked.lock().unwrap().push("t1".into());
    let fns = list_functions(&http, &base, &tokens, "p", "-", 1000)
        .await
        .unwrap();
    assert_eq!(fns.len(), 3);
    assert_eq!(server.tokens_issued.load(Ordering::SeqCst), 2);

    // Every token refused: an error naming the listing and Google's message, not a loop.
    server
        .revoked
        .lock()
        .unwrap()
        .extend(["t2".into(), "t3".into(), "t4".into()]);
    tokens.invalidate().await;
    let e = list_functions(&http, &base, &tokens, "p", "-", 1000)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert_eq!(e.kind(), "credentials");
    assert!(e.to_string().contains("projects/p/locations/-"), "{e}");
    assert!(!e.to_string().contains("Bearer"), "{e}");
}

#[tokio::test]
async fn unreachable_locations_make_the_listing_an_error() {
    let (base, server) = serve().await;
    *server.unreachable.lock().unwrap() = true;
    let http = reqwest::Client::new();
    let tokens = TokenSource::new(Credentials::Metadata { base: base.clone() }, http.clone());
    let e = list_functions(&http, &base, &tokens, "p", "-", 1000)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("europe-west1"), "{e}");
}
