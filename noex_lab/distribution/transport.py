"""TCP transport: the listener, dialing with back-off, the handshake, one connection per pair.

Simultaneous dials are resolved deterministically: when two nodes dial each other at
once, the dial started by the node whose id sorts lower wins and the other is refused
as a duplicate, so exactly one connection remains.

Connections that have not finished their handshake are bounded: at most
`MAX_PENDING_PER_ADDRESS` from one source address and `MAX_PENDING_HANDSHAKES` in all. When a
bound is reached the oldest pending handshake is shed (idle ones, which have not even sent a
valid HELLO, first) to make room for the new connection: a legitimate peer finishes its
handshake in milliseconds, so it is never the oldest for long, while a flood of idle sockets
only ever displaces itself. When accept() fails for lack of descriptors (EMFILE, ENFILE), the
oldest pending handshakes (idle ones first) are shed as well and accept is retried with back-off.
"""

from __future__ import annotations

import errno
import logging
import ssl
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

from ..core.clock import SYSTEM_CLOCK
from ..core.errors import AuthenticationError
from ..core.node_id import NodeId
from . import handshake as hs
from .connection import BUSY_LIMIT_BYTES, MAX_SEND_BUFFER_BYTES, Connection, Dispatch
from .faults import Faults
from .framing import HEADER, ProtocolError, frame_keys

if TYPE_CHECKING:
    from ..core.node import Node
    from .codec import Codec

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 5.0
MAX_PENDING_HANDSHAKES = 1024  # connections that have not finished their handshake, in all
MAX_PENDING_PER_ADDRESS = 128  # ... and from one source address
MAX_CONNECTIONS = 512  # peers at once (the largest cluster); beyond, new peers are refused
MAX_TRIED = 4096  # peers whose last dial's end is remembered (`Transport.tried`)
CONNECT_TIMEOUT_S = 5.0
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
SHED_ON_EMFILE = 8  # pending handshakes closed (idle ones first) when accept() runs out of descriptors
ACCEPT_BACKOFF_S = (0.005, 0.5)  # first and longest pause after a failed accept()


@dataclass(frozen=True)
class TLSConfig:
    """TLS for node links: a server-side and a client-side `ssl.SSLContext`."""

    server: ssl.SSLContext
    client: ssl.SSLContext

    @classmethod
    def from_files(cls, certfile: str, keyfile: str, cafile: str) -> TLSConfig:
        """Mutual TLS from PEM files: every node presents `certfile`, trusts `cafile`."""
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=cafile)
        server.load_cert_chain(certfile, keyfile)
        server.verify_mode = ssl.CERT_REQUIRED
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
        client.load_cert_chain(certfile, keyfile)
        client.check_hostname = False
        return cls(server, client)


class _RateLimitedLog:
    """At most one warning per peer host per `period_s`. What it suppresses is not hidden: a
    line "N more refused from HOST (suppressed); the last: ..." follows once the period is over,
    naming the last refusal of every other kind as well ("; also 2 x ..."), so a decoy of one
    kind cannot hide attempts of another (up to KINDS_PER_HOST kinds per host)."""

    KINDS_PER_HOST = 8

    def __init__(self, period_s: float = 1.0,
                 spawn: Callable[[Callable[[], Awaitable[None]]], None] | None = None,
                 monotonic: Callable[[], float] = SYSTEM_CLOCK.monotonic) -> None:
        self.period_s = period_s
        self._monotonic = monotonic
        self._spawn = spawn
        self._last: dict[str, float] = {}
        # host -> (count, {kind (the message's template): (count, its last text)})
        self._suppressed: dict[str, tuple[int, dict[str, tuple[int, str]]]] = {}
        self._flushing = False

    def warning(self, address: str, text: str, *args: Any) -> None:
        host = address.rsplit(":", 1)[0]  # per host: a retrying peer uses a new port each time
        now = self._monotonic()
        if now - self._last.get(host, -1e9) < self.period_s:
            count, kinds = self._suppressed.get(host, (0, {}))
            if text in kinds or len(kinds) < self.KINDS_PER_HOST:
                kinds[text] = (kinds.get(text, (0, ""))[0] + 1, text % args)
                kinds[text] = kinds.pop(text)  # (the most recent kind last)
            self._suppressed[host] = (count + 1, kinds)
            self._flush_later()
            return
        if len(self._last) > 4096:
            self._last = {h: t for h, t in self._last.items() if h in self._suppressed}
        self._last[host] = now
        more, _ = self._suppressed.pop(host, (0, {}))
        suffix = f" ({more} similar suppressed)" if more else ""
        log.warning(text + suffix, *args)

    def flush(self, *, force: bool = False) -> None:
        """Log the summary line of every host whose period is over (of all of them with `force`)."""
        now = self._monotonic()
        for host, (count, kinds) in list(self._suppressed.items()):
            if force or now - self._last.get(host, -1e9) >= self.period_s:
                del self._suppressed[host]
                self._last[host] = now
                *others, (_, last_text) = kinds.values()
                also = "".join(f"; also {n} x {other}" for n, other in others)
                log.warning("%d more refused from %s (suppressed); the last: %s%s", count, host, last_text, also)

    def _flush_later(self) -> None:
        if self._flushing or self._spawn is None:
            return
        self._flushing = True

        async def flusher() -> None:
            try:
                while self._suppressed:
                    await anyio.sleep(self.period_s / 4)
                    self.flush()
            finally:
                self._flushing = False
                self.flush(force=True)  # also when the node stops first

        try:
            self._spawn(flusher)
        except Exception:  # the node is stopping: say it now
            self._flushing = False
            self.flush(force=True)


@dataclass(eq=False)
class _Pending:
    """A connection whose handshake has not finished; `idle` until it sent a valid HELLO."""

    host: str
    scope: anyio.CancelScope
    idle: bool = True
    shed: bool = False


@dataclass
class _PendingHandshakes:
    """Pending handshakes, oldest first, in all and per source address (see the module doc)."""

    all: dict[_Pending, None] = field(default_factory=dict)
    by_host: dict[str, dict[_Pending, None]] = field(default_factory=dict)
    shed: int = 0  # how many were closed to make room

    def __len__(self) -> int:
        return len(self.all)

    def add(self, pending: _Pending) -> None:
        self.all[pending] = None
        self.by_host.setdefault(pending.host, {})[pending] = None

    def remove(self, pending: _Pending) -> None:
        self.all.pop(pending, None)
        of_host = self.by_host.get(pending.host)
        if of_host is not None:
            of_host.pop(pending, None)
            if not of_host:
                del self.by_host[pending.host]

    def count(self, host: str) -> int:
        return len(self.by_host.get(host, ()))

    def shed_oldest(self, among: dict[_Pending, None]) -> bool:
        """Close the oldest idle pending handshake in `among`, else the oldest of any kind;
        False if there was none."""
        victim = next((p for p in among if p.idle), None)
        if victim is None:
            victim = next(iter(among), None)
        if victim is None:
            return False
        victim.shed = True
        victim.scope.cancel()
        self.remove(victim)  # its task closes the socket; it no longer counts
        self.shed += 1
        return True


class Transport:
    """Owns the listener and every connection of one node."""

    def __init__(
        self, node: Node, *, node_id: NodeId, incarnation: int, key: bytes | None, codec: Codec,
        faults: Faults, conns: dict[NodeId, Connection], dispatch: Dispatch, max_message_bytes: int,
        tls: TLSConfig | None,
        busy_limit_bytes: int = BUSY_LIMIT_BYTES, max_send_buffer_bytes: int = MAX_SEND_BUFFER_BYTES,
        on_connected: Callable[[Connection], None], on_disconnected: Callable[[Connection], None],
        hidden: bool = False, heartbeat_ms: int = 0,
        connect: Callable[[str, int], Awaitable[anyio.abc.ByteStream]] | None = None,
    ) -> None:
        self.hidden = hidden
        # how dials open a byte stream: TCP, or a simulated network (environment.py)
        self._connect: Callable[[str, int], Awaitable[anyio.abc.ByteStream]] = connect or anyio.connect_tcp
        self.heartbeat_ms = heartbeat_ms
        self.node = node
        self.node_id = node_id
        self.incarnation = incarnation
        self.key = key  # derived from the cluster secret (handshake.derive_key), or None
        self.codec = codec
        self.faults = faults
        self.dispatch = dispatch
        self.max_message_bytes = max_message_bytes
        self.busy_limit_bytes = busy_limit_bytes
        self.max_send_buffer_bytes = max_send_buffer_bytes
        self.tls = tls
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.conns = conns  # shared with the router, which reads it (filled here, never replaced)
        self.dialing: set[NodeId] = set()
        # when the last finished dial of each peer started, whatever came of it (a joining node founds
        # a cluster only after a fresh dial of every seed: partition_policy `_found`); bounded
        self.tried: dict[NodeId, float] = {}
        self.dial_loops: set[NodeId] = set()
        self.pending = _PendingHandshakes()
        self.auth_failures = 0
        self.accept_failures = 0
        self.refusals: deque[str] = deque(maxlen=32)  # why our latest dials were refused or failed the handshake
        # handshakes that did not end in a connection, by kind (read by noex_lab.metrics)
        self.rejected: Counter[str] = Counter()
        self._log = _RateLimitedLog(spawn=lambda fn: node.spawn_task(fn, what="handshake log summary"),
                                    monotonic=node.clock.monotonic)
        self.listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None
        self.stopping = False
        self._redial = anyio.Event()  # set (and replaced) to end every dial loop's back-off at once

    # ------------------------------------------------------------------ accepting
    async def serve(self, listener: anyio.abc.Listener[anyio.abc.SocketStream]) -> None:
        """Accept connections until the listener is closed; each gets its own handshake task."""
        self.listener = listener
        listeners = getattr(listener, "listeners", [listener])
        async with anyio.create_task_group() as tg:
            for one in listeners:
                tg.start_soon(self._accept_loop, one, tg)

    @property
    def pending_handshakes(self) -> int:
        return len(self.pending)

    async def _accept_loop(self, listener: Any, tg: anyio.abc.TaskGroup) -> None:
        pause = ACCEPT_BACKOFF_S[0]
        while True:
            try:
                stream = await listener.accept()
            except anyio.ClosedResourceError:
                return
            except (OSError, anyio.BrokenResourceError) as exc:
                # e.g. EMFILE (trio reports it as BrokenResourceError from the OSError): make room and
                # back off instead of spinning or giving up on the listener
                error = exc if isinstance(exc, OSError) else exc.__cause__
                if self.stopping or not isinstance(error, OSError):
                    return
                self.accept_failures += 1
                shed = 0
                if error.errno in OUT_OF_DESCRIPTORS:
                    while shed < SHED_ON_EMFILE and self.pending.shed_oldest(self.pending.all):
                        shed += 1
                self._log.warning("accept", "accept failed: %s; closed %d pending handshake(s), retrying in %.0f ms",
                                  error, shed, pause * 1000)
                await anyio.sleep(pause)
                pause = min(pause * 2, ACCEPT_BACKOFF_S[1])
                continue
            pause = ACCEPT_BACKOFF_S[0]
            tg.start_soon(self._handle_incoming, stream)

    def _make_room(self, host: str) -> None:
        """Shed the oldest pending handshake of `host`, or of all, if a bound is reached."""
        pending = self.pending
        if pending.count(host) >= MAX_PENDING_PER_ADDRESS:
            pending.shed_oldest(pending.by_host[host])
            self._log.warning(host, "more than %d pending handshakes from %s: closed the oldest",
                              MAX_PENDING_PER_ADDRESS, host)
        if len(pending) >= MAX_PENDING_HANDSHAKES:
            pending.shed_oldest(pending.all)
            self._log.warning(host, "more than %d pending handshakes: closed the oldest", MAX_PENDING_HANDSHAKES)

    async def _handle_incoming(self, raw: anyio.abc.SocketStream) -> None:
        peer_address = _address_of(raw)
        if self.stopping:
            await anyio.aclose_forcefully(raw)
            return
        host = peer_address.rsplit(":", 1)[0]
        self._make_room(host)
        me = _Pending(host, anyio.CancelScope(deadline=anyio.current_time() + HANDSHAKE_TIMEOUT_S))
        self.pending.add(me)
        stream: anyio.abc.ByteStream = raw
        conn: Connection | None = None
        try:
            with me.scope:
                if self.tls is not None:
                    stream = await TLSStream.wrap(raw, ssl_context=self.tls.server, server_side=True)
                conn = await self._accept_handshake(stream, peer_address, me)
            if me.scope.cancelled_caught:
                if me.shed:
                    self.rejected["too_many_handshakes"] += 1
                else:
                    self.rejected["handshake_timeout"] += 1
                    self._log.warning(peer_address, "handshake from %s timed out; closed", peer_address)
        except hs.Refused as exc:
            self.rejected["refused_by_peer"] += 1
            self._log.warning(peer_address, "connection from %s refused: %s", peer_address, exc.reason)
        except (AuthenticationError, ProtocolError) as exc:
            self.rejected["authentication"] += 1
            self.auth_failures += 1
            self._log.warning(peer_address, "handshake from %s failed: %s", peer_address, exc)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError,
                ssl.SSLError) as exc:
            self._log.warning(peer_address, "connection from %s dropped during handshake: %s",
                              peer_address, type(exc).__name__)
        finally:
            self.pending.remove(me)
        if conn is None:
            await anyio.aclose_forcefully(stream)
            return
        await self._run(conn)

    async def _accept_handshake(self, stream: anyio.abc.ByteStream, address: str, pending: _Pending,
                                ) -> Connection | None:
        reader = _HandshakeReader()
        fields = await reader.read(stream)
        mismatch = hs.version_mismatch(fields) if fields[0] == hs.HELLO else None
        if mismatch is not None:
            await _refuse(stream, mismatch)
            raise AuthenticationError(f"{address} speaks {mismatch}")
        hello = hs.parse_hello(fields, hs.HELLO)
        pending.idle = False
        if self.faults.is_blocked(hello.node_id):
            if self.faults.blackholes(hello.node_id):
                self.faults.park(hello.node_id, stream)  # nothing crosses a cut: no answer, no FIN
            return None
        key = self.key
        if key is not None and not hello.secured:
            await _refuse(stream, "this cluster requires a cluster_secret; the dialing node has none")
            raise AuthenticationError(f"{hello.node_id} at {address} has no cluster secret")
        if key is None and hello.secured:
            await _refuse(stream, "this node has no cluster_secret; the dialing node expects one")
            raise AuthenticationError(f"{hello.node_id} at {address} expects a cluster secret; we have none")
        nonce = hs.new_nonce(self.node.entropy.token_bytes)
        me = hs.PeerHello(hs.PROTOCOL_VERSION, self.node_id, self.incarnation, nonce, key is not None,
                          self.hidden, self.heartbeat_ms)
        await _send(stream, hs.encode_hello(hs.WELCOME, me))
        fields = await reader.read(stream)
        if fields[0] != hs.PROOF or len(fields) != 2:
            raise AuthenticationError(f"expected proof, got {fields[0]!r}")
        # The dialer proves first: nothing derived from the key leaves this node before this check.
        if key is not None and not hs.verify(hs.proof(key, b"C", hello, me), fields[1]):
            await _refuse(stream, "authentication failed: wrong cluster secret")
            raise AuthenticationError(f"{hello.node_id} at {address} failed authentication (wrong secret?)")
        if hello.node_id == self.node_id:
            await _refuse(stream, f"the node id {self.node_id} is already in use")
            raise AuthenticationError(f"a node at {address} claims our own id {self.node_id}")
        if hello.node_id not in self.conns and len(self.conns) >= MAX_CONNECTIONS:
            reason = f"this node is connected to {MAX_CONNECTIONS} peers, its limit"
            await _refuse(stream, reason)
            raise hs.Refused(f"{hello.node_id}: {reason}")
        if not self._admit(hello.node_id, hello.incarnation, outgoing=False):
            await _refuse(stream, "duplicate connection")
            return None
        await _send(stream, hs.encode(hs.ACCEPT, hs.proof(key, b"S", hello, me) if key is not None else b""))
        session = hs.session_key(key, hello, me) if key is not None else None
        return self._new_connection(stream, hello.node_id, hello.incarnation, reader, hello, session, dialer=False)

    def _admit(self, peer: NodeId, incarnation: int, *, outgoing: bool) -> bool:
        existing = self.conns.get(peer)
        if existing is not None and not existing.closed:
            if existing.peer_incarnation >= incarnation:
                return False  # a duplicate, or an older incarnation than the one connected
            existing.close("connection_closed")  # an old incarnation: it is gone
        if not outgoing and peer in self.dialing and self.node_id < peer:
            return False  # our own dial wins the tie-break
        return True

    # ------------------------------------------------------------------ dialing
    async def dial(self, peer: NodeId) -> bool:
        """One attempt to connect; True when a connection to `peer` exists afterwards."""
        if peer in self.conns or peer == self.node_id:
            return True
        if self.faults.is_blocked(peer) or self.stopping or len(self.conns) >= MAX_CONNECTIONS:
            return False
        self.dialing.add(peer)
        started = self.node.clock.monotonic()
        try:
            conn = await self._attempt(peer.host, peer.port, peer)
        finally:
            self.dialing.discard(peer)
            if len(self.tried) < MAX_TRIED or peer in self.tried:
                self.tried[peer] = started
        if conn is None:
            return peer in self.conns
        self.node.spawn_task(self._run, conn, what=f"connection to {peer}")
        return True

    async def dial_address(self, host: str, port: int) -> NodeId | None:
        """One attempt to connect to an address whose node id is unknown (DNS seeds)."""
        if self.stopping:
            return None
        conn = await self._attempt(host, port, None)
        if conn is None:
            return None
        self.node.spawn_task(self._run, conn, what=f"connection to {conn.peer}")
        return conn.peer

    async def _attempt(self, host: str, port: int, expected: NodeId | None) -> Connection | None:
        """Connect and run the dialer's side of the handshake; None (logged) when it fails."""
        label = str(expected) if expected is not None else f"{host}:{port}"
        stream: anyio.abc.ByteStream | None = None
        conn: Connection | None = None
        learned: list[NodeId] = []
        try:
            with anyio.fail_after(CONNECT_TIMEOUT_S + HANDSHAKE_TIMEOUT_S):
                raw = await self._connect(host, port)
                stream = raw
                if self.tls is not None:
                    stream = await TLSStream.wrap(raw, ssl_context=self.tls.client, server_side=False,
                                                  hostname=host)
                conn = await self._dial_handshake(stream, expected, learned)
        except hs.Refused as exc:
            if exc.reason != "duplicate connection":
                self.auth_failures += 1
                self.rejected["refused_by_peer"] += 1
                self._log.warning(label, "%s refused our connection: %s", label, exc.reason)
                self.refusals.append(exc.reason)
        except AuthenticationError as exc:
            self.rejected["authentication"] += 1
            self.auth_failures += 1
            self._log.warning(label, "handshake with %s failed: %s", label, exc)
            self.refusals.append(str(exc))
        except (TimeoutError, OSError, anyio.EndOfStream, anyio.BrokenResourceError,
                anyio.ClosedResourceError, ssl.SSLError, ProtocolError) as exc:
            log.debug("dial %s failed: %s", label, exc)
        finally:
            for peer in learned:
                self.dialing.discard(peer)
        if conn is None and stream is not None:
            await anyio.aclose_forcefully(stream)
        return conn

    async def _dial_handshake(
        self, stream: anyio.abc.ByteStream, expected: NodeId | None, learned: list[NodeId]
    ) -> Connection | None:
        reader = _HandshakeReader()
        key = self.key
        nonce = hs.new_nonce(self.node.entropy.token_bytes)
        me = hs.PeerHello(hs.PROTOCOL_VERSION, self.node_id, self.incarnation, nonce, key is not None,
                          self.hidden, self.heartbeat_ms)
        await _send(stream, hs.encode_hello(hs.HELLO, me))
        fields = await reader.read(stream)
        welcome = hs.parse_hello(fields, hs.WELCOME)
        peer = welcome.node_id
        if expected is not None and peer != expected:
            raise AuthenticationError(f"dialed {expected} but {peer} answered")
        if expected is None:
            # an address dial (DNS seed): from here on it takes part in the tie-break like any dial
            if peer == self.node_id or peer in self.conns or peer in self.dialing or self.faults.is_blocked(peer):
                return None
            self.dialing.add(peer)
            learned.append(peer)
        if key is not None and not welcome.secured:
            raise AuthenticationError(f"{peer} has no cluster secret; this node requires one")
        await _send(stream, hs.encode(hs.PROOF, hs.proof(key, b"C", me, welcome) if key is not None else b""))
        fields = await reader.read(stream)
        if fields[0] != hs.ACCEPT:
            raise AuthenticationError(f"expected accept, got {fields[0]!r}")
        if key is not None and not hs.verify(hs.proof(key, b"S", me, welcome), fields[1] if len(fields) > 1 else None):
            raise AuthenticationError(f"{peer} failed authentication: its proof is wrong (wrong secret?)")
        if not self._admit(peer, welcome.incarnation, outgoing=True):
            return None
        session = hs.session_key(key, me, welcome) if key is not None else None
        return self._new_connection(stream, peer, welcome.incarnation, reader, welcome, session, dialer=True)

    def ensure_dialing(
        self, peer: NodeId, wanted: Callable[[NodeId], bool], *, max_backoff_s: float = 0.5,
        give_up_after_s: float | None = None, slow_after_s: float = 30.0, slow_backoff_s: float = 5.0,
        first_backoff_s: float = 0.05,
    ) -> None:
        """Keep dialing `peer` with jittered exponential back-off while `wanted(peer)`: quickly
        (every `max_backoff_s` at most) for `slow_after_s`, then every `slow_backoff_s` at most.
        `redial_now()` ends every back-off at once."""
        if peer in self.dial_loops or peer in self.conns or peer == self.node_id or self.stopping:
            return
        self.dial_loops.add(peer)

        monotonic, rng = self.node.clock.monotonic, self.node.entropy.random

        async def loop() -> None:
            delay = first_backoff_s
            started = monotonic()
            deadline = None if give_up_after_s is None else started + give_up_after_s
            try:
                while not self.stopping and wanted(peer) and peer not in self.conns:
                    if deadline is not None and monotonic() > deadline:
                        log.info("giving up dialing %s after %.0f s", peer, give_up_after_s)
                        return
                    if await self.dial(peer):
                        return
                    with anyio.move_on_after(delay * rng.uniform(0.5, 1.5)):
                        await self._redial.wait()
                    cap = max_backoff_s if monotonic() - started < slow_after_s else slow_backoff_s
                    delay = min(delay * 2, cap)
            finally:
                self.dial_loops.discard(peer)

        self.node.spawn_task(loop, what=f"dialing {peer}")

    def redial_now(self) -> None:
        """End the back-off of every dial loop (a fault-layer heal: the peers are reachable again)."""
        self._redial.set()
        self._redial = anyio.Event()

    # ------------------------------------------------------------------ connections
    def _new_connection(
        self, stream: anyio.abc.ByteStream, peer: NodeId, incarnation: int, reader: _HandshakeReader,
        hello: hs.PeerHello, session_key: bytes | None, *, dialer: bool,
    ) -> Connection:
        leftover = reader.rest()
        conn = Connection(self.node, stream, peer, incarnation, self.codec, self.dispatch, self.faults,
                          self.max_message_bytes, initial=leftover, busy_limit_bytes=self.busy_limit_bytes,
                          max_send_buffer_bytes=self.max_send_buffer_bytes,
                          frame_keys=frame_keys(session_key, dialer) if session_key is not None else None)
        conn.session_key = session_key
        conn.peer_hidden = hello.hidden
        conn.peer_heartbeat_ms = hello.heartbeat_ms
        old = self.conns.pop(peer, None)
        if old is not None:
            # A new incarnation connected before the old one was seen down: the old one leaves
            # first, fully (names, locks, monitors, links, node_down), then the new one is admitted.
            old.close("connection_closed")
            self.on_disconnected(old)
        self.conns[peer] = conn
        self.on_connected(conn)
        return conn

    async def _run(self, conn: Connection) -> None:
        try:
            await conn.run()
        finally:
            if self.conns.get(conn.peer) is conn:
                del self.conns[conn.peer]
            self.on_disconnected(conn)

    async def close(self, graceful: bool, goodbye: Callable[[Connection], None] | None = None) -> None:
        self.stopping = True
        if self.listener is not None:
            with anyio.CancelScope(shield=True):
                await self.listener.aclose()
        conns = list(self.conns.values())
        if graceful and goodbye is not None:
            for conn in conns:
                goodbye(conn)
            with anyio.move_on_after(1.0):
                for conn in conns:
                    await conn.flushed()
        for conn in conns:
            conn.close("graceful_shutdown" if graceful else "connection_closed")


def _address_of(stream: anyio.abc.SocketStream) -> str:
    try:
        address = stream.extra(anyio.abc.SocketAttribute.remote_address)
    except Exception:
        return "unknown"
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address)


async def _send(stream: anyio.abc.ByteStream, body: bytes) -> None:
    await stream.send(HEADER.pack(len(body)) + body)


async def _refuse(stream: anyio.abc.ByteStream, reason: str) -> None:
    try:
        with anyio.move_on_after(1.0):
            await _send(stream, hs.encode(hs.REFUSE, reason))
    except Exception:  # the peer may already be gone; the refusal is best effort
        pass


class _HandshakeReader:
    """Reads handshake frames one at a time (at most 4 KiB each) and keeps what follows."""

    def __init__(self) -> None:
        self._buf = bytearray()

    async def read(self, stream: anyio.abc.ByteStream) -> list[Any]:
        buf = self._buf
        for _ in range(64):
            if len(buf) >= 4:
                (length,) = HEADER.unpack_from(buf, 0)
                if length > hs.MAX_HANDSHAKE_FRAME:
                    raise ProtocolError(f"handshake frame of {length} bytes is too large")
                if len(buf) >= 4 + length:
                    body = bytes(buf[4:4 + length])
                    del buf[:4 + length]
                    return hs.decode(body)
            buf += await stream.receive(4096)
        raise ProtocolError("handshake frame never completed")

    def rest(self) -> bytes:
        return bytes(self._buf)
