"""`DistributedSupervisor`: OTP supervision with children placed on the cluster's nodes.

It is the single-node `Supervisor` (same strategies, restart types and sliding-window
intensity) whose children are started by behavior name on nodes chosen by a selector.
Children are linked to the supervisor, so:

* a child's exit reaches the supervisor exactly once, as one `Exit` message;
* when a child's node is lost the link delivers "noconnection": the child is restarted on
  a surviving node (`child_migrated`), and that restart counts towards the intensity;
* a busy node (its loop blocked, heartbeats fine) is not lost, so nothing migrates;
* a node that leaves gracefully says so before it stops its processes: every child that then
  ends there is started on another node whatever its restart type (`child_migrated`, reason
  "node_leaving"), and that move does not count towards the intensity;
* when the supervisor's own node dies, each child's link delivers "noconnection" to the
  child, which exits (the OTP rule): nothing keeps running unsupervised.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from ..core.errors import (
    InitError,
    InvalidArgumentError,
    NodeNotReachableError,
    NodeStoppedError,
    NoexError,
    SupervisorError,
    WaitTimeoutError,
)
from ..core.events import EventKind, NodeEvent
from ..core.mailbox import check_mailbox_options
from ..core.messages import Exit
from ..core.node import Node, Target, current_node
from ..core.node_id import NodeId
from ..core.reasons import NOCONNECTION, ExitReason
from ..core.refs import ProcessRef
from ..core.supervisor import (
    RESTART_TYPES,
    STRATEGIES,
    ChildInfo,
    ChildSpec,
    Supervisor,
    SupervisorServer,
    _Child,
    _State,
)
from ..core.timeouts import check_timeout
from .attached import distribution_of
from .partition_policy import supervisor_fencing
from .spawn import spawn

SELECTORS = ("local_first", "round_robin", "least_loaded", "random")
EVENTS: tuple[EventKind, ...] = (
    "child_started", "child_stopped", "child_restarted", "child_migrated", "node_failure_detected",
    "supervisor_stopped",
)

NodeSelector = str | dict[str, Any] | Callable[..., Any]


@dataclass(frozen=True)
class DistributedChildSpec:
    """One child: a behavior registered under `behavior_name` on every node (BehaviorRegistry).
    `max_mailbox` and `overflow` bound its mailbox, as in `GenServer.start`."""

    id: str
    behavior_name: str
    arg: Any = None
    restart: str = "permanent"
    shutdown: float | None = 5.0
    node_selector: NodeSelector | None = None
    max_mailbox: int | None = None
    overflow: str = "drop_newest"

    def __post_init__(self) -> None:
        check_mailbox_options(self.max_mailbox, self.overflow)

    @classmethod
    def of(cls, value: Any) -> DistributedChildSpec:
        if isinstance(value, DistributedChildSpec):
            return value
        if not isinstance(value, dict):
            raise InvalidArgumentError(f"a distributed child spec is a dict or DistributedChildSpec, not {value!r}")
        unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InvalidArgumentError(f"unknown child spec keys {sorted(unknown)}")
        if "id" not in value or "behavior_name" not in value:
            raise InvalidArgumentError("a distributed child spec needs 'id' and 'behavior_name'")
        spec = cls(**value)
        if spec.restart not in RESTART_TYPES:
            raise InvalidArgumentError(f"restart must be one of {RESTART_TYPES}, not {spec.restart!r}")
        if spec.node_selector is not None:
            _check_selector(spec.node_selector)
        return spec


def _check_selector(selector: Any) -> None:
    if isinstance(selector, str) and selector in SELECTORS:
        return
    if isinstance(selector, dict) and set(selector) == {"node"}:
        NodeId.parse(str(selector["node"]))
        return
    if callable(selector):
        return
    raise InvalidArgumentError(
        f"node_selector must be one of {SELECTORS}, {{'node': id}} or a callable, not {selector!r}"
    )


class DistributedSupervisorServer(SupervisorServer):
    """The supervisor process; children are started through `RemoteSpawn` with a link."""

    async def init(self, options: dict[str, Any]) -> _State:
        self._selector: NodeSelector = options.pop("node_selector", "local_first")
        _check_selector(self._selector)
        self._round_robin = itertools.count()
        self._migrating: dict[str, tuple[NodeId, str]] = {}  # child id -> (from node, why)
        self._failed_nodes: set[NodeId] = set()
        self._dspecs: dict[str, DistributedChildSpec] = {}
        # monotonic times of recent placements per node: heartbeats report process counts late
        self._placed_at: dict[NodeId, list[float]] = {}
        options["children"] = [self._to_child_spec(DistributedChildSpec.of(c)) for c in options.get("children", [])]
        if self.node.distribution is not None:
            self._unsubscribe_up = self.node.on_node_up(lambda info: self._failed_nodes.discard(info.id))
        self._fencing = supervisor_fencing(self)  # the partition policy's hook (None without one)
        state = await super().init(options)
        self.node.events.emit("distributed_supervisor_started", supervisor=self.ref)
        return state

    def _to_child_spec(self, dspec: DistributedChildSpec) -> ChildSpec:
        self._dspecs[dspec.id] = dspec
        return ChildSpec(id=dspec.id, start=_no_direct_start, arg=dspec.arg,
                         restart=dspec.restart,  # type: ignore[arg-type]
                         shutdown=dspec.shutdown)

    # ------------------------------------------------------------------ placement
    def _alive_nodes(self) -> list[NodeId]:
        """This node (unless it is a hidden observer) and its peers, except peers that are leaving."""
        dist = distribution_of(self.node)
        me = None if dist is not None and dist.config.hidden else self.node.id
        peers = [info.id for info in self.node.get_nodes() if not self._departing(info.id, info.incarnation)]
        return sorted({*([me] if me is not None else []), *peers})

    def _departing(self, node: NodeId | None, incarnation: int) -> bool:
        dist = distribution_of(self.node)
        return node is not None and dist is not None and dist.membership.is_departing(node, incarnation)

    async def _choose(self, dspec: DistributedChildSpec, exclude: set[NodeId]) -> NodeId:
        nodes = [n for n in self._alive_nodes() if n not in exclude]
        if not nodes:
            raise InitError(dspec.behavior_name, "no node is available to run this child")
        selector = dspec.node_selector if dspec.node_selector is not None else self._selector
        me = self.node.id
        if selector == "local_first":
            return me if me in nodes else nodes[0]
        if selector == "round_robin":
            return nodes[next(self._round_robin) % len(nodes)]
        if selector == "random":
            return random.choice(nodes)
        if selector == "least_loaded":
            counts = {info.id: info.process_count + self._placed_since_heartbeat(info.id)
                      for info in self.node.get_nodes()}
            if me is not None:
                counts[me] = self.node.process_count  # exact for this node
            return min(nodes, key=lambda n: (counts.get(n, 0), n))
        if isinstance(selector, dict):
            wanted = NodeId.parse(str(selector["node"]))
            if wanted not in nodes:
                raise InitError(dspec.behavior_name, f"node {wanted} chosen for child {dspec.id!r} is not available")
            return wanted
        assert callable(selector)
        chosen = selector(list(nodes), dspec.id)
        if inspect.isawaitable(chosen):
            chosen = await chosen
        chosen = chosen if isinstance(chosen, NodeId) else NodeId.parse(str(chosen))
        if chosen not in nodes:
            raise InitError(dspec.behavior_name, f"the node selector chose {chosen}, which is not available")
        return chosen

    async def _start_child(self, child: _Child) -> None:
        dspec = self._dspecs[child.spec.id]
        tried: set[NodeId] = set()
        origin, why = self._migrating.pop(child.spec.id, (None, ""))
        if origin is not None:
            tried.add(origin)
        last_error: BaseException | None = None
        for _ in range(32):
            try:
                target = await self._choose(dspec, tried)
            except InitError:
                if last_error is not None:
                    raise InitError(dspec.behavior_name, f"could not start child {dspec.id!r}: {last_error}") from None
                raise
            try:
                child.ref = await spawn(dspec.behavior_name, target, arg=dspec.arg, link_to=self.ref,
                                        max_mailbox=dspec.max_mailbox, overflow=dspec.overflow)
                self._note_placement(target)
            except (NodeNotReachableError, NodeStoppedError, TimeoutError) as exc:
                tried.add(target)
                last_error = exc
                continue
            except InitError:
                raise
            except NoexError as exc:
                raise InitError(dspec.behavior_name, str(exc), getattr(exc, "reason", None)) from exc
            break
        else:
            raise InitError(dspec.behavior_name, f"could not start child {dspec.id!r}: {last_error}")
        emit = self.node.events.emit
        if origin is not None:
            emit("child_migrated", supervisor=self.ref, child=dspec.id, ref=child.ref, from_node=origin,
                 to_node=target, reason=why)
        elif child.restarts:
            emit("child_restarted", supervisor=self.ref, child=dspec.id, ref=child.ref, node=target,
                 restarts=child.restarts)
        emit("child_started", supervisor=self.ref, child=dspec.id, ref=child.ref, node=target)

    def _placed_since_heartbeat(self, peer: NodeId) -> int:
        """Children placed on `peer` after its last heartbeat (whose process count lacks them).
        Both instants are monotonic: a step of the wall clock changes nothing."""
        dist = distribution_of(self.node)
        live = dist.liveness.status(peer) if dist is not None and dist.liveness is not None else None
        heard_at = live.last_heartbeat_mono if live is not None and live.heartbeats else -float("inf")
        return sum(1 for t in self._placed_at.get(peer, ()) if t >= heard_at)

    def _note_placement(self, target: NodeId) -> None:
        now = time.monotonic()
        recent = [t for t in self._placed_at.get(target, ()) if now - t < 30.0]
        recent.append(now)
        self._placed_at[target] = recent

    # ------------------------------------------------------------------ node loss
    async def handle_info(self, msg: Any, state: _State) -> Any:
        fencing = getattr(self, "_fencing", None)  # (None without a partition policy)
        if fencing is not None and (handled := await fencing.handle(msg, state)) is not None:
            return handled
        if isinstance(msg, Exit) and msg.from_.node is not None:
            node = msg.from_.node
            child = next((c for c in state.children if c.ref == msg.from_), None)
            if child is not None and self.node.stopping:
                # this node leaves: its own children stop with it (they are not its processes'
                # children, so the node stops them first) and none is restarted anywhere
                return self._stopped_by_leaving(child, msg.reason, state)
            if child is not None and self._departing(node, msg.from_.creation):
                return await self._move(state, child, msg.reason)
            if child is not None and msg.reason == NOCONNECTION:
                if node not in self._failed_nodes:
                    self._failed_nodes.add(node)
                    self.node.events.emit("node_failure_detected", supervisor=self.ref, node=node)
                self._migrating[child.spec.id] = (node, "noconnection")
        return await super().handle_info(msg, state)

    async def _move(self, state: _State, child: _Child, reason: ExitReason) -> Any:
        """A child ended because its node leaves: start it elsewhere, whatever its restart type,
        without counting a restart. Only when no node can take it is it an ordinary restart."""
        assert child.ref is not None and child.ref.node is not None
        origin = child.ref.node
        self._migrating[child.spec.id] = (origin, "node_leaving")
        child.ref = None
        child.last_reason = reason
        if self.node.stopping or not [n for n in self._alive_nodes() if n != origin]:
            # This node leaves too, or every node does (the cluster is being shut down): nowhere
            # to go, and nothing failed. The child stays stopped instead of counting restarts.
            self._migrating.pop(child.spec.id, None)
            return self._stopped_by_leaving(child, reason, state)
        try:
            await self._start_child(child)
        except InitError as exc:
            return await self._restart(state, child, exc.reason)
        return state

    def _stopped_by_leaving(self, child: _Child, reason: ExitReason, state: _State) -> _State:
        """A child that ended because nodes leave and has nowhere to go: stopped, not restarted."""
        gone, child.ref = child.ref, None
        child.last_reason = reason
        self.node.events.emit("child_stopped", supervisor=self.ref, child=child.spec.id, ref=gone,
                              reason="node_leaving")
        return state

    async def terminate(self, reason: ExitReason, state: _State) -> None:
        try:
            await super().terminate(reason, state)
        finally:
            unsubscribe = getattr(self, "_unsubscribe_up", None)
            if unsubscribe is not None:
                unsubscribe()
            fencing = getattr(self, "_fencing", None)
            if fencing is not None:
                fencing.unsubscribe()
            self.node.events.emit("supervisor_stopped", supervisor=self.ref, reason=reason)

    async def _call_start_child(self, spec_or_arg: Any, state: _State) -> ProcessRef:
        if state.strategy == "simple_one_for_one":
            assert state.template is not None
            template = self._dspecs[state.template.id]
            state.next_dynamic += 1  # the base class counts only specs it builds itself
            dspec = dataclasses.replace(template, id=f"{template.id}-{state.next_dynamic}", arg=spec_or_arg)
        else:
            try:
                dspec = DistributedChildSpec.of(spec_or_arg)
            except InvalidArgumentError as exc:
                raise SupervisorError(str(exc)) from None
        if any(c.spec.id == dspec.id for c in state.children):
            raise SupervisorError(f"a child with id {dspec.id!r} already exists")
        return await super()._call_start_child(self._to_child_spec(dspec), state)


async def _no_direct_start() -> ProcessRef:
    raise SupervisorError("distributed children are started by their supervisor")


def _options(
    strategy: str, children: list[Any], max_restarts: int, within_ms: int, node_selector: Any
) -> dict[str, Any]:
    if strategy not in STRATEGIES:
        raise InvalidArgumentError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    _check_selector(node_selector)
    specs = [DistributedChildSpec.of(c) for c in children]
    ids = [s.id for s in specs]
    if len(ids) != len(set(ids)):
        raise InvalidArgumentError(f"child ids must be unique, got {ids}")
    return {"strategy": strategy, "children": specs, "max_restarts": max_restarts, "within_ms": within_ms,
            "node_selector": node_selector}


class DistributedSupervisor:
    """Facade: a supervisor whose children run anywhere in the cluster."""

    @staticmethod
    async def start(
        strategy: str = "one_for_one", children: list[Any] | None = None, *,
        node_selector: NodeSelector = "local_first", max_restarts: int = 3, within_ms: int = 5000,
        name: str | None = None, timeout: float = 60.0,
    ) -> ProcessRef:
        """Start the supervisor on the current node and its children on nodes chosen by `node_selector`
        (local_first | round_robin | least_loaded | random | {"node": id} | callable(nodes, child_id))."""
        options = _options(strategy, list(children or []), max_restarts, within_ms, node_selector)
        node = current_node()
        return await node.spawn(DistributedSupervisorServer, options, name=name, timeout=timeout)

    start_child = staticmethod(Supervisor.start_child)
    terminate_child = staticmethod(Supervisor.terminate_child)
    restart_child = staticmethod(Supervisor.restart_child)
    delete_child = staticmethod(Supervisor.delete_child)
    count_children = staticmethod(Supervisor.count_children)
    stop = staticmethod(Supervisor.stop)

    @staticmethod
    async def which_children(sup: Target, *, timeout: float = 5.0) -> list[ChildInfo]:
        """Children with their node, restart count and status."""
        return await Supervisor.which_children(sup, timeout=timeout)

    @staticmethod
    async def wait_stable(sup: Target, *, timeout: float = 10.0) -> list[ChildInfo]:
        """Wait until every child of `sup` runs, on a node this node sees up (so no restart or
        failover is in flight), and return the children: the awaitable form of a loop polling
        `which_children` after a crash or a node failure. Raises `WaitTimeoutError` naming the
        children that are not running (or run on a node that is down) after `timeout` seconds."""
        timeout = check_timeout(timeout)
        node = current_node()
        deadline = anyio.current_time() + timeout
        unstable: list[str] = ["not asked yet"]
        with anyio.move_on_after(timeout):
            while True:
                left = max(deadline - anyio.current_time(), 0.05)
                children = await Supervisor.which_children(sup, timeout=min(left, 5.0))
                unstable = _unstable(node, sup, children)
                if not unstable:
                    return children
                await anyio.sleep(0.05)  # a re-check, bounded by the deadline above
        raise WaitTimeoutError(f"supervisor {sup} stable (every child running on a node that is up)",
                               timeout, "; ".join(unstable))

    @staticmethod
    def on_event(sup: ProcessRef, callback: Callable[[NodeEvent], Any], *, node: Node | None = None
                 ) -> Callable[[], None]:
        """Call `callback(event)` for child_started / child_stopped / child_restarted / child_migrated /
        node_failure_detected / supervisor_stopped of supervisor `sup` (which runs on this node)."""
        host = node or current_node()

        def relay(event: NodeEvent) -> Any:
            if event.kind in EVENTS and event.data.get("supervisor") == sup:
                return callback(event)
            return None

        return host.events.subscribe(relay)


def _unstable(node: Node, sup: Target, children: list[ChildInfo]) -> list[str]:
    """What keeps `children` from being stable: stopped children and children on a node that is down."""
    up = {info.id for info in node.get_nodes()}
    if node.distribution is not None and node.id is not None:
        up.add(node.id)
    if isinstance(sup, ProcessRef) and sup.node is not None:
        up.add(sup.node)
    problems = []
    for child in children:
        if child.status != "running":
            problems.append(f"{child.id} is {child.status}")
        elif child.node is not None and node.distribution is not None and child.node not in up:
            problems.append(f"{child.id} runs on {child.node.name}, which is not up")
    return problems
