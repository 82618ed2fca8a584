"""OS processes in tests: their output read by threads and waited for with deadlines, and their
end: always by PID, always reaped, pipes closed. `NodeProcess` is a `noex-lab node`.
`WatchedProcess` and `kill_and_reap` are the front ends' launcher (`noex_lab.frontend.processes`),
which `noex-lab demo` and the benchmarks use too."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio

from ..core.errors import InvalidArgumentError
from ..core.node_id import NodeId
from ..frontend.child_protocol import Listening, Peers, parse_line
from ..frontend.processes import WatchedProcess as WatchedProcess  # (re-exported: the plugin's API)
from ..frontend.processes import kill_and_reap as kill_and_reap

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
