//! discovery-gcf: for every GCP Upstream in gloo-core's store, lists its project's Cloud
//! Functions (v2 API) and Syncs one Function per ACTIVE, HTTP-triggered function.
//!
//! ```text
//!  gloo-core store ──Watch (Upstreams, Secrets)──► view
//!        ▲                                          │ each poll: for each GCP Upstream (bounded concurrency)
//!        │                                          ▼
//!      Sync ◄── publish(all parts) ◄── Partitions ◄── functions.list (paged) with an OAuth token
//! ```
//!
//! A part (one upstream) whose listing fails keeps its last good Functions; the next poll
//! comes after a backoff delay. Credentials come from the Secret the Upstream names (a
//! service-account key), else from the metadata server.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod discover;
pub mod error;

use std::time::Duration;

use discovery_runtime::{args::parse_duration, CommonArgs, Runtime};
use proto::v1::Kind;

/// Discovers Google Cloud Functions (v2) of GCP Upstreams and writes them to gloo-core as
/// Functions, so VirtualServices can route to them by name.
///
/// For each GCP Upstream (`spec.gcp`: project, region or empty for all, secretRef, endpoint)
/// the functions of the project are listed; ACTIVE, HTTP-triggered ones become Functions
/// (`gcf: {name, url}`) named after the function, in the Upstream's namespace. Credentials: the
/// service-account key in the Secret the Upstream names (`gcp.serviceAccountJson`), else the
/// metadata server. A listing that fails keeps what was found before; polls back off.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "discovery-gcf", version)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,

    /// The Cloud Functions API base URL (a GCP Upstream's `endpoint` overrides it).
    #[arg(long, default_value = api::DEFAULT_API_BASE)]
    pub api_base: String,

    /// The OAuth token endpoint for service-account keys; default: the key's `token_uri`
    /// (https://oauth2.googleapis.com/token).
    #[arg(long)]
    pub token_url: Option<String>,

    /// The metadata server, for GCP Upstreams without a Secret.
    #[arg(long, default_value = auth::DEFAULT_METADATA_BASE)]
    pub metadata_base: String,

    /// Only functions carrying this label (key=value; repeat for several, all must match).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// Only functions whose short name starts with this.
    #[arg(long, default_value = "")]
    pub name_prefix: String,

    /// The longest wait between polls while nothing changes (polls start at --interval and
    /// double while quiet).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub max_interval: Duration,

    /// How many upstreams are listed at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,

    /// Functions asked for per page (the API allows up to 1000).
    #[arg(long, default_value_t = 1000)]
    pub page_size: u32,

    /// Timeout of each request to Google's APIs.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

/// Runs discovery until shutdown.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut rt = Runtime::new("discovery-gcf", args.common.clone(), &[Kind::Function])?;
    let metrics = discover::GcfMetrics::register(rt.registry());
    rt.run(move |ctx| discover::run(ctx, args, metrics)).await
}
