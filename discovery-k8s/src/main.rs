use std::process::ExitCode;

use clap::Parser;

// One thread is plenty for two watches and a Sync, and keeps memory low (one malloc arena).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = discovery_k8s::Args::parse();
    discovery_runtime::exit_code(args.run().await)
}
