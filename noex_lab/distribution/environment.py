"""Where a node's distribution meets the operating system, as one replaceable object.

In production (`Distribution(..., environment=None)`) a node listens and dials with real TCP
sockets, detects failures with the liveness thread on its own UDP socket, and derives its key
with scrypt in a worker thread. A simulator (`noex_lab.sim`) passes an `Environment` instead:
in-memory byte streams between simulated hosts, heartbeats driven by the event loop, no thread.
The real handshake, framing, codec, `Connection`, membership and services run unchanged over it.
An environment also has a `clock` and an `entropy` (`core/clock.py`): the node it distributes is
built with them (`Node(clock=env.clock, entropy=env.entropy)`), so every time the runtime reads
and every random number it draws come from the environment (a simulation's virtual clock and
seed); `Distribution` refuses a node built with others.

The seam is crossed only when a node starts, when a connection is set up and when a node
stops: frames and messages never pass through it, so production pays nothing per message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio.abc

from ..core.clock import Clock, Entropy
from ..core.node_id import NodeId

if TYPE_CHECKING:
    from .liveness import PeerLiveness

__all__ = ["Environment", "Heartbeats", "Report"]

Report = Callable[[str, NodeId, "PeerLiveness"], None]


class Heartbeats(Protocol):
    """The failure detector a distribution uses (`liveness.LivenessMonitor` in production).

    It also reports its own freezes (SIGSTOP, a VM pause; in a simulation, `sim.pause`): the
    partition guard fences a node that did not turn for longer than `timeout_s`. `last_tick` is
    the source's last turn on its `monotonic` clock (real time for the liveness thread, virtual
    time in a simulation), `gaps` how many times it found it had not turned for that long."""

    timeout_s: float
    gaps: int

    @property
    def last_tick(self) -> float: ...
    def monotonic(self) -> float: ...
    def start(self) -> None: ...
    def watch(self, peer: NodeId, incarnation: int, peer_interval_s: float | None = None) -> None: ...
    def unwatch(self, peer: NodeId) -> None: ...
    def status(self, peer: NodeId) -> PeerLiveness | None: ...
    def peers(self) -> list[PeerLiveness]: ...


class Environment(Protocol):
    """The network, the failure detector, the key derivation, the clock and the randomness of one node."""

    clock: Clock
    entropy: Entropy

    async def listen(self, host: str, port: int) -> tuple[anyio.abc.Listener[Any], int]:
        """A listener on `host:port` (port 0: any free one) and the port it got."""
        ...

    async def connect(self, host: str, port: int) -> anyio.abc.ByteStream:
        """A byte stream to `host:port` (raises OSError when nobody listens there)."""
        ...

    def heartbeats(self, *, node_id: NodeId, incarnation: int, secret: bytes | None, interval_s: float,
                   miss_threshold: int, busy_threshold_s: float, process_count: Callable[[], int],
                   report: Report) -> Heartbeats:
        """The failure detector of the node `node_id`; `report` is called on the loop."""
        ...

    async def derive_key(self, secret: bytes) -> bytes:
        """`handshake.derive_key(secret)`, where the environment allows the work to run."""
        ...

    async def stop_heartbeats(self, heartbeats: Heartbeats) -> None:
        """Stop what `heartbeats()` made (the node is stopping)."""
        ...
