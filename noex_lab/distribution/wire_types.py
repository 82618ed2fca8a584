"""The runtime's own records that travel between nodes (snapshots, supervisor trees, node info)."""

from __future__ import annotations

from ..core.events import EventInfo
from ..core.snapshot import NodeSnapshot, ProcessInfo, ProcessSummary
from ..core.supervisor import ChildInfo, SupervisorTree
from .codec import wire_type
from .global_registry import GlobalConflict
from .introspection import ProcessState
from .membership import NodeInfo

for _cls in (NodeSnapshot, ProcessInfo, ProcessSummary, ChildInfo, SupervisorTree, NodeInfo, GlobalConflict, EventInfo,
             ProcessState):
    wire_type(_cls, name=f"noex_lab.{_cls.__name__}")
