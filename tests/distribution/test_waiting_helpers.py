"""Awaitable helpers for what tutorials used to poll: Cluster.wait_for_nodes and
DistributedSupervisor.wait_stable, with typed errors that say what was awaited and the state."""

from __future__ import annotations

import pytest

import tests.distribution.behaviors_for_tests  # noqa: F401  (registers echo and flaky)
from noex_lab import (
    Cluster,
    DistributedSupervisor,
    GenServer,
    NoexError,
)
from noex_lab.errors import InvalidArgumentError, WaitTimeoutError
from tests.helpers.cluster import start_cluster

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]


async def test_wait_for_nodes_returns_when_peers_join_and_times_out_naming_them() -> None:
    a, b = await start_cluster(2, prefix="w")
    with a.as_default():
        assert [info.id for info in await Cluster.wait_for_nodes(1, timeout=1.0)] == [b.id]
    c = await Cluster.start("w2", port=0, seeds=[str(a.id)], heartbeat_interval_ms=200)
    for node in (a, b, c):  # the joining node is seen by everyone, event-driven
        assert len(await Cluster.wait_for_nodes(2, node=node, timeout=5.0)) == 2
    with a.as_default(), pytest.raises(WaitTimeoutError) as caught:
        await Cluster.wait_for_nodes(3, timeout=0.3)
    err = caught.value
    assert isinstance(err, NoexError) and isinstance(err, TimeoutError)
    assert "connected to 3 peer(s) did not happen within 0.3 s" in str(err)
    assert "now: 2 peer(s): w1, w2" in str(err)
    with pytest.raises(InvalidArgumentError):
        await Cluster.wait_for_nodes(-1, node=a)


async def test_wait_stable_after_a_node_dies_and_its_timeout_names_the_children() -> None:
    a, b, c = await start_cluster(3, prefix="s")
    with a.as_default():
        specs = [{"id": f"c{i}", "behavior_name": "echo", "arg": i} for i in range(6)]
        sup = await DistributedSupervisor.start(children=specs, node_selector="round_robin", max_restarts=10)
        await c.kill()
        children = await DistributedSupervisor.wait_stable(sup, timeout=5.0)
        assert all(ch.status == "running" and ch.node in (a.id, b.id) for ch in children)
        assert [await GenServer.call(ch.ref, "arg") for ch in children] == list(range(6))

        await DistributedSupervisor.terminate_child(sup, "c1")
        with pytest.raises(WaitTimeoutError) as caught:
            await DistributedSupervisor.wait_stable(sup, timeout=0.3)
        assert isinstance(caught.value, TimeoutError)
        assert f"supervisor {sup} stable" in str(caught.value)
        assert "now: c1 is stopped" in str(caught.value)
