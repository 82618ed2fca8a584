"""Live widgets in a real ipykernel: updates while the kernel is idle, coalescing, no leaked
models, static fallbacks, background output and errors."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.waiting import wait_pids_gone
from tests.lab.conftest import local_pids, shutdown_and_reap
from tests.lab.kernel_harness import Kernel

pytestmark = pytest.mark.timeout(120)

CYCLES = 100  # membership changes: 2 per cycle (up, then down)

MEMBERSHIP_CHURN = f'''
import asyncio, time
from noex_lab import Cluster, current_node
from noex_lab.lab import session_of

POLL_S = 0.002  # re-check interval of the bounded wait below

async def churn():
    kernel_node = current_node()
    secret = session_of(get_ipython()).secret
    started = time.monotonic()

    async def until(predicate):
        deadline = time.monotonic() + 10
        while not predicate():
            assert time.monotonic() < deadline, "membership did not change in time"
            await asyncio.sleep(POLL_S)

    for i in range({CYCLES}):
        peer = await Cluster.start(f"churn{{i}}", port=0, seeds=[str(kernel_node.id)], cluster_secret=secret,
                                   heartbeat_interval_ms=500)
        await until(lambda: any(n.id == peer.id for n in kernel_node.get_nodes()))
        await peer.kill()
        await until(lambda: all(n.id != peer.id for n in kernel_node.get_nodes()))
    print(f"@@done {{time.monotonic() - started:.3f}}")

churn_task = asyncio.get_running_loop().create_task(churn())
'''


@pytest.fixture(scope="module")
def k() -> Iterator[Kernel]:
    kernel = Kernel()
    try:
        kernel.ok("%load_ext noex_lab")
        kernel.ok("%noex start w --heartbeat-interval-ms 500")
        yield kernel
    finally:
        shutdown_and_reap(kernel)


def _stream_after(k: Kernel, since: int, marker: str) -> str | None:
    for m in k.messages[since:]:
        if m["msg_type"] == "stream" and marker in m["content"]["text"]:
            return str(m["content"]["text"])
    return None


def _bundle(result: Any) -> dict[str, Any]:
    (msg,) = [m for m in result.outputs if m["msg_type"] == "display_data"]
    return dict(msg["content"]["data"])


def test_cluster_view_updates_while_idle_coalesces_and_leaks_no_models(k: Kernel) -> None:
    watch = k.ok("%noex watch")
    (model_id,) = watch.widget_ids()
    assert len(k.comm_opens(0)) >= 3  # the HTML model with its layout and style
    bundle = _bundle(watch)
    assert "<table" in bundle["text/html"] and "up (this node)" in bundle["text/plain"]
    assert "application/vnd.jupyter.widget-view+json" in bundle
    again = k.ok("%noex watch")  # re-running shows the same view: no new model
    assert again.widget_ids() == [model_id]

    instances_before = k.eval("len(__import__('ipywidgets').widgets.widget._instances)")
    start = len(k.messages)
    launch = k.ok(MEMBERSHIP_CHURN)
    idle_at = len(k.messages)  # the launching cell is finished: from here on the kernel is idle
    k.pump_until(lambda: _stream_after(k, start, "@@done") is not None, 60, "the membership churn")
    done = _stream_after(k, start, "@@done")
    assert done is not None and launch.status == "ok"
    elapsed = float(done.split()[1])
    k.pump_for(0.6)  # the last coalesced update is at most 0.25 s behind

    updates = k.updates(model_id, start)
    idle_updates = k.updates(model_id, idle_at)
    assert len(idle_updates) >= 3, "the view must update while the kernel is idle"
    # coalesced: at most 4 renders per second plus one periodic refresh per second
    limit = 5 * elapsed + 3
    assert len(updates) <= limit, f"{len(updates)} updates in {elapsed:.1f} s for {2 * CYCLES} membership changes"
    assert len(updates) < CYCLES, "without coalescing there would be one update per change"
    assert not k.comm_opens(start), "membership changes must not create widget models"
    assert k.eval("len(__import__('ipywidgets').widgets.widget._instances)") == instances_before
    final = k.last_value(model_id)
    assert "down (connection_closed)" in final and "churn99@" in final


SUPERVISED = '''
from noex_lab import ChildSpec, GenServer, Supervisor
from noex_lab.widgets import SupervisorView

class Worker(GenServer):
    def init(self, arg):
        return arg
    def handle_cast(self, msg, state):
        if msg == "crash":
            raise RuntimeError("worker crashed on purpose")
        return state

sup = await Supervisor.start(children=[ChildSpec(id="a", behavior=Worker, arg=1),
                                       ChildSpec(id="b", behavior=Worker, arg=2)], name="sup")
view = SupervisorView(sup)
view
'''


def test_supervisor_view_shows_restarts_live(k: Kernel) -> None:
    r = k.ok(SUPERVISED)
    (model_id,) = r.widget_ids()
    bundle = r.outputs[-1]["content"]["data"]
    assert "restart log" in bundle["text/plain"] and "<table" in bundle["text/html"]
    k.pump_until(lambda: "running" in k.last_value(model_id), 10, "the children to show")
    start = len(k.messages)
    k.ok("from noex_lab import Supervisor\n"
         "child_a = next(c.ref for c in await Supervisor.which_children(sup) if c.id == 'a')\n"
         "GenServer.cast(child_a, 'crash')")
    cell = r"<td[^>]*>[^<]*(<[^/][^>]*>[^<]*</[^>]*>)?[^<]*</td>"
    restarted_once = re.compile(rf"<td[^>]*>a</td>({cell}){{3}}<td[^>]*>1</td>")  # child a: restarts == 1
    k.pump_until(lambda: "restart #1 after RuntimeError: worker crashed on purpose" in k.last_value(model_id)
                 and restarted_once.search(k.last_value(model_id)) is not None, 10,
                 "the restart in the log and in the children table")
    value = k.last_value(model_id)
    assert "RuntimeError: worker crashed on purpose" in value
    assert not k.comm_opens(start)
    text = k.ok("print(view.render_text())").stdout
    assert re.search(r"a\s+<0\.\d+@w@127\.0\.0\.1:\d+>\s+w@127\.0\.0\.1:\d+\s+running\s+1\s+RuntimeError", text)
    r = k.ok("await Supervisor.stop(sup)")
    k.pump_until(lambda: "the supervisor exited: shutdown" in k.last_value(model_id), 10, "the supervisor exit")


def test_event_log_gets_process_output_not_the_cell(k: Kernel) -> None:
    r = k.ok("%noex log")
    (model_id,) = r.widget_ids()
    r = k.ok("class Talker(GenServer):\n"
             "    def handle_call(self, msg, state):\n"
             "        print('hello from inside a process', msg)\n"
             "        return 'ok', state\n"
             "talker = await GenServer.start(Talker)\n"
             "print('cell output', await GenServer.call(talker, 42))")
    assert r.stdout == "cell output ok\n"
    k.pump_until(lambda: "hello from inside a process 42" in k.last_value(model_id), 10, "the process output")
    assert "stream=stdout" in k.last_value(model_id)


def test_background_errors_go_to_the_log_and_under_the_next_cell(k: Kernel) -> None:
    (model_id,) = k.ok("%noex log").widget_ids()
    r = k.ok("import asyncio\n"
             "def broken_callback():\n"
             "    raise ZeroDivisionError('boom in the background')\n"
             "asyncio.get_running_loop().call_later(0.3, broken_callback)\n"
             "current_node().run_callback(lambda: {}['missing'])")
    k.pump_until(lambda: "boom in the background" in k.last_value(model_id), 10, "the error in the event log")
    assert "KeyError" in k.last_value(model_id)
    assert "boom in the background" not in r.text
    nxt = k.ok("x = 1")
    assert re.search(r"noex: [23] background errors since the last cell", nxt.text), nxt.text
    assert "ZeroDivisionError: boom in the background" in nxt.text and "KeyError: 'missing'" in nxt.text
    assert "background error" in nxt.html
    assert "background error" not in k.ok("y = 2").text  # reported once


def test_an_unexpected_local_node_exit_is_reported(k: Kernel) -> None:
    k.ok("%noex local 1", timeout=60)
    (pid,) = local_pids(k)
    (model_id,) = k.ok("%noex log").widget_ids()
    os.kill(pid, signal.SIGKILL)
    assert not wait_pids_gone([pid], 5.0)
    k.pump_until(lambda: "exited unexpectedly" in k.last_value(model_id), 10, "the exit in the event log")
    assert re.search(r"local node local1 \(pid \d+\) exited unexpectedly", k.ok("z = 3").text)


def test_noex_lines_in_the_cell_that_loads_the_extension_report_under_that_cell() -> None:
    """The transformer does not exist yet when this cell is compiled, so its `%noex` line runs
    unawaited; its error still shows under its own cell (issue 16: forgiving magics), and only
    there: the next cell gets no "background error" banner for it."""
    from tests.lab.test_forgiving_magics import output_of

    k = Kernel()
    try:
        first = k.ok("%load_ext noex_lab\n%noex start early --seed not-a-node-id")
        assert first.status == "ok"
        k.pump_until(lambda: "failed" in output_of(k, first.msg_id), 30, "the error under its cell")
        text = output_of(k, first.msg_id)
        assert "%noex start early --seed not-a-node-id failed: " in text and "bad seed" in text, text
        nxt = k.ok("1 + 1")
        assert "background error" not in nxt.text, nxt.text
        k.ok("%noex start fine")  # later cells are rewritten: errors and results show in place
        assert k.eval("str(__import__('noex_lab').current_node().id)").startswith("fine@")
    finally:
        shutdown_and_reap(k)


BLOCKER = '''%%noex behavior blocker
import time
from noex_lab import GenServer

class Blocker(GenServer):
    def init(self, arg):
        return 0
    def handle_cast(self, seconds, state):
        time.sleep(seconds)  # blocks the event loop of the node it runs on
        return state
'''


def test_cluster_view_shows_a_busy_node_and_its_recovery(k: Kernel) -> None:
    (model_id,) = k.ok("%noex watch").widget_ids()
    k.ok("%noex local 1", timeout=60)
    k.ok(BLOCKER)
    k.ok("from noex_lab import RemoteSpawn\n"
         "local1 = next(n.id for n in current_node().get_nodes() if n.id.name == 'local1')\n"
         "blocker = await RemoteSpawn.spawn('blocker', local1)\n"
         "GenServer.cast(blocker, 3.0)")
    row = r"local1@127\.0\.0\.1:\d+</code></td><td[^>]*><span[^>]*>&#9679;</span> {}<"
    k.pump_until(lambda: re.search(row.format("busy"), k.last_value(model_id)) is not None, 10,
                 "local1 to show as busy")
    assert "1 busy" in k.last_value(model_id)
    k.pump_until(lambda: re.search(row.format("up"), k.last_value(model_id)) is not None, 10,
                 "local1 to be up again")
    assert k.eval("[n.status for n in current_node().get_nodes()]") == ["up"]  # busy is not down
