"""SIM simulation-speed (noex_lab's own, not in WORKLOADS.md): how much faster than real time the
simulator (`noex_lab.sim`) runs a 5-node cluster with 200 ms heartbeats (x 3 misses).

Variants: `idle` (the cluster alone: heartbeats, gossip, the loop stampers) and `probes` (with the
invariant checkers' workload: every node casts to every peer every 50 ms and calls one every
250 ms). The cluster forms first; then 600 simulated seconds (`idle`) or 60 (`probes`) are timed
with `time.perf_counter`. Value = simulated seconds / wall seconds; `params.x_cpu` divides by this
process's CPU time instead (what the figure would be on an idle machine). Issue 15's target: >= 100x
(a simulated hour in < 36 s) for the cluster with 200 ms heartbeats, i.e. the `idle` line.
The simulation runs in a worker thread: it has its own (virtual-time) event loop.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from ..common import Context, Line, Measurement, Workload

SPANS = (("idle", False, 600.0), ("probes", True, 60.0))


def measure(probes: bool, span_s: float) -> tuple[float, dict[str, Any]]:
    from noex_lab.sim import Simulation

    with Simulation(seed=1, nodes=5, probes=probes, heartbeat_interval_ms=200) as sim:
        sim.run_until(sim.converged, 10.0)
        start, began, cpu = sim.now, time.perf_counter(), time.process_time()
        sim.run_for(span_s)
        wall = time.perf_counter() - began
        cpu = time.process_time() - cpu
        simulated = sim.now - start
        if not sim.converged():
            raise RuntimeError("the simulated cluster fell apart without faults")
    return round(simulated / wall, 1), {"simulated_s": simulated, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                                        "x_cpu": round(simulated / cpu, 1), "nodes": 5, "heartbeat_interval_ms": 200}


async def run(ctx: Context) -> list[Measurement]:
    results = []
    for variant, probes, span in SPANS:
        value, params = await anyio.to_thread.run_sync(measure, probes, span)
        results.append(Measurement("SIM-simulation-speed", value, "x real time", ctx.params(variant=variant, **params)))
    return results


WORKLOAD = Workload(
    id="SIM",
    name="simulation-speed",
    lines=(
        Line("SIM-simulation-speed", "x real time", higher_is_better=True, variant="idle", abs_target=100.0,
             abs_note="issue 15: >= 100x real time"),
        Line("SIM-simulation-speed", "x real time", higher_is_better=True, variant="probes"),
    ),
    run=run,
    has_ceiling=False,
    description="a 5-node simulated cluster, 200 ms heartbeats, virtual time vs wall time",
)
