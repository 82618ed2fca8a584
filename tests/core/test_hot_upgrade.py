"""Hot code upgrade in one OS process: `BehaviorRegistry.upgrade` swaps the code of running
processes between two messages, keeping their state (or migrating it with `code_change`); a
failing `code_change` keeps the old code; new processes and supervisor restarts run the new code."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from noex_lab import (
    BehaviorRegistry,
    ChildSpec,
    GenServer,
    Registry,
    RemoteMonitor,
    Supervisor,
    Sys,
)
from noex_lab.core.node import Node
from noex_lab.introspection import UpgradeResult
from tests.helpers.waiting import wait_until

from ._helpers import Sink

pytestmark = pytest.mark.anyio


class CounterV1(GenServer):
    vsn = 1

    def handle_call(self, msg: Any, state: int) -> Any:
        return ("v1", state), state

    def handle_cast(self, msg: Any, state: int) -> int:
        return state + 1


class CounterV2(GenServer):
    vsn = 2

    def handle_call(self, msg: Any, state: int) -> Any:
        return ("v2", state), state

    def handle_cast(self, msg: Any, state: int) -> int:
        return state + 1


class Renaming(GenServer):
    """Version 3 keeps its count under "total", not "count"."""

    vsn = 3

    def handle_call(self, msg: Any, state: dict[str, Any]) -> Any:
        return state, state

    async def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        await anyio.lowlevel.checkpoint()  # an async code_change is awaited between two messages
        if old_vsn == 1:  # version 1 kept a plain int
            return {"total": state, "migrated_by": extra}
        return {"total": state.pop("count"), **state, "migrated_by": extra}


class Broken(GenServer):
    vsn = "2-broken"

    def handle_call(self, msg: Any, state: Any) -> Any:
        return "broken code ran", state

    def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        return state["count"]  # the state is an int: TypeError


def fresh(name: str, cls: type[GenServer]) -> None:
    """Make `cls` the current code of `name` again (tests on both backends share the registry)."""
    BehaviorRegistry.register(name, cls)


async def test_a_counter_at_41_counts_on_to_42_with_the_new_code(node: Node) -> None:
    fresh("counter", CounterV1)
    ref = await GenServer.start(CounterV1, 40, name="c")
    GenServer.cast(ref, "inc")
    assert await GenServer.call(ref, "get") == ("v1", 41)
    downs = Sink()
    await RemoteMonitor.monitor(ref, on_down=downs)
    await Sys.statistics(ref, enable=True)  # its timed handlers must become the new ones
    seen = Sink()
    node.events.subscribe(lambda ev: seen.add(ev) if ev.kind == "process_upgraded" else None)

    results = await BehaviorRegistry.upgrade("counter", CounterV2)

    assert results == [UpgradeResult(ref, None, "counter", "upgraded", "1", "2")]
    GenServer.cast("c", "inc")  # same process: its name, its monitor, its state
    assert await GenServer.call(ref, "get") == ("v2", 42)
    assert Registry.whereis("c") == ref and not downs.items
    [event] = await seen.wait_for(1)
    assert event.data["from_vsn"] == "1" and event.data["to_vsn"] == "2"
    status = await Sys.get_status(ref)
    assert (status.behavior, status.vsn, status.messages, status.statistics) == ("CounterV2", "2", 4, True)
    assert (await Sys.statistics(ref)).handled_since_enabled == 2
    # upgrading again to the same code changes nothing
    assert (await BehaviorRegistry.upgrade("counter", CounterV2)) == []


async def test_code_change_renames_a_state_field(node: Node) -> None:
    fresh("renaming", CounterV1)
    old = await GenServer.start(CounterV1, 7)

    class CounterDict(GenServer):
        vsn = 2

        def handle_call(self, msg: Any, state: dict[str, Any]) -> Any:
            return state, state

        def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
            return {"count": state, "since": extra}

    results = await BehaviorRegistry.upgrade("renaming", CounterDict, extra="v2")
    assert [r.outcome for r in results] == ["upgraded"]
    assert await GenServer.call(old, "get") == {"count": 7, "since": "v2"}
    newer = await GenServer.start(CounterDict, {"count": 1, "since": "start"})

    results = await BehaviorRegistry.upgrade("renaming", Renaming, extra="v3")
    assert sorted(r.outcome for r in results) == ["upgraded", "upgraded"]
    assert await GenServer.call(old, "get") == {"total": 7, "since": "v2", "migrated_by": "v3"}
    assert await GenServer.call(newer, "get") == {"total": 1, "since": "start", "migrated_by": "v3"}


async def test_a_failing_code_change_keeps_the_old_code_and_reports_it(node: Node) -> None:
    fresh("fragile", CounterV1)
    ref = await GenServer.start(CounterV1, 5)
    failures = Sink()
    node.events.subscribe(lambda ev: failures.add(ev) if ev.kind == "upgrade_failed" else None)

    [result] = await BehaviorRegistry.upgrade("fragile", Broken)

    assert result.outcome == "failed" and result.from_vsn == "1" and result.to_vsn == "2-broken"
    assert result.error is not None and result.error.startswith("TypeError")
    GenServer.cast(ref, "inc")
    assert await GenServer.call(ref, "get") == ("v1", 6)  # alive, old code, old state
    [event] = await failures.wait_for(1)
    assert event.data["ref"] == ref and event.data["error"] == result.error
    status = await Sys.get_status(ref)
    assert status.upgrade_error == result.error and status.vsn == "1"
    # the fixed code upgrades it
    [fixed] = await BehaviorRegistry.upgrade("fragile", CounterV2)
    assert fixed.outcome == "upgraded" and (await Sys.get_status(ref)).upgrade_error is None
    assert await GenServer.call(ref, "get") == ("v2", 6)


async def test_a_busy_process_upgrades_when_its_callback_returns(node: Node) -> None:
    gate = anyio.Event()

    class Slow(GenServer):
        vsn = 1

        async def handle_call(self, msg: Any, state: list[str]) -> Any:
            if msg == "block":
                await gate.wait()
            return ("v1", msg), state

    class Fast(GenServer):
        vsn = 2

        def handle_call(self, msg: Any, state: Any) -> Any:
            return ("v2", msg), state

    fresh("slow", Slow)
    ref = await GenServer.start(Slow, [])
    replies: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:
        async def call(msg: str) -> None:
            replies[msg] = await GenServer.call(ref, msg)

        tg.start_soon(call, "block")
        await anyio.wait_all_tasks_blocked()
        upgrade = BehaviorRegistry.upgrade("slow", Fast)
        tg.start_soon(call, "after")
        assert [r.outcome for r in await upgrade.wait(0.05)] == ["pending"]
        assert (await Sys.get_status(ref)).status == "running"
        gate.set()
        assert [r.outcome for r in await upgrade.wait(5)] == ["upgraded"]
    # the message being handled finished on the old code, the next one ran the new code
    assert replies == {"block": ("v1", "block"), "after": ("v2", "after")}


async def test_new_processes_and_supervisor_restarts_run_the_new_code(node: Node) -> None:
    fresh("worker", CounterV1)
    sup = await Supervisor.start("one_for_one", [ChildSpec(id="w", behavior=CounterV1, arg=0, name="w")])
    first = Registry.whereis("w")
    await BehaviorRegistry.upgrade("worker", CounterV2)
    assert await GenServer.call("w", "get") == ("v2", 0)

    assert await GenServer.call(await GenServer.start(CounterV1, 3), "get") == ("v2", 3)  # an old reference
    down = Sink()
    assert first is not None
    await RemoteMonitor.monitor(first, on_down=down)
    await node.shutdown_process(first, "crash")  # the supervisor restarts it from its (old) ChildSpec
    await down.wait_for(1)
    restarted = await wait_until(lambda: Registry.whereis("w") not in (None, first) and Registry.whereis("w"),
                                 5.0, "the restarted child")
    assert await GenServer.call(restarted, "get") == ("v2", 0)
    [child] = await Supervisor.which_children(sup)
    assert child.restarts == 1
    # registering the old class again makes it current for new processes
    fresh("worker", CounterV1)
    assert await GenServer.call(await GenServer.start(CounterV1, 1), "get") == ("v1", 1)
