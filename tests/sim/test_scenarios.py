"""A fixed set of seeds per fault scenario; every invariant is checked on every run.

A failure prints the seed and the scenario: `Simulation.replay(seed, scenario, until=t)` reruns it."""

from __future__ import annotations

import pytest

from noex_lab.sim import SCENARIOS, run_scenario

SEEDS = (1, 2)
FIXED = [name for name in SCENARIOS if not name.startswith("random")]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scenario", FIXED)
def test_scenario(scenario: str, seed: int) -> None:
    run_scenario(scenario, seed)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("scenario", "seed"), [("random", 3), ("random", 4), ("random_leaves", 3),
                                                ("random_storm", 3)])
def test_random_faults(scenario: str, seed: int) -> None:
    run_scenario(scenario, seed)
