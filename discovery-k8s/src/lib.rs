//! discovery-k8s: Kubernetes Services become gloo Upstreams (one per Service port) and their
//! EndpointSlices' ready addresses become Endpoints, Synced to gloo-core as owner
//! `discovery-k8s`.
//!
//! [`watch`] follows the API server with kube-runtime watchers into the [`index`], which keeps
//! only the fields discovery uses; [`desired`] turns the index into the desired set (pure,
//! unit-tested); discovery-runtime's sync driver sends it, skipping sets that did not change.
#![forbid(unsafe_code)]

pub mod desired;
pub mod index;
pub mod watch;

use std::{path::PathBuf, time::Duration};

use clap::Parser;
use discovery_runtime::{args::parse_duration, CommonArgs, Runtime};
use proto::v1::Kind;

/// Discovers Kubernetes Services and EndpointSlices as gloo Upstreams and Endpoints.
///
/// One Upstream per TCP Service port, named <namespace>-<service>-<port> in the Service's
/// namespace, carrying the Service's labels; one Endpoints object of the same name with the
/// ready addresses of the Service's EndpointSlices. A Service annotated
/// `discovery.solo.io/disable: "true"` is skipped. Fields a person adds to a discovered
/// Upstream (health checks, TLS, ...) are kept across rediscovery.
#[derive(Parser, Debug)]
#[command(name = "discovery-k8s", version)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,

    /// kubeconfig file to reach the API server with. Default: KUBECONFIG, ~/.kube/config, or
    /// the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: its current context).
    #[arg(long)]
    pub context: Option<String>,

    /// Changes are gathered for this long before the desired set is published again.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub coalesce: Duration,

    /// The longest wait between attempts to reach the API server (the delay grows
    /// exponentially, with jitter, up to this).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub max_backoff: Duration,
}

impl Args {
    pub async fn run(self) -> anyhow::Result<()> {
        let filter = desired::Filter::from_args(&self.common)?;
        let opts = watch::WatchOptions {
            kubeconfig: self.kubeconfig,
            context: self.context,
            coalesce: self.coalesce,
            max_backoff: self.max_backoff,
        };
        let rt = Runtime::new(
            "discovery-k8s",
            self.common,
            &[Kind::Upstream, Kind::Endpoints],
        )?;
        rt.run(move |ctx| watch::run(ctx, opts, filter)).await
    }
}
