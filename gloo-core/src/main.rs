use clap::Parser;

fn main() -> std::process::ExitCode {
    gloo_core::args::Args::parse().run()
}
