"""Rich and plain renderings: `Table` (what `%noex nodes/ps/registry/events` show) and the
HTML reprs of the runtime's values that the core does not define itself (registered with
IPython's display formatter when the extension loads)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from ..core.events import NodeEvent
from ..core.messages import Down, Exit
from ..core.node_id import NodeId
from ..core.reasons import ErrorReason
from ..core.refs import MonitorRef, ProcessRef
from ..core.snapshot import ProcessInfo
from ..core.supervisor import ChildInfo, SupervisorTree

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

STATUS_COLORS = {
    "up": "#1a7f37", "running": "#1a7f37", "waiting": "#1a7f37", "busy": "#bf8700", "stopping": "#bf8700",
    "down": "#cf222e", "exited": "#888", "stopped": "#888", "refused": "#cf222e", "error": "#cf222e",
    "crash_report": "#cf222e", "fenced": "#cf222e",
    "suspended": "#bf8700", "current": "#1a7f37", "upgrading": "#bf8700", "old": "#cf222e", "unreachable": "#cf222e",
}

TABLE_STYLE = "border-collapse:collapse;font-size:12px;margin:2px 0"
CELL_STYLE = "padding:1px 8px;text-align:left;vertical-align:top"
ROW_STYLE = "border-bottom:1px solid #e0e0e0"


def display(*objs: Any) -> None:
    """IPython's `display` (typed)."""
    from IPython.display import display as ipy_display

    show: Callable[..., Any] = ipy_display
    show(*objs)


def clock(at: float) -> str:
    """Wall-clock time `HH:MM:SS.mmm`."""
    if not at:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


def text_of(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def html_of(value: Any) -> str:
    """One table cell: values with an HTML repr use it; everything else is escaped text."""
    if value is None:
        return ""
    if isinstance(value, (Status, ShortRef)):
        return value._repr_html_()
    if isinstance(value, (ProcessRef, NodeId, MonitorRef)):
        return f"<code>{escape(str(value))}</code>"
    if isinstance(value, ErrorReason):
        return f"<span style='color:#cf222e' title='{escape(value.traceback)}'>{escape(str(value))}</span>"
    if isinstance(value, float):
        return f"{value:.1f}"
    return escape(str(value))


class ShortRef:
    """A process ref shown short (`<0.12@local2>`), the full ref on hover."""

    __slots__ = ("ref",)

    def __init__(self, ref: ProcessRef) -> None:
        self.ref = ref

    def __str__(self) -> str:
        return short_ref(self.ref)

    def _repr_html_(self) -> str:
        return f"<code title='{escape(str(self.ref))}'>{escape(short_ref(self.ref))}</code>"


def short_ref(ref: ProcessRef) -> str:
    return f"<0.{ref.id}>" if ref.node is None else f"<0.{ref.id}@{ref.node.name}>"


class Status(str):
    """A status word shown with a colored dot in HTML."""

    __slots__ = ()

    def _repr_html_(self) -> str:
        color = STATUS_COLORS.get(str(self).split(" ")[0], "#888")
        return f"<span style='color:{color}'>&#9679;</span> {escape(str(self))}"


class Table:
    """A titled table with an HTML and a plain-text rendering."""

    def __init__(
        self, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str = "", note: str = "",
        empty: str = "(none)",
    ) -> None:
        self.columns = list(columns)
        self.rows = [list(r) for r in rows]
        self.title = title
        self.note = note
        self.empty = empty

    def __len__(self) -> int:
        return len(self.rows)

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='{CELL_STYLE}'>{escape(c)}</th>" for c in self.columns)
        body = "".join(
            f"<tr style='{ROW_STYLE}'>" + "".join(f"<td style='{CELL_STYLE}'>{html_of(v)}</td>" for v in row) + "</tr>"
            for row in self.rows
        )
        if not self.rows:
            span = len(self.columns)
            body = f"<tr><td style='{CELL_STYLE};color:#888' colspan='{span}'>{escape(self.empty)}</td></tr>"
        title = f"<div style='font-weight:bold;margin-top:4px'>{escape(self.title)}</div>" if self.title else ""
        note = f"<div style='color:#666;font-size:11px'>{escape(self.note)}</div>" if self.note else ""
        return f"<div class='noex-table'>{title}<table style='{TABLE_STYLE}'><tr>{head}</tr>{body}</table>{note}</div>"

    def text(self) -> str:
        cells = [[text_of(v) for v in row] for row in self.rows]
        widths = [len(c) for c in self.columns]
        for row in cells:
            for i, v in enumerate(row[: len(widths)]):
                widths[i] = min(max(widths[i], len(v)), 80)
        lines = [self.title] if self.title else []
        lines.append("  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=False)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        if not cells:
            lines.append(self.empty)
        last = len(widths) - 1
        for row in cells:  # the last column is never clipped: nothing needs to line up after it
            lines.append("  ".join(v if i == last else _clip(v, w).ljust(w)
                                   for i, (v, w) in enumerate(zip(row, widths, strict=False))).rstrip())
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text())


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class Message:
    """A short message with a level, rendered as colored HTML or as plain text."""

    COLORS = {"info": "#555", "ok": "#1a7f37", "warning": "#9a6700", "error": "#cf222e"}

    def __init__(self, text: str, level: str = "info") -> None:
        self.text = text
        self.level = level

    def _repr_html_(self) -> str:
        color = self.COLORS.get(self.level, "#555")
        body = escape(self.text).replace("\n", "<br>")
        return f"<div style='color:{color}'>{body}</div>"

    def __repr__(self) -> str:
        return self.text

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text)


# ----------------------------------------------------------------------------------- extra HTML reprs
def node_id_html(node_id: NodeId) -> str:
    return f"<code title='node id'>{escape(str(node_id))}</code>"


def monitor_ref_html(mref: MonitorRef) -> str:
    return f"<code title='monitor reference'>{escape(str(mref))}</code>"


def down_html(down: Down) -> str:
    return f"Down(monitor={html_of(down.monitor)}, ref={html_of(down.ref)}, reason={html_of(down.reason)})"


def exit_html(exit_: Exit) -> str:
    return f"Exit(from={html_of(exit_.from_)}, reason={html_of(exit_.reason)})"


def process_info_html(info: ProcessInfo) -> str:
    bound = "-" if info.max_mailbox is None else info.max_mailbox
    return Table(
        ["ref", "name", "behavior", "status", "queue", "high-water", "bound", "messages", "uptime s"],
        [[info.ref, info.name, info.behavior, Status(info.status), info.queue_len, info.queue_high_water, bound,
          info.messages, info.uptime_s]],
    )._repr_html_()


def child_info_html(info: ChildInfo) -> str:
    return Table(
        ["id", "ref", "node", "status", "restarts", "last exit"],
        [[info.id, info.ref, info.node, Status(info.status), info.restarts, info.last_exit_reason]],
    )._repr_html_()


def supervisor_tree_html(tree: SupervisorTree) -> str:
    title = f"supervisor {tree.name or tree.ref} ({tree.strategy}, {tree.restarts} restarts)"
    rows = [[c.id, c.ref, c.node, Status(c.status), c.restarts, c.last_exit_reason] for c in tree.children]
    inner = "".join(supervisor_tree_html(t) for t in tree.subtrees)
    table = Table(["id", "ref", "node", "status", "restarts", "last exit"], rows, title=title)._repr_html_()
    nested = f"<div style='margin-left:16px'>{inner}</div>" if inner else ""
    return table + nested


def node_event_html(event: NodeEvent) -> str:
    details = " ".join(f"{escape(k)}={html_of(v)}" for k, v in event.data.items() if k != "exception")
    return f"<code>{escape(clock(event.at))}</code> <b>{escape(event.kind)}</b> {details}"


EXTRA_HTML: dict[type, Callable[[Any], str]] = {
    NodeId: node_id_html,
    MonitorRef: monitor_ref_html,
    Down: down_html,
    Exit: exit_html,
    ProcessInfo: process_info_html,
    ChildInfo: child_info_html,
    SupervisorTree: supervisor_tree_html,
    NodeEvent: node_event_html,
}


def register_reprs(ip: InteractiveShell) -> None:
    """Teach IPython's HTML formatter the runtime values that have no `_repr_html_` of their own."""
    assert ip.display_formatter is not None
    formatter = ip.display_formatter.formatters["text/html"]
    for cls, fn in EXTRA_HTML.items():
        formatter.for_type(cls, fn)


def unregister_reprs(ip: InteractiveShell) -> None:
    if ip.display_formatter is None:
        return
    formatter = ip.display_formatter.formatters["text/html"]
    for cls in EXTRA_HTML:
        formatter.type_printers.pop(cls, None)
