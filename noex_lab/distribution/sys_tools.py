"""`Sys`: OTP's `sys` for live processes, local or on any node of the cluster.

`Sys.suspend`, `Sys.resume`, `Sys.replace_state`, `Sys.statistics`, `Sys.get_status` and
`Sys.get_state` act on a process wherever it runs: a local one directly (`core/systools.py`),
a remote one through the remote operation `sys.request` on its node. Each returns a typed result.
`versions` answers `%noex upgrade NAME`: which process runs which version of a behavior.

`replace_state` on a remote process never ships code: the target node *holds* the process
between two messages and sends its state here, the function runs here, and the new state goes
back (`release`). The hold lasts at most the call's timeout; without a release (the caller
went away, the function was too slow) the process goes on with its state unchanged.

Remote operation `sys.request [op, args]` (the `sys` service), ops:
- `suspend [pid, creation, name, timeout]`, `resume [pid, creation, name]` -> `SuspendResult`
- `status [pid, creation, name]` -> `ProcessStatus` (the state itself only when it is a wire value)
- `statistics [pid, creation, name, enable (None | bool), timeout]` -> `[ProcessStatistics, [node, ...]]`
  (the nodes of its links: where its supervisor may run)
- `restarts [ref]` -> how often a supervisor on that node restarted the child `ref` (or None)
- `hold [pid, creation, name, lease, timeout]` -> `[hold_id, state, has_state, state_repr]`
- `release [hold_id, replace, state]` -> `[ref, behavior, status, queue_len, messages, state_repr, state, has_state]`
- `versions [name or None]` -> `[[ref, process name, behavior, class, version, status, detail], ...]`
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..core import systools
from ..core.errors import (
    BehaviorNotFoundError,
    InvalidArgumentError,
    NodeNotReachableError,
    NoexError,
    ProtocolError,
    ReplaceStateError,
    SerializationError,
)
from ..core.events import EventInfo
from ..core.node import Node, current_node
from ..core.node_id import NodeId
from ..core.process import Process
from ..core.refs import ProcessRef
from ..core.statem import MachineState
from ..core.systools import ProcessStatistics, ProcessStatus, SuspendResult
from ..core.timeouts import check_timeout
from ..core.upgrade import UpgradeResult, names_of, pending_upgrade, version_of
from .behaviors import BehaviorRegistry
from .codec import wire_type
from .introspection import (
    ProcessListing,
    ProcessState,
    TraceEvent,
    TraceHandle,
    find_process,
    local_state,
    locate,
    process_list,
    recent_events,
    short_repr,
    trace,
)
from .routing import RemoteRouter
from .service import Operation, Service

if TYPE_CHECKING:
    from .codec import Codec

for _cls in (SuspendResult, ProcessStatistics, ProcessStatus, UpgradeResult, MachineState):
    wire_type(_cls, name=f"noex_lab.{_cls.__name__}")

MAX_RESTART_LOOKUPS = 4  # nodes asked for a remote process's supervisor restarts, at most
VERSION_COLUMNS = ["ref", "name", "behavior", "class", "version", "status", "detail"]


# ----------------------------------------------------------------------------------- target side
def _watching_nodes(proc: Process, me: NodeId | None) -> list[NodeId]:
    """The other nodes whose processes link or monitor `proc`: where its supervisor may run
    (a DistributedSupervisor monitors its children)."""
    nodes: set[Any] = {r.node for r in proc.links}
    nodes |= {getattr(sink, "node_id", None) or getattr(sink, "node", None) for sink in proc.monitors.values()}
    return sorted((n for n in nodes if isinstance(n, NodeId) and n != me), key=str)


def _args(args: Any, n: int, what: str) -> list[Any]:
    if not isinstance(args, list) or len(args) != n:
        raise InvalidArgumentError(f"malformed {what} request")
    return args


def _where(args: list[Any]) -> tuple[int | None, int, str | None]:
    pid, creation, name = args[0], args[1], args[2]
    if not ((pid is None or type(pid) is int) and type(creation) is int and (name is None or isinstance(name, str))):
        raise InvalidArgumentError("malformed process address")
    return pid, creation, name


def version_rows(node: Node, name: str | None = None) -> list[list[Any]]:
    """Which process of behavior `name` (every named behavior when None) runs which version."""
    rows = []
    for proc in sorted(node.processes(), key=lambda p: p.pid):
        cls = proc.behavior
        for behavior in sorted(names_of(cls)):
            if name is not None and behavior != name:
                continue
            try:
                registered: type | None = BehaviorRegistry.get(behavior)
            except BehaviorNotFoundError:
                registered = None
            pending = pending_upgrade(proc)
            error = proc._sys.upgrade_error if proc._sys is not None else None
            if cls is registered:
                status, detail = "current", ""
            elif pending is not None:
                status, detail = "upgrading", f"to {version_of(pending)} at its next message (busy in a callback)"
            else:
                status = "old"
                detail = f"upgrade failed: {error}" if error else ""
                if not error and registered is not None:
                    detail = f"{version_of(registered)} is registered now"
            rows.append([proc.ref, proc.name, behavior, cls.__qualname__, version_of(cls), status, detail])
    return rows


class SysHandlers(Service):
    """The `sys.request` operation of one distributed node, and the holds it serves."""

    namespace = "sys"

    def __init__(self, node: Node, codec: Codec) -> None:
        self.node = node
        self.codec = codec
        self.holds: dict[int, tuple[NodeId, weakref.ref[Process]]] = {}

    def operations(self) -> Mapping[str, Operation]:
        return {"request": self.handle}

    def _encodable(self, value: Any) -> bool:
        try:
            self.codec.encode(value)
        except Exception:
            return False
        return True

    async def handle(self, peer: NodeId, request: Any) -> Any:
        if not (isinstance(request, list) and len(request) == 2 and isinstance(request[0], str)):
            raise InvalidArgumentError("malformed sys.request")
        op, args = request
        node = self.node
        if op == "suspend":
            a = _args(args, 4, op)
            proc = find_process(node, *_where(a))
            return await systools.suspend(proc, check_timeout(a[3]))
        if op == "resume":
            return systools.resume(find_process(node, *_where(_args(args, 3, op))))
        if op == "status":
            return self.status(find_process(node, *_where(_args(args, 3, op))))
        if op == "statistics":
            a = _args(args, 5, op)
            proc = find_process(node, *_where(a))
            if a[3] is not None and type(a[3]) is not bool:
                raise InvalidArgumentError("enable must be None, True or False")
            if a[3] is not None:
                await systools.set_statistics(proc, a[3], check_timeout(a[4]))
            return [systools.statistics(proc), _watching_nodes(proc, None)]
        if op == "restarts":
            ref = _args(args, 1, op)[0]
            return systools.restarts_of(node, ref) if isinstance(ref, ProcessRef) else None
        if op == "hold":
            a = _args(args, 5, op)
            proc = find_process(node, *_where(a))
            hold_id, state = await systools.hold(proc, check_timeout(a[3]), check_timeout(a[4]))
            self.holds[hold_id] = (peer, weakref.ref(proc))
            ok = self._encodable(state)
            return [hold_id, state if ok else None, ok, short_repr(state)]
        if op == "release":
            a = _args(args, 3, op)
            entry = self.holds.pop(a[0], None) if type(a[0]) is int else None
            held = entry[1]() if entry is not None and entry[0] == peer else None
            if held is None or not systools.release(held, a[0], a[2], replace=bool(a[1])):
                raise ReplaceStateError("the process was no longer held (its hold expired, or it exited); "
                                        "its state is unchanged")
            return local_state(held, self._encodable)
        if op == "versions":
            name = _args(args, 1, op)[0]
            if name is not None and not isinstance(name, str):
                raise InvalidArgumentError("a behavior name is a str")
            return version_rows(node, name)
        raise InvalidArgumentError(f"unknown sys.request operation {op[:40]!r}")

    def status(self, proc: Process) -> ProcessStatus:
        return systools.get_status(proc, short_repr, self._encodable)

    def peer_left(self, peer: NodeId, reason: str) -> None:
        for hold_id, (owner, ref) in list(self.holds.items()):
            if owner == peer:
                del self.holds[hold_id]
                proc = ref()
                if proc is not None:
                    systools.release(proc, hold_id, replace=False)


# ----------------------------------------------------------------------------------- caller side
def _resolve(target: ProcessRef | str, on: NodeId | str | None, node: Node | None
             ) -> tuple[Node, NodeId | None, int | None, int, str | None]:
    node = node or current_node()
    on_id = NodeId.parse(on) if isinstance(on, str) else on
    where, pid, creation, name = locate(node, target, on_id)
    return node, where, pid, creation, name


MARGIN_S = 0.1  # at most this much of a request's timeout is kept for the round trip


def _inner(timeout: float) -> float:
    """The time the target may take, so that its answer (or refusal) arrives within `timeout`."""
    return timeout - min(MARGIN_S, timeout * 0.2)


async def _rpc(node: Node, where: NodeId, op: str, args: list[Any], timeout: float) -> Any:
    router = node.router
    if not isinstance(router, RemoteRouter) or node.distribution is None:
        raise NodeNotReachableError(where, "this node is not distributed")
    return await router.rpc(where, "sys.request", [op, args], timeout)


class Sys:
    """Live process tools, like OTP's `sys` module; every function works for local and remote
    processes (a ref, a local or global name; `on=` looks a local name up on that node)."""

    @staticmethod
    async def suspend(target: ProcessRef | str, *, on: NodeId | str | None = None, node: Node | None = None,
                      timeout: float = 5.0) -> SuspendResult:
        """Stop handling messages at the next message boundary (they queue up) until `resume`.
        Returns once suspended (`CallTimeoutError` while it stays busy in one callback)."""
        timeout = check_timeout(timeout)
        node, where, pid, creation, name = _resolve(target, on, node)
        if where is None:
            return await systools.suspend(find_process(node, pid, creation, name), timeout)
        result: SuspendResult = await _rpc(node, where, "suspend", [pid, creation, name, _inner(timeout)], timeout)
        return result

    @staticmethod
    async def resume(target: ProcessRef | str, *, on: NodeId | str | None = None, node: Node | None = None,
                     timeout: float = 5.0) -> SuspendResult:
        """Let a suspended process handle its queued messages again."""
        timeout = check_timeout(timeout)
        node, where, pid, creation, name = _resolve(target, on, node)
        if where is None:
            return systools.resume(find_process(node, pid, creation, name))
        result: SuspendResult = await _rpc(node, where, "resume", [pid, creation, name], timeout)
        return result

    @staticmethod
    async def replace_state(target: ProcessRef | str, fn: Callable[[Any], Any], *, on: NodeId | str | None = None,
                            node: Node | None = None, timeout: float = 5.0) -> ProcessState:
        """Replace the state with `fn(state)` (sync or async) between two messages, like OTP's
        `sys:replace_state`; returns the new state. If `fn` raises, the state is unchanged and
        `ReplaceStateError` says why. For a remote process `fn` runs here, on its state sent
        over (so the state, old and new, must be wire values), while the process waits."""
        timeout = check_timeout(timeout)
        if not callable(fn):
            raise InvalidArgumentError(f"replace_state needs a function of the state, not {fn!r}")
        node, where, pid, creation, name = _resolve(target, on, node)
        if where is None:
            proc = find_process(node, pid, creation, name)
            await systools.replace_state(proc, fn, timeout)
            return local_state(proc)
        monotonic = node.clock.monotonic
        deadline = monotonic() + timeout  # the whole exchange ends within `timeout`
        hold_id, state, has_state, state_repr = await _rpc(
            node, where, "hold", [pid, creation, name, timeout, _inner(timeout)], timeout)

        async def release(replace: bool, new: Any = None) -> Any:
            remaining = max(deadline - monotonic(), 0.001)
            return await _rpc(node, where, "release", [hold_id, replace, new], remaining)

        async def give_up() -> None:  # (if this fails too, the hold's lease ends it)
            with contextlib.suppress(NoexError):
                await release(False)

        if not has_state:
            await give_up()
            raise ReplaceStateError(
                f"the state of that process on {where} is not a wire value ({state_repr[:200]}), so it cannot be "
                "sent here for the function; register its type with wire_type, or replace it from that node"
            )
        try:
            new = fn(state)
            if inspect.isawaitable(new):
                new = await new
        except Exception as exc:
            await give_up()
            err = ReplaceStateError(f"the state function raised {type(exc).__name__}: {exc}; the state is unchanged")
            raise err from exc
        if monotonic() >= deadline:
            await give_up()
            raise ReplaceStateError(f"the state function took longer than the timeout ({timeout:g} s), so the "
                                    "process went on; its state is unchanged")
        try:
            r = await release(True, new)
        except SerializationError as exc:
            await give_up()
            raise ReplaceStateError(f"the new state cannot be sent to {where}: {exc}; the state is unchanged") from exc
        if not isinstance(r, ProcessState):
            raise ProtocolError(f"node {where} answered a state replacement with {type(r).__name__}")
        return r

    @staticmethod
    async def get_status(target: ProcessRef | str, *, on: NodeId | str | None = None, node: Node | None = None,
                         timeout: float = 5.0) -> ProcessStatus:
        """Everything about a process at once (like OTP's `sys:get_status`), without disturbing it."""
        timeout = check_timeout(timeout)
        node, where, pid, creation, name = _resolve(target, on, node)
        if where is None:
            return systools.get_status(find_process(node, pid, creation, name), short_repr)
        result: ProcessStatus = await _rpc(node, where, "status", [pid, creation, name], timeout)
        return result

    @staticmethod
    async def statistics(target: ProcessRef | str, enable: bool | None = None, *, on: NodeId | str | None = None,
                         node: Node | None = None, timeout: float = 5.0) -> ProcessStatistics:
        """The process's statistics; `enable=True` turns the opt-in counters on (messages out,
        time in handlers: zero cost while off), `enable=False` off (like `sys:statistics`)."""
        timeout = check_timeout(timeout)
        if enable is not None and type(enable) is not bool:
            raise InvalidArgumentError(f"enable must be None, True or False, not {enable!r}")
        node, where, pid, creation, name = _resolve(target, on, node)
        if where is None:
            proc = find_process(node, pid, creation, name)
            if enable is not None:
                await systools.set_statistics(proc, enable, timeout)
            stats = systools.statistics(proc)
            linked = _watching_nodes(proc, node.id)
        else:
            stats, linked = await _rpc(node, where, "statistics", [pid, creation, name, enable, _inner(timeout)],
                                       timeout)
        if stats.restarts is None:
            for peer in [n for n in linked if n != where][:MAX_RESTART_LOOKUPS]:
                try:
                    restarts = (systools.restarts_of(node, stats.ref) if peer == node.id
                                else await _rpc(node, peer, "restarts", [stats.ref], timeout))
                except NoexError:
                    continue
                if restarts is not None:
                    return _with_restarts(stats, int(restarts))
        return stats

    @staticmethod
    async def get_state(target: ProcessRef | str, *, on: NodeId | str | None = None, node: Node | None = None,
                        timeout: float = 5.0) -> ProcessState:
        """The state (like `sys:get_state`, same as `%noex state`)."""
        from .introspection import get_state

        return await get_state(target, on=on, node=node, timeout=timeout)

    @staticmethod
    async def processes(where: NodeId | None = None, *, node: Node | None = None,
                        timeout: float = 5.0) -> ProcessListing:
        """The processes (`ProcessInfo`, by pid) and registered names of this node or of `where`."""
        return await process_list(where, node=node, timeout=timeout)

    @staticmethod
    async def events(n: int = 50, where: NodeId | None = None, *, node: Node | None = None,
                     timeout: float = 5.0) -> list[EventInfo]:
        """The last `n` events (`EventInfo`, oldest first) of this node or of `where`."""
        return await recent_events(n, where, node=node, timeout=timeout)

    @staticmethod
    async def trace(target: ProcessRef | str, on_event: Callable[[TraceEvent], None], on_end: Callable[[str], None],
                    *, seconds: float = 10.0, max_events: int = 1000, on: NodeId | str | None = None,
                    node: Node | None = None, timeout: float = 5.0) -> TraceHandle:
        """Trace a live process, local or remote (like `sys:trace`, same as `%noex trace`)."""
        return await trace(target, on_event, on_end, seconds=seconds, max_events=max_events, on=on, node=node,
                           timeout=timeout)


def _with_restarts(stats: ProcessStatistics, restarts: int) -> ProcessStatistics:
    import dataclasses

    return dataclasses.replace(stats, restarts=restarts)


async def versions(name: str | None, where: NodeId | None = None, *, node: Node | None = None,
                   timeout: float = 5.0) -> list[list[Any]]:
    """`version_rows` of this node (`where=None`) or of another node."""
    node = node or current_node()
    if where is None or where == node.id:
        return version_rows(node, name)
    result: list[list[Any]] = await _rpc(node, where, "versions", [name], timeout)
    return result


__all__ = ["Sys", "SysHandlers", "version_rows", "versions"]
