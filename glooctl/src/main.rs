//! glooctl: apply, get, delete and inspect the gateway's objects in gloo-core.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    glooctl::Args::parse_and_run()
}
