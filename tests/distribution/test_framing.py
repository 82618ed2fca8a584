"""Frames carry one or more messages: batching on the sender, one streaming decode on the
receiver, and a bad message in a batch costs only itself (or the connection when malformed)."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest

from noex_lab import Cluster, GenServer, ProcessRef, SerializationError, ServerNotRunningError, wire_type
from noex_lab.core.node import Node
from noex_lab.distribution.connection import Connection, describe
from noex_lab.distribution.framing import (
    CHUNKS_IN_PROGRESS,
    HEADER,
    ChunkAssembler,
    FrameReader,
    ProtocolError,
    batch,
)
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
    conn: Connection = node.router.conns[peer.id]  # type: ignore[attr-defined]
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


def _undecodable(name: str) -> type:
    """A class that travels (as `tests.framing.<name>`) and whose decoding always raises."""
    cls = type(name, (), {})
    wire_type(cls, name=f"tests.framing.{name}", encode=lambda obj: 1, decode=lambda state: 1 / 0)
    return cls


@pytest.mark.anyio
@pytest.mark.usefixtures("cleanup")
async def test_an_undecodable_message_in_a_batch_costs_only_itself() -> None:
    Brittle = _undecodable("Brittle")
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


# ------------------------------------------------------------------ hostile frames (issue 12)
def test_a_big_frame_in_small_pieces_is_reassembled_in_linear_time() -> None:
    body = b"\xc6" + (60 * 2**20 - 5).to_bytes(4, "big") + bytes(60 * 2**20 - 5)
    data = HEADER.pack(len(body)) + body
    reader = FrameReader(64 * 2**20)
    frames: list[memoryview] = []
    started = time.process_time()
    for at in range(0, len(data), 64 * 1024):
        frames.extend(reader.feed(data[at:at + 64 * 1024]))
    spent = time.process_time() - started
    assert [len(f) for f in frames] == [len(body)] and frames[0][:5] == body[:5] and reader.buffered == 0
    assert spent < 1.0, f"{spent:.2f} CPU-s to reassemble 60 MiB from 64 KiB pieces"


def test_frames_split_anywhere_come_out_whole_and_headers_are_checked_at_once() -> None:
    bodies = [b"a" * n for n in (0, 1, 3, 4, 5, 300)]
    data = b"".join(HEADER.pack(len(b)) + b for b in bodies)
    for size in (1, 2, 3, 5, 7, 64):
        reader = FrameReader(1000)
        got = [bytes(f) for at in range(0, len(data), size) for f in reader.feed(data[at:at + size])]
        assert got == bodies and reader.buffered == 0
    reader = FrameReader(1000)
    assert reader.feed(b"\x00\x00") == []
    with pytest.raises(ProtocolError, match="exceeds the limit of 1000"):
        reader.feed(b"\x10\x00")  # the header is complete: refused before the body arrives


def test_chunked_messages_in_progress_are_bounded_in_size_number_and_shape() -> None:
    chunks = ChunkAssembler(100)
    assert chunks.add(1, b"x" * 60, False) is None
    with pytest.raises(ProtocolError, match="exceeds 100 bytes"):
        chunks.add(1, b"x" * 41, False)
    chunks = ChunkAssembler(100)
    for i in range(CHUNKS_IN_PROGRESS):
        assert chunks.add(i, b"z", False) is None
    with pytest.raises(ProtocolError, match="chunked messages in progress"):
        chunks.add(CHUNKS_IN_PROGRESS, b"z", False)
    assert chunks.add(0, b"z", True) == b"zz"  # a finished one makes room
    assert chunks.add(CHUNKS_IN_PROGRESS, b"z", False) is None
    for bad in (("1", b"x", False), (1, [1, 2], False), (1, b"x", 1)):
        with pytest.raises(ProtocolError, match="malformed chunk"):
            ChunkAssembler(100).add(*bad)


@pytest.mark.parametrize(
    "tail",
    [
        b"\xdd\x00\x00\x00\xc8",  # an array32 header only: its items would follow in later frames
        b"\x94\x03\x01",  # an array with two of its four items
        b"\xc6\x00\x00\x00\x10" + b"y" * 4,  # a bin with part of its bytes
        b"\xd2\x00\x00",  # half an int32
        b"\xd4\x00",  # a fixext1 WRAPPED without its byte (a nil would complete it)
        b"\xc7\x01\x00",  # the same as ext8
        b"\xc7\x03\x00\x92\xc0",  # a WRAPPED array missing its last item
        b"\x81\x01",  # a map without its value
    ],
    ids=repr,
)
@pytest.mark.anyio
@pytest.mark.usefixtures("cleanup")
async def test_a_frame_that_ends_inside_a_message_closes_the_connection_whatever_is_cut(tail: bytes) -> None:
    a, b, ref = await _recorder_on_second_of_two()
    conn = _connection(b, a)
    good = msgpack.packb([3, ref.id, ref.creation, "before"])
    assert conn._received(HEADER.pack(len(good + tail)) + good + tail) is False
    with b.as_default():
        assert await GenServer.call(ref, "log") == [("cast", "before")]


@pytest.mark.parametrize(
    ("tail", "delivered", "kept"),
    [
        (b"", ["first", "second"], True),  # two messages: both, in order
        (b"\x94\x03\x01", ["first", "second"], False),  # then a message cut short: closed after them
        (b"\xc1", ["first", "second"], False),  # then malformed bytes
    ],
    ids=["two", "two-then-cut", "two-then-malformed"],
)
@pytest.mark.anyio
@pytest.mark.usefixtures("cleanup")
async def test_a_frame_after_a_lone_one_is_decoded_as_any_other(tail: bytes, delivered: list[str], kept: bool) -> None:
    # after a frame holding one message, the next is tried as exactly one message first
    # (one unpackb): whatever else it holds must come out as from the streaming decoder
    a, b, ref = await _recorder_on_second_of_two()
    conn = _connection(b, a)
    lone = msgpack.packb([3, ref.id, ref.creation, "lone"])
    assert conn._received(HEADER.pack(len(lone)) + lone) is True
    assert conn._single
    body = b"".join(msgpack.packb([3, ref.id, ref.creation, text]) for text in delivered) + tail
    assert conn._received(HEADER.pack(len(body)) + body) is kept
    with b.as_default():
        assert await GenServer.call(ref, "log") == [("cast", text) for text in ["lone", *delivered]]


@pytest.mark.anyio
@pytest.mark.usefixtures("cleanup")
async def test_an_undecodable_lone_request_after_a_lone_frame_is_answered_with_the_error() -> None:
    Fragile = _undecodable("Fragile")
    a, b, ref = await _recorder_on_second_of_two()
    conn = _connection(b, a)
    lone = msgpack.packb([3, ref.id, ref.creation, "lone"])
    assert conn._received(HEADER.pack(len(lone)) + lone) is True
    assert conn._single
    with a.as_default():
        with pytest.raises(SerializationError, match="cannot decode"):
            await GenServer.call(ref, Fragile())
        assert await GenServer.call(ref, "x") == 2
    assert len(a.get_nodes()) == 1


@pytest.mark.parametrize("body", [b"\x94\x03\x01", b"\xc1", b"\x93\x0f\x01\xc3"], ids=["cut", "malformed", "chunk"])
@pytest.mark.anyio
@pytest.mark.usefixtures("cleanup")
async def test_a_bad_lone_frame_after_a_lone_one_closes_the_connection(body: bytes) -> None:
    a, b, ref = await _recorder_on_second_of_two()
    conn = _connection(b, a)
    lone = msgpack.packb([3, ref.id, ref.creation, "lone"])
    assert conn._received(HEADER.pack(len(lone)) + lone) is True
    assert conn._received(HEADER.pack(len(body)) + body) is False
    with b.as_default():
        assert await GenServer.call(ref, "log") == [("cast", "lone")]


@pytest.mark.parametrize("lone", [False, True], ids=["batch", "after-a-lone-frame"])
@pytest.mark.anyio
@pytest.mark.usefixtures("cleanup")
async def test_replies_complete_their_requests_fail_them_typed_or_are_dropped_when_too_late(lone: bool) -> None:
    # successful replies complete their future in the frame loop itself; a failed one goes
    # through dispatch (its typed error); one for a request that timed out, or an unknown
    # request, is dropped without an error
    a, b = await start_cluster(2)
    conn = _connection(b, a)
    errors: list[str] = []
    b.events.subscribe(lambda event: errors.append(str(event)) if event.kind == "error" else None)
    first = 10**9
    ok, failed, late = (b.backend.new_future() for _ in range(3))
    late.set_exception(TimeoutError())  # (what the deadline does)
    conn.pending.update({first: ok, first + 1: failed, first + 2: late})
    messages = [[2, first, True, "value"], [2, first + 1, False, ["noproc", "noproc"]], [2, first + 2, True, 1],
                [2, first + 3, True, 1]]
    frames = [[m] for m in messages] if lone else [messages]
    conn._single = lone
    for frame in frames:
        body = b"".join(msgpack.packb(m) for m in frame)
        assert conn._received(HEADER.pack(len(body)) + body) is True
    assert ok.result() == "value"
    with pytest.raises(ServerNotRunningError):
        failed.result()
    with pytest.raises(TimeoutError):
        late.result()
    assert errors == []


@pytest.mark.anyio
@pytest.mark.usefixtures("cleanup")
async def test_big_frames_and_chunked_messages_are_decoded_a_slice_at_a_time_in_order() -> None:
    a, b, ref = await _recorder_on_second_of_two()
    conn = _connection(b, a)
    big = [(i, str(i)) for i in range(60_000)]  # ~600 KiB, tuples: a WRAPPED message
    with a.as_default():
        GenServer.cast(ref, "first")
        GenServer.cast(ref, big)  # sent in chunks
        GenServer.cast(ref, "after")
        assert await GenServer.call(ref, "x") == 4
        log = await GenServer.call(ref, "log")
    assert [entry[1] for entry in log] == ["first", big, "after", "x"]
    assert not conn._backlog
    # a big frame with two messages, the first refused alone (an unknown wire type)
    cast = b"\x94" + msgpack.packb(3) + msgpack.packb(ref.id) + msgpack.packb(ref.creation)
    cast += b"\x92\xc7\x01\x17X\xc0"  # [the marker of wire type "X", None]: unknown here
    frame = b"\xc9" + len(cast).to_bytes(4, "big") + b"\x00" + cast  # a WRAPPED message
    payload = b"p" * 100_000
    second = msgpack.packb([3, ref.id, ref.creation, payload])
    errors: list[str] = []
    b.events.subscribe(lambda event: errors.append(str(event)) if event.kind == "error" else None)
    assert conn._received(HEADER.pack(len(frame + second)) + frame + second) is True
    with b.as_default():
        await wait_until(lambda: not conn._backlog, 5.0, "the big frame decoded")
        log = await GenServer.call(ref, "log")
    assert log[-1] == ("cast", payload) and len(log) == 5
    assert any("could not be decoded" in text and "unknown wire type 'X'" in text for text in errors)


def test_describe_costs_little_whatever_the_value() -> None:
    for value in ("x" * 2**20, b"y" * 2**20, [list(range(1000))] * 1000, {i: "v" * 10**5 for i in range(100)},
                  2**100_000, ("t",) * 10**6):
        started = time.perf_counter()
        text = describe(value)
        assert len(text) <= 200 and time.perf_counter() - started < 0.05, (type(value), len(text))


@pytest.mark.anyio
@pytest.mark.usefixtures("cleanup")
async def test_what_follows_a_chunked_message_or_a_big_map_in_a_frame_waits_for_it() -> None:
    a, b, ref = await _recorder_on_second_of_two()
    conn = _connection(b, a)
    codec = b.distribution.codec  # type: ignore[attr-defined]
    whole = codec.encode([3, ref.id, ref.creation, ("chunked", "z" * 100_000)])
    big_map = {f"k{i}": i for i in range(100)}  # more than msgpack builds unchecked: decoded apart
    first = msgpack.packb([15, 7, False, whole[:60_000]])
    rest = b"".join([
        msgpack.packb([15, 7, True, whole[60_000:]]),
        codec.encode([3, ref.id, ref.creation, "after the chunks"]),
        codec.encode([3, ref.id, ref.creation, big_map]),
        codec.encode([3, ref.id, ref.creation, "after the map"]),
    ])
    for body in (first, rest):
        assert conn._received(HEADER.pack(len(body)) + body) is True
    with b.as_default():
        await wait_until(lambda: not conn._backlog, 5.0, "decoded")
        log = await GenServer.call(ref, "log")
    assert [entry[1] for entry in log] == [("chunked", "z" * 100_000), "after the chunks", big_map, "after the map"]
