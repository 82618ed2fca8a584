"""An example behaviors module for the deployment recipes: replace it with your own.

Every node imports it (`noex-lab node --behaviors app_behaviors`), which registers what other
nodes may start here (`BehaviorRegistry` is the allow-list)."""

from typing import Any

from noex_lab import BehaviorRegistry, GenServer


class Counter(GenServer):
    """A counter: cast "inc" adds one, any call returns the count."""

    def init(self, arg: Any) -> Any:
        return arg or 0

    def handle_call(self, msg: Any, state: Any) -> Any:
        return state, state

    def handle_cast(self, msg: Any, state: Any) -> Any:
        return state + 1 if msg == "inc" else state


BehaviorRegistry.register("counter", Counter)
