"""The remote call path's shortcuts keep its guarantees: a frame sent after a lone received
message is written at once and the frames after it are still coalesced, in order; the MAC of
small frames (CPython's own SHA-256) and of big ones (OpenSSL's) are the same HMAC-SHA256;
deadline slots reused for a run of calls never fail one early. Real TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from noex_lab import CallTimeoutError, GenServer, Node
from noex_lab.core._backend import DeadlineSlots
from noex_lab.distribution import framing
from noex_lab.distribution import protocol as p
from noex_lab.distribution.connection import Connection
from noex_lab.distribution.routing import RemoteReply
from tests.helpers.cluster import secured_pair, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

SECRET = "a long cluster secret for the call path tests"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the write path measured here is asyncio's fast path


class Echo(GenServer):
    """call ("casts", to, n): casts ("seq", i) for i in range(n) to `to`, then replies n."""

    def handle_call(self, msg: Any, state: Any) -> tuple[Any, Any]:
        if msg[0] == "casts":
            for i in range(msg[2]):
                GenServer.cast(msg[1], ("seq", i))
            return msg[2], state
        return msg, state


class Recorder(GenServer):
    def init(self, arg: Any) -> list[Any]:
        return []

    def handle_cast(self, msg: Any, state: list[Any]) -> list[Any]:
        return [*state, msg]

    def handle_call(self, msg: Any, state: list[Any]) -> tuple[Any, list[Any]]:
        return list(state), state


class Counter(GenServer):
    def init(self, arg: Any) -> int:
        return 0

    def handle_cast(self, msg: Any, state: int) -> int:
        return state + 1

    def handle_call(self, msg: Any, state: int) -> tuple[int, int]:
        return state, state


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Node, Node, Any]]:
    """Node A (the default node: started first) and node B, with a secret; an Echo on B."""
    a, b, ref = await secured_pair("call_path", "call_path_echo", Echo, SECRET)
    yield a, b, ref


def _conn(node: Node, peer: Any) -> Connection:
    conn = node.distribution.transport.conns[peer]
    assert isinstance(conn, Connection)
    return conn


async def test_the_frame_after_a_lone_message_is_written_at_once_and_the_rest_coalesced(
    pair: tuple[Node, Node, Any],
) -> None:
    a, b, ref = pair
    assert await GenServer.call(ref, ("ping",)) == ("ping",)  # the lone reply makes the next frame direct
    conn = _conn(a, b.id)
    assert conn._direct_ok and conn._lone
    writes: list[bytes] = []
    transport = conn._transport
    real_write = transport.write

    def counting_write(data: bytes) -> None:
        writes.append(data)
        real_write(data)

    transport.write = counting_write
    try:
        nobody = [p.CAST, 10**9, b.incarnation, "x"]  # a cast to no process: dropped by B
        conn.send(nobody)
        assert len(writes) == 1  # at once, before this task yields
        conn.send(nobody)
        conn.send(nobody)
        assert len(writes) == 1  # coalesced until the end of the loop iteration
        await wait_until(lambda: len(writes) == 2, timeout=5)  # both in one write
    finally:
        transport.write = real_write
    assert await GenServer.call(ref, ("pong",)) == ("pong",)  # the MAC sequence held


async def test_casts_sent_before_a_reply_arrive_before_it(pair: tuple[Node, Node, Any]) -> None:
    """B's handler casts to A and replies after a lone CALL: the first cast is written at once,
    the rest and the reply coalesced behind it, so A sees every cast, in order, before the reply."""
    a, _b, ref = pair
    recorder = await GenServer.start(Recorder)
    for n in (1, 2, 50):
        await GenServer.call(recorder, "get")  # (a local call: keeps the remote exchange lone)
        assert await GenServer.call(ref, ("casts", recorder, n)) == n
        got = await GenServer.call(recorder, "get")
        assert got[-n:] == [("seq", i) for i in range(n)]


async def test_small_and_big_frames_carry_the_same_hmac_sha256_tags() -> None:
    key = os.urandom(32)
    sealer = framing.FrameSealer(key)
    opener = framing.FrameOpener(key)
    small = framing.SMALL_FRAME
    for seq, size in enumerate([0, 1, small - 1, small, small + 1, 4096, 1, 70_000, small]):
        body = os.urandom(size)
        sealed = sealer.seal(body)
        assert sealed[-16:] == hmac.new(key, seq.to_bytes(8, "big") + body, hashlib.sha256).digest()[:16]
        assert bytes(opener.open(memoryview(sealed)[4:])) == body


async def test_deadline_slots_reused_by_a_run_of_calls_never_expire_early() -> None:
    loop = asyncio.get_running_loop()
    slots = DeadlineSlots(loop)
    added: list[tuple[float, float, asyncio.Future[Any]]] = []  # (when, timeout, future)
    expired: dict[int, float] = {}
    end = time.monotonic() + 0.12  # many 1 ms slots, each shared by a run of adds
    for i in range(100_000):
        if time.monotonic() > end:
            break
        fut: asyncio.Future[Any] = loop.create_future()
        fut.add_done_callback(lambda _f, i=i: expired.__setitem__(i, time.monotonic()))
        timeout = 0.05 if i % 5 else 0.08  # runs with one timeout, broken by another
        added.append((time.monotonic(), timeout, fut))
        slots.add(fut, timeout)
        await anyio.sleep(0.0005)
    with anyio.fail_after(5):
        for _, _, fut in added:
            with pytest.raises(TimeoutError):
                await fut
    assert len(added) > 20
    for i, (at, timeout, _) in enumerate(added):
        assert expired[i] >= at + timeout  # never early
        assert expired[i] <= at + timeout + 0.02 + 1.0  # late by at most a slot (+ a loaded machine)


async def test_deadline_slots_never_reuse_an_expired_slot_for_tiny_or_negative_timeouts() -> None:
    """(A call that waited for a busy link passes what is left of its timeout, maybe <= 0.)"""
    loop = asyncio.get_running_loop()
    slots = DeadlineSlots(loop)
    for timeout in (-0.5, -0.5, 1e-9, 1e-9, 0.0005, 0.0005):
        fut: asyncio.Future[Any] = loop.create_future()
        slots.add(fut, timeout)
        with anyio.fail_after(2):
            with pytest.raises(TimeoutError):
                await fut



async def test_a_remote_call_sends_nothing_until_awaited_and_a_late_answer_is_harmless(
    pair: tuple[Node, Node, Any],
) -> None:
    """`GenServer.call` hands back the request's coroutine: dropped unawaited, no frame leaves;
    a reply whose caller timed out is sent and ignored, and the server keeps answering."""
    a, b, ref = pair
    conn = _conn(a, b.id)
    sent = conn.sent_messages
    pending = GenServer.call(ref, ("never",))
    pending.close()
    assert conn.sent_messages == sent and not conn._direct and not conn._small
    counter = await GenServer.start(Counter)
    with pytest.raises(CallTimeoutError):  # B casts 20,000 times before it answers: too late
        await GenServer.call(ref, ("casts", counter, 20_000), timeout=0.01)
    assert await GenServer.call(ref, ("after",)) == ("after",)  # B answered the late one before
    assert await GenServer.call(counter, "count") == 20_000  # (its casts came before that answer)


async def test_a_remote_reply_answered_twice_raises_like_a_future_and_sends_once(
    pair: tuple[Node, Node, Any],
) -> None:
    a, b, _ref = pair
    conn = _conn(b, a.id)
    sent: list[Any] = []
    real_send = conn.send
    conn.send = sent.append  # type: ignore[method-assign]
    try:
        reply = RemoteReply(conn, 7)
        assert not reply.done()
        reply.set_result("first")
        assert reply.done()
        with pytest.raises(asyncio.InvalidStateError):
            reply.set_result("second")
    finally:
        conn.send = real_send  # type: ignore[method-assign]
    assert sent == [[p.REPLY, 7, True, "first"]]
