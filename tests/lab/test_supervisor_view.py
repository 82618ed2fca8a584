"""SupervisorView outside a kernel (ipywidgets works without a front end): a local Supervisor
and a DistributedSupervisor whose child fails over to another node."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from noex_lab import BehaviorRegistry, ChildSpec, GenServer, Supervisor
from noex_lab.distribution import DistributedSupervisor
from noex_lab.errors import InvalidArgumentError
from noex_lab.lab.widgets import SupervisorView
from tests.helpers.cluster import start_cluster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the Jupyter layer runs on the kernel's asyncio loop


class Worker(GenServer):
    def init(self, arg: Any) -> Any:
        return arg

    def handle_cast(self, msg: Any, state: Any) -> Any:
        if msg == "crash":
            raise RuntimeError("worker crashed on purpose")
        return state


@pytest.fixture(autouse=True)
async def cleanup(cleanup: None) -> AsyncIterator[None]:
    """The shared `cleanup` (nodes killed), and the behaviors this module registers."""
    try:
        yield
    finally:
        BehaviorRegistry.unregister("sv_worker")


async def test_local_supervisor_view() -> None:
    (node,) = await start_cluster(1)
    with node.as_default():
        sup = await Supervisor.start(children=[ChildSpec(id="a", behavior=Worker, arg=1)], name="sv")
        view = SupervisorView("sv")
        try:
            assert [c.id for c in view.children] == ["a"]  # the first rendering is complete
            assert "running" in view.render_text()
            (child,) = await Supervisor.which_children(sup)
            GenServer.cast(child.ref, "crash")
            await wait_until(lambda: any(c.restarts == 1 for c in view.children), 5, "the restart")
            await wait_until(lambda: "restart #1 after RuntimeError: worker crashed on purpose" in view.value, 5,
                             "the rendered restart log")
            assert "RuntimeError: worker crashed on purpose" in view.render_text()
            await Supervisor.stop(sup)
            await wait_until(lambda: view.finished is not None, 5, "the supervisor exit")
            assert "the supervisor exited: shutdown" in view.render_text()
        finally:
            view.close()


async def test_distributed_supervisor_view_shows_a_migration() -> None:
    a, b, c = await start_cluster(3)
    BehaviorRegistry.register("sv_worker", Worker)
    with a.as_default():
        sup = await DistributedSupervisor.start(
            children=[{"id": "w", "behavior_name": "sv_worker", "arg": 7}],
            node_selector=lambda nodes, _child: b.id if b.id in nodes else c.id,  # b first, then c
        )
        view = SupervisorView(sup)
        try:
            await wait_until(lambda: [ch.node for ch in view.children] == [b.id], 5, "the child on b")
            await b.kill()
            await wait_until(lambda: any(e.kind == "child_migrated" for e in view.restart_log), 10, "the migration")
            migrated = next(e for e in view.restart_log if e.kind == "child_migrated")
            assert migrated.child == "w" and f"moved from {b.id} to {c.id}" in migrated.detail
            await wait_until(lambda: [ch.node for ch in view.children] == [c.id], 10, "the child on c")
            await wait_until(lambda: "child_migrated" in view.value, 5, "the rendered log")
        finally:
            view.close()


async def test_a_supervisor_on_another_node_is_polled() -> None:
    a, b = await start_cluster(2)
    with b.as_default():
        sup = await Supervisor.start(children=[ChildSpec(id="r", behavior=Worker, arg=1)])
    with a.as_default():
        view = SupervisorView(sup)
        try:
            assert "remote" in view.render_text()
            await wait_until(lambda: [ch.id for ch in view.children] == ["r"], 5, "the remote children")
            assert view.children[0].node == b.id
            GenServer.cast(view.children[0].ref, "crash")
            await wait_until(lambda: any(e.kind == "child_restarted" for e in view.restart_log), 5,
                             "the polled restart")
            assert "restart #1 after RuntimeError: worker crashed on purpose" in view.render_text()
        finally:
            view.close()
    with pytest.raises(InvalidArgumentError, match="is not a running supervisor"):
        with a.as_default():
            SupervisorView("no-such-supervisor")


async def test_a_supervisor_on_a_node_that_dies_is_marked_stopped() -> None:
    a, b = await start_cluster(2)
    with b.as_default():
        sup = await Supervisor.start(children=[ChildSpec(id="r", behavior=Worker, arg=1)])
    with a.as_default():
        view = SupervisorView(sup)
        try:
            await wait_until(lambda: [ch.status for ch in view.children] == ["running"], 5, "the remote child")
            await b.kill()  # its monitor fires with noconnection: no more polling of a dead node
            await wait_until(lambda: view.finished == "noconnection", 5, "the supervisor marked stopped")
            await wait_until(lambda: "supervisor stopped: noconnection" in view.value, 5, "the banner")
            assert "noex-child-running" not in view.value and "noex-supervisor-stopped" in view.value
            assert "SUPERVISOR STOPPED: noconnection" in view.render_text()
            assert "running" not in view.table().text().split("\n", 1)[1]  # every row: stopped
        finally:
            view.close()


async def test_cluster_view_draws_a_partition_between_two_other_nodes_as_a_cut_link() -> None:
    from noex_lab.distribution import heal, partition
    from noex_lab.lab.widgets import ClusterView

    a, b, c = await start_cluster(3)
    view = ClusterView(a, refresh_s=0.2)
    try:
        await wait_until(lambda: len(view.peer_views) == 2, 5, "the peers' own views")
        assert all(link.state == "ok" for link in view.topology()[1])
        partition([b], [c])  # a still sees both; b and c do not see each other
        await wait_until(lambda: {link.state for link in view.topology()[1]
                                  if {link.a, link.b} == {str(b.id), str(c.id)}} == {"cut"}, 10, "the cut link")
        await wait_until(lambda: "noex-link-cut" in view.value, 5, "the cut link drawn")
        assert [link.state for link in view.topology()[1] if str(a.id) in (link.a, link.b)] == ["ok", "ok"]
        heal(b, c)
    finally:
        view.close()
