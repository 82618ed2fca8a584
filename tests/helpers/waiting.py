"""Bounded waits for tests: re-check a condition until it holds or the deadline passes.

Every wait in the suite goes through here, so each has a deadline and a message saying what
did not happen. `wait_until` and `wait_until_blocking` are the pytest plugin's (`noex_lab.testing`),
which users' tests get too."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from noex_lab.testing.waiting import POLL_S, wait_until, wait_until_blocking

__all__ = ["POLL_S", "pid_alive", "wait_pids_gone", "wait_until", "wait_until_blocking"]


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
