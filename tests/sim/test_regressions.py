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


@pytest.mark.timeout(60)
def test_global_name_after_a_concession_frees_it() -> None:
    """Global registry: n3 (just restarted) took n2's registration from n2's join table; n1's table
    with n1's registration came after and was kept out (a later table only fills free names).
    Then n2 conceded to n1: n3 dropped n2's and waited for n1's word, which had come already, so
    n3 had no owner for good ('nodes disagree on the owner of sim_leader'). Now a node asks again
    the peers it kept out, and the winner's node, when the name goes from its replica."""
    run_scenario("random_leaves", 523)


@pytest.mark.timeout(60)
def test_a_remote_child_links_to_its_supervisor_when_incarnations_collide() -> None:
    """DistributedSupervisor: a child spawned on a node whose incarnation equals the supervisor
    node's (incarnation = clock in us x 1000 + randrange(1000): nodes started in the same
    microsecond collide 1 time in 1000) was linked to the local process with the supervisor's pid
    instead of the supervisor; when its node later left, nothing restarted it ("supervised child
    w3 runs 0 times, not 1"), or, linked to itself, outlived its supervisor's node. The campaign
    also hit it with seeds 40197, 40235 and 40258 (every random scenario: their nodes' incarnations
    collide at start). Fixed in `Node.local_process`, which now also matches the ref's node."""
    run_scenario("random_leaves", 20088)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("scenario", "seed"), [("overlapping_partition", 1), ("random", 4)])
def test_a_child_replaced_after_its_node_was_lost_stops_when_the_node_is_back(scenario: str, seed: int) -> None:
    """DistributedSupervisor (children monitored, not linked): the supervisor lost a node to a
    partition or a pause (no takeover on the other side, or one that lost the conflict) and
    restarted its child elsewhere; the old instance ran on where it was, unsupervised, after the
    heal ("supervised child w3 runs 2 times"). Now the supervisor (or its takeover, through the
    replica) stops the instances it replaced once their node, same incarnation, is back."""
    run_scenario(scenario, seed)


@pytest.mark.timeout(60)
def test_a_child_whose_start_answer_was_lost_is_stopped() -> None:
    """DistributedSupervisor: a restart's `dsup.spawn_many` reached n3 and started w2, but n3's
    answer was cut (a partition, a closed connection); the supervisor took the start as failed and
    started w2 on n4, and w2 on n3 ran on, unsupervised ("w2 runs 2 times"; also seed 11 of the
    determinism test's short runs). Now a node that started children for a supervisor whose
    request failed is asked (`dsup.reap`) to stop those the supervisor does not know."""
    run_scenario("random_storm", 3)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("scenario", "seed"), [("random", 8), ("random_storm", 55)])
def test_orphans_known_only_to_a_conflict_loser_and_a_restarted_host(scenario: str, seed: int) -> None:
    """random 8: a takeover (n2) started w2 on n3 but lost the answer, then lost a name conflict
    before it met n3 again: w2 ran twice for good. Now the loser passes the instances it replaced
    and the nodes whose answers it lost to the winner, which keeps asking those nodes to reap
    (a reap cast on a connection being cut is lost). random_storm 55: the supervisor's node
    crashed and restarted under the same id within the failure detection; the restarted node
    (no replica) was the lowest member, so nobody took over and w3 ran unsupervised. Now a host
    back as a new incarnation counts as gone, and the lowest *other* member takes over."""
    run_scenario(scenario, seed)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("scenario", "seed"), [("random_storm", 6), ("random_leaves", 10)])
def test_a_graceful_leave_whose_peer_is_lost_reports_no_error(scenario: str, seed: int) -> None:
    """A node leaving gracefully asks each peer to move its children (`dsup.evacuate`); a peer
    lost meanwhile (crash, partition) made that an "error" event ("hand-off to n5 failed:
    NodeNotReachableError"). It is a fault, not a failure: logged, and the peer's supervisors see
    the node's children lost and restart them."""
    run_scenario(scenario, seed)


@pytest.mark.timeout(60)
def test_a_lost_start_answer_survives_a_takeover() -> None:
    """Found by `make sim SEEDS=200` (19 of its 26 failures): the supervisor that asked n4 to start
    w2 (0.6@n4, t=16.67) lost the answer and then its own node; its pending reaps (`_unsure`) were
    not in its replica, so no takeover asked n4 to reap and w2 ran twice. Now they are replicated
    and the takeover asks each such node to reap."""
    run_scenario("random_storm", 4)


@pytest.mark.timeout(60)
def test_a_takeover_when_the_lowest_member_holds_no_replica() -> None:
    """Found by `make sim SEEDS=200`: the takeover on n3 and the original on n1 died (n3 at t=16.55,
    n1 at 17.53, both restarted); n5 held n3's replica but the lowest other member was the restarted
    n1, which held none: nobody took over and w2 ran unsupervised. Now the lowest member that holds
    a replica takes over (the members below it answer `dsup.holder` with none)."""
    run_scenario("random_storm", 24)


@pytest.mark.timeout(60)
def test_a_graceful_leave_after_a_supervisor_lost_a_conflict_reports_no_error() -> None:
    """random_storm 26 (found by `make sim SEEDS=50` once the lowest replica holder took over): n3
    and n5 each took the supervisor over in a partition; n5's lost the conflict while n5 left, so
    the hand-off asked a supervisor that had just stopped ("hand-off by supervisor ...:
    ServerNotRunningError"). A supervisor that ended meanwhile has nothing to move: logged."""
    run_scenario("random_storm", 26)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", (16, 56, 49))
def test_the_instances_of_a_lost_rival_supervisor_are_stopped(seed: int) -> None:
    """Found by `make sim SEEDS=300` (random_storm 16 and 56; 49 failed the same way on main, its
    schedule no longer reaches it since silent lower members are asked again): both sides of a
    partition took the supervisor over; one takeover (n5 in seed 16) started w1 and w2 on n2, and
    its replica was then superseded at every holder by its rival's (one replica per name), so when
    n5 crashed nobody took it over and nobody knew of its instances: w1 and w2 ran twice for good.
    Now a node remembers the name of the supervisor it started each child for, and stops the
    instances of one gone from its view (its node down or another incarnation) that a live
    supervisor of that name does not list (on its replica, or when that node leaves)."""
    run_scenario("random_storm", seed)


@pytest.mark.timeout(60)
def test_a_takeover_killed_with_its_node_reports_no_error() -> None:
    """random_storm 11 (`make sim SEEDS=300`): n4 crashed while its takeover's standby adopted the
    supervisor: the adopt call failed with ServerNotRunningError ('killed') and the takeover task
    reported an error event, as a SIGKILLed node never does; and the children the standby had
    started by then ran on with nobody supervising them. Now a standby killed before it adopted
    ends the takeover quietly (the replica kept), and its instances are swept as orphans."""
    run_scenario("random_storm", 11)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scenario", ("random_storm", "random_leaves"))
def test_a_child_lost_while_its_supervisor_leaves_is_restarted_by_the_takeover(scenario: str) -> None:
    """Seed 75 (`make sim SEEDS=300`, both scenarios): n1 left gracefully while n3, which ran w3,
    had crashed; the Down for w3 reached n1's supervisor during the hand-off, which marked w3
    stopped ("nowhere to go", meant for a cluster shutting down), so its last replica listed w3 as
    stopped and the takeover never restarted it ("w3 runs 0 times"). Meanwhile n3's loss made n2
    take n1's supervisor over before n1 had left (a departing host counted as gone), and n1's last
    replica then made it take over a second time. Now a leaving node's supervisor leaves such a
    child to its takeover, and a host that is leaving is not taken over before its goodbye."""
    run_scenario(scenario, 75)


@pytest.mark.timeout(60)
def test_a_node_loss_handled_after_the_node_is_back_stops_what_it_replaced() -> None:
    """random_leaves 266 (`make sim SEEDS=300`): n1, paused for 18 s, resumed to a burst of node
    losses and returns; its supervisor restarted w2 on n3 (back by then), then handled n3's loss
    from before the return, which took the new w2 as lost too and restarted it on n5. A replaced
    instance is stopped when its node comes back, but n3 was back already: w2 ran twice for good.
    Now a node loss handled while the node is up again stops the instances it replaced at once."""
    run_scenario("random_leaves", 266)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", (20, 25))
def test_a_fenced_takeover_does_not_yield_to_the_supervisor_it_took_over(seed: int) -> None:
    """fenced_faults (keep_majority) 25: n2 took over n1's supervisor after the window, then fenced
    itself (an overlapping partition); after the heal each of the two, suspended by its fence,
    asked its peers for another supervisor of the name, found the other, and yielded to it: both
    stopped, and w2 ran on unsupervised. Seed 20: a takeover (n3) yielded to the supervisor it had
    taken over, which never knew the children it had restarted. Now a supervisor knows the ones it
    took over (its lineage, in its replica) and never yields to them; they yield to it."""
    run_scenario("fenced_faults", seed)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scenario", ("random", "random_leaves"))
def test_a_takeover_whose_node_pauses_while_it_adopts_reports_no_error(scenario: str) -> None:
    """Seed 537 (`make sim SEEDS=100 SEED0=500`): n3 took the supervisor over and was paused 0.1 s
    later; its standby's restarts waited on nodes it could no longer reach, and the takeover's
    call asking it to adopt timed out after 10 s: an "error" event, though the standby went on and
    supervised. Now a standby still adopting after that call's timeout is logged, not an error."""
    run_scenario(scenario, 537)


@pytest.mark.timeout(60)
def test_an_adopted_instance_is_swept_when_its_adopter_is_lost_too() -> None:
    """random_storm 523 (`make sim SEEDS=100 SEED0=500`): n1 left and handed w1 off to n4 (an
    instance started for n1's supervisor); n3's takeover adopted it, and n4's sweep, seeing the
    takeover list it, forgot it; the takeover was then lost with nobody to take it over, and the
    final supervisor never knew the instance: w1 ran twice. Now an instance a live supervisor
    adopts is remembered as that supervisor's, so it is swept if that one is lost in turn."""
    run_scenario("random_storm", 523)
