"""Live process tools (OTP's `sys`): suspend, resume, replace the state, statistics, status.

They work like OTP's system messages: a request is queued on the process and the process
runs it *between two messages* (never inside a callback), ahead of the messages still
queued. The process loop pays nothing for this while no tool is used: a request sets the
`_interrupted` flag the loop already checks once per message (for kills, shutdowns and
back-pressure), and the loop runs the request in that branch (`ProcessSys.run`). Code
upgrades (`upgrade.py`) are requests of the same kind.

Statistics are opt-in, as in OTP (`sys:statistics(Pid, true)`): while they are off the
process is not measured at all. Turned on, the process's three handlers are wrapped with a
timer (so the loop, which binds them once, runs the wrappers) and the node counts the
messages the process sends; turned off, both are removed again.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import CallTimeoutError, InvalidArgumentError, NoexError, ReplaceStateError, ServerNotRunningError
from .node_id import NodeId
from .refs import ProcessRef

if TYPE_CHECKING:
    from ._backend import Cancellable, FutureLike
    from .node import Node
    from .process import Process

HANDLERS = ("handle_call", "handle_cast", "handle_info")
HOLD_MAX_S = 60.0  # a hold (remote replace_state) lasts at most this long without its release


# ----------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class SuspendResult:
    """What `Sys.suspend` / `Sys.resume` did: `suspended` is the process's state afterwards,
    `changed` whether this request changed it, `queue_len` the messages waiting."""

    ref: ProcessRef
    suspended: bool
    changed: bool
    queue_len: int

    def __str__(self) -> str:
        now = "suspended" if self.suspended else "running"
        was = "" if self.changed else " (it already was)"
        return f"{self.ref} is {now}{was}; {self.queue_len} message(s) queued"


@dataclass(frozen=True)
class ProcessStatistics:
    """A process's statistics (`Sys.statistics`).

    `messages_in` (messages received: handled plus queued), `messages`, `queue_len` and
    `queue_high_water` are always known. `messages_out` (calls, casts and sends the process
    made, its timers included) and `handler_time_s` (wall-clock seconds spent in its
    handle_call / handle_cast / handle_info, awaits included) are counted only while
    statistics are `enabled`, since `enabled_at`. `restarts`: how often its supervisor
    restarted this child (None when no supervisor of it could be found)."""

    ref: ProcessRef
    behavior: str
    uptime_s: float
    messages_in: int
    messages: int
    queue_len: int
    queue_high_water: int
    restarts: int | None
    enabled: bool
    enabled_at: float | None = None  # wall-clock time statistics were turned on
    messages_out: int | None = None
    handler_time_s: float | None = None
    handled_since_enabled: int | None = None

    @property
    def mean_handler_ms(self) -> float | None:
        if self.handler_time_s is None or not self.handled_since_enabled:
            return None
        return self.handler_time_s * 1000.0 / self.handled_since_enabled

    def rows(self) -> list[tuple[str, str]]:
        def opt(value: Any, fmt: str = "{}") -> str:
            return "- (statistics off)" if value is None else fmt.format(value)

        mean = self.mean_handler_ms
        return [
            ("behavior", self.behavior),
            ("uptime", f"{self.uptime_s:.1f} s"),
            ("messages in", str(self.messages_in)),
            ("messages handled", str(self.messages) + ("" if self.handled_since_enabled is None
                                                        else f" ({self.handled_since_enabled} since statistics on)")),
            ("messages out", opt(self.messages_out)),
            ("time in handlers", opt(self.handler_time_s, "{:.6f} s")),
            ("mean per message", "-" if mean is None else f"{mean:.3f} ms"),
            ("queue / high-water", f"{self.queue_len} / {self.queue_high_water}"),
            ("restarts", "-" if self.restarts is None else str(self.restarts)),
            ("statistics", "on" if self.enabled else "off (Sys.statistics(target, enable=True))"),
        ]

    def __str__(self) -> str:
        return f"statistics of {self.ref}\n" + "\n".join(f"  {k:<20} {v}" for k, v in self.rows())

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))

    def _repr_html_(self) -> str:
        return _html_rows(f"statistics of {self.ref}", self.rows())


@dataclass(frozen=True)
class ProcessStatus:
    """Everything about one process at once (`Sys.get_status`, like OTP's `sys:get_status`).

    `state` is the state itself when it could be sent (`has_state`), else only `state_repr`;
    `details` is what the behavior adds (a `StateMachine`: its postponed events and timeouts)."""

    ref: ProcessRef
    node: NodeId | None
    name: str | None
    behavior: str
    vsn: str
    status: str
    suspended: bool
    queue_len: int
    queue_high_water: int
    messages: int
    uptime_s: float
    trap_exit: bool
    links: list[ProcessRef]
    monitored_by: int
    parent: ProcessRef | None
    statistics: bool
    state_repr: str
    state: Any = None
    has_state: bool = False
    upgrade_error: str | None = None
    details: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str]]:
        rows = [
            ("behavior", f"{self.behavior} (version {self.vsn})"),
            ("status", self.status),
            ("name", self.name or "-"),
            ("queue / high-water", f"{self.queue_len} / {self.queue_high_water}"),
            ("messages", str(self.messages)),
            ("uptime", f"{self.uptime_s:.1f} s"),
            ("links", ", ".join(map(str, self.links)) or "-"),
            ("monitored by", str(self.monitored_by)),
            ("trap_exit", str(self.trap_exit)),
            ("statistics", "on" if self.statistics else "off"),
        ]
        if self.upgrade_error:
            rows.append(("last upgrade", f"failed: {self.upgrade_error}"))
        rows.extend(self.details.items())
        rows.append(("state", self.state_repr))
        return rows

    def __str__(self) -> str:
        return f"status of {self.ref}\n" + "\n".join(f"  {k:<20} {v}" for k, v in self.rows())

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))

    def _repr_html_(self) -> str:
        return _html_rows(f"status of {self.ref}", self.rows())


def _html_rows(title: str, rows: list[tuple[str, str]]) -> str:
    from html import escape

    body = "".join(
        f"<tr><td style='padding:1px 8px;color:#666'>{escape(k)}</td>"
        f"<td style='padding:1px 8px'><code>{escape(v)}</code></td></tr>" for k, v in rows
    )
    return f"<div><b>{escape(title)}</b><table style='border-collapse:collapse;font-size:12px'>{body}</table></div>"


# ----------------------------------------------------------------------------------- per process
Notify = Callable[[Any, "BaseException | None"], None]


class SysOp:
    """One queued request: `run(proc, op)` runs between two messages and settles `fut`
    (and calls `notify(value, error)`, for requesters that do not await `fut`)."""

    __slots__ = ("fut", "notify", "run")

    def __init__(self, run: Callable[[Process, SysOp], Awaitable[None]], fut: FutureLike,
                 notify: Notify | None = None) -> None:
        self.run = run
        self.fut = fut
        self.notify = notify

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        if self.notify is not None:
            notify, self.notify = self.notify, None
            notify(value, error)
        if self.fut.done():  # the requester gave up (timeout): nobody waits for it any more
            return
        if error is not None:
            self.fut.set_exception(error)
        else:
            self.fut.set_result(value)


class Stats:
    """Counters of a process with statistics on."""

    __slots__ = ("enabled_at", "enabled_mono", "handled_at_start", "handler_time", "out")

    def __init__(self, proc: Process) -> None:
        clock = proc.node.clock
        self.enabled_at = clock.time()
        self.enabled_mono = clock.monotonic()
        self.handled_at_start = proc.handled
        self.handler_time = 0.0
        self.out = 0


class Hold:
    """A process parked for a remote `replace_state` until its release or its lease ends."""

    __slots__ = ("id", "timer")

    def __init__(self, hold_id: int) -> None:
        self.id = hold_id
        self.timer: Cancellable | None = None


class ProcessSys:
    """The system side of one process: queued requests, suspension, holds, statistics."""

    __slots__ = ("hold", "ops", "stats", "suspended", "upgrade_error")

    def __init__(self) -> None:
        self.ops: deque[SysOp] = deque()
        self.suspended = False
        self.hold: Hold | None = None
        self.stats: Stats | None = None
        self.upgrade_error: str | None = None  # why the last code upgrade failed (None after a good one)

    @property
    def parked(self) -> bool:
        """Handling no messages: suspended, or held for a remote replace_state."""
        return self.suspended or self.hold is not None

    @property
    def wants_loop(self) -> bool:
        return bool(self.ops) or self.suspended or self.hold is not None

    async def run(self, proc: Process) -> None:
        """Run the queued requests; while parked, wait (messages keep queueing) for the next
        request, a resume, a release, or a kill or shutdown."""
        new_future = proc.node.backend.new_future
        seen = 0  # mailbox items already looked at for a stop request
        while True:
            while self.ops:
                op = self.ops.popleft()
                if not op.fut.done():
                    await op.run(proc, op)
            if self.parked:
                seen = _stop_while_parked(proc, seen)
            if not self.parked or proc._kill_reason is not None or proc._shutdown_reason is not None:
                break
            wake = new_future()
            proc._wake = wake
            await wake
            proc._note_queue()
        proc._interrupted = (proc._kill_reason is not None or proc._shutdown_reason is not None
                             or proc._congestion is not None or self.wants_loop)

    def exited(self, proc: Process, reason: Any) -> None:
        """The process ended: requests still queued fail, statistics stop counting."""
        ops, self.ops = self.ops, deque()
        for op in ops:
            op.settle(error=ServerNotRunningError(proc.ref, reason))
        if self.hold is not None and self.hold.timer is not None:
            self.hold.timer.cancel()
        self.hold = None
        if self.stats is not None:
            self.stats = None
            _count_out(proc.node, -1)


def _stop_while_parked(proc: Process, seen: int) -> int:
    """A `GenServer.stop` that reached a parked process stops it now (like OTP, where a stop is
    a system message): the messages queued before it are not handled (calls among them fail)."""
    from .process import STOP

    mailbox = proc.mailbox
    for index in range(min(seen, len(mailbox)), len(mailbox)):
        item = mailbox[index]
        if item[0] == STOP:
            del mailbox[index]
            proc.add_stop_waiter(item[2])
            proc.request_shutdown(item[1])
            break
    return len(mailbox)


def sys_of(proc: Process) -> ProcessSys:
    if proc._sys is None:
        proc._sys = ProcessSys()
    return proc._sys


def _wake(proc: Process) -> None:
    wake = proc._wake
    if wake is not None:
        proc._wake = None
        if not wake.done():
            wake.set_result(None)


def check_running(proc: Process) -> None:
    """ServerNotRunningError unless `proc` will still handle messages."""
    if not proc._alive or proc._closed:
        raise ServerNotRunningError(proc.ref, proc._close_reason or proc.exit_reason or "noproc")


def request(proc: Process, run: Callable[[Process, SysOp], Awaitable[None]], notify: Notify | None = None,
            ) -> FutureLike:
    """Queue a system request on `proc`; it runs between two messages. Returns its future."""
    check_running(proc)
    fut = proc.node.backend.new_future()
    sys_of(proc).ops.append(SysOp(run, fut, notify))
    proc._interrupted = True
    _wake(proc)
    return fut


async def wait_request(proc: Process, fut: FutureLike, timeout: float, what: str) -> Any:
    """Wait for a request's result; after `timeout` it is withdrawn (if it has not run yet)."""
    from .node import current_process

    if current_process() is proc:
        fut.set_exception(InvalidArgumentError(f"process {proc.ref} asked itself to {what}; it would wait forever"))
    try:
        return await proc.node.backend.wait_future(fut, timeout)
    except TimeoutError as exc:
        if isinstance(exc, NoexError):
            raise
        if not fut.done():
            fut.set_exception(TimeoutError())  # withdrawn: the process skips it
        raise CallTimeoutError(proc.ref, timeout) from None


# ----------------------------------------------------------------------------------- suspend / resume
async def _suspend_op(proc: Process, op: SysOp) -> None:
    sys_ = sys_of(proc)
    changed = not sys_.suspended
    sys_.suspended = True
    op.settle(SuspendResult(proc.ref, True, changed, len(proc.mailbox)))


async def suspend(proc: Process, timeout: float = 5.0) -> SuspendResult:
    """Suspend `proc` at its next message boundary: it handles no messages (they queue) until
    `resume`; system requests (state, status, replace_state, upgrades) still run; kill and
    shutdown still work. Returns once it is suspended."""
    result: SuspendResult = await wait_request(proc, request(proc, _suspend_op), timeout, "suspend")
    proc.node.events.emit("process_suspended", ref=proc.ref, name=proc.name)
    return result


def resume(proc: Process) -> SuspendResult:
    """Let a suspended process handle its messages again (at once)."""
    check_running(proc)
    sys_ = proc._sys
    changed = sys_ is not None and sys_.suspended
    if sys_ is not None and changed:
        sys_.suspended = False
        proc._interrupted = True
        _wake(proc)
        proc.node.events.emit("process_resumed", ref=proc.ref, name=proc.name)
    return SuspendResult(proc.ref, False, changed, len(proc.mailbox))


# ----------------------------------------------------------------------------------- replace_state
SETTLE_S = 1.0  # how long replace_state waits for the messages queued before it (then goes ahead)


async def settle(proc: Process, wait: float = SETTLE_S) -> None:
    """Wait (at most `wait` s) until the messages queued in `proc` now are handled, so that a
    replace_state after a cast sees that cast (OTP keeps them in order); not while parked."""
    target = proc.handled + len(proc.mailbox)
    if not proc.alive or proc.handled >= target or (proc._sys is not None and proc._sys.parked):
        return
    done = proc.node.backend.new_future()

    def tracer(_kind: str, _msg: Any, _state: Any) -> None:
        if proc.handled >= target and not done.done():
            done.set_result(None)

    if proc.tracers is None:
        proc.tracers = []
    proc.tracers.append(tracer)
    try:
        with contextlib.suppress(TimeoutError):
            await proc.node.backend.wait_future(done, wait)
    finally:
        if tracer in proc.tracers:
            proc.tracers.remove(tracer)


async def replace_state(proc: Process, fn: Callable[[Any], Any], timeout: float = 5.0) -> Any:
    """Replace `proc`'s state with `fn(state)` (sync or async), run by the process between two
    messages, after the messages already queued (waiting for them at most SETTLE_S). If `fn`
    raises, the state stays as it was and `ReplaceStateError` says why. Returns the new state."""
    if not callable(fn):
        raise InvalidArgumentError(f"replace_state needs a function of the state, not {fn!r}")
    await settle(proc, min(SETTLE_S, timeout / 2))

    async def run(p: Process, op: SysOp) -> None:
        try:
            new = fn(p.state)
            if inspect.isawaitable(new):
                new = await new
        except Exception as exc:
            err = ReplaceStateError(f"the state function raised {type(exc).__name__}: {exc}; the state is unchanged")
            err.__cause__ = exc
            op.settle(error=err)
            return
        p.state = new
        op.settle(new)

    return await wait_request(proc, request(proc, run), timeout, "replace its state")


_hold_ids = itertools.count(1)


async def hold(proc: Process, lease: float, timeout: float = 5.0) -> tuple[int, Any]:
    """Park `proc` between two messages and hand out its state, for a `replace_state` whose
    function runs elsewhere (a remote caller). `release` installs the new state; without a
    release within `lease` seconds the process goes on unchanged. Returns (hold id, state)."""
    lease = min(lease, HOLD_MAX_S)
    await settle(proc, min(SETTLE_S, timeout / 2))

    async def run(p: Process, op: SysOp) -> None:
        sys_ = sys_of(p)
        held = Hold(next(_hold_ids))
        sys_.hold = held

        def expire() -> None:
            if sys_.hold is held:
                sys_.hold = None
                p._interrupted = True
                _wake(p)

        node = p.node
        held.timer = node.backend.call_later(lease, expire, lambda f: node.spawn_task(f, what="replace_state lease"))
        op.settle((held.id, p.state))

    result: tuple[int, Any] = await wait_request(proc, request(proc, run), timeout, "hold its state")
    return result


def release(proc: Process, hold_id: int, new_state: Any = None, *, replace: bool) -> bool:
    """End hold `hold_id`, installing `new_state` when `replace`; False if that hold is over."""
    sys_ = proc._sys
    held = sys_.hold if sys_ is not None else None
    if sys_ is None or held is None or held.id != hold_id or not proc._alive:
        return False
    if held.timer is not None:
        held.timer.cancel()
    sys_.hold = None
    if replace:
        proc.state = new_state  # the process is parked between two messages: no callback runs
    proc._interrupted = True
    _wake(proc)
    return True


# ----------------------------------------------------------------------------------- statistics
_counting: weakref.WeakKeyDictionary[Node, int] = weakref.WeakKeyDictionary()


def _count_out(node: Node, delta: int) -> None:
    """Count the messages processes with statistics on send: the node's `_send` and `call` are
    shadowed by counting versions while at least one such process runs on it (and only then)."""
    from .node import Node, current_process

    count = _counting.get(node, 0) + delta
    if count <= 0:
        _counting.pop(node, None)
        node.__dict__.pop("_send", None)
        node.__dict__.pop("call", None)
        return
    _counting[node] = count
    if count != delta:  # already counting
        return
    current = current_process
    send, call = Node._send, Node.call

    def note() -> None:
        me = current()
        if me is not None:
            sys_ = me._sys
            if sys_ is not None and sys_.stats is not None:
                sys_.stats.out += 1

    def counted_send(target: Any, tag: int, msg: Any, *more: Any) -> None:
        note()
        send(node, target, tag, msg, *more)

    async def counted_call(*args: Any, **kwargs: Any) -> Any:
        note()
        return await call(node, *args, **kwargs)

    node.__dict__["_send"] = counted_send
    node.__dict__["call"] = counted_call


def _timed(fn: Callable[..., Any], stats: Stats, is_async: bool, clock: Callable[[], float]) -> Callable[..., Any]:
    if is_async:
        async def timed_async(msg: Any, state: Any) -> Any:
            t0 = clock()
            try:
                return await fn(msg, state)
            finally:
                stats.handler_time += clock() - t0

        return timed_async

    def timed(msg: Any, state: Any) -> Any:
        t0 = clock()
        try:
            return fn(msg, state)
        finally:
            stats.handler_time += clock() - t0

    return timed


def wrap_handlers(proc: Process) -> None:
    """Time the handlers of `proc.server` (statistics on); the loop rebinds them after a request."""
    stats = proc._sys.stats if proc._sys is not None else None
    if stats is None:
        return
    server, cls = proc.server, proc.behavior
    flags = (cls._noex_call_async, cls._noex_cast_async, cls._noex_info_async)
    for attr, is_async in zip(HANDLERS, flags, strict=True):
        method = getattr(cls, attr).__get__(server)
        server.__dict__[attr] = _timed(method, stats, is_async, proc.node.clock.perf_counter)


def unwrap_handlers(server: Any) -> None:
    for attr in HANDLERS:
        server.__dict__.pop(attr, None)


async def set_statistics(proc: Process, enable: bool, timeout: float = 5.0) -> None:
    """Turn statistics on (counters start at zero) or off, between two messages."""

    async def run(p: Process, op: SysOp) -> None:
        sys_ = sys_of(p)
        if enable and sys_.stats is None:
            sys_.stats = Stats(p)
            _count_out(p.node, +1)
            wrap_handlers(p)
        elif not enable and sys_.stats is not None:
            sys_.stats = None
            _count_out(p.node, -1)
            unwrap_handlers(p.server)
        op.settle(None)

    await wait_request(proc, request(proc, run), timeout, "change its statistics")


def restarts_of(node: Node, ref: ProcessRef) -> int | None:
    """How often the supervisor (on `node`) that runs `ref` restarted that child, or None."""
    from .supervisor import SupervisorServer

    for proc in node.processes():
        state = proc.state
        if isinstance(proc.server, SupervisorServer) and state is not None:
            for child in getattr(state, "children", ()):
                if child.ref == ref:
                    return int(child.restarts)
    return None


def statistics(proc: Process) -> ProcessStatistics:
    """The statistics of a local process (read without disturbing it)."""
    stats = proc._sys.stats if proc._sys is not None else None
    queued = len(proc.mailbox)
    common: dict[str, Any] = dict(
        ref=proc.ref, behavior=proc.behavior.__name__, uptime_s=proc.node.clock.monotonic() - proc.started_at,
        messages_in=proc.handled + queued, messages=proc.handled, queue_len=queued,
        queue_high_water=max(proc.queue_high_water, queued), restarts=restarts_of(proc.node, proc.ref),
    )
    if stats is None:
        return ProcessStatistics(**common, enabled=False)
    return ProcessStatistics(
        **common, enabled=True, enabled_at=stats.enabled_at, messages_out=stats.out,
        handler_time_s=stats.handler_time, handled_since_enabled=proc.handled - stats.handled_at_start,
    )


# ----------------------------------------------------------------------------------- status
def get_status(proc: Process, state_repr: Callable[[Any], str], encodable: Callable[[Any], bool] | None = None,
               ) -> ProcessStatus:
    """The status of a local process (read without disturbing it)."""
    from .upgrade import version_of

    sys_ = proc._sys
    state = proc.state
    ok = True if encodable is None else encodable(state)
    details: dict[str, str] = {}
    describe = getattr(proc.server, "noex_status", None)
    if callable(describe):
        try:
            details = {str(k): str(v) for k, v in dict(describe(state)).items()}
        except Exception as exc:  # a broken hook must not break the tool
            details = {"noex_status": f"raised {type(exc).__name__}: {exc}"}
    queued = len(proc.mailbox)
    return ProcessStatus(
        ref=proc.ref, node=proc.node.id, name=proc.name, behavior=proc.behavior.__name__,
        vsn=version_of(proc.behavior), status=proc.status, suspended=sys_ is not None and sys_.parked,
        queue_len=queued, queue_high_water=max(proc.queue_high_water, queued), messages=proc.handled,
        uptime_s=proc.node.clock.monotonic() - proc.started_at, trap_exit=proc.trap_exit,
        links=sorted(proc.links, key=str), monitored_by=len(proc.monitors), parent=proc.parent,
        statistics=sys_ is not None and sys_.stats is not None, state_repr=state_repr(state),
        state=state if ok else None, has_state=ok,
        upgrade_error=sys_.upgrade_error if sys_ is not None else None, details=details,
    )
