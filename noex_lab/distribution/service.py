"""One shape for every distribution service, and the one function that plugs them in.

A service (global names, groups, introspection, the distributed supervisor's replicas...) is a
`Service`: a `namespace`, the remote operations it serves, and hooks. `Distribution._start`
builds the services in dependency order, each given what it needs through its constructor,
then hands them to `install_services`, which registers every operation as `namespace.op` in the
router's table (`RemoteRouter.rpc_handlers`) and the hooks with the node. Nothing else writes
that table; no service installs itself.

Remote operations are the RPC and RPC_CAST frames (system requests and notifications). The
message, cast, call and reply frames of processes are not operations: they never pass here.
The table of every operation name is in docs/reference/distribution.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..core.errors import InvalidArgumentError
from ..core.node_id import NodeId

if TYPE_CHECKING:
    from ..core.node import Node
    from ..core.process import Process
    from ..core.reasons import ExitReason

__all__ = ["Operation", "Service", "Services", "install_services", "op_name"]

Operation = Callable[[NodeId, Any], Any]
"""A remote operation's handler: `(peer, args) -> result` (or an awaitable of it); a request's
typed error travels back to the caller, a notification's result is dropped."""


def op_name(namespace: str, op: str) -> str:
    """The wire name of operation `op` of the service `namespace`: `namespace.op`."""
    return f"{namespace}.{op}"


class Service:
    """A part of a node's distribution. Subclasses set `namespace`, return their operations
    from `operations()` and override the hooks they need; the defaults do nothing."""

    namespace: ClassVar[str] = ""

    def operations(self) -> Mapping[str, Operation]:
        """The remote operations served, by short name (each registered as `namespace.name`)."""
        return {}

    def start(self) -> None:
        """The node is distributed (its id set, its router in place): start background tasks here."""

    def peer_joined(self, peer: NodeId) -> None:
        """A peer is up (its connection admitted, after the membership's own bookkeeping)."""

    def peer_left(self, peer: NodeId, reason: str) -> None:
        """A peer is down (`reason`: "connection_closed", "heartbeat_timeout", "shutdown"...)."""

    def process_exited(self, proc: Process, reason: ExitReason) -> None:
        """A local process ended. Registered with the node only when a service overrides it
        (it runs on every exit)."""

    async def hand_off(self) -> None:
        """The node leaves gracefully: move work elsewhere before its processes stop.
        Registered with the node only when a service overrides it."""


def _overrides(service: Service, hook: str) -> bool:
    return getattr(type(service), hook) is not getattr(Service, hook)


class Services:
    """The services of one node's distribution, in the order they were built (dependencies
    first): the join and leave hooks run in that order, each one's error reported, not raised."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.all: list[Service] = []

    def peer_joined(self, peer: NodeId) -> None:
        for service in self.all:
            try:
                service.peer_joined(peer)
            except Exception as exc:
                self.node.events.report_error(f"{type(service).__name__}.peer_joined failed", exc)

    def peer_left(self, peer: NodeId, reason: str) -> None:
        for service in self.all:
            try:
                service.peer_left(peer, reason)
            except Exception as exc:
                self.node.events.report_error(f"{type(service).__name__}.peer_left failed", exc)

    def start(self) -> None:
        for service in self.all:
            service.start()


def install_services(services: Services, handlers: dict[str, Operation], new: Sequence[Service]) -> None:
    """Plug `new` into a node: their operations into `handlers` (the router's table) as
    `namespace.op`, their exit and hand-off hooks into the node, their join and leave hooks
    into `services`. Two services claiming one name is a programming error, refused here."""
    node = services.node
    for service in new:
        if not service.namespace:
            raise InvalidArgumentError(f"{type(service).__name__} has no namespace")
        for short, handler in service.operations().items():
            name = op_name(service.namespace, short)
            if name in handlers:
                raise InvalidArgumentError(f"remote operation {name!r} is served twice "
                                           f"(again by {type(service).__name__})")
            handlers[name] = handler
        if _overrides(service, "process_exited"):
            node.exit_hooks.append(service.process_exited)
        if _overrides(service, "hand_off"):
            hand_off: Callable[[], Awaitable[None]] = service.hand_off
            node.handoff_hooks.append(hand_off)
        services.all.append(service)
