"""noex_lab benchmark harness (see benchmarks/README.md and ../shared/bench/WORKLOADS.md)."""
