"""Hot code upgrade across OS processes: re-shipping a behavior's source (what re-running a
`%%noex behavior` cell does) upgrades its running processes on three `noex-lab node` processes
within a second, keeping their state; a failing `code_change` keeps the old code there too."""

from __future__ import annotations

import time

import anyio
import pytest

from noex_lab import Cluster, GenServer, RemoteSpawn, Sys
from noex_lab.distribution.sys_tools import versions
from noex_lab.lab.code_shipping import CodeShipper
from tests.helpers.cluster import NodeProcess, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup"), pytest.mark.timeout(60)]

SECRET_ENV = "NOEX_HOT_UPGRADE_SECRET"
SECRET = "hot upgrade test secret 0123456789abcdef"
V1 = '''
from noex_lab import GenServer


class Counter(GenServer):
    vsn = 1

    def handle_call(self, msg, state):
        return ("v1", state), state

    def handle_cast(self, msg, state):
        return state + 1
'''
V2 = V1.replace("vsn = 1", "vsn = 2").replace('"v1"', '"v2"') + '''
    def code_change(self, old_vsn, state, extra):
        return state if old_vsn == 1 else state["n"]
'''
V3_BROKEN = V2.replace("vsn = 2", "vsn = 3").replace('"v2"', '"v3"').replace(
    'return state if old_vsn == 1 else state["n"]', 'return state["n"]')


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the shipping side is the kernel's (asyncio) code


async def test_processes_on_three_nodes_are_upgraded_within_a_second(procs: list[NodeProcess]) -> None:
    me = await Cluster.start("kern", port=0, cluster_secret=SECRET, heartbeat_interval_ms=200)
    nodes = [NodeProcess(f"w{i}", "--allow-code", "--secret-env", SECRET_ENV, "--seed", str(me.id),
                         env={SECRET_ENV: SECRET}) for i in range(3)]
    procs.extend(nodes)
    ids = [await n.started() for n in nodes]
    await wait_until(lambda: {i.id for i in me.get_nodes()} >= set(ids), 15.0, "three nodes joined")
    shipper = CodeShipper(lambda kind, data: None)
    assert all(r.ok for r in await shipper.ship(me, shipper.define("counter", V1, "Counter")))
    refs = [await RemoteSpawn.spawn("counter", where, arg=40) for where in ids]
    for ref in refs:
        GenServer.cast(ref, "inc")
        assert await GenServer.call(ref, "get") == ("v1", 41)

    started = time.time()
    results = await shipper.ship(me, shipper.define("counter", V2, "Counter"))

    assert [r.detail for r in results] == ["loaded Counter; 1 process upgraded"] * 3
    lags = []
    for where in ids:
        [event] = [e for e in await Sys.events(50, where) if e.kind == "process_upgraded"]
        assert "from_vsn=1 to_vsn=2" in event.text
        lags.append(event.at - started)
    assert max(lags) < 1.0, f"upgraded {lags} s after the shipping started"
    print(f"upgraded on 3 node processes {max(lags) * 1000:.1f} ms after the shipping started")
    for ref in refs:
        GenServer.cast(ref, "inc")
        assert await GenServer.call(ref, "get") == ("v2", 42)  # same process, state kept, new code
    fresh = await RemoteSpawn.spawn("counter", ids[0], arg=0)
    assert await GenServer.call(fresh, "get") == ("v2", 0)

    # a failing code_change: every process keeps version 2, and says why
    results = await shipper.ship(me, shipper.define("counter", V3_BROKEN, "Counter"))
    for r in results:
        assert "kept the old code: code_change raised" in r.detail and "TypeError" in r.detail, r.detail
    rows = [row for where in ids for row in await versions("counter", where)]
    assert len(rows) == 4 and {row[4] for row in rows} == {"2"} and {row[5] for row in rows} == {"old"}
    assert all(row[6].startswith("upgrade failed: TypeError") for row in rows)
    with anyio.fail_after(5):
        assert await GenServer.call(refs[0], "get") == ("v2", 42)
