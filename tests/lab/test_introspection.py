"""The system requests behind %noex state / trace / ps / events and %%noex behavior, on
in-process clusters over real TCP (asyncio and trio)."""

from __future__ import annotations

import math
import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from noex_lab import (
    BehaviorRegistry,
    GenServer,
    NoexError,
    NotRegisteredError,
    RemoteSpawn,
    ServerNotRunningError,
    Sys,
)
from noex_lab.distribution.code_loading import CodeLoadingError, load_behavior_source
from noex_lab.distribution.introspection import (
    MAX_TRACE_SECONDS,
    MAX_TRACES_PER_PEER,
    TraceEvent,
    get_state,
    trace,
)
from noex_lab.errors import InvalidArgumentError, TooManyTracesError
from tests.helpers.cluster import start_cluster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

SECRET = "introspection-secret"

COUNTER_SOURCE = '''
from dataclasses import dataclass
from noex_lab import GenServer

@dataclass
class Point:
    x: int

class ShippedCounter(GenServer):
    def init(self, arg):
        return arg or 0
    def handle_call(self, msg, state):
        if msg == "version":
            return VERSION, state
        return state, state
    def handle_cast(self, msg, state):
        return state + 1

VERSION = 1
'''


class Box(GenServer):
    def init(self, arg: Any) -> Any:
        return arg

    def handle_call(self, msg: Any, state: Any) -> Any:
        if msg == "get":
            return state, state
        return msg, state

    def handle_cast(self, msg: Any, state: Any) -> Any:
        if isinstance(msg, tuple) and msg[0] == "set":
            return msg[1]
        if msg == "stop":
            raise RuntimeError("asked to crash")
        if msg == "lock":
            return threading.Lock()  # a state that is no wire value
        return state

    async def handle_info(self, msg: Any, state: Any) -> Any:
        if isinstance(msg, tuple) and msg[0] == "nap":
            await anyio.sleep(msg[1])  # busy in a long callback
        return state


@pytest.fixture(autouse=True)
async def cleanup(cleanup: None) -> AsyncIterator[None]:
    """The shared `cleanup` (nodes killed), and the behaviors this module registers."""
    try:
        yield
    finally:
        for name in ("shipped_counter", "box_lab"):
            BehaviorRegistry.unregister(name)


async def test_get_state_local_remote_and_by_name() -> None:
    a, b = await start_cluster(2, cluster_secret=SECRET)
    BehaviorRegistry.register("box_lab", Box)
    with a.as_default():
        local = await GenServer.start(Box, {"n": 1}, name="here")
        remote = await RemoteSpawn.spawn("box_lab", b.id, arg=[1, (2, 3)], name="there", registration="local")
        st = await get_state("here")
        assert st.ref == local and st.state == {"n": 1} and st.has_state and st.behavior == "Box"
        st = await get_state(remote)
        assert st.state == [1, (2, 3)] and st.state_repr == "[1, (2, 3)]" and st.has_state
        assert st.status == "waiting" and st.ref == remote
        st = await get_state("there", on=b.id)
        assert st.ref == remote
        # a state that is no wire value comes back as its repr only
        GenServer.cast(remote, "lock")
        st = await get_state(remote)
        assert not st.has_state and st.state is None and "lock" in st.state_repr.lower()
        with pytest.raises(NotRegisteredError):
            await get_state("nobody")
        with pytest.raises(NoexError):
            await get_state("nobody", on=b.id)
        await GenServer.stop(local)
        with pytest.raises(ServerNotRunningError):
            await get_state(local)


async def test_get_state_sees_messages_queued_before_it() -> None:
    a, b = await start_cluster(2, cluster_secret=SECRET)
    BehaviorRegistry.register("box_lab", Box)
    with a.as_default():
        local = await GenServer.start(Box, 0)
        remote = await RemoteSpawn.spawn("box_lab", b.id, arg=0)
        for ref in (local, remote):
            for i in range(1, 51):
                GenServer.cast(ref, ("set", i))
            assert (await get_state(ref)).state == 50  # like a message queued behind the casts
        # a process stuck in a long callback answers after a bounded wait, with what it has
        GenServer.send(remote, ("nap", 30))
        GenServer.cast(remote, ("set", 99))
        started = anyio.current_time()
        st = await get_state(remote)
        assert st.state == 50 and st.queue_len == 1 and st.status == "running"
        assert anyio.current_time() - started < 3


async def test_trace_remote_sees_messages_and_states_then_ends() -> None:
    a, b = await start_cluster(2, cluster_secret=SECRET)
    BehaviorRegistry.register("box_lab", Box)
    with a.as_default():
        ref = await RemoteSpawn.spawn("box_lab", b.id, arg=0)
        events: list[TraceEvent] = []
        ended: list[str] = []
        handle = await trace(ref, events.append, ended.append, seconds=30)
        assert handle.ref == ref and handle.initial_state == "0"
        for i in range(1, 4):
            GenServer.cast(ref, ("set", i))
        assert await GenServer.call(ref, "get") == 3
        await wait_until(lambda: len(events) == 4, 5, "4 trace events")
        assert [(e.kind, e.state) for e in events] == [("cast", "1"), ("cast", "2"), ("cast", "3"), ("call", "3")]
        assert events[0].message == "('set', 1)"
        handle.stop()
        await wait_until(lambda: ended, 5, "the end of the trace")
        assert ended == ["stopped"] and handle.ended
        GenServer.cast(ref, ("set", 9))
        assert await GenServer.call(ref, "get") == 9  # untraced now, and still running
        assert len(events) == 4

        # a trace ends when its time is up, and when the process exits
        ended.clear()
        await trace(ref, events.append, ended.append, seconds=0.2)
        await wait_until(lambda: ended, 5, "the trace to time out")
        assert ended == ["time is up"]
        ended.clear()
        await trace(ref, events.append, ended.append, seconds=30)
        GenServer.cast(ref, "stop")
        await wait_until(lambda: ended, 5, "the trace to end with the process")
        assert ended[0].startswith("the process exited")


async def test_trace_local_process() -> None:
    (a,) = await start_cluster(1)
    with a.as_default():
        ref = await GenServer.start(Box, "x", name="boxed")
        events: list[TraceEvent] = []
        ended: list[str] = []
        await trace("boxed", events.append, ended.append, seconds=30, max_events=2)
        GenServer.cast(ref, ("set", "y"))
        GenServer.cast(ref, ("set", "z"))
        GenServer.cast(ref, ("set", "w"))
        assert await GenServer.call(ref, "get") == "w"
        assert [e.state for e in events] == ["'y'", "'z'"]
        assert ended == ["stopped after 2 messages"]


async def test_process_list_and_events_of_a_peer() -> None:
    a, b = await start_cluster(2, cluster_secret=SECRET)
    BehaviorRegistry.register("box_lab", Box)
    with a.as_default():
        ref = await RemoteSpawn.spawn("box_lab", b.id, arg=1, name="listed", registration="local")
        rows, names = await Sys.processes(b.id)
        assert names == {"listed": ref}
        assert [(r.ref, r.name, r.behavior) for r in rows] == [(ref, "listed", "Box")]
        events = await Sys.events(10, b.id)
        assert any(e.kind == "process_started" and "listed" in e.text for e in events)
        own_rows, _ = await Sys.processes(None)
        assert own_rows == []


async def test_code_loading_needs_allow_code_and_replaces() -> None:
    a, b = await start_cluster(2, cluster_secret=SECRET)
    c = await __import__("noex_lab").Cluster.start(
        "coder", port=0, seeds=[str(a.id)], cluster_secret=SECRET, allow_code=True, heartbeat_interval_ms=200,
    )
    await wait_until(lambda: len(a.get_nodes()) == 2, 10, "the code node to join")
    router = a.router
    assert router is not None
    args = ["shipped_counter", COUNTER_SOURCE, "ShippedCounter"]
    with pytest.raises(NoexError, match="does not accept code"):
        await router.rpc(b.id, "code.load_behavior", args, 5.0)  # type: ignore[attr-defined]
    # the class name, then how many running processes were upgraded, failed to, or are busy (none yet)
    assert await router.rpc(c.id, "code.load_behavior", args, 5.0) == ["ShippedCounter", 0, 0, 0, []]  # type: ignore[attr-defined]
    with a.as_default():
        ref = await RemoteSpawn.spawn("shipped_counter", c.id, arg=5)
        assert await GenServer.call(ref, "version") == 1
        v2 = ["shipped_counter", COUNTER_SOURCE.replace("VERSION = 1", "VERSION = 2"), "ShippedCounter"]
        loaded = await router.rpc(c.id, "code.load_behavior", v2, 5.0)  # type: ignore[attr-defined]
        assert loaded == ["ShippedCounter", 1, 0, 0, []]
        ref2 = await RemoteSpawn.spawn("shipped_counter", c.id)
        assert await GenServer.call(ref2, "version") == 2
        assert await GenServer.call(ref, "version") == 2  # a running process is upgraded (issue 17: hot upgrade)
        bad = ["shipped_counter", "raise ValueError('nope')", "ShippedCounter"]
        with pytest.raises(NoexError, match="failed here: ValueError: nope"):
            await router.rpc(c.id, "code.load_behavior", bad, 5.0)  # type: ignore[attr-defined]
        ref3 = await RemoteSpawn.spawn("shipped_counter", c.id)  # the failed load replaced nothing
        assert await GenServer.call(ref3, "version") == 2
    assert any(e.kind == "behavior_loaded" for e in c.events.recent(50))


async def test_load_behavior_source_errors() -> None:
    with pytest.raises(CodeLoadingError, match="defines no GenServer subclass 'Missing'"):
        load_behavior_source("x", "A = 1", "Missing")
    with pytest.raises(CodeLoadingError, match="SyntaxError"):
        load_behavior_source("x", "def (", "A")
    cls = load_behavior_source("loaded-1", COUNTER_SOURCE, "ShippedCounter")
    assert cls.__module__ == "noex_lab_shipped.loaded_1"
    await anyio.lowlevel.checkpoint()


@pytest.mark.parametrize("seconds", [math.inf, math.nan, -1, 0, MAX_TRACE_SECONDS + 1, "10"])
async def test_a_trace_needs_a_finite_bounded_duration(seconds: Any) -> None:
    a, b = await start_cluster(2, cluster_secret=SECRET)
    BehaviorRegistry.register("box_lab", Box)
    with a.as_default():
        local = await GenServer.start(Box, 0)
        remote = await RemoteSpawn.spawn("box_lab", b.id, arg=0)
        for ref in (local, remote):
            with pytest.raises(InvalidArgumentError, match="seconds must be"):
                await trace(ref, print, print, seconds=seconds)
            with pytest.raises(InvalidArgumentError, match="max_events must be a positive int"):
                await trace(ref, print, print, seconds=1, max_events=0)
        # a peer that skips the caller's checks is refused by the target node
        router: Any = a.router
        with pytest.raises(InvalidArgumentError, match="seconds must be"):
            await router.rpc(b.id, "inspect.trace_start", [1, remote.id, remote.creation, None, seconds, 10])
        assert b.distribution.introspection.serving == {}


async def test_traces_per_peer_are_bounded() -> None:
    a, b = await start_cluster(2, cluster_secret=SECRET)
    BehaviorRegistry.register("box_lab", Box)
    with a.as_default():
        ref = await RemoteSpawn.spawn("box_lab", b.id, arg=0)
        events: list[TraceEvent] = []
        ended: list[str] = []
        handles = [await trace(ref, events.append, ended.append, seconds=30) for _ in range(MAX_TRACES_PER_PEER)]
        with pytest.raises(TooManyTracesError) as caught:  # typed, across the wire
            await trace(ref, events.append, ended.append, seconds=30)
        assert f"already runs {MAX_TRACES_PER_PEER} traces" in str(caught.value)
        # a peer re-using a running trace's id does not get a second, uncounted one
        router: Any = a.router
        trace_id = max(a.distribution.introspection.watching)
        with pytest.raises(InvalidArgumentError, match="already running"):
            await router.rpc(b.id, "inspect.trace_start", [trace_id, ref.id, ref.creation, None, 30, 10])
        GenServer.cast(ref, ("set", 1))
        assert await GenServer.call(ref, "get") == 1
        await wait_until(lambda: len(events) == 2 * MAX_TRACES_PER_PEER, 5, "one event per message per trace")
        handles[0].stop()
        await wait_until(lambda: ended == ["stopped"], 5, "the first trace to end")
        await trace(ref, events.append, ended.append, seconds=30)  # room for one again
        assert len(b.distribution.introspection.serving) == MAX_TRACES_PER_PEER
