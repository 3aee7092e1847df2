//! discovery-lambda: AWS Lambda functions become routable Functions.
//!
//! ```text
//!  gloo-core store ──Watch(Upstream, Secret)──► targets: one per aws Upstream
//!  --region R[=ns/upstream] ───────────────────►   (+ one per command-line region)
//!                                                   │ every poll, --concurrency at a time
//!                                                   ▼
//!        ListFunctions(FunctionVersion=ALL) ─► [ListTags] ─► [ListAliases] (AWS Lambda API)
//!                                                   │ ok: replace the target's part
//!                                                   │ error: keep its last good part, back off
//!                                                   ▼
//!                              Partitions ──publish(full set)──► Sync(Function) ─► gloo-core
//! ```
//!
//! One Function per callable: `$LATEST` (no qualifier), each published version and each
//! alias, named `<upstream>-<function>[-<qualifier>]` in the upstream's namespace. Polling
//! slows down while nothing changes and speeds up after a change; throttling and errors back
//! off, and never delete what was found.
#![forbid(unsafe_code)]

pub mod args;
pub mod aws;
pub mod objects;
pub mod source;
pub mod targets;

pub use args::Args;

/// Runs the service until SIGTERM/Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let regions = args.region_targets()?;
    let tags = args.tag_filters()?;
    let mut rt = discovery_runtime::Runtime::new(
        "discovery-lambda",
        args.common.clone(),
        &[proto::v1::Kind::Function],
    )?;
    let metrics = source::LambdaMetrics::register(rt.registry());
    let settings = source::Settings {
        regions,
        filters: aws::Filters {
            name_prefix: args.name_prefix.clone(),
            tags,
            aliases: !args.no_aliases,
        },
        concurrency: args.concurrency.max(1),
        max_interval: args.max_interval,
        endpoint_url: args.endpoint_url.clone(),
        role_arn: args.role_arn.clone(),
    };
    rt.run(move |ctx| source::run(ctx, settings, metrics)).await
}
