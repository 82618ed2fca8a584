"""Handshake security and hostile input, on real TCP (127.0.0.1)."""

from __future__ import annotations

import logging
import os
import random
import socket
import struct
from typing import Any

import anyio
import msgpack
import pytest

from noex_lab import Cluster, GenServer
from noex_lab.distribution import handshake as hs
from tests.distribution.behaviors_for_tests import Echo
from tests.helpers.cluster import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

SECRET = "correct horse battery staple"


async def test_wrong_or_missing_secret_never_joins_and_both_sides_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="noex_lab")
    a = await Cluster.start("a", port=0, cluster_secret=SECRET)
    b = await Cluster.start("b", port=0, seeds=[str(a.id)], cluster_secret=SECRET)
    await wait_until(lambda: len(a.get_nodes()) == 1, 5.0, "a and b joined")
    wrong = await Cluster.start("wrong", port=0, seeds=[str(a.id)], cluster_secret="not the secret!")
    open_node = await Cluster.start("open", port=0, seeds=[str(a.id)])
    await wait_until(lambda: a.distribution.transport.auth_failures >= 2, 5.0, "refusals on a")
    await wait_until(lambda: wrong.distribution.transport.auth_failures >= 1, 5.0, "refusal seen by wrong")
    await wait_until(lambda: open_node.distribution.transport.refusals, 5.0, "refusal seen by open")
    assert {i.id for i in a.get_nodes()} == {b.id}
    assert {i.id for i in b.get_nodes()} == {a.id}
    assert wrong.get_nodes() == [] and open_node.get_nodes() == []
    # the acceptor logs one line per host and second, and what it held back in a summary line
    await wait_until(lambda: "failed authentication" in caplog.text, 5.0, "the acceptor's log line")
    text = caplog.text
    assert "failed authentication" in text  # acceptor side, with the peer address
    assert "127.0.0.1:" in text
    assert "wrong cluster secret" in text  # dialer side learns why
    assert "requires a cluster_secret" in text


async def _raw_handshake_client(port: int, frames: list[bytes]) -> list[Any]:
    """Send raw handshake frames, return every frame the server answered."""
    answers: list[Any] = []
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        buf = b""
        for body in frames:
            await stream.send(struct.pack(">I", len(body)) + body)
            with anyio.move_on_after(1.0):
                while True:
                    if len(buf) >= 4:
                        (n,) = struct.unpack(">I", buf[:4])
                        if len(buf) >= 4 + n:
                            answers.append(msgpack.unpackb(buf[4:4 + n]))
                            buf = buf[4 + n:]
                            break
                    try:
                        buf += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return answers
    return answers


async def test_recorded_handshake_cannot_be_replayed() -> None:
    secret = hs.derive_key(SECRET.encode())
    a = await Cluster.start("a", port=0, cluster_secret=SECRET)
    assert a.id is not None
    # A legitimate client run by hand: record its frames.
    from noex_lab.core.node_id import NodeId

    me = hs.PeerHello(hs.PROTOCOL_VERSION, NodeId("rec", "127.0.0.1", 1), 7, hs.new_nonce(), True)
    hello = hs.encode(hs.HELLO, me.version, str(me.node_id), me.incarnation, me.nonce, True)
    answers = await _raw_handshake_client(a.id.port, [hello])
    welcome = hs.parse_hello(answers[0], hs.WELCOME)
    recorded_proof = hs.encode(hs.PROOF, hs.proof(secret, b"C", me, welcome))
    # Replay the recorded HELLO and PROOF on a new connection: the server's nonce is new.
    answers = await _raw_handshake_client(a.id.port, [hello, recorded_proof])
    assert answers[0][0] == hs.WELCOME
    assert answers[-1][0] == hs.REFUSE
    assert a.get_nodes() == []


async def test_hostile_bytes_close_only_the_offender_and_node_keeps_serving() -> None:
    a = await Cluster.start("a", port=0)
    b = await Cluster.start("b", port=0, seeds=[str(a.id)])
    await wait_until(lambda: len(a.get_nodes()) == 1, 5.0)
    with a.as_default():
        ref = await GenServer.start(Echo)
    assert a.id is not None
    port = a.id.port
    rng = random.Random(1234)
    payloads = [
        bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4096))) for _ in range(20)
    ] + [
        struct.pack(">I", 2**31) + b"x" * 100,             # oversized length header
        struct.pack(">I", 50) + b"\xc1" * 50,               # malformed msgpack (0xc1 is never used)
        struct.pack(">I", 10) + msgpack.packb(["hello"]),   # truncated / bogus hello
        b"\x00\x00",                                        # truncated header
    ]

    def attack(payload: bytes) -> None:
        """Send hostile bytes and wait until the node closes this connection."""
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            try:
                s.sendall(payload)
                s.settimeout(8)
                while s.recv(65536):
                    pass
            except OSError:
                pass

    async with anyio.create_task_group() as tg:
        for payload in payloads:
            tg.start_soon(anyio.to_thread.run_sync, attack, payload)
    with b.as_default():
        assert await GenServer.call(ref, "ping") == "ping"
    assert a.distribution.transport.pending_handshakes == 0


async def test_half_open_sockets_are_bounded_and_do_not_block_peers() -> None:
    a = await Cluster.start("a", port=0)
    assert a.id is not None
    socks: list[socket.socket] = []
    try:
        for _ in range(500):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", a.id.port))
            except BlockingIOError:
                pass
            socks.append(s)
        b = await Cluster.start("b", port=0, seeds=[str(a.id)])
        await wait_until(lambda: len(a.get_nodes()) == 1 and len(b.get_nodes()) == 1, 5.0, "join under flood")
        with b.as_default():
            ref = await GenServer.start(Echo)
        with a.as_default():
            assert await GenServer.call(ref, "x") == "x"
        assert a.distribution.transport.pending_handshakes <= 500
    finally:
        for s in socks:
            s.close()
    await wait_until(lambda: a.distribution.transport.pending_handshakes == 0, 8.0, "half-open sockets released")


async def test_big_message_does_not_starve_small_calls() -> None:
    a = await Cluster.start("a", port=0)
    b = await Cluster.start("b", port=0, seeds=[str(a.id)])
    await wait_until(lambda: len(a.get_nodes()) == 1, 5.0)
    with b.as_default():
        sink = await GenServer.start(Echo)
        small = await GenServer.start(Echo)
    big = os.urandom(48 * 2**20)
    latencies: list[float] = []
    done = anyio.Event()

    async def send_big() -> None:
        with a.as_default():
            result = await GenServer.call(sink, ("big", big), timeout=60)
        assert result == ("big", big)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(send_big)
        with a.as_default():
            for _ in range(400):
                if done.is_set():
                    break
                t0 = anyio.current_time()
                assert await GenServer.call(small, "p") == "p"
                latencies.append(anyio.current_time() - t0)
    assert len(latencies) >= 10
    latencies.sort()
    median = latencies[len(latencies) // 2]
    assert median < 0.050, f"median small-call latency {median * 1000:.1f} ms during a 48 MiB transfer"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_memory_stays_bounded_under_partial_frames_and_oversized_headers() -> None:
    a = await Cluster.start("a", port=0)
    assert a.id is not None
    before = _rss_bytes()
    socks: list[socket.socket] = []
    try:
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", a.id.port), timeout=5)
            if i % 2:
                s.sendall(struct.pack(">I", 4000) + b"x" * 3990)   # a handshake frame that never completes
            else:
                s.sendall(struct.pack(">I", 512 * 2**20) + b"y" * 4096)  # claims 512 MiB
            socks.append(s)
        await wait_until(lambda: a.distribution.transport.pending_handshakes <= 150, 5.0,
                         "oversized headers closed at once")
        grown = _rss_bytes() - before
        assert grown < 64 * 2**20, f"memory grew by {grown / 2**20:.0f} MiB"
        b = await Cluster.start("b", port=0, seeds=[str(a.id)])
        await wait_until(lambda: len(a.get_nodes()) == 1, 5.0, "a still admits real peers")
    finally:
        for s in socks:
            s.close()
    await wait_until(lambda: a.distribution.transport.pending_handshakes == 0, 8.0)
    assert {i.id for i in a.get_nodes()} == {b.id}
