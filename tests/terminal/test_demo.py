"""`noex-lab demo` end to end through the real command: it fails over, ends by itself, leaves nothing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.cluster import REPO
from tests.helpers.processes import WatchedProcess, repo_env
from tests.helpers.waiting import wait_pids_gone


def _node_pids_of(demo_pid: int) -> set[int]:
    """Live `noex-lab node` processes named after this demo (`demo-<pid>-<i>`), found through /proc."""
    marker = f"demo-{demo_pid}-".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"noex_lab.cli\x00node" in cmdline and marker in cmdline and state != "Z":
            found.add(int(entry.name))
    return found


def _pids_line(output: str) -> set[int]:
    match = re.search(r"PIDS ((?:\d+ ?)+)", output)
    assert match, output
    return {int(x) for x in match.group(1).split()}


def _run_demo(*args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float, set[int]]:
    """Run the demo to its end; returns its result, its duration and the node processes named after
    it that were still running when it had exited (killed right after, so nothing leaks)."""
    started = time.monotonic()
    leftovers: set[int] = set()
    proc = subprocess.Popen([sys.executable, "-m", "noex_lab.cli", "demo", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=repo_env(**env), cwd=str(REPO))
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"demo did not end within 60 s; output:\n{out}\n{err}") from None
    finally:
        leftovers = _node_pids_of(proc.pid)
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return result, time.monotonic() - started, leftovers


@pytest.mark.timeout(90)
def test_demo_runs_end_to_end_and_leaves_no_process_behind() -> None:
    result, took, leftovers = _run_demo("--nodes", "3", "--duration", "3", TTY_COMPATIBLE="0", COLUMNS="160")
    out = result.stdout
    assert result.returncode == 0, f"{out}\n{result.stderr}"
    assert took < 60
    pids = _pids_line(out)
    assert len(pids) == 3
    kill = re.search(r"killing (demo-\d+-\d) \(pid (\d+)\) with SIGKILL; it runs (\d+) children", out)
    assert kill, out
    moved = int(kill.group(3))
    assert moved >= 1 and int(kill.group(2)) in pids
    assert len(re.findall(rf"child_migrated worker-\d+: {kill.group(1)} -> ", out)) == moved, out
    assert f"failover complete: {moved} children migrated" in out
    assert "node down" in out and "connection_closed" in out
    assert "supervision trees" in out and "DemoWorker" in out  # the view was shown
    assert "nothing left running" in out
    assert "Traceback" not in result.stderr, result.stderr
    assert not leftovers and not wait_pids_gone(pids, 0.0), "node processes outlived the demo"


@pytest.mark.timeout(90)
def test_demo_live_view_on_a_terminal() -> None:
    result, _took, leftovers = _run_demo("--nodes", "2", "--duration", "2", "--children-per-node", "2",
                                        TTY_COMPATIBLE="1", COLUMNS="120", LINES="80")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "\x1b[" in result.stdout  # a live view was drawn with terminal control codes
    assert "child_migrated" in result.stdout and "SIGKILL" in result.stdout
    assert not leftovers and not wait_pids_gone(_pids_line(result.stdout), 0.0)


class RunningDemo(WatchedProcess):
    """A long `noex-lab demo` in the background; its stdout lines are read by a thread."""

    def __init__(self) -> None:
        super().__init__([sys.executable, "-m", "noex_lab.cli", "demo", "--duration", "60"], label="demo",
                         env=repo_env(TTY_COMPATIBLE="0", COLUMNS="160"), stdin=None)
        self.pids: set[int] = set()

    def wait_line(self, text: str, timeout: float = 30.0) -> str:
        return self.next_line(lambda line: text in line, timeout, f"line with {text!r}")[1]

    def wait_supervisor(self) -> None:
        """Until the cluster is up and the supervisor runs; records the node processes' PIDs."""
        self.pids = _pids_line(self.wait_line("PIDS "))
        self.wait_line("DistributedSupervisor")

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for pid in _node_pids_of(self.proc.pid) | wait_pids_gone(self.pids, 0.0):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(60)
def test_node_processes_exit_when_the_demo_is_killed() -> None:
    demo = RunningDemo()
    try:
        demo.wait_supervisor()
        demo.proc.kill()  # no cleanup code runs: the closed stdin pipes make the nodes leave
        demo.proc.wait(timeout=10)
        survivors = wait_pids_gone(demo.pids, 10.0)
        assert not survivors, f"node processes {survivors} outlived the SIGKILLed demo"
    finally:
        demo.cleanup()


@pytest.mark.timeout(60)
def test_sigterm_stops_the_demo_and_everything_it_started() -> None:
    demo = RunningDemo()
    try:
        demo.wait_supervisor()
        demo.proc.send_signal(signal.SIGTERM)
        assert demo.proc.wait(timeout=30) == 0
        assert not wait_pids_gone(demo.pids, 0.0), "node processes outlived the demo"
        assert not _node_pids_of(demo.proc.pid)
        demo.wait_line("nothing left running", 5.0)
    finally:
        demo.cleanup()
