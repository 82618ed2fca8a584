"""The invariant checkers of a simulation, and the small workload that gives them something to check.

Every node runs a probe (a GenServer registered locally as `sim_probe`) and a driver task that
casts numbered messages to every peer's probe, calls one peer at a time with a timeout, monitors
each peer's probe, and tries to register the global name `sim_leader` for its probe. From what
they observe the checker verifies, on every run:

* per-pair FIFO and no loss while a connection is up: the messages one connection carried reach
  the probe numbered consecutively (a connection may lose only its tail, when it breaks);
* every monitor fires at most once, and exactly once when its target's node died or left while
  the watcher lived (checked after stabilisation);
* every call ends within its timeout (plus the runtime's documented slack);
* after stabilisation: one owner for `sim_leader`, the same on every node, and that process is alive;
* under a fencing partition policy, at every instant (at the end of each simulated instant with a
  node event, and every 10 simulated ms): at most one live process answers for `sim_leader` (named
  by a node that is up, unpaused and unfenced, and running on such a node);
* after stabilisation: each child of the `DistributedSupervisor` that the first node starts (three
  workers, round-robin over the cluster) runs exactly once in the cluster while a supervisor of
  its name lives on any live node (the original or a takeover), and not at all once none does
  (it stopped or gave up, stopping its children; a lost node's supervisor is taken over);
* membership converges within a bound after the last fault (`Simulation.stabilise`);
* after stabilisation: every node sees the process group of the probes as exactly the live probes;
* no node reports an "error" event (a failure in background work, a broken callback).
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from ..core.errors import NoexError
from ..core.genserver import GenServer
from ..core.messages import Down
from ..core.node_id import NodeId
from ..core.refs import ProcessRef
from ..distribution.attached import distribution_of, require_distribution
from ..distribution.behaviors import BehaviorRegistry
from ..distribution.distributed_supervisor import DistributedSupervisor
from ..distribution.groups import Group

if TYPE_CHECKING:
    from ..distribution.cluster import Distribution
    from .network import Host
    from .simulation import Simulation

__all__ = ["Checker", "Violation"]

PROBE = "sim_probe"
GROUP = "sim_group"
LEADER = "sim_leader"
CAST_EVERY_S = 0.05
CALL_EVERY_S = 0.25
CALL_TIMEOUT_S = 1.0
CALL_SLACK_S = 0.05  # a timeout fires up to 1 % (at most 20 ms) late, never early (core/_backend.py)
WORKER = "sim_worker"
WORKERS = ("w1", "w2", "w3")
OWNER_EVERY_S = 0.01  # the single-owner check under a fencing policy also samples this often
# ... and runs this long after a node event: once the instant's other callbacks ran (those of one
# simulated instant happen at once; their order within it is the single thread's, not the cluster's)
OWNER_AFTER_S = 1e-6
# node events after which the owners of `sim_leader` may have changed (checked once the event's callback ends)
OWNER_EVENTS = frozenset({"global_registered", "global_unregistered", "global_conflict", "process_exited",
                          "node_fenced", "node_unfenced", "node_up", "node_down"})


@dataclass(frozen=True)
class Violation:
    """One broken invariant, at simulated time `at`."""

    at: float
    text: str

    def __str__(self) -> str:
        return f"t={self.at:.6f}: {self.text}"


class Probe(GenServer):
    """Receives the numbered casts and answers pings; reports to the checker directly (one process)."""

    def init(self, arg: Any) -> Any:
        return arg  # (checker, host)

    def handle_cast(self, msg: Any, state: Any) -> Any:
        checker, host = state
        checker.received(host, msg)
        return state

    def handle_call(self, msg: Any, state: Any) -> Any:
        return "pong", state


class Worker(GenServer):
    """A DistributedSupervisor child: notes where it runs in the checker (`arg` = its child id)."""

    def init(self, arg: Any) -> Any:
        checker = Checker.current
        if checker is not None:
            checker.worker_started(arg, self.node, self.ref)
        return arg


BehaviorRegistry.register(WORKER, Worker)


@dataclass
class _Monitor:
    watcher: tuple[int, int]  # (host index, epoch)
    target: tuple[int, int]
    fired: int = 0


class Checker:
    """Collects observations during a run and judges them."""

    # the newest simulation's checker: workers, started by behavior name, report here (so run one
    # simulation with probes at a time)
    current: Checker | None = None

    def __init__(self, sim: Simulation) -> None:
        Checker.current = self
        self.sim = sim
        self.workers: list[tuple[str, Any, ProcessRef]] = []  # (child id, node, ref) of every start
        self.supervisor: tuple[int, int, ProcessRef] | None = None  # (host, epoch, ref) of the original
        self.supervisor_name = ""  # its global name: a takeover keeps it (an unnamed one's "$dsup/...")
        self.probes: dict[int, ProcessRef] = {}  # host index -> its current probe
        self.found: list[Violation] = []
        self._conn_tags: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._next_tag = 0
        self._last_seq: dict[int, int] = {}
        self.monitors: list[_Monitor] = []
        self.delivered = 0
        self.calls = 0
        policy = sim.options.get("partition_policy", "none")
        self.fencing = str(getattr(policy, "kind", policy)).split(":")[0] != "none"
        self.owner_checks = 0
        self._sampler: asyncio.Task[None] | None = None
        self._owner_check_at = -1.0
        self._owner_conflicts: set[frozenset[str]] = set()

    def violate(self, text: str) -> None:
        violation = Violation(self.sim.now, text)
        self.found.append(violation)
        self.sim.record(f"VIOLATION {text}")

    # ------------------------------------------------------------------ the workload
    async def start_probe(self, host: Host) -> None:
        node = host.node
        assert node is not None
        with node.as_default():
            ref = await GenServer.start(Probe, (self, host), name=PROBE)
            Group.join(GROUP, ref)
        self.probes[host.index] = ref
        node.spawn_task(self._drive, host, host.epoch, what="simulation probe driver")
        if host.index == 0 and host.epoch == 0:
            node.spawn_task(self._start_supervisor, host, what="simulation supervisor")
        if self.fencing:
            node.events.subscribe(self._owner_event)
            if host.index == 0 and host.epoch == 0:  # (a task of the loop, not of a node: it outlives crashes)
                self._sampler = asyncio.get_running_loop().create_task(self._sample_owners())

    # ------------------------------------------------------------------ one owner at every instant
    def _owner_event(self, event: Any) -> None:
        """A node event that may change an owner: check at the end of this simulated instant."""
        if event.kind not in OWNER_EVENTS:
            return
        loop = asyncio.get_running_loop()
        at = loop.time() + OWNER_AFTER_S
        if self._owner_check_at != at:
            self._owner_check_at = at
            loop.call_at(at, self.check_owners)

    async def _sample_owners(self) -> None:
        try:
            while True:
                await asyncio.sleep(OWNER_EVERY_S)
                self.check_owners()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # (nothing vanishes: a broken check is a violation)
            self.violate(f"the single-owner check failed: {type(exc).__name__}: {exc}")

    def _answers(self, host: Host) -> bool:
        """A node that can answer for a name now: up, not paused, not fenced."""
        node = host.node
        if not host.alive or host.paused or node is None or not node.running:
            return False
        dist = distribution_of(node)
        guard = dist.partition_guard if dist is not None else None
        return dist is not None and not (guard is not None and guard.fenced)

    def check_owners(self) -> None:
        """Under a fencing policy: the live processes that nodes able to answer name as the owner
        of `sim_leader` are at most one (the losing side fences before the winning side frees the
        name; a paused node answers nobody, and must fence before it answers again)."""
        self.owner_checks += 1
        answering = [h for h in self.sim.hosts if self._answers(h)]
        by_id = {h.node_id: h for h in answering}
        owners: dict[str, list[str]] = {}
        for host in answering:
            assert host.node is not None
            dist = distribution_of(host.node)
            registry = dist.global_registry if dist is not None else None
            ref = registry.whereis(LEADER) if registry is not None else None
            owner = by_id.get(ref.node) if ref is not None and ref.node is not None else None
            if ref is None or owner is None or owner.node is None or owner.node.local_process(ref) is None:
                continue
            owners.setdefault(str(ref), []).append(host.name)
        key = frozenset(owners)
        if len(owners) > 1 and key not in self._owner_conflicts:
            self._owner_conflicts.add(key)
            self.violate(f"{len(owners)} live processes answer for {LEADER!r} at once under a fencing "
                         f"partition policy (owner: the nodes naming it): {owners}")

    async def _start_supervisor(self, host: Host) -> None:
        """Once the first node sees every other, it starts the supervisor of the workers."""
        node = host.node
        assert node is not None
        dist = require_distribution(node)
        for _ in range(1000):  # (and, under a policy, admitted: a fenced node starts no supervisor)
            if len(dist.membership.peers) >= len(self.sim.hosts) - 1 and not (
                    dist.partition_guard is not None and dist.partition_guard.fenced):
                break
            await anyio.sleep(0.01)
        children = [{"id": child, "behavior_name": WORKER, "arg": child} for child in WORKERS]
        with node.as_default():
            ref = await DistributedSupervisor.start("one_for_one", children, node_selector="round_robin",
                                                    max_restarts=1000, within_ms=1000)
        self.supervisor = (host.index, host.epoch, ref)
        store = require_distribution(node).supervisor_replicas
        assert store is not None
        self.supervisor_name = next(name for name, sup in store.local.items() if sup == ref)

    def worker_started(self, child: str, node: Any, ref: ProcessRef) -> None:
        self.workers.append((child, node, ref))
        self.sim.record(f"worker {child} started on {node.label}")
    def _tag(self, dist: Distribution, peer: NodeId) -> int:
        conn = dist.transport.conns.get(peer)
        if conn is None or conn.closed:
            return 0
        tag = self._conn_tags.get(conn)
        if tag is None:
            self._next_tag += 1
            tag = self._conn_tags[conn] = self._next_tag
        return tag

    async def _drive(self, host: Host, epoch: int) -> None:
        sim = self.sim
        node = host.node
        assert node is not None
        dist: Distribution = require_distribution(node)
        seq: dict[int, int] = {}
        watched: dict[int, _Monitor] = {}
        ticks = 0
        with node.as_default():
            while host.alive and host.epoch == epoch:
                await anyio.sleep(CAST_EVERY_S)
                ticks += 1
                peers = dist.membership.peers
                for other in sim.hosts:
                    if other is host or other.node_id not in peers:
                        continue
                    n = seq[other.index] = seq.get(other.index, 0) + 1
                    tag = self._tag(dist, other.node_id)
                    GenServer.cast((PROBE, other.node_id), ("seq", host.index, tag, n))
                    mon = watched.get(other.index)
                    if mon is None or mon.fired or mon.target[1] != other.epoch:
                        await self._monitor(host, other, watched)
                if ticks % round(CALL_EVERY_S / CAST_EVERY_S) == 0 and peers:
                    live = [h for h in sim.hosts if h is not host and h.node_id in peers]
                    if live:
                        target = live[(ticks // 5) % len(live)]
                        node.spawn_task(self._call, target, what="simulation probe call")
                if ticks % 20 == 1:
                    await self._claim_leader(dist, node)

    async def _monitor(self, host: Host, other: Host, watched: dict[int, _Monitor]) -> None:
        mon = _Monitor((host.index, host.epoch), (other.index, other.epoch))
        watched[other.index] = mon
        node = host.node
        assert node is not None

        def on_down(down: Down) -> None:
            mon.fired += 1
            if mon.fired > 1:
                self.violate(f"monitor of n{other.index + 1}'s probe by {host.name} fired {mon.fired} times")

        try:
            node.monitor((PROBE, other.node_id), None, on_down)
        except NoexError:
            watched.pop(other.index, None)
            return
        self.monitors.append(mon)

    async def _call(self, target: Host) -> None:
        start = self.sim.now
        self.calls += 1
        try:
            await GenServer.call((PROBE, target.node_id), "ping", timeout=CALL_TIMEOUT_S)
        except NoexError:
            pass
        took = self.sim.now - start
        if took > CALL_TIMEOUT_S + CALL_SLACK_S:
            self.violate(f"a call to {target.name} took {took:.3f} s, past its timeout of {CALL_TIMEOUT_S} s")

    async def _claim_leader(self, dist: Distribution, node: Any) -> None:
        registry = dist.global_registry
        if registry is None or registry.whereis(LEADER) is not None:
            return
        ref = node.names.whereis(PROBE)
        if ref is None:
            return
        try:
            await registry.register(LEADER, ref, 2.0)
        except NoexError:
            pass  # taken by another node, or not agreed in time: both are allowed

    def received(self, host: Host, msg: Any) -> None:
        _, sender, tag, n = msg
        self.delivered += 1
        self.sim.record(f"recv n{sender + 1}->{host.name} #{n}", detail=True)
        if not tag:
            return
        last = self._last_seq.get(tag)
        if last is not None and n != last + 1:
            what = "out of order" if n <= last else f"{n - last - 1} lost"
            self.violate(f"n{sender + 1}->{host.name} on one connection: #{n} after #{last} ({what})")
        self._last_seq[tag] = n

    # ------------------------------------------------------------------ the end of a run
    def final_check(self) -> list[Violation]:
        """Invariants that hold once the cluster is stable (call after `Simulation.stabilise`)."""
        sim = self.sim
        hosts = sim.hosts
        for mon in self.monitors:
            watcher, target = hosts[mon.watcher[0]], hosts[mon.target[0]]
            watcher_lives = watcher.alive and watcher.epoch == mon.watcher[1]
            target_gone = not target.alive or target.epoch != mon.target[1]
            if watcher_lives and target_gone and mon.fired != 1:
                self.violate(f"the monitor of {target.name}'s probe (epoch {mon.target[1]}) by {watcher.name} "
                             f"fired {mon.fired} times, not once, though that node is gone")
        self._check_workers()
        self._check_group()
        owners: dict[str, list[str]] = {}
        for host in hosts:
            if not host.alive or host.node is None:
                continue
            dist = distribution_of(host.node)
            registry = dist.global_registry if dist is not None else None
            ref = registry.whereis(LEADER) if registry is not None else None
            owners.setdefault(str(ref), []).append(host.name)
        if len(owners) > 1:
            self.violate(f"nodes disagree on the owner of {LEADER!r}: {owners}")
        elif owners and "None" not in owners:
            (owner_text,) = owners
            if not any(self._is_alive_probe(owner_text, h) for h in hosts if h.alive):
                self.violate(f"{LEADER!r} names {owner_text}, which is not a live process")
        return list(self.found)

    def _check_group(self) -> None:
        """Every live node's view of the probes' group is the set of live probes (each joined once)."""
        live = [h for h in self.sim.hosts if h.alive and h.node is not None]
        want = sorted(str(ref) for i, ref in self.probes.items()
                      if any(h.index == i and h.node.local_process(ref) is not None for h in live if h.node))
        for host in live:
            assert host.node is not None
            with host.node.as_default():
                have = sorted(str(ref) for ref in Group.members(GROUP))
            if have != want:
                self.violate(f"{host.name} sees the group {GROUP!r} as {have}, not {want}")

    def supervisors(self) -> list[str]:
        """The hosts where a supervisor of the workers' name runs now (the original or a takeover)."""
        where = []
        for host in self.sim.hosts:
            node = host.node
            dist = distribution_of(node) if host.alive and node is not None and node.running else None
            store = dist.supervisor_replicas if dist is not None else None
            ref = store.local.get(self.supervisor_name) if store is not None else None
            proc = node.local_process(ref) if node is not None and ref is not None else None
            if proc is not None and proc.alive:
                where.append(host.name)
        return where

    def _worker_counts(self) -> tuple[list[str], dict[str, list[str]]]:
        """Where a supervisor of the workers runs, and where each child runs."""
        running = {child: [node.label for c, node, ref in self.workers
                           if c == child and node.running and node.local_process(ref) is not None]
                   for child in WORKERS}
        return self.supervisors(), running

    def workers_settled(self) -> bool:
        """Each child runs once while a supervisor lives, none once none does (a wait condition)."""
        if self.supervisor is None:
            return True
        sups, running = self._worker_counts()
        return all(len(where) == (1 if sups else 0) for where in running.values())

    def _check_workers(self) -> None:
        """While a supervisor of the name lives anywhere (the original, or the lowest survivor's
        takeover, with a new ref), each child runs exactly once cluster-wide; when none lives (it
        stopped or gave up, which stops its children; a lost node's is taken over), none runs."""
        if self.supervisor is None:
            return
        sups, running = self._worker_counts()
        want = 1 if sups else 0
        for child, where in running.items():
            if len(where) != want:
                state = f"supervisor alive on {sups}" if sups else "supervisor gone"
                self.violate(f"supervised child {child} runs {len(where)} times ({where}), not {want} ({state})")

    @staticmethod
    def _is_alive_probe(ref_text: str, host: Host) -> bool:
        node = host.node
        if node is None:
            return False
        dist = distribution_of(node)
        registry = dist.global_registry if dist is not None else None
        ref = registry.whereis(LEADER) if registry is not None else None
        return ref is not None and str(ref) == ref_text and node.local_process(ref) is not None
