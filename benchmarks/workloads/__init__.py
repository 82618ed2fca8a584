"""One module per workload of WORKLOADS.md; each defines `WORKLOAD` (see `benchmarks/common.py`)."""
