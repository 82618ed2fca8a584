"""Pictures of a cluster, rendered on the kernel as plain SVG (no JavaScript, nothing loaded at
run time, so a saved notebook, nbviewer and GitHub show them as they were):

- `topology_svg`: the nodes as circles coloured up / busy / down with their process counts, the
  links between them, and the links that are cut (a partition, a node that went down) dashed red;
- `tree_svg`: a supervisor and its children grouped by the node they run on; a child that was
  just restarted is outlined orange, one that just moved is outlined blue with where it came
  from (and a dashed ghost where it was), and a stopped supervisor greys everything out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

COLORS = {"up": "#2da44e", "self": "#0969da", "busy": "#bf8700", "down": "#cf222e", "stopped": "#8c959f",
          "running": "#2da44e", "waiting": "#2da44e", "restarted": "#fb8500", "moved": "#0969da", "unknown": "#8c959f"}
FONT = "font-family:-apple-system,BlinkMacSystemFont,'Segoe UI',Helvetica,Arial,sans-serif"


def _color(status: str) -> str:
    return COLORS.get(status.split(" ")[0], COLORS["unknown"])


def _text(x: float, y: float, text: str, *, size: int = 11, anchor: str = "middle", color: str = "#24292f",
          weight: str = "normal", title: str = "") -> str:
    tip = f"<title>{escape(title)}</title>" if title else ""
    return (f"<text x='{x:.0f}' y='{y:.0f}' font-size='{size}' text-anchor='{anchor}' fill='{color}' "
            f"font-weight='{weight}'>{tip}{escape(text)}</text>")


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# ----------------------------------------------------------------------------------- topology
@dataclass(frozen=True)
class NodePicture:
    key: str  # the node id as text
    label: str  # its name
    status: str  # "self" | "up" | "busy" | "down"
    processes: int | None = None
    note: str = ""  # hover text


@dataclass(frozen=True)
class LinkPicture:
    a: str
    b: str
    state: str = "ok"  # "ok" | "cut"


def topology_svg(nodes: list[NodePicture], links: list[LinkPicture], *, title: str = "") -> str:
    """The cluster as a ring of nodes (see the module doc)."""
    width, height, radius = 520, 250 if len(nodes) > 2 else 170, 26
    cx, cy = width / 2, (height + 14) / 2
    rx, ry = (width / 2 - 80, height / 2 - 50) if len(nodes) > 1 else (0.0, 0.0)
    pos: dict[str, tuple[float, float]] = {}
    for i, node in enumerate(nodes):  # an ellipse, the first node (this kernel) on top (or on the left)
        start = math.pi if len(nodes) == 2 else -math.pi / 2
        angle = start + 2 * math.pi * i / max(1, len(nodes))
        pos[node.key] = (cx + rx * math.cos(angle), cy + ry * math.sin(angle))
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' class='noex-topology' width='{width}' height='{height}' "
             f"viewBox='0 0 {width} {height}' style='{FONT};background:#fff'>"]
    if title:
        parts.append(_text(8, 14, title, size=12, anchor="start", weight="bold"))
    for link in links:
        if link.a not in pos or link.b not in pos:
            continue
        (x1, y1), (x2, y2) = pos[link.a], pos[link.b]
        if link.state == "cut":
            parts.append(f"<line class='noex-link-cut' x1='{x1:.0f}' y1='{y1:.0f}' x2='{x2:.0f}' y2='{y2:.0f}' "
                         f"stroke='{COLORS['down']}' stroke-width='2' stroke-dasharray='6 5'/>")
            mx, my = (x1 + x2) / 2, (y1 + y2) / 2
            parts.append(f"<g class='noex-cut-mark'><circle cx='{mx:.0f}' cy='{my:.0f}' r='8' fill='#fff' "
                         f"stroke='{COLORS['down']}'/>{_text(mx, my + 4, '✕', size=10, color=COLORS['down'])}</g>")
        else:
            parts.append(f"<line class='noex-link' x1='{x1:.0f}' y1='{y1:.0f}' x2='{x2:.0f}' y2='{y2:.0f}' "
                         "stroke='#8c959f' stroke-width='2'/>")
    for node in nodes:
        x, y = pos[node.key]
        color = _color(node.status)
        fill = "#fff" if node.status == "down" else color
        count = "" if node.processes is None else str(node.processes)
        tip = f"{node.key}: {node.status}" + (f", {node.processes} processes" if count else "") + \
            (f"; {node.note}" if node.note else "")
        parts.append(f"<g class='noex-node noex-node-{escape(node.status)}' data-node='{escape(node.key)}'>"
                     f"<title>{escape(tip)}</title>"
                     f"<circle cx='{x:.0f}' cy='{y:.0f}' r='{radius}' fill='{fill}' stroke='{color}' "
                     "stroke-width='3'/>")
        parts.append(_text(x, y + 4, count or "-", size=13, color=color if fill == "#fff" else "#fff", weight="bold"))
        parts.append(_text(x, y + radius + 14, _clip(node.label, 18), size=11, weight="bold"))
        status = "this kernel" if node.status == "self" else node.status
        parts.append(_text(x, y + radius + 26, status, size=10, color=color))
        parts.append("</g>")
    legend = "circle: a node (its number: processes) · line: a link · dashed red: cut"
    parts.append(_text(width - 6, height - 6, legend, size=9, anchor="end", color="#57606a"))
    parts.append("</svg>")
    return "".join(parts)


# ----------------------------------------------------------------------------------- supervision tree
@dataclass(frozen=True)
class ChildPicture:
    id: str
    ref: str  # short ref (full one in `full_ref`)
    full_ref: str
    node: str  # node label ("" for this node)
    status: str
    restarts: int
    highlight: str = ""  # "" | "restarted" | "moved"
    moved_from: str = ""


@dataclass
class TreePicture:
    label: str
    status: str  # "running" | "stopped"
    children: list[ChildPicture]
    node_status: dict[str, str] = field(default_factory=dict)  # node label -> up / busy / down
    note: str = ""


def tree_svg(tree: TreePicture) -> str:
    """A supervisor over columns of children, one column per node (see the module doc)."""
    columns: dict[str, list[ChildPicture]] = {}
    for node in tree.node_status:
        columns.setdefault(node, [])
    for child in tree.children:
        columns.setdefault(child.node, []).append(child)
    ghosts: dict[str, list[ChildPicture]] = {}
    for child in tree.children:
        if child.highlight == "moved" and child.moved_from:
            columns.setdefault(child.moved_from, [])
            ghosts.setdefault(child.moved_from, []).append(child)
    col_w, box_h, gap = 150, 30, 8
    width = max(320, col_w * max(1, len(columns)) + 20)
    rows = max([len(v) + len(ghosts.get(k, [])) for k, v in columns.items()] or [1])
    height = 110 + rows * (box_h + gap) + 24
    stopped = tree.status != "running"
    root_color = COLORS["down"] if stopped else COLORS["self"]
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' class='noex-tree' width='{width}' height='{height}' "
             f"viewBox='0 0 {width} {height}' style='{FONT};background:#fff'>"]
    rx = width / 2
    parts.append(f"<g class='noex-supervisor noex-supervisor-{'stopped' if stopped else 'running'}'>"
                 f"<title>{escape(tree.label)}</title>"
                 f"<rect x='{rx - 110:.0f}' y='8' width='220' height='30' rx='6' fill='{root_color}'/>")
    parts.append(_text(rx, 27, _clip(tree.label, 34) + (" (stopped)" if stopped else ""), size=11, color="#fff",
                       weight="bold") + "</g>")
    for i, (node, children) in enumerate(columns.items()):
        x = 10 + i * col_w
        mid = x + col_w / 2
        node_status = "stopped" if stopped else tree.node_status.get(node, "up")
        color = _color(node_status)
        parts.append(f"<line x1='{rx:.0f}' y1='38' x2='{mid:.0f}' y2='62' stroke='#8c959f'/>")
        parts.append(f"<g class='noex-node-column' data-node='{escape(node)}'>"
                     f"<rect x='{x + 4}' y='62' width='{col_w - 8}' height='22' rx='4' fill='none' stroke='{color}' "
                     f"stroke-width='2' stroke-dasharray='{'5 4' if node_status == 'down' else '0'}'/>")
        parts.append(_text(mid, 77, _clip(node or "this node", 16) + ("" if node_status in ("up", "stopped")
                                                                      else f" ({node_status})"),
                           size=10, color=color, weight="bold") + "</g>")
        y = 92
        for child in children:
            parts.append(_child_box(child, x + 4, y, col_w - 8, box_h, stopped))
            y += box_h + gap
        for ghost in ghosts.get(node, []):
            parts.append(f"<g class='noex-ghost'><title>{escape(ghost.id)} was here; it moved to "
                         f"{escape(ghost.node)}</title><rect x='{x + 4}' y='{y}' width='{col_w - 8}' "
                         f"height='{box_h}' rx='5' fill='none' stroke='{COLORS['moved']}' stroke-dasharray='4 3'/>")
            parts.append(_text(mid, y + 19, f"{_clip(ghost.id, 12)} → {_clip(ghost.node, 10)}", size=10,
                               color=COLORS["moved"]) + "</g>")
            y += box_h + gap
    if tree.note:
        parts.append(_text(8, height - 8, _clip(tree.note, 100), size=10, anchor="start", color="#57606a"))
    parts.append("</svg>")
    return "".join(parts)


def _child_box(child: ChildPicture, x: float, y: float, w: float, h: float, stopped: bool) -> str:
    status = "stopped" if stopped or child.status != "running" else "running"
    fill = "#f6f8fa" if status == "stopped" else "#dafbe1"
    stroke = COLORS.get(child.highlight, COLORS[status]) if not stopped else COLORS["stopped"]
    width = 3 if child.highlight and not stopped else 1.5
    mark = ""
    if child.highlight == "restarted" and not stopped:
        mark = f" ↻{child.restarts}"
    elif child.highlight == "moved" and not stopped:
        mark = " ⇢ moved"
    elif child.restarts:
        mark = f" ({child.restarts})"
    tip = (f"{child.id} {child.full_ref} on {child.node or 'this node'}: {status}, {child.restarts} restarts"
           + (f"; moved from {child.moved_from}" if child.moved_from else ""))
    cls = f"noex-child noex-child-{status}" + (f" noex-child-{child.highlight}" if child.highlight else "")
    return (f"<g class='{cls}' data-child='{escape(child.id)}' data-node='{escape(child.node)}'>"
            f"<title>{escape(tip)}</title>"
            f"<rect x='{x:.0f}' y='{y:.0f}' width='{w:.0f}' height='{h:.0f}' rx='5' fill='{fill}' stroke='{stroke}' "
            f"stroke-width='{width}'/>"
            + _text(x + 6, y + 13, _clip(child.id, 16) + mark, size=11, anchor="start", weight="bold")
            + _text(x + 6, y + 25, child.ref, size=9, anchor="start", color="#57606a") + "</g>")
