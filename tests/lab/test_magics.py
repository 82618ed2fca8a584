"""Every %noex subcommand, driven in a real ipykernel (one kernel for the whole module: the tests
run in order, like the cells of a notebook)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from noex_lab.distribution.user_secret import load_or_create
from tests.helpers.waiting import pid_alive, wait_pids_gone
from tests.lab.conftest import local_pids, shutdown_and_reap
from tests.lab.kernel_harness import REPO, Kernel

pytestmark = pytest.mark.timeout(90)

COUNTER_V1 = '''%%noex behavior counter
from noex_lab import GenServer

class Counter(GenServer):
    def init(self, arg):
        return arg or 0
    def handle_call(self, msg, state):
        if msg == "version":
            return "v1", state
        return state, state
    def handle_cast(self, msg, state):
        return state + 1
'''


@pytest.fixture(scope="module")
def k() -> Iterator[Kernel]:
    kernel = Kernel()
    try:
        kernel.ok("%load_ext noex_lab")
        yield kernel
    finally:
        shutdown_and_reap(kernel)


def test_importing_noex_lab_does_not_import_ipython() -> None:
    code = "import sys, noex_lab; assert 'IPython' not in sys.modules and 'ipywidgets' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


def test_help_lists_every_subcommand(k: Kernel) -> None:
    summary = k.ok("%noex help").stdout
    text = k.ok("%noex help all").stdout
    for usage in ("start NAME", "local N", "kill NODE", "stop [NODE]", "nodes", "ps [NODE]", "registry",
                  "events [N]", "state TARGET", "trace TARGET [--for SECONDS]", "watch", "behavior NAME", "help"):
        assert usage in text, usage
        assert usage.split(" [--")[0] in summary, usage
    assert "--secret-env" in text and "--heartbeat-interval-ms" in text
    assert "--for" in k.ok("%noex help trace").stdout
    page = k.ok("%noex?").reply["payload"]
    assert page and "Subcommands:" in page[0]["data"]["text/plain"]
    # re-loading is harmless
    k.ok("%load_ext noex_lab")


def test_start_errors_raise_in_the_cell_then_start_and_reuse(k: Kernel) -> None:
    r = k.execute("import socket\nbusy = socket.socket()\nbusy.bind(('127.0.0.1', 0))\nbusy.listen()\n"
                  "port = busy.getsockname()[1]\n%noex start kern --port $port", allow_error=True)
    assert r.ename == "ClusterError" and "cannot listen" in r.error["evalue"]  # type: ignore[index]
    k.ok("busy.close()")
    r = k.execute("%noex start kern --seed not-a-node-id", allow_error=True)
    assert r.ename == "InvalidArgumentError" and "bad seed" in r.error["evalue"]  # type: ignore[index]
    r = k.execute("%noex start kern --secret-env NOEX_TEST_NO_SUCH_VARIABLE", allow_error=True)
    assert r.ename == "LabError" and "NOEX_TEST_NO_SUCH_VARIABLE" in r.error["evalue"]  # type: ignore[index]
    r = k.execute("%noex start 1bad", allow_error=True)
    assert r.ename == "InvalidArgumentError"
    r = k.execute("%noex frobnicate", allow_error=True)
    assert r.ename == "MagicUsageError" and "unknown subcommand" in r.error["evalue"]  # type: ignore[index]
    r = k.execute("%noex local", allow_error=True)
    assert r.ename == "MagicUsageError"

    text = k.ok("%noex start kern --heartbeat-interval-ms 500").text
    assert re.search(r"node kern@127\.0\.0\.1:\d+ started \(authenticated links, the per-user secret\)", text)
    # the file under the tests' temporary XDG_CONFIG_HOME, which the kernel inherits
    assert k.eval("__import__('noex_lab.lab', fromlist=['x']).session_of(get_ipython()).secret") == load_or_create()
    again = k.ok("%noex start kern").text
    assert "reusing node kern@127.0.0.1:" in again
    r = k.execute("%noex start other", allow_error=True)
    assert r.ename == "LabError" and "already kern@" in r.error["evalue"]  # type: ignore[index]
    assert k.eval("str(__import__('noex_lab').current_node().id)").startswith("kern@")


def test_local_starts_tops_up_kills_and_stops(k: Kernel) -> None:
    r = k.ok("%noex local 2", timeout=60)
    assert "started 2 local node(s): local1, local2" in r.text
    pids = local_pids(k)
    assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    assert len(k.eval("[str(n.id) for n in __import__('noex_lab').current_node().get_nodes()]")) == 2

    assert "2 local node(s) already running; nothing to start" in k.ok("%noex local 2").text
    r = k.ok("%noex local 3", timeout=60)
    assert "started 1 local node(s): local3 (2 already running)" in r.text
    assert len(local_pids(k)) == 3

    local2 = k.eval("next(n.pid for n in __import__('noex_lab.lab', fromlist=['x']).session_of(get_ipython())"
                    ".launcher.alive() if n.name == 'local2')")
    r = k.ok("%noex kill local2")
    assert re.search(r"killed local node local2 \(local2@127\.0\.0\.1:\d+, pid \d+, exit code -9\)", r.text)
    assert not wait_pids_gone([local2], 5.0)
    nodes = k.ok("%noex nodes").text
    assert "down (connection_closed)" in nodes and nodes.count("local pid") == 2
    r = k.execute("%noex kill local2", allow_error=True)
    assert r.ename == "LabError" and "not a running node started by %noex local" in r.error["evalue"]  # type: ignore[index]

    r = k.ok("%noex local 3", timeout=60)  # tops up again, reusing the free name
    assert "started 1 local node(s): local2" in r.text
    r = k.ok("%noex stop local3")
    assert re.search(r"stopped local node local3 \(local3@127\.0\.0\.1:\d+, exit code 0\)", r.text)
    events = k.ok("%noex events 50 --kind node_down").text
    assert "reason=graceful_shutdown" in events and "reason=connection_closed" in events
    assert "2 local node(s) already running" in k.ok("%noex local 2").text  # local1 and the new local2


def test_behavior_cell_registers_ships_and_replaces(k: Kernel) -> None:
    r = k.ok(COUNTER_V1)
    assert "behavior 'counter' = Counter registered here; shipped to 2 of 2 other node(s)" in r.text
    assert r.text.count("loaded Counter") == 2
    assert not r.outputs or all(m["msg_type"] != "execute_result" for m in r.outputs)
    k.ok("from noex_lab import GenServer, RemoteSpawn, current_node\n"
         "peers = sorted(str(n.id) for n in current_node().get_nodes())\n"
         "ref = await RemoteSpawn.spawn('counter', peers[0], arg=5, name='c1', registration='local')\n"
         "GenServer.cast(ref, 'inc')\n"
         "assert await GenServer.call(ref, 'get') == 6\n"
         "assert await GenServer.call(ref, 'version') == 'v1'\n"
         "assert 'Counter' in globals()  # the cell ran in the notebook's namespace too")

    r = k.ok(COUNTER_V1.replace('"v1"', '"v2"'))  # re-running replaces it everywhere
    assert r.text.count("loaded Counter") == 2
    k.ok("for peer in peers:\n"
         "    fresh = await RemoteSpawn.spawn('counter', peer)\n"
         "    assert await GenServer.call(fresh, 'version') == 'v2', peer\n"
         "assert await GenServer.call(ref, 'version') == 'v2'  # running processes are upgraded (hot upgrade)\n"
         "assert await GenServer.call(ref, 'get') == 6  # ... keeping their state\n"
         "here = await GenServer.start(Counter, 1)\n"
         "assert await GenServer.call(here, 'version') == 'v2'")

    # a node that joins later gets every behavior; one that does not accept code says so
    r = k.ok("%noex local 3", timeout=60)
    assert "shipped 1 behavior(s) to the new nodes" in r.text
    k.ok("peer3 = next(str(n.id) for n in current_node().get_nodes() if n.id.name == 'local3')\n"
         "assert await GenServer.call(await RemoteSpawn.spawn('counter', peer3), 'version') == 'v2'")
    table = k.ok("%noex behavior").text
    assert table.count("loaded") >= 3 and "counter" in table

    r = k.execute("%%noex behavior nothing\nx = 1", allow_error=True)
    assert r.ename == "BehaviorCellError" and "defines no GenServer subclass" in r.error["evalue"]  # type: ignore[index]
    r = k.execute("%%noex nodes\nx = 1", allow_error=True)
    assert r.ename == "MagicUsageError"


def test_a_node_without_allow_code_refuses_clearly(k: Kernel) -> None:
    k.ok("import os, subprocess, sys\n"
         "from noex_lab.lab import session_of\n"
         "env = dict(os.environ, PLAIN_SECRET=session_of(get_ipython()).secret)\n"
         "plain = subprocess.Popen([sys.executable, '-m', 'noex_lab.cli', 'node', '--name', 'plain', '--port', '0',\n"
         "    '--seed', str(current_node().id), '--secret-env', 'PLAIN_SECRET', '--exit-on-stdin-eof'],\n"
         "    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,\n"
         "    start_new_session=True)")
    plain_pid = k.eval("plain.pid")
    try:
        k.ok("import asyncio\n"
             "async def joined():\n"
             "    while not any(n.id.name == 'plain' for n in current_node().get_nodes()):\n"
             "        await asyncio.sleep(0.05)\n"
             "await asyncio.wait_for(joined(), 20)", timeout=30)
        r = k.ok(COUNTER_V1.replace('"v1"', '"v3"'))
        assert "shipped to 3 of 4 other node(s)" in r.text
        assert re.search(r"plain@127\.0\.0\.1:\d+\s+refused\s+node plain@127\.0\.0\.1:\d+ does not accept code: "
                         r"it was started without allow_code=True \(--allow-code\)", r.text), r.text
        assert "refused" in r.html
    finally:
        k.ok("plain.kill(); plain.wait(10)")
    assert not wait_pids_gone([plain_pid], 5.0)


def test_state_of_local_remote_and_by_ref(k: Kernel) -> None:
    k.ok("box = await GenServer.start(Counter, 41, name='box')\nGenServer.cast('box', 'inc')")
    r = k.ok("%noex state box")
    assert re.search(r"<0\.\d+@kern@127\.0\.0\.1:\d+> Counter \(waiting, queue=0, messages=1\)\nstate: 42", r.text)
    assert "<pre" in r.html
    remote = k.eval("str(ref)")
    r = k.ok(f"%noex state {remote}")
    assert f"{remote} Counter" in r.text and "state: 6" in r.text
    r = k.ok("%noex state c1 --node local1")
    assert "state: 6" in r.text
    r = k.execute("%noex state nobody", allow_error=True)
    assert r.ename == "NotRegisteredError"
    r = k.execute("%noex state <0.999@kern@127.0.0.1:1>", allow_error=True)
    assert r.ename == "LabError" and "is not connected" in r.error["evalue"]  # type: ignore[index]


def test_trace_shows_messages_live_while_idle(k: Kernel) -> None:
    r = k.ok("%noex trace c1 --node local1 --for 30")
    (model_id,) = r.widget_ids()
    assert "trace of <0." in r.text and "state when the trace started: 6" in r.text
    k.ok("for _ in range(3):\n    GenServer.cast(ref, 'inc')")
    k.pump_until(lambda: "9" in k.last_value(model_id) and "3 messages" in k.last_value(model_id), 10,
                 "the trace to show three casts")
    r = k.ok("%noex trace box --for 2")
    (local_id,) = r.widget_ids()
    k.ok("GenServer.cast('box', 'inc')")
    k.pump_until(lambda: "ended (time is up), 1 messages" in k.last_value(local_id), 10, "the local trace to end")
    assert "43" in k.last_value(local_id)
    assert "stopped 1 running trace(s)" in k.ok("%noex trace --stop").text
    k.pump_until(lambda: "ended (stopped)" in k.last_value(model_id), 10, "the remote trace to stop")


def test_tables_nodes_ps_registry_events(k: Kernel) -> None:
    before = len(k.messages)
    nodes = k.ok("%noex nodes")
    assert nodes.text.startswith("cluster seen from kern@") and "up (this node)" in nodes.text
    assert "<table" in nodes.html and "local1@127.0.0.1" in nodes.html
    assert not k.comm_opens(before), "a table is no widget"
    node_id = k.ok("current_node().id")
    assert node_id.html.startswith("<code title='node id'>kern@127.0.0.1:")
    ps = k.ok("%noex ps").text
    assert "processes on kern@" in ps and "box" in ps and "Counter" in ps
    ps1 = k.ok("%noex ps local1").text
    assert "processes on local1@" in ps1 and "c1" in ps1
    assert k.ok("%noex ps --all").text.count("processes on ") == 4  # kern, local1-3 (plain is gone)
    reg = k.ok("%noex registry").text
    assert re.search(r"box\s+local\s+kern@", reg) and re.search(r"c1\s+local\s+local1@", reg)
    assert re.search(r"counter\s+Counter", reg)
    events = k.ok("%noex events 5 --node local1").text
    assert "last 5 events of local1@" in events
    assert "node_up" in k.ok("%noex events 200 --kind node_up").text
    r = k.execute("%noex events 200 --kind nodeup", allow_error=True)
    assert r.ename == "MagicUsageError" and "unknown event kind 'nodeup'" in r.error["evalue"]  # type: ignore[index]


def test_magic_called_outside_a_top_level_line_still_runs(k: Kernel) -> None:
    r = k.ok("for _ in range(1):\n    task = get_ipython().run_line_magic('noex', 'state box')\nawait task")
    assert "state: 43" in r.text
    assert k.eval("type(get_ipython().run_line_magic('noex', 'nodes')).__name__") == "Future"


def test_stop_everything(k: Kernel) -> None:
    pids = local_pids(k)
    r = k.ok("%noex stop", timeout=60)
    assert re.search(r"stopped 3 local node\(s\); stopped this kernel's node kern@", r.text)
    assert not wait_pids_gone(pids, 5.0)
    assert "not distributed" in k.ok("%noex nodes").text
    r = k.execute("%noex local 1", allow_error=True)
    assert r.ename == "LabError" and "%noex start NAME first" in r.error["evalue"]  # type: ignore[index]
    assert "started" in k.ok("%noex start kern2").text
