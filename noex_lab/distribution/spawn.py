"""`RemoteSpawn`: start a registered behavior on another node.

The target looks the name up in its own `BehaviorRegistry` (the allow-list), starts the
process and answers with its ref, or with the typed error carrying the remote reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.errors import BehaviorNotFoundError, InvalidArgumentError, NodeNotReachableError
from ..core.node import current_node
from ..core.node_id import NodeId
from ..core.refs import ProcessRef
from .behaviors import BehaviorRegistry

if TYPE_CHECKING:
    from .cluster import Distribution

REGISTRATIONS = ("none", "local", "global")
INIT_MARGIN_S = 0.1  # at most this much of a remote spawn's timeout is kept for the round trip


async def handle_spawn(dist: Distribution, _peer: NodeId, args: Any) -> ProcessRef:
    """System handler on the target node."""
    behavior_name, arg, name, registration, timeout = args[:5]
    link_to = args[5] if len(args) > 5 else None
    node = dist.node
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
    # The whole spawn ends within `timeout` (SPEC §4); the target's init gets that less a margin
    # for the round trip, so an init that times out still comes back as InitError in time.
    init_timeout = timeout - min(INIT_MARGIN_S, timeout * 0.2)
    result: ProcessRef = await dist.router.rpc(
        target, "spawn", [behavior_name, arg, name, registration, init_timeout, link_to], timeout
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
