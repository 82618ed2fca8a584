"""Bounded waits for tests: re-check a condition until it holds or the deadline passes.

Every wait in the suite goes through here, so each has a deadline and a message saying what
did not happen."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import anyio

POLL_S = 0.005  # how often a condition is re-checked


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Await until `predicate()` is truthy (returned); AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await anyio.sleep(POLL_S)


def wait_until_blocking(
    predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition", poll: float = POLL_S,
) -> Any:
    """`wait_until` for code outside an event loop (threads, plain tests); `poll` spaces out
    costly checks (a browser query)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def pid_alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_pids_gone(pids: Iterable[int], timeout: float) -> set[int]:
    """Wait until none of `pids` runs; returns the ones still alive at the deadline."""
    pids = set(pids)
    deadline = time.monotonic() + timeout
    while True:
        alive = {pid for pid in pids if pid_alive(pid)}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(POLL_S)
