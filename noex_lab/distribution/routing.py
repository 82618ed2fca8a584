"""The distribution side of the core's router seam: remote call, cast, send, stop,
links and monitors, and the handling of every incoming data frame.

Incoming frames are dispatched synchronously in the connection's reader, in arrival
order, straight into mailboxes: this is what keeps per-sender FIFO across nodes.

Direct hand-off: a CALL, CAST or SEND that is the only message of its frame (the connection's
`_lone`, set before the message is dispatched) for a process parked idle with a plain handler
is handled right here (`Process.run_now`; the mailbox is empty, so the order is the same): a
lone request is answered in the reader's own turn and its reply written at once, one turn of
the loop less per round trip. A batch goes through the mailbox, one wake-up for all: there the
loop handles a message for less than a hand-off costs, and the batch's replies leave in one write.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

import anyio

from ..core import errors as noex_errors
from ..core.errors import (
    CallError,
    CallTimeoutError,
    NodeNotReachableError,
    NoexError,
    NotPermittedError,
    SendTimeoutError,
    SerializationError,
    ServerNotRunningError,
    UnknownOperationError,
)
from ..core.messages import Down
from ..core.node import current_process
from ..core.node_id import NodeId
from ..core.process import CALL as CALL_TAG
from ..core.process import CAST as CAST_TAG
from ..core.process import INFO as INFO_TAG
from ..core.reasons import NOCONNECTION, NOPROC, ErrorReason, ExitReason
from ..core.refs import MonitorRef, ProcessRef
from ..core.timeouts import check_timeout
from . import protocol as p
from .connection import describe

if TYPE_CHECKING:
    from ..core._backend import FutureLike
    from ..core.node import Node
    from ..core.process import Process
    from .connection import Connection

log = logging.getLogger(__name__)

RpcHandler = Callable[[NodeId, Any], Any]
FrameHandler = Callable[["Connection", list[Any]], None]

# The hot frame types as module globals (one lookup instead of `p.` + attribute per test).
_CAST, _SEND, _CALL, _REPLY = p.CAST, p.SEND, p.CALL, p.REPLY


def _user_path(exc: SerializationError, index: int) -> str:
    """The codec's message with the frame's envelope taken off the path (`msg[5]['x']` -> `msg['x']`)."""
    text = str(exc)
    prefix = f"msg[{index}]"
    return "msg" + text[len(prefix):] if text.startswith(prefix) else text


def _send_user(conn: Connection, message: list[Any], index: int) -> None:
    """Send a frame whose slot `index` is the user's message; errors name the user's path."""
    try:
        conn.send(message)
    except SerializationError as exc:
        raise SerializationError(_user_path(exc, index)) from None


def encode_error(exc: BaseException) -> list[Any]:
    """A typed error as the details of a failed REPLY."""
    if isinstance(exc, CallError):  # (+ where: [behavior, process], read by decode_error when present)
        return [p.ERR_CRASH, exc.exc_type, exc.message, exc.remote_traceback, [exc.behavior, exc.process]]
    if isinstance(exc, ServerNotRunningError):
        return [p.ERR_NOPROC, exc.reason]
    if isinstance(exc, CallTimeoutError):
        return [p.ERR_TIMEOUT, exc.timeout]
    if isinstance(exc, NoexError):
        return [p.ERR_EXCEPTION, type(exc).__name__, str(exc), _error_fields(exc)]
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return [p.ERR_CRASH, type(exc).__name__, str(exc), text]


def _error_fields(exc: NoexError) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in vars(exc).items():
        if isinstance(value, (str, int, float, bool, type(None), ProcessRef, NodeId, ErrorReason)):
            fields[key] = value
    return fields


def decode_error(details: Any, target: object) -> BaseException:
    """Rebuild the typed error of a failed REPLY (only noex_lab's own error classes). The details
    came from a peer: whatever they hold, this returns an error and never raises."""
    try:
        return _decode_error(details, target)
    except Exception:
        return NoexError(f"malformed error reply {_describe(details)}")


def _decode_error(details: Any, target: object) -> BaseException:
    if not isinstance(details, list) or not details:
        return NoexError(f"malformed error reply {_describe(details)}")
    kind = details[0]
    if kind == p.ERR_CRASH and len(details) in (4, 5):
        where = details[4] if len(details) == 5 and isinstance(details[4], list) and len(details[4]) == 2 else None
        process = where[1] if where is not None and isinstance(where[1], ProcessRef) else None
        behavior = str(where[0]) if where is not None and where[0] else ""
        node = process.node if process is not None else target if isinstance(target, NodeId) else None
        return CallError(str(details[1]), str(details[2]), str(details[3]), process=process, behavior=behavior,
                         node=node)
    if kind == p.ERR_NOPROC:
        return ServerNotRunningError(target, details[1] if len(details) > 1 else NOPROC)
    if kind == p.ERR_TIMEOUT:
        return CallTimeoutError(target, float(details[1]))
    if kind == p.ERR_EXCEPTION and len(details) >= 3:
        cls = getattr(noex_errors, str(details[1]), None)
        if isinstance(cls, type) and issubclass(cls, NoexError):
            err = cls.__new__(cls)  # (its __init__ takes the fields, which come separately)
            err.args = (str(details[2]),)
            if len(details) > 3 and isinstance(details[3], dict):
                for key, value in details[3].items():
                    if isinstance(key, str) and not key.startswith("_"):
                        setattr(err, key, value)
            return err
        return NoexError(f"{_text(details[1], 80)}: {_text(details[2], 4000)}")
    return NoexError(f"remote error {_describe(details)}")


def _hand_off(proc: Process, item: tuple[Any, ...]) -> None:
    """Handle `item` in `proc` at once if it can (see the module doc), else queue it."""
    if not proc.run_now(item):
        proc.deliver(item)


def _from(ref: Any, conn: Connection) -> bool:
    """Whether `ref` is a process of the node at the other end of `conn`."""
    return isinstance(ref, ProcessRef) and ref.node == conn.peer


def _text(value: Any, limit: int) -> str:
    """A peer's value as text of at most `limit` characters (a message it sent, a type name)."""
    text = value if isinstance(value, str) else _describe(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _describe(value: Any) -> str:
    """A peer's value for an error or log text: short, and never raising."""
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


class RemoteReply:
    """Stands in for the caller's future on the server's node: answers over the connection."""

    __slots__ = ("_done", "conn", "req")

    def __init__(self, conn: Connection, req: int) -> None:
        self.conn = conn
        self.req = req
        self._done = False

    def done(self) -> bool:
        return self._done or self.conn.closed

    def cancelled(self) -> bool:
        return False

    def set_result(self, value: Any) -> None:
        if self._done:  # (as a future: the process loop relies on it instead of asking `done()`)
            raise asyncio.InvalidStateError(f"request {self.req} was already answered")
        self._done = True
        try:
            self.conn.send([p.REPLY, self.req, True, value])
        except SerializationError as exc:  # the server is fine; its reply cannot travel
            err = SerializationError(f"the reply cannot be sent: {_user_path(exc, 3)}")
            self.conn.send([p.REPLY, self.req, False, encode_error(err)])

    def set_exception(self, exc: BaseException) -> None:
        self._done = True
        self.conn.send([p.REPLY, self.req, False, encode_error(exc)])

    def result(self) -> Any:
        return None

    def __await__(self) -> Any:  # never awaited: present for the FutureLike protocol
        raise TypeError("RemoteReply is not awaitable")


class RemoteWatcher:
    """A monitor held on a local process by a watcher on another node."""

    __slots__ = ("node_id", "router")

    def __init__(self, router: RemoteRouter, node_id: NodeId) -> None:
        self.router = router
        self.node_id = node_id

    def deliver_down(self, down: Down) -> None:
        conn = self.router.conns.get(self.node_id)
        if conn is not None:
            self.router.send_frame(conn, [p.DOWN, down.monitor, down.ref, down.reason])

    def __repr__(self) -> str:
        return f"RemoteWatcher({self.node_id})"


class RemoteRouter:
    """Implements `noex_lab.core.router.Router` over the transport's connections.

    Built before the transport (whose connections hand it every frame, `dispatch`): it reads the
    transport's `conns` dict, which the transport fills and never replaces. `on_membership` takes
    the membership frames (GOSSIP, GOODBYE); `rpc_handlers` is the table of remote operations,
    filled by `service.install_services`."""

    def __init__(self, node: Node, conns: dict[NodeId, Connection], on_membership: FrameHandler) -> None:
        self.node = node
        self.conns = conns
        self.on_membership = on_membership
        # looked up with a ref's node, maybe None
        self._conns = cast("dict[NodeId | None, Connection]", conns)
        self._last_conn: Connection | None = None  # where the last cast went (casts come in runs)
        self._last_call: Connection | None = None  # where the last call went (calls come in runs too)
        # a call's reply future (on asyncio's own loop the Future class itself: see AsyncioBackend)
        self._new_future: Callable[[], FutureLike] = node.backend.new_future
        self._deadlines = node.backend.deadlines  # request timeouts (asyncio), else None: `wait_future`
        # monitors this node's watchers hold on remote processes: mref -> (target, sink)
        self.remote_monitors: dict[MonitorRef, tuple[ProcessRef, Any]] = {}
        self.rpc_handlers: dict[str, RpcHandler] = {}
        self.name_resolvers: list[Callable[[str], ProcessRef | None]] = []

    # ------------------------------------------------------------------ helpers
    def _conn(self, ref: ProcessRef) -> Connection | None:
        if ref.node is None:
            return None
        return self.conns.get(ref.node)

    def send_frame(self, conn: Connection, message: list[Any]) -> None:
        """A system frame (DOWN, EXIT): never dropped, and its sender never waits."""
        conn.send(message)

    @staticmethod
    def _slow_down(conn: Connection) -> None:
        """Back-pressure: a process that cast into a busy connection waits for it to drain
        before it handles its next message (Erlang suspends a sender on a busy dist port).
        Code outside processes is not suspended: it can `await node.drain()`."""
        proc = current_process()
        if proc is not None:
            proc.wait_for(conn)

    # ------------------------------------------------------------------ Router protocol
    def send(self, to: ProcessRef, tag: int, msg: Any) -> bool:
        conn = self._last_conn
        if conn is None or conn.peer is not to.node or conn.closed:
            # (a connection that is not closed is the one in the dict: one per peer)
            conn = self._conns.get(to.node)  # None for a ref of a node that is not distributed
            if conn is None:
                return False
            self._last_conn = conn
        if conn.peer_incarnation != to.creation:
            return True  # addressed to an old incarnation of that node: dropped
        try:  # (`_send_user` inlined: this is the hot path of every remote cast)
            conn.send([_CAST if tag == CAST_TAG else _SEND, to.id, to.creation, msg])
        except SerializationError as exc:
            raise SerializationError(_user_path(exc, 3)) from None
        if conn.congested:
            self._slow_down(conn)
        return True

    async def drain(self, node: NodeId | None, timeout: float | None) -> None:
        """Wait until the connection to `node` (every connection when None) is not busy."""
        conns = list(self.conns.values()) if node is None else [self.conns.get(node)]
        start = anyio.current_time()
        for conn in conns:
            if conn is None or not conn.congested:
                continue
            left = None if timeout is None else timeout - (anyio.current_time() - start)
            if not await conn.wait_for_space(left):
                raise SendTimeoutError(conn.peer, cast(float, timeout))

    def _ready_conn(self, to: ProcessRef) -> Connection:
        """The connection to `to`'s node; typed errors when there is none."""
        conn = self._conn(to)
        if conn is None:
            raise NodeNotReachableError(to.node, "not connected")
        if conn.peer_incarnation != to.creation:
            raise ServerNotRunningError(to, NOPROC)
        return conn

    def call(self, to: ProcessRef, msg: Any, timeout: float, sender: ProcessRef | None) -> Coroutine[Any, Any, Any]:
        """(The request's coroutine itself, not one awaiting it: one frame less per remote call.)"""
        conn = self._last_call
        if conn is None or conn.peer is not to.node or conn.closed:  # (as in `send`)
            conn = self._conn(to)
            if conn is None:
                return self._not_ready(to)
            self._last_call = conn
        if conn.peer_incarnation != to.creation:
            return self._not_ready(to)
        return self.request(conn, [_CALL, 0, to.id, to.creation, sender, msg], timeout, to)

    async def _not_ready(self, to: ProcessRef) -> Any:
        """`call`'s typed error, raised when awaited (as from a coroutine function)."""
        self._ready_conn(to)

    async def request(self, conn: Connection, message: list[Any], timeout: float, target: object) -> Any:
        """Send a request frame (its slot 1 is the request id) and await the REPLY, all within
        `timeout` (a busy connection is waited for inside the same deadline)."""
        wait = timeout
        if conn.congested:
            start = anyio.current_time()
            if not await conn.wait_for_space(timeout):
                raise CallTimeoutError(target, timeout)
            wait = timeout - (anyio.current_time() - start)
            if conn.closed:
                raise NodeNotReachableError(conn.peer, "the connection was lost while waiting")
        req = next(conn.req_ids)
        message[1] = req
        fut = self._new_future()
        conn.pending[req] = fut
        deadlines = self._deadlines
        slot = None
        try:
            try:  # (`_send_user` inlined, as in `send`)
                conn.send(message)
            except SerializationError as exc:
                raise SerializationError(_user_path(exc, len(message) - 1)) from None
            if deadlines is None:
                return await self.node.backend.wait_future(fut, wait)
            # (`wait_future` inlined: one coroutine less per call; and `DeadlineSlots.add`'s
            # common case, the slot of the last request with this timeout, still ahead)
            last_timeout, until, slot = deadlines._last
            if wait == last_timeout and deadlines._time() < until:
                slot.add(fut)
            else:
                slot = deadlines.add(fut, wait)
            return await fut
        except TimeoutError as exc:
            if type(exc) is TimeoutError:
                raise CallTimeoutError(target, timeout) from None
            raise
        except ServerNotRunningError as exc:
            if exc.target == conn.peer and not isinstance(target, NodeId):  # the reply names only the node
                raise ServerNotRunningError(target, exc.reason) from None
            raise
        finally:
            conn.pending.pop(req, None)
            if slot is not None:
                slot.discard(fut)

    async def stop(self, to: ProcessRef, reason: ExitReason, timeout: float) -> None:
        conn = self._ready_conn(to)
        await self.request(conn, [p.STOP, 0, to.id, to.creation, reason, timeout], timeout, to)

    async def shutdown(self, to: ProcessRef, reason: ExitReason, timeout: float | None) -> ExitReason:
        conn = self._conn(to)
        if conn is None or conn.peer_incarnation != to.creation:
            return None
        wait = (timeout if timeout is not None else 3600.0) + 5.0
        try:
            return await self.request(conn, [p.RPC, 0, p.OP_NODE_SHUTDOWN, [to.id, to.creation, reason, timeout]],
                                      wait, to)
        except (NodeNotReachableError, CallTimeoutError):
            return None

    def exit_signal(self, to: ProcessRef, from_: ProcessRef, reason: ExitReason) -> None:
        conn = self._conn(to)
        if conn is not None and conn.peer_incarnation == to.creation:
            self.send_frame(conn, [p.EXIT, to.id, to.creation, from_, reason])

    def link(self, local: ProcessRef, remote: ProcessRef) -> None:
        conn = self._conn(remote)
        if conn is None or conn.peer_incarnation != remote.creation:
            reason = NOCONNECTION if conn is None else NOPROC
            self.node.exit_signal(local, remote, reason)
            return
        conn.send([p.LINK, remote.id, remote.creation, local])

    def unlink(self, local: ProcessRef, remote: ProcessRef) -> None:
        conn = self._conn(remote)
        if conn is not None:
            conn.send([p.UNLINK, remote.id, remote.creation, local])

    def monitor(self, mref: MonitorRef, target: ProcessRef, watcher: Any) -> None:
        conn = self._conn(target)
        if conn is None or conn.peer_incarnation != target.creation:
            reason = NOCONNECTION if conn is None else NOPROC
            self.node.deliver_down(watcher, Down(mref, target, reason))
            return
        self.remote_monitors[mref] = (target, watcher)
        conn.send([p.MONITOR, mref, target.id, target.creation])

    def demonitor(self, mref: MonitorRef, target: ProcessRef) -> None:
        if self.remote_monitors.pop(mref, None) is None:
            return
        conn = self._conn(target)
        if conn is not None:
            conn.send([p.DEMONITOR, mref, target.id, target.creation])

    def resolve_name(self, name: str) -> ProcessRef | None:
        for resolver in self.name_resolvers:
            ref = resolver(name)
            if ref is not None:
                return ref
        return None

    # ------------------------------------------------------------------ (name, node) targets
    async def call_named(self, name: str, node: NodeId, msg: Any, timeout: float, sender: ProcessRef | None) -> Any:
        """One system request: the target node resolves `name` and calls it (see multi.py)."""
        conn = self.conns.get(node)
        if conn is None:
            raise NodeNotReachableError(node, "not connected")
        try:
            return await self.request(conn, [p.RPC, 0, p.OP_NAMED_CALL, [name, timeout, sender, msg]], timeout,
                                      (name, node))
        except SerializationError as exc:  # name the user's message, not the request's envelope
            raise SerializationError(_user_path(SerializationError(_user_path(exc, 3)), 3)) from None
        except ServerNotRunningError as exc:  # say which name on which node
            raise ServerNotRunningError((name, node), exc.reason) from None

    def send_named(self, name: str, node: NodeId, tag: int, msg: Any) -> bool:
        conn = self.conns.get(node)
        if conn is None:
            return False
        try:
            conn.send([p.RPC_CAST, p.OP_NAMED_SEND, [name, tag, msg]])
        except SerializationError as exc:
            raise SerializationError(_user_path(SerializationError(_user_path(exc, 2)), 2)) from None
        if conn.congested:
            self._slow_down(conn)
        return True

    async def whereis_named(self, name: str, node: NodeId, timeout: float) -> ProcessRef | None:
        result = await self.rpc(node, p.OP_NAMED_WHEREIS, name, timeout)
        return result if isinstance(result, ProcessRef) and result.node == node else None  # its own processes only

    # ------------------------------------------------------------------ system requests
    async def rpc(self, node_id: NodeId, op: str, args: Any, timeout: float = 5.0) -> Any:
        """Ask node `node_id` to run its remote operation `op` (`node.spawn`, `global.lock`...)."""
        timeout = check_timeout(timeout)
        conn = self.conns.get(node_id)
        if conn is None:
            raise NodeNotReachableError(node_id, "not connected")
        return await self.request(conn, [p.RPC, 0, op, args], timeout, node_id)

    def rpc_cast(self, node_id: NodeId, op: str, args: Any) -> bool:
        conn = self.conns.get(node_id)
        if conn is None:
            return False
        conn.send([p.RPC_CAST, op, args])
        return True

    # ------------------------------------------------------------------ node loss
    def node_lost(self, conn: Connection) -> None:
        """Fail everything that depended on `conn`: pending requests, monitors, links."""
        peer = conn.peer
        pending, conn.pending = conn.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(NodeNotReachableError(peer, "the connection was lost while waiting"))
        node = self.node
        for mref, (target, sink) in list(self.remote_monitors.items()):
            if target.node == peer:
                del self.remote_monitors[mref]
                node.deliver_down(sink, Down(mref, target, NOCONNECTION))
        for proc in node.processes():
            for linked in [r for r in proc.links if r.node == peer]:
                proc.exit_signal(linked, NOCONNECTION)
            for mref, sink in list(proc.monitors.items()):
                if isinstance(sink, RemoteWatcher) and sink.node_id == peer:
                    del proc.monitors[mref]

    # ------------------------------------------------------------------ incoming frames
    def dispatch(self, conn: Connection, m: list[Any]) -> None:
        """Handle one incoming frame (the hot types first)."""
        kind = m[0]
        node = self.node
        if kind == _CAST or kind == _SEND:
            # (`node.inbound_process` inlined on the two hot branches: one call less per message)
            proc = node._procs.get(m[1]) if m[2] == node.incarnation else None
            if proc is not None and proc._alive:
                if conn._lone and proc._wake is not None:  # alone in its frame, for an idle process
                    _hand_off(proc, (CAST_TAG if kind == _CAST else INFO_TAG, m[3]))
                else:
                    proc.deliver((CAST_TAG if kind == _CAST else INFO_TAG, m[3]))
        elif kind == _REPLY:
            fut = conn.pending.get(m[1])
            if fut is not None and not fut.done():
                if m[2]:
                    fut.set_result(m[3])
                else:
                    fut.set_exception(decode_error(m[3], conn.peer))
        elif kind == _CALL:
            if len(m) == 6:
                _, req, pid, creation, sender, msg = m
                trace = None
            else:  # the caller's trace context rides before the message (see call_with_context)
                _, req, pid, creation, sender, trace, msg = m
            proc = node._procs.get(pid) if creation == node.incarnation else None
            if proc is None or not proc._alive:
                conn.send([p.REPLY, req, False, [p.ERR_NOPROC, NOPROC]])
            elif sender is None or _from(sender, conn):  # a connection speaks only for its own node
                reply = RemoteReply(conn, req) if trace is None else self.traced_reply(conn, req, proc, trace)
                if conn._lone and proc._wake is not None:  # alone in its frame, for an idle process
                    _hand_off(proc, (CALL_TAG, msg, reply, sender))
                else:
                    proc.deliver((CALL_TAG, msg, reply, sender))
            else:
                err = NotPermittedError(f"the call's sender {sender} is not a process of {conn.peer}")
                conn.send([p.REPLY, req, False, encode_error(err)])
        elif kind == p.STOP:
            node.spawn_task(self._remote_stop, conn, m, what="remote stop")
        elif kind == p.EXIT:
            # a connection speaks only for its own node, and only about links that exist
            _, pid, creation, from_, reason = m
            proc = node.inbound_process(pid, creation)
            if proc is not None and _from(from_, conn) and from_ in proc.links:
                proc.exit_signal(from_, reason)
        elif kind == p.LINK:
            _, pid, creation, from_ = m
            if not _from(from_, conn):
                return
            proc = node.inbound_process(pid, creation)
            if proc is not None:
                proc.links.add(from_)
            else:
                conn.send([p.EXIT, from_.id, from_.creation, ProcessRef(node.id, pid, creation), NOPROC])
        elif kind == p.UNLINK:
            _, pid, creation, from_ = m
            proc = node.inbound_process(pid, creation) if _from(from_, conn) else None
            if proc is not None:
                proc.links.discard(from_)
        elif kind == p.MONITOR:
            _, mref, pid, creation = m
            proc = node.inbound_process(pid, creation)
            if proc is not None:
                proc.monitors[mref] = RemoteWatcher(self, conn.peer)
            else:
                conn.send([p.DOWN, mref, ProcessRef(node.id, pid, creation), NOPROC])
        elif kind == p.DEMONITOR:
            _, mref, pid, creation = m
            proc = node.inbound_process(pid, creation)
            if proc is not None:
                proc.monitors.pop(mref, None)
        elif kind == p.DOWN:
            _, mref, ref, reason = m
            entry = self.remote_monitors.get(mref)
            if entry is not None and entry[0].node == conn.peer:  # only the target's node reports it
                del self.remote_monitors[mref]
                node.deliver_down(entry[1], Down(mref, ref, reason))
        elif kind == p.RPC:
            node.spawn_task(self._run_rpc, conn, m, what=f"system request {_describe(m[2])}")
        elif kind == p.RPC_CAST:
            handler = self.rpc_handlers.get(m[1])
            if handler is None:
                conn.warn("unknown system notification %s from %s", describe(m[1]), conn.peer)
            else:
                result = handler(conn.peer, m[2])
                if inspect.isawaitable(result):
                    node.run_callback_result(result, f"system notification {m[1]!r}")
        elif kind == p.GOSSIP or kind == p.GOODBYE:
            self.on_membership(conn, m)
        else:
            conn.warn("unexpected frame type %s from %s", describe(kind), conn.peer)

    # ------------------------------------------------------------------ trace context (noex_lab.otel)
    # A CALL frame carries the caller's trace context only while noex_lab.otel is instrumented
    # and a span is active: [CALL, req, pid, creation, sender, context, msg]. Without it the
    # frame and its path are unchanged.
    async def call_with_context(self, to: ProcessRef, msg: Any, timeout: float, sender: ProcessRef | None,
                                context: dict[str, str]) -> Any:
        """`call`, with the caller's trace context (W3C trace-context headers) in the frame."""
        conn = self._ready_conn(to)
        return await self.request(conn, [p.CALL, 0, to.id, to.creation, sender, context, msg], timeout, to)

    def traced_reply(self, conn: Connection, req: int, proc: Process, context: Any) -> RemoteReply:
        """The reply object of a CALL that carried a trace context. `noex_lab.otel.instrument()`
        replaces this to continue the trace here; otherwise the context is ignored."""
        return RemoteReply(conn, req)

    async def _remote_stop(self, conn: Connection, m: list[Any]) -> None:
        _, req, pid, creation, reason, timeout = m
        try:  # the timeout came from a peer: stop_process refuses a bad one (a typed error reply)
            await self.node.stop_process(ProcessRef(self.node.id, pid, creation), reason, timeout)
        except NoexError as exc:
            conn.send([p.REPLY, req, False, encode_error(exc)])
            return
        conn.send([p.REPLY, req, True, None])

    async def _run_rpc(self, conn: Connection, m: list[Any]) -> None:
        _, req, op, args = m
        handler = self.rpc_handlers.get(op)
        if handler is None:  # (never echo a peer's value at length: it could be megabytes)
            err = UnknownOperationError(f"node {self.node.id} has no remote operation {_describe(op)}")
            conn.send([p.REPLY, req, False, encode_error(err)])
            return
        try:
            result = handler(conn.peer, args)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            conn.send([p.REPLY, req, False, encode_error(exc)])
            return
        try:
            conn.send([p.REPLY, req, True, result])
        except SerializationError as exc:
            conn.send([p.REPLY, req, False, encode_error(exc)])

