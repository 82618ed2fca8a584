"""Local node processes for a notebook (`%noex local N`).

Each one is a `noex-lab node` OS process joined to the kernel's node, such that:

- it is started in a new session (`start_new_session=True`): the notebook's stop button sends
  SIGINT to the kernel's whole process group, and must not reach the nodes;
- it leaves when its standard input reaches EOF (`--exit-on-stdin-eof`): the kernel holds the
  write end of that pipe, so however the kernel ends (shutdown, restart, SIGKILL) the OS closes
  it and the node exits: no orphans;
- its stdout and stderr are drained by reader threads into a callback (the kernel node's event
  stream), never into whatever cell happens to be running;
- it accepts behavior source from the kernel's node only (`--allow-code --allow-code-from KERNEL`,
  unless `code_from_any`) over links authenticated with the secret the kernel hands it through
  an environment variable (never on the command line).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..core.node_id import NodeId
from .errors import LabError

SECRET_ENV = "NOEX_LAB_SECRET"
READY_TIMEOUT_S = 30.0


class LocalNodeError(LabError):
    """A local node process could not be started, or is not known."""


@dataclass(eq=False)
class LocalNode:
    """One node process started by `%noex local`."""

    name: str
    proc: subprocess.Popen[bytes]
    started_at: float
    ready: asyncio.Future[NodeId]
    exited: asyncio.Future[int]
    node_id: NodeId | None = None
    expected_exit: bool = False  # we killed or stopped it: its exit is no error
    stderr_tail: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None and not self.exited.done()

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()


OutputCallback = Callable[[LocalNode, str, str], None]  # (node, "stdout" | "stderr", line)
ExitCallback = Callable[[LocalNode, int], None]


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


class LocalNodeLauncher:
    """Starts, tracks, kills and stops the local node processes of one kernel."""

    def __init__(self, on_output: OutputCallback, on_exit: ExitCallback) -> None:
        self.on_output = on_output
        self.on_exit = on_exit
        self.nodes: dict[str, LocalNode] = {}

    def alive(self) -> list[LocalNode]:
        return [n for n in self.nodes.values() if n.alive]

    def by_id(self, node_id: NodeId) -> LocalNode | None:
        for n in self.nodes.values():
            if n.node_id == node_id and n.alive:
                return n
        return None

    def find(self, spec: str) -> LocalNode | None:
        """A running local node by name or full node id."""
        n = self.nodes.get(spec)
        if n is not None and n.alive:
            return n
        for n in self.nodes.values():
            if n.alive and n.node_id is not None and str(n.node_id) == spec:
                return n
        return None

    def free_names(self, prefix: str, count: int) -> list[str]:
        """`count` names `prefix1, prefix2, ...` not used by a running local node (lowest first)."""
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
        self, name: str, seed: NodeId, secret: str, *, heartbeat_interval_ms: int = 5000,
        heartbeat_miss_threshold: int = 3, timeout: float = READY_TIMEOUT_S, code_from_any: bool = False,
    ) -> LocalNode:
        """Start one node process and wait until it listens (its `NODE <id>` line)."""
        loop = asyncio.get_running_loop()
        env = dict(os.environ)
        env[SECRET_ENV] = secret
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH", "")) if p)
        cmd = [
            sys.executable, "-m", "noex_lab.cli", "node", "--name", name, "--port", "0", "--host", "127.0.0.1",
            "--seed", str(seed), "--secret-env", SECRET_ENV, "--allow-code", "--exit-on-stdin-eof",
            "--heartbeat-interval-ms", str(heartbeat_interval_ms),
            "--heartbeat-miss-threshold", str(heartbeat_miss_threshold),
        ]
        if not code_from_any:
            cmd += ["--allow-code-from", str(seed)]
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            raise LocalNodeError(f"cannot start local node {name}: {exc}") from exc
        node = LocalNode(name, proc, time.time(), loop.create_future(), loop.create_future())
        self.nodes[name] = node
        threading.Thread(target=self._read_stdout, args=(node, loop), name=f"noex-{name}-stdout",
                         daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(node, loop), name=f"noex-{name}-stderr",
                         daemon=True).start()
        try:
            node.node_id = await asyncio.wait_for(asyncio.shield(node.ready), timeout)
        except TimeoutError:
            node.expected_exit = True
            self._signal(node, signal.SIGKILL)
            raise LocalNodeError(
                f"local node {name} did not start listening within {timeout:g} s; "
                f"its stderr: {' | '.join(node.stderr_tail[-5:]) or '(empty)'}"
            ) from None
        return node

    # --------------------------------------------------------------- reader threads
    @staticmethod
    def _soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            loop.call_soon_threadsafe(fn)

    def _read_stdout(self, node: LocalNode, loop: asyncio.AbstractEventLoop) -> None:
        stream = node.proc.stdout
        assert stream is not None
        ready = False
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not ready and line.startswith("NODE "):
                ready = True
                try:
                    node_id = NodeId.parse(line.split()[1])
                except (ValueError, IndexError):
                    continue
                self._soon(loop, lambda nid=node_id: _settle(node.ready, nid))  # type: ignore[misc]
                continue
            self._soon(loop, lambda text=line: self.on_output(node, "stdout", text))  # type: ignore[misc]
        code = node.proc.wait()
        with contextlib.suppress(OSError):
            stream.close()

        def finished() -> None:
            if not node.ready.done():
                tail = " | ".join(node.stderr_tail[-5:]) or "(no output)"
                node.ready.set_exception(
                    LocalNodeError(f"local node {node.name} exited with code {code} before it was ready: {tail}")
                )
                node.ready.exception()  # retrieved: launch() reports it
            _settle(node.exited, code)
            self.on_exit(node, code)

        self._soon(loop, finished)

    def _read_stderr(self, node: LocalNode, loop: asyncio.AbstractEventLoop) -> None:
        stream = node.proc.stderr
        assert stream is not None
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            node.stderr_tail.append(line)
            del node.stderr_tail[:-20]
            self._soon(loop, lambda text=line: self.on_output(node, "stderr", text))  # type: ignore[misc]
        with contextlib.suppress(OSError):
            stream.close()

    # --------------------------------------------------------------- ending nodes
    @staticmethod
    def _signal(node: LocalNode, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if node.proc.poll() is None:
                os.kill(node.proc.pid, sig)

    async def kill(self, node: LocalNode, timeout: float = 10.0) -> int:
        """SIGKILL the process (a crash: peers see the connection drop) and wait for its exit."""
        node.expected_exit = True
        self._signal(node, signal.SIGKILL)
        return await self._wait_exit(node, timeout)

    async def stop(self, node: LocalNode, timeout: float = 10.0) -> int:
        """Close its stdin: the node leaves gracefully (peers see `graceful_shutdown`); SIGKILL after `timeout`."""
        node.expected_exit = True
        self._close_stdin(node)
        try:
            return await self._wait_exit(node, timeout)
        except LocalNodeError:
            self._signal(node, signal.SIGKILL)
            return await self._wait_exit(node, 5.0)

    async def _wait_exit(self, node: LocalNode, timeout: float) -> int:
        try:
            return await asyncio.wait_for(asyncio.shield(node.exited), timeout)
        except TimeoutError:
            raise LocalNodeError(f"local node {node.name} (pid {node.pid}) did not exit within {timeout:g} s") from None

    @staticmethod
    def _close_stdin(node: LocalNode) -> None:
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
