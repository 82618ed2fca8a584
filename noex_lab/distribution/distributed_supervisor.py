"""`DistributedSupervisor`: OTP supervision with children placed on the cluster's nodes, and
no single point of failure.

It is the single-node `Supervisor` (same strategies, restart types and sliding-window
intensity) whose children are started by behavior name on nodes chosen by a selector, through
the base class's public placement hook (`place_child`). Children are **monitored**, not linked:

* a child's exit reaches the supervisor exactly once, as one `Down` (handled as the `Exit` of
  a linked child would be);
* when a child's node is lost, every child that ran there is restarted on surviving nodes in
  one batch (one request per target node, started concurrently; `child_migrated`), and each
  restart counts towards the intensity;
* a busy node (its loop blocked, heartbeats fine) is not lost, so nothing migrates;
* a node that leaves gracefully first hands its children off: each one's `handle_handoff(state)`
  (optional) gives a value, the child stops, and a new instance starts on another node, where
  `DistributedSupervisor.handed_off()` returns that value in its `init`; a move does not count
  towards the intensity;
* the supervisor's state (child specs, refs, restart history) is replicated to every member
  after each change; when the supervisor's own node dies (or leaves), its children elsewhere
  keep running and the lowest surviving member holding the replica takes over: it claims the supervisor's global
  name if it has one (so only one node can win), monitors the running children and restarts the
  lost ones. Two supervisors of one that meet (a healed partition) see each other's replicas:
  the lower-ranked stays, the other stops its instances.

Under a partition policy (`partition_policy.SupervisorFencing`) children fence with their node,
restarts of children lost with their node wait for the takeover window, a fenced node restarts
and takes over nothing, and a supervisor suspended by a fence yields to its takeover after the
heal (docs/concepts/partitions.md).
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import logging
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from ..core import systools
from ..core.errors import (
    CallTimeoutError,
    GlobalNameConflictError,
    InitError,
    InvalidArgumentError,
    NodeFencedError,
    NodeNotReachableError,
    NodeStoppedError,
    NoexError,
    NotPermittedError,
    ServerNotRunningError,
    SupervisorError,
    WaitTimeoutError,
)
from ..core.events import EventKind, NodeEvent
from ..core.mailbox import check_mailbox_options
from ..core.messages import Down, Exit, Stop
from ..core.node import Node, Target, current_node, current_process
from ..core.node_id import NodeId
from ..core.reasons import KILLED, NOCONNECTION, SHUTDOWN, ExitReason
from ..core.refs import MonitorRef, ProcessRef
from ..core.supervisor import (
    RESTART_TYPES,
    STRATEGIES,
    SUPERVISOR_REFUSED,
    SUPERVISOR_REQUEST,
    ChildInfo,
    ChildSpec,
    SupervisedChild,
    Supervisor,
    SupervisorServer,
    SupervisorState,
)
from ..core.timeouts import check_timeout
from .attached import distribution_of
from .behaviors import BehaviorRegistry
from .partition_policy import supervisor_fencing
from .service import Operation, Service

if TYPE_CHECKING:
    from .cluster import Distribution

SELECTORS = ("local_first", "round_robin", "least_loaded", "random")
EVENTS: tuple[EventKind, ...] = (
    "child_started", "child_stopped", "child_restarted", "child_migrated", "node_failure_detected",
    "supervisor_stopped", "supervisor_took_over",
)

NodeSelector = str | dict[str, Any] | Callable[..., Any]

_CONFLICT = "$dsup_conflict"  # to the loser of two supervisors with one name (a healed partition)
_INHERIT = "$dsup_inherit"  # from the loser of a conflict to the winner: the orphans only it knew of
_YIELD = "$dsup_yield"  # to a supervisor suspended by a fence whose work the winning side took over
_PUSH_EVERY_S = 0.05  # while messages keep coming, the replica is pushed at least this often
_BATCH_TIMEOUT_S = 10.0
_TAKEOVER_TRIES = 100  # claims of the global name while the dead host's entry is still seen somewhere
_TAKEOVER_RETRY_S = 0.02
_HOLDER_TIMEOUT_S = 1.0  # a suspended supervisor asking its peers whether it was taken over
_RESTART_RETRY_S = 0.5  # under a partition policy, a child that could not be placed is tried again after this
_HOLDER_RETRY_S = 0.5  # a takeover asks a silent lower member again after this (or a membership change)
_HOLDER_ASKS = 120  # ... this many times at most (a minute or more): then it claims (a conflict settles two)
_UNSURE_MAX = 64  # supervisors whose starts on one node are in doubt, kept by one supervisor
_STARTED_FOR_PRUNE = 64  # supervisors remembered in SupervisorReplicas.started_for before a prune
_REPLACED_STOP_S = 5.0  # a replaced instance's terminate, once its node is back
_LINEAGE_MAX = 16  # predecessors a supervisor remembers (see DistributedSupervisorServer._lineage)

log = logging.getLogger(__name__)

# The hand-off value for the process being started in this task: [value, claimed by].
_HANDOFF: ContextVar[list[Any] | None] = ContextVar("noex_dsup_handoff", default=None)


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

    def wire(self) -> dict[str, Any]:
        """The spec as a wire value for the replicas (a callable selector cannot travel: the
        supervisor's own selector applies on a node that takes over)."""
        fields = dataclasses.asdict(self)
        if callable(self.node_selector):
            fields["node_selector"] = None
        return fields


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


def _unique_hex(node: Node, nbytes: int) -> str:
    """A random suffix for an unnamed supervisor's internal name. Drawn from the node's entropy
    (not `uuid.uuid4`, which reads the real `os.urandom`) so a simulation's seed decides it."""
    return node.entropy.token_bytes(nbytes).hex()


class DistributedSupervisorServer(SupervisorServer):
    """The supervisor process: children placed through `spawn` and monitored; its state
    replicated to every member (`SupervisorReplicas`)."""

    async def init(self, options: dict[str, Any]) -> SupervisorState:
        self._gname: str = options.pop("global_name")
        self._selector: NodeSelector = options.pop("node_selector", "local_first")
        _check_selector(self._selector)
        replica: dict[str, Any] | None = options.pop("adopt", None)
        self._round_robin = itertools.count()
        self._migrating: dict[str, tuple[NodeId, str]] = {}  # child id -> (from node, why)
        self._failed_nodes: set[NodeId] = set()
        # Instances a failover replaced: their node was lost to us, not necessarily dead (a partition,
        # a paused process), so they may still run there. Children are monitored, not linked, so
        # nothing else ends them: they are stopped when their node (same incarnation) is seen again.
        self._replaced: dict[ProcessRef, None] = {}
        # Nodes a start request failed to (a lost connection, a timeout): it may have started the
        # children there all the same, its answer lost. Such a node is asked to stop the instances
        # it started for this supervisor that are not its children now (`dsup.reap`), once reachable.
        # (Also those of the supervisors that lost a name conflict to this one: node -> supervisors.)
        self._unsure: dict[NodeId, set[ProcessRef]] = {}
        self._dspecs: dict[str, DistributedChildSpec] = {}
        self._wires: dict[str, dict[str, Any]] = {}
        self._mrefs: dict[ProcessRef, MonitorRef] = {}
        self._by_ref: dict[ProcessRef, SupervisedChild] = {}  # watched children, for their Down
        self._dirty = False  # changed since the last push of the replica
        self._busy = False  # inside a callback (the state may be half-updated)
        self._pushed_at = 0.0
        self._handing_over = False  # this node leaves: the supervision moves, the children stay
        self._adopted = replica is None  # a standby that lost the claim on the name stops nothing
        # the supervisors this one took over, newest first (through takeovers of takeovers): a
        # supervisor suspended by a fence yields to a takeover of it, never to one of these
        self._lineage: list[ProcessRef] = []
        if replica is not None:
            older = [r for r in replica.get("lineage", []) if isinstance(r, ProcessRef)]
            self._lineage = [r for r in [replica["sup"], *older] if isinstance(r, ProcessRef)][:_LINEAGE_MAX]
        dist = distribution_of(self.node)
        # A hidden observer is no member: nobody takes its supervisor over, so its children are
        # also linked to it and end with it (the OTP rule), as before replication existed.
        self._linked = dist is not None and dist.config.hidden
        # monotonic times of recent placements per node: heartbeats report process counts late
        self._placed_at: dict[NodeId, list[float]] = {}
        if self.node.distribution is not None:
            self._unsubscribe_up = self.node.on_node_up(self._node_up)
        self._fencing = supervisor_fencing(self)  # the partition policy's hook (None without one)
        if replica is not None:
            state = self._restore(replica)
        else:
            options["children"] = [self._to_child_spec(DistributedChildSpec.of(c))
                                   for c in options.get("children", [])]
            state = await super().init(options)
            self._replicate(state)
        store = _store(self.node)
        if store is not None:
            store.local[self._gname] = self.ref
        self.node.events.emit("distributed_supervisor_started", supervisor=self.ref, name=self._gname)
        return state

    def _to_child_spec(self, dspec: DistributedChildSpec) -> ChildSpec:
        self._dspecs[dspec.id] = dspec
        self._wires.pop(dspec.id, None)
        return ChildSpec(id=dspec.id, start=_no_direct_start, arg=dspec.arg,
                         restart=dspec.restart,  # type: ignore[arg-type]
                         shutdown=dspec.shutdown)

    def _wire(self, child_id: str) -> dict[str, Any]:
        """A child's spec as a wire value, built once (a replica of 1,000 children is pushed often)."""
        wire = self._wires.get(child_id)
        if wire is None:
            wire = self._wires[child_id] = self._dspecs[child_id].wire()
        return wire

    def _node_up(self, info: Any) -> None:
        self._failed_nodes.discard(info.id)
        self._stop_replaced(info.id, info.incarnation)
        if info.id in self._unsure:
            self._reap(info.id)
            if len(self._unsure[info.id]) > _UNSURE_MAX:  # (a bound: past it, the doubts about that node are dropped)
                del self._unsure[info.id]
        self._dirty = True  # the new member gets the replica too: now if idle, else after the callback
        state = self._noex_process.state
        if not self._busy and isinstance(state, SupervisorState):
            self._push_if_due(state)

    def _stop_replaced(self, node: NodeId, incarnation: int) -> None:
        """`node` is back: stop the instances on it that a failover replaced (of an older
        incarnation they died with it). In the background: the supervisor keeps serving."""
        back = [ref for ref in self._replaced if ref.node == node]
        for ref in back:
            del self._replaced[ref]
            if ref.creation == incarnation:
                self.node.spawn_task(self._stop_instance, ref, what=f"stopping a replaced instance {ref}")
        if back:
            self._dirty = True

    async def _stop_instance(self, ref: ProcessRef) -> None:
        """Stop a replaced instance unless its node knows another supervisor of this name (the other
        side of a healed partition took it over and adopted the instance: the conflict between the
        two supervisors decides which instances stay, see `SupervisorReplicas._on_replica`)."""
        dist = distribution_of(self.node)
        assert ref.node is not None and dist is not None
        me = _full(self.node.id, self.ref)
        try:
            holder = await dist.router.rpc(ref.node, "dsup.holder", self._gname, _HOLDER_TIMEOUT_S)
            if isinstance(holder, ProcessRef) and holder != me:
                return
            await self.node.stop_process(ref, SHUTDOWN, _REPLACED_STOP_S)
        except ServerNotRunningError:
            pass  # it ended meanwhile
        except NoexError as exc:  # its node was lost again: it is replaced again when it comes back
            log.warning("supervisor %s could not stop %s, replaced after its node was lost: %s",
                        self._gname, ref, exc)
            if self.node.local_process(self.ref) is not None:
                self._replaced[ref] = None
                self._dirty = True

    def _lose_conflict(self, winner: Any, state: SupervisorState) -> Stop:
        """Another supervisor of this name won: pass it the orphans only this one knows of (the
        instances it replaced, the nodes whose start answer it lost), then stop."""
        if isinstance(winner, ProcessRef) and (self._replaced or self._unsure):
            me = _full(self.node.id, self.ref)
            try:
                unsure = [[node, sorted(sups, key=str)] for node, sups in sorted(self._unsure.items())]
                self.node.send(winner, (_INHERIT, me, list(self._replaced), unsure))
            except NoexError as exc:  # the winner unreachable again: its own checks remain
                log.warning("supervisor %s could not pass its orphans to %s: %s", self._gname, winner, exc)
        return Stop(("name_conflict", self._gname), state)

    def _inherit(self, loser: Any, replaced: Any, unsure: Any, state: SupervisorState) -> SupervisorState:
        """The loser of a conflict passed its orphans: stop those that are not this one's children."""
        mine = {_full(self.node.id, c.ref) for c in state.children if c.ref is not None}
        for ref in replaced if isinstance(replaced, list) else []:
            if isinstance(ref, ProcessRef) and ref not in mine:
                self._replaced[ref] = None
        for info in self.node.get_nodes():  # those whose node is here already
            self._stop_replaced(info.id, info.incarnation)
        if not isinstance(loser, ProcessRef):
            return state
        unsure_here = {loser.node} if loser.node is not None else set()  # the loser's own node too
        for item in unsure if isinstance(unsure, list) else []:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[0], NodeId):
                unsure_here.add(item[0])
                self._unsure.setdefault(item[0], set()).update(r for r in item[1] if isinstance(r, ProcessRef))
        for node in unsure_here:  # what the loser started there that this one does not supervise
            self._unsure.setdefault(node, set()).add(loser)
        connected = {info.id for info in self.node.get_nodes()}
        for node in sorted(unsure_here & connected):
            self._reap(node)
        return state

    def _unsure_about(self, target: NodeId) -> None:
        """A start request to `target` failed: it may have started children whose answer was lost."""
        if target == self.node.id:
            return
        self._unsure.setdefault(target, set()).add(_full(self.node.id, self.ref) or self.ref)
        self._dirty = True  # in the replica: a takeover asks that node to reap if this one is lost
        if any(info.id == target for info in self.node.get_nodes()):
            self._reap(target)  # still connected (a timeout): ask at once (after the request, same connection)

    def _reap(self, target: NodeId) -> None:
        """Ask `target` to stop what it started for these supervisors (this one, or losers of a
        conflict with it) and is not a child of this one now."""
        dist = distribution_of(self.node)
        state = self._noex_process.state
        if dist is None or not isinstance(state, SupervisorState):
            return
        current = {c.spec.id: _full(self.node.id, c.ref) for c in state.children if c.ref is not None}
        # Kept, and asked again each time the node is back: a cast on a connection that is being
        # cut is lost, and a reap that finds nothing is cheap (the node forgets what it reaped).
        for sup in sorted(self._unsure.get(target, set()), key=str):
            dist.router.rpc_cast(target, "dsup.reap", [sup, current])

    # ------------------------------------------------------------------ events
    def _emit(self, kind: EventKind, **data: Any) -> None:
        """An event on this node's stream, and to the nodes where `on_event` listens for it."""
        self.node.events.emit(kind, supervisor=self.ref, name=self._gname, **data)
        store = _store(self.node)
        if store is not None:
            store.relay(self._gname, self.ref, kind, {"supervisor": self.ref, "name": self._gname, **data})

    # ------------------------------------------------------------------ placement
    def _alive_nodes(self) -> list[NodeId]:
        """This node (unless it is a hidden observer or leaves) and its peers, except leaving ones."""
        dist = distribution_of(self.node)
        hidden = dist is not None and dist.config.hidden
        me = None if hidden or self.node.stopping else self.node.id
        peers = [info.id for info in self.node.get_nodes() if not self._departing(info.id, info.incarnation)]
        return sorted({*([me] if me is not None else []), *peers})

    def _departing(self, node: NodeId | None, incarnation: int) -> bool:
        dist = distribution_of(self.node)
        return node is not None and dist is not None and dist.membership.is_departing(node, incarnation)

    async def _choose(self, dspec: DistributedChildSpec, exclude: set[NodeId],
                      alive: list[NodeId] | None = None) -> NodeId:
        nodes = [n for n in (self._alive_nodes() if alive is None else alive) if n not in exclude]
        if not nodes:
            raise InitError(dspec.behavior_name, "no node is available to run this child")
        selector = dspec.node_selector if dspec.node_selector is not None else self._selector
        me = self.node.id
        if selector == "local_first":
            return me if me in nodes else nodes[0]
        if selector == "round_robin":
            return nodes[next(self._round_robin) % len(nodes)]
        if selector == "random":
            return self.node.entropy.random.choice(nodes)
        if selector == "least_loaded":
            counts = {info.id: info.process_count + self._placed_since_heartbeat(info.id)
                      for info in self.node.get_nodes()}
            if me is not None:
                counts[me] = self.node.process_count + self._placed_since_heartbeat(me)
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

    async def place_child(self, child: SupervisedChild) -> ProcessRef:
        """The placement hook: start the child on a node the selector picks (others if that one
        is unreachable), and monitor it."""
        dspec = self._dspecs[child.spec.id]
        tried: set[NodeId] = set()
        origin, _ = self._migrating.get(child.spec.id, (None, ""))
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
            item = [dspec.behavior_name, dspec.arg, dspec.max_mailbox, dspec.overflow, False, None,
                    self.ref if self._linked else None, [self.ref, child.spec.id, self._gname]]
            try:  # the batch request with one item: the target guards the child as it starts
                (ok, value, *more), = await _spawn_many_at(self.node, target, [item])
            except (NodeNotReachableError, NodeStoppedError, TimeoutError) as exc:
                tried.add(target)
                last_error = exc
                self._unsure_about(target)
                continue
            except NoexError as exc:
                raise InitError(dspec.behavior_name, str(exc), getattr(exc, "reason", None)) from exc
            if not ok:
                if more and more[0]:  # unreachable, stopping or fenced: another node may do
                    tried.add(target)
                    last_error = NodeNotReachableError(target, str(value))
                    continue
                raise InitError(dspec.behavior_name, str(value), more[1] if len(more) > 1 else None)
            ref: ProcessRef = value
            self._note_placement(target)
            self._watch(child, ref)
            return ref
        raise InitError(dspec.behavior_name, f"could not start child {dspec.id!r}: {last_error}")

    def child_started(self, child: SupervisedChild) -> None:
        assert child.ref is not None
        self._announce(child, child.ref.node)

    def _announce(self, child: SupervisedChild, target: NodeId | None) -> None:
        origin, why = self._migrating.pop(child.spec.id, (None, ""))
        if origin is not None:
            self._emit("child_migrated", child=child.spec.id, ref=child.ref, from_node=origin, to_node=target,
                       reason=why)
        elif child.restarts:
            self._emit("child_restarted", child=child.spec.id, ref=child.ref, node=target, restarts=child.restarts)
        self._emit("child_started", child=child.spec.id, ref=child.ref, node=target)

    def _watch(self, child: SupervisedChild, ref: ProcessRef) -> None:
        self._mrefs[ref] = self.node.monitor(ref, watcher=self.ref)
        self._by_ref[ref] = child

    def _unwatch(self, ref: ProcessRef | None) -> None:
        if ref is None:
            return
        self._by_ref.pop(ref, None)
        mref = self._mrefs.pop(ref, None)
        if mref is not None:
            self.node.demonitor(mref)

    def _placed_since_heartbeat(self, peer: NodeId) -> int:
        """Children placed on `peer` after its last heartbeat (whose process count lacks them).
        Both instants are monotonic: a step of the wall clock changes nothing."""
        dist = distribution_of(self.node)
        live = dist.liveness.status(peer) if dist is not None and dist.liveness is not None else None
        if peer == self.node.id:
            return 0
        heard_at = live.last_heartbeat_mono if live is not None and live.heartbeats else -float("inf")
        return sum(1 for t in self._placed_at.get(peer, ()) if t >= heard_at)

    def _note_placement(self, target: NodeId) -> None:
        now = self.node.clock.monotonic()
        recent = [t for t in self._placed_at.get(target, ()) if now - t < 30.0]
        recent.append(now)
        self._placed_at[target] = recent

    async def _start_batch(self, children: list[SupervisedChild], exclude: set[NodeId],
                           handoffs: dict[str, list[Any]] | None = None) -> list[SupervisedChild]:
        """Start `children` (refs cleared) with one request per target node, all targets at
        once; returns the children that could not be started that way."""
        plan: dict[NodeId, list[SupervisedChild]] = {}
        failed: list[SupervisedChild] = []
        alive = self._alive_nodes()
        for child in children:
            try:
                target = await self._choose(self._dspecs[child.spec.id], exclude, alive)
            except InitError:
                failed.append(child)
                continue
            plan.setdefault(target, []).append(child)

        async def start_on(target: NodeId, group: list[SupervisedChild]) -> None:
            items = []
            for child in group:
                dspec = self._dspecs[child.spec.id]
                handoff = (handoffs or {}).get(child.spec.id, [False, None])
                items.append([dspec.behavior_name, dspec.arg, dspec.max_mailbox, dspec.overflow, *handoff,
                              self.ref if self._linked else None, [self.ref, child.spec.id, self._gname]])
            try:
                results = await _spawn_many_at(self.node, target, items)
            except NoexError:
                failed.extend(group)
                self._unsure_about(target)
                return
            for child, (ok, ref, *_) in zip(group, results, strict=True):
                if not ok:
                    failed.append(child)
                    continue
                child.ref = ref
                self._note_placement(target)
                self._watch(child, ref)
                self._announce(child, target)

        async with anyio.create_task_group() as tg:
            for target, group in plan.items():
                tg.start_soon(start_on, target, group)
        return failed

    # ------------------------------------------------------------------ exits, node loss
    async def handle_info(self, msg: Any, state: SupervisorState) -> Any:
        self._busy = True
        try:
            result = await self._info(msg, state)
        finally:
            self._busy = False
        if not isinstance(result, Stop):
            self._push_if_due(result)
        return result

    async def _info(self, msg: Any, state: SupervisorState) -> Any:
        fencing = self._fencing  # the partition policy's hook (None without one)
        if fencing is not None and (handled := await fencing.handle(msg, state)) is not None:
            return handled
        if isinstance(msg, tuple) and len(msg) == 2 and msg[0] == _YIELD:
            return self.yield_to_takeover(state)
        if isinstance(msg, tuple) and len(msg) == 2 and msg[0] == _CONFLICT:
            # after a healed partition another supervisor of this name won: it supervises, this one
            # stops the instances it started (one per child remains, the winner's)
            return self._lose_conflict(msg[1], state)
        if isinstance(msg, tuple) and len(msg) == 4 and msg[0] == _INHERIT:
            return self._inherit(msg[1], msg[2], msg[3], state)
        if self._handing_over:
            return state  # the node that takes over sees these children's ends itself
        if isinstance(msg, Exit) and msg.from_ in self._by_ref:
            return state  # a linked child (hidden host): its Down says the same
        if isinstance(msg, Exit) and isinstance(msg.reason, tuple | list) and len(msg.reason) == 2 \
                and msg.reason[0] == "name_conflict" and msg.reason[1] == self._gname:
            return self._lose_conflict(msg.from_, state)  # the global registry says the same
        if isinstance(msg, Down):
            self._mrefs.pop(msg.ref, None)
            child = self._by_ref.pop(msg.ref, None)
            if child is None or child.ref != msg.ref:
                return state
            result = await self._child_down(state, child, msg.ref, msg.reason)
        else:
            result = await super().handle_info(msg, state)
        self._dirty = True
        return result

    async def _child_down(self, state: SupervisorState, child: SupervisedChild, ref: ProcessRef,
                          reason: ExitReason) -> Any:
        node = ref.node
        dist = distribution_of(self.node)
        if dist is not None and dist.stopping and not self.node.stopping:
            return state  # this node is being killed: its connections closed first, nothing failed elsewhere
        if self.node.stopping:
            if not self._linked and [n for n in self._alive_nodes() if n != self.node.id]:
                # this node leaves and its supervision moves: the child stays as it is in the replica,
                # and the takeover restarts it (its node lost) or sees its Down (it ended)
                return state
            # this node leaves without a hand-over (no other node): nothing is restarted anywhere
            return self._stopped_by_leaving(child, reason, state)
        if node is not None and self._departing(node, ref.creation):
            return await self._move(state, child, reason)
        fencing = self._fencing  # a partition policy: restarts wait for the window, none while fenced
        if fencing is not None and (handled := await fencing.child_down(state, child, ref, reason)) is not None:
            return handled
        if node is not None and reason == NOCONNECTION:
            return await self._node_lost(state, node, graceful=False)
        return await super().handle_info(Exit(ref, reason), state)

    async def _restart(self, state: SupervisorState, failed: SupervisedChild, reason: ExitReason) -> Any:
        """The base class's restart (`restart` and an exit both come here), unless a partition
        policy applies: then a child waits for the unfence while this node is fenced, and one
        that fails to start is tried again shortly. The base class retries a failing start at
        once, and every start fails while fenced: 2,000 restarts in 6 simulated seconds and a
        child running twice, fenced_faults 194."""
        fencing = self._fencing
        if fencing is None or state.strategy not in ("one_for_one", "simple_one_for_one"):
            return await super()._restart(state, failed, reason)
        if fencing.park_restart(failed, reason):
            return state
        # One attempt, then shortly again (not at once: while the other nodes are fenced every
        # start fails, fenced_faults 194 again)
        if not self.count_restart(state):
            return await self.give_up(state)
        failed.restarts += 1
        self.node.events.emit("supervisor_restart", supervisor=self.ref, child=failed.spec.id, reason=reason,
                              strategy=state.strategy, restarts=failed.restarts)
        try:
            await self._place(failed)
        except InitError as exc:
            fencing.park_restart(failed, exc.reason, retry_s=_RESTART_RETRY_S)
        return state

    async def _node_lost(self, state: SupervisorState, node: NodeId, *, graceful: bool) -> Any:
        """Every child that ran on `node` is restarted elsewhere in one batch; each restart
        counts towards the intensity unless the node left gracefully."""
        lost = [c for c in state.children if c.ref is not None and c.ref.node == node]
        if not graceful and node not in self._failed_nodes:
            self._failed_nodes.add(node)
            self._emit("node_failure_detected", node=node)
        why = "node_leaving" if graceful else "noconnection"
        for child in lost:
            self._unwatch(child.ref)
            if not graceful and child.ref is not None:
                self._replaced[_full(self.node.id, child.ref) or child.ref] = None
            child.ref = None
            child.last_reason = NOCONNECTION
            self._migrating[child.spec.id] = (node, why)
        if state.strategy not in ("one_for_one", "simple_one_for_one"):
            if not lost:
                return state
            # one_for_all / rest_for_one: the base class restarts the group (every stopped child in it)
            return await self.restart(state, lost[0], NOCONNECTION)
        restartable = []
        for child in lost:
            if child.spec.restart == "temporary":
                self._migrating.pop(child.spec.id, None)
                state.remove(child)
                continue
            if not graceful and not self.count_restart(state):
                return await self.give_up(state)
            if not graceful:
                child.restarts += 1
                self.node.events.emit("supervisor_restart", supervisor=self.ref, child=child.spec.id,
                                      reason=NOCONNECTION, strategy=state.strategy, restarts=child.restarts)
            restartable.append(child)
        for child in await self._start_batch(restartable, {node}):
            try:
                await self._place(child)
            except InitError as exc:
                result = await self.restart(state, child, exc.reason)
                if isinstance(result, Stop):
                    return result
        back = next((info.incarnation for info in self.node.get_nodes() if info.id == node), None)
        if back is not None:  # the Down came after the node was back (a busy or resumed supervisor):
            self._stop_replaced(node, back)  # no later node-up will stop what it replaced there
        return state

    async def _move(self, state: SupervisorState, child: SupervisedChild, reason: ExitReason) -> Any:
        """A child ended because its node leaves (and was not handed off): start it elsewhere,
        whatever its restart type, without counting a restart."""
        assert child.ref is not None and child.ref.node is not None
        origin = child.ref.node
        self._migrating[child.spec.id] = (origin, "node_leaving")
        child.ref = None
        child.last_reason = reason
        if not [n for n in self._alive_nodes() if n != origin]:
            # every node leaves (the cluster is being shut down): nowhere to go, and nothing failed
            self._migrating.pop(child.spec.id, None)
            return self._stopped_by_leaving(child, reason, state)
        try:
            await self._place(child)
        except InitError as exc:
            return await self.restart(state, child, exc.reason)
        return state

    def _stopped_by_leaving(self, child: SupervisedChild, reason: ExitReason, state: SupervisorState
                            ) -> SupervisorState:
        """A child that ended because nodes leave and has nowhere to go: stopped, not restarted."""
        gone, child.ref = child.ref, None
        child.last_reason = reason
        self._emit("child_stopped", child=child.spec.id, ref=gone, reason="node_leaving")
        return state

    # ------------------------------------------------------------------ hand-off (graceful leave)
    async def _evacuate(self, state: SupervisorState, leaving: NodeId) -> int:
        """Move this supervisor's children off `leaving`: each old instance gives its hand-off
        value and stops, then the new ones start (one request per target node). When this
        node is the one leaving, the supervision itself moves afterwards (see `_take_over`)."""
        moving = [c for c in state.children if c.ref is not None and c.ref.node == leaving]
        others = [n for n in self._alive_nodes() if n != leaving]
        if not others:
            return 0  # nowhere to go: the children stop with their node
        if moving:
            refs = [c.ref for c in moving]
            for child in moving:
                self._unwatch(child.ref)
            try:
                values = await _handoff_at(self.node, leaving, refs)
            except NoexError:
                values = [[False, None]] * len(moving)
            handoffs = {}
            for child, value in zip(moving, values, strict=True):
                child.ref = None
                child.last_reason = SHUTDOWN
                self._migrating[child.spec.id] = (leaving, "node_leaving")
                handoffs[child.spec.id] = value
            for child in await self._start_batch(moving, {leaving}, handoffs):
                try:
                    await self._place(child)
                except InitError as exc:
                    await self.restart(state, child, exc.reason)
        if leaving == self.node.id:
            self._handing_over = True
        self._replicate(state)  # before this node's goodbye, on the same connections
        return len(moving)

    # ------------------------------------------------------------------ takeover
    def _restore(self, replica: dict[str, Any]) -> SupervisorState:
        """The state of a standby from a replica: children known, none touched yet."""
        now = anyio.current_time()
        template = replica["template"]
        state = SupervisorState(replica["strategy"], replica["max_restarts"], replica["within_ms"], [])
        if template is not None:
            state.template = self._to_child_spec(DistributedChildSpec.of(template))
        state.next_dynamic = replica["next_dynamic"]
        state.total_restarts = replica["total_restarts"]
        state.restart_times.extend(sorted(now - age for age in replica["ages"]))
        for spec, ref, restarts in replica["children"]:
            child = SupervisedChild(self._to_child_spec(DistributedChildSpec.of(spec)), ref=ref, restarts=restarts)
            state.add(child)
        self._replaced = dict.fromkeys(r for r in replica.get("replaced", []) if isinstance(r, ProcessRef))
        for item in replica.get("unsure", []):
            if isinstance(item, list) and len(item) == 2 and isinstance(item[0], NodeId):
                sups = {r for r in item[1] if isinstance(r, ProcessRef)}
                if sups:
                    self._unsure.setdefault(item[0], set()).update(sups)
        return state

    async def _adopt(self, state: SupervisorState, graceful: bool) -> Any:
        """Supervise the children of a replica: monitor those running on a live node (a Down
        "noproc" comes for any that ended meanwhile), restart the others."""
        self._adopted = True
        alive = set(self._alive_nodes())
        lost: set[NodeId] = set()
        for child in state.children:
            if child.ref is None:
                continue
            if child.ref.node in alive:
                self._watch(child, child.ref)
            elif child.ref.node is not None:
                lost.add(child.ref.node)
        self._emit("supervisor_took_over", node=self.node.id)
        for info in self.node.get_nodes():  # replaced instances whose node came back before this takeover
            self._stop_replaced(info.id, info.incarnation)
            if info.id in self._unsure:  # and starts whose answer the lost supervisor never got
                self._reap(info.id)
        result: Any = state
        for node in sorted(lost):
            if self._fencing is not None and self._fencing.park_node(state, node):
                continue  # lost within the partition policy's window: restarted when it ends
            result = await self._node_lost(state, node, graceful=graceful)
            if isinstance(result, Stop):
                break
        self._dirty = True
        return result

    def yield_to_takeover(self, state: SupervisorState) -> Stop:
        """Its node was fenced and the winning side took it over meanwhile: that supervisor has
        every child (adopted or restarted); this one stops and leaves them to it."""
        self._handing_over = True
        store = _store(self.node)
        if store is not None:
            store.yielded(self._gname, _full(self.node.id, self.ref) or self.ref)
        return Stop("normal", state)

    async def taken_over_by(self) -> ProcessRef | None:
        """Another supervisor of this one's name that a reachable peer knows of (hosts, or holds
        the replica of), or None. Asked by a supervisor suspended by a fence before it resumes:
        the takeover's own replica may reach this node only after that (the mesh closes in any
        order after a heal), and resuming beside a takeover would restart children twice."""
        dist = distribution_of(self.node)
        if dist is None:
            return None
        me = _full(self.node.id, self.ref)
        found: list[ProcessRef] = []

        async def ask(peer: NodeId) -> None:
            try:
                holder = await dist.router.rpc(peer, "dsup.live_holder", self._gname, _HOLDER_TIMEOUT_S)
            except NoexError as exc:  # a peer that cannot answer knows of no takeover it could tell
                log.debug("supervisor %s: %s did not say who holds it: %s", self._gname, peer, exc)
                return
            lineage: list[Any] = []
            if isinstance(holder, list) and len(holder) == 2 and isinstance(holder[1], list):
                holder, lineage = holder  # [holder, the supervisors it took over]
            if not isinstance(holder, ProcessRef) or holder == me or holder in self._lineage:
                return  # (not one this supervisor took over: that one yields to this one)
            if me in lineage or self.ref in lineage or me is None or _rank(holder) < _rank(me):
                # A takeover of this one; else a rival (another takeover of a supervisor both
                # replaced), which may be suspended and asking too: only the higher-ranked of two
                # yields, never both (two takeovers of n1's, each fenced, yielded to each other and
                # left no supervisor while their children ran: fenced_faults 654)
                found.append(holder)

        async with anyio.create_task_group() as tg:
            for info in self.node.get_nodes():
                tg.start_soon(ask, info.id)
        return min(found, key=_rank) if found else None

    # ------------------------------------------------------------------ replication
    def _push_if_due(self, state: SupervisorState) -> None:
        """After a callback: push the replica if it changed and no message is queued (a burst of
        changes is pushed once, when it ends), or if the last push is `_PUSH_EVERY_S` old."""
        if not self._dirty or self._handing_over:
            return
        now = self.node.clock.monotonic()
        if self._noex_process.mailbox and now - self._pushed_at < _PUSH_EVERY_S:
            return
        self._dirty = False
        self._pushed_at = now
        self._replicate(state)

    def _replicate(self, state: SupervisorState) -> None:
        """Push this supervisor's state to every member (each change, coalesced per burst)."""
        dist = distribution_of(self.node)
        if dist is None or not self._adopted or self._linked:
            return
        if self._fencing is not None and self._fencing.suspended:
            return  # fenced: a takeover by the winning side must be the only replica its peers see
        now = anyio.current_time()
        me = self.node.id
        refs = [_full(me, c.ref) for c in state.children]
        payload = {
            "name": self._gname, "host": me, "sup": self.ref,
            "strategy": state.strategy, "max_restarts": state.max_restarts, "within_ms": state.within_ms,
            "selector": self._selector if not callable(self._selector) else "round_robin",
            "template": self._dspecs[state.template.id].wire() if state.template is not None else None,
            "next_dynamic": state.next_dynamic, "total_restarts": state.total_restarts,
            "ages": [now - t for t in state.restart_times],
            "children": [[self._wire(c.spec.id), ref, c.restarts] for c, ref in zip(state.children, refs, strict=True)],
            "replaced": list(self._replaced),
            "unsure": [[node, sorted(sups, key=str)] for node, sups in sorted(self._unsure.items())],
            "lineage": self._lineage,
        }
        store = _store(self.node)
        if store is not None and store.started_names:  # instances here of a lost rival of this name
            store.sweep(self._gname, _full(me, self.ref) or self.ref, refs)
        for info in self.node.get_nodes():
            try:
                dist.router.rpc_cast(info.id, "dsup.replica", payload)
            except NoexError as exc:
                self.node.events.report_error(f"replicating supervisor {self._gname!r}", exc)
                return

    # ------------------------------------------------------------------ requests
    async def handle_call(self, msg: Any, state: SupervisorState) -> Any:
        self._busy = True
        try:
            reply, new_state = await self._call(msg, state)
        finally:
            self._busy = False
        if isinstance(new_state, SupervisorState):
            self._push_if_due(new_state)
        return reply, new_state

    async def _call(self, msg: Any, state: SupervisorState) -> Any:
        if isinstance(msg, tuple) and len(msg) >= 2 and msg[0] == SUPERVISOR_REQUEST:
            op = msg[1]
            if op == "adopt":
                return None, await self._adopt_or_stop(state, bool(msg[2]))
            if op == "evacuate":
                moved = await self._evacuate(state, msg[2])
                return moved, state
            if op not in ("which_children", "count_children", "tree"):
                self._dirty = True
            if op == "start_child":
                try:
                    return await self._start_child_request(msg[2], state), state
                except (SupervisorError, InitError) as exc:
                    return (SUPERVISOR_REFUSED, exc), state  # raised by the facade, as the base class does
        return await super().handle_call(msg, state)

    async def _adopt_or_stop(self, state: SupervisorState, graceful: bool) -> Any:
        result = await self._adopt(state, graceful)
        return result.state if isinstance(result, Stop) else result

    async def terminate(self, reason: ExitReason, state: SupervisorState) -> None:
        store = _store(self.node)
        try:
            if self._adopted and not self._handing_over:
                for ref in list(self._mrefs):
                    self._unwatch(ref)
                await super().terminate(reason, state)
                if store is not None:
                    store.forget(self._gname, self.ref)
        finally:
            if store is not None and store.local.get(self._gname) == self.ref:
                del store.local[self._gname]
            unsubscribe = getattr(self, "_unsubscribe_up", None)
            if unsubscribe is not None:
                unsubscribe()
            fencing = getattr(self, "_fencing", None)
            if fencing is not None:
                fencing.unsubscribe()
            if self._adopted and not self._handing_over:
                self._emit("supervisor_stopped", reason=reason)

    async def _start_child_request(self, spec_or_arg: Any, state: SupervisorState) -> ProcessRef:
        """`start_child`: a spec (dict or DistributedChildSpec), or for simple_one_for_one the arg."""
        if state.strategy == "simple_one_for_one":
            assert state.template is not None
            template = self._dspecs[state.template.id]
            state.next_dynamic += 1
            dspec = dataclasses.replace(template, id=f"{template.id}-{state.next_dynamic}", arg=spec_or_arg)
        else:
            try:
                dspec = DistributedChildSpec.of(spec_or_arg)
            except InvalidArgumentError as exc:
                raise SupervisorError(str(exc)) from None
        if any(c.spec.id == dspec.id for c in state.children):
            raise SupervisorError(f"a child with id {dspec.id!r} already exists")
        child = SupervisedChild(self._to_child_spec(dspec))
        await self._place(child)
        state.add(child)
        assert child.ref is not None
        return child.ref

    async def _place(self, child: SupervisedChild) -> None:
        child.ref = await self.place_child(child)
        self.child_started(child)


def _setter(event: anyio.Event) -> Callable[[bool], None]:
    """A fence listener that sets `event` (the fencing changed, or a lost member is back)."""
    return lambda _fenced: event.set()


def _rank(ref: Any) -> tuple[Any, ...]:
    """The order in which two supervisors of one name give way (the global registry's)."""
    return (ref.node, ref.creation, ref.id)


def _full(me: NodeId | None, ref: ProcessRef | None) -> ProcessRef | None:
    if ref is not None and ref.node is None:
        return ProcessRef(me, ref.id, ref.creation)
    return ref


# ---------------------------------------------------------------------------------- per node
class SupervisorReplicas(Service):
    """One node's part: replicas of the supervisors hosted elsewhere (taken over when their
    host is gone), batch starts and hand-offs for supervisors anywhere, and event relays
    (the `dsup` operations)."""

    namespace = "dsup"

    def __init__(self, dist: Distribution) -> None:
        self.dist = dist
        self.node = dist.node
        self.replicas: dict[str, dict[str, Any]] = {}
        self.local: dict[str, ProcessRef] = {}  # supervisors hosted here, by global name
        # on_event callbacks here, and the nodes with on_event, by supervisor name or ref
        self.listeners: dict[str | ProcessRef, list[Callable[[NodeEvent], Any]]] = {}
        self.remote_listeners: dict[str | ProcessRef, set[NodeId]] = {}
        self._outbox: dict[NodeId, list[list[Any]]] = {}
        self._relay_scheduled = False
        self._taking: set[str] = set()  # names whose takeover by this node is under way (or waits)
        # the supervisor each claim under way replaces: this node still answers `dsup.holder` with it
        # while its replica is gone and its standby not yet started (no higher holder claims too)
        self._claiming: dict[str, ProcessRef] = {}
        # set on each membership change: a takeover waiting for a silent lower member asks again
        self._recheck: dict[str, anyio.Event] = {}
        # the last instance of each child this node started for each supervisor (for dsup.reap)
        self.started_for: dict[ProcessRef, dict[str, ProcessRef]] = {}
        self.started_names: dict[ProcessRef, str] = {}  # the name of each supervisor in started_for
        # supervisors that yielded to a takeover (their node lives on, they do not): see yielded()
        self.yielded_sups: dict[ProcessRef, None] = {}

    # the Service shape (service.py)
    def operations(self) -> Mapping[str, Operation]:
        return {"replica": self._on_replica, "forget": self._on_forget, "holder": self._on_holder,
                "spawn_many": self._on_spawn_many, "handoff": self._on_handoff, "evacuate": self._on_evacuate,
                "reap": self._on_reap, "listen": self._on_listen, "events": self._on_events,
                "yielded": self._on_yielded, "live_holder": self._on_live_holder}

    def peer_joined(self, peer: NodeId) -> None:
        self._peer_joined(peer)

    def peer_left(self, peer: NodeId, reason: str) -> None:
        self._peer_left(peer, reason)

    async def hand_off(self) -> None:
        await self._leave()

    def _on_holder(self, _peer: NodeId, name: Any) -> Any:
        return self._holder(name)

    def _on_live_holder(self, _peer: NodeId, name: Any) -> Any:
        """`holder`, for a suspended supervisor deciding whether to yield: not a dead one that no
        takeover here replaces (its node crashed, or came back as another incarnation). A
        supervisor yielded to a crashed takeover nobody took over, and the supervisor was gone
        (fenced_faults 432). (`holder` itself still names it: a takeover asks its lower members
        whether they hold the lost host's replica.)"""
        holder = self._holder(name)
        if holder is None or (name not in self._taking and not self._lives(holder)):
            return None
        return [holder, self._lineage_of(name, holder)]

    def _lineage_of(self, name: str, holder: ProcessRef) -> list[ProcessRef]:
        """The supervisors `holder` (of `name`) took over, as this node knows them ([] if unknown)."""
        mine = self.local.get(name)
        proc = self.node.local_process(mine) if mine is not None else None
        if proc is not None and _full(self.dist.node_id, mine) == holder:
            lineage = getattr(proc.server, "_lineage", [])
        else:
            replica = self.replicas.get(name)
            lineage = replica.get("lineage", []) if replica is not None and replica.get("sup") == holder else []
        return [r for r in lineage if isinstance(r, ProcessRef)]

    async def _on_spawn_many(self, peer: NodeId, items: Any) -> list[list[Any]]:
        return await _spawn_many(self.node, items, peer)

    async def _on_handoff(self, _peer: NodeId, refs: Any) -> Any:
        return await _handoff(self.node, refs)

    # replicas and takeover
    def _on_replica(self, peer: NodeId, payload: Any) -> None:
        if not (isinstance(payload, dict) and payload.get("host") == peer and isinstance(payload.get("name"), str)):
            return
        name, other = payload["name"], payload["sup"]
        mine = self.local.get(name)
        proc = self.node.local_process(mine) if mine is not None else None
        if mine is not None and (proc is None or not proc.alive):
            del self.local[name]  # killed by a fence (no terminate ran)
            mine = None
        fencing = getattr(proc.server, "_fencing", None) if proc is not None else None
        lineage = getattr(proc.server, "_lineage", ()) if proc is not None else ()
        if mine is not None and fencing is not None and fencing.suspended and other != _full(self.dist.node_id, mine) \
                and other not in lineage:
            # this node was fenced and the winning side took the supervisor over: it stays
            self.node.send(mine, (_YIELD, other))
            self.replicas[name] = payload
            return
        if mine is not None and isinstance(other, ProcessRef) and _full(self.dist.node_id, mine) != other:
            # two supervisors of one name (both sides of a healed partition took it over): the
            # lower-ranked one stays, as in the global registry; the other stops its instances
            if _rank(_full(self.dist.node_id, mine)) > _rank(other):
                self.node.send(mine, (_CONFLICT, other))
            else:
                return
        self.replicas[name] = payload
        if isinstance(other, ProcessRef) and self.started_names:
            self.sweep(name, other, [c[1] for c in payload.get("children", []) if isinstance(c, list) and len(c) > 1])

    def note_started(self, sup: ProcessRef, child_id: str, ref: ProcessRef, name: str | None = None) -> None:
        """Remember the instance started here for `sup` (kept after `sup` stops: the winner of a
        conflict may reap for it, `sweep` may find it orphaned); supervisors whose instances all
        ended are pruned now and then."""
        sup = _full(self.dist.node_id, sup) or sup
        self.started_for.setdefault(sup, {})[child_id] = ref
        if name is not None:
            self.started_names[sup] = name
        if len(self.started_for) > _STARTED_FOR_PRUNE:
            for old in [s for s, refs in self.started_for.items()
                        if not any(self.node.local_process(r) is not None for r in refs.values())]:
                del self.started_for[old]
                self.started_names.pop(old, None)

    def sweep(self, name: str, sup: ProcessRef, children: list[Any]) -> None:
        """Supervisor `sup` of `name` lives and supervises `children`: stop the instances started
        here for another supervisor of that name that is gone from this node's view (its node down
        or back as another incarnation, or here and ended) and that `sup` does not supervise.
        Nobody else would stop them (children are monitored, not linked): a supervisor taken over
        in a partition on both sides can die before the two meet, its replica superseded at every
        holder by its rival's, so nobody takes it over and nobody learns of its instances."""
        lost = [s for s, n in self.started_names.items() if n == name and s != sup and not self._lives(s)]
        if not lost:
            return
        keep = {ref for ref in children if isinstance(ref, ProcessRef)}
        for other in lost:
            del self.started_names[other]
            for child_id, ref in self.started_for.pop(other, {}).items():
                proc = self.node.local_process(ref)
                if ref in keep:  # adopted by `sup`: now its instance here (swept if `sup` is lost in turn)
                    self.started_for.setdefault(sup, {})[child_id] = ref
                    self.started_names[sup] = name
                elif proc is not None and proc.alive:
                    log.warning("stopping %s (child %r of %s, which is gone): %s supervises %s without it",
                                ref, child_id, other, sup, name)
                    self.node.spawn_task(_stop_quietly, self.node, ref, what=f"stopping an orphaned child {ref}")

    def _lives(self, sup: ProcessRef) -> bool:
        """Whether supervisor `sup` may still run: here and alive, or on a peer of its incarnation."""
        if sup in self.yielded_sups:
            return False
        if sup.node is None or sup.node == self.dist.node_id:
            proc = self.node.local_process(sup)
            return proc is not None and proc.alive
        return any(info.id == sup.node and info.incarnation == sup.creation for info in self.node.get_nodes())

    def yielded(self, name: str, sup: ProcessRef) -> None:
        """Supervisor `sup` of `name` (here) yields to a takeover: every node sweeps the instances
        it started for `sup` that the takeover does not supervise. Its node lives on, so without
        this they counted as a live rival's and ran beside the takeover's restarts (a takeover
        fenced 8 ms after restarting a child on another node, then yielding to the next
        takeover, which had not heard of it: fenced_faults 328, 333)."""
        self._on_yielded(self.dist.node_id, [name, sup])
        for info in self.node.get_nodes():
            self.dist.router.rpc_cast(info.id, "dsup.yielded", [name, sup])

    def _on_yielded(self, _peer: NodeId, args: Any) -> None:
        if not (isinstance(args, list) and len(args) == 2 and isinstance(args[0], str)
                and isinstance(args[1], ProcessRef)):
            raise InvalidArgumentError("dsup.yielded needs [supervisor name, supervisor]")
        name, sup = args
        self.yielded_sups[sup] = None
        if len(self.yielded_sups) > 1024:
            del self.yielded_sups[next(iter(self.yielded_sups))]
        if sup in self.started_names:
            self._sweep_name(name)

    def _sweep_after(self, peer: NodeId) -> None:
        """`peer` is gone (or back as another incarnation): the instances started here for the
        supervisors it hosted are swept against a live supervisor of their name known here."""
        for name in sorted({n for s, n in self.started_names.items() if s.node == peer}):
            self._sweep_name(name)

    def _sweep_name(self, name: str) -> None:
        """Sweep the instances of supervisors of `name` that are gone against the live one known here."""
        mine = self.local.get(name)
        proc = self.node.local_process(mine) if mine is not None else None
        if mine is not None and proc is not None and proc.alive and isinstance(proc.state, SupervisorState):
            me = self.dist.node_id
            self.sweep(name, _full(me, mine) or mine, [_full(me, c.ref) for c in proc.state.children])
            return
        replica = self.replicas.get(name)
        if replica is not None and isinstance(replica["sup"], ProcessRef) and self._lives(replica["sup"]):
            self.sweep(name, replica["sup"], [c[1] for c in replica.get("children", [])])

    def _on_reap(self, _peer: NodeId, args: Any) -> None:
        """A supervisor's start request here failed on its side (its answer lost): stop the
        instances started here for it that it does not know as its children (orphans no one
        supervises: children are monitored, not linked, so nothing else would end them)."""
        sup, current = args
        if not isinstance(sup, ProcessRef) or not isinstance(current, dict):
            raise InvalidArgumentError("dsup.reap needs [supervisor, {child id: ref}]")
        self.started_names.pop(sup, None)
        for child_id, ref in self.started_for.pop(sup, {}).items():
            proc = self.node.local_process(ref)
            if current.get(child_id) != ref and proc is not None and proc.alive:
                log.warning("stopping %s (child %r of %s): its start was answered too late", ref, child_id, sup)
                self.node.spawn_task(_stop_quietly, self.node, ref, what=f"stopping an orphaned child {ref}")

    def _holder(self, name: Any) -> ProcessRef | None:
        """The supervisor of `name` this node knows of: the one it hosts, else its replica's."""
        if not isinstance(name, str):
            raise InvalidArgumentError("dsup.holder needs a supervisor name")
        mine = self.local.get(name)
        proc = self.node.local_process(mine) if mine is not None else None
        if mine is not None and proc is not None and proc.alive:
            return _full(self.dist.node_id, mine)
        replica = self.replicas.get(name)
        holder = replica.get("sup") if replica is not None else self._claiming.get(name)
        return holder if isinstance(holder, ProcessRef) else None

    def forget(self, name: str, sup: ProcessRef) -> None:
        """Supervisor `sup` stopped: drop its replicas (not those of another holder of the name)."""
        sup = _full(self.dist.node_id, sup) or sup
        self._on_forget(self.dist.node_id, [name, sup])
        for info in self.node.get_nodes():
            self.dist.router.rpc_cast(info.id, "dsup.forget", [name, sup])

    def _on_forget(self, _peer: NodeId | None, args: Any) -> None:
        name, sup = args
        replica = self.replicas.get(name)
        if replica is not None and replica["sup"] == sup:
            del self.replicas[name]

    def _alive(self) -> list[NodeId]:
        """Members that can host a supervisor: up, not leaving, not hidden."""
        peers = [i.id for i in self.node.get_nodes()
                 if not self.dist.membership.is_departing(i.id, i.incarnation)]
        me = [] if self.dist.config.hidden or self.node.stopping or self.node.id is None else [self.node.id]
        return sorted({*peers, *me})

    def _peer_left(self, peer: NodeId, reason: str) -> None:
        self.remote_listeners = {n: s - {peer} for n, s in self.remote_listeners.items()}
        self._take_over_due(peer, reason)
        self._sweep_after(peer)

    def _take_over_due(self, peer: NodeId, reason: str) -> None:
        """Take over every replica whose host is gone, where this node is the lowest other member
        holding one (the others keep the replicas in case it dies too)."""
        for changed in self._recheck.values():  # takeovers under way see the new membership
            changed.set()
        if not self.replicas:  # (most joins while a mesh forms: no member list to build)
            return
        alive = self._alive()
        for name, replica in list(self.replicas.items()):
            if self._should_take_over(replica, alive) and name not in self._taking:
                self._taking.add(name)
                graceful = reason == "graceful_shutdown" and replica["host"] == peer
                self.node.spawn_task(self._take_over, name, replica, graceful, what=f"takeover of {name!r}")

    def _should_take_over(self, replica: dict[str, Any], alive: list[NodeId]) -> bool:
        """The replica's host is gone, or back as a new incarnation (a node restarted under the same
        id within the failure detection: it holds no replica, so it does not count), and this node
        is one of the other members: which one takes over is `_lower_holder`'s question."""
        host, sup = replica["host"], replica["sup"]
        # (a host that leaves is still connected: it hands its children off, then its goodbye
        # starts the takeover; taken over before, its last replica would start a second one)
        incarnation = next((i.incarnation for i in self.node.get_nodes() if i.id == host), None)
        if incarnation is not None and (not isinstance(sup, ProcessRef) or incarnation == sup.creation):
            return False
        return self.node.id is not None and self.node.id in alive and self.node.id != host

    async def _lower_holder(self, name: str, replica: dict[str, Any]) -> bool | None:
        """Whether a member below this one holds a replica of `name` (or hosts a supervisor of it):
        the lowest holder takes over, not the lowest member, since a restarted node holds none.
        None when none said so but some did not answer: such a member is on the other side of a
        cut not yet detected, or paused; it neither blocks the takeover for good nor is ignored
        (the caller asks again, and a member declared down meanwhile is no longer asked)."""
        me = self.node.id
        lower = [n for n in self._alive() if me is not None and n < me and n != replica["host"]]
        holds: list[bool | None] = []

        async def ask(peer: NodeId) -> None:
            try:
                holder = await self.dist.router.rpc(peer, "dsup.holder", name, _HOLDER_TIMEOUT_S)
            except NoexError as exc:
                log.debug("supervisor %s: %s did not say whether it holds a replica: %s", name, peer, exc)
                holds.append(None)
                return
            holds.append(holder is not None)

        async with anyio.create_task_group() as tg:
            for peer in lower:
                tg.start_soon(ask, peer)
        return True if True in holds else None if None in holds else False

    async def _take_over(self, name: str, replica: dict[str, Any], graceful: bool) -> None:
        """Under a partition policy, wait for the window (and, on a fenced node, for the unfence);
        then, if the supervisor's host is still gone and this node the lowest holder it can
        reach, take it over. A lower member that does not answer is asked again when membership
        changes (it is declared down: it no longer counts) or after a while; a lower holder that
        answers takes over itself (if it is lost, its leave runs this again). A fence during the
        claim defers it again."""
        asks = 0
        try:
            while await self._takeover_due(name, replica):
                changed = self._recheck[name] = anyio.Event()
                lower = await self._lower_holder(name, replica)
                if lower or self.replicas.get(name) is not replica:
                    return  # a lower holder takes over (or the replica changed meanwhile)
                if lower is None and asks < _HOLDER_ASKS:
                    asks += 1
                    with anyio.move_on_after(_HOLDER_RETRY_S):
                        await changed.wait()
                    continue
                if lower is None:  # silent all along yet not declared down: two takeovers (their
                    # conflict keeps one) are better than none
                    log.warning("supervisor %s: a lower member stayed silent for %d asks; taking over", name, asks)
                try:
                    await self._claim(name, replica, graceful)
                    return
                except NodeFencedError:
                    continue  # this node fenced while it claimed the name: wait for the unfence
        finally:
            self._taking.discard(name)
            self._recheck.pop(name, None)

    async def _takeover_due(self, name: str, replica: dict[str, Any]) -> bool:
        """Wait until the policy lets this node take the work of the replica's host over; then
        whether it still should (the host gone, the replica current, this node the lowest)."""
        guard = self.dist.partition_guard
        host = replica["host"]
        was_fenced = False
        while guard is not None and (wait := guard.takeover_wait(host)) > 0 and not self.dist.stopping:
            was_fenced = was_fenced or guard.fenced
            changed = anyio.Event()
            unsubscribe = guard.subscribe(_setter(changed))
            try:
                with anyio.move_on_after(min(wait, 60.0) + 0.01):  # re-checked at least once a minute
                    await changed.wait()
            finally:
                unsubscribe()
        if guard is not None and was_fenced:
            await anyio.sleep(guard.settle_s)  # unfenced: let the healed mesh close before re-checking
        return (not self.dist.stopping and self.replicas.get(name) is replica
                and self._should_take_over(replica, self._alive()))

    async def _claim(self, name: str, replica: dict[str, Any], graceful: bool) -> None:
        """Start a standby from the replica, win the supervisor's global name, then supervise.
        Whatever interrupts the claim stops the standby (it supervises nothing yet)."""
        registry = self.dist.global_registry
        assert registry is not None
        if isinstance(replica["sup"], ProcessRef):
            self._claiming[name] = replica["sup"]
        try:
            await self._claim_held(name, replica, graceful)
        finally:
            self._claiming.pop(name, None)

    async def _claim_held(self, name: str, replica: dict[str, Any], graceful: bool) -> None:
        """`_claim`, while this node says it holds the supervisor."""
        registry = self.dist.global_registry
        assert registry is not None
        del self.replicas[name]
        options = {"global_name": name, "node_selector": replica["selector"], "adopt": replica}
        ref = await self.node.spawn(DistributedSupervisorServer, options)
        try:
            for _ in range(_TAKEOVER_TRIES if not name.startswith("$dsup/") else 0):
                try:
                    await registry.register(name, ref, timeout=2.0)
                    break
                except GlobalNameConflictError as exc:
                    owner = exc.owner
                    if isinstance(owner, ProcessRef) and owner != replica["sup"]:
                        await self.node.stop_process(ref, SHUTDOWN, 5.0)  # another node won
                        return
                await anyio.sleep(_TAKEOVER_RETRY_S)  # a member has not yet dropped the dead host's name
            else:
                if not name.startswith("$dsup/"):  # (an unnamed one has no global name to claim)
                    raise SupervisorError(f"could not take over supervisor {name!r}: its global name stayed taken")
        except BaseException:
            self.replicas.setdefault(name, replica)  # kept for a later takeover
            with anyio.CancelScope(shield=True):
                await self.node.stop_process(ref, SHUTDOWN, 5.0)
            raise
        if not name.startswith("$dsup/") and self.node.names.whereis(name) is None:
            self.node.register_name(name, ref)  # named on its new node too, as on its first one
        try:
            await self.node.call(ref, (SUPERVISOR_REQUEST, "adopt", graceful), _BATCH_TIMEOUT_S)
        except ServerNotRunningError as exc:
            if exc.reason != KILLED:
                raise
            # killed before it adopted: this node crashes (a SIGKILL reports nothing either), or
            # someone killed it; the replica stays for a later takeover
            self.replicas.setdefault(name, replica)
            log.warning("takeover of supervisor %s: its standby %s was killed before it adopted", name, ref)
        except CallTimeoutError:
            # the standby still adopts: its restarts wait on nodes lost or cut off meanwhile (one
            # batch per lost node, each bounded); it supervises when they end, nothing failed here
            log.warning("takeover of supervisor %s: its standby %s is still adopting after %g s", name, ref,
                        _BATCH_TIMEOUT_S)

    def _peer_joined(self, peer: NodeId) -> None:
        for key, callbacks in self.listeners.items():
            if callbacks:
                self.dist.router.rpc_cast(peer, "dsup.listen", key)
        self._take_over_due(peer, "restarted")  # a supervisor's host back as a new incarnation
        self._sweep_after(peer)

    # graceful leave
    async def _leave(self) -> None:
        """This node leaves: every supervisor (here and on each peer) moves its children off
        this node first, each old instance handing its state to the new one."""
        me = self.node.id
        peers = [i.id for i in self.node.get_nodes()]

        async def ask(peer: NodeId) -> None:
            try:
                await self.dist.router.rpc(peer, "dsup.evacuate", me, _BATCH_TIMEOUT_S)
            except NodeNotReachableError as exc:
                # the peer was lost meanwhile (crash, partition): a fault, not a failure here. Its
                # supervisors, if it lives, see this node's children lost and restart them elsewhere.
                log.warning("hand-off to %s skipped: %s", peer, exc)
            except NoexError as exc:
                self.node.events.report_error(f"hand-off to {peer}", exc)

        async with anyio.create_task_group() as tg:
            for peer in peers:
                tg.start_soon(ask, peer)
        if peers:
            await self._on_evacuate(me, me)  # supervisors hosted here last: their children moved

    async def _on_evacuate(self, _peer: NodeId | None, leaving: Any) -> None:
        if not isinstance(leaving, NodeId):
            raise InvalidArgumentError("dsup.evacuate needs a node id")

        async def ask(sup: ProcessRef) -> None:
            try:
                await self.node.call(sup, (SUPERVISOR_REQUEST, "evacuate", leaving), _BATCH_TIMEOUT_S)
            except ServerNotRunningError as exc:  # it stopped meanwhile (a lost name conflict): nothing to move
                log.info("hand-off by supervisor %s skipped: %s", sup, exc)
            except NoexError as exc:
                self.node.events.report_error(f"hand-off by supervisor {sup}", exc)

        async with anyio.create_task_group() as tg:
            for sup in list(self.local.values()):
                tg.start_soon(ask, sup)

    # events from any node
    def listen(self, key: str | ProcessRef, callback: Callable[[NodeEvent], Any]) -> Callable[[], None]:
        """`callback` gets the events of the supervisor named (or with the ref) `key` when it runs
        on another node: every member is asked to relay them here."""
        callbacks = self.listeners.setdefault(key, [])
        callbacks.append(callback)
        for peer in self._members():
            self.dist.router.rpc_cast(peer, "dsup.listen", key)

        def unsubscribe() -> None:
            if callback in callbacks:
                callbacks.remove(callback)

        return unsubscribe

    def _members(self) -> list[NodeId]:
        peers = {i.id for i in self.node.get_nodes()}
        if self.dist.config.hidden:  # an observer lists no one but is connected to the members
            peers |= set(self.dist.transport.conns)
        return sorted(peers)

    def _on_listen(self, peer: NodeId, key: Any) -> None:
        if isinstance(key, str | ProcessRef):
            self.remote_listeners.setdefault(key, set()).add(peer)

    def relay(self, name: str, ref: ProcessRef, kind: str, data: dict[str, Any]) -> None:
        """Queue an event for the nodes listening to this supervisor; sent in one notification
        per node and burst (a failover of hundreds of children is one message, not hundreds)."""
        keys: set[str | ProcessRef] = {name, ref}
        full = _full(self.dist.node_id, ref)
        if full is not None:
            keys.add(full)
        for key in keys:
            for peer in self.remote_listeners.get(key, set()):
                self._outbox.setdefault(peer, []).append([key, kind, data])
        if self._outbox and not self._relay_scheduled:
            self._relay_scheduled = True
            self.node.spawn_task(self._send_relays, what="DistributedSupervisor event relay")

    async def _send_relays(self) -> None:
        self._relay_scheduled = False
        outbox, self._outbox = self._outbox, {}
        for peer, batch in outbox.items():
            try:
                self.dist.router.rpc_cast(peer, "dsup.events", batch)
            except NoexError as exc:
                self.node.events.report_error(f"supervisor events to {peer}", exc)

    def _on_events(self, peer: NodeId, batch: Any) -> None:
        calls: list[tuple[Callable[[NodeEvent], Any], NodeEvent]] = []
        for key, kind, data in batch:
            event = NodeEvent(kind, self.node.clock.time(), peer, dict(data))
            calls.extend((callback, event) for callback in list(self.listeners.get(key, ())))
        if calls:
            self.node.spawn_task(self._deliver, calls, what="DistributedSupervisor.on_event callbacks")

    async def _deliver(self, calls: list[tuple[Callable[[NodeEvent], Any], NodeEvent]]) -> None:
        for callback, event in calls:
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                self.node.events.report_error("DistributedSupervisor.on_event callback", exc)


async def _stop_quietly(node: Node, ref: ProcessRef) -> None:
    """Stop an orphaned child; one that ended meanwhile is no error."""
    try:
        await node.stop_process(ref, SHUTDOWN, _REPLACED_STOP_S)
    except ServerNotRunningError:
        pass


def _store(node: Node) -> SupervisorReplicas | None:
    dist = distribution_of(node)
    return getattr(dist, "supervisor_replicas", None) if dist is not None else None


async def _spawn_many_at(node: Node, target: NodeId, items: list[list[Any]]) -> list[list[Any]]:
    if target == node.id:
        return await _spawn_many(node, items, node.id)
    dist = distribution_of(node)
    if dist is None:
        raise NodeNotReachableError(target, "this node is not distributed")
    result: list[list[Any]] = await dist.router.rpc(target, "dsup.spawn_many", items, _BATCH_TIMEOUT_S)
    return result


async def _spawn_many(node: Node, items: Any, peer: NodeId | None) -> list[list[Any]]:
    """System handler: start each `[behavior_name, arg, max_mailbox, overflow, has_handoff,
    handoff, link_to]` (all at once); `[True, ref]` or `[False, why, elsewhere, reason]` for
    each. As with `spawn`, a peer may link a new process only to a process of its own. Under a
    partition policy the children fence with this node (guarded as they start, none started
    while it is fenced)."""
    if not isinstance(items, list):
        raise InvalidArgumentError("dsup.spawn_many needs a list")
    results: list[list[Any]] = [[False, "not started"] for _ in items]
    dist = distribution_of(node)
    guard = dist.partition_guard if dist is not None else None  # supervised children fence with their node

    async def one(i: int, item: Any) -> None:
        try:
            behavior_name, arg, max_mailbox, overflow, has_handoff, handoff, link_to, *owner = item
            if guard is not None:
                guard.check("start supervised children")
            if link_to is not None and not (isinstance(link_to, ProcessRef) and (link_to.node or node.id) == peer):
                raise NotPermittedError(f"{peer} asked to link a new process to {link_to!r}, not a process of its own")
            behavior = BehaviorRegistry.get(behavior_name)
            token = _HANDOFF.set([handoff, None]) if has_handoff else None
            try:
                ref = await node.spawn(behavior, arg, timeout=_BATCH_TIMEOUT_S - 1.0, max_mailbox=max_mailbox,
                                       overflow=overflow, link=link_to)
            finally:
                if token is not None:
                    _HANDOFF.reset(token)
            if guard is not None:
                guard.guard(ref)
            full = _full(node.id, ref)
            results[i] = [True, full]
            store = _store(node)
            if store is not None and owner and isinstance(owner[0], list) and len(owner[0]) in (2, 3):
                sup, child_id, *name = owner[0]  # (a node of an older version sends no name)
                if isinstance(sup, ProcessRef) and isinstance(child_id, str):
                    store.note_started(sup, child_id, ref if full is None else full,
                                       name[0] if name and isinstance(name[0], str) else None)
        except Exception as exc:
            # [False, why, whether another node may do, the init's reason]
            if isinstance(exc, InitError):
                reason = exc.reason if peer == node.id or dist is None or _encodable(dist, exc.reason) \
                    else repr(exc.reason)
                results[i] = [False, exc.detail, False, reason]
            else:
                elsewhere = isinstance(exc, NodeNotReachableError | NodeStoppedError)
                results[i] = [False, f"{type(exc).__name__}: {exc}", elsewhere, None]

    async with anyio.create_task_group() as tg:
        for i, item in enumerate(items):
            tg.start_soon(one, i, item)
    return results


async def _handoff_at(node: Node, target: NodeId, refs: list[Any]) -> list[list[Any]]:
    if target == node.id:
        return await _handoff(node, refs)
    dist = distribution_of(node)
    if dist is None:
        raise NodeNotReachableError(target, "this node is not distributed")
    result: list[list[Any]] = await dist.router.rpc(target, "dsup.handoff", refs, _BATCH_TIMEOUT_S)
    return result


async def _handoff(node: Node, refs: Any) -> list[list[Any]]:
    """System handler: each local process in `refs` gives `handle_handoff(state)` (run by the
    process between two messages) and stops right after it, handling nothing more.
    `[True, value]`, or `[False, None]` without the callback (or an unsendable value)."""
    if not isinstance(refs, list):
        raise InvalidArgumentError("dsup.handoff needs a list of refs")
    results: list[list[Any]] = [[False, None] for _ in refs]
    dist = distribution_of(node)

    async def one(i: int, ref: Any) -> None:
        proc = node.local_process(ref) if isinstance(ref, ProcessRef) and node.is_local(ref) else None
        if proc is None or not proc.alive:
            return
        callback = getattr(proc.server, "handle_handoff", None)

        async def give(state: Any) -> Any:
            if callback is not None:
                value = callback(state)
                if inspect.isawaitable(value):
                    value = await value
                if dist is None or _encodable(dist, value):
                    results[i] = [True, value]
                else:
                    node.events.report_error(
                        f"hand-off of {ref}", InvalidArgumentError("handle_handoff returned a value that is not a "
                                                                   "wire value; the new instance starts without it"))
            proc.request_shutdown(SHUTDOWN)  # stops before the next message: nothing is handled twice
            return state

        try:
            await systools.replace_state(proc, give, timeout=2.0)
        except NoexError as exc:
            node.events.report_error(f"hand-off of {ref}", exc)
            proc.request_shutdown(SHUTDOWN)
        await proc.wait_exit(5.0)

    async with anyio.create_task_group() as tg:
        for i, ref in enumerate(refs):
            tg.start_soon(one, i, ref)
    return results


def _encodable(dist: Distribution, value: Any) -> bool:
    try:
        dist.codec.encode(value)
    except Exception:
        return False
    return True


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
        (local_first | round_robin | least_loaded | random | {"node": id} | callable(nodes, child_id)).
        `name` registers it in the GlobalRegistry (every node can address it, wherever it moved,
        and a takeover claims it, so exactly one node wins) and on this node."""
        options = _options(strategy, list(children or []), max_restarts, within_ms, node_selector)
        node = current_node()
        dist = distribution_of(node)
        if dist is None or dist.config.hidden:  # no member can take it over
            options["global_name"] = name or f"$dsup/{_unique_hex(node, 16)}"
            return await node.spawn(DistributedSupervisorServer, options, name=name, timeout=timeout)
        options["global_name"] = name or f"$dsup/{node.id}/{_unique_hex(node, 6)}"
        registry = dist.global_registry
        assert registry is not None
        if name is not None and registry.whereis(name) is not None:
            raise GlobalNameConflictError(name, registry.whereis(name))
        # named here too (as a Supervisor is), and globally: every node finds it by name
        ref = await node.spawn(DistributedSupervisorServer, options, name=name, timeout=timeout)
        if name is None:
            return ref
        try:
            await registry.register(name, ref, timeout=min(timeout, 10.0))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await node.stop_process(ref, SHUTDOWN, timeout)
            raise
        return ref

    @staticmethod
    def handed_off(default: Any = None) -> Any:
        """In `init` of a child started by a graceful hand-off: the value its previous instance's
        `handle_handoff(state)` returned (`default` for any other start)."""
        cell = _HANDOFF.get()
        me = current_process()
        if cell is None or me is None:
            return default
        if cell[1] is None:
            cell[1] = me.ref  # the first process to ask is the one started with it
        return cell[0] if cell[1] == me.ref else default

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
    def on_event(sup: Target, callback: Callable[[NodeEvent], Any], *, node: Node | None = None
                 ) -> Callable[[], None]:
        """Call `callback(event)` for child_started / child_stopped / child_restarted / child_migrated /
        node_failure_detected / supervisor_took_over / supervisor_stopped of supervisor `sup` (its
        ref or global name), from whichever node runs it now: events of a supervisor on another
        node are relayed here (they start within a round trip of this call)."""
        host = node or current_node()
        name = sup if isinstance(sup, str) else _name_of(host, sup)

        def relay(event: NodeEvent) -> Any:
            data = event.data
            if event.kind in EVENTS and (data.get("supervisor") == sup or (name and data.get("name") == name)):
                return callback(event)
            return None

        unsubscribers = [host.events.subscribe(relay)]
        store = _store(host)
        key = name if name is not None else sup if isinstance(sup, ProcessRef) and not host.is_local(sup) else None
        if store is not None and key is not None:
            unsubscribers.append(store.listen(key, callback))

        def unsubscribe() -> None:
            for stop in unsubscribers:
                stop()

        return unsubscribe


def _name_of(node: Node, sup: Any) -> str | None:
    """The global name of supervisor `sup`, as this node knows it (hosted here, or replicated)."""
    store = _store(node)
    if store is None:
        return None
    for name, ref in store.local.items():
        if ref == sup:
            return name
    for name, replica in store.replicas.items():
        if replica.get("sup") == sup:
            return name
    return None


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
