"""The `node` service: the remote operations every distributed node serves about itself.

- `node.snapshot None | {"limit", "offset", "sort"}` -> its `NodeSnapshot` (every process, or one page)
- `node.ping None` -> None (round trips, `noex_lab.metrics`)
- `node.spawn [behavior, arg, name, registration, timeout, link_to, max_mailbox, overflow]` -> a
  `ProcessRef` (`spawn.handle_spawn`)
- `node.shutdown [pid, creation, reason, timeout]` -> the exit reason (`RemoteRouter.shutdown`)
- `node.leaving None` (notification): the peer begins a graceful leave (`Membership.on_leaving`)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core.errors import InvalidArgumentError
from ..core.node_id import NodeId
from ..core.reasons import ExitReason
from ..core.refs import ProcessRef
from ..core.snapshot import NodeSnapshot
from ..core.timeouts import check_limit
from .membership import Membership
from .service import Operation, Service
from .spawn import handle_spawn

if TYPE_CHECKING:
    from ..core.node import Node
    from .cluster import Distribution


class NodeService(Service):
    """What a peer may ask of this node as a whole (see the module doc)."""

    namespace = "node"

    def __init__(self, dist: Distribution, membership: Membership) -> None:
        self.dist = dist
        self.node: Node = dist.node
        self.membership = membership

    def operations(self) -> Mapping[str, Operation]:
        return {"snapshot": self.snapshot, "ping": self.ping, "spawn": self.spawn, "shutdown": self.shutdown,
                "leaving": self.membership.on_leaving}

    def snapshot(self, _peer: NodeId, args: Any) -> NodeSnapshot:
        """None lists every process, {"limit", "offset", "sort"} one page."""
        node = self.node
        if args is None:
            return node.snapshot()
        if not isinstance(args, dict):
            raise InvalidArgumentError(f"a snapshot request carries None or a dict of limit, offset, sort, "
                                       f"not {args!r}")
        return node.snapshot(limit=args.get("limit"), offset=args.get("offset", 0), sort=args.get("sort", "pid"))

    def ping(self, _peer: NodeId, _args: Any) -> None:
        return None

    async def spawn(self, peer: NodeId, args: Any) -> ProcessRef:
        return await handle_spawn(self.dist, peer, args)

    async def shutdown(self, _peer: NodeId, args: Any) -> ExitReason:
        pid, creation, reason, timeout = args
        node = self.node
        timeout = check_limit(timeout)  # from a peer: refused here (a typed error reply) if bad
        return await node.shutdown_process(ProcessRef(node.id, pid, creation), reason, timeout)
