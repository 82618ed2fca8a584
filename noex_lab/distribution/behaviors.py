"""`BehaviorRegistry`: the allow-list of behaviors other nodes may start here.

It is shared by every node of one OS process (the same code runs on all of them).
"""

from __future__ import annotations

import threading
from typing import Any

from ..core.errors import BehaviorNotFoundError, InvalidArgumentError
from ..core.genserver import GenServer
from ..core.node import running_nodes
from ..core.upgrade import Upgrade, note_name, upgrade_processes

_lock = threading.Lock()
_behaviors: dict[str, type[GenServer]] = {}


class BehaviorRegistry:
    """Behaviors by name; `RemoteSpawn` can only start what is registered on the target."""

    @staticmethod
    def register(name: str, behavior: type[GenServer]) -> None:
        """Register (or replace: notebooks re-run cells) `behavior` under `name`. Running
        processes keep their code; `upgrade` also swaps theirs."""
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"a behavior name is a non-empty string, not {name!r}")
        if not (isinstance(behavior, type) and issubclass(behavior, GenServer)):
            raise InvalidArgumentError(f"{behavior!r} is not a GenServer subclass")
        with _lock:
            _behaviors[name] = behavior
        note_name(behavior, name)

    @staticmethod
    def upgrade(name: str, behavior: type[GenServer], *, extra: Any = None) -> Upgrade:
        """Hot code upgrade: register `behavior` under `name` and have every running process of
        that behavior, on every node of this OS process, switch to it at its next message
        (without a restart; `behavior.code_change(old_vsn, state, extra)` migrates the state).
        New processes of the behavior, supervisor restarts included, run the new code.
        `await` the returned `Upgrade` for one `UpgradeResult` per process (see
        docs/concepts/hot-upgrade.md). Nodes in other OS processes get new code from a
        `%%noex behavior` cell, or from their operator calling this there."""
        BehaviorRegistry.register(name, behavior)
        try:
            nodes = running_nodes()
        except Exception:  # no event loop here: no node runs a process, only the registration counts
            nodes = []
        return upgrade_processes(nodes, name, behavior, extra)

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
