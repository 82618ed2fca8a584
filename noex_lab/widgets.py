"""`noex_lab.widgets`: live Jupyter widgets (needs ipywidgets; see SPEC §9)."""

from .lab.widgets import (
    ClusterView,
    EventLog,
    FunctionSupervisorSource,
    LocalSupervisorSource,
    SupervisorSource,
    SupervisorView,
    TraceView,
)

__all__ = [
    "ClusterView", "EventLog", "FunctionSupervisorSource", "LocalSupervisorSource", "SupervisorSource",
    "SupervisorView", "TraceView",
]
