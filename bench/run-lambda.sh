#!/usr/bin/env bash
# discovery-lambda benchmark: builds gloo-core and discovery-lambda in release, then runs
# bench/benches/lambda.rs: moto with BENCH_LAMBDA_FUNCTIONS functions (default 10,000, created
# once per run) behind e2e/py/lambda_api_proxy.py (ListFunctions paged 50 per page, as AWS);
# the bare paged ListFunctions(FunctionVersion=ALL) against the binary's first pass, with and
# without aliases, and unchanged passes. Prints a markdown table; exits 1 if a target is missed.
# With debug binaries (quicker to build, slower to run): `cargo build -p gloo-core -p
# discovery-lambda --bins && cargo bench --profile dev -p bench --bench lambda`.
# See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p gloo-core -p discovery-lambda
echo "Machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1)," \
    "$(awk '/MemTotal/ {printf "%.1f GiB RAM", $2 / 1048576}' /proc/meminfo);" \
    "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
cargo bench -p bench --bench lambda "$@"
