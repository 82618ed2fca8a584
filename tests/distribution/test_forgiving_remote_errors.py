"""A call to a dead remote process names the process (not its node); `name=` without
`registration=` registers the name on the target node."""

from __future__ import annotations

import pytest

import tests.distribution.behaviors_for_tests  # noqa: F401  (registers echo)
from noex_lab import GenServer, Registry, RemoteSpawn, ServerNotRunningError
from tests.helpers.cluster import start_cluster

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]


async def test_a_dead_remote_process_is_named_in_the_error() -> None:
    a, b = await start_cluster(2, prefix="d")
    with a.as_default():
        ref = await RemoteSpawn.spawn("echo", b.id)
        await GenServer.stop(ref)
        with pytest.raises(ServerNotRunningError) as caught:
            await GenServer.call(ref, "hello", timeout=2.0)
    assert caught.value.target == ref
    assert str(caught.value).startswith(f"no process {ref} is running"), str(caught.value)


async def test_name_without_registration_registers_on_the_target_node() -> None:
    a, b = await start_cluster(2, prefix="r")
    with a.as_default():
        ref = await RemoteSpawn.spawn("echo", b.id, name="c3")
        assert await GenServer.call(("c3", b.id), "arg") is None
        unnamed = await RemoteSpawn.spawn("echo", b.id)
    with b.as_default():
        assert Registry.whereis("c3") == ref
        assert unnamed not in [Registry.whereis(n) for n in Registry.names()]
