"""Membership: who is in the cluster, gossip to a full mesh, up / busy / down.

A peer is *up* while its connection is open and its liveness thread answers; *busy*
when it answers but its event loop has not turned for `busy_threshold_ms`; *down* when
its connection closes (at once), its heartbeats stop (after interval x misses), or it
says goodbye. A busy peer is never declared down.
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from ..core.node_id import NodeId
from . import protocol as p
from .transport import MAX_CONNECTIONS

# Node transitions (up, down, busy, available) at INFO: they are the event stream's too, and the
# notebook's event log and `noex-lab top` (which show WARNING records) list those already.
log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .cluster import Distribution
    from .connection import Connection
    from .liveness import PeerLiveness

log = logging.getLogger(__name__)

MAX_DEPARTING = 1024
MAX_MEMBERS = MAX_CONNECTIONS  # connected peers plus gossiped candidates
GOSSIP_DIALS_PER_S = 10.0  # new dials to gossiped members, on average ...
GOSSIP_DIAL_BURST = 16  # ... in bursts of at most this many
GOSSIP_DIALS_AT_ONCE = 8
GOSSIP_FIRST_RETRY_S = 0.25  # a failed candidate is retried after this, then twice as long each time
GOSSIP_ATTEMPTS = 3
# A gossiped member whose id sorts lower than ours is expected to dial us (it learns about us at
# the same moment, and its dial would win the tie-break anyway): we dial it only if it has not
# connected after this long. One handshake per pair instead of two while a cluster forms.
# (Not for a hidden node, e.g. `noex-lab top`: members never learn of it, so it dials them all.)
GOSSIP_DEFER_TO_LOWER_S = 1.0
GOSSIP_FORGET_S = 60.0
MAX_GIVEN_UP = 4096
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
class _Candidate:
    """A member some peer listed that this node is not connected to (yet): only hearsay."""

    next_at: float  # monotonic time of its next dial
    delay: float = GOSSIP_FIRST_RETRY_S
    attempts: int = 0
    dialing: bool = False


@dataclass
class _Peer:
    conn: Connection
    status: str = "up"
    joined_at: float = 0.0


def _node_info(peer: NodeId, state: _Peer, live: PeerLiveness | None) -> NodeInfo:
    return NodeInfo(
        id=peer, status=state.status,
        last_heartbeat_at=live.last_heartbeat_at if live is not None else state.joined_at,
        process_count=live.process_count if live is not None else 0,
        loop_lag_ms=live.loop_lag_ms if live is not None else 0.0,
        incarnation=state.conn.peer_incarnation,
    )


class Membership:
    """Tracks peers for one node and fires the node up / down / busy callbacks."""

    def __init__(self, dist: Distribution) -> None:
        self.dist = dist
        self.clock = dist.node.clock
        self.rng = dist.node.entropy.random  # retry jitter, the gossip rotation
        self.peers: dict[NodeId, _Peer] = {}
        self.up_callbacks: list[Callable[[NodeInfo], Any]] = []
        self.down_callbacks: list[Callable[[NodeId, str], Any]] = []
        self.busy_callbacks: list[Callable[[NodeInfo], Any]] = []
        self.seeds: list[NodeId] = []
        self.left: set[NodeId] = set()
        self._lost_at: dict[NodeId, float] = {}
        # incarnations that announced a graceful leave (kept after they are gone, bounded)
        self.departing: OrderedDict[tuple[NodeId, int], None] = OrderedDict()
        self._candidates: OrderedDict[NodeId, _Candidate] = OrderedDict()
        self._given_up: OrderedDict[NodeId, float] = OrderedDict()  # candidate -> ignored until (monotonic)
        self._dialing = 0  # candidate dials in flight
        self._tokens = float(GOSSIP_DIAL_BURST)  # dial_candidates' bucket
        self._wake: anyio.Event | None = None
        self._gossip_turns: list[NodeId] = []  # peers still to be told in this rotation

    # ------------------------------------------------------------------ queries
    def info(self, peer: NodeId) -> NodeInfo | None:
        state = self.peers.get(peer)
        if state is None:
            return None
        return _node_info(peer, state, self.dist.liveness.status(peer) if self.dist.liveness is not None else None)

    def nodes(self) -> list[NodeInfo]:
        """Connected members, hidden observers excluded. (The liveness thread is asked once for
        all of them: this runs on every join, in the distributed supervisor's bookkeeping.)"""
        lives = {live.peer: live for live in self.dist.liveness.peers()} if self.dist.liveness is not None else {}
        nodes = []
        for peer in sorted(self.peers):
            state = self.peers[peer]
            if state.conn.peer_hidden:
                continue
            nodes.append(_node_info(peer, state, lives.get(peer)))
        return nodes

    def member_count(self) -> int:
        """How many members are connected (`len(nodes())`, without building their records)."""
        return sum(1 for state in self.peers.values() if not state.conn.peer_hidden)

    # ------------------------------------------------------------------ connection events
    def on_connected(self, conn: Connection) -> None:
        peer = conn.peer
        self.left.discard(peer)
        self._lost_at.pop(peer, None)
        self._given_up.pop(peer, None)
        candidate = self._candidates.get(peer)
        heard = candidate is not None  # a member some peer listed to us: it is known around already
        if candidate is not None and not candidate.dialing:
            del self._candidates[peer]
        self.peers[peer] = _Peer(conn, "up", self.clock.time())
        if self.dist.liveness is not None:
            self.dist.liveness.watch(peer, conn.peer_incarnation, conn.peer_heartbeat_ms / 1000.0)
        members = self._member_list()
        conn.send([p.GOSSIP, members])
        if conn.peer_hidden:  # an observer: connected, never announced or listed
            self.dist.peer_joined(peer)
            return
        if not heard:
            # New to this part of the cluster (it came to us first, e.g. as its seed): tell every
            # peer at once. A member we heard of from a peer's list was announced by whoever it
            # joined through, and that node's later peers get its full list, so announcing it
            # again is redundant: when every node announced every new connection, each received
            # O(n^2) announcements while a mesh of n formed (~480 per node for 32 nodes).
            # Anti-entropy (`gossip_round`) repairs what an announcement missed.
            announcement = [p.GOSSIP, [[str(peer), conn.peer_incarnation]]]
            for other in self.peers.values():
                if other.conn is not conn:
                    other.conn.send(announcement)
        info = self.info(peer)
        self._log("node_up", peer, "")
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
        self._log("node_down", peer, f": {reason}")
        self.dist.node.events.emit("node_down", peer=peer, reason=reason)
        for callback in list(self.down_callbacks):
            self._call(callback, peer, reason)
        self.dist.peer_left(peer, reason)
        if reason == "graceful_shutdown":
            self.left.add(peer)
        elif not self.dist.stopping:
            self._lost_at[peer] = self.clock.monotonic()
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
        """Members a peer lists become candidates to dial (`dial_candidates` paces them); the
        members and candidates together are at most MAX_MEMBERS."""
        if not isinstance(entries, list):
            return
        transport = self.dist.transport
        now = self.clock.monotonic()
        added = False
        for entry in entries[:MAX_MEMBERS]:
            if len(self.peers) + len(self._candidates) >= MAX_MEMBERS:
                break
            try:
                peer = NodeId.parse(entry[0])
            except (ValueError, TypeError, IndexError, KeyError):
                continue
            if (peer == self.dist.node_id or peer in self.peers or peer in self.left or peer in self._candidates
                    or peer in transport.conns or peer in transport.dial_loops or self._given_up.get(peer, 0.0) > now):
                continue
            # it is the one to dial (GOSSIP_DEFER_TO_LOWER_S), unless we are hidden: nobody
            # learns of a hidden node, so nobody would dial it
            defer = not self.dist.config.hidden and peer < self.dist.node_id
            self._candidates[peer] = _Candidate(now + GOSSIP_DEFER_TO_LOWER_S if defer else now)
            added = True
        if added and self._wake is not None:
            self._wake.set()

    async def dial_candidates(self) -> None:
        """Dial gossiped members, never a storm: GOSSIP_DIALS_AT_ONCE at a time at most,
        GOSSIP_DIALS_PER_S failed dials on average (bursts of GOSSIP_DIAL_BURST), each candidate
        with exponential back-off, dropped after GOSSIP_ATTEMPTS failed dials and then ignored in
        gossip for GOSSIP_FORGET_S. A dial that reaches a member gives its token back: a storm is
        of dials to nobody (made-up members cost a failed dial each), while a real member ends in
        a connection (at most MAX_CONNECTIONS of them), so a large cluster meshes at the pace of
        its handshakes, not of the bucket."""
        self._tokens, refilled = float(GOSSIP_DIAL_BURST), self.clock.monotonic()
        async with anyio.create_task_group() as tg:
            while not self.dist.stopping:
                self._wake = anyio.Event()
                now = self.clock.monotonic()
                self._tokens = min(float(GOSSIP_DIAL_BURST), self._tokens + (now - refilled) * GOSSIP_DIALS_PER_S)
                refilled = now
                waiting = [(c.next_at, peer) for peer, c in self._candidates.items() if not c.dialing]
                due = min(waiting, default=None)
                if due is not None and due[0] <= now and self._tokens >= 1 and self._dialing < GOSSIP_DIALS_AT_ONCE:
                    self._tokens -= 1
                    self._dialing += 1
                    self._candidates[due[1]].dialing = True
                    tg.start_soon(self._dial_candidate, due[1])
                    continue
                if due is None or self._dialing >= GOSSIP_DIALS_AT_ONCE:
                    wait = 60.0  # until a gossip or a finished dial wakes it
                else:
                    wait = max(due[0] - now, (1 - self._tokens) / GOSSIP_DIALS_PER_S, 0.001)
                with anyio.move_on_after(wait):
                    await self._wake.wait()

    async def _dial_candidate(self, peer: NodeId) -> None:
        connected = False
        try:
            connected = await self.dist.transport.dial(peer)
        finally:
            self._dialing -= 1
            if connected:  # a real member: not part of a storm (see dial_candidates)
                self._tokens = min(float(GOSSIP_DIAL_BURST), self._tokens + 1)
            if self._wake is not None:
                self._wake.set()
        candidate = self._candidates.get(peer)
        if candidate is None:
            return
        candidate.dialing = False
        if connected or not self._wanted(peer):
            del self._candidates[peer]
            return
        candidate.attempts += 1
        now = self.clock.monotonic()
        if candidate.attempts >= GOSSIP_ATTEMPTS:
            del self._candidates[peer]
            self._given_up[peer] = now + GOSSIP_FORGET_S
            if len(self._given_up) > MAX_GIVEN_UP:
                self._given_up.popitem(last=False)
            log.debug("gave up dialing gossiped member %s after %d attempts", peer, candidate.attempts)
            return
        candidate.next_at = now + candidate.delay * self.rng.uniform(0.5, 1.5)
        candidate.delay *= 2

    def gossip_round(self) -> None:
        """Anti-entropy: the whole member list to one peer per round, peers taken in turn (a
        shuffled rotation). Each node so sends and (on average) receives one list per round:
        its idle cost grows linearly with the cluster, not with its square as when every node
        told every peer each round. Joins do not wait for it: `on_connected` announces a member
        new to this node to every peer at once; this only repairs what an announcement missed."""
        while self._gossip_turns:
            state = self.peers.get(self._gossip_turns.pop())
            if state is not None:
                state.conn.send([p.GOSSIP, self._member_list()])
                return
        self._gossip_turns = list(self.peers)
        self.rng.shuffle(self._gossip_turns)
        if self._gossip_turns:
            self.gossip_round()

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
            self._log("node_busy", peer, f": its event loop has not turned for {live.loop_lag_ms:.0f} ms")
            self.dist.node.events.emit("node_busy", peer=peer, loop_lag_ms=live.loop_lag_ms)
            for callback in list(self.busy_callbacks):
                self._call(callback, info)
        elif kind == "up" and state.status == "busy":
            state.status = "up"
            self._log("node_available", peer, f" again (loop lag {live.loop_lag_ms:.0f} ms)")
            self.dist.node.events.emit("node_available", peer=peer, loop_lag_ms=live.loop_lag_ms)

    def _log(self, event: str, peer: NodeId, detail: str) -> None:
        """One INFO line per transition, e.g. `app1@...: node app2@... down: heartbeat_timeout`."""
        what = event.removeprefix("node_")
        log.info("%s: node %s %s%s", self.dist.node_id, peer, what, detail,
                 extra={"noex_node": str(self.dist.node_id), "noex_peer": str(peer), "noex_event": event})

    def _call(self, callback: Callable[..., Any], *args: Any) -> None:
        node = self.dist.node
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                node.run_callback_result(result, f"cluster callback {callback!r}")
        except Exception as exc:
            node.events.report_error(f"cluster callback {callback!r} raised", exc)
