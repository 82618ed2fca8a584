"""Fault injection: partitions and heals inside the transport, deterministically."""

from __future__ import annotations

from typing import Any

import pytest

from noex_lab import Down, GenServer, RemoteLink, RemoteMonitor
from noex_lab.faults import heal, partition
from tests.distribution.behaviors_for_tests import Echo, Watcher
from tests.helpers.cluster import start_cluster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]



async def test_partition_then_heal_monitors_fire_exactly_once() -> None:
    a, b, c, d = await start_cluster(4)
    with c.as_default():
        target = await GenServer.start(Echo)
    downs: list[Down] = []
    with a.as_default():
        await RemoteMonitor.monitor(target, on_down=downs.append)
    node_downs: dict[Any, list[tuple[Any, str]]] = {n.id: [] for n in (a, b, c, d)}
    for n in (a, b, c, d):
        n.on_node_down(lambda peer, reason, n=n: node_downs[n.id].append((peer, reason)))

    partition([a, b], [c, d])
    expected = {a.id: {b.id}, b.id: {a.id}, c.id: {d.id}, d.id: {c.id}}
    await wait_until(
        lambda: all({i.id for i in n.get_nodes()} == expected[n.id] for n in (a, b, c, d)),
        5.0, "both sides see the other side down",
    )
    await wait_until(lambda: downs, 2.0, "monitor fired")
    assert [(x.ref, x.reason) for x in downs] == [(target, "noconnection")]
    assert {peer for peer, _ in node_downs[a.id]} == {c.id, d.id}
    assert all(reason in ("heartbeat_timeout", "connection_closed") for _, reason in node_downs[a.id])

    heal(a, b, c, d)
    await wait_until(lambda: all(len(n.get_nodes()) == 3 for n in (a, b, c, d)), 8.0, "mesh after heal")
    # the monitor fired once and only once; the process itself is still alive on c
    assert len(downs) == 1
    with a.as_default():
        assert await GenServer.call(target, "ping") == "ping"


async def test_partition_delivers_noconnection_to_links() -> None:
    a, b = await start_cluster(2)
    with a.as_default():
        trapper = await GenServer.start(Watcher)
    with b.as_default():
        partner = await GenServer.start(Echo)
    with a.as_default():
        await RemoteLink.link(trapper, partner)
    partition([a], [b])
    await wait_until(lambda: a.local_process(trapper).state, 5.0, "Exit delivered")
    exits = a.local_process(trapper).state
    assert len(exits) == 1 and exits[0].from_ == partner and exits[0].reason == "noconnection"
    heal(a, b)


async def test_delay_rule_keeps_order() -> None:
    a, b = await start_cluster(2)
    with b.as_default():
        ref = await GenServer.start(Echo)
    a.faults.delay(b.id, 0.05)
    with a.as_default():
        for _ in range(20):
            GenServer.cast(ref, "inc")
        assert await GenServer.call(ref, "get") == 20
    a.faults.heal()
