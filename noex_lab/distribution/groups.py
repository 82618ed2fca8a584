"""`Group`: process groups, with Erlang's `pg` as the reference semantics.

* A process joins any number of groups, and one group any number of times (it is then listed
  that many times and must leave as often). Groups live in *scopes*, independent namespaces
  (`scope="default"` unless given).
* Each node is the authority for its own processes: it keeps their memberships, tells every
  peer about each change (the count of one process in one group, so a message can be applied
  again harmlessly), and sends its whole local view to a peer when they connect. A node
  accepts changes only about processes of the node that sends them (a connection speaks
  only for its own node), and drops all of a peer's members when that peer goes down.
* So there are no locks and no coordinator: `members` is answered from this node's view
  without network, and views converge within one message after each change. After a
  partition heals, the reconnected nodes send each other their local views again: membership
  merges by itself.

System notifications (RPC_CAST, no reply):

- `groups.update [scope, [[group, ref, count], ...]]`: `ref` (a process of the sender) is now
  in `group` `count` times (0: not at all);
- `groups.sync [[scope, [[group, ref, count], ...]], ...]`: the sender's whole local view,
  replacing what this node had for it.
"""

from __future__ import annotations

import inspect
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain, repeat, starmap
from typing import TYPE_CHECKING, Any

from ..core.errors import InvalidArgumentError, SerializationError, ServerNotRunningError
from ..core.node import Node, current_node
from ..core.node_id import NodeId
from ..core.process import Process
from ..core.reasons import NOPROC, ExitReason
from ..core.refs import ProcessRef
from .service import Operation, Service

if TYPE_CHECKING:
    from .cluster import Distribution

DEFAULT_SCOPE = "default"
OP_UPDATE = "groups.update"
OP_SYNC = "groups.sync"
BATCH = 1000  # membership entries per update message
MAX_JOINS = 10_000  # how many times one process may be in one group (a peer's larger count is refused)
_ANY = object()  # the key of monitors of every group in a scope

GroupSink = Callable[["GroupEvent"], Any] | ProcessRef


@dataclass(frozen=True)
class GroupEvent:
    """Members joined or left a group, as this node saw it (`Group.monitor`).

    `kind` is "join" or "leave"; `members` lists each membership once (a process that joined
    twice and then exited is listed twice in the "leave" event)."""

    kind: str
    group: Any
    members: list[ProcessRef]
    scope: str = DEFAULT_SCOPE


class _Members:
    """One group's members: per node (None: this node), how many times each process joined."""

    __slots__ = ("_all", "_local", "by_node", "extra")

    def __init__(self) -> None:
        self.by_node: dict[NodeId | None, dict[ProcessRef, int]] = {}
        self.extra: dict[ProcessRef, int] = {}  # refs that joined more than once: how many more times
        self._all: tuple[ProcessRef, ...] | None = None
        self._local: tuple[ProcessRef, ...] | None = None

    def count(self, key: NodeId | None, ref: ProcessRef) -> int:
        counts = self.by_node.get(key)
        return counts.get(ref, 0) if counts is not None else 0

    def set(self, key: NodeId | None, ref: ProcessRef, count: int) -> None:
        counts = self.by_node.get(key)
        if count:
            if counts is None:
                counts = self.by_node[key] = {}
            counts[ref] = count
        elif counts is not None:
            counts.pop(ref, None)
            if not counts:
                del self.by_node[key]
        if count > 1:
            self.extra[ref] = count - 1
        elif self.extra:
            self.extra.pop(ref, None)
        self._all = None
        if key is None:
            self._local = None

    def drop(self, key: NodeId | None) -> list[ProcessRef]:
        """Remove every member of node `key`; returns them (each as often as it had joined)."""
        counts = self.by_node.pop(key, None)
        if counts is None:
            return []
        if self.extra:
            for ref in counts:
                self.extra.pop(ref, None)
        self._all = None
        return _expand(counts)

    def all(self) -> tuple[ProcessRef, ...]:
        """Built once per change, in C (the dicts' keys, then the repeats: no Python loop over
        10,000 members); each call then copies a tuple."""
        if self._all is None:
            self._all = tuple(chain(chain.from_iterable(self.by_node.values()), _each(self.extra)))
        return self._all

    def local(self) -> tuple[ProcessRef, ...]:
        if self._local is None:
            self._local = tuple(_expand(self.by_node.get(None, {})))
        return self._local


def _each(counts: dict[ProcessRef, int]) -> Iterator[ProcessRef]:
    """Each ref as many times as it joined."""
    return chain.from_iterable(starmap(repeat, counts.items()))


def _expand(counts: dict[ProcessRef, int]) -> list[ProcessRef]:
    return list(_each(counts))


def check_group(group: Any) -> None:
    """A group name is a string, an int or a tuple of those: a hashable value that travels."""
    if type(group) is str or (type(group) is int):
        return
    if type(group) is tuple and group and all(_is_group_part(part) for part in group):
        return
    raise InvalidArgumentError(
        f"a group name is a string, an int or a tuple of those (e.g. ('room', 42)), not {group!r}"
    )


def _is_group_part(part: Any) -> bool:
    if type(part) is str or type(part) is int:
        return True
    return type(part) is tuple and all(_is_group_part(p) for p in part)


def check_scope(scope: Any) -> None:
    if type(scope) is not str or not scope:
        raise InvalidArgumentError(f"a scope is a non-empty string, not {scope!r}")


class Groups(Service):
    """The groups of one node: its view of every scope, its local memberships, the protocol (the
    `groups` operations). It exists before the node is distributed (local groups work without a
    cluster); `attach` connects it when the node joins one."""

    namespace = "groups"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.dist: Distribution | None = None
        self.scopes: dict[str, dict[Any, _Members]] = {}
        self.local: dict[ProcessRef, dict[tuple[str, Any], int]] = {}  # this node's processes' memberships
        self.peer_keys: dict[NodeId, set[tuple[str, Any]]] = {}  # (scope, group)s where a peer has members
        self.monitors: dict[tuple[str, Any], list[GroupSink]] = {}
        self.process_sinks: dict[ProcessRef, int] = {}  # local processes that monitor, and how often
        node.exit_hooks.append(self._process_exited)

    def attach(self, dist: Distribution) -> None:
        """The node became distributed: local refs get its id, and peers hear about changes."""
        self.dist = dist
        full = self._full
        if any(ref.node is None for ref in self.local):
            self.local = {full(ref): keys for ref, keys in self.local.items()}
            for (scope, group) in {key for keys in self.local.values() for key in keys}:
                members = self.scopes[scope][group]
                counts = members.by_node.pop(None, {})
                for ref, n in counts.items():
                    members.set(None, full(ref), n)

    def operations(self) -> Mapping[str, Operation]:
        return {"update": self._on_update, "sync": self._on_sync}

    def _full(self, ref: ProcessRef) -> ProcessRef:
        node_id = self.dist.node_id if self.dist is not None else None  # (set before node.id is)
        if ref.node is None and node_id is not None:
            return ProcessRef(node_id, ref.id, ref.creation)
        return ref

    # ------------------------------------------------------------------ API
    def join(self, scope: str, group: Any, refs: list[ProcessRef]) -> None:
        check_scope(scope)
        check_group(group)
        refs = [self._local_ref(ref, "join") for ref in refs]
        key = (scope, group)
        for ref, times in Counter(refs).items():
            keys = self.local.get(ref)
            if (keys.get(key, 0) if keys is not None else 0) + times > MAX_JOINS:
                raise InvalidArgumentError(f"{ref} would be in group {group!r} more than {MAX_JOINS} times")
        members = self.scopes.setdefault(scope, {}).get(group)
        if members is None:
            members = self.scopes[scope][group] = _Members()
        entries: list[list[Any]] = []
        for ref in refs:
            keys = self.local.setdefault(ref, {})
            count = keys.get(key, 0) + 1
            keys[key] = count
            members.set(None, ref, count)
            entries.append([group, ref, count])
        if entries:
            self._notify(scope, group, "join", refs)
            self._broadcast(scope, entries)

    def leave(self, scope: str, group: Any, refs: list[ProcessRef]) -> bool:
        check_scope(scope)
        check_group(group)
        refs = [self._local_ref(ref, "leave", alive=False) for ref in refs]
        key = (scope, group)
        members = self.scopes.get(scope, {}).get(group)
        left: list[ProcessRef] = []
        entries: list[list[Any]] = []
        for ref in refs:
            keys = self.local.get(ref)
            count = keys.get(key, 0) if keys is not None else 0
            if keys is None or members is None or not count:
                continue
            count -= 1
            if count:
                keys[key] = count
            else:
                del keys[key]
                if not keys:
                    del self.local[ref]
            members.set(None, ref, count)
            entries.append([group, ref, count])
            left.append(ref)
        if members is not None and not members.by_node:
            del self.scopes[scope][group]
        if left:
            self._notify(scope, group, "leave", left)
            self._broadcast(scope, entries)
        return bool(left)

    def members(self, scope: str, group: Any) -> list[ProcessRef]:
        members = self.scopes.get(scope, {}).get(group)
        return list(members.all()) if members is not None else []

    def local_members(self, scope: str, group: Any) -> list[ProcessRef]:
        members = self.scopes.get(scope, {}).get(group)
        return list(members.local()) if members is not None else []

    def which_groups(self, scope: str) -> list[Any]:
        return list(self.scopes.get(scope, {}))

    def monitor(self, scope: str, group: Any, sink: GroupSink) -> Callable[[], None]:
        check_scope(scope)
        if group is not None:
            check_group(group)
        if isinstance(sink, ProcessRef):
            sink = self._local_ref(sink, "monitor a group")
            self.process_sinks[sink] = self.process_sinks.get(sink, 0) + 1
        elif not callable(sink):
            raise InvalidArgumentError(f"Group.monitor takes a callback or a local ProcessRef, not {sink!r}")
        key = (scope, _ANY if group is None else group)
        self.monitors.setdefault(key, []).append(sink)

        def unsubscribe() -> None:
            sinks = self.monitors.get(key)
            if sinks is not None and sink in sinks:
                sinks.remove(sink)
                if not sinks:
                    del self.monitors[key]
                if isinstance(sink, ProcessRef):
                    self._forget_sink(sink)

        return unsubscribe

    # ------------------------------------------------------------------ local bookkeeping
    def _local_ref(self, ref: Any, what: str, alive: bool = True) -> ProcessRef:
        if not isinstance(ref, ProcessRef):
            raise InvalidArgumentError(f"Group.{what.split()[0]} takes ProcessRefs, not {ref!r}")
        if not self.node.is_local(ref):
            raise InvalidArgumentError(
                f"only a process of this node can {what} here; {ref} runs on {ref.node}: do it on that node "
                "(for instance in the process's init, or with Rpc.call)"
            )
        if alive:
            proc = self.node.local_process(ref)
            if proc is None or not proc.alive:
                raise ServerNotRunningError(ref, NOPROC)
        return self._full(ref)

    def _forget_sink(self, ref: ProcessRef) -> None:
        left = self.process_sinks.get(ref, 0) - 1
        if left > 0:
            self.process_sinks[ref] = left
        else:
            self.process_sinks.pop(ref, None)

    def _process_exited(self, proc: Process, reason: ExitReason) -> None:
        if not self.local and not self.process_sinks:
            return
        ref = self._full(proc.ref)
        if ref in self.process_sinks:
            del self.process_sinks[ref]
            for key, sinks in list(self.monitors.items()):
                sinks[:] = [s for s in sinks if s != ref]
                if not sinks:
                    del self.monitors[key]
        keys = self.local.pop(ref, None)
        if not keys:
            return
        by_scope: dict[str, list[list[Any]]] = {}
        for (scope, group), count in keys.items():
            groups = self.scopes[scope]
            members = groups[group]
            members.set(None, ref, 0)
            if not members.by_node:
                del groups[group]
            by_scope.setdefault(scope, []).append([group, ref, 0])
            self._notify(scope, group, "leave", [ref] * count)
        for scope, entries in by_scope.items():
            self._broadcast(scope, entries)

    def _notify(self, scope: str, group: Any, kind: str, refs: list[ProcessRef]) -> None:
        sinks = self.monitors.get((scope, group))
        every = self.monitors.get((scope, _ANY))
        if sinks is None and every is None:
            return
        event = GroupEvent(kind, group, refs, scope)
        node = self.node
        for sink in [*(sinks or ()), *(every or ())]:
            if isinstance(sink, ProcessRef):
                node.send(sink, event)
                continue
            try:
                result = sink(event)
                if inspect.isawaitable(result):
                    node.run_callback_result(result, f"Group.monitor callback {sink!r}")
            except Exception as exc:
                node.events.report_error(f"Group.monitor callback {sink!r} raised", exc)

    # ------------------------------------------------------------------ talking to peers
    def _broadcast(self, scope: str, entries: list[list[Any]]) -> None:
        dist = self.dist
        if dist is None or dist.stopping:
            return
        router = dist.router
        for peer in list(dist.membership.peers):
            for start in range(0, len(entries), BATCH):
                router.rpc_cast(peer, OP_UPDATE, [scope, entries[start:start + BATCH]])

    def _local_view(self) -> list[list[Any]]:
        view: dict[str, list[list[Any]]] = {}
        for ref, keys in self.local.items():
            for (scope, group), count in keys.items():
                view.setdefault(scope, []).append([group, ref, count])
        return [[scope, entries] for scope, entries in view.items()]

    def peer_joined(self, peer: NodeId) -> None:
        assert self.dist is not None
        try:
            self.dist.router.rpc_cast(peer, OP_SYNC, self._local_view())
        except SerializationError as exc:
            raise SerializationError(
                f"this node's group memberships do not fit in one message to {peer} ({exc}); "
                "raise max_message_bytes or use fewer memberships per node"
            ) from None

    def peer_left(self, peer: NodeId, reason: str) -> None:
        for scope, group in self.peer_keys.pop(peer, ()):
            groups = self.scopes.get(scope, {})
            members = groups.get(group)
            if members is None:
                continue
            gone = members.drop(peer)
            if not members.by_node:
                del groups[group]
            if gone:
                self._notify(scope, group, "leave", gone)

    def _peer_incarnation(self, peer: NodeId) -> int | None:
        state = self.dist.membership.peers.get(peer) if self.dist is not None else None
        return state.conn.peer_incarnation if state is not None else None

    def _on_update(self, peer: NodeId, args: Any) -> None:
        scope, entries = args
        self._apply(peer, scope, entries)

    def _on_sync(self, peer: NodeId, args: Any) -> None:
        """Replace this node's view of `peer` by the view it sent: what it no longer lists leaves."""
        sent: dict[str, list[Any]] = {}
        for item in args:
            scope, entries = item
            if type(scope) is str and isinstance(entries, list):
                sent.setdefault(scope, []).extend(entries)
        listed = {(scope, e[0], e[1]) for scope, entries in sent.items() for e in entries
                  if isinstance(e, list) and len(e) == 3 and _hashable(e[0])}
        for scope, group in list(self.peer_keys.get(peer, ())):
            members = self.scopes.get(scope, {}).get(group)
            counts = members.by_node.get(peer, {}) if members is not None else {}
            stale = [[group, ref, 0] for ref in counts if (scope, group, ref) not in listed]
            if stale:
                sent.setdefault(scope, []).extend(stale)
        for scope, entries in sent.items():
            self._apply(peer, scope, entries)

    def _apply(self, peer: NodeId, scope: Any, entries: Any) -> None:
        """Apply a peer's counts; only about its own processes (of its current incarnation)."""
        if type(scope) is not str or not scope or not isinstance(entries, list):
            return
        incarnation = self._peer_incarnation(peer)
        if incarnation is None:
            return
        groups = self.scopes.setdefault(scope, {})
        keys = self.peer_keys.setdefault(peer, set())
        joined: dict[Any, list[ProcessRef]] = {}
        left: dict[Any, list[ProcessRef]] = {}
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 3):
                continue
            group, ref, count = entry
            if (not isinstance(ref, ProcessRef) or ref.node != peer or ref.creation != incarnation
                    or type(count) is not int or not 0 <= count <= MAX_JOINS):
                continue
            try:
                check_group(group)
            except InvalidArgumentError:
                continue
            members = groups.get(group)
            if members is None:
                if not count:
                    continue
                members = groups[group] = _Members()
            old = members.count(peer, ref)
            if old == count:
                continue
            members.set(peer, ref, count)
            if count > old:
                keys.add((scope, group))
                joined.setdefault(group, []).extend([ref] * (count - old))
            else:
                left.setdefault(group, []).extend([ref] * (old - count))
                if peer not in members.by_node:
                    keys.discard((scope, group))
                if not members.by_node:
                    del groups[group]
        if not groups:
            del self.scopes[scope]
        for group, refs in left.items():
            self._notify(scope, group, "leave", refs)
        for group, refs in joined.items():
            self._notify(scope, group, "join", refs)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


_services: weakref.WeakKeyDictionary[Node, Groups] = weakref.WeakKeyDictionary()


def groups_of(node: Node) -> Groups:
    """The groups of `node` (created on first use; a node need not be distributed)."""
    service = _services.get(node)
    if service is None:
        service = _services[node] = Groups(node)
    return service


def _refs(ref: ProcessRef | Iterable[ProcessRef]) -> list[ProcessRef]:
    if isinstance(ref, ProcessRef):
        return [ref]
    if isinstance(ref, (list, tuple, set, frozenset)):
        return list(ref)
    raise InvalidArgumentError(f"Group.join and Group.leave take a ProcessRef or a list of them, not {ref!r}")


class Group:
    """Process groups (Erlang `pg`): named sets of processes across the cluster.

    Every call acts on the current node; a node need not be distributed (its groups are then
    its own). `group` is a string, an int or a tuple of those; `scope` an independent
    namespace of groups."""

    @staticmethod
    def join(group: Any, ref: ProcessRef | Iterable[ProcessRef], *, scope: str = DEFAULT_SCOPE) -> None:
        """Add a process of this node (or each of a list) to `group`, once more each time.
        `ServerNotRunningError` if one is not running; `InvalidArgumentError` for a process
        of another node (join it there)."""
        groups_of(current_node()).join(scope, group, _refs(ref))

    @staticmethod
    def leave(group: Any, ref: ProcessRef | Iterable[ProcessRef], *, scope: str = DEFAULT_SCOPE) -> bool:
        """Remove one membership of the process (of each of a list); False if none was in it."""
        return groups_of(current_node()).leave(scope, group, _refs(ref))

    @staticmethod
    def members(group: Any, *, scope: str = DEFAULT_SCOPE) -> list[ProcessRef]:
        """Every member on every node, from this node's view (no network): a process is
        listed once per join. Empty for a group nobody is in."""
        return groups_of(current_node()).members(scope, group)

    @staticmethod
    def local_members(group: Any, *, scope: str = DEFAULT_SCOPE) -> list[ProcessRef]:
        """The members that run on this node."""
        return groups_of(current_node()).local_members(scope, group)

    @staticmethod
    def which_groups(*, scope: str = DEFAULT_SCOPE) -> list[Any]:
        """The groups with at least one member anywhere, as this node sees them."""
        return groups_of(current_node()).which_groups(scope)

    @staticmethod
    def monitor(group: Any, callback: GroupSink, *, scope: str = DEFAULT_SCOPE) -> Callable[[], None]:
        """Report every join and leave of `group` (of every group of the scope when `group`
        is None) as a `GroupEvent`: `callback(event)` (sync or async), or, when `callback` is
        a ProcessRef of this node, a message to its `handle_info` (until it exits). Returns
        an unsubscribe function; read `Group.members` right after to know where it starts."""
        return groups_of(current_node()).monitor(scope, group, callback)
