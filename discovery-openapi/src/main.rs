use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = discovery_openapi::Args::parse();
    discovery_runtime::exit_code(discovery_openapi::run(args).await)
}
