"""`RemoteLink` and `RemoteMonitor`: links and monitors, location transparent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .messages import Down
from .node import Target, current_node
from .refs import MonitorRef, ProcessRef


class RemoteMonitor:
    """Watch a process (local or remote) and get exactly one `Down` when it exits."""

    @staticmethod
    async def monitor(
        target: Target, *, watcher: ProcessRef | None = None,
        on_down: Callable[[Down], Any] | None = None,
    ) -> MonitorRef:
        """Inside a process the watcher defaults to it (`Down` arrives in `handle_info`);
        elsewhere pass `watcher=` or `on_down=`. A dead or unknown target gives "noproc" at once."""
        return current_node().monitor(target, watcher, on_down)

    @staticmethod
    async def demonitor(mref: MonitorRef) -> None:
        """Remove a monitor (idempotent)."""
        current_node().demonitor(mref)


class RemoteLink:
    """Bidirectional links: an abnormal exit of one process kills (or, with trap_exit, informs) the other."""

    @staticmethod
    async def link(a: Target, b: Target) -> None:
        current_node().link(a, b)

    @staticmethod
    async def unlink(a: Target, b: Target) -> None:
        current_node().unlink(a, b)
