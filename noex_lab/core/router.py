"""The two seams between the node-local runtime and the distribution layer (both implemented by
`noex_lab.distribution`, which core never imports):

- `Router` (`node.router`): everything addressed to a process on another node; the core never
  looks at sockets itself.
- `ClusterPort` (`node.distribution`): everything else the core asks of the cluster its node is
  part of: its status and members, membership callbacks, remote spawn, global names.

The way back in (frames from peers to local processes) is `Node`'s inbound API
(`Node.inbound_process`, `Node.deliver_down`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ._backend import FutureLike
from .node_id import NodeId
from .reasons import ExitReason
from .refs import MonitorRef, ProcessRef


class Congestion(Protocol):
    """A busy outgoing connection a process waits on before its next message (back-pressure)."""

    @property
    def congested(self) -> bool:
        """Whether it is busy (never once closed)."""

    def add_space_waiter(self, fut: FutureLike) -> None:
        """Resolve `fut` once it is no longer busy."""


class Router(Protocol):
    """Delivers to non-local refs. Implemented by `noex_lab.distribution`."""

    def send(self, to: ProcessRef, tag: int, msg: Any) -> bool:
        """Cast (tag CAST) or plain send (tag INFO); never raises for an unreachable node.
        False when there is no connection to `to.node` (nothing was sent)."""

    async def drain(self, node: Any, timeout: float | None) -> None:
        """Wait until the connection to `node` (every one when None) is not busy;
        `SendTimeoutError` after `timeout` seconds."""

    async def call(self, to: ProcessRef, msg: Any, timeout: float, sender: ProcessRef | None) -> Any:
        """Request/reply to a remote process; raises the typed errors of `GenServer.call`."""

    async def stop(self, to: ProcessRef, reason: ExitReason, timeout: float) -> None:
        """Orderly stop of a remote process."""

    async def shutdown(self, to: ProcessRef, reason: ExitReason, timeout: float | None) -> ExitReason:
        """Supervisor-style stop of a remote process (killed after `timeout`); None if unreachable."""

    def exit_signal(self, to: ProcessRef, from_: ProcessRef, reason: ExitReason) -> None:
        """A local process linked to remote `to` exited with `reason`."""

    def link(self, local: ProcessRef, remote: ProcessRef) -> None:
        """Record a link between a local and a remote process on the remote side."""

    def unlink(self, local: ProcessRef, remote: ProcessRef) -> None:
        """Remove such a link on the remote side."""

    def monitor(self, mref: MonitorRef, target: ProcessRef, watcher: Any) -> None:
        """Monitor a remote process; the Down arrives through the normal paths."""

    def demonitor(self, mref: MonitorRef, target: ProcessRef) -> None:
        """Remove a monitor on a remote process."""

    def resolve_name(self, name: str) -> ProcessRef | None:
        """A name not registered locally: the global registry's answer, if any."""

    async def call_named(self, name: str, node: Any, msg: Any, timeout: float, sender: ProcessRef | None) -> Any:
        """Call the process registered as `name` on node `node` (resolved there); the typed
        errors of `GenServer.call`."""

    def send_named(self, name: str, node: Any, tag: int, msg: Any) -> bool:
        """Cast or send to the process registered as `name` on `node`; False when not connected."""

    async def whereis_named(self, name: str, node: Any, timeout: float) -> ProcessRef | None:
        """The ref registered as `name` on `node` (None if none); `NodeNotReachableError` or
        `CallTimeoutError` when it does not answer."""


class PeerInfo(Protocol):
    """A connected peer as the cluster reports it (`noex_lab.NodeInfo` is one)."""

    @property
    def id(self) -> NodeId: ...

    @property
    def status(self) -> str: ...

    @property
    def last_heartbeat_at(self) -> float: ...

    @property
    def process_count(self) -> int: ...

    @property
    def loop_lag_ms(self) -> float: ...

    @property
    def incarnation(self) -> int: ...


class ClusterPort(Protocol):
    """What the core asks of the cluster its node is part of (`node.distribution`)."""

    @property
    def status(self) -> str:
        """"starting", "running", "stopping" or "stopped"."""

    def get_nodes(self) -> Sequence[PeerInfo]:
        """The connected peers, this node excluded."""

    def on_node_up(self, callback: Callable[[PeerInfo], Any]) -> Callable[[], None]:
        """Call `callback(info)` when a peer connects; returns the unsubscribe function."""

    def on_node_down(self, callback: Callable[[NodeId, str], Any]) -> Callable[[], None]:
        """Call `callback(peer, reason)` when a peer is lost; returns the unsubscribe function."""

    def on_node_busy(self, callback: Callable[[PeerInfo], Any]) -> Callable[[], None]:
        """Call `callback(info)` when a peer's loop lags; returns the unsubscribe function."""

    async def spawn(self, behavior_name: str, node_id: NodeId | str, **options: Any) -> ProcessRef:
        """Start a registered behavior on `node_id` (`GenServer.start_remote`)."""

    def global_names(self) -> dict[str, ProcessRef]:
        """The cluster-wide names this node knows, with their owners."""


class FaultRules(Protocol):
    """The fault injection rules of a distributed node (`node.faults`, `noex_lab.testing`)."""

    def drop(self, *peers: NodeId | str, direction: str = "both", mode: str = "blackhole") -> None:
        """Cut the traffic to (`"out"`), from (`"in"`) or to and from (`"both"`) `peers` (a partition)."""

    def link(self, peer: NodeId | str, *, latency_ms: float = 0.0, jitter_ms: float = 0.0,
             loss: float = 0.0) -> None:
        """Shape what this node sends to `peer`: latency, jitter, loss (all zero: remove the rule)."""

    def heal(self, *peers: NodeId | str) -> None:
        """Remove the rules for `peers` (every rule when none is given)."""
