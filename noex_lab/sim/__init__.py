"""`noex_lab.sim`: whole clusters of the real runtime on a virtual clock, with seeded faults.

    from noex_lab.sim import Simulation
    with Simulation(seed=7, nodes=5) as sim:
        sim.run_until(sim.converged, timeout=10)
        sim.crash(2)
        sim.run_for(5)
        sim.restart(2)
        sim.stabilise()
        sim.check()          # SimulationFailure names the seed, the scenario and the trace's end

See docs/concepts/simulation.md.
"""

from .invariants import Checker, Violation
from .loop import SimulationStuckError, VirtualTimeLoop
from .scenarios import SCENARIO_OPTIONS, SCENARIOS, run_scenario
from .simulation import ReplayStopped, Simulation, SimulationFailure

__all__ = [
    "SCENARIOS",
    "SCENARIO_OPTIONS",
    "Checker",
    "ReplayStopped",
    "Simulation",
    "SimulationFailure",
    "SimulationStuckError",
    "Violation",
    "VirtualTimeLoop",
    "run_scenario",
]
