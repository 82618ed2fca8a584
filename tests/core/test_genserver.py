"""GenServer: start/call/cast/send/stop, init, ordering, timeouts, let it crash, NoReply/Stop, timers."""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio
import pytest

from noex_lab import (
    AlreadyRegisteredError,
    CallError,
    CallTimeoutError,
    ErrorReason,
    From,
    GenServer,
    InitError,
    NoexError,
    NoReply,
    ProcessRef,
    Registry,
    RemoteLink,
    ServerNotRunningError,
    Stop,
    is_normal_exit,
)
from noex_lab.core.node import Node
from noex_lab.errors import InvalidArgumentError

from ._helpers import Collector, Pawn, Sink, exit_reason, watch

pytestmark = pytest.mark.anyio


class Counter(GenServer):
    def init(self, arg: Any) -> int:
        return arg or 0

    def handle_call(self, msg: Any, state: int) -> Any:
        if msg == "get":
            return state, state
        if msg == "whoami":
            return (self.ref, self.node), state
        if isinstance(msg, tuple) and msg[0] == "add":
            return state + msg[1], state + msg[1]
        raise ValueError(f"unknown call {msg!r}")

    def handle_cast(self, msg: Any, state: int) -> int:
        return state + msg[1]

    def handle_info(self, msg: Any, state: int) -> int:
        return state + msg[1]


class Recorded(GenServer):
    """State: (sink, value); terminate records (reason, value)."""

    def init(self, sink: Sink) -> Any:
        return (sink, 0)

    def handle_call(self, msg: Any, state: Any) -> Any:
        sink, value = state
        if msg == "stop_with_reply":
            return Stop("normal", (sink, value + 1), reply="bye")
        if msg == "stop_without_reply":
            return Stop("normal", (sink, value + 1))
        return value, state

    def handle_cast(self, msg: Any, state: Any) -> Any:
        sink, value = state
        if isinstance(msg, tuple) and msg[0] == "stop":
            return Stop(msg[1], (sink, value + 10))
        return (sink, value + msg)

    def terminate(self, reason: Any, state: Any) -> None:
        sink, value = state
        sink.add((reason, value))


# ---------------------------------------------------------------------------- refs and reasons


def test_process_ref_is_an_immutable_hashable_ordered_value() -> None:
    a, b = ProcessRef(None, 1, 7), ProcessRef(None, 2, 7)
    assert a == ProcessRef(None, 1, 7) and a != b
    assert hash(a) == hash(ProcessRef(None, 1, 7))
    assert sorted([b, a]) == [a, b]
    assert a.node is None and a.id == 1
    assert "1" in str(a) and str(a) != str(b)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.id = 3  # type: ignore[misc]


def test_is_normal_exit() -> None:
    assert is_normal_exit("normal") and is_normal_exit("shutdown")
    for reason in ("killed", "noproc", "noconnection", ErrorReason("ValueError", "x")):
        assert not is_normal_exit(reason)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ErrorReason("ValueError", "x").message = "y"  # type: ignore[misc]


# ---------------------------------------------------------------------- start / call / cast / send / stop


async def test_start_call_cast_send_stop(node: Node) -> None:
    ref = await GenServer.start(Counter, 5)
    assert isinstance(ref, ProcessRef) and ref.node is None
    assert await GenServer.call(ref, "get") == 5
    assert await GenServer.call(ref, ("add", 2)) == 7
    GenServer.cast(ref, ("add", 10))
    GenServer.send(ref, ("add", 100))
    assert await GenServer.call(ref, "get") == 117
    assert await GenServer.call(ref, "whoami") == (ref, node)
    down = await watch(ref)
    await GenServer.stop(ref)
    assert await exit_reason(down) == "normal"
    with pytest.raises(ServerNotRunningError):
        await GenServer.call(ref, "get")


async def test_init_with_and_without_the_arg_parameter(node: Node) -> None:
    class NoArg(GenServer):
        def init(self) -> str:  # type: ignore[override]
            return "fixed"

        def handle_call(self, msg: Any, state: Any) -> Any:
            return state, state

    class DefaultInit(GenServer):
        def handle_call(self, msg: Any, state: Any) -> Any:
            return state, state

    class AsyncNoArg(NoArg):
        async def init(self) -> str:  # type: ignore[override]
            await anyio.lowlevel.checkpoint()
            return "async-fixed"

    assert await GenServer.call(await GenServer.start(NoArg, 123), "x") == "fixed"
    assert await GenServer.call(await GenServer.start(NoArg), "x") == "fixed"
    assert await GenServer.call(await GenServer.start(AsyncNoArg, 1), "x") == "async-fixed"
    assert await GenServer.call(await GenServer.start(DefaultInit, {"k": 1}), "x") == {"k": 1}
    assert await GenServer.call(await GenServer.start(Counter), "get") == 0


async def test_async_callbacks(node: Node) -> None:
    sink = Sink()

    class AsyncServer(GenServer):
        async def init(self, arg: Any) -> list[Any]:
            await anyio.lowlevel.checkpoint()
            return [("init", arg)]

        async def handle_call(self, msg: Any, state: list[Any]) -> Any:
            await anyio.lowlevel.checkpoint()
            return list(state), state

        async def handle_cast(self, msg: Any, state: list[Any]) -> list[Any]:
            await anyio.lowlevel.checkpoint()
            return [*state, ("cast", msg)]

        async def handle_info(self, msg: Any, state: list[Any]) -> list[Any]:
            await anyio.lowlevel.checkpoint()
            return [*state, ("info", msg)]

        async def terminate(self, reason: Any, state: list[Any]) -> None:
            await anyio.lowlevel.checkpoint()
            sink.add((reason, state))

    ref = await GenServer.start(AsyncServer, "a")
    GenServer.cast(ref, 1)
    GenServer.send(ref, 2)
    expected = [("init", "a"), ("cast", 1), ("info", 2)]
    assert await GenServer.call(ref, "state") == expected
    await GenServer.stop(ref, "shutdown")
    assert await sink.wait_for(1) == [("shutdown", expected)]


async def test_init_raising_gives_init_error_with_cause(node: Node) -> None:
    class Broken(GenServer):
        def init(self, arg: Any) -> Any:
            raise ValueError(f"cannot start with {arg}")

    with pytest.raises(InitError) as info:
        await GenServer.start(Broken, 42, name="broken")
    err = info.value
    assert isinstance(err, NoexError)
    assert isinstance(err.__cause__, ValueError) and str(err.__cause__) == "cannot start with 42"
    assert isinstance(err.reason, ErrorReason) and err.reason.exc_type == "ValueError"
    assert "cannot start with 42" in str(err)
    # nothing is left behind: no process, no name
    assert node.snapshot().processes == []
    assert Registry.whereis("broken") is None


async def test_init_timeout_gives_init_error_with_cause(node: Node) -> None:
    class Sleepy(GenServer):
        async def init(self, arg: Any) -> Any:
            await anyio.sleep_forever()  # stuck: killed or timed out by the runtime

    started = anyio.current_time()
    with pytest.raises(InitError) as info:
        await GenServer.start(Sleepy, timeout=0.2)
    assert anyio.current_time() - started < 3
    assert isinstance(info.value.__cause__, TimeoutError)
    assert node.snapshot().processes == []


async def test_init_returning_stop_gives_init_error(node: Node) -> None:
    class Refuses(GenServer):
        def init(self, arg: Any) -> Any:
            return Stop("not_today", None)

    with pytest.raises(InitError) as info:
        await GenServer.start(Refuses)
    assert info.value.reason == "not_today"


async def test_start_rejects_non_behaviors_and_bad_timeouts(node: Node) -> None:
    with pytest.raises(InvalidArgumentError):
        await GenServer.start(int)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        await GenServer.start(Counter, timeout=0)


async def test_name_registration(node: Node) -> None:
    inits = Sink()

    class Named(Counter):
        def init(self, arg: Any) -> int:
            inits.add(arg)
            return 0

    ref = await GenServer.start(Named, "first", name="counter")
    assert Registry.whereis("counter") == ref
    GenServer.cast("counter", ("add", 3))
    GenServer.send("counter", ("add", 4))
    assert await GenServer.call("counter", "get") == 7
    with pytest.raises(AlreadyRegisteredError) as info:
        await GenServer.start(Named, "second", name="counter")
    assert info.value.name == "counter" and info.value.owner == ref
    assert inits.items == ["first"]  # the refused process never ran init
    assert Registry.whereis("counter") == ref
    await GenServer.stop("counter")
    assert Registry.whereis("counter") is None


async def test_call_unknown_name_or_dead_ref_is_server_not_running(node: Node) -> None:
    with pytest.raises(ServerNotRunningError):
        await GenServer.call("nobody-by-this-name", "get")
    ref = await GenServer.start(Counter)
    await GenServer.stop(ref)
    with pytest.raises(ServerNotRunningError) as info:
        await GenServer.call(ref, "get")
    assert info.value.target == ref
    with pytest.raises(ServerNotRunningError):
        await GenServer.stop(ref)
    # cast and send never raise for dead or unknown targets
    GenServer.cast(ref, ("add", 1))
    GenServer.send(ref, ("add", 1))
    GenServer.cast("nobody-by-this-name", ("add", 1))
    GenServer.send("nobody-by-this-name", ("add", 1))


async def test_call_to_itself_is_refused(node: Node) -> None:
    class SelfCaller(GenServer):
        async def handle_call(self, msg: Any, state: Any) -> Any:
            if msg == "self":
                try:
                    await GenServer.call(self.ref, "other")
                except InvalidArgumentError as exc:
                    return type(exc).__name__, state
            return "other", state

    ref = await GenServer.start(SelfCaller)
    assert await GenServer.call(ref, "self", timeout=2) == "InvalidArgumentError"


# ---------------------------------------------------------------------------- ordering


class Sequencer(GenServer):
    def init(self, arg: Any) -> list[Any]:
        return []

    def handle_call(self, msg: Any, state: list[Any]) -> Any:
        if msg == "get":
            return list(state), state
        if isinstance(msg, tuple) and msg[0] == "count":
            return sum(1 for item in state if item[0] == msg[1]), state
        return None, state

    def handle_cast(self, msg: Any, state: list[Any]) -> list[Any]:
        return [*state, msg]

    def handle_info(self, msg: Any, state: list[Any]) -> list[Any]:
        return [*state, msg]


class Sender(GenServer):
    """On cast ("go", target, tag, n): casts n numbered messages, then calls the target.

    Because a cast followed by a call from one sender is handled in order, the call must
    see all n casts. The count the call returned is the state.
    """

    def init(self, arg: Any) -> Any:
        return None

    async def handle_cast(self, msg: Any, state: Any) -> Any:
        _, target, tag, n = msg
        for i in range(n):
            if i % 2:
                GenServer.cast(target, (tag, i))
            else:
                GenServer.send(target, (tag, i))
        return await GenServer.call(target, ("count", tag))

    def handle_call(self, msg: Any, state: Any) -> Any:
        return state, state


async def test_cast_then_call_is_handled_in_order(node: Node) -> None:
    ref = await GenServer.start(Counter)
    for i in range(50):
        GenServer.cast(ref, ("add", 1))
        assert await GenServer.call(ref, "get") == i + 1

    seq = await GenServer.start(Sequencer)
    GenServer.cast(seq, ("x", 0))
    assert await GenServer.call(seq, "get") == [("x", 0)]


async def test_per_sender_fifo_from_a_task(node: Node) -> None:
    seq = await GenServer.start(Sequencer)
    for i in range(500):
        if i % 3 == 0:
            GenServer.send(seq, ("t", i))
        else:
            GenServer.cast(seq, ("t", i))
    assert await GenServer.call(seq, "get") == [("t", i) for i in range(500)]


async def test_per_sender_fifo_from_several_processes(node: Node) -> None:
    seq = await GenServer.start(Sequencer)
    senders = [await GenServer.start(Sender) for _ in range(5)]
    for tag, sender in enumerate(senders):
        GenServer.cast(sender, ("go", seq, tag, 200))
    # each sender's own call saw all of its 200 casts
    for sender in senders:
        with anyio.fail_after(5):
            assert await GenServer.call(sender, "result") == 200
    received = await GenServer.call(seq, "get")
    assert len(received) == 1000
    for tag in range(5):
        assert [i for t, i in received if t == tag] == list(range(200))


# ---------------------------------------------------------------------------- timeouts and stop


class Slow(GenServer):
    async def handle_call(self, msg: Any, state: Any) -> Any:
        if isinstance(msg, tuple) and msg[0] == "sleep":
            await anyio.sleep(msg[1])
            return "slept", state
        return "pong", state


async def test_call_timeout(node: Node) -> None:
    ref = await GenServer.start(Slow)
    started = anyio.current_time()
    with pytest.raises(CallTimeoutError) as info:
        await GenServer.call(ref, ("sleep", 1.0), timeout=0.1)
    assert anyio.current_time() - started < 0.9
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, NoexError)
    assert info.value.timeout == 0.1
    # the server lives on; the late reply to the timed-out call is discarded
    assert await GenServer.call(ref, "ping", timeout=5) == "pong"


class Gatekeeper(GenServer):
    """call "block" waits for the gate; terminate records and may take `term_delay` seconds."""

    def init(self, arg: dict[str, Any]) -> dict[str, Any]:
        return arg

    async def handle_call(self, msg: Any, st: dict[str, Any]) -> Any:
        st["handled"].append(msg)
        if msg == "block":
            st["entered"].set()
            await st["gate"].wait()
        return msg, st

    def handle_cast(self, msg: Any, st: dict[str, Any]) -> Any:
        st["handled"].append(msg)
        return st

    async def terminate(self, reason: Any, st: dict[str, Any]) -> None:
        st["terminated"].add(reason)
        if st["term_delay"]:
            await anyio.sleep(st["term_delay"])


def gatekeeper_state(term_delay: float = 0.0) -> dict[str, Any]:
    return {"gate": anyio.Event(), "entered": anyio.Event(), "handled": [], "terminated": Sink(),
            "term_delay": term_delay}


async def _queued_calls_behind_stop(term_delay: float) -> tuple[dict[str, Any], list[Any], list[Any]]:
    st = gatekeeper_state(term_delay)
    ref = await GenServer.start(Gatekeeper, st)
    blocked: list[Any] = []
    queued: list[Any] = []

    async def blocked_call() -> None:
        blocked.append(await GenServer.call(ref, "block", timeout=5))

    async def queued_call(i: int) -> None:
        started = anyio.current_time()
        try:
            await GenServer.call(ref, i, timeout=3)
        except Exception as exc:
            queued.append((exc, anyio.current_time() - started))
        else:
            queued.append(("answered", i))

    async with anyio.create_task_group() as tg:
        tg.start_soon(blocked_call)
        with anyio.fail_after(2):
            await st["entered"].wait()
        GenServer.cast(ref, "cast-before-stop")
        tg.start_soon(GenServer.stop, ref)
        await anyio.wait_all_tasks_blocked()  # the stop request is queued behind the cast
        for i in range(3):
            tg.start_soon(queued_call, i)
        await anyio.wait_all_tasks_blocked()  # the calls are queued behind the stop
        st["gate"].set()
    assert blocked == ["block"]
    return st, queued, blocked


async def test_calls_queued_behind_stop_fail_at_once(node: Node) -> None:
    st, queued, _ = await _queued_calls_behind_stop(term_delay=0.0)
    # what was queued before the stop was handled, the calls behind it were not
    assert st["handled"] == ["block", "cast-before-stop"]
    assert st["terminated"].items == ["normal"]
    assert len(queued) == 3
    for exc, elapsed in queued:
        assert isinstance(exc, ServerNotRunningError)
        assert elapsed < 1.0  # their timeout was 3 s


async def test_calls_queued_behind_stop_do_not_wait_for_a_slow_terminate(node: Node) -> None:
    started = anyio.current_time()
    st, queued, _ = await _queued_calls_behind_stop(term_delay=1.5)
    assert anyio.current_time() - started >= 1.5  # GenServer.stop waited for terminate
    assert st["handled"] == ["block", "cast-before-stop"]
    assert len(queued) == 3
    for exc, elapsed in queued:
        assert isinstance(exc, ServerNotRunningError)
        assert elapsed < 1.0  # failed while terminate was still running (and before their 3 s timeout)


async def test_call_arriving_while_terminate_runs_fails_at_once(node: Node) -> None:
    st = gatekeeper_state(term_delay=1.5)
    ref = await GenServer.start(Gatekeeper, st)
    async with anyio.create_task_group() as tg:
        tg.start_soon(GenServer.stop, ref)
        await st["terminated"].wait_for(1)
        started = anyio.current_time()
        with pytest.raises(ServerNotRunningError):
            await GenServer.call(ref, "late", timeout=3)
        assert anyio.current_time() - started < 1.0
    assert st["handled"] == []


async def test_call_in_progress_when_the_server_is_killed_fails_at_once(node: Node) -> None:
    st = gatekeeper_state()
    ref = await GenServer.start(Gatekeeper, st)
    pawn = await GenServer.start(Pawn)
    await RemoteLink.link(ref, pawn)
    async with anyio.create_task_group() as tg:

        async def crash_pawn_when_blocked() -> None:
            await st["entered"].wait()
            GenServer.cast(pawn, "crash")

        tg.start_soon(crash_pawn_when_blocked)
        started = anyio.current_time()
        with pytest.raises(ServerNotRunningError) as info:
            await GenServer.call(ref, "block", timeout=3)
        assert anyio.current_time() - started < 1.0
    assert isinstance(info.value.reason, ErrorReason)


# ---------------------------------------------------------------------------- let it crash


class Fragile(GenServer):
    def init(self, sink: Sink) -> Sink:
        return sink

    def handle_call(self, msg: Any, sink: Sink) -> Any:
        if msg == "boom":
            raise ValueError("bad input 42")
        if msg == "garbage":
            return "not a (reply, state) tuple"
        return "ok", sink

    def handle_cast(self, msg: Any, sink: Sink) -> Sink:
        raise RuntimeError("cast went wrong")

    def handle_info(self, msg: Any, sink: Sink) -> Sink:
        raise RuntimeError("info went wrong")

    def terminate(self, reason: Any, sink: Sink) -> None:
        sink.add(reason)


async def test_exception_in_handle_call_crashes_with_call_error(node: Node) -> None:
    ref = await GenServer.start(Fragile, Sink())
    down = await watch(ref)
    with pytest.raises(CallError) as info:
        await GenServer.call(ref, "boom")
    err = info.value
    assert err.exc_type == "ValueError"
    assert err.message == "bad input 42"
    assert "Traceback" in err.remote_traceback and "handle_call" in err.remote_traceback
    assert "ValueError: bad input 42" in err.remote_traceback
    assert isinstance(err.__cause__, ValueError) and str(err.__cause__) == "bad input 42"
    reason = await exit_reason(down)
    assert isinstance(reason, ErrorReason)
    assert (reason.exc_type, reason.message) == ("ValueError", "bad input 42")
    assert "handle_call" in reason.traceback
    assert not is_normal_exit(reason)
    with pytest.raises(ServerNotRunningError):
        await GenServer.call(ref, "ping")


@pytest.mark.parametrize("how", ["cast", "send"])
async def test_exception_in_handle_cast_or_info_crashes(node: Node, how: str) -> None:
    ref = await GenServer.start(Fragile, Sink())
    down = await watch(ref)
    if how == "cast":
        GenServer.cast(ref, "anything")
    else:
        GenServer.send(ref, "anything")
    reason = await exit_reason(down)
    assert isinstance(reason, ErrorReason) and reason.exc_type == "RuntimeError"
    assert reason.message == ("cast went wrong" if how == "cast" else "info went wrong")
    with pytest.raises(ServerNotRunningError):
        await GenServer.call(ref, "ping")


async def test_bad_return_value_crashes_the_server(node: Node) -> None:
    ref = await GenServer.start(Fragile, Sink())
    down = await watch(ref)
    with pytest.raises(CallError) as info:
        await GenServer.call(ref, "garbage")
    assert info.value.exc_type == "BadReturnError"
    assert (await exit_reason(down)).exc_type == "BadReturnError"


async def test_terminate_is_called_on_orderly_exits(node: Node) -> None:
    sink = Sink()
    ref = await GenServer.start(Recorded, sink)
    GenServer.cast(ref, 5)
    await GenServer.stop(ref)
    ref = await GenServer.start(Recorded, sink)
    await GenServer.stop(ref, "shutdown")
    ref = await GenServer.start(Recorded, sink)
    GenServer.cast(ref, ("stop", "done"))
    # terminate gets the reason and the latest state
    assert await sink.wait_for(3) == [("normal", 5), ("shutdown", 0), ("done", 10)]


async def test_crash_in_terminate_replaces_the_exit_reason(node: Node) -> None:
    class BadTerminate(Pawn):
        def terminate(self, reason: Any, state: Any) -> None:
            raise LookupError("terminate failed")

    ref = await GenServer.start(BadTerminate)
    down = await watch(ref)
    await GenServer.stop(ref)
    reason = await exit_reason(down)
    assert isinstance(reason, ErrorReason) and reason.exc_type == "LookupError"


# ---------------------------------------------------------------------------- NoReply, reply, Stop


class Deferred(GenServer):
    """call "wait" is answered later: cast ("release", value) replies to every waiting caller."""

    def init(self) -> list[From]:  # type: ignore[override]
        return []

    def handle_call(self, msg: Any, waiting: list[From]) -> Any:
        if msg == "wait":
            return NoReply([*waiting, self.caller])
        if msg == "waiting":
            return len(waiting), waiting
        if msg == "who":
            return self.caller.caller, waiting
        return None, waiting

    def handle_cast(self, msg: Any, waiting: list[From]) -> Any:
        if msg[0] == "release":
            for from_ in waiting:
                GenServer.reply(from_, msg[1])
            return []
        if msg[0] == "stop":
            return Stop("normal", waiting)
        return waiting


class Proxy(GenServer):
    async def handle_call(self, msg: Any, state: Any) -> Any:
        return await GenServer.call(msg[0], msg[1]), state


async def test_noreply_and_reply_later(node: Node) -> None:
    ref = await GenServer.start(Deferred)
    answers: list[Any] = []

    async def wait_call() -> None:
        answers.append(await GenServer.call(ref, "wait", timeout=5))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(wait_call)
        await anyio.wait_all_tasks_blocked()
        assert await GenServer.call(ref, "waiting") == 3
        assert answers == []
        GenServer.cast(ref, ("release", "later"))
    assert answers == ["later"] * 3
    # From.caller is the calling process (None for a plain task)
    assert await GenServer.call(ref, "who") is None
    proxy = await GenServer.start(Proxy)
    assert await GenServer.call(proxy, (ref, "who")) == proxy


async def test_reply_needs_a_from(node: Node) -> None:
    with pytest.raises(InvalidArgumentError):
        GenServer.reply("not a From", 1)  # type: ignore[arg-type]


async def test_deferred_caller_fails_at_once_when_the_server_exits(node: Node) -> None:
    ref = await GenServer.start(Deferred)
    async with anyio.create_task_group() as tg:

        async def stop_when_waiting() -> None:
            await anyio.wait_all_tasks_blocked()
            GenServer.cast(ref, ("stop",))

        tg.start_soon(stop_when_waiting)
        started = anyio.current_time()
        with pytest.raises(ServerNotRunningError):
            await GenServer.call(ref, "wait", timeout=3)
        assert anyio.current_time() - started < 1.0


async def test_stop_with_reply(node: Node) -> None:
    sink = Sink()
    ref = await GenServer.start(Recorded, sink)
    down = await watch(ref)
    assert await GenServer.call(ref, "stop_with_reply") == "bye"
    assert await exit_reason(down) == "normal"
    assert sink.items == [("normal", 1)]


async def test_stop_without_reply_fails_the_caller_at_once(node: Node) -> None:
    sink = Sink()
    ref = await GenServer.start(Recorded, sink)
    started = anyio.current_time()
    with pytest.raises(ServerNotRunningError):
        await GenServer.call(ref, "stop_without_reply", timeout=3)
    assert anyio.current_time() - started < 1.0
    assert await sink.wait_for(1) == [("normal", 1)]


async def test_terminate_may_answer_a_call_that_returned_stop_without_reply(node: Node) -> None:
    class ReplyInTerminate(GenServer):
        def handle_call(self, msg: Any, state: Any) -> Any:
            return Stop("normal", self.caller)

        def terminate(self, reason: Any, from_: Any) -> None:
            GenServer.reply(from_, ("answered in terminate", reason))

    ref = await GenServer.start(ReplyInTerminate)
    assert await GenServer.call(ref, "quit", timeout=3) == ("answered in terminate", "normal")


# ---------------------------------------------------------------------------- timers


async def test_send_after_delivers_to_handle_info(node: Node) -> None:
    sink = Sink()
    ref = await GenServer.start(Collector, sink)
    started = anyio.current_time()
    timer = GenServer.send_after(ref, "tick", 0.05)
    assert await sink.wait_for(1) == ["tick"]
    assert anyio.current_time() - started >= 0.04
    assert GenServer.cancel_timer(timer) is False  # already fired


async def test_cancel_timer(node: Node) -> None:
    sink = Sink()
    ref = await GenServer.start(Collector, sink)
    cancelled = GenServer.send_after(ref, "cancelled", 0.1)
    GenServer.send_after(ref, "sentinel", 0.3)
    assert GenServer.cancel_timer(cancelled) is True
    assert GenServer.cancel_timer(cancelled) is False
    # the sentinel fires after the cancelled one would have: nothing else arrived
    assert await sink.wait_for(1) == ["sentinel"]
    assert await GenServer.call(ref, "barrier") == ["sentinel"]


async def test_send_after_by_name_and_periodic_self_timer(node: Node) -> None:
    sink = Sink()

    class Periodic(GenServer):
        def init(self, arg: Any) -> int:
            GenServer.send_after(self.ref, "tick", 0.01)
            return 0

        def handle_info(self, msg: Any, n: int) -> Any:
            sink.add((msg, n))
            if n == 2:
                return Stop("normal", n)
            GenServer.send_after(self.ref, "tick", 0.01)
            return n + 1

    ref = await GenServer.start(Periodic, name="periodic")
    down = await watch(ref)
    assert await exit_reason(down) == "normal"
    assert sink.items == [("tick", 0), ("tick", 1), ("tick", 2)]

    collector = await GenServer.start(Collector, Sink(), name="collector")
    named_sink = Sink()
    await GenServer.stop(collector)
    collector = await GenServer.start(Collector, named_sink, name="collector")
    GenServer.send_after("collector", "by-name", 0.01)
    assert await named_sink.wait_for(1) == ["by-name"]
    with pytest.raises(InvalidArgumentError):
        GenServer.send_after(collector, "x", -1)


@pytest.mark.parametrize("control", [Stop, NoReply])
def test_stop_and_noreply_cannot_be_subclassed(control: type) -> None:
    # the process loop recognises them by exact type (one identity test per message)
    with pytest.raises(TypeError, match="cannot be subclassed"):
        type("Mine", (control,), {})
