"""Behaviors for the DistributedSupervisor process tests (imported on `noex-lab node` processes
with --behaviors): a supervisor host, a probe that asks the supervisor from its own node, and a
counter that keeps its count across a graceful hand-off."""

from __future__ import annotations

import time
from typing import Any

from noex_lab import BehaviorRegistry, DistributedSupervisor, GenServer


class DsupHost(GenServer):
    """Starts a DistributedSupervisor on its node with the options in `arg` (no callables)."""

    async def init(self, arg: dict[str, Any]) -> Any:
        return await DistributedSupervisor.start(**arg)

    def handle_call(self, msg: Any, state: Any) -> Any:
        return state, state


BehaviorRegistry.register("dsup_host", DsupHost)


class DsupProbe(GenServer):
    """Answers ("which", name) with `which_children(name)` as seen from its node."""

    async def handle_call(self, msg: Any, state: Any) -> Any:
        if isinstance(msg, tuple) and msg[0] == "which":
            children = await DistributedSupervisor.which_children(msg[1])
            return [[c.id, c.ref, c.restarts, c.status] for c in children], state
        return None, state


BehaviorRegistry.register("dsup_probe", DsupProbe)


class Counter(GenServer):
    """A count that survives a planned move: `handle_handoff` gives it (and when the old instance
    stopped) to the new instance, whose `init` reads it with `DistributedSupervisor.handed_off`."""

    def init(self, arg: Any) -> dict[str, Any]:
        handed = DistributedSupervisor.handed_off()
        if handed is None:
            return {"count": 0, "gap": None, "arg": arg}
        return {"count": handed["count"], "gap": time.time() - handed["stopped_at"], "arg": arg}

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        if msg == "inc":
            state["count"] += 1
        return state

    def handle_call(self, msg: Any, state: dict[str, Any]) -> Any:
        if msg == "get":
            return state["count"], state
        if msg == "gap":
            return state["gap"], state
        if msg == "crash":
            raise RuntimeError("crashed on request")
        return None, state

    def handle_handoff(self, state: dict[str, Any]) -> Any:
        return {"count": state["count"], "stopped_at": time.time()}


BehaviorRegistry.register("counter", Counter)
