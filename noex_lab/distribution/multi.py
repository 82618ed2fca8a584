"""The target side of `(name, node_id)` addressing (OTP `{Name, Node}`), which also carries
`GenServer.multi_call` and `GenServer.abcast` (see `noex_lab.core.named`).

Remote operations (the `named` service; every distributed node serves them):

- `named.call [name, timeout, sender, msg]` -> the reply of the process registered as `name`
  in this node's local `Registry` (`ServerNotRunningError` if none);
- `named.send [name, tag, msg]` (notification): a cast or a plain send to it, dropped if none;
- `named.whereis name` -> its `ProcessRef`, or None.

Only the local `Registry` answers: a global name is not a `{Name, Node}` target (as in OTP).
A notification is handled in the connection's reader, in arrival order, like a cast to a ref,
so casts from one sender keep their order whichever way they address the process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core.errors import CallTimeoutError, InvalidArgumentError, ServerNotRunningError
from ..core.node_id import NodeId
from ..core.process import CALL, CAST, INFO
from ..core.reasons import NOPROC
from ..core.refs import ProcessRef
from ..core.timeouts import check_timeout
from .service import Operation, Service

if TYPE_CHECKING:
    from ..core.node import Node


class NamedService(Service):
    """The `named` operations: `(name, node_id)` requests from peers, answered by this node's
    local `Registry`."""

    namespace = "named"

    def __init__(self, node: Node) -> None:
        self.node = node

    def operations(self) -> Mapping[str, Operation]:
        return {"call": self.call, "send": self.send, "whereis": self.whereis}

    def _local_ref(self, name: Any) -> ProcessRef | None:
        if not isinstance(name, str):
            raise InvalidArgumentError(f"a registered name is a string, not {type(name).__name__}")
        node = self.node
        ref = node.names.whereis(name)
        if ref is None or ref.node is not None:
            return ref
        return ProcessRef(node.id, ref.id, ref.creation)  # registered before Cluster.start

    async def call(self, peer: NodeId, args: Any) -> Any:
        name, timeout, sender, msg = args
        node = self.node
        timeout = check_timeout(timeout)  # from a peer: refused (a typed error reply) if bad
        ref = self._local_ref(name)
        proc = node.local_process(ref) if ref is not None else None
        if proc is None or not proc.alive:
            raise ServerNotRunningError((name, node.id), NOPROC)
        if not (isinstance(sender, ProcessRef) and sender.node == peer):
            sender = None  # a connection speaks only for its own node's processes
        reply = node.backend.new_future()
        proc.deliver((CALL, msg, reply, sender))
        try:
            return await node.backend.wait_future(reply, timeout)
        except TimeoutError as exc:
            if type(exc) is TimeoutError:
                raise CallTimeoutError((name, node.id), timeout) from None
            raise

    def send(self, peer: NodeId, args: Any) -> None:
        name, tag, msg = args
        if tag not in (CAST, INFO):
            raise InvalidArgumentError(f"named.send takes a cast or a send, not tag {tag!r}")
        ref = self._local_ref(name)
        if ref is not None:
            self.node.deliver_local(ref, (tag, msg))

    def whereis(self, peer: NodeId, name: Any) -> ProcessRef | None:
        return self._local_ref(name)
