//! discovery-openapi: REST Functions from the OpenAPI 3.x / Swagger 2.0 specs that upstreams
//! serve.
//!
//! For every selected Upstream (see [`select`]) whose address is known (static hosts, or the
//! Endpoints of a kube upstream), the spec is fetched from the first of `--spec-path` that
//! serves one (or from the URL in the `discovery.solo.io/openapi-url` annotation), parsed
//! ([`spec`]) and turned into one REST Function per operation ([`functions`]); the set of all
//! of them is Synced as owner `discovery-openapi`. See [`discover`] for the polling rules.
#![forbid(unsafe_code)]

pub mod discover;
pub mod fetch;
pub mod functions;
pub mod metrics;
pub mod select;
pub mod spec;
pub mod tree;
pub mod warnings;

use std::time::Duration;

use clap::Parser;
use discovery_runtime::{args::parse_duration, reflect::reflect, CommonArgs, Runtime};
use proto::v1::Kind;

pub const DEFAULT_SPEC_PATHS: &str = "/openapi.json,/openapi.yaml,/swagger.json,/v3/api-docs,/v2/api-docs,/swagger/v1/swagger.json,/swagger/docs/v1";

/// Discovers REST functions from the OpenAPI (3.0, 3.1) and Swagger (2.0) specs that upstreams
/// serve, and writes one Function per operation into gloo-core.
///
/// Upstreams are chosen like Gloo's fdsMode: in whitelist mode those labelled
/// discovery.solo.io/function_discovery=enabled (or in an --enabled-namespace), in blacklist
/// mode all but those labelled =disabled (or in a --disabled-namespace); an upstream's label
/// wins over its namespace. An upstream annotated discovery.solo.io/openapi-url (an absolute
/// URL, or a path on the upstream) is fetched from there only.
#[derive(Parser, Debug)]
#[command(name = "discovery-openapi", version)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Which upstreams are probed.
    #[arg(long, value_enum, default_value = "whitelist")]
    pub mode: select::Mode,

    /// Namespaces whose upstreams are probed unless labelled disabled (repeat or comma-separate).
    #[arg(long = "enabled-namespace", value_delimiter = ',')]
    pub enabled_namespaces: Vec<String>,

    /// Namespaces whose upstreams are not probed unless labelled enabled.
    #[arg(long = "disabled-namespace", value_delimiter = ',')]
    pub disabled_namespaces: Vec<String>,

    /// Paths tried in order on an upstream until one serves a spec.
    #[arg(long = "spec-path", value_delimiter = ',', default_value = DEFAULT_SPEC_PATHS)]
    pub spec_paths: Vec<String>,

    /// Specs larger than this are refused (a Warning; the last good Functions are kept).
    #[arg(long, default_value_t = 10 << 20)]
    pub max_spec_bytes: u64,

    /// At most this many upstreams are probed at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,

    /// An upstream serving no spec is asked again after twice --interval, then four times,
    /// and so on up to this; after the probe that followed a wait this long it is not asked
    /// again until the Upstream changes (generation, labels, annotations, address) or the
    /// service restarts.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub max_probe_interval: Duration,

    /// Timeout of one request to a service.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut rt = Runtime::new("discovery-openapi", args.common.clone(), &[Kind::Function])?;
    let metrics = metrics::OpenapiMetrics::register(rt.registry());
    let fetcher = fetch::Fetcher::new(args.request_timeout, args.max_spec_bytes)?;
    let cfg = discover::Config {
        selection: select::Selection {
            mode: args.mode,
            enabled_namespaces: args.enabled_namespaces,
            disabled_namespaces: args.disabled_namespaces,
        },
        paths: args.spec_paths,
        interval: args.common.interval,
        max_probe_interval: args.max_probe_interval,
        concurrency: args.concurrency,
    };
    rt.run(move |ctx| async move {
        let (view, driver) = reflect(
            ctx.client.clone(),
            vec![Kind::Upstream, Kind::Endpoints, Kind::Function],
            ctx.metrics.clone(),
            ctx.shutdown.clone(),
        );
        let driver = tokio::spawn(driver);
        let res = discover::run(ctx, cfg, fetcher, metrics, view).await;
        let _ = driver.await;
        res
    })
    .await
}
