"""`%noex dashboard`: the cluster, supervisor and event views together, docked in a JupyterLab
side panel (the `sidecar` widget, a prebuilt JupyterLab extension that `noex-lab[lab]`
installs) so they stay on screen while the user runs cells further down.

Without `sidecar` (or with `--inline`) the same views show in the cell's output. Running the
command again replaces the dashboard (the old views and panel are closed, no models leak).
"""

from __future__ import annotations

import contextlib
from typing import Any

import ipywidgets

from ..core.events import EventKind
from .widgets import ClusterView, EventLog, SupervisorView

DASHBOARD_KINDS: frozenset[EventKind] = frozenset({
    "node_up", "node_down", "node_busy", "node_available", "crash_report", "error", "supervisor_restart",
    "child_migrated", "child_restarted", "supervisor_gave_up", "supervisor_stopped", "node_failure_detected",
    "local_node_exited", "process_exited",
})


def sidecar_class() -> Any:
    """The `sidecar.Sidecar` widget class, or None when the package is not installed."""
    try:
        from sidecar import Sidecar  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None
    return Sidecar


class Dashboard:
    """A ClusterView, one SupervisorView per supervisor and an EventLog, in one box."""

    def __init__(self, cluster: ClusterView, supervisors: list[SupervisorView], events: EventLog, *,
                 docked: bool) -> None:
        self.cluster = cluster
        self.supervisors = supervisors
        self.events = events
        header = ipywidgets.HTML(
            "<div style='font-weight:bold;font-size:13px'>noex dashboard</div>"
            "<div style='color:#57606a;font-size:11px'>live while the kernel runs; %noex dashboard again "
            "replaces it</div>")
        self.box = ipywidgets.VBox([header, cluster, *supervisors, events])
        self.panel: Any = None
        self.docked = docked
        if docked:
            Sidecar = sidecar_class()
            self.panel = Sidecar(title="noex dashboard", anchor="split-right")
            self.panel.append_display_data(self.box)

    @property
    def views(self) -> list[Any]:
        return [self.cluster, *self.supervisors, self.events]

    def close(self) -> None:
        for view in self.views:
            with contextlib.suppress(Exception):
                view.close()
        with contextlib.suppress(Exception):
            self.box.children[0].close()
        with contextlib.suppress(Exception):
            self.box.close()
        if self.panel is not None:
            with contextlib.suppress(Exception):
                self.panel.close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        if self.docked:  # the panel shows it; the cell gets a line saying where it is
            text = (f"noex dashboard docked in the side panel on the right: the cluster, "
                    f"{len(self.supervisors)} supervisor(s) and the events")
            return {"text/plain": text, "text/html": f"<div style='color:#1a7f37'>{text}</div>"}
        data = self.box._repr_mimebundle_(**kwargs) or {}
        html = "".join(view.render_html() for view in self.views)
        data["text/html"] = html
        data["text/plain"] = "\n\n".join(view.render_text() for view in self.views)
        return data
