"""W5 remote-cast-throughput: the counter on node B (a `noex-lab node` process) is reset by a
call, then node A (this process) sends 100,000 `GenServer.cast(ref, "inc")` and one
`GenServer.call(ref, "get")` confirming the count is exactly 100,000.

Timed region: first cast sent -> confirming reply received. noex_lab keeps per-sender FIFO
across nodes (casts and calls share one connection, dispatched in arrival order), so one
confirming call is enough; any other count makes the run an error.

Variant "with-3x16MiB" (issue 11): the same, while another task of node A casts three 16 MiB
messages to the same counter over the same connection. Nothing may be dropped: the count must
still be exactly 100,000 (before, 62,000 of the small casts were dropped as "overload").
"""

from __future__ import annotations

import time

import anyio

from noex_lab import GenServer

from ..common import CheckFailed, Context, Line, Measurement, Workload, rate
from ..remote import profile_a, remote_counter

N = 100_000
LARGE = 16 * 2**20  # bytes of each of the three large casts of the mixed variant
MIXED = "with-3x16MiB"


async def run(ctx: Context) -> list[Measurement]:
    async with remote_counter("W5") as remote:
        ref = remote.ref
        alone = await _casts(ref, large=False)
        params = ctx.params(n=N, confirm_calls=1, **remote.params())
        mixed = await _casts(ref, large=True)
        mixed_params = {**params, "variant": MIXED, "large_casts": 3, "large_bytes": LARGE, "delivered": N}
    return [
        Measurement("W5-remote-cast-throughput", rate(N, alone), "msgs/s", params),
        Measurement("W5-remote-cast-throughput", rate(N, mixed), "msgs/s", mixed_params),
    ]


async def _casts(ref: object, *, large: bool) -> int:
    """N casts and the confirming call; with `large`, another task casts 3 x 16 MiB meanwhile.
    Returns the timed region in ns."""
    if await GenServer.call(ref, "reset") != 0:
        raise CheckFailed("reset did not answer 0")
    cast = GenServer.cast
    clock = time.perf_counter_ns
    blob = b"x" * LARGE

    async def large_sender() -> None:
        for _ in range(3):
            cast(ref, ("blob", blob))  # the counter ignores it; it shares the connection
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        with profile_a("W5" if not large else "W5-mixed"):
            t0 = clock()
            if large:
                tg.start_soon(large_sender)
                await anyio.lowlevel.checkpoint()
            for _ in range(N):
                cast(ref, "inc")
            count = await GenServer.call(ref, "get", timeout=60.0)
            elapsed = clock() - t0
    if count != N:
        raise CheckFailed(f"count {count!r} != {N}{' with 3 x 16 MiB casts alongside' if large else ''}")
    return elapsed


WORKLOAD = Workload(
    id="W5",
    name="remote-cast-throughput",
    lines=(
        Line("W5-remote-cast-throughput", "msgs/s", target_ratio=0.8),
        Line("W5-remote-cast-throughput", "msgs/s", variant=MIXED),
    ),
    run=run,
    description="100,000 remote casts A->B then one confirming call (alone, and next to 3 x 16 MiB casts)",
)
