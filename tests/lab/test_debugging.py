"""Debugging a cluster from a notebook, in a real ipykernel with two `%noex local` node processes
(one kernel for the module: the tests run in order, like the cells of a notebook):

- a remote crash raises a CallError whose traceback display names the node, the behavior and
  the process, and shows the `%%noex behavior` cell by its real In[n] and editor line, with
  noex_lab's frames folded;
- a crash on another node with nobody calling reaches the kernel: a banner under the next cell,
  `%noex crashes`, the event log; a crash loop is one banner line with a count;
- `%noex dashboard` docks the topology, the supervision tree and the events in a side panel;
  `%noex kill` says what happened (node down, children moved), and the pictures show it;
- a SupervisorView marks a supervisor that gave up, and its children, as stopped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.lab.conftest import shutdown_and_reap
from tests.lab.kernel_harness import CellResult, Kernel

pytestmark = pytest.mark.timeout(120)

DIVIDER = '''%%noex behavior divider
from noex_lab import GenServer

class Divider(GenServer):
    def handle_call(self, msg, state):
        return 10 / msg, state

    def handle_cast(self, msg, state):
        raise ValueError(f"cannot handle {msg!r}")
'''


@pytest.fixture(scope="module")
def k() -> Iterator[Kernel]:
    kernel = Kernel()
    try:
        kernel.ok("%load_ext noex_lab")
        kernel.ok("%noex start kern --heartbeat-interval-ms 500", timeout=60)
        kernel.ok("%noex local 2", timeout=90)
        yield kernel
    finally:
        shutdown_and_reap(kernel)


def cell_number(r: CellResult) -> int:
    return int(r.reply["execution_count"])


def test_a_remote_crash_shows_node_behavior_and_the_users_line(k: Kernel) -> None:
    shipped = k.ok(DIVIDER)
    defined_in = cell_number(shipped)
    k.ok("from noex_lab import GenServer, RemoteSpawn, current_node\n"
         "local1 = next(n.id for n in current_node().get_nodes() if n.id.name == 'local1')\n"
         "div = await RemoteSpawn.spawn('divider', local1)")
    r = k.execute("await GenServer.call(div, 0)", allow_error=True)
    assert r.ename == "CallError"
    shown = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(r.error["traceback"]))  # type: ignore[index]
    node = k.eval("str(local1)")
    assert f"on node {node}" in shown and "(behavior Divider)" in shown and "process <0." in shown
    # the behavior's cell by its real number, the line as the editor numbers it (line 1: %%noex)
    assert f"Cell In[{defined_in}] (%%noex behavior divider), line 6, in handle_call" in shown
    assert "return 10 / msg, state" in shown and "ZeroDivisionError: division by zero" in shown
    assert f"Cell In[{cell_number(r)}], line 1" in shown and "await GenServer.call(div, 0)" in shown
    # (one library frame on each side since GenServer.call returns the request's coroutine)
    assert re.search(r"\[\d+ noex_lab frames? folded\]", shown), shown
    assert "routing.py" not in shown and "process.py" not in shown
    # its crash report came back too, but the cell showed the crash already: no banner for it
    assert "crash in the cluster" not in r.text + k.ok("x = 0").text
    assert "Divider" in k.ok("%noex crashes 1").text


UNTIL = """
import asyncio
from noex_lab.lab import session_of
crashes = session_of(get_ipython()).reporter.crashes

from noex_lab.testing.waiting import wait_until as until  # a bounded wait inside the kernel
"""


def test_a_crash_nobody_waits_for_reaches_the_kernel_and_a_loop_is_one_line(k: Kernel) -> None:
    k.ok(UNTIL)
    k.ok("div2 = await RemoteSpawn.spawn('divider', local1)")
    # no caller, no supervisor, another node: the banner under the cell that runs when it comes
    listing = k.ok("GenServer.cast(div2, 'boom')\n%noex crashes 5 --wait 1")
    assert "noex: 1 crash in the cluster since the last cell" in listing.text
    assert "Divider on local1@" in listing.text and "ValueError: cannot handle 'boom'" in listing.text
    assert "last 2 of 2 crash reports in the cluster" in listing.text
    assert "last message: cast 'boom'" in listing.text and "raise ValueError" in listing.text
    assert "<details" in listing.html
    assert "crash_report" in k.ok("%noex events 30 --kind crash_report").text
    log = k.ok("%noex log")
    (model_id,) = log.widget_ids()
    assert "ValueError: cannot handle" in k.last_value(model_id)
    # a crash loop: 60 crashes on local2 are one banner line with the count (the banner of the cell
    # that was running when they came, or of the next: at most one line in each)
    loop = k.ok("local2 = next(n.id for n in current_node().get_nodes() if n.id.name == 'local2')\n"
                "for i in range(60):\n"
                "    GenServer.cast(await RemoteSpawn.spawn('divider', local2), i)")
    wait = k.ok("await until(lambda: crashes.total >= 62, 15.0)")
    counts = []
    for cell in (loop, wait):
        lines = [line for line in cell.text.splitlines() if "Divider on local2@" in line]
        assert len(lines) <= 1, cell.text
        counts += [1 if line.endswith("once") or "crashed once:" in line else
                   int(re.search(r"crashed (\d+) times", line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert sum(counts) == 60, (loop.text, wait.text)


SUPERVISED = '''%%noex behavior steady
from noex_lab import GenServer

class Steady(GenServer):
    def handle_call(self, msg, state):
        return state, state
'''


def test_dashboard_docks_the_views_and_kill_says_what_moved(k: Kernel) -> None:
    k.ok(SUPERVISED)
    k.ok("from noex_lab.distribution import DistributedSupervisor\n"
         "sup = await DistributedSupervisor.start(children=[\n"
         "    {'id': f'w{i}', 'behavior_name': 'steady', 'arg': i} for i in range(4)],\n"
         "    node_selector=lambda nodes, child: sorted(nodes)[int(child[1:]) % len(nodes)])")
    r = k.ok("%noex dashboard sup")
    assert "docked in the side panel" in r.text
    sidecar = [m for m in k.messages if m["msg_type"] == "comm_open"
               and m["content"]["data"]["state"].get("_model_name") == "SidecarModel"]
    assert len(sidecar) == 1
    k.ok("from noex_lab.lab import session_of")
    board = "session_of(get_ipython()).current_dashboard"
    k.pump_until(lambda: k.eval(f"'noex-tree' in {board}.supervisors[0].value and "
                                f"len({board}.supervisors[0].children) == 4"), 10, "the tree picture")
    assert k.eval(f"'noex-topology' in {board}.cluster.value")
    children_on_local2 = k.eval(f"len([c for c in {board}.supervisors[0].children "
                                "if c.node is not None and c.node.name == 'local2'])")
    assert children_on_local2 >= 1
    r = k.ok("%noex kill local2", timeout=60)
    assert re.search(rf"killed local node local2 .*: node down after [\d.]+ s; {children_on_local2} of "
                     rf"{children_on_local2} children moved \(w\d", r.text), r.text
    k.pump_until(lambda: k.eval(f"'noex-child-moved' in {board}.supervisors[0].value and "
                                f"'noex-ghost' in {board}.supervisors[0].value"), 10, "the move in the picture")
    k.pump_until(lambda: k.eval(f"'noex-node-down' in {board}.cluster.value and "
                                f"'noex-link-cut' in {board}.cluster.value"), 10, "the dead node in the topology")
    moves = k.eval(f"[e.kind for e in {board}.supervisors[0].restart_log if e.child and "
                   f"e.kind != 'child_started']")
    assert moves.count("child_migrated") == children_on_local2 and "supervisor_restart" not in moves  # one line each
    # re-running replaces it: the old views are closed, one new side panel
    before = len(k.messages)
    k.ok("%noex dashboard --inline")
    assert any(m["msg_type"] == "comm_close" for m in k.messages[before:])
    assert len([m for m in k.messages[before:] if m["msg_type"] == "comm_open"
                and m["content"]["data"]["state"].get("_model_name") == "SidecarModel"]) == 0


GIVES_UP = '''
from noex_lab import ChildSpec, GenServer, Supervisor
from noex_lab.widgets import SupervisorView

class Fragile(GenServer):
    def handle_cast(self, msg, state):
        raise RuntimeError("fragile")

fragile_sup = await Supervisor.start(children=[ChildSpec(id="f", behavior=Fragile)], max_restarts=1, within_ms=5000)
fragile_view = SupervisorView(fragile_sup)
fragile_view
'''


def test_supervisor_view_marks_a_supervisor_that_gave_up(k: Kernel) -> None:
    r = k.ok(GIVES_UP)
    (model_id,) = r.widget_ids()
    assert "<svg" in r.html and "noex-tree" in r.html  # the static snapshot has the picture too
    k.ok("GenServer.cast((await Supervisor.which_children(fragile_sup))[0].ref, 'x')")
    k.pump_until(lambda: k.eval("[c.restarts for c in fragile_view.children] == [1]"), 10, "the restart")
    k.ok("GenServer.cast((await Supervisor.which_children(fragile_sup))[0].ref, 'x')")
    k.pump_until(lambda: "supervisor stopped: MaxRestartsExceededError" in k.last_value(model_id), 10,
                 "the banner")
    value = k.last_value(model_id)
    assert "noex-supervisor-stopped" in value and "noex-child-running" not in value
    assert ">running<" not in value.replace("&#9679;</span> running", "")  # no row still says running
    assert "stopped" in k.ok("print(fragile_view.render_text())").stdout.split("SUPERVISOR STOPPED")[1]
