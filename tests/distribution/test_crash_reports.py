"""Crash reports (Erlang's proc_lib reports) and remote errors that point at the user's code.

- every crash writes a report on its own node (logger `noex_lab.crash`, a `crash_report` event),
  a process killed by an exit signal or stopped normally writes none;
- a node pushes its reports to the nodes that subscribed, also from a real `noex-lab node`
  process, and a crash loop reaches a subscriber as a few messages with a count;
- a remote `CallError` names the process, behavior and node, and its terminal rendering shows
  the server's frames with noex_lab's own folded away.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import pytest

from noex_lab import CallError, GenServer, RemoteLink, RemoteSpawn, Stop
from noex_lab.core import tracebacks
from noex_lab.core.crash_report import CrashReport
from noex_lab.distribution import crash_reports
from noex_lab.distribution.attached import require_distribution
from noex_lab.distribution.crash_reports import watch_cluster_crashes
from tests.helpers.cluster import NodeProcess, start_cluster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup"), pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Divider(GenServer):
    def handle_call(self, msg: Any, state: Any) -> Any:
        return 10 / msg, state  # the user's line

    def handle_cast(self, msg: Any, state: Any) -> Any:
        if msg == "stop_badly":
            return Stop("bad_state", state)
        if msg == "stop":
            return Stop("normal", state)
        raise ValueError(f"cannot handle {msg!r}")


async def test_a_crash_writes_one_report_and_exits_by_signal_or_normally_write_none(
        caplog: pytest.LogCaptureFixture) -> None:
    (node,) = await start_cluster(1)
    caplog.set_level(logging.ERROR, logger="noex_lab.crash")
    with node.as_default():
        crasher = await GenServer.start(Divider, name="crasher")
        linked = await GenServer.start(Divider)
        await RemoteLink.link(crasher, linked)
        stopper = await GenServer.start(Divider)
        quitter = await GenServer.start(Divider)
        GenServer.cast(crasher, "boom")
        GenServer.cast(stopper, "stop_badly")
        GenServer.cast(quitter, "stop")
        await wait_until(lambda: node.process_count == 0, 5, "every process to exit")
    reports = [e.data["report"] for e in node.events.recent(200) if e.kind == "crash_report"]
    assert sorted(r.process for r in reports) == sorted([crasher, stopper])  # not the linked one, not quitter
    crash = next(r for r in reports if r.process == crasher)
    assert (crash.name, crash.behavior, crash.node, crash.last_message) == ("crasher", "Divider", node.id,
                                                                          "cast 'boom'")
    assert "ValueError: cannot handle 'boom'" in crash.traceback
    logged = [r for r in caplog.records if r.name == "noex_lab.crash"]
    assert len(logged) == 2 and all(isinstance(getattr(r, "noex_crash_report", None), CrashReport) for r in logged)
    text = next(r.getMessage() for r in logged if "crasher" in r.getMessage())
    assert text.startswith("=CRASH REPORT====") and "last message: cast 'boom'" in text
    assert "in handle_cast" in text and "raise ValueError" in text  # the user's frame, with its line
    assert "process.py" not in text and "noex_lab frame" in text  # the runtime's frames folded


async def test_a_remote_call_error_names_process_behavior_node_and_the_users_line() -> None:
    a, b = await start_cluster(2)
    with b.as_default():
        ref = await GenServer.start(Divider)
    with a.as_default(), pytest.raises(CallError) as info:
        await GenServer.call(ref, 0)
    err = info.value
    assert (err.process, err.behavior, err.node) == (ref, "Divider", b.id)
    assert f"(behavior Divider, process {ref}, node {b.id})" in str(err)
    terminal = "".join(traceback.format_exception(err))  # what a plain `python script.py` prints
    assert f"process {ref} (behavior Divider) on node {b.id} crashed handling this call" in terminal
    assert "return 10 / msg, state  # the user's line" in terminal
    assert "noex_lab frame folded]" in terminal and "core/process.py" not in terminal
    ipython = "\n".join(err._render_traceback_())  # what a notebook shows (ANSI colours)
    assert "return 10 / msg, state" in ipython and str(b.id) in ipython
    assert "await GenServer.call(ref, 0)" in ipython and "routing.py" not in ipython  # the caller's line only
    tracebacks.show_library_frames(True)
    try:
        assert "core/process.py" in "".join(err._render_traceback_())  # the documented switch
    finally:
        tracebacks.show_library_frames(False)


async def test_a_crash_loop_reaches_a_subscriber_as_a_few_reports_with_a_count() -> None:
    a, b = await start_cluster(2)
    got: list[CrashReport] = []
    watch_cluster_crashes(a, got.append)
    await wait_until(lambda: a.id in require_distribution(b).crash_reports.subscribers, 5, "the subscription")
    burst = 200
    with b.as_default():
        for _ in range(burst):
            ref = await GenServer.start(Divider)
            GenServer.cast(ref, "boom")
        await wait_until(lambda: b.process_count == 0, 10, "the crash loop to end")
    await wait_until(lambda: sum(r.count for r in got) == burst, 5, "every crash counted")
    assert len(got) <= 3 * (crash_reports.MAX_PER_SECOND + 1)  # a few messages a second, not one per crash
    assert all(r.node == b.id and r.behavior == "Divider" for r in got)


async def test_a_crash_on_a_node_process_reaches_the_subscriber_and_its_stderr(procs: list[NodeProcess]) -> None:
    (me,) = await start_cluster(1)
    got: list[CrashReport] = []
    watch_cluster_crashes(me, got.append)
    other = NodeProcess("other", "--heartbeat-interval-ms", "200", "--behaviors",
                        "tests.distribution.behaviors_for_tests", "--seed", str(me.id))
    procs.append(other)
    other_id = await other.started()
    await wait_until(lambda: any(i.id == other_id for i in me.get_nodes()), 10, "the node process to join")
    with me.as_default():
        ref = await RemoteSpawn.spawn("echo", other_id)
        with pytest.raises(CallError):  # (a crash before the subscription arrives comes with its backlog)
            await GenServer.call(ref, "crash")
    await wait_until(lambda: got, 5, "the crash report of the node process")
    (report,) = got
    assert (report.process, report.behavior, report.node) == (ref, "Echo", other_id)
    assert "RuntimeError: crashed on request" in report.traceback and report.last_message == "call 'crash'"
    await wait_until(lambda: any(line.startswith("=CRASH REPORT====") for line in other.stderr), 5,
                     "the report on the node's own log (stderr)")

