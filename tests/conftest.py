"""Shared fixtures: every async test runs on asyncio and on trio, on a fresh node."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest

from noex_lab.core.node import Node, running_nodes
from tests.helpers.cluster import NodeProcess

# The per-user secret file (`noex-lab node`, `top`, `%noex start/local`) lives under
# XDG_CONFIG_HOME: the tests, and every process they start, use a temporary one, never the
# real home. Set at import, before any test or fixture starts a process.
_CONFIG_HOME = tempfile.TemporaryDirectory(prefix="noex-test-xdg-")
os.environ["XDG_CONFIG_HOME"] = _CONFIG_HOME.name


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def kill_all_nodes() -> None:
    """Kill every node still running on this event loop (tests leave nothing behind)."""
    for leftover in running_nodes():
        await leftover.kill()


@pytest.fixture
async def cleanup() -> AsyncIterator[None]:
    """Every node a test starts (e.g. with Cluster.start) is killed afterwards."""
    await kill_all_nodes()
    try:
        yield
    finally:
        await kill_all_nodes()


@pytest.fixture
def procs() -> Iterator[list[NodeProcess]]:
    """`noex-lab node` processes a test starts; each is killed by PID afterwards."""
    started: list[NodeProcess] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    """A fresh local node that is the default node for the test; killed afterwards."""
    await kill_all_nodes()
    fresh = await Node().start()
    try:
        yield fresh
    finally:
        await kill_all_nodes()
