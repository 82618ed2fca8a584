"""noex_lab: Erlang/OTP-style processes, supervisors and P2P clustering for Python and Jupyter.

`noex_lab` itself holds what an application writes every day: behaviors, supervisors, the
cluster and its registries, remote calls and the errors they raise. Families of names live in
public submodules, each with its own `__all__`: `noex_lab.errors` (every error),
`noex_lab.statem` (state machines), `noex_lab.introspection` (snapshots, events, the records
of `Sys`), `noex_lab.faults` (fault injection), `noex_lab.policies` (partition policies),
`noex_lab.widgets` (Jupyter) and `noex_lab.testing` (pytest)."""

import gc
import logging
from typing import Any

# Importing the runtime builds ~60 dataclasses and hundreds of classes and functions, none of them
# garbage: cyclic collections during that import only cost CPU (~5 % of a `noex-lab node` start,
# issue 19 W10). Collection is paused for the import and restored as it was.
_gc_was_enabled = gc.isenabled()
gc.disable()
try:
    from . import errors as errors  # the public submodules, as attributes of the package
    from . import faults as faults
    from . import introspection as introspection
    from . import policies as policies
    from . import statem as statem
    from .core.errors import (
        AlreadyRegisteredError,
        BehaviorNotFoundError,
        CallError,
        CallTimeoutError,
        GlobalNameConflictError,
        GlobalNameNotFoundError,
        InitError,
        MaxRestartsExceededError,
        NodeNotReachableError,
        NoexError,
        NotRegisteredError,
        RemoteError,
        SerializationError,
        ServerNotRunningError,
    )
    from .core.genserver import From, GenServer
    from .core.links import RemoteLink, RemoteMonitor
    from .core.messages import Down, Exit, NoReply, Stop
    from .core.named import MultiCallResult
    from .core.node import Node, current_node, running_nodes
    from .core.node_id import NodeId
    from .core.reasons import ErrorReason, ExitReason, is_normal_exit
    from .core.refs import MonitorRef, ProcessRef, TimerRef
    from .core.registry import Registry
    from .core.snapshot import NodeSnapshot, ProcessInfo
    from .core.statem import StateMachine
    from .core.supervisor import ChildInfo, ChildSpec, Supervisor
    from .core.tracebacks import show_library_frames
    from .distribution import BehaviorRegistry, Cluster, ClusterConfig, wire_type
    from .distribution.distributed_supervisor import DistributedChildSpec, DistributedSupervisor
    from .distribution.global_registry import GlobalConflict, GlobalRegistry
    from .distribution.groups import Group, GroupEvent
    from .distribution.membership import NodeInfo
    from .distribution.partition_policy import keep_majority, keep_referee, static_quorum
    from .distribution.remote_call import RemoteCall
    from .distribution.rpc import Rpc, remote_function
    from .distribution.spawn import RemoteSpawn
    from .distribution.sys_tools import Sys
    from .distribution.transport import TLSConfig
    from .version import __version__
finally:
    if _gc_was_enabled:
        # What the import built goes to the oldest generation without being traversed (freeze,
        # then unfreeze): else the first collection after the import walks all of it. A lone
        # node's CPU at NODE, 20 starts each, interleaved: 159 ms median without, 152 ms with.
        # (Not when the application froze objects itself: unfreeze would thaw them too.)
        if gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
        gc.enable()

# A library logs; the application decides where logs go (`noex-lab node` and the notebook
# extension do): without a handler of its own, nothing is printed through logging's last resort.
logging.getLogger("noex_lab").addHandler(logging.NullHandler())

__all__ = [  # noqa: RUF022  (grouped as docs/reference/index.md shows them)
    # processes and behaviors
    "Down",
    "ErrorReason",
    "Exit",
    "ExitReason",
    "From",
    "GenServer",
    "MonitorRef",
    "NoReply",
    "ProcessRef",
    "RemoteLink",
    "RemoteMonitor",
    "StateMachine",
    "Stop",
    "TimerRef",
    "current_node",
    "is_normal_exit",
    "running_nodes",
    "show_library_frames",
    # supervision
    "ChildInfo",
    "ChildSpec",
    "DistributedChildSpec",
    "DistributedSupervisor",
    "Supervisor",
    # names
    "GlobalConflict",
    "GlobalRegistry",
    "Group",
    "GroupEvent",
    "Registry",
    # nodes and the cluster
    "Cluster",
    "ClusterConfig",
    "Node",
    "NodeId",
    "NodeInfo",
    "NodeSnapshot",
    "ProcessInfo",
    "TLSConfig",
    "keep_majority",
    "keep_referee",
    "static_quorum",
    # remote work
    "BehaviorRegistry",
    "MultiCallResult",
    "RemoteCall",
    "RemoteSpawn",
    "Rpc",
    "Sys",
    "remote_function",
    "wire_type",
    # the errors of everyday calls (all of them: noex_lab.errors)
    "AlreadyRegisteredError",
    "BehaviorNotFoundError",
    "CallError",
    "CallTimeoutError",
    "GlobalNameConflictError",
    "GlobalNameNotFoundError",
    "InitError",
    "MaxRestartsExceededError",
    "NoexError",
    "NodeNotReachableError",
    "NotRegisteredError",
    "RemoteError",
    "SerializationError",
    "ServerNotRunningError",
    # the package
    "__version__",
    "load_ipython_extension",
    "unload_ipython_extension",
]


def load_ipython_extension(ip: Any) -> None:
    """`%load_ext noex_lab` (IPython is imported only here, never by `import noex_lab`)."""
    from .lab import load_ipython_extension as load

    load(ip)


def unload_ipython_extension(ip: Any) -> None:
    """`%unload_ext noex_lab`."""
    from .lab import unload_ipython_extension as unload

    unload(ip)
