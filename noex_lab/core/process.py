"""A process: one task, one mailbox, messages handled strictly one at a time.

The runner catches everything a callback raises and turns it into an exit reason
(let it crash); nothing escapes into the node's task group.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import anyio

from ._backend import Cancellable, FutureLike
from .errors import BadReturnError, CallError, InitError, ServerNotRunningError
from .messages import Exit, NoReply, Stop
from .reasons import KILLED, NORMAL, ErrorReason, ExitReason
from .refs import MonitorRef, ProcessRef

if TYPE_CHECKING:
    from .genserver import GenServer
    from .mailbox import MailboxBound
    from .node import Node
    from .router import Congestion
    from .systools import ProcessSys

# The node and the process the running code belongs to (re-exported by `node`).
CURRENT_NODE: ContextVar[Node | None] = ContextVar("noex_current_node", default=None)
CURRENT_PROCESS: ContextVar[Process | None] = ContextVar("noex_current_process", default=None)

# Mailbox item tags. Items: (CALL, msg, reply, sender), (CAST, msg), (INFO, msg), (STOP, reason, waiter)
CALL, CAST, INFO, STOP = 0, 1, 2, 3

# How many messages a process handles before yielding to the loop (fairness, like reductions).
YIELD_EVERY = 128

# Exceptions from user callbacks that crash the process instead of the node.
CRASHES = (Exception, KeyboardInterrupt, SystemExit)

# The mailbox of a process whose loop ended: nothing is queued there any more (`deliver`
# refuses), and a deque of maxlen 0 would drop anything appended by mistake. One for all.
_CLOSED_MAILBOX: deque[tuple[Any, ...]] = deque(maxlen=0)


def bad_call_return(cls: type, result: Any) -> BadReturnError:
    """What `handle_call` returning `result` raises (the loop and `run_now` alike)."""
    return BadReturnError(f"{cls.__name__}.handle_call returned {result!r}; return "
                          "(reply, new_state), NoReply(new_state) or Stop(reason, new_state)")


def noreply_outside_call(cls: type) -> BadReturnError:
    """What a cast or info handler returning `NoReply` raises."""
    return BadReturnError(f"{cls.__name__}: NoReply is only valid from handle_call")


def _idle(*args: Any) -> Any:
    """Stands for a handler while the process waits (never called)."""
    raise AssertionError("a handler was called while its process was idle")


class _InitDone:
    """Stands for the start handshake's future once init succeeded (the process no longer holds it)."""

    __slots__ = ()

    def done(self) -> bool:
        return True


_INIT_DONE: Any = _InitDone()


def crash_error(exc: BaseException, proc: Process | None = None) -> CallError:
    """The `CallError` a caller gets when the server `proc` raised handling its call."""
    reason = ErrorReason.from_exception(exc)
    if proc is None:
        err = CallError(reason.exc_type, reason.message, reason.traceback)
    else:
        err = CallError(reason.exc_type, reason.message, reason.traceback, process=proc.ref,
                        behavior=proc.behavior.__name__, node=proc.node.id)
    err.__cause__ = exc
    return err


class Process:
    """Runtime record of one process (internal; users hold `ProcessRef`s)."""

    __slots__ = (
        "__weakref__",
        "_alive",
        "_close_reason",
        "_closed",
        "_congestion",
        "_congestion_wake",
        "_crashed_on",
        "_ending",
        "_interrupted",
        "_kill_reason",
        "_links",
        "_monitors",
        "_scope",
        "_shutdown_reason",
        "_stop_waiters",
        "_sys",
        "_task",
        "_unanswered",
        "_wake",
        "_watching",
        "behavior",
        "bound",
        "caller",
        "exit_reason",
        "fence_gate",
        "handled",
        "mailbox",
        "name",
        "node",
        "parent",
        "pid",
        "queue_high_water",
        "ref",
        "reply_to",
        "server",
        "started_at",
        "state",
        "tracers",
        "trap_exit",
    )

    def __init__(self, node: Node, pid: int, ref: ProcessRef, behavior: type[GenServer]) -> None:
        # Rarely used structures (links, monitors, stop waiters, owed replies) stay None until
        # first used: a node may hold 100,000 processes, most of which never need them.
        self.node = node
        self.pid = pid
        self.ref = ref
        self.behavior = behavior
        self.server: GenServer = behavior()
        self.server._noex_process = self
        self.state: Any = None
        self.mailbox: deque[tuple[Any, ...]] = deque()
        self.bound: MailboxBound | None = None  # set by `mailbox.BoundedProcess`
        self.queue_high_water: int = 0  # the longest the mailbox has been (see `_note_queue`)
        self.name: str | None = None
        self.trap_exit: bool = bool(behavior.trap_exit)
        self._links: set[ProcessRef] | None = None  # see `links`
        self._monitors: dict[MonitorRef, Any] | None = None  # see `monitors`
        self._watching: dict[MonitorRef, ProcessRef] | None = None  # see `watching`
        self.started_at = node.clock.monotonic()
        self.handled: int = 0
        self.exit_reason: ExitReason = None
        self.parent: ProcessRef | None = None
        # set on supervised and globally named processes of a node with a partition policy:
        # checked before each message, it fences the node (killing this process) after a pause
        self.fence_gate: Callable[[], bool] | None = None
        self.reply_to: FutureLike | None = None
        self.caller: ProcessRef | None = None
        self._wake: FutureLike | None = None
        self._kill_reason: ExitReason = None
        self._shutdown_reason: ExitReason = None
        # a busy outgoing connection this process cast into: it waits for it before its next message
        self._congestion: Congestion | None = None
        self._congestion_wake: FutureLike | None = None
        self._interrupted = False  # one of the three above is set: the loop checks this per message
        # what `kill` cancels once `main` runs: the task itself (asyncio) or a cancel scope (trio)
        self._scope: Cancellable | None = None
        self._task: asyncio.Task[None] | None = None  # asyncio: the task running `main`
        self._stop_waiters: list[FutureLike] | None = None  # settled with the exit reason
        # replies owed to callers whose handle_call returned NoReply or Stop without reply
        self._unanswered: list[FutureLike] | None = None
        # set once no message will be handled any more (the loop ended): calls fail at once
        self._closed = False
        self._close_reason: ExitReason = None
        self._crashed_on: tuple[str, Any] | None = None  # (kind, message) a callback crashed on, for the report
        # how a message handled at once (`run_now`) ended the process, for the loop to finish:
        # (reason, the call's reply or None, its Stop reply, the crash error for the caller)
        self._ending: tuple[ExitReason, FutureLike | None, Any, BaseException | None] | None = None
        self._alive = True
        self.tracers: list[Callable[[str, Any, Any], None]] | None = None
        # live process tools and code upgrades (`systools`): None until one is used
        self._sys: ProcessSys | None = None

    @property
    def links(self) -> set[ProcessRef]:
        """The processes linked to this one (created on first use)."""
        links = self._links
        if links is None:
            links = self._links = set()
            if self._alive:  # (a snapshot lists the links and monitors of these only)
                self.node._linked.add(self)
        return links

    @property
    def monitors(self) -> dict[MonitorRef, Any]:
        """Monitors held on this process: mref -> watcher (a ProcessRef or a callback)."""
        monitors = self._monitors
        if monitors is None:
            monitors = self._monitors = {}
            if self._alive:  # (a snapshot lists the links and monitors of these only)
                self.node._linked.add(self)
        return monitors

    @property
    def watching(self) -> dict[MonitorRef, ProcessRef]:
        """Monitors this process holds on others: mref -> target ref."""
        watching = self._watching
        if watching is None:
            watching = self._watching = {}
        return watching

    def add_stop_waiter(self, waiter: FutureLike) -> None:
        """`waiter` gets the exit reason once the process has exited."""
        if self._stop_waiters is None:
            self._stop_waiters = [waiter]
        else:
            self._stop_waiters.append(waiter)

    # ------------------------------------------------------------------ delivery
    def deliver(self, item: tuple[Any, ...]) -> None:
        """Append to the mailbox and wake the runner (cheap: this is the hot path)."""
        if self._closed:
            self._refuse(item)
            return
        self.mailbox.append(item)
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():
                wake.set_result(None)

    @property
    def alive(self) -> bool:
        return self._alive

    def wait_for(self, congestion: Congestion) -> None:
        """Back-pressure: before its next message, wait until `congestion` is no longer busy."""
        self._congestion = congestion
        self._interrupted = True

    async def _wait_congestion(self) -> None:
        """Wait until the busy connection drains (or the connection closes, or a kill or a
        shutdown request comes); messages arriving meanwhile stay queued."""
        congestion, self._congestion = self._congestion, None
        self._interrupted = (self._kill_reason is not None or self._shutdown_reason is not None
                             or (self._sys is not None and self._sys.wants_loop))
        if congestion is None or not congestion.congested or self._interrupted:
            return
        fut = self.node.backend.new_future()
        self._congestion_wake = fut
        congestion.add_space_waiter(fut)
        try:
            await fut
        finally:
            self._congestion_wake = None

    def kill(self, reason: ExitReason) -> None:
        """Terminate at once, without `terminate` (exit signal / `node.kill`)."""
        if not self._alive or self._kill_reason is not None:
            return
        self._kill_reason = reason
        self._interrupted = True
        if self._scope is not None:
            self._scope.cancel()

    def request_shutdown(self, reason: ExitReason) -> None:
        """Finish the current message, run `terminate(reason)`, exit; queued messages are dropped."""
        if not self._alive or self._shutdown_reason is not None:
            return
        self._shutdown_reason = reason
        self._interrupted = True
        for wake in (self._wake, self._congestion_wake):
            if wake is not None and not wake.done():
                wake.set_result(None)
        self._wake = None

    async def wait_exit(self, timeout: float | None) -> bool:
        """Wait for the exit; False on timeout."""
        if not self._alive:
            return True
        # A private future: a timeout (or cancellation) settles only this waiter.
        waiter = self.node.backend.new_future()
        self.add_stop_waiter(waiter)
        try:
            await self.node.backend.wait_future(waiter, timeout)
        except TimeoutError:
            return not self._alive
        return True

    def exit_signal(self, from_: ProcessRef, reason: ExitReason) -> None:
        """A linked process exited with `reason` (OTP exit-signal rules)."""
        if self._links is not None:
            self._links.discard(from_)
        if not self._alive:
            return
        if self.trap_exit:
            self.deliver((INFO, Exit(from_, reason)))
        elif reason != NORMAL:
            self.kill(reason)

    @property
    def status(self) -> str:
        if not self._alive:
            return "exited"
        if self._closed or self._shutdown_reason is not None or self._kill_reason is not None:
            return "stopping"
        if self._sys is not None and self._sys.parked:
            return "suspended"
        if self._wake is not None:
            return "waiting"
        return "running"

    # ------------------------------------------------------------------ running
    async def main(self, arg: Any, started: FutureLike | None, init_timeout: float) -> None:
        """Task body on asyncio: init (unless `started` is None: `init_now` ran it), then the
        message loop; always ends in `_finish`.

        The process is a bare asyncio task (no anyio task group or cancel scope, whose
        bookkeeping cost more than the rest of a start), so `kill` cancels the task itself once
        it runs (a kill before that is seen here at once). A cancellation with no kill requested
        comes from the loop shutting down: the process ends "killed" and lets it through."""
        CURRENT_NODE.set(self.node)
        CURRENT_PROCESS.set(self)
        reason: ExitReason = KILLED
        run_terminate = False
        task = self._task  # (set by the spawner before this task's first step)
        assert task is not None
        if started is None:  # init already ran (`init_now`)
            started = _INIT_DONE
        try:
            if self._kill_reason is None:
                self._scope = task
                try:
                    if started is not _INIT_DONE:
                        if not await self._init(arg, started, init_timeout):
                            return
                        arg = None  # this frame lives as long as the process: keep neither alive
                        started = _INIT_DONE
                    reason, run_terminate = await self._loop()
                    self._close_mailbox(reason)
                except asyncio.CancelledError:
                    if self._kill_reason is None:
                        raise
                    task.uncancel()
            if self._kill_reason is not None:
                reason, run_terminate = self._kill_reason, False
            terminate = getattr(self.server, "terminate", None) if run_terminate else None
            if terminate is not None:  # (without one, no coroutine to make and await)
                try:
                    reason = await self._terminate(terminate, reason)
                except asyncio.CancelledError:
                    if self._kill_reason is None:
                        raise
                    task.uncancel()
                    reason = self._kill_reason
        except asyncio.CancelledError:
            self._fail_init(started, KILLED)
            self._finish(KILLED)
            raise
        except BaseException as exc:  # a bug in the runtime itself: report, never swallow
            self.node.events.report_error(f"process {self.ref} runner failed", exc)
            reason = ErrorReason.from_exception(exc)
        if started is not _INIT_DONE:
            self._fail_init(started, reason)
        self._finish(reason)

    async def main_scoped(self, arg: Any, started: FutureLike, init_timeout: float) -> None:
        """Task body on trio (in the node's task group): as `main`, with a cancel scope for `kill`."""
        CURRENT_NODE.set(self.node)
        CURRENT_PROCESS.set(self)
        cancelled = anyio.get_cancelled_exc_class()
        reason: ExitReason = KILLED
        run_terminate = False
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                if self._kill_reason is not None:
                    scope.cancel()
                    await anyio.lowlevel.checkpoint()
                ok = await self._init(arg, started, init_timeout)
                if not ok:
                    return
                reason, run_terminate = await self._loop()
                self._close_mailbox(reason)
            if scope.cancelled_caught or self._kill_reason is not None:
                reason, run_terminate = self._kill_reason or KILLED, False
            terminate = getattr(self.server, "terminate", None) if run_terminate else None
            if terminate is not None:
                with anyio.CancelScope() as terminate_scope:
                    self._scope = terminate_scope
                    if self._kill_reason is not None:
                        terminate_scope.cancel()
                    reason = await self._terminate(terminate, reason)
                if terminate_scope.cancelled_caught:
                    reason = self._kill_reason or KILLED
        except cancelled:
            # The node's task group is going away (node killed, loop closing).
            self._fail_init(started, KILLED)
            self._finish(KILLED)
            raise
        except BaseException as exc:  # a bug in the runtime itself: report, never swallow
            self.node.events.report_error(f"process {self.ref} runner failed", exc)
            reason = ErrorReason.from_exception(exc)
        self._fail_init(started, reason)
        self._finish(reason)

    def _fail_init(self, started: FutureLike, reason: ExitReason) -> None:
        if not started.done():
            started.set_exception(
                InitError(self.behavior.__name__, f"the process exited during init ({reason})", reason)
            )

    def init_now(self, arg: Any) -> InitError | None:
        """Run a plain (not async) `init` at once, in the spawner's task (asyncio): it cannot
        await, so nothing can interleave with it or interrupt it, and the process's task then
        starts straight in its loop (a start costs one turn of the event loop, not two). Runs
        with this process as the current one; returns the error for the spawner, if any (the
        process has then exited)."""
        node_token = CURRENT_NODE.set(self.node)
        process_token = CURRENT_PROCESS.set(self)
        try:
            try:
                if self.behavior._noex_init_takes_arg:
                    result = self.server.init(arg)
                else:
                    result = self.server.init()  # type: ignore[call-arg]
            except CRASHES as exc:
                err, reason = self._init_crashed(exc, arg)
            else:
                if not isinstance(result, Stop):
                    self.state = result
                    return None
                err, reason = self._init_stopped(result)
            self._finish(reason)
            return err
        finally:
            CURRENT_PROCESS.reset(process_token)
            CURRENT_NODE.reset(node_token)

    def _init_crashed(self, exc: BaseException, arg: Any) -> tuple[InitError, ExitReason]:
        reason = ErrorReason.from_exception(exc)
        self._crashed_on = ("init", arg)
        err = InitError(self.behavior.__name__, f"{type(exc).__name__}: {exc}", reason)
        err.__cause__ = exc
        return err, reason

    def _init_stopped(self, result: Stop) -> tuple[InitError, ExitReason]:
        reason = result.reason
        return InitError(self.behavior.__name__, f"init returned Stop({reason!r})", reason), reason

    async def _init(self, arg: Any, started: FutureLike, timeout: float) -> bool:
        server = self.server
        cls = self.behavior
        try:
            if cls._noex_init_takes_arg:
                result = server.init(arg)
            else:
                result = server.init()  # type: ignore[call-arg]
            if cls._noex_init_async:  # only an init that awaits can be interrupted by its deadline
                with anyio.fail_after(timeout):
                    result = await result
        except TimeoutError as exc:
            reason: ExitReason = ErrorReason("InitTimeout", f"init did not finish within {timeout:g} s")
            err = InitError(cls.__name__, f"init did not finish within {timeout:g} s", reason)
            err.__cause__ = exc
            self._finish_init_failure(started, err, reason)
            return False
        except CRASHES as exc:
            err, reason = self._init_crashed(exc, arg)
            self._finish_init_failure(started, err, reason)
            return False
        if isinstance(result, Stop):
            err, reason = self._init_stopped(result)
            self._finish_init_failure(started, err, reason)
            return False
        self.state = result
        if not started.done():
            started.set_result(self.ref)
        return True

    def _finish_init_failure(self, started: FutureLike, err: InitError, reason: ExitReason) -> None:
        if not started.done():
            started.set_exception(err)
        self._finish(reason)

    async def _loop(self) -> tuple[ExitReason, bool]:
        """Handle messages until a stop; returns (reason, whether to run terminate)."""
        mailbox = self.mailbox
        server = self.server
        cls = self.behavior
        backend = self.node.backend
        handle_call: Callable[..., Any] = server.handle_call
        handle_cast: Callable[..., Any] = server.handle_cast
        handle_info: Callable[..., Any] = server.handle_info
        call_async = cls._noex_call_async
        cast_async = cls._noex_cast_async
        info_async = cls._noex_info_async
        budget = 0
        self._note_queue()  # messages that came during init
        while True:
            if self._interrupted:  # kill(), request_shutdown(), wait_for() or a system request
                if self._kill_reason is not None:
                    return self._kill_reason, False
                if self._ending is not None:  # a message handled at once (`run_now`) ended it
                    return self._end_now_handled()
                if self._shutdown_reason is not None:
                    return self._shutdown_reason, True
                if self._sys is not None and self._sys.wants_loop:  # between two messages: may swap the code
                    await self._sys.run(self)
                    server, cls = self.server, self.behavior
                    handle_call, handle_cast, handle_info = server.handle_call, server.handle_cast, server.handle_info
                    call_async, cast_async, info_async = (
                        cls._noex_call_async, cls._noex_cast_async, cls._noex_info_async)
                    continue
                await self._wait_congestion()
                self._note_queue()
                continue
            if not mailbox:
                budget = 0
                # Idle, it holds no bound handlers: with 100,000 mostly idle processes they would
                # be 3 of the ~20 objects each keeps (memory, and the collector walks them all).
                handle_call = handle_cast = handle_info = _idle
                wake = backend.new_future()
                self._wake = wake
                await wake
                queued = len(mailbox)  # (`_note_queue` inlined: one call less per wake-up)
                if queued > self.queue_high_water:
                    self.queue_high_water = queued
                handle_call, handle_cast, handle_info = server.handle_call, server.handle_cast, server.handle_info
                continue
            budget += 1
            if budget >= YIELD_EVERY:
                budget = 0
                await anyio.lowlevel.checkpoint()
                self._note_queue()
            if self.fence_gate is not None and self.fence_gate():
                continue  # the node fenced itself: this process was killed (returned at the top)
            item = mailbox.popleft()
            tag = item[0]
            self.handled += 1
            try:
                if tag == CALL:
                    reply = item[2]
                    self.reply_to = reply
                    self.caller = item[3]
                    result = handle_call(item[1], self.state)
                    if call_async:
                        result = await result
                        self._note_queue()
                    self.reply_to = None
                    if type(result) is tuple and len(result) == 2:
                        self.state = result[1]
                        try:  # (cheaper than asking `reply.done()` first: the caller nearly always waits)
                            reply.set_result(result[0])
                        except asyncio.InvalidStateError:  # the caller stopped waiting (timed out, cancelled)
                            pass
                    elif isinstance(result, NoReply):
                        self.state = result.state
                        self._owe_reply(reply)
                    elif isinstance(result, Stop):
                        self.state = result.state
                        if result.has_reply:
                            if not reply.done():
                                reply.set_result(result.reply)
                        else:  # terminate may still answer it with GenServer.reply
                            self._owe_reply(reply)
                        return result.reason, True
                    else:
                        raise bad_call_return(cls, result)
                else:  # (one test per tag: a cast, the most frequent, costs two)
                    if tag == CAST:
                        result = handle_cast(item[1], self.state)
                        if cast_async:
                            result = await result
                            self._note_queue()
                    elif tag == INFO:
                        result = handle_info(item[1], self.state)
                        if info_async:
                            result = await result
                            self._note_queue()
                    else:  # STOP
                        self.add_stop_waiter(item[2])
                        return item[1], True
                    kind = type(result)
                    if kind is Stop or kind is NoReply:  # (neither can be subclassed)
                        if kind is NoReply:
                            raise noreply_outside_call(cls)
                        self.state = result.state
                        return result.reason, True
                    self.state = result
                if self.tracers:
                    self._trace(tag, item[1])
            except CRASHES as exc:
                self.reply_to = None
                self._crashed_on = (("call", "cast", "info", "stop")[tag], item[1])
                if tag == CALL and not item[2].done():
                    item[2].set_exception(crash_error(exc, self))
                return ErrorReason.from_exception(exc), True

    # ------------------------------------------------------------------ direct hand-off
    def run_now(self, item: tuple[Any, ...]) -> bool:
        """Handle `item` (CALL, CAST or INFO) at once in the deliverer's task, if this process is
        parked idle and the handler is plain; False, with nothing done, otherwise (deliver it).

        Idle means the loop awaits its wake-up with an empty mailbox and nothing pending (kill,
        shutdown, congestion, system request, fencing gate, statistics): running the handler
        here is what the loop would do next, minus a task switch, and the process still handles
        one message at a time (its wake-up is taken while the handler runs, so a message sent
        meanwhile queues and wakes the loop). A Stop or a crash is handed to the loop, which
        answers the call and exits exactly as if it had handled the message itself. Bounded per
        turn of the event loop (`Node.inline_left`): whoever runs handlers here yields regularly."""
        wake = self._wake
        if wake is None or self._interrupted or self._closed or self.fence_gate is not None:
            return False
        tag = item[0]
        cls = self.behavior
        if cls._noex_call_async if tag == CALL else cls._noex_cast_async if tag == CAST else cls._noex_info_async:
            return False
        sys_ = self._sys
        if sys_ is not None and (sys_.wants_loop or sys_.stats is not None):
            return False
        node = self.node
        left = node.inline_left
        if left <= 0:
            return False
        if left == YIELD_EVERY:  # the first of this turn: the budget comes back on the next one
            node.backend.call_soon(node.refill_inline)
        node.inline_left = left - 1
        self._wake = None  # running: a message sent to it meanwhile queues
        if not self.queue_high_water:  # (as if it had been in the mailbox)
            self.queue_high_water = 1
        node_token = CURRENT_NODE.set(node)
        process_token = CURRENT_PROCESS.set(self)
        try:
            self._handle_now(tag, item)
        except BaseException as exc:  # (not a crash: a cancellation raised by the handler itself)
            # In its own task this would end the process "killed": so here, without the error
            # reaching the deliverer, whose task it does not concern.
            self.node.events.report_error(f"process {self.ref} handler raised {type(exc).__name__}", exc)
            self.kill(KILLED)
        finally:
            CURRENT_PROCESS.reset(process_token)
            CURRENT_NODE.reset(node_token)
        if self._interrupted or self.mailbox:
            if not wake.done():  # (a kill cancelled it)
                wake.set_result(None)
        else:
            self._wake = wake
        return True

    def _handle_now(self, tag: int, item: tuple[Any, ...]) -> None:
        """One message, as `_loop` handles it with a plain handler (keep the two in step)."""
        server = self.server
        self.handled += 1
        try:
            if tag == CALL:
                reply = item[2]
                self.reply_to = reply
                self.caller = item[3]
                result = server.handle_call(item[1], self.state)
                self.reply_to = None
                if type(result) is tuple and len(result) == 2:
                    self.state = result[1]
                    try:
                        reply.set_result(result[0])
                    except asyncio.InvalidStateError:  # answered already (GenServer.reply) or gave up
                        pass
                elif isinstance(result, NoReply):
                    self.state = result.state
                    self._owe_reply(reply)
                elif isinstance(result, Stop):
                    self.state = result.state
                    if not result.has_reply:  # terminate may still answer it with GenServer.reply
                        self._owe_reply(reply)
                    self._end_later(result.reason, reply if result.has_reply else None, result.reply)
                    return
                else:
                    raise bad_call_return(self.behavior, result)
            else:
                if tag == CAST:
                    result = server.handle_cast(item[1], self.state)
                else:
                    result = server.handle_info(item[1], self.state)
                kind = type(result)
                if kind is Stop or kind is NoReply:
                    if kind is NoReply:
                        raise noreply_outside_call(self.behavior)
                    self.state = result.state
                    self._end_later(result.reason)
                    return
                self.state = result
            if self.tracers:
                self._trace(tag, item[1])
        except CRASHES as exc:
            self.reply_to = None
            self._crashed_on = (("call", "cast", "info")[tag], item[1])
            if tag == CALL:
                self._end_later(ErrorReason.from_exception(exc), item[2], None, crash_error(exc, self))
            else:
                self._end_later(ErrorReason.from_exception(exc))

    def _end_later(self, reason: ExitReason, reply: FutureLike | None = None, value: Any = None,
                   error: BaseException | None = None) -> None:
        """A message handled at once ended the process: the loop answers `reply` (with `error`,
        else `value`) and exits, in the process's own task, as after a message it handled."""
        self._ending = (reason, reply, value, error)
        self.reply_to = reply  # (a kill before the loop runs fails it, as a call being handled)
        self._interrupted = True

    def _end_now_handled(self) -> tuple[ExitReason, bool]:
        """The loop's side of `_end_later`: answer the call, then exit running terminate."""
        assert self._ending is not None
        reason, reply, value, error = self._ending
        self._ending = None
        self.reply_to = None
        if reply is not None and not reply.done():
            if error is not None:
                reply.set_exception(error)
            else:
                reply.set_result(value)
        return reason, True

    def _note_queue(self) -> None:
        """Update `queue_high_water` (called where the loop resumes after an await).

        Others can only add messages while this process awaits, so the mailbox is checked after
        each await, not per message (that would cost the hot loop); messages a process sends
        itself during one run of callbacks are seen within YIELD_EVERY messages."""
        queued = len(self.mailbox)
        if queued > self.queue_high_water:
            self.queue_high_water = queued

    def _trace(self, tag: int, msg: Any) -> None:
        kind = {CALL: "call", CAST: "cast", INFO: "info"}.get(tag, "stop")
        for tracer in tuple(self.tracers or ()):
            try:
                tracer(kind, msg, self.state)
            except Exception as exc:
                self.node.events.report_error(f"tracer on {self.ref} raised", exc)

    async def _terminate(self, terminate: Callable[..., Any], reason: ExitReason) -> ExitReason:
        """Run the behavior's `terminate` callback; a crash there replaces the reason."""
        try:
            result = terminate(reason, self.state)
            if inspect.isawaitable(result):
                await result
        except CRASHES as exc:
            return ErrorReason.from_exception(exc)
        return reason

    def _owe_reply(self, reply: FutureLike) -> None:
        """Remember a reply still owed after handle_call, to fail it if the process exits first."""
        owed = self._unanswered
        if owed is None:
            owed = self._unanswered = []
        owed.append(reply)
        if len(owed) >= 64 and len(owed) & (len(owed) - 1) == 0:  # prune answered ones now and then
            owed[:] = [f for f in owed if not f.done()]

    def _close_mailbox(self, reason: ExitReason) -> None:
        """No message will be handled any more: fail queued calls now, drop the rest.

        Runs when the loop ends, before `terminate`, so callers never wait for it, and on exit."""
        self._closed = True
        self._close_reason = reason
        pending, self.mailbox = self.mailbox, _CLOSED_MAILBOX
        self.queue_high_water = max(self.queue_high_water, len(pending))
        for item in pending:
            self._refuse(item)

    def _refuse(self, item: tuple[Any, ...]) -> None:
        """Answer a message that arrived after the mailbox closed."""
        tag = item[0]
        if tag == CALL:
            reply = item[2]
            if not reply.done():
                reply.set_exception(ServerNotRunningError(self.ref, self._close_reason))
        elif tag == STOP:
            waiter = item[2]
            if self._alive:
                self.add_stop_waiter(waiter)  # settled with the exit reason by _finish
            elif not waiter.done():
                waiter.set_result(self.exit_reason)

    def _finish(self, reason: ExitReason) -> None:
        """Exit bookkeeping (synchronous): fail queued calls, fire links and monitors, notify."""
        if not self._alive:
            return
        self._alive = False
        self.exit_reason = reason
        self.node._process_exited(self, reason)
        if self._closed:  # (the loop closed it: already empty; calls refused from now on get this reason)
            self._close_reason = reason
        else:
            self._close_mailbox(reason)
        if self._sys is not None:
            self._sys.exited(self, reason)
        # replies still owed: the call being handled when the process was killed, NoReply/Stop ones
        owed = self._unanswered or []
        self._unanswered = None
        if self.reply_to is not None:
            owed.append(self.reply_to)
            self.reply_to = None
        for reply in owed:
            if not reply.done():
                reply.set_exception(ServerNotRunningError(self.ref, reason))
        waiters, self._stop_waiters = self._stop_waiters, None
        if waiters is not None:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(reason)
