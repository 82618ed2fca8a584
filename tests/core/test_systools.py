"""Live process tools on local processes (`Sys`, OTP's sys): suspend and resume, replace_state,
opt-in statistics (and that they cost nothing while off), get_status."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from noex_lab import (
    CallTimeoutError,
    ChildSpec,
    GenServer,
    Registry,
    ServerNotRunningError,
    Supervisor,
    Sys,
)
from noex_lab.core.node import Node
from noex_lab.errors import InvalidArgumentError, ReplaceStateError
from noex_lab.introspection import ProcessStatistics, SuspendResult
from tests.helpers.waiting import wait_until

from ._helpers import exit_reason, watch

pytestmark = pytest.mark.anyio


class Log(GenServer):
    """State: the list of messages handled; "sleep" blocks in a handler for 20 ms."""

    def init(self, arg: Any) -> Any:
        return []

    def handle_call(self, msg: Any, state: list[Any]) -> Any:
        if msg == "sleep":  # (work: 20 ms of CPU in the handler, for the time-in-handlers statistic)
            end = time.perf_counter() + 0.02
            while time.perf_counter() < end:
                pass
        if msg == "fanout":  # a call that sends: three messages out
            GenServer.cast(self.ref, "self")
            GenServer.send(self.ref, "info")
            GenServer.cast("nobody", "x")
        return list(state), [*state, msg]

    def handle_cast(self, msg: Any, state: list[Any]) -> Any:
        return [*state, msg]

    def handle_info(self, msg: Any, state: list[Any]) -> Any:
        return [*state, ("info", msg)]

    def terminate(self, reason: Any, state: Any) -> None:
        state.append(("terminated", reason))


async def test_a_suspended_process_queues_messages_until_resumed(node: Node) -> None:
    ref = await GenServer.start(Log)
    assert await Sys.suspend(ref) == SuspendResult(ref, True, True, 0)
    GenServer.cast(ref, "a")
    GenServer.cast(ref, "b")
    with pytest.raises(CallTimeoutError):
        await GenServer.call(ref, "c", timeout=0.1)
    status = await Sys.get_status(ref)
    assert (status.status, status.suspended, status.queue_len, status.messages) == ("suspended", True, 3, 0)
    assert (await Sys.suspend(ref)).changed is False
    # system requests still run while suspended: the state can be read and replaced
    assert (await Sys.get_state(ref)).state == []
    assert (await Sys.replace_state(ref, lambda s: ["replaced"])).state == ["replaced"]
    assert await Sys.resume(ref) == SuspendResult(ref, False, True, 3)
    assert await GenServer.call(ref, "get") == ["replaced", "a", "b", "c"]  # in order, nothing lost
    assert (await Sys.resume(ref)).changed is False


async def test_suspend_waits_for_a_busy_callback_and_is_withdrawn_on_timeout(node: Node) -> None:
    gate = anyio.Event()

    class Busy(GenServer):
        async def handle_cast(self, msg: Any, state: Any) -> Any:
            await gate.wait()
            return state + 1

        def handle_call(self, msg: Any, state: Any) -> Any:
            return state, state

    ref = await GenServer.start(Busy, 0)
    GenServer.cast(ref, "block")
    await anyio.wait_all_tasks_blocked()  # inside its callback (a request would jump the queue)
    with pytest.raises(CallTimeoutError):
        await Sys.suspend(ref, timeout=0.05)
    gate.set()
    assert await GenServer.call(ref, "get") == 1  # the withdrawn request never suspended it
    assert not (await Sys.get_status(ref)).suspended
    await GenServer.stop(ref)
    with pytest.raises(ServerNotRunningError):
        await Sys.suspend(ref)


async def test_stop_kill_and_supervisor_shutdown_still_work_while_suspended(node: Node) -> None:
    ref = await GenServer.start(Log)
    await Sys.suspend(ref)
    GenServer.cast(ref, "queued")
    down = await watch(ref)
    await GenServer.stop(ref, "normal", timeout=2)  # like OTP: a stop reaches a suspended process
    assert await exit_reason(down) == "normal"

    sup = await Supervisor.start("one_for_one", [ChildSpec(id="l", behavior=Log, name="l")])
    await Sys.suspend("l")
    child_down = await watch("l")
    await Supervisor.stop(sup)
    assert await exit_reason(child_down) == "shutdown"


async def test_replace_state_runs_between_messages_and_a_failing_function_changes_nothing(node: Node) -> None:
    ref = await GenServer.start(Log)
    GenServer.cast(ref, "x")

    async def add(state: list[Any]) -> list[Any]:
        await anyio.lowlevel.checkpoint()
        return [*state, "added"]

    assert (await Sys.replace_state(ref, add)).state == ["x", "added"]
    with pytest.raises(ReplaceStateError, match="ZeroDivisionError") as err:
        await Sys.replace_state(ref, lambda s: 1 / 0)
    assert isinstance(err.value.__cause__, ZeroDivisionError)
    assert await GenServer.call(ref, "get") == ["x", "added"]
    with pytest.raises(InvalidArgumentError):
        await Sys.replace_state(ref, "not a function")  # type: ignore[arg-type]


async def test_statistics_are_opt_in_and_cost_nothing_while_off(node: Node) -> None:
    ref = await GenServer.start(Log)
    GenServer.cast(ref, "a")
    assert await GenServer.call(ref, "get") == ["a"]
    off = await Sys.statistics(ref)
    assert isinstance(off, ProcessStatistics) and not off.enabled
    assert (off.messages_out, off.handler_time_s, off.restarts) == (None, None, None)
    assert off.messages_in == off.messages == 2 and off.queue_len == 0
    proc = node.local_process(ref)
    assert proc is not None
    assert "handle_call" not in vars(proc.server) and "_send" not in vars(node) and "call" not in vars(node)

    on = await Sys.statistics(ref, enable=True)
    assert on.enabled and on.messages_out == 0 and on.handled_since_enabled == 0
    await GenServer.call(ref, "fanout")
    await GenServer.call(ref, "sleep")
    stats = await Sys.statistics(ref)
    assert stats.messages_out == 3  # two casts and a send (to a dead name too)
    assert stats.handled_since_enabled is not None and stats.handled_since_enabled >= 4
    assert stats.handler_time_s is not None and 0.015 < stats.handler_time_s < 2.0
    assert stats.mean_handler_ms is not None and stats.mean_handler_ms > 1.0
    assert "messages out" in str(stats) and "<table" in stats._repr_html_()

    off = await Sys.statistics(ref, enable=False)
    assert not off.enabled
    assert "handle_call" not in vars(proc.server) and "_send" not in vars(node) and "call" not in vars(node)


async def test_statistics_report_supervisor_restarts_and_stop_counting_at_exit(node: Node) -> None:
    sup = await Supervisor.start("one_for_one", [ChildSpec(id="l", behavior=Log, name="l")])
    first = Registry.whereis("l")
    assert (await Sys.statistics("l")).restarts == 0
    await Sys.statistics("l", enable=True)
    assert first is not None
    await node.shutdown_process(first, "crash")
    await wait_until(lambda: Registry.whereis("l") not in (None, first), 5.0, "the restart")
    [child] = await Supervisor.which_children(sup)  # (answered once the restart is done)
    assert child.ref is not None
    stats = await Sys.statistics(child.ref)
    assert stats.restarts == 1 and not stats.enabled  # a new process: its statistics start off
    assert "_send" not in vars(node)  # the exited process stopped counting


async def test_get_status_describes_the_process(node: Node) -> None:
    ref = await GenServer.start(Log, name="logger")
    other = await GenServer.start(Log)
    node.link(ref, other)
    status = await Sys.get_status("logger")
    assert (status.ref, status.name, status.behavior, status.status) == (ref, "logger", "Log", "waiting")
    assert status.links == [other] and status.state == [] and status.has_state
    assert status.vsn.startswith("#") and not status.statistics and status.upgrade_error is None
    assert "status of" in str(status) and "<table" in status._repr_html_()


async def test_a_process_cannot_suspend_itself(node: Node) -> None:
    class Selfish(GenServer):
        async def handle_call(self, msg: Any, state: Any) -> Any:
            try:
                await Sys.suspend(self.ref, timeout=1)
            except InvalidArgumentError as exc:
                return str(exc), state
            return "suspended?", state

    ref = await GenServer.start(Selfish)
    assert "asked itself" in await GenServer.call(ref, "go")
    assert not (await Sys.get_status(ref)).suspended
