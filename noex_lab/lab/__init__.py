"""noex_lab in Jupyter: `%load_ext noex_lab`, the `%noex` magics, live widgets, local nodes."""

from .errors import LabError, MagicUsageError
from .magics import load_ipython_extension, session_of, unload_ipython_extension
from .widgets import ClusterView, EventLog, SupervisorView, TraceView

__all__ = [
    "ClusterView", "EventLog", "LabError", "MagicUsageError", "SupervisorView", "TraceView",
    "load_ipython_extension", "session_of", "unload_ipython_extension",
]
