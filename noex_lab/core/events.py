"""The node event stream: what happened on a node, for widgets, `top` and debugging."""

from __future__ import annotations

import inspect
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from .node_id import NodeId

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger(__name__)

# Every kind of event a node emits: the one definition emitters and consumers (widgets, `top`,
# `%noex events --kind`) are checked against by mypy.
EventKind = Literal[
    # processes
    "process_started", "process_exited", "process_suspended", "process_resumed", "process_upgraded",
    "upgrade_failed", "mailbox_overflow", "crash_report", "behavior_loaded", "behavior_shipped", "behavior_refused",
    # supervisors
    "child_started", "child_stopped", "child_restarted", "child_migrated", "supervisor_restart",
    "supervisor_gave_up", "supervisor_stopped", "supervisor_took_over", "distributed_supervisor_started",
    "node_failure_detected",
    # cluster
    "cluster_started", "node_up", "node_down", "node_busy", "node_available", "node_leaving",
    "node_fenced", "node_unfenced", "node_downed",
    "send_buffer_overflow", "global_registered", "global_unregistered", "global_conflict",
    # background work and the lab (a notebook's node)
    "error", "log", "output", "node_output", "local_node_exited",
]
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)
MEMBERSHIP_KINDS: frozenset[EventKind] = frozenset({"node_up", "node_down", "node_busy", "node_available"})

EventCallback = Callable[["NodeEvent"], Any]


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """One event: `kind` (e.g. "process_exited", "node_down"), wall-clock `at`, and details."""

    kind: EventKind
    at: float
    node: NodeId | None
    data: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        details = details_text(self.data, limit=None)
        stamp = time.strftime("%H:%M:%S", time.localtime(self.at)) + f".{int(self.at * 1000) % 1000:03d}"
        return f"{stamp} {self.kind} {details}".rstrip()


class EventStream:
    """A bounded ring of recent events plus subscribers called for each new one."""

    def __init__(self, node: Node, keep: int = 2000) -> None:
        self._node = node
        # NodeEvents, or for events recorded while nobody listened (`record`) their fields as a
        # tuple, made a NodeEvent when read (`recent`)
        self._recent: deque[NodeEvent | tuple[EventKind, float, NodeId | None, dict[str, Any]]] = deque(maxlen=keep)
        self._subscribers: list[EventCallback] = []
        self._dispatching_error = False

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call `callback(event)` (sync or async) for every new event; returns an unsubscribe function."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def recent(self, n: int = 50) -> list[NodeEvent]:
        """The last `n` events, oldest first."""
        if n <= 0:
            return []
        items = list(self._recent)[-n:]
        return [item if isinstance(item, NodeEvent) else NodeEvent(*item) for item in items]

    def emit(self, kind: EventKind, **data: Any) -> NodeEvent:
        event = NodeEvent(kind, self._node.clock.time(), self._node.id, data)
        self._recent.append(event)
        if not self._subscribers:  # (the common case: nobody listens, no copy to make)
            return event
        for callback in tuple(self._subscribers):
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    self._node.run_callback_result(result, f"event subscriber {callback!r}")
            except Exception as exc:  # a broken subscriber must not break the emitter
                self.report_error(f"event subscriber {callback!r} raised", exc)
        return event

    def record(self, kind: EventKind, **data: Any) -> None:
        """`emit` for hot paths that need no event back (a process started or exited): with
        nobody subscribed the event is kept as a tuple, a NodeEvent only once read (a frozen
        dataclass costs ~0.5 us to build, 5 % of a process's whole stop)."""
        if self._subscribers:
            self.emit(kind, **data)
        else:
            node = self._node
            self._recent.append((kind, node.clock.time(), node.id, data))

    def report_error(self, what: str, exc: BaseException) -> None:
        """Record an error from background work so it is never silently lost."""
        log.error("%s: %s: %s", what, type(exc).__name__, exc, exc_info=exc)
        if self._dispatching_error:
            return
        self._dispatching_error = True
        try:
            self.emit("error", what=what, error=f"{type(exc).__name__}: {exc}", exception=exc)
        finally:
            self._dispatching_error = False


@dataclass(frozen=True)
class EventInfo:
    """An event as plain data, the form `recent_events` returns for any node (a wire type):
    `details` holds each detail as text, so a reader looks one up by key, never by substring.
    `kind` is an `EventKind` of this version (a peer of another version may send others)."""

    at: float
    kind: str
    node: NodeId | None
    details: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, event: NodeEvent) -> EventInfo:
        details = {k: detail_text(v) for k, v in event.data.items() if k != "exception"}
        return cls(event.at, event.kind, event.node if isinstance(event.node, NodeId) else None, details)

    @property
    def text(self) -> str:
        """The details as one line, `key=value ...`."""
        return " ".join(f"{k}={v}" for k, v in self.details.items())

    def __str__(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.at)) + f".{int(self.at * 1000) % 1000:03d}"
        return f"{stamp} {self.kind} {self.text}".rstrip()


def detail_text(value: Any, limit: int | None = 300) -> str:
    """One detail of an event as text, cut at `limit` characters (the one formatting every view uses)."""
    text = str(value)
    return text if limit is None or len(text) <= limit else text[:limit - 1] + "…"


def details_text(data: dict[str, Any], *, limit: int | None = 300, skip: Iterable[str] = ("exception",)) -> str:
    """An event's details as one line, `key=value ...` (the exception object itself is left out)."""
    skipped = set(skip)
    return " ".join(f"{k}={detail_text(v, limit)}" for k, v in data.items() if k not in skipped)
