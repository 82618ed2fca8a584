"""Hostile peers against the handshake, on real TCP: who proves first, what one recorded proof is
worth, per-connection session keys, refusals that say why, suppressed log lines that are still
reported, and pending handshakes bounded per source address. Each test also checks that a
well-behaved member keeps working while it happens."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from typing import Any

import anyio
import anyio.abc
import pytest

from noex_lab import Cluster, GenServer, Node
from noex_lab.core.node_id import NodeId
from noex_lab.core.refs import ProcessRef
from noex_lab.distribution import handshake as hs
from noex_lab.distribution.transport import MAX_PENDING_PER_ADDRESS
from tests.distribution.behaviors_for_tests import Echo
from tests.helpers.cluster import wait_until
from tests.helpers.raw_peer import RawPeer, close_all, closed_by_peer, hello, open_idle

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

SECRET = "a long cluster secret for these tests"
KEY = hs.derive_key(SECRET.encode())


async def _member(a: Node, secret: str | None = SECRET) -> tuple[Node, ProcessRef]:
    """A well-behaved peer joined to `a`, and an Echo on `a` it calls to show it keeps working."""
    b = await Cluster.start("member", port=0, seeds=[str(a.id)], cluster_secret=secret)
    await wait_until(lambda: any(i.id == b.id for i in a.get_nodes()), 5.0, "the member joined")
    with a.as_default():
        ref = await GenServer.start(Echo)
    await _still_works(b, ref)
    return b, ref


async def _still_works(b: Node, ref: ProcessRef) -> None:
    with b.as_default():
        assert await GenServer.call(ref, "ping", timeout=5) == "ping"


async def _port(node: Node) -> int:
    assert node.id is not None
    return node.id.port


async def test_the_dialer_proves_first_and_a_stranger_never_gets_a_proof() -> None:
    a = await Cluster.start("a", port=0, cluster_secret=SECRET)
    b, ref = await _member(a)
    port = await _port(a)

    stranger = await RawPeer.connect(port)
    me = hello("stranger")
    await stranger.send_hello(me)
    welcome = await stranger.receive()
    assert welcome is not None and welcome[0] == hs.WELCOME
    theirs = hs.parse_hello(welcome, hs.WELCOME)
    # the challenge holds the acceptor's hello and nothing derived from the key
    assert [f for f in welcome if isinstance(f, bytes)] == [theirs.nonce]
    await stranger.send(hs.PROOF, bytes(32))
    refusal = await stranger.receive()
    assert refusal is not None and refusal[0] == hs.REFUSE and "wrong cluster secret" in refusal[1]
    assert await stranger.receive() is None  # closed, and no proof ever sent
    await stranger.aclose()
    await _still_works(b, ref)

    # Whoever holds the key proves itself first, and only then gets the acceptor's proof.
    honest = await RawPeer.connect(port)
    me = hello("honest")
    await honest.send_hello(me)
    welcome = await honest.receive()
    assert welcome is not None
    theirs = hs.parse_hello(welcome, hs.WELCOME)
    await honest.send(hs.PROOF, hs.proof(KEY, b"C", me, theirs))
    accept = await honest.receive()
    assert accept is not None and accept[0] == hs.ACCEPT
    assert hs.verify(hs.proof(KEY, b"S", me, theirs), accept[1])
    await honest.aclose()
    await _still_works(b, ref)


async def test_a_recorded_proof_costs_one_scrypt_per_guess_and_a_weak_secret_is_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The one proof an attacker can record (as the acceptor a node chose to dial) is keyed with
    scrypt: the 1 ms dictionary attack on HMAC(secret) finds nothing, and each scrypt guess costs
    tens of milliseconds."""
    caplog.set_level(logging.WARNING, logger="noex_lab")
    weak = "sunshine2024"
    recorded: dict[str, Any] = {}
    got_proof = anyio.Event()

    async def impostor(stream: anyio.abc.SocketStream) -> None:
        peer = RawPeer(stream)
        fields = await peer.receive()
        assert fields is not None
        me = hs.PeerHello(hs.PROTOCOL_VERSION, NodeId("impostor", "127.0.0.1", port), 1, hs.new_nonce(), True)
        await peer.send_body(hs.encode_hello(hs.WELCOME, me))
        answer = await peer.receive()
        if answer is not None and answer[0] == hs.PROOF and not got_proof.is_set():
            recorded.update(c=hs.parse_hello(fields, hs.HELLO), s=me, proof=answer[1])
            got_proof.set()
        await peer.aclose()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, impostor)
        a = await Cluster.start("weak", port=0, cluster_secret=weak, seeds=[f"impostor@127.0.0.1:{port}"])
        with anyio.fail_after(5):
            await got_proof.wait()
        b, ref = await _member(a, weak)
        tg.cancel_scope.cancel()
    await listener.aclose()
    assert any("cluster secret is weak" in r.getMessage() and "word with digits" in r.getMessage()
               for r in caplog.records)

    words = ["password", "letmein", "dragon", "monkey", "sunshine", "princess", "qwerty", "football"]
    guesses = [f"{w}{y}" for w in words for y in (2023, 2024)]
    material = (recorded["c"], recorded["s"])

    def matches(key: bytes) -> bool:
        return hmac.compare_digest(hs.proof(key, b"C", *material), recorded["proof"])

    assert not any(matches(g.encode()) for g in guesses)  # the old attack: HMAC keyed by the guess
    costs = []
    found = []
    for guess in guesses[guesses.index("sunshine2023"):][:3]:
        t0 = time.perf_counter()
        key = hashlib.scrypt(guess.encode(), salt=hs.KDF_SALT, n=hs.KDF_N, r=hs.KDF_R, p=hs.KDF_P,
                             maxmem=hs.KDF_MAXMEM, dklen=32)
        costs.append(time.perf_counter() - t0)
        if matches(key):
            found.append(guess)
    assert found == [weak]  # the key really is scrypt(secret): a guess is checkable, but dearly
    assert min(costs) > 0.010, f"one guess cost only {min(costs) * 1000:.1f} ms"
    await _still_works(b, ref)


async def test_every_connection_gets_its_own_session_key_known_to_both_sides() -> None:
    a = await Cluster.start("a", port=0, cluster_secret=SECRET)
    b = await Cluster.start("b", port=0, seeds=[str(a.id)], cluster_secret=SECRET)
    c = await Cluster.start("c", port=0, seeds=[str(a.id)], cluster_secret=SECRET)
    nodes = (a, b, c)
    await wait_until(lambda: all(len(n.get_nodes()) == 2 for n in nodes), 5.0, "a mesh of 3")

    def key(x: Node, y: Node) -> bytes | None:
        conn = x.distribution.transport.conns.get(y.id)
        return None if conn is None else conn.session_key

    keys = {frozenset((x.id, y.id)): key(x, y) for x in nodes for y in nodes if x is not y}
    for x in nodes:
        for y in nodes:
            if x is not y:
                assert key(x, y) == key(y, x) and isinstance(key(x, y), bytes) and len(key(x, y) or b"") == 32
    assert len(set(keys.values())) == 3 and KEY not in keys.values()

    old = key(a, b)
    a.distribution.transport.conns[b.id].close("connection_closed")  # the same pair connects again
    await wait_until(lambda: key(a, b) not in (None, old) and key(b, a) == key(a, b), 5.0, "a new a-b connection")
    assert key(a, b) not in keys.values()

    o1 = await Cluster.start("o1", port=0)
    o2 = await Cluster.start("o2", port=0, seeds=[str(o1.id)])
    await wait_until(lambda: o1.get_nodes() and o1.distribution.transport.conns.get(o2.id), 5.0, "open pair")
    assert key(o1, o2) is None and key(o2, o1) is None  # no secret, no session key


async def test_a_version_mismatch_is_refused_and_both_sides_say_which_versions(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="noex_lab")
    a = await Cluster.start("a", port=0, cluster_secret=SECRET)
    b, ref = await _member(a)
    port = await _port(a)

    old = await RawPeer.connect(port)  # a node of an older release dials
    await old.send_hello(hello("old", version=2))
    refusal = await old.receive()
    assert refusal is not None and refusal[0] == hs.REFUSE
    assert f"protocol version 2, this node speaks {hs.PROTOCOL_VERSION}" in refusal[1]
    await old.aclose()
    await wait_until(lambda: "speaks protocol version 2" in caplog.text, 3.0, "the acceptor's log line")

    async def newer(stream: anyio.abc.SocketStream) -> None:  # a node of a newer release accepts
        peer = RawPeer(stream)
        await peer.receive()
        future = hs.PeerHello(hs.PROTOCOL_VERSION + 1, NodeId("newer", "127.0.0.1", newer_port), 1,
                              hs.new_nonce(), True)
        await peer.send_body(hs.encode_hello(hs.WELCOME, future))
        await peer.receive()
        await peer.aclose()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    newer_port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, newer)
        with a.as_default():
            await a.distribution.transport.dial(NodeId("newer", "127.0.0.1", newer_port))
        tg.cancel_scope.cancel()
    await listener.aclose()
    expected = f"protocol version {hs.PROTOCOL_VERSION + 1}, this node speaks {hs.PROTOCOL_VERSION}"
    assert any(expected in r.getMessage() for r in caplog.records), caplog.text
    await _still_works(b, ref)


async def test_refusals_hidden_by_the_log_limiter_are_summarized(caplog: pytest.LogCaptureFixture) -> None:
    """A decoy failure, then wrong-secret attempts from the same host within the same second:
    the limiter keeps one line per second, and a summary line names what it held back."""
    caplog.set_level(logging.WARNING, logger="noex_lab")
    a = await Cluster.start("a", port=0, cluster_secret=SECRET)
    b, ref = await _member(a)
    port = await _port(a)
    decoy = await RawPeer.connect(port)
    await decoy.send_body(b"\xc1" * 16)  # malformed
    assert await decoy.receive() is None
    await decoy.aclose()
    for i in range(3):
        guesser = await RawPeer.connect(port)
        me = hello(f"guesser{i}")
        await guesser.send_hello(me)
        welcome = await guesser.receive()
        assert welcome is not None
        await guesser.send(hs.PROOF, hs.proof(hs.derive_key(b"sunshine2024"), b"C", me,
                                              hs.parse_hello(welcome, hs.WELCOME)))
        refusal = await guesser.receive()
        assert refusal is not None and refusal[0] == hs.REFUSE
        await guesser.aclose()
    await _still_works(b, ref)
    summary = re.compile(r"(\d+) more refused from 127\.0\.0\.1 \(suppressed\); the last: .*guesser2.* "
                         r"failed authentication")

    def summarized() -> list[str]:
        return [m.group(1) for r in caplog.records if (m := summary.search(r.getMessage()))]

    counts = await wait_until(summarized, 3.0, "a summary of the suppressed refusals")
    named = sum(1 for r in caplog.records if "failed authentication" in r.getMessage()
                and "suppressed" not in r.getMessage())
    assert named + int(counts[0]) == 3, caplog.text  # every attempt is in a line or in the summary
    assert a.distribution.transport.auth_failures == 4


async def test_pending_handshakes_are_bounded_per_source_address() -> None:
    """300 idle connections from 127.0.0.2 displace only each other: a slow handshake from
    127.0.0.1 that is still pending survives, and a new member from 127.0.0.1 joins at once."""
    a = await Cluster.start("a", port=0, cluster_secret=SECRET)
    b, ref = await _member(a)
    port = await _port(a)
    transport = a.distribution.transport
    slow = await RawPeer.connect(port)  # a legitimate dialer that is slow to prove itself
    me = hello("slow")
    await slow.send_hello(me)
    welcome = await slow.receive()
    assert welcome is not None
    flood = open_idle(port, 300, source="127.0.0.2")
    try:
        await wait_until(lambda: transport.pending.shed >= 300 - MAX_PENDING_PER_ADDRESS, 5.0, "the flood shed")
        assert transport.pending.count("127.0.0.2") <= MAX_PENDING_PER_ADDRESS
        await wait_until(lambda: sum(map(closed_by_peer, flood)) >= 300 - MAX_PENDING_PER_ADDRESS, 5.0,
                         "the oldest idle connections closed")
        assert transport.pending.count("127.0.0.1") == 1  # the slow one, still pending
        await slow.send(hs.PROOF, hs.proof(KEY, b"C", me, hs.parse_hello(welcome, hs.WELCOME)))
        accept = await slow.receive()
        assert accept is not None and accept[0] == hs.ACCEPT
        started = time.monotonic()
        c = await Cluster.start("c", port=0, seeds=[str(a.id)], cluster_secret=SECRET)
        await wait_until(lambda: any(i.id == c.id for i in a.get_nodes()), 2.0, "a new member joined")
        assert time.monotonic() - started < 2.0
        await _still_works(b, ref)
    finally:
        close_all(flood)
        await slow.aclose()
    await wait_until(lambda: transport.pending_handshakes == 0, 8.0, "pending handshakes released")


@pytest.mark.timeout(10)
async def test_the_limiter_summary_names_every_kind_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    """Wrong-secret attempts held back between two refusals of another kind are named in the
    summary line, not only the last refusal (a decoy must not hide them)."""
    from noex_lab.distribution.transport import _RateLimitedLog

    now = [100.0]
    limiter = _RateLimitedLog(period_s=1.0, monotonic=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="noex_lab")
    limiter.warning("127.0.0.1:5000", "refused %s: requires a cluster_secret", "open1")
    for i in range(3):
        limiter.warning(f"127.0.0.1:{5001 + i}", "%s failed authentication", f"guesser{i}")
    limiter.warning("127.0.0.1:5009", "refused %s: requires a cluster_secret", "open2")
    assert len(caplog.records) == 1  # held back within the second
    now[0] += 1.0
    limiter.flush()
    summary = caplog.records[-1].getMessage()
    assert summary == ("4 more refused from 127.0.0.1 (suppressed); the last: refused open2: requires a "
                       "cluster_secret; also 3 x guesser2 failed authentication"), summary
