"""OS processes in tests: their output read by threads and waited for with deadlines, and their
end: always by PID, always reaped, pipes closed. `NodeProcess` is a `noex-lab node`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio

from ..core.errors import InvalidArgumentError
from ..core.node_id import NodeId
from ..frontend.child_protocol import Listening, Peers, parse_line


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
    reader thread, stderr by another (or merged into stdout).

    `wait_for` looks at everything printed so far (the `count`-th match arrived at or after
    `since`); `next_line` reads on from the line it returned last, like a queue."""

    def __init__(
        self, cmd: Sequence[str], *, label: str, env: dict[str, str] | None = None, cwd: str | Path | None = None,
        merge_stderr: bool = False, new_session: bool = False, clock: Callable[[], float] = time.monotonic,
        stdin: int | None = subprocess.PIPE, preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.label = label
        self.clock = clock
        self.proc = subprocess.Popen(
            list(cmd), stdin=stdin, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            env=env, cwd=None if cwd is None else str(cwd), text=True, bufsize=1,
            start_new_session=new_session, preexec_fn=preexec_fn,
        )
        self.pid = self.proc.pid
        self.lines: list[tuple[float, str]] = []  # (clock() on arrival, line)
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._eof = False
        self._cursor = 0  # where next_line reads on
        threading.Thread(target=self._read, daemon=True).start()
        if not merge_stderr:
            threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append((self.clock(), line.rstrip("\n")))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))

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
                    raise AssertionError(
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

    def type_line(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        """Kill by PID (if still running), reap, close the pipes."""
        kill_and_reap(self.proc)


SECRET_ENV = "NOEX_TEST_SECRET"  # the variable node processes read the cluster secret from (--secret-env)


def node_env(pythonpath: Iterable[str | Path] = (), secret: str | None = None,
             base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a node process: `base` (this one by default) with `pythonpath` first on
    PYTHONPATH (where `--behaviors` modules are found) and the cluster secret in SECRET_ENV."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (*map(str, pythonpath), env.get("PYTHONPATH", "")) if p)
    if secret is not None:
        env[SECRET_ENV] = secret
    return env


class NodeProcess(WatchedProcess):
    """A `noex-lab node --report` OS process (the interpreter running the tests starts it).

    It prints `NODE <id>` once it listens, and `PEERS <n>`, `UP <peer>`, `DOWN <peer>` lines as
    its membership changes; `started()` waits for the first. Faults: `kill()` (SIGKILL),
    `pause()` (SIGSTOP: the process freezes, its connections stay open), `resume()`, `terminate()`
    (SIGTERM: it leaves gracefully)."""

    def __init__(self, name: str, *args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 port: int = 0, preexec_fn: Callable[[], None] | None = None) -> None:
        cmd = [sys.executable, "-m", "noex_lab.cli", "node", "--name", name, "--port", str(port), "--report", *args]
        self.started_at = time.time()
        super().__init__(cmd, label=f"node {name}", env=node_env() if env is None else env, cwd=cwd,
                         preexec_fn=preexec_fn)
        self.id: NodeId | None = None

    def wait_line(self, prefix: str, timeout: float = 15.0) -> str:
        """Block (in a thread-friendly way) until the next stdout line starting with `prefix`."""
        return self.next_line(lambda line: line.startswith(prefix), timeout, f"{prefix!r} line")[1]

    async def started(self, timeout: float = 20.0) -> NodeId:
        """Wait for `NODE <id>` (the node listens) and return the id."""
        def listening(line: str) -> bool:
            return isinstance(parse_line(line), Listening)

        line = await anyio.to_thread.run_sync(self.next_line, listening, timeout, "'NODE ' line")
        record = parse_line(line[1])
        assert isinstance(record, Listening)
        self.id = record.node
        return self.id

    async def wait_peers(self, count: int, timeout: float = 15.0) -> None:
        """Wait until the node reported at least `count` connected peers."""
        def enough(line: str) -> bool:
            record = parse_line(line)
            return isinstance(record, Peers) and record.count >= count

        await anyio.to_thread.run_sync(self.wait_for, enough, timeout, f"PEERS >= {count}")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: a crash (its peers see the connection close at once)."""
        self.signal(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: frozen, connections open; peers declare it down after the heartbeat timeout."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def terminate(self) -> None:
        """SIGTERM: the node leaves gracefully (peers see `graceful_shutdown`)."""
        self.signal(signal.SIGTERM)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


FAST_HEARTBEATS = ("--heartbeat-interval-ms", "200", "--heartbeat-miss-threshold", "3")


async def start_node_processes(
    n: int, *, behaviors: str | Sequence[str] = (), seed: Any = None, secret: str | None = None,
    names: Sequence[str] | None = None, fast: bool = True, args: Sequence[str] = (),
    cwd: str | Path | None = None, pythonpath: Iterable[str | Path] = (), started: list[NodeProcess] | None = None,
    timeout: float = 20.0,
) -> list[NodeProcess]:
    """Start `n` `noex-lab node` processes on 127.0.0.1 (free ports) importing the `behaviors`
    module(s), and wait until they form a full mesh.

    `seed` (a `Node`, a `NodeId` or `name@host:port`) joins them to an existing cluster; without
    it they are seeded from the first of them. `secret` is passed through the environment
    (`--secret-env`); `fast` uses 200 ms heartbeats (down after 0.6 s of silence), which the
    in-process nodes of `start_cluster` use too. Each process is appended to `started` as soon
    as it exists, so a caller can always kill them."""
    modules = [behaviors] if isinstance(behaviors, str) else list(behaviors)
    names = list(names) if names is not None else [f"p{i}" for i in range(n)]
    if len(names) != n:
        raise InvalidArgumentError(f"{n} node processes need {n} names, not {names!r}")
    flags = [*(FAST_HEARTBEATS if fast else ()), *args]
    for module in modules:
        flags += ["--behaviors", module]
    if secret is not None:
        flags += ["--secret-env", SECRET_ENV]
    elif "--secret-env" not in flags and "--no-secret" not in flags:
        flags += ["--no-secret"]  # no secret asked for: not the user's secret file either
    env = node_env(pythonpath, secret)
    seed_id = None if seed is None else str(getattr(seed, "id", seed))
    procs = started if started is not None else []
    mine: list[NodeProcess] = []
    first = seed_id
    for name in names:
        proc = NodeProcess(name, *flags, *(["--seed", first] if first else []), env=env, cwd=cwd)
        procs.append(proc)
        mine.append(proc)
        node_id = await proc.started(timeout)
        first = first or str(node_id)
    expected = n - 1 + (1 if seed_id is not None else 0)
    for proc in mine:
        await proc.wait_peers(expected, timeout)
    return mine
