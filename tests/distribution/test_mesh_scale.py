"""What keeps a large mesh cheap: anti-entropy gossip to one peer per round, in turn, one
handshake per pair while a cluster forms, and a newcomer announced by its seed only."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from noex_lab import Cluster
from noex_lab.distribution import protocol as p
from noex_lab.distribution.membership import GOSSIP_DEFER_TO_LOWER_S
from noex_lab.testing.cluster import FAST_HEARTBEAT_MS, FAST_MISS_THRESHOLD, start_cluster
from tests.helpers.waiting import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]


async def test_each_gossip_round_tells_one_peer_and_a_rotation_tells_each_peer_once() -> None:
    nodes = await start_cluster(5)
    dist = nodes[0].distribution
    assert dist is not None
    told: Counter[str] = Counter()
    for peer, state in dist.membership.peers.items():
        original = state.conn.send

        def counting(message: Any, *args: Any, _peer: str = str(peer), _send: Any = original, **kw: Any) -> Any:
            if isinstance(message, list) and message and message[0] == p.GOSSIP:
                told[_peer] += 1
                assert {entry[0] for entry in message[1]} == {str(n.id) for n in nodes}  # the whole list
            return _send(message, *args, **kw)

        state.conn.send = counting  # type: ignore[method-assign]
    # No await in between: the node's own gossip task cannot take a turn meanwhile.
    for rounds in (1, 2, 3, 4):
        dist.membership.gossip_round()
        assert sum(told.values()) == rounds and max(told.values()) == 1
    for _ in range(4):
        dist.membership.gossip_round()
    assert told == {str(n.id): 2 for n in nodes[1:]}


async def test_a_gossiped_member_that_sorts_lower_is_left_to_dial_us_for_a_while() -> None:
    """Both sides of a new pair learn of each other at once; the one whose id sorts lower dials
    (its dial wins the tie-break anyway), so a forming cluster does one handshake per pair."""
    (node,) = await start_cluster(1, prefix="m")
    dist = node.distribution
    assert dist is not None
    lower, higher = "a@127.0.0.1:9", "z@127.0.0.1:9"  # nobody listens: candidates stay hearsay
    before = time.monotonic()
    dist.membership.on_gossip([[lower, 1], [higher, 1]])
    candidates = {str(peer): c.next_at for peer, c in dist.membership._candidates.items()}
    assert candidates[higher] <= time.monotonic()  # due now: we dial it
    assert candidates[lower] >= before + GOSSIP_DEFER_TO_LOWER_S  # it should dial us first


async def test_a_hidden_observer_dials_every_gossiped_member_at_once() -> None:
    """Members never learn of a hidden node (e.g. `noex-lab top`), so it must not wait for them."""
    (node,) = await start_cluster(1, prefix="z", hidden=True)
    dist = node.distribution
    assert dist is not None
    dist.membership.on_gossip([["a@127.0.0.1:9", 1]])  # sorts lower than z0
    (candidate,) = dist.membership._candidates.values()
    assert candidate.next_at <= time.monotonic()


async def test_a_newcomer_is_announced_by_its_seed_only() -> None:
    """The seed a newcomer dials names it to every other peer at once; those heard of it from the
    seed, so they do not name it again when it connects to them. (When every node announced every
    new connection, each node received O(n^2) announcements while a mesh of n formed: ~480 per
    node for 32 nodes, against ~15 now; benchmarks/mesh_cost.py --counts.)"""
    nodes = await start_cluster(4)
    members = {str(node.id) for node in nodes}
    announced: Counter[str] = Counter()  # sender -> one-member gossip frames naming someone new
    for node in nodes:
        dist = node.distribution
        assert dist is not None
        for state in dist.membership.peers.values():
            original = state.conn.send

            def counting(message: Any, *args: Any, _node: str = str(node.id), _send: Any = original,
                         **kw: Any) -> Any:
                if (isinstance(message, list) and message and message[0] == p.GOSSIP and len(message[1]) == 1
                        and message[1][0][0] not in members):
                    announced[_node] += 1
                return _send(message, *args, **kw)

            state.conn.send = counting  # type: ignore[method-assign]
    newcomer = await Cluster.start("n4", port=0, seeds=[str(nodes[0].id)], heartbeat_interval_ms=FAST_HEARTBEAT_MS,
                                   heartbeat_miss_threshold=FAST_MISS_THRESHOLD)
    everyone = [*nodes, newcomer]
    await wait_until(lambda: all(len(node.get_nodes()) == 4 for node in everyone), 10.0, "a mesh of 5")
    # n1-n3 sort lower than n4, so each dials it once told (the newcomer leaves them to it)
    assert announced == {str(nodes[0].id): 3}


@pytest.mark.parametrize("link", ["seeds", "latest"])
async def test_two_meshes_merge_through_one_link_without_anti_entropy(link: str) -> None:
    """Whoever meets a member no peer listed to it announces it; the rest travels in the member
    lists each connection starts with. That alone merges two meshes joined by one connection
    (here the anti-entropy rounds are switched off), whichever two nodes the link joins, and at
    once: no node waits out GOSSIP_DEFER_TO_LOWER_S for a peer that was never told about it
    (~30 ms on the 2-core test machine)."""
    a = await start_cluster(4, prefix="a")
    b = await start_cluster(4, prefix="b")
    everyone = [*a, *b]
    for node in everyone:
        dist = node.distribution
        assert dist is not None
        dist.membership.gossip_round = lambda: None  # type: ignore[method-assign]
    dialer, target = (b[0], a[0]) if link == "seeds" else (b[-1], a[-1])
    dist = dialer.distribution
    assert dist is not None and target.id is not None
    started = time.monotonic()
    dist.transport.ensure_dialing(target.id, lambda _peer: True)
    await wait_until(lambda: all(len(node.get_nodes()) == 7 for node in everyone), 10.0, "one mesh of 8")
    assert time.monotonic() - started < GOSSIP_DEFER_TO_LOWER_S
