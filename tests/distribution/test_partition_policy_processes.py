"""A `noex-lab node` process paused past the heartbeat timeout (SIGSTOP, then SIGCONT) fences
itself before its supervised children handle another message, and rejoins.

The children tick every 20 ms into one file with CLOCK_MONOTONIC (system-wide on Linux), so the
test compares instants of every process on one clock."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import pytest

from noex_lab import Cluster, DistributedSupervisor
from tests.helpers.cluster import NodeProcess, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

POLICY = ["--partition-policy", "keep_majority", "--stable-after-ms", "1200"]
FAST = ["--heartbeat-interval-ms", "200", "--heartbeat-miss-threshold", "3",
        "--behaviors", "tests.distribution.behaviors_partitions"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def read_ticks(path: Path) -> list[tuple[str, int, str, float]]:
    """(child id, pid, event, monotonic) of every complete line so far."""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:
            out.append((parts[0], int(parts[1]), parts[2], float(parts[3])))
    return out


async def children_nodes(sup: Any) -> dict[str, Any]:
    return {c.id: c.node for c in await DistributedSupervisor.which_children(sup) if c.status == "running"}


@pytest.mark.timeout(60)
async def test_a_paused_node_fences_before_it_resumes_supervised_work(procs: list[NodeProcess],
                                                                     tmp_path: Path) -> None:
    import tests.distribution.behaviors_partitions  # noqa: F401  (the test's node runs children too)

    log = tmp_path / "ticks.log"
    log.touch()
    me = await Cluster.start("tester", port=0, heartbeat_interval_ms=200, heartbeat_miss_threshold=3,
                             partition_policy="keep_majority", stable_after_ms=1200)
    new = [NodeProcess(name, *FAST, *POLICY, "--seed", str(me.id)) for name in ("p0", "p1", "p2")]
    procs.extend(new)
    for p in new:
        await p.started()
    await wait_until(lambda: len(me.get_nodes()) == 3, 10.0, "processes joined")
    paused = new[2]
    children = [{"id": f"c{i}", "behavior_name": "partition_recorder", "arg": {"id": f"c{i}", "file": str(log)}}
                for i in range(4)]
    sup = await DistributedSupervisor.start(children=children, node_selector="round_robin", max_restarts=50)
    placed = await children_nodes(sup)
    victim = next(c for c, node in placed.items() if node == paused.id)
    await wait_until(lambda: any(c == victim and e == "tick" for c, _, e, _ in read_ticks(log)), 5.0,
                     "the child on p2 ticks")

    stopped_at = time.monotonic()
    paused.pause()
    with anyio.fail_after(10):  # the majority restarts it elsewhere once the window is over
        while (await children_nodes(sup)).get(victim) in (None, paused.id):
            await anyio.sleep(0.05)
    moved_at = time.monotonic()
    continued_at = time.monotonic()
    paused.resume()
    fence_line = await anyio.to_thread.run_sync(paused.wait_line, "FENCED", 10.0)
    await anyio.to_thread.run_sync(paused.wait_line, "UNFENCED", 10.0)
    await wait_until(lambda: len(me.get_nodes()) == 3, 10.0, "p2 rejoined")
    rejoined_at = time.monotonic()
    await wait_until(lambda: all(any(c == f"c{i}" and t > rejoined_at + 0.2 for c, _, _, t in read_ticks(log))
                                 for i in range(4)), 5.0, "every child ticks after the rejoin")

    lines = read_ticks(log)
    on_paused = [t for c, pid, _, t in lines if pid == paused.pid]
    assert on_paused and max(on_paused) < continued_at, (
        f"a child on the paused node ran {max(on_paused) - continued_at:.3f} s after SIGCONT")
    new_start = min(t for c, pid, e, t in lines if c == victim and pid != paused.pid and e == "start")
    assert max(t for c, pid, _, t in lines if c == victim and pid == paused.pid) < new_start
    assert moved_at - stopped_at >= 1.2  # taken over only after the window
    pids: dict[str, set[int]] = defaultdict(set)
    for c, pid, _, t in lines:
        if t > rejoined_at + 0.1:
            pids[c].add(pid)
    assert all(len(pids[f"c{i}"]) == 1 for i in range(4)), f"after the rejoin: {dict(pids)}"
    print(f"taken over {moved_at - stopped_at:.3f} s after SIGSTOP; last tick on the paused node "
          f"{continued_at - max(on_paused):.3f} s before SIGCONT; p2: {fence_line}")
