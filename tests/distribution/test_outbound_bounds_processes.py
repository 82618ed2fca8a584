"""A peer that never reads cannot make a node buffer without bound (issue 12 §3, SPEC §4):
replies never echo a peer's value at length, and past `--max-send-buffer-bytes` the node closes
that one connection as lost. The node is a `noex-lab node` process; its peak RSS is measured, and
a well-behaved member keeps calling it meanwhile."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from noex_lab import Cluster, GenServer, Node, RemoteSpawn
from noex_lab.core.refs import ProcessRef
from noex_lab.distribution import handshake as hs
from noex_lab.distribution import protocol as p
from noex_lab.distribution.codec import Codec
from tests.helpers.cluster import NodeProcess, wait_until
from tests.helpers.raw_peer import hello

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

MIB = 2**20
BEHAVIORS = ["--behaviors", "tests.distribution.behaviors_for_tests"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


class DeafPeer:
    """A peer that completes the handshake (the node runs without a secret) and then only writes:
    its receive buffer is tiny and it never reads, so the node's replies pile up on the node."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(5.0)
        self._send(hs.encode_hello(hs.HELLO, hello("deaf", secured=False)))
        assert self._receive()[0] == hs.WELCOME
        self._send(hs.encode(hs.PROOF, b""))
        assert self._receive()[0] == hs.ACCEPT
        self.codec = Codec(None)
        self.req = 0

    def _send(self, body: bytes) -> None:
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def _receive(self) -> list[Any]:
        head = self.sock.recv(4, socket.MSG_WAITALL)
        (n,) = struct.unpack(">I", head)
        return hs.decode(self.sock.recv(n, socket.MSG_WAITALL))

    def request(self, message: list[Any]) -> bool:
        """Send one frame; False once the node has closed the connection."""
        self.req += 1
        try:
            self._send(self.codec.encode(message))
        except OSError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def target(procs: list[NodeProcess]) -> AsyncIterator[tuple[NodeProcess, Node, ProcessRef]]:
    """The node process (2 MiB messages, a 6 MiB send buffer bound), a member, an Echo on it."""
    proc = NodeProcess("target", *BEHAVIORS, "--max-message-bytes", str(2 * MIB),
                       "--max-send-buffer-bytes", str(6 * MIB))
    procs.append(proc)
    target_id = await proc.started()
    member = await Cluster.start("member", port=0, seeds=[str(target_id)])
    await wait_until(lambda: any(i.id == target_id for i in member.get_nodes()), 10.0, "the member joined")
    echo = await RemoteSpawn.spawn("echo", target_id)
    yield proc, member, echo


async def _member_calls(echo: ProcessRef, worst: list[float], stop: anyio.Event) -> None:
    for i in range(100_000):
        if stop.is_set():
            return
        t0 = anyio.current_time()
        assert await GenServer.call(echo, i, timeout=5) == i
        worst[0] = max(worst[0], anyio.current_time() - t0)
        with anyio.move_on_after(0.02):  # a call every 20 ms until the test says stop
            await stop.wait()


async def test_replies_to_a_peer_that_never_reads_are_bounded_and_the_link_is_then_dropped(
    target: tuple[NodeProcess, Node, ProcessRef],
) -> None:
    proc, member, echo = target
    assert proc.id is not None
    before = _peak_rss_mb(proc.pid)
    deaf = await anyio.to_thread.run_sync(DeafPeer, proc.id.port)
    worst = [0.0]
    stop = anyio.Event()
    payload = b"r" * MIB  # echoed back in full: 64 MiB of replies the deaf peer never takes
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_member_calls, echo, worst, stop)

            def flood() -> int:
                sent = 0
                for _ in range(64):
                    if not deaf.request([p.CALL, deaf.req + 1, echo.id, echo.creation, None, payload]):
                        break
                    sent += 1
                return sent

            await anyio.to_thread.run_sync(flood)
            await wait_until(lambda: any("send buffer bound" in line for line in proc.stderr), 15.0,
                             "the node dropped the deaf peer's connection")
            stop.set()
    finally:
        deaf.close()
    growth = _peak_rss_mb(proc.pid) - before
    # the bound (6 MiB) + what the kernel's socket buffers hold + one incoming message: far from 64 MiB
    assert growth < 40, f"the node grew {growth:.0f} MB for a peer that never reads"
    assert worst[0] < 1.0, f"a member's call took {worst[0]:.2f} s meanwhile"
    with member.as_default():
        assert await GenServer.call(echo, "after", timeout=5) == "after"


async def test_error_replies_never_echo_what_a_peer_sent(target: tuple[NodeProcess, Node, ProcessRef]) -> None:
    """400 requests naming a 1 MiB system operation: before, each error reply echoed the name
    (the node grew 405 MB for a peer that never read); now a reply says what was wrong in a line."""
    proc, member, echo = target
    assert proc.id is not None
    before = _peak_rss_mb(proc.pid)
    deaf = await anyio.to_thread.run_sync(DeafPeer, proc.id.port)
    op = "x" * (MIB + 1024 * 100)  # a little over 1 MiB (the node takes messages up to 2 MiB)
    try:
        def flood() -> int:
            return sum(deaf.request([p.RPC, deaf.req + 1, op, None]) for _ in range(400))

        assert await anyio.to_thread.run_sync(flood) == 400
        # (sendall returned: the node has read all but what the kernel's buffers still hold)
        with member.as_default():
            assert await GenServer.call(echo, "after", timeout=10) == "after"
        await wait_until(lambda: proc.proc.poll() is None, 1.0, "the node is alive")
    finally:
        deaf.close()
    growth = _peak_rss_mb(proc.pid) - before
    assert growth < 40, f"the node grew {growth:.0f} MB"
    assert not any("send buffer bound" in line for line in proc.stderr)
