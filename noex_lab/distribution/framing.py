"""Length-prefixed frames: a 4-byte big-endian length, then the body.

After the handshake a frame's body holds one or more msgpack messages back to back: the
small messages a node sends in one loop iteration travel as one frame (see `batch`), which
the receiver decodes with one streaming unpacker, so the per-message cost on both sides is
close to msgpack's own. A batch stays within `batch_bytes` unless it holds one message only.

A frame holds whole messages: one never continues in the next frame (the receiver closes a
connection whose frame ends inside a message), so one message is bounded by one frame.

`FrameReader` parses a byte stream incrementally, in time linear in its size, and enforces the
maximum frame size, so a hostile length header is refused before any memory is allocated for it.
Large bodies are split into chunk frames (see `ChunkAssembler`, which bounds what a peer can
make us buffer of unfinished ones) so small frames can interleave with them on one connection.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import struct
from collections.abc import Callable
from typing import Any

from ..core.errors import ProtocolError as ProtocolError  # (defined in core.errors, re-exported)

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size


def batch(bodies: list[bytes], batch_bytes: int, sealer: FrameSealer | None = None) -> bytes:
    """Frames for encoded messages, in order: as many whole messages per frame as fit in
    `batch_bytes` (a bigger message has a frame of its own); sealed when `sealer` is given."""
    out: list[bytes] = []
    start = size = 0
    pack = HEADER.pack
    for index, body in enumerate(bodies):
        if size and size + len(body) > batch_bytes:
            if sealer is None:
                out.append(pack(size))
                out.extend(bodies[start:index])
            else:
                out.append(sealer.seal(b"".join(bodies[start:index])))
            start, size = index, 0
        size += len(body)
    if size:
        if sealer is None:
            out.append(pack(size))
            out.extend(bodies[start:])
        else:
            out.append(sealer.seal(b"".join(bodies[start:])))
    return b"".join(out)


MAC_BYTES = 16


def frame_keys(session_key: bytes, dialer: bool) -> tuple[bytes, bytes]:
    """(send key, receive key) of one side of a connection: one key per direction, so a frame
    cannot be reflected back to its sender."""
    to_acceptor = hmac.digest(session_key, b"noex-lab frames dialer->acceptor", "sha256")
    to_dialer = hmac.digest(session_key, b"noex-lab frames acceptor->dialer", "sha256")
    return (to_acceptor, to_dialer) if dialer else (to_dialer, to_acceptor)


def _builtin_sha256() -> Callable[[bytes], Any]:
    """CPython's own SHA-256 (`_sha256`, `_sha2` from 3.12), else hashlib's (OpenSSL)."""
    for module in ("_sha2", "_sha256"):
        try:
            found: Callable[[bytes], Any] = importlib.import_module(module).sha256
            return found
        except (ImportError, AttributeError):
            pass
    return hashlib.sha256


# Frames up to this size are tagged with CPython's own SHA-256, bigger ones with OpenSSL's: the
# same function (the same tags), but OpenSSL's is ~5x faster per byte while the small built-in
# one costs about half as much per frame when the CPU caches are cold, as they are for the lone
# request or reply a node wakes up for (W3: a remote call's latency).
SMALL_FRAME = 256
_small_sha256 = _builtin_sha256()


class FrameSealer:
    """Appends to every frame an HMAC-SHA256 tag (truncated to 128 bits, RFC 4868) over the
    frame's sequence number in this direction and its body. With a key that only the two ends of
    this connection hold, a relayed, injected, replayed, dropped or reordered frame fails the
    check on the receiver, which closes the connection (issue 12 §6)."""

    __slots__ = ("_inner", "_outer", "_small_inner", "_small_outer", "seq")

    def __init__(self, key: bytes) -> None:
        # HMAC (RFC 2104) with its two padded-key hash states computed once: per frame, two
        # copies of C hash objects instead of building an `hmac.HMAC` (half the cost; the same
        # tags, which the tests check against `hmac`).
        block = hashlib.sha256().block_size
        if len(key) > block:
            key = hashlib.sha256(key).digest()
        key = key.ljust(block, b"\0")
        inner_key, outer_key = bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)
        self._inner = hashlib.sha256(inner_key)
        self._outer = hashlib.sha256(outer_key)
        self._small_inner = _small_sha256(inner_key)
        self._small_outer = _small_sha256(outer_key)
        self.seq = 0

    def _tag(self, body: bytes | memoryview) -> bytes:
        seq = self.seq
        self.seq = seq + 1
        if len(body) <= SMALL_FRAME:  # (one update of a small copy: a C call less than two updates)
            inner = self._small_inner.copy()
            inner.update(seq.to_bytes(8, "big") + body)
            outer = self._small_outer.copy()
        else:
            inner = self._inner.copy()
            inner.update(seq.to_bytes(8, "big"))
            inner.update(body)
            outer = self._outer.copy()
        outer.update(inner.digest())
        digest: bytes = outer.digest()
        return digest[:MAC_BYTES]

    def seal(self, body: bytes) -> bytes:
        """One frame: the length (of body and tag), the body, the tag."""
        return HEADER.pack(len(body) + MAC_BYTES) + body + self._tag(body)


class FrameOpener(FrameSealer):
    """The receiving end of a `FrameSealer`: checks and strips each frame's tag, in order."""

    __slots__ = ()

    def open(self, frame: memoryview) -> memoryview:
        """The body of `frame`; ProtocolError if its tag is wrong (forged, replayed, reordered)."""
        if len(frame) < MAC_BYTES:
            raise ProtocolError("a frame is too short to carry its authentication tag")
        body = frame[:-MAC_BYTES]
        if not hmac.compare_digest(self._tag(body), frame[-MAC_BYTES:]):
            raise ProtocolError(
                "a frame failed authentication (forged, replayed or reordered in transit); "
                "use TLS on networks where someone may tamper with traffic"
            )
        return body


class FrameReader:
    """Incremental frame parser with a maximum frame size.

    The bytes of an incomplete frame are kept as the pieces received and joined once, when the
    frame is complete: reassembling a big frame from many small reads costs time linear in its
    size. A length header is checked as soon as its 4 bytes are in."""

    __slots__ = ("_have", "_need", "_parts", "max_frame")

    def __init__(self, max_frame: int) -> None:
        self._parts: list[bytes] = []  # an incomplete frame, as received
        self._have = 0  # bytes in _parts
        self._need = 0  # bytes the frame in _parts needs, header included (0: header incomplete)
        self.max_frame = max_frame

    @property
    def buffered(self) -> int:
        return self._have

    def feed(self, data: bytes) -> list[memoryview]:
        """Add received bytes; return every complete frame body (raises ProtocolError).

        The bodies are views into an immutable copy of the input: no per-frame copy."""
        if type(data) is not bytes:
            data = bytes(data)
        if not self._parts and len(data) > HEADER_SIZE:  # exactly one whole frame: the common case
            (length,) = HEADER.unpack_from(data)
            if length + HEADER_SIZE == len(data) and length <= self.max_frame:
                return [memoryview(data)[HEADER_SIZE:]]
        if self._parts:
            self._parts.append(data)
            self._have += len(data)
            if not self._need:
                if self._have < HEADER_SIZE:
                    return []
                self._need = HEADER_SIZE + self._length(b"".join(self._parts[:-1]) + data[:HEADER_SIZE], 0)
            if self._have < self._need:
                return []
            chunk = b"".join(self._parts)
            self._parts = []
            self._have = self._need = 0
        else:
            chunk = data
        out: list[memoryview] = []
        view = memoryview(chunk)
        offset, size = 0, len(chunk)
        while size - offset >= HEADER_SIZE:
            end = offset + HEADER_SIZE + self._length(chunk, offset)
            if end > size:
                self._need = end - offset
                break
            out.append(view[offset + HEADER_SIZE:end])
            offset = end
        if offset < size:
            rest = chunk[offset:]  # a copy: the complete bodies do not keep it alive, nor it them
            self._parts = [rest]
            self._have = len(rest)
        return out

    def _length(self, data: bytes, offset: int) -> int:
        (length,) = HEADER.unpack_from(data, offset)
        if length > self.max_frame:
            raise ProtocolError(f"frame of {length} bytes exceeds the limit of {self.max_frame}")
        result: int = length
        return result


CHUNKS_IN_PROGRESS = 16  # chunked messages a connection may have in progress at once


class ChunkAssembler:
    """Reassembles bodies sent as chunks. What has arrived of unfinished messages is bounded:
    `max_bytes` per message, 2 * `max_bytes` in all, `CHUNKS_IN_PROGRESS` messages at once."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._parts: dict[int, bytearray] = {}
        self._total = 0

    def add(self, message_id: Any, data: Any, last: Any) -> bytearray | None:
        """Add one chunk; return the whole body when `last` arrives (raises ProtocolError)."""
        if type(message_id) is not int or type(data) is not bytes or type(last) is not bool:
            raise ProtocolError("malformed chunk: expected [CHUNK, int id, bool last, bytes]")
        body = self._parts.get(message_id)
        if body is None:
            if len(self._parts) >= CHUNKS_IN_PROGRESS:
                raise ProtocolError(f"more than {CHUNKS_IN_PROGRESS} chunked messages in progress")
            body = self._parts[message_id] = bytearray()
        if len(body) + len(data) > self.max_bytes or self._total + len(data) > 2 * self.max_bytes:
            raise ProtocolError(f"chunked message {message_id} exceeds {self.max_bytes} bytes")
        body += data
        self._total += len(data)
        if not last:
            return None
        del self._parts[message_id]
        self._total -= len(body)
        return body
