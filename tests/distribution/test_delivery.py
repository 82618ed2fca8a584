"""Delivery under load (SPEC §4): nothing is lost while a connection lives, busy links slow
senders down instead, a hard bound turns into a visible connection loss, and every blocking
API keeps its deadline whatever the connection state. Real TCP on 127.0.0.1; a peer that stops
reading is a `noex-lab node` process under SIGSTOP."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from noex_lab import (
    CallTimeoutError,
    Cluster,
    GenServer,
    GlobalRegistry,
    Node,
    NodeNotReachableError,
    RemoteSpawn,
    Supervisor,
)
from noex_lab.core.messages import Down
from noex_lab.core.node import current_node
from noex_lab.distribution.connection import Connection
from noex_lab.errors import SendTimeoutError
from tests.distribution.behaviors_for_tests import SeqSink, Watcher
from tests.helpers.cluster import NodeProcess, start_cluster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

BEHAVIORS = ["--behaviors", "tests.distribution.behaviors_for_tests"]
MIB = 2**20


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # OS processes and byte counts; the trio path is covered by the shared tests


def _conn(node: Node, peer: Any) -> Connection:
    conn = node.distribution.transport.conns[peer]
    assert isinstance(conn, Connection)
    return conn


class Pump(GenServer):
    """On cast ("go", target, tag, n, batch): casts ("seq", tag, i) for i in range(n), `batch`
    per message, re-casting itself until done, and keeps its progress in the dict it was
    started with (read by the test: a suspended process answers no call). Being a process, it
    is suspended between batches while its connection is busy (back-pressure)."""

    def init(self, arg: dict[str, Any]) -> dict[str, Any]:
        arg.update(sent=0, n=0)
        return arg

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        _, target, tag, n, batch = msg
        start = state["sent"]
        end = min(n, start + batch)
        cast = GenServer.cast
        for i in range(start, end):
            cast(target, ("seq", tag, i))
        state["sent"], state["n"] = end, n
        if end < n:
            GenServer.cast(self.ref, msg)
        return state



@pytest.fixture
async def stoppable(procs: list[NodeProcess]) -> AsyncIterator[tuple[Node, NodeProcess, Any]]:
    """This node, a `noex-lab node` process joined to it, and a SeqSink on that process.
    The process's heartbeats are slow enough that a few seconds of SIGSTOP is not a failure."""
    me = await Cluster.start("sender", port=0)
    peer = NodeProcess("reader", *BEHAVIORS, "--seed", str(me.id))
    procs.append(peer)
    peer_id = await peer.started()
    await wait_until(lambda: any(i.id == peer_id for i in me.get_nodes()), 10.0, "the reader joined")
    sink = await RemoteSpawn.spawn("seq_sink", peer_id)
    try:
        yield me, peer, sink
    finally:
        peer.signal(signal.SIGCONT)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_large_messages_of_one_sender_never_make_small_casts_of_another_fail() -> None:
    """W5 with a concurrent 3 x 16 MiB sender on the same connection: 100,000/100,000 in order."""
    a, b = await start_cluster(2, fast=False)
    with b.as_default():
        sink = await GenServer.start(SeqSink)
    events: list[Any] = []
    a.events.subscribe(events.append)
    blob = b"x" * (16 * MIB)
    n = 100_000

    async def small() -> None:
        for i in range(n):
            GenServer.cast(sink, ("seq", "small", i))
            if i % 1000 == 999:
                await anyio.lowlevel.checkpoint()

    async def large() -> None:
        for i in range(3):
            GenServer.cast(sink, ("blob", "large", i, blob))
            await anyio.lowlevel.checkpoint()
        await GenServer.call(sink, "stats", timeout=60)  # (same sender: after its three blobs)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(large)
            tg.start_soon(small)
        # both senders' last calls came back: every cast before them was handled
        stats = await GenServer.call(sink, "stats", timeout=60)
    assert stats == {"count": n, "out_of_order": 0, "blobs": 3, "blob_bytes": 3 * 16 * MIB}
    assert not [e for e in events if e.kind in ("overload", "send_buffer_overflow")]


@pytest.mark.timeout(90)
async def test_a_process_casting_to_a_stopped_peer_is_slowed_down_and_nothing_is_lost(
    stoppable: tuple[Node, NodeProcess, Any],
) -> None:
    me, peer, sink = stoppable
    conn = _conn(me, sink.node)
    progress: dict[str, Any] = {}
    pump = await GenServer.start(Pump, progress)
    n = 200_000
    peer.signal(signal.SIGSTOP)
    GenServer.cast(pump, ("go", sink, "p", n, 500))
    # the pump fills the link until it is busy, and is then suspended: its queue stays bounded
    await wait_until(lambda: conn.congested, 10.0, "the link to the stopped peer is busy")
    await wait_until(lambda: me.local_process(pump)._congestion_wake is not None, 10.0, "the pump is suspended")
    peak = conn.queued_bytes  # the queue only grew until the pump was suspended (the peer reads nothing)
    assert progress["sent"] < n, "the pump was not slowed down"
    # at most the busy limit plus the one batch that crossed it
    assert peak < conn.busy_limit_bytes + 64 * 1024, f"{peak} bytes queued for a stopped peer"
    assert not conn.closed
    peer.signal(signal.SIGCONT)
    await wait_until(lambda: progress["sent"] == n, 60.0, "the pump sent everything")
    with anyio.fail_after(60):
        stats = await GenServer.call(sink, "stats", timeout=30)
    assert stats["count"] == n and stats["out_of_order"] == 0


async def test_code_outside_processes_drains_with_a_deadline(stoppable: tuple[Node, NodeProcess, Any]) -> None:
    me, peer, sink = stoppable
    conn = _conn(me, sink.node)
    peer.signal(signal.SIGSTOP)
    payload = b"y" * 1000
    sent = 0
    with anyio.fail_after(20):
        while not conn.congested:  # a synchronous cast from outside a process never blocks
            GenServer.cast(sink, ("blob", "d", sent, payload))
            sent += 1
            if sent % 500 == 0:
                await anyio.lowlevel.checkpoint()
    t0 = time.monotonic()
    with pytest.raises(SendTimeoutError) as info:
        await Cluster.drain(sink.node, timeout=0.5)
    waited = time.monotonic() - t0
    assert 0.5 <= waited < 0.55, waited
    assert info.value.node == sink.node and "busy" in str(info.value)
    peer.signal(signal.SIGCONT)
    with anyio.fail_after(20):
        await Cluster.drain()
        stats = await GenServer.call(sink, "stats")
    assert stats["blobs"] == sent and stats["out_of_order"] == 0


@pytest.mark.timeout(90)
async def test_every_blocking_api_keeps_its_deadline_on_a_busy_link(
    stoppable: tuple[Node, NodeProcess, Any],
) -> None:
    me, peer, sink = stoppable
    conn = _conn(me, sink.node)
    local = await GenServer.start(SeqSink)
    peer.signal(signal.SIGSTOP)
    payload = b"z" * 4096
    with anyio.fail_after(20):
        i = 0
        while not conn.congested:
            GenServer.cast(sink, ("blob", "fill", i, payload))
            i += 1
            if i % 100 == 0:
                await anyio.lowlevel.checkpoint()

    async def took(coro: Any, error: type[BaseException]) -> float:
        t0 = time.monotonic()
        with pytest.raises(error):
            await coro
        return time.monotonic() - t0

    late = {
        "call": await took(GenServer.call(sink, "stats", timeout=2.0), CallTimeoutError) - 2.0,
        "stop": await took(GenServer.stop(sink, timeout=1.0), CallTimeoutError) - 1.0,
        "spawn": await took(RemoteSpawn.spawn("echo", sink.node, timeout=0.5), CallTimeoutError) - 0.5,
        "snapshot": await took(_snapshot_of(me, sink.node, 0.5), CallTimeoutError) - 0.5,
        "supervisor": await took(Supervisor.which_children(sink, timeout=0.5), CallTimeoutError) - 0.5,
        "registry": await took(GlobalRegistry.register("held-up", local, timeout=0.5), CallTimeoutError) - 0.5,
    }
    for api, lateness in late.items():
        assert 0.0 <= lateness < 0.05, f"{api} ended {lateness * 1000:.0f} ms after its timeout"
    assert not conn.closed


async def _snapshot_of(me: Node, peer: Any, timeout: float) -> Any:
    return await me.distribution.router.rpc(peer, "node.snapshot", None, timeout)


@pytest.mark.timeout(90)
async def test_past_the_hard_bound_the_connection_is_lost_loudly(procs: list[NodeProcess]) -> None:
    """A peer that never reads: the sender's memory stays bounded, and the loss is visible
    (monitors noconnection, links exit, pending calls NodeNotReachableError)."""
    me = await Cluster.start("sender", port=0, max_message_bytes=1 * MIB, max_send_buffer_bytes=4 * MIB)
    peer = NodeProcess("reader", *BEHAVIORS, "--seed", str(me.id))
    procs.append(peer)
    peer_id = await peer.started()
    await wait_until(lambda: any(i.id == peer_id for i in me.get_nodes()), 10.0, "the reader joined")
    try:
        sink = await RemoteSpawn.spawn("seq_sink", peer_id)
        watcher = await GenServer.start(Watcher)
        await GenServer.call(watcher, ("monitor", sink))
        events: list[Any] = []
        me.events.subscribe(events.append)
        conn = _conn(me, peer_id)
        peer.signal(signal.SIGSTOP)
        async with anyio.create_task_group() as tg:
            outcome: list[BaseException] = []

            async def pending_call() -> None:
                try:
                    await GenServer.call(sink, "stats", timeout=30)
                except BaseException as exc:
                    outcome.append(exc)

            tg.start_soon(pending_call)
            await wait_until(lambda: conn.pending, 5.0, "the call is pending")
            payload = b"w" * 8192
            with anyio.fail_after(30):
                i = 0
                while not conn.closed:
                    GenServer.cast(sink, ("blob", "flood", i, payload))
                    assert conn.queued_bytes <= conn.max_send_buffer_bytes + len(payload) + 64
                    i += 1
                    if i % 100 == 0:
                        await anyio.lowlevel.checkpoint()
        assert len(outcome) == 1 and isinstance(outcome[0], NodeNotReachableError), outcome
        log = await wait_until(
            lambda: [m for m in _log(watcher) if isinstance(m, Down)], 5.0, "the monitor fired"
        )
        assert log[0].reason == "noconnection"
        overflow = [e for e in events if e.kind == "send_buffer_overflow"]
        assert overflow and overflow[0].data["limit"] == 4 * MIB
    finally:
        peer.signal(signal.SIGCONT)


def _log(watcher: Any) -> list[Any]:
    proc = current_node().local_process(watcher)
    return list(proc.state) if proc is not None else []


async def test_a_process_suspended_on_a_busy_link_still_shuts_down_at_once(
    stoppable: tuple[Node, NodeProcess, Any],
) -> None:
    """Back-pressure holds messages, not supervision: a shutdown ends a suspended process."""
    me, peer, sink = stoppable
    conn = _conn(me, sink.node)
    progress: dict[str, Any] = {}
    pump = await GenServer.start(Pump, progress)
    peer.signal(signal.SIGSTOP)
    GenServer.cast(pump, ("go", sink, "s", 1_000_000, 500))
    await wait_until(lambda: conn.congested, 10.0, "the link is busy")
    sent = progress["sent"]
    await wait_until(lambda: me.local_process(pump)._congestion_wake is not None, 5.0, "the pump is suspended")
    assert progress["sent"] == sent
    t0 = time.monotonic()
    reason = await me.shutdown_process(pump, "shutdown", 5.0)
    assert reason == "shutdown" and time.monotonic() - t0 < 0.2
