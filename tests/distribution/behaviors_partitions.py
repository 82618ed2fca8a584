"""Behaviors of the partition-policy tests: children that record when they run.

In-process nodes share `time.monotonic()`; node processes write to a file with CLOCK_MONOTONIC,
which is system-wide on Linux, so every record of every node lies on one clock."""

from __future__ import annotations

import os
import time
from typing import Any

from noex_lab import BehaviorRegistry, GenServer

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


BehaviorRegistry.register("partition_recorder", Recorder)
