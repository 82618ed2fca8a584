"""The live views (ClusterView, SupervisorView) on simulated nodes, following simulated time."""

from __future__ import annotations

import pytest

from noex_lab.sim import Simulation
from noex_lab.widgets import ClusterView, SupervisorView


def _statuses(view: ClusterView) -> dict[str, str]:
    return {str(row[0]).split("@")[0]: str(row[1]) for row in view.table().rows}


def _children(view: SupervisorView) -> dict[str, str]:
    return {child.id: str(child.ref.node.name) for child in view.children if child.ref is not None and child.ref.node}


@pytest.mark.timeout(30)
def test_the_views_follow_a_simulated_crash() -> None:
    """Built on the simulation's loop (inside `sim.run`), the views subscribe to the simulated
    nodes' events and refresh on virtual time: a crash shows as the node down in ClusterView and
    its child moved in SupervisorView, after `run_for` alone (no wall-clock wait)."""
    with Simulation(seed=3, nodes=3, scenario="views") as sim:
        checker = sim.checker
        assert checker is not None
        sim.run_until(sim.converged, 10)
        sim.run_until(lambda: checker.supervisor is not None and checker.workers_settled(), 10)
        assert checker.supervisor is not None
        sup = checker.supervisor[2]

        async def build() -> tuple[ClusterView, SupervisorView]:
            return ClusterView(sim.node(0), refresh_s=0.5), SupervisorView(sup, node=sim.node(0))

        cluster, supervisor = sim.run(build())
        try:
            assert _statuses(cluster) == {"n1": "up (this node)", "n2": "up", "n3": "up"}
            sim.run_until(lambda: len(supervisor.children) == 3, 2.0)
            assert _children(supervisor)["w3"] == "n3"
            renders = cluster.renders, supervisor.renders

            sim.crash(2)
            sim.run_for(2.0)  # detection after 0.6 simulated s, then the child's restart elsewhere
            assert _statuses(cluster)["n3"] == "down (heartbeat_timeout)"
            assert "down (heartbeat_timeout)" in cluster.value  # the widget's own value was re-rendered
            assert _children(supervisor)["w3"] != "n3"
            assert any(line.kind == "child_migrated" and line.child == "w3" for line in supervisor.restart_log)
            assert cluster.renders > renders[0] and supervisor.renders > renders[1]
        finally:
            cluster.close()
            supervisor.close()
