"""examples/distributed_counter end to end: SIGKILL the counter's node, clients see "noconnection"."""

from __future__ import annotations

from tests.helpers.examples import ExampleNode

COUNTER = "examples.distributed_counter.node"
FAST = ["--heartbeat-interval-ms", "200", "--heartbeat-miss-threshold", "3", "--every-ms", "100"]


def _values(node: ExampleNode) -> list[int]:
    return [int(line.split()[1]) for _, line in node.matching("VALUE ")]


def test_a_killed_counter_node_gives_noconnection_at_once_and_clients_fail_over(
    example_nodes: list[ExampleNode],
) -> None:
    def start(name: str, *args: str) -> ExampleNode:
        node = ExampleNode(COUNTER, "--name", name, *FAST, *args)
        example_nodes.append(node)
        return node

    a = start("a")
    a_id = a.started()
    a.wait_line("STARTED counter at 0")
    b, c = start("b", "--seed", str(a_id)), start("c", "--seed", str(a_id))
    for client in (b, c):
        client.started()
        client.wait_line(f"USING counter on {a_id}")
        client.wait_line("VALUE", count=3)

    killed_at = a.kill()
    for client in (b, c):
        seen_at, down = client.wait_line("DOWN counter", timeout=5)
        assert down.startswith(f"DOWN counter on {a_id} reason=noconnection"), down
        assert seen_at - killed_at < 1.0, f"Down seen {seen_at - killed_at:.3f} s after SIGKILL"

    # Exactly one client won the race to start the new counter; both use it and keep counting.
    hosts = {client.wait_line("USING counter on ", since=killed_at, timeout=5)[1].split()[-1] for client in (b, c)}
    winners = [client for client in (b, c) if client.matching("STARTED counter", since=killed_at)]
    assert len(winners) == 1
    assert hosts == {str(winners[0].id)}
    for client in (b, c):
        client.wait_line("VALUE", since=killed_at, count=3, timeout=5)
        assert len(client.matching("DOWN ")) == 1  # each monitor fires exactly once
        values = _values(client)
        assert values == sorted(set(values)), f"the count went back: {values}"
