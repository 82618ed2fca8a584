"""`noex-lab demo`: a self-contained failover demonstration in the terminal.

1. starts this process's node and `--nodes` local `noex-lab node` processes (an authenticated
   cluster with a random secret), which import `noex_lab.terminal.demo_behaviors`;
2. starts a `DistributedSupervisor` whose `demo_worker` children are spread `round_robin`;
3. shows the live cluster view (the `top` view, from this node);
4. SIGKILLs the node process that runs most children, and reports each `child_migrated`;
5. ends by itself after about `--duration` seconds, stopping everything it started.

Cleanup is by PID in a `finally` (also after Ctrl-C / SIGTERM). The node processes are started
in their own session (a Ctrl-C in the terminal reaches only the demo) with `--exit-on-stdin-eof`,
and the demo holds their stdin pipes: if the demo itself is killed, the OS closes the pipes and
every node process leaves on its own. Their names, `demo-<demo pid>-<i>`, make them easy to find.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ..core.errors import NoexError, ProcessOutputError
from ..core.node_id import NodeId
from ..core.timeouts import seconds_argument
from ..frontend.child_protocol import Listening, parse_line
from ..frontend.processes import WatchedProcess
from ..frontend.signals import run_until_signal
from .common import log_to

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live

    from ..core.events import NodeEvent
    from ..core.node import Node
    from ..core.refs import ProcessRef
    from .view import ClusterWatch

SECRET_ENV = "NOEX_LAB_DEMO_SECRET"
BEHAVIORS_MODULE = "noex_lab.terminal.demo_behaviors"
HEARTBEAT_INTERVAL_MS = 500
HEARTBEAT_MISS_THRESHOLD = 4
READY_TIMEOUT_S = 30.0
MESH_TIMEOUT_S = 15.0
FAILOVER_TIMEOUT_S = 15.0
STOP_GRACE_S = 5.0


class DemoError(NoexError):
    """The demonstration could not run (a node process did not start, the cluster did not form)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=3, metavar="N", help="node processes to start (2..16)")
    parser.add_argument("--duration", type=seconds_argument, default=12.0, metavar="S",
                        help="about how long the demonstration runs once the cluster is up")
    parser.add_argument("--children-per-node", type=int, default=3, metavar="K",
                        help="supervised workers per node (spread round_robin)")
    parser.add_argument("--interval", type=seconds_argument, default=0.5, metavar="S",
                        help="seconds between view refreshes")


# ---------------------------------------------------------------------------------- node processes
class NodeProcess(WatchedProcess):
    """One `noex-lab node` OS process started by the demo (the front ends' launcher: its output is
    drained by threads, waited for with deadlines)."""

    def __init__(self, name: str, seed: NodeId, env: dict[str, str]) -> None:
        self.name = name
        cmd = [
            sys.executable, "-m", "noex_lab.cli", "node", "--name", name, "--port", "0", "--host", "127.0.0.1",
            "--seed", str(seed), "--secret-env", SECRET_ENV, "--behaviors", BEHAVIORS_MODULE,
            "--exit-on-stdin-eof", "--heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS),
            "--heartbeat-miss-threshold", str(HEARTBEAT_MISS_THRESHOLD),
        ]
        super().__init__(cmd, label=f"node process {name}", env=env, new_session=True)
        self.node_id: NodeId | None = None

    async def wait_ready(self, timeout: float) -> NodeId:
        """Its node id, once it listens (its `NODE` line); `DemoError` if it exits or is late."""
        def listening(line: str) -> bool:
            return isinstance(parse_line(line), Listening)

        try:
            _at, line = await anyio.to_thread.run_sync(self.wait_for, listening, timeout, "NODE line",
                                                       abandon_on_cancel=True)
        except ProcessOutputError:
            state = "exited" if not self.alive else f"did not start within {timeout:g} s"
            tail = " | ".join(self.stderr[-5:]) or "(no output)"
            raise DemoError(f"node process {self.name} (pid {self.pid}) {state}: {tail}") from None
        record = parse_line(line)
        assert isinstance(record, Listening)
        self.node_id = record.node
        return self.node_id


async def stop_processes(procs: list[NodeProcess], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM (a graceful leave) every live one, SIGKILL what is left after `grace`, reap all."""
    for p in procs:
        p.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(p.alive for p in procs) and time.monotonic() < deadline:
        await anyio.sleep(0.05)
    for p in procs:
        if p.alive:
            p.signal(signal.SIGKILL)
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            await anyio.to_thread.run_sync(p.proc.wait, 5.0)
        p.close_stdin()


def _child_env(secret: str) -> dict[str, str]:
    env = dict(os.environ)
    env[SECRET_ENV] = secret
    env["PYTHONUNBUFFERED"] = "1"
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


# ---------------------------------------------------------------------------------- output
def say(console: Console, *parts: str | tuple[str, str]) -> None:
    """One narration line, time-stamped and never hard-wrapped (scripts grep it)."""
    from rich.text import Text

    stamp = time.strftime("%H:%M:%S")
    console.print(Text.assemble((f"{stamp} ", "dim"), *parts), highlight=False, soft_wrap=True)


class Screen:
    """The live view (in a terminal) plus narration lines printed above it.

    Off a terminal (a pipe, a log file) there is no live view: the narration is printed as it
    happens and the whole view at the milestones (`show`)."""

    def __init__(self, console: Console, watch: ClusterWatch, interval: float) -> None:
        self.console = console
        self.watch = watch
        self.interval = interval
        from rich.text import Text

        self.live: Live | None = None
        self.status = Text("starting", style="bold")

    def render(self) -> Any:
        """On a terminal, the compact view fitted to its height (a 30-row terminal shows the events
        too) under a line that says what is happening; off a terminal, the whole view."""
        from rich.text import Text

        from .view import render_compact, render_view

        if self.live is None:
            return render_view(self.watch, title="noex-lab demo", events=10)
        status = Text.assemble(("now: ", "bold cyan"), self.status, ("   (q or Ctrl-C quits)", "dim"))
        console = self.console

        def measure(renderable: Any) -> int:
            return len(console.render_lines(renderable, console.options, pad=False))

        return render_compact(self.watch, title="noex-lab demo", status=status,
                              height=console.size.height - 1, measure=measure)

    def say(self, *parts: str | tuple[str, str]) -> None:
        from rich.text import Text

        self.status = Text.assemble(*parts)
        say(self.console, *parts)
        if self.live is not None:
            self.live.update(self.render(), refresh=True)

    def start(self) -> None:
        from rich.live import Live

        if self.console.is_terminal:
            log_to(self.console)
            self.live = Live(self.render(), console=self.console, auto_refresh=False, vertical_overflow="crop")
            self.live.start()

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    async def show(self) -> None:
        """A milestone: off a terminal, print the whole view once."""
        if self.live is None:
            await self.watch.refresh(2.0)
            self.console.print(self.render())

    async def run(self) -> None:
        """Keep the live view current (off a terminal, `show` refreshes at the milestones)."""
        while self.live is not None:
            await self.watch.refresh(2.0)
            if self.live is not None:
                self.live.update(self.render(), refresh=True)
            await anyio.sleep(self.interval)


# ---------------------------------------------------------------------------------- the scenario
class Demo:
    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.prefix = f"demo-{os.getpid()}"
        self.secret = secrets.token_urlsafe(24)
        self.procs: list[NodeProcess] = []
        self.node: Node | None = None
        self.sup: ProcessRef | None = None
        self.migrated: list[NodeEvent] = []
        self.screen: Screen | None = None
        self._unsubscribe: list[Callable[[], None]] = []

    def say(self, *parts: str | tuple[str, str]) -> None:
        if self.screen is not None:  # printed above the live view, and its "now:" line
            self.screen.say(*parts)
        else:
            say(self.console, *parts)

    async def start_cluster(self) -> Node:
        from ..distribution.cluster import Cluster
        from . import demo_behaviors  # noqa: F401  (this node runs workers too)

        n = self.args.nodes
        node = self.node = await Cluster.start(
            self.prefix, port=0, cluster_secret=self.secret, heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            heartbeat_miss_threshold=HEARTBEAT_MISS_THRESHOLD,
        )
        assert node.id is not None
        self.say(("noex-lab demo", "bold"), f": this node is {node.id}; starting {n} node processes")
        env = _child_env(self.secret)
        for i in range(1, n + 1):
            self.procs.append(NodeProcess(f"{self.prefix}-{i}", node.id, env))
        self.say("PIDS " + " ".join(str(p.pid) for p in self.procs))
        for p in self.procs:  # they start in parallel; waiting for each in turn costs nothing extra
            await p.wait_ready(READY_TIMEOUT_S)
        deadline = time.monotonic() + MESH_TIMEOUT_S
        while len(node.get_nodes()) < n:
            if time.monotonic() > deadline:
                joined = len(node.get_nodes())
                raise DemoError(f"only {joined} of {n} node processes joined within {MESH_TIMEOUT_S:g} s")
            await anyio.sleep(0.02)
        self.say(f"cluster up: {n + 1} nodes, full mesh, authenticated with a random secret")
        return node

    async def start_supervisor(self, node: Node) -> ProcessRef:
        from ..distribution.distributed_supervisor import DistributedSupervisor

        count = self.args.children_per_node * (self.args.nodes + 1)
        children = [{"id": f"worker-{i}", "behavior_name": "demo_worker", "arg": i} for i in range(1, count + 1)]
        with node.as_default():
            sup = self.sup = await DistributedSupervisor.start(
                children=children, node_selector="round_robin", max_restarts=4 * count, within_ms=10_000,
                name="demo_sup",
            )
            self._unsubscribe.append(DistributedSupervisor.on_event(sup, self._on_sup_event, node=node))
            placed = Counter(ch.node.name for ch in await DistributedSupervisor.which_children(sup) if ch.node)
        spread = ", ".join(f"{name}: {k}" for name, k in sorted(placed.items()))
        self.say(f"DistributedSupervisor demo_sup started {count} demo_worker children round_robin ({spread})")
        return sup

    def _on_sup_event(self, event: NodeEvent) -> None:
        from .view import compact

        if event.kind != "child_migrated":
            return
        self.migrated.append(event)
        data = event.data
        src, dst, ref = data.get("from_node"), data.get("to_node"), compact(str(data.get("ref")))
        self.say(("child_migrated ", "magenta"), f"{data.get('child')}: ",
                 f"{getattr(src, 'name', src)} -> {getattr(dst, 'name', dst)} (new ref {ref})")

    def _on_node_down(self, peer: Any, reason: str) -> None:
        self.say(("node down ", "red"), f"{getattr(peer, 'name', peer)}: {reason}")

    async def scenario(self) -> int:
        from .view import ClusterWatch

        args = self.args
        node = await self.start_cluster()
        watch = ClusterWatch(node, include_self=True)
        watch.start()
        self._unsubscribe.append(watch.close)
        self._unsubscribe.append(node.on_node_down(self._on_node_down))
        sup = await self.start_supervisor(node)
        screen = self.screen = Screen(self.console, watch, args.interval)
        screen.start()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(screen.run)
                code = await self._kill_and_failover(node, sup, screen)
                tg.cancel_scope.cancel()
        finally:
            screen.stop()
        self.say("demonstration over: stopping everything it started")
        return code

    async def _kill_and_failover(self, node: Node, sup: ProcessRef, screen: Screen) -> int:
        from ..distribution.distributed_supervisor import DistributedSupervisor

        duration = max(1.0, self.args.duration)
        before = max(0.5, 0.4 * duration)
        await screen.show()
        await anyio.sleep(before)
        with node.as_default():
            children = await DistributedSupervisor.which_children(sup)
        by_node = {p.node_id: [c.id for c in children if c.node == p.node_id] for p in self.procs if p.alive}
        victim = max((p for p in self.procs if p.alive), key=lambda p: len(by_node.get(p.node_id, [])))
        moved = by_node.get(victim.node_id, [])
        self.say(("killing ", "bold red"), f"{victim.name} (pid {victim.pid}) with SIGKILL; it runs "
                 f"{len(moved)} children: {', '.join(moved) or '-'}")
        killed_at = time.monotonic()
        victim.signal(signal.SIGKILL)
        deadline = killed_at + FAILOVER_TIMEOUT_S
        while sum(e.data.get("from_node") == victim.node_id for e in self.migrated) < len(moved):
            if time.monotonic() > deadline:
                self.say(("failover incomplete: ", "bold red"), f"only {len(self.migrated)} of {len(moved)} "
                         f"children migrated within {FAILOVER_TIMEOUT_S:g} s")
                return 1
            await anyio.sleep(0.01)
        took = time.monotonic() - killed_at
        with node.as_default():
            children = await DistributedSupervisor.which_children(sup)
        running = [c for c in children if c.status == "running"]
        on_victim = [c for c in children if c.node == victim.node_id]
        spread = Counter(c.node.name for c in running if c.node is not None)
        placement = ", ".join(f"{k}: {v}" for k, v in sorted(spread.items()))
        self.say(("failover complete: ", "bold green"),
                 f"{len(moved)} children migrated in {took:.2f} s; {len(running)}/{len(children)} running, "
                 f"{len(on_victim)} on the killed node ({placement})")
        await screen.show()
        await anyio.sleep(max(0.5, duration - before))
        return 0 if len(running) == len(children) and not on_victim else 1

    async def cleanup(self) -> None:
        """Stop everything this demo started: the supervisor, the node processes, this node."""
        from ..distribution.distributed_supervisor import DistributedSupervisor

        for unsubscribe in self._unsubscribe:
            unsubscribe()
        node = self.node
        if node is not None and self.sup is not None and node.running:
            with node.as_default(), anyio.move_on_after(STOP_GRACE_S), contextlib.suppress(NoexError):
                await DistributedSupervisor.stop(self.sup, timeout=STOP_GRACE_S)
        await stop_processes(self.procs)
        if node is not None:
            with anyio.move_on_after(STOP_GRACE_S):
                await node.stop()
        left = [p.pid for p in self.procs if p.alive]
        if left:
            self.say(("could not stop node processes ", "bold red"), " ".join(map(str, left)))
        elif self.procs:
            self.say(f"stopped {len(self.procs)} node processes ({' '.join(str(p.pid) for p in self.procs)}) "
                     "and this node; nothing left running")


async def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    if not 2 <= args.nodes <= 16:
        raise SystemExit("noex-lab demo: --nodes must be between 2 and 16")
    if args.children_per_node < 1 or args.interval <= 0:
        raise SystemExit("noex-lab demo: --children-per-node must be >= 1 and --interval > 0")
    demo = Demo(args, Console())
    try:
        return await run_until_signal(demo.scenario, quit_key=True)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(3 * STOP_GRACE_S + 10):
            await demo.cleanup()


def main(args: argparse.Namespace) -> int:
    code: Any = anyio.run(run, args)
    return int(code)
