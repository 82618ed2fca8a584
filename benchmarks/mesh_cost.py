"""Where a node's CPU goes while a mesh forms (issue 19, W10): `python -m benchmarks.mesh_cost`.

Launches N `noex-lab node` processes as W6/W10 do (the seed first, the other N-1 at once when it
listens), each with `benchmarks.mesh_probe`, which prints the node's own CPU time (every thread)
at its `NODE` line and at each `PEERS` line. Prints, as one JSON line, the medians over the nodes
of the CPU at `NODE` (the start: interpreter, imports, `Cluster.start`) and from `NODE` to
`PEERS N-1` (the node's share of forming the mesh), the latter also per peer. CPU time is what
the load on a shared machine barely moves; wall times are printed for reference only.

`--profile PATH` runs node n1 (not the seed) under cProfile (stats to PATH at its exit); its
CPU figures are left out of the medians (the profiler inflates them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from typing import Any

import anyio

from .nodes import NodeError, NodeProc, stop_all_async, wall_us

PROBE = "benchmarks.mesh_probe"
PROFILED = 1  # n1: not the seed


def _cpu_at(node: NodeProc, prefix: str) -> float | None:
    """The CPU seconds the node reported with its first stdout line starting with `prefix`."""
    for line in list(node.stderr):
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "CPU" and parts[2].startswith(prefix):
            return int(parts[1]) / 1e9
    return None


async def measure(n: int, timeout_s: float, profile: str | None, counts: bool) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    nodes: list[NodeProc] = []
    probe_env = {"NOEX_BENCH_MESH_N": str(n), **({"NOEX_BENCH_MESH_COUNTS": "1"} if counts else {})}
    try:
        t0 = wall_us()
        nodes.append(NodeProc("c0", behaviors=[PROBE], env=probe_env))
        seed = await nodes[0].started(deadline)
        for i in range(1, n):
            env = {"NOEX_BENCH_PROFILE": profile} if profile and i == PROFILED else {}
            nodes.append(NodeProc(f"c{i}", seeds=[seed], behaviors=[PROBE], env={**env, **probe_env}))
        converged: dict[str, int] = {}
        while len(converged) < n:
            for node in nodes:
                if node.name not in converged and (hit := node.peers_line(n - 1)) is not None:
                    converged[node.name] = hit.wall_us
            dead = [node.describe() for node in nodes if node.proc.poll() is not None]
            if dead:
                raise NodeError(f"a node exited: {dead[0]}")
            if time.monotonic() > deadline:
                raise NodeError(f"{n - len(converged)} of {n} nodes did not see {n - 1} peers in time")
            await anyio.sleep(0.01)
        mesh_wall_s = (max(converged.values()) - t0) / 1e6
        # the CPU lines go to stderr just before the stdout line: wait until every one is read
        while any(_cpu_at(node, f"PEERS {n - 1} ") is None for node in nodes):
            if time.monotonic() > deadline:
                raise NodeError("the probe's CPU lines did not arrive")
            await anyio.sleep(0.01)
        rows = []
        for i, node in enumerate(nodes):
            at_node, at_mesh = _cpu_at(node, "NODE "), _cpu_at(node, f"PEERS {n - 1} ")
            assert at_node is not None and at_mesh is not None
            rows.append({"node": node.name, "seed": i == 0, "profiled": bool(profile) and i == PROFILED,
                         "cpu_at_node_s": at_node, "cpu_node_to_mesh_s": at_mesh - at_node})
    finally:
        await stop_all_async(nodes)
    split: Counter[str] = Counter()  # node to mesh, by user/system time and by thread
    for node in nodes[1:]:
        at = {}
        for line in list(node.stderr):
            parts = line.split(" ", 2)
            if parts[0] == "SPLIT" and (parts[2].startswith("NODE ") or parts[2].startswith(f"PEERS {n - 1} ")):
                at[parts[2].split()[0]] = json.loads(parts[1])
        if len(at) == 2:
            split.update({key: value - at["NODE"].get(key, 0.0) for key, value in at["PEERS"].items()})
    totals: Counter[str] = Counter()
    for node in nodes:
        for line in list(node.stderr):
            if line.startswith("COUNTS "):
                totals.update(json.loads(line[len("COUNTS "):]))
    measured = [row for row in rows if not row["profiled"]]
    start = [row["cpu_at_node_s"] for row in measured]
    mesh = [row["cpu_node_to_mesh_s"] for row in measured]
    return {
        "n": n,
        "cpu_at_node_s_median": round(statistics.median(start), 4),
        "cpu_node_to_mesh_s_median": round(statistics.median(mesh), 4),
        "cpu_per_peer_ms_median": round(1000 * statistics.median(mesh) / (n - 1), 3),
        "cpu_at_mesh_s_mean": round(statistics.fmean(a + b for a, b in zip(start, mesh, strict=True)), 4),
        "seed_node_to_mesh_s": round(rows[0]["cpu_node_to_mesh_s"], 4),
        "mesh_wall_s": round(mesh_wall_s, 3),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "node_to_mesh_split_ms_mean": {key: round(1000 * value / (n - 1), 2) for key, value in sorted(split.items())},
        "until_mesh_per_node_mean": {key: round(value / n, 2) for key, value in sorted(totals.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--profile", metavar="PATH", help="cProfile node n1, stats to PATH")
    parser.add_argument("--counts", action="store_true",
                        help="also count dials, frames and the CPU of membership methods (adds overhead)")
    args = parser.parse_args()
    for _ in range(args.repeat):
        result = anyio.run(measure, args.nodes, args.timeout, args.profile, args.counts)
        print(json.dumps(result), flush=True)
        sys.stderr.flush()


if __name__ == "__main__":
    main()
