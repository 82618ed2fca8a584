"""`BehaviorRegistry`: the allow-list of behaviors other nodes may start here.

It is shared by every node of one OS process (the same code runs on all of them).
"""

from __future__ import annotations

import threading

from ..core.errors import BehaviorNotFoundError, InvalidArgumentError
from ..core.genserver import GenServer

_lock = threading.Lock()
_behaviors: dict[str, type[GenServer]] = {}


class BehaviorRegistry:
    """Behaviors by name; `RemoteSpawn` can only start what is registered on the target."""

    @staticmethod
    def register(name: str, behavior: type[GenServer]) -> None:
        """Register (or replace: notebooks re-run cells) `behavior` under `name`."""
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"a behavior name is a non-empty string, not {name!r}")
        if not (isinstance(behavior, type) and issubclass(behavior, GenServer)):
            raise InvalidArgumentError(f"{behavior!r} is not a GenServer subclass")
        with _lock:
            _behaviors[name] = behavior

    @staticmethod
    def get(name: str) -> type[GenServer]:
        with _lock:
            behavior = _behaviors.get(name)
        if behavior is None:
            raise BehaviorNotFoundError(name)
        return behavior

    @staticmethod
    def names() -> list[str]:
        with _lock:
            return sorted(_behaviors)

    @staticmethod
    def unregister(name: str) -> None:
        with _lock:
            _behaviors.pop(name, None)
