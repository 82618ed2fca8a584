"""Shared by `top` and `demo`: signal handling, an early-wake sleep, logging beside a live view."""

from __future__ import annotations

import logging
import os
import signal
import sys
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


QUIT_KEYS = b"qQ"


async def _quit_key_pressed(fd: int) -> None:
    """Return when `q` is typed on the terminal `fd` (read key by key: cbreak mode, restored after)."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        while True:
            await anyio.wait_readable(fd)
            data = os.read(fd, 64)
            if not data or any(key in QUIT_KEYS for key in data):  # end of input counts as quitting
                return
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _interactive_stdin() -> int | None:
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return None
    return fd if os.isatty(fd) else None


async def run_until_signal(main: Callable[[], Awaitable[int]], *, quit_key: bool = False) -> int:
    """Run `main()` and return its exit code; SIGINT / SIGTERM / SIGHUP, and with `quit_key` the
    `q` key on an interactive terminal, cancel it (a clean end: 0). An exception from `main()` is
    re-raised as itself (not wrapped in an exception group)."""
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

        async def watch_keys(fd: int) -> None:
            await _quit_key_pressed(fd)
            tg.cancel_scope.cancel()

        tg.start_soon(watch_signals)
        tg.start_soon(body)
        fd = _interactive_stdin() if quit_key else None
        if fd is not None:
            tg.start_soon(watch_keys, fd)
    if failure:
        raise failure[0]
    return result[0]



def log_to(console: Console) -> None:
    """Runtime warnings print through `console` (above a live view) instead of tearing it."""
    from rich.logging import RichHandler

    logger = logging.getLogger("noex_lab")
    logger.addHandler(RichHandler(console=console, level=logging.WARNING, show_path=False))
    logger.propagate = False
