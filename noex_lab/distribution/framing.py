"""Length-prefixed frames: a 4-byte big-endian length, then the body.

After the handshake a frame's body holds one or more msgpack messages back to back: the
small messages a node sends in one loop iteration travel as one frame (see `batch`), which
the receiver decodes with one streaming unpacker, so the per-message cost on both sides is
close to msgpack's own. A batch stays within `batch_bytes` unless it holds one message only.

`FrameReader` parses a byte stream incrementally and enforces the maximum frame size,
so a hostile length header is refused before any memory is allocated for it.
Large bodies are split into chunk frames (see `ChunkAssembler`) so small frames can
interleave with them on one connection.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from ..core.errors import NoexError

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size


class ProtocolError(NoexError):
    """A peer sent bytes that break the protocol; its connection is closed."""


def frame(body: bytes) -> bytes:
    """Prefix `body` with its length."""
    return HEADER.pack(len(body)) + body


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


class FrameSealer:
    """Appends to every frame an HMAC-SHA256 tag (truncated to 128 bits, RFC 4868) over the
    frame's sequence number in this direction and its body. With a key that only the two ends of
    this connection hold, a relayed, injected, replayed, dropped or reordered frame fails the
    check on the receiver, which closes the connection (issue 12 §6)."""

    __slots__ = ("_base", "seq")

    def __init__(self, key: bytes) -> None:
        self._base = hmac.new(key, digestmod=hashlib.sha256)
        self.seq = 0

    def _tag(self, body: bytes | memoryview) -> bytes:
        mac = self._base.copy()
        mac.update(self.seq.to_bytes(8, "big"))
        mac.update(body)
        self.seq += 1
        return mac.digest()[:MAC_BYTES]

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
    """Incremental frame parser with a maximum frame size."""

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[memoryview]:
        """Add received bytes; return every complete frame body (raises ProtocolError).

        The bodies are views into an immutable copy of the input: no per-frame copy."""
        if self._buf:
            self._buf += data
            chunk = bytes(self._buf)
            self._buf.clear()
        else:
            chunk = data
        out: list[memoryview] = []
        view = memoryview(chunk)
        offset, size = 0, len(chunk)
        unpack_from = HEADER.unpack_from
        max_frame = self.max_frame
        while size - offset >= HEADER_SIZE:
            (length,) = unpack_from(chunk, offset)
            if length > max_frame:
                raise ProtocolError(f"frame of {length} bytes exceeds the limit of {max_frame}")
            end = offset + HEADER_SIZE + length
            if end > size:
                break
            out.append(view[offset + HEADER_SIZE:end])
            offset = end
        if offset < size:
            self._buf += view[offset:]
        return out


class ChunkAssembler:
    """Reassembles bodies sent as chunks, bounded by `max_bytes` per message and in total."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._parts: dict[int, list[bytes]] = {}
        self._sizes: dict[int, int] = {}

    def add(self, message_id: int, data: bytes, last: bool) -> bytes | None:
        """Add one chunk; return the whole body when `last` arrives."""
        size = self._sizes.get(message_id, 0) + len(data)
        if size > self.max_bytes or sum(self._sizes.values()) + len(data) > 2 * self.max_bytes:
            raise ProtocolError(f"chunked message {message_id} exceeds {self.max_bytes} bytes")
        self._parts.setdefault(message_id, []).append(data)
        self._sizes[message_id] = size
        if not last:
            return None
        parts = self._parts.pop(message_id)
        del self._sizes[message_id]
        return b"".join(parts)
