"""Live widgets: `ClusterView`, `SupervisorView`, `EventLog` (and `TraceView` for `%noex trace`).

How they behave:

- Each widget is one `ipywidgets.HTML` model whose value is re-rendered in place, so a widget
  never creates child models after it was built (no leaked models however often it changes).
- Changes arrive from event-stream subscriptions and small background tasks on the kernel's
  loop, so the widget updates while the kernel is idle.
- Bursts are coalesced: a widget renders at most once per `min_interval` seconds (default
  0.25 s, so at most 4 updates per second), and sends nothing when the rendering is unchanged.
- `_repr_mimebundle_` adds `text/html` and `text/plain` renderings next to the widget view, for
  static renderers (nbconvert, GitHub) and plain terminals.
- `close()` unsubscribes and stops the background work.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from html import escape
from typing import Any, Protocol, runtime_checkable

import ipywidgets

from ..core.crash_report import CrashReport
from ..core.errors import InvalidArgumentError, NoexError, ServerNotRunningError
from ..core.events import MEMBERSHIP_KINDS, EventKind, NodeEvent
from ..core.node import Node, current_node
from ..core.node_id import NodeId
from ..core.refs import ProcessRef
from ..core.supervisor import ChildInfo, Supervisor, SupervisorServer
from ..distribution.introspection import TraceEvent
from ..frontend.cluster_model import MembershipModel
from .pictures import ChildPicture, LinkPicture, NodePicture, TreePicture, topology_svg, tree_svg
from .reprs import ShortRef, Status, Table, clock, text_of

MEMBERSHIP_EVENTS: frozenset[EventKind] = MEMBERSHIP_KINDS | {"cluster_started", "node_fenced", "node_unfenced"}
SUPERVISOR_EVENTS: frozenset[EventKind] = frozenset({
    "child_started", "child_stopped", "supervisor_restart", "supervisor_gave_up", "child_restarted",
    "child_migrated", "node_failure_detected", "supervisor_stopped",
})

SCROLL_STYLE = "max-height:320px;overflow-y:auto"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LiveWidget(ipywidgets.HTML):  # type: ignore[misc]
    """An HTML widget that re-renders itself, coalesced, whenever `invalidate()` is called."""

    min_interval: float = 0.25
    value: str  # the ipywidgets trait (an annotation only: the trait descriptor stays)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(value="", **kwargs)
        self._loop = _running_loop()
        # Updates run in the context the widget was made in (the cell's), never in the context of
        # whoever triggered them: event callbacks run inside processes, and a task inheriting a
        # process's context would act as that process (a supervisor calling itself, for one).
        self._context = contextvars.copy_context()
        self._handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self._last_flush = float("-inf")
        self._closed = False
        self._cleanups: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.renders = 0  # how many times the value actually changed (a test and debugging aid)

    # --------------------------------------------------------------- subclass API
    def render_html(self) -> str:
        raise NotImplementedError

    def render_text(self) -> str:
        raise NotImplementedError

    # --------------------------------------------------------------- updating
    def invalidate(self) -> None:
        """Schedule a re-render (at most one per `min_interval`)."""
        if self._closed or self._handle is not None:
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            self.flush()
            return
        delay = self._last_flush + self.min_interval - loop.time()
        if delay <= 0:
            self._handle = loop.call_soon(self.flush, context=self._context)
        else:
            self._handle = loop.call_later(delay, self.flush, context=self._context)

    def flush(self) -> None:
        """Re-render now; only a changed rendering is sent to the front end."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._closed:
            return
        if self._loop is not None:
            self._last_flush = self._loop.time()
        try:
            html = self.render_html()
        except Exception as exc:  # never let a rendering bug kill the subscription
            what = f"{type(self).__name__} failed to render: {exc!r}"
            html = f"<pre style='color:#cf222e'>{escape(what)}</pre>"
        if html != self.value:
            self.value = html
            self.renders += 1

    def start_task(self, coro: Awaitable[Any]) -> None:
        """Run background work owned by this widget (cancelled by `close()`)."""
        loop = self._loop
        if loop is None:
            raise NoexError(f"{type(self).__name__} needs a running asyncio loop for live updates")

        async def run() -> None:
            await coro

        task = loop.create_task(run(), context=self._context.copy())
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.on_task_error(task.exception())

    def on_task_error(self, exc: BaseException | None) -> None:
        pass

    def on_close(self, cleanup: Callable[[], None]) -> None:
        self._cleanups.append(cleanup)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop updating (unsubscribe, cancel background work) and close the widget model."""
        if not self._closed:
            self._closed = True
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None
            for cleanup in self._cleanups:
                with contextlib.suppress(Exception):
                    cleanup()
            self._cleanups.clear()
            for task in list(self._tasks):
                task.cancel()
        super().close()

    # --------------------------------------------------------------- display
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        data = super()._repr_mimebundle_(**kwargs) or {}
        data["text/plain"] = self.render_text()
        data["text/html"] = self.render_html()
        return data

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


def _subscribe_events(widget: LiveWidget, node: Node, callback: Callable[[NodeEvent], None]) -> None:
    widget.on_close(node.events.subscribe(callback))


# ----------------------------------------------------------------------------------- ClusterView
class ClusterTable:
    """The membership table of `node`: itself, its peers, and peers that went down (from its events)."""

    def __init__(self, node: Node, *, keep_down: int = 20) -> None:
        self.node = node
        self.keep_down = keep_down
        self.model = MembershipModel(keep_down=keep_down)  # (the model `noex-lab top` keeps too)
        self.extra_columns: Callable[[NodeId], str] | None = None  # e.g. "local pid 123" (set by %noex)
        for event in node.events.recent(2000):  # nodes that went down before this table existed
            self.apply(event)

    def apply(self, event: NodeEvent) -> bool:
        """Take a membership event into account; False for other events."""
        self.model.apply(event)
        return event.kind in MEMBERSHIP_EVENTS

    @property
    def down(self) -> dict[NodeId, tuple[float, str]]:
        """The peers that went down (in that order): when, and why."""
        return {m.id: (m.since, m.down_reason or "") for m in self.model.down()}

    def table(self) -> Table:
        node = self.node
        rows: list[list[Any]] = []
        if node.id is None:
            title = f"node {node.display_name} ({'running' if node.running else 'stopped'}, not distributed)"
        else:
            title = f"cluster seen from {node.id}" + ("" if node.running else " (stopped)")
        me = node.id if node.id is not None else node.display_name
        status = ("fenced (this node)" if _fenced(node) else "up (this node)") if node.running else "stopped"
        rows.append([me, Status(status), None, node.process_count, None, ""])
        peers = node.get_nodes() if node.running else []
        for info in peers:
            extra = self.extra_columns(info.id) if self.extra_columns is not None else ""
            rows.append([info.id, Status(info.status), f"{info.loop_lag_ms:.0f}", info.process_count,
                         clock(info.last_heartbeat_at), extra])
        for peer, (at, reason) in reversed(self.down.items()):
            status = Status(f"down ({reason})" if reason else "down")
            rows.append([peer, status, None, None, None, f"since {clock(at)}"])
        busy = sum(1 for info in peers if info.status == "busy")
        note = f"{len(peers)} peers connected" + (f", {busy} busy" if busy else "")
        return Table(["node", "status", "loop lag ms", "processes", "last heartbeat", ""], rows, title=title,
                     note=note)


def _fenced(node: Node) -> bool:
    """Whether `node` is fenced by its partition policy (docs/concepts/partitions.md)."""
    guard = getattr(node.distribution, "partition_guard", None)
    return bool(getattr(guard, "fenced", False))


class ClusterView(LiveWidget):
    """Live membership of the cluster seen from `node` (default: the current node): a picture of
    the topology (nodes up / busy / down with their process counts, links, cut links) over a
    table of every member (status, loop lag, process count, last heartbeat).

    For the picture it asks each peer every `refresh_s` which peers *it* is connected to, so a
    partition between two other nodes shows as a cut link too (`picture=False`: the table only)."""

    def __init__(self, node: Node | None = None, *, refresh_s: float = 1.0, keep_down: int = 20,
                 picture: bool = True) -> None:
        super().__init__()
        self.node = node or current_node()
        self.refresh_s = refresh_s
        self.picture = picture
        self.members = ClusterTable(self.node, keep_down=keep_down)
        self.peer_views: dict[NodeId, set[NodeId]] = {}  # peer -> the peers it is connected to
        _subscribe_events(self, self.node, self._on_event)
        self.flush()
        if self._loop is not None and refresh_s > 0:
            self.start_task(self._refresh_loop())

    @property
    def extra_columns(self) -> Callable[[NodeId], str] | None:
        return self.members.extra_columns

    @extra_columns.setter
    def extra_columns(self, fn: Callable[[NodeId], str] | None) -> None:
        self.members.extra_columns = fn

    def _on_event(self, event: NodeEvent) -> None:
        if self.members.apply(event):
            self.invalidate()

    async def _refresh_loop(self) -> None:
        while not self.closed:  # loop lag, process counts and heartbeats change without events
            await asyncio.sleep(self.refresh_s)
            if self.picture and self.node.running:
                await self._fetch_peer_views()
            self.invalidate()
            if not self.node.running:
                self.flush()
                return

    async def _fetch_peer_views(self) -> None:
        router = self.node.router
        rpc = getattr(router, "rpc", None)
        if rpc is None:
            return
        peers = [info.id for info in self.node.get_nodes()]

        async def one(peer: NodeId) -> None:
            try:
                rows = await rpc(peer, "inspect.peers", None, max(0.5, self.refresh_s))
                self.peer_views[peer] = {row[0] for row in rows if isinstance(row, list) and row
                                         and isinstance(row[0], NodeId)}
            except (NoexError, TypeError):
                self.peer_views.pop(peer, None)  # no (usable) answer, or an older node: links drawn as up

        await asyncio.gather(*(one(p) for p in peers))
        for gone in set(self.peer_views) - set(peers):
            del self.peer_views[gone]

    def topology(self) -> tuple[list[NodePicture], list[LinkPicture]]:
        """The nodes and links the picture draws (see `pictures.topology_svg`)."""
        node = self.node
        me = str(node.id) if node.id is not None else node.display_name
        me_label = node.id.name if node.id is not None else node.display_name
        nodes = [NodePicture(me, me_label, "self" if node.running else "down", node.process_count,
                             "this kernel's node" + (", fenced by the partition policy" if _fenced(node) else ""))]
        peers = node.get_nodes() if node.running else []
        links: list[LinkPicture] = []
        for info in peers:
            nodes.append(NodePicture(str(info.id), info.id.name, info.status, info.process_count,
                                     f"loop lag {info.loop_lag_ms:.0f} ms"))
            links.append(LinkPicture(me, str(info.id)))
        ids = [info.id for info in peers]
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                seen_a, seen_b = self.peer_views.get(a), self.peer_views.get(b)
                cut = (seen_a is not None and b not in seen_a) or (seen_b is not None and a not in seen_b)
                links.append(LinkPicture(str(a), str(b), "cut" if cut else "ok"))
        for peer, (_at, reason) in self.members.down.items():
            nodes.append(NodePicture(str(peer), peer.name, "down", None, reason or "down"))
            links.append(LinkPicture(me, str(peer), "cut"))
        return nodes, links

    def svg(self) -> str:
        nodes, links = self.topology()
        return topology_svg(nodes, links, title=f"cluster seen from {self.node.display_name}")

    def table(self) -> Table:
        return self.members.table()

    def render_html(self) -> str:
        picture = f"<div class='noex-picture'>{self.svg()}</div>" if self.picture else ""
        return picture + self.table()._repr_html_()

    def render_text(self) -> str:
        return self.table().text()


# ----------------------------------------------------------------------------------- SupervisorView
@dataclass(frozen=True)
class SupervisorEvent:
    """One line of a supervisor's live log."""

    at: float
    kind: str
    child: str
    detail: str = ""


@runtime_checkable
class SupervisorSource(Protocol):
    """What `SupervisorView` needs from a supervisor (local or distributed)."""

    label: str

    async def children(self) -> list[ChildInfo]: ...

    def subscribe(self, callback: Callable[[SupervisorEvent], None]) -> Callable[[], None]: ...


def _reason_text(reason: Any) -> str:
    return str(reason) if reason is not None else ""


class LocalSupervisorSource:
    """A `Supervisor` running on `node`: children by `which_children`, the log from the event stream."""

    def __init__(self, node: Node, ref: ProcessRef) -> None:
        self.node = node
        self.ref = ref
        proc = node.local_process(ref)
        name = proc.name if proc is not None else None
        self.label = f"supervisor {ref}" + (f" ({name})" if name else "")

    async def children(self) -> list[ChildInfo]:
        with self.node.as_default():
            return await Supervisor.which_children(self.ref)

    def peek(self) -> list[ChildInfo] | None:
        """The children right now, without a call (for the first rendering); None if unknown."""
        proc = self.node.local_process(self.ref)
        if proc is None or not isinstance(proc.server, SupervisorServer) or proc.state is None:
            return None
        return list(proc.server.noex_tree(proc.state).children)

    def subscribe(self, callback: Callable[[SupervisorEvent], None]) -> Callable[[], None]:
        ref = self.ref

        def on_event(event: NodeEvent) -> None:
            data = event.data
            if event.kind in SUPERVISOR_EVENTS and data.get("supervisor") == ref:
                child = str(data.get("child", ""))
                if event.kind == "supervisor_restart":
                    detail = f"restart #{data.get('restarts', '?')} after {_reason_text(data.get('reason'))}"
                elif event.kind == "child_migrated":
                    detail = f"{data.get('ref', '')} moved from {data.get('from_node')} to {data.get('to_node')}"
                else:
                    detail = " ".join(f"{k}={_reason_text(v)}" for k, v in data.items()
                                      if k not in ("supervisor", "child", "exception"))
                callback(SupervisorEvent(event.at, event.kind, child, detail))
            elif event.kind == "process_exited" and data.get("ref") == ref:
                callback(SupervisorEvent(event.at, "supervisor_exited", "", _reason_text(data.get("reason"))))

        return self.node.events.subscribe(on_event)


class FunctionSupervisorSource:
    """Adapter from two functions (e.g. `DistributedSupervisor.which_children` / `.on_event`)."""

    def __init__(
        self, label: str, children: Callable[[], Awaitable[list[ChildInfo]]],
        subscribe: Callable[[Callable[[Any], None]], Callable[[], None]],
    ) -> None:
        self.label = label
        self._children = children
        self._subscribe = subscribe

    async def children(self) -> list[ChildInfo]:
        return await self._children()

    def subscribe(self, callback: Callable[[SupervisorEvent], None]) -> Callable[[], None]:
        def convert(event: Any) -> None:
            callback(as_supervisor_event(event))

        return self._subscribe(convert)


def as_supervisor_event(event: Any) -> SupervisorEvent:
    """Best-effort conversion of a supervisor event (object, dict or `NodeEvent`) to a log line."""
    if isinstance(event, SupervisorEvent):
        return event
    kind: str
    if isinstance(event, NodeEvent):
        data: dict[str, Any] = dict(event.data)
        kind, at = event.kind, event.at
    elif isinstance(event, dict):
        data = dict(event)
        kind, at = str(data.pop("kind", data.pop("type", "event"))), float(data.pop("at", time.time()))
    else:
        data = {k: v for k, v in vars(event).items() if not k.startswith("_")} if hasattr(event, "__dict__") else {}
        kind = str(getattr(event, "kind", getattr(event, "type", type(event).__name__)))
        at = float(getattr(event, "at", time.time()))
        data.pop("kind", None)
        data.pop("type", None)
        data.pop("at", None)
    child = str(data.pop("child", data.pop("child_id", "")) or "")
    detail = " ".join(f"{k}={v}" for k, v in data.items() if k not in ("supervisor", "exception"))
    return SupervisorEvent(at, kind, child, detail)


class RemoteSupervisorSource:
    """A supervisor (local or distributed) running on another node: its children are fetched with
    `which_children` every `poll_s` seconds (its events stay on its own node), and restarts are
    logged when a child's restart count goes up."""

    poll_s = 1.0

    def __init__(self, node: Node, ref: ProcessRef) -> None:
        self.node = node
        self.ref = ref
        self.label = f"supervisor {ref} (remote, refreshed every {self.poll_s:g} s)"

    async def children(self) -> list[ChildInfo]:
        with self.node.as_default():
            return await Supervisor.which_children(self.ref)

    def subscribe(self, callback: Callable[[SupervisorEvent], None]) -> Callable[[], None]:
        return lambda: None


def source_for(sup: Any, node: Node | None = None) -> SupervisorSource:
    """The `SupervisorSource` for `sup`: a source itself, or a `Supervisor` / `DistributedSupervisor`
    (ref or name) running on `node` (live, from its events) or on another node (polled)."""
    if isinstance(sup, SupervisorSource):
        return sup
    node = node or current_node()
    if isinstance(sup, (ProcessRef, str)):
        try:
            ref: ProcessRef | None = node.resolve(sup)
        except NoexError:
            ref = None
        if ref is not None and node.is_local(ref):
            proc = node.local_process(ref)
            if proc is not None and isinstance(proc.server, SupervisorServer):
                return LocalSupervisorSource(node, ref)
        elif ref is not None:
            return RemoteSupervisorSource(node, ref)
    raise InvalidArgumentError(
        f"{sup!r} is not a running supervisor of node {node.display_name} nor a ref to one elsewhere; pass a "
        "Supervisor or DistributedSupervisor ref or name, or a SupervisorSource (async children(), subscribe(cb))"
    )


class SupervisorView(LiveWidget):
    """Live view of a supervisor: a picture of its tree (children grouped by node, a restart or a
    move highlighted for HIGHLIGHT_S seconds), its children (id, ref, node, status, restarts, last
    exit reason) and a log with one line per restart or move.

    The supervisor is monitored: once it exits (also when it gives up after too many restarts,
    or its node goes down) the view says so in a banner and shows its children as stopped."""

    HIGHLIGHT_S = 8.0

    def __init__(self, sup: Any, *, node: Node | None = None, log_size: int = 50, picture: bool = True) -> None:
        super().__init__()
        self.source = source_for(sup, node)
        self.picture = picture
        self.children: list[ChildInfo] = []
        self.restart_log: deque[SupervisorEvent] = deque(maxlen=log_size)
        self.error: str | None = None
        self.finished: str | None = None
        self.highlights: dict[str, tuple[str, float, str]] = {}  # child id -> (kind, at, moved from)
        self._last_line: dict[str, SupervisorEvent] = {}  # the last log line of each child
        self._fetching = False
        self._fetch_again = False
        self.on_close(self.source.subscribe(self._on_event))
        self._monitor_supervisor()
        peek = getattr(self.source, "peek", None)
        if callable(peek):
            self.children = peek() or []
        self.flush()
        if self._loop is not None:
            self.refresh()
            poll_s = getattr(self.source, "poll_s", None)
            if isinstance(poll_s, (int, float)) and poll_s > 0:
                self.start_task(self._poll(float(poll_s)))

    def _monitor_supervisor(self) -> None:
        """Learn of the supervisor's exit from a monitor (it fires once, also for a lost node)."""
        ref, node = getattr(self.source, "ref", None), getattr(self.source, "node", None)
        if not isinstance(ref, ProcessRef) or not isinstance(node, Node) or not node.running:
            return
        try:
            mref = node.monitor(ref, on_down=lambda down: self._supervisor_down(down.reason))
        except NoexError:
            return
        self.on_close(lambda: node.demonitor(mref) if node.running else None)

    def _supervisor_down(self, reason: Any) -> None:
        if self.finished is None:
            self.finished = _reason_text(reason) or "stopped"
            self.restart_log.append(SupervisorEvent(time.time(), "supervisor_exited", "", self.finished))
        self.invalidate()

    async def _poll(self, every: float) -> None:
        while not self.closed and self.finished is None:
            await asyncio.sleep(every)
            self.refresh()

    def _on_event(self, event: SupervisorEvent) -> None:
        if event.kind in ("supervisor_exited", "supervisor_stopped"):
            self._supervisor_down(event.detail)
            return
        self._log(event)
        if event.kind in ("supervisor_restart", "child_restarted"):
            self._highlight(event.child, "restarted", event.at)
        elif event.kind == "child_migrated":
            self._highlight(event.child, "moved", event.at, _moved_from(event.detail))
        self.invalidate()
        self.refresh()

    def _log(self, event: SupervisorEvent) -> None:
        """One line per restart or move: the `child_started` that ends one, and the
        `child_restarted` / `child_migrated` that follow its `supervisor_restart`, join that line."""
        last = self._last_line.get(event.child) if event.child else None
        recent = last is not None and event.at - last.at < 5.0
        if recent and last is not None:
            if event.kind == "child_started" and last.kind in ("supervisor_restart", "child_restarted",
                                                              "child_migrated"):
                return
            if event.kind == "child_restarted" and last.kind == "supervisor_restart":
                return
            if event.kind == "child_migrated" and last.kind == "supervisor_restart":
                merged = SupervisorEvent(event.at, event.kind, event.child, f"{event.detail} ({last.detail})")
                self._replace_line(last, merged)
                return
        self.restart_log.append(event)
        if event.child:
            self._last_line[event.child] = event

    def _replace_line(self, old: SupervisorEvent, new: SupervisorEvent) -> None:
        lines = list(self.restart_log)
        if old in lines:
            lines[lines.index(old)] = new
            self.restart_log.clear()
            self.restart_log.extend(lines)
        else:
            self.restart_log.append(new)
        self._last_line[new.child] = new

    def _highlight(self, child: str, kind: str, at: float, moved_from: str = "") -> None:
        if not child:
            return
        if kind == "restarted" and child in self.highlights and self.highlights[child][0] == "moved" \
                and at - self.highlights[child][1] < 5.0:
            return  # the restart that made the move: keep "moved"
        self.highlights[child] = (kind, at, moved_from)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_later(self.HIGHLIGHT_S + 0.1, self.invalidate, context=self._context)

    def refresh(self) -> None:
        """Fetch the children again (one fetch at a time; a request during a fetch repeats it)."""
        if self.closed or self.finished is not None:
            return
        if self._fetching:
            self._fetch_again = True
            return
        self._fetching = True
        self.start_task(self._fetch())

    async def _fetch(self) -> None:
        try:
            while True:
                self._fetch_again = False
                try:
                    children = await self.source.children()
                    self.error = None
                except ServerNotRunningError as exc:
                    self.error = None
                    self._supervisor_down(exc.reason)
                except NoexError as exc:
                    self.error = f"{type(exc).__name__}: {exc}"
                else:
                    if self.finished is None:
                        self._note_changes(self.children, children)
                        self.children = children
                self.invalidate()
                if not self._fetch_again or self.closed or self.finished is not None:
                    return
        finally:
            self._fetching = False

    def _note_changes(self, before: list[ChildInfo], after: list[ChildInfo]) -> None:
        """Restarts and moves seen between two fetches (all a polled supervisor tells)."""
        seen = {c.id: c for c in before}
        now = time.time()
        polled = isinstance(self.source, RemoteSupervisorSource)
        for child in after:
            old = seen.get(child.id)
            if old is None:
                continue
            if old.node is not None and child.node is not None and old.node != child.node:
                if self.highlights.get(child.id, ("", 0.0, ""))[0] != "moved" or not polled:
                    self._highlight(child.id, "moved", now, _node_name(old.node))
            elif child.restarts > old.restarts:
                if polled:
                    self.restart_log.append(SupervisorEvent(
                        now, "child_restarted", child.id,
                        f"restart #{child.restarts} after {_reason_text(child.last_exit_reason)}"))
                self._highlight(child.id, "restarted", now)

    # --------------------------------------------------------------- rendering
    def _status(self, child: ChildInfo) -> str:
        return "stopped" if self.finished is not None else child.status

    def table(self, *, short_refs: bool = True) -> Table:
        """The children; `short_refs`: `<0.12@local2>` with the full ref on hover (HTML), else full refs
        (plain text, which has no hover)."""
        rows = [[c.id, ShortRef(c.ref) if short_refs and c.ref is not None else c.ref, c.node,
                 Status(self._status(c)), c.restarts, c.last_exit_reason] for c in self.children]
        note = self.error or ""
        if self.finished is not None:
            note = f"the supervisor exited: {self.finished}; its children were stopped (their last known state above)"
        return Table(["child", "ref", "node", "status", "restarts", "last exit"], rows,
                     title=self.source.label, note=note)

    def log_table(self) -> Table:
        rows = [[clock(e.at), e.kind, e.child, e.detail] for e in reversed(self.restart_log)]
        return Table(["time", "event", "child", "detail"], rows, title="restart log (newest first)",
                     empty="(no restarts yet)")

    def tree(self) -> TreePicture:
        """What the picture draws (see `pictures.tree_svg`)."""
        now = time.time()
        node = getattr(self.source, "node", None)
        node_status: dict[str, str] = {}
        if isinstance(node, Node) and node.running:
            for info in node.get_nodes():
                node_status[info.id.name] = info.status
            if node.id is not None:
                node_status.setdefault(node.id.name, "up")
        pictures = []
        for c in self.children:
            kind, at, moved_from = self.highlights.get(c.id, ("", 0.0, ""))
            if now - at > self.HIGHLIGHT_S:
                kind, moved_from = "", ""
            where = _node_name(c.node) if c.node is not None else (
                node.id.name if isinstance(node, Node) and node.id is not None else "")
            if moved_from and moved_from not in node_status:
                node_status[moved_from] = "down"
            pictures.append(ChildPicture(c.id, str(ShortRef(c.ref)) if c.ref is not None else "-",
                                         str(c.ref), where, self._status(c), c.restarts, kind, moved_from))
        used = {p.node for p in pictures} | {p.moved_from for p in pictures if p.moved_from}
        shown = {k: v for k, v in node_status.items() if k in used or v == "down"}
        note = "orange: restarted · blue: moved (dashed: where it was) · hover a box for its full ref"
        ref = getattr(self.source, "ref", None)
        label = f"supervisor {ShortRef(ref)}" if isinstance(ref, ProcessRef) else self.source.label
        return TreePicture(label, "stopped" if self.finished is not None else "running", pictures, shown, note)

    def render_html(self) -> str:
        banner = ""
        if self.finished is not None:
            banner = ("<div class='noex-stopped-banner' style='border-left:4px solid #cf222e;background:#fff5f5;"
                      f"padding:3px 8px;margin:2px 0;color:#cf222e;font-weight:bold'>supervisor stopped: "
                      f"{escape(self.finished)}. Its children were stopped; the rows show their last known state."
                      "</div>")
        picture = f"<div class='noex-picture'>{tree_svg(self.tree())}</div>" if self.picture else ""
        return (banner + picture + self.table()._repr_html_()
                + f"<div style='{SCROLL_STYLE}'>{self.log_table()._repr_html_()}</div>")

    def render_text(self) -> str:
        banner = f"SUPERVISOR STOPPED: {self.finished}\n\n" if self.finished is not None else ""
        return banner + self.table(short_refs=False).text() + "\n\n" + self.log_table().text()


def _node_name(node: Any) -> str:
    return node.name if isinstance(node, NodeId) else str(node or "")


def _moved_from(detail: str) -> str:
    """The node name in a `child_migrated` line ("... moved from a@h:p to b@h:p")."""
    words = detail.split()
    if "from" in words and words.index("from") + 1 < len(words):
        text = words[words.index("from") + 1]
        return text.split("@", 1)[0]
    return ""


# ----------------------------------------------------------------------------------- EventLog
def event_details(event: NodeEvent) -> str:
    data = event.data
    if event.kind == "node_output":
        return f"{data.get('node', '')} {data.get('stream', '')} | {data.get('line', '')}"
    if event.kind == "crash_report" and isinstance(data.get("report"), CrashReport):
        return str(data["report"])
    return " ".join(f"{k}={text_of(v)}" for k, v in data.items() if k != "exception")


class EventLog(LiveWidget):
    """The live event stream of `node` (default: the current node): processes started and
    exited, supervisor restarts, nodes up/down, background errors, output of local nodes."""

    def __init__(self, node: Node | None = None, *, limit: int = 200, show: int = 50,
                 kinds: set[str] | frozenset[str] | None = None) -> None:
        super().__init__()
        self.node = node or current_node()
        self.kinds = frozenset(kinds) if kinds is not None else None
        self.show = show
        self.events: deque[NodeEvent] = deque(maxlen=limit)
        for event in self.node.events.recent(limit):
            if self._wanted(event):
                self.events.append(event)
        _subscribe_events(self, self.node, self._on_event)
        self.flush()

    def _wanted(self, event: NodeEvent) -> bool:
        return self.kinds is None or event.kind in self.kinds

    def _on_event(self, event: NodeEvent) -> None:
        if self._wanted(event):
            self.events.append(event)
            self.invalidate()

    def table(self) -> Table:
        shown = list(self.events)[-self.show:]
        rows = [[clock(e.at), Status(e.kind) if e.kind in ("error", "crash_report") else e.kind, event_details(e)]
                for e in reversed(shown)]
        return Table(["time", "event", "details"], rows, title=f"events of {self.node.display_name} (newest first)",
                     note=f"{len(self.events)} kept, {len(shown)} shown", empty="(no events yet)")

    def render_html(self) -> str:
        return f"<div style='{SCROLL_STYLE}'>{self.table()._repr_html_()}</div>"

    def render_text(self) -> str:
        return self.table().text()


# ----------------------------------------------------------------------------------- TraceView
class TraceView(LiveWidget):
    """The live trace of one process (`%noex trace`): every message it handles and its state after."""

    def __init__(self, target: str, *, seconds: float, keep: int = 500, show: int = 100) -> None:
        super().__init__()
        self.target = target
        self.ref: ProcessRef | None = None
        self.behavior = ""
        self.initial_state = ""
        self.until = time.time() + seconds
        self.events: deque[TraceEvent] = deque(maxlen=keep)
        self.count = 0
        self.show = show
        self.ended: str | None = None
        self.flush()

    def started(self, ref: ProcessRef, behavior: str, initial_state: str) -> None:
        self.ref, self.behavior, self.initial_state = ref, behavior, initial_state
        self.flush()

    def add(self, event: TraceEvent) -> None:
        self.events.append(event)
        self.count += 1
        self.invalidate()

    def end(self, why: str) -> None:
        self.ended = why
        self.invalidate()

    def title(self) -> str:
        who = f"{self.ref} {self.behavior}" if self.ref is not None else self.target
        if self.ended is not None:
            return f"trace of {who}: ended ({self.ended}), {self.count} messages"
        return f"trace of {who}: live until {clock(self.until)[:8]}, {self.count} messages so far"

    def table(self) -> Table:
        shown = list(self.events)[-self.show:]
        rows = [[clock(e.at), e.kind, e.message, e.state] for e in shown]
        return Table(["time", "kind", "message", "state after"], rows, title=self.title(),
                     note=f"state when the trace started: {self.initial_state}", empty="(no messages yet)")

    def render_html(self) -> str:
        return f"<div style='{SCROLL_STYLE}'>{self.table()._repr_html_()}</div>"

    def render_text(self) -> str:
        return self.table().text()


__all__ = [
    "ClusterTable", "ClusterView", "EventLog", "FunctionSupervisorSource", "LiveWidget", "LocalSupervisorSource",
    "RemoteSupervisorSource",
    "SupervisorEvent", "SupervisorSource", "SupervisorView", "TraceView", "source_for",
]
