"""Behaviors of the partition-policy tests: children that record when they run.

In-process nodes share `time.monotonic()`; node processes write to a file with CLOCK_MONOTONIC,
which is system-wide on Linux, so every record of every node lies on one clock."""

from __future__ import annotations

import os
import time
from typing import Any

from noex_lab import BehaviorRegistry, DistributedSupervisor, GenServer

TICK_S = 0.02
LOG: list[tuple[str, str, Any, float]] = []  # (event, child id, process ref, monotonic) of in-process nodes


class Recorder(GenServer):
    """Records its start (its stop is recorded by the test's exit hook); arg: the child id, or
    {"id": ..., "file": path} to append `<id> <pid> <node name> <event> <monotonic>` lines for
    every tick too."""

    def init(self, arg: Any) -> Any:
        state = arg if isinstance(arg, dict) else {"id": arg, "file": None}
        self._record(state, "start")
        if state["file"]:
            self.send_after(self.ref, "tick", TICK_S)
        return state

    def handle_info(self, msg: Any, state: Any) -> Any:
        if msg == "tick":
            self._record(state, "tick")
            self.send_after(self.ref, "tick", TICK_S)
        return state

    def handle_call(self, msg: Any, state: Any) -> Any:
        return state["id"], state

    def _record(self, state: Any, event: str) -> None:
        now = time.monotonic()
        if state["file"]:
            with open(state["file"], "a") as f:  # one short line per write: appends do not interleave
                f.write(f"{state['id']} {os.getpid()} {self.node.id.name} {event} {now:.6f}\n")
        else:
            LOG.append((event, state["id"], self.ref, now))


class SupervisorStarter(GenServer):
    """Starts, on its own node, the DistributedSupervisor "pool" of `arg["n"]` recorders ticking
    into `arg["file"]`, placed round robin (so a test can put a supervisor on a node process)."""

    async def init(self, arg: Any) -> Any:
        children = [{"id": f"c{i}", "behavior_name": "partition_recorder", "arg": {"id": f"c{i}", "file": arg["file"]}}
                    for i in range(arg["n"])]
        await DistributedSupervisor.start(children=children, node_selector="round_robin", max_restarts=50,
                                          name="pool")
        return arg


BehaviorRegistry.register("partition_recorder", Recorder)
BehaviorRegistry.register("partition_sup_starter", SupervisorStarter)
