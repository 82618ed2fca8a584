"""`Node`: the node-local runtime (process table, names, links, monitors, timers).

A node hosts its processes in one anyio task group that lives inside a background
task on the running loop, so it can be created lazily from anywhere (a notebook
cell, a test, a script) without an enclosing `async with`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import os
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from threading import get_ident
from typing import TYPE_CHECKING, Any

import anyio
import sniffio
from anyio.abc import TaskGroup

from ._backend import AsyncioBackend, Backend, Cancellable, current_backend, current_loop_key
from .clock import SYSTEM_CLOCK, SYSTEM_ENTROPY, Clock, Entropy
from .crash_report import report_crash
from .errors import (
    CallTimeoutError,
    InvalidArgumentError,
    NodeNotReachableError,
    NodeStoppedError,
    NotRegisteredError,
    ServerNotRunningError,
)
from .events import EventStream
from .mailbox import BoundedProcess, MailboxBound, check_mailbox_options
from .messages import Down
from .named import not_distributed, split_named
from .node_id import NodeId
from .process import CALL, CAST, CURRENT_NODE, CURRENT_PROCESS, INFO, STOP, YIELD_EVERY, Process
from .reasons import KILLED, NOCONNECTION, NOPROC, NORMAL, SHUTDOWN, ExitReason
from .refs import MonitorRef, ProcessRef, TimerRef
from .registry import NameTable
from .router import ClusterPort, FaultRules, PeerInfo, Router
from .timeouts import MAX_TIMEOUT_S, check_limit, check_timeout
from .upgrade import latest

if TYPE_CHECKING:
    from .genserver import GenServer
    from .snapshot import NodeSnapshot

log = logging.getLogger(__name__)

_nodes_by_loop: weakref.WeakKeyDictionary[object, list[Node]] = weakref.WeakKeyDictionary()

# a ref, a registered name (local, else global), or (name, node_id): the name registered on that node
Target = ProcessRef | str | tuple[str, NodeId | str]
NAMED_LOOKUP_S = 5.0  # how long monitor/link wait for another node to resolve a (name, node_id)
END_PROCESSES_S = 5.0  # how long a stopping node waits for its killed processes' tasks to end


def current_node() -> Node:
    """The node facade calls act on: the hosting node inside a process, else the default node.

    The default node is the earliest-started node still running on this event loop;
    if there is none, an implicit local node is created and bound to the loop.
    """
    node = CURRENT_NODE.get()
    if node is not None and node._running:
        return node
    global _last_loop
    cached = _last_loop
    if cached is not None:
        if cached[2] == _TELLS_THREAD:  # the last asyncio loop's nodes, if it runs in this thread
            loop: Any = cached[0]()
            if loop is not None and loop._thread_id == get_ident() and cached[1]:
                return cached[1][0]
        elif cached[2] == _RUNS_HERE and cached[1] and cached[3] == get_ident():  # (uvloop's loops)
            # found running in this thread, and running still: asking asyncio for the running
            # loop costs a getpid (W2 on uvloop: 1.15 M casts/s with it, 1.36-1.42 M without).
            # A node bound to any loop clears the cache, so a second loop of this thread with a
            # node never gets the first's nodes, even should the first run on in another thread.
            loop = cached[0]()
            if loop is not None and loop.is_running():
                return cached[1][0]
    key = current_loop_key()
    nodes: list[Node] | None
    if cached is not None and cached[0]() is key:
        nodes = cached[1]
    else:
        nodes = _nodes_by_loop.get(key)
        if nodes is not None:  # (an asyncio loop's `_thread_id` is its running thread's, else None)
            kind = (_TELLS_THREAD if hasattr(key, "_thread_id")
                    else _RUNS_HERE if isinstance(key, asyncio.AbstractEventLoop) else 0)
            _last_loop = (weakref.ref(key), nodes, kind, get_ident())
    if nodes:
        return nodes[0]
    return Node()


# one-entry cache of the last loop's node list (facade calls outside processes are hot), and
# whether that loop tells its running thread (`_thread_id`: asyncio's own loops; uvloop's does
# not, and on uvloop every facade call took the slow path: W5 2.00 us a cast against 1.68 on
# asyncio), and the thread it was found running in
_last_loop: tuple[weakref.ref[object], list[Node], int, int] | None = None
_TELLS_THREAD = 1  # an asyncio loop with `_thread_id`
_RUNS_HERE = 2  # another asyncio loop (uvloop): checked with `is_running()` and the thread it was found in


def _forget_last_loop() -> None:
    global _last_loop
    _last_loop = None


os.register_at_fork(after_in_child=_forget_last_loop)  # (a forked child runs none of its parent's loops)


def _genserver_class() -> type[GenServer]:
    """`GenServer` (imported late: genserver imports this module)."""
    global _GenServer
    if _GenServer is None:
        from .genserver import GenServer

        _GenServer = GenServer
    return _GenServer


_GenServer: type[GenServer] | None = None


def current_process() -> Process | None:
    return CURRENT_PROCESS.get()


def running_nodes() -> list[Node]:
    """Nodes running on this loop, earliest first."""
    return list(_nodes_by_loop.get(current_loop_key(), ()))


class Node:
    """A node: hosts processes, names, links, monitors, timers and the event stream."""

    def __init__(self, *, label: str = "local", clock: Clock | None = None, entropy: Entropy | None = None) -> None:
        """`clock` and `entropy`: where this node reads the time and draws random numbers
        (`core/clock.py`; the system's by default, a simulation's virtual ones in `noex_lab.sim`)."""
        self.clock: Clock = clock or SYSTEM_CLOCK
        self.entropy: Entropy = entropy or SYSTEM_ENTROPY
        self.backend: Backend = current_backend()
        # asyncio: processes run as bare tasks on this loop; trio: in the node's task group
        self._loop: asyncio.AbstractEventLoop | None = (
            self.backend.loop if isinstance(self.backend, AsyncioBackend) else None)
        self.label = label
        self.incarnation: int = (self.clock.time_ns() // 1000) * 1000 + self.entropy.random.randrange(1000)
        self._id: NodeId | None = None
        self.router: Router | None = None  # the two seams to the cluster (core/router.py), set by Cluster.start
        self.distribution: ClusterPort | None = None
        self.faults: FaultRules | None = None
        self.names = NameTable()
        self.events = EventStream(self)
        self.started_at = self.clock.time()
        self._procs: dict[int, Process] = {}
        # how many more messages may be handled at once by their deliverer (`Process.run_now`)
        # before the event loop's next turn, when `refill_inline` restores it: a caller or a
        # reader that hands messages to idle processes yields at least every YIELD_EVERY
        self.inline_left = YIELD_EVERY
        # kept as processes start, exit or change code, so a snapshot of 100,000 processes
        # need not visit each: how many run each behavior, and which have links or monitors
        self._behavior_counts: dict[type[GenServer], int] = {}
        self._linked: set[Process] = set()
        self._pids = itertools.count(1)
        self._monitor_ids = itertools.count(1)
        self._timer_ids = itertools.count(1)
        self._timers: dict[int, Cancellable] = {}
        self._monitor_targets: dict[MonitorRef, ProcessRef] = {}
        self._host_done = self.backend.new_future()
        self._tg: TaskGroup | None = None
        self._ready = self.backend.new_future()
        self._closed = self.backend.new_future()
        self._running = True
        self._stopping = False
        self.exit_hooks: list[Callable[[Process, ExitReason], None]] = []
        self.stop_hooks: list[Callable[[bool], Awaitable[None]]] = []
        # called when a graceful stop begins, before any process is stopped (peers are told)
        self.leaving_hooks: list[Callable[[], None]] = []
        # awaited after the leaving hooks, before any process stops: moving work elsewhere
        # (a DistributedSupervisor's hand-off); bounded by stop()'s timeout
        self.handoff_hooks: list[Callable[[], Awaitable[None]]] = []
        _nodes_by_loop.setdefault(self.backend.key, []).append(self)
        _forget_last_loop()  # (see `current_node`: a new loop's first node is found the long way)
        self.backend.spawn_system_task(self._host)

    # ------------------------------------------------------------------ identity & lifecycle
    @property
    def id(self) -> NodeId | None:
        """This node's `NodeId`, or None while it is not distributed."""
        return self._id

    def set_id(self, node_id: NodeId) -> None:
        """Called by the distribution layer when this node starts listening."""
        self._id = node_id

    @property
    def running(self) -> bool:
        return self._running

    @property
    def stopping(self) -> bool:
        """Whether `stop()` began: no new process starts here any more."""
        return self._stopping

    async def start(self) -> Node:
        """Wait until the node's task group is up (creation itself is synchronous)."""
        await self._ensure_ready()
        return self

    async def _host(self) -> None:
        cancelled = anyio.get_cancelled_exc_class()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if not self._ready.done():
                    self._ready.set_result(None)
                await self._closed
                await self._end_processes()
                tg.cancel_scope.cancel()
        except cancelled:
            self._mark_stopped()
            raise
        except BaseException as exc:  # must never happen: report loudly
            self.events.report_error(f"node {self.display_name} task group failed", exc)
        finally:
            self._mark_stopped()
            if not self._host_done.done():
                self._host_done.set_result(None)

    async def _end_processes(self) -> None:
        """Kill the processes still running and wait (bounded) for their tasks to end.

        On trio they are in the task group, which its cancellation ends; on asyncio they are
        bare tasks: a kill cancels each, and a process killed before it ran ends on its first step."""
        tasks = []
        for proc in list(self._procs.values()):
            proc.kill(KILLED)
            if proc._task is not None:
                tasks.append(proc._task)
        if tasks:
            await asyncio.wait(tasks, timeout=END_PROCESSES_S)

    def _mark_stopped(self) -> None:
        if not self._running:
            return
        self._running = False
        nodes = _nodes_by_loop.get(self.backend.key)
        if nodes and self in nodes:
            nodes.remove(self)
        if not self._ready.done():
            self._ready.set_exception(NodeStoppedError(f"node {self.display_name} stopped"))
        for proc in list(self._procs.values()):
            proc._finish(KILLED)

    async def _ensure_ready(self) -> None:
        if not self._running:
            raise NodeStoppedError(f"node {self.display_name} is stopped; start a new one")
        if not self._ready.done():
            await self._ready
        self._ready.result()

    @property
    def display_name(self) -> str:
        return str(self._id) if self._id is not None else self.label

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<Node {self.display_name} {state} processes={len(self._procs)}>"

    def _repr_html_(self) -> str:
        from html import escape

        color = "#080" if self._running else "#888"
        return (
            f"<span style='color:{color}'>&#9679;</span> <b>{escape(self.display_name)}</b> "
            f"({'running' if self._running else 'stopped'}, {len(self._procs)} processes)"
        )

    @contextlib.contextmanager
    def as_default(self) -> Iterator[Node]:
        """Make facade calls in this block act on this node."""
        token = CURRENT_NODE.set(self)
        try:
            yield self
        finally:
            CURRENT_NODE.reset(token)

    async def stop(self, timeout: float = 5.0) -> None:
        """Leave gracefully: stop processes (terminate runs), tell peers, end the task group."""
        if not self._running:
            return
        timeout = check_timeout(timeout)
        await self._ensure_ready()
        self._stopping = True  # no new processes from here on
        for hook in list(self.leaving_hooks):
            try:
                hook()
            except Exception as exc:
                self.events.report_error("node leaving hook failed", exc)
        for handoff in list(self.handoff_hooks):
            try:
                with anyio.move_on_after(timeout):
                    await handoff()
            except Exception as exc:
                self.events.report_error("node hand-off hook failed", exc)
        roots = [p for p in self._procs.values() if p.parent is None or p.parent.id not in self._procs]
        for proc in sorted(roots, key=lambda p: p.pid, reverse=True):
            proc.request_shutdown(SHUTDOWN)
            if not await proc.wait_exit(timeout):
                proc.kill(KILLED)
                await proc.wait_exit(timeout)
        for proc in list(self._procs.values()):
            proc.kill(KILLED)
        await self._run_stop_hooks(graceful=True)
        self._close()
        await self._wait_closed()

    async def kill(self) -> None:
        """Simulate a crash: no goodbye to peers, every process ends "killed" without terminate."""
        if not self._running:
            return
        await self._run_stop_hooks(graceful=False)
        for proc in list(self._procs.values()):
            proc.kill(KILLED)
        self._close()
        await self._wait_closed()

    async def _run_stop_hooks(self, graceful: bool) -> None:
        for hook in list(self.stop_hooks):
            try:
                await hook(graceful)
            except Exception as exc:
                self.events.report_error("node stop hook failed", exc)

    def _close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if not self._closed.done():
            self._closed.set_result(None)

    async def _wait_closed(self) -> None:
        with anyio.move_on_after(10):
            await self._host_done
        self._mark_stopped()

    # ------------------------------------------------------------------ background work
    def spawn_task(self, fn: Callable[..., Awaitable[Any]], *args: Any, what: str = "task") -> None:
        """Run `fn(*args)` in the node's task group; errors go to the event stream, never lost."""
        if self._tg is None or not self._running:
            raise NodeStoppedError(f"node {self.display_name} is not running")

        async def guarded() -> None:
            try:
                await fn(*args)
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:
                self.events.report_error(f"{what} failed", exc)

        # Callbacks from the loop (protocols, call_soon, the liveness thread's reports) run
        # outside any task; anyio finds the loop through sniffio, so name it for this call.
        local = sniffio.thread_local
        previous = local.name
        local.name = self.backend.name
        try:
            self._tg.start_soon(guarded)
        finally:
            local.name = previous

    def run_callback(self, callback: Callable[..., Any], *args: Any, what: str = "callback") -> None:
        """Call a user callback (sync or async) in the background; errors are reported."""

        async def invoke() -> None:
            result = callback(*args)
            if inspect.isawaitable(result):
                await result

        if self._tg is None or not self._running:
            return
        self.spawn_task(invoke, what=f"{what} {getattr(callback, '__qualname__', callback)!r}")

    def run_callback_result(self, awaitable: Awaitable[Any], what: str) -> None:
        async def wait() -> None:
            await awaitable

        if self._tg is not None and self._running:
            self.spawn_task(wait, what=what)

    # ------------------------------------------------------------------ processes
    def is_local(self, ref: ProcessRef) -> bool:
        node = ref.node
        if node is None or node is self._id:
            return True
        own = self._id  # (another node's id usually differs in its hash: no Python-level __eq__)
        return own is not None and node._hash == own._hash and node == own

    def local_process(self, ref: ProcessRef) -> Process | None:
        """The live local process for `ref`, or None (also for old incarnations and for a ref of
        another node: two nodes started in the same microsecond may share an incarnation, and a
        pid alone would then name a process here for a process there)."""
        proc = self._procs.get(ref.id)
        if proc is None or ref.creation != self.incarnation:
            return None
        node = ref.node
        if node is None or node is self._id or self.is_local(ref):  # (the identity test first: cheap)
            return proc
        return None

    def resolve(self, target: Target) -> ProcessRef:
        """A ref for `target` (a ref, a local name, else a global name); NotRegisteredError if none."""
        if type(target) is ProcessRef:
            return target
        if isinstance(target, str):
            ref = self.names.whereis(target)
            if ref is None and self.router is not None:
                ref = self.router.resolve_name(target)
            if ref is None:
                raise NotRegisteredError(target)
            return ref
        if isinstance(target, ProcessRef):
            return target
        if isinstance(target, tuple):
            name, node_id = split_named(target)
            if node_id != self._id:
                raise InvalidArgumentError(f"{target!r} names a process of another node: use `await node.locate(...)`")
            ref = self.names.whereis(name)  # {Name, Node}: that node's local Registry only
            if ref is None:
                raise NotRegisteredError(name)
            return ref
        raise InvalidArgumentError(
            f"a target is a ProcessRef, a registered name or (name, node_id), not {target!r}"
        )

    def _remote_named(self, target: Any) -> tuple[str, NodeId] | None:
        """`(name, node_id)` when `target` names a process of another node, else None."""
        if type(target) is not tuple:
            return None
        named = split_named(target)
        return None if named[1] == self._id else named

    async def locate(self, target: Target, timeout: float = NAMED_LOOKUP_S) -> ProcessRef:
        """The ref `target` stands for; a `(name, node_id)` of another node is asked of that
        node. `NotRegisteredError` if no process has that name, `NodeNotReachableError` or
        `CallTimeoutError` if the node does not answer within `timeout`."""
        named = self._remote_named(target)
        if named is None:
            return self.resolve(target)
        timeout = check_timeout(timeout)
        if self.router is None:
            raise not_distributed(named[1])
        ref = await self.router.whereis_named(named[0], named[1], timeout)
        if ref is None:
            raise NotRegisteredError(named[0])
        return ref

    def processes(self) -> list[Process]:
        return list(self._procs.values())

    @property
    def process_count(self) -> int:
        return len(self._procs)

    async def spawn(
        self,
        behavior: type[GenServer],
        arg: Any = None,
        *,
        name: str | None = None,
        timeout: float = 5.0,
        link: Process | ProcessRef | None = None,
        parent: ProcessRef | None = None,
        max_mailbox: int | None = None,
        overflow: str = "drop_newest",
    ) -> ProcessRef:
        """Start a process running `behavior`; returns once `init` succeeded (else InitError).
        `max_mailbox` bounds its mailbox, `overflow` says what a message finding it full does
        (see `noex_lab.core.mailbox`)."""
        behavior = self._check_spawn(behavior, max_mailbox, overflow)
        timeout = check_timeout(timeout)
        if not self._running or not self._ready.done():
            await self._ensure_ready()
        proc = self._new_process(behavior, name, link, parent, max_mailbox, overflow)
        loop = self._loop
        if loop is not None and not proc.behavior._noex_init_async:
            self._start_now(proc, loop, arg)
            if CURRENT_PROCESS.get() is None:
                # A caller outside any process (a script, a cell) lets the process reach its loop
                # before going on (one loop turn); a process (a supervisor) does not wait for that:
                # the child runs at the next turn, before any message to it is handled.
                await asyncio.sleep(0)
            return proc.ref
        started = self.backend.new_future()
        if loop is not None:  # asyncio: a bare task (see `Process.main`), ended by `_end_processes`
            proc._task = loop.create_task(proc.main(arg, started, timeout))
        else:
            assert self._tg is not None
            self._tg.start_soon(proc.main_scoped, arg, started, timeout)
        await started
        self._started(proc)
        return proc.ref

    def spawn_now(
        self, behavior: type[GenServer], arg: Any = None, *, name: str | None = None,
        link: Process | ProcessRef | None = None, parent: ProcessRef | None = None,
        max_mailbox: int | None = None, overflow: str = "drop_newest",
    ) -> ProcessRef | None:
        """`spawn` without an await, where it needs none: on asyncio, on a node that is up, for
        a behavior whose `init` is plain (not async); None otherwise (then `spawn`). For a
        process that starts many others (a simple_one_for_one supervisor)."""
        loop = self._loop
        behavior = self._check_spawn(behavior, max_mailbox, overflow)
        if loop is None or not self._running or not self._ready.done() or behavior._noex_init_async:
            return None
        proc = self._new_process(behavior, name, link, parent, max_mailbox, overflow)
        self._start_now(proc, loop, arg)
        return proc.ref

    def _start_now(self, proc: Process, loop: asyncio.AbstractEventLoop, arg: Any) -> None:
        """asyncio, plain init: run it now and start the task straight in its loop (see
        `Process.init_now`); raises its InitError."""
        error = proc.init_now(arg)
        if error is not None:
            raise error
        proc._task = loop.create_task(proc.main(None, None, 0.0))
        self._started(proc)

    def _started(self, proc: Process) -> None:
        self.events.record("process_started", ref=proc.ref, name=proc.name, behavior=proc.behavior.__name__)

    @staticmethod
    def _check_spawn(behavior: Any, max_mailbox: Any, overflow: Any) -> type[GenServer]:
        """The class to start (`behavior`, or what replaced it); InvalidArgumentError for a bad option."""
        if not (isinstance(behavior, type) and issubclass(behavior, _genserver_class())):
            raise InvalidArgumentError(f"a behavior is a GenServer subclass, not {behavior!r}")
        if max_mailbox is not None or overflow != "drop_newest":
            check_mailbox_options(max_mailbox, overflow)
        return latest(behavior)  # after a hot upgrade, new processes run the new code

    def _new_process(
        self, behavior: type[GenServer], name: str | None, link: Process | ProcessRef | None,
        parent: ProcessRef | None, max_mailbox: int | None, overflow: str,
    ) -> Process:
        """Make the process and enter it in the tables (not started yet) on a ready node."""
        if self._stopping:
            raise NodeStoppedError(f"node {self.display_name} is stopping; it starts no new processes")
        if name is not None:
            owner = self.names.whereis(name)
            if owner is not None:
                from .errors import AlreadyRegisteredError

                raise AlreadyRegisteredError(name, owner)
        pid = next(self._pids)
        ref = ProcessRef(self._id, pid, self.incarnation)
        if max_mailbox is None:
            proc = Process(self, pid, ref, behavior)
        else:
            proc = BoundedProcess(self, pid, ref, behavior, MailboxBound(max_mailbox, overflow))
        proc.parent = parent
        self._procs[pid] = proc
        counts = self._behavior_counts
        counts[behavior] = counts.get(behavior, 0) + 1
        if name is not None:
            self.names.register(name, ref)
            proc.name = name
        if link is not None:
            other = link if isinstance(link, Process) else self.local_process(link)
            if other is not None and other.alive:
                other.links.add(ref)
                proc.links.add(other.ref)
            elif isinstance(link, ProcessRef) and not self.is_local(link) and self.router is not None:
                proc.links.add(link)
                self.router.link(ref, link)
        return proc

    def refill_inline(self) -> None:
        """A new turn of the event loop: messages may be handed to idle processes again."""
        self.inline_left = YIELD_EVERY

    def _process_exited(self, proc: Process, reason: ExitReason) -> None:
        """Bookkeeping when a process ends: names, links, monitors, hooks, events."""
        name = proc.name
        if self._procs.pop(proc.pid, None) is not None:
            self._count_behavior(proc.behavior, -1)
        self._linked.discard(proc)
        if name is not None:
            self.names.drop_ref(name, proc.ref)
        links, proc._links = proc._links, None
        if links:
            for other in links:
                self.exit_signal(other, proc.ref, reason)
        monitors, proc._monitors = proc._monitors, None
        if monitors:
            for mref, watcher in monitors.items():
                self.deliver_down(watcher, Down(mref, proc.ref, reason))
        watching, proc._watching = proc._watching, None
        if watching:
            for mref, target in watching.items():
                self._drop_monitor(mref, target)
        for hook in self.exit_hooks:
            try:
                hook(proc, reason)
            except Exception as exc:
                self.events.report_error("exit hook failed", exc)
        if self._running:
            self.events.record(
                "process_exited", ref=proc.ref, name=name, behavior=proc.behavior.__name__, reason=reason
            )
        if reason != NORMAL and reason != SHUTDOWN:  # only abnormal exits pay for the check
            report_crash(self, proc, reason)

    def _count_behavior(self, behavior: type[GenServer], delta: int) -> None:
        counts = self._behavior_counts
        count = counts.get(behavior, 0) + delta
        if count > 0:
            counts[behavior] = count
        else:
            counts.pop(behavior, None)

    # ------------------------------------------------------------------ messaging
    def _resolve_process(self, target: Target) -> ProcessRef:
        """`resolve` for call and stop: an unknown name is no such process (`ServerNotRunningError`)."""
        try:
            return self.resolve(target)
        except NotRegisteredError:
            raise ServerNotRunningError(target, NOPROC) from None

    def call(self, target: Target, msg: Any, timeout: float = 5.0) -> Coroutine[Any, Any, Any]:
        """Request/reply (see `GenServer.call`).

        Returns the coroutine that makes the call, not a coroutine awaiting it: for a ref and a
        valid float timeout (the hot path) the request's own coroutine, one layer less per call.
        Nothing is sent and nothing raised until it is awaited."""
        if type(target) is ProcessRef and type(timeout) is float and 0.0 < timeout <= MAX_TIMEOUT_S:
            me = CURRENT_PROCESS.get()
            node, own = target.node, self._id
            if node is None or node is own or (own is not None and node._hash == own._hash and node == own):
                proc = self.local_process(target)  # (`is_local` inlined: one call less per call)
                if proc is not None and proc is not me:
                    return self._call_local(proc, target, msg, timeout, me.ref if me is not None else None)
            elif self.router is not None:
                return self.router.call(target, msg, timeout, me.ref if me is not None else None)
        return self._call(target, msg, timeout)

    async def _call(self, target: Target, msg: Any, timeout: float) -> Any:
        """`call` with every check, and every error raised."""
        timeout = check_timeout(timeout)
        me = CURRENT_PROCESS.get()
        sender = me.ref if me is not None else None
        if type(target) is ProcessRef:
            ref = target
        elif (named := self._remote_named(target)) is not None:
            if self.router is None:
                raise not_distributed(named[1])
            return await self.router.call_named(named[0], named[1], msg, timeout, sender)
        else:
            ref = self._resolve_process(target)
        if not self.is_local(ref):
            if self.router is None:
                raise ServerNotRunningError(ref, NOPROC)
            return await self.router.call(ref, msg, timeout, sender)
        proc = self.local_process(ref)
        if proc is None or not proc._alive:
            raise ServerNotRunningError(ref, proc.exit_reason if proc is not None else NOPROC)
        if proc is me:
            raise InvalidArgumentError(f"process {ref} called itself; that would deadlock")
        return await self._call_local(proc, target, msg, timeout, sender)

    async def _call_local(self, proc: Process, target: Target, msg: Any, timeout: float,
                          sender: ProcessRef | None) -> Any:
        """Deliver a call to a local process and await its reply within `timeout`; to an idle
        one with a plain handle_call, handle it in this task instead (`Process.run_now`)."""
        if not proc._alive:
            raise ServerNotRunningError(proc.ref, proc.exit_reason)
        backend = self.backend
        reply = backend.new_future()
        item = (CALL, msg, reply, sender)
        if proc._wake is None or not proc.run_now(item):  # idle: this task runs handle_call itself
            proc.deliver(item)
        elif reply.done():  # (not answered yet: NoReply, or a Stop or crash the loop answers)
            return reply.result()
        deadlines = backend.deadlines
        try:
            if deadlines is None:
                return await backend.wait_future(reply, timeout)
            # asyncio: `wait_future` inlined (one coroutine less per call)
            slot = deadlines.add(reply, timeout)
            try:
                return await reply
            finally:
                slot.discard(reply)
        except TimeoutError as exc:
            if type(exc) is TimeoutError:
                raise CallTimeoutError(target, timeout) from None
            raise

    def cast(self, target: Target, msg: Any) -> None:
        """Fire and forget to `handle_cast`; never raises for a dead or unknown target."""
        self._send(target, CAST, msg)

    def send(self, target: Target, msg: Any) -> None:
        """Deliver to `handle_info`; never raises for a dead or unknown target."""
        self._send(target, INFO, msg)

    def _send(self, target: Target, tag: int, msg: Any) -> None:
        if type(target) is ProcessRef:
            ref = target
        else:
            named = self._remote_named(target)
            if named is not None:
                if self.router is not None:
                    self.router.send_named(named[0], named[1], tag, msg)
                return
            try:
                ref = self.resolve(target)
            except NotRegisteredError:
                return
        node = ref.node
        if node is None or node is self._id:  # (`is_local` and `local_process` inlined: W2's path)
            proc = self._procs.get(ref.id)
            if proc is not None and proc._alive and ref.creation == self.incarnation:
                proc.deliver((tag, msg))
            return
        # A node has no connection to itself: a ref the router could send to is remote.
        router = self.router
        if router is not None and router.send(ref, tag, msg):
            return
        if self.is_local(ref):
            proc = self.local_process(ref)
            if proc is not None and proc._alive:
                proc.deliver((tag, msg))

    async def drain(self, peer: NodeId | str | None = None, timeout: float | None = None) -> None:
        """Wait until the connection to `peer` (every connection when None) is no longer busy.

        `cast` from outside a process never waits (a process that casts into a busy connection
        is suspended before its next message instead); a loop that casts a lot from a script or
        a cell awaits this now and then to go at the pace of its peers. `SendTimeoutError` after
        `timeout` seconds."""
        if self.router is None:
            return
        await self.router.drain(NodeId.parse(peer) if isinstance(peer, str) else peer, timeout)

    # ------------------------------------------------------------------ inbound (distribution layer)
    # The sanctioned way in for frames from peers (`distribution.routing`): the router never reads
    # the node's process table or a process's private state itself.
    def inbound_process(self, pid: int, creation: int) -> Process | None:
        """The live local process a peer's frame addresses; None when it is gone or the frame is
        for an earlier incarnation of this node (hot: one lookup, as the router did inline)."""
        proc = self._procs.get(pid) if creation == self.incarnation else None
        return proc if proc is not None and proc._alive else None

    def deliver_local(self, ref: ProcessRef, item: tuple[Any, ...]) -> bool:
        """Put a prepared mailbox item into a local process; False when it is not running."""
        proc = self.local_process(ref)
        if proc is None or not proc._alive:
            return False
        proc.deliver(item)
        return True

    def stop_process(
        self, target: Target, reason: ExitReason = NORMAL, timeout: float = 5.0
    ) -> Coroutine[Any, Any, None]:
        """Orderly stop after already-queued messages (see `GenServer.stop`).

        Returns the coroutine that stops it (as `call`): for a local ref and a valid float timeout,
        the stop's own coroutine, one layer less per stop. Nothing is sent until it is awaited."""
        if type(target) is ProcessRef and type(timeout) is float and 0.0 < timeout <= MAX_TIMEOUT_S:
            proc = self.local_process(target)  # (None for a ref of another node)
            if proc is not None and proc is not CURRENT_PROCESS.get():
                return self._stop_local(proc, target, reason, timeout)
        return self._stop_process(target, reason, timeout)

    async def _stop_local(self, proc: Process, target: Target, reason: ExitReason, timeout: float) -> None:
        """Ask a local process (not the current one) to stop after its queued messages; wait
        for its exit within `timeout`."""
        if not proc._alive:
            raise ServerNotRunningError(target, NOPROC)
        waiter = self.backend.new_future()
        proc.deliver((STOP, reason, waiter))
        try:
            await self.backend.wait_future(waiter, timeout)
        except TimeoutError:
            raise CallTimeoutError(target, timeout) from None

    async def _stop_process(self, target: Target, reason: ExitReason, timeout: float) -> None:
        """`stop_process` with every check, and every error raised."""
        timeout = check_timeout(timeout)
        if self._remote_named(target) is not None:
            started = anyio.current_time()
            try:
                ref = await self.locate(target, timeout)
            except NotRegisteredError:
                raise ServerNotRunningError(target, NOPROC) from None
            timeout = max(timeout - (anyio.current_time() - started), 0.001)
        else:
            ref = self._resolve_process(target)
        if not self.is_local(ref):
            if self.router is None:
                raise ServerNotRunningError(ref, NOPROC)
            await self.router.stop(ref, reason, timeout)
            return
        proc = self.local_process(ref)
        if proc is None or not proc._alive:
            raise ServerNotRunningError(ref, NOPROC)
        if proc is CURRENT_PROCESS.get():
            raise InvalidArgumentError("a process cannot stop itself with GenServer.stop; return Stop(...)")
        await self._stop_local(proc, target, reason, timeout)

    async def shutdown_process(
        self, ref: ProcessRef, reason: ExitReason = SHUTDOWN, timeout: float | None = 5.0
    ) -> ExitReason:
        """Supervisor-style stop, wherever the process runs: finish the current message, run
        `terminate`, and kill it if that takes more than `timeout` seconds (None: no limit).
        Returns the exit reason, or None when it was not running (or its node is unreachable)."""
        timeout = check_limit(timeout)
        if not self.is_local(ref):
            if self.router is None:
                return None
            return await self.router.shutdown(ref, reason, timeout)
        proc = self.local_process(ref)
        if proc is None or not proc.alive:
            return None
        proc.request_shutdown(reason)
        if not await proc.wait_exit(timeout):
            proc.kill(KILLED)
            await proc.wait_exit(None)
        return proc.exit_reason

    def send_after(self, target: Target, msg: Any, delay: float) -> TimerRef:
        """Send `msg` to `handle_info` of `target` after `delay` seconds (monotonic)."""
        delay = check_timeout(delay, "delay", allow_zero=True)
        timer_id = next(self._timer_ids)

        def fire() -> None:
            if self._timers.pop(timer_id, None) is not None:
                self.send(target, msg)

        handle = self.backend.call_later(delay, fire, lambda fn: self.spawn_task(fn, what="timer"))
        self._timers[timer_id] = handle
        return TimerRef(timer_id)

    def cancel_timer(self, timer: TimerRef) -> bool:
        """Cancel a pending timer; True if it had not fired yet."""
        handle = self._timers.pop(timer.id, None)
        if handle is None:
            return False
        handle.cancel()
        return True

    # ------------------------------------------------------------------ names
    def register_name(self, name: str, ref: ProcessRef) -> None:
        proc = self.local_process(ref) if self.is_local(ref) else None
        if proc is None or not proc.alive:
            if not self.is_local(ref):
                raise InvalidArgumentError(
                    f"Registry names local processes only; {ref} is on another node (use GlobalRegistry)"
                )
            raise ServerNotRunningError(ref, NOPROC)
        self.names.register(name, ref)
        if proc.name is not None and proc.name != name:
            self.names.unregister(proc.name)
        proc.name = name

    def unregister_name(self, name: str) -> None:
        ref = self.names.unregister(name)
        if ref is not None:
            proc = self.local_process(ref)
            if proc is not None and proc.name == name:
                proc.name = None

    # ------------------------------------------------------------------ links
    def link(self, a: Target, b: Target) -> None:
        """Link two processes: an abnormal exit of one reaches the other (see `RemoteLink`)."""
        if self._defer_named(a, b, self.link, "link"):
            return
        ra, rb = self.resolve(a), self.resolve(b)
        if ra == rb:
            return
        if not self.is_local(ra) and self.is_local(rb):
            ra, rb = rb, ra
        if not self.is_local(ra):
            raise InvalidArgumentError("at least one side of a link must be a process on this node")
        pa = self.local_process(ra)
        if pa is None or not pa.alive:
            self.exit_signal(rb, ra, NOPROC)
            return
        if self.is_local(rb):
            pb = self.local_process(rb)
            if pb is None or not pb.alive:
                pa.exit_signal(rb, NOPROC)
                return
            pa.links.add(pb.ref)
            pb.links.add(pa.ref)
            return
        if self.router is None:
            pa.exit_signal(rb, NOPROC)
            return
        pa.links.add(rb)
        self.router.link(pa.ref, rb)

    def unlink(self, a: Target, b: Target) -> None:
        if self._defer_named(a, b, self.unlink, "unlink"):
            return
        ra, rb = self.resolve(a), self.resolve(b)
        for x, y in ((ra, rb), (rb, ra)):
            if self.is_local(x):
                proc = self.local_process(x)
                if proc is not None:
                    proc.links.discard(y)
                    if not self.is_local(y) and self.router is not None:
                        self.router.unlink(x, y)

    def _defer_named(self, a: Target, b: Target, again: Callable[[Target, Target], None], what: str) -> bool:
        """A link or unlink with a `(name, node_id)` of another node: that node resolves the name
        first, then `again` runs with its ref (in the background, as links are asynchronous
        anyway). A name nobody holds there gives the local side an exit signal "noproc"."""
        named = [t for t in (a, b) if self._remote_named(t) is not None]
        if not named:
            return False
        local = self.resolve(b if named[0] is a else a) if len(named) == 1 else None
        if local is None or not self.is_local(local):
            raise InvalidArgumentError("at least one side of a link must be a process on this node")

        async def resolve_then() -> None:
            reason: ExitReason = NOCONNECTION
            try:
                again(local, await self.locate(named[0]))
                return
            except NotRegisteredError:
                reason = NOPROC
            except (NodeNotReachableError, CallTimeoutError):
                pass
            if what == "link":  # as a link to a process that is gone
                self.exit_signal(local, named[0], reason)  # type: ignore[arg-type]

        self.spawn_task(resolve_then, what=f"{what} to {named[0]!r}")
        return True

    def exit_signal(self, to: ProcessRef, from_: ProcessRef, reason: ExitReason) -> None:
        """Deliver a link exit signal to `to`, wherever it runs."""
        if self.is_local(to):
            proc = self.local_process(to)
            if proc is not None:
                proc.exit_signal(from_, reason)
        elif self.router is not None:
            self.router.exit_signal(to, from_, reason)

    # ------------------------------------------------------------------ monitors
    def new_monitor_ref(self) -> MonitorRef:
        return MonitorRef(self._id, next(self._monitor_ids), self.incarnation)

    def monitor(
        self, target: Target, watcher: ProcessRef | None = None,
        on_down: Callable[[Down], Any] | None = None,
    ) -> MonitorRef:
        """Monitor `target`; exactly one `Down` reaches the watcher (or `on_down`)."""
        if on_down is not None:
            sink: Any = on_down
        elif watcher is not None:
            sink = watcher
        else:
            me = CURRENT_PROCESS.get()
            if me is None:
                raise InvalidArgumentError(
                    "outside a process, monitor needs watcher= (a ProcessRef) or on_down= (a callback)"
                )
            sink = me.ref
        mref = self.new_monitor_ref()
        named = self._remote_named(target)
        if named is not None:
            self._monitor_named(mref, target, named[1], sink)
            return mref
        try:
            ref = self.resolve(target)
        except NotRegisteredError:
            self.deliver_down(sink, Down(mref, target, NOPROC))  # type: ignore[arg-type]
            return mref
        if self.is_local(ref):
            proc = self.local_process(ref)
            if proc is None or not proc.alive:
                self.deliver_down(sink, Down(mref, ref, NOPROC))
                return mref
            proc.monitors[mref] = sink
        elif self.router is None:
            self.deliver_down(sink, Down(mref, ref, NOPROC))
            return mref
        else:
            self.router.monitor(mref, ref, sink)
        if isinstance(sink, ProcessRef) and self.is_local(sink):
            watcher_proc = self.local_process(sink)
            if watcher_proc is not None:
                watcher_proc.watching[mref] = ref
        self._monitor_targets[mref] = ref
        return mref

    def _monitor_named(self, mref: MonitorRef, target: Target, node_id: NodeId, sink: Any) -> None:
        """Monitor a `(name, node_id)` of another node: that node resolves the name, then the
        monitor is set on the ref (a name nobody holds there: Down "noproc"; a node that does
        not answer: Down "noconnection"). A demonitor meanwhile is honoured."""
        pending = ProcessRef(node_id, 0, 0)  # stands for the target until the name is resolved
        self._monitor_targets[mref] = pending
        watcher = self.local_process(sink) if isinstance(sink, ProcessRef) and self.is_local(sink) else None
        if watcher is not None:
            watcher.watching[mref] = pending

        async def resolve_then_monitor() -> None:
            ref: ProcessRef | None = None
            reason: ExitReason = NOCONNECTION
            try:
                ref = await self.locate(target)
            except NotRegisteredError:
                reason = NOPROC
            except (NodeNotReachableError, CallTimeoutError):
                pass
            if self._monitor_targets.get(mref) is not pending:
                return  # demonitored (or its watcher exited) while the name was looked up
            if ref is None or self.router is None:
                self.deliver_down(sink, Down(mref, target, reason))  # type: ignore[arg-type]
                return
            self._monitor_targets[mref] = ref
            if watcher is not None and mref in watcher.watching:
                watcher.watching[mref] = ref
            self.router.monitor(mref, ref, sink)

        self.spawn_task(resolve_then_monitor, what=f"monitor of {target!r}")

    def demonitor(self, mref: MonitorRef) -> None:
        """Remove a monitor; idempotent. No Down arrives after it returns."""
        target = self._monitor_targets.pop(mref, None)
        if target is None:
            return
        self._drop_monitor(mref, target)
        for proc in self._procs.values():
            watching = proc._watching
            if watching and watching.pop(mref, None) is not None:
                break

    def _drop_monitor(self, mref: MonitorRef, target: ProcessRef) -> None:
        self._monitor_targets.pop(mref, None)
        if self.is_local(target):
            proc = self.local_process(target)
            if proc is not None and proc._monitors:
                proc._monitors.pop(mref, None)
        elif self.router is not None:
            self.router.demonitor(mref, target)

    def deliver_down(self, sink: Any, down: Down) -> None:
        """Hand `down` to its watcher: a local process, a callback, or a watcher of the distribution
        layer (part of the inbound API: the router reports remote Downs through it)."""
        self._monitor_targets.pop(down.monitor, None)
        if isinstance(sink, ProcessRef):
            if self.is_local(sink):
                proc = self.local_process(sink)
                if proc is not None:
                    if proc._watching:
                        proc._watching.pop(down.monitor, None)
                    if proc.alive:
                        proc.deliver((INFO, down))
            elif self.router is not None:
                self.router.send(sink, INFO, down)
        elif callable(sink):
            self.run_callback(sink, down, what="on_down")
        else:
            self.deliver_remote_down(sink, down)

    def deliver_remote_down(self, sink: Any, down: Down) -> None:
        """Hook for watcher kinds owned by the distribution layer."""
        deliver = getattr(sink, "deliver_down", None)
        if deliver is not None:
            deliver(down)

    # ------------------------------------------------------------------ cluster (through ClusterPort)
    def _cluster(self) -> ClusterPort:
        if self.distribution is None:
            from .errors import ClusterError

            raise ClusterError(f"node {self.display_name} is not distributed; call Cluster.start(...) first")
        return self.distribution

    def get_nodes(self) -> list[PeerInfo]:
        """The connected peers (`NodeInfo`), self excluded; empty while not distributed."""
        return [] if self.distribution is None else list(self.distribution.get_nodes())

    def get_status(self) -> str:
        """"starting", "running", "stopping", "stopped"; "not_started" for a running node that is not
        distributed (as `Cluster.get_status()`)."""
        if self.distribution is None:
            return "not_started" if self._running else "stopped"
        return self.distribution.status

    def on_node_up(self, callback: Callable[[PeerInfo], Any]) -> Callable[[], None]:
        return self._cluster().on_node_up(callback)

    def on_node_down(self, callback: Callable[[NodeId, str], Any]) -> Callable[[], None]:
        return self._cluster().on_node_down(callback)

    def on_node_busy(self, callback: Callable[[PeerInfo], Any]) -> Callable[[], None]:
        return self._cluster().on_node_busy(callback)

    # ------------------------------------------------------------------ observing
    def snapshot(self, *, limit: int | None = None, offset: int = 0, sort: str = "pid") -> NodeSnapshot:
        """What runs on this node right now (see `NodeSnapshot`): every process, or with `limit`
        the page of `limit` processes from `offset` in `sort` order ("pid", or the largest first
        by "queue", "messages" or "high_water"); `summary` counts them all either way."""
        from .snapshot import take_snapshot

        return take_snapshot(self, limit, offset, sort)
