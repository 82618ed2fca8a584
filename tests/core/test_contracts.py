"""Typed contracts: introspection returns dataclasses, event kinds have one definition, and the
node and the `Cluster` facade answer alike for a node that is not distributed."""

from __future__ import annotations

import pytest

from noex_lab import Cluster, GenServer, ProcessInfo, Sys
from noex_lab.core.node import Node
from noex_lab.introspection import EVENT_KINDS, EventInfo

pytestmark = pytest.mark.anyio


class Box(GenServer):
    def init(self, arg: int) -> int:
        return arg

    def handle_call(self, msg: object, state: int) -> tuple[int, int]:
        return state, state


async def test_a_local_listing_and_events_are_typed(node: Node) -> None:
    ref = await GenServer.start(Box, 1, name="boxed")
    rows, names = await Sys.processes()
    assert [(r.ref, r.name, r.behavior) for r in rows] == [(ref, "boxed", "Box")]
    assert all(isinstance(r, ProcessInfo) for r in rows) and names == {"boxed": ref}
    events = await Sys.events(10)
    [started] = [e for e in events if e.kind == "process_started"]
    assert isinstance(started, EventInfo) and started.details["name"] == "boxed"
    assert {e.kind for e in events} <= set(EVENT_KINDS)


async def test_the_node_and_the_facade_agree_before_the_cluster_starts(node: Node) -> None:
    assert node.get_nodes() == Cluster.get_nodes() == []
    assert node.get_status() == Cluster.get_status() == "not_started"
