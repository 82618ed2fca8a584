"""`RemoteSpawn`: start a registered behavior on another node.

The target looks the name up in its own `BehaviorRegistry` (the allow-list), starts the
process and answers with its ref, or with the typed error carrying the remote reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.errors import BehaviorNotFoundError, InvalidArgumentError, NodeNotReachableError, NotPermittedError
from ..core.node import current_node
from ..core.node_id import NodeId
from ..core.refs import ProcessRef
from .behaviors import BehaviorRegistry

if TYPE_CHECKING:
    from .cluster import Distribution

REGISTRATIONS = ("none", "local", "global")


async def handle_spawn(dist: Distribution, peer: NodeId, args: Any) -> ProcessRef:
    """System handler on the target node; a peer may link the new process only to its own."""
    behavior_name, arg, name, registration, timeout = args[:5]
    link_to = args[5] if len(args) > 5 else None
    node = dist.node
    if link_to is not None and peer != dist.node_id and not (isinstance(link_to, ProcessRef) and link_to.node == peer):
        raise NotPermittedError(f"{peer} asked to link a new process to {link_to!r}, not a process of its own")
    try:
        behavior = BehaviorRegistry.get(behavior_name)
    except BehaviorNotFoundError:
        raise BehaviorNotFoundError(behavior_name, node.id) from None
    local_name = name if registration == "local" else None
    ref = await node.spawn(behavior, arg, name=local_name, timeout=float(timeout), link=link_to)
    if registration == "global":
        registry = getattr(dist, "global_registry", None)
        if registry is None:
            await node.stop_process(ref, "shutdown", 5.0)
            raise InvalidArgumentError("this node has no GlobalRegistry")
        try:
            await registry.register(name, ref)
        except BaseException:
            proc = node.local_process(ref)
            if proc is not None:
                proc.kill("shutdown")
            raise
    return ref


async def spawn(
    behavior_name: str, node_id: NodeId | str, *, arg: Any = None, name: str | None = None,
    registration: str = "none", timeout: float = 10.0, link_to: ProcessRef | None = None,
) -> ProcessRef:
    """Spawn on `node_id` (this node included); `link_to` links the new process before its init."""
    node = current_node()
    target = node_id if isinstance(node_id, NodeId) else NodeId.parse(node_id)
    if registration not in REGISTRATIONS:
        raise InvalidArgumentError(f"registration must be one of {REGISTRATIONS}, not {registration!r}")
    if registration != "none" and not name:
        raise InvalidArgumentError(f"registration={registration!r} needs name=")
    dist = node.distribution
    if target == node.id or dist is None:
        if dist is None and target != node.id:
            raise NodeNotReachableError(target, "this node is not distributed (call Cluster.start first)")
        assert dist is not None
        return await handle_spawn(dist, target, [behavior_name, arg, name, registration, timeout, link_to])
    result: ProcessRef = await dist.router.rpc(
        target, "spawn", [behavior_name, arg, name, registration, timeout, link_to], timeout + 1.0
    )
    return result


class RemoteSpawn:
    """Start processes on other nodes by behavior name."""

    @staticmethod
    async def spawn(
        behavior_name: str, node_id: NodeId | str, *, arg: Any = None, name: str | None = None,
        registration: str = "none", timeout: float = 10.0,
    ) -> ProcessRef:
        """Errors: BehaviorNotFoundError, InitError (with the remote reason), GlobalNameConflictError,
        CallTimeoutError, NodeNotReachableError."""
        return await spawn(behavior_name, node_id, arg=arg, name=name, registration=registration,
                           timeout=timeout)
