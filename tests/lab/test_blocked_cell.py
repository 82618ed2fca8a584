"""Acceptance: a notebook cell that blocks the kernel's event loop (`time.sleep(30)`) makes the
kernel's node *busy*, never *down*, and moves no child (SPEC §3 failure detection, §7, §9).

The kernel's node and two `%noex local` nodes run a `DistributedSupervisor` with children on all
three nodes. While the cell sleeps:

- a third observer, `noex-lab top --jsonl` (a hidden node in its own process), sees the kernel's
  node go busy and never down;
- each local node reports it busy in its own event stream (read afterwards through the kernel:
  `node_busy` for the kernel's node, stamped inside the blocked window, then `node_available`,
  and no `node_down`);
- afterwards the supervisor has the same children with the same refs and no restarts, and
  emitted no `child_migrated` / `node_failure_detected`.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.helpers.processes import WatchedProcess, repo_env
from tests.lab.conftest import local_pids, shutdown_and_reap
from tests.lab.kernel_harness import Kernel

pytestmark = pytest.mark.timeout(150)

SECRET_ENV = "NOEX_BLOCKED_CELL_SECRET"
HEARTBEAT_MS = 500  # busy once the loop stalls 1 s; a loop-bound detector would say down after 1.5 s
BLOCK_S = 30

WORKER_CELL = '''%%noex behavior blocked_cell_worker
from noex_lab import GenServer


class BlockedCellWorker(GenServer):
    def init(self, arg):
        return arg

    def handle_call(self, msg, state):
        return (state, self.node.id.name), state
'''

SUPERVISOR_CELL = '''
from noex_lab import DistributedSupervisor, current_node

sup = await DistributedSupervisor.start(
    children=[{"id": f"w{i}", "behavior_name": "blocked_cell_worker", "arg": i} for i in range(6)],
    node_selector="round_robin",
)
sup_events = []
DistributedSupervisor.on_event(sup, lambda event: sup_events.append(event.kind))


async def children_now():
    return sorted((c.id, str(c.ref), c.node.name, c.status, c.restarts)
                  for c in await DistributedSupervisor.which_children(sup))

children_before = await children_now()
'''

AFTER_CELL = '''
from noex_lab import Sys

children_after = await children_now()
kernel_kinds = [event.kind for event in current_node().events.recent(2000)]
reports = {}
for peer in current_node().get_nodes():
    rows = await Sys.events(2000, peer.id, node=current_node())
    reports[peer.id.name] = [(e.at, e.kind, e.text) for e in rows
                             if e.kind in ("node_busy", "node_available", "node_down")]
'''


class Top(WatchedProcess):
    """`noex-lab top SEED --jsonl`: one JSON document per refresh, read by a thread."""

    def __init__(self, seed: str, env: dict[str, str]) -> None:
        cmd = [sys.executable, "-m", "noex_lab.cli", "top", seed, "--jsonl", "--interval", "0.5",
               "--secret-env", SECRET_ENV, "--heartbeat-interval-ms", str(HEARTBEAT_MS)]
        super().__init__(cmd, label="top", env=env, stdin=subprocess.DEVNULL, new_session=True, clock=time.time)

    @staticmethod
    def _statuses(line: str) -> dict[str, str] | None:
        """{member name: status} of one document; None for a line that is not one."""
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            return None
        return {m["name"]: m["status"] for m in doc["members"]}

    def _documents(self, lines: list[tuple[float, str]]) -> list[tuple[float, dict[str, str]]]:
        return [(at, statuses) for at, line in lines if (statuses := self._statuses(line)) is not None]

    def drain_documents(self) -> list[tuple[float, dict[str, str]]]:
        """Every document that arrived so far, as (arrival time, {member name: status})."""
        return self._documents(self.drain())

    def wait(self, predicate: Any, timeout: float, what: str) -> list[tuple[float, dict[str, str]]]:
        """Documents until one satisfies `predicate(statuses)` (all of them are returned)."""
        def matches(line: str) -> bool:
            statuses = self._statuses(line)
            return statuses is not None and bool(predicate(statuses))

        return self._documents(self.next_lines(matches, timeout, f"top showing {what}"))


def _cell_idle(k: Kernel, msg_id: str) -> bool:
    return any(m["msg_type"] == "status" and m["parent_header"].get("msg_id") == msg_id
               and m["content"]["execution_state"] == "idle" for m in k.messages)


def test_a_blocked_cell_makes_the_kernel_node_busy_not_down_and_moves_nothing() -> None:
    secret = secrets.token_urlsafe(24)
    k = Kernel(extra_env={SECRET_ENV: secret})
    top: Top | None = None
    pids: list[int] = []
    try:
        k.ok("%load_ext noex_lab")
        k.ok(f"%noex start kern --secret-env {SECRET_ENV} --heartbeat-interval-ms {HEARTBEAT_MS}")
        k.ok("%noex local 2", timeout=60)
        pids = local_pids(k)
        assert len(pids) == 2
        k.ok(WORKER_CELL)
        k.ok(SUPERVISOR_CELL)
        before = k.eval("children_before")
        assert sorted({node for _, _, node, _, _ in before}) == ["kern", "local1", "local2"], before
        assert all(status == "running" and restarts == 0 for *_, status, restarts in before), before

        top = Top(k.eval("str(current_node().id)"), repo_env(**{SECRET_ENV: secret}))
        top.wait(lambda s: all(s.get(n) == "up" for n in ("kern", "local1", "local2")), 30,
                 "kern, local1 and local2 up")

        # the blocking cell: the kernel's loop does not turn for BLOCK_S seconds
        started = time.time()
        msg_id = k.kc.execute(f"import time\ntime.sleep({BLOCK_S})")
        during = top.wait(lambda s: s.get("kern") == "busy", 15, "kern busy")

        def cell_finished() -> bool:
            during.extend(top.drain_documents())  # keep every document top prints while the cell sleeps
            return _cell_idle(k, msg_id)

        k.pump_until(cell_finished, BLOCK_S + 30, "the blocking cell to finish")
        ended = time.time()
        assert ended - started >= BLOCK_S
        after = top.wait(lambda s: s.get("kern") == "up", 15, "kern up again after the cell")

        observed = during + after
        down = [(at, s) for at, s in observed if "down" in s.values() or len(s) != 3]
        assert not down, f"a member was down or missing for the observer: {down[:3]}"
        busy_at = [at for at, s in observed if s["kern"] == "busy"]
        assert busy_at and min(busy_at) < started + 5 and max(busy_at) > ended - 5, (
            "the observer saw kern busy only briefly", started, ended, busy_at[:1], busy_at[-1:])
        assert all(s["local1"] == s["local2"] == "up" for _, s in observed)

        # the local nodes' own reports, and the supervisor, read through the kernel
        k.ok(AFTER_CELL)
        reports: dict[str, list[tuple[float, str, str]]] = k.eval("reports")
        assert sorted(reports) == ["local1", "local2"]
        for name, rows in reports.items():
            about_kern = [(at, kind) for at, kind, details in rows if "peer=kern@" in details]
            busy = [at for at, kind in about_kern if kind == "node_busy"]
            assert busy and started < busy[-1] < ended, f"{name} did not report kern busy while it slept: {rows}"
            assert any(kind == "node_available" and at > busy[-1] for at, kind in about_kern), (
                f"{name} did not report kern available again: {rows}")
            assert not [r for r in rows if r[1] == "node_down"], f"{name} saw a node go down: {rows}"
        assert k.eval("children_after") == before, "the children changed: a child migrated or restarted"
        assert k.eval("sup_events") == [], "the supervisor reacted to a busy node"
        kinds = k.eval("kernel_kinds")
        assert "node_down" not in kinds and "child_migrated" not in kinds and "node_failure_detected" not in kinds
    finally:
        if top is not None:
            top.stop()
        shutdown_and_reap(k, pids)
