"""Frames carry one or more messages: batching on the sender, one streaming decode on the
receiver, and a bad message in a batch costs only itself (or the connection when malformed)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from noex_lab import Cluster, GenServer, ProcessRef, SerializationError, wire_type
from noex_lab.core.node import Node
from noex_lab.distribution.connection import Connection
from noex_lab.distribution.framing import HEADER, FrameReader, batch
from tests.distribution.test_cluster import Recorder
from tests.helpers.cluster import start_cluster, wait_until


def _messages_per_frame(data: bytes) -> list[list[Any]]:
    frames = FrameReader(2**20).feed(data)
    out = []
    for body in frames:
        unpacker = msgpack.Unpacker()
        unpacker.feed(body)
        out.append(list(unpacker))
    return out


def test_batch_packs_whole_messages_in_order_within_the_limit() -> None:
    bodies = [msgpack.packb([3, i, 0, "x" * 10]) for i in range(100)]
    per_frame = _messages_per_frame(batch(bodies, 200))
    assert [m[1] for frame in per_frame for m in frame] == list(range(100))
    assert all(len(frame) > 1 for frame in per_frame)
    encoded = [sum(len(msgpack.packb(m)) for m in frame) for frame in per_frame]
    assert max(encoded) <= 200


def test_batch_gives_a_message_bigger_than_the_limit_a_frame_of_its_own() -> None:
    small, big = msgpack.packb([3, 1, 0, "s"]), msgpack.packb([3, 2, 0, "b" * 500])
    per_frame = _messages_per_frame(batch([small, big, small], 100))
    assert [[m[1] for m in frame] for frame in per_frame] == [[1], [2], [1]]
    assert batch([], 100) == b""


async def _recorder_on_second_of_two() -> tuple[Node, Node, ProcessRef]:
    a, b = await start_cluster(2)
    with b.as_default():
        ref = await GenServer.start(Recorder)
    return a, b, ref


def _connection(node: Node, peer: Node) -> Connection:
    assert node.router is not None and peer.id is not None
    conn: Connection = node.router.transport.conns[peer.id]  # type: ignore[attr-defined]
    return conn


@pytest.mark.anyio
@pytest.mark.usefixtures("cleanup")
async def test_messages_sent_in_one_iteration_share_frames_and_keep_their_order() -> None:
    a, b, ref = await _recorder_on_second_of_two()
    conn = _connection(b, a)
    frames_before, messages_before = conn.received_frames, conn.received_messages
    with a.as_default():
        for i in range(500):
            GenServer.cast(ref, i)
        assert await GenServer.call(ref, "x") == 501
        log = await GenServer.call(ref, "log")
    assert [entry[1] for entry in log] == [*range(500), "x"]
    frames = conn.received_frames - frames_before
    messages = conn.received_messages - messages_before
    assert messages >= 501
    assert frames < messages / 10, (frames, messages)


@pytest.mark.anyio
@pytest.mark.usefixtures("cleanup")
async def test_an_undecodable_message_in_a_batch_costs_only_itself() -> None:
    class Brittle:
        pass

    wire_type(Brittle, name="tests.framing.Brittle", encode=lambda obj: 1, decode=lambda state: 1 / 0)
    a, b, ref = await _recorder_on_second_of_two()
    errors: list[str] = []
    b.events.subscribe(lambda event: errors.append(str(event)) if event.kind == "error" else None)
    with a.as_default():
        GenServer.cast(ref, "first")
        GenServer.cast(ref, Brittle())  # the same frame as its neighbours: one loop iteration
        GenServer.cast(ref, "third")
        with pytest.raises(SerializationError, match="cannot decode"):
            await GenServer.call(ref, Brittle())
        assert await GenServer.call(ref, "x") == 3
        log = await GenServer.call(ref, "log")
    assert [entry[1] for entry in log] == ["first", "third", "x"]
    assert len(a.get_nodes()) == 1
    assert any("could not be decoded" in text for text in errors)


@pytest.mark.anyio
@pytest.mark.usefixtures("cleanup")
async def test_a_frame_that_ends_inside_a_message_closes_the_connection() -> None:
    a, b = await start_cluster(2)
    conn = _connection(b, a)
    whole = msgpack.packb([3, 999, 0, "never delivered"])
    assert conn._received(HEADER.pack(len(whole) - 3) + whole[:-3]) is False


@pytest.mark.anyio
@pytest.mark.usefixtures("cleanup")
async def test_malformed_bytes_after_good_messages_close_the_connection_after_delivering_those() -> None:
    a, b, ref = await _recorder_on_second_of_two()
    conn = _connection(b, a)
    assert b.id is not None
    good = msgpack.packb([3, ref.id, ref.creation, "before"])
    body = good + b"\xc1\xc1\xc1"  # 0xc1 is never valid msgpack
    assert conn._received(HEADER.pack(len(body)) + body) is False
    with b.as_default():
        log = await GenServer.call(ref, "log")
    assert log == [("cast", "before")]


@pytest.mark.anyio
@pytest.mark.usefixtures("cleanup")
async def test_a_node_with_a_small_message_limit_takes_batches_from_a_default_peer() -> None:
    sender = await Cluster.start("sender", port=0)
    small = await Cluster.start("small", port=0, seeds=[str(sender.id)], max_message_bytes=4096)
    await wait_until(lambda: sender.get_nodes() and small.get_nodes(), 5.0, "joined")
    with small.as_default():
        ref = await GenServer.start(Recorder)
    with sender.as_default():
        for i in range(2000):  # about 20 KiB of casts in one loop iteration: batched frames
            GenServer.cast(ref, i)
        assert await GenServer.call(ref, "x") == 2001
    assert [node.id for node in small.get_nodes()] == [sender.id]
