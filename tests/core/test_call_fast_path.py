"""`GenServer.call` and `GenServer.stop` return the request's coroutine (no coroutine of their own
around it): a call or stop still does nothing and raises nothing until it is awaited, every error
is the one a coroutine function would raise, and a server whose caller gave up keeps running."""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import Any

import anyio
import pytest

from noex_lab import CallTimeoutError, GenServer, ServerNotRunningError
from noex_lab.core.node import Node
from noex_lab.errors import InvalidArgumentError
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.anyio


class Log(GenServer):
    """Records the calls it handles; ("wait", event) waits for the event first; "me" calls itself."""

    def init(self, arg: Any) -> list[Any]:
        return []

    async def handle_call(self, msg: Any, state: list[Any]) -> tuple[Any, list[Any]]:
        if msg == "log":
            return list(state), state
        if msg == "me":
            try:
                await GenServer.call(self.ref, "log")
            except InvalidArgumentError as exc:
                return str(exc), state
        if msg == "stop me":
            try:
                await GenServer.stop(self.ref)
            except InvalidArgumentError as exc:
                return str(exc), state
        if isinstance(msg, tuple) and msg[0] == "wait":
            await msg[1].wait()
        return msg, [*state, msg]


async def _raised_when_awaited(dead: Awaitable[Any], unknown: Awaitable[Any], bad_timeout: Awaitable[Any]) -> None:
    """Each request's error comes when it is awaited: to a process that exited, to an unknown
    name, with a NaN timeout."""
    with pytest.raises(ServerNotRunningError):
        await dead
    with pytest.raises(ServerNotRunningError):
        await unknown
    with pytest.raises(InvalidArgumentError, match="NaN"):
        await bad_timeout


async def test_nothing_is_sent_until_the_call_is_awaited(node: Node) -> None:
    ref = await GenServer.start(Log)
    pending = GenServer.call(ref, "never")
    pending.close()  # dropped without an await: the server must never see it
    assert await GenServer.call(ref, "once") == "once"
    assert await GenServer.call(ref, "log") == ["once"]


async def test_errors_are_raised_when_the_call_is_awaited_not_when_it_is_made(node: Node) -> None:
    ref = await GenServer.start(Log)
    await GenServer.stop(ref)
    # no exception when made, but when awaited, as from a coroutine function
    await _raised_when_awaited(GenServer.call(ref, "x"), GenServer.call("no such name", "x"),
                               GenServer.call(ref, "x", timeout=math.nan))


async def test_off_the_fast_path_calls_work_as_before(node: Node) -> None:
    ref = await GenServer.start(Log, name="log_server")
    assert await GenServer.call(ref, "a", timeout=5) == "a"  # an int timeout
    assert await GenServer.call("log_server", "b") == "b"  # a name
    assert "called itself" in await GenServer.call(ref, "me")  # raised in the process, on its await


async def test_a_server_whose_caller_gave_up_keeps_serving(node: Node) -> None:
    ref = await GenServer.start(Log)
    gates = [anyio.Event() for _ in range(3)]
    for gate in gates:  # each late answer finds its caller gone (InvalidStateError, handled)
        with pytest.raises(CallTimeoutError):
            await GenServer.call(ref, ("wait", gate), timeout=0.05)
    for gate in gates:
        gate.set()
    assert await GenServer.call(ref, "still here") == "still here"
    assert len(await GenServer.call(ref, "log")) == 4


async def test_nothing_is_stopped_until_the_stop_is_awaited(node: Node) -> None:
    ref = await GenServer.start(Log)
    pending = GenServer.stop(ref)
    pending.close()  # dropped without an await: the server keeps running
    assert await GenServer.call(ref, "alive") == "alive"
    await GenServer.stop(ref)
    assert node.local_process(ref) is None


async def test_stop_errors_are_raised_when_the_stop_is_awaited(node: Node) -> None:
    ref = await GenServer.start(Log)
    busy = await GenServer.start(Log)
    await GenServer.stop(ref)
    await _raised_when_awaited(GenServer.stop(ref), GenServer.stop("no such name"),
                               GenServer.stop(busy, timeout=math.nan))
    assert "cannot stop itself" in await GenServer.call(busy, "stop me")
    gate = anyio.Event()
    waiting = GenServer.call(busy, ("wait", gate), timeout=5.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: waiting)
        await anyio.wait_all_tasks_blocked()
        started = anyio.current_time()
        with pytest.raises(CallTimeoutError):  # busy past the stop's timeout
            await GenServer.stop(busy, timeout=0.05)
        assert 0.05 <= anyio.current_time() - started < 1.0
        gate.set()
    # the stop was delivered: it still stops once the handler returns
    await wait_until(lambda: node.local_process(busy) is None, timeout=5, what="the busy server to stop")


async def test_off_the_fast_path_stops_work_as_before(node: Node) -> None:
    by_name = await GenServer.start(Log, name="stop_by_name")
    by_int = await GenServer.start(Log)
    await GenServer.stop("stop_by_name")
    await GenServer.stop(by_int, timeout=5)  # an int timeout
    assert node.local_process(by_name) is None and node.local_process(by_int) is None
