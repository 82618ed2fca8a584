"""The behavior `noex-lab demo` runs on its node processes (imported with `--behaviors`)."""

from __future__ import annotations

from typing import Any

from ..core.genserver import GenServer
from ..distribution.behaviors import BehaviorRegistry

TICK_S = 0.5


class DemoWorker(GenServer):
    """A worker that ticks twice a second (so its message count grows in the view)."""

    def init(self, arg: Any) -> dict[str, Any]:
        GenServer.send_after(self.ref, "tick", TICK_S)
        return {"worker": arg, "ticks": 0}

    def handle_info(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        if msg == "tick":
            state["ticks"] += 1
            GenServer.send_after(self.ref, "tick", TICK_S)
        return state

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if msg == "get":
            return dict(state), state
        return msg, state


BehaviorRegistry.register("demo_worker", DemoWorker)
