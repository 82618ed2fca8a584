"""Groups, multi-node calls and remote functions across `noex-lab node` OS processes: views
converge, a SIGKILLed node's members leave, and a SIGSTOPped node costs a caller no more than
its timeout."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from noex_lab import (
    CallTimeoutError,
    Cluster,
    GenServer,
    Group,
    Node,
    RemoteSpawn,
    Rpc,
    ServerNotRunningError,
)
from noex_lab.testing.waiting import eventually
from tests.distribution.behaviors_for_tests import Grouped
from tests.helpers.cluster import NodeProcess, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

BEHAVIORS = ["--behaviors", "tests.distribution.behaviors_for_tests"]
MARGIN_S = 0.05


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # these tests measure OS processes; one backend is enough


async def _cluster(procs: list[NodeProcess], heartbeat_ms: int) -> tuple[Node, list[NodeProcess]]:
    me = await Cluster.start("tester", port=0, heartbeat_interval_ms=heartbeat_ms, heartbeat_miss_threshold=3)
    beat = ["--heartbeat-interval-ms", str(heartbeat_ms), "--heartbeat-miss-threshold", "3"]
    started = [NodeProcess(f"p{i}", *beat, *BEHAVIORS, "--seed", str(me.id)) for i in (1, 2)]
    procs.extend(started)
    for proc in started:
        await proc.started()
    await wait_until(lambda: len(me.get_nodes()) == 2, 10.0, "both node processes joined")
    return me, started


async def test_group_views_converge_across_processes_and_a_killed_nodes_members_leave(
    procs: list[NodeProcess],
) -> None:
    me, (p1, p2) = await _cluster(procs, heartbeat_ms=200)
    assert p1.id is not None and p2.id is not None
    started = time.monotonic()
    on_p1 = [await RemoteSpawn.spawn("grouped", p1.id, arg="workers") for _ in range(2)]
    on_p2 = await RemoteSpawn.spawn("grouped", p2.id, arg="workers")
    mine = await GenServer.start(Grouped, "workers")
    everyone = sorted([*on_p1, on_p2, mine])

    async def all_views_are(expected: list[Any]) -> bool:
        replies, bad = await Rpc.multicall(None, "group_members", "workers", timeout=1.0)
        return not bad and all(view == expected for view in replies.values())

    await eventually(lambda: all_views_are(everyone), 5.0, "every node's view of the group")
    joined_in = time.monotonic() - started  # (four joins, three of them by remote spawns)
    assert sorted(Group.local_members("workers")) == [mine]

    killed_at = time.monotonic()
    p2.signal(signal.SIGKILL)
    survivors = sorted([*on_p1, mine])
    await wait_until(lambda: sorted(Group.members("workers")) == survivors, 2.0, "p2's member gone here")
    seen_here = time.monotonic() - killed_at
    await eventually(lambda: all_views_are(survivors), 2.0, "p2's member gone on p1")
    seen_everywhere = time.monotonic() - killed_at
    print(f"\njoins seen by every process {joined_in * 1000:.0f} ms after the first spawn; a SIGKILLed node's "
          f"member gone here {seen_here * 1000:.0f} ms, everywhere {seen_everywhere * 1000:.0f} ms after the kill")
    assert seen_everywhere <= 1.0


async def test_calls_to_many_node_processes_honour_their_timeout_when_one_is_frozen(
    procs: list[NodeProcess],
) -> None:
    me, (p1, p2) = await _cluster(procs, heartbeat_ms=1000)  # a frozen node stays connected for 3 s
    assert p1.id is not None and p2.id is not None
    for proc in (p1, p2):
        assert proc.id is not None
        await RemoteSpawn.spawn("echo", proc.id, name="svc", registration="local")
    replies, bad = await GenServer.multi_call("svc", "ping", timeout=2.0)
    assert replies == {p1.id: "ping", p2.id: "ping"}
    assert list(bad) == [me.id] and isinstance(bad[me.id], ServerNotRunningError)
    GenServer.abcast("svc", "inc")
    assert await GenServer.call(("svc", p1.id), "get") == 1
    assert await GenServer.call(("svc", str(p2.id)), "get") == 1
    replies, bad = await Rpc.multicall(None, "node_name")
    assert replies == {me.id: "tester", p1.id: "p1", p2.id: "p2"} and not bad

    p2.signal(signal.SIGSTOP)
    try:
        timings = {}
        started = time.monotonic()
        replies, bad = await GenServer.multi_call("svc", "ping", nodes=[p1.id, p2.id], timeout=0.3)
        timings["multi_call"] = time.monotonic() - started
        assert replies == {p1.id: "ping"} and isinstance(bad[p2.id], CallTimeoutError)
        for what, call in (
            ("Rpc.call", lambda: Rpc.call(p2.id, "node_name", timeout=0.3)),
            ("call (name, node)", lambda: GenServer.call(("svc", p2.id), "ping", timeout=0.3)),
        ):
            started = time.monotonic()
            with pytest.raises(CallTimeoutError):
                await call()
            timings[what] = time.monotonic() - started
        started = time.monotonic()
        replies, bad = await Rpc.multicall([p1.id, p2.id], "node_name", timeout=0.3)
        timings["Rpc.multicall"] = time.monotonic() - started
        assert replies == {p1.id: "p1"} and isinstance(bad[p2.id], CallTimeoutError)
        assert any(info.id == p2.id for info in me.get_nodes()), "p2 must still count as connected"
    finally:
        p2.signal(signal.SIGCONT)
    print("\ntimeout 300 ms against a frozen node: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items()))
    assert all(0.3 <= t <= 0.3 + MARGIN_S for t in timings.values()), timings
