"""The state of noex_lab in one kernel, and what each `%noex` subcommand does.

A `LabSession` owns this kernel's node (started by `%noex start`), its cluster secret, the
local node processes (`%noex local`), the behaviors defined in cells (`%%noex behavior`), the
background reporter and the views it handed out. The magics (`magics.py`) only parse command
lines and call the coroutines here; every one of them is safe to run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..core import tracebacks
from ..core.crash_report import CrashReport
from ..core.errors import NoexError
from ..core.events import EVENT_KINDS, EventKind, NodeEvent
from ..core.node import Node, current_node, running_nodes
from ..core.node_id import NodeId
from ..core.refs import ProcessRef
from ..core.snapshot import check_page
from ..core.supervisor import SupervisorServer
from ..core.upgrade import set_source
from ..distribution.behaviors import BehaviorRegistry
from ..distribution.cluster import HEARTBEAT_INTERVAL_MS, HEARTBEAT_MISS_THRESHOLD, Cluster
from ..distribution.code_loading import UPGRADE_REPORT_WAIT_S
from ..distribution.crash_reports import watch_cluster_crashes
from ..distribution.introspection import (
    TraceHandle,
    get_state,
    process_page,
    recent_events,
    trace,
)
from ..distribution.user_secret import load_or_create
from .background import BackgroundReporter
from .code_shipping import CodeShipper, ShipResult, upgrade_text
from .crashes import CrashList
from .dashboard import DASHBOARD_KINDS, Dashboard, sidecar_class
from .errors import LabError, MagicUsageError
from .launchers import SshTransport, Transport
from .local_nodes import LaunchedNode, ProcessLauncher
from .reprs import Message, Status, Table, clock, display
from .widgets import ClusterTable, ClusterView, EventLog, SupervisorView, TraceView

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

JOIN_TIMEOUT_S = 20.0
CRASH_WAIT_S = 10.0  # how long %noex crashes --wait waits
FAILOVER_WAIT_S = 10.0  # how long %noex kill / stop wait for the children of a lost node to move
SEED_WAIT_S = 3.0
PS_LIMIT = 100  # processes %noex ps lists per node (a node may run 100,000)
ATTACH_TIMEOUT_S = 10.0
_View = TypeVar("_View", ClusterView, EventLog)
_REF = re.compile(r"^<0\.(\d+)(?:@(.+))?>$")


async def wait_for(node: Node, predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until `predicate()` holds, re-checking on every event of `node`; LabError after `timeout`."""
    if predicate():
        return
    changed = asyncio.Event()
    unsubscribe = node.events.subscribe(lambda _event: changed.set())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LabError(f"timed out after {timeout:g} s waiting for {what}")
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, 0.5))
    finally:
        unsubscribe()


class LabSession:
    """noex_lab's state in one IPython kernel."""

    def __init__(self, ip: InteractiveShell) -> None:
        self.ip = ip
        self.node: Node | None = None
        self.secret: str | None = None
        self.heartbeat_interval_ms = HEARTBEAT_INTERVAL_MS
        self.advertised: Path | None = None  # where `noex-lab top` finds this node (notebook_nodes)
        self.heartbeat_miss_threshold = HEARTBEAT_MISS_THRESHOLD
        self.launcher = ProcessLauncher(self._on_local_output, self._on_local_exit)
        self.shipper = CodeShipper(self._report)
        self.reporter = BackgroundReporter(ip, self.event_node)
        self.views: list[Any] = []
        self.cluster_view: ClusterView | None = None
        self.event_log: EventLog | None = None
        self.traces: list[TraceHandle] = []
        self._stop_crash_watch: Callable[[], None] | None = None
        self.current_dashboard: Dashboard | None = None
        self._in_crash_report: set[tuple[str, str]] = set()  # (local node, stream) inside a logged report
        self.attached: str | None = None  # "observer" or "member" after %noex attach
        self.fault_nodes: set[NodeId] = set()  # nodes %noex partition / link gave fault rules

    # --------------------------------------------------------------- lifecycle
    def load(self) -> None:
        self.reporter.install()
        tracebacks.labelers[:0] = [self.cell_label, self.shipper.label]

    def _withdraw(self) -> None:
        from ..distribution.notebook_nodes import withdraw

        withdraw(self.advertised)
        self.advertised = None

    def unload(self) -> None:
        self._withdraw()
        if self.current_dashboard is not None:
            self.current_dashboard.close()
            self.current_dashboard = None
        for labeler in (self.cell_label, self.shipper.label):
            if labeler in tracebacks.labelers:
                tracebacks.labelers.remove(labeler)
        if self._stop_crash_watch is not None:
            self._stop_crash_watch()
            self._stop_crash_watch = None
        for handle in self.traces:
            with contextlib.suppress(Exception):
                handle.stop()
        for view in self.views:
            with contextlib.suppress(Exception):
                view.close()
        self.views.clear()
        self.shipper.detach_all()
        self.launcher.close_all()
        self.reporter.uninstall()

    # --------------------------------------------------------------- nodes
    def kernel_node(self) -> Node:
        """This kernel's node: the one `%noex start` started, else the current (maybe implicit) node."""
        if self.node is not None and self.node.running:
            return self.node
        return current_node()

    def event_node(self) -> Node | None:
        if self.node is not None and self.node.running:
            return self.node
        try:
            nodes = running_nodes()
        except Exception:
            return None
        return nodes[0] if nodes else None

    def distributed_node(self) -> Node:
        node = self.kernel_node()
        if node.id is None or node.distribution is None:
            raise LabError("this kernel's node is not started yet: run %noex start NAME first")
        return node

    def background_failure(self, what: str, exc: BaseException) -> None:
        """A `%noex` command that nobody awaited failed: report it like any background error."""
        from .background import BackgroundError

        node = self.event_node()
        error = f"{type(exc).__name__}: {exc}"
        if node is not None and node.running and node in self.reporter.watched:
            node.events.emit("error", what=f"%noex {what}", error=error)
        else:
            self.reporter.add(BackgroundError(time.time(), "%noex", f"%noex {what}", error))

    def _report(self, kind: EventKind, data: dict[str, Any]) -> None:
        node = self.event_node()
        if node is not None:
            node.events.emit(kind, **data)

    def cell_label(self, filename: str) -> str | None:
        """`Cell In[n]` for the file name IPython gave a cell (a traceback labeler)."""
        number = getattr(getattr(self.ip, "compile", None), "_filename_map", {}).get(filename)
        return f"Cell In[{number}]" if isinstance(number, int) else None

    def _on_local_output(self, local: LaunchedNode, stream: str, line: str) -> None:
        # a crash report a local node logs reaches this kernel as a report already (see
        # _watch_crashes): its lines on the node's stderr would only repeat it
        key = (local.name, stream)
        if line.startswith("=CRASH REPORT===="):
            self._in_crash_report.add(key)
            return
        if key in self._in_crash_report:
            if line.startswith(" "):
                return
            self._in_crash_report.discard(key)
        self._report("node_output", {"node": local.name, "stream": stream, "line": line})

    def _watch_crashes(self, node: Node) -> None:
        """Collect the crash reports of every peer as `crash_report` events of this kernel's node."""
        if self._stop_crash_watch is not None:
            self._stop_crash_watch()

        def sink(report: CrashReport) -> None:
            if node.running:
                node.events.emit("crash_report", report=report)

        self._stop_crash_watch = watch_cluster_crashes(node, sink)

    async def crashes(self, count: int = 20, *, spec: str | None = None, wait: int = 0,
                      timeout: float = CRASH_WAIT_S) -> CrashList:
        """The last `count` crash reports (of node `spec`); with `wait`, first wait until that many
        more crashes arrived (LabError after `timeout`)."""
        node_id = self.resolve_node(spec) if spec is not None else None
        log = self.reporter.crashes
        if wait > 0:
            target = log.total + wait
            await wait_for(self.kernel_node(), lambda: log.total >= target, timeout, f"{wait} more crash(es)")
        return log.listing(count, node_id)

    def _on_local_exit(self, local: LaunchedNode, code: int) -> None:
        self._report("local_node_exited", {"node": local.name, "pid": local.pid, "returncode": code,
                                           "expected": local.expected_exit, "where": local.transport.label})
        if not local.expected_exit:
            tail = " | ".join(local.stderr_tail[-3:])
            self._report("error", {"what": f"{local.kind} node {local.name} ({_where(local)}) exited unexpectedly",
                                   "error": f"exit code {code}" + (f": {tail}" if tail else "")})

    def resolve_node(self, spec: str) -> NodeId:
        """A node by full id or by name (this kernel's node, its peers, local nodes)."""
        node = self.kernel_node()
        if "@" in spec:
            try:
                return NodeId.parse(spec)
            except ValueError as exc:
                raise LabError(str(exc)) from None
        known: list[NodeId] = []
        if node.id is not None:
            known.append(node.id)
        known.extend(info.id for info in node.get_nodes())
        local = self.launcher.find(spec)
        if local is not None and local.node_id is not None:
            known.append(local.node_id)
        matches = sorted({k for k in known if k.name == spec})
        if len(matches) == 1:
            return matches[0]
        if not matches:
            names = ", ".join(sorted({k.name for k in known})) or "none"
            raise LabError(f"no node named {spec!r} is connected (known: {names})")
        raise LabError(f"several nodes are named {spec!r}: {', '.join(map(str, matches))}; use the full id")

    def parse_target(self, text: str | ProcessRef) -> ProcessRef | str:
        """A `<0.N@node>` ref (its incarnation filled in) or a name; a `ProcessRef` as it is."""
        if isinstance(text, ProcessRef):
            return text
        m = _REF.match(text.strip())
        if m is None:
            return text
        node = self.kernel_node()
        pid = int(m.group(1))
        if m.group(2) is None:
            return ProcessRef(node.id, pid, node.incarnation)
        try:
            node_id = NodeId.parse(m.group(2))
        except ValueError as exc:
            raise LabError(f"bad process reference {text!r}: {exc}") from None
        if node_id == node.id:
            return ProcessRef(node_id, pid, node.incarnation)
        for info in node.get_nodes():
            if info.id == node_id:
                return ProcessRef(node_id, pid, info.incarnation)
        raise LabError(f"node {node_id} of {text} is not connected")

    # --------------------------------------------------------------- %noex start
    async def start(
        self, name: str, *, port: int = 0, host: str = "127.0.0.1", seeds: list[str] | None = None,
        secret_env: str | None = None, heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS,
        heartbeat_miss_threshold: int = HEARTBEAT_MISS_THRESHOLD,
        advertise_host: str | None = None,
    ) -> Node:
        existing = self.node if self.node is not None and self.node.running else None
        if existing is None:
            # a node started in code (Cluster.start): adopt it, whatever its name (re-running is safe)
            existing = next((n for n in running_nodes() if n.id is not None), None)
            if existing is not None:
                self._adopt(existing)
        if existing is not None and existing.id is not None:
            if existing.id.name != name:
                raise LabError(f"this kernel's node is already {existing.id}; run %noex stop first to start {name!r}")
            display(Message(f"reusing node {existing.id} (already running; the options of this call are "
                            "ignored: %noex stop first to change them)", "info"))
            return existing
        if secret_env:
            secret = os.environ.get(secret_env)
            if not secret:
                raise LabError(f"environment variable {secret_env} (--secret-env) is not set or empty")
            how = f"secret from ${secret_env}"
        else:
            secret = load_or_create()  # the per-user secret file: `noex-lab top` attaches with no flags
            how = "the per-user secret"
        node = await Cluster.start(
            name, host=host, port=port, seeds=list(seeds or []), cluster_secret=secret,
            heartbeat_interval_ms=heartbeat_interval_ms, heartbeat_miss_threshold=heartbeat_miss_threshold,
            advertise_host=advertise_host,
        )
        self.node, self.secret = node, secret
        self.heartbeat_interval_ms, self.heartbeat_miss_threshold = heartbeat_interval_ms, heartbeat_miss_threshold
        self.reporter.watch(node)
        self.shipper.attach(node)
        self._watch_crashes(node)
        display(Message(f"node {node.id} started (authenticated links, {how})", "ok"))
        display(Message(self._advertise(node, secret_env), "info"))
        if seeds:
            try:
                await wait_for(node, lambda: bool(node.get_nodes()), SEED_WAIT_S, "a seed")
                display(Message(f"joined the cluster: {len(node.get_nodes())} peer(s)", "ok"))
            except LabError:
                display(Message(f"no seed answered within {SEED_WAIT_S:g} s ({', '.join(seeds)}); "
                                "still trying in the background", "warning"))
        return node

    def _advertise(self, node: Node, secret_env: str | None) -> str:
        """Let `noex-lab top` find this node (per-user secret only); the command that attaches."""
        from ..distribution.notebook_nodes import advertise, withdraw

        withdraw(self.advertised)
        self.advertised = None
        ms = self.heartbeat_interval_ms
        heartbeat = "" if ms == HEARTBEAT_INTERVAL_MS else f" --heartbeat-interval-ms {ms}"
        if secret_env:  # top cannot know that secret: the exact command, to run where the variable is set
            return f"attach from a terminal: noex-lab top {node.id} --secret-env {secret_env}{heartbeat}"
        try:
            self.advertised = advertise(node.id)
        except OSError as exc:
            return f"attach from a terminal: noex-lab top {node.id}{heartbeat} (could not advertise it: {exc})"
        return f"attach from a terminal: noex-lab top{heartbeat} (it finds this node; or noex-lab top {node.id})"

    def _adopt(self, node: Node) -> None:
        raw = Cluster.config(node).cluster_secret if node.distribution is not None else None
        self.node = node
        self.secret = raw.decode() if isinstance(raw, bytes) else raw
        self.reporter.watch(node)
        self.shipper.attach(node)
        self._watch_crashes(node)

    # --------------------------------------------------------------- %noex local / kill / stop
    async def local(self, count: int, *, prefix: str = "local", code_from_any: bool = False) -> list[LaunchedNode]:
        return await self.launch(count, prefix=prefix, code_from_any=code_from_any)

    async def remote(
        self, host: str, count: int, *, user: str | None = None, python: str | None = None,
        workdir: str | None = None, prefix: str = "remote", advertise_host: str | None = None,
        ssh_options: list[str] | None = None, ssh_config: str | None = None, code_from_any: bool = False,
    ) -> list[LaunchedNode]:
        """`%noex remote`: make sure `count` node processes run on `host`, started over SSH."""
        transport = SshTransport(host, user=user, python=python or sys.executable, workdir=workdir,
                                 advertise=advertise_host, options=tuple(ssh_options or ()), config=ssh_config)
        return await self.launch(count, transport=transport, prefix=prefix, code_from_any=code_from_any)

    async def launch(self, count: int, *, transport: Transport | None = None, prefix: str = "local",
                     code_from_any: bool = False) -> list[LaunchedNode]:
        """Make sure `count` node processes of `transport` (default: this machine) run, joined to
        this kernel's node: start the missing ones, wait until they joined, ship the behaviors.
        Another launcher (docs/guides/remote-nodes.md) passes its own `Transport` here."""
        node = self.distributed_node()
        if self.attached == "observer":
            raise LabError("this kernel is a hidden observer (%noex attach): it starts no nodes; run %noex detach "
                           "first, or attach with --member")
        if self.secret is None:
            raise LabError("this kernel's node has no cluster secret, so local nodes could not authenticate; "
                           "run %noex stop, then %noex start NAME")
        if count < 0:
            raise LabError(f"N must be >= 0, not {count}")
        label = transport.label if transport is not None else "local"
        kind = transport.kind if transport is not None else "local"
        where = "" if label == "local" else f" on {label}"
        alive = self.launcher.alive(label)
        missing = count - len(alive)
        if missing <= 0:
            display(Message(f"{len(alive)} {kind} node(s){where} already running; nothing to start", "info"),
                    self.local_table(label))
            return alive
        names = self.launcher.free_names(prefix, missing)
        results = await asyncio.gather(
            *(self.launcher.launch(n, node.id, self.secret, heartbeat_interval_ms=self.heartbeat_interval_ms,  # type: ignore[arg-type]
                                   heartbeat_miss_threshold=self.heartbeat_miss_threshold,
                                   code_from_any=code_from_any, transport=transport) for n in names),
            return_exceptions=True,
        )
        started = [r for r in results if isinstance(r, LaunchedNode)]
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            for local in started:
                with contextlib.suppress(NoexError):
                    await self.launcher.kill(local)
            raise failures[0]
        ids = [local.node_id for local in started if local.node_id is not None]

        def joined() -> bool:
            peers = {info.id for info in node.get_nodes()}
            return all(i in peers for i in ids)

        await wait_for(node, joined, JOIN_TIMEOUT_S, f"{', '.join(map(str, ids))} to join")
        shipped: list[ShipResult] = []
        if self.shipper.behaviors:
            for part in await asyncio.gather(*(self.shipper.wait_peer(node, i) for i in ids)):
                shipped.extend(part)
        text = f"started {len(started)} {kind} node(s){where}: {', '.join(n.name for n in started)}"
        if len(alive):
            text += f" ({len(alive)} already running)"
        outputs: list[Any] = [Message(text, "ok"), self.local_table(label)]
        refused = [r for r in shipped if not r.ok]
        if shipped:
            outputs.append(Message(f"shipped {len(self.shipper.behaviors)} behavior(s) to the new nodes"
                                   + (f"; {len(refused)} refusal(s)" if refused else ""),
                                   "warning" if refused else "ok"))
        if refused:
            outputs.append(self.shipper.table(refused))
        display(*outputs)
        return self.launcher.alive(label)

    def local_table(self, label: str = "local") -> Table:
        """The node processes of one transport ("local", "ssh gpu1"), running or not."""
        rows = [[n.name, n.node_id, n.pid, Status("running" if n.alive else "exited"),
                 "" if n.alive else f"exit code {n.returncode}"]
                for n in self.launcher.nodes.values() if n.transport.label == label]
        title = "local node processes" if label == "local" else f"node processes on {label.removeprefix('ssh ')} (ssh)"
        return Table(["name", "node", "pid", "status", ""], rows, title=title)

    async def _wait_down(self, node: Node, peer: NodeId | None) -> None:
        if peer is None or not node.running:
            return
        with contextlib.suppress(LabError):
            await wait_for(node, lambda: all(i.id != peer for i in node.get_nodes()), 10.0, f"{peer} to leave")

    def _children_on(self, peer: NodeId | None) -> int:
        """How many children of this kernel node's supervisors run on `peer`."""
        node = self.kernel_node()
        count = 0
        for proc in node.processes():
            if isinstance(proc.server, SupervisorServer) and proc.state is not None and proc.alive:
                with contextlib.suppress(Exception):
                    count += sum(1 for c in proc.server.noex_tree(proc.state).children if c.node == peer)
        return count

    async def _leave_and_failover(self, node: Node, peer: NodeId | None, leave: Callable[[], Any]) -> str:
        """Run `leave()` (kill or stop a local node), wait for the node to be seen down and for the
        supervisors of this kernel's node to move the children that ran there; say what happened."""
        expected = self._children_on(peer)
        moved: list[NodeEvent] = []
        gave_up: list[NodeEvent] = []

        def on_event(event: NodeEvent) -> None:
            if event.kind == "child_migrated" and event.data.get("from_node") == peer:
                moved.append(event)
            elif event.kind == "supervisor_gave_up":
                gave_up.append(event)

        unsubscribe = node.events.subscribe(on_event)
        started = time.monotonic()
        try:
            await leave()
            await self._wait_down(node, peer)
            down_s = time.monotonic() - started
            if expected:
                with contextlib.suppress(LabError):
                    await wait_for(node, lambda: len(moved) >= expected or bool(gave_up), FAILOVER_WAIT_S,
                                   "the children to move")
        finally:
            unsubscribe()
        text = f"node down after {down_s:.2f} s"
        if not expected:
            return text + "; no supervised children ran there"
        # which children moved (not where to: with most node selectors that is a race, and a
        # SupervisorView or the dashboard shows it)
        which = ", ".join(sorted(str(e.data.get("child")) for e in moved))
        text += f"; {len(moved)} of {expected} children moved" + (f" ({which})" if which else "")
        if gave_up:
            text += f"; {len(gave_up)} supervisor(s) gave up (too many restarts)"
        return text

    async def kill(self, spec: str) -> None:
        local = self.launcher.find(spec)
        if local is not None:
            node = self.kernel_node()
            codes: list[int] = []

            async def leave() -> None:
                codes.append(await self.launcher.kill(local))

            what = await self._leave_and_failover(node, local.node_id, leave)
            display(Message(f"killed {local.kind} node {local.name} ({local.node_id}, {_where(local)}, "
                            f"exit code {codes[0]}): {what}", "ok"))
            return
        node = self.kernel_node()
        if node.id is not None and spec in (node.id.name, str(node.id)):
            await node.kill()
            self.node = None
            self._withdraw()
            display(Message(f"killed this kernel's node {node.id} (fault injection: its processes ended "
                            "'killed', peers saw the connection drop)", "ok"))
            return
        running = ", ".join(n.name for n in self.launcher.alive()) or "none"
        raise LabError(f"{spec!r} is not a running node started by %noex local or %noex remote (running: "
                       f"{running}); only those, and this kernel's own node, can be killed from here")

    async def stop(self, spec: str | None = None) -> None:
        node = self.kernel_node()
        if spec is None:
            locals_ = self.launcher.alive()
            await asyncio.gather(*(self.launcher.stop(n) for n in locals_))
            for view in list(self.views):
                if isinstance(view, TraceView):
                    view.end("node stopped")
            stopped = node.display_name
            was_distributed = node.id is not None
            await node.stop()
            self.node, self.attached = None, None
            self._withdraw()
            remotes = [n for n in locals_ if n.kind != "local"]
            parts = [f"stopped {len(locals_) - len(remotes)} local node(s)"] if len(locals_) > len(remotes) else []
            if remotes:
                parts.append(f"stopped {len(remotes)} remote node(s)")
            parts.append(f"stopped this kernel's node {stopped}" if was_distributed
                         else f"stopped this kernel's local node {stopped}")
            display(Message("; ".join(parts), "ok"))
            return
        local = self.launcher.find(spec)
        if local is not None:
            codes: list[int] = []

            async def leave() -> None:
                codes.append(await self.launcher.stop(local))

            what = await self._leave_and_failover(node, local.node_id, leave)
            display(Message(f"stopped {local.kind} node {local.name} ({local.node_id}, exit code {codes[0]}): {what}",
                            "ok"))
            return
        if node.id is not None and spec in (node.id.name, str(node.id)):
            await self.stop(None)
            return
        running = ", ".join(n.name for n in self.launcher.alive()) or "none"
        raise LabError(f"{spec!r} is not a running node started by %noex local or %noex remote (running: "
                       f"{running}), nor this kernel's node")

    # --------------------------------------------------------------- %noex attach / detach
    async def attach(
        self, seed: str, *, secret_env: str | None = None, member: bool = False, name: str | None = None,
        host: str = "127.0.0.1", advertise_host: str | None = None, timeout: float = ATTACH_TIMEOUT_S,
    ) -> Node:
        """Join a running cluster through `seed` as a hidden observer (like `noex-lab top`, Erlang's
        hidden nodes): connected to every member, so every command and view works on the whole
        cluster, but never listed, given children or allowed to register global names. `member`
        makes it a full member instead."""
        existing = self.node if self.node is not None and self.node.running else None
        if existing is None:
            existing = next((n for n in running_nodes() if n.id is not None), None)
        if existing is not None and self.attached is not None and existing is self.node:
            display(Message(f"already attached as {existing.id} ({self.attached}, {len(existing.get_nodes())} "
                            "member(s)); %noex detach first to attach elsewhere", "info"))
            return existing
        if existing is not None:
            raise LabError(f"this kernel's node is already {existing.id}; run %noex stop first to attach to a cluster")
        try:
            NodeId.parse(seed)
        except ValueError as exc:
            raise LabError(f"bad seed {seed!r}: {exc} (a member's id, name@host:port)") from None
        if secret_env:
            secret = os.environ.get(secret_env)
            if not secret:
                raise LabError(f"environment variable {secret_env} (--secret-env) is not set or empty")
        else:
            secret = load_or_create()
        from ..core.errors import HandshakeRefusedError
        from ..terminal.top import wait_for_members

        node = await Cluster.start(
            name or f"observer-{os.getpid()}", host=host, port=0, seeds=[seed], cluster_secret=secret,
            hidden=not member, advertise_host=advertise_host, heartbeat_interval_ms=self.heartbeat_interval_ms,
            heartbeat_miss_threshold=self.heartbeat_miss_threshold,
        )
        try:
            answered = await wait_for_members(node, timeout=timeout)
        except HandshakeRefusedError as exc:  # a refusal does not heal by waiting: say it at once, with its reason
            await node.stop()
            raise LabError(f"{seed} refused this kernel: {exc.reason} (the cluster's secret: --secret-env VAR, "
                           "else the per-user secret file)") from None
        if not answered:
            await node.stop()
            raise LabError(f"no member answered through {seed} within {timeout:g} s: is it running, and does it use "
                           "the same secret (--secret-env VAR, else the per-user secret file)?")
        self.node, self.secret, self.attached = node, secret, "member" if member else "observer"
        self.reporter.watch(node)
        members = node.get_nodes()
        listed = ", ".join(str(info.id) for info in members)
        if member:
            self.shipper.attach(node)
            text = (f"attached to the cluster as a full member {node.id}, with {len(members)} other member(s) "
                    f"({listed}), as asked with --member: the members list this kernel, a DistributedSupervisor "
                    "may place children on it and it can register global names; %noex detach leaves gracefully")
            display(Message(text, "warning"))
        else:
            text = (f"attached to the cluster through {seed} as the hidden observer {node.id}; {len(members)} "
                    f"member(s) connected: {listed}. They do not list this kernel, place no children on it, and it "
                    "registers no global names; %noex detach leaves")
            display(Message(text, "ok"))
        return node

    async def detach(self) -> None:
        """Leave the cluster `attach` joined: the members see the connections close, nothing more
        (an observer was never listed, so no node_down either)."""
        node = self.node
        if self.attached is None or node is None or not node.running:
            raise LabError("this kernel is not attached to a cluster (%noex attach SEED); %noex stop stops a "
                           "node started with %noex start")
        for view in list(self.views):
            if isinstance(view, TraceView):
                view.end("detached")
        how = self.attached
        await node.stop()
        self.node, self.attached = None, None
        seen = "they saw only its connections close" if how == "observer" else "they saw graceful_shutdown"
        display(Message(f"detached: {node.id} left the cluster ({seen})", "ok"))

    # --------------------------------------------------------------- tables
    def nodes_table(self) -> Table:
        members = ClusterTable(self.kernel_node())
        members.extra_columns = self._local_label
        return members.table()

    def _local_label(self, node_id: NodeId) -> str:
        local = self.launcher.by_id(node_id)
        return local.where if local is not None else ""

    async def ps(self, spec: str | None = None, *, all_nodes: bool = False, limit: int = PS_LIMIT,
                 offset: int = 0, sort: str = "pid") -> list[Table]:
        """A table per node of `limit` of its processes from `offset` in `sort` order ("pid", or the
        largest first by "queue", "messages", "high_water"), and how many run there in all."""
        check_page(limit, offset, sort)
        node = self.kernel_node()
        targets: list[NodeId | None]
        if all_nodes:
            targets = [None, *(info.id for info in node.get_nodes())]
        elif spec is not None:
            target = self.resolve_node(spec)
            targets = [None if target == node.id else target]
        else:
            targets = [None]
        tables = []
        for where in targets:
            title = str(where) if where is not None else f"{node.display_name} (this kernel)"
            try:
                page = await process_page(where, node=node, limit=limit, offset=offset, sort=sort)
            except NoexError as exc:
                tables.append(Table(["ref"], [], title=title, empty=f"unreachable: {exc}"))
                continue
            rows = page.processes
            total = page.total
            body = [[r.ref, r.name, r.behavior, Status(r.status), r.queue_len, r.queue_high_water,
                     "-" if r.max_mailbox is None else r.max_mailbox, r.messages, round(r.uptime_s, 1)] for r in rows]
            note = f"{total} processes" if len(body) == total else \
                f"{total} processes; listed: {len(body)} from #{offset + 1} by {sort} (--limit, --offset, --sort)"
            tables.append(Table(["ref", "name", "behavior", "status", "queue", "high-water", "bound", "messages",
                                 "uptime s"], body, title=f"processes on {title}", note=note))
        return tables

    async def registry(self) -> list[Table]:
        node = self.kernel_node()
        rows: list[list[Any]] = []
        where_list: list[NodeId | None] = [None, *(info.id for info in node.get_nodes())]
        for where in where_list:
            label = where if where is not None else (node.id or node.display_name)
            try:
                names = (await process_page(where, node=node, limit=0)).names
            except NoexError as exc:
                rows.append(["?", "local", label, f"unreachable: {exc}"])
                continue
            for name, ref in sorted(names.items()):
                rows.append([name, "local", label, ref])
        if node.distribution is not None:
            for name, ref in sorted(node.distribution.global_names().items()):
                rows.append([name, "global", ref.node, ref])
        names_table = Table(["name", "scope", "node", "ref"], rows, title="registered names")
        known = [[n, getattr(BehaviorRegistry.get(n), "__qualname__", "?")] for n in BehaviorRegistry.names()]
        behaviors = Table(["behavior", "class"], known, title="BehaviorRegistry (this kernel)")
        return [names_table, behaviors]

    async def events(self, count: int = 20, *, spec: str | None = None, kind: str | None = None) -> Table:
        if kind is not None and kind not in EVENT_KINDS:  # (a typo would show no event at all)
            raise MagicUsageError(f"unknown event kind {kind!r}; the kinds are {', '.join(EVENT_KINDS)}")
        node = self.kernel_node()
        where = None if spec is None else self.resolve_node(spec)
        if where == node.id:
            where = None
        fetch = count if kind is None else 2000
        rows = await recent_events(fetch, where, node=node)
        if kind is not None:
            rows = [r for r in rows if r.kind == kind]
        rows = rows[-count:]
        title = f"last {len(rows)} events of {where or node.display_name}" + (f" (kind {kind})" if kind else "")
        body = [[clock(r.at), Status(r.kind) if r.kind in ("error", "crash_report") else r.kind, r.text] for r in rows]
        return Table(["time", "event", "details"], body, title=title, empty="(no events)")

    # --------------------------------------------------------------- debugging
    async def state(self, target: str | ProcessRef, *, on: str | None = None) -> Any:
        node = self.kernel_node()
        on_id = self.resolve_node(on) if on is not None else None
        return await get_state(self.parse_target(target), on=on_id, node=node)

    async def trace(self, target: str | ProcessRef, *, seconds: float = 10.0, on: str | None = None,
                    max_events: int = 1000) -> TraceView:
        node = self.kernel_node()
        on_id = self.resolve_node(on) if on is not None else None
        view = TraceView(str(target), seconds=seconds)
        try:
            handle = await trace(self.parse_target(target), view.add, view.end, seconds=seconds,
                                 max_events=max_events, on=on_id, node=node)
        except BaseException:
            view.close()
            raise
        view.started(handle.ref, handle.behavior, handle.initial_state)
        self.traces = [t for t in self.traces if not t.ended] + [handle]
        self._keep_view(view)
        return view

    def stop_traces(self) -> int:
        running = [t for t in self.traces if not t.ended]
        for handle in running:
            handle.stop()
        self.traces = []
        return len(running)

    # --------------------------------------------------------------- views
    def _keep_view(self, view: Any) -> None:
        self.views = [*[v for v in self.views if not getattr(v, "closed", False)][-50:], view]

    def _current(self, view: _View | None, make: Callable[[Node], _View]) -> _View:
        """`view` while it is open and shows the kernel's node; else a new one (the old one closed)."""
        node = self.kernel_node()
        if view is not None and not view.closed and view.node is node:
            return view
        if view is not None:
            view.close()
        view = make(node)
        self._keep_view(view)
        return view

    def watch(self) -> ClusterView:
        def make(node: Node) -> ClusterView:
            view = ClusterView(node)
            view.extra_columns = self._local_label
            return view

        self.cluster_view = self._current(self.cluster_view, make)
        return self.cluster_view

    def log(self) -> EventLog:
        self.event_log = self._current(self.event_log, EventLog)
        return self.event_log

    # --------------------------------------------------------------- %noex dashboard
    def root_supervisors(self) -> list[ProcessRef]:
        """The supervisors running on this kernel's node that no other supervisor supervises."""
        node = self.kernel_node()
        sups = {p.ref: p for p in node.processes() if isinstance(p.server, SupervisorServer)}
        return [ref for ref, p in sorted(sups.items(), key=lambda kv: kv[1].pid) if p.parent not in sups]

    def dashboard(self, targets: list[Any], *, inline: bool = False) -> Dashboard:
        """A new dashboard (the previous one closed): topology, the supervisors `targets` (default:
        the root supervisors of this kernel's node) and the events, docked in a side panel."""
        if self.current_dashboard is not None:
            self.current_dashboard.close()
            self.current_dashboard = None
        node = self.kernel_node()
        cluster = ClusterView(node)
        cluster.extra_columns = self._local_label
        supervisors: list[SupervisorView] = []
        try:
            for target in targets or self.root_supervisors():
                supervisors.append(SupervisorView(self.parse_target(target) if isinstance(target, str) else target,
                                                  node=node))
        except BaseException:
            cluster.close()
            for view in supervisors:
                view.close()
            raise
        events = EventLog(node, show=15, kinds=DASHBOARD_KINDS)
        board = Dashboard(cluster, supervisors, events, docked=not inline and sidecar_class() is not None)
        self.current_dashboard = board
        return board

    # --------------------------------------------------------------- %%noex behavior
    async def ship_behavior(self, name: str, source: str, cls: type, *, replace: bool = False,
                            cell: int | None = None) -> list[ShipResult]:
        behavior = self.shipper.define(name, source, cls.__name__, replace=replace, cell=cell)
        set_source(cls, source)
        upgrade = BehaviorRegistry.upgrade(name, cls)  # this kernel's processes of it: hot upgrade
        node = self.kernel_node()
        results: list[ShipResult] = []
        if node.distribution is not None and self.attached == "observer":
            display(Message(f"behavior {name!r} = {cls.__qualname__} registered here only: this kernel is a hidden "
                            "observer (%noex attach), which ships no code to the cluster", "info"))
            return results
        if node.distribution is not None:
            self.shipper.attach(node)
            results = await self.shipper.ship(node, behavior)
        here = await upgrade.wait(UPGRADE_REPORT_WAIT_S) if upgrade.requested else []
        failed = [r for r in here if r.outcome == "failed"]
        refused = [r for r in results if not r.ok]
        where = f"shipped to {len(results) - len(refused)} of {len(results)} other node(s)" if results else \
            "no other node connected yet; it will be shipped to nodes that join"
        level = "warning" if refused or failed or any("kept the old code" in r.detail for r in results) else "ok"
        counts = [sum(1 for r in here if r.outcome == o) for o in ("upgraded", "failed", "pending")]
        upgraded_here = upgrade_text(counts[0], counts[1], counts[2], [f"{r.ref}: {r.error}" for r in failed])
        here_text = f" ({upgraded_here} here)" if upgraded_here else ""
        outputs: list[Any] = [Message(f"behavior {name!r} = {cls.__qualname__} registered here{here_text}; {where}",
                                      level)]
        if results:
            outputs.append(self.shipper.table(results))
        display(*outputs)
        return results

    def behaviors_table(self) -> Table:
        return self.shipper.table()


def _where(node: LaunchedNode) -> str:
    """`pid 123` for a node on this machine, `ssh gpu1 pid 456` for one elsewhere."""
    return f"pid {node.pid}" if node.kind == "local" else node.where
