"""The single-owner invariant under a fencing partition policy, checked at every instant."""

from __future__ import annotations

from typing import Any

import pytest

from noex_lab.distribution.partition_policy import PartitionPolicy
from noex_lab.sim import SCENARIO_OPTIONS, Simulation, SimulationFailure, run_scenario
from noex_lab.sim.invariants import LEADER


def _owner_index(sim: Simulation) -> int | None:
    """The host of the process every node names as `sim_leader` (None until they agree)."""
    named = {str(sim.dist(i).global_registry.whereis(LEADER)) for i in range(len(sim.hosts))}  # type: ignore[union-attr]
    if len(named) != 1 or named == {"None"}:
        return None
    (ref,) = named
    return next(h.index for h in sim.hosts if f"@{h.name}@" in ref)


def _split_the_owner_off(sim: Simulation, *, fences: bool) -> tuple[list[int], Any]:
    """Cut the owner of `sim_leader` and one more node off (2 | 3) and wait past the window."""
    sim.run_until(sim.converged, 10)
    sim.run_until(lambda: _owner_index(sim) is not None, 10)
    owner = _owner_index(sim)
    assert owner is not None
    minority = [owner, (owner + 1) % len(sim.hosts)]
    majority = [i for i in range(len(sim.hosts)) if i not in minority]
    if not fences:  # a deliberately broken policy: the losing side never fences
        for i in minority:
            sim.dist(i).partition_guard.fence = lambda why: None  # type: ignore[method-assign,union-attr]
    sim.partition(minority, majority)
    sim.run_for(4.0)  # detection 0.6 s, the window 1.2 s, the probes claim the free name within 1 s
    new_owner = sim.dist(majority[0]).global_registry.whereis(LEADER)  # type: ignore[union-attr]
    return majority, new_owner


@pytest.mark.timeout(30)
def test_the_majority_names_a_new_owner_only_once_the_old_one_is_fenced() -> None:
    """keep_majority, the owner's side loses 2 | 3: the old owner is killed by the fence before the
    majority's window frees the name; a new owner on the majority; never two at one instant."""
    with Simulation(seed=1, nodes=5, scenario="owner_split", **SCENARIO_OPTIONS["fenced_faults"]) as sim:
        checker = sim.checker
        assert checker is not None and checker.fencing
        majority, new_owner = _split_the_owner_off(sim, fences=True)
        assert new_owner is not None and any(f"@n{i + 1}@" in str(new_owner) for i in majority)
        before = checker.owner_checks
        sim.stabilise()
        sim.check()
        assert checker.owner_checks > before > 100  # checked all along, not only at the end


@pytest.mark.timeout(30)
def test_a_minority_that_does_not_fence_is_caught_while_it_happens() -> None:
    """The same split with the minority's fence disabled: the old owner answers on its side while the
    majority names a new one. The heal resolves the conflict, so the end-of-run check alone would
    see one owner; the instant check reports the two."""
    with Simulation(seed=1, nodes=5, scenario="owner_split_unfenced",
                    partition_policy=PartitionPolicy.of("keep_majority")) as sim:
        _split_the_owner_off(sim, fences=False)
        sim.stabilise()
        with pytest.raises(SimulationFailure, match="2 live processes answer for 'sim_leader' at once"):
            sim.check()


@pytest.mark.timeout(60)
def test_a_node_restarted_alone_does_not_win_alone() -> None:
    """keep_majority (issue 15): a node restarted while it could not reach the others had a view
    of itself only, won 1 of 1 and registered sim_leader beside the live owner. Now a node started
    with seeds has not joined: it stays fenced until a member admits it (its view then is the
    cluster's) or it founds a cluster with a majority of itself and its seeds."""
    sim = Simulation(seed=0, nodes=5, scenario="fenced_restarts", **SCENARIO_OPTIONS["fenced_faults"])
    try:
        sim.run_until(sim.converged, 10)
        sim.run_for(1.0)
        sim.random_faults(rate=1.0, duration_s=20.0)
        sim.restart_crashed()
        sim.stabilise()
        sim.check()
    finally:
        sim.close()


@pytest.mark.timeout(60)
def test_a_node_restarted_behind_a_partition_stays_fenced_until_admitted() -> None:
    """The same, step by step: n3 crashes, the others down it; it restarts cut off from everyone
    and stays fenced; the heal lets the members admit it and it unfences."""
    with Simulation(seed=2, nodes=5, scenario="restart_alone", **SCENARIO_OPTIONS["fenced_faults"]) as sim:
        sim.run_until(sim.converged, 10)
        sim.crash(2)
        sim.run_for(3.0)  # detection 0.6 s + the window 1.2 s: downed
        sim.partition([2], [0, 1, 3, 4])
        sim.restart(2)
        sim.run_for(2.0)
        guard = sim.dist(2).partition_guard
        assert guard is not None and guard.fenced and "not joined" in guard.fenced_why
        sim.heal()
        sim.run_until(lambda: not guard.fenced, 10)
        assert guard.view == {h.node_id for h in sim.hosts}
        sim.stabilise()
        sim.check()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", (6, 13, 40))
def test_a_paused_node_learns_the_owner_after_a_stale_conflict(seed: int) -> None:
    """Global registry (issue 15): n5, resumed from a pause, still named a process of n1 that had
    died meanwhile (held: n1 was lost, the takeover window not over). Before the fix it resolved
    n4's live registration as the loser against that stale entry, dropped the stale one when n1
    came back and never asked n4 again: 'nodes disagree on the owner of sim_leader'. Now a held
    name wins no conflict, and a peer whose registration was kept out is asked for its names
    again when the owner that kept it out goes (seeds 13 and 40 ended the same way)."""
    run_scenario("fenced_faults", seed)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", (38, 39, 47))
def test_two_sides_do_not_both_win_after_a_downed_member_rejoins_one(seed: int) -> None:
    """keep_majority (issue 15), seed 47: views diverged. n2 was downed by everyone (out of every
    view); it rejoined n3 and n5, which counted it again at once, then n1 n4 | n2 n3 n5: n1 n4
    reached 2 of their view of 4 and won the tie (lowest id), n3 n5 with n2 reached 3 of 5 and won
    too: two owners of sim_leader (38 and 39 alike). Now a rejoining member enters a view only once
    every member the node reaches reports reaching it, and a side must win under its view and
    under every view its members last reported: n3 n5 lose under n1's view of 4."""
    run_scenario("fenced_faults", seed)


@pytest.mark.timeout(60)
def test_a_simulated_pause_longer_than_the_timeout_fences_on_resume() -> None:
    """Seed 43: the partition guard's gate read only the real liveness thread, so a simulated
    pause never fenced the node; resumed, it answered for `sim_leader` beside the owner the
    majority named meanwhile. Now a simulated node's heartbeats report their pause gaps on the
    virtual clock and the gate fences it in the instant it resumes (as on SIGCONT)."""
    with Simulation(seed=3, nodes=5, scenario="pause_gate", **SCENARIO_OPTIONS["fenced_faults"]) as sim:
        sim.run_until(sim.converged, 10)
        sim.run_until(lambda: _owner_index(sim) is not None, 10)
        guard = sim.dist(2).partition_guard
        assert guard is not None
        fenced: list[str] = []
        sim.node(2).events.subscribe(lambda e: fenced.append(e.data["reason"]) if e.kind == "node_fenced" else None)
        sim.pause(2)
        sim.run_for(0.3)  # shorter than the timeout (0.6 s): no fence
        sim.resume(2)
        sim.run_for(0.0)
        assert not guard.fenced
        sim.pause(2)
        sim.run_for(3.0)
        assert not guard.fenced  # (a frozen node notices nothing)
        sim.resume(2)
        sim.run_for(0.0)
        assert guard.fenced and fenced == ["frozen for longer than the heartbeat timeout"]
        sim.stabilise()
        sim.check()
    run_scenario("fenced_faults", 43)


@pytest.mark.timeout(60)
def test_a_restarted_node_joins_only_through_an_unfenced_member() -> None:
    """fenced_faults 32 (crashes and restarts back in the scenario): n3, restarted, took the view of
    the one member it reached, n2, which was fenced and had been downed by the others (a fenced node
    downs nobody: its view was stale); n3 counted itself admitted and won 2 of 4 with n2's tie while
    n1 n4 n5 won 3 of 4: two owners. Now only an unfenced member's view admits a joining node."""
    run_scenario("fenced_faults", 32)


@pytest.mark.timeout(60)
def test_parked_children_share_one_retry_timer() -> None:
    """fenced_faults 18: n1, alone after a pause (the lowest id of a view of two), could place its
    two fenced children nowhere; each retry re-parked both and armed a timer per child, so the
    retries doubled every half second and the run never ended (thousands per simulated second).
    Now the parked children share one timer."""
    run_scenario("fenced_faults", 18)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", (67, 162))
def test_a_name_whose_process_was_fenced_mid_registration_is_dropped_everywhere(seed: int) -> None:
    """Global registry, fenced_faults 67: n2 fenced while its registration of sim_leader was under
    way; its own commit killed the process (the fence) and sent the drop, which reached n4 before
    n2's commit to n4 did, so n4 named a dead process for good ('nodes disagree on the owner').
    Now a registration whose process of this node is gone after the commits drops the name again
    behind them, and raises NodeFencedError when the fence was the cause."""
    run_scenario("fenced_faults", seed)


@pytest.mark.timeout(60)
def test_a_fenced_supervisor_does_not_retry_a_failing_restart_at_once() -> None:
    """DistributedSupervisor, fenced_faults 194: n4's supervisor was restarting w3 when n4 fenced;
    the start failed, and the base class's restart retried it at once, again and again (every start
    fails while fenced): 2,000 restarts in 6 simulated seconds, and w3 ended up running twice. Now a
    restart that fails while the node is fenced is parked until the unfence."""
    run_scenario("fenced_faults", 194)


@pytest.mark.timeout(60)
def test_a_downed_member_that_rejoins_one_side_of_a_split_does_not_make_it_win() -> None:
    """The schedule of seeds 38, 39 and 47, step by step: n2 is downed by everyone; then n1 n4 | n2
    n3 n5 with n2 back on the second side. n3 and n5 admit n2 (every member they reach reaches it)
    and reach 3 of their view of 5, but they last heard n1 decide over 4 without n2, and reach 2 of
    those 4 without the lowest id: they lose. n1 n4 win the tie over 4, and only they run."""
    with Simulation(seed=5, nodes=5, scenario="rejoin_split", **SCENARIO_OPTIONS["fenced_faults"]) as sim:
        sim.run_until(sim.converged, 10)
        sim.partition([1], [0, 2, 3, 4])
        sim.run_for(3.0)  # detection 0.6 s + the window 1.2 s: n2 downed
        n2 = sim.hosts[1].node_id
        assert all(n2 not in sim.dist(i).partition_guard.view for i in (0, 2, 3, 4))  # type: ignore[union-attr]
        sim.heal()
        sim.partition([0, 3], [1, 2, 4])
        sim.run_for(4.0)
        fenced = [sim.dist(i).partition_guard.fenced for i in range(5)]  # type: ignore[union-attr]
        assert fenced == [False, True, True, False, True]
        sim.stabilise()
        sim.check()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", (499, 576))
def test_a_losing_node_admits_nobody(seed: int) -> None:
    """keep_majority, fenced_faults 576 (499 alike): n2, downed by the others, reached only n1, which
    had just lost the others and admitted n2 alone; n2 then won a tie over its own stale views of
    n3 and n4 (they had downed it meanwhile) while n3 n4 won over their own view: two owners. Now
    a node admits a rejoining member only while its side wins under every view it knows."""
    run_scenario("fenced_faults", seed)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", (8, 15, 31, 128))
def test_two_groups_that_downed_each_other_admit_each_other(seed: int) -> None:
    """keep_majority, fenced_faults 8 (15, 31, 128 alike, after the rule above): n2 n3 had downed n4
    n5 and n4 n5 had downed n2 n3 at other times; after the heal each was fenced because the other
    group had not admitted it, and a fenced node admitted nobody: fenced for good, no supervised
    child running. Now a node fenced only for not being admitted yet still admits."""
    run_scenario("fenced_faults", seed)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", (328, 333))
def test_a_yielding_supervisors_children_unknown_to_the_takeover_are_stopped(seed: int) -> None:
    """DistributedSupervisor, fenced_faults 328 (333 alike): n3 took the supervisor over and
    restarted w1 on n1, then fenced 8 ms later (an overlap); n2 took it over in turn without having
    heard of that instance and restarted w1 on n2; n3 yielded to n2 after the heal. n1 still
    counted n3's supervisor as a live rival (its node was up), so w1 ran twice. Now a yielding
    supervisor tells every node, which sweep the instances started for it that the takeover does
    not supervise."""
    run_scenario("fenced_faults", seed)


@pytest.mark.timeout(60)
def test_a_suspended_supervisor_does_not_yield_to_a_crashed_takeover() -> None:
    """DistributedSupervisor, fenced_faults 432: n2 took the supervisor over while n1 was fenced,
    then crashed; unfenced, n1's suspended supervisor asked its peers whether it had been taken
    over, a peer still holding n2's replica named n2's dead takeover, n1's supervisor yielded to
    it and nobody took that one over: the supervisor was gone. Now a peer names only a holder it
    believes alive (or one it is taking over itself)."""
    run_scenario("fenced_faults", 432)


@pytest.mark.timeout(60)
def test_two_suspended_rival_takeovers_do_not_both_yield() -> None:
    """DistributedSupervisor, fenced_faults 654: n3 (16.73) and n2 (19.42) each took n1's
    supervisor over, then both were fenced (suspended, so neither pushed a replica). Unfenced,
    each asked its peers whether it had been taken over; each was named the other (n1 held n2's
    replica, n4 n3's, and each hosts its own), so n3 yielded to n2 at 21.81 and n2 to n3 at 22.12:
    no supervisor left while w1 and w3 ran on n1. Now a suspended supervisor yields only to a
    takeover of itself (it is in that holder's lineage) or to a lower-ranked rival."""
    run_scenario("fenced_faults", 654)


@pytest.mark.timeout(60)
def test_a_restarted_member_does_not_count_as_the_one_in_a_stale_view() -> None:
    """keep_majority, fenced_faults 837: n1 downed n3, n2 and n5 one by one, then won a tie with
    n4 and downed it: n1 alone, unfenced. n5 woke from a pause with its stale view n1 n4 n5 and
    reached the restarted n4 (a new incarnation that had not joined) and n2: it counted the new n4
    as the n4 of its view, won 2 of 3, admitted n2, and n2 n4 n5 ran beside n1: two owners of
    'sim_leader' at 21.48. A peer that has not joined counts once this node admitted it, or in
    place of its predecessor when this node reaches every member of the predecessor's last view."""
    run_scenario("fenced_faults", 837)


@pytest.mark.timeout(60)
def test_a_two_node_cluster_whose_lower_node_restarts_runs_on() -> None:
    """keep_majority, 2 nodes: n1 (the lower id, the tie's winner) crashes and restarts before it
    is detected. n2 fences when it loses n1 (1 of 2, the tie lost); it reaches every member of the
    view n1 last reported (n1 n2), so the new n1 counts in place of the old one: n2 unfences, admits
    it, and both end unfenced in one view (counting only admitted incarnations left both fenced for
    good)."""
    with Simulation(seed=3, nodes=2, scenario="two_node_restart", **SCENARIO_OPTIONS["fenced_faults"]) as sim:
        sim.run_until(sim.converged, 10)
        sim.run_for(1.0)  # the workload (a supervisor, sim_leader) starts
        sim.crash(0)
        sim.restart(0)
        guards = [sim.dist(i).partition_guard for i in range(2)]
        sim.run_until(lambda: all(g is not None and not g.fenced and len(g.view) == 2 for g in guards), 10)
        sim.stabilise()
        sim.check()


@pytest.mark.timeout(60)
def test_a_lost_nodes_lock_on_a_name_is_held_through_the_takeover_window() -> None:
    """keep_majority, fenced_faults 770: n2 held the lock on 'sim_leader' everywhere and waited
    for n1's commit answer when a partition cut it off (n2 | n1 n3 n4 n5). The majority released
    n2's lock as soon as it lost n2 and registered its own owner at 19.76; n2 lost n1 at 19.80,
    its registration completed on its side, and it fenced 4 ms later: two owners meanwhile. Now a
    lock held by a lost node stays held until the takeover window has passed, like its names."""
    run_scenario("fenced_faults", 770)


@pytest.mark.timeout(60)
def test_a_joining_node_founds_a_cluster_only_after_trying_every_seed() -> None:
    """keep_majority, fenced_faults 776: n3 and n4 restarted as a partition healed; they reached
    each other and n5 (restarted earlier, not admitted yet) first, found a majority of their seeds
    with no view among them, and founded a second cluster 7 ms before their dials reached n1 and
    n2, which ran on: two owners. Now a node founds only once a dial of every seed it does not
    reach, started when founding became possible, has ended."""
    run_scenario("fenced_faults", 776)


@pytest.mark.timeout(60)
def test_a_joining_node_founds_only_after_dialing_every_seed_afresh() -> None:
    """keep_majority, fenced_faults 385: n2 n3 ran on as a cluster of two; n1, n4, n5 restarted
    during partitions, their dials of n2 and n3 failed, and 2.5 s after the heal, with the redial
    back-off still waiting, they reached each other and founded a second cluster: two owners. Now
    founding waits for a dial of every seed not reached, started once founding became possible."""
    run_scenario("fenced_faults", 385)
