"""`node.snapshot()`: a plain-data picture of what runs on a node.

A node may run 100,000 processes: `snapshot(limit=N, offset=..., sort=...)` lists one page of
them (a `ProcessInfo` each) and summarises all of them (`ProcessSummary`), so a refresh of
`noex-lab top`, `%noex ps` or a widget stays well under 200 ms; `snapshot()` lists them all."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from itertools import compress, islice
from operator import attrgetter, not_
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgumentError
from .node_id import NodeId
from .refs import MonitorRef, ProcessRef

if TYPE_CHECKING:
    from .node import Node
    from .process import Process
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


# How `node.snapshot(limit=...)` orders the page of processes it lists: "pid" ascending (start
# order), the others descending (the longest mailbox now, the most messages handled, the longest
# mailbox ever), ties in pid order.
SORT_KEYS = ("pid", "queue", "messages", "high_water")
HTML_ROWS = 200  # a notebook shows at most this many process rows of a snapshot


@dataclass(frozen=True)
class ProcessSummary:
    """Every process of a node in a few numbers, whatever page of them a snapshot lists."""

    count: int
    behaviors: dict[str, int]  # behavior name -> how many processes run it
    messages: int  # handled by all of them since they started
    queued: int  # waiting in all their mailboxes now
    longest_queue: int  # the longest mailbox now
    high_water: ProcessInfo | None = None  # the process whose mailbox was the longest ever (None: all empty)


@dataclass(frozen=True)
class NodeSnapshot:
    """What runs on a node. `processes` is every process, or with `node.snapshot(limit=N)` one
    page of them (`offset`, `sort`); `summary` always covers them all."""

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
    summary: ProcessSummary | None = None  # (None only for an unreachable node's placeholder)
    offset: int = 0
    sort: str = "pid"

    @property
    def process_count(self) -> int:
        """How many processes run there (not only those listed)."""
        return self.summary.count if self.summary is not None else len(self.processes)

    def _repr_html_(self) -> str:
        from html import escape

        shown = self.processes[:HTML_ROWS]
        rows = "".join(
            f"<tr><td><code>{escape(str(p.ref))}</code></td><td>{escape(p.name or '')}</td>"
            f"<td>{escape(p.behavior)}</td><td>{escape(p.status)}</td><td>{p.queue_len}</td>"
            f"<td>{p.queue_high_water}</td><td>{'-' if p.max_mailbox is None else p.max_mailbox}</td>"
            f"<td>{p.messages}</td><td>{p.uptime_s:.1f}</td></tr>"
            for p in shown
        )
        title = escape(str(self.node) if self.node is not None else self.label)
        listed = "" if len(shown) == self.process_count else \
            f" (listed: {len(shown)} from #{self.offset + 1}, by {escape(self.sort)})"
        return (
            f"<b>{title}</b>: {self.process_count} processes{listed}"
            "<table><tr><th>ref</th><th>name</th><th>behavior</th><th>status</th>"
            "<th>queue</th><th>high-water</th><th>bound</th><th>messages</th><th>uptime s</th></tr>"
            f"{rows}</table>"
        )


def check_page(limit: Any, offset: Any, sort: Any) -> None:
    """InvalidArgumentError unless `limit` is None or an int >= 0, `offset` an int >= 0 and
    `sort` one of SORT_KEYS."""
    if limit is not None and (type(limit) is not int or limit < 0):
        raise InvalidArgumentError(f"limit must be an int >= 0 (how many processes to list) or None for all, "
                                   f"not {limit!r}")
    if type(offset) is not int or offset < 0:
        raise InvalidArgumentError(f"offset must be an int >= 0, not {offset!r}")
    if sort not in SORT_KEYS:
        raise InvalidArgumentError(f"sort must be one of {SORT_KEYS}, not {sort!r}")


_MAILBOX = attrgetter("mailbox")
_HANDLED = attrgetter("handled")
_HIGH_WATER = attrgetter("queue_high_water")
_PID = attrgetter("pid")


def _info(proc: Process, now: float) -> ProcessInfo:
    queue_len = len(proc.mailbox)
    return ProcessInfo(
        ref=proc.ref, name=proc.name, behavior=proc.behavior.__name__, status=proc.status,
        queue_len=queue_len, messages=proc.handled, uptime_s=now - proc.started_at,
        queue_high_water=max(proc.queue_high_water, queue_len),
        max_mailbox=proc.bound.max if proc.bound is not None else None,
    )


def _largest(column: list[int], k: int) -> list[int]:
    """The indices of the `k` largest values (>= 0) of `column`, ties in index (pid) order: as
    `heapq.nlargest(k, range(len(column)), key=column.__getitem__)`, but only the nonzero values
    (usually a few: most mailboxes are empty) go through the heap."""
    top = heapq.nlargest(k, compress(range(len(column)), column), key=column.__getitem__)
    if len(top) < k:
        top += islice(compress(range(len(column)), map(not_, column)), k - len(top))
    return top


def take_snapshot(node: Node, limit: int | None = None, offset: int = 0, sort: str = "pid") -> NodeSnapshot:
    """The summary, links, monitors and supervisors of all processes, and a `ProcessInfo` only
    for the listed page. With 100,000 processes every pass over them counts (each touches
    100,000 objects scattered in memory): the few columns needed are read with `map` (C loops),
    the node keeps the behavior counts and the set of processes with links or monitors, and
    only supervisors are visited one by one."""
    from .supervisor import SupervisorServer

    check_page(limit, offset, sort)
    now = node.clock.monotonic()
    procs = list(node._procs.values())  # pid order (pids only grow)
    queue_lens = list(map(len, map(_MAILBOX, procs)))
    handled = list(map(_HANDLED, procs))
    high_waters = list(map(_HIGH_WATER, procs))
    behaviors: dict[str, int] = {}
    for cls, count in node._behavior_counts.items():
        behaviors[cls.__name__] = behaviors.get(cls.__name__, 0) + count
    longest = max(queue_lens, default=0)
    high_mark = max(max(high_waters, default=0), longest)
    high: Process | None = None
    if high_mark:  # the first process whose mark (or queue now, if longer) is the highest
        marked = high_waters.index(high_mark) if high_mark in high_waters else len(procs)
        queued_now = queue_lens.index(high_mark) if high_mark == longest else len(procs)
        high = procs[min(marked, queued_now)]

    links: set[tuple[ProcessRef, ProcessRef]] = set()
    monitors = []
    for proc in sorted(node._linked, key=_PID):
        if not proc._alive:
            continue
        for other in proc._links or ():
            links.add((min(proc.ref, other, key=str), max(proc.ref, other, key=str)))
        for mref, watcher in (proc._monitors or {}).items():
            monitors.append((mref, proc.ref, watcher if isinstance(watcher, ProcessRef) else repr(watcher)))
    supervisors = []
    supervised: set[ProcessRef] = set()
    sup_classes = {cls for cls in node._behavior_counts if issubclass(cls, SupervisorServer)}
    if sup_classes:
        for proc in procs:
            if proc.behavior in sup_classes and isinstance(proc.server, SupervisorServer) and proc.state is not None:
                tree = proc.server.noex_tree(proc.state)
                supervisors.append(tree)
                supervised.update(c.ref for c in tree.children if c.ref is not None)

    if limit is None:
        page = procs[offset:]
    elif sort == "pid":
        page = procs[offset:offset + limit]
    else:
        column = {"queue": queue_lens, "messages": handled}.get(sort)
        if column is None:  # "high_water": the mark, or the queue now if longer
            column = list(map(max, high_waters, queue_lens))
        page = [procs[i] for i in _largest(column, offset + limit)[offset:]]
    summary = ProcessSummary(
        count=len(procs), behaviors=behaviors, messages=sum(handled), queued=sum(queue_lens),
        longest_queue=longest, high_water=_info(high, now) if high is not None else None,
    )
    roots = [t for t in supervisors if t.ref not in supervised]
    global_names = node.distribution.global_names() if node.distribution is not None else {}
    return NodeSnapshot(
        node=node.id, label=node.label, taken_at=node.clock.time(), processes=[_info(p, now) for p in page],
        supervisors=roots, names={n: r for n in node.names.names() if (r := node.names.whereis(n)) is not None},
        global_names=global_names, links=sorted(links, key=str), monitors=monitors, summary=summary,
        offset=offset, sort=sort,
    )
