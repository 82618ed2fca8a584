"""Test helpers: in-process clusters, `noex-lab node` processes, bounded waits.

`start_cluster` and `NodeProcess` are the pytest plugin's (`noex_lab.testing`); here node
processes run from the repository root with the repository importable."""

from __future__ import annotations

from collections.abc import Callable

from noex_lab import BehaviorRegistry, Cluster, GenServer, Node, ProcessRef, RemoteSpawn
from noex_lab.testing import cluster as _cluster
from noex_lab.testing import processes as _processes
from tests.helpers.processes import REPO, repo_env
from tests.helpers.waiting import wait_until

__all__ = ["REPO", "NodeProcess", "secured_pair", "start_cluster", "wait_until"]

start_cluster = _cluster.start_cluster


class NodeProcess(_processes.NodeProcess):
    """A `noex-lab node` OS process run from the repository; `env` adds variables to this one.

    Without `--secret-env` it runs `--no-secret`, like the in-process nodes the tests join it
    with; `user_secret=True` leaves the choice to the command (the per-user secret file)."""

    def __init__(self, name: str, *args: str, env: dict[str, str] | None = None, port: int = 0,
                 user_secret: bool = False, preexec_fn: Callable[[], None] | None = None) -> None:
        if not user_secret and "--secret-env" not in args and "--no-secret" not in args:
            args = ("--no-secret", *args)
        super().__init__(name, *args, env=repo_env(**(env or {})), cwd=REPO, port=port, preexec_fn=preexec_fn)


async def secured_pair(prefix: str, behavior: str, cls: type[GenServer], secret: str) -> tuple[Node, Node, ProcessRef]:
    """Nodes `{prefix}_a` (started first: the default node) and `{prefix}_b`, seeded with A, both
    with `secret` (every frame MAC'd); `cls` registered as `behavior` and spawned on B."""
    a = await Cluster.start(f"{prefix}_a", port=0, cluster_secret=secret)
    b = await Cluster.start(f"{prefix}_b", port=0, seeds=[a.id], cluster_secret=secret)
    await wait_until(lambda: b.id in a.distribution.transport.conns, timeout=10)
    BehaviorRegistry.register(behavior, cls)  # (one registry: both nodes are in this process)
    ref = await RemoteSpawn.spawn(behavior, b.id)
    return a, b, ref
