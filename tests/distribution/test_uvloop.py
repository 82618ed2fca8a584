"""uvloop (`pip install 'noex-lab[fast]'`): a script whose event loop is uvloop runs a `Cluster`
(in-process nodes, heartbeats through the liveness thread's reports, remote calls), and joins a
`noex-lab node --loop uvloop` process. Skipped where uvloop is not installed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from noex_lab import GenServer, RemoteSpawn
from noex_lab.testing.cluster import start_cluster
from tests.distribution.behaviors_for_tests import Echo
from tests.helpers.cluster import NodeProcess, wait_until

pytest.importorskip("uvloop")
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("asyncio", {"use_uvloop": True})  # the test itself runs as a script on uvloop would


@pytest.mark.timeout(60)
async def test_a_script_on_uvloop_runs_a_cluster_and_joins_a_uvloop_node_process(procs: list[NodeProcess]) -> None:
    assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    a, b = await start_cluster(2)  # 200 ms heartbeats: the liveness reports reach this loop
    with b.as_default():
        echo = await GenServer.start(Echo)
    with a.as_default():
        assert await GenServer.call(echo, "ping") == "ping"
    downs: list[Any] = []
    a.on_node_down(lambda peer, reason: downs.append((peer, reason)))
    member = NodeProcess("uv", "--loop", "uvloop", "--behaviors", "tests.distribution.behaviors_for_tests",
                         "--heartbeat-interval-ms", "200", "--seed", str(a.id))
    procs.append(member)
    member_id = await member.started()
    await wait_until(lambda: any(i.id == member_id for i in a.get_nodes()), 10.0, "the uvloop node joined")
    with a.as_default():
        remote = await RemoteSpawn.spawn("echo", member_id)
        assert await GenServer.call(remote, "ping") == "ping"
    # a frozen member is found by the heartbeats alone (the liveness thread -> this uvloop loop)
    member.pause()
    paused_at = time.monotonic()
    await wait_until(lambda: any(peer == member_id for peer, _ in downs), 5.0, "the frozen node seen down")
    assert dict(downs)[member_id] == "heartbeat_timeout" and time.monotonic() - paused_at < 3.0
    member.resume()
