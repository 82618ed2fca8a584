"""Testing behaviors on real nodes: a pytest plugin (fixtures `noex_node`, `noex_cluster`,
`noex_node_processes`, `noex_faults`, `noex_secret`, `noex_wait_until`) and the helpers behind it."""

from .cluster import kill_all_nodes, start_cluster
from .faults import FaultInjector
from .processes import NodeProcess, WatchedProcess, kill_and_reap, start_node_processes
from .waiting import eventually, wait_until, wait_until_blocking

__all__ = [
    "FaultInjector",
    "NodeProcess",
    "WatchedProcess",
    "eventually",
    "kill_all_nodes",
    "kill_and_reap",
    "start_cluster",
    "start_node_processes",
    "wait_until",
    "wait_until_blocking",
]
