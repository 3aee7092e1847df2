//! The part of the Cloud Functions v2 REST API discovery reads: `functions.list`
//! (`GET {base}/v2/projects/{project}/locations/{location}/functions`), page by page with
//! `pageToken`/`nextPageToken`, in the JSON of Google's published discovery document.
use std::collections::BTreeMap;

use serde::Deserialize;
use tracing::debug;

use crate::{auth::TokenSource, error::Error};

pub const DEFAULT_API_BASE: &str = "https://cloudfunctions.googleapis.com";

/// `Function` (the fields discovery reads).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Function {
    /// `projects/{project}/locations/{location}/functions/{function}`.
    pub name: String,
    /// `ACTIVE`, `FAILED`, `DEPLOYING`, `DELETING`, `UNKNOWN`.
    pub state: String,
    /// `GEN_1` or `GEN_2`.
    pub environment: String,
    pub service_config: Option<ServiceConfig>,
    /// Set for event-triggered functions, which have no HTTP trigger to route to.
    pub event_trigger: Option<serde_json::Value>,
    pub labels: BTreeMap<String, String>,
    /// The deployed URL (v2); `serviceConfig.uri` is what discovery uses.
    pub url: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceConfig {
    pub uri: String,
}

/// `ListFunctionsResponse`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListFunctionsResponse {
    pub functions: Vec<Function>,
    pub next_page_token: String,
    /// Locations that could not be reached: the listing is incomplete.
    pub unreachable: Vec<String>,
}

impl Function {
    /// The function's short name (the last segment of `name`).
    pub fn short_name(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }

    /// The location segment of `name`.
    pub fn location(&self) -> &str {
        let parts: Vec<&str> = self.name.split('/').collect();
        match parts.as_slice() {
            ["projects", _, "locations", l, "functions", _] => l,
            _ => "",
        }
    }

    /// The HTTPS URL to route to, when the function is ACTIVE and HTTP-triggered.
    pub fn routable_url(&self) -> Option<&str> {
        if self.state != "ACTIVE" || self.event_trigger.is_some() {
            return None;
        }
        self.service_config
            .as_ref()
            .map(|s| s.uri.as_str())
            .filter(|u| !u.is_empty())
    }
}

/// Lists every function of `project` in `location` (`-` for all), following pages. A 401 drops
/// the cached token and retries once with a new one.
pub async fn list_functions(
    http: &reqwest::Client,
    base: &str,
    tokens: &TokenSource,
    project: &str,
    location: &str,
    page_size: u32,
) -> Result<Vec<Function>, Error> {
    let url = format!(
        "{}/v2/projects/{project}/locations/{location}/functions",
        base.trim_end_matches('/')
    );
    let what = format!("listing functions of projects/{project}/locations/{location}");
    let mut out = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0u32;
    loop {
        let mut retried = false;
        let page = loop {
            let token = tokens.token().await?;
            let mut query = vec![("pageSize", page_size.to_string())];
            if !page_token.is_empty() {
                query.push(("pageToken", page_token.clone()));
            }
            let resp = http
                .get(&url)
                .query(&query)
                .bearer_auth(token)
                .send()
                .await
                .map_err(|e| Error::http(&what, e))?;
            match crate::error::check(&what, resp).await {
                Ok(resp) => {
                    break resp
                        .json::<ListFunctionsResponse>()
                        .await
                        .map_err(|e| Error::http(&what, e))?
                }
                Err(e) if e.status() == Some(401) && !retried => {
                    retried = true;
                    tokens.invalidate().await;
                }
                Err(e) => return Err(e),
            }
        };
        pages += 1;
        if !page.unreachable.is_empty() {
            return Err(Error::Invalid(format!(
                "{what}: locations unreachable: {}",
                page.unreachable.join(", ")
            )));
        }
        out.extend(page.functions);
        if page.next_page_token.is_empty() {
            break;
        }
        if page.next_page_token == page_token {
            return Err(Error::Invalid(format!(
                "{what}: the API returned the same page token twice"
            )));
        }
        page_token = page.next_page_token;
    }
    debug!(project, location, pages, functions = out.len(), "listed");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(json: serde_json::Value) -> Function {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn only_active_http_functions_are_routable() {
        let http = f(serde_json::json!({
            "name": "projects/p/locations/us-central1/functions/hello",
            "state": "ACTIVE", "environment": "GEN_2",
            "serviceConfig": {"uri": "https://hello-abc-uc.a.run.app", "service": "x"},
            "labels": {"team": "a"},
            "buildConfig": {"runtime": "python312"},
        }));
        assert_eq!(http.routable_url(), Some("https://hello-abc-uc.a.run.app"));
        assert_eq!(http.short_name(), "hello");
        assert_eq!(http.location(), "us-central1");
        let mut deploying = http.clone();
        deploying.state = "DEPLOYING".into();
        assert_eq!(deploying.routable_url(), None);
        let event = f(serde_json::json!({
            "name": "projects/p/locations/us-central1/functions/on-upload",
            "state": "ACTIVE",
            "serviceConfig": {"uri": "https://on-upload-abc-uc.a.run.app"},
            "eventTrigger": {"eventType": "google.cloud.storage.object.v1.finalized"},
        }));
        assert_eq!(event.routable_url(), None);
        let no_uri =
            f(serde_json::json!({"name": "projects/p/locations/l/functions/x", "state": "ACTIVE"}));
        assert_eq!(no_uri.routable_url(), None);
    }
}
