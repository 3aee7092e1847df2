//! Benchmarks live in `benches/`; run them with `bash bench/run.sh` (see docs/benchmarks.md).
#![forbid(unsafe_code)]
