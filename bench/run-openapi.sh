#!/usr/bin/env bash
# discovery-openapi benchmarks; see docs/benchmarks.md ("discovery-openapi").
#  1. spec parse time and peak memory for ~5 MB specs (release build, in process);
#  2. requests sent per upstream when nothing changes, counted at the test spec servers over
#     a short run with a small interval against a real gloo-core + discovery-openapi, and
#     extrapolated to an hour at the default intervals.
# Prints markdown tables on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo bench -p discovery-openapi --bench parse
cargo build -p gloo-core -p discovery-openapi
cargo test -p e2e --test discovery_openapi -- --ignored --nocapture request_rate 2>/dev/null \
  | sed -n '/^|/p'
