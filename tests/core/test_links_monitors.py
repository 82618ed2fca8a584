"""Links and monitors on local refs: exit propagation, trap_exit, Down delivery, exactly once."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from noex_lab import (
    Down,
    ErrorReason,
    Exit,
    GenServer,
    MonitorRef,
    RemoteLink,
    RemoteMonitor,
)
from noex_lab.core.node import Node
from noex_lab.errors import InvalidArgumentError

from ._helpers import Collector, Pawn, Sink, Trapper, exit_reason, watch

pytestmark = pytest.mark.anyio


class Watcher(Collector):
    """A Collector that monitors, demonitors and links from inside the process."""

    async def handle_call(self, msg: Any, sink: Sink) -> Any:
        if msg == "barrier":
            return list(sink.items), sink
        op, target = msg
        if op == "monitor":
            return await RemoteMonitor.monitor(target), sink
        if op == "demonitor":
            await RemoteMonitor.demonitor(target)
            return None, sink
        if op == "link":
            await RemoteLink.link(self.ref, target)
            return None, sink
        return None, sink


async def dead_ref() -> Any:
    ref = await GenServer.start(Pawn)
    await GenServer.stop(ref)
    return ref


# ---------------------------------------------------------------------------- links


async def test_abnormal_exit_kills_the_linked_partner_with_the_same_reason(node: Node) -> None:
    a_sink, b_sink = Sink(), Sink()
    a = await GenServer.start(Pawn, a_sink)
    b = await GenServer.start(Pawn, b_sink)
    await RemoteLink.link(a, b)
    a_down, b_down = await watch(a), await watch(b)
    GenServer.cast(a, "crash")
    a_reason = await exit_reason(a_down)
    assert isinstance(a_reason, ErrorReason) and a_reason.exc_type == "RuntimeError"
    assert await exit_reason(b_down) == a_reason
    # b was killed by the exit signal: its terminate did not run
    assert b_sink.items == []


async def test_links_are_bidirectional_and_propagate_along_a_chain(node: Node) -> None:
    a, b, c = [await GenServer.start(Pawn) for _ in range(3)]
    await RemoteLink.link(a, b)
    await RemoteLink.link(b, c)
    downs = [await watch(r) for r in (a, b, c)]
    GenServer.cast(c, "crash")  # the last one crashes: b, then a, follow
    reasons = [await exit_reason(d) for d in downs]
    assert isinstance(reasons[2], ErrorReason)
    assert reasons == [reasons[2]] * 3


async def test_shutdown_propagates_through_links(node: Node) -> None:
    a = await GenServer.start(Pawn)
    b = await GenServer.start(Pawn, Sink())
    await RemoteLink.link(a, b)
    b_down = await watch(b)
    await GenServer.stop(a, "shutdown")
    assert await exit_reason(b_down) == "shutdown"


async def test_normal_exit_does_not_propagate(node: Node) -> None:
    a = await GenServer.start(Pawn)
    b = await GenServer.start(Pawn)
    await RemoteLink.link(a, b)
    a_down = await watch(a)
    GenServer.cast(a, ("stop", "normal"))
    assert await exit_reason(a_down) == "normal"
    assert await GenServer.call(b, "ping") == "pong"
    assert node.snapshot().links == []


async def test_unlink(node: Node) -> None:
    a = await GenServer.start(Pawn)
    b = await GenServer.start(Pawn)
    await RemoteLink.link(a, b)
    assert [set(pair) for pair in node.snapshot().links] == [{a, b}]
    await RemoteLink.unlink(b, a)
    assert node.snapshot().links == []
    a_down = await watch(a)
    GenServer.cast(a, "crash")
    assert isinstance(await exit_reason(a_down), ErrorReason)
    assert await GenServer.call(b, "ping") == "pong"


async def test_link_by_name_and_from_inside_a_process(node: Node) -> None:
    w = await GenServer.start(Watcher, Sink())
    await GenServer.start(Pawn, name="target")
    await GenServer.call(w, ("link", "target"))
    w_down = await watch(w)
    GenServer.cast("target", "crash")
    assert (await exit_reason(w_down)).exc_type == "RuntimeError"


async def test_trap_exit_receives_exit_messages(node: Node) -> None:
    sink = Sink()
    trapper = await GenServer.start(Trapper, sink)
    crasher = await GenServer.start(Pawn)
    quitter = await GenServer.start(Pawn)
    stopper = await GenServer.start(Pawn)
    for other in (crasher, quitter, stopper):
        await RemoteLink.link(trapper, other)
    GenServer.cast(crasher, "crash")
    first = (await sink.wait_for(1))[0]
    assert isinstance(first, Exit) and first.from_ == crasher
    assert isinstance(first.reason, ErrorReason) and first.reason.exc_type == "RuntimeError"
    GenServer.cast(quitter, ("stop", "normal"))
    await GenServer.stop(stopper, "shutdown")
    # a trapping process also hears of normal exits (the two exits may arrive in either order)
    assert set((await sink.wait_for(3))[1:]) == {Exit(quitter, "normal"), Exit(stopper, "shutdown")}
    # the trapping process lives on
    assert await GenServer.call(trapper, "barrier") == sink.items


async def test_linking_to_a_dead_process_gives_noproc(node: Node) -> None:
    dead = await dead_ref()
    sink = Sink()
    trapper = await GenServer.start(Trapper, sink)
    await RemoteLink.link(trapper, dead)
    assert await sink.wait_for(1) == [Exit(dead, "noproc")]

    plain = await GenServer.start(Pawn)
    plain_down = await watch(plain)
    await RemoteLink.link(plain, dead)
    assert await exit_reason(plain_down) == "noproc"


async def test_linking_to_an_unknown_name_is_an_error(node: Node) -> None:
    a = await GenServer.start(Pawn)
    with pytest.raises(Exception) as info:
        await RemoteLink.link(a, "no-such-name")
    assert isinstance(info.value, LookupError)


# ---------------------------------------------------------------------------- monitors


async def test_monitor_delivers_down_with_the_real_reason_to_the_calling_process(node: Node) -> None:
    sink = Sink()
    w = await GenServer.start(Watcher, sink)
    target = await GenServer.start(Pawn)
    mref = await GenServer.call(w, ("monitor", target))
    assert isinstance(mref, MonitorRef)
    GenServer.cast(target, "crash")
    [down] = await sink.wait_for(1)
    assert isinstance(down, Down)
    assert down.monitor == mref and down.ref == target
    assert isinstance(down.reason, ErrorReason) and down.reason.message == "pawn crashed on purpose"
    # a monitor does not link: the watcher is still alive
    assert await GenServer.call(w, "barrier") == [down]


async def test_monitor_with_watcher_argument(node: Node) -> None:
    sink = Sink()
    w = await GenServer.start(Collector, sink)
    target = await GenServer.start(Pawn)
    mref = await RemoteMonitor.monitor(target, watcher=w)
    await GenServer.stop(target, "shutdown")
    assert await sink.wait_for(1) == [Down(mref, target, "shutdown")]


async def test_monitor_by_name(node: Node) -> None:
    target = await GenServer.start(Pawn, name="watched")
    sink = Sink()
    mref = await RemoteMonitor.monitor("watched", on_down=sink)
    await GenServer.stop("watched")
    assert await sink.wait_for(1) == [Down(mref, target, "normal")]


async def test_monitor_of_a_dead_or_unknown_target_gives_noproc_at_once(node: Node) -> None:
    dead = await dead_ref()
    sink = Sink()
    w = await GenServer.start(Collector, sink)
    mref = await RemoteMonitor.monitor(dead, watcher=w)
    assert await sink.wait_for(1, timeout=1) == [Down(mref, dead, "noproc")]

    callback_sink = Sink()
    mref2 = await RemoteMonitor.monitor("no-such-name", on_down=callback_sink)
    [down] = await callback_sink.wait_for(1, timeout=1)
    assert down.monitor == mref2 and down.reason == "noproc"
    assert node.snapshot().monitors == []


async def test_monitor_outside_a_process_needs_a_watcher(node: Node) -> None:
    target = await GenServer.start(Pawn)
    with pytest.raises(InvalidArgumentError):
        await RemoteMonitor.monitor(target)


async def test_each_monitor_fires_exactly_once(node: Node) -> None:
    target = await GenServer.start(Pawn)
    callback_sink = Sink()
    process_sink = Sink()
    w = await GenServer.start(Collector, process_sink)
    callback_mrefs = [await RemoteMonitor.monitor(target, on_down=callback_sink) for _ in range(100)]
    process_mrefs = [await RemoteMonitor.monitor(target, watcher=w) for _ in range(100)]
    assert len(set(callback_mrefs) | set(process_mrefs)) == 200
    assert len(node.snapshot().monitors) == 200
    GenServer.cast(target, "crash")
    await callback_sink.wait_for(100)
    await process_sink.wait_for(100)
    # every Down is delivered when the target exits: once the barrier call is answered
    # and all background callbacks ran, any duplicate would be visible
    received = await GenServer.call(w, "barrier")
    await anyio.wait_all_tasks_blocked()
    for mrefs, downs in ((callback_mrefs, callback_sink.items), (process_mrefs, received)):
        assert len(downs) == 100
        assert sorted(d.monitor for d in downs) == sorted(mrefs)
        assert all(d.ref == target and d.reason.exc_type == "RuntimeError" for d in downs)
    assert node.snapshot().monitors == []


async def test_demonitor_is_idempotent_and_no_down_arrives_after_it(node: Node) -> None:
    sink = Sink()
    w = await GenServer.start(Watcher, sink)
    target = await GenServer.start(Pawn)
    removed = await GenServer.call(w, ("monitor", target))
    kept = await GenServer.call(w, ("monitor", target))
    await GenServer.call(w, ("demonitor", removed))
    await GenServer.call(w, ("demonitor", removed))

    removed_cb, kept_cb = Sink(), Sink()
    removed2 = await RemoteMonitor.monitor(target, on_down=removed_cb)
    await RemoteMonitor.monitor(target, on_down=kept_cb)
    await RemoteMonitor.demonitor(removed2)
    await RemoteMonitor.demonitor(removed2)
    assert len(node.snapshot().monitors) == 2

    GenServer.cast(target, "crash")
    [down] = await sink.wait_for(1)
    assert down.monitor == kept
    await kept_cb.wait_for(1)
    assert await GenServer.call(w, "barrier") == [down]
    await anyio.wait_all_tasks_blocked()
    assert removed_cb.items == []
    # demonitor after the Down is still fine
    await RemoteMonitor.demonitor(kept)


async def test_on_down_callbacks_sync_and_async(node: Node) -> None:
    target = await GenServer.start(Pawn)
    sync_sink, async_sink = Sink(), Sink()

    async def async_on_down(down: Down) -> None:
        await anyio.lowlevel.checkpoint()
        async_sink.add(down)

    m1 = await RemoteMonitor.monitor(target, on_down=sync_sink)
    m2 = await RemoteMonitor.monitor(target, on_down=async_on_down)
    await GenServer.stop(target, "shutdown")
    assert await sync_sink.wait_for(1) == [Down(m1, target, "shutdown")]
    assert await async_sink.wait_for(1) == [Down(m2, target, "shutdown")]


async def test_a_watcher_exit_removes_its_monitors(node: Node) -> None:
    w = await GenServer.start(Watcher, Sink())
    target = await GenServer.start(Pawn)
    await GenServer.call(w, ("monitor", target))
    assert len(node.snapshot().monitors) == 1
    await GenServer.stop(w)
    assert node.snapshot().monitors == []
    target_down = await watch(target)
    await GenServer.stop(target)
    assert await exit_reason(target_down) == "normal"
    assert [e for e in node.events.recent(200) if e.kind == "error"] == []
