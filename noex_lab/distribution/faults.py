"""Fault injection inside the transport: network cuts, one-way cuts, slow and lossy links.

Used by tests, tutorials and `%noex partition`. The rules of a node are about its peers and are
applied where its traffic leaves and enters it (the connection, the transport's dials and
accepts, the liveness thread), so a rule on one node is enough to cut or shape a link.

The model (docs/concepts/cluster.md, "Fault injection"):

* A **cut** (`drop`) in mode ``"blackhole"`` (the default) behaves like a pulled cable: nothing
  crosses and nothing tells either side. Frames to a cut peer are *held*, not sent (and not
  dropped: TCP would retransmit them), frames from it are held unread, heartbeats are lost, and
  no new connection to or from it completes. Both sides find out only through the heartbeat
  timeout; the connection is then closed locally with no byte sent (its socket is kept open,
  "parked", until the heal, when it is closed: the peer learns then, as TCP's next segment would
  tell it). A cut that heals before the timeout loses nothing: held frames go out in order.
  ``direction="out"`` cuts what this node sends, ``"in"`` what it receives (a one-way partition).
* Mode ``"reset"`` closes the connections to the peer at once (both sides see
  ``connection_closed``) and refuses new ones until the heal.
* A **link** rule (`link`) shapes what this node sends to a peer: each write of the TCP stream
  is delayed by ``latency + uniform(0, jitter)``, never overtaking an earlier one (per-link
  FIFO), and a fraction ``loss`` of the writes waits one retransmission timeout more
  (``max(RETRANSMIT_S, 3 * latency)``), holding up what follows, as TCP does; a fraction ``loss``
  of the heartbeats (UDP) is lost, and the others are delayed by ``latency + uniform(0, jitter)``
  too (the liveness thread holds them; jitter may reorder them, and the receiver drops a late
  older one, as it would a reordered datagram): a link slower than the heartbeat timeout is
  detected as down, as a real one would be.

Rules are read by the event-loop side and by the liveness thread, so every read and write
takes a lock; `active` is read without it on the hot path (false: no rule, nothing to check).
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from ..core.errors import InvalidArgumentError, NotPermittedError
from ..core.node_id import NodeId
from .service import Operation, Service

if TYPE_CHECKING:
    from ..core.node import Node

DIRECTIONS = ("both", "out", "in")
MODES = ("blackhole", "reset")
RETRANSMIT_S = 0.2  # Linux's minimum TCP retransmission timeout
HOLD_POLL_S = 0.02  # how often held traffic checks whether its cut healed
MAX_LATENCY_MS = 60_000
MAX_PARKED = 16  # parked sockets per peer (a peer redialing through a long cut parks one per attempt)
OP = "faults.set"  # the remote operation that sets a node's rules from a peer (FaultService)


@dataclass(frozen=True)
class LinkRule:
    """How this node's traffic to one peer is shaped."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0


class Faults:
    """Per-node fault rules towards chosen peers (all off by default)."""

    def __init__(self, seed: int | None = None, *, rng: random.Random | None = None) -> None:
        """The dice of loss and jitter: `rng` (the node's, `Entropy.new_random()`), else a
        generator seeded with `seed` (None: by the OS)."""
        self._lock = threading.Lock()
        self._out: dict[NodeId, str] = {}  # peer -> mode: what this node sends it is cut
        self._in: dict[NodeId, str] = {}  # peer -> mode: what it sends this node is cut
        self._links: dict[NodeId, LinkRule] = {}
        self._parked: dict[NodeId, list[int]] = {}  # duplicated descriptors of closed, cut connections
        self._lines = 0  # connections with frames in their delay line (see Connection)
        self._rng = rng if rng is not None else random.Random(seed)
        self._shut = False
        self.on_reset: Callable[[list[NodeId]], None] | None = None  # closes connections (the cluster sets it)
        self.on_heal: Callable[[], None] | None = None  # redials at once (the cluster sets it)
        self.active = False  # any rule set, or a delay line not empty; read without the lock on the hot path

    # ------------------------------------------------------------------ setting rules
    def drop(self, *peers: NodeId | str, direction: str = "both", mode: str = "blackhole") -> None:
        """Cut the traffic to (`"out"`), from (`"in"`) or to and from (`"both"`) these peers."""
        if direction not in DIRECTIONS:
            raise InvalidArgumentError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
        if mode not in MODES:
            raise InvalidArgumentError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        ids = _ids(peers)
        with self._lock:
            for pid in ids:
                if direction in ("both", "out"):
                    self._out[pid] = mode
                if direction in ("both", "in"):
                    self._in[pid] = mode
            self._update()
        if mode == "reset" and self.on_reset is not None and ids:
            self.on_reset(ids)

    def link(self, peer: NodeId | str, *, latency_ms: float = 0.0, jitter_ms: float = 0.0,
             loss: float = 0.0) -> None:
        """Shape what this node sends to `peer` (all zero: remove the rule); see the module doc."""
        for what, value in (("latency_ms", latency_ms), ("jitter_ms", jitter_ms)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_LATENCY_MS:
                raise InvalidArgumentError(f"{what} must be a number of milliseconds in 0..{MAX_LATENCY_MS}, "
                                           f"not {value!r}")
        if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not 0 <= loss < 1:
            raise InvalidArgumentError(f"loss must be a fraction in [0, 1), not {loss!r} (use drop() for a cut)")
        pid = _ids([peer])[0]
        with self._lock:
            if latency_ms == jitter_ms == loss == 0:
                self._links.pop(pid, None)
            else:
                self._links[pid] = LinkRule(float(latency_ms), float(jitter_ms), float(loss))
            self._update()

    def delay(self, peer: NodeId | str, seconds: float) -> None:
        """Delay every outgoing data frame to `peer` by `seconds` (order is kept): `link(latency)`."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise InvalidArgumentError(f"delay must be a number of seconds >= 0, not {seconds!r}")
        self.link(peer, latency_ms=seconds * 1000.0)

    def heal(self, *peers: NodeId | str) -> None:
        """Remove every rule about these peers (all peers when none are given); close their
        parked sockets."""
        ids = _ids(peers)
        with self._lock:
            if not peers:
                self._out.clear()
                self._in.clear()
                self._links.clear()
                parked = [fd for fds in self._parked.values() for fd in fds]
                self._parked.clear()
            else:
                parked = []
                for pid in ids:
                    self._out.pop(pid, None)
                    self._in.pop(pid, None)
                    self._links.pop(pid, None)
                    parked += self._parked.pop(pid, [])
            self._update()
        _close_all(parked)
        if self.on_heal is not None:
            self.on_heal()

    def _update(self) -> None:
        self.active = bool(self._out or self._in or self._links or self._lines)

    # ------------------------------------------------------------------ reading rules
    def is_blocked(self, peer: NodeId) -> bool:
        """Any direction is cut: no new connection to or from `peer` completes."""
        if not self.active:
            return False
        with self._lock:
            return peer in self._out or peer in self._in

    def cuts_out(self, peer: NodeId) -> bool:
        if not self.active:
            return False
        with self._lock:
            return peer in self._out

    def cuts_in(self, peer: NodeId) -> bool:
        if not self.active:
            return False
        with self._lock:
            return peer in self._in

    def blackholes(self, peer: NodeId) -> bool:
        """What this node sends `peer` is cut in blackhole mode: closing a connection to it must
        send it nothing."""
        if not self.active:
            return False
        with self._lock:
            return self._out.get(peer) == "blackhole"

    def loses_heartbeat(self, peer: NodeId) -> bool:
        """Whether the heartbeat this node is about to send to `peer` is lost (cut, or loss rate)."""
        if not self.active:
            return False
        with self._lock:
            if peer in self._out:
                return True
            rule = self._links.get(peer)
            return rule is not None and rule.loss > 0 and self._rng.random() < rule.loss

    def outgoing(self, peer: NodeId) -> tuple[bool, float]:
        """(cut, delay in seconds) for the next write to `peer`: the link's latency, a jitter
        drawn uniformly, and a retransmission timeout for a write the loss rate picks."""
        with self._lock:
            cut = peer in self._out
            rule = self._links.get(peer)
            if rule is None:
                return cut, 0.0
            rng = self._rng
            delay = (rule.latency_ms + (rng.uniform(0.0, rule.jitter_ms) if rule.jitter_ms else 0.0)) / 1000.0
            if rule.loss and rng.random() < rule.loss:
                delay += max(RETRANSMIT_S, 3 * rule.latency_ms / 1000.0)
            return cut, delay

    def heartbeat_delay(self, peer: NodeId) -> float:
        """How long the heartbeat this node is about to send `peer` travels: the link's latency
        plus a jitter drawn uniformly (0 without a rule). Its loss is `loses_heartbeat`."""
        if not self.active:
            return 0.0
        with self._lock:
            rule = self._links.get(peer)
            if rule is None:
                return 0.0
            jitter = self._rng.uniform(0.0, rule.jitter_ms) if rule.jitter_ms else 0.0
            return (rule.latency_ms + jitter) / 1000.0

    def blocked(self) -> set[NodeId]:
        """Peers cut in some direction."""
        with self._lock:
            return set(self._out) | set(self._in)

    def rules(self) -> dict[str, dict[str, Any]]:
        """Every rule, by peer id: {"out": mode, "in": mode, "latency_ms": ..., ...} (for display)."""
        with self._lock:
            out: dict[str, dict[str, Any]] = {}
            for pid, mode in self._out.items():
                out.setdefault(str(pid), {})["out"] = mode
            for pid, mode in self._in.items():
                out.setdefault(str(pid), {})["in"] = mode
            for pid, rule in self._links.items():
                out.setdefault(str(pid), {}).update(latency_ms=rule.latency_ms, jitter_ms=rule.jitter_ms,
                                                    loss=rule.loss)
            return out

    # ------------------------------------------------------------------ connections
    def line_started(self) -> None:
        """A connection queued frames in its delay line: keep `active` (the fast path off) until
        it drains, so no later frame overtakes them."""
        with self._lock:
            self._lines += 1
            self.active = True

    def line_done(self) -> None:
        with self._lock:
            self._lines -= 1
            self._update()

    def park(self, peer: NodeId, stream: anyio.abc.AnyByteStream) -> None:
        """Keep the socket under `stream` open (a duplicated descriptor) while the connection is
        closed, so closing it sends nothing to `peer`; the heal closes it."""
        try:
            sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            fd = os.dup(sock.fileno())
        except Exception:  # not a socket stream (tests), or already closed: nothing to keep
            return
        with self._lock:
            if not self._shut:
                fds = self._parked.setdefault(peer, [])
                fds.append(fd)
                if len(fds) <= MAX_PARKED:
                    return
                fd = fds.pop(0)  # the oldest: a dial the peer gave up on long ago
        _close_all([fd])

    def shutdown(self) -> None:
        """The node stops: close the parked sockets (peers learn now) and park no more."""
        with self._lock:
            self._shut = True
            parked = [fd for fds in self._parked.values() for fd in fds]
            self._parked.clear()
        _close_all(parked)

    def parked(self) -> int:
        with self._lock:
            return sum(len(fds) for fds in self._parked.values())


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _ids(peers: Iterable[NodeId | str]) -> list[NodeId]:
    out = []
    for peer in peers:
        if isinstance(peer, NodeId):
            out.append(peer)
            continue
        try:
            out.append(NodeId.parse(peer))
        except (ValueError, TypeError) as exc:
            raise InvalidArgumentError(f"bad node id {peer!r}: {exc} (expected name@host:port)") from None
    return out


def _faults_of(node: Any) -> Faults:
    faults = getattr(node, "faults", None)
    if not isinstance(faults, Faults):
        raise InvalidArgumentError(f"{node!r} is not distributed; it has no fault rules (call Cluster.start first)")
    return faults


def _node_id(node: Any) -> NodeId:
    node_id = getattr(node, "id", None)
    if not isinstance(node_id, NodeId):
        raise InvalidArgumentError(f"{node!r} is not a cluster node")
    return node_id


def partition(side_a: Iterable[Any], side_b: Iterable[Any], *, mode: str = "blackhole",
              one_way: bool = False) -> None:
    """Cut every link between the nodes of `side_a` and those of `side_b` (in this process).
    `one_way=True` cuts only what `side_a` sends to `side_b` (`side_b` stops hearing `side_a`)."""
    a, b = list(side_a), list(side_b)
    if mode not in MODES:
        raise InvalidArgumentError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    for x in a:
        _faults_of(x).drop(*[_node_id(y) for y in b], direction="out" if one_way else "both", mode=mode)
    for y in b:
        _faults_of(y).drop(*[_node_id(x) for x in a], direction="in" if one_way else "both", mode=mode)


def shape(a: Any, b: Any, *, latency_ms: float = 0.0, jitter_ms: float = 0.0, loss: float = 0.0) -> None:
    """Shape the link between in-process nodes `a` and `b` in both directions (see `Faults.link`)."""
    _faults_of(a).link(_node_id(b), latency_ms=latency_ms, jitter_ms=jitter_ms, loss=loss)
    _faults_of(b).link(_node_id(a), latency_ms=latency_ms, jitter_ms=jitter_ms, loss=loss)


def heal(*nodes: Any) -> None:
    """Remove every fault rule on these nodes."""
    for node in nodes:
        _faults_of(node).heal()


# ---------------------------------------------------------------------- the remote operation
class FaultService(Service):
    """`faults.set`: a peer sets this node's rules, refused unless `allow_fault_injection`."""

    namespace = "faults"

    def __init__(self, faults: Faults, me: NodeId, allowed: bool) -> None:
        self.faults = faults
        self.me = me
        self.allowed = allowed

    def operations(self) -> Mapping[str, Operation]:
        return {"set": self.set}

    def set(self, peer: NodeId, args: Any) -> Any:
        return handle_request(self.allowed, self.me, self.faults, peer, args)


def handle_request(allowed: bool, me: NodeId, faults: Faults, peer: NodeId, args: Any) -> Any:
    """`faults.set [op, ...]` from an authenticated peer, refused unless this node allows it.

    ops: ``["drop", [ids], direction, mode]``, ``["link", id, latency_ms, jitter_ms, loss]``,
    ``["heal", [ids]]`` (no ids: every rule), ``["rules"]`` -> `Faults.rules()`."""
    if not allowed:
        raise NotPermittedError(
            f"node {me} does not allow fault injection (asked by {peer}); start it with "
            "--allow-fault-injection (Cluster.start(..., allow_fault_injection=True))"
        )
    if not isinstance(args, list) or not args or not isinstance(args[0], str):
        raise InvalidArgumentError("malformed fault request: expected [op, ...]")
    op = args[0]
    if op == "drop" and len(args) == 4 and isinstance(args[1], list):
        faults.drop(*_strings(args[1]), direction=args[2], mode=args[3])
    elif op == "link" and len(args) == 5 and isinstance(args[1], str):
        faults.link(args[1], latency_ms=args[2], jitter_ms=args[3], loss=args[4])
    elif op == "heal" and len(args) == 2 and isinstance(args[1], list):
        faults.heal(*_strings(args[1]))
    elif op == "rules" and len(args) == 1:
        return faults.rules()
    else:
        raise InvalidArgumentError(f"unknown or malformed fault request {op[:40]!r}")
    return None


def _strings(values: list[Any]) -> list[str]:
    if not all(isinstance(v, str) for v in values) or len(values) > 4096:
        raise InvalidArgumentError("malformed fault request: node ids must be strings")
    return values


class FaultControl:
    """The fault rules of one node, in this process or another one, behind one async interface.

    A `Node` of this process is changed directly; a node id is asked through the remote operation
    `faults.set` from `via` (the current node by default), which that node refuses with
    `NotPermittedError` unless it was started with `allow_fault_injection=True`
    (`noex-lab node --allow-fault-injection`)."""

    def __init__(self, target: Node | NodeId | str, via: Node | None = None, timeout: float = 5.0) -> None:
        from ..core.node import Node, current_node

        self.local: Faults | None = None
        if isinstance(target, Node):
            self.local = _faults_of(target)
            self.id = _node_id(target)
            return
        self.id = _ids([target])[0]
        self.via = via or current_node()
        if self.via.id == self.id:
            self.local = _faults_of(self.via)
        self.timeout = timeout

    async def _ask(self, args: list[Any]) -> Any:
        router = getattr(self.via, "router", None)
        conns = getattr(router, "conns", None)
        if router is None or conns is None:
            raise InvalidArgumentError(f"node {self.via.display_name} is not distributed; it cannot reach {self.id}")
        # right after a heal the link may still be redialing: wait for it within the timeout
        with anyio.move_on_after(self.timeout):
            while self.id not in conns:
                await anyio.sleep(HOLD_POLL_S)
        return await router.rpc(self.id, OP, args, self.timeout)

    async def drop(self, *peers: NodeId | str, direction: str = "both", mode: str = "blackhole") -> None:
        if self.local is not None:
            self.local.drop(*peers, direction=direction, mode=mode)
        else:
            await self._ask(["drop", [str(p) for p in _ids(peers)], direction, mode])

    async def link(self, peer: NodeId | str, *, latency_ms: float = 0.0, jitter_ms: float = 0.0,
                   loss: float = 0.0) -> None:
        if self.local is not None:
            self.local.link(peer, latency_ms=latency_ms, jitter_ms=jitter_ms, loss=loss)
        else:
            await self._ask(["link", str(_ids([peer])[0]), latency_ms, jitter_ms, loss])

    async def heal(self, *peers: NodeId | str) -> None:
        if self.local is not None:
            self.local.heal(*peers)
        else:
            await self._ask(["heal", [str(p) for p in _ids(peers)]])

    async def rules(self) -> dict[str, dict[str, Any]]:
        if self.local is not None:
            return self.local.rules()
        result = await self._ask(["rules"])
        return result if isinstance(result, dict) else {}


async def partition_nodes(side_a: Iterable[Node | NodeId | str], side_b: Iterable[Node | NodeId | str], *,
                          mode: str = "blackhole", one_way: bool = False, via: Node | None = None) -> list[NodeId]:
    """`partition` for nodes of this process or node processes (by id, through `via`).

    A pair that includes `via` itself is cut by `via`'s own rules only (so it can still heal
    the other nodes); any other pair by rules on both ends. Returns the nodes given rules.
    `one_way=True` cuts only what `side_a` sends to `side_b`."""
    from ..core.node import current_node

    if mode not in MODES:
        raise InvalidArgumentError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    via = via or current_node()
    a = [FaultControl(x, via) for x in side_a]
    b = [FaultControl(y, via) for y in side_b]
    if not a or not b:
        raise InvalidArgumentError("a partition needs a node on each side")
    if {x.id for x in a} & {y.id for y in b}:
        raise InvalidArgumentError("a node cannot be on both sides of a partition")
    plan: dict[NodeId, tuple[FaultControl, dict[str, list[NodeId]]]] = {}

    def rule(on: FaultControl, peer: NodeId, direction: str) -> None:
        plan.setdefault(on.id, (on, {}))[1].setdefault(direction, []).append(peer)

    for x in a:
        for y in b:
            if x.id == via.id:
                rule(x, y.id, "out" if one_way else "both")
            elif y.id == via.id:
                rule(y, x.id, "in" if one_way else "both")
            else:
                rule(x, y.id, "out" if one_way else "both")
                rule(y, x.id, "in" if one_way else "both")
    # others first: once `via` cuts itself off, it could not reach them any more
    for control, by_direction in sorted(plan.values(), key=lambda item: item[0].id == via.id):
        for direction, peers in by_direction.items():
            await control.drop(*peers, direction=direction, mode=mode)
    return sorted(plan)


async def heal_nodes(*targets: Node | NodeId | str, via: Node | None = None) -> None:
    """Remove every rule of these nodes (this process's directly, others through `via`);
    `via` heals itself first, so it can reach the others again."""
    from ..core.node import current_node

    via = via or current_node()
    controls = [FaultControl(t, via) for t in targets]
    for control in sorted(controls, key=lambda c: c.id != via.id):
        await control.heal()
