"""The pytest plugin (entry point `pytest11`): fixtures for testing behaviors on real nodes.

Every fixture is named `noex_*`. The async ones run on the test's anyio backend (`anyio_backend`;
mark tests with `pytest.mark.anyio`), so a test runs once per backend that fixture lists. Each
fixture cleans up after itself: nodes are killed, node processes killed by PID and reaped,
paused processes continued. Disable the plugin with `-p no:noex_lab`.

pytest loads this module and calls `pytest_configure`, which makes the functions below fixtures:
pytest (the [testing] extra) is imported there, by pytest's own run, never by noex_lab itself.
"""

from __future__ import annotations

import secrets
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..core.node import Node
from .cluster import kill_all_nodes, start_cluster
from .faults import FaultInjector
from .processes import NodeProcess, start_node_processes
from .waiting import wait_until

ClusterFactory = Callable[..., Awaitable[list[Node]]]
ProcessFactory = Callable[..., Awaitable[list[NodeProcess]]]


def noex_secret() -> str:
    """A fresh random cluster secret, shared by `noex_cluster` and `noex_node_processes`."""
    return secrets.token_urlsafe(24)


async def noex_node(anyio_backend: Any) -> AsyncIterator[Node]:
    """A fresh local node, the default node of the test (GenServer.start runs there); every
    node the test started is killed afterwards."""
    await kill_all_nodes()
    node = await Node().start()
    try:
        yield node
    finally:
        await kill_all_nodes()


async def noex_cluster(anyio_backend: Any, noex_secret: str) -> AsyncIterator[ClusterFactory]:
    """`await noex_cluster(3, **cluster_options)`: in-process cluster nodes on 127.0.0.1 in a full
    mesh (fast heartbeats, the test's `noex_secret`); the first is the default node. Killed afterwards."""
    await kill_all_nodes()

    async def start(n: int, **options: Any) -> list[Node]:
        options.setdefault("cluster_secret", noex_secret)
        return await start_cluster(n, **options)

    try:
        yield start
    finally:
        await kill_all_nodes()


def noex_node_processes(request: Any, noex_secret: str) -> Iterator[ProcessFactory]:
    """`await noex_node_processes(2, behaviors="my_behaviors", seed=node)`: `noex-lab node` OS
    processes importing your behaviors module, joined to `seed` (or to each other) with the test's
    `noex_secret`; killed by PID afterwards. They run from the rootdir, with the rootdir and the
    test's directory on PYTHONPATH (`request`: pytest's FixtureRequest). See
    `noex_lab.testing.start_node_processes` for the options."""
    started: list[NodeProcess] = []
    root = request.config.rootpath
    here = Path(str(request.path)).parent

    async def start(
        n: int, *, behaviors: str | Sequence[str] = (), seed: Any = None, **options: Any,
    ) -> list[NodeProcess]:
        options.setdefault("secret", noex_secret)
        options.setdefault("cwd", root)
        options.setdefault("pythonpath", [root, here])
        return await start_node_processes(n, behaviors=behaviors, seed=seed, started=started, **options)

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()


def noex_faults() -> Iterator[FaultInjector]:
    """Partition, heal, kill, pause and resume nodes; whatever was broken is repaired afterwards."""
    injector = FaultInjector()
    try:
        yield injector
    finally:
        injector.restore()


def noex_wait_until() -> Callable[..., Awaitable[Any]]:
    """`await noex_wait_until(predicate, timeout, what)`: `noex_lab.testing.wait_until`."""
    return wait_until


FIXTURES = (noex_secret, noex_node, noex_cluster, noex_node_processes, noex_faults, noex_wait_until)


def pytest_configure(config: Any) -> None:
    """Register the `noex_*` fixtures with this pytest run."""
    import pytest

    fixtures = types.ModuleType("noex_lab.testing.fixtures", "The noex_* fixtures of noex_lab's pytest plugin.")
    for function in FIXTURES:
        setattr(fixtures, function.__name__, pytest.fixture(function))
    config.pluginmanager.register(fixtures, "noex_lab.fixtures")
