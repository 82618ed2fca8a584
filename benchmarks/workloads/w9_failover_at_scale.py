"""W9 failover-at-scale: 4 `noex-lab node` processes (A, B, C, D) in a full mesh, default
settings; a DistributedSupervisor on A with 1,000 `bench_counter` children, `round_robin` over
all four (250 each). D gets SIGKILL. Value = seconds from just before the signal until every
child of D runs again on a survivor and each of them has answered a call. Then (untimed) the
check: exactly 1,000 children alive cluster-wide (the snapshots of A, B and C), each once, and
the supervisor lists them all running on the survivors. Target: <= 0.25 s (issue 19).

The harness joins as a hidden observer (it hosts nothing and is no member: the cluster is the
four nodes "plus nothing else") and hears the supervisor's `child_migrated` events, relayed
by A. This module is also the nodes' behaviors module: it registers `w9_host`, which starts
the supervisor on A.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import anyio

from noex_lab import BehaviorRegistry, Cluster, DistributedSupervisor, GenServer, RemoteSpawn
from noex_lab.introspection import NodeEvent

from ..common import CheckFailed, Context, Line, Measurement, Workload
from ..nodes import NodeError, NodeProc, stop_all_async

N_CHILDREN = 1000
SETUP_TIMEOUT_S = 60.0
FAILOVER_TIMEOUT_S = 10.0
BEHAVIORS = ("benchmarks.bench_behaviors", "benchmarks.workloads.w9_failover_at_scale")


class W9Host(GenServer):
    """On node A: starts the supervisor (children `bench_counter`, round_robin); answers its ref."""

    async def init(self, n: int) -> Any:
        children = [{"id": f"c{i}", "behavior_name": "bench_counter"} for i in range(n)]
        return await DistributedSupervisor.start(children=children, node_selector="round_robin",
                                                 max_restarts=10 * n, within_ms=5000, name="w9")

    def handle_call(self, msg: Any, state: Any) -> Any:
        return state, state


BehaviorRegistry.register("w9_host", W9Host)


async def _form(nodes: list[NodeProc], deadline: float) -> list[str]:
    a = NodeProc("w9a", behaviors=BEHAVIORS)
    nodes.append(a)
    a_id = await a.started(deadline)
    nodes.extend(NodeProc(f"w9{x}", seeds=[a_id], behaviors=BEHAVIORS) for x in "bcd")
    ids = [a_id] + [await node.started(deadline) for node in nodes[1:]]
    while not all(node.peers_line(3) for node in nodes):
        if time.monotonic() > deadline:
            raise NodeError(f"the 4 nodes did not form a mesh in time: {[n.describe() for n in nodes]}")
        await anyio.sleep(0.005)
    return ids


async def one() -> tuple[float, dict[str, Any]]:
    nodes: list[NodeProc] = []
    driver = None
    try:
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        a_id, b_id, c_id, d_id = await _form(nodes, deadline)
        driver = await Cluster.start("w9_observer", port=0, seeds=[a_id], hidden=True)
        while {str(i.id) for i in driver.get_nodes()} != {a_id, b_id, c_id, d_id}:
            if time.monotonic() > deadline:
                raise NodeError("the observer did not see the 4 nodes in time")
            await anyio.sleep(0.005)
        host = await RemoteSpawn.spawn("w9_host", a_id, arg=N_CHILDREN, timeout=SETUP_TIMEOUT_S)
        sup = await GenServer.call(host, "sup")
        migrated: dict[str, Any] = {}
        all_moved = anyio.Event()
        before = await DistributedSupervisor.which_children(sup, timeout=10.0)
        on_d = {c.id for c in before if str(c.node) == d_id}

        def on_event(event: NodeEvent) -> None:
            if event.kind == "child_migrated":
                migrated[event.data["child"]] = event.data["ref"]
                if len(migrated) == len(on_d):
                    all_moved.set()

        DistributedSupervisor.on_event(sup, on_event)
        await DistributedSupervisor.which_children(sup, timeout=10.0)  # A has the listen request (same connection)
        if len(before) != N_CHILDREN or len(on_d) != N_CHILDREN // 4:
            raise CheckFailed(f"placement: {len(before)} children, {len(on_d)} on D (want {N_CHILDREN // 4})")
        for node_id in (a_id, b_id, c_id):  # the observer's connections to the survivors are up
            await GenServer.call(next(c.ref for c in before if str(c.node) == node_id), "get")

        started = time.perf_counter()
        nodes[3].signal(signal.SIGKILL)
        with anyio.fail_after(FAILOVER_TIMEOUT_S):
            await all_moved.wait()
            moved_s = time.perf_counter() - started
            async with anyio.create_task_group() as tg:
                for ref in migrated.values():
                    tg.start_soon(GenServer.call, ref, "get")
        value = time.perf_counter() - started

        if set(migrated) != on_d:
            raise CheckFailed(f"moved {len(migrated)} children, not the {len(on_d)} of D")
        after = await DistributedSupervisor.which_children(sup, timeout=10.0)
        if any(c.status != "running" or str(c.node) == d_id for c in after) or len(after) != N_CHILDREN:
            raise CheckFailed("not every child runs on a survivor")
        alive: dict[Any, int] = {}
        for snap in await Cluster.snapshot(timeout=5.0):
            for info in snap.processes:
                if info.behavior == "BenchCounter":
                    alive[info.ref] = alive.get(info.ref, 0) + 1
        if len(alive) != N_CHILDREN or set(alive.values()) != {1} or set(alive) != {c.ref for c in after}:
            raise CheckFailed(f"{sum(alive.values())} children alive cluster-wide, not exactly {N_CHILDREN}")
        return value, {"n_children": N_CHILDREN, "moved": len(on_d), "all_migrated_s": round(moved_s, 4),
                       "alive_after": sum(alive.values()), "heartbeat": "default"}
    finally:
        if driver is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await driver.stop()
        await stop_all_async(nodes)


async def run(ctx: Context) -> list[Measurement]:
    try:
        value, params = await one()
    except Exception as exc:
        return [Measurement("W9-failover-at-scale", None, "s", ctx.params(error=f"{type(exc).__name__}: {exc}"))]
    return [Measurement("W9-failover-at-scale", value, "s", ctx.params(**params))]


WORKLOAD = Workload(
    id="W9",
    name="failover-at-scale",
    lines=(Line("W9-failover-at-scale", "s", higher_is_better=False, abs_target=0.25,
                abs_note="issue 19: <= 0.25 s, exactly 1,000 alive"),),
    run=run,
    has_ceiling=False,
    description="4 node processes, 1,000 children round_robin, SIGKILL D, until every moved child answers",
)
