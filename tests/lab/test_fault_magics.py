"""`%noex partition`, `%noex heal`, `%noex link`, `%noex faults` in a real ipykernel with `%noex local`
node processes (which get their rules through the system request)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab.conftest import shutdown_and_reap
from tests.lab.kernel_harness import Kernel

pytestmark = pytest.mark.timeout(120)

WAIT = "from noex_lab import current_node\nfrom noex_lab.testing import wait_until\n"


@pytest.fixture(scope="module")
def k() -> Iterator[Kernel]:
    kernel = Kernel()
    try:
        kernel.ok("%load_ext noex_lab")
        yield kernel
    finally:
        shutdown_and_reap(kernel)


def peers(k: Kernel) -> list[str]:
    return sorted(k.eval("[n.id.name for n in __import__('noex_lab').current_node().get_nodes()]"))


def test_partition_heal_and_link_from_the_notebook(k: Kernel) -> None:
    k.ok("%noex start kern --heartbeat-interval-ms 200")
    assert "started 2 local node(s)" in k.ok("%noex local 2", timeout=60).text
    k.ok(WAIT)

    # local1 against this kernel's node and local2: this node's rules cut its own link, the local
    # nodes take theirs by system request; nothing crosses, so they notice by heartbeats
    text = k.ok("%noex partition local1 kern,local2").text
    assert "partition local1 -/- kern,local2 (blackhole" in text
    k.ok("await wait_until(lambda: [n.id.name for n in current_node().get_nodes()] == ['local2'], 5.0, 'cut')")
    k.ok("from noex_lab.testing import wait_until\n"
         "from noex_lab.lab import session_of\n"
         "async def local2_lost_local1():\n"
         "    table = await session_of(get_ipython()).events(20, spec='local2', kind='node_down')\n"
         "    return 'local1' in str(table.rows) and 'heartbeat_timeout' in str(table.rows)\n")
    k.ok("for _ in range(50):\n"
         "    if await local2_lost_local1():\n"
         "        break\n"
         "    await __import__('anyio').sleep(0.1)\n"
         "assert await local2_lost_local1()")
    rules = k.ok("%noex faults").text
    assert "local1" in rules and "blackhole" in rules and "local2" in rules

    assert "healed 3 node(s)" in k.ok("%noex heal").text
    k.ok("await wait_until(lambda: len(current_node().get_nodes()) == 2, 8.0, 'healed')")
    assert "(none)" in k.ok("%noex faults").text

    text = k.ok("%noex link local2 --latency-ms 50 --jitter-ms 20 --loss 0.05").text
    assert "link local2 <-> kern: latency 50 ms + jitter 0..20 ms, loss 5%" in text
    assert "50.0" in k.ok("%noex faults").text
    k.ok("%noex heal")

    text = k.ok("%noex partition kern local2 --mode reset --one-way").text
    assert "kern -/-> local2 (reset" in text
    k.ok("await wait_until(lambda: [n.id.name for n in current_node().get_nodes()] == ['local1'], 2.0, 'reset')")
    k.ok("%noex heal")
    k.ok("await wait_until(lambda: len(current_node().get_nodes()) == 2, 8.0, 'healed')")


def test_bad_fault_commands_raise_typed_errors(k: Kernel) -> None:
    r = k.execute("%noex partition local1 nosuch", allow_error=True)
    assert r.ename == "LabError" and "nosuch" in r.error["evalue"]  # type: ignore[index]
    r = k.execute("%noex link local1 --loss 2", allow_error=True)
    assert r.ename == "InvalidArgumentError" and "loss" in r.error["evalue"]  # type: ignore[index]
    r = k.execute("%noex partition local1 local1", allow_error=True)
    assert r.ename == "InvalidArgumentError" and "both sides" in r.error["evalue"]  # type: ignore[index]
    r = k.execute("%noex partition local1 local2 --mode unplug", allow_error=True)
    assert r.ename == "MagicUsageError"
    assert "partition A,B C,D" in k.ok("%noex help partition").stdout


COUNTER_CELL = """%%noex behavior handoff_counter
from noex_lab import DistributedSupervisor, GenServer, current_node

class HandoffCounter(GenServer):
    def init(self, arg):
        handed = DistributedSupervisor.handed_off()
        return {"count": 0 if handed is None else handed["count"], "handed": handed is not None}

    def handle_cast(self, msg, state):
        state["count"] += 1
        return state

    def handle_call(self, msg, state):
        return [state["count"], state["handed"], current_node().id.name], state

    def handle_handoff(self, state):
        return {"count": state["count"]}
"""


def test_stop_hands_the_nodes_supervised_children_off_before_it_exits(k: Kernel) -> None:
    """`%noex stop NODE` is a graceful leave of the `noex-lab node` process: its
    DistributedSupervisor children move to other nodes first, each new instance getting its old
    one's `handle_handoff` value, so a counter keeps its count (issue 14 point 3)."""
    assert "shipped to" in k.ok(COUNTER_CELL).text
    k.ok("from noex_lab import DistributedSupervisor, GenServer\n"
         "def on_local2(nodes, _child):\n"
         "    return next((n for n in nodes if n.name == 'local2'), nodes[0])\n"
         "csup = await DistributedSupervisor.start(children=[{'id': 'counter', 'behavior_name': 'handoff_counter',\n"
         "                                                    'node_selector': on_local2}])\n"
         "(child,) = await DistributedSupervisor.which_children(csup)\n"
         "assert child.node.name == 'local2', child\n"
         "for _ in range(5):\n"
         "    GenServer.cast(child.ref, 'inc')\n"
         "assert await GenServer.call(child.ref, 'get') == [5, False, 'local2']")
    text = k.ok("%noex stop local2", timeout=30).text
    assert "stopped local node local2" in text and "exit code 0" in text, text
    assert "1 of 1 children moved (counter)" in text, text
    k.ok("(moved,) = await DistributedSupervisor.wait_stable(csup, timeout=5)\n"
         "assert moved.node.name != 'local2' and moved.ref != child.ref, moved\n"
         "count, handed, where = await GenServer.call(moved.ref, 'get')\n"
         "assert (count, handed) == (5, True), (count, handed, where)\n"
         "assert moved.restarts == child.restarts == 0, moved")
