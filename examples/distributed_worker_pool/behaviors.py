"""A job queue and its workers.

The `JobQueue` runs on the coordinator node under the global name "job_queue". `Worker`s are
children of a `DistributedSupervisor` spread over the cluster. The queue *leases* each job to
one worker and monitors every worker: a worker that ends, or whose node is lost, gives its
leased job back to the queue. The supervisor, for its part, restarts that worker on a surviving
node, and the new worker asks the queue for work like any other.

Delivery is at least once: a worker may finish a job and die before its result arrives, so
the job runs again elsewhere. Results are kept by job id, so a second result is just dropped
(the work has to be idempotent, as it is here).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import anyio

from examples.common import say
from noex_lab import BehaviorRegistry, Down, GenServer, NoReply, ProcessRef, RemoteMonitor

QUEUE = "job_queue"


def work(n: int) -> int:
    """The job itself, a stand-in for real work (each job also sleeps `job_ms`)."""
    return n * n


class JobQueue(GenServer):
    """Hands jobs to idle workers, collects their results, re-queues the jobs of lost workers.

    `("run", job_ids)` answers (much later, with `NoReply` and `GenServer.reply`) once every job
    has a result.
    """

    def init(self, arg: None) -> dict[str, Any]:
        return {
            "pending": deque(),  # job ids waiting for a worker
            "idle": deque(),  # workers waiting for a job
            "leases": {},  # worker ref -> the job id it is working on
            "watched": set(),  # workers we monitor
            "results": {},  # job id -> (value, node that computed it)
            "requeued": 0,
            "duplicates": 0,
            "batch": None,  # (caller, job ids, start time) of the running batch
        }

    def handle_call(self, msg: Any, state: dict[str, Any]) -> Any:
        match msg:
            case ("run", list(job_ids)):
                state["pending"].extend(job_ids)
                state["batch"] = (self.caller, job_ids, time.monotonic())
                self._dispatch(state)
                return NoReply(state)
        raise ValueError(f"unknown request {msg!r}")

    async def handle_cast(self, msg: Any, state: dict[str, Any]) -> Any:
        match msg:
            case ("ready", ProcessRef() as worker):
                state["watched"].add(worker)
                await RemoteMonitor.monitor(worker)  # its Down gives its lease back, see handle_info
            case ("done", ProcessRef() as worker, job_id, value):
                state["leases"].pop(worker, None)
                if job_id in state["results"]:
                    state["duplicates"] += 1
                else:
                    state["results"][job_id] = (value, str(worker.node))
                    say(f"RESULT {job_id} {value} {worker.node}")
                self._maybe_finish(state)
            case _:
                raise ValueError(f"unknown message {msg!r}")
        if worker in state["watched"]:  # not already reported down
            state["idle"].append(worker)
            self._dispatch(state)
        return state

    def handle_info(self, msg: Any, state: dict[str, Any]) -> Any:
        if isinstance(msg, Down) and msg.ref in state["watched"]:
            worker = msg.ref
            state["watched"].discard(worker)
            if worker in state["idle"]:
                state["idle"].remove(worker)
            job_id = state["leases"].pop(worker, None)
            if job_id is not None and job_id not in state["results"]:
                state["pending"].appendleft(job_id)
                state["requeued"] += 1
                say(f"REQUEUED {job_id} from {worker.node} reason={msg.reason}")
                self._dispatch(state)
        return state

    def _dispatch(self, state: dict[str, Any]) -> None:
        while state["pending"] and state["idle"]:
            worker, job_id = state["idle"].popleft(), state["pending"].popleft()
            if job_id in state["results"]:
                state["idle"].appendleft(worker)
                continue
            state["leases"][worker] = job_id
            GenServer.cast(worker, ("job", job_id))  # lost if its node just died: then its Down re-queues it

    def _maybe_finish(self, state: dict[str, Any]) -> None:
        if state["batch"] is None:
            return
        caller, job_ids, started = state["batch"]
        if all(job_id in state["results"] for job_id in job_ids):
            state["batch"] = None
            GenServer.reply(caller, {
                "results": {job_id: state["results"][job_id] for job_id in job_ids},
                "requeued": state["requeued"], "duplicates": state["duplicates"],
                "seconds": time.monotonic() - started,
            })


class Worker(GenServer):
    """Asks the queue for work (by its global name: the queue may be on any node), does each
    job it is given and reports the result, which also asks for the next job."""

    def init(self, arg: dict[str, Any]) -> dict[str, Any]:
        GenServer.cast(QUEUE, ("ready", self.ref))
        return arg

    async def handle_cast(self, msg: Any, state: dict[str, Any]) -> Any:
        match msg:
            case ("job", int(job_id)):
                await anyio.sleep(state["job_ms"] / 1000)
                GenServer.cast(QUEUE, ("done", self.ref, job_id, work(job_id)))
                return state
        raise ValueError(f"unknown message {msg!r}")


BehaviorRegistry.register("pool_worker", Worker)
