"""The simulated network: hosts, byte streams with TCP's guarantees, datagrams for heartbeats.

A stream is two one-way pipes. Bytes are delivered in order after the link's latency (plus
seeded jitter); a lost segment is modelled as TCP repairs it, as a retransmission delay, never
as a gap. A partition holds the bytes of the blocked direction until it heals (or the
connection is closed by the failure detector); a paused host neither sends nor receives until
it resumes. A crashed host's streams vanish without FIN: its peers hear nothing, until a byte
reaches the restarted host, which answers with a reset, as a real kernel does. Heartbeat
datagrams are simply lost under loss, partitions and crashes.
"""

from __future__ import annotations

import errno
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from ..core.clock import Clock, Entropy
from ..core.node_id import NodeId
from ..distribution.environment import Heartbeats, Report
from ..distribution.handshake import derive_key
from ..distribution.liveness import Heartbeat, PeerLiveness, decode_heartbeat, encode_heartbeat
from .loop import EPOCH

if TYPE_CHECKING:
    from ..core.node import Node
    from .loop import VirtualTimeLoop

RETRANSMIT_S = 0.2  # TCP's minimum retransmission timeout: what a lost segment costs
CONNECT_TIMEOUT_S = 3.0  # a SYN into a partition: the dial fails after the first retransmissions
_EOF = b""


@dataclass
class Link:
    """One direction between two hosts."""

    latency_s: float
    jitter_s: float
    loss: float = 0.0
    blocked: bool = False


@dataclass(eq=False)
class Host:
    """A machine of the simulated network: one node at a fixed address, over its restarts."""

    index: int
    name: str
    host: str
    port: int
    alive: bool = False
    paused: bool = False
    epoch: int = 0  # restarts so far: streams of an older epoch are dead
    node: Node | None = None
    heartbeats: SimHeartbeats | None = None
    listener: SimListener | None = None
    held_datagrams: list[bytes] = field(default_factory=list)
    resumed: list[Callable[[], None]] = field(default_factory=list)

    @property
    def node_id(self) -> NodeId:
        return NodeId(self.name, self.host, self.port)


class _Pipe:
    """One direction of a stream: segments in flight, in order, each with its arrival time."""

    def __init__(self, net: SimNetwork, src: Host, dst: Host) -> None:
        self.net = net
        self.src, self.dst = src, dst
        self.src_epoch, self.dst_epoch = src.epoch, dst.epoch
        self.in_flight: deque[tuple[float, bytes]] = deque()
        self.last_due = 0.0
        self.scheduled = False
        self.held = False
        self.reader: SimStream | None = None

    def push(self, data: bytes) -> None:
        link = self.net.link(self.src, self.dst)
        now = self.net.loop.time()
        due = now + link.latency_s + link.jitter_s * self.net.rng.random()
        lost = 0
        while link.loss and self.net.rng.random() < link.loss and lost < 6:
            lost += 1
            due += RETRANSMIT_S * 2 ** (lost - 1)
        due = max(due, self.last_due)  # in order, whatever the jitter
        self.last_due = due
        if due > self.net.latest_due:
            self.net.latest_due = due
        self.in_flight.append((due, data))
        if not self.scheduled:
            self.scheduled = True
            self.net.loop.call_at(due, self.arrive)

    def deliverable(self) -> bool:
        net = self.net
        return not (net.link(self.src, self.dst).blocked or self.src.paused or self.dst.paused)

    def arrive(self) -> None:
        self.scheduled = False
        now = self.net.loop.time()
        while self.in_flight and self.in_flight[0][0] <= now + 1e-12:
            if not self.deliverable():
                if not self.held:  # (once: pushes during a partition do not pile up entries)
                    self.held = True
                    self.net.held.append(self)
                return
            _, data = self.in_flight.popleft()
            reader = self.reader
            if reader is None:
                continue
            if not self.dst.alive or self.dst.epoch != self.dst_epoch:
                # the host that had this socket crashed: nothing there; a restarted host resets
                if self.dst.alive and data is not _EOF and reader.peer is not None:
                    reader.peer.reset_later()
                continue
            reader.deliver(data)
        if self.in_flight and not self.scheduled:
            self.scheduled = True
            self.net.loop.call_at(self.in_flight[0][0], self.arrive)

    def release(self) -> None:
        """Called when a partition heals or a host resumes."""
        self.held = False
        if not self.scheduled:
            self.scheduled = True
            self.net.loop.call_soon(self.arrive)


class SimStream(anyio.abc.ByteStream):
    """One end of a simulated TCP connection."""

    def __init__(self, net: SimNetwork, host: Host, out: _Pipe, local: tuple[str, int],
                 remote: tuple[str, int]) -> None:
        self.net = net
        self.host = host
        self.epoch = host.epoch
        self.out = out
        self.peer: SimStream | None = None
        self.buffer = bytearray()
        self.eof = False
        self.reset = False
        self.closed = False
        self._event = anyio.Event()
        self._local, self._remote = local, remote

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return {SocketAttribute.remote_address: lambda: self._remote,
                SocketAttribute.local_address: lambda: self._local}

    def _dead(self) -> bool:
        return not self.host.alive or self.host.epoch != self.epoch

    def _wake(self) -> None:
        self._event.set()

    def deliver(self, data: bytes) -> None:
        if data is _EOF:
            self.eof = True
        else:
            self.buffer += data
        self._wake()

    def reset_later(self) -> None:
        """A reset from the peer's host arrives after one link latency."""
        if self.peer is None:
            return
        link = self.net.link(self.peer.host, self.host)
        self.net.loop.call_later(link.latency_s, self._on_reset)

    def _on_reset(self) -> None:
        if not self.closed and not self._dead():
            self.reset = True
            self.net.record(f"reset {self.host.name}<-{self.out.dst.name}")
            self._wake()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while True:
            if self.closed:
                raise anyio.ClosedResourceError
            if self.buffer:
                data = bytes(self.buffer[:max_bytes])
                del self.buffer[:max_bytes]
                await anyio.lowlevel.checkpoint()
                return data
            if self.reset:
                raise anyio.BrokenResourceError("connection reset by peer")
            if self.eof:
                raise anyio.EndOfStream
            self._event = anyio.Event()
            await self._event.wait()

    async def send(self, item: bytes) -> None:
        if self.closed:
            raise anyio.ClosedResourceError
        if self.reset:
            raise anyio.BrokenResourceError("connection reset by peer")
        if not self._dead():
            self.net.delivered += len(item)
            self.out.push(bytes(item))
        await anyio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        if not self._dead() and not self.closed:
            self.out.push(_EOF)

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self._dead():  # a crashed host sends no FIN
            self.out.push(_EOF)
        self._wake()


class SimListener(anyio.abc.Listener[SimStream]):
    def __init__(self, host: Host) -> None:
        self.host = host
        self.epoch = host.epoch
        self.queue: deque[SimStream] = deque()
        self.closed = False
        self._event = anyio.Event()

    def push(self, stream: SimStream) -> None:
        self.queue.append(stream)
        self._event.set()

    async def accept(self) -> SimStream:
        while True:
            if self.closed:
                raise anyio.ClosedResourceError
            if self.queue:
                return self.queue.popleft()
            self._event = anyio.Event()
            await self._event.wait()

    async def serve(self, handler: Callable[[SimStream], Any], task_group: Any = None) -> None:
        raise NotImplementedError("the transport accepts with accept()")

    async def aclose(self) -> None:
        self.closed = True
        self._event.set()
        if self.host.listener is self:
            self.host.listener = None


class SimNetwork:
    """Hosts, links and every byte and datagram between them."""

    def __init__(self, loop: VirtualTimeLoop, rng: random.Random, record: Callable[[str], None], *,
                 latency_s: float, jitter_s: float, loss: float) -> None:
        self.loop = loop
        self.rng = rng
        self.record = record
        self.default = (latency_s, jitter_s, loss)
        self.hosts: dict[tuple[str, int], Host] = {}
        self.links: dict[tuple[int, int], Link] = {}
        self.held: list[_Pipe] = []
        self.delivered = 0  # bytes sent on streams (a progress figure)
        self.latest_due = 0.0  # when the last segment sent so far arrives (retransmissions included)
        self._ports = 40000

    def add_host(self, host: Host) -> None:
        self.hosts[(host.host, host.port)] = host

    def link(self, src: Host, dst: Host) -> Link:
        key = (src.index, dst.index)
        link = self.links.get(key)
        if link is None:
            latency, jitter, loss = self.default
            link = self.links[key] = Link(latency, jitter, loss)
        return link

    def release_held(self) -> None:
        """A partition healed or a host resumed: held segments move again (in order)."""
        held, self.held = self.held, []
        for pipe in held:
            pipe.release()

    # ------------------------------------------------------------------ streams
    async def connect(self, src: Host, address: tuple[str, int]) -> SimStream:
        dst = self.hosts.get(address)
        epoch = src.epoch
        if dst is None:
            await anyio.sleep(self.default[0])
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"no host at {address[0]}:{address[1]}")
        there, back = self.link(src, dst), self.link(dst, src)
        # (a paused host's kernel still answers a SYN: the handshake then waits for it to resume)
        if there.blocked or back.blocked or src.paused:
            await anyio.sleep(CONNECT_TIMEOUT_S)
            raise TimeoutError(errno.ETIMEDOUT, f"connect to {dst.name} timed out")
        await anyio.sleep(there.latency_s)
        listener = dst.listener
        if not dst.alive or listener is None or listener.closed:
            await anyio.sleep(back.latency_s)
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"{dst.name} refused the connection")
        self._ports += 1
        local = (src.host, self._ports)
        out, inward = _Pipe(self, src, dst), _Pipe(self, dst, src)
        client = SimStream(self, src, out, local, address)
        client.epoch = epoch
        server = SimStream(self, dst, inward, address, local)
        client.peer, server.peer = server, client
        out.reader, inward.reader = server, client
        listener.push(server)
        self.record(f"connect {src.name}->{dst.name}")
        await anyio.sleep(back.latency_s)
        return client

    # ------------------------------------------------------------------ datagrams
    def datagram(self, src: Host, dst_id: NodeId, data: bytes) -> None:
        dst = self.hosts.get((dst_id.host, dst_id.port))
        if dst is None or src.paused:
            return
        link = self.link(src, dst)
        if link.blocked or (link.loss and self.rng.random() < link.loss):
            return
        epoch = dst.epoch
        delay = link.latency_s + link.jitter_s * self.rng.random()
        self.loop.call_later(delay, self._datagram_arrives, dst, epoch, data)

    def _datagram_arrives(self, dst: Host, epoch: int, data: bytes) -> None:
        if not dst.alive or dst.epoch != epoch or dst.heartbeats is None:
            return
        if dst.paused:
            dst.held_datagrams.append(data)
            return
        dst.heartbeats.receive(data)


class SimEnvironment:
    """The `Environment` of one simulated host (see noex_lab.distribution.environment)."""

    def __init__(self, net: SimNetwork, host: Host, clock: Clock, entropy: Entropy) -> None:
        self.net = net
        self.host = host
        self.clock = clock  # the simulation's virtual clock and seeded randomness, shared by its nodes
        self.entropy = entropy

    async def listen(self, host: str, port: int) -> tuple[anyio.abc.Listener[Any], int]:
        listener = SimListener(self.host)
        self.host.listener = listener
        return listener, self.host.port

    async def connect(self, host: str, port: int) -> anyio.abc.ByteStream:
        return await self.net.connect(self.host, (host, port))

    def heartbeats(self, *, node_id: NodeId, incarnation: int, secret: bytes | None, interval_s: float,
                   miss_threshold: int, busy_threshold_s: float, process_count: Callable[[], int],
                   report: Report) -> Heartbeats:
        hb = SimHeartbeats(self.net, self.host, node_id=node_id, incarnation=incarnation, secret=secret,
                           interval_s=interval_s, miss_threshold=miss_threshold,
                           busy_threshold_s=busy_threshold_s, process_count=process_count, report=report)
        self.host.heartbeats = hb
        return hb

    async def derive_key(self, secret: bytes) -> bytes:
        return derive_key(secret)  # on the loop: no thread in a simulation

    async def stop_heartbeats(self, heartbeats: Heartbeats) -> None:
        if isinstance(heartbeats, SimHeartbeats):
            heartbeats.stop()


@dataclass
class _Watched:
    node_id: NodeId
    incarnation: int
    status: str
    heard_at: float
    timeout_s: float
    last_seq: int = -1
    heartbeats: int = 0
    loop_lag_ms: float = 0.0
    process_count: int = 0


class SimHeartbeats:
    """The liveness thread's rules (liveness.LivenessMonitor), driven by the event loop.

    Same datagram format (encode_heartbeat/decode_heartbeat, with the HMAC under a secret), same
    replay guard, same timeout (interval x miss_threshold, stretched for a slower peer), and a
    peer reported down stays down until watched again. A paused host neither sends nor reads;
    on resume it reads what arrived before it judges deadlines, as the thread does after a stall.
    The loop lag of a simulated node is always 0: "busy" does not happen in a simulation.

    Like the thread it reports its own freezes (`gaps`, `last_tick`, on the virtual clock): a
    pause longer than the timeout is a gap. A paused node sees no time pass (SIGSTOP freezes
    its clock reads too), so `last_tick` follows the clock until it resumes; from then until its
    deferred tick runs the gap shows, and the partition guard's gate fences it, as on SIGCONT.
    """

    def __init__(self, net: SimNetwork, host: Host, *, node_id: NodeId, incarnation: int, secret: bytes | None,
                 interval_s: float, miss_threshold: int, busy_threshold_s: float,
                 process_count: Callable[[], int], report: Report) -> None:
        self.net = net
        self.host = host
        self.node_id = node_id
        self._text = str(node_id)
        self.incarnation = incarnation
        self._secret = secret
        self.interval_s = interval_s
        self.miss_threshold = miss_threshold
        self.timeout_s = interval_s * miss_threshold
        self.busy_threshold_ms = busy_threshold_s * 1000.0
        self._process_count = process_count
        self._report = report
        self._peers: dict[str, _Watched] = {}
        self._seq = int(net.loop.time() * 1e6)
        self._timer: Any = None
        self._next_send = 0.0
        self.stopped = False
        self.monotonic = net.loop.time
        self._last_tick = self.monotonic()
        self.gaps = 0

    @property
    def last_tick(self) -> float:
        return self.monotonic() if self.host.paused else self._last_tick

    def start(self) -> None:
        self._next_send = self.net.loop.time()
        self._tick()

    def stop(self) -> None:
        self.stopped = True
        if self._timer is not None:
            self._timer.cancel()

    def watch(self, peer: NodeId, incarnation: int, peer_interval_s: float | None = None) -> None:
        text = str(peer)
        old = self._peers.get(text)
        state = _Watched(peer, incarnation, "up", self.net.loop.time(),
                         max(self.timeout_s, (peer_interval_s or 0.0) * self.miss_threshold))
        if old is not None and old.incarnation == incarnation:
            state.last_seq = old.last_seq
        self._peers[text] = state

    def unwatch(self, peer: NodeId) -> None:
        self._peers.pop(str(peer), None)

    def _snapshot(self, s: _Watched) -> PeerLiveness:
        return PeerLiveness(s.node_id, s.status, EPOCH + s.heard_at, s.loop_lag_ms, s.process_count,
                            s.incarnation, s.heartbeats, s.heard_at)

    def status(self, peer: NodeId) -> PeerLiveness | None:
        state = self._peers.get(str(peer))
        return self._snapshot(state) if state is not None else None

    def peers(self) -> list[PeerLiveness]:
        return [self._snapshot(s) for s in self._peers.values()]

    # -- driven by loop timers -------------------------------------------------------------
    def _tick(self) -> None:
        self._timer = None
        if self.stopped or not self.host.alive:
            return
        loop = self.net.loop
        if self.host.paused:
            self.host.resumed.append(self._tick)  # a frozen process: nothing until it resumes
            return
        tick = loop.time()
        if tick - self._last_tick > max(self.timeout_s, 1.5 * self.interval_s):  # (the thread's rule)
            self.gaps += 1
        self._last_tick = tick
        held, self.host.held_datagrams = self.host.held_datagrams, []
        for data in held:
            self.receive(data)
        next_deadline = self._check_deadlines()
        now = loop.time()
        if now >= self._next_send - 1e-12:
            self._send_all()
            self._next_send += self.interval_s
            if self._next_send <= now:
                self._next_send = now + self.interval_s
        wake = min(self._next_send, next_deadline)
        self._timer = loop.call_at(wake, self._tick)

    def receive(self, data: bytes) -> None:
        if self.stopped:
            return
        hb = decode_heartbeat(data, self._secret)
        if hb is None or hb.receiver != self._text:
            return
        state = self._peers.get(hb.sender)
        if state is None or state.incarnation != hb.incarnation or hb.seq <= state.last_seq or state.status == "down":
            return
        state.last_seq = hb.seq
        state.heard_at = self.net.loop.time()
        state.loop_lag_ms, state.process_count = hb.loop_lag_ms, hb.process_count
        state.heartbeats += 1
        new = "busy" if hb.loop_lag_ms >= self.busy_threshold_ms else "up"
        if new != state.status:
            state.status = new
            self._emit(new, state)

    def _check_deadlines(self) -> float:
        now = self.net.loop.time()
        next_deadline = float("inf")
        for state in list(self._peers.values()):
            if state.status == "down":
                continue
            deadline = state.heard_at + state.timeout_s
            if now >= deadline - 1e-12:
                state.status = "down"
                self._emit("down", state)
            else:
                next_deadline = min(next_deadline, deadline)
        return next_deadline

    def _emit(self, kind: str, state: _Watched) -> None:
        self.net.record(f"liveness {self.host.name}: {state.node_id.name} {kind}")
        self._report(kind, state.node_id, self._snapshot(state))

    def _send_all(self) -> None:
        count = self._process_count()
        for state in list(self._peers.values()):
            if state.status == "down":
                continue
            self._seq += 1
            data = encode_heartbeat(Heartbeat(self._text, str(state.node_id), self.incarnation, self._seq, 0.0, count),
                                    self._secret)
            self.net.datagram(self.host, state.node_id, data)
