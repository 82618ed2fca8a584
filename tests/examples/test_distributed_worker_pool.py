"""examples/distributed_worker_pool end to end: a worker node is SIGKILLed mid-batch, every job still finishes."""

from __future__ import annotations

from tests.helpers.examples import ExampleNode

POOL = "examples.distributed_worker_pool.node"
FAST = ["--heartbeat-interval-ms", "200", "--heartbeat-miss-threshold", "3"]
JOBS = 200


def test_jobs_of_a_killed_worker_node_are_requeued_and_its_workers_migrate(
    example_nodes: list[ExampleNode],
) -> None:
    def start(name: str, *args: str) -> ExampleNode:
        node = ExampleNode(POOL, "--name", name, *FAST, *args)
        example_nodes.append(node)
        return node

    boss = start("boss", "--jobs", str(JOBS), "--workers", "6", "--job-ms", "30", "--expect-peers", "2")
    boss_id = boss.started()
    w1, w2 = start("w1", "--seed", str(boss_id)), start("w2", "--seed", str(boss_id))
    w1.started()
    victim_id = w2.started()
    boss.wait_line("PLACED ", count=6)
    placed = {line.split()[1]: line.split()[3] for _, line in boss.matching("PLACED ")}
    on_victim = sorted(worker for worker, node in placed.items() if node == str(victim_id))
    assert len(on_victim) == 2, placed  # round_robin over boss, w1, w2

    boss.wait_line("RESULT ", count=40)
    killed_at = w2.kill()
    done_at, summary = boss.wait_line("BATCH done", timeout=20)
    assert done_at - killed_at < 10.0

    results: dict[int, int] = {}
    for _, line in boss.matching("RESULT "):
        _, job, value, _node = line.split()
        assert int(job) not in results, f"job {job} reported twice"
        results[int(job)] = int(value)
    assert sorted(results) == list(range(JOBS))
    assert all(value == job * job for job, value in results.items())
    assert f"jobs={JOBS} wrong_or_missing=0" in summary, summary

    # The killed node's leases went back to the queue, and its workers moved to the survivors.
    requeued = [line for _, line in boss.matching("REQUEUED ")]
    assert requeued and all(f"from {victim_id} reason=noconnection" in line for line in requeued), requeued
    migrated = [line.split() for _, line in boss.matching("MIGRATED ")]
    assert sorted(m[1] for m in migrated) == on_victim
    assert all(m[3] == str(victim_id) and m[5] in (str(boss_id), str(w1.id)) for m in migrated), migrated
    last_migration = max(t for t, _ in boss.matching("MIGRATED "))
    after = {line.split()[3] for _, line in boss.matching("RESULT ", since=last_migration)}
    assert after == {str(boss_id), str(w1.id)}
