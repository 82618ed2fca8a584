"""`noex-lab node` OS processes for the remote workloads (W3-W7): launch, read, wait, stop.

Every node is started with `--port 0 --report --exit-on-stdin-eof` on 127.0.0.1, so it
prints `NODE <id>` once it listens, `UP` / `PEERS <n> <wall_us>` / `DOWN <peer> <wall_us>
<reason>` as membership changes, and leaves by itself if the benchmark process dies (its
stdin pipe closes). A reader thread per node collects stdout lines with the wall time they
arrived. Every wait has a deadline; `stop_all` stops every node by its PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import anyio

from noex_lab.frontend.child_protocol import Listening, Peers, parse_line
from noex_lab.frontend.processes import WatchedProcess

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
POLL_S = 0.002  # how often the waits below re-check the collected lines
STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL after this many seconds


def wall_us() -> int:
    """Wall clock (CLOCK_REALTIME) in microseconds: the clock of the node lines."""
    return time.time_ns() // 1000


def node_command() -> list[str]:
    """`noex-lab` from the interpreter's bin directory, else `python -m noex_lab.cli`."""
    script = Path(sys.executable).with_name("noex-lab")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "noex_lab.cli"]


SECRET_ENV = "NOEX_BENCH_SECRET"
# The event loop of the node processes (`noex-lab node --loop`): run.py --loop sets it for every
# workload that starts nodes; explicit, because the node's own default (auto) picks uvloop
# whenever it is installed.
LOOP_ENV = "NOEX_BENCH_NODE_LOOP"
_compiled = False


def node_loop() -> str:
    return os.environ.get(LOOP_ENV, "asyncio")


def ensure_bytecode() -> None:
    """Compile noex_lab's modules to bytecode once, as `pip install` does for an installed
    package. In an editable checkout with PYTHONDONTWRITEBYTECODE set, every node process
    would otherwise compile all of noex_lab from source at start (about 0.3 s of CPU each):
    a cost no installed node pays, which would dominate formation of many nodes."""
    global _compiled
    if _compiled:
        return
    import compileall

    compileall.compile_dir(str(REPO / "noex_lab"), quiet=1)
    _compiled = True


class NodeError(RuntimeError):
    """A node did not start, did not print what was awaited in time, or exited early."""


class NodeProc(WatchedProcess):
    """One `noex-lab node` process, launched and read by the launcher the tests and `noex-lab demo` use
    (`noex_lab.frontend.processes.WatchedProcess`): stdout lines are kept with their arrival wall time."""

    def __init__(
        self, name: str, *, seeds: Iterable[str] = (), heartbeat_interval_ms: int | None = None,
        heartbeat_miss_threshold: int | None = None, behaviors: Iterable[str] = (),
        env: dict[str, str] | None = None, secret: str | None = None, loop: str | None = None,
    ) -> None:
        self.name = name
        # a secret only through the environment (`secret`); otherwise --no-secret, like the
        # workloads' in-process nodes (and the user's own secret file is left alone)
        auth = ["--secret-env", SECRET_ENV] if secret is not None else ["--no-secret"]
        cmd = [*node_command(), "node", "--name", name, "--host", HOST, "--port", "0", "--report",
               "--exit-on-stdin-eof", "--loop", loop or node_loop(), *auth]
        for seed in seeds:
            cmd += ["--seed", seed]
        if heartbeat_interval_ms is not None:
            cmd += ["--heartbeat-interval-ms", str(heartbeat_interval_ms)]
        if heartbeat_miss_threshold is not None:
            cmd += ["--heartbeat-miss-threshold", str(heartbeat_miss_threshold)]
        for module in behaviors:
            cmd += ["--behaviors", module]
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p)
        full_env.update(env or {})
        if secret is not None:
            full_env[SECRET_ENV] = secret
        self.cmd = cmd
        ensure_bytecode()
        self.id: str | None = None
        self.launched_us = wall_us()
        # lines: (wall_us when read, line)
        super().__init__(cmd, label=f"node {name}", env=full_env, cwd=REPO, clock=wall_us)

    # ------------------------------------------------------------------ reading
    def find(self, predicate: Callable[[str], bool]) -> tuple[int, str] | None:
        """The first collected line matching `predicate`, with its arrival wall time."""
        for item in list(self.lines):
            if predicate(item[1]):
                return item
        return None

    def describe(self) -> str:
        status = self.proc.poll()
        state = "running" if status is None else f"exited with {status}"
        tail = [line for _, line in self.lines[-6:]]
        return f"{self.name} (pid {self.pid}, {state}; stdout tail {tail}; stderr tail {list(self.stderr)[-6:]})"

    async def wait_line(self, predicate: Callable[[str], bool], deadline: float, what: str) -> tuple[int, str]:
        """Wait (until the monotonic `deadline`) for a stdout line matching `predicate`."""
        while True:
            hit = self.find(predicate)
            if hit is not None:
                return hit
            if self.proc.poll() is not None and self.output_ended:
                if self.find(predicate) is None:  # re-checked: the last lines may just have arrived
                    raise NodeError(f"{what}: node {self.describe()}")
                continue
            if time.monotonic() > deadline:
                raise NodeError(f"{what}: not seen in time; node {self.describe()}")
            await anyio.sleep(POLL_S)

    async def started(self, deadline: float) -> str:
        """Wait for `NODE <id>` (the listener is up); returns the node id."""
        _, line = await self.wait_line(lambda s: isinstance(parse_line(s), Listening), deadline, f"{self.name} start")
        record = parse_line(line)
        assert isinstance(record, Listening)
        self.id = str(record.node)
        return self.id

    def peers_line(self, count: int) -> Peers | None:
        """The first `PEERS <count> <wall_us>` record, if any."""
        def peers(line: str) -> bool:
            record = parse_line(line)
            return isinstance(record, Peers) and record.count == count

        hit = self.find(peers)
        record = None if hit is None else parse_line(hit[1])
        return record if isinstance(record, Peers) else None

    # ------------------------------------------------------------------ signals and stopping
    def stop_begin(self) -> None:
        """Ask the node to leave: SIGCONT (in case it was frozen), SIGTERM, and close its stdin.

        Closing stdin is needed as well: with `--exit-on-stdin-eof` the node's worker thread
        blocked reading stdin keeps the interpreter from exiting after SIGTERM until EOF."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def stop_end(self, deadline: float) -> None:
        """Reap the node; SIGKILL it if it has not left by `deadline` (monotonic)."""
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        self.wait_output_end(1.0)  # the reader ends at EOF once the process is gone
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


def stop_all(nodes: Iterable[NodeProc], grace_s: float = STOP_GRACE_S) -> None:
    """Stop every node by its PID: SIGTERM to all at once, then reap (SIGKILL after `grace_s`)."""
    nodes = list(nodes)
    for node in nodes:
        node.stop_begin()
    deadline = time.monotonic() + grace_s
    for node in nodes:
        node.stop_end(deadline)


async def stop_all_async(nodes: Iterable[NodeProc], grace_s: float = STOP_GRACE_S) -> None:
    """`stop_all` in a worker thread, shielded: it runs to the end even when the workload is cancelled."""
    nodes = list(nodes)
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(stop_all, nodes, grace_s)
