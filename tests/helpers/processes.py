"""Ending the OS processes tests start: always by PID, always reaped, pipes closed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any


def kill_and_reap(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL `proc` if it still runs (a SIGSTOPped one is continued first, so it dies at
    once), wait for it (at most 10 s) and close its pipes."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
