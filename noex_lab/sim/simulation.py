"""`Simulation`: N nodes of the real runtime in one thread, on a virtual clock, with seeded faults.

Each node is a real `Node` with a real `Distribution` (transport, handshake, codec, connections,
membership, global names, groups, ...), built with a `SimEnvironment` instead of sockets and the
liveness thread. Everything random comes from the seed, so a seed and a scenario give one trace,
bit for bit, and `Simulation.replay` reruns it (stopping at a simulated instant on request).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import random
import re
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from ..core.clock import Entropy
from ..core.errors import NoexError, WaitTimeoutError
from ..core.events import NodeEvent
from ..core.node import Node
from ..distribution.cluster import ClusterConfig, Distribution
from .invariants import Checker, Violation
from .loop import VirtualTimeLoop, virtual_clock
from .network import Host, SimEnvironment, SimNetwork

__all__ = ["ReplayStopped", "Simulation", "SimulationFailure"]

T = TypeVar("T")
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")
BASE_PORT = 7001
SUPERVISOR_SETTLE_S = 15.0  # more than a remote spawn's timeout (10 s)


class SimulationFailure(NoexError, AssertionError):
    """An invariant was violated; the message has the seed, the scenario and the trace's end."""

    def __init__(self, seed: int, scenario: str, violations: list[Violation], trace: list[str]) -> None:
        lines = [f"simulation failed: seed={seed} scenario={scenario!r}",
                 *(f"  violation: {v}" for v in violations),
                 f"  replay: Simulation.replay({seed}, {scenario!r}, until=<t>)",
                 "  the trace's last lines:", *(f"    {line}" for line in trace)]
        super().__init__("\n".join(lines))
        self.seed = seed
        self.scenario = scenario
        self.violations = violations
        self.trace = trace


class ReplayStopped(NoexError):
    """`Simulation.replay(..., until=t)` reached `t` (caught by `replay`, which returns the simulation)."""


class Simulation:
    """A simulated cluster; see docs/concepts/simulation.md.

    `latency_s`, `jitter_s` and `loss` are every link's defaults (`set_link` changes one); other
    keyword arguments are `ClusterConfig` options of every node (heartbeats 200 ms by default).
    With `probes=True` (the default) every node runs the invariant checkers' workload."""

    def __init__(self, seed: int = 0, nodes: int = 5, *, latency_s: float = 0.001, jitter_s: float = 0.0005,
                 loss: float = 0.0, probes: bool = True, scenario: str = "custom", trace_lines: int = 60,
                 stop_at: float | None = None, keep_trace: bool = False, **cluster_options: Any) -> None:
        if nodes < 1:
            raise ValueError("a simulation needs at least one node")
        self.seed = seed
        self.scenario = scenario
        self.rng = random.Random(f"{seed}:runtime")  # what the runtime draws (back-off, nonces, incarnations)
        self.nemesis_rng = random.Random(f"{seed}:nemesis")  # the fault schedule, independent of the runtime
        self.loop = VirtualTimeLoop()
        self.clock = virtual_clock(self.loop)  # every node's Clock and Entropy (core/clock.py)
        self.entropy = Entropy(self.rng)
        self._hash = hashlib.sha256()
        self._tail: deque[str] = deque(maxlen=trace_lines)
        self.full_trace: list[str] | None = [] if keep_trace else None
        self.events = 0
        self.net = SimNetwork(self.loop, random.Random(f"{seed}:network"), self.record,
                              latency_s=latency_s, jitter_s=jitter_s, loss=loss)
        self.options = {"heartbeat_interval_ms": 200, "heartbeat_miss_threshold": 3, **cluster_options}
        self.hosts = [Host(i, f"n{i + 1}", "127.0.0.1", BASE_PORT + i) for i in range(nodes)]
        for host in self.hosts:
            self.net.add_host(host)
        self.checker = Checker(self) if probes else None
        self.last_fault_at = 0.0
        self.stop_at = stop_at
        self._closed = False
        self._current: asyncio.Task[Any] | None = None
        try:
            self.run(self._start_all())
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ the trace
    def record(self, line: str, *, detail: bool = False) -> None:
        """Add a line to the trace: hashed whole; the last lines (details excepted) are kept for
        failure reports, and every line in `full_trace` when the simulation keeps it."""
        text = f"{self.loop.time():10.6f} {line}"
        self._hash.update(text.encode())
        self._hash.update(b"\n")
        if not detail:
            self._tail.append(text)
        if self.full_trace is not None:
            self.full_trace.append(text)
        self.events += 1

    @property
    def trace_hash(self) -> str:
        return self._hash.hexdigest()

    @property
    def trace_tail(self) -> list[str]:
        return list(self._tail)

    def _on_event(self, host: Host) -> Callable[[NodeEvent], None]:
        def on_event(event: NodeEvent) -> None:
            details = " ".join(f"{k}={_ADDRESS.sub('', str(v))}" for k, v in sorted(event.data.items())
                               if k != "exception")
            self.record(f"{host.name} {event.kind} {details}".rstrip())
            if event.kind == "error" and self.checker is not None:
                self.checker.violate(f"{host.name} reported an error: {details}")

        return on_event

    # ------------------------------------------------------------------ running
    @property
    def now(self) -> float:
        """Simulated seconds since the start."""
        return self.loop.time()

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run `awaitable` on the simulation's loop (virtual time) and return its result.

        Called where an event loop already runs (a notebook cell, an async test), the simulation's
        loop runs in a worker thread meanwhile (one at a time: still deterministic)."""
        if self._closed:
            raise NoexError("this simulation is closed")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._run_here(awaitable)
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="noex-sim") as pool:
            return pool.submit(self._run_here, awaitable).result()

    def _run_here(self, awaitable: Awaitable[T]) -> T:

        async def main() -> T:
            return await awaitable

        loop = self.loop
        task = loop.create_task(main())
        self._current = task
        # (only while this run is current: a run cut short by `stop_at` may finish in a later one)
        task.add_done_callback(lambda done: loop.stop() if self._current is done else None)
        stopper = loop.call_at(self.stop_at, loop.stop) if self.stop_at is not None else None
        try:
            loop.run_forever()
        finally:
            self._current = None
            if stopper is not None:
                stopper.cancel()
        if not task.done():
            raise ReplayStopped(f"stopped at simulated t={loop.time():.6f}")
        return task.result()

    def run_for(self, seconds: float) -> None:
        """Let the cluster run `seconds` of simulated time."""
        self.run(asyncio.sleep(seconds))

    def run_until(self, predicate: Callable[[], bool], timeout: float, *, step: float = 0.01) -> float:
        """Run until `predicate()` holds (checked every `step` simulated seconds); the time it took.
        Raises `WaitTimeoutError` after `timeout` simulated seconds."""

        async def wait() -> float:
            start = self.loop.time()
            while not predicate():
                if self.loop.time() - start >= timeout:
                    raise WaitTimeoutError("the simulation's condition", timeout, f"t={self.loop.time():.3f}")
                await asyncio.sleep(step)
            return self.loop.time() - start

        return self.run(wait())

    def close(self) -> None:
        """Kill every node and close the loop (idempotent)."""
        if self._closed:
            return
        self.stop_at = None

        async def stop_all() -> None:
            for host in self.hosts:
                if host.node is not None and host.node.running:
                    host.alive = False
                    await host.node.kill()

        async def cancel_rest() -> None:
            me = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done() and t is not me]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

        try:
            self.run(stop_all())
            self.run(cancel_rest())
        finally:
            self._closed = True
            self.loop.close()

    def __enter__(self) -> Simulation:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ nodes
    def node(self, index: int) -> Node:
        """The running node on host `index` (0-based)."""
        node = self.hosts[index].node
        if node is None:
            raise NoexError(f"host {index} has no node")
        return node

    def dist(self, index: int) -> Distribution:
        dist = self.node(index).distribution
        assert isinstance(dist, Distribution)
        return dist

    def alive(self) -> list[Host]:
        return [h for h in self.hosts if h.alive]

    async def _start_all(self) -> None:
        for host in self.hosts:
            await self._start_node(host)

    async def _start_node(self, host: Host) -> None:
        environment = SimEnvironment(self.net, host, self.clock, self.entropy)
        node = Node(label=host.name, clock=environment.clock, entropy=environment.entropy)
        await node.start()
        host.node = node
        host.alive = True
        host.paused = False
        node.events.subscribe(self._on_event(host))
        seeds = tuple(h.node_id for h in self.hosts if h is not host)
        config = ClusterConfig(node_name=host.name, host=host.host, port=host.port, seeds=seeds, **self.options)
        config.validate()
        dist = Distribution(node, config, environment=environment)
        await dist.start()
        self.record(f"{host.name} started incarnation={node.incarnation}")
        if self.checker is not None:
            await self.checker.start_probe(host)

    # ------------------------------------------------------------------ faults (sync; `a*` forms run inside)
    def _fault(self, text: str) -> None:
        self.last_fault_at = self.loop.time()
        self.record(f"fault: {text}")

    async def acrash(self, index: int) -> None:
        host = self.hosts[index]
        if not host.alive:
            return
        self._fault(f"crash {host.name}")
        host.alive = False
        host.paused = False
        host.resumed.clear()
        host.held_datagrams.clear()
        if host.listener is not None:
            host.listener.closed = True
            host.listener = None
        if host.node is not None:
            await host.node.kill()

    async def arestart(self, index: int) -> None:
        host = self.hosts[index]
        if host.alive:
            await self.acrash(index)
        self._fault(f"restart {host.name}")
        host.epoch += 1
        await self._start_node(host)

    async def aleave(self, index: int) -> None:
        host = self.hosts[index]
        if not host.alive or host.node is None:
            return
        self._fault(f"leave {host.name}")
        await host.node.stop()
        host.alive = False

    def crash(self, index: int) -> None:
        """The node's process dies: no goodbye, no FIN; peers notice by their heartbeats."""
        self.run(self.acrash(index))

    def restart(self, index: int) -> None:
        """A new incarnation of the node under the same name and address (crashing it first if up)."""
        self.run(self.arestart(index))

    def leave(self, index: int) -> None:
        """A graceful `node.stop()`."""
        self.run(self.aleave(index))

    def pause(self, index: int) -> None:
        """Freeze the node's network and heartbeats (SIGSTOP as the cluster sees it)."""
        host = self.hosts[index]
        if host.alive and not host.paused:
            self._fault(f"pause {host.name}")
            host.paused = True

    def resume(self, index: int) -> None:
        host = self.hosts[index]
        if not host.paused:
            return
        self._fault(f"resume {host.name}")
        host.paused = False
        callbacks, host.resumed = host.resumed, []
        for callback in callbacks:
            self.loop.call_soon(callback)
        guard = getattr(host.node.distribution, "partition_guard", None) if host.node is not None else None
        if guard is not None:  # (on SIGCONT a node's overdue timers fire at once: its pause watcher too)
            self.loop.call_soon(guard.gate)
        self.net.release_held()

    def partition(self, side_a: Iterable[int], side_b: Iterable[int], *, one_way: bool = False) -> None:
        """Block traffic from `side_a` to `side_b` (and back, unless `one_way`)."""
        a, b = sorted(side_a), sorted(side_b)
        self._fault(f"partition {a} {'->' if one_way else '|'} {b}")
        for i in a:
            for j in b:
                self.net.link(self.hosts[i], self.hosts[j]).blocked = True
                if not one_way:
                    self.net.link(self.hosts[j], self.hosts[i]).blocked = True

    def heal(self) -> None:
        """Remove every partition (held bytes then flow, in order)."""
        self._fault("heal")
        for link in self.net.links.values():
            link.blocked = False
        self.net.release_held()

    def set_link(self, a: int, b: int, *, latency_s: float | None = None, jitter_s: float | None = None,
                 loss: float | None = None, both_ways: bool = True) -> None:
        """Change one link's latency, jitter or loss (a lost TCP segment costs a retransmission)."""
        pairs = [(a, b), (b, a)] if both_ways else [(a, b)]
        self._fault(f"link {a}-{b} latency={latency_s} jitter={jitter_s} loss={loss}")
        for i, j in pairs:
            link = self.net.link(self.hosts[i], self.hosts[j])
            if latency_s is not None:
                link.latency_s = latency_s
            if jitter_s is not None:
                link.jitter_s = jitter_s
            if loss is not None:
                link.loss = loss

    # ------------------------------------------------------------------ convergence and checks
    def converged(self) -> bool:
        """Every live, unpaused node is connected to exactly the other live nodes (current incarnations)."""
        live = [h for h in self.hosts if h.alive and h.node is not None]
        for host in live:
            dist = host.node.distribution if host.node is not None else None
            if not isinstance(dist, Distribution):
                return False
            peers = dist.membership.peers
            want = {(o.node_id, o.node.incarnation) for o in live if o is not host and o.node is not None}
            have = {(peer, state.conn.peer_incarnation) for peer, state in peers.items()}
            if have != want:
                return False
        return True

    def stabilise(self, bound_s: float = 30.0, settle_s: float = 2.0) -> float:
        """End every fault (heal, resume, links back to their defaults) and wait until membership
        converges; a violation if it takes more than `bound_s` simulated seconds. Then let every
        segment already sent arrive (TCP's retransmissions) and run `settle_s` more seconds (the
        services' own exchanges after a join: name sync, group sync), and give a supervisor's
        restart in flight its time. Returns the time convergence took."""
        for host in self.hosts:
            if host.paused:
                self.resume(host.index)
        if any(link.blocked for link in self.net.links.values()):
            self.heal()
        latency, jitter, loss = self.net.default
        links = self.net.links.values()
        if any((link.latency_s, link.jitter_s, link.loss) != (latency, jitter, loss) for link in links):
            self._fault("links restored")
            for link in self.net.links.values():
                link.latency_s, link.jitter_s, link.loss = latency, jitter, loss
        try:
            took = self.run_until(self.converged, bound_s, step=0.05)
        except WaitTimeoutError:
            if self.checker is not None:
                self.checker.violate(f"membership did not converge within {bound_s:g} s after the last fault "
                                     f"({self.membership_text()})")
            return bound_s
        # segments still in flight (a lost one waits for its retransmission, up to 12.6 s) arrive first
        self.run_for(max(0.0, self.net.latest_due - self.loop.time()) + settle_s)
        if self.checker is not None:
            # a supervisor's restart may still be in flight (a spawn held up behind a retransmission
            # on a lossy link waits up to its 10 s timeout): give the supervised children as long
            with contextlib.suppress(WaitTimeoutError):
                self.run_until(self.checker.workers_settled, SUPERVISOR_SETTLE_S, step=0.05)
        return took

    def membership_text(self) -> str:
        parts = []
        for host in self.hosts:
            if not host.alive or host.node is None or not isinstance(host.node.distribution, Distribution):
                parts.append(f"{host.name}:down")
                continue
            peers = sorted(p.name for p in host.node.distribution.membership.peers)
            parts.append(f"{host.name}:[{','.join(peers)}]")
        return " ".join(parts)

    def violations(self) -> list[Violation]:
        return [] if self.checker is None else self.checker.final_check()

    def check(self) -> None:
        """Run the end-of-run invariants; raise `SimulationFailure` (seed, scenario, trace) on any violation."""
        found = self.violations()
        if found:
            raise SimulationFailure(self.seed, self.scenario, found, self.trace_tail)

    # ------------------------------------------------------------------ the nemesis
    def random_faults(self, rate: float = 0.5, *, duration_s: float = 30.0, leaves: bool = False,
                      without: Iterable[str] = ()) -> None:
        """Draw a fault schedule from the seed and run it for `duration_s`: on average `rate` faults
        per simulated second among crash, restart, pause, partitions (two-way, one-way), a lossy
        or slow link, heal, and with `leaves` graceful leaves; minus the kinds named in `without`
        (skipped when drawn). At most
        half the nodes (rounded down) are down at once."""
        rng = self.nemesis_rng
        end = self.loop.time() + duration_s
        n = len(self.hosts)
        while True:
            gap = rng.expovariate(rate) if rate > 0 else duration_s
            if self.loop.time() + gap >= end:
                self.run_for(max(0.0, end - self.loop.time()))
                return
            self.run_for(gap)
            kinds = ["crash", "restart", "pause", "resume", "partition", "one_way", "link", "heal", "heal"]
            kind = rng.choice([*kinds, "leave"] if leaves else kinds)
            i = rng.randrange(n)
            if kind in without:
                continue
            down = sum(1 for h in self.hosts if not h.alive or h.paused)
            if kind == "crash" and down < n // 2:
                self.crash(i)
            elif kind == "restart":
                self.restart(i) if (self.hosts[i].alive or down <= n // 2) else None
            elif kind == "leave" and down < n // 2:
                self.leave(i)
            elif kind == "pause" and down < n // 2:
                self.pause(i)
            elif kind == "resume":
                for host in self.hosts:
                    if host.paused:
                        self.resume(host.index)
                        break
            elif kind in ("partition", "one_way"):
                members = list(range(n))
                rng.shuffle(members)
                cut = rng.randrange(1, n)
                self.partition(members[:cut], members[cut:], one_way=kind == "one_way")
            elif kind == "link":
                j = rng.randrange(n)
                if i != j:
                    self.set_link(i, j, latency_s=rng.choice([0.001, 0.02, 0.2]), loss=rng.choice([0.0, 0.05, 0.3]))
            elif kind == "heal":
                self.heal()

    def restart_crashed(self) -> None:
        """Bring back every crashed (or departed) node, as new incarnations."""
        for host in self.hosts:
            if not host.alive:
                self.restart(host.index)

    # ------------------------------------------------------------------ replay
    @classmethod
    def replay(cls, seed: int, scenario: str, *, until: float | None = None, nodes: int = 5) -> Simulation:
        """Run `scenario` (a name in `noex_lab.sim.SCENARIOS`) with `seed` again; with `until`, stop
        at that simulated time and return the simulation to inspect (`sim.node(i)`, `sim.dist(i)`)."""
        from .scenarios import SCENARIO_OPTIONS, SCENARIOS

        sim = cls(seed=seed, nodes=nodes, scenario=scenario, stop_at=until, keep_trace=True,
                  **SCENARIO_OPTIONS.get(scenario, {}))
        try:
            SCENARIOS[scenario](sim)
        except ReplayStopped:
            sim.stop_at = None
            return sim
        sim.stop_at = None
        return sim
