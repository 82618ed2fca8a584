"""Fixtures for the terminal front ends: in-process nodes started by a test are killed afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from noex_lab.core.node import running_nodes


@pytest.fixture
async def cleanup() -> AsyncIterator[None]:
    for leftover in running_nodes():
        await leftover.kill()
    try:
        yield
    finally:
        for leftover in running_nodes():
            await leftover.kill()
