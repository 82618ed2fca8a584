"""The clock and randomness seams (`noex_lab/core/clock.py`): a node reads the time and draws
random numbers only through `node.clock` and `node.entropy`, which is how the simulator makes a
run deterministic without swapping any module's globals; production defaults are the `time`
module's own functions and the OS's randomness."""

from __future__ import annotations

import ast
import os
import random
import time
from pathlib import Path
from typing import Any, cast

import pytest

from noex_lab.core.clock import SYSTEM_CLOCK, SYSTEM_ENTROPY, Clock, Entropy
from noex_lab.core.genserver import GenServer
from noex_lab.core.node import Node
from noex_lab.distribution.cluster import ClusterConfig, Distribution
from noex_lab.distribution.environment import Environment
from noex_lab.errors import InvalidArgumentError
from noex_lab.sim import Simulation

PACKAGE = Path(__file__).resolve().parents[2] / "noex_lab"
# Where the real clock is read on purpose: the seam itself, the liveness thread (it must see a
# blocked loop in real time) and the two places that compare with the thread's timestamps, the
# asyncio loop's own clock, and files written for humans.
# (file: how many such reads; None: any)
REAL_TIME_ALLOWED: dict[str, int | None] = {
    "core/clock.py": None, "distribution/liveness.py": None, "core/_backend.py": 1,
    "distribution/partition_policy.py": 1, "distribution/metrics.py": 1, "distribution/handshake.py": 1,
    "distribution/notebook_nodes.py": 1,
}
READS = {("time", "monotonic"), ("time", "time"), ("time", "time_ns"), ("time", "perf_counter"),
         ("os", "urandom")}


def _real_reads(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in READS or (node.value.id == "random" and node.attr != "Random"):
                found.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
    return found


def test_the_check_finds_a_real_read() -> None:
    assert _real_reads(ast.parse("import time\nx = time.monotonic() + random.uniform(0, 1)")) == [
        "time.monotonic (line 2)", "random.uniform (line 2)"]


def test_core_and_distribution_read_time_and_randomness_through_the_node() -> None:
    offenders = {}
    for path in sorted(PACKAGE.glob("*/*.py")):
        rel = str(path.relative_to(PACKAGE))
        if rel.split("/")[0] not in ("core", "distribution") or REAL_TIME_ALLOWED.get(rel, 0) is None:
            continue
        reads = _real_reads(ast.parse(path.read_text()))
        if len(reads) > (REAL_TIME_ALLOWED.get(rel) or 0):
            offenders[rel] = reads
    assert offenders == {}


class Echo(GenServer):
    async def init(self, arg: Any) -> Any:
        return arg

    async def handle_call(self, msg: Any, state: Any) -> Any:
        return msg, state


@pytest.mark.anyio
async def test_a_node_reads_its_own_clock_and_entropy() -> None:
    now = [100.0]
    clock = Clock(monotonic=lambda: now[0], wall=lambda: 1_000.0 + now[0],
                  wall_ns=lambda: int((1_000.0 + now[0]) * 1e9), perf_counter=lambda: now[0])
    incarnations = []
    for _ in range(2):  # the same clock and seed: the same incarnation
        node = Node(label="seamed", clock=clock, entropy=Entropy(random.Random(7)))
        incarnations.append(node.incarnation)
    assert incarnations[0] == incarnations[1] and incarnations[0] // 1000 == 1_100_000_000
    await node.start()
    try:
        with node.as_default():
            ref = await GenServer.start(Echo, "s")
            now[0] += 42.0
            snap = node.snapshot()
            event = node.events.emit("output", text="x")
        assert snap.taken_at == 1_142.0 and event.at == 1_142.0
        assert [p.uptime_s for p in snap.processes if p.ref == ref] == [42.0]
    finally:
        await node.kill()


def test_entropy_is_the_os_in_production_and_the_seed_in_a_simulation() -> None:
    assert Node.__init__.__defaults__ is None  # (keyword-only: clock=None, entropy=None mean the system's)
    assert SYSTEM_CLOCK.monotonic is time.monotonic and SYSTEM_CLOCK.time is time.time
    assert SYSTEM_ENTROPY.token_bytes is os.urandom
    a, b = Entropy(random.Random(3)), Entropy(random.Random(3))
    assert [a.token_bytes(8), a.new_random().random(), a.random.random()] == \
           [b.token_bytes(8), b.new_random().random(), b.random.random()]


class _OtherClockEnvironment:
    clock = Clock()
    entropy = Entropy(random.Random(1))


@pytest.mark.anyio
async def test_a_distribution_refuses_a_node_built_without_its_environments_clock() -> None:
    node = Node(label="mismatched")
    environment = cast(Environment, _OtherClockEnvironment())
    with pytest.raises(InvalidArgumentError, match=r"Node\(clock=environment\.clock"):
        Distribution(node, ClusterConfig(node_name="mismatched"), environment=environment)


def test_a_simulation_swaps_no_module_global() -> None:
    """While a simulation runs, the runtime's modules keep the real `time`, `random` and `os`."""
    import noex_lab.core.clock as clock_module
    import noex_lab.distribution.liveness as liveness

    seen: list[Any] = []

    async def look() -> None:
        seen.extend([clock_module.time, clock_module.random, clock_module.os, liveness.time])

    with Simulation(seed=1, nodes=2) as sim:
        sim.run(look())
        assert sim.node(0).clock is sim.clock and sim.node(1).entropy is sim.entropy
    assert seen == [time, random, os, time]
