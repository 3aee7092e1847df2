#!/usr/bin/env bash
# Gateway benchmarks: builds gloo-core in release, then runs, each as a `harness = false` bench
# printing a markdown table of results vs targets on stdout (progress on stderr):
#   convergence  real gloo-core + real Envoy (SotW): Apply answered → first 200, quiet and
#                while 5,000 other routes churn, with the Gateway as it comes (scopedRoutes
#                unset: scoped routes from 100 VirtualServices) and with scopedRoutes: false
#                (one RouteConfiguration) (needs Envoy: $GLOO_ENVOY_BIN or .venv)
#   memory       gloo-core's RSS with 10,000 upstreams / 10,000 routes / 50,000 endpoints
#   fanout       one change to 1,000 simulated ADS clients, in process
# Usage: bash bench/run-gateway.sh [convergence|memory|fanout ...]   (default: all three)
# Quick run: CONVERGENCE_ROUTES=100 MEMORY_UPSTREAMS=1000 FANOUT_CLIENTS=100 bash bench/run-gateway.sh
# Every bench runs even if an earlier one misses a target; the exit code is 1 if any did.
set -uo pipefail
cd "$(dirname "$0")/.."

benches=("$@")
[ ${#benches[@]} -eq 0 ] && benches=(convergence memory fanout)

# The benches start target/release/gloo-core (next to their own target/release/deps executables).
cargo build --release -p gloo-core || exit 2
cargo bench -p bench --no-run "${benches[@]/#/--bench=}" || exit 2

echo "Machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1)," \
    "$(awk '/MemTotal/ {printf "%.1f GiB RAM", $2 / 1048576}' /proc/meminfo)"
echo
failed=()
for b in "${benches[@]}"; do
    echo "bench: running $b" >&2
    # The machine may be shared: a busy one skews every figure, so say how busy it was.
    echo "_${b}: load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)_"
    echo
    started=$(date +%s)
    if ! cargo bench -q -p bench --bench "$b"; then
        failed+=("$b")
    fi
    echo "bench: $b took $(( $(date +%s) - started )) s" >&2
    echo
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "bench: targets missed or checks failed in: ${failed[*]}" >&2
    exit 1
fi
