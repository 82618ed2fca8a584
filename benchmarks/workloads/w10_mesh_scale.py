"""W10 mesh-scale: N = 32 `noex-lab node` processes on 127.0.0.1, all seeded with one seed node
(as W6), default settings (heartbeat 5000 ms x 3); time to a full mesh, then the mean CPU use of
one idle node over 10 s, in percent of one core.

Formation is timed as in W6: t0 = the seed's launch, the other 31 launched at once when it prints
`NODE <id>`, value = the latest `PEERS 31` wall time - t0. Then, after `SETTLE_S`, the CPU time
(utime + stime from /proc/PID/stat, every thread) of every node is read at the start and the end
of a 10 s window. The value is node n1's (a non-seed node); params carry the mean and max over
all 32 and the per-thread run time of n1 (main = the event loop; the other live threads are the
liveness thread and the stdin watcher), so a regression shows where it lives. Targets (issue 19):
mesh <= 5 s, idle CPU <= 0.3 % of a core per node.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import anyio

from ..cluster_formation import Formation, form_cluster
from ..common import Context, Line, Measurement, Workload
from ..nodes import NodeError, stop_all_async
from ..proc_cpu import CLK_TCK, cpu_ticks, percent_of_core, thread_ns

N = 32
FORMATION_TIMEOUT_S = 60.0
SETTLE_S = 1.0  # after the mesh: dials and gossip of the formation have ended
IDLE_WINDOW_S = 10.0
MEASURED = 1  # index of the node whose CPU is the value (n1: not the seed)


async def idle_cpu(formation: Formation) -> tuple[float, dict[str, Any]]:
    """CPU of every node over IDLE_WINDOW_S; returns n1's percent and the details."""
    nodes = formation.nodes
    pids = [node.pid for node in nodes]
    before = [cpu_ticks(pid) for pid in pids]
    threads_before = thread_ns(pids[MEASURED])
    start = time.monotonic()
    await anyio.sleep(IDLE_WINDOW_S)  # the measurement window itself, not a wait for a condition
    after = [cpu_ticks(pid) for pid in pids]
    threads_after = thread_ns(pids[MEASURED])
    wall = time.monotonic() - start
    dead = [node.describe() for node in nodes if node.proc.poll() is not None]
    if dead:
        raise NodeError(f"a node exited while idle: {dead[0]}")
    per_node = [percent_of_core(a - b, wall) for a, b in zip(after, before, strict=True)]
    per_thread = {
        name: round(100.0 * (ns - threads_before.get(name, 0)) / 1e9 / wall, 3)
        for name, ns in threads_after.items()
    }
    params = {
        "idle_window_s": round(wall, 2), "settle_s": SETTLE_S, "measured_node": nodes[MEASURED].name,
        "mean_all_nodes_percent": round(statistics.fmean(per_node), 3),
        "max_all_nodes_percent": round(max(per_node), 3),
        "seed_percent": round(per_node[0], 3),
        "per_thread_percent": per_thread,
        "clock": "utime+stime from /proc/PID/stat (10 ms ticks); per_thread from schedstat (ns)",
    }
    return round(per_node[MEASURED], 4), params


def formation_costs(formation: Formation) -> dict[str, Any]:
    """What the formation time is made of: the nodes' CPU until the mesh (mostly interpreter and
    import start-up, on a shared machine at the mercy of its load), and the time from the last
    node listening (its NODE line read) to the full mesh (the protocol's own part)."""
    ticks = [cpu_ticks(node.pid) for node in formation.nodes]
    ready = [hit[0] for node in formation.nodes if (hit := node.find(lambda s: s.startswith("NODE "))) is not None]
    return {
        "cpu_s_all_nodes_at_mesh": round(sum(ticks) / CLK_TCK, 2),
        "cpu_s_per_node_at_mesh": round(statistics.fmean(ticks) / CLK_TCK, 3),
        "cores": os.cpu_count(),
        "mesh_after_last_node_ready_s": round((formation.converged_at_us - max(ready)) / 1e6, 4) if ready else None,
        "loadavg_1m_at_mesh": round(os.getloadavg()[0], 2),
    }


async def run(ctx: Context) -> list[Measurement]:
    formation = Formation(N)
    try:
        load_before = round(os.getloadavg()[0], 2)
        try:
            await form_cluster(formation, time.monotonic() + FORMATION_TIMEOUT_S, prefix="m")
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            return [Measurement("W10-mesh-formation-n32", None, "s", ctx.params(n=N, error=error)),
                    Measurement("W10-idle-cpu-n32", None, "percent",
                                ctx.params(n=N, error=f"no mesh: {error}"))]
        mesh_s = round((formation.converged_at_us - formation.t0_us) / 1e6, 4)
        costs = formation_costs(formation)
        results = [Measurement("W10-mesh-formation-n32", mesh_s, "s",
                               ctx.params(heartbeat="default 5000 ms x 3", **formation.params(),
                                          loadavg_1m_before=load_before, **costs))]
        await anyio.sleep(SETTLE_S)
        try:
            value, params = await idle_cpu(formation)
        except Exception as exc:
            results.append(Measurement("W10-idle-cpu-n32", None, "percent",
                                       ctx.params(n=N, error=f"{type(exc).__name__}: {exc}")))
        else:
            results.append(Measurement("W10-idle-cpu-n32", value, "percent",
                                       ctx.params(n=N, heartbeat="default 5000 ms x 3", **params)))
        return results
    finally:
        await stop_all_async(formation.nodes)


WORKLOAD = Workload(
    id="W10",
    name="mesh-scale",
    lines=(
        Line("W10-mesh-formation-n32", "s", higher_is_better=False, abs_target=5.0,
             abs_note="issue 19: 32 processes <= 5 s"),
        Line("W10-idle-cpu-n32", "percent", higher_is_better=False, abs_target=0.3,
             abs_note="issue 19: <= 0.3 % of a core per node"),
    ),
    run=run,
    has_ceiling=False,
    description="32 node processes seeded from one: time to a full mesh, then one idle node's CPU over 10 s",
)
