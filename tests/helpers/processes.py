"""The OS processes tests start: their output read by threads and waited for with deadlines,
and their end: always by PID, always reaped, pipes closed.

The implementation is the pytest plugin's (`noex_lab.testing.processes`); here the children run
from the repository root with the repository importable."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from noex_lab.testing import processes as _processes
from noex_lab.testing.processes import kill_and_reap

__all__ = ["REPO", "WatchedProcess", "kill_and_reap", "repo_env"]

REPO = Path(__file__).resolve().parents[2]


def repo_env(**extra: str) -> dict[str, str]:
    """This environment with the repository importable (children run `python -m ...` from it)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


class WatchedProcess(_processes.WatchedProcess):
    """`noex_lab.testing.WatchedProcess` run from the repository root, the repository importable."""

    def __init__(self, cmd: Sequence[str], *, label: str, env: dict[str, str] | None = None,
                 **options: Any) -> None:
        options.setdefault("cwd", REPO)
        super().__init__(cmd, label=label, env=repo_env() if env is None else env, **options)
