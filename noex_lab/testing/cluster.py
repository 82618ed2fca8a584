"""In-process clusters for tests: several nodes in the test's own event loop, real TCP on 127.0.0.1."""

from __future__ import annotations

from typing import Any

from ..core.node import Node, running_nodes
from ..distribution.cluster import Cluster
from .waiting import wait_until

FAST_HEARTBEAT_MS = 200
FAST_MISS_THRESHOLD = 3


async def start_cluster(n: int, *, fast: bool = True, prefix: str = "n", timeout: float = 10.0,
                        **options: Any) -> list[Node]:
    """`n` in-process nodes on free ports, all seeded from the first; waits for the full mesh.

    `options` go to every `Cluster.start`; `seeds=` joins the first node to an existing cluster
    (the mesh waited for is then these `n` nodes, at least). `fast` uses 200 ms heartbeats
    (a silent peer is down after 0.6 s), like the node processes of `start_node_processes`. Under a
    partition policy it also waits until the members have admitted every node."""
    if fast:
        options.setdefault("heartbeat_interval_ms", FAST_HEARTBEAT_MS)
        options.setdefault("heartbeat_miss_threshold", FAST_MISS_THRESHOLD)
    options.setdefault("port", 0)
    seeds = options.pop("seeds", ())
    first = await Cluster.start(f"{prefix}0", seeds=seeds, **options)
    nodes = [first]
    for i in range(1, n):
        nodes.append(await Cluster.start(f"{prefix}{i}", seeds=[str(first.id)], **options))
    await wait_until(lambda: all(len(x.get_nodes()) >= n - 1 for x in nodes), timeout, f"a mesh of {n}")
    # (under a partition policy a joining node is fenced until the members admit it: wait for that too)
    await wait_until(lambda: all(_admitted(x) for x in nodes), timeout, f"every node of {n} admitted")
    return nodes


def _admitted(node: Node) -> bool:
    guard = getattr(node.distribution, "partition_guard", None)
    return guard is None or guard.admitted


async def kill_all_nodes() -> None:
    """Kill every node still running on this event loop (a test leaves nothing behind)."""
    for leftover in running_nodes():
        await leftover.kill()
