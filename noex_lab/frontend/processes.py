"""Child OS processes of the front ends and of the tests (the notebook's `%noex local/remote`
nodes, `noex-lab demo`'s nodes, the test suite's and the plugin's `NodeProcess`, the benchmarks'
nodes): one launcher. Their output is read by threads, kept (bounded when asked) and waited for
with deadlines, or handed line by line to a callback; their end: always by PID, always reaped,
pipes closed."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..core.errors import ProcessOutputError

log = logging.getLogger(__name__)

LineCallback = Callable[[str, str], None]  # ("stdout" | "stderr", line), on a reader thread
EndCallback = Callable[[int], None]  # the exit code, once both outputs ended, on a reader thread
STDERR_WAIT_S = 5.0  # how long the end waits for the rest of stderr once stdout ended


def kill_and_reap(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL `proc` if it still runs (a SIGSTOPped one is continued first, so it dies at
    once), wait for it (at most 10 s) and close its pipes."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


class WatchedProcess:
    """An OS process whose stdout lines are kept with their arrival time (`clock()`) by a
    reader thread, stderr by another (or merged into stdout), decoded as UTF-8 (a bad byte
    becomes U+FFFD, it never stops the reader).

    `wait_for` looks at everything printed so far (the `count`-th match arrived at or after
    `since`); `next_line` reads on from the line it returned last, like a queue. A long-lived
    process (a notebook's node) passes `keep` to hold only its last lines, `on_line` to get each
    line as it comes and `on_end` to learn its exit code; both run on the reader threads, so
    they hand the work to their own loop, and an exception they raise is logged, never lost."""

    def __init__(
        self, cmd: Sequence[str], *, label: str, env: dict[str, str] | None = None, cwd: str | Path | None = None,
        merge_stderr: bool = False, new_session: bool = False, clock: Callable[[], float] = time.monotonic,
        stdin: int | None = subprocess.PIPE, preexec_fn: Callable[[], None] | None = None,
        keep: int | None = None, on_line: LineCallback | None = None, on_end: EndCallback | None = None,
    ) -> None:
        self.label = label
        self.clock = clock
        self.keep = keep  # lines of stdout (and of stderr) kept; None: all
        self.on_line = on_line
        self.on_end = on_end
        self.proc = subprocess.Popen(
            list(cmd), stdin=stdin, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            env=env, cwd=None if cwd is None else str(cwd), text=True, encoding="utf-8", errors="replace",
            bufsize=1, start_new_session=new_session, preexec_fn=preexec_fn,
        )
        self.pid = self.proc.pid
        self.lines: list[tuple[float, str]] = []  # (clock() on arrival, line)
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._eof = False
        self._cursor = 0  # where next_line reads on
        self._stderr_done = threading.Event()
        if merge_stderr:
            self._stderr_done.set()
        threading.Thread(target=self._read, name=f"{label} stdout", daemon=True).start()
        if not merge_stderr:
            threading.Thread(target=self._read_err, name=f"{label} stderr", daemon=True).start()

    def _call(self, what: str, callback: Callable[..., None], *args: object) -> None:
        """Run a caller's callback on a reader thread: what it raises is logged, never lost."""
        try:
            callback(*args)
        except Exception:
            log.exception("%s: the %s callback failed", self.label, what)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(OSError, ValueError):  # the pipe closed under the reader (stop()): the end
            for raw in self.proc.stdout:
                line = raw.rstrip("\n")
                with self._changed:
                    self.lines.append((self.clock(), line))
                    if self.keep is not None and len(self.lines) > self.keep:
                        dropped = len(self.lines) - self.keep
                        del self.lines[:dropped]
                        self._cursor = max(self._cursor - dropped, 0)
                    self._changed.notify_all()
                if self.on_line is not None:
                    self._call("on_line", self.on_line, "stdout", line)
        with contextlib.suppress(OSError):
            self.proc.stdout.close()  # nothing more to read: the descriptor goes now, not at stop()
        with self._changed:
            self._eof = True
            self._changed.notify_all()
        if self.on_end is not None:
            self._stderr_done.wait(STDERR_WAIT_S)  # the whole stderr, for whoever reports the end
            self._call("on_end", self.on_end, self.proc.wait())

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        try:
            for raw in self.proc.stderr:
                line = raw.rstrip("\n")
                self.stderr.append(line)
                if self.keep is not None and len(self.stderr) > self.keep:
                    del self.stderr[: len(self.stderr) - self.keep]
                if self.on_line is not None:
                    self._call("on_line", self.on_line, "stderr", line)
        except (OSError, ValueError):  # the pipe closed under the reader (stop()): the end
            pass
        finally:
            with contextlib.suppress(OSError):
                self.proc.stderr.close()
            self._stderr_done.set()

    @property
    def output_ended(self) -> bool:
        """Whether stdout reached its end (the process closed it, usually by exiting)."""
        with self._changed:
            return self._eof

    def wait_output_end(self, timeout: float) -> bool:
        """Wait (at most `timeout` seconds) until stdout reached its end; whether it did."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self._eof and (remaining := deadline - time.monotonic()) > 0:
                self._changed.wait(remaining)
            return self._eof

    @property
    def history(self) -> list[str]:
        with self._changed:
            return [line for _, line in self.lines]

    def matching(self, prefix: str, *, since: float = -float("inf")) -> list[tuple[float, str]]:
        with self._changed:
            return [(t, line) for t, line in self.lines if line.startswith(prefix) and t >= since]

    def _wait(self, predicate: Callable[[str], bool], start: int, count: int, since: float, timeout: float,
              what: str) -> int:
        """Index of the `count`-th line from `start` on that matches and arrived at or after `since`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = 0
                for index in range(start, len(self.lines)):
                    at, line = self.lines[index]
                    if at >= since and predicate(line):
                        found += 1
                        if found == count:
                            return index
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    raise ProcessOutputError(
                        f"{self.label}: no {what} within {timeout} s (exit code {self.proc.poll()}); "
                        f"last stdout={[x for _, x in self.lines[-15:]]} stderr={self.stderr[-20:]}"
                    )
                self._changed.wait(min(remaining, 0.1))

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, what: str, *, count: int = 1,
                 since: float = -float("inf")) -> tuple[float, str]:
        return self.lines[self._wait(predicate, 0, count, since, timeout, what)]

    def next_lines(self, predicate: Callable[[str], bool], timeout: float, what: str) -> list[tuple[float, str]]:
        """Every line from where `next_line` reads on, up to the next one that matches."""
        start = self._cursor
        index = self._wait(predicate, start, 1, -float("inf"), timeout, what)
        self._cursor = index + 1
        return self.lines[start:index + 1]

    def next_line(self, predicate: Callable[[str], bool], timeout: float, what: str) -> tuple[float, str]:
        return self.next_lines(predicate, timeout, what)[-1]

    def drain(self) -> list[tuple[float, str]]:
        """The lines after the one `next_line` returned last; `next_line` reads on after them."""
        with self._changed:
            out, self._cursor = self.lines[self._cursor:], len(self.lines)
            return out

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send `sig` by PID while the process runs (a no-op once it exited)."""
        with contextlib.suppress(ProcessLookupError):
            if self.proc.poll() is None:
                os.kill(self.proc.pid, sig)

    def close_stdin(self) -> None:
        """Close its stdin: a `noex-lab node --exit-on-stdin-eof` leaves gracefully on EOF."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def type_line(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        """Kill by PID (if still running), reap, close the pipes."""
        kill_and_reap(self.proc)
