"""Crash reports in a notebook: every crash in the cluster, kept, grouped and shown.

The kernel's node collects its own crash reports (its `crash_report` events) and those of every
peer (pushed by them, see `noex_lab.distribution.crash_reports`; they become `crash_report`
events of the kernel's node too, so `%noex log` and `%noex events` show them). `CrashLog` keeps
the last MAX_KEPT for `%noex crashes`, and groups the ones since the last cell into one compact
banner that the post_run_cell hook shows under the cell that ran (or the next one): crashes of
the same behavior on the same node for the same reason are one line with a count, so a crash
loop is one line, however fast it spins.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from html import escape
from typing import Any

from ..core import tracebacks
from ..core.crash_report import CrashReport
from ..core.node_id import NodeId
from ..core.refs import ProcessRef
from .reprs import clock

MAX_KEPT = 500
MAX_GROUPS_SHOWN = 5


@dataclass
class CrashGroup:
    """Crashes since the last banner that are "the same" (`CrashReport.key`)."""

    first: CrashReport
    last: CrashReport
    count: int

    def line(self) -> str:
        r = self.last
        times = f"{self.count} times" if self.count > 1 else "once"
        who = f"{r.behavior}" + (f" ({r.name})" if r.name else "")
        return f"{who} on {r.where} crashed {times}: {r.reason}" + (" (the last one)" if self.count > 1 else "")


class CrashBanner:
    """What the post_run_cell hook shows: one line per group, at most MAX_GROUPS_SHOWN groups."""

    def __init__(self, groups: list[CrashGroup]) -> None:
        self.groups = groups
        self.total = sum(g.count for g in groups)

    def _header(self) -> str:
        s = "es" if self.total != 1 else ""
        return f"noex: {self.total} crash{s} in the cluster since the last cell (%noex crashes shows the reports)"

    def _more(self) -> str:
        hidden = self.groups[MAX_GROUPS_SHOWN:]
        if not hidden:
            return ""
        return f"… and {sum(g.count for g in hidden)} more in {len(hidden)} other group(s)"

    def _repr_html_(self) -> str:
        shown = self.groups[:MAX_GROUPS_SHOWN]
        items = "".join(f"<li><code>{escape(clock(g.last.at))}</code> {escape(g.line())}</li>" for g in shown)
        more = f"<li>{escape(self._more())}</li>" if self._more() else ""
        return (
            "<div class='noex-crash-banner' style='border-left:3px solid #bf8700;padding:2px 8px;margin:4px 0;"
            "background:#fff8e6;font-size:12px'>"
            f"<div style='color:#9a6700;font-weight:bold'>{escape(self._header())}</div>"
            f"<ul style='margin:2px 0'>{items}{more}</ul></div>"
        )

    def __repr__(self) -> str:
        lines = [self._header(), *(f"  {clock(g.last.at)} {g.line()}" for g in self.groups[:MAX_GROUPS_SHOWN])]
        if self._more():
            lines.append(f"  {self._more()}")
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


class CrashList:
    """`%noex crashes`: the kept reports, newest first, each with its (folded) traceback."""

    def __init__(self, reports: list[CrashReport], title: str) -> None:
        self.reports = reports
        self.title = title

    def _repr_html_(self) -> str:
        if not self.reports:
            empty = "<div style='color:#888'>(no crashes)</div>"
            return f"<div class='noex-crashes'><b>{escape(self.title)}</b>{empty}</div>"
        rows = []
        for r in self.reports:
            times = f" <b>×{r.count}</b>" if r.count > 1 else ""  # noqa: RUF001 (a multiplication sign)
            name = f" ({escape(r.name)})" if r.name else ""
            last = f"<br><span style='color:#666'>last message: <code>{escape(r.last_message)}</code></span>" \
                if r.last_message else ""
            tb = tracebacks.fold(r.traceback.rstrip()) if r.traceback else "(no traceback: the process stopped itself)"
            rows.append(
                "<details style='margin:2px 0'><summary>"
                f"<code>{escape(clock(r.at))}</code> <b>{escape(r.behavior)}</b>{name} "
                f"<code title='{escape(str(r.process))}'>{escape(str(r.process))}</code> on "
                f"<code>{escape(r.where)}</code>: <span style='color:#cf222e'>{escape(str(r.reason))}</span>{times}"
                f"</summary><div style='margin-left:16px'>{last}"
                f"<pre style='margin:2px 0;font-size:11px'>{escape(tb)}</pre></div></details>"
            )
        return f"<div class='noex-crashes'><b>{escape(self.title)}</b>{''.join(rows)}</div>"

    def __repr__(self) -> str:
        if not self.reports:
            return f"{self.title}\n(no crashes)"
        return self.title + "\n\n" + "\n\n".join(r.text() for r in self.reports)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


class CrashLog:
    """The crash reports this kernel saw (its node's and its peers'), and the ones not shown yet."""

    def __init__(self) -> None:
        self.reports: deque[CrashReport] = deque(maxlen=MAX_KEPT)
        self.pending: dict[tuple[Any, ...], CrashGroup] = {}
        self._seen: deque[tuple[Any, ...]] = deque(maxlen=MAX_KEPT)
        self.total = 0
        # processes whose crash a cell already showed, as the CallError it raised: no banner for them
        self.shown: deque[ProcessRef] = deque(maxlen=100)

    def add(self, report: CrashReport) -> bool:
        """Keep `report` (once: a peer's backlog may repeat one); False if it was known."""
        ident = (report.process, report.at)
        if ident in self._seen:
            return False
        self._seen.append(ident)
        self.reports.append(report)
        self.total += report.count
        if report.process in self.shown:
            return True
        group = self.pending.get(report.key())
        if group is None:
            self.pending[report.key()] = CrashGroup(report, report, report.count)
        else:
            group.last = report
            group.count += report.count
        return True

    def shown_by_cell(self, process: ProcessRef) -> None:
        """A cell raised the CallError of `process`'s crash: that says it all, no banner for it."""
        self.shown.append(process)
        for key, group in list(self.pending.items()):
            if group.last.process == process and group.count == 1:
                del self.pending[key]

    def take_banner(self) -> CrashBanner | None:
        if not self.pending:
            return None
        groups = sorted(self.pending.values(), key=lambda g: -g.count)
        self.pending = {}
        return CrashBanner(groups)

    def listing(self, count: int = 20, node: NodeId | None = None) -> CrashList:
        reports = [r for r in self.reports if node is None or r.node == node]
        shown = list(reversed(reports))[:count]
        where = f" on {node}" if node is not None else " in the cluster"
        title = f"last {len(shown)} of {len(reports)} crash reports{where} (newest first; click one for its traceback)"
        return CrashList(shown, title)
