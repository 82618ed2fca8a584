"""`GlobalRegistry`: cluster-wide names, with Erlang `global` as the reference semantics.

* `register` takes cluster-wide locks on the name, one node at a time in node-id order
  (so concurrent claimants never deadlock: whoever holds the lowest node's lock proceeds),
  then commits on every reachable node before it returns. N concurrent claimants of one
  name give exactly one winner; the others wait for the lock, then see the name taken and
  get `GlobalNameConflictError`.
* `whereis` answers from this node's replica, without network.
* The node hosting a named process is the authority for it: when the process exits it
  tells everyone; when a node goes down every replica drops its names; a node that joins
  is sent every name owned by each of its peers.
* After a partition heals, replicas that disagree resolve each name deterministically:
  the registration on the node whose id sorts lower wins, the loser process gets the exit
  signal ("name_conflict", name), and `on_conflict` callbacks fire once per node.
* With a partition policy (partition_policy.py) a fenced node's processes take no name, and
  the names of a lost node stay taken until the policy's takeover window ends (such a held
  name wins no conflict: its process may be dead).
* A peer's registration this replica kept out (the name had another owner) is asked for
  again when that owner goes, so replicas converge on what the owners' nodes assert.
* Authority: a peer's word changes this replica only where that peer may make
  the change: a commit only from the holder of the name's lock, a registration or a drop only
  from the node that owns the process, a conflict only as a concession of the loser's node.
  A conflict is only ever *resolved* (and a local process exited for it) by this node itself.
  Locks are leases: they end with their holder's connection and after a bounded time.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from ..core.errors import (
    CallTimeoutError,
    GlobalNameConflictError,
    GlobalNameNotFoundError,
    InvalidArgumentError,
    NodeFencedError,
    NodeNotReachableError,
    NoexError,
    NotPermittedError,
)
from ..core.node import current_node
from ..core.node_id import NodeId
from ..core.process import Process
from ..core.reasons import ExitReason
from ..core.refs import ProcessRef
from ..core.timeouts import check_timeout
from .partition_policy import PartitionGuard
from .service import Operation, Service

if TYPE_CHECKING:
    from .cluster import Distribution

log = logging.getLogger(__name__)

LOCK_WAIT_S = 5.0
DEFAULT_LOCK_LEASE_S = 15.0  # a lock request that names no lease
MAX_LOCK_LEASE_S = 60.0  # no lock is held longer, whatever its holder asked for
MAX_WITHDRAWN = 4096
MAX_LOCKS_PER_PEER = 1024


@dataclass(frozen=True)
class GlobalConflict:
    """Two registrations of one name met after a partition; `winner` kept, `loser` exited."""

    name: str
    winner: ProcessRef
    loser: ProcessRef


ConflictCallback = Callable[[GlobalConflict], Any]


class _Waiter:
    __slots__ = ("claim", "event", "lease_s", "peer", "queued")

    def __init__(self, claim: str, peer: NodeId, lease_s: float) -> None:
        self.claim = claim
        self.peer = peer
        self.lease_s = lease_s
        self.event = anyio.Event()  # set when it leaves the queue: granted or withdrawn
        self.queued = True


class _Lock:
    """The lock on one name at this node: held by one claim, the others queued in order.

    A lock is in the table exactly while a claim holds it. A release hands it straight to the
    next queued claim, so nobody can slip in between, and a claim that stops waiting leaves
    the queue (see `GlobalNames._on_lock`). The holder's lease ends at `expires`."""

    __slots__ = ("claim", "expires", "holder", "waiters")

    def __init__(self, claim: str, holder: NodeId, expires: float) -> None:
        self.claim = claim
        self.holder = holder
        self.expires = expires
        self.waiters: deque[_Waiter] = deque()


class GlobalNames(Service):
    """The global-name replica and protocol of one node (the `global` operations); `guard` is
    the node's partition policy at work, if it has one."""

    namespace = "global"

    def __init__(self, dist: Distribution, guard: PartitionGuard | None) -> None:
        self.dist = dist
        self.guard = guard
        self._monotonic = dist.node.clock.monotonic  # lock leases and waits
        self.node = dist.node
        self.names: dict[str, ProcessRef] = {}
        self.conflict_callbacks: list[ConflictCallback] = []
        self._locks: dict[str, _Lock] = {}
        # recent (peer, claim)s unlocked before their lock request was handled
        self._withdrawn: OrderedDict[tuple[NodeId, str], None] = OrderedDict()
        self._claims = itertools.count(1)
        # conflicts already resolved here: (name, loser) -> winner; shared with every peer
        self._conflicts: dict[tuple[str, ProcessRef], ProcessRef] = {}
        self._synced: set[NodeId] = set()  # peers whose join sync arrived on their current connection
        # names of lost peers kept (taken) until the partition policy's takeover window ends
        self._held: dict[NodeId, dict[str, ProcessRef]] = {}
        # peers whose registration of a name this replica did not take (another owner had it):
        # asked for their names again when that owner goes (`_unset`)
        self._contenders: dict[str, set[NodeId]] = {}

    def operations(self) -> Mapping[str, Operation]:
        return {"lock": self._on_lock, "unlock": self._on_unlock, "commit": self._on_commit, "drop": self._on_drop,
                "unregister": self._on_unregister, "sync": self._on_sync, "conflict": self._on_conflict,
                "resync": self._on_resync}

    # ------------------------------------------------------------------ API
    def full_ref(self, ref: ProcessRef) -> ProcessRef:
        if ref.node is None:
            return ProcessRef(self.dist.node_id, ref.id, ref.creation)
        return ref

    async def register(self, name: str, ref: ProcessRef, timeout: float = 10.0) -> None:
        timeout = check_timeout(timeout)
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"a global name is a non-empty string, not {name!r}")
        if not isinstance(ref, ProcessRef):
            raise InvalidArgumentError(f"GlobalRegistry.register needs a ProcessRef, not {ref!r}")
        if self.dist.config.hidden:
            raise NotPermittedError(
                f"{self.dist.node_id} is a hidden observer: it registers no global names (members never list "
                "it, so nobody would see it leave); start it as a member (%noex attach --member) to register one")
        guard = self.guard
        if guard is not None:
            guard.check(f"claim global names ({name!r})")
        ref = self.full_ref(ref)
        if ref.node != self.dist.node_id and ref.node not in self.dist.membership.peers:
            raise NodeNotReachableError(ref.node, "cannot register a process of a node that is not connected")
        owner = self.names.get(name)
        if owner is not None:
            if owner == ref:
                return
            raise GlobalNameConflictError(name, owner)
        claim = f"{self.dist.node_id}/{next(self._claims)}"
        members = sorted([self.dist.node_id, *self.dist.membership.peers])
        asked: list[NodeId] = []  # every member asked for a lock is unlocked, whatever it answered
        try:
            with anyio.fail_after(timeout):
                for member in members:
                    asked.append(member)
                    answer = await self._lock_at(member, name, claim, ref, timeout + LOCK_WAIT_S)
                    if answer is _UNREACHABLE:
                        asked.pop()
                        continue
                    if answer is not None:
                        raise GlobalNameConflictError(name, answer)
                for member in asked:
                    await self._ask(member, "global.commit", [name, claim, ref], 5.0)
                if ref.node == self.dist.node_id and self.names.get(name) != ref:
                    self._drop_late(name, ref, asked)
                asked.clear()
                if guard is not None:
                    guard.check(f"claim global names ({name!r})")  # (fenced meanwhile: the name went with it)
        except CallTimeoutError:
            raise
        except TimeoutError:
            raise CallTimeoutError(
                f"registering global name {name!r}", timeout,
                "the cluster did not finish the registration in time; retry, or raise timeout=",
            ) from None
        finally:
            # Unlocks are notifications: they follow the lock on each connection (FIFO), and a
            # registration never waits for them past its own deadline (every blocking API ends
            # within its timeout).
            for member in asked:
                if member != self.dist.node_id:
                    self.dist.router.rpc_cast(member, "global.unlock", [name, claim])
                    continue
                with anyio.CancelScope(shield=True):
                    try:
                        await self._ask(member, "global.unlock", [name, claim], 2.0)
                    except NoexError as exc:  # best effort: the lock's lease ends it anyway
                        log.warning("could not unlock global name %r at %s: %s", name, member, exc)

    def _drop_late(self, name: str, ref: ProcessRef, committed: list[NodeId]) -> None:
        """The process of this node exited (or its fence killed it) after its own commit and
        before the others': its drop reached the members committed later before their commit,
        and they would name a dead process for good (fenced_faults 67). Drop it again after
        the commit, on the same connections."""
        for member in committed:
            if member != self.dist.node_id:
                self.dist.router.rpc_cast(member, "global.drop", [name, ref])

    async def _lock_at(self, member: NodeId, name: str, claim: str, ref: ProcessRef, lease_s: float) -> Any:
        """The lock on `name` at `member`: None when granted, the owner when the name is taken."""
        try:
            return await self._ask(member, "global.lock", [name, claim, ref, lease_s], LOCK_WAIT_S + 1.0)
        except CallTimeoutError as exc:
            raise CallTimeoutError(
                f"global name {name!r}: the lock at {member}", exc.timeout,
                "another registration of this name held it that long; retry, or look at that node",
            ) from None

    async def unregister(self, name: str) -> None:
        """Drop `name` everywhere; the node owning its process does it (it alone may)."""
        ref = self.names.get(name)
        if ref is None:
            return
        if ref.node == self.dist.node_id:
            await self._broadcast_drop(name, ref)
            return
        assert ref.node is not None
        try:
            await self.dist.router.rpc(ref.node, "global.unregister", [name, ref], 5.0)
        except NodeNotReachableError:
            raise NodeNotReachableError(
                ref.node, f"it owns global name {name!r} and alone can drop it; its names go when it is down"
            ) from None

    def whereis(self, name: str) -> ProcessRef | None:
        return self.names.get(name)

    def on_conflict(self, callback: ConflictCallback) -> Callable[[], None]:
        self.conflict_callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self.conflict_callbacks:
                self.conflict_callbacks.remove(callback)

        return unsubscribe

    # ------------------------------------------------------------------ talking to nodes
    async def _ask(self, member: NodeId, op: str, args: Any, timeout: float) -> Any:
        if member == self.dist.node_id:
            result = self.dist.router.rpc_handlers[op](member, args)
            if inspect.isawaitable(result):
                result = await result
            return result
        try:
            return await self.dist.router.rpc(member, op, args, timeout)
        except NodeFencedError:
            raise  # reachable, but it refuses: its process may not take a name while it is fenced
        except NodeNotReachableError:
            return _UNREACHABLE

    async def _broadcast_drop(self, name: str, ref: ProcessRef) -> None:
        members = [self.dist.node_id, *self.dist.membership.peers]
        async with anyio.create_task_group() as tg:
            for member in members:
                tg.start_soon(self._ask, member, "global.drop", [name, ref], 5.0)

    # ------------------------------------------------------------------ handlers
    async def _on_lock(self, peer: NodeId, args: Any) -> ProcessRef | None:
        """Grant the lock on `name` to `claim`, queued behind the claims already waiting (at most
        LOCK_WAIT_S). Answers None when granted, or the current owner when the name is taken.
        The grant is a lease of the asked length (bounded); an expired holder is passed over."""
        name, claim, ref, lease_s = _lock_args(args)
        guard = self.guard
        if guard is not None and ref.node == self.dist.node_id:
            guard.check(f"let its processes take global names ({name!r})")
        if (peer, claim) in self._withdrawn:  # its unlock overtook this request
            raise CallTimeoutError(f"the lock on global name {name!r}", 0.0, "the registration had given up")
        lock = self._locks.get(name)
        if lock is not None and lock.claim != claim and lock.expires <= self._monotonic():
            self._release(name, lock.claim)  # the holder's lease ended
            lock = self._locks.get(name)
        if lock is None:
            self._check_lock_quota(peer)
            self._locks[name] = _Lock(claim, peer, self._monotonic() + lease_s)
        elif lock.claim != claim:
            self._check_lock_quota(peer)
            waiter = _Waiter(claim, peer, lease_s)
            lock.waiters.append(waiter)
            deadline = self._monotonic() + LOCK_WAIT_S
            try:
                while waiter.queued:
                    now = self._monotonic()
                    if now >= deadline:
                        break
                    if lock.expires <= now:
                        self._release(name, lock.claim)  # the holder's lease ended: the next claim gets it
                        continue
                    with anyio.move_on_after(min(deadline, lock.expires) - now):
                        await waiter.event.wait()
            except BaseException:
                self._release(name, claim)  # cancelled from outside: neither hold nor wait
                raise
            if self._locks.get(name) is not lock or lock.claim != claim:  # timed out, or withdrawn
                self._release(name, claim)
                raise CallTimeoutError(
                    f"the lock on global name {name!r}", LOCK_WAIT_S,
                    "another registration of this name held it that long; retry, or look at that node",
                )
        owner = self.names.get(name)
        if owner is not None and owner != ref:
            return owner
        return None

    def _check_lock_quota(self, peer: NodeId) -> None:
        """A peer holds or awaits at most MAX_LOCKS_PER_PEER locks here (memory per peer is bounded)."""
        if len(self._locks) < MAX_LOCKS_PER_PEER:
            return
        count = sum((lock.holder == peer) + sum(w.peer == peer for w in lock.waiters) for lock in self._locks.values())
        if count >= MAX_LOCKS_PER_PEER:
            raise NotPermittedError(f"{peer} holds or awaits {count} global-name locks here; that is the limit")

    def _release(self, name: str, claim: str) -> bool:
        """`claim` gives the lock up: the next queued claim gets it at once; a claim that only
        waits for it leaves the queue. False when `claim` neither holds nor awaits it."""
        lock = self._locks.get(name)
        if lock is None:
            return False
        if lock.claim == claim:
            if lock.waiters:
                waiter = lock.waiters.popleft()  # (a waiter that gave up has left the queue already)
                lock.claim, lock.holder = waiter.claim, waiter.peer
                lock.expires = self._monotonic() + waiter.lease_s
                waiter.queued = False
                waiter.event.set()
            else:
                del self._locks[name]
            return True
        queued = next((w for w in lock.waiters if w.claim == claim), None)
        if queued is None:
            return False
        lock.waiters.remove(queued)
        queued.queued = False
        queued.event.set()
        return True

    def _on_unlock(self, peer: NodeId, args: Any) -> None:
        """The claimant gives up its lock, or stops waiting for it; only it may."""
        if not (isinstance(args, list) and len(args) == 2 and all(isinstance(x, str) for x in args)):
            raise InvalidArgumentError(f"malformed global.unlock {args!r}")
        name, claim = args
        lock = self._locks.get(name)
        claimants = [] if lock is None else [(lock.claim, lock.holder), *((w.claim, w.peer) for w in lock.waiters)]
        if any(c == claim and holder != peer for c, holder in claimants):
            raise NotPermittedError(f"{peer} cannot unlock global name {name!r}: the claim is another node's")
        if not self._release(name, claim):
            self._withdrawn[(peer, claim)] = None  # should its lock request still come, it is refused
            if len(self._withdrawn) > MAX_WITHDRAWN:
                self._withdrawn.popitem(last=False)

    def _on_commit(self, peer: NodeId, args: Any) -> None:
        """Only the lock holder commits, and never over another owner."""
        name, claim, ref, _ = _lock_args(args)
        lock = self._locks.get(name)
        if lock is None or lock.claim != claim or lock.holder != peer:
            raise NotPermittedError(f"{peer} committed global name {name!r} without holding its lock here")
        owner = self.names.get(name)
        if owner is not None and owner != ref:
            raise GlobalNameConflictError(name, owner)
        self._set(name, ref)
        self._release(name, claim)
        if ref.node == self.dist.node_id:
            proc = self.node.local_process(ref)
            if proc is None or not proc.alive:
                self.node.spawn_task(self._broadcast_drop, name, ref, what="global name of a dead process")
            else:
                if self.guard is not None:
                    self.guard.guard(ref)  # fenced with this node
                # the owner tells every peer: one that joined while the claim ran missed the locks
                for other in list(self.dist.membership.peers):
                    if other != peer:
                        self.dist.router.rpc_cast(other, "global.sync", {"names": [[name, ref]], "conflicts": []})

    def _on_drop(self, peer: NodeId, args: Any) -> None:
        """Only the node owning the process drops its name (on its exit, or by unregister)."""
        name, ref = _name_ref(args)
        if ref.node != peer:
            log.warning("ignored a drop of global name %r (a process of %s) from %s", name, ref.node, peer)
            return
        if self.names.get(name) == ref:
            self._unset(name, ref)

    async def _on_unregister(self, peer: NodeId, args: Any) -> None:
        """A peer's `unregister` of a name owned here: this node drops it everywhere."""
        name, ref = _name_ref(args)
        if ref.node == self.dist.node_id and self.names.get(name) == ref:
            await self._broadcast_drop(name, ref)

    def _on_sync(self, peer: NodeId, args: Any) -> None:
        """A peer's registrations (only of its own processes) and its concessions. Only its join
        sync (the first on a connection: a healed partition meets there) may contest a name
        already owned; later ones only fill in free names."""
        if not isinstance(args, dict):
            return
        joining = peer not in self._synced
        self._synced.add(peer)
        for entry in _entries(args.get("conflicts"), 3):
            self._on_conflict(peer, entry)
        for entry in _entries(args.get("names"), 2):
            name, ref = entry
            if not (isinstance(name, str) and isinstance(ref, ProcessRef)) or ref.node != peer:
                continue
            if (name, ref) in self._conflicts:
                continue
            current = self.names.get(name)
            if current is None:
                self._set(name, ref)
            elif current != ref and joining and not self._is_held(name, current):
                self._resolve(name, current, ref)
            elif current != ref:
                # Kept out: a later sync only fills free names, and a held name's process may be
                # dead (its node is lost), so it wins no conflict. The peer is asked again once
                # the owner goes from this replica.
                self._contenders.setdefault(name, set()).add(peer)

    def _on_resync(self, peer: NodeId, _args: Any) -> None:
        """A peer asks for this node's names again (an owner that kept ours out of its replica
        is gone there)."""
        self.dist.router.rpc_cast(peer, "global.sync", self._sync_payload())

    def _on_conflict(self, peer: NodeId, args: Any) -> None:
        """A concession: the loser's node says its process lost `name`. Nothing else is taken
        from a peer: this node drops the loser from its replica, never exits anything for it,
        and learns the winner from the winner's own node."""
        if not (isinstance(args, list) and len(args) == 3):
            return
        name, winner, loser = args
        if not (isinstance(name, str) and isinstance(winner, ProcessRef) and isinstance(loser, ProcessRef)):
            return
        if loser.node != peer or (name, loser) in self._conflicts or self.names.get(name) not in (winner, loser):
            return
        if self.names.get(name) == loser:
            # the winner's table may have come already and been kept out by the loser: ask again
            if winner.node is not None:
                self._contenders.setdefault(name, set()).add(winner.node)
            self._unset(name, loser, reason=("name_conflict", name))
        self._record_conflict(name, winner, loser)

    # ------------------------------------------------------------------ replica upkeep
    def _set(self, name: str, ref: ProcessRef) -> None:
        if self.names.get(name) != ref:
            self.names[name] = ref
            self.node.events.emit("global_registered", name=name, ref=ref)

    def _unset(self, name: str, ref: ProcessRef, **reason: Any) -> None:
        """Drop `name` (owned by `ref`) from this replica. The losers of the conflicts recorded
        for it were kept out only by an owner now gone, and their nodes may still hold the name
        (their node never met the winner, or the winner was a stale entry: a resumed node's held
        name of a dead process): the conflicts are forgotten and those nodes asked for their
        names again, so this replica ends up agreeing with theirs (found by the simulator:
        noex_lab.sim, issue 15)."""
        del self.names[name]
        self.node.events.emit("global_unregistered", name=name, ref=ref, **reason)
        losers = [loser for (n, loser) in self._conflicts if n == name]
        for loser in losers:
            del self._conflicts[(name, loser)]
        ask = {loser.node for loser in losers} | self._contenders.pop(name, set())
        me, peers = self.dist.node_id, self.dist.membership.peers
        for owner in sorted(node for node in ask if node is not None and node != me and node in peers):
            self.dist.router.rpc_cast(owner, "global.resync", None)

    def _is_held(self, name: str, ref: ProcessRef) -> bool:
        """`ref` owns `name` here only because its lost node's names are held (partition policy)."""
        assert ref.node is not None
        return self._held.get(ref.node, {}).get(name) == ref

    def _resolve(self, name: str, a: ProcessRef, b: ProcessRef) -> None:
        """This node's own resolution of two registrations of `name`, each asserted by the node
        owning its process: keep the lower-ranked one; a local loser exits and is conceded."""
        winner, loser = (a, b) if _rank(a) <= _rank(b) else (b, a)
        if (name, loser) in self._conflicts:
            return
        self.names[name] = winner
        self._record_conflict(name, winner, loser)
        if loser.node == self.dist.node_id:
            self.node.exit_signal(loser, winner, ("name_conflict", name))
            for peer in list(self.dist.membership.peers):
                self.dist.router.rpc_cast(peer, "global.conflict", [name, winner, loser])

    def _record_conflict(self, name: str, winner: ProcessRef, loser: ProcessRef) -> None:
        """Note a conflict once on this node: event and `on_conflict` callbacks."""
        self._conflicts[(name, loser)] = winner
        conflict = GlobalConflict(name, winner, loser)
        self.node.events.emit("global_conflict", name=name, winner=winner, loser=loser)
        for callback in list(self.conflict_callbacks):
            try:
                result = callback(conflict)
                if inspect.isawaitable(result):
                    self.node.run_callback_result(result, "on_conflict callback")
            except Exception as exc:
                self.node.events.report_error("on_conflict callback raised", exc)

    def _sync_payload(self) -> dict[str, Any]:
        me = self.dist.node_id
        return {
            "names": [[name, ref] for name, ref in self.names.items() if ref.node == me],
            "conflicts": [[name, winner, loser] for (name, loser), winner in self._conflicts.items()
                          if loser.node == me],  # (peers take concessions only from the loser's node)
        }

    def peer_joined(self, peer: NodeId) -> None:
        self._drop_held(peer)  # what it still owns comes back in its join sync
        self.dist.router.rpc_cast(peer, "global.sync", self._sync_payload())

    def peer_left(self, peer: NodeId, reason: str) -> None:
        self._synced.discard(peer)
        for name in [n for n, peers in self._contenders.items() if peer in peers]:
            self._contenders[name].discard(peer)  # its names come again in its join sync
            if not self._contenders[name]:
                del self._contenders[name]
        guard = self.guard
        kept: set[tuple[str, str]] = set()
        if guard is not None and reason != "graceful_shutdown" and guard.takeover_wait(peer) > 0:
            # Its names stay taken, and the locks it holds stay held, until the other side has
            # surely fenced (the takeover window): a registration it had locked everywhere may
            # still commit on its side until then (fenced_faults 770: released at once, the lock
            # let this side register the name 40 ms before the lost node's commit completed there)
            held = {name: ref for name, ref in self.names.items() if ref.node == peer}
            kept = {(name, lock.claim) for name, lock in self._locks.items() if lock.holder == peer}
            if held:
                self._held[peer] = held
            if held or kept:
                self.node.spawn_task(self._release_held, peer, kept, what="global names of a lost node")
        held = self._held.get(peer, {})
        for name, ref in list(self.names.items()):
            if ref.node == peer and name not in held:
                self._unset(name, ref, reason="nodedown")
        for name, lock in list(self._locks.items()):
            for waiter in [w for w in lock.waiters if w.peer == peer]:
                self._release(name, waiter.claim)
            if lock.holder == peer and (name, lock.claim) not in kept:
                self._release(name, lock.claim)
        # A loser kept out of this replica only because of a winner on the departed node that this
        # replica does not name (a concession awaiting the winner's own word): the name is free
        # here, but the loser's node may never have met that winner and still holds the name. Ask
        # it for its names again (found by the simulator: noex_lab.sim, issue 15). A held winner's
        # conflicts go when its name does (`_unset`).
        orphaned = sorted({loser.node for (name, loser), w in self._conflicts.items()
                           if w.node == peer and name not in held and loser.node != peer
                           and loser.node in self.dist.membership.peers})
        self._conflicts = {k: w for k, w in self._conflicts.items()
                           if k[1].node != peer and (w.node != peer or k[0] in held)}
        for owner in orphaned:
            self.dist.router.rpc_cast(owner, "global.resync", None)

    async def _release_held(self, peer: NodeId, locks: set[tuple[str, str]]) -> None:
        """Drop the held names of `peer`, and release the locks it held (`locks`: name, claim),
        once the policy lets this node take its work over (or it is back: its join sync and
        its own unlocks take over)."""
        guard = self.guard
        assert guard is not None
        while (peer in self._held or locks) and (wait := guard.takeover_wait(peer)) > 0:
            await anyio.sleep(min(wait + 0.01, 1.0))
        self._drop_held(peer)
        for name, claim in sorted(locks):
            lock = self._locks.get(name)
            if lock is not None and lock.claim == claim and lock.holder == peer:
                self._release(name, claim)

    def _drop_held(self, peer: NodeId) -> None:
        for name, ref in self._held.pop(peer, {}).items():
            if self.names.get(name) == ref:
                self._unset(name, ref, reason="nodedown")

    def process_exited(self, proc: Process, reason: ExitReason) -> None:
        ref = self.full_ref(proc.ref)
        names = [n for n, r in self.names.items() if r == ref]
        for name in names:
            self._unset(name, ref, reason=reason)
            for peer in list(self.dist.membership.peers):
                self.dist.router.rpc_cast(peer, "global.drop", [name, ref])


def _lock_args(args: Any) -> tuple[str, str, ProcessRef, float]:
    """[name, claim, ref] or [name, claim, ref, lease_s] from a peer, checked; the lease bounded."""
    if not (isinstance(args, list) and len(args) in (3, 4)):
        raise InvalidArgumentError(f"malformed global-name lock request {args!r}")
    name, claim, ref = args[:3]
    if not (isinstance(name, str) and isinstance(claim, str) and isinstance(ref, ProcessRef)):
        raise InvalidArgumentError(f"malformed global-name lock request {args!r}")
    lease = args[3] if len(args) == 4 else None
    lease_s = float(lease) if isinstance(lease, (int, float)) and lease == lease else DEFAULT_LOCK_LEASE_S
    return name, claim, ref, min(max(lease_s, 0.01), MAX_LOCK_LEASE_S)


def _name_ref(args: Any) -> tuple[str, ProcessRef]:
    if not (isinstance(args, list) and len(args) == 2 and isinstance(args[0], str)
            and isinstance(args[1], ProcessRef)):
        raise InvalidArgumentError(f"malformed global-name request {args!r}")
    return args[0], args[1]


def _entries(value: Any, size: int) -> list[list[Any]]:
    """The well-formed `size`-item entries of a list from a peer (the rest is ignored)."""
    if not isinstance(value, list):
        return []
    return [entry for entry in value if isinstance(entry, list) and len(entry) == size]


def _rank(ref: ProcessRef) -> tuple[Any, ...]:
    assert ref.node is not None
    return (ref.node, ref.creation, ref.id)


_UNREACHABLE: Any = object()


def _registry() -> GlobalNames:
    from .attached import require_distribution

    dist = require_distribution(current_node())
    registry = dist.global_registry
    assert isinstance(registry, GlobalNames)
    return registry


class GlobalRegistry:
    """Facade: cluster-wide names for processes."""

    @staticmethod
    async def register(name: str, ref: ProcessRef, *, timeout: float = 10.0) -> None:
        """Returns once every reachable node agreed; `GlobalNameConflictError` if the name is taken."""
        await _registry().register(name, ref, timeout)

    @staticmethod
    async def unregister(name: str) -> None:
        await _registry().unregister(name)

    @staticmethod
    def whereis(name: str) -> ProcessRef | None:
        """From this node's replica, without network."""
        return _registry().whereis(name)

    @staticmethod
    def lookup(name: str) -> ProcessRef:
        ref = _registry().whereis(name)
        if ref is None:
            raise GlobalNameNotFoundError(name)
        return ref

    @staticmethod
    def names() -> list[str]:
        return sorted(_registry().names)

    @staticmethod
    def on_conflict(callback: ConflictCallback) -> Callable[[], None]:
        """Call `callback(GlobalConflict)` when a conflict is resolved after a partition heals."""
        return _registry().on_conflict(callback)
