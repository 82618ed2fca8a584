"""What shipped behavior code may do on a node that accepts code: it never silently replaces a
behavior the operator loaded (`--behaviors`) unless the shipper asks to, and the nodes
`%noex local` starts take code only from the kernel's node. Real `noex-lab node` processes."""

from __future__ import annotations

import asyncio

import pytest

from noex_lab import Cluster, GenServer, Node, NodeId, RemoteSpawn
from noex_lab.lab.code_shipping import CodeShipper, ShipResult
from noex_lab.lab.local_nodes import ProcessLauncher
from tests.helpers.cluster import NodeProcess, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

SECRET_ENV = "NOEX_CODE_GUARD_SECRET"
SECRET = "code shipping guard secret 0123456789"
SOURCE = '''
from noex_lab import GenServer


class Shipped(GenServer):
    def handle_call(self, msg, state):
        return ("shipped", msg), state
'''


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the lab layer runs on the kernel's asyncio loop


async def _ship(shipper: CodeShipper, node: Node, name: str, to: NodeId, *, replace: bool = False) -> ShipResult:
    """Ship `SOURCE` as `name` from `node` to its peers; the result of peer `to`."""
    results = await shipper.ship(node, shipper.define(name, SOURCE, "Shipped", replace=replace))
    return next(r for r in results if r.node == to)


async def test_shipped_code_replaces_an_operator_behavior_only_when_asked(procs: list[NodeProcess]) -> None:
    proc = NodeProcess("ops", "--behaviors", "tests.distribution.behaviors_for_tests", "--allow-code",
                       "--secret-env", SECRET_ENV, env={SECRET_ENV: SECRET})
    procs.append(proc)
    target = await proc.started()
    me = await Cluster.start("kern", port=0, seeds=[str(target)], cluster_secret=SECRET)
    await wait_until(lambda: me.get_nodes(), 10.0, "joined the operator's node")
    shipper = CodeShipper(lambda kind, data: None)

    refused = await _ship(shipper, me, "echo", target)
    assert not refused.ok and "already has behavior 'echo'" in refused.detail and "--replace" in refused.detail
    echo = await RemoteSpawn.spawn("echo", target)
    assert await GenServer.call(echo, "ping") == "ping"  # the operator's Echo still runs there

    assert (await _ship(shipper, me, "fresh", target)).ok
    assert (await _ship(shipper, me, "fresh", target)).ok  # a re-run cell replaces its own shipped code
    assert (await _ship(shipper, me, "echo", target, replace=True)).ok
    replaced = await RemoteSpawn.spawn("echo", target)
    assert await GenServer.call(replaced, "ping") == ("shipped", "ping")
    assert await GenServer.call(echo, "ping") == "ping"  # a running process keeps its code


@pytest.mark.timeout(60)
async def test_local_nodes_take_code_only_from_the_kernels_node() -> None:
    kernel = await Cluster.start("kern", port=0, cluster_secret=SECRET)
    launcher = ProcessLauncher(lambda node, stream, line: None, lambda node, code: None)
    assert kernel.id is not None
    local = await launcher.launch("local1", kernel.id, SECRET)
    assert local.node_id is not None
    try:
        assert "--allow-code-from" in local.proc.args  # type: ignore[operator]
        other = await Cluster.start("other", port=0, seeds=[str(kernel.id)], cluster_secret=SECRET)
        await wait_until(lambda: len(other.get_nodes()) == 2, 10.0, "other met the local node")
        shipper = CodeShipper(lambda kind, data: None)
        assert (await _ship(shipper, kernel, "from_kernel", local.node_id)).ok
        refused = await _ship(shipper, other, "from_other", local.node_id)
        assert not refused.ok and f"accepts code only from {kernel.id}" in refused.detail
        ref = await RemoteSpawn.spawn("from_kernel", local.node_id)
        assert await GenServer.call(ref, "hi") == ("shipped", "hi")
    finally:
        await asyncio.wait_for(launcher.kill(local), 15)
