//! discovery-lambda: lists the Lambda functions, versions and aliases of every AWS Upstream
//! (and of the regions named on the command line) and Syncs them to gloo-core as Functions.
use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = discovery_lambda::Args::parse();
    discovery_runtime::exit_code(discovery_lambda::run(args).await)
}
