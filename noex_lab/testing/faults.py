"""Faults a test injects: partitions between in-process nodes, kills, pauses of node processes.

Whatever a test breaks is repaired at teardown (paused processes continued, partitions healed),
so a failing test leaves no frozen process behind."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..core.errors import InvalidArgumentError
from ..core.node import Node
from .processes import NodeProcess

Target = Node | NodeProcess


class FaultInjector:
    """`partition(a, b)`, `heal()`, `await kill(x)`, `pause(p)`, `resume(p)` on in-process nodes
    (`Node`) and node processes (`NodeProcess`)."""

    def __init__(self) -> None:
        self._touched: list[Node] = []
        self._paused: list[NodeProcess] = []

    def partition(self, side_a: Iterable[Target], side_b: Iterable[Target]) -> None:
        """Cut every link between `side_a` and `side_b`: data and heartbeats are dropped, so each
        side sees the other down after the heartbeat timeout. A node process cannot be told to
        drop traffic, so every pair needs an in-process node on at least one side (which then
        drops the traffic both ways)."""
        a, b = list(side_a), list(side_b)
        for x in a:
            for y in b:
                if isinstance(x, Node):
                    self._drop(x, y)
                if isinstance(y, Node):
                    self._drop(y, x)
                if not isinstance(x, Node) and not isinstance(y, Node):
                    raise InvalidArgumentError(
                        f"cannot partition {_label(x)} from {_label(y)}: both are node processes; "
                        "put an in-process node on one side"
                    )

    def _drop(self, node: Node, peer: Target) -> None:
        peer_id = peer.id
        if node.faults is None or peer_id is None:
            raise InvalidArgumentError(f"{_label(node)} and {_label(peer)} must both be cluster nodes")
        node.faults.drop(peer_id)
        if node not in self._touched:
            self._touched.append(node)

    def heal(self, *nodes: Node) -> None:
        """Remove the fault rules of `nodes` (of every node this injector partitioned by default)."""
        for node in nodes or tuple(self._touched):
            if node.faults is not None:
                node.faults.heal()

    async def kill(self, target: Target) -> None:
        """A crash: `node.kill()` for an in-process node, SIGKILL for a node process."""
        if isinstance(target, Node):
            await target.kill()
        else:
            target.kill()

    def pause(self, proc: NodeProcess) -> None:
        """Freeze a node process (SIGSTOP): its connections stay open, it answers nothing."""
        if not isinstance(proc, NodeProcess):
            raise InvalidArgumentError(f"only node processes can be paused, not {proc!r}")
        proc.pause()
        self._paused.append(proc)

    def resume(self, proc: NodeProcess) -> None:
        proc.resume()
        if proc in self._paused:
            self._paused.remove(proc)

    def restore(self) -> None:
        """Teardown: continue paused processes and heal every partition this injector made."""
        for proc in self._paused:
            proc.resume()
        self._paused.clear()
        for node in self._touched:
            if node.running and node.faults is not None:
                node.faults.heal()
        self._touched.clear()


def _label(target: Any) -> str:
    return str(getattr(target, "id", None) or target)
