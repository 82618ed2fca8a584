"""Clustering: transport, membership, remote messaging, spawn, registries, supervision."""

from . import wire_types as _wire_types  # noqa: F401  (registers the runtime's records)
from .behaviors import BehaviorRegistry
from .cluster import Cluster, ClusterConfig
from .codec import wire_type
from .crash_reports import watch_cluster_crashes
from .distributed_supervisor import DistributedChildSpec, DistributedSupervisor
from .faults import FaultControl, Faults, heal, partition
from .global_registry import GlobalConflict, GlobalRegistry
from .groups import Group, GroupEvent
from .introspection import ProcessListing, ProcessState, TraceEvent, TraceHandle
from .membership import NodeInfo
from .partition_policy import PartitionPolicy, keep_majority, keep_referee, no_policy, static_quorum
from .remote_call import RemoteCall
from .rpc import Rpc, remote_function
from .spawn import RemoteSpawn
from .sys_tools import Sys
from .transport import TLSConfig

__all__ = [
    "BehaviorRegistry",
    "Cluster",
    "ClusterConfig",
    "DistributedChildSpec",
    "DistributedSupervisor",
    "FaultControl",
    "Faults",
    "GlobalConflict",
    "GlobalRegistry",
    "Group",
    "GroupEvent",
    "NodeInfo",
    "PartitionPolicy",
    "ProcessListing",
    "ProcessState",
    "RemoteCall",
    "RemoteSpawn",
    "Rpc",
    "Sys",
    "TLSConfig",
    "TraceEvent",
    "TraceHandle",
    "heal",
    "keep_majority",
    "keep_referee",
    "no_policy",
    "partition",
    "remote_function",
    "static_quorum",
    "watch_cluster_crashes",
    "wire_type",
]
