"""The one membership model of the notebook's ClusterTable and the terminal's ClusterWatch: kept
from membership events, bounded in the members it remembers as down."""

from __future__ import annotations

from noex_lab import NodeId
from noex_lab.frontend.cluster_model import MembershipModel
from noex_lab.introspection import NodeEvent

ME = NodeId.parse("me@127.0.0.1:1")


def event(kind: str, at: float, peer: NodeId, **data: object) -> NodeEvent:
    return NodeEvent(kind, at, ME, {"peer": peer, **data})  # type: ignore[arg-type]


def test_events_move_a_member_between_up_busy_and_down() -> None:
    model = MembershipModel()
    b = NodeId.parse("b@127.0.0.1:2")
    assert model.apply(NodeEvent("process_started", 1.0, ME, {})) is None
    assert model.apply(event("node_up", 1.0, b)) is not None and model.members[b].status == "up"
    model.apply(event("node_busy", 2.0, b, loop_lag_ms=900.0))
    assert (model.members[b].status, model.members[b].loop_lag_ms, model.members[b].since) == ("busy", 900.0, 2.0)
    model.apply(event("node_down", 3.0, b, reason="heartbeat_timeout"))
    assert [(m.id, m.down_reason, m.since) for m in model.down()] == [(b, "heartbeat_timeout", 3.0)]
    model.apply(event("node_up", 4.0, b))
    assert model.down() == [] and model.members[b].down_reason is None


def test_it_remembers_at_most_keep_down_members_that_went_down() -> None:
    model = MembershipModel(keep_down=2)
    peers = [NodeId.parse(f"p{i}@127.0.0.1:{10 + i}") for i in range(4)]
    for i, peer in enumerate(peers):
        model.apply(event("node_down", float(i), peer, reason="connection_closed"))
    assert [m.id for m in model.down()] == peers[2:]
