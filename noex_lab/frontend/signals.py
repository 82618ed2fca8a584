"""Signal handling of every command: `noex-lab node` waits for SIGTERM / SIGINT to leave
gracefully, `noex-lab top` and `demo` run until a signal (or the `q` key)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskStatus

EXIT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


async def wait_for_signal(*signals: signal.Signals, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> int:
    """Wait for the first of `signals` and return it; its handlers are in place once this task
    has started (`await tg.start(...)`), so a signal sent right after is not lost."""
    with anyio.open_signal_receiver(*signals) as received:
        task_status.started()
        async for sig in received:
            return int(sig)
    return 0  # (the receiver never ends on its own)


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
            await wait_for_signal(*EXIT_SIGNALS)
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
