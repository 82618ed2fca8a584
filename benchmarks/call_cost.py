"""CPU cost of one remote call on each side, W3 and W4 shapes (a profiling aid, not a workload).

Sets up W3/W4's two nodes (node B a `noex-lab node` process, node A this process, a cluster
secret so every frame carries its MAC) and reports CPU microseconds per call on A (this
process's CPU time) and on B (its utime + stime from /proc), with no profiler attached:

    .venv/bin/python -m benchmarks.call_cost [--calls 20000] [--rounds 3] [--shapes W3,W4]

CPU time per call is far less noisy on a loaded machine than wall time, and it splits the
cost between caller and server. For where the time goes inside one side, combine it with the
profiling hooks of `remote.py` (NOEX_BENCH_PROFILE_A / NOEX_BENCH_PROFILE_B).
"""

from __future__ import annotations

import argparse
import os
import time

import anyio

from noex_lab import GenServer

from .remote import profile_a, remote_counter

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> tuple[float, float]:
    """(utime, stime) of process `pid`, in seconds (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) * TICK_S, int(fields[12]) * TICK_S


def split(before: tuple[float, float], after: tuple[float, float], calls: int) -> str:
    user, system = ((b - a) / calls * 1e6 for a, b in zip(before, after, strict=True))
    return f"{user + system:.1f} us (user {user:.1f}, sys {system:.1f})"


async def measure(calls: int, concurrency: int, label: str) -> None:
    async with remote_counter(label) as remote:
        ref = remote.ref
        call = GenServer.call
        for _ in range(500):
            await call(ref, "get")
        shares = [calls // concurrency + (1 if i < calls % concurrency else 0) for i in range(concurrency)]

        async def caller(k: int) -> None:
            for _ in range(k):
                await call(ref, "get", timeout=30.0)

        b0, a0, t0 = cpu_of(remote.node_b.pid), cpu_of(os.getpid()), time.perf_counter()
        with profile_a(label):
            async with anyio.create_task_group() as tg:
                for k in shares:
                    tg.start_soon(caller, k)
        wall = time.perf_counter() - t0
        a1, b1 = cpu_of(os.getpid()), cpu_of(remote.node_b.pid)
    print(f"{label}: {calls} calls, {concurrency} in flight: {calls / wall:,.0f} calls/s; CPU per call "
          f"A {split(a0, a1, calls)}, B {split(b0, b1, calls)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shapes", default="W3,W4", help="which shapes to measure (W3: 1 call in flight, W4: 64)")
    args = parser.parse_args()
    shapes = args.shapes.split(",")
    for _ in range(args.rounds):
        if "W3" in shapes:
            anyio.run(measure, args.calls, 1, "W3")
        if "W4" in shapes:
            anyio.run(measure, args.calls * 2, 64, "W4")


if __name__ == "__main__":
    main()
