"""Split-brain policy: which side of a partition keeps running, and fencing on the other.

`Cluster.start(partition_policy=...)` picks a `PartitionPolicy`. Each node keeps a *view*:
itself and every member it has admitted, minus members that left gracefully and members its
side downed (unreachable for `stable_after_ms` while this side won). On every membership
change it decides, over the view, whether its reachable side wins:

* ``keep_majority`` - more than half of the view is reachable; exactly half wins when it holds
  the lowest node id of the view;
* ``static_quorum(n)`` - at least `n` members (this one included) are reachable;
* ``keep_referee(node)`` - the referee node is reachable (or is this node);
* ``none`` - always wins: every side runs on (the behaviour without a policy).

Under ``keep_majority`` views change at different moments on different nodes, so a member
that joins or rejoins is admitted to a node's view only once every member that node reaches
reports reaching it, and a side wins only under its own view *and* every view its members last
reported (a partition in the middle of a change finds both sides deciding over a common view).
A node started with seeds has joined no cluster: it stays fenced until an unfenced member that
admitted it tells it its view, or it founds a cluster with a majority of itself and its seeds,
none of them in a cluster, once its fresh dials of the seeds it does not reach have ended
(keep_majority and static_quorum; see docs/concepts/partitions.md). Such a node, restarted under
a member's id, is not that member: it counts for a side once admitted, or in place of its
predecessor when every member of the predecessor's last reported view is reachable.

A losing node *fences*: it kills its DistributedSupervisor children and its globally named
processes (reason ``partition_fenced``), refuses new ones (`NodeFencedError`), and unfences
when it wins again (after the heal). A winning node takes over the work of an unreachable
node (restarts its children, frees its global names) only `stable_after_ms` after losing it.
Overlapping partitions (A-B and B-C up, A-C down) are broken deterministically: a node that
a reachable peer still sees connected to a lower-id node it cannot reach itself fences, once
that lasts for two heartbeat intervals. A node whose liveness thread did not turn for longer
than the heartbeat timeout (SIGSTOP, a VM pause) fences before its guarded processes handle
another message, drops its stale connections and rejoins.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from ..core.errors import InvalidArgumentError, NodeFencedError
from ..core.node_id import NodeId, validate_node_name
from ..core.reasons import NOCONNECTION, PARTITION_FENCED, ExitReason
from ..core.refs import ProcessRef
from .service import Operation, Service

if TYPE_CHECKING:
    from ..core.process import Process
    from .cluster import Distribution

log = logging.getLogger(__name__)

KINDS = ("none", "keep_majority", "static_quorum", "keep_referee")
STATUS_OP = "policy.status"  # (PartitionGuard's `status` operation)
NOT_JOINED = "it has not joined its cluster yet: no member has admitted it"
RETRY = "$partition_policy_retry"


@dataclass(frozen=True)
class PartitionPolicy:
    """A split-brain policy; build one with `keep_majority()`, `static_quorum(n)`,
    `keep_referee(node)` or `no_policy()`, or name it: "keep_majority", "static_quorum:3",
    "keep_referee:name@host:port", "none"."""

    kind: str = "none"
    quorum: int | None = None
    referee: NodeId | str | None = None  # a node id, or a node name (any member of that name)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidArgumentError(f"partition_policy must be one of {KINDS}, not {self.kind!r}")
        if self.kind == "static_quorum" and (isinstance(self.quorum, bool) or not isinstance(self.quorum, int)
                                             or self.quorum < 1):
            raise InvalidArgumentError(f"static_quorum(n) needs an int n >= 1, not {self.quorum!r}")
        if self.kind == "keep_referee" and not isinstance(self.referee, (NodeId, str)):
            raise InvalidArgumentError(f"keep_referee(node) needs a node id or a node name, not {self.referee!r}")

    @classmethod
    def of(cls, value: Any) -> PartitionPolicy:
        """A policy from a `PartitionPolicy`, None (no policy) or its name (CLI and config files)."""
        if isinstance(value, PartitionPolicy):
            return value
        if value is None:
            return cls()
        if not isinstance(value, str):
            raise InvalidArgumentError(f"partition_policy must be a PartitionPolicy or a name, not {value!r}")
        kind, _, arg = value.partition(":")
        if kind == "static_quorum" and arg.isdigit():
            return static_quorum(int(arg))
        if kind == "keep_referee" and arg:
            return keep_referee(arg)
        if kind in ("none", "keep_majority") and not arg:
            return cls(kind)
        raise InvalidArgumentError(
            f"bad partition_policy {value!r}: expected none, keep_majority, static_quorum:N or keep_referee:NODE "
            "(a node id or name)")

    def wins(self, view: AbstractSet[NodeId], reachable: AbstractSet[NodeId]) -> bool:
        """Whether the side `reachable` (this node included) keeps running, over `view`."""
        if self.kind == "none":
            return True
        if self.kind == "static_quorum":
            assert self.quorum is not None
            return len(reachable) >= self.quorum
        if self.kind == "keep_referee":
            return any(node == self.referee or node.name == self.referee for node in reachable)
        side = reachable & view
        return 2 * len(side) > len(view) or (2 * len(side) == len(view) and min(view) in side)

    def __str__(self) -> str:
        if self.kind == "static_quorum":
            return f"static_quorum:{self.quorum}"
        if self.kind == "keep_referee":
            return f"keep_referee:{self.referee}"
        return self.kind


def keep_majority() -> PartitionPolicy:
    """The side with more than half of the members keeps running (ties: the lowest node id)."""
    return PartitionPolicy("keep_majority")


def static_quorum(n: int) -> PartitionPolicy:
    """The side with at least `n` members keeps running (pick n > cluster size / 2)."""
    return PartitionPolicy("static_quorum", quorum=n)


def keep_referee(node: NodeId | str) -> PartitionPolicy:
    """The side that reaches `node` (a node id, or a node name) keeps running; without it every
    node fences."""
    try:
        if isinstance(node, NodeId):
            referee: NodeId | str = node
        elif isinstance(node, str) and "@" in node:
            referee = NodeId.parse(node)
        else:
            validate_node_name(node)
            referee = node
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(f"bad referee {node!r}: {exc} (expected a node id name@host:port or a "
                                   "node name)") from None
    return PartitionPolicy("keep_referee", referee=referee)


def no_policy() -> PartitionPolicy:
    """Every side of a partition runs on (names and children may exist twice until the heal)."""
    return PartitionPolicy("none")


class NoPolicy(Service):
    """The `policy` service of a node without a policy: the status its peers with one send is ignored."""

    namespace = "policy"

    def operations(self) -> Mapping[str, Operation]:
        return {"status": self.status}

    def status(self, _peer: NodeId, _args: Any) -> None:
        return None


class PartitionGuard(Service):
    """The policy at work on one node: its view, its decision, fencing and the takeover window.
    Its `policy.status` notifications tell the peers which members it reaches."""

    namespace = "policy"

    def __init__(self, dist: Distribution, policy: PartitionPolicy, stable_after_s: float) -> None:
        self.dist = dist
        self.node = dist.node
        self.me = dist.node_id
        self.policy = policy
        self.stable_after_s = stable_after_s
        self.settle_s = 2 * dist.config.heartbeat_interval_ms / 1000.0
        self.view: set[NodeId] = {self.me}
        self.reachable: set[NodeId] = {self.me}
        self.reports: dict[NodeId, set[NodeId]] = {}  # what each reachable peer says it reaches
        self.views: dict[NodeId, frozenset[NodeId]] = {}  # the view each member last reported (kept while lost)
        self.pending: set[NodeId] = set()  # reachable peers whose status has not come since they (re)joined
        # Reachable peers whose last status carried no view: a node with seeds that has not joined
        # yet, so a new incarnation when it shares a member's id. It counts for this node's side only
        # once this node admitted it on its current connection (`admitted_now`): a stale view's
        # member is its dead predecessor, downed elsewhere perhaps (fenced_faults 837).
        self.unjoined: set[NodeId] = set()
        self.admitted_now: set[NodeId] = set()
        # the view a member's predecessor last reported, while its new incarnation has not joined
        self.predecessor_views: dict[NodeId, frozenset[NodeId]] = {}
        self.by_view = policy.kind == "keep_majority"  # (the other policies do not count over the view)
        config = dist.config
        self.seeds = frozenset(config.seeds) - {self.me}
        self.seed_count = len(self.seeds) + len(config.dns_seeds)
        # A node started with seeds has not joined its cluster yet: a member admits it (see _on_status),
        # or it founds one with a majority of itself and its seeds (_found).
        self.joined = not (self.seed_count and policy.kind in ("keep_majority", "static_quorum"))
        self.lost_at: dict[NodeId, float] = {}  # monotonic time each unreachable member was lost
        self.fenced = False
        self.fenced_why = ""
        self.guarded: set[ProcessRef] = set()
        self.listeners: list[Callable[[bool], None]] = []
        self._overlap_since: float | None = None
        self._nudged: set[NodeId] = set()  # lost members a peer reaches, being dialed at once
        self._seen_gaps = 0
        self._found_since: float | None = None  # when founding became possible (see `_found`)

    def operations(self) -> Mapping[str, Operation]:
        return {"status": self._on_status}

    def start(self) -> None:
        self.node.spawn_task(self.watch_pauses, what="partition policy: pauses")
        if not self.joined:  # (a state it starts in, not an event: nothing ran yet to stop)
            self.fenced, self.fenced_why = True, NOT_JOINED

    def process_exited(self, proc: Process, reason: ExitReason) -> None:
        self.guarded.discard(proc.ref)

    # ------------------------------------------------------------------ queries
    def takeover_wait(self, peer: NodeId | None) -> float:
        """Seconds before this node may take over the work of `peer` (restart its children,
        free its names): 0 when it is reachable again or was never lost, inf while fenced."""
        if self.fenced:
            return math.inf
        if peer is None or peer in self.reachable:
            return 0.0
        lost = self.lost_at.get(peer)
        if lost is None:
            return 0.0
        return max(0.0, lost + self.stable_after_s - self.node.clock.monotonic())

    @property
    def admitted(self) -> bool:
        """Whether this node has joined its cluster and every member it reaches counts it (a
        joining node is fenced until then)."""
        return self.joined and not any(self.me not in self.views.get(p, (self.me,)) for p in self.reachable)

    def check(self, what: str) -> None:
        """Raise `NodeFencedError` while fenced."""
        if self.fenced:
            raise NodeFencedError(
                self.me, f"it is fenced ({self.fenced_why}) and does not {what}; retry after the partition "
                "heals, or use a node of the winning side")

    def guard(self, ref: ProcessRef) -> None:
        """A supervised child or a globally named process of this node: fenced with the node."""
        proc = self.node.local_process(ref)
        if proc is None or not proc.alive:
            return
        if self.fenced:
            proc.kill(PARTITION_FENCED)
            return
        self.guarded.add(proc.ref)
        proc.fence_gate = self.gate

    def subscribe(self, listener: Callable[[bool], None]) -> Callable[[], None]:
        """Call `listener(fenced)` on every fence and unfence, and when a lost member is back (its
        work may be taken over now); returns the unsubscribe function."""
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener) if listener in self.listeners else None

    # ------------------------------------------------------------------ membership
    def _is_member(self, peer: NodeId) -> bool:
        conn = self.dist.transport.conns.get(peer)
        return conn is None or not conn.peer_hidden

    def peer_joined(self, peer: NodeId) -> None:
        if not self._is_member(peer):
            return
        if not self.by_view:
            self.view.add(peer)  # (keep_majority admits it once every member it reaches sees it: _admit)
        self.reachable.add(peer)
        self.pending.add(peer)
        was_lost = self.lost_at.pop(peer, None) is not None
        self._broadcast()
        was_fenced = self.fenced
        self.evaluate()
        if was_lost and was_fenced == self.fenced:  # (a change of fencing told the listeners already)
            self._tell(self.fenced)

    def peer_left(self, peer: NodeId, reason: str) -> None:
        if peer not in self.reachable or self.dist.stopping:
            return
        self.reachable.discard(peer)
        self.reports.pop(peer, None)
        self.pending.discard(peer)
        self.unjoined.discard(peer)
        self.admitted_now.discard(peer)
        if reason == "graceful_shutdown":
            self._forget(peer)  # a graceful leave shrinks the view
        else:
            lost = self.lost_at[peer] = self.node.clock.monotonic()
            self.node.spawn_task(self._down_later, peer, lost, what="partition policy: down a lost member")
        self._broadcast()
        self.evaluate()

    async def _down_later(self, peer: NodeId, lost: float) -> None:
        """After the window, a member still lost (since `lost`) while this side wins leaves the
        view (downed)."""
        await anyio.sleep(self.stable_after_s)
        if peer not in self.reachable and not self.fenced and self.lost_at.get(peer) == lost:
            if not self._losing():
                self._forget(peer)
                del self.lost_at[peer]  # its work may be taken over from now on
                self.node.events.emit("node_downed", peer=peer, policy=str(self.policy))
                self._broadcast()

    def _forget(self, peer: NodeId) -> None:
        """`peer` leaves the view (it left, or was downed), and what it last reported with it."""
        self.view.discard(peer)
        self.views.pop(peer, None)
        self.predecessor_views.pop(peer, None)

    def _broadcast(self) -> None:
        view = [str(p) for p in sorted(self.view)] if self.joined else None  # (no view to decide on yet)
        status = [[str(p) for p in sorted(self.reachable)], self.fenced, view]
        for peer in sorted(self.reachable - {self.me}):
            self.dist.router.rpc_cast(peer, STATUS_OP, status)

    def _on_status(self, peer: NodeId, args: Any) -> None:
        if peer not in self.reachable or not (isinstance(args, list) and len(args) in (2, 3)
                                              and isinstance(args[0], list)):
            return
        try:
            reaches = {NodeId.parse(str(x)) for x in args[0][:4096]}
            listed = args[2] if len(args) == 3 else None
            view = frozenset(NodeId.parse(str(x)) for x in listed[:4096]) if isinstance(listed, list) else None
        except (ValueError, TypeError):
            return
        self.reports[peer] = reaches
        self.pending.discard(peer)
        if view is None:
            old = self.views.pop(peer, None)  # (it has not joined: a new incarnation's old view is gone)
            if old is not None and peer in self.view:
                self.predecessor_views[peer] = old
            self.unjoined.add(peer)
        else:
            self.views[peer] = view
            self.unjoined.discard(peer)
            self.predecessor_views.pop(peer, None)
            if not self.joined:
                self.view |= view  # a joining node decides over the cluster's view, not over itself
                # a member admitted it; not a fenced one, whose view may be stale (a fenced
                # node downs nobody, and its side may have been downed: fenced_faults 32)
                self.joined = self.me in view and args[1] is False
        for other in self.reports[peer] & set(self.lost_at):
            self._nudge(other)
        self.evaluate()

    def _nudge(self, member: NodeId) -> None:
        """A peer reaches `member`, which this node lost: dial it now rather than at the redial
        loop's next try (after a heal the mesh closes at once, before an overlap can settle)."""
        transport = self.dist.transport
        if member in self._nudged or member in transport.conns or member in transport.dialing:
            return
        self._nudged.add(member)

        async def dial() -> None:
            try:
                await transport.dial(member)
            finally:
                self._nudged.discard(member)

        self.node.spawn_task(dial, what=f"partition policy: dial {member}")

    # ------------------------------------------------------------------ the decision
    def _overlap(self) -> NodeId | None:
        """A lower-id member this node cannot reach but a reachable peer can (an overlap)."""
        for peer in sorted(self.reachable - {self.me}):
            for other in self.reports.get(peer, ()):
                if other in self.view and other not in self.reachable and other < self.me:
                    return other
        return None

    def _found(self) -> None:
        """A node with seeds that reaches a majority of itself and its seeds, none of them a
        member of a cluster (none reported a view), founds one with them: the first start of a
        cluster whose nodes all list each other as seeds."""
        if self.pending or any(p in self.views for p in self.reachable):
            self._found_since = None
            return
        if 2 * len(self.reachable) <= self.seed_count + 1:
            self._found_since = None
            return
        # Not before a dial of every seed it does not reach, started since, has ended: nodes restarted as a
        # partition healed reached each other first and founded a second cluster 7 ms before their
        # dials reached the running one (fenced_faults 776), or after it healed while the redial
        # back-off of their failed dials still waited (385).
        now = self.node.clock.monotonic()
        if self._found_since is None:
            self._found_since = now
        tried = self.dist.transport.tried
        stale = [seed for seed in sorted(self.seeds - self.reachable) if tried.get(seed, -math.inf) < self._found_since]
        if stale:
            for seed in stale:
                self._nudge(seed)
            return
        self.joined = True
        self.view |= self.reachable
        self.admitted_now |= self.reachable  # (founding together: each counts the others)

    def _admit(self) -> bool:
        """keep_majority: a member that joins or rejoins (it was downed, or is new) enters the
        view only once every other member this node reaches reports reaching it too, and only
        on a node whose side wins without it under every view it knows (a losing node's
        knowledge of the others' views may be stale: a downed member it admitted won with its
        own stale views, fenced_faults 499, 576). A node fenced only because a member has not
        admitted it yet still admits (two groups that downed each other admit each other,
        fenced_faults 8); True when the view grew."""
        grew = False
        fresh = (self.reachable - self.view) | (self.unjoined - self.admitted_now)
        for peer in sorted(fresh):
            if all(peer in self.reports.get(other, ()) for other in self.reachable - {self.me, peer}):
                self.view.add(peer)
                self.admitted_now.add(peer)
                grew = True  # (or a new incarnation of a member was admitted: it must hear the view)
        return grew

    def _counted(self) -> set[NodeId]:
        """The reachable members that count for this node's side. A peer that has not joined (a
        new incarnation) counts once this node admitted it since it connected, or in place of its
        predecessor when this node reaches every member of the view that predecessor last
        reported (no side that predecessor was part of can run out of sight). A node that woke
        from a pause with a stale view counted a restarted member as the one in its view, which
        the other side had downed, and won with it (fenced_faults 837)."""
        reach = self.reachable
        unseen = set()
        for peer in self.unjoined - self.admitted_now:
            predecessor = self.predecessor_views.get(peer)
            if predecessor is None or not predecessor <= reach:
                unseen.add(peer)
        return reach - unseen

    def _losing(self) -> str:
        """Why this node's side does not win now ("" when it wins).

        keep_majority decides over this node's view and over every view its members last
        reported (kept while they are lost): during a change of the views (a member admitted
        on one node, not yet on another) a side must win under the old and the new, so two
        sides that split in the middle of it cannot both win. A node some reachable member
        has not admitted yet does not win, nor does a fenced one before every member it
        reaches again has told it its view."""
        if not self.joined:
            return NOT_JOINED
        reach, view, policy = self.reachable, self.view, self.policy
        if not self.by_view:
            return "" if policy.wins(view, reach) else f"{policy!s} lost: reaches {len(reach)} members"
        if self.fenced and self.pending:
            return f"waits for the views of {len(self.pending)} members it reaches again"
        for peer in sorted(reach - self.pending - {self.me}):
            other = self.views.get(peer)
            if other is not None and self.me not in other:
                return f"not admitted by {peer} yet"
        return self._policy_losing()

    def _policy_losing(self) -> str:
        """keep_majority's count alone: over this node's view and every view its members last
        reported ("" when this side wins)."""
        reach, view, policy = self._counted(), self.view, self.policy
        if not policy.wins(view, reach):
            return f"{policy!s} lost: reaches {len(reach & view)} of {len(view)} members"
        seen = {frozenset(view)}
        for peer in sorted(self.views):
            other = self.views[peer]
            if peer in view and other not in seen:
                seen.add(other)
                if not policy.wins(other, reach):
                    return f"{policy!s} lost under the view of {peer}: reaches {len(reach & other)} of {len(other)}"
        return ""

    def evaluate(self) -> None:
        if self.dist.stopping:
            return
        if not self.joined:
            self._found()
        if (self.by_view and self.joined and not (self.fenced and self.pending) and not self._policy_losing()
                and self._admit()):
            self._broadcast()
        why = self._losing()
        if why:
            self.fence(why)
            return
        overlap = self._overlap()
        if overlap is None:
            self._overlap_since = None
            if self.fenced:
                self.unfence()
            return
        now = self.node.clock.monotonic()
        if self._overlap_since is None:
            self._overlap_since = now
            self.node.spawn_task(self._evaluate_later, self.settle_s, what="partition policy: overlap")
        elif now - self._overlap_since >= self.settle_s:
            self.fence(f"overlapping partition: peers reach {overlap}, this node does not")

    async def _evaluate_later(self, delay: float) -> None:
        await anyio.sleep(delay + 0.01)
        self.evaluate()

    def fence(self, why: str) -> None:
        """Stop every guarded process now (no terminate: the other side takes over soon)."""
        if self.fenced:
            self.fenced_why = why  # (still fenced: the reason NodeFencedError gives is the current one)
            return
        self.fenced, self.fenced_why = True, why
        log.warning("%s: fenced (%s): its supervised children and global names stop until it rejoins",
                    self.me, why)
        self._broadcast()  # before the exits, on the same connections: peers learn it first
        self.node.events.emit("node_fenced", reason=why)
        for ref in list(self.guarded):
            proc = self.node.local_process(ref)
            if proc is not None:
                proc.kill(PARTITION_FENCED)
        self.guarded.clear()
        self._tell(True)

    def unfence(self) -> None:
        self.fenced, self.fenced_why = False, ""
        log.warning("%s: unfenced: it is on the winning side again", self.me)
        self._broadcast()
        self.node.events.emit("node_unfenced")
        self._tell(False)

    def _tell(self, fenced: bool) -> None:
        for listener in list(self.listeners):
            try:
                listener(fenced)
            except Exception as exc:
                self.node.events.report_error("partition policy listener failed", exc)

    # ------------------------------------------------------------------ pauses
    def gate(self) -> bool:
        """Checked before a guarded process handles a message: True when this node has just
        woken from a freeze longer than the heartbeat timeout (it then fenced)."""
        live = self.dist.liveness
        if live is None:
            return False
        gaps = live.gaps
        if gaps != self._seen_gaps:
            self._seen_gaps = gaps
        elif live.monotonic() - live.last_tick > live.timeout_s:  # (on the source's clock)
            self._seen_gaps = gaps + 1  # the source counts this gap when it turns again
        else:
            return False
        self._woke()
        return True

    async def watch_pauses(self) -> None:
        """The same check for a node whose guarded processes are all idle."""
        period = min(self.dist.config.heartbeat_interval_ms / 2000.0, 0.1)
        while not self.dist.stopping:
            await anyio.sleep(period)
            self.gate()
            if not self.joined:  # (a dial that failed changes nothing else `evaluate` hears of)
                self.evaluate()

    def _woke(self) -> None:
        """Peers have declared this node down while it was frozen: fence, drop the stale
        connections (the redials that follow bring it back) and forget what peers said."""
        self.fence("frozen for longer than the heartbeat timeout")
        now = self.node.clock.monotonic()
        for peer in self.reachable - {self.me}:
            self.lost_at[peer] = now
        self.reachable = {self.me}
        self.reports.clear()
        self.pending.clear()
        self.unjoined.clear()
        self.admitted_now.clear()
        for conn in list(self.dist.transport.conns.values()):
            if not conn.peer_hidden:
                conn.close("heartbeat_timeout")
        self.evaluate()  # a node alone in its view unfences at once; others wait to rejoin


class SupervisorFencing:
    """The DistributedSupervisor side (its children are monitored): a child lost with its node
    (`noconnection`) is restarted only after the takeover window, in one batch per node; a
    child stopped by its node's fence (`partition_fenced`) moves elsewhere at once, not counted
    as a restart; while this node is fenced nothing restarts (parked until it unfences).

    A supervisor on a fenced node is *suspended*: it pushes no replica (so the winning side's
    takeover of it, if any, is the only one its peers see) until `settle_s` after it unfences;
    if a replica of a takeover arrives meanwhile it yields to it, else it resumes."""

    def __init__(self, server: Any, guard: PartitionGuard) -> None:
        self.server = server
        self.guard = guard
        # child id -> (its lost ref, or None for a restart that failed while fenced; why)
        self.parked: dict[str, tuple[ProcessRef | None, ExitReason]] = {}
        self.suspended = guard.fenced
        self.resume_at = 0.0
        self.retry_at: float | None = None  # when the timer of the parked children fires
        self.unsubscribe = guard.subscribe(self._fence_changed)

    def _fence_changed(self, fenced: bool) -> None:
        if not self.server._noex_process.alive:  # killed by the fence (a named one): no terminate ran
            self.unsubscribe()
            return
        if fenced:
            self.suspended = True
        elif self.suspended:
            self.resume_at = self.server.node.clock.monotonic() + self.guard.settle_s
            self.server.node.send_after(self.server.ref, (RETRY,), self.guard.settle_s + 0.01)
        if not fenced and self.parked:
            self.server.node.send(self.server.ref, (RETRY,))

    def _park(self, child: Any, ref: ProcessRef | None, reason: ExitReason, wait: float) -> None:
        self.parked[child.spec.id] = (ref, reason)
        if not math.isfinite(wait):
            return
        # One timer for every parked child: a retry handles them all, so a timer per child let
        # the retries double each round while several children could not be placed (a node
        # alone after a pause retried 6000 times a second; fenced_faults 18).
        now = self.server.node.clock.monotonic()
        at = now + wait
        if self.retry_at is not None and now < self.retry_at <= at:
            return  # a retry comes sooner
        self.retry_at = at
        self.server.node.send_after(self.server.ref, (RETRY,), wait + 0.01)

    def park_restart(self, child: Any, reason: ExitReason, *, retry_s: float | None = None) -> bool:
        """A child to restart waits: for the unfence while this node is fenced, or `retry_s`
        when its start just failed (True when parked)."""
        if child.ref is not None:
            return False
        if retry_s is not None:
            self._park(child, None, reason, retry_s)
            return True
        if not self.guard.fenced:
            return False
        self._park(child, None, reason, math.inf)
        return True

    def park_node(self, state: Any, node: NodeId) -> bool:
        """Park the children that ran on the lost `node` while its window runs (a takeover of
        the supervisor); False when they may be restarted now."""
        wait = self.guard.takeover_wait(node)
        if wait <= 0:
            return False
        for child in state.children:
            if child.ref is not None and child.ref.node == node:
                self.server._unwatch(child.ref)
                self._park(child, child.ref, NOCONNECTION, wait)
        return True

    async def handle(self, msg: Any, state: Any) -> Any:
        """The new state when this handled `msg` (a retry), None for any other message."""
        if type(msg) is tuple and msg == (RETRY,):
            return await self._retry(state)
        return None

    async def child_down(self, state: Any, child: Any, ref: ProcessRef, reason: ExitReason) -> Any:
        """Called first when a child ends: the new state when the policy decides, None when the
        supervisor handles it as usual."""
        server = self.server
        if server.node.stopping:
            return None
        if self.guard.fenced:
            self._park(child, ref, reason, math.inf)  # retried when this node unfences
            return state
        node = ref.node or server.node.id
        if reason == NOCONNECTION and node != server.node.id:
            wait = self.guard.takeover_wait(node)
            if wait > 0:
                self._park(child, ref, reason, wait)
                return state
            return None
        if reason == PARTITION_FENCED:  # its node fenced, this one does not: start it elsewhere
            return await self._move(state, child, ref)
        return None

    async def _move(self, state: Any, child: Any, ref: ProcessRef) -> Any:
        server = self.server
        origin = ref.node or server.node.id
        server._migrating[child.spec.id] = (origin, PARTITION_FENCED)
        child.ref, child.last_reason = None, PARTITION_FENCED
        try:
            await server._place(child)
        except Exception as exc:  # nowhere to go now: try again shortly
            log.warning("could not move child %r off a fenced node yet: %s", child.spec.id, exc)
            server._migrating.pop(child.spec.id, None)
            child.ref = ref
            self._park(child, ref, PARTITION_FENCED, 0.5)
        return state

    async def _retry(self, state: Any) -> Any:
        """Parked children whose wait is over: re-watched when their node is back (a Down
        follows if they ended), restarted in one batch per lost node, or decided again."""
        server = self.server
        if self.guard.fenced:
            return state
        if self.suspended:
            if server.node.clock.monotonic() < self.resume_at:
                return state  # the RETRY sent for resume_at follows
            if await server.taken_over_by() is not None:  # the takeover's replica is still on its way
                return server.yield_to_takeover(state)
            if self.guard.fenced:
                return state  # fenced again while it asked: the next unfence decides again
            self.suspended = False
            server._dirty = True  # resumed: its replica goes out again
        parked, self.parked = self.parked, {}
        lost: set[NodeId] = set()
        for child in list(state.children):
            if child.spec.id not in parked:
                continue
            ref, reason = parked[child.spec.id]
            if child.ref != ref:
                continue  # restarted or removed meanwhile
            if ref is None:  # its restart failed while this node was fenced: again now
                result = await server.restart(state, child, reason)
                if not hasattr(result, "children"):
                    return result
                continue
            node = ref.node or server.node.id
            if reason == NOCONNECTION and node != server.node.id:
                wait = self.guard.takeover_wait(node)
                if wait > 0:
                    self._park(child, ref, reason, wait)
                elif node in self.guard.reachable:
                    server._watch(child, ref)  # back before the window: it may still run there
                else:
                    lost.add(node)
                continue
            result = await server._child_down(state, child, ref, reason)
            if not hasattr(result, "children"):  # a Stop: the supervisor gave up
                return result
        for node in sorted(lost):
            result = await server._node_lost(state, node, graceful=False)
            if not hasattr(result, "children"):
                return result
        return state


def supervisor_fencing(server: Any) -> SupervisorFencing | None:
    """The fencing hook of a DistributedSupervisor on this node (None without a policy)."""
    dist = server.node.distribution
    guard = getattr(dist, "partition_guard", None)
    return SupervisorFencing(server, guard) if guard is not None else None
