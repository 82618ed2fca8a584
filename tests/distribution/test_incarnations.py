"""A node restarted under the same id that connects before its old incarnation was seen down:
the old incarnation leaves fully (names, locks, monitors, links, supervised children, node_down)
before the new one is admitted."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import pytest

from noex_lab import (
    Cluster,
    DistributedSupervisor,
    Down,
    Exit,
    GenServer,
    GlobalRegistry,
    Node,
    RemoteSpawn,
)
from noex_lab.core.reasons import NOCONNECTION
from noex_lab.introspection import NodeEvent
from tests.distribution.behaviors_for_tests import Echo, Watcher
from tests.helpers.cluster import NodeProcess, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

# Detection by heartbeat takes 2 s x 5 = 10 s: far longer than these tests, so it cannot come first.
SLOW_BEATS = {"heartbeat_interval_ms": 2000, "heartbeat_miss_threshold": 5}


def _record(node: Node) -> list[tuple[str, Any]]:
    """node_up / node_down of `node`, in order, with the replica's view of "svc" at that moment."""
    seen: list[tuple[str, Any]] = []
    node.on_node_down(lambda peer, reason: seen.append(("down", (peer, reason))))
    node.on_node_up(lambda info: seen.append(("up", (info.id, info.incarnation, node.distribution.global_names()))))
    return seen


async def test_a_new_incarnation_replaces_an_undetected_old_one_only_after_it_fully_left() -> None:
    a = await Cluster.start("a", port=0, **SLOW_BEATS)
    b = await Cluster.start("b", port=0, seeds=[str(a.id)], **SLOW_BEATS)
    await wait_until(lambda: len(a.get_nodes()) == 1 and len(b.get_nodes()) == 1, 5.0, "a and b joined")
    assert a.id is not None and b.id is not None
    b_id, old_incarnation = b.id, b.incarnation
    with b.as_default():
        svc = await GenServer.start(Echo)
        await GlobalRegistry.register("svc", svc)
    await wait_until(lambda: "svc" in a.distribution.global_names(), 2.0, "svc on a")
    with a.as_default():
        watcher = await GenServer.start(Watcher)
        monitor = await GenServer.call(watcher, ("monitor", svc))
        a.link(watcher, svc)
        sup = await DistributedSupervisor.start(
            children=[{"id": "w", "behavior_name": "echo"}],
            node_selector=lambda nodes, _child: b_id if b_id in nodes else nodes[0],
        )
    events: list[NodeEvent] = []
    DistributedSupervisor.on_event(sup, events.append, node=a)
    with a.as_default():
        [child] = await DistributedSupervisor.which_children(sup)
    assert child.node == b_id
    seen = _record(a)

    # b's host "vanishes": it ignores a from now on and frees its port, its connection stays open
    b.faults.drop(a.id)
    await b.distribution.transport.listener.aclose()
    await anyio.to_thread.run_sync(b.distribution.liveness.stop)
    reborn = await Cluster.start("b", port=b_id.port, seeds=[str(a.id)], **SLOW_BEATS)
    assert reborn.id == b_id and reborn.incarnation != old_incarnation
    await wait_until(lambda: any(kind == "up" for kind, _ in seen), 5.0, "the new incarnation admitted")
    await b.kill()

    # the old incarnation was reported down, without its names, before the new one came up
    assert seen[0] == ("down", (b_id, "connection_closed"))
    kind, (peer, incarnation, names_then) = seen[1]
    assert (kind, peer, incarnation) == ("up", b_id, reborn.incarnation)
    assert "svc" not in names_then
    # monitors and links on the old incarnation fired
    with a.as_default():
        await wait_until(lambda: len(a.local_process(watcher).state) == 2, 2.0, "Down and Exit")
        log = await GenServer.call(watcher, "log")
    assert Down(monitor, svc, NOCONNECTION) in log and Exit(svc, NOCONNECTION) in log
    # the supervised child moved off the old incarnation
    await wait_until(lambda: any(e.kind == "child_migrated" for e in events), 3.0, "child migrated")
    with a.as_default():
        [moved] = await DistributedSupervisor.which_children(sup)
        assert moved.ref is not None and moved.ref.creation in (reborn.incarnation, a.incarnation)
        assert await GenServer.call(moved.ref, "ping") == "ping"
    # the name is free again: the new incarnation registers it
    with reborn.as_default():
        fresh = await GenServer.start(Echo)
        await GlobalRegistry.register("svc", fresh)
    await wait_until(lambda: a.distribution.global_names().get("svc") == fresh, 2.0, "svc re-registered")
    assert len(a.get_nodes()) == 1


class FinLosingProxy:
    """A TCP proxy to `port` that loses FINs: when a client's side closes, the upstream side stays
    open and is drained, as when the client's host vanished (so only heartbeats could tell)."""

    def __init__(self, port: int) -> None:
        self.target_port = port
        self.port = 0

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener, anyio.create_task_group() as tg:
            task_status.started()
            await listener.serve(self._pipe, task_group=tg)

    async def _pipe(self, client: anyio.abc.SocketStream) -> None:
        async with client, await anyio.connect_tcp("127.0.0.1", self.target_port) as upstream:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._forward, client, upstream, False)
                await self._forward(upstream, client, True)
                tg.cancel_scope.cancel()

    @staticmethod
    async def _forward(src: anyio.abc.SocketStream, dst: anyio.abc.SocketStream, ends: bool) -> None:
        """Copy src to dst; a closed dst is ignored (src is still drained). Only the upstream's
        end (`ends`) ends the pipe: the client's end is lost."""
        dst_ok = True
        while True:
            try:
                data = await src.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                if ends:
                    return
                await anyio.sleep_forever()
            if dst_ok:
                try:
                    await dst.send(data)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    dst_ok = False


@pytest.fixture
async def proxy_to() -> AsyncIterator[Any]:
    async with anyio.create_task_group() as tg:
        async def start(port: int) -> FinLosingProxy:
            proxy = FinLosingProxy(port)
            await tg.start(proxy.run)
            return proxy

        yield start
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_node_process_killed_and_restarted_before_detection_leaves_no_stale_names(
    procs: list[NodeProcess], proxy_to: Any
) -> None:
    me = await Cluster.start("tester", port=0, **SLOW_BEATS)
    assert me.id is not None
    proxy = await proxy_to(me.id.port)
    beats = ["--heartbeat-interval-ms", "2000", "--heartbeat-miss-threshold", "5"]
    args = [*beats, "--behaviors", "tests.distribution.behaviors_for_tests", "--seed", f"dns:127.0.0.1:{proxy.port}"]
    victim = NodeProcess("victim", *args)
    procs.append(victim)
    victim_id = await victim.started()
    await wait_until(lambda: any(i.id == victim_id for i in me.get_nodes()), 5.0, "victim joined")
    old = await RemoteSpawn.spawn("echo", victim_id, name="svc", registration="global")
    assert GlobalRegistry.whereis("svc") == old
    seen = _record(me)
    with me.as_default():
        watcher = await GenServer.start(Watcher)
        monitor = await GenServer.call(watcher, ("monitor", old))

    victim.signal(signal.SIGKILL)  # its FIN is lost in the proxy: the tester still sees it connected
    await anyio.to_thread.run_sync(victim.proc.wait, 5)
    assert any(i.id == victim_id for i in me.get_nodes())
    reborn = NodeProcess("victim", *args, port=victim_id.port)
    procs.append(reborn)
    assert await reborn.started() == victim_id
    await wait_until(lambda: any(kind == "up" for kind, _ in seen), 5.0, "the new incarnation admitted")

    assert seen[0] == ("down", (victim_id, "connection_closed"))
    kind, (peer, _incarnation, names_then) = seen[1]
    assert (kind, peer) == ("up", victim_id) and "svc" not in names_then
    assert GlobalRegistry.whereis("svc") is None
    await wait_until(lambda: me.local_process(watcher).state, 2.0, "Down of the old process")
    assert me.local_process(watcher).state == [Down(monitor, old, NOCONNECTION)]
    new = await RemoteSpawn.spawn("echo", victim_id, name="svc", registration="global")
    assert GlobalRegistry.whereis("svc") == new != old
    assert await GenServer.call("svc", "ping") == "ping"
