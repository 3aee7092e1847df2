use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = discovery_k8s::Args::parse();
    discovery_runtime::exit_code(args.run().await)
}
