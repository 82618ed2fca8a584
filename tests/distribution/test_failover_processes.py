"""DistributedSupervisor failover with nodes as real OS processes (SIGKILL, restart, a blocked loop)."""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import Any

import anyio
import pytest

from noex_lab import Cluster, DistributedSupervisor, GenServer, RemoteSpawn
from noex_lab.introspection import NodeEvent
from tests.helpers.cluster import NodeProcess, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

FAST = ["--heartbeat-interval-ms", "200", "--heartbeat-miss-threshold", "3",
        "--behaviors", "tests.distribution.behaviors_for_tests"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"



async def _cluster(procs: list[NodeProcess], n: int, names: list[str] | None = None) -> Any:
    import tests.distribution.behaviors_for_tests  # noqa: F401  (the test's node runs workers too)

    me = await Cluster.start("tester", port=0, heartbeat_interval_ms=200, heartbeat_miss_threshold=3)
    names = names or [f"p{i}" for i in range(n)]
    new = [NodeProcess(name, *FAST, "--seed", str(me.id)) for name in names]
    procs.extend(new)
    for p in new:
        await p.started()
    await wait_until(lambda: len(me.get_nodes()) == len(procs), 10.0, "processes joined")
    return me


async def _live_echo_args() -> Counter[Any]:
    """(node, arg) of every live Echo on every node, counted: each must appear exactly once."""
    seen: Counter[Any] = Counter()
    for snap in await Cluster.snapshot(timeout=3.0):
        assert snap.reachable, snap.error
        for info in snap.processes:
            if info.behavior == "Echo":
                seen[(snap.node, info.ref)] += 1
    return seen


async def _assert_each_child_once(sup: Any, n: int, alive_nodes: set[Any]) -> None:
    children = await DistributedSupervisor.which_children(sup)
    assert len(children) == n and all(ch.status == "running" for ch in children)
    assert {ch.node for ch in children} <= alive_nodes
    live = await _live_echo_args()
    assert sum(live.values()) == n, f"{sum(live.values())} live instances for {n} children"
    assert {ref for (_, ref) in live} == {ch.ref for ch in children}
    for ch in children:
        assert await GenServer.call(ch.ref, "arg") == {"worker": ch.id}


def _specs(n: int) -> list[dict[str, Any]]:
    return [{"id": f"c{i}", "behavior_name": "echo", "arg": {"worker": f"c{i}"}} for i in range(n)]


async def test_sigkill_of_one_node_moves_its_children_within_two_seconds(procs: list[NodeProcess]) -> None:
    me = await _cluster(procs, 3)
    sup = await DistributedSupervisor.start(children=_specs(30), node_selector="round_robin", max_restarts=50)
    events: list[NodeEvent] = []
    DistributedSupervisor.on_event(sup, events.append)
    placed = Counter(ch.node for ch in await DistributedSupervisor.which_children(sup))
    assert sorted(placed.values()) == [7, 7, 8, 8]
    victim = procs[1]
    killed_at = time.monotonic()
    victim.signal(signal.SIGKILL)
    moved = placed[victim.id]
    await wait_until(lambda: sum(e.kind == "child_migrated" for e in events) == moved, 2.0, "migrations")
    assert time.monotonic() - killed_at < 2.0
    alive = {me.id} | {p.id for p in procs if p is not victim}
    await _assert_each_child_once(sup, 30, alive)


async def test_two_nodes_killed_at_once_and_a_restarted_node_gets_no_stale_children(
    procs: list[NodeProcess],
) -> None:
    me = await _cluster(procs, 3)
    sup = await DistributedSupervisor.start(children=_specs(30), node_selector="round_robin", max_restarts=50)
    events: list[NodeEvent] = []
    DistributedSupervisor.on_event(sup, events.append)
    placed = Counter(ch.node for ch in await DistributedSupervisor.which_children(sup))
    v1, v2 = procs[0], procs[2]
    v1.signal(signal.SIGKILL)
    v2.signal(signal.SIGKILL)
    moved = placed[v1.id] + placed[v2.id]
    await wait_until(lambda: sum(e.kind == "child_migrated" for e in events) == moved, 2.0, "migrations")
    await _assert_each_child_once(sup, 30, {me.id, procs[1].id})
    # restart v1 under the same name and port: a new incarnation with no children of ours
    assert v1.id is not None
    v1.stop()
    reborn = NodeProcess(v1.id.name, *FAST, "--seed", str(me.id), port=v1.id.port)
    procs.append(reborn)
    assert await reborn.started() == v1.id
    await wait_until(lambda: any(i.id == reborn.id for i in me.get_nodes()), 5.0, "reborn joined")
    assert next(i for i in me.get_nodes() if i.id == reborn.id).incarnation != 0
    await _assert_each_child_once(sup, 30, {me.id, procs[1].id})
    live = await _live_echo_args()
    assert not any(node == reborn.id for (node, _) in live)


async def test_a_busy_node_causes_no_migration(procs: list[NodeProcess]) -> None:
    me = await _cluster(procs, 2)
    sup = await DistributedSupervisor.start(children=_specs(6), node_selector="round_robin")
    events: list[NodeEvent] = []
    DistributedSupervisor.on_event(sup, events.append)
    busy: list[Any] = []
    me.on_node_busy(lambda info: busy.append(info.id))
    before = await DistributedSupervisor.which_children(sup)
    target = procs[0]
    blocker = await RemoteSpawn.spawn("echo", target.id)
    GenServer.cast(blocker, ("block", 4.0))
    await wait_until(lambda: target.id in busy, 2.0, "busy")
    await wait_until(
        lambda: any(i.id == target.id and i.status == "up" for i in me.get_nodes()), 8.0, "back to up"
    )
    with anyio.fail_after(5):
        after = await DistributedSupervisor.which_children(sup)
    assert [(c.id, c.ref) for c in after] == [(c.id, c.ref) for c in before]
    assert not [e for e in events if e.kind in ("child_migrated", "node_failure_detected")]


async def test_sigterm_moves_the_leaving_nodes_children_whatever_their_restart_type(
    procs: list[NodeProcess],
) -> None:
    me = await _cluster(procs, 2)
    types = ("transient", "temporary", "permanent", "transient")
    children = [{**spec, "restart": types[i % 4]} for i, spec in enumerate(_specs(12))]
    # one restart allowed: the moves below would exceed it if they counted
    sup = await DistributedSupervisor.start(children=children, node_selector="round_robin", max_restarts=1)
    events: list[NodeEvent] = []
    DistributedSupervisor.on_event(sup, events.append)
    restarts: list[Any] = []
    me.events.subscribe(lambda e: restarts.append(e) if e.kind == "supervisor_restart" else None)
    before = {ch.id: ch for ch in await DistributedSupervisor.which_children(sup)}
    leaving = procs[0]
    moving = {cid for cid, ch in before.items() if ch.node == leaving.id}
    assert len(moving) == 4 and {before[c].node for c in before} == {me.id, procs[0].id, procs[1].id}
    leaving.signal(signal.SIGTERM)
    await wait_until(lambda: len([e for e in events if e.kind == "child_migrated"]) == 4, 5.0, "4 moves")
    assert await anyio.to_thread.run_sync(leaving.proc.wait, 10) == 0
    migrated = [e for e in events if e.kind == "child_migrated"]
    assert {e.data["child"] for e in migrated} == moving
    assert all(e.data["reason"] == "node_leaving" and e.data["from_node"] == leaving.id for e in migrated)
    assert not restarts and not [e for e in events if e.kind == "supervisor_stopped"]
    await _assert_each_child_once(sup, 12, {me.id, procs[1].id})
    after = {ch.id: ch for ch in await DistributedSupervisor.which_children(sup)}
    assert all(after[c].ref == before[c].ref for c in before if c not in moving)  # the others never moved
