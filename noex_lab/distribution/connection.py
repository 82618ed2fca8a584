"""One authenticated connection to a peer node: a reader, a bounded writer, chunking.

Small frames are coalesced into one write per turn of the writer; a large body is
split into chunks and the writer sends every pending small frame between two chunks,
so heartbeat-sized traffic keeps its latency while a 64 MiB message is in transit.

Nothing is ever dropped here: a message is delivered in order or its connection is lost.
The bytes waiting in the lanes are counted: from
`busy_limit_bytes` on the connection is `congested` (the router then suspends processes that
cast into it, and requests wait for it inside their deadline); past `max_send_buffer_bytes`
it is closed, and the loss is reported like any lost connection.

On asyncio (plain TCP) both directions take a fast path around anyio's stream: the small
frames of one loop iteration go out in one synchronous `transport.write` at its end (every
64 KiB during a longer burst), and received bytes are parsed and dispatched right in the
transport's `data_received` callback, with no hop through the reader task.

Receiving is time-sliced: a frame up to `DECODE_SLICE` bytes is decoded at once, a bigger one
(or a message reassembled from chunks) a slice per step, and after `TURN_BUDGET_S` of decoding
the rest waits for the next turn of the event loop (reading from that peer pauses meanwhile), so
no message, whatever it holds, stalls the node's other connections for long. Warnings about a
peer are rate-limited and never quote more than ~200 characters of what it sent.
"""

from __future__ import annotations

import functools
import itertools
import logging
import reprlib
import traceback
from asyncio import InvalidStateError
from collections import deque
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import msgpack
import sniffio

from ..core._backend import FutureLike
from ..core.node_id import NodeId
from .codec import IncrementalDecoder, map_too_big, message_head, skim
from .faults import HOLD_POLL_S, Faults
from .framing import HEADER, MAC_BYTES, ChunkAssembler, FrameOpener, FrameReader, FrameSealer, ProtocolError, batch
from .protocol import CALL, CHUNK, ERR_EXCEPTION, KNOWN_TYPES, REPLY, RPC

if TYPE_CHECKING:
    from ..core.node import Node
    from .codec import Codec

log = logging.getLogger(__name__)

CHUNK_SIZE = 256 * 1024          # bytes of a large body per chunk frame
BUSY_LIMIT_BYTES = 2**20         # queued bytes at which the connection is busy (Erlang's dist_buf_busy_limit)
MAX_SEND_BUFFER_BYTES = 128 * 2**20  # queued bytes past which the connection is closed and treated as lost
RECEIVE_SIZE = 256 * 1024
BATCH_BYTES = 64 * 1024          # small messages per frame (and per write on the asyncio fast path)

Dispatch = Callable[["Connection", list[Any]], None]


class _Ordered:
    """An item of the ordered lane: a large body sent in chunks, or a small frame that must
    follow a large body of the same sender (per-sender FIFO)."""

    __slots__ = ("frame", "key", "message_id", "rest")

    def __init__(self, key: Hashable, message_id: int = 0, rest: memoryview | None = None,
                 frame: bytes = b"") -> None:
        self.key = key
        self.message_id = message_id
        self.rest = rest
        self.frame = frame


def _sender_key() -> Hashable:
    """Who is sending: the current process, else the current task (per-sender FIFO)."""
    from ..core.node import current_process

    proc = current_process()
    if proc is not None:
        return proc.pid
    try:
        return ("task", anyio.get_current_task().id)
    except RuntimeError:  # no task: a frame sent while dispatching in the reader's data_received
        return ("reader",)


class Connection:
    """A live connection to `peer`; created by the transport after the handshake."""

    def __init__(
        self, node: Node, stream: anyio.abc.ByteStream, peer: NodeId, peer_incarnation: int,
        codec: Codec, dispatch: Dispatch, faults: Faults, max_message_bytes: int,
        initial: bytes = b"", busy_limit_bytes: int = BUSY_LIMIT_BYTES,
        max_send_buffer_bytes: int = MAX_SEND_BUFFER_BYTES, frame_keys: tuple[bytes, bytes] | None = None,
    ) -> None:
        self.node = node
        self._monotonic = node.clock.monotonic  # (the node's clock: a simulation's is virtual)
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
        self.departed = False  # membership has handled this connection's end (it runs once)
        self.peer_hidden = False
        self.peer_heartbeat_ms = 0
        self.session_key: bytes | None = None  # this connection's key from the handshake (None without a secret)
        self._initial = initial
        # with a cluster secret, every frame carries a MAC under keys of this connection only
        self._sealer = FrameSealer(frame_keys[0]) if frame_keys is not None else None
        self._opener = FrameOpener(frame_keys[1]) if frame_keys is not None else None
        self._writing = False  # the writer task is between sealing a frame and handing it over
        self._small: list[bytes] = []
        self._small_bytes = 0
        self._large: deque[_Ordered] = deque()
        self._behind: dict[Hashable, int] = {}  # senders with items in the ordered lane
        # Bytes waiting in the lanes (small frames, and what is left of large bodies). At
        # `busy_limit_bytes` the connection is busy: processes that cast into it are suspended
        # and awaiting senders wait until it drains; past `max_send_buffer_bytes` it is closed
        # and treated as lost (nothing is dropped while the connection lives).
        self.queued_bytes = 0
        self.busy_limit_bytes = busy_limit_bytes
        self.max_send_buffer_bytes = max_send_buffer_bytes
        self.congested = False  # queued_bytes >= busy_limit_bytes (never while closed)
        self._large_ids = itertools.count(1)
        self._wake: FutureLike | None = None
        self._space: list[FutureLike] = []
        self._scope: anyio.CancelScope | None = None
        self.sent_messages = 0
        self.received_messages = 0
        self.received_frames = 0  # (a frame holds one or more messages)
        # counted per write / per received chunk (never per message): read by noex_lab.metrics
        self.sent_bytes = 0
        self.received_bytes = 0
        self.busy_count = 0  # how often the connection became busy (congested)
        # asyncio fast path: frames produced in one loop iteration are written with one
        # synchronous transport.write at its end, with no hop through the writer task, and
        # received bytes are parsed and dispatched in the transport's data_received callback.
        self._transport: Any = None
        self._direct_ok = False  # the fast path is installed and the transport is not paused
        self._protocol: Any = None  # anyio's StreamProtocol: its write_event tracks flow control
        self._direct: list[bytes] = []
        self._direct_bytes = 0
        self._flush_scheduled = False
        self._lone = False  # the last frame received held one message, and nothing was sent since (see `send`)
        self._answer_at_once = True  # write the answer to a lone frame at once (not on uvloop)
        self._loop: Any = None
        # A frame holds one message, a chunk of a large one, or a batch of small ones of up to
        # BATCH_BYTES, which every node accepts whatever its own max_message_bytes.
        self._frames = FrameReader(max(max_message_bytes, BATCH_BYTES) + 1024 + MAC_BYTES)
        self._unpacker = codec.stream_unpacker(DECODE_SLICE + 16)  # small frames only
        self._decode_one = codec.decode_one  # one message of a small frame (see `_received_frame`)
        self._single = False  # the last small frame received held one message
        self._chunks = ChunkAssembler(max_message_bytes)
        self._backlog: deque[memoryview | _Sliced] = deque()  # received, not decoded yet (next turn)
        # The fault layer (faults.py): frames received while the peer's traffic is cut wait here
        # (reading paused); frames to send wait in the delay line for their due time or the heal.
        self._held: list[memoryview] = []
        self._held_polling = False
        self._inline: _InlineProtocol | None = None
        self._line: deque[tuple[float, bytes, int]] = deque()  # (due, sealed frames, messages)
        self._line_bytes = 0
        self._line_due = 0.0
        self._line_running = False
        self._line_room: anyio.Event | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._warned_at = -1e9  # rate limit of warnings about this peer: current one-second window
        self._warnings = 0
        self._suppressed = 0
        if node.backend.name == "asyncio" and type(stream).__module__ == "anyio._backends._asyncio":
            transport = getattr(stream, "_transport", None)
            protocol = getattr(stream, "_protocol", None)
            if (
                transport is not None and hasattr(transport, "set_protocol")
                and protocol is not None and hasattr(protocol, "write_event") and hasattr(protocol, "read_queue")
            ):
                self._transport = transport
                self._protocol = protocol
                self._loop = getattr(node.backend, "loop", None)
                # uvloop: the answer to a lone frame written at once, inside the iteration, made a
                # round trip slower than written at its end (W3 p50 153 against 105 us, the
                # ceiling 94 in the same runs), so it waits for the iteration's end there (`send`)
                self._answer_at_once = not type(self._loop).__module__.startswith("uvloop")

    # ------------------------------------------------------------------ sending
    def send(self, message: list[Any]) -> None:
        """Encode and queue (raises SerializationError for unsendable values). Never drops a
        message while the connection lives: past the hard bound the connection closes instead.
        Senders that can wait check `congested` afterwards (back-pressure)."""
        codec = self.codec  # (`Codec.encode` inlined: its packer, then `finish` when needed)
        codec._marked = False
        try:
            body = codec._pack(message)
        except Exception:  # unsendable, or a str with lone surrogates: the full encode decides
            body = codec.encode(message)
            size = len(body)
        else:
            size = len(body)
            if codec._marked or size > codec._max_bytes:  # (a tuple inside, or too big)
                body = codec.finish(body)
                size = len(body)
        direct = self._direct
        if direct and not self.faults.active:
            # A batch of this loop iteration is open (a flush is scheduled): its first frame found
            # the lanes empty, the writer idle and the transport taking writes, and `_queue` writes
            # the batch before it fills a lane, so only the batch's size is left to check (a body
            # too big for it, or for the fast path, gets the checks of a first frame below).
            if self._direct_bytes + size <= BATCH_BYTES:
                direct.append(body)
                self._direct_bytes += size
                return
            # a long burst in one iteration (100,000 casts in a loop): stream it in batches, so the
            # peer starts working while the sender is still producing; this frame opens the next
            # batch after the checks below (the write may have paused the transport)
            self._write_direct()
        if (
            self._direct_ok  # the asyncio fast path is on and the transport takes writes
            and size <= CHUNK_SIZE
            and not (self._small or self._large or self._writing or self.faults.active)
            # (_writing: the writer's frame goes first: order, and the MAC sequence)
        ):
            if self._lone and self._answer_at_once:
                # The last frame received held one message (a lone request or reply): the first
                # frame sent after it, most likely the answer, is written at once instead of at
                # the end of the loop iteration (one iteration less per round trip); the frames
                # that follow are coalesced as usual. W4's batches of calls keep one write each.
                self._lone = False
                sealer = self._sealer
                self._write_now(sealer.seal(body) if sealer is not None else HEADER.pack(size) + body, 1)
                return
            direct.append(body)
            self._direct_bytes = size
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush_direct)
            return
        self._queue(body)

    def _queue(self, body: bytes) -> None:
        """The writer task's lanes: small frames, and large bodies (sent in chunks) in order."""
        if self._direct:  # the fast path's open batch goes first (and `send` relies on it)
            self._write_direct()
        if self.closed:
            return
        size = len(body)
        if size > CHUNK_SIZE or self._behind:
            key = _sender_key()
            if size > CHUNK_SIZE:
                self._large.append(_Ordered(key, next(self._large_ids), memoryview(body)))
                self._behind[key] = self._behind.get(key, 0) + 1
            elif key in self._behind:  # this sender has a large message in flight: stay behind it
                self._large.append(_Ordered(key, frame=body))
                self._behind[key] += 1
            else:
                self._small.append(body)
                self._small_bytes += size
        else:
            self._small.append(body)
            self._small_bytes += size
        self.queued_bytes += size
        if self.queued_bytes >= self.busy_limit_bytes:
            if not self.congested:
                self.busy_count += 1
            self.congested = True
            if self.queued_bytes > self.max_send_buffer_bytes:
                self._overflow()
                return
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():
                wake.set_result(None)

    def _overflow(self) -> None:
        """The peer has not taken `max_send_buffer_bytes` of queued messages: give up on this
        connection exactly as if it broke (monitors get noconnection, links exit, waiting calls
        fail with NodeNotReachableError), so no message is ever lost silently."""
        log.warning(
            "closing connection to %s: %d bytes queued for it exceed the send buffer bound of %d "
            "(max_send_buffer_bytes); it is treated as lost", self.peer, self.queued_bytes,
            self.max_send_buffer_bytes,
        )
        self.node.events.emit("send_buffer_overflow", peer=self.peer, queued_bytes=self.queued_bytes,
                              limit=self.max_send_buffer_bytes)
        self.close()

    def _sent(self, size: int) -> None:
        """`size` queued bytes left the lanes: end the busy state (and wake waiters) below the limit."""
        self.queued_bytes -= size
        if self.congested and self.queued_bytes < self.busy_limit_bytes:
            self.congested = False
            if self._space:
                self._release_space()

    def _flush_direct(self) -> None:
        self._flush_scheduled = False
        if self._direct:
            self._write_direct()

    def _write_direct(self) -> None:
        """The fast path's open batch, as one frame, to the transport now."""
        direct = self._direct
        if self._sealer is None:
            data = HEADER.pack(self._direct_bytes) + b"".join(direct)
        else:
            data = self._sealer.seal(b"".join(direct))
        count = len(direct)
        direct.clear()
        self._direct_bytes = 0
        self._write_now(data, count)

    def _write_now(self, data: bytes, messages: int) -> None:
        """A sealed frame of `messages` messages to the transport (the fast path; the batch is empty)."""
        self.sent_messages += messages
        if self.closed:
            return
        self.sent_bytes += len(data)
        try:
            self._transport.write(data)
        except Exception as exc:  # the transport is closing: the reader will notice
            log.debug("direct write to %s failed: %s", self.peer, exc)
            self.close()

    def add_space_waiter(self, fut: FutureLike) -> None:
        """Resolve `fut` once the connection is no longer busy (or closes)."""
        if self.congested:
            self._space.append(fut)
        elif not fut.done():
            fut.set_result(None)

    async def wait_for_space(self, timeout: float | None = None) -> bool:
        """Wait while the connection is busy; False if `timeout` seconds passed first."""
        if not self.congested:
            return True
        backend = self.node.backend
        deadline = None if timeout is None else anyio.current_time() + timeout
        for _ in range(100_000):  # each pass waits for the lanes to drain below the limit once
            if not self.congested:
                return True
            fut = backend.new_future()
            self._space.append(fut)
            remaining = None if deadline is None else deadline - anyio.current_time()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await backend.wait_future(fut, remaining)
            except TimeoutError:
                return not self.congested
        return not self.congested

    async def flushed(self) -> None:
        """Wait until everything queued so far was handed to the socket."""
        for _ in range(10_000):
            if self._direct:
                self._flush_direct()
            if self.closed or (not self._small and not self._large and not self._line and self._wake is not None):
                return
            fut = self.node.backend.new_future()
            self._space.append(fut)
            await fut

    def _release_space(self) -> None:
        if not self._space:
            return
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
                self._tg = tg
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
            self.congested = False
            self._direct_ok = False
            self._release_space()
            if self.faults.active and self.faults.blackholes(self.peer):
                self.faults.park(self.peer, self.stream)  # a cut cable carries no FIN
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(self.stream)

    def close(self, reason: str = "connection_closed") -> None:
        if not self.closed:
            self.close_reason = reason
        self.closed = True
        self.congested = False
        self._direct_ok = False
        self._release_space()
        if self._scope is not None:
            self._scope.cancel()

    async def _reader(self) -> None:
        if self._transport is not None:
            await self._read_inline()
            return
        data = self._initial
        stream = self.stream
        while True:
            if data and not self._received(data):
                return
            if (self._backlog or self._held) and not await self._catch_up():
                return
            try:
                data = await stream.receive(RECEIVE_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return

    async def _read_inline(self) -> None:
        """asyncio fast path: handle received bytes in the transport's `data_received` callback.

        This saves, per received chunk, a hop through this task (an Event set and a loop
        iteration) and anyio's pause/resume of reading (two epoll_ctl calls). Frames are
        still dispatched synchronously and in arrival order, in this task's context."""
        anyio_protocol = self._protocol
        transport = self._transport
        done = self._loop.create_future()
        inline = _InlineProtocol(self, anyio_protocol, done)
        backlog = list(anyio_protocol.read_queue)  # received by anyio, not yet read
        anyio_protocol.read_queue.clear()
        transport.pause_reading()
        transport.set_protocol(inline)
        try:
            for data in (self._initial, *backlog):
                if data and not self._received(data):
                    return
                if (self._backlog or self._held) and not await self._catch_up():
                    return
            self._inline = inline
            if anyio_protocol.is_at_eof or anyio_protocol.exception is not None or transport.is_closing():
                return
            self._direct_ok = anyio_protocol.write_event.is_set() and not self.closed
            transport.resume_reading()  # registers the reader callback with this task's context
            await done
        finally:
            inline.active = False
            self._direct_ok = False

    async def _catch_up(self) -> bool:
        """Decode the backlog, one turn's budget per checkpoint (a big message), and wait out a
        cut of what the peer sends (reading stays paused meanwhile); False when the connection
        must close."""
        while True:  # each pass decodes a turn's budget, or ends a wait for the heal
            if self._backlog:
                await anyio.sleep(0)
                if not self._work():
                    return False
            elif self._held:
                while self.faults.cuts_in(self.peer):  # (closing the connection cancels this wait)
                    await anyio.sleep(HOLD_POLL_S)
                self._backlog.extend(self._held)
                self._held.clear()
            else:
                return True

    def _hold_in(self, bodies: list[memoryview]) -> bool:
        """The fault layer cuts what the peer sends: keep these frames, in order, unread until
        the heal, and stop reading (TCP's window then stops the peer). False: no cut."""
        if not self._held and not self.faults.cuts_in(self.peer):
            return False
        self._held.extend(bodies)
        inline = self._inline
        if inline is not None and inline.active:
            self._transport.pause_reading()
            if not self._held_polling:
                self._held_polling = True
                self._loop.call_later(HOLD_POLL_S, self._poll_held)
        return True

    def _poll_held(self) -> None:
        """asyncio fast path: release the held frames once the cut heals."""
        inline = self._inline
        if self.closed or inline is None or not inline.active:
            self._held_polling = False
            return
        if self.faults.cuts_in(self.peer):
            self._loop.call_later(HOLD_POLL_S, self._poll_held)
            return
        self._held_polling = False
        self._backlog.extend(self._held)  # after what arrived before the cut
        self._held.clear()
        inline._resume()

    # ------------------------------------------------------------------ receiving
    def _received(self, data: bytes) -> bool:
        """Parse received bytes and decode their frames, for one turn's budget at most: what is
        left waits in the backlog (the caller runs `_work` on later turns until it is empty).
        False when the connection must close."""
        self.received_bytes += len(data)
        try:
            bodies = self._frames.feed(data)  # (a new list: its bodies are replaced by what they hold)
            opener = self._opener
            if opener is not None:
                for index, body in enumerate(bodies):
                    bodies[index] = opener.open(body)
        except ProtocolError as exc:
            self.warn("closing connection to %s: %s", self.peer, exc)
            return False
        if not bodies or (self.faults.active and self._hold_in(bodies)):
            return True
        backlog = self._backlog
        if not backlog and len(bodies) == 1 and len(bodies[0]) <= DECODE_SLICE:  # the common case
            if not self._received_frame(bodies[0]):
                return False
            return not backlog or self._work()
        backlog.extend(bodies)
        return self._work()

    def _work(self) -> bool:
        """Decode backlog items in order until none is left or this turn's budget is spent;
        False when the connection must close."""
        backlog = self._backlog
        monotonic = self._monotonic
        deadline = monotonic() + TURN_BUDGET_S
        for _ in range(1_000_000):  # each pass finishes an item, or a slice of one
            if not backlog:
                return True
            if self.closed:
                return False
            item = backlog[0]
            if type(item) is memoryview:
                if len(item) <= DECODE_SLICE:
                    backlog.popleft()
                    if not self._received_frame(item):
                        return False
                else:
                    self.received_frames += 1
                    backlog[0] = _Sliced(self.codec.incremental(item, DECODE_SLICE), item, whole=False)
                    continue
            else:
                assert type(item) is _Sliced  # (for mypy)
                finished = self._decode_sliced(item, deadline)
                if finished is None:
                    return False
                if finished:
                    backlog.remove(item)
            if monotonic() > deadline:
                return True
        return True

    def _reply(self, message: list[Any]) -> None:
        """A REPLY: a successful one completes its request's future here (routing's dispatch
        does the rest: failed replies, which rebuild a typed error); a late one is dropped."""
        try:
            fut = self.pending.get(message[1])
            if fut is not None:
                if message[2] is True:
                    try:
                        fut.set_result(message[3])
                    except InvalidStateError:  # the request timed out or was cancelled
                        pass
                else:
                    self.dispatch(self, message)
        except Exception as exc:
            self._report(f"handling a message from {self.peer}", exc)

    def _received_frame(self, body: memoryview) -> bool:
        """Decode and dispatch the messages of one small frame (one or more, back to back) in
        order. A message this node cannot rebuild is refused alone; malformed bytes, or a frame
        that ends inside a message, close the connection. When a chunked message completes, it
        and then the rest of this frame are queued at the front of the backlog.

        After a frame that held one message (a lone request or reply, W3), the next one is
        first decoded as exactly one message with one `unpackb` call: the streaming unpacker
        costs ~0.45 us more per frame (its iteration ends with a StopIteration raised in C, and
        the boundary check is one more feed and unpack). Anything else (several messages, an
        error) is left to the streaming path, which decodes the frame again from its start."""
        self.received_frames += 1
        if self._single:
            try:
                message = self._decode_one(body)
            except Exception:  # several messages (ExtraData), or an error: the path below decides
                self._single = False
            else:
                self.received_messages += 1
                self._lone = True
                if type(message) is list and message and message[0] in _WHOLE_TYPES:  # (`_deliver`'s common case)
                    if message[0] == REPLY:
                        self._reply(message)
                    else:
                        try:
                            self.dispatch(self, message)
                        except Exception as exc:
                            self._report(f"handling a message from {self.peer}", exc)
                    return True
                return self._deliver(message, whole=False) != _CLOSE
        dispatch = self.dispatch
        plain = _PLAIN_TYPES
        offset = 0
        for _ in range(len(body) + 1):  # each pass ends the frame or passes over at least one message
            piece = body[offset:] if offset else body
            unpacker = self._unpacker
            start = unpacker.tell()
            unpacker.feed(piece)
            count = 0  # messages decoded from `piece` (counted in C by enumerate)
            try:
                for count, message in enumerate(unpacker, 1):
                    if count == 1 and not offset:
                        # whether the frame holds this message alone, known before it is dispatched:
                        # an answer sent while dispatching it (a request handed to an idle process,
                        # `routing`) is then written at once (see `send`)
                        self._lone = unpacker.tell() - start == len(piece)
                    if type(message) is not list or not message:
                        self.warn("closing connection to %s: unknown message %s", self.peer, describe(message))
                        return False
                    kind = message[0]
                    if kind in plain:  # (every type but REPLY and CHUNK)
                        try:
                            dispatch(self, message)
                        except Exception as exc:
                            self._report(f"handling a message from {self.peer}", exc)
                    elif kind == REPLY:
                        self._reply(message)
                    elif kind == CHUNK:
                        status = self._chunk(message)
                        if status == _DONE:
                            continue
                        if status == _CLOSE:
                            return False
                        self.received_messages += count  # _FIRST: the completed message goes first
                        found = skim(piece, 0, count - 1)  # (the CHUNK message, well-formed)
                        self._queue_rest(body, offset + found[1] if found else len(body))
                        return True
                    else:
                        self.warn("closing connection to %s: unknown message %s", self.peer, describe(message))
                        return False
            except Exception as exc:  # malformed bytes, a value this node cannot rebuild, a big map
                self.received_messages += count
                self._new_unpacker()
                status, passed = self._recover(piece, count, exc)
                if status == _CLOSE:
                    return False
                offset += passed
                if status == _FIRST:
                    self._queue_rest(body, offset)
                    return True
                if offset >= len(body):
                    return True
                continue
            self.received_messages += count
            # The frame must end on a message boundary: then a nil fed now is a message of its own
            # (a partly received message would absorb it, and is never None).
            unpacker.feed(b"\xc0")
            try:
                ends = unpacker.unpack() is None
            except Exception:
                ends = False
            if not ends:
                self.warn("closing connection to %s: a frame ends inside a message", self.peer)
                return False
            self._lone = self._single = count == 1 and not offset
            return True
        return False  # (not reached: the loop always consumes the frame)

    def _new_unpacker(self) -> None:
        self._unpacker = self.codec.stream_unpacker(DECODE_SLICE + 16)

    def _queue_rest(self, body: memoryview, offset: int) -> None:
        """A chunked message completed inside `body` and was queued at the front of the backlog:
        the rest of the frame follows it (with a new unpacker: the old one holds that rest)."""
        self._new_unpacker()
        if offset < len(body):
            self._backlog.insert(1, body[offset:])

    def _recover(self, piece: memoryview, decoded: int, exc: Exception) -> tuple[int, int]:
        """The streaming decode of `piece` failed after `decoded` messages: find the failing
        message without decoding it. A map too big for the fast path: decode it checked and
        deliver it; a value this node cannot rebuild: refuse that message alone. Returns what
        delivering did (`_CLOSE` when the bytes are malformed) and where in `piece` it ends."""
        found = skim(piece, 0, decoded)
        if found is None:
            self.warn("closing connection to %s: undecodable frame: %s", self.peer, exc)
            return _CLOSE, 0
        start, end = found
        if map_too_big(exc):
            try:
                message = self.codec.decode(piece[start:end])
            except Exception as error:
                exc = error
            else:
                self.received_messages += 1
                return self._deliver(message, whole=False), end
        if not self._refuse(message_head(piece, start), exc):
            self.warn("closing connection to %s: undecodable frame: %s", self.peer, exc)
            return _CLOSE, 0
        return _DONE, end

    def _decode_sliced(self, job: _Sliced, deadline: float) -> bool | None:
        """Decode a big frame (or a reassembled message) a slice per step until it is done (True)
        or the turn's budget is spent or a reassembled message was queued in front (False);
        None when the connection must close."""
        decoder = job.decoder
        for _ in range(1_000_000):
            if job.ready:  # decoded before a chunked message completed, which went first
                messages, job.ready = job.ready, []
            elif decoder.done:
                if job.whole and job.count != 1:
                    self.warn("closing connection to %s: a chunked message holds %d messages", self.peer, job.count)
                    return None
                return True
            else:
                try:
                    messages = decoder.step()
                except Exception as exc:
                    start = decoder.position
                    job.count += 1
                    if not decoder.skip() or not self._refuse(message_head(job.data, start), exc):
                        self.warn("closing connection to %s: undecodable message: %s", self.peer, exc)
                        return None
                    continue
            for index, message in enumerate(messages):
                job.count += 1
                self.received_messages += 1
                status = self._deliver(message, job.whole)
                if status == _CLOSE:
                    return None
                if status == _FIRST:
                    job.ready = messages[index + 1:]
                    return False
            if self._monotonic() > deadline:
                return False
        return False

    def _deliver(self, message: Any, whole: bool) -> int:
        """Dispatch one decoded message (the slow path's `_received_frame` loop body). Returns
        _DONE, _CLOSE, or _FIRST when a CHUNK completed its message (queued first)."""
        if type(message) is not list or not message or message[0] not in KNOWN_TYPES or (
            whole and message[0] == CHUNK
        ):
            self.warn("closing connection to %s: unknown message %s", self.peer, describe(message))
            return _CLOSE
        if message[0] == CHUNK:
            return self._chunk(message)
        try:
            self.dispatch(self, message)
        except Exception as exc:
            self._report(f"handling a message from {self.peer}", exc)
        return _DONE

    def _chunk(self, message: list[Any]) -> int:
        """Add a CHUNK message: _DONE, or _FIRST when it completes its message (whose decoding is
        queued at the front of the backlog: what follows waits for it), or _CLOSE."""
        try:
            if len(message) != 4:
                raise ProtocolError("malformed chunk: expected [CHUNK, id, last, data]")
            whole = self._chunks.add(message[1], message[3], message[2])
        except ProtocolError as exc:
            self.warn("closing connection to %s: %s", self.peer, exc)
            return _CLOSE
        if whole is None:
            return _DONE
        self._backlog.appendleft(_Sliced(self.codec.incremental(whole, DECODE_SLICE), whole, whole=True))
        return _FIRST

    def _refuse(self, head: tuple[int, int | None] | None, exc: Exception) -> bool:
        """A well-formed message holding a value this node cannot rebuild (an unknown wire type,
        a failing decode), whose type and request id are `head`: drop that message only, and
        answer a request with the error. False when it is not a message (then close)."""
        if head is None or head[0] not in KNOWN_TYPES or head[0] == CHUNK:
            return False
        kind, req = head
        self._report(f"a message from {self.peer} could not be decoded here; dropped", exc)
        if kind in (CALL, RPC) and req is not None:
            detail = f"node {self.node.id} cannot decode the message: {_cut(str(exc))}"
            self.send([REPLY, req, False, [ERR_EXCEPTION, "SerializationError", detail, {}]])
        return True

    def warn(self, text: str, *args: Any) -> None:
        """Log a warning about this peer, at most WARNINGS_PER_S a second (then one line says how
        many were suppressed); every argument is cut to ~200 characters."""
        self._log(logging.WARNING, text, args)

    def _log(self, level: int, text: str, args: tuple[Any, ...], tb: str = "") -> None:
        now = self._monotonic()
        if now - self._warned_at >= 1.0:
            if self._suppressed:
                log.warning("%d more warnings about %s were suppressed", self._suppressed, self.peer)
            self._warned_at, self._warnings, self._suppressed = now, 0, 0
        if self._warnings >= WARNINGS_PER_S:
            self._suppressed += 1
            return
        self._warnings += 1
        log.log(level, text + tb, *(_cut(str(arg)) for arg in args))

    def _report(self, what: str, exc: BaseException) -> None:
        """An error caused by a peer's message: an "error" event, and a rate-limited log line with
        the traceback, where the peer's values are cut short."""
        error = f"{type(exc).__name__}: {describe(exc, str)}"
        try:
            tb = "\n" + "".join(traceback.format_tb(exc.__traceback__, limit=20)).rstrip()
        except Exception:
            tb = ""
        self._log(logging.ERROR, "%s: %s", (what, error), tb.replace("%", "%%"))
        self.node.events.emit("error", what=what, error=error, exception=exc)

    async def _writer(self) -> None:
        stream = self.stream
        new_future = self.node.backend.new_future
        while True:
            if not self._small and not self._large:
                if self._direct:
                    self._flush_direct()
                if self._space and not self.congested:
                    self._release_space()  # (flushed() waiters)
                wake = new_future()
                self._wake = wake
                await wake
                continue
            if self._direct:
                self._flush_direct()  # frames queued for the fast path go first: order is kept
            self._writing = True
            try:
                if self._small:
                    parts, self._small = self._small, []
                    size, self._small_bytes = self._small_bytes, 0
                    await self._write(stream, functools.partial(batch, parts, BATCH_BYTES, self._sealer), len(parts))
                    self._sent(size)
                if self._large:
                    await self._write_ordered(stream)
            finally:
                self._writing = False

    async def _write_ordered(self, stream: anyio.abc.ByteStream) -> None:
        """The next piece of the ordered lane: a chunk of a large body, or a small frame."""
        item = self._large[0]
        if item.rest is None:  # a small message kept behind its sender's large one
            body, last, size = item.frame, True, len(item.frame)
        else:
            piece, item.rest = item.rest[:CHUNK_SIZE], item.rest[CHUNK_SIZE:]
            last = len(item.rest) == 0
            size = len(piece)
            body = msgpack.packb([CHUNK, item.message_id, last, bytes(piece)])
        if last:
            self._large.popleft()
            left = self._behind[item.key] - 1
            if left:
                self._behind[item.key] = left
            else:
                del self._behind[item.key]
        sealer = self._sealer
        await self._write(stream, lambda: sealer.seal(body) if sealer is not None else HEADER.pack(len(body)) + body,
                          1 if last else 0)
        self._sent(size)

    async def _write(self, stream: anyio.abc.ByteStream, make: Callable[[], bytes], frames: int) -> None:
        """Send the frames `make` builds (and seals) right before they are handed over, so the
        MAC sequence is the order on the wire; under fault rules they may wait in the delay line."""
        if self.faults.active:
            await self._write_faulty(stream, make, frames)
            return
        data = make()
        await stream.send(data)
        self.sent_messages += frames
        self.sent_bytes += len(data)

    async def _write_faulty(self, stream: anyio.abc.ByteStream, make: Callable[[], bytes], frames: int) -> None:
        """A write under fault rules: out at once when none concerns this peer, else into the
        delay line (held while the peer is cut, each write at its due time, never overtaking).
        The line's bytes count as in flight: past `busy_limit_bytes` this waits, so the lanes
        fill and the usual back-pressure and send-buffer bound apply."""
        cut, delay = self.faults.outgoing(self.peer)
        data = make()
        if not cut and not delay and not self._line:
            await stream.send(data)
            self.sent_messages += frames
            self.sent_bytes += len(data)
            return
        due = max(self._monotonic() + delay, self._line_due)  # per-link FIFO: jitter never reorders
        self._line_due = due
        self._line.append((due, data, frames))
        self._line_bytes += len(data)
        if not self._line_running and self._tg is not None:
            self._line_running = True
            self.faults.line_started()
            self._tg.start_soon(self._run_line, stream)
        while self._line_bytes > self.busy_limit_bytes and self._line_running and not self.closed:
            self._line_room = room = anyio.Event()
            await room.wait()

    async def _run_line(self, stream: anyio.abc.ByteStream) -> None:
        """Send the delay line's frames in order, each at its due time, none while the peer is cut."""
        line = self._line
        try:
            while line:  # each pass sends one write (a frame is removed only once it is sent)
                due, data, frames = line[0]
                while True:  # (closing the connection cancels these waits)
                    if self.faults.cuts_out(self.peer):
                        await anyio.sleep(HOLD_POLL_S)
                        continue
                    wait = due - self._monotonic()
                    if wait <= 0:
                        break
                    await anyio.sleep(wait)
                await stream.send(data)
                line.popleft()
                self._line_bytes -= len(data)
                self.sent_messages += frames
                self.sent_bytes += len(data)
                room = self._line_room
                if room is not None and self._line_bytes <= self.busy_limit_bytes:
                    self._line_room = None
                    room.set()
        finally:
            self._line_running = False
            self.faults.line_done()
            if self._line_room is not None:
                self._line_room.set()
            self._release_space()  # (flushed() waiters)


# ---------------------------------------------------------------------- receiving: constants
DECODE_SLICE = 64 * 1024         # frames up to this size are decoded at once, bigger ones a slice per step
TURN_BUDGET_S = 0.005            # decoding per connection per event-loop turn before the rest waits
WARNINGS_PER_S = 5               # warnings about one peer per second; then one "suppressed" line
_CLOSE, _DONE, _FIRST = 0, 1, 2  # delivering a message: close / done / a completed chunked one goes first
_WHOLE_TYPES = KNOWN_TYPES - {CHUNK}  # a message of its own: `dispatch` handles it
_PLAIN_TYPES = _WHOLE_TYPES - {REPLY}  # (the frame loop completes successful replies itself)


class _Sliced:
    """A backlog item decoded a slice per step: a big frame, or a message reassembled from
    chunks (`whole`: exactly one message, not a chunk)."""

    __slots__ = ("count", "data", "decoder", "ready", "whole")

    def __init__(self, decoder: IncrementalDecoder, data: Any, whole: bool) -> None:
        self.decoder = decoder
        self.data = data
        self.whole = whole
        self.ready: list[Any] = []  # decoded, not delivered yet
        self.count = 0  # messages decoded or refused


class _ShortRepr(reprlib.Repr):
    """reprlib with room for ~200 characters, and bytes cut before they are rendered."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 160
        self.maxlong = 60
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdict = 8
        self.maxlevel = 3

    def repr_bytes(self, value: bytes, level: int) -> str:
        if len(value) <= self.maxstring:
            return repr(value)
        return repr(value[:self.maxstring]) + f"...({len(value)} bytes)"


_SHORT = _ShortRepr()


def describe(value: Any, render: Callable[[Any], str] = _SHORT.repr) -> str:
    """A short text (~200 characters at most) for a value a peer sent; never raises and costs
    time bounded whatever the value's size (for log lines)."""
    try:
        return _cut(render(value))
    except Exception:
        return f"<{type(value).__name__}>"


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _InlineProtocol:
    """Stands in for anyio's protocol on the asyncio fast path (see `Connection._read_inline`).

    Received bytes go straight to the connection; everything else is forwarded to anyio's
    protocol, so the stream (the writer's `send`, closing) behaves as before."""

    def __init__(self, conn: Connection, inner: Any, done: Any) -> None:
        self.conn = conn
        self.inner = inner
        self.done = done
        self.active = True

    def _finish(self) -> None:
        self.active = False
        if not self.done.done():
            self.done.set_result(None)

    def connection_made(self, transport: Any) -> None:  # not called: the transport exists
        pass

    def data_received(self, data: bytes) -> None:
        if not self.active:
            return
        # Frames are handled here, outside any task: tell anyio (through sniffio) which loop
        # this is, as anyio.run would, so handlers may start tasks (e.g. in a Jupyter kernel).
        local = sniffio.thread_local
        previous = local.name
        local.name = "asyncio"
        try:
            ok = self.conn._received(data)
        except BaseException:
            self._finish()
            raise
        finally:
            local.name = previous
        if not ok:
            self._finish()
            self.conn._transport.pause_reading()
        elif self.conn._backlog:  # decoding continues on the next turns; reading waits for it
            self.conn._transport.pause_reading()
            self.done.get_loop().call_soon(self._resume)

    def _resume(self) -> None:
        """One more turn's budget of decoding (see `Connection._work`), then resume reading."""
        if not self.active:
            return
        conn = self.conn
        local = sniffio.thread_local
        previous = local.name
        local.name = "asyncio"
        try:
            ok = conn._work()
        except Exception as exc:  # a bug: end this connection, never lose the error
            conn.node.events.report_error(f"receiving from {conn.peer}", exc)
            ok = False
        finally:
            local.name = previous
        if not ok:
            self._finish()
            conn._transport.pause_reading()
        elif conn._backlog:
            self.done.get_loop().call_soon(self._resume)
        elif not conn._held:  # (reading stays paused while the fault layer holds frames)
            conn._transport.resume_reading()

    def eof_received(self) -> bool | None:
        self._finish()
        result: bool | None = self.inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.conn._direct_ok = False
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
        self.conn._direct_ok = self.active and not self.conn.closed
