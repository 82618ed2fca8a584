"""GlobalRegistry: one winner per name, replicas everywhere, cleanup, partitions and conflicts."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from noex_lab import (
    Cluster,
    Exit,
    GenServer,
    GlobalConflict,
    GlobalNameConflictError,
    GlobalNameNotFoundError,
    GlobalRegistry,
    Node,
    RemoteSpawn,
)
from noex_lab.faults import heal, partition
from tests.distribution.behaviors_for_tests import Echo, Watcher
from tests.helpers.cluster import start_cluster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]



def whereis_on(node: Node, name: str) -> Any:
    with node.as_default():
        return GlobalRegistry.whereis(name)


async def test_concurrent_claims_have_exactly_one_winner_every_round() -> None:
    nodes = await start_cluster(4)
    for round_ in range(20):
        refs = []
        for node in nodes:
            with node.as_default():
                refs.append(await GenServer.start(Echo))
        outcomes: list[Any] = [None] * 4
        seen_after: list[list[Any]] = []

        async def claim(i: int, refs: list[Any] = refs, outcomes: list[Any] = outcomes,
                        seen_after: list[list[Any]] = seen_after) -> None:
            with nodes[i].as_default():
                try:
                    await GlobalRegistry.register("leader", refs[i])
                    outcomes[i] = "won"
                    seen_after.append([whereis_on(n, "leader") for n in nodes])
                except GlobalNameConflictError as exc:
                    outcomes[i] = exc

        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(claim, i)
        winners = [i for i, o in enumerate(outcomes) if o == "won"]
        assert len(winners) == 1, f"round {round_}: {outcomes}"
        assert all(isinstance(o, GlobalNameConflictError) for i, o in enumerate(outcomes) if i != winners[0])
        assert seen_after == [[refs[winners[0]]] * 4]
        with nodes[(round_ + 1) % 4].as_default():
            await GlobalRegistry.unregister("leader")
        assert all(whereis_on(n, "leader") is None for n in nodes)


async def test_many_names_converge_and_vanish_with_their_process() -> None:
    nodes = await start_cluster(4)
    started = time.monotonic()
    expected: dict[str, Any] = {}

    async def register_batch(i: int) -> None:
        with nodes[i].as_default():
            for k in range(50):
                ref = await GenServer.start(Echo)
                await GlobalRegistry.register(f"svc-{i}-{k}", ref)
                expected[f"svc-{i}-{k}"] = ref

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(register_batch, i)
    await wait_until(
        lambda: all(n.distribution.global_names() == expected for n in nodes), 1.0, "200 names everywhere"
    )
    assert time.monotonic() - started < 10
    with nodes[2].as_default():
        assert sorted(GlobalRegistry.names()) == sorted(expected)
        victim = GlobalRegistry.lookup("svc-1-7")
        assert await GenServer.call("svc-1-7", "hi") == "hi"  # a global name works as a call target
    with nodes[1].as_default():
        await GenServer.stop(victim)
    await wait_until(lambda: all(whereis_on(n, "svc-1-7") is None for n in nodes), 1.0, "name dropped")
    with nodes[0].as_default(), pytest.raises(GlobalNameNotFoundError):
        GlobalRegistry.lookup("svc-1-7")


async def test_names_of_a_killed_node_vanish_and_a_restarted_node_gets_the_table() -> None:
    a, b, c, d = await start_cluster(4)
    for i, node in enumerate((a, b, c, d)):
        with node.as_default():
            for k in range(5):
                await GlobalRegistry.register(f"n{i}-{k}", await GenServer.start(Echo))
    await wait_until(lambda: all(len(n.distribution.global_names()) == 20 for n in (a, b, c, d)), 2.0)
    d_port = d.id.port
    await d.kill()
    await wait_until(lambda: all(len(n.distribution.global_names()) == 15 for n in (a, b, c)), 1.0,
                     "d's names gone")
    restarted = await Cluster.start("n3", port=d_port, seeds=[str(a.id)], heartbeat_interval_ms=200)
    t0 = time.monotonic()
    await wait_until(lambda: len(restarted.distribution.global_names()) == 15, 1.0, "table on the new node")
    assert time.monotonic() - t0 < 1.0
    assert restarted.distribution.global_names() == a.distribution.global_names()


async def test_partition_conflict_is_resolved_deterministically() -> None:
    a, b, c, d = await start_cluster(4)
    conflicts: dict[Any, list[GlobalConflict]] = {n.id: [] for n in (a, b, c, d)}
    for n in (a, b, c, d):
        with n.as_default():
            GlobalRegistry.on_conflict(lambda conflict, n=n: conflicts[n.id].append(conflict))
    partition([a, b], [c, d])
    await wait_until(lambda: len(a.get_nodes()) == 1 and len(c.get_nodes()) == 1
                     and len(b.get_nodes()) == 1 and len(d.get_nodes()) == 1, 5.0, "partition")
    with a.as_default():
        left = await GenServer.start(Watcher)
        await GlobalRegistry.register("singleton", left)
    with c.as_default():
        right = await GenServer.start(Watcher)
        await GlobalRegistry.register("singleton", right)
    heal(a, b, c, d)
    t0 = time.monotonic()
    winner, loser = (left, right) if a.id < c.id else (right, left)
    await wait_until(lambda: all(whereis_on(n, "singleton") == winner for n in (a, b, c, d))
                     and all(len(v) == 1 for v in conflicts.values()), 2.0, "one owner everywhere")
    assert time.monotonic() - t0 < 2.0
    loser_node = a if loser == left else c
    await wait_until(lambda: loser_node.local_process(loser).state, 2.0, "conflict Exit delivered")
    assert loser_node.local_process(loser).state == [Exit(winner, ("name_conflict", "singleton"))]
    for per_node in conflicts.values():
        assert per_node == [GlobalConflict("singleton", winner, loser)]


async def test_remote_spawn_with_global_registration() -> None:
    a, b = await start_cluster(2)
    with a.as_default():
        ref = await RemoteSpawn.spawn("echo", b.id, name="global-echo", registration="global")
        assert GlobalRegistry.whereis("global-echo") == ref
        with pytest.raises(GlobalNameConflictError):
            await RemoteSpawn.spawn("echo", b.id, name="global-echo", registration="global")
    # the failed spawn left no process behind on b (only the first echo runs there)
    assert [p.behavior.__name__ for p in b.processes()] == ["Echo"]
