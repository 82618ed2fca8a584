"""The liveness thread keeps working in a process with more than 1024 open descriptors
(select() cannot watch a descriptor above 1023; poll() can)."""

from __future__ import annotations

import resource
import socket

import pytest

from noex_lab import Cluster
from tests.helpers.cluster import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_heartbeats_are_heard_with_the_liveness_socket_above_descriptor_1024() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2100:
        pytest.fail(f"this test needs RLIMIT_NOFILE >= 2100 (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2100), hard))
    filler = [socket.socket() for _ in range(1100)]  # push the nodes' own sockets above 1024
    try:
        a = await Cluster.start("a", port=0, heartbeat_interval_ms=100, heartbeat_miss_threshold=3)
        b = await Cluster.start("b", port=0, seeds=[str(a.id)], heartbeat_interval_ms=100,
                                heartbeat_miss_threshold=3)
        assert b.distribution.liveness is not None
        assert b.distribution.liveness._sock.fileno() > 1024
        await wait_until(lambda: len(a.get_nodes()) == 1 and len(b.get_nodes()) == 1, 5.0, "a and b joined")
        for _ in range(5):  # five fresh heartbeats in a row (a deaf thread would hear none)
            seen = b.get_nodes()[0].last_heartbeat_at
            await wait_until(lambda seen=seen: b.get_nodes()[0].last_heartbeat_at != seen, 2.0, "a heartbeat")
        assert not b.distribution.liveness._sock_broken and len(b.get_nodes()) == 1
    finally:
        for s in filler:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
