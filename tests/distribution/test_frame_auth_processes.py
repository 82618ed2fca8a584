"""A man in the middle without TLS (issue 12 §6): it relays a valid handshake between two nodes,
then injects or replays a frame. Every frame after the handshake carries a MAC under keys of
that connection only, so the target (a `noex-lab node` process) closes that connection and
answers nothing, while a well-behaved member keeps working."""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import msgpack
import pytest

from noex_lab import Cluster, GenServer, RemoteSpawn
from noex_lab.distribution import protocol as p
from tests.helpers.cluster import NodeProcess, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

SECRET = "a long cluster secret for these tests"
BEHAVIORS = ["--behaviors", "tests.distribution.behaviors_for_tests"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Relay:
    """A TCP relay between a dialer and `target_port`: forwards both ways and records what the
    dialer sent; `inject` writes bytes of its own to the target."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.from_dialer = bytearray()
        self.from_target = bytearray()
        self.target: anyio.abc.SocketStream | None = None
        self.target_closed = anyio.Event()
        self._to_target = anyio.Lock()  # the relayed bytes and the injected ones share the stream
        self.port = 0

    async def serve(self, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        async with listener:
            await listener.serve(self._relay)

    async def _relay(self, dialer: anyio.abc.SocketStream) -> None:
        async with dialer, await anyio.connect_tcp("127.0.0.1", self.target_port) as target:
            self.target = target
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump, dialer, target, self.from_dialer, self._to_target)
                await self._pump(target, dialer, self.from_target, anyio.Lock())
                self.target_closed.set()
                tg.cancel_scope.cancel()

    @staticmethod
    async def _pump(src: Any, dst: Any, record: bytearray, lock: anyio.Lock) -> None:
        try:
            async for data in src:
                record += data
                async with lock:
                    await dst.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass

    async def inject(self, data: bytes) -> None:
        assert self.target is not None
        async with self._to_target:
            await self.target.send(data)


@pytest.fixture
async def relayed(procs: list[NodeProcess]) -> AsyncIterator[tuple[Any, Relay, Any, Any]]:
    """Node B (a process with the secret), a member C joined to it directly, and node A joined to
    B through a relay. Yields (A, relay, B's id, an Echo on B)."""
    os.environ["NOEX_TEST_SECRET"] = SECRET
    b = NodeProcess("b", *BEHAVIORS, "--secret-env", "NOEX_TEST_SECRET", env={"NOEX_TEST_SECRET": SECRET})
    procs.append(b)
    b_id = await b.started()
    c = await Cluster.start("c", port=0, seeds=[str(b_id)], cluster_secret=SECRET)
    await wait_until(lambda: any(i.id == b_id for i in c.get_nodes()), 10.0, "C joined B")
    with c.as_default():
        echo = await RemoteSpawn.spawn("echo", b_id)
    relay = Relay(b_id.port)
    async with anyio.create_task_group() as tg:
        await tg.start(relay.serve)
        a = await Cluster.start("a", port=0, cluster_secret=SECRET)
        # a DNS-style address dial: A connects to the relay's port and the relay forwards to B
        assert await a.distribution.transport.dial_address("127.0.0.1", relay.port) == b_id
        await wait_until(lambda: b_id in a.distribution.transport.conns, 5.0, "A connected through the relay")
        try:
            yield a, relay, (b_id, c), echo
        finally:
            tg.cancel_scope.cancel()


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize("attack", ["inject", "replay"])
async def test_an_injected_or_replayed_frame_closes_that_connection_only(
    relayed: tuple[Any, Relay, Any, Any], attack: str,
) -> None:
    a, relay, (b_id, c), echo = relayed
    with a.as_default():  # A's own traffic through the relay works (and gives the relay frames to replay)
        assert await GenServer.call(echo, "before", timeout=5) == "before"
    answered_before = len(relay.from_target)
    relayed_conn = a.distribution.transport.conns[b_id]
    if attack == "inject":
        # a system request in the clear, as an attacker without the session key would write it
        forged = msgpack.packb([p.RPC, 424242, "node.snapshot", None])
        await relay.inject(_frame(forged))
    else:
        await relay.inject(_last_frame(bytes(relay.from_dialer)))  # A's call, once more
    with anyio.fail_after(5):
        await relay.target_closed.wait()  # B closed the tampered connection
    assert b"424242" not in bytes(relay.from_target[answered_before:])
    assert len(relay.from_target) - answered_before < 64, "B answered the attacker"
    await wait_until(lambda: relayed_conn.closed, 5.0, "A saw the relayed link close")
    with c.as_default():  # a member on its own connection never noticed
        assert await GenServer.call(echo, "still here", timeout=5) == "still here"


def _last_frame(stream: bytes) -> bytes:
    """The last complete frame in a recorded byte stream (after the handshake frames)."""
    offset, last = 0, b""
    while offset + 4 <= len(stream):
        (length,) = struct.unpack_from(">I", stream, offset)
        if offset + 4 + length > len(stream):
            break
        last = stream[offset:offset + 4 + length]
        offset += 4 + length
    assert last, "nothing recorded"
    return last
