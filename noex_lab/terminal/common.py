"""Shared by `top` and `demo`: an early-wake sleep, logging beside a live view (signal handling is
`noex_lab.frontend.signals`, shared with `noex-lab node`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from rich.console import Console

class Waker:
    """Sleep until a timeout or an earlier `wake()` (e.g. membership changed)."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            await self._event.wait()
        self._event = anyio.Event()


def log_to(console: Console) -> None:
    """Runtime warnings print through `console` (above a live view) instead of tearing it."""
    from rich.logging import RichHandler

    logger = logging.getLogger("noex_lab")
    logger.addHandler(RichHandler(console=console, level=logging.WARNING, show_path=False))
    logger.propagate = False
