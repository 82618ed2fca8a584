"""Split-brain policy (docs/concepts/partitions.md): the losing side fences before the winning
side takes over, so no child runs twice and no name has two answering owners at any instant.

Children and name owners record their start (in init) and stop (an exit hook) on the shared
monotonic clock of the in-process nodes; the checks compare those intervals."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from itertools import pairwise
from typing import Any

import pytest

from noex_lab import (
    Cluster,
    DistributedSupervisor,
    GenServer,
    GlobalRegistry,
    Node,
    keep_majority,
    keep_referee,
    static_quorum,
)
from noex_lab.core.errors import GlobalNameConflictError
from noex_lab.core.node_id import NodeId
from noex_lab.distribution.distributed_supervisor import DistributedSupervisorServer
from noex_lab.errors import InvalidArgumentError, NodeFencedError
from noex_lab.faults import heal, partition
from noex_lab.policies import PartitionPolicy
from noex_lab.testing.waiting import eventually
from tests.distribution import behaviors_partitions as rec
from tests.helpers.cluster import start_cluster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

STABLE_MS = 1200  # 2 x the 600 ms heartbeat timeout of start_cluster's fast nodes


def ids(*names: str) -> set[NodeId]:
    return {NodeId(name, "127.0.0.1", 1) for name in names}


# ---------------------------------------------------------------------- the decision, pure
async def test_keep_majority_counts_the_view_and_breaks_ties_by_lowest_id() -> None:
    policy = keep_majority()
    view = ids("a", "b", "c", "d", "e")
    assert policy.wins(view, ids("a", "b", "c"))
    assert not policy.wins(view, ids("d", "e"))
    four = ids("a", "b", "c", "d")
    assert policy.wins(four, ids("a", "b")) and not policy.wins(four, ids("c", "d"))
    assert policy.wins(ids("a"), ids("a"))


async def test_static_quorum_and_referee() -> None:
    assert static_quorum(3).wins(ids("a", "b", "c", "d"), ids("b", "c", "d"))
    assert not static_quorum(3).wins(ids("a", "b", "c", "d"), ids("a", "b"))
    referee = keep_referee("r@127.0.0.1:1")
    assert referee.wins(ids("a", "r", "b"), ids("a", "r")) and not referee.wins(ids("a", "r", "b"), ids("b"))
    by_name = keep_referee("r")
    assert by_name.wins(ids("a", "r"), ids("r")) and not by_name.wins(ids("a", "r"), ids("a"))


async def test_policy_names_and_typed_errors() -> None:
    assert PartitionPolicy.of("keep_majority") == keep_majority()
    assert PartitionPolicy.of("static_quorum:3") == static_quorum(3)
    assert PartitionPolicy.of("keep_referee:r@127.0.0.1:1") == keep_referee("r@127.0.0.1:1")
    assert PartitionPolicy.of(None).kind == "none"
    assert PartitionPolicy.of("keep_referee:arbiter") == keep_referee("arbiter")
    for bad in ("majority", "static_quorum:x", "keep_referee:", 3):
        with pytest.raises(InvalidArgumentError):
            PartitionPolicy.of(bad)
    with pytest.raises(InvalidArgumentError):
        static_quorum(0)
    with pytest.raises(InvalidArgumentError):
        keep_referee("not a node")


async def test_cluster_start_refuses_a_window_shorter_than_four_heartbeats() -> None:
    with pytest.raises(InvalidArgumentError, match="stable_after_ms"):
        await Cluster.start("w", port=0, heartbeat_interval_ms=200, partition_policy="keep_majority",
                            stable_after_ms=500)
    with pytest.raises(InvalidArgumentError, match="partition_policy"):
        await Cluster.start("w", port=0, partition_policy="keep_most")


# ---------------------------------------------------------------------- helpers
def record_stops(nodes: Iterable[Node]) -> None:
    """Every process exit on these nodes goes to the recorders' log (their stop instant)."""
    for node in nodes:
        node.exit_hooks.append(lambda proc, _reason: rec.LOG.append(("stop", "", proc.ref, time.monotonic())))


def intervals() -> dict[str, list[tuple[float, float]]]:
    """Child id -> the [start, stop) intervals of its instances (stop inf while it runs)."""
    started = {ref: (child, t) for event, child, ref, t in rec.LOG if event == "start"}
    stopped = {ref: t for event, _, ref, t in rec.LOG if event == "stop"}
    out: dict[str, list[tuple[float, float]]] = {}
    for ref, (child, t) in started.items():
        out.setdefault(child, []).append((t, stopped.get(ref, float("inf"))))
    return out


def assert_never_twice() -> None:
    for child, spans in intervals().items():
        spans.sort()
        for (_, stop), (start, _) in pairwise(spans):
            assert stop <= start, f"two instances of {child} ran at once: {spans}"


def running_once(children: Iterable[str]) -> bool:
    now = intervals()
    return all(sum(stop == float("inf") for _, stop in now.get(c, [])) == 1 for c in children)


def running_on(children: Iterable[str], nodes: Iterable[Node]) -> bool:
    """Each child runs once, on one of `nodes`. (`running_once` alone holds at once after a
    fence too: the killed children's exits are recorded when their tasks next run.)"""
    ids = {n.id for n in nodes}
    stopped = {ref for event, _, ref, _ in rec.LOG if event == "stop"}
    running: dict[str, list[Any]] = {}
    for event, child, ref, _ in rec.LOG:
        if event == "start" and ref not in stopped:
            running.setdefault(child, []).append(ref)
    return all(len(running.get(c, [])) == 1 and running[c][0].node in ids for c in children)


async def start_supervisor(host: Node, n: int) -> Any:
    children = [{"id": f"c{i}", "behavior_name": "partition_recorder", "arg": f"c{i}"} for i in range(n)]
    with host.as_default():
        return await DistributedSupervisor.start(children=children, node_selector="round_robin", max_restarts=50,
                                                 within_ms=5000)


def fenced(node: Node) -> bool:
    guard = node.distribution.partition_guard
    return guard is not None and guard.fenced


async def policy_cluster(n: int) -> list[Node]:
    rec.LOG.clear()
    nodes = await start_cluster(n, partition_policy="keep_majority", stable_after_ms=STABLE_MS)
    record_stops(nodes)
    return nodes


# ---------------------------------------------------------------------- partitions
@pytest.mark.timeout(30)
async def test_three_two_split_minority_fences_majority_takes_over_after_the_window() -> None:
    nodes = await policy_cluster(5)
    majority, minority = nodes[:3], nodes[3:]
    sup = await start_supervisor(nodes[0], 10)
    with minority[1].as_default():  # a globally named process on the minority side
        owner = await GenServer.start(rec.Recorder, "owner-old")
        await GlobalRegistry.register("svc", owner)
    await wait_until(lambda: all(n.distribution.global_registry.whereis("svc") == owner for n in nodes), 3.0,
                     "the name everywhere")

    cut_at = time.monotonic()
    partition(majority, minority)
    await wait_until(lambda: all(fenced(n) for n in minority), 5.0, "the minority fences")
    fenced_at = time.monotonic()
    assert not any(fenced(n) for n in majority)
    with minority[0].as_default(), pytest.raises(NodeFencedError):
        await GlobalRegistry.register("other", owner)

    # the majority claims the name as soon as the window lets it
    with majority[0].as_default():
        claimer = await GenServer.start(rec.Recorder, "owner-new")

        async def claim() -> float | None:  # the old owner's name is held for the window
            try:
                await GlobalRegistry.register("svc", claimer)
            except GlobalNameConflictError:
                return None
            return time.monotonic()

        claimed_at = await eventually(claim, 10, "the majority's claim of 'svc'")
    owner_stops = [t for event, _, ref, t in rec.LOG if event == "stop" and ref == owner]
    assert owner_stops and owner_stops[0] < claimed_at, "two owners of 'svc' answered at once"
    assert claimed_at - cut_at >= STABLE_MS / 1000.0
    await wait_until(lambda: running_once(f"c{i}" for i in range(10)), 10.0, "every child runs again")
    assert_never_twice()
    with nodes[0].as_default():
        children = await DistributedSupervisor.which_children(sup)
    assert {c.node for c in children} <= {n.id for n in majority}
    print(f"minority fenced {fenced_at - cut_at:.3f} s after the cut; name claimed after {claimed_at - cut_at:.3f} s")

    healed_at = time.monotonic()
    heal(*nodes)
    await wait_until(lambda: all(len(n.get_nodes()) == 4 and not fenced(n) for n in nodes)
                     and all(n.distribution.global_registry.whereis("svc") == claimer for n in nodes),
                     5.0, "the heal converges")
    converged = time.monotonic() - healed_at
    print(f"converged {converged:.3f} s after the heal")
    assert converged <= 1.0
    assert running_once(f"c{i}" for i in range(10))
    assert_never_twice()


@pytest.mark.timeout(30)
async def test_a_minority_of_low_ids_fences_and_the_majority_never_does() -> None:
    nodes = await policy_cluster(5)
    minority, majority = nodes[:2], nodes[2:]  # the lowest ids lose: no overlap may be seen, even at the heal
    fences: list[str] = []
    for node in majority:
        node.events.subscribe(lambda e, n=node: fences.append(n.id.name) if e.kind == "node_fenced" else None)
    await start_supervisor(nodes[2], 10)
    partition(minority, majority)
    await wait_until(lambda: all(fenced(n) for n in minority), 5.0, "the minority fences")
    await wait_until(lambda: running_on((f"c{i}" for i in range(10)), majority), 10.0,
                     "every child runs on the majority")
    heal(*nodes)
    await wait_until(lambda: all(len(n.get_nodes()) == 4 and not fenced(n) for n in nodes), 5.0, "healed")
    assert fences == []
    assert running_once(f"c{i}" for i in range(10))
    assert_never_twice()


@pytest.mark.timeout(30)
async def test_two_two_split_the_side_with_the_lowest_id_wins() -> None:
    nodes = await policy_cluster(4)
    await start_supervisor(nodes[0], 8)
    partition(nodes[:2], nodes[2:])
    await wait_until(lambda: fenced(nodes[2]) and fenced(nodes[3]), 5.0, "the side without n0 fences")
    assert not fenced(nodes[0]) and not fenced(nodes[1])
    await wait_until(lambda: running_on((f"c{i}" for i in range(8)), nodes[:2]), 10.0, "every child runs on n0/n1")
    assert_never_twice()
    healed_at = time.monotonic()
    heal(*nodes)
    await wait_until(lambda: all(len(n.get_nodes()) == 3 and not fenced(n) for n in nodes), 5.0, "healed")
    assert time.monotonic() - healed_at <= 1.0
    assert running_once(f"c{i}" for i in range(8))
    assert_never_twice()


@pytest.mark.timeout(30)
async def test_two_two_split_with_a_referee_the_referees_side_wins() -> None:
    rec.LOG.clear()
    nodes = await start_cluster(4, partition_policy=keep_referee("n3"), stable_after_ms=STABLE_MS)
    record_stops(nodes)
    await start_supervisor(nodes[3], 8)
    partition(nodes[:2], nodes[2:])
    await wait_until(lambda: fenced(nodes[0]) and fenced(nodes[1]), 5.0, "the side without the referee fences")
    assert not fenced(nodes[2]) and not fenced(nodes[3])
    await wait_until(lambda: running_on((f"c{i}" for i in range(8)), nodes[2:]), 10.0, "every child runs on n2/n3")
    assert_never_twice()
    healed_at = time.monotonic()
    heal(*nodes)
    await wait_until(lambda: all(len(n.get_nodes()) == 3 and not fenced(n) for n in nodes), 5.0, "healed")
    assert time.monotonic() - healed_at <= 1.0
    assert running_once(f"c{i}" for i in range(8))
    assert_never_twice()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("named", [False, True], ids=["unnamed", "named"])
async def test_a_supervisor_on_the_fenced_side_is_taken_over_and_every_child_runs_once_after_the_heal(
        named: bool) -> None:
    """2|2 with a referee and the supervisor on the side that loses.

    This test used to expect the old behaviour: the children on the winning side stopped with the
    fenced supervisor (they were linked to it), and the supervisor, by its original ref, restarted
    them all after the heal. Issue 14 point 4 replaced that: children are monitored, so those on
    the winning side keep running; the winning side takes the supervisor over after the window
    and restarts there the children the fence killed; after the heal the fenced supervisor (an
    unnamed one suspended, a named one killed by the fence) leaves them to it. What must hold, as
    strictly as before: never two instances of a child at once, no restart on the winning side
    before the window, and after the heal one supervisor, the same one by name from every node,
    with every child exactly once."""
    rec.LOG.clear()
    nodes = await start_cluster(4, partition_policy=keep_referee("n3"), stable_after_ms=STABLE_MS)
    record_stops(nodes)
    losers, winners = nodes[:2], nodes[2:]
    children = [{"id": f"c{i}", "behavior_name": "partition_recorder", "arg": f"c{i}"} for i in range(8)]
    with nodes[0].as_default():  # on the side that will lose
        sup = await DistributedSupervisor.start(children=children, node_selector="round_robin", max_restarts=50,
                                                within_ms=5000, name="pool" if named else None)
        before = {c.id: c.ref for c in await DistributedSupervisor.which_children(sup)}
    gname = next(iter(nodes[0].distribution.supervisor_replicas.local))
    await wait_until(lambda: all(gname in n.distribution.supervisor_replicas.replicas for n in winners), 3.0,
                     "the replicas on the winning side")
    kept = {c: ref for c, ref in before.items() if ref.node in {n.id for n in winners}}
    assert kept and len(kept) < len(before), before  # children on both sides

    cut_at = time.monotonic()
    partition(losers, winners)
    await wait_until(lambda: all(fenced(n) for n in losers), 5.0, "n0 and n1 fence")
    assert not any(fenced(n) for n in winners)
    await wait_until(lambda: running_once(before) and len(live_supervisors(winners)) == 1, 10.0,
                     "the winning side took the supervisor over and runs every child")
    window = STABLE_MS / 1000.0
    restarted = [t for event, _, _, t in rec.LOG if event == "start" and t > cut_at]
    assert restarted and min(restarted) - cut_at >= window, "a child restarted before the window"
    assert not [ref for event, _, ref, t in rec.LOG if event == "stop" and ref in set(kept.values())], \
        "a child of the winning side was stopped"
    assert_never_twice()

    healed_at = time.monotonic()
    heal(*nodes)

    def one_supervisor_known_by_its_name_everywhere() -> bool:
        live = live_supervisors(nodes)
        if len(live) != 1:
            return False
        (only,) = live
        if named:
            return all(n.distribution.global_registry.whereis("pool") == only for n in nodes)
        stores = [n.distribution.supervisor_replicas for n in nodes]
        return all((s.local.get(gname) is not None and s.node.is_local(only))
                   or (gname in s.replicas and s.replicas[gname]["sup"] == only) for s in stores)

    await wait_until(lambda: all(len(n.get_nodes()) == 3 and not fenced(n) for n in nodes)
                     and one_supervisor_known_by_its_name_everywhere() and running_once(before), 5.0,
                     "one supervisor, known by its name on every node, and every child once after the heal")
    converged = time.monotonic() - healed_at
    print(f"one supervisor {converged:.3f} s after the heal")
    assert converged <= 1.0
    (survivor,) = live_supervisors(nodes)
    assert survivor.node in {n.id for n in winners}
    for node in nodes:
        with node.as_default():
            after = await DistributedSupervisor.which_children("pool" if named else survivor)
        assert {c.id for c in after} == set(before) and all(c.status == "running" for c in after), node.id
        assert all(c.ref == kept[c.id] for c in after if c.id in kept), node.id
    assert running_once(before)
    assert_never_twice()


@pytest.mark.timeout(30)
async def test_overlapping_partition_the_higher_id_end_of_the_broken_link_fences() -> None:
    a, b, c = await policy_cluster(3)
    await start_supervisor(b, 6)  # on the node that still reaches both ends
    partition([a], [c])
    await wait_until(lambda: fenced(c), 5.0, "c fences")
    assert not fenced(a) and not fenced(b)
    with c.as_default():
        on_c = await GenServer.start(rec.Recorder, "on-c")
    with b.as_default(), pytest.raises(NodeFencedError):  # b may not name a process of the fenced c
        await GlobalRegistry.register("c-name", on_c)
    await wait_until(lambda: running_once(f"c{i}" for i in range(6)), 10.0, "c's children moved")
    assert_never_twice()
    assert all(n.distribution.partition_guard is not None for n in (a, b, c))
    healed_at = time.monotonic()
    heal(a, b, c)
    await wait_until(lambda: all(len(n.get_nodes()) == 2 and not fenced(n) for n in (a, b, c)), 5.0, "healed")
    assert time.monotonic() - healed_at <= 1.0
    assert running_once(f"c{i}" for i in range(6))
    assert_never_twice()


@pytest.mark.timeout(30)
async def test_no_policy_both_sides_run_on() -> None:
    rec.LOG.clear()
    nodes = await start_cluster(3)
    assert all(n.distribution.partition_guard is None for n in nodes)
    partition(nodes[:2], nodes[2:])
    await wait_until(lambda: all(len(n.get_nodes()) == (1 if n in nodes[:2] else 0) for n in nodes), 5.0,
                     "both sides see the split")
    with nodes[2].as_default():
        lonely = await GenServer.start(rec.Recorder, "x")
        await GlobalRegistry.register("still-mine", lonely)  # no fencing: the minority claims names
    heal(*nodes)


@pytest.mark.timeout(30)
async def test_a_node_started_with_seeds_is_fenced_until_a_member_admits_it() -> None:
    """keep_majority (issue 15): a node started with seeds it cannot reach has joined no cluster,
    so it does not win as a side of one (NodeFencedError) as a node restarted behind a partition
    did; a node started without seeds is a cluster of one and wins alone; a node joining it is
    fenced only until the member admits it."""
    fast = {"port": 0, "heartbeat_interval_ms": 200, "heartbeat_miss_threshold": 3,
            "partition_policy": "keep_majority", "stable_after_ms": STABLE_MS}
    with socket.socket() as sock:  # an address nobody listens on
        sock.bind(("127.0.0.1", 0))
        nobody = f"gone@127.0.0.1:{sock.getsockname()[1]}"
    alone = await Cluster.start("alone", **fast)
    late = await Cluster.start("late", seeds=[nobody], **fast)
    assert not fenced(alone) and fenced(late)
    with alone.as_default():
        await GlobalRegistry.register("mine", await GenServer.start(rec.Recorder, "alone"))
    with late.as_default(), pytest.raises(NodeFencedError, match="not joined"):
        await GlobalRegistry.register("late", await GenServer.start(rec.Recorder, "late"))
    joiner = await Cluster.start("joiner", seeds=[str(alone.id)], **fast)
    await wait_until(lambda: not fenced(joiner), 5.0, "the joiner admitted")
    guard = joiner.distribution.partition_guard
    assert guard is not None and guard.view == {alone.id, joiner.id} and not fenced(alone)
    with joiner.as_default():
        await GlobalRegistry.register("joined", await GenServer.start(rec.Recorder, "joiner"))
    assert fenced(late)


def live_supervisors(nodes: Iterable[Node]) -> list[Any]:
    return [p.ref for n in nodes for p in n.processes() if isinstance(p.server, DistributedSupervisorServer)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("named", [True, False], ids=["named", "unnamed"])
async def test_a_supervisor_on_the_minority_is_taken_over_by_the_majority_only_after_the_window(named: bool) -> None:
    """3|2 with the supervisor on the minority and children on both sides: the minority fences
    (a named supervisor is killed with its global name), the majority takes the supervisor over
    only after the window, keeps its own children and restarts the minority's; after the heal
    one supervisor remains and every child runs once; never two instances of a child at once."""
    nodes = await policy_cluster(5)
    majority, minority = nodes[:3], nodes[3:]
    host = minority[0]
    exits: list[Any] = []
    host.exit_hooks.append(lambda proc, reason: exits.append(reason)
                           if isinstance(proc.server, DistributedSupervisorServer) else None)
    took_over: list[float] = []
    for node in majority:
        node.events.subscribe(lambda e: took_over.append(time.monotonic())
                              if e.kind == "supervisor_took_over" else None)
    children = [{"id": f"c{i}", "behavior_name": "partition_recorder", "arg": f"c{i}"} for i in range(10)]
    with host.as_default():
        sup = await DistributedSupervisor.start(children=children, node_selector="round_robin", max_restarts=50,
                                                name="pool" if named else None)
        before = {c.id: c.ref for c in await DistributedSupervisor.which_children(sup)}
    gname = next(iter(host.distribution.supervisor_replicas.local))
    await wait_until(lambda: all(gname in n.distribution.supervisor_replicas.replicas for n in majority), 3.0,
                     "the replicas on the majority")
    kept = {c: ref for c, ref in before.items() if ref.node in {n.id for n in majority}}
    assert kept and len(kept) < len(before), before  # children on both sides

    cut_at = time.monotonic()
    partition(majority, minority)
    await wait_until(lambda: all(fenced(n) for n in minority), 5.0, "the minority fences")
    if named:
        await wait_until(lambda: "partition_fenced" in exits, 3.0, "the named supervisor killed by the fence")
    await wait_until(lambda: took_over, 10.0, "the majority takes the supervisor over")
    window = STABLE_MS / 1000.0
    assert took_over[0] - cut_at >= window, f"taken over {took_over[0] - cut_at:.3f} s after the cut"
    await wait_until(lambda: running_once(before), 10.0, "every child runs on the majority")
    restarted = [t for event, _, _, t in rec.LOG if event == "start" and t > cut_at]
    assert restarted and min(restarted) - cut_at >= window, "a child restarted before the window"
    assert not [ref for event, _, ref, _ in rec.LOG if event == "stop" and ref in set(kept.values())], \
        "a child of the majority side was restarted"
    assert_never_twice()

    def named_everywhere() -> bool:
        return not named or all(n.distribution.global_registry.whereis("pool") == live_supervisors(nodes)[0]
                                for n in nodes)

    healed_at = time.monotonic()
    heal(*nodes)
    await wait_until(lambda: all(len(n.get_nodes()) == 4 and not fenced(n) for n in nodes)
                     and len(live_supervisors(nodes)) == 1 and running_once(before) and named_everywhere(), 5.0,
                     "one supervisor (its name the same on every node) and every child once after the heal")
    converged = time.monotonic() - healed_at
    (survivor,) = live_supervisors(nodes)
    assert survivor.node in {n.id for n in majority}
    with nodes[0].as_default():
        after = await DistributedSupervisor.which_children(survivor)
    assert {c.id for c in after} == set(before) and all(c.status == "running" for c in after)
    assert all(after_ref == kept[c] for c, after_ref in ((c.id, c.ref) for c in after) if c in kept)
    assert running_once(before)
    assert_never_twice()
    print(f"taken over {took_over[0] - cut_at:.3f} s after the cut; one supervisor {converged:.3f} s after the heal")


@pytest.mark.timeout(20)
async def test_a_takeover_claim_refused_by_a_fence_stops_its_standby_and_keeps_the_replica() -> None:
    """A node that fences between the window's end and the claim of the supervisor's name gets
    `NodeFencedError` from the registry: the standby it started stops (supervising nothing) and
    the replica stays for a takeover after the unfence."""
    nodes = await policy_cluster(3)
    with nodes[2].as_default():
        await DistributedSupervisor.start(children=[{"id": "c0", "behavior_name": "partition_recorder",
                                                      "arg": "c0"}], name="pool")
    store = nodes[0].distribution.supervisor_replicas
    await wait_until(lambda: "pool" in store.replicas, 3.0, "the replica on n0")
    replica = store.replicas["pool"]
    guard = nodes[0].distribution.partition_guard
    guard.fence("test: fenced during the claim")
    with pytest.raises(NodeFencedError):
        await store._claim("pool", replica, False)
    assert live_supervisors([nodes[0]]) == []
    assert store.replicas["pool"] is replica and "pool" not in store.local
    guard.unfence()


@pytest.mark.timeout(30)
async def test_a_heal_within_the_window_resumes_the_suspended_supervisor_with_no_takeover() -> None:
    """The supervisor's node fences, the partition heals before the window ends: nobody took
    it over, so the suspended supervisor resumes: it watches again its children on the other
    side (not restarted; a later crash of one is restarted) and restarts the fenced ones."""
    rec.LOG.clear()
    nodes = await start_cluster(5, partition_policy="keep_majority", stable_after_ms=4000)
    record_stops(nodes)
    majority, minority = nodes[:3], nodes[3:]
    took_over: list[Any] = []
    for node in nodes:
        node.events.subscribe(lambda e: took_over.append(e) if e.kind == "supervisor_took_over" else None)
    sup = await start_supervisor(minority[0], 10)
    with minority[0].as_default():
        before = {c.id: c.ref for c in await DistributedSupervisor.which_children(sup)}
    kept = {c: ref for c, ref in before.items() if ref.node in {n.id for n in majority}}
    partition(majority, minority)
    await wait_until(lambda: all(fenced(n) for n in minority), 5.0, "the minority fences")
    await wait_until(lambda: not any(stop == float("inf") for c, spans in intervals().items() if c not in kept
                                     for _, stop in spans), 3.0, "the minority's children fenced")
    healed_at = time.monotonic()
    heal(*nodes)
    await wait_until(lambda: not any(fenced(n) for n in nodes) and running_once(before), 5.0,
                     "every child once after the heal")
    print(f"every child back {time.monotonic() - healed_at:.3f} s after the heal")
    assert took_over == []
    assert live_supervisors(nodes) == [sup]
    assert not [ref for event, _, ref, _ in rec.LOG if event == "stop" and ref in set(kept.values())]
    with minority[0].as_default():
        children = await DistributedSupervisor.wait_stable(sup, timeout=5)
    assert {c.id: c.ref for c in children if c.id in kept} == kept
    victim, ref = next(iter(kept.items()))
    owner = next(n for n in nodes if n.id == ref.node)
    owner.local_process(ref).kill("boom")
    await wait_until(lambda: running_once(before) and len(intervals()[victim]) == 2, 5.0, "the crashed child restarted")
    assert_never_twice()


@pytest.mark.timeout(30)
async def test_a_suspended_supervisor_that_resumes_before_the_takeovers_replica_reaches_it_yields() -> None:
    """The gap the integration named: the winning side takes an unnamed supervisor over just
    before the heal, and the suspended one resumes (its settle time after the unfence over)
    before the takeover's replica reaches it. The order is forced: the fenced host holds every
    replica from the takeover's node until its supervisor's resume point has passed. The
    suspended supervisor must not restart its parked children (the takeover did) nor start a
    name conflict: it asks its peers whether the supervisor was taken over and yields."""
    rec.LOG.clear()
    nodes = await start_cluster(4, partition_policy=keep_referee("n3"), stable_after_ms=STABLE_MS)
    record_stops(nodes)
    host, taker = nodes[0], nodes[2]
    sup = await start_supervisor(host, 8)
    before = [f"c{i}" for i in range(8)]
    gname = next(iter(host.distribution.supervisor_replicas.local))
    await wait_until(lambda: all(gname in n.distribution.supervisor_replicas.replicas for n in nodes[2:]), 3.0,
                     "the replicas on the winning side")
    proc = host.local_process(sup)
    assert proc is not None
    fencing = proc.server._fencing

    handlers = host.distribution.router.rpc_handlers
    deliver = handlers["dsup.replica"]
    held: list[tuple[Any, Any]] = []

    def hold_the_takers_replicas(peer: Any, payload: Any) -> Any:
        if peer == taker.id and isinstance(payload, dict) and payload.get("name") == gname:
            held.append((peer, payload))
            return None
        return deliver(peer, payload)

    handlers["dsup.replica"] = hold_the_takers_replicas
    took_over: list[Any] = []
    taker.events.subscribe(lambda e: took_over.append(e) if e.kind == "supervisor_took_over" else None)
    partition(nodes[:2], nodes[2:])
    await wait_until(lambda: fenced(nodes[0]) and fenced(nodes[1]), 5.0, "n0 and n1 fence")
    await wait_until(lambda: bool(took_over) and running_once(before), 10.0, "the takeover runs every child")
    assert fencing.suspended
    heal(*nodes)
    # the suspended supervisor's resume point passes while the takeover's replica is held
    await wait_until(lambda: not fenced(host) and (not proc.alive or not fencing.suspended), 5.0,
                     "the suspended supervisor decides (resume or yield) without the takeover's replica")
    assert_never_twice()
    handlers["dsup.replica"] = deliver
    for peer, payload in held:
        deliver(peer, payload)
    await wait_until(lambda: all(len(n.get_nodes()) == 3 and not fenced(n) for n in nodes)
                     and len(live_supervisors(nodes)) == 1 and running_once(before), 5.0,
                     "one supervisor and every child once after the heal")
    (survivor,) = live_supervisors(nodes)
    assert survivor.node == taker.id and not proc.alive
    with host.as_default():
        after = await DistributedSupervisor.which_children(survivor)
    assert {c.id for c in after} == set(before) and all(c.status == "running" for c in after)
    assert running_once(before)
    assert_never_twice()


@pytest.mark.timeout(30)
async def test_wait_for_nodes_returns_once_the_joining_node_is_admitted() -> None:
    """Under a partition policy a joining node is fenced until the members admit it:
    `Cluster.wait_for_nodes(n)` waits for that too, so what follows it can use the node (the
    notebook's `start; wait_for_nodes; register` pattern); `n=0` does not wait for admission."""
    fast = {"port": 0, "heartbeat_interval_ms": 200, "heartbeat_miss_threshold": 3,
            "partition_policy": "keep_majority", "stable_after_ms": STABLE_MS}
    first = await Cluster.start("first", **fast)
    nodes = [first] + [await Cluster.start(f"j{i}", seeds=[str(first.id)], **fast) for i in range(4)]
    for node in nodes:  # (as notebook 06 does)
        assert len(await Cluster.wait_for_nodes(4, node=node, timeout=10)) == 4
    assert [node.id.name for node in nodes if fenced(node)] == []  # type: ignore[union-attr]
    for node in nodes:
        with node.as_default():
            await GlobalRegistry.register(f"at-{node.id.name}", await GenServer.start(rec.Recorder, "x"))  # type: ignore[union-attr]
    with socket.socket() as sock:  # an address nobody listens on
        sock.bind(("127.0.0.1", 0))
        nobody = f"gone@127.0.0.1:{sock.getsockname()[1]}"
    late = await Cluster.start("late", seeds=[nobody], **fast)
    assert await Cluster.wait_for_nodes(0, node=late, timeout=1) == [] and fenced(late)
