"""Test helpers: in-process clusters, `noex-lab node` processes, bounded waits.

`start_cluster` and `NodeProcess` are the pytest plugin's (`noex_lab.testing`); here node
processes run from the repository root with the repository importable."""

from __future__ import annotations

from noex_lab.testing import cluster as _cluster
from noex_lab.testing import processes as _processes
from tests.helpers.processes import REPO, repo_env
from tests.helpers.waiting import wait_until

__all__ = ["REPO", "NodeProcess", "start_cluster", "wait_until"]

start_cluster = _cluster.start_cluster


class NodeProcess(_processes.NodeProcess):
    """A `noex-lab node` OS process run from the repository; `env` adds variables to this one."""

    def __init__(self, name: str, *args: str, env: dict[str, str] | None = None, port: int = 0) -> None:
        super().__init__(name, *args, env=repo_env(**(env or {})), cwd=REPO, port=port)
