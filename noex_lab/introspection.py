"""`noex_lab.introspection`: what observing a node gives back, as typed records.

Snapshots (`node.snapshot()`, `Cluster.snapshot()`), the event stream (`node.events`), the
results of `Sys`'s live tools (listing, state, statistics, suspend, trace, hot upgrade) and crash
reports. `NodeSnapshot` and `ProcessInfo` are also importable from `noex_lab`."""

from .core.crash_report import CrashReport
from .core.events import EVENT_KINDS, EventInfo, EventKind, NodeEvent
from .core.snapshot import NodeSnapshot, ProcessInfo
from .core.supervisor import SupervisorTree
from .core.systools import ProcessStatistics, ProcessStatus, SuspendResult
from .core.upgrade import Upgrade, UpgradeResult
from .distribution.crash_reports import watch_cluster_crashes
from .distribution.introspection import ProcessListing, ProcessState, TraceEvent, TraceHandle

__all__ = [
    "EVENT_KINDS",
    "CrashReport",
    "EventInfo",
    "EventKind",
    "NodeEvent",
    "NodeSnapshot",
    "ProcessInfo",
    "ProcessListing",
    "ProcessState",
    "ProcessStatistics",
    "ProcessStatus",
    "SupervisorTree",
    "SuspendResult",
    "TraceEvent",
    "TraceHandle",
    "Upgrade",
    "UpgradeResult",
    "watch_cluster_crashes",
]
