"""DistributedSupervisor across in-process nodes (real TCP): placement, failover, strategies, intensity."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

import tests.distribution.behaviors_for_tests  # noqa: F401  (registers echo and flaky)
from noex_lab import (
    Cluster,
    DistributedSupervisor,
    GenServer,
    MaxRestartsExceededError,
    Node,
    RemoteMonitor,
)
from noex_lab.introspection import NodeEvent
from tests.helpers.cluster import start_cluster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]


def specs(n: int, behavior: str = "echo", **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"w{i}", "behavior_name": behavior, "arg": f"arg-{i}", **extra} for i in range(n)]


async def live_instances(behavior: str) -> Counter[Any]:
    """How many processes of `behavior` run on each reachable node (asks every node)."""
    counts: Counter[Any] = Counter()
    for snap in await Cluster.snapshot():
        assert snap.reachable, snap.error
        counts[snap.node] += sum(1 for p in snap.processes if p.behavior == behavior)
    return counts


async def test_round_robin_placement_and_exactly_once_failover() -> None:
    a, b, c = await start_cluster(3)
    events: list[NodeEvent] = []
    with a.as_default():
        sup = await DistributedSupervisor.start(children=specs(9), node_selector="round_robin", max_restarts=20)
        DistributedSupervisor.on_event(sup, events.append)
        children = await DistributedSupervisor.which_children(sup)
        assert Counter(ch.node for ch in children) == {a.id: 3, b.id: 3, c.id: 3}
        on_c = {ch.id for ch in children if ch.node == c.id}
        await c.kill()
        await wait_until(lambda: sum(e.kind == "child_migrated" for e in events) == 3, 2.0, "3 migrations")
        children = await DistributedSupervisor.which_children(sup)
        assert all(ch.status == "running" and ch.node in (a.id, b.id) for ch in children)
        assert {e.data["child"] for e in events if e.kind == "child_migrated"} == on_c
        assert [e.data["node"] for e in events if e.kind == "node_failure_detected"] == [c.id]
        assert await live_instances("Echo") == {a.id: len([x for x in children if x.node == a.id]),
                                               b.id: len([x for x in children if x.node == b.id])}
        for ch in children:
            assert await GenServer.call(ch.ref, "arg") == f"arg-{ch.id[1:]}"
        assert sum(ch.restarts for ch in children) == 3


async def test_one_for_all_restarts_every_child_on_every_node_in_order() -> None:
    a, b, c = await start_cluster(3)
    events: list[NodeEvent] = []
    with a.as_default():
        sup = await DistributedSupervisor.start("one_for_all", specs(6, "flaky"), node_selector="round_robin",
                                                max_restarts=5)
        DistributedSupervisor.on_event(sup, events.append)
        before = await DistributedSupervisor.which_children(sup)
        with pytest.raises(Exception, match="flaky crash"):
            await GenServer.call(before[2].ref, "crash")
        await wait_until(lambda: sum(e.kind == "child_started" for e in events) == 6, 3.0, "all restarted")
        stopped = [e.data["child"] for e in events if e.kind == "child_stopped"]
        started = [e.data["child"] for e in events if e.kind == "child_started"]
        assert stopped == ["w5", "w4", "w3", "w1", "w0"]  # reverse start order, the crashed w2 excluded
        assert started == [f"w{i}" for i in range(6)]
        after = await DistributedSupervisor.which_children(sup)
        assert all(x.ref != y.ref for x, y in zip(before, after, strict=True))
        assert await live_instances("Flaky") == Counter({a.id: 2, b.id: 2, c.id: 2})


async def test_crash_loop_exhausts_intensity_and_nothing_keeps_running() -> None:
    a, b = await start_cluster(2)
    with a.as_default():
        sup = await DistributedSupervisor.start(
            children=[*specs(3), {"id": "bad", "behavior_name": "flaky", "arg": "crash_loop"}],
            node_selector="round_robin", max_restarts=3, within_ms=5000,
        )
        downs: list[Any] = []
        await RemoteMonitor.monitor(sup, on_down=downs.append)
        await wait_until(lambda: downs, 5.0, "supervisor exit")
        assert downs[0].reason.exc_type == MaxRestartsExceededError.__name__
        counts = await live_instances("Echo") + await live_instances("Flaky")
        assert sum(counts.values()) == 0


async def test_terminate_child_and_stop_leave_nothing_running() -> None:
    a, b, c = await start_cluster(3)
    with a.as_default():
        sup = await DistributedSupervisor.start(children=specs(6), node_selector="round_robin")
        await DistributedSupervisor.terminate_child(sup, "w1")
        await DistributedSupervisor.terminate_child(sup, "w2")
        assert sum((await live_instances("Echo")).values()) == 4
        kids = {ch.id: ch.status for ch in await DistributedSupervisor.which_children(sup)}
        assert kids["w1"] == "stopped" and kids["w2"] == "stopped"
        new_ref = await DistributedSupervisor.restart_child(sup, "w1")
        assert await GenServer.call(new_ref, "arg") == "arg-1"
        await DistributedSupervisor.stop(sup)
        assert sum((await live_instances("Echo")).values()) == 0


async def test_selectors_least_loaded_fixed_and_callable() -> None:
    a, b, c = await start_cluster(3)
    with b.as_default():
        for _ in range(20):
            await GenServer.start(GenServer)  # b is busy with processes
    await wait_until(lambda: all(i.process_count >= 20 for i in a.get_nodes() if i.id == b.id), 3.0,
                     "b's process count reaches a")
    with a.as_default():
        sup = await DistributedSupervisor.start(children=specs(4), node_selector="least_loaded")
        nodes = {ch.node for ch in await DistributedSupervisor.which_children(sup)}
        assert b.id not in nodes
        fixed = await DistributedSupervisor.start(children=specs(2), node_selector={"node": str(c.id)})
        assert {ch.node for ch in await DistributedSupervisor.which_children(fixed)} == {c.id}
        chosen: list[Any] = []

        async def pick(nodes: list[Any], child_id: str) -> Any:
            chosen.append(child_id)
            return max(nodes)

        custom = await DistributedSupervisor.start(
            children=[*specs(1), {"id": "pinned", "behavior_name": "echo", "node_selector": {"node": str(b.id)}}],
            node_selector=pick,
        )
        placed = {ch.id: ch.node for ch in await DistributedSupervisor.which_children(custom)}
        assert placed == {"w0": max(a.id, b.id, c.id), "pinned": b.id} and chosen == ["w0"]


async def test_least_loaded_counts_its_own_placements_when_the_wall_clock_steps_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # slow heartbeats: the peers' reported process counts stay stale while children are placed
    a, b, c = await start_cluster(3, fast=False, heartbeat_interval_ms=5000)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() - 3600.0)  # NTP steps the clock back an hour
    with a.as_default():
        sup = await DistributedSupervisor.start(children=specs(6), node_selector="least_loaded")
        placed = Counter(ch.node for ch in await DistributedSupervisor.which_children(sup))
    assert placed[b.id] - placed[c.id] in (-1, 0, 1) and placed[b.id] + placed[c.id] >= 4, placed


async def test_supervisor_node_death_leaves_its_children_running_and_a_survivor_takes_over() -> None:
    a, b, c = await start_cluster(3)
    with a.as_default():
        sup = await DistributedSupervisor.start(children=specs(4), node_selector={"node": str(b.id)}, name="pool")
        before = await DistributedSupervisor.which_children("pool")
    assert sum(1 for p in b.processes() if p.behavior.__name__ == "Echo") == 4
    took_over: list[NodeEvent] = []
    with c.as_default():
        DistributedSupervisor.on_event("pool", took_over.append)
    await a.kill()
    await wait_until(lambda: any(e.kind == "supervisor_took_over" for e in took_over), 2.0, "takeover seen on c")
    for node in (b, c):
        with node.as_default():
            after = await DistributedSupervisor.which_children("pool")
        assert [(ch.id, ch.ref, ch.restarts) for ch in after] == [(ch.id, ch.ref, 0) for ch in before]
    assert sum(1 for p in b.processes() if p.behavior.__name__ == "Echo") == 4
    new_host = next(e.data["node"] for e in took_over if e.kind == "supervisor_took_over")
    assert new_host == min(b.id, c.id) and sup.node == a.id
    victim = b.local_process(before[0].ref)
    assert victim is not None
    victim.kill("boom")  # still supervised: a crash is restarted by the new host
    with b.as_default():
        await wait_until(lambda: any(e.kind == "child_restarted" for e in took_over), 2.0, "restart by new host")
        children = await DistributedSupervisor.wait_stable("pool")
    assert children[0].ref != before[0].ref and children[0].restarts == 1


async def test_restarted_node_gets_no_stale_children() -> None:
    a, b = await start_cluster(2)
    port = b.id.port
    with a.as_default():
        sup = await DistributedSupervisor.start(children=specs(4), node_selector="round_robin", max_restarts=10)
        await b.kill()
        await wait_until(lambda: a.get_nodes() == [], 2.0)
        b2: Node = await Cluster.start("n1", port=port, seeds=[str(a.id)], heartbeat_interval_ms=200)
        await wait_until(lambda: a.get_nodes(), 5.0, "b back")
        children = await DistributedSupervisor.which_children(sup)
        assert {ch.node for ch in children} == {a.id}
        assert not any(p.behavior.__name__ == "Echo" for p in b2.processes())


async def test_a_cluster_that_shuts_down_as_a_whole_stops_its_supervisor_cleanly() -> None:
    """Every node leaves at once: the children have nowhere to go, which is no failure. The
    supervisor stops with its node ("shutdown"), not with too many restarts."""
    import anyio

    a, b, c = await start_cluster(3)
    events: list[Any] = []
    a.events.subscribe(events.append)
    with a.as_default():
        children = [{"id": f"w{i}", "behavior_name": "echo"} for i in range(6)]
        sup = await DistributedSupervisor.start(children=children, node_selector="round_robin", max_restarts=1)
        placed = {child.node for child in await DistributedSupervisor.which_children(sup)}
    assert placed == {a.id, b.id, c.id}
    async with anyio.create_task_group() as tg:
        for node in (b, c, a):
            tg.start_soon(node.stop)
    stopped = [e for e in events if e.kind == "supervisor_stopped"]
    assert [e.data["reason"] for e in stopped] == ["shutdown"], stopped
    assert not [e for e in events if e.kind in ("crash_report", "child_restarted")]


async def test_graceful_stop_of_the_supervisors_node_hands_its_children_and_the_supervision_over() -> None:
    import tests.distribution.behaviors_dsup  # noqa: F401  (registers counter)

    a, b, c = await start_cluster(3)
    with a.as_default():
        await DistributedSupervisor.start(children=specs(6, "counter"), node_selector="round_robin", name="pool",
                                          max_restarts=0)  # a move counted as a restart would stop it
        before = {ch.id: ch for ch in await DistributedSupervisor.which_children("pool")}
        for ch in before.values():
            for _ in range(int(ch.id[1:]) + 1):
                GenServer.cast(ch.ref, "inc")
        assert [await GenServer.call(ch.ref, "get") for ch in before.values()] == [1, 2, 3, 4, 5, 6]
    events: list[NodeEvent] = []
    with c.as_default():
        DistributedSupervisor.on_event("pool", events.append)
    moving = {cid for cid, ch in before.items() if ch.node == a.id}
    assert len(moving) == 2
    await a.stop()
    await wait_until(lambda: any(e.kind == "supervisor_took_over" for e in events), 2.0, "takeover")
    assert {e.data["child"] for e in events if e.kind == "child_migrated"} == moving
    for node in (b, c):
        with node.as_default():
            after = {ch.id: ch for ch in await DistributedSupervisor.wait_stable("pool")}
        assert all(after[cid].ref == ch.ref for cid, ch in before.items() if cid not in moving)
        assert all(ch.restarts == 0 and ch.node in (b.id, c.id) for ch in after.values())
    with b.as_default():
        assert [await GenServer.call(after[cid].ref, "get") for cid in sorted(after)] == [1, 2, 3, 4, 5, 6]
    assert not [e for e in events if e.kind in ("supervisor_stopped", "child_restarted")]


async def test_the_node_that_takes_over_continues_the_restart_history() -> None:
    a, b, c = await start_cluster(3)
    with a.as_default():
        await DistributedSupervisor.start(children=specs(2), node_selector={"node": str(b.id)}, name="pool",
                                          max_restarts=2, within_ms=60_000)
    for _ in range(2):  # two restarts on a: the window allows one more
        with b.as_default():
            [first, _] = await DistributedSupervisor.wait_stable("pool")
        victim = b.local_process(first.ref)
        assert victim is not None
        victim.kill("boom")
        with b.as_default():
            await wait_until(lambda ref=first.ref: ref not in {p.ref for p in b.processes()}, 2.0, "the crash")
    with b.as_default():
        children = await DistributedSupervisor.wait_stable("pool")
    assert [ch.restarts for ch in children] == [2, 0]
    gave_up: list[NodeEvent] = []
    b.events.subscribe(lambda e: gave_up.append(e) if e.kind == "supervisor_gave_up" else None)
    took_over: list[NodeEvent] = []
    with b.as_default():
        DistributedSupervisor.on_event("pool", took_over.append)
    await a.kill()
    await wait_until(lambda: any(e.kind == "supervisor_took_over" for e in took_over), 2.0, "takeover")
    assert took_over[0].data["node"] == b.id  # (the lowest survivor: b < c)
    with b.as_default():
        assert [ch.restarts for ch in await DistributedSupervisor.which_children("pool")] == [2, 0]
    victim = b.local_process(children[1].ref)
    assert victim is not None
    victim.kill("boom")  # the third restart within the window: the new host gives up
    await wait_until(lambda: gave_up, 2.0, "the new host gives up")
    await wait_until(lambda: not any(p.behavior.__name__ == "Echo" for p in b.processes()), 2.0, "children stopped")


async def test_an_unnamed_supervisor_is_taken_over_and_after_a_healed_partition_one_instance_stays() -> None:
    from noex_lab import GlobalRegistry
    from noex_lab.faults import heal, partition

    a, b, c = await start_cluster(3)
    with a.as_default():
        sup = await DistributedSupervisor.start(children=specs(3), node_selector="round_robin", max_restarts=10)
        assert GlobalRegistry.names() == []  # unnamed: no global name
        before = await DistributedSupervisor.which_children(sup)
    events: list[NodeEvent] = []
    with c.as_default():
        await wait_until(lambda: c.distribution.supervisor_replicas.replicas, 2.0, "c has the replica")
        DistributedSupervisor.on_event(sup, events.append)  # by ref: c knows its name from the replica
    partition([a], [b, c])  # both sides supervise: b takes over for its side
    await wait_until(lambda: any(e.kind == "supervisor_took_over" for e in events), 3.0, "takeover on b's side")
    new_sup = next(e.data["supervisor"] for e in events if e.kind == "supervisor_took_over")
    assert new_sup.node == b.id
    with b.as_default():
        on_bc = await DistributedSupervisor.wait_stable(new_sup)
    kept = {ch.id: ch.ref for ch in on_bc}
    assert all(kept[ch.id] == ch.ref for ch in before if ch.node != a.id)  # not restarted
    assert {ch.node for ch in on_bc} <= {b.id, c.id}
    heal(a, b, c)
    await wait_until(lambda: all(len(n.get_nodes()) == 2 for n in (a, b, c)), 5.0, "healed")
    # the two supervisors exchange replicas: a's (the lower rank) stays, b's stops its instances
    await wait_until(lambda: b.local_process(new_sup) is None, 5.0, "b's supervisor gave way")
    with a.as_default():
        children = await DistributedSupervisor.wait_stable(sup)
    live = await live_instances("Echo")
    assert sum(live.values()) == 3 and {ch.node for ch in children} <= {a.id, b.id, c.id}
