"""Fault injection inside the transport: drop, delay, partition and heal, deterministically.

Used by tests and tutorials. The rules are read by the event-loop side of the transport
and by the liveness thread, so every read and write takes a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from ..core.node_id import NodeId


class Faults:
    """Per-node fault rules towards chosen peers (all off by default)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocked: set[NodeId] = set()
        self._delay_s: dict[NodeId, float] = {}
        self.active = False  # any rule set; read without the lock on the hot path

    def drop(self, *peers: NodeId | str) -> None:
        """Silently drop all traffic (data and heartbeats) to and from these peers."""
        with self._lock:
            self._blocked.update(_ids(peers))
            self.active = True

    def delay(self, peer: NodeId | str, seconds: float) -> None:
        """Delay every outgoing data frame to `peer` by `seconds` (order is kept)."""
        if seconds < 0:
            raise ValueError("delay must be >= 0 seconds")
        with self._lock:
            pid = _ids([peer])[0]
            if seconds == 0:
                self._delay_s.pop(pid, None)
            else:
                self._delay_s[pid] = seconds
            self.active = bool(self._blocked or self._delay_s)

    def heal(self, *peers: NodeId | str) -> None:
        """Remove drop and delay rules for these peers (all peers when none are given)."""
        with self._lock:
            if not peers:
                self._blocked.clear()
                self._delay_s.clear()
            for pid in _ids(peers):
                self._blocked.discard(pid)
                self._delay_s.pop(pid, None)
            self.active = bool(self._blocked or self._delay_s)

    def is_blocked(self, peer: NodeId) -> bool:
        if not self.active:
            return False
        with self._lock:
            return peer in self._blocked

    def delay_for(self, peer: NodeId) -> float:
        if not self.active:
            return 0.0
        with self._lock:
            return self._delay_s.get(peer, 0.0)

    def blocked(self) -> set[NodeId]:
        with self._lock:
            return set(self._blocked)


def _ids(peers: Iterable[NodeId | str]) -> list[NodeId]:
    return [p if isinstance(p, NodeId) else NodeId.parse(p) for p in peers]


def _faults_of(node: Any) -> Faults:
    faults = getattr(node, "faults", None)
    if not isinstance(faults, Faults):
        raise ValueError(f"{node!r} is not distributed; it has no fault rules")
    return faults


def partition(side_a: Iterable[Any], side_b: Iterable[Any]) -> None:
    """Cut every link between the nodes of `side_a` and those of `side_b` (in this process)."""
    a, b = list(side_a), list(side_b)
    for x in a:
        _faults_of(x).drop(*[y.id for y in b])
    for y in b:
        _faults_of(y).drop(*[x.id for x in a])


def heal(*nodes: Any) -> None:
    """Remove every fault rule on these nodes."""
    for node in nodes:
        _faults_of(node).heal()
