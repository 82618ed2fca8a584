"""Shared by `top` and `demo`: signal handling, an early-wake sleep, logging beside a live view."""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from rich.console import Console

EXIT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


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


async def run_until_signal(main: Callable[[], Awaitable[int]]) -> int:
    """Run `main()` and return its exit code; SIGINT / SIGTERM / SIGHUP cancel it (a clean end: 0).
    An exception from `main()` is re-raised as itself (not wrapped in an exception group)."""
    result = [0]
    failure: list[Exception] = []
    async with anyio.create_task_group() as tg:
        async def watch_signals() -> None:
            with anyio.open_signal_receiver(*EXIT_SIGNALS) as signals:
                async for _ in signals:
                    break
            tg.cancel_scope.cancel()

        async def body() -> None:
            try:
                result[0] = await main()
            except Exception as exc:
                failure.append(exc)
            tg.cancel_scope.cancel()

        tg.start_soon(watch_signals)
        tg.start_soon(body)
    if failure:
        raise failure[0]
    return result[0]



def log_to(console: Console) -> None:
    """Runtime warnings print through `console` (above a live view) instead of tearing it."""
    from rich.logging import RichHandler

    logger = logging.getLogger("noex_lab")
    logger.addHandler(RichHandler(console=console, level=logging.WARNING, show_path=False))
    logger.propagate = False
