"""Clustering: transport, membership, remote messaging, spawn, registries, supervision."""

from . import wire_types as _wire_types  # noqa: F401  (registers the runtime's records)
from .behaviors import BehaviorRegistry
from .cluster import Cluster, ClusterConfig
from .codec import wire_type
from .distributed_supervisor import DistributedChildSpec, DistributedSupervisor
from .faults import Faults, heal, partition
from .global_registry import GlobalConflict, GlobalRegistry
from .membership import NodeInfo
from .remote_call import RemoteCall
from .spawn import RemoteSpawn
from .sys_tools import Sys
from .transport import TLSConfig

__all__ = [
    "BehaviorRegistry",
    "Cluster",
    "ClusterConfig",
    "DistributedChildSpec",
    "DistributedSupervisor",
    "Faults",
    "GlobalConflict",
    "GlobalRegistry",
    "NodeInfo",
    "RemoteCall",
    "RemoteSpawn",
    "Sys",
    "TLSConfig",
    "heal",
    "partition",
    "wire_type",
]
