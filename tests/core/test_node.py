"""The node: event stream, snapshot, kill and stop."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from noex_lab import (
    ChildSpec,
    ErrorReason,
    GenServer,
    NodeSnapshot,
    ProcessInfo,
    RemoteLink,
    RemoteMonitor,
    Supervisor,
    current_node,
)
from noex_lab.core.node import Node
from noex_lab.errors import NodeStoppedError
from noex_lab.introspection import NodeEvent, SupervisorTree

from ._helpers import Pawn, Sink, exit_reason, watch

pytestmark = pytest.mark.anyio


def kinds(sink: Sink, *wanted: str) -> list[NodeEvent]:
    return [e for e in sink.items if e.kind in wanted]


class Blocker(GenServer):
    """call "block" waits for the gate given as arg (to fill the mailbox behind it)."""

    def init(self, gate: anyio.Event) -> anyio.Event:
        return gate

    async def handle_call(self, msg: Any, gate: anyio.Event) -> Any:
        if msg == "block":
            await gate.wait()
        return msg, gate

    def handle_cast(self, msg: Any, gate: anyio.Event) -> anyio.Event:
        return gate


# ---------------------------------------------------------------------------- events


async def test_process_started_and_exited_events(node: Node) -> None:
    sink = Sink()
    unsubscribe = node.events.subscribe(sink)
    ref = await GenServer.start(Pawn, name="evented")
    [started] = kinds(sink, "process_started")
    assert started.data["ref"] == ref and started.data["name"] == "evented"
    assert started.data["behavior"] == "Pawn"
    assert isinstance(started, NodeEvent) and started.at > 0 and str(started)
    down = await watch(ref)
    GenServer.cast(ref, "crash")
    reason = await exit_reason(down)
    [exited] = kinds(sink, "process_exited")
    assert exited.data["ref"] == ref and exited.data["reason"] == reason
    assert isinstance(reason, ErrorReason)

    unsubscribe()
    count = len(sink)
    other = await GenServer.start(Pawn)
    await GenServer.stop(other)
    assert len(sink) == count
    # recent() still has everything, oldest first
    recent = [e for e in node.events.recent(100) if e.kind in ("process_started", "process_exited")]
    assert [(e.kind, e.data["ref"]) for e in recent] == [
        ("process_started", ref), ("process_exited", ref), ("process_started", other),
        ("process_exited", other),
    ]
    # (the last two were recorded with nobody subscribed, as tuples: read, they are NodeEvents too)
    assert all(isinstance(e, NodeEvent) and e.at > 0 and e.node == node.id and str(e) for e in recent)
    assert node.events.recent(2) == node.events.recent(100)[-2:]
    assert node.events.recent(0) == []


async def test_async_subscribers_and_a_broken_subscriber(node: Node) -> None:
    async_sink = Sink()

    async def async_subscriber(event: NodeEvent) -> None:
        await anyio.lowlevel.checkpoint()
        if event.kind == "process_started":
            async_sink.add(event)

    def broken(event: NodeEvent) -> None:
        raise RuntimeError("subscriber bug")

    node.events.subscribe(broken)
    node.events.subscribe(async_subscriber)
    ref = await GenServer.start(Pawn)
    [event] = await async_sink.wait_for(1)
    assert event.data["ref"] == ref
    # the broken subscriber is reported, not fatal
    errors = [e for e in node.events.recent(100) if e.kind == "error"]
    assert errors and "subscriber bug" in errors[0].data["error"]
    assert await GenServer.call(ref, "ping") == "pong"


async def test_supervisor_restart_event(node: Node) -> None:
    sink = Sink()
    node.events.subscribe(sink)
    sup = await Supervisor.start("one_for_one", [ChildSpec(id="p", behavior=Pawn)])
    [child] = await Supervisor.which_children(sup)
    down = await watch(child.ref)
    GenServer.cast(child.ref, "crash")
    reason = await exit_reason(down)
    [new_child] = await Supervisor.which_children(sup)
    [restart] = kinds(sink, "supervisor_restart")
    assert restart.data["supervisor"] == sup and restart.data["child"] == "p"
    assert restart.data["reason"] == reason and restart.data["strategy"] == "one_for_one"
    started = [e.data["ref"] for e in kinds(sink, "process_started")]
    assert started == [child.ref, sup, new_child.ref]


# ---------------------------------------------------------------------------- snapshot


async def test_snapshot_processes(node: Node) -> None:
    gate = anyio.Event()
    idle = await GenServer.start(Pawn, name="idle")
    busy = await GenServer.start(Blocker, gate)
    async with anyio.create_task_group() as tg:
        tg.start_soon(GenServer.call, busy, "block")
        await anyio.wait_all_tasks_blocked()
        for i in range(5):
            GenServer.cast(busy, i)
        snap = node.snapshot()
        assert isinstance(snap, NodeSnapshot) and snap.node is None
        by_ref = {p.ref: p for p in snap.processes}
        assert set(by_ref) == {idle, busy}
        assert all(isinstance(p, ProcessInfo) for p in snap.processes)
        assert by_ref[busy].queue_len == 5 and by_ref[busy].messages == 1
        assert by_ref[busy].status == "running" and by_ref[busy].behavior == "Blocker"
        assert by_ref[idle].queue_len == 0 and by_ref[idle].messages == 0
        assert by_ref[idle].status == "waiting" and by_ref[idle].name == "idle"
        assert by_ref[idle].behavior == "Pawn" and by_ref[idle].uptime_s >= 0
        assert snap.names == {"idle": idle}
        gate.set()
    assert await GenServer.call(busy, "ping") == "ping"
    after = {p.ref: p for p in node.snapshot().processes}
    assert after[busy].queue_len == 0 and after[busy].messages == 7


async def test_snapshot_links_and_monitors(node: Node) -> None:
    a = await GenServer.start(Pawn)
    b = await GenServer.start(Pawn)
    watcher = await GenServer.start(Pawn)
    await RemoteLink.link(a, b)
    by_process = await RemoteMonitor.monitor(b, watcher=watcher)
    by_callback = await RemoteMonitor.monitor(a, on_down=Sink())
    snap = node.snapshot()
    assert [set(pair) for pair in snap.links] == [{a, b}]
    monitors = {mref: (target, who) for mref, target, who in snap.monitors}
    assert monitors.keys() == {by_process, by_callback}
    assert monitors[by_process] == (b, watcher)
    assert monitors[by_callback][0] == a and monitors[by_callback][1] != watcher
    await RemoteMonitor.demonitor(by_callback)
    assert [m for m, _, _ in node.snapshot().monitors] == [by_process]


async def test_snapshot_supervision_trees(node: Node) -> None:
    top = await Supervisor.start(
        "one_for_one",
        [
            ChildSpec(id="w", behavior=Pawn),
            ChildSpec.supervisor("sub", strategy="rest_for_one", children=[ChildSpec(id="x", behavior=Pawn)]),
        ],
        name="top",
    )
    sub = {c.id: c.ref for c in await Supervisor.which_children(top)}["sub"]
    [x] = await Supervisor.which_children(sub)
    down = await watch(x.ref)
    GenServer.cast(x.ref, "crash")
    await exit_reason(down)
    await Supervisor.which_children(sub)  # the restart is done once this is answered
    snap = node.snapshot()
    [tree] = snap.supervisors  # only the root; the nested one is a subtree
    assert isinstance(tree, SupervisorTree)
    assert (tree.ref, tree.name, tree.strategy, tree.restarts) == (top, "top", "one_for_one", 0)
    assert [(c.id, c.restarts, c.status) for c in tree.children] == [("w", 0, "running"), ("sub", 0, "running")]
    [subtree] = tree.subtrees
    assert (subtree.ref, subtree.strategy, subtree.restarts) == (sub, "rest_for_one", 1)
    assert [(c.id, c.restarts) for c in subtree.children] == [("x", 1)]
    assert snap.names == {"top": top}
    assert len(snap.processes) == 4


# ---------------------------------------------------------------------------- kill and stop


async def test_node_kill_ends_processes_killed_without_terminate(node: Node) -> None:
    terminated = Sink()
    events = Sink()
    node.events.subscribe(events)
    solo = await GenServer.start(Pawn, terminated)
    sup = await Supervisor.start("one_for_all", [ChildSpec(id="c", behavior=Pawn, arg=terminated)])
    [child] = await Supervisor.which_children(sup)
    await node.kill()
    assert not node.running
    exits = {e.data["ref"]: e.data["reason"] for e in kinds(events, "process_exited")}
    assert exits == {solo: "killed", sup: "killed", child.ref: "killed"}
    assert terminated.items == []
    with pytest.raises(NodeStoppedError):
        await node.spawn(Pawn)
    await node.kill()  # idempotent


async def test_node_stop_runs_terminate(node: Node) -> None:
    terminated = Sink()
    events = Sink()
    node.events.subscribe(events)
    solo = await GenServer.start(Pawn, terminated)
    sup = await Supervisor.start("one_for_one", [ChildSpec(id="c", behavior=Pawn, arg=terminated)])
    [child] = await Supervisor.which_children(sup)
    await node.stop()
    assert not node.running
    assert terminated.items == [("terminate", "shutdown")] * 2
    exits = [(e.data["ref"], e.data["reason"]) for e in kinds(events, "process_exited")]
    # newest root first; a supervisor's children before the supervisor
    assert exits == [(child.ref, "shutdown"), (sup, "shutdown"), (solo, "shutdown")]
    with pytest.raises(NodeStoppedError):
        await node.spawn(Pawn)


async def test_node_stop_kills_a_process_whose_terminate_hangs(node: Node) -> None:
    terminated = Sink()

    class Hangs(Pawn):
        async def terminate(self, reason: Any, state: Any) -> None:
            terminated.add(reason)
            await anyio.sleep_forever()  # stuck: killed or timed out by the runtime

    events = Sink()
    node.events.subscribe(events)
    ref = await GenServer.start(Hangs)
    started = anyio.current_time()
    await node.stop(timeout=0.2)
    assert anyio.current_time() - started < 3
    assert terminated.items == ["shutdown"]
    assert [(e.data["ref"], e.data["reason"]) for e in kinds(events, "process_exited")] == [(ref, "killed")]
    assert not node.running


async def test_facade_calls_use_the_default_node(node: Node) -> None:
    assert current_node() is node
    ref = await GenServer.start(Pawn)
    assert {p.ref for p in node.snapshot().processes} == {ref}
    other = await Node(label="other").start()
    try:
        assert current_node() is node  # the earliest running node stays the default
        with other.as_default():
            assert current_node() is other
            on_other = await GenServer.start(Pawn)
        assert {p.ref for p in other.snapshot().processes} == {on_other}
    finally:
        await other.kill()


async def test_a_stopping_node_starts_no_new_processes(node: Node) -> None:
    from noex_lab.errors import NodeStoppedError

    attempts: list[BaseException] = []

    class Spawner(GenServer):
        async def terminate(self, reason: object, state: object) -> None:
            try:
                await GenServer.start(GenServer)
            except NodeStoppedError as exc:
                attempts.append(exc)

    await GenServer.start(Spawner)
    await node.stop()
    assert len(attempts) == 1
    assert node.process_count == 0


async def test_local_process_ignores_a_ref_of_another_node_with_the_same_incarnation(node: Node) -> None:
    """Two nodes started in the same microsecond may share an incarnation: a ref of the other node
    with a pid and creation of a process here is not that process (spawn(link=...) relied on it)."""
    from noex_lab.core.node_id import NodeId
    from noex_lab.core.refs import ProcessRef

    node.set_id(NodeId.parse("a@127.0.0.1:7001"))
    ref = await GenServer.start(GenServer)
    assert node.local_process(ref) is not None
    assert node.local_process(ProcessRef(None, ref.id, ref.creation)) is not None
    assert node.local_process(ProcessRef(NodeId.parse("a@127.0.0.1:7001"), ref.id, ref.creation)) is not None
    other = ProcessRef(NodeId.parse("b@127.0.0.1:7002"), ref.id, ref.creation)
    assert node.local_process(other) is None
