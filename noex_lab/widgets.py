"""`noex_lab.widgets`: live Jupyter widgets (needs ipywidgets: `pip install 'noex-lab[lab]'`)."""

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
