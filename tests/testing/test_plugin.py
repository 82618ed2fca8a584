"""The pytest plugin's fixtures (noex_lab.testing), used here as a user's tests use them."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from noex_lab import GenServer, Node
from noex_lab.core.node import current_node
from noex_lab.errors import InvalidArgumentError
from noex_lab.testing import FaultInjector, wait_until

pytestmark = pytest.mark.anyio


class Echo(GenServer):
    def handle_call(self, msg: Any, state: Any) -> Any:
        return msg, state


async def test_noex_node_is_the_default_node(noex_node: Node) -> None:
    ref = await GenServer.start(Echo)
    assert current_node() is noex_node and noex_node.local_process(ref) is not None
    assert await GenServer.call(ref, "hi") == "hi"


async def test_noex_cluster_partition_and_heal(noex_cluster: Any, noex_faults: FaultInjector, noex_secret: str) -> None:
    a, b, c = await noex_cluster(3)
    assert a.distribution.config.cluster_secret == noex_secret
    noex_faults.partition([a], [b, c])
    await wait_until(lambda: not a.get_nodes() and [i.id for i in b.get_nodes()] == [c.id], 5.0, "a cut off")
    noex_faults.heal()
    await wait_until(lambda: all(len(x.get_nodes()) == 2 for x in (a, b, c)), 10.0, "the mesh again")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_node_processes_pause_resume_kill(
    noex_cluster: Any, noex_node_processes: Any, noex_faults: FaultInjector, tmp_path: Path,
) -> None:
    (tmp_path / "tiny_behaviors.py").write_text(
        "from noex_lab import BehaviorRegistry, GenServer\n"
        "class Tiny(GenServer):\n"
        "    def handle_call(self, msg, state):\n"
        "        return ('tiny', msg), state\n"
        "BehaviorRegistry.register('tiny', Tiny)\n"
    )
    [me] = await noex_cluster(1)
    p, q = await noex_node_processes(2, behaviors="tiny_behaviors", seed=me, pythonpath=[tmp_path])
    assert {i.id for i in me.get_nodes()} == {p.id, q.id}
    from noex_lab import RemoteSpawn

    ref = await RemoteSpawn.spawn("tiny", p.id)
    assert await GenServer.call(ref, 1) == ("tiny", 1)
    with pytest.raises(InvalidArgumentError, match="both are node processes"):
        noex_faults.partition([p], [q])
    noex_faults.pause(p)  # frozen with its connection open: down after the heartbeat timeout
    await wait_until(lambda: p.id not in {i.id for i in me.get_nodes()}, 5.0, "the paused node down")
    noex_faults.restore()  # what teardown does: the process runs again and is redialed
    await wait_until(lambda: p.id in {i.id for i in me.get_nodes()}, 10.0, "the resumed node back")
    await noex_faults.kill(q)
    await wait_until(lambda: q.id not in {i.id for i in me.get_nodes()}, 2.0, "the killed node down")
    assert q.proc.wait(5) == -signal.SIGKILL
