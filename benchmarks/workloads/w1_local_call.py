"""W1 local-call: one server process, one caller in the same OS process, 20,000 sequential
`GenServer.call(ref, "get")` round trips; every reply is checked to be an int.

Timed region: the 20,000 calls only (the server is started before, stopped after).
"""

from __future__ import annotations

import time

from noex_lab import GenServer

from ..common import CheckFailed, Context, Line, Measurement, Workload, rate
from .servers import BenchCounter

N = 20_000


async def run(ctx: Context) -> list[Measurement]:
    ref = await GenServer.start(BenchCounter)
    call = GenServer.call
    clock = time.perf_counter_ns
    bad = 0
    t0 = clock()
    for _ in range(N):
        value = await call(ref, "get")
        if type(value) is not int:
            bad += 1
    elapsed = clock() - t0
    await GenServer.stop(ref)
    if bad:
        raise CheckFailed(f"{bad} of {N} replies were not an int")
    return [Measurement("W1-local-call", rate(N, elapsed), "calls/s", ctx.params(n=N))]


WORKLOAD = Workload(
    id="W1",
    name="local-call",
    lines=(Line("W1-local-call", "calls/s", target_ratio=0.8),),
    run=run,
    description="20,000 sequential local calls",
)
