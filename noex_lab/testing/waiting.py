"""Bounded waits for tests: re-check a condition until it holds or the deadline passes.

A test never sleeps and hopes: it waits for what it expects, with a deadline, and a timeout
says what did not happen."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
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


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 5.0, what: str = "condition") -> Any:
    """`wait_until` for a condition that needs a round trip (a call, a system request): re-ask
    until it holds (returned); AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
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
