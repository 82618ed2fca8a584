"""W8 process-start: 20,000 GenServers started one after another on one node, each
`GenServer.start` returning only after the process's `init` ran; one call to the last one
checks its state; then all stopped one after another with `GenServer.stop`.

Timed regions, as in the ceiling (`limit-asyncio/bench.py` `w8`): the 20,000 starts (starts/s);
the resident memory growth over them / 20,000 (bytes/process, read from /proc/self/statm right
before the first start and right after the last, like the ceiling); the 20,000 stops (stops/s).
The node is started and warmed up (one process started and stopped) before the timed region, so
the loop, the node's task group and the imports are not counted.
"""

from __future__ import annotations

import os
import time
from typing import Any

from noex_lab import GenServer
from noex_lab.core.node import current_node

from ..common import CheckFailed, Context, Line, Measurement, Workload, rate

N = 20_000


class Started(GenServer):
    """`init(i)` keeps `i`; `"get"` returns it (the check that init ran with the right arg)."""

    def init(self, arg: Any) -> Any:
        return arg

    def handle_call(self, msg: Any, state: Any) -> tuple[Any, Any]:
        return state, state


def rss_bytes() -> int:
    """Current resident set size (Linux /proc, as the ceiling measures it; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


async def run(ctx: Context) -> list[Measurement]:
    await current_node().start()
    await GenServer.stop(await GenServer.start(Started, -1))  # warm-up: node and code paths ready
    start = GenServer.start
    clock = time.perf_counter_ns
    refs = []
    rss0 = rss_bytes()
    t0 = clock()
    for i in range(N):
        refs.append(await start(Started, i))
    start_ns = clock() - t0
    per_process = (rss_bytes() - rss0) / N
    last = await GenServer.call(refs[-1], "get")
    if last != N - 1:
        raise CheckFailed(f"the last process's state is {last!r}, expected {N - 1}")
    stop = GenServer.stop
    t0 = clock()
    for ref in refs:
        await stop(ref)
    stop_ns = clock() - t0
    alive = current_node().process_count
    if alive:
        raise CheckFailed(f"{alive} processes still run after stopping all {N}")
    params = ctx.params(n=N)
    return [
        Measurement("W8-process-start", rate(N, start_ns), "starts/s", params),
        Measurement("W8-process-memory", round(per_process, 1), "bytes/process", params),
        Measurement("W8-process-stop", rate(N, stop_ns), "stops/s", params),
    ]


WORKLOAD = Workload(
    id="W8",
    name="process-start",
    lines=(
        Line("W8-process-start", "starts/s", target_ratio=0.5),
        Line("W8-process-memory", "bytes/process", target_ratio=1.2, higher_is_better=False, speed=False),
        Line("W8-process-stop", "stops/s", target_ratio=0.5),
    ),
    run=run,
    description="20,000 GenServers started (each after its init), one call, all stopped",
)
