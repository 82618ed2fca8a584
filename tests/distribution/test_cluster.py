"""In-process clusters on real TCP (127.0.0.1): membership, remote call/cast, errors, stop/kill."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from noex_lab import (
    CallError,
    CallTimeoutError,
    Cluster,
    GenServer,
    NodeNotReachableError,
    RemoteCall,
    RemoteSpawn,
    SerializationError,
    ServerNotRunningError,
)
from noex_lab.distribution.membership import NodeInfo
from noex_lab.errors import ClusterError, InvalidArgumentError
from tests.distribution.behaviors_for_tests import Echo
from tests.helpers.cluster import start_cluster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]


class Recorder(GenServer):
    def init(self, arg: Any) -> list[Any]:
        return []

    def handle_call(self, msg: Any, state: list[Any]) -> Any:
        if msg == "log":
            return list(state), state
        state.append(("call", msg))
        return len(state), state

    def handle_cast(self, msg: Any, state: list[Any]) -> list[Any]:
        state.append(("cast", msg))
        return state


async def test_five_nodes_seeded_from_the_first_form_a_full_mesh() -> None:
    nodes = await start_cluster(5)
    ids = {n.id for n in nodes}
    for node in nodes:
        peers = {info.id for info in node.get_nodes()}
        assert peers == ids - {node.id}
        assert all(isinstance(i, NodeInfo) and i.status == "up" for i in node.get_nodes())
    # exactly one connection per pair
    for node in nodes:
        assert len(node.distribution.transport.conns) == 4


async def test_remote_call_cast_and_per_sender_fifo() -> None:
    a, b = await start_cluster(2)
    with b.as_default():
        ref = await GenServer.start(Recorder)
    assert ref.node == b.id
    with a.as_default():
        for i in range(50):
            GenServer.cast(ref, i)
        assert await GenServer.call(ref, "x") == 51
        log = await RemoteCall.call(ref, "log")
    assert log == [("cast", i) for i in range(50)] + [("call", "x")]


async def test_remote_errors_are_typed() -> None:
    a, b = await start_cluster(2)
    with b.as_default():
        ref = await GenServer.start(Echo)
    with a.as_default():
        with pytest.raises(CallError) as info:
            await GenServer.call(ref, "crash")
        assert info.value.exc_type == "RuntimeError"
        assert "crashed on request" in info.value.message
        assert "handle_call" in info.value.remote_traceback
        with pytest.raises(ServerNotRunningError):
            await GenServer.call(ref, "get")
        with b.as_default():
            slow = await GenServer.start(Echo)
        started = time.monotonic()
        with pytest.raises(CallTimeoutError):
            await GenServer.call(slow, ("slow", 2.0), timeout=0.2)
        assert time.monotonic() - started < 1.5
        # a cast to a dead process never raises
        GenServer.cast(ref, "inc")


async def test_remote_stop_runs_terminate_and_queued_calls_fail() -> None:
    a, b = await start_cluster(2)
    with b.as_default():
        ref = await GenServer.start(Echo)
    with a.as_default():
        await GenServer.stop(ref)
        with pytest.raises(ServerNotRunningError):
            await GenServer.call(ref, "get")
    assert b.local_process(ref) is None


async def test_unsendable_value_raises_in_sender_and_connection_survives() -> None:
    a, b = await start_cluster(2)
    with b.as_default():
        ref = await GenServer.start(Echo)
    with a.as_default():
        with pytest.raises(SerializationError):
            await GenServer.call(ref, object())
        with pytest.raises(SerializationError):
            GenServer.cast(ref, lambda: None)
        assert await GenServer.call(ref, {"still": ("works", 1)}) == {"still": ("works", 1)}


async def test_graceful_stop_is_seen_at_once_as_graceful_shutdown() -> None:
    a, b, c = await start_cluster(3)
    seen: list[tuple[Any, str]] = []
    a.on_node_down(lambda peer, reason: seen.append((peer, reason)))
    started = time.monotonic()
    await c.stop()
    await wait_until(lambda: seen, 2.0, "node down")
    assert seen == [(c.id, "graceful_shutdown")]
    assert time.monotonic() - started < 1.0
    await wait_until(lambda: len(b.get_nodes()) == 1, 2.0)


async def test_kill_fails_pending_calls_with_node_not_reachable() -> None:
    a, b = await start_cluster(2)
    with b.as_default():
        ref = await GenServer.start(Echo)
    reasons: list[str] = []
    a.on_node_down(lambda peer, reason: reasons.append(reason))
    results: list[BaseException] = []

    async def pending_call() -> None:
        with a.as_default():
            try:
                await GenServer.call(ref, ("slow", 10.0), timeout=8.0)
            except BaseException as exc:
                results.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(pending_call)
        await wait_until(lambda: b.local_process(ref) and b.local_process(ref).handled >= 1, 2.0)
        started = time.monotonic()
        await b.kill()
    assert len(results) == 5
    assert all(isinstance(r, NodeNotReachableError) for r in results), results
    assert time.monotonic() - started < 1.0
    assert reasons == ["connection_closed"]
    with a.as_default(), pytest.raises(NodeNotReachableError):
        await GenServer.call(ref, "get")


async def test_remote_spawn_of_registered_behavior() -> None:
    a, b = await start_cluster(2)
    with a.as_default():
        ref = await RemoteSpawn.spawn("echo", b.id, arg=41)
        assert ref.node == b.id
        assert await GenServer.call(ref, "arg") == 41


async def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ClusterError, match="cluster_secret"):
        await Cluster.start("open", host="0.0.0.0", port=0)
    with pytest.raises(InvalidArgumentError):
        await Cluster.start("bad name!", port=0)
    with pytest.raises(InvalidArgumentError):
        await Cluster.start("x", port=0, seeds=["not-an-id"])
    a = await Cluster.start("taken", port=0)
    assert a.id is not None
    with pytest.raises(ClusterError, match="cannot listen"):
        await Cluster.start("again", port=a.id.port)


async def test_concurrent_starts_give_two_whole_nodes_and_a_node_is_never_distributed_twice() -> None:
    from noex_lab.core.node import current_node
    from noex_lab.distribution.cluster import ClusterConfig, Distribution

    implicit = current_node()
    started: dict[str, Any] = {}

    async def start(name: str) -> None:
        started[name] = await Cluster.start(name, port=0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(start, "x")
        tg.start_soon(start, "y")
    x, y = started["x"], started["y"]
    assert x is not y and implicit in (x, y)
    for node, name in ((x, "x"), (y, "y")):
        assert node.id.name == name and node.distribution.node is node and node.distribution.status == "running"
    # each has its own listener and liveness: a third node meets both
    z = await Cluster.start("z", port=0, seeds=[str(x.id), str(y.id)])
    await wait_until(lambda: all(len(n.get_nodes()) == 2 for n in (x, y, z)), 5.0, "a mesh of x, y, z")
    with pytest.raises(ClusterError, match="already distributed"):
        await Distribution(x, ClusterConfig("again", port=0)).start()
    assert x.distribution.node_id == x.id


async def test_hidden_observer_sees_everyone_and_is_listed_by_nobody() -> None:
    nodes = await start_cluster(3)
    observer = await Cluster.start("observer", port=0, seeds=[str(nodes[0].id)], hidden=True,
                                   heartbeat_interval_ms=200)
    await wait_until(lambda: len(observer.get_nodes()) == 3, 5.0, "observer connected to all")
    assert {i.id for i in observer.get_nodes()} == {n.id for n in nodes}
    for node in nodes:
        assert observer.id not in {i.id for i in node.get_nodes()}
        assert observer.id in node.distribution.transport.conns
    snapshots = await observer.distribution.cluster_snapshot(2.0)
    assert {s.node for s in snapshots} == {observer.id, *(n.id for n in nodes)}
    await observer.kill()
    await wait_until(lambda: all(observer.id not in n.distribution.transport.conns for n in nodes), 2.0)


async def test_peers_with_slower_heartbeats_are_not_declared_down() -> None:
    fast = await Cluster.start("fast", port=0, heartbeat_interval_ms=100, heartbeat_miss_threshold=3)
    slow = await Cluster.start("slow", port=0, seeds=[str(fast.id)], heartbeat_interval_ms=1000,
                               heartbeat_miss_threshold=3)
    downs: list[Any] = []
    fast.on_node_down(lambda peer, reason: downs.append(reason))
    await wait_until(lambda: fast.get_nodes() and slow.get_nodes(), 5.0, "joined")
    timeout = fast.distribution.liveness.status(slow.id)
    assert timeout is not None and timeout.status == "up"
    # fast expects slow's heartbeats every second, not every 100 ms: 3 x 100 ms pass without a down
    with pytest.raises(AssertionError):
        await wait_until(lambda: downs, 1.5, "a false down")
    assert downs == [] and fast.get_nodes()[0].status == "up"


async def test_per_sender_fifo_holds_for_large_messages_too() -> None:
    a, b = await start_cluster(2)
    with b.as_default():
        ref = await GenServer.start(Recorder)
    big = b"x" * 1_000_000
    with a.as_default():
        GenServer.cast(ref, "first")
        GenServer.cast(ref, big)
        GenServer.cast(ref, "third")
        assert await GenServer.call(ref, "x", timeout=30) == 4
        log = await GenServer.call(ref, "log")
    assert [entry[1] if entry[1] != big else "big" for entry in log] == ["first", "big", "third", "x"]


async def test_an_undecodable_message_is_refused_without_closing_the_connection() -> None:
    from noex_lab import wire_type

    class Fragile:
        pass

    wire_type(Fragile, name="tests.Fragile", encode=lambda obj: 1, decode=lambda state: 1 / 0)
    a, b = await start_cluster(2)
    with b.as_default():
        ref = await GenServer.start(Echo)
    with a.as_default():
        with pytest.raises(SerializationError, match="cannot decode"):
            await GenServer.call(ref, Fragile())
        with pytest.raises(SerializationError) as info:
            await GenServer.call(ref, {"f": object()})
        assert str(info.value).startswith("msg['f']")  # the user's path, not the frame's
        assert await GenServer.call(ref, "still connected") == "still connected"
    assert len(a.get_nodes()) == 1


async def test_a_reply_that_cannot_travel_is_a_serialization_error() -> None:
    a, b = await start_cluster(2)

    class Rude(GenServer):
        def handle_call(self, msg: Any, state: Any) -> Any:
            return object(), state

    with b.as_default():
        ref = await GenServer.start(Rude)
    with a.as_default():
        with pytest.raises(SerializationError, match="the reply cannot be sent"):
            await GenServer.call(ref, "x")
        assert b.local_process(ref) is not None  # the server did not crash
