"""The `Distribution` of a node, typed for the distribution layer: the core holds it as a
`core.router.ClusterPort` (`node.distribution`), whose one implementation is `Distribution`."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from ..core.errors import ClusterError
from ..core.node import Node

if TYPE_CHECKING:
    from .cluster import Distribution


def distribution_of(node: Node) -> Distribution | None:
    """`node`'s Distribution, None while it is not distributed."""
    return cast("Distribution | None", node.distribution)


def require_distribution(node: Node) -> Distribution:
    """`node`'s Distribution; `ClusterError` while it is not distributed."""
    dist = distribution_of(node)
    if dist is None:
        raise ClusterError(f"node {node.display_name} is not distributed; call Cluster.start(...) first")
    return dist
