"""examples/distributed_chat end to end: three user nodes as OS processes, driven by their stdin."""

from __future__ import annotations

from tests.helpers.examples import ExampleNode

CHAT = "examples.distributed_chat.node"
FAST = ["--heartbeat-interval-ms", "200", "--heartbeat-miss-threshold", "3"]


def test_posts_reach_every_member_on_every_node(example_nodes: list[ExampleNode]) -> None:
    def user(name: str, *args: str) -> ExampleNode:
        node = ExampleNode(CHAT, "--name", name, "--user", name, *FAST, *args)
        example_nodes.append(node)
        return node

    alice = user("alice")
    alice_id = alice.started()
    alice.wait_line("JOINED lobby as alice")  # the room now exists, on alice's node
    bob = user("bob", "--seed", str(alice_id))
    bob_id = bob.started()
    carol = user("carol", "--seed", str(alice_id), "--session-on", str(bob_id))  # RemoteSpawn onto bob's node
    carol.started()
    for node in (bob, carol):
        _, joined = node.wait_line("JOINED lobby as ")
        assert f"room on {alice_id};" in joined
    assert alice.wait_line("SESSION ")[1] == f"SESSION alice on {alice_id}"
    assert bob.wait_line("SESSION ")[1] == f"SESSION bob on {bob_id}"
    assert carol.wait_line("SESSION ")[1] == f"SESSION carol on {bob_id}"
    for node in (alice, bob, carol):
        node.wait_line("NOTICE lobby carol joined", timeout=5)

    alice.type_line("hello from alice")
    carol.type_line("hi from carol")  # carol's session is remote: the room casts to bob's node,
    for node in (alice, bob, carol):  # and the session forwards to carol's Terminal
        node.wait_line("MSG lobby alice: hello from alice", timeout=5)
        node.wait_line("MSG lobby carol: hi from carol", timeout=5)

    alice.type_line("/who")
    alice.wait_line("WHO carol", timeout=5)
    who = {line for _, line in alice.matching("WHO ")}
    assert who == {f"WHO alice on {alice_id}", f"WHO bob on {bob_id}", f"WHO carol on {bob_id}"}

    # A second "alice" anywhere in the cluster is refused: `user:alice` is a global name.
    again = ExampleNode(CHAT, "--name", "alice2", "--user", "alice", *FAST, "--seed", str(bob_id))
    example_nodes.append(again)
    again.wait_line("ERROR user alice is already online")
    assert again.proc.wait(timeout=10) == 1

    # carol's node dies: her session (on bob's node) sees its terminal go, stops, and the room drops her.
    carol.kill()
    for node in (alice, bob):
        node.wait_line("NOTICE lobby carol left", timeout=3)
    bob.type_line("still here")
    for node in (alice, bob):
        node.wait_line("MSG lobby bob: still here", timeout=5)
    assert all(not line.startswith(("ERROR", "Traceback")) for node in (alice, bob) for _, line in node.lines)
