"""Hostile authenticated peers against a real `noex-lab node` process: registry changes only
from who may make them, links and call senders only of the asking node, bounded gossip dials.
Each attack is crafted frames on a real authenticated connection (an in-process node's), and a
well-behaved peer keeps working through it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from noex_lab import (
    CallTimeoutError,
    Cluster,
    GenServer,
    GlobalNameConflictError,
    GlobalRegistry,
    Node,
    NodeId,
    ProcessRef,
    RemoteSpawn,
)
from noex_lab.distribution import protocol as p
from noex_lab.errors import NotPermittedError
from tests.distribution.behaviors_for_tests import Echo, Watcher
from tests.helpers.cluster import NodeProcess, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

SECRET = "hostile peers hold this secret too"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # one backend: the victim is an OS process


@pytest.fixture(scope="module")
def victim() -> Iterator[NodeProcess]:
    """One `noex-lab node` process for the whole module; each test brings new peers to it."""
    proc = NodeProcess("victim", "--secret-env", "HOSTILE_SECRET",
                       "--behaviors", "tests.distribution.behaviors_for_tests", env={"HOSTILE_SECRET": SECRET})
    try:
        proc.id = NodeId.parse(proc.wait_line("NODE ", 20.0).split()[1])
        yield proc
    finally:
        proc.stop()


async def _peers(victim: NodeProcess) -> tuple[Node, Node, NodeId]:
    """A well-behaved node and a hostile one, both members with the victim."""
    assert victim.id is not None
    good = await Cluster.start("good", port=0, seeds=[str(victim.id)], cluster_secret=SECRET)
    evil = await Cluster.start("evil", port=0, seeds=[str(victim.id)], cluster_secret=SECRET)
    await wait_until(lambda: len(good.get_nodes()) == 2 and len(evil.get_nodes()) == 2, 5.0, "a mesh of three")
    return good, evil, victim.id


async def _victim_names(good: Node, victim: NodeId) -> dict[str, Any]:
    snap = await good.distribution.router.rpc(victim, "node.snapshot", None, 3.0)
    return dict(snap.global_names)


async def _still_works(good: Node, victim: NodeId, name: str) -> None:
    """The well-behaved peer registers a fresh name on the victim and calls it."""
    with good.as_default():
        ref = await RemoteSpawn.spawn("echo", victim, name=name, registration="global")
        assert GlobalRegistry.whereis(name) == ref
        assert await GenServer.call(name, "ping") == "ping"


async def test_registry_changes_are_taken_only_from_who_may_make_them(victim: NodeProcess) -> None:
    good, evil, vid = await _peers(victim)
    rpc, cast = evil.distribution.router.rpc, evil.distribution.router.rpc_cast
    with good.as_default():
        mine = await GenServer.start(Echo)
        await GlobalRegistry.register("good-svc", mine)
        theirs = await RemoteSpawn.spawn("echo", vid, name="victim-svc", registration="global")
    with evil.as_default():
        evil_ref = await GenServer.start(Echo)
    conflicts: list[Any] = []
    good.events.subscribe(lambda e: conflicts.append(e) if e.kind == "global_conflict" else None)

    # a commit without the lock, and a commit over an owner while holding the lock
    with pytest.raises(NotPermittedError):
        await rpc(vid, "global.commit", ["stolen", "evil/1", evil_ref], 3.0)
    assert await rpc(vid, "global.lock", ["good-svc", "evil/2", evil_ref], 3.0) == mine
    with pytest.raises(GlobalNameConflictError):
        await rpc(vid, "global.commit", ["good-svc", "evil/2", evil_ref], 3.0)
    await rpc(vid, "global.unlock", ["good-svc", "evil/2"], 3.0)
    # dropping another node's name; asserting a name for its own process after joining
    cast(vid, "global.drop", ["good-svc", mine])
    cast(vid, "global.sync", {"names": [["good-svc", evil_ref], ["victim-svc", evil_ref]], "conflicts": []})
    # a fake conflict telling the victim its own process lost, directly and inside a sync
    cast(vid, "global.conflict", ["victim-svc", evil_ref, theirs])
    cast(vid, "global.sync", {"names": [], "conflicts": [["victim-svc", evil_ref, theirs]]})
    await rpc(vid, "node.snapshot", None, 3.0)  # answered after the casts above (one connection, in order)
    await _still_works(good, vid, "after-attack")

    names = await _victim_names(good, vid)
    assert names["good-svc"] == mine and names["victim-svc"] == theirs and "stolen" not in names
    with good.as_default():
        assert await GenServer.call(theirs, "ping") == "ping"  # the victim did not kill its process
    assert conflicts == []  # and no conflict was re-broadcast to the good node


async def test_a_lock_held_by_a_hostile_peer_blocks_only_that_name_and_ends_with_its_connection(
    victim: NodeProcess,
) -> None:
    good, evil, vid = await _peers(victim)
    with evil.as_default():
        evil_ref = await GenServer.start(Echo)
    assert await evil.distribution.router.rpc(vid, "global.lock", ["contested", "evil/9", evil_ref, 1e9], 3.0) is None
    await _still_works(good, vid, "unrelated")
    with good.as_default():
        ref = await GenServer.start(Echo)
        with pytest.raises(CallTimeoutError):
            await GlobalRegistry.register("contested", ref, timeout=1.0)
    await evil.kill()
    await wait_until(lambda: len(good.get_nodes()) == 1, 2.0, "the hostile peer gone")
    with good.as_default(), anyio.fail_after(2.0):
        await GlobalRegistry.register("contested", ref)
    assert (await _victim_names(good, vid))["contested"] == ref


async def test_links_and_call_senders_must_be_processes_of_the_asking_node(victim: NodeProcess) -> None:
    good, evil, vid = await _peers(victim)
    with good.as_default():
        watcher = await GenServer.start(Watcher)
        echo = await RemoteSpawn.spawn("echo", vid)
    rpc = evil.distribution.router.rpc
    with pytest.raises(NotPermittedError):  # a spawn linked to a third node's process
        await rpc(vid, "node.spawn", ["echo", None, None, "none", 5.0, watcher], 3.0)
    conn = evil.distribution.transport.conns[vid]

    async def call_as(sender: ProcessRef | None) -> Any:
        return await evil.distribution.router.request(
            conn, [p.CALL, 0, echo.id, echo.creation, sender, "hi"], 3.0, echo)

    with pytest.raises(NotPermittedError):  # a call posing as the good node's process
        await call_as(watcher)
    with evil.as_default():
        own = await GenServer.start(Echo)
    assert await call_as(None) == "hi" and await call_as(own) == "hi"
    assert good.local_process(watcher).links == set()
    with good.as_default():
        assert await GenServer.call(echo, "ping") == "ping"
        assert await GenServer.call(watcher, "log") == []


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.timeout(60)
async def test_one_gossip_of_2000_fake_members_costs_the_node_little_and_peers_keep_working(
    victim: NodeProcess,
) -> None:
    good, evil, vid = await _peers(victim)
    with good.as_default():
        echo = await RemoteSpawn.spawn("echo", vid)
    # loopback addresses nobody listens on: every dial is refused at once (the costliest case)
    fakes = [[f"fake{i}@127.13.{i // 250}.{i % 250 + 1}:9", 1] for i in range(2000)]
    before = _cpu_seconds(victim.pid)
    evil.distribution.transport.conns[vid].send([p.GOSSIP, fakes])
    calls = 0
    window_over = anyio.Event()  # (set by nobody: each pause below is its 50 ms deadline)
    with good.as_default(), anyio.move_on_after(8.0):  # the attack's window: the good peer keeps calling
        for _ in range(1000):
            with anyio.fail_after(1.0):
                assert await GenServer.call(echo, calls) == calls
            calls += 1
            with anyio.move_on_after(0.05):  # about 20 calls a second, as a member would make
                await window_over.wait()
    spent = _cpu_seconds(victim.pid) - before
    print(f"victim CPU during 8 s after a 2,000-member gossip: {spent:.2f} s ({calls} calls)")
    assert spent < 0.5, f"the node spent {spent:.2f} CPU-s"
    assert {i.id for i in good.get_nodes()} == {vid, evil.id}
