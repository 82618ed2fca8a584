"""The simulator itself: determinism, replay, the simulated network's TCP semantics, the checkers."""

from __future__ import annotations

import pytest

from noex_lab.core.errors import WaitTimeoutError
from noex_lab.sim import Simulation, SimulationFailure
from noex_lab.sim.network import _Pipe


def _short_random_run(seed: int) -> str:
    sim = Simulation(seed=seed, nodes=3, scenario="short_random")
    try:
        sim.run_until(sim.converged, 10)
        sim.random_faults(rate=2.0, duration_s=2.0)
        sim.restart_crashed()
        sim.stabilise(settle_s=0.5)
        sim.check()
        return sim.trace_hash
    finally:
        sim.close()


@pytest.mark.timeout(120)
def test_same_seed_same_trace_bit_for_bit() -> None:
    """20 seeds, each run twice: the trace hashes are equal; different seeds give different traces."""
    hashes = []
    for seed in range(20):
        first, second = _short_random_run(seed), _short_random_run(seed)
        assert first == second, f"seed {seed} gave two different traces"
        hashes.append(first)
    assert len(set(hashes)) == 20


def test_virtual_time_costs_no_wall_time() -> None:
    """A 5-node cluster with 200 ms heartbeats runs a simulated minute (no probes) in well under a second
    of this machine's time, and time advances exactly as asked."""
    import time

    with Simulation(seed=1, nodes=5, probes=False) as sim:
        sim.run_until(sim.converged, 10)
        start, began = sim.now, time.perf_counter()
        sim.run_for(60.0)
        wall = time.perf_counter() - began
        assert sim.now == pytest.approx(start + 60.0)
        assert sim.converged()
    assert wall < 3.0, f"60 simulated seconds took {wall:.2f} s"


def test_replay_stops_at_t_and_shows_every_node() -> None:
    full = Simulation.replay(3, "crash")
    try:
        whole = list(full.full_trace or [])
    finally:
        full.close()
    sim = Simulation.replay(3, "crash", until=0.4)
    try:
        assert sim.now == pytest.approx(0.4)
        for i in range(5):
            assert sim.node(i).running
            assert sim.dist(i).membership.peers  # inspectable, connected
        prefix = list(sim.full_trace or [])
        assert prefix and whole[:len(prefix)] == prefix  # the same run, cut at t
        sim.run_for(1.0)  # and it can go on from there
        assert sim.now == pytest.approx(1.4)
    finally:
        sim.close()


def test_crash_sends_no_fin_and_restart_resets_old_connections() -> None:
    """Peers learn of a crash from heartbeats only (3 x 200 ms), not from a closed connection."""
    with Simulation(seed=2, nodes=3, probes=False, keep_trace=True) as sim:
        sim.run_until(sim.converged, 10)
        crashed_at = sim.now
        sim.crash(2)
        sim.run_for(0.4)
        assert all(sim.hosts[2].node_id in sim.dist(i).membership.peers for i in (0, 1))  # not yet noticed
        took = sim.run_until(lambda: all(sim.hosts[2].node_id not in sim.dist(i).membership.peers
                                         for i in (0, 1)), 2.0)
        assert 0.55 <= sim.now - crashed_at <= 0.75, took  # the heartbeat timeout, not the connection
        downs = [line for line in sim.full_trace or [] if "node_down peer=n3" in line]
        assert downs and all("heartbeat_timeout" in line for line in downs)
        sim.restart(2)
        sim.stabilise()
        assert sim.converged()


def test_partition_holds_bytes_until_heal_and_pause_freezes_a_node() -> None:
    with Simulation(seed=4, nodes=3) as sim:
        sim.run_until(sim.converged, 10)
        sim.partition([0], [1, 2])
        sim.run_until(lambda: not sim.converged(), 2.0)
        sim.heal()
        sim.stabilise()
        sim.pause(1)
        sim.run_for(0.3)  # shorter than the detection time: nobody notices
        sim.resume(1)
        sim.run_for(0.5)
        assert sim.converged()
        sim.check()  # no message lost or reordered on any connection, no call past its timeout


def test_a_broken_network_is_caught_with_seed_scenario_and_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deliberately broken behavior (a pipe that loses one segment in the middle of a connection)
    is reported with the seed, the scenario and a shortened trace."""
    real_push = _Pipe.push
    sent = {"n": 0}

    def lossy_push(self: _Pipe, data: bytes) -> None:
        if b"sim_probe" in data:
            sent["n"] += 1
            if sent["n"] == 20:
                return  # one segment with a probe's message vanishes: TCP never does this
        real_push(self, data)

    monkeypatch.setattr(_Pipe, "push", lossy_push)
    sim = Simulation(seed=5, nodes=3, scenario="lossy_by_design")
    try:
        sim.run_until(sim.converged, 10)
        sim.run_for(3.0)
        with pytest.raises(SimulationFailure) as failure:
            sim.check()
    finally:
        sim.close()
    text = str(failure.value)
    assert "seed=5" in text and "lossy_by_design" in text and "lost" in text
    assert "Simulation.replay(5" in text and "the trace's last lines" in text


def test_run_until_raises_after_its_simulated_timeout() -> None:
    with Simulation(seed=6, nodes=2, probes=False) as sim:
        with pytest.raises(WaitTimeoutError):
            sim.run_until(lambda: False, 1.5)
        assert sim.now >= 1.5


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_runs_from_inside_a_running_event_loop() -> None:
    """A notebook cell or an async test already runs a loop: the simulation runs beside it."""
    with Simulation(seed=8, nodes=3) as sim:
        sim.run_until(sim.converged, 10)
        sim.crash(1)
        sim.run_for(1.0)
        sim.stabilise()
        sim.check()


def test_with_a_cluster_secret_the_handshake_proofs_and_frame_macs_run() -> None:
    """With a secret every connection runs the authenticated handshake (nonces from the seed) and
    MACs every frame; a crash and a restart (a new incarnation, new session keys) still converge."""
    with Simulation(seed=9, nodes=3, cluster_secret="a-long-cluster-secret-for-sim") as sim:
        sim.run_until(sim.converged, 10)
        assert all(conn.session_key is not None for conn in sim.dist(0).transport.conns.values())
        sim.crash(2)
        sim.run_for(1.0)
        sim.restart(2)
        sim.stabilise()
        sim.check()
