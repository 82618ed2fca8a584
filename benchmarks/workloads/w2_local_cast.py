"""W2 local-cast: 100,000 `GenServer.cast(ref, "inc")`, then one `GenServer.call(ref, "get")`
confirming the count is exactly 100,000.

Timed region: first cast sent -> confirming reply received. noex_lab orders a cast before a
later call from the same sender (per-sender FIFO), so one confirming call is enough; any
other count makes the run an error.
"""

from __future__ import annotations

import time

from noex_lab import GenServer

from ..common import CheckFailed, Context, Line, Measurement, Workload, rate
from .servers import BenchCounter

N = 100_000


async def run(ctx: Context) -> list[Measurement]:
    ref = await GenServer.start(BenchCounter)
    cast = GenServer.cast
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in range(N):
        cast(ref, "inc")
    count = await GenServer.call(ref, "get", timeout=60.0)
    elapsed = clock() - t0
    await GenServer.stop(ref)
    if count != N:
        raise CheckFailed(f"count {count!r} != {N}")
    return [Measurement("W2-local-cast", rate(N, elapsed), "msgs/s", ctx.params(n=N, confirm_calls=1))]


WORKLOAD = Workload(
    id="W2",
    name="local-cast",
    lines=(Line("W2-local-cast", "msgs/s", target_ratio=0.4),),
    run=run,
    description="100,000 local casts then one confirming call",
)
