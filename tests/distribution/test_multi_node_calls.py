"""Calling many nodes at once: `GenServer.multi_call` / `abcast`, `(name, node_id)` targets,
and remote functions (`@remote_function`, `Rpc.call`, `Rpc.multicall`) with typed errors."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from noex_lab import (
    CallError,
    CallTimeoutError,
    Down,
    Exit,
    GenServer,
    NodeId,
    NodeNotReachableError,
    RemoteLink,
    RemoteMonitor,
    Rpc,
    ServerNotRunningError,
    remote_function,
)
from noex_lab.errors import (
    InvalidArgumentError,
    RemoteFunctionError,
    RemoteFunctionNotFoundError,
)
from tests.distribution.behaviors_for_tests import Echo, SeqSink, Watcher
from tests.helpers.cluster import start_cluster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

GHOST = NodeId.parse("ghost@127.0.0.1:9")  # never connected
MARGIN_S = 0.05  # every timeout is honoured within this

cancelled_on_target: list[str] = []
finished_on_target: list[str] = []


@remote_function(name="tests.add")
def add(a: int, b: int) -> int:
    return a + b


@remote_function
async def where_am_i() -> str:
    from noex_lab import Cluster

    return Cluster.get_local_node_id().name


@remote_function(name="tests.fail")
def fail(why: str) -> None:
    raise ValueError(why)


@remote_function(name="tests.slow")
async def slow(seconds: float) -> str:
    try:
        with anyio.move_on_after(seconds):  # a function that works for `seconds` (unless cancelled)
            await anyio.Event().wait()
    except BaseException:
        cancelled_on_target.append("cancelled")
        raise
    finished_on_target.append("finished")
    return "done"


def not_registered() -> str:
    return "never runs by name"


async def _three_with_echo_on(names: str) -> tuple[list[Any], dict[str, Any]]:
    """Nodes n0, n1, n2; an Echo registered locally as "svc" on each node whose index is in `names`."""
    nodes = await start_cluster(3)
    refs = {}
    for i, n in enumerate(nodes):
        if str(i) in names:
            with n.as_default():
                refs[str(i)] = await GenServer.start(Echo, name="svc")
    return nodes, refs


async def test_multi_call_gives_each_nodes_reply_and_says_why_the_others_gave_none() -> None:
    (a, b, c), refs = await _three_with_echo_on("01")
    with a.as_default():
        replies, bad = await GenServer.multi_call("svc", "ping", timeout=1.0)
        assert replies == {a.id: "ping", b.id: "ping"}
        assert list(bad) == [c.id] and isinstance(bad[c.id], ServerNotRunningError)

        result = await GenServer.multi_call("svc", "crash", nodes=[str(b.id), GHOST, a.id])
        assert result.replies == {}
        assert list(result.bad_nodes) == [b.id, GHOST, a.id]  # in the order given
        assert isinstance(result.bad_nodes[b.id], CallError) and isinstance(result.bad_nodes[a.id], CallError)
        assert isinstance(result.bad_nodes[GHOST], NodeNotReachableError)
        with pytest.raises(InvalidArgumentError):
            await GenServer.multi_call("svc", "x", nodes=str(b.id))  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError):
            await GenServer.multi_call("", "x")


async def test_multi_call_returns_within_its_timeout_while_one_node_is_slow() -> None:
    (a, b, c), refs = await _three_with_echo_on("012")
    with a.as_default():
        started = time.monotonic()
        replies, bad = await GenServer.multi_call("svc", ("slow", 5.0), nodes=[b.id], timeout=0.3)
        elapsed = time.monotonic() - started
        assert replies == {} and isinstance(bad[b.id], CallTimeoutError)
        assert 0.3 <= elapsed <= 0.3 + MARGIN_S, elapsed
    with c.as_default():  # b's server is still busy with the slow call; a and c answer
        replies, bad = await GenServer.multi_call("svc", "ping", timeout=0.3)
        assert replies == {a.id: "ping", c.id: "ping"} and list(bad) == [b.id]


async def test_abcast_reaches_the_name_on_every_node_that_has_it() -> None:
    (a, b, c), refs = await _three_with_echo_on("02")
    with b.as_default():
        GenServer.abcast("svc", "inc")
        GenServer.abcast("svc", "inc", nodes=[a.id, GHOST])  # a node not connected is skipped
        GenServer.abcast("nobody", "inc")
    with a.as_default():
        await wait_until(lambda: a.local_process(refs["0"]).state["count"] == 2, 2.0, "two casts on a")
        assert await GenServer.call(refs["0"], "get") == 2
        assert await GenServer.call(refs["2"], "get") == 1


async def test_name_node_targets_for_call_cast_send_and_stop() -> None:
    (a, b, c), refs = await _three_with_echo_on("1")
    with a.as_default():
        assert await GenServer.call(("svc", b.id), "hello") == "hello"
        assert await GenServer.call(("svc", str(b.id)), "hello") == "hello"  # the node id as text
        GenServer.cast(("svc", b.id), "inc")
        GenServer.cast(("nobody", b.id), "inc")  # dropped, as a cast to a dead ref
        GenServer.send(("svc", b.id), "an info message")
        assert await GenServer.call(("svc", b.id), "get") == 1
        with pytest.raises(ServerNotRunningError) as err:
            await GenServer.call(("nobody", b.id), "x")
        assert err.value.target == ("nobody", b.id)
        with pytest.raises(NodeNotReachableError):
            await GenServer.call(("svc", GHOST), "x")
        with pytest.raises(ServerNotRunningError):
            await GenServer.call(("svc", a.id), "x")  # this node's Registry has no "svc"
        for bad in (("svc",), ("", b.id), ("svc", "not a node id"), ("svc", 42)):
            with pytest.raises(InvalidArgumentError):
                await GenServer.call(bad, "x")  # type: ignore[arg-type]
        with pytest.raises(ServerNotRunningError):
            await GenServer.stop(("nobody", b.id))
        await GenServer.stop(("svc", b.id))
    assert b.local_process(refs["1"]) is None or not b.local_process(refs["1"]).alive
    with b.as_default():  # (name, own node) is the local Registry
        ref = await GenServer.start(Echo, name="svc")
        assert await GenServer.call(("svc", b.id), "local") == "local"
        await GenServer.stop(("svc", b.id))
        assert b.local_process(ref) is None


async def test_casts_keep_their_order_whichever_way_they_address_the_process() -> None:
    a, b = await start_cluster(2)
    with b.as_default():
        sink = await GenServer.start(SeqSink, name="sink")
    with a.as_default():
        for i in range(300):
            GenServer.cast(("sink", b.id) if i % 3 else sink, ("seq", "a", i))
        stats = await GenServer.call(("sink", b.id), "stats")
    assert stats["count"] == 300 and stats["out_of_order"] == 0


async def test_name_node_targets_for_monitor_and_link() -> None:
    (a, b, c), refs = await _three_with_echo_on("1")
    with a.as_default():
        watcher = await GenServer.start(Watcher)
        downs: list[Down] = []
        await RemoteMonitor.monitor(("svc", b.id), on_down=downs.append)
        await RemoteMonitor.monitor(("nobody", b.id), on_down=downs.append)
        await RemoteMonitor.monitor(("svc", GHOST), on_down=downs.append)
        dropped = await RemoteMonitor.monitor(("svc", b.id), on_down=downs.append)
        await RemoteMonitor.demonitor(dropped)  # before the name was even resolved
        await wait_until(lambda: len(downs) == 2, 2.0, "noproc and noconnection")
        assert {(d.ref, d.reason) for d in downs} == {(("nobody", b.id), "noproc"), (("svc", GHOST), "noconnection")}
        await RemoteLink.link(watcher, ("svc", b.id))
        await RemoteLink.link(("nobody", b.id), watcher)
        assert await GenServer.call(("svc", b.id), "ping") == "ping"  # after the link request, in order
        await wait_until(lambda: watcher in b.local_process(refs["1"]).links, 2.0, "the link on b")
        with b.as_default():
            b.local_process(refs["1"]).kill("boom")
        await wait_until(lambda: len(downs) == 3, 2.0, "the monitor of ('svc', b)")
        assert (downs[2].ref, downs[2].reason) == (refs["1"], "boom")
        log = await wait_until(lambda: (lambda m: m if len(m) == 2 else None)(_exits(a, watcher)), 2.0, "exits")
        assert {(e.from_, e.reason) for e in log} == {(("nobody", b.id), "noproc"), (refs["1"], "boom")}
        # a round trip to b: a Down of the demonitored monitor would have come before its answer
        assert await Rpc.call(b.id, "tests.add", 0, 0) == 0
        assert len(downs) == 3
        with pytest.raises(InvalidArgumentError):
            await RemoteLink.link(("svc", b.id), ("svc", c.id))


def _exits(node: Any, ref: Any) -> list[Exit]:
    return [m for m in node.local_process(ref).state if isinstance(m, Exit)]


async def test_rpc_call_runs_registered_functions_on_the_target_node() -> None:
    a, b, c = await start_cluster(3)
    with a.as_default():
        assert await Rpc.call(b.id, "tests.add", 2, 3) == 5
        assert await Rpc.call(str(c.id), "where_am_i") == c.id.name  # runs there, as that node
        assert await Rpc.call(a.id, "where_am_i") == a.id.name  # this node too, the same way
        replies, bad = await Rpc.multicall(None, "where_am_i")
        assert replies == {a.id: "n0", b.id: "n1", c.id: "n2"} and bad == {}
        replies, bad = await Rpc.multicall([b.id, GHOST], "tests.add", 1, 1, timeout=1.0)
        assert replies == {b.id: 2} and isinstance(bad[GHOST], NodeNotReachableError)


async def test_rpc_errors_are_typed_and_survive_the_wire() -> None:
    a, b = await start_cluster(2)
    with a.as_default():
        with pytest.raises(RemoteFunctionError) as err:
            await Rpc.call(b.id, "tests.fail", "on purpose")
        assert (err.value.name, err.value.node, err.value.exc_type, err.value.message) == (
            "tests.fail", b.id, "ValueError", "on purpose")
        assert "def fail" in err.value.remote_traceback or "raise ValueError" in err.value.remote_traceback
        # only registered functions run: nothing is imported or looked up by its Python name
        for name in ("not_registered", "os.system", "tests.distribution.test_multi_node_calls.not_registered"):
            with pytest.raises(RemoteFunctionNotFoundError) as missing:
                await Rpc.call(b.id, name)
            assert missing.value.name == name and missing.value.node == b.id
        with pytest.raises(RemoteFunctionError):
            await Rpc.call(b.id, "tests.add", 1)  # a wrong call is the function's error
        _, bad = await Rpc.multicall([a.id, b.id], "tests.fail", "both")
        assert all(isinstance(bad[n], RemoteFunctionError) and bad[n].node == n for n in (a.id, b.id))
        with pytest.raises(InvalidArgumentError):
            await Rpc.call(b.id, "tests.add", 1, 2, timeout=float("nan"))
        with pytest.raises(InvalidArgumentError):
            await Rpc.call("not a node", "tests.add")
        with pytest.raises(NodeNotReachableError):
            await Rpc.call(GHOST, "tests.add", 1, 2)


async def test_rpc_timeout_is_honoured_and_cancels_the_function_on_the_target() -> None:
    a, b = await start_cluster(2)
    cancelled_on_target.clear()
    finished_on_target.clear()
    with a.as_default():
        for node_id in (b.id, a.id):
            started = time.monotonic()
            with pytest.raises(CallTimeoutError):
                await Rpc.call(node_id, "tests.slow", 5.0, timeout=0.2)
            elapsed = time.monotonic() - started
            assert 0.2 <= elapsed <= 0.2 + MARGIN_S, elapsed
        await wait_until(lambda: len(cancelled_on_target) == 2, 2.0, "both runs cancelled")
        started = time.monotonic()
        replies, bad = await Rpc.multicall([a.id, b.id], "tests.slow", 5.0, timeout=0.2)
        assert 0.2 <= time.monotonic() - started <= 0.2 + MARGIN_S
        assert replies == {} and all(isinstance(e, CallTimeoutError) for e in bad.values())
    assert finished_on_target == []


async def test_remote_function_needs_a_name_and_a_function() -> None:
    with pytest.raises(InvalidArgumentError):
        remote_function(name="")(add)
    with pytest.raises(InvalidArgumentError):
        remote_function(42)  # type: ignore[call-overload]
