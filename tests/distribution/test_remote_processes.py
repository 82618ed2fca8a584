"""Remote spawn, remote monitors and links across nodes (real TCP, and a real SIGKILL)."""

from __future__ import annotations

import signal
import time
from typing import Any

import anyio
import pytest

from noex_lab import (
    BehaviorNotFoundError,
    Cluster,
    Down,
    Exit,
    GenServer,
    InitError,
    ProcessRef,
    RemoteLink,
    RemoteMonitor,
    RemoteSpawn,
    ServerNotRunningError,
)
from tests.distribution.behaviors_for_tests import Echo, Watcher
from tests.helpers.cluster import NodeProcess, start_cluster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]


class Plain(GenServer):
    """Does not trap exits: a linked crash kills it."""

    def handle_call(self, msg: Any, state: Any) -> Any:
        if msg == "crash":
            raise RuntimeError("boom on purpose")
        return msg, state


async def test_a_thousand_remote_monitors_fire_exactly_once() -> None:
    # Default heartbeats (5 s x 3): this is about monitors, not failure detection; with the fast
    # 0.6 s window a loaded machine could declare the connection lost (every Down `noconnection`).
    a, b = await start_cluster(2, fast=False)
    with b.as_default():
        target = await GenServer.start(Echo)
    downs: list[Down] = []
    with a.as_default():
        watcher = await GenServer.start(Watcher)
        mrefs = [await RemoteMonitor.monitor(target, on_down=downs.append) for _ in range(900)]
        for _ in range(100):
            mrefs.append(await GenServer.call(watcher, ("monitor", target)))
        # monitors are set up asynchronously; a call on the same connection is handled after them
        assert await GenServer.call(target, "sync") == "sync"
    assert len(set(mrefs)) == 1000
    with b.as_default():
        await GenServer.stop(target, "shutdown")
    await wait_until(lambda: len(downs) == 900, 2.0, "900 callbacks")
    with a.as_default():
        await wait_until(lambda: len(a.local_process(watcher).state) == 100, 2.0, "100 Down messages")
    got = downs + a.local_process(watcher).state
    assert sorted(d.monitor for d in got) == sorted(mrefs)
    assert {(d.reason, d.ref) for d in got} == {("shutdown", target)}


async def test_monitor_reasons_noproc_and_demonitor() -> None:
    a, b = await start_cluster(2)
    with b.as_default():
        target = await GenServer.start(Plain)
        gone = await GenServer.start(Plain)
        await GenServer.stop(gone)
    downs: list[Down] = []
    with a.as_default():
        await RemoteMonitor.monitor(gone, on_down=downs.append)
        await wait_until(lambda: downs, 2.0)
        assert downs[0].reason == "noproc"
        mref = await RemoteMonitor.monitor(target, on_down=downs.append)
        await RemoteMonitor.demonitor(mref)
        await RemoteMonitor.demonitor(mref)  # idempotent
        crash = await RemoteMonitor.monitor(target, on_down=downs.append)
        with pytest.raises(Exception, match="boom"):
            await GenServer.call(target, "crash")
    await wait_until(lambda: len(downs) == 2, 2.0)
    assert downs[1].monitor == crash
    assert downs[1].reason.exc_type == "RuntimeError"


async def test_links_cross_nodes_in_both_directions() -> None:
    a, b = await start_cluster(2)
    with a.as_default():
        a_plain = await GenServer.start(Plain)
        a_trap = await GenServer.start(Watcher)
    with b.as_default():
        b_plain = await GenServer.start(Plain)
        b_plain2 = await GenServer.start(Plain)
    with a.as_default():
        await RemoteLink.link(a_plain, b_plain)
        await RemoteLink.link(a_trap, b_plain2)
    # crash on b kills the partner on a
    with b.as_default(), pytest.raises(Exception, match="boom"):
        await GenServer.call(b_plain, "crash")
    await wait_until(lambda: a.local_process(a_plain) is None, 2.0, "a_plain killed by the link")
    # a trap_exit partner gets Exit instead of dying
    with b.as_default(), pytest.raises(Exception, match="boom"):
        await GenServer.call(b_plain2, "crash")
    await wait_until(lambda: a.local_process(a_trap).state, 2.0, "Exit delivered")
    [exit_msg] = a.local_process(a_trap).state
    assert isinstance(exit_msg, Exit) and exit_msg.from_ == b_plain2
    assert exit_msg.reason.exc_type == "RuntimeError"
    # and the other direction: a crash on a kills the partner on b
    with a.as_default():
        a2 = await GenServer.start(Plain)
    with b.as_default():
        b3 = await GenServer.start(Plain)
        await RemoteLink.link(b3, a2)
    with a.as_default(), pytest.raises(Exception, match="boom"):
        await GenServer.call(a2, "crash")
    await wait_until(lambda: b.local_process(b3) is None, 2.0, "b3 killed by the link")
    # a normal exit propagates nothing
    with a.as_default():
        a3 = await GenServer.start(Plain)
    with b.as_default():
        b4 = await GenServer.start(Plain)
        await RemoteLink.link(b4, a3)
    # the link reaches a asynchronously: had a3 exited first, b4 would rightly get `noproc`
    await wait_until(lambda: b4 in a.local_process(a3).links, 2.0, "the link reached a3")
    with a.as_default():
        await GenServer.stop(a3, "normal")
    with b.as_default():
        assert await GenServer.call(b4, "still here") == "still here"


async def test_a_reply_sent_by_the_reader_while_a_large_message_is_in_flight_is_not_lost() -> None:
    # On asyncio frames are dispatched in the transport's data_received callback (no task);
    # the noproc answer to this call is sent from there while b's link to a carries large casts.
    a, b = await start_cluster(2)
    with a.as_default():
        sink = await GenServer.start(Echo)
    with b.as_default():
        for _ in range(3):
            GenServer.cast(sink, ("payload", b"x" * (4 * 2**20)))
    dead = ProcessRef(b.id, 999_999, b.incarnation)
    with a.as_default(), pytest.raises(ServerNotRunningError):
        await GenServer.call(dead, "anyone?", timeout=3.0)


async def test_hundred_concurrent_remote_spawns_and_typed_failures() -> None:
    a, b = await start_cluster(2)
    refs: list[Any] = []

    async def one(i: int) -> None:
        with a.as_default():
            refs.append(await RemoteSpawn.spawn("echo", b.id, arg=i))

    async with anyio.create_task_group() as tg:
        for i in range(100):
            tg.start_soon(one, i)
    assert len(set(refs)) == 100 and all(r.node == b.id for r in refs)
    before = b.process_count
    with a.as_default():
        with pytest.raises(BehaviorNotFoundError) as nf:
            await RemoteSpawn.spawn("no_such_behavior", b.id)
        assert nf.value.name == "no_such_behavior"
        with pytest.raises(InitError) as bad:
            await GenServer.start_remote("failing_init", b.id, arg=7)
        assert bad.value.reason.exc_type == "ValueError"
        assert "refusing to start with 7" in bad.value.reason.message
    assert b.process_count == before  # no orphan left behind


async def test_new_incarnation_does_not_inherit_monitors_or_messages() -> None:
    a, b = await start_cluster(2)
    with b.as_default():
        old_ref = await GenServer.start(Echo)
    downs: list[Down] = []
    with a.as_default():
        await RemoteMonitor.monitor(old_ref, on_down=downs.append)
    port = b.id.port
    await b.kill()
    await wait_until(lambda: downs, 2.0, "noconnection Down")
    assert downs[0].reason == "noconnection"
    b2 = await Cluster.start("n1", port=port, seeds=[str(a.id)], heartbeat_interval_ms=200)
    await wait_until(lambda: len(a.get_nodes()) == 1, 5.0)
    with b2.as_default():
        new_ref = await GenServer.start(Echo)
    assert new_ref.id == old_ref.id and new_ref.creation != old_ref.creation
    with a.as_default():
        GenServer.cast(old_ref, "inc")  # addressed to the old incarnation: dropped
        assert await GenServer.call(new_ref, "get") == 0
        with pytest.raises(Exception, match="no process"):
            await GenServer.call(old_ref, "get")
    assert len(downs) == 1



@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_sigkill_fires_every_monitor_with_noconnection(procs: list[NodeProcess]) -> None:
    me = await Cluster.start("tester", port=0, heartbeat_interval_ms=200)
    victim = NodeProcess("victim", "--heartbeat-interval-ms", "200", "--behaviors",
                         "tests.distribution.behaviors_for_tests", "--seed", str(me.id))
    procs.append(victim)
    vid = await victim.started()
    await wait_until(lambda: me.get_nodes(), 5.0)
    targets = [await RemoteSpawn.spawn("echo", vid) for _ in range(20)]
    downs: list[Down] = []
    for t in targets:
        for _ in range(10):
            await RemoteMonitor.monitor(t, on_down=downs.append)
    killed = time.monotonic()
    victim.signal(signal.SIGKILL)
    await wait_until(lambda: len(downs) == 200, 1.0, "200 noconnection Downs")
    assert time.monotonic() - killed < 1.0
    assert {d.reason for d in downs} == {"noconnection"}
