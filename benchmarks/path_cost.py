"""CPU cost of the remote message path with both nodes in this process (a profiling aid).

`call_cost.py` measures each node's CPU in its own OS process, which is what W3-W5 run, but on a
shared machine those figures move by +-30 % from one run to the next. Here node A and node B
(two `Cluster` nodes with a cluster secret, so every frame carries its MAC) share this process
and talk over real TCP on 127.0.0.1, and the ceiling's client and server (`limit-asyncio/bench.py`,
the same code as its node A and node B) do the same, round after round, alternating: the CPU time
per operation of A and B together is steady to a few percent, which is what comparing two
versions of the hot path needs.

    .venv/bin/python -m benchmarks.path_cost [--shapes W3,W4,W5] [--rounds 5] [--count] [--loop uvloop]

W1: sequential local calls (one node; the ceiling's queue actor); W3: sequential calls; W4: 64
callers; W5: casts then one confirming call. `--count` reports,
instead of times, the Python bytecodes and function calls per operation and where they run (a
count that does not depend on the machine's load; tracing makes it slow, so fewer operations).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import time
from collections.abc import Callable
from types import FrameType, ModuleType
from typing import Any

import anyio

from noex_lab import BehaviorRegistry, Cluster, GenServer, RemoteSpawn

from .run import DEFAULT_CEILING
from .workloads.servers import BenchCounter

SECRET = "noex-lab path cost secret, not for production"
# (callers, operations); 0: casts
SHAPES = {"W1": (1, 20_000), "W3": (1, 5_000), "W4": (64, 64 * 800), "W5": (0, 100_000)}


async def _ours(shape: str, ops: int, traced: Callable[[bool], None] | None = None) -> float:
    """CPU seconds of `ops` operations of `shape` between two nodes of this process."""
    if shape == "W1":
        return await _ours_local(ops, traced)
    a = await Cluster.start("path_a", port=0, cluster_secret=SECRET)
    b = await Cluster.start("path_b", port=0, seeds=[a.id], cluster_secret=SECRET)
    try:
        with anyio.fail_after(10):
            while b.id not in a.distribution.transport.conns:
                await anyio.sleep(0.005)
        BehaviorRegistry.register("path_cost_counter", BenchCounter)
        ref = await RemoteSpawn.spawn("path_cost_counter", b.id)
        for _ in range(200):  # warm up
            await GenServer.call(ref, "get")
        callers, _ = SHAPES[shape]
        if traced is not None:
            traced(True)
        t0 = time.process_time()
        if callers == 0:
            await GenServer.call(ref, "reset")
            for _ in range(ops):
                GenServer.cast(ref, "inc")
            if await GenServer.call(ref, "get", timeout=60.0) != ops:
                raise RuntimeError("casts were lost")
        else:
            async def caller(k: int) -> None:
                for _ in range(k):
                    await GenServer.call(ref, "get", timeout=60.0)

            async with anyio.create_task_group() as tg:
                for _ in range(callers):
                    tg.start_soon(caller, ops // callers)
        spent = time.process_time() - t0
        if traced is not None:
            traced(False)
        return spent
    finally:
        await b.stop()
        await a.stop()


async def _ours_local(ops: int, traced: Callable[[bool], None] | None) -> float:
    """W1: CPU seconds of `ops` sequential local calls (one node, no cluster)."""
    ref = await GenServer.start(BenchCounter)
    for _ in range(200):  # warm up
        await GenServer.call(ref, "get")
    if traced is not None:
        traced(True)
    t0 = time.process_time()
    for _ in range(ops):
        await GenServer.call(ref, "get")
    spent = time.process_time() - t0
    if traced is not None:
        traced(False)
    await GenServer.stop(ref)
    return spent


async def _ceiling_local(bench: ModuleType, ops: int) -> float:
    """W1 with the ceiling's queue actor."""
    actor = bench.QueueActor()
    task = asyncio.get_running_loop().create_task(actor.run())
    for _ in range(200):
        await actor.call("get")
    t0 = time.process_time()
    for _ in range(ops):
        await actor.call("get")
    spent = time.process_time() - t0
    await actor.call("stop")
    await task
    return spent


async def _ceiling(bench: ModuleType, shape: str, ops: int) -> float:
    """The same with the ceiling's client (coalesced writes) and its node B's handler."""
    if shape == "W1":
        return await _ceiling_local(bench, ops)
    state = {"count": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        bench.nodelay(writer)
        buf = bytearray()
        while data := await reader.read(1 << 18):
            buf += data
            msgs, used = bench.parse_frames(buf)
            del buf[:used]
            out = []
            for m in msgs:
                if m[0] == bench.CAST:
                    state["count"] += 1
                elif m[0] == bench.CALL:
                    if m[2] == "reset":
                        state["count"] = 0
                    out.append(bench.frame([bench.REPLY, m[1], state["count"]]))
            if out:
                writer.write(b"".join(out))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    client = bench.Client(coalesce=True)
    await client.connect(server.sockets[0].getsockname()[1])
    try:
        for _ in range(200):
            await client.call("get")
        callers, _ = SHAPES[shape]
        t0 = time.process_time()
        if callers == 0:
            await client.call("reset")
            for _ in range(ops):
                await client.cast("inc")
            if await client.call("get") != ops:
                raise RuntimeError("casts were lost")
        else:
            async def caller(k: int) -> None:
                for _ in range(k):
                    await client.call("get")

            await asyncio.gather(*(caller(ops // callers) for _ in range(callers)))
        return time.process_time() - t0
    finally:
        await client.close()
        server.close()


def _load_ceiling() -> ModuleType | None:
    if not DEFAULT_CEILING.exists():
        return None
    spec = importlib.util.spec_from_file_location("limit_asyncio_bench", DEFAULT_CEILING)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _count(shape: str) -> None:
    """Bytecodes and Python calls per operation, by function (sys.settrace opcode events)."""
    ops = SHAPES[shape][1] // 20
    where: dict[str, int] = {}
    totals = {"bytecodes": 0, "calls": 0}

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call":
            totals["calls"] += 1
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
        elif event == "opcode":
            totals["bytecodes"] += 1
            code = frame.f_code
            key = f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_name}"
            where[key] = where.get(key, 0) + 1
        return tracer

    def traced(on: bool) -> None:
        sys.settrace(tracer if on else None)

    anyio.run(_ours, shape, ops, traced)
    print(f"{shape}: {totals['bytecodes'] / ops:.0f} bytecodes and {totals['calls'] / ops:.1f} Python "
          "calls (coroutine resumptions included) per operation, A and B together:")
    for key, count in sorted(where.items(), key=lambda kv: -kv[1])[:20]:
        print(f"  {count / ops:7.1f}  {key}")


def _loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if loop != "uvloop":
        return None
    import uvloop  # (the [fast] extra)

    return uvloop.new_event_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="W3,W4,W5")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", action="store_true", help="bytecodes and calls per operation instead of times")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="the event loop of both (uvloop: pip install 'noex-lab[fast]')")
    args = parser.parse_args()
    options = {"use_uvloop": True} if args.loop == "uvloop" else {}
    shapes = args.shapes.split(",")
    if args.count:
        for shape in shapes:
            _count(shape)
        return
    bench = _load_ceiling()
    if bench is None:
        print(f"NOTE: ceiling harness not found at {DEFAULT_CEILING}; measuring ours only", flush=True)
    for shape in shapes:
        ops = SHAPES[shape][1]
        ours: list[float] = []
        ceiling: list[float] = []
        for _ in range(args.rounds):  # alternating, so a change in load hits both
            ours.append(anyio.run(_ours, shape, ops, backend_options=options) / ops * 1e6)
            if bench is not None:
                with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
                    ceiling.append(runner.run(_ceiling(bench, shape, ops)) / ops * 1e6)
        ours.sort()
        line = (f"{shape}: CPU per operation, A and B together: ours min {ours[0]:.2f} us, "
                f"median {ours[len(ours) // 2]:.2f}")
        if ceiling:
            ceiling.sort()
            line += (f"; ceiling min {ceiling[0]:.2f}, median {ceiling[len(ceiling) // 2]:.2f}; "
                     f"ceiling / ours (min) {ceiling[0] / ours[0]:.2f}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
