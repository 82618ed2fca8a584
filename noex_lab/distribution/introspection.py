"""Looking into live processes on any node: state (like OTP's `sys:get_state`), tracing
(like `sys:trace`), process lists and recent events, as system requests.

Every value that crosses the wire here is plain data (refs, strings, numbers); a process's
state is sent as its `repr` and, when it is a wire value, also as itself.

Remote operations (the `inspect` service, on every distributed node):

- `inspect.state [pid, creation, name]` -> a `ProcessState` (a wire type)
- `inspect.trace_start [trace_id, pid, creation, name, seconds, max_events]` -> `[ref, behavior, state_repr]`;
  afterwards the target sends `inspect.trace_event [trace_id, at, kind, msg_repr, state_repr]`
  notifications and one `inspect.trace_end [trace_id, why]`. A trace lasts a finite `seconds`
  (at most MAX_TRACE_SECONDS) and `max_events` (at most MAX_TRACE_EVENTS); a node runs at most
  MAX_TRACES_PER_PEER traces for each requesting node (`TooManyTracesError` beyond), so a peer
  cannot turn one message into an unbounded number of notifications.
- `inspect.trace_stop [trace_id]`
- `inspect.processes None` -> `[[ProcessInfo, ...], {name: ref}]` (a `ProcessListing`'s fields);
  `inspect.processes {"limit": N, "offset": O, "sort": S}` -> `[[ProcessInfo, ...], {name: ref}, count]`:
  one page of them (`node.snapshot(limit=...)`) and how many processes run there in all
- `inspect.events n` -> `[EventInfo, ...]`
- `inspect.peers None` -> `[[node_id, status], ...]`: the peers this node is connected to (a
  notebook's topology view draws a link two peers do not share as cut)
"""

from __future__ import annotations

import itertools
import reprlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio

from ..core.errors import (
    InvalidArgumentError,
    NodeNotReachableError,
    NotRegisteredError,
    ProtocolError,
    SerializationError,
    ServerNotRunningError,
    TooManyTracesError,
)
from ..core.events import EventInfo
from ..core.messages import Down
from ..core.node import Node, current_node
from ..core.node_id import NodeId
from ..core.process import Process
from ..core.reasons import NOPROC
from ..core.refs import ProcessRef
from ..core.snapshot import ProcessInfo, check_page
from ..core.timeouts import check_timeout
from .attached import distribution_of
from .service import Operation, Service

if TYPE_CHECKING:
    from ..core._backend import Cancellable
    from .codec import Codec
    from .routing import RemoteRouter

REPR_LIMIT = 2000
SETTLE_S = 1.0
MAX_TRACE_EVENTS = 10_000  # events one trace reports at most
MAX_TRACE_SECONDS = 3600.0  # how long one trace may run at most
MAX_TRACES_PER_PEER = 8  # traces a node runs at once for one requesting node

_repr = reprlib.Repr()
_repr.maxstring = 400
_repr.maxother = 400
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxfrozenset = _repr.maxdeque = 50
_repr.maxdict = 50
_repr.maxlevel = 6


def short_repr(value: Any) -> str:
    """A bounded `repr` (never raises)."""
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not break tracing
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}: {exc}>"
    if len(text) > REPR_LIMIT:
        try:
            text = _repr.repr(value)
        except Exception:
            text = text[:REPR_LIMIT]
        if len(text) > REPR_LIMIT:
            text = text[: REPR_LIMIT - 1] + "…"
    return text


# ----------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ProcessState:
    """A snapshot of one process's state (`%noex state`)."""

    ref: ProcessRef
    behavior: str
    status: str
    queue_len: int
    messages: int
    state_repr: str
    state: Any = None
    has_state: bool = False  # False when the state is not a wire value (only its repr came back)

    def __str__(self) -> str:
        return (
            f"{self.ref} {self.behavior} ({self.status}, queue={self.queue_len}, messages={self.messages})\n"
            f"state: {self.state_repr}"
        )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))

    def _repr_html_(self) -> str:
        from html import escape

        return (
            f"<div><code>{escape(str(self.ref))}</code> <b>{escape(self.behavior)}</b> "
            f"<span style='color:#666'>{escape(self.status)}, queue={self.queue_len}, "
            f"messages={self.messages}</span>"
            f"<pre style='margin:2px 0 0 0'>{escape(self.state_repr)}</pre></div>"
        )


@dataclass(frozen=True)
class TraceEvent:
    """One traced message: when, its kind (call / cast / info), the message, the state after it."""

    at: float
    kind: str
    message: str
    state: str

    def __str__(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.at)) + f".{int(self.at * 1000) % 1000:03d}"
        return f"{stamp} {self.kind:<4} {self.message}  ->  {self.state}"


def check_trace_limits(seconds: Any, max_events: Any) -> tuple[float, int]:
    """A trace's duration and event budget, checked (on both sides: a peer may send anything)."""
    seconds = check_timeout(seconds, "seconds", maximum=MAX_TRACE_SECONDS)
    if type(max_events) is not int or max_events <= 0:
        raise InvalidArgumentError(f"max_events must be a positive int, not {max_events!r}")
    return seconds, min(max_events, MAX_TRACE_EVENTS)


class ProcessListing(NamedTuple):
    """The processes of one node, by pid, and its registered names (`Sys.processes`)."""

    processes: list[ProcessInfo]
    names: dict[str, ProcessRef]


class ProcessPage(NamedTuple):
    """One page of the processes of a node (`process_page`), its names, and how many run there."""

    processes: list[ProcessInfo]
    names: dict[str, ProcessRef]
    total: int


def _reply(value: Any, cls: type[Any], where: NodeId, op: str) -> Any:
    """A peer's answer, checked to be what `op` returns (a peer may send anything)."""
    if not isinstance(value, cls):
        raise ProtocolError(f"node {where} answered {op} with {type(value).__name__}, not {cls.__name__}")
    return value


# ----------------------------------------------------------------------------------- target side
def find_process(node: Node, pid: int | None, creation: int, name: str | None) -> Process:
    if name is not None:
        ref = node.names.whereis(name)
        if ref is None and node.router is not None:
            ref = node.router.resolve_name(name)
            if ref is not None and not node.is_local(ref):
                raise InvalidArgumentError(f"{name!r} names {ref}, which runs on another node")
        if ref is None:
            raise NotRegisteredError(name)
        proc = node.local_process(ref)
    else:
        proc = node.inbound_process(pid, creation or node.incarnation) if pid is not None else None
    if proc is None or not proc.alive:
        what = name if name is not None else ProcessRef(node.id, pid or 0, creation or node.incarnation)
        raise ServerNotRunningError(what, NOPROC)
    return proc


async def settle(proc: Process, wait: float = SETTLE_S) -> None:
    """Wait (at most `wait` seconds) until the messages already queued in `proc` are handled, so
    a state read after a cast sees that cast, as OTP's `sys:get_state` (a message in the queue)
    would; unlike it, a process stuck in a long callback delays the answer by `wait` only."""
    target = proc.handled + len(proc.mailbox)
    if not proc.alive or proc.handled >= target or (proc._sys is not None and proc._sys.parked):
        return  # (a suspended process handles nothing until resumed: answer at once)
    done = anyio.Event()

    def tracer(_kind: str, _msg: Any, _state: Any) -> None:
        if proc.handled >= target:
            done.set()

    if proc.tracers is None:
        proc.tracers = []
    proc.tracers.append(tracer)
    try:
        with anyio.move_on_after(wait):
            while proc.alive and proc.handled < target:
                await done.wait()
    finally:
        if tracer in proc.tracers:
            proc.tracers.remove(tracer)


def local_state(proc: Process, encodable: Callable[[Any], bool] | None = None) -> ProcessState:
    state = proc.state
    ok = True if encodable is None else encodable(state)
    return ProcessState(
        ref=proc.ref, behavior=proc.behavior.__name__, status=proc.status, queue_len=len(proc.mailbox),
        messages=proc.handled, state_repr=short_repr(state), state=state if ok else None, has_state=ok,
    )


class _Trace:
    """A tracer installed on one local process, feeding `emit` until it ends."""

    def __init__(
        self, node: Node, proc: Process, emit: Callable[[TraceEvent], None], finish: Callable[[str], None],
        seconds: float, max_events: int,
    ) -> None:
        self.node = node
        self._clock = node.clock
        self.proc = proc
        self._emit = emit
        self._finish = finish
        self.count = 0
        self.max_events = max_events
        self.ended = False
        if proc.tracers is None:
            proc.tracers = []
        proc.tracers.append(self._tracer)
        self._mref = node.monitor(proc.ref, on_down=self._on_down)
        self._timer: Cancellable | None = node.backend.call_later(
            seconds, lambda: self.end("time is up"), lambda fn: node.spawn_task(fn, what="trace timer")
        )

    def _tracer(self, kind: str, msg: Any, state: Any) -> None:
        if self.ended:
            return
        self.count += 1
        self._emit(TraceEvent(self._clock.time(), kind, short_repr(msg), short_repr(state)))
        if self.count >= self.max_events:
            self.end(f"stopped after {self.max_events} messages")

    def _on_down(self, down: Down) -> None:
        self.end(f"the process exited ({down.reason})")

    def end(self, why: str) -> None:
        if self.ended:
            return
        self.ended = True
        tracers = self.proc.tracers
        if tracers is not None and self._tracer in tracers:
            tracers.remove(self._tracer)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.node.demonitor(self._mref)
        self._finish(why)


class TraceHandle:
    """The caller's side of a running trace: `stop()` ends it; `ended` says whether it ended."""

    def __init__(self, ref: ProcessRef, behavior: str, initial_state: str, stop: Callable[[], None]) -> None:
        self.ref = ref
        self.behavior = behavior
        self.initial_state = initial_state
        self.ended = False
        self.end_reason: str | None = None
        self._stop = stop

    def stop(self) -> None:
        if not self.ended:
            self._stop()


class Introspection(Service):
    """The `inspect` operations of one distributed node, and its running traces."""

    namespace = "inspect"

    def __init__(self, node: Node, router: RemoteRouter, codec: Codec) -> None:
        self.node = node
        self.router = router
        self.codec = codec
        self._ids = itertools.count(1)
        # traces running on this node for a peer: (peer, trace_id) -> _Trace
        self.serving: dict[tuple[NodeId, int], _Trace] = {}
        # traces this node asked a peer for: trace_id -> (peer, on_event, on_end, handle)
        self.watching: dict[int, tuple[NodeId, Callable[[TraceEvent], None], Callable[[str], None]]] = {}

    def operations(self) -> Mapping[str, Operation]:
        return {"state": self._get_state, "trace_start": self._trace_start, "trace_stop": self._trace_stop,
                "trace_event": self._trace_event, "trace_end": self._trace_end, "processes": self._processes,
                "events": self._events, "peers": self._peers}

    def _peers(self, _peer: NodeId, _args: Any) -> list[list[Any]]:
        return [[i.id, i.status] for i in self.node.get_nodes()]

    def _encodable(self, value: Any) -> bool:
        try:
            self.codec.encode(value)
        except SerializationError:
            return False
        except Exception:
            return False
        return True

    # --------------------------------------------------------------- handlers (target side)
    async def _get_state(self, _peer: NodeId, args: Any) -> ProcessState:
        pid, creation, name = args
        proc = find_process(self.node, pid, creation, name)
        await settle(proc)
        return local_state(proc, self._encodable)

    def _trace_start(self, peer: NodeId, args: Any) -> list[Any]:
        trace_id, pid, creation, name, seconds, max_events = args
        seconds, max_events = check_trace_limits(seconds, max_events)
        key = (peer, int(trace_id))
        if key in self.serving:
            raise InvalidArgumentError(f"trace {trace_id} of node {peer} is already running")
        if sum(1 for p, _ in self.serving if p == peer) >= MAX_TRACES_PER_PEER:
            raise TooManyTracesError(self.node.id, MAX_TRACES_PER_PEER)
        proc = find_process(self.node, pid, creation, name)
        router = self.router

        def emit(ev: TraceEvent) -> None:
            router.rpc_cast(peer, "inspect.trace_event", [trace_id, ev.at, ev.kind, ev.message, ev.state])

        def finish(why: str) -> None:
            self.serving.pop(key, None)
            router.rpc_cast(peer, "inspect.trace_end", [trace_id, why])

        self.serving[key] = _Trace(self.node, proc, emit, finish, seconds, max_events)
        return [proc.ref, proc.behavior.__name__, short_repr(proc.state)]

    def _trace_stop(self, peer: NodeId, args: Any) -> None:
        trace = self.serving.get((peer, int(args[0])))
        if trace is not None:
            trace.end("stopped")

    def _processes(self, _peer: NodeId, args: Any) -> list[Any]:
        if isinstance(args, dict):
            return list(process_page_rows(self.node, args.get("limit"), args.get("offset", 0), args.get("sort", "pid")))
        return list(process_rows(self.node))

    def _events(self, _peer: NodeId, args: Any) -> list[EventInfo]:
        return event_rows(self.node, int(args))

    # --------------------------------------------------------------- notifications (caller side)
    def _trace_event(self, _peer: NodeId, args: Any) -> None:
        trace_id, at, kind, message, state = args
        entry = self.watching.get(int(trace_id))
        if entry is not None:
            entry[1](TraceEvent(float(at), str(kind), str(message), str(state)))

    def _trace_end(self, _peer: NodeId, args: Any) -> None:
        entry = self.watching.pop(int(args[0]), None)
        if entry is not None:
            entry[2](str(args[1]))

    def peer_left(self, peer: NodeId, reason: str) -> None:
        for key, trace in list(self.serving.items()):
            if key[0] == peer:
                trace.end(f"the tracing node left ({reason})")
        for trace_id, entry in list(self.watching.items()):
            if entry[0] == peer:
                del self.watching[trace_id]
                entry[2](f"node {peer} went down ({reason})")

    def next_trace_id(self) -> int:
        return next(self._ids)


def process_rows(node: Node) -> ProcessListing:
    """The processes of `node` by pid (max_mailbox None when unbounded) and its names."""
    now = node.clock.monotonic()
    rows = [
        ProcessInfo(ref=p.ref, name=p.name, behavior=p.behavior.__name__, status=p.status,
                    queue_len=len(p.mailbox), messages=p.handled, uptime_s=round(now - p.started_at, 3),
                    queue_high_water=max(p.queue_high_water, len(p.mailbox)),
                    max_mailbox=p.bound.max if p.bound is not None else None)
        for p in sorted(node.processes(), key=lambda p: p.pid)
    ]
    names = {n: r for n in node.names.names() if (r := node.names.whereis(n)) is not None}
    return ProcessListing(rows, names)


def process_page_rows(node: Node, limit: int | None, offset: int, sort: str) -> ProcessPage:
    """As `process_rows`, only the page `node.snapshot(limit=...)` lists, with `total`: how many
    processes run on the node in all."""
    snap = node.snapshot(limit=limit, offset=offset, sort=sort)
    return ProcessPage(list(snap.processes), dict(snap.names), snap.process_count)


def event_rows(node: Node, n: int) -> list[EventInfo]:
    """The last `n` events (at most 2000) as plain data."""
    return [EventInfo.of(ev) for ev in node.events.recent(max(0, min(n, 2000)))]


# ----------------------------------------------------------------------------------- caller side
Location = tuple[NodeId | None, int | None, int, str | None]  # (remote node or None, pid, creation, name)


def locate(node: Node, target: ProcessRef | str, on: NodeId | None = None) -> Location:
    """Where `target` runs: `(None, ...)` for this node, else the remote node id."""
    if isinstance(target, ProcessRef):
        if node.is_local(target):
            return None, target.id, target.creation, None
        return target.node, target.id, target.creation, None
    if not isinstance(target, str) or not target:
        raise InvalidArgumentError(f"a target is a ProcessRef or a registered name, not {target!r}")
    if on is not None and on != node.id:
        return on, None, 0, target
    ref = node.names.whereis(target)
    if ref is None and on is None and node.router is not None:
        ref = node.router.resolve_name(target)
    if ref is None:
        raise NotRegisteredError(target)
    return locate(node, ref)


def _router_of(node: Node, where: NodeId) -> Any:
    if node.router is None or node.distribution is None:
        raise NodeNotReachableError(where, "this node is not distributed")
    return node.router


async def get_state(
    target: ProcessRef | str, *, on: NodeId | str | None = None, node: Node | None = None, timeout: float = 5.0,
) -> ProcessState:
    """The current state of a process, local or remote, without disturbing it (like `sys:get_state`).

    `target` is a ref, a local name or a global name; `on=` looks a local name up on that node.
    A state that is not a wire value comes back as its repr only (`has_state=False`)."""
    timeout = check_timeout(timeout)
    node = node or current_node()
    on_id = NodeId.parse(on) if isinstance(on, str) else on
    where, pid, creation, name = locate(node, target, on_id)
    if where is None:
        proc = find_process(node, pid, creation, name)
        await settle(proc)
        return local_state(proc)
    router = _router_of(node, where)
    state: ProcessState = _reply(await router.rpc(where, "inspect.state", [pid, creation, name], timeout),
                                 ProcessState, where, "inspect.state")
    return state


async def trace(
    target: ProcessRef | str, on_event: Callable[[TraceEvent], None], on_end: Callable[[str], None], *,
    seconds: float = 10.0, max_events: int = 1000, on: NodeId | str | None = None, node: Node | None = None,
    timeout: float = 5.0,
) -> TraceHandle:
    """Trace a live process (like `sys:trace`): `on_event` gets every message it handles and the
    state after it, until `seconds` pass, `max_events` arrived, it exits or `stop()` is called;
    then `on_end(why)` is called once. Works for local and remote processes.

    `seconds` is finite, at most MAX_TRACE_SECONDS (1 hour); `max_events` at most MAX_TRACE_EVENTS
    are reported. A node runs at most MAX_TRACES_PER_PEER (8) traces for one other node at a time:
    beyond, `TooManyTracesError`."""
    node = node or current_node()
    seconds, max_events = check_trace_limits(seconds, max_events)
    timeout = check_timeout(timeout)
    on_id = NodeId.parse(on) if isinstance(on, str) else on
    where, pid, creation, name = locate(node, target, on_id)
    handle_box: list[TraceHandle] = []

    def ended(why: str) -> None:
        if handle_box:
            handle_box[0].ended = True
            handle_box[0].end_reason = why
        on_end(why)

    if where is None:
        proc = find_process(node, pid, creation, name)
        local = _Trace(node, proc, on_event, ended, seconds, max_events)
        handle = TraceHandle(proc.ref, proc.behavior.__name__, short_repr(proc.state), lambda: local.end("stopped"))
        handle_box.append(handle)
        return handle
    router = _router_of(node, where)
    dist = distribution_of(node)
    intro = dist.introspection if dist is not None else None
    if intro is None:
        raise NodeNotReachableError(where, "this node has no introspection handlers")
    trace_id = intro.next_trace_id()
    intro.watching[trace_id] = (where, on_event, ended)
    try:
        r = await router.rpc(where, "inspect.trace_start", [trace_id, pid, creation, name, seconds, max_events],
                             timeout)
    except BaseException:
        intro.watching.pop(trace_id, None)
        raise

    def stop() -> None:
        if router.rpc_cast(where, "inspect.trace_stop", [trace_id]) is False:
            entry = intro.watching.pop(trace_id, None)
            if entry is not None:
                entry[2]("stopped")

    handle = TraceHandle(r[0], r[1], r[2], stop)
    handle_box.append(handle)
    return handle


async def process_list(
    where: NodeId | None = None, *, node: Node | None = None, timeout: float = 5.0,
) -> ProcessListing:
    """The processes and names of this node (`where=None`) or of another node."""
    timeout = check_timeout(timeout)
    node = node or current_node()
    if where is None or where == node.id:
        return process_rows(node)
    answer = _reply(await _router_of(node, where).rpc(where, "inspect.processes", None, timeout), list, where,
                    "inspect.processes")
    if len(answer) != 2 or not isinstance(answer[0], list) or not isinstance(answer[1], dict):
        raise ProtocolError(f"node {where} answered inspect.processes with a malformed listing")
    rows = [_reply(row, ProcessInfo, where, "inspect.processes") for row in answer[0]]
    return ProcessListing(rows, answer[1])


async def process_page(
    where: NodeId | None = None, *, node: Node | None = None, limit: int | None = 100, offset: int = 0,
    sort: str = "pid", timeout: float = 5.0,
) -> ProcessPage:
    """One page of the processes of this node (`where=None`) or of another node (`limit` from
    `offset` in `sort` order, see `node.snapshot`), its names, and in `total` how many run there."""
    timeout = check_timeout(timeout)
    check_page(limit, offset, sort)
    node = node or current_node()
    if where is None or where == node.id:
        return process_page_rows(node, limit, offset, sort)
    args = {"limit": limit, "offset": offset, "sort": sort}
    answer = _reply(await _router_of(node, where).rpc(where, "inspect.processes", args, timeout), list, where,
                    "inspect.processes")
    if len(answer) != 3 or not isinstance(answer[0], list) or not isinstance(answer[1], dict) \
            or not isinstance(answer[2], int):
        raise ProtocolError(f"node {where} answered inspect.processes with a malformed page")
    rows = [_reply(row, ProcessInfo, where, "inspect.processes") for row in answer[0]]
    return ProcessPage(rows, answer[1], answer[2])


async def recent_events(
    n: int = 50, where: NodeId | None = None, *, node: Node | None = None, timeout: float = 5.0,
) -> list[EventInfo]:
    """The last `n` events of this node (`where=None`) or of another node, oldest first."""
    timeout = check_timeout(timeout)
    node = node or current_node()
    if where is None or where == node.id:
        return event_rows(node, n)
    answer = _reply(await _router_of(node, where).rpc(where, "inspect.events", n, timeout), list, where,
                    "inspect.events")
    return [_reply(row, EventInfo, where, "inspect.events") for row in answer]
