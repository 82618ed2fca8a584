"""The fault layer as a real network fault: cuts that send nothing (both ways, one way), resets,
slow and lossy links, and the system request that sets the rules of `noex-lab node` processes.

Real TCP on 127.0.0.1 and real heartbeats; "detected within the bound" means a node_down with
the expected reason no later than the heartbeat timeout plus a margin for this loaded machine."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from noex_lab import Cluster, GenServer, InvalidArgumentError, NotPermittedError, heal, partition
from noex_lab.core.node import Node
from noex_lab.core.node_id import NodeId
from noex_lab.distribution.faults import FaultControl, Faults, heal_nodes, partition_nodes, shape
from tests.distribution.behaviors_for_tests import Echo
from tests.helpers.cluster import NodeProcess, start_cluster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

BEAT_MS, MISSES = 200, 3  # start_cluster's fast heartbeats: a silent peer is down after 0.6 s
TIMEOUT_S = BEAT_MS * MISSES / 1000
MARGIN_S = 1.0  # scheduling on a loaded 2-core machine
SECRET = "fault-injection-test-secret"

Downs = dict[Any, list[tuple[Any, str, float]]]


def record_downs(*nodes: Node) -> Downs:
    """node id -> [(peer, reason, monotonic time)] of every node_down it reports."""
    seen: Downs = {n.id: [] for n in nodes}
    for n in nodes:
        n.on_node_down(lambda peer, reason, n=n: seen[n.id].append((peer, reason, time.monotonic())))
    return seen


async def stays_false(predicate: Callable[[], bool], window: float, what: str) -> None:
    """Observe for `window` seconds that `predicate` never holds (an observation, not a wait)."""
    with anyio.move_on_after(window):
        await wait_until(predicate, window + 5.0, what)
        raise AssertionError(what)


async def healed(nodes: list[Node], deadline: float = 8.0) -> None:
    """Every node sees all the others again, and a call crosses each pair."""
    await wait_until(lambda: all(len(n.get_nodes()) == len(nodes) - 1 for n in nodes), deadline, "mesh after heal")
    for n in nodes:
        with n.as_default():
            ref = await GenServer.start(Echo)
        for m in nodes:
            with m.as_default():
                assert await GenServer.call(ref, "ping", timeout=2.0) == "ping"


# -- cuts -------------------------------------------------------------------------------------------


async def test_blackhole_both_ways_is_found_only_by_heartbeats_and_heals_cleanly() -> None:
    a, b = await start_cluster(2)
    downs = record_downs(a, b)
    t0 = time.monotonic()
    partition([a], [b])  # mode="blackhole" by default
    await wait_until(lambda: downs[a.id] and downs[b.id], TIMEOUT_S + MARGIN_S, "both sides see the other down")
    for node in (a, b):
        [(peer, reason, at)] = downs[node.id]
        # no FIN crossed: each side learned from its own heartbeats, not from the other's close
        assert reason == "heartbeat_timeout", downs
        assert TIMEOUT_S * 0.8 <= at - t0 <= TIMEOUT_S + MARGIN_S, at - t0
    # closed locally, nothing sent: the sockets stay open (parked) until the heal
    assert a.faults.parked() == 1 and b.faults.parked() == 1
    # and redials are cut too: nobody connects while the cut lasts
    await stays_false(lambda: bool(a.get_nodes() or b.get_nodes()), 0.5, "a redial crossed the cut")
    t1 = time.monotonic()
    heal(a, b)
    await healed([a, b])
    print(f"\nblackhole: down after {max(d[0][2] for d in downs.values()) - t0:.2f} s "
          f"(timeout {TIMEOUT_S} s); mesh again {time.monotonic() - t1:.2f} s after the heal")
    assert a.faults.parked() == 0 and b.faults.parked() == 0


async def test_a_cut_shorter_than_the_timeout_loses_nothing() -> None:
    a, b = await start_cluster(2, heartbeat_interval_ms=300, heartbeat_miss_threshold=10)  # down after 3 s
    downs = record_downs(a, b)
    with b.as_default():
        ref = await GenServer.start(Echo)
    partition([a], [b])
    with a.as_default():
        for _ in range(50):
            GenServer.cast(ref, "inc")  # held on a while the cable is out, as TCP would retransmit them
    assert b.local_process(ref).state["count"] == 0
    await stays_false(lambda: b.local_process(ref).state["count"] > 0, 0.3, "a frame crossed the cut")
    heal(a, b)
    with a.as_default():
        assert await GenServer.call(ref, "get", timeout=3.0) == 50  # every cast, in order, once
    assert downs == {a.id: [], b.id: []}


@pytest.mark.parametrize("direction", ["out", "in"])
async def test_one_way_cut_on_one_node_is_detected_by_the_side_that_stops_hearing(direction: str) -> None:
    a, b = await start_cluster(2)
    downs = record_downs(a, b)
    t0 = time.monotonic()
    a.faults.drop(b.id, direction=direction)  # "out": b stops hearing a; "in": a stops hearing b
    deaf, other = (b, a) if direction == "out" else (a, b)
    await wait_until(lambda: downs[deaf.id], TIMEOUT_S + MARGIN_S, "the deaf side sees the other down")
    [(_, reason, at)] = downs[deaf.id]
    assert reason == "heartbeat_timeout" and at - t0 >= TIMEOUT_S * 0.8, (reason, at - t0)
    # the side that still hears is told by the deaf side: it stops sending heartbeats to a peer it
    # declared down, and its close crosses when its own direction is not cut
    await wait_until(lambda: downs[other.id], 2 * TIMEOUT_S + MARGIN_S, "the other side follows")
    await stays_false(lambda: bool(a.get_nodes() or b.get_nodes()), 0.5, "a redial crossed the one-way cut")
    a.faults.heal()
    await healed([a, b])


async def test_one_way_partition_of_sides() -> None:
    a, b, c = await start_cluster(3)
    downs = record_downs(a, b, c)
    partition([a], [b, c], one_way=True)  # b and c stop hearing a; a still hears them
    await wait_until(lambda: downs[b.id] and downs[c.id], TIMEOUT_S + MARGIN_S, "b and c lose a")
    assert {(p, r) for p, r, _ in downs[b.id] + downs[c.id]} == {(a.id, "heartbeat_timeout")}
    await wait_until(lambda: not a.get_nodes(), 2 * TIMEOUT_S + MARGIN_S, "a loses them too")
    assert [i.id for i in b.get_nodes()] == [c.id]
    heal(a, b, c)
    await healed([a, b, c])


async def test_reset_closes_at_once() -> None:
    a, b = await start_cluster(2, heartbeat_interval_ms=500)  # heartbeat timeout 1.5 s
    downs = record_downs(a, b)
    t0 = time.monotonic()
    partition([a], [b], mode="reset")
    await wait_until(lambda: downs[a.id] and downs[b.id], 1.0, "both sides see the reset")
    for node in (a, b):
        [(_, reason, at)] = downs[node.id]
        assert reason == "connection_closed" and at - t0 < 1.0, (reason, at - t0)
    assert a.faults.parked() == b.faults.parked() == 0
    await stays_false(lambda: bool(a.get_nodes() or b.get_nodes()), 0.3, "a redial crossed the reset cut")
    heal(a, b)
    await healed([a, b])


# -- slow and lossy links ------------------------------------------------------------------------------


async def test_latency_and_jitter_keep_fifo_and_are_not_a_failure() -> None:
    a, b = await start_cluster(2)
    downs = record_downs(a, b)
    with b.as_default():
        ref = await GenServer.start(Echo)
    shape(a, b, latency_ms=100, jitter_ms=100)
    with a.as_default():
        t0 = time.monotonic()
        assert await GenServer.call(ref, "ping", timeout=3.0) == "ping"
        rtt = time.monotonic() - t0
        for _ in range(200):
            GenServer.cast(ref, "inc")
        assert await GenServer.call(ref, "get", timeout=5.0) == 200  # no cast overtaken or lost
    print(f"\nlatency 100 ms + jitter 0..100 ms each way: call round trip {rtt * 1000:.0f} ms")
    assert 0.2 <= rtt < 0.2 + 0.2 + MARGIN_S
    await stays_false(lambda: bool(downs[a.id] or downs[b.id]), 2 * TIMEOUT_S, "latency taken for a failure")
    heal(a, b)


async def test_loss_delays_the_stream_and_never_drops_or_reorders() -> None:
    a, b = await start_cluster(2, heartbeat_interval_ms=300, heartbeat_miss_threshold=10)
    with b.as_default():
        ref = await GenServer.start(Echo)
    shape(a, b, loss=0.5)  # half the writes wait a retransmission timeout, holding up what follows
    slow = 0
    with a.as_default():
        for i in range(1, 11):
            GenServer.cast(ref, "inc")
            t0 = time.monotonic()
            assert await GenServer.call(ref, "get", timeout=5.0) == i
            slow += time.monotonic() - t0 >= 0.2
    assert slow >= 2, slow  # (P(fewer) < 1e-4 at 75 % per round trip)
    heal(a, b)


async def test_no_false_downs_at_5_percent_loss_and_100_ms_jitter_with_default_heartbeats() -> None:
    a, b = await start_cluster(2, fast=False)  # the defaults: 5 s heartbeats, down after 3 misses
    downs = record_downs(a, b)
    with b.as_default():
        ref = await GenServer.start(Echo)
    shape(a, b, jitter_ms=100, loss=0.05)
    t0 = time.monotonic()
    with a.as_default():
        for i in range(1, 31):  # ~3 s of traffic through the jittery, lossy link
            GenServer.cast(ref, "inc")
            assert await GenServer.call(ref, "get", timeout=5.0) == i
    assert downs == {a.id: [], b.id: []} and len(a.get_nodes()) == 1
    print(f"\n5 % loss, 100 ms jitter: 30 round trips in {time.monotonic() - t0:.2f} s, no down")
    heal(a, b)


async def test_latency_above_the_heartbeat_timeout_is_detected_as_down() -> None:
    """A link's latency delays heartbeats too: 1 s each way against a 0.6 s timeout is a
    failure, found by heartbeats within the bound (nothing else closes the connection), and
    heals cleanly. Before, only TCP writes were delayed and such a link was never detected."""
    a, b = await start_cluster(2)
    downs = record_downs(a, b)
    t0 = time.monotonic()
    shape(a, b, latency_ms=1000)
    await wait_until(lambda: bool(downs[a.id] and downs[b.id]), TIMEOUT_S + 1.0 + MARGIN_S, "both sides down")
    # the first side to notice does so by heartbeats; the other may learn it from that side's
    # close of the connection (no partition holds its FIN back) or by heartbeats as well
    first = min((d[0] for d in downs.values()), key=lambda down: down[2])
    assert first[1] == "heartbeat_timeout", downs
    for n, other in ((a, b), (b, a)):
        peer, reason, at = downs[n.id][0]
        assert peer == other.id and reason in ("heartbeat_timeout", "connection_closed"), downs
        assert at - t0 <= TIMEOUT_S + BEAT_MS / 1000 + MARGIN_S
    print(f"\n1 s latency, 0.6 s timeout: down after {max(d[0][2] for d in downs.values()) - t0:.2f} s")
    heal(a, b)
    await healed([a, b])


async def test_100_ms_jitter_delays_heartbeats_and_is_no_failure() -> None:
    """Heartbeats take the link's jitter (0..100 ms, drawn per heartbeat), and that is no
    failure even with the fast 200 ms heartbeats (the default-settings test above only lasts
    a fraction of one 5 s heartbeat)."""
    faults = Faults(seed=3)
    peer = NodeId("b", "127.0.0.1", 1)
    assert faults.heartbeat_delay(peer) == 0.0
    faults.link(peer, latency_ms=20, jitter_ms=100)
    delays = [faults.heartbeat_delay(peer) for _ in range(1000)]
    assert 0.02 <= min(delays) < 0.03 and 0.11 < max(delays) <= 0.12
    a, b = await start_cluster(2)
    downs = record_downs(a, b)
    shape(a, b, jitter_ms=100)
    await stays_false(lambda: bool(downs[a.id] or downs[b.id]), 5 * TIMEOUT_S, "100 ms jitter taken for a failure")
    heal(a, b)


async def test_heartbeat_loss_rate_is_applied() -> None:
    faults = Faults(seed=7)
    b = NodeId("b", "127.0.0.1", 1)
    faults.link(b, loss=0.25)
    lost = sum(faults.loses_heartbeat(b) for _ in range(4000))
    assert 800 <= lost <= 1200, lost
    faults.drop(b, direction="in")
    assert not faults.cuts_out(b) and faults.cuts_in(b) and faults.is_blocked(b)
    faults.heal(b)
    assert not faults.active and not faults.loses_heartbeat(b)


# -- bad input --------------------------------------------------------------------------------------------


async def test_bad_fault_input_raises_typed_errors() -> None:
    faults = Faults()
    with pytest.raises(InvalidArgumentError, match="direction"):
        faults.drop("b@127.0.0.1:1", direction="sideways")
    with pytest.raises(InvalidArgumentError, match="mode"):
        faults.drop("b@127.0.0.1:1", mode="unplug")
    with pytest.raises(InvalidArgumentError, match="bad node id"):
        faults.drop("not a node id")
    with pytest.raises(InvalidArgumentError, match="loss"):
        faults.link("b@127.0.0.1:1", loss=1.0)
    with pytest.raises(InvalidArgumentError, match="latency_ms"):
        faults.link("b@127.0.0.1:1", latency_ms=-1)
    with pytest.raises(InvalidArgumentError, match="delay"):
        faults.delay("b@127.0.0.1:1", -0.1)
    with pytest.raises(InvalidArgumentError, match="not distributed"):
        partition([Node(label="plain")], [])
    with pytest.raises(InvalidArgumentError, match="cluster_secret"):
        await Cluster.start("x", port=0, allow_fault_injection=True)


# -- node processes, through the system request -----------------------------------------------------------

FAST = ["--heartbeat-interval-ms", str(BEAT_MS), "--heartbeat-miss-threshold", str(MISSES)]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.timeout(90)
async def test_node_processes_take_rules_by_system_request_only_when_allowed(procs: list[NodeProcess]) -> None:
    me = await Cluster.start("tester", port=0, cluster_secret=SECRET, heartbeat_interval_ms=BEAT_MS,
                             heartbeat_miss_threshold=MISSES)
    secret = ["--secret-env", "FAULT_SECRET"]
    env = {"FAULT_SECRET": SECRET}
    p, r = (NodeProcess(name, *FAST, *secret, "--allow-fault-injection", "--seed", str(me.id), env=env)
            for name in ("p", "r"))
    closed = NodeProcess("closed", *FAST, *secret, "--seed", str(me.id), env=env)
    procs.extend([p, r, closed])
    for proc in (p, r, closed):
        await proc.started()
    await wait_until(lambda: len(me.get_nodes()) == 3, 15.0, "three node processes joined")
    for proc in (p, r, closed):
        await proc.wait_peers(3)

    with pytest.raises(NotPermittedError, match="--allow-fault-injection"):
        await FaultControl(closed.id, via=me).drop(p.id)

    t0 = time.monotonic()
    touched = await partition_nodes([p.id], [r.id], via=me)  # the tester is not cut: it heals them later
    assert touched == sorted([p.id, r.id])
    assert (await FaultControl(p.id, via=me).rules()) == {str(r.id): {"out": "blackhole", "in": "blackhole"}}
    for proc, other in ((p, r), (r, p)):  # by heartbeats on both sides: no FIN crossed
        await in_thread(proc.wait_for, lambda line, o=other: line.startswith(f"DOWN {o.id} ")
                        and line.endswith("heartbeat_timeout"), TIMEOUT_S + MARGIN_S + 2, f"{proc.label} cut off")
    print(f"\nnode processes: cut detected {time.monotonic() - t0:.2f} s after the request")
    assert len(me.get_nodes()) == 3  # the tester still reaches both

    t1 = time.monotonic()
    await heal_nodes(p.id, r.id, via=me)
    await in_thread(p.wait_for, lambda line: line.startswith(f"UP {r.id}"), 10.0, "p and r meet again", count=2)
    print(f"node processes: link back {time.monotonic() - t1:.2f} s after the heal")
    assert (await FaultControl(r.id, via=me).rules()) == {}


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A blocking wait of a node process's output, off the event loop."""
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))


async def test_the_testing_fault_injector_cuts_one_way_shapes_and_heals() -> None:
    from noex_lab.testing import FaultInjector

    a, b = await start_cluster(2)
    downs = record_downs(a, b)
    injector = FaultInjector()
    injector.partition([a], [b], one_way=True)  # b stops hearing a
    assert a.faults.rules() == {str(b.id): {"out": "blackhole"}}
    assert b.faults.rules() == {str(a.id): {"in": "blackhole"}}
    await wait_until(lambda: downs[b.id], TIMEOUT_S + MARGIN_S, "b loses a")
    assert downs[b.id][0][1] == "heartbeat_timeout"
    injector.restore()  # what the fixture's teardown does
    await healed([a, b])
    injector.link(a, b, latency_ms=30)
    assert a.faults.rules()[str(b.id)]["latency_ms"] == 30 and b.faults.rules()[str(a.id)]["latency_ms"] == 30
    with pytest.raises(InvalidArgumentError, match="mode"):
        injector.partition([a], [b], mode="unplug")
    await injector.aheal()
    assert not a.faults.rules() and not b.faults.rules()
    await healed([a, b])
    with a.as_default():
        await injector.apartition([a], [b], mode="reset")  # the async form (it reaches node processes too)
    await wait_until(lambda: len(downs[a.id]) == 2 and len(downs[b.id]) == 2, 1.0, "reset")
    assert downs[a.id][-1][1] == downs[b.id][-1][1] == "connection_closed"
    await injector.aheal()
    await healed([a, b])


async def test_frames_held_by_a_cut_are_bounded_by_the_send_buffer() -> None:
    a, b = await start_cluster(2, heartbeat_interval_ms=300, heartbeat_miss_threshold=10,  # down after 3 s
                               busy_limit_bytes=1024, max_message_bytes=1024, max_send_buffer_bytes=4096)
    downs = record_downs(a, b)
    with b.as_default():
        ref = await GenServer.start(Echo)
    partition([a], [b])
    with a.as_default():
        for _ in range(100):
            GenServer.cast(ref, ("pad", "x" * 200))  # ~20 KiB held: past the bound, a gives up the link
    await wait_until(lambda: downs[a.id], 2.0, "a closes the overflowing connection")
    assert downs[a.id][0][1] == "connection_closed"
    assert a.faults.parked() == 1 and [i.id for i in b.get_nodes()] == [a.id]  # closed without a byte to b
    heal(a, b)
    await healed([a, b])


async def test_parked_sockets_send_nothing_until_the_heal_and_are_bounded_per_peer() -> None:
    import socket

    from noex_lab.distribution.faults import MAX_PARKED

    class Stream:  # what park() reads: the raw socket under a stream
        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

        def extra(self, _attribute: Any) -> socket.socket:
            return self.sock

    def at_eof(sock: socket.socket) -> bool:
        try:
            return sock.recv(1) == b""
        except BlockingIOError:
            return False

    faults = Faults()
    peer = NodeId("b", "127.0.0.1", 1)
    pairs = [socket.socketpair() for _ in range(MAX_PARKED + 4)]
    try:
        for mine, theirs in pairs:
            theirs.setblocking(False)
            faults.park(peer, Stream(mine))  # type: ignore[arg-type]
            mine.close()  # the connection's own close: the parked duplicate keeps the socket open
        assert faults.parked() == MAX_PARKED
        assert [at_eof(theirs) for _, theirs in pairs] == [True] * 4 + [False] * MAX_PARKED  # oldest let go
        faults.heal(peer)
        assert faults.parked() == 0 and all(at_eof(theirs) for _, theirs in pairs)
    finally:
        for mine, theirs in pairs:
            mine.close()
            theirs.close()


async def test_a_heal_ends_the_slow_redial_back_off_of_a_long_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    from noex_lab.distribution.transport import Transport

    slow_from_the_start = functools.partialmethod(Transport.ensure_dialing, first_backoff_s=5.0, slow_after_s=0.0)
    monkeypatch.setattr(Transport, "ensure_dialing", slow_from_the_start)  # as after a cut of over 30 s
    a, b = await start_cluster(2)
    downs = record_downs(a, b)
    partition([a], [b])
    await wait_until(lambda: downs[a.id] and downs[b.id], TIMEOUT_S + MARGIN_S, "cut")
    await stays_false(lambda: bool(a.get_nodes()), 0.3, "redialed through the cut")  # the loops back off to 5 s
    t0 = time.monotonic()
    heal(a, b)
    await wait_until(lambda: a.get_nodes() and b.get_nodes(), 1.0, "the link back within a second")
    print(f"\nlink back {time.monotonic() - t0:.2f} s after the heal (redial back-off 5 s)")
