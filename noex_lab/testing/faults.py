"""Faults a test injects: partitions and slow links between nodes, kills, pauses of node processes.

Whatever a test breaks is repaired at teardown (paused processes continued, partitions healed),
so a failing test leaves no frozen process behind."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..core.errors import InvalidArgumentError
from ..core.node import Node
from ..core.node_id import NodeId
from ..distribution.faults import MODES, heal_nodes, partition_nodes
from .processes import NodeProcess

Target = Node | NodeProcess


class FaultInjector:
    """`partition(a, b)`, `link(a, b, ...)`, `heal()`, `await kill(x)`, `pause(p)`, `resume(p)` on
    in-process nodes (`Node`) and node processes (`NodeProcess`); `await apartition(...)` and
    `await aheal()` also set the rules of node processes (see `partition_nodes`)."""

    def __init__(self) -> None:
        self._touched: list[Node] = []
        self._paused: list[NodeProcess] = []
        self._remote: list[tuple[NodeId, Node]] = []  # node processes given rules, and through which node

    def partition(self, side_a: Iterable[Target], side_b: Iterable[Target], *, mode: str = "blackhole",
                  one_way: bool = False) -> None:
        """Cut every link between `side_a` and `side_b` like a pulled cable (`mode="blackhole"`:
        nothing crosses, each side sees the other down after the heartbeat timeout) or with a
        reset (`mode="reset"`: connections close at once). `one_way=True` cuts only what `side_a`
        sends (`side_b` stops hearing it). Synchronous, so every pair needs an in-process node on
        at least one side (its rules cut the link); `apartition` also reaches node processes."""
        if mode not in MODES:
            raise InvalidArgumentError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        a, b = list(side_a), list(side_b)
        for x in a:
            for y in b:
                if not isinstance(x, Node) and not isinstance(y, Node):
                    raise InvalidArgumentError(
                        f"cannot partition {_label(x)} from {_label(y)}: both are node processes; "
                        "put an in-process node on one side, or use `await apartition(...)` "
                        "(the node processes need --allow-fault-injection)"
                    )
        for x in a:
            for y in b:
                if isinstance(x, Node):
                    self._drop(x, y, "out" if one_way else "both", mode)
                if isinstance(y, Node):
                    self._drop(y, x, "in" if one_way else "both", mode)

    def _drop(self, node: Node, peer: Target, direction: str, mode: str) -> None:
        peer_id = peer.id
        if node.faults is None or peer_id is None:
            raise InvalidArgumentError(f"{_label(node)} and {_label(peer)} must both be cluster nodes")
        node.faults.drop(peer_id, direction=direction, mode=mode)
        if node not in self._touched:
            self._touched.append(node)

    def link(self, a: Node, b: Target, *, latency_ms: float = 0.0, jitter_ms: float = 0.0,
             loss: float = 0.0) -> None:
        """Shape the link between `a` (in-process) and `b` both ways: latency, jitter, loss (see
        `Faults.link`); on `b` too when it is in-process."""
        for node, peer in ((a, b), (b, a)):
            if isinstance(node, Node):
                if node.faults is None or peer.id is None:
                    raise InvalidArgumentError(f"{_label(node)} and {_label(peer)} must both be cluster nodes")
                node.faults.link(peer.id, latency_ms=latency_ms, jitter_ms=jitter_ms, loss=loss)
                if node not in self._touched:
                    self._touched.append(node)

    async def apartition(self, side_a: Iterable[Target], side_b: Iterable[Target], *, mode: str = "blackhole",
                         one_way: bool = False, via: Node | None = None) -> None:
        """`partition` for any nodes: node processes get their rules through the remote operation
        `faults.set` from `via` (an in-process node; default the current one), which they refuse
        (`NotPermittedError`) unless started with --allow-fault-injection."""
        from ..core.node import current_node

        via = via or current_node()
        a = [_id_or_node(t) for t in side_a]
        b = [_id_or_node(t) for t in side_b]
        touched = await partition_nodes(a, b, mode=mode, one_way=one_way, via=via)
        local = {n.id: n for n in (*a, *b) if isinstance(n, Node)}
        for node_id in touched:
            if node_id in local:
                if local[node_id] not in self._touched:
                    self._touched.append(local[node_id])
            elif node_id == via.id:
                if via not in self._touched:
                    self._touched.append(via)
            elif (node_id, via) not in self._remote:
                self._remote.append((node_id, via))

    async def aheal(self) -> None:
        """Remove every rule this injector set, on in-process nodes and node processes."""
        self.heal()
        remote, self._remote = self._remote, []
        for node_id, via in remote:
            if via.running:
                await heal_nodes(node_id, via=via)

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


def _id_or_node(target: Target) -> Node | NodeId:
    if isinstance(target, Node):
        return target
    if target.id is None:
        raise InvalidArgumentError(f"{_label(target)} has not started yet (it has no node id)")
    return target.id


def _label(target: Any) -> str:
    return str(getattr(target, "id", None) or target)
