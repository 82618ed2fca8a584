"""Floods of idle pre-handshake connections against a `noex-lab node` process with a lowered
descriptor limit (RLIMIT_NOFILE): new members still join within 2 s, members keep working, and
running out of descriptors (EMFILE) is survived."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import pytest

from noex_lab import Cluster, GenServer, Node, NodeId, RemoteSpawn
from noex_lab.core.refs import ProcessRef
from noex_lab.distribution.transport import MAX_PENDING_PER_ADDRESS
from noex_lab.distribution.user_secret import load_or_create
from tests.helpers.cluster import NodeProcess, wait_until
from tests.helpers.raw_peer import close_all, closed_by_peer, open_idle

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

BEHAVIORS = ["--behaviors", "tests.distribution.behaviors_for_tests"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the node under attack is an OS process; one backend is enough


def nofile(limit: int) -> Callable[[], None]:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return lower


async def _attacked_node(procs: list[NodeProcess], limit: int) -> tuple[NodeId, Node, ProcessRef]:
    """A node process (the per-user secret, RLIMIT_NOFILE=`limit`), a member joined to it, and
    an Echo on the process the member calls."""
    proc = NodeProcess("target", *BEHAVIORS, user_secret=True, preexec_fn=nofile(limit))
    procs.append(proc)
    target = await proc.started()
    secret = load_or_create()  # the same per-user file (the tests' temporary XDG_CONFIG_HOME)
    member = await Cluster.start("member", port=0, seeds=[str(target)], cluster_secret=secret)
    await wait_until(lambda: any(i.id == target for i in member.get_nodes()), 10.0, "the member joined")
    with member.as_default():
        ref = await RemoteSpawn.spawn("echo", target)
    await _still_works(member, ref)
    return target, member, ref


async def _still_works(member: Node, ref: ProcessRef) -> None:
    with member.as_default():
        assert await GenServer.call(ref, "ping", timeout=5) == "ping"


async def _joins_within(target: NodeId, seconds: float) -> float:
    started = time.monotonic()
    late = await Cluster.start("late", port=0, seeds=[str(target)], cluster_secret=load_or_create())
    await wait_until(lambda: any(i.id == target for i in late.get_nodes()), seconds, "the new member joined")
    return time.monotonic() - started


@pytest.mark.timeout(60)
async def test_a_new_member_joins_within_2s_while_its_own_address_holds_1100_idle_connections(
    procs: list[NodeProcess],
) -> None:
    target, member, ref = await _attacked_node(procs, 1024)
    flood = open_idle(target.port, 1100)  # from 127.0.0.1, the address every legitimate peer uses too
    try:
        await _still_works(member, ref)
        took = await _joins_within(target, 2.0)
        assert took < 2.0
        await wait_until(lambda: sum(map(closed_by_peer, flood)) >= 1100 - MAX_PENDING_PER_ADDRESS, 10.0,
                         "the oldest idle connections shed")
        await _still_works(member, ref)
        assert procs[0].proc.poll() is None
        assert not any("Too many open files" in line for line in procs[0].stderr), procs[0].stderr[-5:]
    finally:
        close_all(flood)


@pytest.mark.timeout(60)
async def test_running_out_of_descriptors_is_survived_by_shedding_and_backing_off(
    procs: list[NodeProcess],
) -> None:
    target, member, ref = await _attacked_node(procs, 64)  # fewer descriptors than one address may hold
    flood = open_idle(target.port, 400, source="127.0.0.2")
    try:
        await wait_until(lambda: any("Too many open files" in line for line in procs[0].stderr), 10.0,
                         "accept failing with EMFILE")
        await _still_works(member, ref)
        took = await _joins_within(target, 2.0)
        assert took < 2.0
        await _still_works(member, ref)
        assert procs[0].proc.poll() is None
    finally:
        close_all(flood)
