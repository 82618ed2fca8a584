"""The single-node runtime: processes, GenServer, links, monitors, Registry, Supervisor."""

from .crash_report import CrashReport
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
    MailboxFullError,
    MaxRestartsExceededError,
    MissingExtraError,
    NodeNotReachableError,
    NodeStoppedError,
    NoexError,
    NotPermittedError,
    NotRegisteredError,
    RemoteError,
    RemoteFunctionError,
    RemoteFunctionNotFoundError,
    SendTimeoutError,
    SerializationError,
    ServerNotRunningError,
    SupervisorError,
    TooManyTracesError,
    WaitTimeoutError,
)
from .events import EventStream, NodeEvent
from .genserver import From, GenServer
from .links import RemoteLink, RemoteMonitor
from .messages import Down, Exit, NoReply, Stop
from .named import MultiCallResult
from .node import Node, current_node, running_nodes
from .node_id import NodeId
from .reasons import ErrorReason, ExitReason, is_normal_exit
from .refs import MonitorRef, ProcessRef, TimerRef
from .registry import Registry
from .snapshot import NodeSnapshot, ProcessInfo
from .supervisor import ChildInfo, ChildSpec, Supervisor, SupervisorTree
from .tracebacks import show_library_frames

__all__ = [
    "AlreadyRegisteredError",
    "AuthenticationError",
    "BehaviorNotFoundError",
    "CallError",
    "CallTimeoutError",
    "ChildInfo",
    "ChildSpec",
    "ClusterError",
    "CrashReport",
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
    "MailboxFullError",
    "MaxRestartsExceededError",
    "MissingExtraError",
    "MonitorRef",
    "MultiCallResult",
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
    "RemoteFunctionError",
    "RemoteFunctionNotFoundError",
    "RemoteLink",
    "RemoteMonitor",
    "SendTimeoutError",
    "SerializationError",
    "ServerNotRunningError",
    "Stop",
    "Supervisor",
    "SupervisorError",
    "SupervisorTree",
    "TimerRef",
    "TooManyTracesError",
    "WaitTimeoutError",
    "current_node",
    "is_normal_exit",
    "running_nodes",
    "show_library_frames",
]
