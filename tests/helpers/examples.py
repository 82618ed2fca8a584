"""Test helpers for `examples/`: each example node is a real OS process, driven by stdin, read by stdout."""

from __future__ import annotations

import os
import signal
import sys
import time

from noex_lab import NodeId
from tests.helpers.processes import WatchedProcess


class ExampleNode(WatchedProcess):
    """`python -m <module> <args>` from the repo root; stdout lines are kept with their arrival time."""

    def __init__(self, module: str, *args: str) -> None:
        super().__init__([sys.executable, "-m", module, *args], label=" ".join([module, *args]))
        self.id: NodeId | None = None

    def wait_line(self, prefix: str, *, count: int = 1, since: float = 0.0, timeout: float = 15.0) -> tuple[float, str]:
        """The `count`-th stdout line starting with `prefix` (arrived at or after `since`), waiting
        at most `timeout` seconds for it."""
        return self.wait_for(lambda line: line.startswith(prefix), timeout, f"{count} x {prefix!r}",
                             count=count, since=since)

    def started(self, timeout: float = 20.0) -> NodeId:
        """Wait for `NODE <id> pid=<pid>` (the node listens) and return the id."""
        _, line = self.wait_line("NODE ", timeout=timeout)
        self.id = NodeId.parse(line.split()[1])
        return self.id

    def kill(self) -> float:
        """SIGKILL by PID; returns time.monotonic() just before the signal."""
        at = time.monotonic()
        os.kill(self.pid, signal.SIGKILL)
        return at


