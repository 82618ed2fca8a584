"""W5 remote-cast-throughput: the counter on node B (a `noex-lab node` process) is reset by a
call, then node A (this process) sends 100,000 `GenServer.cast(ref, "inc")` and one
`GenServer.call(ref, "get")` confirming the count is exactly 100,000.

Timed region: first cast sent -> confirming reply received. noex_lab keeps per-sender FIFO
across nodes (casts and calls share one connection, dispatched in arrival order), so one
confirming call is enough; any other count makes the run an error.
"""

from __future__ import annotations

import time

from noex_lab import GenServer

from ..common import CheckFailed, Context, Line, Measurement, Workload, rate
from ..remote import profile_a, remote_counter

N = 100_000


async def run(ctx: Context) -> list[Measurement]:
    async with remote_counter("W5") as remote:
        ref = remote.ref
        if await GenServer.call(ref, "reset") != 0:
            raise CheckFailed("reset did not answer 0")
        cast = GenServer.cast
        clock = time.perf_counter_ns
        with profile_a("W5"):
            t0 = clock()
            for _ in range(N):
                cast(ref, "inc")
            count = await GenServer.call(ref, "get", timeout=60.0)
            elapsed = clock() - t0
        if count != N:
            raise CheckFailed(f"count {count!r} != {N}")
        params = ctx.params(n=N, confirm_calls=1, **remote.params())
    return [Measurement("W5-remote-cast-throughput", rate(N, elapsed), "msgs/s", params)]


WORKLOAD = Workload(
    id="W5",
    name="remote-cast-throughput",
    lines=(Line("W5-remote-cast-throughput", "msgs/s", target_ratio=0.5),),
    run=run,
    description="100,000 remote casts A->B then one confirming call",
)
