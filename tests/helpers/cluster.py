"""Test helpers: in-process clusters, `noex-lab node` processes, bounded waits."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import anyio

from noex_lab import Cluster, Node, NodeId
from tests.helpers.processes import REPO, WatchedProcess, repo_env
from tests.helpers.waiting import wait_until

__all__ = ["REPO", "NodeProcess", "start_cluster", "wait_until"]


async def start_cluster(n: int, *, fast: bool = True, **options: Any) -> list[Node]:
    """`n` in-process nodes on free ports, all seeded from the first; waits for the full mesh."""
    if fast:
        options.setdefault("heartbeat_interval_ms", 200)
        options.setdefault("heartbeat_miss_threshold", 3)
    first = await Cluster.start("n0", port=0, **options)
    nodes = [first]
    for i in range(1, n):
        nodes.append(await Cluster.start(f"n{i}", port=0, seeds=[str(first.id)], **options))
    await wait_until(lambda: all(len(x.get_nodes()) == n - 1 for x in nodes), 10.0, f"a mesh of {n}")
    return nodes


class NodeProcess(WatchedProcess):
    """A `noex-lab node` OS process; its stdout lines are collected by a reader thread.

    Without `--secret-env` it runs `--no-secret`, like the in-process nodes the tests join it
    with; `user_secret=True` leaves the choice to the command (the per-user secret file)."""

    def __init__(self, name: str, *args: str, env: dict[str, str] | None = None, port: int = 0,
                 user_secret: bool = False, preexec_fn: Callable[[], None] | None = None) -> None:
        if not user_secret and "--secret-env" not in args and "--no-secret" not in args:
            args = ("--no-secret", *args)
        cmd = [sys.executable, "-m", "noex_lab.cli", "node", "--name", name, "--port", str(port), "--report", *args]
        self.started_at = time.time()
        super().__init__(cmd, label=f"node {name}", env=repo_env(**(env or {})), preexec_fn=preexec_fn)
        self.id: NodeId | None = None

    def wait_line(self, prefix: str, timeout: float = 15.0) -> str:
        """Block (in a thread-friendly way) until the next stdout line starting with `prefix`."""
        return self.next_line(lambda line: line.startswith(prefix), timeout, f"{prefix!r} line")[1]

    async def started(self, timeout: float = 20.0) -> NodeId:
        line = await anyio.to_thread.run_sync(self.wait_line, "NODE ", timeout)
        self.id = NodeId.parse(line.split()[1])
        return self.id

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

