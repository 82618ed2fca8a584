"""Bounded mailboxes (`max_mailbox=`, `overflow=`): memory stays bounded under a flood, drops are
reported (rate-limited), calls fail at once, system messages always get in, "crash" lets a
supervisor restart the child, and snapshots show the queue and its high-water mark."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from noex_lab import (
    ChildSpec,
    Down,
    Exit,
    GenServer,
    NoexError,
    ProcessRef,
    RemoteLink,
    RemoteMonitor,
    Supervisor,
)
from noex_lab.core.node import Node
from noex_lab.distribution.distributed_supervisor import DistributedChildSpec
from noex_lab.errors import InvalidArgumentError, MailboxFullError
from noex_lab.introspection import NodeEvent
from noex_lab.lab.reprs import process_info_html
from tests.helpers.waiting import wait_until

from ._helpers import DEADLINE, Pawn, Sink

pytestmark = pytest.mark.anyio


class Gated(GenServer):
    """Each message waits for the gate (an anyio.Event in the state) before it is handled: a consumer
    exactly as slow as the test wants. Records every message: ("cast", msg), ("info", msg)."""

    trap_exit = True

    def init(self, arg: tuple[anyio.Event, Sink]) -> dict[str, Any]:
        gate, log = arg
        return {"gate": gate, "log": log}

    async def handle_call(self, msg: Any, state: dict[str, Any]) -> Any:
        await state["gate"].wait()
        return msg, state

    async def handle_cast(self, msg: Any, state: dict[str, Any]) -> Any:
        await state["gate"].wait()
        state["log"].add(("cast", msg))
        return state

    async def handle_info(self, msg: Any, state: dict[str, Any]) -> Any:
        state["log"].add(("info", msg))
        return state


async def gated(node: Node, **options: Any) -> tuple[ProcessRef, anyio.Event, Sink]:
    """A Gated process that took a first cast and waits at the gate (so the next casts queue up)."""
    gate, log = anyio.Event(), Sink()
    ref = await GenServer.start(Gated, (gate, log), **options)
    GenServer.cast(ref, "first")
    await taken(node, ref, 1)
    return ref, gate, log


async def taken(node: Node, ref: ProcessRef, n: int) -> None:
    """Wait until the process took `n` messages from its mailbox."""
    proc = node.local_process(ref)
    assert proc is not None
    await wait_until(lambda: proc.handled >= n, DEADLINE, f"{ref} to take {n} messages")


def rss() -> int:
    """This process's resident memory now, in bytes."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


def overflow_events(node: Node) -> list[NodeEvent]:
    return [e for e in node.events.recent(2000) if e.kind == "mailbox_overflow"]


async def test_unbounded_by_default_and_the_high_water_mark(node: Node) -> None:
    ref, gate, log = await gated(node)
    for i in range(50):
        GenServer.cast(ref, i)
    [info] = node.snapshot().processes
    assert (info.queue_len, info.queue_high_water, info.max_mailbox) == (50, 50, None)
    gate.set()
    await log.wait_for(51)
    snap = node.snapshot()
    [info] = snap.processes
    assert (info.queue_len, info.queue_high_water) == (0, 50)  # the mark stays
    assert "<th>high-water</th><th>bound</th>" in snap._repr_html_()
    assert ">high-water<" in process_info_html(info)
    assert overflow_events(node) == []


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # a million messages: once is enough
@pytest.mark.timeout(60)
async def test_a_million_casts_to_a_slow_process_keep_its_mailbox_and_memory_bounded(node: Node) -> None:
    ref, gate, log = await gated(node, max_mailbox=1000)
    proc = node.local_process(ref)
    assert proc is not None and proc.bound is not None
    total, chunk = 1_000_000 - 1, 50_000  # (the first cast is being handled)
    base = peak = rss()
    started = time.monotonic()
    for start in range(0, total, chunk):
        for i in range(start, min(start + chunk, total)):
            GenServer.cast(ref, i)
        assert len(proc.mailbox) <= 1000
        peak = max(peak, rss())
        await anyio.lowlevel.checkpoint()  # the consumer gets a turn (it is stuck at its gate)
    elapsed = time.monotonic() - started
    growth_mb = (peak - base) / 1e6
    print(f"1M casts into max_mailbox=1000: {elapsed:.2f} s, RSS growth {growth_mb:.1f} MB")
    assert growth_mb < 10  # 1,000 queued casts; unbounded, the same flood grows the process by ~100 MB
    [info] = node.snapshot().processes
    assert (info.queue_len, info.queue_high_water, info.max_mailbox) == (1000, 1000, 1000)
    # every cast is accounted for: handled (or being handled), queued, or dropped and reported
    assert proc.handled + len(proc.mailbox) + proc.bound.dropped == total + 1
    assert proc.bound.dropped == total - 1000
    # reported: the first drop at once, then at most one event a second with the count since the last
    await wait_until(lambda: sum(e.data["dropped"] for e in overflow_events(node)) == total - 1000,
                     DEADLINE, "every drop to be reported")
    events = overflow_events(node)
    assert events[0].data["dropped"] == 1 and len(events) <= 2 + elapsed
    assert all(b.at - a.at >= 0.9 for a, b in itertools.pairwise(events))
    gate.set()
    await log.wait_for(1001)
    assert proc.queue_high_water == 1000


async def test_drops_are_counted_and_reported_at_most_once_a_second(node: Node) -> None:
    ref, gate, log = await gated(node, max_mailbox=10, name="slow")
    for i in range(5_000):
        GenServer.cast(ref, i)
    first = overflow_events(node)
    assert [e.data["dropped"] for e in first] == [1]
    assert first[0].data == {"ref": ref, "name": "slow", "behavior": "Gated", "policy": "drop_newest",
                                  "max_mailbox": 10, "dropped": 1, "dropped_total": 1}
    sink = Sink()
    unsubscribe = node.events.subscribe(lambda e: sink.add(e) if e.kind == "mailbox_overflow" else None)
    try:
        [second] = await sink.wait_for(1, DEADLINE)  # the rest, in one event, about a second later
    finally:
        unsubscribe()
    assert second.data["dropped"] == 5_000 - 10 - 1 and second.data["dropped_total"] == 5_000 - 10
    assert second.at - first[0].at >= 0.9
    gate.set()
    await log.wait_for(11)
    assert [m for _, m in log.items] == ["first", *range(10)]  # the oldest were kept, the newest dropped


async def test_a_call_into_a_full_mailbox_fails_at_once(node: Node) -> None:
    ref, gate, log = await gated(node, max_mailbox=2)
    for i in range(2):  # full
        GenServer.cast(ref, i)
    started = anyio.current_time()
    with pytest.raises(MailboxFullError) as caught:
        await GenServer.call(ref, "hello", timeout=10)
    assert anyio.current_time() - started < 1.0
    err = caught.value
    assert isinstance(err, NoexError) and (err.target, err.max_mailbox, err.overflow) == (ref, 2, "drop_newest")
    assert "max_mailbox=2" in str(err) and "raise max_mailbox" in str(err)
    gate.set()
    await log.wait_for(3)
    assert await GenServer.call(ref, "hello") == "hello"  # room again


async def test_system_messages_are_never_dropped(node: Node) -> None:
    ref, gate, log = await gated(node, max_mailbox=1)
    GenServer.cast(ref, "queued")  # full from here on
    GenServer.cast(ref, "dropped")
    pawn = await GenServer.start(Pawn)
    await RemoteLink.link(ref, pawn)
    mref = await RemoteMonitor.monitor(pawn, watcher=ref)
    GenServer.cast(pawn, "crash")  # -> an Exit (ref traps exits) and a Down, into the full mailbox
    proc = node.local_process(ref)
    assert proc is not None
    await wait_until(lambda: len(proc.mailbox) == 3, DEADLINE, "the Exit and the Down in the full mailbox")
    stopping = Sink()

    async def stop() -> None:
        await GenServer.stop(ref, timeout=DEADLINE)
        stopping.add("stopped")

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop)
        await wait_until(lambda: len(proc.mailbox) == 4, DEADLINE, "the stop request in the full mailbox")
        gate.set()
    assert stopping.items == ["stopped"]
    infos = [m for kind, m in log.items if kind == "info"]
    assert [type(m) for m in infos] == [Exit, Down] and infos[1].monitor == mref
    assert [m for kind, m in log.items if kind == "cast"] == ["first", "queued"]


async def test_crash_policy_kills_the_process_and_its_supervisor_restarts_it(node: Node) -> None:
    gate, log = anyio.Event(), Sink()
    restarts = Sink()
    node.events.subscribe(lambda e: restarts.add(e.data) if e.kind == "supervisor_restart" else None)
    sup = await Supervisor.start(children=[
        ChildSpec(id="slow", behavior=Gated, arg=(gate, log), max_mailbox=3, overflow="crash"),
    ])
    [child] = await Supervisor.which_children(sup)
    assert child.ref is not None
    GenServer.cast(child.ref, "first")
    await taken(node, child.ref, 1)
    for i in range(3):  # full
        GenServer.cast(child.ref, i)
    with pytest.raises(MailboxFullError):
        await GenServer.call(child.ref, "one too many")
    [restart] = await restarts.wait_for(1)
    assert restart["reason"] == "mailbox_overflow" and restart["child"] == "slow"
    [after] = await Supervisor.which_children(sup)
    assert after.ref != child.ref and after.last_exit_reason == "mailbox_overflow"
    [event] = overflow_events(node)
    assert event.data["policy"] == "crash" and event.data["ref"] == child.ref
    gate.set()
    assert await GenServer.call(after.ref, "fresh") == "fresh"
    await Supervisor.stop(sup)


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "10", float("nan")])
async def test_a_bad_max_mailbox_is_refused(node: Node, bad: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="max_mailbox must be a positive int"):
        await GenServer.start(Pawn, max_mailbox=bad)
    with pytest.raises(InvalidArgumentError, match="max_mailbox"):
        ChildSpec(id="c", behavior=Pawn, max_mailbox=bad)
    with pytest.raises(InvalidArgumentError, match="max_mailbox"):
        DistributedChildSpec(id="c", behavior_name="pawn", max_mailbox=bad)
    assert node.processes() == []


async def test_an_unknown_overflow_policy_is_refused(node: Node) -> None:
    with pytest.raises(InvalidArgumentError, match=r"overflow must be one of \('drop_newest', 'crash'\)"):
        await GenServer.start(Pawn, max_mailbox=10, overflow="drop_oldest")
    with pytest.raises(InvalidArgumentError, match="overflow"):
        ChildSpec(id="c", behavior=Pawn, max_mailbox=10, overflow="block")
    with pytest.raises(InvalidArgumentError, match="overflow"):
        DistributedChildSpec.of({"id": "c", "behavior_name": "pawn", "overflow": None})
    with pytest.raises(InvalidArgumentError, match="start= callable"):
        ChildSpec(id="c", start=GenServer.start, max_mailbox=10)
