"""`Supervisor`: OTP restart strategies, restart types and sliding-window intensity.

A supervisor is itself a process (trapping exits), so trees nest. Children are linked
to it; exits arrive as `Exit` messages, never by polling.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from .errors import InitError, InvalidArgumentError, MaxRestartsExceededError, SupervisorError
from .genserver import GenServer
from .mailbox import check_mailbox_options
from .messages import Exit, Stop
from .node import Node, Target, current_node
from .node_id import NodeId
from .reasons import SHUTDOWN, ErrorReason, ExitReason, is_normal_exit
from .refs import ProcessRef
from .timeouts import check_limit

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"]
RestartType = Literal["permanent", "transient", "temporary"]
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one")
RESTART_TYPES = ("permanent", "transient", "temporary")


@dataclass(frozen=True)
class ChildSpec:
    """How to start and restart one child.

    Give `behavior` (a GenServer subclass, started with `arg`), or `start` (an async
    callable returning a `ProcessRef`), or build a nested supervisor with
    `ChildSpec.supervisor(id, **supervisor_options)`.
    `shutdown` is how many seconds the child gets to run `terminate` before it is killed
    (None: no limit, the default for supervisors; 0: killed at once).
    `max_mailbox` and `overflow` bound the child's mailbox, as in `GenServer.start`.
    """

    id: str
    behavior: type[GenServer] | None = None
    arg: Any = None
    start: Callable[[], Awaitable[ProcessRef]] | None = None
    restart: RestartType = "permanent"
    shutdown: float | None = 5.0
    name: str | None = None
    supervisor_options: dict[str, Any] | None = None
    max_mailbox: int | None = None
    overflow: str = "drop_newest"

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise InvalidArgumentError(f"ChildSpec.id must be a non-empty string, not {self.id!r}")
        if self.restart not in RESTART_TYPES:
            raise InvalidArgumentError(f"restart must be one of {RESTART_TYPES}, not {self.restart!r}")
        sources = sum(x is not None for x in (self.behavior, self.start, self.supervisor_options))
        if sources != 1:
            raise InvalidArgumentError(
                f"ChildSpec {self.id!r} needs exactly one of behavior=, start= or ChildSpec.supervisor(...)"
            )
        if self.behavior is not None and not (
            isinstance(self.behavior, type) and issubclass(self.behavior, GenServer)
        ):
            raise InvalidArgumentError(f"ChildSpec {self.id!r}: behavior must be a GenServer subclass")
        object.__setattr__(self, "shutdown", check_limit(self.shutdown, f"ChildSpec {self.id!r}: shutdown"))
        check_mailbox_options(self.max_mailbox, self.overflow)
        if self.start is not None and self.max_mailbox is not None:
            raise InvalidArgumentError(
                f"ChildSpec {self.id!r}: max_mailbox applies to behavior= children; a start= callable "
                "passes it to GenServer.start itself"
            )

    @classmethod
    def supervisor(
        cls, id: str, *, restart: RestartType = "permanent", shutdown: float | None = None,
        name: str | None = None, **supervisor_options: Any,
    ) -> ChildSpec:
        """A nested supervisor as a child; options are those of `Supervisor.start`."""
        _validate_options(supervisor_options)
        return cls(id=id, restart=restart, shutdown=shutdown, name=name, supervisor_options=supervisor_options)

    @property
    def is_supervisor(self) -> bool:
        return self.supervisor_options is not None


@dataclass(frozen=True)
class ChildInfo:
    """One child as `which_children` reports it."""

    id: str
    ref: ProcessRef | None
    restarts: int
    status: str  # "running" | "stopped"
    node: NodeId | None = None
    last_exit_reason: ExitReason = None
    is_supervisor: bool = False


@dataclass(frozen=True)
class SupervisorTree:
    """A supervisor and its children, recursively (for snapshots and widgets)."""

    ref: ProcessRef
    name: str | None
    strategy: str
    restarts: int
    children: list[ChildInfo]
    subtrees: list[SupervisorTree] = field(default_factory=list)


@dataclass(slots=True)
class SupervisedChild:
    """One child as its supervisor tracks it (public for `place_child` overrides)."""

    spec: ChildSpec
    ref: ProcessRef | None = None
    restarts: int = 0
    last_reason: ExitReason = None

    @property
    def id(self) -> str:
        """The child's id (`spec.id`)."""
        return self.spec.id

    def start_from(self) -> tuple[ChildSpec, Any]:
        """The spec whose options (behavior, name, mailbox) start the child, and its arg."""
        spec = self.spec
        return spec, spec.arg

    def info(self, node: Node) -> ChildInfo:
        return ChildInfo(
            id=self.spec.id, ref=self.ref, restarts=self.restarts,
            status="running" if self.ref is not None else "stopped",
            node=self.ref.node if self.ref is not None else None,
            last_exit_reason=self.last_reason, is_supervisor=self.spec.is_supervisor,
        )


class TemplateChild(SupervisedChild):
    """A simple_one_for_one child started from the template with its own id and arg: its
    `spec` is made when first read (mostly never before it exits), so 10,000 children do not
    keep 10,000 specs (two objects each for the collector to walk, and the time to make them)."""

    __slots__ = ("_arg", "_child_id", "_spec", "_template")

    def __init__(self, template: ChildSpec, child_id: str, arg: Any) -> None:
        self._template, self._child_id, self._arg = template, child_id, arg
        self._spec: ChildSpec | None = None
        self.ref = None
        self.restarts = 0
        self.last_reason = None

    @property
    def spec(self) -> ChildSpec:
        spec = self._spec
        if spec is None:
            spec = self._spec = _from_template(self._template, self._child_id, self._arg)
        return spec

    @spec.setter
    def spec(self, value: ChildSpec) -> None:
        self._spec = value

    @property
    def id(self) -> str:
        return self._child_id

    def start_from(self) -> tuple[ChildSpec, Any]:
        return self._template, self._arg


@dataclass
class SupervisorState:
    """A supervisor's state: its children and its restart history (public for subclasses)."""

    strategy: Strategy
    max_restarts: int
    within_ms: int
    children: list[SupervisedChild]
    template: ChildSpec | None = None
    restart_times: deque[float] = field(default_factory=deque)
    total_restarts: int = 0
    next_dynamic: int = 0
    # the ids in `children`: a start_child checks for a duplicate in O(1), not by a scan of
    # every child (10,000 simple_one_for_one children would make their start quadratic)
    ids: set[str] = field(default_factory=set)

    def add(self, child: SupervisedChild) -> None:
        self.children.append(child)
        self.ids.add(child.id)

    def remove(self, child: SupervisedChild) -> None:
        self.children.remove(child)
        self.ids.discard(child.id)


def _from_template(template: ChildSpec, child_id: str, arg: Any) -> ChildSpec:
    """A simple_one_for_one child's spec: the template with its own id and arg. The template was
    validated when the supervisor started, so this skips `__post_init__` (`dataclasses.replace`
    would run it for every child again)."""
    spec = object.__new__(ChildSpec)
    spec.__dict__.update(template.__dict__, id=child_id, arg=arg)
    return spec




def _validate_options(options: dict[str, Any]) -> None:
    allowed = {"strategy", "children", "max_restarts", "within_ms"}
    unknown = set(options) - allowed
    if unknown:
        raise InvalidArgumentError(f"unknown supervisor options {sorted(unknown)}; allowed: {sorted(allowed)}")
    strategy = options.get("strategy", "one_for_one")
    if strategy not in STRATEGIES:
        raise InvalidArgumentError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    max_restarts = options.get("max_restarts", 3)
    within_ms = options.get("within_ms", 5000)
    if not isinstance(max_restarts, int) or max_restarts < 0:
        raise InvalidArgumentError(f"max_restarts must be an int >= 0, not {max_restarts!r}")
    if not isinstance(within_ms, int) or within_ms <= 0:
        raise InvalidArgumentError(f"within_ms must be an int > 0, not {within_ms!r}")
    children = options.get("children", [])
    if not all(isinstance(c, ChildSpec) for c in children):
        raise InvalidArgumentError("children must be a list of ChildSpec")
    ids = [c.id for c in children]
    if len(ids) != len(set(ids)):
        raise InvalidArgumentError(f"child ids must be unique, got {ids}")
    if strategy == "simple_one_for_one" and len(children) != 1:
        raise InvalidArgumentError("simple_one_for_one needs exactly one child spec: the template")


class SupervisorServer(GenServer):
    """The supervisor process (internal; use the `Supervisor` facade)."""

    trap_exit = True

    async def init(self, options: dict[str, Any]) -> SupervisorState:
        _validate_options(options)
        strategy: Strategy = options.get("strategy", "one_for_one")
        specs: list[ChildSpec] = list(options.get("children", []))
        state = SupervisorState(strategy, options.get("max_restarts", 3), options.get("within_ms", 5000), [])
        if strategy == "simple_one_for_one":
            state.template = specs[0]
            return state
        for spec in specs:
            child = SupervisedChild(spec)
            try:
                await self._start_child(child)
            except BaseException:
                await self._stop_all(state)
                raise
            state.add(child)
        return state

    # ------------------------------------------------------------------ starting and stopping
    def _start_child_now(self, child: SupervisedChild) -> bool:
        """Start a behavior child without an await where none is needed (`Node.spawn_now`): a
        simple_one_for_one supervisor may start 10,000 of them. False: `_start_child` must (also
        whenever a subclass places its children itself through `place_child`)."""
        spec, arg = child.start_from()
        if spec.behavior is None or type(self).place_child is not SupervisorServer.place_child:
            return False
        me = self._noex_process
        ref = self.node.spawn_now(spec.behavior, arg, name=spec.name, link=me, parent=me.ref,
                                  max_mailbox=spec.max_mailbox, overflow=spec.overflow)
        if ref is None:
            return False
        child.ref = ref
        self.child_started(child)
        return True

    async def _start_child(self, child: SupervisedChild) -> None:
        if self._start_child_now(child):
            return
        child.ref = await self.place_child(child)
        self.child_started(child)

    async def place_child(self, child: SupervisedChild) -> ProcessRef:
        """The placement hook: start `child`'s process and return its ref, watched so that its
        exit reaches `handle_info` (a link's `Exit` here; a subclass may monitor and turn the
        `Down` into an `Exit`). Raise `InitError` when it cannot start."""
        node = self.node
        spec = child.spec
        me = self._noex_process
        if spec.behavior is not None:
            return await node.spawn(spec.behavior, spec.arg, name=spec.name, link=me, parent=self.ref,
                                    max_mailbox=spec.max_mailbox, overflow=spec.overflow)
        if spec.supervisor_options is not None:
            return await node.spawn(
                SupervisorServer, spec.supervisor_options, name=spec.name, link=me, parent=self.ref,
                max_mailbox=spec.max_mailbox, overflow=spec.overflow,
            )
        assert spec.start is not None
        ref = await spec.start()
        if not isinstance(ref, ProcessRef):
            raise InitError(spec.id, f"start= returned {ref!r}, not a ProcessRef")
        node.link(self.ref, ref)
        proc = node.local_process(ref) if node.is_local(ref) else None
        if proc is not None:
            proc.parent = self.ref
        return ref

    def child_started(self, child: SupervisedChild) -> None:
        """Called after `place_child` succeeded (the event; a subclass may say more)."""
        self.node.events.emit("child_started", supervisor=self.ref, child=child.id, ref=child.ref)

    async def _stop_child(self, child: SupervisedChild, reason: ExitReason = SHUTDOWN) -> None:
        """Unlink, ask for an orderly shutdown, kill after `spec.shutdown` seconds."""
        ref = child.ref
        if ref is None:
            return
        child.ref = None
        node = self.node
        node.unlink(self.ref, ref)
        exit_reason = await node.shutdown_process(ref, reason, child.spec.shutdown)
        if exit_reason is not None:
            child.last_reason = exit_reason
        node.events.emit("child_stopped", supervisor=self.ref, child=child.spec.id, ref=ref)

    async def _stop_all(self, state: SupervisorState) -> None:
        for child in reversed(state.children):
            await self._stop_child(child)

    # ------------------------------------------------------------------ exits and restarts
    async def handle_info(self, msg: Any, state: SupervisorState) -> Any:
        if not isinstance(msg, Exit):
            return state
        proc = self._noex_process
        if proc.parent is not None and msg.from_ == proc.parent:
            return Stop(msg.reason, state)
        index = next((i for i, c in enumerate(state.children) if c.ref == msg.from_), None)
        if index is None:
            return state
        child = state.children[index]
        child.ref = None
        child.last_reason = msg.reason
        restart = child.spec.restart
        if restart == "temporary" or (restart == "transient" and is_normal_exit(msg.reason)):
            if restart == "temporary" or state.strategy == "simple_one_for_one":
                state.ids.discard(state.children.pop(index).id)
            return state
        return await self._restart(state, child, msg.reason)

    def _count_restart(self, state: SupervisorState) -> bool:
        """Record one restart; False when the intensity is exceeded."""
        now = anyio.current_time()
        window = state.within_ms / 1000.0
        times = state.restart_times
        times.append(now)
        while times and now - times[0] > window:
            times.popleft()
        return len(times) <= state.max_restarts

    async def _restart(self, state: SupervisorState, failed: SupervisedChild, reason: ExitReason) -> Any:
        node = self.node
        if state.strategy in ("one_for_one", "simple_one_for_one"):
            group = [failed]
        else:
            start = 0 if state.strategy == "one_for_all" else state.children.index(failed)
            group = state.children[start:]
            for child in reversed(group):
                if child is not failed:
                    await self._stop_child(child)
            temporary = [c for c in group if c.spec.restart == "temporary" and c is not failed]
            for child in temporary:
                state.remove(child)
            group = [c for c in group if c not in temporary]
        while True:
            if not self._count_restart(state):
                return await self._give_up(state)
            state.total_restarts += 1
            node.events.emit(
                "supervisor_restart", supervisor=self.ref, child=failed.spec.id, reason=reason,
                strategy=state.strategy, restarts=failed.restarts + 1,
            )
            try:
                for child in group:
                    if child.ref is None:
                        child.restarts += 1
                        await self._start_child(child)
                return state
            except InitError as exc:
                reason = exc.reason
                for child in reversed(group):
                    await self._stop_child(child)

    async def restart(self, state: SupervisorState, failed: SupervisedChild, reason: ExitReason) -> Any:
        """Restart `failed` (and its group, per the strategy), counting towards the intensity:
        the state, or a `Stop` when the intensity is exceeded. For subclasses' `handle_info`."""
        return await self._restart(state, failed, reason)

    def count_restart(self, state: SupervisorState) -> bool:
        """Record one restart done by a subclass itself; False when the intensity is exceeded."""
        state.total_restarts += 1
        return self._count_restart(state)

    async def give_up(self, state: SupervisorState) -> Stop:
        """Stop every child and the supervisor: the intensity is exceeded."""
        return await self._give_up(state)

    async def _give_up(self, state: SupervisorState) -> Stop:
        await self._stop_all(state)
        err = MaxRestartsExceededError(state.max_restarts, state.within_ms)
        self.node.events.emit("supervisor_gave_up", supervisor=self.ref, reason=str(err))
        return Stop(ErrorReason("MaxRestartsExceededError", str(err), ""), state)

    async def terminate(self, reason: ExitReason, state: SupervisorState) -> None:
        await self._stop_all(state)

    # ------------------------------------------------------------------ dynamic children
    async def handle_call(self, msg: Any, state: SupervisorState) -> Any:
        if not (isinstance(msg, tuple) and len(msg) >= 2 and msg[0] == SUPERVISOR_REQUEST):
            raise SupervisorError(f"a supervisor only answers Supervisor.* requests, not {msg!r}")
        try:
            if msg[1] == "start_child":  # (the one request a supervisor may get 10,000 times in a row)
                child = self._new_child(msg[2], state)
                # no coroutine of its own where the child starts without an await (`_start_child_now`)
                if not self._start_child_now(child):
                    await self._start_child(child)
                state.add(child)
                return child.ref, state
            return await self._request(msg, state), state
        except (SupervisorError, InitError) as exc:
            # A refused request (unknown id, a child failing to start) is the caller's error:
            # the facade raises it there and the supervisor keeps running (OTP's {error, _}).
            return (SUPERVISOR_REFUSED, exc), state

    async def _request(self, msg: tuple[Any, ...], state: SupervisorState) -> Any:
        op = msg[1]
        if op == "which_children":
            return [c.info(self.node) for c in state.children]
        if op == "count_children":
            return len(state.children)
        if op == "tree":
            return self.noex_tree(state)
        child = self._find(state, msg[2])
        if op == "terminate_child":
            await self._stop_child(child)
            if state.strategy == "simple_one_for_one":
                state.remove(child)
            return None
        if op == "restart_child":
            await self._stop_child(child)
            child.restarts += 1
            await self._start_child(child)
            return child.ref
        if op == "delete_child":
            if child.ref is not None:
                raise SupervisorError(f"child {child.spec.id!r} is running; terminate_child it first")
            state.remove(child)
            return None
        raise SupervisorError(f"unknown supervisor request {op!r}")

    def _new_child(self, spec_or_arg: Any, state: SupervisorState) -> SupervisedChild:
        """The child a start_child request asks for (not started yet)."""
        if state.strategy == "simple_one_for_one" and not isinstance(spec_or_arg, ChildSpec):
            assert state.template is not None
            state.next_dynamic += 1
            child_id = f"{state.template.id}-{state.next_dynamic}"
            if child_id in state.ids:
                raise SupervisorError(f"a child with id {child_id!r} already exists")
            return TemplateChild(state.template, child_id, spec_or_arg)
        if state.strategy == "simple_one_for_one":
            spec = spec_or_arg
        else:
            if not isinstance(spec_or_arg, ChildSpec):
                raise SupervisorError("start_child needs a ChildSpec (an arg alone only for simple_one_for_one)")
            spec = spec_or_arg
        if spec.id in state.ids:
            raise SupervisorError(f"a child with id {spec.id!r} already exists")
        return SupervisedChild(spec)

    @staticmethod
    def _find(state: SupervisorState, key: Any) -> SupervisedChild:
        for child in state.children:
            if child.id == key or child.ref == key:
                return child
        raise SupervisorError(f"no child {key!r} in this supervisor")

    def noex_tree(self, state: SupervisorState | None = None) -> SupervisorTree:
        """This supervisor's tree (children, restart counts) for snapshots."""
        state = state if state is not None else self._noex_process.state
        node = self.node
        subtrees = []
        for child in state.children:
            if child.spec.is_supervisor and child.ref is not None:
                proc = node.local_process(child.ref)
                if proc is not None and isinstance(proc.server, SupervisorServer) and proc.state is not None:
                    subtrees.append(proc.server.noex_tree(proc.state))
        return SupervisorTree(
            ref=self.ref, name=self._noex_process.name, strategy=state.strategy,
            restarts=state.total_restarts, children=[c.info(node) for c in state.children],
            subtrees=subtrees,
        )


# The tags of a supervisor request and of its refusal (the facade calls, the server answers;
# subclasses such as DistributedSupervisorServer add requests of their own under the same tag).
SUPERVISOR_REQUEST = "$supervisor"
SUPERVISOR_REFUSED = "$supervisor_refused"


async def _ask(sup: Target, timeout: float, *request: Any) -> Any:
    """Send a request to a supervisor; raise the error it refused the request with."""
    result = await current_node().call(sup, (SUPERVISOR_REQUEST, *request), timeout)
    if type(result) is tuple and len(result) == 2 and result[0] == SUPERVISOR_REFUSED:
        raise result[1]
    return result


class Supervisor:
    """Facade: start supervisors and manage their children."""

    @staticmethod
    async def start(
        strategy: Strategy = "one_for_one", children: list[ChildSpec] | None = None, *,
        max_restarts: int = 3, within_ms: int = 5000, name: str | None = None, timeout: float = 30.0,
    ) -> ProcessRef:
        """Start a supervisor and its children (in order); returns its ref."""
        options = {"strategy": strategy, "children": list(children or []),
                   "max_restarts": max_restarts, "within_ms": within_ms}
        _validate_options(options)
        return await current_node().spawn(SupervisorServer, options, name=name, timeout=timeout)

    @staticmethod
    async def start_child(sup: Target, spec: ChildSpec | Any, *, timeout: float = 30.0) -> ProcessRef:
        """Add a child (for simple_one_for_one, pass the child's arg or a ChildSpec)."""
        # `_ask` inlined: one coroutine less on the path a loop may take 10,000 times
        result = await current_node().call(sup, (SUPERVISOR_REQUEST, "start_child", spec), timeout)
        if type(result) is tuple and len(result) == 2 and result[0] == SUPERVISOR_REFUSED:
            raise result[1]
        ref: ProcessRef = result
        return ref

    @staticmethod
    async def terminate_child(sup: Target, child_id: str | ProcessRef, *, timeout: float = 30.0) -> None:
        """Stop a child; it stays stopped (its spec is kept, except for simple_one_for_one)."""
        await _ask(sup, timeout, "terminate_child", child_id)

    @staticmethod
    async def restart_child(sup: Target, child_id: str, *, timeout: float = 30.0) -> ProcessRef:
        """Stop the child if it runs, then start it again; returns the new ref."""
        ref: ProcessRef = await _ask(sup, timeout, "restart_child", child_id)
        return ref

    @staticmethod
    async def delete_child(sup: Target, child_id: str, *, timeout: float = 30.0) -> None:
        """Forget a stopped child's spec."""
        await _ask(sup, timeout, "delete_child", child_id)

    @staticmethod
    async def which_children(sup: Target, *, timeout: float = 5.0) -> list[ChildInfo]:
        result: list[ChildInfo] = await _ask(sup, timeout, "which_children")
        return result

    @staticmethod
    async def count_children(sup: Target, *, timeout: float = 5.0) -> int:
        """How many children the supervisor has (running or stopped)."""
        result: int = await _ask(sup, timeout, "count_children")
        return result

    @staticmethod
    async def stop(sup: Target, *, timeout: float = 60.0) -> None:
        """Stop all children (reverse start order), then the supervisor."""
        await current_node().stop_process(sup, SHUTDOWN, timeout)
