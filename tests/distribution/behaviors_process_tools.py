"""Behaviors for the process-tools and state-machine tests on `noex-lab node` processes
(imported with --behaviors)."""

from __future__ import annotations

import time
from typing import Any

import anyio

from noex_lab import BehaviorRegistry, GenServer, StateMachine
from noex_lab.statem import KeepState, Postpone, Reply, StateTimeout


class Chatty(GenServer):
    """State: {"count": n, "seen": [...]}. Call ("tell", ref) casts to ref; ("nap", s) awaits s
    seconds; "crash" raises."""

    def init(self, arg: Any) -> Any:
        return {"count": 0, "seen": []}

    async def handle_call(self, msg: Any, state: Any) -> Any:
        if msg == "get":
            return state, state
        if msg == "crash":
            raise RuntimeError("crashed on request")
        if isinstance(msg, tuple) and msg[0] == "tell":
            GenServer.cast(msg[1], ("hello", self.ref))
            return "told", state
        if isinstance(msg, tuple) and msg[0] == "nap":  # busy in a callback for msg[1] seconds
            # (at least msg[1] seconds of the wall clock: uvloop's timers count from the loop's
            # cached millisecond time and may end up to a millisecond early)
            until = time.perf_counter() + msg[1]
            for _ in range(100):
                left = until - time.perf_counter()
                if left <= 0:
                    break
                with anyio.move_on_after(left):
                    await anyio.Event().wait()
            return "rested", state
        return msg, state

    def handle_cast(self, msg: Any, state: Any) -> Any:
        return {"count": state["count"] + 1, "seen": [*state["seen"], msg]}


BehaviorRegistry.register("chatty", Chatty)


class Turnstile(StateMachine):
    """locked --coin--> unlocked --push or 0.2 s--> locked; a push while locked waits (postponed)."""

    state_enter = True

    def init(self, arg: Any) -> Any:
        return "locked", {"coins": 0, "passed": 0}

    def handle_event(self, event_type: str, content: Any, state: str, data: dict[str, int]) -> Any:
        if event_type == "enter":
            return KeepState(actions=StateTimeout(0.2, "relock") if state == "unlocked" else ())
        if event_type == "cast" and content == "coin":
            return "unlocked", {**data, "coins": data["coins"] + 1}
        if event_type == "call" and content == "push":
            if state == "locked":
                return KeepState(actions=Postpone())
            return "locked", {**data, "passed": data["passed"] + 1}, Reply("passed")
        if event_type == "call" and content == "state":
            return KeepState(actions=Reply(state))
        if event_type == "state_timeout":
            return "locked", data
        return KeepState()


BehaviorRegistry.register("turnstile", Turnstile)
