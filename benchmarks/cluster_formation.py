"""Cluster formation with `noex-lab node` processes, shared by W6 and W7 (WORKLOADS.md).

The seed's process is launched first (t0 = its launch wall time); once it prints its
`NODE <id>` line (READY: its listener is up) the other N-1 are launched at once, each with
`--seed <seed id>`. A node has converged when it prints `PEERS <N-1> <wall_us>` (it sees N-1
peers); the cluster has converged at the latest of those node-printed wall times.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .nodes import NodeError, NodeProc, wall_us


@dataclass
class Formation:
    n: int
    nodes: list[NodeProc] = field(default_factory=list)  # the seed first
    t0_us: int = 0  # seed launched (wall clock)
    seed_ready_us: int = 0  # the harness read the seed's NODE line
    rest_launch_us: int = 0  # the other N-1 launched (the first of them)
    converged_us: dict[str, int] = field(default_factory=dict)  # node name -> first PEERS N-1

    @property
    def seed(self) -> NodeProc:
        return self.nodes[0]

    @property
    def converged_at_us(self) -> int:
        return max(self.converged_us.values())

    def params(self) -> dict[str, Any]:
        return {
            "seed_ready_s": round((self.seed_ready_us - self.t0_us) / 1e6, 4),
            "from_rest_launch_s": round((self.converged_at_us - self.rest_launch_us) / 1e6, 4),
            "n": self.n,
        }


async def form_cluster(
    formation: Formation, deadline: float, *, heartbeat_interval_ms: int | None = None,
    heartbeat_miss_threshold: int | None = None, prefix: str = "n",
) -> None:
    """Launch `formation.n` nodes into `formation.nodes` and wait until every one sees N-1 peers.

    The caller owns `formation.nodes` and stops them (also when this raises).
    """
    import anyio

    n = formation.n
    hb = {"heartbeat_interval_ms": heartbeat_interval_ms, "heartbeat_miss_threshold": heartbeat_miss_threshold}
    formation.t0_us = wall_us()
    seed = NodeProc(f"{prefix}0", **hb)
    formation.nodes.append(seed)
    seed_id = await seed.started(deadline)
    formation.seed_ready_us = wall_us()
    formation.rest_launch_us = wall_us()
    for i in range(1, n):
        formation.nodes.append(NodeProc(f"{prefix}{i}", seeds=[seed_id], **hb))
    while True:
        for node in formation.nodes:
            if node.name not in formation.converged_us:
                hit = node.peers_line(n - 1)
                if hit is not None:
                    formation.converged_us[node.name] = hit.wall_us
        if len(formation.converged_us) == n:
            for node in formation.nodes:  # every id (each printed NODE before it could see peers)
                if node.id is None:
                    await node.started(deadline)
            return
        dead = [node for node in formation.nodes if node.proc.poll() is not None]
        if dead:
            raise NodeError(f"a node exited during formation: {dead[0].describe()}")
        if time.monotonic() > deadline:
            missing = [node.describe() for node in formation.nodes if node.name not in formation.converged_us]
            raise NodeError(f"{len(missing)} of {n} nodes did not see {n - 1} peers in time: {missing[:3]}")
        await anyio.sleep(0.005)
