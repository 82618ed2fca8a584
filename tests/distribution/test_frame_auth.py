"""Frames after the handshake carry a MAC under per-connection, per-direction keys
(issue 12 §6): a relayed, injected, replayed, reordered or reflected frame fails the check."""

from __future__ import annotations

import os

import msgpack
import pytest

from noex_lab.distribution.framing import FrameOpener, FrameReader, FrameSealer, ProtocolError, batch, frame_keys


def _pair() -> tuple[FrameSealer, FrameOpener, FrameReader]:
    send, _ = frame_keys(os.urandom(32), dialer=True)
    return FrameSealer(send), FrameOpener(send), FrameReader(2**20)


def test_sealed_frames_open_in_order_and_batches_are_sealed_frame_by_frame() -> None:
    sealer, opener, reader = _pair()
    bodies = [msgpack.packb([3, i, 0, "x" * 100]) for i in range(2000)]
    data = batch(bodies, 64 * 1024, sealer) + sealer.seal(b"last")
    frames = reader.feed(data)
    assert len(frames) > 2
    opened = [bytes(opener.open(f)) for f in frames]
    unpacker = msgpack.Unpacker()
    unpacker.feed(b"".join(opened[:-1]))
    assert [m[1] for m in unpacker] == list(range(2000))
    assert opened[-1] == b"last"


@pytest.mark.parametrize("attack", ["flip", "inject", "replay", "reorder", "drop", "reflect", "other_connection"])
def test_a_tampered_stream_fails_authentication(attack: str) -> None:
    session = os.urandom(32)
    dialer_send, dialer_recv = frame_keys(session, dialer=True)
    acceptor_send, acceptor_recv = frame_keys(session, dialer=False)
    assert (dialer_send, dialer_recv) == (acceptor_recv, acceptor_send) and dialer_send != dialer_recv
    sealer = FrameSealer(dialer_send)
    frames = [bytes(f) for f in FrameReader(2**20).feed(b"".join(sealer.seal(b"msg %d" % i) for i in range(3)))]
    opener = FrameOpener(acceptor_recv)
    if attack == "flip":
        frames[1] = frames[1][:2] + bytes([frames[1][2] ^ 1]) + frames[1][3:]
    elif attack == "inject":
        frames.insert(1, b"forged body" + os.urandom(16))
    elif attack == "replay":
        frames[2] = frames[0]
    elif attack == "reorder":
        frames[1], frames[2] = frames[2], frames[1]
    elif attack == "drop":
        del frames[1]
    elif attack == "reflect":  # a frame the acceptor sent, played back to it
        own = FrameSealer(acceptor_send)
        frames = [bytes(FrameReader(2**20).feed(own.seal(b"msg 0"))[0])]
    elif attack == "other_connection":
        other = FrameSealer(frame_keys(os.urandom(32), dialer=True)[0])
        frames = [bytes(FrameReader(2**20).feed(other.seal(b"msg 0"))[0])]
    with pytest.raises(ProtocolError, match="failed authentication"):
        for frame in frames:
            opener.open(memoryview(frame))


def test_the_tag_is_hmac_sha256_of_the_sequence_number_and_the_body() -> None:
    import hashlib
    import hmac

    for key in (os.urandom(32), os.urandom(100)):  # (a key longer than the block is hashed first)
        sealer = FrameSealer(key)
        for seq, body in enumerate([b"", b"x" * 100, os.urandom(70_000)]):
            expected = hmac.new(key, seq.to_bytes(8, "big") + body, hashlib.sha256).digest()[:16]
            assert sealer.seal(body)[-16:] == expected
