"""The partition policy with `noex-lab node` processes: a 3|2 split whose minority is two node
processes, and a node process paused past the heartbeat timeout (SIGSTOP, then SIGCONT), which
fences itself before its supervised children handle another message, and rejoins.

The children tick every 20 ms into one file with CLOCK_MONOTONIC (system-wide on Linux), so the
test compares instants of every process on one clock."""

from __future__ import annotations

import time
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import anyio
import pytest

from noex_lab import (
    Cluster,
    DistributedSupervisor,
    GenServer,
    GlobalNameConflictError,
    GlobalRegistry,
    RemoteSpawn,
)
from noex_lab.distribution.distributed_supervisor import DistributedSupervisorServer
from noex_lab.testing import FaultInjector
from noex_lab.testing.waiting import eventually
from tests.helpers.cluster import NodeProcess, start_cluster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

POLICY = ["--partition-policy", "keep_majority", "--stable-after-ms", "1200"]
FAST = ["--heartbeat-interval-ms", "200", "--heartbeat-miss-threshold", "3",
        "--behaviors", "tests.distribution.behaviors_partitions"]


async def admitted(*nodes: NodeProcess) -> None:
    """keep_majority: a node process started with a seed is fenced until the members admit it;
    it prints UNFENCED then (docs/concepts/partitions.md, joining)."""
    for p in nodes:
        await anyio.to_thread.run_sync(p.wait_line, "UNFENCED", 10.0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def read_lines(path: Path) -> list[tuple[str, int, str, str, float]]:
    """(child id, pid, node name, event, monotonic) of every complete line so far, in time order."""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 5:
            out.append((parts[0], int(parts[1]), parts[2], parts[3], float(parts[4])))
    return sorted(out, key=lambda x: x[4])


def read_ticks(path: Path) -> list[tuple[str, int, str, float]]:
    """(child id, pid, event, monotonic) of every complete line so far."""
    return [(c, pid, e, t) for c, pid, _, e, t in read_lines(path)]


def instances(path: Path) -> dict[str, list[tuple[str, float, float]]]:
    """Child id -> (node, first, last instant) of each of its instances, in start order."""
    out: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    latest: dict[tuple[str, str], int] = {}
    for child, _, node, event, t in read_lines(path):
        if event == "start" or (child, node) not in latest:
            latest[(child, node)] = len(out[child])
            out[child].append((node, t, t))
        else:
            i = latest[(child, node)]
            out[child][i] = (node, out[child][i][1], t)
    return out


def assert_never_twice(path: Path) -> None:
    """Each child's instances ran one after the other (so only its latest one may still run)."""
    for child, spans in instances(path).items():
        for (node_a, _, last), (node_b, first, _) in pairwise(spans):
            assert last <= first, f"{child} ran on {node_a} until {last:.3f} and on {node_b} from {first:.3f}"


async def children_nodes(sup: Any) -> dict[str, Any]:
    return {c.id: c.node for c in await DistributedSupervisor.which_children(sup) if c.status == "running"}


@pytest.mark.timeout(60)
async def test_three_two_split_the_node_process_minority_fences(procs: list[NodeProcess], tmp_path: Path,
                                                               noex_faults: FaultInjector) -> None:
    import tests.distribution.behaviors_partitions

    log = tmp_path / "ticks.log"
    log.touch()
    majority = await start_cluster(3, partition_policy="keep_majority", stable_after_ms=1200)
    minority = [NodeProcess(name, *FAST, *POLICY, "--seed", str(majority[0].id)) for name in ("p0", "p1")]
    procs.extend(minority)
    for p in minority:
        await p.started()
    await admitted(*minority)
    await wait_until(lambda: all(len(n.get_nodes()) == 4 for n in majority), 10.0, "the mesh of 5")
    with majority[0].as_default():
        children = [{"id": f"c{i}", "behavior_name": "partition_recorder",
                     "arg": {"id": f"c{i}", "file": str(log)}} for i in range(10)]
        sup = await DistributedSupervisor.start(children=children, node_selector="round_robin", max_restarts=50)
        owner = await RemoteSpawn.spawn("partition_recorder", minority[1].id, arg={"id": "svc", "file": str(log)},
                                        name="svc", registration="global")
    await wait_until(lambda: all(n.distribution.global_registry.whereis("svc") == owner for n in majority), 5.0,
                     "the name on the majority")
    await wait_until(lambda: {node for c, _, node, _, _ in read_lines(log)} >= {"p0", "p1"}, 5.0,
                     "children tick on the node processes")

    cut_at = time.monotonic()
    noex_faults.partition(majority, minority)  # the in-process side drops the traffic both ways
    for p in minority:
        await anyio.to_thread.run_sync(p.wait_line, "FENCED", 10.0)
    with majority[0].as_default():
        claimer = await GenServer.start(tests.distribution.behaviors_partitions.Recorder,
                                        {"id": "svc", "file": str(log)})

        async def claim() -> bool:  # the old owner's name is held for the window
            try:
                await GlobalRegistry.register("svc", claimer)
            except GlobalNameConflictError:
                return False
            return True

        await eventually(claim, 10, "the majority's claim of 'svc'")
        claimed_at = time.monotonic()
        placed = await DistributedSupervisor.wait_stable(sup, timeout=10)
    assert {c.node for c in placed} <= {n.id for n in majority}
    assert claimed_at - cut_at >= 1.2
    old_owner = [t for c, _, node, _, t in read_lines(log) if c == "svc" and node == "p1"]
    assert max(old_owner) < claimed_at, "two owners of 'svc' answered at once"

    healed_at = time.monotonic()
    noex_faults.heal()
    for p in minority:
        await anyio.to_thread.run_sync(p.wait_line, "UNFENCED", 10.0)
    await wait_until(lambda: all(len(n.get_nodes()) == 4 for n in majority), 5.0, "the mesh after the heal")
    converged = time.monotonic() - healed_at
    with majority[0].as_default():
        await DistributedSupervisor.wait_stable(sup, timeout=5)
    await wait_until(lambda: all(any(c == f"c{i}" and t > healed_at + converged + 0.1
                                     for c, _, _, _, t in read_lines(log)) for i in range(10)), 5.0,
                     "every child ticks after the heal")
    assert_never_twice(log)
    live = instances(log)
    now = read_lines(log)[-1][4]
    assert all(live[f"c{i}"][-1][2] > now - 0.2 for i in range(10)), live
    print(f"minority fenced; name claimed {claimed_at - cut_at:.3f} s after the cut; "
          f"converged {converged:.3f} s after the heal")
    assert converged <= 1.0


@pytest.mark.timeout(60)
async def test_two_two_split_the_referees_node_process_side_wins(
        procs: list[NodeProcess], tmp_path: Path, noex_faults: FaultInjector) -> None:
    import tests.distribution.behaviors_partitions  # noqa: F401  (the in-process nodes run children too)

    log = tmp_path / "ticks.log"
    log.touch()
    inside = await start_cluster(2, partition_policy="keep_referee:p3", stable_after_ms=1200)
    outside = [NodeProcess(name, *FAST, "--partition-policy", "keep_referee:p3", "--stable-after-ms", "1200",
                           "--seed", str(inside[0].id)) for name in ("p2", "p3")]
    procs.extend(outside)
    for p in outside:
        await p.started()
    for p in outside:
        await p.wait_peers(3)
    await wait_until(lambda: all(len(n.get_nodes()) == 3 for n in inside), 10.0, "the mesh of 4")
    with inside[0].as_default():  # the supervisor is on the side that will lose
        children = [{"id": f"c{i}", "behavior_name": "partition_recorder",
                     "arg": {"id": f"c{i}", "file": str(log)}} for i in range(8)]
        sup = await DistributedSupervisor.start(children=children, node_selector="round_robin", max_restarts=50)
    await wait_until(lambda: {node for _, _, node, _, _ in read_lines(log)} == {"n0", "n1", "p2", "p3"}, 5.0,
                     "children tick on every node")

    cut_at = time.monotonic()
    noex_faults.partition(inside, outside)
    await wait_until(lambda: all(n.distribution.partition_guard.fenced for n in inside), 5.0, "n0 and n1 fence")
    assert not any(p.matching("FENCED", since=cut_at) for p in outside)  # (p2 fenced at start until p3 came)
    healed_at = time.monotonic()
    noex_faults.heal()
    await wait_until(lambda: not any(n.distribution.partition_guard.fenced for n in inside)
                     and all(len(n.get_nodes()) == 3 for n in inside), 5.0, "the heal")
    converged = time.monotonic() - healed_at
    with inside[0].as_default():
        await DistributedSupervisor.wait_stable(sup, timeout=5)
    await wait_until(lambda: all(any(c == f"c{i}" and t > healed_at + converged + 0.1
                                     for c, _, _, _, t in read_lines(log)) for i in range(8)), 5.0,
                     "every child ticks after the heal")
    assert_never_twice(log)
    live = instances(log)
    now = read_lines(log)[-1][4]
    assert all(live[f"c{i}"][-1][2] > now - 0.2 for i in range(8)), live
    print(f"the losing side unfenced {converged:.3f} s after the heal")
    assert converged <= 1.0


@pytest.mark.timeout(60)
async def test_overlapping_partition_the_node_process_at_the_higher_end_fences(
        procs: list[NodeProcess], tmp_path: Path, noex_faults: FaultInjector) -> None:
    import tests.distribution.behaviors_partitions  # noqa: F401  (the in-process node runs children too)

    log = tmp_path / "ticks.log"
    log.touch()
    me = await Cluster.start("n0", port=0, heartbeat_interval_ms=200, heartbeat_miss_threshold=3,
                             partition_policy="keep_majority", stable_after_ms=1200)
    others = [NodeProcess(name, *FAST, *POLICY, "--seed", str(me.id)) for name in ("p1", "p2")]
    procs.extend(others)
    for p in others:
        await p.started()
    for p in others:
        await p.wait_peers(2)
    await admitted(*others)
    await wait_until(lambda: len(me.get_nodes()) == 2, 10.0, "the mesh of 3")
    children = [{"id": f"c{i}", "behavior_name": "partition_recorder", "arg": {"id": f"c{i}", "file": str(log)}}
                for i in range(6)]
    sup = await DistributedSupervisor.start(children=children, node_selector="round_robin", max_restarts=50)
    await wait_until(lambda: {node for _, _, node, _, _ in read_lines(log)} == {"n0", "p1", "p2"}, 5.0,
                     "children tick on every node")

    cut_at = time.monotonic()
    noex_faults.partition([me], [others[1]])  # n0 - p2 cut; p1 still reaches both
    await anyio.to_thread.run_sync(others[1].wait_line, "FENCED", 10.0)
    placed = await DistributedSupervisor.wait_stable(sup, timeout=10)
    assert {c.node for c in placed} <= {me.id, others[0].id}
    assert not others[0].matching("FENCED", since=cut_at)  # p1 reaches everyone
    healed_at = time.monotonic()
    noex_faults.heal()
    await anyio.to_thread.run_sync(others[1].wait_line, "UNFENCED", 10.0)
    converged = time.monotonic() - healed_at
    await wait_until(lambda: all(any(c == f"c{i}" and t > healed_at + converged + 0.1
                                     for c, _, _, _, t in read_lines(log)) for i in range(6)), 5.0,
                     "every child ticks after the heal")
    assert_never_twice(log)
    live = instances(log)
    now = read_lines(log)[-1][4]
    assert all(live[f"c{i}"][-1][2] > now - 0.2 for i in range(6)), live
    print(f"p2 unfenced {converged:.3f} s after the heal")
    assert converged <= 1.0


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
    await admitted(*new)
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

    async def moved() -> bool:
        return (await children_nodes(sup)).get(victim) not in (None, paused.id)

    await eventually(moved, 10, "the majority restarting it elsewhere once the window is over")
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


@pytest.mark.timeout(60)
async def test_three_two_split_with_the_supervisor_on_a_node_process_of_the_minority(
        procs: list[NodeProcess], tmp_path: Path, noex_faults: FaultInjector) -> None:
    """The supervisor "pool" runs on a node process of the minority, its children on both sides:
    the minority fences (its children and the named supervisor killed), the majority takes
    "pool" over only after the window, keeps its own children and restarts the others; after
    the heal one supervisor, every child ticks once; never two instances of a child at once."""
    import tests.distribution.behaviors_partitions  # noqa: F401  (the in-process nodes run children too)

    log = tmp_path / "ticks.log"
    log.touch()
    majority = await start_cluster(3, partition_policy="keep_majority", stable_after_ms=1200)
    minority = [NodeProcess(name, *FAST, *POLICY, "--seed", str(majority[0].id)) for name in ("p0", "p1")]
    procs.extend(minority)
    for p in minority:
        await p.started()
    for p in minority:
        await p.wait_peers(4)
    await admitted(*minority)
    await wait_until(lambda: all(len(n.get_nodes()) == 4 for n in majority), 10.0, "the mesh of 5")
    took_over: list[float] = []
    for node in majority:
        node.events.subscribe(lambda e: took_over.append(time.monotonic())
                              if e.kind == "supervisor_took_over" else None)
    with majority[0].as_default():
        await RemoteSpawn.spawn("partition_sup_starter", minority[0].id, arg={"file": str(log), "n": 10})
    names = {n.id.name for n in majority}

    def replicated() -> bool:
        replicas = [n.distribution.supervisor_replicas.replicas.get("pool") for n in majority]
        return all(r is not None and len(r["children"]) == 10 and all(ref for _, ref, _ in r["children"])
                   for r in replicas)

    await wait_until(replicated, 5.0, "the replicas of pool on the majority")
    sup = majority[0].distribution.global_registry.whereis("pool")
    assert sup is not None and sup.node == minority[0].id
    await wait_until(lambda: {node for _, _, node, _, _ in read_lines(log)} == names | {"p0", "p1"}, 5.0,
                     "children tick on every node")

    cut_at = time.monotonic()
    noex_faults.partition(majority, minority)
    for p in minority:
        await anyio.to_thread.run_sync(p.wait_line, "FENCED", 10.0)
    await wait_until(lambda: took_over, 10.0, "the majority takes pool over")
    with majority[0].as_default():
        placed = await DistributedSupervisor.wait_stable("pool", timeout=10)
    assert took_over[0] - cut_at >= 1.2, f"taken over {took_over[0] - cut_at:.3f} s after the cut"
    assert {c.node for c in placed} <= {n.id for n in majority}
    assert all(len(spans) == 1 for spans in instances(log).values() if spans[0][0] in names), \
        "a child of the majority side was restarted"
    assert_never_twice(log)

    healed_at = time.monotonic()
    noex_faults.heal()
    for p in minority:
        await anyio.to_thread.run_sync(p.wait_line, "UNFENCED", 10.0)
    await wait_until(lambda: all(len(n.get_nodes()) == 4 for n in majority), 5.0, "the mesh after the heal")
    converged = time.monotonic() - healed_at
    with majority[0].as_default():
        await DistributedSupervisor.wait_stable("pool", timeout=5)
    await wait_until(lambda: all(any(c == f"c{i}" and t > healed_at + converged + 0.1
                                     for c, _, _, _, t in read_lines(log)) for i in range(10)), 5.0,
                     "every child ticks after the heal")
    supervisors = [p.ref for n in majority for p in n.processes() if isinstance(p.server, DistributedSupervisorServer)]
    assert len(supervisors) == 1 and all(n.distribution.global_registry.whereis("pool") == supervisors[0]
                                         for n in majority)
    with majority[0].as_default():  # and none left on the node processes
        snapshots = await Cluster.snapshot(timeout=5.0)
    assert sum(p.behavior == "DistributedSupervisorServer" for snap in snapshots for p in snap.processes) == 1
    assert_never_twice(log)
    live = instances(log)
    now = read_lines(log)[-1][4]
    assert all(live[f"c{i}"][-1][2] > now - 0.2 for i in range(10)), live
    print(f"pool taken over {took_over[0] - cut_at:.3f} s after the cut; converged {converged:.3f} s after the heal")
    assert converged <= 1.0
