"""`noex_lab.policies`: what the losing side of a network partition does
(`Cluster.start(partition_policy=...)`). The three policies the product names are also
importable from `noex_lab`; `no_policy()` is the default (every side runs on)."""

from .distribution.partition_policy import PartitionPolicy, keep_majority, keep_referee, no_policy, static_quorum

__all__ = ["PartitionPolicy", "keep_majority", "keep_referee", "no_policy", "static_quorum"]
