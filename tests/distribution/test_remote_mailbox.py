"""Bounded mailboxes across nodes (two in-process nodes over real TCP): remote spawn and
distributed child specs carry the bound, a remote call into a full mailbox gets a typed
`MailboxFullError`, remote casts are dropped and reported on the receiving node, and snapshots,
`%noex ps` rows and `noex-lab top` show the queue, its high-water mark and the bound."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from noex_lab import (
    BehaviorRegistry,
    Cluster,
    DistributedSupervisor,
    GenServer,
    NoexError,
    ProcessRef,
    RemoteSpawn,
    Sys,
)
from noex_lab.core.node import Node
from noex_lab.errors import InvalidArgumentError, MailboxFullError
from noex_lab.lab.session import LabSession
from noex_lab.terminal.view import ClusterWatch, processes_table
from tests.helpers.cluster import start_cluster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

GATES: dict[str, anyio.Event] = {}  # the in-process nodes share this module


class RemoteGated(GenServer):
    """arg = a gate name: each message waits until GATES[name] is set; counts the casts it handled."""

    def init(self, gate: str) -> dict[str, Any]:
        return {"gate": gate, "casts": 0}

    async def handle_call(self, msg: Any, state: dict[str, Any]) -> Any:
        await GATES[state["gate"]].wait()
        return (state["casts"] if msg == "casts" else msg), state

    async def handle_cast(self, msg: Any, state: dict[str, Any]) -> Any:
        await GATES[state["gate"]].wait()
        state["casts"] += 1
        return state


@pytest.fixture(autouse=True)
async def cleanup(cleanup: None) -> AsyncIterator[None]:
    BehaviorRegistry.register("remote_gated", RemoteGated)
    GATES.clear()
    try:
        yield
    finally:
        BehaviorRegistry.unregister("remote_gated")
        for gate in GATES.values():
            gate.set()


def gate(name: str) -> str:
    GATES[name] = anyio.Event()
    return name


def process_on(node: Node, ref: ProcessRef) -> Any:
    proc = node.local_process(ref)
    assert proc is not None
    return proc


async def test_remote_spawn_bound_remote_call_error_and_what_snapshots_show() -> None:
    a, b = await start_cluster(2)
    with a.as_default():
        ref = await RemoteSpawn.spawn("remote_gated", b.id, arg=gate("g"), max_mailbox=3, name="slow",
                                      registration="local")
        assert ref.node == b.id
        proc = process_on(b, ref)
        GenServer.cast(ref, "first")
        await wait_until(lambda: proc.handled == 1, 5, "the first cast taken on b")
        for i in range(100):  # 3 queued, 97 dropped on b
            GenServer.cast(ref, i)
        await wait_until(lambda: proc.bound.dropped == 97, 5, "97 remote casts dropped on b")
        assert len(proc.mailbox) == 3
        [event] = [e for e in b.events.recent(100) if e.kind == "mailbox_overflow"]
        assert event.data["ref"] == ref and event.data["dropped"] == 1

        started = anyio.current_time()
        with pytest.raises(MailboxFullError) as caught:
            await GenServer.call(ref, "hello", timeout=10)  # decoded from the REPLY: the same class
        assert anyio.current_time() - started < 2
        err = caught.value
        assert isinstance(err, NoexError) and (err.target, err.max_mailbox, err.overflow) == (ref, 3, "drop_newest")
        assert "is full (max_mailbox=3" in str(err)

        # what the observers see, fetched over the wire
        snaps = {s.node: s for s in await Cluster.snapshot(timeout=5)}
        [info] = snaps[b.id].processes
        assert (info.name, info.queue_len, info.queue_high_water, info.max_mailbox) == ("slow", 3, 3, 3)
        rows, _names = await Sys.processes(b.id)
        assert [[r.queue_len, r.queue_high_water, r.max_mailbox] for r in rows] == [[3, 3, 3]]
        watch = ClusterWatch(a, include_self=True)
        watch.start()
        try:
            await watch.refresh(5)
        finally:
            watch.close()
        table = processes_table(watch)
        assert table.columns[-1].header == "queue high-water"
        assert list(table.columns[-1].cells) == ["0", "3/3 (slow)"]  # a (this node) runs nothing; b
        [on_b] = watch.to_json()["members"][1]["processes"]
        assert (on_b["queue_len"], on_b["queue_high_water"], on_b["max_mailbox"]) == (3, 3, 3)
        session = LabSession(None)  # what %noex ps shows, without a kernel
        session.node = a
        [mine, theirs] = await session.ps(all_nodes=True)
        assert mine.columns == theirs.columns and theirs.columns[4:7] == ["queue", "high-water", "bound"]
        assert theirs.rows[0][1] == "slow" and theirs.rows[0][4:7] == [3, 3, 3]
        unbounded = await GenServer.start(RemoteGated, "none")
        [mine, _] = await session.ps(all_nodes=True)
        assert mine.rows == [[unbounded, None, "RemoteGated", mine.rows[0][3], 0, 0, "-", 0, mine.rows[0][8]]]

        GATES["g"].set()
        assert await GenServer.call(ref, "casts") == 4  # "first" and 3 queued; the 97 others dropped


async def test_a_distributed_child_with_crash_policy_is_restarted() -> None:
    a, b = await start_cluster(2)
    with a.as_default():
        restarts: list[Any] = []
        a.events.subscribe(lambda e: restarts.append(e.data) if e.kind == "child_restarted" else None)
        sup = await DistributedSupervisor.start(children=[
            {"id": "w", "behavior_name": "remote_gated", "arg": gate("w"), "max_mailbox": 2, "overflow": "crash",
             "node_selector": {"node": str(b.id)}},
        ])
        [child] = await DistributedSupervisor.which_children(sup)
        assert child.node == b.id and child.ref is not None
        proc = process_on(b, child.ref)
        assert (proc.bound.max, proc.bound.policy) == (2, "crash")
        for i in range(4):  # first taken, 2 queued, 1 too many: the child exits "mailbox_overflow"
            GenServer.cast(child.ref, i)
            if i == 0:
                await wait_until(lambda: proc.handled == 1, 5, "the first cast taken on b")
        await wait_until(lambda: restarts, 5, "the child restarted")
        [after] = await DistributedSupervisor.which_children(sup)
        assert after.ref != child.ref and after.last_exit_reason == "mailbox_overflow"
        await DistributedSupervisor.stop(sup)


async def test_bad_mailbox_options_are_refused_before_and_after_the_wire() -> None:
    a, b = await start_cluster(2)
    with a.as_default():
        with pytest.raises(InvalidArgumentError, match="max_mailbox"):
            await RemoteSpawn.spawn("remote_gated", b.id, arg=gate("x"), max_mailbox=0)
        with pytest.raises(InvalidArgumentError, match="overflow"):
            await GenServer.start_remote("remote_gated", b.id, arg="x", max_mailbox=5, overflow="spill")
        # a peer that skips the local checks: the receiving node refuses, with a typed error
        router: Any = a.router
        for max_mailbox, overflow in ((-1, "drop_newest"), (2.5, "drop_newest"), (5, "spill")):
            with pytest.raises(InvalidArgumentError):
                await router.rpc(b.id, "node.spawn",
                                 ["remote_gated", "x", None, "none", 5.0, None, max_mailbox, overflow])
        assert b.processes() == []
