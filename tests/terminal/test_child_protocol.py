"""The child-node line protocol: every record is printed and read back as itself, other output
is not a record, and a real `noex-lab node` speaks it (the launchers of the lab, the demo, the
tests and the benchmarks all read it through `parse_line`)."""

from __future__ import annotations

import pytest

from noex_lab import NodeId
from noex_lab.frontend.child_protocol import (
    ChildLine,
    Listening,
    Metrics,
    PeerDown,
    Peers,
    PeerUp,
    format_line,
    parse_line,
)
from tests.helpers.cluster import NodeProcess

PEER = NodeId.parse("b@127.0.0.1:4370")


@pytest.mark.parametrize("record", [
    Listening(NodeId.parse("a@[::1]:4369")), Metrics("http://127.0.0.1:9100/metrics"), PeerUp(PEER, 17),
    PeerDown(PEER, 18, "heartbeat_timeout"), Peers(2, 19),
])
def test_a_record_reads_back_as_itself(record: ChildLine) -> None:
    assert parse_line(format_line(record)) == record


@pytest.mark.parametrize("line", ["", "hello", "NODE", "NODE not-an-id", "PEERS x 1", "UP b@h:1", "NODES a@h:1"])
def test_other_output_is_not_a_record(line: str) -> None:
    assert parse_line(line) is None


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_node_process_speaks_it(procs: list[NodeProcess]) -> None:
    first = NodeProcess("cp1")
    procs.append(first)
    first_id = await first.started()
    second = NodeProcess("cp2", "--seed", str(first_id))
    procs.append(second)
    assert (await second.started()).name == "cp2"
    await first.wait_peers(1)
    ups = [parse_line(line) for _, line in first.matching("UP ")]
    assert [record.peer.name for record in ups if isinstance(record, PeerUp)] == ["cp2"]
