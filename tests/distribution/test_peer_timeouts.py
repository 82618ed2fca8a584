"""Timeouts in the distribution API and on the wire (two in-process nodes over real TCP): bad
values are refused locally, and a timeout that came from a peer (a STOP frame, a shutdown or
spawn request) is checked again on the receiving node, which answers with a typed error and
keeps running, whatever the peer sent."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from noex_lab import (
    BehaviorRegistry,
    Cluster,
    GenServer,
    GlobalRegistry,
    RemoteSpawn,
)
from noex_lab.distribution import protocol as p
from noex_lab.distribution.introspection import get_state, process_list, recent_events
from noex_lab.errors import InvalidArgumentError
from tests.distribution.behaviors_for_tests import Echo
from tests.helpers.cluster import start_cluster

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup"), pytest.mark.timeout(60)]

HOSTILE = [math.nan, math.inf, -1.0, 1e308, "soon", None]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -2.0, 0, "5"])
async def test_distribution_apis_refuse_a_bad_timeout(bad: Any) -> None:
    a, b = await start_cluster(2)
    BehaviorRegistry.register("echo", Echo)
    with a.as_default():
        ref = await RemoteSpawn.spawn("echo", b.id)
        refused: list[Callable[[], Awaitable[Any]]] = [
            lambda: RemoteSpawn.spawn("echo", b.id, timeout=bad),
            lambda: GenServer.start_remote("echo", b.id, timeout=bad),
            lambda: GenServer.call(ref, "hi", timeout=bad),
            lambda: GenServer.stop(ref, timeout=bad),
            lambda: GlobalRegistry.register("name", ref, timeout=bad),
            lambda: Cluster.snapshot(timeout=bad),
            lambda: get_state(ref, timeout=bad),
            lambda: process_list(b.id, timeout=bad),
            lambda: recent_events(5, b.id, timeout=bad),
        ]
        for attempt in refused:
            with pytest.raises(InvalidArgumentError, match="timeout must be"):
                await attempt()
        assert await GenServer.call(ref, "hi") == "hi"
        assert GlobalRegistry.whereis("name") is None


@pytest.mark.parametrize("bad", HOSTILE)
async def test_a_hostile_timeout_from_a_peer_is_refused_by_the_receiving_node(bad: Any) -> None:
    a, b = await start_cluster(2)
    BehaviorRegistry.register("echo", Echo)
    with a.as_default():
        ref = await RemoteSpawn.spawn("echo", b.id)
        router: Any = a.router
        conn = router.conns[b.id]
        # a STOP frame carries the stop timeout (what GenServer.stop would never send)
        with pytest.raises(InvalidArgumentError, match="timeout must be"):
            await router.request(conn, [p.STOP, 0, ref.id, ref.creation, "normal", bad], 5.0, ref)
        # a supervisor-style shutdown request (None and infinity are a valid "no limit" there)
        if bad is not None and bad != math.inf:
            with pytest.raises(InvalidArgumentError, match="timeout must be"):
                await router.rpc(b.id, "node.shutdown", [ref.id, ref.creation, "shutdown", bad])
        # a spawn request
        with pytest.raises(InvalidArgumentError, match="timeout must be"):
            await router.rpc(b.id, "node.spawn", ["echo", None, None, "none", bad, None])
        # b refused them all and runs on: the process is untouched, no error was reported
        assert await GenServer.call(ref, "still there") == "still there"
        assert [proc.ref for proc in b.processes()] == [ref]
        assert not [e for e in b.events.recent(200) if e.kind == "error"]
        await GenServer.stop(ref, timeout=5)
        assert b.processes() == []
