"""Named fault scenarios: each drives a fresh `Simulation` and leaves it stable for the final check.

`run_scenario(name, seed)` runs one and raises `SimulationFailure` on a violated invariant;
`Simulation.replay(seed, name, until=t)` reruns it and stops at `t`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..distribution.partition_policy import PartitionPolicy

if TYPE_CHECKING:
    from .simulation import Simulation

__all__ = ["SCENARIOS", "SCENARIO_OPTIONS", "run_scenario"]

FORM_S = 10.0  # simulated seconds a fresh cluster has to mesh


def _formed(sim: Simulation) -> None:
    sim.run_until(sim.converged, FORM_S)
    sim.run_for(sim.nemesis_rng.uniform(0.5, 2.0))  # let the workload run a seed-chosen while


def crash(sim: Simulation) -> None:
    _formed(sim)
    sim.crash(sim.nemesis_rng.randrange(len(sim.hosts)))
    sim.run_for(3.0)
    sim.stabilise()


def pause(sim: Simulation) -> None:
    _formed(sim)
    victim = sim.nemesis_rng.randrange(len(sim.hosts))
    sim.pause(victim)
    sim.run_for(sim.nemesis_rng.choice([0.3, 2.0]))  # shorter and longer than detection (0.6 s)
    sim.resume(victim)
    sim.stabilise()


def _split(sim: Simulation, sizes: tuple[int, ...]) -> list[list[int]]:
    members = list(range(len(sim.hosts)))
    sim.nemesis_rng.shuffle(members)
    groups, start = [], 0
    for size in sizes:
        groups.append(members[start:start + size])
        start += size
    return groups


def partition_3_2(sim: Simulation) -> None:
    _formed(sim)
    a, b = _split(sim, (3, 2))
    sim.partition(a, b)
    sim.run_for(3.0)
    sim.stabilise()


def partition_2_2(sim: Simulation) -> None:
    _formed(sim)
    a, b, _rest = _split(sim, (2, 2, len(sim.hosts) - 4))
    sim.partition(a, b)
    sim.run_for(3.0)
    sim.stabilise()


def overlapping_partition(sim: Simulation) -> None:
    """A and C cannot talk, B talks to both (the bridge)."""
    _formed(sim)
    a, bridge, c = _split(sim, (2, 1, len(sim.hosts) - 3))
    sim.partition(a, c)
    sim.run_for(4.0)
    sim.stabilise()


def one_way_partition(sim: Simulation) -> None:
    _formed(sim)
    a, b = _split(sim, (2, len(sim.hosts) - 2))
    sim.partition(a, b, one_way=True)
    sim.run_for(3.0)
    sim.stabilise()


def flapping_link(sim: Simulation) -> None:
    _formed(sim)
    a, b = _split(sim, (1, 1))[:2]
    for _ in range(8):
        sim.partition(a, b)
        sim.run_for(sim.nemesis_rng.uniform(0.2, 1.0))
        sim.heal()
        sim.run_for(sim.nemesis_rng.uniform(0.2, 1.0))
    sim.stabilise()


def restart_before_detection(sim: Simulation) -> None:
    _formed(sim)
    victim = sim.nemesis_rng.randrange(len(sim.hosts))
    sim.crash(victim)
    sim.run_for(0.1)  # far less than the detection time (3 x 200 ms)
    sim.restart(victim)
    sim.stabilise()


def concurrent_registration(sim: Simulation) -> None:
    """Every node's probe tries to register `sim_leader` at once (the workload does it at start)."""
    _formed(sim)
    sim.run_for(3.0)
    sim.stabilise()


def graceful_leave(sim: Simulation) -> None:
    _formed(sim)
    sim.leave(sim.nemesis_rng.randrange(len(sim.hosts)))
    sim.run_for(2.0)
    sim.stabilise()


def mass_failure(sim: Simulation) -> None:
    _formed(sim)
    n = len(sim.hosts)
    victims = _split(sim, ((n - 1) // 2 + 1,))[0]  # a majority
    for i in victims:
        sim.crash(i)
    sim.run_for(2.0)
    for i in victims:
        sim.restart(i)
    sim.stabilise()


def lossy_links(sim: Simulation) -> None:
    _formed(sim)
    for i in range(len(sim.hosts)):
        sim.set_link(i, (i + 1) % len(sim.hosts), loss=0.2, latency_s=0.02)
    sim.run_for(5.0)
    for i in range(len(sim.hosts)):
        sim.set_link(i, (i + 1) % len(sim.hosts), loss=0.0, latency_s=0.001)
    sim.stabilise()


def random(sim: Simulation) -> None:
    """The nemesis: 30 simulated seconds of seeded random faults, then every node back."""
    _formed(sim)
    sim.random_faults(rate=0.5, duration_s=30.0)
    sim.restart_crashed()
    sim.stabilise()


def random_leaves(sim: Simulation) -> None:
    """The nemesis with graceful leaves among its faults."""
    _formed(sim)
    sim.random_faults(rate=0.5, duration_s=30.0, leaves=True)
    sim.restart_crashed()
    sim.stabilise()


def random_storm(sim: Simulation) -> None:
    """The nemesis four times as often (2 faults a simulated second), leaves included."""
    _formed(sim)
    sim.random_faults(rate=2.0, duration_s=20.0, leaves=True)
    sim.restart_crashed()
    sim.stabilise()


def fenced_faults(sim: Simulation) -> None:
    """The nemesis on a cluster with the `keep_majority` partition policy (SCENARIO_OPTIONS): the
    checker then also holds every instant to at most one live owner answering for `sim_leader`.
    Crashes, restarts, partitions (two-way, one-way, overlapping), pauses, slow and lossy links."""
    _formed(sim)
    sim.random_faults(rate=1.0, duration_s=20.0)
    sim.restart_crashed()
    sim.stabilise()


SCENARIOS: dict[str, Callable[[Simulation], None]] = {
    "crash": crash,
    "pause": pause,
    "partition_3_2": partition_3_2,
    "partition_2_2": partition_2_2,
    "overlapping_partition": overlapping_partition,
    "one_way_partition": one_way_partition,
    "flapping_link": flapping_link,
    "restart_before_detection": restart_before_detection,
    "concurrent_registration": concurrent_registration,
    "graceful_leave": graceful_leave,
    "mass_failure": mass_failure,
    "lossy_links": lossy_links,
    "random": random,
    "random_leaves": random_leaves,
    "random_storm": random_storm,
    "fenced_faults": fenced_faults,
}

# cluster options (`Simulation(**options)`) of the scenarios that need some
SCENARIO_OPTIONS: dict[str, dict[str, Any]] = {
    "fenced_faults": {"partition_policy": PartitionPolicy.of("keep_majority")},
}


def run_scenario(name: str, seed: int, *, nodes: int = 5) -> Simulation:
    """Run scenario `name` with `seed`, check every invariant and close; returns the (closed)
    simulation for its figures. Raises `SimulationFailure` on a violation."""
    from .simulation import Simulation

    sim = Simulation(seed=seed, nodes=nodes, scenario=name, **SCENARIO_OPTIONS.get(name, {}))
    try:
        SCENARIOS[name](sim)
        sim.check()
    finally:
        sim.close()
    return sim
