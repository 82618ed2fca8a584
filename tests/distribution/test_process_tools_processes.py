"""Sys tools and StateMachines across nodes: the target runs in a `noex-lab node` OS process,
the tools are called from this test's node (remote operation `sys.request`)."""

from __future__ import annotations

from typing import Any

import pytest

from noex_lab import (
    CallError,
    Cluster,
    DistributedSupervisor,
    GenServer,
    RemoteSpawn,
    Sys,
)
from noex_lab.distribution.sys_tools import versions
from noex_lab.errors import ReplaceStateError
from noex_lab.introspection import (
    ProcessStatistics,
    ProcessStatus,
    SuspendResult,
)
from noex_lab.statem import MachineState
from tests.helpers.cluster import NodeProcess, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup"), pytest.mark.timeout(60)]

FAST = ["--heartbeat-interval-ms", "200", "--heartbeat-miss-threshold", "3"]
BEHAVIORS = ["--behaviors", "tests.distribution.behaviors_process_tools"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # one OS process per test is enough on one backend


async def _remote(procs: list[NodeProcess]) -> tuple[Any, Any]:
    me = await Cluster.start("tester", port=0, heartbeat_interval_ms=200, heartbeat_miss_threshold=3)
    other = NodeProcess("tools", *FAST, *BEHAVIORS, "--seed", str(me.id))
    procs.append(other)
    other_id = await other.started()
    await wait_until(lambda: any(i.id == other_id for i in me.get_nodes()), 10.0, "the node process joined")
    return me, other_id


async def test_suspend_replace_state_statistics_and_status_of_a_remote_process(procs: list[NodeProcess]) -> None:
    me, where = await _remote(procs)
    ref = await RemoteSpawn.spawn("chatty", where, name="chatty", registration="local")
    local_peer = await GenServer.start(_Inbox)

    suspended = await Sys.suspend("chatty", on=where)
    assert suspended == SuspendResult(ref, True, True, 0)
    for _ in range(3):
        GenServer.cast(ref, "inc")
    status = await Sys.get_status(ref)  # (the casts went first on the same connection)
    assert isinstance(status, ProcessStatus) and status.node == where
    assert status.suspended and status.status == "suspended" and status.queue_len == 3
    # the function runs here, on the state sent over; the process waits meanwhile
    replaced = await Sys.replace_state(ref, lambda s: {**s, "count": 100})
    assert replaced.state == {"count": 100, "seen": []} and replaced.status == "suspended"
    with pytest.raises(ReplaceStateError, match="KeyError"):
        await Sys.replace_state(ref, lambda s: s["missing"])
    assert (await Sys.resume(ref)).changed
    assert (await GenServer.call(ref, "get"))["count"] == 103  # the queued casts, after the new state

    assert not (await Sys.statistics(ref)).enabled
    on = await Sys.statistics(ref, enable=True)
    assert on.enabled and on.messages_out == 0
    assert await GenServer.call(ref, ("tell", local_peer)) == "told"
    assert await GenServer.call(ref, ("nap", 0.05)) == "rested"
    stats = await Sys.statistics(ref)
    assert isinstance(stats, ProcessStatistics)
    assert stats.messages_out == 1 and stats.handled_since_enabled == 2
    assert stats.handler_time_s is not None and stats.handler_time_s >= 0.05
    assert (await GenServer.call(local_peer, "get")) == [("hello", ref)]
    assert not (await Sys.statistics(ref, enable=False)).enabled


async def test_restarts_of_a_child_whose_supervisor_runs_on_another_node(procs: list[NodeProcess]) -> None:
    me, where = await _remote(procs)
    sup = await DistributedSupervisor.start(
        children=[{"id": "c", "behavior_name": "chatty", "node_selector": {"node": str(where)}}])
    [child] = await DistributedSupervisor.which_children(sup)
    assert child.ref is not None and child.ref.node == where
    assert (await Sys.statistics(child.ref)).restarts == 0  # asked on the supervisor's node (this one)
    with pytest.raises(CallError):
        await GenServer.call(child.ref, "crash")
    supervisor = me.local_process(sup)
    assert supervisor is not None
    await wait_until(lambda: supervisor.state.children[0].restarts == 1, 10.0, "the restart")
    [child] = await DistributedSupervisor.which_children(sup)  # (answered once the restart is done)
    restarted = child.ref
    assert restarted is not None and restarted.node == where
    assert (await Sys.statistics(restarted)).restarts == 1
    status = await Sys.get_status(restarted)
    # watched by its supervisor: monitored, not linked (it outlives the supervisor's node)
    assert status.monitored_by == 1 and sup not in status.links


async def test_a_state_machine_on_another_node_is_called_and_inspected(procs: list[NodeProcess]) -> None:
    me, where = await _remote(procs)
    gate = await RemoteSpawn.spawn("turnstile", where, name="gate", registration="global")
    assert await GenServer.call("gate", "state") == "locked"
    GenServer.cast(gate, "coin")
    assert await GenServer.call(gate, "push") == "passed"
    GenServer.cast(gate, "coin")  # unlocked for 0.2 s, then the state timeout locks it again
    state = (await Sys.get_state(gate)).state
    assert isinstance(state, MachineState)  # a wire type: the state itself came over
    assert state.data == {"coins": 2, "passed": 1}
    status = await Sys.get_status(gate)
    assert status.behavior == "Turnstile" and set(status.details) == {"postponed", "timeouts"}
    [row] = await versions("turnstile", where)
    assert row[:4] == [gate, None, "turnstile", "Turnstile"] and row[5] == "current"


class _Inbox(GenServer):
    def init(self, arg: Any) -> list[Any]:
        return []

    def handle_call(self, msg: Any, state: list[Any]) -> Any:
        return state, state

    def handle_cast(self, msg: Any, state: list[Any]) -> list[Any]:
        return [*state, msg]
