"""Hostile input on the receive side of a `noex-lab node` process (issue 12): an authenticated
peer made by hand (tests/helpers/raw_peer.py) sends messages spread over frames, chunked
messages that never end, hash-colliding keys, deep or wide values and floods of log-worthy
junk. Each test measures the node (peak memory, CPU time, its log) and checks that a
well-behaved peer's calls keep working, and keep their latency, meanwhile."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import msgpack
import pytest

from noex_lab import Cluster, GenServer, ProcessRef, RemoteSpawn
from noex_lab.core.node import Node
from noex_lab.distribution.codec import Codec
from noex_lab.distribution.protocol import CAST, CHUNK, RPC_CAST
from tests.helpers.cluster import NodeProcess, wait_until
from tests.helpers.hostile_peer import PeerClosed, RawPeer

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

SECRET = "hostile-decoding-test-secret"
MiB = 2**20
P = 2**61 - 1  # CPython's hash modulus: k and k + P hash alike


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # these tests measure an OS process; one backend is enough


async def _victim(procs: list[NodeProcess], *args: str) -> tuple[NodeProcess, Node, ProcessRef]:
    """A node process with an Echo process, and an in-process well-behaved peer joined to it."""
    victim = NodeProcess("victim", "--secret-env", "NOEX_HOSTILE_SECRET", "--behaviors",
                         "tests.distribution.behaviors_for_tests", *args, env={"NOEX_HOSTILE_SECRET": SECRET})
    procs.append(victim)
    victim_id = await victim.started()
    client = await Cluster.start("client", port=0, seeds=[str(victim_id)], cluster_secret=SECRET)
    await wait_until(lambda: any(i.id == victim_id for i in client.get_nodes()), 10.0, "client joined the victim")
    with client.as_default():
        echo = await RemoteSpawn.spawn("echo", victim_id)
        assert await GenServer.call(echo, "warm") == "warm"
    return victim, client, echo


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _calls_during(client: Node, echo: ProcessRef, work: Callable[[], Any]) -> tuple[list[float], Any]:
    """Run `work` in a thread; meanwhile the well-behaved peer calls Echo back to back.
    Returns every call's latency (inf for a failed call) and what `work` returned."""
    outcome: dict[str, Any] = {}
    done = anyio.Event()

    async def run() -> None:
        try:
            outcome["value"] = await anyio.to_thread.run_sync(work)
        except BaseException as exc:  # reported below, with the latencies
            outcome["error"] = exc
        finally:
            done.set()

    latencies: list[float] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with client.as_default():
            for i in range(100_000):
                if done.is_set():
                    break
                started = time.perf_counter()
                try:
                    assert await GenServer.call(echo, i, timeout=5.0) == i
                    latencies.append(time.perf_counter() - started)
                except Exception:
                    latencies.append(float("inf"))
    if "error" in outcome:
        raise outcome["error"]
    return latencies, outcome.get("value")


# ------------------------------------------------------------------ item 1: one message, many frames
@pytest.mark.timeout(90)
async def test_messages_spread_over_frames_or_chunks_are_bounded_by_max_message_bytes(
    procs: list[NodeProcess],
) -> None:
    limit = 8 * MiB
    victim, client, echo = await _victim(procs, "--max-message-bytes", str(limit))
    assert victim.id is not None
    port = victim.id.port
    start_hwm = _status_kib(victim.pid, "VmHWM") * 1024

    def spread_over_frames() -> int:
        """An array32 header in one frame, then 200 frames of a 1 MiB bin32 each."""
        blob = b"\xc6" + MiB.to_bytes(4, "big") + b"x" * MiB
        with RawPeer(port, SECRET) as peer:
            peer.send_frame(b"\xdd" + (200).to_bytes(4, "big"))
            sent = 0
            while sent < 200 and peer.send_raw(peer.frame(blob)):
                sent += 1
            peer.wait_closed(20.0)
        return sent

    def chunks_past_the_limit() -> int:
        """One chunked message that grows past max_message_bytes, 1 MiB a chunk."""
        body = msgpack.packb([CHUNK, 1, False, b"y" * MiB])
        with RawPeer(port, SECRET) as peer:
            sent = 0
            while sent < 40 and peer.send_raw(peer.frame(body)):
                sent += 1
            peer.wait_closed(20.0)
        return sent

    def many_chunked_messages() -> int:
        """Chunked messages that never end, a one-byte chunk each: their count is bounded."""
        with RawPeer(port, SECRET) as peer:
            frames = b"".join(peer.frame(body)
                              for body in (msgpack.packb([CHUNK, i, False, b"z"]) for i in range(1, 200_001)))
            peer.send_raw(frames)
            peer.wait_closed(20.0)
        return 200_000

    for attack in (spread_over_frames, chunks_past_the_limit, many_chunked_messages):
        latencies, _ = await _calls_during(client, echo, attack)
        grown = _status_kib(victim.pid, "VmHWM") * 1024 - start_hwm
        assert grown < limit + 30 * MiB, f"{attack.__name__}: peak memory grew by {grown / MiB:.0f} MiB"
        assert max(latencies) < 1.0, f"{attack.__name__}: a call took {max(latencies):.3f} s"
    with client.as_default():
        assert await GenServer.call(echo, "still serving") == "still serving"


# ------------------------------------------------------------------ item 2: decoding costs linear time
_X1, _X2, _X5, _U64 = 11400714785074694791, 14029467366897019727, 2870177450012600261, 2**64


def _lane(acc: int, lane: int) -> int:
    """One round of CPython's tuple hash (xxHash's, 64-bit)."""
    acc = (acc + lane * _X2) % _U64
    acc = ((acc << 31) | (acc >> 33)) % _U64
    return (acc * _X1) % _U64


def _colliding_pairs(count: int) -> list[tuple[int, int]]:
    """`count` distinct 2-tuples of ints with one same hash: for each first item the second is
    solved for, and kept when it is an int that hashes to itself (below 2**61 - 1)."""
    target = hash((1, 1)) % _U64
    # _lane(_lane(X5, first), second) + tail == target  <=>  acc + second * X2 == rotr31(...)
    want = (target - (2 ^ (_X5 ^ 3527539))) * pow(_X1, -1, _U64) % _U64
    want = ((want >> 31) | (want << 33)) % _U64
    inverse_x2 = pow(_X2, -1, _U64)
    pairs: list[tuple[int, int]] = []
    for first in range(2, 50 * count):
        second = (want - _lane(_X5, first)) * inverse_x2 % _U64
        if second < P:
            pairs.append((first, second))
            if len(pairs) == count:
                break
    assert len({hash(pair) for pair in pairs}) == 1 and len({first for first, _ in pairs}) == count
    return pairs


def _colliding_floats(classes: int) -> list[float]:
    """Floats in `classes` groups of 32 that hash alike: m * 2**(61 j) for j in -16..15."""
    out = []
    for m in range(1, 2 * classes, 2):
        group = [m * 2.0 ** (61 * j) for j in range(-16, 16)]
        assert len({hash(x) for x in group}) == 1
        out.extend(group)
    return out


HOSTILE: dict[str, Callable[[], Any]] = {
    "(harmless: 1 MiB of bytes)": lambda: b"b" * MiB,
    # one map: more than 32 keys share a hash -> refused
    "colliding int keys": lambda: _raw_map(_CODEC.encode(k * P + 7) for k in range(1, 75_000)),
    "colliding tuple keys": lambda: _raw_map(
        (b"\x93\xc7\x00\x10" + msgpack.packb(a) + msgpack.packb(b) for a, b in _colliding_pairs(42_000)), wrapped=True
    ),
    # maps of at most 32 colliding keys each: built, at a bounded cost per key
    "maps of 32 colliding int keys": lambda: [{k * P + i: 0 for k in range(1, 33)} for i in range(2_300)],
    "colliding float keys": lambda: dict.fromkeys(_colliding_floats(3_000), 0),
    "sets of 32 colliding ints": lambda: [{k * P + i for k in range(1, 33)} for i in range(2_600)],
    "deep nesting": lambda: _Raw(b"\x91" * MiB + b"\xc0", wrapped=False),
    "many tiny lists": lambda: [[] for _ in range(MiB)],
    "many tiny tuples": lambda: [() for _ in range(MiB // 4)],
    "many tiny maps": lambda: [{} for _ in range(MiB)],
}


class _Raw:
    """The encoded payload as bytes: built by hand (building the value itself could take the
    quadratic time under test, or the codec would refuse to encode it)."""

    def __init__(self, data: bytes, wrapped: bool) -> None:
        self.data = data
        self.wrapped = wrapped  # it holds a tuple: the message must be a WRAPPED ext


_CODEC = Codec()


def _raw_map(keys: Iterable[bytes], wrapped: bool = False) -> _Raw:
    """A map of encoded keys, each to 0."""
    items = [key + b"\x00" for key in keys]
    return _Raw(b"\xdf" + len(items).to_bytes(4, "big") + b"".join(items), wrapped)


def _hostile_cast(echo: ProcessRef, payload: Any) -> bytes:
    if not isinstance(payload, _Raw):
        return _CODEC.encode([CAST, echo.id, echo.creation, payload])
    message = b"\x94" + b"".join(msgpack.packb(item) for item in (CAST, echo.id, echo.creation)) + payload.data
    if payload.wrapped:
        return b"\xc9" + len(message).to_bytes(4, "big") + b"\x00" + message
    return message


@pytest.mark.timeout(120)
async def test_no_hostile_message_of_1_mib_delays_another_peers_calls_by_100_ms(procs: list[NodeProcess]) -> None:
    payloads = {name: build() for name, build in HOSTILE.items()}  # before the nodes start: it takes a while
    victim, client, echo = await _victim(procs)
    assert victim.id is not None
    messages = {name: _hostile_cast(echo, payload) for name, payload in payloads.items()}
    del payloads  # millions of tiny containers: this process's collector would walk them all
    report = []
    # The well-behaved peer lives in this pytest process, whose heap holds what a thousand tests
    # left: a collection of it alone can pause this loop ~60 ms. Frozen, the collector passes
    # over this process's old objects, so what is measured is the delay the victim node causes.
    gc.collect()
    gc.freeze()
    try:
        await _measure_each(messages, victim, client, echo, report)
    finally:
        gc.unfreeze()

    text = "\n".join(f"{n:32s} {o:8s} max call {lat * 1000:7.1f} ms  victim cpu {c:5.2f} s  calls {k}"
                     for n, o, lat, c, k in report)
    assert all(lat < 0.100 for _, _, lat, _, _ in report), text
    assert all(c < 1.0 for _, _, _, c, _ in report), text
    print(text)


async def _measure_each(messages: dict[str, bytes], victim: NodeProcess, client: Any, echo: ProcessRef,
                        report: list[tuple[str, str, float, float, int]]) -> None:
    """Send each hostile message from a raw peer while `client` keeps calling `echo`."""
    assert victim.id is not None
    port = victim.id.port
    for name, body in messages.items():
        assert 0.7 * MiB < len(body) < 1.3 * MiB, (name, len(body))

        def attack(body: bytes = body) -> tuple[str, float]:
            with RawPeer(port, SECRET) as peer:
                cpu = _cpu_s(victim.pid)
                peer.send_frame(body)
                try:
                    assert peer.call(echo.id, echo.creation, "probe", timeout=30.0) == "probe"
                    outcome = "served"  # decoded, or refused alone: the connection keeps serving
                except PeerClosed:
                    outcome = "closed"
                return outcome, _cpu_s(victim.pid) - cpu

        latencies, (outcome, cpu) = await _calls_during(client, echo, attack)
        report.append((name, outcome, max(latencies), cpu, len(latencies)))


# ------------------------------------------------------------------ item 10: the log stays small
@pytest.mark.timeout(60)
async def test_warnings_about_a_peer_are_rate_limited_and_quote_little_of_what_it_sent(
    procs: list[NodeProcess],
) -> None:
    victim, client, echo = await _victim(procs)
    assert victim.id is not None
    port = victim.id.port
    logged_before = len(victim.stderr)

    def flood() -> None:
        with RawPeer(port, SECRET) as peer:
            for i in range(20):  # 20 notifications nobody handles, named by 1 MiB of text each
                peer.send_message([RPC_CAST, f"op{i}-" + "x" * MiB, None])
            assert peer.call(echo.id, echo.creation, "probe") == "probe"
            started = time.monotonic()
            for _ in range(20_000):  # more of them, paced by round trips, until the next second's
                if time.monotonic() - started > 10.0 or any("suppressed" in line for line in victim.stderr):
                    break  # first warning says how many were left out
                peer.send_message([RPC_CAST, "late", None])
                assert peer.call(echo.id, echo.creation, "probe") == "probe"
        with RawPeer(port, SECRET, name="raw2") as peer:  # an unknown message type closes the link
            peer.send_message([99, "y" * MiB])
            peer.wait_closed(10.0)

    latencies, _ = await _calls_during(client, echo, flood)
    await wait_until(lambda: any("unknown message" in line for line in victim.stderr), 5.0, "the close logged")
    lines = victim.stderr[logged_before:]
    total = sum(len(line) for line in lines)
    assert total < 20_000, f"{total} characters of log: {[line[:120] for line in lines[:10]]}"
    assert max(len(line) for line in lines) < 1000
    assert any("suppressed" in line for line in lines), lines
    assert sum("unknown system notification" in line for line in lines) <= 15, lines
    assert max(latencies) < 1.0


# ------------------------------------------------------------------ a flood of small messages
@pytest.mark.timeout(90)
async def test_a_flood_of_lone_casts_neither_stalls_the_loop_nor_loses_a_message(procs: list[NodeProcess]) -> None:
    """A peer writes small casts as fast as its socket takes them, each in its own frame (the
    reader hands a lone message to an idle process in place, up to a budget per loop turn):
    another peer's calls still finish within 100 ms each, and every cast arrives."""
    victim, client, echo = await _victim(procs)
    with client.as_default():
        sink = await RemoteSpawn.spawn("echo", victim.id)
        assert await GenServer.call(sink, "get") == 0
    hwm_before = _status_kib(victim.pid, "VmHWM")
    # (a call behind the casts on the same connection answers once every one was handled)
    latencies, (sent, counted, cpu) = await _calls_during(client, echo, _lone_casts(victim, sink, sink))
    grew_mib = (_status_kib(victim.pid, "VmHWM") - hwm_before) / 1024  # (the sink's mailbox: unbounded by default)
    assert counted == sent, f"{sent - counted} of {sent} casts lost"
    assert len(latencies) > 50, f"only {len(latencies)} calls during the flood"
    worst = max(latencies)
    print(f"flood: {sent} casts, victim CPU {cpu:.2f} s, peak RSS +{grew_mib:.0f} MiB, "
          f"{len(latencies)} calls during it, worst {worst * 1e3:.1f} ms")
    assert worst < 0.1, f"a call waited {worst * 1e3:.0f} ms behind the flood ({sent} casts)"


@pytest.mark.timeout(90)
async def test_a_bounded_mailbox_bounds_what_a_flood_of_casts_costs(procs: list[NodeProcess]) -> None:
    """The same flood at a sink spawned with `max_mailbox=` (docs/concepts/security.md, what the
    bounds leave to the application): the victim's peak RSS stays within a few MiB, where the
    unbounded sink above grows it by ~72 MiB, and the node keeps serving meanwhile."""
    victim, client, echo = await _victim(procs)
    with client.as_default():
        sink = await RemoteSpawn.spawn("echo", victim.id, max_mailbox=1_000)
    hwm_before = _status_kib(victim.pid, "VmHWM")
    # (the confirming call goes to Echo: the sink's full mailbox may refuse a call)
    latencies, (sent, _, cpu) = await _calls_during(client, echo, _lone_casts(victim, sink, echo))
    grew_mib = (_status_kib(victim.pid, "VmHWM") - hwm_before) / 1024
    with client.as_default():
        counted = await GenServer.call(sink, "get")  # (the mailbox is drained: the confirming call came after)
    print(f"bounded flood: {sent} casts, {counted} handled, victim CPU {cpu:.2f} s, peak RSS +{grew_mib:.1f} MiB, "
          f"worst call {max(latencies) * 1e3:.1f} ms")
    assert 0 < counted < sent
    assert grew_mib < 8, f"peak RSS grew by {grew_mib:.1f} MiB under a flood at a bounded mailbox"
    assert max(latencies) < 0.1


def _lone_casts(victim: NodeProcess, sink: ProcessRef, confirm: ProcessRef) -> Callable[[], tuple[int, Any, float]]:
    """Work for `_calls_during`: a raw peer writes small casts to `sink`, each in its own frame,
    as fast as its socket takes them (at most 800,000 or 3 s), then calls `confirm` "get" on the
    same connection (closing with the node's heartbeats unread would reset the connection, casts
    unread). Returns (casts sent, the reply, the victim's CPU seconds meanwhile)."""
    assert victim.id is not None
    port = victim.id.port
    batch, batches, seconds = 2_000, 400, 3.0

    def flood() -> tuple[int, Any, float]:
        with RawPeer(port, SECRET) as peer:
            cpu = _cpu_s(victim.pid)
            body = peer.codec.encode([CAST, sink.id, sink.creation, "inc"])
            sent = 0
            started = time.monotonic()
            for _ in range(batches):  # bounded in count and in time
                if time.monotonic() - started > seconds:
                    break
                if not peer.send_raw(b"".join(peer.frame(body) for _ in range(batch))):
                    raise AssertionError(f"the node closed the connection after {sent} casts: {victim.stderr[-3:]}")
                sent += batch
            reply = peer.call(confirm.id, confirm.creation, "get", timeout=60.0)
            return sent, reply, _cpu_s(victim.pid) - cpu

    return flood

