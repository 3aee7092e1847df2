#!/usr/bin/env bash
# discovery-k8s benchmark: builds gloo-core and discovery-k8s in release, then runs
# bench/benches/discovery_k8s.rs, which prints a markdown table of results vs targets on stdout.
# Env: K8S_SERVICES (10000), K8S_ENDPOINTS (3 per Service), K8S_IDLE_S (20).
# Exits 1 if a target is missed. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p gloo-core -p discovery-k8s
echo "Machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1)," \
    "$(awk '/MemTotal/ {printf "%.1f GiB RAM", $2 / 1048576}' /proc/meminfo);" \
    "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
cargo bench -p bench --bench discovery_k8s
