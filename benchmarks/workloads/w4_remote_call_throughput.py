"""W4 remote-call-throughput: 64 concurrent tasks on node A (this process) make 50,000
`GenServer.call(ref, "get")` in total (16 tasks do 782, 48 do 781) against one counter on
node B (a `noex-lab node` process), i.e. 64 calls in flight.

Timed region: first call issued -> last reply received. Every reply is checked to be an int.
"""

from __future__ import annotations

import time

import anyio

from noex_lab import GenServer

from ..common import CheckFailed, Context, Line, Measurement, Workload, rate
from ..remote import profile_a, remote_counter

TOTAL = 50_000
CONCURRENCY = 64
SHARES = [TOTAL // CONCURRENCY + (1 if i < TOTAL % CONCURRENCY else 0) for i in range(CONCURRENCY)]


async def run(ctx: Context) -> list[Measurement]:
    assert sum(SHARES) == TOTAL and SHARES.count(782) == 16 and SHARES.count(781) == 48
    async with remote_counter("W4") as remote:
        ref = remote.ref
        call = GenServer.call
        bad = 0

        async def caller(k: int) -> None:
            nonlocal bad
            for _ in range(k):
                value = await call(ref, "get", timeout=30.0)
                if type(value) is not int:
                    bad += 1

        clock = time.perf_counter_ns
        with profile_a("W4"):
            t0 = clock()
            async with anyio.create_task_group() as tg:
                for k in SHARES:
                    tg.start_soon(caller, k)
            elapsed = clock() - t0
        if bad:
            raise CheckFailed(f"{bad} of {TOTAL} replies were not an int")
        params = ctx.params(n=TOTAL, concurrency=CONCURRENCY, **remote.params())
    return [Measurement("W4-remote-call-throughput", rate(TOTAL, elapsed), "calls/s", params)]


WORKLOAD = Workload(
    id="W4",
    name="remote-call-throughput",
    lines=(Line("W4-remote-call-throughput", "calls/s", target_ratio=0.8),),
    run=run,
    description="64 concurrent callers on A, 50,000 remote calls",
)
