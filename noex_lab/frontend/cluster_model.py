"""Who is in the cluster, as one node sees it: kept from that node's membership events and
reconciled with `node.get_nodes()`. The one model behind the notebook's `ClusterView` /
`ClusterTable` (lab) and `noex-lab top` / `demo`'s `ClusterWatch` (terminal)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..core.events import MEMBERSHIP_KINDS, NodeEvent
from ..core.node_id import NodeId
from ..core.router import PeerInfo


@dataclass
class Member:
    """One cluster member as the observer sees it."""

    id: NodeId
    status: str  # "up" | "busy" | "down"
    since: float  # wall clock of the last status change
    loop_lag_ms: float = 0.0
    process_count: int = 0
    last_heartbeat_at: float | None = None
    down_reason: str | None = None
    is_self: bool = False
    reachable: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id), "name": self.id.name, "status": self.status, "since": self.since,
            "loop_lag_ms": round(self.loop_lag_ms, 1), "process_count": self.process_count,
            "last_heartbeat_at": self.last_heartbeat_at, "down_reason": self.down_reason,
            "is_observer": self.is_self, "reachable": self.reachable,
        }


class MembershipModel:
    """The members by id; at most `keep_down` members that went down are remembered (None: all)."""

    def __init__(self, *, keep_down: int | None = None) -> None:
        self.members: dict[NodeId, Member] = {}
        self.keep_down = keep_down

    def apply(self, event: NodeEvent) -> Member | None:
        """Take a membership event (`node_up`, `node_down`, `node_busy`, `node_available`) into
        account; the member it changed, None for any other event."""
        peer = event.data.get("peer")
        if event.kind not in MEMBERSHIP_KINDS or not isinstance(peer, NodeId):
            return None
        if event.kind == "node_down":
            return self.set_status(peer, "down", event.at, down_reason=str(event.data.get("reason", "")))
        lag = event.data.get("loop_lag_ms")
        status = "busy" if event.kind == "node_busy" else "up"
        return self.set_status(peer, status, event.at, loop_lag_ms=None if lag is None else float(lag))

    def set_status(self, peer: NodeId, status: str, at: float, *, down_reason: str | None = None,
                   loop_lag_ms: float | None = None) -> Member:
        member = self.members.get(peer)
        if member is None:
            member = self.members[peer] = Member(peer, status, at)
        elif member.status != status or status == "down":
            member.status, member.since = status, at
        member.down_reason = down_reason if status == "down" else None
        if loop_lag_ms is not None:
            member.loop_lag_ms = loop_lag_ms
        if status == "down":
            member.process_count = 0
            self.members[peer] = self.members.pop(peer)  # the latest to go down last
            self._forget_old_downs()
        return member

    def sync(self, connected: Iterable[PeerInfo], now: float) -> None:
        """Reconcile with the peers connected right now (`node.get_nodes()`, the truth)."""
        peers = {info.id: info for info in connected}
        for peer, info in peers.items():
            member = self.members.get(peer)
            if member is None or member.status != info.status:
                member = self.set_status(peer, info.status, now)
            member.loop_lag_ms = info.loop_lag_ms
            member.process_count = info.process_count
            member.last_heartbeat_at = info.last_heartbeat_at
        for peer, member in list(self.members.items()):
            if not member.is_self and member.status != "down" and peer not in peers:
                self.set_status(peer, "down", now, down_reason="not connected")

    def down(self) -> list[Member]:
        """The members that went down, in the order they did."""
        return [m for m in self.members.values() if m.status == "down"]

    def _forget_old_downs(self) -> None:
        if self.keep_down is None:
            return
        down = self.down()
        for member in down[: max(0, len(down) - self.keep_down)]:
            del self.members[member.id]
