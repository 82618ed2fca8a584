"""Test helpers: in-process clusters, `noex-lab node` processes, bounded waits."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio

from noex_lab import Cluster, Node, NodeId
from tests.helpers.processes import kill_and_reap
from tests.helpers.waiting import wait_until

__all__ = ["NodeProcess", "start_cluster", "wait_until"]

REPO = Path(__file__).resolve().parents[2]


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


class NodeProcess:
    """A `noex-lab node` OS process; its stdout lines are collected by a reader thread."""

    def __init__(self, name: str, *args: str, env: dict[str, str] | None = None, port: int = 0) -> None:
        cmd = [sys.executable, "-m", "noex_lab.cli", "node", "--name", name, "--port", str(port), "--report", *args]
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), full_env.get("PYTHONPATH", "")])
        full_env.update(env or {})
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
            cwd=str(REPO), text=True, bufsize=1,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.history: list[str] = []
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        self.id: NodeId | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.history.append(line.rstrip("\n"))
            self.lines.put(line.rstrip("\n"))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))

    def wait_line(self, prefix: str, timeout: float = 15.0) -> str:
        """Block (in a thread-friendly way) until a stdout line starting with `prefix` arrives."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {prefix!r} line within {timeout} s; stdout={self.history[-10:]} "
                    f"stderr={self.stderr[-20:]}"
                )
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line.startswith(prefix):
                return line

    async def started(self, timeout: float = 20.0) -> NodeId:
        line = await anyio.to_thread.run_sync(self.wait_line, "NODE ", timeout)
        self.id = NodeId.parse(line.split()[1])
        return self.id

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        """Kill by PID and reap (also un-freezes a SIGSTOPped process first)."""
        kill_and_reap(self.proc)
