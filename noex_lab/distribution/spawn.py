"""`RemoteSpawn`: start a registered behavior on another node.

The target looks the name up in its own `BehaviorRegistry` (the allow-list), starts the
process and answers with its ref, or with the typed error carrying the remote reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.errors import BehaviorNotFoundError, InvalidArgumentError, NodeNotReachableError, NotPermittedError
from ..core.mailbox import check_mailbox_options
from ..core.node import current_node
from ..core.node_id import NodeId
from ..core.refs import ProcessRef
from ..core.timeouts import check_timeout
from .attached import distribution_of
from .behaviors import BehaviorRegistry

if TYPE_CHECKING:
    from .cluster import Distribution

REGISTRATIONS = ("none", "local", "global")
INIT_MARGIN_S = 0.1  # at most this much of a remote spawn's timeout is kept for the round trip


async def handle_spawn(dist: Distribution, peer: NodeId, args: Any) -> ProcessRef:
    """System handler on the target node: args are
    `[behavior_name, arg, name, registration, timeout, link_to, max_mailbox, overflow]`
    (the last three optional); `node.spawn` checks them again, whoever sent them. A peer may
    link the new process only to a process of its own."""
    behavior_name, arg, name, registration, timeout = args[:5]
    link_to = args[5] if len(args) > 5 else None
    max_mailbox = args[6] if len(args) > 6 else None
    overflow = args[7] if len(args) > 7 else "drop_newest"
    node = dist.node
    if link_to is not None and peer != dist.node_id and not (isinstance(link_to, ProcessRef) and link_to.node == peer):
        raise NotPermittedError(f"{peer} asked to link a new process to {link_to!r}, not a process of its own")
    try:
        behavior = BehaviorRegistry.get(behavior_name)
    except BehaviorNotFoundError:
        raise BehaviorNotFoundError(behavior_name, node.id) from None
    local_name = name if registration == "local" else None
    guard = dist.partition_guard if link_to is not None else None  # a supervised child: fenced with the node
    if guard is not None:
        guard.check("start supervised children")
    ref = await node.spawn(behavior, arg, name=local_name, timeout=timeout, link=link_to,
                           max_mailbox=max_mailbox, overflow=overflow)
    if guard is not None:
        guard.guard(ref)
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
    max_mailbox: int | None = None, overflow: str = "drop_newest",
) -> ProcessRef:
    """Spawn on `node_id` (this node included); `link_to` links the new process before its init."""
    timeout = check_timeout(timeout)
    check_mailbox_options(max_mailbox, overflow)
    node = current_node()
    target = node_id if isinstance(node_id, NodeId) else NodeId.parse(node_id)
    if registration not in REGISTRATIONS:
        raise InvalidArgumentError(f"registration must be one of {REGISTRATIONS}, not {registration!r}")
    if registration != "none" and not name:
        raise InvalidArgumentError(f"registration={registration!r} needs name=")
    dist = distribution_of(node)
    if dist is None:
        raise NodeNotReachableError(target, "this node is not distributed (call Cluster.start first)")
    if target == node.id:
        return await handle_spawn(dist, target, [behavior_name, arg, name, registration, timeout, link_to,
                                                 max_mailbox, overflow])
    # The whole spawn ends within `timeout` (every blocking API does); the target's init gets that less a margin
    # for the round trip, so an init that times out still comes back as InitError in time.
    init_timeout = timeout - min(INIT_MARGIN_S, timeout * 0.2)
    args = [behavior_name, arg, name, registration, init_timeout, link_to, max_mailbox, overflow]
    result: ProcessRef = await dist.router.rpc(target, "node.spawn", args, timeout)
    return result


class RemoteSpawn:
    """Start processes on other nodes by behavior name."""

    @staticmethod
    async def spawn(
        behavior_name: str, node_id: NodeId | str, *, arg: Any = None, name: str | None = None,
        registration: str | None = None, timeout: float = 10.0, max_mailbox: int | None = None,
        overflow: str = "drop_newest",
    ) -> ProcessRef:
        """Errors: BehaviorNotFoundError, InitError (with the remote reason), GlobalNameConflictError,
        CallTimeoutError, NodeNotReachableError, InvalidArgumentError. `max_mailbox` and `overflow`
        bound the new process's mailbox, as in `GenServer.start`.

        `registration` is "local" (the name in the target node's `Registry`), "global" (in the
        `GlobalRegistry`) or "none"; left out, it is "local" when `name=` is given (as
        `GenServer.start(name=...)` registers on its node) and "none" otherwise."""
        if registration is None:
            registration = "local" if name else "none"
        return await spawn(behavior_name, node_id, arg=arg, name=name, registration=registration,
                           timeout=timeout, max_mailbox=max_mailbox, overflow=overflow)
