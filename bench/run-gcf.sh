#!/usr/bin/env bash
# discovery-gcf benchmarks: builds gloo-core and discovery-gcf in release, then runs
# bench/benches/gcf.rs (which finds them next to its own executable). Prints a markdown table.
# For a quick first pass with debug binaries: `cargo build -p gloo-core -p discovery-gcf &&
# cargo bench --profile dev -p bench --bench gcf`.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p gloo-core -p discovery-gcf
cargo bench -p bench --bench gcf "$@"
