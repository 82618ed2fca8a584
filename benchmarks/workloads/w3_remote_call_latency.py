"""W3 remote-call-latency: node B (a `noex-lab node` process) hosts the counter, node A (this
process) makes 500 untimed warm-up calls, then 5,000 sequential `GenServer.call(ref, "get")`,
each timed on its own with `time.perf_counter_ns`.

Reported: p50 and p99 by nearest rank (us), and calls/s = 5,000 / elapsed time of the 5,000.
Every reply is checked to be an int.
"""

from __future__ import annotations

import math
import time

from noex_lab import GenServer

from ..common import CheckFailed, Context, Line, Measurement, Workload, rate
from ..remote import profile_a, remote_counter

WARMUP = 500
N = 5_000


def nearest_rank(sorted_values: list[int], pct: float) -> int:
    """The nearest-rank percentile (as in the reference harness)."""
    k = max(0, math.ceil(pct / 100.0 * len(sorted_values)) - 1)
    return sorted_values[k]


async def run(ctx: Context) -> list[Measurement]:
    async with remote_counter("W3") as remote:
        ref = remote.ref
        call = GenServer.call
        for _ in range(WARMUP):
            await call(ref, "get")
        clock = time.perf_counter_ns
        lat = [0] * N
        bad = 0
        with profile_a("W3"):
            t_start = clock()
            for i in range(N):
                t = clock()
                value = await call(ref, "get")
                lat[i] = clock() - t
                if type(value) is not int:
                    bad += 1
            elapsed = clock() - t_start
        if bad:
            raise CheckFailed(f"{bad} of {N} replies were not an int")
        params = ctx.params(n=N, warmup=WARMUP, **remote.params())
    lat.sort()
    return [
        Measurement("W3-remote-call-latency-p50", round(nearest_rank(lat, 50) / 1000, 2), "us", params),
        Measurement("W3-remote-call-latency-p99", round(nearest_rank(lat, 99) / 1000, 2), "us", params),
        Measurement("W3-remote-call-latency-rate", rate(N, elapsed), "calls/s", params),
    ]


WORKLOAD = Workload(
    id="W3",
    name="remote-call-latency",
    lines=(
        Line("W3-remote-call-latency-p50", "us", target_ratio=1.2, higher_is_better=False),
        Line("W3-remote-call-latency-p99", "us", higher_is_better=False),
        Line("W3-remote-call-latency-rate", "calls/s"),
    ),
    run=run,
    description="5,000 sequential remote calls A->B after 500 warm-up",
)
