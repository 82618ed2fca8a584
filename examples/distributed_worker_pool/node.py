"""A worker-pool node: `python -m examples.distributed_worker_pool.node --name w1 ...`.

Without `--jobs` the node only offers itself: the supervisor places workers on it. With
`--jobs N` it is the coordinator: once `--expect-peers` other nodes have joined it starts the
job queue and a `DistributedSupervisor` of `--workers` workers placed round-robin over the
cluster, runs a batch of N jobs and prints the results. Kill a worker node mid-batch
(`kill -9 <pid>`): its workers are restarted on the surviving nodes and its jobs are re-queued.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from examples.common import node_parser, run_node, say, wait_for
from examples.distributed_worker_pool.behaviors import QUEUE, JobQueue, work
from noex_lab import DistributedSupervisor, GenServer, GlobalRegistry, Node
from noex_lab.introspection import NodeEvent


def report(event: NodeEvent) -> None:
    """The supervisor's events: where workers went, and why."""
    data = event.data
    if event.kind == "child_migrated":
        say(f"MIGRATED {data['child']} from {data['from_node']} to {data['to_node']}")
    elif event.kind == "node_failure_detected":
        say(f"NODE LOST {data['node']}")


async def coordinate(node: Node, args: argparse.Namespace) -> None:
    await wait_for(lambda: len(node.get_nodes()) >= args.expect_peers, 60.0, f"{args.expect_peers} other nodes")
    queue = await GenServer.start(JobQueue)
    await GlobalRegistry.register(QUEUE, queue)  # on every node before it returns: workers can find it
    workers = [{"id": f"worker-{i}", "behavior_name": "pool_worker", "arg": {"job_ms": args.job_ms}}
               for i in range(args.workers)]
    # Losing a node restarts all of its workers at once: allow for that in the restart intensity.
    sup = await DistributedSupervisor.start(children=workers, node_selector="round_robin",
                                            max_restarts=2 * args.workers, within_ms=10_000)
    DistributedSupervisor.on_event(sup, report)
    for child in await DistributedSupervisor.which_children(sup):
        say(f"PLACED {child.id} on {child.node}")

    job_ids = list(range(args.jobs))
    done = await GenServer.call(queue, ("run", job_ids), timeout=3600)
    results = done["results"]  # job id -> (value, node)
    wrong = [i for i in job_ids if i not in results or results[i][0] != work(i)]
    say(f"BATCH done jobs={len(job_ids)} wrong_or_missing={len(wrong)} requeued={done['requeued']} "
        f"duplicates={done['duplicates']} seconds={done['seconds']:.2f}")
    await anyio.sleep_forever()  # keep serving until Ctrl-C


def parse_args() -> argparse.Namespace:
    parser = node_parser("A node of a distributed worker pool; with --jobs, the coordinator.")
    parser.add_argument("--jobs", type=int, default=None, help="be the coordinator and run a batch of N jobs")
    parser.add_argument("--workers", type=int, default=6, help="coordinator: how many workers (default 6)")
    parser.add_argument("--expect-peers", type=int, default=2,
                        help="coordinator: start once this many other nodes have joined (default 2)")
    parser.add_argument("--job-ms", type=int, default=250, help="coordinator: how long each job takes")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    # Without --jobs, the node only serves: the coordinator's supervisor places workers on it.
    sys.exit(anyio.run(run_node, arguments, coordinate if arguments.jobs is not None else None))
