"""`node.snapshot()`: a plain-data picture of what runs on a node."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .node_id import NodeId
from .refs import MonitorRef, ProcessRef

if TYPE_CHECKING:
    from .node import Node
    from .supervisor import SupervisorTree


@dataclass(frozen=True)
class ProcessInfo:
    """One process: `queue_len` messages wait now, `queue_high_water` is the most that ever waited,
    `max_mailbox` its bound (None: unbounded)."""

    ref: ProcessRef
    name: str | None
    behavior: str
    status: str
    queue_len: int
    messages: int
    uptime_s: float
    queue_high_water: int = 0
    max_mailbox: int | None = None


@dataclass(frozen=True)
class NodeSnapshot:
    node: NodeId | None
    label: str
    taken_at: float
    processes: list[ProcessInfo]
    supervisors: list[SupervisorTree]
    names: dict[str, ProcessRef]
    global_names: dict[str, ProcessRef] = field(default_factory=dict)
    links: list[tuple[ProcessRef, ProcessRef]] = field(default_factory=list)
    monitors: list[tuple[MonitorRef, ProcessRef, Any]] = field(default_factory=list)
    reachable: bool = True
    error: str | None = None

    def _repr_html_(self) -> str:
        from html import escape

        rows = "".join(
            f"<tr><td><code>{escape(str(p.ref))}</code></td><td>{escape(p.name or '')}</td>"
            f"<td>{escape(p.behavior)}</td><td>{escape(p.status)}</td><td>{p.queue_len}</td>"
            f"<td>{p.queue_high_water}</td><td>{'-' if p.max_mailbox is None else p.max_mailbox}</td>"
            f"<td>{p.messages}</td><td>{p.uptime_s:.1f}</td></tr>"
            for p in self.processes
        )
        title = escape(str(self.node) if self.node is not None else self.label)
        return (
            f"<b>{title}</b>: {len(self.processes)} processes"
            "<table><tr><th>ref</th><th>name</th><th>behavior</th><th>status</th>"
            "<th>queue</th><th>high-water</th><th>bound</th><th>messages</th><th>uptime s</th></tr>"
            f"{rows}</table>"
        )


def take_snapshot(node: Node) -> NodeSnapshot:
    from .supervisor import SupervisorServer

    now = time.monotonic()
    processes = []
    supervisors = []
    links: set[tuple[ProcessRef, ProcessRef]] = set()
    monitors = []
    supervised: set[ProcessRef] = set()
    for proc in node.processes():
        queue_len = len(proc.mailbox)
        processes.append(
            ProcessInfo(
                ref=proc.ref, name=proc.name, behavior=proc.behavior.__name__, status=proc.status,
                queue_len=queue_len, messages=proc.handled, uptime_s=now - proc.started_at,
                queue_high_water=max(proc.queue_high_water, queue_len),
                max_mailbox=proc.bound.max if proc.bound is not None else None,
            )
        )
        for other in proc.links:
            links.add((min(proc.ref, other, key=str), max(proc.ref, other, key=str)))
        for mref, watcher in proc.monitors.items():
            monitors.append((mref, proc.ref, watcher if isinstance(watcher, ProcessRef) else repr(watcher)))
        if isinstance(proc.server, SupervisorServer) and proc.state is not None:
            tree = proc.server.noex_tree(proc.state)
            supervisors.append(tree)
            supervised.update(c.ref for c in tree.children if c.ref is not None)
    roots = [t for t in supervisors if t.ref not in supervised]
    global_names = node.distribution.global_names() if node.distribution is not None else {}
    return NodeSnapshot(
        node=node.id, label=node.label, taken_at=time.time(), processes=processes, supervisors=roots,
        names={n: r for n in node.names.names() if (r := node.names.whereis(n)) is not None},
        global_names=global_names, links=sorted(links, key=str), monitors=monitors,
    )
