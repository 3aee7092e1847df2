//! The AWS Lambda API side: a client per target (rustls with ring, bounded timeouts), and one
//! listing of a target's callables: `ListFunctions(FunctionVersion=ALL)` pages give every
//! function's `$LATEST` and published versions in one listing; `ListTags` (only with tag
//! filters) and `ListAliases` (unless disabled) are one call per function, run
//! `concurrency` at a time.
use std::{collections::BTreeMap, time::Duration};

use aws_config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, Region};
use aws_sdk_lambda::{
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    types::FunctionVersion,
    Client,
};
use futures::{stream, StreamExt, TryStreamExt};

use crate::targets::{CredentialSource, Target};

/// The SDK this module speaks, for callers that make their own calls with [`client`]'s
/// client (the benchmark's bare listing).
pub use aws_sdk_lambda as sdk;

/// Which functions to publish.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub name_prefix: String,
    /// (key, value); None matches any value.
    pub tags: Vec<(String, Option<String>)>,
    pub aliases: bool,
}

/// One callable: a function's `$LATEST` (empty qualifier), a version, or an alias.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Callable {
    pub function: String,
    pub qualifier: String,
    pub arn: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// TooManyRequestsException / ThrottlingException, after the SDK's own retries; with the
    /// wait the API asked for (its `Retry-After` header, in seconds), if any.
    #[error("throttled by the Lambda API: {message}")]
    Throttled {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{0}")]
    Failed(String),
}

impl ListError {
    pub fn kind(&self) -> &'static str {
        match self {
            ListError::Throttled { .. } => "throttled",
            ListError::Failed(_) => "source",
        }
    }

    /// The wait the Lambda API asked for before the next call.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ListError::Throttled { retry_after, .. } => *retry_after,
            ListError::Failed(_) => None,
        }
    }
}

/// The standard retry mode's attempts per call. A throttled or failed page is retried by the
/// SDK (jittered exponential backoff from 1 s) so that one brief throttle does not throw away
/// a listing of many pages; when these attempts are spent the listing fails, the service
/// counts it (`throttled` / `source`) and waits its own, longer backoff.
pub const SDK_MAX_ATTEMPTS: u32 = 3;

fn classify<E>(op: &str, e: SdkError<E, aws_sdk_lambda::config::http::HttpResponse>) -> ListError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = e.code().unwrap_or_default().to_string();
    // A service error's code and message (not the raw response); other errors with causes.
    let msg = match &e {
        SdkError::ServiceError(se) => format!(
            "{op}: HTTP {}: {} {}",
            se.raw().status().as_u16(),
            code,
            e.message().unwrap_or_default()
        ),
        other => format!("{op}: {}", DisplayErrorContext(other)),
    };
    if code == "TooManyRequestsException" || code == "ThrottlingException" {
        // Lambda binds TooManyRequestsException's retryAfterSeconds to this header.
        let retry_after = e
            .raw_response()
            .and_then(|r| r.headers().get("Retry-After"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        ListError::Throttled {
            message: msg,
            retry_after,
        }
    } else {
        ListError::Failed(msg)
    }
}

/// The HTTPS (and plain HTTP, for endpoint overrides) client every target shares: rustls with
/// ring, so no aws-lc build.
pub fn http_client() -> aws_sdk_lambda::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// A Lambda client for `target`.
pub async fn client(
    target: &Target,
    http: &aws_sdk_lambda::config::SharedHttpClient,
) -> Result<Client, ListError> {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(90))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http.clone())
        .region(Region::new(target.region.clone()))
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(SDK_MAX_ATTEMPTS));
    if let CredentialSource::Static(k) = &target.credentials {
        // Static keys: the default chain is never consulted (no IMDS probing).
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            k.access_key_id.clone(),
            k.secret_access_key.clone(),
            (!k.session_token.is_empty()).then(|| k.session_token.clone()),
            None,
            "gloo-secret",
        ));
    }
    let sdk = loader.load().await;
    let mut conf = aws_sdk_lambda::config::Builder::from(&sdk);
    if let CredentialSource::Role(arn) = &target.credentials {
        let provider = aws_config::sts::AssumeRoleProvider::builder(arn.clone())
            .session_name("gloo-discovery-lambda")
            .configure(&sdk)
            .build()
            .await;
        conf = conf.credentials_provider(provider);
    }
    if let Some(e) = &target.endpoint {
        conf = conf.endpoint_url(e.clone());
    }
    Ok(Client::from_conf(conf.build()))
}

/// `$LATEST` has no qualifier; AWS (and moto) sometimes spell its ARN with `:$LATEST`.
fn unqualified(arn: &str) -> &str {
    arn.strip_suffix(":$LATEST").unwrap_or(arn)
}

/// Every callable of the target that passes `filters`, sorted.
pub async fn list(
    client: &Client,
    filters: &Filters,
    concurrency: usize,
) -> Result<Vec<Callable>, ListError> {
    // function name → (unqualified ARN, callables)
    let mut functions: BTreeMap<String, (String, Vec<Callable>)> = BTreeMap::new();
    let mut pages = client
        .list_functions()
        .function_version(FunctionVersion::All)
        .into_paginator()
        .items()
        .send();
    while let Some(item) = pages.next().await {
        let f = item.map_err(|e| classify("ListFunctions", e))?;
        let (Some(name), Some(arn)) = (f.function_name(), f.function_arn()) else {
            continue;
        };
        if !name.starts_with(&filters.name_prefix) {
            continue;
        }
        let version = f.version().unwrap_or("$LATEST");
        let entry = functions
            .entry(name.to_string())
            .or_insert_with(|| (String::new(), Vec::new()));
        if version == "$LATEST" {
            entry.0 = unqualified(arn).to_string();
            entry.1.push(Callable {
                function: name.to_string(),
                qualifier: String::new(),
                arn: unqualified(arn).to_string(),
            });
        } else {
            entry.1.push(Callable {
                function: name.to_string(),
                qualifier: version.to_string(),
                arn: arn.to_string(),
            });
        }
    }
    // A version listed without its $LATEST (it cannot happen in AWS) still needs a base ARN.
    for (arn, callables) in functions.values_mut() {
        if arn.is_empty() {
            if let Some(c) = callables.first() {
                *arn = c
                    .arn
                    .strip_suffix(&format!(":{}", c.qualifier))
                    .unwrap_or(&c.arn)
                    .to_string();
            }
        }
    }

    if !filters.tags.is_empty() {
        let jobs: Vec<(String, String)> = functions
            .iter()
            .map(|(name, (arn, _))| (name.clone(), arn.clone()))
            .collect();
        let keep: Vec<(String, bool)> = stream::iter(jobs)
            .map(|(name, arn)| {
                let client = client.clone();
                let wanted = filters.tags.clone();
                async move {
                    let out = client
                        .list_tags()
                        .resource(arn)
                        .send()
                        .await
                        .map_err(|e| classify("ListTags", e))?;
                    let tags = out.tags();
                    let ok = wanted.iter().all(|(k, v)| {
                        tags.and_then(|t| t.get(k))
                            .is_some_and(|have| v.as_ref().is_none_or(|v| v == have))
                    });
                    Ok::<_, ListError>((name, ok))
                }
            })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        for (name, ok) in keep {
            if !ok {
                functions.remove(&name);
            }
        }
    }

    if filters.aliases {
        let names: Vec<String> = functions.keys().cloned().collect();
        let aliases: Vec<Vec<Callable>> = stream::iter(names)
            .map(|name| {
                let client = client.clone();
                async move { aliases_of(client, name).await }
            })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        for a in aliases.into_iter().flatten() {
            if let Some((_, c)) = functions.get_mut(&a.function) {
                c.push(a);
            }
        }
    }

    let mut out: Vec<Callable> = functions.into_values().flat_map(|(_, c)| c).collect();
    out.sort();
    out.dedup();
    Ok(out)
}

async fn aliases_of(client: Client, name: String) -> Result<Vec<Callable>, ListError> {
    let mut out = Vec::new();
    let mut pages = client
        .list_aliases()
        .function_name(name.clone())
        .into_paginator()
        .items()
        .send();
    while let Some(a) = pages.next().await {
        let a = a.map_err(|e| classify("ListAliases", e))?;
        if let (Some(alias), Some(arn)) = (a.name(), a.alias_arn()) {
            out.push(Callable {
                function: name.clone(),
                qualifier: alias.to_string(),
                arn: arn.to_string(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use aws_sdk_lambda::{
        config::http::HttpResponse,
        error::ErrorMetadata,
        operation::list_functions::ListFunctionsError,
        primitives::SdkBody,
        types::error::{ServiceException, TooManyRequestsException},
    };

    use super::*;

    /// A ListFunctions error as the SDK parses it from Lambda's answer.
    fn answer(status: u16, error: ListFunctionsError, retry_after: Option<&str>) -> ListError {
        let mut raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::from(""));
        if let Some(s) = retry_after {
            raw.headers_mut().insert("Retry-After", s.to_string());
        }
        classify("ListFunctions", SdkError::service_error(error, raw))
    }

    fn meta(code: &str, message: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).message(message).build()
    }

    #[test]
    fn a_throttle_is_classified_with_the_retry_after_lambda_sent() {
        let e = answer(
            429,
            ListFunctionsError::TooManyRequestsException(
                TooManyRequestsException::builder()
                    .message("Rate exceeded")
                    .meta(meta("TooManyRequestsException", "Rate exceeded"))
                    .build(),
            ),
            Some("7"),
        );
        assert_eq!(e.kind(), "throttled");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(
            e.to_string(),
            "throttled by the Lambda API: ListFunctions: HTTP 429: TooManyRequestsException Rate exceeded"
        );
        // Without the header (or with one that is not a number of seconds): no explicit wait.
        let e = answer(
            429,
            ListFunctionsError::TooManyRequestsException(
                TooManyRequestsException::builder()
                    .meta(meta("TooManyRequestsException", "Rate exceeded"))
                    .build(),
            ),
            Some("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!((e.kind(), e.retry_after()), ("throttled", None));
    }

    #[test]
    fn other_service_errors_are_source_errors() {
        let e = answer(
            500,
            ListFunctionsError::ServiceException(
                ServiceException::builder()
                    .meta(meta("ServiceException", "internal"))
                    .build(),
            ),
            Some("7"),
        );
        assert_eq!((e.kind(), e.retry_after()), ("source", None));
        assert!(e.to_string().contains("HTTP 500: ServiceException"), "{e}");
    }
}
