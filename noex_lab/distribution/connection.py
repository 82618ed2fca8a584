"""One authenticated connection to a peer node: a reader, a bounded writer, chunking.

Small frames are coalesced into one write per turn of the writer; a large body is
split into chunks and the writer sends every pending small frame between two chunks,
so heartbeat-sized traffic keeps its latency while a 64 MiB message is in transit.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import msgpack

from ..core._backend import FutureLike
from ..core.node_id import NodeId
from .faults import Faults
from .framing import HEADER, ChunkAssembler, FrameReader, ProtocolError
from .protocol import CHUNK, KNOWN_TYPES

if TYPE_CHECKING:
    from ..core.node import Node
    from .codec import Codec

log = logging.getLogger("noex_lab")

CHUNK_SIZE = 256 * 1024          # bytes of a large body per chunk frame
SMALL_LANE_LIMIT = 16 * 2**20    # queued small-frame bytes before senders wait / casts are refused
LARGE_LANE_LIMIT = 2             # large messages queued before senders wait
RECEIVE_SIZE = 256 * 1024

Dispatch = Callable[["Connection", list[Any]], None]


class Connection:
    """A live connection to `peer`; created by the transport after the handshake."""

    def __init__(
        self, node: Node, stream: anyio.abc.ByteStream, peer: NodeId, peer_incarnation: int,
        codec: Codec, dispatch: Dispatch, faults: Faults, max_message_bytes: int,
        initial: bytes = b"",
    ) -> None:
        self.node = node
        self.stream = stream
        self.peer = peer
        self.peer_incarnation = peer_incarnation
        self.codec = codec
        self.dispatch = dispatch
        self.faults = faults
        self.max_message_bytes = max_message_bytes
        self.pending: dict[int, FutureLike] = {}
        self.req_ids = itertools.count(1)
        self.closed = False
        self.close_reason = "connection_closed"
        self.goodbye_received = False
        self.peer_hidden = False
        self.peer_heartbeat_ms = 0
        self._initial = initial
        self._small: list[bytes] = []
        self._small_bytes = 0
        self._large: deque[tuple[int, memoryview]] = deque()
        self._large_ids = itertools.count(1)
        self._wake: FutureLike | None = None
        self._space: list[FutureLike] = []
        self._scope: anyio.CancelScope | None = None
        self.sent_frames = 0
        self.received_frames = 0
        # asyncio fast path: frames produced in one loop iteration are written with one
        # synchronous transport.write at its end, with no hop through the writer task.
        self._transport: Any = None
        self._write_event: Any = None
        self._direct: list[bytes] = []
        self._flush_scheduled = False
        self._loop: Any = None
        if node.backend.name == "asyncio" and type(stream).__module__ == "anyio._backends._asyncio":
            transport = getattr(stream, "_transport", None)
            protocol = getattr(stream, "_protocol", None)
            if transport is not None and protocol is not None and hasattr(protocol, "write_event"):
                self._transport = transport
                self._write_event = protocol.write_event
                self._loop = getattr(node.backend, "loop", None)

    # ------------------------------------------------------------------ sending
    def send(self, message: list[Any]) -> None:
        """Encode and queue (raises SerializationError for unsendable values)."""
        self.send_body(self.codec.encode(message))

    def send_body(self, body: bytes) -> None:
        if self.closed:
            return
        if (
            self._transport is not None
            and len(body) <= CHUNK_SIZE
            and not self._small
            and not self._large
            and not self.faults.active
            and self._write_event.is_set()
        ):
            if not self._flush_scheduled:
                # first frame of this loop iteration: out at once (latency); the rest of the
                # iteration's frames are coalesced into one write at its end (throughput)
                self._flush_scheduled = True
                self._loop.call_soon(self._flush_direct)
                self.sent_frames += 1
                try:
                    self._transport.write(HEADER.pack(len(body)) + body)
                except Exception as exc:  # the transport is closing: the reader will notice
                    log.debug("direct write to %s failed: %s", self.peer, exc)
                    self.close()
                return
            direct = self._direct
            direct.append(HEADER.pack(len(body)))
            direct.append(body)
            return
        if len(body) > CHUNK_SIZE:
            self._large.append((next(self._large_ids), memoryview(body)))
        else:
            self._small.append(HEADER.pack(len(body)))
            self._small.append(body)
            self._small_bytes += len(body) + 4
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():
                wake.set_result(None)

    def _flush_direct(self) -> None:
        self._flush_scheduled = False
        direct = self._direct
        if not direct:
            return
        data = b"".join(direct)
        self.sent_frames += len(direct) // 2
        direct.clear()
        if self.closed:
            return
        try:
            self._transport.write(data)
        except Exception as exc:  # the transport is closing: the reader will notice
            log.debug("direct write to %s failed: %s", self.peer, exc)
            self.close()

    @property
    def congested(self) -> bool:
        return self._small_bytes >= SMALL_LANE_LIMIT or len(self._large) >= LARGE_LANE_LIMIT

    async def wait_for_space(self, large: bool = False) -> None:
        """Block an awaiting sender while the peer cannot keep up (bounded memory)."""
        for _ in range(10_000):
            if self.closed:
                return
            if large:
                if len(self._large) < LARGE_LANE_LIMIT:
                    return
            elif self._small_bytes < SMALL_LANE_LIMIT:
                return
            fut = self.node.backend.new_future()
            self._space.append(fut)
            await fut

    async def flushed(self) -> None:
        """Wait until everything queued so far was handed to the socket."""
        for _ in range(10_000):
            if self._direct:
                self._flush_direct()
            if self.closed or (not self._small and not self._large and self._wake is not None):
                return
            fut = self.node.backend.new_future()
            self._space.append(fut)
            await fut

    def _release_space(self) -> None:
        waiters, self._space = self._space, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # ------------------------------------------------------------------ running
    async def run(self) -> None:
        """Read and write until the connection closes; never raises."""
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                tg.start_soon(self._writer)
                await self._reader()
                tg.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:  # every failure ends this connection only
            if not self.closed:
                self.node.events.report_error(f"connection to {self.peer} failed", exc)
        finally:
            self.closed = True
            self._release_space()
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(self.stream)

    def close(self, reason: str = "connection_closed") -> None:
        if not self.closed:
            self.close_reason = reason
        self.closed = True
        if self._scope is not None:
            self._scope.cancel()

    async def _reader(self) -> None:
        reader = FrameReader(self.max_message_bytes + 1024)
        assembler = ChunkAssembler(self.max_message_bytes)
        decode = self.codec.decode
        dispatch = self.dispatch
        known = KNOWN_TYPES
        data = self._initial
        stream = self.stream
        while True:
            if data:
                try:
                    bodies = reader.feed(data)
                except ProtocolError as exc:
                    log.warning("closing connection to %s: %s", self.peer, exc)
                    return
                if bodies and self.faults.is_blocked(self.peer):
                    bodies = []
                for body in bodies:
                    self.received_frames += 1
                    try:
                        message = decode(body)
                        if type(message) is not list or not message or message[0] not in known:
                            raise ProtocolError(f"unknown message {str(message)[:80]}")
                        if message[0] == CHUNK:
                            whole = assembler.add(message[1], message[3], bool(message[2]))
                            if whole is None:
                                continue
                            message = decode(whole)
                            if type(message) is not list or not message or message[0] not in KNOWN_TYPES:
                                raise ProtocolError("unknown chunked message")
                        dispatch(self, message)
                    except ProtocolError as exc:
                        log.warning("closing connection to %s: %s", self.peer, exc)
                        return
                    except Exception as exc:
                        from .codec import DecodeError

                        if isinstance(exc, DecodeError):
                            log.warning("closing connection to %s: undecodable frame: %s", self.peer, exc)
                            return
                        self.node.events.report_error(f"handling a message from {self.peer}", exc)
            try:
                data = await stream.receive(RECEIVE_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return

    async def _writer(self) -> None:
        stream = self.stream
        new_future = self.node.backend.new_future
        while True:
            if not self._small and not self._large:
                if self._direct:
                    self._flush_direct()
                if self._space:
                    self._release_space()
                wake = new_future()
                self._wake = wake
                await wake
                continue
            if self._small:
                parts, self._small = self._small, []
                self._small_bytes = 0
                if self._space:
                    self._release_space()
                await self._write(stream, b"".join(parts), len(parts) // 2)
            if self._large:
                message_id, view = self._large[0]
                piece, rest = view[:CHUNK_SIZE], view[CHUNK_SIZE:]
                last = len(rest) == 0
                body = msgpack.packb([CHUNK, message_id, last, bytes(piece)])
                if last:
                    self._large.popleft()
                    if self._space:
                        self._release_space()
                else:
                    self._large[0] = (message_id, rest)
                await self._write(stream, HEADER.pack(len(body)) + body, 1 if last else 0)

    async def _write(self, stream: anyio.abc.ByteStream, data: bytes, frames: int) -> None:
        if self._direct:
            self._flush_direct()  # frames queued for the fast path go first: order is kept
        if self.faults.is_blocked(self.peer):
            return
        delay = self.faults.delay_for(self.peer)
        if delay:
            await anyio.sleep(delay)
        await stream.send(data)
        self.sent_frames += frames
