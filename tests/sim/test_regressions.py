"""Seeds the simulator's campaigns found bugs with; each stays here once the bug is fixed.

Replay one with `Simulation.replay(seed, scenario, until=t)` and read `sim.full_trace`."""

from __future__ import annotations

import pytest

from noex_lab.sim import run_scenario


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", (1, 5))
def test_global_name_after_its_conflict_winner_left(seed: int) -> None:
    """Global registry: node X resolved a conflict for a name between processes on two other nodes,
    W (winner) and L (loser), and dropped L's registration; W's node went down before L's node ever
    met W, so L kept the name. X then had no owner for good while every other node named L's
    process (before the fix, `nodes disagree on the owner of 'sim_leader'` after stabilisation).
    Now X asks L's node for its names again when it forgets a conflict whose winner left."""
    run_scenario("random", seed)
