"""The node processes of a notebook (`%noex local N`, `%noex remote HOST N`).

`ProcessLauncher` starts each one through a transport (`launchers.py`: on this machine, or over
SSH on another) with the front ends' one launcher (`frontend.processes.WatchedProcess`), joined
to the kernel's node, such that:

- the command runs in a new session (`start_new_session=True`): the notebook's stop button sends
  SIGINT to the kernel's whole process group, and must not reach the nodes (nor their ssh);
- the cluster secret is the first line of its standard input (`--secret-stdin`), never on a
  command line or in a file;
- it leaves when that standard input reaches EOF (`--exit-on-stdin-eof`): the kernel holds the
  write end of the pipe, so however the kernel ends (shutdown, restart, SIGKILL) the OS closes
  it and the node exits (over SSH: the channel's stdin ends): no orphans;
- its stdout and stderr are drained by the launcher's reader threads into a callback run on the
  kernel's loop (the kernel node's event stream), never into whatever cell happens to be
  running; the child protocol's `NODE <id>` line (`frontend.child_protocol`) says it is ready;
- it accepts behavior source from the kernel's node only (`--allow-code --allow-code-from KERNEL`,
  unless `code_from_any`).

Everything the launcher reports reaches the kernel's asyncio loop through
`call_soon_threadsafe`: the magics run on that loop, and a cell blocked in `time.sleep` must not
hold up the readers (they only queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.node_id import NodeId
from ..distribution.cluster import HEARTBEAT_INTERVAL_MS, HEARTBEAT_MISS_THRESHOLD
from ..frontend.child_protocol import Listening, parse_line
from ..frontend.processes import WatchedProcess
from .launchers import PID_LINE, LaunchError, LocalNodeError, LocalTransport, NodeSpec, Transport

__all__ = ["LaunchedNode", "LocalNodeError", "ProcessLauncher"]

READY_TIMEOUT_S = 30.0
KEEP_LINES = 200  # of each node's output, for errors (the rest went to the event stream)


@dataclass(eq=False)
class LaunchedNode:
    """One node process started by `%noex local` or `%noex remote`."""

    name: str
    started_at: float
    ready: asyncio.Future[NodeId]
    exited: asyncio.Future[int]
    transport: Transport = field(default_factory=LocalTransport)
    node_id: NodeId | None = None
    remote_pid: int | None = None  # the node's pid where it runs (a `NOEX_PID` line), if not here
    expected_exit: bool = False  # we killed or stopped it: its exit is no error
    process: WatchedProcess = field(init=False)  # the command run here: the node itself, or its ssh client
    listening: bool = False  # its NODE line came (read on the stdout thread)

    @property
    def proc(self) -> subprocess.Popen[str]:
        return self.process.proc

    @property
    def stderr_tail(self) -> list[str]:
        return self.process.stderr[-20:]

    @property
    def pid(self) -> int:
        """The pid of the node process: here, or on the machine it runs on."""
        if self.transport.kind == "local" or self.remote_pid is None:
            return self.proc.pid
        return self.remote_pid

    @property
    def kind(self) -> str:
        return self.transport.kind

    @property
    def where(self) -> str:
        """`local pid 123`, `ssh gpu1 pid 456`."""
        return f"{self.transport.label} pid {self.pid}"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None and not self.exited.done()

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()


OutputCallback = Callable[[LaunchedNode, str, str], None]  # (node, "stdout" | "stderr", line)
ExitCallback = Callable[[LaunchedNode, int], None]


class ProcessLauncher:
    """Starts (through a transport), tracks, kills and stops the node processes of one kernel."""

    def __init__(self, on_output: OutputCallback, on_exit: ExitCallback) -> None:
        self.on_output = on_output
        self.on_exit = on_exit
        self.nodes: dict[str, LaunchedNode] = {}

    def alive(self, label: str | None = None) -> list[LaunchedNode]:
        """The running nodes; with `label`, those of that transport ("local", "ssh gpu1")."""
        return [n for n in self.nodes.values() if n.alive and (label is None or n.transport.label == label)]

    def by_id(self, node_id: NodeId) -> LaunchedNode | None:
        for n in self.nodes.values():
            if n.node_id == node_id and n.alive:
                return n
        return None

    def find(self, spec: str) -> LaunchedNode | None:
        """A running node (local or remote) by name or full node id."""
        n = self.nodes.get(spec)
        if n is not None and n.alive:
            return n
        for n in self.nodes.values():
            if n.alive and n.node_id is not None and str(n.node_id) == spec:
                return n
        return None

    def free_names(self, prefix: str, count: int) -> list[str]:
        """`count` names `prefix1, prefix2, ...` not used by a running node of this launcher (lowest first)."""
        taken = {n.name for n in self.alive()}
        names: list[str] = []
        i = 1
        while len(names) < count:
            name = f"{prefix}{i}"
            if name not in taken:
                names.append(name)
            i += 1
        return names

    async def launch(
        self, name: str, seed: NodeId, secret: str, *, heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS,
        heartbeat_miss_threshold: int = HEARTBEAT_MISS_THRESHOLD, timeout: float = READY_TIMEOUT_S,
        code_from_any: bool = False, transport: Transport | None = None,
    ) -> LaunchedNode:
        """Start one node process and wait until it listens (its `NODE <id>` line)."""
        transport = transport or LocalTransport()
        if not secret or "\n" in secret or "\r" in secret:
            raise transport.error("the cluster secret must be one non-empty line")
        transport.check_seed(seed)
        spec = NodeSpec(name, seed, heartbeat_interval_ms, heartbeat_miss_threshold, code_from_any)
        loop = asyncio.get_running_loop()
        cmd = transport.command(spec.node_args(transport.bind_host, transport.advertise_host))
        node = LaunchedNode(name, time.time(), loop.create_future(), loop.create_future(), transport)
        try:
            node.process = WatchedProcess(
                cmd, label=f"{transport.kind} node {name}", env=transport.environment(), new_session=True,
                keep=KEEP_LINES, on_line=lambda stream, line: self._line(node, loop, stream, line),
                on_end=lambda code: self._soon(loop, lambda: self._ended(node, code)),
            )
        except OSError as exc:
            raise transport.error(f"cannot start {transport.kind} node {name} ({cmd[0]}): {exc}") from exc
        self.nodes[name] = node
        with contextlib.suppress(OSError):  # it died at once: the readers report why
            node.process.type_line(secret)
        try:
            node.node_id = await asyncio.wait_for(asyncio.shield(node.ready), timeout)
        except TimeoutError:
            node.expected_exit = True
            with contextlib.suppress(LaunchError):  # the timeout is the error to report
                await transport.kill(node)
            self._signal(node, signal.SIGKILL)
            raise transport.error(
                f"{transport.kind} node {name} ({transport.label}) did not start listening within {timeout:g} s; "
                f"its stderr: {' | '.join(node.stderr_tail[-5:]) or '(empty)'}"
            ) from None
        return node

    # --------------------------------------------------------------- what the readers report
    @staticmethod
    def _soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            loop.call_soon_threadsafe(fn)

    def _line(self, node: LaunchedNode, loop: asyncio.AbstractEventLoop, stream: str, line: str) -> None:
        """One line of the node's output (on a reader thread): its pid or readiness, else output."""
        if stream == "stdout" and not node.listening:
            if node.remote_pid is None and line.startswith(PID_LINE):
                with contextlib.suppress(ValueError, IndexError):
                    node.remote_pid = int(line.split()[1])
                    return
            record = parse_line(line)
            if isinstance(record, Listening):
                node.listening = True
                node_id = record.node
                self._soon(loop, lambda: _settle(node.ready, node_id))
                return
        self._soon(loop, lambda: self.on_output(node, stream, line))

    def _ended(self, node: LaunchedNode, code: int) -> None:
        """The node process exited and its output ended (on the loop)."""
        if not node.ready.done():
            node.ready.set_exception(node.transport.error(node.transport.failure(node.name, code, node.stderr_tail)))
            node.ready.exception()  # retrieved: launch() reports it
        _settle(node.exited, code)
        self.on_exit(node, code)

    # --------------------------------------------------------------- ending nodes
    @staticmethod
    def _signal(node: LaunchedNode, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if node.proc.poll() is None:
                os.kill(node.proc.pid, sig)

    async def kill(self, node: LaunchedNode, timeout: float = 10.0) -> int:
        """SIGKILL the node process (a crash: peers see the connection drop) and wait for its exit
        (here: of the command that ran it)."""
        node.expected_exit = True
        await node.transport.kill(node)
        return await self._wait_exit(node, timeout)

    async def stop(self, node: LaunchedNode, timeout: float = 10.0) -> int:
        """Close its stdin: the node leaves gracefully (peers see `graceful_shutdown`); SIGKILL after `timeout`."""
        node.expected_exit = True
        self._close_stdin(node)
        try:
            return await self._wait_exit(node, timeout)
        except LaunchError:
            self._signal(node, signal.SIGKILL)
            return await self._wait_exit(node, 5.0)

    async def _wait_exit(self, node: LaunchedNode, timeout: float) -> int:
        try:
            return await asyncio.wait_for(asyncio.shield(node.exited), timeout)
        except TimeoutError:
            raise node.transport.error(
                f"{node.kind} node {node.name} ({node.where}) did not exit within {timeout:g} s") from None

    @staticmethod
    def _close_stdin(node: LaunchedNode) -> None:
        if node.proc.stdin is not None:
            with contextlib.suppress(OSError):
                node.proc.stdin.close()

    def close_all(self) -> None:
        """Close every node's stdin: each leaves gracefully on its own (used on unload and at exit)."""
        for node in self.nodes.values():
            if node.proc.poll() is None:
                node.expected_exit = True
                self._close_stdin(node)


def _settle(fut: asyncio.Future[NodeId] | asyncio.Future[int], value: object) -> None:
    if not fut.done():
        fut.set_result(value)  # type: ignore[arg-type]
