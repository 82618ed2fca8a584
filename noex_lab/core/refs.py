"""Immutable references: processes, monitors and timers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .node_id import NodeId


@dataclass(frozen=True, order=True, slots=True)
class ProcessRef:
    """The address of a process: its node (None while the node is not distributed),
    a per-node id, and the node's incarnation (so refs to a restarted node's old
    processes never reach the new incarnation's)."""

    node: NodeId | None
    id: int
    creation: int = 0

    def __str__(self) -> str:
        if self.node is None:
            return f"<0.{self.id}>"
        return f"<0.{self.id}@{self.node}>"

    def __repr__(self) -> str:
        return f"ProcessRef({self})"

    def _repr_html_(self) -> str:
        from html import escape

        return f"<code title='process reference'>{escape(str(self))}</code>"


@dataclass(frozen=True, order=True, slots=True)
class MonitorRef:
    """Identifies one monitor; `Down.monitor` carries it."""

    node: NodeId | None
    id: int
    creation: int = 0

    def __str__(self) -> str:
        where = "" if self.node is None else f"@{self.node}"
        return f"#Monitor<{self.id}{where}>"


@dataclass(frozen=True, slots=True)
class TimerRef:
    """Identifies a timer started by `GenServer.send_after`."""

    id: int
    handle: Any = None

    def __str__(self) -> str:
        return f"#Timer<{self.id}>"
