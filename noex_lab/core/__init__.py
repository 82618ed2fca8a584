"""The single-node runtime: processes, GenServer, links, monitors, Registry, Supervisor."""

from .errors import (
    AlreadyRegisteredError,
    AuthenticationError,
    BehaviorNotFoundError,
    CallError,
    CallTimeoutError,
    ClusterError,
    GlobalNameConflictError,
    GlobalNameNotFoundError,
    InitError,
    InvalidArgumentError,
    MaxRestartsExceededError,
    NodeNotReachableError,
    NodeStoppedError,
    NoexError,
    NotPermittedError,
    NotRegisteredError,
    RemoteError,
    SerializationError,
    ServerNotRunningError,
    SupervisorError,
)
from .events import EventStream, NodeEvent
from .genserver import From, GenServer
from .links import RemoteLink, RemoteMonitor
from .messages import Down, Exit, NoReply, Stop
from .node import Node, current_node, running_nodes
from .node_id import NodeId
from .reasons import ErrorReason, ExitReason, is_normal_exit
from .refs import MonitorRef, ProcessRef, TimerRef
from .registry import Registry
from .snapshot import NodeSnapshot, ProcessInfo
from .supervisor import ChildInfo, ChildSpec, Supervisor, SupervisorTree

__all__ = [
    "AlreadyRegisteredError",
    "AuthenticationError",
    "BehaviorNotFoundError",
    "CallError",
    "CallTimeoutError",
    "ChildInfo",
    "ChildSpec",
    "ClusterError",
    "Down",
    "ErrorReason",
    "EventStream",
    "Exit",
    "ExitReason",
    "From",
    "GenServer",
    "GlobalNameConflictError",
    "GlobalNameNotFoundError",
    "InitError",
    "InvalidArgumentError",
    "MaxRestartsExceededError",
    "MonitorRef",
    "NoReply",
    "Node",
    "NodeEvent",
    "NodeId",
    "NodeNotReachableError",
    "NodeSnapshot",
    "NodeStoppedError",
    "NoexError",
    "NotPermittedError",
    "NotRegisteredError",
    "ProcessInfo",
    "ProcessRef",
    "Registry",
    "RemoteError",
    "RemoteLink",
    "RemoteMonitor",
    "SerializationError",
    "ServerNotRunningError",
    "Stop",
    "Supervisor",
    "SupervisorError",
    "SupervisorTree",
    "TimerRef",
    "current_node",
    "is_normal_exit",
    "running_nodes",
]
