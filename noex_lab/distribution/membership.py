"""Membership: who is in the cluster, gossip to a full mesh, up / busy / down.

A peer is *up* while its connection is open and its liveness thread answers; *busy*
when it answers but its event loop has not turned for `busy_threshold_ms`; *down* when
its connection closes (at once), its heartbeats stop (after interval x misses), or it
says goodbye. A busy peer is never declared down.
"""

from __future__ import annotations

import inspect
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.node_id import NodeId
from . import protocol as p

if TYPE_CHECKING:
    from .cluster import Distribution
    from .connection import Connection
    from .liveness import PeerLiveness

DOWN_REASONS = ("connection_closed", "heartbeat_timeout", "graceful_shutdown")
MAX_DEPARTING = 1024
REDIAL_FOR_S = 3600.0  # a lost peer is redialed (slowly after 30 s) for an hour: partitions heal


@dataclass(frozen=True)
class NodeInfo:
    """A connected peer as `Cluster.get_nodes()` reports it."""

    id: NodeId
    status: str  # "up" | "busy"
    last_heartbeat_at: float
    process_count: int
    loop_lag_ms: float
    incarnation: int = 0

    def _repr_html_(self) -> str:
        from html import escape

        color = {"up": "#080", "busy": "#c80"}.get(self.status, "#888")
        return (
            f"<span style='color:{color}'>&#9679;</span> <code>{escape(str(self.id))}</code> "
            f"{escape(self.status)} lag={self.loop_lag_ms:.0f} ms processes={self.process_count}"
        )


@dataclass
class _Peer:
    conn: Connection
    status: str = "up"
    joined_at: float = 0.0


class Membership:
    """Tracks peers for one node and fires the node up / down / busy callbacks."""

    def __init__(self, dist: Distribution) -> None:
        self.dist = dist
        self.peers: dict[NodeId, _Peer] = {}
        self.up_callbacks: list[Callable[[NodeInfo], Any]] = []
        self.down_callbacks: list[Callable[[NodeId, str], Any]] = []
        self.busy_callbacks: list[Callable[[NodeInfo], Any]] = []
        self.seeds: list[NodeId] = []
        self.left: set[NodeId] = set()
        self._lost_at: dict[NodeId, float] = {}
        # incarnations that announced a graceful leave (kept after they are gone, bounded)
        self.departing: OrderedDict[tuple[NodeId, int], None] = OrderedDict()

    # ------------------------------------------------------------------ queries
    def info(self, peer: NodeId) -> NodeInfo | None:
        state = self.peers.get(peer)
        if state is None:
            return None
        live = self.dist.liveness.status(peer) if self.dist.liveness is not None else None
        return NodeInfo(
            id=peer, status=state.status,
            last_heartbeat_at=live.last_heartbeat_at if live is not None else state.joined_at,
            process_count=live.process_count if live is not None else 0,
            loop_lag_ms=live.loop_lag_ms if live is not None else 0.0,
            incarnation=state.conn.peer_incarnation,
        )

    def nodes(self) -> list[NodeInfo]:
        """Connected members, hidden observers excluded."""
        return [
            info for peer in sorted(self.peers)
            if not self.peers[peer].conn.peer_hidden and (info := self.info(peer)) is not None
        ]

    # ------------------------------------------------------------------ connection events
    def on_connected(self, conn: Connection) -> None:
        peer = conn.peer
        self.left.discard(peer)
        self._lost_at.pop(peer, None)
        self.peers[peer] = _Peer(conn, "up", time.time())
        if self.dist.liveness is not None:
            self.dist.liveness.watch(peer, conn.peer_incarnation, conn.peer_heartbeat_ms / 1000.0)
        members = self._member_list()
        conn.send([p.GOSSIP, members])
        if conn.peer_hidden:  # an observer: connected, never announced or listed
            self.dist.peer_joined(peer)
            return
        for other in self.peers.values():
            if other.conn is not conn:
                other.conn.send([p.GOSSIP, [[str(peer), conn.peer_incarnation]]])
        info = self.info(peer)
        self.dist.node.events.emit("node_up", peer=peer)
        for callback in list(self.up_callbacks):
            self._call(callback, info)
        self.dist.peer_joined(peer)

    def on_disconnected(self, conn: Connection) -> None:
        """The peer of `conn` left: when the connection ends, or earlier when a new incarnation of
        that node connects (the transport then calls this first). Runs once per connection."""
        if conn.departed:
            return
        conn.departed = True
        peer = conn.peer
        state = self.peers.get(peer)
        if state is None or state.conn is not conn:
            if peer not in self.peers:  # never a member connection; fail what waited on it
                self.dist.router.node_lost(conn)
            return
        del self.peers[peer]
        if self.dist.liveness is not None:
            self.dist.liveness.unwatch(peer)
        reason = "graceful_shutdown" if conn.goodbye_received else conn.close_reason
        self.dist.router.node_lost(conn)
        if conn.peer_hidden or self.dist.stopping:  # observers, and our own leaving, are not peer failures
            self.dist.peer_left(peer, reason)
            return
        self.dist.node.events.emit("node_down", peer=peer, reason=reason)
        for callback in list(self.down_callbacks):
            self._call(callback, peer, reason)
        self.dist.peer_left(peer, reason)
        if reason == "graceful_shutdown":
            self.left.add(peer)
        elif not self.dist.stopping:
            self._lost_at[peer] = time.monotonic()
            self.dist.transport.ensure_dialing(peer, self._wanted, give_up_after_s=REDIAL_FOR_S)

    def on_leaving(self, peer: NodeId, _args: Any) -> None:
        """`peer` begins a graceful leave: its processes are about to stop (it said so before
        stopping any of them, on the same connection as their exits)."""
        state = self.peers.get(peer)
        if state is None:
            return
        self.departing[(peer, state.conn.peer_incarnation)] = None
        if len(self.departing) > MAX_DEPARTING:
            self.departing.popitem(last=False)
        if not state.conn.peer_hidden:
            self.dist.node.events.emit("node_leaving", peer=peer)

    def is_departing(self, peer: NodeId, incarnation: int) -> bool:
        """Whether that incarnation of `peer` announced a graceful leave."""
        return (peer, incarnation) in self.departing

    def _wanted(self, peer: NodeId) -> bool:
        return not self.dist.stopping and peer not in self.left and peer not in self.peers

    def on_frame(self, conn: Connection, m: list[Any]) -> None:
        if m[0] == p.GOSSIP:
            self.on_gossip(m[1])
        elif m[0] == p.GOODBYE:
            conn.goodbye_received = True
            self.left.add(conn.peer)
            conn.close("graceful_shutdown")

    def on_gossip(self, entries: Any) -> None:
        if not isinstance(entries, list):
            return
        transport = self.dist.transport
        for entry in entries[:4096]:
            try:
                peer = NodeId.parse(entry[0])
            except (ValueError, TypeError, IndexError):
                continue
            if peer == self.dist.node_id or peer in self.peers or peer in self.left:
                continue
            transport.ensure_dialing(peer, self._wanted, give_up_after_s=REDIAL_FOR_S)

    def gossip_all(self) -> None:
        """Anti-entropy: tell every peer the whole member list."""
        members = self._member_list()
        for state in list(self.peers.values()):
            state.conn.send([p.GOSSIP, members])

    def _member_list(self) -> list[list[Any]]:
        me: list[list[Any]] = [] if self.dist.config.hidden else [[str(self.dist.node_id), self.dist.node.incarnation]]
        return me + [
            [str(peer), state.conn.peer_incarnation] for peer, state in self.peers.items()
            if not state.conn.peer_hidden
        ]

    # ------------------------------------------------------------------ liveness events
    def on_liveness(self, kind: str, peer: NodeId, live: PeerLiveness) -> None:
        state = self.peers.get(peer)
        if state is None or live.incarnation != state.conn.peer_incarnation:
            return
        if state.conn.peer_hidden:
            if kind == "down":
                state.conn.close("heartbeat_timeout")
            return
        if kind == "down":
            state.conn.close("heartbeat_timeout")
        elif kind == "busy" and state.status != "busy":
            state.status = "busy"
            info = self.info(peer)
            self.dist.node.events.emit("node_busy", peer=peer, loop_lag_ms=live.loop_lag_ms)
            for callback in list(self.busy_callbacks):
                self._call(callback, info)
        elif kind == "up" and state.status == "busy":
            state.status = "up"
            self.dist.node.events.emit("node_available", peer=peer, loop_lag_ms=live.loop_lag_ms)

    def _call(self, callback: Callable[..., Any], *args: Any) -> None:
        node = self.dist.node
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                node.run_callback_result(result, f"cluster callback {callback!r}")
        except Exception as exc:
            node.events.report_error(f"cluster callback {callback!r} raised", exc)
