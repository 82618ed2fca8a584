"""`noex-lab top` through the real command, against `noex-lab node` processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers.cluster import REPO, NodeProcess
from tests.helpers.processes import WatchedProcess, kill_and_reap, repo_env

SECRET_ENV = "NOEX_TOP_TEST_SECRET"
SECRET = {SECRET_ENV: "top-test-secret-0123456789"}


def _env(**extra: str) -> dict[str, str]:
    return repo_env(**SECRET, **extra)


def _top(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "noex_lab.cli", "top", *args, "--secret-env", SECRET_ENV]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=str(REPO))


def _members(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in doc["members"]}


class TopProcess(WatchedProcess):
    """A long-running `noex-lab top`; stdout lines are collected (with arrival times) by a thread."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "noex_lab.cli", "top", *args, "--secret-env", SECRET_ENV]
        super().__init__(cmd, label="top", env=env or _env(), stdin=subprocess.DEVNULL)

    def wait_doc(self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
                 ) -> tuple[float, dict[str, Any]]:
        def matches(line: str) -> bool:
            return predicate(json.loads(line))

        at, line = self.next_line(matches, timeout, what)
        return at, json.loads(line)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise AssertionError(f"top did not end within {timeout} s of signal {sig}") from None

    def kill(self) -> None:
        kill_and_reap(self.proc)


def _start_cluster(n: int, started: list[NodeProcess]) -> list[str]:
    """`n` node processes (with a cluster secret), each seeing the other n-1; returns their ids."""
    first = NodeProcess("t0", "--secret-env", SECRET_ENV, env=SECRET)
    started.append(first)
    ids = [first.wait_line("NODE ").split()[1]]
    for i in range(1, n):
        started.append(NodeProcess(f"t{i}", "--seed", ids[0], "--secret-env", SECRET_ENV, env=SECRET))
    ids += [p.wait_line("NODE ").split()[1] for p in started[1:]]
    for p in started:
        p.wait_line(f"PEERS {n - 1} ", timeout=15.0)
    return ids


@pytest.mark.timeout(90)
def test_top_json_shows_the_members_and_a_killed_node_within_two_seconds(procs: list[NodeProcess]) -> None:
    ids = _start_cluster(4, procs)
    names = {f"t{i}" for i in range(4)}
    stream = TopProcess(ids[1], "--jsonl", "--interval", "0.25")
    try:
        # one-shot: one JSON document with the 4 members, all up, with process counts
        result = _top(ids[0], "--json")
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        members = _members(doc)
        assert set(members) == names
        assert all(m["status"] == "up" and m["process_count"] == 0 for m in members.values())
        assert doc["observer"].startswith("top-") and doc["observer"] not in {m["id"] for m in doc["members"]}
        assert {"supervisors", "events", "global_names"} <= set(doc)
        assert {e["node"] for e in doc["events"] if e["kind"] == "node_up"} == set(ids)

        # the long-running one (a document per refresh) sees the same 4 members
        stream.wait_doc(lambda d: {n for n, m in _members(d).items() if m["status"] == "up"} == names,
                        15.0, "4 members up in the --jsonl stream")

        victim = procs[2]
        killed_at = time.monotonic()
        victim.signal(signal.SIGKILL)
        seen_at, doc = stream.wait_doc(lambda d: _members(d).get("t2", {}).get("status", "down") == "down",
                                       5.0, "t2 down in the --jsonl stream")
        assert seen_at - killed_at < 2.0, f"top reflected the kill after {seen_at - killed_at:.2f} s"
        members = _members(doc)
        assert members["t2"]["down_reason"] == "connection_closed"
        assert {n for n, m in members.items() if m["status"] == "up"} == names - {"t2"}
        assert any(e["kind"] == "node_down" and e["node"] == ids[2] for e in doc["events"])

        # a fresh one-shot after the kill: t2 is gone (absent: nobody gossips it any more) or down
        result = _top(ids[0], "--json")
        assert result.returncode == 0, result.stderr
        members = _members(json.loads(result.stdout))
        assert members.get("t2", {"status": "down"})["status"] == "down"
        assert {n for n, m in members.items() if m["status"] == "up"} == names - {"t2"}

        # SIGTERM ends the long-running top cleanly (its node leaves, exit code 0)
        assert stream.stop(signal.SIGTERM) == 0, stream.stderr
        assert not any("Traceback" in line for line in stream.stderr), stream.stderr
    finally:
        stream.kill()
    # the observer is hidden: no member ever listed it
    for p in procs:
        assert not [line for line in p.history if line.startswith("UP top-")], p.history


@pytest.mark.timeout(60)
def test_top_once_prints_one_view_and_ctrl_c_ends_the_live_view(procs: list[NodeProcess]) -> None:
    ids = _start_cluster(2, procs)
    result = _top(ids[0], "--once")
    assert result.returncode == 0, result.stderr
    assert "members" in result.stdout and "recent events" in result.stdout
    assert "t0" in result.stdout and "t1" in result.stdout

    # the live view (rich Live, as on a terminal), ended by Ctrl-C
    live = TopProcess(ids[0], "--interval", "0.2", env=_env(TTY_COMPATIBLE="1", COLUMNS="120", LINES="60"))
    try:
        live.next_line(lambda line: "t1" in line, 15.0, "the live view")
        assert live.stop(signal.SIGINT) == 0, live.stderr
        assert not any("Traceback" in line for line in live.stderr), live.stderr
    finally:
        live.kill()


@pytest.mark.timeout(30)
def test_top_reports_an_unreachable_seed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "noex_lab.cli", "top", "nobody@127.0.0.1:9", "--json", "--connect-timeout", "1"],
        capture_output=True, text=True, timeout=20, env=_env(), cwd=str(REPO),
    )
    assert result.returncode == 2
    assert "no member reachable" in result.stderr
    assert result.stdout == ""


@pytest.mark.timeout(60)
def test_top_fails_fast_with_the_reason_when_the_seed_refuses_the_login(procs: list[NodeProcess]) -> None:
    seed = NodeProcess("t0", "--secret-env", SECRET_ENV, env=SECRET)
    procs.append(seed)
    ids = [seed.wait_line("NODE ").split()[1]]
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "noex_lab.cli", "top", ids[0], "--json", "--secret-env", "WRONG_SECRET"],
        capture_output=True, text=True, timeout=30, env=_env(WRONG_SECRET="not-the-cluster-secret-0123"),
        cwd=str(REPO),
    )
    took = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert f"{ids[0]} refused the login: " in result.stderr and "secret" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert took < 8.0, f"took {took:.1f} s: the refusal was retried until --connect-timeout (10 s)"
