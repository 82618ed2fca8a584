"""Failure detection off the event loop: a liveness thread with its own UDP socket.

A notebook cell may block the event loop for minutes (`time.sleep(600)`, a long numpy call).
A detector living on the loop would then declare a healthy node dead, so each node runs a
small daemon thread that sends and answers heartbeats on its own socket and reports how long
the loop has not turned (the *loop lag*, measured from a `LoopStamp` that a loop task stamps).
Peers classify each other as

* ``up``   - heartbeats arrive and the reported loop lag is below the busy threshold;
* ``busy`` - heartbeats arrive but the reported loop lag is >= the busy threshold;
* ``down`` - no accepted heartbeat for ``interval_s * miss_threshold`` (reason
  ``"heartbeat_timeout"``); the peer stays down until `LivenessMonitor.watch` is called again.

Datagram (one per peer per interval, at most `MAX_DATAGRAM` bytes)::

    body = msgpack [1, from_id, to_id, from_incarnation, seq, loop_lag_ms, process_count]
    datagram = body                          (no secret)
    datagram = body + HMAC-SHA256(secret, b"noex_lab/heartbeat/v1\\0" + body)   (32 bytes, with secret)

With a secret the tag is checked (constant time) before the body is parsed at all. `to_id`
binds a datagram to its receiver, `seq` increases strictly per sender so recorded datagrams
cannot be replayed, and the incarnation must match the watched one. Anything else is dropped.
The thread never touches anyio objects: it talks to the loop only through the `report`
callback (which the caller forwards thread-safely) and reads the loop only through `LoopStamp`.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import hmac
import logging
import math
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import msgpack

from ..core.node_id import NodeId
from .faults import Faults

__all__ = [
    "MAX_DATAGRAM",
    "LivenessMonitor",
    "LoopStamp",
    "PeerLiveness",
    "decode_heartbeat",
    "encode_heartbeat",
    "run_loop_stamper",
    "stamp_period_s",
]

log = logging.getLogger(__name__)

HEARTBEAT_VERSION = 1
MAX_DATAGRAM = 1024  # two node ids (<= ~330 chars each) + a few ints + a 32-byte tag
TAG_BYTES = 32
_TAG_LABEL = b"noex_lab/heartbeat/v1\x00"  # domain separation from the handshake's HMACs
_MAX_DRAIN = 256  # datagrams read per turn, so a flood cannot starve sends and deadline checks
_MAX_COUNT = 2**62
_FATAL_ERRNOS = {errno.EBADF, errno.ENOTSOCK, errno.EINVAL}
MAX_STAMP_PERIOD_S = 1.0

UP, BUSY, DOWN = "up", "busy", "down"


@dataclass(frozen=True)
class PeerLiveness:
    """What the liveness thread knows about one watched peer (a snapshot)."""

    peer: NodeId
    status: str  # "up" | "busy" | "down"
    last_heartbeat_at: float  # time.time() of the last accepted heartbeat (of watch() before any)
    loop_lag_ms: float
    process_count: int
    incarnation: int
    heartbeats: int  # accepted heartbeats since watch(); 0 means the peer has not been heard yet
    last_heartbeat_mono: float  # the same instant on time.monotonic(), for exact silence arithmetic


@dataclass(frozen=True)
class Heartbeat:
    """A decoded heartbeat body."""

    sender: str
    receiver: str
    incarnation: int
    seq: int
    loop_lag_ms: float
    process_count: int


class LoopStamp:
    """The loop's last sign of life, shared by the loop-side stamper and the liveness thread.

    A single float written by one side and read by the other needs no lock under the GIL
    (the assignment is atomic); a blocked loop simply stops updating it. `period_s` is how
    often the loop stamps: while the loop keeps that pace its lag reads 0, whatever the period;
    once a stamp is overdue the lag is the whole time since the loop last turned.
    """

    def __init__(self, period_s: float = 0.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self._monotonic = monotonic  # the node's clock (`core/clock.py`): real time in production
        self._last = monotonic()

    def stamp(self) -> None:
        """Record that the loop is turning."""
        self._last = self._monotonic()

    def lag_s(self) -> float:
        """Seconds since the loop last turned, once its next stamp is overdue (0 until then)."""
        age = self._monotonic() - self._last
        return age if age > self.period_s else 0.0


def stamp_period_s(busy_threshold_s: float) -> float:
    """How often a node's loop stamps: a tenth of the busy threshold, at most once a second, so
    an idle loop wakes rarely while busy is still seen within 10 % of the threshold."""
    return min(MAX_STAMP_PERIOD_S, busy_threshold_s / 10)


async def run_loop_stamper(stamp: LoopStamp, period_s: float | None = None) -> None:
    """Stamp `stamp` every `period_s` (default: the stamp's own period, else 100 ms) until
    cancelled; run it as a task on the node's loop."""
    period = period_s if period_s is not None else (stamp.period_s or 0.1)
    while True:
        stamp.stamp()
        await anyio.sleep(period)


def _tag(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, _TAG_LABEL + body, hashlib.sha256).digest()


def encode_heartbeat(hb: Heartbeat, secret: bytes | None) -> bytes:
    """Serialize one heartbeat datagram (body, plus the tag when a secret is set)."""
    body: bytes = msgpack.packb(
        [HEARTBEAT_VERSION, hb.sender, hb.receiver, hb.incarnation, hb.seq, hb.loop_lag_ms, hb.process_count]
    )
    return body + _tag(secret, body) if secret is not None else body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decode_heartbeat(data: bytes, secret: bytes | None) -> Heartbeat | None:
    """Parse and authenticate one datagram; None for anything too large, forged or malformed.

    Never raises: the input is whatever anyone sent to our UDP port.
    """
    if not isinstance(data, bytes) or len(data) > MAX_DATAGRAM:
        return None
    if secret is not None:
        if len(data) <= TAG_BYTES:
            return None
        body, tag = data[:-TAG_BYTES], data[-TAG_BYTES:]
        if not hmac.compare_digest(_tag(secret, body), tag):
            return None
    else:
        body = data
    try:
        value = msgpack.unpackb(
            body, max_bin_len=0, max_str_len=MAX_DATAGRAM, max_array_len=8, max_map_len=0,
            max_ext_len=0, strict_map_key=True,
        )
    except Exception:
        return None
    if not isinstance(value, list) or len(value) != 7:
        return None
    version, sender, receiver, incarnation, seq, lag, count = value
    if not (
        _is_int(version) and version == HEARTBEAT_VERSION
        and isinstance(sender, str) and isinstance(receiver, str)
        and _is_int(incarnation) and _is_int(seq) and seq >= 0
        and isinstance(lag, (int, float)) and not isinstance(lag, bool) and math.isfinite(lag) and lag >= 0
        and _is_int(count) and 0 <= count < _MAX_COUNT
    ):
        return None
    return Heartbeat(sender, receiver, incarnation, seq, float(lag), count)


@dataclass
class _Peer:
    """Mutable per-peer state; only touched under the monitor's lock."""

    node_id: NodeId
    text: str
    incarnation: int
    status: str
    heard_mono: float  # monotonic time of the last accepted heartbeat (of watch() before any)
    heard_wall: float
    loop_lag_ms: float = 0.0
    process_count: int = 0
    last_seq: int = -1
    heartbeats: int = 0
    timeout_s: float = 0.0

    def snapshot(self) -> PeerLiveness:
        return PeerLiveness(
            self.node_id, self.status, self.heard_wall, self.loop_lag_ms, self.process_count,
            self.incarnation, self.heartbeats, self.heard_mono,
        )


class LivenessMonitor:
    """Heartbeats to and from watched peers, on a daemon thread with its own UDP socket.

    `report(kind, peer, info)` is called from the thread on every status change, kind in
    {"busy", "up", "down"}; forward it to the loop thread-safely and keep it quick. A newly
    watched peer starts "up" without a report (the connection said so); "up" is reported when
    a peer leaves "busy". A peer reported down gets no more heartbeats from us (so both sides
    agree) until `watch()` is called again. The monitor owns its socket and closes it on `stop()`.
    """

    def __init__(
        self,
        *,
        node_id: NodeId,
        incarnation: int,
        secret: bytes | None,
        interval_s: float,
        miss_threshold: int,
        busy_threshold_s: float,
        stamp: LoopStamp,
        process_count: Callable[[], int],
        report: Callable[[str, NodeId, PeerLiveness], None],
        faults: Faults | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        if not interval_s > 0 or miss_threshold < 1 or not busy_threshold_s > 0:
            raise ValueError("interval_s and busy_threshold_s must be > 0 and miss_threshold >= 1")
        self.node_id = node_id
        self.incarnation = incarnation
        self._text = str(node_id)
        self._secret = secret
        self.interval_s = interval_s
        self.miss_threshold = miss_threshold
        self.timeout_s = interval_s * miss_threshold
        self.busy_threshold_ms = busy_threshold_s * 1000.0
        self._check_s = min(interval_s / 4, 0.05)  # the pause after an unexpected error
        self._stamp = stamp
        self._process_count = process_count
        self._report = report
        self._faults = faults
        self._sock = sock if sock is not None else self.bind(node_id.host, node_id.port)
        self._sock.setblocking(False)
        self._lock = threading.Lock()
        self._peers: dict[str, _Peer] = {}  # keyed by the id text found in datagrams
        self._addrs: dict[NodeId, Any] = {}  # resolved UDP addresses (thread only)
        self._unresolved: set[NodeId] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Starts from the clock so a monitor recreated within one incarnation is not taken for a replay.
        self._seq = time.time_ns() // 1000
        self._last_count = 0
        self._sock_broken = False
        # The thread's last turn (monotonic) and how many times it found it had not turned for
        # longer than the timeout (the process was frozen: SIGSTOP, a VM pause); read by the loop.
        self.last_tick = time.monotonic()
        self.gaps = 0
        self.monotonic = time.monotonic  # the clock of last_tick (an instance attribute: the gate reads it often)
        # The thread sleeps until its next send or deadline, or until a datagram arrives; stop()
        # and watch() wake it through this pair instead of the thread polling on a short period.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._rescan = True  # set by watch(): a new deadline may come before the one the thread waits for
        self._next_deadline = math.inf
        self._wake_fd = -1
        # Heartbeats held by a link rule's latency/jitter (thread only): (due, seq, peer, datagram, addr).
        self._delayed: list[tuple[float, int, NodeId, bytes, Any]] = []

    @staticmethod
    def bind(host: str, port: int) -> socket.socket:
        """A UDP socket on `port` (the node's TCP port number); raises OSError if it is taken.

        No SO_REUSEADDR: two sockets sharing the port would steal each other's heartbeats.
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    @property
    def port(self) -> int:
        """The bound UDP port."""
        return int(self._sock.getsockname()[1])

    # -- control (called from the loop; never blocks for long) ---------------------------------

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is not None or self._stop.is_set():
            raise RuntimeError("a LivenessMonitor can be started only once")
        self._thread = threading.Thread(target=self._run, name=f"noex-liveness-{self._text}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (joined within ~1 s) and close the socket; idempotent."""
        self._stop.set()
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
            if thread.is_alive():
                log.warning("liveness thread of %s did not stop within 1 s", self._text)
        self._sock.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        """Wake the thread from its wait (a full pair means it is awake already)."""
        try:
            self._wake_w.send(b"\0")
        except OSError:  # BlockingIOError: wakes are pending; closed: the monitor has stopped
            pass

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def watch(self, peer: NodeId, incarnation: int, peer_interval_s: float | None = None) -> None:
        """Expect heartbeats from this incarnation of `peer`; its deadline starts now.

        Also revives a peer that was reported down. The replay guard survives a re-watch of the
        same incarnation and resets for a new one. A peer that sends less often than we do
        (`peer_interval_s`) gets `peer_interval_s * miss_threshold` before it is declared down.
        """
        if peer == self.node_id:
            raise ValueError("a node does not watch itself")
        text = str(peer)
        now_wall, now_mono = time.time(), time.monotonic()
        with self._lock:
            old = self._peers.get(text)
            state = _Peer(peer, text, incarnation, UP, now_mono, now_wall)
            state.timeout_s = max(self.timeout_s, (peer_interval_s or 0.0) * self.miss_threshold)
            if old is not None and old.incarnation == incarnation:
                state.last_seq = old.last_seq
            self._peers[text] = state
            self._rescan = True

    def unwatch(self, peer: NodeId) -> None:
        """Stop sending to and expecting heartbeats from `peer`."""
        with self._lock:
            self._peers.pop(str(peer), None)

    def status(self, peer: NodeId) -> PeerLiveness | None:
        with self._lock:
            state = self._peers.get(str(peer))
            return state.snapshot() if state is not None else None

    def peers(self) -> list[PeerLiveness]:
        with self._lock:
            return [state.snapshot() for state in self._peers.values()]

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        """Receive, check deadlines, send; every error is logged and the loop goes on.

        Between turns the thread sleeps until the next send or peer deadline, whichever comes
        first, unless a datagram (or a wake from stop()/watch()) arrives: an idle node's thread
        wakes about once per heartbeat received or sent, not on a fixed short period.
        """
        next_send = time.monotonic()
        poller = self._poller()
        while not self._stop.is_set():
            tick = time.monotonic()
            # (the thread sleeps up to one interval between turns: a gap must exceed that too,
            # or a miss threshold of 1 would read every idle sleep as a freeze)
            if tick - self.last_tick > max(self.timeout_s, 1.5 * self.interval_s):
                self.gaps += 1
            self.last_tick = tick
            try:
                # Read what arrived before judging deadlines: after a stall (a slow DNS lookup,
                # this process being frozen) the buffered heartbeats still count.
                self._drain()
                now = time.monotonic()
                if self._rescan or now >= self._next_deadline:
                    self._rescan = False
                    self._next_deadline = self._check_deadlines()
                now = time.monotonic()
                if now >= next_send:
                    self._send_all()
                    next_send += self.interval_s
                    if next_send <= now:  # fell behind (e.g. SIGSTOP): do not burst
                        next_send = now + self.interval_s
                wake = min(next_send, self._next_deadline)
                if self._delayed:  # only with a link rule (fault injection): the idle path is unchanged
                    wake = min(wake, self._send_delayed())
                self._wait_readable(poller, max(0.0, wake - time.monotonic()))
            except Exception:
                log.exception("liveness thread of %s: unexpected error (continuing)", self._text)
                self._stop.wait(self._check_s)
        log.debug("liveness thread of %s stopped", self._text)

    def _poller(self) -> select.poll | None:
        """One poller for the thread's life (poll, not select: a process with over 1024 open
        descriptors must still hear beats)."""
        try:
            poller = select.poll()
            self._wake_fd = self._wake_r.fileno()
            poller.register(self._wake_fd, select.POLLIN)
            poller.register(self._sock, select.POLLIN)
            return poller
        except (OSError, ValueError) as exc:  # ValueError: the socket was closed (fileno -1)
            self._socket_failed(exc)
            return None

    def _wait_readable(self, poller: select.poll | None, timeout: float) -> None:
        if self._sock_broken or poller is None:
            self._stop.wait(timeout)
            return
        try:
            ready = poller.poll(timeout * 1000.0)
        except (OSError, ValueError) as exc:
            self._socket_failed(exc)
            self._stop.wait(timeout)
            return
        for fd, events in ready:
            if events & select.POLLNVAL:  # a descriptor closed under us: poll would return at once forever
                if not self._stop.is_set():
                    self._socket_failed(OSError(errno.EBADF, "the liveness socket was closed"))
                self._stop.wait(timeout)
                return
            if fd == self._wake_fd:
                try:
                    while self._wake_r.recv(64):
                        pass
                except OSError:  # drained (BlockingIOError), or closed by stop()
                    pass

    def _socket_failed(self, exc: BaseException) -> None:
        """Without a socket no heartbeat arrives: keep checking deadlines so peers go down."""
        if self._stop.is_set():
            return
        if not self._sock_broken:
            self._sock_broken = True
            log.error(
                "liveness socket of %s failed (%s): peers will be reported down", self._text, exc
            )

    def _drain(self) -> None:
        if self._sock_broken:
            return
        for _ in range(_MAX_DRAIN):
            try:
                data, _addr = self._sock.recvfrom(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _FATAL_ERRNOS:
                    self._socket_failed(exc)
                    return
                continue  # e.g. ECONNREFUSED/ECONNRESET surfaced by ICMP on some systems
            self._receive(data)

    def _receive(self, data: bytes) -> None:
        hb = decode_heartbeat(data, self._secret)
        if hb is None or hb.receiver != self._text:
            return
        now_wall = time.time()
        now_mono = time.monotonic()
        transition: tuple[str, PeerLiveness] | None = None
        with self._lock:
            state = self._peers.get(hb.sender)
            if (
                state is None
                or state.incarnation != hb.incarnation
                or hb.seq <= state.last_seq
                or state.status == DOWN
            ):
                return
            if self._faults is not None and self._faults.cuts_in(state.node_id):
                return
            state.last_seq = hb.seq
            state.heard_mono, state.heard_wall = now_mono, now_wall
            state.loop_lag_ms, state.process_count = hb.loop_lag_ms, hb.process_count
            state.heartbeats += 1
            new = BUSY if hb.loop_lag_ms >= self.busy_threshold_ms else UP
            if new != state.status:
                state.status = new
                transition = (new, state.snapshot())
        if transition is not None:
            self._emit(transition[0], transition[1])

    def _check_deadlines(self) -> float:
        """Report peers silent for the timeout; return the next deadline (monotonic)."""
        now = time.monotonic()
        next_deadline = math.inf
        expired: list[PeerLiveness] = []
        with self._lock:
            for state in self._peers.values():
                if state.status == DOWN:
                    continue
                deadline = state.heard_mono + state.timeout_s
                if now >= deadline:
                    state.status = DOWN
                    expired.append(state.snapshot())
                else:
                    next_deadline = min(next_deadline, deadline)
        for info in expired:
            self._emit(DOWN, info)
        return next_deadline

    def _emit(self, kind: str, info: PeerLiveness) -> None:
        try:
            self._report(kind, info.peer, info)
        except Exception:
            log.exception("liveness report callback failed for %s %s", kind, info.peer)

    def _current_count(self) -> int:
        try:
            count = self._process_count()
            if _is_int(count) and 0 <= count < _MAX_COUNT:
                self._last_count = count
        except Exception:
            log.exception("liveness: process_count() failed")
        return self._last_count

    def _send_all(self) -> None:
        if self._sock_broken:
            return
        with self._lock:
            targets = [(s.node_id, s.text) for s in self._peers.values() if s.status != DOWN]
        if not targets:
            return
        lag_ms = self._stamp.lag_s() * 1000.0
        count = self._current_count()
        faults = self._faults
        for peer, text in targets:
            if faults is not None and faults.loses_heartbeat(peer):  # a cut, or the loss rate
                continue
            addr = self._address(peer)
            if addr is None:
                continue
            self._seq += 1
            data = encode_heartbeat(
                Heartbeat(self._text, text, self.incarnation, self._seq, lag_ms, count), self._secret
            )
            delay = faults.heartbeat_delay(peer) if faults is not None and faults.active else 0.0
            if delay > 0:  # the link's latency and jitter apply to heartbeats as to TCP writes
                heapq.heappush(self._delayed, (time.monotonic() + delay, self._seq, peer, data, addr))
            elif not self._sendto(peer, data, addr):
                return

    def _send_delayed(self) -> float:
        """Send the held heartbeats that are due (unless their link was cut meanwhile: a datagram
        in flight is lost with the cable); return when the next one is due."""
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _due, _seq, peer, data, addr = heapq.heappop(self._delayed)
            if self._faults is not None and self._faults.cuts_out(peer):
                continue
            if not self._sendto(peer, data, addr):
                self._delayed.clear()
                break
        return self._delayed[0][0] if self._delayed else math.inf

    def _sendto(self, peer: NodeId, data: bytes, addr: Any) -> bool:
        """Send one datagram; False when the socket failed for good."""
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            pass  # a full send buffer loses one heartbeat, as the network may
        except OSError as exc:
            if exc.errno in _FATAL_ERRNOS:
                self._socket_failed(exc)
                return False
            log.debug("liveness: heartbeat to %s failed: %s", peer, exc)
        return True

    def _address(self, peer: NodeId) -> Any:
        """The peer's UDP address, resolved once in this thread (never on the loop)."""
        addr = self._addrs.get(peer)
        if addr is None:
            try:
                infos = socket.getaddrinfo(peer.host, peer.port, self._sock.family, socket.SOCK_DGRAM)
            except OSError as exc:
                if peer not in self._unresolved:  # log once; retried every interval
                    self._unresolved.add(peer)
                    log.warning("liveness: cannot resolve %s: %s", peer, exc)
                return None
            if not infos:
                return None
            addr = infos[0][4]
            if len(self._addrs) > 4096:
                self._addrs.clear()
            self._addrs[peer] = addr
        return addr
