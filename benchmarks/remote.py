"""The two-node set-up of W3-W5: node B a `noex-lab node` process, node A this process.

Node B runs with `--behaviors benchmarks.bench_behaviors` (it registers `bench_counter`);
node A is made distributed with `Cluster.start` in the workload's own process, seeded with B,
and starts the counter on B with `RemoteSpawn.spawn`. Both nodes use noex_lab's default
settings (heartbeat 5000 ms x 3), and a cluster secret: the handshake is authenticated and
every frame carries its MAC, as on a production link.

Profiling hooks (benchmark code only):

- `NOEX_BENCH_PROFILE_A=PREFIX`: node A's timed region runs under cProfile; stats go to
  `PREFIX.<workload>.A.prof`.
- `NOEX_BENCH_PROFILE_B=PREFIX`: node B's whole process runs under cProfile (see
  `bench_behaviors.py`); stats go to `PREFIX.<workload>.B.prof` when B is stopped.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import anyio

from noex_lab import Cluster, Node, ProcessRef, RemoteSpawn

from .bench_behaviors import BEHAVIOR, PROFILE_ENV
from .nodes import NodeError, NodeProc, stop_all_async

SETUP_TIMEOUT_S = 30.0  # node B start, the connection, the spawn
SECRET = "noex-lab benchmark secret, not for production"


@dataclass
class Remote:
    node_a: Node
    node_b: NodeProc
    ref: ProcessRef  # the counter on node B

    def params(self) -> dict[str, Any]:
        return {"node_b_cmd": " ".join(self.node_b.cmd[1:]), "heartbeat": "default 5000 ms x 3",
                "secret": "yes (frames with a MAC)"}


@contextlib.asynccontextmanager
async def remote_counter(workload: str) -> AsyncIterator[Remote]:
    """Start node B and node A, spawn the counter on B; stop both on the way out, always."""
    env = {}
    prefix_b = os.environ.get("NOEX_BENCH_PROFILE_B")
    if prefix_b:
        env[PROFILE_ENV] = f"{prefix_b}.{workload}.B.prof"
    node_b = NodeProc("bench_b", behaviors=["benchmarks.bench_behaviors"], env=env, secret=SECRET)
    node_a: Node | None = None
    try:
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        b_id = await node_b.started(deadline)
        node_a = await Cluster.start("bench_a", port=0, seeds=[b_id], cluster_secret=SECRET)
        while not any(str(info.id) == b_id for info in node_a.get_nodes()):
            if time.monotonic() > deadline:
                raise NodeError(f"node A did not connect to node B in time; B: {node_b.describe()}")
            await anyio.sleep(0.002)
        with anyio.fail_after(max(0.1, deadline - time.monotonic())):
            ref = await RemoteSpawn.spawn(BEHAVIOR, b_id)
        yield Remote(node_a, node_b, ref)
    finally:
        if node_a is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await node_a.stop()
        await stop_all_async([node_b])


@contextlib.contextmanager
def profile_a(workload: str) -> Iterator[None]:
    """cProfile around node A's timed region when NOEX_BENCH_PROFILE_A is set."""
    prefix = os.environ.get("NOEX_BENCH_PROFILE_A")
    if not prefix:
        yield
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(f"{prefix}.{workload}.A.prof")
