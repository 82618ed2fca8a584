"""Typed contracts: introspection returns dataclasses, event kinds have one definition, and the
node and the `Cluster` facade answer alike for a node that is not distributed."""

from __future__ import annotations

import pytest

from noex_lab import CallError, Cluster, GenServer, NoexError, NoReply, ProcessInfo, StateMachine, Stop, Sys
from noex_lab.core.node import Node
from noex_lab.errors import BadReturnError, BehaviorDefinitionError
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


@pytest.mark.parametrize("base", [NoReply, Stop])
def test_subclassing_a_control_message_raises_a_typed_error(base: type) -> None:
    with pytest.raises(BehaviorDefinitionError, match="cannot be subclassed") as err:
        type("Mine", (base,), {})
    assert isinstance(err.value, NoexError) and isinstance(err.value, TypeError)  # still a TypeError


def test_a_state_machine_with_handle_call_raises_a_typed_error() -> None:
    with pytest.raises(BehaviorDefinitionError, match="do not define handle_call"):
        type("Wrong", (StateMachine,), {"handle_call": lambda self, msg, state: (None, state)})


class Garbage(GenServer):
    def handle_call(self, msg: object, state: None) -> object:
        return "not a (reply, state) pair"


async def test_a_bad_callback_return_crashes_with_a_noex_error(node: Node) -> None:
    ref = await GenServer.start(Garbage)
    with pytest.raises(CallError) as err:
        await GenServer.call(ref, "x")
    assert err.value.exc_type == "BadReturnError" and issubclass(BadReturnError, NoexError)
