"""`noex-lab demo` and `noex-lab top` on a real terminal (a pty of 30 rows, no tmux): the demo's
view fits and shows its events and what is happening, and `q` quits both."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from tests.helpers.cluster import REPO, NodeProcess
from tests.helpers.processes import repo_env
from tests.terminal.test_demo import _node_pids_of

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class OnATerminal:
    """A command whose stdin, stdout and stderr are a pty of `rows` x `cols`."""

    def __init__(self, args: list[str], rows: int = 30, cols: int = 100, **env: str) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        environment = repo_env(**env)
        for name in ("COLUMNS", "LINES", "TTY_COMPATIBLE"):
            environment.pop(name, None)
        self.proc = subprocess.Popen([sys.executable, "-m", "noex_lab.cli", *args], stdin=slave, stdout=slave,
                                     stderr=slave, env=environment, cwd=str(REPO), start_new_session=True)
        os.close(slave)
        self.raw = b""

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace"))

    def read_until(self, predicate: object, timeout: float, what: str) -> None:
        """Read the pty until `predicate(text)` holds or the command ends; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        while not predicate(self.text):  # type: ignore[operator]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; output:\n{self.text[-3000:]}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the command ended and closed the pty
                    chunk = b""
                if not chunk and self.proc.poll() is not None:
                    raise AssertionError(f"ended ({self.proc.returncode}) before {what}; output:\n{self.text[-3000:]}")
                self.raw += chunk

    def press(self, key: bytes) -> None:
        os.write(self.master, key)

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.raw += os.read(self.master, 65536)
                except OSError:
                    break
        return self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        os.close(self.master)


@pytest.mark.timeout(90)
def test_demo_fits_30_rows_says_what_happens_and_q_quits() -> None:
    demo = OnATerminal(["demo", "--nodes", "2", "--duration", "15", "--children-per-node", "2"])
    try:
        def frame(text: str) -> str:  # the latest drawing of the view, from its first line
            return text[text.rfind("now:"):]

        # one whole drawing on 30 rows: what is happening, the children, the events with the failover
        demo.read_until(lambda text: "children by node" in frame(text) and "recent events" in frame(text)
                        and "child_migrated" in frame(text).split("recent events")[-1], 60,
                        "a view showing the failover among its events")
        pressed = time.monotonic()
        demo.press(b"q")
        assert demo.wait(30) == 0, demo.text[-3000:]
        assert time.monotonic() - pressed < 5.0, "q did not end the demo (it ran to its --duration)"
        assert "nothing left running" in demo.text, demo.text[-3000:]
    finally:
        leftovers = _node_pids_of(demo.proc.pid)
        demo.close()
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
    assert not leftovers, "node processes outlived the demo"


@pytest.mark.timeout(60)
def test_q_quits_top(procs: list[NodeProcess]) -> None:
    seed = NodeProcess("q0", "--secret-env", "NOEX_Q_SECRET", env={"NOEX_Q_SECRET": "q-test-secret-0123456789"})
    procs.append(seed)
    seed_id = seed.wait_line("NODE ").split()[1]
    top = OnATerminal(["top", seed_id, "--interval", "0.2", "--secret-env", "NOEX_Q_SECRET"],
                      NOEX_Q_SECRET="q-test-secret-0123456789")
    try:
        top.read_until(lambda text: "q0" in text and "members" in text, 30, "the live view")
        top.press(b"q")
        assert top.wait(15) == 0, top.text[-3000:]
        assert "Traceback" not in top.text
    finally:
        top.close()
