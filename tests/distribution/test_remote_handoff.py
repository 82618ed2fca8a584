"""Direct hand-off in the reader: a CALL, CAST or SEND alone in its frame, for an idle process
with a plain handler, is handled by the connection's reader itself (`Process.run_now`), and
nothing else changes: replies, NoReply, Stop, crashes (CallError, exit reason, a remote
monitor's DOWN), and the order of a batch, which still goes through the mailbox. Real TCP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from noex_lab import (
    CallError,
    GenServer,
    Node,
    NoReply,
    RemoteMonitor,
    Stop,
)
from noex_lab.core.node import current_process
from noex_lab.core.reasons import ErrorReason
from tests.helpers.cluster import secured_pair, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup"), pytest.mark.timeout(60)]

SECRET = "a long cluster secret for the hand-off tests"


def task_id() -> int | None:
    try:
        return anyio.get_current_task().id
    except RuntimeError:  # asyncio: a protocol callback (the reader's data_received) has no task
        return None


class Server(GenServer):
    """Plain handle_call and handle_cast; an async handle_info that records the process's task."""

    def init(self, arg: Any) -> dict[str, Any]:
        return {"log": [], "task": None}

    def handle_call(self, msg: Any, state: dict[str, Any]) -> Any:
        if msg == "where":
            return (task_id(), state["task"], current_process().ref), state
        if msg == "crash":
            raise RuntimeError("remote crash on purpose")
        if msg == "later":
            self.node.send(self.ref, ("answer", self.caller))
            return NoReply(state)
        if msg == "stop":
            return Stop("normal", state, reply="bye")
        if msg == "log":
            return list(state["log"]), state
        state["log"].append(msg)
        return msg, state

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        state["log"].append(msg)
        return state

    async def handle_info(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        if msg == "whoami":
            state["task"] = task_id()
        elif isinstance(msg, tuple) and msg[0] == "answer":
            GenServer.reply(msg[1], "late answer")
        return state


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Node, Node, Any]]:
    """Node A (the default node) and node B with a secret; a Server on B that knows its task."""
    a, b, ref = await secured_pair("handoff", "handoff_server", Server, SECRET)
    GenServer.send(ref, "whoami")  # (async handle_info: its process's own task runs it)
    await wait_until(lambda: b.local_process(ref).state["task"] is not None, timeout=10)
    yield a, b, ref


async def test_a_lone_remote_call_is_answered_by_the_reader_as_the_process(pair: tuple[Node, Node, Any]) -> None:
    _a, b, ref = pair
    ran_in, process_task, me = await GenServer.call(ref, "where")
    assert ran_in != process_task  # the reader ran it, not the process's task
    assert me == ref  # as the process
    proc = b.local_process(ref)
    assert proc is not None and proc.status == "waiting" and proc.queue_high_water == 1


async def test_a_lone_remote_cast_is_handled_by_the_reader(pair: tuple[Node, Node, Any]) -> None:
    _a, b, ref = pair
    proc = b.local_process(ref)
    assert proc is not None
    handled = proc.handled
    GenServer.cast(ref, "c")
    await wait_until(lambda: proc.handled == handled + 1, timeout=10)
    assert proc.state["log"] == ["c"] and not proc.mailbox


async def test_a_batch_keeps_its_order_through_the_mailbox(pair: tuple[Node, Node, Any]) -> None:
    """Casts and a call sent in one turn travel in one frame: none is alone, all are queued."""
    _a, _b, ref = pair
    for i in range(5):
        GenServer.cast(ref, i)
    assert await GenServer.call(ref, "log") == [0, 1, 2, 3, 4]
    results: list[Any] = []

    async def call(i: int) -> None:
        results.append(await GenServer.call(ref, ("c", i)))

    async with anyio.create_task_group() as tg:
        for i in range(64):
            tg.start_soon(call, i)
    assert sorted(results) == [("c", i) for i in range(64)]
    log = (await GenServer.call(ref, "log"))[5:]
    assert sorted(log) == [("c", i) for i in range(64)]  # each once (64 senders: no order among them)


async def test_a_crash_in_a_handed_off_remote_call(pair: tuple[Node, Node, Any]) -> None:
    _a, b, ref = pair
    downs: list[Any] = []
    await RemoteMonitor.monitor(ref, on_down=downs.append)
    with pytest.raises(CallError) as info:
        await GenServer.call(ref, "crash")
    assert info.value.exc_type == "RuntimeError" and info.value.message == "remote crash on purpose"
    await wait_until(lambda: downs, timeout=10)
    reason = downs[0].reason
    assert isinstance(reason, ErrorReason) and reason.message == "remote crash on purpose"
    proc = b.local_process(ref)
    assert proc is None or not proc.alive


async def test_noreply_and_stop_in_a_handed_off_remote_call(pair: tuple[Node, Node, Any]) -> None:
    _a, _b, ref = pair
    assert await GenServer.call(ref, "later") == "late answer"
    downs: list[Any] = []
    await RemoteMonitor.monitor(ref, on_down=downs.append)
    assert await GenServer.call(ref, "stop") == "bye"
    await wait_until(lambda: downs, timeout=10)
    assert downs[0].reason == "normal"
