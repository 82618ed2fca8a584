"""Seeds the simulator's campaigns found bugs with; each stays here once the bug is fixed.

Replay one with `Simulation.replay(seed, scenario, until=t)` and read `sim.full_trace`. A seed
reproduces its bug with the code and the checkers' workload of its time: when either changes,
the schedule it draws changes too, so a campaign (`make sim`) is what keeps finding such bugs;
these tests keep the exact runs that once failed passing."""

from __future__ import annotations

import pytest

from noex_lab.sim import run_scenario


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", (32,))
def test_global_name_after_its_conflict_winner_left(seed: int) -> None:
    """Global registry: node X resolved a conflict for a name between processes on two other nodes,
    W (winner) and L (loser), and dropped L's registration; W's node went down before L's node ever
    met W, so L kept the name. X then had no owner for good while every other node named L's
    process (before the fix, `nodes disagree on the owner of 'sim_leader'` after stabilisation;
    found first with seeds 1 and 5 before the supervisor workload existed, seed 32 since).
    Now X asks L's node for its names again when it forgets a conflict whose winner left."""
    run_scenario("random", seed)
