"""Fixtures for the examples' end-to-end tests (plain synchronous tests: the nodes are OS processes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.examples import ExampleNode


@pytest.fixture
def example_nodes() -> Iterator[list[ExampleNode]]:
    """Append every ExampleNode a test starts; all are killed by PID afterwards, pass or fail."""
    started: list[ExampleNode] = []
    try:
        yield started
    finally:
        for node in started:
            node.stop()
