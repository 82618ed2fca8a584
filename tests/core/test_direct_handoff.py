"""Direct hand-off (`Process.run_now`): a local call to an idle process whose `handle_call` is
plain runs that handler in the caller's task, with nothing a handler or an observer can tell
apart from the process's own loop handling it: self() and the current node, replies (NoReply
and GenServer.reply), Stop, crashes (the caller's CallError, the exit reason, monitors, the
crash report, terminate), tracers, statistics, suspension, ordering and fairness."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from noex_lab import CallError, From, GenServer, NoReply, ServerNotRunningError, Stop, Sys
from noex_lab.core.crash_report import on_crash
from noex_lab.core.node import Node, current_node, current_process
from noex_lab.core.process import YIELD_EVERY
from noex_lab.core.reasons import ErrorReason
from tests.helpers.waiting import wait_until

from ._helpers import DEADLINE, Sink, exit_reason, watch

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def task_id() -> int:
    return anyio.get_current_task().id


class Plain(GenServer):
    """Plain handlers. State: the list of messages handled, plus a Sink for terminate."""

    def init(self, arg: Any) -> list[Any]:
        return [arg]

    def handle_call(self, msg: Any, state: list[Any]) -> Any:
        if msg == "where":  # the task running the handler, and who it thinks it is
            return (task_id(), current_process().ref, current_node()), state
        if msg == "crash":
            raise RuntimeError("crashed on purpose")
        if msg == "later":  # answered after handle_call, from handle_info
            self.node.send(self.ref, ("answer", self.caller))
            return NoReply(state)
        if msg == "early":  # answered during handle_call, then NoReply
            GenServer.reply(self.caller, "early answer")
            return NoReply(state)
        if msg == "stop":
            return Stop("done", state, reply="bye")
        if msg == "stop_unanswered":
            return Stop("done", [*state, self.caller])
        if msg == "bad":
            return "not a tuple"
        if msg == "base_exception":  # not a crash (not an Exception): the process is killed
            raise GeneratorExit("raised by the handler")
        if isinstance(msg, tuple) and msg[0] == "spin":  # a handler that never awaits
            end = time.monotonic() + msg[1]
            while time.monotonic() < end:
                pass
        return msg, [*state, msg]

    def handle_cast(self, msg: Any, state: list[Any]) -> list[Any]:
        return [*state, msg]

    def handle_info(self, msg: Any, state: list[Any]) -> list[Any]:
        if isinstance(msg, tuple) and msg[0] == "answer":
            GenServer.reply(msg[1], "late answer")
        return state

    def terminate(self, reason: Any, state: list[Any]) -> None:
        if isinstance(state[-1], From):  # a call Stop left unanswered
            GenServer.reply(state[-1], "from terminate")
        if isinstance(state[0], Sink):
            state[0].add(("terminate", reason, task_id()))


async def test_an_idle_process_answers_in_the_callers_task_as_itself(node: Node) -> None:
    ref = await GenServer.start(Plain)
    here = task_id()
    ran_in, me, its_node = await GenServer.call(ref, "where")
    assert ran_in == here  # no task switch: the caller ran handle_call
    assert me == ref and its_node is node  # but as the process, on its node
    assert current_process() is None  # and the caller is itself again afterwards
    proc = node.local_process(ref)
    assert proc is not None
    assert proc.handled == 1 and proc.queue_high_water == 1  # counted as if it had been queued
    assert proc.status == "waiting"


async def test_a_call_from_a_process_runs_the_callee_as_the_callee(node: Node) -> None:
    class Relay(GenServer):
        def init(self, arg: Any) -> Any:
            return arg

        async def handle_call(self, msg: Any, state: Any) -> Any:
            where = await GenServer.call(state, "where")
            return (where, task_id(), current_process().ref), state

    target = await GenServer.start(Plain)
    relay = await GenServer.start(Relay, target)
    (ran_in, me, _), relay_task, relay_me = await GenServer.call(relay, "x")
    assert ran_in == relay_task and me == target and relay_me == relay


async def test_a_crash_in_a_handed_off_call_is_the_processes_crash(node: Node) -> None:
    sink = Sink()
    crashes: list[Any] = []
    on_crash(node, crashes.append)
    ref = await GenServer.start(Plain, sink)
    down = await watch(ref)
    with pytest.raises(CallError) as info:
        await GenServer.call(ref, "crash")
    assert info.value.exc_type == "RuntimeError" and info.value.process == ref
    # the caller hears of it once the process exited, as when its own task ran the handler
    proc = node.local_process(ref)
    assert proc is None or not proc.alive
    reason = await exit_reason(down)
    assert isinstance(reason, ErrorReason) and reason.message == "crashed on purpose"
    (kind, terminate_reason, terminate_task), = await sink.wait_for(1)
    assert kind == "terminate" and terminate_reason == reason
    assert terminate_task != task_id()  # terminate ran in the process's own task
    await wait_until(lambda: crashes, DEADLINE, "the crash report")
    assert crashes[0].process == ref and "crash" in crashes[0].last_message
    with pytest.raises(ServerNotRunningError):
        await GenServer.call(ref, "where")


async def test_a_bad_return_crashes_with_bad_return_error(node: Node) -> None:
    ref = await GenServer.start(Plain)
    down = await watch(ref)
    with pytest.raises(CallError, match="BadReturnError"):
        await GenServer.call(ref, "bad")
    assert (await exit_reason(down)).exc_type == "BadReturnError"


async def test_a_base_exception_from_a_handed_off_handler_kills_the_process_not_the_caller(node: Node) -> None:
    errors: list[Any] = []
    node.events.subscribe(lambda e: errors.append(e) if e.kind == "error" else None)
    ref = await GenServer.start(Plain)
    down = await watch(ref)
    with pytest.raises(ServerNotRunningError):
        await GenServer.call(ref, "base_exception")
    assert await exit_reason(down) == "killed"
    assert any("GeneratorExit" in str(e.data.get("error", "")) for e in errors)


async def test_noreply_answered_later_or_during_the_handler(node: Node) -> None:
    ref = await GenServer.start(Plain)
    assert await GenServer.call(ref, "later") == "late answer"  # the caller waited for the reply
    assert await GenServer.call(ref, "early") == "early answer"
    assert await GenServer.call(ref, "still") == "still"


async def test_stop_with_a_reply_and_without(node: Node) -> None:
    sink = Sink()
    ref = await GenServer.start(Plain, sink)
    down = await watch(ref)
    assert await GenServer.call(ref, "stop") == "bye"
    assert await exit_reason(down) == "done"
    assert (await sink.wait_for(1))[0][:2] == ("terminate", "done")

    sink = Sink()
    ref = await GenServer.start(Plain, sink)
    assert await GenServer.call(ref, "stop_unanswered") == "from terminate"  # terminate answered it


async def test_tracers_see_handed_off_messages(node: Node) -> None:
    ref = await GenServer.start(Plain)
    proc = node.local_process(ref)
    assert proc is not None
    seen: list[Any] = []
    proc.tracers = [lambda kind, msg, state: seen.append((kind, msg, list(state)))]
    assert await GenServer.call(ref, "a") == "a"
    assert seen == [("call", "a", [None, "a"])]


async def test_a_suspended_process_is_not_run_by_its_caller(node: Node) -> None:
    ref = await GenServer.start(Plain)
    proc = node.local_process(ref)
    assert proc is not None
    await Sys.suspend(ref)
    answers: list[Any] = []

    async def call() -> None:
        answers.append(await GenServer.call(ref, "where"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await wait_until(lambda: len(proc.mailbox) == 1, what="the call to be queued")
        assert answers == []  # queued, not run by its caller
        await Sys.resume(ref)
    assert answers[0][0] != task_id()  # handled by the process's own loop after the resume


async def test_a_fenced_process_checks_its_gate_in_its_own_loop(node: Node) -> None:
    ref = await GenServer.start(Plain)
    proc = node.local_process(ref)
    assert proc is not None
    checks: list[int] = []
    proc.fence_gate = lambda: checks.append(1) is not None  # (never fences: returns False)
    assert (await GenServer.call(ref, "where"))[0] != task_id()  # the loop ran it, after the gate
    assert checks == [1]


async def test_statistics_count_handed_off_calls(node: Node) -> None:
    ref = await GenServer.start(Plain)
    for _ in range(3):
        await GenServer.call(ref, "x")
    stats = await Sys.statistics(ref)
    assert stats.messages == 3 and stats.queue_high_water == 1
    await Sys.statistics(ref, enable=True)  # timed handlers: the process's loop runs them
    assert (await GenServer.call(ref, "where"))[0] != task_id()
    stats = await Sys.statistics(ref)
    assert stats.messages == 4 and stats.handler_time_s is not None and stats.handler_time_s > 0


async def test_an_async_handler_runs_in_the_process(node: Node) -> None:
    class Async(GenServer):
        def init(self) -> None:
            return None

        async def handle_call(self, msg: Any, state: Any) -> Any:
            return task_id(), state

    ref = await GenServer.start(Async)
    assert await GenServer.call(ref, "where") != task_id()


async def test_a_call_after_a_cast_waits_for_it(node: Node) -> None:
    """A call that finds messages queued (the process was woken, not yet run) goes behind them:
    one sender's messages are handled in the order sent."""
    ref = await GenServer.start(Plain)
    GenServer.cast(ref, "first")
    GenServer.cast(ref, "second")
    ran_in, _, _ = await GenServer.call(ref, "where")
    assert ran_in != task_id()  # handled by the process's loop, after the casts
    assert await GenServer.call(ref, "x") == "x"  # idle again: handed off
    state = (await Sys.get_state(ref)).state
    assert state[1:] == ["first", "second", "x"]


async def test_a_handler_past_the_callers_timeout_still_answers(node: Node) -> None:
    """A plain handler cannot be interrupted: its caller gets the reply it produced, as when the
    process's task ran it (the reply is set before the caller's deadline can fire)."""
    ref = await GenServer.start(Plain)
    assert await GenServer.call(ref, ("spin", 0.2), timeout=0.05) == ("spin", 0.2)


async def test_a_tight_loop_of_calls_does_not_starve_the_loop(node: Node) -> None:
    """Handed-off calls never suspend their caller; the node's budget makes it yield at least
    every YIELD_EVERY of them, so a ticker keeps ticking."""
    ref = await GenServer.start(Plain)
    gaps: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            await anyio.lowlevel.checkpoint()
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    calls = 20 * YIELD_EVERY
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.lowlevel.checkpoint()
        for _ in range(calls):
            await GenServer.call(ref, "x")
        done.set()
    assert len(gaps) >= calls // YIELD_EVERY  # the ticker ran at least once per budget
    assert max(gaps) < 0.25  # (~128 calls of a few microseconds each between two ticks)
    proc = node.local_process(ref)
    assert proc is not None and proc.handled == calls
