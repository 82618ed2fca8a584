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
"""

from __future__ import annotations

import inspect
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from ..core.errors import (
    CallTimeoutError,
    GlobalNameConflictError,
    GlobalNameNotFoundError,
    InvalidArgumentError,
    NodeNotReachableError,
)
from ..core.node import current_node
from ..core.node_id import NodeId
from ..core.process import Process
from ..core.reasons import ExitReason
from ..core.refs import ProcessRef

if TYPE_CHECKING:
    from .cluster import Distribution

LOCK_WAIT_S = 5.0
MAX_WITHDRAWN = 4096


@dataclass(frozen=True)
class GlobalConflict:
    """Two registrations of one name met after a partition; `winner` kept, `loser` exited."""

    name: str
    winner: ProcessRef
    loser: ProcessRef


ConflictCallback = Callable[[GlobalConflict], Any]


class _Waiter:
    __slots__ = ("claim", "future", "peer")

    def __init__(self, claim: str, peer: NodeId, future: Any) -> None:
        self.claim = claim
        self.peer = peer
        self.future = future


class _Lock:
    """The lock on one name at this node: held by one claim, the others queued in order.

    A lock is in the table exactly while a claim holds it. A release hands it straight to the
    next queued claim, so nobody can slip in between, and a claim that stops waiting leaves
    the queue (see `GlobalNames._on_lock`)."""

    __slots__ = ("claim", "holder", "waiters")

    def __init__(self, claim: str, holder: NodeId) -> None:
        self.claim: str | None = claim
        self.holder: NodeId | None = holder
        self.waiters: deque[_Waiter] = deque()


class GlobalNames:
    """The global-name replica and protocol of one node."""

    def __init__(self, dist: Distribution) -> None:
        self.dist = dist
        self.node = dist.node
        self.names: dict[str, ProcessRef] = {}
        self.conflict_callbacks: list[ConflictCallback] = []
        self._locks: dict[str, _Lock] = {}
        self._withdrawn: OrderedDict[str, None] = OrderedDict()  # recent claims unlocked while not holding
        self._claims = itertools.count(1)
        # conflicts already resolved here: (name, loser) -> winner; shared with every peer
        self._conflicts: dict[tuple[str, ProcessRef], ProcessRef] = {}
        handlers = dist.router.rpc_handlers
        handlers["global.lock"] = self._on_lock
        handlers["global.unlock"] = self._on_unlock
        handlers["global.commit"] = self._on_commit
        handlers["global.drop"] = self._on_drop
        handlers["global.sync"] = self._on_sync
        handlers["global.conflict"] = self._on_conflict
        dist.router.name_resolvers.append(self.names.get)
        dist.join_hooks.append(self._peer_joined)
        dist.leave_hooks.append(self._peer_left)
        self.node.exit_hooks.append(self._process_exited)

    # ------------------------------------------------------------------ API
    def full_ref(self, ref: ProcessRef) -> ProcessRef:
        if ref.node is None:
            return ProcessRef(self.dist.node_id, ref.id, ref.creation)
        return ref

    async def register(self, name: str, ref: ProcessRef, timeout: float = 10.0) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"a global name is a non-empty string, not {name!r}")
        if not isinstance(ref, ProcessRef):
            raise InvalidArgumentError(f"GlobalRegistry.register needs a ProcessRef, not {ref!r}")
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
                    answer = await self._lock_at(member, name, claim, ref)
                    if answer is _UNREACHABLE:
                        asked.pop()
                        continue
                    if answer is not None:
                        raise GlobalNameConflictError(name, answer)
                for member in asked:
                    await self._ask(member, "global.commit", [name, claim, ref], 5.0)
                late = set(self.dist.membership.peers) - set(asked)
                asked.clear()
            # nodes that joined while the claim ran missed both the locks and their join sync
            for peer in late:
                self.dist.router.rpc_cast(peer, "global.sync", {"names": [[name, ref]], "conflicts": []})
        except CallTimeoutError:
            raise
        except TimeoutError:
            raise CallTimeoutError(
                f"registering global name {name!r}", timeout,
                "the cluster did not finish the registration in time; retry, or raise timeout=",
            ) from None
        finally:
            for member in asked:
                with anyio.CancelScope(shield=True):
                    await self._ask(member, "global.unlock", [name, claim], 2.0)

    async def _lock_at(self, member: NodeId, name: str, claim: str, ref: ProcessRef) -> Any:
        """The lock on `name` at `member`: None when granted, the owner when the name is taken."""
        try:
            return await self._ask(member, "global.lock", [name, claim, ref], LOCK_WAIT_S + 1.0)
        except CallTimeoutError as exc:
            raise CallTimeoutError(
                f"global name {name!r}: the lock at {member}", exc.timeout,
                "another registration of this name held it that long; retry, or look at that node",
            ) from None

    async def unregister(self, name: str) -> None:
        ref = self.names.get(name)
        if ref is None:
            return
        await self._broadcast_drop(name, ref)

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
        LOCK_WAIT_S). Answers None when granted, or the current owner when the name is taken."""
        name, claim, ref = args
        if claim in self._withdrawn:  # its unlock overtook this request
            raise CallTimeoutError(f"the lock on global name {name!r}", 0.0, "the registration had given up")
        lock = self._locks.get(name)
        if lock is None:
            self._locks[name] = _Lock(claim, peer)
        elif lock.claim != claim:
            waiter = _Waiter(claim, peer, self.node.backend.new_future())
            lock.waiters.append(waiter)
            try:
                with anyio.move_on_after(LOCK_WAIT_S):
                    await waiter.future
            except BaseException:
                self._release(name, claim)  # cancelled from outside: neither hold nor wait
                raise
            if lock.claim != claim:  # timed out, or the claim was withdrawn
                self._release(name, claim)
                raise CallTimeoutError(
                    f"the lock on global name {name!r}", LOCK_WAIT_S,
                    "another registration of this name held it that long; retry, or look at that node",
                )
        owner = self.names.get(name)
        if owner is not None and owner != ref:
            return owner
        return None

    def _release(self, name: str, claim: str) -> None:
        """`claim` gives the lock up: the next queued claim gets it at once; a claim that only
        waits for it leaves the queue; one not seen yet is refused when its request comes."""
        lock = self._locks.get(name)
        if lock is not None and lock.claim == claim:
            while lock.waiters:
                waiter = lock.waiters.popleft()
                if not waiter.future.done():  # (a waiter that gave up has left the queue already)
                    lock.claim, lock.holder = waiter.claim, waiter.peer
                    waiter.future.set_result(None)
                    return
            del self._locks[name]
            return
        queued = next((w for w in lock.waiters if w.claim == claim), None) if lock is not None else None
        if lock is not None and queued is not None:
            lock.waiters.remove(queued)
            if not queued.future.done():
                queued.future.set_result(None)
            return
        self._withdrawn[claim] = None
        if len(self._withdrawn) > MAX_WITHDRAWN:
            self._withdrawn.popitem(last=False)

    def _on_unlock(self, peer: NodeId, args: Any) -> None:
        name, claim = args
        self._release(name, claim)

    def _on_commit(self, peer: NodeId, args: Any) -> None:
        name, claim, ref = args
        self._set(name, ref)
        self._release(name, claim)
        if ref.node == self.dist.node_id:
            proc = self.node.local_process(ref)
            if proc is None or not proc.alive:
                self.node.spawn_task(self._broadcast_drop, name, ref, what="global name of a dead process")

    def _on_drop(self, peer: NodeId, args: Any) -> None:
        name, ref = args
        if self.names.get(name) == ref:
            del self.names[name]
            self.node.events.emit("global_unregistered", name=name, ref=ref)

    def _on_sync(self, peer: NodeId, args: Any) -> None:
        for name, winner, loser in args.get("conflicts", []):
            self._note_conflict(name, winner, loser)
        for name, ref in args.get("names", []):
            if (name, ref) in self._conflicts:
                continue
            current = self.names.get(name)
            if current is None:
                self._set(name, ref)
            elif current != ref:
                self._resolve(name, current, ref)

    def _on_conflict(self, peer: NodeId, args: Any) -> None:
        name, winner, loser = args
        self._note_conflict(name, winner, loser)

    # ------------------------------------------------------------------ replica upkeep
    def _set(self, name: str, ref: ProcessRef) -> None:
        if self.names.get(name) != ref:
            self.names[name] = ref
            self.node.events.emit("global_registered", name=name, ref=ref)

    def _resolve(self, name: str, a: ProcessRef, b: ProcessRef) -> None:
        winner, loser = (a, b) if _rank(a) <= _rank(b) else (b, a)
        self._note_conflict(name, winner, loser)

    def _note_conflict(self, name: str, winner: ProcessRef, loser: ProcessRef) -> None:
        """Apply a resolved conflict once on this node, then tell every peer about it."""
        if (name, loser) in self._conflicts:
            return
        self._conflicts[(name, loser)] = winner
        if self.names.get(name) in (None, loser):
            self.names[name] = winner
        conflict = GlobalConflict(name, winner, loser)
        self.node.events.emit("global_conflict", name=name, winner=winner, loser=loser)
        for callback in list(self.conflict_callbacks):
            try:
                result = callback(conflict)
                if inspect.isawaitable(result):
                    self.node.run_callback_result(result, "on_conflict callback")
            except Exception as exc:
                self.node.events.report_error("on_conflict callback raised", exc)
        if loser.node == self.dist.node_id:
            self.node.exit_signal(loser, winner, ("name_conflict", name))
        for peer in list(self.dist.membership.peers):
            self.dist.router.rpc_cast(peer, "global.conflict", [name, winner, loser])

    def _sync_payload(self) -> dict[str, Any]:
        me = self.dist.node_id
        return {
            "names": [[name, ref] for name, ref in self.names.items() if ref.node == me],
            "conflicts": [[name, winner, loser] for (name, loser), winner in self._conflicts.items()],
        }

    def _peer_joined(self, peer: NodeId) -> None:
        self.dist.router.rpc_cast(peer, "global.sync", self._sync_payload())

    def _peer_left(self, peer: NodeId, reason: str) -> None:
        for name, ref in list(self.names.items()):
            if ref.node == peer:
                del self.names[name]
                self.node.events.emit("global_unregistered", name=name, ref=ref, reason="nodedown")
        for name, lock in list(self._locks.items()):
            for waiter in [w for w in lock.waiters if w.peer == peer]:
                self._release(name, waiter.claim)
            if lock.holder == peer and lock.claim is not None:
                self._release(name, lock.claim)
        self._conflicts = {k: w for k, w in self._conflicts.items() if k[1].node != peer and w.node != peer}

    def _process_exited(self, proc: Process, reason: ExitReason) -> None:
        ref = self.full_ref(proc.ref)
        names = [n for n, r in self.names.items() if r == ref]
        for name in names:
            del self.names[name]
            self.node.events.emit("global_unregistered", name=name, ref=ref, reason=reason)
            for peer in list(self.dist.membership.peers):
                self.dist.router.rpc_cast(peer, "global.drop", [name, ref])


def _rank(ref: ProcessRef) -> tuple[Any, ...]:
    assert ref.node is not None
    return (ref.node, ref.creation, ref.id)


_UNREACHABLE: Any = object()


def _registry() -> GlobalNames:
    from .cluster import _dist

    dist = _dist(current_node())
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
