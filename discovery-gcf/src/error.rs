//! Errors of reading Google's APIs, sorted into the kinds the metrics count and the loop
//! branches on. Messages name the endpoint and Google's own error text, never a credential.
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No answer (connection refused, timeout, bad body).
    #[error("{what}: {source}")]
    Http {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    /// An HTTP error status.
    #[error("{what}: HTTP {status}: {message}")]
    Status {
        what: String,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The credentials cannot be used (missing Secret, bad key).
    #[error("credentials: {0}")]
    Credentials(String),
    /// An answer we cannot use.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn http(what: &str, source: reqwest::Error) -> Self {
        // reqwest's messages carry the URL: ours never hold credentials (tokens go in headers).
        Error::Http {
            what: what.into(),
            source: source.without_url(),
        }
    }

    /// The `errors` metric's kind: `throttled` (429), `credentials`, or `source`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Status { status: 429, .. } => "throttled",
            Error::Status {
                status: 401 | 403, ..
            }
            | Error::Credentials(_) => "credentials",
            _ => "source",
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long the server asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// `resp` when its status is a success; else an [`Error::Status`] with Google's error message
/// (`{"error": {"message"}}` for APIs, `{"error", "error_description"}` for OAuth), cut short.
pub async fn check(what: &str, resp: reqwest::Response) -> Result<reqwest::Response, Error> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = resp.text().await.unwrap_or_default();
    let message = match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(v) => match &v["error"] {
            serde_json::Value::Object(e) => e
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or_default()
                .to_string(),
            serde_json::Value::String(e) => match v["error_description"].as_str() {
                Some(d) => format!("{e}: {d}"),
                None => e.clone(),
            },
            _ => String::new(),
        },
        Err(_) => String::new(),
    };
    let mut message = if message.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        message
    };
    if message.len() > 300 {
        let mut cut = 300;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    Err(Error::Status {
        what: what.into(),
        status: status.as_u16(),
        message,
        retry_after,
    })
}
