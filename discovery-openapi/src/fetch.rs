//! Fetching a spec: conditional GETs of a known spec URL, probing the candidate paths when
//! the URL is not known yet, a size limit read as the body streams in.
use std::time::Duration;

use reqwest::{header, StatusCode};

use crate::spec::SpecError;

pub const USER_AGENT: &str = concat!("gloo-discovery-openapi/", env!("CARGO_PKG_VERSION"));
/// Sent on every probe so a service (or its logs) can tell discovery from users.
pub const PROBE_HEADER: (&str, &str) = ("x-gloo-discovery", "openapi");

/// The validators of the last response, sent back as If-None-Match / If-Modified-Since.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

#[derive(Debug)]
pub enum Fetched {
    /// 304: the spec is as it was.
    NotModified,
    /// 200 with a body within the size limit.
    Body(Vec<u8>, Validators),
    /// 200 with a body over the limit.
    TooLarge(SpecError),
    /// Any other status.
    Status(StatusCode),
}

/// A URL as logs and warnings show it: credentials in it (`https://user:secret@host/...`, from
/// an `openapi-url` annotation) are replaced by `***`.
pub fn shown(url: &str) -> std::borrow::Cow<'_, str> {
    match reqwest::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("***");
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string().into()
        }
        _ => url.into(),
    }
}

#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    max_bytes: u64,
}

impl Fetcher {
    pub fn new(timeout: Duration, max_bytes: u64) -> anyhow::Result<Fetcher> {
        let mut headers = header::HeaderMap::new();
        headers.insert(
            PROBE_HEADER.0,
            header::HeaderValue::from_static(PROBE_HEADER.1),
        );
        headers.insert(
            header::ACCEPT,
            header::HeaderValue::from_static(
                "application/json, application/yaml;q=0.9, text/yaml;q=0.9, */*;q=0.5",
            ),
        );
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()?;
        Ok(Fetcher { client, max_bytes })
    }

    /// GETs `url`, conditionally when `validators` are given.
    pub async fn get(
        &self,
        url: &str,
        validators: Option<&Validators>,
    ) -> Result<Fetched, reqwest::Error> {
        let mut req = self.client.get(url);
        if let Some(v) = validators {
            if let Some(e) = &v.etag {
                req = req.header(header::IF_NONE_MATCH, e);
            }
            if let Some(lm) = &v.last_modified {
                req = req.header(header::IF_MODIFIED_SINCE, lm);
            }
        }
        let mut resp = req.send().await?;
        match resp.status() {
            StatusCode::NOT_MODIFIED => return Ok(Fetched::NotModified),
            StatusCode::OK => {}
            s => return Ok(Fetched::Status(s)),
        }
        let got = |name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let validators = Validators {
            etag: got(header::ETAG),
            last_modified: got(header::LAST_MODIFIED),
        };
        let too_large = |size| {
            Fetched::TooLarge(SpecError::TooLarge {
                size,
                limit: self.max_bytes,
            })
        };
        if let Some(len) = resp.content_length().filter(|l| *l > self.max_bytes) {
            return Ok(too_large(len));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > self.max_bytes {
                return Ok(too_large(body.len() as u64));
            }
        }
        Ok(Fetched::Body(body, validators))
    }
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn credentials_in_a_url_are_not_shown() {
        assert_eq!(
            shown("https://alice:s3cret@api.example.com/v1/openapi.json"),
            "https://***:***@api.example.com/v1/openapi.json"
        );
        assert_eq!(
            shown("http://tok3n@10.0.0.1:8080/spec"),
            "http://***@10.0.0.1:8080/spec"
        );
        assert_eq!(
            shown("http://10.0.0.1:8080/openapi.json"),
            "http://10.0.0.1:8080/openapi.json"
        );
        assert_eq!(shown("not a url"), "not a url");
    }
}
