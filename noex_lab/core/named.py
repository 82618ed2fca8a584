"""`(name, node_id)` targets (OTP `{Name, Node}`) and calls to one locally registered name on
many nodes at once (OTP `gen_server:multi_call` and `abcast`).

A `(name, node_id)` target names the process registered as `name` in the local `Registry` of
node `node_id`; the name is resolved on that node, when the message gets there (a system
request through the router), never from a replica here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio

from .errors import InvalidArgumentError, NodeNotReachableError, NoexError, ServerNotRunningError
from .node_id import NodeId
from .process import CAST
from .reasons import NOPROC
from .timeouts import check_timeout

if TYPE_CHECKING:
    from .node import Node


def split_named(target: tuple[Any, ...]) -> tuple[str, NodeId]:
    """`target` as `(name, NodeId)`; `InvalidArgumentError` unless it is a non-empty name and a
    node id (a `NodeId` or its `name@host:port` text)."""
    if len(target) != 2 or not isinstance(target[0], str) or not target[0]:
        raise InvalidArgumentError(
            f"a named target is (registered_name, node_id), e.g. ('db', 'app2@10.0.0.2:4369'), not {target!r}"
        )
    name, node_id = target
    if isinstance(node_id, NodeId):
        return name, node_id
    if isinstance(node_id, str):
        try:
            return name, NodeId.parse(node_id)
        except ValueError as exc:
            raise InvalidArgumentError(f"bad node id in target {target!r}: {exc}") from None
    raise InvalidArgumentError(f"the node of a named target is a NodeId or 'name@host:port', not {node_id!r}")


class MultiCallResult(NamedTuple):
    """What `GenServer.multi_call` and `Rpc.multicall` return: `replies, bad_nodes = result`.

    `replies` maps each node that answered to its reply; `bad_nodes` maps each node that did
    not to the typed error saying why (`NodeNotReachableError`, `ServerNotRunningError`,
    `CallTimeoutError`, `CallError`, ...). Both keep the order the nodes were given in. The
    key of this node is its `NodeId` (None while it is not distributed)."""

    replies: dict[NodeId | None, Any]
    bad_nodes: dict[NodeId | None, NoexError]


def target_nodes(node: Node, nodes: Iterable[NodeId | str] | None) -> list[NodeId | None]:
    """`nodes` parsed and without repeats; None means this node and every connected peer
    (hidden observers excluded), as OTP's `[node() | nodes()]`."""
    if nodes is None:
        return [node.id, *(info.id for info in node.get_nodes())]
    if isinstance(nodes, (str, NodeId)):
        raise InvalidArgumentError(f"nodes= is a list of node ids, not one node id ({nodes!r}); write [{nodes!r}]")
    found: list[NodeId | None] = []
    for item in nodes:
        if isinstance(item, NodeId):
            node_id = item
        elif isinstance(item, str):
            try:
                node_id = NodeId.parse(item)
            except ValueError as exc:
                raise InvalidArgumentError(f"bad node id {item!r} in nodes=: {exc}") from None
        else:
            raise InvalidArgumentError(f"nodes= holds node ids (NodeId or 'name@host:port'), not {item!r}")
        if node_id not in found:
            found.append(node_id)
    return found


async def gather(
    targets: list[NodeId | None], one: Any,
) -> MultiCallResult:
    """Run `await one(node_id)` for every target at once; each result or typed error in its slot."""
    results: dict[NodeId | None, Any] = {}
    errors: dict[NodeId | None, NoexError] = {}

    async def run(node_id: NodeId | None) -> None:
        try:
            results[node_id] = await one(node_id)
        except NoexError as exc:
            errors[node_id] = exc

    async with anyio.create_task_group() as tg:
        for node_id in targets:
            tg.start_soon(run, node_id)
    return MultiCallResult(
        {n: results[n] for n in targets if n in results}, {n: errors[n] for n in targets if n in errors}
    )


async def multi_call(
    node: Node, name: str, msg: Any, nodes: Iterable[NodeId | str] | None, timeout: float,
) -> MultiCallResult:
    """`GenServer.multi_call` on `node`: every node's reply, or why it gave none, within `timeout`."""
    timeout = check_timeout(timeout)
    check_name(name)
    targets = target_nodes(node, nodes)

    async def one(node_id: NodeId | None) -> Any:
        if node_id is None or node_id == node.id:
            ref = node.names.whereis(name)
            if ref is None:
                raise ServerNotRunningError((name, node.id), NOPROC)
            return await node.call(ref, msg, timeout)
        return await node.call((name, node_id), msg, timeout)

    return await gather(targets, one)


def abcast(node: Node, name: str, msg: Any, nodes: Iterable[NodeId | str] | None) -> None:
    """`GenServer.abcast` on `node`: cast to `name` on every node, without waiting or failing."""
    check_name(name)
    for node_id in target_nodes(node, nodes):
        if node_id is None or node_id == node.id:
            ref = node.names.whereis(name)
            if ref is not None:
                node.cast(ref, msg)
        elif node.router is not None:
            node.router.send_named(name, node_id, CAST, msg)


def check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"a registered name is a non-empty string, not {name!r}")


def not_distributed(node_id: NodeId) -> NodeNotReachableError:
    return NodeNotReachableError(node_id, "this node is not distributed (call Cluster.start first)")
