#!/usr/bin/env bash
# discovery-lambda benchmark: builds gloo-core and discovery-lambda in release, then runs
# bench/benches/lambda.rs (moto with BENCH_LAMBDA_FUNCTIONS functions, default 10,000).
# Prints a markdown table on stdout; exits non-zero if a target is missed. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p gloo-core -p discovery-lambda
cargo bench -p bench --bench lambda "$@"
