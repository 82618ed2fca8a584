"""Distribution services (`noex_lab.distribution.service`): every remote operation a node serves
is `namespace.op`, installed by one function from the services `Distribution._start` builds,
and listed in docs/reference/distribution.md; hooks run in build order and a failing hook is
reported, not raised; two in-process nodes over real TCP answer the new names and refuse others."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from noex_lab import Cluster
from noex_lab.core.events import NodeEvent
from noex_lab.distribution.attached import require_distribution
from noex_lab.distribution.node_ops import NodeService
from noex_lab.distribution.service import Operation, Service, Services, install_services
from noex_lab.errors import InvalidArgumentError, UnknownOperationError
from tests.helpers.cluster import start_cluster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup"), pytest.mark.timeout(30)]

DOC = Path(__file__).resolve().parents[2] / "docs" / "reference" / "distribution.md"
NAME = re.compile(r"[a-z]+\.[a-z_]+")


def documented_operations() -> set[str]:
    return set(re.findall(r"^\| `([a-z_.]+)` \|", DOC.read_text(), re.MULTILINE))


async def test_every_operation_is_namespace_dot_op_and_documented() -> None:
    node = await Cluster.start("svc", port=0)
    dist = require_distribution(node)
    served = set(dist.router.rpc_handlers)
    assert all(NAME.fullmatch(name) for name in served), sorted(served)
    for service in dist.services.all:  # each operation under its own service's namespace
        assert all(name.startswith(service.namespace + ".") for name in served
                   if name.split(".")[0] == service.namespace)
    assert served == documented_operations()


async def test_peers_answer_the_new_names_and_refuse_the_old_ones() -> None:
    a, b = await start_cluster(2)
    router = require_distribution(a).router
    snap = await router.rpc(b.id, "node.snapshot", None, 5.0)
    assert snap.node == b.id
    assert await router.rpc(b.id, "node.ping", None, 5.0) is None
    for old in ("snapshot", "noex_get_state", "noex_sys"):
        with pytest.raises(UnknownOperationError, match="no remote operation"):
            await router.rpc(b.id, old, None, 5.0)


class Recorder(Service):
    namespace = "rec"

    def __init__(self, seen: list[str], fail: bool = False) -> None:
        self.seen = seen
        self.fail = fail

    def operations(self) -> dict[str, Operation]:
        return {"echo": lambda _peer, args: args}

    def peer_joined(self, peer: Any) -> None:
        self.seen.append(f"{self.namespace} joined {peer.name}")
        if self.fail:
            raise RuntimeError("a broken hook")

    def peer_left(self, peer: Any, reason: str) -> None:
        self.seen.append(f"{self.namespace} left {peer.name} {reason}")


class Second(Recorder):
    namespace = "second"


async def test_hooks_run_in_build_order_and_a_failing_one_is_reported() -> None:
    node = await Cluster.start("hooks", port=0)
    errors: list[NodeEvent] = []
    node.events.subscribe(lambda ev: errors.append(ev) if ev.kind == "error" else None)
    seen: list[str] = []
    services = Services(node)
    handlers: dict[str, Operation] = {}
    install_services(services, handlers, [Recorder(seen, fail=True), Second(seen)])
    assert sorted(handlers) == ["rec.echo", "second.echo"]
    peer = require_distribution(node).node_id
    services.peer_joined(peer)  # the first one raises: the second still runs, the error is an event
    services.peer_left(peer, "connection_closed")
    assert seen == ["rec joined hooks", "second joined hooks", "rec left hooks connection_closed",
                    "second left hooks connection_closed"]
    await wait_until(lambda: errors, 3.0, "the error event")
    assert "Recorder.peer_joined failed" in str(errors[0].data)


async def test_a_name_served_twice_is_refused() -> None:
    node = await Cluster.start("twice", port=0)
    dist = require_distribution(node)
    with pytest.raises(InvalidArgumentError, match=r"'node\.snapshot' is served twice"):
        install_services(Services(node), dict(dist.router.rpc_handlers), [NodeService(dist, dist.membership)])
