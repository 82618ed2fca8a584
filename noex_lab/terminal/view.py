"""What `noex-lab top` and `noex-lab demo` show: a model of the cluster and its rich rendering.

`ClusterWatch` keeps, for one observing node:

* the members, with status ``up`` / ``busy`` / ``down`` (a member that went down stays listed,
  marked down, with the reason), loop lag, process count and last heartbeat;
* each member's latest `NodeSnapshot` (processes, supervision trees with restart counts, global names);
* recent events: membership changes seen by the observer's own event stream (at once), and
  supervisor restarts, migrations and global-name changes from every member's event stream
  (fetched with each refresh).

`render_view` turns it into rich renderables; `ClusterWatch.to_json` into plain data.
"""

from __future__ import annotations

import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ..core.errors import ClusterError
from ..core.events import EventInfo, EventKind, NodeEvent, detail_text, details_text
from ..core.node import Node
from ..core.node_id import NodeId
from ..core.snapshot import NodeSnapshot, ProcessInfo, ProcessSummary
from ..core.supervisor import ChildInfo, SupervisorTree
from ..distribution.cluster import Cluster
from ..distribution.introspection import recent_events
from ..frontend.cluster_model import Member as Member  # (re-exported: the members ClusterWatch holds)
from ..frontend.cluster_model import MembershipModel

# Events worth showing from every member's stream (a migration also emits a supervisor_restart
# with reason "noconnection", and a distributed restart also a child_restarted: shown once).
CLUSTER_KINDS: frozenset[EventKind] = frozenset({
    "supervisor_restart", "child_migrated", "node_failure_detected", "supervisor_gave_up",
    "supervisor_stopped", "distributed_supervisor_started", "global_registered", "global_unregistered",
    "global_conflict",
})
REMOTE_EVENT_WINDOW = 200
# processes listed per node (the longest mailboxes first); the summary counts them all
TOP_PROCESSES = 20
STATUS_STYLE = {"up": "green", "busy": "yellow", "down": "red", "self": "cyan"}


@dataclass(frozen=True)
class EventRow:
    """One line of the event log: `node` is the member it is about (or that reported it)."""

    at: float
    node: str
    kind: str
    details: str

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "node": self.node, "kind": self.kind, "details": self.details}


_NODE_ID = re.compile(r"([A-Za-z][A-Za-z0-9_-]{0,63})@(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):\d+")


def compact(text: str) -> str:
    """Node ids shortened to their names for the screen: `<0.5@app1@127.0.0.1:4369>` -> `<0.5@app1>`."""
    return _NODE_ID.sub(r"\1", text)


def _text(value: Any) -> str:
    return detail_text(value, 200)


def _details(data: dict[str, Any]) -> str:
    return details_text(data, limit=200)


def _is_migration_restart(kind: str, reason: str | None) -> bool:
    return kind == "supervisor_restart" and reason == "noconnection"


class ClusterWatch:
    """The cluster as seen from `node` (a hidden observer for `top`, a member for `demo`)."""

    def __init__(self, node: Node, *, include_self: bool = False, keep_events: int = 200) -> None:
        if node.id is None:
            raise ClusterError("ClusterWatch needs a distributed node: call Cluster.start(...) first")
        self.node = node
        self.me: NodeId = node.id
        self.include_self = include_self
        self.model = MembershipModel()
        self.members = self.model.members  # (the shared model's members, by id)
        self.snapshots: dict[NodeId, NodeSnapshot] = {}
        self.events: deque[EventRow] = deque(maxlen=keep_events)
        self.refreshed_at: float | None = None
        self._remote_seen: dict[NodeId, tuple[float, set[tuple[float, str, str]]]] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._listeners: list[Callable[[], None]] = []
        if include_self:
            self.members[self.me] = Member(self.me, "up", time.time(), is_self=True)

    # ------------------------------------------------------------------ wiring
    def start(self) -> None:
        """Follow the observer's event stream (membership changes arrive at once)."""
        if self._unsubscribe is None:
            self._unsubscribe = self.node.events.subscribe(self._on_event)
        self._sync_members()

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def on_change(self, callback: Callable[[], None]) -> None:
        """`callback()` after each membership change (e.g. to wake a refresh loop)."""
        self._listeners.append(callback)

    def _changed(self) -> None:
        for callback in list(self._listeners):
            callback()

    def _on_event(self, event: NodeEvent) -> None:
        data = event.data
        member = self.model.apply(event)
        if member is not None:
            if member.status == "down":
                self.snapshots.pop(member.id, None)
                detail = f"reason={member.down_reason}"
            elif event.kind == "node_up":
                detail = ""
            else:
                detail = f"loop_lag_ms={member.loop_lag_ms:.0f}"
            self._add(EventRow(event.at, str(member.id), event.kind, detail))
            self._changed()
        elif event.kind in CLUSTER_KINDS or event.kind == "error":
            why = data.get("reason")
            if not _is_migration_restart(event.kind, None if why is None else str(why)):
                self._add(EventRow(event.at, str(self.me), event.kind, _details(data)))

    def _add(self, row: EventRow) -> None:
        self.events.append(row)

    def _sync_members(self) -> None:
        """Reconcile with `get_nodes()` (the truth for who is connected right now)."""
        self.model.sync(self.node.get_nodes(), time.time())
        for member in self.model.down():
            self.snapshots.pop(member.id, None)
        if self.include_self:
            me = self.members[self.me]
            me.process_count = self.node.process_count

    # ------------------------------------------------------------------ refresh
    def live_members(self) -> list[NodeId]:
        return [m.id for m in self.members.values() if m.status != "down" and not m.is_self]

    async def refresh(self, timeout: float = 2.0) -> None:
        """Membership from `get_nodes()`, every member's snapshot and its recent cluster events."""
        self._sync_members()
        snaps: list[NodeSnapshot] = []

        async def take_snapshots() -> None:
            with self.node.as_default():
                # a page per node, not every process: 100,000 processes must not slow a refresh
                snaps.extend(await Cluster.snapshot(timeout=timeout, limit=TOP_PROCESSES, sort="queue"))

        async def fetch_events(peer: NodeId) -> None:
            try:
                with anyio.fail_after(timeout):
                    rows = await recent_events(REMOTE_EVENT_WINDOW, peer, node=self.node, timeout=timeout)
            except Exception:  # unreachable or gone: its snapshot says so
                return
            self._merge_remote(peer, rows)

        async with anyio.create_task_group() as tg:
            tg.start_soon(take_snapshots)
            for peer in self.live_members():
                tg.start_soon(fetch_events, peer)
        self._sync_members()
        for snap in snaps:
            if snap.node is None:
                continue
            if snap.node == self.me and not self.include_self:
                continue
            member = self.members.get(snap.node)
            if member is None or member.status == "down":
                continue
            member.reachable = snap.reachable
            if snap.reachable:
                self.snapshots[snap.node] = snap
                member.process_count = snap.process_count
        self.refreshed_at = time.time()

    def _merge_remote(self, peer: NodeId, rows: list[EventInfo]) -> None:
        last_at, at_last = self._remote_seen.get(peer, (0.0, set()))
        for row in rows:
            at, kind, details = row.at, row.kind, row.text
            key = (at, kind, details)
            if at < last_at or (at == last_at and key in at_last):
                continue
            if at > last_at:
                last_at, at_last = at, set()
            at_last.add(key)
            if kind in CLUSTER_KINDS and not _is_migration_restart(kind, row.details.get("reason")):
                self._add(EventRow(at, str(peer), kind, details))
        self._remote_seen[peer] = (last_at, at_last)

    # ------------------------------------------------------------------ queries
    def sorted_members(self) -> list[Member]:
        return sorted(self.members.values(), key=lambda m: (not m.is_self, m.id))

    def recent(self, n: int = 50) -> list[EventRow]:
        return sorted(self.events, key=lambda e: e.at)[-n:] if n > 0 else []

    def supervisors(self) -> list[tuple[NodeId, SupervisorTree]]:
        return [(node, tree) for node in sorted(self.snapshots) for tree in self.snapshots[node].supervisors]

    def to_json(self, events: int = 50) -> dict[str, Any]:
        """The whole view as plain JSON-able data (`top --json`)."""
        members = []
        for member in self.sorted_members():
            entry = member.to_json()
            snap = self.snapshots.get(member.id)
            entry["process_count"] = None if snap is None else snap.process_count
            entry["processes"] = [] if snap is None else [  # the TOP_PROCESSES longest mailboxes
                {"ref": str(p.ref), "name": p.name, "behavior": p.behavior, "status": p.status,
                 "queue_len": p.queue_len, "queue_high_water": p.queue_high_water, "max_mailbox": p.max_mailbox,
                 "messages": p.messages, "uptime_s": round(p.uptime_s, 3)}
                for p in snap.processes
            ]
            members.append(entry)
        global_names: dict[str, str] = {}
        for snap in self.snapshots.values():
            global_names.update({name: str(ref) for name, ref in snap.global_names.items()})
        return {
            "observer": str(self.me),
            "taken_at": self.refreshed_at or time.time(),
            "members": members,
            "supervisors": [_tree_json(node, tree) for node, tree in self.supervisors()],
            "global_names": dict(sorted(global_names.items())),
            "events": [e.to_json() for e in self.recent(events)],
        }


def _child_json(child: ChildInfo) -> dict[str, Any]:
    return {
        "id": child.id, "ref": None if child.ref is None else str(child.ref),
        "node": None if child.node is None else str(child.node), "restarts": child.restarts,
        "status": child.status,
        "last_exit_reason": None if child.last_exit_reason is None else str(child.last_exit_reason),
        "is_supervisor": child.is_supervisor,
    }


def _tree_json(node: NodeId, tree: SupervisorTree) -> dict[str, Any]:
    return {
        "node": str(node), "ref": str(tree.ref), "name": tree.name, "strategy": tree.strategy,
        "restarts": tree.restarts, "children": [_child_json(c) for c in tree.children],
        "subtrees": [_tree_json(node, t) for t in tree.subtrees],
    }


# ---------------------------------------------------------------------------------- rendering
def _short_ref(ref: Any) -> str:
    return f"<0.{ref.id}>" if ref is not None and hasattr(ref, "id") else "-"


def _ago(at: float | None, now: float) -> str:
    if at is None or at <= 0:
        return "-"
    return f"{max(0.0, now - at):.1f} s ago"


def _status_text(member: Member) -> Text:
    label = member.status
    style = STATUS_STYLE.get(label, "")
    if member.status != "down" and not member.reachable:
        label, style = f"{label} (no snapshot)", "yellow"
    return Text(f"● {label}", style=style)


def members_table(watch: ClusterWatch, now: float) -> Table:
    table = Table(title="members", title_justify="left", expand=True)
    table.add_column("node")
    table.add_column("address")
    table.add_column("status")
    table.add_column("loop lag", justify="right")
    table.add_column("processes", justify="right")
    table.add_column("heartbeat")
    table.add_column("note")
    for m in watch.sorted_members():
        note = "this node" if m.is_self else ""
        if m.status == "down":
            note = f"{m.down_reason or 'down'} {_ago(m.since, now)}"
        table.add_row(
            Text(m.id.name, style="bold" if m.is_self else ""), f"{m.id.host}:{m.id.port}", _status_text(m),
            "-" if m.status == "down" or m.is_self else f"{m.loop_lag_ms:.0f} ms",
            "-" if m.status == "down" else str(m.process_count),
            "-" if m.is_self or m.status == "down" else _ago(m.last_heartbeat_at, now), note,
        )
    return table


def processes_table(watch: ClusterWatch) -> Table:
    table = Table(title="processes per node", title_justify="left", expand=True)
    table.add_column("node")
    table.add_column("count", justify="right")
    table.add_column("behaviors")
    table.add_column("messages", justify="right")
    table.add_column("longest queue", justify="right")
    table.add_column("queue high-water", justify="right")
    for m in watch.sorted_members():
        snap = watch.snapshots.get(m.id)
        if snap is None:
            table.add_row(m.id.name, "-", Text(m.status, style=STATUS_STYLE.get(m.status, "")), "-", "-", "-")
            continue
        summary = snap.summary
        if summary is None:  # a node of an older version: every process is listed
            summary = ProcessSummary(
                count=len(snap.processes), behaviors=dict(Counter(p.behavior for p in snap.processes)),
                messages=sum(p.messages for p in snap.processes), queued=sum(p.queue_len for p in snap.processes),
                longest_queue=max((p.queue_len for p in snap.processes), default=0),
                high_water=max(snap.processes, key=lambda p: p.queue_high_water, default=None),
            )
        behaviors = ", ".join(f"{b} x{n}" for b, n in sorted(summary.behaviors.items(), key=lambda kv: (-kv[1], kv[0])))
        table.add_row(m.id.name, str(summary.count), behaviors or "-",
                      str(summary.messages), str(summary.longest_queue), _high_water(summary.high_water))
    return table


def _high_water(p: ProcessInfo | None) -> str:
    """The process whose mailbox was longest: its mark, its bound, and which process it is."""
    if p is None or not p.queue_high_water:
        return "0"
    bound = f"/{p.max_mailbox}" if p.max_mailbox is not None else ""
    return f"{p.queue_high_water}{bound} ({p.name or _short_ref(p.ref)})"


def _add_children(branch: Tree, tree: SupervisorTree, watch: ClusterWatch) -> None:
    subtrees = {t.ref: t for t in tree.subtrees}
    for child in tree.children:
        where = child.node
        member = watch.members.get(where) if where is not None else None
        node_label = where.name if where is not None else "-"
        style = "green" if child.status == "running" else "red"
        if member is not None and member.status == "down":
            style = "red"
            node_label += " (down)"
        label = Text.assemble(
            (f"{child.id}", "bold"), f"  {_short_ref(child.ref)} on {node_label}  ",
            (child.status, style), f"  restarts={child.restarts}",
        )
        if child.last_exit_reason is not None:
            label.append(f"  last exit: {compact(_text(child.last_exit_reason))[:60]}", style="dim")
        sub = branch.add(label)
        if child.ref in subtrees:
            _add_children(sub, subtrees[child.ref], watch)


def supervisors_tree(watch: ClusterWatch) -> RenderableType:
    sups = watch.supervisors()
    if not sups:
        return Text("no supervisors", style="dim")
    trees: list[RenderableType] = []
    for node, tree in sups:
        title = Text.assemble(
            ("supervisor ", "bold"), f"{tree.name or _short_ref(tree.ref)} on {node.name}  ",
            f"{tree.strategy}  ", (f"restarts={tree.restarts}", "yellow" if tree.restarts else ""),
        )
        root = Tree(title)
        _add_children(root, tree, watch)
        trees.append(root)
    return Group(*trees)


EVENT_STYLE = {
    "node_down": "red", "node_up": "green", "node_busy": "yellow", "node_available": "green",
    "child_migrated": "magenta", "supervisor_restart": "yellow", "supervisor_gave_up": "red",
    "node_failure_detected": "red", "global_conflict": "red", "error": "red",
}


def events_table(watch: ClusterWatch, n: int) -> Table:
    table = Table(title="recent events", title_justify="left", expand=True)
    table.add_column("time", no_wrap=True)
    table.add_column("node")
    table.add_column("event")
    table.add_column("details")
    for e in watch.recent(n):
        stamp = time.strftime("%H:%M:%S", time.localtime(e.at)) + f".{int(e.at * 1000) % 1000:03d}"
        node = e.node.split("@", 1)[0]
        table.add_row(stamp, node, Text(e.kind, style=EVENT_STYLE.get(e.kind, "")), compact(e.details))
    return table


def children_by_node(watch: ClusterWatch) -> RenderableType:
    """The supervision trees in a few lines: per supervisor, each node with the children on it."""
    sups = watch.supervisors()
    if not sups:
        return Text("no supervisors", style="dim")
    lines: list[RenderableType] = []
    for node, tree in sups:
        lines.append(Text.assemble(
            ("supervisor ", "bold"), f"{tree.name or _short_ref(tree.ref)} on {node.name}  ",
            (f"restarts={tree.restarts}", "yellow" if tree.restarts else "")))
        by_node: dict[str, list[ChildInfo]] = {}
        for child in tree.children:
            by_node.setdefault(child.node.name if child.node is not None else node.name, []).append(child)
        for name in sorted(by_node):
            kids = by_node[name]
            parts: list[str | tuple[str, str]] = [f"  {name:<12} "]
            for child in kids:
                style = "magenta" if child.restarts else ("" if child.status == "running" else "red")
                parts += [(child.id, style), " "]
            lines.append(Text.assemble(*parts))
    return Group(*lines)


def render_compact(watch: ClusterWatch, *, title: str, status: RenderableType, height: int,
                   measure: Callable[[RenderableType], int]) -> RenderableType:
    """The demo's view, fitted to `height` rows: what is happening now, the header, the members,
    the children by node and as many recent events as fit (at least 3)."""
    full = render_view(watch, title=title, events=0, parts=False)
    top: list[RenderableType] = [status, full, members_table(watch, time.time()),
                                 Panel(children_by_node(watch), title="children by node", title_align="left")]
    used = measure(Group(*top))
    events = max(3, min(12, height - used - 6))  # an events table costs 5 rows besides its events
    return Group(*top, events_table(watch, events))


def render_view(watch: ClusterWatch, *, title: str = "noex-lab top", events: int = 12,
                parts: bool = True) -> RenderableType:
    """The whole view: header, members, processes, supervision trees, recent events (with
    `parts=False`, the header line only)."""
    now = time.time()
    members = watch.sorted_members()
    counts = {s: sum(m.status == s for m in members) for s in ("up", "busy", "down")}
    header = Text.assemble(
        (title, "bold"), f"   seen from {watch.me}   ",
        (f"{counts['up']} up", "green"), "  ", (f"{counts['busy']} busy", "yellow"), "  ",
        (f"{counts['down']} down", "red"), "   ",
        f"{sum(s.process_count for s in watch.snapshots.values())} processes   ",
        time.strftime("%H:%M:%S", time.localtime(now)),
    )
    if not parts:
        return header
    return Group(
        header,
        members_table(watch, now),
        processes_table(watch),
        Panel(supervisors_tree(watch), title="supervision trees", title_align="left"),
        events_table(watch, events),
    )
