"""Registry: node-local names."""

from __future__ import annotations

import pytest

from noex_lab import (
    AlreadyRegisteredError,
    GenServer,
    NotRegisteredError,
    Registry,
    ServerNotRunningError,
)
from noex_lab.core.node import Node
from noex_lab.errors import InvalidArgumentError

from ._helpers import Collector, Pawn, Sink, exit_reason, watch

pytestmark = pytest.mark.anyio


async def test_register_whereis_lookup_names_unregister(node: Node) -> None:
    a = await GenServer.start(Pawn)
    b = await GenServer.start(Pawn)
    assert Registry.names() == []
    assert Registry.whereis("alpha") is None
    Registry.register("beta", b)
    Registry.register("alpha", a)
    assert Registry.whereis("alpha") == a and Registry.lookup("beta") == b
    assert Registry.names() == ["alpha", "beta"]
    assert await GenServer.call("alpha", "ping") == "pong"
    Registry.unregister("alpha")
    assert Registry.whereis("alpha") is None
    assert Registry.names() == ["beta"]
    with pytest.raises(NotRegisteredError) as info:
        Registry.lookup("alpha")
    assert isinstance(info.value, LookupError) and info.value.name == "alpha"
    Registry.unregister("alpha")  # unregistering a free name is harmless
    # the process itself was not affected by losing its name
    assert await GenServer.call(a, "ping") == "pong"


async def test_register_a_taken_name(node: Node) -> None:
    a = await GenServer.start(Pawn)
    b = await GenServer.start(Pawn)
    Registry.register("svc", a)
    Registry.register("svc", a)  # the same owner again is fine
    with pytest.raises(AlreadyRegisteredError) as info:
        Registry.register("svc", b)
    assert info.value.name == "svc" and info.value.owner == a
    assert Registry.whereis("svc") == a


async def test_register_refuses_dead_processes_and_bad_names(node: Node) -> None:
    ref = await GenServer.start(Pawn)
    await GenServer.stop(ref)
    with pytest.raises(ServerNotRunningError):
        Registry.register("ghost", ref)
    assert Registry.whereis("ghost") is None
    alive = await GenServer.start(Pawn)
    for bad in ("", 42):
        with pytest.raises(InvalidArgumentError):
            Registry.register(bad, alive)  # type: ignore[arg-type]


@pytest.mark.parametrize("how", ["stop", "crash"])
async def test_a_name_disappears_when_its_process_exits(node: Node, how: str) -> None:
    ref = await GenServer.start(Pawn)
    Registry.register("worker", ref)
    down = await watch(ref)
    if how == "stop":
        await GenServer.stop(ref)
    else:
        GenServer.cast("worker", "crash")
    await exit_reason(down)
    assert Registry.whereis("worker") is None
    assert "worker" not in Registry.names()
    # the name is free for a new process, and messages by name reach the new owner
    sink = Sink()
    new = await GenServer.start(Collector, sink)
    Registry.register("worker", new)
    GenServer.send("worker", "hello")
    assert await sink.wait_for(1) == ["hello"]


async def test_start_with_name_and_unregister_then_exit(node: Node) -> None:
    ref = await GenServer.start(Pawn, name="named")
    Registry.unregister("named")
    other = await GenServer.start(Pawn, name="named")  # the freed name can be reused at once
    await GenServer.stop(ref)
    assert Registry.whereis("named") == other  # the old owner's exit did not remove the new name
