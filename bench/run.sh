#!/usr/bin/env bash
# Storage API benchmarks: builds gloo-core in release, then runs bench/benches/storage.rs
# against it (the bench's harness finds target/release/gloo-core next to its own executable).
# Prints a markdown table of results vs targets on stdout; exits non-zero if a target is missed.
# See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p gloo-core
cargo bench -p bench --bench storage "$@"
