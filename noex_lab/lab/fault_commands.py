"""`%noex partition`, `%noex heal`, `%noex link`: network faults between the notebook's nodes.

This kernel's node changes its own rules directly; every other node gets them through the remote
operation `faults.set`, which `%noex local` / `%noex remote` nodes accept (they run with
`--allow-fault-injection`) and other nodes refuse unless started with it. A pair that includes
this kernel's node is cut by this node's rules alone, so it can always heal the others
(docs/reference/lab.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.node import Node
from ..core.node_id import NodeId
from ..distribution.faults import MODES, FaultControl, heal_nodes, partition_nodes
from .errors import LabError
from .reprs import Message, Table

if TYPE_CHECKING:
    from .session import LabSession


def _side(session: LabSession, text: str, kernel: Node) -> list[Node | NodeId]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise LabError(f"a side of the partition is empty: {text!r} (write NODE,NODE,...)")
    out: list[Node | NodeId] = []
    for name in names:
        node_id = session.resolve_node(name)
        out.append(kernel if node_id == kernel.id else node_id)
    return out


def _fault_nodes(session: LabSession) -> set[NodeId]:
    return session.fault_nodes


async def partition(session: LabSession, side_a: str, side_b: str, *, mode: str = "blackhole",
                    one_way: bool = False) -> Message:
    """Cut every link between the nodes of `side_a` and those of `side_b` ("A,B" and "C,D")."""
    if mode not in MODES:
        raise LabError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    kernel = session.distributed_node()
    a, b = _side(session, side_a, kernel), _side(session, side_b, kernel)
    touched = await partition_nodes(a, b, mode=mode, one_way=one_way, via=kernel)
    _fault_nodes(session).update(touched)
    arrow = "-/->" if one_way else "-/-"
    how = ("nothing crosses; each side sees the other down after the heartbeat timeout" if mode == "blackhole"
           else "connections closed at once")
    return Message(f"partition {side_a} {arrow} {side_b} ({mode}: {how}); %noex heal removes it", "ok")


async def heal(session: LabSession, specs: list[str]) -> Message:
    """Remove the fault rules of `specs` (default: every node this notebook gave rules, and its own)."""
    kernel = session.distributed_node()
    known = _fault_nodes(session)
    targets: list[Node | NodeId] = []
    if specs:
        for spec in specs:
            node_id = session.resolve_node(spec)
            targets.append(kernel if node_id == kernel.id else node_id)
    else:
        targets = [kernel, *sorted(n for n in known if n != kernel.id)]
    await heal_nodes(*targets, via=kernel)
    for target in targets:
        known.discard(target.id if isinstance(target, Node) else target)
    return Message(f"healed {len(targets)} node(s): their links are back (they reconnect within a second or so)",
                   "ok")


async def link(session: LabSession, spec: str, other: str | None, *, latency_ms: float, jitter_ms: float,
               loss: float) -> Message:
    """Shape the link between `spec` and `other` (default: this kernel's node), both directions."""
    kernel = session.distributed_node()
    ends: list[Node | NodeId] = []
    for text in (spec, other):
        node_id = kernel.id if text is None else session.resolve_node(text)
        ends.append(kernel if node_id == kernel.id else node_id)  # type: ignore[arg-type]
    x, y = (FaultControl(end, via=kernel) for end in ends)
    if x.id == y.id:
        raise LabError(f"a link needs two different nodes, not {x.id} twice")
    # the far end first: with a lossy or slow link of our own, the request would be slower
    for control, peer in sorted(((x, y.id), (y, x.id)), key=lambda pair: pair[0].id == kernel.id):
        await control.link(peer, latency_ms=latency_ms, jitter_ms=jitter_ms, loss=loss)
        _fault_nodes(session).add(control.id)
    if latency_ms == jitter_ms == loss == 0:
        return Message(f"link {x.id.name} <-> {y.id.name}: back to normal", "ok")
    return Message(f"link {x.id.name} <-> {y.id.name}: latency {latency_ms:g} ms + jitter 0..{jitter_ms:g} ms, "
                   f"loss {loss:.0%} each way (TCP keeps order: a lost segment delays what follows)", "ok")


async def rules_table(session: LabSession) -> Table:
    """The fault rules of this kernel's node and of every node this notebook gave rules."""
    kernel = session.distributed_node()
    rows: list[list[Any]] = []
    for node_id in [kernel.id, *sorted(n for n in _fault_nodes(session) if n != kernel.id)]:
        assert node_id is not None
        if node_id != kernel.id and node_id not in {info.id for info in kernel.get_nodes()}:
            rows.append([node_id.name, "(not connected to this node: cut off from it?)", "", "", "", "", ""])
            continue
        control = FaultControl(kernel if node_id == kernel.id else node_id, via=kernel)
        for peer, rule in sorted((await control.rules()).items()):
            rows.append([node_id.name, peer, rule.get("out", ""), rule.get("in", ""), rule.get("latency_ms", ""),
                         rule.get("jitter_ms", ""), rule.get("loss", "")])
    return Table(["node", "peer", "out cut", "in cut", "latency ms", "jitter ms", "loss"], rows,
                 title="fault rules")
