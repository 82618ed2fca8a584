"""Remote functions (OTP `rpc` / `erpc`, without running arbitrary code by name).

`@remote_function` puts a function into an allow-list under a name; `Rpc.call(node, name,
*args)` runs the function registered under that name **on that node**, with these arguments,
and returns its result. A peer can only run what the target registered: a name is looked up
in the allow-list, never imported or evaluated. Like `BehaviorRegistry`, the allow-list is
shared by every node of one OS process (the same code runs on all of them).

Remote operation: `rpc.call [name, args, timeout]` -> the result, or a typed error:
`RemoteFunctionNotFoundError`, `RemoteFunctionError` (the function raised: type, message,
traceback text), `CallTimeoutError` (it ran past `timeout`: it is cancelled on the target).
"""

from __future__ import annotations

import inspect
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, overload

import anyio

from ..core.errors import (
    CallTimeoutError,
    InvalidArgumentError,
    NodeNotReachableError,
    RemoteFunctionError,
    RemoteFunctionNotFoundError,
)
from ..core.named import MultiCallResult, gather, target_nodes
from ..core.node import Node, current_node
from ..core.node_id import NodeId
from ..core.timeouts import check_timeout
from .attached import require_distribution
from .service import Operation, Service

OP_RPC_CALL = "rpc.call"

F = TypeVar("F", bound=Callable[..., Any])

_lock = threading.Lock()
_functions: dict[str, Callable[..., Any]] = {}


@overload
def remote_function(fn: F, /) -> F: ...


@overload
def remote_function(*, name: str | None = None) -> Callable[[F], F]: ...


def remote_function(fn: Callable[..., Any] | None = None, /, *, name: str | None = None) -> Any:
    """Register a function (plain or `async def`) that peers may run with `Rpc.call`.

    `@remote_function` registers it under its `__name__`, `@remote_function(name="x")`
    under "x"; registering a name again replaces the function (notebooks re-run cells).
    The function is returned unchanged."""

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(func):
            raise InvalidArgumentError(f"@remote_function decorates a function, not {func!r}")
        key = name if name is not None else getattr(func, "__name__", None)
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError(f"a remote function name is a non-empty string, not {key!r}")
        with _lock:
            _functions[key] = func
        return func

    if fn is not None:
        return register(fn)
    return register


def remote_functions() -> list[str]:
    """The names registered with `@remote_function` in this OS process, sorted."""
    with _lock:
        return sorted(_functions)


def unregister_remote_function(name: str) -> None:
    """Take `name` off the allow-list (no-op if it is not on it)."""
    with _lock:
        _functions.pop(name, None)


async def run_function(node: Node, name: Any, args: Any, timeout: float) -> Any:
    """Run the registered function `name` here, as the target of `Rpc.call` (on this node's behalf)."""
    if not isinstance(name, str) or not isinstance(args, (list, tuple)):
        raise InvalidArgumentError("rpc.call takes a function name and a list of arguments")
    with _lock:
        func = _functions.get(name)
    if func is None:
        raise RemoteFunctionNotFoundError(name, node.id)
    try:
        with node.as_default(), anyio.fail_after(timeout):
            result = func(*args)
            if inspect.isawaitable(result):
                result = await result
    except TimeoutError as exc:
        if type(exc) is TimeoutError:
            raise CallTimeoutError(f"remote function {name!r} on {node.id}", timeout) from None
        raise _function_error(name, node, exc) from None
    except Exception as exc:
        raise _function_error(name, node, exc) from None
    return result


def _function_error(name: str, node: Node, exc: BaseException) -> RemoteFunctionError:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return RemoteFunctionError(name, node.id, type(exc).__name__, str(exc), text)


class RpcService(Service):
    """The `rpc` service: `rpc.call` runs a registered function for a peer."""

    namespace = "rpc"

    def __init__(self, node: Node) -> None:
        self.node = node

    def operations(self) -> Mapping[str, Operation]:
        return {"call": self.call}

    async def call(self, _peer: NodeId, args: Any) -> Any:
        name, fn_args, timeout = args
        return await run_function(self.node, name, fn_args, check_timeout(timeout))  # the timeout came from a peer


async def _call(node: Node, node_id: NodeId | None, name: str, args: tuple[Any, ...], timeout: float) -> Any:
    if node_id is None or node_id == node.id:
        return await run_function(node, name, list(args), timeout)
    if node.distribution is None:
        raise NodeNotReachableError(node_id, "this node is not distributed (call Cluster.start first)")
    return await require_distribution(node).router.rpc(node_id, OP_RPC_CALL, [name, list(args), timeout], timeout)


def _node_id(node: NodeId | str) -> NodeId:
    if isinstance(node, NodeId):
        return node
    if isinstance(node, str):
        try:
            return NodeId.parse(node)
        except ValueError as exc:
            raise InvalidArgumentError(f"bad node id {node!r}: {exc}") from None
    raise InvalidArgumentError(f"a node is a NodeId or 'name@host:port', not {node!r}")


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"a remote function name is a non-empty string, not {name!r}")


class Rpc:
    """Run functions registered with `@remote_function` on other nodes (OTP `erpc`)."""

    @staticmethod
    async def call(node: NodeId | str, name: str, *args: Any, timeout: float = 5.0) -> Any:
        """Run `name(*args)` on `node` (this node included) and return its result.

        Errors: `RemoteFunctionNotFoundError`, `RemoteFunctionError` (it raised),
        `CallTimeoutError` (no result within `timeout`; the function is cancelled there),
        `NodeNotReachableError`, `SerializationError` (an argument or the result cannot travel)."""
        timeout = check_timeout(timeout)
        _check_name(name)
        me = current_node()
        return await _call(me, _node_id(node), name, args, timeout)

    @staticmethod
    async def multicall(
        nodes: Iterable[NodeId | str] | None, name: str, *args: Any, timeout: float = 5.0,
    ) -> MultiCallResult:
        """`Rpc.call` on every node of `nodes` at once (None: this node and every connected
        peer); `replies, bad_nodes = ...`: each node's result, or its typed error, all within
        `timeout`."""
        timeout = check_timeout(timeout)
        _check_name(name)
        me = current_node()
        targets = target_nodes(me, nodes)

        async def one(node_id: NodeId | None) -> Any:
            return await _call(me, node_id, name, args, timeout)

        return await gather(targets, one)
