"""The per-name locks of GlobalRegistry: mutual exclusion in every interleaving of the lock
handlers, and N node processes registering one name at once: one winner, definite losers."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from noex_lab import (
    CallTimeoutError,
    Cluster,
    GlobalNameConflictError,
    GlobalRegistry,
    NodeId,
    RemoteSpawn,
)
from noex_lab.core.refs import ProcessRef
from noex_lab.distribution import global_registry
from noex_lab.errors import NotPermittedError
from tests.helpers.cluster import NodeProcess, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

CLAIMS = 3
PEERS = [NodeId(f"p{i}", "127.0.0.1", 1000 + i) for i in range(CLAIMS)]


class LockScript:
    """Drives one registry's lock handlers for one name, as claims c0..c2 from peers p0..p2, and
    checks after every step that at most one claim believes it holds the lock, and that this
    claim is the one the registry's lock table names."""

    def __init__(self, registry: Any, name: str, tg: anyio.abc.TaskGroup) -> None:
        self.registry = registry
        self.name = name
        self.tg = tg
        self.state = ["idle"] * CLAIMS  # idle | waiting | held | refused | ended
        self.trace: list[str] = []

    def _args(self, i: int) -> list[Any]:
        return [self.name, f"c{i}", ProcessRef(PEERS[i], 1, 1)]

    async def _lock(self, i: int) -> None:
        try:
            await self.registry._on_lock(PEERS[i], self._args(i))
        except CallTimeoutError:
            self.state[i] = "refused"
            return
        self.state[i] = "held" if self.state[i] == "waiting" else f"granted after {self.state[i]}"

    async def step(self, action: str, i: int) -> None:
        self.trace.append(f"{action}(c{i})")
        if action == "request":  # a lock request handled by its own task (an RPC)
            self.state[i] = "waiting"
            self.tg.start_soon(self._lock, i)
        elif action == "now":  # a lock request that must be granted without waiting, else withdrawn
            self.state[i] = "waiting"
            with anyio.move_on_after(0):
                await self._lock(i)
            if self.state[i] == "waiting":
                self.state[i] = "refused"
        elif action == "end":  # unlock: give the lock up, or stop waiting for it
            self.registry._on_unlock(PEERS[i], [self.name, f"c{i}"])
            self.state[i] = "ended"
        elif action == "settle":
            for _ in range(2):  # a woken waiter, or a new request's task, runs within two
                await anyio.lowlevel.checkpoint()
        self.check()

    def check(self) -> None:
        holders = [f"c{i}" for i, s in enumerate(self.state) if s == "held"]
        lock = self.registry._locks.get(self.name)
        assert len(holders) <= 1, f"{holders} hold the lock at once after {self.trace}"
        assert all(s in ("idle", "waiting", "held", "refused", "ended") for s in self.state), (
            f"states {self.state} after {self.trace}"
        )
        if holders:
            assert lock is not None and lock.claim == holders[0], (
                f"{holders[0]} believes it holds the lock, the table says {lock and lock.claim}, after {self.trace}"
            )

    def check_done(self) -> None:
        assert all(s in ("refused", "ended") for s in self.state), f"states {self.state} after {self.trace}"
        assert self.name not in self.registry._locks, f"a lock nobody holds remains after {self.trace}"


def _scripts() -> Iterator[list[tuple[str, int]]]:
    """Every interleaving of the claims' [request or now, end], with or without a settle (all
    ready tasks run) after each step: 90 orders x 8 kinds x 32 settle patterns."""
    steps = [(c, k) for c in range(CLAIMS) for k in range(2)]
    orders = {tuple(c for c, _ in perm) for perm in itertools.permutations(steps)}
    for order in sorted(orders):
        for kinds in itertools.product(("request", "now"), repeat=CLAIMS):
            for settles in itertools.product((False, True), repeat=len(order) - 1):
                seen = [0] * CLAIMS
                script: list[tuple[str, int]] = []
                for position, claim in enumerate(order):
                    script.append((kinds[claim] if seen[claim] == 0 else "end", claim))
                    seen[claim] += 1
                    if position < len(settles) and settles[position]:
                        script.append(("settle", 0))
                yield script


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # (the scripted tests below run on trio too)
async def test_lock_handlers_give_mutual_exclusion_in_every_interleaving() -> None:
    node = await Cluster.start("locks", port=0)
    registry = node.distribution.global_registry
    runs = 0
    async with anyio.create_task_group() as tg:
        for runs, script in enumerate(_scripts(), 1):
            run = LockScript(registry, f"name-{runs}", tg)
            for action, claim in script:
                await run.step(action, claim)
            await run.step("settle", 0)
            run.check_done()
    assert runs == 90 * 8 * 32
    assert registry._locks == {}


async def test_a_claim_arriving_between_a_release_and_the_woken_waiter_queues_behind_it() -> None:
    node = await Cluster.start("locks", port=0)
    async with anyio.create_task_group() as tg:
        run = LockScript(node.distribution.global_registry, "race", tg)
        for action, claim in [("now", 0), ("request", 1), ("settle", 0), ("end", 0), ("now", 2), ("end", 2),
                              ("settle", 0)]:
            await run.step(action, claim)
        assert run.state == ["ended", "held", "ended"]
        await run.step("end", 1)
        run.check_done()


async def test_a_departed_peer_gives_up_its_lock_and_its_queued_claims() -> None:
    node = await Cluster.start("locks", port=0)
    registry = node.distribution.global_registry
    async with anyio.create_task_group() as tg:
        run = LockScript(registry, "gone", tg)
        for action, claim in [("now", 0), ("request", 1), ("request", 2), ("settle", 0)]:
            await run.step(action, claim)
        registry.peer_left(PEERS[0], "connection_closed")  # the holder: c1 is next
        run.state[0] = "ended"
        registry.peer_left(PEERS[2], "connection_closed")  # a waiter: it leaves the queue
        await run.step("settle", 0)
        assert run.state == ["ended", "held", "refused"]
        await run.step("end", 1)
        run.check_done()


async def test_a_lock_is_a_lease_of_bounded_length_and_only_its_holder_commits_or_unlocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = await Cluster.start("locks", port=0)
    registry = node.distribution.global_registry
    monkeypatch.setattr(global_registry, "MAX_LOCK_LEASE_S", 0.3)
    ref = ProcessRef(PEERS[0], 1, 1)
    assert await registry._on_lock(PEERS[0], ["lease", "c0", ref, 1e9]) is None  # asks for ever, gets 0.3 s
    with pytest.raises(NotPermittedError):
        registry._on_unlock(PEERS[1], ["lease", "c0"])  # not its claim
    with pytest.raises(NotPermittedError):
        registry._on_commit(PEERS[1], ["lease", "c0", ref])  # not its lock
    started = time.monotonic()
    assert await registry._on_lock(PEERS[1], ["lease", "c1", ref]) is None  # granted when the lease ends
    assert 0.25 <= time.monotonic() - started < 2.0
    with pytest.raises(NotPermittedError):
        registry._on_commit(PEERS[0], ["lease", "c0", ref])  # the expired holder commits nothing
    registry._on_commit(PEERS[1], ["lease", "c1", ref])
    assert registry.names["lease"] == ref and "lease" not in registry._locks


# ---------------------------------------------------------------------------- real node processes

ROUNDS = 100


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.timeout(90)
async def test_five_node_processes_claiming_one_name_give_one_winner_and_definite_losers_every_round(
    procs: list[NodeProcess],
) -> None:
    import tests.distribution.behaviors_for_tests  # noqa: F401  (echo is spawned on the nodes)

    me = await Cluster.start("tester", port=0)
    args = ["--behaviors", "tests.distribution.behaviors_for_tests", "--seed", str(me.id)]
    procs.extend(NodeProcess(f"p{i}", *args) for i in range(5))
    ids = [await p.started() for p in procs]
    await wait_until(lambda: len(me.get_nodes()) == 5, 10.0, "five node processes joined")
    for round_ in range(ROUNDS):
        name = f"leader-{round_}"
        outcomes: list[Any] = [None] * 5

        async def claim(i: int, name: str = name, outcomes: list[Any] = outcomes) -> None:
            try:
                outcomes[i] = await RemoteSpawn.spawn("echo", ids[i], name=name, registration="global")
            except Exception as exc:
                outcomes[i] = exc

        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(claim, i)
        winners = [o for o in outcomes if isinstance(o, ProcessRef)]
        assert len(winners) == 1, f"round {round_}: {outcomes}"
        losers = [o for o in outcomes if not isinstance(o, ProcessRef)]
        assert all(isinstance(o, GlobalNameConflictError) for o in losers), f"round {round_}: {outcomes}"
        assert GlobalRegistry.whereis(name) == winners[0]
