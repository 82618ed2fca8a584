"""DNS seeds (`dns:HOSTNAME:PORT`): every address of a name is a candidate, as with a Kubernetes
headless service. The name comes from /etc/hosts, pointing at 127.0.0.x addresses."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from noex_lab import Cluster
from noex_lab.errors import InvalidArgumentError
from tests.helpers.cluster import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

HOSTS = Path("/etc/hosts")
NAME = "noex-dns-seed-test.internal"
ADDRESSES = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def _free_common_port() -> int:
    """A TCP+UDP port free on every test address (nodes behind one DNS name share a port)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((ADDRESSES[0], 0))
            port = int(probe.getsockname()[1])
        socks = []
        try:
            for address in [*ADDRESSES, "127.0.0.5"]:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    s = socket.socket(socket.AF_INET, kind)
                    socks.append(s)
                    s.bind((address, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no common free port on 127.0.0.2-5")


@pytest.fixture
def hosts_entries() -> Iterator[None]:
    if not os.access(HOSTS, os.W_OK):
        pytest.fail("this test needs to add names to /etc/hosts (run as root, as CI does)")
    original = HOSTS.read_text()
    lines = "".join(f"{address} {NAME}\n" for address in ADDRESSES)
    HOSTS.write_text(original + ("" if original.endswith("\n") else "\n") + lines)
    try:
        yield
    finally:
        HOSTS.write_text(original)


@pytest.mark.usefixtures("hosts_entries")
async def test_nodes_find_each_other_through_a_dns_name() -> None:
    resolved = {info[4][0] for info in socket.getaddrinfo(NAME, 80, type=socket.SOCK_STREAM)}
    assert resolved == set(ADDRESSES), f"/etc/hosts gave {resolved}"
    port = _free_common_port()
    seed = f"dns:{NAME}:{port}"
    members = [
        await Cluster.start(f"pod{i}", host=address, port=port, seeds=[seed], heartbeat_interval_ms=200)
        for i, address in enumerate(ADDRESSES)
    ]
    joiner = await Cluster.start("joiner", host="127.0.0.5", port=port, seeds=[seed], heartbeat_interval_ms=200)
    everyone = [*members, joiner]
    await wait_until(lambda: all(len(n.get_nodes()) == 3 for n in everyone), 10.0, "full mesh via DNS")
    for node in everyone:
        assert {i.id for i in node.get_nodes()} == {n.id for n in everyone} - {node.id}
        assert len(node.distribution.transport.conns) == 3  # one connection per pair


async def test_bad_dns_seed_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="dns:HOSTNAME:PORT"):
        await Cluster.start("x", port=0, seeds=["dns:no-port-here"])
