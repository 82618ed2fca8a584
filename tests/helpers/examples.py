"""Test helpers for `examples/`: each example node is a real OS process, driven by stdin, read by stdout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from noex_lab import NodeId
from tests.helpers.processes import kill_and_reap

REPO = Path(__file__).resolve().parents[2]


class ExampleNode:
    """`python -m <module> <args>` from the repo root; stdout lines are kept with their arrival time."""

    def __init__(self, module: str, *args: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        self.label = " ".join([module, *args])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, cwd=str(REPO), text=True, bufsize=1,
        )
        self.lines: list[tuple[float, str]] = []  # (time.monotonic() on arrival, line)
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._eof = False
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        self.id: NodeId | None = None
        self.pid = self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))

    def matching(self, prefix: str, *, since: float = 0.0) -> list[tuple[float, str]]:
        with self._changed:
            return [(t, line) for t, line in self.lines if line.startswith(prefix) and t >= since]

    def wait_line(self, prefix: str, *, count: int = 1, since: float = 0.0, timeout: float = 15.0) -> tuple[float, str]:
        """The `count`-th stdout line starting with `prefix` (arrived at or after `since`), waiting
        at most `timeout` seconds for it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [(t, line) for t, line in self.lines if line.startswith(prefix) and t >= since]
                if len(found) >= count:
                    return found[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    raise AssertionError(
                        f"{self.label}: {count} x {prefix!r} not seen within {timeout} s "
                        f"(exit code {self.proc.poll()}); last stdout={[x for _, x in self.lines[-15:]]} "
                        f"stderr={self.stderr[-20:]}"
                    )
                self._changed.wait(min(remaining, 0.1))

    def started(self, timeout: float = 20.0) -> NodeId:
        """Wait for `NODE <id> pid=<pid>` (the node listens) and return the id."""
        _, line = self.wait_line("NODE ", timeout=timeout)
        self.id = NodeId.parse(line.split()[1])
        return self.id

    def type_line(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def kill(self) -> float:
        """SIGKILL by PID; returns time.monotonic() just before the signal."""
        at = time.monotonic()
        os.kill(self.pid, signal.SIGKILL)
        return at

    def stop(self) -> None:
        """Kill by PID (if still running), reap, close the pipes."""
        kill_and_reap(self.proc)

