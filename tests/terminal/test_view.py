"""The model behind `top` / `demo` (ClusterWatch) with in-process nodes: members, trees, remote events."""

from __future__ import annotations

import io
import json
import time

import pytest
from rich.console import Console

import tests.distribution.behaviors_for_tests  # noqa: F401  (registers echo)
from noex_lab import Cluster, DistributedSupervisor
from noex_lab.terminal.view import ClusterWatch, compact, render_view
from tests.helpers.cluster import start_cluster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]


def _render(watch: ClusterWatch) -> str:
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(render_view(watch, events=20))
    return out.getvalue()


@pytest.mark.timeout(30)
async def test_watch_follows_members_supervisors_and_remote_migrations() -> None:
    a, b, c = await start_cluster(3)
    with a.as_default():
        sup = await DistributedSupervisor.start(
            children=[{"id": f"w{i}", "behavior_name": "echo", "arg": i} for i in range(6)],
            node_selector="round_robin", max_restarts=20, name="sup",
        )
    observer = await Cluster.start("obs", port=0, seeds=[str(a.id)], hidden=True, heartbeat_interval_ms=200,
                                   heartbeat_miss_threshold=3)
    await wait_until(lambda: len(observer.get_nodes()) == 3, 5.0, "observer connected to all")
    assert all(len(n.get_nodes()) == 2 for n in (a, b, c))  # nobody lists the observer
    watch = ClusterWatch(observer)
    watch.start()
    try:
        await watch.refresh(2.0)
        assert {m.id: m.status for m in watch.sorted_members()} == {a.id: "up", b.id: "up", c.id: "up"}
        [(host, tree)] = watch.supervisors()
        assert host == a.id and tree.name == "sup" and tree.restarts == 0 and len(tree.children) == 6
        moved = {ch.id for ch in tree.children if ch.node == c.id}
        assert len(moved) == 2

        await c.kill()
        await wait_until(lambda: watch.members[c.id].status == "down", 2.0, "c marked down at once")
        assert watch.members[c.id].down_reason == "connection_closed"

        async def migrations_seen() -> set[str]:
            await watch.refresh(1.0)
            return {e.details.split("child=")[1].split()[0] for e in watch.events if e.kind == "child_migrated"}

        deadline = time.monotonic() + 3.0
        while (seen := await migrations_seen()) != moved:  # each round is one refresh
            assert time.monotonic() < deadline, f"migrations seen by the observer: {seen}, expected {moved}"
        assert all(e.node == str(a.id) for e in watch.events if e.kind == "child_migrated")
        [(_, tree)] = watch.supervisors()
        assert tree.restarts == 2 and all(ch.node in (a.id, b.id) for ch in tree.children)
        # a migration is listed once (not also as its "supervisor_restart ... reason=noconnection")
        assert not [e for e in watch.events if e.kind == "supervisor_restart"]
        # the next refreshes add no duplicates
        before = len(watch.events)
        await watch.refresh(1.0)
        assert len(watch.events) == before

        doc = json.loads(json.dumps(watch.to_json()))
        members = {m["id"]: m for m in doc["members"]}
        assert members[str(c.id)]["status"] == "down" and members[str(c.id)]["processes"] == []
        assert doc["supervisors"][0]["restarts"] == 2
        assert sum(e["kind"] == "child_migrated" for e in doc["events"]) == 2

        text = _render(watch)
        assert "child_migrated" in text and "supervision trees" in text and "down" in text
        assert compact(str(a.id)) == a.id.name
    finally:
        watch.close()
        with a.as_default():
            await DistributedSupervisor.stop(sup)
