"""Behaviors module for benchmark nodes: `noex-lab node --behaviors benchmarks.bench_behaviors`.

Registers `"bench_counter"` (the `BenchCounter` of the local workloads: `"get"` -> int,
`"reset"` -> 0, cast `"inc"`), which W3-W5 start on node B with `RemoteSpawn.spawn`.

Profiling hook (benchmark code only, never in noex_lab): with `NOEX_BENCH_PROFILE=PATH` in
the node's environment, the whole node process runs under cProfile from this import on and
writes its stats to PATH when it exits (SIGTERM makes `noex-lab node` return normally).
"""

from __future__ import annotations

import atexit
import os

from noex_lab import BehaviorRegistry

from .workloads.servers import BenchCounter

BEHAVIOR = "bench_counter"
PROFILE_ENV = "NOEX_BENCH_PROFILE"

BehaviorRegistry.register(BEHAVIOR, BenchCounter)


def _start_profiler(path: str) -> None:
    import cProfile

    profiler = cProfile.Profile()

    def dump() -> None:
        profiler.disable()
        profiler.dump_stats(path)

    atexit.register(dump)
    profiler.enable()


if os.environ.get(PROFILE_ENV):
    _start_profiler(os.environ[PROFILE_ENV])
