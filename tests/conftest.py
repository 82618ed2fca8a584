"""Shared fixtures: every async test runs on asyncio and on trio, on a fresh node."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from noex_lab.core.node import Node, running_nodes


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    """A fresh local node that is the default node for the test; killed afterwards."""
    for leftover in running_nodes():
        await leftover.kill()
    fresh = await Node().start()
    try:
        yield fresh
    finally:
        for leftover in running_nodes():
            await leftover.kill()
