//! discovery-gcf: Google Cloud Functions of GCP Upstreams become Functions in gloo-core.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = discovery_gcf::Args::parse();
    discovery_runtime::exit_code(discovery_gcf::run(args).await)
}
