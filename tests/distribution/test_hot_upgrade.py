"""Hot upgrade on an in-process cluster (both backends): `BehaviorRegistry.upgrade` reaches every
node of this OS process, and a DistributedSupervisor restarts and fails children over on the new
code; `Sys` reaches a process on another node of the cluster."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from noex_lab import (
    BehaviorRegistry,
    CallError,
    DistributedSupervisor,
    GenServer,
    RemoteSpawn,
    Sys,
)
from noex_lab.errors import ReplaceStateError
from tests.helpers.cluster import start_cluster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]


class ShardV1(GenServer):
    vsn = "1.0"

    def handle_call(self, msg: Any, state: Any) -> Any:
        if msg == "crash":
            raise RuntimeError("crash on request")
        return ("1.0", state), state


class ShardV2(GenServer):
    vsn = "2.0"

    def handle_call(self, msg: Any, state: Any) -> Any:
        if msg == "crash":
            raise RuntimeError("crash on request")
        return ("2.0", state), state

    def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        return {"arg": state, "from": old_vsn}


async def test_an_upgrade_reaches_every_node_and_supervisor_restarts_run_the_new_code() -> None:
    nodes = await start_cluster(3)
    BehaviorRegistry.register("shard", ShardV1)
    sup = await DistributedSupervisor.start(
        children=[{"id": f"s{i}", "behavior_name": "shard", "arg": i} for i in range(3)], node_selector="round_robin")
    children = await DistributedSupervisor.which_children(sup)
    assert {c.node for c in children} == {n.id for n in nodes}

    results = await BehaviorRegistry.upgrade("shard", ShardV2)

    assert sorted((r.node, r.outcome, r.from_vsn, r.to_vsn) for r in results) == sorted(
        (n.id, "upgraded", "1.0", "2.0") for n in nodes)
    for child in children:
        assert child.ref is not None
        assert await GenServer.call(child.ref, "get") == ("2.0", {"arg": int(child.id[1]), "from": "1.0"})
    victim = children[0]
    assert victim.ref is not None
    with pytest.raises(CallError, match="crash on request"):
        await GenServer.call(victim.ref, "crash")
    supervisor = nodes[0].local_process(sup)
    assert supervisor is not None
    await wait_until(lambda: supervisor.state.children[0].restarts == 1, 10.0, "the restart")
    [restarted, *_] = await DistributedSupervisor.which_children(sup)
    assert restarted.ref is not None and restarted.ref != victim.ref
    assert await GenServer.call(restarted.ref, "get") == ("2.0", 0)  # restarted from its arg, on the new code
    stats = await Sys.statistics(restarted.ref)  # the supervisor's node is asked for the restarts
    assert stats.restarts == 1


async def test_sys_tools_reach_a_process_on_another_node_of_the_cluster() -> None:
    a, b = await start_cluster(2)
    BehaviorRegistry.register("shard", ShardV1)
    with a.as_default():
        ref = await RemoteSpawn.spawn("shard", b.id, arg={"n": 1}, name="s", registration="local")
        assert (await Sys.suspend("s", on=b.id)).suspended
        assert (await Sys.get_status(ref)).status == "suspended"
        new = await Sys.replace_state(ref, lambda s: {**s, "n": 2})
        assert new.state == {"n": 2}
        assert (await Sys.resume(ref)).changed
        assert await GenServer.call(ref, "get") == ("1.0", {"n": 2})


async def test_a_remote_replace_state_that_outlives_its_timeout_changes_nothing() -> None:
    a, b = await start_cluster(2)
    BehaviorRegistry.register("shard", ShardV1)
    with a.as_default():
        ref = await RemoteSpawn.spawn("shard", b.id, arg={"n": 1})

        never = anyio.Event()

        async def slow(state: Any) -> Any:
            with anyio.move_on_after(0.5):  # a function busy longer than the hold lasts
                await never.wait()
            return {"n": 99}

        with pytest.raises(ReplaceStateError, match="took longer than the timeout"):
            await Sys.replace_state(ref, slow, timeout=0.2)
        assert await GenServer.call(ref, "get") == ("1.0", {"n": 1})  # released, unchanged
        unsendable = await RemoteSpawn.spawn("shard", b.id, arg=None)
        await Sys.replace_state(unsendable, lambda s: None)  # (None is a wire value)
        with pytest.raises(ReplaceStateError, match="cannot be sent"):
            await Sys.replace_state(unsendable, lambda s: object())
        assert await GenServer.call(unsendable, "get") == ("1.0", None)
